//! The inference capability: a guest runs an allowed model on named tensors.
//!
//! The host checks everything a guest sends before it reaches a backend: the request still
//! has time, the model is on the plugin's allowlist, the tensors fit the call's byte budget
//! before they are copied (see `budget.rs`), every tensor's byte length matches its shape and
//! element type, and the tensors match the model's inputs by name, type and shape.
//!
//! `compute` is linked by hand rather than through the generated `Host` trait, which would
//! hand it the tensors already copied: it takes views of them in guest memory instead.
//!
//! Where a model runs: on the thread that runs the guest (the async worker holding the
//! request), unless it would hold that worker long. A model that waits for another thread or
//! a device ([`PreparedModel::computes_on_caller`]), or whose last two runs both took longer
//! than [`INLINE_RUN_LIMIT`], runs on the runtime's blocking pool while the guest's fiber is
//! suspended, so the worker serves other requests meanwhile. Two runs, because one run's
//! wall time can be long for reasons of its own: the first run of a batch size (tract plans
//! it), or a thread preempted on a saturated machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::Instrument;
use wasmtime::StoreContextMut;
use wasmtime::component::{ComponentType, Lift, Linker, WasmList, WasmStr};

use super::bindings::cascade::plugin::inference::Error as WitError;
use super::bindings::cascade::plugin::types::{NamedTensor, Tensor as WitTensor, TensorType};
use super::{HostState, Violation, budget, dtype_from_wit, dtype_to_wit};
use crate::backend::{BackendError, PreparedModel, check_inputs};
use crate::tensor::Tensor;

/// The WIT interface `compute` belongs to, as the component names its import.
const INTERFACE: &str = "cascade:plugin/inference@0.1.0";

/// Longest model run that may happen on the async worker holding the request: half of the
/// default epoch tick, so that a model call delays the worker's other requests no more than a
/// guest's own code may (one tick). Longer models run on the blocking pool, which costs two
/// thread wake-ups per call, small beside such a run.
const INLINE_RUN_LIMIT: Duration = Duration::from_micros(500);

/// A model on a plugin's allowlist, and how long its last two runs took (which decides where
/// the next one runs).
#[derive(Debug)]
pub(super) struct AllowedModel {
    model: Arc<dyn PreparedModel>,
    /// Longest run that may happen on the async worker: [`INLINE_RUN_LIMIT`].
    inline_limit: Duration,
    /// Wall time of the last run and of the one before it, µs.
    last_runs_us: [AtomicU64; 2],
}

impl AllowedModel {
    pub(super) fn new(model: Arc<dyn PreparedModel>) -> AllowedModel {
        AllowedModel::with_limit(model, INLINE_RUN_LIMIT)
    }

    fn with_limit(model: Arc<dyn PreparedModel>, inline_limit: Duration) -> AllowedModel {
        AllowedModel { model, inline_limit, last_runs_us: [AtomicU64::new(0), AtomicU64::new(0)] }
    }

    /// Runs the model on `tensors`, on this thread or on the blocking pool (see the module
    /// doc).
    async fn run(&self, tensors: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        let [last, before] = &self.last_runs_us;
        let (last, before) = (last.load(Ordering::Relaxed), before.load(Ordering::Relaxed));
        let inline =
            self.model.computes_on_caller() && Duration::from_micros(last.min(before)) <= self.inline_limit;
        let started = Instant::now();
        let result = match tokio::runtime::Handle::try_current() {
            // Off any runtime (a synchronous caller's own thread) there is no worker to spare.
            Ok(runtime) if !inline => {
                let model = self.model.clone();
                runtime.spawn_blocking(move || model.run(&tensors)).await.unwrap_or_else(|e| {
                    Err(BackendError::Run {
                        model: self.model.info().name.clone(),
                        why: format!("the thread running it failed: {e}"),
                    })
                })
            }
            _ => self.model.run(&tensors),
        };
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        // Concurrent runs may interleave these two stores: any two recent runs will do.
        self.last_runs_us[1].store(last, Ordering::Relaxed);
        self.last_runs_us[0].store(took, Ordering::Relaxed);
        result
    }
}

/// Most dimensions of a tensor crossing from a guest. ONNX models rarely use more than six;
/// the bound keeps a tensor's metadata small and its element count cheap to check.
pub(crate) const MAX_DIMS: usize = 8;

/// A `tensor` record still in guest memory: its lists are views, checked to lie inside that
/// memory, not copied.
#[derive(ComponentType, Lift)]
#[component(record)]
struct TensorView {
    dimensions: WasmList<u32>,
    ty: TensorType,
    data: WasmList<u8>,
}

/// A `named-tensor` record still in guest memory.
#[derive(ComponentType, Lift)]
#[component(record)]
struct NamedTensorView {
    name: WasmStr,
    tensor: TensorView,
}

/// Converts a guest tensor, checking its dimension count and its byte length against its
/// shape (which also refuses an element count that overflows).
pub(crate) fn tensor_from_wit(t: WitTensor) -> Result<Tensor, String> {
    if t.dimensions.len() > MAX_DIMS {
        return Err(format!("{} dimensions, more than the {MAX_DIMS} a tensor may have", t.dimensions.len()));
    }
    let shape = t.dimensions.iter().map(|&d| d as usize).collect();
    Tensor::new(dtype_from_wit(t.ty), shape, t.data).map_err(|e| e.to_string())
}

/// Converts a host tensor for the guest. Dimensions fit u32: the tensor's bytes do.
pub(super) fn tensor_to_wit(t: Tensor) -> WitTensor {
    let dimensions = t.shape().iter().map(|&d| u32::try_from(d).unwrap_or(u32::MAX)).collect();
    WitTensor { dimensions, ty: dtype_to_wit(t.dtype()), data: t.into_data() }
}

/// Orders the guest's named tensors as the model's inputs and validates them.
pub(crate) fn model_inputs(
    model: &dyn PreparedModel,
    inputs: Vec<NamedTensor>,
) -> Result<Vec<Tensor>, String> {
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
        BackendError::Input { why, .. } => why,
        other => other.to_string(),
    })?;
    Ok(tensors)
}

/// Links `compute` into `linker`, taking its tensors as views (see the module doc).
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.instance(INTERFACE)?.func_wrap_async(
        "compute",
        |store: StoreContextMut<'_, HostState>, (model, inputs): (WasmStr, WasmList<NamedTensorView>)| {
            Box::new(async move { compute(store, &model, &inputs).await.map(|result| (result,)) })
        },
    )
}

/// The `compute` import. An `Err` ends the request (the reason is left in the store's
/// `violation`); an `Ok(Err(..))` is an error the guest may handle.
async fn compute(
    mut store: StoreContextMut<'_, HostState>,
    model: &WasmStr,
    inputs: &WasmList<NamedTensorView>,
) -> wasmtime::Result<Result<Vec<NamedTensor>, WitError>> {
    // No model runs after the request's deadline: a guest looping on model calls ends here
    // even where the epoch has not interrupted it yet (the epoch is only checked in guest
    // code, and ticks coarsely).
    if Instant::now() >= store.data().deadline.at {
        return Err(store.data_mut().refuse(Violation::DeadlinePassed, "the request's deadline has passed"));
    }
    // The plugin, held here so that its allowlist outlives the store's borrows below.
    let plugin = store.data().plugin.clone();
    let name = model.to_str(&store)?.into_owned();
    let Some(allowed) = plugin.models.get(&name) else {
        // A capability violation ends the request: trap instead of returning an error.
        let why = format!("model {name} is not on the allowlist");
        return Err(store.data_mut().refuse(Violation::ModelNotAllowed(name), &why));
    };
    let inputs = copy_inputs(&mut store, &name, inputs)?;
    let tensors = match model_inputs(&*allowed.model, inputs) {
        Ok(tensors) => tensors,
        Err(why) => {
            let state = store.data_mut();
            if state.violation.is_none() {
                state.violation = Some(Violation::InvalidTensor { model: name, why: why.clone() });
            }
            return Ok(Err(WitError::InvalidTensor(why)));
        }
    };
    let started = Instant::now();
    let outputs = allowed.run(tensors).instrument(tracing::debug_span!("inference", model = %name)).await;
    store.data_mut().inference += started.elapsed();
    Ok(outputs.map_err(|e| WitError::Failed(e.to_string())).map(|outputs| {
        allowed
            .model
            .info()
            .outputs
            .iter()
            .zip(outputs)
            .map(|(spec, t)| NamedTensor { name: spec.name.clone(), tensor: tensor_to_wit(t) })
            .collect()
    }))
}

/// Copies the tensors a guest passed `model`, after checking that together they declare no
/// more bytes than one call's budget: the views are read first (their records only, which
/// wasmtime bounds by the store's hostcall fuel), their declared sizes added up, and only
/// then is anything copied.
fn copy_inputs(
    store: &mut StoreContextMut<'_, HostState>,
    model: &str,
    inputs: &WasmList<NamedTensorView>,
) -> wasmtime::Result<Vec<NamedTensor>> {
    // Reading a view is charged the bytes it points at, as if it were copied: lift the views
    // without a fuel cap and apply the compute budget to their sum below instead.
    let fuel = store.hostcall_fuel();
    store.set_hostcall_fuel(usize::MAX);
    let views = inputs.iter(&mut *store).and_then(Iterator::collect::<wasmtime::Result<Vec<_>>>);
    store.set_hostcall_fuel(fuel);
    let views = views?;
    let mut declared = 0usize;
    for view in &views {
        let dims = view.tensor.dimensions.len().saturating_mul(size_of::<u32>());
        // Validating a name as UTF-8 borrows it from guest memory: nothing is copied.
        let name = view.name.to_str(&*store)?.len();
        declared = declared.saturating_add(view.tensor.data.len()).saturating_add(dims).saturating_add(name);
    }
    let budget = budget::compute_budget(&store.data().plugin.limits);
    if declared > budget {
        let why = format!("the {} tensors passed to model {model} hold {declared} bytes", views.len());
        return Err(store
            .data_mut()
            .refuse(Violation::Transfer { why: why.clone(), budget_bytes: budget }, &why));
    }
    views
        .into_iter()
        .map(|view| {
            Ok(NamedTensor {
                name: view.name.to_str(&*store)?.into_owned(),
                tensor: WitTensor {
                    dimensions: view
                        .tensor
                        .dimensions
                        .as_le_slice(&*store)
                        .iter()
                        .map(|&d| u32::from_le(d))
                        .collect(),
                    ty: view.tensor.ty,
                    data: view.tensor.data.as_le_slice(&*store).to_vec(),
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::backend::tract::TractBackend;
    use crate::reference::{ReferenceModel, default_models_dir};

    fn named(name: &str, dims: Vec<u32>, ty: TensorType, bytes: usize) -> NamedTensor {
        NamedTensor { name: name.into(), tensor: WitTensor { dimensions: dims, ty, data: vec![0; bytes] } }
    }

    #[test]
    fn guest_tensors_are_validated_before_the_backend_sees_them() {
        use TensorType::{Fp32, U8};
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

    #[test]
    fn tensors_with_too_many_dimensions_are_refused_before_their_shape_is_read() {
        let tensor = |dims: usize| WitTensor { dimensions: vec![1; dims], ty: TensorType::U8, data: vec![0] };
        assert!(tensor_from_wit(tensor(MAX_DIMS)).is_ok());
        assert_eq!(
            tensor_from_wit(tensor(MAX_DIMS + 1)).unwrap_err(),
            "9 dimensions, more than the 8 a tensor may have"
        );
        // An element count that overflows is refused by the length check, not computed.
        let huge = WitTensor { dimensions: vec![u32::MAX; MAX_DIMS], ty: TensorType::Fp32, data: vec![] };
        assert!(tensor_from_wit(huge).unwrap_err().contains("too large"), "overflowing shape accepted");
    }

    /// The edge model, taking as long as `pause` more than it does, and noting the thread
    /// each run happens on.
    #[derive(Debug)]
    struct Observed {
        model: Arc<dyn PreparedModel>,
        pause: Duration,
        on_caller: bool,
        threads: parking_lot::Mutex<Vec<std::thread::ThreadId>>,
    }

    impl PreparedModel for Observed {
        fn info(&self) -> &crate::backend::ModelInfo {
            self.model.info()
        }

        fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, BackendError> {
            self.threads.lock().push(std::thread::current().id());
            std::thread::sleep(self.pause);
            self.model.run(inputs)
        }

        fn computes_on_caller(&self) -> bool {
            self.on_caller
        }
    }

    /// Longest inline run in these tests: far beyond a run of the edge model, even unoptimised
    /// on a loaded machine, so only the pauses below decide.
    const LIMIT: Duration = Duration::from_millis(20);

    /// Where each of three runs happened: on the runtime's thread or elsewhere.
    fn three_runs(pause: Duration, on_caller: bool) -> Vec<bool> {
        let bytes = std::fs::read(ReferenceModel::EdgeFp32.path(&default_models_dir())).unwrap();
        let model = TractBackend::new().prepare("edge", &bytes).unwrap();
        let input = || vec![Tensor::from_f32(vec![1, 1, 28, 28], &[0.0; 784]).unwrap()];
        // tract plans a batch size at its first run, which is slow: not what is tested here.
        model.run(&input()).unwrap();
        let observed =
            Arc::new(Observed { model, pause, on_caller, threads: parking_lot::Mutex::new(Vec::new()) });
        let allowed = AllowedModel::with_limit(observed.clone(), LIMIT);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for _ in 0..3 {
            runtime.block_on(allowed.run(input())).unwrap();
        }
        let here = std::thread::current().id();
        observed.threads.lock().iter().map(|&t| t == here).collect()
    }

    #[test]
    fn fast_models_run_on_the_runtimes_thread_slow_or_waiting_ones_off_it() {
        assert_eq!(three_runs(Duration::ZERO, true), [true, true, true]);
        // One slow run may be chance; after two, the next runs off the runtime's thread.
        assert_eq!(three_runs(LIMIT * 2, true), [true, true, false]);
        assert_eq!(three_runs(Duration::ZERO, false), [false, false, false]);
    }
}
