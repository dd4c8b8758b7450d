//! The few business-API calls the scenarios make (docs/api.md): `POST /v1/push`,
//! `GET /v1/push/{id}`, `GET /v1/presence/{appcode}`, `PUT /v1/devices/…` (`bench notify`),
//! over one pooled reqwest client.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};

/// The default configuration's API key.
pub(crate) const DEV_API_KEY: &str = "dev-api-key-change-me";
/// Timeout of one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What `POST /v1/push` answered.
#[derive(Debug)]
pub(crate) enum PushAnswer {
    Accepted {
        push_id: u64,
        targets: u64,
    },
    /// A refusal: status and the API's error code (`overloaded` is worth a retry).
    Refused {
        status: u16,
        code: String,
    },
}

/// The body of `POST /v1/push`.
#[derive(Debug, Serialize)]
pub(crate) struct PushBody<'a> {
    pub(crate) appcode: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) uids: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) all: Option<bool>,
    pub(crate) msgtype: u32,
    pub(crate) content: &'a str,
    pub(crate) persist: bool,
    pub(crate) from: &'a str,
}

/// `GET /v1/push/{id}`: the counters the reports sum.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
pub(crate) struct PushStats {
    pub(crate) created_ms: u64,
    pub(crate) finished_ms: u64,
    pub(crate) done: bool,
    pub(crate) targets: u64,
    pub(crate) online: u64,
    pub(crate) written: u64,
    pub(crate) acked: u64,
    pub(crate) stored_offline: u64,
    pub(crate) expired: u64,
    pub(crate) failed: u64,
    pub(crate) stale_sessions: u64,
}

impl PushStats {
    /// Adds `other`'s counters (the times are left alone).
    pub(crate) fn add(&mut self, other: &PushStats) {
        self.targets += other.targets;
        self.online += other.online;
        self.written += other.written;
        self.acked += other.acked;
        self.stored_offline += other.stored_offline;
        self.expired += other.expired;
        self.failed += other.failed;
        self.stale_sessions += other.stale_sessions;
    }
}

/// `GET /v1/push/{id}`: the counters and the msgid (a decimal string: u64 does not fit a JSON
/// number).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PushOutcome {
    #[serde(flatten)]
    pub(crate) stats: PushStats,
    #[serde(default)]
    msgid: Option<String>,
}

impl PushOutcome {
    /// The push's msgid, once stored.
    pub(crate) fn msgid(&self) -> Option<u64> {
        self.msgid.as_deref().and_then(|id| id.parse().ok())
    }
}

#[derive(Debug, Deserialize)]
struct Accepted {
    push_id: u64,
    targets: u64,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    code: String,
}

#[derive(Debug, Deserialize)]
struct OnlineCount {
    online_users: u64,
    sessions: u64,
}

/// A client of one node's HTTP API.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    pub(crate) fn new(addr: SocketAddr, key: &str) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Api {
            http,
            base: format!("http://{addr}"),
            key: key.to_owned(),
        })
    }

    /// `POST /v1/push`.
    pub(crate) async fn push(&self, body: &PushBody<'_>) -> anyhow::Result<PushAnswer> {
        let response = self
            .http
            .post(format!("{}/v1/push", self.base))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {}/v1/push", self.base))?;
        let status = response.status();
        let text = response.text().await.context("POST /v1/push: body")?;
        if status.is_success() {
            let accepted: Accepted = serde_json::from_str(&text)
                .with_context(|| format!("POST /v1/push: unexpected answer {text}"))?;
            return Ok(PushAnswer::Accepted {
                push_id: accepted.push_id,
                targets: accepted.targets,
            });
        }
        let code = serde_json::from_str::<ErrorBody>(&text)
            .map_or_else(|_| "unknown".to_owned(), |body| body.error.code);
        Ok(PushAnswer::Refused {
            status: status.as_u16(),
            code,
        })
    }

    /// `GET /v1/push/{id}`.
    pub(crate) async fn push_stats(&self, push_id: u64) -> anyhow::Result<PushStats> {
        self.get(&format!("/v1/push/{push_id}")).await
    }

    /// `GET /v1/push/{id}` with the push's msgid (shared by every recipient; `None` before it
    /// is stored).
    pub(crate) async fn push_outcome(&self, push_id: u64) -> anyhow::Result<PushOutcome> {
        self.get(&format!("/v1/push/{push_id}")).await
    }

    /// `PUT /v1/devices/{appcode}/{uid}/{device}`: registers `device` with one push token of
    /// `provider` (replacing its registration).
    pub(crate) async fn put_device(
        &self,
        appcode: u32,
        uid: &str,
        device: &str,
        provider: &str,
        token: &str,
    ) -> anyhow::Result<()> {
        let path = format!("/v1/devices/{appcode}/{uid}/{device}");
        let body = serde_json::json!({
            "platform": "android",
            "vendor": "bench",
            "app_version": "1",
            "tokens": [{"provider": provider, "token": token}],
        });
        let response = self
            .http
            .put(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("PUT {}{path}", self.base))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(anyhow!("PUT {path}: {status}: {text}"));
        }
        Ok(())
    }

    /// `GET /v1/presence/{appcode}`: (online users, sessions).
    pub(crate) async fn online(&self, appcode: u32) -> anyhow::Result<(u64, u64)> {
        let count: OnlineCount = self.get(&format!("/v1/presence/{appcode}")).await?;
        Ok((count.online_users, count.sessions))
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("GET {}{path}", self.base))?;
        let status = response.status();
        let text = response.text().await.context("GET: body")?;
        if !status.is_success() {
            return Err(anyhow!("GET {path}: {status}: {text}"));
        }
        serde_json::from_str(&text).with_context(|| format!("GET {path}: unexpected answer"))
    }
}
