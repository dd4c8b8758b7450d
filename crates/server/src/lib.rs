//! The composition root of a longlink node: it reads the [`Config`], chooses the backends
//! (single node: SQLite store, in-memory presence, a durable SQLite bus), wires logic to the
//! gate and the business API to logic, presence and the bus, binds every listener *before*
//! spawning anything, and stops the roles in order.
//!
//! Shutdown order ([`RunningServer::stop`]): the gate stops accepting and sends every client a
//! KICK (SERVER_SHUTDOWN, with a backoff), flushes the write queues and waits for the
//! connections to end; then the API and the webhooks stop; then the bus and the store commit
//! what they hold and close. Each stage has a timeout.
//!
//! Operators reach the gates through the API ([`longlink_api::GateDirectory`], implemented
//! here by `NodeGates` over the node's `Gate`s): `GET /v1/gates`, `POST /v1/gates/{id}/drain`
//! (the drain runs as a task this node owns, so SIGTERM's drain finds it instead of starting a
//! second one) and dispatch.
//!
//! The black/white lists and flapping detection (`longlink_guard::Guard`, kept in
//! `<data_dir>/guard.sqlite`) are given to every gate and to the API; after each change of
//! the lists every gate re-checks its sessions and kicks those now refused.
//!
//! Modules: [`config`] (Config, the embedded default file, env overrides).

mod cluster;
pub mod config;
mod gates;
mod observe;
mod parts;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use longlink_api::{ApiContext, DrainStart, GateDirectory, GateStatus};
use longlink_bus::{QueueOptions, SqliteQueue, TopicQueue};
use longlink_gate::Gate;
use longlink_logic::Logic;
use longlink_metrics::Latency;
use longlink_presence::{MemoryPresence, Presence};
use longlink_store::{SqliteOptions, SqliteStore};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{Config, ConfigError, DEFAULT_CONFIG};

/// The API key of the default config (a warning is logged while it is enabled).
pub const DEV_API_KEY: &str = "dev-api-key-change-me";

/// How long each shutdown stage may take.
const STAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A started node: the single node, or one process of a cluster (any of the roles gate,
/// logic, api; `config.cluster`).
pub struct RunningServer {
    /// The first gate's address (`None`: this cluster process runs no gate).
    gate_addr: Option<std::net::SocketAddr>,
    /// The first gate's WebSocket listener (`gate.ws_listen`), when on.
    ws_addr: Option<std::net::SocketAddr>,
    /// The first gate's plain TCP listener next to TLS (`gate.plain_listen`), when on.
    plain_addr: Option<std::net::SocketAddr>,
    /// `None`: this cluster process runs no API.
    api_addr: Option<std::net::SocketAddr>,
    shutdown: CancellationToken,
    gates: Vec<Gate>,
    /// The gates as the API sees them, with the drains it started.
    directory: Arc<NodeGates>,
    gate_tasks: Vec<JoinHandle<()>>,
    drain_timeout: Duration,
    api_task: Option<JoinHandle<()>>,
    api_shutdown: CancellationToken,
    webhooks: Vec<JoinHandle<()>>,
    sampler: Option<JoinHandle<()>>,
    grpc_addr: Option<std::net::SocketAddr>,
    /// `None`: a gate-only cluster process (it reaches the store only through logic).
    store: Option<Arc<dyn longlink_store::MessageStore>>,
    bus: Option<Arc<dyn TopicQueue>>,
    presence: Arc<dyn Presence>,
    /// A cluster process's own tasks (RPC servers, heartbeats, gate-detector, lease).
    cluster: Option<cluster::ClusterTasks>,
    /// Run last, in order: the backends commit what they hold and close.
    closers: Vec<Closer>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("gate_addr", &self.gate_addr)
            .field("api_addr", &self.api_addr)
            .field("gates", &self.gates)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// One backend's close, run at the end of [`RunningServer::stop`].
struct Closer {
    what: &'static str,
    close: BoxFuture<'static, anyhow::Result<()>>,
}

impl Closer {
    fn new(
        what: &'static str,
        close: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    ) -> Self {
        Self {
            what,
            close: Box::pin(close),
        }
    }
}

impl std::fmt::Debug for Closer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.what)
    }
}

/// Starts a single node (gate + logic + api on embedded backends) as `config` says.
/// Returns once every listener is bound, so clients may connect at once.
///
/// # Errors
/// The store cannot be opened or a listener cannot be bound.
pub async fn start(config: &Config) -> anyhow::Result<RunningServer> {
    if config.cluster.enabled() {
        return cluster::start(config).await;
    }
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
    let guard = parts::open_guard(config)?;
    let gate_tls = parts::gate_tls(config)?;
    let bound = parts::bind_gates(config, gate_tls.as_ref())?;
    let (ws_addr, plain_addr) = (bound.ws_addr, bound.plain_addr);
    let api = parts::BoundApi::bind(config).await?;
    let gate_addr = bound.listeners[0].0[0].local_addr()?;
    let (api_addr, grpc_addr) = api.addrs()?;

    let bus_path = config.store.data_dir.join("bus.sqlite");
    let bus = Arc::new(
        SqliteQueue::open(
            &bus_path,
            QueueOptions {
                max_attempts: config.bus.max_attempts,
                max_backlog: config.bus.max_backlog,
                ..QueueOptions::default()
            },
        )
        .with_context(|| format!("cannot open bus {}", bus_path.display()))?,
    );
    let presence = Arc::new(MemoryPresence::new());
    let revocations_path = config.store.data_dir.join("tokens.sqlite");
    let revocations = Arc::new(
        longlink_store::SqliteRevocations::open(&revocations_path)
            .with_context(|| format!("cannot open {}", revocations_path.display()))?,
    );
    let routes = parts::routes(config)?;
    let keys = parts::api_keys(config)?;
    let webhook_configs = parts::webhook_configs(config)?;
    let mut registry = longlink_metrics::Registry::default();
    let (memory_ledger, ledger) = parts::ledger(config, &mut registry);
    let gates = parts::make_gates(&bound, &ledger, &mut registry, &guard);
    let shutdown = CancellationToken::new();
    let notifier = parts::notifier(config, store.clone(), &mut registry, &shutdown)?;
    let logic = Arc::new(
        Logic::new(
            parts::logic_config(config),
            Arc::new(config.apps()),
            presence.clone() as Arc<dyn Presence>,
            store.clone(),
            bus.clone(),
            routes.clone(),
            Arc::new(gates::GateSet::new(&gates)),
            ledger.clone(),
            &mut registry,
        )
        // Token revocations survive a restart (issue 8): <data_dir>/tokens.sqlite.
        .with_revocations(revocations)
        .with_notifications(notifier.clone()),
    );
    let node_stats = Arc::new(observe::NodeStats::new(
        gates.clone(),
        logic.metrics().clone(),
        memory_ledger
            .as_ref()
            .map_or_else(Latency::new, |l| l.c2c_delivery().clone()),
        parts::app_names(config),
        bus.clone(),
        &mut registry,
    ));

    tokio::spawn(enforce_access_lists(
        guard.subscribe(),
        gates.clone(),
        shutdown.clone(),
    ));
    let gate_logic: Arc<dyn longlink_rpc::LogicService> = logic.clone();
    let gate_tasks = parts::spawn_gates(bound.listeners, &gates, &gate_logic, &shutdown)?;
    let drain_timeout = Duration::from_secs(config.gate.drain_timeout_secs);
    let directory = Arc::new(NodeGates {
        gates: gates.clone(),
        drain_timeout,
        drains: Mutex::new(HashMap::new()),
    });
    let api_shutdown = CancellationToken::new();
    let api_task = api.spawn(
        ApiContext {
            push: logic.clone(),
            presence: presence.clone() as Arc<dyn Presence>,
            queue: bus.clone(),
            routes,
            keys,
            stats: node_stats.clone(),
            ledger,
            metrics: Arc::new(registry),
            gates: directory.clone(),
            bans: guard.clone(),
            tokens: Arc::new(LogicTokens(logic.clone())),
            notifications: notifier.clone(),
            limits: parts::api_limits(config),
            chat: chat_settings(config, ws_addr, gate_tls.is_some()),
        },
        api_shutdown.clone(),
    );
    let sampler = tokio::spawn(node_stats.run_sampler(api_shutdown.clone()));
    let webhooks = parts::spawn_webhooks(
        &(bus.clone() as Arc<dyn TopicQueue>),
        webhook_configs,
        &api_shutdown,
    );
    let grpc_shown = grpc_addr.map_or_else(|| "off".to_owned(), |a| a.to_string());
    let ws_shown = ws_addr.map_or_else(|| "off".to_owned(), |a| a.to_string());
    let gate_transport = if gate_tls.is_some() { "tls" } else { "tcp" };
    tracing::info!(gate = %gate_addr, gate_transport, ws = %ws_shown, api = %api_addr, grpc = %grpc_shown, data_dir = %config.store.data_dir.display(), "longlink ready");
    let (store_close, bus_close) = (store.clone(), bus.clone());
    Ok(RunningServer {
        gate_addr: Some(gate_addr),
        ws_addr,
        plain_addr,
        api_addr: Some(api_addr),
        shutdown,
        gates,
        directory,
        gate_tasks,
        drain_timeout,
        api_task: Some(api_task),
        api_shutdown,
        webhooks,
        sampler: Some(sampler),
        grpc_addr,
        store: Some(store),
        bus: Some(bus),
        presence,
        cluster: None,
        closers: vec![
            // First: its last sends read the store.
            Closer::new("push", async move {
                notifier.close().await;
                Ok(())
            }),
            Closer::new("bus", async move {
                bus_close.close().await.map_err(anyhow::Error::from)
            }),
            Closer::new("store", async move {
                store_close.close().await.map_err(anyhow::Error::from)
            }),
        ],
    })
}

/// What the browser chat page (`/chat`) is told about this node; development logins sign with
/// the appcodes' configured keys, only while `[api] chat_dev_login` is on.
fn chat_settings(
    config: &Config,
    ws_addr: Option<std::net::SocketAddr>,
    ws_tls: bool,
) -> longlink_api::ChatSettings {
    longlink_api::ChatSettings {
        ws_addr,
        ws_tls,
        appcodes: config.apps.iter().map(|a| a.appcode).collect(),
        max_body_bytes: config.gate.max_body_bytes,
        dev_tokens: config.api.chat_dev_login.then(|| {
            tracing::warn!("chat development logins are on ([api] chat_dev_login): anyone who reaches the API may log in as anyone");
            Arc::new(DevLogins(config.apps())) as Arc<dyn longlink_api::DevTokens>
        }),
    }
}

/// `POST /chat/dev-token`: tokens as `longlink token` mints them.
struct DevLogins(longlink_logic::Apps);

impl longlink_api::DevTokens for DevLogins {
    fn mint(&self, appcode: u32, uid: &str) -> Result<String, String> {
        self.0
            .mint(appcode, uid, longlink_api::chat::DEV_TOKEN_TTL_SECS)
            .map_err(|err| err.to_string())
    }
}

/// Token revocation for the API (`POST /v1/tokens/revoke`), done by logic.
struct LogicTokens(Arc<Logic>);

#[async_trait::async_trait]
impl longlink_api::TokenRevoker for LogicTokens {
    async fn revoke(
        &self,
        appcode: u32,
        uid: &str,
        before_ms: Option<u64>,
    ) -> Result<longlink_api::RevokeOutcome, longlink_api::RevokeFailure> {
        use longlink_logic::RevokeError;
        match self.0.revoke_tokens(appcode, uid, before_ms).await {
            Ok(revoked) => Ok(longlink_api::RevokeOutcome {
                before_ms: revoked.before_ms,
                kicked: revoked.kicked,
            }),
            Err(RevokeError::UnknownAppcode(_)) => Err(longlink_api::RevokeFailure::UnknownAppcode),
            Err(RevokeError::InvalidArgument(why)) => {
                Err(longlink_api::RevokeFailure::InvalidArgument(why))
            }
            Err(RevokeError::Unavailable(why)) => {
                Err(longlink_api::RevokeFailure::Unavailable(why))
            }
        }
    }

    fn user_of(&self, appcode: u32, token: &str) -> Option<String> {
        self.0.user_of(appcode, token)
    }
}

/// A gate's listener with a backlog of its own (`TcpListener::bind` asks the kernel for 128,
/// too few when thousands of clients reconnect at once).
fn bind_gate(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog.max(1))
}

/// Makes list changes effective on open sessions: after each change every gate re-checks its
/// sessions and kicks (KICK BLOCKED) those the lists now refuse. Changes arriving during a
/// sweep coalesce into one more sweep (a watch channel keeps only the latest).
async fn enforce_access_lists(
    mut changes: tokio::sync::watch::Receiver<u64>,
    gates: Vec<Gate>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
        changes.borrow_and_update();
        let kicked: usize = gates.iter().map(Gate::enforce_guard).sum();
        if kicked > 0 {
            tracing::info!(kicked, "sessions kicked after an access list change");
        }
    }
}

/// Drains `gate_id` among `gates`, pointing its clients at the others.
async fn drain_gate(
    gates: &[Gate],
    gate_id: &str,
    timeout: Duration,
) -> Option<longlink_gate::DrainReport> {
    let gate = gates.iter().find(|g| g.id() == gate_id)?;
    let targets: Vec<String> = gates
        .iter()
        .filter(|g| g.id() != gate_id && !g.is_draining() && g.is_serving())
        .map(Gate::public_addr)
        .collect();
    Some(gate.drain(&targets, timeout).await)
}

/// The node's gates behind [`GateDirectory`]: status for the API, and drains started by it,
/// kept so that a repeated request or the node's own drain finds them.
#[derive(Debug)]
struct NodeGates {
    gates: Vec<Gate>,
    drain_timeout: Duration,
    /// Drains started through the API, by gate id (at most one per gate, so bounded).
    drains: Mutex<HashMap<String, JoinHandle<Option<longlink_gate::DrainReport>>>>,
}

impl NodeGates {
    /// The API-started drain of `gate_id`, if any, to be awaited by the node's own drain.
    fn take_drain(&self, gate_id: &str) -> Option<JoinHandle<Option<longlink_gate::DrainReport>>> {
        self.drains
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(gate_id)
    }
}

impl GateDirectory for NodeGates {
    fn gates(&self) -> Vec<GateStatus> {
        self.gates
            .iter()
            .map(|g| GateStatus {
                id: g.id().to_owned(),
                addr: g.public_addr(),
                connections: g.connection_count(),
                held: g.held_count(),
                serving: g.is_serving(),
                draining: g.is_draining(),
            })
            .collect()
    }

    fn start_drain(&self, gate_id: &str) -> DrainStart {
        let Some(gate) = self.gates.iter().find(|g| g.id() == gate_id) else {
            return DrainStart::UnknownGate;
        };
        // The lock makes check-and-start atomic: two requests at once start one drain.
        let mut drains = self.drains.lock().unwrap_or_else(|p| p.into_inner());
        if gate.is_draining() || drains.contains_key(gate_id) {
            return DrainStart::AlreadyDraining;
        }
        let (gates, id, timeout) = (self.gates.clone(), gate_id.to_owned(), self.drain_timeout);
        let task = tokio::spawn(async move {
            let report = drain_gate(&gates, &id, timeout).await;
            if let Some(report) = &report {
                tracing::info!(gate = %id, kicked = report.kicked, waves = report.waves,
                    left_open = report.left_open, resumed_elsewhere = report.resumed_elsewhere,
                    "gate drained (requested through the API)");
            }
            report
        });
        drains.insert(gate_id.to_owned(), task);
        DrainStart::Started
    }
}

impl RunningServer {
    /// The bound gate address (useful with port 0).
    ///
    /// # Panics
    /// A cluster process that runs no gate ([`Self::gate_addr_if_any`]).
    pub fn gate_addr(&self) -> std::net::SocketAddr {
        self.gate_addr.expect("this process runs no gate")
    }

    /// The first gate's bound address, if this process runs a gate.
    pub fn gate_addr_if_any(&self) -> Option<std::net::SocketAddr> {
        self.gate_addr
    }

    /// The bound WebSocket address of the first gate (`gate.ws_listen`; wss with TLS), when
    /// enabled.
    pub fn ws_addr(&self) -> Option<std::net::SocketAddr> {
        self.ws_addr
    }

    /// The bound plain TCP address next to TLS (`gate.plain_listen`), when enabled.
    pub fn plain_addr(&self) -> Option<std::net::SocketAddr> {
        self.plain_addr
    }

    /// The bound gRPC API address, when enabled.
    pub fn grpc_addr(&self) -> Option<std::net::SocketAddr> {
        self.grpc_addr
    }

    /// The node's presence (single node: in memory).
    pub fn presence(&self) -> Arc<dyn Presence> {
        self.presence.clone()
    }

    /// The bound HTTP API address.
    ///
    /// # Panics
    /// A cluster process that runs no API ([`Self::api_addr_if_any`]).
    pub fn api_addr(&self) -> std::net::SocketAddr {
        self.api_addr.expect("this process runs no API")
    }

    /// The bound HTTP API address, if this process runs the API.
    pub fn api_addr_if_any(&self) -> Option<std::net::SocketAddr> {
        self.api_addr
    }

    /// The node's bus (single node: durable SQLite topics; cluster: NATS JetStream), as
    /// consumers see it.
    ///
    /// # Panics
    /// A gate-only cluster process (it has no bus).
    pub fn bus(&self) -> Arc<dyn TopicQueue> {
        self.bus.clone().expect("a gate-only process has no bus")
    }

    /// The node's message store (for inspection: delivery states, tests).
    ///
    /// # Panics
    /// A gate-only cluster process (it has no store).
    pub fn store(&self) -> Arc<dyn longlink_store::MessageStore> {
        self.store
            .clone()
            .expect("a gate-only process has no store")
    }

    /// The gates of this node (the first is on `gate.listen`).
    pub fn gates(&self) -> &[Gate] {
        &self.gates
    }

    /// Drains gate `gate_id`: its clients are told to reconnect to this node's other gates
    /// that are not draining (round-robin; none: the same address later), in waves; then the
    /// gate stops. `None` if this node has no such gate.
    pub async fn drain(&self, gate_id: &str) -> Option<longlink_gate::DrainReport> {
        drain_gate(&self.gates, gate_id, self.drain_timeout).await
    }

    /// Drains every gate (SIGTERM), then stops the node: nothing acknowledged is lost, and
    /// clients come back (to this address, after their backoff) when the node restarts.
    pub async fn drain_and_stop(self) {
        let all = self.gates.iter().map(|g| {
            // A drain the API already started is awaited, not run a second time.
            let started = self.directory.take_drain(g.id());
            async move {
                match started {
                    Some(task) => {
                        match tokio::time::timeout(self.drain_timeout + STAGE_TIMEOUT, task).await {
                            Ok(Ok(Some(report))) => report,
                            _ => longlink_gate::DrainReport::default(),
                        }
                    }
                    None => g.drain(&[], self.drain_timeout).await,
                }
            }
        });
        let reports = futures::future::join_all(all).await;
        for (gate, report) in self.gates.iter().zip(reports) {
            tracing::info!(
                gate = gate.id(),
                kicked = report.kicked,
                waves = report.waves,
                left_open = report.left_open,
                resumed_elsewhere = report.resumed_elsewhere,
                "gate drained"
            );
        }
        self.stop().await;
    }

    /// Stops the node in order (gate, the cluster's RPC servers, api, store), each stage
    /// bounded by a timeout.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.gate_tasks {
            if tokio::time::timeout(STAGE_TIMEOUT, task).await.is_err() {
                tracing::warn!("a gate did not drain within the stage timeout");
            }
        }
        if let Some(cluster) = self.cluster {
            cluster.stop(STAGE_TIMEOUT).await;
        }
        self.api_shutdown.cancel();
        if let Some(api_task) = self.api_task
            && tokio::time::timeout(STAGE_TIMEOUT, api_task).await.is_err()
        {
            tracing::warn!("api did not stop within the stage timeout");
        }
        if let Some(sampler) = self.sampler {
            let _ = tokio::time::timeout(STAGE_TIMEOUT, sampler).await;
        }
        for hook in self.webhooks {
            if tokio::time::timeout(STAGE_TIMEOUT, hook).await.is_err() {
                tracing::warn!("a webhook did not stop within the stage timeout");
            }
        }
        for closer in self.closers {
            let what = closer.what;
            match tokio::time::timeout(STAGE_TIMEOUT, closer.close).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!(error = %err, "{what} close failed"),
                Err(_) => tracing::warn!("{what} did not close within the stage timeout"),
            }
        }
        tracing::info!("longlink stopped");
    }
}
