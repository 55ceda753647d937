//! Certificates and keys: loading PEM and building the two rustls configurations.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use super::{ALPN, TransportError};

/// A node's TLS identity: its certificate chain and private key, and the deployment CA it
/// trusts for its peers. `edge-node certs init|issue` creates these files.
pub struct TlsIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        write!(f, "TlsIdentity({} certificates, {} trusted roots)", self.chain.len(), self.roots.len())
    }
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        TlsIdentity { chain: self.chain.clone(), key: self.key.clone_key(), roots: self.roots.clone() }
    }
}

impl TlsIdentity {
    /// Builds an identity from PEM text: the node's certificate (chain), its private key
    /// (PKCS#8, PKCS#1 or SEC1), and the CA certificate(s) it trusts.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], ca_pem: &[u8]) -> Result<TlsIdentity, TransportError> {
        let chain = certs(cert_pem, "node certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| TransportError::Tls(format!("node key: no usable private key ({e})")))?;
        let mut roots = RootCertStore::empty();
        for ca in certs(ca_pem, "ca certificate")? {
            roots.add(ca).map_err(|e| TransportError::Tls(format!("ca certificate: {e}")))?;
        }
        Ok(TlsIdentity { chain, key, roots: Arc::new(roots) })
    }

    /// Reads the three PEM files named like `from_pem`'s arguments.
    pub fn from_files(cert: &Path, key: &Path, ca: &Path) -> Result<TlsIdentity, TransportError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| TransportError::Tls(format!("cannot read {}: {e}", p.display())))
        };
        TlsIdentity::from_pem(&read(cert)?, &read(key)?, &read(ca)?)
    }

    /// The QUIC server side: presents this node's certificate, requires a client
    /// certificate signed by the CA, refuses 0-RTT.
    pub(super) fn quic_server(&self) -> Result<quinn::crypto::rustls::QuicServerConfig, TransportError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider.clone())
            .build()
            .map_err(|e| TransportError::Tls(format!("client verifier: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TransportError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TransportError::Tls(format!("node certificate and key: {e}")))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        config.max_early_data_size = 0;
        quinn::crypto::rustls::QuicServerConfig::try_from(config)
            .map_err(|e| TransportError::Tls(e.to_string()))
    }

    /// The QUIC client side: presents this node's certificate, verifies the upstream's
    /// against the CA and the server name, never sends 0-RTT.
    pub(super) fn quic_client(&self) -> Result<quinn::crypto::rustls::QuicClientConfig, TransportError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TransportError::Tls(e.to_string()))?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TransportError::Tls(format!("node certificate and key: {e}")))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        config.enable_early_data = false;
        quinn::crypto::rustls::QuicClientConfig::try_from(config)
            .map_err(|e| TransportError::Tls(e.to_string()))
    }
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TransportError::Tls(format!("{what}: invalid pem ({e})")))?;
    if certs.is_empty() {
        return Err(TransportError::Tls(format!("{what}: no certificate found")));
    }
    Ok(certs)
}
