//! Offline push notifications (issue 12, seed 002): the contract between logic and the API,
//! which ask, and `longlink-notify`, which registers devices' push tokens and tells users
//! through APNs, FCM or a vendor HTTP channel that a message waits for them.
//!
//! Logic calls [`Notifications::offer`] after it delivered a stored message: the receiver's
//! devices that the message did not reach over a long connection may get a notification after
//! a grace period. `offer` never waits and never fails the caller: a slow or dead provider
//! must not delay storage, delivery or the sender's ACK.

use async_trait::async_trait;
use bytes::Bytes;

/// Longest provider name, token, platform, vendor or app version accepted.
pub const MAX_FIELD_BYTES: usize = 4096;

/// Most push tokens one device may hold (one per provider).
pub const MAX_TOKENS_PER_DEVICE: usize = 8;

/// A stored message that may need a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyCandidate {
    /// The receiver's appcode.
    pub appcode: u32,
    /// The receiver.
    pub uid: String,
    /// The stored message.
    pub msgid: u64,
    /// `true` for an s2c push, `false` for c2c.
    pub s2c: bool,
    /// Who sent it: a uid (c2c) or the push's sender label (s2c).
    pub from: String,
    /// Business message type (per-appcode rules choose which notify).
    pub msgtype: u32,
    /// `longlink_proto::ContentType` as i32 (templates per content type).
    pub content_type: i32,
    /// The content, or its first bytes (templates may show a preview unless privacy is on).
    pub content: Bytes,
    /// Devices of the receiver that got the message queued on a live connection: they are
    /// never notified for it.
    pub reached_devices: Vec<String>,
    /// Trace id of the message.
    pub log_id: u64,
}

/// What a device says about itself when it registers: its class for provider selection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceClass {
    /// "ios", "android", "web", … (free text, lower case by convention).
    pub platform: String,
    /// The maker's push ecosystem: "apple", "google", "huawei", "xiaomi", … ("" = unknown).
    pub vendor: String,
    /// The app's version ("" = unknown).
    pub app_version: String,
}

/// One push token of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushToken {
    /// The provider's configured name: "apns", "fcm" or an `[[push.http]]` name.
    pub provider: String,
    /// The provider's device token.
    pub token: String,
}

/// A device and its tokens, as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The user's appcode.
    pub appcode: u32,
    /// The user.
    pub uid: String,
    /// The device id (the LOGIN `device_id`).
    pub device: String,
    /// Its class.
    pub class: DeviceClass,
    /// Its tokens, one per provider.
    pub tokens: Vec<PushToken>,
    /// When the device last registered or changed (unix ms).
    pub updated_ms: u64,
}

/// Why a notification call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// A field is empty, too long, or names a provider that is not configured.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The device or token does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The durable registry or outbox failed.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Outcome counts of one provider for one device class, as `GET /v1/push-providers/stats`
/// shows them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderClassStats {
    /// The provider's name.
    pub provider: String,
    /// The device class ("ios/apple/2.3", "android/xiaomi/*", …).
    pub class: String,
    /// Notifications handed to the provider.
    pub sent: u64,
    /// Accepted by the provider (2xx).
    pub accepted: u64,
    /// Receipts reported by devices (`ack_notification`).
    pub receipts: u64,
    /// receipts / sent (0 when nothing was sent).
    pub receipt_rate: f64,
    /// Latency from send to receipt, median and 99th percentile, in ms (0 = no receipts).
    pub p50_ms: u64,
    /// See `p50_ms`.
    pub p99_ms: u64,
    /// Failures by kind ("dead_token", "rate_limited", "unavailable", "rejected", "transport",
    /// "breaker_open", "no_receipt"), sorted by kind.
    pub errors: Vec<(String, u64)>,
    /// The selector's current estimate of the receipt rate (posterior mean).
    pub estimate: f64,
}

/// A provider as a whole.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderStats {
    /// The provider's name.
    pub provider: String,
    /// "apns", "fcm" or "http".
    pub kind: String,
    /// "closed", "open" or "half_open".
    pub breaker: String,
    /// Per device class.
    pub classes: Vec<ProviderClassStats>,
}

/// Checks the fields of a device registration that every implementation refuses alike:
/// class fields and tokens of at most [`MAX_FIELD_BYTES`], a non-empty provider and token,
/// at most [`MAX_TOKENS_PER_DEVICE`] tokens and one per provider. (Whether a provider is
/// configured is the service's to say.)
///
/// # Errors
/// [`NotifyError::InvalidArgument`] naming the bad field.
pub fn check_registration(class: &DeviceClass, tokens: &[PushToken]) -> Result<(), NotifyError> {
    let bad = |message: String| Err(NotifyError::InvalidArgument(message));
    for (name, value) in [
        ("platform", &class.platform),
        ("vendor", &class.vendor),
        ("app_version", &class.app_version),
    ] {
        if value.len() > MAX_FIELD_BYTES {
            return bad(format!("{name} must be at most {MAX_FIELD_BYTES} bytes"));
        }
    }
    if tokens.len() > MAX_TOKENS_PER_DEVICE {
        return bad(format!(
            "a device holds at most {MAX_TOKENS_PER_DEVICE} tokens (one per provider), got {}",
            tokens.len()
        ));
    }
    for (at, token) in tokens.iter().enumerate() {
        for (name, value) in [("provider", &token.provider), ("token", &token.token)] {
            if value.is_empty() || value.len() > MAX_FIELD_BYTES {
                return bad(format!("{name} must be 1 to {MAX_FIELD_BYTES} bytes"));
            }
        }
        if tokens[..at].iter().any(|t| t.provider == token.provider) {
            return bad(format!(
                "two tokens of provider {:?}: a device holds one per provider",
                token.provider
            ));
        }
    }
    Ok(())
}

/// The notification service, as logic and the API see it.
#[async_trait]
pub trait Notifications: Send + Sync + 'static {
    /// Whether `(appcode, uid)` has a device with a push token: one in-memory lookup, so
    /// logic builds a [`NotifyCandidate`] only for users who could be notified.
    fn wants(&self, appcode: u32, uid: &str) -> bool;

    /// A stored message to the receiver was delivered to `reached_devices`; the receiver's
    /// other devices with push tokens may get a notification after the grace period. Never
    /// waits; an overload drops the offer (counted), never the message.
    fn offer(&self, candidate: NotifyCandidate);

    /// Adds or replaces the token of `token.provider` for the device (and its class).
    /// Returns the device as now registered.
    ///
    /// # Errors
    /// [`NotifyError::InvalidArgument`] or [`NotifyError::Unavailable`].
    async fn register(
        &self,
        appcode: u32,
        uid: &str,
        device: &str,
        class: DeviceClass,
        token: PushToken,
    ) -> Result<DeviceRecord, NotifyError>;

    /// Replaces the device's whole registration (class and every token): the API's PUT.
    ///
    /// # Errors
    /// [`NotifyError::InvalidArgument`] or [`NotifyError::Unavailable`].
    async fn put_device(
        &self,
        appcode: u32,
        uid: &str,
        device: &str,
        class: DeviceClass,
        tokens: Vec<PushToken>,
    ) -> Result<DeviceRecord, NotifyError>;

    /// The user's devices (all of them, or the one named).
    ///
    /// # Errors
    /// [`NotifyError::Unavailable`].
    async fn devices(
        &self,
        appcode: u32,
        uid: &str,
        device: Option<&str>,
    ) -> Result<Vec<DeviceRecord>, NotifyError>;

    /// Removes the device's token of `provider`, or every token of the device (`None`).
    /// Returns how many tokens were removed. A logout removes the device's tokens this way.
    ///
    /// # Errors
    /// [`NotifyError::Unavailable`].
    async fn remove(
        &self,
        appcode: u32,
        uid: &str,
        device: &str,
        provider: Option<&str>,
    ) -> Result<u32, NotifyError>;

    /// The device reports that these notifications reached it. Returns how many were known
    /// notifications of this device not receipted before (others are ignored: a receipt for
    /// someone else's notification changes nothing).
    ///
    /// # Errors
    /// [`NotifyError::Unavailable`].
    async fn receipts(
        &self,
        appcode: u32,
        uid: &str,
        device: &str,
        ids: &[u64],
    ) -> Result<u32, NotifyError>;

    /// Per provider and device class: sent, accepted, receipts, latency, errors.
    async fn provider_stats(&self) -> Vec<ProviderStats>;
}

/// No notifications: registration is refused, offers are ignored (a node without a
/// `[push]` provider, or a process without logic).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNotifications;

#[async_trait]
impl Notifications for NoNotifications {
    fn wants(&self, _appcode: u32, _uid: &str) -> bool {
        false
    }

    fn offer(&self, _candidate: NotifyCandidate) {}

    async fn register(
        &self,
        _appcode: u32,
        _uid: &str,
        _device: &str,
        _class: DeviceClass,
        token: PushToken,
    ) -> Result<DeviceRecord, NotifyError> {
        Err(NotifyError::InvalidArgument(format!(
            "push provider {:?} is not configured",
            token.provider
        )))
    }

    async fn put_device(
        &self,
        _appcode: u32,
        _uid: &str,
        _device: &str,
        _class: DeviceClass,
        _tokens: Vec<PushToken>,
    ) -> Result<DeviceRecord, NotifyError> {
        Err(NotifyError::InvalidArgument(
            "no push provider is configured".to_owned(),
        ))
    }

    async fn devices(
        &self,
        _appcode: u32,
        _uid: &str,
        _device: Option<&str>,
    ) -> Result<Vec<DeviceRecord>, NotifyError> {
        Ok(Vec::new())
    }

    async fn remove(
        &self,
        _appcode: u32,
        _uid: &str,
        _device: &str,
        _provider: Option<&str>,
    ) -> Result<u32, NotifyError> {
        Ok(0)
    }

    async fn receipts(
        &self,
        _appcode: u32,
        _uid: &str,
        _device: &str,
        _ids: &[u64],
    ) -> Result<u32, NotifyError> {
        Ok(0)
    }

    async fn provider_stats(&self) -> Vec<ProviderStats> {
        Vec::new()
    }
}
