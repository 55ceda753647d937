//! Tells a file's content type (`rust`, `pdf`, `png`, ... 214 of them) from its bytes, with
//! Google's Magika model (`standard_v3_3`, Apache-2.0), which `tools/setup.sh` takes from the
//! `magika` Python package.
//!
//! Input: one u8 tensor `content` of shape `[N]`: the file's bytes. The model only sees the
//! first and the last 4 KiB, so a client may send just those two blocks joined.
//!
//! Features, as the `magika` package computes them: the first block with leading ASCII
//! whitespace stripped, cut or padded (with token 256) to 1024 values, then the last block
//! with trailing whitespace stripped, cut or padded at its start to 1024 values; int32
//! `[1, 2048]`. The answer: the model's 214 probabilities (`probabilities`, f32 `[1, 214]`),
//! the top one as confidence, and its content type as label (names from the plugin config's
//! `labels`, in the model's order). Files with fewer than 8 meaningful bytes at their start
//! are refused: Magika answers those by rule, not by model.

use cascade_guest_sdk::{Answer, DType, Outcome, Plugin, PluginError, Request, Tensor};
use cascade_guest_sdk::{confidence, config, inference};

/// What the model reads from each end of a file.
const BLOCK: usize = 4096;
/// Values taken from the start and from the end.
const BEG: usize = 1024;
const END: usize = 1024;
/// Stands for "no byte here".
const PADDING: i32 = 256;
/// Meaningful bytes needed at the start for the model to say anything.
const MIN_BYTES: usize = 8;

/// Python's `bytes.strip()` whitespace.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// The model's input for a file's `content`, or `None` when too few meaningful bytes are
/// at its start.
fn features(content: &[u8]) -> Option<Vec<i32>> {
    let block = content.len().min(BLOCK);
    let first = &content[..block];
    let first = &first[first.iter().position(|&b| !is_space(b)).unwrap_or(first.len())..];
    let last = &content[content.len() - block..];
    let last = &last[..last.iter().rposition(|&b| !is_space(b)).map_or(0, |i| i + 1)];
    if first.len() < MIN_BYTES {
        return None;
    }
    let mut out = Vec::with_capacity(BEG + END);
    out.extend(first.iter().take(BEG).map(|&b| i32::from(b)));
    out.resize(BEG, PADDING);
    let tail = &last[last.len().saturating_sub(END)..];
    out.resize(BEG + END - tail.len(), PADDING);
    out.extend(tail.iter().map(|&b| i32::from(b)));
    Some(out)
}

struct FiletypeDetector;

impl Plugin for FiletypeDetector {
    fn handle(request: Request) -> Result<Outcome, PluginError> {
        let content = request.input("content")?.as_u8()?;
        let Some(features) = features(content) else {
            return Err(PluginError::BadRequest(format!(
                "content: fewer than {MIN_BYTES} bytes besides leading whitespace; send a longer file"
            )));
        };
        let bytes: Vec<u8> = features.iter().flat_map(|v| v.to_le_bytes()).collect();
        let input = Tensor::new(DType::I32, vec![1, BEG + END], bytes)?;
        let model = config::get("model").unwrap_or_else(|| "magika".to_string());
        let outputs = inference::compute(&model, vec![("bytes".to_string(), input)])?;
        let (_, scores) = outputs
            .iter()
            .find(|(name, _)| name == "target_label")
            .ok_or_else(|| PluginError::Inference("the model has no output `target_label`".into()))?;
        let probs = scores.to_f32()?;
        let best = confidence::argmax(&probs).ok_or_else(|| PluginError::Internal("no scores".into()))?;
        let labels = config::get("labels").unwrap_or_default();
        let label = labels.split_whitespace().nth(best).map_or_else(|| best.to_string(), str::to_owned);
        Ok(Outcome::Answer(
            Answer::new(confidence::max_probability(&probs))
                .with_output("probabilities", Tensor::from_f32(vec![1, probs.len()], &probs)?)
                .with_label(label),
        ))
    }
}

cascade_guest_sdk::export_plugin!(FiletypeDetector);
