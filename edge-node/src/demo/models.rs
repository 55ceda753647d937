//! The reference models alone, run directly through tract: accuracy on the images the
//! cascade is sent, size, FLOPs and batch-1 latency. What each tier would score on its own.

use std::time::Instant;

use anyhow::Context;
use cascade_runtime::reference::{argmax_rows, images_to_input};
use cascade_runtime::{Backend, Digits, PreparedModel, ReferenceModel, TractBackend};

use crate::figures::{Figures, median};

/// Images per model run when scoring accuracy.
const BATCH: usize = 64;
/// Distinct images the batch-1 timing cycles through.
const TIMED_IMAGES: usize = 64;
/// Untimed batch-1 runs first, so that the timing does not include warm-up.
const WARM_UP_RUNS: usize = 32;
/// Classes the reference models score.
const CLASSES: usize = 10;

/// One model's figures.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ModelFigures {
    /// The figures' key: `edge_int8`, `edge_fp32`, `central_fp32`.
    pub(super) key: &'static str,
    /// Share of the first `images` test images it gets right.
    pub(super) accuracy: f64,
    /// Images scored.
    pub(super) images: usize,
    /// Its ONNX file's size.
    pub(super) bytes: usize,
    /// Floating-point operations per image (2 per multiply-accumulate).
    pub(super) flops: u64,
    /// Median batch-1 run time, in microseconds.
    pub(super) b1_median_us: f64,
}

/// Scores every reference model in `models_dir` on the first `limit` images of `test`,
/// timing `latency_samples` batch-1 runs each, and records their figures.
pub(super) fn evaluate(
    models_dir: &std::path::Path,
    test: &Digits,
    limit: usize,
    latency_samples: usize,
    figures: &mut Figures,
) -> anyhow::Result<Vec<ModelFigures>> {
    let images = limit.min(test.len());
    eprintln!("== the reference models alone, through tract ({images} test images)");
    let backend = TractBackend::new();
    let mut all = Vec::new();
    for key in ReferenceModel::ALL {
        let path = key.path(models_dir);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let model = backend.prepare(key.key(), &bytes)?;
        let accuracy = accuracy(&*model, test, images)?;
        let info = model.info();
        let b1_median_us = batch1_median_us(&*model, test, latency_samples)?;
        eprintln!(
            "   {:13} {:>7} bytes {:>9} MACs  {:20} accuracy {:.2}%  batch-1 median {b1_median_us:.1} us",
            key.key(),
            bytes.len(),
            info.macs_per_item,
            info.precision.describe(),
            accuracy * 100.0
        );
        let m = ModelFigures {
            key: key.key(),
            accuracy,
            images,
            bytes: bytes.len(),
            flops: 2 * info.macs_per_item,
            b1_median_us,
        };
        let k = m.key;
        figures.push(format!("model.{k}.test_accuracy"), m.accuracy, "fraction");
        figures.push(format!("model.{k}.bytes"), m.bytes as f64, "bytes");
        figures.push(format!("model.{k}.flops"), m.flops as f64, "flops");
        figures.push(format!("model.{k}.tract_b1_median_us"), m.b1_median_us, "us");
        all.push(m);
    }
    Ok(all)
}

/// Share of the first `images` of `test` that `model` classifies right.
fn accuracy(model: &dyn PreparedModel, test: &Digits, images: usize) -> anyhow::Result<f64> {
    let mut right = 0;
    for start in (0..images).step_by(BATCH) {
        let end = (start + BATCH).min(images);
        let outputs = model.run(&[images_to_input(test.images(start..end))?])?;
        let logits = outputs.first().context("the model returned no output")?.to_f32()?;
        let predicted = argmax_rows(&logits, CLASSES);
        right +=
            predicted.iter().zip(&test.labels()[start..end]).filter(|(p, l)| **p == usize::from(**l)).count();
    }
    Ok(right as f64 / images.max(1) as f64)
}

/// Median time of `samples` batch-1 runs, cycling through the first test images.
fn batch1_median_us(model: &dyn PreparedModel, test: &Digits, samples: usize) -> anyhow::Result<f64> {
    let inputs = (0..TIMED_IMAGES.min(test.len()))
        .map(|i| images_to_input(test.image(i)))
        .collect::<Result<Vec<_>, _>>()?;
    for input in inputs.iter().cycle().take(WARM_UP_RUNS) {
        model.run(std::slice::from_ref(input))?;
    }
    let mut times = Vec::with_capacity(samples);
    for input in inputs.iter().cycle().take(samples) {
        let start = Instant::now();
        model.run(std::slice::from_ref(input))?;
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(median(&mut times))
}
