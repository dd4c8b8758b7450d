//! The gate (msg-gate): accepts client connections and owns them — and nothing else.
//!
//! Each connection has a reader (the connection task: login deadline, then a loop over the
//! next frame, the idle deadline and shutdown) and a writer that owns the socket's write half
//! and drains a bounded queue of encoded frames in batches (one `write` per batch). The read
//! path is a readiness loop (`readable()` + `try_read_buf`) over the shared
//! [`longlink_proto::FrameCodec`], so an idle connection holds no read buffer
//! (DEPENDENCIES.md: `Framed` costs ~9 KB per connection, this ~0.7 KB).
//! The gate never sees a backend: requests go to a [`longlink_rpc::LogicService`]; logic
//! reaches sessions through the [`SessionTable`], which implements [`longlink_rpc::GatePush`].
//!
//! Sessions outlive their links for a hold (seed 004): a resume-capable client whose link
//! fails can RESUME on a new connection within `hold` and get what it missed in one round
//! trip; meanwhile pushes to it take the offline path. Fresh LOGINs pass admission control (a
//! GCRA rate limit; RESUMEs are exempt, so they are served first in a reconnect storm), and
//! [`Gate::drain`] moves every client away in waves (KICK RECONNECT with another gate's
//! address and a backoff) before the gate stops.
//!
//! A gate serves one or more listeners ([`GateListener`]): plain TCP, TLS, WebSocket (ws or
//! wss), all carrying the same frames into the same session table ([`transport`]).
//!
//! Modules: [`config`] (GateConfig), `listener` (accept loops, connection cap), [`transport`]
//! (TCP / TLS / WebSocket streams and handshakes), `connection`
//! (the reader and its state machine, LOGIN/RESUME, holds), `write_queue` (WriteQueue and the
//! writer task), [`session_table`] (session id → link or hold; push, kick, detach), `drain`,
//! [`close`] (CloseReason, KICK frames), `compression` (outgoing frame compression and its
//! cache of compressed pushes), `access` (the black/white lists and flapping checks at
//! accept and after LOGIN/RESUME, and the sweep that kicks sessions the lists now refuse).

mod access;
pub mod close;
mod compression;
pub mod config;
mod connection;
mod drain;
pub mod limits;
mod listener;
pub mod metrics;
pub mod session_table;
pub mod transport;
mod write_queue;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use longlink_metrics::Registry;
use longlink_rpc::LogicService;
use longlink_rpc::trace::Ledger;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use close::CloseReason;
pub use config::GateConfig;
pub use drain::DrainReport;
pub use limits::{Class, ConnLimitsConfig, Rate};
pub use metrics::GateMetrics;
pub use session_table::{LoggedIn, SessionTable};
pub use transport::{GateListener, ServerTls, TlsError, Transport};

/// A gate: its configuration, its session table and its id generators.
#[derive(Debug, Clone)]
pub struct Gate {
    shared: Arc<GateShared>,
}

#[derive(Debug)]
struct GateShared {
    config: GateConfig,
    sessions: Arc<SessionTable>,
    next_session_id: AtomicU64,
    next_log_id: AtomicU64,
    /// The accept loop is running.
    serving: AtomicBool,
    metrics: GateMetrics,
    ledger: Arc<dyn Ledger>,
    /// Admission control for fresh LOGINs (`None`: no limit).
    login_limiter: Option<governor::DefaultDirectRateLimiter>,
    /// The other gates' addresses, told to clients as fallbacks.
    peers: Mutex<Vec<String>>,
    /// The address clients use for this gate (set when serving starts).
    public_addr: OnceLock<String>,
    /// Set by [`Gate::drain`]: not dispatched, no new sessions.
    draining: AtomicBool,
    /// Cancelled when the gate stops accepting (drain).
    stop_accepting: CancellationToken,
    /// Black/white lists and flapping detection ([`Gate::set_guard`]; unset: everyone).
    guard: OnceLock<Arc<dyn longlink_rpc::AccessGuard>>,
    /// This gate's own stop (a child of the node's shutdown), set by [`Gate::serve`].
    stop: OnceLock<CancellationToken>,
    /// Compressed pushes, shared by the sessions a fan-out reaches (`compression`).
    frame_cache: Arc<compression::FrameCache>,
}

impl Gate {
    /// A gate with `config` that records message stages in `ledger` and registers its
    /// metrics in `registry`; nothing listens until [`Gate::serve`].
    pub fn new(config: GateConfig, ledger: Arc<dyn Ledger>, registry: &mut Registry) -> Self {
        let metrics = GateMetrics::new(registry, &config.gate_id);
        // Seeding ids with the clock keeps them unique across restarts of this gate.
        let seed = longlink_proto::unix_ms() << 20;
        let login_limiter = std::num::NonZeroU32::new(config.login_rate_per_sec).map(|rate| {
            let burst = std::num::NonZeroU32::new(config.login_burst).unwrap_or(rate);
            governor::RateLimiter::direct(governor::Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            shared: Arc::new(GateShared {
                login_limiter,
                peers: Mutex::new(Vec::new()),
                public_addr: OnceLock::new(),
                draining: AtomicBool::new(false),
                stop_accepting: CancellationToken::new(),
                stop: OnceLock::new(),
                frame_cache: Arc::default(),
                guard: OnceLock::new(),
                config,
                sessions: Arc::new(SessionTable::new()),
                next_session_id: AtomicU64::new(seed),
                next_log_id: AtomicU64::new(seed),
                serving: AtomicBool::new(false),
                metrics,
                ledger,
            }),
        }
    }

    /// The session table: give it to logic as its [`longlink_rpc::GatePush`].
    pub fn sessions(&self) -> Arc<SessionTable> {
        self.shared.sessions.clone()
    }

    /// The gate's metrics (also in the registry given to [`Gate::new`]).
    pub fn metrics(&self) -> &GateMetrics {
        &self.shared.metrics
    }

    /// This gate's id.
    pub fn id(&self) -> &str {
        &self.shared.config.gate_id
    }

    /// Whether the gate accepts connections (between the start and the end of
    /// [`Gate::serve`]).
    pub fn is_serving(&self) -> bool {
        self.shared.serving.load(Ordering::Acquire)
    }

    /// Open client connections right now.
    pub fn connection_count(&self) -> u64 {
        self.shared.connection_count()
    }

    /// Sessions held without a link right now.
    pub fn held_count(&self) -> u64 {
        u64::try_from(self.shared.metrics.held.get()).unwrap_or(0)
    }

    /// The address clients use for this gate (`public_addr`, else the bound address once
    /// serving; empty before).
    pub fn public_addr(&self) -> String {
        self.shared.public_addr.get().cloned().unwrap_or_default()
    }

    /// Fixes the address clients are told for this gate: `public_addr` from the config, else
    /// `bound`. The first call wins ([`Gate::serve`] calls it too).
    pub fn advertise(&self, bound: std::net::SocketAddr) {
        let public = if self.shared.config.public_addr.is_empty() {
            bound.to_string()
        } else {
            self.shared.config.public_addr.clone()
        };
        let _ = self.shared.public_addr.set(public);
    }

    /// Tells the gate the other gates' addresses (fallbacks given to clients at login).
    pub fn set_peers(&self, peers: Vec<String>) {
        *self.shared.peers.lock().unwrap_or_else(|p| p.into_inner()) = peers;
    }

    /// Consults `guard` at accept and after each LOGIN/RESUME (refusals: BANNED, or
    /// RATE_LIMITED for flapping). The first call wins; call it before [`Gate::serve`].
    pub fn set_guard(&self, guard: Arc<dyn longlink_rpc::AccessGuard>) {
        let _ = self.shared.guard.set(guard);
    }

    /// Re-checks every attached session against the guard's lists and kicks (KICK BLOCKED)
    /// those refused: call it when the lists change. Returns how many were kicked.
    pub fn enforce_guard(&self) -> usize {
        self.shared.enforce_guard()
    }

    /// Whether [`Gate::drain`] started: the gate must not be dispatched.
    pub fn is_draining(&self) -> bool {
        self.shared.is_draining()
    }

    /// Drains the gate: stops accepting, refuses new sessions, sends every client
    /// KICK(RECONNECT) — `targets` round-robin as `reconnect_to`, with a jittered backoff —
    /// in waves of `drain_wave_size`, ends the holds, waits (at most `timeout`) for the
    /// connections to flush and close, then stops the gate ([`Gate::serve`] returns).
    pub async fn drain(&self, targets: &[String], timeout: std::time::Duration) -> DrainReport {
        drain::run(&self.shared, targets, timeout).await
    }

    /// Accepts connections on `listener` until `shutdown` is cancelled (or a drain ends),
    /// then tells every client (KICK, reason SERVER_SHUTDOWN) and waits for the connections
    /// to finish.
    pub async fn serve(
        &self,
        listener: TcpListener,
        logic: Arc<dyn LogicService>,
        shutdown: CancellationToken,
    ) {
        self.serve_all(vec![GateListener::tcp(listener)], logic, shutdown)
            .await;
    }

    /// Like [`Gate::serve`] on several listeners at once (e.g. TLS, plain TCP on loopback and
    /// WebSocket), sharing one connection cap and one session table. The first listener's
    /// address is the one advertised (unless `public_addr` is set).
    pub async fn serve_all(
        &self,
        listeners: Vec<GateListener>,
        logic: Arc<dyn LogicService>,
        shutdown: CancellationToken,
    ) {
        if let Some(bound) = listeners.first().and_then(|l| l.local_addr().ok()) {
            self.advertise(bound);
        }
        let stop = self
            .shared
            .stop
            .get_or_init(|| shutdown.child_token())
            .clone();
        self.shared.serving.store(true, Ordering::Release);
        listener::run(self.shared.clone(), listeners, logic, stop).await;
        self.shared.serving.store(false, Ordering::Release);
    }
}

impl GateShared {
    fn connection_count(&self) -> u64 {
        u64::try_from(self.metrics.connections.get()).unwrap_or(0)
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    fn peers(&self) -> Vec<String> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn next_session_id(&self) -> u64 {
        self.next_session_id.fetch_add(1, Ordering::Relaxed)
    }

    fn next_log_id(&self) -> u64 {
        self.next_log_id.fetch_add(1, Ordering::Relaxed)
    }
}
