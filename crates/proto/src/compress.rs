//! Per-frame body compression (header flag bit 0, [`crate::FLAG_COMPRESSED`]): the algorithms a
//! LOGIN may agree on, and compress / decompress with a **hard cap on the output** — pure, no
//! I/O, shared by the gate and the SDK (docs/protocol.md §2.2).
//!
//! Wire formats (the bytes of a flagged body; `header.body_len` is their length):
//!
//! - `zstd`: one standard zstd frame (RFC 8878) as `ZSTD_compress` writes it, with the content
//!   size in its header. Decompressed single-shot into a buffer of at most `cap` bytes: a
//!   declared size above `cap` is refused before any allocation, and a frame that would write
//!   past the buffer fails ("destination too small") instead of growing it.
//! - `lz4`: a 4-byte little-endian uncompressed length, then one LZ4 *block* (lz4_flex's
//!   `compress_prepend_size` layout). The length is checked against `cap` before the buffer is
//!   allocated, and the block must fill exactly that many bytes (lz4_flex's
//!   `decompress_size_prepended` would allocate whatever the prefix claims: never used here).
//!
//! A decompression bomb therefore costs at most `cap` bytes of output plus the codec's own
//! state, whatever it claims.

use std::cell::RefCell;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::{Cmd, ErrorCode, FLAG_COMPRESSED, Frame, HEADER_LEN, Header};

/// zstd level used for frames: on 1–4 KB JSON-ish messages level 1 is within 8% of level
/// 3's size (smaller from 2 KB on) at 2–3× the speed (docs/security.md "Compression",
/// `examples/compress_figures.rs`).
pub const ZSTD_LEVEL: i32 = 1;

/// Default smallest body worth compressing (`[gate] compression_min_bytes`): below ~512 bytes
/// the saving is a few dozen bytes at best, not worth the CPU on both ends.
pub const DEFAULT_MIN_BYTES: u32 = 512;

/// A compression algorithm a LOGIN may agree on. Its wire name is what `LoginRequest`
/// offers and `LoginResponse.compression` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// zstd (level [`ZSTD_LEVEL`]): the better ratio.
    Zstd,
    /// LZ4 block format with a length prefix: the cheaper CPU.
    Lz4,
}

impl Compression {
    /// Every algorithm, in the server's default order of preference.
    pub const ALL: [Compression; 2] = [Compression::Zstd, Compression::Lz4];

    /// The wire name: `"zstd"` or `"lz4"`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
        }
    }

    /// The algorithm of a wire name (exact, lower case), or `None` for one this side does not
    /// know (ignored in an offer, as the compatibility rules ask).
    pub fn from_name(name: &str) -> Option<Compression> {
        match name {
            "zstd" => Some(Compression::Zstd),
            "lz4" => Some(Compression::Lz4),
            _ => None,
        }
    }

    /// Compresses `input`. Infallible in practice: an error (the codec could not allocate its
    /// state) is reported so that the caller sends the body uncompressed instead.
    ///
    /// # Errors
    /// [`CompressError`] when the codec fails.
    pub fn compress(self, input: &[u8]) -> Result<Vec<u8>, CompressError> {
        match self {
            Compression::Zstd => ZSTD_COMPRESSOR.with(|cell| {
                let mut slot = cell.borrow_mut();
                if slot.is_none() {
                    *slot = Some(
                        zstd::bulk::Compressor::new(ZSTD_LEVEL)
                            .map_err(|err| CompressError(err.to_string()))?,
                    );
                }
                match slot.as_mut() {
                    Some(compressor) => compressor
                        .compress(input)
                        .map_err(|err| CompressError(err.to_string())),
                    None => Err(CompressError("no zstd context".into())),
                }
            }),
            Compression::Lz4 => {
                let len = u32::try_from(input.len())
                    .map_err(|_| CompressError("input above 4 GiB".into()))?;
                let mut out = vec![0u8; 4 + lz4_flex::block::get_maximum_output_size(input.len())];
                out[..4].copy_from_slice(&len.to_le_bytes());
                let written = lz4_flex::block::compress_into(input, &mut out[4..])
                    .map_err(|err| CompressError(err.to_string()))?;
                out.truncate(4 + written);
                Ok(out)
            }
        }
    }

    /// Decompresses `input`, refusing to produce more than `cap` bytes.
    ///
    /// # Errors
    /// [`DecompressError::TooLarge`] when the output would exceed `cap` (declared or actual),
    /// [`DecompressError::Corrupt`] when `input` is not valid data of this algorithm.
    pub fn decompress(self, input: &[u8], cap: usize) -> Result<Vec<u8>, DecompressError> {
        match self {
            Compression::Zstd => zstd_decompress(input, cap),
            Compression::Lz4 => lz4_decompress(input, cap),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

thread_local! {
    // One zstd context per thread, reused: creating one costs ~100 KB of allocation, more than
    // compressing a chat message.
    static ZSTD_COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static ZSTD_DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn zstd_decompress(input: &[u8], cap: usize) -> Result<Vec<u8>, DecompressError> {
    // The declared content size, when the frame has one, sizes the buffer exactly and refuses
    // a bomb before any allocation; without one, the buffer is the cap.
    let capacity = match zstd::zstd_safe::get_frame_content_size(input) {
        Ok(Some(declared)) => {
            if declared > cap as u64 {
                return Err(DecompressError::TooLarge { cap });
            }
            declared as usize
        }
        Ok(None) => cap,
        Err(_) => return Err(DecompressError::Corrupt("not a zstd frame".into())),
    };
    let mut out: Vec<u8> = Vec::with_capacity(capacity);
    let result = ZSTD_DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(
                zstd::bulk::Decompressor::new()
                    .map_err(|err| DecompressError::Corrupt(err.to_string()))?,
            );
        }
        match slot.as_mut() {
            // Single-shot into `out`'s spare capacity: zstd never grows the buffer, it fails
            // with "destination buffer is too small" instead.
            Some(decompressor) => decompressor
                .decompress_to_buffer(input, &mut out)
                .map_err(|err| DecompressError::Corrupt(err.to_string())),
            None => Err(DecompressError::Corrupt("no zstd context".into())),
        }
    });
    match result {
        Ok(_) => Ok(out),
        // Without a declared size, zstd stopping at the end of the buffer means the data wanted
        // more than the cap ("Destination buffer is too small", ZSTD_error_dstSize_tooSmall).
        Err(DecompressError::Corrupt(reason))
            if capacity == cap && reason.contains("too small") =>
        {
            Err(DecompressError::TooLarge { cap })
        }
        Err(err) => Err(err),
    }
}

fn lz4_decompress(input: &[u8], cap: usize) -> Result<Vec<u8>, DecompressError> {
    let Some((prefix, block)) = input.split_first_chunk::<4>() else {
        return Err(DecompressError::Corrupt(
            "lz4 body shorter than its length prefix".into(),
        ));
    };
    let declared = u32::from_le_bytes(*prefix) as usize;
    if declared > cap {
        return Err(DecompressError::TooLarge { cap });
    }
    let mut out = vec![0u8; declared];
    let written = lz4_flex::block::decompress_into(block, &mut out)
        .map_err(|err| DecompressError::Corrupt(err.to_string()))?;
    if written != declared {
        return Err(DecompressError::Corrupt(format!(
            "lz4 block decoded to {written} bytes, its prefix said {declared}"
        )));
    }
    Ok(out)
}

/// The first algorithm of the server's `preference` that the client `offered` (names it does
/// not know are ignored); `None` = no compression.
pub fn negotiate(offered: &[String], preference: &[Compression]) -> Option<Compression> {
    preference
        .iter()
        .copied()
        .find(|algorithm| offered.iter().any(|name| name == algorithm.name()))
}

/// Compression failed (the codec could not allocate): send the body as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("compression failed: {0}")]
pub struct CompressError(pub String);

/// Why a flagged body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    /// The body would decompress to more than the cap (a decompression bomb, or simply too
    /// big): ERROR `BODY_TOO_LARGE`, close.
    #[error("the body decompresses to more than {cap} bytes")]
    TooLarge {
        /// The cap in force.
        cap: usize,
    },
    /// The body is not valid data of the agreed algorithm: ERROR `BAD_BODY`, close.
    #[error("the compressed body is invalid: {0}")]
    Corrupt(String),
}

impl DecompressError {
    /// The wire error code sent for this refusal.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            DecompressError::TooLarge { .. } => ErrorCode::BodyTooLarge,
            DecompressError::Corrupt(_) => ErrorCode::BadBody,
        }
    }
}

/// Why an incoming frame's flags were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagsError {
    /// A reserved bit (1–7) is set, or bit 0 without an agreed algorithm: ERROR `BAD_FLAGS`.
    #[error("{0}")]
    BadFlags(&'static str),
    /// The flagged body could not be decompressed.
    #[error(transparent)]
    Decompress(#[from] DecompressError),
}

impl FlagsError {
    /// The wire error code sent for this refusal (every one closes the connection).
    pub fn error_code(&self) -> ErrorCode {
        match self {
            FlagsError::BadFlags(_) => ErrorCode::BadFlags,
            FlagsError::Decompress(err) => err.error_code(),
        }
    }
}

/// Applies an incoming frame's flags: an unflagged frame is returned as it is; a flagged one
/// is decompressed with `agreed` (at most `cap` bytes) and returned unflagged, with
/// `body_len` the decompressed length.
///
/// # Errors
/// [`FlagsError::BadFlags`] for a reserved bit or a flag when nothing was agreed;
/// [`FlagsError::Decompress`] for a bomb or corrupt data.
pub fn inflate(frame: Frame, agreed: Option<Compression>, cap: usize) -> Result<Frame, FlagsError> {
    let flags = frame.header.flags;
    if flags == 0 {
        return Ok(frame);
    }
    if flags & !FLAG_COMPRESSED != 0 {
        return Err(FlagsError::BadFlags("flag bits 1-7 are reserved"));
    }
    let Some(algorithm) = agreed else {
        return Err(FlagsError::BadFlags(
            "compressed frame, but no compression was negotiated",
        ));
    };
    let body = algorithm.decompress(&frame.body, cap)?;
    let mut header = frame.header;
    header.flags = 0;
    header.body_len = body.len() as u32;
    Ok(Frame {
        header,
        body: Bytes::from(body),
    })
}

/// Whether a frame of `cmd` may ever be sent compressed. ERROR and KICK never are, so that a
/// peer can always read why it is being refused or closed; LOGIN and RESUME answers are sent
/// before the agreement takes effect.
pub fn compressible(cmd: u16) -> bool {
    !matches!(
        Cmd::try_from(cmd),
        Ok(Cmd::Error | Cmd::Kick | Cmd::Login | Cmd::Resume)
    )
}

/// The compressed form of `frame` (flag bit 0 set, `body_len` the compressed length), or
/// `None` when it should go as it is — the rules of [`compress_encoded`].
pub fn deflate(frame: &Frame, algorithm: Compression, min_bytes: u32) -> Option<Frame> {
    if frame.header.flags != 0
        || frame.body.len() < min_bytes as usize
        || !compressible(frame.header.cmd)
    {
        return None;
    }
    let packed = algorithm.compress(&frame.body).ok()?;
    if packed.len() >= frame.body.len() {
        return None;
    }
    let mut header = frame.header;
    header.flags = FLAG_COMPRESSED;
    header.body_len = u32::try_from(packed.len()).ok()?;
    Some(Frame {
        header,
        body: Bytes::from(packed),
    })
}

/// The compressed form of an **encoded** frame (header + body), or `None` when it should go
/// as it is: already flagged, a cmd never compressed ([`compressible`]), a body shorter than
/// `min_bytes`, not smaller once compressed, or the codec failed.
pub fn compress_encoded(frame: &[u8], algorithm: Compression, min_bytes: u32) -> Option<Bytes> {
    let raw = frame.first_chunk::<HEADER_LEN>()?;
    let header = Header::decode(raw, u32::MAX).ok()?;
    let body = frame.get(HEADER_LEN..)?;
    if header.flags != 0
        || body.len() < min_bytes as usize
        || body.len() != header.body_len as usize
        || !compressible(header.cmd)
    {
        return None;
    }
    let packed = algorithm.compress(body).ok()?;
    if packed.len() >= body.len() {
        return None;
    }
    let mut header = header;
    header.flags = FLAG_COMPRESSED;
    header.body_len = u32::try_from(packed.len()).ok()?;
    let mut out = BytesMut::with_capacity(HEADER_LEN + packed.len());
    out.put_slice(&header.encode());
    out.put_slice(&packed);
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FrameType, wire};
    use proptest::prelude::*;

    const CAP: usize = 64 * 1024;

    /// A hand-made zstd frame that declares (or not) `blocks` × 128 KiB of zeros, built from
    /// RLE blocks of 4 bytes each: 8192 blocks = 1 GiB from 32 KiB.
    fn zstd_bomb(blocks: u32, declare: bool) -> Vec<u8> {
        let mut out = vec![0x28, 0xB5, 0x2F, 0xFD];
        if declare {
            // FCS field 8 bytes, window descriptor present.
            out.push(0xC0);
            out.push(7 << 3); // window log 17 = 128 KiB
            out.extend_from_slice(&(u64::from(blocks) * 131_072).to_le_bytes());
        } else {
            out.push(0x00);
            out.push(7 << 3);
        }
        for i in 0..blocks {
            let last = u32::from(i + 1 == blocks);
            let header = last | (1 << 1) | (131_072 << 3);
            out.extend_from_slice(&header.to_le_bytes()[..3]);
            out.push(0);
        }
        out
    }

    #[test]
    fn names_round_trip_and_negotiation_follows_the_server_preference() {
        for algorithm in Compression::ALL {
            assert_eq!(Compression::from_name(algorithm.name()), Some(algorithm));
        }
        assert_eq!(Compression::from_name("gzip"), None);
        let offered = vec!["gzip".to_owned(), "lz4".to_owned(), "zstd".to_owned()];
        assert_eq!(
            negotiate(&offered, &Compression::ALL),
            Some(Compression::Zstd)
        );
        assert_eq!(
            negotiate(&offered, &[Compression::Lz4]),
            Some(Compression::Lz4)
        );
        assert_eq!(negotiate(&["gzip".to_owned()], &Compression::ALL), None);
        assert_eq!(negotiate(&offered, &[]), None);
    }

    #[test]
    fn a_zstd_bomb_is_refused_without_inflating() {
        let bomb = zstd_bomb(8192, true);
        assert!(bomb.len() < 40_000, "1 GiB in {} bytes", bomb.len());
        assert_eq!(
            Compression::Zstd.decompress(&bomb, CAP),
            Err(DecompressError::TooLarge { cap: CAP })
        );
        // Without a declared size the bounded buffer stops it.
        let bomb = zstd_bomb(8192, false);
        assert_eq!(
            Compression::Zstd.decompress(&bomb, CAP),
            Err(DecompressError::TooLarge { cap: CAP })
        );
        // The hand-made frame is valid zstd: a small one decodes.
        assert_eq!(
            Compression::Zstd.decompress(&zstd_bomb(1, true), 1 << 20),
            Ok(vec![0u8; 131_072])
        );
    }

    #[test]
    fn an_lz4_prefix_above_the_cap_is_refused_before_allocating() {
        let mut bomb = (1u32 << 30).to_le_bytes().to_vec();
        bomb.extend_from_slice(&[0x1F, 0, 1, 0, 0xFF, 0xFF]);
        assert_eq!(
            Compression::Lz4.decompress(&bomb, CAP),
            Err(DecompressError::TooLarge { cap: CAP })
        );
        // A prefix that lies the other way is corrupt, not a crash.
        let mut short = Compression::Lz4.compress(&[7u8; 1000]).unwrap();
        short[..4].copy_from_slice(&10u32.to_le_bytes());
        assert!(matches!(
            Compression::Lz4.decompress(&short, CAP),
            Err(DecompressError::Corrupt(_))
        ));
        assert!(matches!(
            Compression::Lz4.decompress(&[1, 2], CAP),
            Err(DecompressError::Corrupt(_))
        ));
    }

    #[test]
    fn inflate_applies_the_flags() {
        let msg = wire::C2cRequest {
            content: vec![b'a'; 4000].into(),
            ..Default::default()
        };
        let frame = Frame::request(Cmd::C2c, 3, 9, &msg);
        let packed = compress_encoded(&frame.to_bytes(), Compression::Zstd, 512).unwrap();
        assert!(packed.len() < 200);
        let mut codec = crate::FrameCodec::default();
        let mut buf = BytesMut::from(&packed[..]);
        let wire_frame = tokio_util::codec::Decoder::decode(&mut codec, &mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(wire_frame.header.flags, FLAG_COMPRESSED);
        assert_eq!(
            inflate(wire_frame.clone(), None, CAP)
                .unwrap_err()
                .error_code(),
            ErrorCode::BadFlags
        );
        assert_eq!(
            inflate(wire_frame.clone(), Some(Compression::Zstd), 100)
                .unwrap_err()
                .error_code(),
            ErrorCode::BodyTooLarge
        );
        // Another algorithm's bytes are corrupt data (here: lz4 read as zstd).
        let mut lz4_frame = wire_frame.clone();
        lz4_frame.body = Bytes::from(Compression::Lz4.compress(&frame.body).unwrap());
        assert_eq!(
            inflate(lz4_frame, Some(Compression::Zstd), CAP)
                .unwrap_err()
                .error_code(),
            ErrorCode::BadBody
        );
        let plain = inflate(wire_frame.clone(), Some(Compression::Zstd), CAP).unwrap();
        assert_eq!(plain, frame);
        assert_eq!(deflate(&frame, Compression::Zstd, 512), Some(wire_frame));
        assert_eq!(deflate(&frame, Compression::Zstd, 5000), None);
        let mut reserved = frame.clone();
        reserved.header.flags = 0b10;
        assert_eq!(
            inflate(reserved, Some(Compression::Zstd), CAP)
                .unwrap_err()
                .error_code(),
            ErrorCode::BadFlags
        );
    }

    #[test]
    fn small_errors_and_incompressible_frames_go_as_they_are() {
        let small = Frame::request(Cmd::C2c, 1, 1, &wire::C2cRequest::default()).to_bytes();
        assert_eq!(compress_encoded(&small, Compression::Zstd, 512), None);
        let error = Frame::error(Some(1), 1, ErrorCode::BadBody, "x".repeat(2000)).to_bytes();
        assert_eq!(compress_encoded(&error, Compression::Zstd, 0), None);
        let noise: Vec<u8> = (0..4000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let random = Frame::new(
            Cmd::Msg,
            FrameType::Push,
            0,
            1,
            &wire::Msg {
                content: noise.into(),
                ..Default::default()
            },
        )
        .to_bytes();
        for algorithm in Compression::ALL {
            if let Some(packed) = compress_encoded(&random, algorithm, 0) {
                assert!(packed.len() < random.len());
            }
        }
    }

    proptest! {
        #[test]
        fn decompress_inverts_compress_up_to_the_cap(
            data in proptest::collection::vec(any::<u8>(), 0..8192),
            repeat in 1usize..16,
        ) {
            // Repeating the sample makes some inputs compressible, as messages are.
            let input: Vec<u8> = data.iter().copied().cycle().take(data.len() * repeat).collect();
            for algorithm in Compression::ALL {
                let packed = algorithm.compress(&input).unwrap();
                prop_assert_eq!(&algorithm.decompress(&packed, input.len()).unwrap(), &input);
                if !input.is_empty() {
                    prop_assert_eq!(
                        algorithm.decompress(&packed, input.len() - 1),
                        Err(DecompressError::TooLarge { cap: input.len() - 1 })
                    );
                }
            }
        }

        #[test]
        fn garbage_never_panics_nor_exceeds_the_cap(
            data in proptest::collection::vec(any::<u8>(), 0..2048),
            cap in 0usize..4096,
        ) {
            for algorithm in Compression::ALL {
                if let Ok(out) = algorithm.decompress(&data, cap) {
                    prop_assert!(out.len() <= cap);
                }
            }
        }
    }
}
