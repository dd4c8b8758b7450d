//! One client connection: the reader task and its state machine (awaiting LOGIN → logged in).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use longlink_metrics::{Counter, Gauge};
use longlink_proto::{Cmd, CodecError, ErrorCode, Frame, FrameCodec, FrameType, KickReason, wire};
use longlink_rpc::trace::{MessageKind, Stage, Subject, TraceEvent, session_label, user_label};
use longlink_rpc::{LogicService, Refusal, Reply, SessionInfo};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::close::{ConnShared, kick_frame};
use crate::metrics::cmd_label;
use crate::write_queue::{QueueError, WriteQueue};
use crate::{CloseReason, GateShared, write_queue};

/// Bytes read per readiness event; the buffer is freed again once fully decoded.
const READ_CHUNK: usize = 4096;

/// Most bytes a kicked connection reads to find MSG_ACKs already sent.
const KICK_DRAIN_BYTES: usize = 64 * 1024;

/// Backoff suggested to clients in the shutdown KICK.
const SHUTDOWN_BACKOFF_MS: u32 = 1000;

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
    session: Option<SessionInfo>,
    codec: FrameCodec,
    /// The session's per-appcode gauge and message counter, resolved at login.
    session_metrics: Option<(Gauge, Counter)>,
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

    pub(crate) async fn run(self, stream: TcpStream, tracker: &TaskTracker) {
        let conn_id = self.gate.next_log_id();
        let span = tracing::debug_span!("conn", conn.id = conn_id, peer.addr = %self.peer);
        self.gate.metrics.connections.inc();
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let queue = Arc::new(WriteQueue::new(
            self.gate.config.write_queue_frames,
            self.gate.metrics.queued_frames.clone(),
        ));
        let conn = Arc::new(ConnShared::new());
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
        let mut reader = Reader {
            conn,
            write_timeout: self.gate.config.write_timeout,
            queue,
            session: None,
            codec: FrameCodec::new(self.gate.config.max_body_bytes),
            session_metrics: None,
        };
        let reason = self
            .read_loop(&mut reader, read)
            .instrument(span.clone())
            .await;
        self.gate.metrics.closed(reason.label());
        if let Some((sessions, _)) = reader.session_metrics.take() {
            sessions.dec();
        }
        if let Some(session) = reader.session.take() {
            self.gate.sessions.remove(session.session_id);
            self.logic.session_closed(&session).await;
            match reason {
                CloseReason::ProtocolError(_) => {
                    tracing::info!(parent: &span, session.id = session.session_id, uid = %session.uid, reason = reason.label(), "session closed")
                }
                _ => {
                    tracing::debug!(parent: &span, session.id = session.session_id, uid = %session.uid, reason = reason.label(), "session closed")
                }
            }
        } else {
            tracing::debug!(parent: &span, reason = reason.label(), "connection closed before login");
        }
        self.gate.metrics.connections.dec();
        // The writer flushes what is queued (a last ERROR or KICK included), then closes.
        reader.queue.close();
    }

    async fn read_loop(&self, reader: &mut Reader, read: OwnedReadHalf) -> CloseReason {
        let config = &self.gate.config;
        let login_deadline = Instant::now() + config.login_timeout;
        let mut last_activity = Instant::now();
        let mut buf = BytesMut::new();
        loop {
            let deadline = match reader.session {
                None => login_deadline,
                Some(_) => last_activity + config.idle_timeout,
            };
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    reader.queue_now(kick_frame(KickReason::ServerShutdown, "server is shutting down", SHUTDOWN_BACKOFF_MS));
                    return CloseReason::ServerShutdown;
                }
                _ = reader.conn.token.cancelled() => {
                    let reason = reader.conn.reason();
                    if reason == CloseReason::Kicked {
                        Box::pin(self.apply_acks_already_received(reader, &read, &mut buf)).await;
                    }
                    return reason;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let (code, reason, message) = match reader.session {
                        None => (ErrorCode::LoginTimeout, CloseReason::LoginTimeout, "no login within the login timeout"),
                        Some(_) => (ErrorCode::IdleTimeout, CloseReason::IdleTimeout, "nothing received within the idle timeout"),
                    };
                    reader.queue_now(Frame::error(None, 0, code, message).to_bytes());
                    return reason;
                }
                ready = read.readable() => {
                    if ready.is_err() {
                        return CloseReason::Io;
                    }
                    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                        buf.reserve(READ_CHUNK);
                    }
                    match read.try_read_buf(&mut buf) {
                        Ok(0) => return CloseReason::ByPeer,
                        Ok(_) => last_activity = Instant::now(),
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                            // A spurious wake-up (readiness is cleared only by WouldBlock): an
                            // idle connection must not keep the buffer reserved above.
                            if buf.is_empty() {
                                buf = BytesMut::new();
                            }
                            continue;
                        }
                        Err(_) => return CloseReason::Io,
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
        read: &OwnedReadHalf,
        buf: &mut BytesMut,
    ) {
        let Some(session) = reader.session.clone() else {
            return;
        };
        while buf.len() < KICK_DRAIN_BYTES {
            buf.reserve(READ_CHUNK);
            match read.try_read_buf(buf) {
                Ok(n) if n > 0 => continue,
                _ => break,
            }
        }
        let drain = async {
            while let Ok(Some(frame)) = reader.codec.decode(buf) {
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
            // Compression is not negotiated by this server: any flag is a protocol error.
            return reader
                .refuse(
                    &header,
                    Refusal::new(ErrorCode::BadFlags, "no flags were negotiated"),
                )
                .await;
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
        match Cmd::try_from(header.cmd) {
            Ok(Cmd::Keepalive) => {
                let pong = wire::KeepaliveResponse {
                    server_time_ms: longlink_proto::unix_ms(),
                };
                reader
                    .queue(Frame::response(&header, &pong).to_bytes())
                    .await
            }
            Ok(Cmd::Login) if reader.session.is_none() => self.login(reader, frame).await,
            _ if reader.session.is_none() => {
                reader
                    .refuse(&header, Refusal::new(ErrorCode::NotLoggedIn, "login first"))
                    .await
            }
            _ => {
                let Some(session) = reader.session.as_ref() else {
                    return Next::Close(CloseReason::Io);
                };
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

    async fn login(&self, reader: &mut Reader, frame: Frame) -> Next {
        let header = frame.header;
        let request: wire::LoginRequest = match frame.decode_body() {
            Ok(request) => request,
            Err(err) => {
                return reader
                    .refuse(&header, Refusal::new(ErrorCode::BadBody, err.to_string()))
                    .await;
            }
        };
        let session_id = self.gate.next_session_id();
        // In the table before presence knows it, so no push can find presence but miss us.
        self.gate
            .sessions
            .insert(session_id, reader.queue.clone(), reader.conn.clone());
        let accepted = self
            .logic
            .login(
                &self.gate.config.gate_id,
                session_id,
                request,
                header.log_id,
            )
            .await;
        match accepted {
            Ok(accepted) => {
                let metrics = &self.gate.metrics;
                metrics.logins.inc();
                let sessions = metrics.sessions_of(accepted.session.appcode);
                sessions.inc();
                reader.session_metrics =
                    Some((sessions, metrics.messages_of(accepted.session.appcode)));
                let _ = reader.conn.label.set(session_label(
                    accepted.session.appcode,
                    &accepted.session.uid,
                    &accepted.session.device_id,
                ));
                let next = reader
                    .queue(Frame::response(&header, &accepted.response).to_bytes())
                    .await;
                self.logic.session_ready(&accepted.session).await;
                reader.session = Some(accepted.session);
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

    /// Sends an ERROR for `header`'s request; closes the connection if the code demands it.
    async fn refuse(&self, header: &longlink_proto::Header, refusal: Refusal) -> Next {
        let frame = Frame::error(
            Some(header.seq_id),
            header.log_id,
            refusal.code,
            refusal.message.clone(),
        );
        if refusal.closes_connection() {
            self.queue_now(frame.to_bytes());
            return Next::Close(CloseReason::ProtocolError(refusal.code));
        }
        self.queue(frame.to_bytes()).await
    }
}
