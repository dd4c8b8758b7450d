//! Black/white lists (docs/api.md "Bans"; docs/security.md "Black/white lists and
//! flapping"): `POST /v1/bans`, `DELETE /v1/bans/{id}`, `GET /v1/bans`.
//!
//! Who may touch an entry: one naming an appcode needs a key covering that appcode; one for
//! every appcode (appcode 0: an IP or device entry of the whole node) needs an operator key,
//! as gates do (`ApiKeys::check_operator`). A change is durable when answered and effective at
//! once (the guard swaps its snapshot; the node kicks the sessions it now refuses).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use longlink_guard::{Ban, GuardError, NewBan};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::errors::{ApiJson, ApiPath, Auth};
use crate::error::ApiError;
use crate::keys::KeyScope;
use crate::model::ErrorBody;
use crate::ops::Shared;

/// `POST /v1/bans`: an entry to add (or update: same kind, action, appcode and value).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BanBody {
    /// `uid`, `device`, `ip` or `appcode`.
    kind: String,
    /// `deny` (default) or `allow` (ip only: a whitelist for its scope).
    #[serde(default)]
    action: String,
    /// The appcode (required for uid and appcode entries); 0 or absent = every appcode.
    #[serde(default)]
    appcode: u32,
    /// The uid, device id, IP address or CIDR network; absent for an appcode entry.
    #[serde(default)]
    value: String,
    /// Why (for operators; clients never see it), at most 512 bytes.
    #[serde(default)]
    reason: String,
    /// Lifetime in seconds; absent = until removed.
    #[serde(default)]
    ttl_secs: Option<u64>,
}

/// One list entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct BanEntryBody {
    /// Never reused.
    id: u64,
    /// `uid`, `device`, `ip` or `appcode`.
    kind: String,
    /// `deny` or `allow`.
    action: String,
    /// 0 = every appcode.
    appcode: u32,
    /// The uid, device id or canonical CIDR (`127.0.0.2/32`); empty for an appcode entry.
    value: String,
    /// Why.
    reason: String,
    /// Unix ms.
    created_at_ms: u64,
    /// Unix ms; 0 = never.
    expires_at_ms: u64,
}

impl From<Ban> for BanEntryBody {
    fn from(ban: Ban) -> Self {
        Self {
            id: ban.id,
            kind: ban.kind.as_str().to_owned(),
            action: ban.action.as_str().to_owned(),
            appcode: ban.appcode,
            value: ban.value,
            reason: ban.reason,
            created_at_ms: ban.created_at_ms,
            expires_at_ms: ban.expires_at_ms,
        }
    }
}

/// `GET /v1/bans`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct BansBody {
    /// The active entries the key may see, by id.
    bans: Vec<BanEntryBody>,
}

/// An entry for appcode 0 concerns every appcode: an operator key; else the key's appcode.
fn check_scope(shared: &Shared, scope: &KeyScope, appcode: u32) -> Result<(), ApiError> {
    if appcode == 0 {
        shared.ctx.keys.check_operator(scope)
    } else {
        scope.check_appcode(appcode)
    }
}

fn api_error(err: GuardError) -> ApiError {
    match err {
        GuardError::Invalid(message) => ApiError::invalid_argument(message),
        GuardError::Store(message) => ApiError::unavailable(message),
    }
}

/// Adds a black/white list entry (201), or updates the entry with the same kind, action,
/// appcode and value (200, same id). Effective at once: online sessions it refuses are
/// kicked (KICK BLOCKED).
#[utoipa::path(
    post,
    path = "/v1/bans",
    tag = "bans",
    request_body = BanBody,
    responses(
        (status = 201, description = "Added", body = BanEntryBody),
        (status = 200, description = "Updated (reason, expiry)", body = BanEntryBody),
        (status = 400, description = "Invalid entry", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key does not cover the appcode (appcode 0: not an operator key)", body = ErrorBody),
        (status = 503, description = "Not stored; nothing changed", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn add(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
    ApiJson(body): ApiJson<BanBody>,
) -> Result<(StatusCode, Json<BanEntryBody>), ApiError> {
    check_scope(&shared, &scope, body.appcode)?;
    let (ban, created) = shared
        .ctx
        .bans
        .ban(NewBan {
            kind: body.kind,
            action: body.action,
            appcode: body.appcode,
            value: body.value,
            reason: body.reason,
            ttl_secs: body.ttl_secs,
        })
        .await
        .map_err(api_error)?;
    tracing::info!(key = %scope.name, id = ban.id, kind = ban.kind.as_str(), app.code = ban.appcode, value = %ban.value, created, "ban set");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(ban.into())))
}

/// Removes entry `id`; effective at once. Answers the removed entry.
#[utoipa::path(
    delete,
    path = "/v1/bans/{id}",
    tag = "bans",
    params(("id" = u64, Path, description = "The entry id")),
    responses(
        (status = 200, description = "Removed", body = BanEntryBody),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key does not cover the entry's appcode", body = ErrorBody),
        (status = 404, description = "No such entry (or it expired)", body = ErrorBody),
        (status = 503, description = "Not stored; nothing changed", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn remove(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<BanEntryBody>, ApiError> {
    let guard = &shared.ctx.bans;
    let not_found = || ApiError::not_found(format!("no ban {id}"));
    let entry = guard
        .bans()
        .into_iter()
        .find(|b| b.id == id)
        .ok_or_else(not_found)?;
    check_scope(&shared, &scope, entry.appcode)?;
    let removed = guard
        .unban(id)
        .await
        .map_err(api_error)?
        .ok_or_else(not_found)?;
    tracing::info!(key = %scope.name, id, "ban removed");
    Ok(Json(removed.into()))
}

/// The active entries: all of them for an operator key, else those of the key's appcodes.
#[utoipa::path(
    get,
    path = "/v1/bans",
    tag = "bans",
    responses(
        (status = 200, description = "The active entries", body = BansBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn list(State(shared): State<Arc<Shared>>, Auth(scope): Auth) -> Json<BansBody> {
    let operator = shared.ctx.keys.check_operator(&scope).is_ok();
    let bans = shared
        .ctx
        .bans
        .bans()
        .into_iter()
        .filter(|b| operator || (b.appcode != 0 && scope.allows(b.appcode)))
        .map(BanEntryBody::from)
        .collect();
    Json(BansBody { bans })
}
