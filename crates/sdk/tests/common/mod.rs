//! Shared by the SDK's test binaries: a scripted fake gate (a `TcpListener` on 127.0.0.1:0
//! that speaks `FrameCodec`, driven step by step from each test, in the style of rumqttc's
//! tests/broker.rs) and helpers to read events. Nothing sleeps for a fixed time: every wait
//! is on a frame, an event or a result, bounded by [`WAIT`].

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use longlink_proto::{Cmd, Frame, FrameCodec, FrameType, wire};
use longlink_sdk::{Client, ClientConfig, ErrorCode, Event, Incoming, MsgKind, ReconnectPolicy};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::codec::Framed;

/// Upper bound of every wait; never reached when the code works.
pub(crate) const WAIT: Duration = Duration::from_secs(10);
pub(crate) const SESSION_ID: u64 = 4242;
pub(crate) const UID: &str = "alice";
pub(crate) const DEVICE: &str = "phone-1";

pub(crate) struct Gate {
    pub listener: TcpListener,
}

impl Gate {
    pub(crate) async fn start() -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Gate { listener }
    }

    /// A config for this gate with automatic keepalive off (tests that want it turn it on)
    /// and a quick reconnect policy.
    pub(crate) fn config(&self) -> ClientConfig {
        let addr = self.listener.local_addr().expect("local addr").to_string();
        let mut config = ClientConfig::new(addr, 129, "token-abc", DEVICE);
        config.keepalive_interval = Some(Duration::ZERO);
        config.reconnect = Some(ReconnectPolicy {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
            ..ReconnectPolicy::default()
        });
        config
    }

    /// Accepts one connection and reads its first frame (which must be a LOGIN request).
    pub(crate) async fn accept_raw(&self) -> (Conn, Frame) {
        let (tcp, _) = timeout(WAIT, self.listener.accept())
            .await
            .expect("a client connects")
            .expect("accept");
        let mut conn = Conn {
            framed: Framed::new(tcp, FrameCodec::default()),
            acked: BTreeSet::new(),
        };
        let login = conn.recv().await;
        assert_eq!(login.cmd(), Some(Cmd::Login));
        assert_eq!(login.header.frame_type, FrameType::Request);
        (conn, login)
    }

    /// Accepts one connection and answers its LOGIN successfully with `session_id`; the
    /// catch-up OFFLINE_PULL that follows is the caller's to answer.
    pub(crate) async fn accept_login(&self, session_id: u64) -> (Conn, wire::LoginRequest) {
        let (mut conn, login) = self.accept_raw().await;
        let request: wire::LoginRequest = login.decode_body().expect("LoginRequest");
        conn.respond(
            &login,
            &wire::LoginResponse {
                session_id,
                resume_token: String::new(),
                server_time_ms: 1,
                keepalive_interval_secs: 30,
                compression: String::new(),
                uid: UID.to_owned(),
                ..Default::default()
            },
        )
        .await;
        (conn, request)
    }

    /// Accepts one connection, answers its LOGIN and its catch-up pull (nothing offline).
    pub(crate) async fn accept(&self) -> (Conn, wire::LoginRequest) {
        let (mut conn, request) = self.accept_login(SESSION_ID).await;
        conn.answer_catch_up(&[]).await;
        (conn, request)
    }

    /// Connects a client with `config` and logs it in.
    pub(crate) async fn connect_with(&self, config: ClientConfig) -> (Client, Incoming, Conn) {
        let (client, (conn, _)) = tokio::join!(Client::connect(config), self.accept());
        let (client, incoming) = client.expect("connect + login");
        (client, incoming, conn)
    }

    pub(crate) async fn connect(&self) -> (Client, Incoming, Conn) {
        self.connect_with(self.config()).await
    }
}

/// The gate's side of one connection.
pub(crate) struct Conn {
    pub(crate) framed: Framed<TcpStream, FrameCodec>,
    /// msgids of MSG_ACK frames skipped by [`Conn::recv_request`], not yet claimed by
    /// [`Conn::recv_acks_until`].
    pub(crate) acked: BTreeSet<u64>,
}

impl Conn {
    pub(crate) async fn recv(&mut self) -> Frame {
        timeout(WAIT, self.framed.next())
            .await
            .expect("a frame within the wait")
            .expect("the connection is open")
            .expect("a valid frame")
    }

    /// The next frame that is not an automatic MSG_ACK (type 3).
    pub(crate) async fn recv_request(&mut self, cmd: Cmd) -> Frame {
        loop {
            let frame = self.recv().await;
            if frame.header.frame_type == FrameType::Ack {
                self.record_ack(&frame);
                continue;
            }
            assert_eq!(
                frame.cmd(),
                Some(cmd),
                "unexpected frame {:?}",
                frame.header
            );
            assert_eq!(frame.header.frame_type, FrameType::Request);
            assert_ne!(frame.header.seq_id, 0, "requests never use seq_id 0");
            assert_ne!(frame.header.log_id, 0, "requests carry a log_id");
            return frame;
        }
    }

    /// Reads MSG_ACK (type 3) frames until `want` msgids were acknowledged; returns all of
    /// them (so a test can check nothing unexpected was acked).
    pub(crate) async fn recv_acks_until(&mut self, want: &[u64]) -> BTreeSet<u64> {
        let want: BTreeSet<u64> = want.iter().copied().collect();
        while !want.is_subset(&self.acked) {
            let frame = self.recv().await;
            self.record_ack(&frame);
        }
        std::mem::take(&mut self.acked)
    }

    pub(crate) fn record_ack(&mut self, frame: &Frame) {
        assert_eq!(
            frame.cmd(),
            Some(Cmd::MsgAck),
            "unexpected {:?}",
            frame.header
        );
        assert_eq!(frame.header.frame_type, FrameType::Ack);
        assert_ne!(frame.header.seq_id, 0);
        let ack: wire::MsgAck = frame.decode_body().expect("MsgAck");
        assert!(!ack.msgids.is_empty(), "no empty MSG_ACK");
        self.acked.extend(ack.msgids);
    }

    pub(crate) async fn send(&mut self, frame: Frame) {
        timeout(WAIT, self.framed.send(frame))
            .await
            .expect("send within the wait")
            .expect("send");
    }

    pub(crate) async fn respond(&mut self, request: &Frame, body: &impl prost::Message) {
        self.send(Frame::response(&request.header, body)).await;
    }

    pub(crate) async fn respond_error(&mut self, request: &Frame, code: ErrorCode, message: &str) {
        self.send(Frame::error(
            Some(request.header.seq_id),
            request.header.log_id,
            code,
            message,
        ))
        .await;
    }

    pub(crate) async fn push_msgs(&mut self, msgs: &[wire::Msg]) {
        for msg in msgs {
            timeout(WAIT, self.framed.feed(Frame::push(Cmd::Msg, 7, msg)))
                .await
                .expect("feed within the wait")
                .expect("feed");
        }
        timeout(WAIT, SinkExt::<Frame>::flush(&mut self.framed))
            .await
            .expect("flush within the wait")
            .expect("flush");
    }

    /// Answers the catch-up OFFLINE_PULL that follows every login with one last page.
    pub(crate) async fn answer_catch_up(&mut self, messages: &[wire::Msg]) {
        let frame = self.recv_request(Cmd::OfflinePull).await;
        let req: wire::OfflinePullRequest = frame.decode_body().expect("OfflinePullRequest");
        assert_eq!(req.cursor, 0, "the catch-up starts from the beginning");
        self.respond(
            &frame,
            &wire::OfflinePullResponse {
                messages: messages.to_vec(),
                next_cursor: messages.last().map_or(0, |m| m.msgid),
                more: false,
            },
        )
        .await;
    }

    /// Waits until the client closes its side of the connection.
    pub(crate) async fn expect_eof(&mut self) {
        loop {
            match timeout(WAIT, self.framed.next())
                .await
                .expect("EOF within the wait")
            {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            }
        }
    }
}

/// A text message from 130:bob to me with no known predecessor.
pub(crate) fn msg(msgid: u64, text: &str) -> wire::Msg {
    wire::Msg {
        msgid,
        from: Some(wire::UserRef {
            appcode: 130,
            uid: "bob".into(),
        }),
        to: Some(wire::UserRef {
            appcode: 129,
            uid: UID.into(),
        }),
        msgtype: 0,
        content_type: longlink_proto::ContentType::Text as i32,
        content: Bytes::from(text.to_owned()),
        senddate_ms: 1_700_000_000_000 + msgid,
        client_msg_id: format!("c{msgid}"),
        from_device: "bob-phone".into(),
        log_id: 99,
        kind: MsgKind::C2c as i32,
        prev_msgid: 0,
        delivered: false,
    }
}

/// A text message from 130:bob to me whose predecessor in the conversation is `prev`.
pub(crate) fn msg_after(msgid: u64, prev: u64) -> wire::Msg {
    wire::Msg {
        prev_msgid: prev,
        ..msg(msgid, &format!("m{msgid}"))
    }
}

/// A message I sent to 130:bob from `device`.
pub(crate) fn mine(msgid: u64, prev: u64, device: &str) -> wire::Msg {
    wire::Msg {
        from: Some(wire::UserRef {
            appcode: 129,
            uid: UID.into(),
        }),
        to: Some(wire::UserRef {
            appcode: 130,
            uid: "bob".into(),
        }),
        from_device: device.into(),
        ..msg_after(msgid, prev)
    }
}

pub(crate) fn typing() -> wire::Msg {
    wire::Msg {
        msgid: 0,
        content_type: longlink_proto::ContentType::Typing as i32,
        content: Bytes::new(),
        ..msg(0, "")
    }
}

pub(crate) async fn next_event(incoming: &mut Incoming) -> Event {
    timeout(WAIT, incoming.next_event())
        .await
        .expect("an event within the wait")
        .expect("the stream has not ended")
}

pub(crate) async fn next_message_id(incoming: &mut Incoming) -> u64 {
    match next_event(incoming).await {
        Event::Message(message) => message.msgid,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// The stream yields `Event::Closed` (whose reason is returned) and then ends, without
/// reconnecting first.
pub(crate) async fn expect_closed(incoming: &mut Incoming) -> String {
    let reason = loop {
        match next_event(incoming).await {
            Event::Closed { reason } => break reason,
            Event::Message(_) | Event::Kicked { .. } | Event::Error { .. } => continue,
            other => panic!("expected the end, got {other:?}"),
        }
    };
    let end = timeout(WAIT, incoming.next_event())
        .await
        .expect("end within the wait");
    assert!(end.is_none(), "nothing after Closed, got {end:?}");
    reason
}

/// The next event that is not a message (messages before it are returned too).
pub(crate) async fn next_non_message(incoming: &mut Incoming) -> (Vec<u64>, Event) {
    let mut messages = Vec::new();
    loop {
        match next_event(incoming).await {
            Event::Message(message) => messages.push(message.msgid),
            other => return (messages, other),
        }
    }
}

/// Reads events until `want` messages arrived; returns their msgids in order (other events
/// are skipped).
pub(crate) async fn message_ids(incoming: &mut Incoming, want: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    while ids.len() < want {
        if let Event::Message(message) = next_event(incoming).await {
            ids.push(message.msgid);
        }
    }
    ids
}
