//! OFFLINE_PULL: this device's unacknowledged inbox, by msgid cursor, ascending (seed 003).

use longlink_proto::{Frame, wire};
use longlink_rpc::{Refusal, SessionInfo};
use longlink_store::UserKey;

use crate::convert::wire_msg;
use crate::handlers::{page_size, store_unavailable};
use crate::{Logic, bad_body};

pub(crate) async fn offline_pull(
    logic: &Logic,
    session: &SessionInfo,
    frame: &Frame,
) -> Result<Frame, Refusal> {
    let request: wire::OfflinePullRequest = frame.decode_body().map_err(bad_body)?;
    let owner = UserKey {
        appcode: session.appcode,
        uid: session.uid.clone(),
    };
    let page = logic
        .store
        .pull_offline(
            &owner,
            &session.device_id,
            request.cursor,
            page_size(request.page_size),
        )
        .await
        .map_err(store_unavailable)?;
    Ok(Frame::response(
        &frame.header,
        &wire::OfflinePullResponse {
            messages: page.messages.iter().map(wire_msg).collect(),
            next_cursor: page.next_cursor,
            more: page.more,
        },
    ))
}
