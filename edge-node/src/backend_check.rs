//! What `edge-node check` says about a model's backend: which backend will run it and with
//! what arithmetic, found by preparing it as the node would (including the fallback to tract).

use cascade_runtime::config::ResolvedModel;
use cascade_runtime::{Backend, BackendKind, TractBackend, WgpuBackend};

/// Why a `wgpu` model that may fall back to tract should: the only adapter is a software
/// one (lavapipe, on the CPU), where tract runs the same model far faster (the central
/// model at batch 1: about 30x, `edge-node bench backends`). A model that may not fall back runs on it
/// anyway: the config asked for wgpu and nothing else.
pub(crate) fn prefer_tract_over_software_adapter(m: &ResolvedModel) -> Option<String> {
    if m.spec.backend != BackendKind::Wgpu || !m.spec.fallback_to_tract {
        return None;
    }
    let gpu = WgpuBackend::shared().ok()?;
    let a = gpu.adapter();
    a.is_cpu.then(|| format!("the only wgpu adapter, {} via {}, runs on the CPU", a.name, a.api))
}

/// One line: the backend that would run model `name`, its precision, or why it cannot load.
pub fn describe(name: &str, m: &ResolvedModel) -> String {
    let on_tract = |prefix: String| match TractBackend::new().prepare(name, &m.bytes) {
        Ok(p) => format!("{prefix}runs on tract, {}", p.info().precision.describe()),
        Err(e) => format!("{prefix}cannot load: {e}"),
    };
    if m.spec.backend != BackendKind::Wgpu {
        return on_tract(String::new());
    }
    if let Some(why) = prefer_tract_over_software_adapter(m) {
        return on_tract(format!("{why}; falls back: "));
    }
    let prepared = WgpuBackend::shared().and_then(|gpu| Ok((gpu.prepare(name, &m.bytes)?, gpu)));
    match prepared {
        Ok((p, gpu)) => {
            let a = gpu.adapter();
            let cpu = if a.is_cpu { ", a CPU adapter: GPU speed is not measured here" } else { "" };
            format!("runs on wgpu ({} via {}{cpu}), {}", a.name, a.api, p.info().precision.describe())
        }
        Err(e) if m.spec.fallback_to_tract => on_tract(format!("wgpu cannot run it ({e}); falls back: ")),
        Err(e) => format!("cannot load: wgpu cannot run it ({e}) and fallback_to_tract is false"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::{Node, NodeError};
    use cascade_runtime::{ReferenceModel, config, reference};

    /// A node config whose one model (`model.onnx`) asks for wgpu.
    fn config_with(dir: &std::path::Path, model: &[u8], fallback: bool) -> std::path::PathBuf {
        std::fs::write(dir.join("model.onnx"), model).unwrap();
        std::fs::write(dir.join("p.wasm"), b"not a component").unwrap();
        let text = format!(
            "[models.m]\npath = \"model.onnx\"\nbackend = \"wgpu\"\nfallback_to_tract = {fallback}\n\
             [plugins.p]\npath = \"p.wasm\"\nmodels = [\"m\"]\n\
             [routes.r]\nplugin = \"p\"\nthresholds = {{ normal = 0.8 }}\n"
        );
        let path = dir.join("node.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn tanh_model() -> Vec<u8> {
        // Tanh (tract runs it, no wgpu kernel covers it) in place of Relu: same length, so
        // the protobuf stays valid.
        let mut bytes =
            std::fs::read(ReferenceModel::EdgeFp32.path(&reference::default_models_dir())).unwrap();
        for i in 0..bytes.len() - 4 {
            if &bytes[i..i + 4] == b"Relu" {
                bytes[i..i + 4].copy_from_slice(b"Tanh");
            }
        }
        bytes
    }

    #[test]
    fn a_wgpu_model_runs_on_wgpu_falls_back_only_when_allowed_and_check_says_which() {
        if WgpuBackend::shared().is_err() && std::env::var_os("CI").is_none() {
            eprintln!("skipping: no wgpu adapter (CI is unset)");
            return;
        }
        let rt = tokio::runtime::Runtime::new().unwrap();
        let _inside = rt.enter();
        let dir = tempfile::tempdir().unwrap();
        let fp32 = std::fs::read(ReferenceModel::EdgeFp32.path(&reference::default_models_dir())).unwrap();

        // Runs on wgpu: the node gets past the model and stops at the (broken) plugin.
        let cfg = config::load(&config_with(dir.path(), &fp32, false)).unwrap().resolve().unwrap();
        let line = describe("m", &cfg.models["m"]);
        assert!(line.starts_with("runs on wgpu (") && line.ends_with(", fp32"), "{line}");
        let err = Node::new(cfg).unwrap_err();
        assert!(matches!(err, NodeError::Sandbox(_)), "{err}");

        // An op wgpu cannot run, no fallback: refused, naming the op.
        let cfg = config::load(&config_with(dir.path(), &tanh_model(), false)).unwrap().resolve().unwrap();
        let line = describe("m", &cfg.models["m"]);
        assert!(
            line.starts_with("cannot load: wgpu cannot run it") && line.contains("uses op Tanh"),
            "{line}"
        );
        let err = Node::new(cfg).unwrap_err();
        assert!(matches!(err, NodeError::Backend { .. }), "{err}");
        assert!(
            err.to_string().contains("uses op Tanh")
                && err.to_string().contains("fallback_to_tract is false")
        );

        // With the fallback: loads on tract, and check says so.
        let cfg = config::load(&config_with(dir.path(), &tanh_model(), true)).unwrap().resolve().unwrap();
        let line = describe("m", &cfg.models["m"]);
        assert!(line.contains("falls back: runs on tract, fp32"), "{line}");
        let err = Node::new(cfg).unwrap_err();
        assert!(matches!(err, NodeError::Sandbox(_)), "{err}");

        // A model wgpu can run, with the fallback, on a software adapter: tract is faster.
        let cfg = config::load(&config_with(dir.path(), &fp32, true)).unwrap().resolve().unwrap();
        let line = describe("m", &cfg.models["m"]);
        if WgpuBackend::shared().unwrap().adapter().is_cpu {
            assert!(line.contains("runs on the CPU; falls back: runs on tract, fp32"), "{line}");
        } else {
            assert!(line.starts_with("runs on wgpu ("), "{line}");
        }
    }
}
