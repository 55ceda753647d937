//! The tier protocol: the frames one node sends another over a QUIC stream, sans-IO.
//!
//! Nothing here touches a socket or a clock: [`encode`] turns a [`Frame`] into bytes and a
//! [`FrameDecoder`] turns bytes, as they arrive, back into frames. The transport wraps both.
//!
//! # Wire format (version 2)
//!
//! ```text
//! +---------+----------------------+----------------------------+
//! | version | body length (u32 BE) | body: postcard(Frame)      |
//! | 1 byte  | 4 bytes              | `body length` bytes        |
//! +---------+----------------------+----------------------------+
//! ```
//!
//! The version comes first so that a peer speaking another version is refused before its
//! length field is trusted. The declared body length is checked against
//! [`ProtocolLimits::max_frame_bytes`] before a single byte of the body is buffered, and the
//! body is decoded with bounded counts (tensors, dimensions, timings) so that a small frame
//! cannot expand into a large allocation. Every decoded tensor's byte length is checked
//! against its shape and element type.
//!
//! One escalation uses one stream: the requester sends a [`Frame::Request`], the upstream
//! answers with one [`Frame::Answer`] or [`Frame::Error`].
//!
//! Version 2 replaced version 1's absolute deadline (which trusted both machines' clocks to
//! agree) with a relative budget, written when the frame is sent.

mod decoder;
mod wire;

use serde::{Deserialize, Serialize};

use crate::tensor::Tensor;

pub use decoder::FrameDecoder;

/// The protocol version this build speaks, sent as the first byte of every frame.
pub const PROTOCOL_VERSION: u8 = 2;

/// Bytes before the body: the version byte and the u32 body length.
pub const HEADER_BYTES: usize = 5;

/// Most tensors one request or answer may carry.
pub const MAX_TENSORS: usize = 64;

/// Most dimensions a tensor shape may have.
pub const MAX_DIMS: usize = 16;

/// Most per-stage timings an answer may carry.
pub const MAX_TIMINGS: usize = 32;

/// Size limits, enforced on both encode and decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolLimits {
    /// Largest frame body accepted or sent, in bytes (default 16 MiB: a batch of 2,000
    /// 28x28 f32 images fits with room to spare).
    pub max_frame_bytes: usize,
}

impl Default for ProtocolLimits {
    fn default() -> Self {
        ProtocolLimits { max_frame_bytes: 16 << 20 }
    }
}

/// One message of the tier protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// A node asks its upstream to answer a request it is unsure about.
    Request(EscalationRequest),
    /// The upstream's answer.
    Answer(EscalationAnswer),
    /// The upstream could not answer.
    Error(ErrorFrame),
}

/// A named tensor, as a model input or output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "wire::NamedTensorWire")]
pub struct NamedTensor {
    /// Input or output name (`input`, `logits`, ...).
    pub name: String,
    /// The tensor.
    pub tensor: Tensor,
}

/// W3C trace context carried across tiers, so one trace spans edge and central.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// 128-bit trace id.
    pub trace_id: u128,
    /// Span id of the requester's escalation span.
    pub parent_span_id: u64,
    /// Whether the requester samples this trace.
    pub sampled: bool,
}

/// An escalation: the requester's inputs and how long it is willing to wait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EscalationRequest {
    /// Requester-chosen id, echoed in the answer or error.
    pub id: u64,
    /// Route the request came in on; the upstream runs its own plugin for that route.
    pub route: String,
    /// Input tensors.
    #[serde(deserialize_with = "wire::bounded_vec::<_, _, MAX_TENSORS>")]
    pub inputs: Vec<NamedTensor>,
    /// Microseconds the requester gives the upstream to answer, counted from when the
    /// upstream has the whole request (relative, as the tiers' clocks need not agree). The
    /// requester's transport rewrites it with the time actually left as each attempt is sent
    /// (see [`encode_request`]); the upstream clamps it to its own route deadline.
    pub budget_us: u64,
    /// Trace context, if the request is traced.
    pub trace: Option<TraceContext>,
    /// Id of the node that escalates.
    pub node_id: String,
    /// Confidence of the requester's local answer, if it computed one.
    pub local_confidence: Option<f32>,
}

/// How long one stage of the upstream's handling took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageTiming {
    /// Stage name (`queue`, `plugin`, `inference`, ...).
    pub stage: String,
    /// Duration in microseconds.
    pub micros: u64,
}

/// The upstream's answer to an escalation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EscalationAnswer {
    /// Id of the request answered.
    pub id: u64,
    /// Output tensors.
    #[serde(deserialize_with = "wire::bounded_vec::<_, _, MAX_TENSORS>")]
    pub outputs: Vec<NamedTensor>,
    /// The upstream's confidence in its answer.
    pub confidence: f32,
    /// Predicted label, for classification routes.
    pub label: Option<u32>,
    /// Version of the model that answered (its digest or name).
    pub model_version: String,
    /// Per-stage timings of the upstream's handling.
    #[serde(deserialize_with = "wire::bounded_vec::<_, _, MAX_TIMINGS>")]
    pub timings: Vec<StageTiming>,
}

/// What kind of failure an [`ErrorFrame`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The upstream's queue is full; it refused the request at once.
    Overloaded,
    /// The deadline passed before the upstream could answer.
    DeadlineExceeded,
    /// The upstream has no such route.
    UnknownRoute,
    /// The request was malformed (bad tensors, wrong inputs for the model).
    BadRequest,
    /// The frame's protocol version is not one the upstream speaks.
    UnsupportedVersion,
    /// The frame was larger than the upstream accepts.
    FrameTooLarge,
    /// The upstream failed internally (plugin trap, backend error).
    Internal,
    /// The upstream is shutting down or otherwise unavailable.
    Unavailable,
}

impl ErrorKind {
    /// Lowercase name used in messages and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::DeadlineExceeded => "deadline exceeded",
            ErrorKind::UnknownRoute => "unknown route",
            ErrorKind::BadRequest => "bad request",
            ErrorKind::UnsupportedVersion => "unsupported version",
            ErrorKind::FrameTooLarge => "frame too large",
            ErrorKind::Internal => "internal",
            ErrorKind::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The upstream's refusal or failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// Id of the request, or 0 if the request could not be decoded far enough to know it.
    pub id: u64,
    /// What went wrong.
    pub kind: ErrorKind,
    /// Whether sending the same request again (here or to another upstream) can help.
    pub retryable: bool,
    /// Human-readable detail.
    pub message: String,
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The frame's version byte is not [`PROTOCOL_VERSION`].
    #[error("unsupported tier protocol version {got} (this node speaks version {PROTOCOL_VERSION})")]
    UnsupportedVersion {
        /// The version byte received.
        got: u8,
    },
    /// The frame body is larger than the configured limit.
    #[error("frame body of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Declared or encoded body length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The frame body is not a valid postcard-encoded frame.
    #[error("malformed frame body: {0}")]
    Malformed(String),
    /// The frame carries more items than the protocol allows.
    #[error("frame field {field} has {len} items, more than the limit of {max}")]
    TooMany {
        /// Which field (`inputs`, `outputs`, `timings`).
        field: &'static str,
        /// How many it carries.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended after {have} bytes of a frame")]
    Truncated {
        /// Bytes of the partial frame received.
        have: usize,
    },
    /// An earlier error left the decoder in an unknown position in the stream.
    #[error("frame decoder already failed on this stream")]
    Poisoned,
}

impl ProtocolError {
    /// The error frame to send back to a peer whose frame failed to decode with this error.
    pub fn to_error_frame(&self, id: u64) -> ErrorFrame {
        let kind = match self {
            ProtocolError::UnsupportedVersion { .. } => ErrorKind::UnsupportedVersion,
            ProtocolError::FrameTooLarge { .. } => ErrorKind::FrameTooLarge,
            _ => ErrorKind::BadRequest,
        };
        ErrorFrame { id, kind, retryable: false, message: self.to_string() }
    }
}

/// Encodes a frame with its header, refusing frames the peer would refuse.
pub fn encode(frame: &Frame, limits: &ProtocolLimits) -> Result<Vec<u8>, ProtocolError> {
    check_counts(frame)?;
    let frame = match frame {
        Frame::Request(r) => FrameRef::Request(RequestRef::Whole(r)),
        Frame::Answer(a) => FrameRef::Answer(a),
        Frame::Error(e) => FrameRef::Error(e),
    };
    encode_ref(&frame, limits)
}

/// Encodes a request frame whose budget is `budget` (the time left as it is sent), without
/// taking or copying the request: a client may send it again, with less time left.
pub fn encode_request(
    request: &EscalationRequest,
    budget: std::time::Duration,
    limits: &ProtocolLimits,
) -> Result<Vec<u8>, ProtocolError> {
    check_request_counts(request)?;
    let request = BorrowedRequest {
        id: request.id,
        route: &request.route,
        inputs: &request.inputs,
        budget_us: budget_us(budget),
        trace: &request.trace,
        node_id: &request.node_id,
        local_confidence: request.local_confidence,
    };
    encode_ref(&FrameRef::Request(RequestRef::Borrowed(request)), limits)
}

/// `budget` as [`EscalationRequest::budget_us`] (saturating).
pub fn budget_us(budget: std::time::Duration) -> u64 {
    u64::try_from(budget.as_micros()).unwrap_or(u64::MAX)
}

/// Serializes exactly like [`Frame`] (same variants in the same order), by reference.
#[derive(Serialize)]
enum FrameRef<'a> {
    Request(RequestRef<'a>),
    Answer(&'a EscalationAnswer),
    Error(&'a ErrorFrame),
}

/// Serializes exactly like [`EscalationRequest`]: a request as stored, or a borrowed copy with
/// the budget rewritten. Postcard writes a struct as its fields in order, so the borrowed
/// mirror's fields must stay in [`EscalationRequest`]'s order (a test checks they do).
#[derive(Serialize)]
#[serde(untagged)]
enum RequestRef<'a> {
    Whole(&'a EscalationRequest),
    Borrowed(BorrowedRequest<'a>),
}

#[derive(Serialize)]
struct BorrowedRequest<'a> {
    id: u64,
    route: &'a str,
    inputs: &'a [NamedTensor],
    budget_us: u64,
    trace: &'a Option<TraceContext>,
    node_id: &'a str,
    local_confidence: Option<f32>,
}

fn encode_ref(frame: &FrameRef<'_>, limits: &ProtocolLimits) -> Result<Vec<u8>, ProtocolError> {
    let mut out = postcard::to_extend(frame, vec![PROTOCOL_VERSION, 0, 0, 0, 0])
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    let len = out.len() - HEADER_BYTES;
    let declared = u32::try_from(len)
        .ok()
        .filter(|_| len <= limits.max_frame_bytes)
        .ok_or(ProtocolError::FrameTooLarge { len: len as u64, max: limits.max_frame_bytes })?;
    out[1..HEADER_BYTES].copy_from_slice(&declared.to_be_bytes());
    Ok(out)
}

/// Decodes exactly one whole frame from `bytes` (header included).
pub fn decode(bytes: &[u8], limits: &ProtocolLimits) -> Result<Frame, ProtocolError> {
    let mut decoder = FrameDecoder::new(*limits);
    let mut input = bytes;
    match decoder.decode(&mut input)? {
        Some(frame) if input.is_empty() => Ok(frame),
        Some(_) => Err(ProtocolError::Malformed(format!("{} bytes after the frame", input.len()))),
        None => Err(ProtocolError::Truncated { have: bytes.len() }),
    }
}

fn check_counts(frame: &Frame) -> Result<(), ProtocolError> {
    match frame {
        Frame::Request(r) => check_request_counts(r),
        Frame::Answer(a) => {
            check("outputs", a.outputs.len(), MAX_TENSORS)?;
            check("timings", a.timings.len(), MAX_TIMINGS)?;
            check_dims(&a.outputs)
        }
        Frame::Error(_) => Ok(()),
    }
}

fn check_request_counts(r: &EscalationRequest) -> Result<(), ProtocolError> {
    check("inputs", r.inputs.len(), MAX_TENSORS)?;
    check_dims(&r.inputs)
}

fn check(field: &'static str, len: usize, max: usize) -> Result<(), ProtocolError> {
    if len > max { Err(ProtocolError::TooMany { field, len, max }) } else { Ok(()) }
}

fn check_dims(tensors: &[NamedTensor]) -> Result<(), ProtocolError> {
    tensors.iter().try_for_each(|t| check("shape", t.tensor.shape().len(), MAX_DIMS))
}

/// Decodes a frame body (the bytes after the header).
fn decode_body(body: &[u8]) -> Result<Frame, ProtocolError> {
    wire::take_detail();
    match postcard::take_from_bytes::<Frame>(body) {
        Ok((frame, [])) => Ok(frame),
        Ok((_, rest)) => Err(ProtocolError::Malformed(format!("{} bytes after the frame body", rest.len()))),
        Err(e) => Err(ProtocolError::Malformed(wire::take_detail().unwrap_or_else(|| e.to_string()))),
    }
}

#[cfg(test)]
mod tests;
