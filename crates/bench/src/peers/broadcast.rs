//! The peers' `broadcast`: N subscribers on one topic (each also on its own `u/<i>`, as a
//! logged-in user), one publish per round, R rounds, with longlink's broadcast parameters; per
//! round the time from the publish call to the first, median and last delivery, and the
//! broker's CPU over the round (publish → last delivery + the pause), as longlink's rounds.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::broker::Broker;
use super::{BrokerInfo, Chosen, Peer, Section, Users, announce, big, ratio, times};
use crate::fanout;
use crate::latency;
use crate::num::round;
use crate::procfs::Window;
use crate::report::{per, progress_bar, thousands};

/// The topic every user subscribes to.
const TOPIC: &str = "b/all";

/// The longlink run's parameters, which the peers reuse.
pub(crate) struct Params {
    pub(crate) users: u32,
    pub(crate) rounds: u32,
    pub(crate) pause_ms: u64,
    pub(crate) round_timeout_secs: u64,
    pub(crate) per_worker: u32,
    pub(crate) concurrency: u32,
    pub(crate) login_timeout_secs: u64,
    pub(crate) deadline_secs: u64,
}

/// longlink's figures, for the ratios.
#[derive(Debug)]
pub(crate) struct Longlink {
    /// Median over the rounds of the last delivery, ms.
    pub(crate) last_median_ms: f64,
    pub(crate) deliveries_per_cpu_sec: f64,
}

/// One peer's figures.
#[derive(Debug, Serialize)]
pub(crate) struct Run {
    pub(crate) peer: String,
    broker: BrokerInfo,
    users: u32,
    rounds_asked: u32,
    pause_ms: u64,
    round_timeout_secs: u64,
    topic: &'static str,
    workers: usize,
    subscribe_secs: f64,
    /// N × R.
    pub(crate) expected: u64,
    pub(crate) delivered: u64,
    pub(crate) missing: u64,
    duplicates: u64,
    dropped: u32,
    pub(crate) rounds: Vec<Round>,
    /// Last delivery of the rounds: min, median, max (ms).
    pub(crate) last_delivery_ms: MinMedMax,
    broker_cpu_secs: f64,
    pub(crate) deliveries_per_broker_cpu_sec: f64,
    client_cpu_secs: f64,
    /// Every delivery of every round: publish call → receipt.
    e2e_latency_ms: latency::Latency,
    ratios: Ratios,
}

/// One round's figures.
#[derive(Debug, Serialize)]
pub(crate) struct Round {
    round: u32,
    pub(crate) delivered: u64,
    complete: bool,
    first_delivery_ms: f64,
    median_delivery_ms: f64,
    last_delivery_ms: f64,
    broker_cpu_secs: f64,
}

/// Min, median and max.
#[derive(Debug, Default, Serialize)]
pub(crate) struct MinMedMax {
    pub(crate) min: f64,
    pub(crate) median: f64,
    pub(crate) max: f64,
}

impl MinMedMax {
    fn of(mut values: Vec<f64>) -> MinMedMax {
        values.sort_by(f64::total_cmp);
        MinMedMax {
            min: values.first().copied().unwrap_or(0.0),
            median: values.get(values.len() / 2).copied().unwrap_or(0.0),
            max: values.last().copied().unwrap_or(0.0),
        }
    }
}

#[derive(Debug, Serialize)]
struct Ratios {
    /// longlink's median last delivery ÷ the peer's (below 1: longlink is done sooner).
    last_delivery: f64,
    /// longlink's deliveries per server CPU-second ÷ the peer's.
    per_cpu_sec: f64,
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
            "{} rounds of one publish to {} subscribers of {TOPIC}",
            params.rounds,
            thousands(u64::from(params.users))
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
        pushes: params.rounds as usize,
        broadcast_topic: Some(TOPIC),
        deadline,
    };
    let (fleet, tag, subscribe_secs) = super::users_online(&users).await?;
    let (fleet, publisher) =
        super::publisher(peer, &broker, fleet, tag, params.login_timeout_secs).await?;
    let bar = progress_bar(u64::from(params.rounds), "rounds, {msg}");
    let mut round_cpu = Vec::new();
    let mut complete = Vec::new();
    let mut cpu_total = Duration::ZERO;
    let mut client_cpu = Duration::ZERO;
    let mut failure = None;
    for r in 0..params.rounds {
        let window = Window::open(broker.pid, Instant::now(), fleet.load_generator_cpu()?)?;
        let content = fanout::content(tag, r, r, fanout::unix_us());
        if let Err(err) = publisher.publish(TOPIC, content.into_bytes()).await {
            failure = Some(err);
            break;
        }
        publisher.flush().await;
        let until = Instant::now() + Duration::from_secs(params.round_timeout_secs);
        complete.push(
            fleet
                .delivered
                .wait_for(r as usize, params.users, until)
                .await,
        );
        tokio::time::sleep(Duration::from_millis(params.pause_ms)).await;
        let usage = window.close(broker.pid, fleet.load_generator_cpu()?)?;
        cpu_total += usage.server_cpu;
        client_cpu += usage.client_cpu;
        round_cpu.push(usage.server_cpu.as_secs_f64());
        bar.inc(1);
        bar.set_message(format!(
            "{} deliveries ({})",
            thousands(fleet.delivered.total()),
            peer.key()
        ));
    }
    bar.finish_and_clear();
    drop(publisher);
    let report = fleet.finish().await;
    let info = BrokerInfo::of(&broker, peer);
    drop(broker);
    if let Some(err) = failure {
        anyhow::bail!("{}: publish failed: {err}", peer.key());
    }

    let mut all = fanout::SeriesAcc::empty();
    let rounds: Vec<Round> = (0..params.rounds)
        .map(|r| {
            let acc = report.series.get(&r);
            if let Some(acc) = acc {
                all.merge(acc);
            }
            let hist = acc.map(|a| &a.hist);
            Round {
                round: r,
                delivered: hist.map_or(0, |h| h.len()),
                complete: complete.get(r as usize).copied().unwrap_or(false),
                first_delivery_ms: hist.map_or(0.0, |h| latency::ms(h.min())),
                median_delivery_ms: hist.map_or(0.0, |h| latency::ms(h.value_at_quantile(0.5))),
                last_delivery_ms: acc.map_or(0.0, |a| latency::ms(a.max_us)),
                broker_cpu_secs: round(round_cpu.get(r as usize).copied().unwrap_or(0.0), 3),
            }
        })
        .collect();
    let expected = u64::from(params.users) * u64::from(params.rounds);
    let delivered = report.totals.delivered;
    let last = MinMedMax::of(rounds.iter().map(|r| r.last_delivery_ms).collect());
    let cpu = cpu_total.as_secs_f64();
    let per_cpu = per(delivered, cpu);
    Ok(Run {
        peer: peer.key(),
        broker: info,
        users: params.users,
        rounds_asked: params.rounds,
        pause_ms: params.pause_ms,
        round_timeout_secs: params.round_timeout_secs,
        topic: TOPIC,
        workers: crate::workers::count(params.users, params.per_worker) as usize,
        subscribe_secs: round(subscribe_secs, 2),
        expected,
        delivered,
        missing: expected.saturating_sub(delivered),
        duplicates: report.totals.duplicates,
        dropped: report.dropped,
        ratios: Ratios {
            last_delivery: ratio(longlink.last_median_ms, last.median),
            per_cpu_sec: ratio(longlink.deliveries_per_cpu_sec, per_cpu),
        },
        rounds,
        last_delivery_ms: last,
        broker_cpu_secs: round(cpu, 3),
        deliveries_per_broker_cpu_sec: round(per_cpu, 0),
        client_cpu_secs: round(client_cpu.as_secs_f64(), 3),
        e2e_latency_ms: latency::summary(&all.hist),
    })
}

/// Prints the peers' rows beside longlink's.
pub(crate) fn print(section: &Section<Run>, longlink: &Longlink) {
    if !section.print_head("") {
        return;
    }
    println!(
        "  {:<16} {:>16} {:>20} {:>18} {:>16}",
        "server", "last median ms", "deliveries/CPU-s", "last-delivery ratio", "per CPU-s ratio"
    );
    println!(
        "  {:<16} {:>16.1} {:>20} {:>18} {:>16}",
        "longlink",
        longlink.last_median_ms,
        big(longlink.deliveries_per_cpu_sec),
        "—",
        "—"
    );
    for run in &section.runs {
        println!(
            "  {:<16} {:>16.1} {:>20} {:>18} {:>16}",
            run.peer,
            run.last_delivery_ms.median,
            big(run.deliveries_per_broker_cpu_sec),
            times(run.ratios.last_delivery),
            times(run.ratios.per_cpu_sec)
        );
    }
    for run in &section.runs {
        let rounds: Vec<String> = run
            .rounds
            .iter()
            .map(|r| {
                format!(
                    "{:.1}/{:.1}/{:.1}",
                    r.first_delivery_ms, r.median_delivery_ms, r.last_delivery_ms
                )
            })
            .collect();
        println!(
            "  {}: {} of {} delivered, {} duplicates; first/median/last ms per round: {}",
            run.peer,
            thousands(run.delivered),
            thousands(run.expected),
            thousands(run.duplicates),
            rounds.join(", ")
        );
    }
}
