//! Everything a Cascade node does, with no HTTP or CLI in it.
//!
//! A node receives inference requests, runs them through a guest plugin in a sandbox, lets
//! the plugin call a model through a [`Backend`], and either answers or escalates. This
//! crate holds those parts; `edge-node` puts them behind a CLI and an HTTP front door.
//!
//! ```no_run
//! use cascade_runtime::{Backend, Digits, ReferenceModel, Split, TractBackend, reference};
//!
//! let dir = reference::default_models_dir();
//! let bytes = std::fs::read(ReferenceModel::EdgeInt8.path(&dir))?;
//! let model = TractBackend::new().prepare("edge", &bytes)?;
//! let test = Digits::load_split(&dir, Split::Test)?;
//! println!("accuracy {:.4}", reference::accuracy(&*model, &test, 64)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Core concepts:
//! - [`Tensor`]: element type, shape, bytes; validated when built.
//! - [`Backend`] → [`PreparedModel`]: prepare a model once (refusing what cannot run),
//!   run batches many times.
//! - [`Digits`]: the committed reference data splits.

mod backend;
mod dataset;
pub mod reference;
mod registry;
mod tensor;

pub use backend::cpu::{CpuTuning, KernelKnob, configure_cpu_kernels, cpu_kernel_table};
pub use backend::tract::TractBackend;
pub use backend::{
    Backend, BackendError, BackendKind, ModelInfo, Precision, PreparedModel, TensorSpec, check_inputs,
};
pub use dataset::{DatasetError, Digits, Split};
pub use reference::ReferenceModel;
pub use registry::{LoadedModel, ModelConfig, ModelRegistry, RegistryError, file_sha256};
pub use tensor::{DType, Tensor, TensorError, element_count};
