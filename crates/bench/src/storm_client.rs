//! The client side of the reconnect storm ([`crate::reconnect`]): one connection with a
//! frame buffer that lives as long as the connection (after a LOGIN response the server's
//! redelivery pushes follow at once, so bytes read past a response must not be dropped, as
//! [`crate::client`]'s one-shot reads may), and the requests of a reconnect: RESUME, LOGIN
//! with RATE_LIMITED retries, OFFLINE_PULL pages, MSG_ACK.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use longlink_proto::{Cmd, ErrorCode, Frame, FrameCodec, FrameType, wire};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use crate::client::{self, DEVICE_ID, Minter, SourcePorts};

/// Largest frame body accepted from the server: pull pages are not held to the 64 KiB request
/// limit (docs/protocol.md §5.11, "Response size").
const MAX_SERVER_BODY: u32 = 16 << 20;
/// Read buffer kept free before each read.
const READ_RESERVE: usize = 4096;
/// A buffer grown above this by a large page is given back once empty.
const BUFFER_KEEP: usize = 64 << 10;
/// Page size of OFFLINE_PULL (the protocol's largest).
const PULL_PAGE: u32 = longlink_proto::MAX_PAGE_SIZE;
/// Most pages one catch-up pulls (a bound on a server that keeps saying `more`).
const MAX_PULL_PAGES: u32 = 10_000;
/// Most msgids per MSG_ACK (the protocol's limit).
const ACK_BATCH: usize = 1000;
/// The longest `retry_after_ms` honoured as given; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Most connections one client opens in one (re)connect: RATE_LIMITED answers and the like.
const MAX_ATTEMPTS: u32 = 100;

/// Why a request failed.
#[derive(Debug)]
pub(crate) enum Fail {
    /// An ERROR frame: its code, `retry_after_ms` and a one-line description.
    Server {
        code: Option<ErrorCode>,
        retry_after_ms: u32,
        text: String,
    },
    /// The link failed, closed, or a step took too long.
    Link(String),
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Server { text, .. } | Fail::Link(text) => f.write_str(text),
        }
    }
}

impl Fail {
    fn is(&self, wanted: ErrorCode) -> bool {
        matches!(self, Fail::Server { code: Some(code), .. } if *code == wanted)
    }
}

/// How a message reached the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// In the RESUME response.
    Resume,
    /// A MSG push (the redelivery after LOGIN, or a later push).
    Push,
    /// An OFFLINE_PULL page.
    Pull,
}

/// What one client received, by way, deduplicated by msgid as a real client does.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    seen: HashSet<u64>,
    /// msgids taken in but not acknowledged yet.
    unacked: Vec<u64>,
    pub(crate) carried: u64,
    pub(crate) pushed: u64,
    pub(crate) pulled: u64,
    /// Copies of a msgid already seen (any way).
    pub(crate) duplicates: u64,
    pub(crate) acked: u64,
}

impl Inbox {
    /// Takes one message in.
    pub(crate) fn take(&mut self, msgid: u64, via: Via) {
        match via {
            Via::Resume => self.carried += 1,
            Via::Push => self.pushed += 1,
            Via::Pull => self.pulled += 1,
        }
        // msgid 0 is ephemeral (TYPING): nothing to deduplicate or acknowledge.
        if msgid == 0 {
            return;
        }
        if self.seen.insert(msgid) {
            self.unacked.push(msgid);
        } else {
            self.duplicates += 1;
        }
    }

    /// Distinct messages received.
    pub(crate) fn distinct(&self) -> u64 {
        self.seen.len() as u64
    }

    /// The newest msgid received (0 for none), RESUME's `last_msgid`.
    fn last(&self) -> u64 {
        self.seen.iter().copied().max().unwrap_or(0)
    }
}

/// What a client keeps of its session between links.
#[derive(Debug, Clone, Default)]
pub(crate) struct Identity {
    pub(crate) uid: String,
    pub(crate) resume_token: String,
    pub(crate) epoch: u64,
    pub(crate) keepalive: Duration,
}

/// Where and how the clients connect.
pub(crate) struct Dial {
    pub(crate) server: SocketAddr,
    pub(crate) source: Option<SourcePorts>,
    pub(crate) minter: Minter,
    /// Each connect, request and answer must finish within this.
    pub(crate) step_timeout: Duration,
    /// Whether LOGINs set `resume_capable` (and reconnects RESUME).
    pub(crate) resume: bool,
}

/// One connection, its frame parser and its unparsed bytes.
pub(crate) struct Conn {
    stream: TcpStream,
    codec: FrameCodec,
    buf: BytesMut,
    seq: u32,
}

impl Conn {
    /// Connects (within the dial's step timeout).
    pub(crate) async fn open(dial: &Dial) -> Result<Conn, Fail> {
        let connect = client::connect(dial.server, dial.source.as_ref());
        let stream = tokio::time::timeout(dial.step_timeout, connect)
            .await
            .map_err(|_| Fail::Link("connect: timed out".to_owned()))?
            .map_err(|err| Fail::Link(format!("connect: {err}")))?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            codec: FrameCodec::new(MAX_SERVER_BODY),
            buf: BytesMut::new(),
            seq: 0,
        })
    }

    /// Closes with RST: no TIME_WAIT is left on the load generator's ports, and to the server
    /// the link simply failed (what the storm is about).
    pub(crate) fn reset(self) {
        let _ = self.stream.set_zero_linger();
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    async fn send(&mut self, frame: &Frame, timeout: Duration) -> Result<(), Fail> {
        match tokio::time::timeout(timeout, self.stream.write_all(&frame.to_bytes())).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(Fail::Link(format!("send: {err}"))),
            Err(_) => Err(Fail::Link("send: timed out".to_owned())),
        }
    }

    /// Reads more bytes, by `until`; `Ok(false)` when the server closed the connection.
    async fn fill(&mut self, until: Instant) -> Result<bool, Fail> {
        if self.buf.capacity() - self.buf.len() < READ_RESERVE / 4 {
            self.buf.reserve(READ_RESERVE);
        }
        match tokio::time::timeout_at(until, self.stream.read_buf(&mut self.buf)).await {
            Ok(Ok(0)) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(err)) => Err(Fail::Link(format!("read: {err}"))),
            Err(_) => Err(Fail::Link("no answer in time".to_owned())),
        }
    }

    /// The next whole frame already read, if any.
    fn parsed(&mut self) -> Result<Option<Frame>, Fail> {
        let frame = self
            .codec
            .decode(&mut self.buf)
            .map_err(|err| Fail::Link(format!("bad frame: {err}")))?;
        if self.buf.is_empty() && self.buf.capacity() > BUFFER_KEEP {
            self.buf = BytesMut::new();
        }
        Ok(frame)
    }

    /// Reads until the answer to request `seq` of `cmd` (or an ERROR) arrives, by `until`;
    /// MSG pushes on the way go into `inbox`.
    async fn answer(
        &mut self,
        cmd: Cmd,
        seq: u32,
        inbox: &mut Inbox,
        until: Instant,
    ) -> Result<Frame, Fail> {
        loop {
            while let Some(frame) = self.parsed()? {
                match (frame.cmd(), frame.header.frame_type) {
                    (Some(Cmd::Msg), FrameType::Push) => {
                        if let Ok(msg) = frame.decode_body::<wire::Msg>() {
                            inbox.take(msg.msgid, Via::Push);
                        }
                    }
                    // An ERROR that answers this request, or one pushed before a close
                    // (IDLE_TIMEOUT and the like).
                    (Some(Cmd::Error), FrameType::Push) => return Err(server_error(&frame)),
                    (Some(Cmd::Error), _) if frame.header.seq_id == seq => {
                        return Err(server_error(&frame));
                    }
                    (Some(got), FrameType::Response)
                        if got == cmd && frame.header.seq_id == seq =>
                    {
                        return Ok(frame);
                    }
                    // KEEPALIVE answers, KICKs (the close follows), late errors of type-3 acks.
                    _ => {}
                }
            }
            if !self.fill(until).await? {
                return Err(Fail::Link(format!(
                    "closed by the server before the {cmd} response"
                )));
            }
        }
    }

    /// Sends LOGIN for `identity` (a reconnect carries its epoch as `prior_epoch`) and waits
    /// for the response; the identity takes the new epoch and resume token.
    async fn login(
        &mut self,
        dial: &Dial,
        identity: &mut Identity,
        inbox: &mut Inbox,
        until: Instant,
    ) -> Result<(), Fail> {
        let token = dial.minter.mint(&identity.uid).map_err(Fail::Link)?;
        let request = wire::LoginRequest {
            token,
            appcode: dial.minter.appcode(),
            device_id: DEVICE_ID.to_owned(),
            resume_capable: dial.resume,
            client_version: concat!("longlink-bench/", env!("CARGO_PKG_VERSION")).to_owned(),
            prior_epoch: identity.epoch,
            ..Default::default()
        };
        let seq = self.next_seq();
        self.send(
            &Frame::request(Cmd::Login, seq, 0, &request),
            dial.step_timeout,
        )
        .await?;
        let frame = self.answer(Cmd::Login, seq, inbox, until).await?;
        let response: wire::LoginResponse = frame
            .decode_body()
            .map_err(|err| Fail::Link(format!("bad LOGIN response: {err}")))?;
        identity.epoch = response.epoch;
        identity.resume_token = response.resume_token;
        identity.keepalive =
            Duration::from_secs(u64::from(response.keepalive_interval_secs.max(1)));
        Ok(())
    }

    /// Sends RESUME and waits for the response; its messages go into `inbox`. Returns
    /// (`gap_free`, the last msgid it carried).
    async fn resume(
        &mut self,
        dial: &Dial,
        identity: &mut Identity,
        inbox: &mut Inbox,
        until: Instant,
    ) -> Result<(bool, u64), Fail> {
        let request = wire::ResumeRequest {
            resume_token: identity.resume_token.clone(),
            last_msgid: inbox.last(),
            acked_msgids: Vec::new(),
            compression: Vec::new(),
        };
        let seq = self.next_seq();
        self.send(
            &Frame::request(Cmd::Resume, seq, 0, &request),
            dial.step_timeout,
        )
        .await?;
        let frame = self.answer(Cmd::Resume, seq, inbox, until).await?;
        let response: wire::ResumeResponse = frame
            .decode_body()
            .map_err(|err| Fail::Link(format!("bad RESUME response: {err}")))?;
        let last = response.messages.last().map_or(0, |m| m.msgid);
        for msg in &response.messages {
            inbox.take(msg.msgid, Via::Resume);
        }
        identity.resume_token = response.resume_token;
        identity.keepalive =
            Duration::from_secs(u64::from(response.keepalive_interval_secs.max(1)));
        Ok((response.gap_free, last))
    }

    /// OFFLINE_PULL from `cursor` until `more` is false; returns the requests made.
    async fn pull(
        &mut self,
        dial: &Dial,
        mut cursor: u64,
        inbox: &mut Inbox,
        until: Instant,
    ) -> Result<u32, Fail> {
        for page in 1..=MAX_PULL_PAGES {
            let (response, _) = self
                .pull_page(dial, cursor, PULL_PAGE, inbox, until)
                .await?;
            for msg in &response.messages {
                inbox.take(msg.msgid, Via::Pull);
            }
            // A cursor that does not move would loop for ever.
            if !response.more || response.next_cursor <= cursor {
                return Ok(page);
            }
            cursor = response.next_cursor;
        }
        Ok(MAX_PULL_PAGES)
    }

    /// One OFFLINE_PULL request from `cursor` (exclusive) for at most `page_size` messages,
    /// answered by `until`: the page and its body's size on the wire. The page's messages are
    /// left to the caller; MSG pushes on the way go into `inbox`.
    pub(crate) async fn pull_page(
        &mut self,
        dial: &Dial,
        cursor: u64,
        page_size: u32,
        inbox: &mut Inbox,
        until: Instant,
    ) -> Result<(wire::OfflinePullResponse, usize), Fail> {
        let seq = self.next_seq();
        let request = wire::OfflinePullRequest { cursor, page_size };
        self.send(
            &Frame::request(Cmd::OfflinePull, seq, 0, &request),
            dial.step_timeout,
        )
        .await?;
        let frame = self.answer(Cmd::OfflinePull, seq, inbox, until).await?;
        let response = frame
            .decode_body()
            .map_err(|err| Fail::Link(format!("bad OFFLINE_PULL response: {err}")))?;
        Ok((response, frame.body.len()))
    }

    /// Acknowledges what `inbox` took in (MSG_ACK type 3, as the SDK sends them: no answer).
    async fn ack(&mut self, inbox: &mut Inbox, timeout: Duration) -> Result<(), Fail> {
        let unacked = std::mem::take(&mut inbox.unacked);
        self.ack_msgids(&unacked, timeout).await?;
        inbox.acked += unacked.len() as u64;
        Ok(())
    }

    /// MSG_ACK type 3 (no answer) of `msgids`, at most [`ACK_BATCH`] per frame.
    pub(crate) async fn ack_msgids(
        &mut self,
        msgids: &[u64],
        timeout: Duration,
    ) -> Result<(), Fail> {
        for msgids in msgids.chunks(ACK_BATCH) {
            let seq = self.next_seq();
            let frame = Frame::new(
                Cmd::MsgAck,
                FrameType::Ack,
                seq,
                0,
                &wire::MsgAck {
                    msgids: msgids.to_vec(),
                },
            );
            self.send(&frame, timeout).await?;
        }
        Ok(())
    }

    /// Keeps the connection until `until` is cancelled: KEEPALIVE at the interval the server
    /// asked for, MSG pushes taken into `inbox` and acknowledged. `Err` when the link ended
    /// first.
    pub(crate) async fn hold(
        &mut self,
        inbox: &mut Inbox,
        until: &CancellationToken,
        keepalive: Duration,
    ) -> Result<(), Fail> {
        self.hold_with(inbox, until, keepalive, true).await
    }

    /// [`Conn::hold`], acknowledging the pushes only when `ack` (the offline bench holds the
    /// login redelivery unacknowledged: its clients take those messages from the pull pages).
    pub(crate) async fn hold_with(
        &mut self,
        inbox: &mut Inbox,
        until: &CancellationToken,
        keepalive: Duration,
        ack: bool,
    ) -> Result<(), Fail> {
        let keepalive = keepalive.max(Duration::from_secs(1));
        let mut next_ping = Instant::now() + keepalive;
        loop {
            if self.buf.capacity() - self.buf.len() < READ_RESERVE / 4 {
                self.buf.reserve(READ_RESERVE);
            }
            tokio::select! {
                biased;
                _ = until.cancelled() => return Ok(()),
                read = self.stream.read_buf(&mut self.buf) => match read {
                    Ok(0) => return Err(Fail::Link("closed by the server".to_owned())),
                    Ok(_) => {}
                    Err(err) => return Err(Fail::Link(format!("read: {err}"))),
                },
                _ = tokio::time::sleep_until(next_ping) => {
                    let seq = self.next_seq();
                    let ping = Frame::request(
                        Cmd::Keepalive,
                        seq,
                        0,
                        &wire::KeepaliveRequest { client_time_ms: longlink_proto::unix_ms() },
                    );
                    self.send(&ping, keepalive).await?;
                    next_ping += keepalive;
                    continue;
                }
            }
            while let Some(frame) = self.parsed()? {
                if (frame.cmd(), frame.header.frame_type) == (Some(Cmd::Msg), FrameType::Push)
                    && let Ok(msg) = frame.decode_body::<wire::Msg>()
                {
                    inbox.take(msg.msgid, Via::Push);
                }
            }
            if ack {
                self.ack(inbox, keepalive).await?;
            }
        }
    }
}

fn server_error(frame: &Frame) -> Fail {
    let body = frame.decode_body::<wire::Error>().unwrap_or_default();
    Fail::Server {
        code: ErrorCode::try_from(body.code).ok(),
        retry_after_ms: body.retry_after_ms,
        text: client::describe_error(frame),
    }
}

/// How long to wait after `retry_after_ms` (at least 1 ms, at most [`MAX_RETRY_AFTER`]).
pub(crate) fn retry_wait(retry_after_ms: u32) -> Duration {
    Duration::from_millis(u64::from(retry_after_ms.max(1))).min(MAX_RETRY_AFTER)
}

/// A fresh LOGIN (the clients' first): retried after RATE_LIMITED as the server asks, within
/// `until`. Returns the connection and how many RATE_LIMITED answers it took.
pub(crate) async fn first_login(
    dial: &Dial,
    identity: &mut Identity,
    until: Instant,
) -> Result<(Conn, u32), String> {
    let mut throttled = 0;
    let mut inbox = Inbox::default();
    for _ in 0..MAX_ATTEMPTS {
        let mut conn = Conn::open(dial).await.map_err(|f| f.to_string())?;
        let step = (Instant::now() + dial.step_timeout).min(until);
        match conn.login(dial, identity, &mut inbox, step).await {
            Ok(()) => return Ok((conn, throttled)),
            Err(Fail::Server {
                code: Some(ErrorCode::RateLimited),
                retry_after_ms,
                ..
            }) => {
                throttled += 1;
                conn.reset();
                if !wait_until(retry_wait(retry_after_ms), until).await {
                    return Err(format!("still RATE_LIMITED after {throttled} tries"));
                }
            }
            Err(fail) => {
                conn.reset();
                return Err(fail.to_string());
            }
        }
    }
    Err(format!("no LOGIN within {MAX_ATTEMPTS} connections"))
}

/// Sleeps `wait`, unless that ends past `until`; `false` then (without sleeping).
async fn wait_until(wait: Duration, until: Instant) -> bool {
    let wake = Instant::now() + wait;
    if wake >= until {
        return false;
    }
    tokio::time::sleep_until(wake).await;
    true
}

/// How a client came back.
#[derive(Debug, Default)]
pub(crate) struct Back {
    /// When the RESUME or LOGIN response arrived.
    pub(crate) session_at: Option<Instant>,
    /// When every missed message was in hand (after the pulls).
    pub(crate) caught_up_at: Option<Instant>,
    /// Back by RESUME (not LOGIN).
    pub(crate) resumed: bool,
    /// The RESUME response said it carried everything.
    pub(crate) gap_free: bool,
    /// RESUME_REJECTED answers (then LOGIN).
    pub(crate) rejected: u32,
    /// LOGINs accepted.
    pub(crate) logins: u32,
    /// RATE_LIMITED answers.
    pub(crate) rate_limited: u32,
    /// Connections opened.
    pub(crate) connects: u32,
    /// OFFLINE_PULL requests.
    pub(crate) pulls: u32,
}

/// Reconnects: RESUME with the identity's token (unless the dial says not to, or the token is
/// empty), else or after RESUME_REJECTED a LOGIN with `prior_epoch`, retried after
/// RATE_LIMITED; then pulls what the session is missing and acknowledges it. Everything by
/// `until`. `back` says how far it got, also on failure.
pub(crate) async fn reconnect(
    dial: &Dial,
    identity: &mut Identity,
    inbox: &mut Inbox,
    back: &mut Back,
    until: Instant,
) -> Result<Conn, String> {
    let mut try_resume = dial.resume && !identity.resume_token.is_empty();
    while back.connects < MAX_ATTEMPTS {
        back.connects += 1;
        let mut conn = Conn::open(dial).await.map_err(|f| f.to_string())?;
        let step = || (Instant::now() + dial.step_timeout).min(until);
        if try_resume {
            match conn.resume(dial, identity, inbox, step()).await {
                Ok((gap_free, last)) => {
                    back.session_at = Some(Instant::now());
                    back.resumed = true;
                    back.gap_free = gap_free;
                    if !gap_free {
                        back.pulls += catch_up(&mut conn, dial, last, inbox, until).await?;
                    }
                    return finish(conn, inbox, back, dial).await;
                }
                Err(fail) if fail.is(ErrorCode::ResumeRejected) => {
                    // The connection stays open: LOGIN on it (protocol §6.5).
                    back.rejected += 1;
                    try_resume = false;
                }
                Err(fail) => {
                    conn.reset();
                    match fail {
                        // SHUTTING_DOWN and the like: come back when told.
                        Fail::Server {
                            retry_after_ms,
                            text,
                            ..
                        } if retry_after_ms > 0 => {
                            if !wait_until(retry_wait(retry_after_ms), until).await {
                                return Err(text);
                            }
                            continue;
                        }
                        fail => return Err(fail.to_string()),
                    }
                }
            }
        }
        match conn.login(dial, identity, inbox, step()).await {
            Ok(()) => {
                back.session_at = Some(Instant::now());
                back.logins += 1;
                // The server pushes the first 200 unacked messages right after the response;
                // the protocol asks for a pull from 0 all the same (§6.6): the pushes that
                // the pull repeats are duplicates, counted as such.
                back.pulls += catch_up(&mut conn, dial, 0, inbox, until).await?;
                return finish(conn, inbox, back, dial).await;
            }
            Err(fail) => {
                conn.reset();
                match fail {
                    Fail::Server {
                        code: Some(code @ (ErrorCode::RateLimited | ErrorCode::ShuttingDown)),
                        retry_after_ms,
                        text,
                    } => {
                        back.rate_limited += u32::from(code == ErrorCode::RateLimited);
                        if !wait_until(retry_wait(retry_after_ms), until).await {
                            return Err(format!("{text} (still refused at the storm's timeout)"));
                        }
                    }
                    fail => return Err(fail.to_string()),
                }
            }
        }
    }
    Err(format!("not back within {MAX_ATTEMPTS} connections"))
}

async fn catch_up(
    conn: &mut Conn,
    dial: &Dial,
    cursor: u64,
    inbox: &mut Inbox,
    until: Instant,
) -> Result<u32, String> {
    conn.pull(dial, cursor, inbox, until)
        .await
        .map_err(|fail| format!("OFFLINE_PULL: {fail}"))
}

async fn finish(
    mut conn: Conn,
    inbox: &mut Inbox,
    back: &mut Back,
    dial: &Dial,
) -> Result<Conn, String> {
    back.caught_up_at = Some(Instant::now());
    conn.ack(inbox, dial.step_timeout)
        .await
        .map_err(|fail| format!("MSG_ACK: {fail}"))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_counts_each_way_and_deduplicates() {
        let mut inbox = Inbox::default();
        inbox.take(10, Via::Push);
        inbox.take(11, Via::Push);
        inbox.take(10, Via::Pull);
        inbox.take(12, Via::Pull);
        inbox.take(0, Via::Push);
        assert_eq!((inbox.pushed, inbox.pulled, inbox.carried), (3, 2, 0));
        assert_eq!(inbox.distinct(), 3);
        assert_eq!(inbox.duplicates, 1);
        assert_eq!(inbox.last(), 12);
        assert_eq!(inbox.unacked, [10, 11, 12]);
    }

    #[test]
    fn retry_waits_are_bounded() {
        assert_eq!(retry_wait(0), Duration::from_millis(1));
        assert_eq!(retry_wait(250), Duration::from_millis(250));
        assert_eq!(retry_wait(u32::MAX), MAX_RETRY_AFTER);
    }
}
