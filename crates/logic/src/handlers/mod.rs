//! One file per command (mini-redis `cmd/` layout).

pub(crate) mod c2c;
pub(crate) mod c2s;
pub(crate) mod conversations;
pub(crate) mod history_pull;
pub(crate) mod login;
pub(crate) mod logout;
pub(crate) mod mark_read;
pub(crate) mod msg_ack;
pub(crate) mod notification_ack;
pub(crate) mod offline_pull;
pub(crate) mod push_token;
pub(crate) mod redeliver;
pub(crate) mod resume;

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

/// A page of messages that fits in one frame the client accepts.
pub(crate) struct FittedPage {
    pub(crate) messages: Vec<longlink_proto::wire::Msg>,
    pub(crate) next_cursor: u64,
    pub(crate) more: bool,
}

/// How many of `items`, from the first, fit as the repeated field of a response within
/// `max_body_bytes` — at least one (a single message always fits, since content is capped
/// below the frame limit). Leaves room for a response's other small fields.
pub(crate) fn fitting<T: prost::Message>(items: &[T], max_body_bytes: usize) -> usize {
    // Room for next_cursor, more and the like.
    let budget = max_body_bytes.saturating_sub(32);
    let mut used = 0;
    let mut count = 0;
    for item in items {
        let len = item.encoded_len();
        let cost = len + prost::length_delimiter_len(len) + 1;
        if count > 0 && used + cost > budget {
            break;
        }
        used += cost;
        count += 1;
    }
    count
}

/// Cuts `page` to the longest prefix whose encoded response fits `max_body_bytes` ([`fitting`]).
/// A cut page says `more`, with the cursor after its last message, so the client's next
/// request continues exactly there.
pub(crate) fn fit_page(page: longlink_store::Page, max_body_bytes: usize) -> FittedPage {
    let mut messages: Vec<_> = page.messages.iter().map(crate::convert::wire_msg).collect();
    let fits = fitting(&messages, max_body_bytes);
    if fits == messages.len() {
        return FittedPage {
            messages,
            next_cursor: page.next_cursor,
            more: page.more,
        };
    }
    messages.truncate(fits);
    let next_cursor = messages.last().map_or(page.next_cursor, |m| m.msgid);
    FittedPage {
        messages,
        next_cursor,
        more: true,
    }
}
