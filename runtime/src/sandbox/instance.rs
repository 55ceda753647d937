//! The per-request path: a fresh instance of a loaded plugin ([`PluginInstance`]), its
//! deadline, the `handle` call, and how what comes back (an outcome, a trap, a refusal the
//! host recorded) becomes an [`Outcome`] or a [`RequestError`]. In a file of its own because
//! it is what runs on every request, while the engine and the plugins are set up once.
//!
//! A guest runs asynchronously, on a fiber of its own, on whichever thread polls it: the
//! node's request path awaits it on the worker that holds the request, with no handoff to
//! another thread. At every epoch tick a running guest either ends (its deadline has passed)
//! or yields to the executor ([`at_tick`]), so a guest looping to its deadline delays the
//! worker's other requests by at most one tick. The synchronous methods run the same path on
//! the calling thread ([`block_on`](super::blocking::block_on)).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, Store, StoreContextMut, Trap, UpdateDeadline};

use super::bindings::Plugin;
use super::bindings::cascade::plugin::types as wit;
use super::blocking::block_on;
use super::budget::MAX_OUTPUTS;
use super::ticker::Alive;
use super::{
    Answer, Deadline, GuestError, HostState, LoadedPlugin, Outcome, PluginLimits, Request, RequestError,
    Sandbox, Violation, budget, inference, logging,
};

/// Stands for a plugin deadline too long to add to an instant: a century, far beyond any
/// request's own deadline, which then ends the call.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

impl Sandbox {
    /// Creates a fresh instance of plugin `name` from the pool, ready for one request.
    pub fn instantiate(&self, name: &str) -> Result<PluginInstance, RequestError> {
        block_on(self.instantiate_async(name))
    }

    /// [`Sandbox::instantiate`], awaited.
    pub async fn instantiate_async(&self, name: &str) -> Result<PluginInstance, RequestError> {
        let result = self.instantiate_inner(name).await;
        if let Err(e) = &result {
            self.count(Err(e.kind()));
        }
        result
    }

    async fn instantiate_inner(&self, name: &str) -> Result<PluginInstance, RequestError> {
        // Clone the Arc and drop the lock at once: a reload never waits for requests.
        let plugin = self
            .inner
            .plugins
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| RequestError::UnknownPlugin { plugin: name.to_string() })?;
        let now = Instant::now();
        let deadline = Deadline {
            // A deadline too far to represent is no deadline: the request's will end it.
            at: now.checked_add(plugin.limits.deadline).unwrap_or(now + FAR_FUTURE),
            budget: plugin.limits.deadline,
        };
        let state = HostState {
            plugin: plugin.clone(),
            memory_denied: false,
            violation: None,
            last_error_log: None,
            inference: Duration::ZERO,
            deadline,
            log_dropped: 0,
        };
        // Before the deadline is set: the ticker must be awake while this guest lives.
        let alive = self.inner.ticker.alive();
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        // Every value the guest passes the host and the host lifts whole (its outcome above
        // all) is charged against this before the host allocates it (`budget.rs`).
        store.set_hostcall_fuel(budget::crossing_budget(&plugin.limits));
        // The guest meets `at_tick` at the next tick, and at every one after it.
        store.epoch_deadline_callback(at_tick);
        store.set_epoch_deadline(1);
        let bindings = match plugin.pre.instantiate_async(&mut store).await {
            Ok(b) => b,
            Err(e) => return Err(classify(&plugin, store.data(), e, true)),
        };
        Ok(PluginInstance { sandbox: self.clone(), store, bindings, _alive: alive })
    }

    /// Handles one request on a fresh instance of plugin `name`, within the plugin's deadline.
    pub fn handle(&self, name: &str, request: Request<'_>) -> Result<Outcome, RequestError> {
        self.handle_timed(name, request, Duration::MAX).0
    }

    /// [`Sandbox::handle_async`] on the calling thread.
    pub fn handle_timed(
        &self,
        name: &str,
        request: Request<'_>,
        time_left: Duration,
    ) -> (Result<Outcome, RequestError>, Duration) {
        block_on(self.handle_async(name, request, time_left))
    }

    /// Handles one request on a fresh instance of plugin `name` that has `time_left` before
    /// its own deadline: the plugin call, its model calls included, ends at the plugin's
    /// deadline or when that time runs out, whichever is first; with no time left the plugin
    /// is not called. Also returns how long the plugin's model calls took together.
    pub async fn handle_async(
        &self,
        name: &str,
        request: Request<'_>,
        time_left: Duration,
    ) -> (Result<Outcome, RequestError>, Duration) {
        match self.instantiate_async(name).await {
            Ok(instance) => instance.call_async(request, time_left).await,
            Err(e) => (Err(e), Duration::ZERO),
        }
    }
}

/// What a running guest does at each epoch tick: ends if its deadline has passed, else
/// yields to the executor and runs on, to meet this again at the next tick.
///
/// The yield is tokio's, which comes back only after the runtime has run its other ready
/// tasks and polled its I/O and timers. A plain wake-up would put the guest straight back on
/// the run queue, and tokio polls its drivers (and a current-thread runtime its `block_on`
/// future) only every 61 tasks: a looping guest would then hold them back 61 ticks, not one.
/// Outside a tokio runtime it wakes at once.
fn at_tick(store: StoreContextMut<'_, HostState>) -> wasmtime::Result<UpdateDeadline> {
    Ok(if Instant::now() >= store.data().deadline.at {
        UpdateDeadline::Interrupt
    } else {
        UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
    })
}

/// A fresh instance of a plugin, good for one request.
pub struct PluginInstance {
    sandbox: Sandbox,
    store: Store<HostState>,
    bindings: Plugin,
    _alive: Alive,
}

impl std::fmt::Debug for PluginInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.store.data().plugin;
        write!(f, "PluginInstance({} v{})", p.name, p.version)
    }
}

impl PluginInstance {
    /// Runs the plugin's `handle` on `request` within the plugin's deadline (counted from
    /// instantiation) and checks its outcome. Consumes the instance: its memory goes back to
    /// the pool.
    pub fn call(self, request: Request<'_>) -> Result<Outcome, RequestError> {
        block_on(self.call_async(request, Duration::MAX)).0
    }

    /// [`PluginInstance::call`] for a request with `time_left` (see [`Sandbox::handle_async`]),
    /// awaited, and how long the plugin's model calls took together.
    pub async fn call_async(
        mut self,
        request: Request<'_>,
        time_left: Duration,
    ) -> (Result<Outcome, RequestError>, Duration) {
        let result = self.call_inner(request, time_left).await;
        self.sandbox.count(result.as_ref().map(|_| ()).map_err(RequestError::kind));
        let state = self.store.data();
        if state.log_dropped > 0 {
            self.sandbox.inner.log_lines_dropped.fetch_add(state.log_dropped, Ordering::Relaxed);
            logging::report_dropped(&state.plugin.name, state.log_dropped, state.plugin.log_rate);
        }
        (result, state.inference)
    }

    /// Narrows this call's deadline to the request's `time_left`, if that is shorter.
    fn narrow_deadline(&mut self, time_left: Duration) {
        let state = self.store.data_mut();
        if let Some(at) = Instant::now().checked_add(time_left)
            && at < state.deadline.at
        {
            state.deadline = Deadline { at, budget: time_left };
        }
    }

    async fn call_inner(
        &mut self,
        request: Request<'_>,
        time_left: Duration,
    ) -> Result<Outcome, RequestError> {
        let plugin = self.store.data().plugin.clone();
        self.narrow_deadline(time_left);
        let deadline = self.store.data().deadline;
        if Instant::now() >= deadline.at {
            // Out of time already: running the guest could only fail later.
            return Err(RequestError::Timeout { plugin: plugin.name.to_string(), deadline: deadline.budget });
        }
        let wit_request = wit::Request {
            route: request.route.to_owned(),
            inputs: request
                .inputs
                .iter()
                .map(|(name, t)| wit::NamedTensor {
                    name: name.clone(),
                    tensor: inference::tensor_to_wit(t.clone()),
                })
                .collect(),
            parameters: request.parameters.to_vec(),
        };
        let returned = self.bindings.call_handle(&mut self.store, &wit_request).await;
        let state = self.store.data();
        let outcome = match returned {
            Err(e) => return Err(classify(&plugin, state, e, false)),
            Ok(r) => r,
        };
        let plugin_name = plugin.name.to_string();
        match (&state.violation, outcome) {
            (Some(Violation::ModelNotAllowed(model)), _) => {
                Err(RequestError::ModelNotAllowed { plugin: plugin_name, model: model.clone() })
            }
            (Some(Violation::InvalidTensor { model, why }), Err(_)) => Err(RequestError::InvalidTensor {
                plugin: plugin_name,
                model: model.clone(),
                why: why.clone(),
            }),
            (_, Err(e)) => Err(RequestError::Plugin {
                plugin: plugin_name,
                error: match e {
                    wit::PluginError::BadRequest(m) => GuestError::BadRequest(m),
                    wit::PluginError::Inference(m) => GuestError::Inference(m),
                    wit::PluginError::Internal(m) => GuestError::Internal(m),
                },
            }),
            (_, Ok(o)) => check_outcome(o, &plugin.limits)
                .map_err(|why| RequestError::BadOutput { plugin: plugin_name, why }),
        }
    }
}

/// Checks a guest's outcome against the contract and converts it. Its size was bounded
/// before it was copied (`budget.rs`); the exact limits are checked here.
pub(crate) fn check_outcome(outcome: wit::Outcome, limits: &PluginLimits) -> Result<Outcome, String> {
    let answer = match outcome {
        wit::Outcome::Escalate(reason) => {
            if reason.len() > limits.max_output_bytes {
                return Err(format!(
                    "escalation reason of {} bytes exceeds {}",
                    reason.len(),
                    limits.max_output_bytes
                ));
            }
            return Ok(Outcome::Escalate(reason));
        }
        wit::Outcome::Answer(a) => a,
    };
    if answer.outputs.len() > MAX_OUTPUTS {
        return Err(format!(
            "{} outputs, more than the {MAX_OUTPUTS} an answer may have",
            answer.outputs.len()
        ));
    }
    let size = answer.outputs.iter().map(|o| o.tensor.data.len() + o.name.len()).sum::<usize>()
        + answer.label.as_ref().map_or(0, String::len);
    if size > limits.max_output_bytes {
        return Err(format!(
            "answer of {size} bytes exceeds the plugin's limit of {}",
            limits.max_output_bytes
        ));
    }
    if !(0.0..=1.0).contains(&answer.confidence) {
        return Err(format!("confidence {} is not in [0, 1]", answer.confidence));
    }
    let outputs = answer
        .outputs
        .into_iter()
        .map(|o| {
            inference::tensor_from_wit(o.tensor)
                .map(|t| (o.name.clone(), t))
                .map_err(|e| format!("output {}: {e}", o.name))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Outcome::Answer(Answer { outputs, confidence: answer.confidence, label: answer.label }))
}

/// Turns a wasmtime error from instantiating or calling into the request's typed error.
fn classify(
    plugin: &LoadedPlugin,
    state: &HostState,
    e: wasmtime::Error,
    instantiating: bool,
) -> RequestError {
    let name = plugin.name.to_string();
    match &state.violation {
        Some(Violation::ModelNotAllowed(model)) => {
            return RequestError::ModelNotAllowed { plugin: name, model: model.clone() };
        }
        Some(Violation::DeadlinePassed) => {
            return RequestError::Timeout { plugin: name, deadline: state.deadline.budget };
        }
        Some(Violation::Transfer { why, budget_bytes }) => {
            return RequestError::Transfer { plugin: name, why: why.clone(), budget_bytes: *budget_bytes };
        }
        Some(Violation::InvalidTensor { .. }) | None => {}
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => RequestError::Timeout { plugin: name, deadline: state.deadline.budget },
        Some(Trap::StackOverflow) => RequestError::StackOverflow { plugin: name },
        _ if state.memory_denied => {
            RequestError::MemoryExhausted { plugin: name, cap_bytes: plugin.limits.max_memory_bytes }
        }
        _ if instantiating => RequestError::Instantiate { plugin: name, why: format!("{e:#}") },
        // Not a trap of guest code, nor a refusal the host recorded: wasmtime could not lift
        // a value the guest passed (its outcome, or a host call's arguments), because it
        // declared more than the hostcall fuel allows or broke the canonical ABI.
        None => RequestError::Transfer {
            plugin: name,
            why: format!("{e:#}"),
            budget_bytes: budget::crossing_budget(&plugin.limits),
        },
        _ => {
            let why = match &state.last_error_log {
                Some(log) => format!("{e:#} (last error logged: {log})"),
                None => format!("{e:#}"),
            };
            RequestError::Trap { plugin: name, why }
        }
    }
}
