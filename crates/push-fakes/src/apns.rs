//! A local APNs: `POST /3/device/<token>` over HTTP/2 only (ALPN "h2"), answering as Apple
//! documents — 200 with the `apns-id` header, `{"reason": …}` bodies for errors — so the
//! provider is tested against the contract, not against itself.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use crate::keys::TestApnsKey;
use crate::server::{FakeServer, Protocols, Recorded, Reply, Responder, Script, StartError, lock};

/// The fake APNs. Derefs to [`FakeServer`] (url, CA, recorded requests, waits).
pub struct FakeApns {
    server: FakeServer,
    state: Arc<ApnsState>,
}

#[derive(Default)]
struct ApnsState {
    script: Script,
    key: Mutex<Option<TestApnsKey>>,
}

impl Deref for FakeApns {
    type Target = FakeServer;
    fn deref(&self) -> &FakeServer {
        &self.server
    }
}

impl FakeApns {
    /// Starts on 127.0.0.1:0, recording every request.
    ///
    /// # Errors
    /// Bind or certificate errors.
    pub async fn start() -> Result<FakeApns, StartError> {
        FakeApns::start_with(true).await
    }

    /// Starts in counting mode (no request recorded, for the bench).
    ///
    /// # Errors
    /// Bind or certificate errors.
    pub async fn start_counting() -> Result<FakeApns, StartError> {
        FakeApns::start_with(false).await
    }

    async fn start_with(record: bool) -> Result<FakeApns, StartError> {
        let state = Arc::new(ApnsState::default());
        let s = state.clone();
        let server = FakeServer::start(
            Protocols::H2Only,
            record,
            Box::new(move |req| s.script.next(req).unwrap_or_else(|| s.answer(req))),
        )
        .await?;
        Ok(FakeApns { server, state })
    }

    /// Queues a reply for the next request (replies are used in order, before the default).
    pub fn reply(&self, reply: Reply) {
        self.state.script.push(reply);
    }

    /// Answers every request the queue does not cover with `f` (None = the default again).
    pub fn respond_with(&self, f: Option<Responder>) {
        self.state.script.set(f);
    }

    /// Verifies every provider token with `key` (default: only its presence is checked): a
    /// token that does not verify, names another kid or team gets 403 InvalidProviderToken.
    pub fn verify_tokens_with(&self, key: TestApnsKey) {
        *lock(&self.state.key) = Some(key);
    }
}

impl ApnsState {
    /// Apple's default answers: the checks a real APNs makes first, then 200.
    fn answer(&self, req: &Recorded) -> Reply {
        if req.method != "POST" {
            return Reply::apns_error(405, "MethodNotAllowed");
        }
        let Some(token) = req.path.strip_prefix("/3/device/") else {
            return Reply::apns_error(404, "BadPath");
        };
        if token.is_empty() {
            return Reply::apns_error(400, "MissingDeviceToken");
        }
        let Some(jwt) = req.bearer() else {
            return Reply::apns_error(403, "MissingProviderToken");
        };
        if let Some(key) = lock(&self.key).as_ref() {
            match key.verify(jwt) {
                Ok((header, claims))
                    if header.kid.as_deref() == Some(key.key_id.as_str())
                        && claims["iss"] == key.team_id.as_str() => {}
                _ => return Reply::apns_error(403, "InvalidProviderToken"),
            }
        }
        if req.header("apns-topic").is_none_or(str::is_empty) {
            return Reply::apns_error(400, "MissingTopic");
        }
        if serde_json::from_slice::<serde_json::Value>(&req.body).is_err() {
            return Reply::apns_error(400, "PayloadEmpty");
        }
        let id = req
            .header("apns-id")
            .unwrap_or("00000000-0000-0000-0000-000000000000")
            .to_owned();
        Reply::status(200).with_header("apns-id", &id)
    }
}
