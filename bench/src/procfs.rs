//! What Linux's `/proc` says about a server process under test: CPU time, context switches,
//! memory and open descriptors. Each reader says where there is no `/proc` (not Linux)
//! instead of guessing.

use std::time::Duration;

use anyhow::Context;

/// User + system CPU time of process `pid` so far, all its threads (exited ones too), from
/// `/proc/{pid}/stat`; `None` where there is no such file (not Linux).
pub(crate) fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second()))
}

/// Context switches, voluntary and involuntary, of process `pid`'s live threads so far, from
/// `/proc/{pid}/task/*/status`; `None` where there is no such directory (not Linux).
pub(crate) fn context_switches(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let statuses =
        tasks.flatten().filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok());
    Some(statuses.map(|status| parse_context_switches(&status)).sum())
}

/// Resident memory of process `pid` now (`VmRSS`), in MiB.
pub(crate) fn resident_mib(pid: u32) -> anyhow::Result<f64> {
    status_mib(pid, "VmRSS")
}

/// Anonymous resident memory of process `pid` now (`RssAnon`: heap, stacks, buffers; not
/// the pages of its binary or other files it maps), in MiB.
pub(crate) fn anonymous_mib(pid: u32) -> anyhow::Result<f64> {
    status_mib(pid, "RssAnon")
}

/// The most resident memory process `pid` has had (`VmHWM`), in MiB.
pub(crate) fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    status_mib(pid, "VmHWM")
}

/// The file descriptors process `pid` holds open now.
pub(crate) fn open_fds(pid: u32) -> anyhow::Result<usize> {
    let entries =
        std::fs::read_dir(format!("/proc/{pid}/fd")).with_context(|| format!("reading /proc/{pid}/fd"))?;
    Ok(entries.count())
}

/// A `kB` line of `/proc/{pid}/status`, such as `VmRSS`, in MiB.
fn status_mib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (memory is read on Linux only)"))?;
    parse_status_kib(&status, field)
        .map(|kib| kib / 1024.0)
        .with_context(|| format!("no {field} line in /proc/{pid}/status"))
}

/// The value of `field:` in a `/proc/.../status` file, given in kB.
fn parse_status_kib(status: &str, field: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `voluntary_ctxt_switches + nonvoluntary_ctxt_switches` from a `/proc/.../status` file.
fn parse_context_switches(status: &str) -> u64 {
    status
        .lines()
        .filter_map(|line| {
            line.strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
        })
        .filter_map(|count| count.trim().parse::<u64>().ok())
        .sum()
}

/// `utime + stime` from a `/proc/{pid}/stat` line, in clock ticks. Fields 14 and 15 count
/// from the process name, which is in parentheses and may itself hold spaces or `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `after_name` starts at field 3 (the state).
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    #[cfg(unix)]
    {
        // SAFETY: sysconf reads a system constant; it has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if ticks > 0 {
            return ticks as f64;
        }
    }
    100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_past_a_process_name_with_spaces_and_parentheses() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 731 269 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(1000));
        assert_eq!(parse_cpu_ticks("4242 (short) S 1"), None);
        let own = cpu_time(std::process::id());
        assert!(cfg!(not(target_os = "linux")) || own.is_some());
    }

    #[test]
    fn context_switches_add_both_kinds_over_every_thread() {
        let status = "Name:\tedge-node\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(parse_context_switches(status), 127);
        assert_eq!(parse_context_switches("Name:\tx\n"), 0);
        // This test's process has at least its own thread, which has switched at least once.
        let own = context_switches(std::process::id());
        assert!(cfg!(not(target_os = "linux")) || own.is_some_and(|n| n > 0));
    }

    #[test]
    fn memory_lines_are_read_by_their_exact_name() {
        let status = "VmHWM:\t   40960 kB\nVmRSS:\t   20480 kB\nVmRSSx:\t1 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(20480.0));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(40960.0));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        if cfg!(target_os = "linux") {
            let own = std::process::id();
            let (now, peak) = (resident_mib(own).unwrap(), peak_rss_mib(own).unwrap());
            assert!(now > 0.0 && peak >= now);
            // Part of what is resident is this test binary's own pages.
            let anon = anonymous_mib(own).unwrap();
            assert!(anon > 0.0 && anon < now, "anonymous {anon} of {now} MiB");
            assert!(open_fds(own).unwrap() > 0);
        }
    }
}
