//! Scenario `c2c`: durable end-to-end messages at a fixed rate, open loop; the sender's ACK
//! latency and the receiver's delivery latency (DESIGN.md: p99 ≤ 10 ms end to end at
//! 10k msg/s, with fsync).
//!
//! 1. The server under test: by default the bench starts its own (`<exe> serve`, default
//!    config on free loopback ports, a temporary data dir), or it measures a running one
//!    (`--server ADDR --server-pid PID`).
//! 2. N receivers (appcode 130) and S senders (appcode 129) log in, each with its own uid
//!    (the uids carry a per-run tag, so an earlier run's messages are never redelivered).
//! 3. Open loop: message k is *due* at `t0 + k / rate`, on sender `k mod S`, to receiver
//!    `k mod N`. A sender writes every message as soon as it is due, whether or not earlier
//!    ones were answered (requests pipeline on its connection). Its content is the 8-byte
//!    big-endian k (then padding), its client_msg_id `b-<k>`, its seq_id k.
//!    Every latency is measured **from the due time**, not from the write: when the server
//!    (or the load generator) stalls, the messages that should have gone out meanwhile are
//!    charged the stall, so coordinated omission cannot hide it.
//! 4. ACK latency: the C2C response (matched by seq_id) − due time. End-to-end latency: the
//!    MSG push at the receiver − due time. Receivers acknowledge what they get with MSG_ACK
//!    (type 3), batched, so the full path runs: persist, ACK, push, receiver ACK.
//! 5. After the send phase the bench waits (at most `--drain-secs`) for outstanding ACKs and
//!    deliveries. Then every receiver flushes its acks and pulls its offline inbox
//!    (OFFLINE_PULL): a message ACKed before the pulls began that was neither pushed nor is in
//!    the inbox is **lost**.
//!    Nothing is dropped from the counts: errors, unanswered requests, late or missing
//!    deliveries, duplicates are all reported.
//!
//! The server's CPU time (`/proc/<pid>/stat`) from t0 to the end of the drain gives messages
//! per server CPU-second; the bench's own CPU time is reported beside it, since both share
//! the machine's cores.
//!
//! Per-message state lives in flat atomic arrays indexed by k (flags, ACK µs, delivery µs), so
//! the connection tasks share nothing else; histograms (HDR) and the time series are built
//! from those arrays at the end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::BytesMut;
use clap::Args;
use hdrhistogram::Histogram;
use longlink_proto::{Cmd, ContentType, ErrorCode, Frame, FrameCodec, FrameType, wire};
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use crate::client::{self, Minter, Session};
use crate::latency::{self, Latency, ms};
use crate::link::{LinkRead, LinkWrite, Transport};
use crate::num::round;
use crate::peers::{self, PeersOption};
use crate::plot;
use crate::procfs;
use crate::report::{Machine, RunStamp, by_thread, per, progress_bar, thousands, verdict};
use crate::server::{
    ConfigOverride, ServerIdentity, ServerTarget, Target, dev_secret, transport_overrides,
};

/// DESIGN.md target: end-to-end p99 and p99.9 at 10k msg/s, durable, zero loss.
const TARGET_RATE: u32 = 10_000;
const TARGET_E2E_P99_MS: f64 = 10.0;
const TARGET_E2E_P999_MS: f64 = 25.0;
/// Most messages one run may schedule (the per-message arrays take 9 bytes each).
const MAX_MESSAGES: u64 = 50_000_000;
/// Highest latency the histograms hold (longer ones are clamped to it), µs.
const HIST_MAX_US: u64 = 3_600_000_000;
/// Logins in flight while the connections are set up.
const LOGIN_CONCURRENCY: usize = 32;
/// t0 is this far after the last login, so every task is waiting when it comes.
const START_LEAD: Duration = Duration::from_millis(300);
/// How often the progress bar (and the completion check) runs.
const TICK: Duration = Duration::from_millis(100);
/// How long the receivers may take to flush their acks and pull their inboxes.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(20);
/// Pull page size for the verification (the server's maximum).
const VERIFY_PAGE: u32 = 500;
/// Most msgids in one MSG_ACK (the server refuses more).
const MAX_ACK_IDS: usize = 1000;
/// Connection events (drops, kicks) kept for the report.
const MAX_EVENTS: usize = 20;
/// seq_ids from here down are the bench's own (KEEPALIVE, MSG_ACK, OFFLINE_PULL); C2C
/// requests use k, which stays below [`MAX_MESSAGES`].
const OWN_SEQ_BASE: u32 = u32::MAX;

/// Per-message flags.
const SENT: u8 = 1;
const ACKED: u8 = 2;
const FAILED: u8 = 4;
const RECEIVED: u8 = 8;
const PULLED: u8 = 16;

/// `longlink bench c2c`: open-loop c2c messages at a fixed rate; ACK and end-to-end latency.
#[derive(Debug, Clone, Args)]
pub struct C2cArgs {
    /// Messages per second, over all senders (open loop: message k is due at k / rate).
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// How senders and receivers reach the gate: plain TCP, or WebSocket (a spawned server
    /// then listens for WebSocket on a free port; with --server, that address is the
    /// WebSocket listener).
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub transport: Transport,
    /// Length of the send phase in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Sender connections (appcode --sender-appcode). The gate answers one request at a time
    /// per connection and the store commits in groups, so one connection carries about
    /// (batch size / commit time) msg/s: use enough of them for --rate.
    #[arg(long, default_value_t = 64)]
    pub senders: u32,
    /// Receiver connections (appcode --receiver-appcode); message k goes to receiver k mod N.
    #[arg(long, default_value_t = 64)]
    pub receivers: u32,
    /// Bytes of content per message (at least 8: the message number).
    #[arg(long, default_value_t = 64)]
    pub content_bytes: usize,
    /// A receiver sends its MSG_ACK once this many msgids are pending …
    #[arg(long, default_value_t = 100)]
    pub ack_batch: usize,
    /// … or this many milliseconds after the first pending one arrived.
    #[arg(long, default_value_t = 10)]
    pub ack_interval_ms: u64,
    /// After the send phase, wait at most this long for outstanding ACKs and deliveries.
    #[arg(long, default_value_t = 15)]
    pub drain_secs: u64,
    /// The server measured: one started by the bench, or --server/--server-pid/--api.
    #[command(flatten)]
    pub target: ServerTarget,
    /// The receivers log in at this gate address instead of the gate the senders use (needs
    /// --server): c2c across two gates of a cluster (`scripts/bench-cluster.sh`). Only the
    /// senders' server's CPU and memory are read.
    #[arg(long, requires = "server")]
    pub receivers_server: Option<SocketAddr>,
    /// HS256 secret of --sender-appcode on the server at --server (default: the default
    /// config's secret of appcode 129). A spawned server's secrets are read from its config.
    #[arg(long, env = "LONGLINK_BENCH_SENDER_SECRET", hide_env_values = true)]
    pub sender_secret: Option<String>,
    /// HS256 secret of --receiver-appcode on the server at --server (default: the default
    /// config's secret of appcode 130).
    #[arg(long, env = "LONGLINK_BENCH_RECEIVER_SECRET", hide_env_values = true)]
    pub receiver_secret: Option<String>,
    /// The senders' appcode.
    #[arg(long, default_value_t = 129)]
    pub sender_appcode: u32,
    /// The receivers' appcode.
    #[arg(long, default_value_t = 130)]
    pub receiver_appcode: u32,
    /// uids are this prefix, a per-run tag, then s<i> (senders) or r<j> (receivers).
    #[arg(long, default_value = "bench-c2c-")]
    pub uid_prefix: String,
    /// Timeout of each connect + LOGIN, in seconds.
    #[arg(long, default_value_t = 10)]
    pub login_timeout_secs: u64,
    /// The whole run is abandoned after this many seconds (default: duration + drain + 120).
    #[arg(long)]
    pub deadline_secs: Option<u64>,
    /// LONGLINK_LOG of a spawned server (`info` is `longlink serve`'s default).
    #[arg(long, default_value = "info")]
    pub server_log: String,
    /// Write the inputs and figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Plot the latency distributions and the latency over time to this file (.svg or .png).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// The same workload (open loop, same rate, senders, receivers, content) against mosquitto
    /// and nats-server after longlink's (`--peers`).
    #[command(flatten)]
    pub peers: PeersOption,
}

/// Runs the scenario: prints the figures, writes `--json` and `--plot`. Fails (one line) when
/// the run could not be made (server, logins, deadline) or when ACKed messages were lost;
/// errors, unanswered requests and late deliveries are figures, not failures.
///
/// # Errors
/// Bad arguments, a server that does not start or answer, failed logins, the deadline, loss.
pub async fn run(args: C2cArgs) -> anyhow::Result<()> {
    let total = check(&args)?;
    if let Some(plot) = &args.plot {
        plot::check_path(plot)?;
    }
    // Checked first: a missing broker is said before the longlink run, not after it.
    let chosen = args.peers.resolve()?;
    let (mut report, deadline_secs) =
        run_longlink(&args, total, &[], async |_: &Target, _: &[String]| Ok(())).await?;
    // The peers, with the same schedule, once longlink's server is stopped.
    let r = &report.json.results;
    let longlink = peers::c2c::Longlink {
        messages_per_cpu_sec: r.messages_per_server_cpu_sec,
        e2e_p50_ms: r.e2e_latency_ms.p50,
        e2e_p99_ms: r.e2e_latency_ms.p99,
        e2e_p999_ms: r.e2e_latency_ms.p999,
    };
    let params = peers::c2c::Params {
        rate: args.rate,
        duration_secs: args.duration_secs,
        senders: args.senders,
        receivers: args.receivers,
        content_bytes: args.content_bytes,
        drain_secs: args.drain_secs,
        login_timeout_secs: args.login_timeout_secs,
        deadline_secs,
    };
    let section = peers::c2c::run(&chosen, &params, &longlink).await?;
    report.print();
    peers::c2c::print(&section, &longlink);
    report.json.peers = Some(section);
    if let Some(path) = &args.json {
        crate::report::write_json(path, &report.json)?;
    }
    if let Some(path) = &args.plot {
        plot::write(path, &report.plot)?;
    }
    let lost = report.json.results.lost;
    if lost > 0 {
        bail!(
            "{lost} message(s) were ACKed to their sender but neither delivered nor found in the receiver's inbox: lost"
        );
    }
    Ok(())
}

/// Checks the arguments; returns the number of messages scheduled.
fn check(args: &C2cArgs) -> anyhow::Result<u64> {
    if args.rate == 0 || args.duration_secs == 0 {
        bail!("--rate and --duration-secs must be at least 1");
    }
    if args.senders == 0 || args.receivers == 0 {
        bail!("--senders and --receivers must be at least 1");
    }
    if args.content_bytes < 8 {
        bail!("--content-bytes must be at least 8 (the message number)");
    }
    if args.ack_batch == 0 {
        bail!("--ack-batch must be at least 1");
    }
    let total = u64::from(args.rate) * args.duration_secs;
    if total > MAX_MESSAGES {
        bail!("--rate × --duration-secs = {total} messages, more than {MAX_MESSAGES} per run");
    }
    Ok(total)
}

/// The workload against longlink alone: starts (or finds) the server — a spawned one with
/// `overrides` besides the transport's and the unthrottled logins — runs `prepare` with the
/// receivers' uids once they are known (before anyone logs in), measures, stops the server.
/// Returns the report and the deadline used, in seconds.
async fn run_longlink(
    args: &C2cArgs,
    total: u64,
    overrides: &[ConfigOverride],
    prepare: impl AsyncFnOnce(&Target, &[String]) -> anyhow::Result<()>,
) -> anyhow::Result<(Report, u64)> {
    let deadline_secs = args
        .deadline_secs
        .unwrap_or(args.duration_secs + args.drain_secs + 120);
    let deadline = Instant::now() + Duration::from_secs(deadline_secs);
    let exe = std::env::current_exe().context("cannot find the longlink executable")?;
    let target = args
        .target
        .resolve_with(
            &exe,
            args.sender_appcode,
            &args.server_log,
            &[
                transport_overrides(args.transport)?,
                crate::server::unthrottled_logins(),
                overrides.to_vec(),
            ]
            .concat(),
            deadline,
            || {
                args.sender_secret
                    .clone()
                    .map_or_else(|| dev_secret(129), Ok)
            },
        )
        .await?;
    let outcome = tokio::time::timeout_at(deadline, measure(args, &target, total, prepare)).await;
    let report = target
        .end_run(outcome, |_| true, deadline_secs, "connections")
        .await?;
    Ok((report, deadline_secs))
}

/// One run's headline figures, for a scenario that runs the c2c workload as a part of its own
/// (`bench notify`: c2c with and without notifications).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Figures {
    pub(crate) messages_scheduled: u64,
    pub(crate) sent: u64,
    pub(crate) acked: u64,
    pub(crate) received: u64,
    pub(crate) lost: u64,
    pub(crate) errors: u64,
    /// ACKs per second, t0 → the last ACK.
    pub(crate) ack_rate: f64,
    /// Deliveries per second, t0 → the last delivery.
    pub(crate) delivery_rate: f64,
    pub(crate) measured_secs: f64,
    pub(crate) server_cpu_secs: f64,
    pub(crate) messages_per_server_cpu_sec: f64,
    pub(crate) server_cpu_us_per_message: f64,
    pub(crate) client_cpu_secs: f64,
    pub(crate) ack_latency_ms: Latency,
    pub(crate) e2e_latency_ms: Latency,
    pub(crate) server_threads_cpu_secs: BTreeMap<String, f64>,
    pub(crate) notes: Vec<String>,
}

/// Runs the c2c workload of `args` against a server the bench spawns with `overrides`;
/// `prepare` runs with the receivers' uids before anyone logs in. Prints nothing but the
/// run's header and progress; returns its figures.
///
/// # Errors
/// Bad arguments, a server that does not start, `prepare`'s, failed logins, the deadline.
pub(crate) async fn measure_spawned(
    args: &C2cArgs,
    overrides: &[ConfigOverride],
    prepare: impl AsyncFnOnce(&Target, &[String]) -> anyhow::Result<()>,
) -> anyhow::Result<Figures> {
    let total = check(args)?;
    let (report, _) = run_longlink(args, total, overrides, prepare).await?;
    let j = report.json;
    let r = j.results;
    Ok(Figures {
        messages_scheduled: total,
        sent: r.sent,
        acked: r.acked,
        received: r.received,
        lost: r.lost,
        errors: r.errors,
        ack_rate: r.ack_rate,
        delivery_rate: r.delivery_rate,
        measured_secs: r.measured_secs,
        server_cpu_secs: r.server_cpu_secs,
        messages_per_server_cpu_sec: r.messages_per_server_cpu_sec,
        server_cpu_us_per_message: r.server_cpu_us_per_message,
        client_cpu_secs: r.client_cpu_secs,
        ack_latency_ms: r.ack_latency_ms,
        e2e_latency_ms: r.e2e_latency_ms,
        server_threads_cpu_secs: r.server_threads_cpu_secs,
        notes: j.notes,
    })
}

// ---------------------------------------------------------------------------------------------
// Shared per-message state.

/// What every connection task shares: the schedule, the per-message arrays, counters.
struct Shared {
    t0: Instant,
    rate: u64,
    total: u64,
    senders: u64,
    receivers: u64,
    flags: Vec<AtomicU8>,
    /// ACK latency in µs + 1 (0: none).
    ack_us: Vec<AtomicU32>,
    /// End-to-end latency in µs + 1 (0: none).
    e2e_us: Vec<AtomicU32>,
    sent: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
    received: AtomicU64,
    /// Messages both ACKed and received (the drain waits for this to reach `acked`).
    acked_and_received: AtomicU64,
    /// A second MSG push of the same message.
    duplicate_deliveries: AtomicU64,
    /// A second answer to the same request.
    duplicate_answers: AtomicU64,
    /// C2C responses saying `duplicate` (the store saw the client_msg_id before).
    duplicate_stores: AtomicU64,
    /// A MSG at the wrong receiver, or frames the bench did not expect.
    misrouted: AtomicU64,
    unexpected: AtomicU64,
    /// Messages RECEIPT DELIVERED pushes named to their senders.
    receipts: AtomicU64,
    /// Nanoseconds after t0 of the last write, ACK and delivery.
    last_sent_ns: AtomicU64,
    last_ack_ns: AtomicU64,
    last_delivery_ns: AtomicU64,
    senders_done: AtomicU32,
    receivers_verified: AtomicU32,
    /// Nanoseconds after t0 when the receivers were told to pull their inboxes (u64::MAX
    /// before): only a message ACKed before then is surely in a pull's snapshot.
    verify_from_ns: AtomicU64,
    /// An empty histogram to copy the configuration of.
    template: Histogram<u64>,
    /// Error answers by "<cmd> <code>".
    errors: Mutex<BTreeMap<String, u64>>,
    /// Connection events (closed, kicked), the first few.
    events: Mutex<Vec<String>>,
}

impl Shared {
    fn new(
        t0: Instant,
        rate: u64,
        total: u64,
        senders: u64,
        receivers: u64,
        template: Histogram<u64>,
    ) -> Self {
        let zeros8 = || (0..total).map(|_| AtomicU8::new(0)).collect();
        let zeros32 = || (0..total).map(|_| AtomicU32::new(0)).collect();
        Self {
            t0,
            rate,
            total,
            senders,
            receivers,
            flags: zeros8(),
            ack_us: zeros32(),
            e2e_us: zeros32(),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            received: AtomicU64::new(0),
            acked_and_received: AtomicU64::new(0),
            duplicate_deliveries: AtomicU64::new(0),
            duplicate_answers: AtomicU64::new(0),
            duplicate_stores: AtomicU64::new(0),
            misrouted: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            receipts: AtomicU64::new(0),
            last_sent_ns: AtomicU64::new(0),
            last_ack_ns: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
            senders_done: AtomicU32::new(0),
            receivers_verified: AtomicU32::new(0),
            verify_from_ns: AtomicU64::new(u64::MAX),
            template,
            errors: Mutex::new(BTreeMap::new()),
            events: Mutex::new(Vec::new()),
        }
    }

    fn histogram(&self) -> Histogram<u64> {
        Histogram::new_from(&self.template)
    }

    /// When message k is due, after t0.
    fn offset(&self, k: u64) -> Duration {
        Duration::from_nanos(k.saturating_mul(1_000_000_000) / self.rate)
    }

    fn due(&self, k: u64) -> Instant {
        self.t0 + self.offset(k)
    }

    /// `at − due(k)` in µs + 1, the encoding of the latency arrays.
    fn latency_code(&self, k: u64, at: Instant) -> u32 {
        let micros = at.saturating_duration_since(self.due(k)).as_micros();
        u32::try_from(micros)
            .unwrap_or(u32::MAX - 1)
            .saturating_add(1)
    }

    fn since_t0_ns(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.t0).as_nanos()).unwrap_or(u64::MAX)
    }

    fn flag(&self, k: u64) -> Option<&AtomicU8> {
        self.flags.get(usize::try_from(k).ok()?)
    }

    fn on_sent(&self, k: u64) {
        if let Some(flag) = self.flag(k) {
            flag.fetch_or(SENT, Ordering::Relaxed);
        }
    }

    fn on_ack(&self, k: u64, at: Instant, duplicate_store: bool) {
        let Some(flag) = self.flag(k) else {
            self.unexpected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let before = flag.fetch_or(ACKED, Ordering::AcqRel);
        if before & (ACKED | FAILED) != 0 {
            self.duplicate_answers.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.ack_us[k as usize].store(self.latency_code(k, at), Ordering::Relaxed);
        self.acked.fetch_add(1, Ordering::Relaxed);
        if before & RECEIVED != 0 {
            self.acked_and_received.fetch_add(1, Ordering::Relaxed);
        }
        if duplicate_store {
            self.duplicate_stores.fetch_add(1, Ordering::Relaxed);
        }
        self.last_ack_ns
            .fetch_max(self.since_t0_ns(at), Ordering::Relaxed);
    }

    fn on_failed(&self, k: u64, what: String) {
        self.count_error(what);
        let Some(flag) = self.flag(k) else {
            return;
        };
        let before = flag.fetch_or(FAILED, Ordering::AcqRel);
        if before & (ACKED | FAILED) != 0 {
            self.duplicate_answers.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_received(&self, k: u64, receiver: u64, at: Instant) {
        let Some(flag) = self.flag(k) else {
            self.unexpected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if k % self.receivers != receiver {
            self.misrouted.fetch_add(1, Ordering::Relaxed);
        }
        let before = flag.fetch_or(RECEIVED, Ordering::AcqRel);
        if before & RECEIVED != 0 {
            self.duplicate_deliveries.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.e2e_us[k as usize].store(self.latency_code(k, at), Ordering::Relaxed);
        self.received.fetch_add(1, Ordering::Relaxed);
        if before & ACKED != 0 {
            self.acked_and_received.fetch_add(1, Ordering::Relaxed);
        }
        self.last_delivery_ns
            .fetch_max(self.since_t0_ns(at), Ordering::Relaxed);
    }

    fn on_pulled(&self, k: u64) {
        match self.flag(k) {
            Some(flag) => {
                flag.fetch_or(PULLED, Ordering::Relaxed);
            }
            None => {
                self.unexpected.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn count_error(&self, what: String) {
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(what).or_default() += 1;
        }
    }

    fn event(&self, what: String) {
        if let Ok(mut events) = self.events.lock()
            && events.len() < MAX_EVENTS
        {
            events.push(what);
        }
    }
}

/// `<CMD> <CODE>` of an ERROR frame, for counting.
fn error_name(cmd: &str, frame: &Frame) -> String {
    let code = frame.decode_body::<wire::Error>().ok().map_or_else(
        || "undecodable".to_owned(),
        |error| {
            ErrorCode::try_from(error.code)
                .map_or_else(|_| error.code.to_string(), |c| c.as_str_name().to_owned())
        },
    );
    format!("{cmd} {code}")
}

/// The message number in a MSG's content: its first 8 bytes, big-endian.
fn message_number(content: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = content.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

fn keepalive_frame(seq_id: u32) -> Frame {
    Frame::request(
        Cmd::Keepalive,
        seq_id,
        0,
        &wire::KeepaliveRequest {
            client_time_ms: longlink_proto::unix_ms(),
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Senders.

/// What a sender's writer measured: the delay between a message's due time and the moment
/// its bytes were handed to the kernel (the load generator's own lateness).
struct SenderOut {
    send_lag: Histogram<u64>,
}

/// Writes messages index, index + S, index + 2S, … each when it is due, without waiting for
/// answers; sends a KEEPALIVE when nothing else went out for a keepalive interval.
#[allow(clippy::too_many_arguments)]
async fn sender_writer(
    shared: Arc<Shared>,
    index: u64,
    mut write: LinkWrite,
    receiver_uids: Arc<Vec<String>>,
    receiver_appcode: u32,
    content_bytes: usize,
    keepalive: Duration,
    stop: CancellationToken,
) -> SenderOut {
    let mut send_lag = shared.histogram();
    let mut content = vec![0u8; content_bytes];
    let mut buf = BytesMut::new();
    let mut batch = Vec::new();
    let mut k = index;
    let mut next_ping = Instant::now() + keepalive;
    let mut pings = 0u32;
    while k < shared.total {
        let due = shared.due(k);
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(due.min(next_ping)) => {}
        }
        let now = Instant::now();
        if now >= next_ping {
            pings = pings.wrapping_add(1);
            keepalive_frame(OWN_SEQ_BASE - pings % 1000).encode_to(&mut buf);
        }
        next_ping = now + keepalive;
        while k < shared.total && shared.due(k) <= now {
            content[..8].copy_from_slice(&k.to_be_bytes());
            let receiver = &receiver_uids[(k % shared.receivers) as usize];
            let request = wire::C2cRequest {
                to: Some(wire::UserRef {
                    appcode: receiver_appcode,
                    uid: receiver.clone(),
                }),
                client_msg_id: format!("b-{k}"),
                content_type: ContentType::Business as i32,
                msgtype: 0,
                content: bytes::Bytes::copy_from_slice(&content),
            };
            Frame::request(Cmd::C2c, k as u32, 0, &request).encode_to(&mut buf);
            batch.push(k);
            k += shared.senders;
        }
        if buf.is_empty() {
            continue;
        }
        let written = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            written = write.send(&mut buf) => written,
        };
        buf.clear();
        if let Err(err) = written {
            shared.event(format!("sender {index}: write failed: {err}"));
            break;
        }
        let at = Instant::now();
        for &k in &batch {
            shared.on_sent(k);
            let lag = at.saturating_duration_since(shared.due(k)).as_micros() as u64;
            send_lag.saturating_record(lag.max(1));
        }
        shared.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
        shared
            .last_sent_ns
            .fetch_max(shared.since_t0_ns(at), Ordering::Relaxed);
        batch.clear();
    }
    shared.senders_done.fetch_add(1, Ordering::Relaxed);
    // Keep the write half (and so the connection) open until the bench is done: the
    // answers to what was sent are still arriving.
    stop.cancelled().await;
    let _ = write.shutdown().await;
    SenderOut { send_lag }
}

/// Reads a sender's answers: C2C responses (ACKs) and ERRORs, matched by seq_id = k.
async fn sender_reader(
    shared: Arc<Shared>,
    index: u64,
    mut read: LinkRead,
    stop: CancellationToken,
) {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        let read_result = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            read_result = read.read_buf(&mut buf) => read_result,
        };
        match read_result {
            Ok(0) => {
                shared.event(format!("sender {index}: closed by the server"));
                return;
            }
            Ok(_) => {}
            Err(err) => {
                shared.event(format!("sender {index}: read failed: {err}"));
                return;
            }
        }
        let now = Instant::now();
        loop {
            let frame = match codec.decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(err) => {
                    shared.event(format!("sender {index}: bad frame: {err}"));
                    return;
                }
            };
            let k = u64::from(frame.header.seq_id);
            match (frame.cmd(), frame.header.frame_type) {
                (Some(Cmd::C2c), FrameType::Response) => {
                    let duplicate = frame
                        .decode_body::<wire::C2cResponse>()
                        .is_ok_and(|r| r.duplicate);
                    shared.on_ack(k, now, duplicate);
                }
                (Some(Cmd::Error), FrameType::Response) if k < shared.total => {
                    shared.on_failed(k, error_name("C2C", &frame));
                }
                (Some(Cmd::Error), _) => shared.count_error(error_name("(push)", &frame)),
                (Some(Cmd::Keepalive), FrameType::Response) => {}
                (Some(Cmd::Receipt), FrameType::Push) => {
                    // The receiver's first ack of each message comes back as a receipt.
                    let named = frame
                        .decode_body::<wire::Receipt>()
                        .map_or(0, |r| r.msgids.len() as u64);
                    shared.receipts.fetch_add(named, Ordering::Relaxed);
                }
                (Some(Cmd::Kick), _) => {
                    let reason = frame
                        .decode_body::<wire::Kick>()
                        .map_or_else(|_| "?".to_owned(), |kick| kick.message);
                    shared.event(format!("sender {index}: kicked: {reason}"));
                    return;
                }
                _ => {
                    shared.unexpected.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Receivers.

/// What a receiver's reader asks its writer to send.
enum Outgoing {
    Ack { seq_id: u32, msgids: Vec<u64> },
    Pull { seq_id: u32, cursor: u64 },
}

/// Counts of one receiver.
#[derive(Debug, Default, Clone, Copy)]
struct ReceiverOut {
    ack_frames: u64,
    acked_ids: u64,
}

/// Sends a receiver's MSG_ACKs and pulls (from its reader) and KEEPALIVEs. Runs apart from
/// the reader so that a slow server never stops the receiver from reading its pushes.
async fn receiver_writer(
    shared: Arc<Shared>,
    index: u64,
    mut write: LinkWrite,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    keepalive: Duration,
    stop: CancellationToken,
) {
    let mut buf = BytesMut::new();
    let mut next_ping = Instant::now() + keepalive;
    let mut pings = 0u32;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            next = outgoing.recv() => {
                let Some(first) = next else { break };
                let mut next = Some(first);
                while let Some(item) = next.take() {
                    match item {
                        Outgoing::Ack { seq_id, msgids } => Frame::new(
                            Cmd::MsgAck,
                            FrameType::Ack,
                            seq_id,
                            0,
                            &wire::MsgAck { msgids },
                        )
                        .encode_to(&mut buf),
                        Outgoing::Pull { seq_id, cursor } => Frame::request(
                            Cmd::OfflinePull,
                            seq_id,
                            0,
                            &wire::OfflinePullRequest {
                                cursor,
                                page_size: VERIFY_PAGE,
                            },
                        )
                        .encode_to(&mut buf),
                    }
                    next = outgoing.try_recv().ok();
                }
            }
            _ = tokio::time::sleep_until(next_ping) => {
                pings = pings.wrapping_add(1);
                keepalive_frame(OWN_SEQ_BASE - pings % 1000).encode_to(&mut buf);
            }
        }
        next_ping = Instant::now() + keepalive;
        let written = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            written = write.send(&mut buf) => written,
        };
        buf.clear();
        if let Err(err) = written {
            shared.event(format!("receiver {index}: write failed: {err}"));
            break;
        }
    }
    stop.cancelled().await;
    let _ = write.shutdown().await;
}

/// Reads a receiver's pushes: records each MSG's end-to-end latency and queues its msgid for
/// a batched MSG_ACK. When `verify` fires: flushes the acks and pulls the whole offline inbox
/// (what the server holds for this device unacknowledged), marking what it finds.
#[allow(clippy::too_many_arguments)]
async fn receiver_reader(
    shared: Arc<Shared>,
    index: u64,
    mut read: LinkRead,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    ack_batch: usize,
    ack_interval: Duration,
    verify: CancellationToken,
    stop: CancellationToken,
) -> ReceiverOut {
    let mut out = ReceiverOut::default();
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut pending: Vec<u64> = Vec::new();
    let mut ack_due: Option<Instant> = None;
    let mut seq = 0u32;
    let mut next_seq = || {
        seq = seq.wrapping_add(1);
        OWN_SEQ_BASE - 1000 - seq % 1_000_000
    };
    // The seq_id of the pull in flight, while verifying.
    let mut pull_seq: Option<u32> = None;
    let mut verifying = false;
    let far = Instant::now() + Duration::from_secs(365 * 86_400);
    loop {
        let flush_now;
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = verify.cancelled(), if !verifying => {
                verifying = true;
                flush(&outgoing, &mut pending, &mut out, &mut next_seq);
                ack_due = None;
                let seq_id = next_seq();
                pull_seq = Some(seq_id);
                let _ = outgoing.send(Outgoing::Pull { seq_id, cursor: 0 });
                continue;
            }
            _ = tokio::time::sleep_until(ack_due.unwrap_or(far)), if ack_due.is_some() => {
                flush_now = true;
            }
            read_result = read.read_buf(&mut buf) => {
                match read_result {
                    Ok(0) => {
                        shared.event(format!("receiver {index}: closed by the server"));
                        break;
                    }
                    Ok(_) => {}
                    Err(err) => {
                        shared.event(format!("receiver {index}: read failed: {err}"));
                        break;
                    }
                }
                let now = Instant::now();
                loop {
                    let frame = match codec.decode(&mut buf) {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break,
                        Err(err) => {
                            shared.event(format!("receiver {index}: bad frame: {err}"));
                            return out;
                        }
                    };
                    match (frame.cmd(), frame.header.frame_type) {
                        (Some(Cmd::Msg), FrameType::Push) => {
                            match frame.decode_body::<wire::Msg>() {
                                Ok(msg) => match message_number(&msg.content) {
                                    Some(k) => {
                                        shared.on_received(k, index, now);
                                        pending.push(msg.msgid);
                                        if ack_due.is_none() {
                                            ack_due = Some(now + ack_interval);
                                        }
                                    }
                                    None => {
                                        shared.unexpected.fetch_add(1, Ordering::Relaxed);
                                    }
                                },
                                Err(_) => {
                                    shared.unexpected.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        (Some(Cmd::OfflinePull), FrameType::Response)
                            if Some(frame.header.seq_id) == pull_seq =>
                        {
                            let page = frame.decode_body::<wire::OfflinePullResponse>();
                            match page {
                                Ok(page) => {
                                    for msg in &page.messages {
                                        match message_number(&msg.content) {
                                            Some(k) => shared.on_pulled(k),
                                            None => {
                                                shared.unexpected.fetch_add(1, Ordering::Relaxed);
                                            }
                                        }
                                    }
                                    if page.more && !page.messages.is_empty() {
                                        let seq_id = next_seq();
                                        pull_seq = Some(seq_id);
                                        let _ = outgoing.send(Outgoing::Pull {
                                            seq_id,
                                            cursor: page.next_cursor,
                                        });
                                    } else {
                                        pull_seq = None;
                                        shared.receivers_verified.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                Err(err) => {
                                    shared.event(format!("receiver {index}: bad pull page: {err}"));
                                    pull_seq = None;
                                }
                            }
                        }
                        (Some(Cmd::Error), FrameType::Response)
                            if Some(frame.header.seq_id) == pull_seq =>
                        {
                            shared.count_error(error_name("OFFLINE_PULL", &frame));
                            pull_seq = None;
                        }
                        (Some(Cmd::Error), _) => {
                            shared.count_error(error_name("MSG_ACK", &frame));
                        }
                        (Some(Cmd::Keepalive), FrameType::Response) => {}
                        (Some(Cmd::Kick), _) => {
                            let reason = frame
                                .decode_body::<wire::Kick>()
                                .map_or_else(|_| "?".to_owned(), |kick| kick.message);
                            shared.event(format!("receiver {index}: kicked: {reason}"));
                            return out;
                        }
                        _ => {
                            shared.unexpected.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                flush_now = pending.len() >= ack_batch || verifying;
            }
        }
        if flush_now && !pending.is_empty() {
            flush(&outgoing, &mut pending, &mut out, &mut next_seq);
            ack_due = None;
        }
    }
    out
}

/// Hands the pending msgids to the writer as MSG_ACKs of at most [`MAX_ACK_IDS`] each.
fn flush(
    outgoing: &mpsc::UnboundedSender<Outgoing>,
    pending: &mut Vec<u64>,
    out: &mut ReceiverOut,
    next_seq: &mut impl FnMut() -> u32,
) {
    for chunk in pending.chunks(MAX_ACK_IDS) {
        out.ack_frames += 1;
        out.acked_ids += chunk.len() as u64;
        let _ = outgoing.send(Outgoing::Ack {
            seq_id: next_seq(),
            msgids: chunk.to_vec(),
        });
    }
    pending.clear();
}

// ---------------------------------------------------------------------------------------------
// The run.

/// The figures of one run.
struct Report {
    json: C2cJson,
    plot: plot::LatencyPlot,
}

#[derive(Debug, Serialize)]
struct C2cJson {
    #[serde(flatten)]
    run: RunStamp,
    inputs: Inputs,
    server: ServerInfo,
    machine: Machine,
    results: Results,
    targets: Targets,
    verdict: Verdict,
    notes: Vec<String>,
    /// The same workload against the peers, in the same run (`--peers`).
    peers: Option<peers::Section<peers::c2c::Run>>,
}

#[derive(Debug, Serialize)]
struct Inputs {
    /// `tcp` or `ws`: how senders and receivers reached the gate.
    transport: Transport,
    /// The address they connected to (the gate's listener of `transport`).
    endpoint: String,
    /// The receivers' gate when it is not `endpoint` (--receivers-server).
    #[serde(skip_serializing_if = "Option::is_none")]
    receivers_endpoint: Option<String>,
    rate: u32,
    duration_secs: u64,
    messages_scheduled: u64,
    senders: u32,
    receivers: u32,
    content_bytes: usize,
    ack_batch: usize,
    ack_interval_ms: u64,
    drain_secs: u64,
    sender_appcode: u32,
    receiver_appcode: u32,
    uid_prefix: String,
}

#[derive(Debug, Serialize)]
struct ServerInfo {
    #[serde(flatten)]
    identity: ServerIdentity,
    log_level: Option<String>,
    data_dir_fs: Option<String>,
}

#[derive(Debug, Serialize)]
struct Results {
    /// Written to a sender's socket.
    sent: u64,
    /// Scheduled but never written (a sender's connection failed, or the run was cut).
    not_sent: u64,
    /// Answered with a C2C response (stored).
    acked: u64,
    /// Answered with an ERROR.
    errors: u64,
    /// Sent, but neither ACKed nor refused by the end of the drain.
    unanswered: u64,
    /// Pushed to the receiver (first copy).
    received: u64,
    /// ACKed but not pushed to the receiver by the end of the drain.
    acked_not_received: u64,
    /// … of which the receiver's offline inbox holds (delivered by pull, not lost).
    acked_not_received_in_inbox: u64,
    /// ACKed before the inbox pulls began, never pushed and not in the inbox.
    lost: u64,
    /// ACKed after the inbox pulls began (the server was still working off a backlog) and
    /// not pushed before the end: not verifiable by those pulls, so not counted as lost.
    acked_late_unverified: u64,
    /// Whether every receiver finished its inbox pull (otherwise `lost` is an upper bound).
    inbox_verified: bool,
    /// Pushed to the receiver although the sender got an error or no answer.
    received_without_ack: u64,
    /// In the receiver's inbox (not pushed) although the sender got an error or no answer.
    stored_without_ack: u64,
    duplicate_deliveries: u64,
    duplicate_answers: u64,
    duplicate_stores: u64,
    misrouted: u64,
    unexpected_frames: u64,
    /// Messages the senders were told were delivered (RECEIPT DELIVERED pushes).
    delivery_receipts: u64,
    error_counts: BTreeMap<String, u64>,
    events: Vec<String>,
    /// t0 → the last write.
    send_secs: f64,
    achieved_send_rate: f64,
    /// t0 → the last ACK; ACKs per second over it.
    ack_secs: f64,
    ack_rate: f64,
    /// t0 → the last delivery; deliveries per second over it.
    delivery_secs: f64,
    delivery_rate: f64,
    /// t0 → the end of the drain: the interval the CPU and I/O figures cover.
    measured_secs: f64,
    /// Server CPU over that interval.
    server_cpu_secs: f64,
    /// … as a share of one core (2.0 = both cores of this machine, all the time).
    server_cpu_share: f64,
    messages_per_server_cpu_sec: f64,
    server_cpu_us_per_message: f64,
    /// Server CPU by thread name (`tokio-runtime-w` = tokio workers and blocking pool,
    /// `longlink-store-` = the store's writer thread); threads that ended are missing.
    server_threads_cpu_secs: BTreeMap<String, f64>,
    /// The bench's own CPU over the same interval (same cores as the server).
    client_cpu_secs: f64,
    /// `/proc/<server>/io` over the same interval.
    server_write_bytes: u64,
    server_write_bytes_per_message: f64,
    server_write_syscalls: u64,
    receiver_ack_frames: u64,
    receiver_acked_ids: u64,
    ack_latency_ms: Latency,
    e2e_latency_ms: Latency,
    /// Due time → bytes handed to the kernel: the load generator's own lateness.
    send_lag_ms: Latency,
    /// The percentile distribution of both latencies.
    percentiles: Vec<PercentilePoint>,
    /// Latency by due time, in buckets of `bucket_secs`.
    over_time: Vec<TimePoint>,
    bucket_secs: f64,
}

#[derive(Debug, Serialize)]
struct PercentilePoint {
    percentile: f64,
    ack_ms: f64,
    e2e_ms: f64,
}

#[derive(Debug, Serialize)]
struct TimePoint {
    t_secs: f64,
    messages: u64,
    ack_p50_ms: f64,
    ack_p99_ms: f64,
    e2e_p50_ms: f64,
    e2e_p99_ms: f64,
    e2e_max_ms: f64,
}

#[derive(Debug, Serialize)]
struct Targets {
    rate: u32,
    e2e_p99_ms: f64,
    e2e_p999_ms: f64,
    lost: u64,
}

#[derive(Debug, Serialize)]
struct Verdict {
    /// The target is stated at 10k msg/s; below that rate the checks are indicative only.
    at_target_rate: bool,
    rate_reached: bool,
    e2e_p99_met: bool,
    e2e_p999_met: bool,
    zero_loss: bool,
    everything_delivered: bool,
}

/// An empty latency histogram in µs: 1 µs … 1 h at 3 significant figures.
fn histogram_template() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).context("cannot create a histogram")
}

/// Logs in `count` connections as `<prefix>{i}`, a few at a time.
async fn login_all(
    gate: SocketAddr,
    transport: Transport,
    minter: Arc<Minter>,
    prefix: String,
    count: u32,
    timeout: Duration,
) -> anyhow::Result<Vec<Session>> {
    let permits = Arc::new(Semaphore::new(LOGIN_CONCURRENCY));
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let (minter, permits, uid) = (minter.clone(), permits.clone(), format!("{prefix}{i}"));
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let session = client::login(gate, transport, None, &minter, &uid, timeout)
                .await
                .map_err(|err| anyhow!("login of {uid} (appcode {}): {err}", minter.appcode()))?;
            anyhow::Ok((i, session))
        });
    }
    let mut sessions: Vec<Option<Session>> = (0..count).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (i, session) = joined.context("login task failed")??;
        sessions[i as usize] = Some(session);
    }
    Ok(sessions.into_iter().flatten().collect())
}

/// What is known about the server and the run before the connections open.
struct Setup {
    version: String,
    /// The gate's listener of `--transport`.
    endpoint: SocketAddr,
    data_dir_fs: Option<String>,
    sender_secret: String,
    receiver_secret: String,
    /// uid prefix with the run tag.
    prefix: String,
    loadavg: String,
    notes: Vec<String>,
}

async fn setup(args: &C2cArgs, target: &Target, total: u64) -> anyhow::Result<Setup> {
    let mut notes = Vec::new();
    let endpoint = target.endpoint(args.transport)?;
    let loadavg = procfs::loadavg();
    let version = target.version().await;
    let data_dir_fs = target.data_dir().and_then(|dir| procfs::fs_type(&dir));
    if data_dir_fs.as_deref() == Some("tmpfs") {
        notes.push("the server's data dir is on tmpfs: fsync costs nothing there, so these latencies are not those of a durable store".to_owned());
    }
    // With --server: the given secrets, or the default config's of appcodes 129 and 130.
    let secret = |appcode: u32, given: &Option<String>, default_of: u32| {
        if target.is_spawned() {
            target
                .secret_of(appcode)
                .ok_or_else(|| anyhow!("appcode {appcode} is not in the server's config"))
        } else {
            given.clone().map_or_else(|| dev_secret(default_of), Ok)
        }
    };
    let sender_secret = secret(args.sender_appcode, &args.sender_secret, 129)?;
    let receiver_secret = secret(args.receiver_appcode, &args.receiver_secret, 130)?;
    let prefix = format!("{}{}-", args.uid_prefix, longlink_proto::unix_ms());
    println!(
        "longlink bench c2c: {} msg/s for {} s ({} messages, open loop), {} senders (appcode {}) → {} receivers (appcode {}), {} B content, over {}",
        thousands(u64::from(args.rate)),
        args.duration_secs,
        thousands(total),
        args.senders,
        args.sender_appcode,
        args.receivers,
        args.receiver_appcode,
        args.content_bytes,
        args.transport
    );
    println!(
        "{}{}",
        target.describe(&version),
        data_dir_fs
            .as_deref()
            .map(|fs| format!(", store on {fs}"))
            .unwrap_or_default()
    );
    Ok(Setup {
        version,
        endpoint,
        data_dir_fs,
        sender_secret,
        receiver_secret,
        prefix,
        loadavg,
        notes,
    })
}

/// The connection tasks of a run and what they share.
struct Running {
    shared: Arc<Shared>,
    stop: CancellationToken,
    verify: CancellationToken,
    senders: JoinSet<SenderOut>,
    receivers: JoinSet<ReceiverOut>,
    helpers: JoinSet<()>,
}

impl Running {
    /// Logs every connection in (receivers first, so they are online before the first
    /// message), then starts their tasks; message 0 is due [`START_LEAD`] later.
    async fn start(
        args: &C2cArgs,
        setup: &Setup,
        total: u64,
        receiver_uids: Arc<Vec<String>>,
    ) -> anyhow::Result<Running> {
        let login_timeout = Duration::from_secs(args.login_timeout_secs);
        let endpoint = setup.endpoint;
        let receiver_sessions = login_all(
            args.receivers_server.unwrap_or(endpoint),
            args.transport,
            Arc::new(Minter::new(args.receiver_appcode, &setup.receiver_secret)),
            format!("{}r", setup.prefix),
            args.receivers,
            login_timeout,
        )
        .await?;
        let sender_sessions = login_all(
            endpoint,
            args.transport,
            Arc::new(Minter::new(args.sender_appcode, &setup.sender_secret)),
            format!("{}s", setup.prefix),
            args.senders,
            login_timeout,
        )
        .await?;
        let shared = Arc::new(Shared::new(
            Instant::now() + START_LEAD,
            u64::from(args.rate),
            total,
            u64::from(args.senders),
            u64::from(args.receivers),
            histogram_template()?,
        ));
        let mut running = Running {
            shared: shared.clone(),
            stop: CancellationToken::new(),
            verify: CancellationToken::new(),
            senders: JoinSet::new(),
            receivers: JoinSet::new(),
            helpers: JoinSet::new(),
        };
        let ack_interval = Duration::from_millis(args.ack_interval_ms);
        for (j, session) in receiver_sessions.into_iter().enumerate() {
            let keepalive = session.keepalive;
            let (read, write) = session.link.into_split();
            let (tx, rx) = mpsc::unbounded_channel();
            running.helpers.spawn(receiver_writer(
                shared.clone(),
                j as u64,
                write,
                rx,
                keepalive,
                running.stop.clone(),
            ));
            running.receivers.spawn(receiver_reader(
                shared.clone(),
                j as u64,
                read,
                tx,
                args.ack_batch,
                ack_interval,
                running.verify.clone(),
                running.stop.clone(),
            ));
        }
        for (i, session) in sender_sessions.into_iter().enumerate() {
            let keepalive = session.keepalive;
            let (read, write) = session.link.into_split();
            running.helpers.spawn(sender_reader(
                shared.clone(),
                i as u64,
                read,
                running.stop.clone(),
            ));
            running.senders.spawn(sender_writer(
                shared.clone(),
                i as u64,
                write,
                receiver_uids.clone(),
                args.receiver_appcode,
                args.content_bytes,
                keepalive,
                running.stop.clone(),
            ));
        }
        Ok(running)
    }

    /// Shows progress through the send phase, then waits (at most `--drain-secs` after the
    /// senders are done, or after the send phase should have ended) until every sent message
    /// is answered and every ACKed one delivered. Returns whether that happened.
    async fn drive(&self, args: &C2cArgs) -> bool {
        let shared = &self.shared;
        let bar = progress_bar(shared.total, "sent, {msg}");
        let drain = Duration::from_secs(args.drain_secs);
        let send_end = shared.due(shared.total);
        let mut drain_until = None;
        let drained = loop {
            tokio::time::sleep(TICK).await;
            let sent = shared.sent.load(Ordering::Relaxed);
            let acked = shared.acked.load(Ordering::Relaxed);
            let failed = shared.failed.load(Ordering::Relaxed);
            bar.set_position(sent);
            bar.set_message(format!(
                "{acked} acked, {} received, {failed} errors{}",
                shared.received.load(Ordering::Relaxed),
                if drain_until.is_some() {
                    " (draining)"
                } else {
                    ""
                }
            ));
            let senders_done = shared.senders_done.load(Ordering::Relaxed) >= args.senders;
            if !senders_done && Instant::now() < send_end + drain {
                continue;
            }
            let until = *drain_until.get_or_insert_with(|| Instant::now() + drain);
            if senders_done
                && acked + failed >= sent
                && shared.acked_and_received.load(Ordering::Relaxed) >= acked
            {
                break true;
            }
            if Instant::now() >= until {
                break false;
            }
        };
        bar.finish_and_clear();
        drained
    }

    /// Every receiver flushes its acks and pulls its inbox; returns whether all finished
    /// within [`VERIFY_TIMEOUT`].
    async fn verify(&self, receivers: u32) -> bool {
        self.shared
            .verify_from_ns
            .store(self.shared.since_t0_ns(Instant::now()), Ordering::Relaxed);
        self.verify.cancel();
        let until = Instant::now() + VERIFY_TIMEOUT;
        while self.shared.receivers_verified.load(Ordering::Relaxed) < receivers
            && Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.shared.receivers_verified.load(Ordering::Relaxed) >= receivers
    }

    /// Stops every task; returns the senders' lag histogram and the receivers' counts.
    async fn finish(mut self) -> (Histogram<u64>, ReceiverOut) {
        self.stop.cancel();
        let mut send_lag = self.shared.histogram();
        while let Some(joined) = self.senders.join_next().await {
            if let Ok(out) = joined {
                let _ = send_lag.add(&out.send_lag);
            }
        }
        let mut receiver_out = ReceiverOut::default();
        while let Some(joined) = self.receivers.join_next().await {
            if let Ok(out) = joined {
                receiver_out.ack_frames += out.ack_frames;
                receiver_out.acked_ids += out.acked_ids;
            }
        }
        while self.helpers.join_next().await.is_some() {}
        (send_lag, receiver_out)
    }
}

async fn measure(
    args: &C2cArgs,
    target: &Target,
    total: u64,
    prepare: impl AsyncFnOnce(&Target, &[String]) -> anyhow::Result<()>,
) -> anyhow::Result<Report> {
    let setup = setup(args, target, total).await?;
    let receiver_uids: Arc<Vec<String>> = Arc::new(
        (0..args.receivers)
            .map(|j| format!("{}r{j}", setup.prefix))
            .collect(),
    );
    prepare(target, &receiver_uids).await?;
    let running = Running::start(args, &setup, total, receiver_uids).await?;
    // The measured interval runs from t0 to the end of the drain. Both processes are idle
    // until t0: what is read now is what they had used at t0. The load generator is this
    // process.
    let own_cpu = || procfs::cpu_time(std::process::id());
    let window = procfs::Window::open(target.pid, running.shared.t0, own_cpu()?)?;
    let io_before = procfs::io(target.pid).ok();
    let drained = running.drive(args).await;
    let usage = window.close(target.pid, own_cpu()?)?;
    let io = io_before
        .zip(procfs::io(target.pid).ok())
        .map(|(before, after)| after.since(&before));
    let verified = running.verify(args.receivers).await;
    let shared = running.shared.clone();
    let (send_lag, receiver_out) = running.finish().await;
    Ok(summarize(
        args,
        target,
        setup,
        &shared,
        Outcome {
            drained,
            verified,
            usage,
            io,
            send_lag,
            receiver_out,
        },
    ))
}

/// What the run produced besides the per-message arrays.
struct Outcome {
    drained: bool,
    verified: bool,
    /// Server and client CPU over the measured interval (t0 → end of the drain).
    usage: procfs::Usage,
    /// `/proc/<server>/io` over the same interval.
    io: Option<procfs::Io>,
    send_lag: Histogram<u64>,
    receiver_out: ReceiverOut,
}

/// The report, from the per-message arrays and the readings.
fn summarize(
    args: &C2cArgs,
    target: &Target,
    setup: Setup,
    shared: &Shared,
    outcome: Outcome,
) -> Report {
    let Setup {
        version,
        endpoint,
        data_dir_fs,
        prefix,
        loadavg,
        mut notes,
        ..
    } = setup;
    let Outcome {
        drained,
        verified: inbox_verified,
        usage,
        io,
        send_lag,
        receiver_out,
    } = outcome;
    let total = shared.total;
    if !drained {
        notes.push(format!(
            "the drain ended at its limit ({} s, --drain-secs) with answers or deliveries outstanding",
            args.drain_secs
        ));
    }
    if !inbox_verified {
        notes.push(format!(
            "only {} of {} receivers finished pulling their inbox within {} s: `lost` counts every undelivered ACKed message of the others",
            shared.receivers_verified.load(Ordering::Relaxed),
            args.receivers,
            VERIFY_TIMEOUT.as_secs()
        ));
    }

    let bucket = bucket_width(args.duration_secs);
    let buckets = (shared.offset(total).as_secs_f64() / bucket.as_secs_f64()).ceil() as usize;
    let mut by_time: Vec<(Histogram<u64>, Histogram<u64>)> = (0..buckets.max(1))
        .map(|_| (shared.histogram(), shared.histogram()))
        .collect();
    let mut ack_h = shared.histogram();
    let mut e2e_h = shared.histogram();
    let mut counts = Counts::default();
    let verify_from = Duration::from_nanos(shared.verify_from_ns.load(Ordering::Relaxed));
    for k in 0..total {
        let i = k as usize;
        let ack = shared.ack_us[i].load(Ordering::Relaxed);
        let acked_at = shared.offset(k) + Duration::from_micros(u64::from(ack.saturating_sub(1)));
        counts.add(
            shared.flags[i].load(Ordering::Relaxed),
            acked_at < verify_from,
        );
        let slot = ((shared.offset(k).as_secs_f64() / bucket.as_secs_f64()) as usize)
            .min(by_time.len() - 1);
        if ack > 0 {
            let us = u64::from(ack - 1).max(1);
            ack_h.saturating_record(us);
            by_time[slot].0.saturating_record(us);
        }
        let e2e = shared.e2e_us[i].load(Ordering::Relaxed);
        if e2e > 0 {
            let us = u64::from(e2e - 1).max(1);
            e2e_h.saturating_record(us);
            by_time[slot].1.saturating_record(us);
        }
    }
    let lost = counts.lost;
    let secs = |ns: &AtomicU64| ns.load(Ordering::Relaxed) as f64 / 1e9;
    let send_secs = secs(&shared.last_sent_ns);
    let ack_secs = secs(&shared.last_ack_ns);
    let delivery_secs = secs(&shared.last_delivery_ns);
    let server_cpu_secs = usage.server_cpu.as_secs_f64();
    let ack_latency = latency::summary_to_p9999(&ack_h);
    let e2e_latency = latency::summary_to_p9999(&e2e_h);
    let quantile = |h: &Histogram<u64>, q: f64| {
        if h.is_empty() {
            0.0
        } else {
            ms(h.value_at_quantile(q))
        }
    };
    let percentiles: Vec<PercentilePoint> = plot::nines_points()
        .into_iter()
        .map(|q| PercentilePoint {
            percentile: round(q * 100.0, 4),
            ack_ms: quantile(&ack_h, q),
            e2e_ms: quantile(&e2e_h, q),
        })
        .collect();
    let over_time: Vec<TimePoint> = by_time
        .iter()
        .enumerate()
        .map(|(slot, (ack, e2e))| TimePoint {
            t_secs: round(slot as f64 * bucket.as_secs_f64(), 3),
            messages: ack.len().max(e2e.len()),
            ack_p50_ms: quantile(ack, 0.5),
            ack_p99_ms: quantile(ack, 0.99),
            e2e_p50_ms: quantile(e2e, 0.5),
            e2e_p99_ms: quantile(e2e, 0.99),
            e2e_max_ms: quantile(e2e, 1.0),
        })
        .collect();

    if usage.client_cpu.as_secs_f64() > 0.3 * usage.secs {
        notes.push(format!(
            "the load generator used {:.2} s of CPU in {:.1} s on a {}-core machine it shares with the server: its own scheduling delays are part of the latencies (see send_lag_ms)",
            usage.client_cpu.as_secs_f64(),
            usage.secs,
            procfs::cpus()
        ));
    }
    notes.extend(target.log_level_note());
    let achieved_send_rate = per(counts.sent, send_secs);
    let delivery_rate = per(counts.received, delivery_secs);
    let verdict = Verdict {
        at_target_rate: args.rate >= TARGET_RATE,
        rate_reached: delivery_rate >= 0.99 * f64::from(args.rate)
            && counts.received >= total * 99 / 100,
        e2e_p99_met: !e2e_h.is_empty() && e2e_latency.p99 <= TARGET_E2E_P99_MS,
        e2e_p999_met: !e2e_h.is_empty() && e2e_latency.p999 <= TARGET_E2E_P999_MS,
        zero_loss: lost == 0,
        everything_delivered: counts.received == total,
    };
    let plot = latency_plot(args, &ack_latency, &e2e_latency, &percentiles, &over_time);
    let io = io.unwrap_or_default();
    let results = Results {
        sent: counts.sent,
        not_sent: total - counts.sent,
        acked: counts.acked,
        errors: counts.failed,
        unanswered: counts.unanswered,
        received: counts.received,
        acked_not_received: counts.acked_not_received,
        acked_not_received_in_inbox: counts.acked_not_received_in_inbox,
        lost,
        acked_late_unverified: counts.acked_late_unverified,
        inbox_verified,
        received_without_ack: counts.received_without_ack,
        stored_without_ack: counts.stored_without_ack,
        duplicate_deliveries: shared.duplicate_deliveries.load(Ordering::Relaxed),
        duplicate_answers: shared.duplicate_answers.load(Ordering::Relaxed),
        duplicate_stores: shared.duplicate_stores.load(Ordering::Relaxed),
        misrouted: shared.misrouted.load(Ordering::Relaxed),
        unexpected_frames: shared.unexpected.load(Ordering::Relaxed),
        delivery_receipts: shared.receipts.load(Ordering::Relaxed),
        error_counts: shared
            .errors
            .lock()
            .map(|errors| errors.clone())
            .unwrap_or_default(),
        events: shared
            .events
            .lock()
            .map(|events| events.clone())
            .unwrap_or_default(),
        send_secs: round(send_secs, 3),
        achieved_send_rate: round(achieved_send_rate, 1),
        ack_secs: round(ack_secs, 3),
        ack_rate: round(per(counts.acked, ack_secs), 1),
        delivery_secs: round(delivery_secs, 3),
        delivery_rate: round(delivery_rate, 1),
        measured_secs: round(usage.secs, 3),
        server_cpu_secs: round(server_cpu_secs, 3),
        server_cpu_share: round(server_cpu_secs / usage.secs.max(1e-9), 3),
        messages_per_server_cpu_sec: round(per(counts.acked, server_cpu_secs), 0),
        server_cpu_us_per_message: round(server_cpu_secs * 1e6 / counts.acked.max(1) as f64, 1),
        server_threads_cpu_secs: usage.threads_secs(),
        client_cpu_secs: round(usage.client_cpu.as_secs_f64(), 3),
        server_write_bytes: io.write_bytes,
        server_write_bytes_per_message: round(
            io.write_bytes as f64 / counts.acked.max(1) as f64,
            0,
        ),
        server_write_syscalls: io.syscw,
        receiver_ack_frames: receiver_out.ack_frames,
        receiver_acked_ids: receiver_out.acked_ids,
        ack_latency_ms: ack_latency,
        e2e_latency_ms: e2e_latency,
        send_lag_ms: latency::summary_to_p9999(&send_lag),
        percentiles,
        over_time,
        bucket_secs: bucket.as_secs_f64(),
    };
    let json = C2cJson {
        run: RunStamp::now("c2c"),
        inputs: Inputs {
            transport: args.transport,
            endpoint: endpoint.to_string(),
            receivers_endpoint: args.receivers_server.map(|addr| addr.to_string()),
            rate: args.rate,
            duration_secs: args.duration_secs,
            messages_scheduled: total,
            senders: args.senders,
            receivers: args.receivers,
            content_bytes: args.content_bytes,
            ack_batch: args.ack_batch,
            ack_interval_ms: args.ack_interval_ms,
            drain_secs: args.drain_secs,
            sender_appcode: args.sender_appcode,
            receiver_appcode: args.receiver_appcode,
            uid_prefix: prefix,
        },
        server: ServerInfo {
            identity: target.identity(version),
            log_level: target.log_level(),
            data_dir_fs,
        },
        machine: Machine::now(Some(loadavg)),
        results,
        targets: Targets {
            rate: TARGET_RATE,
            e2e_p99_ms: TARGET_E2E_P99_MS,
            e2e_p999_ms: TARGET_E2E_P999_MS,
            lost: 0,
        },
        verdict,
        notes,
        peers: None,
    };
    Report { json, plot }
}

fn latency_plot(
    args: &C2cArgs,
    ack: &Latency,
    e2e: &Latency,
    percentiles: &[PercentilePoint],
    over_time: &[TimePoint],
) -> plot::LatencyPlot {
    let series = |label: &str, value: fn(&TimePoint) -> f64| {
        (
            label.to_owned(),
            over_time.iter().map(|p| (p.t_secs, value(p))).collect(),
        )
    };
    plot::LatencyPlot {
        title: format!(
            "longlink c2c: {} msg/s for {} s, {} senders → {} receivers (e2e p99 {:.1} ms, ACK p99 {:.1} ms)",
            thousands(u64::from(args.rate)),
            args.duration_secs,
            args.senders,
            args.receivers,
            e2e.p99,
            ack.p99
        ),
        distributions: vec![
            (
                "end to end (receiver)".to_owned(),
                percentiles
                    .iter()
                    .map(|p| (p.percentile / 100.0, p.e2e_ms))
                    .collect(),
            ),
            (
                "sender ACK".to_owned(),
                percentiles
                    .iter()
                    .map(|p| (p.percentile / 100.0, p.ack_ms))
                    .collect(),
            ),
        ],
        over_time: vec![
            series("e2e max", |p| p.e2e_max_ms),
            series("e2e p99", |p| p.e2e_p99_ms),
            series("e2e p50", |p| p.e2e_p50_ms),
            series("ACK p99", |p| p.ack_p99_ms),
        ],
        target_ms: Some(TARGET_E2E_P99_MS),
        target_label: format!("target: p99 ≤ {TARGET_E2E_P99_MS} ms"),
        distribution_caption: "latency by percentile, measured from each message's due time"
            .to_owned(),
        over_time_caption: "latency over the run, by due time".to_owned(),
        over_time_x: "seconds after t0 (due time)".to_owned(),
    }
}

/// Time-series bucket: about 100 buckets per run, at least 100 ms.
fn bucket_width(duration_secs: u64) -> Duration {
    Duration::from_millis((duration_secs * 10).max(100))
}

/// Final per-message tallies, from the flags.
#[derive(Debug, Default)]
struct Counts {
    sent: u64,
    acked: u64,
    failed: u64,
    unanswered: u64,
    received: u64,
    acked_not_received: u64,
    acked_not_received_in_inbox: u64,
    lost: u64,
    acked_late_unverified: u64,
    received_without_ack: u64,
    stored_without_ack: u64,
}

impl Counts {
    /// Counts one message; `acked_before_verify`: its ACK came before the inbox pulls began.
    fn add(&mut self, flags: u8, acked_before_verify: bool) {
        let has = |bit: u8| flags & bit != 0;
        self.sent += u64::from(has(SENT));
        self.acked += u64::from(has(ACKED));
        self.failed += u64::from(has(FAILED) && !has(ACKED));
        self.unanswered += u64::from(has(SENT) && !has(ACKED) && !has(FAILED));
        self.received += u64::from(has(RECEIVED));
        self.acked_not_received += u64::from(has(ACKED) && !has(RECEIVED));
        let undelivered = has(ACKED) && !has(RECEIVED) && !has(PULLED);
        self.acked_not_received_in_inbox += u64::from(has(ACKED) && !has(RECEIVED) && has(PULLED));
        self.lost += u64::from(undelivered && acked_before_verify);
        self.acked_late_unverified += u64::from(undelivered && !acked_before_verify);
        self.received_without_ack += u64::from(has(RECEIVED) && !has(ACKED));
        self.stored_without_ack += u64::from(has(PULLED) && !has(RECEIVED) && !has(ACKED));
    }
}

impl Report {
    fn print(&self) {
        let j = &self.json;
        let r = &j.results;
        let i = &j.inputs;
        match &i.receivers_endpoint {
            Some(receivers) => println!(
                "transport    {} (senders to {}, receivers to {receivers})",
                i.transport, i.endpoint
            ),
            None => println!("transport    {} (to {})", i.transport, i.endpoint),
        }
        println!(
            "sent         {} of {} scheduled in {:.2} s ({} msg/s; {} not sent)",
            thousands(r.sent),
            thousands(i.messages_scheduled),
            r.send_secs,
            thousands(r.achieved_send_rate as u64),
            thousands(r.not_sent)
        );
        println!(
            "answers      {} ACKed ({} msg/s until the last ACK at {:.2} s), {} errors, {} unanswered",
            thousands(r.acked),
            thousands(r.ack_rate as u64),
            r.ack_secs,
            thousands(r.errors),
            thousands(r.unanswered)
        );
        for (what, count) in &r.error_counts {
            println!("  error: {what} × {}", thousands(*count));
        }
        println!(
            "delivered    {} pushed to receivers ({} msg/s until the last at {:.2} s); {} ACKed but not pushed, of which {} in the inbox, {} ACKed too late to check; LOST {}{}",
            thousands(r.received),
            thousands(r.delivery_rate as u64),
            r.delivery_secs,
            thousands(r.acked_not_received),
            thousands(r.acked_not_received_in_inbox),
            thousands(r.acked_late_unverified),
            thousands(r.lost),
            if r.inbox_verified {
                ""
            } else {
                " (inbox not fully verified)"
            }
        );
        if r.received_without_ack + r.stored_without_ack > 0 {
            println!(
                "             {} delivered and {} stored although the sender got no ACK",
                thousands(r.received_without_ack),
                thousands(r.stored_without_ack)
            );
        }
        if r.duplicate_deliveries + r.duplicate_answers + r.duplicate_stores + r.misrouted > 0 {
            println!(
                "anomalies    {} duplicate deliveries, {} duplicate answers, {} stored as duplicates, {} misrouted",
                r.duplicate_deliveries, r.duplicate_answers, r.duplicate_stores, r.misrouted
            );
        }
        r.ack_latency_ms.print_line("ACK latency");
        r.e2e_latency_ms.print_line("end to end");
        r.send_lag_ms.print_line("send lag");
        println!(
            "server CPU   {:.2} s: {:.1} µs per message, {} messages per server CPU-second; {} B written to disk per message",
            r.server_cpu_secs,
            r.server_cpu_us_per_message,
            thousands(r.messages_per_server_cpu_sec as u64),
            thousands(r.server_write_bytes_per_message as u64)
        );
        if !r.server_threads_cpu_secs.is_empty() {
            println!(
                "             {:.0}% of one core over {:.1} s; by thread: {}",
                r.server_cpu_share * 100.0,
                r.measured_secs,
                by_thread(&r.server_threads_cpu_secs)
            );
        }
        println!(
            "client CPU   {:.2} s (the load generator, on the same cores)",
            r.client_cpu_secs
        );
        let v = &j.verdict;
        println!(
            "target       e2e p99 ≤ {} ms: {}; p99.9 ≤ {} ms: {}; zero loss: {}; rate reached: {}{}",
            j.targets.e2e_p99_ms,
            verdict(v.e2e_p99_met),
            j.targets.e2e_p999_ms,
            verdict(v.e2e_p999_met),
            verdict(v.zero_loss),
            if v.rate_reached { "yes" } else { "NO" },
            if v.at_target_rate {
                String::new()
            } else {
                format!(
                    " (the target is stated at {} msg/s)",
                    thousands(u64::from(j.targets.rate))
                )
            }
        );
        for event in &r.events {
            println!("event: {event}");
        }
        for note in &j.notes {
            println!("note: {note}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_and_latency_codes() {
        let t0 = Instant::now();
        let shared = Shared::new(t0, 1000, 10, 2, 3, histogram_template().unwrap());
        assert_eq!(shared.offset(0), Duration::ZERO);
        assert_eq!(shared.offset(5), Duration::from_millis(5));
        assert_eq!(shared.latency_code(5, t0 + Duration::from_millis(7)), 2001);
        // Before its due time (cannot happen) counts as 0 µs, not as "none".
        assert_eq!(shared.latency_code(5, t0), 1);
    }

    #[test]
    fn flags_count_each_message_once() {
        let t0 = Instant::now();
        let shared = Shared::new(t0, 1000, 4, 1, 2, histogram_template().unwrap());
        for k in 0..4 {
            shared.on_sent(k);
        }
        shared.on_received(0, 0, t0);
        shared.on_ack(0, t0, false);
        shared.on_ack(0, t0, false);
        shared.on_received(0, 0, t0);
        shared.on_ack(1, t0, false);
        shared.on_received(1, 0, t0); // k = 1 belongs to receiver 1
        shared.on_failed(2, "C2C OVERLOADED".to_owned());
        shared.on_pulled(2);
        shared.on_ack(9, t0, false);
        assert_eq!(shared.acked.load(Ordering::Relaxed), 2);
        assert_eq!(shared.acked_and_received.load(Ordering::Relaxed), 2);
        assert_eq!(shared.duplicate_answers.load(Ordering::Relaxed), 1);
        assert_eq!(shared.duplicate_deliveries.load(Ordering::Relaxed), 1);
        assert_eq!(shared.misrouted.load(Ordering::Relaxed), 1);
        assert_eq!(shared.unexpected.load(Ordering::Relaxed), 1);
        let mut counts = Counts::default();
        for flag in &shared.flags {
            counts.add(flag.load(Ordering::Relaxed), true);
        }
        assert_eq!(counts.sent, 4);
        assert_eq!(counts.acked, 2);
        assert_eq!(counts.failed, 1);
        assert_eq!(counts.unanswered, 1);
        assert_eq!(counts.received, 2);
        assert_eq!(counts.stored_without_ack, 1);
    }

    #[test]
    fn message_numbers() {
        assert_eq!(message_number(&42u64.to_be_bytes()), Some(42));
        assert_eq!(message_number(&[1, 2, 3]), None);
    }
}
