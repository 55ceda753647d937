//! The model registry: named, versioned, hash-pinned models, validated at load and
//! replaceable while serving.
//!
//! Its input is a plain [`ModelConfig`] per model (the TOML config maps onto it). Loading
//! reads the file, checks its sha256, prepares it on the configured backend (which refuses
//! files that do not parse and ops it cannot run) and checks the model's input shape against
//! the config. Only a model that passes all of that is published.
//!
//! Publishing swaps an `Arc`: a request that already holds the old [`LoadedModel`] (from
//! [`ModelRegistry::get`]) finishes on it, new requests get the new version, and the old
//! version is freed when its last request drops it. Nothing in flight is dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use sha2::{Digest, Sha256};

use crate::backend::{Backend, BackendError, BackendKind, PreparedModel};

/// One model as the node config names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// Name requests use.
    pub name: String,
    /// Version label, reported with every answer and part of cache keys.
    pub version: String,
    /// The ONNX file.
    pub path: PathBuf,
    /// Backend to run it on.
    pub backend: BackendKind,
    /// Expected sha256 of the file, lowercase hex.
    pub sha256: String,
    /// Shape of one item of the first input (without the batch dimension) that the node's
    /// routes send, if the config pins it; a model expecting another shape is refused.
    pub item_shape: Option<Vec<usize>>,
    /// If the configured backend is wgpu and it refuses the model (an op its kernels do not
    /// cover, or no GPU), run the model on tract instead of refusing it.
    pub fallback_to_tract: bool,
}

/// A validated model, as requests hold it.
#[derive(Debug)]
pub struct LoadedModel {
    /// The config it was loaded from.
    pub config: ModelConfig,
    /// Backend that actually runs it (tract after a fallback).
    pub backend: BackendKind,
    /// Why the configured backend was not used, after a fallback.
    pub fallback_reason: Option<String>,
    /// The prepared model.
    pub model: Arc<dyn PreparedModel>,
}

/// Why a model was refused. Every message names the model and, once known, its file.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The model file could not be read.
    #[error("model {model}: cannot read file {file}: {source}")]
    Read {
        /// Model name.
        model: String,
        /// File path.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file's sha256 is not the configured one.
    #[error("model {model}: file {file} has sha256 {actual}, the config pins {expected}")]
    Digest {
        /// Model name.
        model: String,
        /// File path.
        file: PathBuf,
        /// Digest from the config.
        expected: String,
        /// Digest of the file.
        actual: String,
    },
    /// The backend refused the model (parse error, unsupported op, device).
    #[error("file {file}: {source}")]
    Backend {
        /// File path.
        file: PathBuf,
        /// The backend's error, naming model, node and op.
        source: BackendError,
    },
    /// The model's inputs do not fit the config.
    #[error("model {model}: file {file}: {why}")]
    Shape {
        /// Model name.
        model: String,
        /// File path.
        file: PathBuf,
        /// What does not fit.
        why: String,
    },
    /// The config names a backend this node does not have.
    #[error("model {model}: backend {backend} is not available on this node")]
    NoBackend {
        /// Model name.
        model: String,
        /// Backend name.
        backend: &'static str,
    },
}

/// A prepared model, the backend that runs it, and why it is not the configured one.
type Chosen = (Arc<dyn PreparedModel>, BackendKind, Option<String>);

/// Named models, each the latest validated version.
#[derive(Debug)]
pub struct ModelRegistry {
    backends: Vec<Arc<dyn Backend>>,
    models: RwLock<HashMap<String, Arc<LoadedModel>>>,
}

impl ModelRegistry {
    /// A registry that prepares models on `backends` (at most one per kind is used: the first).
    pub fn new(backends: Vec<Arc<dyn Backend>>) -> ModelRegistry {
        ModelRegistry { backends, models: RwLock::new(HashMap::new()) }
    }

    fn backend(&self, kind: BackendKind) -> Option<&Arc<dyn Backend>> {
        self.backends.iter().find(|b| b.kind() == kind)
    }

    /// Validates `config` without publishing it (what `edge-node check` runs).
    pub fn validate(&self, config: &ModelConfig) -> Result<LoadedModel, RegistryError> {
        let name = config.name.clone();
        let file = config.path.clone();
        let bytes = std::fs::read(&file).map_err(|source| RegistryError::Read {
            model: name.clone(),
            file: file.clone(),
            source,
        })?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(config.sha256.trim()) {
            return Err(RegistryError::Digest { model: name, file, expected: config.sha256.clone(), actual });
        }

        let (model, backend, fallback_reason) = self.prepare(config, &bytes)?;
        if let Some(want) = &config.item_shape {
            let first = model.info().inputs.first();
            if first.map(|spec| &spec.item_shape) != Some(want) {
                return Err(RegistryError::Shape {
                    model: name,
                    file,
                    why: format!(
                        "the config sends items shaped {want:?}, the model's first input takes {:?}",
                        first.map(|spec| spec.item_shape.clone()).unwrap_or_default()
                    ),
                });
            }
        }
        Ok(LoadedModel { config: config.clone(), backend, fallback_reason, model })
    }

    fn prepare(&self, config: &ModelConfig, bytes: &[u8]) -> Result<Chosen, RegistryError> {
        let refused = |source| RegistryError::Backend { file: config.path.clone(), source };
        let fallback = config.fallback_to_tract && config.backend != BackendKind::Tract;
        let reason = match self.backend(config.backend) {
            Some(backend) => match backend.prepare(&config.name, bytes) {
                Ok(model) => return Ok((model, config.backend, None)),
                // A file that does not parse would not parse on tract either.
                Err(e @ BackendError::Parse { .. }) => return Err(refused(e)),
                Err(e) if fallback => e.to_string(),
                Err(e) => return Err(refused(e)),
            },
            None if fallback => format!("backend {} is not available on this node", config.backend.name()),
            None => {
                return Err(RegistryError::NoBackend {
                    model: config.name.clone(),
                    backend: config.backend.name(),
                });
            }
        };
        let tract = self.backend(BackendKind::Tract).ok_or_else(|| RegistryError::NoBackend {
            model: config.name.clone(),
            backend: BackendKind::Tract.name(),
        })?;
        let model = tract.prepare(&config.name, bytes).map_err(refused)?;
        tracing::warn!(model = %config.name, %reason, "falling back to tract");
        Ok((model, BackendKind::Tract, Some(reason)))
    }

    /// Validates `config` and publishes it under its name, replacing any previous version.
    /// On error the previous version, if any, stays published.
    pub fn load(&self, config: &ModelConfig) -> Result<Arc<LoadedModel>, RegistryError> {
        let loaded = Arc::new(self.validate(config)?);
        self.models.write().insert(config.name.clone(), loaded.clone());
        Ok(loaded)
    }

    /// The current version of model `name`. Holding the `Arc` keeps that version alive even
    /// if it is replaced meanwhile.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedModel>> {
        self.models.read().get(name).cloned()
    }

    /// Unpublishes model `name`; requests holding it finish normally.
    pub fn remove(&self, name: &str) -> Option<Arc<LoadedModel>> {
        self.models.write().remove(name)
    }

    /// Names of published models, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.models.read().keys().cloned().collect();
        names.sort();
        names
    }
}

/// Lowercase hex sha256 of a file, for writing configs.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    Ok(hex::encode(Sha256::digest(std::fs::read(path)?)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::backend::tract::TractBackend;
    use crate::reference::{self, ReferenceModel};

    fn config(name: &str, key: ReferenceModel) -> ModelConfig {
        let path = key.path(&reference::default_models_dir());
        ModelConfig {
            name: name.into(),
            version: "1".into(),
            sha256: file_sha256(&path).unwrap(),
            path,
            backend: BackendKind::Tract,
            item_shape: Some(vec![1, 28, 28]),
            fallback_to_tract: false,
        }
    }

    fn registry() -> ModelRegistry {
        ModelRegistry::new(vec![Arc::new(TractBackend::new())])
    }

    #[test]
    fn digest_mismatch_names_both_digests() {
        let mut cfg = config("edge", ReferenceModel::EdgeInt8);
        let actual = cfg.sha256.clone();
        cfg.sha256 = "00".repeat(32);
        let err = registry().load(&cfg).unwrap_err().to_string();
        assert!(
            err.starts_with("model edge: file ") && err.contains(&actual) && err.contains(&"00".repeat(32)),
            "{err}"
        );
    }

    #[test]
    fn unparseable_and_unsupported_files_name_model_file_and_op() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.onnx");
        std::fs::write(&garbage, b"not a model").unwrap();
        let cfg = ModelConfig {
            path: garbage.clone(),
            sha256: file_sha256(&garbage).unwrap(),
            ..config("g", ReferenceModel::EdgeFp32)
        };
        let err = registry().load(&cfg).unwrap_err().to_string();
        assert!(err.contains("garbage.onnx") && err.contains("model g: cannot parse"), "{err}");

        // Renaming an op type in place keeps the protobuf valid and gives an op nobody has.
        let mut odd = std::fs::read(ReferenceModel::EdgeFp32.path(&reference::default_models_dir())).unwrap();
        for i in 0..odd.len().saturating_sub(3) {
            if &odd[i..i + 4] == b"Relu" {
                odd[i..i + 4].copy_from_slice(b"Rexu");
            }
        }
        let odd_path = dir.path().join("odd.onnx");
        std::fs::write(&odd_path, &odd).unwrap();
        let cfg = ModelConfig {
            path: odd_path.clone(),
            sha256: file_sha256(&odd_path).unwrap(),
            ..config("odd", ReferenceModel::EdgeFp32)
        };
        let err = registry().load(&cfg).unwrap_err().to_string();
        assert!(err.contains("odd.onnx") && err.contains("model odd") && err.contains("op Rexu"), "{err}");
    }

    #[test]
    fn shapes_that_do_not_fit_the_config_are_refused() {
        let cfg = ModelConfig { item_shape: Some(vec![784]), ..config("edge", ReferenceModel::EdgeInt8) };
        let err = registry().load(&cfg).unwrap_err().to_string();
        assert!(
            err.contains("model edge") && err.contains("edge_int8.onnx") && err.contains("[784]"),
            "{err}"
        );
        assert!(registry().get("edge").is_none());
    }

    #[test]
    fn replacing_a_model_keeps_in_flight_holders_on_the_old_version() {
        let reg = registry();
        let old = reg.load(&config("m", ReferenceModel::EdgeInt8)).unwrap();
        let in_flight = reg.get("m").unwrap();
        let new =
            reg.load(&ModelConfig { version: "2".into(), ..config("m", ReferenceModel::EdgeFp32) }).unwrap();
        assert!(Arc::ptr_eq(&old, &in_flight));
        assert_eq!(reg.get("m").unwrap().config.version, "2");
        assert!(Arc::ptr_eq(&reg.get("m").unwrap(), &new));
        // The old version still answers for the request that holds it.
        let input = reference::images_to_input(&[0; 784]).unwrap();
        assert_eq!(in_flight.model.run(&[input]).unwrap()[0].shape(), [1, 10]);
        // A refused replacement leaves the current version published.
        let bad = ModelConfig { sha256: "ff".repeat(32), ..config("m", ReferenceModel::CentralFp32) };
        assert!(reg.load(&bad).is_err());
        assert_eq!(reg.get("m").unwrap().config.version, "2");
        assert_eq!(reg.names(), ["m"]);
    }

    #[test]
    fn wgpu_fallback_to_tract_is_a_per_model_option() {
        // This registry has no wgpu backend: with fallback the model runs on tract, without it
        // the model is refused with the backend named.
        let reg = registry();
        let cfg = ModelConfig { backend: BackendKind::Wgpu, ..config("e", ReferenceModel::EdgeInt8) };
        let err = reg.load(&cfg).unwrap_err().to_string();
        assert_eq!(err, "model e: backend wgpu is not available on this node");
        let loaded = reg.load(&ModelConfig { fallback_to_tract: true, ..cfg }).unwrap();
        assert_eq!(loaded.backend, BackendKind::Tract);
        assert!(loaded.fallback_reason.as_deref().unwrap_or("").contains("wgpu"));
    }
}
