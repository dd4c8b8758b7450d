//! The HTTP/JSON surface: the axum router of every route in docs/api.md.
//!
//! Handlers are thin: they extract (key, path, query, body — with JSON errors, see
//! [`errors`]), call the operation in `ops`, and render its answer. `/healthz` and
//! `/openapi.json` need no key.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::model::HealthBody;
use crate::ops::Shared;

pub(crate) mod bans;
pub(crate) mod chat;
pub(crate) mod consume;
pub(crate) mod dashboard;
pub(crate) mod deadletter;
pub(crate) mod devices;
pub(crate) mod errors;
pub(crate) mod gates;
pub(crate) mod observe;
pub(crate) mod openapi;
pub(crate) mod presence;
pub(crate) mod push;
pub(crate) mod tokens;

/// Node health: status, version, connections and sessions.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The node is up", body = HealthBody))
)]
pub(crate) async fn healthz(State(shared): State<Arc<Shared>>) -> Json<HealthBody> {
    Json(crate::health(shared.ctx.stats.as_ref()))
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi::openapi())
}

/// Every HTTP route over `shared`.
pub(crate) fn app(shared: Arc<Shared>) -> Router {
    let max_body = shared.ctx.limits.max_body_bytes;
    Router::new()
        .route("/", get(dashboard::index))
        .route("/dashboard/{file}", get(dashboard::asset))
        .route("/chat", get(chat::index))
        .route("/chat/", get(chat::index))
        .route("/chat/config.json", get(chat::config))
        .route("/chat/dev-token", post(chat::dev_token))
        .route("/chat/{file}", get(chat::asset))
        .route("/healthz", get(healthz))
        .route("/metrics", get(observe::metrics))
        .route("/openapi.json", get(openapi_json))
        .route("/v1/stats/summary", get(observe::summary))
        .route("/v1/trace/{id}", get(observe::trace))
        .route("/v1/push", post(push::push))
        .route("/v1/push/{push_id}", get(push::push_stats))
        .route("/v1/stats/delivery", get(push::delivery))
        .route("/v1/presence/query", post(presence::query))
        .route("/v1/presence/{appcode}", get(presence::counts))
        .route("/v1/presence/{appcode}/{uid}", get(presence::user))
        .route("/v1/consume", get(consume::long_poll))
        .route("/v1/consume/sse", get(consume::sse))
        .route("/v1/consume/ack", post(consume::ack))
        .route("/v1/consume/nack", post(consume::nack))
        .route("/v1/deadletter", get(deadletter::list))
        .route("/v1/deadletter/replay", post(deadletter::replay))
        .route("/v1/topics", get(deadletter::topics))
        .route("/v1/dispatch", get(gates::dispatch))
        .route("/v1/gates", get(gates::list))
        .route("/v1/gates/{id}/drain", post(gates::drain))
        .route("/v1/bans", post(bans::add).get(bans::list))
        .route("/v1/bans/{id}", axum::routing::delete(bans::remove))
        .route("/v1/tokens/revoke", post(tokens::revoke))
        .route(
            "/v1/devices/{appcode}/{uid}/{device}",
            get(devices::get).put(devices::put).delete(devices::remove),
        )
        .route(
            "/v1/devices/{appcode}/{uid}/{device}/tokens",
            post(devices::register),
        )
        .route("/v1/devices/{appcode}/{uid}", get(devices::list))
        .route("/v1/push-providers/stats", get(devices::provider_stats))
        .fallback(errors::unknown_route)
        .method_not_allowed_fallback(errors::unknown_route)
        // Read by the body extractor, which turns an excess into the JSON 413.
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(shared)
}
