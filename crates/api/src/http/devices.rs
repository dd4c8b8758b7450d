//! Devices' push tokens and the push providers (docs/api.md "Devices and push providers",
//! issue 12): `PUT`/`GET`/`DELETE /v1/devices/{appcode}/{uid}/{device}`,
//! `POST /v1/devices/{appcode}/{uid}/{device}/tokens`, `GET /v1/devices/{appcode}/{uid}` and
//! `GET /v1/push-providers/stats`.
//!
//! A business server registers the tokens of its users' devices here when the app reports
//! them to it rather than to longlink (the SDK's `register_push_token` is the other way in);
//! the same registry answers both. Device calls take a key covering the appcode, as presence
//! does; the provider statistics any key (see `ops::provider_stats`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use longlink_rpc::notify::{DeviceClass, PushToken};

use super::errors::{ApiJson, ApiPath, ApiQuery, Auth};
use crate::error::ApiError;
use crate::model::{
    DeviceBody, DevicesBody, ErrorBody, ProvidersBody, PutDeviceBody, RegisterTokenBody,
    RemoveDeviceQuery, RemovedBody,
};
use crate::ops::{self, DeviceKey, Shared};

/// Replaces the device's registration: its class and every push token (at most one per
/// provider); `"tokens": []` removes them all.
#[utoipa::path(
    put,
    path = "/v1/devices/{appcode}/{uid}/{device}",
    tag = "devices",
    params(
        ("appcode" = u32, Path, description = "The user's appcode"),
        ("uid" = String, Path, description = "The user (1..=256 bytes, percent-encoded)"),
        ("device" = String, Path, description = "The device id, as the app logs in with it (1..=256 bytes)"),
    ),
    request_body = PutDeviceBody,
    responses(
        (status = 200, description = "The device as now registered", body = DeviceBody),
        (status = 400, description = "Invalid field, duplicate or unknown provider, too many tokens", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key does not cover the appcode", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 503, description = "The registry failed; nothing changed", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn put(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
    ApiPath((appcode, uid, device)): ApiPath<(u32, String, String)>,
    ApiJson(body): ApiJson<PutDeviceBody>,
) -> Result<Json<DeviceBody>, ApiError> {
    let class = DeviceClass {
        platform: body.platform,
        vendor: body.vendor,
        app_version: body.app_version,
    };
    let tokens = body
        .tokens
        .into_iter()
        .map(|t| PushToken {
            provider: t.provider,
            token: t.token,
        })
        .collect();
    let key = DeviceKey {
        appcode,
        uid,
        device,
    };
    let record = ops::put_device(&shared, &scope, key, class, tokens).await?;
    Ok(Json(record.into()))
}

/// Adds one push token to the device (replacing that provider's previous token) and sets its
/// class; the device's tokens of other providers stay.
#[utoipa::path(
    post,
    path = "/v1/devices/{appcode}/{uid}/{device}/tokens",
    tag = "devices",
    params(
        ("appcode" = u32, Path, description = "The user's appcode"),
        ("uid" = String, Path, description = "The user (1..=256 bytes, percent-encoded)"),
        ("device" = String, Path, description = "The device id (1..=256 bytes)"),
    ),
    request_body = RegisterTokenBody,
    responses(
        (status = 200, description = "The device as now registered", body = DeviceBody),
        (status = 400, description = "Invalid field or unknown provider", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key does not cover the appcode", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 503, description = "The registry failed; nothing changed", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn register(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
    ApiPath((appcode, uid, device)): ApiPath<(u32, String, String)>,
    ApiJson(body): ApiJson<RegisterTokenBody>,
) -> Result<Json<DeviceBody>, ApiError> {
    let class = DeviceClass {
        platform: body.platform,
        vendor: body.vendor,
        app_version: body.app_version,
    };
    let token = PushToken {
        provider: body.provider,
        token: body.token,
    };
    let key = DeviceKey {
        appcode,
        uid,
        device,
    };
    let record = ops::register_token(&shared, &scope, key, class, token).await?;
    Ok(Json(record.into()))
}

/// The user's devices with push tokens (an empty list when none).
#[utoipa::path(
    get,
    path = "/v1/devices/{appcode}/{uid}",
    tag = "devices",
    params(
        ("appcode" = u32, Path, description = "The user's appcode"),
        ("uid" = String, Path, description = "The user (1..=256 bytes, percent-encoded)"),
    ),
    responses(
        (status = 200, description = "The user's devices, by device id", body = DevicesBody),
        (status = 400, description = "Invalid appcode or uid", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key does not cover the appcode", body = ErrorBody),
        (status = 503, description = "The registry failed", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
    ApiPath((appcode, uid)): ApiPath<(u32, String)>,
) -> Result<Json<DevicesBody>, ApiError> {
    let records = ops::devices(&shared, &scope, appcode, &uid, None).await?;
    Ok(Json(DevicesBody {
        appcode,
        uid,
        devices: records.into_iter().map(Into::into).collect(),
    }))
}

/// One device's registration.
#[utoipa::path(
    get,
    path = "/v1/devices/{appcode}/{uid}/{device}",
    tag = "devices",
    params(
        ("appcode" = u32, Path, description = "The user's appcode"),
        ("uid" = String, Path, description = "The user (1..=256 bytes, percent-encoded)"),
        ("device" = String, Path, description = "The device id (1..=256 bytes)"),
    ),
    responses(
        (status = 200, description = "The device", body = DeviceBody),
        (status = 400, description = "Invalid appcode, uid or device", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key does not cover the appcode", body = ErrorBody),
        (status = 404, description = "The device has no push registration", body = ErrorBody),
        (status = 503, description = "The registry failed", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn get(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
    ApiPath((appcode, uid, device)): ApiPath<(u32, String, String)>,
) -> Result<Json<DeviceBody>, ApiError> {
    let records = ops::devices(&shared, &scope, appcode, &uid, Some(&device)).await?;
    records
        .into_iter()
        .next()
        .map(|r| Json(r.into()))
        .ok_or_else(|| ApiError::not_found(format!("device {device:?} has no push registration")))
}

/// Removes the device's push tokens: every one, or only `provider`'s. Idempotent.
#[utoipa::path(
    delete,
    path = "/v1/devices/{appcode}/{uid}/{device}",
    tag = "devices",
    params(
        ("appcode" = u32, Path, description = "The user's appcode"),
        ("uid" = String, Path, description = "The user (1..=256 bytes, percent-encoded)"),
        ("device" = String, Path, description = "The device id (1..=256 bytes)"),
        RemoveDeviceQuery,
    ),
    responses(
        (status = 200, description = "How many tokens were removed (0: none was there)", body = RemovedBody),
        (status = 400, description = "Invalid appcode, uid, device or provider", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key does not cover the appcode", body = ErrorBody),
        (status = 503, description = "The registry failed", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn remove(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
    ApiPath((appcode, uid, device)): ApiPath<(u32, String, String)>,
    ApiQuery(query): ApiQuery<RemoveDeviceQuery>,
) -> Result<Json<RemovedBody>, ApiError> {
    let key = DeviceKey {
        appcode,
        uid,
        device,
    };
    let removed = ops::remove_device(&shared, &scope, key, query.provider.as_deref()).await?;
    Ok(Json(RemovedBody { removed }))
}

/// Per push provider and device class: sent, accepted, receipts, receipt rate, latency to
/// receipt, errors by kind, and the selector's estimate. Any API key: the figures hold no
/// uid, token or content.
#[utoipa::path(
    get,
    path = "/v1/push-providers/stats",
    tag = "devices",
    responses(
        (status = 200, description = "Every configured provider, by name", body = ProvidersBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn provider_stats(
    State(shared): State<Arc<Shared>>,
    Auth(scope): Auth,
) -> Json<ProvidersBody> {
    let providers = ops::provider_stats(&shared, &scope).await;
    Json(ProvidersBody {
        providers: providers.into_iter().map(Into::into).collect(),
    })
}
