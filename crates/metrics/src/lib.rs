//! Metric plumbing shared by longlink's roles (no I/O, no backend).
//!
//! Each role defines its own metrics (the gate's in `longlink_gate::metrics`, logic's in
//! `longlink_logic`, …) and registers them in the node's one
//! [`prometheus_client::registry::Registry`], which the API encodes at `GET /metrics`. A
//! registry per node, not a global recorder, so several nodes in one test process stay apart
//! (DEPENDENCIES.md). Handles are resolved once (per connection or role), never per event.
//!
//! [`Latency`] is the one latency type: every observation goes to a Prometheus histogram
//! (for scrapes) and to a one-minute window of HDR histograms, from which the dashboard and
//! `longlink top` read percentiles without a Prometheus server.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use prometheus_client;
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;
pub use prometheus_client::registry::Registry;

/// A label set of one label with a fixed name, e.g. `[("cmd", "c2c")]`.
pub type Label = [(&'static str, String); 1];

/// Builds a [`Label`].
pub fn label(name: &'static str, value: impl Into<String>) -> Label {
    [(name, value.into())]
}

/// Seconds of history a [`Latency`] keeps for percentiles.
pub const WINDOW_SECS: usize = 60;

/// Histogram buckets for latencies: 100 µs doubling up to ~13 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 18)
}

/// A new Prometheus histogram with [`latency_buckets`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// Percentiles of recent observations, in milliseconds; `None` when there were none.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    /// Observations in the window.
    pub count: u64,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest observation.
    pub max: Option<f64>,
}

/// A latency: exported as a Prometheus histogram (in seconds) and kept as a window of
/// one-second HDR histograms for recent percentiles. Cheap to clone (shared inside).
#[derive(Clone, Debug)]
pub struct Latency {
    histogram: Histogram,
    window: Arc<Mutex<Window>>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty latency.
    pub fn new() -> Self {
        Self {
            histogram: latency_histogram(),
            window: Arc::new(Mutex::new(Window::new())),
        }
    }

    /// Registers the Prometheus side as `name` (seconds) in `registry`.
    pub fn register(&self, registry: &mut Registry, name: &str, help: &str) {
        registry.register_with_unit(
            name,
            help,
            prometheus_client::registry::Unit::Seconds,
            self.histogram.clone(),
        );
    }

    /// The Prometheus histogram, e.g. to put it in a [`Family`] of your own.
    pub fn histogram(&self) -> &Histogram {
        &self.histogram
    }

    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        self.histogram.observe(elapsed.as_secs_f64());
        if let Ok(mut window) = self.window.lock() {
            let now = window.second();
            window.record(now, elapsed);
        }
    }

    /// Percentiles of the observations of the last `secs` seconds (at most [`WINDOW_SECS`]),
    /// the current second included.
    pub fn percentiles(&self, secs: usize) -> Percentiles {
        self.window
            .lock()
            .map(|window| window.percentiles(window.second(), secs, 0))
            .unwrap_or_default()
    }

    /// Percentiles of the last complete second (the one before the current), for a
    /// per-second series: the current second has only begun.
    pub fn last_second(&self) -> Percentiles {
        self.window
            .lock()
            .map(|window| window.percentiles(window.second(), 1, 1))
            .unwrap_or_default()
    }
}

/// One HDR histogram per second, in a ring; a slot is reused once its second is out of the
/// window, and a second without observations allocates nothing.
#[derive(Debug)]
struct Window {
    start: Instant,
    slots: Vec<Option<(u64, hdrhistogram::Histogram<u32>)>>,
}

/// Largest latency the window records precisely (longer ones are clamped): one minute.
const MAX_MICROS: u64 = 60_000_000;

impl Window {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            slots: (0..WINDOW_SECS).map(|_| None).collect(),
        }
    }

    fn second(&self) -> u64 {
        self.start.elapsed().as_secs()
    }

    /// Records `elapsed` in second `now` (seconds since the window's start).
    fn record(&mut self, now: u64, elapsed: Duration) {
        let index = (now % WINDOW_SECS as u64) as usize;
        let slot = &mut self.slots[index];
        if slot.as_ref().is_none_or(|(second, _)| *second != now) {
            // Bounds 1 µs ..= 60 s at 2 significant digits: ~13 KB per active second.
            let Ok(histogram) = hdrhistogram::Histogram::new_with_bounds(1, MAX_MICROS, 2) else {
                return;
            };
            *slot = Some((now, histogram));
        }
        if let Some((_, histogram)) = slot {
            let micros = u64::try_from(elapsed.as_micros()).unwrap_or(MAX_MICROS);
            histogram.saturating_record(micros.clamp(1, MAX_MICROS));
        }
    }

    /// Merges the `secs` seconds that end `skip` seconds before second `now`.
    fn percentiles(&self, now: u64, secs: usize, skip: u64) -> Percentiles {
        let secs = secs.clamp(1, WINDOW_SECS) as u64;
        let mut merged: Option<hdrhistogram::Histogram<u32>> = None;
        for (second, histogram) in self.slots.iter().flatten() {
            let age = now.saturating_sub(*second);
            if age < skip || age >= skip + secs {
                continue;
            }
            match merged.as_mut() {
                None => merged = Some(histogram.clone()),
                Some(merged) => {
                    let _ = merged.add(histogram);
                }
            }
        }
        let Some(merged) = merged.filter(|h| !h.is_empty()) else {
            return Percentiles::default();
        };
        let ms = |micros: u64| Some(micros as f64 / 1000.0);
        Percentiles {
            count: merged.len(),
            p50: ms(merged.value_at_quantile(0.50)),
            p90: ms(merged.value_at_quantile(0.90)),
            p99: ms(merged.value_at_quantile(0.99)),
            max: ms(merged.max()),
        }
    }
}

/// Encodes `registry` in the Prometheus text format (what `GET /metrics` serves).
///
/// # Errors
/// Only if a collector fails to encode.
pub fn encode_text(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_reads_the_seconds_asked_for_and_forgets_old_ones() {
        let mut window = Window::new();
        window.record(10, Duration::from_millis(5));
        window.record(11, Duration::from_millis(7));
        window.record(11, Duration::from_millis(9));
        // In second 11, the last complete second is 10; in 12 it is 11.
        assert_eq!(window.percentiles(11, 1, 1).count, 1);
        let last = window.percentiles(12, 1, 1);
        assert_eq!(last.count, 2);
        assert!(
            (8.9..=9.1).contains(&last.max.unwrap_or_default()),
            "{last:?}"
        );
        assert_eq!(window.percentiles(12, 60, 0).count, 3);
        // A minute later nothing is left, and a reused slot (second 70 takes 10's) starts empty.
        assert_eq!(window.percentiles(72, 60, 0).count, 0);
        window.record(70, Duration::from_millis(1));
        assert_eq!(window.percentiles(70, 1, 0).count, 1);
    }

    #[test]
    fn percentiles_come_from_recent_observations() {
        let latency = Latency::new();
        assert_eq!(latency.percentiles(60).count, 0);
        assert_eq!(latency.percentiles(60).p99, None);
        for ms in 1..=100 {
            latency.observe(Duration::from_millis(ms));
        }
        let p = latency.percentiles(60);
        assert_eq!(p.count, 100);
        let p50 = p.p50.unwrap_or_default();
        assert!((49.0..=51.0).contains(&p50), "p50 {p50}");
        let max = p.max.unwrap_or_default();
        assert!((99.0..=101.0).contains(&max), "max {max}");
    }

    #[test]
    fn the_prometheus_side_counts_every_observation() {
        let mut registry = Registry::default();
        let latency = Latency::new();
        latency.register(&mut registry, "longlink_test_latency", "a test latency");
        latency.observe(Duration::from_millis(3));
        latency.observe(Duration::from_millis(5));
        let text = encode_text(&registry).unwrap_or_default();
        assert!(
            text.lines()
                .any(|l| l.starts_with("longlink_test_latency_seconds_count") && l.ends_with(" 2")),
            "{text}"
        );
    }
}
