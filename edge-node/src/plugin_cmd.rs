//! `edge-node plugin build`: compiles a guest crate into a component and prints the digest
//! to pin in the node config.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cascade_runtime::guest_build::{BuiltGuest, GuestBuilder, default_guest_target_dir};

/// Where `plugin build` writes the component when no `-o` is given: `<crate dir name>.wasm`
/// in the current directory.
pub fn default_output(crate_dir: &Path) -> PathBuf {
    let name = crate_dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "plugin".into());
    PathBuf::from(format!("{name}.wasm"))
}

/// Builds the crate at `crate_dir` (sharing guest build products under `target_dir`, by
/// default the workspace's `target/wasm-guests`), writes the component to `out` and returns it.
pub fn build(crate_dir: &Path, out: &Path, target_dir: Option<&Path>) -> anyhow::Result<BuiltGuest> {
    let builder = GuestBuilder::new(target_dir.map_or_else(default_guest_target_dir, Path::to_path_buf));
    eprintln!("building {} for wasm32-unknown-unknown ...", crate_dir.display());
    let built = builder.build(crate_dir)?;
    std::fs::write(out, &built.component).with_context(|| format!("writing {}", out.display()))?;
    Ok(built)
}

/// Where `plugin build --target T` writes the precompiled plugin: `<out>.<T>.cwasm`.
pub fn precompiled_output(out: &Path, target: &str) -> PathBuf {
    out.with_extension(format!("{target}.cwasm"))
}

/// Runs `edge-node plugin build` and prints the component's path, size and sha256; with
/// `target`, also the precompiled plugin's.
pub fn run_build(
    crate_dir: &Path,
    out: Option<PathBuf>,
    target_dir: Option<&Path>,
    target: Option<&str>,
) -> anyhow::Result<()> {
    let out = out.unwrap_or_else(|| default_output(crate_dir));
    let built = build(crate_dir, &out, target_dir)?;
    println!("wrote {} ({} bytes, built with {:?})", out.display(), built.component.len(), built.toolchain);
    println!("sha256 {}", built.digest);
    if let Some(target) = target {
        let file = precompiled_output(&out, target);
        let bytes = precompile(&built.component, target)?;
        std::fs::write(&file, &bytes).with_context(|| format!("writing {}", file.display()))?;
        println!("wrote {} ({} bytes, precompiled for {target})", file.display(), bytes.len());
        println!("sha256 {}", cascade_runtime::config::Digest::of(&bytes));
    }
    Ok(())
}

#[cfg(feature = "compiler")]
fn precompile(component: &[u8], target: &str) -> anyhow::Result<Vec<u8>> {
    cascade_runtime::precompiled::precompile(component, target)
        .map_err(|why| anyhow::anyhow!("precompiling: {why}"))
}

#[cfg(not(feature = "compiler"))]
fn precompile(_component: &[u8], _target: &str) -> anyhow::Result<Vec<u8>> {
    anyhow::bail!(
        "this edge-node was built without the compiler: run `plugin build --target` with a default build"
    )
}
