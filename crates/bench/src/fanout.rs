//! The receiving side of the s2c scenarios (`push`, `broadcast`): N logged-in clients spread
//! over worker processes (`<exe> bench fanout-worker`, hidden), each recording when the
//! pushes reach it.
//!
//! Why processes: one process may open 20,000 files here, and the server under test is a
//! process of its own; a worker holds at most `--per-worker` connections (default 10,000), so
//! none comes near the limit. Starting them, their logins and their progress are
//! [`crate::workers`]'s; this module adds what they receive.
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
//! Worker protocol, one line each on the worker's stdout: during the run the status lines of
//! [`crate::workers`] (`progress <ok> <failed>`, `ready <ok> <failed> <µs>`,
//! `failure <message>`, `dropped <n>`) and `got <k>:<n> …` (new deliveries per push, sent
//! within ~1 ms of them, so the parent can pace pushes on completions); at the end `series <s> <count> <max µs> <last unix µs> <histogram>`
//! (V2 serialized, base64), `totals <delivered> <duplicates> <foreign> <ack frames>` and `done`.
//! The parent stops a worker by closing its stdin; a worker also stops at its own deadline.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::BytesMut;
use clap::Args;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use longlink_proto::{Cmd, Frame, FrameCodec, FrameType, wire};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::{HoldEnd, Session};
use crate::procfs;
use crate::workers::{self, LoginWorker, REPORT_INTERVAL, Tally, WorkerArgs, WorkerSpec, Workers};

/// First word of every bench push's content.
const MAGIC: &str = "llb";
/// Highest latency the histograms hold (longer ones are clamped to it), µs: 10 minutes.
pub(crate) const HIST_MAX_US: u64 = 600_000_000;
/// A worker batches the deliveries of this long into one `got` line.
const GOT_BATCH: Duration = Duration::from_millis(1);
/// Most `k:n` pairs on one `got` line.
const GOT_PER_LINE: usize = 512;
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
    /// Where to log in, as whom, how many.
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// The run tag in the content of the pushes to count.
    #[arg(long)]
    pub tag: u64,
    /// Do not send MSG_ACK for what arrives.
    #[arg(long)]
    pub no_ack: bool,
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

/// What a worker's connections share: the deliveries they recorded, for its report lines.
#[derive(Default)]
pub(crate) struct WorkerShared {
    tag: u64,
    deliveries: Mutex<Deliveries>,
    /// Woken by each delivery (the reporter batches them into `got` lines).
    delivered: Notify,
}

impl WorkerShared {
    /// Records one MSG read at `at_us`; `false` when it was no push of this run.
    pub(crate) fn record(&self, content: &[u8], at_us: u64) -> bool {
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

impl WorkerShared {
    /// Records a delivery that carries no message id of its own (a peer broker's): its push
    /// number k is the identity, and a second copy of one k on the same connection (`seen`)
    /// counts as a duplicate instead.
    pub(crate) fn record_once(&self, content: &[u8], at_us: u64, seen: &mut HashSet<u32>) {
        if let Some((_, k, _)) = parse_content(self.tag, content)
            && !seen.insert(k)
        {
            if let Ok(mut d) = self.deliveries.lock() {
                d.duplicates += 1;
            }
            return;
        }
        self.record(content, at_us);
    }

    /// Counts an acknowledgement the client sent (a PUBACK, for the totals line).
    pub(crate) fn acked(&self) {
        if let Ok(mut d) = self.deliveries.lock() {
            d.ack_frames += 1;
        }
    }
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
    let ack = !args.no_ack;
    let worker = args.worker.clone();
    run_receiving_worker(args.tag, move |shared| {
        LoginWorker::start(&worker, move |session, stop| {
            let shared = shared.clone();
            async move { receive(&shared, session, ack, stop).await }
        })
    })
    .await
}

/// The body of a receiving worker process, whatever its clients are (longlink sessions here,
/// a peer broker's subscribers in [`crate::peers`]): `start` starts the clients, which record
/// what they receive in the [`WorkerShared`] it is given; this reports `got` lines as they
/// come, the status lines, and at the end the histograms and totals, then exits the process.
///
/// # Errors
/// Never in practice: failures are counted and reported on stdout.
pub(crate) async fn run_receiving_worker(
    tag: u64,
    start: impl FnOnce(Arc<WorkerShared>) -> LoginWorker,
) -> anyhow::Result<()> {
    let shared = Arc::new(WorkerShared {
        tag,
        ..WorkerShared::default()
    });
    let mut worker = start(shared.clone());
    let mut next_report = Instant::now();
    loop {
        tokio::select! {
            _ = worker.stop.cancelled() => break,
            () = shared.delivered.notified() => {
                // Let the rest of a fan-out arrive: one line for a burst, not one per message.
                tokio::time::sleep(GOT_BATCH).await;
            }
            _ = tokio::time::sleep_until(next_report) => {}
        }
        let mut lines = got_lines(&shared);
        if Instant::now() >= next_report {
            next_report = Instant::now() + REPORT_INTERVAL;
            if worker.status(&mut lines) {
                // The parent waits for this line: say it now, not at the next interval.
                next_report = Instant::now();
            }
        }
        if !lines.is_empty() && !workers::emit(&lines) {
            worker.stop.cancel();
        }
    }
    worker.wind_down().await;
    let mut lines = got_lines(&shared);
    let (_, _, dropped) = worker.counts();
    lines.push(format!("dropped {dropped}"));
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
    workers::emit(&lines);
    // The stdin reader may still sit in a blocking read that would hold up the runtime's
    // shutdown: leave at once.
    std::process::exit(0)
}

/// Reads one logged-in connection until `stop`: records each bench MSG, acknowledges what
/// arrived in one read with one MSG_ACK, sends KEEPALIVE at the interval the server asked for.
/// Returns [`HoldEnd::Dropped`] when the connection ended before `stop` (the server closed it,
/// or it failed). On `stop` the connection is reset, leaving no TIME_WAIT behind.
async fn receive(
    shared: &WorkerShared,
    session: Session,
    ack: bool,
    stop: CancellationToken,
) -> HoldEnd {
    let Session { link, keepalive } = session;
    // The push and broadcast scenarios run their clients over TCP only.
    let Ok(mut stream) = link.into_tcp() else {
        return HoldEnd::Dropped;
    };
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
                return HoldEnd::Stopped;
            }
            ready = stream.readable() => {
                if ready.is_err() {
                    return HoldEnd::Dropped;
                }
                let read = match stream.try_read(&mut chunk) {
                    Ok(0) => return HoldEnd::Dropped,
                    Ok(read) => read,
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => return HoldEnd::Dropped,
                };
                let at = unix_us();
                buf.extend_from_slice(&chunk[..read]);
                let mut msgids = Vec::new();
                loop {
                    let frame = match tokio_util::codec::Decoder::decode(&mut codec, &mut buf) {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break,
                        Err(_) => return HoldEnd::Dropped,
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
                        return HoldEnd::Dropped;
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
                    return HoldEnd::Dropped;
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

/// The receiving clients of one run.
pub(crate) struct FleetSpec<'a> {
    /// How many, where, as whom.
    pub(crate) clients: WorkerSpec<'a>,
    /// The run tag in the pushes' content.
    pub(crate) tag: u64,
    pub(crate) client_ack: bool,
    /// Pushes the parent will send (k = 0 … pushes − 1).
    pub(crate) pushes: usize,
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

/// A worker's own line at the end of its run (`got` lines go straight to [`Delivered`]).
#[derive(Debug)]
pub(crate) enum FinalLine {
    Series(u32, SeriesAcc),
    Totals(Totals),
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

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.delivered += other.delivered;
        self.duplicates += other.duplicates;
        self.foreign += other.foreign;
        self.ack_frames += other.ack_frames;
    }
}

/// What one worker reported at the end of its run.
#[derive(Default)]
pub(crate) struct Received {
    series: BTreeMap<u32, SeriesAcc>,
    /// `None` until its `totals` line came.
    totals: Option<Totals>,
}

impl Tally for Received {
    type Line = FinalLine;

    fn add(&mut self, line: FinalLine) {
        match line {
            FinalLine::Series(series, acc) => self
                .series
                .entry(series)
                .or_insert_with(SeriesAcc::empty)
                .merge(&acc),
            FinalLine::Totals(totals) => self.totals = Some(totals),
        }
    }
}

/// The receiving worker processes of one run.
pub(crate) struct Fleet {
    pub(crate) workers: Workers<Received>,
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

impl FleetReport {
    /// The note for connections the server closed during the run, if any.
    pub(crate) fn dropped_note(&self) -> Option<String> {
        (self.dropped > 0).then(|| {
            format!(
                "the server closed {} client connection(s) during the run",
                self.dropped
            )
        })
    }

    /// The note for workers whose latencies are missing, if any.
    pub(crate) fn silent_workers_note(&self) -> Option<String> {
        (self.silent_workers > 0).then(|| {
            format!(
                "{} worker(s) did not report their latencies: the histograms miss their clients",
                self.silent_workers
            )
        })
    }
}

impl Fleet {
    /// Starts the workers (`<exe> bench fanout-worker`).
    pub(crate) fn spawn(spec: &FleetSpec<'_>) -> anyhow::Result<Fleet> {
        let mut own_args = Vec::new();
        if !spec.client_ack {
            own_args.push("--no-ack".to_owned());
        }
        Fleet::spawn_as(spec, "fanout-worker", own_args)
    }

    /// Starts the workers as `<exe> bench <subcommand> --tag <tag> <own_args>`: any worker that
    /// speaks this module's protocol (the peers' `peer-worker` too).
    pub(crate) fn spawn_as(
        spec: &FleetSpec<'_>,
        subcommand: &str,
        mut own_args: Vec<String>,
    ) -> anyhow::Result<Fleet> {
        let (changed, _) = watch::channel(0);
        let delivered = Arc::new(Delivered {
            per_push: (0..spec.pushes).map(|_| AtomicU32::new(0)).collect(),
            total: AtomicU64::new(0),
            changed,
        });
        own_args.extend(["--tag".to_owned(), spec.tag.to_string()]);
        let got = delivered.clone();
        let workers = Workers::spawn(&spec.clients, subcommand, &own_args, move |line| {
            let Some(pairs) = line.strip_prefix("got ") else {
                return parse_final(line);
            };
            for (k, n) in pairs.split(' ').filter_map(parse_pair) {
                got.add(k, n);
            }
            got.changed.send_modify(|version| *version += 1);
            None
        })?;
        Ok(Fleet { workers, delivered })
    }

    /// CPU time the load generator has used so far: the workers and this process.
    pub(crate) fn load_generator_cpu(&self) -> anyhow::Result<Duration> {
        Ok(self.workers.cpu_time() + procfs::cpu_time(std::process::id())?)
    }

    /// Tells every worker to stop, collects their final reports and waits for them to exit.
    pub(crate) async fn finish(mut self) -> FleetReport {
        self.workers.stop().await;
        let mut series: BTreeMap<u32, SeriesAcc> = BTreeMap::new();
        let mut totals = Totals::default();
        let mut silent_workers = 0;
        for received in self.workers.tallies() {
            for (s, acc) in &received.series {
                series.entry(*s).or_insert_with(SeriesAcc::empty).merge(acc);
            }
            match &received.totals {
                Some(t) => totals.add(t),
                None => silent_workers += 1,
            }
        }
        FleetReport {
            dropped: self.workers.dropped(),
            silent_workers,
            series,
            totals,
        }
    }
}

fn parse_pair(pair: &str) -> Option<(usize, u32)> {
    let (k, n) = pair.split_once(':')?;
    Some((k.parse().ok()?, n.parse().ok()?))
}

/// A `series` or `totals` line.
fn parse_final(line: &str) -> Option<FinalLine> {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let words: Vec<&str> = rest.split_whitespace().collect();
    let number = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
    match word {
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
            Some(FinalLine::Series(u32::try_from(number(0)?).ok()?, acc))
        }
        "totals" => Some(FinalLine::Totals(Totals {
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
        match parse_final(&line) {
            Some(FinalLine::Series(4, acc)) => {
                assert_eq!(acc.hist.len(), 2);
                assert_eq!(acc.max_us, 2500);
                assert_eq!(acc.last_unix_us, 99);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_final("totals 5 1 2 3"),
            Some(FinalLine::Totals(Totals {
                delivered: 5,
                duplicates: 1,
                foreign: 2,
                ack_frames: 3
            }))
        ));
        assert_eq!(parse_pair("12:7"), Some((12, 7)));
        assert!(parse_final("nonsense").is_none());
        assert!(parse_final("done").is_none());
    }
}
