//! Scenario `reconnect-storm`: N connected clients all lose their links at once and come back
//! (docs/protocol.md §6.5, §6.6). How long until all are back, the resume latency, the
//! server's CPU per reconnect, and how the missed messages arrived — in the RESUME response,
//! or redelivered and pulled after a full LOGIN (`--no-resume`, the comparison).
//!
//! 1. The server: by default the bench starts its own (`<exe> serve`, default config on free
//!    loopback ports, a temporary data dir) with `[gate] hold_secs` long enough for the run
//!    (`--hold-secs`) and, when given, `login_rate_per_sec` / `login_burst`.
//! 2. Worker processes (`<exe> bench reconnect-storm-worker`, hidden; at most `--per-worker`
//!    clients each, since a process may open only 20,000 files here) log N clients in, each
//!    with its own uid, `resume_capable` (unless `--no-resume`), keeping the resume token and
//!    epoch; RATE_LIMITED logins are retried after `retry_after_ms`.
//! 3. Cut: every client resets its connection at once (RST: to the server the link failed).
//!    The bench waits until the server noticed: `longlink_gate_held_sessions` counts them held
//!    (resume), or `/healthz` no longer counts their sessions (`--no-resume`).
//! 4. Missed messages: `--messages` M persisted pushes to all N uids through
//!    `POST /v1/push` (as a business server sends them), each waited for until
//!    `GET /v1/push/{id}` says done; then the bench waits for the server's CPU to go quiet.
//! 5. Storm: every client reconnects at once (at most `--in-flight` connecting at a time):
//!    RESUME with its token (a RESUME_REJECTED falls back to LOGIN on the same connection),
//!    or with `--no-resume` LOGIN with `prior_epoch`, then OFFLINE_PULL from 0 until
//!    `more = false` (protocol §6.6 step 3: the server's login redelivery pushes arrive
//!    meanwhile); a RESUME that was not `gap_free` pulls the rest. Each client acknowledges
//!    what it got (MSG_ACK type 3) and stays connected. Per client: connect → session back
//!    (RESUME/LOGIN response), connect → caught up (every missed message in hand), storm
//!    start → caught up. The server's CPU (`/proc/<pid>/stat`) is read from the storm's start
//!    until every client is back plus `--settle-ms` (the acks' processing included).
//! 6. Workers stop when their stdin closes (and at their own deadline); a spawned server gets
//!    SIGTERM.
//!
//! Worker protocol (one line each on the worker's stdout): the status lines of
//! [`crate::workers`] for the first logins, then `cut <clients> <µs>` (every client reset its
//! link), `storm-progress <back> <failed>`, at the storm's end `storm-hist <name> <base64 V2
//! histogram>` per latency, `storm-points <t_ms>:<latency_µs> …` (a sample for the plot) and
//! `storm-done <name>=<count> …`; after stop `late <pushes>` and `done`. The parent tells the
//! workers `cut` and `storm` on their stdin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use clap::Args;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{Api, DEV_API_KEY, PushAnswer, PushBody, PushStats};
use crate::client::{Minter, SourcePorts};
use crate::counts::CountLine;
use crate::fanout::histogram;
use crate::latency::{self, Latency};
use crate::num::round;
use crate::procfs::{self, Window};
use crate::report::{Machine, RunStamp, by_thread, per, thousands};
use crate::server::{ConfigOverride, ServerIdentity, Target, dev_secret};
use crate::storm_client::{self, Back, Dial, Identity, Inbox};
use crate::workers::{self, REPORT_INTERVAL, SECRET_ENV, Tally, WorkerArgs, WorkerSpec, Workers};
use crate::{http, plot};

/// uids per `POST /v1/push` (the API takes 100,000; smaller bodies keep each call short).
const PUSH_BATCH: usize = 10_000;
/// How long the server may take to notice the cut links.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the pushes may take to be stored.
const PUSH_TIMEOUT: Duration = Duration::from_secs(120);
/// The server is quiet when it used less than this share of one core over [`QUIET_SAMPLE`].
const QUIET_SHARE: f64 = 0.05;
const QUIET_SAMPLE: Duration = Duration::from_millis(250);
/// Longest wait for a quiet server before the storm (past it, the storm starts anyway).
const QUIET_MAX: Duration = Duration::from_secs(15);
/// How long the workers may take to cut their links.
const CUT_TIMEOUT: Duration = Duration::from_secs(30);
/// Points per worker in the plot's lower chart.
const MAX_POINTS: usize = 2000;
/// Latencies drawn, with their names in the worker lines.
const HISTOGRAMS: [(&str, &str); 3] = [
    ("session", "connect → RESUME/LOGIN response"),
    ("caught_up", "connect → every missed message in hand"),
    ("storm", "storm start → caught up"),
];

/// `longlink bench reconnect-storm`: N clients lose their links at once and come back.
#[derive(Debug, Clone, Args)]
pub struct ReconnectStormArgs {
    /// Clients (one connection each). One server process holds at most ~19,900 here (20,000
    /// open files per process).
    #[arg(long, default_value_t = 2000)]
    pub clients: u32,
    /// Persisted pushes every client misses while its link is down (to all N uids through
    /// POST /v1/push); 0 = none.
    #[arg(long, default_value_t = 10)]
    pub messages: u32,
    /// Come back with a full LOGIN (and pull) instead of RESUME: the clients are not
    /// resume_capable, as before RESUME existed.
    #[arg(long)]
    pub no_resume: bool,
    /// Reconnects in progress at once, over all workers (connect → caught up); 0 = every client at
    /// once. Above the gate's listen backlog (`[gate] listen_backlog`, 4096, capped by
    /// net.core.somaxconn) the kernel drops SYNs and those clients retry after 1 s (reported as
    /// listen-queue overflows).
    #[arg(long, default_value_t = 100)]
    pub in_flight: u32,
    /// `[gate] hold_secs` of a spawned server: how long a dropped session waits for its RESUME.
    #[arg(long, default_value_t = 300)]
    pub hold_secs: u64,
    /// `[gate] login_rate_per_sec` of a spawned server (default: the default config's, 5,000);
    /// 0 = no limit. RESUMEs are not limited.
    #[arg(long)]
    pub login_rate_per_sec: Option<u32>,
    /// `[gate] login_burst` of a spawned server (default: the default config's, 1,000).
    #[arg(long)]
    pub login_burst: Option<u32>,
    /// First logins in flight at once, over all workers.
    #[arg(long, default_value_t = 100)]
    pub login_concurrency: u32,
    /// Most clients per worker process (each may open 20,000 files).
    #[arg(long, default_value_t = 10_000)]
    pub per_worker: u32,
    /// The appcode the clients log in with.
    #[arg(long, default_value_t = 129)]
    pub appcode: u32,
    /// The server measured: one started by the bench, or --server/--server-pid/--api.
    #[command(flatten)]
    pub target: crate::server::ServerTarget,
    /// HS256 secret of --appcode on the server at --server (default: the default config's
    /// secret of appcode 129). A spawned server's secret is read from its config.
    #[arg(long, env = SECRET_ENV, hide_env_values = true)]
    pub token_secret: Option<String>,
    /// API key for POST /v1/push (default: the default config's).
    #[arg(long, default_value = DEV_API_KEY)]
    pub api_key: String,
    /// Timeout of each connect, request and answer, in seconds.
    #[arg(long, default_value_t = 10)]
    pub login_timeout_secs: u64,
    /// A client not back this long after the storm began counts as failed.
    #[arg(long, default_value_t = 120)]
    pub storm_timeout_secs: u64,
    /// The storm's CPU window ends this long after the last client is back (its acks are
    /// processed meanwhile).
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    /// The whole run is abandoned (workers and spawned server killed) after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub deadline_secs: u64,
    /// Fail (exit non-zero) when more than this percentage of logins or reconnects fail.
    #[arg(long, default_value_t = 0.1)]
    pub max_failed_pct: f64,
    /// LONGLINK_LOG of a spawned server (`info` is `longlink serve`'s default: one line per
    /// login and resume).
    #[arg(long, default_value = "info")]
    pub server_log: String,
    /// Write the inputs and figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw the latency distributions and the latency over the storm into this .svg or .png.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// `longlink bench reconnect-storm-worker` (hidden): one worker process of the storm.
#[derive(Debug, Clone, Args)]
pub struct ReconnectStormWorkerArgs {
    /// Where to log in, as whom, how many.
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// Come back with LOGIN instead of RESUME (and log in without resume_capable).
    #[arg(long)]
    pub no_resume: bool,
    /// Reconnects in progress at once in this worker; 0 = all.
    #[arg(long, default_value_t = 0)]
    pub in_flight: u32,
    /// A client not back this long after the storm began counts as failed.
    #[arg(long, default_value_t = 120)]
    pub storm_timeout_secs: u64,
    /// Messages each client should find when it is back (for the `missing` count).
    #[arg(long, default_value_t = 0)]
    pub messages: u32,
}

// ---------------------------------------------------------------------------------------------
// What the workers count and how it travels.

/// A storm's counts, summed over clients (and over workers by the parent).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
struct Counts {
    /// Clients that took part (logged in at first).
    clients: u64,
    /// Clients back and caught up.
    back: u64,
    failed: u64,
    /// Back by RESUME.
    resumed: u64,
    /// RESUME responses that carried everything.
    gap_free: u64,
    /// RESUME_REJECTED answers (those clients logged in).
    resume_rejected: u64,
    /// LOGINs accepted during the storm.
    logins: u64,
    /// RATE_LIMITED answers, and the clients that got at least one.
    rate_limited: u64,
    rate_limited_clients: u64,
    /// Connections opened during the storm.
    connects: u64,
    /// OFFLINE_PULL requests.
    pull_requests: u64,
    /// Message copies: in RESUME responses, MSG pushes (login redelivery), pull pages.
    carried: u64,
    redelivered: u64,
    pulled: u64,
    /// Distinct messages, copies of one already received, acknowledged ones.
    distinct: u64,
    duplicates: u64,
    acked: u64,
    /// Messages clients that came back did not get (expected − distinct, per client).
    missing: u64,
    /// Largest storm start → session back, and → caught up, µs.
    max_back_us: u64,
    max_caught_up_us: u64,
}

impl CountLine for Counts {
    const TAG: &'static str = "storm-done";
    /// The two times take the larger; the rest sum.
    const MAXIMA: &'static [&'static str] = &["max_back_us", "max_caught_up_us"];

    fn fields(&mut self) -> Vec<(&'static str, &mut u64)> {
        let c = self;
        vec![
            ("clients", &mut c.clients),
            ("back", &mut c.back),
            ("failed", &mut c.failed),
            ("resumed", &mut c.resumed),
            ("gap_free", &mut c.gap_free),
            ("resume_rejected", &mut c.resume_rejected),
            ("logins", &mut c.logins),
            ("rate_limited", &mut c.rate_limited),
            ("rate_limited_clients", &mut c.rate_limited_clients),
            ("connects", &mut c.connects),
            ("pull_requests", &mut c.pull_requests),
            ("carried", &mut c.carried),
            ("redelivered", &mut c.redelivered),
            ("pulled", &mut c.pulled),
            ("distinct", &mut c.distinct),
            ("duplicates", &mut c.duplicates),
            ("acked", &mut c.acked),
            ("missing", &mut c.missing),
            ("max_back_us", &mut c.max_back_us),
            ("max_caught_up_us", &mut c.max_caught_up_us),
        ]
    }
}

/// A worker's own line.
#[derive(Debug)]
enum Line {
    Cut {
        clients: u32,
        micros: u64,
    },
    Progress {
        back: u32,
        failed: u32,
    },
    Hist(String, Histogram<u64>),
    Points(Vec<(u32, u32)>),
    Done(Counts),
    Late(u64),
    /// RATE_LIMITED answers to the first logins.
    Throttled(u64),
}

fn parse_line(line: &str) -> Option<Line> {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let words: Vec<&str> = rest.split_whitespace().collect();
    let number = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
    match word {
        "cut" => Some(Line::Cut {
            clients: u32::try_from(number(0)?).ok()?,
            micros: number(1)?,
        }),
        "storm-progress" => Some(Line::Progress {
            back: u32::try_from(number(0)?).ok()?,
            failed: u32::try_from(number(1)?).ok()?,
        }),
        "storm-hist" => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(words.get(1)?)
                .ok()?;
            let hist: Histogram<u64> = Deserializer::new()
                .deserialize(&mut bytes.as_slice())
                .ok()?;
            Some(Line::Hist((*words.first()?).to_owned(), hist))
        }
        "storm-points" => Some(Line::Points(
            words
                .iter()
                .filter_map(|pair| {
                    let (t, l) = pair.split_once(':')?;
                    Some((t.parse().ok()?, l.parse().ok()?))
                })
                .collect(),
        )),
        "storm-done" => Counts::from_words(rest).map(Line::Done),
        "late" => Some(Line::Late(number(0)?)),
        "first-throttled" => Some(Line::Throttled(number(0)?)),
        _ => None,
    }
}

/// What the parent keeps of one worker's lines.
#[derive(Default)]
struct StormTally {
    cut: Option<(u32, u64)>,
    progress: (u32, u32),
    hists: BTreeMap<String, Histogram<u64>>,
    points: Vec<(u32, u32)>,
    done: Option<Counts>,
    late: Option<u64>,
    throttled: u64,
}

impl Tally for StormTally {
    type Line = Line;

    fn add(&mut self, line: Line) {
        match line {
            Line::Cut { clients, micros } => self.cut = Some((clients, micros)),
            Line::Progress { back, failed } => self.progress = (back, failed),
            Line::Hist(name, hist) => {
                let _ = self.hists.entry(name).or_insert_with(histogram).add(&hist);
            }
            Line::Points(points) => self.points.extend(points),
            Line::Done(counts) => self.done = Some(counts),
            Line::Late(late) => self.late = Some(late),
            Line::Throttled(throttled) => self.throttled = throttled,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Worker process.

/// Login counters of a worker's first logins (the common status lines).
#[derive(Default)]
struct Logins {
    ok: AtomicU32,
    failed: AtomicU32,
    /// Connections the server closed before the cut.
    dropped: AtomicU32,
    /// RATE_LIMITED answers to first logins.
    throttled: AtomicU32,
    last_done_micros: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Logins {
    fn fail(&self, message: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        note_failure(&self.failures, message);
    }
}

/// Keeps the first few distinct failure messages.
fn note_failure(failures: &Mutex<Vec<String>>, message: String) {
    if let Ok(mut failures) = failures.lock()
        && failures.len() < 5
        && !failures.contains(&message)
    {
        failures.push(message);
    }
}

/// The storm's figures in one worker.
struct Storm {
    counts: Counts,
    hists: [Histogram<u64>; 3],
    /// (ms after the storm began, connect → caught up µs) of every `stride`-th client.
    points: Vec<(u32, u32)>,
}

/// What a worker's client tasks share.
struct Shared {
    dial: Dial,
    logins: Logins,
    /// Clients that reset their link after `cut`.
    cut_done: AtomicU32,
    /// Clients whose storm ended (back or failed).
    storm_ended: AtomicU32,
    storm_back: AtomicU32,
    storm: Mutex<Storm>,
    /// MSG pushes after a client was caught up.
    late: AtomicU64,
    failures: Mutex<Vec<String>>,
    expected: u64,
    stride: u32,
}

/// Runs one worker: logs its clients in, cuts their links on `cut`, reconnects them all on
/// `storm`, reports on stdout, and when stdin closes (or the deadline passes) exits the
/// process.
///
/// # Errors
/// Never in practice: failures are counted and reported on stdout.
pub async fn run_worker(args: ReconnectStormWorkerArgs) -> anyhow::Result<()> {
    let w = &args.worker;
    let stop = CancellationToken::new();
    let cut = CancellationToken::new();
    let (storm_tx, storm_rx) = watch::channel::<Option<Instant>>(None);
    {
        // Commands from the parent; EOF (the parent is gone or done) stops everything.
        let (stop, cut) = (stop.clone(), cut.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match line.trim() {
                    "cut" => cut.cancel(),
                    "storm" => {
                        storm_tx.send_if_modified(|t0| {
                            let first = t0.is_none();
                            t0.get_or_insert_with(Instant::now);
                            first
                        });
                    }
                    "stop" => break,
                    _ => {}
                }
            }
            stop.cancel();
        });
    }
    workers::cancel_after(&stop, w.deadline_secs);
    let shared = Arc::new(Shared {
        dial: Dial {
            server: w.server,
            source: w.source.map(|ip| SourcePorts::new(ip, w.first_port)),
            minter: Minter::new(w.appcode, &w.token_secret),
            step_timeout: Duration::from_secs(w.login_timeout_secs.max(1)),
            resume: !args.no_resume,
        },
        logins: Logins::default(),
        cut_done: AtomicU32::new(0),
        storm_ended: AtomicU32::new(0),
        storm_back: AtomicU32::new(0),
        storm: Mutex::new(Storm {
            counts: Counts::default(),
            hists: [histogram(), histogram(), histogram()],
            points: Vec::new(),
        }),
        late: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
        expected: u64::from(args.messages),
        stride: w.count.div_ceil(MAX_POINTS as u32).max(1),
    });
    let tracker = TaskTracker::new();
    let login_permits = Arc::new(Semaphore::new(w.concurrency.max(1) as usize));
    let storm_permits =
        (args.in_flight > 0).then(|| Arc::new(Semaphore::new(args.in_flight as usize)));
    let storm_timeout = Duration::from_secs(args.storm_timeout_secs.max(1));
    let started = Instant::now();
    {
        let (shared, tracker, stop, cut) =
            (shared.clone(), tracker.clone(), stop.clone(), cut.clone());
        let (first, count, prefix) = (w.first, w.count, w.uid_prefix.clone());
        let login_until = started + Duration::from_secs(w.deadline_secs);
        tokio::spawn(async move {
            for (index, i) in (first..first.saturating_add(count)).enumerate() {
                let permit = tokio::select! {
                    permit = login_permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    _ = stop.cancelled() => break,
                };
                let client = Client {
                    shared: shared.clone(),
                    stop: stop.clone(),
                    cut: cut.clone(),
                    storm: storm_rx.clone(),
                    storm_permits: storm_permits.clone(),
                    storm_timeout,
                    sampled: u32::try_from(index).unwrap_or(u32::MAX) % shared.stride == 0,
                };
                let uid = format!("{prefix}{i}");
                tracker.spawn(async move {
                    let login = tokio::select! {
                        login = client.first_login(uid, login_until, started) => login,
                        _ = client.stop.cancelled() => return,
                    };
                    drop(permit);
                    if let Some((conn, identity)) = login {
                        client.life(conn, identity).await;
                    }
                });
            }
        });
    }

    // Report until told to stop.
    let mut reporter = Reporter::new(w.count);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(REPORT_INTERVAL) => {}
        }
        let lines = reporter.lines(&shared, cut.is_cancelled(), started);
        if !lines.is_empty() && !workers::emit(&lines) {
            stop.cancel();
        }
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
    let l = &shared.logins;
    workers::emit(&[
        format!("late {}", shared.late.load(Ordering::Relaxed)),
        format!(
            "done {} {} {}",
            l.ok.load(Ordering::Relaxed),
            l.failed.load(Ordering::Relaxed),
            l.dropped.load(Ordering::Relaxed)
        ),
    ]);
    // The stdin reader may still sit in a blocking read that would hold up the runtime's
    // shutdown: leave at once.
    std::process::exit(0)
}

/// One client of a worker, through its whole run.
struct Client {
    shared: Arc<Shared>,
    stop: CancellationToken,
    cut: CancellationToken,
    storm: watch::Receiver<Option<Instant>>,
    storm_permits: Option<Arc<Semaphore>>,
    storm_timeout: Duration,
    /// Whether this client's latency is a point of the plot.
    sampled: bool,
}

impl Client {
    async fn first_login(
        &self,
        uid: String,
        until: Instant,
        started: Instant,
    ) -> Option<(storm_client::Conn, Identity)> {
        let mut identity = Identity {
            uid,
            ..Identity::default()
        };
        let result = storm_client::first_login(&self.shared.dial, &mut identity, until).await;
        let logins = &self.shared.logins;
        logins
            .last_done_micros
            .fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match result {
            Ok((conn, throttled)) => {
                logins.throttled.fetch_add(throttled, Ordering::Relaxed);
                logins.ok.fetch_add(1, Ordering::Relaxed);
                Some((conn, identity))
            }
            Err(message) => {
                logins.fail(message);
                None
            }
        }
    }

    /// Holds the link until `cut`, resets it, waits for the storm, comes back, then holds the
    /// new link until `stop`.
    async fn life(mut self, mut conn: storm_client::Conn, mut identity: Identity) {
        let mut inbox = Inbox::default();
        let held = conn.hold(&mut inbox, &self.cut, identity.keepalive).await;
        if held.is_err() {
            self.shared.logins.dropped.fetch_add(1, Ordering::Relaxed);
        }
        conn.reset();
        self.shared.cut_done.fetch_add(1, Ordering::Relaxed);
        if self.stop.is_cancelled() {
            return;
        }
        let t0 = tokio::select! {
            t0 = self.storm.wait_for(Option::is_some) => match t0 {
                Ok(t0) => (*t0).unwrap_or_else(Instant::now),
                Err(_) => return,
            },
            _ = self.stop.cancelled() => return,
        };
        let permit = match &self.storm_permits {
            Some(permits) => tokio::select! {
                permit = permits.clone().acquire_owned() => permit.ok(),
                _ = self.stop.cancelled() => return,
            },
            None => None,
        };
        let until = t0 + self.storm_timeout;
        let start = Instant::now();
        let mut back = Back::default();
        let result = tokio::select! {
            result = storm_client::reconnect(&self.shared.dial, &mut identity, &mut inbox, &mut back, until) => result,
            _ = tokio::time::sleep_until(until) => Err("not back before the storm's timeout".to_owned()),
            _ = self.stop.cancelled() => Err("stopped".to_owned()),
        };
        drop(permit);
        self.record(&result, &back, &inbox, t0, start);
        let Ok(mut conn) = result else {
            return;
        };
        let pushed_before = inbox.pushed;
        let _ = conn.hold(&mut inbox, &self.stop, identity.keepalive).await;
        self.shared
            .late
            .fetch_add(inbox.pushed - pushed_before, Ordering::Relaxed);
        conn.reset();
    }

    fn record(
        &mut self,
        result: &Result<storm_client::Conn, String>,
        back: &Back,
        inbox: &Inbox,
        t0: Instant,
        start: Instant,
    ) {
        let shared = &self.shared;
        let ok = result.is_ok();
        if let Err(message) = result {
            note_failure(&shared.failures, message.clone());
        }
        if let Ok(mut guard) = shared.storm.lock() {
            let storm = &mut *guard;
            let c = &mut storm.counts;
            c.clients += 1;
            c.back += u64::from(ok);
            c.failed += u64::from(!ok);
            c.resumed += u64::from(ok && back.resumed);
            c.gap_free += u64::from(ok && back.resumed && back.gap_free);
            c.resume_rejected += u64::from(back.rejected);
            c.logins += u64::from(back.logins);
            c.rate_limited += u64::from(back.rate_limited);
            c.rate_limited_clients += u64::from(back.rate_limited > 0);
            c.connects += u64::from(back.connects);
            c.pull_requests += u64::from(back.pulls);
            c.carried += inbox.carried;
            c.redelivered += inbox.pushed;
            c.pulled += inbox.pulled;
            c.distinct += inbox.distinct();
            c.duplicates += inbox.duplicates;
            c.acked += inbox.acked;
            if ok {
                c.missing += shared.expected.saturating_sub(inbox.distinct());
            }
            if let (true, Some(session_at), Some(caught_up_at)) =
                (ok, back.session_at, back.caught_up_at)
            {
                let us = |from: Instant, to: Instant| {
                    u64::try_from(to.saturating_duration_since(from).as_micros())
                        .unwrap_or(u64::MAX)
                        .max(1)
                };
                c.max_back_us = c.max_back_us.max(us(t0, session_at));
                c.max_caught_up_us = c.max_caught_up_us.max(us(t0, caught_up_at));
                let caught = us(start, caught_up_at);
                storm.hists[0].saturating_record(us(start, session_at));
                storm.hists[1].saturating_record(caught);
                storm.hists[2].saturating_record(us(t0, caught_up_at));
                if self.sampled {
                    let at_ms = caught_up_at.saturating_duration_since(t0).as_millis();
                    storm.points.push((
                        u32::try_from(at_ms).unwrap_or(u32::MAX),
                        u32::try_from(caught).unwrap_or(u32::MAX),
                    ));
                }
            }
        }
        if ok {
            shared.storm_back.fetch_add(1, Ordering::Relaxed);
        }
        shared.storm_ended.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a worker already reported.
struct Reporter {
    count: u32,
    logins: (u32, u32, u32),
    failures: usize,
    storm_failures: usize,
    ready: bool,
    cut: bool,
    progress: (u32, u32),
    storm_done: bool,
}

impl Reporter {
    fn new(count: u32) -> Self {
        Reporter {
            count,
            logins: (u32::MAX, u32::MAX, 0),
            failures: 0,
            storm_failures: 0,
            ready: false,
            cut: false,
            progress: (0, 0),
            storm_done: false,
        }
    }

    /// The status lines of what changed since the last call.
    fn lines(&mut self, shared: &Shared, cut: bool, started: Instant) -> Vec<String> {
        let mut lines = Vec::new();
        let l = &shared.logins;
        let (ok, failed, dropped) = (
            l.ok.load(Ordering::Relaxed),
            l.failed.load(Ordering::Relaxed),
            l.dropped.load(Ordering::Relaxed),
        );
        for (failures, reported) in [
            (&l.failures, &mut self.failures),
            (&shared.failures, &mut self.storm_failures),
        ] {
            if let Ok(failures) = failures.lock() {
                for failure in failures.iter().skip(*reported) {
                    lines.push(format!("failure {}", failure.replace('\n', " ")));
                }
                *reported = failures.len();
            }
        }
        if (ok, failed) != (self.logins.0, self.logins.1) {
            lines.push(format!("progress {ok} {failed}"));
        }
        if !self.ready && ok + failed >= self.count {
            let micros = l.last_done_micros.load(Ordering::Relaxed);
            // Before `ready`: the parent reads it once the logins are done.
            lines.push(format!(
                "first-throttled {}",
                l.throttled.load(Ordering::Relaxed)
            ));
            lines.push(format!("ready {ok} {failed} {micros}"));
            self.ready = true;
        }
        if dropped != self.logins.2 {
            lines.push(format!("dropped {dropped}"));
        }
        self.logins = (ok, failed, dropped);
        if self.ready && cut && !self.cut && shared.cut_done.load(Ordering::Relaxed) >= ok {
            lines.push(format!("cut {ok} {}", started.elapsed().as_micros()));
            self.cut = true;
        }
        let progress = (
            shared.storm_back.load(Ordering::Relaxed),
            shared.storm_ended.load(Ordering::Relaxed),
        );
        if progress != self.progress {
            let (back, ended) = progress;
            lines.push(format!("storm-progress {back} {}", ended - back.min(ended)));
            self.progress = progress;
        }
        if self.cut && !self.storm_done && progress.1 >= ok {
            self.storm_done = true;
            if let Ok(storm) = shared.storm.lock() {
                for ((name, _), hist) in HISTOGRAMS.iter().zip(&storm.hists) {
                    let mut bytes = Vec::new();
                    if V2Serializer::new().serialize(hist, &mut bytes).is_ok() {
                        lines.push(format!(
                            "storm-hist {name} {}",
                            base64::engine::general_purpose::STANDARD.encode(&bytes)
                        ));
                    }
                }
                for chunk in storm.points.chunks(500) {
                    let pairs: Vec<String> =
                        chunk.iter().map(|(t, l)| format!("{t}:{l}")).collect();
                    lines.push(format!("storm-points {}", pairs.join(" ")));
                }
                lines.push(storm.counts.to_line());
            }
        }
        lines
    }
}

// ---------------------------------------------------------------------------------------------
// The parent's side.

/// Runs the scenario: prints the figures, writes `--json` and `--plot`, and fails (one line)
/// when the run is not valid: too many failed logins or reconnects, a worker that crashed,
/// the deadline.
///
/// Must run inside the `longlink` binary: the server and the workers are started as
/// subcommands of [`std::env::current_exe`].
///
/// # Errors
/// Bad arguments, a server that does not start or answer, too many failures, the deadline.
pub async fn run(args: ReconnectStormArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.per_worker == 0 || args.login_concurrency == 0 {
        bail!("--clients, --per-worker and --login-concurrency must be at least 1");
    }
    if args.hold_secs == 0 && !args.no_resume {
        bail!("--hold-secs 0 means no RESUME: use --no-resume");
    }
    if let Some(path) = &args.plot {
        plot::check_path(path)?;
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.deadline_secs);
    let exe = std::env::current_exe().context("cannot find the longlink executable")?;
    let overrides = overrides(&args);
    let target = args
        .target
        .resolve_with(
            &exe,
            args.appcode,
            &args.server_log,
            &overrides,
            deadline,
            || {
                args.token_secret
                    .clone()
                    .map_or_else(|| dev_secret(129), Ok)
            },
        )
        .await?;
    let outcome = tokio::time::timeout_at(
        deadline,
        measure(&args, &exe, &target, &overrides, deadline),
    )
    .await;
    let report = target
        .end_run(
            outcome,
            |report: &Report| report.problem.is_none(),
            args.deadline_secs,
            "workers",
        )
        .await?;
    report.print();
    if let Some(path) = &args.json {
        crate::report::write_json(path, &report.json)?;
    }
    if let Some(path) = &args.plot {
        plot::write(path, &report.plot)?;
    }
    if let Some(problem) = &report.problem {
        bail!("{problem}");
    }
    Ok(())
}

/// The spawned server's settings this run needs.
fn overrides(args: &ReconnectStormArgs) -> Vec<ConfigOverride> {
    let int = |n: u64| toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
    let mut overrides = vec![("gate", "hold_secs", int(args.hold_secs))];
    if let Some(rate) = args.login_rate_per_sec {
        overrides.push(("gate", "login_rate_per_sec", int(u64::from(rate))));
    }
    if let Some(burst) = args.login_burst {
        overrides.push(("gate", "login_burst", int(u64::from(burst))));
    }
    overrides
}

struct Report {
    json: StormJson,
    plot: plot::LatencyPlot,
    problem: Option<String>,
}

#[derive(Debug, Serialize)]
struct StormJson {
    #[serde(flatten)]
    run: RunStamp,
    inputs: Inputs,
    server: ServerInfo,
    machine: Machine,
    results: Results,
    notes: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Inputs {
    clients: u32,
    messages_per_client: u32,
    resume: bool,
    in_flight: u32,
    login_concurrency: u32,
    workers: u32,
    per_worker: u32,
    appcode: u32,
    settle_ms: u64,
    storm_timeout_secs: u64,
}

#[derive(Debug, Serialize)]
struct ServerInfo {
    #[serde(flatten)]
    identity: ServerIdentity,
    log_level: Option<String>,
    /// `[gate]` settings the bench set on a spawned server.
    config_overrides: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct Results {
    first_logins: FirstLogins,
    cut: CutFigures,
    pushes: PushFigures,
    storm: StormFigures,
}

#[derive(Debug, Serialize)]
struct FirstLogins {
    logged_in: u32,
    failed: u32,
    /// RATE_LIMITED answers (each retried after its retry_after_ms).
    rate_limited: u64,
    failure_samples: Vec<String>,
    wall_secs: f64,
    server_cpu_secs: f64,
    logins_per_server_cpu_sec: f64,
}

#[derive(Debug, Serialize)]
struct CutFigures {
    clients: u32,
    /// Cut → the server counted every session held (resume) or gone (`--no-resume`).
    noticed_secs: Option<f64>,
    held_sessions: Option<f64>,
}

#[derive(Debug, Serialize)]
struct PushFigures {
    pushes: u32,
    stats: PushStats,
    secs: f64,
    quiet_after_secs: f64,
}

#[derive(Debug, Serialize)]
struct StormFigures {
    #[serde(flatten)]
    counts: Counts,
    messages_expected: u64,
    /// Storm start → the last client back (session) and caught up, seconds.
    all_back_secs: f64,
    all_caught_up_secs: f64,
    /// Storm start → the parent saw every worker done.
    parent_wall_secs: f64,
    session_ms: Latency,
    caught_up_ms: Latency,
    from_storm_ms: Latency,
    /// The CPU window: storm start → all back + settle.
    window_secs: f64,
    server_cpu_secs: f64,
    server_threads_secs: BTreeMap<String, f64>,
    server_cpu_us_per_reconnect: f64,
    reconnects_per_server_cpu_sec: f64,
    client_cpu_secs: f64,
    listen_overflows: Option<u64>,
    /// Deltas of the server's own counters (`/metrics`) over the storm.
    server_counters: BTreeMap<String, f64>,
    late_pushes: u64,
    percentiles: BTreeMap<String, Vec<(f64, f64)>>,
}

impl Report {
    fn print(&self) {
        let j = &self.json;
        let r = &j.results;
        let s = &r.storm;
        let c = &s.counts;
        println!(
            "first logins {} of {} ({} failed, {} RATE_LIMITED answers) in {:.2} s; {} logins per server CPU-second",
            thousands(u64::from(r.first_logins.logged_in)),
            thousands(u64::from(j.inputs.clients)),
            r.first_logins.failed,
            thousands(r.first_logins.rate_limited),
            r.first_logins.wall_secs,
            thousands(r.first_logins.logins_per_server_cpu_sec as u64)
        );
        println!(
            "cut          {} links reset at once; the server noticed {}",
            thousands(u64::from(r.cut.clients)),
            r.cut
                .noticed_secs
                .map_or_else(|| "(not seen)".to_owned(), |s| format!("within {s:.2} s"))
        );
        if r.pushes.pushes > 0 {
            println!(
                "missed       {} push(es) to every client while down: {} targets, {} stored offline, {} online, {} failed ({:.2} s)",
                r.pushes.pushes,
                thousands(r.pushes.stats.targets),
                thousands(r.pushes.stats.stored_offline),
                r.pushes.stats.online,
                r.pushes.stats.failed,
                r.pushes.secs
            );
        }
        println!(
            "storm        {} of {} back ({} failed) by {}: all back after {:.3} s, all caught up after {:.3} s",
            thousands(c.back),
            thousands(c.clients),
            c.failed,
            if j.inputs.resume { "RESUME" } else { "LOGIN" },
            s.all_back_secs,
            s.all_caught_up_secs
        );
        for sample in &self.json.notes {
            println!("note: {sample}");
        }
        s.session_ms.print_line("session");
        s.caught_up_ms.print_line("caught up");
        s.from_storm_ms.print_line("from storm");
        println!(
            "             resumed {} (gap_free {}), RESUME_REJECTED {}, LOGINs {}, RATE_LIMITED {} (to {} clients), connects {}",
            thousands(c.resumed),
            thousands(c.gap_free),
            c.resume_rejected,
            thousands(c.logins),
            thousands(c.rate_limited),
            thousands(c.rate_limited_clients),
            thousands(c.connects)
        );
        println!(
            "messages     {} expected: {} distinct ({} missing); copies: {} in RESUME responses, {} redelivered (MSG pushes), {} pulled ({} OFFLINE_PULLs), {} duplicates; {} acked",
            thousands(s.messages_expected),
            thousands(c.distinct),
            c.missing,
            thousands(c.carried),
            thousands(c.redelivered),
            thousands(c.pulled),
            thousands(c.pull_requests),
            thousands(c.duplicates),
            thousands(c.acked)
        );
        println!(
            "server CPU   {:.3} s over {:.2} s ({}): {:.1} µs per reconnect, {} reconnects per server CPU-second",
            s.server_cpu_secs,
            s.window_secs,
            by_thread(&s.server_threads_secs),
            s.server_cpu_us_per_reconnect,
            thousands(s.reconnects_per_server_cpu_sec as u64)
        );
        println!(
            "client CPU   {:.3} s (load generator, not the server)",
            s.client_cpu_secs
        );
    }
}

/// Sums the samples of metric `name` (every label set) in a Prometheus text exposition.
fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // `name{labels} value` or `name value`, not `name_longer …`.
        let value = if let Some(labels) = rest.strip_prefix('{') {
            labels.split_once('}').map(|(_, value)| value)
        } else {
            rest.starts_with(' ').then_some(rest)
        };
        if let Some(value) = value.and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// The server counters the storm reads before and after.
const COUNTERS: [&str; 5] = [
    "longlink_gate_resumes_total",
    "longlink_gate_resumes_rejected_total",
    "longlink_gate_logins_total",
    "longlink_gate_logins_throttled_total",
    "longlink_gate_held_sessions",
];

async fn scrape(target: &Target) -> Option<String> {
    let api = target.api?;
    match http::get(api, "/metrics", Duration::from_secs(5)).await {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// Waits until `pred` holds for every worker's tally (at most until `until`).
async fn wait_all(
    workers: &mut Workers<StormTally>,
    until: Instant,
    what: &str,
    mut on_event: impl FnMut(&Workers<StormTally>),
    pred: impl Fn(&StormTally) -> bool,
) -> anyhow::Result<()> {
    while !workers.tallies().all(&pred) {
        if let Some((i, said)) = workers.exited().next() {
            bail!(
                "worker {i} exited before {what}: {}",
                if said.is_empty() {
                    "(nothing on stderr)"
                } else {
                    said
                }
            );
        }
        match tokio::time::timeout_at(until, workers.next()).await {
            Ok(true) => on_event(workers),
            Ok(false) => bail!("every worker exited before {what}"),
            Err(_) => bail!("the workers did not report {what} in time"),
        }
    }
    Ok(())
}

/// Polls until the server noticed the cut: `held` sessions held (resume), or `/healthz` back
/// at `sessions_before` (no resume). Returns the seconds it took and the held count seen.
async fn wait_noticed(
    target: &Target,
    resume: bool,
    held: u32,
    sessions_before: Option<u64>,
) -> (Option<f64>, Option<f64>) {
    let start = Instant::now();
    let mut last_held = None;
    while start.elapsed() < NOTICE_TIMEOUT {
        let noticed = if resume {
            last_held = scrape(target)
                .await
                .and_then(|text| metric_sum(&text, "longlink_gate_held_sessions"));
            last_held.is_some_and(|h| h >= f64::from(held))
        } else {
            match (target.health().await, sessions_before) {
                (Some(health), Some(before)) => health.sessions <= before,
                _ => false,
            }
        };
        if noticed {
            return (Some(round(start.elapsed().as_secs_f64(), 3)), last_held);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (None, last_held)
}

/// Sends `pushes` persisted pushes to every uid and waits until each is done.
async fn push_missed(
    api: &Api,
    appcode: u32,
    uids: &[String],
    pushes: u32,
    tag: u64,
) -> anyhow::Result<PushStats> {
    let until = Instant::now() + PUSH_TIMEOUT;
    let mut ids = Vec::new();
    for k in 0..pushes {
        let content = format!("llrs {tag} {k}");
        for batch in uids.chunks(PUSH_BATCH) {
            let body = PushBody {
                appcode,
                uids: Some(batch),
                all: None,
                msgtype: 0,
                content: &content,
                persist: true,
                from: "bench",
            };
            loop {
                let answer = tokio::time::timeout_at(until, api.push(&body))
                    .await
                    .map_err(|_| anyhow!("POST /v1/push: no answer in time"))??;
                match answer {
                    PushAnswer::Accepted { push_id, .. } => {
                        ids.push(push_id);
                        break;
                    }
                    // Overloaded: the API asks to come back later.
                    PushAnswer::Refused { status: 503, .. } if Instant::now() < until => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    PushAnswer::Refused { status, code } => {
                        bail!("POST /v1/push refused: {status} {code}")
                    }
                }
            }
        }
    }
    let mut total = PushStats::default();
    for id in ids {
        loop {
            let stats = api.push_stats(id).await?;
            if stats.done {
                total.add(&stats);
                break;
            }
            if Instant::now() >= until {
                bail!("push {id} not done within {}s", PUSH_TIMEOUT.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(total)
}

/// Waits until the server is quiet (less than [`QUIET_SHARE`] of a core over a sample), at
/// most [`QUIET_MAX`]; returns the seconds waited.
pub(crate) async fn wait_quiet(pid: u32) -> f64 {
    let start = Instant::now();
    while start.elapsed() < QUIET_MAX {
        let Ok(before) = procfs::cpu_time(pid) else {
            break;
        };
        tokio::time::sleep(QUIET_SAMPLE).await;
        let Ok(after) = procfs::cpu_time(pid) else {
            break;
        };
        if after.saturating_sub(before).as_secs_f64() < QUIET_SHARE * QUIET_SAMPLE.as_secs_f64() {
            break;
        }
    }
    round(start.elapsed().as_secs_f64(), 2)
}

async fn measure(
    args: &ReconnectStormArgs,
    exe: &Path,
    target: &Target,
    overrides: &[ConfigOverride],
    deadline: Instant,
) -> anyhow::Result<Report> {
    let n = args.clients;
    let pid = target.pid;
    let resume = !args.no_resume;
    let workers_count = workers::count(n, args.per_worker);
    let mut notes = Vec::new();
    let version = target.version().await;
    if let Ok((limit, open)) = procfs::open_files(pid) {
        // Margin: the API's connections, the store's files, a client reconnecting before the
        // server closed its old socket.
        let fits = limit.saturating_sub(open).saturating_sub(100);
        if u64::from(n) > fits {
            bail!(
                "--clients {n}: one server process here may open {limit} files and has {open} open, so it holds at most ~{fits} clients; a bigger storm needs several gate processes (not this scenario)"
            );
        }
    }
    let api = match target.api {
        Some(addr) => Some(Api::new(addr, &args.api_key)?),
        None if args.messages > 0 => bail!("--messages needs the server's HTTP API (--api)"),
        None => None,
    };
    if !target.is_spawned() {
        notes.push(
            "the server was already running: --hold-secs and the login rate flags were not applied"
                .to_owned(),
        );
    }
    let tag = longlink_proto::unix_ms();
    let uid_prefix = format!("bench-rs-{tag}-");
    println!(
        "longlink bench reconnect-storm: {} clients over {workers_count} worker process(es), {} missed message(s) each, back by {}, {} reconnects in flight",
        thousands(u64::from(n)),
        args.messages,
        if resume {
            "RESUME"
        } else {
            "LOGIN + OFFLINE_PULL (--no-resume)"
        },
        if args.in_flight == 0 {
            "all".to_owned()
        } else {
            thousands(u64::from(args.in_flight))
        }
    );
    println!("{}", target.describe(&version));
    let sessions_before = target.health().await.map(|h| h.sessions);

    // First logins.
    let in_flight_per_worker = if args.in_flight == 0 {
        0
    } else {
        args.in_flight.div_ceil(workers_count).max(1)
    };
    let mut own_args = vec![
        "--in-flight".to_owned(),
        in_flight_per_worker.to_string(),
        "--storm-timeout-secs".to_owned(),
        args.storm_timeout_secs.to_string(),
        "--messages".to_owned(),
        args.messages.to_string(),
    ];
    if !resume {
        own_args.push("--no-resume".to_owned());
    }
    let login_window = Window::open(pid, Instant::now(), Duration::ZERO)?;
    let mut workers: Workers<StormTally> = Workers::spawn(
        &WorkerSpec {
            exe,
            gate: target.gate,
            transport: crate::link::Transport::Tcp,
            secret: &target.secret,
            appcode: args.appcode,
            uid_prefix: &uid_prefix,
            connections: n,
            per_worker: args.per_worker,
            concurrency: args.login_concurrency,
            login_timeout_secs: args.login_timeout_secs,
            deadline,
        },
        "reconnect-storm-worker",
        &own_args,
        parse_line,
    )?;
    let outcome = storm(
        args,
        target,
        api.as_ref(),
        &mut workers,
        login_window,
        sessions_before,
        &uid_prefix,
        tag,
        &mut notes,
    )
    .await;
    workers.stop().await;
    let (mut report, storm_problem) = match outcome {
        Ok(figures) => figures,
        Err(err) => return Err(err),
    };
    let late: u64 = workers.tallies().filter_map(|t| t.late).sum();
    report.storm.late_pushes = late;
    if late > 0 {
        notes.push(format!(
            "{late} MSG push(es) reached clients after they were caught up (not in the counts above)"
        ));
    }
    notes.extend(target.log_level_note().map(|note| {
        format!("{note} (one line per login and resume at info); its CPU figures include that")
    }));
    let problem = storm_problem.or_else(|| {
        let allowed = f64::from(n) * args.max_failed_pct / 100.0;
        let first = &report.first_logins;
        if f64::from(first.failed) > allowed {
            Some(format!(
                "{} of {n} first logins failed (more than --max-failed-pct {}%)",
                first.failed, args.max_failed_pct
            ))
        } else if report.storm.counts.failed as f64 > allowed {
            Some(format!(
                "{} of {} clients did not come back (more than --max-failed-pct {}%)",
                report.storm.counts.failed, report.storm.counts.clients, args.max_failed_pct
            ))
        } else {
            None
        }
    });
    let plot = plot_of(
        args,
        &report,
        workers.tallies().flat_map(|t| t.points.iter().copied()),
    );
    let json = StormJson {
        run: RunStamp::now("reconnect-storm"),
        inputs: Inputs {
            clients: n,
            messages_per_client: args.messages,
            resume,
            in_flight: args.in_flight,
            login_concurrency: args.login_concurrency,
            workers: workers_count,
            per_worker: args.per_worker,
            appcode: args.appcode,
            settle_ms: args.settle_ms,
            storm_timeout_secs: args.storm_timeout_secs,
        },
        server: ServerInfo {
            identity: target.identity(version),
            log_level: target.log_level(),
            config_overrides: if target.is_spawned() {
                overrides
                    .iter()
                    .map(|(section, field, value)| {
                        (format!("{section}.{field}"), value.to_string())
                    })
                    .collect()
            } else {
                BTreeMap::new()
            },
        },
        machine: Machine::now(Some(report.loadavg_before.clone())),
        results: Results {
            first_logins: report.first_logins,
            cut: report.cut,
            pushes: report.pushes,
            storm: report.storm,
        },
        notes,
    };
    Ok(Report {
        json,
        plot,
        problem,
    })
}

/// The figures of the phases, before the JSON is put together.
struct Phases {
    first_logins: FirstLogins,
    cut: CutFigures,
    pushes: PushFigures,
    storm: StormFigures,
    loadavg_before: String,
}

/// First logins → cut → missed pushes → storm. Returns the figures and, when the run is not
/// valid, why.
#[allow(clippy::too_many_arguments)]
async fn storm(
    args: &ReconnectStormArgs,
    target: &Target,
    api: Option<&Api>,
    workers: &mut Workers<StormTally>,
    login_window: Window,
    sessions_before: Option<u64>,
    uid_prefix: &str,
    tag: u64,
    notes: &mut Vec<String>,
) -> anyhow::Result<(Phases, Option<String>)> {
    let n = args.clients;
    let pid = target.pid;
    let resume = !args.no_resume;
    let bar = workers::login_bar(n);
    if let Err(crash) = workers.wait_logged_in(&bar).await {
        bar.abandon();
        return Err(crash);
    }
    bar.finish_and_clear();
    let login_usage = login_window.close(pid, Duration::ZERO)?;
    let login_wall = workers
        .login_wall()
        .unwrap_or_else(|| Duration::from_secs_f64(login_usage.secs));
    let logged_in = workers.logged_in();
    let first_logins = FirstLogins {
        logged_in,
        failed: workers.failed(),
        rate_limited: workers.tallies().map(|t| t.throttled).sum(),
        failure_samples: workers.failure_samples(),
        wall_secs: round(login_wall.as_secs_f64(), 3),
        server_cpu_secs: round(login_usage.server_cpu.as_secs_f64(), 3),
        logins_per_server_cpu_sec: round(
            per(u64::from(logged_in), login_usage.server_cpu.as_secs_f64()),
            0,
        ),
    };
    if logged_in == 0 {
        bail!(
            "no client logged in{}",
            workers
                .failure_samples()
                .first()
                .map(|f| format!(": {f}"))
                .unwrap_or_default()
        );
    }
    println!(
        "logged in    {} clients in {:.2} s; cutting every link at once",
        thousands(u64::from(logged_in)),
        login_wall.as_secs_f64()
    );

    // Cut.
    workers.tell("cut").await?;
    wait_all(
        workers,
        Instant::now() + CUT_TIMEOUT,
        "cutting their links",
        |_| {},
        |t| t.cut.is_some(),
    )
    .await?;
    let cut_clients: u32 = workers.tallies().filter_map(|t| t.cut.map(|c| c.0)).sum();
    let (noticed_secs, held_sessions) =
        wait_noticed(target, resume, cut_clients, sessions_before).await;
    if noticed_secs.is_none() {
        notes.push(format!(
            "the server did not count every cut session {} within {} s (held: {})",
            if resume { "held" } else { "gone" },
            NOTICE_TIMEOUT.as_secs(),
            held_sessions.map_or_else(|| "unknown".to_owned(), |h| h.to_string())
        ));
    }
    let cut = CutFigures {
        clients: cut_clients,
        noticed_secs,
        held_sessions,
    };

    // Missed messages.
    let push_start = Instant::now();
    let stats = match api {
        Some(api) if args.messages > 0 => {
            let uids: Vec<String> = (0..n).map(|i| format!("{uid_prefix}{i}")).collect();
            println!(
                "pushing      {} persisted message(s) to each of {} offline clients",
                args.messages,
                thousands(u64::from(n))
            );
            push_missed(api, args.appcode, &uids, args.messages, tag).await?
        }
        _ => PushStats::default(),
    };
    let push_secs = push_start.elapsed().as_secs_f64();
    let quiet_after_secs = wait_quiet(pid).await;
    let pushes = PushFigures {
        pushes: args.messages,
        stats,
        secs: round(push_secs, 3),
        quiet_after_secs,
    };

    // The storm.
    let loadavg_before = procfs::loadavg();
    let counters_before = scrape(target).await;
    let overflows_before = procfs::listen_overflows();
    let t0 = Instant::now();
    let window = Window::open(pid, t0, load_generator_cpu(workers))?;
    workers.tell("storm").await?;
    let bar = crate::report::progress_bar(u64::from(logged_in), "back, {per_sec} {msg}");
    let until = t0 + Duration::from_secs(args.storm_timeout_secs) + Duration::from_secs(15);
    let waited = wait_all(
        workers,
        until,
        "the storm's end",
        |w| {
            let (back, failed) = w.tallies().fold((0u64, 0u64), |(b, f), t| {
                (b + u64::from(t.progress.0), f + u64::from(t.progress.1))
            });
            bar.set_position(back);
            if failed > 0 {
                bar.set_message(format!("({failed} failed)"));
            }
        },
        |t| t.done.is_some(),
    )
    .await;
    let parent_wall = t0.elapsed();
    bar.finish_and_clear();
    let storm_problem = waited.err().map(|err| format!("{err:#}"));
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    let usage = window.close(pid, load_generator_cpu(workers))?;
    let listen_overflows = overflows_before
        .zip(procfs::listen_overflows())
        .map(|(before, after)| after.saturating_sub(before));
    let counters_after = scrape(target).await;
    let mut server_counters = BTreeMap::new();
    if let (Some(before), Some(after)) = (&counters_before, &counters_after) {
        for name in COUNTERS {
            if let (Some(b), Some(a)) = (metric_sum(before, name), metric_sum(after, name)) {
                server_counters.insert(name.to_owned(), a - b);
            }
        }
    }
    if let Some(overflows) = listen_overflows.filter(|n| *n > 0) {
        notes.push(format!(
            "the kernel counted {overflows} listen-queue overflows during the storm: each dropped SYN costs its client a 1 s retransmit"
        ));
    }

    let mut counts = Counts::default();
    let mut hists: Vec<Histogram<u64>> = HISTOGRAMS.iter().map(|_| histogram()).collect();
    for tally in workers.tallies() {
        if let Some(done) = &tally.done {
            counts.add(done);
        }
        for ((name, _), hist) in HISTOGRAMS.iter().zip(hists.iter_mut()) {
            if let Some(theirs) = tally.hists.get(*name) {
                let _ = hist.add(theirs);
            }
        }
    }
    let failures = workers.failure_samples();
    if !failures.is_empty() {
        notes.push(format!("failures (first few): {}", failures.join(" | ")));
    }
    if counts.missing > 0 {
        notes.push(format!(
            "{} message(s) did not reach clients that came back",
            counts.missing
        ));
    }
    let server_cpu = usage.server_cpu.as_secs_f64();
    let percentiles = HISTOGRAMS
        .iter()
        .zip(&hists)
        .map(|((name, _), h)| {
            (
                (*name).to_owned(),
                latency::percentiles(&latency::distribution(h)),
            )
        })
        .collect();
    let storm = StormFigures {
        messages_expected: counts.clients * u64::from(args.messages),
        all_back_secs: round(counts.max_back_us as f64 / 1e6, 3),
        all_caught_up_secs: round(counts.max_caught_up_us as f64 / 1e6, 3),
        parent_wall_secs: round(parent_wall.as_secs_f64(), 3),
        session_ms: latency::summary(&hists[0]),
        caught_up_ms: latency::summary(&hists[1]),
        from_storm_ms: latency::summary(&hists[2]),
        window_secs: round(usage.secs, 3),
        server_cpu_secs: round(server_cpu, 3),
        server_threads_secs: usage.threads_secs(),
        server_cpu_us_per_reconnect: round(
            if counts.back == 0 {
                0.0
            } else {
                server_cpu * 1e6 / counts.back as f64
            },
            1,
        ),
        reconnects_per_server_cpu_sec: round(per(counts.back, server_cpu), 0),
        client_cpu_secs: round(usage.client_cpu.as_secs_f64(), 3),
        listen_overflows,
        server_counters,
        late_pushes: 0,
        percentiles,
        counts,
    };
    Ok((
        Phases {
            first_logins,
            cut,
            pushes,
            storm,
            loadavg_before,
        },
        storm_problem,
    ))
}

/// CPU time the load generator used so far: the workers and this process.
fn load_generator_cpu(workers: &Workers<StormTally>) -> Duration {
    workers.cpu_time() + procfs::cpu_time(std::process::id()).unwrap_or_default()
}

/// The plot: the three latency distributions above each sampled client's connect → caught up
/// latency against when it was caught up.
fn plot_of(
    args: &ReconnectStormArgs,
    phases: &Phases,
    points: impl Iterator<Item = (u32, u32)>,
) -> plot::LatencyPlot {
    let s = &phases.storm;
    let mut over_time: Vec<(f64, f64)> = points
        .map(|(t_ms, us)| (f64::from(t_ms) / 1000.0, f64::from(us) / 1000.0))
        .collect();
    over_time.sort_by(|a, b| a.0.total_cmp(&b.0));
    let distribution = |name: &str| {
        s.percentiles
            .get(name)
            .map(|p| p.iter().map(|(pct, ms)| (pct / 100.0, *ms)).collect())
            .unwrap_or_default()
    };
    plot::LatencyPlot {
        title: format!(
            "reconnect storm: {} clients back by {}, {} missed message(s) each",
            thousands(s.counts.clients),
            if args.no_resume {
                "LOGIN + pull"
            } else {
                "RESUME"
            },
            args.messages
        ),
        distributions: HISTOGRAMS
            .iter()
            .map(|(name, label)| ((*label).to_owned(), distribution(name)))
            .collect(),
        over_time: vec![("connect → caught up, sampled clients".to_owned(), over_time)],
        target_ms: None,
        target_label: String::new(),
        distribution_caption: "per-client latency distribution".to_owned(),
        over_time_caption: "connect → caught up, by when the client was caught up".to_owned(),
        over_time_x: "seconds after the storm began".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_trip_and_add() {
        let counts = Counts {
            clients: 3,
            back: 2,
            failed: 1,
            carried: 20,
            max_back_us: 7,
            max_caught_up_us: 9,
            ..Counts::default()
        };
        let line = counts.to_line();
        let Some(Line::Done(parsed)) = parse_line(&line) else {
            panic!("{line}");
        };
        assert_eq!(parsed, counts);
        let mut sum = counts;
        sum.add(&Counts {
            clients: 1,
            max_back_us: 3,
            max_caught_up_us: 12,
            ..Counts::default()
        });
        assert_eq!(
            (
                sum.clients,
                sum.carried,
                sum.max_back_us,
                sum.max_caught_up_us
            ),
            (4, 20, 7, 12)
        );
        assert!(Counts::from_words("back=x").is_none());
        assert_eq!(Counts::from_words("unknown=3"), Some(Counts::default()));
    }

    #[test]
    fn worker_lines_parse() {
        assert!(matches!(
            parse_line("cut 10 12345"),
            Some(Line::Cut {
                clients: 10,
                micros: 12345
            })
        ));
        assert!(matches!(
            parse_line("storm-progress 7 1"),
            Some(Line::Progress { back: 7, failed: 1 })
        ));
        assert!(matches!(
            parse_line("storm-points 1:2 3:4 bad"),
            Some(Line::Points(p)) if p == [(1, 2), (3, 4)]
        ));
        assert!(matches!(parse_line("late 5"), Some(Line::Late(5))));
        assert!(parse_line("progress 1 2").is_none(), "a common status line");
        assert!(parse_line("cut x").is_none());
    }

    #[test]
    fn metric_sums() {
        let text = "# HELP x\nlonglink_gate_held_sessions{gate=\"a\"} 3\nlonglink_gate_held_sessions{gate=\"b\"} 4\nlonglink_gate_held_sessions_other 100\nlonglink_gate_logins_total 12\n";
        assert_eq!(metric_sum(text, "longlink_gate_held_sessions"), Some(7.0));
        assert_eq!(metric_sum(text, "longlink_gate_logins_total"), Some(12.0));
        assert_eq!(metric_sum(text, "longlink_gate_resumes_total"), None);
    }
}
