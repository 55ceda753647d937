//! `edge-node bench sandbox`: what the wasmtime sandbox adds to a request.
//!
//! Runs the `examples/mnist-classifier` plugin (built from source) on one thread and
//! measures, per request:
//! - `sandbox.instantiate_us`: a fresh instance from the pool (store + pre-linked instance);
//! - `sandbox.call_us`: the plugin's `handle` on that instance, model run included;
//! - `sandbox.overhead_us`: the whole plugin path (`Sandbox::handle`) minus a direct call of
//!   the same model on the same image (u8 → f32 conversion included), measured alternately
//!   in the same run and paired, so model time and machine drift cancel;
//! - `sandbox.noop_handle_us` (extra): a whole request on the test plugin
//!   `runtime/tests/plugins/hostile` in its `ok` mode, which answers without tensors or a
//!   model: the sandbox's fixed cost per request.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use cascade_runtime::guest_build::sha256_hex;
use cascade_runtime::{
    Digits, PluginLimits, PluginSpec, ReferenceModel, Request, Sandbox, SandboxConfig, Split, Tensor,
    TractBackend, reference,
};

use crate::figures::{Figures, median, percentile};

/// Runs the suite: `quick` takes fewer samples (same figures).
pub fn run(models_dir: &Path, plugin_crate: &Path, quick: bool) -> anyhow::Result<Figures> {
    let samples = if quick { 500 } else { 5000 };
    let test = Digits::load_split(models_dir, Split::Test)
        .with_context(|| format!("loading the test split from {}", models_dir.display()))?;
    let dir = cascade_runtime::guest_build::default_guest_target_dir().join("components");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let wasm = dir.join("bench-mnist-classifier.wasm");
    let built = crate::plugin_cmd::build(plugin_crate, &wasm, None)?;
    eprintln!("plugin: {} bytes, sha256 {}", built.component.len(), built.sha256);

    let sandbox = Sandbox::new(SandboxConfig::default())?;
    let model_file = ReferenceModel::EdgeInt8.path(models_dir);
    let model_sha =
        sha256_hex(&std::fs::read(&model_file).with_context(|| format!("reading {}", model_file.display()))?);
    let edge = sandbox.add_model("edge", &model_file, &model_sha, &TractBackend::new())?;
    sandbox.load_plugin(&PluginSpec {
        name: "mnist".into(),
        file: wasm,
        sha256: built.sha256,
        models: [("edge".to_string(), model_sha)].into(),
        config: Default::default(),
        logging: true,
        limits: PluginLimits::default(),
    })?;

    let requests = digit_requests(&test, 64)?;
    let direct = |i: usize| -> anyhow::Result<f64> {
        let start = Instant::now();
        let input = reference::images_to_input(test.image(i))?;
        std::hint::black_box(edge.run(&[input])?);
        Ok(start.elapsed().as_secs_f64() * 1e6)
    };
    let whole = |i: usize| -> anyhow::Result<f64> {
        let start = Instant::now();
        std::hint::black_box(sandbox.handle("mnist", &requests[i])?);
        Ok(start.elapsed().as_secs_f64() * 1e6)
    };

    eprintln!("warming up ...");
    for i in 0..200 {
        direct(i % 64)?;
        whole(i % 64)?;
    }
    eprintln!("measuring {samples} requests ...");
    let (mut instantiate, mut call, mut overhead) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ws, mut ds) = (Vec::new(), Vec::new());
    for n in 0..samples {
        let i = n % 64;
        let start = Instant::now();
        let instance = sandbox.instantiate("mnist")?;
        let created = Instant::now();
        std::hint::black_box(instance.call(&requests[i])?);
        instantiate.push((created - start).as_secs_f64() * 1e6);
        call.push(created.elapsed().as_secs_f64() * 1e6);
        // Alternate which path runs first, so neither always gets the warmer cache.
        let (d, w) = if n % 2 == 0 {
            let d = direct(i)?;
            (d, whole(i)?)
        } else {
            let w = whole(i)?;
            (direct(i)?, w)
        };
        overhead.push(w - d);
        ws.push(w);
        ds.push(d);
    }
    eprintln!(
        "whole path median {:.1} us, p99 {:.1} us; direct model call median {:.1} us, p99 {:.1} us",
        median(&mut ws),
        percentile(&mut ws, 0.99),
        median(&mut ds),
        percentile(&mut ds, 0.99)
    );
    // The fixed cost: a plugin that answers at once, no tensors, no model.
    let noop_file = dir.join("bench-noop.wasm");
    let noop = crate::plugin_cmd::build(&noop_crate(plugin_crate), &noop_file, None)?;
    sandbox.load_plugin(&PluginSpec {
        name: "noop".into(),
        file: noop_file,
        sha256: noop.sha256,
        models: Default::default(),
        config: Default::default(),
        logging: true,
        limits: PluginLimits::default(),
    })?;
    let ok = Request { route: "noop".into(), inputs: vec![], parameters: vec![("mode".into(), "ok".into())] };
    let mut noop_samples = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        std::hint::black_box(sandbox.handle("noop", &ok)?);
        noop_samples.push(start.elapsed().as_secs_f64() * 1e6);
    }

    let mut figures = Figures::default();
    figures.push("sandbox.instantiate_us.median", median(&mut instantiate), "us");
    figures.push("sandbox.call_us.median", median(&mut call), "us");
    figures.push("sandbox.overhead_us.median", median(&mut overhead), "us");
    figures.push("sandbox.overhead_us.p99", percentile(&mut overhead, 0.99), "us");
    figures.push("sandbox.noop_handle_us.median", median(&mut noop_samples), "us");
    let stats = sandbox.stats();
    anyhow::ensure!(
        stats.errors.values().all(|&n| n == 0),
        "requests failed during the benchmark: {stats:?}"
    );
    Ok(figures)
}

/// The no-op plugin's crate, found beside the measured plugin in this repository's layout.
fn noop_crate(plugin_crate: &Path) -> std::path::PathBuf {
    plugin_crate.join("../../runtime/tests/plugins/hostile")
}

/// The first `n` test images as plugin requests on the `digits` route (one UINT8 [28, 28]
/// tensor named `image`, as a KServe client sends them).
pub fn digit_requests(test: &Digits, n: usize) -> anyhow::Result<Vec<Request>> {
    (0..n.min(test.len()))
        .map(|i| {
            Ok(Request {
                route: "digits".into(),
                inputs: vec![("image".into(), Tensor::from_u8(vec![28, 28], test.image(i).to_vec())?)],
                parameters: vec![],
            })
        })
        .collect()
}
