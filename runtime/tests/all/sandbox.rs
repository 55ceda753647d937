//! The wasmtime sandbox with real guests built from source: the example classifier agrees
//! with the model it wraps on every test image, and hostile plugins fail alone.

use std::sync::Arc;

use cascade_runtime::config::{ModelSpec, ResolvedModel, ResolvedPlugin};
use cascade_runtime::{
    BackendKind, Digits, ErrorKind, LoadError, ModelStore, Outcome, PreparedModel, ReferenceModel, Request,
    RequestError, Sandbox, SandboxConfig, Split, Tensor, reference,
};
use cascade_testkit::{Guest, fixture};

/// The edge and central models as a node would load them.
fn models() -> ModelStore {
    let dir = reference::default_models_dir();
    let models =
        [("edge", ReferenceModel::EdgeInt8), ("central", ReferenceModel::CentralFp32)].map(|(name, m)| {
            let path = m.path(&dir);
            let bytes = std::fs::read(&path).unwrap();
            let spec =
                ModelSpec { path, backend: BackendKind::Tract, fallback_to_tract: false, pinned: None };
            (name.to_string(), ResolvedModel::new(spec, bytes))
        });
    ModelStore::load(&models.into(), None).unwrap()
}

/// A sandbox and the models its plugins may call; the edge model, to compare with.
fn node() -> (Sandbox, ModelStore, Arc<dyn PreparedModel>) {
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let models = models();
    let edge = models.get("edge").unwrap().model.clone();
    (sandbox, models, edge)
}

/// `guest` allowed the edge model, with a 300 ms deadline and `config`.
fn plugin(guest: &Guest, config: &[(&str, &str)]) -> ResolvedPlugin {
    guest.resolved(&["edge"], 300, config)
}

/// A request on route `digits` owning its tensors.
struct Owned {
    route: &'static str,
    inputs: Vec<(String, Tensor)>,
    parameters: Vec<(String, String)>,
}

impl Owned {
    fn request(&self) -> Request<'_> {
        Request { route: self.route, inputs: &self.inputs, parameters: &self.parameters }
    }
}

fn image_request(pixels: &[u8]) -> Owned {
    Owned {
        route: "digits",
        inputs: vec![("image".into(), Tensor::from_u8(vec![28, 28], pixels.to_vec()).unwrap())],
        parameters: vec![],
    }
}

fn mode(mode: &str) -> Owned {
    Owned { route: "hostile", inputs: vec![], parameters: vec![("mode".into(), mode.into())] }
}

fn label(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Answer(a) => a.label.clone().unwrap_or_default(),
        Outcome::Escalate(why) => panic!("escalated: {why}"),
    }
}

#[test]
fn mnist_plugin_predicts_exactly_like_the_model_on_the_whole_test_split() {
    let (sandbox, models, edge) = node();
    sandbox.load_plugin("mnist", &plugin(&fixture().mnist, &[]), &models).unwrap();
    let test = Digits::load_split(&reference::default_models_dir(), Split::Test).unwrap();
    let (mut agree, mut correct) = (0, 0);
    for i in 0..test.len() {
        let direct = edge.run(&[reference::images_to_input(test.image(i)).unwrap()]).unwrap();
        let logits = direct[0].to_f32().unwrap();
        let expected = reference::argmax_rows(&logits, 10)[0];
        let Outcome::Answer(answer) =
            sandbox.handle("mnist", image_request(test.image(i)).request()).unwrap()
        else {
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
    let (sandbox, models, _) = node();
    sandbox.load_plugin("mnist", &plugin(&fixture().mnist, &[]), &models).unwrap();
    sandbox.load_plugin("hostile", &plugin(&fixture().hostile, &[("version", "v1")]), &models).unwrap();
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
                    let outcome = sandbox.handle("mnist", image_request(test.image(i)).request()).unwrap();
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
                    let err = sandbox.handle("hostile", mode(m).request()).unwrap_err();
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
    assert_eq!(label(&sandbox.handle("hostile", mode("ok").request()).unwrap()), "v1");
    let stats = sandbox.stats();
    assert_eq!(stats.ok, 121);
    for (_, kind, _) in expected {
        assert_eq!(stats.errors_of(kind), 1, "{kind:?}: {stats:?}");
    }
}

#[test]
fn reload_switches_new_requests_and_in_flight_ones_finish_on_the_old_version() {
    let (sandbox, models, _) = node();
    let v1 =
        sandbox.load_plugin("hostile", &plugin(&fixture().hostile, &[("version", "v1")]), &models).unwrap();
    let in_flight = sandbox.instantiate("hostile").unwrap();
    // A request running across the reload, on another thread.
    let running = {
        let sandbox = sandbox.clone();
        std::thread::spawn(move || {
            let mut req = mode("spin");
            req.parameters.push(("iterations".into(), "2000000".into()));
            sandbox.handle("hostile", req.request())
        })
    };
    let v2 =
        sandbox.load_plugin("hostile", &plugin(&fixture().hostile, &[("version", "v2")]), &models).unwrap();
    assert!(v2 > v1);
    assert_eq!(sandbox.plugin_version("hostile").unwrap().0, v2);
    assert_eq!(label(&sandbox.handle("hostile", mode("ok").request()).unwrap()), "v2");
    assert_eq!(label(&in_flight.call(mode("ok").request()).unwrap()), "v1");
    // Started before or after the swap: it answers with one whole version, never an error.
    let label_running = label(&running.join().unwrap().unwrap());
    assert!(label_running == "v1" || label_running == "v2", "{label_running}");
}

#[test]
fn failed_loads_name_what_is_wrong_and_swap_nothing_in() {
    let (sandbox, models, _) = node();
    let unknown = fixture().mnist.resolved(&["edge", "giant"], 300, &[]);
    let err = sandbox.load_plugin("mnist", &unknown, &models).unwrap_err();
    assert!(matches!(err, LoadError::UnknownModel { ref model, .. } if model == "giant"), "{err}");
    assert!(err.to_string().contains("plugin mnist: allowed model giant"), "{err}");

    let mut not_wasm = plugin(&fixture().mnist, &[]);
    not_wasm.bytes = b"not a component".to_vec().into();
    let err = sandbox.load_plugin("mnist", &not_wasm, &models).unwrap_err();
    assert!(matches!(err, LoadError::Compile { .. }), "{err}");
    assert!(err.to_string().contains("mnist.wasm: not a valid plugin component"), "{err}");

    // Nothing was swapped in by the failed loads.
    assert!(sandbox.plugin_version("mnist").is_none());
    let err = sandbox.handle("mnist", mode("ok").request()).unwrap_err();
    assert!(matches!(err, RequestError::UnknownPlugin { .. }));
    sandbox.load_plugin("mnist", &plugin(&fixture().mnist, &[]), &models).unwrap();
    assert!(sandbox.plugin_version("mnist").is_some());
}

#[test]
fn bad_requests_get_the_plugins_own_error() {
    let (sandbox, models, _) = node();
    sandbox.load_plugin("mnist", &plugin(&fixture().mnist, &[]), &models).unwrap();
    let short = Owned {
        route: "digits",
        inputs: vec![("image".into(), Tensor::from_u8(vec![10], vec![0; 10]).unwrap())],
        parameters: vec![],
    };
    let err = sandbox.handle("mnist", short.request()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Plugin);
    assert!(err.to_string().contains("expected 784 pixels, got 10"), "{err}");
}

/// A pool of N instances holds N instances of a real component at once, however many core
/// instances, memories and tables each one is made of.
#[test]
fn a_full_pool_instantiates_as_many_plugins_as_it_is_sized_for() {
    let sandbox = Sandbox::new(SandboxConfig { max_instances: 3, ..SandboxConfig::default() }).unwrap();
    let models = models();
    sandbox.load_plugin("mnist", &plugin(&fixture().mnist, &[]), &models).unwrap();
    let held: Vec<_> = (0..3)
        .map(|i| sandbox.instantiate("mnist").unwrap_or_else(|e| panic!("instance {i}: {e}")))
        .collect();
    let err = sandbox.instantiate("mnist").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Instantiate, "{err}");
    drop(held);
    sandbox.instantiate("mnist").unwrap();
}
