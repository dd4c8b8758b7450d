//! Scenario `push`: s2c pushes to lists of online users through `POST /v1/push`; deliveries
//! per server CPU-second (DESIGN.md: ≥ 150k; nats and mosquitto do ~50k) and the latency from
//! the API call to each client's receipt.
//!
//! 1. The server under test: by default the bench starts its own (`<exe> serve`, default
//!    config on free loopback ports, a temporary data dir), or it measures a running one
//!    (`--server ADDR --server-pid PID --api ADDR`).
//! 2. N clients (appcode `--appcode`, uids with a per-run tag) log in over worker processes
//!    ([`crate::fanout`]); the API must count all N online before anything is pushed.
//! 3. P pushes, each to B distinct online users (push k goes to users k·B … k·B + B − 1,
//!    modulo N, so every user gets about P·B / N), online-only by default or persisted with
//!    `--persist`. Closed loop: `--in-flight W` pushes are in progress at once; a push is in
//!    progress from its API call until all B deliveries reached the clients (or
//!    `--push-timeout-secs` passed), then the next one starts. A 503 (`overloaded`) is retried
//!    after 5 ms and counted; the latency still runs from the first attempt.
//! 4. Each delivery's latency: the client's receipt − the API call (wall clock, see
//!    [`crate::fanout`]), in HDR histograms per time bucket of pushes.
//! 5. The server's CPU time (`/proc/<pid>/stat`) over the push phase gives deliveries per
//!    server CPU-second; the clients' MSG_ACKs (sent as the SDK does) are part of that work.
//!    After the phase, `GET /v1/push/{id}` of every push is summed: the server's own count of
//!    online, written and acked recipients.

use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::api::{Api, PushAnswer, PushBody, PushStats};
use crate::fanout::{self, Delivered, SeriesAcc};
use crate::latency::{self, Latency};
use crate::num::round;
use crate::peers;
use crate::plot;
use crate::procfs::{Usage, Window};
use crate::report::{Machine, RunStamp, by_thread, per, progress_bar, thousands, verdict};
use crate::s2c::{self, Clients, LoginFigures, S2cOptions, ServerInfo};

/// DESIGN.md target: s2c deliveries per server CPU-second.
const TARGET_PER_CPU_SEC: f64 = 150_000.0;
/// DESIGN.md's figure for the peers (nats, mosquitto): about 50k deliveries per CPU-second;
/// only the fallback reference when no peer ran in the same run (`--peers none`).
const PEER_PER_CPU_SEC: f64 = 50_000.0;
const PEER_REFERENCE: &str = "DESIGN.md (measured by others earlier; no peer ran in this run)";
/// Most uids in one push (docs/api.md).
const MAX_BATCH: u32 = 100_000;
/// Most deliveries one run may schedule.
const MAX_DELIVERIES: u64 = 100_000_000;
/// Time buckets of pushes, each with its own histogram (the latency over the run).
const BUCKETS: u32 = 50;
/// Wait before retrying a push the server refused as overloaded.
const RETRY_AFTER: Duration = Duration::from_millis(5);
/// How long the server's push statistics may take to read after the run.
const STATS_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause before reading the statistics, so the last MSG_ACKs are counted.
const STATS_SETTLE: Duration = Duration::from_millis(300);

/// `longlink bench push`: pushes to lists of online users; deliveries per server CPU-second.
#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    /// Logged-in clients (one user each).
    #[arg(long, default_value_t = 5000)]
    pub users: u32,
    /// Pushes to send.
    #[arg(long, default_value_t = 1000)]
    pub pushes: u32,
    /// uids per push (distinct, at most --users).
    #[arg(long, default_value_t = 100)]
    pub batch: u32,
    /// Persisted pushes (stored for every target, like the API's default); without it
    /// online-only pushes (`persist: false`).
    #[arg(long)]
    pub persist: bool,
    /// Pushes in progress at once (closed loop: the next starts when one is fully delivered).
    #[arg(long, default_value_t = 16)]
    pub in_flight: u32,
    /// A push not fully delivered within this many seconds is given up on (counted missing).
    #[arg(long, default_value_t = 10)]
    pub push_timeout_secs: u64,
    /// The clients' appcode.
    #[arg(long, default_value_t = 129)]
    pub appcode: u32,
    /// msgtype of the pushes.
    #[arg(long, default_value_t = 1)]
    pub msgtype: u32,
    /// uids are this prefix, a per-run tag, then a number.
    #[arg(long, default_value = "bench-push-")]
    pub uid_prefix: String,
    /// The whole run is abandoned after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub deadline_secs: u64,
    /// Clients, server and output: the options every s2c scenario takes.
    #[command(flatten)]
    pub options: S2cOptions,
}

/// Runs the scenario: prints the figures, writes `--json` and `--plot`.
///
/// # Errors
/// Bad arguments, a server that does not start or answer, failed logins, refused pushes,
/// the deadline.
pub async fn run(args: PushArgs) -> anyhow::Result<()> {
    if args.users == 0 || args.pushes == 0 || args.batch == 0 || args.in_flight == 0 {
        bail!("--users, --pushes, --batch and --in-flight must be at least 1");
    }
    if args.batch > args.users.min(MAX_BATCH) {
        bail!(
            "--batch {} must be at most --users ({}) and {MAX_BATCH}: a push goes to distinct online users",
            args.batch,
            args.users
        );
    }
    let deliveries = u64::from(args.pushes) * u64::from(args.batch);
    if deliveries > MAX_DELIVERIES {
        bail!("--pushes × --batch = {deliveries}, more than {MAX_DELIVERIES} per run");
    }
    s2c::run(
        &args.options,
        args.appcode,
        args.deadline_secs,
        async |exe, bench, deadline| measure(&args, exe, bench, deadline).await,
        async |chosen, exe, json: &mut PushJson| run_peers(&args, chosen, exe, json).await,
    )
    .await
}

/// The same pushes against the peers (`--peers`); their measured figure replaces DESIGN.md's
/// in the verdict.
async fn run_peers(
    args: &PushArgs,
    chosen: &crate::peers::Chosen,
    exe: &Path,
    json: &mut PushJson,
) -> anyhow::Result<()> {
    let r = &json.results;
    let longlink = peers::push::Longlink {
        deliveries_per_cpu_sec: r.deliveries_per_server_cpu_sec,
        e2e_p50_ms: r.e2e_latency_ms.p50,
        e2e_p99_ms: r.e2e_latency_ms.p99,
    };
    let params = peers::push::Params {
        users: args.users,
        pushes: args.pushes,
        batch: args.batch,
        in_flight: args.in_flight,
        push_timeout_secs: args.push_timeout_secs,
        per_worker: args.options.per_worker,
        concurrency: args.options.login_concurrency,
        login_timeout_secs: args.options.login_timeout_secs,
        deadline_secs: args.deadline_secs,
    };
    let section = peers::push::run(chosen, &params, &longlink, exe).await?;
    // The best peer is the one to beat.
    if let Some(best) = section
        .runs
        .iter()
        .max_by(|a, b| {
            a.deliveries_per_broker_cpu_sec
                .total_cmp(&b.deliveries_per_broker_cpu_sec)
        })
        .filter(|best| best.deliveries_per_broker_cpu_sec > 0.0)
    {
        let per_cpu = longlink.deliveries_per_cpu_sec;
        json.targets.peers_deliveries_per_cpu_sec = best.deliveries_per_broker_cpu_sec;
        json.targets.peers_reference =
            format!("measured in this run: {} (the best peer)", best.peer);
        json.verdict.ratio_to_peers = round(per_cpu / best.deliveries_per_broker_cpu_sec, 2);
    }
    json.peers = Some((section, longlink));
    Ok(())
}

/// Per push, shared by the pushing tasks.
struct Pushes {
    /// Wall-clock µs of the first API call (0: not sent).
    t_call_us: Vec<AtomicU64>,
    /// Targets the API answered (u32::MAX: refused).
    targets: Vec<AtomicU32>,
    push_ids: Vec<AtomicU64>,
    next: AtomicUsize,
    accepted: AtomicU64,
    complete: AtomicU64,
    incomplete: AtomicU64,
    refused: AtomicU64,
    overloaded_retries: AtomicU64,
    refusals: Mutex<std::collections::BTreeMap<String, u64>>,
    /// The HTTP round trip of each accepted `POST /v1/push`, µs.
    api_rtt: Mutex<Histogram<u64>>,
}

impl Pushes {
    fn new(count: usize) -> Pushes {
        Pushes {
            t_call_us: (0..count).map(|_| AtomicU64::new(0)).collect(),
            targets: (0..count).map(|_| AtomicU32::new(0)).collect(),
            push_ids: (0..count).map(|_| AtomicU64::new(0)).collect(),
            next: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            complete: AtomicU64::new(0),
            incomplete: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            overloaded_retries: AtomicU64::new(0),
            refusals: Mutex::new(Default::default()),
            api_rtt: Mutex::new(fanout::histogram()),
        }
    }
}

/// What one pushing task needs.
struct Pusher {
    api: Api,
    pushes: Arc<Pushes>,
    delivered: Arc<Delivered>,
    uids: Arc<Vec<String>>,
    tag: u64,
    count: usize,
    batch: usize,
    appcode: u32,
    msgtype: u32,
    persist: bool,
    push_timeout: Duration,
}

impl Pusher {
    /// Takes the next push, sends it, waits for its deliveries; until none is left.
    async fn run(self) -> anyhow::Result<()> {
        let users = self.uids.len();
        loop {
            let k = self.pushes.next.fetch_add(1, Ordering::Relaxed);
            if k >= self.count {
                return Ok(());
            }
            let targets: Vec<String> = (0..self.batch)
                .map(|j| self.uids[(k * self.batch + j) % users].clone())
                .collect();
            let series = (k as u64 * u64::from(BUCKETS) / self.count as u64) as u32;
            let t_call = fanout::unix_us();
            self.pushes.t_call_us[k].store(t_call, Ordering::Relaxed);
            let content = fanout::content(self.tag, series, k as u32, t_call);
            let body = PushBody {
                appcode: self.appcode,
                uids: Some(&targets),
                all: None,
                msgtype: self.msgtype,
                content: &content,
                persist: self.persist,
                from: "bench",
            };
            let started = Instant::now();
            let giving_up = started + self.push_timeout;
            let accepted = loop {
                let call = Instant::now();
                match self.api.push(&body).await? {
                    PushAnswer::Accepted { push_id, targets } => {
                        let rtt = call.elapsed().as_micros() as u64;
                        if let Ok(mut h) = self.pushes.api_rtt.lock() {
                            h.saturating_record(rtt.max(1));
                        }
                        break Some((push_id, targets));
                    }
                    PushAnswer::Refused { status: 503, .. } if Instant::now() < giving_up => {
                        self.pushes
                            .overloaded_retries
                            .fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(RETRY_AFTER).await;
                    }
                    PushAnswer::Refused { status, code } => {
                        if let Ok(mut refusals) = self.pushes.refusals.lock() {
                            *refusals.entry(format!("{status} {code}")).or_default() += 1;
                        }
                        break None;
                    }
                }
            };
            let Some((push_id, targets)) = accepted else {
                self.pushes.refused.fetch_add(1, Ordering::Relaxed);
                self.pushes.targets[k].store(u32::MAX, Ordering::Relaxed);
                continue;
            };
            let targets = u32::try_from(targets).unwrap_or(u32::MAX);
            self.pushes.push_ids[k].store(push_id, Ordering::Relaxed);
            self.pushes.targets[k].store(targets, Ordering::Relaxed);
            self.pushes.accepted.fetch_add(1, Ordering::Relaxed);
            if self
                .delivered
                .wait_for(k, targets, Instant::now() + self.push_timeout)
                .await
            {
                self.pushes.complete.fetch_add(1, Ordering::Relaxed);
            } else {
                self.pushes.incomplete.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The figures of one run.
type Report = s2c::Report<PushJson>;

#[derive(Debug, Serialize)]
struct PushJson {
    #[serde(flatten)]
    run: RunStamp,
    inputs: Inputs,
    server: ServerInfo,
    machine: Machine,
    results: Results,
    targets: Targets,
    verdict: Verdict,
    notes: Vec<String>,
    /// The same pushes against the peers, in the same run (`--peers`), with longlink's
    /// figures they are compared with.
    #[serde(serialize_with = "peers_only")]
    peers: Option<(peers::Section<peers::push::Run>, peers::push::Longlink)>,
}

fn peers_only<S: serde::Serializer>(
    peers: &Option<(peers::Section<peers::push::Run>, peers::push::Longlink)>,
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
    pushes: u32,
    batch: u32,
    persist: bool,
    in_flight: u32,
    push_timeout_secs: u64,
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
    /// Pushes the API accepted (202).
    pushes_accepted: u64,
    /// Pushes refused for good (after retries).
    pushes_refused: u64,
    refusals: std::collections::BTreeMap<String, u64>,
    /// 503 answers retried.
    overloaded_retries: u64,
    /// Accepted pushes whose every target received it in time.
    pushes_complete: u64,
    pushes_incomplete: u64,
    /// Targets of the accepted pushes (the API's count).
    targets: u64,
    /// Pushes received by the clients (first copies).
    delivered: u64,
    /// Targets that did not receive their push by the end.
    missing: u64,
    duplicates: u64,
    /// MSG pushes that were not this run's.
    foreign: u64,
    /// Connections the server closed during the run.
    dropped: u32,
    client_ack_frames: u64,
    /// First API call → last delivery.
    wall_secs: f64,
    deliveries_per_sec: f64,
    /// The push phase (first call → every push complete or given up), which the CPU covers.
    measured_secs: f64,
    server_cpu_secs: f64,
    /// … as a share of one core (2.0 = both cores of this machine, all the time).
    server_cpu_share: f64,
    deliveries_per_server_cpu_sec: f64,
    server_cpu_us_per_delivery: f64,
    server_threads_cpu_secs: std::collections::BTreeMap<String, f64>,
    /// Workers and the bench process itself, over the same window.
    client_cpu_secs: f64,
    /// API call → client receipt.
    e2e_latency_ms: Latency,
    /// The `POST /v1/push` round trip (202 answered).
    api_call_ms: Latency,
    /// (percentile, ms) of the end-to-end latency.
    percentiles: Vec<(f64, f64)>,
    /// Latency by push time.
    over_time: Vec<TimePoint>,
    /// `GET /v1/push/{id}` of every accepted push, summed, read after the phase.
    server_counters: PushStats,
    server_counters_read: u64,
}

#[derive(Debug, Serialize)]
struct TimePoint {
    t_secs: f64,
    deliveries: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Serialize)]
struct Targets {
    deliveries_per_server_cpu_sec: f64,
    /// The peers' deliveries per CPU-second the verdict compares with …
    peers_deliveries_per_cpu_sec: f64,
    /// … and where it comes from: measured in this run, or DESIGN.md's figure when no peer ran.
    peers_reference: String,
}

#[derive(Debug, Serialize)]
struct Verdict {
    per_cpu_sec_met: bool,
    /// deliveries per server CPU-second ÷ the target.
    ratio_to_target: f64,
    /// … ÷ the peers' figure.
    ratio_to_peers: f64,
    everything_delivered: bool,
}

async fn measure(
    args: &PushArgs,
    exe: &Path,
    bench: &s2c::Bench,
    deadline: Instant,
) -> anyhow::Result<Report> {
    let mut notes = Vec::new();
    println!(
        "longlink bench push: {} {} pushes of {} uids to {} online users (appcode {}), {} in flight; clients {}",
        thousands(u64::from(args.pushes)),
        s2c::persistence(args.persist),
        args.batch,
        thousands(u64::from(args.users)),
        args.appcode,
        args.in_flight,
        args.options.client_ack_words()
    );
    println!("{}", s2c::describe_server(bench));
    let clients = Clients {
        users: args.users,
        appcode: args.appcode,
        uid_prefix: &args.uid_prefix,
        pushes: args.pushes as usize,
    };
    let online = s2c::go_online(bench, &args.options, exe, &clients, deadline).await?;
    let (fleet, tag, prefix) = (online.fleet, online.tag, online.prefix);
    let pushes = Arc::new(Pushes::new(args.pushes as usize));
    let uids: Arc<Vec<String>> =
        Arc::new((0..args.users).map(|i| format!("{prefix}{i}")).collect());

    let window = Window::open(
        bench.target.pid,
        Instant::now(),
        fleet.load_generator_cpu()?,
    )?;
    let mut tasks = JoinSet::new();
    for _ in 0..args.in_flight.min(args.pushes) {
        tasks.spawn(
            Pusher {
                api: bench.api.clone(),
                pushes: pushes.clone(),
                delivered: fleet.delivered.clone(),
                uids: uids.clone(),
                tag,
                count: args.pushes as usize,
                batch: args.batch as usize,
                appcode: args.appcode,
                msgtype: args.msgtype,
                persist: args.persist,
                push_timeout: Duration::from_secs(args.push_timeout_secs),
            }
            .run(),
        );
    }
    let bar = progress_bar(u64::from(args.pushes), "pushes done, {msg}");
    let mut failure = None;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(err))) => { failure.get_or_insert(err); }
                Some(Err(err)) => { failure.get_or_insert(anyhow!("push task failed: {err}")); }
            },
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        bar.set_position(
            pushes.complete.load(Ordering::Relaxed)
                + pushes.incomplete.load(Ordering::Relaxed)
                + pushes.refused.load(Ordering::Relaxed),
        );
        bar.set_message(format!("{} deliveries", thousands(fleet.delivered.total())));
    }
    bar.finish_and_clear();
    let usage = window.close(bench.target.pid, fleet.load_generator_cpu()?)?;
    if let Some(err) = failure {
        fleet.finish().await;
        return Err(err.context("a push call failed"));
    }

    // The server's own counts, after a moment for the last MSG_ACKs.
    tokio::time::sleep(STATS_SETTLE).await;
    let (server_counters, server_counters_read) = read_stats(
        &bench.api,
        &pushes,
        deadline.min(Instant::now() + STATS_TIMEOUT),
    )
    .await;
    let fleet_report = fleet.finish().await;
    notes.extend(fleet_report.silent_workers_note());
    Ok(summarize(
        args,
        bench,
        Collected {
            pushes: &pushes,
            fleet: fleet_report,
            usage,
            login: online.login,
            workers: online.workers,
            server_counters,
            server_counters_read,
        },
        notes,
    ))
}

/// `GET /v1/push/{id}` of every accepted push (16 at a time), summed.
async fn read_stats(api: &Api, pushes: &Pushes, until: Instant) -> (PushStats, u64) {
    let ids: Vec<u64> = pushes
        .push_ids
        .iter()
        .map(|id| id.load(Ordering::Relaxed))
        .filter(|id| *id != 0)
        .collect();
    let mut sum = PushStats::default();
    let mut read = 0;
    for chunk in ids.chunks(16) {
        if Instant::now() >= until {
            break;
        }
        let mut calls = JoinSet::new();
        for &id in chunk {
            let api = api.clone();
            calls.spawn(async move { api.push_stats(id).await });
        }
        while let Some(joined) = calls.join_next().await {
            if let Ok(Ok(stats)) = joined {
                sum.add(&stats);
                read += 1;
            }
        }
    }
    (sum, read)
}

/// Everything a run collected, for [`summarize`].
struct Collected<'a> {
    pushes: &'a Pushes,
    fleet: fanout::FleetReport,
    usage: Usage,
    login: LoginFigures,
    workers: usize,
    server_counters: PushStats,
    server_counters_read: u64,
}

fn summarize(
    args: &PushArgs,
    bench: &s2c::Bench,
    c: Collected<'_>,
    mut notes: Vec<String>,
) -> Report {
    let pushes = c.pushes;
    let mut all = SeriesAcc::empty();
    for acc in c.fleet.series.values() {
        all.merge(acc);
    }
    let targets: u64 = pushes
        .targets
        .iter()
        .map(|t| t.load(Ordering::Relaxed))
        .filter(|t| *t != u32::MAX)
        .map(u64::from)
        .sum();
    let delivered = c.fleet.totals.delivered;
    let first_call = pushes
        .t_call_us
        .iter()
        .map(|t| t.load(Ordering::Relaxed))
        .filter(|t| *t != 0)
        .min()
        .unwrap_or(0);
    let wall_secs = all.last_unix_us.saturating_sub(first_call) as f64 / 1e6;
    let server_cpu = c.usage.server_cpu.as_secs_f64();
    let per_cpu = per(delivered, server_cpu);
    let e2e = latency::summary(&all.hist);
    let api_call = pushes
        .api_rtt
        .lock()
        .map(|h| latency::summary(&h))
        .unwrap_or_default();
    // Bucket b holds pushes b·P/BUCKETS …: its time is its first push's call.
    let bucket_start = |b: u32| -> f64 {
        let k = (u64::from(b) * u64::from(args.pushes)).div_ceil(u64::from(BUCKETS)) as usize;
        pushes
            .t_call_us
            .get(k)
            .map(|t| t.load(Ordering::Relaxed))
            .filter(|t| *t != 0)
            .map_or(0.0, |t| t.saturating_sub(first_call) as f64 / 1e6)
    };
    let over_time: Vec<TimePoint> = c
        .fleet
        .series
        .iter()
        .map(|(b, acc)| TimePoint {
            t_secs: round(bucket_start(*b), 3),
            deliveries: acc.hist.len(),
            p50_ms: latency::ms(acc.hist.value_at_quantile(0.5)),
            p99_ms: latency::ms(acc.hist.value_at_quantile(0.99)),
            max_ms: latency::ms(acc.max_us),
        })
        .collect();
    let refused = pushes.refused.load(Ordering::Relaxed);
    let missing = targets.saturating_sub(delivered);
    if missing > 0 {
        notes.push(format!(
            "{missing} of {targets} targets did not receive their push within --push-timeout-secs ({} s) while online",
            args.push_timeout_secs
        ));
    }
    notes.extend(c.fleet.dropped_note());
    if c.usage.client_cpu.as_secs_f64() > 0.3 * c.usage.secs {
        notes.push(format!(
            "the load generator (workers and bench) used {:.2} s of CPU in {:.1} s on a {}-core machine it shares with the server: its scheduling delays are part of the latencies",
            c.usage.client_cpu.as_secs_f64(),
            c.usage.secs,
            crate::procfs::cpus()
        ));
    }
    notes.extend(bench.target.log_level_note());
    let distribution = latency::distribution(&all.hist);
    let plot = plot::LatencyPlot {
        title: format!(
            "longlink push: {} {} pushes × {} uids to {} online users, {} in flight ({} deliveries per server CPU-s)",
            thousands(u64::from(args.pushes)),
            s2c::persistence(args.persist),
            args.batch,
            thousands(u64::from(args.users)),
            args.in_flight,
            thousands(per_cpu as u64)
        ),
        distributions: vec![("API call → client receipt".to_owned(), distribution.clone())],
        over_time: vec![
            (
                "max".to_owned(),
                over_time.iter().map(|p| (p.t_secs, p.max_ms)).collect(),
            ),
            (
                "p99".to_owned(),
                over_time.iter().map(|p| (p.t_secs, p.p99_ms)).collect(),
            ),
            (
                "p50".to_owned(),
                over_time.iter().map(|p| (p.t_secs, p.p50_ms)).collect(),
            ),
        ],
        target_ms: None,
        target_label: String::new(),
        distribution_caption: "latency by percentile, from the API call to each client's receipt"
            .to_owned(),
        over_time_caption: "latency by the time of the push".to_owned(),
        over_time_x: "seconds after the first API call".to_owned(),
    };
    let json = PushJson {
        run: RunStamp::now("push"),
        inputs: Inputs {
            users: args.users,
            pushes: args.pushes,
            batch: args.batch,
            persist: args.persist,
            in_flight: args.in_flight,
            push_timeout_secs: args.push_timeout_secs,
            appcode: args.appcode,
            msgtype: args.msgtype,
            client_ack: args.options.client_ack(),
            workers: c.workers,
            per_worker: args.options.per_worker,
            uid_prefix: args.uid_prefix.clone(),
        },
        server: ServerInfo::of(bench),
        machine: Machine::now(Some(bench.loadavg.clone())),
        results: Results {
            login: c.login,
            pushes_accepted: pushes.accepted.load(Ordering::Relaxed),
            pushes_refused: refused,
            refusals: pushes
                .refusals
                .lock()
                .map(|r| r.clone())
                .unwrap_or_default(),
            overloaded_retries: pushes.overloaded_retries.load(Ordering::Relaxed),
            pushes_complete: pushes.complete.load(Ordering::Relaxed),
            pushes_incomplete: pushes.incomplete.load(Ordering::Relaxed),
            targets,
            delivered,
            missing,
            duplicates: c.fleet.totals.duplicates,
            foreign: c.fleet.totals.foreign,
            dropped: c.fleet.dropped,
            client_ack_frames: c.fleet.totals.ack_frames,
            wall_secs: round(wall_secs, 3),
            deliveries_per_sec: round(per(delivered, wall_secs), 0),
            measured_secs: round(c.usage.secs, 3),
            server_cpu_secs: round(server_cpu, 3),
            server_cpu_share: round(server_cpu / c.usage.secs.max(1e-9), 3),
            deliveries_per_server_cpu_sec: round(per_cpu, 0),
            server_cpu_us_per_delivery: round(server_cpu * 1e6 / delivered.max(1) as f64, 2),
            server_threads_cpu_secs: c.usage.threads_secs(),
            client_cpu_secs: round(c.usage.client_cpu.as_secs_f64(), 3),
            e2e_latency_ms: e2e,
            api_call_ms: api_call,
            percentiles: latency::percentiles(&distribution),
            over_time,
            server_counters: c.server_counters,
            server_counters_read: c.server_counters_read,
        },
        targets: Targets {
            deliveries_per_server_cpu_sec: TARGET_PER_CPU_SEC,
            peers_deliveries_per_cpu_sec: PEER_PER_CPU_SEC,
            peers_reference: PEER_REFERENCE.to_owned(),
        },
        verdict: Verdict {
            per_cpu_sec_met: per_cpu >= TARGET_PER_CPU_SEC,
            ratio_to_target: round(per_cpu / TARGET_PER_CPU_SEC, 2),
            ratio_to_peers: round(per_cpu / PEER_PER_CPU_SEC, 2),
            everything_delivered: missing == 0 && refused == 0,
        },
        notes,
        peers: None,
    };
    Report { json, plot }
}

impl s2c::Figures for PushJson {
    fn print(&self) {
        let j = self;
        let r = &j.results;
        println!(
            "pushes       {} accepted ({} refused, {} overloaded retries), {} complete, {} incomplete",
            thousands(r.pushes_accepted),
            thousands(r.pushes_refused),
            thousands(r.overloaded_retries),
            thousands(r.pushes_complete),
            thousands(r.pushes_incomplete)
        );
        for (what, count) in &r.refusals {
            println!("  refused: {what} × {count}");
        }
        println!(
            "delivered    {} of {} targets in {:.2} s ({} deliveries/s); {} missing, {} duplicates",
            thousands(r.delivered),
            thousands(r.targets),
            r.wall_secs,
            thousands(r.deliveries_per_sec as u64),
            thousands(r.missing),
            thousands(r.duplicates)
        );
        r.e2e_latency_ms.print_line("end to end");
        r.api_call_ms.print_line("API call");
        println!(
            "server CPU   {:.2} s in {:.2} s ({:.0}% of one core): {:.2} µs per delivery, {} deliveries per server CPU-second",
            r.server_cpu_secs,
            r.measured_secs,
            r.server_cpu_share * 100.0,
            r.server_cpu_us_per_delivery,
            thousands(r.deliveries_per_server_cpu_sec as u64)
        );
        if !r.server_threads_cpu_secs.is_empty() {
            println!(
                "             by thread: {}",
                by_thread(&r.server_threads_cpu_secs)
            );
        }
        println!(
            "client CPU   {:.2} s (workers and bench, on the same cores)",
            r.client_cpu_secs
        );
        let s = &r.server_counters;
        println!(
            "server says  {} pushes read: {} targets, {} online, {} written, {} acked, {} stored offline, {} expired, {} failed",
            thousands(r.server_counters_read),
            thousands(s.targets),
            thousands(s.online),
            thousands(s.written),
            thousands(s.acked),
            thousands(s.stored_offline),
            thousands(s.expired),
            thousands(s.failed)
        );
        println!(
            "target       ≥ {} deliveries per server CPU-second: {} ({:.2}× the target, {:.2}× the peers' {} — {})",
            thousands(j.targets.deliveries_per_server_cpu_sec as u64),
            verdict(j.verdict.per_cpu_sec_met),
            j.verdict.ratio_to_target,
            j.verdict.ratio_to_peers,
            thousands(j.targets.peers_deliveries_per_cpu_sec as u64),
            j.targets.peers_reference
        );
        for note in &j.notes {
            println!("note: {note}");
        }
        if let Some((section, longlink)) = &j.peers {
            peers::push::print(section, longlink);
        }
    }
}
