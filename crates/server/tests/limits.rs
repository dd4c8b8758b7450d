//! Per-connection limits (issue 8, item 4; docs/security.md "Limits"): each attack gets its
//! documented answer, the gate stays up, other clients are unaffected.
//!
//! Covered elsewhere, not repeated here: a connection that never logs in
//! (`protocol_errors.rs` `a_connection_that_never_logs_in_is_closed_after_the_login_timeout`),
//! an oversized `body_len` (`protocol_errors.rs`
//! `oversized_body_len_is_refused_before_the_body_arrives`), a connection flood from one IP
//! (`bans.rs` `an_ip_connecting_too_often_is_refused_at_accept_and_others_are_not`).

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt as _;
use longlink_proto::{Cmd, ErrorCode, Frame, FrameCodec, wire};
use longlink_sdk::{Content, UserRef};
use longlink_testkit::{RawClient, TestServer, error_of, is_response, wait_until};
use tokio::io::AsyncWriteExt as _;
use tokio_util::codec::FramedRead;

fn c2c(seq_id: u32, to: &str, client_msg_id: &str) -> Frame {
    Frame::request(
        Cmd::C2c,
        seq_id,
        0,
        &wire::C2cRequest {
            to: Some(wire::UserRef {
                appcode: 129,
                uid: to.to_owned(),
            }),
            client_msg_id: client_msg_id.to_owned(),
            content_type: wire::ContentType::Text as i32,
            msgtype: 0,
            content: Bytes::from(client_msg_id.to_owned()),
        },
    )
}

/// The ERROR body of `frame` (code, retry_after_ms).
fn refusal(frame: &Frame) -> (ErrorCode, u32) {
    let (code, _) = error_of(frame).expect("an ERROR frame");
    let body: wire::Error = frame.decode_body().expect("Error body");
    (code, body.retry_after_ms)
}

/// The texts of every message in `uid`'s offline inbox (device "d").
async fn inbox(server: &TestServer, uid: &str) -> Vec<String> {
    let (client, _in) = server.client_without_auto_ack(129, uid, "d").await;
    let messages = client.pull_all_offline().await.expect("pull");
    client.close().await;
    messages
        .into_iter()
        .map(|m| match m.content {
            Content::Text(text) => text,
            other => format!("{other:?}"),
        })
        .collect()
}

/// Slowloris: a header trickled in and never finished does not extend the login deadline.
#[tokio::test]
async fn a_header_that_is_never_finished_is_closed_at_the_login_deadline() {
    let server = TestServer::start_with(|config| config.gate.login_timeout_secs = 1).await;
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut raw = RawClient::connect(server.gate_addr()).await.unwrap();
        // Ten bytes of a 24-byte header, then nothing more.
        let header = longlink_testkit::header_only(Cmd::Login as u16, 1, 100);
        raw.send_raw(&header[..10]).await.unwrap();
        slow.push(raw);
    }
    server.assert_others_unaffected().await;
    for raw in &mut slow {
        let frames = raw.until_closed().await.expect("closed by the server");
        let last = frames.last().expect("an ERROR before the close");
        assert_eq!(error_of(last).unwrap().0, ErrorCode::LoginTimeout);
    }
    let gate = &server.server().gates()[0];
    assert!(gate.metrics().closes("login_timeout") >= 8);
    server.stop().await;
}

/// Garbage after a valid header: a body that is not the cmd's protobuf is BAD_BODY and
/// nothing is stored; bytes that are not a header after a valid frame are BAD_MAGIC.
#[tokio::test]
async fn garbage_after_a_valid_header_is_refused_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let mut raw = RawClient::connect(server.gate_addr()).await.unwrap();
    let answer = raw
        .login(129, &server.token(129, "garbler"), "d")
        .await
        .unwrap();
    assert!(is_response(&answer, Cmd::Login));
    let mut frame = c2c(7, "garbage-victim", "g-1");
    frame.body = Bytes::from_static(&[0xff; 32]);
    raw.send(frame).await.unwrap();
    let frames = raw.until_closed().await.unwrap();
    assert_eq!(
        error_of(frames.last().unwrap()).unwrap(),
        (ErrorCode::BadBody, 7)
    );

    // A valid C2C, then junk where the next header should be.
    let mut raw = RawClient::connect(server.gate_addr()).await.unwrap();
    let answer = raw
        .login(129, &server.token(129, "garbler"), "d")
        .await
        .unwrap();
    assert!(is_response(&answer, Cmd::Login));
    let mut bytes = c2c(8, "garbage-victim", "g-2").to_bytes().to_vec();
    bytes.extend_from_slice(&[0x5a; 40]);
    raw.send_raw(&bytes).await.unwrap();
    let frames = raw.until_closed().await.unwrap();
    assert!(
        is_response(&frames[0], Cmd::C2c),
        "the valid frame is handled"
    );
    assert_eq!(
        error_of(frames.last().unwrap()).unwrap(),
        (ErrorCode::BadMagic, 0)
    );
    assert_eq!(inbox(&server, "garbage-victim").await, vec!["g-2"]);
    server.assert_others_unaffected().await;
    server.stop().await;
}

/// A frame flood on one connection: beyond the burst each C2C gets RATE_LIMITED with a
/// retry-after and is not stored; a client that does not wait is closed (cause
/// `flooding`); other clients keep chatting.
#[tokio::test]
async fn a_frame_flood_is_refused_then_closed_while_others_chat() {
    // 1/s (negligible refill during the test), burst 5; closed after 20 refusals in a row.
    let server = TestServer::start_with(|config| {
        config.gate.send_frames_per_sec = 1;
        config.gate.send_frames_burst = 5;
        config.gate.flood_refusals = 20;
    })
    .await;
    let gate = &server.server().gates()[0];
    let mut raw = RawClient::connect(server.gate_addr()).await.unwrap();
    let answer = raw
        .login(129, &server.token(129, "flooder"), "d")
        .await
        .unwrap();
    assert!(is_response(&answer, Cmd::Login));
    // Six at once: five pass, the sixth is refused.
    for i in 1..=6 {
        raw.send(c2c(10 + i, "flood-victim", &format!("m{i}")))
            .await
            .unwrap();
    }
    for i in 1..=5 {
        let frame = raw.recv().await.unwrap();
        assert!(is_response(&frame, Cmd::C2c), "frame {i} of the burst");
    }
    let sixth = raw.recv().await.unwrap();
    assert_eq!(sixth.header.seq_id, 16);
    let (code, retry_after_ms) = refusal(&sixth);
    assert_eq!(code, ErrorCode::RateLimited);
    assert!(retry_after_ms > 0, "a refusal says when to retry");
    assert_eq!(
        gate.metrics().frames_throttled(longlink_gate::Class::Send),
        1
    );
    // The connection stays open and other classes have their own budget.
    raw.send(Frame::request(
        Cmd::Keepalive,
        50,
        0,
        &wire::KeepaliveRequest::default(),
    ))
    .await
    .unwrap();
    assert!(is_response(&raw.recv().await.unwrap(), Cmd::Keepalive));
    server.assert_others_unaffected().await;

    // Keep sending without waiting: one refusal after another until the close.
    let mut refusals = 1;
    let mut closed = false;
    for i in 0..200u32 {
        if raw
            .send(c2c(100 + i, "flood-victim", "flood"))
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        match raw.recv().await {
            Ok(frame) if frame.cmd() == Some(Cmd::Error) => {
                assert_eq!(refusal(&frame).0, ErrorCode::RateLimited);
                refusals += 1;
            }
            Ok(frame) => assert!(is_response(&frame, Cmd::C2c), "a refill let one pass"),
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "a flood is closed");
    assert!(
        refusals > 20,
        "closed after the flood_refusals-th refusal: {refusals}"
    );
    wait_until(longlink_testkit::WAIT, || async {
        gate.metrics().closes("flooding") == 1
    })
    .await
    .expect("counted as closes{reason=\"flooding\"}");
    // Nothing refused was stored: the five of the burst, plus at most a refill or two.
    let stored = inbox(&server, "flood-victim").await;
    assert!(stored.starts_with(&["m1", "m2", "m3", "m4", "m5"].map(String::from)));
    assert!(
        !stored.contains(&"m6".to_owned()),
        "the refused sixth is not stored"
    );
    server.assert_others_unaffected().await;
    server.stop().await;
}

/// The SDK honours RATE_LIMITED: its sends come back after `retry_after_ms` with the same
/// client_msg_id, so every message is stored exactly once.
#[tokio::test]
async fn the_sdk_retries_rate_limited_sends_and_stores_each_once() {
    let server = TestServer::start_with(|config| {
        config.gate.send_frames_per_sec = 5;
        config.gate.send_frames_burst = 2;
        config.gate.flood_refusals = 0;
    })
    .await;
    let (sender, _in) = server.client(129, "eager", "d").await;
    let sends = (0..8).map(|i| {
        let sender = sender.clone();
        async move {
            sender
                .c2c_with_id(
                    UserRef::new(129, "patient"),
                    &format!("sdk-{i}"),
                    Content::text(format!("sdk-{i}")),
                )
                .await
        }
    });
    for receipt in futures::future::join_all(sends).await {
        assert!(receipt.expect("retried until stored").msgid > 0);
    }
    let gate = &server.server().gates()[0];
    assert!(gate.metrics().frames_throttled(longlink_gate::Class::Send) > 0);
    let mut stored = inbox(&server, "patient").await;
    stored.sort();
    assert_eq!(
        stored,
        (0..8).map(|i| format!("sdk-{i}")).collect::<Vec<_>>()
    );
    sender.close().await;
    server.stop().await;
}

/// A byte flood: a client writing a huge stream of valid-looking frames is read at the
/// configured bytes/s (the rest waits in TCP buffers); the server's memory does not balloon
/// and other clients keep chatting.
#[tokio::test]
async fn a_byte_flood_is_throttled_without_growing_memory() {
    const FLOOD_BYTES: usize = 256 << 20;
    let server = TestServer::start_with(|config| {
        config.gate.read_bytes_per_sec = 64 * 1024;
        config.gate.read_bytes_burst = 64 * 1024;
    })
    .await;
    let gate = &server.server().gates()[0];
    server.assert_others_unaffected().await;
    let rss_before = longlink_testkit::vm_rss_bytes() / 1024;

    let stream = tokio::net::TcpStream::connect(server.gate_addr())
        .await
        .unwrap();
    let (read, mut write) = stream.into_split();
    let login = wire::LoginRequest {
        token: server.token(129, "byte-flooder"),
        appcode: 129,
        device_id: "d".to_owned(),
        ..Default::default()
    };
    write
        .write_all(&Frame::request(Cmd::Login, 1, 0, &login).to_bytes())
        .await
        .unwrap();
    let mut answers = FramedRead::new(read, FrameCodec::new(u32::MAX));
    let first = tokio::time::timeout(longlink_testkit::WAIT, answers.next())
        .await
        .expect("login answered")
        .expect("open")
        .expect("a frame");
    assert!(is_response(&first, Cmd::Login));
    // Read (and drop) the pongs, so the flooder is not closed as a slow consumer.
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = answers.next().await {} });
    // KEEPALIVEs padded to 60 KB with an unknown protobuf field (valid: decoders skip it).
    let mut body = BytesMut::new();
    let pad = 60_000usize;
    body.put_u8((15 << 3) | 2);
    let mut len = pad;
    while len >= 0x80 {
        body.put_u8((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    body.put_u8(len as u8);
    body.put_bytes(0, pad);
    let mut frame = Frame::request(Cmd::Keepalive, 2, 0, &wire::KeepaliveRequest::default());
    frame.body = body.freeze();
    let frame = frame.to_bytes();
    let writer = tokio::spawn(async move {
        let mut sent = 0usize;
        while sent < FLOOD_BYTES {
            if write.write_all(&frame).await.is_err() {
                break;
            }
            sent += frame.len();
        }
        sent
    });

    // The reader is paused again and again, and the flood keeps being served slowly.
    wait_until(longlink_testkit::WAIT, || async {
        gate.metrics().read_pauses.get() >= 3 && gate.metrics().frames_in.get(Cmd::Keepalive) >= 4
    })
    .await
    .expect("the flooding connection is throttled, not closed");
    server.assert_others_unaffected().await;
    let rss_after = longlink_testkit::vm_rss_bytes() / 1024;
    let read_bytes = gate.metrics().bytes_in.get(Cmd::Keepalive);
    assert!(
        !writer.is_finished(),
        "the flood is held back by TCP backpressure"
    );
    assert!(
        read_bytes < FLOOD_BYTES as u64 / 4,
        "the gate read {read_bytes} bytes of the flood"
    );
    let grown = rss_after.saturating_sub(rss_before);
    eprintln!(
        "byte flood: the gate read {read_bytes} B, paused {} times; RSS {rss_before} → {rss_after} KiB",
        gate.metrics().read_pauses.get()
    );
    assert!(
        grown < 48 * 1024,
        "RSS grew by {grown} KiB during the byte flood"
    );
    assert_eq!(gate.metrics().closes("flooding"), 0);
    writer.abort();
    reader.abort();
    server.stop().await;
}
