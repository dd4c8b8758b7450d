//! The push providers: one [`Provider`] per configured channel (`apns`, `fcm`, each
//! `[[push.http]]`). A provider turns one [`Notification`] into one HTTP request and classifies
//! the answer ([`SendError`]); retries, backoff, rate limits, the circuit breaker and failover
//! are the engine's, so every provider behaves alike there.

use std::time::Duration;

use async_trait::async_trait;

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
