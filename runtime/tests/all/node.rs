//! The node's request path driven directly, without HTTP: an edge node with the real plugin
//! and model, escalating over real QUIC to a central node in the same process, through
//! every stage from validation to escalation.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_runtime::config::TensorDeclConfig;
use cascade_runtime::protocol::{EscalationRequest, NamedTensor};
use cascade_runtime::transport::RequestContext;
use cascade_runtime::{
    CacheStatus, CurrentNode, DegradedReason, Mode, Node, ReferenceModel, Rejection, ServeError, Tensor,
};
use cascade_testkit::{assert_close, central, digits, edge, hard_images, metric, probabilities, resolve};

fn image(i: usize) -> Vec<(String, Tensor)> {
    vec![("image".into(), Tensor::from_u8(vec![28, 28], digits().image(i).to_vec()).unwrap())]
}

/// The first test image the edge model is at least this sure of.
fn easy_image(at_least: f32) -> usize {
    let candidates: Vec<usize> = (0..50).collect();
    let probs = probabilities(ReferenceModel::EdgeInt8, &candidates);
    candidates
        .into_iter()
        .zip(probs)
        .find(|(_, p)| p.iter().copied().fold(0.0, f32::max) >= at_least)
        .unwrap()
        .0
}

fn build(name: &str, config: &cascade_runtime::reference::ReferenceNode) -> Arc<Node> {
    tokio::task::block_in_place(|| Node::new(resolve(name, config))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_answers_locally_escalates_hard_requests_and_degrades_when_the_central_is_gone() {
    let central = CurrentNode::new(build("node-central.toml", &central()));
    let quic = central.listen_quic().unwrap().expect("the central listens on QUIC");
    let mut config = edge(0.9, Some(quic.local_addr()));
    config.route.inputs =
        vec![TensorDeclConfig { name: "image".into(), datatype: "UINT8".into(), shape: vec![28, 28] }];
    let edge = build("node-edge.toml", &config);

    // A confident answer stays here, and the same request again is a cache hit.
    let easy = easy_image(0.99);
    let reply = edge.infer("digits", image(easy), vec![]).await.unwrap();
    assert_eq!((reply.tier.as_str(), reply.escalated, &reply.degraded), ("edge", false, &None));
    assert_eq!(reply.request.cache, CacheStatus::Miss);
    assert_eq!(reply.outputs[0].0, "probabilities");
    assert_close(&reply.outputs[0].1.to_f32().unwrap(), &probabilities(ReferenceModel::EdgeInt8, &[easy])[0]);
    let again = edge.infer("digits", image(easy), vec![]).await.unwrap();
    assert_eq!((again.request.cache, &again.outputs), (CacheStatus::Hit, &reply.outputs));

    // An unsure one goes to the central node, which answers with its own model.
    let hard = hard_images(3, 0.6);
    let reply = edge.infer("digits", image(hard[0]), vec![]).await.unwrap();
    assert_eq!((reply.tier.as_str(), reply.escalated, &reply.degraded), ("central", true, &None));
    let central_probs = probabilities(ReferenceModel::CentralFp32, &[hard[0]]);
    assert_close(&reply.outputs[0].1.to_f32().unwrap(), &central_probs[0]);

    // With the central gone, the edge answers itself, marked degraded, and says why.
    quic.shutdown().await;
    let reply = edge.infer("digits", image(hard[1]), vec![]).await.unwrap();
    assert_eq!((reply.tier.as_str(), reply.escalated), ("edge", false));
    let degraded = reply.degraded.expect("marked degraded");
    assert_eq!(degraded.reason, DegradedReason::UpstreamFailed);
    assert!(degraded.detail.is_some_and(|d| !d.is_empty()));
    assert_close(
        &reply.outputs[0].1.to_f32().unwrap(),
        &probabilities(ReferenceModel::EdgeInt8, &[hard[1]])[0],
    );

    // Inputs that break the route's declared tensors never reach the plugin.
    let short = vec![("image".into(), Tensor::from_u8(vec![10], vec![0; 10]).unwrap())];
    let err = edge.infer("digits", short, vec![]).await.unwrap_err();
    assert!(matches!(&err, ServeError::BadRequest(m) if m.starts_with("inputs[0].shape")), "{err}");
    assert!(matches!(edge.infer("letters", image(0), vec![]).await, Err(ServeError::UnknownRoute(_))));

    // Every request was observed once, with the tier that answered.
    let text = edge.metrics().unwrap();
    let count = |labels: &[&str]| metric(&text, "cascade_requests_total{", labels).unwrap_or(0.0);
    assert_eq!(count(&["outcome=\"answered\"", "tier=\"local\""]), 2.0, "{text}");
    assert_eq!(count(&["outcome=\"answered\"", "tier=\"upstream\""]), 1.0, "{text}");
    assert_eq!(count(&["outcome=\"degraded\""]), 1.0, "{text}");
    assert_eq!(count(&["outcome=\"failed\""]), 1.0, "{text}");
    assert_eq!(metric(&text, "cascade_escalations_total{", &["result=\"ok\""]), Some(1.0), "{text}");
    assert_eq!(metric(&text, "cascade_escalations_total{", &["result=\"failed\""]), Some(1.0), "{text}");
    assert_eq!(metric(&text, "cascade_cache_total{", &["status=\"hit\""]), Some(1.0), "{text}");
    for stage in ["admission", "sandbox", "inference", "policy", "escalation", "total"] {
        let n = metric(&text, "cascade_stage_seconds_count{", &[&format!("stage=\"{stage}\"")]);
        assert!(n.is_some_and(|n| n >= 1.0), "stage {stage}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_from_downstream_is_answered_here_and_never_passed_on() {
    // An edge that would escalate everything, to an upstream that does not exist.
    let unreachable = "127.0.0.1:9".parse().unwrap();
    let node = build("node-relay.toml", &edge(1.0, Some(unreachable)));
    let request = EscalationRequest {
        id: 7,
        route: "digits".into(),
        inputs: image(0).into_iter().map(|(name, tensor)| NamedTensor { name, tensor }).collect(),
        budget_us: cascade_runtime::protocol::budget_us(Duration::from_secs(2)),
        trace: None,
        node_id: "edge-below".into(),
        local_confidence: Some(0.2),
    };
    let context = RequestContext {
        remote: "127.0.0.1:40000".parse().unwrap(),
        peer: "edge-below".into(),
        received: Instant::now(),
        deadline: Instant::now() + Duration::from_secs(2),
    };
    let answer = node.clone().answer_escalation(request, context).await.unwrap();
    assert_eq!(answer.id, 7);
    assert_eq!(answer.label, Some(u32::from(digits().label(0))));
    assert!(answer.model_version.starts_with("mnist@"), "{}", answer.model_version);
    let text = node.metrics().unwrap();
    // Every route's series exist from the start, at zero.
    let escalated: f64 = text
        .lines()
        .filter(|l| l.starts_with("cascade_escalations_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(escalated, 0.0, "nothing escalated: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_route_refuses_at_once_and_the_node_switches_to_emergency() {
    let mut config = edge(0.9, None);
    config.node.modes.switching.automatic = true;
    let node = build("node-overload.toml", &config);
    assert_eq!(node.mode(), Mode::Normal);

    // The hostile route runs one request at a time with no queue: a plugin looping to its
    // deadline takes its only place.
    let looping = tokio::spawn({
        let node = node.clone();
        async move { node.infer("hostile", vec![], vec![("mode".into(), "loop".into())]).await }
    });
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!looping.is_finished(), "the looping request ended early: {:?}", looping.await);
    let refused = node.infer("hostile", vec![], vec![("mode".into(), "ok".into())]).await.unwrap_err();
    let ServeError::Rejected { rejection, .. } = &refused else { panic!("{refused}") };
    assert_eq!((*rejection, refused.status()), (Rejection::QueueFull, 503));

    // A route with every place taken is a full queue: the mode controller steps up.
    while node.mode() != Mode::Emergency {
        assert!(started.elapsed() < Duration::from_secs(3), "no switch to emergency");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = looping.await.unwrap().unwrap_err();
    assert!(matches!(&err, ServeError::Plugin { kind: "timeout", .. }), "{err}");
    let text = node.metrics().unwrap();
    assert_eq!(metric(&text, "cascade_rejections_total{", &["reason=\"queue_full\""]), Some(1.0), "{text}");
    let switched = metric(&text, "cascade_mode_switches_total{", &["to=\"emergency\"", "cause=\"signals\""]);
    assert_eq!(switched, Some(1.0), "{text}");
    assert_eq!(metric(&text, "cascade_sandbox_failures_total{", &["kind=\"timeout\""]), Some(1.0), "{text}");
}

/// Runs `body` on a one-thread runtime beside a `hostile` request looping on the same thread
/// to its 1 s deadline; returns what `body` returned, once the loop has ended in a timeout.
fn beside_a_looping_plugin<T, F: Future<Output = T>>(node: &Arc<Node>, body: impl FnOnce() -> F) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let looping = tokio::spawn({
            let node = node.clone();
            async move { node.infer("hostile", vec![], vec![("mode".into(), "loop".into())]).await }
        });
        tokio::task::yield_now().await;
        let out = body().await;
        let err = looping.await.unwrap().unwrap_err();
        assert!(matches!(&err, ServeError::Plugin { kind: "timeout", .. }), "{err}");
        out
    })
}

/// A plugin runs on the thread that holds its request, and yields at every epoch tick: on a
/// runtime with a single thread, one looping to its 1 s deadline leaves that thread to the
/// other requests, which are answered while it loops.
#[test]
fn a_looping_plugin_on_a_one_thread_runtime_leaves_the_thread_to_other_requests() {
    let node = Node::new(resolve("node-one-thread.toml", &edge(0.0, None))).unwrap();
    let waited = beside_a_looping_plugin(&node, || async {
        let started = Instant::now();
        for i in 0..20 {
            let answer = node.infer("digits", image(i), vec![]).await.unwrap();
            assert_eq!(answer.tier.as_str(), "edge", "request {i}");
        }
        started.elapsed()
    });
    // Each waits a tick or two for the looping guest to yield. A yield that put the guest
    // straight back on the run queue would make each wait 61 ticks (tokio polls its drivers
    // and the `block_on` future every 61 tasks): over a second for the twenty, longer than the
    // loop's deadline.
    assert!(waited < Duration::from_millis(400), "20 requests took {waited:?} beside a looping plugin");
}

/// `admission.max_intake_lag_us`: beside a plugin looping on the one thread (so every other
/// request there waits about a tick, 1 ms, for its turn, and the thread is busy throughout),
/// a node given a 500 µs limit starts refusing new requests before their bodies are read
/// (`behind`), and one without the setting never does.
#[test]
fn a_thread_kept_behind_sheds_new_requests_only_when_configured() {
    let refusals = |lag_us: u64| {
        let mut config = edge(0.0, None);
        config.node.admission.max_intake_lag_us = lag_us;
        let node = Node::new(resolve(&format!("node-intake-{lag_us}.toml"), &config)).unwrap();
        beside_a_looping_plugin(&node, || async {
            let (started, mut behind) = (Instant::now(), 0);
            while started.elapsed() < Duration::from_millis(300) {
                match node.refuse_early("digits").await {
                    Ok(()) => {}
                    Err(ServeError::Rejected { rejection: Rejection::Behind, .. }) => behind += 1,
                    Err(e) => panic!("refused for another reason: {e}"),
                }
                // Every request takes its turn behind the guest.
                tokio::task::yield_now().await;
            }
            behind
        })
    };
    assert!(refusals(500) > 0, "a thread a tick behind for 300 ms never shed");
    assert_eq!(refusals(0), 0, "a node without the setting shed");
}

/// An answer accepted under surge's looser threshold is cached for that decision only: back
/// in normal mode the same request is decided afresh (here: degraded, there is no upstream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_accepted_in_a_looser_mode_is_not_served_in_a_stricter_one() {
    let mut config = edge(0.9, None);
    config.route.thresholds.surge = Some(0.75);
    let node = build("node-modes-cache.toml", &config);
    let candidates: Vec<usize> = (0..500).collect();
    let probs = probabilities(ReferenceModel::EdgeInt8, &candidates);
    let i = candidates
        .into_iter()
        .zip(probs)
        .find(|(_, p)| (0.76..0.89).contains(&p.iter().copied().fold(0.0, f32::max)))
        .expect("an image the edge is 76-89% sure of")
        .0;
    node.pin_mode(Some(Mode::Surge));
    let surge = node.infer("digits", image(i), vec![]).await.unwrap();
    assert_eq!(
        (surge.degraded.is_none(), surge.threshold, surge.request.cache),
        (true, 0.75, CacheStatus::Miss)
    );
    node.pin_mode(Some(Mode::Normal));
    let normal = node.infer("digits", image(i), vec![]).await.unwrap();
    assert_eq!(normal.request.cache, CacheStatus::Miss, "served surge's answer from the cache");
    assert_eq!(normal.degraded.map(|d| d.reason), Some(DegradedReason::NoUpstream));
    assert_eq!(normal.threshold, 0.9);
}
