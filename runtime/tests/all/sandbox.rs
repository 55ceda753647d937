//! The wasmtime sandbox with real guests built from source: the example classifier agrees
//! with the model it wraps on every test image, and hostile plugins fail alone.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cascade_runtime::guest_build::{GuestBuilder, sha256_hex};
use cascade_runtime::{
    Digits, ErrorKind, LoadError, Outcome, PluginLimits, PluginSpec, PreparedModel, ReferenceModel, Request,
    RequestError, Sandbox, SandboxConfig, Split, Tensor, TractBackend, reference,
};

/// A guest component written to disk, with its digest.
struct Guest {
    file: PathBuf,
    sha256: String,
}

struct Guests {
    mnist: Guest,
    hostile: Guest,
}

/// Builds both guests once per test process (the first build compiles std for wasm32).
fn guests() -> &'static Guests {
    static GUESTS: OnceLock<Guests> = OnceLock::new();
    GUESTS.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let builder = GuestBuilder::default();
        let out = cascade_runtime::guest_build::default_guest_target_dir().join("components");
        std::fs::create_dir_all(&out).unwrap();
        let build = |dir: PathBuf, name: &str| {
            let built = builder.build(&dir).unwrap_or_else(|e| panic!("{e}"));
            let file = out.join(format!("{name}-{}.wasm", std::process::id()));
            std::fs::write(&file, &built.component).unwrap();
            Guest { file, sha256: built.sha256 }
        };
        Guests {
            mnist: build(root.join("examples/mnist-classifier"), "mnist-classifier"),
            hostile: build(root.join("runtime/tests/plugins/hostile"), "hostile"),
        }
    })
}

fn file_sha256(path: &std::path::Path) -> String {
    sha256_hex(&std::fs::read(path).unwrap())
}

/// A node with the edge and central models loaded, pinned by their files' digests.
fn node() -> (Sandbox, Arc<dyn PreparedModel>) {
    let dir = reference::default_models_dir();
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let mut edge = None;
    for (name, model) in [("edge", ReferenceModel::EdgeInt8), ("central", ReferenceModel::CentralFp32)] {
        let path = model.path(&dir);
        let prepared = sandbox.add_model(name, &path, &file_sha256(&path), &TractBackend::new()).unwrap();
        if name == "edge" {
            edge = Some(prepared);
        }
    }
    (sandbox, edge.unwrap())
}

fn edge_pin() -> BTreeMap<String, String> {
    let path = ReferenceModel::EdgeInt8.path(&reference::default_models_dir());
    BTreeMap::from([("edge".to_string(), file_sha256(&path))])
}

fn spec(name: &str, guest: &Guest, config: &[(&str, &str)]) -> PluginSpec {
    PluginSpec {
        name: name.into(),
        file: guest.file.clone(),
        sha256: guest.sha256.clone(),
        models: edge_pin(),
        config: config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        logging: true,
        limits: PluginLimits {
            max_memory_bytes: 16 << 20,
            deadline: Duration::from_millis(300),
            ..PluginLimits::default()
        },
    }
}

fn image_request(pixels: &[u8]) -> Request {
    Request {
        route: "digits".into(),
        inputs: vec![("image".into(), Tensor::from_u8(vec![28, 28], pixels.to_vec()).unwrap())],
        parameters: vec![],
    }
}

fn mode(mode: &str) -> Request {
    Request { route: "hostile".into(), inputs: vec![], parameters: vec![("mode".into(), mode.into())] }
}

fn label(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Answer(a) => a.label.clone().unwrap_or_default(),
        Outcome::Escalate(why) => panic!("escalated: {why}"),
    }
}

#[test]
fn mnist_plugin_predicts_exactly_like_the_model_on_the_whole_test_split() {
    let (sandbox, edge) = node();
    sandbox.load_plugin(&spec("mnist", &guests().mnist, &[])).unwrap();
    let test = Digits::load_split(&reference::default_models_dir(), Split::Test).unwrap();
    let (mut agree, mut correct) = (0, 0);
    for i in 0..test.len() {
        let direct = edge.run(&[reference::images_to_input(test.image(i)).unwrap()]).unwrap();
        let logits = direct[0].to_f32().unwrap();
        let expected = reference::argmax_rows(&logits, 10)[0];
        let Outcome::Answer(answer) = sandbox.handle("mnist", &image_request(test.image(i))).unwrap() else {
            panic!("image {i}: the classifier escalated");
        };
        let got: usize = answer.label.as_deref().unwrap().parse().unwrap();
        assert_eq!(got, expected, "image {i}");
        let probs = answer.outputs[0].1.to_f32().unwrap();
        assert_eq!(answer.outputs[0].0, "probabilities");
        assert_eq!(answer.outputs[0].1.shape(), &[1, 10]);
        assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-4, "image {i}: {probs:?}");
        assert_eq!(answer.confidence, probs.iter().copied().fold(0.0, f32::max));
        agree += 1;
        correct += usize::from(got == usize::from(test.label(i)));
    }
    assert_eq!(agree, 2000);
    // Same predictions, hence the same accuracy as the model card's direct figure.
    let direct_accuracy = reference::accuracy(&*edge, &test, 64).unwrap();
    assert!((correct as f64 / 2000.0 - direct_accuracy).abs() < 1e-9, "{correct} vs {direct_accuracy}");
    assert_eq!(sandbox.stats().ok, 2000);
}

#[test]
fn hostile_plugins_fail_alone_while_good_traffic_succeeds() {
    let (sandbox, _) = node();
    sandbox.load_plugin(&spec("mnist", &guests().mnist, &[])).unwrap();
    sandbox.load_plugin(&spec("hostile", &guests().hostile, &[("version", "v1")])).unwrap();
    let test = Digits::load_split(&reference::default_models_dir(), Split::Test).unwrap();
    let expected: [(&str, ErrorKind, &str); 7] = [
        ("loop", ErrorKind::Timeout, "deadline"),
        ("grow", ErrorKind::MemoryExhausted, "memory exhausted"),
        ("recurse", ErrorKind::StackOverflow, "stack overflow"),
        ("panic", ErrorKind::Trap, "hostile plugin panics on purpose"),
        ("oversized", ErrorKind::BadOutput, "exceeds the plugin's limit"),
        ("forbidden-model", ErrorKind::ModelNotAllowed, "model central is not on its allowlist"),
        ("garbage-shape", ErrorKind::InvalidTensor, "input input"),
    ];
    std::thread::scope(|s| {
        let good = s.spawn(|| {
            // Keep good traffic flowing for as long as the hostile requests run.
            let mut served = 0;
            for round in 0..3 {
                for i in (round * 40)..(round * 40 + 40) {
                    let outcome = sandbox.handle("mnist", &image_request(test.image(i))).unwrap();
                    assert!(label(&outcome).parse::<u8>().is_ok());
                    served += 1;
                }
            }
            served
        });
        let hostile: Vec<_> = expected
            .iter()
            .map(|&(m, kind, text)| {
                let sandbox = &sandbox;
                s.spawn(move || {
                    let err = sandbox.handle("hostile", &mode(m)).unwrap_err();
                    assert_eq!(err.kind(), kind, "mode {m}: {err}");
                    assert!(err.to_string().contains(text), "mode {m}: {err}");
                    assert!(err.to_string().contains("plugin hostile"), "mode {m}: {err}");
                })
            })
            .collect();
        for h in hostile {
            h.join().unwrap();
        }
        assert_eq!(good.join().unwrap(), 120);
    });
    // The hostile plugin itself still serves well-behaved requests afterwards.
    assert_eq!(label(&sandbox.handle("hostile", &mode("ok")).unwrap()), "v1");
    let stats = sandbox.stats();
    assert_eq!(stats.ok, 121);
    for (_, kind, _) in expected {
        assert_eq!(stats.errors_of(kind), 1, "{kind:?}: {stats:?}");
    }
}

#[test]
fn reload_switches_new_requests_and_in_flight_ones_finish_on_the_old_version() {
    let (sandbox, _) = node();
    let v1 = sandbox.load_plugin(&spec("hostile", &guests().hostile, &[("version", "v1")])).unwrap();
    let in_flight = sandbox.instantiate("hostile").unwrap();
    // A request running across the reload, on another thread.
    let running = {
        let sandbox = sandbox.clone();
        std::thread::spawn(move || {
            let mut req = mode("spin");
            req.parameters.push(("iterations".into(), "2000000".into()));
            sandbox.handle("hostile", &req)
        })
    };
    let v2 = sandbox.load_plugin(&spec("hostile", &guests().hostile, &[("version", "v2")])).unwrap();
    assert!(v2 > v1);
    assert_eq!(sandbox.plugin_version("hostile").unwrap().0, v2);
    assert_eq!(label(&sandbox.handle("hostile", &mode("ok")).unwrap()), "v2");
    assert_eq!(label(&in_flight.call(&mode("ok")).unwrap()), "v1");
    // Started before or after the swap: it answers with one whole version, never an error.
    let label_running = label(&running.join().unwrap().unwrap());
    assert!(label_running == "v1" || label_running == "v2", "{label_running}");
}

#[test]
fn pinned_digests_are_enforced_at_load() {
    let (sandbox, _) = node();
    let good = spec("mnist", &guests().mnist, &[]);

    let mut wrong_plugin = good.clone();
    wrong_plugin.sha256 = "00".repeat(32);
    let err = sandbox.load_plugin(&wrong_plugin).unwrap_err();
    assert!(matches!(err, LoadError::Digest { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&*good.file.to_string_lossy())
            && msg.contains(&good.sha256)
            && msg.contains(&"00".repeat(32)),
        "{msg}"
    );

    let mut wrong_model = good.clone();
    wrong_model.models.insert("edge".into(), "11".repeat(32));
    let msg = sandbox.load_plugin(&wrong_model).unwrap_err().to_string();
    let edge_file = ReferenceModel::EdgeInt8.path(&reference::default_models_dir());
    assert!(
        msg.contains("edge_int8.onnx")
            && msg.contains(&"11".repeat(32))
            && msg.contains(&file_sha256(&edge_file)),
        "{msg}"
    );

    let mut unknown = good.clone();
    unknown.models.insert("giant".into(), "22".repeat(32));
    let err = sandbox.load_plugin(&unknown).unwrap_err();
    assert!(matches!(err, LoadError::UnknownModel { ref model, .. } if model == "giant"), "{err}");

    let dir = reference::default_models_dir();
    let err = sandbox
        .add_model("edge2", &ReferenceModel::EdgeInt8.path(&dir), &"33".repeat(32), &TractBackend::new())
        .unwrap_err();
    assert!(
        err.to_string().contains("edge_int8.onnx") && err.to_string().contains(&"33".repeat(32)),
        "{err}"
    );

    // Nothing was swapped in by the failed loads.
    assert!(sandbox.plugin_version("mnist").is_none());
    let err = sandbox.handle("mnist", &mode("ok")).unwrap_err();
    assert!(matches!(err, RequestError::UnknownPlugin { .. }));
    sandbox.load_plugin(&good).unwrap();
    assert!(sandbox.plugin_version("mnist").is_some());
}

#[test]
fn bad_requests_get_the_plugins_own_error() {
    let (sandbox, _) = node();
    sandbox.load_plugin(&spec("mnist", &guests().mnist, &[])).unwrap();
    let short = Request {
        route: "digits".into(),
        inputs: vec![("image".into(), Tensor::from_u8(vec![10], vec![0; 10]).unwrap())],
        parameters: vec![],
    };
    let err = sandbox.handle("mnist", &short).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Plugin);
    assert!(err.to_string().contains("expected 784 pixels, got 10"), "{err}");
}
