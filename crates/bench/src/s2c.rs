//! What the s2c scenarios (`push`, `broadcast`) share: their common options, the frame of a
//! run (deadline, server under test and its API, the figures printed and written), N clients
//! logged in over [`crate::fanout`] workers and confirmed online through the API, and the
//! pieces of their reports.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use serde::Serialize;
use tokio::time::Instant;

use crate::api::{Api, DEV_API_KEY};
use crate::fanout::{Fleet, FleetSpec};
use crate::num::round;
use crate::peers::{Chosen, PeersOption};
use crate::procfs;
use crate::report::thousands;
use crate::server::{ServerIdentity, ServerTarget, Target, dev_secret};
use crate::workers::{self, WorkerSpec};

/// How long the API may take to count every logged-in client as online.
const PRESENCE_WAIT: Duration = Duration::from_secs(15);

/// Options every s2c scenario takes.
#[derive(Debug, Clone, Args)]
pub struct S2cOptions {
    /// Most clients per worker process (one process may open 20,000 files here).
    #[arg(long, default_value_t = 10_000)]
    pub per_worker: u32,
    /// Logins in flight at once, over all workers.
    #[arg(long, default_value_t = 100)]
    pub login_concurrency: u32,
    /// Timeout of each connect + LOGIN, in seconds.
    #[arg(long, default_value_t = 10)]
    pub login_timeout_secs: u64,
    /// Clients do not send MSG_ACK (by default they acknowledge each push, as the SDK does).
    #[arg(long)]
    pub no_client_ack: bool,
    /// The server measured: one started by the bench, or --server/--server-pid/--api (the API
    /// address is required with --server: pushes go through it).
    #[command(flatten)]
    pub target: ServerTarget,
    /// API key of the server (default: the default config's development key).
    #[arg(long, env = "LONGLINK_BENCH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// HS256 secret of the clients' appcode on the server at --server (default: the default
    /// config's). A spawned server's secrets are read from its config.
    #[arg(long, env = "LONGLINK_BENCH_CLIENT_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// LONGLINK_LOG of a spawned server (`info` is `longlink serve`'s default).
    #[arg(long, default_value = "info")]
    pub server_log: String,
    /// Write the inputs and figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Plot the latency distributions to this file (.svg or .png).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// The same workload against mosquitto and nats-server after longlink's (`--peers`).
    #[command(flatten)]
    pub peers: PeersOption,
}

/// The server under test, with its API.
pub(crate) struct Bench {
    pub(crate) target: Target,
    pub(crate) api: Api,
    pub(crate) secret: String,
    pub(crate) version: String,
    pub(crate) loadavg: String,
}

/// What an s2c run produces: its figures (printed, and written by `--json`) and its plot.
pub(crate) struct Report<J> {
    pub(crate) json: J,
    pub(crate) plot: crate::plot::LatencyPlot,
}

/// A scenario's figures: the JSON it writes, and the summary it prints.
pub(crate) trait Figures: Serialize {
    /// Prints the summary on stdout.
    fn print(&self);
}

/// Runs an s2c scenario around its `measure`: sets the `--deadline-secs` deadline, starts (or
/// finds) the server for `appcode`'s clients, measures, stops the server; then runs the same
/// workload against the `--peers` (`peers`, which adds their figures to the report); then
/// prints the figures and writes `--json` and `--plot`.
///
/// # Errors
/// As [`start`], `measure`'s, the deadline, a peer's run.
pub(crate) async fn run<J: Figures>(
    options: &S2cOptions,
    appcode: u32,
    deadline_secs: u64,
    measure: impl AsyncFnOnce(&Path, &Bench, Instant) -> anyhow::Result<Report<J>>,
    peers: impl AsyncFnOnce(&Chosen, &Path, &mut J) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    // Checked first: a missing broker is said before the longlink run, not after it.
    let chosen = options.peers.resolve()?;
    let deadline = Instant::now() + Duration::from_secs(deadline_secs);
    let exe = std::env::current_exe().context("cannot find the longlink executable")?;
    let bench = start(options, &exe, appcode, deadline).await?;
    let outcome = tokio::time::timeout_at(deadline, measure(&exe, &bench, deadline)).await;
    let report = bench
        .target
        .end_run(outcome, |_| true, deadline_secs, "workers")
        .await?;
    let mut report = report;
    peers(&chosen, &exe, &mut report.json).await?;
    report.json.print();
    if let Some(path) = &options.json {
        crate::report::write_json(path, &report.json)?;
    }
    if let Some(path) = &options.plot {
        crate::plot::write(path, &report.plot)?;
    }
    Ok(())
}

/// Starts (or finds) the server for `appcode`'s clients; checks the options first.
async fn start(
    options: &S2cOptions,
    exe: &Path,
    appcode: u32,
    deadline: Instant,
) -> anyhow::Result<Bench> {
    if let Some(plot) = &options.plot {
        crate::plot::check_path(plot)?;
    }
    if options.per_worker == 0 || options.login_concurrency == 0 {
        bail!("--per-worker and --login-concurrency must be at least 1");
    }
    let target = options
        .target
        .resolve_with(
            exe,
            appcode,
            &options.server_log,
            &crate::server::unthrottled_logins(),
            deadline,
            || {
                if options.target.api.is_none() {
                    bail!("--api is required with --server: the pushes go through the HTTP API");
                }
                options
                    .token_secret
                    .clone()
                    .map_or_else(|| dev_secret(appcode), Ok)
            },
        )
        .await?;
    let api_addr = target
        .api
        .ok_or_else(|| anyhow!("the server's API address is unknown"))?;
    let api = Api::new(api_addr, options.api_key.as_deref().unwrap_or(DEV_API_KEY))?;
    let secret = target.secret.clone();
    let loadavg = procfs::loadavg();
    let version = target.version().await;
    Ok(Bench {
        target,
        api,
        secret,
        version,
        loadavg,
    })
}

impl S2cOptions {
    /// Whether the clients acknowledge what they receive (MSG_ACK).
    pub(crate) fn client_ack(&self) -> bool {
        !self.no_client_ack
    }

    /// What the clients do with a push, for a run's header.
    pub(crate) fn client_ack_words(&self) -> &'static str {
        if self.client_ack() {
            "ack each push (MSG_ACK)"
        } else {
            "do not ack"
        }
    }
}

/// "persisted" or "online-only", for a run's header and plot title.
pub(crate) fn persistence(persist: bool) -> &'static str {
    if persist { "persisted" } else { "online-only" }
}

/// The receiving clients of an s2c run.
pub(crate) struct Clients<'a> {
    /// One user each.
    pub(crate) users: u32,
    pub(crate) appcode: u32,
    /// uids are this prefix, the run's tag, then a number.
    pub(crate) uid_prefix: &'a str,
    /// Pushes the run will send (k = 0 … pushes − 1).
    pub(crate) pushes: usize,
}

/// Clients online, confirmed by the API.
pub(crate) struct Online {
    pub(crate) fleet: Fleet,
    /// The run's tag: in the uids, and in the content of the pushes the clients count.
    pub(crate) tag: u64,
    /// The uids are this and 0 … users − 1.
    pub(crate) prefix: String,
    /// Worker processes holding the clients.
    pub(crate) workers: usize,
    pub(crate) login: LoginFigures,
}

/// How the clients came online: the first of an s2c run's results in the JSON.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct LoginFigures {
    pub(crate) logged_in: u32,
    /// From starting the workers to the last login.
    pub(crate) login_secs: f64,
    /// `GET /v1/presence/{appcode}` once every client was counted (or at the timeout).
    pub(crate) online_users_reported: u64,
}

/// Logs the `clients` in over worker processes ([`crate::fanout`], a progress bar shows it),
/// with uids and pushes tagged for this run, then waits until the API counts them online.
/// Fails when any login failed: the figures assume N online users.
pub(crate) async fn go_online(
    bench: &Bench,
    options: &S2cOptions,
    exe: &Path,
    clients: &Clients<'_>,
    deadline: Instant,
) -> anyhow::Result<Online> {
    let tag = longlink_proto::unix_ms();
    let prefix = format!("{}{tag}-", clients.uid_prefix);
    let spec = FleetSpec {
        clients: WorkerSpec {
            exe,
            gate: bench.target.gate,
            transport: crate::link::Transport::Tcp,
            secret: &bench.secret,
            appcode: clients.appcode,
            uid_prefix: &prefix,
            connections: clients.users,
            per_worker: options.per_worker,
            concurrency: options.login_concurrency,
            login_timeout_secs: options.login_timeout_secs,
            deadline,
        },
        tag,
        client_ack: options.client_ack(),
        pushes: clients.pushes,
    };
    let started = Instant::now();
    let mut fleet = Fleet::spawn(&spec)?;
    let bar = workers::login_bar(spec.clients.connections);
    let logged = fleet.workers.wait_logged_in(&bar).await;
    bar.finish_and_clear();
    if let Err(err) = logged {
        fleet.finish().await;
        return Err(err);
    }
    let login_secs = started.elapsed().as_secs_f64();
    if fleet.workers.failed() > 0 || fleet.workers.logged_in() < spec.clients.connections {
        let samples = fleet.workers.failure_samples();
        let (ok, failed) = (fleet.workers.logged_in(), fleet.workers.failed());
        fleet.finish().await;
        bail!(
            "{failed} of {} logins failed ({ok} logged in){}",
            spec.clients.connections,
            samples
                .first()
                .map(|s| format!("; first: {s}"))
                .unwrap_or_default()
        );
    }
    println!(
        "online       {} clients (appcode {}) in {} worker process(es), logged in in {login_secs:.1} s",
        thousands(u64::from(spec.clients.connections)),
        spec.clients.appcode,
        fleet.workers.len()
    );
    // Presence is written as each LOGIN completes; make sure the API sees all of them before
    // the first push, so `all: true` and the targets' online state cover every client.
    let until = Instant::now() + PRESENCE_WAIT;
    let mut users = 0;
    while Instant::now() < until {
        (users, _) = bench
            .api
            .online(spec.clients.appcode)
            .await
            .context("GET /v1/presence")?;
        if users >= u64::from(spec.clients.connections) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if users < u64::from(spec.clients.connections) {
        fleet.finish().await;
        bail!(
            "the API counts {users} online users of appcode {} after {} s; {} clients are logged in",
            spec.clients.appcode,
            PRESENCE_WAIT.as_secs(),
            spec.clients.connections
        );
    }
    let workers = fleet.workers.len();
    Ok(Online {
        fleet,
        tag,
        prefix,
        workers,
        login: LoginFigures {
            logged_in: clients.users,
            login_secs: round(login_secs, 2),
            online_users_reported: users,
        },
    })
}

/// About the server, for the JSON.
#[derive(Debug, Serialize)]
pub(crate) struct ServerInfo {
    #[serde(flatten)]
    pub(crate) identity: ServerIdentity,
    pub(crate) api: String,
    pub(crate) log_level: Option<String>,
}

impl ServerInfo {
    pub(crate) fn of(bench: &Bench) -> ServerInfo {
        ServerInfo {
            identity: bench.target.identity(bench.version.clone()),
            api: bench
                .target
                .api
                .map(|api| api.to_string())
                .unwrap_or_default(),
            log_level: bench.target.log_level(),
        }
    }
}

/// The server line of a run's header.
pub(crate) fn describe_server(bench: &Bench) -> String {
    format!(
        "{}, API {}",
        bench.target.describe(&bench.version),
        bench
            .target
            .api
            .map_or_else(|| "?".to_owned(), |api| api.to_string())
    )
}
