//! Logic's Prometheus metrics: store and bus latency per operation, receiver deliveries and
//! acks, pushes. (The s2c delivery counters per (appcode, msgtype) are read from the push
//! engine at scrape time by `push::PushCollector`.)

use std::time::Duration;

use longlink_metrics::prometheus_client::registry::Unit;
use longlink_metrics::{Counter, Family, Histogram, Label, Latency, Registry, label};

/// The store calls logic times (the `op` label of `longlink_store_op_duration_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreOp {
    /// A c2c commit.
    Append,
    /// A push commit.
    AppendS2c,
    Ack,
    RecordPushed,
    PullOffline,
    History,
}

impl StoreOp {
    const ALL: [StoreOp; 6] = [
        StoreOp::Append,
        StoreOp::AppendS2c,
        StoreOp::Ack,
        StoreOp::RecordPushed,
        StoreOp::PullOffline,
        StoreOp::History,
    ];

    fn name(self) -> &'static str {
        match self {
            StoreOp::Append => "append",
            StoreOp::AppendS2c => "append_s2c",
            StoreOp::Ack => "ack",
            StoreOp::RecordPushed => "record_pushed",
            StoreOp::PullOffline => "pull_offline",
            StoreOp::History => "history",
        }
    }
}

/// Every metric logic records.
#[derive(Debug, Clone)]
pub struct LogicMetrics {
    /// One histogram per [`StoreOp`], in [`StoreOp::ALL`] order, resolved once.
    store_ops: Vec<Histogram>,
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
            "longlink_receiver_deliveries",
            "MSG frames queued to receivers' sessions that expect a MSG_ACK (c2c receivers, s2c recipients, redeliveries; not copies for the sender's other devices)",
            receiver_deliveries.clone(),
        );
        registry.register(
            "longlink_push_accepted",
            "s2c pushes accepted",
            pushes.clone(),
        );
        Self {
            store_ops: StoreOp::ALL
                .iter()
                .map(|op| store_ops.get_or_create(&label("op", op.name())).clone())
                .collect(),
            bus_publish,
            receiver_acks,
            receiver_deliveries,
            pushes,
        }
    }

    /// Records how long store operation `op` took.
    pub(crate) fn store_op(&self, op: StoreOp, elapsed: Duration) {
        // `ALL` lists the variants in declaration order, so the discriminant is the slot.
        if let Some(histogram) = self.store_ops.get(op as usize) {
            histogram.observe(elapsed.as_secs_f64());
        }
    }
}
