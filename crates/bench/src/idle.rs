//! Scenario `idle`: N idle logged-in connections and the server's RSS per connection.
//!
//! 1. The server under test: by default the bench starts its own (`<exe> serve`, default
//!    config on free loopback ports, a temporary data dir), or it measures a running one
//!    (`--server ADDR --server-pid PID`).
//! 2. Warm-up: a few connections log in and out, then the server's RSS is sampled every
//!    500 ms until two samples differ by less than 1% (the baseline).
//! 3. Login phase: worker processes (`<exe> bench idle-worker`, at most `--per-worker`
//!    connections each, since a process may open only 20,000 files here) connect and LOGIN
//!    with bounded concurrency; each reports its progress on stdout. The server's CPU time
//!    (`/proc/<pid>/stat`) and the wall time of this phase give CPU per login and logins/s.
//! 4. With every connection logged in and idle, the RSS settles again; (after − baseline) / N
//!    is the figure. With `--hold-secs` the connections stay (sending KEEPALIVE at the
//!    interval the server asks for) and the RSS is read once more.
//! 5. Workers are told to stop by closing their stdin (they also stop at their own
//!    deadline); a spawned server gets SIGTERM.
//!
//! Sweep (`--connections 1000,5000,10000`): the steps above once per N, each against a freshly
//! spawned server (a server that held 10,000 sessions keeps allocator pages and table capacity,
//! so the next N's baseline would not be its own), and the peers at every N too (the plot's
//! peer lines need more than one point). At the end a table of every N, the JSON's `sweep`
//! array (each point's whole report), and a plot of RSS per connection against N with the
//! DESIGN.md target. An external `--server` cannot be restarted between points: refused.
//!
//! Worker protocol ([`crate::workers`]; one line each on the worker's stdout):
//! `progress <ok> <failed>`, `ready <ok> <failed> <µs>` (every login attempted, the last one
//! done this long after the worker began: the login wall time is the longest of these),
//! `failure <message>` (the first few distinct ones), `dropped <n>` (held connections the
//! server closed), `done <ok> <failed> <dropped>`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use serde::Serialize;
use tokio::time::Instant;

use crate::client::{self, Minter};
use crate::link::Transport;
use crate::num::round;
use crate::peers::{self, Chosen, PeersOption};
use crate::plot;
use crate::procfs::{self, SETTLE_INTERVAL, SETTLE_MAX, settle};
use crate::report::{Machine, RunStamp, mib, per, thousands, verdict};
use crate::server::{ServerIdentity, ServerTarget, Target, dev_secret, transport_overrides};
use crate::workers::{
    self, LoginWorker, REPORT_INTERVAL, SECRET_ENV, WorkerArgs, WorkerSpec, Workers,
};

/// DESIGN.md target: user-space memory per logged-in idle connection.
const TARGET_RSS_PER_CONNECTION: u64 = 2048;
/// DESIGN.md target: server CPU per login.
const TARGET_CPU_US_PER_LOGIN: f64 = 50.0;
/// Between sweep points: TIME_WAIT sockets left that do not matter (see [`drain_time_wait`]).
const TIME_WAIT_LEFT: u64 = 2_000;
/// Between sweep points: the longest wait for TIME_WAIT to drain (its timeout is 60 s).
const TIME_WAIT_MAX: Duration = Duration::from_secs(75);

/// `longlink bench idle`: N idle logged-in connections; the server's RSS per connection.
#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Logged-in idle connections to open (one server process holds at most ~19,900 here:
    /// 20,000 open files per process). A comma-separated list (`1000,5000,10000`) is a sweep:
    /// one run per N, one after another, each against a freshly spawned server and with the
    /// peers (--peers) measured at every N; then a summary table, a `sweep` array in --json and
    /// a plot of RSS per connection against N (--plot). Not with --server.
    #[arg(
        long,
        value_name = "N[,N…]",
        value_delimiter = ',',
        default_value = "1000"
    )]
    pub connections: Vec<u32>,
    /// How the connections reach the gate: plain TCP, or WebSocket (a spawned server then
    /// listens for WebSocket on a free port; with --server, that address is the WebSocket
    /// listener).
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub transport: Transport,
    /// The server measured: one started by the bench, or --server/--server-pid/--api.
    #[command(flatten)]
    pub target: ServerTarget,
    /// HS256 secret of --appcode on the server at --server (default: the default config's
    /// secret of appcode 129). A spawned server's secret is read from its config.
    #[arg(long, env = SECRET_ENV, hide_env_values = true)]
    pub token_secret: Option<String>,
    /// The appcode the connections log in with.
    #[arg(long, default_value_t = 129)]
    pub appcode: u32,
    /// uids are this prefix followed by 0, 1, 2, …
    #[arg(long, default_value = "bench-idle-")]
    pub uid_prefix: String,
    /// Logins in flight at once, over all workers. Above the gate's listen backlog (`[gate]
    /// listen_backlog`, 4096, capped by net.core.somaxconn) the kernel drops connection attempts
    /// and clients retry after 1 s, which lowers logins/s (reported as listen-queue overflows).
    #[arg(long, default_value_t = 100)]
    pub concurrency: u32,
    /// Most connections per worker process (each may open 20,000 files).
    #[arg(long, default_value_t = 15_000)]
    pub per_worker: u32,
    /// Keep the connections this long after the measurement, then read the RSS again
    /// (KEEPALIVE is sent at the interval the server asks for, so the idle timeout never fires).
    #[arg(long, default_value_t = 0)]
    pub hold_secs: u64,
    /// Connections that log in and out before the baseline is taken.
    #[arg(long, default_value_t = 32)]
    pub warmup: u32,
    /// Timeout of each connect + LOGIN, in seconds.
    #[arg(long, default_value_t = 10)]
    pub login_timeout_secs: u64,
    /// The whole run is abandoned (workers and spawned server killed) after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub deadline_secs: u64,
    /// Fail (exit non-zero) when more than this percentage of logins fail or drop.
    #[arg(long, default_value_t = 0.1)]
    pub max_failed_pct: f64,
    /// LONGLINK_LOG of a spawned server (`info` is `longlink serve`'s default: one line per login).
    #[arg(long, default_value = "info")]
    pub server_log: String,
    /// Write the inputs and figures as JSON to this file (a sweep's plot goes next to it:
    /// the same name ending in .svg, unless --plot says otherwise).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A sweep only: plot RSS per connection against N (longlink, each peer, the DESIGN.md
    /// target) to this file (.svg or .png).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// The same workload against mosquitto and nats-server after longlink's (`--peers`).
    #[command(flatten)]
    pub peers: PeersOption,
}

/// `longlink bench idle-worker` (hidden): one worker process of the idle scenario.
#[derive(Debug, Clone, Args)]
pub struct IdleWorkerArgs {
    /// Where to log in, as whom, how many.
    #[command(flatten)]
    pub worker: WorkerArgs,
}

/// Runs the scenario: prints the figures, writes `--json`, and fails (one line) when the
/// run is not valid: too many failed logins, dropped connections, or the deadline passed.
/// With several N, a sweep (module docs).
///
/// Must run inside the `longlink` binary: the server and the workers are started as
/// subcommands of [`std::env::current_exe`].
///
/// # Errors
/// Bad arguments, a server that does not start or answer, too many failures, the deadline.
pub async fn run(args: IdleArgs) -> anyhow::Result<()> {
    let points = check_args(&args)?;
    // Checked first: a missing broker is said before the longlink run, not after it.
    let chosen = args.peers.resolve()?;
    let exe = std::env::current_exe().context("cannot find the longlink executable")?;
    if let [n] = points[..] {
        let json = point(&args, n, &chosen, &exe).await?;
        if let Some(path) = &args.json {
            crate::report::write_json(path, &json)?;
        }
        return Ok(());
    }
    sweep(&args, &points, &chosen, &exe).await
}

/// The N of each run, after refusing arguments the run cannot honour (before anything starts).
fn check_args(args: &IdleArgs) -> anyhow::Result<Vec<u32>> {
    let points = args.connections.clone();
    if points.is_empty() || points.contains(&0) {
        bail!("--connections must be at least 1 (each N of a list too)");
    }
    if args.per_worker == 0 || args.concurrency == 0 {
        bail!("--per-worker and --concurrency must be at least 1");
    }
    if points.len() == 1 {
        if args.plot.is_some() {
            bail!("--plot draws RSS per connection against N: it needs several N in --connections");
        }
        return Ok(points);
    }
    if args.target.server.is_some() {
        bail!(
            "--connections {}: a sweep starts a fresh server for each N, and --server's cannot be restarted between points; give one N, or drop --server",
            list(&points)
        );
    }
    if let Some(path) = sweep_plot_path(args) {
        plot::check_path(&path)?;
    }
    Ok(points)
}

/// One run at `n` connections: longlink's server (spawned, or --server), then the peers;
/// prints both and returns the report (with the peers' section).
async fn point(args: &IdleArgs, n: u32, chosen: &Chosen, exe: &Path) -> anyhow::Result<IdleJson> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.deadline_secs);
    let target = args
        .target
        .resolve_with(
            exe,
            args.appcode,
            &args.server_log,
            &overrides(args.transport)?,
            deadline,
            || {
                // The default config's secret of appcode 129, whatever --appcode says.
                args.token_secret
                    .clone()
                    .map_or_else(|| dev_secret(129), Ok)
            },
        )
        .await?;
    let outcome = tokio::time::timeout_at(deadline, measure(args, n, exe, &target, deadline)).await;
    let report = target
        .end_run(
            outcome,
            |report| report.problem.is_none(),
            args.deadline_secs,
            "workers",
        )
        .await?;
    let mut report = report;
    if let Some(problem) = &report.problem {
        report.print();
        bail!("{problem}");
    }
    // The peers, with the same parameters, once longlink's server is stopped.
    let longlink = longlink_figures(&report.json.results);
    let params = peers::idle::Params {
        connections: n,
        per_worker: args.per_worker,
        concurrency: args.concurrency,
        login_timeout_secs: args.login_timeout_secs,
        warmup: args.warmup,
        deadline_secs: args.deadline_secs,
    };
    let section = peers::idle::run(chosen, &params, &longlink, exe).await?;
    report.print();
    peers::idle::print(&section, &longlink);
    report.json.peers = Some(section);
    Ok(report.json)
}

fn longlink_figures(r: &Results) -> peers::idle::Longlink {
    peers::idle::Longlink {
        rss_per_connection_bytes: r.rss_per_connection_bytes,
        cpu_us_per_login: r.server_cpu_us_per_login,
        logins_per_cpu_sec: r.logins_per_server_cpu_sec,
    }
}

/// `1000,5000,10000`.
fn list(points: &[u32]) -> String {
    points
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Where a sweep's plot goes: --plot, else next to --json (same name, .svg), else nowhere.
fn sweep_plot_path(args: &IdleArgs) -> Option<PathBuf> {
    args.plot
        .clone()
        .or_else(|| args.json.as_ref().map(|json| json.with_extension("svg")))
}

/// A sweep's JSON: every point's whole report (as a single run writes it) in `sweep`.
#[derive(Debug, Serialize)]
struct SweepJson {
    #[serde(flatten)]
    run: RunStamp,
    /// The N of each point, in the order they ran.
    connections: Vec<u32>,
    /// Each point's server was spawned afresh, and its peers ran at that N.
    server: &'static str,
    targets: Targets,
    /// The plot of RSS per connection against N, when one was drawn.
    plot: Option<String>,
    /// Set when a point failed: the points before it are in `sweep`, the rest did not run.
    problem: Option<String>,
    sweep: Vec<IdleJson>,
}

/// One row of the summary table and one point of the plot: a server's figures at one N.
struct Row {
    server: String,
    n: u32,
    connected: u64,
    rss_per_connection: u64,
    cpu_us: f64,
    per_sec: f64,
    per_cpu_sec: f64,
}

/// The rows of one point: longlink's, then each peer's.
fn rows(point: &IdleJson) -> Vec<Row> {
    let r = &point.results;
    let n = point.inputs.connections;
    let mut rows = vec![Row {
        server: "longlink".to_owned(),
        n,
        connected: u64::from(r.logged_in),
        rss_per_connection: r.rss_per_connection_bytes,
        cpu_us: r.server_cpu_us_per_login,
        per_sec: r.logins_per_sec,
        per_cpu_sec: r.logins_per_server_cpu_sec,
    }];
    // The peers' figures are private to `peers::idle`; their JSON form is the documented shape.
    for run in point.peers.iter().flat_map(|section| &section.runs) {
        let Ok(v) = serde_json::to_value(run) else {
            continue;
        };
        let int = |key: &str| v[key].as_u64().unwrap_or(0);
        let float = |key: &str| v[key].as_f64().unwrap_or(0.0);
        rows.push(Row {
            server: v["peer"].as_str().unwrap_or("peer").to_owned(),
            n,
            connected: int("connected"),
            rss_per_connection: int("rss_per_connection_bytes"),
            cpu_us: float("broker_cpu_us_per_connection"),
            per_sec: float("connects_per_sec"),
            per_cpu_sec: float("connections_per_broker_cpu_sec"),
        });
    }
    rows
}

/// Runs every N against its own spawned server (and the peers), then prints the table, writes
/// the JSON and the plot. A failed point ends the sweep, but the points before it are still
/// reported and written (a long sweep is not lost to its last, largest N).
async fn sweep(args: &IdleArgs, points: &[u32], chosen: &Chosen, exe: &Path) -> anyhow::Result<()> {
    let mut done = Vec::new();
    let mut problem = None;
    for (i, &n) in points.iter().enumerate() {
        // Only the MQTT peers' clients use kernel-chosen ports from one address.
        if i > 0
            && chosen
                .peers
                .iter()
                .any(|peer| peer.kind == peers::PeerKind::Mosquitto)
        {
            drain_time_wait().await;
        }
        println!(
            "=== sweep point {} of {}: {} connections (fresh server) ===",
            i + 1,
            points.len(),
            thousands(u64::from(n))
        );
        match point(args, n, chosen, exe).await {
            Ok(json) => done.push(json),
            Err(err) => {
                problem = Some(format!("sweep point N = {n}: {err:#}"));
                break;
            }
        }
        println!();
    }
    let rows: Vec<Row> = done.iter().flat_map(rows).collect();
    print_sweep(&rows);
    let plot_path = sweep_plot_path(args).filter(|_| !done.is_empty());
    if let Some(path) = &plot_path
        && let Err(err) = plot::series_styled(path, &sweep_plot(&rows), &sweep_style())
    {
        // The figures are in the table and the JSON; a missing font only costs the picture.
        eprintln!("note: no plot: {err:#}");
    }
    if let Some(path) = &args.json {
        let json = SweepJson {
            run: RunStamp::now("idle"),
            connections: points.to_vec(),
            server: "spawned afresh for each N; the peers ran at each N",
            targets: Targets {
                rss_per_connection_bytes: TARGET_RSS_PER_CONNECTION,
                server_cpu_us_per_login: TARGET_CPU_US_PER_LOGIN,
            },
            plot: plot_path.map(|p| p.display().to_string()),
            problem: problem.clone(),
            sweep: done,
        };
        crate::report::write_json(path, &json)?;
    }
    if let Some(problem) = problem {
        bail!("{problem}");
    }
    Ok(())
}

/// Waits (at most [`TIME_WAIT_MAX`]) for the previous point's closed connections to leave
/// TIME_WAIT. The MQTT peers' clients cannot bind a source address, so they share 127.0.0.1's
/// ephemeral ports with every socket still in TIME_WAIT: after a 10,000 point (20,000 MQTT
/// connections), a 19,000 point failed with "Cannot assign requested address" at ~12,000.
async fn drain_time_wait() {
    let start = Instant::now();
    let mut said = false;
    while let Some(waiting) = procfs::time_wait().filter(|n| *n > TIME_WAIT_LEFT) {
        if start.elapsed() >= TIME_WAIT_MAX {
            println!(
                "note: {} sockets still in TIME_WAIT after {} s; going on",
                thousands(waiting),
                TIME_WAIT_MAX.as_secs()
            );
            return;
        }
        if !said {
            println!(
                "waiting for {} sockets in TIME_WAIT (the previous point's) to expire, so the next point's clients find free ports",
                thousands(waiting)
            );
            said = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn print_sweep(rows: &[Row]) {
    println!(
        "sweep summary (targets: RSS ≤ {} B per connection, CPU ≤ {TARGET_CPU_US_PER_LOGIN} µs per login):",
        thousands(TARGET_RSS_PER_CONNECTION)
    );
    println!(
        "  {:>8} {:<16} {:>10} {:>12} {:>12} {:>12} {:>14}",
        "N", "server", "connected", "RSS/conn", "CPU/login", "logins/s", "per CPU-s"
    );
    for row in rows {
        println!(
            "  {:>8} {:<16} {:>10} {:>10} B {:>9.1} µs {:>12} {:>14}",
            thousands(u64::from(row.n)),
            row.server,
            thousands(row.connected),
            thousands(row.rss_per_connection),
            row.cpu_us,
            thousands(row.per_sec as u64),
            thousands(row.per_cpu_sec as u64),
        );
    }
}

/// RSS per connection against N: one line per server, in the order they first appear.
fn sweep_plot(rows: &[Row]) -> plot::SeriesPlot {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for row in rows {
        let point = (f64::from(row.n), row.rss_per_connection as f64);
        match series.iter_mut().find(|(name, _)| *name == row.server) {
            Some((_, points)) => points.push(point),
            None => series.push((row.server.clone(), vec![point])),
        }
    }
    plot::SeriesPlot {
        title: "longlink bench idle: memory per connection vs N".to_owned(),
        charts: vec![plot::SeriesChart {
            caption: "server RSS per idle logged-in connection ((settled − baseline) ÷ N, fresh server per N)".to_owned(),
            x_desc: "N (idle connections)".to_owned(),
            y_desc: "bytes per connection (log scale)".to_owned(),
            series,
        }],
    }
}

fn sweep_style() -> plot::SeriesStyle {
    plot::SeriesStyle {
        target: Some((
            format!(
                "DESIGN.md target: ≤ {} B",
                thousands(TARGET_RSS_PER_CONNECTION)
            ),
            TARGET_RSS_PER_CONNECTION as f64,
        )),
        markers: true,
        // nats-server's ~20 KB per connection beside mosquitto's ~1 KB.
        log_y: true,
    }
}

/// A spawned server's settings for this scenario: the listener of `transport`, and an
/// admission limiter that does not refuse the load generator.
fn overrides(transport: Transport) -> anyhow::Result<Vec<crate::server::ConfigOverride>> {
    let mut overrides = transport_overrides(transport)?;
    overrides.extend(crate::server::unthrottled_logins());
    Ok(overrides)
}

/// The figures of one run, and what went wrong if the run is not valid.
struct Report {
    json: IdleJson,
    problem: Option<String>,
}

#[derive(Debug, Serialize)]
struct IdleJson {
    #[serde(flatten)]
    run: RunStamp,
    inputs: Inputs,
    server: ServerInfo,
    machine: Machine,
    results: Results,
    targets: Targets,
    notes: Vec<String>,
    /// The same workload against the peers, in the same run (`--peers`).
    peers: Option<peers::Section<peers::idle::Run>>,
}

#[derive(Debug, Serialize)]
struct Inputs {
    connections: u32,
    /// `tcp` or `ws`.
    transport: Transport,
    /// The address the connections went to (the gate's listener of `transport`).
    endpoint: String,
    workers: u32,
    per_worker: u32,
    concurrency: u32,
    warmup: u32,
    hold_secs: u64,
    appcode: u32,
    source_addresses: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ServerInfo {
    #[serde(flatten)]
    identity: ServerIdentity,
    log_level: Option<String>,
    open_files_limit: Option<u64>,
    open_files_before: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Results {
    logged_in: u32,
    failed: u32,
    dropped: u32,
    failure_samples: Vec<String>,
    login_wall_secs: f64,
    logins_per_sec: f64,
    server_cpu_secs: f64,
    server_cpu_us_per_login: f64,
    logins_per_server_cpu_sec: f64,
    client_cpu_secs: f64,
    listen_overflows: Option<u64>,
    rss_baseline_bytes: u64,
    rss_after_bytes: u64,
    rss_per_connection_bytes: u64,
    rss_anon_per_connection_bytes: u64,
    rss_settled: bool,
    rss_settle_secs: f64,
    sessions_reported: Option<u64>,
    rss_after_hold_bytes: Option<u64>,
    rss_per_connection_after_hold_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Targets {
    rss_per_connection_bytes: u64,
    server_cpu_us_per_login: f64,
}

impl Report {
    fn print(&self) {
        let j = &self.json;
        let r = &j.results;
        let n = r.logged_in.max(1);
        println!(
            "logged in    {} of {} over {} ({} failed) in {:.2} s: {} logins/s",
            thousands(u64::from(r.logged_in)),
            thousands(u64::from(j.inputs.connections)),
            j.inputs.transport,
            r.failed,
            r.login_wall_secs,
            thousands(r.logins_per_sec as u64)
        );
        for sample in &r.failure_samples {
            println!("  failure: {sample}");
        }
        println!(
            "server CPU   {:.3} s during the logins: {:.1} µs per login, {} logins per server CPU-second ({}, target ≤ {TARGET_CPU_US_PER_LOGIN} µs)",
            r.server_cpu_secs,
            r.server_cpu_us_per_login,
            thousands(r.logins_per_server_cpu_sec as u64),
            verdict(r.server_cpu_us_per_login <= TARGET_CPU_US_PER_LOGIN),
        );
        println!(
            "client CPU   {:.3} s in {} worker process(es) (load generator, not the server)",
            r.client_cpu_secs, j.inputs.workers
        );
        println!(
            "server RSS   {} → {} with {} idle sessions ({}): {} B per connection ({}, target ≤ {} B); anonymous memory {} B per connection",
            mib(r.rss_baseline_bytes),
            mib(r.rss_after_bytes),
            thousands(u64::from(n)),
            if r.rss_settled {
                format!("settled in {:.1} s", r.rss_settle_secs)
            } else {
                format!("still moving after {:.0} s", r.rss_settle_secs)
            },
            thousands(r.rss_per_connection_bytes),
            verdict(r.rss_per_connection_bytes <= TARGET_RSS_PER_CONNECTION),
            thousands(TARGET_RSS_PER_CONNECTION),
            thousands(r.rss_anon_per_connection_bytes),
        );
        if let Some(sessions) = r.sessions_reported {
            println!(
                "sessions     {} logged in according to the server's /healthz",
                thousands(sessions)
            );
        }
        if let (Some(rss), Some(per)) = (
            r.rss_after_hold_bytes,
            r.rss_per_connection_after_hold_bytes,
        ) {
            println!(
                "after {} s held: RSS {}, {} B per connection; {} connection(s) dropped by the server",
                j.inputs.hold_secs,
                mib(rss),
                thousands(per),
                r.dropped
            );
        } else if r.dropped > 0 {
            println!(
                "dropped      {} connection(s) closed by the server while idle",
                r.dropped
            );
        }
        for note in &j.notes {
            println!("note: {note}");
        }
    }
}

/// Logs `count` connections in and out, concurrently: the server's lazily built state
/// (runtime threads' allocator arenas, first-use tables) exists before the baseline.
async fn warm_up(args: &IdleArgs, gate: SocketAddr, minter: &Arc<Minter>) -> anyhow::Result<()> {
    let transport = args.transport;
    let timeout = Duration::from_secs(args.login_timeout_secs);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.warmup.max(1) {
        let minter = minter.clone();
        let uid = format!("{}warmup-{i}", args.uid_prefix);
        tasks.spawn(async move {
            let session = client::login(gate, transport, None, &minter, &uid, timeout).await?;
            client::logout(session, timeout).await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined
            .context("warm-up task failed")?
            .map_err(|err| anyhow!("warm-up login to {gate} failed: {err}"))?;
    }
    Ok(())
}

async fn measure(
    args: &IdleArgs,
    n: u32,
    exe: &Path,
    target: &Target,
    deadline: Instant,
) -> anyhow::Result<Report> {
    let pid = target.pid;
    let workers_count = workers::count(n, args.per_worker);
    let endpoint = target.endpoint(args.transport)?;
    let mut notes = Vec::new();
    let version = target.version().await;
    let sessions_before = target.health().await.map(|h| h.sessions);
    let open_files = procfs::open_files(pid).ok();
    let sources: Vec<IpAddr> = (0..workers_count)
        .filter_map(|index| workers::source_address(endpoint, index))
        .collect();
    println!(
        "longlink bench idle: {} connections over {} to {endpoint}, {workers_count} worker process(es){}, {} logins in flight",
        thousands(u64::from(n)),
        args.transport,
        match (sources.first(), sources.last()) {
            (Some(first), Some(last)) if first == last => format!(" from {first}"),
            (Some(first), Some(last)) => format!(" from {first}–{last}"),
            _ => String::new(),
        },
        args.concurrency
    );
    println!("{}", target.describe(&version));
    if let Some((limit, open)) = open_files {
        let fits = limit.saturating_sub(open);
        if u64::from(n) > fits {
            let note = format!(
                "the server process may open {} files and has {} open: at most ~{} connections fit in one server process; more need several gate processes (not this scenario), so logins beyond that will fail",
                thousands(limit),
                open,
                thousands(fits)
            );
            println!(
                "warning: one server process holds at most ~{} connections here ({} open files allowed): expect {} failed logins",
                thousands(fits),
                thousands(limit),
                thousands(u64::from(n) - fits)
            );
            notes.push(note);
        }
    }

    let minter = Arc::new(Minter::new(args.appcode, &target.secret));
    warm_up(args, endpoint, &minter).await?;
    let baseline = settle(pid).await?;
    println!(
        "baseline     RSS {} after {} warm-up login(s) and logout(s)",
        mib(baseline.rss.total),
        args.warmup.max(1)
    );

    // Login phase.
    if sources.is_empty()
        && let (Some(time_wait), Some(ports)) = (procfs::time_wait(), procfs::ephemeral_ports())
        && (time_wait + u64::from(n)) * 2 > ports
    {
        notes.push(format!(
            "{} sockets were in TIME_WAIT before the logins and {} ephemeral ports exist: with {} more connections from one source address, connect() searches long for a free port (client CPU, logins/s); the server's figures are not affected",
            thousands(time_wait),
            thousands(ports),
            thousands(u64::from(n))
        ));
    }
    let overflows_before = procfs::listen_overflows();
    let cpu_before = procfs::cpu_time(pid)?;
    let login_start = Instant::now();
    let mut workers: Workers<()> = Workers::spawn(
        &WorkerSpec {
            exe,
            gate: endpoint,
            transport: args.transport,
            secret: &target.secret,
            appcode: args.appcode,
            uid_prefix: &args.uid_prefix,
            connections: n,
            per_worker: args.per_worker,
            concurrency: args.concurrency,
            login_timeout_secs: args.login_timeout_secs,
            deadline,
        },
        "idle-worker",
        &[],
        |_| None,
    )?;
    let bar = workers::login_bar(n);
    if let Err(crash) = workers.wait_logged_in(&bar).await {
        bar.abandon();
        workers.stop().await;
        return Err(crash);
    }
    // The workers time their own logins (their start-up and the 200 ms report interval are
    // not login time); the parent's clock is the fallback.
    let login_wall = workers
        .login_wall()
        .unwrap_or_else(|| login_start.elapsed());
    let cpu_after = procfs::cpu_time(pid)?;
    let client_cpu = workers.cpu_time();
    let listen_overflows = overflows_before
        .zip(procfs::listen_overflows())
        .map(|(before, after)| after.saturating_sub(before));
    bar.finish_and_clear();
    let logged_in = workers.logged_in();
    let failed = workers.failed();

    // Idle: measure.
    let after = settle(pid).await?;
    let sessions_reported = target.health().await.map(|h| h.sessions);
    workers.drain();
    let dropped_at_measure = workers.dropped();
    let held = logged_in.saturating_sub(dropped_at_measure).max(1);
    let per_connection = after.rss.total.saturating_sub(baseline.rss.total) / u64::from(held);
    let anon_per_connection = after.rss.anon.saturating_sub(baseline.rss.anon) / u64::from(held);

    let mut after_hold = None;
    if args.hold_secs > 0 {
        println!(
            "measured; holding the connections {} s more (KEEPALIVE at the interval the server asked for)",
            args.hold_secs
        );
        let until = Instant::now() + Duration::from_secs(args.hold_secs);
        while Instant::now() < until {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                more = workers.next() => if !more { break },
            }
        }
        let rss = procfs::rss(pid)?;
        let held = logged_in.saturating_sub(workers.dropped()).max(1);
        after_hold = Some((
            rss.total,
            rss.total.saturating_sub(baseline.rss.total) / u64::from(held),
        ));
    }
    workers.stop().await;
    let dropped = workers.dropped();

    if let (Some(before), Some(now)) = (sessions_before, sessions_reported)
        && now.saturating_sub(before) != u64::from(logged_in.saturating_sub(dropped_at_measure))
    {
        notes.push(format!(
            "/healthz counted {now} sessions ({before} before the run) while the workers held {}",
            logged_in.saturating_sub(dropped_at_measure)
        ));
    }
    if let Some(overflows) = listen_overflows.filter(|n| *n > 0) {
        notes.push(format!(
            "the kernel counted {overflows} listen-queue overflows during the logins (TcpExt ListenOverflows): the gate's accept backlog was full, and each dropped attempt costs its client a 1 s SYN retransmit; this lowers logins/s, not the server's CPU per login"
        ));
    }
    if !after.stable {
        notes.push(format!(
            "the RSS was still moving by ≥ 1% per {} ms after {} s; the last sample was used",
            SETTLE_INTERVAL.as_millis(),
            SETTLE_MAX.as_secs()
        ));
    }
    notes.extend(target.log_level_note().map(|note| {
        format!("{note} (one line per login at info); its CPU per login includes that")
    }));

    let problem = {
        let allowed = f64::from(n) * args.max_failed_pct / 100.0;
        let missing = n.saturating_sub(logged_in + failed);
        if missing > 0 {
            Some(format!(
                "{missing} of {n} logins were never attempted or answered"
            ))
        } else if f64::from(failed) > allowed {
            Some(format!(
                "{failed} of {n} logins failed (more than --max-failed-pct {}%){}",
                args.max_failed_pct,
                workers
                    .failure_samples()
                    .first()
                    .map(|f| format!("; first: {f}"))
                    .unwrap_or_default()
            ))
        } else if f64::from(dropped_at_measure) > allowed {
            Some(format!(
                "the server closed {dropped_at_measure} of {logged_in} idle connections before the measurement"
            ))
        } else {
            None
        }
    };

    let login_secs = login_wall.as_secs_f64().max(1e-9);
    let server_cpu = cpu_after.saturating_sub(cpu_before).as_secs_f64();
    let per_login = |value: f64| {
        if logged_in == 0 {
            0.0
        } else {
            value / f64::from(logged_in)
        }
    };
    let json = IdleJson {
        run: RunStamp::now("idle"),
        inputs: Inputs {
            connections: n,
            transport: args.transport,
            endpoint: endpoint.to_string(),
            workers: workers_count,
            per_worker: args.per_worker,
            concurrency: args.concurrency,
            warmup: args.warmup.max(1),
            hold_secs: args.hold_secs,
            appcode: args.appcode,
            source_addresses: sources.iter().map(ToString::to_string).collect(),
        },
        server: ServerInfo {
            identity: target.identity(version),
            log_level: target.log_level(),
            open_files_limit: open_files.map(|(limit, _)| limit),
            open_files_before: open_files.map(|(_, open)| open),
        },
        machine: Machine::now(None),
        results: Results {
            logged_in,
            failed,
            dropped,
            failure_samples: workers.failure_samples(),
            login_wall_secs: round(login_secs, 3),
            logins_per_sec: round(f64::from(logged_in) / login_secs, 1),
            server_cpu_secs: round(server_cpu, 3),
            server_cpu_us_per_login: round(per_login(server_cpu * 1e6), 1),
            logins_per_server_cpu_sec: round(per(u64::from(logged_in), server_cpu), 0),
            client_cpu_secs: round(client_cpu.as_secs_f64(), 3),
            listen_overflows,
            rss_baseline_bytes: baseline.rss.total,
            rss_after_bytes: after.rss.total,
            rss_per_connection_bytes: per_connection,
            rss_anon_per_connection_bytes: anon_per_connection,
            rss_settled: after.stable,
            rss_settle_secs: round(after.secs, 1),
            sessions_reported,
            rss_after_hold_bytes: after_hold.map(|(rss, _)| rss),
            rss_per_connection_after_hold_bytes: after_hold.map(|(_, per)| per),
        },
        targets: Targets {
            rss_per_connection_bytes: TARGET_RSS_PER_CONNECTION,
            server_cpu_us_per_login: TARGET_CPU_US_PER_LOGIN,
        },
        notes,
        peers: None,
    };
    Ok(Report { json, problem })
}

/// Runs one worker: opens `count` logged-in connections, reports on stdout, holds them until
/// stdin closes (or says `stop`) or the deadline passes, then exits the process.
///
/// # Errors
/// Never in practice: failures are counted and reported on stdout.
pub async fn run_worker(args: IdleWorkerArgs) -> anyhow::Result<()> {
    let mut worker = LoginWorker::start(&args.worker, client::hold);
    loop {
        tokio::select! {
            _ = worker.stop.cancelled() => break,
            _ = tokio::time::sleep(REPORT_INTERVAL) => {}
        }
        let mut lines = Vec::new();
        worker.status(&mut lines);
        if !workers::emit(&lines) {
            worker.stop.cancel();
        }
    }
    worker.wind_down().await;
    let (ok, failed, dropped) = worker.counts();
    workers::emit(&[format!("done {ok} {failed} {dropped}")]);
    // The stdin reader may still sit in a blocking read that would hold up the runtime's
    // shutdown: leave at once.
    std::process::exit(0)
}
