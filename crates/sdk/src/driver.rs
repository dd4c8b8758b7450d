//! The driver task: the one owner of the socket, and of the connection's life.
//!
//! [`Driver::run`] serves one connection at a time. While connected it loops over: frames
//! from the server (responses matched to pending requests by seq_id; MSG pushes through the
//! [`Sequencer`]; KICK and ERROR pushes turned into [`Event`]s), commands from
//! [`crate::Client`] handles (written out in batches), acknowledgements of what the
//! application took from [`crate::Incoming`], the automatic keepalive tick, request
//! deadlines, and handing queued events to the application. Right after every login it
//! catches up with OFFLINE_PULL pages, and it fetches HISTORY_PULL pages when the
//! sequencer finds a gap.
//!
//! When the connection drops and may be reopened (see [`Exit`]), requests in flight wait,
//! with requests issued meanwhile, for the next connection (each within its own deadline);
//! the driver reconnects with jittered exponential backoff and logs in again. Otherwise every
//! pending request gets [`ClientError::Closed`] and [`Event::Closed`] is the last event.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use longlink_proto::{Cmd, CodecError, Compression, Frame, FrameType, wire};
use tokio::sync::mpsc::error::{SendError, TrySendError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::error::error_code;
use crate::handshake::{
    Dial, LOGIN_SEQ, Opened, Resumed, Transport, connect_and_login, decode, random_log_id,
};
use crate::sequencer::{Sequencer, Step};
use crate::shared::Shared;
use crate::{ClientConfig, ClientError, Event, KickReason, UserRef};

type Sink = SplitSink<Transport, Frame>;
type Stream = SplitStream<Transport>;

/// How many frames (read) or commands (written) the driver handles before it flushes /
/// looks at its other inputs again.
const MAX_BURST: usize = 128;
/// OFFLINE_PULL page size of the catch-up after a login (the server's maximum is 500).
const CATCH_UP_PAGE: u32 = 200;
/// HISTORY_PULL page size when filling a gap.
const FILL_PAGE: u32 = 200;
/// Attempts at one catch-up page before the connection is given up (and reopened).
const CATCH_UP_ATTEMPTS: u32 = 3;
/// Most msgids in one MSG_ACK (the server refuses more than 1000).
const MAX_ACK_BATCH: usize = 1000;
/// Most msgid → log_id pairs kept for acknowledgements.
const ACK_LOG_IDS: usize = 4096;
/// Requests queued while disconnected; beyond, the command queue fills and callers wait.
const MAX_WAITING: usize = 1024;
/// How long closing may take to write the last acknowledgements.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// A connection that ends sooner than this after its login counts as a flap: the next
/// reconnect starts further up the backoff curve.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);
/// Most recently acknowledged msgids a RESUME repeats (their MSG_ACK may have died with the
/// link; the server accepts up to 1000).
const RESUME_ACKS: usize = 256;

/// What the driver does with a successful response before handing it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Hand the frame over as is.
    Frame,
    /// Decode an `OfflinePullResponse`, record its msgids as taken by the application and
    /// (with auto_ack) acknowledge them once the caller has them.
    OfflinePage,
}

/// A successful answer.
#[derive(Debug)]
pub(crate) enum Reply {
    Frame(Frame),
    OfflinePage(wire::OfflinePullResponse),
}

pub(crate) type ReplyTx = oneshot::Sender<Result<Reply, ClientError>>;

/// What a [`crate::Client`] asks the driver to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send `frame` as a request (the driver sets seq_id, and log_id if it is 0) and answer
    /// on `reply`. `resend`: the request may be sent again on the next connection if the
    /// link drops before its answer.
    Request {
        frame: Frame,
        expect: Expect,
        deadline: Instant,
        resend: bool,
        reply: ReplyTx,
    },
}

/// An application request, sent or waiting for a connection.
#[derive(Debug)]
struct AppRequest {
    frame: Frame,
    expect: Expect,
    deadline: Instant,
    resend: bool,
    reply: ReplyTx,
}

/// Who waits for a response.
#[derive(Debug)]
enum Job {
    App(AppRequest),
    Keepalive,
    CatchUp {
        cursor: u64,
    },
    Fill {
        peer: UserRef,
        cursor: u64,
    },
    /// Notification receipts that waited for a connection: back to the pending set when
    /// the attempt fails for a reason that may pass.
    NotificationAck {
        ids: Vec<u64>,
    },
}

#[derive(Debug)]
struct Pending {
    cmd: u16,
    generation: u64,
    job: Job,
}

/// Why a connection ended, and what comes next.
#[derive(Debug)]
struct Exit {
    /// The text of [`Event::Disconnected`] / [`Event::Closed`].
    reason: String,
    /// Whether reconnecting may help (an I/O error, EOF, a keepalive timeout, a KICK for
    /// SERVER_SHUTDOWN or SLOW_CONSUMER) rather than end the client (close, logout, a KICK for
    /// REPLACED / LOGGED_OUT / BLOCKED, a protocol error, every handle dropped).
    reconnect: bool,
    /// The server asked to wait at least this long (KICK `backoff_ms`).
    not_before: Duration,
    /// The server asked to reconnect there (KICK `reconnect_to`, e.g. while a gate drains).
    redirect: Option<String>,
}

impl Exit {
    fn fatal(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            reconnect: false,
            not_before: Duration::ZERO,
            redirect: None,
        }
    }

    fn retry(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            reconnect: true,
            not_before: Duration::ZERO,
            redirect: None,
        }
    }
}

#[derive(Debug)]
struct CatchUpState {
    cursor: u64,
    attempts: u32,
    in_flight: bool,
}

#[derive(Debug)]
struct Kicked {
    reason: KickReason,
    message: String,
    backoff: Duration,
    reconnect_to: String,
}

/// What the client knows about its session for reconnecting (seed 004 "fast reconnect").
#[derive(Debug, Default)]
struct SessionMemory {
    /// The gate address of the current (or last) connection: reconnects try it first.
    addr: String,
    /// The token for RESUME (empty: the server offers none, or resume is off).
    resume_token: String,
    /// How long the server holds the session after a drop.
    hold: Duration,
    /// The session's connection epoch, sent as `prior_epoch` when a reconnect must log in.
    epoch: u64,
    /// The server's advised reconnect backoff range in ms (0 = none).
    advice: (u32, u32),
    /// The node's other gates, fallbacks in order (`LoginResponse.gates`).
    gates: Vec<String>,
    /// When the last connection dropped.
    dropped_at: Option<Instant>,
    /// The newest msgid received (RESUME `last_msgid`).
    last_msgid: u64,
    /// The latest acknowledged msgids, oldest first (RESUME `acked_msgids`).
    recent_acks: VecDeque<u64>,
}

impl SessionMemory {
    /// Takes in what a LOGIN or RESUME answer says about the session.
    fn opened(&mut self, addr: String, login: &wire::LoginResponse, resumed: bool) {
        self.addr = addr;
        self.resume_token.clone_from(&login.resume_token);
        self.hold = Duration::from_secs(u64::from(login.hold_secs));
        self.epoch = login.epoch;
        self.dropped_at = None;
        if !resumed {
            // A RESUME answer carries no advice: the last LOGIN's stays.
            self.advice = (login.reconnect_min_ms, login.reconnect_max_ms);
            self.gates.clone_from(&login.gates);
        }
    }

    /// The RESUME to try, if the session may still be held.
    fn resume_request(&self) -> Option<wire::ResumeRequest> {
        let held = self
            .dropped_at
            .is_some_and(|dropped| dropped.elapsed() < self.hold);
        (held && !self.resume_token.is_empty()).then(|| wire::ResumeRequest {
            resume_token: self.resume_token.clone(),
            last_msgid: self.last_msgid,
            acked_msgids: self.recent_acks.iter().copied().collect(),
            compression: Vec::new(),
        })
    }

    /// Where to reconnect, in order: the server's redirect, the gate used last, the node's
    /// other gates, the configured address; each once.
    fn candidates(&self, redirect: Option<String>, configured: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let all = redirect
            .into_iter()
            .chain(std::iter::once(self.addr.clone()))
            .chain(self.gates.iter().cloned())
            .chain(std::iter::once(configured.to_owned()));
        for addr in all {
            if !addr.is_empty() && !out.contains(&addr) {
                out.push(addr);
            }
        }
        out
    }

    fn acked(&mut self, msgids: &[u64]) {
        for &msgid in msgids {
            if self.recent_acks.len() >= RESUME_ACKS {
                self.recent_acks.pop_front();
            }
            self.recent_acks.push_back(msgid);
        }
    }
}

pub(crate) struct Driver {
    cmd_rx: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    /// False once the application dropped its [`crate::Incoming`].
    events_open: bool,
    shutdown: CancellationToken,
    shared: Arc<Shared>,
    config: ClientConfig,
    uid: String,
    pending: HashMap<u32, Pending>,
    deadlines: BinaryHeap<Reverse<(Instant, u64, u32)>>,
    /// Application requests waiting for a connection, oldest first.
    waiting: VecDeque<AppRequest>,
    next_seq: u32,
    generation: u64,
    sequencer: Sequencer,
    /// Events for the application not yet in its queue (bounded by `ready_limit`: beyond it
    /// the driver stops reading the socket).
    ready: VecDeque<Event>,
    ready_limit: usize,
    /// Frames to write at the next flush.
    out: Vec<Frame>,
    /// msgids to acknowledge at the next flush.
    acks: Vec<u64>,
    /// msgid → log_id of recently pushed messages, so an ACK carries the log_id of the
    /// message it acknowledges (the server's trace follows it). Bounded by [`ACK_LOG_IDS`].
    ack_log_ids: HashMap<u64, u64>,
    catch_up: Option<CatchUpState>,
    /// Set while handling input when the connection must end.
    failure: Option<Exit>,
    last_rx: Instant,
    kicked: Option<Kicked>,
    logged_out: bool,
    /// Consecutive connections that did not last [`STABLE_CONNECTION`].
    flaps: u32,
    memory: SessionMemory,
    /// The compression the current connection's LOGIN or RESUME agreed on.
    agreed: Option<Compression>,
}

impl Driver {
    pub(crate) fn new(
        cmd_rx: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        shutdown: CancellationToken,
        shared: Arc<Shared>,
        config: ClientConfig,
        uid: String,
    ) -> Self {
        let me = UserRef::new(config.appcode, uid.clone());
        Self {
            cmd_rx,
            events,
            events_open: true,
            shutdown,
            shared,
            sequencer: Sequencer::new(me, config.device_id.clone()),
            ready_limit: config.incoming_capacity.max(1),
            config,
            uid,
            pending: HashMap::new(),
            deadlines: BinaryHeap::new(),
            waiting: VecDeque::new(),
            next_seq: LOGIN_SEQ,
            generation: 0,
            ready: VecDeque::new(),
            out: Vec::new(),
            acks: Vec::new(),
            ack_log_ids: HashMap::new(),
            catch_up: None,
            failure: None,
            last_rx: Instant::now(),
            kicked: None,
            logged_out: false,
            flaps: 0,
            memory: SessionMemory::default(),
            agreed: None,
        }
    }

    /// Runs the logged-in `transport`, then reconnects as long as it may; finally fails what
    /// is pending and emits [`Event::Closed`].
    pub(crate) async fn run(mut self, transport: Transport, opened: Opened) {
        let mut connection = (transport, opened, self.config.addr.clone());
        let reason = loop {
            let (transport, opened, addr) = connection;
            let Opened {
                login,
                resumed,
                early,
            } = opened;
            self.shared.set_connected(login.session_id);
            self.memory.opened(addr, &login, resumed.is_some());
            // An unknown name would be a server bug; treated as none, its flagged frames then
            // end the connection as protocol errors.
            self.agreed = Compression::from_name(&login.compression);
            let since = Instant::now();
            let exit = self.run_connection(transport, &login, resumed, early).await;
            self.shared.set_disconnected();
            self.memory.dropped_at = Some(Instant::now());
            tracing::debug!(reason = %exit.reason, reconnect = exit.reconnect, "longlink connection ended");
            if !exit.reconnect || self.config.reconnect.is_none() {
                break exit.reason;
            }
            self.flaps = if since.elapsed() < STABLE_CONNECTION {
                self.flaps.saturating_add(1).min(16)
            } else {
                0
            };
            self.requeue_in_flight();
            self.queue_event(Event::Disconnected {
                reason: exit.reason,
            });
            match self.reconnect(exit.not_before, exit.redirect).await {
                Ok((transport, opened, addr)) => {
                    let resumed = opened.resumed.is_some();
                    tracing::debug!(session_id = opened.login.session_id, resumed, %addr, "reconnected");
                    self.queue_event(Event::Reconnected {
                        session_id: opened.login.session_id,
                        resumed,
                    });
                    connection = (transport, opened, addr);
                }
                Err(reason) => break reason,
            }
        };
        tracing::debug!(%reason, "longlink client closed");
        self.finish(reason).await;
    }

    async fn run_connection(
        &mut self,
        transport: Transport,
        login: &wire::LoginResponse,
        resumed: Option<Resumed>,
        early: Vec<Frame>,
    ) -> Exit {
        let (mut sink, mut stream) = transport.split();
        self.last_rx = Instant::now();
        self.kicked = None;
        self.failure = None;
        let mut keepalive = self
            .config
            .effective_keepalive(login.keepalive_interval_secs)
            .map(|period| {
                let mut interval = tokio::time::interval_at(Instant::now() + period, period);
                interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                (interval, period)
            });
        // Catch up on what was missed (the first login included: nothing is lost whether or
        // not the server redelivers), send what waited, acknowledge what the app took meanwhile.
        // A RESUME answer is the first catch-up page; `gap_free` means it was the only one.
        self.sequencer.begin_catch_up();
        for frame in early {
            if let Err(exit) = self.on_frame(frame) {
                return exit;
            }
        }
        self.catch_up = Some(CatchUpState {
            cursor: 0,
            attempts: 0,
            in_flight: false,
        });
        if let Some(resumed) = resumed {
            self.on_resumed(resumed);
        }
        self.continue_catch_up();
        self.send_waiting();
        self.send_notification_acks();
        self.collect_acks();
        let shutdown = self.shutdown.clone();
        loop {
            if let Some(exit) = self.failure.take() {
                return exit;
            }
            self.pump_ready();
            self.continue_catch_up();
            match self.flush(&mut sink).await {
                Ok(false) => {}
                Ok(true) => return self.close_gracefully(&mut sink).await,
                Err(exit) => return exit,
            }
            let next_deadline = self.deadlines.peek().map(|Reverse((at, _, _))| *at);
            let can_read = self.ready.len() < self.ready_limit;
            let can_emit = self.events_open && !self.ready.is_empty();
            // Not biased: a flood of pushes must not starve the application's requests
            // (nor the reverse).
            tokio::select! {
                () = shutdown.cancelled() => return self.close_gracefully(&mut sink).await,
                item = stream.next(), if can_read => match item {
                    None => return self.eof_exit(),
                    Some(item) => {
                        if let Err(exit) = self.on_burst(item, &mut stream).await {
                            return exit;
                        }
                    }
                },
                permit = self.events.clone().reserve_owned(), if can_emit => self.on_permit(permit),
                cmd = self.cmd_rx.recv() => match cmd {
                    None => return Exit::fatal("client dropped"),
                    Some(cmd) => self.on_commands(cmd),
                },
                () = self.shared.acks_ready.notified() => self.collect_acks(),
                period = tick(&mut keepalive) => {
                    if self.last_rx.elapsed() >= period.saturating_mul(3) {
                        return Exit::retry("keepalive timeout");
                    }
                    let ping = wire::KeepaliveRequest { client_time_ms: longlink_proto::unix_ms() };
                    self.send_internal(Cmd::Keepalive, &ping, Job::Keepalive);
                }
                () = sleep_until_opt(next_deadline), if next_deadline.is_some() => self.expire(),
            }
        }
    }

    /// Handles `first` and every further frame already readable (up to [`MAX_BURST`], and
    /// while the application's queue has room).
    async fn on_burst(
        &mut self,
        first: Result<Frame, CodecError>,
        stream: &mut Stream,
    ) -> Result<(), Exit> {
        let mut item = first;
        let mut handled = 0;
        loop {
            match item {
                Ok(frame) => self.on_frame(frame)?,
                Err(err) => return Err(self.codec_exit(err)),
            }
            handled += 1;
            if handled >= MAX_BURST
                || self.failure.is_some()
                || self.ready.len() >= self.ready_limit
            {
                break;
            }
            match poll_fn(|cx| Poll::Ready(stream.poll_next_unpin(cx))).await {
                Poll::Ready(Some(next)) => item = next,
                Poll::Ready(None) => return Err(self.eof_exit()),
                Poll::Pending => break,
            }
        }
        // Time spent waiting for the application to drain its events is not silence.
        self.last_rx = Instant::now();
        Ok(())
    }

    fn on_frame(&mut self, frame: Frame) -> Result<(), Exit> {
        let cmd = frame.header.cmd;
        // Decompressed with a cap: a server (or a man in the middle of a plain link) cannot
        // make the client allocate more than max_body_bytes per frame.
        let cap = self.config.max_body_bytes as usize;
        let frame = match longlink_proto::compress::inflate(frame, self.agreed, cap) {
            Ok(frame) => frame,
            Err(err) => {
                return Err(Exit::fatal(format!(
                    "protocol error: frame of cmd {cmd}: {err}"
                )));
            }
        };
        match frame.header.frame_type {
            FrameType::Response => self.on_response(frame),
            FrameType::Push => self.on_push(frame),
            FrameType::Request | FrameType::Ack => tracing::debug!(
                cmd = frame.header.cmd,
                log_id = frame.header.log_id,
                "ignoring a request/ack frame from the server"
            ),
        }
        Ok(())
    }

    fn on_response(&mut self, frame: Frame) {
        let is_error = frame.cmd() == Some(Cmd::Error);
        let Some(pending) = self.pending.remove(&frame.header.seq_id) else {
            // Nobody waits for it: a late answer to a request that timed out, or the answer
            // to a fire-and-forget MSG_ACK. An ERROR is still worth telling the application.
            if is_error {
                let (code, message) = decode_error(&frame);
                tracing::debug!(seq_id = frame.header.seq_id, ?code, %message, "unmatched ERROR");
                self.queue_event(Event::Error { code, message });
            } else {
                tracing::debug!(
                    seq_id = frame.header.seq_id,
                    cmd = frame.header.cmd,
                    "dropping a response nobody waits for"
                );
            }
            return;
        };
        let result = if is_error {
            match frame.decode_body::<wire::Error>() {
                Ok(err) => Err(ClientError::from_wire(err)),
                Err(err) => Err(ClientError::Protocol(err.to_string())),
            }
        } else if frame.header.cmd != pending.cmd {
            Err(ClientError::Protocol(format!(
                "a request of cmd {} was answered with cmd {}",
                pending.cmd, frame.header.cmd
            )))
        } else {
            Ok(frame)
        };
        match pending.job {
            Job::App(request) => self.answer_app(pending.cmd, request, result),
            Job::Keepalive => {
                if let Err(err) = result {
                    tracing::warn!(%err, "the server refused a keepalive");
                }
            }
            Job::CatchUp { cursor } => {
                let page = result.and_then(|frame| decode::<wire::OfflinePullResponse>(&frame));
                self.on_catch_up_page(cursor, page);
            }
            Job::Fill { peer, cursor } => {
                let page = result.and_then(|frame| decode::<wire::HistoryPullResponse>(&frame));
                self.on_fill_page(peer, cursor, page);
            }
            Job::NotificationAck { ids } => {
                let answer =
                    result.and_then(|frame| decode::<wire::NotificationAckResponse>(&frame));
                self.on_notification_acked(ids, answer);
            }
        }
    }

    /// Sends the notification receipts that waited (for this connection, or while an
    /// earlier attempt failed) in one NOTIFICATION_ACK.
    fn send_notification_acks(&mut self) {
        let ids = self.shared.take_notification_acks();
        if ids.is_empty() {
            return;
        }
        tracing::debug!(count = ids.len(), "sending pending notification receipts");
        let body = wire::NotificationAck { ids: ids.clone() };
        self.send_internal(Cmd::NotificationAck, &body, Job::NotificationAck { ids });
    }

    /// A refusal that may pass keeps the receipts for the next connection; one that cannot
    /// (INVALID_ARGUMENT) drops them, or they would be refused at every login.
    fn on_notification_acked(
        &mut self,
        ids: Vec<u64>,
        answer: Result<wire::NotificationAckResponse, ClientError>,
    ) {
        match answer {
            Ok(answer) => {
                tracing::debug!(
                    sent = ids.len(),
                    matched = answer.matched,
                    "notification receipts taken"
                );
            }
            Err(err) if err.is_retryable() => {
                tracing::debug!(%err, "notification receipts kept for the next connection");
                self.shared.queue_notification_acks(&ids);
            }
            Err(err) => {
                tracing::warn!(%err, count = ids.len(), "the server refused notification receipts; dropped");
            }
        }
    }

    fn answer_app(&mut self, cmd: u16, request: AppRequest, result: Result<Frame, ClientError>) {
        if let Ok(frame) = &result {
            if cmd == Cmd::Logout as u16 {
                self.logged_out = true;
            } else if cmd == Cmd::C2c as u16 {
                // The receipt: this client's own message is never shown back to it.
                if let (Ok(receipt), Ok(sent)) = (
                    frame.decode_body::<wire::C2cResponse>(),
                    request.frame.decode_body::<wire::C2cRequest>(),
                ) && let Some(to) = sent.to
                {
                    self.sequencer.own_sent(&to.into(), receipt.msgid);
                }
            }
        }
        let reply = match request.expect {
            Expect::Frame => result.map(Reply::Frame),
            Expect::OfflinePage => result
                .and_then(|frame| decode::<wire::OfflinePullResponse>(&frame))
                .map(Reply::OfflinePage),
        };
        let pulled: Vec<u64> = match &reply {
            Ok(Reply::OfflinePage(page)) => page
                .messages
                .iter()
                .map(|msg| msg.msgid)
                .filter(|msgid| *msgid != 0)
                .collect(),
            _ => Vec::new(),
        };
        // Only what the caller actually received is recorded and acknowledged.
        if request.reply.send(reply).is_ok() && !pulled.is_empty() {
            self.sequencer.pulled_by_app(&pulled);
            self.shared.record_handed(&pulled);
            if self.config.auto_ack {
                self.acks.extend(pulled);
            }
        }
    }

    fn on_push(&mut self, frame: Frame) {
        match frame.cmd() {
            Some(Cmd::Msg) => match frame.decode_body::<wire::Msg>() {
                Ok(msg) => {
                    if msg.msgid != 0 {
                        self.memory.last_msgid = self.memory.last_msgid.max(msg.msgid);
                        if self.ack_log_ids.len() >= ACK_LOG_IDS {
                            // Forgetting only costs an ACK its log_id, never the ACK.
                            self.ack_log_ids.clear();
                        }
                        self.ack_log_ids.insert(msg.msgid, frame.header.log_id);
                    }
                    let mut steps = Vec::new();
                    self.sequencer.push(msg, &mut steps);
                    self.apply(steps);
                }
                Err(err) => {
                    tracing::warn!(log_id = frame.header.log_id, %err, "dropping an undecodable MSG push");
                }
            },
            Some(Cmd::Kick) => {
                let kick = frame
                    .decode_body::<wire::Kick>()
                    .unwrap_or_else(|err| wire::Kick {
                        message: format!("undecodable KICK: {err}"),
                        ..Default::default()
                    });
                let reason = KickReason::try_from(kick.reason).unwrap_or(KickReason::Unspecified);
                self.kicked = Some(Kicked {
                    reason,
                    message: kick.message.clone(),
                    backoff: Duration::from_millis(u64::from(kick.backoff_ms)),
                    reconnect_to: kick.reconnect_to.clone(),
                });
                self.queue_event(Event::Kicked {
                    reason,
                    message: kick.message,
                });
            }
            Some(Cmd::Error) => {
                let (code, message) = decode_error(&frame);
                self.queue_event(Event::Error { code, message });
            }
            Some(Cmd::Receipt) => match frame.decode_body::<wire::Receipt>() {
                Ok(receipt) => self.queue_event(Event::Receipt(receipt.into())),
                Err(err) => tracing::debug!(%err, "dropping an undecodable RECEIPT push"),
            },
            _ => {
                tracing::debug!(cmd = frame.header.cmd, "ignoring an unknown push");
            }
        }
    }

    /// Carries out what the sequencer decided.
    fn apply(&mut self, steps: Vec<Step>) {
        for step in steps {
            match step {
                Step::Deliver(msg) => self.queue_event(Event::Message(msg.into())),
                Step::Duplicate { msgid, ackable } => {
                    // If the application still has to take the first copy, that will ack it.
                    if self.config.auto_ack && ackable && self.shared.was_handed(msgid) {
                        self.acks.push(msgid);
                    }
                }
                Step::Ack { msgid } => {
                    if self.config.auto_ack {
                        self.acks.push(msgid);
                    }
                }
                Step::FetchHistory { peer, cursor } => {
                    let body = wire::HistoryPullRequest {
                        with: Some((&peer).into()),
                        cursor,
                        direction: wire::HistoryDirection::Newer as i32,
                        page_size: FILL_PAGE,
                    };
                    tracing::debug!(%peer, cursor, "filling a gap from history");
                    self.send_internal(Cmd::HistoryPull, &body, Job::Fill { peer, cursor });
                }
            }
        }
    }

    /// Asks for the next catch-up page if one is due and the application keeps up.
    fn continue_catch_up(&mut self) {
        let Some(state) = &mut self.catch_up else {
            return;
        };
        if state.in_flight || self.ready.len() > self.ready_limit / 2 {
            return;
        }
        state.in_flight = true;
        let cursor = state.cursor;
        let body = wire::OfflinePullRequest {
            cursor,
            page_size: CATCH_UP_PAGE,
        };
        self.send_internal(Cmd::OfflinePull, &body, Job::CatchUp { cursor });
    }

    fn on_catch_up_page(
        &mut self,
        cursor: u64,
        page: Result<wire::OfflinePullResponse, ClientError>,
    ) {
        let Some(state) = &mut self.catch_up else {
            return;
        };
        state.in_flight = false;
        let mut steps = Vec::new();
        match page {
            Ok(page) => {
                state.attempts = 0;
                let more = page.more && page.next_cursor > cursor;
                let reached = page.next_cursor.max(cursor);
                if let Some(newest) = page.messages.iter().map(|m| m.msgid).max() {
                    self.memory.last_msgid = self.memory.last_msgid.max(newest);
                }
                if more {
                    state.cursor = page.next_cursor;
                }
                self.sequencer
                    .catch_up_page(page.messages, reached, &mut steps);
                if !more {
                    if let Some(restart) = self.sequencer.take_catch_up_restart() {
                        tracing::debug!(restart, "catch-up buffer overflowed; pulling again");
                        if let Some(state) = &mut self.catch_up {
                            state.cursor = restart;
                        }
                    } else {
                        self.sequencer.finish_catch_up(&mut steps);
                        self.catch_up = None;
                    }
                }
            }
            Err(err) => {
                state.attempts += 1;
                if err.is_retryable() && state.attempts < CATCH_UP_ATTEMPTS {
                    tracing::debug!(%err, attempt = state.attempts, "catch-up page failed; retrying");
                } else if err.is_retryable() {
                    self.failure = Some(Exit::retry(format!("catch-up failed: {err}")));
                } else {
                    // Retrying cannot help: go live with what arrived; the rest stays in the
                    // server's inbox for the next login.
                    tracing::warn!(%err, "catch-up refused by the server");
                    if let ClientError::Server { code, message, .. } = err {
                        self.queue_event(Event::Error { code, message });
                    }
                    self.sequencer.finish_catch_up(&mut steps);
                    self.catch_up = None;
                }
            }
        }
        self.apply(steps);
    }

    /// The RESUME answer's messages are the catch-up's first page: with `gap_free` the
    /// catch-up is complete, otherwise it pulls on from the page's last msgid.
    fn on_resumed(&mut self, resumed: Resumed) {
        let reached = resumed.messages.iter().map(|m| m.msgid).max().unwrap_or(0);
        self.memory.last_msgid = self.memory.last_msgid.max(reached);
        let mut steps = Vec::new();
        self.sequencer
            .catch_up_page(resumed.messages, reached, &mut steps);
        let restart = self.sequencer.take_catch_up_restart();
        match (resumed.gap_free, restart) {
            (true, None) => {
                self.sequencer.finish_catch_up(&mut steps);
                self.catch_up = None;
            }
            (_, restart) => {
                if let Some(state) = &mut self.catch_up {
                    state.cursor = restart.unwrap_or(reached);
                }
            }
        }
        self.apply(steps);
    }

    fn on_fill_page(
        &mut self,
        peer: UserRef,
        cursor: u64,
        page: Result<wire::HistoryPullResponse, ClientError>,
    ) {
        let mut steps = Vec::new();
        match page {
            Ok(page) => self.sequencer.history_page(
                &peer,
                cursor,
                page.messages,
                page.more,
                page.next_cursor,
                &mut steps,
            ),
            Err(err) => {
                tracing::warn!(%peer, cursor, %err, "history page for a gap failed");
                self.sequencer
                    .history_failed(&peer, !err.is_retryable(), &mut steps);
            }
        }
        self.apply(steps);
    }

    /// Registers `first` and every further queued command (up to [`MAX_BURST`]).
    fn on_commands(&mut self, first: Command) {
        let mut cmd = first;
        let mut handled = 0;
        loop {
            let Command::Request {
                frame,
                expect,
                deadline,
                resend,
                reply,
            } = cmd;
            self.send_app(AppRequest {
                frame,
                expect,
                deadline,
                resend,
                reply,
            });
            handled += 1;
            if handled >= MAX_BURST {
                break;
            }
            match self.cmd_rx.try_recv() {
                Ok(next) => cmd = next,
                Err(_) => break,
            }
        }
    }

    fn send_app(&mut self, request: AppRequest) {
        if request.reply.is_closed() {
            return; // the caller gave up already
        }
        let frame = request.frame.clone();
        let deadline = request.deadline;
        self.register(frame, Job::App(request), deadline);
    }

    fn send_waiting(&mut self) {
        let now = Instant::now();
        for request in std::mem::take(&mut self.waiting) {
            if request.deadline <= now {
                let _ = request.reply.send(Err(ClientError::Timeout));
            } else {
                self.send_app(request);
            }
        }
    }

    fn send_internal(&mut self, cmd: Cmd, body: &impl prost::Message, job: Job) {
        let frame = Frame::request(cmd, 0, 0, body);
        let deadline = Instant::now() + self.config.request_timeout;
        self.register(frame, job, deadline);
    }

    /// Gives `frame` a fresh seq_id (and a log_id if it has none), records it as pending and
    /// queues it for the next flush.
    fn register(&mut self, mut frame: Frame, job: Job, deadline: Instant) {
        let seq_id = self.fresh_seq();
        self.generation += 1;
        frame.header.seq_id = seq_id;
        if frame.header.log_id == 0 {
            frame.header.log_id = random_log_id();
        }
        self.pending.insert(
            seq_id,
            Pending {
                cmd: frame.header.cmd,
                generation: self.generation,
                job,
            },
        );
        self.deadlines
            .push(Reverse((deadline, self.generation, seq_id)));
        // Answered requests leave their deadline behind until it passes; keep that bounded.
        if self.deadlines.len() > 2 * self.pending.len() + 1024 {
            let pending = &self.pending;
            self.deadlines.retain(|Reverse((_, generation, seq_id))| {
                pending
                    .get(seq_id)
                    .is_some_and(|p| p.generation == *generation)
            });
        }
        self.out.push(frame);
    }

    /// The next seq_id: wrapping, never 0 or LOGIN's, never one still pending.
    fn fresh_seq(&mut self) -> u32 {
        loop {
            self.next_seq = self.next_seq.wrapping_add(1);
            if self.next_seq > LOGIN_SEQ && !self.pending.contains_key(&self.next_seq) {
                return self.next_seq;
            }
        }
    }

    /// Fails (or retries) the requests whose deadline has passed.
    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, generation, seq_id))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let current = self
                .pending
                .get(&seq_id)
                .is_some_and(|p| p.generation == generation);
            let Some(pending) = current.then(|| self.pending.remove(&seq_id)).flatten() else {
                continue;
            };
            tracing::debug!(seq_id, cmd = pending.cmd, "request timed out");
            match pending.job {
                Job::App(request) => {
                    let _ = request.reply.send(Err(ClientError::Timeout));
                }
                Job::Keepalive => {}
                Job::CatchUp { cursor } => self.on_catch_up_page(cursor, Err(ClientError::Timeout)),
                Job::Fill { peer, cursor } => {
                    self.on_fill_page(peer, cursor, Err(ClientError::Timeout));
                }
                Job::NotificationAck { ids } => {
                    self.on_notification_acked(ids, Err(ClientError::Timeout));
                }
            }
        }
    }

    fn collect_acks(&mut self) {
        self.acks.extend(self.shared.take_acks());
    }

    /// Writes the queued frames and acknowledgements, then flushes once. `Ok(true)`: the
    /// client is closing; what was not written yet stays queued for
    /// [`Driver::close_gracefully`].
    async fn flush(&mut self, sink: &mut Sink) -> Result<bool, Exit> {
        self.pack_acks();
        if self.out.is_empty() {
            return Ok(false);
        }
        let mut frames: VecDeque<Frame> = std::mem::take(&mut self.out).into();
        if let Some(algorithm) = self.agreed {
            // Large requests (a C2C with a big content, a C2S payload) go compressed.
            for frame in &mut frames {
                if let Some(packed) = longlink_proto::compress::deflate(
                    frame,
                    algorithm,
                    longlink_proto::compress::DEFAULT_MIN_BYTES,
                ) {
                    *frame = packed;
                }
            }
        }
        let shutdown = self.shutdown.clone();
        let written = {
            let write = async {
                while let Some(frame) = frames.front() {
                    sink.feed(frame.clone()).await?;
                    frames.pop_front();
                }
                sink.flush().await
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => None,
                result = write => Some(result),
            }
        };
        match written {
            Some(Ok(())) => Ok(false),
            Some(Err(err)) => Err(self.codec_exit(err)),
            None => {
                self.out = frames.into();
                Ok(true)
            }
        }
    }

    fn pack_acks(&mut self) {
        if self.acks.is_empty() {
            return;
        }
        let mut acks = std::mem::take(&mut self.acks);
        acks.sort_unstable();
        acks.dedup();
        for chunk in acks.chunks(MAX_ACK_BATCH) {
            let seq_id = self.fresh_seq();
            // The ACK of a pushed message carries that message's log_id (a batch: its first's).
            let log_id = chunk
                .iter()
                .find_map(|msgid| self.ack_log_ids.get(msgid).copied())
                .filter(|log_id| *log_id != 0)
                .unwrap_or_else(random_log_id);
            for msgid in chunk {
                self.ack_log_ids.remove(msgid);
            }
            self.memory.acked(chunk);
            self.out.push(Frame::new(
                Cmd::MsgAck,
                FrameType::Ack,
                seq_id,
                log_id,
                &wire::MsgAck {
                    msgids: chunk.to_vec(),
                },
            ));
        }
    }

    /// [`crate::Client::close`] / [`crate::Client::logout`]: write the last
    /// acknowledgements (bounded), then end.
    async fn close_gracefully(&mut self, sink: &mut Sink) -> Exit {
        self.collect_acks();
        // Requests are pointless now (their callers get Closed); acknowledgements are not.
        self.out
            .retain(|frame| frame.header.frame_type == FrameType::Ack);
        self.pack_acks();
        let frames = std::mem::take(&mut self.out);
        let write = async {
            for frame in frames {
                sink.feed(frame).await?;
            }
            // Also finishes a frame a cancelled flush left half written.
            sink.flush().await
        };
        let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, write).await;
        Exit::fatal(self.shutdown_reason())
    }

    fn queue_event(&mut self, event: Event) {
        if self.events_open {
            self.ready.push_back(event);
        }
    }

    /// Moves ready events into the application's queue while it has room.
    fn pump_ready(&mut self) {
        while self.events_open {
            let Some(event) = self.ready.pop_front() else {
                return;
            };
            match self.events.try_send(event) {
                Ok(()) => {}
                Err(TrySendError::Full(event)) => {
                    self.ready.push_front(event);
                    return;
                }
                Err(TrySendError::Closed(_)) => self.events_closed(),
            }
        }
    }

    fn on_permit(&mut self, permit: Result<mpsc::OwnedPermit<Event>, SendError<()>>) {
        match permit {
            Ok(permit) => {
                if let Some(event) = self.ready.pop_front() {
                    permit.send(event);
                }
            }
            Err(_) => self.events_closed(),
        }
    }

    /// The application dropped its [`crate::Incoming`]: messages are no longer delivered (nor
    /// acknowledged, so the server keeps them for a pull).
    fn events_closed(&mut self) {
        self.events_open = false;
        self.ready.clear();
    }

    /// After a connection dropped: requests in flight wait for the next one (oldest first),
    /// except those that must not be sent twice; the driver's own requests are dropped.
    fn requeue_in_flight(&mut self) {
        let mut in_flight: Vec<Pending> = self.pending.drain().map(|(_, p)| p).collect();
        in_flight.sort_by_key(|p| p.generation);
        self.deadlines.clear();
        self.out.clear();
        self.catch_up = None;
        let mut requeued = VecDeque::new();
        for pending in in_flight {
            match pending.job {
                Job::App(request) => {
                    if request.reply.is_closed() {
                        continue;
                    }
                    if request.resend {
                        requeued.push_back(request);
                    } else {
                        let _ = request.reply.send(Err(ClientError::Disconnected));
                    }
                }
                // Sent again right after the next LOGIN / RESUME.
                Job::NotificationAck { ids } => self.shared.queue_notification_acks(&ids),
                Job::Keepalive | Job::CatchUp { .. } | Job::Fill { .. } => {}
            }
        }
        requeued.extend(std::mem::take(&mut self.waiting));
        self.waiting = requeued;
    }

    /// Reconnects with jittered exponential backoff (at least `not_before` the first time; in
    /// the server's advised range when it gave one), serving commands meanwhile: to `redirect`
    /// first if the server named a gate, else to the gate used last, then the others in turn.
    /// Within the hold it sends RESUME (LOGIN on the same connection if rejected); a LOGIN
    /// carries the last epoch so that it can never replace a newer session. `Err`: the client
    /// must end, with this reason.
    async fn reconnect(
        &mut self,
        not_before: Duration,
        redirect: Option<String>,
    ) -> Result<(Transport, Opened, String), String> {
        let (min_ms, max_ms) = self.memory.advice;
        let policy = self
            .config
            .reconnect
            .clone()
            .unwrap_or_default()
            .advised(min_ms, max_ms);
        let candidates = self.memory.candidates(redirect, &self.config.addr);
        let mut attempt = self.flaps;
        let mut pause = policy.backoff(attempt).max(not_before);
        let mut tried: usize = 0;
        loop {
            self.idle(tokio::time::sleep(pause)).await?;
            let addr = candidates[tried % candidates.len()].clone();
            tried = tried.wrapping_add(1);
            let mut dial = Dial::new(&self.config, self.shared.token());
            dial.addr.clone_from(&addr);
            dial.login.prior_epoch = self.memory.epoch;
            if self.config.resume {
                dial.resume = self.memory.resume_request().map(|mut resume| {
                    // The same offer as the LOGIN's: a resumed connection compresses too.
                    resume.compression.clone_from(&dial.login.compression);
                    resume
                });
            }
            match self.idle(connect_and_login(dial)).await? {
                Ok((transport, opened)) if opened.login.uid == self.uid => {
                    return Ok((transport, opened, addr));
                }
                Ok((_, opened)) => {
                    return Err(format!(
                        "login refused: the token is for uid {:?}, this client is {:?}",
                        opened.login.uid, self.uid
                    ));
                }
                Err(err) if err.is_fatal_login_refusal() => {
                    return Err(format!("login refused: {err}"));
                }
                Err(err) => {
                    tracing::debug!(attempt, %addr, %err, "reconnect attempt failed");
                    attempt = attempt.saturating_add(1);
                    // RATE_LIMITED / SHUTTING_DOWN say how long to stay away.
                    pause = policy
                        .backoff(attempt)
                        .max(err.retry_after().unwrap_or_default());
                }
            }
        }
    }

    /// Waits for `future` while disconnected: commands queue up (bounded, each until its
    /// deadline), events flow to the application. `Err` when the client must end.
    async fn idle<F: Future>(&mut self, future: F) -> Result<F::Output, String> {
        let mut future = std::pin::pin!(future);
        let shutdown = self.shutdown.clone();
        loop {
            self.pump_ready();
            let next_deadline = self.waiting.iter().map(|r| r.deadline).min();
            let can_queue = self.waiting.len() < MAX_WAITING;
            let can_emit = self.events_open && !self.ready.is_empty();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Err(self.shutdown_reason()),
                output = &mut future => return Ok(output),
                cmd = self.cmd_rx.recv(), if can_queue => match cmd {
                    None => return Err("client dropped".to_owned()),
                    Some(Command::Request { frame, expect, deadline, resend, reply }) => {
                        self.waiting.push_back(AppRequest { frame, expect, deadline, resend, reply });
                    }
                },
                permit = self.events.clone().reserve_owned(), if can_emit => self.on_permit(permit),
                () = sleep_until_opt(next_deadline), if next_deadline.is_some() => self.expire_waiting(),
            }
        }
    }

    fn expire_waiting(&mut self) {
        let now = Instant::now();
        let mut kept = VecDeque::with_capacity(self.waiting.len());
        for request in self.waiting.drain(..) {
            if request.reply.is_closed() {
                continue;
            }
            if request.deadline <= now {
                let _ = request.reply.send(Err(ClientError::Timeout));
            } else {
                kept.push_back(request);
            }
        }
        self.waiting = kept;
    }

    async fn finish(mut self, reason: String) {
        self.shared.set_disconnected();
        for (_, pending) in self.pending.drain() {
            if let Job::App(request) = pending.job {
                let _ = request.reply.send(Err(ClientError::Closed));
            }
        }
        for request in self.waiting.drain(..) {
            let _ = request.reply.send(Err(ClientError::Closed));
        }
        self.cmd_rx.close();
        while let Ok(Command::Request { reply, .. }) = self.cmd_rx.try_recv() {
            let _ = reply.send(Err(ClientError::Closed));
        }
        if !self.events_open {
            return;
        }
        for event in std::mem::take(&mut self.ready) {
            if self.events.send(event).await.is_err() {
                return;
            }
        }
        let _ = self.events.send(Event::Closed { reason }).await;
    }

    fn shutdown_reason(&self) -> String {
        if self.logged_out {
            "logged out".to_owned()
        } else {
            "closed by client".to_owned()
        }
    }

    fn eof_exit(&self) -> Exit {
        if self.logged_out {
            return Exit::fatal("logged out");
        }
        match &self.kicked {
            Some(kicked) => {
                let reason = format!(
                    "kicked ({}): {}",
                    kicked.reason.as_str_name(),
                    kicked.message
                );
                match kicked.reason {
                    KickReason::Replaced | KickReason::LoggedOut | KickReason::Blocked => {
                        Exit::fatal(reason)
                    }
                    _ => Exit {
                        reason,
                        reconnect: true,
                        not_before: kicked.backoff,
                        redirect: (!kicked.reconnect_to.is_empty())
                            .then(|| kicked.reconnect_to.clone()),
                    },
                }
            }
            None => Exit::retry("connection closed by server"),
        }
    }

    fn codec_exit(&self, err: CodecError) -> Exit {
        if self.logged_out || self.kicked.is_some() {
            return self.eof_exit();
        }
        match err {
            CodecError::Io(err) => Exit::retry(format!("i/o error: {err}")),
            // The peer does not speak this protocol (or not this version of it): reconnecting
            // would only repeat the failure.
            CodecError::Decode(err) => Exit::fatal(format!("protocol error: {err}")),
        }
    }
}

fn decode_error(frame: &Frame) -> (longlink_proto::ErrorCode, String) {
    match frame.decode_body::<wire::Error>() {
        Ok(err) => (error_code(err.code), err.message),
        Err(err) => (
            longlink_proto::ErrorCode::Unspecified,
            format!("undecodable ERROR: {err}"),
        ),
    }
}

async fn tick(keepalive: &mut Option<(Interval, Duration)>) -> Duration {
    match keepalive {
        Some((interval, period)) => {
            interval.tick().await;
            *period
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
