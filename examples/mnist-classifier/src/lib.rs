//! Classifies one handwritten digit.
//!
//! Input: one u8 tensor of 784 pixels (shaped `[28, 28]`, `[1, 28, 28]` or `[784]`).
//! Runs the node's edge model (`model` in the plugin config, default `edge`) on pixel/255,
//! and answers with the label, the ten class probabilities (`probabilities`, f32 `[1, 10]`)
//! and the top probability as confidence.

use cascade_guest_sdk::{Answer, Outcome, Plugin, PluginError, Request, Tensor};
use cascade_guest_sdk::{confidence, config, image, inference};

struct MnistClassifier;

impl Plugin for MnistClassifier {
    fn handle(request: Request) -> Result<Outcome, PluginError> {
        let pixels = request.first_input()?.as_u8()?;
        if pixels.len() != 28 * 28 {
            return Err(PluginError::BadRequest(format!("expected 784 pixels, got {}", pixels.len())));
        }
        let input = Tensor::from_f32(vec![1, 1, 28, 28], &image::scale_u8(pixels))?;
        let model = config::get("model").unwrap_or_else(|| "edge".to_string());
        let outputs = inference::compute(&model, vec![("input".to_string(), input)])?;
        let (_, logits) =
            outputs.first().ok_or_else(|| PluginError::Inference("the model returned nothing".into()))?;
        let probs = confidence::softmax(&logits.to_f32()?);
        let label =
            confidence::argmax(&probs).ok_or_else(|| PluginError::Internal("no class scores".into()))?;
        Ok(Outcome::Answer(
            Answer::new(confidence::max_probability(&probs))
                .with_output("probabilities", Tensor::from_f32(vec![1, probs.len()], &probs)?)
                .with_label(label.to_string()),
        ))
    }
}

cascade_guest_sdk::export_plugin!(MnistClassifier);
