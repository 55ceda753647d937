//! `--kill-central-at P`: the central node crashes part-way through the run and comes back.
//!
//! Once `P` of the requests have been answered, the central process is killed with SIGKILL
//! (a crash: no draining, and its QUIC connection to the edge is not closed, so the edge has
//! to find out), and [`CENTRAL_DOWN`] later started again on the same ports, with the same
//! config and certificates. The edge keeps answering meanwhile, marked degraded. Times are
//! taken on the stream's clock, so they line up with the requests' own.

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::watch;

use super::tiers::Tiers;
use crate::deployment::NodeProcess;

/// How long the central node stays down: "a few seconds", long enough for the edge's
/// breaker to open and for the degraded answers to be seen.
pub(super) const CENTRAL_DOWN: Duration = Duration::from_secs(3);

/// How long the run should go on after the restart for the recovery to be seen. The edge
/// learns that its QUIC connection to the killed process is dead only from its idle timeout
/// (5 s after the last packet it received, so about 2 s after a restart [`CENTRAL_DOWN`]
/// after the kill), connects again at its breaker's next probe (within
/// [`super::tiers::BREAKER_OPEN_MS`]), and then an escalation-worthy request has to come by:
/// about 3-4 s on the development machine. Twice that, for a busy machine.
pub(super) const RECOVERY_ALLOWANCE: Duration = Duration::from_secs(8);

/// A share of the requests, written `50%` or `0.5`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Share(pub f64);

impl FromStr for Share {
    type Err = String;

    fn from_str(s: &str) -> Result<Share, String> {
        let (number, scale) = match s.trim().strip_suffix('%') {
            Some(percent) => (percent, 100.0),
            None => (s.trim(), 1.0),
        };
        let value =
            number.trim().parse::<f64>().map_err(|_| format!("`{s}` is not a share: write 50% or 0.5"))?;
        let share = value / scale;
        // At 100% every request would be answered before the kill: nothing to see.
        if !(0.0..1.0).contains(&share) {
            return Err(format!("`{s}`: expected a share from 0% up to (not including) 100%"));
        }
        Ok(Share(share))
    }
}

impl Share {
    /// The number of answered requests, out of `n`, after which the central is killed.
    pub(super) fn of(self, n: usize) -> usize {
        ((self.0 * n as f64).round() as usize).min(n.saturating_sub(1))
    }
}

/// The request rate that spreads the requests after the kill (`1 - share` of `n`) over the
/// outage and the [`RECOVERY_ALLOWANCE`] after it, so that the run shows both.
pub(super) fn rate_to_see_recovery(n: usize, share: Share) -> f64 {
    let after_kill = (n - share.of(n)).max(1) as f64;
    after_kill / (CENTRAL_DOWN + RECOVERY_ALLOWANCE).as_secs_f64()
}

/// When the central node went down and came back, from the start of the stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Outage {
    /// Requests answered when it was killed.
    pub(super) answered_at_kill: usize,
    /// When it was killed.
    pub(super) killed: Duration,
    /// When its new process was started: the restart that recovery is measured from.
    pub(super) restarted: Duration,
    /// When the new process answered its readiness check.
    pub(super) ready: Duration,
}

/// Kills `central` once `answered` reaches `after`, starts it again [`CENTRAL_DOWN`] later,
/// and returns the new process with the outage's times on `clock`. `say` prints a line
/// without breaking the progress bar.
pub(super) async fn kill_and_restart(
    tiers: &Tiers,
    mut central: NodeProcess,
    after: usize,
    mut answered: watch::Receiver<usize>,
    clock: Instant,
    say: impl Fn(String),
) -> anyhow::Result<(NodeProcess, Outage)> {
    if answered.wait_for(|&n| n >= after).await.is_err() {
        bail!("the requests stopped before {after} were answered; the central node was not killed");
    }
    let pid = central.id();
    central.kill();
    let killed = clock.elapsed();
    say(format!(
        "   killed the central node (pid {pid}, SIGKILL) after {after} answers, at {:.1} s",
        killed.as_secs_f64()
    ));
    tokio::time::sleep(CENTRAL_DOWN).await;

    let mut central = tiers.spawn_central("central-restarted")?;
    let restarted = clock.elapsed();
    say(format!(
        "   restarted the central node (pid {}) on the same ports at {:.1} s",
        central.id(),
        restarted.as_secs_f64()
    ));
    let client = reqwest::Client::new();
    central.wait_ready(&client, tiers.central_http).await.context("restarting the central node")?;
    let ready = clock.elapsed();
    say(format!("   the restarted central node is ready at {:.1} s", ready.as_secs_f64()));
    Ok((central, Outage { answered_at_kill: after, killed, restarted, ready }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_percentages_or_fractions() {
        assert_eq!("50%".parse::<Share>(), Ok(Share(0.5)));
        assert_eq!("0.25".parse::<Share>(), Ok(Share(0.25)));
        assert_eq!(" 0 % ".parse::<Share>(), Ok(Share(0.0)));
        for bad in ["100%", "1", "-5%", "half", ""] {
            assert!(bad.parse::<Share>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_kill_comes_before_the_last_answer() {
        assert_eq!(Share(0.5).of(120), 60);
        assert_eq!(Share(0.999).of(10), 9);
        assert_eq!(Share(0.0).of(10), 0);
    }

    #[test]
    fn the_rate_spreads_the_rest_over_the_outage_and_recovery() {
        let seconds = (CENTRAL_DOWN + RECOVERY_ALLOWANCE).as_secs_f64();
        assert!((rate_to_see_recovery(2000, Share(0.5)) * seconds - 1000.0).abs() < 1e-9);
    }
}
