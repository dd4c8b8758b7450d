//! [`ApiError`]: the one error type of every operation, whichever surface serves it.
//!
//! An error carries an [`ErrorKind`] (the spec's error table: HTTP status, gRPC code and the
//! JSON `code` string) and a one-line message. Operations return it; the HTTP layer renders
//! it as `{"error": {"code", "message"}}` and the gRPC layer as a `tonic::Status`, so both
//! surfaces answer the same failure with the same code.

use longlink_bus::BusError;
use longlink_presence::PresenceError;
use longlink_rpc::notify::NotifyError;
use longlink_rpc::push::PushRefusal;

/// The rows of the spec's error table (docs/api.md, "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 400 / INVALID_ARGUMENT: bad JSON, unknown or missing fields, a value out of range.
    InvalidArgument,
    /// 401 / UNAUTHENTICATED: missing or unknown API key.
    Unauthenticated,
    /// 403 / PERMISSION_DENIED: the key does not cover the appcode or topic.
    PermissionDenied,
    /// 404 / NOT_FOUND: unknown push id, topic or route.
    NotFound,
    /// 413 / INVALID_ARGUMENT: request body above the limit.
    PayloadTooLarge,
    /// 415 / INVALID_ARGUMENT: a JSON body without `content-type: application/json`.
    UnsupportedMediaType,
    /// 503 / UNAVAILABLE: a backend failed; retry.
    Unavailable,
    /// 503 / RESOURCE_EXHAUSTED: too many pushes in progress; retry later.
    Overloaded,
}

impl ErrorKind {
    /// The JSON `code` string (`"invalid_argument"`, …).
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::UnsupportedMediaType => "unsupported_media_type",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Overloaded => "overloaded",
        }
    }

    /// The HTTP status code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidArgument => 400,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::Unavailable | ErrorKind::Overloaded => 503,
        }
    }

    /// The gRPC status code.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorKind::InvalidArgument
            | ErrorKind::PayloadTooLarge
            | ErrorKind::UnsupportedMediaType => tonic::Code::InvalidArgument,
            ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorKind::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::Unavailable => tonic::Code::Unavailable,
            ErrorKind::Overloaded => tonic::Code::ResourceExhausted,
        }
    }
}

/// A refused or failed API call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.code())]
pub struct ApiError {
    kind: ErrorKind,
    message: String,
}

impl ApiError {
    /// An error of `kind`; `message` should be one line.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// 400 invalid_argument.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// 401 unauthenticated.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, message)
    }

    /// 403 permission_denied.
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PermissionDenied, message)
    }

    /// 404 not_found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// 503 unavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// Which row of the error table this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The one-line message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<BusError> for ApiError {
    fn from(err: BusError) -> Self {
        match err {
            BusError::InvalidArgument(message) => Self::invalid_argument(message),
            // `Full` is a publisher's condition; a consumer seeing it is told to back off.
            BusError::Full(topic) => {
                Self::new(ErrorKind::Overloaded, format!("topic {topic} is full"))
            }
            BusError::Unavailable(message) => Self::unavailable(format!("bus: {message}")),
        }
    }
}

impl From<PresenceError> for ApiError {
    fn from(err: PresenceError) -> Self {
        match err {
            PresenceError::Unavailable(message) => {
                Self::unavailable(format!("presence: {message}"))
            }
        }
    }
}

impl From<PushRefusal> for ApiError {
    fn from(refusal: PushRefusal) -> Self {
        match refusal {
            PushRefusal::InvalidArgument(message) => Self::invalid_argument(message),
            PushRefusal::UnknownAppcode(appcode) => {
                Self::invalid_argument(format!("appcode {appcode} is not configured"))
            }
            PushRefusal::Unavailable(message) => Self::unavailable(message),
            PushRefusal::Overloaded(message) => Self::new(ErrorKind::Overloaded, message),
        }
    }
}

impl From<NotifyError> for ApiError {
    fn from(err: NotifyError) -> Self {
        match err {
            NotifyError::InvalidArgument(message) => Self::invalid_argument(message),
            NotifyError::NotFound(message) => Self::not_found(message),
            NotifyError::Unavailable(message) => {
                Self::unavailable(format!("notifications: {message}"))
            }
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(err: ApiError) -> Self {
        let mut status = tonic::Status::new(err.kind.grpc_code(), err.message);
        // The spec's code string too, so a gRPC client can tell payload_too_large from
        // invalid_argument (both INVALID_ARGUMENT) the way an HTTP client can.
        if let Ok(value) = err.kind.code().parse() {
            status.metadata_mut().insert("x-longlink-error", value);
        }
        status
    }
}
