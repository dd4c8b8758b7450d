//! MARK_READ: the user read the conversation with a peer up to a msgid. The mark is shared by
//! all of the user's devices and only moves forward; the peer's online sessions get a RECEIPT
//! READ so their "read" ticks update live.

use longlink_proto::{Cmd, ErrorCode, Frame, wire};
use longlink_rpc::{Refusal, SessionInfo};
use longlink_store::UserKey;

use crate::convert::{user_key, user_ref};
use crate::handlers::c2c::deliver;
use crate::handlers::{check_id, store_unavailable};
use crate::{Logic, bad_body};

pub(crate) async fn mark_read(
    logic: &Logic,
    session: &SessionInfo,
    frame: &Frame,
) -> Result<Frame, Refusal> {
    let request: wire::MarkReadRequest = frame.decode_body().map_err(bad_body)?;
    let peer = request
        .with
        .as_ref()
        .ok_or_else(|| Refusal::new(ErrorCode::InvalidArgument, "with is required"))?;
    check_id("with.uid", &peer.uid)?;
    if request.msgid == 0 {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "msgid is required",
        ));
    }
    let owner = UserKey {
        appcode: session.appcode,
        uid: session.uid.clone(),
    };
    let peer = user_key(peer);
    let mark = logic
        .timed(
            crate::metrics::StoreOp::Ack,
            logic.store.mark_read(&owner, &peer, request.msgid),
        )
        .await
        .map_err(store_unavailable)?
        // One answer for "absent" and "not in this conversation", as for MSG_ACK.
        .ok_or_else(|| {
            Refusal::new(
                ErrorCode::NotFound,
                format!(
                    "no message {} in your conversation with {}:{}",
                    request.msgid, peer.appcode, peer.uid
                ),
            )
        })?;
    if peer != owner {
        let receipt = wire::Receipt {
            kind: wire::ReceiptKind::Read as i32,
            by: Some(user_ref(&owner)),
            by_device: session.device_id.clone(),
            msgids: Vec::new(),
            read_upto: mark.read_upto,
        };
        let log_id = frame.header.log_id;
        let push = Frame::push(Cmd::Receipt, log_id, &receipt).to_bytes();
        deliver(logic, &peer, None, &push, None, log_id, None).await;
    }
    Ok(Frame::response(
        &frame.header,
        &wire::MarkReadResponse {
            read_upto: mark.read_upto,
            unread: mark.unread,
        },
    ))
}
