//! The live dashboard: a static page (HTML, CSS, JS under `crates/api/assets/dashboard/`,
//! embedded in the binary with rust-embed, so it works offline and with no CDN) that polls
//! `GET /v1/stats/summary` and draws it. `GET /` serves the page, `GET /dashboard/{file}` its
//! assets.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::Embed)]
#[folder = "assets/dashboard/"]
struct Assets;

/// `GET /`: the dashboard page.
pub(crate) async fn index() -> Response {
    asset_response("index.html")
}

/// `GET /dashboard/{file}`: one of the page's assets.
pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    asset_response(&file)
}

fn asset_response(file: &str) -> Response {
    let Some(content) = Assets::get(file) else {
        return crate::ApiError::not_found(format!("no dashboard asset {file}")).into_response();
    };
    let mime = match file.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        content.data.into_owned(),
    )
        .into_response()
}
