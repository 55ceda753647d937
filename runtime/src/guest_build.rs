//! Builds a guest plugin crate into a WebAssembly component.
//!
//! Two toolchains are supported, tried in this order:
//! 1. rustup with the `wasm32-unknown-unknown` target installed: a plain
//!    `cargo build --release --target wasm32-unknown-unknown`.
//! 2. Debian's `rustc-web` + `rust-web-src` + `lld` (what `tools/setup.sh` installs where rustup
//!    cannot download a wasm standard library): `/usr/bin/cargo` with `-Zbuild-std`, which
//!    compiles std from source once per target directory.
//!
//! All guests share one target directory (by default `<workspace target>/wasm-guests`), so
//! std and the SDK are compiled once. The core module is then wrapped as a component with
//! `wit-component`; no WASI adapter is needed because guests import only the Cascade world.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::Digest;

const TARGET: &str = "wasm32-unknown-unknown";

/// What to run when no toolchain can build guests.
const FIX: &str = "run `tools/setup.sh` (Debian: installs rustc-web, rust-web-src and lld) or \
                   `rustup target add wasm32-unknown-unknown`";

/// Why a guest could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GuestBuildError {
    /// Neither toolchain can build for wasm32-unknown-unknown.
    #[error("no toolchain can build wasm32-unknown-unknown guests ({why}); to fix it, {FIX}")]
    NoToolchain {
        /// What was looked for and not found.
        why: String,
    },
    /// The crate's manifest is missing or not a cdylib package.
    #[error("guest crate manifest {file}: {why}")]
    Manifest {
        /// The Cargo.toml.
        file: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// cargo failed to build the crate.
    #[error("building guest crate {crate_dir} failed ({status}):\n{stderr}")]
    Cargo {
        /// The crate directory.
        crate_dir: PathBuf,
        /// cargo's exit status.
        status: String,
        /// The end of cargo's error output.
        stderr: String,
    },
    /// A file could not be read or cargo could not be started.
    #[error("{what} {path}: {cause}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or program.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// This build leaves out the plugin tooling (a device build, without `compiler`).
    #[error(
        "this edge-node was built without the plugin compiler (a device build): build plugins with a \
         default build, `edge-node plugin build <crate-dir> --target <triple>`, and copy the .cwasm"
    )]
    NoCompiler,
    /// The core module could not be turned into a valid component.
    #[error("guest module {file} cannot be made into a component: {why}")]
    Encode {
        /// The core wasm file.
        file: PathBuf,
        /// wit-component's explanation.
        why: String,
    },
}

/// Which toolchain builds the guests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestToolchain {
    /// rustup's toolchain, with the wasm32-unknown-unknown target installed.
    Rustup,
    /// Debian's rustc-web at `/usr/bin`, compiling std from source (`-Zbuild-std`).
    DebianBuildStd,
}

/// A built component.
#[derive(Debug, Clone)]
pub struct BuiltGuest {
    /// The component bytes.
    pub component: Vec<u8>,
    /// sha256 of `component`, as pinned in node configs.
    pub digest: Digest,
    /// The toolchain that built it.
    pub toolchain: GuestToolchain,
}

/// The shared guest target directory: `$CARGO_TARGET_DIR/wasm-guests` if set, else this
/// workspace's `target/wasm-guests`.
pub fn default_guest_target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("wasm-guests"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("wasm-guests"),
    }
}

fn sysroot(rustc: &str) -> Option<PathBuf> {
    let out = Command::new(rustc).arg("--print").arg("sysroot").output().ok()?;
    out.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Finds a toolchain that can build guests, preferring rustup's wasm32 target.
pub fn detect_toolchain() -> Result<GuestToolchain, GuestBuildError> {
    if let Some(root) = sysroot("rustc")
        && root.join("lib/rustlib").join(TARGET).join("lib").is_dir()
    {
        return Ok(GuestToolchain::Rustup);
    }
    let mut missing = vec![format!("the rustc on PATH has no {TARGET} standard library")];
    if !Path::new("/usr/bin/cargo").is_file() {
        missing.push("/usr/bin/cargo is absent".into());
    }
    match sysroot("/usr/bin/rustc") {
        Some(root) if root.join("lib/rustlib/src/rust/library/std").is_dir() => {}
        Some(root) => missing.push(format!("{} has no std sources", root.display())),
        None => missing.push("/usr/bin/rustc is absent".into()),
    }
    if !Path::new("/usr/bin/wasm-ld").is_file() {
        missing.push("/usr/bin/wasm-ld is absent".into());
    }
    if missing.len() == 1 {
        Ok(GuestToolchain::DebianBuildStd)
    } else {
        Err(GuestBuildError::NoToolchain { why: missing.join("; ") })
    }
}

/// The library file name cargo gives a crate's cdylib, from its manifest.
fn artifact_name(manifest: &Path) -> Result<String, GuestBuildError> {
    let bad = |why: String| GuestBuildError::Manifest { file: manifest.to_path_buf(), why };
    let text = std::fs::read_to_string(manifest).map_err(|e| bad(e.to_string()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| bad(e.message().to_string()))?;
    let package = table.get("package").and_then(|p| p.get("name")).and_then(|n| n.as_str());
    let lib = table.get("lib");
    let name = lib.and_then(|l| l.get("name")).and_then(|n| n.as_str()).or(package);
    let name = name.ok_or_else(|| bad("no [package] name".into()))?;
    let cdylib = lib
        .and_then(|l| l.get("crate-type"))
        .and_then(|t| t.as_array())
        .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("cdylib")));
    if !cdylib {
        return Err(bad("a plugin must set [lib] crate-type = [\"cdylib\"]".into()));
    }
    Ok(format!("{}.wasm", name.replace('-', "_")))
}

/// Builds guest crates into components, sharing one target directory.
#[derive(Debug, Clone)]
pub struct GuestBuilder {
    target_dir: PathBuf,
}

impl Default for GuestBuilder {
    fn default() -> GuestBuilder {
        GuestBuilder::new(default_guest_target_dir())
    }
}

impl GuestBuilder {
    /// A builder that puts every guest's build products under `target_dir`.
    pub fn new(target_dir: impl Into<PathBuf>) -> GuestBuilder {
        GuestBuilder { target_dir: target_dir.into() }
    }

    /// Compiles the crate at `crate_dir` for wasm32-unknown-unknown (release profile) and
    /// wraps the module as a validated component.
    pub fn build(&self, crate_dir: &Path) -> Result<BuiltGuest, GuestBuildError> {
        // Refused before cargo runs: without the encoder the build could not be finished.
        if !cfg!(feature = "compiler") {
            return Err(GuestBuildError::NoCompiler);
        }
        // cargo runs inside the crate directory, so relative paths would resolve twice.
        let crate_dir = &std::path::absolute(crate_dir).unwrap_or_else(|_| crate_dir.to_path_buf());
        let target_dir = std::path::absolute(&self.target_dir).unwrap_or_else(|_| self.target_dir.clone());
        let manifest = crate_dir.join("Cargo.toml");
        let artifact = artifact_name(&manifest)?;
        let toolchain = detect_toolchain()?;
        let mut cmd = match toolchain {
            GuestToolchain::Rustup => Command::new("cargo"),
            GuestToolchain::DebianBuildStd => Command::new("/usr/bin/cargo"),
        };
        // A build started from inside cargo (tests, build scripts) inherits variables that
        // would point the nested build at the host's compiler, flags or target directory.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let keep = ["CARGO_HOME", "CARGO_NET_", "CARGO_HTTP_", "CARGO_REGISTRIES_"]
                .iter()
                .any(|k| key.starts_with(k));
            if (key.starts_with("CARGO") && !keep) || key.starts_with("RUSTC") || key.starts_with("RUSTFLAGS")
            {
                cmd.env_remove(&*key);
            }
        }
        cmd.current_dir(crate_dir)
            .arg("build")
            .arg("--release")
            .arg("--target")
            .arg(TARGET)
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target_dir);
        if crate_dir.join("Cargo.lock").is_file() {
            cmd.arg("--locked");
        }
        if toolchain == GuestToolchain::DebianBuildStd {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![PathBuf::from("/usr/bin")];
            dirs.extend(std::env::split_paths(&path));
            let path = std::env::join_paths(dirs).unwrap_or(path);
            cmd.env_remove("RUSTUP_TOOLCHAIN")
                .env("PATH", path)
                .env("RUSTC_BOOTSTRAP", "1")
                .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", "wasm-ld")
                .arg("-Zbuild-std=std,panic_abort");
        }
        let out = cmd.output().map_err(|cause| GuestBuildError::Io {
            what: "cannot run",
            path: PathBuf::from(match toolchain {
                GuestToolchain::Rustup => "cargo",
                GuestToolchain::DebianBuildStd => "/usr/bin/cargo",
            }),
            cause,
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = stderr.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            return Err(GuestBuildError::Cargo {
                crate_dir: crate_dir.to_path_buf(),
                status: out.status.to_string(),
                stderr: tail,
            });
        }
        let file = target_dir.join(TARGET).join("release").join(artifact);
        let core = std::fs::read(&file).map_err(|cause| GuestBuildError::Io {
            what: "cannot read the built module",
            path: file.clone(),
            cause,
        })?;
        let component = encode_component(&core).map_err(|why| GuestBuildError::Encode { file, why })?;
        Ok(BuiltGuest { digest: Digest::of(&component), component, toolchain })
    }
}

/// Wraps a core module (with its embedded component-type section from wit-bindgen) as a
/// validated component.
#[cfg(feature = "compiler")]
pub fn encode_component(core: &[u8]) -> Result<Vec<u8>, String> {
    wit_component::ComponentEncoder::default()
        .module(core)
        .and_then(|e| e.validate(true).encode())
        .map_err(|e| format!("{e:#}"))
}

/// Without the plugin tooling (a device build) there is no encoder; [`GuestBuilder::build`]
/// refuses before it gets here.
#[cfg(not(feature = "compiler"))]
pub fn encode_component(_core: &[u8]) -> Result<Vec<u8>, String> {
    Err(GuestBuildError::NoCompiler.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The device build: `plugin build` is refused before cargo runs, saying which build
    /// makes plugins.
    #[cfg(not(feature = "compiler"))]
    #[test]
    fn without_compiler_no_guest_is_built() {
        let dir = tempfile::tempdir().unwrap();
        let err = GuestBuilder::new(dir.path()).build(dir.path()).unwrap_err().to_string();
        assert!(err.contains("without the plugin compiler") && err.contains("--target <triple>"), "{err}");
        assert!(!err.contains('\n'));
        assert!(encode_component(b"\0asm").is_err());
    }

    #[cfg(feature = "compiler")]
    #[test]
    fn manifest_must_be_a_cdylib() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("Cargo.toml");
        std::fs::write(&manifest, "[package]\nname = \"my-plugin\"\n[lib]\ncrate-type = [\"cdylib\"]\n")
            .unwrap();
        assert_eq!(artifact_name(&manifest).unwrap(), "my_plugin.wasm");
        std::fs::write(&manifest, "[package]\nname = \"my-plugin\"\n").unwrap();
        let err = artifact_name(&manifest).unwrap_err().to_string();
        assert!(err.contains("crate-type") && err.contains("Cargo.toml"), "{err}");
        let missing = GuestBuilder::new(dir.path()).build(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(missing, GuestBuildError::Manifest { .. }), "{missing}");
    }

    #[cfg(feature = "compiler")]
    #[test]
    fn bytes_that_are_not_wasm_are_refused() {
        assert!(encode_component(b"not wasm").is_err());
    }

    #[test]
    fn no_toolchain_message_names_the_fix() {
        let err = GuestBuildError::NoToolchain { why: "x".into() }.to_string();
        assert!(err.contains("tools/setup.sh") && err.contains("rustup target add wasm32-unknown-unknown"));
    }
}
