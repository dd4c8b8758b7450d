//! The peers' `c2c`: S senders → R receivers at longlink's fixed open-loop rate, in this
//! process (as longlink's c2c connections are). Message k is due at t0 + k / rate, on sender
//! k mod S, to receiver k mod R (topic `c/r<j>`); its payload is k and its due time (wall-clock
//! µs, 8 bytes each, big-endian) padded to `--content-bytes`. A sender publishes each message
//! when it is due whatever happened to the earlier ones, and the receiver's latency runs from
//! the **due time**, so a stall is charged to every message it delayed (no coordinated
//! omission), as longlink's.
//!
//! What a peer delivers here is weaker than longlink's c2c: MQTT QoS 1 acknowledges each hop
//! (PUBACK) but mosquitto keeps the messages in memory only (persistence off), QoS 0 and core
//! NATS are at most once. The broker's CPU from t0 to the end of the drain gives messages per
//! broker CPU-second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::broker::Broker;
use super::client::{Publisher, Subscriber};
use super::{BrokerInfo, Chosen, Peer, Section, announce, big, ratio, times};
use crate::fanout::unix_us;
use crate::latency::{self, Latency};
use crate::num::round;
use crate::procfs::{self, Window};
use crate::report::{per, progress_bar, thousands};

/// t0 is this far after the connections are ready, so every sender is waiting when it comes.
const START_LEAD: Duration = Duration::from_millis(300);
/// Connections opened at once while setting up.
const CONNECT_CONCURRENCY: usize = 32;
/// Bytes of a payload's header: k and the due time.
const HEADER: usize = 16;

/// The longlink run's parameters, which the peers reuse.
pub(crate) struct Params {
    pub(crate) rate: u32,
    pub(crate) duration_secs: u64,
    pub(crate) senders: u32,
    pub(crate) receivers: u32,
    pub(crate) content_bytes: usize,
    pub(crate) drain_secs: u64,
    pub(crate) login_timeout_secs: u64,
    pub(crate) deadline_secs: u64,
}

/// longlink's figures, for the ratios.
pub(crate) struct Longlink {
    pub(crate) messages_per_cpu_sec: f64,
    pub(crate) e2e_p50_ms: f64,
    pub(crate) e2e_p99_ms: f64,
    pub(crate) e2e_p999_ms: f64,
}

/// One peer's figures.
#[derive(Debug, Serialize)]
pub(crate) struct Run {
    peer: String,
    broker: BrokerInfo,
    rate: u32,
    duration_secs: u64,
    senders: u32,
    receivers: u32,
    content_bytes: usize,
    drain_secs: u64,
    pub(crate) messages_scheduled: u64,
    pub(crate) sent: u64,
    publish_errors: u64,
    pub(crate) received: u64,
    pub(crate) missing: u64,
    duplicates: u64,
    misrouted: u64,
    /// Whether every sent message arrived before the drain ended.
    drained: bool,
    /// t0 → the end of the drain: what the CPU covers.
    measured_secs: f64,
    broker_cpu_secs: f64,
    broker_cpu_share: f64,
    pub(crate) messages_per_broker_cpu_sec: f64,
    broker_cpu_us_per_message: f64,
    /// This process (senders and receivers), over the same interval.
    client_cpu_secs: f64,
    /// Due time → receipt.
    e2e_latency_ms: Latency,
    ratios: Ratios,
}

#[derive(Debug, Serialize)]
struct Ratios {
    /// longlink's messages per server CPU-second ÷ the peer's.
    per_cpu_sec: f64,
    /// longlink's end-to-end percentiles ÷ the peer's.
    p50: f64,
    p99: f64,
    p999: f64,
}

/// Runs the workload against every chosen peer, one after the other.
///
/// # Errors
/// A broker that does not start, connections that fail, the deadline.
pub(crate) async fn run(
    chosen: &Chosen,
    params: &Params,
    longlink: &Longlink,
) -> anyhow::Result<Section<Run>> {
    super::each_peer(chosen, params.deadline_secs, "the deadline", |peer, _| {
        one(peer, params, longlink)
    })
    .await
}

/// Per-message state the connection tasks share.
struct Shared {
    /// 1 once received.
    received_flags: Vec<AtomicU8>,
    sent: AtomicU64,
    errors: AtomicU64,
    received: AtomicU64,
    duplicates: AtomicU64,
    misrouted: AtomicU64,
    receivers: u64,
}

impl Shared {
    /// Takes in one payload at receiver `j`; returns its latency (µs) when it is a first copy.
    fn on_payload(&self, j: u64, payload: &[u8], at_us: u64) -> Option<u64> {
        let k = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
        let due = u64::from_be_bytes(payload.get(8..16)?.try_into().ok()?);
        let flag = self.received_flags.get(usize::try_from(k).ok()?)?;
        if k % self.receivers != j {
            self.misrouted.fetch_add(1, Ordering::Relaxed);
        }
        if flag.swap(1, Ordering::Relaxed) != 0 {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.received.fetch_add(1, Ordering::Relaxed);
        Some(at_us.saturating_sub(due).max(1))
    }
}

fn receiver_topic(j: u64) -> String {
    format!("c/r{j}")
}

async fn one(peer: Peer, params: &Params, longlink: &Longlink) -> anyhow::Result<Run> {
    let broker = Broker::start(peer.kind)?;
    let total = u64::from(params.rate) * params.duration_secs;
    announce(
        peer,
        &broker,
        &format!(
            "{} msg/s for {} s, {} senders → {} receivers",
            thousands(u64::from(params.rate)),
            params.duration_secs,
            params.senders,
            params.receivers
        ),
    );
    let timeout = Duration::from_secs(params.login_timeout_secs);
    let tag = longlink_proto::unix_ms();
    let (receivers, senders) = connect_all(peer, &broker, params, tag, timeout).await?;
    let shared = Arc::new(Shared {
        received_flags: (0..total).map(|_| AtomicU8::new(0)).collect(),
        sent: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        received: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        misrouted: AtomicU64::new(0),
        receivers: u64::from(params.receivers),
    });
    let stop = CancellationToken::new();
    let mut receiving = JoinSet::new();
    for (j, subscriber) in receivers.into_iter().enumerate() {
        let (shared, stop) = (shared.clone(), stop.clone());
        receiving.spawn(async move {
            let mut hist = crate::fanout::histogram();
            subscriber
                .receive(
                    stop,
                    |payload| {
                        if let Some(us) = shared.on_payload(j as u64, payload, unix_us()) {
                            hist.saturating_record(us);
                        }
                    },
                    || {},
                )
                .await;
            hist
        });
    }

    let t0 = Instant::now() + START_LEAD;
    let t0_unix_us = unix_us() + START_LEAD.as_micros() as u64;
    let own_cpu = || procfs::cpu_time(std::process::id());
    let window = Window::open(broker.pid, t0, own_cpu()?)?;
    let mut sending = JoinSet::new();
    let padded = params.content_bytes.max(HEADER);
    for (s, publisher) in senders.into_iter().enumerate() {
        let shared = shared.clone();
        let step = u64::from(params.senders);
        let receivers = u64::from(params.receivers);
        let rate = u64::from(params.rate);
        sending.spawn(async move {
            let mut k = s as u64;
            while k < total {
                let offset = k * 1_000_000 / rate;
                tokio::time::sleep_until(t0 + Duration::from_micros(offset)).await;
                let mut payload = Vec::with_capacity(padded);
                payload.extend_from_slice(&k.to_be_bytes());
                payload.extend_from_slice(&(t0_unix_us + offset).to_be_bytes());
                payload.resize(padded, b'.');
                match publisher
                    .publish(&receiver_topic(k % receivers), payload)
                    .await
                {
                    Ok(()) => shared.sent.fetch_add(1, Ordering::Relaxed),
                    Err(_) => shared.errors.fetch_add(1, Ordering::Relaxed),
                };
                k += step;
            }
            publisher.flush().await;
            // Keep the connection (and its in-flight QoS 1 messages) until the drain ends.
            publisher
        });
    }
    let bar = progress_bar(total, "received, {msg}");
    let mut publishers = Vec::new();
    loop {
        tokio::select! {
            joined = sending.join_next() => match joined {
                Some(Ok(publisher)) => publishers.push(publisher),
                Some(Err(_)) => {}
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        bar.set_position(shared.received.load(Ordering::Relaxed));
        bar.set_message(format!(
            "{} sent ({})",
            thousands(shared.sent.load(Ordering::Relaxed)),
            peer.key()
        ));
    }
    // Drain: wait for what was sent, at most --drain-secs.
    let drain_until = Instant::now() + Duration::from_secs(params.drain_secs);
    let mut drained = false;
    while Instant::now() < drain_until {
        let (received, sent) = (
            shared.received.load(Ordering::Relaxed),
            shared.sent.load(Ordering::Relaxed),
        );
        bar.set_position(received);
        if received >= sent {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bar.finish_and_clear();
    let usage = window.close(broker.pid, own_cpu()?)?;
    stop.cancel();
    let mut hist = crate::fanout::histogram();
    while let Some(joined) = receiving.join_next().await {
        if let Ok(h) = joined {
            let _ = hist.add(&h);
        }
    }
    drop(publishers);
    let info = BrokerInfo::of(&broker, peer);
    drop(broker);

    let sent = shared.sent.load(Ordering::Relaxed);
    let received = shared.received.load(Ordering::Relaxed);
    let cpu = usage.server_cpu.as_secs_f64();
    let per_cpu = per(received, cpu);
    let e2e = latency::summary_to_p9999(&hist);
    Ok(Run {
        peer: peer.key(),
        broker: info,
        rate: params.rate,
        duration_secs: params.duration_secs,
        senders: params.senders,
        receivers: params.receivers,
        content_bytes: padded,
        drain_secs: params.drain_secs,
        messages_scheduled: total,
        sent,
        publish_errors: shared.errors.load(Ordering::Relaxed),
        received,
        missing: sent.saturating_sub(received),
        duplicates: shared.duplicates.load(Ordering::Relaxed),
        misrouted: shared.misrouted.load(Ordering::Relaxed),
        drained,
        measured_secs: round(usage.secs, 3),
        broker_cpu_secs: round(cpu, 3),
        broker_cpu_share: round(cpu / usage.secs.max(1e-9), 3),
        messages_per_broker_cpu_sec: round(per_cpu, 0),
        broker_cpu_us_per_message: round(cpu * 1e6 / received.max(1) as f64, 1),
        client_cpu_secs: round(usage.client_cpu.as_secs_f64(), 3),
        ratios: Ratios {
            per_cpu_sec: ratio(longlink.messages_per_cpu_sec, per_cpu),
            p50: ratio(longlink.e2e_p50_ms, e2e.p50),
            p99: ratio(longlink.e2e_p99_ms, e2e.p99),
            p999: ratio(longlink.e2e_p999_ms, e2e.p999),
        },
        e2e_latency_ms: e2e,
    })
}

/// Connects the receivers (subscribed, confirmed) and the senders, a few at a time.
async fn connect_all(
    peer: Peer,
    broker: &Broker,
    params: &Params,
    tag: u64,
    timeout: Duration,
) -> anyhow::Result<(Vec<Subscriber>, Vec<Publisher>)> {
    let addr = broker.addr;
    let permits = Arc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = JoinSet::new();
    for j in 0..params.receivers {
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let topics = [receiver_topic(u64::from(j))];
            Subscriber::connect(peer, addr, &format!("ll{tag}-r{j}"), None, &topics, timeout)
                .await
                .map(|s| (j, s))
        });
    }
    let mut receivers: Vec<(u32, Subscriber)> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(pair)) => receivers.push(pair),
            Ok(Err(err)) => anyhow::bail!("{}: a receiver failed: {err}", peer.key()),
            Err(err) => anyhow::bail!("{}: a receiver task failed: {err}", peer.key()),
        }
    }
    receivers.sort_by_key(|(j, _)| *j);
    let mut tasks = JoinSet::new();
    for s in 0..params.senders {
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            Publisher::connect(peer, addr, &format!("ll{tag}-s{s}"), timeout).await
        });
    }
    let mut senders = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(publisher)) => senders.push(publisher),
            Ok(Err(err)) => anyhow::bail!("{}: a sender failed: {err}", peer.key()),
            Err(err) => anyhow::bail!("{}: a sender task failed: {err}", peer.key()),
        }
    }
    Ok((receivers.into_iter().map(|(_, s)| s).collect(), senders))
}

/// Prints the peers' rows beside longlink's.
pub(crate) fn print(section: &Section<Run>, longlink: &Longlink) {
    if !section.print_head("; longlink is durable, the peers are not") {
        return;
    }
    println!(
        "  {:<16} {:>16} {:>9} {:>9} {:>9} {:>16} {:>10}",
        "server", "msgs/CPU-s", "p50 ms", "p99 ms", "p99.9 ms", "per CPU-s ratio", "p99 ratio"
    );
    println!(
        "  {:<16} {:>16} {:>9.2} {:>9.2} {:>9.2} {:>16} {:>10}",
        "longlink",
        big(longlink.messages_per_cpu_sec),
        longlink.e2e_p50_ms,
        longlink.e2e_p99_ms,
        longlink.e2e_p999_ms,
        "—",
        "—"
    );
    for run in &section.runs {
        println!(
            "  {:<16} {:>16} {:>9.2} {:>9.2} {:>9.2} {:>16} {:>10}",
            run.peer,
            big(run.messages_per_broker_cpu_sec),
            run.e2e_latency_ms.p50,
            run.e2e_latency_ms.p99,
            run.e2e_latency_ms.p999,
            times(run.ratios.per_cpu_sec),
            times(run.ratios.p99)
        );
    }
    for run in &section.runs {
        println!(
            "  {}: {} of {} sent, {} received ({} missing, {} duplicates, {} publish errors), broker CPU {:.2} s in {:.2} s ({})",
            run.peer,
            thousands(run.sent),
            thousands(run.messages_scheduled),
            thousands(run.received),
            thousands(run.missing),
            thousands(run.duplicates),
            thousands(run.publish_errors),
            run.broker_cpu_secs,
            run.measured_secs,
            run.broker.guarantee
        );
    }
}
