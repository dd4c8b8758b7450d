//! Consume routes: long-poll `GET /v1/consume`, Server-Sent Events `GET /v1/consume/sse`,
//! `POST /v1/consume/ack` and `POST /v1/consume/nack`.
//!
//! The SSE stream sends one `event: message` per leased message (data: the message JSON) and a
//! `: keepalive` comment every 15 s. It keeps at most `max_in_flight` messages unacked (see
//! `ops::consume_stream`); acks go through `POST /v1/consume/ack` like the long-poll's. A
//! failing backend ends the stream with one `event: error` (data: the error JSON). The stream
//! ends when the client disconnects or the server shuts down; the client reconnects, and
//! messages it had not acked come back when their lease ends.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt as _};
use longlink_bus::ConsumedMessage;
use tokio_stream::wrappers::ReceiverStream;

use super::errors::{ApiJson, ApiQuery, Auth};
use crate::error::ApiError;
use crate::model::{
    AckBody, AckedBody, ConsumeQuery, ErrorBody, MessagesBody, NackBody, NackedBody, StreamQuery,
};
use crate::ops::{self, Messages, Shared};

/// How often an idle SSE stream sends a comment, so proxies keep the connection open.
const KEEPALIVE: Duration = Duration::from_secs(15);

impl From<Messages> for MessagesBody {
    fn from(messages: Messages) -> Self {
        Self {
            topic: messages.topic,
            messages: messages
                .messages
                .iter()
                .map(ConsumedMessage::from)
                .collect(),
        }
    }
}

/// Long-poll: lease up to `max` messages, waiting up to `wait_secs` for the first.
#[utoipa::path(
    get,
    path = "/v1/consume",
    tag = "consume",
    params(ConsumeQuery),
    responses(
        (status = 200, description = "Leased messages (none when the wait ran out)", body = MessagesBody),
        (status = 400, description = "Invalid argument", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key does not cover an appcode routed to the topic", body = ErrorBody),
        (status = 404, description = "Unknown topic", body = ErrorBody),
        (status = 503, description = "Bus unavailable", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn long_poll(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
    ApiQuery(query): ApiQuery<ConsumeQuery>,
) -> Result<Json<MessagesBody>, ApiError> {
    let messages = ops::consume(&shared, &scope, query).await?;
    Ok(Json(messages.into()))
}

fn event_of(item: Result<longlink_bus::Leased, ApiError>) -> Event {
    let event = match &item {
        Ok(leased) => Event::default()
            .event("message")
            .json_data(ConsumedMessage::from(leased)),
        Err(err) => Event::default()
            .event("error")
            .json_data(ErrorBody::of(err)),
    };
    // Serialising these plain structs cannot fail; a comment keeps the stream well-formed.
    event.unwrap_or_else(|_| Event::default().comment("unserialisable event"))
}

/// Server-Sent Events: one `message` event per leased message, at most `max_in_flight`
/// unacked at once, a `: keepalive` comment every 15 s.
#[utoipa::path(
    get,
    path = "/v1/consume/sse",
    tag = "consume",
    params(StreamQuery),
    responses(
        (status = 200, description = "`text/event-stream`: `event: message` with a message as data; `event: error` with an error body ends the stream", content_type = "text/event-stream", body = ConsumedMessage),
        (status = 400, description = "Invalid argument", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key does not cover an appcode routed to the topic", body = ErrorBody),
        (status = 404, description = "Unknown topic", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn sse(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let stream = ops::consume_stream(&shared, &scope, query)?;
    let events = ReceiverStream::new(stream).map(|item| Ok(event_of(item)));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEPALIVE).text("keepalive")))
}

/// Acknowledge leased messages: they are removed for good.
#[utoipa::path(
    post,
    path = "/v1/consume/ack",
    tag = "consume",
    request_body = AckBody,
    responses(
        (status = 200, description = "How many ids were leased", body = AckedBody),
        (status = 400, description = "Invalid argument", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key does not cover an appcode routed to the topic", body = ErrorBody),
        (status = 404, description = "Unknown topic", body = ErrorBody),
        (status = 503, description = "Bus unavailable", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn ack(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
    ApiJson(body): ApiJson<AckBody>,
) -> Result<Json<AckedBody>, ApiError> {
    ops::ack(&shared, &scope, body).await.map(Json)
}

/// Give leased messages back: ready again after `retry_after_secs` (attempt counted).
#[utoipa::path(
    post,
    path = "/v1/consume/nack",
    tag = "consume",
    request_body = NackBody,
    responses(
        (status = 200, description = "How many ids were leased", body = NackedBody),
        (status = 400, description = "Invalid argument", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key does not cover an appcode routed to the topic", body = ErrorBody),
        (status = 404, description = "Unknown topic", body = ErrorBody),
        (status = 503, description = "Bus unavailable", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn nack(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
    ApiJson(body): ApiJson<NackBody>,
) -> Result<Json<NackedBody>, ApiError> {
    ops::nack(&shared, &scope, body).await.map(Json)
}
