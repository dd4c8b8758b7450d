//! Frame compression (issue 8 item 3, docs/protocol.md §2.2): agreed at LOGIN, per frame above
//! the threshold, both ways; a decompression bomb is refused without inflating, and a flag
//! nobody agreed on is BAD_FLAGS. Real server, raw frames and the SDK.

use longlink_proto::compress::{deflate, inflate};
use longlink_proto::{Cmd, Compression, ErrorCode, FLAG_COMPRESSED, Frame, FrameType, wire};
use longlink_sdk::{Content, Event, Incoming, Message, UserRef};
use longlink_testkit::{RawClient, TestServer, WAIT, error_of};

/// The tests of this file run one at a time: the bomb test measures the resident memory of
/// the whole test process, which servers started by tests running alongside would inflate.
static SERIAL: std::sync::LazyLock<tokio::sync::Mutex<()>> =
    std::sync::LazyLock::new(|| tokio::sync::Mutex::new(()));

/// A 1–4 KB JSON-ish chat payload, as the measurements in docs/security.md use.
fn json_message(n: usize) -> String {
    let mut out = String::from("{\"items\":[");
    let mut i = 0;
    while out.len() < n {
        out.push_str(&format!(
            "{{\"id\":{i},\"sku\":\"SKU-{:05}\",\"name\":\"item number {i}\",\"qty\":{},\"price\":\"{}.99\"}},",
            i * 37 % 10_000,
            i % 7 + 1,
            i % 50 + 1
        ));
        i += 1;
    }
    out.push_str("{}]}");
    out
}

/// Logs a raw client in, offering `offer`; returns it and the LOGIN answer.
async fn raw_login(
    server: &TestServer,
    uid: &str,
    offer: &[&str],
) -> (RawClient, wire::LoginResponse) {
    let mut raw = RawClient::connect(server.gate_addr()).await.unwrap();
    let request = wire::LoginRequest {
        token: server.token(129, uid),
        appcode: 129,
        device_id: "raw".into(),
        compression: offer.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    };
    raw.send(Frame::request(Cmd::Login, 1, 0, &request))
        .await
        .unwrap();
    let answer = raw.recv().await.unwrap();
    assert_eq!(answer.cmd(), Some(Cmd::Login), "{answer:?}");
    assert_eq!(
        answer.header.flags, 0,
        "the LOGIN answer is never compressed"
    );
    let response: wire::LoginResponse = answer.decode_body().unwrap();
    (raw, response)
}

/// The next MSG push on `raw`, as it came off the wire.
async fn next_msg_frame(raw: &mut RawClient) -> Frame {
    loop {
        let frame = raw.recv().await.unwrap();
        if frame.cmd() == Some(Cmd::Msg) && frame.header.frame_type == FrameType::Push {
            return frame;
        }
    }
}

async fn next_message(incoming: &mut Incoming) -> Message {
    loop {
        match tokio::time::timeout(WAIT, incoming.next_event()).await {
            Ok(Some(Event::Message(message))) => return message,
            Ok(Some(Event::Error { .. } | Event::Receipt(_))) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// A zstd frame of `blocks` RLE blocks of 128 KiB zeros, 4 bytes each (8192 blocks: 1 GiB
/// from 32 KiB), declaring its size or not.
fn zstd_bomb(blocks: u32, declare: bool) -> Vec<u8> {
    let mut out = vec![0x28, 0xB5, 0x2F, 0xFD];
    if declare {
        out.push(0xC0);
        out.push(7 << 3);
        out.extend_from_slice(&(u64::from(blocks) * 131_072).to_le_bytes());
    } else {
        out.push(0x00);
        out.push(7 << 3);
    }
    for i in 0..blocks {
        let header = u32::from(i + 1 == blocks) | (1 << 1) | (131_072 << 3);
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.push(0);
    }
    out
}

/// A C2C frame whose body is `body` as given, flagged compressed.
fn flagged_c2c(seq_id: u32, body: Vec<u8>) -> Frame {
    let mut frame = Frame::request(Cmd::C2c, seq_id, 0, &wire::C2cRequest::default());
    frame.header.flags = FLAG_COMPRESSED;
    frame.header.body_len = body.len() as u32;
    frame.body = body.into();
    frame
}

#[tokio::test]
async fn zstd_and_lz4_are_agreed_and_large_messages_arrive_compressed() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start_with(|config| {
        config.gate.compression = vec!["zstd".into(), "lz4".into()];
    })
    .await;
    let (sender, _sender_in) = server.client(129, "sender", "d").await;
    for (offer, algorithm) in [
        (vec!["lz4", "zstd"], Compression::Zstd), // the server's preference wins
        (vec!["gzip", "lz4"], Compression::Lz4),  // unknown names are ignored
    ] {
        let uid = format!("rx-{algorithm}");
        let (mut raw, login) = raw_login(&server, &uid, &offer).await;
        assert_eq!(login.compression, algorithm.name());
        let text = json_message(3000);
        sender
            .c2c(UserRef::new(129, &uid), Content::text(text.clone()))
            .await
            .unwrap();
        let frame = next_msg_frame(&mut raw).await;
        assert_eq!(frame.header.flags, FLAG_COMPRESSED, "{algorithm}");
        let plain = inflate(frame.clone(), Some(algorithm), 64 * 1024).unwrap();
        assert!(
            frame.body.len() * 2 < plain.body.len(),
            "{algorithm}: {} bytes on the wire for {}",
            frame.body.len(),
            plain.body.len()
        );
        let msg: wire::Msg = plain.decode_body().unwrap();
        assert_eq!(msg.content, text.as_bytes());
        // Below the threshold: plain.
        sender
            .c2c(UserRef::new(129, &uid), Content::text("short"))
            .await
            .unwrap();
        let frame = next_msg_frame(&mut raw).await;
        assert_eq!(frame.header.flags, 0);
        let msg: wire::Msg = frame.decode_body().unwrap();
        assert_eq!(&msg.content[..], b"short");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_client_offering_nothing_gets_no_flagged_frames() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (sender, _sender_in) = server.client(129, "sender", "d").await;
    let (mut raw, login) = raw_login(&server, "plain-rx", &[]).await;
    assert_eq!(login.compression, "");
    let text = json_message(4000);
    sender
        .c2c(UserRef::new(129, "plain-rx"), Content::text(text.clone()))
        .await
        .unwrap();
    let frame = next_msg_frame(&mut raw).await;
    assert_eq!(frame.header.flags, 0);
    let msg: wire::Msg = frame.decode_body().unwrap();
    assert_eq!(msg.content, text.as_bytes());
    // A server configured without compression agrees on nothing.
    let off = TestServer::start_with(|config| config.gate.compression = Vec::new()).await;
    let (_raw, login) = raw_login(&off, "x", &["zstd", "lz4"]).await;
    assert_eq!(login.compression, "");
    off.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_compressed_c2c_from_a_client_is_delivered() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (_receiver, mut receiver_in) = server.client(129, "bob", "d").await;
    for algorithm in Compression::ALL {
        let uid = format!("tx-{algorithm}");
        let (mut raw, login) = raw_login(&server, &uid, &[algorithm.name()]).await;
        assert_eq!(login.compression, algorithm.name());
        let text = json_message(4000);
        let request = wire::C2cRequest {
            to: Some(wire::UserRef {
                appcode: 129,
                uid: "bob".into(),
            }),
            client_msg_id: format!("m-{algorithm}"),
            content_type: longlink_proto::ContentType::Text as i32,
            msgtype: 0,
            content: text.clone().into(),
        };
        let frame = Frame::request(Cmd::C2c, 7, 0, &request);
        let packed = deflate(&frame, algorithm, 512).expect("worth compressing");
        assert!(packed.body.len() < frame.body.len() / 2);
        raw.send(packed).await.unwrap();
        let answer = raw.recv().await.unwrap();
        assert_eq!(answer.cmd(), Some(Cmd::C2c), "{:?}", error_of(&answer));
        let got = next_message(&mut receiver_in).await;
        assert_eq!(got.content, Content::text(text));
    }
    server.stop().await;
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_and_closed_without_inflating() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (watcher, mut watcher_in) = server.client(129, "watcher", "d").await;
    let (peer, _peer_in) = server.client(129, "peer", "d").await;
    let before = longlink_testkit::vm_rss_bytes();
    // zstd declaring 1 GiB, zstd hiding its size, and an lz4 block claiming 1 GiB.
    let lz4_bomb = {
        let mut body = (1u32 << 30).to_le_bytes().to_vec();
        body.extend(std::iter::repeat_n(0u8, 1000));
        body
    };
    let cases = [
        ("zstd", zstd_bomb(8192, true)),
        ("zstd", zstd_bomb(8192, false)),
        ("lz4", lz4_bomb),
    ];
    for (i, (algorithm, bomb)) in cases.into_iter().enumerate() {
        assert!(bomb.len() < 64 * 1024, "fits one frame");
        let (mut raw, login) = raw_login(&server, &format!("bomber-{i}"), &[algorithm]).await;
        assert_eq!(login.compression, algorithm);
        raw.send(flagged_c2c(9, bomb)).await.unwrap();
        let frames = raw.until_closed().await.unwrap();
        let last = frames.last().expect("an ERROR before the close");
        assert_eq!(error_of(last).unwrap(), (ErrorCode::BodyTooLarge, 9));
        assert_eq!(last.header.flags, 0, "ERROR frames are never compressed");
    }
    // Corrupt data of the agreed algorithm: BAD_BODY, close.
    let (mut raw, _) = raw_login(&server, "garbler", &["zstd"]).await;
    raw.send(flagged_c2c(4, vec![0x55; 700])).await.unwrap();
    let frames = raw.until_closed().await.unwrap();
    assert_eq!(
        error_of(frames.last().unwrap()).unwrap(),
        (ErrorCode::BadBody, 4)
    );
    let grown = longlink_testkit::vm_rss_bytes().saturating_sub(before);
    assert!(
        grown < 64 * 1024 * 1024,
        "RSS grew by {grown} bytes while refusing 3 GiB of bombs"
    );
    // Sessions already online carry on.
    peer.c2c(
        UserRef::new(129, "watcher"),
        Content::text("after the bombs"),
    )
    .await
    .unwrap();
    assert_eq!(
        next_message(&mut watcher_in).await.content,
        Content::text("after the bombs")
    );
    server.assert_others_unaffected().await;
    watcher.close().await;
    server.stop().await;
}

#[tokio::test]
async fn a_flag_without_agreement_is_bad_flags() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    // Logged in without offering anything, then a flagged frame.
    let (mut raw, login) = raw_login(&server, "flagger", &[]).await;
    assert_eq!(login.compression, "");
    let frame = Frame::request(
        Cmd::C2c,
        5,
        0,
        &wire::C2cRequest {
            content: json_message(2000).into(),
            ..Default::default()
        },
    );
    raw.send(deflate(&frame, Compression::Zstd, 0).unwrap())
        .await
        .unwrap();
    let frames = raw.until_closed().await.unwrap();
    assert_eq!(
        error_of(frames.last().unwrap()).unwrap(),
        (ErrorCode::BadFlags, 5)
    );
    // Before LOGIN nothing is agreed either.
    let mut raw = RawClient::connect(server.gate_addr()).await.unwrap();
    let mut keepalive = Frame::request(Cmd::Keepalive, 6, 0, &wire::KeepaliveRequest::default());
    keepalive.header.flags = FLAG_COMPRESSED;
    raw.send(keepalive).await.unwrap();
    let frames = raw.until_closed().await.unwrap();
    assert_eq!(
        error_of(frames.last().unwrap()).unwrap(),
        (ErrorCode::BadFlags, 6)
    );
    // A reserved bit on a session that agreed on zstd.
    let (mut raw, _) = raw_login(&server, "reserved", &["zstd"]).await;
    let mut keepalive = Frame::request(Cmd::Keepalive, 8, 0, &wire::KeepaliveRequest::default());
    keepalive.header.flags = 0b10;
    raw.send(keepalive).await.unwrap();
    let frames = raw.until_closed().await.unwrap();
    assert_eq!(
        error_of(frames.last().unwrap()).unwrap(),
        (ErrorCode::BadFlags, 8)
    );
    server.assert_others_unaffected().await;
    server.stop().await;
}

#[tokio::test]
async fn an_sdk_with_compression_chats_with_an_sdk_without() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let mut config = server.client_config(129, "zip", "d");
    config.compression = vec![Compression::Zstd, Compression::Lz4];
    let (zip, mut zip_in) = longlink_sdk::Client::connect(config).await.unwrap();
    let (plain, mut plain_in) = server.client(129, "plain", "d").await;
    // The gate's byte counters show what crossed the wire (headers included).
    let metrics = server.server().gates()[0].metrics();
    for round in 0..3 {
        let big = json_message(1000 + 1500 * round);
        let before = metrics.bytes_in.get(Cmd::C2c);
        let msgs_before = metrics.bytes_out.get(Cmd::Msg);
        zip.c2c(UserRef::new(129, "plain"), Content::text(big.clone()))
            .await
            .unwrap();
        let sent = metrics.bytes_in.get(Cmd::C2c) - before;
        assert!(
            (sent as usize) < big.len() / 2,
            "the SDK compressed its C2C: {sent} bytes for {}",
            big.len()
        );
        assert_eq!(
            next_message(&mut plain_in).await.content,
            Content::text(big)
        );
        // The MSG to `plain` is counted by its writer after the write, maybe after `plain` read
        // it: wait for that count, so the next delta holds the MSG to `zip` alone.
        longlink_testkit::wait_until(WAIT, || async {
            metrics.bytes_out.get(Cmd::Msg) > msgs_before
        })
        .await
        .unwrap();
        let big = json_message(1200 + 1400 * round);
        let before = metrics.bytes_out.get(Cmd::Msg);
        plain
            .c2c(UserRef::new(129, "zip"), Content::text(big.clone()))
            .await
            .unwrap();
        assert_eq!(
            next_message(&mut zip_in).await.content,
            Content::text(big.clone())
        );
        // Counted by the writer right after the write: wait for it rather than race it.
        longlink_testkit::wait_until(WAIT, || async { metrics.bytes_out.get(Cmd::Msg) > before })
            .await
            .unwrap();
        let pushed = metrics.bytes_out.get(Cmd::Msg) - before;
        assert!(
            (pushed as usize) < big.len() / 2,
            "the MSG to the SDK went compressed: {pushed} bytes for {}",
            big.len()
        );
    }
    // Small messages too (below the threshold: plain frames).
    zip.c2c(UserRef::new(129, "plain"), Content::text("hi"))
        .await
        .unwrap();
    assert_eq!(
        next_message(&mut plain_in).await.content,
        Content::text("hi")
    );
    zip.close().await;
    plain.close().await;
    server.stop().await;
}

#[tokio::test]
async fn a_resumed_connection_agrees_on_compression_too() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let (sender, _sender_in) = server.client(129, "sender", "d").await;
    // A resume-capable login with zstd offered.
    let mut raw = RawClient::connect(server.gate_addr()).await.unwrap();
    let request = wire::LoginRequest {
        token: server.token(129, "resumer"),
        appcode: 129,
        device_id: "raw".into(),
        resume_capable: true,
        compression: vec!["zstd".into()],
        ..Default::default()
    };
    raw.send(Frame::request(Cmd::Login, 1, 0, &request))
        .await
        .unwrap();
    let login: wire::LoginResponse = raw.recv().await.unwrap().decode_body().unwrap();
    assert_eq!(login.compression, "zstd");
    assert!(!login.resume_token.is_empty());
    drop(raw);

    // Back with RESUME, offering zstd again: the answer names it and a large live MSG
    // arrives compressed.
    let mut raw = RawClient::connect(server.gate_addr()).await.unwrap();
    let resume = wire::ResumeRequest {
        resume_token: login.resume_token.clone(),
        compression: vec!["zstd".into()],
        ..Default::default()
    };
    raw.send(Frame::request(Cmd::Resume, 1, 0, &resume))
        .await
        .unwrap();
    // Held, or still half-open: either way the RESUME takes the session over.
    let answer = raw.recv().await.unwrap();
    assert_eq!(answer.cmd(), Some(Cmd::Resume), "{answer:?}");
    assert_eq!(
        answer.header.flags, 0,
        "the RESUME answer is never compressed"
    );
    let resumed: wire::ResumeResponse = answer.decode_body().unwrap();
    assert_eq!(resumed.compression, "zstd");
    let text = json_message(3000);
    sender
        .c2c(UserRef::new(129, "resumer"), Content::text(text.clone()))
        .await
        .unwrap();
    let frame = next_msg_frame(&mut raw).await;
    assert_eq!(frame.header.flags, FLAG_COMPRESSED);
    let plain = inflate(frame, Some(Compression::Zstd), 64 * 1024).unwrap();
    let msg: wire::Msg = plain.decode_body().unwrap();
    assert_eq!(msg.content, text.as_bytes());
    server.stop().await;
}
