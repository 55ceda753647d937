//! The HTTP front door served by one single-threaded runtime per core, each accepting on a
//! socket of its own bound to the same address (`SO_REUSEPORT`: the kernel spreads new
//! connections over them). A request then lives on one thread from accept to answer, plugin
//! included, and no worker wakes another to steal it: what a multi-threaded runtime's work
//! stealing costs in context switches per request (`docs/performance.md`). The connection
//! cap and the refusal budget are shared, so the cap is the listener's whatever the spread.

use std::net::SocketAddr;

use axum::Router;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;

use super::listener::{Caps, ListenerLimits, accept_loop};

/// Pending connections per socket.
const BACKLOG: u32 = 1024;

/// A listener served by `threads` single-threaded runtimes; [`PerCore::shutdown`] drains them.
pub(crate) struct PerCore {
    name: &'static str,
    stops: Vec<oneshot::Sender<()>>,
    done: Vec<oneshot::Receiver<()>>,
}

impl PerCore {
    /// Binds `threads` sockets to `addr` (port 0: one free port for all) and serves `app` on
    /// each from a thread of its own. Returns the address bound.
    pub(crate) fn spawn(
        name: &'static str,
        addr: SocketAddr,
        app: Router,
        limits: ListenerLimits,
        threads: usize,
    ) -> std::io::Result<(SocketAddr, PerCore)> {
        let first = reuse_port(addr)?;
        let addr = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..threads.max(1) {
            sockets.push(reuse_port(addr)?);
        }
        let caps = Caps::new(&limits);
        let (mut stops, mut done) = (Vec::new(), Vec::new());
        for (i, socket) in sockets.into_iter().enumerate() {
            let (stop, stopped) = oneshot::channel();
            let (finished, finish) = oneshot::channel::<()>();
            let (app, caps) = (app.clone(), caps.clone());
            std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
                let served = runtime.and_then(|runtime| {
                    runtime.block_on(async {
                        let listener = TcpListener::from_std(socket)?;
                        accept_loop(name, listener, app, limits, caps, stopped).await;
                        Ok(())
                    })
                });
                if let Err(e) = served {
                    tracing::error!(
                        listener = name,
                        thread = i,
                        error = %e,
                        "this thread stopped accepting; the listener's other threads go on (restart the node to get it back)"
                    );
                }
                let _ = finished.send(());
            })?;
            stops.push(stop);
            done.push(finish);
        }
        Ok((addr, PerCore { name, stops, done }))
    }

    /// Stops accepting on every socket and drains each (see [`super::listener::Serving::shutdown`]).
    pub(crate) async fn shutdown(self) -> anyhow::Result<()> {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for done in self.done {
            done.await
                .map_err(|_| anyhow::anyhow!("{} listener thread ended without draining", self.name))?;
        }
        Ok(())
    }
}

/// A listening socket on `addr` that other sockets of this process may bind too.
fn reuse_port(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)?.into_std()
}
