//! How the HTTP surface turns every failure into the spec's JSON error body.
//!
//! axum's own rejections answer in plain text; these extractors wrap axum's and map their
//! rejections to [`ApiError`], so a bad JSON body, an unknown field, a wrong content type, an
//! oversized body, a bad query string or a missing API key all answer
//! `{"error": {"code", "message"}}` with the status of the spec's table. The router's
//! fallbacks do the same for unknown routes.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorKind};
use crate::keys::KeyScope;
use crate::model::{ErrorBody, ErrorDetail};
use crate::ops::Shared;

impl ErrorBody {
    /// The body of `err`.
    pub fn of(err: &ApiError) -> Self {
        Self {
            error: ErrorDetail {
                code: err.kind().code().to_owned(),
                message: err.message().to_owned(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.kind().http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(
                code = self.kind().code(),
                message = self.message(),
                "api call failed"
            );
        }
        (status, Json(ErrorBody::of(&self))).into_response()
    }
}

/// The scope of the request's API key; rejects with 401 before any other extractor runs.
#[derive(Debug, Clone)]
pub(crate) struct Auth(pub(crate) KeyScope);

impl FromRequestParts<Arc<Shared>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        shared.ctx.keys.authorize(&parts.headers).cloned().map(Auth)
    }
}

/// A JSON body: `content-type: application/json` (415 otherwise), within the body limit
/// (413), and deserialisable (400, unknown fields included).
#[derive(Debug, Clone)]
pub(crate) struct ApiJson<T>(pub(crate) T);

/// `application/json`, `application/json; charset=utf-8` or `application/<x>+json`.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                ErrorKind::UnsupportedMediaType,
                "the body must be JSON with `content-type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    ErrorKind::PayloadTooLarge,
                    "the request body is above the limit (api.max_body_bytes)",
                )
            } else {
                ApiError::invalid_argument(format!(
                    "cannot read the body: {}",
                    rejection.body_text()
                ))
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|err| ApiError::invalid_argument(format!("invalid JSON body: {err}")))
    }
}

/// A query string; 400 on unknown parameters or bad values.
#[derive(Debug, Clone)]
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection| ApiError::invalid_argument(rejection.body_text()))
    }
}

/// Path parameters; 400 when one does not parse (a non-numeric appcode, …).
#[derive(Debug, Clone)]
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|rejection| ApiError::invalid_argument(rejection.body_text()))
    }
}

/// Fallback of the router (unknown path) and of every route (a method it does not serve):
/// both are an unknown route, 404.
pub(crate) async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route {method} {}", uri.path()))
}
