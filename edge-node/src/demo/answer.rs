//! One answer from the edge, read from its KServe v2 response: the predicted class and the
//! receipt the node put in the response's `parameters` (`Reply::parameters` in the
//! runtime: `tier`, `escalated`, `degraded`, `degraded_reason`, `cache`).

use anyhow::Context;
use serde_json::Value;

/// How a request was answered, one class per request, decided in this order: a degraded
/// answer is `Degraded` even when it reached a coalesced follower; an answer from the cache
/// (or shared with an identical request in flight) is `Cached`, whichever tier computed it;
/// the rest were computed for this request, by the central node (`Escalated`) or by the
/// edge's own model (`Edge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Class {
    /// Computed at the edge, confident enough to stay there.
    Edge,
    /// Escalated over QUIC and answered by the central node.
    Escalated,
    /// Served from the edge's answer cache, or coalesced with an identical request.
    Cached,
    /// The edge's own answer standing in for an escalation that could not happen.
    Degraded,
}

impl Class {
    /// Every class, in the order the report lists them.
    pub(super) const ALL: [Class; 4] = [Class::Edge, Class::Escalated, Class::Cached, Class::Degraded];

    /// Its name in the report and on the progress bar.
    pub(super) fn name(self) -> &'static str {
        match self {
            Class::Edge => "edge",
            Class::Escalated => "escalated",
            Class::Cached => "cached",
            Class::Degraded => "degraded",
        }
    }
}

/// What the edge said about one image.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Answer {
    /// The class with the highest probability.
    pub(super) predicted: usize,
    /// The name of the node whose model produced the answer (`edge`, `central`).
    pub(super) tier: String,
    /// How the request was answered.
    pub(super) class: Class,
    /// Why it is degraded (`breaker_open`, `upstream_failed`, ...), if it is.
    pub(super) degraded_reason: Option<String>,
}

impl Answer {
    /// Reads a successful KServe v2 response body.
    pub(super) fn from_response(json: &Value) -> anyhow::Result<Answer> {
        let probabilities: Vec<f64> = json["outputs"]
            .as_array()
            .and_then(|outs| outs.iter().find(|o| o["name"] == "probabilities"))
            .and_then(|o| o["data"].as_array())
            .map(|d| d.iter().filter_map(Value::as_f64).collect())
            .context("the response has no probabilities output")?;
        let predicted = probabilities
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .context("the response's probabilities are empty")?;
        let params = &json["parameters"];
        let tier = params["tier"].as_str().context("the response's parameters have no `tier`")?.to_owned();
        let flag = |name: &str| params[name].as_bool().unwrap_or(false);
        // `hit` and `coalesced` reuse an answer computed for another request; `miss` computed it.
        let cached = params["cache"].as_str().is_some_and(|c| c != "miss");
        let class = if flag("degraded") {
            Class::Degraded
        } else if cached {
            Class::Cached
        } else if flag("escalated") {
            Class::Escalated
        } else {
            Class::Edge
        };
        let degraded_reason = params["degraded_reason"].as_str().map(str::to_owned);
        Ok(Answer { predicted, tier, class, degraded_reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn response(params: Value) -> Value {
        json!({"outputs": [{"name": "probabilities", "data": [0.1, 0.7, 0.2]}], "parameters": params})
    }

    #[test]
    fn the_receipt_decides_the_class() {
        let edge = Answer::from_response(&response(json!({"tier": "edge", "cache": "miss"}))).unwrap();
        assert_eq!((edge.predicted, edge.tier.as_str(), edge.class), (1, "edge", Class::Edge));
        let up = json!({"tier": "central", "escalated": true, "cache": "miss"});
        assert_eq!(Answer::from_response(&response(up)).unwrap().class, Class::Escalated);
        let hit = json!({"tier": "central", "escalated": true, "cache": "hit"});
        assert_eq!(Answer::from_response(&response(hit)).unwrap().class, Class::Cached);
        let degraded = json!({"tier": "edge", "escalated": false, "degraded": true, "cache": "coalesced",
            "degraded_reason": "breaker_open"});
        let degraded = Answer::from_response(&response(degraded)).unwrap();
        assert_eq!(
            (degraded.class, degraded.degraded_reason.as_deref()),
            (Class::Degraded, Some("breaker_open"))
        );
    }

    #[test]
    fn a_response_without_probabilities_or_tier_is_an_error() {
        assert!(Answer::from_response(&json!({"outputs": [], "parameters": {"tier": "edge"}})).is_err());
        assert!(Answer::from_response(&response(json!({}))).is_err());
    }
}
