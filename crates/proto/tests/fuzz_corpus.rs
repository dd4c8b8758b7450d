//! The checked-in seed corpus of the fuzz targets (`crates/proto/fuzz/corpus/<target>/`),
//! generated here so that it stays valid as the protocol grows: valid frames of every cmd and
//! type, a few malformed ones, and every protobuf body with its fields set.
//!
//! The test fails when a seed is missing or differs; run
//! `LONGLINK_BLESS=1 cargo test -p longlink-proto --test fuzz_corpus` to (re)write them. Files
//! the generator does not know (e.g. a crash input kept as a regression seed) are left alone.

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use longlink_proto::{Cmd, Compression, Frame, FrameType, HEADER_LEN, Header, wire};
use prost::Message;

/// One seed: target, file name, bytes.
type Seed = (&'static str, String, Vec<u8>);

fn user(appcode: u32, uid: &str) -> Option<wire::UserRef> {
    Some(wire::UserRef {
        appcode,
        uid: uid.to_owned(),
    })
}

fn msg(msgid: u64) -> wire::Msg {
    wire::Msg {
        msgid,
        from: user(129, "alice"),
        to: user(130, "bob"),
        msgtype: 7,
        content_type: wire::ContentType::Text as i32,
        content: Bytes::from_static(b"hi bob"),
        senddate_ms: 1_795_452_517_778,
        client_msg_id: "c-0001".to_owned(),
        from_device: "phone".to_owned(),
        log_id: 123_456_789,
        kind: wire::MsgKind::C2c as i32,
        prev_msgid: msgid - 1,
        delivered: false,
    }
}

const TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImFwcGNvZGUiOjEyOSwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjE3OTUwMDAwMDB9.i4cLAfMB_yDjAUzShoCoo4UmLr5mZrq5H_uBu14rSlg";

/// Every body of the protocol in the selector order of `fuzz_targets/bodies.rs`: the type's
/// name (as written there) and a value with its fields set.
fn bodies() -> Vec<(&'static str, Vec<u8>)> {
    let msgid = 1_882_668_419_281_584_128;
    vec![
        (
            "LoginRequest",
            wire::LoginRequest {
                token: TOKEN.to_owned(),
                appcode: 129,
                device_id: "phone".to_owned(),
                resume_capable: true,
                compression: vec!["zstd".to_owned(), "lz4".to_owned()],
                client_version: "demo/1.0".to_owned(),
                device_class: "phone".to_owned(),
                prior_epoch: 42,
            }
            .encode_to_vec(),
        ),
        ("LogoutRequest", wire::LogoutRequest {}.encode_to_vec()),
        (
            "KeepaliveRequest",
            wire::KeepaliveRequest {
                client_time_ms: 1_795_452_517_777,
            }
            .encode_to_vec(),
        ),
        (
            "ResumeRequest",
            wire::ResumeRequest {
                resume_token: TOKEN.to_owned(),
                last_msgid: msgid,
                acked_msgids: vec![msgid - 2, msgid - 1],
                compression: Vec::new(),
            }
            .encode_to_vec(),
        ),
        (
            "C2sRequest",
            wire::C2sRequest {
                msgtype: 1,
                payload: Bytes::from_static(b"31.2,121.5"),
                client_msg_id: "gps-1".to_owned(),
            }
            .encode_to_vec(),
        ),
        (
            "C2cRequest",
            wire::C2cRequest {
                to: user(130, "bob"),
                client_msg_id: "c-0001".to_owned(),
                content_type: wire::ContentType::Text as i32,
                msgtype: 3,
                content: Bytes::from_static(b"hi bob"),
            }
            .encode_to_vec(),
        ),
        (
            "MsgAck",
            wire::MsgAck {
                msgids: vec![msgid, msgid + 1, u64::MAX],
            }
            .encode_to_vec(),
        ),
        (
            "OfflinePullRequest",
            wire::OfflinePullRequest {
                cursor: msgid,
                page_size: 100,
            }
            .encode_to_vec(),
        ),
        (
            "HistoryPullRequest",
            wire::HistoryPullRequest {
                with: user(130, "bob"),
                cursor: msgid,
                direction: wire::HistoryDirection::Older as i32,
                page_size: 50,
            }
            .encode_to_vec(),
        ),
        (
            "LoginResponse",
            wire::LoginResponse {
                session_id: 1_882_668_416_456_720_385,
                resume_token: TOKEN.to_owned(),
                server_time_ms: 1_795_452_517_777,
                keepalive_interval_secs: 30,
                compression: String::new(),
                uid: "alice".to_owned(),
                epoch: 7,
                hold_secs: 30,
                reconnect_min_ms: 100,
                reconnect_max_ms: 5000,
                gates: vec!["127.0.0.1:7701".to_owned()],
            }
            .encode_to_vec(),
        ),
        ("LogoutResponse", wire::LogoutResponse {}.encode_to_vec()),
        (
            "KeepaliveResponse",
            wire::KeepaliveResponse {
                server_time_ms: 1_795_452_517_777,
            }
            .encode_to_vec(),
        ),
        (
            "ResumeResponse",
            wire::ResumeResponse {
                session_id: 9,
                gap_free: true,
                messages: vec![msg(msgid)],
                resume_token: TOKEN.to_owned(),
                epoch: 7,
                keepalive_interval_secs: 30,
                hold_secs: 30,
                server_time_ms: 1_795_452_517_777,
                uid: "alice".to_owned(),
                compression: String::new(),
            }
            .encode_to_vec(),
        ),
        (
            "Kick",
            wire::Kick {
                reason: wire::KickReason::Reconnect as i32,
                message: "draining".to_owned(),
                reconnect_to: "127.0.0.1:7701".to_owned(),
                backoff_ms: 200,
                by_device_id: "pad".to_owned(),
            }
            .encode_to_vec(),
        ),
        (
            "C2sResponse",
            wire::C2sResponse {
                topic: "c2s.130.1".to_owned(),
            }
            .encode_to_vec(),
        ),
        (
            "C2cResponse",
            wire::C2cResponse {
                msgid,
                senddate_ms: 1_795_452_517_778,
                duplicate: true,
            }
            .encode_to_vec(),
        ),
        ("Msg", msg(msgid).encode_to_vec()),
        (
            "MsgAckResponse",
            wire::MsgAckResponse { acked: 3 }.encode_to_vec(),
        ),
        (
            "OfflinePullResponse",
            wire::OfflinePullResponse {
                messages: vec![msg(msgid), msg(msgid + 1)],
                next_cursor: msgid + 1,
                more: true,
            }
            .encode_to_vec(),
        ),
        (
            "HistoryPullResponse",
            wire::HistoryPullResponse {
                messages: vec![msg(msgid + 1), msg(msgid)],
                next_cursor: msgid,
                more: false,
            }
            .encode_to_vec(),
        ),
        (
            "Receipt",
            wire::Receipt {
                kind: wire::ReceiptKind::Delivered as i32,
                by: user(130, "bob"),
                by_device: "bob-phone".to_owned(),
                msgids: vec![msgid, msgid + 1],
                read_upto: 0,
            }
            .encode_to_vec(),
        ),
        (
            "ConversationsRequest",
            wire::ConversationsRequest {
                limit: 20,
                before_msgid: msgid,
            }
            .encode_to_vec(),
        ),
        (
            "ConversationsResponse",
            wire::ConversationsResponse {
                conversations: vec![wire::Conversation {
                    with: user(130, "bob"),
                    last: Some(msg(msgid)),
                    unread: 3,
                    read_upto: msgid - 7,
                    peer_read_upto: msgid - 2,
                }],
                more: true,
            }
            .encode_to_vec(),
        ),
        (
            "MarkReadRequest",
            wire::MarkReadRequest {
                with: user(130, "bob"),
                msgid,
            }
            .encode_to_vec(),
        ),
        (
            "MarkReadResponse",
            wire::MarkReadResponse {
                read_upto: msgid,
                unread: 0,
            }
            .encode_to_vec(),
        ),
        (
            "Error",
            wire::Error {
                code: wire::ErrorCode::NotFound as i32,
                message: "no such message for you: [42]".to_owned(),
                retry_after_ms: 250,
            }
            .encode_to_vec(),
        ),
    ]
}

/// The frame a sender of `cmd` would send with `body`: a request (type 3 for MSG_ACK) when
/// `index` names a client body, else a response (a push for MSG and KICK).
fn frame_of(index: usize, body: &[u8]) -> (Cmd, Frame) {
    const CMDS: [Cmd; 9] = [
        Cmd::Login,
        Cmd::Logout,
        Cmd::Keepalive,
        Cmd::Resume,
        Cmd::C2s,
        Cmd::C2c,
        Cmd::MsgAck,
        Cmd::OfflinePull,
        Cmd::HistoryPull,
    ];
    let (cmd, frame_type) = match index {
        0..=8 if CMDS[index] == Cmd::MsgAck => (Cmd::MsgAck, FrameType::Ack),
        0..=8 => (CMDS[index], FrameType::Request),
        9 => (Cmd::Login, FrameType::Response),
        10 => (Cmd::Logout, FrameType::Response),
        11 => (Cmd::Keepalive, FrameType::Response),
        12 => (Cmd::Resume, FrameType::Response),
        13 => (Cmd::Kick, FrameType::Push),
        14 => (Cmd::C2s, FrameType::Response),
        15 => (Cmd::C2c, FrameType::Response),
        16 => (Cmd::Msg, FrameType::Push),
        17 => (Cmd::MsgAck, FrameType::Response),
        18 => (Cmd::OfflinePull, FrameType::Response),
        19 => (Cmd::HistoryPull, FrameType::Response),
        20 => (Cmd::Receipt, FrameType::Push),
        21 => (Cmd::Conversations, FrameType::Request),
        22 => (Cmd::Conversations, FrameType::Response),
        23 => (Cmd::MarkRead, FrameType::Request),
        24 => (Cmd::MarkRead, FrameType::Response),
        _ => (Cmd::Error, FrameType::Response),
    };
    let seq_id = if frame_type == FrameType::Push {
        0
    } else {
        index as u32 + 1
    };
    let frame = Frame {
        header: Header {
            flags: 0,
            log_id: 123_456_789,
            seq_id,
            cmd: cmd as u16,
            frame_type,
            body_len: body.len() as u32,
        },
        body: Bytes::copy_from_slice(body),
    };
    (cmd, frame)
}

fn seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let bodies = bodies();
    let mut stream = BytesMut::new();
    for (index, (name, body)) in bodies.iter().enumerate() {
        // bodies: the selector byte, then the body.
        let mut input = vec![index as u8];
        input.extend_from_slice(body);
        seeds.push(("bodies", format!("{index:02}-{name}"), input));
        // decode_raw: the whole frame carrying it.
        let (cmd, frame) = frame_of(index, body);
        let kind = match frame.header.frame_type {
            FrameType::Request | FrameType::Ack => "request",
            FrameType::Response => "response",
            FrameType::Push => "push",
        };
        let bytes = frame.to_bytes().to_vec();
        if index < 9 {
            stream.extend_from_slice(&bytes);
        }
        seeds.push((
            "decode_raw",
            format!("{}-{kind}", cmd.name().to_lowercase()),
            bytes,
        ));
    }
    // decode_raw: a pipelined session, and the malformed shapes the gate answers.
    seeds.push((
        "decode_raw",
        "session-pipelined".to_owned(),
        stream.to_vec(),
    ));
    let login = frame_of(0, &bodies[0].1).1.to_bytes().to_vec();
    let mut bad = |name: &str, edit: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = login.clone();
        edit(&mut bytes);
        seeds.push(("decode_raw", format!("bad-{name}"), bytes));
    };
    bad("magic", &|b| b[0] = b'G');
    bad("version", &|b| b[2] = 2);
    bad("flags", &|b| b[3] = 1);
    bad("type", &|b| b[18] = 4);
    bad("body-len-too-large", &|b| {
        b[20..24].copy_from_slice(&(64 * 1024 + 1_u32).to_be_bytes());
    });
    bad("truncated-header", &|b| b.truncate(HEADER_LEN - 1));
    bad("truncated-body", &|b| b.truncate(b.len() - 1));
    bad("unknown-cmd", &|b| {
        b[16..18].copy_from_slice(&999_u16.to_be_bytes())
    });
    bad("body-garbage", &|b| {
        for byte in &mut b[HEADER_LEN..] {
            *byte = 0xff;
        }
    });
    bad("garbage-after-frame", &|b| {
        b.extend_from_slice(b"GET / HTTP/1.1\r\n")
    });

    // roundtrip: [flags][log_id 8][seq_id 4][cmd 2][type][cut][cut][body].
    let mut roundtrip = |name: &str, flags: u8, cmd: u16, frame_type: u8, cuts: [u8; 2], body| {
        let mut input = vec![flags];
        input.extend_from_slice(&123_456_789_u64.to_be_bytes());
        input.extend_from_slice(&7_u32.to_be_bytes());
        input.extend_from_slice(&cmd.to_be_bytes());
        input.push(frame_type);
        input.extend_from_slice(&cuts);
        input.extend_from_slice(body);
        seeds.push(("roundtrip", name.to_owned(), input));
    };
    roundtrip("empty-keepalive", 0, 3, 0, [0, 255], &[]);
    roundtrip("login", 0, 1, 0, [10, 200], &bodies[0].1);
    roundtrip("c2c-split-in-header", 0, 17, 0, [3, 20], &bodies[5].1);
    roundtrip("msg-ack-type3", 0, 19, 3, [128, 129], &bodies[6].1);
    roundtrip("msg-push", 0, 18, 2, [100, 101], &bodies[16].1);
    roundtrip("error-response", 0, 255, 1, [0, 0], &bodies[25].1);
    roundtrip(
        "compressed-flag-unknown-cmd",
        1,
        999,
        0,
        [60, 61],
        b"\x28\xb5\x2f\xfd",
    );

    // decompress: [mode][cap as u16 in units of 2 bytes][data]; mode bit 0 = lz4, bit 1 =
    // compress the data first. Compressed bodies of a real message and of a bomb (64 KiB of
    // zeros) under a cap that fits and one that does not, plus plain data for the round trip.
    let message = msg(1_882_668_419_281_584_128).encode_to_vec();
    let bomb = vec![0u8; 64 * 1024];
    for (algorithm, bit) in [(Compression::Zstd, 0u8), (Compression::Lz4, 1)] {
        let name = algorithm.name();
        for (what, data) in [("msg", &message), ("bomb", &bomb)] {
            let packed = algorithm.compress(data).expect("compresses");
            for (fit, cap) in [("fits", data.len()), ("over-cap", data.len() / 4)] {
                let units = u16::try_from(cap.div_ceil(2)).unwrap_or(u16::MAX);
                let mut input = vec![bit];
                input.extend_from_slice(&units.to_be_bytes());
                input.extend_from_slice(&packed);
                seeds.push(("decompress", format!("{name}-{what}-{fit}"), input));
            }
        }
        let mut input = vec![bit | 2, 0, 0];
        input.extend_from_slice(&message);
        seeds.push(("decompress", format!("{name}-round-trip-msg"), input));
    }
    seeds
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

#[test]
fn checked_in_corpus_is_current() {
    let dir = corpus_dir();
    let bless = std::env::var_os("LONGLINK_BLESS").is_some();
    let mut stale = Vec::new();
    for (target, name, bytes) in seeds() {
        let path = dir.join(target).join(&name);
        if bless {
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("corpus dir");
            std::fs::write(&path, &bytes).expect("write seed");
        } else if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            stale.push(format!("{target}/{name}"));
        }
    }
    assert!(
        stale.is_empty(),
        "fuzz seeds missing or stale: {stale:?}; run LONGLINK_BLESS=1 cargo test -p longlink-proto --test fuzz_corpus"
    );
}

#[test]
fn the_bodies_target_lists_the_same_selectors() {
    // The fuzz crate is not a workspace member, so its table cannot be imported: read it.
    let source = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets/bodies.rs"),
    )
    .expect("bodies.rs");
    let bodies = bodies();
    for (index, (name, _)) in bodies.iter().enumerate() {
        let arm = if index + 1 == bodies.len() {
            format!("_ => check::<wire::{name}>")
        } else {
            format!("{index} => check::<wire::{name}>")
        };
        assert!(source.contains(&arm), "bodies.rs lacks `{arm}`");
    }
    assert!(source.contains(&format!("selector % {}", bodies.len())));
}

#[test]
fn every_seed_frame_decodes_as_its_cmd_says() {
    // The valid seeds are what they claim: the codec takes them and the body decodes.
    use tokio_util::codec::Decoder;
    for (target, name, bytes) in seeds() {
        if target != "decode_raw" || name.starts_with("bad-") {
            continue;
        }
        let mut codec = longlink_proto::FrameCodec::default();
        let mut buf = BytesMut::from(&bytes[..]);
        let mut frames = 0;
        while let Some(frame) = codec.decode(&mut buf).expect("a valid seed") {
            frames += 1;
            assert!(frame.cmd().is_some(), "{name}");
        }
        assert!(buf.is_empty() && frames > 0, "{name}");
    }
}
