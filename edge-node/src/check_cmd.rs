//! `edge-node check --config F`: validate a node config and read its files without serving.
//!
//! Every model is prepared as the node would prepare it, and its inputs and outputs are
//! printed with their shapes (the graph's names; `batch` first). A model that cannot be
//! prepared fails the check with one line naming the model and what to change; the details
//! behind it are in the debug log (`RUST_LOG=cascade_runtime=debug`).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use cascade_runtime::config::UpstreamKind;
use cascade_runtime::{LoadedModel, Mode, ModelStore, ResolvedConfig, config};

/// Loads, validates and resolves (reads and digest-checks every model and plugin file) the
/// config at `path`, prepares every model, and returns a short summary of what the node
/// would serve; or the first refusal, as one line.
pub fn run(path: &Path) -> anyhow::Result<String> {
    let validated = config::load(path)?;
    let resolved = validated.resolve()?;
    if let Some(admin) = &resolved.settings.admin {
        crate::serve::admin::read_token(&admin.token_file)?;
    }
    let mut models = Vec::new();
    for (name, m) in &resolved.models {
        // Prepared as the node would prepare it: the same backend choice and fallback.
        let loaded = ModelStore::prepare(name, m).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        models.push(loaded);
    }
    summary(&resolved, &models).context("formatting the summary")
}

/// `run`, for the command line: prints the summary on standard output and returns true, or
/// prints the refusal as one line on standard error and returns false (exit code 1).
pub fn main(path: &Path) -> bool {
    match run(path) {
        Ok(summary) => {
            print!("{summary}");
            true
        }
        Err(e) => {
            // `{:#}` keeps the chain of contexts on one line; no backtrace.
            eprintln!("{e:#}");
            false
        }
    }
}

fn summary(c: &ResolvedConfig, models: &[LoadedModel]) -> Result<String, std::fmt::Error> {
    let s = &c.settings;
    let mut out = String::new();
    writeln!(out, "{}: ok", c.file.display())?;
    write!(out, "node `{}`: http {}", s.name, s.http)?;
    if let Some(q) = s.quic {
        write!(out, ", quic {q}")?;
    }
    if let Some(a) = &s.admin {
        write!(out, ", admin {} (token in {})", a.addr, a.token_file.display())?;
    }
    writeln!(out, ", max in flight {}", s.max_in_flight)?;
    for ((name, m), loaded) in c.models.iter().zip(models) {
        let pin = if m.spec.pinned.is_some() { "pinned" } else { "not pinned" };
        writeln!(
            out,
            "model `{name}`: {} on {} ({} bytes), sha256 {} ({pin})",
            m.spec.path.display(),
            m.spec.backend.name(),
            m.bytes.len(),
            m.digest
        )?;
        writeln!(out, "  {}", loaded.describe())?;
        for tensor in loaded.describe_tensors() {
            writeln!(out, "  {tensor}")?;
        }
    }
    for (name, p) in &c.plugins {
        let pin = if p.spec.pinned.is_some() { "pinned" } else { "not pinned" };
        let models: Vec<&str> = p.spec.models.iter().map(String::as_str).collect();
        writeln!(
            out,
            "plugin `{name}`: {} ({} bytes), sha256 {} ({pin}), models [{}], {} MiB, {} ms",
            p.spec.path.display(),
            p.bytes.len(),
            p.digest,
            models.join(", "),
            p.spec.memory_limit_bytes >> 20,
            p.spec.deadline.as_millis()
        )?;
    }
    for (name, r) in &s.routes {
        let thresholds: Vec<String> = Mode::ALL.iter().map(|m| format!("{m} {}", r.threshold(*m))).collect();
        writeln!(
            out,
            "route `{name}` -> plugin `{}`: thresholds {}; deadline {} ms, cache {} s, {} in flight + {} queued",
            r.plugin,
            thresholds.join(", "),
            r.deadline.as_millis(),
            r.cache_ttl.as_secs(),
            r.max_in_flight,
            r.queue_len
        )?;
    }
    match &s.upstream {
        Some(u) => match &u.kind {
            UpstreamKind::Quic(q) => {
                let addrs: Vec<String> = q.addresses.iter().map(ToString::to_string).collect();
                writeln!(out, "upstream `{}` at {}", u.server_name, addrs.join(", "))?
            }
            UpstreamKind::Kserve(k) => writeln!(out, "upstream: KServe v2 model `{}` at {}", k.model, k.url)?,
        },
        None => writeln!(out, "no upstream: this node answers everything it accepts")?,
    }
    if let Some(b) = s.batching {
        writeln!(out, "batching: up to {} per call, {} us delay", b.max_batch, b.max_delay.as_micros())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_runtime::{ReferenceModel, reference};

    #[test]
    fn summarises_a_config_with_real_files_and_refuses_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.wasm"), b"plugin bytes").unwrap();
        let model = ReferenceModel::EdgeInt8.path(&reference::default_models_dir());
        let text = format!(
            "[models.m]\npath = {:?}\n[plugins.p]\npath = \"p.wasm\"\nmodels = [\"m\"]\n\
             [routes.r]\nplugin = \"p\"\nthresholds = {{ normal = 0.8 }}\n",
            model.display().to_string()
        );
        let cfg = dir.path().join("node.toml");
        std::fs::write(&cfg, &text).unwrap();
        let out = run(&cfg).unwrap();
        let plugin_digest = config::Digest::of(b"plugin bytes").to_string();
        assert!(out.contains(&plugin_digest), "{out}");
        assert!(out.contains("route `r` -> plugin `p`: thresholds normal 0.8"), "{out}");
        assert!(out.contains("no upstream"), "{out}");
        assert!(out.contains("  runs on tract, int8 (runs as int8)"), "{out}");
        assert!(
            out.contains("  input input f32 [batch, 1, 28, 28]\n  output logits f32 [batch, 10]\n"),
            "{out}"
        );

        std::fs::write(&cfg, text.replace("0.8", "8")).unwrap();
        let err = format!("{:#}", run(&cfg).unwrap_err());
        assert!(err.contains("routes.r.thresholds.normal"), "{err}");
    }

    #[test]
    fn summarises_a_kserve_upstream() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.wasm"), b"plugin bytes").unwrap();
        let model = ReferenceModel::EdgeInt8.path(&reference::default_models_dir());
        let text = format!(
            "[models.m]\npath = {:?}\n[plugins.p]\npath = \"p.wasm\"\nmodels = [\"m\"]\n\
             [routes.r]\nplugin = \"p\"\nthresholds = {{ normal = 0.8 }}\n\
             [upstream]\nkind = \"kserve\"\nurl = \"http://127.0.0.1:8500/\"\nmodel = \"central\"\n",
            model.display().to_string()
        );
        let cfg = dir.path().join("node.toml");
        std::fs::write(&cfg, &text).unwrap();
        let out = run(&cfg).unwrap();
        assert!(out.contains("upstream: KServe v2 model `central` at http://127.0.0.1:8500\n"), "{out}");
    }
}
