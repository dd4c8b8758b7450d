//! The peers' `push`: a publisher sends to distinct online users' topics, with longlink's push
//! run's parameters; deliveries per broker CPU-second and the latency publish → receipt.
//!
//! N users (connections subscribed to `u/<i>`, over worker processes) and one publishing
//! connection, the peer's equivalent of the backend calling longlink's API. Push k goes to
//! users k·B … k·B + B − 1 (mod N), as longlink's: B publishes, one per topic (MQTT and NATS
//! have no list publish), each carrying the push's content with the wall clock taken before
//! the first of them. Closed loop as longlink's: W pushes in progress, the next starts when
//! one's B deliveries all arrived (or its timeout passed). The broker's CPU over the push phase
//! gives deliveries per broker CPU-second.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::broker::Broker;
use super::client::Publisher;
use super::{BrokerInfo, Chosen, Peer, Section, Users, announce, big, ratio, times, user_topic};
use crate::fanout::{self, Delivered, SeriesAcc};
use crate::latency::{self, Latency};
use crate::num::round;
use crate::procfs::Window;
use crate::report::{per, progress_bar, thousands};

/// Time buckets of pushes (the series of the content), as longlink's run.
const BUCKETS: u32 = 50;

/// The longlink run's parameters, which the peers reuse.
pub(crate) struct Params {
    pub(crate) users: u32,
    pub(crate) pushes: u32,
    pub(crate) batch: u32,
    pub(crate) in_flight: u32,
    pub(crate) push_timeout_secs: u64,
    pub(crate) per_worker: u32,
    pub(crate) concurrency: u32,
    pub(crate) login_timeout_secs: u64,
    pub(crate) deadline_secs: u64,
}

/// longlink's figures, for the ratios.
#[derive(Debug)]
pub(crate) struct Longlink {
    pub(crate) deliveries_per_cpu_sec: f64,
    pub(crate) e2e_p50_ms: f64,
    pub(crate) e2e_p99_ms: f64,
}

/// One peer's figures.
#[derive(Debug, Serialize)]
pub(crate) struct Run {
    pub(crate) peer: String,
    broker: BrokerInfo,
    users: u32,
    pushes: u32,
    batch: u32,
    in_flight: u32,
    push_timeout_secs: u64,
    workers: usize,
    subscribe_secs: f64,
    /// Publishes (one per target).
    pub(crate) targets: u64,
    pub(crate) delivered: u64,
    pub(crate) missing: u64,
    duplicates: u64,
    pushes_complete: u64,
    pushes_incomplete: u64,
    publish_errors: u64,
    dropped: u32,
    /// First publish → every push complete or given up: what the CPU covers.
    measured_secs: f64,
    deliveries_per_sec: f64,
    broker_cpu_secs: f64,
    broker_cpu_share: f64,
    pub(crate) deliveries_per_broker_cpu_sec: f64,
    broker_cpu_us_per_delivery: f64,
    client_cpu_secs: f64,
    /// Publish call → receipt (wall clock, as longlink's API call → receipt).
    e2e_latency_ms: Latency,
    ratios: Ratios,
}

#[derive(Debug, Serialize)]
struct Ratios {
    /// longlink's deliveries per server CPU-second ÷ the peer's.
    per_cpu_sec: f64,
    /// longlink's end-to-end p50 ÷ the peer's.
    p50: f64,
    /// longlink's end-to-end p99 ÷ the peer's.
    p99: f64,
}

/// Runs the workload against every chosen peer, one after the other.
///
/// # Errors
/// A broker that does not start, connections that fail, the deadline.
pub(crate) async fn run(
    chosen: &Chosen,
    params: &Params,
    longlink: &Longlink,
    exe: &Path,
) -> anyhow::Result<Section<Run>> {
    super::each_peer(
        chosen,
        params.deadline_secs,
        "--deadline-secs",
        |peer, deadline| one(peer, params, longlink, exe, deadline),
    )
    .await
}

/// What the pushing tasks share.
struct Pushing {
    publisher: Publisher,
    delivered: Arc<Delivered>,
    next: AtomicUsize,
    complete: AtomicU64,
    incomplete: AtomicU64,
    errors: AtomicU64,
    tag: u64,
    count: usize,
    batch: usize,
    users: u32,
    timeout: Duration,
}

impl Pushing {
    async fn run(self: Arc<Self>) {
        loop {
            let k = self.next.fetch_add(1, Ordering::Relaxed);
            if k >= self.count {
                return;
            }
            let series = (k as u64 * u64::from(BUCKETS) / self.count as u64) as u32;
            let t_call = fanout::unix_us();
            let content = fanout::content(self.tag, series, k as u32, t_call);
            let mut sent = 0;
            for j in 0..self.batch {
                let user = ((k * self.batch + j) % self.users as usize) as u32;
                match self
                    .publisher
                    .publish(&user_topic(user), content.clone().into_bytes())
                    .await
                {
                    Ok(()) => sent += 1,
                    Err(_) => {
                        self.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            self.publisher.flush().await;
            if self
                .delivered
                .wait_for(k, sent, Instant::now() + self.timeout)
                .await
                && sent == self.batch as u32
            {
                self.complete.fetch_add(1, Ordering::Relaxed);
            } else {
                self.incomplete.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn one(
    peer: Peer,
    params: &Params,
    longlink: &Longlink,
    exe: &Path,
    deadline: Instant,
) -> anyhow::Result<Run> {
    let broker = Broker::start(peer.kind)?;
    announce(
        peer,
        &broker,
        &format!(
            "{} pushes of {} topics to {} subscribed users, {} in flight",
            thousands(u64::from(params.pushes)),
            params.batch,
            thousands(u64::from(params.users)),
            params.in_flight
        ),
    );
    let users = Users {
        exe,
        broker: &broker,
        peer,
        users: params.users,
        per_worker: params.per_worker,
        concurrency: params.concurrency,
        login_timeout_secs: params.login_timeout_secs,
        pushes: params.pushes as usize,
        broadcast_topic: None,
        deadline,
    };
    let (fleet, tag, subscribe_secs) = super::users_online(&users).await?;
    let (fleet, publisher) =
        super::publisher(peer, &broker, fleet, tag, params.login_timeout_secs).await?;
    let pushing = Arc::new(Pushing {
        publisher,
        delivered: fleet.delivered.clone(),
        next: AtomicUsize::new(0),
        complete: AtomicU64::new(0),
        incomplete: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        tag,
        count: params.pushes as usize,
        batch: params.batch as usize,
        users: params.users,
        timeout: Duration::from_secs(params.push_timeout_secs),
    });
    let window = Window::open(broker.pid, Instant::now(), fleet.load_generator_cpu()?)?;
    let mut tasks = JoinSet::new();
    for _ in 0..params.in_flight.min(params.pushes) {
        tasks.spawn(pushing.clone().run());
    }
    let bar = progress_bar(u64::from(params.pushes), "pushes done, {msg}");
    loop {
        tokio::select! {
            joined = tasks.join_next() => if joined.is_none() { break },
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        bar.set_position(
            pushing.complete.load(Ordering::Relaxed) + pushing.incomplete.load(Ordering::Relaxed),
        );
        bar.set_message(format!(
            "{} deliveries ({})",
            thousands(fleet.delivered.total()),
            peer.key()
        ));
    }
    bar.finish_and_clear();
    let usage = window.close(broker.pid, fleet.load_generator_cpu()?)?;
    let report = fleet.finish().await;
    let info = BrokerInfo::of(&broker, peer);
    drop(broker);

    let mut all = SeriesAcc::empty();
    for acc in report.series.values() {
        all.merge(acc);
    }
    let targets = u64::from(params.pushes) * u64::from(params.batch);
    let delivered = report.totals.delivered;
    let cpu = usage.server_cpu.as_secs_f64();
    let per_cpu = per(delivered, cpu);
    let e2e = latency::summary(&all.hist);
    Ok(Run {
        peer: peer.key(),
        broker: info,
        users: params.users,
        pushes: params.pushes,
        batch: params.batch,
        in_flight: params.in_flight,
        push_timeout_secs: params.push_timeout_secs,
        workers: report_workers(params),
        subscribe_secs: round(subscribe_secs, 2),
        targets,
        delivered,
        missing: targets.saturating_sub(delivered),
        duplicates: report.totals.duplicates,
        pushes_complete: pushing.complete.load(Ordering::Relaxed),
        pushes_incomplete: pushing.incomplete.load(Ordering::Relaxed),
        publish_errors: pushing.errors.load(Ordering::Relaxed),
        dropped: report.dropped,
        measured_secs: round(usage.secs, 3),
        deliveries_per_sec: round(per(delivered, usage.secs), 0),
        broker_cpu_secs: round(cpu, 3),
        broker_cpu_share: round(cpu / usage.secs.max(1e-9), 3),
        deliveries_per_broker_cpu_sec: round(per_cpu, 0),
        broker_cpu_us_per_delivery: round(cpu * 1e6 / delivered.max(1) as f64, 2),
        client_cpu_secs: round(usage.client_cpu.as_secs_f64(), 3),
        ratios: Ratios {
            per_cpu_sec: ratio(longlink.deliveries_per_cpu_sec, per_cpu),
            p50: ratio(longlink.e2e_p50_ms, e2e.p50),
            p99: ratio(longlink.e2e_p99_ms, e2e.p99),
        },
        e2e_latency_ms: e2e,
    })
}

fn report_workers(params: &Params) -> usize {
    crate::workers::count(params.users, params.per_worker) as usize
}

/// Prints the peers' rows beside longlink's.
pub(crate) fn print(section: &Section<Run>, longlink: &Longlink) {
    if !section.print_head("") {
        return;
    }
    println!(
        "  {:<16} {:>20} {:>10} {:>10} {:>16} {:>10}",
        "server", "deliveries/CPU-s", "p50 ms", "p99 ms", "per CPU-s ratio", "p99 ratio"
    );
    println!(
        "  {:<16} {:>20} {:>10.2} {:>10.2} {:>16} {:>10}",
        "longlink",
        big(longlink.deliveries_per_cpu_sec),
        longlink.e2e_p50_ms,
        longlink.e2e_p99_ms,
        "—",
        "—"
    );
    for run in &section.runs {
        println!(
            "  {:<16} {:>20} {:>10.2} {:>10.2} {:>16} {:>10}",
            run.peer,
            big(run.deliveries_per_broker_cpu_sec),
            run.e2e_latency_ms.p50,
            run.e2e_latency_ms.p99,
            times(run.ratios.per_cpu_sec),
            times(run.ratios.p99)
        );
    }
    for run in &section.runs {
        println!(
            "  {}: {} of {} delivered ({} missing, {} duplicates, {} publish errors), broker CPU {:.2} s in {:.2} s",
            run.peer,
            thousands(run.delivered),
            thousands(run.targets),
            thousands(run.missing),
            thousands(run.duplicates),
            thousands(run.publish_errors),
            run.broker_cpu_secs,
            run.measured_secs
        );
    }
}
