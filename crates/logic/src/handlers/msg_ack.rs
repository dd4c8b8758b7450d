//! MSG_ACK: this device has these messages. Only msgids in the session user's own inbox count;
//! any other msgid is refused with NOT_FOUND (the same answer for "absent" and "not yours")
//! and changes nothing.

use longlink_proto::{Cmd, ErrorCode, Frame, FrameType, wire};
use longlink_rpc::trace::Stage;
use longlink_rpc::{Refusal, Reply, SessionInfo};
use longlink_store::UserKey;

use crate::handlers::store_unavailable;
use crate::{Logic, bad_body, refusal_frame};

/// Most msgids one MSG_ACK (or RESUME) may carry.
pub(crate) const MAX_ACK_BATCH: usize = 1000;

pub(crate) async fn msg_ack(logic: &Logic, session: &SessionInfo, frame: &Frame) -> Reply {
    match ack(logic, session, frame).await {
        Ok(acked) if frame.header.frame_type == FrameType::Ack => {
            tracing::trace!(acked, "msg_ack");
            Reply::Nothing
        }
        Ok(acked) => Reply::Frame(Frame::response(
            &frame.header,
            &wire::MsgAckResponse { acked },
        )),
        Err(refusal) => Reply::Frame(refusal_frame(frame, &refusal)),
    }
}

async fn ack(logic: &Logic, session: &SessionInfo, frame: &Frame) -> Result<u32, Refusal> {
    let request: wire::MsgAck = frame.decode_body().map_err(bad_body)?;
    ack_msgids(logic, session, &request.msgids).await
}

/// Marks `msgids` acknowledged by the session's device (MSG_ACK, and the `acked_msgids` of a
/// RESUME); returns how many were.
pub(crate) async fn ack_msgids(
    logic: &Logic,
    session: &SessionInfo,
    msgids: &[u64],
) -> Result<u32, Refusal> {
    if msgids.is_empty() || msgids.len() > MAX_ACK_BATCH {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!("msgids must hold 1..={MAX_ACK_BATCH} ids"),
        ));
    }
    let owner = UserKey {
        appcode: session.appcode,
        uid: session.uid.clone(),
    };
    // Online-only s2c pushes have no inbox row: the push statistics take their acks.
    let online_only = logic.pushes.acked(&owner, msgids);
    let who = longlink_rpc::trace::session_label(session.appcode, &session.uid, &session.device_id);
    let stored: Vec<u64> = msgids
        .iter()
        .copied()
        .filter(|m| !online_only.contains(m))
        .collect();
    let acked_online_only = u32::try_from(msgids.len() - stored.len()).unwrap_or(0);
    if stored.is_empty() {
        logic
            .metrics
            .receiver_acks
            .inc_by(u64::from(acked_online_only));
        logic
            .ledger
            .record_msgids(&online_only, Stage::ReceiverAcked, Some(who));
        return Ok(acked_online_only);
    }
    let outcome = logic
        .timed(
            crate::metrics::StoreOp::Ack,
            logic.store.ack(&owner, &session.device_id, &stored),
        )
        .await
        .map_err(store_unavailable)?;
    send_delivery_receipts(logic, session, &outcome.first_delivered).await;
    let acked: Vec<u64> = msgids
        .iter()
        .copied()
        .filter(|m| !outcome.not_found.contains(m))
        .collect();
    logic.metrics.receiver_acks.inc_by(acked.len() as u64);
    logic
        .ledger
        .record_msgids(&acked, Stage::ReceiverAcked, Some(who));
    if !outcome.not_found.is_empty() {
        return Err(Refusal::new(
            ErrorCode::NotFound,
            format!("no such message for you: {:?}", outcome.not_found),
        ));
    }
    Ok(outcome.acked + acked_online_only)
}

/// Tells each sender, on its online sessions, which of its messages this ack delivered for the
/// first time (RECEIPT DELIVERED). Best effort: a sender offline now learns it from
/// `Msg.delivered` in its history.
async fn send_delivery_receipts(
    logic: &Logic,
    session: &SessionInfo,
    delivered: &[longlink_store::Delivered],
) {
    let mut by_sender: std::collections::BTreeMap<&UserKey, Vec<u64>> = Default::default();
    for d in delivered {
        by_sender.entry(&d.from).or_default().push(d.msgid);
    }
    for (sender, msgids) in by_sender {
        let receipt = wire::Receipt {
            kind: wire::ReceiptKind::Delivered as i32,
            by: Some(crate::convert::user_ref(&UserKey {
                appcode: session.appcode,
                uid: session.uid.clone(),
            })),
            by_device: session.device_id.clone(),
            msgids,
            read_upto: 0,
        };
        let push = Frame::push(Cmd::Receipt, 0, &receipt).to_bytes();
        crate::handlers::c2c::deliver(logic, sender, None, &push, None, 0, None).await;
    }
}
