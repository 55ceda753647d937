//! Plugins compiled ahead of time, so that a device's node needs no compiler.
//!
//! `edge-node plugin build --target <triple>` writes, beside the component, the same plugin
//! compiled for that target ([`precompile`]): wasmtime's own serialized component, made with
//! the sandbox's compile settings ([`super::engine::compile_settings`]). It is a plugin file
//! like any other, pinned by its sha256 in the node config. A node loads either kind
//! ([`component`]); one built without the `compiler` feature (the device build) loads only
//! precompiled files, and refuses a component with a line that says how to precompile it.
//! A precompiled file made by another wasmtime, for another target, or with other compile
//! settings is refused naming what it was made for and what this node is.

use wasmtime::component::Component;
use wasmtime::{Engine, Precompiled};

/// The wasmtime this node runs, which made every precompiled file it can load (a test holds
/// it to `Cargo.lock`).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// The target this node was built for, as `--target` names it (`x86_64-unknown-linux-gnu`,
/// `aarch64-unknown-linux-gnu`, `aarch64-apple-darwin`, ...).
pub fn host_target() -> String {
    let (arch, os) = (std::env::consts::ARCH, std::env::consts::OS);
    match os {
        "macos" => format!("{arch}-apple-darwin"),
        "windows" => format!("{arch}-pc-windows-msvc"),
        _ if cfg!(target_env = "musl") => format!("{arch}-unknown-{os}-musl"),
        _ => format!("{arch}-unknown-{os}-gnu"),
    }
}

/// `component` (a plugin's `.wasm`) compiled for `target`, ready for [`component`] on a node
/// of that target; or why not, in one line.
#[cfg(feature = "compiler")]
pub fn precompile(component: &[u8], target: &str) -> Result<Vec<u8>, String> {
    let mut config = wasmtime::Config::new();
    super::engine::compile_settings(&mut config, super::SandboxConfig::default().max_wasm_stack);
    config.target(target).map_err(|e| format!("target `{target}`: {e}"))?;
    let engine = Engine::new(&config).map_err(|e| format!("target `{target}`: {e}"))?;
    engine.precompile_component(component).map_err(|e| format!("{e:#}").replace('\n', " "))
}

/// The plugin in `bytes`: a precompiled file deserialized, or a component compiled here
/// (with the compiler); otherwise why not, in one line that says what to do.
pub(super) fn component(engine: &Engine, bytes: &[u8]) -> Result<Component, String> {
    let host = host_target();
    match Engine::detect_precompiled(bytes) {
        Some(Precompiled::Component) => {
            // SAFETY: these are the bytes of the plugin file this node's config names (and
            // pins by sha256 where it pins it), trusted as the node's own binary is; wasmtime
            // checks the file's format, version, target and compile settings before use.
            unsafe { Component::deserialize(engine, bytes) }.map_err(|e| {
                let why = format!("{e:#}").replace('\n', " ");
                format!(
                    "the precompiled file does not fit this node ({why}); this node is wasmtime {WASMTIME_VERSION} on {host}: rebuild it with `edge-node plugin build <crate> --target {host}`"
                )
            })
        }
        Some(Precompiled::Module) => {
            Err("a precompiled core module, not a component: build plugins with `edge-node plugin build`"
                .into())
        }
        None => compile(engine, bytes, &host),
    }
}

#[cfg(feature = "compiler")]
fn compile(engine: &Engine, bytes: &[u8], _host: &str) -> Result<Component, String> {
    Component::new(engine, bytes).map_err(|e| format!("{e:#}").replace('\n', " "))
}

#[cfg(not(feature = "compiler"))]
fn compile(_engine: &Engine, _bytes: &[u8], host: &str) -> Result<Component, String> {
    Err(format!(
        "not precompiled, and this node was built without the compiler: precompile it with `edge-node plugin build <crate> --target {host}` and set the plugin's path to the .cwasm file it writes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The version named in refusals is the one the build links.
    #[test]
    fn the_wasmtime_version_named_is_the_one_in_cargo_lock() {
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
        let version = lock
            .split("[[package]]")
            .find(|p| p.contains("\nname = \"wasmtime\"\n"))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
            .map(|v| v.trim_end_matches('"'))
            .expect("wasmtime in Cargo.lock");
        assert_eq!(version, WASMTIME_VERSION);
    }

    #[test]
    fn the_host_target_is_a_triple_for_this_machine() {
        let host = host_target();
        assert!(host.starts_with(std::env::consts::ARCH), "{host}");
        assert_eq!(host.split('-').count(), if cfg!(target_os = "macos") { 3 } else { 4 }, "{host}");
    }

    /// The device build: a component (its header is enough) is refused before anything is
    /// compiled, with the command that makes a file it can load.
    #[cfg(not(feature = "compiler"))]
    #[test]
    fn without_compiler_a_component_is_refused_saying_how_to_precompile() {
        let mut config = wasmtime::Config::new();
        super::super::engine::compile_settings(&mut config, 512 << 10);
        let engine = Engine::new(&config).unwrap();
        let err = component(&engine, b"\0asm\x0d\0\x01\0").unwrap_err();
        assert!(err.contains("built without the compiler"), "{err}");
        assert!(err.contains(&format!("--target {}", host_target())), "{err}");
        assert!(!err.contains('\n'));
    }
}
