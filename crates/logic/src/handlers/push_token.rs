//! PUSH_TOKEN: a device registers, removes or lists its offline push tokens (APNs, FCM, a
//! vendor channel). The tokens belong to the session's (appcode, uid, device_id) — a client
//! can never touch another device's tokens — and the answer is always the device's tokens
//! after the change, so a client needs no second round trip to know where it stands.

use longlink_proto::{ErrorCode, Frame, wire};
use longlink_rpc::notify::{DeviceClass, NotifyError, PushToken};
use longlink_rpc::{Refusal, SessionInfo};

use crate::{Logic, bad_body};

pub(crate) async fn push_token(
    logic: &Logic,
    session: &SessionInfo,
    frame: &Frame,
) -> Result<Frame, Refusal> {
    let request: wire::PushTokenRequest = frame.decode_body().map_err(bad_body)?;
    let (appcode, uid, device) = (session.appcode, &session.uid, &session.device_id);
    let notifications = &logic.notifications;
    match wire::PushTokenOp::try_from(request.op) {
        Ok(wire::PushTokenOp::Register) => {
            let class = DeviceClass {
                platform: request.platform,
                vendor: request.vendor,
                app_version: request.app_version,
            };
            let token = PushToken {
                provider: request.provider,
                token: request.token,
            };
            let record = notifications
                .register(appcode, uid, device, class, token)
                .await
                .map_err(notify_refusal)?;
            return Ok(response(frame, record.tokens));
        }
        Ok(wire::PushTokenOp::Remove) => {
            let provider = Some(request.provider.as_str()).filter(|p| !p.is_empty());
            notifications
                .remove(appcode, uid, device, provider)
                .await
                .map_err(notify_refusal)?;
        }
        Ok(wire::PushTokenOp::List) => {}
        Err(_) => {
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                format!("unknown push token op {}", request.op),
            ));
        }
    }
    let tokens = notifications
        .devices(appcode, uid, Some(device))
        .await
        .map_err(notify_refusal)?
        .into_iter()
        .flat_map(|record| record.tokens)
        .collect();
    Ok(response(frame, tokens))
}

fn response(frame: &Frame, tokens: Vec<PushToken>) -> Frame {
    let tokens = tokens
        .into_iter()
        .map(|t| wire::PushTokenInfo {
            provider: t.provider,
            token: t.token,
        })
        .collect();
    Frame::response(&frame.header, &wire::PushTokenResponse { tokens })
}

/// The ERROR a refused notification call answers with: a bad field or an unknown provider is
/// the client's to fix (INVALID_ARGUMENT, nothing to retry); a failed registry is retryable
/// like any store failure (STORE_UNAVAILABLE).
pub(crate) fn notify_refusal(err: NotifyError) -> Refusal {
    match err {
        NotifyError::InvalidArgument(message) => Refusal::new(ErrorCode::InvalidArgument, message),
        NotifyError::NotFound(message) => Refusal::new(ErrorCode::NotFound, message),
        NotifyError::Unavailable(message) => Refusal::new(ErrorCode::StoreUnavailable, message),
    }
}
