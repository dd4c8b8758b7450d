//! Tokens: HS256 JWTs, one secret per appcode (DESIGN.md "Identity and sessions"), and the
//! resume tokens logic gives a session at login ([`ResumeKeys`]).

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use longlink_presence::MultiLogin;
use longlink_proto::ErrorCode;
use longlink_rpc::{Refusal, SessionInfo};
use serde::{Deserialize, Serialize};

/// Seconds of clock skew tolerated on `exp`/`nbf` (RFC 8725 practice; RELIABILITY.md T18).
const LEEWAY_SECS: u64 = 60;

/// The claims of a longlink login token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The uid.
    pub sub: String,
    /// The appcode the token is valid for.
    pub appcode: u32,
    /// Expiry, unix seconds.
    pub exp: u64,
    /// Issued at, unix seconds.
    pub iat: u64,
}

/// One application (appcode) the server knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    /// The appcode: client kind + account system (seed 003).
    pub appcode: u32,
    /// A human name ("customer", "driver").
    pub name: String,
    /// The HS256 secret tokens of this appcode are signed with.
    pub secret: String,
    /// How many sessions one user of this appcode may have at once.
    pub multi_login: MultiLogin,
}

struct AppKeys {
    name: String,
    multi_login: MultiLogin,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// The known appcodes and their token keys.
pub struct Apps {
    keys: HashMap<u32, AppKeys>,
    validation: Validation,
}

impl std::fmt::Debug for Apps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut codes: Vec<_> = self.keys.keys().collect();
        codes.sort_unstable();
        f.debug_struct("Apps").field("appcodes", &codes).finish()
    }
}

/// Minting failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The appcode is not configured.
    #[error("unknown appcode {0}")]
    UnknownAppcode(u32),
    /// The JWT library failed.
    #[error("cannot sign token: {0}")]
    Sign(String),
}

impl Apps {
    /// Builds the key table. Later entries with the same appcode replace earlier ones.
    pub fn new(apps: &[App]) -> Self {
        let keys = apps
            .iter()
            .map(|app| {
                (
                    app.appcode,
                    AppKeys {
                        name: app.name.clone(),
                        multi_login: app.multi_login,
                        encoding: EncodingKey::from_secret(app.secret.as_bytes()),
                        decoding: DecodingKey::from_secret(app.secret.as_bytes()),
                    },
                )
            })
            .collect();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self { keys, validation }
    }

    /// Whether `appcode` is configured.
    pub fn contains(&self, appcode: u32) -> bool {
        self.keys.contains_key(&appcode)
    }

    /// The multi-login policy of `appcode` (the default for an unknown one).
    pub fn multi_login(&self, appcode: u32) -> MultiLogin {
        self.keys
            .get(&appcode)
            .map_or_else(MultiLogin::default, |k| k.multi_login)
    }

    /// The configured name of `appcode`.
    pub fn name(&self, appcode: u32) -> Option<&str> {
        self.keys.get(&appcode).map(|k| k.name.as_str())
    }

    /// Signs a token for `(appcode, uid)` valid for `ttl_secs`.
    ///
    /// # Errors
    /// [`TokenError::UnknownAppcode`] or [`TokenError::Sign`].
    pub fn mint(&self, appcode: u32, uid: &str, ttl_secs: u64) -> Result<String, TokenError> {
        let keys = self
            .keys
            .get(&appcode)
            .ok_or(TokenError::UnknownAppcode(appcode))?;
        let now = longlink_proto::unix_ms() / 1000;
        let claims = Claims {
            sub: uid.to_owned(),
            appcode,
            exp: now + ttl_secs,
            iat: now,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding)
            .map_err(|err| TokenError::Sign(err.to_string()))
    }

    /// Verifies `token` for a LOGIN of `appcode`; returns the uid.
    ///
    /// # Errors
    /// UNKNOWN_APPCODE, APPCODE_MISMATCH (a valid-looking token of another appcode) or
    /// BAD_TOKEN (malformed, bad signature, expired, algorithm other than HS256).
    pub fn verify(&self, appcode: u32, token: &str) -> Result<String, Refusal> {
        let keys = self.keys.get(&appcode).ok_or_else(|| {
            Refusal::new(
                ErrorCode::UnknownAppcode,
                format!("unknown appcode {appcode}"),
            )
        })?;
        match jsonwebtoken::decode::<Claims>(token, &keys.decoding, &self.validation) {
            Ok(data) if data.claims.appcode == appcode => {
                if data.claims.sub.is_empty() || data.claims.sub.len() > MAX_ID_BYTES {
                    return Err(Refusal::new(
                        ErrorCode::BadToken,
                        "token uid is empty or too long",
                    ));
                }
                Ok(data.claims.sub)
            }
            Ok(data) => Err(mismatch(appcode, data.claims.appcode)),
            Err(err) => {
                // Tell "a token of another appcode" apart from garbage, to help integrators;
                // the unverified claims are only used to choose the error code.
                if let Ok(data) = jsonwebtoken::dangerous::insecure_decode::<Claims>(token)
                    && data.claims.appcode != appcode
                {
                    return Err(mismatch(appcode, data.claims.appcode));
                }
                Err(Refusal::new(
                    ErrorCode::BadToken,
                    format!("invalid token: {err}"),
                ))
            }
        }
    }
}

fn mismatch(login: u32, token: u32) -> Refusal {
    Refusal::new(
        ErrorCode::AppcodeMismatch,
        format!("token is for appcode {token}, login is for appcode {login}"),
    )
}

/// How long a resume token is accepted. What really bounds it is its session: once the
/// session ends (replaced, logged out, hold expired) presence no longer has its epoch.
const RESUME_TOKEN_TTL_SECS: u64 = 24 * 3600;

/// The claims of a resume token: the session it resumes, nothing more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeClaims {
    /// Always "resume", so a login token signed with the same key could never pass.
    pub typ: String,
    /// The uid.
    pub sub: String,
    /// The appcode.
    pub appcode: u32,
    /// The device.
    pub dev: String,
    /// The session's connection epoch.
    pub epoch: u64,
    /// Expiry, unix seconds.
    pub exp: u64,
}

/// Signs and checks resume tokens (HS256, one node- or cluster-wide secret, separate from the
/// appcodes' login secrets). A token names one session — (appcode, uid, device, epoch) — and
/// only the connection that logged in receives it; presence refuses it once that session
/// ended.
pub struct ResumeKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for ResumeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumeKeys").finish_non_exhaustive()
    }
}

impl ResumeKeys {
    /// Keys from `secret`; an empty secret draws a random one (resume then works within
    /// this process only, which is all a single node needs).
    pub fn new(secret: &str) -> Self {
        let secret = if secret.is_empty() {
            let random: [u8; 32] = rand::random();
            random.to_vec()
        } else {
            secret.as_bytes().to_vec()
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
        }
    }

    /// A resume token for `session`.
    pub fn mint(&self, session: &SessionInfo) -> String {
        let claims = ResumeClaims {
            typ: "resume".to_owned(),
            sub: session.uid.clone(),
            appcode: session.appcode,
            dev: session.device_id.clone(),
            epoch: session.epoch,
            exp: longlink_proto::unix_ms() / 1000 + RESUME_TOKEN_TTL_SECS,
        };
        // Signing HS256 over a serializable struct cannot fail; an empty token just means
        // "no RESUME" to the client.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_default()
    }

    /// The claims of a valid resume token.
    ///
    /// # Errors
    /// RESUME_REJECTED for anything else (malformed, forged, expired, not a resume token).
    pub fn verify(&self, token: &str) -> Result<ResumeClaims, Refusal> {
        match jsonwebtoken::decode::<ResumeClaims>(token, &self.decoding, &self.validation) {
            Ok(data) if data.claims.typ == "resume" => Ok(data.claims),
            _ => Err(Refusal::new(
                ErrorCode::ResumeRejected,
                "invalid resume token: log in",
            )),
        }
    }
}

/// Longest uid, device id or client message id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 128;

#[cfg(test)]
mod tests {
    use super::*;

    fn apps() -> Apps {
        Apps::new(&[
            App {
                appcode: 129,
                name: "customer".into(),
                secret: "s129".into(),
                multi_login: MultiLogin::Kick,
            },
            App {
                appcode: 130,
                name: "driver".into(),
                secret: "s130".into(),
                multi_login: MultiLogin::Allow { max_sessions: 3 },
            },
        ])
    }

    #[test]
    fn minted_tokens_verify_for_their_appcode_only() {
        let apps = apps();
        let token = apps.mint(129, "alice", 60).unwrap();
        assert_eq!(apps.verify(129, &token).unwrap(), "alice");
        assert_eq!(
            apps.verify(130, &token).unwrap_err().code,
            ErrorCode::AppcodeMismatch
        );
        assert_eq!(
            apps.verify(7, &token).unwrap_err().code,
            ErrorCode::UnknownAppcode
        );
        assert_eq!(
            apps.verify(129, "not.a.jwt").unwrap_err().code,
            ErrorCode::BadToken
        );
        let mut forged = token.clone();
        forged.pop();
        assert_eq!(
            apps.verify(129, &forged).unwrap_err().code,
            ErrorCode::BadToken
        );
    }

    #[test]
    fn resume_tokens_name_their_session_and_nothing_else_passes() {
        let keys = ResumeKeys::new("");
        let session = SessionInfo {
            gate_id: "g".into(),
            session_id: 1,
            appcode: 129,
            uid: "alice".into(),
            device_id: "phone".into(),
            epoch: 42,
        };
        let claims = keys.verify(&keys.mint(&session)).unwrap();
        assert_eq!(
            (
                claims.appcode,
                claims.sub.as_str(),
                claims.dev.as_str(),
                claims.epoch
            ),
            (129, "alice", "phone", 42)
        );
        // Another node's key, a login token, garbage: all rejected alike.
        let other = ResumeKeys::new("");
        let login_token = apps().mint(129, "alice", 60).unwrap();
        for token in [other.mint(&session), login_token, "x.y.z".to_owned()] {
            assert_eq!(
                keys.verify(&token).unwrap_err().code,
                ErrorCode::ResumeRejected
            );
        }
        assert_eq!(
            apps().multi_login(130),
            MultiLogin::Allow { max_sessions: 3 }
        );
    }

    #[test]
    fn expired_tokens_are_refused() {
        let apps = apps();
        let keys = &apps.keys[&129];
        let claims = Claims {
            sub: "a".into(),
            appcode: 129,
            exp: 1000,
            iat: 0,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap();
        assert_eq!(
            apps.verify(129, &token).unwrap_err().code,
            ErrorCode::BadToken
        );
    }
}
