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
//! time runs out ([`Sandbox::handle_timed`]), whichever comes first. The epoch interrupts
//! guest code at that instant, and `compute` refuses to start a model run after it, so a
//! guest looping on model calls cannot hold the host past it by more than one model run.
//!
//! Hot reload: [`Sandbox::load_plugin`] swaps the plugin under its name atomically; requests
//! already running hold the old version to the end.

pub(crate) mod bindings;
mod budget;
mod config;
mod error;
pub(crate) mod inference;
mod logging;
mod ticker;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store, Trap,
};

use self::bindings::cascade::plugin::{config as wit_config, types as wit};
use self::bindings::{Plugin, PluginPre};
use self::budget::MAX_OUTPUTS;
pub use self::error::{ErrorKind, GuestError, LoadError, RequestError};
use self::ticker::{Alive, EpochTicker};
use crate::backend::PreparedModel;
use crate::config::{Digest, RateSettings, ResolvedPlugin};
use crate::models::ModelStore;
use crate::tensor::{DType, Tensor};
use crate::token_bucket::TokenBucket;

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
    /// Log lines each plugin may emit, across all its instances: a sustained rate and a burst.
    /// Lines over it are dropped and counted (`logging.rs`). Default 100 lines a second, in
    /// bursts of 200.
    pub guest_log_rate: RateSettings,
}

/// Stands for a plugin deadline too long to add to an instant: a century, far beyond any
/// request's own deadline, which then ends the call.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// Default of [`SandboxConfig::guest_log_rate`]: lines a second, per plugin.
const GUEST_LOG_LINES_PER_SECOND: f64 = 100.0;
/// Default of [`SandboxConfig::guest_log_rate`]: lines in one burst, per plugin.
const GUEST_LOG_BURST: u32 = 200;

impl Default for SandboxConfig {
    fn default() -> SandboxConfig {
        SandboxConfig {
            max_instances: 64,
            max_memory_bytes: 256 << 20,
            max_wasm_stack: 512 << 10,
            epoch_tick: Duration::from_millis(1),
            keep_resident_bytes: 4 << 20,
            guest_logs: true,
            guest_log_rate: RateSettings { per_second: GUEST_LOG_LINES_PER_SECOND, burst: GUEST_LOG_BURST },
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
    models: HashMap<String, Arc<dyn PreparedModel>>,
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
        // The generated bindings link the capabilities the host may copy whole (bounded by
        // the store's hostcall fuel); `compute` and `log` take views (see `budget.rs`).
        let mut linker = Linker::new(&engine);
        wit::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s).map_err(engine_err)?;
        wit_config::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s).map_err(engine_err)?;
        inference::add_to_linker(&mut linker).map_err(engine_err)?;
        logging::add_to_linker(&mut linker).map_err(engine_err)?;

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
                log_lines_dropped: AtomicU64::new(0),
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
        let now = Instant::now();
        let deadline = Deadline {
            // A deadline too far to represent is no deadline: the request's will end it.
            at: now.checked_add(plugin.limits.deadline).unwrap_or(now + FAR_FUTURE),
            budget: plugin.limits.deadline,
        };
        let state = HostState {
            plugin: plugin.clone(),
            memory_denied: false,
            violation: None,
            last_error_log: None,
            inference: Duration::ZERO,
            deadline,
            log_dropped: 0,
        };
        // Before the deadline is set: the ticker must be awake while this guest lives.
        let alive = self.inner.ticker.alive();
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        // Every value the guest passes the host and the host lifts whole (its outcome above
        // all) is charged against this before the host allocates it (`budget.rs`).
        store.set_hostcall_fuel(budget::crossing_budget(&plugin.limits));
        self.set_epoch_deadline(&mut store, plugin.limits.deadline);
        store.epoch_deadline_trap();
        let bindings = match plugin.pre.instantiate(&mut store) {
            Ok(b) => b,
            Err(e) => return Err(classify(&plugin, store.data(), e, true)),
        };
        Ok(PluginInstance { sandbox: self.clone(), store, bindings, _alive: alive })
    }

    /// Makes the epoch interrupt `store`'s guest once `left` has passed.
    fn set_epoch_deadline(&self, store: &mut Store<HostState>, left: Duration) {
        let tick = self.inner.config.epoch_tick.as_nanos().max(1);
        // One extra tick: the deadline is never shorter than asked, however the ticks align.
        let ticks = left.as_nanos().div_ceil(tick) + 1;
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
    }

    /// Handles one request on a fresh instance of plugin `name`, within the plugin's deadline.
    pub fn handle(&self, name: &str, request: Request<'_>) -> Result<Outcome, RequestError> {
        self.handle_timed(name, request, Duration::MAX).0
    }

    /// Handles one request on a fresh instance of plugin `name` that has `time_left` before
    /// its own deadline: the plugin call, its model calls included, ends at the plugin's
    /// deadline or when that time runs out, whichever is first; with no time left the plugin
    /// is not called. Also returns how long the plugin's model calls took together.
    pub fn handle_timed(
        &self,
        name: &str,
        request: Request<'_>,
        time_left: Duration,
    ) -> (Result<Outcome, RequestError>, Duration) {
        match self.instantiate(name) {
            Ok(instance) => instance.call_timed(request, time_left),
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
    /// Runs the plugin's `handle` on `request` within the plugin's deadline (counted from
    /// instantiation) and checks its outcome. Consumes the instance: its memory goes back to
    /// the pool.
    pub fn call(self, request: Request<'_>) -> Result<Outcome, RequestError> {
        self.call_timed(request, Duration::MAX).0
    }

    /// [`PluginInstance::call`] for a request with `time_left` (see [`Sandbox::handle_timed`]),
    /// and how long the plugin's model calls took together.
    pub fn call_timed(
        mut self,
        request: Request<'_>,
        time_left: Duration,
    ) -> (Result<Outcome, RequestError>, Duration) {
        let result = self.call_inner(request, time_left);
        self.sandbox.count(result.as_ref().map(|_| ()).map_err(RequestError::kind));
        let state = self.store.data();
        if state.log_dropped > 0 {
            self.sandbox.inner.log_lines_dropped.fetch_add(state.log_dropped, Ordering::Relaxed);
            logging::report_dropped(&state.plugin.name, state.log_dropped, state.plugin.log_rate);
        }
        (result, state.inference)
    }

    /// Narrows this call's deadline to the request's `time_left`, if that is shorter.
    fn narrow_deadline(&mut self, time_left: Duration) {
        let now = Instant::now();
        let state = self.store.data_mut();
        if let Some(at) = now.checked_add(time_left)
            && at < state.deadline.at
        {
            state.deadline = Deadline { at, budget: time_left };
        }
        let left = state.deadline.at.saturating_duration_since(now);
        self.sandbox.set_epoch_deadline(&mut self.store, left);
    }

    fn call_inner(&mut self, request: Request<'_>, time_left: Duration) -> Result<Outcome, RequestError> {
        let plugin = self.store.data().plugin.clone();
        self.narrow_deadline(time_left);
        let deadline = self.store.data().deadline;
        if Instant::now() >= deadline.at {
            // Out of time already: running the guest could only fail later.
            return Err(RequestError::Timeout { plugin: plugin.name.to_string(), deadline: deadline.budget });
        }
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

/// Checks a guest's outcome against the contract and converts it. Its size was bounded
/// before it was copied (`budget.rs`); the exact limits are checked here.
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
    if answer.outputs.len() > MAX_OUTPUTS {
        return Err(format!(
            "{} outputs, more than the {MAX_OUTPUTS} an answer may have",
            answer.outputs.len()
        ));
    }
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
    match &state.violation {
        Some(Violation::ModelNotAllowed(model)) => {
            return RequestError::ModelNotAllowed { plugin: name, model: model.clone() };
        }
        Some(Violation::DeadlinePassed) => {
            return RequestError::Timeout { plugin: name, deadline: state.deadline.budget };
        }
        Some(Violation::Transfer { why, budget_bytes }) => {
            return RequestError::Transfer { plugin: name, why: why.clone(), budget_bytes: *budget_bytes };
        }
        Some(Violation::InvalidTensor { .. }) | None => {}
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => RequestError::Timeout { plugin: name, deadline: state.deadline.budget },
        Some(Trap::StackOverflow) => RequestError::StackOverflow { plugin: name },
        _ if state.memory_denied => {
            RequestError::MemoryExhausted { plugin: name, cap_bytes: plugin.limits.max_memory_bytes }
        }
        _ if instantiating => RequestError::Instantiate { plugin: name, why: format!("{e:#}") },
        // Not a trap of guest code, nor a refusal the host recorded: wasmtime could not lift
        // a value the guest passed (its outcome, or a host call's arguments), because it
        // declared more than the hostcall fuel allows or broke the canonical ABI.
        None => RequestError::Transfer {
            plugin: name,
            why: format!("{e:#}"),
            budget_bytes: budget::crossing_budget(&plugin.limits),
        },
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
    fn answers_have_at_most_max_outputs_outputs() {
        let limits = PluginLimits::default();
        let outputs = |n| (0..n).map(|_| tensor(vec![1], 4)).collect();
        assert!(check_outcome(answer(0.5, outputs(MAX_OUTPUTS)), &limits).is_ok());
        let err = check_outcome(answer(0.5, outputs(MAX_OUTPUTS + 1)), &limits).unwrap_err();
        assert_eq!(err, "65 outputs, more than the 64 an answer may have");
    }

    #[test]
    fn the_crossing_budget_is_the_output_limit_plus_the_metadata_of_the_largest_answer() {
        let limits = PluginLimits { max_output_bytes: 1000, ..PluginLimits::default() };
        let per_output = size_of::<wit::NamedTensor>() + inference::MAX_DIMS * 4;
        assert_eq!(budget::crossing_budget(&limits), 1000 + MAX_OUTPUTS * per_output);
        let limits = PluginLimits { max_output_bytes: usize::MAX, ..PluginLimits::default() };
        assert_eq!(budget::crossing_budget(&limits), usize::MAX);
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
