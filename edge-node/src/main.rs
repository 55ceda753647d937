//! `edge-node`: the Cascade node binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use edge_node::certs_cmd;
use edge_node::demo::{self, Reference};

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
        /// Print one JSON figure per line (`{"figure", "value", "unit"}`) instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        reference: Reference,
        /// Batch-1 runs timed per model for the latency median.
        #[arg(long, default_value_t = 500)]
        latency_samples: usize,
        /// Concurrent HTTP clients driving the edge node.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Test images used (the split has 2,000): scored by each model alone, sent through the
        /// two tiers, and as many calibration images behind the report's threshold curve.
        #[arg(long, default_value_t = 2000)]
        limit: usize,
        /// The edge's escalation threshold (max-probability confidence below it escalates).
        #[arg(long, default_value_t = 0.9)]
        threshold: f64,
        /// Only evaluate the models; do not start the two tiers.
        #[arg(long)]
        models_only: bool,
        /// Write the run as one self-contained HTML page (inline SVG charts, no network).
        #[arg(long, value_name = "FILE.html")]
        report: Option<PathBuf>,
        /// Kill the central node (SIGKILL) once this share of the requests is answered, and
        /// restart it a few seconds later on the same ports: `50%` or `0.5`.
        #[arg(long, value_name = "P")]
        kill_central_at: Option<demo::Share>,
        /// Requests per second sent to the edge (default: as fast as the clients go; with
        /// --kill-central-at, a pace that spreads the rest of the run over the outage and
        /// the recovery).
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Choose a route's escalation thresholds from evidence: what each threshold does on a
    /// labelled set, a recommendation per mode with 90% intervals, checked on held-out data.
    Calibrate(edge_node::calibrate_cmd::CalibrateArgs),
    /// Validate a node config and read its model and plugin files, without serving.
    Check {
        /// The node's TOML config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Create a deployment CA and node certificates for mutual TLS between tiers.
    Certs {
        #[command(subcommand)]
        command: certs_cmd::CertsCommand,
    },
    /// Guest plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Serve a node: KServe v2 over HTTP, and escalations over QUIC if the config listens.
    Serve {
        /// The node's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// Shut down (draining) once standard input closes: for a program that starts this
        /// node as its child (the demo, the benches) and holds the other end of the pipe,
        /// so the node never outlives it, however it ends.
        #[arg(long)]
        exit_with_parent: bool,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Compile a guest crate into a component; print its size and sha256.
    Build {
        /// The plugin crate (a cdylib using cascade-guest-sdk).
        crate_dir: PathBuf,
        /// Where to write the component (default: `<crate dir name>.wasm`).
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Shared build directory for guests (default: the workspace's target/wasm-guests).
        #[arg(long)]
        target_dir: Option<PathBuf>,
        /// Also write the plugin precompiled for this target (`x86_64-unknown-linux-gnu`,
        /// `aarch64-unknown-linux-gnu`, ...), as `<out>.<target>.cwasm`: what a node built
        /// without the compiler (the device build) loads.
        #[arg(long)]
        target: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    // SAFETY: first thing in main, before tracing, tokio or any model starts a thread.
    let tuning = unsafe { cascade_runtime::configure_cpu_kernels() };
    let cli = Cli::parse();
    // `RUST_LOG` wins; otherwise a node logs as its config's `[telemetry] log` says (read
    // here, once, at start), and every other command at the `error` level.
    let filter = match (std::env::var_os("RUST_LOG"), &cli.command) {
        (None, Command::Serve { config, .. }) => {
            let level = cascade_runtime::config::load(config).map(|c| c.settings.telemetry.log.clone());
            let level = level.as_deref().unwrap_or("info");
            tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|e| {
                eprintln!(
                    "{}: telemetry.log = {level:?} is not a log filter ({e}); logging at `info`. \
                     Valid: a level (`debug`) or `target=level` pairs (`info,cascade_runtime=debug`)",
                    config.display()
                );
                tracing_subscriber::EnvFilter::new("info")
            })
        }
        _ => tracing_subscriber::EnvFilter::from_default_env(),
    };
    // Colour only on a terminal: a log file or journald should not get escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    tracing::debug!(?tuning, "tract kernel knobs");
    match cli.command {
        Command::Demo {
            json,
            reference: Reference { models, plugin },
            latency_samples,
            concurrency,
            limit,
            threshold,
            models_only,
            report,
            kill_central_at,
            rate,
        } => {
            let options = demo::DemoOptions {
                models_dir: models,
                plugin_crate: plugin,
                latency_samples,
                concurrency,
                limit,
                threshold,
                models_only,
                rate,
                kill_central_at,
                report,
            };
            let run = demo::run(&options)?;
            // The figures first, failures included, then the verdict.
            run.figures.print(json);
            run.check()?;
        }
        Command::Calibrate(args) => {
            let json = args.json;
            edge_node::calibrate_cmd::run(&args)?.print(json);
        }
        Command::Check { config } => {
            if !edge_node::check_cmd::main(&config) {
                std::process::exit(1);
            }
        }
        Command::Plugin(PluginCommand::Build { crate_dir, out, target_dir, target }) => {
            edge_node::plugin_cmd::run_build(&crate_dir, out, target_dir.as_deref(), target.as_deref())?;
        }
        Command::Certs { command } => {
            for path in certs_cmd::run(command)? {
                println!("wrote {}", path.display());
            }
        }
        Command::Serve { config, exit_with_parent } => {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(edge_node::serve::run(&config, exit_with_parent))?;
        }
    }
    Ok(())
}
