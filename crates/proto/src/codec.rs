//! [`FrameCodec`]: the one streaming parser of longlink frames, a tokio-util codec.
//!
//! The gate drives `decode` from its own readiness loop (so an idle connection holds no
//! buffer); the SDK and the bench wrap it in `Framed`.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::{CodecError, DEFAULT_MAX_BODY_BYTES, Frame, HEADER_LEN, Header};

/// Splits a byte stream into [`Frame`]s and writes frames back.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_body_len: u32,
}

impl FrameCodec {
    /// A codec refusing bodies longer than `max_body_len` bytes.
    pub fn new(max_body_len: u32) -> Self {
        Self { max_body_len }
    }

    /// The configured body limit.
    pub fn max_body_len(&self) -> u32 {
        self.max_body_len
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BODY_BYTES)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    /// Fewer than 24 bytes: `Ok(None)`. A valid header whose body has not fully arrived:
    /// reserve exactly the missing bytes and `Ok(None)`. The header is validated (magic,
    /// version, type, body limit) before any reservation, so a lying `body_len` costs nothing.
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let Some(raw) = src.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let raw: &[u8; HEADER_LEN] = raw.try_into().map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "short header slice")
        })?;
        let header = Header::decode(raw, self.max_body_len)?;
        let total = HEADER_LEN + header.body_len as usize;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let body = src.split_to(header.body_len as usize).freeze();
        Ok(Some(Frame { header, body }))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        frame.encode_to(dst);
        Ok(())
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        frame.encode_to(dst);
        Ok(())
    }
}
