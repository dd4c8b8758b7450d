//! One file per command (mini-redis `cmd/` layout).

pub(crate) mod c2c;
pub(crate) mod c2s;
pub(crate) mod history_pull;
pub(crate) mod login;
pub(crate) mod logout;
pub(crate) mod msg_ack;
pub(crate) mod offline_pull;
pub(crate) mod redeliver;

use longlink_proto::ErrorCode;
use longlink_rpc::Refusal;

use crate::auth::MAX_ID_BYTES;

/// Refuses an id that is empty or longer than [`MAX_ID_BYTES`].
pub(crate) fn check_id(field: &str, value: &str) -> Result<(), Refusal> {
    if value.is_empty() || value.len() > MAX_ID_BYTES {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!("{field} must be 1..={MAX_ID_BYTES} bytes"),
        ));
    }
    Ok(())
}

pub(crate) fn store_unavailable(err: longlink_store::StoreError) -> Refusal {
    match err {
        longlink_store::StoreError::InvalidArgument(message) => {
            Refusal::new(ErrorCode::InvalidArgument, message)
        }
        other => Refusal::new(ErrorCode::StoreUnavailable, other.to_string()),
    }
}

/// The page size a request asks for: 0 → the default (50), capped at the maximum.
pub(crate) fn page_size(requested: u32) -> u32 {
    match requested {
        0 => longlink_proto::DEFAULT_PAGE_SIZE,
        n => n.min(longlink_proto::MAX_PAGE_SIZE),
    }
}
