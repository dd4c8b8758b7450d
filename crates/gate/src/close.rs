//! Why a connection ended.

use longlink_proto::ErrorCode;

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
