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

pub mod config;
mod gates;
mod observe;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use longlink_api::{ApiContext, ApiKeys, ApiLimits, DrainStart, GateDirectory, GateStatus};
use longlink_bus::{QueueOptions, SqliteQueue, TopicQueue, WebhookConfig};
use longlink_gate::{Gate, GateListener, ServerTls};
use longlink_guard::{Guard, SqliteBanStore};
use longlink_ledger::{LedgerConfig, MemoryLedger};
use longlink_logic::{Logic, LogicConfig};
use longlink_metrics::Latency;
use longlink_presence::{MemoryPresence, Presence};
use longlink_rpc::trace::{Ledger, NoLedger};
use longlink_store::{SqliteOptions, SqliteStore};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{Config, ConfigError, DEFAULT_CONFIG};

/// The API key of the default config (a warning is logged while it is enabled).
pub const DEV_API_KEY: &str = "dev-api-key-change-me";

/// How long each shutdown stage may take.
const STAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A started node.
#[derive(Debug)]
pub struct RunningServer {
    gate_addr: std::net::SocketAddr,
    /// The first gate's WebSocket listener (`gate.ws_listen`), when on.
    ws_addr: Option<std::net::SocketAddr>,
    /// The first gate's plain TCP listener next to TLS (`gate.plain_listen`), when on.
    plain_addr: Option<std::net::SocketAddr>,
    api_addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    gates: Vec<Gate>,
    /// The gates as the API sees them, with the drains it started.
    directory: Arc<NodeGates>,
    gate_tasks: Vec<JoinHandle<()>>,
    drain_timeout: Duration,
    api_task: JoinHandle<()>,
    api_shutdown: CancellationToken,
    webhooks: Vec<JoinHandle<()>>,
    sampler: JoinHandle<()>,
    grpc_addr: Option<std::net::SocketAddr>,
    store: Arc<SqliteStore>,
    bus: Arc<SqliteQueue>,
    presence: Arc<MemoryPresence>,
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
    // The black/white lists (durable, changed through the API) and flapping detection.
    let guard_path = config.store.data_dir.join(longlink_guard::GUARD_FILE);
    let guard = Arc::new(
        SqliteBanStore::open(&guard_path)
            .and_then(|store| Guard::open(Arc::new(store), config.guard.guard_config()))
            .with_context(|| format!("cannot open the ban lists {}", guard_path.display()))?,
    );
    let gate_tls = if config.gate_tls_enabled() {
        Some(
            ServerTls::from_pem_files(&config.gate.tls_cert, &config.gate.tls_key)
                .context("cannot load gate.tls_cert / gate.tls_key")?,
        )
    } else {
        None
    };
    // Each gate: its main listener (TLS when configured), and for the first gate the plain
    // loopback listener and the WebSocket listener (docs/protocol.md "Transports").
    let mut gate_listeners: Vec<(Vec<GateListener>, longlink_gate::GateConfig)> = Vec::new();
    let (mut ws_addr, mut plain_addr) = (None, None);
    for (i, (addr, gate_config)) in config.gate_configs().into_iter().enumerate() {
        let listener = bind_gate(addr, config.gate.listen_backlog)
            .with_context(|| format!("cannot bind gate {} on {addr}", gate_config.gate_id))?;
        let mut listeners = vec![match &gate_tls {
            Some(tls) => GateListener::tls(listener, tls.clone()),
            None => GateListener::tcp(listener),
        }];
        if i == 0 {
            if let Some(addr) = config.gate.plain_listen {
                if !addr.ip().is_loopback() {
                    tracing::warn!(%addr, "gate.plain_listen is not a loopback address: clients there speak without TLS");
                }
                let listener = bind_gate(addr, config.gate.listen_backlog)
                    .with_context(|| format!("cannot bind gate.plain_listen {addr}"))?;
                plain_addr = Some(listener.local_addr()?);
                listeners.push(GateListener::tcp(listener));
            }
            if let Some(addr) = config.gate.ws_listen {
                let listener = bind_gate(addr, config.gate.listen_backlog)
                    .with_context(|| format!("cannot bind gate.ws_listen {addr}"))?;
                ws_addr = Some(listener.local_addr()?);
                listeners.push(GateListener::ws(listener, gate_tls.clone()));
            }
        }
        gate_listeners.push((listeners, gate_config));
    }
    // Loaded before anything starts, so a bad file stops the node cleanly.
    let api_tls = match config.api_tls_enabled() {
        true => Some(longlink_api::tls::with_alpn(
            &ServerTls::from_pem_files(&config.api.tls_cert, &config.api.tls_key)
                .context("cannot load api.tls_cert / api.tls_key")?
                .rustls_config(),
        )),
        false => None,
    };
    let api_listener = TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("cannot bind api.listen {}", config.api.listen))?;
    let grpc_listener = match config.api.grpc_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot bind api.grpc_listen {addr}"))?,
        ),
        None => None,
    };
    let gate_addr = gate_listeners[0].0[0].local_addr()?;
    let api_addr = api_listener.local_addr()?;
    let grpc_addr = grpc_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;

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
    let routes = Arc::new(
        config
            .routes()
            .map_err(|why| anyhow::anyhow!("invalid routes: {why}"))?,
    );
    let keys = Arc::new(
        ApiKeys::new(
            config
                .api_keys
                .iter()
                .map(|k| (k.name.clone(), k.key.clone(), k.appcodes.clone())),
        )
        .map_err(|why| anyhow::anyhow!("invalid api_keys: {why}"))?
        // A key covering every app of the node may operate its gates.
        .with_node_appcodes(config.apps.iter().map(|a| a.appcode)),
    );
    let webhook_configs = config
        .webhooks
        .iter()
        .map(|hook| {
            let webhook = WebhookConfig {
                topic: hook.topic.clone(),
                url: hook.url.clone(),
                timeout: Duration::from_secs(hook.timeout_secs),
                backoff_base: Duration::from_millis(hook.backoff_base_ms),
                backoff_max: Duration::from_millis(hook.backoff_max_ms),
                max_in_flight: hook.max_in_flight,
            };
            webhook
                .validate()
                .map(|()| webhook)
                .map_err(|err| anyhow::anyhow!("invalid webhook for {}: {err}", hook.topic))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if config.api_keys.iter().any(|k| k.key == DEV_API_KEY) {
        tracing::warn!(
            "the development API key is enabled: change [[api_keys]] before exposing the API"
        );
    }
    let mut registry = longlink_metrics::Registry::default();
    let memory_ledger = config.trace.enabled.then(|| {
        Arc::new(MemoryLedger::new(
            &config.gate.gate_id,
            &LedgerConfig {
                window: Duration::from_secs(config.trace.window_secs),
                max_traces: config.trace.max_traces,
                max_events: config.trace.max_events,
            },
        ))
    });
    let ledger: Arc<dyn Ledger> = match &memory_ledger {
        Some(ledger) => {
            ledger.register(&mut registry);
            ledger.clone()
        }
        None => Arc::new(NoLedger),
    };
    let gates: Vec<Gate> = gate_listeners
        .iter()
        .map(|(_, gate_config)| Gate::new(gate_config.clone(), ledger.clone(), &mut registry))
        .collect();
    for gate in &gates {
        gate.set_guard(guard.clone());
    }
    let logic = Arc::new(
        Logic::new(
        LogicConfig {
            keepalive_interval_secs: config.gate.keepalive_interval_secs,
            max_content_bytes: config.logic.max_content_bytes,
            max_response_bytes: config.gate.max_body_bytes as usize,
            resume_secret: config.logic.resume_secret.clone(),
            login_limits: config.login_limits(),
        },
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
    .with_revocations(revocations),
    );
    let node_stats = Arc::new(observe::NodeStats::new(
        gates.clone(),
        logic.metrics().clone(),
        memory_ledger
            .as_ref()
            .map_or_else(Latency::new, |l| l.c2c_delivery().clone()),
        config
            .apps
            .iter()
            .map(|a| (a.appcode, a.name.clone()))
            .collect(),
        bus.clone(),
        &mut registry,
    ));

    let shutdown = CancellationToken::new();
    tokio::spawn(enforce_access_lists(
        guard.subscribe(),
        gates.clone(),
        shutdown.clone(),
    ));
    for ((listeners, _), gate) in gate_listeners.iter().zip(&gates) {
        gate.advertise(listeners[0].local_addr()?);
    }
    let mut gate_tasks = Vec::new();
    for ((listeners, _), gate) in gate_listeners.into_iter().zip(&gates) {
        let gate = gate.clone();
        let shutdown = shutdown.clone();
        let logic = logic.clone();
        gate_tasks.push(tokio::spawn(async move {
            gate.serve_all(listeners, logic, shutdown).await;
        }));
    }
    // Each gate tells its clients the others as fallbacks.
    for gate in &gates {
        let peers = gates
            .iter()
            .filter(|other| other.id() != gate.id())
            .map(Gate::public_addr)
            .collect();
        gate.set_peers(peers);
    }
    let drain_timeout = Duration::from_secs(config.gate.drain_timeout_secs);
    let directory = Arc::new(NodeGates {
        gates: gates.clone(),
        drain_timeout,
        drains: Mutex::new(HashMap::new()),
    });
    let api_shutdown = CancellationToken::new();
    let api_task = {
        let ctx = ApiContext {
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
            limits: ApiLimits {
                max_body_bytes: config.api.max_body_bytes,
                max_content_bytes: config.logic.max_content_bytes,
                default_lease: Duration::from_secs(config.bus.lease_secs),
            },
            chat: chat_settings(config, ws_addr, gate_tls.is_some()),
        };
        let api_shutdown = api_shutdown.clone();
        let tls = api_tls;
        tokio::spawn(async move {
            if let Err(err) =
                longlink_api::serve_tls(api_listener, grpc_listener, ctx, tls, api_shutdown).await
            {
                tracing::error!(error = %err, "api server failed");
            }
        })
    };
    let sampler = tokio::spawn(node_stats.run_sampler(api_shutdown.clone()));
    let webhooks = webhook_configs
        .into_iter()
        .map(|hook| {
            longlink_bus::spawn_webhook(
                bus.clone() as Arc<dyn TopicQueue>,
                hook,
                api_shutdown.clone(),
            )
        })
        .collect();
    let grpc_shown = grpc_addr.map_or_else(|| "off".to_owned(), |a| a.to_string());
    let ws_shown = ws_addr.map_or_else(|| "off".to_owned(), |a| a.to_string());
    let gate_transport = if gate_tls.is_some() { "tls" } else { "tcp" };
    tracing::info!(gate = %gate_addr, gate_transport, ws = %ws_shown, api = %api_addr, grpc = %grpc_shown, data_dir = %config.store.data_dir.display(), "longlink ready");
    Ok(RunningServer {
        gate_addr,
        ws_addr,
        plain_addr,
        api_addr,
        shutdown,
        gates,
        directory,
        gate_tasks,
        drain_timeout,
        api_task,
        api_shutdown,
        webhooks,
        sampler,
        grpc_addr,
        store,
        bus,
        presence,
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
    pub fn gate_addr(&self) -> std::net::SocketAddr {
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
    pub fn api_addr(&self) -> std::net::SocketAddr {
        self.api_addr
    }

    /// The node's bus (single node: durable SQLite topics), as consumers see it.
    pub fn bus(&self) -> Arc<dyn TopicQueue> {
        self.bus.clone()
    }

    /// The node's message store (for inspection: delivery states, tests).
    pub fn store(&self) -> Arc<dyn longlink_store::MessageStore> {
        self.store.clone()
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

    /// Stops the node in order (gate, api, store), each stage bounded by a timeout.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.gate_tasks {
            if tokio::time::timeout(STAGE_TIMEOUT, task).await.is_err() {
                tracing::warn!("a gate did not drain within the stage timeout");
            }
        }
        self.api_shutdown.cancel();
        if tokio::time::timeout(STAGE_TIMEOUT, self.api_task)
            .await
            .is_err()
        {
            tracing::warn!("api did not stop within the stage timeout");
        }
        let _ = tokio::time::timeout(STAGE_TIMEOUT, self.sampler).await;
        for hook in self.webhooks {
            if tokio::time::timeout(STAGE_TIMEOUT, hook).await.is_err() {
                tracing::warn!("a webhook did not stop within the stage timeout");
            }
        }
        match tokio::time::timeout(STAGE_TIMEOUT, self.bus.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "bus close failed"),
            Err(_) => tracing::warn!("bus did not close within the stage timeout"),
        }
        match tokio::time::timeout(STAGE_TIMEOUT, self.store.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "store close failed"),
            Err(_) => tracing::warn!("store did not close within the stage timeout"),
        }
        tracing::info!("longlink stopped");
    }
}
