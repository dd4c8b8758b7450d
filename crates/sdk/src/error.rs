//! [`ClientError`]: everything a request can fail with.

use longlink_proto::{CodecError, ErrorCode};

/// Why a client call failed.
///
/// Non-exhaustive: match the variants you handle and keep a wildcard arm (or use
/// [`ClientError::is_retryable`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection could not be established (refused, unreachable, connect timeout).
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    /// The established connection failed while reading or writing.
    #[error("i/o error: {0}")]
    Io(#[source] std::io::Error),
    /// No answer within [`crate::ClientConfig::request_timeout`] (also while the client was
    /// reconnecting). The request may or may not have reached the server: retry idempotent
    /// calls (a C2C with the same client_msg_id).
    #[error("request timed out")]
    Timeout,
    /// The client is done for good: closed by [`crate::Client::close`] or
    /// [`crate::Client::logout`], kicked (REPLACED, LOGGED_OUT, BLOCKED), refused at a
    /// re-login (e.g. BAD_TOKEN), or the connection dropped and
    /// [`crate::ClientConfig::reconnect`] is `None`; requests still pending then get this too.
    #[error("connection closed")]
    Closed,
    /// The link dropped while this request was in flight and the request is not safe to
    /// send again on the next connection (a C2C or C2S with an empty client_msg_id): it may
    /// or may not have been applied. The client itself is reconnecting.
    #[error("connection lost while the request was in flight")]
    Disconnected,
    /// A send ([`crate::Client::c2c`], [`crate::Client::c2c_with_id`],
    /// [`crate::Client::c2s`]) was retried with the same client_msg_id until
    /// [`crate::ClientConfig::send_deadline`] passed, without an answer: the message may or
    /// may not be stored. Retrying later with the same client_msg_id is safe.
    #[error("send deadline exceeded after {attempts} attempt(s); last error: {last}")]
    DeadlineExceeded {
        /// How many times the request was sent (or queued for sending).
        attempts: u32,
        /// The last attempt's error (a timeout or a retryable server code).
        last: Box<ClientError>,
    },
    /// The server answered with an ERROR frame.
    #[error("server error {}: {message}", code.as_str_name())]
    Server {
        /// The status code (an unknown code reads as `ERROR_CODE_UNSPECIFIED`).
        code: ErrorCode,
        /// The server's explanation.
        message: String,
        /// How long the server asks the client to wait before trying again (ERROR
        /// `retry_after_ms`, e.g. with RATE_LIMITED during a reconnect storm); `None` when it
        /// gave no hint.
        retry_after: Option<std::time::Duration>,
    },
    /// The server sent something this client cannot make sense of (bad frame, bad body,
    /// a response of the wrong command).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The TLS settings cannot be used ([`crate::ClientConfig::tls`]: an unreadable CA file,
    /// no certificate in it, an invalid server name). A failed TLS handshake (e.g. a
    /// certificate the CA did not sign) is a [`ClientError::Connect`].
    #[error("tls configuration: {0}")]
    Tls(String),
}

impl ClientError {
    /// Whether the same call may succeed if retried (possibly after reconnecting):
    /// timeouts, closed or failed connections, exceeded send deadlines, and the server's
    /// "try again" codes (RATE_LIMITED, STORE_UNAVAILABLE, BUS_UNAVAILABLE, OVERLOADED,
    /// SHUTTING_DOWN, INTERNAL).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect(_)
            | ClientError::Io(_)
            | ClientError::Timeout
            | ClientError::Closed
            | ClientError::Disconnected
            | ClientError::DeadlineExceeded { .. } => true,
            ClientError::Server { code, .. } => is_transient(*code) || *code == ErrorCode::Internal,
            ClientError::Protocol(_) | ClientError::Tls(_) => false,
        }
    }

    /// The wait the server asked for before a retry (ERROR `retry_after_ms`), if any.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ClientError::Server { retry_after, .. } => *retry_after,
            ClientError::DeadlineExceeded { last, .. } => last.retry_after(),
            _ => None,
        }
    }

    /// The server's error code, if this is [`ClientError::Server`].
    pub fn server_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether a send retries after this error (same client_msg_id, after a backoff): a
    /// timed-out attempt, or one of the server's transient refusals. INTERNAL is not retried
    /// automatically (a server bug is not worth a send deadline of attempts).
    pub(crate) fn send_retryable(&self) -> bool {
        match self {
            ClientError::Timeout | ClientError::Io(_) => true,
            ClientError::Server { code, .. } => is_transient(*code),
            _ => false,
        }
    }

    /// Whether a login refused with this error must not be retried by reconnecting: the
    /// credentials themselves are wrong (BAD_TOKEN, UNKNOWN_APPCODE, APPCODE_MISMATCH) or the
    /// server refused for a reason retrying cannot fix.
    pub(crate) fn is_fatal_login_refusal(&self) -> bool {
        match self {
            ClientError::Server { code, .. } => !matches!(
                code,
                ErrorCode::RateLimited
                    | ErrorCode::StoreUnavailable
                    | ErrorCode::BusUnavailable
                    | ErrorCode::Overloaded
                    | ErrorCode::ShuttingDown
                    | ErrorCode::Internal
                    | ErrorCode::LoginTimeout
                    | ErrorCode::IdleTimeout
            ),
            ClientError::Protocol(_) | ClientError::Tls(_) => true,
            _ => false,
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
            retry_after: (err.retry_after_ms > 0)
                .then(|| std::time::Duration::from_millis(u64::from(err.retry_after_ms))),
        }
    }
}

/// A wire error code; unknown values read as `ERROR_CODE_UNSPECIFIED`.
pub(crate) fn error_code(raw: i32) -> ErrorCode {
    ErrorCode::try_from(raw).unwrap_or(ErrorCode::Unspecified)
}

/// The server's "try again later" refusals: nothing was done, the same request may succeed.
fn is_transient(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::RateLimited
            | ErrorCode::StoreUnavailable
            | ErrorCode::BusUnavailable
            | ErrorCode::Overloaded
            | ErrorCode::ShuttingDown
    )
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
            retry_after: None,
        };
        assert!(server(ErrorCode::Overloaded).is_retryable());
        assert!(server(ErrorCode::StoreUnavailable).is_retryable());
        assert!(!server(ErrorCode::InvalidArgument).is_retryable());
        assert!(!server(ErrorCode::BadToken).is_retryable());
        assert!(!ClientError::Protocol("x".into()).is_retryable());
        assert!(server(ErrorCode::Overloaded).send_retryable());
        assert!(server(ErrorCode::ShuttingDown).send_retryable());
        assert!(!server(ErrorCode::Internal).send_retryable());
        assert!(!server(ErrorCode::InvalidArgument).send_retryable());
        assert!(!server(ErrorCode::UnknownReceiverAppcode).send_retryable());
        assert!(!ClientError::Closed.send_retryable());
        assert!(server(ErrorCode::BadToken).is_fatal_login_refusal());
        assert!(server(ErrorCode::UnknownAppcode).is_fatal_login_refusal());
        assert!(server(ErrorCode::AppcodeMismatch).is_fatal_login_refusal());
        assert!(!server(ErrorCode::Overloaded).is_fatal_login_refusal());
        assert!(!ClientError::Timeout.is_fatal_login_refusal());
        let exceeded = ClientError::DeadlineExceeded {
            attempts: 3,
            last: Box::new(ClientError::Timeout),
        };
        assert!(exceeded.is_retryable());
        assert_eq!(
            exceeded.to_string(),
            "send deadline exceeded after 3 attempt(s); last error: request timed out"
        );
        assert_eq!(error_code(9999), ErrorCode::Unspecified);
        assert_eq!(
            server(ErrorCode::NotFound).to_string(),
            "server error NOT_FOUND: "
        );
    }
}
