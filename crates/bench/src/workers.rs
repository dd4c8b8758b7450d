//! Client worker processes: N logged-in connections spread over processes started as
//! `<exe> bench <scenario>-worker` (hidden), at most `--per-worker` each, because one process
//! may open at most 20,000 files here. What the `idle` workers and the s2c scenarios' receiving
//! clients ([`crate::fanout`]) share: the worker's command line ([`WorkerArgs`]), its logins
//! and status lines (`LoginWorker`), and the parent's side (`Workers`: starting them,
//! following their logins, stopping them).
//!
//! A worker logs `--count` clients in (uids `--uid-prefix` followed by `--first` …), at most
//! `--concurrency` at a time, and holds each connection until it is told to stop: its stdin
//! closes (or says `stop`) or its own deadline passes. Against a loopback server, worker k
//! connects from 127.0.0.(k + 2) with explicit source ports (see `SourcePorts`).
//!
//! Status lines, one each on the worker's stdout: `progress <ok> <failed>`,
//! `ready <ok> <failed> <µs>` (every login attempted, the last one done this long after the
//! worker began), `failure <message>` (the first few distinct ones), `dropped <n>` (held
//! connections the server closed), `done <ok> <failed> <dropped>` (idle's last line). A
//! scenario adds lines of its own, which the parent reads with its own parser into a
//! per-worker `Tally`.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use indicatif::ProgressBar;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::{self, HoldEnd, Minter, Session, SourcePorts};
use crate::link::Transport;
use crate::procfs;

/// Environment variable carrying the token secret to workers (kept off their command line).
pub(crate) const SECRET_ENV: &str = "LONGLINK_BENCH_TOKEN_SECRET";
/// First explicit source port of a worker (below the ephemeral range 32768–60999, so the
/// kernel's own choices elsewhere rarely collide with it).
const FIRST_SOURCE_PORT: u16 = 16_384;
/// Distinct failure messages a worker reports, and the parent keeps.
const MAX_FAILURE_SAMPLES: usize = 5;
/// How often a worker reports its logins.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_millis(200);
/// How long a worker's connections may take to close once it is told to stop.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a worker may take to read a line the parent tells it.
const TELL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long workers may take to report and exit once told to stop.
const WORKER_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// A worker's own deadline is this much later than the run's, so the parent stops it first.
const WORKER_DEADLINE_MARGIN: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Worker process.

/// The command line every worker process takes (`<exe> bench <scenario>-worker`).
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// The gate's address (its listener of --transport).
    #[arg(long)]
    pub server: SocketAddr,
    /// How the connections reach the gate.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub transport: Transport,
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
    /// The HS256 secret of the appcode (from the environment, not the command line).
    #[arg(long, env = SECRET_ENV, hide_env_values = true)]
    pub token_secret: String,
}

/// Login counters shared by a worker's connection tasks and its reporter.
#[derive(Default)]
struct Logins {
    ok: AtomicU32,
    failed: AtomicU32,
    dropped: AtomicU32,
    /// When the latest login attempt ended, µs after the worker began.
    last_done_micros: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Logins {
    fn fail(&self, message: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut failures) = self.failures.lock()
            && failures.len() < MAX_FAILURE_SAMPLES
            && !failures.contains(&message)
        {
            failures.push(message);
        }
    }
}

/// The worker process's side: its clients' logins, the connections it holds, and the status
/// lines it reports of them.
pub(crate) struct LoginWorker {
    /// Cancelled when stdin closes (or says `stop`) or the worker's deadline passes; the
    /// connections end then. Cancel it when the parent is gone.
    pub(crate) stop: CancellationToken,
    logins: Arc<Logins>,
    tracker: TaskTracker,
    count: u32,
    /// (ok, failed, dropped) as last reported.
    reported: (u32, u32, u32),
    failures_reported: usize,
    ready: bool,
}

impl LoginWorker {
    /// Starts a worker: watches stdin and the deadline, logs `args.count` clients in
    /// (`args.concurrency` at a time) and hands each session to `hold`, which keeps it until
    /// `stop`; a connection that ends before ([`HoldEnd::Dropped`]) is counted as dropped.
    pub(crate) fn start<H, F>(args: &WorkerArgs, hold: H) -> LoginWorker
    where
        H: Fn(Session, CancellationToken) -> F + Clone + Send + 'static,
        F: Future<Output = HoldEnd> + Send + 'static,
    {
        let minter = Arc::new(Minter::new(args.appcode, &args.token_secret));
        let (server, transport) = (args.server, args.transport);
        let timeout = Duration::from_secs(args.login_timeout_secs);
        let login = move |uid: String, source: Option<Arc<SourcePorts>>| {
            let minter = minter.clone();
            async move {
                client::login(server, transport, source.as_deref(), &minter, &uid, timeout).await
            }
        };
        LoginWorker::start_with(args, login, hold)
    }

    /// [`LoginWorker::start`] with another way in: `connect(uid, source ports)` opens one
    /// client's connection (a longlink LOGIN, or a peer broker's connect + subscribe, see
    /// [`crate::peers`]) and `hold` keeps what it returns until `stop`. Counting, reporting
    /// and stopping are the same for every kind of client.
    pub(crate) fn start_with<C, CF, S, H, F>(args: &WorkerArgs, connect: C, hold: H) -> LoginWorker
    where
        C: Fn(String, Option<Arc<SourcePorts>>) -> CF + Clone + Send + 'static,
        CF: Future<Output = Result<S, String>> + Send + 'static,
        S: Send + 'static,
        H: Fn(S, CancellationToken) -> F + Clone + Send + 'static,
        F: Future<Output = HoldEnd> + Send + 'static,
    {
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
        cancel_after(&stop, args.deadline_secs);
        let logins = Arc::new(Logins::default());
        let tracker = TaskTracker::new();
        let permits = Arc::new(Semaphore::new(args.concurrency.max(1) as usize));
        let source = args
            .source
            .map(|ip| Arc::new(SourcePorts::new(ip, args.first_port)));
        let start = Instant::now();
        {
            let (stop, logins, tracker, args) =
                (stop.clone(), logins.clone(), tracker.clone(), args.clone());
            tokio::spawn(async move {
                for i in args.first..args.first.saturating_add(args.count) {
                    let permit = tokio::select! {
                        permit = permits.clone().acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => break,
                        },
                        _ = stop.cancelled() => break,
                    };
                    let (stop, logins, connect, source, hold) = (
                        stop.clone(),
                        logins.clone(),
                        connect.clone(),
                        source.clone(),
                        hold.clone(),
                    );
                    let uid = format!("{}{i}", args.uid_prefix);
                    tracker.spawn(async move {
                        let result = tokio::select! {
                            result = connect(uid, source) => result,
                            _ = stop.cancelled() => return,
                        };
                        drop(permit);
                        logins
                            .last_done_micros
                            .fetch_max(start.elapsed().as_micros() as u64, Ordering::Relaxed);
                        match result {
                            Ok(session) => {
                                logins.ok.fetch_add(1, Ordering::Relaxed);
                                if hold(session, stop).await == HoldEnd::Dropped {
                                    logins.dropped.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(message) => logins.fail(message),
                        }
                    });
                }
            });
        }
        LoginWorker {
            stop,
            logins,
            tracker,
            count: args.count,
            reported: (u32::MAX, u32::MAX, 0),
            failures_reported: 0,
            ready: false,
        }
    }

    /// Appends the status lines of what changed since the last call (new failures,
    /// `progress`, `ready` once, `dropped`) to `lines`; `true` when `ready` is among them.
    pub(crate) fn status(&mut self, lines: &mut Vec<String>) -> bool {
        let (ok, failed, dropped) = self.counts();
        if let Ok(failures) = self.logins.failures.lock() {
            for failure in failures.iter().skip(self.failures_reported) {
                lines.push(format!("failure {}", failure.replace('\n', " ")));
            }
            self.failures_reported = failures.len();
        }
        if (ok, failed) != (self.reported.0, self.reported.1) {
            lines.push(format!("progress {ok} {failed}"));
        }
        let ready_now = !self.ready && ok + failed >= self.count;
        if ready_now {
            let micros = self.logins.last_done_micros.load(Ordering::Relaxed);
            lines.push(format!("ready {ok} {failed} {micros}"));
            self.ready = true;
        }
        if dropped != self.reported.2 {
            lines.push(format!("dropped {dropped}"));
        }
        self.reported = (ok, failed, dropped);
        ready_now
    }

    /// (logged in, failed, dropped) so far.
    pub(crate) fn counts(&self) -> (u32, u32, u32) {
        (
            self.logins.ok.load(Ordering::Relaxed),
            self.logins.failed.load(Ordering::Relaxed),
            self.logins.dropped.load(Ordering::Relaxed),
        )
    }

    /// Once `stop` is cancelled: waits (at most [`CLOSE_TIMEOUT`]) for the connections to end.
    pub(crate) async fn wind_down(&self) {
        self.tracker.close();
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.tracker.wait()).await;
    }
}

/// Cancels `stop` after `secs` (a worker's own deadline), unless it is cancelled first.
pub(crate) fn cancel_after(stop: &CancellationToken, secs: u64) {
    let stop = stop.clone();
    let deadline = Duration::from_secs(secs);
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(deadline) => stop.cancel(),
            _ = stop.cancelled() => {}
        }
    });
}

/// Writes status lines to stdout; `false` when the parent is gone.
pub(crate) fn emit(lines: &[String]) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    lines
        .iter()
        .try_for_each(|line| writeln!(out, "{line}"))
        .and_then(|()| out.flush())
        .is_ok()
}

// ---------------------------------------------------------------------------------------------
// The parent's side.

/// Worker processes to start: how many clients, where, as whom.
pub(crate) struct WorkerSpec<'a> {
    pub(crate) exe: &'a Path,
    /// The gate's listener of `transport`.
    pub(crate) gate: SocketAddr,
    pub(crate) transport: Transport,
    /// The appcode's HS256 secret.
    pub(crate) secret: &'a str,
    pub(crate) appcode: u32,
    /// uids are this prefix and 0 … connections − 1.
    pub(crate) uid_prefix: &'a str,
    pub(crate) connections: u32,
    pub(crate) per_worker: u32,
    /// Logins in flight at once, over all workers.
    pub(crate) concurrency: u32,
    pub(crate) login_timeout_secs: u64,
    /// The run's deadline (a worker stops by itself a little after it).
    pub(crate) deadline: Instant,
}

/// The progress bar [`Workers::wait_logged_in`] shows `connections` logins on.
pub(crate) fn login_bar(connections: u32) -> ProgressBar {
    crate::report::progress_bar(u64::from(connections), "logged in, {per_sec} {msg}")
}

/// How many worker processes hold `connections` at most `per_worker` each.
pub(crate) fn count(connections: u32, per_worker: u32) -> u32 {
    connections.div_ceil(per_worker.max(1))
}

/// What a scenario keeps of one worker's own lines (beyond the common status lines).
pub(crate) trait Tally: Default {
    /// One of the worker's own lines, parsed.
    type Line: Send + 'static;
    /// Takes one line in.
    fn add(&mut self, line: Self::Line);
}

/// No lines of its own (the `idle` workers).
impl Tally for () {
    type Line = std::convert::Infallible;
    fn add(&mut self, line: Self::Line) {
        match line {}
    }
}

/// What a worker said.
#[derive(Debug)]
enum Event<L> {
    Progress {
        ok: u32,
        failed: u32,
    },
    Ready {
        ok: u32,
        failed: u32,
        micros: u64,
    },
    Failure(String),
    Dropped(u32),
    Done {
        ok: u32,
        failed: u32,
        dropped: u32,
    },
    /// A line of the scenario's own.
    Own(L),
    Exited {
        stderr: String,
    },
}

#[derive(Default)]
struct WorkerState<T> {
    pid: u32,
    ok: u32,
    failed: u32,
    dropped: u32,
    ready: bool,
    /// The worker's own login wall time (its `ready` line).
    login_micros: u64,
    exited: bool,
    stderr: String,
    tally: T,
}

/// The worker processes of one run, as their parent sees them.
pub(crate) struct Workers<T: Tally> {
    states: Vec<WorkerState<T>>,
    stdins: Vec<Option<ChildStdin>>,
    children: Vec<Child>,
    events: mpsc::UnboundedReceiver<(usize, Event<T::Line>)>,
    failures: BTreeSet<String>,
}

impl<T: Tally> Workers<T> {
    /// Starts the workers as `<exe> bench <subcommand> … <own_args>`, at most `per_worker`
    /// clients each, uids spread evenly. Each worker's stdout is read in a task of its own; a
    /// line the common protocol does not know goes to `own_line`, there and then (it may act
    /// on it at once), and what that returns to the worker's [`Tally`].
    pub(crate) fn spawn<P>(
        spec: &WorkerSpec<'_>,
        subcommand: &str,
        own_args: &[String],
        own_line: P,
    ) -> anyhow::Result<Self>
    where
        P: Fn(&str) -> Option<T::Line> + Clone + Send + 'static,
    {
        let n = spec.connections;
        let count = count(n, spec.per_worker);
        let concurrency = spec.concurrency.div_ceil(count).max(1);
        let worker_deadline =
            spec.deadline.saturating_duration_since(Instant::now()) + WORKER_DEADLINE_MARGIN;
        let (tx, events) = mpsc::unbounded_channel();
        let mut workers = Workers {
            states: Vec::new(),
            stdins: Vec::new(),
            children: Vec::new(),
            events,
            failures: BTreeSet::new(),
        };
        let mut first = 0;
        for index in 0..count {
            let share = n / count + u32::from(index < n % count);
            let mut command = Command::new(spec.exe);
            command
                .args(["bench", subcommand])
                .arg("--server")
                .arg(spec.gate.to_string())
                .arg("--transport")
                .arg(spec.transport.label())
                .arg("--appcode")
                .arg(spec.appcode.to_string())
                .arg("--uid-prefix")
                .arg(spec.uid_prefix)
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
                .args(own_args)
                .env(SECRET_ENV, spec.secret)
                .env("LONGLINK_LOG", "warn")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            if let Some(source) = source_address(spec.gate, index) {
                command.arg("--source").arg(source.to_string());
            }
            let mut child = command.spawn().with_context(|| {
                format!(
                    "cannot start worker {index} ({} bench {subcommand})",
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
            workers.stdins.push(child.stdin.take());
            workers.states.push(WorkerState {
                pid: child.id().unwrap_or(0),
                ..WorkerState::default()
            });
            workers.children.push(child);
            let (tx, own_line) = (tx.clone(), own_line.clone());
            let index = index as usize;
            tokio::spawn(async move {
                let errors = tokio::spawn(async move {
                    let mut text = String::new();
                    let _ = stderr.take(8192).read_to_string(&mut text).await;
                    text
                });
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let event = parse_status(&line).or_else(|| own_line(&line).map(Event::Own));
                    if let Some(event) = event {
                        let _ = tx.send((index, event));
                    }
                }
                let stderr = errors.await.unwrap_or_default();
                let _ = tx.send((index, Event::Exited { stderr }));
            });
        }
        Ok(workers)
    }

    fn apply(&mut self, index: usize, event: Event<T::Line>) {
        let Some(state) = self.states.get_mut(index) else {
            return;
        };
        match event {
            Event::Progress { ok, failed } => (state.ok, state.failed) = (ok, failed),
            Event::Ready { ok, failed, micros } => {
                state.login_micros = micros;
                (state.ok, state.failed) = (ok, failed);
                state.ready = true;
            }
            Event::Failure(message) => {
                if self.failures.len() < MAX_FAILURE_SAMPLES {
                    self.failures.insert(message);
                }
            }
            Event::Dropped(dropped) => state.dropped = dropped,
            Event::Done {
                ok,
                failed,
                dropped,
            } => {
                (state.ok, state.failed, state.dropped) = (ok, failed, dropped);
            }
            Event::Own(line) => state.tally.add(line),
            Event::Exited { stderr } => {
                state.exited = true;
                state.stderr = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
            }
        }
    }

    /// Applies every event already received.
    pub(crate) fn drain(&mut self) {
        while let Ok((index, event)) = self.events.try_recv() {
            self.apply(index, event);
        }
    }

    /// Waits for the next event; `false` when no worker can send any more.
    pub(crate) async fn next(&mut self) -> bool {
        match self.events.recv().await {
            Some((index, event)) => {
                self.apply(index, event);
                true
            }
            None => false,
        }
    }

    /// How many workers there are.
    pub(crate) fn len(&self) -> usize {
        self.states.len()
    }

    /// Clients logged in, over all workers.
    pub(crate) fn logged_in(&self) -> u32 {
        self.states.iter().map(|s| s.ok).sum()
    }

    /// Failed logins, over all workers.
    pub(crate) fn failed(&self) -> u32 {
        self.states.iter().map(|s| s.failed).sum()
    }

    /// Connections the server closed, over all workers.
    pub(crate) fn dropped(&self) -> u32 {
        self.states.iter().map(|s| s.dropped).sum()
    }

    /// The first few distinct login failures.
    pub(crate) fn failure_samples(&self) -> Vec<String> {
        self.failures.iter().cloned().collect()
    }

    /// The longest login wall time the workers reported (`None` when none did).
    pub(crate) fn login_wall(&self) -> Option<Duration> {
        self.states
            .iter()
            .map(|s| Duration::from_micros(s.login_micros))
            .max()
            .filter(|wall| !wall.is_zero())
    }

    /// Each worker's tally of its own lines.
    pub(crate) fn tallies(&self) -> impl Iterator<Item = &T> {
        self.states.iter().map(|s| &s.tally)
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
                    "(nothing on stderr)"
                } else {
                    s.stderr.as_str()
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

    /// Writes `line` to every worker's stdin (a scenario's command, e.g. the reconnect
    /// storm's `cut` and `storm`; [`LoginWorker`]s ignore lines other than `stop`).
    ///
    /// # Errors
    /// A worker whose stdin is closed or does not take the line within [`TELL_TIMEOUT`].
    pub(crate) async fn tell(&mut self, line: &str) -> anyhow::Result<()> {
        let text = format!("{line}\n");
        for (index, stdin) in self.stdins.iter_mut().enumerate() {
            let Some(stdin) = stdin else {
                bail!("worker {index}: stdin already closed");
            };
            let written = async {
                stdin.write_all(text.as_bytes()).await?;
                stdin.flush().await
            };
            match tokio::time::timeout(TELL_TIMEOUT, written).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => bail!("worker {index}: cannot tell it {line:?}: {err}"),
                Err(_) => bail!("worker {index}: did not take {line:?} within {TELL_TIMEOUT:?}"),
            }
        }
        Ok(())
    }

    /// The workers that exited so far, with what they said on stderr.
    pub(crate) fn exited(&self) -> impl Iterator<Item = (usize, &str)> {
        self.states
            .iter()
            .enumerate()
            .filter(|(_, s)| s.exited)
            .map(|(i, s)| (i, s.stderr.as_str()))
    }

    /// CPU time the workers have used so far.
    pub(crate) fn cpu_time(&self) -> Duration {
        self.states
            .iter()
            .filter_map(|s| procfs::cpu_time(s.pid).ok())
            .sum()
    }

    /// Tells every worker to stop (closes its stdin), takes in their last lines and waits for
    /// them to exit (killing any that take longer than [`WORKER_STOP_TIMEOUT`]).
    pub(crate) async fn stop(&mut self) {
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
    }
}

/// The source address of worker `index`'s connections: against a loopback server, worker k
/// uses 127.0.0.(k + 2) with explicit ports (see [`SourcePorts`]); otherwise the kernel picks.
pub(crate) fn source_address(server: SocketAddr, index: u32) -> Option<IpAddr> {
    match server.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            let last = u8::try_from(index + 2).ok().filter(|last| *last < 255)?;
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
        }
        _ => None,
    }
}

/// A common status line; `None` for anything else.
fn parse_status<L>(line: &str) -> Option<Event<L>> {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    if word == "failure" {
        return Some(Event::Failure(rest.to_owned()));
    }
    if !matches!(word, "progress" | "ready" | "dropped" | "done") {
        return None;
    }
    let numbers: Vec<u64> = rest
        .split_whitespace()
        .map_while(|n| n.parse().ok())
        .collect();
    let count = |n: u64| u32::try_from(n).ok();
    match (word, numbers.as_slice()) {
        ("progress", [ok, failed]) => Some(Event::Progress {
            ok: count(*ok)?,
            failed: count(*failed)?,
        }),
        ("ready", [ok, failed, micros]) => Some(Event::Ready {
            ok: count(*ok)?,
            failed: count(*failed)?,
            micros: *micros,
        }),
        ("dropped", [dropped]) => Some(Event::Dropped(count(*dropped)?)),
        ("done", [ok, failed, dropped]) => Some(Event::Done {
            ok: count(*ok)?,
            failed: count(*failed)?,
            dropped: count(*dropped)?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Option<Event<()>> {
        parse_status(line)
    }

    #[test]
    fn parses_status_lines() {
        assert!(matches!(
            parse("progress 10 2"),
            Some(Event::Progress { ok: 10, failed: 2 })
        ));
        assert!(matches!(
            parse("ready 5 0 12345678901"),
            Some(Event::Ready {
                ok: 5,
                failed: 0,
                micros: 12_345_678_901
            })
        ));
        assert!(matches!(parse("dropped 3"), Some(Event::Dropped(3))));
        assert!(matches!(
            parse("done 1 2 3"),
            Some(Event::Done {
                ok: 1,
                failed: 2,
                dropped: 3
            })
        ));
        assert!(
            matches!(parse("failure ERROR BAD_TOKEN: x"), Some(Event::Failure(m)) if m == "ERROR BAD_TOKEN: x")
        );
        assert!(parse("progress x").is_none());
        assert!(parse("").is_none());
        assert!(parse("done").is_none(), "a bare done is the scenario's");
        assert!(parse("got 1:2").is_none());
    }

    #[test]
    fn loopback_workers_get_their_own_source_address() {
        let server: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(
            source_address(server, 0),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        );
        assert_eq!(source_address(server, 253), None);
        assert_eq!(source_address("10.0.0.1:4000".parse().unwrap(), 0), None);
    }
}
