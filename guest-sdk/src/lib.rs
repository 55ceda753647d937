//! Write Cascade request-handler plugins in Rust.
//!
//! A plugin is a WebAssembly component that a Cascade node runs, in a fresh sandboxed
//! instance, for every request on a route. It gets the request's tensors, may run models
//! from the node's registry through the host, and either answers with a confidence or asks
//! the node to escalate the request upstream. The contract is the WIT world in
//! `guest-sdk/wit/plugin.wit` (`cascade:plugin@0.1.0`); this crate hides the generated
//! bindings behind a small API.
//!
//! # A complete classifier plugin
//!
//! ```no_run
//! use cascade_guest_sdk::{Answer, Outcome, Plugin, PluginError, Request, Tensor};
//! use cascade_guest_sdk::{confidence, image, inference};
//!
//! struct Digits;
//!
//! impl Plugin for Digits {
//!     fn handle(request: Request) -> Result<Outcome, PluginError> {
//!         let pixels = request.first_input()?.as_u8()?;
//!         let input = Tensor::from_f32(vec![1, 1, 28, 28], &image::scale_u8(pixels))?;
//!         let outputs = inference::compute("edge", vec![("input".into(), input)])?;
//!         let logits = outputs.first().ok_or(PluginError::Inference("no output".into()))?.1.to_f32()?;
//!         let probs = confidence::softmax(&logits);
//!         let label = confidence::argmax(&probs).unwrap_or(0);
//!         Ok(Outcome::Answer(
//!             Answer::new(confidence::max_probability(&probs))
//!                 .with_output("probabilities", Tensor::from_f32(vec![1, probs.len()], &probs)?)
//!                 .with_label(label.to_string()),
//!         ))
//!     }
//! }
//!
//! cascade_guest_sdk::export_plugin!(Digits);
//! ```
//!
//! # Building it
//!
//! The plugin crate is a `cdylib` with `panic = "abort"` in its release profile (see
//! `examples/mnist-classifier/Cargo.toml`). Build it into a component with
//!
//! ```sh
//! edge-node plugin build path/to/crate -o plugin.wasm
//! ```
//!
//! which compiles for `wasm32-unknown-unknown` (with rustup's target if installed, else the
//! Debian toolchain that `tools/setup.sh` installs), wraps the core module as a component,
//! and prints its sha256: put that digest in the node config to pin the plugin.
//!
//! # The guest ABI, in short
//!
//! - Export `handle(request) -> result<outcome, plugin-error>`: one call per instance; the
//!   instance is discarded afterwards, so globals do not carry state between requests.
//! - Imports: [`inference`] (models on the plugin's allowlist only), [`log`] (to the node's
//!   tracing), [`config`] (the plugin's static settings). Nothing else: no files, sockets or
//!   clocks.
//! - Memory: the SDK installs a bump allocator that never frees (an instance lives for one
//!   request); the first 1 MiB comes from the initial memory image, so a typical request
//!   never grows linear memory.
//! - A panic aborts the instance; the SDK logs the panic message first, so the node's error
//!   for that request says why.
//!
//! The helpers ([`Tensor`], [`confidence`], [`image`]) are plain Rust and also work on the
//! host; the capability functions only work inside a plugin.

// Generated code: documented by the WIT file, not by rustdoc.
#[allow(missing_docs, unreachable_pub, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_cascade_plugin",
        default_bindings_module: "cascade_guest_sdk::__private::bindings",
    });
}

// Single-threaded guests only: the bump allocator has no locking.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
mod allocator;
pub mod confidence;
pub mod config;
pub mod image;
pub mod inference;
pub mod log;
mod plugin;
mod tensor;

#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: allocator::BumpAllocator = allocator::BumpAllocator;

pub use plugin::{Answer, Outcome, Plugin, PluginError, Request};
pub use tensor::{DType, Tensor, TensorError};

/// Glue used by [`export_plugin!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::Guest;
    pub use crate::plugin::dispatch;
    /// The generated bindings, for the export macro.
    pub mod bindings {
        pub use crate::bindings::*;
    }
}

/// Exports `$plugin` (a type implementing [`Plugin`]) as the component's `handle` function.
/// Call it once, at the top level of the plugin crate.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            struct CascadePluginExport;
            impl $crate::__private::Guest for CascadePluginExport {
                fn handle(
                    request: $crate::__private::bindings::cascade::plugin::types::Request,
                ) -> ::core::result::Result<
                    $crate::__private::bindings::cascade::plugin::types::Outcome,
                    $crate::__private::bindings::cascade::plugin::types::PluginError,
                > {
                    $crate::__private::dispatch::<$plugin>(request)
                }
            }
    $crate::__export_plugin_impl!(CascadePluginExport with_types_in $crate::__private::bindings);
        };
    };
}
