//! Observability routes: Prometheus `GET /metrics` and `GET /v1/stats/summary` (no key: they
//! hold no uid and no content, and the API listens on loopback by default), and
//! `GET /v1/trace/{id}` (a key covering one of the message's appcodes).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::errors::{ApiPath, ApiQuery, Auth};
use crate::error::ApiError;
use crate::model::{ErrorBody, SummaryBody, TraceBody, TraceQuery};
use crate::ops::{self, Shared};

/// The node's metrics in the Prometheus/OpenMetrics text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "observability",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text"))
)]
pub(crate) async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    match longlink_metrics::encode_text(&shared.ctx.metrics) {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => ApiError::unavailable("metrics could not be encoded").into_response(),
    }
}

/// The node at a glance: connections, throughput, delivery rate, latency percentiles,
/// appcodes, gates and the last two minutes per second.
#[utoipa::path(
    get,
    path = "/v1/stats/summary",
    tag = "observability",
    responses((status = 200, description = "The summary", body = SummaryBody))
)]
pub(crate) async fn summary(State(shared): State<Arc<Shared>>) -> Json<SummaryBody> {
    Json(shared.ctx.stats.summary())
}

/// A message's trail: every stage with its time, by log_id or msgid.
#[utoipa::path(
    get,
    path = "/v1/trace/{id}",
    tag = "observability",
    params(("id" = u64, Path, description = "A log_id or a msgid"), TraceQuery),
    responses(
        (status = 200, description = "The trace", body = TraceBody),
        (status = 400, description = "Invalid argument", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "Not in the ledger (or not the key's)", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn trace(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
    ApiPath(id): ApiPath<u64>,
    ApiQuery(query): ApiQuery<TraceQuery>,
) -> Result<Json<TraceBody>, ApiError> {
    let by = ops::trace_by(query.by.as_deref())?;
    let trace = ops::trace(&shared, &scope, id, by)?;
    Ok(Json(trace.into()))
}
