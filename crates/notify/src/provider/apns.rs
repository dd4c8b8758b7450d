//! Apple Push Notification service, token-based: `POST /3/device/<token>` over HTTP/2 with
//! an ES256 provider token (JWT) signed by the team's `.p8` key. Apple rejects a token older
//! than one hour (403 ExpiredProviderToken) and one refreshed more often than every 20
//! minutes (429 TooManyProviderTokenUpdates), so one token is cached and replaced once it is
//! 50 minutes old — or at once when APNs says it expired or is invalid (then the request is
//! retried once with the new one).
//!
//! Apple's answers (per "Handling notification responses from APNs"): 200 ok; 410
//! Unregistered and 400 BadDeviceToken / DeviceTokenNotForTopic → the token is dead (note:
//! a sandbox token sent to production also gives BadDeviceToken — keep `sandbox` right, a
//! wrong setting would drop every token); 429 → rate limited; 500/503 → unavailable;
//! 403 provider-token reasons → refresh and retry once; other 4xx → rejected.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::tls::{self, Answer};
use super::{Clock, Notification, Provider, ProviderConfigError, SendError, system_clock};

/// Apple's production endpoint.
pub const APNS_PRODUCTION: &str = "https://api.push.apple.com";
/// Apple's development (sandbox) endpoint.
pub const APNS_SANDBOX: &str = "https://api.sandbox.push.apple.com";

/// A provider token is replaced when it is this old (Apple: at most 60 min, at least 20).
pub const JWT_MAX_AGE: Duration = Duration::from_secs(50 * 60);

/// Longest `apns-collapse-id` APNs accepts, in bytes.
const MAX_COLLAPSE_ID: usize = 64;

/// `[push.apns]`: token-based APNs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApnsConfig {
    /// Send through APNs.
    pub enabled: bool,
    /// The auth key file, `AuthKey_<key id>.p8` (PKCS#8 EC P-256 PEM). Read once at start.
    pub key_file: String,
    /// The key's id (10 characters, from the developer portal).
    pub key_id: String,
    /// The team id (the JWT's issuer).
    pub team_id: String,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
    /// Use Apple's development endpoint (tokens of development builds).
    pub sandbox: bool,
    /// Endpoint override ("" = by `sandbox`); tests point it at a local server.
    pub endpoint: String,
    /// An extra root CA (PEM) to trust ("" = the platform's roots only).
    pub ca_file: String,
    /// `apns-push-type`.
    pub push_type: String,
    /// Timeout of one request, connect included, in milliseconds.
    pub timeout_ms: u64,
    /// Sends per second (the engine's rate limit).
    pub rate_per_sec: u32,
    /// Burst above the rate.
    pub burst: u32,
}

impl Default for ApnsConfig {
    fn default() -> Self {
        ApnsConfig {
            enabled: false,
            key_file: String::new(),
            key_id: String::new(),
            team_id: String::new(),
            topic: String::new(),
            sandbox: false,
            endpoint: String::new(),
            ca_file: String::new(),
            push_type: "alert".to_owned(),
            timeout_ms: 10_000,
            rate_per_sec: 1000,
            burst: 100,
        }
    }
}

impl ApnsConfig {
    /// The endpoint in use: `endpoint`, else sandbox or production.
    pub fn effective_endpoint(&self) -> &str {
        if !self.endpoint.is_empty() {
            self.endpoint.trim_end_matches('/')
        } else if self.sandbox {
            APNS_SANDBOX
        } else {
            APNS_PRODUCTION
        }
    }
}

/// The `apns-id` of notification `id`: a UUID string (8-4-4-4-12, lowercase) carrying the
/// 64-bit id in its last 16 hex digits, so a response or a log line maps back to it.
pub fn apns_id(id: u64) -> String {
    format!(
        "6c6c6e69-0000-8000-{:04x}-{:012x}",
        id >> 48,
        id & 0xffff_ffff_ffff
    )
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

/// The APNs provider.
pub struct ApnsProvider {
    client: reqwest::Client,
    endpoint: String,
    topic: String,
    push_type: String,
    key_id: String,
    team_id: String,
    key: EncodingKey,
    /// The cached provider token and when it was made.
    jwt: Mutex<Option<(String, SystemTime)>>,
    clock: Clock,
}

impl std::fmt::Debug for ApnsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsProvider")
            .field("endpoint", &self.endpoint)
            .field("topic", &self.topic)
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .finish_non_exhaustive()
    }
}

impl ApnsProvider {
    /// Reads the key and builds the HTTP/2 client.
    ///
    /// # Errors
    /// A missing field, an unreadable key or CA file, a key that is not a PKCS#8 EC key.
    pub fn new(config: &ApnsConfig) -> Result<ApnsProvider, ProviderConfigError> {
        let err = |field: &str, msg: &str| ProviderConfigError::new("apns", field, msg);
        for (field, value) in [
            ("key_id", &config.key_id),
            ("team_id", &config.team_id),
            ("topic", &config.topic),
            ("push_type", &config.push_type),
        ] {
            if value.is_empty() {
                return Err(err(field, "required"));
            }
        }
        let pem = tls::read_file("apns", "key_file", &config.key_file)?;
        let key = EncodingKey::from_ec_pem(&pem).map_err(|e| {
            err(
                "key_file",
                &format!(
                    "{}: not a PKCS#8 EC P-256 PEM key (.p8): {e}",
                    config.key_file
                ),
            )
        })?;
        let provider = ApnsProvider {
            client: tls::client(
                "apns",
                &config.ca_file,
                Duration::from_millis(config.timeout_ms),
                true,
            )?,
            endpoint: config.effective_endpoint().to_owned(),
            topic: config.topic.clone(),
            push_type: config.push_type.clone(),
            key_id: config.key_id.clone(),
            team_id: config.team_id.clone(),
            key,
            jwt: Mutex::new(None),
            clock: system_clock(),
        };
        // Sign once now: a key of the wrong curve fails here, at start, not at the first send.
        provider.sign(SystemTime::now()).map_err(|e| {
            err(
                "key_file",
                &format!("{}: cannot sign: {e}", config.key_file),
            )
        })?;
        Ok(provider)
    }

    /// Uses `clock` instead of the system clock (tests age the provider token with it).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> ApnsProvider {
        self.clock = clock;
        self
    }

    fn sign(&self, now: SystemTime) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let claims = Claims {
            iss: &self.team_id,
            iat: super::unix_secs(now),
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
    }

    /// The cached provider token, or a new one when it is [`JWT_MAX_AGE`] old or is `stale`
    /// (the one APNs just refused; a concurrent send may have replaced it already).
    fn provider_token(&self, stale: Option<&str>) -> Result<String, SendError> {
        let now = (self.clock)();
        let mut cached = self.jwt.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((jwt, made)) = cached.as_ref() {
            let age = now.duration_since(*made).unwrap_or(Duration::ZERO);
            if age < JWT_MAX_AGE && stale != Some(jwt.as_str()) {
                return Ok(jwt.clone());
            }
        }
        let jwt = self
            .sign(now)
            .map_err(|e| SendError::Rejected(format!("cannot sign the provider token: {e}")))?;
        *cached = Some((jwt.clone(), now));
        Ok(jwt)
    }

    fn payload(n: &Notification) -> serde_json::Value {
        let mut alert = serde_json::Map::new();
        if !n.title.is_empty() {
            alert.insert("title".into(), n.title.clone().into());
        }
        alert.insert("body".into(), n.body.clone().into());
        let mut aps = serde_json::Map::new();
        aps.insert("alert".into(), alert.into());
        if let Some(badge) = n.badge {
            aps.insert("badge".into(), badge.into());
        }
        if !n.sound.is_empty() {
            aps.insert("sound".into(), n.sound.clone().into());
        }
        if !n.collapse_id.is_empty() {
            aps.insert("thread-id".into(), n.collapse_id.clone().into());
        }
        aps.insert("mutable-content".into(), 1.into());
        let mut root = serde_json::Map::new();
        for (k, v) in &n.data {
            if k != "aps" {
                root.insert(k.clone(), v.clone().into());
            }
        }
        root.insert("aps".into(), aps.into());
        root.into()
    }

    async fn post(&self, n: &Notification, jwt: &str) -> Result<Answer, SendError> {
        let token = percent_encoding::utf8_percent_encode(&n.token, tls::URL_VALUE);
        let url = format!("{}/3/device/{token}", self.endpoint);
        let expiration = if n.ttl.is_zero() {
            0
        } else {
            super::unix_secs((self.clock)() + n.ttl)
        };
        let mut req = self
            .client
            .post(url)
            .header("authorization", format!("bearer {jwt}"))
            .header("apns-topic", &self.topic)
            .header("apns-push-type", &self.push_type)
            .header("apns-priority", if n.high_priority { "10" } else { "5" })
            .header("apns-expiration", expiration.to_string())
            .header("apns-id", apns_id(n.id))
            .json(&Self::payload(n));
        let collapse = tls::truncate(&n.collapse_id, MAX_COLLAPSE_ID);
        if !collapse.is_empty() {
            req = req.header("apns-collapse-id", collapse);
        }
        tls::execute(req).await
    }
}

/// What one attempt came to.
enum Outcome {
    Done(Result<(), SendError>),
    /// 403 about the provider token: refresh it and retry.
    TokenRefused(String),
}

fn classify(answer: &Answer) -> Outcome {
    if answer.status == 200 {
        return Outcome::Done(Ok(()));
    }
    let json = answer.json();
    let reason = json["reason"].as_str().unwrap_or("").to_owned();
    let text = if reason.is_empty() {
        format!("HTTP {}", answer.status)
    } else {
        format!("HTTP {} {reason}", answer.status)
    };
    let err = match (answer.status, reason.as_str()) {
        (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => SendError::DeadToken(text),
        (403, "ExpiredProviderToken" | "InvalidProviderToken") => {
            return Outcome::TokenRefused(text);
        }
        (429, _) => SendError::RateLimited {
            reason: text,
            retry_after: answer.retry_after(),
        },
        (500..=599, _) => SendError::Unavailable(text),
        _ => SendError::Rejected(text),
    };
    Outcome::Done(Err(err))
}

#[async_trait]
impl Provider for ApnsProvider {
    fn name(&self) -> &str {
        "apns"
    }

    fn kind(&self) -> &'static str {
        "apns"
    }

    async fn send(&self, n: &Notification) -> Result<(), SendError> {
        let jwt = self.provider_token(None)?;
        let refused = match classify(&self.post(n, &jwt).await?) {
            Outcome::Done(r) => return r,
            Outcome::TokenRefused(text) => text,
        };
        tracing::info!(reason = %refused, "apns: provider token refused, signing a new one");
        let jwt = self.provider_token(Some(&jwt))?;
        match classify(&self.post(n, &jwt).await?) {
            Outcome::Done(r) => r,
            Outcome::TokenRefused(text) => Err(SendError::Rejected(text)),
        }
    }
}
