//! `edge-node certs init|issue`: a deployment CA and node certificates for mutual TLS
//! between tiers, for a first deployment (an existing PKI can issue the same files).
//!
//! ```text
//! edge-node certs init --dir ca/                      # ca/ca.pem, ca/ca.key (0600)
//! edge-node certs issue --ca-dir ca/ --name central --role central --out-dir central/ --dns central.example.net
//!                                                     # central/central.pem, central/central.key (0600), central/ca.pem
//! edge-node certs issue --ca-dir ca/ --name edge-1 --role edge --out-dir edge-1/
//! ```
//!
//! The certificates themselves are made by the runtime's [`Ca`]; a certificate's [`Role`]
//! says what it may do (escalate, answer escalations, or both). This module puts them in
//! files with the right permissions.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cascade_runtime::transport::certs::{self, Ca, Role};
use clap::Subcommand;

/// CA certificate file name inside the CA directory (and copied next to node certificates).
pub const CA_CERT: &str = "ca.pem";
/// CA private key file name inside the CA directory.
pub const CA_KEY: &str = "ca.key";

/// The `certs` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a deployment CA: DIR/ca.pem (certificate) and DIR/ca.key (private key, 0600).
    Init {
        /// Directory for the CA files (created if missing, mode 0700).
        #[arg(long)]
        dir: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue a node certificate signed by the CA: OUT/NAME.pem, OUT/NAME.key (0600), OUT/ca.pem.
    Issue {
        /// Directory holding ca.pem and ca.key (from `certs init`).
        #[arg(long)]
        ca_dir: PathBuf,
        /// Node name: the certificate's common name and first DNS name.
        #[arg(long)]
        name: String,
        /// What the certificate may do: `edge` (escalate to upstreams), `central` (answer
        /// escalations) or `relay` (a middle tier: both).
        #[arg(long)]
        role: Role,
        /// Directory for the node's files (created if missing).
        #[arg(long)]
        out_dir: PathBuf,
        /// More DNS names (or IP addresses) the node is reached by; repeatable.
        #[arg(long)]
        dns: Vec<String>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

/// Runs a `certs` subcommand and returns the files it wrote.
pub fn run(command: CertsCommand) -> Result<Vec<PathBuf>> {
    match command {
        CertsCommand::Init { dir, force } => init(&dir, force),
        CertsCommand::Issue { ca_dir, name, role, out_dir, dns, force } => {
            let written = issue(&ca_dir, &name, role, &out_dir, &dns, force)?;
            eprintln!("{name} ({role}): {}", role.describe());
            Ok(written)
        }
    }
}

/// Creates a CA in `dir`, valid for ten years.
pub fn init(dir: &Path, force: bool) -> Result<Vec<PathBuf>> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    refuse_existing(&[&cert_path, &key_path], force)?;
    let ca = Ca::new()?;
    create_dir(dir, true)?;
    write_file(&key_path, ca.key_pem().as_bytes(), 0o600, force)?;
    write_file(&cert_path, ca.cert_pem().as_bytes(), 0o644, force)?;
    Ok(vec![cert_path, key_path])
}

/// Issues a certificate for node `name` in `role` (and `dns` names), valid for three years.
pub fn issue(
    ca_dir: &Path,
    name: &str,
    role: Role,
    out_dir: &Path,
    dns: &[String],
    force: bool,
) -> Result<Vec<PathBuf>> {
    certs::check_name(name)?;
    let ca_cert_path = ca_dir.join(CA_CERT);
    let ca_key_path = ca_dir.join(CA_KEY);
    let ca_pem = fs::read_to_string(&ca_cert_path).with_context(|| {
        format!(
            "cannot read the CA certificate {} (run `edge-node certs init` first)",
            ca_cert_path.display()
        )
    })?;
    let ca_key_pem = fs::read_to_string(&ca_key_path)
        .with_context(|| format!("cannot read the CA key {}", ca_key_path.display()))?;
    let ca = Ca::from_pem(&ca_pem, &ca_key_pem)
        .with_context(|| format!("CA {} with key {}", ca_cert_path.display(), ca_key_path.display()))?;
    let issued = ca.issue(name, role, dns)?;

    let cert_path = out_dir.join(format!("{name}.pem"));
    let key_path = out_dir.join(format!("{name}.key"));
    let ca_copy = out_dir.join(CA_CERT);
    // The CA copy may already be there from an earlier node in the same directory.
    let same_ca = fs::read_to_string(&ca_copy).is_ok_and(|existing| existing == ca_pem);
    let mut targets = vec![&cert_path, &key_path];
    if !same_ca {
        targets.push(&ca_copy);
    }
    refuse_existing(&targets, force)?;
    create_dir(out_dir, false)?;
    write_file(&key_path, issued.key_pem.as_bytes(), 0o600, force)?;
    write_file(&cert_path, issued.cert_pem.as_bytes(), 0o644, force)?;
    let mut written = vec![cert_path, key_path];
    if !same_ca {
        write_file(&ca_copy, ca_pem.as_bytes(), 0o644, force)?;
        written.push(ca_copy);
    }
    Ok(written)
}

/// Checks every target first, so that a refusal leaves nothing half-written.
fn refuse_existing(paths: &[&PathBuf], force: bool) -> Result<()> {
    let existing: Vec<String> =
        paths.iter().filter(|p| p.exists()).map(|p| p.display().to_string()).collect();
    if !force && !existing.is_empty() {
        bail!("refusing to overwrite {} (pass --force to replace)", existing.join(", "));
    }
    Ok(())
}

fn create_dir(dir: &Path, private: bool) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    #[cfg(not(unix))]
    let _ = private;
    builder.create(dir).with_context(|| format!("cannot create directory {}", dir.display()))
}

/// Writes a new file with `mode`; with `force`, an existing file is removed first so the
/// new one gets `mode` (opening an existing file keeps its old permissions).
fn write_file(path: &Path, contents: &[u8], mode: u32, force: bool) -> Result<()> {
    if force && path.exists() {
        fs::remove_file(path).with_context(|| format!("cannot replace {}", path.display()))?;
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn init_then_issue_writes_usable_files() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("ca");
        let node = tmp.path().join("central");
        init(&ca, false).unwrap();
        let files = issue(
            &ca,
            "central",
            Role::Central,
            &node,
            &["central.example.net".into(), "127.0.0.1".into()],
            false,
        )
        .unwrap();
        assert_eq!(files.len(), 3);
        #[cfg(unix)]
        {
            assert_eq!(mode(&ca.join(CA_KEY)), 0o600);
            assert_eq!(mode(&node.join("central.key")), 0o600);
            assert_eq!(mode(&ca), 0o700);
        }
        // The files load as a transport identity.
        cascade_runtime::transport::TlsIdentity::from_files(
            &node.join("central.pem"),
            &node.join("central.key"),
            &node.join(CA_CERT),
        )
        .unwrap();
        // A second node in the same directory reuses the CA copy.
        assert_eq!(issue(&ca, "edge-1", Role::Edge, &node, &[], false).unwrap().len(), 2);
    }

    #[test]
    fn refuses_to_overwrite_without_force() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("ca");
        init(&ca, false).unwrap();
        let before = fs::read(ca.join(CA_KEY)).unwrap();
        let err = init(&ca, false).unwrap_err().to_string();
        assert!(err.contains("refusing to overwrite") && err.contains("--force"), "{err}");
        assert_eq!(fs::read(ca.join(CA_KEY)).unwrap(), before);
        init(&ca, true).unwrap();
        assert_ne!(fs::read(ca.join(CA_KEY)).unwrap(), before);

        let out = tmp.path().join("n");
        issue(&ca, "edge", Role::Edge, &out, &[], false).unwrap();
        assert!(issue(&ca, "edge", Role::Edge, &out, &[], false).is_err());
        assert!(issue(&ca, "edge", Role::Edge, &out, &[], true).is_ok());
    }

    #[test]
    fn refuses_a_key_from_another_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        init(&a, false).unwrap();
        init(&b, false).unwrap();
        fs::copy(b.join(CA_KEY), a.join(CA_KEY)).unwrap();
        let err = issue(&a, "edge", Role::Edge, &tmp.path().join("n"), &[], false).unwrap_err();
        assert!(format!("{err:#}").contains("does not belong"), "{err:#}");
    }

    #[test]
    fn clear_errors_for_missing_ca_and_bad_names() {
        let tmp = tempfile::tempdir().unwrap();
        let err = issue(tmp.path(), "edge", Role::Edge, tmp.path(), &[], false).unwrap_err();
        assert!(format!("{err:#}").contains("run `edge-node certs init` first"), "{err:#}");
        let err = issue(tmp.path(), "bad name", Role::Edge, tmp.path(), &[], false).unwrap_err();
        assert!(err.to_string().contains("must be a DNS name"), "{err}");
    }
}
