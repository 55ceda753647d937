//! A connection's wait for each request head, as hyper's header timer and the socket see it.
//!
//! hyper starts its header read timer whenever it waits for a request head, between
//! requests on a kept-alive connection too, so on its own `header_read` would also be the
//! idle timeout. The connection's [`HeadTimer`] moves that deadline: while no byte of a later
//! request has arrived it is `idle` after the wait began, from the first byte on it is
//! `header_read` after that byte. A wrapper around the socket ([`Watched`]) tells it when
//! bytes arrive.
//!
//! The same wrapper keeps clients that trickle their heads from holding up the others. A
//! head still incomplete [`SLOW_HEAD`] after its first byte is being trickled (a client's
//! head is one write, and arrives within a round trip); each later read of it waits a random
//! moment of up to [`SPREAD`] first. Without that, a thousand connections trickling a byte
//! each in the same millisecond (an attacker chooses the timing) made the node read a
//! thousand sockets in one go, and a good request arriving then waited behind all of them;
//! spread over [`SPREAD`], the same reads come a few at a time between the good requests.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How long after its first byte a head that has not all arrived counts as trickled.
const SLOW_HEAD: Duration = Duration::from_millis(50);

/// The longest a read of a trickled head waits (each a random moment up to it).
const SPREAD: Duration = Duration::from_millis(100);

/// The connection's socket for hyper, and the timer hyper's header timeout is to run on.
pub(super) fn watch(
    stream: TcpStream,
    header_read: Duration,
    idle: Duration,
) -> (TokioIo<Watched>, HeadTimer) {
    let wait = Arc::new(HeadWait::new());
    let io = TokioIo::new(Watched { stream, wait: Arc::clone(&wait), deferred: None });
    (io, HeadTimer { wait, header_read, idle, tokio: TokioTimer::new() })
}

/// When the connection's current wait for a request head began, and when its first byte
/// arrived; the times are nanoseconds since the connection opened (`first_byte` 0: none yet).
/// Only the connection's own task touches it, so relaxed atomics suffice.
struct HeadWait {
    opened: Instant,
    waits: AtomicU64,
    began: AtomicU64,
    first_byte: AtomicU64,
    /// The number of the last wait that ended with its head read (or was given up).
    ended: AtomicU64,
}

impl HeadWait {
    fn new() -> HeadWait {
        HeadWait {
            opened: Instant::now(),
            waits: AtomicU64::new(0),
            began: AtomicU64::new(0),
            first_byte: AtomicU64::new(0),
            ended: AtomicU64::new(0),
        }
    }

    fn since_opened(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// hyper began waiting for a request head; returns the wait's number.
    fn begin(&self) -> u64 {
        let number = self.waits.fetch_add(1, Ordering::Relaxed) + 1;
        self.began.store(self.since_opened(), Ordering::Relaxed);
        self.first_byte.store(0, Ordering::Relaxed);
        number
    }

    /// Wait `number` ended: its head was read, or hyper gave it up.
    fn end(&self, number: u64) {
        self.ended.store(number, Ordering::Relaxed);
    }

    /// Whether the head being waited for, `now` (nanoseconds since the connection opened),
    /// is being trickled: its first byte came over [`SLOW_HEAD`] ago and it is not all in.
    /// `now` is asked for only then: most reads are of heads that came whole, or of bodies.
    fn trickling(&self, now: impl FnOnce() -> u64) -> bool {
        let waits = self.waits.load(Ordering::Relaxed);
        let first = self.first_byte.load(Ordering::Relaxed);
        waits > self.ended.load(Ordering::Relaxed)
            && first != 0
            && now().saturating_sub(first) > u64::try_from(SLOW_HEAD.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Bytes arrived.
    fn read(&self) {
        if self.first_byte.load(Ordering::Relaxed) == 0 {
            self.first_byte.store(self.since_opened().max(1), Ordering::Relaxed);
        }
    }

    /// When the current wait ends. A later request's bytes that arrived before its wait
    /// began (pipelined with the one before) do not count as its first byte: such a head
    /// that stalls is closed after `idle`, not `header_read`.
    fn deadline(&self, header_read: Duration, idle: Duration) -> Instant {
        let at = |nanos: u64| self.opened + Duration::from_nanos(nanos);
        let began = at(self.began.load(Ordering::Relaxed));
        if self.waits.load(Ordering::Relaxed) <= 1 {
            return began + header_read;
        }
        match self.first_byte.load(Ordering::Relaxed) {
            0 => began + idle,
            first => at(first) + header_read,
        }
    }
}

/// The connection's socket, telling its [`HeadWait`] when bytes arrive, and putting off
/// each read of a trickled head by a random moment (the module doc says why).
pub(super) struct Watched {
    stream: TcpStream,
    wait: Arc<HeadWait>,
    /// The moment the next read of a trickled head waits for.
    deferred: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.wait.trickling(|| this.wait.since_opened()) {
            // The moment is drawn once per deferral, not at every poll while it runs.
            let deferred = this
                .deferred
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(SPREAD.mul_f64(fastrand::f64()))));
            ready!(deferred.as_mut().poll(cx));
            this.deferred = None;
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.wait.read();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The timer hyper runs its header read timeout on, for one connection. hyper asks it for a
/// deadline only when it begins waiting for a request head; the sleep it gets ends at
/// [`HeadWait::deadline`], which moves as bytes arrive.
pub(super) struct HeadTimer {
    wait: Arc<HeadWait>,
    header_read: Duration,
    idle: Duration,
    tokio: TokioTimer,
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.tokio.sleep(duration)
    }

    fn sleep_until(&self, _deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let number = self.wait.begin();
        let deadline = self.wait.deadline(self.header_read, self.idle);
        Box::pin(HeadSleep {
            number,
            wait: Arc::clone(&self.wait),
            header_read: self.header_read,
            idle: self.idle,
            deadline,
            sleep: Box::pin(tokio::time::sleep_until(deadline.into())),
        })
    }
}

/// A wait for a request head: ends at [`HeadWait::deadline`] as it stands when polled
/// (hyper polls it each time the socket wakes the connection with too little of the head).
struct HeadSleep {
    /// Which of the connection's waits this is.
    number: u64,
    wait: Arc<HeadWait>,
    header_read: Duration,
    idle: Duration,
    deadline: Instant,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let deadline = this.wait.deadline(this.header_read, this.idle);
        if deadline != this.deadline {
            this.deadline = deadline;
            this.sleep.as_mut().reset(deadline.into());
        }
        this.sleep.as_mut().poll(cx)
    }
}

impl Sleep for HeadSleep {}

/// hyper drops the sleep once the head is read (or the wait given up): the wait is over.
impl Drop for HeadSleep {
    fn drop(&mut self) {
        self.wait.end(self.number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_deadline_is_header_read_first_then_idle_until_a_byte_arrives() {
        let (header_read, idle) = (Duration::from_secs(5), Duration::from_secs(60));
        let wait = HeadWait::new();
        wait.begin();
        let first = wait.deadline(header_read, idle);
        assert!(first <= wait.opened + Duration::from_secs(6), "the first request gets header_read");
        wait.read();
        assert_eq!(wait.deadline(header_read, idle), first, "the first request's clock runs from the accept");

        wait.begin();
        let began = Instant::now();
        let idle_deadline = wait.deadline(header_read, idle);
        assert!(idle_deadline >= began + Duration::from_secs(59), "a kept-alive connection waits `idle`");
        wait.read();
        let head_deadline = wait.deadline(header_read, idle);
        assert!(head_deadline <= Instant::now() + header_read, "from its first byte a head gets header_read");
        assert!(head_deadline >= began + Duration::from_secs(4));
    }

    #[test]
    fn a_head_counts_as_trickled_from_slow_head_after_its_first_byte_until_it_is_read() {
        let ms = |n: u64| n * 1_000_000;
        let wait = HeadWait::new();
        let number = wait.begin();
        assert!(!wait.trickling(|| ms(1000)), "no byte yet: an idle connection, not a trickle");
        wait.first_byte.store(ms(10), Ordering::Relaxed);
        assert!(!wait.trickling(|| ms(10) + ms(SLOW_HEAD.as_millis() as u64)), "a head within SLOW_HEAD");
        assert!(wait.trickling(|| ms(11) + ms(SLOW_HEAD.as_millis() as u64)));
        // Read: the body and the answer that follow are not put off.
        wait.end(number);
        assert!(!wait.trickling(|| ms(1000)));
        // The next request's head starts afresh.
        let next = wait.begin();
        assert!(!wait.trickling(|| ms(2000)));
        wait.first_byte.store(ms(2000), Ordering::Relaxed);
        assert!(wait.trickling(|| ms(3000)));
        // A wait given up late (an older number) does not end the current one.
        wait.end(number);
        assert!(wait.trickling(|| ms(3000)));
        wait.end(next);
        assert!(!wait.trickling(|| ms(3000)));
    }
}
