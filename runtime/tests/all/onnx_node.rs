//! Conformance on ONNX files the project did not make: onnx's own backend node test cases
//! for the ops the backends claim, on tract and on wgpu (lavapipe without a GPU).
//!
//! Each case either matches the expected outputs that ship with it (1e-4 relative for
//! floats, exactly for integers) under the graph's own output names, or is refused at load
//! with one line naming one of its ops, inputs or outputs. The cases come from the `onnx`
//! wheel in the peer venv (`tools/setup.sh`), written out once by `onnx_node_cases.py` into
//! `target/onnx-node-cases`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cascade_runtime::{Backend, BackendError, DType, Tensor, TractBackend};
use tract_onnx::data_resolver::FopenDataResolver;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::{DatumType, Framework, Tensor as TTensor};
use tract_onnx::tensor::{load_tensor, proto_from_reader};

/// The ONNX ops the backends claim: every op the reference models use and the wgpu kernels
/// cover. A case is run when its graph uses only these.
const CLAIMED: [&str; 13] = [
    "Add",
    "Conv",
    "DequantizeLinear",
    "Flatten",
    "Gemm",
    "MatMul",
    "MaxPool",
    "QLinearConv",
    "QLinearMatMul",
    "QuantizeLinear",
    "Relu",
    "Reshape",
    "Softmax",
];

/// The cases' directory, written on first use (or when the op list changed).
fn cases_dir() -> PathBuf {
    let python = cascade_testkit::onnx_python();
    let dir = cascade_testkit::repo().join("target/onnx-node-cases");
    let stamp = dir.join("ops");
    let wanted = CLAIMED.join(" ");
    if dir.join("done").exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return dir;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/all/onnx_node_cases.py");
    let out = Command::new(&python).arg(&script).arg(&dir).args(CLAIMED).output().unwrap();
    assert!(out.status.success(), "{}: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    std::fs::write(&stamp, &wanted).unwrap();
    dir
}

/// One case: its file, graph names and ops, inputs and expected outputs.
struct Case {
    name: String,
    bytes: Vec<u8>,
    ops: Vec<String>,
    inputs: Vec<String>,
    outputs: Vec<String>,
    /// `None` where tract cannot read the tensor (float8, 4-bit): such a case must be refused.
    given: Vec<Option<TTensor>>,
    expected: Vec<Option<TTensor>>,
}

fn load_case(dir: &Path) -> Case {
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    let proto: ModelProto = tract_onnx::onnx().proto_model_for_read(&mut &*bytes).unwrap();
    let graph = proto.graph.as_ref().unwrap();
    let inits: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let tensors = |kind: &str, n: usize| -> Vec<Option<TTensor>> {
        (0..n)
            .map(|i| {
                let file = dir.join(format!("test_data_set_0/{kind}_{i}.pb"));
                let t = proto_from_reader(std::fs::File::open(&file).unwrap()).unwrap();
                load_tensor(&FopenDataResolver, &t, None).ok()
            })
            .collect()
    };
    let inputs: Vec<String> =
        graph.input.iter().map(|i| i.name.clone()).filter(|n| !inits.contains(&n.as_str())).collect();
    let outputs: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    Case {
        name: dir.file_name().unwrap().to_string_lossy().into_owned(),
        ops: graph.node.iter().map(|n| n.op_type.clone()).collect(),
        given: tensors("input", inputs.len()),
        expected: tensors("output", outputs.len()),
        inputs,
        outputs,
        bytes,
    }
}

fn to_ours(t: &TTensor) -> Option<Tensor> {
    let dtype = match t.datum_type() {
        DatumType::F32 => DType::F32,
        DatumType::U8 => DType::U8,
        DatumType::I8 => DType::I8,
        DatumType::I32 => DType::I32,
        DatumType::I64 => DType::I64,
        _ => return None,
    };
    Tensor::new(dtype, t.shape().to_vec(), t.as_bytes().to_vec()).ok()
}

/// `Ok(true)`: matched; `Ok(false)`: refused at load as required; `Err`: what went wrong.
fn check(backend: &dyn Backend, case: &Case) -> Result<bool, String> {
    let model = match backend.prepare(&case.name, &case.bytes) {
        Ok(model) => model,
        Err(e) => return refusal(case, &e).map(|()| false),
    };
    let info = model.info();
    let names =
        |specs: &[cascade_runtime::TensorSpec]| specs.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    if names(&info.inputs) != case.inputs || names(&info.outputs) != case.outputs {
        return Err(format!(
            "names: inputs {:?} outputs {:?}, the graph says {:?} {:?}",
            names(&info.inputs),
            names(&info.outputs),
            case.inputs,
            case.outputs
        ));
    }
    let inputs = case.given.iter().map(|t| t.as_ref().and_then(to_ours)).collect::<Option<Vec<_>>>();
    let inputs = inputs.ok_or("loaded, though an input has a type no request can carry")?;
    let got = model.run(&inputs).map_err(|e| format!("run: {e}"))?;
    for ((name, want), got) in case.outputs.iter().zip(&case.expected).zip(&got) {
        let want = want
            .as_ref()
            .and_then(to_ours)
            .ok_or(format!("output {name}: an expected type we cannot hold"))?;
        if got.shape() != want.shape() || got.dtype() != want.dtype() {
            return Err(format!(
                "output {name}: {} {:?}, expected {} {:?}",
                got.dtype(),
                got.shape(),
                want.dtype(),
                want.shape()
            ));
        }
        if want.dtype() == DType::F32 {
            let (a, b) = (got.to_f32().unwrap(), want.to_f32().unwrap());
            // A NaN where a number is expected (or the other way round) is a mismatch too.
            let close = |x: f32, y: f32| (x - y).abs() <= 1e-6 + 1e-4 * y.abs() || (x.is_nan() && y.is_nan());
            if let Some(i) = (0..a.len()).find(|&i| !close(a[i], b[i])) {
                return Err(format!("output {name}[{i}]: {} where onnx expects {}", a[i], b[i]));
            }
        } else if got.data() != want.data() {
            return Err(format!("output {name}: integers differ from onnx's"));
        }
    }
    Ok(true)
}

/// A load refusal passes when it is one line naming one of the case's ops, inputs or outputs.
fn refusal(case: &Case, e: &BackendError) -> Result<(), String> {
    let text = e.to_string();
    if text.contains('\n') {
        return Err(format!("refusal of more than one line: {text:?}"));
    }
    let names_op = match e {
        BackendError::UnsupportedOp { op, .. } => case.ops.contains(op),
        _ => {
            case.ops.iter().any(|op| text.contains(&format!("({op})")) || text.contains(&format!("op {op}")))
        }
    };
    let names_tensor = case
        .inputs
        .iter()
        .chain(&case.outputs)
        .any(|n| text.contains(&format!("input {n}")) || text.contains(&format!("output {n}")));
    if names_op || names_tensor {
        Ok(())
    } else {
        Err(format!("refusal names none of its ops {:?} or tensors: {text}", case.ops))
    }
}

#[test]
fn onnx_node_cases_match_or_are_refused_in_one_line() {
    let dir = cases_dir();
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    entries.sort();
    let cases: Vec<Case> = entries.iter().map(|p| load_case(p)).collect();
    assert!(cases.len() >= 100, "only {} cases in {}", cases.len(), dir.display());
    let mut backends: Vec<Arc<dyn Backend>> = vec![Arc::new(TractBackend::new())];
    if let Some(gpu) = crate::backends::wgpu_backend() {
        backends.push(Arc::new(gpu));
    }
    let mut failures = Vec::new();
    for backend in &backends {
        let kind = backend.kind().name();
        let (mut matched, mut refused) = (0, 0);
        for case in &cases {
            match check(&**backend, case) {
                Ok(true) => matched += 1,
                Ok(false) => refused += 1,
                Err(why) => failures.push(format!("{kind} {}: {why}", case.name)),
            }
        }
        eprintln!("{kind}: {matched} of {} onnx node cases match, {refused} refused at load", cases.len());
        // Most claimed-op cases run; a backend refusing nearly all of them is not conforming.
        let floor = if kind == "tract" { cases.len() / 3 } else { 20 };
        if matched < floor {
            failures.push(format!("{kind}: only {matched} of {} cases match", cases.len()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases neither match nor are refused in one line:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The second example's model (Google's Magika, from the `magika` package via
/// `tools/setup.sh`) as a case: two rows of byte features, expected outputs from onnxruntime.
fn magika_case() -> Case {
    let python = cascade_testkit::onnx_python();
    let model = cascade_testkit::repo().join("target/third-party/magika_standard_v3_3.onnx");
    assert!(model.exists(), "{} is missing; run tools/setup.sh", model.display());
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import sys, shutil, os
import numpy as np, onnx, onnxruntime as ort
from onnx import numpy_helper
model, out = sys.argv[1], sys.argv[2]
shutil.copy(model, os.path.join(out, "model.onnx"))
data = os.path.join(out, "test_data_set_0")
os.makedirs(data)
rng = np.random.default_rng(7)
# A text-like row and a binary-like row, the second padded (token 256) like a short file.
rows = np.stack([rng.integers(32, 127, 2048), np.concatenate([rng.integers(0, 256, 1500), np.full(548, 256)])])
x = rows.astype(np.int32)
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
(y,) = session.run(None, {name: x})
open(os.path.join(data, "input_0.pb"), "wb").write(numpy_helper.from_array(x, name).SerializeToString())
out_name = session.get_outputs()[0].name
open(os.path.join(data, "output_0.pb"), "wb").write(numpy_helper.from_array(y, out_name).SerializeToString())
"#;
    let out = Command::new(&python).arg("-c").arg(script).arg(&model).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "magika case: {}", String::from_utf8_lossy(&out.stderr));
    let mut case = load_case(dir.path());
    case.name = "magika_standard_v3_3".into();
    case
}

/// A published model the project did not make, of another kind than the digits: it runs
/// under its graph's own names (`bytes` in, `target_label` out) and matches onnxruntime on
/// each backend, or is refused at load in one line naming what it cannot run.
#[test]
fn the_second_examples_model_matches_onnxruntime_or_is_refused_in_one_line() {
    let case = magika_case();
    assert_eq!(
        (case.inputs.as_slice(), case.outputs.as_slice()),
        (&["bytes".to_owned()][..], &["target_label".to_owned()][..])
    );
    // tract must run it: the example depends on it.
    assert_eq!(check(&TractBackend::new(), &case), Ok(true), "tract");
    if let Some(gpu) = crate::backends::wgpu_backend() {
        let result = check(&gpu, &case);
        eprintln!(
            "wgpu on {}: {}",
            case.name,
            if result == Ok(true) { "matches" } else { "refused at load" }
        );
        assert!(result.is_ok(), "wgpu: {}", result.unwrap_err());
    }
}
