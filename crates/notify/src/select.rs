//! Which provider gets a device's notification: Thompson sampling over the measured receipt
//! rate of each provider, per device class and per device.
//!
//! Why a bandit: "accepted by the provider" says little (a vendor channel may accept and
//! never deliver); only the device's receipt (`ack_notification`) tells. Always choosing the
//! best estimate would stop measuring the others, so a provider that got better would never
//! be noticed; Thompson sampling explores in proportion to the remaining doubt and needs no
//! tuning constant. Evidence is discounted (each new observation of a (class, provider) pair
//! first multiplies its counts by `discount`), so a provider that stops delivering loses its
//! history within tens of notifications, not thousands.
//!
//! For one device, the class's evidence is the prior (its mean, worth at most
//! `PRIOR_STRENGTH` = 20 observations) and the device's own counts are added to it: a device
//! whose vendor channel is blocked (a battery saver, a removed app) moves to another provider
//! within a few notifications even if its class does fine, while a class-wide outage moves
//! every device of the class.
//! Close calls go to the provider with the lower median receipt latency.
//!
//! The clock is a parameter of every call (`now_ms`): the engine passes the wall clock, a
//! simulation its own, so choices are reproducible with a fixed seed.

use std::collections::{BTreeSet, HashMap};

use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Beta, Distribution};

/// Most observations the class's evidence counts for in a device's ranking (see
/// [`Selector::rank`]).
const PRIOR_STRENGTH: f64 = 20.0;
/// Two sampled rates closer than this are a close call, decided by latency.
const CLOSE_CALL: f64 = 0.02;
/// Devices whose own counts are kept; past it the map is cleared (class counts remain, and
/// a device's counts rebuild from its next notifications).
const MAX_DEVICES: usize = 200_000;
/// Notifications awaiting a receipt that are tracked; past it the oldest are forgotten.
const MAX_PENDING: usize = 1_000_000;
/// Longest latency the histograms record (1 h); longer ones are clamped.
const MAX_LATENCY_MS: u64 = 3_600_000;

/// Discounted success/failure counts of one (class or device, provider) pair.
#[derive(Debug, Clone, Default)]
struct Counts {
    successes: f64,
    failures: f64,
}

impl Counts {
    fn observe(&mut self, discount: f64, success: bool) {
        self.successes *= discount;
        self.failures *= discount;
        if success {
            self.successes += 1.0;
        } else {
            self.failures += 1.0;
        }
    }
}

/// A (class, provider) pair: its counts and its receipt latencies.
#[derive(Debug)]
struct ClassArm {
    counts: Counts,
    /// Observations of the pair so far: a device's own counts fade by the same clock.
    observations: u64,
    latency: Option<Histogram<u64>>,
}

impl ClassArm {
    fn new() -> Self {
        Self {
            counts: Counts::default(),
            observations: 0,
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_MS, 2).ok(),
        }
    }

    fn p50(&self) -> Option<u64> {
        self.latency
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| h.value_at_quantile(0.5))
    }
}

/// A device's own counts for one provider, and the class pair's observation count when they
/// were last brought up to date.
///
/// A device's successes fade by its class's observations, not only its own: a device sees
/// a small share of its class's notifications, so its own old successes would otherwise
/// outlive the class's evidence by that factor and keep a provider that stopped delivering
/// for everyone in place. Its failures fade only with its own observations: failures where
/// the class succeeds are the device-specific signal (a blocked channel, a battery saver),
/// and must outlast the class's traffic in between.
#[derive(Debug, Clone, Default)]
struct DeviceCounts {
    counts: Counts,
    at: u64,
}

impl DeviceCounts {
    /// The counts as of class observation `now`.
    fn current(&self, discount: f64, now: u64) -> Counts {
        let fade = discount.powf(now.saturating_sub(self.at) as f64);
        Counts {
            successes: self.counts.successes * fade,
            failures: self.counts.failures,
        }
    }
}

/// A notification accepted by a provider, awaiting the device's receipt.
#[derive(Debug, Clone)]
struct Pending {
    class: String,
    device: String,
    provider: String,
    sent_ms: u64,
}

/// What [`Selector::receipt`] and [`Selector::expire`] report about a tracked notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The notification.
    pub id: u64,
    /// The provider that had accepted it.
    pub provider: String,
    /// The device's class.
    pub class: String,
    /// Receipt latency in ms (`None` for an expired notification).
    pub latency_ms: Option<u64>,
}

/// The bandit. Not synchronised: the engine keeps it behind a mutex (a ranking is a few
/// samples, microseconds).
#[derive(Debug)]
pub struct Selector {
    discount: f64,
    rng: StdRng,
    classes: HashMap<(String, String), ClassArm>,
    devices: HashMap<(String, String), DeviceCounts>,
    pending: HashMap<u64, Pending>,
    /// (sent_ms, id) of `pending`, oldest first, for expiry.
    pending_order: BTreeSet<(u64, u64)>,
}

impl Selector {
    /// A selector discounting old evidence by `discount` per observation (clamped to
    /// (0, 1]), with a seeded RNG (`seed` 0 = a random seed).
    pub fn new(discount: f64, seed: u64) -> Self {
        let rng = if seed == 0 {
            StdRng::from_os_rng()
        } else {
            StdRng::seed_from_u64(seed)
        };
        let discount = if discount > 0.0 && discount <= 1.0 {
            discount
        } else {
            1.0
        };
        Self {
            discount,
            rng,
            classes: HashMap::new(),
            devices: HashMap::new(),
            pending: HashMap::new(),
            pending_order: BTreeSet::new(),
        }
    }

    /// Ranks `providers` for a notification to `device` of `class`, best first: each gets a
    /// rate sampled from Beta(1 + successes, 1 + failures), where the counts are the class's
    /// (scaled to at most `PRIOR_STRENGTH` observations) plus the device's own; close calls
    /// go to the lower median latency.
    pub fn rank(&mut self, class: &str, device: &str, providers: &[String]) -> Vec<String> {
        let mut scored: Vec<(f64, Option<u64>, &String)> = providers
            .iter()
            .map(|provider| {
                let key = (class.to_owned(), provider.clone());
                let class_arm = self.classes.get(&key);
                let device_counts = self
                    .devices
                    .get(&(device.to_owned(), provider.clone()))
                    .map(|d| d.current(self.discount, class_arm.map_or(0, |arm| arm.observations)))
                    .unwrap_or_default();
                // The class's evidence is the device's prior, worth at most
                // PRIOR_STRENGTH observations, so a device's own evidence can outweigh it.
                let (class_successes, class_failures) = class_arm.map_or((0.0, 0.0), |arm| {
                    let seen = arm.counts.successes + arm.counts.failures;
                    let mean = (1.0 + arm.counts.successes) / (2.0 + seen);
                    let weight = seen.min(PRIOR_STRENGTH);
                    (mean * weight, (1.0 - mean) * weight)
                });
                let successes = class_successes + device_counts.successes;
                let failures = class_failures + device_counts.failures;
                let sample = Beta::new(1.0 + successes, 1.0 + failures)
                    .map_or(0.5, |beta| beta.sample(&mut self.rng));
                (sample, class_arm.and_then(ClassArm::p50), provider)
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        // One bubble pass for close calls: a faster provider moves ahead of a slower one
        // whose sampled rate is barely higher.
        for i in 1..scored.len() {
            let (ahead, behind) = (&scored[i - 1], &scored[i]);
            if ahead.0 - behind.0 < CLOSE_CALL
                && let (Some(slow), Some(fast)) = (ahead.1, behind.1)
                && fast < slow
            {
                scored.swap(i - 1, i);
            }
        }
        scored.into_iter().map(|(_, _, p)| p.clone()).collect()
    }

    /// Records one outcome of `provider` for `device` of `class` without tracking: a
    /// delivery (`success`) or a loss (a provider error, an expired notification).
    pub fn observe(&mut self, class: &str, device: &str, provider: &str, success: bool) {
        let discount = self.discount;
        let arm = self
            .classes
            .entry((class.to_owned(), provider.to_owned()))
            .or_insert_with(ClassArm::new);
        arm.counts.observe(discount, success);
        arm.observations += 1;
        let now = arm.observations;
        if self.devices.len() >= MAX_DEVICES {
            self.devices.clear();
        }
        let device = self
            .devices
            .entry((device.to_owned(), provider.to_owned()))
            .or_default();
        // Bring the device's successes to the class clock (this observation's discount
        // included), discount its failures by its own observation, then add the new one.
        device.counts = device.current(discount, now);
        device.counts.failures *= discount;
        device.at = now;
        if success {
            device.counts.successes += 1.0;
        } else {
            device.counts.failures += 1.0;
        }
    }

    /// `provider` accepted notification `id` at `now_ms`: it awaits the device's receipt.
    pub fn sent(&mut self, id: u64, class: &str, device: &str, provider: &str, now_ms: u64) {
        if self.pending.len() >= MAX_PENDING
            && let Some(oldest) = self.pending_order.pop_first()
        {
            self.pending.remove(&oldest.1);
        }
        if let Some(old) = self.pending.insert(
            id,
            Pending {
                class: class.to_owned(),
                device: device.to_owned(),
                provider: provider.to_owned(),
                sent_ms: now_ms,
            },
        ) {
            self.pending_order.remove(&(old.sent_ms, id));
        }
        self.pending_order.insert((now_ms, id));
    }

    /// The device receipted notification `id` at `now_ms`: a success for its provider, with
    /// its latency. `None` when `id` is not awaiting a receipt (unknown, expired, receipted).
    pub fn receipt(&mut self, id: u64, now_ms: u64) -> Option<Outcome> {
        let pending = self.pending.remove(&id)?;
        self.pending_order.remove(&(pending.sent_ms, id));
        self.observe(&pending.class, &pending.device, &pending.provider, true);
        let latency_ms = now_ms.saturating_sub(pending.sent_ms);
        if let Some(histogram) = self
            .classes
            .get_mut(&(pending.class.clone(), pending.provider.clone()))
            .and_then(|arm| arm.latency.as_mut())
        {
            histogram.saturating_record(latency_ms.clamp(1, MAX_LATENCY_MS));
        }
        Some(Outcome {
            id,
            provider: pending.provider,
            class: pending.class,
            latency_ms: Some(latency_ms),
        })
    }

    /// Notifications sent at or before `now_ms - timeout_ms` without a receipt: failures
    /// ("no_receipt") for their providers. Returns them.
    pub fn expire(&mut self, now_ms: u64, timeout_ms: u64) -> Vec<Outcome> {
        let cutoff = now_ms.saturating_sub(timeout_ms);
        let mut expired = Vec::new();
        while let Some(&(sent_ms, id)) = self.pending_order.first() {
            if sent_ms > cutoff {
                break;
            }
            self.pending_order.pop_first();
            if let Some(pending) = self.pending.remove(&id) {
                self.observe(&pending.class, &pending.device, &pending.provider, false);
                expired.push(Outcome {
                    id,
                    provider: pending.provider,
                    class: pending.class,
                    latency_ms: None,
                });
            }
        }
        expired
    }

    /// The posterior mean of the receipt rate of `provider` for `class` (0.5 without
    /// evidence).
    pub fn estimate(&self, class: &str, provider: &str) -> f64 {
        let counts = self
            .classes
            .get(&(class.to_owned(), provider.to_owned()))
            .map(|arm| arm.counts.clone())
            .unwrap_or_default();
        (1.0 + counts.successes) / (2.0 + counts.successes + counts.failures)
    }

    /// Notifications awaiting a receipt.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// The class string of a device: "{platform}/{vendor}/{app_version}", an empty part as "*".
pub fn class_string(platform: &str, vendor: &str, app_version: &str) -> String {
    let part = |s: &str| {
        if s.is_empty() {
            "*".to_owned()
        } else {
            s.to_owned()
        }
    };
    format!("{}/{}/{}", part(platform), part(vendor), part(app_version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn class_strings_star_empty_parts() {
        assert_eq!(class_string("ios", "apple", "2.3"), "ios/apple/2.3");
        assert_eq!(class_string("android", "", ""), "android/*/*");
    }

    #[test]
    fn rank_returns_every_provider_once() {
        let mut selector = Selector::new(0.97, 7);
        let ranked = selector.rank("c", "d", &names(&["a", "b", "c"]));
        let mut sorted = ranked.clone();
        sorted.sort();
        assert_eq!(sorted, names(&["a", "b", "c"]));
    }

    #[test]
    fn receipts_and_expiry_drive_the_estimate() {
        let mut selector = Selector::new(1.0, 1);
        selector.sent(1, "c", "d", "good", 1000);
        selector.sent(2, "c", "d", "bad", 1000);
        let outcome = selector.receipt(1, 1250).expect("tracked");
        assert_eq!(outcome.latency_ms, Some(250));
        assert!(selector.receipt(1, 1300).is_none(), "receipted once");
        assert!(selector.expire(1000 + 299, 300).is_empty());
        let expired = selector.expire(1300, 300);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].provider, "bad");
        assert!(selector.estimate("c", "good") > 0.6);
        assert!(selector.estimate("c", "bad") < 0.4);
        assert_eq!(selector.pending(), 0);
    }

    #[test]
    fn discount_forgets_old_evidence() {
        let mut selector = Selector::new(0.9, 1);
        for _ in 0..100 {
            selector.observe("c", "d", "p", true);
        }
        for _ in 0..30 {
            selector.observe("c", "d", "p", false);
        }
        assert!(selector.estimate("c", "p") < 0.2);
    }
}
