//! Thresholds from evidence, end to end against real nodes: every answer's receipt, the
//! receipt log, shadow traffic recorded durably, `calibrate --from-shadow` over those
//! records, the self-tuning threshold following drifted inputs, and `edge-node calibrate`
//! on the reference pair.

use std::path::Path;
use std::time::{Duration, Instant};

use cascade_runtime::config::{AutoThresholdConfig, ReceiptsConfig, ShadowConfig};
use cascade_runtime::{Mode, shadow};
use cascade_testkit::{central, client, digits, edge, fixture, hard_images, post, resolve};
use edge_node::calibrate_cmd::{self, CalibrateArgs};
use edge_node::serve::Server;
use serde_json::{Value, json};

/// Test image `i` with every third pixel pushed far off by a fixed pattern: the same digit,
/// harder for the small edge model than for the central one.
fn noisy_body(i: usize) -> Vec<u8> {
    let pixels: Vec<u8> = digits()
        .image(i)
        .iter()
        .enumerate()
        .map(|(k, &p)| if (k * 7 + i).is_multiple_of(3) { p.wrapping_add(110) } else { p })
        .collect();
    let body =
        json!({ "inputs": [{ "name": "image", "shape": [28, 28], "datatype": "UINT8", "data": pixels }] });
    serde_json::to_vec(&body).unwrap()
}

fn clean_body(i: usize) -> Vec<u8> {
    let body = json!({ "inputs": [{ "name": "image", "shape": [28, 28], "datatype": "UINT8", "data": digits().image(i) }] });
    serde_json::to_vec(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_say_how_each_answer_was_made_and_are_logged() {
    let central = Server::start(resolve("receipts-central.toml", &central())).await.unwrap();
    let mut config = edge(0.9, central.quic_addr());
    let log = fixture().dir.path().join("receipts.jsonl");
    config.node.telemetry.receipts =
        Some(ReceiptsConfig { path: log.display().to_string(), sample: 1.0, max_mib: 1, keep: 1 });
    let edge = Server::start(resolve("receipts-edge.toml", &config)).await.unwrap();
    let c = client();
    let addr = edge.http_addr();

    let local = post(&c, addr, "digits", &clean_body(0)).await;
    assert_eq!(local.status, 200, "{}", local.body);
    let p = &local.body["parameters"];
    assert_eq!((&p["tier"], &p["escalated"], &p["mode"]), (&json!("edge"), &json!(false), &json!("normal")));
    assert_eq!(p["threshold"], json!(0.9));
    assert_eq!(p["confidence"], p["edge_confidence"]);
    assert!(p["models"].as_str().unwrap().starts_with("mnist@"), "{p}");
    assert_eq!(p["request_id"].as_str().unwrap().len(), 16, "{p}");
    for stage in ["admission", "sandbox", "inference", "policy", "total"] {
        assert!(p["timings_us"][stage].is_u64(), "{stage}: {p}");
    }

    let hard = hard_images(1, 0.6)[0];
    let escalated = post(&c, addr, "digits", &clean_body(hard)).await;
    let p = &escalated.body["parameters"];
    assert_eq!((&p["tier"], &p["escalated"]), (&json!("central"), &json!(true)), "{p}");
    // The edge's own confidence travels with the central's answer.
    let edge_confidence = p["edge_confidence"].as_f64().unwrap();
    assert!(edge_confidence < 0.6 && p["confidence"].as_f64().unwrap() != edge_confidence, "{p}");
    assert!(p["models"].as_str().unwrap().contains("central@"), "the central's digests: {p}");
    assert!(p["timings_us"]["upstream.sandbox"].is_u64(), "the central's stage timings: {p}");
    assert!(p["timings_us"]["escalation"].is_u64(), "{p}");

    let (_, metrics) = cascade_testkit::get_text(&c, addr, "/metrics").await;
    let value = |prefix: &str, labels: &[&str]| cascade_testkit::metric(&metrics, prefix, labels);
    assert_eq!(value("cascade_confidence_count{", &["route=\"digits\""]), Some(2.0), "{metrics}");
    assert_eq!(value("cascade_threshold{", &["route=\"digits\"", "mode=\"normal\""]), Some(0.9));
    assert_eq!(value("cascade_upstream_breaker{", &[]), Some(0.0), "{metrics}");
    assert_eq!(value("cascade_upstream_requests_avoided_total{", &["route=\"digits\""]), Some(1.0));
    edge.shutdown().await.unwrap();
    central.shutdown().await.unwrap();

    let lines = std::fs::read_to_string(&log).unwrap();
    let receipts: Vec<Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(receipts.len(), 2, "{lines}");
    assert_eq!(receipts[1]["tier"], "central");
    assert_eq!(receipts[0]["route"], "digits");
    assert_eq!(receipts[0]["request_id"], local.body["parameters"]["request_id"]);
}

/// Waits until `route`'s normal threshold on `server` has not moved for `still`, at most
/// `limit`; returns it.
async fn settled_threshold(server: &Server, still: Duration, limit: Duration) -> f64 {
    let started = Instant::now();
    let read = || server.node().route("digits").unwrap().threshold(Mode::Normal);
    let (mut last, mut since) = (read(), Instant::now());
    while started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = read();
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= still {
            break;
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_traffic_tunes_the_threshold_when_inputs_drift() {
    let central = Server::start(resolve("shadow-central.toml", &central())).await.unwrap();
    let store = fixture().dir.path().join("shadow.sqlite");
    let mut config = edge(0.5, central.quic_addr());
    config.route.cache_ttl_s = 0;
    config.route.shadow = 1.0;
    config.route.auto_threshold = Some(AutoThresholdConfig {
        target_agreement: 0.99,
        min: 0.5,
        max: 0.99,
        min_samples: 150,
        window: 300,
        step: 0.05,
        interval_s: 1,
    });
    config.node.shadow = Some(ShadowConfig { store: store.display().to_string(), max_records: 10_000 });
    config.node.modes.normal.escalation_budget_rps = Some(10_000.0);
    if let Some(up) = config.node.upstream.as_mut() {
        up.request_timeout_ms = 2000;
    }
    let edge = Server::start(resolve("shadow-edge.toml", &config)).await.unwrap();
    let (c, addr) = (client(), edge.http_addr());

    // Clean inputs: the edge agrees with the central on almost everything it keeps.
    for i in 0..300 {
        assert_eq!(post(&c, addr, "digits", &clean_body(i)).await.status, 200);
    }
    let clean = settled_threshold(&edge, Duration::from_secs(3), Duration::from_secs(20)).await;
    // Drifted inputs: the edge is wrong more often at the same confidence, so holding the
    // agreement takes a higher threshold.
    for i in 300..700 {
        assert_eq!(post(&c, addr, "digits", &noisy_body(i)).await.status, 200);
    }
    let drifted = settled_threshold(&edge, Duration::from_secs(3), Duration::from_secs(30)).await;
    assert!(drifted > clean, "the threshold did not rise with drift: clean {clean}, drifted {drifted}");

    let (_, metrics) = cascade_testkit::get_text(&c, addr, "/metrics").await;
    let moves = cascade_testkit::metric(&metrics, "cascade_threshold_moves_total{", &["direction=\"up\""]);
    assert!(moves.is_some_and(|m| m >= 1.0), "{metrics}");
    assert!(
        cascade_testkit::metric(&metrics, "cascade_shadow_total{", &["result=\"agree\""]).is_some(),
        "{metrics}"
    );

    // Agreement back at the target at the threshold reached, estimated from the latest
    // records (drifted traffic), as the node estimates it.
    let records = wait_for_records(&store, 300).await;
    let examples: Vec<_> = records.iter().map(shadow::Record::example).collect();
    let agreement = cascade_runtime::calibrate::Curve::new(&examples).at(drifted).agreement;
    let before = cascade_runtime::calibrate::Curve::new(&examples).at(clean).agreement;
    eprintln!(
        "threshold clean {clean:.3} -> drifted {drifted:.3}; drifted agreement {before:.4} -> {agreement:.4}"
    );
    assert!(agreement >= 0.985, "agreement {agreement} at {drifted}");
    edge.shutdown().await.unwrap();
    central.shutdown().await.unwrap();

    // The records outlive the node, and calibrate reads them without labels.
    let args = CalibrateArgs {
        config: Some(fixture().dir.path().join("shadow-edge.toml")),
        route: "digits".into(),
        data: cascade_runtime::reference::default_models_dir(),
        central_model: None,
        target_accuracy: None,
        max_loss: None,
        max_escalation: None,
        agreement: true,
        from_shadow: Some(Path::new("").to_path_buf()),
        plot: None,
        coverage: 0,
        json: true,
        plugin: cascade_testkit::repo().join("examples/mnist-classifier"),
    };
    let figures = calibrate_cmd::run(&args).unwrap().to_json_lines();
    assert!(figures.contains("\"figure\":\"calibration.threshold\""), "{figures}");
}

async fn wait_for_records(store: &Path, at_least: usize) -> Vec<shadow::Record> {
    for _ in 0..50 {
        let records = shadow::read_recent(store, "digits", at_least).unwrap_or_default();
        if records.len() >= at_least {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("fewer than {at_least} shadow records in {}", store.display());
}

#[test]
fn calibrate_recommends_a_threshold_checks_it_and_plots_it() {
    let plot = fixture().dir.path().join("threshold.svg");
    let args = CalibrateArgs {
        config: None,
        route: "digits".into(),
        data: cascade_runtime::reference::default_models_dir(),
        central_model: None,
        target_accuracy: None,
        max_loss: Some(0.0015),
        max_escalation: None,
        agreement: false,
        from_shadow: None,
        plot: Some(plot.clone()),
        coverage: 2,
        json: true,
        plugin: cascade_testkit::repo().join("examples/mnist-classifier"),
    };
    let figures: Vec<Value> = calibrate_cmd::run(&args)
        .unwrap()
        .to_json_lines()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let figure = |name: &str| {
        figures
            .iter()
            .find(|f| f["figure"] == name)
            .and_then(|f| f["value"].as_f64())
            .unwrap_or_else(|| panic!("{name}"))
    };
    let t = figure("calibration.threshold");
    assert!((0.5..1.0).contains(&t), "{t}");
    let (lo, mid, hi) = (
        figure("calibration.predicted.accuracy.lo"),
        figure("calibration.predicted.accuracy"),
        figure("calibration.predicted.accuracy.hi"),
    );
    assert!(lo <= mid && mid <= hi, "{lo} {mid} {hi}");
    assert!(figure("calibration.realised.edge_share") > 0.85);
    assert!(figure("calibration.realised.accuracy") >= figure("calibration.edge_only.accuracy"));
    for name in ["edge_share", "accuracy", "goal_held"] {
        let share = figure(&format!("calibration.coverage.{name}"));
        assert!((0.0..=1.0).contains(&share), "coverage {name} {share}");
    }
    for measure in ["plugin", "max_probability", "margin", "entropy"] {
        assert!(figure(&format!("calibration.auroc.{measure}")) > 0.8, "{measure}");
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("chosen"), "not an SVG with its legend");
}
