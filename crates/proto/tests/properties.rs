//! Property tests of the frame codec: round trips (frames and every request body), arbitrary
//! input (never a panic; need-more and errors consume nothing), split points (valid and mangled
//! streams decode alike whole or in chunks), body limit.

use bytes::{Bytes, BytesMut};
use longlink_proto::{
    CodecError, DecodeError, Frame, FrameCodec, FrameType, HEADER_LEN, Header, wire,
};
use proptest::prelude::*;
use prost::Message;
use tokio_util::codec::{Decoder, Encoder};

fn frame_type() -> impl Strategy<Value = FrameType> {
    prop_oneof![
        Just(FrameType::Request),
        Just(FrameType::Response),
        Just(FrameType::Push),
        Just(FrameType::Ack),
    ]
}

prop_compose! {
    fn any_frame()(flags in any::<u8>(), log_id in any::<u64>(), seq_id in any::<u32>(),
                   cmd in any::<u16>(), frame_type in frame_type(),
                   body in proptest::collection::vec(any::<u8>(), 0..2048)) -> Frame {
        Frame {
            header: Header { flags, log_id, seq_id, cmd, frame_type, body_len: body.len() as u32 },
            body: Bytes::from(body),
        }
    }
}

fn decode_all(codec: &mut FrameCodec, buf: &mut BytesMut) -> Result<Vec<Frame>, String> {
    let mut frames = Vec::new();
    loop {
        match codec.decode(buf) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return Ok(frames),
            Err(err) => return Err(err.to_string()),
        }
    }
}

proptest! {
    #[test]
    fn encode_then_decode_round_trips(frames in proptest::collection::vec(any_frame(), 1..8)) {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        for frame in &frames {
            codec.encode(frame, &mut buf).unwrap();
        }
        let decoded = decode_all(&mut codec, &mut buf).unwrap();
        prop_assert_eq!(decoded, frames);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn any_bytes_decode_to_frames_or_a_typed_error(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&bytes[..]);
        // Never panics; either frames, "need more", or a typed error.
        let _ = decode_all(&mut codec, &mut buf);
    }

    #[test]
    fn arbitrary_bodies_never_panic_the_message_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        // Every body a client sends (the gate decodes these)…
        let _ = wire::LoginRequest::decode(&bytes[..]);
        let _ = wire::LogoutRequest::decode(&bytes[..]);
        let _ = wire::KeepaliveRequest::decode(&bytes[..]);
        let _ = wire::ResumeRequest::decode(&bytes[..]);
        let _ = wire::C2sRequest::decode(&bytes[..]);
        let _ = wire::C2cRequest::decode(&bytes[..]);
        let _ = wire::MsgAck::decode(&bytes[..]);
        let _ = wire::OfflinePullRequest::decode(&bytes[..]);
        let _ = wire::HistoryPullRequest::decode(&bytes[..]);
        // …and every body a server sends (the SDK decodes these).
        let _ = wire::LoginResponse::decode(&bytes[..]);
        let _ = wire::ResumeResponse::decode(&bytes[..]);
        let _ = wire::Kick::decode(&bytes[..]);
        let _ = wire::C2sResponse::decode(&bytes[..]);
        let _ = wire::C2cResponse::decode(&bytes[..]);
        let _ = wire::Msg::decode(&bytes[..]);
        let _ = wire::MsgAckResponse::decode(&bytes[..]);
        let _ = wire::OfflinePullResponse::decode(&bytes[..]);
        let _ = wire::HistoryPullResponse::decode(&bytes[..]);
        let _ = wire::Error::decode(&bytes[..]);
    }

    #[test]
    fn need_more_and_errors_consume_nothing(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        // The gate relies on it: "need more" keeps the partial frame, an error leaves the
        // buffer for nobody (it answers and closes), a frame takes exactly header + body.
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&bytes[..]);
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    prop_assert_eq!(frame.body.len(), frame.header.body_len as usize);
                    prop_assert_eq!(before - buf.len(), HEADER_LEN + frame.body.len());
                }
                Ok(None) => {
                    prop_assert_eq!(buf.len(), before);
                    break;
                }
                Err(_) => {
                    prop_assert_eq!(buf.len(), before);
                    break;
                }
            }
        }
    }

    #[test]
    fn mangled_streams_decode_alike_whole_or_in_chunks(
        frames in proptest::collection::vec(any_frame(), 1..5),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        // Valid frames with a few bytes overwritten (often in a header: bad magic, a huge
        // body_len…): fed whole or in arbitrary chunks, the decoder yields the same frames and
        // then the same outcome (an error, or waiting for more).
        let mut codec = FrameCodec::new(4096);
        let mut whole = BytesMut::new();
        for frame in &frames {
            codec.encode(frame, &mut whole).unwrap();
        }
        for (at, value) in &flips {
            let i = at.index(whole.len());
            whole[i] = *value;
        }
        let mut once = whole.clone();
        let expected = decode_all(&mut codec, &mut once);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(whole.len() + 1)).collect();
        points.sort_unstable();
        points.push(whole.len());
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut start = 0;
        let mut outcome = Ok(());
        'chunks: for end in points {
            buf.extend_from_slice(&whole[start..end]);
            start = end;
            // Frame by frame: frames decoded before an error in the same chunk count too.
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => got.push(frame),
                    Ok(None) => break,
                    Err(err) => {
                        outcome = Err(err.to_string());
                        break 'chunks;
                    }
                }
            }
        }
        match expected {
            Ok(frames) => {
                prop_assert_eq!(outcome, Ok(()));
                prop_assert_eq!(got, frames);
            }
            Err(err) => {
                // The whole buffer errs after some frames; the chunks reach the same frames
                // and the same error.
                let mut prefix = whole.clone();
                let mut before = Vec::new();
                while let Ok(Some(frame)) = codec.decode(&mut prefix) {
                    before.push(frame);
                }
                prop_assert_eq!(got, before);
                prop_assert_eq!(outcome, Err(err));
            }
        }
    }

    #[test]
    fn typed_requests_survive_frame_and_body_round_trips(
        seq_id in any::<u32>(), log_id in any::<u64>(),
        uid in ".{0,40}", device in ".{0,20}", token in "[A-Za-z0-9._-]{0,200}",
        appcode in any::<u32>(), msgids in proptest::collection::vec(any::<u64>(), 0..50),
        content in proptest::collection::vec(any::<u8>(), 0..1024),
        cursor in any::<u64>(), page_size in any::<u32>(), direction in 0i32..2,
    ) {
        let to = Some(wire::UserRef { appcode, uid: uid.clone() });
        let mut codec = FrameCodec::new(u32::MAX);
        let mut buf = BytesMut::new();
        let login = wire::LoginRequest { token: token.clone(), appcode, device_id: device.clone(),
            resume_capable: true, prior_epoch: log_id, ..Default::default() };
        let resume = wire::ResumeRequest { resume_token: token, last_msgid: cursor, acked_msgids: msgids.clone(), compression: Vec::new() };
        let c2c = wire::C2cRequest { to: to.clone(), client_msg_id: device, content_type: 1,
            msgtype: seq_id, content: Bytes::from(content.clone()) };
        let c2s = wire::C2sRequest { msgtype: appcode, payload: Bytes::from(content), client_msg_id: uid };
        let ack = wire::MsgAck { msgids };
        let offline = wire::OfflinePullRequest { cursor, page_size };
        let history = wire::HistoryPullRequest { with: to, cursor, direction, page_size };
        let keepalive = wire::KeepaliveRequest { client_time_ms: log_id };
        use longlink_proto::Cmd;
        let sent = [
            Frame::request(Cmd::Login, seq_id, log_id, &login),
            Frame::request(Cmd::Resume, seq_id, log_id, &resume),
            Frame::request(Cmd::C2c, seq_id, log_id, &c2c),
            Frame::request(Cmd::C2s, seq_id, log_id, &c2s),
            Frame::request(Cmd::MsgAck, seq_id, log_id, &ack),
            Frame::request(Cmd::OfflinePull, seq_id, log_id, &offline),
            Frame::request(Cmd::HistoryPull, seq_id, log_id, &history),
            Frame::request(Cmd::Keepalive, seq_id, log_id, &keepalive),
            Frame::request(Cmd::Logout, seq_id, log_id, &wire::LogoutRequest {}),
        ];
        for frame in &sent {
            codec.encode(frame, &mut buf).unwrap();
        }
        let got = decode_all(&mut codec, &mut buf).unwrap();
        prop_assert_eq!(&got[..], &sent[..]);
        prop_assert_eq!(got[0].decode_body::<wire::LoginRequest>().unwrap(), login);
        prop_assert_eq!(got[1].decode_body::<wire::ResumeRequest>().unwrap(), resume);
        prop_assert_eq!(got[2].decode_body::<wire::C2cRequest>().unwrap(), c2c);
        prop_assert_eq!(got[3].decode_body::<wire::C2sRequest>().unwrap(), c2s);
        prop_assert_eq!(got[4].decode_body::<wire::MsgAck>().unwrap(), ack);
        prop_assert_eq!(got[5].decode_body::<wire::OfflinePullRequest>().unwrap(), offline);
        prop_assert_eq!(got[6].decode_body::<wire::HistoryPullRequest>().unwrap(), history);
        prop_assert_eq!(got[7].decode_body::<wire::KeepaliveRequest>().unwrap(), keepalive);
        prop_assert_eq!(got[8].decode_body::<wire::LogoutRequest>().unwrap(), wire::LogoutRequest {});
    }

    #[test]
    fn any_split_point_gives_the_same_frames(frames in proptest::collection::vec(any_frame(), 1..6),
                                             cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10)) {
        let mut codec = FrameCodec::default();
        let mut whole = BytesMut::new();
        for frame in &frames {
            codec.encode(frame, &mut whole).unwrap();
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(whole.len() + 1)).collect();
        points.sort_unstable();
        points.push(whole.len());
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut start = 0;
        for end in points {
            buf.extend_from_slice(&whole[start..end]);
            start = end;
            decoded.extend(decode_all(&mut codec, &mut buf).unwrap());
        }
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn body_len_above_the_limit_is_refused_before_allocating(len in 1025u32.., seq_id in any::<u32>()) {
        let header = Header { flags: 0, log_id: 0, seq_id, cmd: 17, frame_type: FrameType::Request, body_len: len };
        let mut buf = BytesMut::with_capacity(HEADER_LEN);
        buf.extend_from_slice(&header.encode());
        let capacity_before = buf.capacity();
        let mut codec = FrameCodec::new(1024);
        match codec.decode(&mut buf) {
            Err(CodecError::Decode(DecodeError::BodyTooLarge { len: got, max: 1024, seq_id: s })) => {
                prop_assert_eq!(got, len);
                prop_assert_eq!(s, seq_id);
            }
            other => prop_assert!(false, "expected BodyTooLarge, got {:?}", other),
        }
        prop_assert_eq!(buf.capacity(), capacity_before);
    }
}

#[test]
fn a_short_body_reserves_only_what_is_missing() {
    let frame = Frame::request(
        longlink_proto::Cmd::Keepalive,
        1,
        2,
        &wire::KeepaliveRequest { client_time_ms: 5 },
    );
    let bytes = frame.to_bytes();
    let mut buf = BytesMut::from(&bytes[..HEADER_LEN]);
    let mut codec = FrameCodec::default();
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert!(buf.capacity() >= bytes.len());
    buf.extend_from_slice(&bytes[HEADER_LEN..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame));
}
