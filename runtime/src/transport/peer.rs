//! Who is on the other end of a tier connection: the name in its certificate, and whether
//! an upstream lets that name in.
//!
//! Mutual TLS proves the peer holds a certificate our CA signed; the certificate's name says
//! which node it is. An upstream keys fairness and connection caps by that name (not by
//! address: an edge with K connections is still one edge), and may admit only the names on
//! an allowlist, so that a certificate issued for one purpose cannot be used as another
//! node.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The verified name of a connected peer: its certificate's common name, or its first DNS
/// name when it has no common name. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerName(Arc<str>);

impl PeerName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of the peer of `connection`, whose handshake (and so certificate
    /// verification) has completed. `None` if it presented no certificate with a name.
    pub(super) fn of(connection: &quinn::Connection) -> Option<PeerName> {
        let chain = connection.peer_identity()?.downcast::<Vec<CertificateDer<'static>>>().ok()?;
        PeerName::from_certificate(chain.first()?)
    }

    /// The name a DER certificate carries, if any.
    pub fn from_certificate(der: &CertificateDer<'_>) -> Option<PeerName> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let common_name =
            cert.subject().iter_common_name().find_map(|cn| cn.as_str().ok()).map(str::to_owned);
        let dns_name = || {
            cert.subject_alternative_name().ok().flatten().and_then(|san| {
                san.value.general_names.iter().find_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
            })
        };
        common_name.or_else(dns_name).filter(|n| !n.is_empty()).map(|n| PeerName(n.into()))
    }
}

impl From<&str> for PeerName {
    fn from(name: &str) -> PeerName {
        PeerName(name.into())
    }
}

impl std::fmt::Display for PeerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The peer names an upstream admits: exact names, or prefixes written `edge-*`. An empty
/// list is not allowed in config; [`Allowlist::any`] admits every certificate the CA signed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Allowlist {
    /// `None`: anyone with a certificate from the CA.
    patterns: Option<Vec<String>>,
}

impl Allowlist {
    /// Admits every peer the CA signed a certificate for.
    pub fn any() -> Allowlist {
        Allowlist { patterns: None }
    }

    /// Admits only names matching one of `patterns` (`name`, or `prefix*`).
    pub fn only(patterns: impl IntoIterator<Item = impl Into<String>>) -> Allowlist {
        Allowlist { patterns: Some(patterns.into_iter().map(Into::into).collect()) }
    }

    /// Whether `name` may connect.
    pub fn admits(&self, name: &PeerName) -> bool {
        let Some(patterns) = &self.patterns else { return true };
        patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.as_str().starts_with(prefix),
            None => p == name.as_str(),
        })
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;

    use super::*;
    use crate::transport::certs::{Ca, Role};

    #[test]
    fn a_certificates_name_is_its_node_name() {
        let ca = Ca::new().unwrap();
        let issued = ca.issue("edge-7", Role::Edge, &["10.0.0.7".into()]).unwrap();
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        assert_eq!(PeerName::from_certificate(&der), Some(PeerName::from("edge-7")));
        assert_eq!(PeerName::from_certificate(&CertificateDer::from(vec![1, 2, 3])), None);
    }

    #[test]
    fn allowlists_match_names_and_prefixes() {
        let list = Allowlist::only(["edge-1", "pop-*"]);
        for (name, admitted) in [("edge-1", true), ("edge-10", false), ("pop-ams", true), ("pop", false)] {
            assert_eq!(list.admits(&PeerName::from(name)), admitted, "{name}");
        }
        assert!(Allowlist::any().admits(&PeerName::from("anyone")));
    }
}
