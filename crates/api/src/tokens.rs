//! Token revocation as the API sees it (issue 8): [`TokenRevoker`], implemented by the
//! composition root (`longlink-server`) over logic, which stores the revocation durably and
//! kicks the user's sessions. The API never links logic.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Why a revocation failed, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeFailure {
    /// The appcode is not configured (404).
    UnknownAppcode,
    /// The uid or the instant is unusable (400).
    InvalidArgument(String),
    /// The revocation could not be stored; nothing changed (503).
    Unavailable(String),
}

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeOutcome {
    /// Tokens issued before this instant (unix ms) are revoked.
    pub before_ms: u64,
    /// Sessions of the user that were ended.
    pub kicked: usize,
}

/// Revokes a user's tokens.
#[async_trait::async_trait]
pub trait TokenRevoker: Send + Sync + 'static {
    /// Revokes every token of `(appcode, uid)` issued before `before_ms` (`None` = now),
    /// durably, and ends the sessions they opened.
    ///
    /// # Errors
    /// [`RevokeFailure`].
    async fn revoke(
        &self,
        appcode: u32,
        uid: &str,
        before_ms: Option<u64>,
    ) -> Result<RevokeOutcome, RevokeFailure>;

    /// The uid of a valid, unrevoked login token of `appcode` (what a LOGIN would accept),
    /// so that an app may ask `GET /v1/dispatch` with the token it logs in with; `None` for
    /// anything else. A node without login tokens answers `None`.
    fn user_of(&self, appcode: u32, token: &str) -> Option<String> {
        let _ = (appcode, token);
        None
    }
}

/// A node without revocations (tests of other parts): every call is 503.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRevocations;

#[async_trait::async_trait]
impl TokenRevoker for NoRevocations {
    async fn revoke(
        &self,
        _appcode: u32,
        _uid: &str,
        _before_ms: Option<u64>,
    ) -> Result<RevokeOutcome, RevokeFailure> {
        Err(RevokeFailure::Unavailable(
            "this node does not revoke tokens".to_owned(),
        ))
    }
}

/// `POST /v1/tokens/revoke` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    /// The user's appcode (the key must cover it).
    pub appcode: u32,
    /// The user.
    pub uid: String,
    /// Revoke tokens issued before this instant (unix ms, not in the future); absent = now.
    #[serde(default)]
    pub before_ms: Option<u64>,
}

/// `POST /v1/tokens/revoke` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevokedBody {
    /// The user's appcode.
    pub appcode: u32,
    /// The user.
    pub uid: String,
    /// Tokens whose `iat` is before this instant (unix ms) are refused from now on (the later
    /// of this and any earlier revocation of the user). A token issued at or after it works.
    pub before_ms: u64,
    /// The user's sessions ended now (KICK LOGGED_OUT; held sessions just end).
    pub kicked: u64,
}
