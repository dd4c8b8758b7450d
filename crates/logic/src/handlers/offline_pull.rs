//! OFFLINE_PULL: this device's unacknowledged inbox, by msgid cursor, ascending (seed 003).

use longlink_proto::{Frame, wire};
use longlink_rpc::{Refusal, SessionInfo};
use longlink_store::UserKey;

use crate::handlers::{fit_page, page_size, store_unavailable};
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
        .timed(
            crate::metrics::StoreOp::PullOffline,
            logic.store.pull_offline(
                &owner,
                &session.device_id,
                request.cursor,
                page_size(request.page_size),
            ),
        )
        .await
        .map_err(store_unavailable)?;
    let page = fit_page(page, logic.config.max_response_bytes);
    if !page.messages.is_empty() {
        let msgids: Vec<u64> = page.messages.iter().map(|m| m.msgid).collect();
        logic.ledger.record_msgids(
            &msgids,
            longlink_rpc::trace::Stage::Pulled,
            Some(longlink_rpc::trace::session_label(
                session.appcode,
                &session.uid,
                &session.device_id,
            )),
        );
    }
    Ok(Frame::response(
        &frame.header,
        &wire::OfflinePullResponse {
            messages: page.messages,
            next_cursor: page.next_cursor,
            more: page.more,
        },
    ))
}
