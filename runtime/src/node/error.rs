//! Why a node could not be built, and why a request got no answer.

use std::time::Duration;

use crate::admission::Rejection;
use crate::models::ModelError;
use crate::policy::DegradedReason;
use crate::protocol::{self, ErrorFrame};
use crate::sandbox::LoadError;
use crate::shadow::StoreError;
use crate::telemetry::TelemetryError;
use crate::transport::TransportError;
use crate::upstream::SetupError;

/// Why a node could not be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A model could not be prepared.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The sandbox could not be created, or a plugin could not be loaded into it (the error
    /// names the plugin). Transparent, like the others: a prefix with the error as its
    /// source too would print every refusal twice.
    #[error(transparent)]
    Sandbox(#[from] LoadError),
    /// The telemetry registry could not be built.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// The QUIC listener could not be set up.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The upstream client could not be set up.
    #[error(transparent)]
    Upstream(#[from] SetupError),
    /// A route's declared outputs cannot come from what the KServe upstream's model answers.
    #[error("kserve upstream {server}: {why}")]
    UpstreamContract {
        /// Which server (`host:port`).
        server: String,
        /// Which output, and what to change.
        why: String,
    },
    /// The shadow store could not be opened.
    #[error(transparent)]
    Shadow(#[from] StoreError),
    /// The receipt log could not be opened.
    #[error("telemetry.receipts.path: cannot open {}: {cause}", file.display())]
    Receipts {
        /// The log file.
        file: std::path::PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
}

/// Why a request got no answer. Each maps to one HTTP status ([`ServeError::status`]) and
/// one tier-protocol error frame.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServeError {
    /// No route by that name.
    #[error("unknown route `{0}`")]
    UnknownRoute(String),
    /// Admission refused the request.
    #[error("route `{route}`: {rejection}")]
    Rejected {
        /// Route.
        route: String,
        /// Why.
        rejection: Rejection,
    },
    /// The request itself is malformed (reported by the front door, the route's declared
    /// inputs or the plugin).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The plugin failed on this request.
    #[error("plugin `{plugin}` failed ({kind}): {message}")]
    Plugin {
        /// Plugin name.
        plugin: String,
        /// The sandbox's error kind (`trap`, `timeout`, ...).
        kind: &'static str,
        /// Detail.
        message: String,
    },
    /// The request's deadline passed before it could be answered.
    #[error("route `{route}`: deadline of {deadline:?} exceeded")]
    DeadlineExceeded {
        /// Route.
        route: String,
        /// The route's deadline.
        deadline: Duration,
    },
    /// The plugin produced no local answer and the request could not be escalated.
    #[error("route `{route}`: no local answer and no escalation ({reason}){}", detail_suffix(detail))]
    NoAnswer {
        /// Route.
        route: String,
        /// Why it did not escalate, or that escalating failed.
        reason: DegradedReason,
        /// The upstream's failure, when there was one.
        detail: Option<String>,
    },
    /// A failure of this node (a sandbox thread lost).
    #[error("internal: {0}")]
    Internal(String),
}

/// Longest error message sent to a client, in characters.
const MAX_CLIENT_MESSAGE_CHARS: usize = 500;

fn detail_suffix(detail: &Option<String>) -> String {
    detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default()
}

impl ServeError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            ServeError::UnknownRoute(_) => 404,
            ServeError::Rejected { rejection, .. } => rejection.status(),
            ServeError::BadRequest(_) => 400,
            ServeError::Plugin { .. } | ServeError::Internal(_) => 500,
            ServeError::DeadlineExceeded { .. } => 504,
            ServeError::NoAnswer { .. } => 503,
        }
    }

    /// `Retry-After` seconds, when retrying later can help.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ServeError::Rejected { rejection, .. } => rejection.retry_after_secs(),
            ServeError::NoAnswer { .. } => Some(1),
            _ => None,
        }
    }

    /// The message a client (or a downstream node) gets: this error's first line, without
    /// what a plugin's trap carries after it (a wasm backtrace) and cut to a length a client
    /// can show. The node logs the whole error.
    pub fn client_message(&self) -> String {
        let text = self.to_string();
        let first = text.lines().next().unwrap_or_default();
        match first.char_indices().nth(MAX_CLIENT_MESSAGE_CHARS) {
            Some((cut, _)) => format!("{}…", &first[..cut]),
            None => first.to_owned(),
        }
    }

    /// The error frame that answers a downstream node's escalation.
    pub fn to_frame(&self, id: u64) -> ErrorFrame {
        let (kind, retryable) = match self {
            ServeError::UnknownRoute(_) => (protocol::ErrorKind::UnknownRoute, false),
            ServeError::Rejected { .. } => (protocol::ErrorKind::Overloaded, true),
            ServeError::BadRequest(_) => (protocol::ErrorKind::BadRequest, false),
            ServeError::Plugin { .. } | ServeError::Internal(_) => (protocol::ErrorKind::Internal, false),
            ServeError::DeadlineExceeded { .. } => (protocol::ErrorKind::DeadlineExceeded, false),
            ServeError::NoAnswer { .. } => (protocol::ErrorKind::Unavailable, true),
        };
        ErrorFrame { id, kind, retryable, message: self.client_message() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_statuses_and_frames() {
        let rejected = |rejection| ServeError::Rejected { route: "r".into(), rejection };
        let limited = rejected(Rejection::RateLimited { retry_after: Duration::from_millis(1500) });
        assert_eq!((limited.status(), limited.retry_after_secs()), (429, Some(2)));
        assert_eq!(rejected(Rejection::QueueFull).status(), 503);
        let deadline = ServeError::DeadlineExceeded { route: "r".into(), deadline: Duration::from_millis(5) };
        assert_eq!(deadline.status(), 504);
        let frame = rejected(Rejection::QueueFull).to_frame(7);
        assert_eq!((frame.id, frame.kind, frame.retryable), (7, protocol::ErrorKind::Overloaded, true));
        let frame = ServeError::BadRequest("x".into()).to_frame(1);
        assert_eq!((frame.kind, frame.retryable), (protocol::ErrorKind::BadRequest, false));
        let trap = ServeError::Plugin {
            plugin: "p".into(),
            kind: "trap",
            message: format!("unreachable\nwasm backtrace:\n    0: 0x1d2 - p!f\n{}", "x".repeat(900)),
        };
        assert_eq!(trap.client_message(), "plugin `p` failed (trap): unreachable");
        let long = ServeError::BadRequest("y".repeat(2000)).client_message();
        assert_eq!(long.chars().count(), MAX_CLIENT_MESSAGE_CHARS + 1);
    }
}
