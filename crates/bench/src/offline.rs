//! Scenario `offline`: pull throughput. U users are offline while M messages each are stored
//! for them; then they all log in and drain their inboxes with OFFLINE_PULL in pages of 50
//! (docs/protocol.md §5.10, §7.5). How many messages per second and per server CPU-second the
//! embedded store serves that way (DESIGN.md: "≥ 200k messages/s paged at 50"), the page
//! latency, the time until every inbox is empty — and whether every stored message came out
//! exactly once, in msgid order.
//!
//! 1. The server: by default the bench starts its own (`<exe> serve`, default config on free
//!    loopback ports, a temporary data dir), or measures one already running
//!    (`--server/--server-pid/--api`; the API is needed to store the messages).
//! 2. Fill: M persisted s2c pushes (`POST /v1/push`, `persist: true`), each to all U uids at
//!    once. That is the fastest real way in: one call stores one message with U inbox rows, and
//!    the server's push worker stores the queued pushes of an appcode together (one group
//!    commit). At most `--fill-in-flight` pushes are unfinished at a time; each push's msgid is
//!    read back from `GET /v1/push/{id}` (one msgid per push, shared by its recipients): those
//!    M msgids are every user's expected inbox. Fill rate = inbox rows stored per server
//!    CPU-second (the polls of `GET /v1/push/{id}` included). Then the bench waits for the
//!    server's CPU to go quiet.
//! 3. Logins: worker processes (`<exe> bench offline-worker`, hidden; at most `--per-worker`
//!    clients each, since one process may open 20,000 files here) log the U users in. After
//!    each LOGIN the server pushes up to 200 unacknowledged messages (§6.2, redelivery); the
//!    clients take them in but leave them unacknowledged — as the SDK's catch-up holds pushes
//!    back until its pull has passed them — so the pull reads each whole inbox. The server's
//!    CPU is read over the logins (redelivery included); then the bench waits for quiet again.
//! 4. Pull: on `pull` every client (at most `--in-flight` at once over all workers; 0 = all)
//!    pulls from cursor 0 in pages of `--page-size` until `more = false`, one request in
//!    flight, and acknowledges each page with one MSG_ACK (type 3, as the SDK sends them)
//!    before asking for the next; a RATE_LIMITED page is asked again after its
//!    `retry_after_ms`. Per page: request → page latency (HDR, µs). Per client, every msgid is
//!    checked against the expected inbox: pulled once (else DUPLICATE), ascending (else out of
//!    order), none foreign (unexpected), none missing (LOST). The server's CPU is read from the
//!    pull's start until every inbox is drained plus `--settle-ms` (the last acks).
//! 5. Verify: on `verify` every drained client pulls once more from 0: after its acks its
//!    inbox must be empty ("left after ack"). Any LOST, DUPLICATE, out-of-order, unexpected or
//!    left-over message, or a failed client, fails the run (after the report is written).
//! 6. Workers stop when their stdin closes (and at their own deadline); a spawned server gets
//!    SIGTERM.
//!
//! Worker protocol (one line each on the worker's stdout): the status lines of
//! [`crate::workers`] for the logins (`progress`, `ready`, `failure`, `dropped`, `done`), then
//! `pull-progress <pulled> <ended> <failed>`, at the pull's end `pull-hist <base64 V2
//! histogram>`, `pull-points <t_ms>:<latency_µs> …` (sampled pages), `pull-series <bucket_ms>
//! <count> …` (messages pulled per bucket) and `pull-done <name>=<count> …`, after `verify`
//! `verify-done <clients> <left> <failed>`. The parent tells the workers `pull` and `verify`
//! on their stdin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use clap::Args;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use longlink_proto::{ErrorCode, MAX_PAGE_SIZE};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{Api, DEV_API_KEY, PushAnswer, PushBody, PushStats};
use crate::client::{Minter, SourcePorts};
use crate::counts::CountLine;
use crate::fanout::histogram;
use crate::latency::{self, Latency};
use crate::num::round;
use crate::plot;
use crate::procfs::{self, Window};
use crate::reconnect::wait_quiet;
use crate::report::{Machine, RunStamp, by_thread, per, thousands, verdict};
use crate::server::{ServerIdentity, Target, dev_secret};
use crate::storm_client::{self, Dial, Fail, Identity, Inbox};
use crate::workers::{self, REPORT_INTERVAL, SECRET_ENV, Tally, WorkerArgs, WorkerSpec, Workers};

/// DESIGN.md's target: messages per second, paged at 50 from the embedded store.
const TARGET_PER_SEC: f64 = 200_000.0;
/// The most uids one `POST /v1/push` takes (docs/api.md).
const MAX_PUSH_TARGETS: u32 = 100_000;
/// The default configuration's `[logic] max_content_bytes`.
const MAX_CONTENT_BYTES: u32 = 61_440;
/// Most clients per worker process (one process may open 20,000 files here).
const MAX_PER_WORKER: u32 = 15_000;
/// How long the whole fill may take.
const FILL_TIMEOUT: Duration = Duration::from_secs(600);
/// Between two polls of an unfinished push (each `GET /v1/push/{id}` costs the server too).
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// After a 503 `overloaded` answer, wait this long before the next push.
const OVERLOADED_WAIT: Duration = Duration::from_millis(50);
/// How long the verifying pulls may take.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(60);
/// The parent waits this much past `--pull-timeout-secs` for the workers' reports.
const REPORT_MARGIN: Duration = Duration::from_secs(15);
/// Width of the buckets of the pulled-messages series.
const BUCKET_MS: u64 = 100;
/// Sampled pages per worker in the latency-over-time chart.
const MAX_POINTS: u64 = 2000;
/// Most pages one client asks for (a bound on a server that keeps saying `more`).
const MAX_PAGES_PER_CLIENT: u64 = 1_000_000;
/// Distinct failure messages a worker reports.
const MAX_FAILURES: usize = 5;

/// `longlink bench offline`: U offline users, M stored messages each, all pulled by cursor.
#[derive(Debug, Clone, Args)]
pub struct OfflineArgs {
    /// Users (one connection each when they pull). One server process holds at most ~19,900
    /// here (20,000 open files per process).
    #[arg(long, default_value_t = 1000)]
    pub users: u32,
    /// Messages stored for each user before it logs in (M persisted pushes to all users).
    #[arg(long, default_value_t = 200)]
    pub messages_per_user: u32,
    /// Bytes of each message's content (at most the default `[logic] max_content_bytes`,
    /// 61,440).
    #[arg(long, default_value_t = 100)]
    pub content_bytes: u32,
    /// OFFLINE_PULL page size (1..=500; the protocol's default is 50).
    #[arg(long, default_value_t = longlink_proto::DEFAULT_PAGE_SIZE)]
    pub page_size: u32,
    /// Pushes unfinished at once while filling the inboxes (the server stores the queued ones
    /// together).
    #[arg(long, default_value_t = 64)]
    pub fill_in_flight: u32,
    /// Clients pulling at once, over all workers; 0 = every client at once.
    #[arg(long, default_value_t = 0)]
    pub in_flight: u32,
    /// Logins in flight at once, over all workers.
    #[arg(long, default_value_t = 100)]
    pub login_concurrency: u32,
    /// Most clients per worker process (at most 15,000: one process may open 20,000 files).
    #[arg(long, default_value_t = 10_000)]
    pub per_worker: u32,
    /// The appcode of the users.
    #[arg(long, default_value_t = 129)]
    pub appcode: u32,
    /// The server measured: one started by the bench, or --server/--server-pid/--api (the API
    /// is required: the messages are stored through it).
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
    pub request_timeout_secs: u64,
    /// A client whose inbox is not drained this long after the pull began counts as failed.
    #[arg(long, default_value_t = 300)]
    pub pull_timeout_secs: u64,
    /// The pull's CPU window ends this long after the last inbox is drained (its acks are
    /// processed meanwhile).
    #[arg(long, default_value_t = 500)]
    pub settle_ms: u64,
    /// The whole run is abandoned (workers and spawned server killed) after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub deadline_secs: u64,
    /// LONGLINK_LOG of a spawned server (`info` is `longlink serve`'s default: one line per
    /// login).
    #[arg(long, default_value = "info")]
    pub server_log: String,
    /// Write the inputs and figures as JSON to this file; the plots go next to it
    /// (`<name>-page-latency.svg`, `<name>-pulled.svg`).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `longlink bench offline-worker` (hidden): one worker process of `bench offline`.
#[derive(Debug, Clone, Args)]
pub struct OfflineWorkerArgs {
    /// Where to log in, as whom, how many.
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// OFFLINE_PULL page size.
    #[arg(long, default_value_t = longlink_proto::DEFAULT_PAGE_SIZE)]
    pub page_size: u32,
    /// Clients pulling at once in this worker; 0 = all.
    #[arg(long, default_value_t = 0)]
    pub in_flight: u32,
    /// A client not drained this long after the pull began counts as failed.
    #[arg(long, default_value_t = 300)]
    pub pull_timeout_secs: u64,
    /// The expected msgids of every inbox, one per line.
    #[arg(long)]
    pub expected: PathBuf,
}

// ---------------------------------------------------------------------------------------------
// What the workers count and how it travels.

/// A pull's counts, summed over clients (and over workers by the parent).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
struct Counts {
    /// Clients that took part (logged in).
    clients: u64,
    /// Clients that pulled until `more = false`.
    drained: u64,
    failed: u64,
    /// OFFLINE_PULL pages received, empty ones, and short ones (fewer than the page size with
    /// `more = true`: the server cut the page to fit a frame).
    pages: u64,
    empty_pages: u64,
    short_pages: u64,
    /// RATE_LIMITED answers (each page asked again).
    rate_limited: u64,
    /// Message copies in the pages, and their pages' body bytes.
    pulled: u64,
    page_bytes: u64,
    /// msgids acknowledged (MSG_ACK type 3).
    acked: u64,
    /// Expected messages a drained client did not get.
    lost: u64,
    /// Copies of a msgid the client had already pulled.
    duplicates: u64,
    /// msgids not above the previous one pulled.
    out_of_order: u64,
    /// msgids not in the expected inbox.
    unexpected: u64,
    /// Pages whose `next_cursor` was not their last msgid (or the cursor, when empty).
    cursor_mismatches: u64,
    /// MSG pushes before the pull (the login redelivery), and during it.
    redelivered: u64,
    pushed_during_pull: u64,
    /// Pull start → the last client drained, µs.
    max_drain_us: u64,
}

impl CountLine for Counts {
    const TAG: &'static str = "pull-done";
    /// The drain time takes the larger; the rest sum.
    const MAXIMA: &'static [&'static str] = &["max_drain_us"];

    fn fields(&mut self) -> Vec<(&'static str, &mut u64)> {
        let c = self;
        vec![
            ("clients", &mut c.clients),
            ("drained", &mut c.drained),
            ("failed", &mut c.failed),
            ("pages", &mut c.pages),
            ("empty_pages", &mut c.empty_pages),
            ("short_pages", &mut c.short_pages),
            ("rate_limited", &mut c.rate_limited),
            ("pulled", &mut c.pulled),
            ("page_bytes", &mut c.page_bytes),
            ("acked", &mut c.acked),
            ("lost", &mut c.lost),
            ("duplicates", &mut c.duplicates),
            ("out_of_order", &mut c.out_of_order),
            ("unexpected", &mut c.unexpected),
            ("cursor_mismatches", &mut c.cursor_mismatches),
            ("redelivered", &mut c.redelivered),
            ("pushed_during_pull", &mut c.pushed_during_pull),
            ("max_drain_us", &mut c.max_drain_us),
        ]
    }
}

impl Counts {
    /// Messages that were not served exactly once, in order: what fails the run.
    fn wrong(&self) -> u64 {
        self.lost + self.duplicates + self.out_of_order + self.unexpected + self.cursor_mismatches
    }
}

/// A worker's own line.
#[derive(Debug)]
enum Line {
    Progress {
        pulled: u64,
        ended: u32,
        failed: u32,
    },
    Hist(Histogram<u64>),
    Points(Vec<(u32, u32)>),
    Series {
        bucket_ms: u64,
        counts: Vec<u64>,
    },
    Done(Counts),
    Verified(Verified),
}

/// What the verifying pulls found in one worker (or all).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
struct Verified {
    /// Clients whose verifying pull answered.
    clients: u64,
    /// Messages still in their inboxes after their acks.
    left_after_ack: u64,
    /// Verifying pulls that failed.
    failed: u64,
}

fn parse_line(line: &str) -> Option<Line> {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let words: Vec<&str> = rest.split_whitespace().collect();
    let number = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
    match word {
        "pull-progress" => Some(Line::Progress {
            pulled: number(0)?,
            ended: u32::try_from(number(1)?).ok()?,
            failed: u32::try_from(number(2)?).ok()?,
        }),
        "pull-hist" => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(words.first()?)
                .ok()?;
            let hist: Histogram<u64> = Deserializer::new()
                .deserialize(&mut bytes.as_slice())
                .ok()?;
            Some(Line::Hist(hist))
        }
        "pull-points" => Some(Line::Points(
            words
                .iter()
                .filter_map(|pair| {
                    let (t, l) = pair.split_once(':')?;
                    Some((t.parse().ok()?, l.parse().ok()?))
                })
                .collect(),
        )),
        "pull-series" => {
            let counts: Option<Vec<u64>> = words.iter().skip(1).map(|w| w.parse().ok()).collect();
            Some(Line::Series {
                bucket_ms: number(0).filter(|ms| *ms > 0)?,
                counts: counts?,
            })
        }
        "pull-done" => Counts::from_words(rest).map(Line::Done),
        "verify-done" => Some(Line::Verified(Verified {
            clients: number(0)?,
            left_after_ack: number(1)?,
            failed: number(2)?,
        })),
        _ => None,
    }
}

/// What the parent keeps of one worker's lines.
#[derive(Default)]
struct PullTally {
    progress: (u64, u32, u32),
    hist: Option<Histogram<u64>>,
    points: Vec<(u32, u32)>,
    bucket_ms: u64,
    series: Vec<u64>,
    done: Option<Counts>,
    verified: Option<Verified>,
}

impl Tally for PullTally {
    type Line = Line;

    fn add(&mut self, line: Line) {
        match line {
            Line::Progress {
                pulled,
                ended,
                failed,
            } => self.progress = (pulled, ended, failed),
            Line::Hist(hist) => self.hist = Some(hist),
            Line::Points(points) => self.points.extend(points),
            Line::Series { bucket_ms, counts } => {
                (self.bucket_ms, self.series) = (bucket_ms, counts)
            }
            Line::Done(counts) => self.done = Some(counts),
            Line::Verified(verified) => self.verified = Some(verified),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Worker process.

/// One client's check of its pulled msgids against the expected inbox.
struct Check<'a> {
    /// Ascending, distinct.
    expected: &'a [u64],
    /// Bit i: expected[i] was pulled.
    seen: Vec<u64>,
    seen_count: u64,
    last: u64,
    duplicates: u64,
    out_of_order: u64,
    unexpected: u64,
}

impl<'a> Check<'a> {
    fn new(expected: &'a [u64]) -> Self {
        Check {
            expected,
            seen: vec![0; expected.len().div_ceil(64)],
            seen_count: 0,
            last: 0,
            duplicates: 0,
            out_of_order: 0,
            unexpected: 0,
        }
    }

    fn take(&mut self, msgid: u64) {
        if msgid <= self.last {
            self.out_of_order += 1;
        }
        self.last = self.last.max(msgid);
        match self.expected.binary_search(&msgid) {
            Ok(i) => {
                let (word, bit) = (i / 64, 1u64 << (i % 64));
                if self.seen[word] & bit != 0 {
                    self.duplicates += 1;
                } else {
                    self.seen[word] |= bit;
                    self.seen_count += 1;
                }
            }
            Err(_) => self.unexpected += 1,
        }
    }

    fn lost(&self) -> u64 {
        self.expected.len() as u64 - self.seen_count
    }
}

/// Login counters of a worker (the common status lines).
#[derive(Default)]
struct Logins {
    ok: AtomicU32,
    failed: AtomicU32,
    /// Connections the server closed before the pull.
    dropped: AtomicU32,
    last_done_micros: AtomicU64,
}

/// The pull's figures in one worker, updated per page.
struct PullState {
    counts: Counts,
    hist: Histogram<u64>,
    points: Vec<(u32, u32)>,
    /// Messages pulled per [`BUCKET_MS`] after the pull began.
    series: Vec<u64>,
}

/// What a worker's client tasks share.
struct Shared {
    dial: Dial,
    expected: Vec<u64>,
    page_size: u32,
    pull_timeout: Duration,
    logins: Logins,
    /// Cancelled on `pull` (and on stop: it is a child of the stop token).
    pull_go: CancellationToken,
    /// When this worker read `pull`.
    pull_t0: OnceLock<Instant>,
    /// Cancelled on `verify` (and on stop).
    verify_go: CancellationToken,
    pull_permits: Option<Arc<Semaphore>>,
    pull: Mutex<PullState>,
    /// Messages pulled so far, clients whose pull ended, and of those the failed.
    pulled_live: AtomicU64,
    pull_ended: AtomicU32,
    pull_failed: AtomicU32,
    /// Pages so far (for sampling every `stride`-th into the plot).
    pages_live: AtomicU64,
    stride: u64,
    verify: Mutex<Verified>,
    /// Clients done with the verify step (verified, failed, or with nothing to verify).
    verify_ended: AtomicU32,
    failures: Mutex<Vec<String>>,
}

impl Shared {
    fn note_failure(&self, message: String) {
        if let Ok(mut failures) = self.failures.lock()
            && failures.len() < MAX_FAILURES
            && !failures.contains(&message)
        {
            failures.push(message);
        }
    }
}

/// Runs one worker: logs its clients in, pulls every inbox on `pull`, verifies on `verify`,
/// reports on stdout, and when stdin closes (or the deadline passes) exits the process.
///
/// # Errors
/// An unreadable `--expected` file; other failures are counted and reported on stdout.
pub async fn run_worker(args: OfflineWorkerArgs) -> anyhow::Result<()> {
    let w = &args.worker;
    let expected = read_expected(&args.expected)?;
    let stop = CancellationToken::new();
    let pull_go = stop.child_token();
    let verify_go = stop.child_token();
    let pull_t0 = OnceLock::new();
    let stride = (u64::from(w.count)
        * expected.len().div_ceil(args.page_size.max(1) as usize) as u64)
        .div_ceil(MAX_POINTS)
        .max(1);
    let shared = Arc::new(Shared {
        dial: Dial {
            server: w.server,
            source: w.source.map(|ip| SourcePorts::new(ip, w.first_port)),
            minter: Minter::new(w.appcode, &w.token_secret),
            step_timeout: Duration::from_secs(w.login_timeout_secs.max(1)),
            resume: false,
        },
        expected,
        page_size: args.page_size.clamp(1, MAX_PAGE_SIZE),
        pull_timeout: Duration::from_secs(args.pull_timeout_secs.max(1)),
        logins: Logins::default(),
        pull_go: pull_go.clone(),
        pull_t0,
        verify_go: verify_go.clone(),
        pull_permits: (args.in_flight > 0)
            .then(|| Arc::new(Semaphore::new(args.in_flight as usize))),
        pull: Mutex::new(PullState {
            counts: Counts::default(),
            hist: histogram(),
            points: Vec::new(),
            series: Vec::new(),
        }),
        pulled_live: AtomicU64::new(0),
        pull_ended: AtomicU32::new(0),
        pull_failed: AtomicU32::new(0),
        pages_live: AtomicU64::new(0),
        stride,
        verify: Mutex::new(Verified::default()),
        verify_ended: AtomicU32::new(0),
        failures: Mutex::new(Vec::new()),
    });
    {
        // Commands from the parent; EOF (the parent is gone or done) stops everything.
        let (stop, shared) = (stop.clone(), shared.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match line.trim() {
                    "pull" => {
                        shared.pull_t0.get_or_init(Instant::now);
                        shared.pull_go.cancel();
                    }
                    "verify" => shared.verify_go.cancel(),
                    "stop" => break,
                    _ => {}
                }
            }
            stop.cancel();
        });
    }
    workers::cancel_after(&stop, w.deadline_secs);
    let tracker = TaskTracker::new();
    let started = Instant::now();
    {
        let (shared, tracker, stop) = (shared.clone(), tracker.clone(), stop.clone());
        let (first, count, prefix) = (w.first, w.count, w.uid_prefix.clone());
        let permits = Arc::new(Semaphore::new(w.concurrency.max(1) as usize));
        let login_until = started + Duration::from_secs(w.deadline_secs);
        tokio::spawn(async move {
            for i in first..first.saturating_add(count) {
                let permit = tokio::select! {
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    _ = stop.cancelled() => break,
                };
                let (shared, stop) = (shared.clone(), stop.clone());
                let uid = format!("{prefix}{i}");
                tracker.spawn(async move {
                    let mut identity = Identity {
                        uid,
                        ..Identity::default()
                    };
                    let login = tokio::select! {
                        login = storm_client::first_login(&shared.dial, &mut identity, login_until) => login,
                        _ = stop.cancelled() => return,
                    };
                    drop(permit);
                    let logins = &shared.logins;
                    logins
                        .last_done_micros
                        .fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    match login {
                        Ok((conn, _throttled)) => {
                            logins.ok.fetch_add(1, Ordering::Relaxed);
                            client_life(&shared, conn, identity.keepalive, &stop).await;
                        }
                        Err(message) => {
                            logins.failed.fetch_add(1, Ordering::Relaxed);
                            shared.note_failure(message);
                        }
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
        let lines = reporter.lines(&shared);
        if !lines.is_empty() && !workers::emit(&lines) {
            stop.cancel();
        }
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
    let l = &shared.logins;
    workers::emit(&[format!(
        "done {} {} {}",
        l.ok.load(Ordering::Relaxed),
        l.failed.load(Ordering::Relaxed),
        l.dropped.load(Ordering::Relaxed)
    )]);
    // The stdin reader may still sit in a blocking read that would hold up the runtime's
    // shutdown: leave at once.
    std::process::exit(0)
}

/// The expected msgids: one per line, sorted and deduplicated here.
fn read_expected(path: &Path) -> anyhow::Result<Vec<u64>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --expected {}", path.display()))?;
    let mut ids = text
        .split_whitespace()
        .map(|word| {
            word.parse::<u64>()
                .with_context(|| format!("--expected {}: {word:?} is not a msgid", path.display()))
        })
        .collect::<anyhow::Result<Vec<u64>>>()?;
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// One logged-in client: holds its link (redelivered pushes taken in, not acknowledged) until
/// `pull`, drains its inbox, holds until `verify`, checks the inbox is empty, holds until stop.
async fn client_life(
    shared: &Shared,
    mut conn: storm_client::Conn,
    keepalive: Duration,
    stop: &CancellationToken,
) {
    let mut inbox = Inbox::default();
    if let Err(fail) = conn
        .hold_with(&mut inbox, &shared.pull_go, keepalive, false)
        .await
    {
        shared.logins.dropped.fetch_add(1, Ordering::Relaxed);
        shared.note_failure(format!("link lost before the pull: {fail}"));
        end_pull(shared, Err(()), inbox.pushed, 0, &Check::new(&[]));
        shared.verify_ended.fetch_add(1, Ordering::Relaxed);
        conn.reset();
        return;
    }
    if stop.is_cancelled() {
        conn.reset();
        return;
    }
    let redelivered = inbox.pushed;
    let t0 = shared.pull_t0.get().copied().unwrap_or_else(Instant::now);
    let permit = match &shared.pull_permits {
        Some(permits) => tokio::select! {
            permit = permits.clone().acquire_owned() => permit.ok(),
            _ = stop.cancelled() => None,
        },
        None => None,
    };
    let mut check = Check::new(&shared.expected);
    let until = t0 + shared.pull_timeout;
    let result = tokio::select! {
        result = drain(shared, &mut conn, &mut inbox, &mut check, t0, until) => result,
        _ = tokio::time::sleep_until(until) => Err("inbox not drained before --pull-timeout-secs".to_owned()),
        _ = stop.cancelled() => Err("stopped".to_owned()),
    };
    let drained_at = Instant::now();
    drop(permit);
    let drain_us = u64::try_from(drained_at.saturating_duration_since(t0).as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    let ok = match result {
        Ok(()) => true,
        Err(message) => {
            shared.note_failure(message);
            false
        }
    };
    end_pull(
        shared,
        if ok { Ok(drain_us) } else { Err(()) },
        redelivered,
        inbox.pushed - redelivered,
        &check,
    );
    if !ok {
        shared.verify_ended.fetch_add(1, Ordering::Relaxed);
        conn.reset();
        return;
    }

    // Verify: after the acks, one more pull from 0 must find the inbox empty.
    let held = conn
        .hold_with(&mut inbox, &shared.verify_go, keepalive, false)
        .await;
    if held.is_ok() && !stop.is_cancelled() {
        let until = Instant::now() + VERIFY_TIMEOUT;
        let answer = conn
            .pull_page(&shared.dial, 0, MAX_PAGE_SIZE, &mut inbox, until)
            .await;
        if let Ok(mut verified) = shared.verify.lock() {
            match &answer {
                Ok((page, _)) => {
                    verified.clients += 1;
                    verified.left_after_ack += page.messages.len() as u64;
                }
                Err(_) => verified.failed += 1,
            }
        }
        if let Err(fail) = answer {
            shared.note_failure(format!("verifying pull: {fail}"));
        }
    } else if let Err(fail) = held {
        if let Ok(mut verified) = shared.verify.lock() {
            verified.failed += 1;
        }
        shared.note_failure(format!("link lost before the verifying pull: {fail}"));
    }
    shared.verify_ended.fetch_add(1, Ordering::Relaxed);
    let _ = conn.hold_with(&mut inbox, stop, keepalive, false).await;
    conn.reset();
}

/// Pulls from cursor 0 until `more = false`, acknowledging each page before the next request.
async fn drain(
    shared: &Shared,
    conn: &mut storm_client::Conn,
    inbox: &mut Inbox,
    check: &mut Check<'_>,
    t0: Instant,
    until: Instant,
) -> Result<(), String> {
    let step = shared.dial.step_timeout;
    let mut cursor = 0u64;
    let mut acked = Vec::with_capacity(shared.page_size as usize);
    for _ in 0..MAX_PAGES_PER_CLIENT {
        let sent = Instant::now();
        let (page, bytes) = match conn
            .pull_page(
                &shared.dial,
                cursor,
                shared.page_size,
                inbox,
                (sent + step).min(until),
            )
            .await
        {
            Ok(answer) => answer,
            Err(Fail::Server {
                code: Some(ErrorCode::RateLimited),
                retry_after_ms,
                ..
            }) => {
                if let Ok(mut state) = shared.pull.lock() {
                    state.counts.rate_limited += 1;
                }
                let wake = Instant::now() + storm_client::retry_wait(retry_after_ms);
                if wake >= until {
                    return Err("still RATE_LIMITED at --pull-timeout-secs".to_owned());
                }
                tokio::time::sleep_until(wake).await;
                continue;
            }
            Err(fail) => return Err(format!("OFFLINE_PULL: {fail}")),
        };
        let now = Instant::now();
        let latency_us = u64::try_from(now.saturating_duration_since(sent).as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        acked.clear();
        for msg in &page.messages {
            check.take(msg.msgid);
            acked.push(msg.msgid);
        }
        let n = page.messages.len() as u64;
        let last = page.messages.last().map_or(cursor, |m| m.msgid);
        let page_no = shared.pages_live.fetch_add(1, Ordering::Relaxed);
        shared.pulled_live.fetch_add(n, Ordering::Relaxed);
        if let Ok(mut state) = shared.pull.lock() {
            let state = &mut *state;
            let c = &mut state.counts;
            c.pages += 1;
            c.empty_pages += u64::from(n == 0);
            c.short_pages += u64::from(page.more && n < u64::from(shared.page_size));
            c.pulled += n;
            c.page_bytes += bytes as u64;
            c.cursor_mismatches += u64::from(page.next_cursor != last);
            state.hist.saturating_record(latency_us);
            let at = now.saturating_duration_since(t0);
            let bucket = usize::try_from(at.as_millis() as u64 / BUCKET_MS).unwrap_or(usize::MAX);
            // Bounded by the pull timeout: no bucket lies past it.
            let max_buckets = (shared.pull_timeout.as_millis() as u64 / BUCKET_MS + 1) as usize;
            if bucket < max_buckets {
                if state.series.len() <= bucket {
                    state.series.resize(bucket + 1, 0);
                }
                state.series[bucket] += n;
            }
            if page_no.is_multiple_of(shared.stride) {
                state.points.push((
                    u32::try_from(at.as_millis()).unwrap_or(u32::MAX),
                    u32::try_from(latency_us).unwrap_or(u32::MAX),
                ));
            }
        }
        if !acked.is_empty() {
            conn.ack_msgids(&acked, step)
                .await
                .map_err(|fail| format!("MSG_ACK: {fail}"))?;
            if let Ok(mut state) = shared.pull.lock() {
                state.counts.acked += acked.len() as u64;
            }
        }
        if !page.more {
            return Ok(());
        }
        // A cursor that does not move would loop for ever.
        if page.next_cursor <= cursor {
            return Err(format!(
                "OFFLINE_PULL says more, but its cursor did not advance past {cursor}"
            ));
        }
        cursor = page.next_cursor;
    }
    Err(format!("more than {MAX_PAGES_PER_CLIENT} pages"))
}

/// Records one client's pull: `Ok(drain µs)` or failed.
fn end_pull(
    shared: &Shared,
    result: Result<u64, ()>,
    redelivered: u64,
    pushed_during_pull: u64,
    check: &Check<'_>,
) {
    if let Ok(mut state) = shared.pull.lock() {
        let c = &mut state.counts;
        c.clients += 1;
        c.redelivered += redelivered;
        c.pushed_during_pull += pushed_during_pull;
        c.duplicates += check.duplicates;
        c.out_of_order += check.out_of_order;
        c.unexpected += check.unexpected;
        match result {
            Ok(drain_us) => {
                c.drained += 1;
                c.lost += check.lost();
                c.max_drain_us = c.max_drain_us.max(drain_us);
            }
            Err(()) => c.failed += 1,
        }
    }
    if result.is_err() {
        shared.pull_failed.fetch_add(1, Ordering::Relaxed);
    }
    shared.pull_ended.fetch_add(1, Ordering::Relaxed);
}

/// What a worker already reported.
struct Reporter {
    count: u32,
    logins: (u32, u32, u32),
    failures: usize,
    ready: bool,
    progress: (u64, u32, u32),
    pull_done: bool,
    verify_done: bool,
}

impl Reporter {
    fn new(count: u32) -> Self {
        Reporter {
            count,
            logins: (u32::MAX, u32::MAX, 0),
            failures: 0,
            ready: false,
            progress: (0, 0, 0),
            pull_done: false,
            verify_done: false,
        }
    }

    /// The status lines of what changed since the last call.
    fn lines(&mut self, shared: &Shared) -> Vec<String> {
        let mut lines = Vec::new();
        let l = &shared.logins;
        let (ok, failed, dropped) = (
            l.ok.load(Ordering::Relaxed),
            l.failed.load(Ordering::Relaxed),
            l.dropped.load(Ordering::Relaxed),
        );
        if let Ok(failures) = shared.failures.lock() {
            for failure in failures.iter().skip(self.failures) {
                lines.push(format!("failure {}", failure.replace('\n', " ")));
            }
            self.failures = failures.len();
        }
        if (ok, failed) != (self.logins.0, self.logins.1) {
            lines.push(format!("progress {ok} {failed}"));
        }
        if !self.ready && ok + failed >= self.count {
            let micros = l.last_done_micros.load(Ordering::Relaxed);
            lines.push(format!("ready {ok} {failed} {micros}"));
            self.ready = true;
        }
        if dropped != self.logins.2 {
            lines.push(format!("dropped {dropped}"));
        }
        self.logins = (ok, failed, dropped);
        if !shared.pull_go.is_cancelled() || shared.pull_t0.get().is_none() {
            return lines;
        }
        let progress = (
            shared.pulled_live.load(Ordering::Relaxed),
            shared.pull_ended.load(Ordering::Relaxed),
            shared.pull_failed.load(Ordering::Relaxed),
        );
        if progress != self.progress {
            lines.push(format!(
                "pull-progress {} {} {}",
                progress.0, progress.1, progress.2
            ));
            self.progress = progress;
        }
        if self.ready && !self.pull_done && progress.1 >= ok {
            self.pull_done = true;
            if let Ok(state) = shared.pull.lock() {
                let mut bytes = Vec::new();
                if V2Serializer::new()
                    .serialize(&state.hist, &mut bytes)
                    .is_ok()
                {
                    lines.push(format!(
                        "pull-hist {}",
                        base64::engine::general_purpose::STANDARD.encode(&bytes)
                    ));
                }
                for chunk in state.points.chunks(500) {
                    let pairs: Vec<String> =
                        chunk.iter().map(|(t, l)| format!("{t}:{l}")).collect();
                    lines.push(format!("pull-points {}", pairs.join(" ")));
                }
                let series: Vec<String> = state.series.iter().map(u64::to_string).collect();
                lines.push(format!("pull-series {BUCKET_MS} {}", series.join(" ")));
                lines.push(state.counts.to_line());
            }
        }
        if self.pull_done
            && !self.verify_done
            && shared.verify_go.is_cancelled()
            && shared.verify_ended.load(Ordering::Relaxed) >= ok
        {
            self.verify_done = true;
            if let Ok(v) = shared.verify.lock() {
                lines.push(format!(
                    "verify-done {} {} {}",
                    v.clients, v.left_after_ack, v.failed
                ));
            }
        }
        lines
    }
}

// ---------------------------------------------------------------------------------------------
// The parent's side.

/// Runs the scenario: prints the figures, writes `--json` and the plots next to it, and fails
/// (one line) when the run is not valid: a message lost, repeated or out of order, a failed
/// login or client, a worker that crashed, the deadline.
///
/// Must run inside the `longlink` binary: the server and the workers are started as
/// subcommands of [`std::env::current_exe`].
///
/// # Errors
/// Bad arguments, a server that does not start or answer, a wrong pull, the deadline.
pub async fn run(args: OfflineArgs) -> anyhow::Result<()> {
    check_args(&args)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.deadline_secs);
    let exe = std::env::current_exe().context("cannot find the longlink executable")?;
    let target = args
        .target
        .resolve(&exe, args.appcode, &args.server_log, deadline, || {
            args.token_secret
                .clone()
                .map_or_else(|| dev_secret(args.appcode), Ok)
        })
        .await?;
    let outcome = tokio::time::timeout_at(deadline, measure(&args, &exe, &target, deadline)).await;
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
        let mut json = report.json;
        let plots = plot_paths(path);
        json.plots = plots.iter().map(|p| p.display().to_string()).collect();
        crate::report::write_json(path, &json)?;
        let drawn = plot::write(&plots[0], &report.latency_plot)
            .and_then(|()| plot::series(&plots[1], &report.pulled_plot));
        if let Err(err) = drawn {
            // The figures are in the JSON; a missing font only costs the pictures.
            eprintln!("note: no plot: {err:#}");
        }
    }
    if let Some(problem) = &report.problem {
        bail!("{problem}");
    }
    Ok(())
}

/// Refuses arguments the run cannot honour, before anything starts.
fn check_args(args: &OfflineArgs) -> anyhow::Result<()> {
    if args.users == 0 || args.messages_per_user == 0 {
        bail!("--users and --messages-per-user must be at least 1");
    }
    if args.users > MAX_PUSH_TARGETS {
        bail!(
            "--users {}: at most {MAX_PUSH_TARGETS} (the uids of one POST /v1/push)",
            args.users
        );
    }
    if !(1..=MAX_PAGE_SIZE).contains(&args.page_size) {
        bail!("--page-size {}: 1..={MAX_PAGE_SIZE}", args.page_size);
    }
    if !(1..=MAX_CONTENT_BYTES).contains(&args.content_bytes) {
        bail!(
            "--content-bytes {}: 1..={MAX_CONTENT_BYTES} (the default [logic] max_content_bytes)",
            args.content_bytes
        );
    }
    if !(1..=MAX_PER_WORKER).contains(&args.per_worker) {
        bail!(
            "--per-worker {}: 1..={MAX_PER_WORKER} (one process may open 20,000 files)",
            args.per_worker
        );
    }
    if args.fill_in_flight == 0 || args.login_concurrency == 0 {
        bail!("--fill-in-flight and --login-concurrency must be at least 1");
    }
    if args.request_timeout_secs == 0 || args.pull_timeout_secs == 0 {
        bail!("--request-timeout-secs and --pull-timeout-secs must be at least 1");
    }
    if let Some(path) = &args.json
        && path.file_stem().is_none()
    {
        bail!("--json {}: not a file name", path.display());
    }
    Ok(())
}

/// The plots next to the JSON: `<stem>-page-latency.svg`, `<stem>-pulled.svg`.
fn plot_paths(json: &Path) -> [PathBuf; 2] {
    let stem = json.file_stem().map_or_else(
        || "offline".to_owned(),
        |s| s.to_string_lossy().into_owned(),
    );
    let dir = json.parent().unwrap_or_else(|| Path::new(""));
    [
        dir.join(format!("{stem}-page-latency.svg")),
        dir.join(format!("{stem}-pulled.svg")),
    ]
}

struct Report {
    json: OfflineJson,
    latency_plot: plot::LatencyPlot,
    pulled_plot: plot::SeriesPlot,
    problem: Option<String>,
}

#[derive(Debug, Serialize)]
struct OfflineJson {
    #[serde(flatten)]
    run: RunStamp,
    inputs: Inputs,
    server: ServerInfo,
    machine: Machine,
    results: Results,
    /// The plots written next to this file.
    plots: Vec<String>,
    notes: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Inputs {
    users: u32,
    messages_per_user: u32,
    content_bytes: u32,
    page_size: u32,
    fill_in_flight: u32,
    in_flight: u32,
    login_concurrency: u32,
    workers: u32,
    per_worker: u32,
    appcode: u32,
    request_timeout_secs: u64,
    pull_timeout_secs: u64,
    settle_ms: u64,
}

#[derive(Debug, Serialize)]
struct ServerInfo {
    #[serde(flatten)]
    identity: ServerIdentity,
    log_level: Option<String>,
}

#[derive(Debug, Serialize)]
struct Results {
    fill: FillFigures,
    logins: LoginFigures,
    pull: PullFigures,
    verify: Verified,
}

#[derive(Debug, Serialize)]
struct FillFigures {
    /// `POST /v1/push` calls (one per message, to every user).
    pushes: u32,
    /// Inbox rows the pushes stored (`stored_offline` summed): users × messages.
    messages_stored: u64,
    stats: PushStats,
    wall_secs: f64,
    stored_per_sec: f64,
    server_cpu_secs: f64,
    server_threads_secs: BTreeMap<String, f64>,
    stored_per_server_cpu_sec: f64,
    /// Fill done → the server's CPU went quiet.
    quiet_after_secs: f64,
}

#[derive(Debug, Serialize)]
struct LoginFigures {
    logged_in: u32,
    failed: u32,
    failure_samples: Vec<String>,
    wall_secs: f64,
    /// The logins' server CPU, the login redelivery (up to 200 MSG pushes each) included.
    server_cpu_secs: f64,
    logins_per_server_cpu_sec: f64,
    quiet_after_secs: f64,
}

#[derive(Debug, Serialize)]
struct PullFigures {
    #[serde(flatten)]
    counts: Counts,
    /// users × messages per user.
    messages_expected: u64,
    /// Pull start → the last inbox drained (the workers' clocks).
    drain_secs: f64,
    /// Pull start → the parent saw every worker done.
    parent_wall_secs: f64,
    pulled_per_sec: f64,
    pages_per_sec: f64,
    page_mib_per_sec: f64,
    /// The CPU window: pull start → all drained + settle.
    window_secs: f64,
    server_cpu_secs: f64,
    server_threads_secs: BTreeMap<String, f64>,
    pulled_per_server_cpu_sec: f64,
    server_cpu_us_per_page: f64,
    client_cpu_secs: f64,
    /// DESIGN.md's target and the ratio of `pulled_per_sec` to it.
    target_per_sec: f64,
    target_ratio: f64,
    page_latency_ms: Latency,
    /// (percentile, ms) at the plot's points.
    page_latency_percentiles: Vec<(f64, f64)>,
    /// The page-latency histogram (µs), HdrHistogram V2 serialization, base64.
    page_latency_hdr_v2_base64: String,
    /// (seconds after the pull began, messages pulled so far), one point per bucket.
    pulled_over_time: Vec<(f64, u64)>,
}

impl Report {
    fn print(&self) {
        let j = &self.json;
        let r = &j.results;
        let (f, l, p) = (&r.fill, &r.logins, &r.pull);
        let c = &p.counts;
        println!();
        println!("{:<13} longlink bench offline — summary", "");
        println!(
            "{:<13} {} users × {} messages ({} bytes each), pages of {}",
            "inputs",
            thousands(u64::from(j.inputs.users)),
            thousands(u64::from(j.inputs.messages_per_user)),
            j.inputs.content_bytes,
            j.inputs.page_size
        );
        println!(
            "{:<13} {} inbox rows by {} pushes in {:.2} s: {} stored/s, {} per server CPU-second ({:.2} s server CPU)",
            "fill",
            thousands(f.messages_stored),
            thousands(u64::from(f.pushes)),
            f.wall_secs,
            thousands(f.stored_per_sec as u64),
            thousands(f.stored_per_server_cpu_sec as u64),
            f.server_cpu_secs
        );
        println!(
            "{:<13} {} of {} ({} failed) in {:.2} s, {} per server CPU-second (redelivery included); {} redelivered pushes held unacked",
            "logins",
            thousands(u64::from(l.logged_in)),
            thousands(u64::from(j.inputs.users)),
            l.failed,
            l.wall_secs,
            thousands(l.logins_per_server_cpu_sec as u64),
            thousands(c.redelivered)
        );
        println!(
            "{:<13} {} of {} messages in {} pages ({} empty, {} short, {} RATE_LIMITED) by {} clients ({} failed): all drained after {:.3} s",
            "pull",
            thousands(c.pulled),
            thousands(p.messages_expected),
            thousands(c.pages),
            thousands(c.empty_pages),
            thousands(c.short_pages),
            thousands(c.rate_limited),
            thousands(c.drained),
            c.failed,
            p.drain_secs
        );
        println!(
            "{:<13} {} messages/s ({} target ≥ {}: {:.2}×), {} pages/s, {:.1} MiB/s of pages",
            "rate",
            thousands(p.pulled_per_sec as u64),
            verdict(p.pulled_per_sec >= TARGET_PER_SEC),
            thousands(TARGET_PER_SEC as u64),
            p.target_ratio,
            thousands(p.pages_per_sec as u64),
            p.page_mib_per_sec
        );
        println!(
            "{:<13} {:.3} s over {:.2} s ({}): {} messages per server CPU-second, {:.1} µs per page",
            "server CPU",
            p.server_cpu_secs,
            p.window_secs,
            by_thread(&p.server_threads_secs),
            thousands(p.pulled_per_server_cpu_sec as u64),
            p.server_cpu_us_per_page
        );
        println!(
            "{:<13} {:.3} s (load generator, not the server)",
            "client CPU", p.client_cpu_secs
        );
        p.page_latency_ms.print_line("page latency");
        println!(
            "{:<13} LOST {} / DUPLICATE {} / out of order {} / unexpected {} / cursor mismatches {} / left after ack {} ({} verified, {} verify failures)",
            "correctness",
            c.lost,
            c.duplicates,
            c.out_of_order,
            c.unexpected,
            c.cursor_mismatches,
            r.verify.left_after_ack,
            r.verify.clients,
            r.verify.failed
        );
        for note in &j.notes {
            println!("note: {note}");
        }
    }
}

/// What the fill left: the counters, the M msgids, the pushes accepted.
struct Filled {
    stats: PushStats,
    msgids: Vec<u64>,
    pushes: u32,
}

/// M persisted pushes to all `uids`, at most `in_flight` unfinished at a time (the oldest is
/// waited for first: one appcode's pushes finish in the order they were accepted).
async fn fill(
    api: &Api,
    args: &OfflineArgs,
    uids: &[String],
    content: &str,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Filled> {
    let until = Instant::now() + FILL_TIMEOUT;
    let mut pending = std::collections::VecDeque::new();
    let mut filled = Filled {
        stats: PushStats::default(),
        msgids: Vec::with_capacity(args.messages_per_user as usize),
        pushes: 0,
    };
    let body = PushBody {
        appcode: args.appcode,
        uids: Some(uids),
        all: None,
        msgtype: 0,
        content,
        persist: true,
        from: "bench-offline",
    };
    for _ in 0..args.messages_per_user {
        while pending.len() >= args.fill_in_flight as usize {
            if let Some(id) = pending.pop_front() {
                settle(api, id, until, &mut filled, bar).await?;
            }
        }
        loop {
            let answer = tokio::time::timeout_at(until, api.push(&body))
                .await
                .map_err(|_| anyhow!("POST /v1/push: no answer in time"))??;
            match answer {
                PushAnswer::Accepted { push_id, targets } => {
                    if targets != uids.len() as u64 {
                        bail!(
                            "POST /v1/push took {targets} targets of {} uids",
                            uids.len()
                        );
                    }
                    pending.push_back(push_id);
                    filled.pushes += 1;
                    break;
                }
                // Overloaded: the API asks to come back later; finish an older push first.
                PushAnswer::Refused { status: 503, .. } if Instant::now() < until => {
                    match pending.pop_front() {
                        Some(id) => settle(api, id, until, &mut filled, bar).await?,
                        None => tokio::time::sleep(OVERLOADED_WAIT).await,
                    }
                }
                PushAnswer::Refused { status, code } => {
                    bail!("POST /v1/push refused: {status} {code}")
                }
            }
        }
    }
    while let Some(id) = pending.pop_front() {
        settle(api, id, until, &mut filled, bar).await?;
    }
    Ok(filled)
}

/// Waits until push `id` is done; takes in its counters and msgid.
async fn settle(
    api: &Api,
    id: u64,
    until: Instant,
    filled: &mut Filled,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    loop {
        let outcome = tokio::time::timeout_at(until, api.push_outcome(id))
            .await
            .map_err(|_| anyhow!("GET /v1/push/{id}: no answer in time"))??;
        if outcome.stats.done {
            let msgid = outcome
                .msgid()
                .ok_or_else(|| anyhow!("push {id} is done but has no msgid"))?;
            filled.stats.add(&outcome.stats);
            filled.msgids.push(msgid);
            bar.inc(outcome.stats.stored_offline);
            return Ok(());
        }
        if Instant::now() >= until {
            bail!("push {id} not done within {}s", FILL_TIMEOUT.as_secs());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// CPU time the load generator used so far: the workers and this process.
fn load_generator_cpu(workers: &Workers<PullTally>) -> Duration {
    workers.cpu_time() + procfs::cpu_time(std::process::id()).unwrap_or_default()
}

/// Waits until `pred` holds for every worker's tally (at most until `until`).
async fn wait_all(
    workers: &mut Workers<PullTally>,
    until: Instant,
    what: &str,
    mut on_event: impl FnMut(&Workers<PullTally>),
    pred: impl Fn(&PullTally) -> bool,
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

async fn measure(
    args: &OfflineArgs,
    exe: &Path,
    target: &Target,
    deadline: Instant,
) -> anyhow::Result<Report> {
    let n = args.users;
    let m = args.messages_per_user;
    let pid = target.pid;
    let workers_count = workers::count(n, args.per_worker);
    let mut notes = Vec::new();
    let version = target.version().await;
    if let Ok((limit, open)) = procfs::open_files(pid) {
        // Margin: the API's connections, the store's files.
        let fits = limit.saturating_sub(open).saturating_sub(100);
        if u64::from(n) > fits {
            bail!(
                "--users {n}: one server process here may open {limit} files and has {open} open, so it holds at most ~{fits} users at once"
            );
        }
    }
    let Some(api_addr) = target.api else {
        bail!("--api is needed: the messages are stored through POST /v1/push");
    };
    let api = Api::new(api_addr, &args.api_key)?;
    let tag = longlink_proto::unix_ms();
    let uid_prefix = format!("bench-off-{tag}-");
    let uids: Vec<String> = (0..n).map(|i| format!("{uid_prefix}{i}")).collect();
    let content = "x".repeat(args.content_bytes as usize);
    let expected_total = u64::from(n) * u64::from(m);
    println!(
        "longlink bench offline: {} users × {} messages = {} stored, then pulled in pages of {} by {} clients over {workers_count} worker process(es)",
        thousands(u64::from(n)),
        thousands(u64::from(m)),
        thousands(expected_total),
        args.page_size,
        thousands(u64::from(n))
    );
    println!("{}", target.describe(&version));

    // Fill.
    let bar = crate::report::progress_bar(expected_total, "stored, {per_sec} {msg}");
    let fill_t0 = Instant::now();
    let fill_window = Window::open(pid, fill_t0, Duration::ZERO)?;
    let filled = match fill(&api, args, &uids, &content, &bar).await {
        Ok(filled) => filled,
        Err(err) => {
            bar.abandon();
            return Err(err);
        }
    };
    let fill_usage = fill_window.close(pid, Duration::ZERO)?;
    bar.finish_and_clear();
    let fill_quiet = wait_quiet(pid).await;
    let stored = filled.stats.stored_offline;
    if stored != expected_total || filled.stats.online > 0 {
        bail!(
            "the fill stored {stored} inbox rows for {expected_total} (targets {}, online {}, failed {}): the users must be offline and new",
            filled.stats.targets,
            filled.stats.online,
            filled.stats.failed
        );
    }
    let fill_cpu = fill_usage.server_cpu.as_secs_f64();
    let fill_figures = FillFigures {
        pushes: filled.pushes,
        messages_stored: stored,
        stats: filled.stats,
        wall_secs: round(fill_usage.secs, 3),
        stored_per_sec: round(per(stored, fill_usage.secs), 0),
        server_cpu_secs: round(fill_cpu, 3),
        server_threads_secs: fill_usage.threads_secs(),
        stored_per_server_cpu_sec: round(per(stored, fill_cpu), 0),
        quiet_after_secs: fill_quiet,
    };
    println!(
        "filled       {} inbox rows in {:.2} s ({} per server CPU-second)",
        thousands(stored),
        fill_usage.secs,
        thousands(fill_figures.stored_per_server_cpu_sec as u64)
    );
    let scratch = tempfile::Builder::new()
        .prefix("longlink-bench-offline-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let expected_path = scratch.path().join("expected-msgids.txt");
    let mut msgids = filled.msgids.clone();
    msgids.sort_unstable();
    msgids.dedup();
    if msgids.len() != m as usize {
        bail!(
            "{m} pushes gave {} distinct msgids: every push should have its own",
            msgids.len()
        );
    }
    let text: String = msgids.iter().map(|id| format!("{id}\n")).collect();
    std::fs::write(&expected_path, text)
        .with_context(|| format!("cannot write {}", expected_path.display()))?;

    // Logins.
    let in_flight_per_worker = if args.in_flight == 0 {
        0
    } else {
        args.in_flight.div_ceil(workers_count).max(1)
    };
    let own_args = vec![
        "--page-size".to_owned(),
        args.page_size.to_string(),
        "--in-flight".to_owned(),
        in_flight_per_worker.to_string(),
        "--pull-timeout-secs".to_owned(),
        args.pull_timeout_secs.to_string(),
        "--expected".to_owned(),
        expected_path.display().to_string(),
    ];
    let login_window = Window::open(pid, Instant::now(), Duration::ZERO)?;
    let mut workers: Workers<PullTally> = Workers::spawn(
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
            login_timeout_secs: args.request_timeout_secs,
            deadline,
        },
        "offline-worker",
        &own_args,
        parse_line,
    )?;
    let outcome = pull_phases(
        args,
        target,
        &mut workers,
        login_window,
        expected_total,
        &mut notes,
    )
    .await;
    workers.stop().await;
    drop(scratch);
    let (logins, pull, verify, hist, loadavg_before, problem) = outcome?;
    notes.extend(
        target
            .log_level_note()
            .map(|note| format!("{note} (one line per login); its CPU figures include that")),
    );

    // The plots.
    let mut points: Vec<(f64, f64)> = workers
        .tallies()
        .flat_map(|t| t.points.iter())
        .map(|&(t_ms, us)| (f64::from(t_ms) / 1000.0, f64::from(us) / 1000.0))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let distribution = latency::distribution(&hist);
    let latency_plot = plot::LatencyPlot {
        title: format!(
            "offline pull: {} users × {} messages, pages of {}",
            thousands(u64::from(n)),
            thousands(u64::from(m)),
            args.page_size
        ),
        distributions: vec![("OFFLINE_PULL request → page".to_owned(), distribution)],
        over_time: vec![("sampled pages".to_owned(), points)],
        target_ms: None,
        target_label: String::new(),
        distribution_caption: "page latency distribution".to_owned(),
        over_time_caption: "page latency, by when the page arrived".to_owned(),
        over_time_x: "seconds after the pull began".to_owned(),
    };
    let cumulative: Vec<(f64, f64)> = pull
        .pulled_over_time
        .iter()
        .map(|&(t, n)| (t, n as f64))
        .collect();
    let bucket_secs = BUCKET_MS as f64 / 1000.0;
    let rate: Vec<(f64, f64)> = pull
        .pulled_over_time
        .iter()
        .scan(0u64, |before, &(t, n)| {
            let step = n - *before;
            *before = n;
            Some((t, step as f64 / bucket_secs))
        })
        .collect();
    let pulled_plot = plot::SeriesPlot {
        title: format!(
            "offline pull: {} messages by {} clients, pages of {}",
            thousands(expected_total),
            thousands(u64::from(n)),
            args.page_size
        ),
        charts: vec![
            plot::SeriesChart {
                caption: "messages pulled so far".to_owned(),
                x_desc: "seconds after the pull began".to_owned(),
                y_desc: "messages".to_owned(),
                series: vec![("pulled (all clients)".to_owned(), cumulative)],
            },
            plot::SeriesChart {
                caption: format!("pull rate per {BUCKET_MS} ms"),
                x_desc: "seconds after the pull began".to_owned(),
                y_desc: "messages/s".to_owned(),
                series: vec![("messages/s".to_owned(), rate)],
            },
        ],
    };
    let json = OfflineJson {
        run: RunStamp::now("offline"),
        inputs: Inputs {
            users: n,
            messages_per_user: m,
            content_bytes: args.content_bytes,
            page_size: args.page_size,
            fill_in_flight: args.fill_in_flight,
            in_flight: args.in_flight,
            login_concurrency: args.login_concurrency,
            workers: workers_count,
            per_worker: args.per_worker,
            appcode: args.appcode,
            request_timeout_secs: args.request_timeout_secs,
            pull_timeout_secs: args.pull_timeout_secs,
            settle_ms: args.settle_ms,
        },
        server: ServerInfo {
            identity: target.identity(version),
            log_level: target.log_level(),
        },
        machine: Machine::now(Some(loadavg_before)),
        results: Results {
            fill: fill_figures,
            logins,
            pull,
            verify,
        },
        plots: Vec::new(),
        notes,
    };
    Ok(Report {
        json,
        latency_plot,
        pulled_plot,
        problem,
    })
}

/// Logins → pull → verify, on running workers. Returns the figures and, when the run is not
/// valid, why.
#[allow(clippy::type_complexity)]
async fn pull_phases(
    args: &OfflineArgs,
    target: &Target,
    workers: &mut Workers<PullTally>,
    login_window: Window,
    expected_total: u64,
    notes: &mut Vec<String>,
) -> anyhow::Result<(
    LoginFigures,
    PullFigures,
    Verified,
    Histogram<u64>,
    String,
    Option<String>,
)> {
    let n = args.users;
    let pid = target.pid;
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
    if logged_in == 0 {
        bail!(
            "no user logged in{}",
            workers
                .failure_samples()
                .first()
                .map(|f| format!(": {f}"))
                .unwrap_or_default()
        );
    }
    // The last logins' redelivery is still being pushed: let the server finish it first.
    let login_quiet = wait_quiet(pid).await;
    let login_cpu = login_usage.server_cpu.as_secs_f64();
    let logins = LoginFigures {
        logged_in,
        failed: workers.failed(),
        failure_samples: workers.failure_samples(),
        wall_secs: round(login_wall.as_secs_f64(), 3),
        server_cpu_secs: round(login_cpu, 3),
        logins_per_server_cpu_sec: round(per(u64::from(logged_in), login_cpu), 0),
        quiet_after_secs: login_quiet,
    };
    println!(
        "logged in    {} users in {:.2} s; pulling every inbox",
        thousands(u64::from(logged_in)),
        login_wall.as_secs_f64()
    );

    // Pull.
    let loadavg_before = procfs::loadavg();
    let t0 = Instant::now();
    let window = Window::open(pid, t0, load_generator_cpu(workers))?;
    workers.tell("pull").await?;
    let bar = crate::report::progress_bar(expected_total, "pulled, {per_sec} {msg}");
    let until = t0 + Duration::from_secs(args.pull_timeout_secs) + REPORT_MARGIN;
    let waited = wait_all(
        workers,
        until,
        "the pull's end",
        |w| {
            let (pulled, ended, failed) = w.tallies().fold((0u64, 0u64, 0u64), |acc, t| {
                (
                    acc.0 + t.progress.0,
                    acc.1 + u64::from(t.progress.1),
                    acc.2 + u64::from(t.progress.2),
                )
            });
            bar.set_position(pulled);
            bar.set_message(format!(
                "({} of {} inboxes drained{})",
                thousands(ended - failed),
                thousands(u64::from(logged_in)),
                if failed > 0 {
                    format!(", {failed} failed")
                } else {
                    String::new()
                }
            ));
        },
        |t| t.done.is_some(),
    )
    .await;
    let parent_wall = t0.elapsed();
    bar.finish_and_clear();
    let mut problem = waited.err().map(|err| format!("{err:#}"));
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    let usage = window.close(pid, load_generator_cpu(workers))?;

    // Verify.
    let verify = if problem.is_none() {
        workers.tell("verify").await?;
        let waited = wait_all(
            workers,
            Instant::now() + VERIFY_TIMEOUT + REPORT_MARGIN,
            "the verifying pulls",
            |_| {},
            |t| t.verified.is_some(),
        )
        .await;
        if let Err(err) = waited {
            problem = Some(format!("{err:#}"));
        }
        workers
            .tallies()
            .filter_map(|t| t.verified)
            .fold(Verified::default(), |mut sum, v| {
                sum.clients += v.clients;
                sum.left_after_ack += v.left_after_ack;
                sum.failed += v.failed;
                sum
            })
    } else {
        Verified::default()
    };

    let mut counts = Counts::default();
    let mut hist = histogram();
    let mut bucket_ms = BUCKET_MS;
    let mut series: Vec<u64> = Vec::new();
    for tally in workers.tallies() {
        if let Some(done) = &tally.done {
            counts.add(done);
        }
        if let Some(theirs) = &tally.hist {
            let _ = hist.add(theirs);
        }
        if tally.bucket_ms > 0 {
            bucket_ms = tally.bucket_ms;
        }
        if series.len() < tally.series.len() {
            series.resize(tally.series.len(), 0);
        }
        for (sum, theirs) in series.iter_mut().zip(&tally.series) {
            *sum += theirs;
        }
    }
    let pulled_over_time: Vec<(f64, u64)> = series
        .iter()
        .scan(0u64, |total, n| {
            *total += n;
            Some(*total)
        })
        .enumerate()
        .map(|(i, total)| {
            (
                round((i as f64 + 1.0) * bucket_ms as f64 / 1000.0, 3),
                total,
            )
        })
        .collect();
    let failures = workers.failure_samples();
    if !failures.is_empty() {
        notes.push(format!("failures (first few): {}", failures.join(" | ")));
    }
    if counts.pushed_during_pull > 0 {
        notes.push(format!(
            "{} MSG push(es) arrived during the pull (nothing was sent meanwhile)",
            counts.pushed_during_pull
        ));
    }
    let drain_secs = counts.max_drain_us as f64 / 1e6;
    let server_cpu = usage.server_cpu.as_secs_f64();
    let mut bytes = Vec::new();
    let _ = V2Serializer::new().serialize(&hist, &mut bytes);
    let pulled_per_sec = per(counts.pulled, drain_secs);
    let pull = PullFigures {
        messages_expected: expected_total,
        drain_secs: round(drain_secs, 3),
        parent_wall_secs: round(parent_wall.as_secs_f64(), 3),
        pulled_per_sec: round(pulled_per_sec, 0),
        pages_per_sec: round(per(counts.pages, drain_secs), 0),
        page_mib_per_sec: round(per(counts.page_bytes, drain_secs) / (1024.0 * 1024.0), 2),
        window_secs: round(usage.secs, 3),
        server_cpu_secs: round(server_cpu, 3),
        server_threads_secs: usage.threads_secs(),
        pulled_per_server_cpu_sec: round(per(counts.pulled, server_cpu), 0),
        server_cpu_us_per_page: round(
            if counts.pages == 0 {
                0.0
            } else {
                server_cpu * 1e6 / counts.pages as f64
            },
            1,
        ),
        client_cpu_secs: round(usage.client_cpu.as_secs_f64(), 3),
        target_per_sec: TARGET_PER_SEC,
        target_ratio: round(pulled_per_sec / TARGET_PER_SEC, 3),
        page_latency_ms: latency::summary(&hist),
        page_latency_percentiles: latency::percentiles(&latency::distribution(&hist)),
        page_latency_hdr_v2_base64: base64::engine::general_purpose::STANDARD.encode(&bytes),
        pulled_over_time,
        counts,
    };
    if problem.is_none() {
        problem = validity(&pull, &verify, logged_in, n, expected_total);
    }
    Ok((logins, pull, verify, hist, loadavg_before, problem))
}

/// Why a finished run is not valid, if it is not: the bench's own assertions.
fn validity(
    pull: &PullFigures,
    verify: &Verified,
    logged_in: u32,
    users: u32,
    expected_total: u64,
) -> Option<String> {
    let c = &pull.counts;
    if logged_in < users {
        return Some(format!(
            "{} of {users} users did not log in",
            users - logged_in
        ));
    }
    if c.failed > 0 || c.drained < u64::from(users) {
        return Some(format!(
            "{} of {users} clients did not drain their inbox",
            u64::from(users) - c.drained.min(u64::from(users))
        ));
    }
    if c.wrong() > 0 || c.pulled != expected_total {
        return Some(format!(
            "the pull was wrong: LOST {} / DUPLICATE {} / out of order {} / unexpected {} / cursor mismatches {}; {} pulled of {expected_total}",
            c.lost, c.duplicates, c.out_of_order, c.unexpected, c.cursor_mismatches, c.pulled
        ));
    }
    if verify.left_after_ack > 0 || verify.failed > 0 || verify.clients != c.drained {
        return Some(format!(
            "after the acks {} message(s) were still in the inboxes ({} of {} clients verified, {} failed)",
            verify.left_after_ack, verify.clients, c.drained, verify.failed
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_trip_and_add() {
        let counts = Counts {
            clients: 3,
            drained: 2,
            failed: 1,
            pulled: 20,
            lost: 1,
            max_drain_us: 7,
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
            max_drain_us: 12,
            ..Counts::default()
        });
        assert_eq!((sum.clients, sum.pulled, sum.max_drain_us), (4, 20, 12));
        assert_eq!(sum.wrong(), 1);
        assert!(Counts::from_words("pulled=x").is_none());
        assert_eq!(Counts::from_words("unknown=3"), Some(Counts::default()));
    }

    #[test]
    fn worker_lines_parse() {
        assert!(matches!(
            parse_line("pull-progress 100 2 1"),
            Some(Line::Progress {
                pulled: 100,
                ended: 2,
                failed: 1
            })
        ));
        assert!(matches!(
            parse_line("pull-points 1:2 3:4 bad"),
            Some(Line::Points(p)) if p == [(1, 2), (3, 4)]
        ));
        assert!(matches!(
            parse_line("pull-series 100 5 0 7"),
            Some(Line::Series { bucket_ms: 100, counts }) if counts == [5, 0, 7]
        ));
        assert!(parse_line("pull-series 0 5").is_none());
        assert!(parse_line("pull-series 100 x").is_none());
        assert!(matches!(
            parse_line("verify-done 4 0 1"),
            Some(Line::Verified(Verified {
                clients: 4,
                left_after_ack: 0,
                failed: 1
            }))
        ));
        assert!(parse_line("progress 1 2").is_none(), "a common status line");
        assert!(parse_line("pull-progress x").is_none());
    }

    #[test]
    fn check_counts_lost_duplicates_order_and_strangers() {
        let expected = [10, 20, 30, 40];
        let mut check = Check::new(&expected);
        for id in [10, 20, 20, 15, 40] {
            check.take(id);
        }
        assert_eq!(check.duplicates, 1);
        assert_eq!(check.unexpected, 1);
        // 20 again (not above 20), and 15 after 20.
        assert_eq!(check.out_of_order, 2);
        assert_eq!(check.lost(), 1, "30 never came");
        let mut clean = Check::new(&expected);
        for id in expected {
            clean.take(id);
        }
        assert_eq!(
            (
                clean.lost(),
                clean.duplicates,
                clean.out_of_order,
                clean.unexpected
            ),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: OfflineArgs,
        }
        let parse = |extra: &[&str]| {
            let mut argv = vec!["offline"];
            argv.extend_from_slice(extra);
            Cli::parse_from(argv).args
        };
        assert!(check_args(&parse(&[])).is_ok());
        for bad in [
            &["--users", "0"][..],
            &["--messages-per-user", "0"],
            &["--page-size", "0"],
            &["--page-size", "501"],
            &["--content-bytes", "0"],
            &["--content-bytes", "70000"],
            &["--per-worker", "20000"],
            &["--users", "100001"],
            &["--fill-in-flight", "0"],
        ] {
            assert!(check_args(&parse(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn plots_go_next_to_the_json() {
        let [latency, pulled] = plot_paths(Path::new("/tmp/x/run1.json"));
        assert_eq!(latency, Path::new("/tmp/x/run1-page-latency.svg"));
        assert_eq!(pulled, Path::new("/tmp/x/run1-pulled.svg"));
    }
}
