//! The browser chat page (docs/api.md "Chat page"): `GET /chat` serves the page, `GET
//! /chat/{file}` its assets (built from `sdk-ts/chat/` by `npm run build:chat` into
//! `crates/api/assets/chat/`, embedded in the binary), `GET /chat/config.json` where the page
//! connects, and `POST /chat/dev-token` a development login token when `[api] chat_dev_login`
//! is on.
//!
//! The page talks to the gate's WebSocket listener with the TypeScript SDK; the API only serves
//! it. Every chat response carries a Content-Security-Policy that lets the page run its own
//! script and style and connect to this origin and the gate's WebSocket origin — nothing else
//! (images of RICH messages are references to other sites, so `img-src` also allows http(s)).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::errors::ApiJson;
use crate::chat::DEV_TOKEN_TTL_SECS;
use crate::error::ApiError;
use crate::ops::Shared;

#[derive(rust_embed::Embed)]
#[folder = "assets/chat/"]
struct Assets;

/// Longest uid a token may name (the gate's `MAX_ID_BYTES`).
const MAX_UID_BYTES: usize = 128;

/// `GET /chat` and `GET /chat/`: the page.
pub(crate) async fn index(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    asset_response(&shared, &headers, "index.html")
}

/// `GET /chat/{file}`: one of the page's assets.
pub(crate) async fn asset(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(file): Path<String>,
) -> Response {
    asset_response(&shared, &headers, &file)
}

/// `GET /chat/config.json`.
#[derive(Debug, Serialize)]
struct ChatConfigBody {
    /// `ws://host:port` (`wss://` with gate TLS); `null` when `gate.ws_listen` is off.
    ws_url: Option<String>,
    /// Whether `POST /chat/dev-token` answers.
    dev_login: bool,
    appcodes: Vec<u32>,
    /// The gate's largest frame body.
    max_body_bytes: u32,
    /// The largest message content (`logic.max_content_bytes`): the page refuses longer text
    /// before sending.
    max_content_bytes: usize,
    /// Development token lifetime, so that the page can log in again before it runs out.
    dev_token_ttl_secs: u64,
}

pub(crate) async fn config(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let chat = &shared.ctx.chat;
    let body = ChatConfigBody {
        ws_url: ws_origin(&shared, &headers),
        dev_login: chat.dev_tokens.is_some(),
        appcodes: chat.appcodes.clone(),
        max_body_bytes: chat.max_body_bytes,
        max_content_bytes: shared.ctx.limits.max_content_bytes,
        dev_token_ttl_secs: DEV_TOKEN_TTL_SECS,
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        security_headers(&shared, &headers),
        Json(body),
    )
        .into_response()
}

/// `POST /chat/dev-token` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DevTokenRequest {
    appcode: u32,
    uid: String,
}

#[derive(Debug, Serialize)]
struct DevTokenBody {
    token: String,
}

/// Mints a development login token, only while `[api] chat_dev_login` is on (404 otherwise).
/// A JSON body is required, so a cross-site form cannot post here without a CORS preflight,
/// which this API never grants.
pub(crate) async fn dev_token(
    State(shared): State<Arc<Shared>>,
    ApiJson(request): ApiJson<DevTokenRequest>,
) -> Result<Response, ApiError> {
    let Some(minter) = shared.ctx.chat.dev_tokens.as_ref() else {
        return Err(ApiError::not_found(
            "development logins are off on this node ([api] chat_dev_login = false): \
             log in with a token from your back end",
        ));
    };
    let uid = request.uid.trim();
    if uid.is_empty() || uid.len() > MAX_UID_BYTES {
        return Err(ApiError::invalid_argument(format!(
            "uid must be 1..={MAX_UID_BYTES} bytes"
        )));
    }
    if uid.chars().any(char::is_control) {
        return Err(ApiError::invalid_argument(
            "uid must not contain control characters",
        ));
    }
    if !shared.ctx.chat.appcodes.contains(&request.appcode) {
        return Err(ApiError::invalid_argument(format!(
            "unknown appcode {}",
            request.appcode
        )));
    }
    let token = minter
        .mint(request.appcode, uid)
        .map_err(ApiError::invalid_argument)?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(DevTokenBody { token }),
    )
        .into_response())
}

fn asset_response(shared: &Shared, headers: &HeaderMap, file: &str) -> Response {
    let Some(content) = Assets::get(file) else {
        return ApiError::not_found(format!("no chat asset {file}")).into_response();
    };
    let mime = match file.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        security_headers(shared, headers),
        content.data.into_owned(),
    )
        .into_response()
}

/// The page's Content-Security-Policy and the headers that go with it.
fn security_headers(
    shared: &Shared,
    headers: &HeaderMap,
) -> [(header::HeaderName, HeaderValue); 4] {
    let ws = ws_origin(shared, headers)
        .map(|origin| format!(" {origin}"))
        .unwrap_or_default();
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: http: data:; \
         connect-src 'self'{ws}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_str(&policy)
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        // Images of RICH messages load from other sites: they learn nothing of this page.
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ]
}

/// `ws://host:port` of the gate's WebSocket listener. A listener on every interface
/// (`0.0.0.0`, `::`) has no address a browser could use, so the host the browser asked this
/// API for stands in (with the listener's port).
fn ws_origin(shared: &Shared, headers: &HeaderMap) -> Option<String> {
    let chat = &shared.ctx.chat;
    let addr = chat.ws_addr?;
    let scheme = if chat.ws_tls { "wss" } else { "ws" };
    let host = if addr.ip().is_unspecified() {
        request_host(headers)
            .unwrap_or_else(|| host_of(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), addr.port())))
    } else {
        host_of(addr)
    };
    Some(format!("{scheme}://{host}:{}", addr.port()))
}

fn host_of(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}

/// The host name of the request's `Host` header without its port, when it is a plain host
/// name or address (it ends up in a header and a JSON answer: nothing else may pass).
fn request_host(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let name = if host.starts_with('[') {
        // [v6]:port
        &host[..=host.find(']')?]
    } else {
        host.split(':').next()?
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    valid.then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_request_host_is_taken_only_when_it_is_a_plain_name() {
        assert_eq!(
            request_host(&host("chat.example:7780")).as_deref(),
            Some("chat.example")
        );
        assert_eq!(request_host(&host("[::1]:7780")).as_deref(), Some("[::1]"));
        assert_eq!(request_host(&host("10.0.0.5")).as_deref(), Some("10.0.0.5"));
        assert_eq!(request_host(&host("evil.example/x")), None);
        assert_eq!(request_host(&host("a b")), None);
        assert_eq!(request_host(&HeaderMap::new()), None);
    }

    #[test]
    fn every_page_asset_is_embedded() {
        for file in ["index.html", "chat.js", "chat.css"] {
            assert!(Assets::get(file).is_some(), "{file} is not embedded");
        }
    }
}
