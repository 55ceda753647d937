//! A plugin that misbehaves in the way its request's `mode` parameter asks, so the sandbox
//! tests can check that each misbehaviour fails only its own request, with its own error.
//!
//! Modes: `loop` (never returns), `grow` (allocates without bound), `recurse` (unbounded
//! recursion), `panic`, `oversized` (a 4 MiB answer), `forbidden-model` (calls a model
//! outside its allowlist), `garbage-shape` (sends a tensor whose bytes do not match its
//! shape), `spin` (busy work for `iterations`, then answers), `ok` (answers with its
//! configured `version`), and the ones below, whose sizes and counts are parameters:
//!
//! - `alias-outputs`: answers with `copies` outputs (default 30) that all point at one buffer
//!   of `bytes` (default 4 MiB): little guest memory, `copies` times as much for a host that
//!   copies each list;
//! - `alias-inputs`: passes the edge model `copies` inputs that all point at one buffer of
//!   `bytes`, the same trick on `compute`'s arguments;
//! - `fill-outputs`: an honest answer as large as the limits allow: `outputs` outputs
//!   (default 64) of 8 dimensions and `bytes` bytes each;
//! - `log-flood`: logs `lines` lines (default 10,000) that try to forge node log lines with
//!   newlines and terminal escapes, one of them 64 KiB long, then answers;
//! - `model-loop`: calls the edge model in a loop forever, through the generated bindings.

use std::hint::black_box;

// The WIT world's own bindings, below the SDK: what a guest written without it would call.
use cascade_guest_sdk::__private::bindings::cascade::plugin::{inference as raw_inference, types as raw};
use cascade_guest_sdk::{Answer, DType, Outcome, Plugin, PluginError, Request, Tensor, inference, log};

/// What `log-flood` logs: a newline, then what a node's own error line looks like, then
/// terminal escapes that would clear the screen and hide the line before.
const FORGED_LINE: &str = "flood\n2030-01-01T00:00:00.000000Z ERROR cascade_runtime::node: upstream certificate \
                           rejected\r\u{1b}[2J\u{1b}[1A";

/// Length of the one long line `log-flood` logs.
const LONG_LINE_BYTES: usize = 64 << 10;

/// A numeric request parameter, or `default`.
fn number(request: &Request, key: &str, default: usize) -> usize {
    request.parameter(key).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `copies` byte vectors that all own the same `bytes`-long buffer.
///
/// Deliberately unsound, for a test plugin only: several `Vec`s owning one allocation. It
/// holds up here because nothing writes through them and the SDK's allocator never frees, so
/// the double frees of the post-return function do nothing. What the host receives is what a
/// hostile guest writing the canonical ABI by hand would send: many lists, one buffer.
fn aliases(copies: usize, bytes: usize) -> Vec<Vec<u8>> {
    let buffer: &'static mut [u8] = vec![7u8; bytes].leak();
    let ptr = buffer.as_mut_ptr();
    // SAFETY: see above; `ptr` is a live allocation of `bytes` bytes that is never freed.
    (0..copies).map(|_| unsafe { Vec::from_raw_parts(ptr, bytes, bytes) }).collect()
}

struct Hostile;

/// Recursion the compiler cannot turn into a loop (the result is squared after the call),
/// kept in wasm locals: it exhausts the engine's wasm stack, not the guest's shadow stack in
/// linear memory (whose overflow would show up as an out-of-bounds access instead).
#[allow(unconditional_recursion)] // the point: it never returns
fn recurse(depth: u64) -> u64 {
    let r = recurse(depth.wrapping_add(1));
    r.wrapping_mul(r).wrapping_add(depth)
}

fn answer(label: String) -> Result<Outcome, PluginError> {
    Ok(Outcome::Answer(Answer::new(1.0).with_label(label)))
}

impl Plugin for Hostile {
    fn handle(request: Request) -> Result<Outcome, PluginError> {
        let version = cascade_guest_sdk::config::get("version").unwrap_or_default();
        match request.parameter("mode").unwrap_or("ok") {
            "loop" => {
                let mut i = 0u64;
                loop {
                    i = black_box(i.wrapping_add(1));
                }
            }
            "grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "recurse" => answer(recurse(0).to_string()),
            "panic" => panic!("hostile plugin panics on purpose"),
            "oversized" => {
                let big = Tensor::from_u8(vec![4 << 20], vec![7; 4 << 20])?;
                Ok(Outcome::Answer(Answer::new(0.5).with_output("big", big)))
            }
            "forbidden-model" => {
                let input = Tensor::from_f32(vec![1, 1, 28, 28], &[0.0; 784])?;
                let out = inference::compute("central", vec![("input".into(), input)]);
                // Reaching here means the host let the call through: answer, so the test fails.
                answer(format!("central answered: {}", out.is_ok()))
            }
            "garbage-shape" => {
                let input = Tensor::from_parts_unchecked(DType::F32, vec![1, 3, 1 << 30], vec![0; 12]);
                inference::compute("edge", vec![("input".into(), input)])?;
                answer("edge accepted a garbage shape".into())
            }
            "spin" => {
                let n: u64 = request.parameter("iterations").and_then(|v| v.parse().ok()).unwrap_or(0);
                let mut x = 0u64;
                for i in 0..n {
                    x = black_box(x.wrapping_mul(31).wrapping_add(i));
                }
                answer(version)
            }
            "alias-outputs" => {
                let bytes = number(&request, "bytes", 4 << 20);
                let mut answer = Answer::new(0.5);
                for (i, data) in aliases(number(&request, "copies", 30), bytes).into_iter().enumerate() {
                    answer = answer.with_output(format!("out{i}"), Tensor::from_u8(vec![bytes], data)?);
                }
                Ok(Outcome::Answer(answer))
            }
            "alias-inputs" => {
                let bytes = number(&request, "bytes", 4 << 20);
                let inputs = aliases(number(&request, "copies", 30), bytes)
                    .into_iter()
                    .map(|data| Ok(("input".to_string(), Tensor::from_u8(vec![bytes], data)?)))
                    .collect::<Result<Vec<_>, PluginError>>()?;
                inference::compute("edge", inputs)?;
                answer("edge accepted aliased inputs".into())
            }
            "fill-outputs" => {
                let bytes = number(&request, "bytes", 1024);
                let mut answer = Answer::new(0.5);
                for i in 0..number(&request, "outputs", 64) {
                    let shape = vec![1, 1, 1, 1, 1, 1, 1, bytes];
                    answer = answer.with_output(format!("o{i:02}"), Tensor::from_u8(shape, vec![1; bytes])?);
                }
                Ok(Outcome::Answer(answer))
            }
            "log-flood" => {
                log::warn(&"x".repeat(LONG_LINE_BYTES));
                for i in 0..number(&request, "lines", 10_000) {
                    log::info(&format!("{i} {FORGED_LINE}"));
                }
                answer(version)
            }
            "model-loop" => {
                // The generated binding borrows its inputs, so a call allocates only its small
                // outputs (which the SDK's allocator never frees): memory lasts for well over
                // a hundred thousand calls, far past a plugin's deadline.
                let input = raw::NamedTensor {
                    name: "input".into(),
                    tensor: raw::Tensor {
                        dimensions: vec![1, 1, 28, 28],
                        ty: raw::TensorType::Fp32,
                        // One 28×28 image of f32 zeros.
                        data: vec![0; 28 * 28 * 4],
                    },
                };
                let mut calls = 0u64;
                loop {
                    black_box(raw_inference::compute("edge", std::slice::from_ref(&input)).is_ok());
                    calls = black_box(calls + 1);
                }
            }
            "ok" => answer(version),
            other => Err(PluginError::BadRequest(format!("unknown mode {other}"))),
        }
    }
}

cascade_guest_sdk::export_plugin!(Hostile);
