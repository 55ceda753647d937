//! Both tiers' answers for every example of a split, with a progress bar.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cascade_runtime::calibrate::{Example, Observed, Tier};
use cascade_runtime::config::{ModelSpec, ResolvedConfig, ResolvedModel, RouteSettings};
use cascade_runtime::contract;
use cascade_runtime::protocol::{EscalationRequest, NamedTensor};
use cascade_runtime::upstream::UpstreamClient;
use cascade_runtime::{BackendKind, Digits, ReferenceModel, Tensor, reference};
use indicatif::{ProgressBar, ProgressStyle};

use super::CalibrateArgs;

/// One example: what the edge said, what the upstream said, and the label.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The edge's answer, or its plugin's error.
    pub edge: Result<Observed, String>,
    /// The upstream's label (`None`: it gave none, or failed).
    pub upstream: Option<String>,
    /// How long the upstream took.
    pub upstream_took: Duration,
    /// The example's label.
    pub truth: String,
}

impl Observation {
    /// The example as the calibration sees it, with confidence by `measure`; with
    /// `agreement`, the upstream's answer stands in for the label. `None` if the edge has
    /// no value for the measure.
    pub fn example(&self, measure: &str, agreement: bool) -> Option<Example> {
        let (confidence, edge_label) = match &self.edge {
            Ok(o) => (o.measure(measure)?, o.label.as_deref()),
            // A plugin that failed keeps nothing at the edge: it always escalates.
            Err(_) => (f64::NEG_INFINITY, None),
        };
        let upstream = self.upstream.as_deref();
        let truth = if agreement { upstream } else { Some(self.truth.as_str()) };
        let edge_right = edge_label.is_some() && edge_label == truth;
        Some(Example {
            confidence,
            edge_right,
            upstream_right: upstream.is_some() && upstream == truth,
            agree: edge_label.is_some() && edge_label == upstream,
            weight: 1.0,
        })
    }
}

/// Where the upstream's answers come from.
enum Upstream {
    /// A bigger model run here behind the same plugin.
    Local(Tier),
    /// The configured upstream, live, its answers read through the route's contract.
    Live(Box<UpstreamClient>, tokio::runtime::Runtime, String, Box<RouteSettings>),
}

/// The edge tier and the upstream.
pub(super) struct Tiers {
    route: String,
    edge: Tier,
    upstream: Upstream,
    described: String,
}

impl Tiers {
    /// The route's edge tier, and the upstream `args` asks for (`reference`: the reference
    /// pair, whose upstream is the reference central model).
    pub(super) fn new(
        config: &ResolvedConfig,
        route: &str,
        args: &CalibrateArgs,
        reference: bool,
    ) -> anyhow::Result<Tiers> {
        let edge = Tier::new(config, route, None)?;
        let central_file = match (&args.central_model, reference) {
            (Some(file), _) => Some(file.clone()),
            (None, true) => Some(ReferenceModel::CentralFp32.path(&reference::default_models_dir())),
            (None, false) => None,
        };
        let (upstream, described) = match central_file {
            Some(file) => {
                let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                let spec = ModelSpec {
                    path: file.clone(),
                    backend: BackendKind::Tract,
                    fallback_to_tract: true,
                    pinned: None,
                    inputs: Default::default(),
                };
                let tier = Tier::new(config, route, Some(&ResolvedModel::new(spec, bytes)))?;
                (
                    Upstream::Local(tier),
                    format!("the upstream: {} run here behind the same plugin", file.display()),
                )
            }
            None => {
                let Some(settings) = &config.settings.upstream else {
                    bail!(
                        "{}: no [upstream] to compare with; pass --central-model FILE to run a bigger model here",
                        config.file.display()
                    );
                };
                let runtime = tokio::runtime::Runtime::new()?;
                let client = runtime.block_on(async { UpstreamClient::from_settings(settings) })?;
                let name = settings.server_name.clone();
                let route_settings = config
                    .settings
                    .routes
                    .get(route)
                    .with_context(|| format!("no route `{route}` in {}", config.file.display()))?;
                (
                    Upstream::Live(Box::new(client), runtime, name.clone(), Box::new(route_settings.clone())),
                    format!("the upstream: {name}, live"),
                )
            }
        };
        Ok(Tiers { route: route.to_owned(), edge, upstream, described })
    }

    /// Which upstream answered.
    pub(super) fn describe(&self) -> String {
        self.described.clone()
    }

    /// Both tiers on every image of `split` (named `what` in the progress bar).
    pub(super) fn observe(&self, split: &Digits, what: &str) -> anyhow::Result<Vec<Observation>> {
        let bar = ProgressBar::new(split.len() as u64).with_message(what.to_owned());
        bar.set_style(
            ProgressStyle::with_template("{msg:>18} [{bar:40}] {pos}/{len} ({eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let mut out = Vec::with_capacity(split.len());
        for i in 0..split.len() {
            let inputs = vec![("image".to_owned(), Tensor::from_u8(vec![28, 28], split.image(i).to_vec())?)];
            let edge = self.edge.run(&inputs);
            let started = Instant::now();
            let upstream = self.upstream_label(i as u64, inputs)?;
            out.push(Observation {
                edge,
                upstream,
                upstream_took: started.elapsed(),
                truth: split.label(i).to_string(),
            });
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(out)
    }

    fn upstream_label(&self, id: u64, inputs: Vec<(String, Tensor)>) -> anyhow::Result<Option<String>> {
        Ok(match &self.upstream {
            // The upstream stands for the truth the edge is measured against: an answer it
            // could not give would count as a wrong upstream answer and bend every figure.
            Upstream::Local(tier) => match tier.run(&inputs) {
                Ok(observed) => observed.label,
                Err(e) => bail!("the upstream model failed on example {id}: {e}"),
            },
            Upstream::Live(client, runtime, name, settings) => {
                let request = EscalationRequest {
                    id,
                    route: self.route.clone(),
                    inputs: inputs.into_iter().map(|(name, tensor)| NamedTensor { name, tensor }).collect(),
                    budget_us: cascade_runtime::protocol::budget_us(Duration::from_secs(5)),
                    trace: None,
                    node_id: "calibrate".into(),
                    local_confidence: None,
                };
                let answer = match runtime.block_on(client.escalate(&request)) {
                    Ok(answer) => contract::upstream_answer(settings, answer).map_err(|why| {
                        anyhow::anyhow!("the upstream {name}'s answer does not fit the route: {why}")
                    })?,
                    Err(e) => bail!("the upstream {name} did not answer: {e}"),
                };
                match answer.label {
                    Some(label) => Some(label),
                    None => bail!(
                        "the upstream {name} answers with no label to compare: set `label` in [routes.{}.from_upstream]",
                        self.route
                    ),
                }
            }
        })
    }
}
