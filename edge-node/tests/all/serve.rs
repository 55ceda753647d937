//! `edge-node serve` end to end: real nodes over HTTP, escalating over QUIC with mutual TLS.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use cascade_runtime::ReferenceModel;
use cascade_runtime::config::TensorDeclConfig;
use cascade_testkit::{
    assert_close, central, client, digits, edge, fixture, get_text, hard_images, image_body, metric,
    output_values, post, probabilities, resolve, write_config, write_file,
};
use edge_node::deployment::{NodeProcess, free_tcp_port, free_udp_port};
use edge_node::serve::Server;
use serde_json::json;

/// The edge answers a confident request itself, then serves the repeat from its cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_answer_then_cache_hit() {
    let server = Server::start(resolve("local.toml", &edge(0.0, None))).await.unwrap();
    let addr = server.http_addr();
    let c = client();
    let body = serde_json::to_vec(&image_body(0)).unwrap();

    let first = post(&c, addr, "digits", &body).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let p = &first.body["parameters"];
    assert_eq!(p["tier"], "edge");
    assert_eq!(p["escalated"], false);
    assert_eq!(p["degraded"], false);
    assert_eq!(p["cache"], "miss");
    assert_eq!(first.body["id"], "img-0");
    assert_eq!(first.body["outputs"][0]["shape"], json!([1, 10]));
    let expected = &probabilities(ReferenceModel::EdgeInt8, &[0])[0];
    assert_close(&output_values(&first.body), expected);
    assert_eq!(p["label"], digits().label(0).to_string());

    let again = post(&c, addr, "digits", &body).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["parameters"]["cache"], "hit");
    assert_eq!(again.body["outputs"], first.body["outputs"]);

    // The rest of the protocol's surface.
    assert_eq!(get_text(&c, addr, "/v2/health/live").await.0, 200);
    assert_eq!(get_text(&c, addr, "/v2/health/ready").await.0, 200);
    assert_eq!(get_text(&c, addr, "/v2/models/digits/ready").await.0, 200);
    assert_eq!(get_text(&c, addr, "/v2/models/nope/ready").await.0, 404);
    let (status, meta) = get_text(&c, addr, "/v2/models/digits").await;
    assert_eq!(status, 200);
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["inputs"][0]["datatype"], "FP32");
    assert_eq!(meta["outputs"][0]["name"], "logits");
    let (status, server_meta) = get_text(&c, addr, "/v2").await;
    assert_eq!(status, 200);
    assert!(server_meta.contains("\"edge\""));
    let server_meta: serde_json::Value = serde_json::from_str(&server_meta).unwrap();
    assert_eq!(server_meta["extensions"], json!(["binary_tensor_data"]));
    let (status, metrics) = get_text(&c, addr, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(metric(&metrics, "cascade_cache_total{", &["status=\"hit\""]), Some(1.0));
    // Every handoff is timed: one computed answer (its model call inside the sandbox, its
    // policy decision), two responses.
    let stage =
        |name: &str| metric(&metrics, "cascade_stage_seconds_count{", &[&format!("stage=\"{name}\"")]);
    assert_eq!(
        ["sandbox", "inference", "policy", "response"].map(stage),
        [Some(1.0), Some(1.0), Some(1.0), Some(2.0)]
    );
    assert_eq!(
        metric(
            &metrics,
            "cascade_requests_total{",
            &["route=\"digits\"", "outcome=\"answered\"", "tier=\"local\""]
        ),
        Some(2.0)
    );
    server.shutdown().await.unwrap();
}

/// Malformed requests get 400 naming the field; unknown routes 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_naming_the_field() {
    let server = Server::start(resolve("malformed.toml", &edge(0.0, None))).await.unwrap();
    let addr = server.http_addr();
    let c = client();
    let cases: [(&[u8], &str); 4] = [
        (b"{\"inputs\": [", "JSON"),
        (br#"{"inputs":[{"name":"image","shape":[28,28],"datatype":"UINT8"}]}"#, "inputs[0].data"),
        (
            br#"{"inputs":[{"name":"image","shape":[28,28],"datatype":"UINT8","data":[1,2,3]}]}"#,
            "inputs[0].data",
        ),
        (
            br#"{"inputs":[{"name":"image","shape":[28,28],"datatype":"FP16","data":[]}]}"#,
            "inputs[0].datatype",
        ),
    ];
    for (body, field) in cases {
        let r = post(&c, addr, "digits", body).await;
        assert_eq!(r.status, 400, "{}", r.body);
        let message = r.body["error"].as_str().unwrap();
        assert!(message.contains(field), "{message:?} should name {field}");
    }
    // Well-formed for the protocol, wrong for the plugin: its own message, still a 400.
    let r = post(
        &c,
        addr,
        "digits",
        br#"{"inputs":[{"name":"image","shape":[3],"datatype":"UINT8","data":[1,2,3]}]}"#,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body["error"].as_str().unwrap().contains("784 pixels"));
    let r = post(&c, addr, "nope", &serde_json::to_vec(&image_body(0)).unwrap()).await;
    assert_eq!(r.status, 404);
    assert!(r.body["error"].as_str().unwrap().contains("nope"));
    server.shutdown().await.unwrap();
}

/// Beyond the rate limit: 429 with Retry-After. Slots and queue full: 503 with Retry-After.
/// A plugin that runs past its deadline: 500 naming the error kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_429_queue_full_503_and_plugin_timeout_500() {
    let mut config = edge(0.0, None);
    config.route.rate_limit_rps = Some(0.5);
    config.route.rate_burst = Some(1);
    let server = Server::start(resolve("admission.toml", &config)).await.unwrap();
    let addr = server.http_addr();
    let c = client();
    let body = serde_json::to_vec(&image_body(1)).unwrap();
    assert_eq!(post(&c, addr, "digits", &body).await.status, 200);
    let limited = post(&c, addr, "digits", &body).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert!(limited.retry_after.is_some_and(|s| s >= 1));
    assert!(limited.body["error"].as_str().unwrap().contains("rate limit"));

    // `hostile` has one slot and no queue; its `loop` mode holds the slot until the plugin's
    // 1 s deadline interrupts it.
    let looping = |mode: &str| {
        serde_json::to_vec(&json!({
            "inputs": [{ "name": "x", "shape": [1], "datatype": "UINT8", "data": [0] }],
            "parameters": { "mode": mode }
        }))
        .unwrap()
    };
    let (c2, slow_body) = (c.clone(), looping("loop"));
    let slow = tokio::spawn(async move { post(&c2, addr, "hostile", &slow_body).await });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let full = post(&c, addr, "hostile", &looping("ok")).await;
    // Answered while the plugin still loops: a plugin that runs to its deadline holds its
    // own request, not the node.
    assert!(!slow.is_finished(), "the node answered nothing while a plugin looped");
    assert_eq!(full.status, 503, "{}", full.body);
    assert_eq!(full.retry_after, Some(1));
    assert!(full.body["error"].as_str().unwrap().contains("queue is full"));
    // Refused before its body is read: a body that would be a 400 is a 503 too.
    let unread = post(&c, addr, "hostile", b"{ not json").await;
    assert_eq!(unread.status, 503, "{}", unread.body);
    // A refused request whose body comes after its head leaves its connection usable.
    refused_with_a_late_body_keeps_the_connection(addr).await;
    let slow = slow.await.unwrap();
    assert_eq!(slow.status, 500, "{}", slow.body);
    assert!(slow.body["error"].as_str().unwrap().contains("(timeout)"), "{}", slow.body);
    let (_, metrics) = get_text(&c, addr, "/metrics").await;
    assert_eq!(metric(&metrics, "cascade_rejections_total{", &["reason=\"queue_full\""]), Some(3.0));
    assert_eq!(metric(&metrics, "cascade_sandbox_failures_total{", &["kind=\"timeout\""]), Some(1.0));
    server.shutdown().await.unwrap();
}

/// On one connection to `addr`, whose `hostile` route is full: a request whose body arrives
/// 50 ms after its head, then a `GET`; both answered, the first with 503.
async fn refused_with_a_late_body_keeps_the_connection(addr: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[0]}]}"#;
    let head = format!(
        "POST /v2/models/hostile/infer HTTP/1.1\r\nhost: edge\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    stream.write_all(body).await.unwrap();
    // Reads one whole response (its head and `content-length` body) off the stream.
    async fn response(stream: &mut tokio::net::TcpStream) -> String {
        let mut buf = Vec::new();
        loop {
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                    })
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    return text;
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut chunk))
                .await
                .expect("no answer within 5 s")
                .unwrap_or(0);
            assert!(n > 0, "the node closed the connection; read so far: {text:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    let refused = response(&mut stream).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(!refused.to_ascii_lowercase().contains("connection: close"), "{refused}");
    stream.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: edge\r\n\r\n").await.unwrap();
    let live = response(&mut stream).await;
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
}

/// `serve --exit-with-parent` shuts down, cleanly, once the pipe on its standard input
/// closes, as it does when the process that started it dies; without the flag it serves on.
#[test]
fn a_node_started_with_exit_with_parent_ends_when_its_stdin_closes() {
    let config = write_config("parent.toml", &edge(0.0, None));
    let spawn = |flag: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_edge-node"));
        command.args(["serve", "--config"]).arg(&config);
        if flag {
            command.arg("--exit-with-parent");
        }
        let mut child =
            command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let serving =
            BufReader::new(stdout).lines().map_while(Result::ok).any(|l| l.starts_with("serving http on"));
        assert!(serving, "the node never said it was serving");
        child
    };
    let exited_within = |child: &mut Child, limit: std::time::Duration| {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    };
    let mut watched = spawn(true);
    let mut unwatched = spawn(false);
    drop(watched.stdin.take());
    drop(unwatched.stdin.take());
    let status = exited_within(&mut watched, std::time::Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "the node outlived its stdin: {status:?}");
    assert_eq!(exited_within(&mut unwatched, std::time::Duration::from_millis(500)), None);
    unwatched.kill().unwrap();
    unwatched.wait().unwrap();
}

/// A central node as an `edge-node serve` process, and where it accepts escalations.
async fn central_process() -> (NodeProcess, SocketAddr) {
    let (http, quic) = (free_tcp_port().unwrap(), free_udp_port().unwrap());
    let mut config = central();
    config.node.listeners.http = format!("127.0.0.1:{http}");
    config.node.listeners.quic = Some(format!("127.0.0.1:{quic}"));
    let path = write_config("central-process.toml", &config);
    let program = Path::new(env!("CARGO_BIN_EXE_edge-node"));
    let mut node = NodeProcess::start(program, "central-process", &path, fixture().dir.path()).unwrap();
    node.wait_ready(&client(), http).await.unwrap();
    (node, format!("127.0.0.1:{quic}").parse().unwrap())
}

/// Hard requests escalate to a central process and carry the central model's output; when
/// the central process is killed mid-run, every request is still answered, degraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalates_to_a_central_process_and_degrades_when_it_dies() {
    let hard = hard_images(12, 0.85);
    let (mut central, quic) = central_process().await;
    let server = Server::start(resolve("edge-process.toml", &edge(0.9, Some(quic)))).await.unwrap();
    let addr = server.http_addr();
    let c = client();
    let expected = probabilities(ReferenceModel::CentralFp32, &hard);

    let mut degraded = 0;
    for (n, &i) in hard.iter().enumerate() {
        if n == 6 {
            central.kill();
        }
        let r = post(&c, addr, "digits", &serde_json::to_vec(&image_body(i)).unwrap()).await;
        assert_eq!(r.status, 200, "request {n} lost: {}", r.body);
        let p = &r.body["parameters"];
        if n < 6 {
            assert_eq!(p["tier"], "central", "{}", r.body);
            assert_eq!(p["escalated"], true);
            assert_eq!(p["degraded"], false);
            assert_close(&output_values(&r.body), &expected[n]);
        } else {
            assert_eq!(p["tier"], "edge", "{}", r.body);
            assert_eq!(p["degraded"], true);
            let reason = p["degraded_reason"].as_str().unwrap();
            assert!(["upstream_failed", "breaker_open"].contains(&reason), "{reason}");
            degraded += 1;
        }
    }
    assert_eq!(degraded, 6);
    let (_, metrics) = get_text(&c, addr, "/metrics").await;
    assert_eq!(metric(&metrics, "cascade_escalations_total{", &["result=\"ok\""]), Some(6.0));
    server.shutdown().await.unwrap();
}

/// Identical hard requests arriving together escalate once: the central node sees one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_burst_escalates_once() {
    let hard = hard_images(1, 0.85)[0];
    let central = Server::start(resolve("central-coalesce.toml", &central())).await.unwrap();
    let edge = Server::start(resolve("edge-coalesce.toml", &edge(0.9, central.quic_addr()))).await.unwrap();
    let addr = edge.http_addr();
    let c = client();
    let body = serde_json::to_vec(&image_body(hard)).unwrap();
    let burst: Vec<_> = (0..8)
        .map(|_| {
            let (c, body) = (c.clone(), body.clone());
            tokio::spawn(async move { post(&c, addr, "digits", &body).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for r in burst {
        let r = r.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["parameters"]["tier"], "central");
        statuses.push(r.body["parameters"]["cache"].as_str().unwrap().to_owned());
    }
    assert_eq!(statuses.iter().filter(|s| *s == "miss").count(), 1, "{statuses:?}");
    assert!(statuses.iter().any(|s| s == "coalesced"), "{statuses:?}");
    let (_, metrics) = get_text(&c, central.http_addr(), "/metrics").await;
    assert_eq!(
        metric(&metrics, "cascade_requests_total{", &["route=\"digits\"", "outcome=\"answered\""]),
        Some(1.0),
        "{metrics}"
    );
    let (_, metrics) = get_text(&c, addr, "/metrics").await;
    assert_eq!(metric(&metrics, "cascade_escalations_total{", &["result=\"ok\""]), Some(1.0));
    edge.shutdown().await.unwrap();
    central.shutdown().await.unwrap();
}

/// Shutdown stops accepting but answers the request already in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_requests_in_flight() {
    let server = Server::start(resolve("drain.toml", &edge(0.0, None))).await.unwrap();
    let addr = server.http_addr();
    let c = client();
    // `spin` runs a fixed number of iterations and answers: long enough to be in flight.
    let body = serde_json::to_vec(&json!({
        "inputs": [{ "name": "x", "shape": [1], "datatype": "UINT8", "data": [0] }],
        "parameters": { "mode": "spin", "iterations": "100000000" }
    }))
    .unwrap();
    let c2 = c.clone();
    let in_flight = tokio::spawn(async move { post(&c2, addr, "hostile", &body).await });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    server.shutdown().await.unwrap();
    let r = in_flight.await.unwrap();
    // Answered (or cut by the plugin's own deadline): either way an HTTP answer, not a reset.
    assert!([200, 500].contains(&r.status), "{}", r.body);
    assert!(
        c.get(format!("http://{addr}/v2/health/live")).send().await.is_err(),
        "still accepting after shutdown"
    );
}

/// A QUIC listener needs its certificate, key and client CA, and the config says which is missing.
#[test]
fn quic_listener_requires_its_identity_files() {
    let mut no_key = central().config();
    no_key.listeners.quic_key = None;
    let e = no_key.write(&fixture().dir.path().join("central-no-key.toml")).unwrap_err().to_string();
    assert!(e.contains("listeners.quic_key: missing"), "{e}");
    let mut stray = edge(0.5, None).config();
    stray.listeners.quic_ca = Some("ca.pem".into());
    let e = stray.write(&fixture().dir.path().join("edge-stray-ca.toml")).unwrap_err().to_string();
    assert!(e.contains("listeners.quic_ca: set without `listeners.quic`"), "{e}");
}

/// Pinning `emergency` (escalation budget 0) makes hard requests answer locally, degraded
/// with `budget_exhausted`; back in `normal` they escalate again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_mode_stops_escalation() {
    let hard = hard_images(2, 0.85);
    let central = Server::start(resolve("central-mode.toml", &central())).await.unwrap();
    let edge = Server::start(resolve("edge-mode.toml", &edge(0.9, central.quic_addr()))).await.unwrap();
    let addr = edge.http_addr();
    let c = client();

    edge.node().pin_mode(Some(cascade_runtime::Mode::Emergency));
    let r = post(&c, addr, "digits", &serde_json::to_vec(&image_body(hard[0])).unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["parameters"]["degraded_reason"], "budget_exhausted", "{}", r.body);
    assert_eq!(r.body["parameters"]["tier"], "edge");
    let (_, metrics) = get_text(&c, addr, "/metrics").await;
    assert_eq!(metric(&metrics, "cascade_mode{", &["mode=\"emergency\""]), Some(1.0));

    edge.node().pin_mode(Some(cascade_runtime::Mode::Normal));
    // The bucket keeps its (empty) level across the switch and refills at normal's 100/s.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let r = post(&c, addr, "digits", &serde_json::to_vec(&image_body(hard[1])).unwrap()).await;
    assert_eq!(r.body["parameters"]["tier"], "central", "{}", r.body);
    edge.shutdown().await.unwrap();
    central.shutdown().await.unwrap();
}

/// A reload swaps thresholds without dropping the request in flight; changing a listener is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_thresholds_without_dropping_requests() {
    let hard = hard_images(1, 0.85)[0];
    let server = Server::start(resolve("reload.toml", &edge(0.0, None))).await.unwrap();
    let addr = server.http_addr();
    let c = client();
    let body = serde_json::to_vec(&image_body(hard)).unwrap();
    let r = post(&c, addr, "digits", &body).await;
    assert_eq!(r.body["parameters"]["degraded"], false, "{}", r.body);

    let spin = serde_json::to_vec(&json!({
        "inputs": [{ "name": "x", "shape": [1], "datatype": "UINT8", "data": [0] }],
        "parameters": { "mode": "spin", "iterations": "100000000" }
    }))
    .unwrap();
    let c2 = c.clone();
    let in_flight = tokio::spawn(async move { post(&c2, addr, "hostile", &spin).await });
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    // The same file rewritten with a higher threshold (and no upstream to escalate to).
    server.reload(resolve("reload.toml", &edge(0.9, None))).await.unwrap();
    let r = in_flight.await.unwrap();
    assert!([200, 500].contains(&r.status), "{}", r.body);

    // A fresh node: its cache is empty, and the hard image is now below the threshold.
    let r = post(&c, addr, "digits", &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["parameters"]["degraded_reason"], "no_upstream", "{}", r.body);

    let mut moved = edge(0.9, None);
    moved.node.listeners.http = "127.0.0.1:1".into();
    let e = server.reload(resolve("reload-moved.toml", &moved)).await.unwrap_err();
    assert!(e.to_string().contains("listeners"), "{e}");
    server.shutdown().await.unwrap();
}

/// The admin API pins and unpins the mode and reloads the config from disk, only for a
/// caller with the token; a pinned mode and the metrics survive the reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_pins_modes_and_reloads_with_a_token() {
    use reqwest::Method;
    let token = "0123456789abcdef0123456789abcdef";
    let token_file = write_file("admin.token", &format!("{token}\n"));
    let with_admin = |threshold: f64| {
        let mut node = edge(threshold, None);
        node.node.listeners.admin = Some("127.0.0.1:0".into());
        node.node.listeners.admin_token_file = Some(token_file.display().to_string());
        node.config().to_toml().unwrap()
    };
    let config_file = write_file("admin.toml", &with_admin(0.0));
    let config = cascade_runtime::config::load(&config_file).unwrap().resolve().unwrap();
    let server = Server::start(config).await.unwrap();
    let admin = server.admin_addr().expect("admin listener");
    let c = client();
    let call = |method: Method, path: &str, auth: Option<&str>, body: Option<serde_json::Value>| {
        let mut r = c.request(method, format!("http://{admin}{path}"));
        if let Some(t) = auth {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };

    let (status, body) = call(Method::GET, "/admin/mode", None, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = call(Method::GET, "/admin/mode", Some("0123456789abcdef0123456789abcdeX"), None).await;
    assert_eq!(status, 401);
    let (status, body) = call(Method::GET, "/admin/mode", Some(token), None).await;
    assert_eq!((status, body), (200, json!({ "mode": "normal", "pinned": false })));
    let (status, body) =
        call(Method::PUT, "/admin/mode", Some(token), Some(json!({ "mode": "panic" }))).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("unknown mode `panic`"), "{body}");
    let (status, body) =
        call(Method::PUT, "/admin/mode", Some(token), Some(json!({ "mode": "surge" }))).await;
    assert_eq!((status, body), (200, json!({ "mode": "surge", "pinned": true })));

    // Reload from disk: the file now has threshold 0.9, so a hard image is degraded.
    std::fs::write(&config_file, with_admin(0.9)).unwrap();
    let (status, body) = call(Method::POST, "/admin/reload", Some(token), None).await;
    assert_eq!(status, 200, "{body}");
    let hard = hard_images(1, 0.85)[0];
    let r = post(&c, server.http_addr(), "digits", &serde_json::to_vec(&image_body(hard)).unwrap()).await;
    assert_eq!(r.body["parameters"]["degraded"], true, "the reloaded threshold is not in force: {}", r.body);
    let (_, body) = call(Method::GET, "/admin/mode", Some(token), None).await;
    assert_eq!(body, json!({ "mode": "surge", "pinned": true }), "the pin did not survive the reload");
    let (_, metrics) = get_text(&c, server.http_addr(), "/metrics").await;
    assert_eq!(
        metric(&metrics, "cascade_mode_switches_total{", &["cause=\"admin\"", "to=\"surge\""]),
        Some(1.0),
        "{metrics}"
    );

    // A broken file is refused and the node keeps serving the config it had.
    std::fs::write(&config_file, "[node\n").unwrap();
    let (status, body) = call(Method::POST, "/admin/reload", Some(token), None).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("still serving the old config"), "{body}");
    let r = post(&c, server.http_addr(), "digits", &serde_json::to_vec(&image_body(hard)).unwrap()).await;
    assert_eq!(r.status, 200);

    let (status, body) = call(Method::PUT, "/admin/mode", Some(token), Some(json!({ "mode": "auto" }))).await;
    assert_eq!((status, &body["pinned"]), (200, &json!(false)), "{body}");
    server.shutdown().await.unwrap();
}

/// A route that declares its tensors reports them as its metadata and refuses requests that
/// do not match before the plugin runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_route_tensors_are_metadata_and_checked() {
    let tensor = |name: &str, datatype: &str, shape: &[i64]| TensorDeclConfig {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
    };
    let mut declared = edge(0.0, None);
    declared.route.inputs = vec![tensor("image", "UINT8", &[28, 28])];
    declared.route.outputs = vec![tensor("probabilities", "FP32", &[1, 10])];
    let server = Server::start(resolve("declared.toml", &declared)).await.unwrap();
    let addr = server.http_addr();
    let c = client();
    let (status, text) = get_text(&c, addr, "/v2/models/digits").await;
    assert_eq!(status, 200);
    let meta: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(meta["inputs"], json!([{ "name": "image", "datatype": "UINT8", "shape": [28, 28] }]));
    assert_eq!(meta["outputs"], json!([{ "name": "probabilities", "datatype": "FP32", "shape": [1, 10] }]));

    let r = post(&c, addr, "digits", &serde_json::to_vec(&image_body(0)).unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["outputs"][0]["name"], "probabilities");
    let wrong = br#"{"inputs":[{"name":"image","shape":[3],"datatype":"UINT8","data":[1,2,3]}]}"#;
    let r = post(&c, addr, "digits", wrong).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let message = r.body["error"].as_str().unwrap();
    assert!(message.contains("inputs[0].shape") && message.contains("[28, 28]"), "{message}");
    let (_, metrics) = get_text(&c, addr, "/metrics").await;
    assert_eq!(metric(&metrics, "cascade_sandbox_failures_total{", &[]), None, "the plugin ran: {metrics}");
    server.shutdown().await.unwrap();
}
