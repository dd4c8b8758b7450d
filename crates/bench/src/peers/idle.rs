//! The peers' `idle`: N connections each subscribed to its own topic `u/<i>` (a peer's
//! logged-in user), held idle; the broker's RSS per connection (settled RSS after − baseline,
//! ÷ N) and its CPU per connect + subscribe, as longlink's `bench idle` measures a login.
//!
//! Same steps as longlink's: a fresh broker, a warm-up of a few connections that come and go,
//! the RSS settled (the baseline), the connections opened over worker processes with the same
//! concurrency, the broker's CPU over that phase, the RSS settled again.

use std::path::Path;

use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::broker::Broker;
use super::client::Subscriber;
use super::{BrokerInfo, Chosen, Peer, Section, Users, announce, big, ratio, times, user_topic};
use crate::num::round;
use crate::procfs;
use crate::procfs::settle;
use crate::report::{mib, per, thousands};

/// The longlink run's parameters, which the peers reuse.
pub(crate) struct Params {
    pub(crate) connections: u32,
    pub(crate) per_worker: u32,
    pub(crate) concurrency: u32,
    pub(crate) login_timeout_secs: u64,
    pub(crate) warmup: u32,
    pub(crate) deadline_secs: u64,
}

/// longlink's figures, for the ratios.
pub(crate) struct Longlink {
    pub(crate) rss_per_connection_bytes: u64,
    pub(crate) cpu_us_per_login: f64,
    pub(crate) logins_per_cpu_sec: f64,
}

/// One peer's figures.
#[derive(Debug, Serialize)]
pub(crate) struct Run {
    peer: String,
    broker: BrokerInfo,
    connections: u32,
    topic: &'static str,
    workers: usize,
    per_worker: u32,
    concurrency: u32,
    warmup: u32,
    connected: u32,
    failed: u32,
    dropped: u32,
    connect_wall_secs: f64,
    connects_per_sec: f64,
    broker_cpu_secs: f64,
    /// Broker CPU per connect + subscribe (TCP accept, CONNECT/CONNACK or INFO/CONNECT,
    /// SUBSCRIBE/SUBACK or SUB + PING/PONG).
    broker_cpu_us_per_connection: f64,
    connections_per_broker_cpu_sec: f64,
    client_cpu_secs: f64,
    rss_baseline_bytes: u64,
    rss_after_bytes: u64,
    rss_per_connection_bytes: u64,
    rss_anon_per_connection_bytes: u64,
    rss_settled: bool,
    ratios: Ratios,
}

#[derive(Debug, Serialize)]
struct Ratios {
    /// longlink's RSS per connection ÷ the peer's (above 1: longlink uses more).
    memory_per_connection: f64,
    /// longlink's logins per server CPU-second ÷ the peer's connects per broker CPU-second
    /// (above 1: longlink does more per CPU-second).
    per_cpu_sec: f64,
    /// longlink's CPU per login ÷ the peer's per connect + subscribe.
    cpu_per_connection: f64,
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
            "{} idle connections, each subscribed to its own topic",
            thousands(u64::from(params.connections))
        ),
    );
    warm_up(peer, &broker, params).await?;
    let baseline = settle(broker.pid).await?;
    let cpu_before = procfs::cpu_time(broker.pid)?;
    let users = Users {
        exe,
        broker: &broker,
        peer,
        users: params.connections,
        per_worker: params.per_worker,
        concurrency: params.concurrency,
        login_timeout_secs: params.login_timeout_secs,
        pushes: 0,
        broadcast_topic: None,
        deadline,
    };
    let (mut fleet, _tag, secs) = super::users_online(&users).await?;
    let wall = fleet
        .workers
        .login_wall()
        .map_or(secs, |wall| wall.as_secs_f64());
    let cpu = procfs::cpu_time(broker.pid)?.saturating_sub(cpu_before);
    let client_cpu = fleet.workers.cpu_time();
    let after = settle(broker.pid).await?;
    fleet.workers.drain();
    let connected = fleet.workers.logged_in();
    let failed = fleet.workers.failed();
    let dropped_at_measure = fleet.workers.dropped();
    let workers = fleet.workers.len();
    let report = fleet.finish().await;
    let info = BrokerInfo::of(&broker, peer);
    drop(broker);
    let held = u64::from(connected.saturating_sub(dropped_at_measure).max(1));
    let per_connection = after.rss.total.saturating_sub(baseline.rss.total) / held;
    let anon_per_connection = after.rss.anon.saturating_sub(baseline.rss.anon) / held;
    let cpu_secs = cpu.as_secs_f64();
    let cpu_us = if connected == 0 {
        0.0
    } else {
        cpu_secs * 1e6 / f64::from(connected)
    };
    let per_cpu = per(u64::from(connected), cpu_secs);
    Ok(Run {
        peer: peer.key(),
        broker: info,
        connections: params.connections,
        topic: "u/<i>",
        workers,
        per_worker: params.per_worker,
        concurrency: params.concurrency,
        warmup: params.warmup.max(1),
        connected,
        failed,
        dropped: report.dropped,
        connect_wall_secs: round(wall, 3),
        connects_per_sec: round(per(u64::from(connected), wall), 1),
        broker_cpu_secs: round(cpu_secs, 3),
        broker_cpu_us_per_connection: round(cpu_us, 1),
        connections_per_broker_cpu_sec: round(per_cpu, 0),
        client_cpu_secs: round(client_cpu.as_secs_f64(), 3),
        rss_baseline_bytes: baseline.rss.total,
        rss_after_bytes: after.rss.total,
        rss_per_connection_bytes: per_connection,
        rss_anon_per_connection_bytes: anon_per_connection,
        rss_settled: after.stable,
        ratios: Ratios {
            memory_per_connection: ratio(
                longlink.rss_per_connection_bytes as f64,
                per_connection as f64,
            ),
            per_cpu_sec: ratio(longlink.logins_per_cpu_sec, per_cpu),
            cpu_per_connection: ratio(longlink.cpu_us_per_login, cpu_us),
        },
    })
}

/// Opens and closes `warmup` subscribed connections at once, so the broker's lazily built
/// state exists before the baseline (as longlink's warm-up logins do).
async fn warm_up(peer: Peer, broker: &Broker, params: &Params) -> anyhow::Result<()> {
    let timeout = std::time::Duration::from_secs(params.login_timeout_secs);
    let mut tasks = JoinSet::new();
    for i in 0..params.warmup.max(1) {
        let addr = broker.addr;
        tasks.spawn(async move {
            let topics = [user_topic(1_000_000_000 + i)];
            Subscriber::connect(peer, addr, &format!("warmup-{i}"), None, &topics, timeout).await
        });
    }
    let mut held = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(subscriber)) => held.push(subscriber),
            Ok(Err(err)) => anyhow::bail!("{}: warm-up connection failed: {err}", peer.key()),
            Err(err) => anyhow::bail!("{}: warm-up task failed: {err}", peer.key()),
        }
    }
    drop(held);
    Ok(())
}

/// Prints the peers' rows beside longlink's.
pub(crate) fn print(section: &Section<Run>, longlink: &Longlink) {
    if !section.print_head("") {
        return;
    }
    println!(
        "  {:<16} {:>12} {:>12} {:>18} {:>14} {:>14}",
        "server", "RSS/conn", "CPU/conn", "conns/CPU-s", "memory ratio", "per CPU-s ratio"
    );
    println!(
        "  {:<16} {:>10} B {:>9.1} µs {:>18} {:>14} {:>14}",
        "longlink",
        thousands(longlink.rss_per_connection_bytes),
        longlink.cpu_us_per_login,
        big(longlink.logins_per_cpu_sec),
        "—",
        "—"
    );
    for run in &section.runs {
        println!(
            "  {:<16} {:>10} B {:>9.1} µs {:>18} {:>14} {:>14}",
            run.peer,
            thousands(run.rss_per_connection_bytes),
            run.broker_cpu_us_per_connection,
            big(run.connections_per_broker_cpu_sec),
            times(run.ratios.memory_per_connection),
            times(run.ratios.per_cpu_sec)
        );
    }
    for run in &section.runs {
        println!(
            "  {}: {} of {} subscribed in {:.2} s, RSS {} → {}{}",
            run.peer,
            thousands(u64::from(run.connected)),
            thousands(u64::from(run.connections)),
            run.connect_wall_secs,
            mib(run.rss_baseline_bytes),
            mib(run.rss_after_bytes),
            if run.rss_settled {
                ""
            } else {
                " (RSS still moving)"
            }
        );
    }
}
