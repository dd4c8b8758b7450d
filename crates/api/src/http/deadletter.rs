//! Dead-letter and topic routes: `GET /v1/deadletter`, `POST /v1/deadletter/replay`,
//! `GET /v1/topics`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::errors::{ApiJson, ApiQuery, Auth};
use crate::error::ApiError;
use crate::model::{
    DeadLetterQuery, ErrorBody, MessagesBody, ReplayBody, ReplayedBody, TopicsBody,
};
use crate::ops::{self, Shared};

/// Dead-lettered messages of a topic with id > `after`, in id order.
#[utoipa::path(
    get,
    path = "/v1/deadletter",
    tag = "consume",
    params(DeadLetterQuery),
    responses(
        (status = 200, description = "Dead-lettered messages", body = MessagesBody),
        (status = 400, description = "Invalid argument", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key does not cover an appcode routed to the topic", body = ErrorBody),
        (status = 404, description = "Unknown topic", body = ErrorBody),
        (status = 503, description = "Bus unavailable", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
    ApiQuery(query): ApiQuery<DeadLetterQuery>,
) -> Result<Json<MessagesBody>, ApiError> {
    let messages = ops::dead_letters(&shared, &scope, query).await?;
    Ok(Json(messages.into()))
}

/// Put dead-lettered messages back on their topic (`ids` empty = all of them).
#[utoipa::path(
    post,
    path = "/v1/deadletter/replay",
    tag = "consume",
    request_body = ReplayBody,
    responses(
        (status = 200, description = "How many messages are back", body = ReplayedBody),
        (status = 400, description = "Invalid argument", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key does not cover an appcode routed to the topic", body = ErrorBody),
        (status = 404, description = "Unknown topic", body = ErrorBody),
        (status = 503, description = "Bus unavailable", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn replay(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
    ApiJson(body): ApiJson<ReplayBody>,
) -> Result<Json<ReplayedBody>, ApiError> {
    ops::replay(&shared, &scope, body).await.map(Json)
}

/// The topics the key may consume, with their counts.
#[utoipa::path(
    get,
    path = "/v1/topics",
    tag = "consume",
    responses(
        (status = 200, description = "Topics", body = TopicsBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 503, description = "Bus unavailable", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn topics(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
) -> Result<Json<TopicsBody>, ApiError> {
    ops::topics(&shared, &scope).await.map(Json)
}
