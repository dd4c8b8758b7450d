//! Push routes: `POST /v1/push`, `GET /v1/push/{push_id}`, `GET /v1/stats/delivery`.
//!
//! The JSON body names the content as text (`content`) or base64 (`content_base64`) and the
//! content type by name; both are decoded here, every other check is in `ops::push`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use bytes::Bytes;

use super::errors::{ApiJson, ApiPath, ApiQuery, Auth};
use crate::error::ApiError;
use crate::model::{
    DeliveryCountersBody, DeliveryQuery, ErrorBody, PushAcceptedBody, PushBody, PushStatsBody,
};
use crate::ops::{self, PushCall, Shared};

/// The surface-neutral push of a JSON body.
fn push_call(body: PushBody) -> Result<PushCall, ApiError> {
    let content = match (body.content, body.content_base64) {
        (Some(text), None) => Bytes::from(text),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map(Bytes::from)
            .map_err(|err| ApiError::invalid_argument(format!("content_base64: {err}")))?,
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_argument(
                "give either `content` or `content_base64`, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::invalid_argument(
                "the body needs `content` or `content_base64`",
            ));
        }
    };
    Ok(PushCall {
        appcode: body.appcode,
        uids: body.uids,
        all: body.all.unwrap_or(false),
        msgtype: body.msgtype,
        content,
        content_type: body.content_type.unwrap_or_default().wire(),
        persist: body.persist.unwrap_or(true),
        ttl_secs: body.ttl_secs.unwrap_or(0),
        from: body.from,
        log_id: body.log_id.filter(|id| *id != 0),
    })
}

/// Start a push; the fan-out runs in the background.
#[utoipa::path(
    post,
    path = "/v1/push",
    tag = "push",
    request_body = PushBody,
    responses(
        (status = 202, description = "Accepted; the fan-out runs in the background", body = PushAcceptedBody),
        (status = 400, description = "Invalid argument", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key does not cover the appcode", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 503, description = "Unavailable or overloaded; retry", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn push(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
    ApiJson(body): ApiJson<PushBody>,
) -> Result<(StatusCode, Json<PushAcceptedBody>), ApiError> {
    let call = push_call(body)?;
    let accepted = ops::push(&shared, &scope, call).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Delivery statistics of one push. A push of an appcode outside the key's scope is
/// reported as unknown (404).
#[utoipa::path(
    get,
    path = "/v1/push/{push_id}",
    tag = "push",
    params(("push_id" = u64, Path, description = "The id `POST /v1/push` answered")),
    responses(
        (status = 200, description = "Statistics", body = PushStatsBody),
        (status = 400, description = "Invalid push id", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "Unknown push id (or of another appcode)", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn push_stats(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
    ApiPath(push_id): ApiPath<u64>,
) -> Result<Json<PushStatsBody>, ApiError> {
    let stats = ops::push_stats(&shared, &scope, push_id).await?;
    Ok(Json(stats.into()))
}

/// Delivery counters per (appcode, msgtype) for the key's appcodes, since the node started.
#[utoipa::path(
    get,
    path = "/v1/stats/delivery",
    tag = "push",
    params(DeliveryQuery),
    responses(
        (status = 200, description = "Counters", body = DeliveryCountersBody),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key does not cover the appcode", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn delivery(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> Result<Json<DeliveryCountersBody>, ApiError> {
    ops::delivery_counters(&shared, &scope, query.appcode)
        .await
        .map(Json)
}
