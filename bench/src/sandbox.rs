//! `cascade-bench sandbox`: what the wasmtime sandbox adds to a request.
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
use cascade_runtime::config::{ModelSpec, PluginSpec, ResolvedModel, ResolvedPlugin};
use cascade_runtime::{
    BackendKind, Digits, ModelStore, PluginLimits, ReferenceModel, Request, Sandbox, SandboxConfig, Split,
    Tensor, reference,
};

use edge_node::figures::{Figures, median, percentile};

/// Runs the suite: `quick` takes fewer samples (same figures).
pub(crate) fn run(models_dir: &Path, plugin_crate: &Path, quick: bool) -> anyhow::Result<Figures> {
    let samples = if quick { 500 } else { 5000 };
    let test = Digits::load_split(models_dir, Split::Test)
        .with_context(|| format!("loading the test split from {}", models_dir.display()))?;
    let dir = cascade_runtime::guest_build::default_guest_target_dir().join("components");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let wasm = dir.join("bench-mnist-classifier.wasm");
    let built = edge_node::plugin_cmd::build(plugin_crate, &wasm, None)?;
    eprintln!("plugin: {} bytes, sha256 {}", built.component.len(), built.digest);

    let (sandbox, models) = mnist_sandbox(&ReferenceModel::EdgeInt8.path(models_dir), &wasm)?;
    let edge = models.get("edge").context("the store lost the model")?.model.clone();

    let requests = digit_requests(&test, 64)?;
    let direct = |i: usize| -> anyhow::Result<f64> {
        let start = Instant::now();
        let input = reference::images_to_input(test.image(i))?;
        std::hint::black_box(edge.run(&[input])?);
        Ok(start.elapsed().as_secs_f64() * 1e6)
    };
    let whole = |i: usize| -> anyhow::Result<f64> {
        let start = Instant::now();
        std::hint::black_box(sandbox.handle("mnist", requests[i].request())?);
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
        std::hint::black_box(instance.call(requests[i].request())?);
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
    let noop = edge_node::plugin_cmd::build(&noop_crate(plugin_crate), &noop_file, None)?;
    sandbox.load_plugin("noop", &plugin(&noop_file, noop.component, &[])?, &models)?;
    let parameters = [("mode".to_string(), "ok".to_string())];
    let ok = Request { route: "noop", inputs: &[], parameters: &parameters };
    let mut noop_samples = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        std::hint::black_box(sandbox.handle("noop", ok)?);
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

/// An in-process sandbox with the model at `model` loaded as `edge` and the mnist-classifier
/// component at `wasm` loaded as `mnist`, as a node would load them (default limits).
pub(crate) fn mnist_sandbox(model: &Path, wasm: &Path) -> anyhow::Result<(Sandbox, ModelStore)> {
    let sandbox = Sandbox::new(SandboxConfig::default())?;
    let bytes = std::fs::read(model).with_context(|| format!("reading {}", model.display()))?;
    let spec = ModelSpec {
        path: model.to_path_buf(),
        backend: BackendKind::Tract,
        fallback_to_tract: false,
        pinned: None,
        inputs: Default::default(),
    };
    let models = ModelStore::load(&[("edge".to_string(), ResolvedModel::new(spec, bytes))].into(), None)?;
    let component = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
    sandbox.load_plugin("mnist", &plugin(wasm, component, &["edge"])?, &models)?;
    Ok((sandbox, models))
}

/// A plugin as the config would resolve it, with the default limits.
fn plugin(file: &Path, component: Vec<u8>, models: &[&str]) -> anyhow::Result<ResolvedPlugin> {
    let limits = PluginLimits::default();
    let spec = PluginSpec {
        path: file.to_path_buf(),
        pinned: None,
        memory_limit_bytes: u64::try_from(limits.max_memory_bytes)?,
        deadline: limits.deadline,
        models: models.iter().map(|m| m.to_string()).collect(),
        config: Default::default(),
    };
    Ok(ResolvedPlugin::new(spec, component))
}

/// One owned request on the `digits` route: one UINT8 [28, 28] tensor named `image`, as a
/// KServe client sends it.
pub(crate) struct DigitRequest {
    inputs: Vec<(String, Tensor)>,
}

impl DigitRequest {
    /// The request as the sandbox takes it.
    pub(crate) fn request(&self) -> Request<'_> {
        Request { route: "digits", inputs: &self.inputs, parameters: &[] }
    }
}

/// The first `n` test images as plugin requests.
pub(crate) fn digit_requests(test: &Digits, n: usize) -> anyhow::Result<Vec<DigitRequest>> {
    (0..n.min(test.len()))
        .map(|i| {
            let image = Tensor::from_u8(vec![28, 28], test.image(i).to_vec())?;
            Ok(DigitRequest { inputs: vec![("image".into(), image)] })
        })
        .collect()
}
