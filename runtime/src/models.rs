//! The node's models: one store, prepared once from the resolved config, that the sandbox,
//! metadata and `edge-node check` all read.
//!
//! Preparing a model is where the backend is chosen, in one place:
//! - `backend = "tract"`: tract.
//! - `backend = "wgpu"`: the process's wgpu device. With `fallback_to_tract` (the default)
//!   the model runs on tract instead when wgpu cannot run it (no adapter, an op its kernels
//!   do not cover), and also when the only adapter is a software one (lavapipe): there tract
//!   runs the same model far faster (`cascade-bench backends` measures both). A file that does
//!   not parse is refused on either backend: it would not parse on tract either.
//!
//! The bytes prepared are the config's [`ResolvedModel::bytes`], exactly those whose digest
//! was checked when the config was resolved: nothing is read from disk again. Input shapes
//! the config fixes (`[models.X.inputs.Y]`) go to the backend with them. With
//! `[batching]`, each model is wrapped in a [`BatchedModel`].

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::backend::tract::TractBackend;
#[cfg(feature = "gpu")]
use crate::backend::wgpu::WgpuBackend;
use crate::backend::{Backend, BackendError, BackendKind, PrepareOptions, PreparedModel};
use crate::batcher::{BatchObserver, BatchSettings, BatchedModel};
use crate::config::{Digest, ResolvedModel};

/// Why a build without the `gpu` feature runs no model on wgpu.
#[cfg(not(feature = "gpu"))]
const NO_GPU_BUILD: &str = "this build has no GPU support (edge-node built without its `gpu` feature)";

/// Why a model could not be prepared. Every message names the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The backend that had to run it refused it (parse error, unsupported op, device).
    #[error("{0}")]
    Backend(#[from] BackendError),
    /// wgpu cannot run it and the config does not let it fall back to tract.
    #[error(
        "model {model}: the wgpu backend cannot run it ({why}); set fallback_to_tract = true to run it on tract"
    )]
    NoFallback {
        /// Model name.
        model: String,
        /// Why wgpu cannot.
        why: String,
    },
}

/// A prepared model and how it came to run where it runs.
#[derive(Debug)]
pub struct LoadedModel {
    /// Name in the config.
    pub name: String,
    /// sha256 of the bytes it was prepared from: its version.
    pub digest: Digest,
    /// The backend that runs it (tract after a fallback).
    pub backend: BackendKind,
    /// Why it does not run on the configured backend, after a fallback.
    pub fallback: Option<String>,
    /// The model itself.
    pub model: Arc<dyn PreparedModel>,
}

impl LoadedModel {
    /// One line per input and output for `edge-node check`: name, element type and shape,
    /// `batch` first.
    pub fn describe_tensors(&self) -> Vec<String> {
        let info = self.model.info();
        let inputs = info.inputs.iter().map(|t| format!("input {}", t.describe()));
        inputs.chain(info.outputs.iter().map(|t| format!("output {}", t.describe()))).collect()
    }

    /// One line for `edge-node check`: the backend that runs the model and its arithmetic.
    pub fn describe(&self) -> String {
        let precision = self.model.info().precision.describe();
        let fallback = self.fallback.as_deref().map(|why| format!("{why}; falls back: ")).unwrap_or_default();
        match self.backend {
            BackendKind::Tract => format!("{fallback}runs on tract, {precision}"),
            #[cfg(not(feature = "gpu"))]
            BackendKind::Wgpu => unreachable!("a build without the gpu feature runs no model on wgpu"),
            #[cfg(feature = "gpu")]
            BackendKind::Wgpu => {
                let adapter = WgpuBackend::shared()
                    .map(|gpu| {
                        let a = gpu.adapter();
                        let cpu =
                            if a.is_cpu { ", a CPU adapter: GPU speed is not measured here" } else { "" };
                        format!(" ({} via {}{cpu})", a.name, a.api)
                    })
                    .unwrap_or_default();
                format!("runs on wgpu{adapter}, {precision}")
            }
        }
    }
}

/// How prepared models are batched (`[batching]`): the settings every model's batcher shares
/// (a mode switch changes their delay) and who sees each batch's size.
#[derive(Clone)]
pub struct Batching {
    /// Shared batcher settings.
    pub settings: BatchSettings,
    /// Called with each batch's model and size (a metrics histogram).
    pub observer: Option<BatchObserver>,
}

impl std::fmt::Debug for Batching {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batching").field("settings", &self.settings).finish()
    }
}

/// The node's models by name.
#[derive(Debug, Default)]
pub struct ModelStore {
    models: BTreeMap<String, Arc<LoadedModel>>,
}

impl ModelStore {
    /// Prepares every model, batched if `batching` is given; the first refusal stops it.
    pub fn load(
        models: &BTreeMap<String, ResolvedModel>,
        batching: Option<&Batching>,
    ) -> Result<ModelStore, ModelError> {
        let mut store = ModelStore::default();
        for (name, resolved) in models {
            let mut loaded = ModelStore::prepare(name, resolved)?;
            if let Some(b) = batching {
                let batched = BatchedModel::new(loaded.model, b.settings.clone(), b.observer.clone())?;
                loaded.model = Arc::new(batched);
            }
            store.models.insert(name.clone(), Arc::new(loaded));
        }
        Ok(store)
    }

    /// Prepares one model on the backend its config asks for, falling back to tract where
    /// the module doc says; never batched.
    pub fn prepare(name: &str, resolved: &ResolvedModel) -> Result<LoadedModel, ModelError> {
        let spec = &resolved.spec;
        let options = PrepareOptions { inputs: spec.inputs.clone() };
        let loaded = |backend, fallback, model| LoadedModel {
            name: name.to_owned(),
            digest: resolved.digest,
            backend,
            fallback,
            model,
        };
        let on_tract = |fallback: Option<String>| -> Result<LoadedModel, ModelError> {
            if let Some(why) = &fallback {
                tracing::warn!(model = %name, reason = %why, "running on tract (fallback_to_tract)");
            }
            let model = TractBackend::new().prepare_with(name, &resolved.bytes, &options)?;
            Ok(loaded(BackendKind::Tract, fallback, model))
        };
        if spec.backend == BackendKind::Tract {
            return on_tract(None);
        }
        #[cfg(not(feature = "gpu"))]
        {
            let why = NO_GPU_BUILD.to_owned();
            if spec.fallback_to_tract {
                return on_tract(Some(why));
            }
            Err(ModelError::NoFallback { model: name.to_owned(), why })
        }
        #[cfg(feature = "gpu")]
        Self::prepare_on_gpu(name, resolved, &options, loaded, on_tract)
    }

    /// The wgpu half of [`ModelStore::prepare`].
    #[cfg(feature = "gpu")]
    fn prepare_on_gpu(
        name: &str,
        resolved: &ResolvedModel,
        options: &PrepareOptions,
        loaded: impl Fn(BackendKind, Option<String>, Arc<dyn PreparedModel>) -> LoadedModel,
        on_tract: impl Fn(Option<String>) -> Result<LoadedModel, ModelError>,
    ) -> Result<LoadedModel, ModelError> {
        let spec = &resolved.spec;
        let gpu = match WgpuBackend::shared() {
            Ok(gpu) => gpu,
            Err(e) if spec.fallback_to_tract => return on_tract(Some(e.to_string())),
            Err(e) => return Err(ModelError::NoFallback { model: name.to_owned(), why: e.to_string() }),
        };
        let adapter = gpu.adapter();
        if adapter.is_cpu && spec.fallback_to_tract {
            let why = format!("the only wgpu adapter, {} via {}, runs on the CPU", adapter.name, adapter.api);
            return on_tract(Some(why));
        }
        match gpu.prepare_with(name, &resolved.bytes, options) {
            Ok(model) => Ok(loaded(BackendKind::Wgpu, None, model)),
            // Neither backend can run a file that does not parse, or inputs the file and
            // config leave unservable: falling back would only repeat the refusal.
            Err(e @ (BackendError::Parse { .. } | BackendError::Inputs { .. })) => Err(e.into()),
            Err(e) if spec.fallback_to_tract => on_tract(Some(format!("wgpu cannot run it ({e})"))),
            Err(e) => Err(ModelError::NoFallback { model: name.to_owned(), why: e.to_string() }),
        }
    }

    /// Model `name`, if the config has it.
    pub fn get(&self, name: &str) -> Option<&Arc<LoadedModel>> {
        self.models.get(name)
    }

    /// Every model, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<LoadedModel>)> {
        self.models.iter().map(|(n, m)| (n.as_str(), m))
    }
}

/// What a CPU-only build (`--no-default-features`) does with a model configured for wgpu;
/// `tools/test.sh` runs these in such a build.
#[cfg(all(test, not(feature = "gpu")))]
mod without_gpu {
    use super::*;
    use crate::config::ModelSpec;
    use crate::reference::{ReferenceModel, default_models_dir};

    fn resolved(fallback_to_tract: bool) -> ResolvedModel {
        let path = ReferenceModel::EdgeInt8.path(&default_models_dir());
        let bytes = std::fs::read(&path).unwrap();
        let spec = ModelSpec {
            path,
            backend: BackendKind::Wgpu,
            fallback_to_tract,
            pinned: None,
            inputs: Default::default(),
        };
        ResolvedModel::new(spec, bytes)
    }

    #[test]
    fn a_wgpu_model_runs_on_tract_where_it_may_and_is_refused_naming_the_build_where_not() {
        let loaded = ModelStore::prepare("edge", &resolved(true)).unwrap();
        assert_eq!(loaded.backend, BackendKind::Tract);
        assert!(loaded.describe().starts_with(&format!("{NO_GPU_BUILD}; falls back: runs on tract")));

        let e = ModelStore::prepare("edge", &resolved(false)).unwrap_err().to_string();
        assert!(e.contains("model edge") && e.contains("without its `gpu` feature"), "{e}");
        assert!(e.contains("fallback_to_tract = true"), "{e}");
    }
}
