//! `cascade-bench backends`: every reference model on every backend at batch 1, 8, 64 and
//! 256, against onnxruntime measured in the same run.
//!
//! onnxruntime (1 intra-op thread) runs in `tools/ort_peer.py`, driven over stdin/stdout with
//! the same input bytes. For each model and batch the bench alternates rounds: a round of
//! tract runs, then a round of onnxruntime runs, so that machine noise hits both alike; the
//! ratio is the median tract time over the median onnxruntime time. The peer times only its
//! `session.run` calls, and tract is timed around `PreparedModel::run`, input conversion
//! included, so the ratio does not favour tract.
//!
//! Figures: `backend.<tract|ort>.<key>.b<batch>.median_us` and `.items_per_s`,
//! `backend.ratio_tract_over_ort.<key>.b<batch>`, plus the steps that moved tract:
//! `backend.tract_norewrite.<key>.b1.median_us` (tract without the load-time graph
//! rewrites), `backend.ratio_int8_over_fp32.<backend>.b<batch>` (edge int8 over its fp32
//! twin; on tract measured in rounds of its own, alternating the two) and
//! `backend.ratio_qdq_over_qoperator.tract.b<batch>` (the edge model as onnxruntime's default
//! QDQ quantisation writes it, `edge_int8_qdq`, over the QOperator `edge_int8`). The wgpu backend is measured the same way (`backend.wgpu.<key>.b<batch>.*` and
//! `backend.ratio_int8_over_fp32.wgpu.b<batch>`) on whatever adapter the machine offers; the
//! bench prints the adapter and says when it is a CPU one (lavapipe), whose figures are CPU
//! figures, not GPU ones. Without an adapter it says so and skips them. Without a peer venv
//! the bench says how to make one and prints tract's figures.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use cascade_runtime::{
    Backend, Digits, PreparedModel, ReferenceModel, Split, Tensor, TractBackend, WgpuBackend, reference,
};
use serde_json::{Value, json};

use edge_node::figures::{Figures, median};

/// Batch sizes every model is measured at.
pub(crate) const BATCHES: [usize; 4] = [1, 8, 64, 256];

/// How long to measure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    /// Alternating rounds per model and batch (each: tract, then the peer).
    pub(crate) rounds: usize,
    /// Target wall time of one round of one runtime, in seconds.
    pub(crate) round_s: f64,
}

impl Budget {
    /// The default run (about 2 to 3 minutes on 2 cores).
    pub(crate) const DEFAULT: Budget = Budget { rounds: 7, round_s: 0.6 };
    /// `--quick`: same figures, fewer samples (about 30 s).
    pub(crate) const QUICK: Budget = Budget { rounds: 3, round_s: 0.12 };
}

/// The onnxruntime helper process.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    fn start(repo: &Path) -> anyhow::Result<Option<Peer>> {
        let Some(python) = crate::peer_python(repo) else { return Ok(None) };
        let mut child = Command::new(&python)
            .arg(repo.join("tools/ort_peer.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", python.display()))?;
        let stdin = child.stdin.take().context("peer stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("peer stdout")?);
        Ok(Some(Peer { child, stdin, stdout }))
    }

    fn call(&mut self, request: Value, payload: &[u8]) -> anyhow::Result<Value> {
        writeln!(self.stdin, "{request}")?;
        self.stdin.write_all(payload)?;
        self.stdin.flush()?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the onnxruntime peer exited");
        }
        let reply: Value = serde_json::from_str(&line).context("peer reply")?;
        if reply["ok"] != Value::Bool(true) {
            bail!("onnxruntime peer: {}", reply["error"]);
        }
        Ok(reply)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

fn time_runs(model: &dyn PreparedModel, input: &Tensor, reps: usize) -> anyhow::Result<Vec<f64>> {
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        model.run(std::slice::from_ref(input))?;
        samples.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(samples)
}

/// `model` prepared on `tract`, from its file in `models_dir`.
fn prepare_on(
    tract: TractBackend,
    models_dir: &Path,
    model: ReferenceModel,
) -> anyhow::Result<Arc<dyn PreparedModel>> {
    let path = model.path(models_dir);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(tract.prepare(model.key(), &bytes)?)
}

/// Warms `model` up on `input` (plans the batch size, fills pools) and returns how many runs
/// make a round of about `budget.round_s`.
fn round_reps(model: &dyn PreparedModel, input: &Tensor, budget: Budget) -> anyhow::Result<usize> {
    time_runs(model, input, 2)?;
    let once = median(&mut time_runs(model, input, 3)?);
    Ok(((budget.round_s * 1e6 / once.max(1.0)) as usize).clamp(2, 2000))
}

fn push_times(figures: &mut Figures, runtime: &str, key: &str, batch: usize, samples: &mut [f64]) -> f64 {
    let us = median(samples);
    figures.push(format!("backend.{runtime}.{key}.b{batch}.median_us"), us, "us");
    figures.push(
        format!("backend.{runtime}.{key}.b{batch}.items_per_s"),
        batch as f64 * 1e6 / us,
        "items_per_s",
    );
    us
}

/// Runs the model keyed `key` on tract at `batch` for `seconds` (after a warm-up), and
/// returns its median run time as `loop.<key>.b<batch>.median_us`: a steady process to
/// profile one model in.
pub(crate) fn run_loop(models_dir: &Path, key: &str, batch: usize, seconds: f64) -> anyhow::Result<Figures> {
    let Some(model) = ReferenceModel::ALL.into_iter().find(|m| m.key() == key) else {
        let keys: Vec<_> = ReferenceModel::ALL.iter().map(|m| m.key()).collect();
        bail!("no reference model {key:?}: pick one of {}", keys.join(", "));
    };
    anyhow::ensure!(batch >= 1, "--batch must be at least 1");
    anyhow::ensure!(
        seconds.is_finite() && seconds > 0.0,
        "--seconds must be a positive number, got {seconds}"
    );
    let test = Digits::load_split(models_dir, Split::Test)
        .with_context(|| format!("loading the test split from {}", models_dir.display()))?;
    let tract = prepare_on(TractBackend::new(), models_dir, model)?;
    let pixels: Vec<u8> = (0..batch).flat_map(|i| test.image(i % test.len()).iter().copied()).collect();
    let input = reference::images_to_input(&pixels)?;
    time_runs(&*tract, &input, 10)?;
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed().as_secs_f64() < seconds {
        samples.extend(time_runs(&*tract, &input, 100)?);
    }
    eprintln!("{key} b{batch}: {} runs in {:.1} s", samples.len(), start.elapsed().as_secs_f64());
    let mut figures = Figures::default();
    figures.push(format!("loop.{key}.b{batch}.median_us"), median(&mut samples), "us");
    Ok(figures)
}

/// Runs the suite on the models in `models_dir`, with the repository at `repo` (for the peer).
pub(crate) fn run(models_dir: &Path, repo: &Path, budget: Budget) -> anyhow::Result<Figures> {
    let test = Digits::load_split(models_dir, Split::Test)
        .with_context(|| format!("loading the test split from {}", models_dir.display()))?;
    let mut peer = Peer::start(repo)?;
    let mut figures = Figures::default();
    let mut tract_b: Vec<(ReferenceModel, usize, f64)> = Vec::new();
    for key in ReferenceModel::ALL {
        let tract = prepare_on(TractBackend::new(), models_dir, key)?;
        if let Some(p) = peer.as_mut() {
            let path = std::fs::canonicalize(key.path(models_dir))?;
            p.call(json!({"cmd": "load", "key": key.key(), "path": path}), &[])?;
        }
        for batch in BATCHES {
            let input = reference::images_to_input(test.images(0..batch.min(test.len())))?;
            let reps = round_reps(&*tract, &input, budget)?;
            let mut ours = Vec::new();
            let mut theirs = Vec::new();
            if let Some(p) = peer.as_mut() {
                p.call(
                    json!({"cmd": "input", "key": key.key(), "shape": input.shape(), "bytes": input.data().len()}),
                    input.data(),
                )?;
                let warm = p.call(json!({"cmd": "time", "key": key.key(), "reps": 3}), &[])?;
                check_agreement(&*tract, &input, &warm, key)?;
            }
            for _ in 0..budget.rounds {
                ours.extend(time_runs(&*tract, &input, reps)?);
                if let Some(p) = peer.as_mut() {
                    let reply = p.call(json!({"cmd": "time", "key": key.key(), "reps": reps}), &[])?;
                    theirs.extend(reply["us"].as_array().into_iter().flatten().filter_map(Value::as_f64));
                }
            }
            let k = key.key();
            let t = push_times(&mut figures, "tract", k, batch, &mut ours);
            tract_b.push((key, batch, t));
            if !theirs.is_empty() {
                let o = push_times(&mut figures, "ort", k, batch, &mut theirs);
                figures.push(format!("backend.ratio_tract_over_ort.{k}.b{batch}"), t / o, "ratio");
            }
            eprintln!("{k:13} b{batch:<3} tract {t:10.1} us  ({} samples)", ours.len());
        }
        // The rewrite step, measured at batch 1 against plain tract in the same run.
        let plain = prepare_on(TractBackend::without_rewrites(), models_dir, key)?;
        let input = reference::images_to_input(test.image(0))?;
        let reps = round_reps(&*plain, &input, budget)?;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..budget.rounds {
            a.extend(time_runs(&*plain, &input, reps)?);
            b.extend(time_runs(&*tract, &input, reps)?);
        }
        figures.push(format!("backend.tract_norewrite.{}.b1.median_us", key.key()), median(&mut a), "us");
        figures.push(
            format!("backend.tract_rewrite_same_run.{}.b1.median_us", key.key()),
            median(&mut b),
            "us",
        );
    }
    int8_over_fp32(models_dir, &test, budget, &mut figures)?;
    for batch in BATCHES {
        let find = |m| tract_b.iter().find(|(k, b, _)| *k == m && *b == batch).map(|x| x.2);
        // The QDQ file (folded into integer ops at load) against the QOperator one.
        if let (Some(qdq), Some(i8)) = (find(ReferenceModel::EdgeInt8Qdq), find(ReferenceModel::EdgeInt8)) {
            figures.push(format!("backend.ratio_qdq_over_qoperator.tract.b{batch}"), qdq / i8, "ratio");
        }
    }
    run_wgpu(models_dir, &test, budget, &mut figures)?;
    Ok(figures)
}

/// `backend.ratio_int8_over_fp32.tract.b<batch>`: the edge model's int8 and fp32 forms on
/// tract, alternated round by round. Taken from the per-model figures above, the two
/// medians came from blocks of the run a minute apart, and this machine's speed drifts
/// within a minute (fp32 at batch 1 landed at 16 or 26 µs from one run to the next).
fn int8_over_fp32(
    models_dir: &Path,
    test: &Digits,
    budget: Budget,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    let int8 = prepare_on(TractBackend::new(), models_dir, ReferenceModel::EdgeInt8)?;
    let fp32 = prepare_on(TractBackend::new(), models_dir, ReferenceModel::EdgeFp32)?;
    for batch in BATCHES {
        let input = reference::images_to_input(test.images(0..batch.min(test.len())))?;
        time_runs(&*int8, &input, 2)?;
        let reps = round_reps(&*fp32, &input, budget)?;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..budget.rounds {
            a.extend(time_runs(&*int8, &input, reps)?);
            b.extend(time_runs(&*fp32, &input, reps)?);
        }
        let ratio = median(&mut a) / median(&mut b);
        figures.push(format!("backend.ratio_int8_over_fp32.tract.b{batch}"), ratio, "ratio");
    }
    Ok(())
}

/// The wgpu figures: every model at every batch, then int8 over fp32 per batch.
fn run_wgpu(models_dir: &Path, test: &Digits, budget: Budget, figures: &mut Figures) -> anyhow::Result<()> {
    let gpu = match WgpuBackend::shared() {
        Ok(gpu) => gpu,
        Err(e) => {
            eprintln!("wgpu: {e}; no backend.wgpu.* figures");
            return Ok(());
        }
    };
    let adapter = gpu.adapter();
    if adapter.is_cpu {
        eprintln!(
            "wgpu on {} via {}: a CPU adapter (lavapipe), so the backend.wgpu.* figures are CPU \
             figures, not GPU ones",
            adapter.name, adapter.api
        );
    } else {
        eprintln!("wgpu on {} via {}", adapter.name, adapter.api);
    }
    let mut medians: Vec<(ReferenceModel, usize, f64)> = Vec::new();
    for key in ReferenceModel::ALL {
        let path = key.path(models_dir);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let model = gpu.prepare(key.key(), &bytes)?;
        for batch in BATCHES {
            let input = reference::images_to_input(test.images(0..batch.min(test.len())))?;
            // Warm up (builds this batch's plan) and size the rounds.
            time_runs(&*model, &input, 2)?;
            let once = median(&mut time_runs(&*model, &input, 3)?);
            let reps = ((budget.round_s * 1e6 / once.max(1.0)) as usize).clamp(2, 2000);
            let mut samples = Vec::new();
            for _ in 0..budget.rounds {
                samples.extend(time_runs(&*model, &input, reps)?);
            }
            let us = push_times(figures, "wgpu", key.key(), batch, &mut samples);
            medians.push((key, batch, us));
            eprintln!("{:13} b{batch:<3} wgpu  {us:10.1} us  ({} samples)", key.key(), samples.len());
        }
    }
    for batch in BATCHES {
        let find = |m| medians.iter().find(|(k, b, _)| *k == m && *b == batch).map(|x| x.2);
        if let (Some(i8), Some(f32)) = (find(ReferenceModel::EdgeInt8), find(ReferenceModel::EdgeFp32)) {
            figures.push(format!("backend.ratio_int8_over_fp32.wgpu.b{batch}"), i8 / f32, "ratio");
        }
    }
    Ok(())
}

/// Both runtimes got the same input: their logits must agree (int8 within a quantisation
/// step, fp32 closely), or the comparison would be meaningless.
fn check_agreement(
    model: &dyn PreparedModel,
    input: &Tensor,
    reply: &Value,
    key: ReferenceModel,
) -> anyhow::Result<()> {
    let ours = model.run(std::slice::from_ref(input))?[0].to_f32()?;
    let theirs: Vec<f64> =
        reply["logits"].as_array().into_iter().flatten().filter_map(Value::as_f64).collect();
    if theirs.len() != ours.len() {
        bail!("{}: onnxruntime gave {} logits, tract {}", key.key(), theirs.len(), ours.len());
    }
    let argmax = |v: &[f64]| reference::argmax_rows(&v.iter().map(|&x| x as f32).collect::<Vec<_>>(), 10);
    let ours64: Vec<f64> = ours.iter().map(|&x| f64::from(x)).collect();
    let (a, b) = (argmax(&ours64), argmax(&theirs));
    let agree = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    if agree * 100 < a.len() * 99 {
        bail!("{}: tract and onnxruntime agree on {agree} of {} predictions", key.key(), a.len());
    }
    Ok(())
}
