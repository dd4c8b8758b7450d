//! A local FCM HTTP v1: the OAuth 2.0 token endpoint of the service account (`POST /token`,
//! JWT-bearer grant) and `POST /v1/projects/<project>/messages:send`. By default it behaves
//! as Google does: it verifies the RS256 assertion with the account's public key (signature,
//! `iss`, `aud`, `scope`), issues access tokens, refuses a send whose bearer token it did not
//! issue (or revoked) with 401 UNAUTHENTICATED, and answers a good send with
//! `{"name": "projects/<p>/messages/<n>"}`.

use std::collections::HashSet;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::keys::TestServiceAccount;
use crate::server::{FakeServer, Protocols, Recorded, Reply, Responder, Script, StartError, lock};

/// The project id of the fake's service account.
pub const FAKE_PROJECT: &str = "longlink-test";

/// The OAuth scope FCM sends need.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// The fake FCM. Derefs to [`FakeServer`] (both endpoints' requests are recorded there).
pub struct FakeFcm {
    server: FakeServer,
    state: Arc<FcmState>,
}

#[derive(Default)]
struct FcmState {
    token_script: Script,
    send_script: Script,
    account: OnceLock<TestServiceAccount>,
    valid: Mutex<HashSet<String>>,
    issued: AtomicU64,
    sent: AtomicU64,
}

impl Deref for FakeFcm {
    type Target = FakeServer;
    fn deref(&self) -> &FakeServer {
        &self.server
    }
}

impl FakeFcm {
    /// Starts on 127.0.0.1:0 with a fresh test service account of project
    /// [`FAKE_PROJECT`] whose `token_uri` is this fake's, recording every request.
    ///
    /// # Errors
    /// Bind, certificate or key errors.
    pub async fn start() -> Result<FakeFcm, StartError> {
        FakeFcm::start_with(true).await
    }

    /// Starts in counting mode (no request recorded, for the bench).
    ///
    /// # Errors
    /// Bind, certificate or key errors.
    pub async fn start_counting() -> Result<FakeFcm, StartError> {
        FakeFcm::start_with(false).await
    }

    async fn start_with(record: bool) -> Result<FakeFcm, StartError> {
        let state = Arc::new(FcmState::default());
        let s = state.clone();
        let server =
            FakeServer::start(Protocols::Any, record, Box::new(move |req| s.answer(req))).await?;
        let account =
            TestServiceAccount::generate(FAKE_PROJECT, &format!("{}/token", server.url()))?;
        let _ = state.account.set(account);
        Ok(FakeFcm { server, state })
    }

    /// The service account whose tokens this fake accepts (write it with
    /// [`TestServiceAccount::write_json`]).
    pub fn account(&self) -> &TestServiceAccount {
        // Set in start_with before the fake is handed out.
        self.state
            .account
            .get()
            .unwrap_or_else(|| unreachable!("the account is set at start"))
    }

    /// The token endpoint, `<url>/token`.
    pub fn token_uri(&self) -> String {
        format!("{}/token", self.server.url())
    }

    /// Requests to the token endpoint so far.
    pub fn token_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == "/token")
            .collect()
    }

    /// Requests to messages:send so far.
    pub fn send_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path != "/token")
            .collect()
    }

    /// How many access tokens the token endpoint issued.
    pub fn tokens_issued(&self) -> u64 {
        self.state.issued.load(Ordering::Relaxed)
    }

    /// How many messages were accepted (200).
    pub fn messages_accepted(&self) -> u64 {
        self.state.sent.load(Ordering::Relaxed)
    }

    /// Makes every access token issued so far invalid (sends with them get 401).
    pub fn revoke_tokens(&self) {
        lock(&self.state.valid).clear();
    }

    /// Queues a reply for the next token request.
    pub fn reply_token(&self, reply: Reply) {
        self.state.token_script.push(reply);
    }

    /// Queues a reply for the next send.
    pub fn reply_send(&self, reply: Reply) {
        self.state.send_script.push(reply);
    }

    /// Answers sends the queue does not cover with `f` (None = the default again).
    pub fn respond_send_with(&self, f: Option<Responder>) {
        self.state.send_script.set(f);
    }
}

impl FcmState {
    fn answer(&self, req: &Recorded) -> Reply {
        if req.path == "/token" {
            return self
                .token_script
                .next(req)
                .unwrap_or_else(|| self.token(req));
        }
        self.send_script.next(req).unwrap_or_else(|| self.send(req))
    }

    fn token(&self, req: &Recorded) -> Reply {
        let invalid = |why: &str| {
            Reply::json(
                400,
                &serde_json::json!({"error": "invalid_grant", "error_description": why}),
            )
        };
        if req.method != "POST" {
            return Reply::status(405);
        }
        let form = req.form();
        let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if field("grant_type") != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
            return Reply::json(400, &serde_json::json!({"error": "unsupported_grant_type"}));
        }
        let Some(account) = self.account.get() else {
            return invalid("no account");
        };
        let Some(assertion) = field("assertion") else {
            return invalid("no assertion");
        };
        let claims = match account.verify(assertion) {
            Ok((header, claims))
                if header.kid.as_deref() == Some(account.private_key_id.as_str()) =>
            {
                claims
            }
            Ok(_) => return invalid("Invalid JWT Signature (kid)."),
            Err(e) => return invalid(&e),
        };
        if claims["iss"] != account.client_email.as_str()
            || claims["aud"] != account.token_uri.as_str()
            || !claims["scope"]
                .as_str()
                .is_some_and(|s| s.split(' ').any(|s| s == FCM_SCOPE))
            || !claims["iat"].is_u64()
            || !claims["exp"].is_u64()
        {
            return invalid("Invalid JWT: claims");
        }
        let n = self.issued.fetch_add(1, Ordering::Relaxed) + 1;
        let token = format!("ya29.fake-{n}");
        lock(&self.valid).insert(token.clone());
        Reply::json(
            200,
            &serde_json::json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}),
        )
    }

    fn send(&self, req: &Recorded) -> Reply {
        let project = req
            .path
            .strip_prefix("/v1/projects/")
            .and_then(|p| p.strip_suffix("/messages:send"));
        let Some(project) = project else {
            return Reply::fcm_error(404, "NOT_FOUND", "");
        };
        if req.method != "POST" {
            return Reply::fcm_error(405, "METHOD_NOT_ALLOWED", "");
        }
        let authorized = req.bearer().is_some_and(|t| lock(&self.valid).contains(t));
        if !authorized {
            return Reply::fcm_error(401, "UNAUTHENTICATED", "");
        }
        let body = req.json();
        if body["message"]["token"].as_str().is_none_or(str::is_empty) {
            return Reply::fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");
        }
        let n = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
        Reply::json(
            200,
            &serde_json::json!({"name": format!("projects/{project}/messages/0:{n}%fake")}),
        )
    }
}
