//! Why and how a connection ends: [`CloseReason`], the close state its reader, writer and
//! the session table share ([`ConnShared`]), and the KICK frame sent before a close.

use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;
use longlink_proto::{Cmd, ErrorCode, Frame, KickReason, wire};
use tokio_util::sync::CancellationToken;

/// Why a connection ended: logged once, when the session is unregistered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed the socket.
    ByPeer,
    /// The client sent LOGOUT.
    Logout,
    /// No successful LOGIN within the login timeout.
    LoginTimeout,
    /// Nothing received within the idle timeout.
    IdleTimeout,
    /// A newer session replaced this one, or an operator kicked it.
    Kicked,
    /// The write queue stayed full: the client does not read.
    SlowConsumer,
    /// The client broke the protocol; it got an ERROR with this code first.
    ProtocolError(ErrorCode),
    /// The server is stopping.
    ServerShutdown,
    /// The socket failed.
    Io,
}

impl CloseReason {
    /// A short lowercase label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            CloseReason::ByPeer => "by_peer",
            CloseReason::Logout => "logout",
            CloseReason::LoginTimeout => "login_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Kicked => "kicked",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::ProtocolError(_) => "protocol_error",
            CloseReason::ServerShutdown => "server_shutdown",
            CloseReason::Io => "io",
        }
    }
}

/// What one connection shares between its reader, its writer and the session table.
#[derive(Debug)]
pub(crate) struct ConnShared {
    /// Cancelled to close the connection from outside its reader (kick, slow consumer).
    pub(crate) token: CancellationToken,
    reason: AtomicU8,
    /// `appcode:uid/device` once logged in: the `who` of the ledger events its writer records.
    pub(crate) label: std::sync::OnceLock<std::sync::Arc<str>>,
}

impl ConnShared {
    pub(crate) fn new() -> Self {
        Self {
            token: CancellationToken::new(),
            reason: AtomicU8::new(0),
            label: std::sync::OnceLock::new(),
        }
    }

    /// Closes the connection for `reason` (the first reason given wins).
    pub(crate) fn close(&self, reason: CloseReason) {
        let code = match reason {
            CloseReason::Kicked => 1,
            CloseReason::SlowConsumer => 2,
            _ => 3,
        };
        let _ = self
            .reason
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }

    /// Why [`ConnShared::close`] was called.
    pub(crate) fn reason(&self) -> CloseReason {
        match self.reason.load(Ordering::Acquire) {
            1 => CloseReason::Kicked,
            2 => CloseReason::SlowConsumer,
            _ => CloseReason::Io,
        }
    }
}

/// The KICK push for `reason`.
pub(crate) fn kick_frame(reason: KickReason, message: &str, backoff_ms: u32) -> Bytes {
    Frame::push(
        Cmd::Kick,
        0,
        &wire::Kick {
            reason: reason as i32,
            message: message.to_owned(),
            reconnect_to: String::new(),
            backoff_ms,
        },
    )
    .to_bytes()
}
