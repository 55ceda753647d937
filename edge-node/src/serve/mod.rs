//! `edge-node serve`: a node's HTTP front door and QUIC listener around one [`Node`].
//!
//! - [`node`]: the request path without HTTP (admission, cache, sandbox, policy, escalation).
//! - [`http`]: KServe v2 REST over it.
//!
//! [`Server::start`] binds both listeners; [`Server::shutdown`] stops accepting and drains the
//! requests in flight. `run` does that for the CLI, shutting down on SIGTERM or ctrl-c.

pub mod http;
pub mod node;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use cascade_runtime::config::{self, ResolvedConfig};
use cascade_runtime::transport::TierServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use node::{Degraded, Node, NodeError, Reply, ServeError};

/// A running node: its listeners and the task serving HTTP.
pub struct Server {
    node: Arc<Node>,
    http_addr: SocketAddr,
    quic: Option<TierServer>,
    stop: Option<oneshot::Sender<()>>,
    http: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Builds the node from `config` and starts its listeners (port 0 picks a free port; see
    /// [`Server::http_addr`] and [`Server::quic_addr`]). Must be called inside a tokio runtime.
    pub async fn start(config: ResolvedConfig) -> anyhow::Result<Server> {
        let http_listen = config.settings.http;
        // Models and plugins compile here, which blocks: keep it off the runtime's workers.
        let node = tokio::task::block_in_place(|| Node::new(config))?;
        let quic = node.listen_quic()?;
        let listener = tokio::net::TcpListener::bind(http_listen)
            .await
            .with_context(|| format!("cannot bind http listener on {http_listen}"))?;
        let http_addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = http::router(node.clone());
        let http = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(node = node.name(), %http_addr, quic = ?quic.as_ref().map(TierServer::local_addr), "serving");
        Ok(Server { node, http_addr, quic, stop: Some(stop), http })
    }

    /// The node behind the listeners.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Where clients reach the HTTP front door.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
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
        (&mut self.http).await.context("http task")?.context("http server")?;
        if let Some(quic) = self.quic.take() {
            quic.shutdown().await;
        }
        Ok(())
    }
}

/// `edge-node serve --config F`: serves until SIGTERM or ctrl-c, then drains.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = config::load(config_path)?.resolve()?;
    let server = Server::start(config).await?;
    println!("serving http on {}", server.http_addr());
    if let Some(quic) = server.quic_addr() {
        println!("accepting escalations over quic on {quic}");
    }
    shutdown_signal().await;
    tracing::info!("shutting down: draining requests in flight");
    server.shutdown().await
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
