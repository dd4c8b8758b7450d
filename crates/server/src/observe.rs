//! The node's figures for `/healthz` and `/v1/stats/summary`: read from the gates' and
//! logic's metrics and the ledger's delivery latency, plus a sampler that keeps one sample
//! per second for the last two minutes (the dashboard's charts and per-second rates).
//!
//! Connections and sessions count every gate of the node, and the summary lists each gate with
//! its `draining` flag; the frame and latency figures are still the first gate's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use longlink_api::model::{
    AppcodeSummaryBody, GateSummaryBody, LatencyBody, PercentilesBody, SeriesBody, SummaryBody,
    TotalsBody,
};
use longlink_api::{Stats, StatsSource};
use longlink_bus::TopicQueue;
use longlink_gate::Gate;
use longlink_logic::LogicMetrics;
use longlink_metrics::{Family, Gauge, Latency, Percentiles, Registry};
use longlink_proto::Cmd;
use tokio_util::sync::CancellationToken;

/// Samples kept: two minutes at one per second.
const SAMPLES: usize = 120;
/// Samples the delivery rate is computed over (one minute).
const RATE_WINDOW: usize = 60;

/// What the node is built of, as the summary reads it.
pub(crate) struct NodeStats {
    /// The first gate (the node's id; frame and latency figures).
    pub(crate) gate: Gate,
    /// Every gate, the first included.
    pub(crate) gates: Vec<Gate>,
    pub(crate) logic: LogicMetrics,
    pub(crate) c2c_delivery: Latency,
    /// (appcode, name) of every configured app.
    pub(crate) apps: Vec<(u32, String)>,
    pub(crate) started_ms: u64,
    samples: Mutex<VecDeque<Sample>>,
    /// The bus's topics, read once per sample into `bus_messages`.
    bus: Arc<dyn TopicQueue>,
    bus_messages: Family<[(&'static str, String); 2], Gauge>,
}

/// Counters at one instant.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    at_ms: u64,
    connections: u64,
    messages: u64,
    deliveries: u64,
    /// MSG frames queued to receivers that expect an ACK (not sender-sync copies).
    receiver_deliveries: u64,
    receiver_acks: u64,
    c2c_e2e_p99_ms: Option<f64>,
}

impl std::fmt::Debug for NodeStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStats").finish_non_exhaustive()
    }
}

impl NodeStats {
    /// The node's figures; registers the bus's queue depths (`longlink_bus_messages`) in
    /// `registry`, refreshed by [`NodeStats::run_sampler`].
    pub(crate) fn new(
        gates: Vec<Gate>,
        logic: LogicMetrics,
        c2c_delivery: Latency,
        apps: Vec<(u32, String)>,
        bus: Arc<dyn TopicQueue>,
        registry: &mut Registry,
    ) -> Self {
        let first = gates[0].clone();
        Self::with_gate(first, gates, logic, c2c_delivery, apps, bus, registry)
    }

    /// [`NodeStats::new`] whose node id and gate figures come from `gate` (a cluster process
    /// without gates passes one that never serves: its id names the process, its figures stay
    /// zero).
    pub(crate) fn with_gate(
        gate: Gate,
        gates: Vec<Gate>,
        logic: LogicMetrics,
        c2c_delivery: Latency,
        apps: Vec<(u32, String)>,
        bus: Arc<dyn TopicQueue>,
        registry: &mut Registry,
    ) -> Self {
        let bus_messages = Family::<[(&'static str, String); 2], Gauge>::default();
        registry.register(
            "longlink_bus_messages",
            "c2s messages on a topic: ready (waiting for a consumer), in_flight (leased), dead (dead letters); sampled every second",
            bus_messages.clone(),
        );
        Self {
            bus,
            bus_messages,
            gate,
            gates,
            logic,
            c2c_delivery,
            apps,
            started_ms: longlink_proto::unix_ms(),
            samples: Mutex::new(VecDeque::with_capacity(SAMPLES)),
        }
    }

    /// Open connections on every gate.
    fn connections(&self) -> u64 {
        self.gates.iter().map(Gate::connection_count).sum()
    }

    /// Logged-in sessions on every gate.
    fn sessions(&self) -> u64 {
        self.gates.iter().map(|g| g.sessions().len() as u64).sum()
    }

    fn sample(&self) -> Sample {
        let gate = self.gate.metrics();
        Sample {
            at_ms: longlink_proto::unix_ms(),
            connections: self.connections(),
            messages: gate.frames_in.get(Cmd::C2c)
                + gate.frames_in.get(Cmd::C2s)
                + self.logic.pushes.get(),
            deliveries: gate.frames_out.get(Cmd::Msg),
            receiver_deliveries: self.logic.receiver_deliveries.get(),
            receiver_acks: self.logic.receiver_acks.get(),
            c2c_e2e_p99_ms: self.c2c_delivery.last_second().p99,
        }
    }

    /// Takes a sample every second until `stop` is cancelled.
    pub(crate) async fn run_sampler(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            let sample = self.sample();
            {
                let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
                if samples.len() == SAMPLES {
                    samples.pop_front();
                }
                samples.push_back(sample);
            }
            self.sample_bus().await;
        }
    }

    /// Queue depths of every topic (topics are bounded by the routing table).
    async fn sample_bus(&self) {
        let Ok(Ok(topics)) = tokio::time::timeout(Duration::from_secs(1), self.bus.topics()).await
        else {
            return;
        };
        for topic in topics {
            for (state, value) in [
                ("ready", topic.ready),
                ("in_flight", topic.in_flight),
                ("dead", topic.dead),
            ] {
                self.bus_messages
                    .get_or_create(&[("topic", topic.topic.clone()), ("state", state.to_owned())])
                    .set(i64::try_from(value).unwrap_or(i64::MAX));
            }
        }
    }
}

/// Per-second rate between two samples.
fn rate(from: &Sample, to: &Sample, value: impl Fn(&Sample) -> u64) -> f64 {
    let secs = to.at_ms.saturating_sub(from.at_ms) as f64 / 1000.0;
    if secs <= 0.0 {
        return 0.0;
    }
    value(to).saturating_sub(value(from)) as f64 / secs
}

fn percentiles(p: Percentiles) -> PercentilesBody {
    PercentilesBody {
        count: p.count,
        p50: p.p50,
        p90: p.p90,
        p99: p.p99,
        max: p.max,
    }
}

impl StatsSource for NodeStats {
    fn stats(&self) -> Stats {
        Stats {
            connections: self.connections(),
            sessions: self.sessions(),
        }
    }

    fn summary(&self) -> SummaryBody {
        let now = self.sample();
        let samples: Vec<Sample> = self
            .samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        // Rates of the last second: the newest sample against the one before it (or, right
        // after start, against now).
        let (messages_per_sec, deliveries_per_sec) = match samples.as_slice() {
            [.., before, last] => (
                rate(before, last, |s| s.messages),
                rate(before, last, |s| s.deliveries),
            ),
            [only] => (
                rate(only, &now, |s| s.messages),
                rate(only, &now, |s| s.deliveries),
            ),
            [] => (0.0, 0.0),
        };
        let window_start = samples
            .len()
            .saturating_sub(RATE_WINDOW)
            .min(samples.len().saturating_sub(1));
        let delivery_rate = samples.get(window_start).and_then(|first| {
            let delivered = now
                .receiver_deliveries
                .saturating_sub(first.receiver_deliveries);
            let acked = now.receiver_acks.saturating_sub(first.receiver_acks);
            // Pulled messages are acked without a MSG pushed: the ratio is capped at 1.
            (delivered > 0).then(|| (acked as f64 / delivered as f64).min(1.0))
        });
        let gate = self.gate.metrics();
        let sessions = self.sessions();
        let mut appcodes: Vec<AppcodeSummaryBody> = self
            .apps
            .iter()
            .map(|(appcode, name)| AppcodeSummaryBody {
                appcode: *appcode,
                name: name.clone(),
                sessions: u64::try_from(gate.sessions(*appcode)).unwrap_or(0),
                messages: gate.messages(*appcode),
            })
            .collect();
        appcodes.sort_by(|a, b| {
            b.sessions
                .cmp(&a.sessions)
                .then(b.messages.cmp(&a.messages))
                .then(a.appcode.cmp(&b.appcode))
        });
        let mut series = SeriesBody {
            interval_secs: 1,
            ..SeriesBody::default()
        };
        for pair in samples.windows(2) {
            let [before, sample] = pair else { continue };
            series.at_ms.push(sample.at_ms);
            series.connections.push(sample.connections);
            series
                .messages_per_sec
                .push(rate(before, sample, |s| s.messages));
            series
                .deliveries_per_sec
                .push(rate(before, sample, |s| s.deliveries));
            series.c2c_e2e_p99_ms.push(sample.c2c_e2e_p99_ms);
        }
        SummaryBody {
            node: self.gate.id().to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_ms: self.started_ms,
            now_ms: now.at_ms,
            connections: now.connections,
            sessions,
            messages_per_sec,
            deliveries_per_sec,
            delivery_rate,
            latency_ms: LatencyBody {
                c2c_ack: percentiles(gate.c2c_ack.percentiles(60)),
                c2c_e2e: percentiles(self.c2c_delivery.percentiles(60)),
            },
            totals: TotalsBody {
                messages: now.messages,
                deliveries: now.deliveries,
                receiver_acks: now.receiver_acks,
                logins: gate.logins.get(),
                login_failures: gate.login_failures_total(),
                errors: gate.errors_total(),
                bytes_in: gate.bytes_in.total(),
                bytes_out: gate.bytes_out.total(),
            },
            appcodes,
            gates: self
                .gates
                .iter()
                .map(|g| GateSummaryBody {
                    id: g.id().to_owned(),
                    addr: g.public_addr(),
                    connections: g.connection_count(),
                    sessions: g.sessions().len() as u64,
                    // Healthy = running: a draining gate is working as intended (its
                    // `draining` badge says the rest); once stopped it is not.
                    healthy: g.is_serving(),
                    draining: g.is_draining(),
                    last_seen_ms: now.at_ms,
                })
                .collect(),
            series,
        }
    }
}
