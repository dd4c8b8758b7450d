//! A whole frame (header + body) and helpers to build the common shapes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{BodyError, Cmd, ErrorCode, FrameType, HEADER_LEN, Header, wire};

/// One frame: the header and its (still encoded) protobuf body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The decoded header; `header.body_len` equals `body.len()` for frames built here.
    pub header: Header,
    /// The protobuf body.
    pub body: Bytes,
}

impl Frame {
    /// Builds a frame of `cmd`/`frame_type` with `body` encoded as protobuf.
    pub fn new(
        cmd: Cmd,
        frame_type: FrameType,
        seq_id: u32,
        log_id: u64,
        body: &impl prost::Message,
    ) -> Frame {
        let body = Bytes::from(body.encode_to_vec());
        Frame {
            header: Header {
                flags: 0,
                log_id,
                seq_id,
                cmd: cmd as u16,
                frame_type,
                body_len: body.len() as u32,
            },
            body,
        }
    }

    /// A request (type 0).
    pub fn request(cmd: Cmd, seq_id: u32, log_id: u64, body: &impl prost::Message) -> Frame {
        Frame::new(cmd, FrameType::Request, seq_id, log_id, body)
    }

    /// The response to the request `to`: same cmd, seq_id and log_id, type 1.
    pub fn response(to: &Header, body: &impl prost::Message) -> Frame {
        let mut frame = Frame::new(Cmd::Login, FrameType::Response, to.seq_id, to.log_id, body);
        frame.header.cmd = to.cmd;
        frame
    }

    /// A server push (type 2, seq_id 0).
    pub fn push(cmd: Cmd, log_id: u64, body: &impl prost::Message) -> Frame {
        Frame::new(cmd, FrameType::Push, 0, log_id, body)
    }

    /// An ERROR frame. With `seq_id` it answers that request (type 1); without, it is a push.
    pub fn error(
        seq_id: Option<u32>,
        log_id: u64,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Frame {
        Frame::error_body(
            seq_id,
            log_id,
            &wire::Error {
                code: code as i32,
                message: message.into(),
                retry_after_ms: 0,
            },
        )
    }

    /// An ERROR frame with a whole body (e.g. with `retry_after_ms`); `seq_id` as in
    /// [`Frame::error`].
    pub fn error_body(seq_id: Option<u32>, log_id: u64, body: &wire::Error) -> Frame {
        match seq_id {
            Some(seq_id) => Frame::new(Cmd::Error, FrameType::Response, seq_id, log_id, body),
            None => Frame::push(Cmd::Error, log_id, body),
        }
    }

    /// The named command, or `None` for an id this version does not know.
    pub fn cmd(&self) -> Option<Cmd> {
        Cmd::try_from(self.header.cmd).ok()
    }

    /// Decodes the body as `M`.
    ///
    /// # Errors
    /// [`BodyError`] when the bytes are not a valid `M`.
    pub fn decode_body<M: prost::Message + Default>(&self) -> Result<M, BodyError> {
        M::decode(self.body.clone()).map_err(|err| BodyError {
            cmd: self.header.cmd,
            reason: err.to_string(),
        })
    }

    /// Appends header and body to `dst`.
    pub fn encode_to(&self, dst: &mut BytesMut) {
        let mut header = self.header;
        header.body_len = self.body.len() as u32;
        dst.reserve(HEADER_LEN + self.body.len());
        dst.put_slice(&header.encode());
        dst.put_slice(&self.body);
    }

    /// Header and body as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut dst = BytesMut::with_capacity(HEADER_LEN + self.body.len());
        self.encode_to(&mut dst);
        dst.freeze()
    }
}
