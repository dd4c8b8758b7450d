//! Feeds arbitrary bytes to the streaming decoder, exactly as the gate's reader does, and
//! decodes each frame's body as the message its cmd names (both the client → server bodies the
//! gate decodes and the server → client bodies the SDK decodes).
//!
//! Checks besides "no panic": a frame's body is exactly `body_len` bytes; "need more"
//! (`Ok(None)`) consumes nothing; an error leaves the buffer as it was (the gate answers and
//! closes, it never resynchronises).
//!
//! Run from `crates/proto`:
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run decode_raw fuzz/target/work/decode_raw fuzz/corpus/decode_raw -- -max_total_time=60`
//! (new inputs go to the first directory; the checked-in seeds stay as they are).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use longlink_proto::{Cmd, FrameCodec, FrameType, wire};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut codec = FrameCodec::new(64 * 1024);
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match codec.decode(&mut buf) {
            Ok(Some(frame)) => {
                assert_eq!(frame.body.len(), frame.header.body_len as usize);
                assert_eq!(before - buf.len(), 24 + frame.body.len());
                decode_body(&frame);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "need-more consumed bytes");
                break;
            }
            Err(_) => {
                assert_eq!(buf.len(), before, "an error consumed bytes");
                break;
            }
        }
    }
});

fn decode_body(frame: &longlink_proto::Frame) {
    // What a client sends (type 0/3) is what the gate decodes; what a server sends (type 1/2)
    // is what the SDK decodes. Both sides must survive anything.
    let request = matches!(frame.header.frame_type, FrameType::Request | FrameType::Ack);
    let _ = match (frame.cmd(), request) {
        (Some(Cmd::Login), true) => frame.decode_body::<wire::LoginRequest>().map(drop),
        (Some(Cmd::Login), false) => frame.decode_body::<wire::LoginResponse>().map(drop),
        (Some(Cmd::Logout), true) => frame.decode_body::<wire::LogoutRequest>().map(drop),
        (Some(Cmd::Logout), false) => frame.decode_body::<wire::LogoutResponse>().map(drop),
        (Some(Cmd::Keepalive), true) => frame.decode_body::<wire::KeepaliveRequest>().map(drop),
        (Some(Cmd::Keepalive), false) => frame.decode_body::<wire::KeepaliveResponse>().map(drop),
        (Some(Cmd::Resume), true) => frame.decode_body::<wire::ResumeRequest>().map(drop),
        (Some(Cmd::Resume), false) => frame.decode_body::<wire::ResumeResponse>().map(drop),
        (Some(Cmd::Kick), _) => frame.decode_body::<wire::Kick>().map(drop),
        (Some(Cmd::C2s), true) => frame.decode_body::<wire::C2sRequest>().map(drop),
        (Some(Cmd::C2s), false) => frame.decode_body::<wire::C2sResponse>().map(drop),
        (Some(Cmd::C2c), true) => frame.decode_body::<wire::C2cRequest>().map(drop),
        (Some(Cmd::C2c), false) => frame.decode_body::<wire::C2cResponse>().map(drop),
        (Some(Cmd::Msg), _) => frame.decode_body::<wire::Msg>().map(drop),
        (Some(Cmd::MsgAck), true) => frame.decode_body::<wire::MsgAck>().map(drop),
        (Some(Cmd::MsgAck), false) => frame.decode_body::<wire::MsgAckResponse>().map(drop),
        (Some(Cmd::OfflinePull), true) => frame.decode_body::<wire::OfflinePullRequest>().map(drop),
        (Some(Cmd::OfflinePull), false) => {
            frame.decode_body::<wire::OfflinePullResponse>().map(drop)
        }
        (Some(Cmd::HistoryPull), true) => frame.decode_body::<wire::HistoryPullRequest>().map(drop),
        (Some(Cmd::HistoryPull), false) => {
            frame.decode_body::<wire::HistoryPullResponse>().map(drop)
        }
        (Some(Cmd::Receipt), _) => frame.decode_body::<wire::Receipt>().map(drop),
        (Some(Cmd::Conversations), true) => {
            frame.decode_body::<wire::ConversationsRequest>().map(drop)
        }
        (Some(Cmd::Conversations), false) => {
            frame.decode_body::<wire::ConversationsResponse>().map(drop)
        }
        (Some(Cmd::MarkRead), true) => frame.decode_body::<wire::MarkReadRequest>().map(drop),
        (Some(Cmd::MarkRead), false) => frame.decode_body::<wire::MarkReadResponse>().map(drop),
        (Some(Cmd::PushToken), true) => frame.decode_body::<wire::PushTokenRequest>().map(drop),
        (Some(Cmd::PushToken), false) => frame.decode_body::<wire::PushTokenResponse>().map(drop),
        (Some(Cmd::NotificationAck), true) => {
            frame.decode_body::<wire::NotificationAck>().map(drop)
        }
        (Some(Cmd::NotificationAck), false) => frame
            .decode_body::<wire::NotificationAckResponse>()
            .map(drop),
        (Some(Cmd::Error), _) => frame.decode_body::<wire::Error>().map(drop),
        (None, _) => Ok(()),
    };
}
