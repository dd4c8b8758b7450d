//! [`ClientError`]: everything a request can fail with.

use longlink_proto::{CodecError, ErrorCode};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection could not be established (refused, unreachable, connect timeout).
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    /// The established connection failed while reading or writing.
    #[error("i/o error: {0}")]
    Io(#[source] std::io::Error),
    /// No answer within [`crate::ClientConfig::request_timeout`]. The request may or may not
    /// have reached the server: retry idempotent calls (a C2C with the same client_msg_id).
    #[error("request timed out")]
    Timeout,
    /// The connection is closed (by the server, by the network, by a keepalive timeout, or by
    /// [`crate::Client::close`]); requests still pending when it closed get this too.
    #[error("connection closed")]
    Closed,
    /// The server answered with an ERROR frame.
    #[error("server error {}: {message}", code.as_str_name())]
    Server {
        /// The status code (an unknown code reads as `ERROR_CODE_UNSPECIFIED`).
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server sent something this client cannot make sense of (bad frame, bad body,
    /// a response of the wrong command).
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// Whether the same call may succeed if retried (possibly after reconnecting):
    /// timeouts, closed or failed connections, and the server's "try again" codes
    /// (RATE_LIMITED, STORE_UNAVAILABLE, BUS_UNAVAILABLE, OVERLOADED, SHUTTING_DOWN, INTERNAL).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect(_)
            | ClientError::Io(_)
            | ClientError::Timeout
            | ClientError::Closed => true,
            ClientError::Server { code, .. } => matches!(
                code,
                ErrorCode::RateLimited
                    | ErrorCode::StoreUnavailable
                    | ErrorCode::BusUnavailable
                    | ErrorCode::Overloaded
                    | ErrorCode::ShuttingDown
                    | ErrorCode::Internal
            ),
            ClientError::Protocol(_) => false,
        }
    }

    /// The server's error code, if this is [`ClientError::Server`].
    pub fn server_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn from_codec(err: CodecError) -> Self {
        match err {
            CodecError::Io(err) => ClientError::Io(err),
            CodecError::Decode(err) => ClientError::Protocol(err.to_string()),
        }
    }

    pub(crate) fn from_wire(err: longlink_proto::wire::Error) -> Self {
        ClientError::Server {
            code: error_code(err.code),
            message: err.message,
        }
    }
}

/// A wire error code; unknown values read as `ERROR_CODE_UNSPECIFIED`.
pub(crate) fn error_code(raw: i32) -> ErrorCode {
    ErrorCode::try_from(raw).unwrap_or(ErrorCode::Unspecified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        assert!(ClientError::Timeout.is_retryable());
        assert!(ClientError::Closed.is_retryable());
        let server = |code| ClientError::Server {
            code,
            message: String::new(),
        };
        assert!(server(ErrorCode::Overloaded).is_retryable());
        assert!(server(ErrorCode::StoreUnavailable).is_retryable());
        assert!(!server(ErrorCode::InvalidArgument).is_retryable());
        assert!(!server(ErrorCode::BadToken).is_retryable());
        assert!(!ClientError::Protocol("x".into()).is_retryable());
        assert_eq!(error_code(9999), ErrorCode::Unspecified);
        assert_eq!(
            server(ErrorCode::NotFound).to_string(),
            "server error NOT_FOUND: "
        );
    }
}
