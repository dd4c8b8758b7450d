//! Tokens (issue 8, "token rules"; docs/security.md "Tokens"): login JWTs verified with the
//! keys of their appcode, and the resume tokens logic gives a session at login
//! ([`ResumeKeys`]).
//!
//! Each appcode has up to [`MAX_KEYS_PER_APP`] keys, each with a `kid`: HS256 secrets and
//! RS256 / ES256 public keys. A token's header `kid` selects one key of the LOGIN's appcode;
//! without a `kid` every key of that appcode with the header's algorithm is tried (bounded by
//! the same cap). Two keys side by side are how a key is rotated. A key's algorithm is fixed
//! by the key, never by the token (no algorithm confusion: an RS256 public key is never used
//! as an HMAC secret). The claims: `sub` and `appcode` (which must equal the LOGIN's appcode)
//! and `exp` and `iat` are required; `exp` and `nbf` are checked with a leeway for clock
//! skew, and an `iat` further in the future than the leeway is refused.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use longlink_presence::MultiLogin;
use longlink_proto::ErrorCode;
use longlink_rpc::{Refusal, SessionInfo};
use serde::{Deserialize, Serialize};

/// Default seconds of clock skew tolerated on `exp`/`nbf`/`iat` (RFC 8725 practice;
/// RELIABILITY.md T18); `[logic] token_leeway_secs`.
pub const DEFAULT_LEEWAY_SECS: u64 = 60;

/// Most keys one appcode may have: a token without a `kid` is tried against each, so the
/// work an invalid token costs stays bounded (two cover a rotation; a few more, several
/// issuers).
pub const MAX_KEYS_PER_APP: usize = 4;

/// Shortest HS256 secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 8;

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

/// The algorithm of an appcode's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlg {
    /// HMAC-SHA256 with a shared secret.
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256; the server holds the public key only.
    Rs256,
    /// ECDSA P-256 with SHA-256; the server holds the public key only.
    Es256,
}

impl KeyAlg {
    fn algorithm(self) -> Algorithm {
        match self {
            KeyAlg::Hs256 => Algorithm::HS256,
            KeyAlg::Rs256 => Algorithm::RS256,
            KeyAlg::Es256 => Algorithm::ES256,
        }
    }

    /// Parses "HS256", "RS256" or "ES256" (case-insensitive).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "HS256" => Some(KeyAlg::Hs256),
            "RS256" => Some(KeyAlg::Rs256),
            "ES256" => Some(KeyAlg::Es256),
            _ => None,
        }
    }
}

impl std::fmt::Display for KeyAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyAlg::Hs256 => "HS256",
            KeyAlg::Rs256 => "RS256",
            KeyAlg::Es256 => "ES256",
        })
    }
}

/// One key of an appcode.
#[derive(Clone, PartialEq, Eq)]
pub struct AppKey {
    /// The key id a token names in its header; "" = a key only tokens without `kid` use.
    pub kid: String,
    /// The algorithm.
    pub alg: KeyAlg,
    /// HS256: the secret. RS256 / ES256: the public key, PEM (`-----BEGIN PUBLIC KEY-----`).
    pub material: String,
}

impl AppKey {
    /// An HS256 key.
    pub fn hs256(kid: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            kid: kid.into(),
            alg: KeyAlg::Hs256,
            material: secret.into(),
        }
    }
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        f.debug_struct("AppKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// One application (appcode) the server knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    /// The appcode: client kind + account system (seed 003).
    pub appcode: u32,
    /// A human name ("customer", "driver").
    pub name: String,
    /// The keys its tokens may be signed with (1..=[`MAX_KEYS_PER_APP`]).
    pub keys: Vec<AppKey>,
    /// How many sessions one user of this appcode may have at once.
    pub multi_login: MultiLogin,
}

struct VerifyKey {
    kid: String,
    alg: KeyAlg,
    decoding: DecodingKey,
    /// HS256 keys can mint too (development, `longlink token`, tests).
    encoding: Option<EncodingKey>,
}

struct AppKeys {
    name: String,
    multi_login: MultiLogin,
    keys: Vec<VerifyKey>,
}

/// The known appcodes and their token keys.
pub struct Apps {
    apps: HashMap<u32, AppKeys>,
    leeway_secs: u64,
}

impl std::fmt::Debug for Apps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut codes: Vec<_> = self.apps.keys().collect();
        codes.sort_unstable();
        f.debug_struct("Apps").field("appcodes", &codes).finish()
    }
}

impl Default for Apps {
    /// No appcode at all: every LOGIN is UNKNOWN_APPCODE.
    fn default() -> Self {
        Self {
            apps: HashMap::new(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }
}

/// Minting failed, or a key is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The appcode is not configured.
    #[error("unknown appcode {0}")]
    UnknownAppcode(u32),
    /// No key of the appcode can mint (no such kid, or not an HS256 key).
    #[error("appcode {appcode} has no HS256 key {kid:?} to sign with")]
    NoSigningKey {
        /// The appcode.
        appcode: u32,
        /// The kid asked for ("" = any).
        kid: String,
    },
    /// A configured key is invalid.
    #[error("appcode {appcode} key {kid:?}: {why}")]
    BadKey {
        /// The appcode.
        appcode: u32,
        /// The key's kid.
        kid: String,
        /// What is wrong.
        why: String,
    },
    /// The JWT library failed.
    #[error("cannot sign token: {0}")]
    Sign(String),
}

/// What a verified login token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The uid (`sub`).
    pub uid: String,
    /// Issued at, unix seconds (revocations compare it).
    pub iat: u64,
}

fn verify_key(appcode: u32, key: &AppKey) -> Result<VerifyKey, TokenError> {
    let bad = |why: String| TokenError::BadKey {
        appcode,
        kid: key.kid.clone(),
        why,
    };
    let (decoding, encoding) = match key.alg {
        KeyAlg::Hs256 => {
            if key.material.len() < MIN_SECRET_BYTES {
                return Err(bad(format!(
                    "an HS256 secret needs at least {MIN_SECRET_BYTES} bytes"
                )));
            }
            (
                DecodingKey::from_secret(key.material.as_bytes()),
                Some(EncodingKey::from_secret(key.material.as_bytes())),
            )
        }
        KeyAlg::Rs256 => (
            DecodingKey::from_rsa_pem(key.material.as_bytes())
                .map_err(|err| bad(format!("not an RSA public key PEM: {err}")))?,
            None,
        ),
        KeyAlg::Es256 => (
            DecodingKey::from_ec_pem(key.material.as_bytes())
                .map_err(|err| bad(format!("not an EC (P-256) public key PEM: {err}")))?,
            None,
        ),
    };
    Ok(VerifyKey {
        kid: key.kid.clone(),
        alg: key.alg,
        decoding,
        encoding,
    })
}

/// The signing key of a private key PEM for RS256 / ES256, or a secret for HS256.
///
/// # Errors
/// [`TokenError::BadKey`] when the material does not parse.
pub fn signing_key(alg: KeyAlg, material: &[u8]) -> Result<EncodingKey, TokenError> {
    let bad = |why: String| TokenError::BadKey {
        appcode: 0,
        kid: String::new(),
        why,
    };
    match alg {
        KeyAlg::Hs256 => Ok(EncodingKey::from_secret(material)),
        KeyAlg::Rs256 => EncodingKey::from_rsa_pem(material)
            .map_err(|err| bad(format!("not an RSA private key PEM: {err}"))),
        KeyAlg::Es256 => EncodingKey::from_ec_pem(material)
            .map_err(|err| bad(format!("not an EC private key PEM (PKCS#8): {err}"))),
    }
}

/// Signs a login token for `(appcode, uid)` valid for `ttl_secs` with `key` (of `alg`),
/// naming `kid` in the header when it is not empty.
///
/// # Errors
/// [`TokenError::Sign`].
pub fn sign(
    alg: KeyAlg,
    kid: &str,
    key: &EncodingKey,
    appcode: u32,
    uid: &str,
    ttl_secs: u64,
) -> Result<String, TokenError> {
    let now = longlink_proto::unix_ms() / 1000;
    let claims = Claims {
        sub: uid.to_owned(),
        appcode,
        exp: now + ttl_secs,
        iat: now,
    };
    let mut header = Header::new(alg.algorithm());
    if !kid.is_empty() {
        header.kid = Some(kid.to_owned());
    }
    jsonwebtoken::encode(&header, &claims, key).map_err(|err| TokenError::Sign(err.to_string()))
}

/// The `sub` a token claims, without checking anything: only to key the failed-login limit
/// per uid before (and whether or not) the signature verifies.
pub fn unverified_uid(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Sub {
        sub: String,
    }
    let data = jsonwebtoken::dangerous::insecure_decode::<Sub>(token).ok()?;
    let sub = data.claims.sub;
    (!sub.is_empty() && sub.len() <= MAX_ID_BYTES).then_some(sub)
}

impl Apps {
    /// Builds the key table with the default leeway. Later entries with the same appcode
    /// replace earlier ones.
    ///
    /// # Errors
    /// [`TokenError::BadKey`]: a key does not parse, an HS256 secret is too short, an
    /// appcode has no key or more than [`MAX_KEYS_PER_APP`], or two keys share a kid.
    pub fn new(apps: &[App]) -> Result<Self, TokenError> {
        Self::with_leeway(apps, DEFAULT_LEEWAY_SECS)
    }

    /// Like [`Apps::new`] with `leeway_secs` of clock skew tolerated on `exp`, `nbf`, `iat`.
    ///
    /// # Errors
    /// As [`Apps::new`].
    pub fn with_leeway(apps: &[App], leeway_secs: u64) -> Result<Self, TokenError> {
        let mut table = HashMap::new();
        for app in apps {
            let bad = |why: &str| TokenError::BadKey {
                appcode: app.appcode,
                kid: String::new(),
                why: why.to_owned(),
            };
            if app.keys.is_empty() {
                return Err(bad("an appcode needs a key (secret or [[apps.keys]])"));
            }
            if app.keys.len() > MAX_KEYS_PER_APP {
                return Err(bad(&format!("at most {MAX_KEYS_PER_APP} keys per appcode")));
            }
            let mut keys = Vec::with_capacity(app.keys.len());
            for key in &app.keys {
                if keys.iter().any(|k: &VerifyKey| k.kid == key.kid) {
                    return Err(TokenError::BadKey {
                        appcode: app.appcode,
                        kid: key.kid.clone(),
                        why: "two keys of one appcode have this kid".to_owned(),
                    });
                }
                keys.push(verify_key(app.appcode, key)?);
            }
            table.insert(
                app.appcode,
                AppKeys {
                    name: app.name.clone(),
                    multi_login: app.multi_login,
                    keys,
                },
            );
        }
        Ok(Self {
            apps: table,
            leeway_secs,
        })
    }

    /// Whether `appcode` is configured.
    pub fn contains(&self, appcode: u32) -> bool {
        self.apps.contains_key(&appcode)
    }

    /// The multi-login policy of `appcode` (the default for an unknown one).
    pub fn multi_login(&self, appcode: u32) -> MultiLogin {
        self.apps
            .get(&appcode)
            .map_or_else(MultiLogin::default, |k| k.multi_login)
    }

    /// The configured name of `appcode`.
    pub fn name(&self, appcode: u32) -> Option<&str> {
        self.apps.get(&appcode).map(|k| k.name.as_str())
    }

    /// The clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }

    /// Signs a token for `(appcode, uid)` valid for `ttl_secs` with the appcode's first
    /// HS256 key.
    ///
    /// # Errors
    /// [`TokenError::UnknownAppcode`], [`TokenError::NoSigningKey`] or [`TokenError::Sign`].
    pub fn mint(&self, appcode: u32, uid: &str, ttl_secs: u64) -> Result<String, TokenError> {
        self.mint_with_kid(appcode, uid, ttl_secs, None)
    }

    /// Like [`Apps::mint`] with the HS256 key `kid` (`None`: the first HS256 key).
    ///
    /// # Errors
    /// As [`Apps::mint`].
    pub fn mint_with_kid(
        &self,
        appcode: u32,
        uid: &str,
        ttl_secs: u64,
        kid: Option<&str>,
    ) -> Result<String, TokenError> {
        let app = self
            .apps
            .get(&appcode)
            .ok_or(TokenError::UnknownAppcode(appcode))?;
        let (key_kid, encoding) = app
            .keys
            .iter()
            .filter(|k| kid.is_none_or(|kid| k.kid == kid))
            .find_map(|k| k.encoding.as_ref().map(|e| (k.kid.as_str(), e)))
            .ok_or_else(|| TokenError::NoSigningKey {
                appcode,
                kid: kid.unwrap_or_default().to_owned(),
            })?;
        sign(KeyAlg::Hs256, key_kid, encoding, appcode, uid, ttl_secs)
    }

    /// Verifies `token` for a LOGIN of `appcode`; returns its uid and `iat`.
    ///
    /// # Errors
    /// UNKNOWN_APPCODE, APPCODE_MISMATCH (a token of another appcode) or BAD_TOKEN
    /// (malformed, no key of this appcode verifies it, unknown kid, expired, not yet valid,
    /// issued in the future, a claim missing).
    pub fn verify(&self, appcode: u32, token: &str) -> Result<Verified, Refusal> {
        let app = self.apps.get(&appcode).ok_or_else(|| {
            Refusal::new(
                ErrorCode::UnknownAppcode,
                format!("unknown appcode {appcode}"),
            )
        })?;
        let refused = |why: String| -> Refusal {
            // Tell "a token of another appcode" apart from garbage, to help integrators;
            // the unverified claims are only used to choose the error code.
            if let Ok(data) = jsonwebtoken::dangerous::insecure_decode::<Claims>(token)
                && data.claims.appcode != appcode
            {
                return mismatch(appcode, data.claims.appcode);
            }
            Refusal::new(ErrorCode::BadToken, format!("invalid token: {why}"))
        };
        let header = jsonwebtoken::decode_header(token).map_err(|err| refused(err.to_string()))?;
        // The kid picks the key; without one, each key of the header's algorithm (bounded by
        // MAX_KEYS_PER_APP). A key only ever verifies its own algorithm.
        let candidates = app.keys.iter().filter(|k| {
            k.alg.algorithm() == header.alg && header.kid.as_deref().is_none_or(|kid| k.kid == kid)
        });
        let mut last: Option<jsonwebtoken::errors::Error> = None;
        let mut verified = None;
        for key in candidates {
            let mut validation = Validation::new(key.alg.algorithm());
            validation.leeway = self.leeway_secs;
            validation.validate_nbf = true;
            validation.set_required_spec_claims(&["exp", "sub"]);
            match jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation) {
                Ok(data) => {
                    verified = Some(data.claims);
                    break;
                }
                Err(err) => {
                    // The signature is checked first: any other error means this key did
                    // verify it, and that error (expired…) is the one to report.
                    let signature_failed = matches!(
                        err.kind(),
                        jsonwebtoken::errors::ErrorKind::InvalidSignature
                    );
                    if !signature_failed || last.is_none() {
                        let stop = !signature_failed;
                        last = Some(err);
                        if stop {
                            break;
                        }
                    }
                }
            }
        }
        let Some(claims) = verified else {
            return Err(match (last, &header.kid) {
                (Some(err), _) => refused(err.to_string()),
                (None, Some(kid)) => refused(format!(
                    "no {:?} key {kid:?} for appcode {appcode}",
                    header.alg
                )),
                (None, None) => refused(format!("no {:?} key for appcode {appcode}", header.alg)),
            });
        };
        if claims.appcode != appcode {
            return Err(mismatch(appcode, claims.appcode));
        }
        if claims.sub.is_empty() || claims.sub.len() > MAX_ID_BYTES {
            return Err(Refusal::new(
                ErrorCode::BadToken,
                "token uid is empty or too long",
            ));
        }
        let now = longlink_proto::unix_ms() / 1000;
        if claims.iat > now + self.leeway_secs {
            return Err(Refusal::new(
                ErrorCode::BadToken,
                "invalid token: issued in the future (iat beyond the clock-skew leeway)",
            ));
        }
        Ok(Verified {
            uid: claims.sub,
            iat: claims.iat,
        })
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
    /// The `iat` of the login token the session logged in with: a revocation of the user's
    /// tokens issued before some instant also ends the sessions they opened (issue 8).
    #[serde(default)]
    pub auth_iat: u64,
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
        validation.leeway = DEFAULT_LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
        }
    }

    /// A resume token for `session`, opened by a login token issued at `auth_iat`.
    pub fn mint(&self, session: &SessionInfo, auth_iat: u64) -> String {
        let claims = ResumeClaims {
            typ: "resume".to_owned(),
            sub: session.uid.clone(),
            appcode: session.appcode,
            dev: session.device_id.clone(),
            epoch: session.epoch,
            exp: longlink_proto::unix_ms() / 1000 + RESUME_TOKEN_TTL_SECS,
            auth_iat,
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
                keys: vec![AppKey::hs256("", "secret-129")],
                multi_login: MultiLogin::default(),
            },
            App {
                appcode: 130,
                name: "driver".into(),
                keys: vec![
                    AppKey::hs256("new", "secret-130-new"),
                    AppKey::hs256("old", "secret-130-old"),
                ],
                multi_login: MultiLogin::Allow { max_sessions: 3 },
            },
        ])
        .unwrap()
    }

    fn now() -> u64 {
        longlink_proto::unix_ms() / 1000
    }

    /// A token with hand-made claims signed with `secret` (HS256), naming `kid` if any.
    fn hs_token(secret: &str, kid: Option<&str>, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn code(apps: &Apps, appcode: u32, token: &str) -> ErrorCode {
        apps.verify(appcode, token).unwrap_err().code
    }

    #[test]
    fn minted_tokens_verify_for_their_appcode_only() {
        let apps = apps();
        let token = apps.mint(129, "alice", 60).unwrap();
        let verified = apps.verify(129, &token).unwrap();
        assert_eq!(verified.uid, "alice");
        assert!(verified.iat.abs_diff(now()) <= 1);
        assert_eq!(code(&apps, 130, &token), ErrorCode::AppcodeMismatch);
        assert_eq!(code(&apps, 7, &token), ErrorCode::UnknownAppcode);
        assert_eq!(code(&apps, 129, "not.a.jwt"), ErrorCode::BadToken);
        let mut forged = token.clone();
        forged.pop();
        assert_eq!(code(&apps, 129, &forged), ErrorCode::BadToken);
    }

    #[test]
    fn time_claims_are_enforced_with_the_leeway() {
        let apps = apps();
        let t = now();
        let token = |claims: serde_json::Value| hs_token("secret-129", None, &claims);
        let ok = |claims| apps.verify(129, &token(claims)).is_ok();
        // exp: required; past beyond the leeway refused, within it accepted.
        assert!(!ok(serde_json::json!({"sub":"a","appcode":129,"iat":t})));
        assert!(!ok(
            serde_json::json!({"sub":"a","appcode":129,"iat":t - 200,"exp":t - 61})
        ));
        assert!(ok(
            serde_json::json!({"sub":"a","appcode":129,"iat":t - 200,"exp":t - 30})
        ));
        // iat: required; in the future beyond the leeway refused.
        assert!(!ok(
            serde_json::json!({"sub":"a","appcode":129,"exp":t + 60})
        ));
        assert!(!ok(
            serde_json::json!({"sub":"a","appcode":129,"iat":t + 120,"exp":t + 600})
        ));
        assert!(ok(
            serde_json::json!({"sub":"a","appcode":129,"iat":t + 30,"exp":t + 600})
        ));
        // nbf: honoured when present.
        assert!(!ok(
            serde_json::json!({"sub":"a","appcode":129,"iat":t,"exp":t + 600,"nbf":t + 120})
        ));
        assert!(ok(
            serde_json::json!({"sub":"a","appcode":129,"iat":t,"exp":t + 600,"nbf":t + 30})
        ));
        let strict = Apps::with_leeway(
            &[App {
                appcode: 129,
                name: "c".into(),
                keys: vec![AppKey::hs256("", "secret-129")],
                multi_login: MultiLogin::default(),
            }],
            0,
        )
        .unwrap();
        assert!(
            strict
                .verify(
                    129,
                    &token(serde_json::json!({"sub":"a","appcode":129,"iat":t - 9,"exp":t - 5}))
                )
                .is_err()
        );
    }

    #[test]
    fn a_kid_picks_the_key_and_without_one_each_key_is_tried() {
        let apps = apps();
        let t = now();
        let claims = serde_json::json!({"sub":"bob","appcode":130,"iat":t,"exp":t + 60});
        for (secret, kid) in [
            ("secret-130-old", Some("old")),
            ("secret-130-new", Some("new")),
            ("secret-130-old", None),
            ("secret-130-new", None),
        ] {
            let token = hs_token(secret, kid, &claims);
            assert_eq!(apps.verify(130, &token).unwrap().uid, "bob", "{kid:?}");
        }
        // The wrong key for the kid, an unknown kid, another appcode's key: all refused.
        for (secret, kid) in [
            ("secret-130-old", Some("new")),
            ("secret-130-old", Some("gone")),
            ("secret-129", None),
        ] {
            let token = hs_token(secret, kid, &claims);
            assert_eq!(code(&apps, 130, &token), ErrorCode::BadToken, "{kid:?}");
        }
        // Minting picks a kid.
        let token = apps.mint_with_kid(130, "bob", 60, Some("old")).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(),
            Some("old")
        );
        assert!(apps.mint_with_kid(130, "bob", 60, Some("nope")).is_err());
    }

    #[test]
    fn a_token_signed_with_another_appcodes_key_never_passes() {
        let apps = apps();
        let t = now();
        // Signed with 130's key but claiming 129: 129's keys do not verify it.
        let token = hs_token(
            "secret-130-new",
            None,
            &serde_json::json!({"sub":"eve","appcode":129,"iat":t,"exp":t + 60}),
        );
        assert_eq!(code(&apps, 129, &token), ErrorCode::BadToken);
        // Even when two appcodes share a secret, the claim decides.
        let shared = Apps::new(&[
            App {
                appcode: 1,
                name: "a".into(),
                keys: vec![AppKey::hs256("", "same-secret")],
                multi_login: MultiLogin::default(),
            },
            App {
                appcode: 2,
                name: "b".into(),
                keys: vec![AppKey::hs256("", "same-secret")],
                multi_login: MultiLogin::default(),
            },
        ])
        .unwrap();
        let token = shared.mint(2, "eve", 60).unwrap();
        assert_eq!(code(&shared, 1, &token), ErrorCode::AppcodeMismatch);
    }

    #[test]
    fn bad_key_sets_are_refused() {
        let app = |keys: Vec<AppKey>| App {
            appcode: 9,
            name: "x".into(),
            keys,
            multi_login: MultiLogin::default(),
        };
        assert!(Apps::new(&[app(vec![])]).is_err());
        assert!(Apps::new(&[app(vec![AppKey::hs256("", "short")])]).is_err());
        assert!(
            Apps::new(&[app(vec![
                AppKey::hs256("a", "long-enough-1"),
                AppKey::hs256("a", "long-enough-2")
            ])])
            .is_err()
        );
        let many = (0..=MAX_KEYS_PER_APP)
            .map(|i| AppKey::hs256(format!("k{i}"), "long-enough"))
            .collect();
        assert!(Apps::new(&[app(many)]).is_err());
        let pem = AppKey {
            kid: "r".into(),
            alg: KeyAlg::Rs256,
            material: "not a pem".into(),
        };
        assert!(Apps::new(&[app(vec![pem])]).is_err());
        // An HS256 token is never checked against an RS256 key (and vice versa).
        assert_eq!(KeyAlg::parse("es256"), Some(KeyAlg::Es256));
        assert_eq!(KeyAlg::parse("none"), None);
    }

    #[test]
    fn unverified_uid_reads_sub_only_when_sane() {
        let apps = apps();
        assert_eq!(
            unverified_uid(&apps.mint(129, "alice", 60).unwrap()).as_deref(),
            Some("alice")
        );
        assert_eq!(unverified_uid("garbage"), None);
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
        let claims = keys.verify(&keys.mint(&session, 7)).unwrap();
        assert_eq!(
            (
                claims.appcode,
                claims.sub.as_str(),
                claims.dev.as_str(),
                claims.epoch,
                claims.auth_iat
            ),
            (129, "alice", "phone", 42, 7)
        );
        // Another node's key, a login token, garbage: all rejected alike.
        let other = ResumeKeys::new("");
        let login_token = apps().mint(129, "alice", 60).unwrap();
        for token in [other.mint(&session, 7), login_token, "x.y.z".to_owned()] {
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
}
