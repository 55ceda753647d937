//! The serving core without HTTP: config loading and resolution, cache with coalescing,
//! admission. (Policy and modes are sans-IO and unit-tested beside their code.)

use std::path::{Path, PathBuf};

use cascade_runtime::config::{self, ConfigError, Digest};
use cascade_runtime::{BackendKind, CacheKey, Mode, ReferenceModel, reference};

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

    // The cache key follows the plugin's and models' versions.
    let key = CacheKey::for_route(&resolved, "digits", b"pixels").unwrap();
    assert_eq!(key, CacheKey::new("digits", &plugin.digest, &[resolved.models["edge"].digest], b"pixels"));
    assert!(CacheKey::for_route(&resolved, "letters", b"pixels").is_none());
    std::fs::write(dir.path().join("plugins/p.wasm"), b"plugin v2").unwrap();
    let v2 = config::parse(&minimal("plugins/p.wasm", None), &cfg_path).unwrap().resolve().unwrap();
    assert_ne!(CacheKey::for_route(&v2, "digits", b"pixels").unwrap(), key);
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

mod coalescing {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use cascade_runtime::config::Digest;
    use cascade_runtime::{Cache, CacheKey, CacheStatus};
    use tokio::sync::Notify;

    type TestCache = Cache<u32, String>;

    fn new_cache() -> Arc<TestCache> {
        Arc::new(Cache::new(1 << 20, |_| 4))
    }

    fn key() -> CacheKey {
        CacheKey::new("digits", &Digest::of(b"plugin"), &[Digest::of(b"model")], b"pixels")
    }

    /// On the current-thread runtime, yielding lets every spawned task run up to the point
    /// where it waits: the leader inside its computation, the followers on the leader.
    async fn let_everyone_block() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    /// Spawns `n` identical requests whose computation counts itself, waits for `release`,
    /// then returns `result`.
    fn spawn_burst(
        cache: &Arc<TestCache>,
        n: usize,
        computations: &Arc<AtomicUsize>,
        release: &Arc<Notify>,
        result: Result<u32, String>,
    ) -> Vec<tokio::task::JoinHandle<Result<cascade_runtime::Lookup<u32>, String>>> {
        (0..n)
            .map(|_| {
                let (cache, computations, release, result) =
                    (cache.clone(), computations.clone(), release.clone(), result.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_compute(key(), Duration::from_secs(60), || async move {
                            computations.fetch_add(1, Ordering::SeqCst);
                            release.notified().await;
                            result
                        })
                        .await
                })
            })
            .collect()
    }

    #[tokio::test]
    async fn identical_requests_in_flight_share_one_computation() {
        let cache = new_cache();
        let computations = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let tasks = spawn_burst(&cache, 10, &computations, &release, Ok(42));
        let_everyone_block().await;
        assert_eq!(computations.load(Ordering::SeqCst), 1);
        release.notify_waiters();
        let mut statuses = Vec::new();
        for t in tasks {
            let lookup = t.await.unwrap().unwrap();
            assert_eq!(lookup.value, 42);
            statuses.push(lookup.status);
        }
        assert_eq!(statuses.iter().filter(|s| **s == CacheStatus::Miss).count(), 1);
        assert_eq!(statuses.iter().filter(|s| **s == CacheStatus::Coalesced).count(), 9);
        // The answer is now cached: the next identical request does not compute.
        let again = cache.get_or_compute(key(), Duration::from_secs(60), || async { Ok(0) }).await.unwrap();
        assert_eq!((again.value, again.status), (42, CacheStatus::Hit));
        assert_eq!(computations.load(Ordering::SeqCst), 1);
        assert_eq!(cache.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_failure_reaches_every_waiter_and_is_not_cached() {
        let cache = new_cache();
        let computations = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let tasks = spawn_burst(&cache, 5, &computations, &release, Err("upstream timed out".into()));
        let_everyone_block().await;
        release.notify_waiters();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap_err(), "upstream timed out");
        }
        assert_eq!(computations.load(Ordering::SeqCst), 1);
        let retry = cache.get_or_compute(key(), Duration::from_secs(60), || async { Ok(7) }).await.unwrap();
        assert_eq!((retry.value, retry.status), (7, CacheStatus::Miss));
    }

    #[tokio::test]
    async fn filtered_values_are_shared_but_not_stored() {
        // Odd values stand for degraded answers.
        let cache: Arc<TestCache> = Arc::new(Cache::with_filter(1 << 20, |_| 4, |v| v % 2 == 0));
        let computations = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let tasks = spawn_burst(&cache, 3, &computations, &release, Ok(3));
        let_everyone_block().await;
        release.notify_waiters();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().value, 3);
        }
        assert_eq!(computations.load(Ordering::SeqCst), 1);
        let next = cache.get_or_compute(key(), Duration::from_secs(60), || async { Ok(4) }).await.unwrap();
        assert_eq!((next.value, next.status), (4, CacheStatus::Miss));
        let hit = cache.get_or_compute(key(), Duration::from_secs(60), || async { Ok(6) }).await.unwrap();
        assert_eq!((hit.value, hit.status), (4, CacheStatus::Hit));
    }

    #[tokio::test]
    async fn a_cancelled_leader_hands_over_to_a_follower() {
        let cache = new_cache();
        let computations = Arc::new(AtomicUsize::new(0));
        let never = Arc::new(Notify::new());
        // The leader's computation never finishes on its own...
        let leader = spawn_burst(&cache, 1, &computations, &never, Ok(1)).remove(0);
        let_everyone_block().await;
        // ...and its followers would compute 2 if they had to.
        let release = Arc::new(Notify::new());
        let followers = spawn_burst(&cache, 4, &computations, &release, Ok(2));
        let_everyone_block().await;
        assert_eq!(computations.load(Ordering::SeqCst), 1, "followers wait on the leader");
        leader.abort();
        let_everyone_block().await;
        assert_eq!(computations.load(Ordering::SeqCst), 2, "one follower took over");
        release.notify_waiters();
        let mut statuses = Vec::new();
        for t in followers {
            let lookup =
                tokio::time::timeout(Duration::from_secs(5), t).await.expect("no hang").unwrap().unwrap();
            assert_eq!(lookup.value, 2);
            statuses.push(lookup.status);
        }
        assert_eq!(statuses.iter().filter(|s| **s == CacheStatus::Miss).count(), 1);
        assert_eq!(cache.in_flight(), 0);
    }
}

mod admission {
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};

    use cascade_runtime::config::RateSettings;
    use cascade_runtime::{Admission, Rejection, RouteLimits};

    fn node(limits: RouteLimits, node_max: u32, t0: Instant) -> Admission {
        Admission::new([("digits".to_string(), limits)], node_max, t0)
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn bulkhead_runs_then_queues_then_rejects_and_drop_frees_slots() {
        let t0 = Instant::now();
        let a = std::sync::Arc::new(node(
            RouteLimits { max_in_flight: 2, queue_len: 1, rate_limit: None },
            100,
            t0,
        ));
        let p1 = a.admit("digits", t0).await.unwrap();
        let _p2 = a.admit("digits", t0).await.unwrap();
        let queued = tokio::spawn({
            let a = a.clone();
            async move { a.admit("digits", t0).await.map(drop) }
        });
        settle().await;
        assert_eq!(a.load("digits"), Some((2, 1)));
        assert_eq!(a.queue_fraction(), 1.0);
        let full = a.admit("digits", t0).await.unwrap_err();
        assert_eq!(full, Rejection::QueueFull);
        assert_eq!((full.status(), full.retry_after_secs()), (503, Some(1)));
        // A finished (or cancelled) request's permit frees its slot for the queued one.
        drop(p1);
        tokio::time::timeout(Duration::from_secs(5), queued).await.unwrap().unwrap().unwrap();
        assert_eq!(a.load("digits"), Some((1, 0)));
    }

    #[tokio::test]
    async fn a_cancelled_queued_request_leaves_the_queue() {
        let t0 = Instant::now();
        let a = std::sync::Arc::new(node(
            RouteLimits { max_in_flight: 1, queue_len: 1, rate_limit: None },
            100,
            t0,
        ));
        let _running = a.admit("digits", t0).await.unwrap();
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { a.admit("digits", t0).await.map(drop) }
        });
        settle().await;
        assert_eq!(a.admit("digits", t0).await.unwrap_err(), Rejection::QueueFull);
        waiting.abort();
        settle().await;
        assert_eq!(a.load("digits"), Some((1, 0)));
        // The place is free again: this one waits instead of being rejected.
        let again = tokio::time::timeout(Duration::from_millis(50), a.admit("digits", t0)).await;
        assert!(again.is_err(), "should have queued, not been rejected");
    }

    #[tokio::test]
    async fn rate_limit_rejects_with_429_and_retry_after() {
        let t0 = Instant::now();
        let limits = RouteLimits {
            max_in_flight: 10,
            queue_len: 0,
            rate_limit: Some(RateSettings { per_second: 0.5, burst: 2 }),
        };
        let a = node(limits, 100, t0);
        a.admit("digits", t0).await.unwrap();
        a.admit("digits", t0).await.unwrap();
        let r = a.admit("digits", t0).await.unwrap_err();
        assert_eq!(r, Rejection::RateLimited { retry_after: Duration::from_secs(2) });
        assert_eq!((r.status(), r.retry_after_secs()), (429, Some(2)));
        assert!(a.admit("digits", t0 + Duration::from_secs(2)).await.is_ok());
    }

    #[tokio::test]
    async fn node_limit_unknown_and_disabled_routes() {
        let t0 = Instant::now();
        let a = node(RouteLimits { max_in_flight: 5, queue_len: 5, rate_limit: None }, 1, t0);
        let held = a.admit("digits", t0).await.unwrap();
        assert_eq!(a.admit("digits", t0).await.unwrap_err(), Rejection::NodeBusy);
        drop(held);
        // The rejected request did not keep its route slot.
        assert_eq!(a.load("digits"), Some((0, 0)));
        let unknown = a.admit("letters", t0).await.unwrap_err();
        assert_eq!((unknown.status(), unknown.retry_after_secs()), (404, None));
        a.set_disabled(&BTreeSet::from(["digits".to_string()]));
        assert_eq!(a.admit("digits", t0).await.unwrap_err(), Rejection::RouteDisabled);
        a.set_disabled(&BTreeSet::new());
        assert!(a.admit("digits", t0).await.is_ok());
    }
}

/// The core pieces wired as the front door will wire them, from the edge example config,
/// deciding over the real edge model's confidences on the test split.
mod pipeline {
    use std::time::{Duration, Instant};

    use cascade_runtime::{
        Backend, BreakerState, Decision, DegradedReason, Digits, EscalationPolicy, Mode, ModeController,
        ModeSignals, PluginOutcome, PolicyInput, ReferenceModel, Split, Telemetry, TractBackend,
        UpstreamView, config, reference,
    };

    /// Max softmax probability of each row of logits: what a classifier plugin reports.
    fn confidences(logits: &[f32]) -> Vec<f64> {
        logits
            .chunks(10)
            .map(|row| {
                let max = row.iter().cloned().fold(f32::MIN, f32::max);
                let sum: f32 = row.iter().map(|l| (l - max).exp()).sum();
                f64::from(1.0 / sum)
            })
            .collect()
    }

    /// (local, escalated, degraded by budget) for every confidence, all decided at `now`.
    fn decide_all(
        policy: &mut EscalationPolicy,
        threshold: f64,
        conf: &[f64],
        now: Instant,
    ) -> (usize, usize, usize) {
        let upstream =
            Some(UpstreamView { breaker: BreakerState::Closed, latency: Some(Duration::from_millis(5)) });
        let mut counts = (0, 0, 0);
        for &confidence in conf {
            let req = PolicyInput {
                outcome: PluginOutcome::Answer { confidence },
                threshold,
                upstream,
                deadline: now + Duration::from_millis(250),
            };
            match policy.decide(&req, now) {
                Decision::Local => counts.0 += 1,
                Decision::Escalate { .. } => counts.1 += 1,
                Decision::Degraded(DegradedReason::BudgetExhausted) => counts.2 += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        counts
    }

    #[test]
    fn edge_config_decides_over_the_real_edge_model_and_follows_mode_switches() {
        let cfg = config::load(&super::examples_dir().join("edge.toml")).unwrap();
        let s = &cfg.settings;
        let route = &s.routes["digits"];

        let dir = reference::default_models_dir();
        let bytes = std::fs::read(ReferenceModel::EdgeInt8.path(&dir)).unwrap();
        let model = TractBackend::new().prepare("edge", &bytes).unwrap();
        let test = Digits::load_split(&dir, Split::Test).unwrap();
        let mut conf = Vec::new();
        for start in (0..test.len()).step_by(500) {
            let input =
                reference::images_to_input(test.images(start..(start + 500).min(test.len()))).unwrap();
            conf.extend(confidences(&model.run(&[input]).unwrap()[0].to_f32().unwrap()));
        }
        let below = |t: f64| conf.iter().filter(|c| **c < t).count();

        let t0 = Instant::now();
        let telemetry = Telemetry::new().unwrap();
        let mut modes = ModeController::new(&s.modes, t0);
        let budget = |mode: Mode| s.modes.switches(mode).escalation_budget;
        let mut policy = EscalationPolicy::new(budget(Mode::Normal), t0);

        // Normal: the unsure ones escalate, as far as the budget's burst allows.
        let unsure = below(route.threshold(Mode::Normal));
        assert!(unsure > 0 && unsure < conf.len() / 4, "{unsure} of {} below 0.9", conf.len());
        let burst = budget(Mode::Normal).burst as usize;
        let (local, escalated, degraded) = decide_all(&mut policy, route.threshold(Mode::Normal), &conf, t0);
        assert_eq!(
            (local, escalated, degraded),
            (conf.len() - unsure, unsure.min(burst), unsure.saturating_sub(burst))
        );

        // A failing upstream sends the node to emergency: nothing escalates any more.
        let t1 = t0 + Duration::from_secs(1);
        let failing = ModeSignals { upstream_error_rate: 0.7, ..ModeSignals::default() };
        let change = modes.observe(&failing, t1).expect("switches");
        assert_eq!(change.to, Mode::Emergency);
        policy.set_budget(budget(change.to), t1);
        telemetry.mode_change(&change);
        let (local, escalated, _) = decide_all(&mut policy, route.threshold(Mode::Emergency), &conf, t1);
        assert_eq!((local, escalated), (conf.len(), 0));

        // An admin pins surge: a lower threshold and a smaller budget.
        let t2 = t1 + Duration::from_secs(1);
        let change = modes.pin(Mode::Surge, t2).unwrap();
        policy.set_budget(budget(Mode::Surge), t2);
        telemetry.mode_change(&change);
        let unsure = below(route.threshold(Mode::Surge));
        // Coming from emergency's empty budget, the bucket refills at the surge rate: right
        // after the switch nothing escalates, two seconds later a full burst may.
        let (_, escalated, _) = decide_all(&mut policy, route.threshold(Mode::Surge), &conf, t2);
        assert_eq!(escalated, 0);
        let t3 = t2 + Duration::from_secs(2);
        let (_, escalated, degraded) = decide_all(&mut policy, route.threshold(Mode::Surge), &conf, t3);
        let held = budget(Mode::Surge).burst as usize;
        assert_eq!((escalated, degraded), (unsure.min(held), unsure.saturating_sub(held)));

        let text = telemetry.render().unwrap();
        assert!(text.contains("cascade_mode{mode=\"surge\"} 1"), "{text}");
    }
}

/// Admission and mode switching built from the edge example, as the front door builds them.
mod overload {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use cascade_runtime::{Admission, Mode, ModeController, ModeSignals, Rejection, UpstreamHealth, config};

    #[tokio::test]
    async fn a_full_queue_rejects_and_sends_the_node_to_emergency() {
        let cfg = config::load(&super::examples_dir().join("edge.toml")).unwrap();
        let s = &cfg.settings;
        let route = &s.routes["digits"];
        let t0 = Instant::now();
        let admission = Arc::new(Admission::from_settings(s, t0));
        let mut modes = ModeController::new(&s.modes, t0);
        let health = UpstreamHealth::new();

        let mut running = Vec::new();
        for _ in 0..route.max_in_flight {
            running.push(admission.admit("digits", t0).await.unwrap());
        }
        let queued: Vec<_> = (0..route.queue_len)
            .map(|_| {
                let a = admission.clone();
                tokio::spawn(async move { a.admit("digits", t0).await.map(drop) })
            })
            .collect();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(admission.load("digits"), Some((route.max_in_flight, route.queue_len)));
        let rejected = admission.admit("digits", t0).await.unwrap_err();
        assert_eq!((rejected, rejected.status()), (Rejection::QueueFull, 503));

        let signals = ModeSignals::sample(&admission, Some(&health));
        assert_eq!(signals.queue_fraction, 1.0);
        let change = modes.observe(&signals, t0).unwrap();
        assert_eq!(change.to, Mode::Emergency);

        // Draining: every queued request gets its turn, and the queue signal falls to zero.
        drop(running);
        for q in queued {
            tokio::time::timeout(Duration::from_secs(5), q).await.unwrap().unwrap().unwrap();
        }
        assert_eq!(ModeSignals::sample(&admission, Some(&health)).queue_fraction, 0.0);
    }
}
