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
//! Hot reload: [`Sandbox::load_plugin`] swaps the plugin under its name atomically; requests
//! already running hold the old version to the end.

pub(crate) mod bindings;
mod config;
mod error;
pub(crate) mod inference;
mod logging;
mod ticker;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store, Trap,
};

use self::bindings::cascade::plugin::types as wit;
use self::bindings::{Plugin, PluginPre};
pub use self::error::{ErrorKind, GuestError, LoadError, RequestError};
use self::ticker::{Alive, EpochTicker};
use crate::backend::PreparedModel;
use crate::config::{Digest, ResolvedPlugin};
use crate::models::ModelStore;
use crate::tensor::{DType, Tensor};

/// Engine-wide settings, fixed when the sandbox is created.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Instances that can exist at once (the pool's size); requests beyond it fail with
    /// [`ErrorKind::Instantiate`]. Default 64.
    pub max_instances: u32,
    /// Largest linear memory any plugin may be granted. Default 256 MiB.
    pub max_memory_bytes: usize,
    /// Wasm stack per call, for every plugin (wasmtime sets it per engine). Default 512 KiB.
    pub max_wasm_stack: usize,
    /// Epoch tick: the granularity of request deadlines. Default 1 ms.
    pub epoch_tick: Duration,
    /// Bytes of each pooled linear memory kept mapped between instances, where the kernel
    /// offers PAGEMAP_SCAN (Linux 6.7+): only the pages a request dirtied are reset, with
    /// `memset` instead of `madvise`, so the next request takes no page faults (tables keep
    /// up to 64 KiB resident the same way). Ignored elsewhere. Default 4 MiB.
    pub keep_resident_bytes: usize,
    /// Whether guests' log messages reach the node's tracing (else they are dropped).
    /// Default `true`.
    pub guest_logs: bool,
}

impl Default for SandboxConfig {
    fn default() -> SandboxConfig {
        SandboxConfig {
            max_instances: 64,
            max_memory_bytes: 256 << 20,
            max_wasm_stack: 512 << 10,
            epoch_tick: Duration::from_millis(1),
            keep_resident_bytes: 4 << 20,
            guest_logs: true,
        }
    }
}

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
    /// Wall-clock deadline per request, including the model calls it makes. Default 1 s.
    pub deadline: Duration,
    /// Largest answer (sum of output tensor bytes and label), bytes. Default 1 MiB.
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
    InvalidTensor { model: String, why: String },
}

/// A loaded plugin version, shared by the requests running on it.
struct LoadedPlugin {
    name: Arc<str>,
    digest: Digest,
    version: u64,
    models: HashMap<String, Arc<dyn PreparedModel>>,
    config: BTreeMap<String, String>,
    logging: bool,
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
    ticker: EpochTicker,
}

/// Runs guest plugins in isolated wasmtime instances. Cheap to clone and share across
/// threads; every method is synchronous (run requests on a blocking thread pool).
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
    /// Creates the engine, its instance pool and its epoch ticker.
    pub fn new(config: SandboxConfig) -> Result<Sandbox, LoadError> {
        let engine_err = |e: wasmtime::Error| LoadError::Engine(format!("{e:#}"));
        // Every one of `max_instances` component instances may use as many core instances,
        // memories and tables as a plugin is allowed ([`PluginLimits`]): the pool holds that
        // many of each, so a request that got in always gets an instance. (A component is
        // several core instances: the guest's module and wit-component's shims; each with
        // its table.) Unused slots cost address space, not memory.
        let per = PluginLimits::default();
        let times = |n: usize| config.max_instances.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(config.max_instances)
            .total_core_instances(times(per.max_instances))
            .total_memories(times(per.max_memories))
            .total_tables(times(per.max_tables))
            .max_core_instances_per_component(u32::try_from(per.max_instances).unwrap_or(u32::MAX))
            .max_memories_per_component(u32::try_from(per.max_memories).unwrap_or(u32::MAX))
            .max_tables_per_component(u32::try_from(per.max_tables).unwrap_or(u32::MAX))
            .max_memory_size(config.max_memory_bytes);
        // Without PAGEMAP_SCAN (Linux < 6.7) wasmtime would memset the whole resident
        // prefix on every reset, which costs more than the page faults it saves. Tables are
        // small: keeping 64 KiB of each resident halves instantiation time.
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.linear_memory_keep_resident(config.keep_resident_bytes)
                .table_keep_resident(config.keep_resident_bytes.min(64 << 10))
                .pagemap_scan(Enabled::Yes);
        }
        let mut wasm = wasmtime::Config::new();
        // Guests built from Rust need no GC proposal, and the workspace builds wasmtime
        // without a collector: turn GC support off rather than fail at engine creation.
        wasm.wasm_component_model(true)
            .wasm_gc(false)
            .wasm_function_references(false)
            .gc_support(false)
            .epoch_interruption(true)
            .max_wasm_stack(config.max_wasm_stack)
            .memory_init_cow(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(engine_err)?;
        let mut linker = Linker::new(&engine);
        Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s).map_err(engine_err)?;

        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick)
            .map_err(|e| LoadError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Sandbox {
            inner: Arc::new(Inner {
                engine,
                linker,
                config,
                plugins: RwLock::default(),
                versions: AtomicU64::new(0),
                ok: AtomicU64::new(0),
                errors: Default::default(),
                ticker,
            }),
        })
    }

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
            allowed.insert(model.clone(), loaded.model.clone());
        }
        let compile_err = |e: wasmtime::Error| LoadError::Compile {
            plugin: name.to_owned(),
            file: plugin.spec.path.clone(),
            why: format!("{e:#}"),
        };
        let component = Component::new(&self.inner.engine, &plugin.bytes).map_err(compile_err)?;
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

    /// Creates a fresh instance of plugin `name` from the pool, ready for one request.
    pub fn instantiate(&self, name: &str) -> Result<PluginInstance, RequestError> {
        let result = self.instantiate_inner(name);
        if let Err(e) = &result {
            self.count(Err(e.kind()));
        }
        result
    }

    fn instantiate_inner(&self, name: &str) -> Result<PluginInstance, RequestError> {
        // Clone the Arc and drop the lock at once: a reload never waits for requests.
        let plugin = self
            .inner
            .plugins
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| RequestError::UnknownPlugin { plugin: name.to_string() })?;
        let state = HostState {
            plugin: plugin.clone(),
            memory_denied: false,
            violation: None,
            last_error_log: None,
            inference: Duration::ZERO,
        };
        // Before the deadline is set: the ticker must be awake while this guest lives.
        let alive = self.inner.ticker.alive();
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        let tick = self.inner.config.epoch_tick.as_nanos().max(1);
        // One extra tick: the deadline is never shorter than asked, however the ticks align.
        let ticks = plugin.limits.deadline.as_nanos().div_ceil(tick) + 1;
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        store.epoch_deadline_trap();
        let bindings = match plugin.pre.instantiate(&mut store) {
            Ok(b) => b,
            Err(e) => return Err(classify(&plugin, store.data(), e, true)),
        };
        Ok(PluginInstance { sandbox: self.clone(), store, bindings, _alive: alive })
    }

    /// Handles one request on a fresh instance of plugin `name`.
    pub fn handle(&self, name: &str, request: Request<'_>) -> Result<Outcome, RequestError> {
        self.handle_timed(name, request).0
    }

    /// [`Sandbox::handle`], and how long the plugin's model calls took together.
    pub fn handle_timed(
        &self,
        name: &str,
        request: Request<'_>,
    ) -> (Result<Outcome, RequestError>, Duration) {
        match self.instantiate(name) {
            Ok(instance) => instance.call_timed(request),
            Err(e) => (Err(e), Duration::ZERO),
        }
    }

    /// Counters of outcomes and errors by kind.
    pub fn stats(&self) -> SandboxStats {
        SandboxStats {
            ok: self.inner.ok.load(Ordering::Relaxed),
            errors: ErrorKind::ALL
                .iter()
                .map(|&k| (k, self.inner.errors[k.index()].load(Ordering::Relaxed)))
                .collect(),
        }
    }

    fn count(&self, result: Result<(), ErrorKind>) {
        match result {
            Ok(()) => self.inner.ok.fetch_add(1, Ordering::Relaxed),
            Err(kind) => self.inner.errors[kind.index()].fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// A fresh instance of a plugin, good for one request.
pub struct PluginInstance {
    sandbox: Sandbox,
    store: Store<HostState>,
    bindings: Plugin,
    _alive: Alive,
}

impl std::fmt::Debug for PluginInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.store.data().plugin;
        write!(f, "PluginInstance({} v{})", p.name, p.version)
    }
}

impl PluginInstance {
    /// Runs the plugin's `handle` on `request` and checks its outcome. Consumes the instance:
    /// its memory goes back to the pool.
    pub fn call(self, request: Request<'_>) -> Result<Outcome, RequestError> {
        self.call_timed(request).0
    }

    /// [`PluginInstance::call`], and how long the plugin's model calls took together.
    pub fn call_timed(mut self, request: Request<'_>) -> (Result<Outcome, RequestError>, Duration) {
        let result = self.call_inner(request);
        self.sandbox.count(result.as_ref().map(|_| ()).map_err(RequestError::kind));
        (result, self.store.data().inference)
    }

    fn call_inner(&mut self, request: Request<'_>) -> Result<Outcome, RequestError> {
        let plugin = self.store.data().plugin.clone();
        let wit_request = wit::Request {
            route: request.route.to_owned(),
            inputs: request
                .inputs
                .iter()
                .map(|(name, t)| wit::NamedTensor {
                    name: name.clone(),
                    tensor: inference::tensor_to_wit(t.clone()),
                })
                .collect(),
            parameters: request.parameters.to_vec(),
        };
        let returned = self.bindings.call_handle(&mut self.store, &wit_request);
        let state = self.store.data();
        let outcome = match returned {
            Err(e) => return Err(classify(&plugin, state, e, false)),
            Ok(r) => r,
        };
        let plugin_name = plugin.name.to_string();
        match (&state.violation, outcome) {
            (Some(Violation::ModelNotAllowed(model)), _) => {
                Err(RequestError::ModelNotAllowed { plugin: plugin_name, model: model.clone() })
            }
            (Some(Violation::InvalidTensor { model, why }), Err(_)) => Err(RequestError::InvalidTensor {
                plugin: plugin_name,
                model: model.clone(),
                why: why.clone(),
            }),
            (_, Err(e)) => Err(RequestError::Plugin {
                plugin: plugin_name,
                error: match e {
                    wit::PluginError::BadRequest(m) => GuestError::BadRequest(m),
                    wit::PluginError::Inference(m) => GuestError::Inference(m),
                    wit::PluginError::Internal(m) => GuestError::Internal(m),
                },
            }),
            (_, Ok(o)) => check_outcome(o, &plugin.limits)
                .map_err(|why| RequestError::BadOutput { plugin: plugin_name, why }),
        }
    }
}

/// Checks a guest's outcome against the contract and converts it.
pub(crate) fn check_outcome(outcome: wit::Outcome, limits: &PluginLimits) -> Result<Outcome, String> {
    let answer = match outcome {
        wit::Outcome::Escalate(reason) => {
            if reason.len() > limits.max_output_bytes {
                return Err(format!(
                    "escalation reason of {} bytes exceeds {}",
                    reason.len(),
                    limits.max_output_bytes
                ));
            }
            return Ok(Outcome::Escalate(reason));
        }
        wit::Outcome::Answer(a) => a,
    };
    let size = answer.outputs.iter().map(|o| o.tensor.data.len() + o.name.len()).sum::<usize>()
        + answer.label.as_ref().map_or(0, String::len);
    if size > limits.max_output_bytes {
        return Err(format!(
            "answer of {size} bytes exceeds the plugin's limit of {}",
            limits.max_output_bytes
        ));
    }
    if !(0.0..=1.0).contains(&answer.confidence) {
        return Err(format!("confidence {} is not in [0, 1]", answer.confidence));
    }
    let outputs = answer
        .outputs
        .into_iter()
        .map(|o| {
            inference::tensor_from_wit(o.tensor)
                .map(|t| (o.name.clone(), t))
                .map_err(|e| format!("output {}: {e}", o.name))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Outcome::Answer(Answer { outputs, confidence: answer.confidence, label: answer.label }))
}

/// Turns a wasmtime error from instantiating or calling into the request's typed error.
fn classify(
    plugin: &LoadedPlugin,
    state: &HostState,
    e: wasmtime::Error,
    instantiating: bool,
) -> RequestError {
    let name = plugin.name.to_string();
    if let Some(Violation::ModelNotAllowed(model)) = &state.violation {
        return RequestError::ModelNotAllowed { plugin: name, model: model.clone() };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => RequestError::Timeout { plugin: name, deadline: plugin.limits.deadline },
        Some(Trap::StackOverflow) => RequestError::StackOverflow { plugin: name },
        _ if state.memory_denied => {
            RequestError::MemoryExhausted { plugin: name, cap_bytes: plugin.limits.max_memory_bytes }
        }
        _ if instantiating => RequestError::Instantiate { plugin: name, why: format!("{e:#}") },
        _ => {
            let why = match &state.last_error_log {
                Some(log) => format!("{e:#} (last error logged: {log})"),
                None => format!("{e:#}"),
            };
            RequestError::Trap { plugin: name, why }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(dims: Vec<u32>, bytes: usize) -> wit::NamedTensor {
        wit::NamedTensor {
            name: "out".into(),
            tensor: wit::Tensor { dimensions: dims, ty: wit::TensorType::Fp32, data: vec![0; bytes] },
        }
    }

    fn answer(confidence: f32, outputs: Vec<wit::NamedTensor>) -> wit::Outcome {
        wit::Outcome::Answer(wit::Answer { outputs, confidence, label: Some("3".into()) })
    }

    #[test]
    fn outcomes_are_checked_against_the_contract() {
        let limits = PluginLimits { max_output_bytes: 100, ..PluginLimits::default() };
        let ok = check_outcome(answer(0.75, vec![tensor(vec![1, 2], 8)]), &limits).unwrap();
        let Outcome::Answer(a) = ok else { panic!("not an answer") };
        assert_eq!(
            (a.confidence, a.label.as_deref(), a.outputs[0].1.shape()),
            (0.75, Some("3"), &[1usize, 2][..])
        );

        for bad in [f32::NAN, -0.1, 1.5] {
            let err = check_outcome(answer(bad, vec![]), &limits).unwrap_err();
            assert!(err.contains("confidence"), "{err}");
        }
        let err = check_outcome(answer(0.5, vec![tensor(vec![1, 3], 8)]), &limits).unwrap_err();
        assert!(err.contains("output out") && err.contains("needs 12 bytes, got 8"), "{err}");
        let err = check_outcome(answer(0.5, vec![tensor(vec![32], 128)]), &limits).unwrap_err();
        assert!(err.contains("exceeds the plugin's limit of 100"), "{err}");
        let err = check_outcome(wit::Outcome::Escalate("x".repeat(101)), &limits).unwrap_err();
        assert!(err.contains("escalation reason"), "{err}");
        assert_eq!(
            check_outcome(wit::Outcome::Escalate("unsure".into()), &limits).unwrap(),
            Outcome::Escalate("unsure".into())
        );
    }

    #[test]
    fn log_messages_are_cut_on_a_char_boundary() {
        assert_eq!(logging::truncate("héllo".into(), 2), "h");
        assert_eq!(logging::truncate("héllo".into(), 3), "hé");
        assert_eq!(logging::truncate("hi".into(), 10), "hi");
    }

    #[test]
    fn dtypes_round_trip_through_wit() {
        for d in [DType::F32, DType::U8, DType::I8, DType::I32, DType::I64] {
            assert_eq!(dtype_from_wit(dtype_to_wit(d)), d);
        }
    }

    #[test]
    fn plugin_limits_beyond_the_engine_are_refused() {
        let sandbox =
            Sandbox::new(SandboxConfig { max_memory_bytes: 1 << 20, ..SandboxConfig::default() }).unwrap();
        let spec = crate::config::PluginSpec {
            path: "/p.wasm".into(),
            pinned: None,
            memory_limit_bytes: 2 << 20,
            deadline: Duration::from_millis(100),
            models: Default::default(),
            config: BTreeMap::new(),
        };
        let plugin = ResolvedPlugin::new(spec.clone(), b"not a component".to_vec());
        let err = sandbox.load_plugin("p", &plugin, &ModelStore::default()).unwrap_err().to_string();
        assert!(err.contains("plugin p: limit max_memory_bytes"), "{err}");
        let spec = crate::config::PluginSpec { memory_limit_bytes: 1 << 20, ..spec };
        let plugin = ResolvedPlugin::new(spec, b"not a component".to_vec());
        let err = sandbox.load_plugin("p", &plugin, &ModelStore::default()).unwrap_err().to_string();
        assert!(err.contains("plugin p from /p.wasm: not a valid plugin component"), "{err}");
        assert_eq!(sandbox.stats().ok, 0);
    }
}
