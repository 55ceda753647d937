//! `edge-node`: the Cascade node binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use edge_node::{certs_cmd, demo, tiers_bench};

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
    /// Create a deployment CA and node certificates for mutual TLS between tiers.
    Certs {
        #[command(subcommand)]
        command: certs_cmd::CertsCommand,
    },
    /// Run a benchmark suite and print its figures (see shared/BENCH.md).
    Bench {
        /// Suite to run: `tiers`.
        suite: String,
        /// Print one JSON figure per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Fewer samples (under 60 s).
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Demo { json, models, latency_samples } => {
            demo::run(&models, latency_samples)?.print(json);
        }
        Command::Certs { command } => {
            for path in certs_cmd::run(command)? {
                println!("wrote {}", path.display());
            }
        }
        Command::Bench { suite, json, quick } => match suite.as_str() {
            "tiers" => tiers_bench::run(quick)?.print(json),
            other => anyhow::bail!("unknown bench suite {other:?} (known: tiers)"),
        },
    }
    Ok(())
}
