//! Redelivery at login (seed 001 "receiver ACK"): what this device has not acknowledged is
//! pushed again as soon as its session is ready, so a message pushed to a connection that died
//! is not lost. At most one page is pushed, and only while the session's write queue has room
//! (a redelivery never closes a session as a slow consumer); clients pull the rest with
//! OFFLINE_PULL (the SDK always does after a login).

use longlink_proto::{Cmd, Frame};
use longlink_rpc::SessionInfo;
use longlink_store::UserKey;

use crate::Logic;
use crate::convert::wire_msg;

/// Most messages pushed again at login.
pub(crate) const REDELIVER_MAX: u32 = 200;

pub(crate) async fn redeliver_unacked(logic: &Logic, session: &SessionInfo) {
    let owner = UserKey {
        appcode: session.appcode,
        uid: session.uid.clone(),
    };
    let page = match logic
        .timed(
            crate::metrics::StoreOp::PullOffline,
            logic
                .store
                .pull_offline(&owner, &session.device_id, 0, REDELIVER_MAX),
        )
        .await
    {
        Ok(page) => page,
        Err(err) => {
            tracing::warn!(session.id = session.session_id, error = %err, "redelivery skipped; the client will pull");
            return;
        }
    };
    let count = page.messages.len();
    let mut pushed = Vec::with_capacity(count);
    for message in &page.messages {
        let push = Frame::push(Cmd::Msg, message.log_id, &wire_msg(message)).to_bytes();
        if logic
            .gate
            .offer(&session.gate_id, session.session_id, push)
            .await
            .is_err()
        {
            // Gone, or the queue is full: the rest stays unacked in the store, and the client
            // pulls it (the SDK always pulls after a login).
            break;
        }
        pushed.push(message.msgid);
    }
    logic
        .metrics
        .receiver_deliveries
        .inc_by(pushed.len() as u64);
    if let Err(err) = logic
        .timed(
            crate::metrics::StoreOp::RecordPushed,
            logic
                .store
                .record_pushed(&owner, &session.device_id, &pushed),
        )
        .await
    {
        tracing::debug!(session.id = session.session_id, error = %err, "redelivery not recorded");
    }
    if count > 0 {
        tracing::debug!(
            session.id = session.session_id,
            count,
            more = page.more,
            "redelivered unacked messages"
        );
    }
}
