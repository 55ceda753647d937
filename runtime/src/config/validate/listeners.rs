//! Checks of `[listeners]`: the QUIC listener's identity files and limits, and the admin
//! listener with its token file. In a file of their own because each listener's fields are
//! checked together (all or none of a group, limits against the routes' request sizes).

use std::collections::BTreeMap;

use super::Checker;
use crate::config::schema::{ListenersConfig, NodeConfig};
use crate::config::{
    AdminSettings, FRAME_OVERHEAD_BYTES, MAX_REQUEST_BYTES, QuicLimits, QuicTlsSettings, RouteSettings,
};

/// What downstream nodes may make the QUIC listener hold; the frame limit comes from the
/// routes (see [`QuicLimits::max_frame_bytes`]).
pub(super) fn quic_limits(
    c: &mut Checker,
    l: &ListenersConfig,
    routes: &BTreeMap<String, RouteSettings>,
) -> QuicLimits {
    if let Some(allow) = &l.quic_allow {
        if allow.is_empty() {
            c.fail(
                "listeners.quic_allow",
                "empty: no node could escalate here",
                "at least one node name, or no `quic_allow` to admit every node the CA signed",
            );
        }
        for name in allow {
            if crate::transport::certs::check_name(name.strip_suffix('*').unwrap_or(name)).is_err() {
                c.fail(
                    "listeners.quic_allow",
                    format!("{name:?} is not a node name"),
                    "node names as given to `edge-node certs issue --name`, optionally ending in `*`",
                );
            }
        }
    }
    let request_bytes = |r: &RouteSettings| -> usize {
        let fixed: Option<usize> = r
            .inputs
            .iter()
            .map(|t| t.shape.iter().try_fold(t.dtype.size(), |n, d| d.and_then(|d| n.checked_mul(d))))
            .try_fold(0usize, |sum, n| n.and_then(|n| sum.checked_add(n)));
        match fixed {
            Some(bytes) if !r.inputs.is_empty() => bytes.min(MAX_REQUEST_BYTES),
            _ => MAX_REQUEST_BYTES,
        }
    };
    let buffered_mib = c.at_least_one("listeners.quic_max_buffered_mib", l.quic_max_buffered_mib);
    let max_frame_bytes = routes.values().map(request_bytes).max().unwrap_or(0) + FRAME_OVERHEAD_BYTES;
    if (u64::from(buffered_mib) << 20) < max_frame_bytes as u64 {
        c.fail(
            "listeners.quic_max_buffered_mib",
            format!("{buffered_mib} MiB cannot hold one whole request ({max_frame_bytes} bytes, from the routes' inputs)"),
            format!("at least {}", (max_frame_bytes >> 20) + 1),
        );
    }
    QuicLimits {
        allow: l.quic_allow.clone(),
        max_connections_per_peer: c
            .at_least_one("listeners.quic_max_connections_per_peer", l.quic_max_connections_per_peer),
        max_streams_per_connection: c
            .at_least_one("listeners.quic_max_streams_per_connection", l.quic_max_streams_per_connection),
        max_buffered_bytes: usize::try_from(u64::from(buffered_mib) << 20).unwrap_or(usize::MAX),
        max_frame_bytes,
    }
}

/// The admin listener and its token file: both or neither.
pub(super) fn admin(c: &mut Checker, raw: &NodeConfig) -> Option<AdminSettings> {
    let l = &raw.listeners;
    match (&l.admin, &l.admin_token_file) {
        (None, None) => None,
        (Some(_), None) => {
            c.fail(
                "listeners.admin_token_file",
                "missing",
                "a file holding the admin bearer token, since `listeners.admin` is set",
            );
            None
        }
        (None, Some(_)) => {
            c.fail(
                "listeners.admin_token_file",
                "set without `listeners.admin`",
                "no value, or an `admin` address",
            );
            None
        }
        (Some(addr), Some(file)) => {
            let addr = c.addr("listeners.admin", addr)?;
            Some(AdminSettings { addr, token_file: c.path(file) })
        }
    }
}

/// The QUIC listener's identity files: all three with `quic`, none without.
pub(super) fn quic_tls(c: &mut Checker, raw: &NodeConfig) -> Option<QuicTlsSettings> {
    let l = &raw.listeners;
    let fields = [("cert", &l.quic_cert), ("key", &l.quic_key), ("ca", &l.quic_ca)];
    if l.quic.is_none() {
        for (name, value) in fields {
            if value.is_some() {
                c.fail(
                    format!("listeners.quic_{name}"),
                    "set without `listeners.quic`",
                    "no value, or a `quic` address",
                );
            }
        }
        return None;
    }
    for (name, value) in fields {
        if value.is_none() {
            c.fail(
                format!("listeners.quic_{name}"),
                "missing",
                "a PEM file path (from `edge-node certs issue`), since `listeners.quic` is set",
            );
        }
    }
    match (&l.quic_cert, &l.quic_key, &l.quic_ca) {
        (Some(cert), Some(key), Some(ca)) => {
            Some(QuicTlsSettings { cert: c.path(cert), key: c.path(key), ca: c.path(ca) })
        }
        _ => None,
    }
}
