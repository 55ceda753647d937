//! The parsers an attacker reaches that are public already (`protocol::FrameDecoder`,
//! `kserve::parse_request`, `config::parse`) are fuzzed directly. The ones below are private
//! to their modules; these thin wrappers reach them without making them part of the API.
//! Each wrapper calls exactly what the node calls on the same input, nothing more.

use crate::PluginLimits;
use crate::backend::PreparedModel;
use crate::protocol::EscalationAnswer;
use crate::sandbox::{Outcome, check_outcome, inference};
use crate::tensor::Tensor;
use crate::upstream::KserveError;
use crate::upstream::kserve::{decode_response, error_message};

/// The WIT types a guest hands the host, as wasmtime generates them from
/// `guest-sdk/wit/plugin.wit`. Re-exported (wasmtime types in this module's signatures) so a
/// fuzz target can build the exact values a guest's return crosses the boundary as.
pub mod wit {
    pub use crate::sandbox::bindings::cascade::plugin::types::{
        Answer, NamedTensor, Outcome, Tensor, TensorType,
    };
}

/// What a KServe upstream's HTTP response (`status`, `body`) to escalation `id` for `model`
/// becomes, as `KserveClient::infer` reads it once the body has arrived.
pub fn kserve_response(
    status: u16,
    body: &[u8],
    id: u64,
    model: &str,
) -> Result<EscalationAnswer, KserveError> {
    if !(200..300).contains(&status) {
        return Err(KserveError::Status { status, message: error_message(body) });
    }
    decode_response(body, id, model)
}

/// What the host makes of a guest's returned outcome under `limits`.
pub fn guest_outcome(outcome: wit::Outcome, limits: &PluginLimits) -> Result<Outcome, String> {
    check_outcome(outcome, limits)
}

/// What the host makes of one tensor a guest sends.
pub fn guest_tensor(tensor: wit::Tensor) -> Result<Tensor, String> {
    inference::tensor_from_wit(tensor)
}

/// What the host makes of the tensors a guest passes to `model` through the inference
/// capability, before the backend sees them.
pub fn guest_model_inputs(
    model: &dyn PreparedModel,
    inputs: Vec<wit::NamedTensor>,
) -> Result<Vec<Tensor>, String> {
    inference::model_inputs(model, inputs)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{guest_outcome, wit};
    use crate::PluginLimits;
    use crate::protocol::{FrameDecoder, MAX_TENSORS, ProtocolLimits};

    /// Found by fuzzing (fuzz/fuzz_targets/wit_boundary.rs): the host accepted an answer with
    /// more outputs than a tier protocol frame carries, so a central tier answering an
    /// escalation with it failed later, encoding the frame, instead of at the boundary.
    #[test]
    fn an_answer_with_more_outputs_than_a_frame_carries_is_refused() {
        let empty = || wit::NamedTensor {
            name: String::new(),
            tensor: wit::Tensor { dimensions: vec![0], ty: wit::TensorType::U8, data: Vec::new() },
        };
        let answer = |n: usize| {
            wit::Outcome::Answer(wit::Answer {
                outputs: (0..n).map(|_| empty()).collect(),
                confidence: 0.5,
                label: None,
            })
        };
        let limits = PluginLimits::default();
        assert!(guest_outcome(answer(MAX_TENSORS), &limits).is_ok());
        let e = guest_outcome(answer(MAX_TENSORS + 1), &limits).unwrap_err();
        assert!(e.contains("outputs"), "{e}");
    }

    /// The protocol fuzz target's seeds are frames of this build's wire format (after the
    /// target's two bytes of settings), so a format change that would leave the fuzzer
    /// starting from refused input is noticed here.
    #[test]
    fn the_protocol_fuzz_seeds_are_valid_frames() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/protocol_decoder");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let mut decoder = FrameDecoder::new(ProtocolLimits::default());
            let mut stream = &bytes[2..];
            while !stream.is_empty() {
                let frame = decoder.decode(&mut stream);
                assert!(matches!(frame, Ok(Some(_))), "{}: {frame:?}", path.display());
            }
            seen += 1;
        }
        assert!(seen > 0, "no seeds in {}", dir.display());
    }
}
