//! Feeds arbitrary bytes to the streaming decoder and decodes each frame's body as the message
//! its cmd names. Run with: `RUSTC_BOOTSTRAP=1 cargo fuzz run decode_raw -- -max_total_time=60`
//! from `crates/proto`.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use longlink_proto::{Cmd, FrameCodec, wire};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut codec = FrameCodec::new(64 * 1024);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        let _ = match frame.cmd() {
            Some(Cmd::Login) => frame.decode_body::<wire::LoginRequest>().map(|_| ()),
            Some(Cmd::C2c) => frame.decode_body::<wire::C2cRequest>().map(|_| ()),
            Some(Cmd::C2s) => frame.decode_body::<wire::C2sRequest>().map(|_| ()),
            Some(Cmd::Msg) => frame.decode_body::<wire::Msg>().map(|_| ()),
            Some(Cmd::MsgAck) => frame.decode_body::<wire::MsgAck>().map(|_| ()),
            Some(Cmd::OfflinePull) => frame.decode_body::<wire::OfflinePullRequest>().map(|_| ()),
            Some(Cmd::HistoryPull) => frame.decode_body::<wire::HistoryPullRequest>().map(|_| ()),
            Some(Cmd::Error) => frame.decode_body::<wire::Error>().map(|_| ()),
            _ => Ok(()),
        };
    }
});
