//! The test split, and what the reference models say about it.

use std::sync::OnceLock;

use cascade_runtime::{Backend, Digits, ReferenceModel, Split, TractBackend, reference};
use serde_json::{Value, json};

/// The test split, once.
pub fn digits() -> &'static Digits {
    static DIGITS: OnceLock<Digits> = OnceLock::new();
    DIGITS.get_or_init(|| Digits::load_split(&reference::default_models_dir(), Split::Test).unwrap())
}

/// Softmax of `model`'s logits for each test image in `indices`, as the mnist plugin
/// computes it.
pub fn probabilities(model: ReferenceModel, indices: &[usize]) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(model.path(&reference::default_models_dir())).unwrap();
    let prepared = TractBackend::new().prepare("m", &bytes).unwrap();
    indices
        .iter()
        .map(|&i| {
            let input = reference::images_to_input(digits().image(i)).unwrap();
            let logits = prepared.run(&[input]).unwrap()[0].to_f32().unwrap();
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
            let sum: f32 = exp.iter().sum();
            exp.iter().map(|e| e / sum).collect()
        })
        .collect()
}

/// The first `n` test images the edge model is less sure of than `below`.
pub fn hard_images(n: usize, below: f32) -> Vec<usize> {
    let candidates: Vec<usize> = (0..digits().len().min(3000)).collect();
    let probs = probabilities(ReferenceModel::EdgeInt8, &candidates);
    let hard: Vec<usize> = candidates
        .into_iter()
        .zip(probs)
        .filter(|(_, p)| p.iter().copied().fold(0.0, f32::max) < below)
        .map(|(i, _)| i)
        .take(n)
        .collect();
    assert_eq!(hard.len(), n, "not enough hard images in the test split");
    hard
}

/// A KServe v2 request body for test image `i`.
pub fn image_body(i: usize) -> Value {
    json!({
        "id": format!("img-{i}"),
        "inputs": [{ "name": "image", "shape": [28, 28], "datatype": "UINT8", "data": digits().image(i) }]
    })
}
