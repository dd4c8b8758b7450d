//! The accept loop: a connection cap, backoff on accept errors, one task per connection.

use std::sync::Arc;
use std::time::Duration;

use longlink_rpc::LogicService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::GateShared;
use crate::connection::Connection;

pub(crate) async fn run(
    gate: Arc<GateShared>,
    listener: TcpListener,
    logic: Arc<dyn LogicService>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(gate.config.max_connections.max(1)));
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
                tracker.spawn(async move {
                    connection.run(stream, &tracker_for_writer).await;
                    drop(permit);
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
    drop(listener);
    tracker.close();
    tracker.wait().await;
}
