//! Hostile parties and operators at work: an authenticated edge flooding the central tier,
//! hostile plugins beside good ones, and config reloads and a plugin swap under load.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cascade_runtime::config::{PluginConfig, QuicLimits, RouteConfig};
use cascade_runtime::protocol::{EscalationRequest, HEADER_BYTES, NamedTensor, PROTOCOL_VERSION};
use cascade_runtime::transport::{ClientConfig, TierClient, TlsIdentity};
use cascade_runtime::{Tensor, config};
use edge_node::deployment::{CENTRAL, free_tcp_port, write_config};
use sha2::Digest;
use tokio::runtime::Runtime;

use super::{FLOODER, Figure, Setup, http_client, loopback};
use crate::loadgen::{self, Load, Measured};
use crate::procfs::peak_rss_mib;

/// `faults.peer_flood.central_peak_rss_mib`: one edge identity (a certificate of role edge)
/// opens as many QUIC connections and streams as the central lets it, and on each stream
/// announces a frame of the largest size the central accepts and trickles its bytes without
/// ever finishing it. The central's route declares no input tensors, so that size is the
/// largest a route can have. The central's peak RSS is read at the end.
pub(super) fn peer_flood(s: &Setup, rt: &Runtime) -> Result<Vec<Figure>> {
    let length = s.pick(Duration::from_secs(6), Duration::from_secs(12));
    let mut central = s.central()?;
    central.config.route.inputs.clear();
    central.config.route.outputs.clear();
    let file = write_config(&central.config, s.dir())?;
    let limits = config::load(&file)?.settings.quic_limits;
    eprintln!(
        "faults.peer_flood: the central allows {} connections per peer, {} streams each, frames of {} bytes, {} bytes buffered",
        limits.max_connections_per_peer,
        limits.max_streams_per_connection,
        limits.max_frame_bytes,
        limits.max_buffered_bytes
    );
    rt.block_on(async {
        let process = s.start(&central, "flood-central").await?;
        let quic = loopback(central.quic.context("the central has no QUIC port")?);
        let good = good_client(s, quic)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(FloodStats::default());
        let endpoint = flood_endpoint(s)?;
        let mut tasks = Vec::new();
        // One connection more than allowed: the central should refuse it.
        for _ in 0..=limits.max_connections_per_peer {
            let connecting = endpoint.connect(quic, CENTRAL).context("connecting the flood")?;
            let connection = match tokio::time::timeout(Duration::from_secs(5), connecting).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    eprintln!("faults.peer_flood: a connection was refused: {e}");
                    continue;
                }
                Err(_) => bail!("no QUIC handshake with the central within 5 s"),
            };
            tasks.push(tokio::spawn(flood(connection, limits.clone(), stop.clone(), stats.clone())));
        }
        // Meanwhile a well-behaved edge escalates now and then.
        let (mut answered, mut refused) = (0, 0);
        let until = Instant::now() + length;
        while Instant::now() < until {
            match good
                .request(&escalation(s, answered + refused), Instant::now() + Duration::from_secs(2))
                .await
            {
                Ok(Ok(_)) => answered += 1,
                _ => refused += 1,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let peak = peak_rss_mib(process.id())?;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.context("a flood task panicked")?;
        }
        endpoint.close(0u32.into(), b"done");
        eprintln!(
            "faults.peer_flood: {} streams opened, {} MiB sent, {} streams cut by the central; \
             a good edge meanwhile got {answered} answers and {refused} refusals or errors",
            stats.streams.load(Ordering::Relaxed),
            stats.bytes.load(Ordering::Relaxed) >> 20,
            stats.cut.load(Ordering::Relaxed)
        );
        Ok(vec![("faults.peer_flood.central_peak_rss_mib", peak, "MiB")])
    })
}

/// What the flood did.
#[derive(Default)]
struct FloodStats {
    streams: AtomicU64,
    bytes: AtomicU64,
    cut: AtomicU64,
}

/// A QUIC client endpoint presenting the flooder's certificate (role edge), as an edge's
/// would, but speaking to the central directly through quinn.
fn flood_endpoint(s: &Setup) -> Result<quinn::Endpoint> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = &s.certs.0;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(dir.join("ca.pem")).context("reading ca.pem")? {
        roots.add(ca?)?;
    }
    let chain = CertificateDer::pem_file_iter(dir.join(format!("{FLOODER}.pem")))
        .context("reading the flooder's certificate")?
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{FLOODER}.key")))
        .context("reading the flooder's key")?;
    let mut tls =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
    tls.alpn_protocols = vec![cascade_runtime::transport::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    Ok(endpoint)
}

/// Keeps as many streams open on `connection` as the central grants, each trickling one
/// never-finished maximal frame, until `stop`.
async fn flood(
    connection: quinn::Connection,
    limits: QuicLimits,
    stop: Arc<AtomicBool>,
    stats: Arc<FloodStats>,
) {
    let mut streams = tokio::task::JoinSet::new();
    while !stop.load(Ordering::Relaxed) {
        // Waits while the central's stream limit is reached.
        let opened = tokio::time::timeout(Duration::from_millis(200), connection.open_bi()).await;
        match opened {
            Ok(Ok((send, _recv))) => {
                stats.streams.fetch_add(1, Ordering::Relaxed);
                streams.spawn(trickle(send, limits.max_frame_bytes, stop.clone(), stats.clone()));
            }
            Ok(Err(_)) => break, // the connection is gone
            Err(_) => {}         // no stream credit yet
        }
        while streams.try_join_next().is_some() {}
    }
    connection.close(0u32.into(), b"done");
    streams.shutdown().await;
}

/// Announces a frame of `frame_bytes` and sends all of it but the last byte, 16 KiB every
/// 20 ms, then holds the stream until `stop` or the central cuts it.
async fn trickle(
    mut send: quinn::SendStream,
    frame_bytes: usize,
    stop: Arc<AtomicBool>,
    stats: Arc<FloodStats>,
) {
    let mut header = [0u8; HEADER_BYTES];
    header[0] = PROTOCOL_VERSION;
    header[1..].copy_from_slice(&u32::try_from(frame_bytes).unwrap_or(u32::MAX).to_be_bytes());
    if send.write_all(&header).await.is_err() {
        stats.cut.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let chunk = vec![0u8; 16 << 10];
    let mut left = frame_bytes.saturating_sub(1);
    while !stop.load(Ordering::Relaxed) {
        if left > 0 {
            let n = left.min(chunk.len());
            let written = tokio::time::timeout(Duration::from_millis(500), send.write_all(&chunk[..n])).await;
            match written {
                Ok(Ok(())) => {
                    left -= n;
                    stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                Ok(Err(_)) => {
                    stats.cut.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(_) => {} // flow control holds it back: the point
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A well-behaved edge's client to the central at `quic`.
fn good_client(s: &Setup, quic: SocketAddr) -> Result<TierClient> {
    let dir = &s.certs.0;
    let identity =
        TlsIdentity::from_files(&dir.join("edge.pem"), &dir.join("edge.key"), &dir.join("ca.pem"))?;
    Ok(TierClient::new(&identity, ClientConfig::new(quic, CENTRAL))?)
}

/// An escalation of test image `i`.
fn escalation(s: &Setup, i: u64) -> EscalationRequest {
    let image = s.test.image(i as usize % s.test.len()).to_vec();
    let tensor = Tensor::from_u8(vec![28, 28], image).unwrap_or_else(|_| unreachable!("28x28 bytes"));
    EscalationRequest {
        id: i,
        route: "digits".into(),
        inputs: vec![NamedTensor { name: "image".into(), tensor }],
        budget_us: 0,
        trace: None,
        node_id: "edge".into(),
        local_confidence: Some(0.5),
    }
}

/// What the hostile plugin is asked to do (its request parameter `mode`), by route: one
/// route for misbehaviours that take time, one for those that take memory or break rules.
const HOSTILE_ROUTES: [(&str, &[&str]); 2] = [
    ("hostile-time", &["loop", "recurse", "panic", "log-flood", "model-loop", "spin", "ok"]),
    (
        "hostile-memory",
        &[
            "grow",
            "oversized",
            "alias-outputs",
            "alias-inputs",
            "fill-outputs",
            "garbage-shape",
            "forbidden-model",
        ],
    ),
];

/// `faults.hostile.good_error_rate`: good traffic on the reference route while clients keep
/// the hostile test plugin busy misbehaving on two routes of its own (one request at a time
/// each, no queue); the share of good requests that did not get a 200.
pub(super) fn hostile_plugins(s: &Setup, rt: &Runtime) -> Result<Vec<Figure>> {
    let length = s.pick(Duration::from_secs(4), Duration::from_secs(10));
    let wasm = s.dir().join("hostile.wasm");
    edge_node::plugin_cmd::build(&s.hostile_crate, &wasm, None)
        .context("building the hostile test plugin")?;
    let mut edge = s.edge(0.0)?;
    let mut plugin = PluginConfig::new(&wasm);
    plugin.models = vec!["edge".into()];
    plugin.deadline_ms = 1000;
    plugin.config.insert("version".into(), "1".into());
    edge.config.node.plugins.insert("hostile".into(), plugin);
    for (route, _) in HOSTILE_ROUTES {
        let mut r = RouteConfig::new("hostile", 0.0);
        r.deadline_ms = 2000;
        r.max_in_flight = 1;
        r.queue_len = 0;
        r.cache_ttl_s = 0;
        edge.config.node.routes.insert(route.into(), r);
    }
    let _process = rt.block_on(s.start(&edge, "hostile-edge"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let statuses: Vec<_> = HOSTILE_ROUTES
        .iter()
        .map(|&(route, modes)| {
            rt.spawn(misbehave(edge.url(&format!("/v2/models/{route}/infer")), modes, stop.clone()))
        })
        .collect();
    let good = drive(loopback(edge.http), &s.requests(edge.http, 2000), 200.0, length);
    stop.store(true, Ordering::Relaxed);
    for (t, (route, _)) in statuses.into_iter().zip(HOSTILE_ROUTES) {
        let seen = rt.block_on(t).context("a hostile client panicked")?;
        eprintln!("faults.hostile: {route}: status counts {seen:?}");
    }
    let good = good?;
    let total = good.latencies_us.len() + good.errors;
    anyhow::ensure!(total > 0, "no good request was sent");
    if let Some(e) = &good.first_error {
        eprintln!("faults.hostile: {} of {total} good requests failed, the first: {e}", good.errors);
    }
    Ok(vec![("faults.hostile.good_error_rate", good.errors as f64 / total as f64, "fraction")])
}

/// Asks the hostile plugin at `url` for each of `modes` in turn until `stop`; returns how
/// many answers came back with each status.
async fn misbehave(url: String, modes: &'static [&'static str], stop: Arc<AtomicBool>) -> Vec<(u16, usize)> {
    let mut seen = std::collections::BTreeMap::new();
    let Ok(client) = http_client() else { return Vec::new() };
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let body = serde_json::json!({
            "parameters": { "mode": modes[i % modes.len()], "iterations": "100000000" },
            "inputs": [{ "name": "x", "shape": [1], "datatype": "UINT8", "data": [0] }]
        });
        let status = match client.post(&url).json(&body).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        };
        *seen.entry(status).or_insert(0) += 1;
        i += 1;
    }
    seen.into_iter().collect()
}

/// Drives `requests` open-loop at `rate` for `length` over 8 connections, counting any
/// non-2xx answer, error or timeout as failed.
fn drive(addr: SocketAddr, requests: &Arc<Vec<Vec<u8>>>, rate: f64, length: Duration) -> Result<Measured> {
    loadgen::drive(&Load {
        addr,
        requests,
        rate,
        duration: length,
        connections: 8,
        timeout: Duration::from_secs(2),
        accept: |_| true,
    })
}

/// `faults.reload.dropped_requests`: open-loop traffic while the edge is reloaded again and
/// again: through the admin API, by SIGHUP, and with its plugin swapped for another build
/// (new bytes, its sha256 pin updated in the config, then a reload); the requests that
/// failed.
pub(super) fn reload(s: &Setup, rt: &Runtime) -> Result<Vec<Figure>> {
    let cycles = s.pick(1, 3);
    let mut edge = s.edge(0.0)?;
    let admin = free_tcp_port()?;
    let token_file = s.dir().join("admin-token");
    std::fs::write(&token_file, "faults-bench-admin-token-0123456789\n")?;
    edge.config.node.listeners.admin = Some(format!("127.0.0.1:{admin}"));
    edge.config.node.listeners.admin_token_file = Some(token_file.display().to_string());
    let plugin = s.dir().join("reload-mnist.wasm");
    let original = std::fs::read(&s.mnist).context("reading the mnist plugin")?;
    pin_plugin(&mut edge.config.plugin, &plugin, &original, 0)?;
    let process = rt.block_on(s.start(&edge, "reload-edge"))?;

    let requests = s.requests(edge.http, 2000);
    let addr = loopback(edge.http);
    // Each cycle is three reloads a second apart; the traffic covers them with a second
    // to spare on each side.
    let length = Duration::from_secs(3 * cycles + 2);
    let traffic = std::thread::spawn(move || drive(addr, &requests, 300.0, length));
    let reloads = rt.block_on(async {
        let client = http_client()?;
        let url = format!("http://127.0.0.1:{admin}/admin/reload");
        let mut done = 0;
        tokio::time::sleep(Duration::from_secs(1)).await;
        for cycle in 0..cycles {
            admin_reload(&client, &url).await.context("admin reload")?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            super::signal(process.id(), libc::SIGHUP)?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            pin_plugin(&mut edge.config.plugin, &plugin, &original, cycle as u32 + 1)?;
            write_config(&edge.config, s.dir())?;
            admin_reload(&client, &url).await.context("reload after the plugin swap")?;
            done += 3;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok::<_, anyhow::Error>(done)
    });
    let measured = traffic.join().map_err(|_| anyhow::anyhow!("the traffic thread panicked"))??;
    let reloads = reloads?;
    let total = measured.latencies_us.len() + measured.errors;
    eprintln!(
        "faults.reload: {reloads} reloads ({cycles} plugin swaps) under {total} requests; {} failed{}",
        measured.errors,
        measured.first_error.as_deref().map(|e| format!(", the first: {e}")).unwrap_or_default()
    );
    Ok(vec![("faults.reload.dropped_requests", measured.errors as f64, "count")])
}

/// `POST /admin/reload`, which must answer 200.
async fn admin_reload(client: &reqwest::Client, url: &str) -> Result<()> {
    let response = client.post(url).bearer_auth("faults-bench-admin-token-0123456789").send().await?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "HTTP {status}: {body}");
    Ok(())
}

/// Writes `component` to `path` as build `generation` of the plugin (the same code with a
/// custom section naming the generation, so the bytes and digest differ), atomically, and
/// pins `plugin` to it.
fn pin_plugin(plugin: &mut PluginConfig, path: &Path, component: &[u8], generation: u32) -> Result<()> {
    let mut bytes = component.to_vec();
    bytes.extend(custom_section("cascade-faults-generation", &generation.to_le_bytes()));
    let temporary = path.with_extension("wasm.new");
    std::fs::write(&temporary, &bytes).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))?;
    plugin.path = path.display().to_string();
    plugin.sha256 = Some(hex(&sha2::Sha256::digest(&bytes)));
    Ok(())
}

/// A WebAssembly custom section (id 0): valid at the end of a component, ignored by the
/// runtime.
fn custom_section(name: &str, payload: &[u8]) -> Vec<u8> {
    let mut content = leb128(name.len());
    content.extend_from_slice(name.as_bytes());
    content.extend_from_slice(payload);
    let mut section = vec![0u8];
    section.extend(leb128(content.len()));
    section.extend(content);
    section
}

fn leb128(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_sections_are_encoded_as_the_spec_says() {
        assert_eq!(leb128(0), [0]);
        assert_eq!(leb128(127), [0x7f]);
        assert_eq!(leb128(128), [0x80, 0x01]);
        assert_eq!(custom_section("ab", &[9]), [0, 4, 2, b'a', b'b', 9]);
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
    }
}
