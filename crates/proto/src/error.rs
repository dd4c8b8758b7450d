//! Typed decode errors and their mapping to wire [`ErrorCode`]s.

use crate::ErrorCode;

/// Why bytes could not become a frame. Every variant maps to the [`ErrorCode`] that the gate
/// sends in an ERROR frame before it closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The first two bytes are not "LL".
    #[error("bad magic 0x{0:04x}")]
    BadMagic(u16),
    /// The version byte is not 1.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// The type byte is not 0..=3.
    #[error("unknown frame type {value}")]
    UnknownFrameType {
        /// The type byte received.
        value: u8,
        /// The frame's seq_id, echoed in the ERROR.
        seq_id: u32,
    },
    /// `body_len` is above the configured maximum; refused before any allocation.
    #[error("body of {len} bytes exceeds the maximum of {max}")]
    BodyTooLarge {
        /// The announced body length.
        len: u32,
        /// The configured maximum.
        max: u32,
        /// The frame's seq_id, echoed in the ERROR.
        seq_id: u32,
    },
}

impl DecodeError {
    /// The wire error code for this error.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            DecodeError::BadMagic(_) => ErrorCode::BadMagic,
            DecodeError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            DecodeError::UnknownFrameType { .. } => ErrorCode::BadFrameType,
            DecodeError::BodyTooLarge { .. } => ErrorCode::BodyTooLarge,
        }
    }

    /// The offending frame's seq_id, when the header got far enough to be trusted.
    pub fn seq_id(&self) -> Option<u32> {
        match self {
            DecodeError::UnknownFrameType { seq_id, .. }
            | DecodeError::BodyTooLarge { seq_id, .. } => Some(*seq_id),
            DecodeError::BadMagic(_) | DecodeError::UnsupportedVersion(_) => None,
        }
    }
}

/// A frame's body is not a valid protobuf of the expected message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad {cmd} body: {reason}")]
pub struct BodyError {
    /// The command whose body failed.
    pub cmd: u16,
    /// prost's description of the failure.
    pub reason: String,
}

/// Errors of [`crate::FrameCodec`]: a protocol error or an I/O error of the transport.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a valid frame.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
