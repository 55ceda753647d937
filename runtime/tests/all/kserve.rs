//! KServe v2 upstreams: `[upstream] kind = "kserve"` (the example config, and every refusal
//! naming its field), and `UpstreamClient::kserve` sharing breakers and retries with QUIC.
//! The exchange with a real KServe server is tested end to end in edge-node's
//! `kserve_upstream` test.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cascade_runtime::config::{self, ConfigError, OutputMap, Transform, UpstreamKind};
use cascade_runtime::protocol::{EscalationRequest, NamedTensor};
use cascade_runtime::upstream::{
    BreakerConfig, BreakerState, EscalationError, KserveConfig, KserveError, KserveUpstreamConfig, Origin,
    UpstreamClient,
};
use cascade_runtime::{ReferenceModel, Tensor, reference};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/configs")
}

/// A minimal node with `upstream` as its `[upstream]` section.
fn with_upstream(upstream: &str) -> String {
    format!(
        r#"
[models.edge]
path = "{model}"

[plugins.p]
path = "p.wasm"
models = ["edge"]

[routes.digits]
plugin = "p"
thresholds = {{ normal = 0.9 }}

[upstream]
{upstream}
"#,
        model = ReferenceModel::EdgeInt8.path(&reference::default_models_dir()).display(),
    )
}

/// The `field: problem; expected ...` lines of a refused config.
fn problems(upstream: &str) -> Vec<String> {
    match config::parse(&with_upstream(upstream), Path::new("node.toml")) {
        Err(ConfigError::Invalid { problems, .. }) => problems.iter().map(ToString::to_string).collect(),
        Err(other) => panic!("expected invalid fields, got: {other}"),
        Ok(_) => panic!("accepted:\n{upstream}"),
    }
}

fn assert_problem(upstream: &str, field: &str, needles: &[&str]) {
    let all = problems(upstream);
    let found = all.iter().find(|p| p.starts_with(&format!("{field}:")));
    let Some(problem) = found else { panic!("no problem for `{field}` in {all:#?}") };
    for needle in needles {
        assert!(problem.contains(needle), "`{problem}` does not say `{needle}`");
    }
}

#[test]
fn the_kserve_example_config_validates() {
    let edge = config::load(&examples_dir().join("edge-kserve.toml")).unwrap();
    let up = edge.settings.upstream.as_ref().expect("the example has an upstream");
    let UpstreamKind::Kserve(k) = &up.kind else { panic!("not a kserve upstream: {:?}", up.kind) };
    assert_eq!((k.url.as_str(), k.model.as_str()), ("http://127.0.0.1:8500", "central"));
    // The tier that answers escalations is named after the server.
    assert_eq!(up.server_name, "127.0.0.1:8500");
    assert_eq!(up.request_timeout, Duration::from_millis(200));
    assert_eq!(up.breaker_failure_threshold, 5);
    assert!(up.quic().is_none());
    // No certificates to check: resolving stops at the unbuilt plugin, not at `upstream.*`.
    match edge.resolve() {
        Ok(_) => {}
        Err(ConfigError::ReadFile { field, .. }) => assert_eq!(field, "plugins.mnist.path"),
        Err(other) => panic!("{other}"),
    }
}

#[test]
fn kserve_urls_are_normalised_and_name_the_tier() {
    let cfg = with_upstream("kind = \"kserve\"\nurl = \"http://inference.internal/serving/\"\nmodel = \"m\"");
    let up = config::parse(&cfg, Path::new("node.toml")).unwrap().settings.upstream.unwrap();
    let k = up.kserve().unwrap();
    assert_eq!(k.url, "http://inference.internal/serving");
    assert_eq!(up.server_name, "inference.internal:80");
}

#[test]
fn quic_stays_the_default_and_keeps_its_required_fields() {
    let quic = "addresses = [\"127.0.0.1:4433\"]\nserver_name = \"central\"\nca = \"ca.pem\"\ncert = \"e.pem\"\nkey = \"e.key\"";
    let up = config::parse(&with_upstream(quic), Path::new("node.toml")).unwrap().settings.upstream.unwrap();
    assert_eq!(up.quic().unwrap().addresses.len(), 1);
    assert_eq!(up.server_name, "central");

    assert_problem(
        "server_name = \"central\"\nca = \"ca.pem\"\ncert = \"e.pem\"\nkey = \"e.key\"",
        "upstream.addresses",
        &["missing", "ip:port"],
    );
    let all = problems("kind = \"quic\"");
    for field in ["addresses", "server_name", "ca", "cert", "key"] {
        assert!(
            all.iter().any(|p| p.starts_with(&format!("upstream.{field}: missing"))),
            "{field}: {all:#?}"
        );
    }
    assert_problem(
        &format!("{quic}\nurl = \"http://127.0.0.1:8500\""),
        "upstream.url",
        &["kind = \"quic\"", "kind = \"kserve\""],
    );
}

#[test]
fn kserve_requires_url_and_model_and_refuses_quic_fields() {
    let all = problems("kind = \"kserve\"");
    assert!(all.iter().any(|p| p.starts_with("upstream.url: missing")), "{all:#?}");
    assert!(all.iter().any(|p| p.starts_with("upstream.model: missing")), "{all:#?}");

    let base = "kind = \"kserve\"\nurl = \"http://127.0.0.1:8500\"\nmodel = \"central\"";
    for (field, line) in [
        ("addresses", "addresses = [\"127.0.0.1:4433\"]"),
        ("server_name", "server_name = \"central\""),
        ("ca", "ca = \"ca.pem\""),
        ("cert", "cert = \"e.pem\""),
        ("key", "key = \"e.key\""),
    ] {
        assert_problem(
            &format!("{base}\n{line}"),
            &format!("upstream.{field}"),
            &["`kind = \"kserve\"` does not use it", "kind = \"quic\""],
        );
    }
}

#[test]
fn unusable_kserve_urls_and_kinds_are_refused() {
    let kserve = |url: &str| format!("kind = \"kserve\"\nurl = \"{url}\"\nmodel = \"central\"");
    assert_problem(&kserve("127.0.0.1:8500"), "upstream.url", &["not a URL", "http://host:port"]);
    assert_problem(&kserve("https://triton.internal:8000"), "upstream.url", &["https", "no TLS"]);
    assert_problem(&kserve("ftp://triton.internal"), "upstream.url", &["scheme `ftp`"]);
    assert_problem(&kserve("http://triton.internal:8000/?x=1"), "upstream.url", &["query"]);
    assert_problem(&kserve("http://user:pw@triton.internal:8000"), "upstream.url", &["credentials"]);
    assert_problem(
        "kind = \"kserve\"\nurl = \"http://127.0.0.1:8500\"\nmodel = \"central/../x\"",
        "upstream.model",
        &["not a usable name"],
    );
    assert_problem("kind = \"grpc\"", "upstream.kind", &["unknown kind `grpc`", "`quic` or `kserve`"]);
}

/// The example's mapping of the server's `logits` onto the route's `probabilities` is read
/// as written; mappings that cannot work are refused naming the field.
#[test]
fn answer_mappings_are_read_and_checked() {
    let edge = config::load(&examples_dir().join("edge-kserve.toml")).unwrap();
    let map = &edge.settings.routes["digits"].from_upstream;
    assert_eq!(
        map.outputs,
        vec![OutputMap {
            name: "probabilities".into(),
            from: "logits".into(),
            transform: Transform::Softmax
        }]
    );
    assert_eq!(
        (map.confidence.as_deref(), map.label.as_deref()),
        (Some("probabilities"), Some("probabilities"))
    );

    // `[routes.digits]` declaring `probabilities` (FP32) and `top` (INT64), then `extra`.
    let problems = |extra: &str| -> Vec<String> {
        let declared = r#"outputs = [
  { name = "probabilities", datatype = "FP32", shape = [1, 10] },
  { name = "top", datatype = "INT64", shape = [1] },
]"#;
        let upstream = "kind = \"kserve\"\nurl = \"http://127.0.0.1:8500\"\nmodel = \"central\"";
        let text = with_upstream(upstream).replace(
            "thresholds = { normal = 0.9 }",
            &format!("thresholds = {{ normal = 0.9 }}\n{declared}\n{extra}"),
        );
        match config::parse(&text, Path::new("node.toml")) {
            Err(ConfigError::Invalid { problems, .. }) => problems.iter().map(ToString::to_string).collect(),
            Err(other) => panic!("expected invalid fields, got: {other}"),
            Ok(_) => Vec::new(),
        }
    };
    let good = r#"from_upstream = { outputs = [
  { name = "probabilities", from = "logits", transform = "softmax" },
  { name = "top", from = "top_class" },
], confidence = "probabilities", label = "probabilities" }"#;
    assert_eq!(problems(good), Vec::<String>::new());
    for (extra, field, needle) in [
        (
            r#"from_upstream = { outputs = [{ name = "probabilities", from = "logits", transform = "softmax" }] }"#,
            "routes.digits.from_upstream.outputs:",
            "declared output `top` is not mapped",
        ),
        (
            r#"from_upstream = { outputs = [{ name = "probs", from = "logits" }, { name = "top", from = "t" }] }"#,
            "routes.digits.from_upstream.outputs[0].name:",
            "`probs` is not a declared output",
        ),
        (
            r#"from_upstream = { outputs = [{ name = "probabilities", from = "l", transform = "sigmoid" }, { name = "top", from = "t" }] }"#,
            "routes.digits.from_upstream.outputs[0].transform:",
            "unknown transform `sigmoid`",
        ),
        (
            r#"from_upstream = { outputs = [{ name = "probabilities", from = "l" }, { name = "top", from = "t", transform = "softmax" }] }"#,
            "routes.digits.from_upstream.outputs[1].transform:",
            "`top` is declared INT64",
        ),
        (
            r#"from_upstream = { confidence = "top" }"#,
            "routes.digits.from_upstream.confidence:",
            "not probabilities",
        ),
        (
            r#"from_upstream = { label = "nothing" }"#,
            "routes.digits.from_upstream.label:",
            "not a declared output",
        ),
        ("shadow = 0.05", "routes.digits.shadow:", "a KServe server's answers carry none"),
    ] {
        let all = problems(extra);
        assert!(
            all.iter().any(|p| p.starts_with(field) && p.contains(needle)),
            "`{extra}`: no `{field}` problem saying `{needle}` in {all:#?}"
        );
    }
}

fn request(id: u64) -> EscalationRequest {
    EscalationRequest {
        id,
        route: "digits".into(),
        inputs: vec![NamedTensor {
            name: "image".into(),
            tensor: Tensor::from_u8(vec![2], vec![1, 2]).unwrap(),
        }],
        budget_us: cascade_runtime::protocol::budget_us(Duration::from_secs(5)),
        trace: None,
        node_id: "edge".into(),
        local_confidence: None,
    }
}

fn client(url: String, failure_threshold: u32) -> UpstreamClient {
    let mut config = KserveUpstreamConfig::new(vec![KserveConfig::new(url, "central")]);
    config.breaker =
        BreakerConfig { failure_threshold, open_for: Duration::from_secs(60), ..BreakerConfig::default() };
    UpstreamClient::kserve(config).unwrap()
}

#[tokio::test]
async fn a_dead_kserve_server_opens_its_breaker() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    // A refused connection is retryable, but a retry goes
    // only on another upstream, and there is none: each escalation is one failure.
    let upstream = client(format!("http://{addr}"), 2);
    assert_eq!(upstream.members()[0].0, addr.to_string());
    for id in 0..2 {
        let err = upstream.escalate(&request(id)).await.unwrap_err();
        let EscalationError::Kserve { server, source } = &err else { panic!("{err}") };
        assert_eq!(server, &addr.to_string());
        assert!(matches!(source, KserveError::Connect(_)), "{err}");
        assert_eq!((err.origin(), err.retryable()), (Origin::Transport, true));
        assert!(err.to_string().starts_with(&format!("kserve upstream {addr}: no response")), "{err}");
    }
    assert_eq!(upstream.members()[0].1.breaker, BreakerState::Open);
    assert!(!upstream.available());
    assert!(matches!(upstream.escalate(&request(9)).await, Err(EscalationError::NoUpstream)));
}

/// Answers every request with HTTP 400 and counts them.
async fn refusing_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut seen = Vec::new();
                // The request is small: read until the body (after the blank line) has arrived.
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.ends_with(b"}") {
                        break;
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let body = r#"{"error":"unexpected input image"}"#;
                let reply = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    (url, hits)
}

#[tokio::test]
async fn a_refused_request_is_not_retried_and_leaves_the_breaker_closed() {
    let (url, hits) = refusing_server().await;
    let upstream = client(url, 2);
    for id in 0..5 {
        let err = upstream.escalate(&request(id)).await.unwrap_err();
        assert!(
            matches!(&err, EscalationError::Kserve { source: KserveError::Status { status: 400, message }, .. }
                if message == "unexpected input image"),
            "{err}"
        );
        assert_eq!((err.origin(), err.retryable()), (Origin::Upstream, false));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 5, "one attempt per escalation");
    assert_eq!(upstream.members()[0].1.breaker, BreakerState::Closed);
    assert!(upstream.available());
}
