//! The host's checks on what a guest plugin hands it through the WIT boundary: the outcome
//! its `handle` returns (`check_outcome`), and the tensors it passes to a model through the
//! inference capability (`tensor_from_wit`, `model_inputs`). Structured input: the
//! wasmtime-generated WIT values are built with `arbitrary` (see `cascade_fuzz::wit`).
//!
//! Checks, besides never panicking:
//! - an accepted outcome keeps the contract: confidence in [0, 1], every output tensor
//!   consistent, the answer within the plugin's byte limit and the outputs no more than the
//!   tier protocol carries; with at most that many outputs, it is accepted exactly when
//!   each of those holds;
//! - accepted model inputs are one per model input, in the model's order, each of the
//!   declared type and item shape, with one non-zero batch size.
#![no_main]

use arbitrary::Arbitrary;
use cascade_fuzz::wit::{GuestNamedTensor, GuestOutcome, Signature, Spec};
use cascade_runtime::fuzzing::{guest_model_inputs, guest_outcome, guest_tensor, wit};
use cascade_runtime::protocol::MAX_TENSORS;
use cascade_runtime::{Outcome, PluginLimits};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    outcome: GuestOutcome,
    max_output_bytes: u16,
    model: Vec<Spec>,
    inputs: Vec<GuestNamedTensor>,
}

fuzz_target!(|input: Input| {
    let limits = PluginLimits { max_output_bytes: usize::from(input.max_output_bytes), ..PluginLimits::default() };
    let outcome = input.outcome.wit();
    let expected = expected_acceptance(&outcome, &limits);
    // The sandbox may cap the number of outputs below what an answer can carry downstream;
    // beyond that, a refusal is not checked.
    let exact = !matches!(&outcome, wit::Outcome::Answer(a) if a.outputs.len() > MAX_TENSORS);
    match guest_outcome(outcome, &limits) {
        Ok(Outcome::Escalate(reason)) => assert!(reason.len() <= limits.max_output_bytes),
        Ok(Outcome::Answer(a)) => {
            assert!(expected, "accepted an outcome that breaks the contract");
            assert!(a.outputs.len() <= MAX_TENSORS, "an answer with more outputs than can be relayed");
            assert!((0.0..=1.0).contains(&a.confidence));
            for (_, t) in &a.outputs {
                let elements: usize = t.shape().iter().product();
                assert_eq!(t.data().len(), elements * t.dtype().size());
            }
        }
        Err(why) => assert!(!(expected && exact), "refused an outcome that keeps the contract: {why}"),
    }

    let model = Signature::new(&input.model);
    let specs = &model.0.inputs;
    let guest: Vec<wit::NamedTensor> = input.inputs.iter().map(GuestNamedTensor::wit).collect();
    let names: Vec<String> = guest.iter().map(|t| t.name.clone()).collect();
    if let Ok(tensors) = guest_model_inputs(&model, guest) {
        assert_eq!(tensors.len(), specs.len());
        assert!(!tensors.is_empty(), "accepted inputs for a model with none");
        let batch = tensors[0].shape()[0];
        assert!(batch > 0);
        for (spec, t) in specs.iter().zip(&tensors) {
            assert!(names.contains(&spec.name), "input {} was never sent", spec.name);
            assert_eq!(t.dtype(), spec.dtype);
            assert_eq!(t.shape()[0], batch);
            assert_eq!(&t.shape()[1..], &spec.item_shape[..]);
        }
    }
});

/// Whether the contract (the WIT file's comments) allows `outcome` under `limits`.
fn expected_acceptance(outcome: &wit::Outcome, limits: &PluginLimits) -> bool {
    match outcome {
        wit::Outcome::Escalate(reason) => reason.len() <= limits.max_output_bytes,
        wit::Outcome::Answer(a) => {
            let size: usize = a.outputs.iter().map(|o| o.tensor.data.len() + o.name.len()).sum::<usize>()
                + a.label.as_ref().map_or(0, String::len);
            size <= limits.max_output_bytes
                && (0.0..=1.0).contains(&a.confidence)
                && a.outputs.iter().all(|o| guest_tensor(o.tensor.clone()).is_ok())
        }
    }
}
