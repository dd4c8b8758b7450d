//! Gate routes: `GET /v1/dispatch` (where a client should connect, by the key of its appcode),
//! and for operators `GET /v1/gates` and `POST /v1/gates/{id}/drain` (docs/api.md, "Gates and
//! dispatch").

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};

use super::errors::{ApiPath, ApiQuery, Auth};
use crate::error::ApiError;
use crate::keys::KeyScope;
use crate::model::{DispatchBody, DispatchQuery, DrainAcceptedBody, ErrorBody, GatesBody};
use crate::ops::{self, Shared};

/// The gate addresses a client should try, in order: the gate holding the user's session
/// first, then the other serving, non-draining gates by fewest connections. A business server
/// asks with its API key; an app may ask with its own login token (`Bearer <token>`) for its
/// own uid.
#[utoipa::path(
    get,
    path = "/v1/dispatch",
    tag = "gates",
    params(DispatchQuery),
    responses(
        (status = 200, description = "The gates to try, in order", body = DispatchBody),
        (status = 400, description = "Missing or invalid appcode, uid or device", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key, or an invalid login token", body = ErrorBody),
        (status = 403, description = "The key does not cover the appcode, or the token is another uid's", body = ErrorBody),
        (status = 503, description = "No gate is serving", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn dispatch(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    ApiQuery(mut query): ApiQuery<DispatchQuery>,
) -> Result<Json<DispatchBody>, ApiError> {
    let key_refusal = match shared.ctx.keys.authorize(&headers) {
        Ok(scope) => return ops::dispatch(&shared, scope, query).await.map(Json),
        Err(refusal) => refusal,
    };
    // Not an API key: maybe the app's own login token, for its own uid only.
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::keys::bearer);
    let (Some(token), Some(appcode)) = (token, query.appcode) else {
        return Err(key_refusal);
    };
    let Some(uid) = shared.ctx.tokens.user_of(appcode, token) else {
        return Err(ApiError::unauthenticated(
            "neither an API key nor a valid login token of this appcode",
        ));
    };
    match &query.uid {
        Some(asked) if *asked != uid => {
            return Err(ApiError::permission_denied(
                "a login token dispatches its own uid only",
            ));
        }
        Some(_) => {}
        None => query.uid = Some(uid),
    }
    let scope = KeyScope {
        name: format!("login token of {appcode}"),
        appcodes: std::iter::once(appcode).collect(),
    };
    ops::dispatch(&shared, &scope, query).await.map(Json)
}

/// Every gate of the node with its status (an operator key: one covering every appcode).
#[utoipa::path(
    get,
    path = "/v1/gates",
    tag = "gates",
    responses(
        (status = 200, description = "The gates", body = GatesBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Not an operator key", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
) -> Result<Json<GatesBody>, ApiError> {
    ops::gates(&shared, &scope).map(Json)
}

/// Starts draining a gate in the background: it stops accepting and being dispatched, moves
/// its clients to the other gates in waves (KICK RECONNECT), then stops. Idempotent.
#[utoipa::path(
    post,
    path = "/v1/gates/{id}/drain",
    tag = "gates",
    params(("id" = String, Path, description = "The gate id")),
    responses(
        (status = 202, description = "Draining (started now, or already)", body = DrainAcceptedBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Not an operator key", body = ErrorBody),
        (status = 404, description = "No such gate", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn drain(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<DrainAcceptedBody>), ApiError> {
    let accepted = ops::drain_gate(&shared, &scope, &id)?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}
