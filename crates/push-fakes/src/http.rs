//! A local vendor push / SMS gateway endpoint: any method, any path; 200 `{"ok":true}`
//! unless scripted. It stands in for Huawei, Xiaomi, OPPO, vivo, Honor and SMS gateways,
//! whose contracts longlink only knows through the `[[push.http]]` templates.

use std::ops::Deref;
use std::sync::Arc;

use crate::server::{FakeServer, Protocols, Reply, Responder, Script, StartError};

/// The fake vendor endpoint. Derefs to [`FakeServer`].
pub struct FakeHttp {
    server: FakeServer,
    script: Arc<Script>,
}

impl Deref for FakeHttp {
    type Target = FakeServer;
    fn deref(&self) -> &FakeServer {
        &self.server
    }
}

impl FakeHttp {
    /// Starts on 127.0.0.1:0 (HTTP/1.1 and HTTP/2), recording every request.
    ///
    /// # Errors
    /// Bind or certificate errors.
    pub async fn start() -> Result<FakeHttp, StartError> {
        FakeHttp::start_with(true).await
    }

    /// Starts in counting mode (no request recorded, for the bench).
    ///
    /// # Errors
    /// Bind or certificate errors.
    pub async fn start_counting() -> Result<FakeHttp, StartError> {
        FakeHttp::start_with(false).await
    }

    async fn start_with(record: bool) -> Result<FakeHttp, StartError> {
        let script = Arc::new(Script::default());
        let s = script.clone();
        let server = FakeServer::start(
            Protocols::Any,
            record,
            Box::new(move |req| {
                s.next(req)
                    .unwrap_or_else(|| Reply::json(200, &serde_json::json!({"ok": true})))
            }),
        )
        .await?;
        Ok(FakeHttp { server, script })
    }

    /// Queues a reply for the next request (replies are used in order, before the default).
    pub fn reply(&self, reply: Reply) {
        self.script.push(reply);
    }

    /// Answers every request the queue does not cover with `f` (None = the default again).
    pub fn respond_with(&self, f: Option<Responder>) {
        self.script.set(f);
    }
}
