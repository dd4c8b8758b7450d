//! RESUME (seed 004 "fast reconnect"): a client whose link dropped takes its session over on
//! a new connection without re-authenticating. The signed token names the session
//! (appcode, uid, device, epoch); presence re-points it at the new connection only while that
//! epoch is still registered (not replaced, not logged out, hold not expired), so a token is
//! useless once its session ended. The response carries, in msgid order, what the device has
//! not acknowledged — everything if it fits one frame (`gap_free`), else a first page and the
//! client pulls the rest. No new epoch, no kick, no login counted.

use longlink_proto::{ErrorCode, wire};
use longlink_rpc::trace::{Stage, session_label};
use longlink_rpc::{Refusal, ResumeAccepted, SessionInfo};
use longlink_store::UserKey;

use crate::Logic;
use crate::handlers::msg_ack::{MAX_ACK_BATCH, ack_msgids};
use crate::handlers::{fit_page, store_unavailable};

pub(crate) async fn resume(
    logic: &Logic,
    gate_id: &str,
    session_id: u64,
    request: wire::ResumeRequest,
    log_id: u64,
) -> Result<ResumeAccepted, Refusal> {
    let claims = logic.resume_keys.verify(&request.resume_token)?;
    let revoked = || {
        crate::revoke::is_revoked(
            logic.revocations.as_ref(),
            claims.appcode,
            &claims.sub,
            claims.auth_iat,
        )
    };
    if revoked() {
        tracing::info!(log_id, uid = %claims.sub, device = %claims.dev, "resume refused: the user's tokens were revoked");
        return Err(resume_revoked());
    }
    if request.acked_msgids.len() > MAX_ACK_BATCH {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!("acked_msgids holds at most {MAX_ACK_BATCH} ids"),
        ));
    }
    let before = logic
        .presence
        .resume(
            claims.appcode,
            &claims.sub,
            &claims.dev,
            claims.epoch,
            gate_id,
            session_id,
        )
        .await
        .map_err(|err| Refusal::new(ErrorCode::Internal, err.to_string()))?;
    let Some(before) = before else {
        tracing::info!(log_id, uid = %claims.sub, device = %claims.dev, epoch = claims.epoch, "resume refused: the session ended");
        return Err(Refusal::new(
            ErrorCode::ResumeRejected,
            "the session ended (replaced, logged out or hold expired): log in",
        ));
    };
    // The old connection, held or half-open, is done; it must not unregister the session.
    logic.gate.detach(&before.gate_id, before.session_id).await;
    if revoked() {
        // A revocation landed meanwhile; its kicks may have missed this session while it
        // moved: end it here (the gate drops the new connection's entry on the refusal).
        let _ = logic
            .presence
            .unregister(claims.appcode, &claims.sub, gate_id, session_id)
            .await;
        return Err(resume_revoked());
    }
    let session = SessionInfo {
        gate_id: gate_id.to_owned(),
        session_id,
        appcode: claims.appcode,
        uid: claims.sub,
        device_id: claims.dev,
        epoch: claims.epoch,
    };
    if !request.acked_msgids.is_empty() {
        // Acks the dropped link may have swallowed; a msgid that is not this device's is
        // ignored here (the resume goes on; MSG_ACK is where such a refusal is reported).
        if let Err(refusal) = ack_msgids(logic, &session, &request.acked_msgids).await {
            tracing::debug!(log_id, code = ?refusal.code, "acks carried by resume not all applied");
        }
    }
    let owner = UserKey {
        appcode: session.appcode,
        uid: session.uid.clone(),
    };
    let page = logic
        .timed(
            crate::metrics::StoreOp::PullOffline,
            logic
                .store
                .pull_offline(&owner, &session.device_id, 0, longlink_proto::MAX_PAGE_SIZE),
        )
        .await
        .map_err(store_unavailable)?;
    // Room for the other fields of the response (token, ids, flags).
    let budget = logic.config.max_response_bytes.saturating_sub(1024);
    let page = fit_page(page, budget);
    let msgids: Vec<u64> = page.messages.iter().map(|m| m.msgid).collect();
    if !msgids.is_empty() {
        logic.ledger.record_msgids(
            &msgids,
            Stage::Pulled,
            Some(session_label(
                session.appcode,
                &session.uid,
                &session.device_id,
            )),
        );
        if let Err(err) = logic
            .timed(
                crate::metrics::StoreOp::RecordPushed,
                logic
                    .store
                    .record_pushed(&owner, &session.device_id, &msgids),
            )
            .await
        {
            tracing::debug!(log_id, error = %err, "resumed messages not recorded as pushed");
        }
    }
    tracing::info!(log_id, session.id = session_id, old.session = before.session_id, old.gate = %before.gate_id,
        uid = %session.uid, device = %session.device_id, epoch = session.epoch, last_msgid = request.last_msgid,
        missed = msgids.len(), gap_free = !page.more, "resume");
    let response = wire::ResumeResponse {
        session_id,
        gap_free: !page.more,
        messages: page.messages,
        resume_token: logic.resume_keys.mint(&session, claims.auth_iat),
        epoch: session.epoch,
        keepalive_interval_secs: logic.config.keepalive_interval_secs,
        hold_secs: 0,
        server_time_ms: longlink_proto::unix_ms(),
        uid: session.uid.clone(),
        // The gate picks it (it is the one that compresses).
        compression: String::new(),
    };
    Ok(ResumeAccepted { session, response })
}

fn resume_revoked() -> Refusal {
    Refusal::new(
        ErrorCode::ResumeRejected,
        "this user's tokens were revoked: log in with a new token",
    )
}
