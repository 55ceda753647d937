//! Shedding before the serving thread falls behind (`admission.max_intake_lag_us`).
//!
//! A route's bulkhead bounds how many requests run at once, not what taking requests in
//! costs: every request a node reads, admitted or refused, costs its thread a request head
//! parsed and an answer written. Under several times its capacity, a node that keeps its
//! bulkhead full has no time left over, so requests wait in the kernel's socket buffers and
//! in the thread's run queue until the thread gets to them, the ones it will admit among
//! them: on one core at three times capacity, open-loop, admitted and refused requests alike
//! waited about 10 ms at the p99 while the node's own stages took 30 µs of them
//! (docs/performance.md, "Overload").
//!
//! So, where enabled, each serving thread measures how far behind it is: once per
//! [`WINDOW`], one request steps to the back of the thread's run queue and times how long
//! the thread takes to come back to it (the wait of a request arriving now; the lag). Once
//! the lag has stayed above the limit for [`INTERVAL`] (a shorter burst passes untouched,
//! as in CoDel), the thread admits only a share of new requests, halving it each window the
//! thread was busier than [`BUSY`] and growing it back by a twentieth each window it was
//! not; the rest are refused before their bodies are read, with `503` (`behind`). A thread
//! that saw no request for [`FORGET`] starts again from admitting everything.
//!
//! It trades answers for latency, and it is off unless configured: refusing costs the
//! thread about half what answering does here (22 against 48 µs; HTTP is most of an
//! answer's cost), so a thread kept 80% busy under three times its capacity answered a third
//! as many requests a second as one kept full, with a tenth of the requests waiting in front
//! of each.
//!
//! The state is per thread (a node serves HTTP with one thread per core), so nothing is
//! shared between cores; a request costs a clock read, and one per window a yield.

use std::cell::RefCell;
use std::time::{Duration, Instant};

/// How often the lag is measured.
const WINDOW: Duration = Duration::from_millis(5);

/// How long the lag must stay above the limit before the thread sheds.
const INTERVAL: Duration = Duration::from_millis(10);

/// The smallest share of new requests admitted while behind: never none, so that the
/// thread goes on answering some.
const MIN_SHARE: f64 = 0.05;

/// While shedding, the share of its time the thread is steered to be busy.
const BUSY: f64 = 0.8;

/// How much the admitted share shrinks (multiplied) for a window busier than [`BUSY`], and
/// grows (added) for a window not: down fast, so that a backlog stops growing within a few
/// windows, and up slowly.
const SHRINK: f64 = 0.5;
const GROW: f64 = 0.05;

/// After this long without a measurement (no requests), the thread starts again from
/// admitting everything.
const FORGET: Duration = Duration::from_millis(500);

/// One thread's measurements and admitted share.
#[derive(Debug)]
struct Meter {
    /// When the last measurement began, and the thread's CPU time then.
    sampled: Instant,
    cpu_at_sample: Duration,
    /// When the request measuring now began (`None`: none is). One that never reports back
    /// (its client hung up during the yield, or it was resumed on another thread) is
    /// abandoned after [`FORGET`], so that measuring goes on.
    sampling: Option<Instant>,
    /// Since when every measurement has been over the lag limit (`None`: the last was not).
    behind_since: Option<Instant>,
    /// Share of new requests admitted, in [`MIN_SHARE`, 1]; below 1 the thread is shedding.
    share: f64,
    /// Admissions owed: each new request adds `share`, each admitted one takes 1.
    credit: f64,
}

impl Meter {
    fn new(now: Instant, cpu: Duration) -> Meter {
        Meter {
            sampled: now,
            cpu_at_sample: cpu,
            sampling: None,
            behind_since: None,
            share: 1.0,
            credit: 0.0,
        }
    }

    /// Whether a measurement is out at `now` (and not yet abandoned).
    fn measuring(&self, now: Instant) -> bool {
        self.sampling.is_some_and(|began| now.saturating_duration_since(began) < FORGET)
    }

    /// Whether a request arriving at `now` should measure the lag.
    fn due(&self, now: Instant) -> bool {
        !self.measuring(now) && now.saturating_duration_since(self.sampled) >= WINDOW
    }

    /// A request arrives at `now`: after [`FORGET`] without one, the thread admits everything
    /// again at once (not only once a measurement is in: requests arriving while the first
    /// one measures would meet the old share); then whether this one should measure.
    fn arrive(&mut self, now: Instant) -> bool {
        if !self.measuring(now) && now.saturating_duration_since(self.sampled) >= FORGET {
            self.share = 1.0;
            self.behind_since = None;
        }
        let due = self.due(now);
        if due {
            self.sampling = Some(now);
        }
        due
    }

    /// A measurement that began at `began`, when the thread's CPU time was `cpu`, found the
    /// thread `lag` behind.
    fn record(&mut self, began: Instant, cpu: Duration, lag: Duration, limit: Duration) {
        self.sampling = None;
        let elapsed = began.saturating_duration_since(self.sampled);
        let busy = cpu.saturating_sub(self.cpu_at_sample).as_secs_f64() / elapsed.as_secs_f64().max(1e-9);
        (self.sampled, self.cpu_at_sample) = (began, cpu);
        // After an idle spell `arrive` has started afresh; how busy the spell was says nothing.
        if elapsed >= FORGET {
            return;
        }
        if lag <= limit {
            self.behind_since = None;
        } else {
            self.behind_since.get_or_insert(began);
        }
        let shedding = self.share < 1.0
            || self.behind_since.is_some_and(|since| began.saturating_duration_since(since) >= INTERVAL);
        if !shedding {
            return;
        }
        // Shedding: steer the thread's busy share to BUSY, the rest of its time being what
        // keeps the lag short.
        self.share =
            if busy > BUSY { (self.share * SHRINK).max(MIN_SHARE) } else { (self.share + GROW).min(1.0) };
    }

    /// Whether the next new request may be admitted.
    fn admit(&mut self) -> bool {
        self.credit += self.share;
        if self.credit >= 1.0 {
            self.credit -= 1.0;
            true
        } else {
            false
        }
    }
}

thread_local! {
    static METER: RefCell<Option<Meter>> = const { RefCell::new(None) };
}

fn with_meter<T>(f: impl FnOnce(&mut Meter) -> T) -> T {
    METER.with(|meter| {
        f(meter.borrow_mut().get_or_insert_with(|| Meter::new(Instant::now(), thread_cpu_time())))
    })
}

/// Whether the calling thread may take a new request in, measuring first if a window has
/// passed. `limit` is how far behind the thread may fall for [`INTERVAL`] before it sheds;
/// zero never sheds.
pub(crate) async fn admit_new(limit: Duration) -> bool {
    if limit.is_zero() {
        return true;
    }
    let now = Instant::now();
    if with_meter(|m| m.arrive(now)) {
        let cpu = thread_cpu_time();
        tokio::task::yield_now().await;
        let lag = now.elapsed();
        with_meter(|m| m.record(now, cpu, lag, limit));
    }
    with_meter(Meter::admit)
}

/// The calling thread's CPU time so far; zero where the platform has no thread clock, where
/// the thread then always looks idle and never sheds.
fn thread_cpu_time() -> Duration {
    #[cfg(unix)]
    {
        let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec, which `t` is, and reads nothing else.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0 {
            return Duration::new(t.tv_sec.unsigned_abs(), t.tv_nsec.clamp(0, 999_999_999) as u32);
        }
    }
    Duration::ZERO
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_millis(1);

    /// A thread's clock and CPU time as the tests move them.
    struct Clock {
        now: Instant,
        cpu: Duration,
    }

    /// Feeds `meter` 100 requests in each of `windows` windows, each window measured `lag`
    /// behind with the thread busy `busy` of it; returns how many the last window admitted.
    fn run(meter: &mut Meter, c: &mut Clock, lag: Duration, busy: f64, windows: usize) -> usize {
        let mut admitted = 0;
        for _ in 0..windows {
            admitted = 0;
            c.now += WINDOW;
            c.cpu += WINDOW.mul_f64(busy);
            assert!(meter.arrive(c.now));
            meter.record(c.now, c.cpu, lag, LIMIT);
            for _ in 0..100 {
                admitted += usize::from(meter.admit());
            }
        }
        admitted
    }

    fn start() -> (Meter, Clock) {
        let c = Clock { now: Instant::now(), cpu: Duration::ZERO };
        (Meter::new(c.now, c.cpu), c)
    }

    #[test]
    fn a_thread_that_keeps_up_admits_everything() {
        let (mut meter, mut c) = start();
        assert_eq!(run(&mut meter, &mut c, LIMIT / 2, 1.0, 100), 100);
    }

    #[test]
    fn a_burst_shorter_than_the_interval_is_not_shed() {
        let (mut meter, mut c) = start();
        let windows = (INTERVAL.as_millis() / WINDOW.as_millis()) as usize - 1;
        assert_eq!(run(&mut meter, &mut c, 10 * LIMIT, 1.0, windows), 100);
        assert_eq!(run(&mut meter, &mut c, LIMIT / 2, 1.0, 1), 100);
        assert_eq!(run(&mut meter, &mut c, 10 * LIMIT, 1.0, windows), 100);
    }

    #[test]
    fn a_thread_behind_sheds_down_to_the_floor_then_recovers() {
        let (mut meter, mut c) = start();
        let interval = (INTERVAL.as_millis() / WINDOW.as_millis()) as usize;
        let first = run(&mut meter, &mut c, 10 * LIMIT, 1.0, interval + 2);
        let later = run(&mut meter, &mut c, 10 * LIMIT, 1.0, 3);
        assert!(later < first && first < 100, "{later} < {first} < 100");
        // Behind and busy for long: the floor, never nothing.
        let floor = run(&mut meter, &mut c, 10 * LIMIT, 1.0, 40);
        assert!((4..=6).contains(&floor), "{floor}");
        // Less busy than the target: back to everything within twenty windows.
        assert_eq!(run(&mut meter, &mut c, LIMIT / 2, 0.5, 20), 100);
        // And after an idle spell, at once.
        run(&mut meter, &mut c, 10 * LIMIT, 1.0, 60);
        c.now += FORGET;
        assert_eq!(run(&mut meter, &mut c, 10 * LIMIT, 1.0, 1), 100);
    }

    #[test]
    fn after_an_idle_spell_requests_arriving_during_the_first_measurement_are_admitted() {
        let (mut meter, mut c) = start();
        run(&mut meter, &mut c, 10 * LIMIT, 1.0, 60);
        c.now += FORGET;
        // The first request measures; those that come while it waits for the thread are
        // admitted, not refused at the share the thread had before it went idle.
        assert!(meter.arrive(c.now));
        assert!((0..10).all(|_| !meter.arrive(c.now) && meter.admit()));
    }

    #[test]
    fn while_shedding_the_share_follows_how_busy_the_thread_is() {
        let (mut meter, mut c) = start();
        let interval = (INTERVAL.as_millis() / WINDOW.as_millis()) as usize;
        run(&mut meter, &mut c, 10 * LIMIT, 1.0, interval + 5);
        let low = meter.share;
        // Still behind, but the thread now has time to spare: the share grows.
        run(&mut meter, &mut c, 10 * LIMIT, 0.5, 5);
        assert!(meter.share > low, "{} > {low}", meter.share);
    }

    #[test]
    fn a_zero_limit_never_sheds() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            for _ in 0..1000 {
                assert!(admit_new(Duration::ZERO).await);
            }
        });
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_lag_is_the_time_the_thread_takes_to_come_back() {
        // Another task holds the thread, computing, for 5 ms whenever this one has yielded:
        // the measurement sees that lag and a busy thread, and after the interval it sheds.
        let mut shed = false;
        let start = Instant::now();
        while start.elapsed() < 10 * INTERVAL && !shed {
            tokio::spawn(async {
                let busy = Instant::now();
                while busy.elapsed() < Duration::from_millis(5) {
                    std::hint::spin_loop();
                }
            });
            shed |= !admit_new(LIMIT).await;
            // If this call did not measure, the blocker runs now.
            tokio::task::yield_now().await;
        }
        assert!(shed, "a thread 5 ms behind for {:?} never shed", 10 * INTERVAL);
    }

    #[test]
    fn a_measurement_that_never_reports_back_is_abandoned() {
        // Its request was dropped during the yield (the client hung up) or resumed on another
        // thread: without abandoning it the thread would never measure again, keeping
        // whatever share it had.
        let (mut meter, mut c) = start();
        let interval = (INTERVAL.as_millis() / WINDOW.as_millis()) as usize;
        run(&mut meter, &mut c, 10 * LIMIT, 1.0, interval + 5);
        c.now += WINDOW;
        assert!(meter.arrive(c.now));
        c.now += WINDOW;
        assert!(!meter.arrive(c.now), "a second measurement while the first is out");
        c.now += FORGET;
        assert!(meter.arrive(c.now), "the lost measurement held the thread's meter");
    }
}
