//! The notifier's configuration (`[push]` in the node's config file). Every field has a
//! default, so an empty section gives a working notifier, and unknown fields are refused, so
//! a typo does not silently leave a default in force.
//!
//! The provider sections (`apns`, `fcm`, `[[push.http]]`) are the providers' own config
//! types; the engine only reads their names and rate limits through the built providers.

use serde::Deserialize;

use crate::provider::apns::ApnsConfig;
use crate::provider::fcm::FcmConfig;
use crate::provider::http::HttpProviderConfig;

/// `[push]`: when to notify, how to send, how to choose a provider, and the rules per appcode.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Whether offline push notifications run at all (default true; a node without any
    /// configured provider notifies nobody anyway).
    pub enabled: bool,
    /// How long after a message was stored a device it did not reach is notified, in ms
    /// (default 3000): a device that reconnects and acks within this grace gets nothing.
    pub grace_ms: u64,
    /// A device notified less than this many seconds ago waits until then, and everything
    /// that arrived meanwhile goes into one notification (default 10).
    pub collapse_secs: u64,
    /// A notification the device has not receipted after this many seconds counts as not
    /// delivered for provider selection (default 300).
    pub receipt_timeout_secs: u64,
    /// Retries of a retryable provider error (429, 5xx, transport) before the next provider
    /// is tried (default 2).
    pub max_retries: u32,
    /// First retry backoff in ms, doubled per retry, capped at 5 s, jittered (default 200).
    pub backoff_ms: u64,
    /// Consecutive retryable failures of a provider that open its circuit breaker
    /// (default 5).
    pub breaker_failures: u32,
    /// How long an open breaker stays open before one trial request (default 30).
    pub breaker_open_secs: u64,
    /// Discount of old evidence per new observation of a (device class, provider) pair
    /// (default 0.97): a provider that stops delivering is abandoned within tens of
    /// notifications.
    pub discount: f64,
    /// Seed of the selector's random numbers (0 = a random seed): a fixed seed makes a
    /// simulation reproducible.
    pub seed: u64,
    /// Capacity of the queue from `offer` to the outbox (default 65536); a full queue drops
    /// the offer (counted as `skipped{reason="dropped"}`), never the message.
    pub queue: usize,
    /// Sends in flight at once, over all providers (default 1024).
    pub max_in_flight: usize,
    /// Sends in flight at once to one provider (default 256): a slow provider holds at most
    /// this many of `max_in_flight`, so the others go on.
    pub max_in_flight_per_provider: usize,
    /// Rules per appcode; an appcode without a rule gets [`RuleConfig::default`].
    pub rules: Vec<RuleConfig>,
    /// `[push.apns]`: Apple's push service (off unless `enabled`).
    pub apns: ApnsConfig,
    /// `[push.fcm]`: Firebase Cloud Messaging (off unless `enabled`).
    pub fcm: FcmConfig,
    /// `[[push.http]]`: vendor channels and SMS gateways, one entry each.
    pub http: Vec<HttpProviderConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            grace_ms: 3000,
            collapse_secs: 10,
            receipt_timeout_secs: 300,
            max_retries: 2,
            backoff_ms: 200,
            breaker_failures: 5,
            breaker_open_secs: 30,
            discount: 0.97,
            seed: 0,
            queue: 65536,
            max_in_flight: 1024,
            max_in_flight_per_provider: 256,
            rules: Vec::new(),
            apns: ApnsConfig::default(),
            fcm: FcmConfig::default(),
            http: Vec::new(),
        }
    }
}

impl NotifyConfig {
    /// The rule of `appcode`: its `[[push.rules]]` entry, or the defaults.
    pub fn rule(&self, appcode: u32) -> Option<&RuleConfig> {
        self.rules.iter().find(|rule| rule.appcode == appcode)
    }

    /// Checks values that would make the notifier misbehave.
    ///
    /// # Errors
    /// A sentence naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.discount > 0.0 && self.discount <= 1.0) {
            return Err(format!(
                "push.discount must be in (0, 1], not {}",
                self.discount
            ));
        }
        for (name, value) in [
            ("queue", self.queue),
            ("max_in_flight", self.max_in_flight),
            (
                "max_in_flight_per_provider",
                self.max_in_flight_per_provider,
            ),
        ] {
            if value == 0 {
                return Err(format!("push.{name} must be at least 1"));
            }
        }
        if self.receipt_timeout_secs == 0 {
            return Err("push.receipt_timeout_secs must be at least 1".to_owned());
        }
        if self.breaker_failures == 0 {
            return Err("push.breaker_failures must be at least 1".to_owned());
        }
        let mut seen = std::collections::HashSet::new();
        for rule in &self.rules {
            if !seen.insert(rule.appcode) {
                return Err(format!(
                    "push.rules: appcode {} has two rules",
                    rule.appcode
                ));
            }
        }
        Ok(())
    }
}

/// `[[push.rules]]`: how one appcode's messages are notified.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    /// The appcode this rule is for.
    pub appcode: u32,
    /// Message types that notify (empty = all).
    pub msgtypes: Vec<u32>,
    /// Privacy mode: no sender, no content, only "You have N new messages".
    pub privacy: bool,
    /// Show the unread count of the device as the app's badge (default true).
    pub badge: bool,
    /// Notification sound ("default"; "" = silent).
    pub sound: String,
    /// How long the provider keeps trying to deliver, in seconds (default 86400).
    pub ttl_secs: u64,
    /// High priority: wake the device now (default true).
    pub high_priority: bool,
    /// App name shown as the title in privacy mode ("" = "New message").
    pub app_name: String,
    /// Title/body templates per content type; the first whose `content_type` matches (or is
    /// "*") wins, else the built-in defaults.
    pub templates: Vec<TemplateConfig>,
}

impl Default for RuleConfig {
    fn default() -> Self {
        Self {
            appcode: 0,
            msgtypes: Vec::new(),
            privacy: false,
            badge: true,
            sound: "default".to_owned(),
            ttl_secs: 86400,
            high_priority: true,
            app_name: String::new(),
            templates: Vec::new(),
        }
    }
}

impl RuleConfig {
    /// Whether messages of `msgtype` notify under this rule.
    pub fn notifies(&self, msgtype: u32) -> bool {
        self.msgtypes.is_empty() || self.msgtypes.contains(&msgtype)
    }
}

/// A title/body template for one content type. Placeholders: `{from}` (the sender),
/// `{count}` (messages in this notification), `{preview}` (the start of the newest message's
/// text), `{appcode}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemplateConfig {
    /// "text", "rich", "business" (the protocol's content types) or "*" for any.
    pub content_type: String,
    /// Title of a notification for one message.
    pub title: String,
    /// Body of a notification for one message.
    pub body: String,
    /// Body when the notification stands for several messages ("" = "{count} new messages").
    pub body_many: String,
}

impl Default for TemplateConfig {
    fn default() -> Self {
        Self {
            content_type: "*".to_owned(),
            title: "{from}".to_owned(),
            body: "{preview}".to_owned(),
            body_many: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = NotifyConfig::default();
        assert!(config.enabled);
        assert_eq!(config.grace_ms, 3000);
        assert_eq!(config.collapse_secs, 10);
        assert_eq!(config.receipt_timeout_secs, 300);
        assert_eq!(config.max_retries, 2);
        assert_eq!(config.breaker_failures, 5);
        assert!((config.discount - 0.97).abs() < 1e-12);
        assert_eq!(config.queue, 65536);
        assert!(config.validate().is_ok());
        let rule = RuleConfig::default();
        assert!(rule.badge && rule.high_priority);
        assert_eq!(rule.ttl_secs, 86400);
        assert!(rule.notifies(7));
    }

    #[test]
    fn deserializes_partial_and_refuses_unknown_fields() {
        let config: NotifyConfig = serde_json::from_str(
            r#"{"grace_ms": 500, "rules": [{"appcode": 129, "msgtypes": [1], "privacy": true,
                 "templates": [{"content_type": "text", "title": "{from} says"}]}]}"#,
        )
        .expect("config");
        assert_eq!(config.grace_ms, 500);
        assert_eq!(config.collapse_secs, 10);
        let rule = config.rule(129).expect("rule");
        assert!(rule.privacy && rule.badge);
        assert!(!rule.notifies(2));
        assert_eq!(rule.templates[0].body, "{preview}");
        assert!(serde_json::from_str::<NotifyConfig>(r#"{"grace": 1}"#).is_err());
        let bad = NotifyConfig {
            discount: 0.0,
            ..NotifyConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
