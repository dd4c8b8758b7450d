//! Token revocation (issue 8): `POST /v1/tokens/revoke`, `longlink tokens revoke`.
//!
//! A revocation says "every token of (appcode, uid) issued before T is void" — the tokens a
//! leaked device or a fired employee holds, without rotating the appcode's key for everyone.
//! It is written durably first ([`TokenRevocations::revoke`]), so it holds across a restart;
//! then it takes effect at once:
//! - LOGIN refuses a token whose `iat` (seconds) is before T with BAD_TOKEN
//!   (`handlers/login.rs`); the comparison is `iat * 1000 < T`, so a token issued in the same
//!   second as a revocation made "now" is revoked too;
//! - RESUME refuses a session whose login token was issued before T (the resume token
//!   carries that `iat`), so a held session cannot come back;
//! - the user's sessions that logged in before T are kicked now (KICK LOGGED_OUT; a held one
//!   just ends).
//!
//! A LOGIN racing the revocation is caught on either side: the revocation is in memory before
//! presence is read for the kicks, and a LOGIN checks the revocation again after presence
//! registered it.

use longlink_proto::KickReason;
use longlink_rpc::KickNotice;
use longlink_store::{StoreError, TokenRevocations};

use crate::Logic;
use crate::auth::MAX_ID_BYTES;

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The user's appcode.
    pub appcode: u32,
    /// The user.
    pub uid: String,
    /// Tokens issued before this instant (unix ms) are revoked (the later of this
    /// revocation and an earlier one).
    pub before_ms: u64,
    /// Sessions kicked (online or held).
    pub kicked: usize,
}

/// Why a revocation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevokeError {
    /// The appcode is not configured.
    #[error("unknown appcode {0}")]
    UnknownAppcode(u32),
    /// The uid or the instant is unusable.
    #[error("{0}")]
    InvalidArgument(String),
    /// The revocation could not be stored (nothing changed).
    #[error("revocation not stored: {0}")]
    Unavailable(String),
}

/// Whether a token issued at `iat` (unix seconds) is revoked by a revocation at `before_ms`.
pub(crate) fn is_revoked(
    revocations: &dyn TokenRevocations,
    appcode: u32,
    uid: &str,
    iat: u64,
) -> bool {
    revocations
        .revoked_before(appcode, uid)
        .is_some_and(|before_ms| iat.saturating_mul(1000) < before_ms)
}

pub(crate) async fn revoke(
    logic: &Logic,
    appcode: u32,
    uid: &str,
    before_ms: Option<u64>,
) -> Result<Revoked, RevokeError> {
    if !logic.apps.contains(appcode) {
        return Err(RevokeError::UnknownAppcode(appcode));
    }
    if uid.is_empty() || uid.len() > MAX_ID_BYTES {
        return Err(RevokeError::InvalidArgument(format!(
            "uid must be 1..={MAX_ID_BYTES} bytes"
        )));
    }
    let now = longlink_proto::unix_ms();
    let before = before_ms.unwrap_or(now);
    if before > now {
        // A future instant would also void the tokens the user is given next.
        return Err(RevokeError::InvalidArgument(
            "before_ms must not be in the future".to_owned(),
        ));
    }
    let before = logic
        .revocations
        .revoke(appcode, uid, before)
        .await
        .map_err(|err| match err {
            StoreError::InvalidArgument(message) => RevokeError::InvalidArgument(message),
            other => RevokeError::Unavailable(other.to_string()),
        })?;
    // Durable and in memory: from here on no LOGIN or RESUME with such a token passes.
    let sessions = match logic.presence.sessions(appcode, uid).await {
        Ok(sessions) => sessions,
        Err(err) => {
            // The revocation stands; sessions it could not find end at their next RESUME.
            tracing::warn!(app.code = appcode, uid = %uid, error = %err, "revoked, but presence lookup failed: no kick");
            Vec::new()
        }
    };
    let mut kicked = 0;
    for session in sessions.iter().filter(|s| s.since_ms < before) {
        logic
            .gate
            .kick(
                &session.gate_id,
                session.session_id,
                KickNotice {
                    reason: KickReason::LoggedOut,
                    message: "this user's tokens were revoked: log in again".to_owned(),
                    by_device_id: String::new(),
                },
            )
            .await;
        kicked += 1;
    }
    tracing::info!(app.code = appcode, uid = %uid, before_ms = before, kicked, "tokens revoked");
    Ok(Revoked {
        appcode,
        uid: uid.to_owned(),
        before_ms: before,
        kicked,
    })
}
