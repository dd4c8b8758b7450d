//! LOGIN: verify the token, register the session in presence, kick an older session of the
//! same (appcode, uid, device).

use longlink_presence::SessionEntry;
use longlink_proto::{ErrorCode, KickReason, wire};
use longlink_rpc::{LoginAccepted, Refusal, SessionInfo};

use crate::Logic;
use crate::handlers::check_id;

pub(crate) async fn login(
    logic: &Logic,
    gate_id: &str,
    session_id: u64,
    request: wire::LoginRequest,
    log_id: u64,
) -> Result<LoginAccepted, Refusal> {
    check_id("device_id", &request.device_id)?;
    let uid = logic.apps.verify(request.appcode, &request.token)?;
    let now = longlink_proto::unix_ms();
    let entry = SessionEntry {
        appcode: request.appcode,
        uid: uid.clone(),
        device_id: request.device_id.clone(),
        gate_id: gate_id.to_owned(),
        session_id,
        since_ms: now,
    };
    let replaced = logic
        .presence
        .register(entry)
        .await
        .map_err(|err| Refusal::new(ErrorCode::Internal, err.to_string()))?;
    for old in replaced {
        tracing::info!(log_id, old.session = old.session_id, new.session = session_id, uid = %uid,
            device = %old.device_id, "kicking older session of the same device");
        logic
            .gate
            .kick(
                old.session_id,
                KickReason::Replaced,
                "replaced by a newer login on the same device",
            )
            .await;
    }
    tracing::info!(log_id, session.id = session_id, app.code = request.appcode, uid = %uid,
        device = %request.device_id, "login");
    Ok(LoginAccepted {
        session: SessionInfo {
            gate_id: gate_id.to_owned(),
            session_id,
            appcode: request.appcode,
            uid: uid.clone(),
            device_id: request.device_id,
        },
        response: wire::LoginResponse {
            session_id,
            resume_token: String::new(),
            server_time_ms: now,
            keepalive_interval_secs: logic.config.keepalive_interval_secs,
            compression: String::new(),
            uid,
        },
    })
}
