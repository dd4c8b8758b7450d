//! LOGOUT: leave presence, answer, and let the gate close the connection.

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
    Reply::FrameThenClose(Frame::response(&frame.header, &wire::LogoutResponse {}))
}
