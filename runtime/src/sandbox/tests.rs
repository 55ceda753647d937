//! Tests of the sandbox's own checks that need no guest plugin: the outcome contract, the
//! crossing budget, the dtype mapping and the limits refused at load. In a file of their own
//! so that the sandbox's module stays about the sandbox.

use super::budget::MAX_OUTPUTS;
use super::*;

fn tensor(dims: Vec<u32>, bytes: usize) -> wit::NamedTensor {
    wit::NamedTensor {
        name: "out".into(),
        tensor: wit::Tensor { dimensions: dims, ty: wit::TensorType::Fp32, data: vec![0; bytes] },
    }
}

fn answer(confidence: f32, outputs: Vec<wit::NamedTensor>) -> wit::Outcome {
    wit::Outcome::Answer(wit::Answer { outputs, confidence, label: Some("3".into()) })
}

#[test]
fn outcomes_are_checked_against_the_contract() {
    let limits = PluginLimits { max_output_bytes: 100, ..PluginLimits::default() };
    let ok = check_outcome(answer(0.75, vec![tensor(vec![1, 2], 8)]), &limits).unwrap();
    let Outcome::Answer(a) = ok else { panic!("not an answer") };
    assert_eq!(
        (a.confidence, a.label.as_deref(), a.outputs[0].1.shape()),
        (0.75, Some("3"), &[1usize, 2][..])
    );

    for bad in [f32::NAN, -0.1, 1.5] {
        let err = check_outcome(answer(bad, vec![]), &limits).unwrap_err();
        assert!(err.contains("confidence"), "{err}");
    }
    let err = check_outcome(answer(0.5, vec![tensor(vec![1, 3], 8)]), &limits).unwrap_err();
    assert!(err.contains("output out") && err.contains("needs 12 bytes, got 8"), "{err}");
    let err = check_outcome(answer(0.5, vec![tensor(vec![32], 128)]), &limits).unwrap_err();
    assert!(err.contains("exceeds the plugin's limit of 100"), "{err}");
    let err = check_outcome(wit::Outcome::Escalate("x".repeat(101)), &limits).unwrap_err();
    assert!(err.contains("escalation reason"), "{err}");
    assert_eq!(
        check_outcome(wit::Outcome::Escalate("unsure".into()), &limits).unwrap(),
        Outcome::Escalate("unsure".into())
    );
}

#[test]
fn answers_have_at_most_max_outputs_outputs() {
    let limits = PluginLimits::default();
    let outputs = |n| (0..n).map(|_| tensor(vec![1], 4)).collect();
    assert!(check_outcome(answer(0.5, outputs(MAX_OUTPUTS)), &limits).is_ok());
    let err = check_outcome(answer(0.5, outputs(MAX_OUTPUTS + 1)), &limits).unwrap_err();
    assert_eq!(err, "65 outputs, more than the 64 an answer may have");
}

#[test]
fn the_crossing_budget_is_the_output_limit_plus_the_metadata_of_the_largest_answer() {
    let limits = PluginLimits { max_output_bytes: 1000, ..PluginLimits::default() };
    let per_output = size_of::<wit::NamedTensor>() + inference::MAX_DIMS * 4;
    assert_eq!(budget::crossing_budget(&limits), 1000 + MAX_OUTPUTS * per_output);
    let limits = PluginLimits { max_output_bytes: usize::MAX, ..PluginLimits::default() };
    assert_eq!(budget::crossing_budget(&limits), usize::MAX);
}

#[test]
fn dtypes_round_trip_through_wit() {
    for d in [DType::F32, DType::U8, DType::I8, DType::I32, DType::I64] {
        assert_eq!(dtype_from_wit(dtype_to_wit(d)), d);
    }
}

#[test]
fn plugin_limits_beyond_the_engine_are_refused() {
    let sandbox =
        Sandbox::new(SandboxConfig { max_memory_bytes: 1 << 20, ..SandboxConfig::default() }).unwrap();
    let spec = crate::config::PluginSpec {
        path: "/p.wasm".into(),
        pinned: None,
        memory_limit_bytes: 2 << 20,
        deadline: Duration::from_millis(100),
        models: Default::default(),
        config: BTreeMap::new(),
    };
    let plugin = ResolvedPlugin::new(spec.clone(), b"not a component".to_vec());
    let err = sandbox.load_plugin("p", &plugin, &ModelStore::default()).unwrap_err().to_string();
    assert!(err.contains("plugin p: limit max_memory_bytes"), "{err}");
    let spec = crate::config::PluginSpec { memory_limit_bytes: 1 << 20, ..spec };
    let plugin = ResolvedPlugin::new(spec, b"not a component".to_vec());
    let err = sandbox.load_plugin("p", &plugin, &ModelStore::default()).unwrap_err().to_string();
    assert!(err.contains("plugin p from /p.wasm: not a valid plugin component"), "{err}");
    assert_eq!(sandbox.stats().ok, 0);
}
