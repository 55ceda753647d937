//! A slow, lossy link between the tiers: what `tc netem` does to the QUIC packets, made in
//! user space where the kernel has no netem qdisc.
//!
//! [`Impairment`] says what the link does (one definition for both ways of making it);
//! [`Relay`] is the user-space way: a UDP relay on loopback that the edge escalates to,
//! forwarding each datagram to the central (and each answer back) after the delay, or
//! dropping it. Each direction is impaired on its own, as netem on a link does.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use parking_lot::Mutex;

/// What a link does to each packet: a delay drawn uniformly from `delay ± jitter`, and a
/// drop with probability `loss`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Impairment {
    pub(super) delay: Duration,
    pub(super) jitter: Duration,
    pub(super) loss: f64,
}

impl Impairment {
    /// The same impairment as `tc netem` arguments.
    pub(super) fn netem_args(&self) -> Vec<String> {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        vec![
            "delay".into(),
            ms(self.delay),
            ms(self.jitter),
            "loss".into(),
            format!("{}%", self.loss * 100.0),
        ]
    }

    /// What happens to one packet: `None` if it is lost, else how long it is held.
    fn draw(&self, rng: &mut fastrand::Rng) -> Option<Duration> {
        if rng.f64() < self.loss {
            return None;
        }
        let jitter = self.jitter.as_secs_f64() * (2.0 * rng.f64() - 1.0);
        Some(Duration::from_secs_f64((self.delay.as_secs_f64() + jitter).max(0.0)))
    }
}

/// Largest datagram relayed (QUIC sends at most about 1,500 bytes on loopback's MTU path,
/// but may probe up to 64 KiB).
const MAX_DATAGRAM: usize = 65_536;

/// How often the receiving threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// Which way a held datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Way {
    /// From the edge to the central.
    Up,
    /// From the central back to the edge.
    Down,
}

/// A datagram held until it is due: (due, arrival order, way, bytes), ordered by due time.
type Held = Reverse<(Instant, u64, Way, Vec<u8>)>;

/// A UDP relay on loopback between one edge and `upstream`, impairing both directions.
/// Stops (and joins its threads) when dropped.
pub(super) struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Starts relaying between a new loopback port (see [`Relay::addr`]) and `upstream`.
    /// `seed` makes the drops and delays reproducible.
    pub(super) fn start(upstream: SocketAddr, impairment: Impairment, seed: u64) -> Result<Relay> {
        let front = UdpSocket::bind("127.0.0.1:0").context("binding the relay's edge side")?;
        let back = UdpSocket::bind("127.0.0.1:0").context("binding the relay's central side")?;
        back.connect(upstream).with_context(|| format!("pointing the relay at {upstream}"))?;
        for socket in [&front, &back] {
            socket.set_read_timeout(Some(POLL))?;
        }
        let addr = front.local_addr()?;
        let (front, back) = (Arc::new(front), Arc::new(back));
        // The edge's address, learnt from its first datagram: answers go back there.
        let edge: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (held_tx, held_rx) = mpsc::channel::<(Way, Vec<u8>)>();

        let receive = |way: Way, socket: Arc<UdpSocket>| {
            let (stop, held, edge) = (Arc::clone(&stop), held_tx.clone(), Arc::clone(&edge));
            std::thread::Builder::new().name(format!("relay-{way:?}")).spawn(move || {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                    if way == Way::Up {
                        *edge.lock() = Some(from);
                    }
                    if held.send((way, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            })
        };
        let threads = vec![receive(Way::Up, Arc::clone(&front))?, receive(Way::Down, Arc::clone(&back))?, {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new().name("relay-send".into()).spawn(move || {
                forward(&held_rx, impairment, seed, &stop, |way, bytes| {
                    // A send that fails is a lost packet, which QUIC recovers from.
                    let _ = match (way, *edge.lock()) {
                        (Way::Up, _) => back.send(bytes),
                        (Way::Down, Some(edge)) => front.send_to(bytes, edge),
                        (Way::Down, None) => Ok(0),
                    };
                });
            })?
        }];
        Ok(Relay { addr, stop, threads })
    }

    /// Where the edge should send: the relay's edge side.
    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Holds each datagram from `arrivals` for its drawn delay (or drops it), then hands it to
/// `send`, in order of due time, until `stop`.
fn forward(
    arrivals: &mpsc::Receiver<(Way, Vec<u8>)>,
    impairment: Impairment,
    seed: u64,
    stop: &AtomicBool,
    mut send: impl FnMut(Way, &[u8]),
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut held: BinaryHeap<Held> = BinaryHeap::new();
    let mut order = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while let Some(Reverse((due, ..))) = held.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((_, _, way, bytes))) = held.pop() else { break };
            send(way, &bytes);
        }
        let wait =
            held.peek().map_or(POLL, |Reverse((due, ..))| due.saturating_duration_since(now)).min(POLL);
        match arrivals.recv_timeout(wait) {
            Ok((way, bytes)) => {
                if let Some(delay) = impairment.draw(&mut rng) {
                    order += 1;
                    held.push(Reverse((Instant::now() + delay, order, way, bytes)));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits up to `socket`'s read timeout for the one-byte datagram `want`, skipping
    /// stragglers from earlier rounds; who sent it, if it came.
    fn receive(socket: &UdpSocket, want: u8) -> Option<SocketAddr> {
        let mut buf = [0u8; 16];
        loop {
            match socket.recv_from(&mut buf) {
                Ok((1, from)) if buf[0] == want => return Some(from),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    #[test]
    fn the_relay_delays_and_drops_as_asked() {
        let impairment = Impairment { delay: Duration::from_millis(20), jitter: Duration::ZERO, loss: 0.25 };
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let relay = Relay::start(server.local_addr().unwrap(), impairment, 7).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        for socket in [&server, &client] {
            socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        }
        let (mut through, mut back) = (0, 0);
        for i in 0u8..40 {
            let sent = Instant::now();
            client.send_to(&[i], relay.addr()).unwrap();
            let Some(from) = receive(&server, i) else { continue };
            // Held for the delay on the way up, and again on the way back.
            assert!(sent.elapsed() >= impairment.delay, "{:?}", sent.elapsed());
            through += 1;
            server.send_to(&[i + 100], from).unwrap();
            if receive(&client, i + 100).is_some() {
                assert!(sent.elapsed() >= 2 * impairment.delay, "{:?}", sent.elapsed());
                back += 1;
            }
        }
        // A quarter lost each way: of 40, about 30 through and 22 back; never none or all.
        assert!((15..40).contains(&through), "{through} of 40 went through");
        assert!((8..through).contains(&back), "{back} of {through} came back");
    }

    #[test]
    fn netem_gets_the_same_impairment() {
        let impairment =
            Impairment { delay: Duration::from_millis(5), jitter: Duration::from_millis(1), loss: 0.01 };
        assert_eq!(impairment.netem_args(), ["delay", "5ms", "1ms", "loss", "1%"]);
    }
}
