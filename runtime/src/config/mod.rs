//! Node configuration: one TOML file, validated once, then resolved into a hash-pinned form.
//!
//! Three stages, so that each consumer gets exactly what it can rely on:
//! 1. [`schema`]: what the user writes ([`NodeConfig`]), with `deny_unknown_fields` and a
//!    documented default for every field.
//! 2. [`load`] / [`parse`]: one validation pass over every field and cross-reference,
//!    reporting all problems at once, each naming the file, the field path (such as
//!    `routes.digits.thresholds.normal`) and what would be valid. The result,
//!    [`ValidatedConfig`], holds typed settings (addresses, durations, per-mode tables) and
//!    absolute paths, but has read no model or plugin file.
//! 3. [`ValidatedConfig::resolve`]: reads every model and plugin file, computes its sha256,
//!    refuses a file whose digest differs from a pinned one, and keeps the bytes it hashed,
//!    so what runs is exactly what was checked ([`ResolvedConfig`]).

mod build;
mod digest;
mod mode;
pub mod schema;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use digest::{Digest, DigestParseError};
pub use mode::{Hysteresis, Mode, SignalThresholds};
pub use schema::{
    AutoThresholdConfig, BatchingConfig, FromUpstreamConfig, ListenersConfig, ModelConfig, ModelInputConfig,
    NodeConfig, OutputMapConfig, PluginConfig, ReceiptsConfig, RouteConfig, ShadowConfig, TensorDeclConfig,
    UpstreamConfig,
};

use crate::backend::{BackendKind, InputShape};

/// Why a config could not be loaded or resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {cause}")]
    Read {
        /// Config file.
        path: PathBuf,
        /// Cause.
        cause: std::io::Error,
    },
    /// The file is not TOML, or names a section or field the schema does not have.
    #[error("{path}: {message}")]
    Parse {
        /// Config file.
        path: PathBuf,
        /// The parser's message (line, column, field, what was expected).
        message: String,
    },
    /// One or more fields hold values the node cannot use.
    #[error("{}", invalid_message(path, problems))]
    Invalid {
        /// Config file.
        path: PathBuf,
        /// Every problem found, in field order.
        problems: Vec<FieldProblem>,
    },
    /// A file the config names (model, plugin, certificate) could not be read.
    #[error("{config}: {field}: cannot read {file}: {cause}")]
    ReadFile {
        /// Config file.
        config: PathBuf,
        /// Field naming the file, such as `models.edge.path`.
        field: String,
        /// The file, resolved against the config file's directory.
        file: PathBuf,
        /// Cause.
        cause: std::io::Error,
    },
    /// A config built in code could not be written as TOML.
    #[error("cannot write the config as TOML: {message}")]
    Serialize {
        /// The TOML writer's explanation.
        message: String,
    },
    /// A config file could not be written.
    #[error("cannot write config file {path}: {cause}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Cause.
        cause: std::io::Error,
    },
    /// A model or plugin file is not the one its `sha256` pins.
    #[error("{0}")]
    DigestMismatch(Box<DigestMismatch>),
}

/// A file whose digest is not the pinned one (boxed in [`ConfigError`] to keep it small).
#[derive(Debug, thiserror::Error)]
#[error("{config}: {field}: {file} has sha256 {actual} but the config pins {expected}")]
pub struct DigestMismatch {
    /// Config file.
    pub config: PathBuf,
    /// The pinning field, such as `plugins.mnist.sha256`.
    pub field: String,
    /// The file that was read.
    pub file: PathBuf,
    /// Digest pinned in the config.
    pub expected: Digest,
    /// Digest of the file's bytes.
    pub actual: Digest,
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// Dotted path of the field, such as `routes.digits.thresholds.normal`.
    pub field: String,
    /// What is wrong with the value written.
    pub problem: String,
    /// What would be valid.
    pub expected: String,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; expected {}", self.field, self.problem, self.expected)
    }
}

fn invalid_message(path: &Path, problems: &[FieldProblem]) -> String {
    let mut out = format!("{}: {} invalid field(s)", path.display(), problems.len());
    for p in problems {
        out.push_str(&format!("\n  {}: {p}", path.display()));
    }
    out
}

/// Reads and validates a config file. Relative paths inside it are resolved against the
/// file's directory.
pub fn load(path: &Path) -> Result<ValidatedConfig, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|cause| ConfigError::Read { path: path.to_owned(), cause })?;
    parse(&text, path)
}

/// Validates config text as if read from `path` (used in messages and to resolve relative
/// paths; the file itself is not read).
pub fn parse(text: &str, path: &Path) -> Result<ValidatedConfig, ConfigError> {
    let raw: NodeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    validate::validate(raw, path)
}

/// A config whose every field has been checked; files not yet read. See the module doc.
#[derive(Debug, Clone)]
pub struct ValidatedConfig {
    /// The config file.
    pub file: PathBuf,
    /// Everything but the model and plugin files.
    pub settings: NodeSettings,
    /// Models by name, files not yet read.
    pub models: BTreeMap<String, ModelSpec>,
    /// Plugins by name, files not yet read.
    pub plugins: BTreeMap<String, PluginSpec>,
}

/// A config whose model and plugin files have been read and digest-checked.
#[derive(Debug, Clone)]
pub struct ResolvedConfig {
    /// The config file.
    pub file: PathBuf,
    /// Everything but the model and plugin files.
    pub settings: NodeSettings,
    /// Models by name, with their bytes.
    pub models: BTreeMap<String, ResolvedModel>,
    /// Plugins by name, with their bytes.
    pub plugins: BTreeMap<String, ResolvedPlugin>,
}

/// The node's typed settings.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// Reported as the tier that answered.
    pub name: String,
    /// HTTP listener for clients.
    pub http: SocketAddr,
    /// QUIC listener for downstream nodes, if this node accepts escalations.
    pub quic: Option<SocketAddr>,
    /// The QUIC listener's certificate, key and client CA; set exactly when `quic` is.
    pub quic_tls: Option<QuicTlsSettings>,
    /// What downstream nodes may make the QUIC listener hold.
    pub quic_limits: QuicLimits,
    /// What clients may make the HTTP (and admin) listener hold.
    pub http_limits: HttpLimits,
    /// On shutdown, time requests and escalations in flight get to finish.
    pub drain: Duration,
    /// The admin API, if enabled.
    pub admin: Option<AdminSettings>,
    /// Routes by name.
    pub routes: BTreeMap<String, RouteSettings>,
    /// Where hard requests escalate to; `None` on the last tier.
    pub upstream: Option<UpstreamSettings>,
    /// Requests running at once across all routes.
    pub max_in_flight: u32,
    /// How far behind a serving thread may fall before it sheds ([`crate::headroom`]);
    /// zero: never.
    pub max_intake_lag: Duration,
    /// Per-mode switches and automatic switching.
    pub modes: ModesSettings,
    /// Dynamic batching, if enabled.
    pub batching: Option<BatchingSettings>,
    /// Logs and metrics.
    pub telemetry: TelemetrySettings,
    /// The shadow record store, if any route shadows.
    pub shadow: Option<ShadowSettings>,
}

/// The largest request a node accepts whole: the HTTP body limit, and the tier frame limit
/// when a route's inputs do not fix its size.
pub const MAX_REQUEST_BYTES: usize = 2 << 20;

/// Room in a tier frame for what is not tensor data: names, shapes and the other fields.
pub const FRAME_OVERHEAD_BYTES: usize = 64 << 10;

/// What clients may make an HTTP listener hold (`[listeners] http_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time for a request's head to arrive.
    pub header_read: Duration,
    /// Time for a request's body to arrive, from the end of its head.
    pub body_read: Duration,
    /// Time a kept-alive connection may wait for its next request.
    pub idle: Duration,
    /// Connections open at once.
    pub max_connections: u32,
}

/// What downstream nodes may make a QUIC listener hold (`[listeners] quic_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicLimits {
    /// Names (or `prefix*`) that may connect; `None`: any the CA signed.
    pub allow: Option<Vec<String>>,
    /// Connections per downstream node.
    pub max_connections_per_peer: u32,
    /// Open escalations per connection.
    pub max_streams_per_connection: u32,
    /// Request bytes held at once, all connections together.
    pub max_buffered_bytes: usize,
    /// Largest request frame: from the routes' declared inputs where they fix the size,
    /// else [`MAX_REQUEST_BYTES`], plus [`FRAME_OVERHEAD_BYTES`].
    pub max_frame_bytes: usize,
}

/// The admin API's listener and the file holding its bearer token.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The token file (read when the node starts).
    pub token_file: PathBuf,
}

/// The files a QUIC listener presents and trusts.
#[derive(Debug, Clone)]
pub struct QuicTlsSettings {
    /// Certificate chain file.
    pub cert: PathBuf,
    /// Private key file.
    pub key: PathBuf,
    /// CA that signs the clients' certificates.
    pub ca: PathBuf,
}

/// A model to load.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// Absolute path of the ONNX file.
    pub path: PathBuf,
    /// Backend that runs it.
    pub backend: BackendKind,
    /// Run on tract if the chosen backend cannot.
    pub fallback_to_tract: bool,
    /// Digest the file must have, if pinned.
    pub pinned: Option<Digest>,
    /// Input shapes the config fixes (`[models.<name>.inputs.<input>]`), by input name.
    pub inputs: BTreeMap<String, InputShape>,
}

/// A model file, read and checked.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    /// Where it came from and how to run it.
    pub spec: ModelSpec,
    /// sha256 of `bytes`: the model's version in cache keys.
    pub digest: Digest,
    /// The file's bytes, exactly those hashed.
    pub bytes: Arc<[u8]>,
}

impl ResolvedModel {
    /// A model from bytes already in hand (a test, a benchmark), hashed here.
    pub fn new(spec: ModelSpec, bytes: Vec<u8>) -> ResolvedModel {
        ResolvedModel { spec, digest: Digest::of(&bytes), bytes: bytes.into() }
    }
}

/// A plugin to instantiate.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// Absolute path of the component.
    pub path: PathBuf,
    /// Digest the file must have, if pinned.
    pub pinned: Option<Digest>,
    /// Most linear memory per instance, in bytes.
    pub memory_limit_bytes: u64,
    /// Wall time per `handle` call.
    pub deadline: Duration,
    /// Models it may call.
    pub models: BTreeSet<String>,
    /// Static key/values handed to it.
    pub config: BTreeMap<String, String>,
}

/// A plugin file, read and checked.
#[derive(Debug, Clone)]
pub struct ResolvedPlugin {
    /// Where it came from and its limits.
    pub spec: PluginSpec,
    /// sha256 of `bytes`: the plugin's version in cache keys.
    pub digest: Digest,
    /// The file's bytes, exactly those hashed.
    pub bytes: Arc<[u8]>,
}

impl ResolvedPlugin {
    /// A plugin from bytes already in hand (a test, a benchmark), hashed here.
    pub fn new(spec: PluginSpec, bytes: Vec<u8>) -> ResolvedPlugin {
        ResolvedPlugin { spec, digest: Digest::of(&bytes), bytes: bytes.into() }
    }
}

/// A sustained rate with a burst: the two parameters of a token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSettings {
    /// Tokens added per second.
    pub per_second: f64,
    /// Most tokens held (requests allowed at once).
    pub burst: u32,
}

/// A route's settings.
#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// Plugin that handles it.
    pub plugin: String,
    /// Confidence threshold per mode, indexed by [`Mode::index`].
    pub thresholds: [f64; 3],
    /// Whole-request budget.
    pub deadline: Duration,
    /// How long answers are cached; zero disables caching.
    pub cache_ttl: Duration,
    /// Requests running at once.
    pub max_in_flight: u32,
    /// Requests waiting for a slot.
    pub queue_len: u32,
    /// Rate limit, if any.
    pub rate_limit: Option<RateSettings>,
    /// Declared input tensors (empty: none declared).
    pub inputs: Vec<TensorDecl>,
    /// Declared output tensors (empty: none declared).
    pub outputs: Vec<TensorDecl>,
    /// How the upstream's answers become this route's.
    pub from_upstream: FromUpstream,
    /// Fraction of local answers also sent upstream to check them.
    pub shadow: f64,
    /// Moving the `normal` threshold toward a target agreement, if on.
    pub auto_threshold: Option<AutoThreshold>,
}

/// `[routes.<name>.auto_threshold]`, checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoThreshold {
    /// Agreement with the upstream to hold.
    pub target_agreement: f64,
    /// Lowest threshold it may set.
    pub min: f64,
    /// Highest threshold it may set.
    pub max: f64,
    /// Shadow records needed before it moves.
    pub min_samples: usize,
    /// Latest records it estimates from.
    pub window: usize,
    /// Largest move at once.
    pub step: f64,
    /// How often it looks.
    pub interval: Duration,
}

/// A tensor a route declares: name, element type, dimensions (`None`: any size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorDecl {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: crate::DType,
    /// Dimensions, `None` where any size is accepted.
    pub shape: Vec<Option<usize>>,
}

impl TensorDecl {
    /// Whether `shape` fits the declared dimensions.
    pub fn accepts_shape(&self, shape: &[usize]) -> bool {
        shape.len() == self.shape.len()
            && self.shape.iter().zip(shape).all(|(d, &s)| d.is_none_or(|d| d == s))
    }

    /// The dimensions as KServe writes them (`-1` for any size).
    pub fn kserve_shape(&self) -> Vec<i64> {
        self.shape.iter().map(|d| d.map_or(-1, |d| i64::try_from(d).unwrap_or(i64::MAX))).collect()
    }
}

/// `[routes.<name>.from_upstream]`, checked: every name it uses is a declared output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FromUpstream {
    /// Each declared output from an upstream output (empty: the upstream's by their names).
    pub outputs: Vec<OutputMap>,
    /// The declared output whose largest value is the confidence (`None`: the upstream's).
    pub confidence: Option<String>,
    /// The declared output whose argmax is the label (`None`: the upstream's).
    pub label: Option<String>,
}

/// One declared output, made from one of the upstream's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputMap {
    /// The route's output.
    pub name: String,
    /// The upstream's output.
    pub from: String,
    /// What is done to its values.
    pub transform: Transform,
}

/// What [`OutputMap`] does to the upstream's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// Nothing: the values as they come.
    None,
    /// Softmax over the last dimension (FP32).
    Softmax,
}

impl Transform {
    /// Its name in config.
    pub fn name(self) -> &'static str {
        match self {
            Transform::None => "none",
            Transform::Softmax => "softmax",
        }
    }
}

impl RouteSettings {
    /// The confidence at or above which this route answers locally in `mode`.
    pub fn threshold(&self, mode: Mode) -> f64 {
        self.thresholds[mode.index()]
    }
}

/// The upstream: another Cascade node, or a KServe v2 server.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// How the upstream is reached, with what only that kind needs.
    pub kind: UpstreamKind,
    /// Reported as the tier that answered an escalated request: the name on a QUIC
    /// upstream's certificate, or a KServe server's `host:port`.
    pub server_name: String,
    /// Connection attempt limit.
    pub connect_timeout: Duration,
    /// One escalation's limit.
    pub request_timeout: Duration,
    /// Retries as a fraction of escalations.
    pub retry_budget: f64,
    /// Consecutive failures that open the breaker.
    pub breaker_failure_threshold: u32,
    /// Time open before probing.
    pub breaker_open: Duration,
    /// Successful probes that close it.
    pub breaker_half_open_probes: u32,
}

/// How an upstream is reached (`[upstream] kind`).
#[derive(Debug, Clone)]
pub enum UpstreamKind {
    /// `kind = "quic"`: a Cascade node over QUIC with mutual TLS.
    Quic(QuicUpstreamSettings),
    /// `kind = "kserve"`: a KServe v2 / Open Inference Protocol REST server.
    Kserve(KserveUpstreamSettings),
}

/// A Cascade node over QUIC.
#[derive(Debug, Clone, Default)]
pub struct QuicUpstreamSettings {
    /// QUIC addresses, tried in order.
    pub addresses: Vec<SocketAddr>,
    /// CA certificate file.
    pub ca: PathBuf,
    /// Client certificate file.
    pub cert: PathBuf,
    /// Client key file.
    pub key: PathBuf,
}

/// A KServe v2 REST server.
#[derive(Debug, Clone)]
pub struct KserveUpstreamSettings {
    /// Base URL (`http://host:port`, perhaps with a path prefix), without a trailing `/`.
    pub url: String,
    /// The model's name on that server.
    pub model: String,
}

impl UpstreamSettings {
    /// The QUIC settings, if the upstream is a Cascade node.
    pub fn quic(&self) -> Option<&QuicUpstreamSettings> {
        match &self.kind {
            UpstreamKind::Quic(q) => Some(q),
            UpstreamKind::Kserve(_) => None,
        }
    }

    /// The KServe settings, if the upstream is a KServe v2 server.
    pub fn kserve(&self) -> Option<&KserveUpstreamSettings> {
        match &self.kind {
            UpstreamKind::Kserve(k) => Some(k),
            UpstreamKind::Quic(_) => None,
        }
    }
}

/// What a mode changes.
#[derive(Debug, Clone)]
pub struct ModeSwitches {
    /// Escalation token bucket; `per_second == 0` and `burst == 0` escalate nothing.
    pub escalation_budget: RateSettings,
    /// Routes refused in this mode.
    pub disabled_routes: BTreeSet<String>,
    /// Batching delay in this mode, if batching is on.
    pub batching_delay: Option<Duration>,
}

/// Modes: switches per mode and automatic switching.
#[derive(Debug, Clone)]
pub struct ModesSettings {
    /// Switches indexed by [`Mode::index`].
    pub switches: [ModeSwitches; 3],
    /// Change mode on the node's own signals.
    pub automatic: bool,
    /// Least time in a mode before stepping down.
    pub min_dwell: Duration,
    /// When to enter and leave `surge`.
    pub surge: SignalThresholds,
    /// When to enter and leave `emergency`.
    pub emergency: SignalThresholds,
}

impl ModesSettings {
    /// The switches of `mode`.
    pub fn switches(&self, mode: Mode) -> &ModeSwitches {
        &self.switches[mode.index()]
    }
}

/// Dynamic batching.
#[derive(Debug, Clone, Copy)]
pub struct BatchingSettings {
    /// Most requests per model call.
    pub max_batch: u32,
    /// Longest wait to fill a batch (in `normal`; modes may override).
    pub max_delay: Duration,
    /// Batch each model only up to the size measured cheapest per request at load.
    pub calibrate: bool,
}

/// Logs and metrics.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// Serve `/metrics`.
    pub metrics: bool,
    /// `tracing` filter.
    pub log: String,
    /// The receipt log, if on.
    pub receipts: Option<ReceiptSettings>,
}

/// `[telemetry.receipts]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiptSettings {
    /// The log file (absolute).
    pub path: PathBuf,
    /// Fraction of answers logged.
    pub sample: f64,
    /// Size at which it rotates.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: u32,
}

/// `[shadow]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowSettings {
    /// The SQLite file (absolute).
    pub store: PathBuf,
    /// Records kept per route.
    pub max_records: u32,
}

impl ValidatedConfig {
    /// Reads every model and plugin file, checks pinned digests and that a QUIC upstream's
    /// certificate files exist.
    pub fn resolve(&self) -> Result<ResolvedConfig, ConfigError> {
        let mut models = BTreeMap::new();
        for (name, spec) in &self.models {
            let (digest, bytes) = self.read_pinned(&format!("models.{name}"), &spec.path, spec.pinned)?;
            models.insert(name.clone(), ResolvedModel { spec: spec.clone(), digest, bytes });
        }
        let mut plugins = BTreeMap::new();
        for (name, spec) in &self.plugins {
            let (digest, bytes) = self.read_pinned(&format!("plugins.{name}"), &spec.path, spec.pinned)?;
            plugins.insert(name.clone(), ResolvedPlugin { spec: spec.clone(), digest, bytes });
        }
        if let Some(up) = self.settings.upstream.as_ref().and_then(UpstreamSettings::quic) {
            for (field, file) in [("ca", &up.ca), ("cert", &up.cert), ("key", &up.key)] {
                // Only existence here: the transport parses them, and keys stay out of memory
                // until then.
                std::fs::metadata(file).map_err(|cause| ConfigError::ReadFile {
                    config: self.file.clone(),
                    field: format!("upstream.{field}"),
                    file: file.clone(),
                    cause,
                })?;
            }
        }
        Ok(ResolvedConfig { file: self.file.clone(), settings: self.settings.clone(), models, plugins })
    }

    fn read_pinned(
        &self,
        section: &str,
        file: &Path,
        pinned: Option<Digest>,
    ) -> Result<(Digest, Arc<[u8]>), ConfigError> {
        let bytes = std::fs::read(file).map_err(|cause| ConfigError::ReadFile {
            config: self.file.clone(),
            field: format!("{section}.path"),
            file: file.to_owned(),
            cause,
        })?;
        let actual = Digest::of(&bytes);
        if let Some(expected) = pinned
            && expected != actual
        {
            return Err(ConfigError::DigestMismatch(Box::new(DigestMismatch {
                config: self.file.clone(),
                field: format!("{section}.sha256"),
                file: file.to_owned(),
                expected,
                actual,
            })));
        }
        Ok((actual, bytes.into()))
    }
}
