//! C2S: an upstream message for the business server, onto the bus topic chosen by
//! (appcode, msgtype) (seed 003). Answered once the bus holds it.

use longlink_bus::{BusMessage, c2s_topic};
use longlink_proto::{ErrorCode, Frame, wire};
use longlink_rpc::{Refusal, SessionInfo};

use crate::handlers::check_id;
use crate::{Logic, bad_body};

pub(crate) async fn c2s(
    logic: &Logic,
    session: &SessionInfo,
    frame: &Frame,
) -> Result<Frame, Refusal> {
    let request: wire::C2sRequest = frame.decode_body().map_err(bad_body)?;
    if !request.client_msg_id.is_empty() {
        check_id("client_msg_id", &request.client_msg_id)?;
    }
    if request.payload.len() > logic.config.max_content_bytes {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "payload too large",
        ));
    }
    let topic = c2s_topic(session.appcode, request.msgtype);
    logic
        .bus
        .publish(BusMessage {
            topic: topic.clone(),
            appcode: session.appcode,
            uid: session.uid.clone(),
            device_id: session.device_id.clone(),
            msgtype: request.msgtype,
            client_msg_id: request.client_msg_id,
            payload: request.payload,
            log_id: frame.header.log_id,
            received_ms: longlink_proto::unix_ms(),
        })
        .await
        .map_err(|err| Refusal::new(ErrorCode::BusUnavailable, err.to_string()))?;
    tracing::debug!(log_id = frame.header.log_id, %topic, "c2s published");
    Ok(Frame::response(&frame.header, &wire::C2sResponse { topic }))
}
