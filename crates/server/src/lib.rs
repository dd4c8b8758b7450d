//! The composition root of a longlink node: it reads the [`Config`], chooses the backends
//! (single node: SQLite store, in-memory presence, local bus), wires logic to the gate, binds
//! every listener *before* spawning anything, and stops the roles in order.
//!
//! Shutdown order ([`RunningServer::stop`]): the gate stops accepting and sends every client a
//! KICK (SERVER_SHUTDOWN, with a backoff), flushes the write queues and waits for the
//! connections to end; then the API stops; then the store's writer commits what it holds and
//! closes. Each stage has a timeout.
//!
//! Modules: [`config`] (Config, the embedded default file, env overrides).

pub mod config;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use longlink_api::{Stats, StatsSource};
use longlink_bus::LocalBus;
use longlink_gate::Gate;
use longlink_logic::{Logic, LogicConfig};
use longlink_presence::{MemoryPresence, Presence};
use longlink_store::{SqliteOptions, SqliteStore};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{Config, ConfigError, DEFAULT_CONFIG};

/// How long each shutdown stage may take.
const STAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A started node.
#[derive(Debug)]
pub struct RunningServer {
    gate_addr: std::net::SocketAddr,
    api_addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    gate_task: JoinHandle<()>,
    api_task: JoinHandle<()>,
    api_shutdown: CancellationToken,
    store: Arc<SqliteStore>,
    bus: LocalBus,
}

struct NodeStats {
    gate: Gate,
}

impl StatsSource for NodeStats {
    fn stats(&self) -> Stats {
        Stats {
            connections: self.gate.connection_count(),
            sessions: self.gate.sessions().len() as u64,
        }
    }
}

impl std::fmt::Debug for NodeStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStats").finish_non_exhaustive()
    }
}

/// Starts a single node (gate + logic + api on embedded backends) as `config` says.
/// Returns once every listener is bound, so clients may connect at once.
///
/// # Errors
/// The store cannot be opened or a listener cannot be bound.
pub async fn start(config: &Config) -> anyhow::Result<RunningServer> {
    std::fs::create_dir_all(&config.store.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.store.data_dir.display()))?;
    let store = Arc::new(
        SqliteStore::open(
            &config.store.data_dir,
            SqliteOptions {
                write_queue: config.store.write_queue,
                max_batch: config.store.max_batch,
                read_connections: config.store.read_connections,
            },
        )
        .with_context(|| format!("cannot open store in {}", config.store.data_dir.display()))?,
    );
    let gate_listener = TcpListener::bind(config.gate.listen)
        .await
        .with_context(|| format!("cannot bind gate.listen {}", config.gate.listen))?;
    let api_listener = TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("cannot bind api.listen {}", config.api.listen))?;
    let gate_addr = gate_listener.local_addr()?;
    let api_addr = api_listener.local_addr()?;

    let presence = Arc::new(MemoryPresence::new());
    let bus = LocalBus::new(config.bus.subscriber_queue);
    let gate = Gate::new(config.gate_config());
    let logic = Arc::new(Logic::new(
        LogicConfig {
            keepalive_interval_secs: config.gate.keepalive_interval_secs,
            max_content_bytes: config.logic.max_content_bytes,
            max_response_bytes: config.gate.max_body_bytes as usize,
        },
        Arc::new(config.apps()),
        presence as Arc<dyn Presence>,
        store.clone(),
        Arc::new(bus.clone()),
        gate.sessions(),
    ));

    let shutdown = CancellationToken::new();
    let gate_task = {
        let gate = gate.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { gate.serve(gate_listener, logic, shutdown).await })
    };
    let api_shutdown = CancellationToken::new();
    let api_task = {
        let source = Arc::new(NodeStats { gate });
        let api_shutdown = api_shutdown.clone();
        tokio::spawn(async move {
            if let Err(err) = longlink_api::serve(api_listener, source, api_shutdown).await {
                tracing::error!(error = %err, "api server failed");
            }
        })
    };
    tracing::info!(gate = %gate_addr, api = %api_addr, data_dir = %config.store.data_dir.display(), "longlink ready");
    Ok(RunningServer {
        gate_addr,
        api_addr,
        shutdown,
        gate_task,
        api_task,
        api_shutdown,
        store,
        bus,
    })
}

impl RunningServer {
    /// The bound gate address (useful with port 0).
    pub fn gate_addr(&self) -> std::net::SocketAddr {
        self.gate_addr
    }

    /// The bound HTTP API address.
    pub fn api_addr(&self) -> std::net::SocketAddr {
        self.api_addr
    }

    /// The local bus (single node): subscribe to see c2s messages.
    pub fn bus(&self) -> &LocalBus {
        &self.bus
    }

    /// The node's message store (for inspection: delivery states, tests).
    pub fn store(&self) -> Arc<dyn longlink_store::MessageStore> {
        self.store.clone()
    }

    /// Stops the node in order (gate, api, store), each stage bounded by a timeout.
    pub async fn stop(self) {
        self.shutdown.cancel();
        if tokio::time::timeout(STAGE_TIMEOUT, self.gate_task)
            .await
            .is_err()
        {
            tracing::warn!("gate did not drain within the stage timeout");
        }
        self.api_shutdown.cancel();
        if tokio::time::timeout(STAGE_TIMEOUT, self.api_task)
            .await
            .is_err()
        {
            tracing::warn!("api did not stop within the stage timeout");
        }
        match tokio::time::timeout(STAGE_TIMEOUT, self.store.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "store close failed"),
            Err(_) => tracing::warn!("store did not close within the stage timeout"),
        }
        tracing::info!("longlink stopped");
    }
}
