//! `edge-node demo`: the main job.
//!
//! 1. Evaluates the reference models directly through tract (accuracy, size, FLOPs,
//!    batch-1 latency): what each tier would score alone.
//! 2. Starts a central node and an edge node as real `edge-node serve` processes on
//!    loopback (fresh CA and certificates, the mnist-classifier plugin built from source),
//!    sends the test split to the edge over KServe v2 HTTP, and reports the tier split,
//!    the cascade's accuracy and its latency.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cascade_runtime::reference::ReferenceNode;
use cascade_runtime::{Backend, Digits, ReferenceModel, Split, TractBackend, reference};

use crate::deployment::{CENTRAL, Certs, NodeProcess, free_tcp_port, free_udp_port, write_config};
use crate::figures::{Figures, median, percentile};

/// The reference models and the plugin crate a command runs (`--models`, `--plugin`); the
/// benchmarks take the same flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Reference {
    /// Directory holding the reference models and data splits.
    #[arg(long, default_value_os_t = reference::default_models_dir())]
    pub models: PathBuf,
    /// The plugin crate to build and run.
    #[arg(long, default_value_os_t = reference::default_models_dir().join("../examples/mnist-classifier"))]
    pub plugin: PathBuf,
}

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Directory holding the reference models and data splits.
    pub models_dir: PathBuf,
    /// The plugin crate both tiers run.
    pub plugin_crate: PathBuf,
    /// Batch-1 runs timed per model for the latency median.
    pub latency_samples: usize,
    /// Concurrent HTTP clients driving the edge node.
    pub concurrency: usize,
    /// Test images sent through the tiers (at most the 2,000 of the split).
    pub limit: usize,
    /// Escalation threshold on the edge (max-probability confidence).
    pub threshold: f64,
    /// Skip the two-tier part (models only).
    pub models_only: bool,
}

/// Runs the demo and returns its figures.
pub fn run(options: &DemoOptions) -> anyhow::Result<Figures> {
    let test = Digits::load_split(&options.models_dir, Split::Test)
        .with_context(|| format!("loading the test split from {}", options.models_dir.display()))?;
    let mut figures = Figures::default();
    evaluate_models(options, &test, &mut figures)?;
    if !options.models_only {
        two_tiers(options, &test, &mut figures)?;
    }
    Ok(figures)
}

fn evaluate_models(options: &DemoOptions, test: &Digits, figures: &mut Figures) -> anyhow::Result<()> {
    eprintln!("== the reference models alone, through tract ({} test images)", test.len());
    let backend = TractBackend::new();
    for key in ReferenceModel::ALL {
        let path = key.path(&options.models_dir);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let model = backend.prepare(key.key(), &bytes)?;
        let accuracy = reference::accuracy(&*model, test, 64)?;
        let info = model.info();

        // Batch-1 latency: cycle through test images, warm up first.
        let inputs =
            (0..64).map(|i| reference::images_to_input(test.image(i))).collect::<Result<Vec<_>, _>>()?;
        for input in inputs.iter().take(32) {
            model.run(std::slice::from_ref(input))?;
        }
        let mut samples = Vec::with_capacity(options.latency_samples);
        for i in 0..options.latency_samples {
            let input = &inputs[i % inputs.len()];
            let start = Instant::now();
            model.run(std::slice::from_ref(input))?;
            samples.push(start.elapsed().as_secs_f64() * 1e6);
        }
        let b1 = median(&mut samples);
        eprintln!(
            "   {:13} {:>7} bytes {:>9} MACs  {:20} accuracy {:.2}%  batch-1 median {b1:.1} us",
            key.key(),
            bytes.len(),
            info.macs_per_item,
            info.precision.describe(),
            accuracy * 100.0
        );
        let k = key.key();
        figures.push(format!("model.{k}.test_accuracy"), accuracy, "fraction");
        figures.push(format!("model.{k}.bytes"), bytes.len() as f64, "bytes");
        figures.push(format!("model.{k}.flops"), 2.0 * info.macs_per_item as f64, "flops");
        figures.push(format!("model.{k}.tract_b1_median_us"), b1, "us");
    }
    Ok(())
}

/// Writes certificates, the plugin and both node configs into `dir`.
fn prepare_tiers(
    options: &DemoOptions,
    dir: &Path,
    central_http: u16,
    central_quic: u16,
    edge_http: u16,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let certs = Certs::issue(&dir.join("certs"), &[CENTRAL, "edge"])?;
    eprintln!("   building the plugin {} ...", options.plugin_crate.display());
    let plugin = dir.join("mnist_classifier.wasm");
    let built = crate::plugin_cmd::build(&options.plugin_crate, &plugin, None)?;
    eprintln!("   plugin: {} bytes, sha256 {}", built.component.len(), built.digest);

    let model = |m: ReferenceModel| m.path(&options.models_dir);
    let mut central = ReferenceNode::new(CENTRAL, &model(ReferenceModel::CentralFp32), &plugin);
    central.plugin.sha256 = Some(built.digest.to_string());
    central.node.listeners.http = format!("127.0.0.1:{central_http}");
    certs.listen_quic(&mut central, &format!("127.0.0.1:{central_quic}"));
    let mut edge = ReferenceNode::new("edge", &model(ReferenceModel::EdgeInt8), &plugin);
    edge.plugin.sha256 = Some(built.digest.to_string());
    edge.node.listeners.http = format!("127.0.0.1:{edge_http}");
    edge.route.thresholds.normal = options.threshold;
    certs.upstream_quic(&mut edge, &format!("127.0.0.1:{central_quic}"));
    if let Some(up) = edge.node.upstream.as_mut() {
        up.request_timeout_ms = 1000;
    }
    Ok((write_config(&central, dir)?, write_config(&edge, dir)?))
}

/// What the edge said about one image.
struct Reply {
    predicted: usize,
    tier: String,
    escalated: bool,
    degraded: bool,
    latency_us: f64,
}

async fn infer(client: &reqwest::Client, url: &str, pixels: &[u8]) -> anyhow::Result<Reply> {
    let body = serde_json::json!({
        "inputs": [{"name": "image", "shape": [28, 28], "datatype": "UINT8", "data": pixels}]
    });
    let start = Instant::now();
    let response = client.post(url).json(&body).send().await?;
    let status = response.status();
    let json: serde_json::Value = response.json().await?;
    let latency_us = start.elapsed().as_secs_f64() * 1e6;
    if !status.is_success() {
        bail!("HTTP {status}: {json}");
    }
    let probabilities: Vec<f64> = json["outputs"]
        .as_array()
        .and_then(|outs| outs.iter().find(|o| o["name"] == "probabilities"))
        .and_then(|o| o["data"].as_array())
        .map(|d| d.iter().filter_map(serde_json::Value::as_f64).collect())
        .context("the response has no probabilities output")?;
    let predicted = probabilities
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .context("empty probabilities")?;
    let params = &json["parameters"];
    Ok(Reply {
        predicted,
        tier: params["tier"].as_str().unwrap_or("?").to_string(),
        escalated: params["escalated"].as_bool().unwrap_or(false),
        degraded: params["degraded"].as_bool().unwrap_or(false),
        latency_us,
    })
}

fn two_tiers(options: &DemoOptions, test: &Digits, figures: &mut Figures) -> anyhow::Result<()> {
    eprintln!("== two tiers on loopback: an edge node escalating to a central node over QUIC");
    let dir = tempfile::Builder::new().prefix("cascade-demo-").tempdir()?;
    let (central_http, central_quic, edge_http) = (free_tcp_port()?, free_udp_port()?, free_tcp_port()?);
    let (central_cfg, edge_cfg) = prepare_tiers(options, dir.path(), central_http, central_quic, edge_http)?;

    let runtime = tokio::runtime::Runtime::new()?;
    let replies = runtime.block_on(async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        let program = std::env::current_exe().context("cannot find this program's path")?;
        let mut central = NodeProcess::start(&program, CENTRAL, &central_cfg, dir.path())?;
        central.wait_ready(&client, central_http).await?;
        let mut edge = NodeProcess::start(&program, "edge", &edge_cfg, dir.path())?;
        edge.wait_ready(&client, edge_http).await?;
        eprintln!("   central on http {central_http} / quic {central_quic}, edge on http {edge_http}");

        let n = options.limit.min(test.len());
        let url = Arc::new(format!("http://127.0.0.1:{edge_http}/v2/models/digits/infer"));
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let images = Arc::new(test.clone());
        let mut workers = Vec::new();
        for _ in 0..options.concurrency.max(1) {
            let (client, url, next, images) = (client.clone(), url.clone(), next.clone(), images.clone());
            workers.push(tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return out;
                    }
                    out.push((i, infer(&client, &url, images.image(i)).await));
                }
            }));
        }
        let mut replies = Vec::with_capacity(n);
        for w in workers {
            replies.extend(w.await?);
        }
        drop((edge, central));
        anyhow::Ok(replies)
    })?;

    let total = replies.len();
    let mut errors = 0usize;
    let (mut right, mut at_edge, mut escalated, mut degraded) = (0usize, 0usize, 0usize, 0usize);
    let (mut all_lat, mut local_lat, mut esc_lat) = (Vec::new(), Vec::new(), Vec::new());
    for (i, reply) in &replies {
        match reply {
            Err(e) => {
                if errors < 3 {
                    eprintln!("   request {i} failed: {e:#}");
                }
                errors += 1;
            }
            Ok(r) => {
                right += usize::from(r.predicted == usize::from(test.label(*i)));
                at_edge += usize::from(r.tier == "edge");
                escalated += usize::from(r.escalated);
                degraded += usize::from(r.degraded);
                all_lat.push(r.latency_us);
                if r.escalated { &mut esc_lat } else { &mut local_lat }.push(r.latency_us);
            }
        }
    }
    let frac = |k: usize| k as f64 / total.max(1) as f64;
    eprintln!(
        "   {total} requests: {:.1}% answered at the edge, {:.1}% escalated to central, {degraded} degraded, \
         {errors} failed; cascade accuracy {:.2}%",
        100.0 * frac(at_edge),
        100.0 * frac(escalated),
        100.0 * frac(right)
    );
    eprintln!(
        "   latency (HTTP, {} clients): p50 {:.0} us, p99 {:.0} us; local p50 {:.0} us, escalated p50 {:.0} us",
        options.concurrency,
        percentile(&mut all_lat, 0.5),
        percentile(&mut all_lat, 0.99),
        median(&mut local_lat),
        median(&mut esc_lat)
    );
    figures.push("demo.requests", total as f64, "count");
    figures.push("demo.failed", errors as f64, "count");
    figures.push("demo.edge_share", frac(at_edge), "fraction");
    figures.push("demo.escalated_share", frac(escalated), "fraction");
    figures.push("demo.degraded", degraded as f64, "count");
    figures.push("demo.cascade_accuracy", frac(right), "fraction");
    figures.push("demo.latency_us.p50", percentile(&mut all_lat, 0.5), "us");
    figures.push("demo.latency_us.p99", percentile(&mut all_lat, 0.99), "us");
    figures.push("demo.local.latency_us.p50", median(&mut local_lat), "us");
    figures.push("demo.escalated.latency_us.p50", median(&mut esc_lat), "us");
    if errors > 0 {
        bail!("{errors} of {total} requests failed (see above)");
    }
    Ok(())
}
