//! Bad input gets its documented answer, and other clients are unaffected.

use longlink_proto::{Cmd, ErrorCode, Frame, FrameType, wire};
use longlink_sdk::{Content, UserRef};
use longlink_testkit::{RawClient, TestServer, error_of, header_only, is_response};

/// Expects an ERROR with `code` (and `seq_id`) and then the close.
async fn expect_error_then_close(client: &mut RawClient, code: ErrorCode, seq_id: u32) {
    let frames = client
        .until_closed()
        .await
        .expect("server closes the connection");
    let last = frames.last().expect("an ERROR frame before the close");
    assert_eq!(error_of(last).unwrap(), (code, seq_id));
}

#[tokio::test]
async fn bad_token_is_refused_and_closed() {
    let server = TestServer::start().await;
    let mut raw = RawClient::connect(server.gate_addr()).await.unwrap();
    let answer = raw.login(129, "not-a-token", "d").await.unwrap();
    assert_eq!(error_of(&answer).unwrap(), (ErrorCode::BadToken, 1));
    assert!(raw.until_closed().await.unwrap().is_empty());
    server.assert_others_unaffected().await;
    server.stop().await;
}

#[tokio::test]
async fn wrong_and_unknown_appcodes_are_refused() {
    let server = TestServer::start().await;
    // A valid token of appcode 129 presented for appcode 130.
    let mut raw = RawClient::connect(server.gate_addr()).await.unwrap();
    let answer = raw
        .login(130, &server.token(129, "zed"), "d")
        .await
        .unwrap();
    assert_eq!(error_of(&answer).unwrap(), (ErrorCode::AppcodeMismatch, 1));
    assert!(raw.until_closed().await.unwrap().is_empty());
    // An appcode the server does not know.
    let mut raw = RawClient::connect(server.gate_addr()).await.unwrap();
    let answer = raw
        .login(999, &server.token(129, "zed"), "d")
        .await
        .unwrap();
    assert_eq!(error_of(&answer).unwrap(), (ErrorCode::UnknownAppcode, 1));
    // c2c to an appcode that does not exist: refused, the connection stays.
    let (zed, _in) = server.client(129, "zed", "d").await;
    let err = zed
        .c2c(UserRef::new(999, "nobody"), Content::text("x"))
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::UnknownReceiverAppcode));
    assert!(zed.keepalive().await.is_ok(), "connection stays open");
    server.assert_others_unaffected().await;
    server.stop().await;
}

#[tokio::test]
async fn bad_magic_gets_an_error_and_a_close() {
    let server = TestServer::start().await;
    let mut raw = RawClient::connect(server.gate_addr()).await.unwrap();
    let mut bytes = header_only(Cmd::Keepalive as u16, 5, 0).to_vec();
    bytes[0] = b'G';
    bytes[1] = b'E';
    raw.send_raw(&bytes).await.unwrap();
    // The header cannot be trusted, so the ERROR carries seq_id 0.
    expect_error_then_close(&mut raw, ErrorCode::BadMagic, 0).await;
    server.assert_others_unaffected().await;
    server.stop().await;
}

#[tokio::test]
async fn oversized_body_len_is_refused_before_the_body_arrives() {
    let server = TestServer::start().await;
    let mut raw = RawClient::connect(server.gate_addr()).await.unwrap();
    // Announce 4 GiB - 1 and send nothing more: the answer must not wait for the body.
    raw.send_raw(&header_only(Cmd::C2c as u16, 77, u32::MAX))
        .await
        .unwrap();
    expect_error_then_close(&mut raw, ErrorCode::BodyTooLarge, 77).await;
    server.assert_others_unaffected().await;
    server.stop().await;
}

#[tokio::test]
async fn a_frame_before_login_is_refused() {
    let server = TestServer::start().await;
    let mut raw = RawClient::connect(server.gate_addr()).await.unwrap();
    let body = wire::OfflinePullRequest {
        cursor: 0,
        page_size: 0,
    };
    raw.send(Frame::request(Cmd::OfflinePull, 9, 0, &body))
        .await
        .unwrap();
    expect_error_then_close(&mut raw, ErrorCode::NotLoggedIn, 9).await;
    // KEEPALIVE is allowed before LOGIN.
    let mut raw = RawClient::connect(server.gate_addr()).await.unwrap();
    raw.send(Frame::request(
        Cmd::Keepalive,
        3,
        0,
        &wire::KeepaliveRequest::default(),
    ))
    .await
    .unwrap();
    let pong = raw.recv().await.unwrap();
    assert!(is_response(&pong, Cmd::Keepalive));
    assert_eq!(pong.header.seq_id, 3);
    server.assert_others_unaffected().await;
    server.stop().await;
}

#[tokio::test]
async fn garbage_bodies_and_bad_types_are_refused() {
    let server = TestServer::start().await;
    // A LOGIN whose body is not protobuf.
    let mut raw = RawClient::connect(server.gate_addr()).await.unwrap();
    let mut frame = Frame::request(Cmd::Login, 4, 0, &wire::LogoutRequest {});
    frame.body = bytes::Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    raw.send(frame).await.unwrap();
    expect_error_then_close(&mut raw, ErrorCode::BadBody, 4).await;
    // A push-type frame from a client.
    let mut raw = RawClient::connect(server.gate_addr()).await.unwrap();
    let frame = Frame::new(
        Cmd::Keepalive,
        FrameType::Push,
        6,
        0,
        &wire::KeepaliveRequest::default(),
    );
    raw.send(frame).await.unwrap();
    expect_error_then_close(&mut raw, ErrorCode::BadFrameType, 6).await;
    // An unknown cmd after login: an error, and the connection stays open.
    let mut raw = RawClient::connect(server.gate_addr()).await.unwrap();
    let answer = raw
        .login(129, &server.token(129, "yan"), "d")
        .await
        .unwrap();
    assert!(is_response(&answer, Cmd::Login));
    let mut frame = Frame::request(Cmd::Keepalive, 8, 0, &wire::KeepaliveRequest::default());
    frame.header.cmd = 4242;
    raw.send(frame).await.unwrap();
    assert_eq!(
        error_of(&raw.recv().await.unwrap()).unwrap(),
        (ErrorCode::UnknownCmd, 8)
    );
    raw.send(Frame::request(
        Cmd::Keepalive,
        10,
        0,
        &wire::KeepaliveRequest::default(),
    ))
    .await
    .unwrap();
    assert!(is_response(&raw.recv().await.unwrap(), Cmd::Keepalive));
    server.assert_others_unaffected().await;
    server.stop().await;
}

#[tokio::test]
async fn a_connection_that_never_logs_in_is_closed_after_the_login_timeout() {
    let server = TestServer::start_with(|config| config.gate.login_timeout_secs = 1).await;
    let mut raw = RawClient::connect(server.gate_addr()).await.unwrap();
    let frames = raw.until_closed().await.expect("closed by the server");
    let last = frames.last().expect("an ERROR before the close");
    assert_eq!(error_of(last).unwrap().0, ErrorCode::LoginTimeout);
    server.assert_others_unaffected().await;
    server.stop().await;
}

#[tokio::test]
async fn a_silent_logged_in_connection_is_closed_after_the_idle_timeout() {
    let server = TestServer::start_with(|config| {
        config.gate.keepalive_interval_secs = 1;
        config.gate.idle_timeout_secs = 2;
    })
    .await;
    let mut raw = RawClient::connect(server.gate_addr()).await.unwrap();
    let answer = raw
        .login(129, &server.token(129, "quiet"), "d")
        .await
        .unwrap();
    assert!(is_response(&answer, Cmd::Login));
    let keepalive = answer
        .decode_body::<wire::LoginResponse>()
        .unwrap()
        .keepalive_interval_secs;
    assert_eq!(
        keepalive, 1,
        "the login response tells the client how often to ping"
    );
    let frames = raw.until_closed().await.expect("closed by the server");
    let last = frames.last().expect("an ERROR before the close");
    assert_eq!(error_of(last).unwrap().0, ErrorCode::IdleTimeout);
    server.assert_others_unaffected().await;
    server.stop().await;
}

#[tokio::test]
async fn acking_someone_elses_msgid_is_refused_and_changes_nothing() {
    let server = TestServer::start().await;
    let (alice, _a) = server.client(129, "alice", "d").await;
    let receipt = alice
        .c2c(UserRef::new(129, "bob"), Content::text("for bob only"))
        .await
        .unwrap();
    let (mallory, _m) = server.client(129, "mallory", "d").await;
    let err = mallory.ack(&[receipt.msgid]).await.unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::NotFound));
    // Mallory's pull never returns bob's message.
    assert!(mallory.pull_all_offline().await.unwrap().is_empty());
    // Bob still has it.
    let (bob, _b) = server.client_without_auto_ack(129, "bob", "d").await;
    let pulled = bob.pull_all_offline().await.unwrap();
    assert_eq!(
        pulled.iter().map(|m| m.msgid).collect::<Vec<_>>(),
        vec![receipt.msgid]
    );
    server.stop().await;
}
