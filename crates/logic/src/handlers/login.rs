//! LOGIN: refuse an IP or user locked out by failed logins (`login_guard`), verify the token
//! (its appcode's keys, time claims, not revoked), register the session in presence under the
//! appcode's multi-login policy (a stale reconnect cannot replace a fresher session), kick the
//! sessions it replaces.

use std::net::IpAddr;

use longlink_presence::{LoginRule, Registration, SessionEntry};
use longlink_proto::{ErrorCode, KickReason, wire};
use longlink_rpc::{KickNotice, LoginAccepted, Refusal, SessionInfo};

use crate::Logic;
use crate::auth::MAX_ID_BYTES;
use crate::handlers::check_id;
use crate::revoke::is_revoked;
use crate::{auth, login_guard};

pub(crate) async fn login(
    logic: &Logic,
    gate_id: &str,
    session_id: u64,
    request: wire::LoginRequest,
    log_id: u64,
    peer: Option<IpAddr>,
) -> Result<LoginAccepted, Refusal> {
    check_id("device_id", &request.device_id)?;
    if request.device_class.len() > MAX_ID_BYTES {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!("device_class must be at most {MAX_ID_BYTES} bytes"),
        ));
    }
    // The uid the token claims keys the per-user failure limit; checked before the signature,
    // so a locked-out attacker costs no verification.
    let claimed_uid = auth::unverified_uid(&request.token);
    logic
        .login_guard
        .check(peer, request.appcode, claimed_uid.as_deref())
        .inspect_err(|refusal| {
            tracing::info!(log_id, peer = ?peer, app.code = request.appcode, uid = ?claimed_uid,
                retry_after_ms = refusal.retry_after_ms, "login refused: too many failures");
        })?;
    let verified = match logic.apps.verify(request.appcode, &request.token) {
        Ok(verified) => verified,
        Err(refusal) => {
            if login_guard::counts(refusal.code)
                && logic
                    .login_guard
                    .failed(peer, request.appcode, claimed_uid.as_deref())
            {
                tracing::warn!(log_id, peer = ?peer, app.code = request.appcode, uid = ?claimed_uid,
                    "failed logins over the limit: locked out for a while");
            }
            return Err(refusal);
        }
    };
    let revoked = || {
        is_revoked(
            logic.revocations.as_ref(),
            request.appcode,
            &verified.uid,
            verified.iat,
        )
    };
    if revoked() {
        // Not counted as a failure: a device holding a revoked token retries it, and that
        // must not lock its user out of logging in with a fresh one.
        return Err(token_revoked());
    }
    let uid = verified.uid.clone();
    let now = longlink_proto::unix_ms();
    let entry = SessionEntry {
        appcode: request.appcode,
        uid: uid.clone(),
        device_id: request.device_id.clone(),
        device_class: request.device_class.clone(),
        epoch: 0,
        gate_id: gate_id.to_owned(),
        session_id,
        since_ms: now,
    };
    let rule = LoginRule {
        policy: logic.apps.multi_login(request.appcode),
        prior_epoch: request.prior_epoch,
    };
    let registration = logic
        .presence
        .register(entry, &rule)
        .await
        .map_err(|err| Refusal::new(ErrorCode::Internal, err.to_string()))?;
    let (epoch, replaced) = match registration {
        Registration::Accepted { epoch, replaced } => (epoch, replaced),
        Registration::Superseded { by } => {
            tracing::info!(log_id, uid = %uid, device = %request.device_id, prior_epoch = request.prior_epoch,
                newer.device = %by.device_id, newer.epoch = by.epoch, "stale reconnect refused");
            return Err(Refusal::new(
                ErrorCode::SessionReplaced,
                format!(
                    "a newer login on device {:?} replaced this session",
                    by.device_id
                ),
            ));
        }
    };
    if revoked() {
        // A revocation landed between the check above and the registration, and its kicks
        // may have read presence before this session was in it: undo the registration.
        let _ = logic
            .presence
            .unregister(request.appcode, &uid, gate_id, session_id)
            .await;
        return Err(token_revoked());
    }
    for old in replaced {
        tracing::info!(log_id, old.session = old.session_id, new.session = session_id, uid = %uid,
            old.device = %old.device_id, new.device = %request.device_id, "kicking a replaced session");
        let message = if old.device_id == request.device_id {
            "replaced by a newer login on the same device".to_owned()
        } else {
            format!(
                "replaced by a newer login on device {:?}",
                request.device_id
            )
        };
        logic
            .gate
            .kick(
                &old.gate_id,
                old.session_id,
                KickNotice {
                    reason: KickReason::Replaced,
                    message,
                    by_device_id: request.device_id.clone(),
                },
            )
            .await;
    }
    tracing::info!(log_id, session.id = session_id, app.code = request.appcode, uid = %uid,
        device = %request.device_id, epoch, "login");
    let session = SessionInfo {
        gate_id: gate_id.to_owned(),
        session_id,
        appcode: request.appcode,
        uid: uid.clone(),
        device_id: request.device_id,
        epoch,
    };
    let resume_token = if request.resume_capable {
        logic.resume_keys.mint(&session, verified.iat)
    } else {
        String::new()
    };
    Ok(LoginAccepted {
        session,
        response: wire::LoginResponse {
            session_id,
            resume_token,
            server_time_ms: now,
            keepalive_interval_secs: logic.config.keepalive_interval_secs,
            compression: String::new(),
            uid,
            epoch,
            // The gate fills in what is its own: the hold, reconnect advice, other gates.
            hold_secs: 0,
            reconnect_min_ms: 0,
            reconnect_max_ms: 0,
            gates: Vec::new(),
        },
    })
}

fn token_revoked() -> Refusal {
    Refusal::new(
        ErrorCode::BadToken,
        "invalid token: revoked (this user's tokens issued before a revocation are void)",
    )
}
