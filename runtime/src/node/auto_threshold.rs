//! The self-tuning threshold: for each route with `[routes.<name>.auto_threshold]`, a task
//! reads the route's latest shadow records every interval, estimates the agreement with the
//! upstream that each threshold would give (with the calibration [`Curve`]), and moves the
//! route's `normal` threshold toward the lowest one that reaches the target: at most `step`
//! at a time, only when the target is more than half a step away, never outside its bounds,
//! and not at all while an admin has pinned it. Every move is logged and counted.

use std::path::PathBuf;
use std::sync::Weak;

use super::Node;
use crate::calibrate::{Curve, Example, grid};
use crate::config::{AutoThreshold, Mode};
use crate::shadow::read_recent;

/// Thresholds searched: steps of 0.001.
const STEPS: u32 = 1000;

/// The threshold `settings` aims for, estimated from `examples`: the lowest in bounds whose
/// estimated agreement reaches the target, else the upper bound. `None` with too few
/// examples to say.
pub(super) fn target(settings: &AutoThreshold, examples: &[Example]) -> Option<f64> {
    if examples.len() < settings.min_samples {
        return None;
    }
    let curve = Curve::new(examples);
    let in_bounds = grid(STEPS).filter(|t| (settings.min..=settings.max).contains(t));
    Some(
        in_bounds
            .into_iter()
            .find(|&t| curve.at(t).agreement >= settings.target_agreement)
            .unwrap_or(settings.max),
    )
}

/// One step from `current` toward `target` (see the module doc); `None` to stay.
pub(super) fn step(settings: &AutoThreshold, current: f64, target: f64) -> Option<f64> {
    let gap = target - current;
    if gap.abs() <= settings.step / 2.0 {
        return None;
    }
    let next = (current + gap.clamp(-settings.step, settings.step)).clamp(settings.min, settings.max);
    (next != current).then_some(next)
}

/// Watches route `route` while the node lives.
pub(super) async fn run(node: Weak<Node>, route: String, settings: AutoThreshold, store: PathBuf) {
    let mut tick = tokio::time::interval(settings.interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        let (file, name, window) = (store.clone(), route.clone(), settings.window);
        let read = tokio::task::spawn_blocking(move || read_recent(&file, &name, window)).await;
        let records = match read {
            Ok(Ok(records)) => records,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "auto-threshold: no records yet");
                continue;
            }
            Err(_) => continue,
        };
        let Some(node) = node.upgrade() else { return };
        let Some(r) = node.route(&route) else { return };
        if r.threshold_pinned() {
            continue;
        }
        let examples: Vec<Example> = records.iter().map(|rec| rec.example()).collect();
        let Some(target) = target(&settings, &examples) else { continue };
        let current = r.threshold(Mode::Normal);
        if let Some(next) = step(&settings, current, target) {
            r.set_threshold(next);
            node.telemetry.threshold_moved(&route, next > current);
            tracing::info!(route = %route, from = current, to = next, target, records = examples.len(), "auto-threshold moved");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings() -> AutoThreshold {
        AutoThreshold {
            target_agreement: 0.95,
            min: 0.5,
            max: 0.99,
            min_samples: 10,
            window: 1000,
            step: 0.02,
            interval: Duration::from_secs(1),
        }
    }

    /// The edge agrees with the upstream above 0.8 and never below it.
    fn examples() -> Vec<Example> {
        (0..100)
            .map(|i| {
                let confidence = f64::from(i) / 100.0;
                let agree = confidence >= 0.8;
                Example { confidence, edge_right: agree, upstream_right: true, agree, weight: 1.0 }
            })
            .collect()
    }

    #[test]
    fn aims_for_the_lowest_threshold_that_reaches_the_target() {
        // Escalated answers agree by definition: 99% agreement needs the 79 examples up to
        // 0.78 escalated (of the 21 kept, the 20 from 0.8 agree, 0.79 does not).
        let strict = AutoThreshold { target_agreement: 0.99, ..settings() };
        let t = target(&strict, &examples()).unwrap();
        assert!((t - 0.781).abs() < 1e-9, "{t}");
        assert_eq!(target(&settings(), &examples()[..5]), None, "too few records");
        let unreachable = AutoThreshold { target_agreement: 1.1, ..settings() };
        assert_eq!(target(&unreachable, &examples()), Some(0.99));
    }

    #[test]
    fn steps_are_bounded_and_small_gaps_are_left_alone() {
        let s = settings();
        assert_eq!(step(&s, 0.5, 0.8), Some(0.52));
        assert_eq!(step(&s, 0.9, 0.5), Some(0.88));
        assert_eq!(step(&s, 0.80, 0.805), None, "within half a step");
        assert_eq!(step(&s, 0.985, 1.0), Some(0.99), "clamped to the bounds");
        assert_eq!(step(&s, 0.99, 1.0), None);
    }
}
