//! The accept loops — one per listener of the gate (TCP, TLS, WebSocket), sharing one
//! connection cap — with backoff on accept errors and one task per connection, which runs the
//! transport's handshakes (bounded by the login timeout) before the connection proper.

use std::sync::Arc;
use std::time::Duration;

use longlink_rpc::LogicService;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::GateShared;
use crate::connection::Connection;
use crate::transport::{self, GateListener, Transport};

pub(crate) async fn run(
    gate: Arc<GateShared>,
    listeners: Vec<GateListener>,
    logic: Arc<dyn LogicService>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(gate.config.max_connections.max(1)));
    let loops = listeners.into_iter().map(|listener| {
        accept_loop(
            gate.clone(),
            listener,
            logic.clone(),
            shutdown.clone(),
            permits.clone(),
            tracker.clone(),
        )
    });
    futures::future::join_all(loops).await;
    tracker.close();
    tracker.wait().await;
}

async fn accept_loop(
    gate: Arc<GateShared>,
    listener: GateListener,
    logic: Arc<dyn LogicService>,
    shutdown: CancellationToken,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
) {
    let GateListener {
        listener,
        transport,
        tls,
    } = listener;
    let mut backoff = Duration::from_millis(5);
    loop {
        // Take the permit before accepting: past the cap, clients wait in the backlog.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
            // A drain: no new connections; the open ones are moved away by the drainer.
            _ = gate.stop_accepting.cancelled() => {
                drop(permit);
                shutdown.cancelled().await;
                break;
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let connection =
                    Connection::new(gate.clone(), logic.clone(), shutdown.clone(), peer);
                let tracker_for_writer = tracker.clone();
                if transport == Transport::Tcp {
                    // No handshake: the task is the connection's own future, nothing around
                    // it (its size is what every idle connection keeps).
                    tracker.spawn(connection.run(
                        transport::Stream::Tcp(stream),
                        tracker_for_writer,
                        permit,
                    ));
                    continue;
                }
                let (gate, tls, shutdown) = (gate.clone(), tls.clone(), shutdown.clone());
                tracker.spawn(async move {
                    // Boxed: the handshake's state is large and over once the link is up.
                    let handshake = Box::pin(transport::establish(
                        stream,
                        transport,
                        tls.as_ref(),
                        gate.config.max_body_bytes,
                    ));
                    // A client that never finishes its handshake is a slowloris like one that
                    // never logs in: the same deadline bounds both.
                    let established = tokio::select! {
                        established = tokio::time::timeout(gate.config.login_timeout, handshake) => established,
                        _ = shutdown.cancelled() => return,
                    };
                    match established {
                        Ok(Ok(stream)) => connection.run(stream, tracker_for_writer, permit).await,
                        Ok(Err(err)) => handshake_failed(&gate, transport, peer, &err.to_string()),
                        Err(_) => handshake_failed(&gate, transport, peer, "timed out"),
                    }
                });
            }
            Err(err) => {
                // EMFILE and friends: wait a little instead of spinning.
                tracing::warn!(error = %err, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

fn handshake_failed(
    gate: &GateShared,
    transport: Transport,
    peer: std::net::SocketAddr,
    why: &str,
) {
    gate.metrics.handshake_failed(transport.label());
    // Scanners and plain-TCP clients on a TLS port are routine: debug, not warn.
    tracing::debug!(transport = transport.label(), peer.addr = %peer, error = why, "handshake failed");
}
