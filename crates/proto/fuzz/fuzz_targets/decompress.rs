//! The per-frame decompression the gate applies to a flagged body (`compress::inflate`): any
//! bytes, zstd or lz4, with a cap. Never more than the cap, never a panic, and whatever
//! decompresses round-trips; a body compressed here decompresses back to itself, and one byte
//! less of cap is refused as too large (a bomb costs at most the cap).
//!
//! Input: `[0]` bit 0 = algorithm (zstd, lz4), bit 1 = mode (decompress the rest / compress
//! the rest first); `[1..3]` the cap (big-endian u16, in units of 2 bytes: up to 128 KiB);
//! `[3..]` the data.
//!
//! Run from `crates/proto`:
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run decompress fuzz/target/work/decompress fuzz/corpus/decompress -- -max_total_time=60`
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use longlink_proto::compress::{self, Compression, DecompressError};
use longlink_proto::{Cmd, FLAG_COMPRESSED, Frame, FrameType, Header};

fuzz_target!(|input: &[u8]| {
    let Some((&[mode, cap_hi, cap_lo], data)) = input.split_first_chunk::<3>() else {
        return;
    };
    let algorithm = if mode & 1 == 0 {
        Compression::Zstd
    } else {
        Compression::Lz4
    };
    let cap = usize::from(u16::from_be_bytes([cap_hi, cap_lo])) * 2;
    if mode & 2 == 0 {
        decompress_any(algorithm, data, cap);
    } else {
        round_trip(algorithm, data);
    }
});

fn frame(flags: u8, body: &[u8]) -> Frame {
    Frame {
        header: Header {
            flags,
            log_id: 1,
            seq_id: 2,
            cmd: Cmd::C2c as u16,
            frame_type: FrameType::Request,
            body_len: body.len() as u32,
        },
        body: Bytes::copy_from_slice(body),
    }
}

/// Arbitrary bytes as a flagged body.
fn decompress_any(algorithm: Compression, data: &[u8], cap: usize) {
    match compress::inflate(frame(FLAG_COMPRESSED, data), Some(algorithm), cap) {
        Ok(inflated) => {
            assert!(
                inflated.body.len() <= cap,
                "{} > cap {cap}",
                inflated.body.len()
            );
            assert_eq!(inflated.header.flags, 0);
            assert_eq!(inflated.header.body_len as usize, inflated.body.len());
            // What decompressed compresses and decompresses back to itself.
            let packed = algorithm.compress(&inflated.body).expect("compresses");
            let back = algorithm
                .decompress(&packed, inflated.body.len())
                .expect("its own output decompresses");
            assert_eq!(&back[..], &inflated.body[..]);
        }
        Err(err) => {
            // A refusal maps to the documented codes only.
            let code = err.error_code();
            assert!(
                matches!(
                    code,
                    longlink_proto::ErrorCode::BodyTooLarge | longlink_proto::ErrorCode::BadBody
                ),
                "{code:?}"
            );
        }
    }
}

/// The data compressed, then decompressed with exactly enough cap, and one byte less.
fn round_trip(algorithm: Compression, data: &[u8]) {
    let packed = algorithm.compress(data).expect("compresses");
    let back = algorithm
        .decompress(&packed, data.len())
        .expect("round trip");
    assert_eq!(back, data);
    if let Some(less) = data.len().checked_sub(1) {
        assert_eq!(
            algorithm.decompress(&packed, less),
            Err(DecompressError::TooLarge { cap: less })
        );
    }
    // The frame helpers agree: deflate then inflate gives the frame back.
    let original = frame(0, data);
    if let Some(deflated) = compress::deflate(&original, algorithm, 0) {
        assert_eq!(deflated.header.flags, FLAG_COMPRESSED);
        let inflated = compress::inflate(deflated, Some(algorithm), data.len()).expect("inflates");
        assert_eq!(inflated, original);
    }
}
