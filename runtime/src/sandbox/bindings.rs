//! Host bindings generated from the guest SDK's WIT world (`guest-sdk/wit/plugin.wit`).
//!
//! The generated types, the `handle` export and the config capability are used as
//! generated. The inference and logging capabilities are linked by hand instead
//! (`inference::add_to_linker`, `logging::add_to_linker`), because their generated `Host`
//! traits receive the guest's tensors and messages already copied to the host, and those
//! two read them in guest memory first (see `budget.rs`).
//!
//! The `handle` export is called asynchronously: a guest runs on a fiber of its own and
//! yields to the async runtime at each epoch tick (`instance.rs`), so it runs on the worker
//! that holds its request without stalling that worker's other requests.

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "plugin",
    exports: { default: async },
});
