//! Host bindings generated from the guest SDK's WIT world (`guest-sdk/wit/plugin.wit`).

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "plugin",
    // A call to a model outside the allowlist ends the request (it is a capability
    // violation, not an error the guest may swallow), so that import may trap.
    imports: { "cascade:plugin/inference.compute": trappable },
});
