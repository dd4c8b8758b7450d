//! The notifier's Prometheus metrics, registered in the node's registry (so `/metrics` shows
//! them next to the gate's and logic's): what was sent, failed and receipted per provider,
//! what was skipped and why, and how many notifications wait in the outbox.

use longlink_metrics::{Counter, Family, Gauge, Label, Registry, label};

/// Two labels, e.g. `{provider, kind}`.
type Label2 = [(&'static str, String); 2];

/// Every metric the notifier records. Cheap to clone (shared inside).
#[derive(Debug, Clone, Default)]
pub struct NotifyMetrics {
    sent: Family<Label, Counter>,
    failed: Family<Label2, Counter>,
    receipted: Family<Label, Counter>,
    skipped: Family<Label, Counter>,
    /// Outbox rows waiting to be sent (refreshed by the scheduler).
    pub outbox_pending: Gauge,
}

impl NotifyMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "longlink_notifications_sent",
            "Notifications accepted by a push provider, per provider",
            metrics.sent.clone(),
        );
        registry.register(
            "longlink_notifications_failed",
            "Failed notification sends per provider and kind (dead_token, rate_limited, unavailable, rejected, transport, breaker_open, no_receipt)",
            metrics.failed.clone(),
        );
        registry.register(
            "longlink_notifications_receipted",
            "Notifications the device reported as received (ack_notification), per provider",
            metrics.receipted.clone(),
        );
        registry.register(
            "longlink_notifications_skipped",
            "Notifications not sent, per reason (acked, rule, dropped, no_provider)",
            metrics.skipped.clone(),
        );
        registry.register(
            "longlink_notify_outbox_pending",
            "Outbox rows waiting to be notified",
            metrics.outbox_pending.clone(),
        );
        metrics
    }

    /// `provider` accepted a notification.
    pub fn sent(&self, provider: &str) {
        self.sent.get_or_create(&label("provider", provider)).inc();
    }

    /// A send to `provider` failed with `kind`.
    pub fn failed(&self, provider: &str, kind: &str) {
        self.failed
            .get_or_create(&[("provider", provider.to_owned()), ("kind", kind.to_owned())])
            .inc();
    }

    /// A device receipted a notification of `provider`.
    pub fn receipted(&self, provider: &str) {
        self.receipted
            .get_or_create(&label("provider", provider))
            .inc();
    }

    /// `count` notifications were not sent, for `reason`.
    pub fn skipped(&self, reason: &str, count: u64) {
        self.skipped
            .get_or_create(&label("reason", reason))
            .inc_by(count);
    }
}
