//! Fast reconnect (seed 004) against the scripted fake gate (see `common`): after a drop the
//! client RESUMEs its held session with the token and the last msgid it saw, takes the
//! answer's messages as its catch-up (no pull when `gap_free`), falls back to LOGIN with its
//! epoch when the resume is rejected, follows a KICK's `reconnect_to`, waits out
//! `RATE_LIMITED`, and ends on `SESSION_REPLACED`.

mod common;

use common::*;
use longlink_proto::{Cmd, Frame, FrameType, wire};
use longlink_sdk::{ClientError, ErrorCode, Event, KickReason};
use tokio::net::TcpListener;
use tokio::time::timeout;
use tokio_util::codec::Framed;

const EPOCH: u64 = 7;

fn login_response(session_id: u64, token: &str) -> wire::LoginResponse {
    wire::LoginResponse {
        session_id,
        resume_token: token.to_owned(),
        server_time_ms: 1,
        keepalive_interval_secs: 30,
        uid: UID.to_owned(),
        epoch: EPOCH,
        hold_secs: 30,
        ..Default::default()
    }
}

fn resume_response(
    session_id: u64,
    token: &str,
    messages: Vec<wire::Msg>,
    gap_free: bool,
) -> wire::ResumeResponse {
    wire::ResumeResponse {
        session_id,
        gap_free,
        messages,
        resume_token: token.to_owned(),
        epoch: EPOCH,
        keepalive_interval_secs: 30,
        hold_secs: 30,
        server_time_ms: 1,
        uid: UID.to_owned(),
        compression: String::new(),
    }
}

/// Accepts one connection on `listener` and returns it with its first frame, whatever it is.
async fn accept_first(listener: &TcpListener) -> (Conn, Frame) {
    let (tcp, _) = timeout(WAIT, listener.accept())
        .await
        .expect("a client connects")
        .expect("accept");
    let mut conn = Conn {
        framed: Framed::new(tcp, longlink_proto::FrameCodec::default()),
        acked: Default::default(),
    };
    let first = conn.recv_request_any().await;
    (conn, first)
}

trait AnyRequest {
    async fn recv_request_any(&mut self) -> Frame;
}

impl AnyRequest for Conn {
    /// The next request frame (MSG_ACKs recorded and skipped).
    async fn recv_request_any(&mut self) -> Frame {
        loop {
            let frame = self.recv().await;
            if frame.header.frame_type == FrameType::Ack {
                self.record_ack(&frame);
                continue;
            }
            return frame;
        }
    }
}

/// Connects a client whose LOGIN gets resume token `token` (and no offline messages).
async fn connect_resumable(
    gate: &Gate,
    token: &str,
) -> (longlink_sdk::Client, longlink_sdk::Incoming, Conn) {
    let script = async {
        let (mut conn, login) = gate.accept_raw().await;
        let request: wire::LoginRequest = login.decode_body().expect("LoginRequest");
        assert!(request.resume_capable, "the SDK asks for a resume token");
        conn.respond(&login, &login_response(SESSION_ID, token))
            .await;
        conn.answer_catch_up(&[]).await;
        conn
    };
    let (client, conn) = tokio::join!(longlink_sdk::Client::connect(gate.config()), script);
    let (client, incoming) = client.expect("connect + login");
    (client, incoming, conn)
}

async fn expect_reconnected(incoming: &mut longlink_sdk::Incoming, want_resumed: bool) -> u64 {
    loop {
        match next_event(incoming).await {
            Event::Disconnected { .. } | Event::Kicked { .. } => continue,
            Event::Reconnected {
                session_id,
                resumed,
            } => {
                assert_eq!(resumed, want_resumed, "resumed flag");
                return session_id;
            }
            other => panic!("expected Reconnected, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_dropped_link_is_resumed_with_what_was_missed_and_nothing_twice() {
    let gate = Gate::start().await;
    let (client, mut incoming, mut conn) = connect_resumable(&gate, "rt-1").await;

    conn.push_msgs(&[msg(10, "before the drop")]).await;
    assert_eq!(next_message_id(&mut incoming).await, 10);
    conn.recv_acks_until(&[10]).await;
    drop(conn);

    let (mut conn, resume) = gate.accept_raw_any().await;
    assert_eq!(resume.cmd(), Some(Cmd::Resume), "a RESUME, not a LOGIN");
    let request: wire::ResumeRequest = resume.decode_body().expect("ResumeRequest");
    assert_eq!(request.resume_token, "rt-1");
    assert_eq!(request.last_msgid, 10);
    assert!(
        request.acked_msgids.contains(&10),
        "recent acks are repeated"
    );
    // 10 again (its ACK "was lost"), then what was missed.
    conn.respond(
        &resume,
        &resume_response(
            5000,
            "rt-2",
            vec![msg(10, "again"), msg(11, "a"), msg(12, "b")],
            true,
        ),
    )
    .await;
    assert_eq!(expect_reconnected(&mut incoming, true).await, 5000);
    assert_eq!(message_ids(&mut incoming, 2).await, vec![11, 12]);
    assert_eq!(client.session_id(), 5000);

    // gap_free: no OFFLINE_PULL follows; the next request is the application's.
    let ping = tokio::spawn({
        let client = client.clone();
        async move { client.keepalive().await }
    });
    let keepalive = conn.recv_request_any().await;
    assert_eq!(
        keepalive.cmd(),
        Some(Cmd::Keepalive),
        "no catch-up pull after a gap-free resume"
    );
    conn.respond(&keepalive, &wire::KeepaliveResponse { server_time_ms: 2 })
        .await;
    ping.await.expect("join").expect("keepalive answered");

    // The next drop resumes with the newest token.
    drop(conn);
    let (mut conn, resume) = gate.accept_raw_any().await;
    let request: wire::ResumeRequest = resume.decode_body().expect("ResumeRequest");
    assert_eq!(request.resume_token, "rt-2");
    assert_eq!(request.last_msgid, 12);
    conn.respond(&resume, &resume_response(5001, "rt-3", vec![], true))
        .await;
    assert_eq!(expect_reconnected(&mut incoming, true).await, 5001);
}

#[tokio::test]
async fn a_resume_that_is_not_gap_free_pulls_on_from_its_last_msgid() {
    let gate = Gate::start().await;
    let (_client, mut incoming, conn) = connect_resumable(&gate, "rt-1").await;
    drop(conn);

    let (mut conn, resume) = gate.accept_raw_any().await;
    assert_eq!(resume.cmd(), Some(Cmd::Resume));
    // A push routed to the new session before the answer is not lost.
    conn.push_msgs(&[msg(14, "early")]).await;
    conn.respond(
        &resume,
        &resume_response(5000, "rt-2", vec![msg(11, "a"), msg(12, "b")], false),
    )
    .await;
    let pull = conn.recv_request_any().await;
    assert_eq!(pull.cmd(), Some(Cmd::OfflinePull));
    let request: wire::OfflinePullRequest = pull.decode_body().expect("OfflinePullRequest");
    assert_eq!(
        request.cursor, 12,
        "the pull goes on after the resumed page"
    );
    conn.respond(
        &pull,
        &wire::OfflinePullResponse {
            messages: vec![msg(13, "c"), msg(14, "early")],
            next_cursor: 14,
            more: false,
        },
    )
    .await;
    assert_eq!(expect_reconnected(&mut incoming, true).await, 5000);
    assert_eq!(message_ids(&mut incoming, 4).await, vec![11, 12, 13, 14]);
    let acked = conn.recv_acks_until(&[11, 12, 13, 14]).await;
    assert_eq!(
        acked.len(),
        4,
        "each message acknowledged, nothing else: {acked:?}"
    );
}

#[tokio::test]
async fn a_rejected_resume_logs_in_on_the_same_connection_with_the_prior_epoch() {
    let gate = Gate::start().await;
    let (_client, mut incoming, conn) = connect_resumable(&gate, "rt-1").await;
    drop(conn);

    let (mut conn, resume) = gate.accept_raw_any().await;
    assert_eq!(resume.cmd(), Some(Cmd::Resume));
    conn.respond_error(&resume, ErrorCode::ResumeRejected, "hold expired")
        .await;
    let login = conn.recv_request_any().await;
    assert_eq!(
        login.cmd(),
        Some(Cmd::Login),
        "LOGIN follows on the same connection"
    );
    let request: wire::LoginRequest = login.decode_body().expect("LoginRequest");
    assert_eq!(
        request.prior_epoch, EPOCH,
        "a reconnect says which epoch it had"
    );
    assert_eq!(request.device_id, DEVICE);
    conn.respond(&login, &login_response(6000, "rt-9")).await;
    conn.answer_catch_up(&[msg(20, "offline")]).await;
    assert_eq!(expect_reconnected(&mut incoming, false).await, 6000);
    assert_eq!(next_message_id(&mut incoming).await, 20);
}

#[tokio::test]
async fn session_replaced_at_a_reconnect_ends_the_client() {
    let gate = Gate::start().await;
    let (client, mut incoming, conn) = connect_resumable(&gate, "rt-1").await;
    drop(conn);

    let (mut conn, resume) = gate.accept_raw_any().await;
    conn.respond_error(&resume, ErrorCode::ResumeRejected, "replaced")
        .await;
    let login = conn.recv_request_any().await;
    assert_eq!(login.cmd(), Some(Cmd::Login));
    conn.respond_error(&login, ErrorCode::SessionReplaced, "a newer session exists")
        .await;
    match next_event(&mut incoming).await {
        Event::Disconnected { .. } => {}
        other => panic!("expected the first drop, got {other:?}"),
    }
    let reason = expect_closed(&mut incoming).await;
    assert!(reason.contains("SESSION_REPLACED"), "{reason}");
    assert!(matches!(client.keepalive().await, Err(ClientError::Closed)));
}

#[tokio::test]
async fn a_reconnect_kick_moves_the_client_to_the_gate_it_names() {
    let gate = Gate::start().await;
    let other = Gate::start().await;
    let other_addr = other.listener.local_addr().expect("addr").to_string();
    let (_client, mut incoming, mut conn) = connect_resumable(&gate, "rt-1").await;

    conn.send(Frame::push(
        Cmd::Kick,
        3,
        &wire::Kick {
            reason: KickReason::Reconnect as i32,
            message: "gate draining".into(),
            reconnect_to: other_addr,
            backoff_ms: 0,
            by_device_id: String::new(),
        },
    ))
    .await;
    drop(conn);

    match next_event(&mut incoming).await {
        Event::Kicked { reason, .. } => assert_eq!(reason, KickReason::Reconnect),
        other => panic!("expected the KICK, got {other:?}"),
    }
    let (mut conn, resume) = other.accept_raw_any().await;
    assert_eq!(resume.cmd(), Some(Cmd::Resume), "resumes on the named gate");
    conn.respond(
        &resume,
        &resume_response(7000, "rt-2", vec![msg(30, "x")], true),
    )
    .await;
    assert_eq!(expect_reconnected(&mut incoming, true).await, 7000);
    assert_eq!(next_message_id(&mut incoming).await, 30);
}

#[tokio::test]
async fn a_rate_limited_login_is_retried() {
    let gate = Gate::start().await;
    let mut config = gate.config();
    config.resume = false;
    let script = async {
        let (mut conn, _) = gate.accept_login(SESSION_ID).await;
        conn.answer_catch_up(&[]).await;
        conn
    };
    let (client, conn) = tokio::join!(longlink_sdk::Client::connect(config), script);
    let (_client, mut incoming) = client.expect("connect");
    drop(conn);

    let (mut conn, login) = gate.accept_raw().await;
    let request: wire::LoginRequest = login.decode_body().expect("LoginRequest");
    assert!(!request.resume_capable, "resume off: no token asked for");
    conn.send(Frame::new(
        Cmd::Error,
        FrameType::Response,
        login.header.seq_id,
        login.header.log_id,
        &wire::Error {
            code: ErrorCode::RateLimited as i32,
            message: "too many logins".into(),
            retry_after_ms: 20,
        },
    ))
    .await;
    drop(conn);

    let (mut conn, _) = gate.accept_login(8000).await;
    conn.answer_catch_up(&[]).await;
    assert_eq!(expect_reconnected(&mut incoming, false).await, 8000);
}

trait AcceptAny {
    async fn accept_raw_any(&self) -> (Conn, Frame);
}

impl AcceptAny for Gate {
    async fn accept_raw_any(&self) -> (Conn, Frame) {
        accept_first(&self.listener).await
    }
}
