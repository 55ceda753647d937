//! `bench device`: what the device build (README, "On devices") costs a device.
//!
//! - `device.<arch>.binary_bytes`: size of the stripped `device`-profile binary, for this
//!   machine's architecture (`tools/device.sh` builds it) and for aarch64
//!   (`tools/cross.sh` cross-builds it). The suite measures what is built and says which
//!   command builds what is missing; it does not build them itself (a fat-LTO build takes
//!   longer than a suite may run).
//! - `device.ready_ms`: from starting `edge-node serve` to its first 200 on
//!   `/v2/health/ready`, with the mnist-classifier plugin precompiled for this machine
//!   (a device build loads nothing else) and the int8 edge model.
//! - `device.first_answer_ms`: from the same start to the first inference answer, by a client
//!   that polls readiness every millisecond and then sends one request.
//! - `device.idle_rss_mib`: the node's resident memory once it has answered that request and
//!   sat idle for a moment.
//! - `device.idle_anon_rss_mib`: the part of it that is the node's own (heap, stacks). The
//!   rest is pages of the binary itself, which the kernel shares and can drop and whose count
//!   moves with the page cache (how the binary's file was last read), not with the node.
//! - `device.cpu_us_per_request`: the node's CPU time (user and system, from `/proc`) per
//!   answer over [`ANSWERS`] requests sent one after another on one kept-alive connection,
//!   each a different test image (no cache hits), after the first: what an answer costs
//!   the device build, HTTP and plugin included.
//!
//! Each start is a fresh process; figures are medians over the starts.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cascade_runtime::precompiled;
use cascade_runtime::reference::ReferenceNode;
use cascade_runtime::{Digits, ReferenceModel, Split};
use edge_node::deployment::{NodeProcess, free_tcp_port, write_config};
use edge_node::figures::{Figures, median};
use serde_json::json;

use crate::loadgen::{self, Conn};

/// Where `tools/cross.sh` puts the aarch64 build, under the target directory.
const AARCH64_BINARY: &str = "cross/aarch64-unknown-linux-gnu/device/edge-node";

/// How long the node sits idle after its first answer before its RSS is read.
const IDLE: Duration = Duration::from_millis(500);

/// Requests per start whose CPU time makes `device.cpu_us_per_request` (enough for the
/// kernel's 10 ms CPU-time ticks to be a small part of it).
const ANSWERS: usize = 10_000;

/// Runs the suite. `target_dir` is the cargo target directory the device builds are in.
pub(crate) fn run(
    models_dir: &Path,
    plugin_crate: &Path,
    target_dir: &Path,
    quick: bool,
) -> anyhow::Result<Figures> {
    let starts = if quick { 5 } else { 15 };
    let mut figures = Figures::default();

    let host = target_dir.join("device").join("edge-node");
    let builds = [
        (std::env::consts::ARCH, host.clone(), "tools/device.sh"),
        ("aarch64", target_dir.join(AARCH64_BINARY), "tools/cross.sh"),
    ];
    for (arch, binary, command) in &builds {
        if std::env::consts::ARCH == "aarch64" && *command == "tools/cross.sh" {
            continue; // on an aarch64 machine the native build is the aarch64 build
        }
        match binary_arch(binary) {
            Ok(found) if found == *arch => {
                let bytes = std::fs::metadata(binary)?.len();
                figures.push(format!("device.{arch}.binary_bytes"), bytes as f64, "bytes");
            }
            Ok(found) => {
                bail!("{} is built for {found}, not {arch}: rebuild it with `{command}`", binary.display())
            }
            Err(e) => eprintln!("no device.{arch}.binary_bytes: {e:#}; build it with `{command}`"),
        }
    }
    anyhow::ensure!(
        host.is_file(),
        "{} is missing: build the device binary first with `tools/device.sh`",
        host.display()
    );

    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let component = dir.path().join("mnist-classifier.wasm");
    edge_node::plugin_cmd::build(plugin_crate, &component, None)?;
    let bytes = std::fs::read(&component).with_context(|| format!("reading {}", component.display()))?;
    let target = precompiled::host_target();
    let plugin = edge_node::plugin_cmd::precompiled_output(&component, &target);
    let compiled = precompiled::precompile(&bytes, &target).map_err(anyhow::Error::msg)?;
    std::fs::write(&plugin, compiled).with_context(|| format!("writing {}", plugin.display()))?;

    let port = free_tcp_port()?;
    let mut node = ReferenceNode::new("device", &ReferenceModel::EdgeInt8.path(models_dir), &plugin);
    node.node.listeners.http = format!("127.0.0.1:{port}");
    let config = write_config(&node, dir.path())?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let test = Digits::load_split(models_dir, Split::Test)
        .with_context(|| format!("loading the test split from {}", models_dir.display()))?;
    let infer = (0..=ANSWERS)
        .map(|i| {
            let body = json!({
                "id": format!("image-{i}"),
                "inputs": [{ "name": "image", "shape": [28, 28], "datatype": "UINT8", "data": test.image(i % test.len()) }]
            });
            Ok(loadgen::post_json(addr, "/v2/models/digits/infer", &serde_json::to_vec(&body)?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let (mut ready, mut first, mut rss, mut anon, mut cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..starts {
        let start = Started::measure(&host, &config, dir.path(), addr, &infer)?;
        eprintln!(
            "start {}/{starts}: ready {:.1} ms, first answer {:.1} ms, idle rss {:.1} MiB ({:.1} anonymous), {:.1} us CPU per answer",
            i + 1,
            start.ready_ms,
            start.first_answer_ms,
            start.idle_rss_mib,
            start.idle_anon_rss_mib,
            start.cpu_us_per_request
        );
        ready.push(start.ready_ms);
        first.push(start.first_answer_ms);
        rss.push(start.idle_rss_mib);
        anon.push(start.idle_anon_rss_mib);
        cpu.push(start.cpu_us_per_request);
    }
    figures.push("device.ready_ms", median(&mut ready), "ms");
    figures.push("device.first_answer_ms", median(&mut first), "ms");
    figures.push("device.idle_rss_mib", median(&mut rss), "MiB");
    figures.push("device.idle_anon_rss_mib", median(&mut anon), "MiB");
    figures.push("device.cpu_us_per_request", median(&mut cpu), "us");
    Ok(figures)
}

/// One start of the device node, measured.
struct Started {
    ready_ms: f64,
    first_answer_ms: f64,
    idle_rss_mib: f64,
    idle_anon_rss_mib: f64,
    cpu_us_per_request: f64,
}

impl Started {
    fn measure(
        program: &Path,
        config: &Path,
        dir: &Path,
        addr: SocketAddr,
        infer: &[Vec<u8>],
    ) -> anyhow::Result<Started> {
        let ready_request = loadgen::get(addr, "/v2/health/ready");
        let t0 = Instant::now();
        let mut node = NodeProcess::start(program, "device", config, dir)?;
        let mut conn = loop {
            if let Some(status) = node.exited() {
                bail!(
                    "the device node exited ({status}) before it was ready; its log ends:\n{}",
                    node.log_tail()
                );
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("the device node was not ready within 60 s; its log ends:\n{}", node.log_tail());
            }
            if let Ok(mut conn) = Conn::connect(addr)
                && conn.round_trip(&ready_request).is_ok_and(|(status, _)| status == 200)
            {
                break conn;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let ready = t0.elapsed();
        let (first_request, rest) = infer.split_first().context("no request to send")?;
        let answered = |status: u16, answer: &[u8]| {
            anyhow::ensure!(
                status == 200,
                "the device node answered {status}: {}",
                String::from_utf8_lossy(answer)
            );
            Ok(())
        };
        let (status, answer) = conn.round_trip(first_request)?;
        let first = t0.elapsed();
        answered(status, answer)?;
        std::thread::sleep(IDLE);
        let rss = crate::procfs::resident_mib(node.id())?;
        let anon = crate::procfs::anonymous_mib(node.id())?;
        let cpu = || crate::procfs::cpu_time(node.id()).context("reading the node's CPU time");
        let before = cpu()?;
        for request in rest {
            let (status, answer) = conn.round_trip(request)?;
            answered(status, answer)?;
        }
        let spent = cpu()? - before;
        node.kill();
        Ok(Started {
            ready_ms: ready.as_secs_f64() * 1e3,
            first_answer_ms: first.as_secs_f64() * 1e3,
            idle_rss_mib: rss,
            idle_anon_rss_mib: anon,
            cpu_us_per_request: spent.as_secs_f64() * 1e6 / rest.len().max(1) as f64,
        })
    }
}

/// The architecture an ELF executable is built for, from its header's `e_machine`.
fn binary_arch(path: &Path) -> anyhow::Result<&'static str> {
    let header = std::fs::read(path)
        .map(|b| b.get(..20).map(<[u8]>::to_vec))
        .with_context(|| format!("{} is missing", path.display()))?
        .with_context(|| format!("{} is too short to be an executable", path.display()))?;
    elf_machine(&header)
        .with_context(|| format!("{} is not an x86_64 or aarch64 ELF executable", path.display()))
}

/// `e_machine` of a little-endian ELF header: `x86_64` (62) or `aarch64` (183).
fn elf_machine(header: &[u8]) -> Option<&'static str> {
    if header.get(..4)? != b"\x7fELF" || *header.get(5)? != 1 {
        return None;
    }
    match u16::from_le_bytes([*header.get(18)?, *header.get(19)?]) {
        62 => Some("x86_64"),
        183 => Some("aarch64"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_machine_names_the_two_device_architectures_and_nothing_else() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(elf_machine(&me), Some(std::env::consts::ARCH));
        let mut header = me[..20].to_vec();
        header[18..20].copy_from_slice(&183u16.to_le_bytes());
        assert_eq!(elf_machine(&header), Some("aarch64"));
        header[18..20].copy_from_slice(&40u16.to_le_bytes()); // 32-bit ARM
        assert_eq!(elf_machine(&header), None);
        assert_eq!(elf_machine(b"#!/bin/sh\n"), None);
        assert_eq!(elf_machine(b""), None);
    }
}
