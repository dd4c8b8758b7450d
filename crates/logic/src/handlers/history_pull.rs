//! HISTORY_PULL: one conversation, both directions, for every device (seed 003 "online messages").

use longlink_proto::{ErrorCode, Frame, wire};
use longlink_rpc::{Refusal, SessionInfo};
use longlink_store::{Direction, UserKey};

use crate::convert::user_key;
use crate::handlers::{check_id, fit_page, page_size, store_unavailable};
use crate::{Logic, bad_body};

pub(crate) async fn history_pull(
    logic: &Logic,
    session: &SessionInfo,
    frame: &Frame,
) -> Result<Frame, Refusal> {
    let request: wire::HistoryPullRequest = frame.decode_body().map_err(bad_body)?;
    let peer = request
        .with
        .as_ref()
        .ok_or_else(|| Refusal::new(ErrorCode::InvalidArgument, "with is required"))?;
    check_id("with.uid", &peer.uid)?;
    let direction = match wire::HistoryDirection::try_from(request.direction) {
        Ok(wire::HistoryDirection::Newer) => Direction::Newer,
        Ok(wire::HistoryDirection::Older) => Direction::Older,
        Err(_) => {
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                "unknown direction",
            ));
        }
    };
    let owner = UserKey {
        appcode: session.appcode,
        uid: session.uid.clone(),
    };
    let page = logic
        .timed(
            crate::metrics::StoreOp::History,
            logic.store.history(
                &owner,
                &user_key(peer),
                request.cursor,
                direction,
                page_size(request.page_size),
            ),
        )
        .await
        .map_err(store_unavailable)?;
    let page = fit_page(page, logic.config.max_response_bytes);
    Ok(Frame::response(
        &frame.header,
        &wire::HistoryPullResponse {
            messages: page.messages,
            next_cursor: page.next_cursor,
            more: page.more,
        },
    ))
}
