//! Where the scenarios' processes run: the node on one core, every client on the other, so
//! that what is measured is what the node does, not the CPU the clients take from it.

/// Which core the load generator's threads run on, once the node has the other.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cores {
    generator: Option<usize>,
}

impl Cores {
    /// Moves every thread of process `pid` to the last core this process may use, and
    /// keeps the first for the generator; with fewer than two cores, or where affinity
    /// cannot be set, leaves both where they are and says so.
    pub(super) fn split(pid: u32, scenario: &str) -> Cores {
        let allowed = allowed_cores();
        let (Some(&first), Some(&last)) = (allowed.first(), allowed.last()) else {
            eprintln!("faults.{scenario}: cannot read this process's cores; node and generator share them");
            return Cores { generator: None };
        };
        if first == last {
            eprintln!("faults.{scenario}: one core only; node and generator share it");
            return Cores { generator: None };
        }
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.flatten().collect::<Vec<_>>());
        let moved = tasks.map(|tasks| {
            tasks.iter().filter_map(|t| t.file_name().to_str()?.parse::<i32>().ok()).all(|tid| pin(tid, last))
        });
        if moved.unwrap_or(false) {
            eprintln!("faults.{scenario}: the node runs on core {last}, the generators on core {first}");
            Cores { generator: Some(first) }
        } else {
            eprintln!(
                "faults.{scenario}: could not pin the node's threads; node and generator share the cores"
            );
            Cores { generator: None }
        }
    }

    /// Pins the calling thread to the generator's core, if there is one.
    pub(super) fn enter(self) {
        if let Some(core) = self.generator {
            pin(0, core);
        }
    }

    /// Runs `f` with the calling thread on the generator's core, and every thread `f`
    /// starts too (threads inherit their creator's cores); then gives the thread back the
    /// cores it had.
    pub(super) fn run_here<T>(self, f: impl FnOnce() -> T) -> T {
        let Some(core) = self.generator else { return f() };
        let had = allowed_cores();
        pin(0, core);
        let out = f();
        pin_to(0, &had);
        out
    }
}

/// Runs `f`, which starts the node, with this thread on the core [`Cores::split`] gives the
/// node, so that the node is born on one core and sizes itself for one (tokio's workers come
/// from `available_parallelism`), as a node given one core by its service manager or
/// container would. Moved there after it started, its two workers would time-share the core
/// and an admitted request would wait out the other worker's time slice.
pub(super) fn born_on_node_core<T>(f: impl FnOnce() -> T) -> T {
    let had = allowed_cores();
    match had.last() {
        Some(&last) if had.len() > 1 && pin(0, last) => {
            let out = f();
            pin_to(0, &had);
            out
        }
        _ => f(),
    }
}

/// The cores this process may run on.
fn allowed_cores() -> Vec<usize> {
    // SAFETY: sched_getaffinity writes into the one cpu_set_t passed, of the size given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

/// Pins thread `tid` (0: the calling thread) to `core`; whether that worked.
fn pin(tid: i32, core: usize) -> bool {
    pin_to(tid, &[core])
}

/// Puts the calling thread in Linux's `SCHED_IDLE` class: it runs only when no other thread
/// of its core is ready to. Whether that worked.
pub(super) fn run_when_idle() -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: 0 names the calling thread; `param` is an initialised sched_param, which
    // SCHED_IDLE requires to hold priority 0.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0 }
}

/// Runs `f` with the calling thread (and the threads `f` starts, which inherit it) in Linux's
/// `SCHED_FIFO` class at the lowest real-time priority, then back in the ordinary class: no
/// ordinary thread of its core (the machine's own agents, this process's other threads)
/// preempts a load generator, whose delays would count as the node's latency. The kernel
/// still leaves ordinary threads a share of each second (`sched_rt_runtime_us`). Without
/// the privilege `f` runs as it is, and the process says so once.
pub(super) fn run_first<T>(f: impl FnOnce() -> T) -> T {
    let set = |policy, priority| {
        let param = libc::sched_param { sched_priority: priority };
        // SAFETY: 0 names the calling thread; `param` is an initialised sched_param with a
        // priority valid for the policy.
        unsafe { libc::sched_setscheduler(0, policy, &param) == 0 }
    };
    let first = set(libc::SCHED_FIFO, 1);
    if !first {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            eprintln!(
                "faults: could not give the load generators the real-time class (needs CAP_SYS_NICE); other threads of their core may delay them, which then counts as the node's latency"
            )
        });
    }
    let out = f();
    if first {
        set(libc::SCHED_OTHER, 0);
    }
    out
}

/// Lets thread `tid` (0: the calling thread) run on `cores` only; whether that worked.
fn pin_to(tid: i32, cores: &[usize]) -> bool {
    // SAFETY: the set is built here and passed with its size; sched_setaffinity changes
    // only the scheduling of thread `tid`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &core in cores {
            libc::CPU_SET(core, &mut set);
        }
        libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set) == 0
    }
}
