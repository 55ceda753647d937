//! Building a node from its resolved config: the model store, the sandbox with its plugins,
//! the routes, the upstream client and the mode controller's task.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::error::NodeError;
use super::mode::mode_loop;
use super::route::Route;
use super::shadow::Shadow;
use super::{Node, Upstream, auto_threshold};
use crate::admission::Admission;
use crate::batcher::BatchSettings;
use crate::cache::Cache;
use crate::config::{BatchingSettings, Mode, NodeSettings, ResolvedConfig};
use crate::models::{Batching, ModelStore};
use crate::modes::ModeController;
use crate::policy::EscalationPolicy;
use crate::receipts::ReceiptLog;
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::shadow::ShadowStore;
use crate::telemetry::Telemetry;
use crate::upstream::UpstreamClient;

/// Bytes of answers the cache may hold (outputs are small: a digit's ten probabilities).
const CACHE_BUDGET_BYTES: usize = 64 << 20;

impl Node {
    /// Builds a node: prepares the models, loads the plugins, connects (lazily) to the
    /// upstream, and starts the mode controller. Must be called inside a tokio runtime;
    /// it compiles plugins and prepares models, so call it where blocking is allowed.
    pub fn new(config: ResolvedConfig) -> Result<Arc<Node>, NodeError> {
        Node::build(config, None)
    }

    /// Builds the node that replaces this one on a reload: its metrics carry on (counters
    /// do not restart), and a mode an admin pinned stays pinned. Cache, admission and
    /// upstream state start afresh, as the new config may change any of them.
    pub fn successor(&self, config: ResolvedConfig) -> Result<Arc<Node>, NodeError> {
        let node = Node::build(config, Some(self.telemetry.clone()))?;
        if let Some(mode) = self.pinned_mode() {
            // The same pin, carried over: not a new switch to count.
            node.modes.lock().pin(mode, Instant::now());
            node.enter(mode);
        }
        Ok(node)
    }

    /// Checks every route's answer contract against what a KServe upstream says its model
    /// answers (its model metadata), so that a mapping that cannot hold stops the node at
    /// start, naming the output, instead of degrading every escalation. An upstream that
    /// does not answer within `timeout` is not waited for: the node must start while its
    /// upstream is down, and each escalated answer is held to the contract anyway.
    pub async fn check_upstream(&self, timeout: Duration) -> Result<(), NodeError> {
        let Some(up) = &self.upstream else { return Ok(()) };
        for (server, offered) in up.client.offered_outputs(timeout).await {
            let offered = match offered {
                Ok(offered) if !offered.is_empty() => offered,
                // Servers may leave a model's outputs out of its metadata (KServe's Python
                // server does unless the model says them).
                Ok(_) => {
                    tracing::warn!(%server, "the upstream model's metadata lists no outputs; its answers are checked as they come");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(%server, error = %e, "cannot read the upstream model's metadata; its answers are checked as they come");
                    continue;
                }
            };
            for route in self.routes.values() {
                crate::contract::check_offered(&route.name, &route.settings, &offered)
                    .map_err(|why| NodeError::UpstreamContract { server: server.clone(), why })?;
            }
        }
        Ok(())
    }

    fn build(config: ResolvedConfig, telemetry: Option<Arc<Telemetry>>) -> Result<Arc<Node>, NodeError> {
        let now = Instant::now();
        let settings = &config.settings;
        let telemetry = match telemetry {
            Some(t) => t,
            None => Arc::new(Telemetry::new()?),
        };
        let batching = settings.batching.map(|b| Batching {
            settings: batch_settings(&b, settings),
            observer: Some(telemetry.batch_observer()),
        });
        let models = ModelStore::load(&config.models, batching.as_ref())?;
        // Admission lets at most `max_in_flight` requests run at once, each in its own
        // instance: a pool of that size means a request that got in always gets an instance.
        let sandbox = Sandbox::new(SandboxConfig {
            max_instances: settings.max_in_flight,
            ..SandboxConfig::default()
        })?;
        for (name, plugin) in &config.plugins {
            sandbox.load_plugin(name, plugin, &models)?;
        }
        let routes: BTreeMap<String, Route> = settings
            .routes
            .iter()
            .map(|(name, r)| (name.clone(), Route::new(name, r, &config, &models)))
            .collect();
        let upstream = match &settings.upstream {
            Some(up) => {
                Some(Arc::new(Upstream { client: UpstreamClient::from_settings(up)?, settings: up.clone() }))
            }
            None => None,
        };
        let shadow = match &settings.shadow {
            Some(s) => Some(Shadow::new(ShadowStore::open(&s.store, s.max_records)?)),
            None => None,
        };
        let receipts = match &settings.telemetry.receipts {
            Some(r) => Some(
                ReceiptLog::open(r).map_err(|cause| NodeError::Receipts { file: r.path.clone(), cause })?,
            ),
            None => None,
        };
        telemetry.set_mode(Mode::Normal);
        routes.keys().for_each(|route| telemetry.prepare_route(route));
        let node = Arc::new(Node {
            admission: Admission::from_settings(settings, now),
            cache: Cache::with_filter(CACHE_BUDGET_BYTES, super::Reply::weigh, super::Reply::cacheable),
            policy: Mutex::new(EscalationPolicy::new(
                settings.modes.switches(Mode::Normal).escalation_budget,
                now,
            )),
            modes: Mutex::new(ModeController::new(&settings.modes, now)),
            upstream,
            shadow,
            receipts,
            batching,
            telemetry,
            // Ids from different nodes and restarts should not collide in logs and receipts.
            next_id: AtomicU64::new(id_seed()),
            cost: Mutex::default(),
            routes,
            sandbox,
            models,
            config,
        });
        if node.config.settings.modes.automatic {
            tokio::spawn(mode_loop(Arc::downgrade(&node)));
        }
        if let Some(store) = &node.config.settings.shadow {
            for (name, route) in &node.config.settings.routes {
                if let Some(auto) = route.auto_threshold {
                    let watch =
                        auto_threshold::run(Arc::downgrade(&node), name.clone(), auto, store.store.clone());
                    tokio::spawn(watch);
                }
            }
        }
        Ok(node)
    }
}

/// A starting request id: the clock and the process id, so two nodes or two runs of one
/// rarely share ids.
fn id_seed() -> u64 {
    let now = crate::transport::unix_micros(std::time::SystemTime::now());
    (now << 16) ^ u64::from(std::process::id()).rotate_left(48)
}

/// One pool of batching threads per model; each runs one batch at a time, so as many as
/// there are cores keep them all busy. Every admitted request may wait on a model at once,
/// so the queue holds them all: the batcher never refuses an admitted one.
fn batch_settings(b: &BatchingSettings, node: &NodeSettings) -> BatchSettings {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let admitted = usize::try_from(node.max_in_flight).unwrap_or(usize::MAX);
    let batch = BatchSettings::new(usize::try_from(b.max_batch).unwrap_or(usize::MAX), b.max_delay, cores)
        .calibrated(b.calibrate);
    let max_waiting = batch.max_waiting.max(admitted);
    batch.max_waiting(max_waiting)
}
