//! `edge-node calibrate`: escalation thresholds from evidence.
//!
//! Runs a route's real plugin in its sandbox over a labelled set (the committed calibration
//! split by default) and gets the upstream's answer for the same inputs: from the configured
//! upstream, live, or from `--central-model FILE` run locally through the same plugin. With
//! no `--config` it calibrates the reference pair (the demo's edge and central models behind
//! `examples/mnist-classifier`). It prints what each threshold does, recommends one per mode
//! for the goal (the threshold at which the goal holds in at least 90% of bootstrap
//! resamples), checks the choice on the held-out test split, and compares confidence
//! measures by AUROC; `--coverage N` checks, over N random re-splits, that the 90% intervals
//! hold about 90% of the time. `--from-shadow` does the same from a node's shadow records, without
//! labels.

mod collect;
mod plot;
mod report;

use std::path::PathBuf;

use anyhow::{Context, bail};
use cascade_runtime::calibrate::{Bootstrap, Example, Goal};
use cascade_runtime::config::{self, ResolvedConfig};
use cascade_runtime::reference::{self, ROUTE, ReferenceNode};
use cascade_runtime::{Digits, Mode, ReferenceModel, Split, shadow};

use crate::figures::Figures;

pub use collect::Observation;

/// Bootstrap resamples behind every interval.
const RESAMPLES: usize = 1000;

/// What `edge-node calibrate` was asked.
#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateArgs {
    /// The node's config (default: the reference pair).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The route to calibrate (default: `digits`, the reference deployment's).
    #[arg(long, default_value = ROUTE)]
    pub route: String,
    /// Directory holding the labelled splits (`data/calib-*`, `data/test-*` in the MNIST idx
    /// layout of `models/`).
    #[arg(long, default_value_os_t = reference::default_models_dir())]
    pub data: PathBuf,
    /// Run this ONNX model locally as the upstream, behind the route's plugin (default with
    /// a config: its live upstream; without one: the reference central model).
    #[arg(long)]
    pub central_model: Option<PathBuf>,
    /// The goal: the most answers at the edge with the cascade's accuracy at least this
    /// (a fraction).
    #[arg(long, group = "goal")]
    pub target_accuracy: Option<f64>,
    /// The goal: the most answers at the edge losing at most this much accuracy against the
    /// upstream alone (a fraction: 0.0015 is 0.15 point). The default, at 0.0015.
    #[arg(long, group = "goal")]
    pub max_loss: Option<f64>,
    /// The goal: the best accuracy escalating at most this share of requests.
    #[arg(long, group = "goal")]
    pub max_escalation: Option<f64>,
    /// Use the upstream's answer in place of the label (for data without labels).
    #[arg(long)]
    pub agreement: bool,
    /// Calibrate from a node's shadow records instead (the config's `[shadow] store`, or
    /// this file): agreement with its upstream, no labels needed.
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    pub from_shadow: Option<PathBuf>,
    /// Draw edge share against accuracy, the chosen point and its interval: SVG or PNG,
    /// by the file's extension.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Also check the intervals themselves: re-split the calibration and test examples at
    /// random this many times, calibrate on one part and check on the other, and report how
    /// often each realised figure fell inside its 90% interval.
    #[arg(long, default_value_t = 0)]
    pub coverage: usize,
    /// Print the headline as one JSON figure per line.
    #[arg(long)]
    pub json: bool,
    /// The plugin crate of the reference pair.
    #[arg(long, default_value_os_t = reference::default_models_dir().join("../examples/mnist-classifier"))]
    pub plugin: PathBuf,
}

impl CalibrateArgs {
    fn goal(&self) -> anyhow::Result<Goal> {
        let check = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(v)
            } else {
                bail!("--{name} {v}: expected a fraction from 0 to 1")
            }
        };
        Ok(match (self.target_accuracy, self.max_loss, self.max_escalation) {
            (Some(a), _, _) => Goal::TargetAccuracy(check("target-accuracy", a)?),
            (_, _, Some(e)) => Goal::MaxEscalation(check("max-escalation", e)?),
            (_, loss, _) => Goal::MaxLoss(check("max-loss", loss.unwrap_or(0.0015))?),
        })
    }
}

/// What a calibration found: its figures, and the report already printed to stderr.
pub fn run(args: &CalibrateArgs) -> anyhow::Result<Figures> {
    let goal = args.goal()?;
    let (config, _dir) = match &args.config {
        Some(file) => (config::load(file)?.resolve()?, None),
        None => {
            let (config, dir) = reference_pair(args)?;
            (config, Some(dir))
        }
    };
    if !config.settings.routes.contains_key(&args.route) {
        let known: Vec<&String> = config.settings.routes.keys().collect();
        bail!("{}: no route `{}`; the config has {known:?}", config.file.display(), args.route);
    }
    let budgets = Mode::ALL.map(|m| config.settings.modes.switches(m).escalation_budget.per_second);
    if let Some(store) = &args.from_shadow {
        return from_shadow(args, &config, store, goal, budgets);
    }
    let tiers = collect::Tiers::new(&config, &args.route, args, args.config.is_none())?;
    let calib = load(args, Split::Calib)?;
    let test = load(args, Split::Test)?;
    let calib = tiers.observe(&calib, "calibration split")?;
    let test = tiers.observe(&test, "test split")?;
    let mut report = report::Report::new(&calib, &test, args.agreement, goal, budgets, RESAMPLES);
    if args.coverage > 0 {
        report.measure_coverage(&calib, &test, args.agreement, args.coverage, RESAMPLES);
    }
    report.print(&args.route, tiers.describe());
    if let Some(file) = &args.plot {
        plot::draw(file, &report).with_context(|| format!("drawing {}", file.display()))?;
        eprintln!("plot written to {}", file.display());
    }
    Ok(report.figures())
}

fn load(args: &CalibrateArgs, split: Split) -> anyhow::Result<Digits> {
    Digits::load_split(&args.data, split)
        .with_context(|| format!("loading the {split:?} split from {}", args.data.display()))
}

/// The reference pair: the edge model behind the mnist-classifier plugin (built here), and
/// the central model, in a config written to a temporary directory.
fn reference_pair(args: &CalibrateArgs) -> anyhow::Result<(ResolvedConfig, tempfile::TempDir)> {
    let dir = tempfile::Builder::new().prefix("cascade-calibrate-").tempdir()?;
    let plugin = dir.path().join("mnist_classifier.wasm");
    crate::plugin_cmd::build(&args.plugin, &plugin, None)?;
    let models = reference::default_models_dir();
    let node = ReferenceNode::new("edge", &ReferenceModel::EdgeInt8.path(&models), &plugin);
    let file = dir.path().join("edge.toml");
    let config = node.config().write(&file)?.resolve()?;
    Ok((config, dir))
}

/// Calibration from the shadow records in `store` (empty: the config's store).
fn from_shadow(
    args: &CalibrateArgs,
    config: &ResolvedConfig,
    store: &std::path::Path,
    goal: Goal,
    budgets: [f64; 3],
) -> anyhow::Result<Figures> {
    let file = if store.as_os_str().is_empty() {
        match &config.settings.shadow {
            Some(s) => s.store.clone(),
            None => {
                bail!("{}: no `[shadow]` section; pass the store: --from-shadow FILE", config.file.display())
            }
        }
    } else {
        store.to_path_buf()
    };
    let records = shadow::read_recent(&file, &args.route, usize::MAX)?;
    if records.is_empty() {
        bail!("{}: no shadow records for route `{}` yet", file.display(), args.route);
    }
    let examples: Vec<Example> = records.iter().map(shadow::Record::example).collect();
    let bootstrap = Bootstrap::new(&examples, RESAMPLES, 1);
    let report = report::Report::from_bootstrap(bootstrap, goal, budgets);
    let described = format!("{} shadow records from {}", records.len(), file.display());
    report.print(&args.route, described);
    if let Some(plot) = &args.plot {
        plot::draw(plot, &report).with_context(|| format!("drawing {}", plot.display()))?;
    }
    Ok(report.figures())
}
