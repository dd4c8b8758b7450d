//! CONVERSATIONS: the user's conversation list (peer, last message, unread count, both read
//! marks), the most recent first — what a chat app's first screen shows.

use longlink_proto::{Frame, wire};
use longlink_rpc::{Refusal, SessionInfo};
use longlink_store::UserKey;

use crate::convert::{user_ref, wire_msg};
use crate::handlers::{fitting, page_size, store_unavailable};
use crate::{Logic, bad_body};

pub(crate) async fn conversations(
    logic: &Logic,
    session: &SessionInfo,
    frame: &Frame,
) -> Result<Frame, Refusal> {
    let request: wire::ConversationsRequest = frame.decode_body().map_err(bad_body)?;
    let owner = UserKey {
        appcode: session.appcode,
        uid: session.uid.clone(),
    };
    let page = logic
        .timed(
            crate::metrics::StoreOp::History,
            logic
                .store
                .conversations(&owner, request.before_msgid, page_size(request.limit)),
        )
        .await
        .map_err(store_unavailable)?;
    let mut response = wire::ConversationsResponse {
        conversations: page
            .conversations
            .iter()
            .map(|c| wire::Conversation {
                with: Some(user_ref(&c.peer)),
                last: Some(wire_msg(&c.last)),
                unread: c.unread,
                read_upto: c.read_upto,
                peer_read_upto: c.peer_read_upto,
            })
            .collect(),
        more: page.more,
    };
    // Each entry carries one whole message, so a long list of long last messages could pass
    // the frame limit: cut it there and say `more` (the client pages on by before_msgid).
    let fits = fitting(&response.conversations, logic.config.max_response_bytes);
    if fits < response.conversations.len() {
        response.conversations.truncate(fits);
        response.more = true;
    }
    Ok(Frame::response(&frame.header, &response))
}
