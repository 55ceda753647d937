//! The wasmtime sandbox with real guests built from source: the example classifier agrees
//! with the model it wraps on every test image, and hostile plugins fail alone, without
//! making the host copy more than a call's budget, flood its logs or outlive their requests.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use cascade_runtime::config::{ModelSpec, RateSettings, ResolvedModel, ResolvedPlugin};
use cascade_runtime::{
    BackendKind, Digits, ErrorKind, LoadError, ModelStore, Outcome, PreparedModel, ReferenceModel, Request,
    RequestError, Sandbox, SandboxConfig, Split, Tensor, precompiled, reference,
};
use cascade_testkit::{Guest, fixture};

/// The edge and central models as a node would load them.
fn models() -> ModelStore {
    let dir = reference::default_models_dir();
    let models =
        [("edge", ReferenceModel::EdgeInt8), ("central", ReferenceModel::CentralFp32)].map(|(name, m)| {
            let path = m.path(&dir);
            let bytes = std::fs::read(&path).unwrap();
            let spec = ModelSpec {
                path,
                backend: BackendKind::Tract,
                fallback_to_tract: false,
                pinned: None,
                inputs: Default::default(),
            };
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

/// Hostile `mode` with extra parameters.
fn mode_with(mode_name: &str, parameters: &[(&str, &str)]) -> Owned {
    let mut request = mode(mode_name);
    request.parameters.extend(parameters.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    request
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
    let expected: [(&str, ErrorKind, &str); 10] = [
        ("loop", ErrorKind::Timeout, "deadline"),
        ("grow", ErrorKind::MemoryExhausted, "memory exhausted"),
        ("recurse", ErrorKind::StackOverflow, "stack overflow"),
        ("panic", ErrorKind::Trap, "hostile plugin panics on purpose"),
        ("oversized", ErrorKind::Transfer, "one call may pass at most"),
        ("forbidden-model", ErrorKind::ModelNotAllowed, "model central is not on its allowlist"),
        ("garbage-shape", ErrorKind::InvalidTensor, "input input"),
        ("alias-outputs", ErrorKind::Transfer, "one call may pass at most"),
        ("alias-inputs", ErrorKind::Transfer, "passed to model edge hold"),
        ("model-loop", ErrorKind::Timeout, "deadline"),
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
    let mut per_kind = BTreeMap::new();
    for (_, kind, _) in expected {
        *per_kind.entry(kind).or_insert(0) += 1;
    }
    for (kind, count) in per_kind {
        assert_eq!(stats.errors_of(kind), count, "{kind:?}: {stats:?}");
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

/// A plugin precompiled for this machine (as `edge-node plugin build --target` writes it)
/// loads and answers exactly as its component does; one precompiled for another target is
/// refused naming that target and this node's.
#[test]
fn precompiled_plugins_answer_as_their_component_and_other_targets_are_refused() {
    let (sandbox, models, _) = node();
    let host = precompiled::host_target();
    let component = plugin(&fixture().mnist, &[]);
    let mut native = component.clone();
    native.bytes = precompiled::precompile(&component.bytes, &host).unwrap().into();
    sandbox.load_plugin("from_wasm", &component, &models).unwrap();
    sandbox.load_plugin("precompiled", &native, &models).unwrap();
    let test = Digits::load_split(&reference::default_models_dir(), Split::Test).unwrap();
    for i in 0..50 {
        let request = image_request(test.image(i));
        let (Outcome::Answer(a), Outcome::Answer(b)) = (
            sandbox.handle("from_wasm", request.request()).unwrap(),
            sandbox.handle("precompiled", request.request()).unwrap(),
        ) else {
            panic!("image {i}: escalated");
        };
        assert_eq!((a.label, a.confidence, a.outputs), (b.label, b.confidence, b.outputs), "image {i}");
    }

    let other =
        if host.starts_with("aarch64") { "x86_64-unknown-linux-gnu" } else { "aarch64-unknown-linux-gnu" };
    let mut foreign = component.clone();
    foreign.bytes = precompiled::precompile(&component.bytes, other).unwrap().into();
    let err = sandbox.load_plugin("foreign", &foreign, &models).unwrap_err().to_string();
    let other_arch = other.split('-').next().unwrap();
    assert!(err.contains(&format!("'{other_arch}'")), "names the file's architecture: {err}");
    assert!(err.contains(&format!("wasmtime {} on {host}", precompiled::WASMTIME_VERSION)), "{err}");
    assert!(err.contains(&format!("--target {host}")), "{err}");
    assert!(!err.contains('\n'), "{err}");
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

/// A request dropped while its guest runs (the client went, the request's deadline fired)
/// gives its instance and fiber stack back: ten such drops on a pool of three, then the pool
/// still serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_while_its_guest_runs_gives_its_instance_back() {
    let sandbox = Sandbox::new(SandboxConfig { max_instances: 3, ..SandboxConfig::default() }).unwrap();
    let models = models();
    sandbox.load_plugin("hostile", &plugin(&fixture().hostile, &[]), &models).unwrap();
    sandbox.load_plugin("mnist", &plugin(&fixture().mnist, &[]), &models).unwrap();
    for (i, m) in ["loop", "model-loop"].iter().cycle().take(10).enumerate() {
        let request = mode(m);
        let call = sandbox.handle_async("hostile", request.request(), Duration::from_secs(5));
        let dropped = tokio::time::timeout(Duration::from_millis(20), call).await;
        assert!(dropped.is_err(), "call {i} ({m}) ended before it was dropped: {:?}", dropped.map(|r| r.0));
    }
    let test = Digits::load_split(&reference::default_models_dir(), Split::Test).unwrap();
    let request = image_request(test.image(0));
    let (outcome, _) = sandbox.handle_async("mnist", request.request(), Duration::from_secs(5)).await;
    assert!(label(&outcome.unwrap()).parse::<u8>().is_ok());
}

/// Environment variable that tells [`rss_probe`] which hostile mode to measure.
const RSS_PROBE_MODE: &str = "CASCADE_SANDBOX_RSS_PROBE_MODE";

/// How [`rss_probe`] reports its measurement on standard output.
const RSS_PROBE_LINE: &str = "peak_rss_growth_bytes=";

/// How far the host's peak RSS may rise while one aliasing request runs: the guest's own
/// 4 MiB buffer, the instance's pages and slack. A host that copied each of the 30 aliases of
/// that buffer would rise by 120 MiB.
const ALIASING_RSS_ALLOWANCE: u64 = 24 << 20;

/// How far this process's peak RSS rose while hostile `mode` handled one request, measured
/// in a process of its own (this test binary, running only [`rss_probe`]) so that no other
/// test's memory counts.
fn peak_rss_growth(hostile_mode: &str) -> u64 {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["sandbox::rss_probe", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(RSS_PROBE_MODE, hostile_mode)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the probe failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
        .lines()
        // The test harness may have printed the test's name on the same line.
        .find_map(|line| line.split_once(RSS_PROBE_LINE).map(|(_, bytes)| bytes))
        .and_then(|bytes| bytes.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {RSS_PROBE_LINE} line in the probe's output:\n{stdout}"))
}

/// A field of `/proc/self/status` given in kB, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    kib * 1024
}

/// Not a test: the measurement [`peak_rss_growth`] runs in a process of its own. It handles
/// one request of the hostile mode named by [`RSS_PROBE_MODE`] and prints how far the peak
/// RSS rose meanwhile, from the kernel's high-water mark reset just before.
#[test]
#[ignore = "a probe that peak_rss_growth runs in a process of its own"]
fn rss_probe() {
    let Ok(hostile_mode) = std::env::var(RSS_PROBE_MODE) else {
        eprintln!("rss_probe measures nothing without {RSS_PROBE_MODE}: peak_rss_growth runs it");
        return;
    };
    let (sandbox, models, _) = node();
    sandbox.load_plugin("hostile", &plugin(&fixture().hostile, &[("version", "v1")]), &models).unwrap();
    // The first request maps the pool's slot and the plugin's code: not what is measured.
    sandbox.handle("hostile", mode("ok").request()).unwrap();
    // Writing 5 resets the high-water mark to the current RSS (Linux 4.0 and later).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status_bytes("VmHWM");
    let result = sandbox.handle("hostile", mode(&hostile_mode).request());
    let peak = status_bytes("VmHWM");
    eprintln!("rss_probe: {hostile_mode}: {result:?}");
    println!("{RSS_PROBE_LINE}{}", peak.saturating_sub(before));
}

/// Thirty outputs pointing at one 4 MiB buffer declare 120 MiB: the host refuses them while
/// lifting, before it copies past its per-call budget, names the budget, and serves the next
/// request.
#[test]
fn aliased_outputs_are_refused_before_the_host_copies_them() {
    let (sandbox, models, _) = node();
    sandbox.load_plugin("hostile", &plugin(&fixture().hostile, &[("version", "v1")]), &models).unwrap();
    let err = sandbox.handle("hostile", mode("alias-outputs").request()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transfer, "{err}");
    let message = err.to_string();
    assert!(message.contains("plugin hostile: refused what it passed to the host"), "{message}");
    // The budget: the plugin's 1 MiB `max_output_bytes`, plus a little for tensor metadata.
    let budget: usize = message
        .split_once("one call may pass at most ")
        .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no budget in: {message}"));
    assert!(((1 << 20)..(1 << 20) + (64 << 10)).contains(&budget), "{message}");
    let growth = peak_rss_growth("alias-outputs");
    assert!(growth < ALIASING_RSS_ALLOWANCE, "peak RSS rose by {} MiB", growth >> 20);
    assert_eq!(label(&sandbox.handle("hostile", mode("ok").request()).unwrap()), "v1");
}

/// The same trick on `compute`'s arguments: thirty inputs pointing at one 4 MiB buffer are
/// refused before they are copied, naming the compute budget (the plugin's 16 MiB memory).
#[test]
fn aliased_compute_arguments_are_refused_before_the_host_copies_them() {
    let (sandbox, models, _) = node();
    sandbox.load_plugin("hostile", &plugin(&fixture().hostile, &[("version", "v1")]), &models).unwrap();
    let err = sandbox.handle("hostile", mode("alias-inputs").request()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transfer, "{err}");
    let message = err.to_string();
    assert!(message.contains("the 30 tensors passed to model edge hold 125829"), "{message}");
    assert!(message.contains(&format!("one call may pass at most {} bytes", 16 << 20)), "{message}");
    let growth = peak_rss_growth("alias-inputs");
    assert!(growth < ALIASING_RSS_ALLOWANCE, "peak RSS rose by {} MiB", growth >> 20);
    assert_eq!(label(&sandbox.handle("hostile", mode("ok").request()).unwrap()), "v1");
}

/// The per-call budget leaves room for the largest honest answer: 64 outputs (the most an
/// answer may have) of 8 dimensions (the most a tensor may have) whose bytes and names add up
/// to exactly the plugin's `max_output_bytes`.
#[test]
fn the_largest_honest_answer_fits_the_budget() {
    let (sandbox, models, _) = node();
    sandbox.load_plugin("hostile", &plugin(&fixture().hostile, &[]), &models).unwrap();
    let max_output_bytes = 1 << 20;
    // Each output is named `oNN`: three bytes.
    let bytes = (max_output_bytes / 64 - 3).to_string();
    let request = mode_with("fill-outputs", &[("outputs", "64"), ("bytes", &bytes)]);
    let Outcome::Answer(answer) = sandbox.handle("hostile", request.request()).unwrap() else {
        panic!("escalated");
    };
    assert_eq!(answer.outputs.len(), 64);
    let size: usize = answer.outputs.iter().map(|(name, t)| name.len() + t.data().len()).sum();
    assert_eq!(size, max_output_bytes);
    // One output more is past the limits, and refused.
    let request = mode_with("fill-outputs", &[("outputs", "65"), ("bytes", &bytes)]);
    assert_eq!(sandbox.handle("hostile", request.request()).unwrap_err().kind(), ErrorKind::Transfer);
}

/// Collects the events logged on the threads it is the default subscriber of.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<String>>>);

impl Captured {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// An event's `message` field.
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for Captured {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        self.0.lock().unwrap().push(message.0);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// A plugin logging 10,001 lines (one of them 64 KiB long) that try to forge node log lines
/// gets its burst through, escaped and cut, and the rest dropped and counted in one line.
#[test]
fn a_log_flood_is_rate_limited_escaped_and_cut() {
    const BURST: u32 = 20;
    // No refill: exactly the burst gets through, however fast the machine.
    let rate = RateSettings { per_second: 0.0, burst: BURST };
    let sandbox = Sandbox::new(SandboxConfig { guest_log_rate: rate, ..SandboxConfig::default() }).unwrap();
    sandbox.load_plugin("hostile", &plugin(&fixture().hostile, &[("version", "v1")]), &models()).unwrap();
    let captured = Captured::default();
    let outcome = tracing::subscriber::with_default(captured.clone(), || {
        sandbox.handle("hostile", mode_with("log-flood", &[("lines", "10000")]).request())
    });
    assert_eq!(label(&outcome.unwrap()), "v1", "a flood fails nothing");
    let lines = captured.lines();
    let dropped = 10_001 - u64::from(BURST);
    assert_eq!(lines.len(), BURST as usize + 1, "{lines:#?}");
    let report = lines.last().unwrap();
    assert!(
        report.contains(&format!("plugin hostile: {dropped} log lines of this request dropped")),
        "{report}"
    );
    assert_eq!(sandbox.stats().log_lines_dropped, dropped);
    // The long line, cut; then the forgeries, each kept on one line with its escapes visible.
    assert!(lines[0].starts_with("xxxx") && lines[0].ends_with(" more bytes]"), "{:.80}", lines[0]);
    assert!(lines[0].len() < 4200, "{}", lines[0].len());
    assert!(lines[1].starts_with("0 flood\\n2030-01-01T00:00:00.000000Z ERROR"), "{}", lines[1]);
    assert!(lines[1].ends_with("rejected\\r\\u{1b}[2J\\u{1b}[1A"), "{}", lines[1]);
    for line in &lines {
        assert!(!line.chars().any(char::is_control), "{line:?}");
    }
}

/// A plugin that calls its model in a loop, with a deadline of its own of 5 s, ends when its
/// request's 100 ms run out; a request with no time left does not run the plugin at all.
#[test]
fn a_model_call_loop_ends_when_the_requests_time_runs_out() {
    let (sandbox, models, _) = node();
    sandbox.load_plugin("hostile", &fixture().hostile.resolved(&["edge"], 5_000, &[]), &models).unwrap();
    let (result, inference) =
        sandbox.handle_timed("hostile", mode("model-loop").request(), Duration::from_millis(100));
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("request exceeded its 100ms deadline"), "{err}");
    assert!(!inference.is_zero(), "the loop ran the model");

    let (result, inference) = sandbox.handle_timed("hostile", mode("model-loop").request(), Duration::ZERO);
    let err = result.unwrap_err();
    assert!(err.to_string().contains("request exceeded its 0ns deadline"), "{err}");
    assert!(inference.is_zero(), "the model ran after the deadline");
}

/// The epoch interrupts guest code, not host calls, and ticks when it ticks: with an epoch
/// too coarse to fire during the test, a plugin that calls its model in a loop still ends at
/// its 300 ms deadline, because `compute` runs no model after it. Requests for other plugins
/// are served meanwhile.
#[test]
fn model_calls_after_the_deadline_are_refused_even_without_the_epoch() {
    // Longest the model loop may run before the test calls it stuck: a hundred times its
    // deadline. Without the host's check it would run until the epoch's two hours.
    const STUCK: Duration = Duration::from_secs(30);
    let hour = Duration::from_secs(60 * 60);
    let sandbox = Sandbox::new(SandboxConfig { epoch_tick: hour, ..SandboxConfig::default() }).unwrap();
    let models = models();
    sandbox.load_plugin("hostile", &plugin(&fixture().hostile, &[]), &models).unwrap();
    sandbox.load_plugin("mnist", &plugin(&fixture().mnist, &[]), &models).unwrap();
    let (done, finished) = mpsc::channel();
    {
        let sandbox = sandbox.clone();
        std::thread::spawn(move || {
            let _ = done.send(sandbox.handle("hostile", mode("model-loop").request()));
        });
    }
    let test = Digits::load_split(&reference::default_models_dir(), Split::Test).unwrap();
    for i in 0..20 {
        let outcome = sandbox.handle("mnist", image_request(test.image(i)).request()).unwrap();
        assert!(label(&outcome).parse::<u8>().is_ok());
    }
    let err = finished.recv_timeout(STUCK).expect("the model loop outlived its deadline").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("request exceeded its 300ms deadline"), "{err}");
    // Dropping the sandbox would wait for its ticker's next tick, an hour away.
    std::mem::forget(sandbox);
}
