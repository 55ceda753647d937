//! A deployment CA and the node certificates it issues, in memory: what `edge-node certs`
//! writes to files, and what tests and benchmarks use directly.
//!
//! A node certificate says what its holder may do by its extended key usages, which both
//! sides of a connection check (rustls/webpki): a [`Role::Edge`] certificate (client
//! authentication only) may escalate to an upstream but not serve escalations; a
//! [`Role::Central`] one (server authentication only) may serve them but not escalate; a
//! [`Role::Relay`] (a middle tier) may do both. The node's name is its common name and first
//! DNS name: edges connect to an upstream by one of its DNS names, and an upstream knows
//! (and may allowlist) its downstream nodes by their names.

use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::{TlsIdentity, TransportError};

/// The CA's default common name.
pub const CA_COMMON_NAME: &str = "Cascade deployment CA";

/// Why a certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A node name that is not a DNS name.
    #[error("node name {0:?} must be a DNS name (letters, digits, '-' and '.')")]
    BadName(String),
    /// The CA's certificate or key is not usable PEM.
    #[error("{what}: {why}")]
    BadPem {
        /// Which file's contents.
        what: &'static str,
        /// The parser's explanation.
        why: String,
    },
    /// The CA key does not belong to the CA certificate.
    #[error("the CA key does not belong to the CA certificate")]
    KeyMismatch,
    /// Key generation or signing failed.
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// What a node certificate allows its holder to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Escalates to an upstream (TLS client authentication only).
    Edge,
    /// Answers escalations from downstream nodes (TLS server authentication only).
    Central,
    /// A middle tier: answers escalations and escalates further (both).
    Relay,
}

impl Role {
    /// Every role, in the order `certs issue --help` lists them.
    pub const ALL: [Role; 3] = [Role::Edge, Role::Central, Role::Relay];

    /// The role's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::Edge => "edge",
            Role::Central => "central",
            Role::Relay => "relay",
        }
    }

    /// What a certificate of this role may do, in words (`certs issue` prints it).
    pub fn describe(self) -> &'static str {
        match self {
            Role::Edge => "may escalate to upstreams that trust this CA; may not accept escalations",
            Role::Central => "may accept escalations from nodes this CA signed; may not escalate",
            Role::Relay => "may accept escalations and escalate further",
        }
    }

    fn key_usages(self) -> Vec<ExtendedKeyUsagePurpose> {
        match self {
            Role::Edge => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Role::Central => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Role::Relay => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL.into_iter().find(|r| r.name() == s).ok_or_else(|| {
            format!("unknown role {s:?}: expected edge (escalates), central (answers) or relay (both)")
        })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A node's certificate and private key, as PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (keep it private: 0600 on disk).
    pub key_pem: String,
}

/// A certificate authority: its certificate and the key that signs node certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca")
    }
}

fn sign_err(e: rcgen::Error) -> CertError {
    CertError::Sign(e.to_string())
}

/// The CA's parameters. An issued certificate names its issuer by this subject and by the
/// key, so rebuilding them from the key alone (see [`Ca::from_pem`]) avoids an X.509 parser.
fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

/// Valid from the start of this year for `years` years: a little slack for clock skew
/// without computing calendar dates here.
fn set_validity(params: &mut CertificateParams, years: i32) {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let year = 1970 + i32::try_from(secs / 31_556_952).unwrap_or(0);
    params.not_before = date_time_ymd(year, 1, 1);
    params.not_after = date_time_ymd(year + years, 1, 1);
}

/// Refuses a node name that cannot be a certificate's DNS name.
pub fn check_name(name: &str) -> Result<(), CertError> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
        return Err(CertError::BadName(name.to_owned()));
    }
    Ok(())
}

impl Ca {
    /// A new CA named [`CA_COMMON_NAME`], valid for ten years.
    pub fn new() -> Result<Ca, CertError> {
        Ca::named(CA_COMMON_NAME)
    }

    /// A new CA with its own common name (tests make several to check they are told apart).
    pub fn named(common_name: &str) -> Result<Ca, CertError> {
        let key = KeyPair::generate().map_err(sign_err)?;
        let mut params = ca_params(common_name);
        set_validity(&mut params, 10);
        let cert_pem = params.self_signed(&key).map_err(sign_err)?.pem();
        let key_pem = key.serialize_pem();
        Ok(Ca { issuer: Issuer::new(ca_params(common_name), key), cert_pem, key_pem })
    }

    /// The CA `Ca::new` made, read back from its PEM files' contents.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CertError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| CertError::BadPem { what: "CA key", why: e.to_string() })?;
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| CertError::BadPem { what: "CA certificate", why: e.to_string() })?;
        // The certificate embeds its public key: a key from another CA would sign
        // certificates that nobody trusting this CA accepts.
        let public = key.public_key_raw();
        if !der.windows(public.len()).any(|w| w == public) {
            return Err(CertError::KeyMismatch);
        }
        Ok(Ca {
            issuer: Issuer::new(ca_params(CA_COMMON_NAME), key),
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        })
    }

    /// The CA certificate, as PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA key, as PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A certificate for node `name` in `role` (and the extra `dns` names or IP addresses),
    /// valid for three years.
    pub fn issue(&self, name: &str, role: Role, dns: &[String]) -> Result<Issued, CertError> {
        check_name(name)?;
        let mut names = vec![name.to_owned()];
        names.extend(dns.iter().filter(|d| d.as_str() != name).cloned());
        let key = KeyPair::generate().map_err(sign_err)?;
        let mut params = CertificateParams::new(names).map_err(sign_err)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = role.key_usages();
        set_validity(&mut params, 3);
        let cert = params.signed_by(&key, &self.issuer).map_err(sign_err)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// An identity for node `name` in `role` signed by this CA, trusting `trusted`'s
    /// certificates.
    pub fn identity(&self, name: &str, role: Role, trusted: &Ca) -> Result<TlsIdentity, TransportError> {
        let issued = self.issue(name, role, &[]).map_err(|e| TransportError::Tls(e.to_string()))?;
        TlsIdentity::from_pem(
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            trusted.cert_pem.as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_load_as_identities_and_keys_stay_with_their_ca() {
        let ca = Ca::new().unwrap();
        ca.identity("central", Role::Central, &ca).unwrap();
        let again = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let issued = again.issue("edge-1", Role::Edge, &["127.0.0.1".into()]).unwrap();
        TlsIdentity::from_pem(
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            ca.cert_pem().as_bytes(),
        )
        .unwrap();
        let other = Ca::new().unwrap();
        assert!(matches!(Ca::from_pem(ca.cert_pem(), other.key_pem()), Err(CertError::KeyMismatch)));
        assert!(matches!(ca.issue("bad name", Role::Edge, &[]), Err(CertError::BadName(_))));
    }
}
