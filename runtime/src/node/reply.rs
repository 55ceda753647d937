//! A node's answer to a request, and its receipt: how it was produced.

use serde_json::{Map, Value, json};

use crate::cache::CacheStatus;
use crate::config::Mode;
use crate::policy::DegradedReason;
use crate::tensor::Tensor;

/// Why an answer is degraded.
#[derive(Debug, Clone, PartialEq)]
pub struct Degraded {
    /// The policy's reason.
    pub reason: DegradedReason,
    /// What failed, in words safe to show a client (no addresses or internals).
    pub detail: Option<String>,
}

/// An answer and how it was produced.
///
/// Everything but [`Reply::request`] is fixed when the answer is computed and shared by
/// every request that gets it from the cache or by coalescing; `request` is each request's
/// own.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Named output tensors.
    pub outputs: Vec<(String, Tensor)>,
    /// The answering tier's confidence.
    pub confidence: f32,
    /// The answer's label, if the answering plugin gave one.
    pub label: Option<String>,
    /// Name of the node that answered (this node's, or the upstream's).
    pub tier: String,
    /// Whether the upstream answered.
    pub escalated: bool,
    /// Set when the local answer stands in for an escalation that did not happen.
    pub degraded: Option<Degraded>,
    /// This node's plugin's confidence, escalated or not; `None` when the plugin asked to
    /// escalate without an answer of its own.
    pub edge_confidence: Option<f32>,
    /// The threshold the decision was made against.
    pub threshold: f64,
    /// The mode the node was in.
    pub mode: Mode,
    /// Plugin and model digests of the tier that answered, short.
    pub models: String,
    /// The upstream's own stage timings, in microseconds (escalated answers).
    pub upstream_timings: Vec<(String, u64)>,
    /// This request's own part of the receipt.
    pub request: RequestReceipt,
}

/// What is particular to one request that got a [`Reply`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestReceipt {
    /// The node's id for the request (hex), also the escalation id it sent upstream.
    pub id: String,
    /// Cache hit, miss (computed for this request) or coalesced with an identical one.
    pub cache: CacheStatus,
    /// This node's stage timings for the request, in microseconds.
    pub timings: Vec<(&'static str, u64)>,
}

impl Reply {
    /// The receipt, as the KServe response's `parameters`: `request_id`, `tier`,
    /// `confidence` (the answering tier's), `edge_confidence` (this node's plugin's),
    /// `threshold` and `mode` that applied, `escalated`, `degraded` (with `degraded_reason`
    /// and `degraded_detail`), `cache`, `models`, `label` when there is one, and
    /// `timings_us` (this node's stages, and the upstream's under `upstream.`).
    pub fn parameters(&self) -> Map<String, Value> {
        let mut p = Map::new();
        p.insert("request_id".into(), json!(self.request.id));
        p.insert("tier".into(), json!(self.tier));
        p.insert("confidence".into(), json!(self.confidence));
        if let Some(c) = self.edge_confidence {
            p.insert("edge_confidence".into(), json!(c));
        }
        p.insert("threshold".into(), json!(self.threshold));
        p.insert("mode".into(), json!(self.mode.name()));
        p.insert("escalated".into(), json!(self.escalated));
        p.insert("degraded".into(), json!(self.degraded.is_some()));
        if let Some(d) = &self.degraded {
            p.insert("degraded_reason".into(), json!(d.reason.name()));
            if let Some(detail) = &d.detail {
                p.insert("degraded_detail".into(), json!(detail));
            }
        }
        p.insert("cache".into(), json!(self.request.cache.name()));
        p.insert("models".into(), json!(self.models));
        if let Some(label) = &self.label {
            p.insert("label".into(), json!(label));
        }
        let mut timings: Map<String, Value> =
            self.request.timings.iter().map(|(stage, us)| ((*stage).to_owned(), json!(us))).collect();
        for (stage, us) in &self.upstream_timings {
            timings.insert(format!("upstream.{stage}"), json!(us));
        }
        p.insert("timings_us".into(), Value::Object(timings));
        p
    }

    /// Bytes the cache counts for this reply.
    pub(super) fn weigh(&self) -> usize {
        let tensors: usize =
            self.outputs.iter().map(|(n, t)| n.len() + t.data().len() + 8 * t.shape().len()).sum();
        let timings: usize = self.upstream_timings.iter().map(|(s, _)| s.len() + 8).sum();
        tensors
            + timings
            + self.tier.len()
            + self.models.len()
            + self.label.as_ref().map_or(0, String::len)
            + 96
    }

    /// Degraded answers reach every coalesced follower but are not cached: once the
    /// upstream is back, the next identical request should escalate again.
    pub(super) fn cacheable(&self) -> bool {
        self.degraded.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply() -> Reply {
        Reply {
            outputs: Vec::new(),
            confidence: 0.5,
            label: Some("3".into()),
            tier: "edge".into(),
            escalated: false,
            degraded: None,
            edge_confidence: Some(0.5),
            threshold: 0.9,
            mode: Mode::Surge,
            models: "mnist@0123 edge@4567".into(),
            upstream_timings: vec![("sandbox".into(), 70)],
            request: RequestReceipt {
                id: "00ff".into(),
                cache: CacheStatus::Miss,
                timings: vec![("admission", 3), ("sandbox", 40)],
            },
        }
    }

    #[test]
    fn degraded_answers_are_not_cached() {
        assert!(reply().cacheable());
        let degraded = Reply {
            degraded: Some(Degraded { reason: DegradedReason::UpstreamFailed, detail: None }),
            ..reply()
        };
        assert!(!degraded.cacheable());
    }

    #[test]
    fn the_receipt_says_how_the_answer_was_made() {
        let p = Value::Object(reply().parameters());
        assert_eq!(p["request_id"], "00ff");
        assert_eq!(
            (&p["threshold"], &p["mode"], &p["cache"]),
            (&json!(0.9), &json!("surge"), &json!("miss"))
        );
        assert_eq!(p["edge_confidence"], json!(0.5));
        assert_eq!(p["models"], "mnist@0123 edge@4567");
        assert_eq!(p["timings_us"], json!({ "admission": 3, "sandbox": 40, "upstream.sandbox": 70 }));
    }
}
