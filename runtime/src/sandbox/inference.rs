//! The inference capability: a guest runs an allowed model on named tensors.
//!
//! The host checks everything a guest sends before it reaches a backend: the model is on the
//! plugin's allowlist, every tensor's byte length matches its shape and element type, and
//! the tensors match the model's inputs by name, type and shape.

use std::sync::Arc;

use super::bindings::cascade::plugin::inference::{Error as WitError, Host};
use super::bindings::cascade::plugin::types::{NamedTensor, Tensor as WitTensor};
use super::{HostState, Violation, dtype_from_wit, dtype_to_wit};
use crate::backend::{PreparedModel, check_inputs};
use crate::tensor::Tensor;

/// Converts a guest tensor, checking its byte length against its shape.
pub(super) fn tensor_from_wit(t: WitTensor) -> Result<Tensor, String> {
    let shape = t.dimensions.iter().map(|&d| d as usize).collect();
    Tensor::new(dtype_from_wit(t.ty), shape, t.data).map_err(|e| e.to_string())
}

/// Converts a host tensor for the guest. Dimensions fit u32: the tensor's bytes do.
pub(super) fn tensor_to_wit(t: Tensor) -> WitTensor {
    let dimensions = t.shape().iter().map(|&d| u32::try_from(d).unwrap_or(u32::MAX)).collect();
    WitTensor { dimensions, ty: dtype_to_wit(t.dtype()), data: t.into_data() }
}

/// Orders the guest's named tensors as the model's inputs and validates them.
fn model_inputs(model: &dyn PreparedModel, inputs: Vec<NamedTensor>) -> Result<Vec<Tensor>, String> {
    let info = model.info();
    if inputs.len() != info.inputs.len() {
        return Err(format!("expected {} input tensors, got {}", info.inputs.len(), inputs.len()));
    }
    let mut slots: Vec<Option<Tensor>> = vec![None; info.inputs.len()];
    for nt in inputs {
        let i = info
            .inputs
            .iter()
            .position(|s| s.name == nt.name)
            .ok_or_else(|| format!("the model has no input {}", nt.name))?;
        if slots[i].is_some() {
            return Err(format!("input {} given twice", nt.name));
        }
        slots[i] = Some(tensor_from_wit(nt.tensor).map_err(|e| format!("input {}: {e}", nt.name))?);
    }
    // Same count, no duplicates, every name known: every slot is filled.
    let tensors: Vec<Tensor> = slots.into_iter().flatten().collect();
    check_inputs(info, &tensors).map_err(|e| match e {
        crate::backend::BackendError::Input { why, .. } => why,
        other => other.to_string(),
    })?;
    Ok(tensors)
}

fn run(model: &Arc<dyn PreparedModel>, inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>, WitError> {
    let tensors = model_inputs(&**model, inputs).map_err(WitError::InvalidTensor)?;
    let outputs = model.run(&tensors).map_err(|e| WitError::Failed(e.to_string()))?;
    Ok(model
        .info()
        .outputs
        .iter()
        .zip(outputs)
        .map(|(spec, t)| NamedTensor { name: spec.name.clone(), tensor: tensor_to_wit(t) })
        .collect())
}

impl Host for HostState {
    fn compute(
        &mut self,
        model: String,
        inputs: Vec<NamedTensor>,
    ) -> wasmtime::Result<Result<Vec<NamedTensor>, WitError>> {
        let Some(prepared) = self.plugin.models.get(&model) else {
            // A capability violation ends the request: trap instead of returning an error.
            self.violation = Some(Violation::ModelNotAllowed(model.clone()));
            return Err(wasmtime::Error::msg(format!("model {model} is not on the allowlist")));
        };
        let span = tracing::debug_span!("inference", model = %model).entered();
        let started = std::time::Instant::now();
        let result = run(prepared, inputs);
        self.inference += started.elapsed();
        drop(span);
        if let Err(WitError::InvalidTensor(why)) = &result
            && self.violation.is_none()
        {
            self.violation = Some(Violation::InvalidTensor { model, why: why.clone() });
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::backend::tract::TractBackend;
    use crate::reference::{ReferenceModel, default_models_dir};

    fn named(name: &str, dims: Vec<u32>, ty: super::super::wit::TensorType, bytes: usize) -> NamedTensor {
        NamedTensor { name: name.into(), tensor: WitTensor { dimensions: dims, ty, data: vec![0; bytes] } }
    }

    #[test]
    fn guest_tensors_are_validated_before_the_backend_sees_them() {
        use super::super::wit::TensorType::{Fp32, U8};
        let bytes = std::fs::read(ReferenceModel::EdgeInt8.path(&default_models_dir())).unwrap();
        let model = TractBackend::new().prepare("edge", &bytes).unwrap();
        let err = |inputs| model_inputs(&*model, inputs).unwrap_err();
        assert!(model_inputs(&*model, vec![named("input", vec![1, 1, 28, 28], Fp32, 3136)]).is_ok());
        assert_eq!(err(vec![]), "expected 1 input tensors, got 0");
        assert_eq!(
            err(vec![named("pixels", vec![1, 1, 28, 28], Fp32, 3136)]),
            "the model has no input pixels"
        );
        assert!(err(vec![named("input", vec![1, 3, 1 << 30], Fp32, 12)]).contains("needs"));
        assert!(err(vec![named("input", vec![1, 1, 28, 28], U8, 784)]).contains("must be f32"));
        assert!(err(vec![named("input", vec![1, 784], Fp32, 3136)]).contains("must be shaped"));
    }
}
