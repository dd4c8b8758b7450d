//! [`Client`] (the cheap, cloneable handle apps call) and [`Incoming`] (the stream of events).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use longlink_proto::{Cmd, ContentType, DEFAULT_PAGE_SIZE, Frame, wire};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::driver::{Command, Driver, Expect, Reply};
use crate::handshake::random_log_id;
use crate::handshake::{Dial, connect_and_login, decode};
use crate::shared::Shared;
use crate::{
    ClientConfig, ClientError, Content, Conversation, Event, HistoryDirection, Message,
    NotificationAck, PullPage, PushTokenInfo, ReconnectPolicy, SendReceipt, UserRef,
};

/// Capacity of the queue of commands from [`Client`] handles to the driver task.
const COMMAND_CAPACITY: usize = 256;

/// The `client_version` sent at LOGIN.
pub const CLIENT_VERSION: &str = concat!("longlink-sdk/", env!("CARGO_PKG_VERSION"));

/// A logged-in client of a longlink gate.
///
/// Cheap to clone: every clone talks to the same driver task, which owns the socket. When
/// the connection drops, the driver reconnects (see [`ClientConfig::reconnect`]) and calls
/// wait for it, each within its own deadline ([`ClientConfig::request_timeout`] per request,
/// [`ClientConfig::send_deadline`] for sends). The client ends for good on
/// [`Client::logout`], [`Client::close`], a KICK for REPLACED / LOGGED_OUT / BLOCKED, a
/// re-login refused for its credentials, a protocol error, a dropped connection when
/// reconnecting is off, or when every `Client` clone has been dropped; calls then fail with
/// [`ClientError::Closed`].
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    cmd_tx: mpsc::Sender<Command>,
    shutdown: CancellationToken,
    shared: Arc<Shared>,
    request_timeout: Duration,
    send_deadline: Duration,
    retry: ReconnectPolicy,
    uid: String,
    login: wire::LoginResponse,
    keepalive: Option<Duration>,
    /// The device class sent with push tokens (platform, vendor, app version).
    device_class: (String, String, String),
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("session_id", &self.session_id())
            .field("uid", &self.inner.uid)
            .field("connected", &self.is_connected())
            .field("closed", &self.inner.cmd_tx.is_closed())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects over TCP (at most [`ClientConfig::connect_timeout`]), logs in (the answer
    /// within [`ClientConfig::request_timeout`]) and starts the driver task, which first
    /// catches up with the offline messages (they arrive on [`Incoming`]).
    ///
    /// Returns the client and the stream of incoming [`Event`]s; drain that stream (the
    /// driver stops reading the socket while it is full). This first connection is not
    /// retried: an error here is the application's to handle.
    ///
    /// # Errors
    /// [`ClientError::Connect`] when the TCP connection fails, [`ClientError::Server`] when
    /// the server refuses the login (e.g. `BAD_TOKEN`), [`ClientError::Timeout`],
    /// [`ClientError::Closed`], [`ClientError::Io`] or [`ClientError::Protocol`] otherwise.
    pub async fn connect(config: ClientConfig) -> Result<(Client, Incoming), ClientError> {
        let (transport, opened) =
            connect_and_login(Dial::new(&config, config.token.clone())).await?;
        let login = opened.login.clone();
        tracing::debug!(
            session_id = login.session_id,
            uid = %login.uid,
            keepalive_secs = login.keepalive_interval_secs,
            "logged in"
        );
        let keepalive = config.effective_keepalive(login.keepalive_interval_secs);
        let me = UserRef::new(config.appcode, login.uid.clone());
        let shared = Arc::new(Shared::new(
            me,
            config.auto_ack,
            config.token.clone(),
            login.session_id,
        ));
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (event_tx, event_rx) = mpsc::channel(config.incoming_capacity.max(1));
        let shutdown = CancellationToken::new();
        let client = Client {
            inner: Arc::new(Inner {
                cmd_tx,
                shutdown: shutdown.clone(),
                shared: shared.clone(),
                request_timeout: config.request_timeout,
                send_deadline: config.send_deadline,
                retry: config.reconnect.clone().unwrap_or_default(),
                uid: login.uid.clone(),
                login: login.clone(),
                keepalive,
                device_class: (
                    config.platform.clone(),
                    config.vendor.clone(),
                    config.app_version.clone(),
                ),
            }),
        };
        let driver = Driver::new(
            cmd_rx,
            event_tx,
            shutdown,
            shared.clone(),
            config,
            login.uid.clone(),
        );
        tokio::spawn(driver.run(transport, opened));
        Ok((
            client,
            Incoming {
                rx: event_rx,
                shared,
            },
        ))
    }

    /// The id of the current session (it changes at every reconnect; see
    /// [`Event::Reconnected`]).
    pub fn session_id(&self) -> u64 {
        self.inner.shared.session_id()
    }

    /// The uid this client is logged in as (from the token, as the server read it).
    pub fn uid(&self) -> &str {
        &self.inner.uid
    }

    /// The first login's `LoginResponse` (server time, resume token, announced keepalive
    /// interval). [`Client::session_id`] follows reconnects.
    pub fn login_response(&self) -> &wire::LoginResponse {
        &self.inner.login
    }

    /// The automatic keepalive period of the first connection (`None`: disabled).
    pub fn keepalive_interval(&self) -> Option<Duration> {
        self.inner.keepalive
    }

    /// Whether the client has ended for good (every call would fail with
    /// [`ClientError::Closed`]).
    pub fn is_closed(&self) -> bool {
        self.inner.cmd_tx.is_closed()
    }

    /// Whether a connection is logged in right now (false while reconnecting and once closed).
    pub fn is_connected(&self) -> bool {
        self.inner.shared.is_connected() && !self.is_closed()
    }

    /// Replaces the token used by the next (re)login, e.g. before the current one expires.
    /// The current session is not affected. A token for another uid ends the client at the
    /// next reconnect ("login refused").
    pub fn set_token(&self, token: impl Into<String>) {
        self.inner.shared.set_token(token.into());
    }

    /// Sends a message to another user with a fresh random client_msg_id (16 hex digits);
    /// see [`Client::c2c_with_id`] for the retries. The receipt carries the id.
    ///
    /// # Errors
    /// See [`Client::c2c_with_id`].
    pub async fn c2c(&self, to: UserRef, content: Content) -> Result<SendReceipt, ClientError> {
        let client_msg_id = new_client_msg_id();
        self.c2c_with_id(to, &client_msg_id, content).await
    }

    /// Sends a message to another user with the caller's client_msg_id and returns once the
    /// message is durable.
    ///
    /// Until it has the answer, the client retries with the same client_msg_id (so the server
    /// stores the message once): after an attempt timed out
    /// ([`ClientConfig::request_timeout`]), after the connection dropped (the request goes
    /// out again on the next connection), or after a transient refusal (RATE_LIMITED,
    /// STORE_UNAVAILABLE, BUS_UNAVAILABLE, OVERLOADED, SHUTTING_DOWN), with jittered backoff,
    /// for at most [`ClientConfig::send_deadline`]. An empty client_msg_id and typing
    /// indicators are sent once (a repeat could not be recognized). A later call with the
    /// same id is idempotent too (the receipt says `duplicate`).
    ///
    /// # Errors
    /// [`ClientError::Server`] at once for a refusal retrying cannot fix (e.g.
    /// `INVALID_ARGUMENT`, `UNKNOWN_RECEIVER_APPCODE`, `INTERNAL`);
    /// [`ClientError::DeadlineExceeded`] when the send deadline passed (the message may or
    /// may not be stored: retry later with the same id); [`ClientError::Closed`] when the
    /// client has ended; [`ClientError::Timeout`] / [`ClientError::Disconnected`] for a
    /// single-attempt send.
    pub async fn c2c_with_id(
        &self,
        to: UserRef,
        client_msg_id: &str,
        content: Content,
    ) -> Result<SendReceipt, ClientError> {
        let (content_type, msgtype, content) = content.into_parts();
        let retry = !client_msg_id.is_empty() && content_type != ContentType::Typing as i32;
        let body = wire::C2cRequest {
            to: Some(to.into()),
            client_msg_id: client_msg_id.to_owned(),
            content_type,
            msgtype,
            content,
        };
        let frame = self.send_reliably(Cmd::C2c, &body, retry).await?;
        let resp: wire::C2cResponse = decode(&frame)?;
        Ok(SendReceipt {
            msgid: resp.msgid,
            senddate_ms: resp.senddate_ms,
            duplicate: resp.duplicate,
            client_msg_id: client_msg_id.to_owned(),
        })
    }

    /// Sends a message upstream to the business server of (this appcode, `msgtype`); returns
    /// the bus topic once the bus holds it. Retried like [`Client::c2c_with_id`] (same
    /// client_msg_id, which the bus carries for dedup downstream; an empty one is sent once).
    ///
    /// # Errors
    /// [`ClientError::Server`] for a refusal retrying cannot fix,
    /// [`ClientError::DeadlineExceeded`], [`ClientError::Closed`] (see
    /// [`Client::c2c_with_id`]).
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
        let frame = self
            .send_reliably(Cmd::C2s, &body, !client_msg_id.is_empty())
            .await?;
        let resp: wire::C2sResponse = decode(&frame)?;
        Ok(resp.topic)
    }

    /// Pulls one page of offline messages (msgid > `cursor`, ascending; `page_size` 0 = the
    /// server's default of 50).
    ///
    /// The client catches up by itself after every login (the messages arrive on
    /// [`Incoming`], in order, each once), so an application that drains [`Incoming`] does not
    /// need this. Returns every message of the page, even one already delivered (the
    /// application asked for the page). The page's msgids are recorded as taken by the
    /// application, so a later push of the same msgid is dropped and a copy still queued on
    /// [`Incoming`] is skipped, and with [`ClientConfig::auto_ack`] they are acknowledged
    /// (MSG_ACK type 3).
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

    /// This user's conversations, the most recent first: `before_msgid` 0 = from the newest,
    /// else those whose last message is older (page on with the last entry's last msgid);
    /// `limit` 0 = 50. Returns the page and whether older conversations follow.
    ///
    /// # Errors
    /// [`ClientError::Server`], [`ClientError::Timeout`], [`ClientError::Closed`].
    pub async fn conversations(
        &self,
        before_msgid: u64,
        limit: u32,
    ) -> Result<(Vec<Conversation>, bool), ClientError> {
        let body = wire::ConversationsRequest {
            limit,
            before_msgid,
        };
        let frame = self.request_frame(Cmd::Conversations, &body).await?;
        let resp: wire::ConversationsResponse = decode(&frame)?;
        Ok((
            resp.conversations
                .into_iter()
                .map(Conversation::from)
                .collect(),
            resp.more,
        ))
    }

    /// Marks the conversation with `with` read up to `msgid` (a message of it) for every
    /// device of this user; the peer gets a read receipt. Returns the read mark now and the
    /// unread count after it.
    ///
    /// # Errors
    /// [`ClientError::Server`] (`NOT_FOUND` when `msgid` is not in that conversation),
    /// [`ClientError::Timeout`], [`ClientError::Closed`].
    pub async fn mark_read(&self, with: UserRef, msgid: u64) -> Result<(u64, u32), ClientError> {
        let body = wire::MarkReadRequest {
            with: Some(with.into()),
            msgid,
        };
        let frame = self.request_frame(Cmd::MarkRead, &body).await?;
        let resp: wire::MarkReadResponse = decode(&frame)?;
        Ok((resp.read_upto, resp.unread))
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

    /// Registers this device's offline push token for `provider` ("apns", "fcm" or a vendor
    /// channel the server configures), replacing the device's previous token of that provider,
    /// with the device class of [`ClientConfig::platform`], [`ClientConfig::vendor`] and
    /// [`ClientConfig::app_version`]. Call it at every app start and whenever the provider
    /// hands out a new token; a device may hold tokens of several providers, and the server
    /// picks the one that delivers best for it. Returns the device's tokens now.
    ///
    /// The token belongs to this session's (appcode, uid, device_id); [`Client::logout`]
    /// removes it (a [`Client::close`] does not: the device still wants notifications).
    ///
    /// # Errors
    /// [`ClientError::Server`] with `INVALID_ARGUMENT` for a provider the server does not
    /// configure or an empty or too long field, `STORE_UNAVAILABLE` when the server's
    /// registry failed (retry later); [`ClientError::Timeout`], [`ClientError::Closed`].
    pub async fn register_push_token(
        &self,
        provider: &str,
        token: &str,
    ) -> Result<Vec<PushTokenInfo>, ClientError> {
        let (platform, vendor, app_version) = self.inner.device_class.clone();
        self.push_token_request(wire::PushTokenRequest {
            op: wire::PushTokenOp::Register as i32,
            provider: provider.to_owned(),
            token: token.to_owned(),
            platform,
            vendor,
            app_version,
        })
        .await
    }

    /// Removes this device's push token of `provider`, or every push token of this device
    /// (`None`): the device then gets no offline notifications. Returns the device's tokens
    /// left. Removing a token the device does not have is not an error.
    ///
    /// # Errors
    /// [`ClientError::Server`] (`STORE_UNAVAILABLE`), [`ClientError::Timeout`],
    /// [`ClientError::Closed`].
    pub async fn remove_push_token(
        &self,
        provider: Option<&str>,
    ) -> Result<Vec<PushTokenInfo>, ClientError> {
        self.push_token_request(wire::PushTokenRequest {
            op: wire::PushTokenOp::Remove as i32,
            provider: provider.unwrap_or_default().to_owned(),
            ..Default::default()
        })
        .await
    }

    /// This device's push tokens, as the server holds them.
    ///
    /// # Errors
    /// [`ClientError::Server`] (`STORE_UNAVAILABLE`), [`ClientError::Timeout`],
    /// [`ClientError::Closed`].
    pub async fn push_tokens(&self) -> Result<Vec<PushTokenInfo>, ClientError> {
        self.push_token_request(wire::PushTokenRequest {
            op: wire::PushTokenOp::List as i32,
            ..Default::default()
        })
        .await
    }

    async fn push_token_request(
        &self,
        body: wire::PushTokenRequest,
    ) -> Result<Vec<PushTokenInfo>, ClientError> {
        let frame = self.request_frame(Cmd::PushToken, &body).await?;
        let resp: wire::PushTokenResponse = decode(&frame)?;
        Ok(resp.tokens.into_iter().map(PushTokenInfo::from).collect())
    }

    /// Reports that the offline push notification `id` reached this device: call it from the
    /// app's notification handler with the payload's `ll_nid` (a decimal string), and for
    /// notifications found when the app starts. The server learns from these receipts which
    /// push provider really delivers to this kind of device.
    ///
    /// When connected, it sends one NOTIFICATION_ACK with this id and every receipt still
    /// pending, and answers [`NotificationAck::Sent`]. Otherwise — not connected, or the
    /// attempt failed for a reason that may pass (timeout, dropped link, a transient
    /// refusal) — the receipt waits in the client and goes out in one NOTIFICATION_ACK right
    /// after the next successful LOGIN or RESUME (or with the next call): the answer is
    /// [`NotificationAck::Pending`]. At most
    /// [`longlink_proto::MAX_NOTIFICATION_ACK_IDS`] (256) receipts wait; beyond that the
    /// oldest are dropped. Id 0 is never a notification's and is ignored. Repeating an id
    /// is harmless (the server counts each receipt once).
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the client has ended (the receipt is lost);
    /// [`ClientError::Server`] for a refusal retrying cannot fix (the receipts sent are
    /// dropped); [`ClientError::Protocol`] for an answer that does not decode.
    pub async fn ack_notification(&self, id: u64) -> Result<NotificationAck, ClientError> {
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        let shared = &self.inner.shared;
        shared.queue_notification_acks(&[id]);
        if !shared.is_connected() {
            return Ok(NotificationAck::Pending);
        }
        let ids = shared.take_notification_acks();
        if ids.is_empty() {
            // Id 0, or a concurrent call took this receipt into its own request.
            return Ok(NotificationAck::Pending);
        }
        let body = wire::NotificationAck { ids };
        let answer = self
            .request_frame(Cmd::NotificationAck, &body)
            .await
            .and_then(|frame| decode::<wire::NotificationAckResponse>(&frame));
        match answer {
            Ok(resp) => Ok(NotificationAck::Sent {
                matched: resp.matched,
            }),
            Err(ClientError::Closed) => Err(ClientError::Closed),
            Err(err) if err.is_retryable() => {
                tracing::debug!(%err, "notification receipts kept for later");
                shared.queue_notification_acks(&body.ids);
                Ok(NotificationAck::Pending)
            }
            Err(err) => Err(err),
        }
    }

    /// How many notification receipts wait to be sent ([`Client::ack_notification`]).
    pub fn pending_notification_acks(&self) -> usize {
        self.inner.shared.pending_notification_acks()
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
    /// A RATE_LIMITED answer (the gate's per-connection frame rate) is retried after its
    /// `retry_after_ms` while that fits the deadline: the request was not handled at all, and
    /// these requests (pulls, history, ack, keepalive, logout) are idempotent.
    async fn request(&self, frame: Frame, expect: Expect) -> Result<Reply, ClientError> {
        let deadline = Instant::now() + self.inner.request_timeout;
        loop {
            let err = match self
                .request_until(frame.clone(), expect, deadline, true)
                .await
            {
                Err(err) if err.server_code() == Some(longlink_proto::ErrorCode::RateLimited) => {
                    err
                }
                answer => return answer,
            };
            match err.retry_after() {
                Some(wait) if Instant::now() + wait < deadline => tokio::time::sleep(wait).await,
                _ => return Err(err),
            }
        }
    }

    /// Queues `frame` for the driver and waits for its answer until `deadline` (also while
    /// the client reconnects). `resend`: the driver may send it again on the next connection
    /// if the link drops before the answer.
    async fn request_until(
        &self,
        frame: Frame,
        expect: Expect,
        deadline: Instant,
        resend: bool,
    ) -> Result<Reply, ClientError> {
        let (reply, answer) = oneshot::channel();
        let cmd = Command::Request {
            frame,
            expect,
            deadline,
            resend,
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

    /// Sends a C2C / C2S request until it is answered: each attempt within
    /// [`ClientConfig::request_timeout`], the same body (so the same client_msg_id) every
    /// time, a jittered backoff between attempts, all within [`ClientConfig::send_deadline`].
    /// `retry` false: one attempt (an empty client_msg_id, or ephemeral content).
    async fn send_reliably(
        &self,
        cmd: Cmd,
        body: &impl prost::Message,
        retry: bool,
    ) -> Result<Frame, ClientError> {
        // One trace id for every attempt of this message.
        let frame = Frame::request(cmd, 0, random_log_id(), body);
        let deadline = Instant::now() + self.inner.send_deadline;
        let mut attempts: u32 = 0;
        loop {
            attempts = attempts.saturating_add(1);
            let attempt_deadline = (Instant::now() + self.inner.request_timeout).min(deadline);
            let err = match self
                .request_until(frame.clone(), Expect::Frame, attempt_deadline, retry)
                .await
            {
                Ok(Reply::Frame(frame)) => return Ok(frame),
                Ok(Reply::OfflinePage(_)) => {
                    return Err(ClientError::Protocol(
                        "the driver answered a send with a decoded page".to_owned(),
                    ));
                }
                Err(err) => err,
            };
            if !retry || !err.send_retryable() {
                return Err(err);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::DeadlineExceeded {
                    attempts,
                    last: Box::new(err),
                });
            }
            // The server's own hint (RATE_LIMITED's retry_after_ms) wins over our backoff.
            let pause = self
                .inner
                .retry
                .backoff(attempts - 1)
                .max(err.retry_after().unwrap_or_default())
                .min(deadline - now);
            tracing::debug!(cmd = ?cmd, attempts, %err, ?pause, "send failed; retrying with the same client_msg_id");
            tokio::time::sleep(pause).await;
            if Instant::now() >= deadline {
                return Err(ClientError::DeadlineExceeded {
                    attempts,
                    last: Box::new(err),
                });
            }
        }
    }
}

/// The stream of [`Event`]s of one client, across reconnects: messages (each msgid once, in
/// msgid order per conversation), kicks, ERROR pushes, [`Event::Disconnected`] /
/// [`Event::Reconnected`], and finally [`Event::Closed`], after which it ends.
///
/// With [`ClientConfig::auto_ack`], a message is acknowledged when it is taken from here
/// (not before: a message still queued when the application dies is delivered again). A
/// message the application already got from [`Client::pull_offline`] is skipped.
///
/// Bounded by [`ClientConfig::incoming_capacity`]: while it is full (and the driver's own
/// queue of the same size too) the driver stops reading the socket, so responses to
/// requests wait too. Drain it in its own task. Dropping it is allowed: messages are then
/// no longer delivered nor acknowledged, so the server keeps them for an offline pull.
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<Event>,
    shared: Arc<Shared>,
}

impl Incoming {
    /// The next event; `None` once the client has ended and [`Event::Closed`] was taken.
    pub async fn next_event(&mut self) -> Option<Event> {
        loop {
            let event = self.rx.recv().await?;
            if self.hand_over(&event) {
                return Some(event);
            }
        }
    }

    /// The next event if one is queued right now.
    pub fn try_next_event(&mut self) -> Option<Event> {
        loop {
            let event = self.rx.try_recv().ok()?;
            if self.hand_over(&event) {
                return Some(event);
            }
        }
    }

    /// Whether `event` goes to the application (records and acknowledges messages).
    fn hand_over(&self, event: &Event) -> bool {
        match event {
            Event::Message(message) => self.shared.hand_over(message),
            _ => true,
        }
    }
}

impl Stream for Incoming {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        loop {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(event)) => {
                    if self.hand_over(&event) {
                        return Poll::Ready(Some(event));
                    }
                }
                other => return other,
            }
        }
    }
}

/// A fresh random client message id: 16 hex digits.
fn new_client_msg_id() -> String {
    let id: u64 = rand::random();
    format!("{id:016x}")
}
