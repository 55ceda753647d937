//! The threshold curve in the report: what every edge threshold would do, estimated on the
//! calibration split (never the test split the run uses) with both tiers' real plugin and
//! models run in process by `cascade_runtime::calibrate::Tier`, as `edge-node calibrate`
//! runs them; and the demo's threshold on it, with a 90% prediction interval for a run of
//! the demo's size.

use anyhow::Context;
use cascade_runtime::calibrate::{Bootstrap, Estimate, Example, Tier};
use cascade_runtime::reference::ROUTE;
use cascade_runtime::{Digits, Tensor};
use indicatif::{ProgressBar, ProgressStyle};

use super::tiers::Tiers;

/// Bootstrap resamples behind the interval (as `edge-node calibrate` uses).
const RESAMPLES: usize = 1000;
/// The resampling's seed: the same examples give the same interval.
const SEED: u64 = 1;

/// The curve and the demo's point on it.
pub(super) struct ThresholdCurve {
    /// The calibration examples and their resamples.
    pub(super) bootstrap: Bootstrap,
    /// The edge's threshold in the run.
    pub(super) threshold: f64,
    /// Its figures on the examples, with 90% prediction intervals for as many new requests
    /// as the run sent.
    pub(super) predicted: Estimate,
}

impl ThresholdCurve {
    /// Runs the edge's and the central node's plugin and model over the first `limit`
    /// images of `calib`, and places `threshold` on the curve for a run of `run_size`.
    pub(super) fn measure(
        tiers: &Tiers,
        calib: &Digits,
        limit: usize,
        threshold: f64,
        run_size: usize,
    ) -> anyhow::Result<ThresholdCurve> {
        let (edge_config, central_config) = tiers.resolved()?;
        let edge = Tier::new(&edge_config, ROUTE, None).context("loading the edge's plugin in process")?;
        let central = Tier::new(&central_config, ROUTE, None)
            .context("loading the central node's plugin in process")?;
        let n = limit.min(calib.len());
        let bar = ProgressBar::new(n as u64).with_prefix("calibration");
        bar.set_style(
            ProgressStyle::with_template("   {prefix} [{bar:30}] {pos}/{len} (both tiers, in process)")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        let mut examples = Vec::with_capacity(n);
        for i in 0..n {
            let inputs = vec![("image".to_owned(), Tensor::from_u8(vec![28, 28], calib.image(i).to_vec())?)];
            let truth = calib.label(i).to_string();
            let edge_said = edge.run(&inputs);
            let central_label = central.run(&inputs).ok().and_then(|o| o.label);
            let (confidence, edge_label) = match &edge_said {
                Ok(o) => (f64::from(o.confidence), o.label.as_deref()),
                // A plugin that failed keeps nothing at the edge: the request escalates.
                Err(_) => (f64::NEG_INFINITY, None),
            };
            let central_label = central_label.as_deref();
            examples.push(Example {
                confidence,
                edge_right: edge_label == Some(truth.as_str()),
                upstream_right: central_label == Some(truth.as_str()),
                agree: edge_label.is_some() && edge_label == central_label,
                weight: 1.0,
            });
            bar.inc(1);
        }
        bar.finish_and_clear();
        let bootstrap = Bootstrap::new(&examples, RESAMPLES, SEED);
        let predicted = bootstrap.predict(threshold, run_size);
        Ok(ThresholdCurve { bootstrap, threshold, predicted })
    }

    /// Calibration examples behind the curve.
    pub(super) fn examples(&self) -> usize {
        self.bootstrap.curve().len()
    }
}
