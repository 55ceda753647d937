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
        let result = run(prepared, inputs);
        if let Err(WitError::InvalidTensor(why)) = &result
            && self.violation.is_none()
        {
            self.violation = Some(Violation::InvalidTensor { model, why: why.clone() });
        }
        Ok(result)
    }
}
