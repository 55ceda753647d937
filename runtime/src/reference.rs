//! The reference models and data that ship in `models/`, and how to score a model on them.
//!
//! Model keys are the names every figure uses: `edge_int8`, `edge_int8_qdq`, `edge_fp32`,
//! `central_fp32`.
//! Every reference model takes `input` f32 `[N, 1, 28, 28]` holding pixel/255 and returns
//! `logits` f32 `[N, 10]`.

use std::path::{Path, PathBuf};

use crate::backend::{BackendError, PreparedModel};
use crate::config::{ModelConfig, NodeConfig, PluginConfig, RouteConfig, TensorDeclConfig};
use crate::dataset::Digits;
use crate::tensor::{DType, Tensor, TensorError};

/// One of the committed reference models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReferenceModel {
    /// The edge model, per-tensor QOperator int8 (what an edge node answers with).
    EdgeInt8,
    /// The edge model as onnxruntime's `quantize_static` writes it by default: QDQ, int8
    /// activations, per-channel int8 weights.
    EdgeInt8Qdq,
    /// The edge model's fp32 twin.
    EdgeFp32,
    /// The central model, fp32, ~17x the edge model's multiply-accumulates.
    CentralFp32,
}

impl ReferenceModel {
    /// All reference models, smallest first.
    pub const ALL: [ReferenceModel; 4] = [
        ReferenceModel::EdgeInt8,
        ReferenceModel::EdgeInt8Qdq,
        ReferenceModel::EdgeFp32,
        ReferenceModel::CentralFp32,
    ];

    /// The key used in figure names.
    pub fn key(self) -> &'static str {
        match self {
            ReferenceModel::EdgeInt8 => "edge_int8",
            ReferenceModel::EdgeInt8Qdq => "edge_int8_qdq",
            ReferenceModel::EdgeFp32 => "edge_fp32",
            ReferenceModel::CentralFp32 => "central_fp32",
        }
    }

    /// Its file under the models directory.
    pub fn path(self, models_dir: &Path) -> PathBuf {
        models_dir.join(format!("{}.onnx", self.key()))
    }
}

/// The repository's `models/` directory, as known when this crate was built. Binaries
/// deployed elsewhere take their model paths from the node config instead.
pub fn default_models_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("models");
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// The route of the reference deployment.
pub const ROUTE: &str = "digits";

/// The plugin of the reference deployment (`examples/mnist-classifier`).
pub const PLUGIN: &str = "mnist";

/// A node of the reference deployment, as parts to adjust before writing it out: the model
/// (named after the node), the mnist-classifier plugin told to call it, and route
/// [`ROUTE`], which declares its `image` input (UINT8 `[28, 28]`) and `probabilities`
/// output (FP32 `[1, 10]`). The rest of the node (listeners, upstream, modes, batching) is
/// in [`ReferenceNode::node`]. HTTP listens on any free loopback port, and every answer is
/// final (threshold 0) until the route's thresholds are set.
#[derive(Debug, Clone)]
pub struct ReferenceNode {
    /// Everything but the model, plugin and route below.
    pub node: NodeConfig,
    /// The model's name (the node's name when it was made).
    pub model_name: String,
    /// `[models.<model_name>]`.
    pub model: ModelConfig,
    /// `[plugins.mnist]`.
    pub plugin: PluginConfig,
    /// `[routes.digits]`.
    pub route: RouteConfig,
}

impl ReferenceNode {
    /// Node `name` serving `model` (an ONNX file) through the component at `plugin`.
    pub fn new(name: &str, model: &Path, plugin: &Path) -> ReferenceNode {
        let mut node = NodeConfig::default();
        node.node.name = name.to_owned();
        node.listeners.http = "127.0.0.1:0".into();
        let mut mnist = PluginConfig::new(plugin);
        mnist.models = vec![name.to_owned()];
        mnist.config.insert("model".into(), name.to_owned());
        let mut route = RouteConfig::new(PLUGIN, 0.0);
        route.deadline_ms = 2000;
        let tensor = |name: &str, datatype: &str, shape: &[i64]| TensorDeclConfig {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
        };
        route.inputs = vec![tensor("image", "UINT8", &[28, 28])];
        route.outputs = vec![tensor("probabilities", "FP32", &[1, 10])];
        ReferenceNode {
            node,
            model_name: name.to_owned(),
            model: ModelConfig::new(model),
            plugin: mnist,
            route,
        }
    }

    /// The whole config.
    pub fn config(&self) -> NodeConfig {
        let mut node = self.node.clone();
        node.models.insert(self.model_name.clone(), self.model.clone());
        node.plugins.insert(PLUGIN.into(), self.plugin.clone());
        node.routes.insert(ROUTE.into(), self.route.clone());
        node
    }
}

/// Turns 28x28 u8 images (back to back) into the reference models' input tensor
/// `[n, 1, 28, 28]` of pixel/255. Fails if `pixels` is not a whole number of images.
pub fn images_to_input(pixels: &[u8]) -> Result<Tensor, TensorError> {
    let values: Vec<f32> = pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
    Tensor::new(DType::F32, vec![pixels.len() / 784, 1, 28, 28], bytemuck::cast_slice(&values).to_vec())
}

/// Index of the largest value in each row of `[n, classes]` logits.
pub fn argmax_rows(logits: &[f32], classes: usize) -> Vec<usize> {
    logits
        .chunks_exact(classes)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best })
                .0
        })
        .collect()
}

/// Predicted class of every image in `digits`, running `batch` images per call.
pub fn predict(model: &dyn PreparedModel, digits: &Digits, batch: usize) -> Result<Vec<usize>, BackendError> {
    let mut predictions = Vec::with_capacity(digits.len());
    for start in (0..digits.len()).step_by(batch.max(1)) {
        let end = (start + batch.max(1)).min(digits.len());
        let input = images_to_input(digits.images(start..end))
            .map_err(|e| BackendError::Input { model: model.info().name.clone(), why: e.to_string() })?;
        let outputs = model.run(&[input])?;
        let logits = outputs.first().and_then(|t| t.to_f32().ok()).ok_or_else(|| BackendError::Run {
            model: model.info().name.clone(),
            why: "no f32 output".into(),
        })?;
        predictions.extend(argmax_rows(&logits, logits.len() / (end - start)));
    }
    Ok(predictions)
}

/// Fraction of `digits` whose predicted class equals the label.
pub fn accuracy(model: &dyn PreparedModel, digits: &Digits, batch: usize) -> Result<f64, BackendError> {
    let predictions = predict(model, digits, batch)?;
    let right = predictions.iter().zip(digits.labels()).filter(|(p, l)| **p == usize::from(**l)).count();
    Ok(right as f64 / digits.len().max(1) as f64)
}
