//! The HTTP client every provider uses, and the small helpers around its requests. One place
//! so that every provider gets the same guarantees: rustls with aws-lc-rs only (reqwest's
//! `rustls` feature; never ring or openssl), the platform's roots plus an optional extra CA
//! (`ca_file`, how tests trust the local fakes and how a private gateway's CA is added), a
//! timeout on every request, and response bodies read with a cap.

use std::time::Duration;

use reqwest::header::HeaderMap;

use super::{ProviderConfigError, SendError};

/// Characters kept as they are when a value goes into a URL (RFC 3986 unreserved); all
/// others are percent-encoded, so a token cannot add a path segment or a query.
pub(crate) const URL_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Largest response body read (providers answer with a few hundred bytes).
const MAX_RESPONSE: usize = 64 * 1024;

/// Reads a credential or CA file, naming the field and path (never the content) on error.
pub(crate) fn read_file(
    provider: &str,
    field: &str,
    path: &str,
) -> Result<Vec<u8>, ProviderConfigError> {
    if path.is_empty() {
        return Err(ProviderConfigError::new(provider, field, "required"));
    }
    std::fs::read(path)
        .map_err(|e| ProviderConfigError::new(provider, field, format!("cannot read {path}: {e}")))
}

/// An HTTPS client: `timeout` per request (connect included), the extra root CA from
/// `ca_file` ("" = none), HTTP/2 with prior knowledge when `http2_only` (APNs).
pub(crate) fn client(
    provider: &str,
    ca_file: &str,
    timeout: Duration,
    http2_only: bool,
) -> Result<reqwest::Client, ProviderConfigError> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("longlink/", env!("CARGO_PKG_VERSION")));
    if http2_only {
        // APNs speaks HTTP/2 only: ALPN "h2" and no HTTP/1.1 fallback. Pings keep the one
        // long-lived connection Apple asks providers to reuse from dying silently.
        builder = builder
            .http2_prior_knowledge()
            .http2_keep_alive_interval(Duration::from_secs(60))
            .http2_keep_alive_timeout(timeout)
            .http2_keep_alive_while_idle(true);
    }
    if !ca_file.is_empty() {
        let pem = read_file(provider, "ca_file", ca_file)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            ProviderConfigError::new(provider, "ca_file", format!("{ca_file}: not PEM: {e}"))
        })?;
        if certs.is_empty() {
            return Err(ProviderConfigError::new(
                provider,
                "ca_file",
                format!("{ca_file}: no certificate"),
            ));
        }
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| ProviderConfigError::new(provider, "tls", format!("HTTP client: {e}")))
}

/// A response: status, headers and the (capped) body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (`Null` when it is not).
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The Retry-After header in seconds (the HTTP-date form is not used by the providers).
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        self.headers
            .get(reqwest::header::RETRY_AFTER)?
            .to_str()
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    }
}

/// Sends `req` and reads the answer; transport failures and timeouts are
/// [`SendError::Transport`].
pub(crate) async fn execute(req: reqwest::RequestBuilder) -> Result<Answer, SendError> {
    let mut resp = req.send().await.map_err(transport)?;
    let status = resp.status().as_u16();
    let headers = std::mem::take(resp.headers_mut());
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        let room = MAX_RESPONSE.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// A reqwest error as [`SendError::Transport`], with its cause chain (reqwest's top-level
/// message alone is "error sending request").
pub(crate) fn transport(e: reqwest::Error) -> SendError {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    SendError::Transport(msg)
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
