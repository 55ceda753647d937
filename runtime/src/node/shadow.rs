//! Shadow traffic: a sample of the answers given here is also sent upstream, after the
//! answer, and the two tiers' labels compared. Each comparison (and each real escalation
//! that had a local answer to compare) is a record in the node's shadow store and a count in
//! `cascade_shadow_total`; the auto-threshold and `edge-node calibrate --from-shadow` read
//! the records back.
//!
//! A shadow check never delays the answer it checks (it runs on its own task), spends the
//! escalation budget like any escalation, and is the first thing dropped under load: when
//! the node is not in `normal` mode, when the budget is empty, or when too many checks are
//! already in flight.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

use super::Node;
use super::context::Ctx;
use crate::config::Mode;
use crate::protocol::{EscalationRequest, NamedTensor};
use crate::shadow::{Record, ShadowStore};
use crate::telemetry::Telemetry;
use crate::transport;

/// Shadow checks in flight at once, per node.
const MAX_IN_FLIGHT: usize = 16;

/// The node's shadow store and the checks it has in flight.
#[derive(Debug)]
pub(super) struct Shadow {
    pub(super) store: Arc<ShadowStore>,
    in_flight: Arc<Semaphore>,
}

impl Shadow {
    pub(super) fn new(store: ShadowStore) -> Shadow {
        Shadow { store: Arc::new(store), in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)) }
    }
}

/// Whether request `id` falls in a `rate` sample: a hash of the id, so the choice is
/// spread evenly and reproducible.
fn sampled(id: u64, rate: f64) -> bool {
    // splitmix64's finaliser.
    let mut z = id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 11) as f64 / (1u64 << 53) as f64) < rate
}

fn now_us() -> u64 {
    transport::unix_micros(std::time::SystemTime::now())
}

/// After a local answer (`label`, `confidence`) to `ctx`: perhaps check it upstream.
pub(super) fn after_local_answer(node: &Node, ctx: &Ctx<'_>, label: Option<&str>, confidence: f32) {
    let rate = ctx.route.settings.shadow;
    let (Some(shadow), Some(upstream), Some(label)) = (&node.shadow, &node.upstream, label) else { return };
    if rate <= 0.0 || !ctx.may_escalate() || !sampled(ctx.id, rate) {
        return;
    }
    let route = ctx.route.name.as_str();
    let dropped = |reason| node.telemetry.shadow_dropped(route, reason);
    if node.mode() != Mode::Normal {
        return dropped("mode");
    }
    if !node.policy.lock().try_spend(Instant::now()) {
        return dropped("budget");
    }
    let Ok(permit) = shadow.in_flight.clone().try_acquire_owned() else { return dropped("busy") };
    let request = EscalationRequest {
        id: ctx.id,
        route: route.to_owned(),
        inputs: ctx
            .inputs
            .iter()
            .map(|(name, t)| NamedTensor { name: name.clone(), tensor: t.clone() })
            .collect(),
        budget_us: crate::protocol::budget_us(upstream.settings.request_timeout),
        trace: None,
        node_id: node.name().to_owned(),
        local_confidence: Some(confidence),
    };
    let (upstream, store, telemetry) = (upstream.clone(), shadow.store.clone(), node.telemetry.clone());
    let (route, label) = (route.to_owned(), label.to_owned());
    // Shared, not copied: the check runs on a task of its own after the answer.
    let settings = Arc::clone(&ctx.route.settings);
    tokio::spawn(async move {
        let _permit = permit;
        // The upstream's label as the route reads it (its `from_upstream` mapping).
        let answer = upstream.client.escalate(&request).await.map_err(|e| e.to_string()).and_then(|answer| {
            crate::contract::upstream_answer(&settings, answer)
                .map_err(|why| format!("does not fit the route: {why}"))
        });
        match answer {
            Ok(answer) => {
                let upstream_label = answer.label.unwrap_or_default();
                let record = Record {
                    route,
                    at_us: now_us(),
                    confidence,
                    edge_label: label,
                    upstream_label,
                    weight: 1.0 / rate,
                };
                keep(&store, &telemetry, record, true);
            }
            Err(e) => {
                tracing::debug!(error = %e, "shadow check got no answer");
                telemetry.shadow_dropped(&route, "failed");
            }
        }
    });
}

/// After an escalation answered: if this node had an answer of its own, the comparison is a
/// record too (of weight 1: every escalation is compared).
pub(super) fn after_escalation(
    node: &Node,
    ctx: &Ctx<'_>,
    local: Option<(&str, f32)>,
    upstream_label: Option<&str>,
) {
    let (Some(shadow), Some((label, confidence)), Some(upstream_label)) =
        (&node.shadow, local, upstream_label)
    else {
        return;
    };
    let record = Record {
        route: ctx.route.name.clone(),
        at_us: now_us(),
        confidence,
        edge_label: label.to_owned(),
        upstream_label: upstream_label.to_owned(),
        weight: 1.0,
    };
    keep(&shadow.store, &node.telemetry, record, false);
}

/// Stores a record and counts it (shadow checks only: escalations are counted as such).
fn keep(store: &ShadowStore, telemetry: &Telemetry, record: Record, shadow_check: bool) {
    if shadow_check {
        telemetry.shadow(&record.route, record.confidence, record.edge_label == record.upstream_label);
    }
    if !store.record(record.clone()) {
        telemetry.shadow_dropped(&record.route, "store");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_takes_about_the_rate_asked() {
        let taken = (0..100_000u64).filter(|&id| sampled(id, 0.05)).count();
        assert!((4_500..5_500).contains(&taken), "{taken}");
        assert!(!(0..1000u64).any(|id| sampled(id, 0.0)));
        assert!((0..1000u64).all(|id| sampled(id, 1.0)));
    }
}
