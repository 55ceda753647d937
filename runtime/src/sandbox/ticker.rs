//! The epoch ticker: request deadlines for guests, without waking an idle node.
//!
//! wasmtime interrupts a guest when the engine's epoch passes the deadline its store was
//! given, so something must advance the epoch: one thread, every tick. A thread that ticks
//! forever wakes an idle device 1,000 times a second (at the default 1 ms tick), for
//! nothing. So the ticker parks once no guest has been alive for [`IDLE_TICKS`] ticks, and
//! the next guest to start unparks it.
//!
//! A guest that starts while the ticker is parked cannot miss its deadline: starting marks
//! it alive and then reads whether the ticker is parked; the ticker marks itself parked and
//! then reads whether any guest is alive. Both sides use sequentially consistent atomics,
//! so at least one of them sees the other (the ticker stays awake, or the guest unparks it),
//! and an unpark that comes before the park makes the park return at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use wasmtime::Engine;

/// Ticks with no guest alive after which the ticker parks.
pub(super) const IDLE_TICKS: u32 = 100;

struct Shared {
    /// Guest instances alive now.
    alive: AtomicUsize,
    /// Whether the ticker is parked, or about to park.
    parked: AtomicBool,
    stop: AtomicBool,
}

/// The thread advancing an engine's epoch; stopped when dropped.
pub(super) struct EpochTicker {
    shared: Arc<Shared>,
    thread: Thread,
    handle: Option<JoinHandle<()>>,
}

/// Held while a guest instance is alive: the ticker ticks until every one is dropped.
pub(super) struct Alive {
    shared: Arc<Shared>,
}

impl EpochTicker {
    /// Starts the thread: `engine`'s epoch advances by one every `tick` while guests live.
    pub(super) fn start(engine: Engine, tick: Duration) -> std::io::Result<EpochTicker> {
        let shared = Arc::new(Shared {
            alive: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let handle = {
            let shared = shared.clone();
            std::thread::Builder::new().name("sandbox-epoch".into()).spawn(move || {
                let mut idle_ticks = 0;
                while !shared.stop.load(SeqCst) {
                    if shared.alive.load(SeqCst) > 0 {
                        idle_ticks = 0;
                    } else if idle_ticks >= IDLE_TICKS {
                        shared.parked.store(true, SeqCst);
                        if shared.alive.load(SeqCst) == 0 && !shared.stop.load(SeqCst) {
                            std::thread::park();
                        }
                        shared.parked.store(false, SeqCst);
                        idle_ticks = 0;
                    } else {
                        idle_ticks += 1;
                    }
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })?
        };
        Ok(EpochTicker { shared, thread: handle.thread().clone(), handle: Some(handle) })
    }

    /// Marks a guest alive until the returned guard is dropped, waking the ticker if it
    /// was parked.
    pub(super) fn alive(&self) -> Alive {
        self.shared.alive.fetch_add(1, SeqCst);
        if self.shared.parked.load(SeqCst) {
            self.thread.unpark();
        }
        Alive { shared: self.shared.clone() }
    }

    /// Whether the ticker is parked (or about to be).
    #[cfg(all(test, feature = "compiler"))]
    fn parked(&self) -> bool {
        self.shared.parked.load(SeqCst)
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.shared.alive.fetch_sub(1, SeqCst);
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        self.thread.unpark();
        if let Some(handle) = self.handle.take() {
            // Awake and told to stop, it returns within one tick.
            let _ = handle.join();
        }
    }
}

// The test compiles a guest: builds without the compiler (devices) leave it out.
#[cfg(all(test, feature = "compiler"))]
mod tests {
    use super::*;
    use std::time::Instant;
    use wasmtime::{Config, Module, Store};

    /// `(module (func (export "spin") (loop (br 0))))`, encoded by hand.
    const SPIN: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // types: () -> ()
        0x03, 0x02, 0x01, 0x00, // functions: one of type 0
        0x07, 0x08, 0x01, 0x04, b's', b'p', b'i', b'n', 0x00, 0x00, // export "spin"
        0x0a, 0x09, 0x01, 0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b, // loop { br 0 }
    ];

    fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ok() {
            assert!(start.elapsed() < Duration::from_secs(10), "{what}: not within 10 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Idle, it parks; a guest started then still gets interrupted at its deadline.
    #[test]
    fn parks_when_idle_and_still_interrupts_a_guest_started_afterwards() {
        // As the sandbox does: this build of wasmtime has no garbage collector.
        let mut config = Config::new();
        config.wasm_gc(false).gc_support(false).epoch_interruption(true);
        let engine = Engine::new(&config).unwrap();
        let module = Module::new(&engine, SPIN).unwrap();
        let ticker = EpochTicker::start(engine.clone(), Duration::from_millis(1)).unwrap();
        wait_for("the ticker parks once idle", || ticker.parked());

        let (done, outcome) = std::sync::mpsc::channel();
        let alive = ticker.alive();
        std::thread::spawn(move || {
            let mut store = Store::new(&engine, ());
            store.set_epoch_deadline(5);
            store.epoch_deadline_trap();
            let result = wasmtime::Instance::new(&mut store, &module, &[])
                .and_then(|i| i.get_typed_func::<(), ()>(&mut store, "spin"))
                .and_then(|f| f.call(&mut store, ()));
            let _ = done.send(result.is_err());
        });
        let interrupted = outcome.recv_timeout(Duration::from_secs(10));
        assert_eq!(interrupted, Ok(true), "the spinning guest was never interrupted");
        assert!(!ticker.parked(), "parked while a guest is alive");
        drop(alive);
        wait_for("the ticker parks again once the guest is gone", || ticker.parked());
    }
}
