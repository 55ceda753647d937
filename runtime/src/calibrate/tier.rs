//! One tier, run in process over examples: a route's plugin in its sandbox with the models
//! the config gives it, as the node would run it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::config::{ResolvedConfig, ResolvedModel};
use crate::models::{ModelError, ModelStore};
use crate::sandbox::{LoadError, Outcome, Request, Sandbox, SandboxConfig};
use crate::tensor::{DType, Tensor, confidence};

/// The least time a plugin gets per example while calibrating (its serving deadline may be
/// shorter): a slow answer on a busy machine is still an answer.
const OFFLINE_DEADLINE: Duration = Duration::from_secs(30);

/// Why a tier could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// The config has no such route.
    #[error("the config has no route `{0}`")]
    UnknownRoute(String),
    /// A model could not be prepared.
    #[error("{0}")]
    Model(#[from] ModelError),
    /// The sandbox or the plugin could not be set up.
    #[error("{0}")]
    Sandbox(#[from] LoadError),
}

/// What a tier said about one example.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The answer's label; `None` if the plugin escalated or gave none.
    pub label: Option<String>,
    /// The plugin's confidence (0 when it escalated without an answer).
    pub confidence: f32,
    /// The answer's class probabilities, if one of its outputs is a probability vector:
    /// what the other confidence measures are computed from.
    pub probabilities: Option<Vec<f32>>,
    /// How long the plugin took, model included.
    pub took: Duration,
}

impl Observed {
    /// The confidence by `measure`: `plugin` (what the plugin reported), `max_probability`,
    /// `margin` or `entropy` (from its probabilities; `None` without them).
    pub fn measure(&self, measure: &str) -> Option<f64> {
        let p = self.probabilities.as_deref();
        let value = match measure {
            "plugin" => self.confidence,
            "max_probability" => confidence::max_probability(p?),
            "margin" => confidence::margin(p?),
            "entropy" => confidence::entropy_confidence(p?),
            _ => return None,
        };
        Some(f64::from(value))
    }
}

/// A route's plugin in a sandbox of its own.
#[derive(Debug)]
pub struct Tier {
    sandbox: Sandbox,
    route: String,
    plugin: String,
    // Held so the prepared models live as long as the tier.
    _models: ModelStore,
}

impl Tier {
    /// Route `route` of `config`; with `replace`, every model the route's plugin may call is
    /// that model instead (the central tier's bigger model behind the same plugin).
    pub fn new(
        config: &ResolvedConfig,
        route: &str,
        replace: Option<&ResolvedModel>,
    ) -> Result<Tier, TierError> {
        let settings =
            config.settings.routes.get(route).ok_or_else(|| TierError::UnknownRoute(route.to_owned()))?;
        let plugin =
            config.plugins.get(&settings.plugin).ok_or_else(|| TierError::UnknownRoute(route.to_owned()))?;
        let models: BTreeMap<String, ResolvedModel> = match replace {
            Some(model) => plugin.spec.models.iter().map(|name| (name.clone(), model.clone())).collect(),
            None => config.models.clone(),
        };
        // Calibration runs offline: a busy machine must not turn a slow answer into a failed
        // one, so the plugin gets a generous deadline instead of its serving one.
        let mut plugin = plugin.clone();
        plugin.spec.deadline = plugin.spec.deadline.max(OFFLINE_DEADLINE);
        let store = ModelStore::load(&models, None)?;
        let sandbox = Sandbox::new(SandboxConfig { guest_logs: false, ..SandboxConfig::default() })?;
        sandbox.load_plugin(&settings.plugin, &plugin, &store)?;
        Ok(Tier { sandbox, route: route.to_owned(), plugin: settings.plugin.clone(), _models: store })
    }

    /// Runs the plugin on one example's inputs. A plugin error is this example's, as text.
    pub fn run(&self, inputs: &[(String, Tensor)]) -> Result<Observed, String> {
        let started = Instant::now();
        let outcome = self
            .sandbox
            .handle(&self.plugin, Request { route: &self.route, inputs, parameters: &[] })
            .map_err(|e| e.to_string())?;
        let took = started.elapsed();
        Ok(match outcome {
            Outcome::Escalate(_) => Observed { label: None, confidence: 0.0, probabilities: None, took },
            Outcome::Answer(a) => Observed {
                probabilities: a.outputs.iter().find_map(|(_, t)| probabilities(t)),
                label: a.label,
                confidence: a.confidence,
                took,
            },
        })
    }
}

/// The values of `t` if it is one probability vector (`[k]` or `[1, k]` f32, k ≥ 2,
/// non-negative, summing to 1).
fn probabilities(t: &Tensor) -> Option<Vec<f32>> {
    let one_row = matches!(t.shape(), [k] | [1, k] if *k >= 2);
    if t.dtype() != DType::F32 || !one_row {
        return None;
    }
    let v = t.to_f32().ok()?;
    let sum: f32 = v.iter().sum();
    (v.iter().all(|&p| p >= 0.0) && (sum - 1.0).abs() < 1e-3).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_probability_vector_gives_the_other_measures() {
        let p = Tensor::from_f32(vec![1, 3], &[0.7, 0.2, 0.1]).unwrap();
        assert_eq!(probabilities(&p).unwrap().len(), 3);
        assert!(probabilities(&Tensor::from_f32(vec![1, 2], &[3.0, -1.0]).unwrap()).is_none());
        assert!(probabilities(&Tensor::from_f32(vec![2, 2], &[0.5; 4]).unwrap()).is_none());
        let o =
            Observed { label: None, confidence: 0.7, probabilities: probabilities(&p), took: Duration::ZERO };
        assert!((o.measure("margin").unwrap() - 0.5).abs() < 1e-6);
        assert_eq!(o.measure("plugin"), Some(f64::from(0.7f32)));
        assert_eq!(o.measure("nonsense"), None);
    }
}
