//! Config to runtime: the one place where the config's settings become the types the
//! runtime's parts take. The config module knows nothing of those parts; they know nothing
//! of TOML.

use crate::admission::RouteLimits;
use crate::config::{NodeSettings, PluginSpec, QuicLimits, RouteSettings, UpstreamSettings};
use crate::protocol::ProtocolLimits;
use crate::sandbox::PluginLimits;
use crate::transport::{Allowlist, ServerConfig};
use crate::upstream::{BreakerConfig, RetryConfig};

impl From<&QuicLimits> for Allowlist {
    fn from(limits: &QuicLimits) -> Allowlist {
        limits.allow.as_ref().map_or_else(Allowlist::any, |names| Allowlist::only(names.iter().cloned()))
    }
}

/// The QUIC listener `[listeners]` describes (`quic` and its `quic_*` limits, and
/// `drain_timeout_ms`), if there is one; timeouts are the transport's defaults.
pub(crate) fn quic_server(settings: &NodeSettings) -> Option<ServerConfig> {
    let limits = &settings.quic_limits;
    Some(ServerConfig {
        limits: ProtocolLimits { max_frame_bytes: limits.max_frame_bytes },
        max_streams_per_connection: limits.max_streams_per_connection,
        max_connections_per_peer: limits.max_connections_per_peer,
        max_buffered_bytes: limits.max_buffered_bytes,
        allow: limits.into(),
        drain: settings.drain,
        ..ServerConfig::new(settings.quic?)
    })
}

impl From<&PluginSpec> for PluginLimits {
    /// `memory_limit_mib` and `deadline_ms` from `[plugins.<name>]`; the other limits are
    /// the sandbox's defaults.
    fn from(spec: &PluginSpec) -> PluginLimits {
        PluginLimits {
            max_memory_bytes: usize::try_from(spec.memory_limit_bytes).unwrap_or(usize::MAX),
            deadline: spec.deadline,
            ..PluginLimits::default()
        }
    }
}

impl From<&RouteSettings> for RouteLimits {
    fn from(route: &RouteSettings) -> RouteLimits {
        RouteLimits {
            max_in_flight: route.max_in_flight,
            queue_len: route.queue_len,
            rate_limit: route.rate_limit,
        }
    }
}

impl From<&UpstreamSettings> for BreakerConfig {
    /// `[upstream.breaker]`; an answer slower than one escalation's `request_timeout_ms`
    /// counts as a failure.
    fn from(up: &UpstreamSettings) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: up.breaker_failure_threshold,
            open_for: up.breaker_open,
            half_open_probes: up.breaker_half_open_probes,
            latency_limit: up.request_timeout,
        }
    }
}

impl From<&UpstreamSettings> for RetryConfig {
    /// `retry_budget` as the share of escalations that may be retried; `0` means no retries
    /// at all, not even the trickle a quiet node is otherwise allowed.
    fn from(up: &UpstreamSettings) -> RetryConfig {
        let floor = if up.retry_budget > 0.0 { RetryConfig::default().min_per_second } else { 0.0 };
        RetryConfig { ratio: up.retry_budget, min_per_second: floor, ..RetryConfig::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::RetryBudget;

    fn upstream(retry_budget: f64) -> UpstreamSettings {
        let text = format!(
            "[plugins.p]\npath = \"p\"\n[routes.r]\nplugin = \"p\"\nthresholds = {{ normal = 0.9 }}\n\
             [upstream]\nkind = \"kserve\"\nurl = \"http://127.0.0.1:1\"\nmodel = \"m\"\nretry_budget = {retry_budget}\n"
        );
        let config = crate::config::parse(&text, std::path::Path::new("n.toml")).unwrap();
        config.settings.upstream.unwrap()
    }

    #[test]
    fn a_zero_retry_budget_never_retries() {
        let now = std::time::Instant::now();
        let mut none = RetryBudget::new(RetryConfig::from(&upstream(0.0)));
        for _ in 0..100 {
            none.record_request(now);
        }
        assert!(!none.try_retry(now));
        let mut some = RetryBudget::new(RetryConfig::from(&upstream(0.1)));
        assert!(some.try_retry(now), "a quiet node keeps its trickle of retries");
    }
}
