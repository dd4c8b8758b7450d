//! Tokens: HS256 JWTs, one secret per appcode (DESIGN.md "Identity and sessions").

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use longlink_proto::ErrorCode;
use longlink_rpc::Refusal;
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
}

struct AppKeys {
    name: String,
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
            },
            App {
                appcode: 130,
                name: "driver".into(),
                secret: "s130".into(),
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
