//! NOTIFICATION_ACK: the device received these offline push notifications. The receipts are
//! what the provider selection learns from — a provider's "accepted" says nothing about the
//! phone — so they are taken as reported, and ids that are not this device's are ignored
//! rather than refused (a stale or foreign id must not cost the client a round of errors).

use longlink_proto::{ErrorCode, Frame, MAX_NOTIFICATION_ACK_IDS, wire};
use longlink_rpc::{Refusal, SessionInfo};

use crate::handlers::push_token::notify_refusal;
use crate::{Logic, bad_body};

pub(crate) async fn notification_ack(
    logic: &Logic,
    session: &SessionInfo,
    frame: &Frame,
) -> Result<Frame, Refusal> {
    let request: wire::NotificationAck = frame.decode_body().map_err(bad_body)?;
    if request.ids.len() > MAX_NOTIFICATION_ACK_IDS {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!(
                "{} ids: at most {MAX_NOTIFICATION_ACK_IDS} per NOTIFICATION_ACK",
                request.ids.len()
            ),
        ));
    }
    let matched = if request.ids.is_empty() {
        0
    } else {
        logic
            .notifications
            .receipts(
                session.appcode,
                &session.uid,
                &session.device_id,
                &request.ids,
            )
            .await
            .map_err(notify_refusal)?
    };
    Ok(Frame::response(
        &frame.header,
        &wire::NotificationAckResponse { matched },
    ))
}
