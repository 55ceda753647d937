//! `edge-node demo`: the main job.
//!
//! 1. Evaluates the reference models directly through tract (accuracy, size, FLOPs,
//!    batch-1 latency): what each tier would score alone ([`models`]).
//! 2. Starts a central node and an edge node as real `edge-node serve` processes on
//!    loopback (fresh CA and certificates, the mnist-classifier plugin built from source:
//!    [`tiers`]), streams the test split to the edge over KServe v2 HTTP under a progress
//!    bar ([`stream`]), and reports the tier split, the cascade's accuracy and its latency
//!    per tier ([`summary`]).
//! 3. With `--kill-central-at P`, kills the central process once `P` of the requests are
//!    answered and starts it again a few seconds later on the same ports ([`outage`]); the
//!    requests are then paced so that the outage and the recovery fall inside the run.
//! 4. With `--report FILE`, writes one self-contained HTML page with the run's charts and
//!    the threshold curve measured on the calibration split ([`report`], [`charts`],
//!    [`calibration`]).
//!
//! `--limit` caps every pass over data: the models' scoring, the requests, and the
//! calibration examples behind the report's curve.

mod answer;
mod calibration;
mod charts;
mod models;
mod outage;
mod report;
mod stream;
mod summary;
mod tiers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cascade_runtime::{Digits, Split, reference};
use tokio::sync::watch;

pub use outage::Share;

use self::calibration::ThresholdCurve;
use self::stream::{Progress, Stream};
use self::summary::Summary;
use self::tiers::Tiers;
use crate::deployment::CENTRAL;
use crate::figures::Figures;

/// Longest the demo waits for one HTTP answer before counting the request as failed: well
/// past the route's deadline, so only a node that stopped answering gets there.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Test images used (at most the 2,000 of the split): scored by each model, sent
    /// through the tiers, and as many calibration images behind the report's curve.
    pub limit: usize,
    /// Escalation threshold on the edge (max-probability confidence).
    pub threshold: f64,
    /// Skip the two-tier part (models only).
    pub models_only: bool,
    /// Requests per second sent to the edge; `None`: as fast as the clients go, or with
    /// `kill_central_at` the pace that spreads the rest of the run over the outage and the
    /// recovery.
    pub rate: Option<f64>,
    /// Kill the central node once this share of the requests is answered, and restart it.
    pub kill_central_at: Option<Share>,
    /// Write the HTML report here.
    pub report: Option<PathBuf>,
}

/// What the demo measured.
#[derive(Debug)]
pub struct DemoRun {
    /// Its figures.
    pub figures: Figures,
    /// Requests that got no answer.
    pub failed_requests: usize,
    /// Requests sent through the tiers.
    pub requests: usize,
}

impl DemoRun {
    /// Fails if any request did: the edge must answer every one, degraded if need be.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.failed_requests > 0 {
            bail!("{} of {} requests failed (see above)", self.failed_requests, self.requests);
        }
        Ok(())
    }
}

impl DemoOptions {
    fn validate(&self) -> anyhow::Result<()> {
        if !(0.0..=1.0).contains(&self.threshold) {
            bail!("--threshold {}: expected a confidence from 0 to 1", self.threshold);
        }
        if self.limit == 0 {
            bail!("--limit 0: the demo needs at least one image");
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            bail!("--rate {rate}: expected requests per second above 0");
        }
        if self.models_only && (self.report.is_some() || self.kill_central_at.is_some()) {
            bail!("--models-only runs no tiers: drop it to use --report or --kill-central-at");
        }
        Ok(())
    }
}

/// Runs the demo and returns its figures (and failures, for [`DemoRun::check`]).
pub fn run(options: &DemoOptions) -> anyhow::Result<DemoRun> {
    options.validate()?;
    let test = load(options, Split::Test)?;
    let mut figures = Figures::default();
    let models =
        models::evaluate(&options.models_dir, &test, options.limit, options.latency_samples, &mut figures)?;
    if options.models_only {
        return Ok(DemoRun { figures, failed_requests: 0, requests: 0 });
    }
    eprintln!("== two tiers on loopback: an edge node escalating to a central node over QUIC");
    let tiers = Tiers::prepare(options)?;
    let summary = two_tiers(options, &tiers, &test)?;
    summary.print();
    summary.figures(&mut figures);
    if let Some(file) = &options.report {
        eprintln!("== the threshold curve for the report, from the calibration split");
        let calib = load(options, Split::Calib)?;
        let curve =
            ThresholdCurve::measure(&tiers, &calib, options.limit, options.threshold, summary.requests())?;
        let page =
            report::Page { options, models: &models, summary: &summary, curve: &curve, figures: &figures };
        let html = page.render()?;
        std::fs::write(file, html).with_context(|| format!("writing the report {}", file.display()))?;
        eprintln!("   report written to {}", file.display());
    }
    Ok(DemoRun { figures, failed_requests: summary.failed(), requests: summary.requests() })
}

fn load(options: &DemoOptions, split: Split) -> anyhow::Result<Digits> {
    Digits::load_split(&options.models_dir, split)
        .with_context(|| format!("loading the {split:?} split from {}", options.models_dir.display()))
}

/// Starts both tiers, streams the test images to the edge (killing and restarting the
/// central node on the way if asked), and stops them again.
fn two_tiers(options: &DemoOptions, tiers: &Tiers, test: &Digits) -> anyhow::Result<Summary> {
    let n = options.limit.min(test.len());
    let rate =
        options.rate.or_else(|| options.kill_central_at.map(|share| outage::rate_to_see_recovery(n, share)));
    let stream = Stream {
        url: tiers.edge_url(),
        images: Arc::new(test.clone()),
        n,
        concurrency: options.concurrency.max(1),
        rate,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let (records, outage, nodes) = runtime.block_on(async {
        let client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build()?;
        let central = tiers.start_central(&client, CENTRAL).await?;
        let edge = tiers.start_edge(&client).await?;
        eprintln!(
            "   central on http {} / quic {}, edge on http {}",
            tiers.central_http, tiers.central_quic, tiers.edge_http
        );
        if let Some(rate) = rate {
            eprintln!("   sending {n} requests at {rate:.1} per second (about {:.0} s)", n as f64 / rate);
        }
        let progress = Arc::new(Progress::new(n));
        let (answered, answers_seen) = watch::channel(0usize);
        let clock = Instant::now();
        let send = async {
            let answered = Arc::new(answered);
            // Dropping the last sender when the stream ends tells a waiting outage to give up.
            stream::run(&stream, &client, clock, &progress, &answered).await
        };
        let (records, outage, central) = match options.kill_central_at {
            None => (send.await?, None, central),
            Some(share) => {
                let say = |line: String| progress.say(line);
                let kill = outage::kill_and_restart(tiers, central, share.of(n), answers_seen, clock, say);
                let (records, killed) = tokio::join!(send, kill);
                let (central, outage) = killed?;
                (records?, Some(outage), central)
            }
        };
        progress.finish();
        anyhow::Ok((records, outage, (edge, central)))
    })?;
    drop(nodes);
    Ok(Summary::new(records, test, outage, stream.concurrency, rate))
}
