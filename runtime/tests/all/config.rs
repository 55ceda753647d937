//! Node configs: loading, every problem reported at once naming its field, resolution
//! against the real files, digests pinned.

use std::path::{Path, PathBuf};

use cascade_runtime::config::{self, ConfigError, Digest};
use cascade_runtime::{BackendKind, Mode, ReferenceModel, reference};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/configs")
}

/// A minimal valid config; `extra` is appended, `plugin_line` replaces the plugin's path line.
fn minimal(plugin_path: &str, plugin_sha: Option<&str>) -> String {
    let sha = plugin_sha.map(|s| format!("sha256 = \"{s}\"\n")).unwrap_or_default();
    format!(
        r#"
[models.edge]
path = "{model}"

[plugins.p]
path = "{plugin_path}"
{sha}models = ["edge"]

[routes.digits]
plugin = "p"
thresholds = {{ normal = 0.9 }}
"#,
        model = ReferenceModel::EdgeInt8.path(&reference::default_models_dir()).display(),
    )
}

#[test]
fn example_configs_validate() {
    let edge = config::load(&examples_dir().join("edge.toml")).unwrap();
    let s = &edge.settings;
    assert_eq!(s.name, "edge");
    assert!(s.quic.is_none());
    let up = s.upstream.as_ref().and_then(|u| u.quic()).expect("edge has a QUIC upstream");
    assert_eq!(up.addresses.len(), 1);
    assert_eq!(up.ca, examples_dir().join("certs/ca.pem"));
    let digits = &s.routes["digits"];
    assert_eq!(digits.threshold(Mode::Normal), 0.90);
    assert_eq!(digits.threshold(Mode::Emergency), 0.0);
    assert_eq!(s.modes.switches(Mode::Emergency).escalation_budget.per_second, 0.0);

    let central = config::load(&examples_dir().join("central.toml")).unwrap();
    let s = &central.settings;
    assert!(s.upstream.is_none());
    assert!(s.quic.is_some());
    let batching = s.batching.expect("central batches");
    assert_eq!(batching.max_batch, 32);
    assert_eq!(s.modes.switches(Mode::Normal).batching_delay, Some(batching.max_delay));
    assert_eq!(s.modes.switches(Mode::Surge).batching_delay, Some(std::time::Duration::from_micros(4000)));
    assert_eq!(central.models["central"].backend, BackendKind::Wgpu);
}

#[test]
fn example_configs_pin_the_real_model_files() {
    for (file, model) in [("edge.toml", "edge"), ("central.toml", "central")] {
        let validated = config::load(&examples_dir().join(file)).unwrap();
        let pinned = validated.models[model].pinned.expect("example pins its model");
        match validated.resolve() {
            // Models resolve before plugins: reaching the plugin means the model digests held.
            Err(ConfigError::ReadFile { field, .. }) => assert_eq!(field, "plugins.mnist.path", "{file}"),
            // Once `edge-node plugin build` has produced the plugin, the whole config resolves.
            Ok(resolved) => assert_eq!(resolved.models[model].digest, pinned),
            Err(other) => panic!("{file}: {other}"),
        }
    }
}

#[test]
fn resolve_reads_and_pins_real_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    let plugin_bytes = b"\0asm not really a component, but real bytes on disk".to_vec();
    std::fs::write(dir.path().join("plugins/p.wasm"), &plugin_bytes).unwrap();
    let good = Digest::of(&plugin_bytes).to_string();
    let cfg_path = dir.path().join("node.toml");

    // Relative paths resolve against the config file's directory, not the working directory.
    let resolved =
        config::parse(&minimal("plugins/p.wasm", Some(&good)), &cfg_path).unwrap().resolve().unwrap();
    let plugin = &resolved.plugins["p"];
    assert_eq!(plugin.spec.path, dir.path().join("plugins/p.wasm"));
    assert_eq!(&plugin.bytes[..], &plugin_bytes[..]);
    assert_eq!(plugin.digest.to_string(), good);
    let model_bytes = std::fs::read(ReferenceModel::EdgeInt8.path(&reference::default_models_dir())).unwrap();
    assert_eq!(resolved.models["edge"].digest, Digest::of(&model_bytes));
    // A relative config path still yields absolute file paths.
    let relative = config::parse(&minimal("p.wasm", None), Path::new("node.toml")).unwrap();
    assert!(relative.plugins["p"].path.is_absolute());

    // A new plugin version is a new digest (and so a new cache key).
    std::fs::write(dir.path().join("plugins/p.wasm"), b"plugin v2").unwrap();
    let v2 = config::parse(&minimal("plugins/p.wasm", None), &cfg_path).unwrap().resolve().unwrap();
    assert_ne!(v2.plugins["p"].digest, plugin.digest);
    std::fs::write(dir.path().join("plugins/p.wasm"), &plugin_bytes).unwrap();

    let wrong = Digest::of(b"another file").to_string();
    let err =
        config::parse(&minimal("plugins/p.wasm", Some(&wrong)), &cfg_path).unwrap().resolve().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::DigestMismatch(_)), "{msg}");
    for needle in [&good, &wrong, "plugins.p.sha256", "p.wasm", "node.toml"] {
        assert!(msg.contains(needle), "`{needle}` missing from: {msg}");
    }

    let err =
        config::parse(&minimal("plugins/missing.wasm", None), &cfg_path).unwrap().resolve().unwrap_err();
    assert!(matches!(&err, ConfigError::ReadFile { field, .. } if field == "plugins.p.path"), "{err}");
    // The message carries the cause; a source as well would print it twice in a chain.
    assert!(std::error::Error::source(&err).is_none(), "{err}");
    assert_eq!(err.to_string().matches("os error").count(), 1, "{err}");
}

#[test]
fn unknown_fields_are_refused_with_file_and_field() {
    let text = minimal("p.wasm", None) + "\n[admission]\nmax_inflight = 3\n";
    let err = config::parse(&text, Path::new("/etc/cascade/node.toml")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::Parse { .. }), "{msg}");
    assert!(msg.contains("/etc/cascade/node.toml") && msg.contains("max_inflight"), "{msg}");
    assert!(msg.contains("max_in_flight"), "the valid field should be suggested: {msg}");
}

#[test]
fn every_invalid_field_is_reported_at_once() {
    let text = r#"
[listeners]
http = "localhost"

[plugins.p]
path = "p.wasm"
models = ["nope"]
sha256 = "1234"

[routes.digits]
plugin = "q"
thresholds = { normal = 1.5 }
rate_limit_rps = -1.0

[modes.emergency]
disabled_routes = ["bulk"]
batching_delay_us = 100

[modes.switching.surge]
queue_enter = 0.5
queue_exit = 0.6
latency_enter_ms = 100.0
latency_exit_ms = 50.0
error_rate_enter = 0.2
error_rate_exit = 0.1
"#;
    let err = config::parse(text, Path::new("bad.toml")).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else { panic!("{err}") };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    for expected in [
        "listeners.http",
        "plugins.p.sha256",
        "plugins.p.models[0]",
        "routes.digits.plugin",
        "routes.digits.thresholds.normal",
        "routes.digits.rate_limit_rps",
        "modes.emergency.disabled_routes[0]",
        "modes.emergency.batching_delay_us",
        "modes.switching.surge.queue_exit",
    ] {
        assert!(fields.contains(&expected), "{expected} not in {fields:?}");
    }
    let mut unique = fields.clone();
    unique.dedup();
    assert_eq!(unique, fields, "each problem once");
    let msg = err.to_string();
    assert!(msg.lines().skip(1).all(|l| l.trim_start().starts_with("bad.toml: ")), "{msg}");
    // Each problem says what would be valid.
    assert!(msg.contains("one of `digits`"), "{msg}");
    assert!(msg.contains("from 0.0 to 1.0"), "{msg}");
}

#[test]
fn thresholds_fall_back_from_route_to_mode_to_normal() {
    let text = minimal("p.wasm", None) + "\n[modes.surge]\nthreshold = 0.5\n";
    let v = config::parse(&text, Path::new("n.toml")).unwrap();
    let r = &v.settings.routes["digits"];
    assert_eq!(r.threshold(Mode::Normal), 0.9);
    assert_eq!(r.threshold(Mode::Surge), 0.5);
    assert_eq!(r.threshold(Mode::Emergency), 0.9);

    let text = text.replace("thresholds = { normal = 0.9 }", "thresholds = { normal = 0.9, surge = 0.7 }");
    let v = config::parse(&text, Path::new("n.toml")).unwrap();
    assert_eq!(v.settings.routes["digits"].threshold(Mode::Surge), 0.7);
}

/// Values that would overflow the clock or a token bucket's arithmetic, or a plugin deadline
/// its route could never grant, are refused at load, naming the field.
#[test]
fn values_that_cannot_work_are_refused_before_they_can_panic() {
    let text = format!(
        r#"
[models.edge]
path = "{model}"

[plugins.p]
path = "p.wasm"
models = ["edge"]
deadline_ms = 5000

[routes.digits]
plugin = "p"
deadline_ms = 250
cache_ttl_s = 18446744073709551615
rate_limit_rps = 1e-30
thresholds = {{ normal = 0.9 }}

[modes.surge]
escalation_budget_rps = 1e-300

[modes.switching]
min_dwell_ms = 18446744073709551615
"#,
        model = ReferenceModel::EdgeInt8.path(&reference::default_models_dir()).display(),
    );
    let err = config::parse(&text, Path::new("huge.toml")).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else { panic!("{err}") };
    let problem = |field: &str| {
        problems.iter().find(|p| p.field == field).unwrap_or_else(|| panic!("no problem for {field}: {err}"))
    };
    assert!(problem("routes.digits.cache_ttl_s").problem.contains("too long"));
    assert!(problem("routes.digits.rate_limit_rps").expected.contains("0.001 per second"));
    assert!(problem("modes.surge.escalation_budget_rps").expected.contains("0, or"));
    assert!(problem("modes.switching.min_dwell_ms").problem.contains("too long"));
    let plugin = problem("plugins.p.deadline_ms");
    assert!(plugin.problem.contains("longer than route `digits`'s whole deadline_ms of 250"), "{plugin}");
}
