//! Latency summaries of HDR histograms in µs, as the scenarios report them (ms, rounded).

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::num::round;
use crate::plot;
use crate::report::thousands;

/// A latency distribution's summary, in ms.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Latency {
    pub(crate) count: u64,
    pub(crate) min: f64,
    pub(crate) mean: f64,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    /// Only where a run has the samples for it ([`summary_to_p9999`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p9999: Option<f64>,
    pub(crate) max: f64,
}

impl Latency {
    /// `p50 …  p90 …  p99 …  p99.9 …  max … ms`, for a printed summary.
    pub(crate) fn percentiles_text(&self) -> String {
        format!(
            "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms",
            self.p50, self.p90, self.p99, self.p999, self.max
        )
    }

    /// Prints one line of a run's summary: `name`, the percentiles and the sample count.
    pub(crate) fn print_line(&self, name: &str) {
        println!(
            "{name:<12} {}  ({} samples)",
            self.percentiles_text(),
            thousands(self.count)
        );
    }
}

/// The summary of `h` (µs); all zeros for an empty histogram.
pub(crate) fn summary(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    Latency {
        count: h.len(),
        min: ms(h.min()),
        mean: round(h.mean() / 1000.0, 3),
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        p9999: None,
        max: ms(h.max()),
    }
}

/// [`summary`] with p99.99 as well (0 for an empty histogram).
pub(crate) fn summary_to_p9999(h: &Histogram<u64>) -> Latency {
    Latency {
        p9999: Some(if h.is_empty() {
            0.0
        } else {
            ms(h.value_at_quantile(0.9999))
        }),
        ..summary(h)
    }
}

/// `h` at [`plot::nines_points`]: (quantile, ms) pairs, for the plot and the JSON.
pub(crate) fn distribution(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    plot::nines_points()
        .into_iter()
        .map(|q| (q, ms(h.value_at_quantile(q))))
        .collect()
}

/// A [`distribution`] as the JSON gives it: (percentile, ms) pairs.
pub(crate) fn percentiles(distribution: &[(f64, f64)]) -> Vec<(f64, f64)> {
    distribution
        .iter()
        .map(|(q, ms)| (round(q * 100.0, 4), *ms))
        .collect()
}

/// µs → ms, three decimals.
pub(crate) fn ms(us: u64) -> f64 {
    round(us as f64 / 1000.0, 3)
}

/// The median of `values` (the mean of the middle two for an even count); 0 for none.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn summaries() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000, 3).unwrap();
        for us in [1000, 2000, 3000] {
            h.record(us).unwrap();
        }
        let l = summary(&h);
        assert_eq!(l.count, 3);
        // HDR values are exact to 3 significant figures.
        assert!((l.p50 - 2.0).abs() < 0.01, "{l:?}");
        assert!((l.max - 3.0).abs() < 0.01, "{l:?}");
        assert_eq!(summary(&histogram_empty()).count, 0);
        assert_eq!(l.p9999, None, "left out of the JSON");
        assert!(
            summary_to_p9999(&h)
                .p9999
                .is_some_and(|ms| (ms - 3.0).abs() < 0.01)
        );
        assert_eq!(summary_to_p9999(&histogram_empty()).p9999, Some(0.0));
    }

    fn histogram_empty() -> Histogram<u64> {
        Histogram::new(3).unwrap()
    }
}
