//! What a reload changes while the node serves (SIGHUP and `POST /admin/reload` alike): the
//! node requests go to, the QUIC listener's certificate and allowlist, and the admin token.
//!
//! A reload reads everything it needs first (the new node's models and plugins, the
//! certificate files, the token file), so that a bad file refuses the whole reload, naming
//! it, and the node goes on serving the old config unchanged. Files are re-read even at the
//! same paths: rotating a certificate or a token in place is the usual way to change them.
//! What the listeners were started with (addresses, HTTP limits, the QUIC connection and
//! buffer limits) needs a restart; a reload that changes it is refused, saying so.

use std::sync::{Arc, RwLock};

use anyhow::Context;
use cascade_runtime::CurrentNode;
use cascade_runtime::config::{NodeSettings, ResolvedConfig};
use cascade_runtime::protocol::ProtocolLimits;
use cascade_runtime::transport::{Allowlist, TierServer, TlsIdentity};

use super::admin;

/// The parts of a running server a reload swaps, shared by the signal handler and the admin
/// API. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Live {
    pub(crate) current: CurrentNode,
    quic: Option<Arc<TierServer>>,
    admin_token: Arc<RwLock<Arc<str>>>,
}

impl Live {
    pub(crate) fn new(
        current: CurrentNode,
        quic: Option<Arc<TierServer>>,
        admin_token: Option<String>,
    ) -> Live {
        let token: Arc<str> = admin_token.unwrap_or_default().into();
        Live { current, quic, admin_token: Arc::new(RwLock::new(token)) }
    }

    /// The admin token in force.
    pub(crate) fn admin_token(&self) -> Arc<str> {
        self.admin_token.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Replaces the node with one built from `config`, and the QUIC identity, allowlist and
    /// admin token with the ones its files hold now; or changes nothing and says why.
    pub(crate) async fn reload(&self, config: ResolvedConfig) -> anyhow::Result<()> {
        let old = self.current.get();
        if let Some(what) = needs_restart(&old.config().settings, &config.settings) {
            anyhow::bail!(
                "reload: {what} changed, and listeners keep what they started with; restart the node"
            );
        }
        let settings = config.settings.clone();
        let token = match &settings.admin {
            Some(a) => Some(admin::read_token(&a.token_file).context("reload")?),
            None => None,
        };
        let identity = match &settings.quic_tls {
            Some(tls) => Some(
                TlsIdentity::from_files(&tls.cert, &tls.key, &tls.ca)
                    .context("reload: listeners.quic_cert, quic_key or quic_ca")?,
            ),
            None => None,
        };
        let node = tokio::task::block_in_place(|| old.successor(config))?;
        node.check_upstream(super::UPSTREAM_CHECK_TIMEOUT).await.context("reload")?;
        if let (Some(server), Some(identity)) = (&self.quic, &identity) {
            server
                .reconfigure(
                    identity,
                    Allowlist::from(&settings.quic_limits),
                    ProtocolLimits { max_frame_bytes: settings.quic_limits.max_frame_bytes },
                )
                .context("reload: listeners.quic_cert and quic_key")?;
        }
        if let Some(token) = token {
            *self.admin_token.write().unwrap_or_else(std::sync::PoisonError::into_inner) = token.into();
        }
        self.current.replace(node);
        tracing::info!("config reloaded");
        Ok(())
    }
}

/// What changed that only a restart can apply, if anything.
fn needs_restart(was: &NodeSettings, now: &NodeSettings) -> Option<&'static str> {
    let admin = |s: &NodeSettings| s.admin.as_ref().map(|a| a.addr);
    let quic_limits = |s: &NodeSettings| {
        let l = &s.quic_limits;
        (l.max_connections_per_peer, l.max_streams_per_connection, l.max_buffered_bytes)
    };
    [
        (was.http != now.http, "listeners.http"),
        (was.quic != now.quic, "listeners.quic"),
        (was.quic_tls.is_some() != now.quic_tls.is_some(), "the QUIC listener's certificate settings"),
        (admin(was) != admin(now), "listeners.admin"),
        (was.http_limits != now.http_limits, "a listeners.http_* limit"),
        (was.drain != now.drain, "listeners.drain_timeout_ms"),
        (quic_limits(was) != quic_limits(now), "a listeners.quic_max_* limit"),
    ]
    .into_iter()
    .find_map(|(changed, what)| changed.then_some(what))
}
