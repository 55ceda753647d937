//! Everything a Cascade node does, with no HTTP or CLI in it.
//!
//! A node receives inference requests, runs them through a guest plugin in a sandbox, lets
//! the plugin call a model through a [`Backend`], and either answers or escalates. This
//! crate holds those parts; `edge-node` puts them behind a CLI and an HTTP front door.
//!
//! ```no_run
//! use cascade_runtime::{Backend, Digits, ReferenceModel, Split, TractBackend, reference};
//!
//! let dir = reference::default_models_dir();
//! let bytes = std::fs::read(ReferenceModel::EdgeInt8.path(&dir))?;
//! let model = TractBackend::new().prepare("edge", &bytes)?;
//! let test = Digits::load_split(&dir, Split::Test)?;
//! println!("accuracy {:.4}", reference::accuracy(&*model, &test, 64)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Core concepts:
//! - [`Tensor`]: element type, shape, bytes; validated when built.
//! - [`Backend`] → [`PreparedModel`]: prepare a model once (refusing what cannot run),
//!   run batches many times.
//! - [`Digits`]: the committed reference data splits.
//! - [`BatchingBackend`] / [`BatchedModel`]: dynamic batching of concurrent callers' runs
//!   (the central tier's `[batching]`).
//! - [`ModelRegistry`]: named, versioned, sha256-pinned models, replaceable at runtime.
//! - [`config`]: the node's TOML, validated once into a [`ValidatedConfig`], then resolved
//!   (files read and digest-checked) into a [`ResolvedConfig`].
//! - The request path's stages, sans-IO where time matters (they take `now`):
//!   [`Admission`] (bulkheads, rate limits) → [`Cache`] (content-addressed, coalescing) →
//!   [`Sandbox`] → [`EscalationPolicy`] (threshold, breaker, deadline, budget gates), with
//!   [`ModeController`] switching normal/surge/emergency and [`Telemetry`] counting it all.
//! - [`Sandbox`]: runs guest plugins (WebAssembly components built with the guest SDK and
//!   [`guest_build`]) in fresh, isolated, limited wasmtime instances, one per request.
//! - [`protocol`] → [`transport`] → [`upstream`]: escalation to another tier. Sans-IO
//!   frames; QUIC with mutual TLS, one stream per escalation; breakers, retry budget and
//!   power-of-two-choices over several upstreams.

mod admission;
mod backend;
mod batcher;
mod cache;
pub mod config;
mod dataset;
mod fair_share;
pub mod guest_build;
pub mod kserve_json;
mod modes;
mod policy;
pub mod protocol;
pub mod reference;
mod registry;
mod sandbox;
mod telemetry;
mod tensor;
mod token_bucket;
pub mod transport;
pub mod upstream;

pub use admission::{Admission, Permit, Rejection, RouteLimits};
pub use backend::cpu::{CpuTuning, KernelKnob, configure_cpu_kernels, cpu_kernel_table};
pub use backend::tract::TractBackend;
pub use backend::wgpu::{AdapterSummary, WgpuBackend};
pub use backend::{
    Backend, BackendError, BackendKind, ModelInfo, Precision, PreparedModel, TensorSpec, check_inputs,
};
pub use batcher::{BatchObserver, BatchSettings, BatchStats, BatchedModel, BatchingBackend};
pub use cache::{Cache, CacheKey, CacheStatus, Lookup, LruStore};
pub use config::{ConfigError, ResolvedConfig, ValidatedConfig};
pub use dataset::{DatasetError, Digits, Split};
pub use fair_share::{FairShare, SharePermit, ShareRejection};
pub use modes::{Hysteresis, Mode, ModeChange, ModeController, ModeSignals, SignalThresholds, SwitchCause};
pub use policy::{
    BreakerState, Decision, DegradedReason, EscalationPolicy, PluginOutcome, PolicyInput, UpstreamHealth,
    UpstreamView,
};
pub use reference::ReferenceModel;
pub use registry::{LoadedModel, ModelConfig, ModelRegistry, RegistryError, file_sha256};
pub use sandbox::{
    Answer, ErrorKind, GuestError, LoadError, Outcome, PluginInstance, PluginLimits, PluginSpec, Request,
    RequestError, Sandbox, SandboxConfig, SandboxStats,
};
pub use telemetry::{AnswerTier, RequestOutcome, Stage, Telemetry, TelemetryError, UNKNOWN_ROUTE};
pub use tensor::{DType, Tensor, TensorError, element_count};
pub use token_bucket::TokenBucket;
