//! LOGOUT: leave presence, forget the device's push tokens (a logged-out device must not be
//! notified of the next user's messages), answer, and let the gate close the connection.

use longlink_proto::{Frame, wire};
use longlink_rpc::{Reply, SessionInfo};

use crate::Logic;

pub(crate) async fn logout(logic: &Logic, session: &SessionInfo, frame: &Frame) -> Reply {
    if let Err(err) = logic
        .presence
        .unregister(
            session.appcode,
            &session.uid,
            &session.gate_id,
            session.session_id,
        )
        .await
    {
        tracing::warn!(log_id = frame.header.log_id, error = %err, "presence unregister failed on logout");
    }
    if logic.notifications.wants(session.appcode, &session.uid)
        && let Err(err) = logic
            .notifications
            .remove(session.appcode, &session.uid, &session.device_id, None)
            .await
    {
        tracing::warn!(log_id = frame.header.log_id, error = %err, "push tokens not removed on logout");
    }
    Reply::FrameThenClose(Frame::response(&frame.header, &wire::LogoutResponse {}))
}
