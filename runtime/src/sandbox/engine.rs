//! The wasmtime engine a [`Sandbox`] runs on: its settings ([`SandboxConfig`]) and its
//! creation, with the pooling allocator sized so that a request that got in always gets an
//! instance, the linker with the host capabilities, and the epoch ticker. In a file of its
//! own because it is set up once per sandbox and never changes, unlike what it runs.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use parking_lot::RwLock;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::cascade::plugin::{config as wit_config, types as wit};
use super::ticker::EpochTicker;
use super::{HostState, Inner, LoadError, PluginLimits, Sandbox, inference, logging};
use crate::config::RateSettings;

/// Engine-wide settings, fixed when the sandbox is created.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Instances that can exist at once (the pool's size); requests beyond it fail with
    /// [`ErrorKind::Instantiate`](super::ErrorKind::Instantiate). Default 64.
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

/// Stack left to the host's calls on a guest's fiber, beyond the guest's own
/// ([`SandboxConfig::max_wasm_stack`]): as much as a Rust thread gets by default, for model
/// runs.
const HOST_STACK_BYTES: usize = 2 << 20;

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

/// The settings that shape compiled code, the same for plugins compiled here and those
/// precompiled for another machine ([`super::precompiled`]): wasmtime refuses a precompiled
/// file made with others.
pub(super) fn compile_settings(wasm: &mut wasmtime::Config, max_wasm_stack: usize) {
    // Guests built from Rust need neither the GC proposal nor threads, and the workspace
    // builds wasmtime without either (a smaller device binary): say so rather than rely on
    // the defaults.
    wasm.wasm_component_model(true)
        .wasm_gc(false)
        .gc_support(false)
        .epoch_interruption(true)
        .max_wasm_stack(max_wasm_stack);
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
        // Each instance runs its guest on a fiber stack of its own (`instance.rs`): the pool
        // holds one per instance. The host's calls, model runs included, run on that stack
        // beyond the guest's part.
        pool.total_stacks(config.max_instances);
        let mut wasm = wasmtime::Config::new();
        compile_settings(&mut wasm, config.max_wasm_stack);
        wasm.memory_init_cow(true)
            .async_stack_size(config.max_wasm_stack.saturating_add(HOST_STACK_BYTES))
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
}
