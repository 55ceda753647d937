//! The backend conformance suite: written once, run for every backend.
//!
//! The reference is plain tract ([`TractBackend::without_rewrites`]): the graph as tract
//! itself loads it. Every backend under test — tract with its load-time rewrites, and wgpu
//! (lavapipe on a machine without a GPU) — must agree with it on the committed test split: fp32 logits within 1e-4
//! relative, int8 argmax on at least 99.9% of images; a batch of N must equal N single runs;
//! bad inputs and broken files must give the documented errors.

use std::sync::{Arc, OnceLock};

use cascade_runtime::config::{ModelSpec, ResolvedModel};
use cascade_runtime::{
    Backend, BackendError, BackendKind, Digits, ModelStore, Precision, PreparedModel, ReferenceModel, Split,
    Tensor, TractBackend, WgpuBackend, reference,
};

/// Every backend the suite checks.
fn backends_under_test() -> Vec<Arc<dyn Backend>> {
    let mut all: Vec<Arc<dyn Backend>> = vec![Arc::new(TractBackend::new())];
    if let Some(gpu) = wgpu_backend() {
        all.push(Arc::new(gpu));
    }
    all
}

/// One wgpu backend (one device) shared by every test, or None when there is no adapter and
/// `CI` is unset. With `CI` set, lavapipe is expected: no adapter fails the test.
pub(crate) fn wgpu_backend() -> Option<WgpuBackend> {
    static GPU: OnceLock<Result<WgpuBackend, String>> = OnceLock::new();
    match GPU.get_or_init(|| WgpuBackend::new().map_err(|e| e.to_string())) {
        Ok(gpu) => Some(gpu.clone()),
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("skipping the wgpu part: {why} (CI is unset; with CI set this fails)");
            None
        }
        Err(why) => panic!("CI is set, so the wgpu backend must run (lavapipe at least): {why}"),
    }
}

fn model_bytes(key: ReferenceModel) -> Vec<u8> {
    std::fs::read(key.path(&reference::default_models_dir())).unwrap()
}

fn test_split() -> Digits {
    Digits::load_split(&reference::default_models_dir(), Split::Test).unwrap()
}

/// Logits of `images` (a range of the split), run `batch` at a time.
fn logits(model: &dyn PreparedModel, digits: &Digits, batch: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(digits.len() * 10);
    for start in (0..digits.len()).step_by(batch) {
        let end = (start + batch).min(digits.len());
        let input = reference::images_to_input(digits.images(start..end)).unwrap();
        out.extend(model.run(&[input]).unwrap()[0].to_f32().unwrap());
    }
    out
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-4 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn fp32_outputs_match_plain_tract_within_1e_4_relative() {
    let test = test_split();
    for key in [ReferenceModel::EdgeFp32, ReferenceModel::CentralFp32] {
        let bytes = model_bytes(key);
        let expected =
            logits(&*TractBackend::without_rewrites().prepare(key.key(), &bytes).unwrap(), &test, 100);
        for backend in backends_under_test() {
            let model = backend.prepare(key.key(), &bytes).unwrap();
            let got = logits(&*model, &test, 100);
            assert_eq!(got.len(), expected.len());
            let worst = got.iter().zip(&expected).position(|(&a, &b)| !close(a, b));
            assert!(
                worst.is_none(),
                "{} on {}: logit {} is {} where plain tract gives {}",
                backend.kind().name(),
                key.key(),
                worst.unwrap_or(0),
                got[worst.unwrap_or(0)],
                expected[worst.unwrap_or(0)]
            );
        }
    }
}

#[test]
fn int8_argmax_agrees_with_plain_tract_on_999_per_mille() {
    let test = test_split();
    let key = ReferenceModel::EdgeInt8;
    let bytes = model_bytes(key);
    let expected = reference::predict(
        &*TractBackend::without_rewrites().prepare(key.key(), &bytes).unwrap(),
        &test,
        100,
    )
    .unwrap();
    for backend in backends_under_test() {
        let model = backend.prepare(key.key(), &bytes).unwrap();
        let got = reference::predict(&*model, &test, 100).unwrap();
        let agree = got.iter().zip(&expected).filter(|(a, b)| a == b).count();
        assert!(
            agree * 1000 >= expected.len() * 999,
            "{}: argmax agrees on {agree} of {} images",
            backend.kind().name(),
            expected.len()
        );
    }
}

#[test]
fn batch_of_n_equals_n_single_runs() {
    let test = test_split();
    for backend in backends_under_test() {
        for key in ReferenceModel::ALL {
            let model = backend.prepare(key.key(), &model_bytes(key)).unwrap();
            for n in [2, 8, 13] {
                let batched = model.run(&[reference::images_to_input(test.images(0..n)).unwrap()]).unwrap()
                    [0]
                .to_f32()
                .unwrap();
                assert_eq!(batched.len(), n * 10);
                for i in 0..n {
                    let single = model.run(&[reference::images_to_input(test.image(i)).unwrap()]).unwrap()[0]
                        .to_f32()
                        .unwrap();
                    for (a, b) in single.iter().zip(&batched[i * 10..(i + 1) * 10]) {
                        assert!(
                            close(*a, *b),
                            "{} {} batch {n}: image {i}: {a} alone vs {b} in the batch",
                            backend.kind().name(),
                            key.key()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn bad_inputs_give_input_errors_naming_the_model() {
    for backend in backends_under_test() {
        let model = backend.prepare("edge", &model_bytes(ReferenceModel::EdgeInt8)).unwrap();
        let name = backend.kind().name();
        let cases: Vec<(Vec<Tensor>, &str)> = vec![
            (
                vec![Tensor::from_f32(vec![1, 1, 27, 28], &[0.0; 27 * 28]).unwrap()],
                "must be shaped [batch, 1, 28, 28]",
            ),
            (
                vec![Tensor::from_u8(vec![1, 1, 28, 28], vec![0; 784]).unwrap()],
                "input input must be f32, got u8",
            ),
            (vec![Tensor::from_f32(vec![0, 1, 28, 28], &[]).unwrap()], "empty batch"),
            (vec![], "expected 1 input tensors, got 0"),
            (vec![Tensor::from_f32(vec![784], &[0.0; 784]).unwrap()], "must be shaped"),
        ];
        for (inputs, says) in cases {
            let err = model.run(&inputs).unwrap_err();
            assert!(matches!(err, BackendError::Input { .. }), "{name}: {err}");
            let text = err.to_string();
            assert!(text.starts_with("model edge: bad input: ") && text.contains(says), "{name}: {text}");
        }
        // The model still serves after refusing bad inputs.
        let good = reference::images_to_input(&[0; 784]).unwrap();
        assert_eq!(model.run(&[good]).unwrap()[0].shape(), [1, 10]);
    }
}

#[test]
fn broken_files_are_refused_naming_model_and_op() {
    let fp32 = model_bytes(ReferenceModel::EdgeFp32);
    // Renaming an op type in place keeps the protobuf valid and gives an op nobody implements.
    let renamed = replace_all(&fp32, b"Relu", b"Rexu");
    assert_ne!(renamed, fp32, "the edge model has Relu nodes");
    for backend in backends_under_test() {
        let name = backend.kind().name();
        let err = backend.prepare("garbage", b"this is not an onnx file").unwrap_err();
        assert!(matches!(err, BackendError::Parse { .. }), "{name}: {err}");
        assert!(err.to_string().starts_with("model garbage: cannot parse the ONNX file"), "{name}: {err}");

        let err = backend.prepare("truncated", &fp32[..fp32.len() / 2]).unwrap_err();
        assert!(matches!(err, BackendError::Parse { .. }), "{name}: {err}");
        assert!(err.to_string().starts_with("model truncated: "), "{name}: {err}");

        let err = backend.prepare("odd", &renamed).unwrap_err();
        match &err {
            BackendError::UnsupportedOp { model, op, .. } => {
                assert_eq!((model.as_str(), op.as_str()), ("odd", "Rexu"), "{name}: {err}");
            }
            other => panic!("{name}: expected an unsupported op, got {other}"),
        }
        assert!(err.to_string().contains("uses op Rexu"), "{name}: {err}");
    }
}

#[test]
fn wgpu_refuses_an_op_its_kernels_do_not_cover_naming_it() {
    let Some(gpu) = wgpu_backend() else { return };
    // Tanh is a real ONNX op that tract runs but no wgpu kernel covers; same length as Relu,
    // so the protobuf stays valid.
    let tanh = replace_all(&model_bytes(ReferenceModel::EdgeFp32), b"Relu", b"Tanh");
    TractBackend::new().prepare("tanh", &tanh).unwrap();
    let err = gpu.prepare("tanh", &tanh).unwrap_err();
    match &err {
        BackendError::UnsupportedOp { model, op, node, backend } => {
            assert_eq!((model.as_str(), op.as_str(), *backend), ("tanh", "Tanh", "wgpu"), "{err}");
            assert!(node.starts_with("relu"), "{err}");
        }
        other => panic!("expected an unsupported op, got {other}"),
    }
    assert!(err.to_string().contains("uses op Tanh, which the wgpu backend cannot run"), "{err}");
}

#[test]
fn wgpu_concurrent_runs_of_one_model_are_each_correct() {
    let Some(gpu) = wgpu_backend() else { return };
    let test = test_split();
    let bytes = model_bytes(ReferenceModel::EdgeFp32);
    let model = gpu.prepare("edge", &bytes).unwrap();
    let expected: Vec<Vec<f32>> = (0..4)
        .map(|t| {
            let input = reference::images_to_input(test.images(t * 5..t * 5 + 5)).unwrap();
            model.run(&[input]).unwrap()[0].to_f32().unwrap()
        })
        .collect();
    std::thread::scope(|s| {
        for (t, want) in expected.iter().enumerate() {
            let (model, test) = (&model, &test);
            s.spawn(move || {
                // Same batch size on every thread: they share one plan and must take turns.
                for _ in 0..20 {
                    let input = reference::images_to_input(test.images(t * 5..t * 5 + 5)).unwrap();
                    assert_eq!(&model.run(&[input]).unwrap()[0].to_f32().unwrap(), want, "thread {t}");
                }
            });
        }
    });
}

#[test]
fn wgpu_batches_sharing_a_plan_give_the_same_items() {
    let Some(gpu) = wgpu_backend() else { return };
    let test = test_split();
    for key in [ReferenceModel::EdgeInt8, ReferenceModel::CentralFp32] {
        let model = gpu.prepare(key.key(), &model_bytes(key)).unwrap();
        let run = |n: usize| {
            model.run(&[reference::images_to_input(test.images(0..n)).unwrap()]).unwrap()[0].to_f32().unwrap()
        };
        // 9, 13 and 16 items share the plan for 16: the rows a smaller batch leaves behind
        // hold the previous run's items and must not leak into the answer.
        let sixteen = run(16);
        assert_eq!(run(9), sixteen[..9 * 10], "{}", key.key());
        assert_eq!(run(13), sixteen[..13 * 10], "{}", key.key());
        assert_eq!(run(16), sixteen, "{}", key.key());
    }
}

#[test]
fn the_model_store_runs_wgpu_models_on_wgpu_and_falls_back_only_when_allowed() {
    let Some(gpu) = wgpu_backend() else { return };
    let model = |bytes: Vec<u8>, fallback_to_tract| {
        let spec = ModelSpec {
            path: "m.onnx".into(),
            backend: BackendKind::Wgpu,
            fallback_to_tract,
            pinned: None,
            inputs: Default::default(),
        };
        ResolvedModel::new(spec, bytes)
    };
    let int8 = ModelStore::prepare("int8", &model(model_bytes(ReferenceModel::EdgeInt8), false)).unwrap();
    assert_eq!((int8.backend, int8.model.info().precision), (BackendKind::Wgpu, Precision::Int8));
    assert!(int8.describe().starts_with("runs on wgpu ("), "{}", int8.describe());

    let tanh = replace_all(&model_bytes(ReferenceModel::EdgeFp32), b"Relu", b"Tanh");
    let err = ModelStore::prepare("tanh", &model(tanh.clone(), false)).unwrap_err().to_string();
    assert!(err.contains("uses op Tanh, which the wgpu backend cannot run"), "{err}");
    assert!(err.contains("set fallback_to_tract = true"), "{err}");
    let fallen = ModelStore::prepare("tanh", &model(tanh, true)).unwrap();
    assert_eq!(fallen.backend, BackendKind::Tract);
    // On a software adapter tract is preferred before wgpu is even asked.
    let why = if gpu.adapter().is_cpu { "runs on the CPU" } else { "uses op Tanh" };
    assert!(fallen.fallback.as_deref().unwrap_or("").contains(why), "{:?}", fallen.fallback);
    assert!(fallen.describe().contains("falls back: runs on tract, fp32"), "{}", fallen.describe());

    // A model wgpu can run, allowed to fall back, on a software adapter: tract is faster.
    let fp32 = ModelStore::prepare("fp32", &model(model_bytes(ReferenceModel::EdgeFp32), true)).unwrap();
    if gpu.adapter().is_cpu {
        assert_eq!(fp32.backend, BackendKind::Tract);
        assert!(
            fp32.describe().contains("runs on the CPU; falls back: runs on tract, fp32"),
            "{}",
            fp32.describe()
        );
    } else {
        assert_eq!(fp32.backend, BackendKind::Wgpu);
    }
}

fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = haystack.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
    out
}

/// onnxruntime's predicted class for every image of the test split, from the peer venv.
fn onnxruntime_predictions(key: ReferenceModel) -> Vec<usize> {
    let python = cascade_testkit::onnx_python();
    let dir = reference::default_models_dir();
    let script = r#"
import json, sys
import numpy as np
import onnxruntime as ort
model, images = sys.argv[1], sys.argv[2]
raw = open(images, "rb").read()
n = int.from_bytes(raw[4:8], "big")
x = np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, 1, 28, 28).astype(np.float32) / 255.0
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
print(json.dumps(sess.run(None, {"input": x})[0].argmax(1).tolist()))
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .arg(key.path(&dir))
        .arg(dir.join("data/test-images.idx3-ubyte"))
        .output()
        .unwrap();
    assert!(out.status.success(), "onnxruntime: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn qdq_int8_runs_as_int8_on_tract_and_keeps_the_files_answers() {
    let test = test_split();
    let key = ReferenceModel::EdgeInt8Qdq;
    let bytes = model_bytes(key);
    let expected = onnxruntime_predictions(key);
    assert_eq!(expected.len(), test.len());
    let tract = TractBackend::new().prepare(key.key(), &bytes).unwrap();
    assert_eq!(tract.info().precision, Precision::Int8);
    // Plain tract reads the QDQ file literally, in fp32: the form the rewrites replace.
    let plain = TractBackend::without_rewrites().prepare(key.key(), &bytes).unwrap();
    assert_eq!(plain.info().precision, Precision::Int8AsFp32);
    let agreement = |got: &[usize]| got.iter().zip(&expected).filter(|(a, b)| a == b).count();
    let got = reference::predict(&*tract, &test, 100).unwrap();
    // The file's own arithmetic, read literally in fp32, is the reference: the int8 rewrite
    // must not change an answer beyond a near-tie per thousand.
    let literal = reference::predict(&*plain, &test, 100).unwrap();
    let same = got.iter().zip(&literal).filter(|(a, b)| a == b).count();
    assert!(same * 1000 >= test.len() * 999, "tract: argmax agrees with the literal reading on {same}");
    // onnxruntime's own int8 kernels differ by CPU: on an AVX2 machine without VNNI its u8s8
    // path rounds differently (measured: 1995 of 2000 against both ours and the literal
    // reading, which agree on all 2000). Within half a percent of it, on every machine.
    let agree = agreement(&got);
    assert!(
        agree * 1000 >= expected.len() * 995,
        "tract: argmax agrees with onnxruntime on {agree} of {}",
        expected.len()
    );
    // wgpu runs the QDQ graph through its generic path; it must load and agree as well.
    if let Some(gpu) = wgpu_backend() {
        let model = gpu.prepare(key.key(), &bytes).unwrap();
        assert_eq!(model.info().precision, Precision::Int8AsFp32);
        let agree = agreement(&reference::predict(&*model, &test, 100).unwrap());
        assert!(agree * 1000 >= expected.len() * 995, "wgpu: argmax agrees with onnxruntime on {agree}");
    }
}

#[test]
fn inputs_and_outputs_carry_the_graphs_names_on_every_backend() {
    for backend in backends_under_test() {
        for key in ReferenceModel::ALL {
            let model = backend.prepare(key.key(), &model_bytes(key)).unwrap();
            let info = model.info();
            let names = |specs: &[cascade_runtime::TensorSpec]| {
                specs.iter().map(|s| s.describe()).collect::<Vec<_>>()
            };
            assert_eq!(
                names(&info.inputs),
                ["input f32 [batch, 1, 28, 28]"],
                "{} {}",
                backend.kind().name(),
                key.key()
            );
            assert_eq!(
                names(&info.outputs),
                ["logits f32 [batch, 10]"],
                "{} {}",
                backend.kind().name(),
                key.key()
            );
        }
    }
}

#[test]
fn a_config_fixes_free_input_dimensions_and_a_model_without_them_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let free = dir.path().join("free.onnx");
    // The fp32 edge model with height and width left free, as published models often are.
    let script = "import onnx, sys\n\
                  m = onnx.load(sys.argv[1])\n\
                  d = m.graph.input[0].type.tensor_type.shape.dim\n\
                  d[2].dim_param = 'H'\n\
                  d[3].dim_param = 'W'\n\
                  onnx.save(m, sys.argv[2])\n";
    let status = std::process::Command::new(cascade_testkit::onnx_python())
        .args(["-c", script])
        .arg(ReferenceModel::EdgeFp32.path(&reference::default_models_dir()))
        .arg(&free)
        .status()
        .unwrap();
    assert!(status.success());
    let config = |inputs: &str| {
        let text = format!(
            "[models.ocr]\npath = {:?}\n{inputs}\n[plugins.p]\npath = \"p.wasm\"\nmodels = [\"ocr\"]\n\
             [routes.r]\nplugin = \"p\"\nthresholds = {{ normal = 0.8 }}\n",
            free.display().to_string()
        );
        std::fs::write(dir.path().join("p.wasm"), b"plugin").unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(&file, text).unwrap();
        let resolved = cascade_runtime::config::load(&file).unwrap().resolve().unwrap();
        ModelStore::prepare("ocr", &resolved.models["ocr"])
    };
    let err = config("").unwrap_err().to_string();
    assert_eq!(
        err,
        "model ocr: input input has free dimensions: the file says [N, 1, H, W]; set \
         [models.ocr.inputs.input] shape = [1, H, W] (numbers for the dimensions after the batch)"
    );
    let loaded = config("[models.ocr.inputs.input]\nbatch = \"N\"\nshape = [1, 28, 28]\n").unwrap();
    assert_eq!(
        loaded.describe_tensors(),
        ["input input f32 [batch, 1, 28, 28]", "output logits f32 [batch, 10]"]
    );
    let test = test_split();
    let want = logits(
        &*TractBackend::new().prepare("edge", &model_bytes(ReferenceModel::EdgeFp32)).unwrap(),
        &test,
        100,
    );
    assert_eq!(logits(&*loaded.model, &test, 100), want);
    // A dimension that contradicts the file is refused, naming it.
    let err = config("[models.ocr.inputs.input]\nshape = [3, 28, 28]\n").unwrap_err().to_string();
    assert!(err.contains("dimension 1 is 1 in the file but 3 in [models.ocr.inputs.input] shape"), "{err}");
}
