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
//! Modules: [`config`] (GateConfig), `listener` (accept loop, connection cap), `connection`
//! (the reader and its state machine), `write_queue` (WriteQueue and the writer task), [`session_table`]
//! (session id → queue, push and kick), [`close`] (CloseReason).

pub mod close;
pub mod config;
mod connection;
mod listener;
pub mod metrics;
pub mod session_table;
mod write_queue;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use longlink_metrics::Registry;
use longlink_rpc::LogicService;
use longlink_rpc::trace::Ledger;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use close::CloseReason;
pub use config::GateConfig;
pub use metrics::GateMetrics;
pub use session_table::SessionTable;

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
    serving: std::sync::atomic::AtomicBool,
    metrics: GateMetrics,
    ledger: Arc<dyn Ledger>,
}

impl Gate {
    /// A gate with `config` that records message stages in `ledger` and registers its
    /// metrics in `registry`; nothing listens until [`Gate::serve`].
    pub fn new(config: GateConfig, ledger: Arc<dyn Ledger>, registry: &mut Registry) -> Self {
        let metrics = GateMetrics::new(registry, &config.gate_id);
        // Seeding ids with the clock keeps them unique across restarts of this gate.
        let seed = longlink_proto::unix_ms() << 20;
        Self {
            shared: Arc::new(GateShared {
                config,
                sessions: Arc::new(SessionTable::new()),
                next_session_id: AtomicU64::new(seed),
                next_log_id: AtomicU64::new(seed),
                serving: std::sync::atomic::AtomicBool::new(false),
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
        u64::try_from(self.shared.metrics.connections.get()).unwrap_or(0)
    }

    /// Accepts connections on `listener` until `shutdown` is cancelled, then tells every client
    /// (KICK, reason SERVER_SHUTDOWN) and waits for the connections to finish.
    pub async fn serve(
        &self,
        listener: TcpListener,
        logic: Arc<dyn LogicService>,
        shutdown: CancellationToken,
    ) {
        self.shared.serving.store(true, Ordering::Release);
        listener::run(self.shared.clone(), listener, logic, shutdown).await;
        self.shared.serving.store(false, Ordering::Release);
    }
}

impl GateShared {
    fn next_session_id(&self) -> u64 {
        self.next_session_id.fetch_add(1, Ordering::Relaxed)
    }

    fn next_log_id(&self) -> u64 {
        self.next_log_id.fetch_add(1, Ordering::Relaxed)
    }
}
