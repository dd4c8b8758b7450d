//! Logic's Prometheus metrics: store and bus latency per operation, receiver acks, and the
//! s2c delivery counters per (appcode, msgtype) read from the push engine at scrape time.

use std::time::Duration;

use longlink_metrics::prometheus_client::collector::Collector;
use longlink_metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use longlink_metrics::prometheus_client::metrics::counter::ConstCounter;
use longlink_metrics::prometheus_client::metrics::gauge::ConstGauge;
use longlink_metrics::prometheus_client::registry::Unit;
use longlink_metrics::{Counter, Family, Histogram, Label, Latency, Registry, label};

use crate::push::PushEngine;

/// Most (appcode, msgtype) series exported; the rest are summed under `msgtype="other"`, so
/// a business server inventing msgtypes cannot blow up the scrape.
const MAX_PUSH_SERIES: usize = 256;

/// Every metric logic records.
#[derive(Debug, Clone)]
pub struct LogicMetrics {
    store_ops: Family<Label, Histogram>,
    /// A c2s message handed to the bus → the bus holds it durably.
    pub bus_publish: Latency,
    /// Msgids acknowledged by receiver devices (MSG_ACK), c2c and s2c.
    pub receiver_acks: Counter,
    /// MSG frames queued to a receiver's session that expect a MSG_ACK: c2c receivers, s2c
    /// recipients, redeliveries (not the copies for the sender's other devices).
    pub receiver_deliveries: Counter,
    /// s2c pushes accepted.
    pub pushes: Counter,
}

impl LogicMetrics {
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let store_ops = Family::<Label, Histogram>::new_with_constructor(
            longlink_metrics::latency_histogram as fn() -> Histogram,
        );
        let bus_publish = Latency::new();
        let receiver_acks = Counter::default();
        let receiver_deliveries = Counter::default();
        let pushes = Counter::default();
        registry.register_with_unit(
            "longlink_store_op_duration",
            "Store calls made by logic, per operation (append = c2c commit, append_s2c = push commit)",
            Unit::Seconds,
            store_ops.clone(),
        );
        bus_publish.register(
            registry,
            "longlink_bus_publish",
            "c2s: a message handed to the bus → held durably on its topic",
        );
        registry.register(
            "longlink_receiver_acks",
            "Msgids acknowledged by receiver devices (MSG_ACK)",
            receiver_acks.clone(),
        );
        registry.register(
            "longlink_push_accepted",
            "s2c pushes accepted",
            pushes.clone(),
        );
        Self {
            store_ops,
            bus_publish,
            receiver_acks,
            receiver_deliveries,
            pushes,
        }
    }

    /// Records how long store operation `op` took.
    pub(crate) fn store_op(&self, op: &'static str, elapsed: Duration) {
        self.store_ops
            .get_or_create(&label("op", op))
            .observe(elapsed.as_secs_f64());
    }
}

/// One exported series: its labels and the eight counters, in the order of `names` below.
type PushSeries = ([(&'static str, String); 2], [u64; 8]);

/// Exports the push engine's delivery counters per (appcode, msgtype) at scrape time.
pub(crate) struct PushCollector {
    pub(crate) engine: PushEngine,
}

impl std::fmt::Debug for PushCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushCollector").finish_non_exhaustive()
    }
}

impl Collector for PushCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut series: Vec<PushSeries> = Vec::new();
        let mut other: std::collections::BTreeMap<u32, [u64; 8]> = Default::default();
        for c in self.engine.counters(&[]) {
            let values = [
                c.pushes,
                c.targets,
                c.online,
                c.written,
                c.acked,
                c.stored_offline,
                c.expired,
                c.failed,
            ];
            if series.len() < MAX_PUSH_SERIES {
                series.push((
                    [
                        ("appcode", c.appcode.to_string()),
                        ("msgtype", c.msgtype.to_string()),
                    ],
                    values,
                ));
            } else {
                let sum = other.entry(c.appcode).or_default();
                for (s, v) in sum.iter_mut().zip(values) {
                    *s += v;
                }
            }
        }
        for (appcode, values) in other {
            series.push((
                [
                    ("appcode", appcode.to_string()),
                    ("msgtype", "other".to_owned()),
                ],
                values,
            ));
        }
        let names = [
            ("longlink_push", "s2c pushes"),
            ("longlink_push_targets", "s2c target users"),
            (
                "longlink_push_online",
                "s2c target users online when the push reached them",
            ),
            (
                "longlink_push_written",
                "s2c target users with the MSG written to a socket",
            ),
            (
                "longlink_push_acked",
                "s2c target users whose device acknowledged the MSG",
            ),
            (
                "longlink_push_stored_offline",
                "s2c target users not online: stored for their next login",
            ),
            (
                "longlink_push_expired",
                "s2c online-only target users not reached within the TTL",
            ),
            (
                "longlink_push_failed",
                "s2c target users neither reached nor stored",
            ),
        ];
        for (slot, (name, help)) in names.iter().enumerate() {
            let counter = ConstCounter::new(0u64);
            let mut metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            for (labels, values) in &series {
                let family = metric.encode_family(labels)?;
                ConstCounter::new(values[slot]).encode(family)?;
            }
        }
        let gauge = ConstGauge::new(0.0f64);
        let mut metric = encoder.encode_descriptor(
            "longlink_push_delivery_ratio",
            "s2c delivery rate: acked target users / target users",
            None,
            gauge.metric_type(),
        )?;
        for (labels, values) in &series {
            if values[1] == 0 {
                continue;
            }
            let family = metric.encode_family(labels)?;
            ConstGauge::new(values[4] as f64 / values[1] as f64).encode(family)?;
        }
        Ok(())
    }
}
