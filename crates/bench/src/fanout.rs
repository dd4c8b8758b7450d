//! The receiving side of the s2c scenarios (`push`, `broadcast`): N logged-in clients spread
//! over worker processes (`<exe> bench fanout-worker`, hidden), each recording when the
//! pushes reach it.
//!
//! Why processes: one process may open 20,000 files here, and the server under test is a
//! process of its own; a worker holds at most `--per-worker` connections (default 10,000), so
//! none comes near the limit.
//!
//! Every push the scenarios send carries its own coordinates as text content:
//! `llb <tag> <series> <k> <t_call_us>` — the run tag (so a message of another run is never
//! counted), the series it is measured in (a broadcast round, or a time bucket of pushes), the
//! push number k and the wall-clock µs (`CLOCK_REALTIME`) just before the API call. A worker
//! takes the wall clock when a read returns, so each delivery's latency (API call → receipt)
//! is computed where it happens, with the one clock both processes share; it is recorded in an
//! HDR histogram per series. Workers acknowledge each MSG with MSG_ACK (type 3), as the SDK
//! does, unless told not to.
//!
//! Worker protocol, one line each on the worker's stdout: `progress <ok> <failed>`,
//! `ready <ok> <failed> <µs>`, `failure <message>`, `dropped <n>` (during the run);
//! `got <k>:<n> …` (new deliveries per push, sent within ~1 ms of them, so the parent can pace
//! pushes on completions); at the end `series <s> <count> <max µs> <last unix µs> <histogram>`
//! (V2 serialized, base64), `totals <delivered> <duplicates> <foreign> <ack frames>` and `done`.
//! The parent stops a worker by closing its stdin; a worker also stops at its own deadline.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use bytes::BytesMut;
use clap::Args;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use indicatif::ProgressBar;
use longlink_proto::{Cmd, Frame, FrameCodec, FrameType, wire};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{ChildStdin, Command};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::{self, Minter, Session, SourcePorts};
use crate::procfs;
use crate::server::Target;

/// Environment variable carrying the token secret to workers (kept off their command line).
const SECRET_ENV: &str = "LONGLINK_BENCH_TOKEN_SECRET";
/// First word of every bench push's content.
const MAGIC: &str = "llb";
/// Highest latency the histograms hold (longer ones are clamped to it), µs: 10 minutes.
pub(crate) const HIST_MAX_US: u64 = 600_000_000;
/// How often a worker reports login progress.
const REPORT_INTERVAL: Duration = Duration::from_millis(200);
/// A worker batches the deliveries of this long into one `got` line.
const GOT_BATCH: Duration = Duration::from_millis(1);
/// Most `k:n` pairs on one `got` line.
const GOT_PER_LINE: usize = 512;
/// First explicit source port of a worker (below the ephemeral range 32768–60999).
const FIRST_SOURCE_PORT: u16 = 16_384;
/// Distinct failure messages a worker reports.
const MAX_FAILURE_SAMPLES: usize = 5;
/// How long workers may take to report and exit once told to stop.
const WORKER_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// seq_ids of the workers' own requests (KEEPALIVE) and MSG_ACKs.
const OWN_SEQ_BASE: u32 = u32::MAX - 1000;

/// The push content a worker recognises, for run `tag`.
pub(crate) fn content(tag: u64, series: u32, k: u32, t_call_us: u64) -> String {
    format!("{MAGIC} {tag} {series} {k} {t_call_us}")
}

/// (series, k, t_call_us) of a bench push's content of run `tag`; `None` for anything else.
fn parse_content(tag: u64, content: &[u8]) -> Option<(u32, u32, u64)> {
    let text = std::str::from_utf8(content).ok()?;
    let mut words = text.split(' ');
    if words.next()? != MAGIC || words.next()?.parse::<u64>().ok()? != tag {
        return None;
    }
    let series = words.next()?.parse().ok()?;
    let k = words.next()?.parse().ok()?;
    let t_call = words.next()?.parse().ok()?;
    Some((series, k, t_call))
}

/// Wall-clock µs since the Unix epoch (the clock workers and the parent share).
pub(crate) fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// An empty latency histogram in µs: 1 µs … 10 min at 3 significant figures.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("constant bounds hdrhistogram accepts")
}

// ---------------------------------------------------------------------------------------------
// Worker process.

/// `longlink bench fanout-worker` (hidden): one worker process of `bench push` / `broadcast`.
#[derive(Debug, Clone, Args)]
pub struct FanoutWorkerArgs {
    /// The gate's address.
    #[arg(long)]
    pub server: SocketAddr,
    /// The appcode to log in with.
    #[arg(long)]
    pub appcode: u32,
    /// uid prefix (the uids are the prefix and a number).
    #[arg(long)]
    pub uid_prefix: String,
    /// First uid number.
    #[arg(long)]
    pub first: u32,
    /// Connections to open: uids first .. first + count.
    #[arg(long)]
    pub count: u32,
    /// Logins in flight at once.
    #[arg(long)]
    pub concurrency: u32,
    /// Timeout of each connect + LOGIN, in seconds.
    #[arg(long)]
    pub login_timeout_secs: u64,
    /// The worker stops by itself after this many seconds.
    #[arg(long)]
    pub deadline_secs: u64,
    /// Source address of the connections (default: chosen by the kernel).
    #[arg(long)]
    pub source: Option<IpAddr>,
    /// With --source: the first source port; each connection takes the next free one.
    #[arg(long, default_value_t = FIRST_SOURCE_PORT)]
    pub first_port: u16,
    /// The run tag in the content of the pushes to count.
    #[arg(long)]
    pub tag: u64,
    /// Do not send MSG_ACK for what arrives.
    #[arg(long)]
    pub no_ack: bool,
    /// The HS256 secret of the appcode (from the environment, not the command line).
    #[arg(long, env = SECRET_ENV, hide_env_values = true)]
    pub token_secret: String,
}

/// One series' deliveries.
#[derive(Debug, Clone)]
pub(crate) struct SeriesAcc {
    pub(crate) hist: Histogram<u64>,
    /// Largest latency: the API call → the series' last delivery.
    pub(crate) max_us: u64,
    /// Wall clock of the last delivery.
    pub(crate) last_unix_us: u64,
}

impl SeriesAcc {
    /// No deliveries yet.
    pub(crate) fn empty() -> Self {
        SeriesAcc {
            hist: histogram(),
            max_us: 0,
            last_unix_us: 0,
        }
    }

    /// Adds `other`'s deliveries.
    pub(crate) fn merge(&mut self, other: &SeriesAcc) {
        let _ = self.hist.add(&other.hist);
        self.max_us = self.max_us.max(other.max_us);
        self.last_unix_us = self.last_unix_us.max(other.last_unix_us);
    }
}

/// What a worker's connections record.
#[derive(Default)]
struct Deliveries {
    /// Deliveries per push not yet reported.
    fresh: HashMap<u32, u32>,
    series: BTreeMap<u32, SeriesAcc>,
    delivered: u64,
    duplicates: u64,
    foreign: u64,
    ack_frames: u64,
}

#[derive(Default)]
struct WorkerShared {
    tag: u64,
    ok: AtomicU32,
    failed: AtomicU32,
    dropped: AtomicU32,
    last_done_micros: AtomicU64,
    failures: Mutex<Vec<String>>,
    deliveries: Mutex<Deliveries>,
    /// Woken by each delivery (the reporter batches them into `got` lines).
    delivered: Notify,
}

impl WorkerShared {
    fn fail(&self, message: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut failures) = self.failures.lock()
            && failures.len() < MAX_FAILURE_SAMPLES
            && !failures.contains(&message)
        {
            failures.push(message);
        }
    }

    /// Records one MSG read at `at_us`; `false` when it was no push of this run.
    fn record(&self, content: &[u8], at_us: u64) -> bool {
        let Ok(mut d) = self.deliveries.lock() else {
            return false;
        };
        let Some((series, k, t_call)) = parse_content(self.tag, content) else {
            d.foreign += 1;
            return false;
        };
        let latency = at_us.saturating_sub(t_call).max(1);
        d.delivered += 1;
        *d.fresh.entry(k).or_default() += 1;
        let acc = d.series.entry(series).or_insert_with(SeriesAcc::empty);
        acc.hist.saturating_record(latency);
        acc.max_us = acc.max_us.max(latency);
        acc.last_unix_us = acc.last_unix_us.max(at_us);
        drop(d);
        self.delivered.notify_one();
        true
    }
}

/// Writes protocol lines to stdout; `false` when the parent is gone.
fn emit(lines: &[String]) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    lines
        .iter()
        .try_for_each(|line| writeln!(out, "{line}"))
        .and_then(|()| out.flush())
        .is_ok()
}

/// `got` lines for the deliveries not yet reported.
fn got_lines(shared: &WorkerShared) -> Vec<String> {
    let fresh: Vec<(u32, u32)> = match shared.deliveries.lock() {
        Ok(mut d) if !d.fresh.is_empty() => d.fresh.drain().collect(),
        _ => return Vec::new(),
    };
    fresh
        .chunks(GOT_PER_LINE)
        .map(|chunk| {
            let pairs: Vec<String> = chunk.iter().map(|(k, n)| format!("{k}:{n}")).collect();
            format!("got {}", pairs.join(" "))
        })
        .collect()
}

/// Runs one worker: logs `count` clients in, records the bench pushes they receive, reports on
/// stdout, and when stdin closes (or the deadline passes) reports its histograms and exits the
/// process.
///
/// # Errors
/// Never in practice: failures are counted and reported on stdout.
pub async fn run_worker(args: FanoutWorkerArgs) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) if line.trim() != "stop" => continue,
                    _ => break,
                }
            }
            stop.cancel();
        });
    }
    {
        let stop = stop.clone();
        let deadline = Duration::from_secs(args.deadline_secs);
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(deadline) => stop.cancel(),
                _ = stop.cancelled() => {}
            }
        });
    }
    let shared = Arc::new(WorkerShared {
        tag: args.tag,
        ..WorkerShared::default()
    });
    let minter = Arc::new(Minter::new(args.appcode, &args.token_secret));
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(args.concurrency.max(1) as usize));
    let timeout = Duration::from_secs(args.login_timeout_secs);
    let source = args
        .source
        .map(|ip| Arc::new(SourcePorts::new(ip, args.first_port)));
    let start = Instant::now();
    {
        let (stop, shared, tracker, args) =
            (stop.clone(), shared.clone(), tracker.clone(), args.clone());
        tokio::spawn(async move {
            for i in args.first..args.first.saturating_add(args.count) {
                let permit = tokio::select! {
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    _ = stop.cancelled() => break,
                };
                let (stop, shared, minter, source) =
                    (stop.clone(), shared.clone(), minter.clone(), source.clone());
                let uid = format!("{}{i}", args.uid_prefix);
                let ack = !args.no_ack;
                tracker.spawn(async move {
                    let result = tokio::select! {
                        result = client::login(args.server, source.as_deref(), &minter, &uid, timeout) => result,
                        _ = stop.cancelled() => return,
                    };
                    drop(permit);
                    shared
                        .last_done_micros
                        .fetch_max(start.elapsed().as_micros() as u64, Ordering::Relaxed);
                    match result {
                        Ok(session) => {
                            shared.ok.fetch_add(1, Ordering::Relaxed);
                            if !receive(&shared, session, ack, stop).await {
                                shared.dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(message) => shared.fail(message),
                    }
                });
            }
        });
    }

    let mut reported = (u32::MAX, u32::MAX, 0u32);
    let mut failures_reported = 0;
    let mut ready = false;
    let mut next_report = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            () = shared.delivered.notified() => {
                // Let the rest of a fan-out arrive: one line for a burst, not one per message.
                tokio::time::sleep(GOT_BATCH).await;
            }
            _ = tokio::time::sleep_until(next_report) => {}
        }
        let mut lines = got_lines(&shared);
        if Instant::now() >= next_report {
            next_report = Instant::now() + REPORT_INTERVAL;
            let ok = shared.ok.load(Ordering::Relaxed);
            let failed = shared.failed.load(Ordering::Relaxed);
            let dropped = shared.dropped.load(Ordering::Relaxed);
            if let Ok(failures) = shared.failures.lock() {
                for failure in failures.iter().skip(failures_reported) {
                    lines.push(format!("failure {}", failure.replace('\n', " ")));
                }
                failures_reported = failures.len();
            }
            if (ok, failed) != (reported.0, reported.1) {
                lines.push(format!("progress {ok} {failed}"));
            }
            if !ready && ok + failed >= args.count {
                let micros = shared.last_done_micros.load(Ordering::Relaxed);
                lines.push(format!("ready {ok} {failed} {micros}"));
                ready = true;
                // The parent waits for this line: say it now, not at the next interval.
                next_report = Instant::now();
            }
            if dropped != reported.2 {
                lines.push(format!("dropped {dropped}"));
            }
            reported = (ok, failed, dropped);
        }
        if !lines.is_empty() && !emit(&lines) {
            stop.cancel();
        }
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
    let mut lines = got_lines(&shared);
    lines.push(format!(
        "dropped {}",
        shared.dropped.load(Ordering::Relaxed)
    ));
    if let Ok(d) = shared.deliveries.lock() {
        for (series, acc) in &d.series {
            let mut bytes = Vec::new();
            if V2Serializer::new().serialize(&acc.hist, &mut bytes).is_ok() {
                lines.push(format!(
                    "series {series} {} {} {} {}",
                    acc.hist.len(),
                    acc.max_us,
                    acc.last_unix_us,
                    base64::engine::general_purpose::STANDARD.encode(&bytes)
                ));
            }
        }
        lines.push(format!(
            "totals {} {} {} {}",
            d.delivered, d.duplicates, d.foreign, d.ack_frames
        ));
    }
    lines.push("done".to_owned());
    emit(&lines);
    // The stdin reader may still sit in a blocking read that would hold up the runtime's
    // shutdown: leave at once.
    std::process::exit(0)
}

/// Reads one logged-in connection until `stop`: records each bench MSG, acknowledges what
/// arrived in one read with one MSG_ACK, sends KEEPALIVE at the interval the server asked for.
/// Returns `false` when the connection ended before `stop` (the server closed it, or it
/// failed). On `stop` the connection is reset, leaving no TIME_WAIT behind.
async fn receive(
    shared: &WorkerShared,
    session: Session,
    ack: bool,
    stop: CancellationToken,
) -> bool {
    let Session {
        mut stream,
        keepalive,
    } = session;
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    // Per-connection msgids seen: a second copy of one is a duplicate delivery.
    let mut seen: HashSet<u64> = HashSet::new();
    let mut next_ping = Instant::now() + keepalive;
    let mut seq = 0u32;
    let mut chunk = vec![0u8; 4096];
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => {
                let _ = stream.set_zero_linger();
                return true;
            }
            ready = stream.readable() => {
                if ready.is_err() {
                    return false;
                }
                let read = match stream.try_read(&mut chunk) {
                    Ok(0) => return false,
                    Ok(read) => read,
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => return false,
                };
                let at = unix_us();
                buf.extend_from_slice(&chunk[..read]);
                let mut msgids = Vec::new();
                loop {
                    let frame = match tokio_util::codec::Decoder::decode(&mut codec, &mut buf) {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break,
                        Err(_) => return false,
                    };
                    if (frame.cmd(), frame.header.frame_type) != (Some(Cmd::Msg), FrameType::Push) {
                        continue;
                    }
                    let Ok(msg) = frame.decode_body::<wire::Msg>() else {
                        continue;
                    };
                    if msg.msgid != 0 && !seen.insert(msg.msgid) {
                        if let Ok(mut d) = shared.deliveries.lock() {
                            d.duplicates += 1;
                        }
                        continue;
                    }
                    shared.record(&msg.content, at);
                    if msg.msgid != 0 {
                        msgids.push(msg.msgid);
                    }
                }
                if ack && !msgids.is_empty() {
                    seq = seq.wrapping_add(1);
                    let frame = Frame::new(
                        Cmd::MsgAck,
                        FrameType::Ack,
                        OWN_SEQ_BASE - seq % 1000,
                        0,
                        &wire::MsgAck { msgids },
                    );
                    if !write(&mut stream, &frame, keepalive).await {
                        return false;
                    }
                    if let Ok(mut d) = shared.deliveries.lock() {
                        d.ack_frames += 1;
                    }
                }
            }
            _ = tokio::time::sleep_until(next_ping) => {
                seq = seq.wrapping_add(1);
                let ping = Frame::request(
                    Cmd::Keepalive,
                    OWN_SEQ_BASE - seq % 1000,
                    0,
                    &wire::KeepaliveRequest { client_time_ms: longlink_proto::unix_ms() },
                );
                if !write(&mut stream, &ping, keepalive).await {
                    return false;
                }
                next_ping += keepalive;
            }
        }
    }
}

async fn write(stream: &mut TcpStream, frame: &Frame, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, stream.write_all(&frame.to_bytes())).await,
        Ok(Ok(()))
    )
}

// ---------------------------------------------------------------------------------------------
// The parent's side.

/// How many clients, where, as whom.
pub(crate) struct FleetSpec<'a> {
    pub(crate) exe: &'a Path,
    pub(crate) target: &'a Target,
    pub(crate) secret: &'a str,
    pub(crate) users: u32,
    pub(crate) per_worker: u32,
    pub(crate) concurrency: u32,
    pub(crate) appcode: u32,
    /// uids are this prefix and 0 … users − 1.
    pub(crate) prefix: &'a str,
    pub(crate) tag: u64,
    pub(crate) login_timeout_secs: u64,
    pub(crate) client_ack: bool,
    /// Pushes the parent will send (k = 0 … pushes − 1).
    pub(crate) pushes: usize,
    pub(crate) deadline: Instant,
}

/// Deliveries per push, as the workers report them.
pub(crate) struct Delivered {
    per_push: Vec<AtomicU32>,
    total: AtomicU64,
    /// Bumped on every report, so a waiter can sleep until something arrives.
    changed: watch::Sender<u64>,
}

impl Delivered {
    /// Deliveries of push `k` so far.
    pub(crate) fn of(&self, k: usize) -> u32 {
        self.per_push
            .get(k)
            .map_or(0, |count| count.load(Ordering::Relaxed))
    }

    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Waits until push `k` has `want` deliveries or `until` passes; returns whether it has.
    pub(crate) async fn wait_for(&self, k: usize, want: u32, until: Instant) -> bool {
        let mut changes = self.changed.subscribe();
        loop {
            if self.of(k) >= want {
                return true;
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return self.of(k) >= want },
                _ = tokio::time::sleep_until(until) => return self.of(k) >= want,
            }
        }
    }

    fn add(&self, k: usize, n: u32) {
        if let Some(count) = self.per_push.get(k) {
            count.fetch_add(n, Ordering::Relaxed);
        }
        self.total.fetch_add(u64::from(n), Ordering::Relaxed);
    }
}

/// What a worker said (other than `got`, which goes straight to [`Delivered`]).
#[derive(Debug)]
enum Event {
    Progress { ok: u32, failed: u32 },
    Ready { ok: u32, failed: u32 },
    Failure(String),
    Dropped(u32),
    Series(u32, SeriesAcc),
    Totals(Totals),
    Exited { stderr: String },
}

/// A worker's (or all workers') final counts.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Totals {
    pub(crate) delivered: u64,
    pub(crate) duplicates: u64,
    /// MSG pushes that were not this run's bench pushes.
    pub(crate) foreign: u64,
    pub(crate) ack_frames: u64,
}

#[derive(Debug, Default, Clone)]
struct WorkerState {
    pid: u32,
    ok: u32,
    failed: u32,
    dropped: u32,
    ready: bool,
    exited: bool,
    stderr: String,
    totals: Option<Totals>,
}

/// The worker processes of one run.
pub(crate) struct Fleet {
    states: Vec<WorkerState>,
    stdins: Vec<Option<ChildStdin>>,
    children: Vec<tokio::process::Child>,
    events: mpsc::UnboundedReceiver<(usize, Event)>,
    failures: BTreeSet<String>,
    series: BTreeMap<u32, SeriesAcc>,
    /// Deliveries per push.
    pub(crate) delivered: Arc<Delivered>,
}

/// What the workers reported at the end.
pub(crate) struct FleetReport {
    pub(crate) series: BTreeMap<u32, SeriesAcc>,
    pub(crate) totals: Totals,
    /// Connections the server closed during the run.
    pub(crate) dropped: u32,
    /// Workers that never reported their histograms.
    pub(crate) silent_workers: usize,
}

impl Fleet {
    /// Starts the workers, at most `per_worker` clients each, uids spread evenly.
    pub(crate) fn spawn(spec: &FleetSpec<'_>) -> anyhow::Result<Fleet> {
        let n = spec.users;
        let count = n.div_ceil(spec.per_worker.max(1));
        let concurrency = spec.concurrency.div_ceil(count).max(1);
        let worker_deadline =
            spec.deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(15);
        let (tx, events) = mpsc::unbounded_channel();
        let (changed, _) = watch::channel(0);
        let delivered = Arc::new(Delivered {
            per_push: (0..spec.pushes).map(|_| AtomicU32::new(0)).collect(),
            total: AtomicU64::new(0),
            changed,
        });
        let mut fleet = Fleet {
            states: Vec::new(),
            stdins: Vec::new(),
            children: Vec::new(),
            events,
            failures: BTreeSet::new(),
            series: BTreeMap::new(),
            delivered: delivered.clone(),
        };
        let mut first = 0;
        for index in 0..count {
            let share = n / count + u32::from(index < n % count);
            let mut command = Command::new(spec.exe);
            command
                .args(["bench", "fanout-worker"])
                .arg("--server")
                .arg(spec.target.gate.to_string())
                .arg("--appcode")
                .arg(spec.appcode.to_string())
                .arg("--uid-prefix")
                .arg(spec.prefix)
                .arg("--first")
                .arg(first.to_string())
                .arg("--count")
                .arg(share.to_string())
                .arg("--concurrency")
                .arg(concurrency.to_string())
                .arg("--login-timeout-secs")
                .arg(spec.login_timeout_secs.to_string())
                .arg("--deadline-secs")
                .arg(worker_deadline.as_secs().to_string())
                .arg("--tag")
                .arg(spec.tag.to_string())
                .env(SECRET_ENV, spec.secret)
                .env("LONGLINK_LOG", "warn")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            if !spec.client_ack {
                command.arg("--no-ack");
            }
            if let Some(source) = source_address(spec.target.gate, index) {
                command.arg("--source").arg(source.to_string());
            }
            let mut child = command.spawn().with_context(|| {
                format!(
                    "cannot start worker {index} ({} bench fanout-worker)",
                    spec.exe.display()
                )
            })?;
            first += share;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| anyhow!("worker {index}: no stdout"))?;
            let stderr = child
                .stderr
                .take()
                .ok_or_else(|| anyhow!("worker {index}: no stderr"))?;
            fleet.stdins.push(child.stdin.take());
            fleet.states.push(WorkerState {
                pid: child.id().unwrap_or(0),
                ..WorkerState::default()
            });
            fleet.children.push(child);
            let (tx, delivered) = (tx.clone(), delivered.clone());
            let index = index as usize;
            tokio::spawn(async move {
                let errors = tokio::spawn(async move {
                    let mut text = String::new();
                    let _ = stderr.take(8192).read_to_string(&mut text).await;
                    text
                });
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(pairs) = line.strip_prefix("got ") {
                        for (k, n) in pairs.split(' ').filter_map(parse_pair) {
                            delivered.add(k, n);
                        }
                        delivered.changed.send_modify(|version| *version += 1);
                    } else if let Some(event) = parse_event(&line) {
                        let _ = tx.send((index, event));
                    }
                }
                let stderr = errors.await.unwrap_or_default();
                let _ = tx.send((index, Event::Exited { stderr }));
            });
        }
        Ok(fleet)
    }

    fn apply(&mut self, index: usize, event: Event) {
        if let Event::Series(series, acc) = &event {
            self.series
                .entry(*series)
                .or_insert_with(SeriesAcc::empty)
                .merge(acc);
            return;
        }
        if let Event::Failure(message) = &event {
            if self.failures.len() < MAX_FAILURE_SAMPLES {
                self.failures.insert(message.clone());
            }
            return;
        }
        let Some(state) = self.states.get_mut(index) else {
            return;
        };
        match event {
            Event::Progress { ok, failed } => (state.ok, state.failed) = (ok, failed),
            Event::Ready { ok, failed } => {
                (state.ok, state.failed) = (ok, failed);
                state.ready = true;
            }
            Event::Dropped(dropped) => state.dropped = dropped,
            Event::Totals(totals) => state.totals = Some(totals),
            Event::Exited { stderr } => {
                state.exited = true;
                state.stderr = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
            }
            Event::Series(..) | Event::Failure(_) => {}
        }
    }

    /// Applies every event already received.
    pub(crate) fn drain(&mut self) {
        while let Ok((index, event)) = self.events.try_recv() {
            self.apply(index, event);
        }
    }

    /// Waits for the next event; `false` when no worker can send any more.
    async fn next(&mut self) -> bool {
        match self.events.recv().await {
            Some((index, event)) => {
                self.apply(index, event);
                true
            }
            None => false,
        }
    }

    pub(crate) fn logged_in(&self) -> u32 {
        self.states.iter().map(|s| s.ok).sum()
    }

    pub(crate) fn failed(&self) -> u32 {
        self.states.iter().map(|s| s.failed).sum()
    }

    pub(crate) fn dropped(&self) -> u32 {
        self.states.iter().map(|s| s.dropped).sum()
    }

    pub(crate) fn workers(&self) -> usize {
        self.states.len()
    }

    /// The first few distinct login failures.
    pub(crate) fn failure_samples(&self) -> Vec<String> {
        self.failures.iter().cloned().collect()
    }

    /// Waits until every worker attempted all its logins, showing them on `bar`; fails when a
    /// worker exits before that.
    pub(crate) async fn wait_logged_in(&mut self, bar: &ProgressBar) -> anyhow::Result<()> {
        while !self.states.iter().all(|s| s.ready) {
            if let Some((i, s)) = self
                .states
                .iter()
                .enumerate()
                .find(|(_, s)| s.exited && !s.ready)
            {
                let said = if s.stderr.is_empty() {
                    "(nothing on stderr)".to_owned()
                } else {
                    s.stderr.clone()
                };
                bail!("worker {i} exited before its logins were done: {said}");
            }
            if !self.next().await {
                bail!("every worker exited before the logins were done");
            }
            bar.set_position(u64::from(self.logged_in()));
            if self.failed() > 0 {
                bar.set_message(format!("({} failed)", self.failed()));
            }
        }
        Ok(())
    }

    /// CPU time the workers have used so far.
    pub(crate) fn cpu_time(&self) -> Duration {
        self.states
            .iter()
            .filter_map(|s| procfs::cpu_time(s.pid).ok())
            .sum()
    }

    /// Tells every worker to stop (closes its stdin), collects their final reports and waits
    /// for them to exit (killing any that take longer than [`WORKER_STOP_TIMEOUT`]).
    pub(crate) async fn finish(mut self) -> FleetReport {
        self.stdins.clear();
        let all_exited = async {
            while !self.states.iter().all(|s| s.exited) {
                if !self.next().await {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(WORKER_STOP_TIMEOUT, all_exited).await;
        for child in &mut self.children {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill().await;
            }
        }
        self.drain();
        let mut totals = Totals::default();
        for t in self.states.iter().filter_map(|s| s.totals) {
            totals.delivered += t.delivered;
            totals.duplicates += t.duplicates;
            totals.foreign += t.foreign;
            totals.ack_frames += t.ack_frames;
        }
        FleetReport {
            dropped: self.dropped(),
            silent_workers: self.states.iter().filter(|s| s.totals.is_none()).count(),
            series: std::mem::take(&mut self.series),
            totals,
        }
    }
}

/// The source address of worker `index`'s connections: against a loopback server, worker k
/// uses 127.0.0.(k + 2) with explicit ports (see [`SourcePorts`]); otherwise the kernel picks.
fn source_address(server: SocketAddr, index: u32) -> Option<IpAddr> {
    match server.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            let last = u8::try_from(index + 2).ok().filter(|last| *last < 255)?;
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
        }
        _ => None,
    }
}

fn parse_pair(pair: &str) -> Option<(usize, u32)> {
    let (k, n) = pair.split_once(':')?;
    Some((k.parse().ok()?, n.parse().ok()?))
}

fn parse_event(line: &str) -> Option<Event> {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let words: Vec<&str> = rest.split_whitespace().collect();
    let number = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
    let count = |i: usize| number(i).and_then(|n| u32::try_from(n).ok());
    match word {
        "progress" => Some(Event::Progress {
            ok: count(0)?,
            failed: count(1)?,
        }),
        "ready" => Some(Event::Ready {
            ok: count(0)?,
            failed: count(1)?,
        }),
        "dropped" => Some(Event::Dropped(count(0)?)),
        "failure" => Some(Event::Failure(rest.to_owned())),
        "series" => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(words.get(4)?)
                .ok()?;
            let hist: Histogram<u64> = Deserializer::new()
                .deserialize(&mut bytes.as_slice())
                .ok()?;
            let mut acc = SeriesAcc::empty();
            let _ = acc.hist.add(&hist);
            acc.max_us = number(2)?;
            acc.last_unix_us = number(3)?;
            Some(Event::Series(count(0)?, acc))
        }
        "totals" => Some(Event::Totals(Totals {
            delivered: number(0)?,
            duplicates: number(1)?,
            foreign: number(2)?,
            ack_frames: number(3)?,
        })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_round_trip() {
        let text = content(42, 3, 17, 1_700_000_000_123_456);
        assert_eq!(
            parse_content(42, text.as_bytes()),
            Some((3, 17, 1_700_000_000_123_456))
        );
        assert_eq!(parse_content(41, text.as_bytes()), None, "another run");
        assert_eq!(parse_content(42, b"hello"), None);
    }

    #[test]
    fn worker_lines_parse() {
        let mut hist = histogram();
        hist.record(1500).unwrap();
        hist.record(2500).unwrap();
        let mut bytes = Vec::new();
        V2Serializer::new().serialize(&hist, &mut bytes).unwrap();
        let line = format!(
            "series 4 2 2500 99 {}",
            base64::engine::general_purpose::STANDARD.encode(&bytes)
        );
        match parse_event(&line) {
            Some(Event::Series(4, acc)) => {
                assert_eq!(acc.hist.len(), 2);
                assert_eq!(acc.max_us, 2500);
                assert_eq!(acc.last_unix_us, 99);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_event("totals 5 1 2 3"),
            Some(Event::Totals(Totals {
                delivered: 5,
                duplicates: 1,
                foreign: 2,
                ack_frames: 3
            }))
        ));
        assert!(matches!(
            parse_event("ready 3 1 77"),
            Some(Event::Ready { ok: 3, failed: 1 })
        ));
        assert_eq!(parse_pair("12:7"), Some((12, 7)));
        assert!(parse_event("nonsense").is_none());
    }
}
