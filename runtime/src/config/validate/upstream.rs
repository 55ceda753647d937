//! Checks of `[upstream]`: the fields both kinds share, then those of a QUIC node or of a
//! KServe server, with the other kind's fields refused. In a file of their own because the
//! two kinds make the longest section to check.

use super::Checker;
use crate::config::schema::UpstreamConfig;
use crate::config::{KserveUpstreamSettings, QuicUpstreamSettings, UpstreamKind, UpstreamSettings};

/// `[upstream]`: the fields common to both kinds, then those of the kind chosen; the other
/// kind's fields are refused rather than ignored, so a half-edited section is caught.
pub(super) fn upstream(c: &mut Checker, u: &UpstreamConfig) -> UpstreamSettings {
    let quic_fields = [
        ("addresses", u.addresses.is_some()),
        ("server_name", u.server_name.is_some()),
        ("ca", u.ca.is_some()),
        ("cert", u.cert.is_some()),
        ("key", u.key.is_some()),
    ];
    let kserve_fields = [("url", u.url.is_some()), ("model", u.model.is_some())];
    let refuse = |c: &mut Checker, fields: &[(&str, bool)], kind: &str, other: &str| {
        for (name, set) in fields {
            if *set {
                c.fail(
                    format!("upstream.{name}"),
                    format!("set, but `kind = \"{kind}\"` does not use it"),
                    format!("no `{name}`, or `kind = \"{other}\"`"),
                );
            }
        }
    };
    let (kind, server_name) = match u.kind.as_str() {
        "quic" => {
            refuse(c, &kserve_fields, "quic", "kserve");
            quic_upstream(c, u)
        }
        "kserve" => {
            refuse(c, &quic_fields, "kserve", "quic");
            kserve_upstream(c, u)
        }
        other => {
            c.fail("upstream.kind", format!("unknown kind `{other}`"), "`quic` or `kserve`");
            (UpstreamKind::Quic(QuicUpstreamSettings::default()), String::new())
        }
    };
    UpstreamSettings {
        kind,
        server_name,
        connect_timeout: c.positive_ms("upstream.connect_timeout_ms", u.connect_timeout_ms),
        request_timeout: c.positive_ms("upstream.request_timeout_ms", u.request_timeout_ms),
        retry_budget: c.unit("upstream.retry_budget", u.retry_budget),
        breaker_failure_threshold: c
            .at_least_one("upstream.breaker.failure_threshold", u.breaker.failure_threshold),
        breaker_open: c.positive_ms("upstream.breaker.open_ms", u.breaker.open_ms),
        breaker_half_open_probes: c
            .at_least_one("upstream.breaker.half_open_probes", u.breaker.half_open_probes),
    }
}

fn quic_upstream(c: &mut Checker, u: &UpstreamConfig) -> (UpstreamKind, String) {
    let required = |c: &mut Checker, name: &str, value: &Option<String>, expected: &str| match value {
        Some(v) if !v.trim().is_empty() => v.clone(),
        Some(_) => {
            c.fail(format!("upstream.{name}"), "empty", expected);
            String::new()
        }
        None => {
            c.fail(format!("upstream.{name}"), "missing (required with `kind = \"quic\"`)", expected);
            String::new()
        }
    };
    let addresses = match &u.addresses {
        None => {
            c.fail(
                "upstream.addresses",
                "missing (required with `kind = \"quic\"`)",
                "at least one `ip:port` of the upstream's QUIC listener",
            );
            Vec::new()
        }
        Some(list) if list.is_empty() => {
            c.fail("upstream.addresses", "empty", "at least one `ip:port` of the upstream's QUIC listener");
            Vec::new()
        }
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, a)| c.addr(&format!("upstream.addresses[{i}]"), a))
            .collect(),
    };
    let server_name =
        required(c, "server_name", &u.server_name, "the DNS name on the upstream's certificate");
    let pem = "a PEM file path (from `edge-node certs`)";
    let ca = required(c, "ca", &u.ca, pem);
    let cert = required(c, "cert", &u.cert, pem);
    let key = required(c, "key", &u.key, pem);
    let quic = QuicUpstreamSettings { addresses, ca: c.path(&ca), cert: c.path(&cert), key: c.path(&key) };
    (UpstreamKind::Quic(quic), server_name)
}

fn kserve_upstream(c: &mut Checker, u: &UpstreamConfig) -> (UpstreamKind, String) {
    let expected_url = "an `http://host:port` URL of the KServe server, such as `http://10.0.0.7:8080`";
    let (url, server_name) = match &u.url {
        None => {
            c.fail("upstream.url", "missing (required with `kind = \"kserve\"`)", expected_url);
            (String::new(), String::new())
        }
        Some(url) => kserve_url(c, url, expected_url).unwrap_or_default(),
    };
    let model = match &u.model {
        None => {
            c.fail(
                "upstream.model",
                "missing (required with `kind = \"kserve\"`)",
                "the model's name on the KServe server",
            );
            String::new()
        }
        Some(m) => {
            // The name becomes a URL path segment: the usual name characters keep it one.
            c.name("upstream.model", m);
            m.clone()
        }
    };
    (UpstreamKind::Kserve(KserveUpstreamSettings { url, model }), server_name)
}

/// The normalised base URL (no trailing `/`) and its `host:port`, or `None` with the problem
/// recorded.
fn kserve_url(c: &mut Checker, value: &str, expected: &str) -> Option<(String, String)> {
    let url = match reqwest::Url::parse(value) {
        Ok(url) => url,
        Err(e) => {
            c.fail("upstream.url", format!("`{value}` is not a URL ({e})"), expected);
            return None;
        }
    };
    let problem = match url.scheme() {
        "http" if url.host_str().is_none() => Some("has no host".to_owned()),
        "http" if url.query().is_some() || url.fragment().is_some() => {
            Some("has a query or fragment; the node appends `/v2/models/{model}/infer`".to_owned())
        }
        "http" if !url.username().is_empty() || url.password().is_some() => {
            Some("carries credentials, which would be sent in clear".to_owned())
        }
        "http" => None,
        "https" => Some(
            "uses https, but this build's HTTP client has no TLS (terminate TLS in a proxy beside this node)"
                .to_owned(),
        ),
        other => Some(format!("has scheme `{other}`")),
    };
    if let Some(problem) = problem {
        c.fail("upstream.url", format!("`{value}` {problem}"), expected);
        return None;
    }
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    Some((url.as_str().trim_end_matches('/').to_owned(), format!("{host}:{port}")))
}
