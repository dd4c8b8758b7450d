//! The codec round trip: a frame built from the input (header fields from the first 18 bytes,
//! the rest as body) is encoded, then decoded whole and fed to the decoder in three chunks cut
//! where bytes 15..17 say; every way gives back the same frame and leaves nothing behind.
//!
//! Input layout (missing bytes read as 0): `[0]` flags, `[1..9]` log_id, `[9..13]` seq_id,
//! `[13..15]` cmd, `[15]` type (mod 4), `[16]`, `[17]` the two cut points (scaled to the
//! frame's length), `[18..]` body.
//!
//! Run from `crates/proto`:
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run roundtrip fuzz/target/work/roundtrip fuzz/corpus/roundtrip -- -max_total_time=60`
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use longlink_proto::{Frame, FrameCodec, FrameType, HEADER_LEN, Header};
use tokio_util::codec::{Decoder, Encoder};

fn byte(data: &[u8], i: usize) -> u8 {
    data.get(i).copied().unwrap_or(0)
}

fn be<const N: usize>(data: &[u8], at: usize) -> [u8; N] {
    std::array::from_fn(|i| byte(data, at + i))
}

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data.get(18..).unwrap_or_default());
    let frame_type = match byte(data, 15) % 4 {
        0 => FrameType::Request,
        1 => FrameType::Response,
        2 => FrameType::Push,
        _ => FrameType::Ack,
    };
    let frame = Frame {
        header: Header {
            flags: byte(data, 0),
            log_id: u64::from_be_bytes(be(data, 1)),
            seq_id: u32::from_be_bytes(be(data, 9)),
            cmd: u16::from_be_bytes(be(data, 13)),
            frame_type,
            body_len: body.len() as u32,
        },
        body,
    };
    let mut codec = FrameCodec::new(u32::MAX);
    let mut wire = BytesMut::new();
    codec
        .encode(&frame, &mut wire)
        .expect("encoding cannot fail");
    assert_eq!(wire.len(), HEADER_LEN + frame.body.len());
    assert_eq!(
        Header::decode(&be(&wire, 0), u32::MAX),
        Ok(frame.header),
        "header round trip"
    );
    assert_eq!(&wire[..], &frame.to_bytes()[..], "to_bytes = the encoder");

    // Whole.
    let mut whole = wire.clone();
    assert_eq!(
        codec.decode(&mut whole).expect("decodes"),
        Some(frame.clone())
    );
    assert!(whole.is_empty());

    // In three chunks.
    let len = wire.len();
    let mut cuts = [
        byte(data, 16) as usize * len / 255,
        byte(data, 17) as usize * len / 255,
    ];
    cuts.sort_unstable();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let mut start = 0;
    for end in [cuts[0], cuts[1], len] {
        buf.extend_from_slice(&wire[start..end]);
        start = end;
        while let Some(decoded) = codec.decode(&mut buf).expect("decodes") {
            got.push(decoded);
        }
    }
    assert_eq!(got, vec![frame]);
    assert!(buf.is_empty());

    // A smaller limit refuses it exactly when the body is larger.
    let limit = (byte(data, 16) as u32) << 4;
    let mut limited = FrameCodec::new(limit);
    let mut again = wire.clone();
    match limited.decode(&mut again) {
        Ok(Some(_)) => assert!(len - HEADER_LEN <= limit as usize),
        Ok(None) => unreachable!("a whole frame is never 'need more'"),
        Err(_) => assert!(len - HEADER_LEN > limit as usize),
    }
});
