//! A raw-protocol session for the session-lifecycle tests (sessions.rs, resume.rs, drain.rs):
//! requests matched by seq_id, with pushes (MSG, KICK, ERROR pushes) kept aside until a test
//! asks for them, so that a test sees every frame the server sent, in order.
#![allow(dead_code)] // each test binary uses a part of it

use std::collections::VecDeque;
use std::net::SocketAddr;

use longlink_proto::{Cmd, ErrorCode, Frame, FrameType, KickReason, wire};
use longlink_testkit::{RawClient, TestServer, WAIT, wait_until};

/// One client connection speaking raw frames.
#[derive(Debug)]
pub(crate) struct Conn {
    raw: RawClient,
    seq: u32,
    /// Frames received while waiting for something else (pushes), in arrival order.
    pushes: VecDeque<Frame>,
}

/// An ERROR answer: its code and `retry_after_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) code: ErrorCode,
    pub(crate) retry_after_ms: u32,
}

fn refused(frame: &Frame) -> Refused {
    let body: wire::Error = frame.decode_body().expect("ERROR body");
    Refused {
        code: ErrorCode::try_from(body.code).expect("known error code"),
        retry_after_ms: body.retry_after_ms,
    }
}

/// A LOGIN request of `uid` on `device` with a valid token, resume-capable.
pub(crate) fn login_request(
    server: &TestServer,
    appcode: u32,
    uid: &str,
    device: &str,
) -> wire::LoginRequest {
    wire::LoginRequest {
        token: server.token(appcode, uid),
        appcode,
        device_id: device.to_owned(),
        resume_capable: true,
        ..Default::default()
    }
}

/// A RESUME request carrying `token` only.
pub(crate) fn resume_request(token: &str) -> wire::ResumeRequest {
    wire::ResumeRequest {
        resume_token: token.to_owned(),
        ..Default::default()
    }
}

impl Conn {
    /// Connects to `addr`.
    pub(crate) async fn connect(addr: SocketAddr) -> Conn {
        Conn {
            raw: RawClient::connect(addr).await.expect("connect"),
            seq: 0,
            pushes: VecDeque::new(),
        }
    }

    /// Connects to `addr` and logs in with `request`; panics if refused.
    pub(crate) async fn logged_in(
        addr: SocketAddr,
        request: wire::LoginRequest,
    ) -> (Conn, wire::LoginResponse) {
        let mut conn = Conn::connect(addr).await;
        let response = conn.login(request).await.expect("login accepted");
        (conn, response)
    }

    /// Sends `frame` (a request, type 0) with the next seq_id and returns its answer: the
    /// response or ERROR with that seq_id.
    pub(crate) async fn request(&mut self, mut frame: Frame) -> Frame {
        self.seq += 1;
        let seq = self.seq;
        let cmd = frame.cmd();
        frame.header.seq_id = seq;
        self.raw.send(frame).await.expect("send request");
        loop {
            let frame = self.raw.recv().await.unwrap_or_else(|err| {
                panic!("no answer to {cmd:?} (seq {seq}): {err}");
            });
            if frame.header.frame_type == FrameType::Response && frame.header.seq_id == seq {
                return frame;
            }
            self.pushes.push_back(frame);
        }
    }

    /// LOGIN: the response, or the refusal.
    pub(crate) async fn login(
        &mut self,
        request: wire::LoginRequest,
    ) -> Result<wire::LoginResponse, Refused> {
        let answer = self
            .request(Frame::request(Cmd::Login, 0, 0, &request))
            .await;
        match answer.cmd() {
            Some(Cmd::Login) => Ok(answer.decode_body().expect("LoginResponse")),
            Some(Cmd::Error) => Err(refused(&answer)),
            other => panic!("unexpected answer to LOGIN: {other:?}"),
        }
    }

    /// RESUME: the response, or the refusal.
    pub(crate) async fn resume(
        &mut self,
        request: wire::ResumeRequest,
    ) -> Result<wire::ResumeResponse, Refused> {
        let answer = self
            .request(Frame::request(Cmd::Resume, 0, 0, &request))
            .await;
        match answer.cmd() {
            Some(Cmd::Resume) => Ok(answer.decode_body().expect("ResumeResponse")),
            Some(Cmd::Error) => Err(refused(&answer)),
            other => panic!("unexpected answer to RESUME: {other:?}"),
        }
    }

    /// C2C text to `(appcode, uid)` with `client_msg_id`: the response (panics on a refusal).
    pub(crate) async fn c2c(
        &mut self,
        to: (u32, &str),
        client_msg_id: &str,
        text: &str,
    ) -> wire::C2cResponse {
        let request = wire::C2cRequest {
            to: Some(wire::UserRef {
                appcode: to.0,
                uid: to.1.to_owned(),
            }),
            client_msg_id: client_msg_id.to_owned(),
            content_type: wire::ContentType::Text as i32,
            msgtype: 0,
            content: bytes::Bytes::copy_from_slice(text.as_bytes()),
        };
        let answer = self.request(Frame::request(Cmd::C2c, 0, 0, &request)).await;
        assert_eq!(
            answer.cmd(),
            Some(Cmd::C2c),
            "C2C refused: {:?}",
            refused(&answer)
        );
        answer.decode_body().expect("C2cResponse")
    }

    /// KEEPALIVE round trip: proves the connection is open and served.
    pub(crate) async fn keepalive(&mut self) {
        let answer = self
            .request(Frame::request(
                Cmd::Keepalive,
                0,
                0,
                &wire::KeepaliveRequest::default(),
            ))
            .await;
        assert_eq!(answer.cmd(), Some(Cmd::Keepalive));
    }

    /// MSG_ACK of type 3 (no answer).
    pub(crate) async fn ack(&mut self, msgids: &[u64]) {
        self.seq += 1;
        let mut frame = Frame::request(
            Cmd::MsgAck,
            self.seq,
            0,
            &wire::MsgAck {
                msgids: msgids.to_vec(),
            },
        );
        frame.header.frame_type = FrameType::Ack;
        self.raw.send(frame).await.expect("send MSG_ACK");
    }

    /// MSG_ACK of type 0: the number of msgids acked.
    pub(crate) async fn ack_confirmed(&mut self, msgids: &[u64]) -> u32 {
        let answer = self
            .request(Frame::request(
                Cmd::MsgAck,
                0,
                0,
                &wire::MsgAck {
                    msgids: msgids.to_vec(),
                },
            ))
            .await;
        assert_eq!(
            answer.cmd(),
            Some(Cmd::MsgAck),
            "MSG_ACK refused: {:?}",
            refused(&answer)
        );
        answer
            .decode_body::<wire::MsgAckResponse>()
            .expect("MsgAckResponse")
            .acked
    }

    /// OFFLINE_PULL from cursor 0 until `more` is false: every unacked message of this device.
    pub(crate) async fn pull_all(&mut self) -> Vec<wire::Msg> {
        let mut cursor = 0;
        let mut out = Vec::new();
        loop {
            let answer = self
                .request(Frame::request(
                    Cmd::OfflinePull,
                    0,
                    0,
                    &wire::OfflinePullRequest {
                        cursor,
                        page_size: 0,
                    },
                ))
                .await;
            assert_eq!(
                answer.cmd(),
                Some(Cmd::OfflinePull),
                "pull refused: {:?}",
                refused(&answer)
            );
            let page: wire::OfflinePullResponse = answer.decode_body().expect("page");
            out.extend(page.messages);
            cursor = page.next_cursor;
            if !page.more {
                return out;
            }
        }
    }

    /// LOGOUT: waits for the response, then for the close.
    pub(crate) async fn logout(mut self) {
        let answer = self
            .request(Frame::request(Cmd::Logout, 0, 0, &wire::LogoutRequest {}))
            .await;
        assert_eq!(answer.cmd(), Some(Cmd::Logout));
        self.raw.until_closed().await.expect("closed after LOGOUT");
    }

    /// The next push (type 2), kept or newly received.
    pub(crate) async fn next_push(&mut self) -> Frame {
        if let Some(frame) = self.pushes.pop_front() {
            return frame;
        }
        let frame = self.raw.recv().await.expect("a push");
        assert_eq!(
            frame.header.frame_type,
            FrameType::Push,
            "unexpected frame {:?}",
            frame.header
        );
        frame
    }

    /// The next MSG push (anything else is a failure).
    pub(crate) async fn next_msg(&mut self) -> wire::Msg {
        let frame = self.next_push().await;
        assert_eq!(
            frame.cmd(),
            Some(Cmd::Msg),
            "expected a MSG push, got {:?}",
            frame.header
        );
        frame.decode_body().expect("Msg")
    }

    /// `n` MSG pushes.
    pub(crate) async fn msgs(&mut self, n: usize) -> Vec<wire::Msg> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next_msg().await);
        }
        out
    }

    /// Pushes received so far and not yet taken (without waiting).
    pub(crate) fn pending_pushes(&self) -> usize {
        self.pushes.len()
    }

    /// Waits for the server to close the connection; returns every frame not yet taken.
    pub(crate) async fn until_closed(mut self) -> Vec<Frame> {
        let rest = self
            .raw
            .until_closed()
            .await
            .expect("the server closes the connection");
        self.pushes.extend(rest);
        self.pushes.into_iter().collect()
    }
}

/// The KICK frames among `frames`.
pub(crate) fn kicks(frames: &[Frame]) -> Vec<wire::Kick> {
    frames
        .iter()
        .filter(|f| f.cmd() == Some(Cmd::Kick))
        .map(|f| f.decode_body().expect("Kick"))
        .collect()
}

/// The reason of a KICK.
pub(crate) fn reason(kick: &wire::Kick) -> KickReason {
    KickReason::try_from(kick.reason).expect("known kick reason")
}

/// The contents of `msgs` as text.
pub(crate) fn texts(msgs: &[wire::Msg]) -> Vec<String> {
    msgs.iter()
        .map(|m| String::from_utf8_lossy(&m.content).into_owned())
        .collect()
}

/// The session ids presence lists for `(appcode, uid)`.
pub(crate) async fn presence_sessions(
    server: &TestServer,
    appcode: u32,
    uid: &str,
) -> Vec<longlink_presence::SessionEntry> {
    server
        .server()
        .presence()
        .sessions(appcode, uid)
        .await
        .expect("presence answers")
}

/// Waits until `gate` holds `n` sessions without a link.
pub(crate) async fn wait_held(server: &TestServer, gate: usize, n: u64) {
    let gate = &server.server().gates()[gate];
    wait_until(WAIT, || async { gate.held_count() == n })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "gate {} holds {} sessions, not {n}",
                gate.id(),
                gate.held_count()
            )
        });
}
