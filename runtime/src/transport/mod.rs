//! The QUIC transport between tiers: mutual TLS, one long-lived connection per upstream
//! address, one bidirectional stream per escalation, deadlines enforced on both sides.
//!
//! The frames themselves come from [`crate::protocol`]; this module only moves them.
//!
//! - [`TlsIdentity`]: a node's certificate chain and key plus the deployment CA it trusts.
//!   Both sides present a certificate signed by that CA and refuse a peer that does not.
//!   [`certs::Ca`] makes such a CA and its node certificates.
//! - [`TierServer`]: accepts escalations and hands each decoded request, with its deadline,
//!   to an async [`Handler`].
//! - [`TierClient`]: sends escalations to one upstream address over one connection,
//!   reconnecting with exponential backoff when it is lost.
//!
//! 0-RTT is disabled on both sides: an escalation replayed by an attacker would run the
//! upstream model twice and could be answered twice, so the round trip it saves (only on
//! reconnection, as connections are long-lived) is not worth it.

pub mod certs;
mod client;
mod peer;
mod server;
mod tls;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use client::{ClientConfig, Response, TierClient};
pub use peer::{Allowlist, PeerName};
pub use server::{CONNECTION_WINDOW_FRAMES, Handler, RequestContext, ServerConfig, TierServer};
pub use tls::TlsIdentity;

use crate::protocol::ProtocolError;

/// ALPN protocol id, so a node never mistakes another QUIC service for an upstream.
pub const ALPN: &[u8] = b"cascade-tier/1";

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A certificate, key or CA file could not be read or used.
    #[error("tls identity: {0}")]
    Tls(String),
    /// The UDP socket could not be bound.
    #[error("cannot bind quic endpoint on {addr}: {cause}")]
    Bind {
        /// Address asked for.
        addr: std::net::SocketAddr,
        /// The socket error.
        cause: std::io::Error,
    },
    /// The connection to the upstream could not be established (unreachable, handshake or
    /// certificate refused).
    #[error("cannot connect to upstream {addr} ({server_name}): {reason}")]
    Connect {
        /// Upstream address.
        addr: std::net::SocketAddr,
        /// Name the upstream's certificate must carry.
        server_name: String,
        /// What failed.
        reason: String,
    },
    /// A recent connection attempt failed and the backoff has not elapsed yet.
    #[error("upstream {addr} is backing off after a failed connection, next attempt in {retry_in:?}")]
    Backoff {
        /// Upstream address.
        addr: std::net::SocketAddr,
        /// Time until the next attempt is allowed.
        retry_in: Duration,
    },
    /// The connection or stream broke during the exchange.
    #[error("connection to upstream {addr} lost: {reason}")]
    ConnectionLost {
        /// Upstream address.
        addr: std::net::SocketAddr,
        /// What broke.
        reason: String,
    },
    /// The deadline passed before the upstream answered.
    #[error("deadline exceeded waiting for upstream {addr}")]
    DeadlineExceeded {
        /// Upstream address.
        addr: std::net::SocketAddr,
    },
    /// The peer sent bytes that are not a valid frame.
    #[error("upstream {addr} sent an invalid frame: {source}")]
    Protocol {
        /// Upstream address.
        addr: std::net::SocketAddr,
        /// The framing error.
        source: ProtocolError,
    },
    /// The request could not be encoded (too large for the frame limit).
    #[error("cannot encode request: {0}")]
    Encode(ProtocolError),
    /// The peer answered with a frame that does not answer a request (a request frame, or an
    /// answer for another id).
    #[error("upstream {addr} answered with an unexpected frame: {what}")]
    UnexpectedFrame {
        /// Upstream address.
        addr: std::net::SocketAddr,
        /// What was received.
        what: String,
    },
}

impl TransportError {
    /// Whether the same request may succeed if sent again (to this or another upstream).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            TransportError::Connect { .. }
                | TransportError::Backoff { .. }
                | TransportError::ConnectionLost { .. }
        )
    }
}

/// Microseconds since the Unix epoch (for timestamps in logs and records).
pub fn unix_micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_micros().min(u64::MAX.into()) as u64).unwrap_or(0)
}

/// Transport settings shared by both sides.
fn transport_config(keep_alive: Duration, idle_timeout: Duration) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(keep_alive));
    // An idle timeout the QUIC varint cannot hold falls back to quinn's default.
    if let Ok(idle) = quinn::IdleTimeout::try_from(idle_timeout) {
        t.max_idle_timeout(Some(idle));
    }
    t
}

/// Why reading a frame from a stream failed.
enum ReadFailure {
    /// The bytes were not a valid frame.
    Protocol(ProtocolError),
    /// The stream broke or ended before a frame.
    Stream(String),
}

/// Reads one frame from a stream, feeding the decoder chunks as they arrive.
async fn read_frame(
    recv: &mut quinn::RecvStream,
    limits: &crate::protocol::ProtocolLimits,
) -> Result<crate::protocol::Frame, ReadFailure> {
    let mut decoder = crate::protocol::FrameDecoder::new(*limits);
    loop {
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => {
                let mut bytes = &chunk.bytes[..];
                if let Some(frame) = decoder.decode(&mut bytes).map_err(ReadFailure::Protocol)? {
                    return Ok(frame);
                }
            }
            Ok(None) => {
                decoder.finish().map_err(ReadFailure::Protocol)?;
                return Err(ReadFailure::Stream("stream ended before a frame".into()));
            }
            Err(e) => return Err(ReadFailure::Stream(e.to_string())),
        }
    }
}
