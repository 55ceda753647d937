//! Config to runtime: the one place where the config's settings become the types the
//! runtime's parts take. The config module knows nothing of those parts; they know nothing
//! of TOML.

use crate::admission::RouteLimits;
use crate::config::{PluginSpec, RouteSettings, UpstreamSettings};
use crate::sandbox::PluginLimits;
use crate::upstream::{BreakerConfig, RetryConfig};

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
    fn from(up: &UpstreamSettings) -> RetryConfig {
        RetryConfig { ratio: up.retry_budget, ..RetryConfig::default() }
    }
}
