//! `POST /v1/tokens/revoke` (docs/api.md "Tokens"): revoke a user's login tokens.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::errors::{ApiJson, Auth};
use crate::error::ApiError;
use crate::model::ErrorBody;
use crate::ops::{self, Shared};
use crate::tokens::{RevokeBody, RevokedBody};

/// Revokes every token of a user issued before now (or `before_ms`), durably; the user's
/// sessions opened with them are kicked (LOGGED_OUT) and cannot RESUME.
#[utoipa::path(
    post,
    path = "/v1/tokens/revoke",
    tag = "tokens",
    request_body = RevokeBody,
    responses(
        (status = 200, description = "Revoked", body = RevokedBody),
        (status = 400, description = "Invalid uid or before_ms", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key does not cover the appcode", body = ErrorBody),
        (status = 404, description = "Unknown appcode", body = ErrorBody),
        (status = 503, description = "Not stored; nothing changed", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn revoke(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
    ApiJson(body): ApiJson<RevokeBody>,
) -> Result<Json<RevokedBody>, ApiError> {
    ops::revoke_tokens(&shared, &scope, body).await.map(Json)
}
