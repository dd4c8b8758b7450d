//! Presence routes: one user, a batch of users, and the online counts of an appcode.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::errors::{ApiJson, ApiPath, Auth};
use crate::error::ApiError;
use crate::model::{
    ErrorBody, OnlineCountBody, PresenceQueryBody, PresenceUsersBody, UserPresenceBody,
};
use crate::ops::{self, Shared};

/// The online sessions of one user.
#[utoipa::path(
    get,
    path = "/v1/presence/{appcode}/{uid}",
    tag = "presence",
    params(
        ("appcode" = u32, Path, description = "The user's appcode"),
        ("uid" = String, Path, description = "The user (1..=256 bytes, percent-encoded)"),
    ),
    responses(
        (status = 200, description = "The user's presence", body = UserPresenceBody),
        (status = 400, description = "Invalid argument", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key does not cover the appcode", body = ErrorBody),
        (status = 503, description = "Presence unavailable", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn user(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
    ApiPath((appcode, uid)): ApiPath<(u32, String)>,
) -> Result<Json<UserPresenceBody>, ApiError> {
    let user = ops::presence(&shared, &scope, appcode, uid).await?;
    Ok(Json(user.into()))
}

/// The online sessions of up to 1,000 users.
#[utoipa::path(
    post,
    path = "/v1/presence/query",
    tag = "presence",
    request_body = PresenceQueryBody,
    responses(
        (status = 200, description = "One entry per uid, in request order", body = PresenceUsersBody),
        (status = 400, description = "Invalid argument", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key does not cover the appcode", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 503, description = "Presence unavailable", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn query(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
    ApiJson(body): ApiJson<PresenceQueryBody>,
) -> Result<Json<PresenceUsersBody>, ApiError> {
    let users = ops::presence_query(&shared, &scope, body).await?;
    Ok(Json(PresenceUsersBody {
        users: users.into_iter().map(Into::into).collect(),
    }))
}

/// Online users and sessions of an appcode.
#[utoipa::path(
    get,
    path = "/v1/presence/{appcode}",
    tag = "presence",
    params(("appcode" = u32, Path, description = "The appcode")),
    responses(
        (status = 200, description = "Counts", body = OnlineCountBody),
        (status = 400, description = "Invalid appcode", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key does not cover the appcode", body = ErrorBody),
        (status = 503, description = "Presence unavailable", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn counts(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
    ApiPath(appcode): ApiPath<u32>,
) -> Result<Json<OnlineCountBody>, ApiError> {
    ops::online_count(&shared, &scope, appcode).await.map(Json)
}
