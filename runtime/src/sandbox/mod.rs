//! The wasmtime sandbox that runs guest plugins, one fresh isolated instance per request.
//!
//! A [`Sandbox`] owns one wasmtime engine (component model, pooling allocator,
//! copy-on-write memory images, epoch interruption with one ticker thread that parks while
//! no guest runs) and the loaded plugins. Loading a plugin compiles the config's resolved
//! bytes once and pre-links them (`InstancePre`), with the prepared models of its allowlist
//! taken from the node's [`ModelStore`]. Each request then gets its own store and instance
//! from the pool, so nothing a guest does survives the request and nothing it does can
//! reach another request.
//!
//! Why a fresh instance per request: it is the only choice that isolates requests without
//! trusting the guest to reset itself, and with the pooling allocator and copy-on-write
//! memory it is cheap (`cascade-bench sandbox` prints `sandbox.instantiate_us.median` and
//! the whole path's `sandbox.overhead_us` over a direct model call). Reusing instances could
//! save at most the instantiate time, at the price of state leaking between requests. What
//! keeps instantiation cheap: pooled memories and tables stay resident and only the pages a
//! request dirtied are reset (PAGEMAP_SCAN + memset instead of madvise, where the kernel has
//! it), and the guest SDK's bump allocator serves a typical request from the initial memory
//! image, so linear memory never grows (each grow is an mprotect).
//!
//! Limits per plugin ([`PluginLimits`]): linear memory cap, table elements, instance/memory/
//! table counts, a deadline per request, and the largest answer. The wasm stack size is a
//! property of the engine ([`SandboxConfig::max_wasm_stack`]). Any trap, timeout,
//! exhaustion or bad output becomes a [`RequestError`] for that request only, counted by
//! [`ErrorKind`] in [`SandboxStats`].
//!
//! What a guest hands the host is bounded before the host copies it: the outcome and every
//! host call's arguments have a per-call byte budget that counts lists aliasing one buffer
//! once per list (`budget.rs`), tensors have at most [`MAX_DIMS`](inference::MAX_DIMS)
//! dimensions, and log lines are rate-limited per plugin, escaped and cut (`logging.rs`).
//!
//! Deadlines: a request's plugin call ends at the plugin's own deadline or when the request's
//! time runs out ([`Sandbox::handle_async`]), whichever comes first. The epoch ends guest
//! code at the first tick past that instant (and makes a running guest yield to the executor
//! at every tick before it), and `compute` refuses to start a model run after it, so a guest
//! looping on model calls cannot hold the host past it by more than one model run.
//!
//! Hot reload: [`Sandbox::load_plugin`] swaps the plugin under its name atomically; requests
//! already running hold the old version to the end.
//!
//! Files: this one holds the types and the loading of plugins; `engine.rs` creates the engine,
//! `precompiled.rs` tells components from precompiled plugins (and makes the latter),
//! `instance.rs` runs each request on its fresh instance.

pub(crate) mod bindings;
mod blocking;
mod budget;
mod config;
mod engine;
mod error;
pub(crate) mod inference;
mod instance;
mod logging;
pub mod precompiled;
mod ticker;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use wasmtime::component::Linker;
use wasmtime::{Engine, ResourceLimiter};

use self::bindings::PluginPre;
use self::bindings::cascade::plugin::types as wit;
pub use self::engine::SandboxConfig;
pub use self::error::{ErrorKind, GuestError, LoadError, RequestError};
pub use self::instance::PluginInstance;
pub(crate) use self::instance::check_outcome;
use self::ticker::EpochTicker;
use crate::config::{Digest, RateSettings, ResolvedPlugin};
use crate::models::ModelStore;
use crate::tensor::{DType, Tensor};
use crate::token_bucket::TokenBucket;

/// Limits for one plugin's instances.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginLimits {
    /// Linear memory cap per instance, bytes. Default 32 MiB.
    pub max_memory_bytes: usize,
    /// Table elements per table. Default 10,000.
    pub max_table_elements: usize,
    /// Core instances per component instance. Default 8.
    pub max_instances: usize,
    /// Tables per component instance. Default 8.
    pub max_tables: usize,
    /// Memories per component instance. Default 2.
    pub max_memories: usize,
    /// Wall-clock deadline per request, including the model calls it makes, counted from
    /// instantiation; a request with less time left ends sooner. Default 1 s.
    pub deadline: Duration,
    /// Largest answer (sum of output tensor bytes, output names and label), bytes; also sets
    /// how much the host may copy of any one value the guest passes it (`budget.rs`).
    /// Default 1 MiB.
    pub max_output_bytes: usize,
}

impl Default for PluginLimits {
    fn default() -> PluginLimits {
        PluginLimits {
            max_memory_bytes: 32 << 20,
            max_table_elements: 10_000,
            max_instances: 8,
            max_tables: 8,
            max_memories: 2,
            deadline: Duration::from_secs(1),
            max_output_bytes: 1 << 20,
        }
    }
}

/// One request for a plugin, borrowed from whoever holds it (the node's request context).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request<'a> {
    /// The route it came in on.
    pub route: &'a str,
    /// Named input tensors.
    pub inputs: &'a [(String, Tensor)],
    /// Free-form (key, value) parameters.
    pub parameters: &'a [(String, String)],
}

/// A plugin's local answer, checked against the contract.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Named output tensors.
    pub outputs: Vec<(String, Tensor)>,
    /// Confidence, in [0, 1].
    pub confidence: f32,
    /// Optional label.
    pub label: Option<String>,
}

/// What a plugin decided for a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Answer locally.
    Answer(Answer),
    /// Escalate upstream, for this reason.
    Escalate(String),
}

/// Counters since the sandbox was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxStats {
    /// Requests that returned an outcome.
    pub ok: u64,
    /// Failed requests by kind (every kind present, zero or not).
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Guest log lines dropped by the per-plugin rate limit
    /// ([`SandboxConfig::guest_log_rate`]).
    pub log_lines_dropped: u64,
}

impl SandboxStats {
    /// Failed requests of `kind`.
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.errors.get(&kind).copied().unwrap_or(0)
    }
}

/// What the host remembers about a request beyond the guest's return value.
#[derive(Debug, Clone)]
enum Violation {
    ModelNotAllowed(String),
    InvalidTensor {
        model: String,
        why: String,
    },
    /// A model call came after the request's deadline.
    DeadlinePassed,
    /// A host call's arguments declared more bytes than its budget.
    Transfer {
        why: String,
        budget_bytes: usize,
    },
}

/// When a request's plugin call must end.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    /// The instant.
    at: Instant,
    /// The time it allowed, for errors: the plugin's deadline or the request's time left.
    budget: Duration,
}

/// A loaded plugin version, shared by the requests running on it.
struct LoadedPlugin {
    name: Arc<str>,
    digest: Digest,
    version: u64,
    models: HashMap<String, inference::AllowedModel>,
    config: BTreeMap<String, String>,
    logging: bool,
    /// The rate limit of its log lines, shared by all its instances.
    log_bucket: Mutex<TokenBucket>,
    log_rate: RateSettings,
    limits: PluginLimits,
    pre: PluginPre<HostState>,
}

/// Per-request store data: the plugin's capabilities and what the host observed.
pub(crate) struct HostState {
    plugin: Arc<LoadedPlugin>,
    memory_denied: bool,
    violation: Option<Violation>,
    last_error_log: Option<String>,
    /// Time spent in model calls so far.
    inference: Duration,
    /// When this request's call must end.
    deadline: Deadline,
    /// Log lines this request had dropped by the plugin's rate limit.
    log_dropped: u64,
}

impl HostState {
    /// Records why the request ends and returns the error that ends it: a host call that
    /// returns it traps the guest.
    fn refuse(&mut self, violation: Violation, why: &str) -> wasmtime::Error {
        self.violation = Some(violation);
        wasmtime::Error::msg(why.to_owned())
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.plugin.limits.max_memory_bytes && maximum.is_none_or(|m| desired <= m);
        // A refused grow returns -1 to the guest, which usually aborts: remember why.
        self.memory_denied |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.plugin.limits.max_table_elements && maximum.is_none_or(|m| desired <= m))
    }

    fn instances(&self) -> usize {
        self.plugin.limits.max_instances
    }

    fn tables(&self) -> usize {
        self.plugin.limits.max_tables
    }

    fn memories(&self) -> usize {
        self.plugin.limits.max_memories
    }
}

impl wit::Host for HostState {}

pub(crate) fn dtype_from_wit(t: wit::TensorType) -> DType {
    match t {
        wit::TensorType::Fp32 => DType::F32,
        wit::TensorType::U8 => DType::U8,
        wit::TensorType::I8 => DType::I8,
        wit::TensorType::I32 => DType::I32,
        wit::TensorType::I64 => DType::I64,
    }
}

pub(crate) fn dtype_to_wit(t: DType) -> wit::TensorType {
    match t {
        DType::F32 => wit::TensorType::Fp32,
        DType::U8 => wit::TensorType::U8,
        DType::I8 => wit::TensorType::I8,
        DType::I32 => wit::TensorType::I32,
        DType::I64 => wit::TensorType::I64,
    }
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    config: SandboxConfig,
    plugins: RwLock<HashMap<String, Arc<LoadedPlugin>>>,
    versions: AtomicU64,
    ok: AtomicU64,
    errors: [AtomicU64; ErrorKind::ALL.len()],
    log_lines_dropped: AtomicU64,
    ticker: EpochTicker,
}

/// Runs guest plugins in isolated wasmtime instances. Cheap to clone and share across
/// threads. A request runs asynchronously ([`Sandbox::handle_async`], on the caller's
/// executor, yielding at each epoch tick) or on the calling thread ([`Sandbox::handle`]).
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("config", &self.inner.config)
            .field("plugins", &self.inner.plugins.read().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Sandbox {
    /// Loads (or reloads) plugin `name` from its resolved bytes, with the models its
    /// allowlist names taken from `models`, compiles and pre-links it, then swaps it in. New
    /// requests use the new version at once; requests already running finish on the old
    /// one. Returns the version number given to this load (increasing across the sandbox).
    pub fn load_plugin(
        &self,
        name: &str,
        plugin: &ResolvedPlugin,
        models: &ModelStore,
    ) -> Result<u64, LoadError> {
        let limits = PluginLimits::from(&plugin.spec);
        let limit = |field, why: String| LoadError::Limits { plugin: name.to_owned(), field, why };
        if limits.max_memory_bytes > self.inner.config.max_memory_bytes {
            return Err(limit(
                "max_memory_bytes",
                format!(
                    "{} exceeds the sandbox's {}",
                    limits.max_memory_bytes, self.inner.config.max_memory_bytes
                ),
            ));
        }
        if limits.deadline.is_zero() {
            return Err(limit("deadline", "must be more than zero".into()));
        }
        let mut allowed = HashMap::new();
        for model in &plugin.spec.models {
            let loaded = models
                .get(model)
                .ok_or_else(|| LoadError::UnknownModel { plugin: name.to_owned(), model: model.clone() })?;
            allowed.insert(model.clone(), inference::AllowedModel::new(loaded.model.clone()));
        }
        let refused =
            |why: String| LoadError::Compile { plugin: name.to_owned(), file: plugin.spec.path.clone(), why };
        let compile_err = |e: wasmtime::Error| refused(format!("{e:#}"));
        let component = precompiled::component(&self.inner.engine, &plugin.bytes).map_err(refused)?;
        let pre = self.inner.linker.instantiate_pre(&component).map_err(compile_err)?;
        let pre = PluginPre::new(pre).map_err(compile_err)?;
        let version = self.inner.versions.fetch_add(1, Ordering::Relaxed) + 1;
        let loaded = LoadedPlugin {
            name: name.into(),
            digest: plugin.digest,
            version,
            models: allowed,
            config: plugin.spec.config.clone(),
            logging: self.inner.config.guest_logs,
            log_bucket: Mutex::new(TokenBucket::new(self.inner.config.guest_log_rate, Instant::now())),
            log_rate: self.inner.config.guest_log_rate,
            limits,
            pre,
        };
        self.inner.plugins.write().insert(name.to_owned(), Arc::new(loaded));
        Ok(version)
    }

    /// The version number and digest of the plugin now serving `name`.
    pub fn plugin_version(&self, name: &str) -> Option<(u64, Digest)> {
        self.inner.plugins.read().get(name).map(|p| (p.version, p.digest))
    }

    /// Counters of outcomes and errors by kind.
    pub fn stats(&self) -> SandboxStats {
        SandboxStats {
            ok: self.inner.ok.load(Ordering::Relaxed),
            errors: ErrorKind::ALL
                .iter()
                .map(|&k| (k, self.inner.errors[k.index()].load(Ordering::Relaxed)))
                .collect(),
            log_lines_dropped: self.inner.log_lines_dropped.load(Ordering::Relaxed),
        }
    }

    fn count(&self, result: Result<(), ErrorKind>) {
        match result {
            Ok(()) => self.inner.ok.fetch_add(1, Ordering::Relaxed),
            Err(kind) => self.inner.errors[kind.index()].fetch_add(1, Ordering::Relaxed),
        };
    }
}

#[cfg(test)]
mod tests;
