//! [`Client`] (the cheap, cloneable handle apps call) and [`Incoming`] (the stream of pushes).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, Stream, StreamExt};
use longlink_proto::{Cmd, DEFAULT_PAGE_SIZE, Frame, FrameCodec, FrameType, wire};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::driver::{Command, Driver, DriverConfig, Expect, Reply, Transport, random_log_id};
use crate::{
    ClientConfig, ClientError, Content, Event, HistoryDirection, Message, PullPage, SendReceipt,
    UserRef,
};

/// Capacity of the queue of commands from [`Client`] handles to the driver task.
const COMMAND_CAPACITY: usize = 256;
/// The seq_id of the LOGIN request; the driver numbers the following requests after it.
const LOGIN_SEQ: u32 = 1;

/// The `client_version` sent at LOGIN.
pub const CLIENT_VERSION: &str = concat!("longlink-sdk/", env!("CARGO_PKG_VERSION"));

/// A logged-in connection to a longlink gate.
///
/// Cheap to clone: every clone talks to the same driver task, which owns the socket. Every
/// call waits at most [`ClientConfig::request_timeout`]. The connection ends on
/// [`Client::logout`], [`Client::close`], when the server or the network closes it, when
/// the server stays silent for three keepalive intervals, or when every `Client` clone has
/// been dropped; calls then fail with [`ClientError::Closed`].
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    cmd_tx: mpsc::Sender<Command>,
    shutdown: CancellationToken,
    request_timeout: Duration,
    session_id: u64,
    uid: String,
    login: wire::LoginResponse,
    keepalive: Option<Duration>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("session_id", &self.inner.session_id)
            .field("uid", &self.inner.uid)
            .field("closed", &self.inner.cmd_tx.is_closed())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects over TCP (at most [`ClientConfig::connect_timeout`]), logs in (the answer
    /// within [`ClientConfig::request_timeout`]) and starts the driver task.
    ///
    /// Returns the client and the stream of incoming [`Event`]s; drain that stream (the
    /// driver stops reading the socket while it is full).
    ///
    /// # Errors
    /// [`ClientError::Connect`] when the TCP connection fails, [`ClientError::Server`] when
    /// the server refuses the login (e.g. `BAD_TOKEN`), [`ClientError::Timeout`],
    /// [`ClientError::Closed`], [`ClientError::Io`] or [`ClientError::Protocol`] otherwise.
    pub async fn connect(config: ClientConfig) -> Result<(Client, Incoming), ClientError> {
        let tcp = match timeout(config.connect_timeout, TcpStream::connect(&config.addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(err)) => return Err(ClientError::Connect(err)),
            Err(_) => {
                return Err(ClientError::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "connecting to {} took longer than {:?}",
                        config.addr, config.connect_timeout
                    ),
                )));
            }
        };
        // Latency matters more than packet count for a chat protocol.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "could not set TCP_NODELAY");
        }
        let mut transport = Framed::new(tcp, FrameCodec::new(config.max_body_bytes));
        let login = timeout(config.request_timeout, login(&mut transport, &config))
            .await
            .map_err(|_| ClientError::Timeout)??;
        tracing::debug!(
            session_id = login.session_id,
            uid = %login.uid,
            keepalive_secs = login.keepalive_interval_secs,
            "logged in"
        );

        let keepalive = config.effective_keepalive(login.keepalive_interval_secs);
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (event_tx, event_rx) = mpsc::channel(config.incoming_capacity.max(1));
        let shutdown = CancellationToken::new();
        let driver = Driver::new(
            cmd_rx,
            event_tx,
            shutdown.clone(),
            DriverConfig {
                auto_ack: config.auto_ack,
                request_timeout: config.request_timeout,
                keepalive,
                last_seq: LOGIN_SEQ,
            },
        );
        tokio::spawn(driver.run(transport));
        let client = Client {
            inner: Arc::new(Inner {
                cmd_tx,
                shutdown,
                request_timeout: config.request_timeout,
                session_id: login.session_id,
                uid: login.uid.clone(),
                login,
                keepalive,
            }),
        };
        Ok((client, Incoming { rx: event_rx }))
    }

    /// The session id the server assigned at login.
    pub fn session_id(&self) -> u64 {
        self.inner.session_id
    }

    /// The uid this session is logged in as (from the token, as the server read it).
    pub fn uid(&self) -> &str {
        &self.inner.uid
    }

    /// The whole `LoginResponse` (server time, resume token, announced keepalive interval).
    pub fn login_response(&self) -> &wire::LoginResponse {
        &self.inner.login
    }

    /// The automatic keepalive period in use (`None`: disabled).
    pub fn keepalive_interval(&self) -> Option<Duration> {
        self.inner.keepalive
    }

    /// Whether the connection has ended (every call would fail with [`ClientError::Closed`]).
    pub fn is_closed(&self) -> bool {
        self.inner.cmd_tx.is_closed()
    }

    /// Sends a message to another user with a fresh random client_msg_id (16 hex digits).
    ///
    /// To retry after a [`ClientError::Timeout`] or [`ClientError::Closed`] without risking a
    /// duplicate, call [`Client::c2c_with_id`] with the receipt's / first attempt's id.
    ///
    /// # Errors
    /// See [`Client::c2c_with_id`].
    pub async fn c2c(&self, to: UserRef, content: Content) -> Result<SendReceipt, ClientError> {
        let client_msg_id = new_client_msg_id();
        self.c2c_with_id(to, &client_msg_id, content).await
    }

    /// Sends a message to another user with the caller's client_msg_id: a retry with the same
    /// id is idempotent (the receipt says `duplicate`). Returns once the message is durable.
    ///
    /// # Errors
    /// [`ClientError::Server`] (e.g. `INVALID_ARGUMENT`, `UNKNOWN_RECEIVER_APPCODE`,
    /// `STORE_UNAVAILABLE`), [`ClientError::Timeout`], [`ClientError::Closed`].
    pub async fn c2c_with_id(
        &self,
        to: UserRef,
        client_msg_id: &str,
        content: Content,
    ) -> Result<SendReceipt, ClientError> {
        let (content_type, msgtype, content) = content.into_parts();
        let body = wire::C2cRequest {
            to: Some(to.into()),
            client_msg_id: client_msg_id.to_owned(),
            content_type,
            msgtype,
            content,
        };
        let frame = self.request_frame(Cmd::C2c, &body).await?;
        let resp: wire::C2cResponse = decode(&frame)?;
        Ok(SendReceipt {
            msgid: resp.msgid,
            senddate_ms: resp.senddate_ms,
            duplicate: resp.duplicate,
            client_msg_id: client_msg_id.to_owned(),
        })
    }

    /// Sends a message upstream to the business server of (this appcode, `msgtype`); returns
    /// the bus topic once the bus holds it. Retry with the same `client_msg_id`.
    ///
    /// # Errors
    /// [`ClientError::Server`] (e.g. `BUS_UNAVAILABLE`), [`ClientError::Timeout`],
    /// [`ClientError::Closed`].
    pub async fn c2s(
        &self,
        msgtype: u32,
        payload: Bytes,
        client_msg_id: &str,
    ) -> Result<String, ClientError> {
        let body = wire::C2sRequest {
            msgtype,
            payload,
            client_msg_id: client_msg_id.to_owned(),
        };
        let frame = self.request_frame(Cmd::C2s, &body).await?;
        let resp: wire::C2sResponse = decode(&frame)?;
        Ok(resp.topic)
    }

    /// Pulls one page of offline messages (msgid > `cursor`, ascending; `page_size` 0 = the
    /// server's default of 50).
    ///
    /// Returns every message of the page, even one already pushed on this connection (the
    /// application asked for the page). The page's msgids are recorded in the client's
    /// de-duplication set, so a later push of the same msgid is dropped, and with
    /// [`ClientConfig::auto_ack`] they are acknowledged (MSG_ACK type 3).
    ///
    /// # Errors
    /// [`ClientError::Server`], [`ClientError::Timeout`], [`ClientError::Closed`].
    pub async fn pull_offline(&self, cursor: u64, page_size: u32) -> Result<PullPage, ClientError> {
        let body = wire::OfflinePullRequest { cursor, page_size };
        let frame = Frame::request(Cmd::OfflinePull, 0, 0, &body);
        match self.request(frame, Expect::OfflinePage).await? {
            Reply::OfflinePage(page) => Ok(PullPage {
                messages: page.messages.into_iter().map(Message::from).collect(),
                next_cursor: page.next_cursor,
                more: page.more,
            }),
            Reply::Frame(_) => Err(ClientError::Protocol(
                "the driver answered an offline pull with a raw frame".to_owned(),
            )),
        }
    }

    /// Pulls every offline message, page after page (default page size) until `more` is
    /// false. See [`Client::pull_offline`] for de-duplication and acknowledgement.
    ///
    /// # Errors
    /// As [`Client::pull_offline`]; [`ClientError::Protocol`] if the server says `more` but
    /// its cursor does not advance.
    pub async fn pull_all_offline(&self) -> Result<Vec<Message>, ClientError> {
        let mut messages = Vec::new();
        let mut cursor = 0;
        loop {
            let page = self.pull_offline(cursor, DEFAULT_PAGE_SIZE).await?;
            messages.extend(page.messages);
            if !page.more {
                return Ok(messages);
            }
            if page.next_cursor <= cursor {
                return Err(ClientError::Protocol(format!(
                    "offline pull says more, but its cursor did not advance past {cursor}"
                )));
            }
            cursor = page.next_cursor;
        }
    }

    /// One page of the conversation with `with` (both directions; [`HistoryDirection::Older`]:
    /// msgid < `cursor`, newest first, cursor 0 = from the newest; [`HistoryDirection::Newer`]:
    /// msgid > `cursor`, oldest first). History is for display: its messages are neither
    /// acknowledged nor recorded in the de-duplication set.
    ///
    /// # Errors
    /// [`ClientError::Server`], [`ClientError::Timeout`], [`ClientError::Closed`].
    pub async fn history(
        &self,
        with: UserRef,
        cursor: u64,
        direction: HistoryDirection,
        page_size: u32,
    ) -> Result<PullPage, ClientError> {
        let body = wire::HistoryPullRequest {
            with: Some(with.into()),
            cursor,
            direction: direction as i32,
            page_size,
        };
        let frame = self.request_frame(Cmd::HistoryPull, &body).await?;
        let resp: wire::HistoryPullResponse = decode(&frame)?;
        Ok(PullPage {
            messages: resp.messages.into_iter().map(Message::from).collect(),
            next_cursor: resp.next_cursor,
            more: resp.more,
        })
    }

    /// Acknowledges messages explicitly (MSG_ACK as a request, type 0); returns how many the
    /// server marked delivered. Needed only with `auto_ack: false`.
    ///
    /// # Errors
    /// [`ClientError::Server`] (e.g. `NOT_FOUND` for a msgid that is absent or not yours),
    /// [`ClientError::Timeout`], [`ClientError::Closed`].
    pub async fn ack(&self, msgids: &[u64]) -> Result<u32, ClientError> {
        let body = wire::MsgAck {
            msgids: msgids.to_vec(),
        };
        let frame = self.request_frame(Cmd::MsgAck, &body).await?;
        let resp: wire::MsgAckResponse = decode(&frame)?;
        Ok(resp.acked)
    }

    /// Sends a KEEPALIVE now and returns the server's clock (unix ms). The driver also sends
    /// them automatically.
    ///
    /// # Errors
    /// [`ClientError::Timeout`], [`ClientError::Closed`].
    pub async fn keepalive(&self) -> Result<u64, ClientError> {
        let body = wire::KeepaliveRequest {
            client_time_ms: longlink_proto::unix_ms(),
        };
        let frame = self.request_frame(Cmd::Keepalive, &body).await?;
        let resp: wire::KeepaliveResponse = decode(&frame)?;
        Ok(resp.server_time_ms)
    }

    /// Logs out (LOGOUT, after which the server closes the connection) and closes the
    /// connection for every clone of this client, whether or not the LOGOUT succeeded;
    /// [`Incoming`] ends with `Event::Closed { reason: "logged out" }` on success.
    ///
    /// # Errors
    /// The LOGOUT request's error, if any (the connection is closed anyway).
    pub async fn logout(self) -> Result<(), ClientError> {
        let result = self
            .request_frame(Cmd::Logout, &wire::LogoutRequest {})
            .await
            .and_then(|frame| decode::<wire::LogoutResponse>(&frame).map(|_| ()));
        self.shutdown().await;
        result
    }

    /// Drops the connection without LOGOUT (the server may then hold the session for a fast
    /// reconnect). Affects every clone of this client; pending calls fail with
    /// [`ClientError::Closed`]; [`Incoming`] ends with `Event::Closed { reason: "closed by
    /// client" }`.
    pub async fn close(self) {
        self.shutdown().await;
    }

    /// Stops the driver and waits (bounded) until it has let go of the socket.
    async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        if timeout(self.inner.request_timeout, self.inner.cmd_tx.closed())
            .await
            .is_err()
        {
            tracing::warn!("the longlink driver did not stop in time");
        }
    }

    async fn request_frame(
        &self,
        cmd: Cmd,
        body: &impl prost::Message,
    ) -> Result<Frame, ClientError> {
        let frame = Frame::request(cmd, 0, 0, body);
        match self.request(frame, Expect::Frame).await? {
            Reply::Frame(frame) => Ok(frame),
            Reply::OfflinePage(_) => Err(ClientError::Protocol(
                "the driver answered with a decoded page".to_owned(),
            )),
        }
    }

    /// Queues `frame` for the driver and waits for its answer, all within request_timeout.
    async fn request(&self, frame: Frame, expect: Expect) -> Result<Reply, ClientError> {
        let deadline = Instant::now() + self.inner.request_timeout;
        let (reply, answer) = oneshot::channel();
        let cmd = Command::Request {
            frame,
            expect,
            deadline,
            reply,
        };
        match timeout_at(deadline, self.inner.cmd_tx.send(cmd)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(ClientError::Closed),
            Err(_) => return Err(ClientError::Timeout),
        }
        match timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout),
        }
    }
}

/// The stream of [`Event`]s of one connection: messages (de-duplicated), kicks, ERROR pushes,
/// and finally [`Event::Closed`], after which it ends.
///
/// Bounded by [`ClientConfig::incoming_capacity`]: while it is full the driver stops reading
/// the socket, so responses to requests wait too. Drain it in its own task.
/// Dropping it is allowed: pushed messages are then no longer acknowledged, so the server
/// keeps them for an offline pull.
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<Event>,
}

impl Incoming {
    /// The next event; `None` once the connection has ended and [`Event::Closed`] was taken.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is queued right now.
    pub fn try_next_event(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

impl Stream for Incoming {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

/// The LOGIN handshake on a fresh connection.
async fn login(
    transport: &mut Transport,
    config: &ClientConfig,
) -> Result<wire::LoginResponse, ClientError> {
    let body = wire::LoginRequest {
        token: config.token.clone(),
        appcode: config.appcode,
        device_id: config.device_id.clone(),
        resume_capable: false,
        compression: Vec::new(),
        client_version: CLIENT_VERSION.to_owned(),
    };
    let frame = Frame::request(Cmd::Login, LOGIN_SEQ, random_log_id(), &body);
    transport
        .send(frame)
        .await
        .map_err(ClientError::from_codec)?;
    loop {
        let frame = match transport.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(err)) => return Err(ClientError::from_codec(err)),
            None => return Err(ClientError::Closed),
        };
        let cmd = frame.cmd();
        match frame.header.frame_type {
            FrameType::Response if frame.header.seq_id == LOGIN_SEQ => {
                return match cmd {
                    Some(Cmd::Login) => decode(&frame),
                    Some(Cmd::Error) => Err(ClientError::from_wire(decode(&frame)?)),
                    _ => Err(ClientError::Protocol(format!(
                        "LOGIN answered with cmd {}",
                        frame.header.cmd
                    ))),
                };
            }
            // A connection-level ERROR (e.g. LOGIN_TIMEOUT) may come as a push.
            FrameType::Push if cmd == Some(Cmd::Error) => {
                return Err(ClientError::from_wire(decode(&frame)?));
            }
            _ => tracing::debug!(
                cmd = frame.header.cmd,
                "ignoring a frame received before the LOGIN answer"
            ),
        }
    }
}

fn decode<M: prost::Message + Default>(frame: &Frame) -> Result<M, ClientError> {
    frame
        .decode_body::<M>()
        .map_err(|err| ClientError::Protocol(err.to_string()))
}

/// A fresh random client message id: 16 hex digits.
fn new_client_msg_id() -> String {
    let id: u64 = rand::random();
    format!("{id:016x}")
}
