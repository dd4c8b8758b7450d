//! Firebase Cloud Messaging, HTTP v1: `POST /v1/projects/<project>/messages:send` with an
//! OAuth 2.0 access token of a service account. The token comes from Google's token endpoint
//! in exchange for an RS256 JWT signed with the account's key (the JWT-bearer grant, as
//! Google's client libraries do it); it is cached until 60 s before it expires, and only one
//! exchange runs at a time (senders wait for it rather than each asking for a token).
//!
//! Errors follow FCM's `FcmError` codes: UNREGISTERED → dead token; QUOTA_EXCEEDED → rate
//! limited (Retry-After); UNAVAILABLE / INTERNAL → unavailable; 401 UNAUTHENTICATED and
//! THIRD_PARTY_AUTH_ERROR → drop the cached token and retry once, else rejected;
//! INVALID_ARGUMENT and SENDER_ID_MISMATCH → rejected. SENDER_ID_MISMATCH means the token
//! belongs to another Firebase project: for that token it will never work, but the usual
//! cause is a service-account file of the wrong project, where treating it as dead would
//! delete every device's FCM token at once — so it is only rejected (the selector then
//! prefers the device's other providers) and the operator sees it in the error counts.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::tls::{self, Answer};
use super::{Clock, Notification, Provider, ProviderConfigError, SendError, system_clock};

/// Google's FCM endpoint.
pub const FCM_ENDPOINT: &str = "https://fcm.googleapis.com";
/// The OAuth scope of FCM sends.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// A cached access token is replaced this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// The assertion's lifetime (Google's maximum).
const ASSERTION_LIFETIME: u64 = 3600;

/// `[push.fcm]`: FCM HTTP v1.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FcmConfig {
    /// Send through FCM.
    pub enabled: bool,
    /// The service-account JSON key file (project_id, private_key_id, private_key,
    /// client_email, token_uri). Read once at start.
    pub service_account_file: String,
    /// The FCM endpoint (tests point it at a local server).
    pub endpoint: String,
    /// OAuth token endpoint override ("" = the file's `token_uri`).
    pub token_uri: String,
    /// An extra root CA (PEM) to trust ("" = the platform's roots only).
    pub ca_file: String,
    /// Timeout of one request, connect included, in milliseconds.
    pub timeout_ms: u64,
    /// Sends per second (the engine's rate limit).
    pub rate_per_sec: u32,
    /// Burst above the rate.
    pub burst: u32,
}

impl Default for FcmConfig {
    fn default() -> Self {
        FcmConfig {
            enabled: false,
            service_account_file: String::new(),
            endpoint: FCM_ENDPOINT.to_owned(),
            token_uri: String::new(),
            ca_file: String::new(),
            timeout_ms: 10_000,
            rate_per_sec: 1000,
            burst: 100,
        }
    }
}

/// The fields of the service-account file longlink uses.
#[derive(Deserialize)]
struct ServiceAccount {
    project_id: String,
    private_key_id: String,
    private_key: String,
    client_email: String,
    #[serde(default)]
    token_uri: String,
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Clone)]
struct AccessToken {
    value: String,
    expires_at: SystemTime,
}

/// The FCM provider.
pub struct FcmProvider {
    client: reqwest::Client,
    send_url: String,
    token_uri: String,
    project_id: String,
    client_email: String,
    private_key_id: String,
    key: EncodingKey,
    /// The cached access token; the lock is held across an exchange (one at a time).
    token: tokio::sync::Mutex<Option<AccessToken>>,
    clock: Clock,
}

impl std::fmt::Debug for FcmProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmProvider")
            .field("send_url", &self.send_url)
            .field("token_uri", &self.token_uri)
            .field("client_email", &self.client_email)
            .finish_non_exhaustive()
    }
}

impl FcmProvider {
    /// Reads the service account and builds the client.
    ///
    /// # Errors
    /// An unreadable or malformed service-account file, a key that is not RSA PKCS#8 PEM, an
    /// unreadable CA file.
    pub fn new(config: &FcmConfig) -> Result<FcmProvider, ProviderConfigError> {
        let file = &config.service_account_file;
        let err = |msg: String| ProviderConfigError::new("fcm", "service_account_file", msg);
        let raw = tls::read_file("fcm", "service_account_file", file)?;
        let account: ServiceAccount = serde_json::from_slice(&raw)
            .map_err(|e| err(format!("{file}: not a service-account JSON key: {e}")))?;
        for (field, value) in [
            ("project_id", &account.project_id),
            ("private_key_id", &account.private_key_id),
            ("client_email", &account.client_email),
        ] {
            if value.is_empty() {
                return Err(err(format!("{file}: {field} is empty")));
            }
        }
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes())
            .map_err(|e| err(format!("{file}: private_key is not an RSA PEM key: {e}")))?;
        let token_uri = if config.token_uri.is_empty() {
            account.token_uri.clone()
        } else {
            config.token_uri.clone()
        };
        if token_uri.is_empty() {
            return Err(err(format!("{file}: no token_uri (and none configured)")));
        }
        let endpoint = if config.endpoint.is_empty() {
            FCM_ENDPOINT
        } else {
            config.endpoint.trim_end_matches('/')
        };
        let project = percent_encoding::utf8_percent_encode(&account.project_id, tls::URL_VALUE);
        let provider = FcmProvider {
            client: tls::client(
                "fcm",
                &config.ca_file,
                Duration::from_millis(config.timeout_ms),
                false,
            )?,
            send_url: format!("{endpoint}/v1/projects/{project}/messages:send"),
            token_uri,
            project_id: account.project_id,
            client_email: account.client_email,
            private_key_id: account.private_key_id,
            key,
            token: tokio::sync::Mutex::new(None),
            clock: system_clock(),
        };
        provider
            .assertion(SystemTime::now())
            .map_err(|e| err(format!("{file}: cannot sign with private_key: {e}")))?;
        Ok(provider)
    }

    /// Uses `clock` instead of the system clock (tests expire the access token with it).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> FcmProvider {
        self.clock = clock;
        self
    }

    /// The project the service account belongs to.
    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    fn assertion(&self, now: SystemTime) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.private_key_id.clone());
        let iat = super::unix_secs(now);
        let claims = AssertionClaims {
            iss: &self.client_email,
            scope: FCM_SCOPE,
            aud: &self.token_uri,
            iat,
            exp: iat + ASSERTION_LIFETIME,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
    }

    /// The cached access token, or a new one when it is within [`TOKEN_MARGIN`] of expiry or
    /// is `stale` (the one FCM just refused).
    async fn access_token(&self, stale: Option<&str>) -> Result<String, SendError> {
        let mut cached = self.token.lock().await;
        let now = (self.clock)();
        if let Some(t) = cached.as_ref()
            && now + TOKEN_MARGIN < t.expires_at
            && stale != Some(t.value.as_str())
        {
            return Ok(t.value.clone());
        }
        *cached = None;
        let fresh = self.exchange(now).await?;
        let value = fresh.value.clone();
        *cached = Some(fresh);
        Ok(value)
    }

    /// The JWT-bearer grant: assertion → access token.
    async fn exchange(&self, now: SystemTime) -> Result<AccessToken, SendError> {
        let assertion = self
            .assertion(now)
            .map_err(|e| SendError::Rejected(format!("oauth: cannot sign the assertion: {e}")))?;
        let req = self.client.post(&self.token_uri).form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion.as_str()),
        ]);
        let answer = tls::execute(req).await?;
        if answer.status == 200 {
            let token: TokenResponse = serde_json::from_slice(&answer.body).map_err(|e| {
                SendError::Unavailable(format!("oauth: unexpected token response: {e}"))
            })?;
            if token.access_token.is_empty() {
                return Err(SendError::Unavailable(
                    "oauth: empty access_token".to_owned(),
                ));
            }
            return Ok(AccessToken {
                value: token.access_token,
                expires_at: now + Duration::from_secs(token.expires_in),
            });
        }
        let json = answer.json();
        let text = format!(
            "oauth: HTTP {} {} {}",
            answer.status,
            json["error"].as_str().unwrap_or(""),
            json["error_description"].as_str().unwrap_or("")
        )
        .trim_end()
        .to_owned();
        Err(match answer.status {
            429 => SendError::RateLimited {
                reason: text,
                retry_after: answer.retry_after(),
            },
            500..=599 => SendError::Unavailable(text),
            _ => SendError::Rejected(text),
        })
    }

    fn body(n: &Notification) -> serde_json::Value {
        let data: serde_json::Map<String, serde_json::Value> = n
            .data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        let mut notification = serde_json::json!({ "body": n.body });
        if !n.title.is_empty() {
            notification["title"] = n.title.clone().into();
        }
        let mut android_notification = serde_json::Map::new();
        let mut android = serde_json::json!({
            "priority": if n.high_priority { "HIGH" } else { "NORMAL" },
            "ttl": format!("{}s", n.ttl.as_secs()),
        });
        let mut apns_headers = serde_json::Map::new();
        if !n.collapse_id.is_empty() {
            android["collapse_key"] = n.collapse_id.clone().into();
            android_notification.insert("tag".into(), n.collapse_id.clone().into());
            apns_headers.insert(
                "apns-collapse-id".into(),
                tls::truncate(&n.collapse_id, 64).into(),
            );
        }
        let mut aps = serde_json::Map::new();
        if !n.sound.is_empty() {
            android_notification.insert("sound".into(), n.sound.clone().into());
            aps.insert("sound".into(), n.sound.clone().into());
        }
        if let Some(badge) = n.badge {
            android_notification.insert("notification_count".into(), badge.into());
            aps.insert("badge".into(), badge.into());
        }
        android["notification"] = android_notification.into();
        serde_json::json!({
            "message": {
                "token": n.token,
                "notification": notification,
                "data": data,
                "android": android,
                "apns": {"headers": apns_headers, "payload": {"aps": aps}},
            }
        })
    }
}

/// What one attempt came to.
enum Outcome {
    Done(Result<(), SendError>),
    /// The access token was refused: drop it and retry.
    TokenRefused(String),
}

fn classify(answer: &Answer) -> Outcome {
    if (200..300).contains(&answer.status) {
        return Outcome::Done(Ok(()));
    }
    let json = answer.json();
    let error = &json["error"];
    let status = error["status"].as_str().unwrap_or("");
    let code = error["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| {
            d["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("google.firebase.fcm.v1.FcmError"))
        })
        .and_then(|d| d["errorCode"].as_str())
        // Without an FcmError detail, the canonical status says as much (UNAVAILABLE…).
        .unwrap_or(status);
    let text = format!(
        "HTTP {} {} {} {}",
        answer.status,
        if code == status { "" } else { code },
        status,
        error["message"].as_str().unwrap_or("")
    )
    .split_whitespace()
    .collect::<Vec<_>>()
    .join(" ");
    let err = match (answer.status, code) {
        (_, "UNREGISTERED") => SendError::DeadToken(text),
        (401, _) | (_, "THIRD_PARTY_AUTH_ERROR") => return Outcome::TokenRefused(text),
        (_, "QUOTA_EXCEEDED") | (429, _) => SendError::RateLimited {
            reason: text,
            retry_after: answer.retry_after(),
        },
        (_, "UNAVAILABLE" | "INTERNAL") | (500..=599, _) => SendError::Unavailable(text),
        _ => SendError::Rejected(text),
    };
    Outcome::Done(Err(err))
}

#[async_trait]
impl Provider for FcmProvider {
    fn name(&self) -> &str {
        "fcm"
    }

    fn kind(&self) -> &'static str {
        "fcm"
    }

    async fn send(&self, n: &Notification) -> Result<(), SendError> {
        let body = Self::body(n);
        let post = |token: String| {
            tls::execute(
                self.client
                    .post(&self.send_url)
                    .bearer_auth(token)
                    .json(&body),
            )
        };
        let token = self.access_token(None).await?;
        let refused = match classify(&post(token.clone()).await?) {
            Outcome::Done(r) => return r,
            Outcome::TokenRefused(text) => text,
        };
        tracing::info!(reason = %refused, "fcm: access token refused, fetching a new one");
        let token = self.access_token(Some(&token)).await?;
        match classify(&post(token).await?) {
            Outcome::Done(r) => r,
            Outcome::TokenRefused(text) => Err(SendError::Rejected(text)),
        }
    }
}
