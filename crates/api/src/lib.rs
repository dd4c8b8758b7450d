//! The HTTP API of longlink, served by axum: today `GET /healthz`; push, presence, stats,
//! `/metrics` and the dashboard join it as their issues land.
//!
//! The API never reaches into other roles' internals: it reads what it shows through
//! [`StatsSource`], which the server implements over the gate and presence.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A point-in-time view of the node, as `/healthz` reports it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// Open client connections (logged in or not).
    pub connections: u64,
    /// Logged-in sessions.
    pub sessions: u64,
}

/// Where the API reads the node's state from.
pub trait StatsSource: Send + Sync + 'static {
    /// The current figures.
    fn stats(&self) -> Stats;
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    #[serde(flatten)]
    stats: Stats,
}

async fn healthz(State(source): State<Arc<dyn StatsSource>>) -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        stats: source.stats(),
    })
}

/// The API's routes.
pub fn router(source: Arc<dyn StatsSource>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(source)
}

/// Serves the API on `listener` until `shutdown` is cancelled.
///
/// # Errors
/// The listener failed.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn StatsSource>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(source))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
