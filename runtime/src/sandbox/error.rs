//! What can go wrong loading plugins and handling requests.

use std::path::PathBuf;
use std::time::Duration;

/// Why a plugin could not be loaded. Nothing is swapped in when loading fails.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The wasm engine could not be set up with the given limits.
    #[error("sandbox engine: {0}")]
    Engine(String),
    /// A plugin's allowlist names a model the node does not have.
    #[error("plugin {plugin}: allowed model {model} is not loaded on this node")]
    UnknownModel {
        /// Plugin name.
        plugin: String,
        /// Model name.
        model: String,
    },
    /// The file is not a valid component, or not one of this world.
    #[error("plugin {plugin} from {file}: not a valid plugin component: {why}")]
    Compile {
        /// Plugin name.
        plugin: String,
        /// The component file.
        file: PathBuf,
        /// wasmtime's explanation.
        why: String,
    },
    /// The plugin's limits are out of range for this sandbox.
    #[error("plugin {plugin}: limit {field}: {why}")]
    Limits {
        /// Plugin name.
        plugin: String,
        /// The limit's field name.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// The kind of a request failure, for counting and for mapping to client responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// No plugin by that name is loaded.
    UnknownPlugin,
    /// No instance slot was free (the pool is exhausted) or instantiation failed.
    Instantiate,
    /// The request ran past its deadline.
    Timeout,
    /// The guest asked for more memory than its cap and then failed.
    MemoryExhausted,
    /// The guest exhausted its wasm stack.
    StackOverflow,
    /// The guest trapped (a panic, an `unreachable`, an out-of-bounds access...).
    Trap,
    /// The guest called a model outside its allowlist.
    ModelNotAllowed,
    /// The guest sent the inference capability malformed tensors, then failed.
    InvalidTensor,
    /// The guest returned an outcome that breaks the contract (bad tensor, size, confidence).
    BadOutput,
    /// The guest itself reported an error for this request.
    Plugin,
    /// The guest passed the host more bytes in one call than that call may carry (its
    /// outcome, or one host call's arguments), or a value that breaks the canonical ABI.
    Transfer,
}

impl ErrorKind {
    /// Every kind, in stats order.
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::UnknownPlugin,
        ErrorKind::Instantiate,
        ErrorKind::Timeout,
        ErrorKind::MemoryExhausted,
        ErrorKind::StackOverflow,
        ErrorKind::Trap,
        ErrorKind::ModelNotAllowed,
        ErrorKind::InvalidTensor,
        ErrorKind::BadOutput,
        ErrorKind::Plugin,
        ErrorKind::Transfer,
    ];

    /// Lowercase name for metrics labels and logs.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::UnknownPlugin => "unknown_plugin",
            ErrorKind::Instantiate => "instantiate",
            ErrorKind::Timeout => "timeout",
            ErrorKind::MemoryExhausted => "memory_exhausted",
            ErrorKind::StackOverflow => "stack_overflow",
            ErrorKind::Trap => "trap",
            ErrorKind::ModelNotAllowed => "model_not_allowed",
            ErrorKind::InvalidTensor => "invalid_tensor",
            ErrorKind::BadOutput => "bad_output",
            ErrorKind::Plugin => "plugin",
            ErrorKind::Transfer => "transfer",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// What the guest reported when it declined a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestError {
    /// The request is malformed for this plugin.
    BadRequest(String),
    /// A call to the inference capability failed.
    Inference(String),
    /// Anything else.
    Internal(String),
}

impl std::fmt::Display for GuestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuestError::BadRequest(m) => write!(f, "bad request: {m}"),
            GuestError::Inference(m) => write!(f, "inference: {m}"),
            GuestError::Internal(m) => write!(f, "internal: {m}"),
        }
    }
}

/// Why one request failed. Only that request fails; the node keeps serving.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    /// No plugin by that name is loaded.
    #[error("plugin {plugin}: not loaded")]
    UnknownPlugin {
        /// Plugin name.
        plugin: String,
    },
    /// No instance could be created (pool exhausted or instantiation failed).
    #[error("plugin {plugin}: cannot instantiate: {why}")]
    Instantiate {
        /// Plugin name.
        plugin: String,
        /// wasmtime's explanation.
        why: String,
    },
    /// The request ran past its deadline and was interrupted, or asked for a model run
    /// after it.
    #[error("plugin {plugin}: request exceeded its {deadline:?} deadline")]
    Timeout {
        /// Plugin name.
        plugin: String,
        /// The deadline it had: the plugin's own, or the time the request had left when the
        /// plugin was called, whichever was shorter.
        deadline: Duration,
    },
    /// The guest asked for more linear memory than its cap and failed.
    #[error("plugin {plugin}: memory exhausted (cap {cap_bytes} bytes)")]
    MemoryExhausted {
        /// Plugin name.
        plugin: String,
        /// The plugin's memory cap.
        cap_bytes: usize,
    },
    /// The guest overflowed its wasm stack.
    #[error("plugin {plugin}: stack overflow")]
    StackOverflow {
        /// Plugin name.
        plugin: String,
    },
    /// The guest trapped; `why` carries the trap and the panic message if the guest logged one.
    #[error("plugin {plugin}: trapped: {why}")]
    Trap {
        /// Plugin name.
        plugin: String,
        /// The trap, and the guest's panic message if any.
        why: String,
    },
    /// The guest called a model outside its allowlist.
    #[error("plugin {plugin}: model {model} is not on its allowlist")]
    ModelNotAllowed {
        /// Plugin name.
        plugin: String,
        /// The model it asked for.
        model: String,
    },
    /// The guest gave the inference capability malformed tensors, and then failed.
    #[error("plugin {plugin}: invalid tensor for model {model}: {why}")]
    InvalidTensor {
        /// Plugin name.
        plugin: String,
        /// The model called.
        model: String,
        /// What the host found wrong.
        why: String,
    },
    /// The guest's outcome breaks the contract.
    #[error("plugin {plugin}: bad output: {why}")]
    BadOutput {
        /// Plugin name.
        plugin: String,
        /// What is wrong with it.
        why: String,
    },
    /// The guest declined the request with its own error.
    #[error("plugin {plugin}: {error}")]
    Plugin {
        /// Plugin name.
        plugin: String,
        /// The guest's error.
        error: GuestError,
    },
    /// The host refused, before copying it, what the guest passed it in one call: more bytes
    /// than the call's budget, or a value that breaks the canonical ABI.
    #[error(
        "plugin {plugin}: refused what it passed to the host: {why} (one call may pass at most \
         {budget_bytes} bytes; send less)"
    )]
    Transfer {
        /// Plugin name.
        plugin: String,
        /// What was refused.
        why: String,
        /// The byte budget of that call.
        budget_bytes: usize,
    },
}

impl RequestError {
    /// The kind, for counting and for choosing a client response.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RequestError::UnknownPlugin { .. } => ErrorKind::UnknownPlugin,
            RequestError::Instantiate { .. } => ErrorKind::Instantiate,
            RequestError::Timeout { .. } => ErrorKind::Timeout,
            RequestError::MemoryExhausted { .. } => ErrorKind::MemoryExhausted,
            RequestError::StackOverflow { .. } => ErrorKind::StackOverflow,
            RequestError::Trap { .. } => ErrorKind::Trap,
            RequestError::ModelNotAllowed { .. } => ErrorKind::ModelNotAllowed,
            RequestError::InvalidTensor { .. } => ErrorKind::InvalidTensor,
            RequestError::BadOutput { .. } => ErrorKind::BadOutput,
            RequestError::Plugin { .. } => ErrorKind::Plugin,
            RequestError::Transfer { .. } => ErrorKind::Transfer,
        }
    }
}
