//! `edge-node serve`: a node's HTTP front door and QUIC listener around one runtime [`Node`].
//!
//! - [`kserve`]: KServe v2 REST over it.
//! - [`admin`]: the admin API (mode pinning, reload) on a listener of its own.
//!
//! [`Server::start`] binds both listeners; [`Server::shutdown`] stops accepting and drains the
//! requests in flight. `run` does that for the CLI, shutting down on SIGTERM or ctrl-c.

pub mod admin;
pub mod kserve;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use cascade_runtime::config::{self, ResolvedConfig};
use cascade_runtime::transport::TierServer;
use cascade_runtime::{CurrentNode, Node};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running node: its listeners and the task serving HTTP.
pub struct Server {
    node: CurrentNode,
    http_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    quic: Option<TierServer>,
    stop: Option<oneshot::Sender<()>>,
    stop_admin: tokio::sync::broadcast::Sender<()>,
    http: JoinHandle<std::io::Result<()>>,
}

/// Binds the admin listener and serves it until `stop` fires.
async fn start_admin(
    node: CurrentNode,
    settings: &config::AdminSettings,
    mut stop: tokio::sync::broadcast::Receiver<()>,
) -> anyhow::Result<SocketAddr> {
    let token = admin::read_token(&settings.token_file)?;
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .with_context(|| format!("cannot bind admin listener on {}", settings.addr))?;
    let addr = listener.local_addr()?;
    let app = admin::router(node, token);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.recv().await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    Ok(addr)
}

impl Server {
    /// Builds the node from `config` and starts its listeners (port 0 picks a free port; see
    /// [`Server::http_addr`] and [`Server::quic_addr`]). Must be called inside a tokio runtime.
    pub async fn start(config: ResolvedConfig) -> anyhow::Result<Server> {
        let http_listen = config.settings.http;
        // Models and plugins compile here, which blocks: keep it off the runtime's workers.
        let node = CurrentNode::new(tokio::task::block_in_place(|| Node::new(config))?);
        let quic = node.listen_quic()?;
        let listener = tokio::net::TcpListener::bind(http_listen)
            .await
            .with_context(|| format!("cannot bind http listener on {http_listen}"))?;
        let http_addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let (stop_admin, _) = tokio::sync::broadcast::channel::<()>(1);
        let app = kserve::router(node.clone());
        let http = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        let admin_addr = match node.get().config().settings.admin.clone() {
            Some(settings) => Some(start_admin(node.clone(), &settings, stop_admin.subscribe()).await?),
            None => None,
        };
        tracing::info!(node = node.get().name(), %http_addr, quic = ?quic.as_ref().map(TierServer::local_addr), ?admin_addr, "serving");
        Ok(Server { node, http_addr, admin_addr, quic, stop: Some(stop), stop_admin, http })
    }

    /// The node new requests go to.
    pub fn node(&self) -> Arc<Node> {
        self.node.get()
    }

    /// Swaps in a node built from `config` (plugins, models, thresholds, limits) without
    /// dropping requests: those running finish on the old node. Listener addresses and the
    /// QUIC identity cannot change this way (restart for that). Metrics and a pinned mode
    /// carry over; cache and admission start afresh with the new node.
    pub async fn reload(&self, config: ResolvedConfig) -> anyhow::Result<()> {
        reload(&self.node, config).await
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
        self.quic.as_ref().map(TierServer::local_addr)
    }

    /// Stops accepting, waits for HTTP requests in flight to be answered, then closes the
    /// QUIC listener.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.stop_admin.send(());
        (&mut self.http).await.context("http task")?.context("http server")?;
        if let Some(quic) = self.quic.take() {
            quic.shutdown().await;
        }
        Ok(())
    }
}

/// Replaces the node `current` holds with one built from `config` (see [`Server::reload`]).
pub(crate) async fn reload(current: &CurrentNode, config: ResolvedConfig) -> anyhow::Result<()> {
    let old = current.get();
    let (was, now) = (&old.config().settings, &config.settings);
    let same_tls = match (&was.quic_tls, &now.quic_tls) {
        (Some(a), Some(b)) => (&a.cert, &a.key, &a.ca) == (&b.cert, &b.key, &b.ca),
        (None, None) => true,
        _ => false,
    };
    let admin = |s: &config::NodeSettings| s.admin.as_ref().map(|a| a.addr);
    if was.http != now.http || was.quic != now.quic || !same_tls || admin(was) != admin(now) {
        anyhow::bail!(
            "reload: listeners (http, quic and its certificate files, admin) cannot change; restart the node"
        );
    }
    let node = tokio::task::block_in_place(|| old.successor(config))?;
    current.replace(node);
    tracing::info!("config reloaded");
    Ok(())
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
