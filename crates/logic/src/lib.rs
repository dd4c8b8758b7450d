//! Logic: longlink's stateless rules. It owns no connections and no durable state of its own;
//! everything it knows lives in presence, the store and the bus, so any number of logic
//! instances can serve any gate.
//!
//! [`Logic`] implements [`longlink_rpc::LogicService`]: the gate hands it LOGIN and every
//! request of a logged-in session, and it reaches sessions through [`longlink_rpc::GatePush`].
//! c2c is store-then-deliver (seed 001): the message is committed durably, then pushed to every
//! online session of the receiver and the sender's other sessions, then the sender is ACKed
//! with the server msgid; a receiver MSG_ACK marks it delivered for that device.
//!
//! Modules: [`auth`] (JWTs: keys per appcode, kid, rotation), [`login_guard`] (failed-login
//! limits), `revoke` (token revocation), `handlers/` (one file per command: login, logout, c2s,
//! c2c, msg_ack, offline_pull, history_pull), `convert` (store rows ↔ wire messages).

pub mod auth;
mod convert;
mod handlers;
pub mod login_guard;
pub mod metrics;
mod push;
mod revoke;

use std::sync::Arc;

use async_trait::async_trait;
use longlink_bus::{Bus, Routes};
use longlink_metrics::Registry;
use longlink_presence::Presence;
use longlink_proto::{Cmd, ErrorCode, Frame, FrameType};
use longlink_rpc::notify::{NoNotifications, Notifications};
use longlink_rpc::trace::Ledger;
use longlink_rpc::{
    GatePush, LogicService, LoginAccepted, Refusal, Reply, ResumeAccepted, SessionInfo,
};
use longlink_store::{MessageStore, TokenRevocations};

pub use auth::{App, AppKey, Apps, Claims, KeyAlg, ResumeKeys, TokenError, Verified};
pub use login_guard::LoginLimits;
pub use metrics::LogicMetrics;
pub use revoke::{RevokeError, Revoked};

/// Tunables of logic.
#[derive(Debug, Clone)]
pub struct LogicConfig {
    /// KEEPALIVE interval advertised in the LOGIN response.
    pub keepalive_interval_secs: u32,
    /// Largest c2c content / c2s payload accepted, in bytes.
    pub max_content_bytes: usize,
    /// Largest response body sent (the clients' frame limit); pull pages are cut to fit.
    pub max_response_bytes: usize,
    /// The secret resume tokens are signed with; empty = a random one per process (enough
    /// for one node; a cluster shares one so that a session resumes on any gate).
    pub resume_secret: String,
    /// Failed-login limits per IP and per uid (issue 8).
    pub login_limits: LoginLimits,
}

impl Default for LogicConfig {
    fn default() -> Self {
        Self {
            keepalive_interval_secs: 30,
            max_content_bytes: 60 * 1024,
            max_response_bytes: longlink_proto::DEFAULT_MAX_BODY_BYTES as usize,
            resume_secret: String::new(),
            login_limits: LoginLimits::default(),
        }
    }
}

/// The stateless logic role. Cheap to share (`Arc` inside each backend).
pub struct Logic {
    config: LogicConfig,
    apps: Arc<Apps>,
    resume_keys: ResumeKeys,
    presence: Arc<dyn Presence>,
    store: Arc<dyn MessageStore>,
    bus: Arc<dyn Bus>,
    gate: Arc<dyn GatePush>,
    routes: Arc<Routes>,
    pushes: push::PushEngine,
    ledger: Arc<dyn Ledger>,
    metrics: LogicMetrics,
    /// Whose tokens are revoked (issue 8); in memory unless [`Logic::with_revocations`].
    revocations: Arc<dyn TokenRevocations>,
    login_guard: login_guard::LoginGuard,
    /// Offline push notifications (issue 12); none unless [`Logic::with_notifications`].
    notifications: Arc<dyn Notifications>,
}

impl std::fmt::Debug for Logic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logic")
            .field("config", &self.config)
            .field("apps", &self.apps)
            .finish_non_exhaustive()
    }
}

impl Logic {
    /// Assembles logic over its backends, the c2s routing table and the gate(s) it pushes
    /// through; it records message stages in `ledger` and its metrics in `registry`.
    #[allow(clippy::too_many_arguments)] // the composition root names each part once
    pub fn new(
        config: LogicConfig,
        apps: Arc<Apps>,
        presence: Arc<dyn Presence>,
        store: Arc<dyn MessageStore>,
        bus: Arc<dyn Bus>,
        routes: Arc<Routes>,
        gate: Arc<dyn GatePush>,
        ledger: Arc<dyn Ledger>,
        registry: &mut Registry,
    ) -> Self {
        let metrics = LogicMetrics::new(registry);
        let pushes = push::PushEngine::new(
            apps.clone(),
            presence.clone(),
            store.clone(),
            gate.clone(),
            config.max_content_bytes,
            ledger.clone(),
            metrics.clone(),
        );
        registry.register_collector(Box::new(push::PushCollector {
            engine: pushes.clone(),
        }));
        Self {
            resume_keys: ResumeKeys::new(&config.resume_secret),
            login_guard: login_guard::LoginGuard::new(&config.login_limits),
            revocations: Arc::new(longlink_store::MemoryRevocations::new()),
            notifications: Arc::new(NoNotifications),
            config,
            apps,
            presence,
            store,
            bus,
            gate,
            routes,
            pushes,
            ledger,
            metrics,
        }
    }

    /// Keeps token revocations in `revocations` (durable on a node: `SqliteRevocations`)
    /// instead of this process's memory.
    #[must_use]
    pub fn with_revocations(mut self, revocations: Arc<dyn TokenRevocations>) -> Self {
        self.revocations = revocations;
        self
    }

    /// Offers undelivered stored messages to `notifications` (device push tokens, APNs/FCM),
    /// and serves the PUSH_TOKEN and NOTIFICATION_ACK commands with it.
    #[must_use]
    pub fn with_notifications(mut self, notifications: Arc<dyn Notifications>) -> Self {
        self.pushes.set_notifications(notifications.clone());
        self.notifications = notifications;
        self
    }

    /// Revokes every token of `(appcode, uid)` issued before `before_ms` (unix ms; `None` =
    /// now), durably, then ends the user's sessions opened with such tokens: online ones get
    /// KICK (LOGGED_OUT), held ones end, and none of them can RESUME.
    ///
    /// # Errors
    /// [`RevokeError`]: unknown appcode, a bad uid or instant, or the store failed.
    pub async fn revoke_tokens(
        &self,
        appcode: u32,
        uid: &str,
        before_ms: Option<u64>,
    ) -> Result<Revoked, RevokeError> {
        revoke::revoke(self, appcode, uid, before_ms).await
    }

    /// The uid of `token` if a LOGIN of `appcode` would accept it (a key of the appcode
    /// verifies it, it is current, and it is not revoked); `None` otherwise. For callers that
    /// authenticate an app by its login token outside a connection (`GET /v1/dispatch`).
    pub fn user_of(&self, appcode: u32, token: &str) -> Option<String> {
        let verified = self.apps.verify(appcode, token).ok()?;
        let revoked = revoke::is_revoked(
            self.revocations.as_ref(),
            appcode,
            &verified.uid,
            verified.iat,
        );
        (!revoked).then_some(verified.uid)
    }

    /// Logic's metrics (also in the registry given to [`Logic::new`]).
    pub fn metrics(&self) -> &LogicMetrics {
        &self.metrics
    }

    /// Awaits a store call, recording its latency as `op`.
    async fn timed<T>(
        &self,
        op: metrics::StoreOp,
        call: impl std::future::Future<Output = T>,
    ) -> T {
        let started = std::time::Instant::now();
        let out = call.await;
        self.metrics.store_op(op, started.elapsed());
        out
    }
}

/// Turns a handler result into the frame the client gets.
fn reply(request: &Frame, result: Result<Frame, Refusal>) -> Reply {
    match result {
        Ok(frame) => Reply::Frame(frame),
        Err(refusal) => Reply::Frame(refusal_frame(request, &refusal)),
    }
}

fn refusal_frame(request: &Frame, refusal: &Refusal) -> Frame {
    refusal.frame(Some(request.header.seq_id), request.header.log_id)
}

/// A push found a session presence lists but the gate no longer has (its gate lost it without
/// telling): remove it from presence, so the next push takes the offline path at once. A
/// session the gate *holds* without a link (`PushError::Unreachable`, seed 004) is left in
/// presence: its hold ends it, or a RESUME brings it back.
async fn clear_stale_session(
    presence: &dyn Presence,
    entry: &longlink_presence::SessionEntry,
    log_id: u64,
) {
    if let Err(err) = presence
        .unregister(entry.appcode, &entry.uid, &entry.gate_id, entry.session_id)
        .await
    {
        tracing::warn!(log_id, session.id = entry.session_id, error = %err, "stale presence not cleared");
        return;
    }
    tracing::info!(
        log_id,
        session.id = entry.session_id,
        "stale presence cleared"
    );
}

fn bad_body(err: longlink_proto::BodyError) -> Refusal {
    Refusal::new(ErrorCode::BadBody, err.to_string())
}

#[async_trait]
impl LogicService for Logic {
    async fn login(
        &self,
        gate_id: &str,
        session_id: u64,
        request: longlink_proto::wire::LoginRequest,
        log_id: u64,
        peer: Option<std::net::IpAddr>,
    ) -> Result<LoginAccepted, Refusal> {
        handlers::login::login(self, gate_id, session_id, request, log_id, peer).await
    }

    async fn resume(
        &self,
        gate_id: &str,
        session_id: u64,
        request: longlink_proto::wire::ResumeRequest,
        log_id: u64,
    ) -> Result<ResumeAccepted, Refusal> {
        handlers::resume::resume(self, gate_id, session_id, request, log_id).await
    }

    async fn session_ready(&self, session: &SessionInfo, resumed: bool) {
        if !resumed {
            // A RESUME response already carried what this device has not acknowledged.
            handlers::redeliver::redeliver_unacked(self, session).await;
        }
        self.pushes.session_ready(session).await;
    }

    async fn handle(&self, session: &SessionInfo, frame: Frame) -> Reply {
        let Some(cmd) = frame.cmd() else {
            return Reply::Frame(refusal_frame(
                &frame,
                &Refusal::new(
                    ErrorCode::UnknownCmd,
                    format!("unknown cmd {}", frame.header.cmd),
                ),
            ));
        };
        let result = match cmd {
            Cmd::Logout => return handlers::logout::logout(self, session, &frame).await,
            Cmd::MsgAck => return handlers::msg_ack::msg_ack(self, session, &frame).await,
            Cmd::C2s => handlers::c2s::c2s(self, session, &frame).await,
            Cmd::C2c => handlers::c2c::c2c(self, session, &frame).await,
            Cmd::OfflinePull => handlers::offline_pull::offline_pull(self, session, &frame).await,
            Cmd::HistoryPull => handlers::history_pull::history_pull(self, session, &frame).await,
            Cmd::Login | Cmd::Resume => Err(Refusal::new(
                ErrorCode::AlreadyLoggedIn,
                "this connection is already logged in",
            )),
            Cmd::Conversations => {
                handlers::conversations::conversations(self, session, &frame).await
            }
            Cmd::MarkRead => handlers::mark_read::mark_read(self, session, &frame).await,
            Cmd::PushToken => handlers::push_token::push_token(self, session, &frame).await,
            Cmd::NotificationAck => {
                handlers::notification_ack::notification_ack(self, session, &frame).await
            }
            Cmd::Keepalive | Cmd::Kick | Cmd::Msg | Cmd::Receipt | Cmd::Error => Err(Refusal::new(
                ErrorCode::UnknownCmd,
                format!("{cmd} is not a request a client may send"),
            )),
        };
        if frame.header.frame_type != FrameType::Request {
            // Only MSG_ACK may come as type 3; a stray type is answered but not fatal here
            // (the gate already refused types the protocol forbids outright).
            tracing::debug!(%cmd, frame_type = ?frame.header.frame_type, "non-request frame handled as request");
        }
        reply(&frame, result)
    }

    async fn session_closed(&self, session: &SessionInfo) {
        if let Err(err) = self
            .presence
            .unregister(
                session.appcode,
                &session.uid,
                &session.gate_id,
                session.session_id,
            )
            .await
        {
            tracing::warn!(session.id = session.session_id, error = %err, "presence unregister failed");
        }
    }
}
