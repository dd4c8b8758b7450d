//! The business-server API from the command line: `longlink push`, `push stats`, `presence`,
//! `consume` (docs/api.md), and the operator's views of a node: `trace` and `top`
//! (the observability routes), `gate list|drain` and `dispatch` (the gate routes), `ban`,
//! `unban` and `bans` (the black/white lists), `device register|list|remove` and
//! `push-providers stats` (devices' push tokens and the push providers). Plain HTTP/JSON through reqwest: the CLI never links the server's
//! API crate, so it talks to a remote node exactly as a business server would.
//!
//! Errors are one line on stderr, `error: <status> <code>: <message>`, with an exit code by
//! kind (sysexits, like the rest of the binary): 64 for a request the server found invalid
//! (400, 413, 415), 77 for a missing, unknown or out-of-scope key (401, 403), 69 when the
//! node cannot be reached or is unavailable (503, connection refused, timeout), 1 otherwise.

mod bans;
mod consume;
mod device;
mod gates;
mod presence;
mod push;
mod push_providers;
mod tokens;
mod top;
mod trace;

use std::time::Duration;

use clap::Args;
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub(crate) use bans::{BanArgs, BansArgs, UnbanArgs, ban, bans, unban};
pub(crate) use consume::{ConsumeArgs, consume};
pub(crate) use device::{DeviceCommand, device};
pub(crate) use gates::{DispatchArgs, GateCommand, dispatch, gate};
pub(crate) use presence::{PresenceArgs, presence};
pub(crate) use push::{PushCommand, push};
pub(crate) use push_providers::{PushProvidersCommand, push_providers};
pub(crate) use tokens::{TokensCommand, tokens};
pub(crate) use top::{TopArgs, top};
pub(crate) use trace::{TraceArgs, trace};

/// Exit code: the request was refused as invalid (EX_USAGE, as for a bad config).
const EXIT_INVALID: u8 = crate::EXIT_CONFIG;
/// Exit code: the key is missing, unknown or does not cover the appcode (EX_NOPERM).
const EXIT_AUTH: u8 = 77;
/// Exit code: the node is unreachable or answered 503 (EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;
/// Time allowed to establish a connection to the API.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for an ordinary call (long-polls add their own wait to it).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the API is and which key to use; every API command takes these.
#[derive(Debug, Clone, Args)]
pub(crate) struct ApiOpts {
    /// Base URL of the node's HTTP API.
    #[arg(
        long = "api",
        env = "LONGLINK_API",
        default_value = "http://127.0.0.1:7780"
    )]
    pub(crate) url: String,
    /// API key (sent as `Authorization: Bearer`); the default config's development key by
    /// default.
    #[arg(
        long,
        env = "LONGLINK_API_KEY",
        default_value = longlink_server::DEV_API_KEY,
        hide_env_values = true,
        hide_default_value = true
    )]
    pub(crate) api_key: String,
    /// A PEM CA certificate to trust for an `https://` API (e.g. `longlink cert dev`'s
    /// `ca.pem`) besides the system's roots.
    #[arg(long = "api-ca", env = "LONGLINK_API_CA", value_name = "FILE")]
    pub(crate) ca: Option<std::path::PathBuf>,
}

/// A failed API call, printed as one line without the usual `longlink:` prefix (the line
/// itself says `error:`), with the exit code of its kind.
#[derive(Debug)]
pub(crate) struct ApiFailure {
    pub(crate) code: u8,
    pub(crate) line: String,
    /// The HTTP status when the node answered with an error (a command may say more about
    /// one, as `trace` does for 404); `None` when there was no answer or it was unreadable.
    pub(crate) status: Option<StatusCode>,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line)
    }
}

impl std::error::Error for ApiFailure {}

impl ApiFailure {
    /// The failure for an HTTP answer `status` with `body`: the API's own
    /// `{"error":{"code","message"}}` when the body is one, else the status' reason and the
    /// body's first line.
    fn from_answer(status: StatusCode, body: &str) -> ApiFailure {
        #[derive(serde::Deserialize)]
        struct Envelope {
            error: Detail,
        }
        #[derive(serde::Deserialize)]
        struct Detail {
            code: String,
            message: String,
        }
        let (code, message) = match serde_json::from_str::<Envelope>(body) {
            Ok(envelope) => (envelope.error.code, envelope.error.message),
            Err(_) => (
                status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_ascii_lowercase()
                    .replace(' ', "_"),
                body.lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect(),
            ),
        };
        let exit = match status.as_u16() {
            400 | 413 | 415 => EXIT_INVALID,
            401 | 403 => EXIT_AUTH,
            503 => EXIT_UNAVAILABLE,
            _ => 1,
        };
        ApiFailure {
            code: exit,
            line: one_line(&format!("error: {} {code}: {message}", status.as_u16())),
            status: Some(status),
        }
    }

    /// The failure for a request that got no HTTP answer at all.
    fn unreachable(base: &Url, err: &reqwest::Error) -> ApiFailure {
        // The innermost cause says what happened ("Connection refused (os error 111)");
        // reqwest's own message repeats the URL with the whole path.
        let mut cause: &dyn std::error::Error = err;
        while let Some(source) = cause.source() {
            cause = source;
        }
        let what = if err.is_timeout() {
            "no answer in time".to_owned()
        } else {
            cause.to_string()
        };
        ApiFailure {
            code: EXIT_UNAVAILABLE,
            line: one_line(&format!("error: cannot reach the API at {base}: {what}")),
            status: None,
        }
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A client of one node's HTTP API with one key.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    base: Url,
    key: String,
}

impl Api {
    /// A client for `opts`; a malformed URL is a usage error.
    pub(crate) fn new(opts: &ApiOpts) -> anyhow::Result<Api> {
        let mut base = Url::parse(opts.url.trim()).map_err(|err| {
            crate::CliExit(EXIT_INVALID, format!("--api {}: {err}", opts.url.trim()))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(crate::CliExit(
                EXIT_INVALID,
                format!("--api {base}: not an http:// or https:// URL"),
            )
            .into());
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let mut http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("longlink-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &opts.ca {
            let pem = std::fs::read(path).map_err(|err| {
                crate::CliExit(EXIT_INVALID, format!("--api-ca {}: {err}", path.display()))
            })?;
            let ca = reqwest::Certificate::from_pem(&pem).map_err(|err| {
                crate::CliExit(EXIT_INVALID, format!("--api-ca {}: {err}", path.display()))
            })?;
            http = http.add_root_certificate(ca);
        }
        let http = http
            .build()
            .map_err(|err| anyhow::anyhow!("cannot set up the HTTP client: {err}"))?;
        Ok(Api {
            http,
            base,
            key: opts.api_key.clone(),
        })
    }

    /// The URL of `segments` below the base (each segment percent-encoded).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// `GET` of `segments` with `query`; the answer's JSON as `T`.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        wait: Duration,
    ) -> anyhow::Result<T> {
        let mut url = self.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        self.send(Method::GET, url, None::<&()>, wait).await
    }

    /// `POST` of `body` as JSON to `segments`; the answer's JSON as `T`.
    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(Method::POST, self.url(segments), Some(body), Duration::ZERO)
            .await
    }

    /// `DELETE` of `segments`; the answer's JSON as `T`.
    pub(crate) async fn delete<T: DeserializeOwned>(&self, segments: &[&str]) -> anyhow::Result<T> {
        self.delete_with(segments, &[]).await
    }

    /// `DELETE` of `segments` with `query`; the answer's JSON as `T`.
    pub(crate) async fn delete_with<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        let mut url = self.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        self.send(Method::DELETE, url, None::<&()>, Duration::ZERO)
            .await
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
        wait: Duration,
    ) -> anyhow::Result<T> {
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(&self.key)
            .timeout(CALL_TIMEOUT + wait);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|err| ApiFailure::unreachable(&self.base, &err))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|err| ApiFailure::unreachable(&self.base, &err))?;
        if !status.is_success() {
            return Err(ApiFailure::from_answer(status, &text).into());
        }
        serde_json::from_str(&text).map_err(|err| {
            ApiFailure {
                code: 1,
                line: one_line(&format!(
                    "error: {} {method} {}: unexpected answer ({err})",
                    status.as_u16(),
                    url.path()
                )),
                status: None,
            }
            .into()
        })
    }
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds, e.g. `2026-11-23T18:55:57.857Z`.
pub(crate) fn utc_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 → civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_are_one_line_with_a_code_by_kind() {
        let failure = ApiFailure::from_answer(
            StatusCode::UNAUTHORIZED,
            r#"{"error":{"code":"unauthenticated","message":"unknown API key"}}"#,
        );
        assert_eq!(failure.line, "error: 401 unauthenticated: unknown API key");
        assert_eq!(failure.code, EXIT_AUTH);
        let failure = ApiFailure::from_answer(StatusCode::BAD_GATEWAY, "<html>\nbad\n</html>");
        assert_eq!(failure.line, "error: 502 bad_gateway: <html>");
        assert_eq!(failure.code, 1);
        let failure = ApiFailure::from_answer(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":{"code":"overloaded","message":"too many\npushes"}}"#,
        );
        assert_eq!(failure.line, "error: 503 overloaded: too many pushes");
        assert_eq!(failure.code, EXIT_UNAVAILABLE);
    }

    #[test]
    fn urls_keep_a_base_path_and_encode_segments() {
        let api = Api::new(&ApiOpts {
            url: "http://h:1/longlink".to_owned(),
            api_key: "k".to_owned(),
            ca: None,
        })
        .unwrap();
        assert_eq!(
            api.url(&["v1", "presence", "129", "a b/c"]).as_str(),
            "http://h:1/longlink/v1/presence/129/a%20b%2Fc"
        );
        assert!(
            Api::new(&ApiOpts {
                url: "ftp://h".to_owned(),
                api_key: "k".to_owned(),
                ca: None,
            })
            .is_err()
        );
    }

    #[test]
    fn dates() {
        assert_eq!(utc_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
    }
}
