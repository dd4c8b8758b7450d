//! The driver task: the one owner of the socket.
//!
//! [`Driver::run`] splits the `Framed` transport into sink and stream and loops over: frames
//! from the server (responses matched to pending requests by seq_id, pushes turned into
//! [`Event`]s), commands from [`crate::Client`] handles (written out in batches), the
//! automatic keepalive tick, and request deadlines. When the connection ends, every pending
//! request gets [`ClientError::Closed`] and [`Event::Closed`] is the last event.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use longlink_proto::{Cmd, CodecError, FLAG_COMPRESSED, Frame, FrameCodec, FrameType, wire};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::dedup::Dedup;
use crate::error::error_code;
use crate::{ClientError, Event, KickReason};

/// The socket with the longlink codec on it.
pub(crate) type Transport = Framed<TcpStream, FrameCodec>;
type Sink = SplitSink<Transport, Frame>;
type Stream = SplitStream<Transport>;

/// How many frames (read) or commands (written) the driver handles before it flushes /
/// looks at its other inputs again.
const MAX_BURST: usize = 128;

/// What the driver does with a successful response before handing it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Hand the frame over as is.
    Frame,
    /// Decode an `OfflinePullResponse`, record its msgids in the dedup set and (with
    /// auto_ack) acknowledge them once the caller has them.
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
    /// Send `frame` as a request (the driver sets seq_id and log_id) and answer on `reply`.
    Request {
        frame: Frame,
        expect: Expect,
        deadline: Instant,
        reply: ReplyTx,
    },
}

struct Pending {
    cmd: u16,
    expect: Expect,
    generation: u64,
    /// `None` for the driver's own requests (automatic keepalive).
    reply: Option<ReplyTx>,
}

pub(crate) struct DriverConfig {
    pub(crate) auto_ack: bool,
    pub(crate) request_timeout: Duration,
    pub(crate) keepalive: Option<Duration>,
    /// The last seq_id used (by LOGIN); the driver continues after it.
    pub(crate) last_seq: u32,
}

pub(crate) struct Driver {
    cmd_rx: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    shutdown: CancellationToken,
    config: DriverConfig,
    pending: HashMap<u32, Pending>,
    deadlines: BinaryHeap<Reverse<(Instant, u64, u32)>>,
    next_seq: u32,
    generation: u64,
    dedup: Dedup,
    last_rx: Instant,
    kicked: Option<String>,
    logged_out: bool,
}

/// Why the loop ended: the text of [`Event::Closed`].
type Exit = String;

impl Driver {
    pub(crate) fn new(
        cmd_rx: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        shutdown: CancellationToken,
        config: DriverConfig,
    ) -> Self {
        Self {
            cmd_rx,
            events,
            shutdown,
            next_seq: config.last_seq,
            config,
            pending: HashMap::new(),
            deadlines: BinaryHeap::new(),
            generation: 0,
            dedup: Dedup::new(Dedup::DEFAULT_CAPACITY),
            last_rx: Instant::now(),
            kicked: None,
            logged_out: false,
        }
    }

    /// Runs until the connection ends, then fails what is pending and emits [`Event::Closed`].
    pub(crate) async fn run(mut self, transport: Transport) {
        let (mut sink, mut stream) = transport.split();
        let reason = self.run_loop(&mut sink, &mut stream).await;
        // Closing the socket first: nothing more is read or written.
        drop(sink);
        drop(stream);
        tracing::debug!(%reason, "longlink connection closed");
        self.finish(reason).await;
    }

    async fn run_loop(&mut self, sink: &mut Sink, stream: &mut Stream) -> Exit {
        let shutdown = self.shutdown.clone();
        let mut keepalive = self.config.keepalive.map(|period| {
            let mut interval = tokio::time::interval_at(Instant::now() + period, period);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            (interval, period)
        });
        loop {
            let next_deadline = self.deadlines.peek().map(|Reverse((at, _, _))| *at);
            // Not biased: a flood of pushes must not starve the application's requests
            // (nor the reverse).
            tokio::select! {
                () = shutdown.cancelled() => return self.shutdown_reason(),
                item = stream.next() => {
                    let Some(item) = item else { return self.eof_reason() };
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => return self.shutdown_reason(),
                        result = self.on_burst(item, sink, stream) => {
                            if let Err(exit) = result { return exit; }
                        }
                    }
                }
                cmd = self.cmd_rx.recv() => {
                    let Some(cmd) = cmd else { return "client dropped".to_owned() };
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => return self.shutdown_reason(),
                        result = self.on_commands(cmd, sink) => {
                            if let Err(exit) = result { return exit; }
                        }
                    }
                }
                period = tick(&mut keepalive) => {
                    if self.last_rx.elapsed() >= period.saturating_mul(3) {
                        return "keepalive timeout".to_owned();
                    }
                    let frame = Frame::request(
                        Cmd::Keepalive,
                        0,
                        0,
                        &wire::KeepaliveRequest { client_time_ms: longlink_proto::unix_ms() },
                    );
                    let deadline = Instant::now() + self.config.request_timeout;
                    let frame = self.register(frame, Expect::Frame, deadline, None);
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => return self.shutdown_reason(),
                        result = sink.send(frame) => {
                            if let Err(err) = result { return self.codec_reason(err); }
                        }
                    }
                }
                () = sleep_until_opt(next_deadline), if next_deadline.is_some() => self.expire(),
            }
        }
    }

    /// Handles `first` and every further frame already readable (up to [`MAX_BURST`]), then
    /// sends one MSG_ACK for the messages they delivered.
    async fn on_burst(
        &mut self,
        first: Result<Frame, CodecError>,
        sink: &mut Sink,
        stream: &mut Stream,
    ) -> Result<(), Exit> {
        let mut acks = Vec::new();
        let mut item = first;
        let mut handled = 0;
        let mut exit = None;
        loop {
            match item {
                Ok(frame) => {
                    if let Err(reason) = self.on_frame(frame, &mut acks).await {
                        exit = Some(reason);
                        break;
                    }
                }
                Err(err) => {
                    exit = Some(self.codec_reason(err));
                    break;
                }
            }
            handled += 1;
            if handled >= MAX_BURST {
                break;
            }
            match poll_fn(|cx| Poll::Ready(stream.poll_next_unpin(cx))).await {
                Poll::Ready(Some(next)) => item = next,
                Poll::Ready(None) => {
                    exit = Some(self.eof_reason());
                    break;
                }
                Poll::Pending => break,
            }
        }
        // Time spent waiting for the application to drain its events is not silence.
        self.last_rx = Instant::now();
        if !acks.is_empty() {
            let frame = self.ack_frame(acks);
            let sent = sink.send(frame).await;
            if exit.is_none()
                && let Err(err) = sent
            {
                exit = Some(self.codec_reason(err));
            }
        }
        exit.map_or(Ok(()), Err)
    }

    async fn on_frame(&mut self, frame: Frame, acks: &mut Vec<u64>) -> Result<(), Exit> {
        if frame.header.flags & FLAG_COMPRESSED != 0 {
            return Err(format!(
                "protocol error: compressed {} frame, but no compression was negotiated",
                frame.header.cmd
            ));
        }
        match frame.header.frame_type {
            FrameType::Response => self.on_response(frame, acks).await,
            FrameType::Push => self.on_push(frame, acks).await,
            FrameType::Request | FrameType::Ack => tracing::debug!(
                cmd = frame.header.cmd,
                log_id = frame.header.log_id,
                "ignoring a request/ack frame from the server"
            ),
        }
        Ok(())
    }

    async fn on_response(&mut self, frame: Frame, acks: &mut Vec<u64>) {
        let is_error = frame.cmd() == Some(Cmd::Error);
        let Some(pending) = self.pending.remove(&frame.header.seq_id) else {
            // Nobody waits for it: a late answer to a request that timed out, or the answer
            // to a fire-and-forget MSG_ACK. An ERROR is still worth telling the application.
            if is_error {
                let (code, message) = decode_error(&frame);
                tracing::debug!(seq_id = frame.header.seq_id, ?code, %message, "unmatched ERROR");
                self.emit(Event::Error { code, message }).await;
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
            if pending.cmd == Cmd::Logout as u16 {
                self.logged_out = true;
            }
            match pending.expect {
                Expect::Frame => Ok(Reply::Frame(frame)),
                Expect::OfflinePage => frame
                    .decode_body::<wire::OfflinePullResponse>()
                    .map(Reply::OfflinePage)
                    .map_err(|err| ClientError::Protocol(err.to_string())),
            }
        };
        let Some(reply) = pending.reply else {
            if let Err(err) = result {
                tracing::warn!(cmd = pending.cmd, %err, "the server refused an automatic request");
            }
            return;
        };
        let pulled: Vec<u64> = match &result {
            Ok(Reply::OfflinePage(page)) => page
                .messages
                .iter()
                .map(|msg| msg.msgid)
                .filter(|msgid| *msgid != 0)
                .collect(),
            _ => Vec::new(),
        };
        // Only what the caller actually received is recorded and acknowledged.
        if reply.send(result).is_ok() {
            for msgid in pulled {
                self.dedup.insert(msgid);
                if self.config.auto_ack {
                    acks.push(msgid);
                }
            }
        }
    }

    async fn on_push(&mut self, frame: Frame, acks: &mut Vec<u64>) {
        match frame.cmd() {
            Some(Cmd::Msg) => {
                let msg = match frame.decode_body::<wire::Msg>() {
                    Ok(msg) => msg,
                    Err(err) => {
                        tracing::warn!(log_id = frame.header.log_id, %err, "dropping an undecodable MSG push");
                        return;
                    }
                };
                let msgid = msg.msgid;
                if msgid != 0 && self.dedup.contains(msgid) {
                    tracing::debug!(msgid, "dropping a duplicate MSG push");
                } else if self.emit(Event::Message(msg.into())).await {
                    self.dedup.insert(msgid);
                } else {
                    // The application dropped its Incoming: leave the message unacknowledged
                    // so that the server keeps it for an offline pull.
                    return;
                }
                if self.config.auto_ack && msgid != 0 {
                    acks.push(msgid);
                }
            }
            Some(Cmd::Kick) => {
                let kick = frame
                    .decode_body::<wire::Kick>()
                    .unwrap_or_else(|err| wire::Kick {
                        message: format!("undecodable KICK: {err}"),
                        ..Default::default()
                    });
                let reason = KickReason::try_from(kick.reason).unwrap_or(KickReason::Unspecified);
                self.kicked = Some(format!(
                    "kicked ({}): {}",
                    reason.as_str_name(),
                    kick.message
                ));
                self.emit(Event::Kicked {
                    reason,
                    message: kick.message,
                })
                .await;
            }
            Some(Cmd::Error) => {
                let (code, message) = decode_error(&frame);
                self.emit(Event::Error { code, message }).await;
            }
            _ => {
                tracing::debug!(cmd = frame.header.cmd, "ignoring an unknown push");
            }
        }
    }

    /// Hands `event` to the application, waiting while its queue is full (backpressure).
    /// `false` when the application dropped its [`crate::Incoming`].
    async fn emit(&mut self, event: Event) -> bool {
        self.events.send(event).await.is_ok()
    }

    /// Writes `first` and every further queued command (up to [`MAX_BURST`]), then flushes.
    async fn on_commands(&mut self, first: Command, sink: &mut Sink) -> Result<(), Exit> {
        let mut cmd = first;
        let mut handled = 0;
        loop {
            if let Some(frame) = self.prepare(cmd)
                && let Err(err) = sink.feed(frame).await
            {
                return Err(self.codec_reason(err));
            }
            handled += 1;
            if handled >= MAX_BURST {
                break;
            }
            match self.cmd_rx.try_recv() {
                Ok(next) => cmd = next,
                Err(_) => break,
            }
        }
        sink.flush().await.map_err(|err| self.codec_reason(err))
    }

    fn prepare(&mut self, cmd: Command) -> Option<Frame> {
        let Command::Request {
            frame,
            expect,
            deadline,
            reply,
        } = cmd;
        if reply.is_closed() {
            return None; // the caller gave up already
        }
        Some(self.register(frame, expect, deadline, Some(reply)))
    }

    /// Gives `frame` a fresh seq_id and log_id and records it as pending.
    fn register(
        &mut self,
        mut frame: Frame,
        expect: Expect,
        deadline: Instant,
        reply: Option<ReplyTx>,
    ) -> Frame {
        let seq_id = self.fresh_seq();
        self.generation += 1;
        frame.header.seq_id = seq_id;
        frame.header.log_id = random_log_id();
        self.pending.insert(
            seq_id,
            Pending {
                cmd: frame.header.cmd,
                expect,
                generation: self.generation,
                reply,
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
        frame
    }

    fn ack_frame(&mut self, msgids: Vec<u64>) -> Frame {
        let seq_id = self.fresh_seq();
        Frame::new(
            Cmd::MsgAck,
            FrameType::Ack,
            seq_id,
            random_log_id(),
            &wire::MsgAck { msgids },
        )
    }

    /// The next seq_id: wrapping, never 0, never one still pending.
    fn fresh_seq(&mut self) -> u32 {
        loop {
            self.next_seq = self.next_seq.wrapping_add(1);
            if self.next_seq != 0 && !self.pending.contains_key(&self.next_seq) {
                return self.next_seq;
            }
        }
    }

    /// Fails the requests whose deadline has passed with [`ClientError::Timeout`].
    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, generation, seq_id))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if self
                .pending
                .get(&seq_id)
                .is_some_and(|p| p.generation == generation)
                && let Some(pending) = self.pending.remove(&seq_id)
            {
                tracing::debug!(seq_id, cmd = pending.cmd, "request timed out");
                if let Some(reply) = pending.reply {
                    let _ = reply.send(Err(ClientError::Timeout));
                }
            }
        }
    }

    async fn finish(mut self, reason: Exit) {
        for (_, pending) in self.pending.drain() {
            if let Some(reply) = pending.reply {
                let _ = reply.send(Err(ClientError::Closed));
            }
        }
        self.cmd_rx.close();
        while let Ok(Command::Request { reply, .. }) = self.cmd_rx.try_recv() {
            let _ = reply.send(Err(ClientError::Closed));
        }
        let _ = self.events.send(Event::Closed { reason }).await;
    }

    fn shutdown_reason(&self) -> Exit {
        if self.logged_out {
            "logged out".to_owned()
        } else {
            "closed by client".to_owned()
        }
    }

    fn eof_reason(&self) -> Exit {
        if self.logged_out {
            "logged out".to_owned()
        } else if let Some(kicked) = &self.kicked {
            kicked.clone()
        } else {
            "connection closed by server".to_owned()
        }
    }

    fn codec_reason(&self, err: CodecError) -> Exit {
        if self.logged_out || self.kicked.is_some() {
            return self.eof_reason();
        }
        match err {
            CodecError::Io(err) => format!("i/o error: {err}"),
            CodecError::Decode(err) => format!("protocol error: {err}"),
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

/// A random non-zero trace id.
pub(crate) fn random_log_id() -> u64 {
    rand::random::<u64>().max(1)
}
