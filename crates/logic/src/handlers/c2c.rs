//! C2C (seed 001): store durably (idempotent by client_msg_id), push to every online session
//! of the receiver and to the sender's other sessions, then ACK the sender with the msgid.
//! TYPING content is ephemeral: pushed to online sessions, never stored.

use bytes::Bytes;
use longlink_proto::{Cmd, ContentType, ErrorCode, Frame, wire};
use longlink_rpc::notify::NotifyCandidate;
use longlink_rpc::trace::{MessageKind, Stage, Subject, TraceEvent, user_label};
use longlink_rpc::{PushError, Refusal, SessionInfo};
use longlink_store::{NewMessage, StoredMessage, UserKey};

use crate::convert::{user_key, wire_msg};
use crate::handlers::{check_id, store_unavailable};
use crate::{Logic, bad_body};

pub(crate) async fn c2c(
    logic: &Logic,
    session: &SessionInfo,
    frame: &Frame,
) -> Result<Frame, Refusal> {
    let log_id = frame.header.log_id;
    let request: wire::C2cRequest = frame.decode_body().map_err(bad_body)?;
    let to = request
        .to
        .as_ref()
        .ok_or_else(|| Refusal::new(ErrorCode::InvalidArgument, "to is required"))?;
    check_id("to.uid", &to.uid)?;
    if !request.client_msg_id.is_empty() {
        check_id("client_msg_id", &request.client_msg_id)?;
    }
    if !logic.apps.contains(to.appcode) {
        return Err(Refusal::new(
            ErrorCode::UnknownReceiverAppcode,
            format!("unknown receiver appcode {}", to.appcode),
        ));
    }
    if request.content.len() > logic.config.max_content_bytes {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "content too large",
        ));
    }
    let from = UserKey {
        appcode: session.appcode,
        uid: session.uid.clone(),
    };
    let to = user_key(to);

    if request.content_type == ContentType::Typing as i32 {
        let msg = wire::Msg {
            delivered: false,
            msgid: 0,
            from: Some(crate::convert::user_ref(&from)),
            to: Some(crate::convert::user_ref(&to)),
            msgtype: request.msgtype,
            content_type: request.content_type,
            content: request.content,
            senddate_ms: longlink_proto::unix_ms(),
            client_msg_id: request.client_msg_id,
            from_device: session.device_id.clone(),
            log_id,
            kind: wire::MsgKind::C2c as i32,
            prev_msgid: 0,
        };
        let push = Frame::push(Cmd::Msg, log_id, &msg).to_bytes();
        deliver(logic, &to, None, &push, None, log_id, None).await;
        return Ok(Frame::response(
            &frame.header,
            &wire::C2cResponse::default(),
        ));
    }

    let outcome = logic
        .timed(
            crate::metrics::StoreOp::Append,
            logic.store.append(NewMessage {
                from: from.clone(),
                from_device: session.device_id.clone(),
                client_msg_id: request.client_msg_id.clone(),
                to: to.clone(),
                msgtype: request.msgtype,
                content_type: request.content_type,
                content: request.content.clone(),
                log_id,
            }),
        )
        .await
        .map_err(store_unavailable)?;
    let mut stored_event = TraceEvent::now(log_id, Stage::Stored)
        .msgid(outcome.msgid)
        .subject(Subject {
            kind: MessageKind::C2c,
            from: Some(user_label(from.appcode, &from.uid)),
            to: Some(user_label(to.appcode, &to.uid)),
            appcodes: vec![from.appcode, to.appcode],
        });
    if outcome.duplicate {
        stored_event = stored_event.detail("a retry: already stored, not pushed again");
    }
    logic.ledger.record(stored_event);
    tracing::debug!(
        log_id,
        msgid = outcome.msgid,
        duplicate = outcome.duplicate,
        "c2c stored"
    );

    if !outcome.duplicate {
        // A retry (duplicate) is not pushed again: its content may differ from what was
        // stored, and a first attempt that died before its push is covered by redelivery at
        // the receiver's next login and by its pulls.
        let stored = StoredMessage {
            msgid: outcome.msgid,
            from: from.clone(),
            from_device: session.device_id.clone(),
            client_msg_id: request.client_msg_id,
            to: to.clone(),
            msgtype: request.msgtype,
            content_type: request.content_type,
            content: request.content,
            senddate_ms: outcome.senddate_ms,
            log_id,
            prev_msgid: outcome.prev_msgid,
            delivered: false,
        };
        let push = Frame::push(Cmd::Msg, log_id, &wire_msg(&stored)).to_bytes();
        let notify = logic.notifications.wants(to.appcode, &to.uid);
        let mut reached = Vec::new();
        deliver(
            logic,
            &to,
            None,
            &push,
            Some(outcome.msgid),
            log_id,
            notify.then_some(&mut reached),
        )
        .await;
        if notify {
            // After the push, never before: the receiver's devices that took it over a live
            // connection are left out, the others may get a notification after the grace.
            logic.notifications.offer(NotifyCandidate {
                appcode: to.appcode,
                uid: to.uid.clone(),
                msgid: outcome.msgid,
                s2c: false,
                from: stored.from.uid.clone(),
                msgtype: stored.msgtype,
                content_type: stored.content_type,
                content: stored.content.clone(),
                reached_devices: reached,
                log_id,
            });
        }
        if from != to {
            // Multi-device: the sender's other sessions show what this device sent.
            deliver(logic, &from, Some(session), &push, None, log_id, None).await;
        }
    }
    Ok(Frame::response(
        &frame.header,
        &wire::C2cResponse {
            msgid: outcome.msgid,
            senddate_ms: outcome.senddate_ms,
            duplicate: outcome.duplicate,
        },
    ))
}

/// Pushes an encoded MSG to every online session of `user` except `skip` (the sending
/// session: the same session id on the same gate — ids are unique per gate only); with
/// `inbox_msgid`, records the push per device (stored → pushed); with `reached`, adds the
/// devices whose sessions took the push there. Failures are not errors: the message is in the
/// store and arrives by pull or redelivery.
pub(crate) async fn deliver(
    logic: &Logic,
    user: &UserKey,
    skip: Option<&SessionInfo>,
    push: &Bytes,
    inbox_msgid: Option<u64>,
    log_id: u64,
    mut reached: Option<&mut Vec<String>>,
) {
    let sessions = match logic.presence.sessions(user.appcode, &user.uid).await {
        Ok(sessions) => sessions,
        Err(err) => {
            tracing::warn!(log_id, error = %err, "presence lookup failed; receiver will pull");
            return;
        }
    };
    let routed_at = longlink_rpc::trace::now_us();
    let mut queued = 0usize;
    for entry in &sessions {
        if skip.is_some_and(|s| s.session_id == entry.session_id && s.gate_id == entry.gate_id) {
            continue;
        }
        match logic
            .gate
            .push(&entry.gate_id, entry.session_id, push.clone())
            .await
        {
            Ok(()) => {
                queued += 1;
                if let Some(devices) = reached.as_deref_mut() {
                    devices.push(entry.device_id.clone());
                }
                if inbox_msgid.is_some() {
                    logic.metrics.receiver_deliveries.inc();
                }
                if let Some(msgid) = inbox_msgid
                    && let Err(err) = logic
                        .timed(
                            crate::metrics::StoreOp::RecordPushed,
                            logic.store.record_pushed(user, &entry.device_id, &[msgid]),
                        )
                        .await
                {
                    tracing::debug!(log_id, error = %err, "push not recorded");
                }
            }
            Err(PushError::NoSession) => {
                crate::clear_stale_session(logic.presence.as_ref(), entry, log_id).await;
            }
            Err(PushError::SlowConsumer) => {
                tracing::info!(
                    log_id,
                    session.id = entry.session_id,
                    "slow consumer; message stays in the inbox"
                );
            }
            Err(PushError::Unreachable) => {
                tracing::debug!(
                    log_id,
                    session.id = entry.session_id,
                    "session held without a link; message stays in the inbox"
                );
            }
        }
    }
    if inbox_msgid.is_some() {
        // The receiver's route: where the message went, or that it waits in the inbox.
        let mut event = if queued > 0 {
            TraceEvent::now(log_id, Stage::Routed).detail(format!(
                "queued to {queued} of {} session(s) of {}:{}",
                sessions.len(),
                user.appcode,
                user.uid
            ))
        } else {
            TraceEvent::now(log_id, Stage::Offline).detail(format!(
                "no reachable session of {}:{}; waits in the inbox",
                user.appcode, user.uid
            ))
        };
        event.at_us = routed_at;
        logic.ledger.record(event);
    }
}
