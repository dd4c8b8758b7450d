//! C2S: an upstream message for the business server, onto the bus topic the routing table
//! chooses for (appcode, msgtype) (seed 003). Answered only once the bus holds it durably; an
//! unrouted pair is refused when the table says so.

use longlink_bus::{BusError, BusMessage};
use longlink_proto::{ErrorCode, Frame, wire};
use longlink_rpc::trace::{MessageKind, Stage, Subject, TraceEvent, user_label};
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
    let Some(topic) = logic.routes.topic_for(session.appcode, request.msgtype) else {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!(
                "no c2s route for appcode {} msgtype {}",
                session.appcode, request.msgtype
            ),
        ));
    };
    let started = std::time::Instant::now();
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
        .map_err(|err| match err {
            BusError::Full(_) => Refusal::new(ErrorCode::Overloaded, err.to_string()),
            BusError::InvalidArgument(_) => {
                Refusal::new(ErrorCode::InvalidArgument, err.to_string())
            }
            BusError::Unavailable(_) => Refusal::new(ErrorCode::BusUnavailable, err.to_string()),
        })?;
    logic.metrics.bus_publish.observe(started.elapsed());
    logic.ledger.record(
        TraceEvent::now(frame.header.log_id, Stage::Published)
            .detail(format!("topic {topic}"))
            .subject(Subject {
                kind: MessageKind::C2s,
                from: Some(user_label(session.appcode, &session.uid)),
                to: Some(format!("topic {topic}")),
                appcodes: vec![session.appcode],
            }),
    );
    tracing::debug!(log_id = frame.header.log_id, %topic, "c2s published");
    Ok(Frame::response(&frame.header, &wire::C2sResponse { topic }))
}
