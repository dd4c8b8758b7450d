//! Property tests of the frame codec: round trips, arbitrary input, split points, body limit.

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
        let _ = wire::LoginRequest::decode(&bytes[..]);
        let _ = wire::C2cRequest::decode(&bytes[..]);
        let _ = wire::Msg::decode(&bytes[..]);
        let _ = wire::MsgAck::decode(&bytes[..]);
        let _ = wire::OfflinePullRequest::decode(&bytes[..]);
        let _ = wire::HistoryPullRequest::decode(&bytes[..]);
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
