//! The push providers: one [`Provider`] per configured channel (`apns`, `fcm`, each
//! `[[push.http]]`). A provider turns one [`Notification`] into one HTTP request and classifies
//! the answer ([`SendError`]); retries, backoff, rate limits, the circuit breaker and failover
//! are the engine's, so every provider behaves alike there.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

pub mod apns;
pub mod fcm;
pub mod http;
mod tls;

pub use apns::{ApnsConfig, ApnsProvider};
pub use fcm::{FcmConfig, FcmProvider};
pub use http::{HttpProvider, HttpProviderConfig};

/// One notification for one device token, rendered and ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// longlink's notification id (the SDK acks it with `ack_notification`); also sent as
    /// data field `ll_nid` and, for APNs, as the `apns-id` UUID's low bits.
    pub id: u64,
    /// The device token.
    pub token: String,
    /// Title ("" = none: privacy mode may leave it out).
    pub title: String,
    /// Body text.
    pub body: String,
    /// Badge: unread messages for the device (None = leave the badge alone).
    pub badge: Option<u32>,
    /// Collapse key / thread id: a later notification with the same key replaces this one.
    pub collapse_id: String,
    /// How long the provider should keep trying to deliver (0 = once, now).
    pub ttl: Duration,
    /// High priority (wake the device now) or normal.
    pub high_priority: bool,
    /// Sound to play ("default", or a sound file the app bundles; "" = silent).
    pub sound: String,
    /// Extra key/value data for the app (appcode, uid, msgid of the newest message, count…).
    pub data: Vec<(String, String)>,
}

/// Why a send failed, as the engine acts on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The token is dead (APNs 410 Unregistered / BadDeviceToken, FCM UNREGISTERED): remove
    /// it, do not retry it.
    #[error("dead token: {0}")]
    DeadToken(String),
    /// The provider asks to slow down (429, QUOTA_EXCEEDED): back off, honouring
    /// `retry_after` when the provider gave one.
    #[error("rate limited: {reason}")]
    RateLimited {
        /// The provider's reason text.
        reason: String,
        /// The provider's Retry-After, when given.
        retry_after: Option<Duration>,
    },
    /// The provider is unavailable (5xx, UNAVAILABLE, INTERNAL): retry with backoff.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request was refused for a reason a retry will not fix (bad topic, bad payload,
    /// bad credentials): count it and try the next provider.
    #[error("rejected: {0}")]
    Rejected(String),
    /// No answer: connect/TLS/timeout failure. Retry with backoff.
    #[error("transport: {0}")]
    Transport(String),
}

impl SendError {
    /// The short kind used in statistics and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            SendError::DeadToken(_) => "dead_token",
            SendError::RateLimited { .. } => "rate_limited",
            SendError::Unavailable(_) => "unavailable",
            SendError::Rejected(_) => "rejected",
            SendError::Transport(_) => "transport",
        }
    }

    /// Whether the same request may succeed later (the engine retries these with backoff).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            SendError::RateLimited { .. } | SendError::Unavailable(_) | SendError::Transport(_)
        )
    }
}

/// A push channel.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The configured name ("apns", "fcm", or the `[[push.http]]` name): what tokens name.
    fn name(&self) -> &str;

    /// "apns", "fcm" or "http".
    fn kind(&self) -> &'static str;

    /// Sends one notification. `Ok` = the provider accepted it (2xx).
    ///
    /// # Errors
    /// [`SendError`], classified from the provider's documented answers.
    async fn send(&self, notification: &Notification) -> Result<(), SendError>;
}

/// The wall clock a provider reads (JWT `iat`, token expiry, `apns-expiration`). Tests
/// inject one to age a cached token without sleeping.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(SystemTime::now)
}

/// Seconds since the Unix epoch of `t` (0 before it).
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A configuration a provider cannot be built from; the message names the field and file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("push provider {provider}: {field}: {message}")]
pub struct ProviderConfigError {
    /// "apns", "fcm" or the http provider's name (`http[i]` when it has none).
    pub provider: String,
    /// The config field, e.g. `key_file`.
    pub field: String,
    /// What is wrong (never a secret's content).
    pub message: String,
}

impl ProviderConfigError {
    pub(crate) fn new(
        provider: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ProviderConfigError {
        ProviderConfigError {
            provider: provider.into(),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// One configured provider with its rate limit (the engine's governor uses these).
#[derive(Clone)]
pub struct BuiltProvider {
    /// The provider.
    pub provider: Arc<dyn Provider>,
    /// Sends per second allowed.
    pub rate_per_sec: u32,
    /// Burst above the rate.
    pub burst: u32,
}

impl std::fmt::Debug for BuiltProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltProvider")
            .field("name", &self.provider.name())
            .field("kind", &self.provider.kind())
            .field("rate_per_sec", &self.rate_per_sec)
            .field("burst", &self.burst)
            .finish()
    }
}

/// Builds the enabled providers: APNs and FCM when `enabled`, every `[[push.http]]` entry.
/// Credentials are read from their files here, once; a later change of a file needs a
/// restart.
///
/// # Errors
/// The first bad setting: an unreadable or malformed key file, a missing id, an invalid
/// template, a duplicate or reserved name, a zero rate or timeout.
pub fn build_providers(
    apns: &ApnsConfig,
    fcm: &FcmConfig,
    http: &[HttpProviderConfig],
) -> Result<Vec<BuiltProvider>, ProviderConfigError> {
    let mut out: Vec<BuiltProvider> = Vec::new();
    if apns.enabled {
        let limits = check_limits("apns", apns.rate_per_sec, apns.burst, apns.timeout_ms)?;
        out.push(BuiltProvider {
            provider: Arc::new(ApnsProvider::new(apns)?),
            rate_per_sec: limits.0,
            burst: limits.1,
        });
    }
    if fcm.enabled {
        let limits = check_limits("fcm", fcm.rate_per_sec, fcm.burst, fcm.timeout_ms)?;
        out.push(BuiltProvider {
            provider: Arc::new(FcmProvider::new(fcm)?),
            rate_per_sec: limits.0,
            burst: limits.1,
        });
    }
    for (i, h) in http.iter().enumerate() {
        let label = if h.name.is_empty() {
            format!("http[{i}]")
        } else {
            h.name.clone()
        };
        if h.name.is_empty() {
            return Err(ProviderConfigError::new(label, "name", "required"));
        }
        if !h
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ProviderConfigError::new(
                label,
                "name",
                "only ASCII letters, digits, '-' and '_'",
            ));
        }
        if h.name == "apns" || h.name == "fcm" {
            return Err(ProviderConfigError::new(
                label,
                "name",
                "\"apns\" and \"fcm\" are the built-in providers' names",
            ));
        }
        if http[..i].iter().any(|o| o.name == h.name) {
            return Err(ProviderConfigError::new(
                label,
                "name",
                "duplicate [[push.http]] name",
            ));
        }
        let limits = check_limits(&label, h.rate_per_sec, h.burst, h.timeout_ms)?;
        out.push(BuiltProvider {
            provider: Arc::new(HttpProvider::new(h)?),
            rate_per_sec: limits.0,
            burst: limits.1,
        });
    }
    Ok(out)
}

fn check_limits(
    provider: &str,
    rate_per_sec: u32,
    burst: u32,
    timeout_ms: u64,
) -> Result<(u32, u32), ProviderConfigError> {
    if rate_per_sec == 0 {
        return Err(ProviderConfigError::new(
            provider,
            "rate_per_sec",
            "must be > 0",
        ));
    }
    if burst == 0 {
        return Err(ProviderConfigError::new(provider, "burst", "must be > 0"));
    }
    if timeout_ms == 0 {
        return Err(ProviderConfigError::new(
            provider,
            "timeout_ms",
            "must be > 0",
        ));
    }
    Ok((rate_per_sec, burst))
}
