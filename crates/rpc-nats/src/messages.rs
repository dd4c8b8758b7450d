//! The internal messages of the role contracts, as protobuf (prost derives; the client-facing
//! bodies of `longlink_proto::wire` travel inside them unchanged). Internal only: gates and
//! logic of one release talk to each other, so there is no .proto file to publish; fields are
//! still only ever added, so a rolling upgrade can mix two neighbouring releases.

use bytes::Bytes;
use longlink_proto::{Frame, FrameType, Header, wire};
use longlink_rpc::{KickNotice, Refusal, SessionInfo};

/// A session as both sides name it.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SessionMsg {
    #[prost(string, tag = "1")]
    pub gate_id: String,
    #[prost(uint64, tag = "2")]
    pub session_id: u64,
    #[prost(uint32, tag = "3")]
    pub appcode: u32,
    #[prost(string, tag = "4")]
    pub uid: String,
    #[prost(string, tag = "5")]
    pub device_id: String,
    #[prost(uint64, tag = "6")]
    pub epoch: u64,
}

impl From<&SessionInfo> for SessionMsg {
    fn from(s: &SessionInfo) -> Self {
        SessionMsg {
            gate_id: s.gate_id.clone(),
            session_id: s.session_id,
            appcode: s.appcode,
            uid: s.uid.clone(),
            device_id: s.device_id.clone(),
            epoch: s.epoch,
        }
    }
}

impl From<SessionMsg> for SessionInfo {
    fn from(s: SessionMsg) -> Self {
        SessionInfo {
            gate_id: s.gate_id,
            session_id: s.session_id,
            appcode: s.appcode,
            uid: s.uid,
            device_id: s.device_id,
            epoch: s.epoch,
        }
    }
}

/// A client frame, header fields and body.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct FrameMsg {
    #[prost(uint32, tag = "1")]
    pub flags: u32,
    #[prost(uint64, tag = "2")]
    pub log_id: u64,
    #[prost(uint32, tag = "3")]
    pub seq_id: u32,
    #[prost(uint32, tag = "4")]
    pub cmd: u32,
    #[prost(uint32, tag = "5")]
    pub frame_type: u32,
    #[prost(bytes = "bytes", tag = "6")]
    pub body: Bytes,
}

impl From<&Frame> for FrameMsg {
    fn from(f: &Frame) -> Self {
        FrameMsg {
            flags: u32::from(f.header.flags),
            log_id: f.header.log_id,
            seq_id: f.header.seq_id,
            cmd: u32::from(f.header.cmd),
            frame_type: f.header.frame_type as u32,
            body: f.body.clone(),
        }
    }
}

impl TryFrom<FrameMsg> for Frame {
    type Error = String;

    fn try_from(f: FrameMsg) -> Result<Self, String> {
        let frame_type = u8::try_from(f.frame_type)
            .ok()
            .and_then(|t| FrameType::try_from(t).ok())
            .ok_or_else(|| format!("bad frame type {}", f.frame_type))?;
        Ok(Frame {
            header: Header {
                flags: u8::try_from(f.flags).map_err(|_| format!("bad flags {}", f.flags))?,
                log_id: f.log_id,
                seq_id: f.seq_id,
                cmd: u16::try_from(f.cmd).map_err(|_| format!("bad cmd {}", f.cmd))?,
                frame_type,
                body_len: u32::try_from(f.body.len()).map_err(|_| "body too long".to_owned())?,
            },
            body: f.body,
        })
    }
}

/// A refusal: the ERROR the client gets.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RefusalMsg {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(uint32, tag = "3")]
    pub retry_after_ms: u32,
}

impl From<&Refusal> for RefusalMsg {
    fn from(r: &Refusal) -> Self {
        RefusalMsg {
            code: r.code as i32,
            message: r.message.clone(),
            retry_after_ms: r.retry_after_ms,
        }
    }
}

impl From<RefusalMsg> for Refusal {
    fn from(r: RefusalMsg) -> Self {
        let code = longlink_proto::ErrorCode::try_from(r.code)
            .unwrap_or(longlink_proto::ErrorCode::Internal);
        Refusal::new(code, r.message).retry_after(r.retry_after_ms)
    }
}

// ---------------------------------------------------------------------------------------------
// gate → logic

/// One call of `LogicService`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LogicCall {
    #[prost(oneof = "logic_call::Call", tags = "1, 2, 3, 4, 5")]
    pub call: Option<logic_call::Call>,
}

pub(crate) mod logic_call {
    use super::*;

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(crate) enum Call {
        #[prost(message, tag = "1")]
        Login(LoginCall),
        #[prost(message, tag = "2")]
        Resume(ResumeCall),
        #[prost(message, tag = "3")]
        Ready(ReadyCall),
        #[prost(message, tag = "4")]
        Handle(HandleCall),
        #[prost(message, tag = "5")]
        Closed(SessionMsg),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LoginCall {
    #[prost(string, tag = "1")]
    pub gate_id: String,
    #[prost(uint64, tag = "2")]
    pub session_id: u64,
    #[prost(message, optional, tag = "3")]
    pub request: Option<wire::LoginRequest>,
    #[prost(uint64, tag = "4")]
    pub log_id: u64,
    /// The client's IP as text; empty = none.
    #[prost(string, tag = "5")]
    pub peer: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ResumeCall {
    #[prost(string, tag = "1")]
    pub gate_id: String,
    #[prost(uint64, tag = "2")]
    pub session_id: u64,
    #[prost(message, optional, tag = "3")]
    pub request: Option<wire::ResumeRequest>,
    #[prost(uint64, tag = "4")]
    pub log_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ReadyCall {
    #[prost(message, optional, tag = "1")]
    pub session: Option<SessionMsg>,
    #[prost(bool, tag = "2")]
    pub resumed: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HandleCall {
    #[prost(message, optional, tag = "1")]
    pub session: Option<SessionMsg>,
    #[prost(message, optional, tag = "2")]
    pub frame: Option<FrameMsg>,
}

/// Logic's answer to a [`LogicCall`].
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LogicAnswer {
    #[prost(oneof = "logic_answer::Answer", tags = "1, 2, 3, 4, 5, 6, 7")]
    pub answer: Option<logic_answer::Answer>,
}

pub(crate) mod logic_answer {
    use super::*;

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(crate) enum Answer {
        #[prost(message, tag = "1")]
        LoginOk(LoginOk),
        #[prost(message, tag = "2")]
        ResumeOk(ResumeOk),
        #[prost(message, tag = "3")]
        Refused(RefusalMsg),
        /// `Reply::Frame`.
        #[prost(message, tag = "4")]
        Frame(FrameMsg),
        /// `Reply::FrameThenClose`.
        #[prost(message, tag = "5")]
        FrameThenClose(FrameMsg),
        /// `Reply::Nothing`, and the answer to calls without a result (ready, closed).
        #[prost(bool, tag = "6")]
        Done(bool),
        /// The call could not be decoded or served: a bug or a version skew.
        #[prost(string, tag = "7")]
        Failed(String),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LoginOk {
    #[prost(message, optional, tag = "1")]
    pub session: Option<SessionMsg>,
    #[prost(message, optional, tag = "2")]
    pub response: Option<wire::LoginResponse>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ResumeOk {
    #[prost(message, optional, tag = "1")]
    pub session: Option<SessionMsg>,
    #[prost(message, optional, tag = "2")]
    pub response: Option<wire::ResumeResponse>,
}

// ---------------------------------------------------------------------------------------------
// logic → gate

/// One call of `GatePush` on the gate the subject names.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct GateCall {
    #[prost(uint64, tag = "1")]
    pub session_id: u64,
    #[prost(oneof = "gate_call::Call", tags = "2, 3, 4, 5, 6")]
    pub call: Option<gate_call::Call>,
}

pub(crate) mod gate_call {
    use super::*;

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(crate) enum Call {
        /// An encoded frame to queue.
        #[prost(bytes = "bytes", tag = "2")]
        Push(Bytes),
        /// An encoded frame to queue only if there is room.
        #[prost(bytes = "bytes", tag = "3")]
        Offer(Bytes),
        #[prost(message, tag = "4")]
        Tracked(Tracked),
        #[prost(message, tag = "5")]
        Kick(KickMsg),
        #[prost(bool, tag = "6")]
        Detach(bool),
    }
}

/// A push whose write the gate reports to `receipt_subject` with `tag`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Tracked {
    #[prost(bytes = "bytes", tag = "1")]
    pub frame: Bytes,
    #[prost(string, tag = "2")]
    pub receipt_subject: String,
    #[prost(uint64, tag = "3")]
    pub tag: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct KickMsg {
    #[prost(int32, tag = "1")]
    pub reason: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(string, tag = "3")]
    pub by_device_id: String,
}

impl From<&KickNotice> for KickMsg {
    fn from(k: &KickNotice) -> Self {
        KickMsg {
            reason: k.reason as i32,
            message: k.message.clone(),
            by_device_id: k.by_device_id.clone(),
        }
    }
}

impl From<KickMsg> for KickNotice {
    fn from(k: KickMsg) -> Self {
        KickNotice {
            reason: longlink_proto::KickReason::try_from(k.reason)
                .unwrap_or(longlink_proto::KickReason::Unspecified),
            message: k.message,
            by_device_id: k.by_device_id,
        }
    }
}

/// The gate's answer to a [`GateCall`]: 0 done, else a `PushError` ([`push_error_code`]).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct GateAnswer {
    #[prost(uint32, tag = "1")]
    pub outcome: u32,
}

/// A tracked frame was written.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Written {
    #[prost(uint64, tag = "1")]
    pub tag: u64,
}

/// The wire number of a push outcome.
pub(crate) fn push_error_code(result: Result<(), longlink_rpc::PushError>) -> u32 {
    use longlink_rpc::PushError;
    match result {
        Ok(()) => 0,
        Err(PushError::NoSession) => 1,
        Err(PushError::SlowConsumer) => 2,
        Err(PushError::Unreachable) => 3,
    }
}

/// The push outcome of a wire number (unknown numbers read as "no session").
pub(crate) fn push_result(code: u32) -> Result<(), longlink_rpc::PushError> {
    use longlink_rpc::PushError;
    match code {
        0 => Ok(()),
        2 => Err(PushError::SlowConsumer),
        3 => Err(PushError::Unreachable),
        _ => Err(PushError::NoSession),
    }
}
