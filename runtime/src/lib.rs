//! Everything a Cascade node does, with no HTTP or CLI in it.
//!
//! A [`Node`] receives inference requests and runs each through the same stages, in
//! order: validate the inputs against the route, [`Admission`], the answer [`Cache`] (with
//! coalescing of identical requests), the route's guest plugin in a fresh [`Sandbox`]
//! instance (its model calls go to the [`ModelStore`]'s prepared models), the
//! [`EscalationPolicy`], and escalation to an upstream tier ([`upstream`]) when the plugin is
//! not confident enough. `edge-node` puts a node behind a CLI and a KServe v2 HTTP front door.
//!
//! ```no_run
//! use cascade_runtime::{CurrentNode, Node, Tensor, config};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // One TOML file: validated once, then resolved (files read and digest-checked).
//! let resolved = config::load("examples/configs/edge.toml".as_ref())?.resolve()?;
//! let node = Node::new(resolved)?;
//! let image = Tensor::from_u8(vec![28, 28], vec![0; 784])?;
//! let reply = node.infer("digits", vec![("image".into(), image)], vec![]).await?;
//! println!("{} answered with confidence {}", reply.tier, reply.confidence);
//! // Downstream nodes reach it over QUIC, and a reload swaps it whole.
//! let current = CurrentNode::new(node);
//! let _listener = current.listen_quic()?;
//! # Ok(()) }
//! ```
//!
//! Core concepts, the modules that define them:
//! - [`config`]: the node's TOML, validated once into a [`ValidatedConfig`], then resolved
//!   (files read, digests checked) into a [`ResolvedConfig`]; the schema types also write
//!   TOML back ([`config::NodeConfig::to_toml`]).
//! - [`Node`] (`node/`): the request path as named stages over one per-request context; each
//!   stage is a file in `node/`, in the order a request meets them.
//! - [`Tensor`]: element type, shape, bytes; validated when built, shared with the guest SDK.
//! - [`Backend`] → [`PreparedModel`]: prepare a model once (refusing what cannot run), run
//!   batches many times ([`TractBackend`] on the CPU, [`WgpuBackend`] on a GPU). The
//!   [`ModelStore`] chooses the backend per model, falls back to tract, and batches
//!   ([`BatchedModel`]) on the central tier.
//! - [`Sandbox`]: runs guest plugins (WebAssembly components built with the guest SDK and
//!   [`guest_build`]) in fresh, isolated, limited wasmtime instances, one per request.
//! - Sans-IO decisions that take `now`: [`Admission`] (bulkheads, rate limits),
//!   [`EscalationPolicy`] (threshold, breaker, deadline and budget gates),
//!   [`ModeController`] (normal/surge/emergency), the upstream's breakers and retry budget.
//! - [`protocol`] → [`transport`] → [`upstream`]: escalation to another tier. Sans-IO
//!   frames; QUIC with mutual TLS, one stream per escalation; breakers, retry budget and
//!   power-of-two-choices over several upstreams, or a KServe v2 server.
//! - [`kserve`]: the KServe v2 request and response bodies, for the HTTP front door.
//! - [`Telemetry`]: Prometheus metrics of every stage and outcome.
//! - [`reference`]: the committed reference models, data splits and deployment.

mod admission;
mod backend;
mod batcher;
mod bounded;
mod cache;
pub mod calibrate;
pub mod config;
pub mod contract;
mod convert;
mod dataset;
mod fair_share;
/// Entry points for the fuzz targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod guest_build;
mod headroom;
pub mod kserve;
mod models;
mod modes;
mod node;
mod policy;
pub mod protocol;
pub mod receipts;
pub mod reference;
mod sandbox;
pub mod shadow;
mod telemetry;
mod tensor;
mod token_bucket;
pub mod transport;
pub mod upstream;

pub use admission::{Admission, Permit, Rejection, RouteLimits};
pub use backend::cpu::{CpuTuning, KernelKnob, configure_cpu_kernels, cpu_kernel_table, machine_report};
pub use backend::tract::TractBackend;
#[cfg(feature = "gpu")]
pub use backend::wgpu::{AdapterSummary, WgpuBackend};
pub use backend::{
    Backend, BackendError, BackendKind, InputShape, ModelInfo, Precision, PrepareOptions, PreparedModel,
    TensorSpec, check_inputs,
};
pub use batcher::{BatchObserver, BatchSettings, BatchStats, BatchedModel, BatchingBackend};
pub use cache::{Cache, CacheKey, CacheStatus, Lookup, LruStore};
pub use config::{ConfigError, ResolvedConfig, ValidatedConfig};
pub use config::{Hysteresis, Mode, SignalThresholds};
pub use dataset::{DatasetError, Digits, Split};
pub use fair_share::{FairShare, SharePermit, ShareRejection};
pub use models::{Batching, LoadedModel, ModelError, ModelStore};
pub use modes::{ModeChange, ModeController, ModeSignals, SwitchCause};
pub use node::{CurrentNode, Degraded, Node, NodeError, Origin, Reply, RequestReceipt, Route, ServeError};
pub use policy::{Decision, DegradedReason, EscalationPolicy, PluginOutcome, PolicyInput, UpstreamView};
pub use reference::ReferenceModel;
pub use sandbox::precompiled;
pub use sandbox::{
    Answer, ErrorKind, GuestError, LoadError, Outcome, PluginInstance, PluginLimits, Request, RequestError,
    Sandbox, SandboxConfig, SandboxStats,
};
pub use telemetry::{AnswerTier, RequestOutcome, Stage, Telemetry, TelemetryError, UNKNOWN_ROUTE};
pub use tensor::{DType, Tensor, TensorError, element_count};
pub use token_bucket::TokenBucket;
pub use upstream::{BreakerState, UpstreamHealth};
