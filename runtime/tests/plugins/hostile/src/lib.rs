//! A plugin that misbehaves in the way its request's `mode` parameter asks, so the sandbox
//! tests can check that each misbehaviour fails only its own request, with its own error.
//!
//! Modes: `loop` (never returns), `grow` (allocates without bound), `recurse` (unbounded
//! recursion), `panic`, `oversized` (a 4 MiB answer), `forbidden-model` (calls a model
//! outside its allowlist), `garbage-shape` (sends a tensor whose bytes do not match its
//! shape), `spin` (busy work for `iterations`, then answers), `ok` (answers with its
//! configured `version`).

use std::hint::black_box;

use cascade_guest_sdk::{Answer, DType, Outcome, Plugin, PluginError, Request, Tensor, inference};

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
            "ok" => answer(version),
            other => Err(PluginError::BadRequest(format!("unknown mode {other}"))),
        }
    }
}

cascade_guest_sdk::export_plugin!(Hostile);
