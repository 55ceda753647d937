//! A node's answer to a request, and how it was produced.

use serde_json::{Map, Value, json};

use crate::cache::CacheStatus;
use crate::policy::DegradedReason;
use crate::tensor::Tensor;

/// Why an answer is degraded.
#[derive(Debug, Clone, PartialEq)]
pub struct Degraded {
    /// The policy's reason.
    pub reason: DegradedReason,
    /// The upstream's failure, when escalating was tried.
    pub detail: Option<String>,
}

/// An answer and how it was produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Named output tensors.
    pub outputs: Vec<(String, Tensor)>,
    /// The answering plugin's confidence.
    pub confidence: f32,
    /// The answer's label, if the plugin gave one.
    pub label: Option<String>,
    /// Name of the node that answered (this node's, or the upstream's).
    pub tier: String,
    /// Whether the upstream answered.
    pub escalated: bool,
    /// Set when the local answer stands in for an escalation that did not happen.
    pub degraded: Option<Degraded>,
    /// Cache hit, miss (computed for this request) or coalesced with an identical one.
    pub cache: CacheStatus,
}

impl Reply {
    /// How the answer was produced, as the KServe response's `parameters`: `confidence`,
    /// `tier`, `escalated`, `degraded` (with `degraded_reason` and `degraded_detail`),
    /// `cache`, and `label` when the plugin gave one.
    pub fn parameters(&self) -> Map<String, Value> {
        let mut p = Map::new();
        p.insert("confidence".into(), json!(self.confidence));
        p.insert("tier".into(), json!(self.tier));
        p.insert("escalated".into(), json!(self.escalated));
        p.insert("degraded".into(), json!(self.degraded.is_some()));
        if let Some(d) = &self.degraded {
            p.insert("degraded_reason".into(), json!(d.reason.name()));
            if let Some(detail) = &d.detail {
                p.insert("degraded_detail".into(), json!(detail));
            }
        }
        p.insert("cache".into(), json!(self.cache.name()));
        if let Some(label) = &self.label {
            p.insert("label".into(), json!(label));
        }
        p
    }

    /// Bytes the cache counts for this reply.
    pub(super) fn weigh(&self) -> usize {
        let tensors: usize =
            self.outputs.iter().map(|(n, t)| n.len() + t.data().len() + 8 * t.shape().len()).sum();
        tensors + self.tier.len() + self.label.as_ref().map_or(0, String::len) + 64
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

    #[test]
    fn degraded_answers_are_not_cached() {
        let reply = Reply {
            outputs: Vec::new(),
            confidence: 0.5,
            label: None,
            tier: "edge".into(),
            escalated: false,
            degraded: None,
            cache: CacheStatus::Miss,
        };
        assert!(reply.cacheable());
        let degraded = Reply {
            degraded: Some(Degraded { reason: DegradedReason::UpstreamFailed, detail: None }),
            ..reply
        };
        assert!(!degraded.cacheable());
    }
}
