//! `edge-node`: the Cascade node binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use edge_node::{bench_backends, demo};

#[derive(Parser)]
#[command(name = "edge-node", version, about = "Cascade: a CDN for inference")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: run the reference data through the reference models and print figures.
    Demo {
        /// Print one JSON figure per line (see shared/BENCH.md) instead of a table.
        #[arg(long)]
        json: bool,
        /// Directory holding the reference models and data splits.
        #[arg(long, default_value_os_t = cascade_runtime::reference::default_models_dir())]
        models: PathBuf,
        /// Batch-1 runs timed per model for the latency median.
        #[arg(long, default_value_t = 500)]
        latency_samples: usize,
    },
    /// Benchmark suites (see shared/BENCH.md).
    Bench {
        #[command(subcommand)]
        suite: BenchSuite,
    },
}

#[derive(Subcommand)]
enum BenchSuite {
    /// Reference models x backends x batch sizes, against onnxruntime in the same run.
    Backends {
        /// Print one JSON figure per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Fewer samples (under 60 s).
        #[arg(long)]
        quick: bool,
        /// Directory holding the reference models and data splits.
        #[arg(long, default_value_os_t = cascade_runtime::reference::default_models_dir())]
        models: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    // SAFETY: first thing in main, before tracing, tokio or any model starts a thread.
    let tuning = unsafe { cascade_runtime::configure_cpu_kernels() };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    tracing::debug!(?tuning, "tract kernel knobs");
    match Cli::parse().command {
        Command::Demo { json, models, latency_samples } => {
            demo::run(&models, latency_samples)?.print(json);
        }
        Command::Bench { suite: BenchSuite::Backends { json, quick, models } } => {
            let budget = if quick { bench_backends::Budget::QUICK } else { bench_backends::Budget::DEFAULT };
            // The peer venv and helper live in the repository that holds `models/`.
            let repo = models.join("..");
            let repo = std::fs::canonicalize(&repo).unwrap_or(repo);
            bench_backends::run(&models, &repo, budget)?.print(json);
        }
    }
    Ok(())
}
