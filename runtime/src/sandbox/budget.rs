//! How much a guest may hand the host in one call, checked before the host copies it.
//!
//! A component-model value the guest passes the host (`handle`'s outcome, a host call's
//! arguments) names its lists and strings by pointer and length, and nothing stops two lists
//! from pointing at the same bytes: a guest with 32 MiB of memory can return thirty outputs
//! that all point at one 4 MiB buffer, and a host that copies each list holds 120 MiB. So
//! every crossing is bounded by what it declares, per list, before anything is copied:
//!
//! - **The outcome**, and the arguments of host calls bound with generated types (the config
//!   capability's key), are lifted by wasmtime under *hostcall fuel*
//!   (`Store::set_hostcall_fuel`): each list or string is charged its length times the size
//!   of the host value it becomes *before* the host allocates it, and the charges of one
//!   crossing add up, once per list however many lists alias one buffer. The lift stops at
//!   the first list past the fuel, having allocated no more than the fuel. The store's fuel is
//!   [`crossing_budget`]: the plugin's `max_output_bytes` plus room for the metadata of the
//!   largest honest answer ([`MAX_OUTPUTS`] outputs of [`MAX_DIMS`] dimensions each), so an
//!   answer within `max_output_bytes` always crosses, and the exact checks of
//!   `check_outcome` then run on a copy no larger than the budget.
//! - **`compute`'s tensors** may honestly be larger than an answer (a batch of images), so
//!   `compute` is linked by hand (`inference.rs`) and takes `WasmList`/`WasmStr` views:
//!   lifting a view checks that it lies inside guest memory and copies nothing. The host adds
//!   up the bytes the views declare and ends the request past [`compute_budget`], the
//!   plugin's memory cap: without aliasing a guest cannot pass more than its memory holds, so
//!   only aliasing is refused. Only then are the tensors copied.
//! - **Log messages** are views too (`logging.rs`): a line the rate limit drops is never
//!   read, and a kept one is copied only up to the longest line.
//!
//! Why the outcome is not read through views as well: wasmtime runs the guest's post-return
//! function, which frees what the guest returned, before `TypedFunc::call` returns, so views
//! into the outcome could read freed memory. Fuel bounds the copy while the value is intact.
//! The price is that fuel is one setting per store, charged by every crossing, views included:
//! a log message or a model name longer than the crossing budget (1 MiB and a little by
//! default) fails the request instead of being truncated.
//!
//! So a request holds at most one crossing budget, or one compute budget, of copies of guest
//! data at a time on the host, each freed when its call returns.

use super::PluginLimits;
use super::bindings::cascade::plugin::types::NamedTensor;
use super::inference::MAX_DIMS;

/// Most output tensors in one answer. Models have a handful of outputs; the bound keeps the
/// metadata allowance of [`crossing_budget`] small.
pub(crate) const MAX_OUTPUTS: usize = 64;

/// Bytes the host may allocate lifting one crossing it does not read through views: the
/// outcome, or a generated host call's arguments. `max_output_bytes` counts the tensor bytes,
/// names and label of an answer; the host also allocates each output's record and its
/// dimensions, allowed for here up to [`MAX_OUTPUTS`] outputs of [`MAX_DIMS`] dimensions.
pub(super) fn crossing_budget(limits: &PluginLimits) -> usize {
    let per_output = size_of::<NamedTensor>() + MAX_DIMS * size_of::<u32>();
    limits.max_output_bytes.saturating_add(MAX_OUTPUTS * per_output)
}

/// Bytes of tensors (data, dimensions and names) one `compute` call may pass: the plugin's
/// memory cap, all a guest can hold once.
pub(super) fn compute_budget(limits: &PluginLimits) -> usize {
    limits.max_memory_bytes
}
