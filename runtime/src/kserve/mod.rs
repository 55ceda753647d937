//! KServe v2 (Open Inference Protocol) bodies, both ways: what the node's HTTP front door
//! reads ([`parse_request`]) and writes ([`encode_reply`]), and the tensor codec the KServe
//! upstream client shares with it ([`tensor`]). No HTTP here: the front door hands in the
//! body and the value of `Inference-Header-Content-Length`, and sends what comes back.

mod request;
mod response;
pub mod tensor;

pub use request::{
    HEADER_LENGTH, InferRequest, MAX_PARAMETERS, OutputChoice, VALUE_PATH_MAX_BYTES, json_length,
    parse_request,
};
pub use response::{EncodedReply, encode_reply};
