//! PUSH_TOKEN (cmd 25) and NOTIFICATION_ACK (cmd 26) end to end over real sockets (issue 12):
//! the client side of offline push notifications. A refused token or a bad receipt is a
//! request-level ERROR — the connection stays, since a device with a stale provider name must
//! still chat — receipts for notifications that are not the device's match nothing, and a
//! client that knows neither command (every client before issue 12) is unaffected.
//!
//! These hold on a server without `[push]` providers (it refuses every registration). The
//! tests with a configured provider (register, list, remove, a logout removes the device's
//! tokens) come with the server's `[push]` wiring.

use longlink_proto::{Cmd, ErrorCode, Frame, MAX_NOTIFICATION_ACK_IDS, wire};
use longlink_sdk::{ClientError, NotificationAck};
use longlink_testkit::{RawClient, TestServer, WAIT, error_of, is_response};

fn server_code(err: &ClientError) -> Option<ErrorCode> {
    err.server_code()
}

/// A raw client logged in as `(appcode, uid)` on `device`.
async fn raw_login(server: &TestServer, appcode: u32, uid: &str, device: &str) -> RawClient {
    let mut raw = RawClient::connect(server.gate_addr())
        .await
        .expect("connect");
    let answer = raw
        .login(appcode, &server.token(appcode, uid), device)
        .await
        .expect("login answer");
    assert!(
        is_response(&answer, Cmd::Login),
        "login refused: {answer:?}"
    );
    raw
}

/// Sends `frame` (a request made with [`Frame::request`]) and returns the answer with its
/// seq_id (pushes in between are skipped).
async fn request(raw: &mut RawClient, frame: Frame) -> Frame {
    let seq_id = frame.header.seq_id;
    raw.send(frame).await.expect("send");
    loop {
        let frame = tokio::time::timeout(WAIT, raw.recv())
            .await
            .expect("an answer within the wait")
            .expect("the connection stays open");
        if frame.header.seq_id == seq_id {
            return frame;
        }
    }
}

/// The connection still serves requests: a KEEPALIVE round trip.
async fn still_open(raw: &mut RawClient, seq_id: u32) {
    let pong = request(
        raw,
        Frame::request(
            Cmd::Keepalive,
            seq_id,
            7,
            &wire::KeepaliveRequest { client_time_ms: 1 },
        ),
    )
    .await;
    assert!(is_response(&pong, Cmd::Keepalive), "{pong:?}");
}

#[tokio::test]
async fn an_unknown_provider_is_invalid_argument_and_the_session_stays() {
    let server = TestServer::start().await;
    let (client, _incoming) = server.client(129, "alice", "phone").await;
    let err = client
        .register_push_token("no-such-provider", "token-1")
        .await
        .expect_err("no provider is configured");
    assert_eq!(server_code(&err), Some(ErrorCode::InvalidArgument), "{err}");
    assert!(client.is_connected());
    // Nothing was registered; the same connection answers the next request.
    assert_eq!(client.push_tokens().await.expect("list"), Vec::new());
    assert_eq!(
        client.remove_push_token(None).await.expect("remove all"),
        Vec::new()
    );
    client.keepalive().await.expect("still served");
}

#[tokio::test]
async fn receipts_of_unknown_notifications_match_nothing() {
    let server = TestServer::start().await;
    let (client, _incoming) = server.client(129, "alice", "phone").await;
    let outcome = client.ack_notification(424_242).await.expect("answered");
    assert_eq!(outcome, NotificationAck::Sent { matched: 0 });
    assert_eq!(client.pending_notification_acks(), 0);

    // The raw command: several ids, and an empty list.
    let mut raw = raw_login(&server, 129, "bob", "tablet").await;
    let ids = vec![1, 2, 3, u64::MAX];
    let answer = request(
        &mut raw,
        Frame::request(Cmd::NotificationAck, 2, 7, &wire::NotificationAck { ids }),
    )
    .await;
    assert!(is_response(&answer, Cmd::NotificationAck), "{answer:?}");
    let body: wire::NotificationAckResponse = answer.decode_body().expect("body");
    assert_eq!(body.matched, 0);
    let empty = wire::NotificationAck { ids: Vec::new() };
    let answer = request(&mut raw, Frame::request(Cmd::NotificationAck, 3, 7, &empty)).await;
    let body: wire::NotificationAckResponse = answer.decode_body().expect("body");
    assert_eq!(body.matched, 0);
}

#[tokio::test]
async fn too_many_receipts_or_an_unknown_op_are_invalid_argument_not_a_close() {
    let server = TestServer::start().await;
    let mut raw = raw_login(&server, 129, "alice", "phone").await;

    let ids: Vec<u64> = (1..=MAX_NOTIFICATION_ACK_IDS as u64 + 1).collect();
    let answer = request(
        &mut raw,
        Frame::request(Cmd::NotificationAck, 2, 7, &wire::NotificationAck { ids }),
    )
    .await;
    let (code, _) = error_of(&answer).expect("an ERROR");
    assert_eq!(code, ErrorCode::InvalidArgument);
    // Exactly the limit is fine.
    let ids: Vec<u64> = (1..=MAX_NOTIFICATION_ACK_IDS as u64).collect();
    let answer = request(
        &mut raw,
        Frame::request(Cmd::NotificationAck, 3, 7, &wire::NotificationAck { ids }),
    )
    .await;
    assert!(is_response(&answer, Cmd::NotificationAck), "{answer:?}");

    // An op from a future protocol version.
    let unknown_op = wire::PushTokenRequest {
        op: 9,
        provider: "fcm".to_owned(),
        ..Default::default()
    };
    let answer = request(&mut raw, Frame::request(Cmd::PushToken, 4, 7, &unknown_op)).await;
    let (code, _) = error_of(&answer).expect("an ERROR");
    assert_eq!(code, ErrorCode::InvalidArgument);
    // REGISTER without a provider or token.
    let answer = request(
        &mut raw,
        Frame::request(Cmd::PushToken, 5, 7, &wire::PushTokenRequest::default()),
    )
    .await;
    let (code, _) = error_of(&answer).expect("an ERROR");
    assert_eq!(code, ErrorCode::InvalidArgument);
    // LIST answers this device's tokens: none.
    let list = wire::PushTokenRequest {
        op: wire::PushTokenOp::List as i32,
        ..Default::default()
    };
    let answer = request(&mut raw, Frame::request(Cmd::PushToken, 6, 7, &list)).await;
    let body: wire::PushTokenResponse = answer.decode_body().expect("PushTokenResponse");
    assert!(body.tokens.is_empty());
    still_open(&mut raw, 7).await;
}

#[tokio::test]
async fn a_client_that_knows_neither_command_is_unaffected() {
    let server = TestServer::start().await;
    // A new client registers (refused here) and acknowledges notifications…
    let (alice, _alice_in) = server.client(129, "alice", "phone").await;
    let _ = alice.register_push_token("apns", "t").await;
    alice.ack_notification(1).await.expect("answered");
    // …while an old one, speaking only the commands it always knew, chats as before.
    let mut bob = raw_login(&server, 130, "bob", "old-phone").await;
    let c2c = wire::C2cRequest {
        to: Some(wire::UserRef {
            appcode: 129,
            uid: "alice".to_owned(),
        }),
        client_msg_id: "old-1".to_owned(),
        content_type: wire::ContentType::Text as i32,
        content: "hi from an old client".into(),
        ..Default::default()
    };
    let answer = request(&mut bob, Frame::request(Cmd::C2c, 2, 7, &c2c)).await;
    assert!(is_response(&answer, Cmd::C2c), "{answer:?}");
    let stored: wire::C2cResponse = answer.decode_body().expect("C2cResponse");
    assert_ne!(stored.msgid, 0);
    let pull = wire::OfflinePullRequest::default();
    let answer = request(&mut bob, Frame::request(Cmd::OfflinePull, 3, 7, &pull)).await;
    assert!(is_response(&answer, Cmd::OfflinePull), "{answer:?}");
    still_open(&mut bob, 4).await;
    server.assert_others_unaffected().await;
}
