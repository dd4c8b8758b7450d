//! What `GET /v1/push-providers/stats` shows: per provider and device class, notifications
//! sent, accepted, receipted, the receipt latency (HDR histograms, so p99 is exact enough at
//! any count) and the errors by kind. Counts since the node started; the selector keeps its
//! own discounted view for decisions, these are the plain totals operators read.

use std::collections::{BTreeMap, HashMap};

use hdrhistogram::Histogram;
use longlink_rpc::notify::ProviderClassStats;

/// Longest latency recorded (1 h); longer ones are clamped.
const MAX_LATENCY_MS: u64 = 3_600_000;

/// Counts of one (provider, class) pair.
#[derive(Debug)]
struct Entry {
    sent: u64,
    accepted: u64,
    receipts: u64,
    errors: BTreeMap<String, u64>,
    latency: Option<Histogram<u64>>,
}

impl Entry {
    fn new() -> Self {
        Self {
            sent: 0,
            accepted: 0,
            receipts: 0,
            errors: BTreeMap::new(),
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_MS, 2).ok(),
        }
    }
}

/// The totals of every (provider, class) pair. Not synchronised: the engine keeps it behind
/// a mutex.
#[derive(Debug, Default)]
pub struct Stats {
    entries: HashMap<(String, String), Entry>,
}

impl Stats {
    fn entry(&mut self, provider: &str, class: &str) -> &mut Entry {
        self.entries
            .entry((provider.to_owned(), class.to_owned()))
            .or_insert_with(Entry::new)
    }

    /// A notification was handed to `provider` (once per provider tried, not per retry).
    pub fn sent(&mut self, provider: &str, class: &str) {
        self.entry(provider, class).sent += 1;
    }

    /// `provider` accepted it.
    pub fn accepted(&mut self, provider: &str, class: &str) {
        self.entry(provider, class).accepted += 1;
    }

    /// The device receipted a notification of `provider`, `latency_ms` after it was sent
    /// (`None`: too late for the selector; counted, not timed).
    pub fn receipt(&mut self, provider: &str, class: &str, latency_ms: Option<u64>) {
        let entry = self.entry(provider, class);
        entry.receipts += 1;
        if let (Some(latency), Some(histogram)) = (latency_ms, entry.latency.as_mut()) {
            histogram.saturating_record(latency.clamp(1, MAX_LATENCY_MS));
        }
    }

    /// A failure of `kind` ("dead_token", "no_receipt", …).
    pub fn error(&mut self, provider: &str, class: &str, kind: &str) {
        *self
            .entry(provider, class)
            .errors
            .entry(kind.to_owned())
            .or_insert(0) += 1;
    }

    /// The classes of `provider`, sorted by class, with `estimate` left at 0 (the engine fills
    /// it in from the selector).
    pub fn classes(&self, provider: &str) -> Vec<ProviderClassStats> {
        let mut out: Vec<ProviderClassStats> = self
            .entries
            .iter()
            .filter(|((p, _), _)| p == provider)
            .map(|((p, class), entry)| {
                let quantile = |q: f64| {
                    entry
                        .latency
                        .as_ref()
                        .filter(|h| !h.is_empty())
                        .map_or(0, |h| h.value_at_quantile(q))
                };
                ProviderClassStats {
                    provider: p.clone(),
                    class: class.clone(),
                    sent: entry.sent,
                    accepted: entry.accepted,
                    receipts: entry.receipts,
                    receipt_rate: if entry.sent == 0 {
                        0.0
                    } else {
                        entry.receipts as f64 / entry.sent as f64
                    },
                    p50_ms: quantile(0.5),
                    p99_ms: quantile(0.99),
                    errors: entry.errors.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                    estimate: 0.0,
                }
            })
            .collect();
        out.sort_by(|a, b| a.class.cmp(&b.class));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_rates_and_percentiles() {
        let mut stats = Stats::default();
        for _ in 0..4 {
            stats.sent("apns", "ios/*/*");
            stats.accepted("apns", "ios/*/*");
        }
        stats.receipt("apns", "ios/*/*", Some(100));
        stats.receipt("apns", "ios/*/*", Some(300));
        stats.error("apns", "ios/*/*", "no_receipt");
        stats.error("apns", "ios/*/*", "dead_token");
        stats.error("apns", "ios/*/*", "dead_token");
        let classes = stats.classes("apns");
        assert_eq!(classes.len(), 1);
        let c = &classes[0];
        assert_eq!((c.sent, c.accepted, c.receipts), (4, 4, 2));
        assert!((c.receipt_rate - 0.5).abs() < 1e-9);
        assert!((99..=101).contains(&c.p50_ms), "{}", c.p50_ms);
        assert!((298..=302).contains(&c.p99_ms), "{}", c.p99_ms);
        assert_eq!(
            c.errors,
            vec![("dead_token".to_owned(), 2), ("no_receipt".to_owned(), 1)]
        );
        assert!(stats.classes("fcm").is_empty());
    }
}
