//! The business API of longlink (docs/api.md): HTTP/JSON (axum) and gRPC (tonic) with the same
//! semantics, plus `GET /healthz`, `GET /openapi.json`, Prometheus `GET /metrics`, the node
//! summary `GET /v1/stats/summary`, message traces `GET /v1/trace/{id}` and the live
//! dashboard at `GET /`, the browser chat page at `GET /chat`, and the gates: dispatch `GET /v1/dispatch`, `GET /v1/gates` and
//! `POST /v1/gates/{id}/drain`; the black/white lists: `POST`/`GET /v1/bans`,
//! `DELETE /v1/bans/{id}` (over `longlink_guard::Guard`); devices' push tokens
//! `PUT`/`GET`/`DELETE /v1/devices/{appcode}/{uid}[/{device}]` and the push providers'
//! statistics `GET /v1/push-providers/stats` (over `longlink_rpc::notify::Notifications`).
//!
//! Business app-servers push s2c messages and read their delivery statistics, look up
//! presence, and consume the c2s messages routed to their topics. Every `/v1` call is
//! authorised by an API key ([`ApiKeys`]) scoped to appcodes.
//!
//! The API never reaches into other roles' internals: it works through the contracts in
//! [`ApiContext`] (logic's `PushService`, `Presence`, the bus's `TopicQueue` and `Routes`,
//! [`StatsSource`] for health, [`GateDirectory`] for the gates, `Notifications` for push
//! tokens). Each operation is one function in `ops`, called by both surfaces, so HTTP and gRPC
//! validate, authorise and answer alike.
//!
//! Modules: [`keys`] (API keys and scopes), [`error`] (the error table), [`gates`] (the gate
//! directory and the dispatch order), [`model`] (JSON bodies and their OpenAPI schemas), `http`
//! (axum routes, extractors, SSE, OpenAPI; [`openapi`]), `grpc` (the tonic service), `ops` (the
//! operations both call), [`pb`] (the generated protobuf code, client and server).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use longlink_bus::{Routes, TopicQueue};
use longlink_metrics::Registry;
use longlink_presence::Presence;
use longlink_rpc::push::PushService;
use longlink_rpc::trace::Ledger;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod chat;
pub mod error;
pub mod gates;
mod grpc;
mod http;
pub mod keys;
pub mod model;
mod ops;
pub mod tls;
pub mod tokens;

/// The gRPC messages, client and server generated from `proto/api.proto` (see
/// `tests/codegen.rs`).
#[allow(missing_docs, unreachable_pub, clippy::all)] // generated code: the .proto file carries the docs
pub mod pb {
    include!("gen/longlink.api.v1.rs");
}

pub use chat::{ChatSettings, DevTokens};
pub use error::{ApiError, ErrorKind};
pub use gates::{DrainStart, GateDirectory, GateStatus, NoGates};
pub use http::openapi::openapi;
pub use keys::{ApiKeys, KeyScope};
pub use tokens::{NoRevocations, RevokeFailure, RevokeOutcome, TokenRevoker};

/// A point-in-time view of the node, as `/healthz` reports it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// Open client connections (logged in or not).
    pub connections: u64,
    /// Sessions: logged in, or held for a RESUME after their link dropped (seed 004).
    pub sessions: u64,
}

/// Where the API reads the node's state from.
pub trait StatsSource: Send + Sync + 'static {
    /// The current figures.
    fn stats(&self) -> Stats;

    /// The node at a glance, for `GET /v1/stats/summary` (the dashboard, `longlink top`).
    fn summary(&self) -> model::SummaryBody;
}

/// Limits of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiLimits {
    /// Largest request body (HTTP) or message (gRPC), in bytes.
    pub max_body_bytes: usize,
    /// Largest push content, in bytes (`logic.max_content_bytes`).
    pub max_content_bytes: usize,
    /// Lease of consumed messages when the call names none.
    pub default_lease: Duration,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            max_content_bytes: 61_440,
            default_lease: Duration::from_secs(30),
        }
    }
}

/// What the API works with; cheap to clone.
#[derive(Clone)]
pub struct ApiContext {
    /// Logic's push side.
    pub push: Arc<dyn PushService>,
    /// Who is online.
    pub presence: Arc<dyn Presence>,
    /// The consuming side of the bus.
    pub queue: Arc<dyn TopicQueue>,
    /// The c2s routing table (to resolve and authorise topics).
    pub routes: Arc<Routes>,
    /// The API keys.
    pub keys: Arc<ApiKeys>,
    /// The node's figures for `/healthz` and `/v1/stats/summary`.
    pub stats: Arc<dyn StatsSource>,
    /// The delivery ledger, read by `GET /v1/trace/{id}`.
    pub ledger: Arc<dyn Ledger>,
    /// The node's metrics, encoded by `GET /metrics`.
    pub metrics: Arc<Registry>,
    /// The node's gates: dispatch, `GET /v1/gates`, drains ([`NoGates`] when it runs none).
    pub gates: Arc<dyn GateDirectory>,
    /// Token revocation, `POST /v1/tokens/revoke` ([`NoRevocations`] when the node has none).
    pub tokens: Arc<dyn TokenRevoker>,
    /// The black/white lists, `/v1/bans` (`Guard::in_memory` when the node keeps none).
    pub bans: Arc<longlink_guard::Guard>,
    /// Offline push notifications: devices' push tokens (`/v1/devices`) and the providers'
    /// statistics (`/v1/push-providers/stats`); `longlink_rpc::notify::NoNotifications` when
    /// the node has no `[push]` provider.
    pub notifications: Arc<dyn longlink_rpc::notify::Notifications>,
    /// Limits.
    pub limits: ApiLimits,
    /// The browser chat page's view of the node (`/chat`; default: no WebSocket, no dev login).
    pub chat: ChatSettings,
}

impl std::fmt::Debug for ApiContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiContext")
            .field("routes", &self.routes)
            .field("keys", &self.keys.len())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The `/healthz` answer from `source`.
pub(crate) fn health(source: &dyn StatsSource) -> model::HealthBody {
    let stats = source.stats();
    model::HealthBody {
        status: "ok".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        connections: stats.connections,
        sessions: stats.sessions,
    }
}

async fn healthz(State(source): State<Arc<dyn StatsSource>>) -> Json<model::HealthBody> {
    Json(health(source.as_ref()))
}

/// The health route alone (`GET /healthz`), as served before the business API existed.
pub fn router(source: Arc<dyn StatsSource>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(source)
}

/// Serves only `GET /healthz` on `listener` until `shutdown` is cancelled (the API before the
/// business routes; [`serve`] serves everything).
///
/// # Errors
/// The listener failed.
pub async fn serve_health(
    listener: TcpListener,
    source: Arc<dyn StatsSource>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(source))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Serves the HTTP API on `http` and, when given, the gRPC API on `grpc`, until `shutdown` is
/// cancelled. Open long-polls answer, SSE and gRPC consume streams end, and the call returns
/// once both servers have drained. If one server fails, the other is shut down too.
///
/// # Errors
/// A listener failed.
pub async fn serve(
    http: TcpListener,
    grpc: Option<TcpListener>,
    ctx: ApiContext,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_tls(http, grpc, ctx, None, shutdown).await
}

/// [`serve`], with both listeners speaking TLS (`config`, see [`tls::with_alpn`]) when
/// `tls` is given: HTTP/1.1 and HTTP/2 on the HTTP port, gRPC over HTTP/2 on the gRPC port.
///
/// # Errors
/// A listener failed.
pub async fn serve_tls(
    http: TcpListener,
    grpc: Option<TcpListener>,
    ctx: ApiContext,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // A child token: a failing server stops its sibling without cancelling the caller's token.
    let stop = shutdown.child_token();
    let shared = Arc::new(ops::Shared::new(ctx, stop.clone()));
    let http_server = {
        let stop = stop.clone();
        let app = http::app(Arc::clone(&shared));
        let tls = tls.clone();
        async move {
            let graceful = stop.clone().cancelled_owned();
            let result = match tls {
                Some(config) => {
                    let incoming = tls::TlsIncoming::new(http, config, stop.clone())?;
                    axum::serve(incoming, app)
                        .with_graceful_shutdown(graceful)
                        .await
                }
                None => {
                    // Small answers and SSE events go out at once instead of waiting on Nagle.
                    let http = axum::serve::ListenerExt::tap_io(http, |tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    axum::serve(http, app)
                        .with_graceful_shutdown(graceful)
                        .await
                }
            };
            stop.cancel();
            result
        }
    };
    let grpc_server = {
        let stop = stop.clone();
        let shared = Arc::clone(&shared);
        async move {
            let Some(listener) = grpc else {
                return Ok(());
            };
            let result = grpc::serve(listener, shared, tls, stop.clone()).await;
            stop.cancel();
            result
        }
    };
    let (http_result, grpc_result) = tokio::join!(http_server, grpc_server);
    http_result.and(grpc_result)
}
