//! The fixed 24-byte frame header (DESIGN.md "Wire protocol v1"), big-endian.
//!
//! | offset | size | field     |
//! |-------:|-----:|-----------|
//! | 0      | 2    | magic "LL" |
//! | 2      | 1    | version (1) |
//! | 3      | 1    | flags      |
//! | 4      | 8    | log_id     |
//! | 12     | 4    | seq_id     |
//! | 16     | 2    | cmd        |
//! | 18     | 1    | type       |
//! | 19     | 1    | reserved (0) |
//! | 20     | 4    | body_len   |

use crate::DecodeError;

/// The two magic bytes every frame starts with: ASCII "LL".
pub const MAGIC: [u8; 2] = *b"LL";
/// The only protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Length of the fixed header in bytes.
pub const HEADER_LEN: usize = 24;
/// The default limit on `body_len` (64 KiB); servers may configure another.
pub const DEFAULT_MAX_BODY_BYTES: u32 = 64 * 1024;
/// Flag bit 0: the body is compressed with the algorithm agreed at login.
pub const FLAG_COMPRESSED: u8 = 0b0000_0001;

/// Header byte 18: what kind of frame this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// A request; its answer carries the same seq_id.
    Request = 0,
    /// The answer to a request (same seq_id), or an ERROR for it.
    Response = 1,
    /// Server-initiated (MSG, KICK, an ERROR not tied to a request).
    Push = 2,
    /// A client acknowledgement that expects no answer (MSG_ACK).
    Ack = 3,
}

impl TryFrom<u8> for FrameType {
    type Error = u8;

    fn try_from(value: u8) -> Result<Self, u8> {
        match value {
            0 => Ok(Self::Request),
            1 => Ok(Self::Response),
            2 => Ok(Self::Push),
            3 => Ok(Self::Ack),
            other => Err(other),
        }
    }
}

/// A decoded frame header. `cmd` stays a raw `u16` so that an unknown command can still be
/// answered with an ERROR echoing its seq_id; [`crate::Cmd::try_from`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Flag bits ([`FLAG_COMPRESSED`]); the other bits are 0.
    pub flags: u8,
    /// Trace id: the client sets it (0 = the gate assigns one); every hop logs it.
    pub log_id: u64,
    /// Chosen by a request's sender; the response carries the same value.
    pub seq_id: u32,
    /// Command id (see [`crate::Cmd`]).
    pub cmd: u16,
    /// Request, response, push or ack.
    pub frame_type: FrameType,
    /// Bytes of body after the header.
    pub body_len: u32,
}

impl Header {
    /// Parses and validates a header. `max_body_len` is checked here, before anyone allocates
    /// room for the body.
    ///
    /// # Errors
    /// [`DecodeError::BadMagic`], [`DecodeError::UnsupportedVersion`],
    /// [`DecodeError::UnknownFrameType`] or [`DecodeError::BodyTooLarge`].
    pub fn decode(raw: &[u8; HEADER_LEN], max_body_len: u32) -> Result<Header, DecodeError> {
        let magic = u16::from_be_bytes([raw[0], raw[1]]);
        if [raw[0], raw[1]] != MAGIC {
            return Err(DecodeError::BadMagic(magic));
        }
        if raw[2] != VERSION {
            return Err(DecodeError::UnsupportedVersion(raw[2]));
        }
        let flags = raw[3];
        let log_id = u64::from_be_bytes(raw[4..12].try_into().unwrap_or([0; 8]));
        let seq_id = u32::from_be_bytes([raw[12], raw[13], raw[14], raw[15]]);
        let cmd = u16::from_be_bytes([raw[16], raw[17]]);
        let frame_type = FrameType::try_from(raw[18])
            .map_err(|value| DecodeError::UnknownFrameType { value, seq_id })?;
        // raw[19] is reserved: senders write 0, receivers ignore it (room for v1 extensions).
        let body_len = u32::from_be_bytes([raw[20], raw[21], raw[22], raw[23]]);
        if body_len > max_body_len {
            return Err(DecodeError::BodyTooLarge {
                len: body_len,
                max: max_body_len,
                seq_id,
            });
        }
        Ok(Header {
            flags,
            log_id,
            seq_id,
            cmd,
            frame_type,
            body_len,
        })
    }

    /// Writes the 24 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..2].copy_from_slice(&MAGIC);
        out[2] = VERSION;
        out[3] = self.flags;
        out[4..12].copy_from_slice(&self.log_id.to_be_bytes());
        out[12..16].copy_from_slice(&self.seq_id.to_be_bytes());
        out[16..18].copy_from_slice(&self.cmd.to_be_bytes());
        out[18] = self.frame_type as u8;
        out[19] = 0;
        out[20..24].copy_from_slice(&self.body_len.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_matches_the_spec() {
        let header = Header {
            flags: 0,
            log_id: 0x0102_0304_0506_0708,
            seq_id: 7,
            cmd: 17,
            frame_type: FrameType::Request,
            body_len: 5,
        };
        let raw = header.encode();
        assert_eq!(
            raw,
            [
                0x4C, 0x4C, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 7, 0, 17, 0, 0, 0, 0, 0, 5
            ]
        );
        assert_eq!(Header::decode(&raw, 64), Ok(header));
    }

    #[test]
    fn bad_fields_are_typed_errors() {
        let mut raw = Header {
            flags: 0,
            log_id: 1,
            seq_id: 9,
            cmd: 1,
            frame_type: FrameType::Request,
            body_len: 100,
        }
        .encode();
        assert_eq!(
            Header::decode(&raw, 99),
            Err(DecodeError::BodyTooLarge {
                len: 100,
                max: 99,
                seq_id: 9
            })
        );
        raw[18] = 4;
        assert_eq!(
            Header::decode(&raw, 100),
            Err(DecodeError::UnknownFrameType {
                value: 4,
                seq_id: 9
            })
        );
        raw[2] = 2;
        assert_eq!(
            Header::decode(&raw, 100),
            Err(DecodeError::UnsupportedVersion(2))
        );
        raw[0] = b'G';
        assert_eq!(
            Header::decode(&raw, 100),
            Err(DecodeError::BadMagic(0x474C))
        );
    }
}
