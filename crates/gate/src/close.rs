//! Why and how a connection ends: [`CloseReason`], the close state its reader, writer and
//! the session table share ([`ConnShared`]), and the KICK frame sent before a close.

use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;
use longlink_proto::{Cmd, ErrorCode, Frame, KickReason, wire};

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
    /// The gate is draining: the client was told to reconnect (elsewhere).
    Drained,
    /// A RESUME on another connection took the session over.
    Resumed,
    /// Admission control turned a LOGIN away (rate, or the gate drains) with a retry-after.
    NotAdmitted,
    /// The client kept sending frames beyond its per-connection rate without waiting the
    /// `retry_after_ms` of its RATE_LIMITED refusals ([`crate::limits`]).
    Flooding,
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
            CloseReason::Drained => "drained",
            CloseReason::Resumed => "resumed",
            CloseReason::NotAdmitted => "not_admitted",
            CloseReason::Flooding => "flooding",
            CloseReason::Io => "io",
        }
    }

    /// Whether the session outlives this close for the hold, waiting for a RESUME: when the
    /// link failed (the client did not choose to leave, and nobody ended the session), and
    /// when a drain moved the client (it resumes on the gate it was sent to).
    pub fn holds_session(&self) -> bool {
        matches!(
            self,
            CloseReason::ByPeer
                | CloseReason::IdleTimeout
                | CloseReason::SlowConsumer
                | CloseReason::Io
                | CloseReason::Drained
        )
    }
}

/// Who a logged-in connection is, for the access-list sweep (`access.rs`): the session and
/// the peer's IP.
#[derive(Debug, Clone)]
pub(crate) struct Visitor {
    pub(crate) session: longlink_rpc::SessionInfo,
    pub(crate) ip: std::net::IpAddr,
}

/// What one connection shares between its reader, its writer and the session table.
#[derive(Debug)]
pub(crate) struct ConnShared {
    /// Wakes the reader and the writer when the connection is closed from outside its reader
    /// (kick, slow consumer, drain): a `Notify` inside this struct rather than a
    /// `CancellationToken`, whose tree node is one more allocation per connection.
    closing: tokio::sync::Notify,
    reason: AtomicU8,
    /// `appcode:uid/device` once logged in: the `who` of the ledger events its writer records.
    pub(crate) label: std::sync::OnceLock<std::sync::Arc<str>>,
    /// The session and peer IP once logged in: what the access-list sweep re-checks.
    pub(crate) visitor: std::sync::OnceLock<Visitor>,
    /// The device class the LOGIN named (unknown after a RESUME: empty).
    pub(crate) device_class: std::sync::OnceLock<String>,
    /// Unix milliseconds when the session logged in or resumed on this connection.
    pub(crate) since_ms: std::sync::OnceLock<u64>,
}

impl ConnShared {
    pub(crate) fn new() -> Self {
        Self {
            closing: tokio::sync::Notify::new(),
            reason: AtomicU8::new(0),
            label: std::sync::OnceLock::new(),
            visitor: std::sync::OnceLock::new(),
            device_class: std::sync::OnceLock::new(),
            since_ms: std::sync::OnceLock::new(),
        }
    }

    /// Closes the connection for `reason` (the first reason given wins).
    pub(crate) fn close(&self, reason: CloseReason) {
        let code = match reason {
            CloseReason::Kicked => 1,
            CloseReason::SlowConsumer => 2,
            CloseReason::Drained => 4,
            CloseReason::Resumed => 5,
            _ => 3,
        };
        let _ = self
            .reason
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.closing.notify_waiters();
    }

    /// Resolves once [`ConnShared::close`] has been called (at once if it was). Cancel-safe.
    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.closing.notified();
            tokio::pin!(notified);
            // Registered before the check: a close in between wakes it.
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Whether [`ConnShared::close`] was called: one atomic load (the token's own check takes
    /// a lock, and every frame queued in direct mode asks).
    pub(crate) fn is_closed(&self) -> bool {
        self.reason.load(Ordering::Acquire) != 0
    }

    /// Why [`ConnShared::close`] was called.
    pub(crate) fn reason(&self) -> CloseReason {
        match self.reason.load(Ordering::Acquire) {
            1 => CloseReason::Kicked,
            2 => CloseReason::SlowConsumer,
            4 => CloseReason::Drained,
            5 => CloseReason::Resumed,
            _ => CloseReason::Io,
        }
    }
}

/// A KICK push: why, and the reconnect advice that goes with it.
#[derive(Debug, Clone)]
pub(crate) struct Kick {
    pub(crate) reason: KickReason,
    pub(crate) message: String,
    pub(crate) reconnect_to: String,
    pub(crate) backoff_ms: u32,
    pub(crate) by_device_id: String,
}

impl Kick {
    pub(crate) fn new(reason: KickReason, message: &str, backoff_ms: u32) -> Self {
        Self {
            reason,
            message: message.to_owned(),
            reconnect_to: String::new(),
            backoff_ms,
            by_device_id: String::new(),
        }
    }

    /// The encoded KICK frame.
    pub(crate) fn frame(&self) -> Bytes {
        Frame::push(
            Cmd::Kick,
            0,
            &wire::Kick {
                reason: self.reason as i32,
                message: self.message.clone(),
                reconnect_to: self.reconnect_to.clone(),
                backoff_ms: self.backoff_ms,
                by_device_id: self.by_device_id.clone(),
            },
        )
        .to_bytes()
    }
}
