//! One client connection: the reader task and its state machine (awaiting LOGIN → logged in).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use longlink_metrics::{Counter, Gauge};
use longlink_proto::{Cmd, CodecError, ErrorCode, Frame, FrameCodec, FrameType, KickReason, wire};
use longlink_rpc::trace::{MessageKind, Stage, Subject, TraceEvent, session_label, user_label};
use longlink_rpc::{LogicService, Refusal, Reply, SessionInfo};
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken as Release;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::close::{ConnShared, Kick};
use crate::metrics::cmd_label;
use crate::session_table::Link;
use crate::transport::{ReadSide, Received, Stream, WriteSide};
use crate::write_queue::{QueueError, WriteQueue};
use crate::{CloseReason, GateShared, write_queue};

/// Most bytes a kicked connection reads to find MSG_ACKs already sent.
const KICK_DRAIN_BYTES: usize = 64 * 1024;

/// Backoff suggested to clients in the shutdown KICK.
const SHUTDOWN_BACKOFF_MS: u32 = 1000;

/// Least `retry_after_ms` of the RATE_LIMITED that closes a flooding connection: reconnecting
/// at once would only repeat the flood.
const FLOOD_BACKOFF_MS: u32 = 1000;

pub(crate) struct Connection {
    gate: Arc<GateShared>,
    logic: Arc<dyn LogicService>,
    shutdown: CancellationToken,
    peer: SocketAddr,
}

/// What to do after a frame.
enum Next {
    Continue,
    Close(CloseReason),
}

/// The reader's state.
struct Reader {
    conn: Arc<ConnShared>,
    write_timeout: std::time::Duration,
    queue: Arc<WriteQueue>,
    /// Logged in (or resumed): the session is the one in `conn.visitor` (one copy of its
    /// strings per connection, not two).
    attached: bool,
    codec: FrameCodec,
    /// The session's per-appcode gauge and message counter, resolved at login.
    session_metrics: Option<(Gauge, Counter)>,
    /// The client can RESUME: its session is held when the link fails.
    resumable: bool,
    /// Frames/s per class and bytes/s of this connection (lazily allocated).
    limits: crate::limits::ConnLimits,
}

impl Connection {
    pub(crate) fn new(
        gate: Arc<GateShared>,
        logic: Arc<dyn LogicService>,
        shutdown: CancellationToken,
        peer: SocketAddr,
    ) -> Self {
        Self {
            gate,
            logic,
            shutdown,
            peer,
        }
    }

    /// The connection's task: it owns everything it needs (no wrapper future around it), and
    /// releases the connection `permit` at its end. A plain `fn` returning an `async move`
    /// block, because an `async fn` keeps its arguments twice in its state (rust-lang/rust
    /// #62958): ~100 bytes in every idle connection.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would store its arguments twice in every connection's future"
    )]
    pub(crate) fn run(
        self,
        stream: Stream,
        tracker: TaskTracker,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> impl std::future::Future<Output = ()> + Send {
        async move {
            let tracker = &tracker;
            let conn_id = self.gate.next_log_id();
            let span = tracing::debug_span!("conn", conn.id = conn_id, peer.addr = %self.peer);
            self.gate.metrics.connections.inc();
            let queue = Arc::new(WriteQueue::new(
                self.gate.config.write_queue_frames,
                self.gate.metrics.queued_frames.clone(),
            ));
            let conn = Arc::new(ConnShared::new());
            let mut read = self.attach_writer(stream, &queue, &conn, tracker, &span);
            let mut reader = Reader {
                conn,
                write_timeout: self.gate.config.write_timeout,
                queue,
                attached: false,
                codec: FrameCodec::new(self.gate.config.max_body_bytes),
                session_metrics: None,
                resumable: false,
                limits: crate::limits::ConnLimits::default(),
            };
            let reason = self
                .read_loop(&mut reader, &mut read)
                .instrument(span.clone())
                .await;
            read.closing(reason);
            self.gate.metrics.closed(reason.label());
            if let Some((sessions, _)) = reader.session_metrics.take() {
                sessions.dec();
            }
            let session = reader.session().cloned();
            reader.attached = false;
            if let Some(session) = session {
                let hold = reader.resumable
                    && reason.holds_session()
                    && !self.gate.config.hold.is_zero()
                    && !self.shutdown.is_cancelled();
                if hold {
                    // The session outlives its link: a RESUME may take it over (seed 004).
                    if let Some(release) = self.gate.sessions.hold(session.session_id) {
                        tracing::debug!(parent: &span, session.id = session.session_id, uid = %session.uid, reason = reason.label(), "link lost; session held");
                        tracker.spawn(
                            hold_session(
                                self.gate.clone(),
                                self.logic.clone(),
                                session,
                                release,
                                self.shutdown.clone(),
                            )
                            .instrument(span.clone()),
                        );
                    }
                } else if reason == CloseReason::Resumed {
                    // A RESUME took the session over elsewhere: it lives on there.
                    tracing::debug!(parent: &span, session.id = session.session_id, "session resumed on another connection");
                } else if self.gate.sessions.remove(session.session_id) {
                    self.logic.session_closed(&session).await;
                    match reason {
                        CloseReason::ProtocolError(_) => {
                            tracing::info!(parent: &span, session.id = session.session_id, uid = %session.uid, reason = reason.label(), "session closed")
                        }
                        _ => {
                            tracing::debug!(parent: &span, session.id = session.session_id, uid = %session.uid, reason = reason.label(), "session closed")
                        }
                    }
                }
            } else {
                tracing::debug!(parent: &span, reason = reason.label(), "connection closed before login");
            }
            self.gate.metrics.connections.dec();
            // The writer flushes what is queued (a last ERROR or KICK included), then closes.
            reader.queue.close();
            drop(permit);
        }
    }

    /// Splits `stream` and gives its write half to the queue: plain TCP is written directly
    /// by whoever queues a frame, with a writer task only while the socket would block
    /// (crate::write_queue); TLS and WebSocket get their writer task now. A plain `fn`, so
    /// the write half is never a local of the connection's future.
    fn attach_writer(
        &self,
        stream: Stream,
        queue: &Arc<WriteQueue>,
        conn: &Arc<ConnShared>,
        tracker: &TaskTracker,
        span: &tracing::Span,
    ) -> ReadSide {
        let (read, write) = stream.split();
        match write {
            // Plain TCP: written directly by whoever queues a frame; a writer task only
            // while the socket would block (crate::write_queue).
            WriteSide::Tcp(socket) => {
                queue.write_directly(socket, conn.clone(), self.gate.clone(), tracker.clone())
            }
            write => {
                tracker.spawn(
                    write_queue::run(
                        write,
                        queue.clone(),
                        conn.clone(),
                        self.gate.config.write_timeout,
                        self.gate.clone(),
                    )
                    .instrument(span.clone()),
                );
            }
        }
        read
    }

    async fn read_loop(&self, reader: &mut Reader, read: &mut ReadSide) -> CloseReason {
        let config = &self.gate.config;
        if let Err(refusal) = self.gate.admit_connection(self.peer.ip()) {
            // The access lists or flapping (crate::access), before any frame: the ERROR is a
            // push (seq 0, log 0), then the close.
            reader.queue_now(refusal.frame(None, 0).to_bytes());
            return CloseReason::NotAdmitted;
        }
        let login_deadline = Instant::now() + config.login_timeout;
        let mut last_activity = Instant::now();
        let mut buf = BytesMut::new();
        loop {
            let deadline = match reader.session() {
                None => login_deadline,
                Some(_) => last_activity + config.idle_timeout,
            };
            // Beyond its bytes/s the connection is not read until the bucket refills: the
            // kernel's receive buffer fills and TCP slows the sender (no error is sent).
            let paused = reader.limits.read_paused_until(&config.limits);
            if paused.is_some() {
                self.gate.metrics.read_pauses.inc();
            }
            let buffered = buf.len();
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    reader.queue_now(Kick::new(KickReason::ServerShutdown, "server is shutting down", SHUTDOWN_BACKOFF_MS).frame());
                    return CloseReason::ServerShutdown;
                }
                () = reader.conn.closed() => {
                    let reason = reader.conn.reason();
                    if reason == CloseReason::Kicked {
                        Box::pin(self.apply_acks_already_received(reader, read, &mut buf)).await;
                    }
                    return reason;
                }
                // One timer for both the deadline and the end of a read pause: each timer
                // is ~110 bytes in every idle connection's future.
                _ = tokio::time::sleep_until(paused.map_or(deadline, |until| Instant::from_std(until).min(deadline))) => {
                    if paused.is_some() && Instant::now() < deadline {
                        continue;
                    }
                    let (code, reason, message) = match reader.session() {
                        None => (ErrorCode::LoginTimeout, CloseReason::LoginTimeout, "no login within the login timeout"),
                        Some(_) => (ErrorCode::IdleTimeout, CloseReason::IdleTimeout, "nothing received within the idle timeout"),
                    };
                    reader.queue_now(Frame::error(None, 0, code, message).to_bytes());
                    return reason;
                }
                received = read.read(&mut buf), if paused.is_none() => {
                    match received {
                        Ok(Received::Data) => {
                            last_activity = Instant::now();
                            // `read` appends to what an earlier read left of a frame.
                            reader.limits.bytes_read(&config.limits, buf.len().saturating_sub(buffered));
                        }
                        Ok(Received::Activity) => {
                            // A WebSocket ping or pong: the client is alive (keepalive).
                            last_activity = Instant::now();
                            continue;
                        }
                        Ok(Received::Closed) => return CloseReason::ByPeer,
                        Ok(Received::Refused(code, message)) => {
                            tracing::info!(code = ?code, message, "transport rule broken");
                            reader.queue_now(Frame::error(None, 0, code, message).to_bytes());
                            return CloseReason::ProtocolError(code);
                        }
                        Err(_) => return CloseReason::Io,
                    }
                    if read.message_based() {
                        // WebSocket: one whole frame per binary message, nothing more or less.
                        match reader.codec.decode(&mut buf) {
                            Ok(Some(frame)) if buf.is_empty() => {
                                buf = BytesMut::new();
                                if let Next::Close(reason) = Box::pin(self.on_frame(reader, frame)).await {
                                    return reason;
                                }
                                continue;
                            }
                            Ok(_) => {
                                let message = "a WebSocket binary message must carry exactly one whole frame";
                                let code = ErrorCode::BadBody;
                                reader.queue_now(Frame::error(None, 0, code, message).to_bytes());
                                return CloseReason::ProtocolError(code);
                            }
                            Err(CodecError::Decode(err)) => {
                                let code = err.error_code();
                                tracing::info!(error = %err, "malformed frame");
                                reader.queue_now(Frame::error(err.seq_id(), 0, code, err.to_string()).to_bytes());
                                return CloseReason::ProtocolError(code);
                            }
                            Err(CodecError::Io(_)) => return CloseReason::Io,
                        }
                    }
                    loop {
                        match reader.codec.decode(&mut buf) {
                            Ok(Some(frame)) => {
                                // Boxed: the frame handler's state is large and short-lived;
                                // unboxed it would sit in every idle connection's future.
                                if let Next::Close(reason) = Box::pin(self.on_frame(reader, frame)).await {
                                    return reason;
                                }
                            }
                            Ok(None) => break,
                            Err(CodecError::Decode(err)) => {
                                let code = err.error_code();
                                tracing::info!(error = %err, "malformed frame");
                                reader.queue_now(Frame::error(err.seq_id(), 0, code, err.to_string()).to_bytes());
                                return CloseReason::ProtocolError(code);
                            }
                            Err(CodecError::Io(_)) => return CloseReason::Io,
                        }
                    }
                    if buf.is_empty() {
                        // An idle connection keeps no read buffer.
                        buf = BytesMut::new();
                    }
                }
            }
        }
    }

    /// A kicked session may have MSG_ACKs in flight (sent just before the same device logged
    /// in again): apply those already received instead of dropping them, so their messages
    /// are not redelivered. Reads only what is there now, and at most [`KICK_DRAIN_BYTES`].
    async fn apply_acks_already_received(
        &self,
        reader: &mut Reader,
        read: &mut ReadSide,
        buf: &mut BytesMut,
    ) {
        let Some(session) = reader.session().cloned() else {
            return;
        };
        while buf.len() < KICK_DRAIN_BYTES {
            match read.read_available(buf) {
                Ok(Received::Data | Received::Activity) => continue,
                _ => break,
            }
        }
        let drain = async {
            let cap = self.gate.config.max_decompressed_bytes as usize;
            while let Ok(Some(frame)) = reader.codec.decode(buf) {
                let Ok(frame) =
                    longlink_proto::compress::inflate(frame, reader.queue.compression(), cap)
                else {
                    break;
                };
                if frame.cmd() == Some(Cmd::MsgAck) && frame.header.frame_type == FrameType::Ack {
                    let _ = self.logic.handle(&session, frame).await;
                }
            }
        };
        let _ = tokio::time::timeout(reader.write_timeout, drain).await;
    }

    async fn on_frame(&self, reader: &mut Reader, mut frame: Frame) -> Next {
        if frame.header.log_id == 0 {
            frame.header.log_id = self.gate.next_log_id();
        }
        let header = frame.header;
        let metrics = &self.gate.metrics;
        metrics.frames_in.add(header.cmd, 1);
        metrics.bytes_in.add(
            header.cmd,
            (longlink_proto::HEADER_LEN + frame.body.len()) as u64,
        );
        if header.flags != 0 {
            // Flag bit 0 = compressed with the algorithm agreed at LOGIN: decompressed here
            // with a cap (a bomb is refused, never inflated). Any other bit, or the flag when
            // nothing was agreed: BAD_FLAGS. Every refusal closes (crate::compression).
            let cap = self.gate.config.max_decompressed_bytes as usize;
            frame = match longlink_proto::compress::inflate(frame, reader.queue.compression(), cap)
            {
                Ok(frame) => frame,
                Err(err) => {
                    tracing::info!(error = %err, "compressed frame refused");
                    let refusal = Refusal::new(err.error_code(), err.to_string());
                    return reader.refuse(&header, refusal).await;
                }
            };
        }
        if !matches!(header.frame_type, FrameType::Request | FrameType::Ack) {
            return reader
                .refuse(
                    &header,
                    Refusal::new(
                        ErrorCode::BadFrameType,
                        "clients send requests (0) or acks (3)",
                    ),
                )
                .await;
        }
        let class = crate::limits::Class::of(header.cmd);
        match reader.limits.check_frame(&self.gate.config.limits, class) {
            crate::limits::Verdict::Pass => {}
            crate::limits::Verdict::Refuse(retry_after_ms) => {
                // Not handled, nothing stored: the client sends it again after the wait (the
                // SDK does so with the same client_msg_id).
                metrics.frame_throttled(class);
                let refusal = Refusal::new(
                    ErrorCode::RateLimited,
                    "too many frames on this connection: retry after retry_after_ms",
                )
                .retry_after(retry_after_ms);
                return reader.refuse(&header, refusal).await;
            }
            crate::limits::Verdict::Flood(retry_after_ms) => {
                metrics.frame_throttled(class);
                tracing::info!(
                    cmd = cmd_label(header.cmd),
                    class = class.label(),
                    "frame flood: closing"
                );
                let refusal = Refusal::new(
                    ErrorCode::RateLimited,
                    "frame flood: refusals were not waited for; connection closed",
                )
                .retry_after(retry_after_ms.max(FLOOD_BACKOFF_MS));
                reader.queue_now(refusal.frame(Some(header.seq_id), header.log_id).to_bytes());
                return Next::Close(CloseReason::Flooding);
            }
        }
        match Cmd::try_from(header.cmd) {
            Ok(Cmd::Keepalive) => {
                let pong = wire::KeepaliveResponse {
                    server_time_ms: longlink_proto::unix_ms(),
                };
                reader
                    .queue(Frame::response(&header, &pong).to_bytes())
                    .await
            }
            Ok(Cmd::Login) if reader.session().is_none() => self.login(reader, frame).await,
            Ok(Cmd::Resume) if reader.session().is_none() => self.resume(reader, frame).await,
            _ if reader.session().is_none() => {
                reader
                    .refuse(&header, Refusal::new(ErrorCode::NotLoggedIn, "login first"))
                    .await
            }
            _ => {
                let Some(session) = reader.session() else {
                    return Next::Close(CloseReason::Io);
                };
                if header.frame_type == FrameType::Request
                    && matches!(Cmd::try_from(header.cmd), Ok(Cmd::C2c | Cmd::C2s))
                {
                    let from = user_label(session.appcode, &session.uid);
                    frame.header.log_id = self.claimed_log_id(header.log_id, &from);
                }
                let header = frame.header;
                let span = tracing::debug_span!(
                    "request",
                    log_id = header.log_id,
                    cmd = header.cmd,
                    seq_id = header.seq_id
                );
                let started = Instant::now();
                self.accepted(reader, session, &header);
                let reply = self.logic.handle(session, frame).instrument(span).await;
                let elapsed = started.elapsed();
                if header.frame_type == FrameType::Request {
                    metrics.request_done(header.cmd, elapsed);
                }
                tracing::debug!(
                    log_id = header.log_id,
                    cmd = cmd_label(header.cmd),
                    elapsed_us = elapsed.as_micros() as u64,
                    "request handled"
                );
                match reply {
                    Reply::Frame(frame) => {
                        let closing = closing_error(&frame);
                        match (reader.queue(frame.to_bytes()).await, closing) {
                            (Next::Continue, Some(code)) => {
                                Next::Close(CloseReason::ProtocolError(code))
                            }
                            (next, _) => next,
                        }
                    }
                    Reply::Nothing => Next::Continue,
                    Reply::FrameThenClose(frame) => {
                        reader.queue_now(frame.to_bytes());
                        Next::Close(CloseReason::Logout)
                    }
                }
            }
        }
    }

    /// Compresses what is queued from now on with `agreed` (if any). Called right after the
    /// LOGIN or RESUME answer that names it: the answer and anything queued before went plain;
    /// the redelivery that follows is the first to be compressed.
    fn enable_compression(
        &self,
        reader: &Reader,
        agreed: Option<longlink_proto::compress::Compression>,
    ) {
        if let Some(algorithm) = agreed {
            reader
                .queue
                .set_compression(crate::compression::Outbound::new(
                    algorithm,
                    self.gate.config.compression_min_bytes,
                    self.gate.frame_cache.clone(),
                ));
        }
    }

    /// `log_id` if `from` may open (or go on with) its trace, else a fresh id: a client picks
    /// its frames' log_ids, and one naming another sender's open trace would merge this message
    /// into it — and let this sender's API key read that trace. The answer echoes the id used.
    fn claimed_log_id(&self, log_id: u64, from: &str) -> u64 {
        let ledger = &self.gate.ledger;
        let mut id = log_id;
        for _ in 0..8 {
            if ledger.claim(id, from) {
                return id;
            }
            id = self.gate.next_log_id();
        }
        // Someone opened traces at the next ids too (they are sequential): random ones.
        for _ in 0..8 {
            id = rand::random::<u64>().max(1);
            if ledger.claim(id, from) {
                break;
            }
        }
        id
    }

    /// A C2C or C2S from a logged-in session: counted, and its trace opened in the ledger
    /// (logic adds the receiver once it has decoded the body).
    fn accepted(&self, reader: &Reader, session: &SessionInfo, header: &longlink_proto::Header) {
        let kind = match Cmd::try_from(header.cmd) {
            Ok(Cmd::C2c) => MessageKind::C2c,
            Ok(Cmd::C2s) => MessageKind::C2s,
            _ => return,
        };
        if header.frame_type != FrameType::Request {
            return;
        }
        if let Some((_, messages)) = &reader.session_metrics {
            messages.inc();
        }
        let mut event = TraceEvent::now(header.log_id, Stage::Accepted)
            .detail(kind.name())
            .subject(Subject {
                kind,
                from: Some(user_label(session.appcode, &session.uid)),
                to: None,
                appcodes: vec![session.appcode],
            });
        event.who = reader.conn.label.get().cloned();
        self.gate.ledger.record(event);
    }

    /// Admission control: while draining nobody new gets in; fresh LOGINs beyond the rate
    /// wait `retry_after_ms` (RESUMEs pass, so resuming clients are served first).
    fn admit(&self, cmd: Cmd) -> Result<(), Refusal> {
        let config = &self.gate.config;
        if self.gate.is_draining() {
            let backoff = u32::try_from(config.drain_backoff.as_millis()).unwrap_or(u32::MAX);
            return Err(
                Refusal::new(ErrorCode::ShuttingDown, "this gate is draining").retry_after(backoff),
            );
        }
        if cmd != Cmd::Login {
            return Ok(());
        }
        let Some(limiter) = &self.gate.login_limiter else {
            return Ok(());
        };
        match limiter.check() {
            Ok(()) => Ok(()),
            Err(not_until) => {
                use governor::clock::Clock as _;
                let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
                // Spread the retries: the bucket refills at a steady rate, clients should too.
                let spread = rand::random_range(0..=config.reconnect_max.as_millis() as u64);
                let retry_after =
                    u32::try_from(wait.as_millis() as u64 + spread).unwrap_or(u32::MAX);
                self.gate.metrics.logins_throttled.inc();
                Err(Refusal::new(
                    ErrorCode::RateLimited,
                    "too many logins at once: retry after retry_after_ms",
                )
                .retry_after(retry_after.max(1)))
            }
        }
    }

    /// Puts a new session id in the table before logic registers it in presence, so that no
    /// push can find presence but miss the table.
    fn new_session(&self, reader: &Reader) -> u64 {
        let session_id = self.gate.next_session_id();
        self.gate.sessions.insert(
            session_id,
            Link {
                queue: reader.queue.clone(),
                conn: reader.conn.clone(),
            },
        );
        session_id
    }

    /// The session is logged in (or resumed) on this connection.
    fn attach(&self, reader: &mut Reader, session: SessionInfo, resumable: bool) {
        let metrics = &self.gate.metrics;
        let sessions = metrics.sessions_of(session.appcode);
        sessions.inc();
        reader.session_metrics = Some((sessions, metrics.messages_of(session.appcode)));
        let _ = reader.conn.label.set(session_label(
            session.appcode,
            &session.uid,
            &session.device_id,
        ));
        reader.resumable = resumable;
        // admit_session recorded it already; this only covers a path that did not.
        let _ = reader.conn.visitor.set(crate::close::Visitor {
            session,
            ip: self.peer.ip(),
        });
        reader.attached = true;
    }

    /// What this gate tells a client about its hold: the hold in seconds (0 = none).
    fn hold_secs(&self, resumable: bool) -> u32 {
        if resumable {
            u32::try_from(self.gate.config.hold.as_secs()).unwrap_or(u32::MAX)
        } else {
            0
        }
    }

    /// The access lists and flapping detection for a session logic accepted
    /// (`crate::access`): a refused one is ended before it gets any frame.
    async fn admit_session(&self, reader: &Reader, session: &SessionInfo) -> Result<(), Refusal> {
        let ip = self.peer.ip();
        // Recorded before the check, so a list change that this check missed finds the
        // session in the sweep that follows it.
        let _ = reader.conn.since_ms.set(longlink_proto::unix_ms());
        let _ = reader.conn.visitor.set(crate::close::Visitor {
            session: session.clone(),
            ip,
        });
        let verdict = self.gate.admit_login(session, ip);
        if let Err(refusal) = &verdict {
            self.gate.sessions.remove(session.session_id);
            self.logic.session_closed(session).await;
            self.gate.metrics.login_failed(refusal.code);
            tracing::info!(session.id = session.session_id, uid = %session.uid, code = ?refusal.code, "session refused by the access guard");
        }
        verdict
    }

    /// The common start of LOGIN and RESUME: admission (draining, the login rate), then the
    /// body; `Err` is what the connection does instead.
    async fn admitted<M: prost::Message + Default>(
        &self,
        reader: &mut Reader,
        cmd: Cmd,
        frame: &Frame,
    ) -> Result<M, Next> {
        let header = frame.header;
        if let Err(refusal) = self.admit(cmd) {
            return Err(reader.refuse_and_close(&header, refusal));
        }
        match frame.decode_body() {
            Ok(request) => Ok(request),
            Err(err) => Err(reader
                .refuse(&header, Refusal::new(ErrorCode::BadBody, err.to_string()))
                .await),
        }
    }

    async fn login(&self, reader: &mut Reader, frame: Frame) -> Next {
        let header = frame.header;
        let request: wire::LoginRequest = match self.admitted(reader, Cmd::Login, &frame).await {
            Ok(request) => request,
            Err(next) => return next,
        };
        let resumable = request.resume_capable && !self.gate.config.hold.is_zero();
        // The gate picks the compression (it is the one that compresses): the first of its
        // preference list the client offered. Logic leaves the field empty.
        let agreed = longlink_proto::compress::negotiate(
            &request.compression,
            &self.gate.config.compression,
        );
        let session_id = self.new_session(reader);
        let _ = reader.conn.device_class.set(request.device_class.clone());
        let accepted = self
            .logic
            .login(
                &self.gate.config.gate_id,
                session_id,
                request,
                header.log_id,
                Some(self.peer.ip()),
            )
            .await;
        match accepted {
            Ok(mut accepted) => {
                if let Err(refusal) = self.admit_session(reader, &accepted.session).await {
                    return reader.refuse_and_close(&header, refusal);
                }
                self.gate.metrics.logins.inc();
                let config = &self.gate.config;
                let response = &mut accepted.response;
                response.hold_secs = self.hold_secs(resumable);
                if !resumable {
                    response.resume_token.clear();
                }
                response.reconnect_min_ms =
                    u32::try_from(config.reconnect_min.as_millis()).unwrap_or(u32::MAX);
                response.reconnect_max_ms =
                    u32::try_from(config.reconnect_max.as_millis()).unwrap_or(u32::MAX);
                response.gates = self.gate.peers();
                response.compression = agreed.map(|a| a.name().to_owned()).unwrap_or_default();
                let next = reader
                    .queue(Frame::response(&header, &accepted.response).to_bytes())
                    .await;
                self.enable_compression(reader, agreed);
                self.logic.session_ready(&accepted.session, false).await;
                self.attach(reader, accepted.session, resumable);
                next
            }
            Err(refusal) => {
                self.gate.sessions.remove(session_id);
                self.gate.metrics.login_failed(refusal.code);
                tracing::info!(log_id = header.log_id, code = ?refusal.code, "login refused");
                reader.refuse(&header, refusal).await
            }
        }
    }

    async fn resume(&self, reader: &mut Reader, frame: Frame) -> Next {
        let header = frame.header;
        let request: wire::ResumeRequest = match self.admitted(reader, Cmd::Resume, &frame).await {
            Ok(request) => request,
            Err(next) => return next,
        };
        if self.gate.config.hold.is_zero() {
            return reader
                .refuse(
                    &header,
                    Refusal::new(
                        ErrorCode::ResumeRejected,
                        "this gate holds no sessions: log in",
                    ),
                )
                .await;
        }
        let agreed = longlink_proto::compress::negotiate(
            &request.compression,
            &self.gate.config.compression,
        );
        let session_id = self.new_session(reader);
        match self
            .logic
            .resume(
                &self.gate.config.gate_id,
                session_id,
                request,
                header.log_id,
            )
            .await
        {
            Ok(mut accepted) => {
                if let Err(refusal) = self.admit_session(reader, &accepted.session).await {
                    return reader.refuse_and_close(&header, refusal);
                }
                self.gate.metrics.resumes.inc();
                accepted.response.hold_secs = self.hold_secs(true);
                accepted.response.compression =
                    agreed.map(|a| a.name().to_owned()).unwrap_or_default();
                let next = reader
                    .queue(Frame::response(&header, &accepted.response).to_bytes())
                    .await;
                self.enable_compression(reader, agreed);
                self.logic.session_ready(&accepted.session, true).await;
                self.attach(reader, accepted.session, true);
                next
            }
            Err(refusal) => {
                self.gate.sessions.remove(session_id);
                if refusal.code == ErrorCode::ResumeRejected {
                    self.gate.metrics.resumes_rejected.inc();
                }
                tracing::debug!(log_id = header.log_id, code = ?refusal.code, "resume refused");
                reader.refuse(&header, refusal).await
            }
        }
    }
}

/// Holds `session` after its link dropped until a RESUME takes it (the table entry is then
/// gone), the hold runs out, or the gate stops; in the last two cases the session is over.
async fn hold_session(
    gate: Arc<GateShared>,
    logic: Arc<dyn LogicService>,
    session: SessionInfo,
    release: Release,
    shutdown: CancellationToken,
) {
    gate.metrics.held.inc();
    let expired = tokio::select! {
        () = tokio::time::sleep(gate.config.hold) => true,
        () = release.cancelled() => false,
        () = shutdown.cancelled() => false,
    };
    gate.metrics.held.dec();
    // Still held (not resumed, not kicked): the session ends here.
    if gate.sessions.end_hold(session.session_id) {
        if expired {
            gate.metrics.holds_expired.inc();
        }
        tracing::debug!(session.id = session.session_id, uid = %session.uid, expired, "hold ended; session closed");
        logic.session_closed(&session).await;
    }
}

/// The code of an ERROR reply that means the connection must close (e.g. BAD_BODY).
fn closing_error(frame: &Frame) -> Option<ErrorCode> {
    if frame.cmd() != Some(Cmd::Error) {
        return None;
    }
    frame
        .decode_body::<wire::Error>()
        .ok()
        .and_then(|e| ErrorCode::try_from(e.code).ok())
        .filter(|code| Refusal::new(*code, "").closes_connection())
}

impl Reader {
    /// The session logged in on this connection, if any.
    fn session(&self) -> Option<&SessionInfo> {
        if self.attached {
            self.conn.visitor.get().map(|visitor| &visitor.session)
        } else {
            None
        }
    }

    /// Queues a frame, waiting for room at most the write timeout; a queue that stays full
    /// means the client does not read.
    async fn queue(&self, frame: Bytes) -> Next {
        match self.queue.push(frame, self.write_timeout).await {
            Ok(()) => Next::Continue,
            Err(QueueError::Full) => Next::Close(CloseReason::SlowConsumer),
            Err(QueueError::Closed) => Next::Close(CloseReason::Io),
        }
    }

    /// Queues a last frame before closing; if there is no room, the close goes ahead anyway.
    fn queue_now(&self, frame: Bytes) {
        let _ = self.queue.try_push(frame);
    }

    /// Sends an ERROR for `header`'s request and closes (admission refusals: the client
    /// comes back after `retry_after_ms` on a new connection, holding no slot meanwhile).
    fn refuse_and_close(&self, header: &longlink_proto::Header, refusal: Refusal) -> Next {
        self.queue_now(refusal.frame(Some(header.seq_id), header.log_id).to_bytes());
        Next::Close(CloseReason::NotAdmitted)
    }

    /// Sends an ERROR for `header`'s request; closes the connection if the code demands it.
    async fn refuse(&self, header: &longlink_proto::Header, refusal: Refusal) -> Next {
        let frame = refusal.frame(Some(header.seq_id), header.log_id);
        if refusal.closes_connection() {
            self.queue_now(frame.to_bytes());
            return Next::Close(CloseReason::ProtocolError(refusal.code));
        }
        self.queue(frame.to_bytes()).await
    }
}
