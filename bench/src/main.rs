//! `cascade-bench`: Cascade's benchmark suites and their load generator, kept out of the
//! product binary.
//!
//! Each suite prints its figures as a table, or with `--json` one JSON object per line
//! (`{"figure": ..., "value": ..., "unit": ...}`) and nothing else on stdout; progress goes
//! to stderr, starting with the machine: CPU model, vector extensions and the kernel paths
//! taken on it (`cascade_runtime::machine_report`). `--quick` gives the same figures from fewer samples. Suites that run nodes
//! start the `edge-node` binary that sits beside this one (`tools/bench.sh` builds both).

mod backends;
mod device;
mod edge;
mod faults;
mod kernels;
mod loadgen;
mod procfs;
mod sandbox;
mod tiers;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use edge_node::demo::Reference;

#[derive(Parser)]
#[command(
    name = "cascade-bench",
    version,
    about = "Cascade's benchmarks (figures one JSON object per line with --json)"
)]
struct Cli {
    #[command(subcommand)]
    suite: Suite,
}

/// Flags every suite takes.
#[derive(clap::Args)]
struct Run {
    /// Print one JSON figure per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Fewer samples: the same figures in under 60 s.
    #[arg(long)]
    quick: bool,
}

#[derive(Subcommand)]
enum Suite {
    /// What the wasmtime sandbox adds to a request (mnist-classifier plugin, one thread).
    Sandbox {
        #[command(flatten)]
        run: Run,
        #[command(flatten)]
        reference: Reference,
    },
    /// Two tiers on loopback: escalation overhead, central batching, the central tier dying.
    Tiers {
        #[command(flatten)]
        run: Run,
        #[command(flatten)]
        reference: Reference,
        /// Backend of the central nodes' model: `tract` (CPU) or `wgpu` (GPU; lavapipe on
        /// machines without one).
        #[arg(long, default_value = "tract", value_parser = ["tract", "wgpu"])]
        central_backend: String,
    },
    /// Reference models x backends x batch sizes, against onnxruntime in the same run.
    Backends {
        #[command(flatten)]
        run: Run,
        /// Directory holding the reference models and data splits.
        #[arg(long, default_value_os_t = cascade_runtime::reference::default_models_dir())]
        models: PathBuf,
    },
    /// The convolution kernels alone on the reference models' layers: the direct loop's
    /// speed, and Winograd against it on each pooled layer, alternated.
    Kernels {
        #[command(flatten)]
        run: Run,
    },
    /// One reference model on tract in a loop, to be watched with `perf record -p`: runs for
    /// `--seconds` and prints its median run time.
    Loop {
        #[command(flatten)]
        run: Run,
        /// Directory holding the reference models and data splits.
        #[arg(long, default_value_os_t = cascade_runtime::reference::default_models_dir())]
        models: PathBuf,
        /// The model: edge_int8, edge_int8_qdq, edge_fp32 or central_fp32.
        #[arg(long, default_value = "edge_int8")]
        model: String,
        /// Images per run.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// How long to loop.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// A whole edge node over HTTP under open-loop load, against a Python onnxruntime server.
    Edge {
        #[command(flatten)]
        run: Run,
        #[command(flatten)]
        reference: Reference,
    },
    /// Faults, overload, slow and hostile clients, plugins and peers, reloads (issue 14).
    Faults {
        #[command(flatten)]
        run: Run,
        #[command(flatten)]
        reference: Reference,
        /// Run only these scenarios (comma-separated: central_kill, cancel_storm, netem,
        /// overload, slow_clients, peer_flood, hostile, reload); default all.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Also draw the scenarios that have a picture into this directory (overload: every
        /// admitted answer's latency over the 3x phase, governed and not: `overload.png`).
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// The device build: binary size per architecture, start to ready and to first answer
    /// with a precompiled plugin, idle memory (build it first: tools/device.sh, tools/cross.sh).
    Device {
        #[command(flatten)]
        run: Run,
        #[command(flatten)]
        reference: Reference,
        /// The cargo target directory holding the device builds (`device/edge-node`, and
        /// `cross/aarch64-unknown-linux-gnu/device/edge-node`); default: this binary's.
        #[arg(long)]
        target_dir: Option<PathBuf>,
    },
}

/// The `edge-node` binary beside this one, which suites start as `serve` processes.
fn node_program() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find this program's path")?;
    let program = me.with_file_name(format!("edge-node{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        program.is_file(),
        "{} is missing: build it beside this binary (tools/bench.sh does: cargo build --release -p edge-node -p cascade-bench)",
        program.display()
    );
    Ok(program)
}

/// The python of the peers' venv under `repo` (`tools/setup.sh` makes it), or `None` after
/// saying how to make it: the suite then prints its own figures only.
fn peer_python(repo: &Path) -> Option<PathBuf> {
    let python = repo.join("target/peer-venv/bin/python");
    if python.exists() {
        return Some(python);
    }
    eprintln!(
        "no onnxruntime peer: {} is missing; create it with `tools/setup.sh` (a venv from \
         tools/peer-requirements.txt and tools/kserve-requirements.txt). Printing our figures only.",
        python.display()
    );
    None
}

/// The repository that holds `models/` (the peers' venv and scripts live there).
fn repository(models: &Path) -> PathBuf {
    let repo = models.join("..");
    std::fs::canonicalize(&repo).unwrap_or(repo)
}

fn main() -> anyhow::Result<()> {
    // SAFETY: first thing in main, before tracing, tokio or any model starts a thread.
    let tuning = unsafe { cascade_runtime::configure_cpu_kernels() };
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    tracing::debug!(?tuning, "tract kernel knobs");
    // Figures from different machines must never be compared blind.
    eprintln!("{}", cascade_runtime::machine_report());
    match cli.suite {
        Suite::Sandbox { run, reference } => {
            sandbox::run(&reference.models, &reference.plugin, run.quick)?.print(run.json)
        }
        Suite::Tiers { run, reference, central_backend } => {
            tiers::run(&reference.models, &reference.plugin, &central_backend, run.quick)?.print(run.json)
        }
        Suite::Backends { run, models } => {
            let budget = if run.quick { backends::Budget::QUICK } else { backends::Budget::DEFAULT };
            backends::run(&models, &repository(&models), budget)?.print(run.json)
        }
        Suite::Kernels { run } => kernels::run(run.quick).print(run.json),
        Suite::Loop { run, models, model, batch, seconds } => {
            backends::run_loop(&models, &model, batch, seconds)?.print(run.json)
        }
        Suite::Edge { run, reference } => {
            let repo = repository(&reference.models);
            edge::run(&reference.models, &reference.plugin, &repo, run.quick)?.print(run.json)
        }
        Suite::Faults { run, reference, only, plot } => {
            faults::run(&reference.models, &reference.plugin, run.quick, &only, plot.as_deref())?
                .print(run.json)
        }
        Suite::Device { run, reference, target_dir } => {
            let target_dir = match target_dir {
                Some(dir) => dir,
                None => std::env::current_exe()
                    .context("cannot find this program's path")?
                    .parent()
                    .and_then(Path::parent)
                    .context("this binary is not in a cargo target directory: pass --target-dir")?
                    .to_path_buf(),
            };
            device::run(&reference.models, &reference.plugin, &target_dir, run.quick)?.print(run.json)
        }
    }
    Ok(())
}
