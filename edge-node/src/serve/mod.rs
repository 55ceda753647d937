//! `edge-node serve`: a node's HTTP front door and QUIC listener around one runtime [`Node`].
//!
//! - [`kserve`]: KServe v2 REST over it.
//! - [`admin`]: the admin API (mode pinning, reload) on a listener of its own.
//! - `live`: what a reload swaps in place (the node, QUIC certificate and allowlist,
//!   admin token).
//! - [`listener`]: the accept loop both listeners run on, with header, body and idle
//!   timeouts, a connection cap and a bounded drain ([`ListenerLimits`]).
//!
//! [`Server::start`] binds both listeners; [`Server::shutdown`] stops accepting and drains the
//! requests in flight, for a bounded time. `run` does that for the CLI, shutting down on
//! SIGTERM or ctrl-c.

pub mod admin;
mod head;
pub mod kserve;
pub mod listener;
mod live;
mod per_core;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use cascade_runtime::config::{self, ResolvedConfig};
use cascade_runtime::transport::TierServer;
use cascade_runtime::{CurrentNode, Node};
use tokio::sync::oneshot;

pub use listener::ListenerLimits;
use listener::Serving;
use live::Live;
use per_core::PerCore;

/// How long start and reload wait for a KServe upstream's model metadata, to check the
/// routes' answer contracts against it, before going on without it.
const UPSTREAM_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A running node: its listeners and the tasks serving them.
pub struct Server {
    live: Live,
    http_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    quic: Option<Arc<TierServer>>,
    http: PerCore,
    admin: Option<Serving>,
}

impl Server {
    /// Builds the node from `config` and starts its listeners (port 0 picks a free port; see
    /// [`Server::http_addr`] and [`Server::quic_addr`]), with the limits its `[listeners]`
    /// section sets. Must be called inside a tokio runtime.
    pub async fn start(config: ResolvedConfig) -> anyhow::Result<Server> {
        let settings = config.settings.clone();
        let limits = ListenerLimits::from(&settings);
        let admin_token = match &settings.admin {
            Some(admin) => Some(admin::read_token(&admin.token_file)?),
            None => None,
        };
        // Models and plugins compile here, which blocks: keep it off the runtime's workers.
        let node = tokio::task::block_in_place(|| Node::new(config))?;
        node.check_upstream(UPSTREAM_CHECK_TIMEOUT).await?;
        let node = CurrentNode::new(node);
        let quic = node.listen_quic()?.map(Arc::new);
        let live = Live::new(node.clone(), quic.clone(), admin_token);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let (http_addr, http) =
            PerCore::spawn("http", settings.http, kserve::router(node.clone()), limits, cores)
                .with_context(|| format!("cannot bind http listener on {}", settings.http))?;
        let (admin_addr, admin) = match &settings.admin {
            Some(admin) => {
                let bound = tokio::net::TcpListener::bind(admin.addr)
                    .await
                    .with_context(|| format!("cannot bind admin listener on {}", admin.addr));
                match bound.and_then(|l| Ok((l.local_addr()?, l))) {
                    Ok((addr, l)) => {
                        (Some(addr), Some(Serving::spawn("admin", l, admin::router(live.clone()), limits)))
                    }
                    Err(e) => {
                        let _ = http.shutdown().await;
                        return Err(e);
                    }
                }
            }
            None => (None, None),
        };
        tracing::info!(node = node.get().name(), %http_addr, quic = ?quic.as_ref().map(|q| q.local_addr()), ?admin_addr, "serving");
        Ok(Server { live, http_addr, admin_addr, quic, http, admin })
    }

    /// The node new requests go to.
    pub fn node(&self) -> Arc<Node> {
        self.live.current.get()
    }

    /// Swaps in a node built from `config` (plugins, models, thresholds, limits) without
    /// dropping requests: those running finish on the old node. Certificate and token files
    /// are read again, so rotated ones take effect; listener addresses and limits need a
    /// restart, and a reload that changes them is refused. Metrics and a pinned mode carry
    /// over; cache and admission start afresh with the new node.
    pub async fn reload(&self, config: ResolvedConfig) -> anyhow::Result<()> {
        self.live.reload(config).await
    }

    /// Where clients reach the HTTP front door.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where the admin API listens, if it is enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Where downstream nodes reach the QUIC listener, if there is one.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.quic.as_ref().map(|q| q.local_addr())
    }

    /// Stops accepting on every listener and lets the requests and escalations in flight
    /// finish (up to `listeners.drain_timeout_ms`, after which their connections are
    /// closed). The listeners drain together: an escalation from a downstream node is
    /// answered like a client's request.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let admin = async {
            match self.admin {
                Some(admin) => admin.shutdown().await,
                None => Ok(()),
            }
        };
        let quic = async {
            if let Some(quic) = &self.quic {
                quic.shutdown().await;
            }
        };
        let (http, admin, ()) = tokio::join!(self.http.shutdown(), admin, quic);
        http?;
        admin
    }
}

/// `edge-node serve --config F`: serves until SIGTERM or ctrl-c, then drains. SIGHUP reloads
/// the config file; a config that fails to load is logged and the node keeps serving.
/// With `exit_with_parent`, the node also shuts down once its standard input closes.
pub async fn run(config_path: &Path, exit_with_parent: bool) -> anyhow::Result<()> {
    let config = config::load(config_path)?.resolve()?;
    let server = Server::start(config).await?;
    println!("serving http on {}", server.http_addr());
    if let Some(quic) = server.quic_addr() {
        println!("accepting escalations over quic on {quic}");
    }
    if let Some(admin) = server.admin_addr() {
        println!("admin api on {admin}");
    }
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let parent_gone = parent_gone(exit_with_parent);
    tokio::pin!(parent_gone);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = &mut parent_gone => {
                tracing::info!("standard input closed: the parent that started this node is gone");
                break;
            }
            () = hangup() => {
                let loaded = config::load(config_path).and_then(|c| c.resolve());
                match loaded {
                    Ok(config) => {
                        if let Err(e) = server.reload(config).await {
                            tracing::error!(error = %e, "reload refused; still serving the old config");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "reload: config invalid; still serving the old config"),
                }
            }
        }
    }
    tracing::info!("shutting down: draining requests in flight");
    server.shutdown().await
}

/// Resolves once standard input reaches its end (the process holding the pipe's other end
/// closed it or exited); never, unless `watch`.
async fn parent_gone(watch: bool) {
    if !watch {
        return std::future::pending().await;
    }
    let (eof, closed) = oneshot::channel::<()>();
    // A plain thread, not the blocking pool: the runtime waits for its blocking tasks when
    // it shuts down, and this read returns only when the parent goes.
    let spawned = std::thread::Builder::new().name("parent-watch".into()).spawn(move || {
        use std::io::Read;
        let mut sink = [0u8; 256];
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = eof.send(());
    });
    match spawned {
        Ok(_) => {
            let _ = closed.await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch standard input; the node may outlive its parent");
            std::future::pending::<()>().await;
        }
    }
}

/// Resolves on each SIGHUP (never on platforms without it).
async fn hangup() {
    #[cfg(unix)]
    {
        use std::sync::OnceLock;
        use tokio::sync::Mutex;
        // One signal stream for the process, so no SIGHUP between two waits is lost.
        static HUP: OnceLock<Option<Mutex<tokio::signal::unix::Signal>>> = OnceLock::new();
        let hup = HUP.get_or_init(|| {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP"))
                .ok()
                .map(Mutex::new)
        });
        if let Some(hup) = hup {
            hup.lock().await.recv().await;
            return;
        }
    }
    std::future::pending::<()>().await;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
