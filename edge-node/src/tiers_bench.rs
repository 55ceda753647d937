//! `edge-node bench tiers`: what escalating costs on top of the upstream's own work.
//!
//! A [`TierServer`] and a [`TierClient`] talk over QUIC with mutual TLS on loopback, each on
//! its own thread and tokio runtime (as two nodes would be). The server's handler answers
//! at once with ten logits and reports its own time in the answer's timings; each sample is
//! the client's round trip minus that time: framing, encryption, the two QUIC stacks and
//! the loopback network. Requests go one at a time, so this is latency, not throughput.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use cascade_runtime::Tensor;
use cascade_runtime::protocol::{ErrorFrame, EscalationAnswer, EscalationRequest, NamedTensor, StageTiming};
use cascade_runtime::transport::{
    ClientConfig, Reply, RequestContext, ServerConfig, TierClient, TierServer, TlsIdentity, deadline_in,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::figures::{Figures, percentile};

const SERVER_NAME: &str = "central.bench";

/// Runs the suite: `quick` takes fewer samples.
pub fn run(quick: bool) -> Result<Figures> {
    let (warmup, samples) = if quick { (200, 1_000) } else { (1_000, 10_000) };
    let (server_id, client_id) = identities()?;

    // The server lives on its own thread and runtime until the client is done.
    let (addr_tx, addr_rx) = mpsc::channel::<Result<SocketAddr>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_thread = std::thread::spawn(move || -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async move {
            let listen: SocketAddr = "127.0.0.1:0".parse()?;
            match TierServer::bind(&server_id, ServerConfig::new(listen), answer_at_once) {
                Ok(server) => {
                    let _ = addr_tx.send(Ok(server.local_addr()));
                    let _ = stop_rx.await;
                    server.shutdown().await;
                }
                Err(e) => {
                    let _ = addr_tx.send(Err(e.into()));
                }
            }
            Ok(())
        })
    });
    let addr = addr_rx.recv().context("bench server thread died")??;

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let overheads = runtime.block_on(async {
        let client = TierClient::new(&client_id, ClientConfig::new(addr, SERVER_NAME))?;
        let pixels: Vec<f32> = (0..784).map(|i| (i % 256) as f32 / 255.0).collect();
        let input = Tensor::from_f32(vec![1, 1, 28, 28], &pixels)?;
        let mut overheads = Vec::with_capacity(samples);
        for i in 0..warmup + samples {
            let request = EscalationRequest {
                id: i as u64,
                route: "digits".into(),
                inputs: vec![NamedTensor { name: "input".into(), tensor: input.clone() }],
                deadline_unix_us: deadline_in(Duration::from_secs(5)),
                trace: None,
                node_id: "bench-edge".into(),
                local_confidence: Some(0.5),
            };
            let started = Instant::now();
            let reply = client.request(&request).await?;
            let round_trip = started.elapsed();
            let Reply::Answer(answer) = reply else { return Err(anyhow!("bench server refused: {reply:?}")) };
            let handler_us = answer.timings.first().map_or(0, |t| t.micros);
            if i >= warmup {
                overheads.push(round_trip.as_secs_f64() * 1e6 - handler_us as f64);
            }
        }
        client.close().await;
        Ok::<_, anyhow::Error>(overheads)
    });
    let _ = stop_tx.send(());
    server_thread.join().map_err(|_| anyhow!("bench server thread panicked"))??;
    let mut overheads = overheads?;
    eprintln!("tiers: {} sequential escalations on loopback", overheads.len());

    let mut figures = Figures::default();
    figures.push("tiers.escalation_overhead_us.p50", percentile(&mut overheads, 0.5), "us");
    figures.push("tiers.escalation_overhead_us.p99", percentile(&mut overheads, 0.99), "us");
    Ok(figures)
}

/// Answers with ten logits at once, and says how long that took.
async fn answer_at_once(
    request: EscalationRequest,
    _ctx: RequestContext,
) -> Result<EscalationAnswer, ErrorFrame> {
    let started = Instant::now();
    let logits = [0.0f32, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0];
    let outputs = Tensor::from_f32(vec![1, 10], &logits)
        .map(|tensor| vec![NamedTensor { name: "logits".into(), tensor }])
        .unwrap_or_default();
    let handler_us = started.elapsed().as_micros() as u64;
    Ok(EscalationAnswer {
        id: request.id,
        outputs,
        confidence: 0.99,
        label: Some(7),
        model_version: "bench".into(),
        timings: vec![StageTiming { stage: "handler".into(), micros: handler_us }],
    })
}

/// A throwaway CA and two node identities signed by it.
fn identities() -> Result<(TlsIdentity, TlsIdentity)> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "bench ca");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::from_params(&ca, &ca_key);
    let node = |name: &str| -> Result<TlsIdentity> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![name.to_string()])?;
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer)?;
        Ok(TlsIdentity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes(), ca_pem.as_bytes())?)
    };
    Ok((node(SERVER_NAME)?, node("bench-edge")?))
}
