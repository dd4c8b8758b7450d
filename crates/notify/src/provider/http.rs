//! A configurable HTTP provider (`[[push.http]]`) for the channels without a built-in client:
//! the Android vendors' push services (Huawei, Xiaomi, OPPO, vivo, Honor) and SMS gateways.
//! Each entry names a URL, a method, headers and a JSON body template; placeholders are
//! filled per notification:
//!
//! `{{token}}` `{{title}}` `{{body}}` `{{badge}}` `{{collapse_id}}` `{{id}}` `{{ttl_secs}}` `{{sound}}`
//! `{{data_json}}`
//!
//! The body template is parsed as JSON once, at start, and placeholders are substituted
//! inside its string values (and keys) — never spliced into JSON text — so a quote or a
//! backslash in a title cannot break out of its string: serialization escapes it. A string
//! that is exactly `"{{badge}}"`, `"{{ttl_secs}}"` or `"{{data_json}}"` becomes the JSON
//! number / object itself (`"{{badge}}"` is `null` without a badge). In the URL values are
//! percent-encoded; in headers they are used as they are (a value with a control character
//! is refused).
//!
//! Answers: a body containing `dead_token_body` (any status: vendors such as Huawei answer
//! 200 with an error code in the body) or a status in `dead_token_statuses` → dead token;
//! other 2xx → ok; 429 → rate limited (Retry-After); 5xx → unavailable; else rejected.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use percent_encoding::utf8_percent_encode;
use reqwest::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use super::tls::{self, URL_VALUE};
use super::{Notification, Provider, ProviderConfigError, SendError};

/// One `[[push.http]]` entry.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpProviderConfig {
    /// The provider's name, what tokens name ("huawei", "xiaomi", "sms"…). Required.
    pub name: String,
    /// The URL (placeholders allowed, percent-encoded).
    pub url: String,
    /// The HTTP method.
    pub method: String,
    /// Request headers (placeholders allowed). Values often hold credentials: redacted in
    /// Debug.
    pub headers: BTreeMap<String, String>,
    /// The JSON body template ("" = no body).
    pub body: String,
    /// Statuses that mean the token is dead.
    pub dead_token_statuses: Vec<u16>,
    /// A text in the response body that means the token is dead ("" = none).
    pub dead_token_body: String,
    /// An extra root CA (PEM) to trust ("" = the platform's roots only).
    pub ca_file: String,
    /// Timeout of one request, connect included, in milliseconds.
    pub timeout_ms: u64,
    /// Sends per second (the engine's rate limit).
    pub rate_per_sec: u32,
    /// Burst above the rate.
    pub burst: u32,
}

impl Default for HttpProviderConfig {
    fn default() -> Self {
        HttpProviderConfig {
            name: String::new(),
            url: String::new(),
            method: "POST".to_owned(),
            headers: BTreeMap::new(),
            body: String::new(),
            dead_token_statuses: vec![404, 410],
            dead_token_body: String::new(),
            ca_file: String::new(),
            timeout_ms: 10_000,
            rate_per_sec: 1000,
            burst: 100,
        }
    }
}

/// The URL without its query (which may carry an API key).
fn redacted_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?<redacted>"),
        None => url.to_owned(),
    }
}

impl std::fmt::Debug for HttpProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .keys()
            .map(|k| (k.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("HttpProviderConfig")
            .field("name", &self.name)
            .field("url", &redacted_url(&self.url))
            .field("method", &self.method)
            .field("headers", &headers)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .field("dead_token_statuses", &self.dead_token_statuses)
            .field("dead_token_body", &self.dead_token_body)
            .field("ca_file", &self.ca_file)
            .field("timeout_ms", &self.timeout_ms)
            .field("rate_per_sec", &self.rate_per_sec)
            .field("burst", &self.burst)
            .finish()
    }
}

/// The placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Token,
    Title,
    Body,
    Badge,
    CollapseId,
    Id,
    TtlSecs,
    Sound,
    DataJson,
}

impl Var {
    fn parse(name: &str) -> Option<Var> {
        Some(match name {
            "token" => Var::Token,
            "title" => Var::Title,
            "body" => Var::Body,
            "badge" => Var::Badge,
            "collapse_id" => Var::CollapseId,
            "id" => Var::Id,
            "ttl_secs" => Var::TtlSecs,
            "sound" => Var::Sound,
            "data_json" => Var::DataJson,
            _ => return None,
        })
    }

    /// The value as text.
    fn text(self, n: &Notification) -> String {
        match self {
            Var::Token => n.token.clone(),
            Var::Title => n.title.clone(),
            Var::Body => n.body.clone(),
            Var::Badge => n.badge.map(|b| b.to_string()).unwrap_or_default(),
            Var::CollapseId => n.collapse_id.clone(),
            Var::Id => n.id.to_string(),
            Var::TtlSecs => n.ttl.as_secs().to_string(),
            Var::Sound => n.sound.clone(),
            Var::DataJson => data_json(n).to_string(),
        }
    }
}

fn data_json(n: &Notification) -> serde_json::Value {
    n.data
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A text with placeholders, split once at start.
#[derive(Debug, Clone)]
struct Template(Vec<Part>);

#[derive(Debug, Clone)]
enum Part {
    Lit(String),
    Var(Var),
}

impl Template {
    /// Splits `s` at `{{name}}`; an unknown name is an error, a `{{` without `}}` literal.
    fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find("{{") {
            let Some(len) = rest[start + 2..].find("}}") else {
                break;
            };
            let name = rest[start + 2..start + 2 + len].trim();
            let var =
                Var::parse(name).ok_or_else(|| format!("unknown placeholder {{{{{name}}}}}"))?;
            if start > 0 {
                parts.push(Part::Lit(rest[..start].to_owned()));
            }
            parts.push(Part::Var(var));
            rest = &rest[start + 2 + len + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_owned()));
        }
        Ok(Template(parts))
    }

    /// Fills the placeholders; each value goes through `encode` (values are never
    /// re-scanned for placeholders).
    fn render(&self, n: &Notification, encode: impl Fn(&str) -> String) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Var(v) => out.push_str(&encode(&v.text(n))),
            }
        }
        out
    }

    /// The one placeholder this template consists of, if it is exactly one.
    fn whole(&self) -> Option<Var> {
        match self.0.as_slice() {
            [Part::Var(v)] => Some(*v),
            _ => None,
        }
    }
}

/// The body template: the parsed JSON with every string split into a [`Template`].
#[derive(Debug, Clone)]
enum JsonTemplate {
    Plain(serde_json::Value),
    Str(Template),
    Array(Vec<JsonTemplate>),
    Object(Vec<(Template, JsonTemplate)>),
}

impl JsonTemplate {
    fn parse(v: &serde_json::Value) -> Result<JsonTemplate, String> {
        Ok(match v {
            serde_json::Value::String(s) => JsonTemplate::Str(Template::parse(s)?),
            serde_json::Value::Array(a) => JsonTemplate::Array(
                a.iter()
                    .map(JsonTemplate::parse)
                    .collect::<Result<_, _>>()?,
            ),
            serde_json::Value::Object(o) => JsonTemplate::Object(
                o.iter()
                    .map(|(k, v)| Ok((Template::parse(k)?, JsonTemplate::parse(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => JsonTemplate::Plain(other.clone()),
        })
    }

    fn render(&self, n: &Notification) -> serde_json::Value {
        match self {
            JsonTemplate::Plain(v) => v.clone(),
            JsonTemplate::Str(t) => match t.whole() {
                Some(Var::Badge) => n.badge.map_or(serde_json::Value::Null, Into::into),
                Some(Var::TtlSecs) => n.ttl.as_secs().into(),
                Some(Var::DataJson) => data_json(n),
                _ => t.render(n, str::to_owned).into(),
            },
            JsonTemplate::Array(a) => a.iter().map(|t| t.render(n)).collect(),
            JsonTemplate::Object(o) => o
                .iter()
                .map(|(k, v)| (k.render(n, str::to_owned), v.render(n)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }
}

/// The HTTP provider.
pub struct HttpProvider {
    name: String,
    client: reqwest::Client,
    method: reqwest::Method,
    url: Template,
    headers: Vec<(HeaderName, Template)>,
    body: Option<JsonTemplate>,
    dead_token_statuses: Vec<u16>,
    dead_token_body: String,
}

impl std::fmt::Debug for HttpProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProvider")
            .field("name", &self.name)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl HttpProvider {
    /// Parses the templates and builds the client.
    ///
    /// # Errors
    /// A missing URL, a bad method, header name or template, an unreadable CA file.
    pub fn new(config: &HttpProviderConfig) -> Result<HttpProvider, ProviderConfigError> {
        let name = config.name.as_str();
        let err = |field: &str, msg: String| ProviderConfigError::new(name, field, msg);
        if config.url.is_empty() {
            return Err(err("url", "required".into()));
        }
        let method = reqwest::Method::from_bytes(config.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| err("method", format!("not an HTTP method: {}", config.method)))?;
        let url = Template::parse(&config.url).map_err(|e| err("url", e))?;
        let mut headers = Vec::new();
        for (k, v) in &config.headers {
            let hname = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| err("headers", format!("not a header name: {k}")))?;
            let t = Template::parse(v).map_err(|e| err("headers", format!("{k}: {e}")))?;
            headers.push((hname, t));
        }
        let body = if config.body.trim().is_empty() {
            None
        } else {
            let json: serde_json::Value = serde_json::from_str(&config.body)
                .map_err(|e| err("body", format!("not JSON: {e}")))?;
            Some(JsonTemplate::parse(&json).map_err(|e| err("body", e))?)
        };
        let provider = HttpProvider {
            name: name.to_owned(),
            client: tls::client(
                name,
                &config.ca_file,
                Duration::from_millis(config.timeout_ms),
                false,
            )?,
            method,
            url,
            headers,
            body,
            dead_token_statuses: config.dead_token_statuses.clone(),
            dead_token_body: config.dead_token_body.clone(),
        };
        // Render once with a sample so a URL or header that can never be valid fails now.
        let sample = Notification {
            id: 1,
            token: "token".into(),
            title: "title".into(),
            body: "body".into(),
            badge: Some(1),
            collapse_id: "collapse".into(),
            ttl: Duration::from_secs(60),
            high_priority: true,
            sound: "default".into(),
            data: Vec::new(),
        };
        let _ = provider
            .request(&sample)
            .map_err(|e| err("url/headers", e.to_string()))?;
        Ok(provider)
    }

    fn request(&self, n: &Notification) -> Result<reqwest::RequestBuilder, SendError> {
        let url = self
            .url
            .render(n, |v| utf8_percent_encode(v, URL_VALUE).to_string());
        let url =
            reqwest::Url::parse(&url).map_err(|e| SendError::Rejected(format!("url: {e}")))?;
        let mut req = self.client.request(self.method.clone(), url);
        let mut content_type = false;
        for (k, t) in &self.headers {
            let value = HeaderValue::from_str(&t.render(n, str::to_owned)).map_err(|_| {
                SendError::Rejected(format!("header {k}: the value has control characters"))
            })?;
            content_type |= *k == reqwest::header::CONTENT_TYPE;
            req = req.header(k, value);
        }
        if let Some(body) = &self.body {
            if !content_type {
                req = req.header(reqwest::header::CONTENT_TYPE, "application/json");
            }
            req = req.body(body.render(n).to_string());
        }
        Ok(req)
    }
}

#[async_trait]
impl Provider for HttpProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "http"
    }

    async fn send(&self, n: &Notification) -> Result<(), SendError> {
        let answer = tls::execute(self.request(n)?).await?;
        let body = String::from_utf8_lossy(&answer.body);
        let text = format!("HTTP {} {}", answer.status, tls::truncate(body.trim(), 200))
            .trim_end()
            .to_owned();
        if (!self.dead_token_body.is_empty() && body.contains(&self.dead_token_body))
            || self.dead_token_statuses.contains(&answer.status)
        {
            return Err(SendError::DeadToken(text));
        }
        match answer.status {
            200..=299 => Ok(()),
            429 => Err(SendError::RateLimited {
                reason: text,
                retry_after: answer.retry_after(),
            }),
            500..=599 => Err(SendError::Unavailable(text)),
            _ => Err(SendError::Rejected(text)),
        }
    }
}
