//! Scenario `broadcast`: one `POST /v1/push` with `"all": true` to 15,000 online users; the
//! time from the API call to the **last** delivery (DESIGN.md: ≤ 100 ms; nats 275 ms,
//! mosquitto 730 ms) and the latency of every delivery, over R rounds.
//!
//! 1. The server under test: by default the bench starts its own (`<exe> serve`, default
//!    config on free loopback ports, a temporary data dir), or it measures a running one
//!    (`--server ADDR --server-pid PID --api ADDR`). One server process holds the 15,000
//!    sessions (its limit is 20,000 open files).
//! 2. N clients of appcode 130 log in over worker processes ([`crate::fanout`]); the API must
//!    count all N online first.
//! 3. Round r: the bench takes the wall clock, calls `POST /v1/push` (`all: true`, online-only
//!    unless `--persist`), and waits until every client received the push (at most
//!    `--round-timeout-secs`), then `--pause-ms` more so the clients' MSG_ACKs are processed
//!    inside the round. Each client records its receipt − the API call; the round's largest
//!    latency is the time to the last delivery. The server's CPU time over the round (call →
//!    end of the pause) gives deliveries per server CPU-second; `GET /v1/push/{id}` after the
//!    round gives the server's own fan-out time and counters.
//! 4. R rounds (default 5): min, median and max of the last-delivery time, and the
//!    distribution of all deliveries.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::Args;
use indicatif::ProgressBar;
use serde::Serialize;
use tokio::time::Instant;

use crate::api::{PushAnswer, PushBody, PushStats};
use crate::fanout::{self, SeriesAcc};
use crate::latency::{self, Latency};
use crate::num::round;
use crate::peers;
use crate::plot;
use crate::procfs::{Usage, Window};
use crate::report::{Machine, RunStamp, per, progress_bar, thousands, verdict};
use crate::s2c::{self, Clients, LoginFigures, S2cOptions, ServerInfo};

/// DESIGN.md target: API call → last delivery of a broadcast to 15,000 users.
const TARGET_LAST_MS: f64 = 100.0;
/// DESIGN.md's peers, same broadcast: nats and mosquitto; only the fallback reference when no
/// peer ran in the same run (`--peers none`).
const NATS_LAST_MS: f64 = 275.0;
const MOSQUITTO_LAST_MS: f64 = 730.0;
const PEER_REFERENCE: &str = "DESIGN.md (measured by others earlier; no peer ran in this run)";
/// Wait before retrying a push the server refused as overloaded.
const RETRY_AFTER: Duration = Duration::from_millis(5);
/// Per-round distributions drawn in the plot (beyond, only "all rounds").
const PLOTTED_ROUNDS: usize = 5;

/// `longlink bench broadcast`: one push to every online user of an appcode, R times.
#[derive(Debug, Clone, Args)]
pub struct BroadcastArgs {
    /// Logged-in clients (one user each) — all of them get every broadcast.
    #[arg(long, default_value_t = 15_000)]
    pub users: u32,
    /// Broadcasts to send, one at a time.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Persisted broadcasts (stored for every target); without it online-only.
    #[arg(long)]
    pub persist: bool,
    /// After a round's last delivery, wait this long (MSG_ACKs, a quiet server) before the
    /// next; the round's CPU figure includes it.
    #[arg(long, default_value_t = 500)]
    pub pause_ms: u64,
    /// A round not fully delivered within this many seconds is given up on.
    #[arg(long, default_value_t = 30)]
    pub round_timeout_secs: u64,
    /// The clients' appcode.
    #[arg(long, default_value_t = 130)]
    pub appcode: u32,
    /// msgtype of the broadcasts.
    #[arg(long, default_value_t = 1)]
    pub msgtype: u32,
    /// uids are this prefix, a per-run tag, then a number.
    #[arg(long, default_value = "bench-bcast-")]
    pub uid_prefix: String,
    /// The whole run is abandoned after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub deadline_secs: u64,
    /// Clients, server and output: the options every s2c scenario takes.
    #[command(flatten)]
    pub options: S2cOptions,
}

/// Runs the scenario: prints the figures, writes `--json` and `--plot`.
///
/// # Errors
/// Bad arguments, a server that does not start or answer, failed logins, a refused push,
/// the deadline.
pub async fn run(args: BroadcastArgs) -> anyhow::Result<()> {
    if args.users == 0 || args.rounds == 0 {
        bail!("--users and --rounds must be at least 1");
    }
    s2c::run(
        &args.options,
        args.appcode,
        args.deadline_secs,
        async |exe, bench, deadline| measure(&args, exe, bench, deadline).await,
        async |chosen, exe, json: &mut BroadcastJson| run_peers(&args, chosen, exe, json).await,
    )
    .await
}

/// The same broadcast against the peers (`--peers`); their measured last delivery replaces
/// DESIGN.md's in the verdict (mosquitto: its QoS 0 run, the closest to an online-only push).
async fn run_peers(
    args: &BroadcastArgs,
    chosen: &crate::peers::Chosen,
    exe: &Path,
    json: &mut BroadcastJson,
) -> anyhow::Result<()> {
    let r = &json.results;
    let longlink = peers::broadcast::Longlink {
        last_median_ms: r.last_delivery_ms.median,
        deliveries_per_cpu_sec: r.deliveries_per_server_cpu_sec,
    };
    let params = peers::broadcast::Params {
        users: args.users,
        rounds: args.rounds,
        pause_ms: args.pause_ms,
        round_timeout_secs: args.round_timeout_secs,
        per_worker: args.options.per_worker,
        concurrency: args.options.login_concurrency,
        login_timeout_secs: args.options.login_timeout_secs,
        deadline_secs: args.deadline_secs,
    };
    let section = peers::broadcast::run(chosen, &params, &longlink, exe).await?;
    let measured = |key: &str| {
        section
            .runs
            .iter()
            .find(|run| run.peer == key && run.last_delivery_ms.median > 0.0)
            .map(|run| run.last_delivery_ms.median)
    };
    let median = longlink.last_median_ms;
    let mut sources = Vec::new();
    if let Some(nats) = measured("nats") {
        json.targets.nats_last_delivery_ms = nats;
        json.verdict.ratio_to_nats = round(median / nats, 3);
        sources.push("nats");
    }
    if let Some(mosquitto) = measured("mosquitto-qos0") {
        json.targets.mosquitto_last_delivery_ms = mosquitto;
        json.verdict.ratio_to_mosquitto = round(median / mosquitto, 3);
        sources.push("mosquitto-qos0");
    }
    if !sources.is_empty() {
        json.targets.peers_reference = format!("measured in this run: {}", sources.join(", "));
    }
    json.peers = Some((section, longlink));
    Ok(())
}

/// What the bench saw of one round while it ran.
struct RoundRun {
    push_id: u64,
    targets: u64,
    expected: u32,
    complete: bool,
    overloaded_retries: u64,
    usage: Usage,
    stats: Option<PushStats>,
}

type Report = s2c::Report<BroadcastJson>;

#[derive(Debug, Serialize)]
struct BroadcastJson {
    #[serde(flatten)]
    run: RunStamp,
    inputs: Inputs,
    server: ServerInfo,
    machine: Machine,
    results: Results,
    targets: Targets,
    verdict: Verdict,
    notes: Vec<String>,
    /// The same broadcast against the peers, in the same run (`--peers`), with longlink's
    /// figures they are compared with.
    #[serde(serialize_with = "peers_only")]
    peers: Option<(
        peers::Section<peers::broadcast::Run>,
        peers::broadcast::Longlink,
    )>,
}

fn peers_only<S: serde::Serializer>(
    peers: &Option<(
        peers::Section<peers::broadcast::Run>,
        peers::broadcast::Longlink,
    )>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    peers
        .as_ref()
        .map(|(section, _)| section)
        .serialize(serializer)
}

#[derive(Debug, Serialize)]
struct Inputs {
    users: u32,
    rounds: u32,
    persist: bool,
    pause_ms: u64,
    round_timeout_secs: u64,
    appcode: u32,
    msgtype: u32,
    client_ack: bool,
    workers: usize,
    per_worker: u32,
    uid_prefix: String,
}

#[derive(Debug, Serialize)]
struct Results {
    #[serde(flatten)]
    login: LoginFigures,
    rounds: Vec<RoundResult>,
    /// API call → last delivery, over the rounds.
    last_delivery_ms: MinMedMax,
    /// Every delivery of every round.
    all_deliveries_ms: Latency,
    delivered: u64,
    expected: u64,
    missing: u64,
    duplicates: u64,
    foreign: u64,
    dropped: u32,
    server_cpu_secs: f64,
    deliveries_per_server_cpu_sec: f64,
    server_cpu_us_per_delivery: f64,
    server_threads_cpu_secs: std::collections::BTreeMap<String, f64>,
    client_cpu_secs: f64,
    /// (percentile, ms) of all deliveries.
    percentiles: Vec<(f64, f64)>,
}

#[derive(Debug, Serialize)]
struct RoundResult {
    round: u32,
    push_id: u64,
    /// Targets the API answered (online users of the appcode).
    targets: u64,
    delivered: u64,
    complete: bool,
    overloaded_retries: u64,
    last_delivery_ms: f64,
    latency_ms: Latency,
    /// The server's `finished_ms − created_ms` of the push.
    server_fanout_ms: Option<u64>,
    server_written: Option<u64>,
    server_acked: Option<u64>,
    /// Server CPU from the call to the end of the pause.
    server_cpu_secs: f64,
    round_secs: f64,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
struct MinMedMax {
    min: f64,
    median: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
struct Targets {
    last_delivery_ms: f64,
    nats_last_delivery_ms: f64,
    mosquitto_last_delivery_ms: f64,
    /// Where the peers' figures come from: measured in this run, or DESIGN.md's.
    peers_reference: String,
}

#[derive(Debug, Serialize)]
struct Verdict {
    /// Every round's last delivery within the target.
    every_round_met: bool,
    /// The median round within the target.
    median_met: bool,
    /// Median last delivery ÷ the peers'.
    ratio_to_nats: f64,
    ratio_to_mosquitto: f64,
    everything_delivered: bool,
}

async fn measure(
    args: &BroadcastArgs,
    exe: &Path,
    bench: &s2c::Bench,
    deadline: Instant,
) -> anyhow::Result<Report> {
    println!(
        "longlink bench broadcast: {} {} broadcast(s) (`all: true`) to {} online users of appcode {}; clients {}",
        args.rounds,
        s2c::persistence(args.persist),
        thousands(u64::from(args.users)),
        args.appcode,
        args.options.client_ack_words()
    );
    println!("{}", s2c::describe_server(bench));
    let clients = Clients {
        users: args.users,
        appcode: args.appcode,
        uid_prefix: &args.uid_prefix,
        pushes: args.rounds as usize,
    };
    let online = s2c::go_online(bench, &args.options, exe, &clients, deadline).await?;
    let (mut fleet, tag, login, workers) = (online.fleet, online.tag, online.login, online.workers);
    let bar = progress_bar(
        u64::from(args.rounds) * u64::from(args.users),
        "deliveries, {msg}",
    );
    let mut runs = Vec::new();
    let mut failure = None;
    for r in 0..args.rounds {
        bar.set_message(format!("round {} of {}", r + 1, args.rounds));
        match round_run(args, bench, &mut fleet, tag, r, &bar).await {
            Ok(run) => runs.push(run),
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    bar.finish_and_clear();
    let report = fleet.finish().await;
    if let Some(err) = failure {
        return Err(err);
    }
    Ok(summarize(args, bench, login, workers, runs, report))
}

/// One broadcast: the call, the wait for every delivery, the pause, the readings.
async fn round_run(
    args: &BroadcastArgs,
    bench: &s2c::Bench,
    fleet: &mut fanout::Fleet,
    tag: u64,
    r: u32,
    bar: &ProgressBar,
) -> anyhow::Result<RoundRun> {
    fleet.workers.drain();
    let expected = args.users.saturating_sub(fleet.workers.dropped());
    let window = Window::open(
        bench.target.pid,
        Instant::now(),
        fleet.load_generator_cpu()?,
    )?;
    let t_call = fanout::unix_us();
    let content = fanout::content(tag, r, r, t_call);
    let body = PushBody {
        appcode: args.appcode,
        uids: None,
        all: Some(true),
        msgtype: args.msgtype,
        content: &content,
        persist: args.persist,
        from: "bench",
    };
    let round_timeout = Duration::from_secs(args.round_timeout_secs);
    let giving_up = Instant::now() + round_timeout;
    let mut overloaded_retries = 0;
    let (push_id, targets) = loop {
        match bench.api.push(&body).await? {
            PushAnswer::Accepted { push_id, targets } => break (push_id, targets),
            PushAnswer::Refused { status: 503, .. } if Instant::now() < giving_up => {
                overloaded_retries += 1;
                tokio::time::sleep(RETRY_AFTER).await;
            }
            PushAnswer::Refused { status, code } => {
                bail!("round {}: POST /v1/push refused: {status} {code}", r + 1)
            }
        }
    };
    let done_before = u64::from(r) * u64::from(args.users);
    let delivered = fleet.delivered.clone();
    let waiting = delivered.wait_for(r as usize, expected, giving_up);
    tokio::pin!(waiting);
    let complete = loop {
        tokio::select! {
            complete = &mut waiting => break complete,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                bar.set_position(done_before + u64::from(delivered.of(r as usize)));
            }
        }
    };
    bar.set_position(done_before + u64::from(delivered.of(r as usize)));
    tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
    let usage = window.close(bench.target.pid, fleet.load_generator_cpu()?)?;
    let stats = bench.api.push_stats(push_id).await.ok();
    if targets < u64::from(expected) {
        return Err(anyhow!(
            "round {}: the push had {targets} targets, fewer than the {expected} clients online",
            r + 1
        ));
    }
    Ok(RoundRun {
        push_id,
        targets,
        expected,
        complete,
        overloaded_retries,
        usage,
        stats,
    })
}

fn summarize(
    args: &BroadcastArgs,
    bench: &s2c::Bench,
    login: LoginFigures,
    workers: usize,
    runs: Vec<RoundRun>,
    fleet: fanout::FleetReport,
) -> Report {
    let mut notes = Vec::new();
    let mut all = SeriesAcc::empty();
    let mut usage = Usage::default();
    let mut rounds = Vec::new();
    let mut expected = 0u64;
    for (r, run) in runs.iter().enumerate() {
        let acc = fleet
            .series
            .get(&(r as u32))
            .cloned()
            .unwrap_or_else(SeriesAcc::empty);
        all.merge(&acc);
        usage.add(&run.usage);
        expected += u64::from(run.expected);
        rounds.push(RoundResult {
            round: r as u32 + 1,
            push_id: run.push_id,
            targets: run.targets,
            delivered: acc.hist.len(),
            complete: run.complete,
            overloaded_retries: run.overloaded_retries,
            last_delivery_ms: latency::ms(acc.max_us),
            latency_ms: latency::summary(&acc.hist),
            server_fanout_ms: run
                .stats
                .map(|s| s.finished_ms.saturating_sub(s.created_ms)),
            server_written: run.stats.map(|s| s.written),
            server_acked: run.stats.map(|s| s.acked),
            server_cpu_secs: round(run.usage.server_cpu.as_secs_f64(), 3),
            round_secs: round(run.usage.secs, 3),
        });
    }
    let lasts: Vec<f64> = rounds.iter().map(|r| r.last_delivery_ms).collect();
    let last = if lasts.is_empty() {
        MinMedMax::default()
    } else {
        MinMedMax {
            min: lasts.iter().copied().fold(f64::INFINITY, f64::min),
            median: latency::median(&lasts),
            max: lasts.iter().copied().fold(0.0, f64::max),
        }
    };
    let delivered = all.hist.len();
    let missing = expected.saturating_sub(delivered);
    if missing > 0 {
        notes.push(format!(
            "{missing} of {expected} deliveries did not arrive within --round-timeout-secs ({} s)",
            args.round_timeout_secs
        ));
    }
    notes.extend(fleet.dropped_note());
    notes.extend(fleet.silent_workers_note());
    notes.extend(bench.target.log_level_note());
    notes.push(format!(
        "the {} clients run in worker processes on the same {} cores as the server: the time a worker takes to read its share of a broadcast is part of the last-delivery time",
        thousands(u64::from(login.logged_in)),
        crate::procfs::cpus()
    ));
    let server_cpu = usage.server_cpu.as_secs_f64();
    let per_cpu = per(delivered, server_cpu);
    let distribution = latency::distribution(&all.hist);
    let mut distributions = vec![("all rounds".to_owned(), distribution.clone())];
    for (r, acc) in fleet.series.iter().take(PLOTTED_ROUNDS) {
        distributions.push((format!("round {}", r + 1), latency::distribution(&acc.hist)));
    }
    let by_round = |value: fn(&RoundResult) -> f64| -> Vec<(f64, f64)> {
        rounds
            .iter()
            .map(|r| (f64::from(r.round), value(r)))
            .collect()
    };
    let plot = plot::LatencyPlot {
        title: format!(
            "longlink broadcast to {} online users, {} {} rounds: last delivery min {:.1} / median {:.1} / max {:.1} ms",
            thousands(u64::from(login.logged_in)),
            runs.len(),
            s2c::persistence(args.persist),
            last.min,
            last.median,
            last.max
        ),
        distributions,
        over_time: vec![
            ("last delivery".to_owned(), by_round(|r| r.last_delivery_ms)),
            ("p99".to_owned(), by_round(|r| r.latency_ms.p99)),
            ("p50".to_owned(), by_round(|r| r.latency_ms.p50)),
        ],
        target_ms: Some(TARGET_LAST_MS),
        target_label: format!("target: last delivery ≤ {TARGET_LAST_MS} ms"),
        distribution_caption: "latency by percentile, from the API call to each client's receipt"
            .to_owned(),
        over_time_caption: "per round".to_owned(),
        over_time_x: "round".to_owned(),
    };
    let json = BroadcastJson {
        run: RunStamp::now("broadcast"),
        inputs: Inputs {
            users: args.users,
            rounds: args.rounds,
            persist: args.persist,
            pause_ms: args.pause_ms,
            round_timeout_secs: args.round_timeout_secs,
            appcode: args.appcode,
            msgtype: args.msgtype,
            client_ack: args.options.client_ack(),
            workers,
            per_worker: args.options.per_worker,
            uid_prefix: args.uid_prefix.clone(),
        },
        server: ServerInfo::of(bench),
        machine: Machine::now(Some(bench.loadavg.clone())),
        results: Results {
            login,
            last_delivery_ms: last,
            all_deliveries_ms: latency::summary(&all.hist),
            delivered,
            expected,
            missing,
            duplicates: fleet.totals.duplicates,
            foreign: fleet.totals.foreign,
            dropped: fleet.dropped,
            server_cpu_secs: round(server_cpu, 3),
            deliveries_per_server_cpu_sec: round(per_cpu, 0),
            server_cpu_us_per_delivery: round(server_cpu * 1e6 / delivered.max(1) as f64, 2),
            server_threads_cpu_secs: usage.threads_secs(),
            client_cpu_secs: round(usage.client_cpu.as_secs_f64(), 3),
            percentiles: latency::percentiles(&distribution),
            rounds,
        },
        targets: Targets {
            last_delivery_ms: TARGET_LAST_MS,
            nats_last_delivery_ms: NATS_LAST_MS,
            mosquitto_last_delivery_ms: MOSQUITTO_LAST_MS,
            peers_reference: PEER_REFERENCE.to_owned(),
        },
        verdict: Verdict {
            every_round_met: !lasts.is_empty() && last.max <= TARGET_LAST_MS,
            median_met: !lasts.is_empty() && last.median <= TARGET_LAST_MS,
            ratio_to_nats: round(last.median / NATS_LAST_MS, 3),
            ratio_to_mosquitto: round(last.median / MOSQUITTO_LAST_MS, 3),
            everything_delivered: missing == 0,
        },
        notes,
        peers: None,
    };
    Report { json, plot }
}

impl s2c::Figures for BroadcastJson {
    fn print(&self) {
        let j = self;
        let r = &j.results;
        for round in &r.rounds {
            println!(
                "round {:<6} {} of {} delivered: last {:.1} ms, p50 {:.1}, p99 {:.1} ms; server fan-out {} ms, {:.3} s CPU{}",
                round.round,
                thousands(round.delivered),
                thousands(round.targets),
                round.last_delivery_ms,
                round.latency_ms.p50,
                round.latency_ms.p99,
                round
                    .server_fanout_ms
                    .map_or_else(|| "?".to_owned(), |ms| ms.to_string()),
                round.server_cpu_secs,
                if round.overloaded_retries > 0 {
                    format!(" ({} overloaded retries)", round.overloaded_retries)
                } else {
                    String::new()
                }
            );
        }
        println!(
            "last delivery min {:.1}  median {:.1}  max {:.1} ms over {} rounds",
            r.last_delivery_ms.min,
            r.last_delivery_ms.median,
            r.last_delivery_ms.max,
            r.rounds.len()
        );
        println!(
            "all          {}  ({} deliveries, {} missing, {} duplicates)",
            r.all_deliveries_ms.percentiles_text(),
            thousands(r.delivered),
            thousands(r.missing),
            thousands(r.duplicates)
        );
        println!(
            "server CPU   {:.2} s over the rounds: {:.2} µs per delivery, {} deliveries per server CPU-second; client CPU {:.2} s",
            r.server_cpu_secs,
            r.server_cpu_us_per_delivery,
            thousands(r.deliveries_per_server_cpu_sec as u64),
            r.client_cpu_secs
        );
        println!(
            "target       last delivery ≤ {} ms: median {}, every round {}; median ÷ nats ({} ms) {:.2}, ÷ mosquitto ({} ms) {:.2} — {}",
            j.targets.last_delivery_ms,
            verdict(j.verdict.median_met),
            verdict(j.verdict.every_round_met),
            j.targets.nats_last_delivery_ms,
            j.verdict.ratio_to_nats,
            j.targets.mosquitto_last_delivery_ms,
            j.verdict.ratio_to_mosquitto,
            j.targets.peers_reference
        );
        for note in &j.notes {
            println!("note: {note}");
        }
        if let Some((section, longlink)) = &j.peers {
            peers::broadcast::print(section, longlink);
        }
    }
}
