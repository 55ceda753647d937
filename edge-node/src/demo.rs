//! `edge-node demo`: the main job. For now it evaluates the reference models on the test
//! split through tract and prints accuracy, size, cost and batch-1 latency per model.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use cascade_runtime::{Backend, Digits, ReferenceModel, Split, TractBackend, reference};

use crate::figures::{Figures, median};

/// Runs the demo and returns its figures.
pub fn run(models_dir: &Path, latency_samples: usize) -> anyhow::Result<Figures> {
    let test = Digits::load_split(models_dir, Split::Test)
        .with_context(|| format!("loading the test split from {}", models_dir.display()))?;
    eprintln!("test split: {} images", test.len());
    let backend = TractBackend::new();
    let mut figures = Figures::default();
    for key in ReferenceModel::ALL {
        let path = key.path(models_dir);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let model = backend.prepare(key.key(), &bytes)?;
        let accuracy = reference::accuracy(&*model, &test, 64)?;
        let info = model.info();
        eprintln!(
            "{:13} {:>9} bytes  {:>10} MACs  {:>8}  test accuracy {:.2}%",
            key.key(),
            bytes.len(),
            info.macs_per_item,
            info.precision.describe(),
            accuracy * 100.0
        );

        // Batch-1 latency: cycle through test images, warm up first.
        let inputs =
            (0..64).map(|i| reference::images_to_input(test.image(i))).collect::<Result<Vec<_>, _>>()?;
        for input in inputs.iter().take(32) {
            model.run(std::slice::from_ref(input))?;
        }
        let mut samples = Vec::with_capacity(latency_samples);
        for i in 0..latency_samples {
            let input = &inputs[i % inputs.len()];
            let start = Instant::now();
            model.run(std::slice::from_ref(input))?;
            samples.push(start.elapsed().as_secs_f64() * 1e6);
        }

        let k = key.key();
        figures.push(format!("model.{k}.test_accuracy"), accuracy, "fraction");
        figures.push(format!("model.{k}.bytes"), bytes.len() as f64, "bytes");
        figures.push(format!("model.{k}.flops"), 2.0 * info.macs_per_item as f64, "flops");
        figures.push(format!("model.{k}.tract_b1_median_us"), median(&mut samples), "us");
    }
    Ok(figures)
}
