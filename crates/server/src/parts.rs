//! The pieces of a node that the single node ([`crate::start`]) and a cluster process
//! (`cluster.rs`) build the same way: listeners bound before anything is spawned, the API's
//! keys, routes and limits, the logic settings, the ledger, the gates and their tasks.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use longlink_api::{ApiContext, ApiKeys, ApiLimits};
use longlink_bus::{Routes, TopicQueue, WebhookConfig};
use longlink_gate::{Gate, GateConfig, GateListener, ServerTls};
use longlink_guard::{Guard, SqliteBanStore};
use longlink_ledger::{LedgerConfig, MemoryLedger};
use longlink_logic::LogicConfig;
use longlink_rpc::LogicService;
use longlink_rpc::trace::{Ledger, NoLedger};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Config, DEV_API_KEY, bind_gate};

/// The black/white lists (durable in `<data_dir>/guard.sqlite`, changed through the API) and
/// flapping detection.
pub(crate) fn open_guard(config: &Config) -> anyhow::Result<Arc<Guard>> {
    let guard_path = config.store.data_dir.join(longlink_guard::GUARD_FILE);
    Ok(Arc::new(
        SqliteBanStore::open(&guard_path)
            .and_then(|store| Guard::open(Arc::new(store), config.guard.guard_config()))
            .with_context(|| format!("cannot open the ban lists {}", guard_path.display()))?,
    ))
}

/// The gates' TLS identity, when `[gate] tls_cert`/`tls_key` are set.
pub(crate) fn gate_tls(config: &Config) -> anyhow::Result<Option<ServerTls>> {
    if !config.gate_tls_enabled() {
        return Ok(None);
    }
    Ok(Some(
        ServerTls::from_pem_files(&config.gate.tls_cert, &config.gate.tls_key)
            .context("cannot load gate.tls_cert / gate.tls_key")?,
    ))
}

/// Every gate's listeners, bound.
pub(crate) struct BoundGates {
    /// Per gate: its listeners (the main one first) and its config.
    pub(crate) listeners: Vec<(Vec<GateListener>, GateConfig)>,
    /// The first gate's WebSocket listener, when on.
    pub(crate) ws_addr: Option<std::net::SocketAddr>,
    /// The first gate's plain listener next to TLS, when on.
    pub(crate) plain_addr: Option<std::net::SocketAddr>,
}

/// Binds each gate's main listener (TLS when configured), and for the first gate the plain
/// loopback listener and the WebSocket listener (docs/protocol.md "Transports").
pub(crate) fn bind_gates(
    config: &Config,
    gate_tls: Option<&ServerTls>,
) -> anyhow::Result<BoundGates> {
    let mut bound = BoundGates {
        listeners: Vec::new(),
        ws_addr: None,
        plain_addr: None,
    };
    for (i, (addr, gate_config)) in config.gate_configs().into_iter().enumerate() {
        let listener = bind_gate(addr, config.gate.listen_backlog)
            .with_context(|| format!("cannot bind gate {} on {addr}", gate_config.gate_id))?;
        let mut listeners = vec![match gate_tls {
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
                bound.plain_addr = Some(listener.local_addr()?);
                listeners.push(GateListener::tcp(listener));
            }
            if let Some(addr) = config.gate.ws_listen {
                let listener = bind_gate(addr, config.gate.listen_backlog)
                    .with_context(|| format!("cannot bind gate.ws_listen {addr}"))?;
                bound.ws_addr = Some(listener.local_addr()?);
                listeners.push(GateListener::ws(listener, gate_tls.cloned()));
            }
        }
        bound.listeners.push((listeners, gate_config));
    }
    Ok(bound)
}

/// The API's listeners (HTTP, gRPC) and TLS, bound and loaded before anything starts.
pub(crate) struct BoundApi {
    pub(crate) http: TcpListener,
    pub(crate) grpc: Option<TcpListener>,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
}

impl BoundApi {
    /// Binds `[api] listen` and `grpc_listen` and loads the API's TLS files.
    pub(crate) async fn bind(config: &Config) -> anyhow::Result<BoundApi> {
        // Loaded before anything starts, so a bad file stops the node cleanly.
        let tls = match config.api_tls_enabled() {
            true => Some(longlink_api::tls::with_alpn(
                &ServerTls::from_pem_files(&config.api.tls_cert, &config.api.tls_key)
                    .context("cannot load api.tls_cert / api.tls_key")?
                    .rustls_config(),
            )),
            false => None,
        };
        let http = TcpListener::bind(config.api.listen)
            .await
            .with_context(|| format!("cannot bind api.listen {}", config.api.listen))?;
        let grpc = match config.api.grpc_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot bind api.grpc_listen {addr}"))?,
            ),
            None => None,
        };
        Ok(BoundApi { http, grpc, tls })
    }

    /// The bound HTTP and gRPC addresses.
    pub(crate) fn addrs(
        &self,
    ) -> anyhow::Result<(std::net::SocketAddr, Option<std::net::SocketAddr>)> {
        let grpc = self
            .grpc
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        Ok((self.http.local_addr()?, grpc))
    }

    /// Serves `ctx` until `shutdown`.
    pub(crate) fn spawn(self, ctx: ApiContext, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            if let Err(err) =
                longlink_api::serve_tls(self.http, self.grpc, ctx, self.tls, shutdown).await
            {
                tracing::error!(error = %err, "api server failed");
            }
        })
    }
}

/// The c2s routing table.
pub(crate) fn routes(config: &Config) -> anyhow::Result<Arc<Routes>> {
    Ok(Arc::new(
        config
            .routes()
            .map_err(|why| anyhow::anyhow!("invalid routes: {why}"))?,
    ))
}

/// The API keys; a key covering every app of the node may operate its gates. Warns while the
/// development key is enabled.
pub(crate) fn api_keys(config: &Config) -> anyhow::Result<Arc<ApiKeys>> {
    let keys = ApiKeys::new(
        config
            .api_keys
            .iter()
            .map(|k| (k.name.clone(), k.key.clone(), k.appcodes.clone())),
    )
    .map_err(|why| anyhow::anyhow!("invalid api_keys: {why}"))?
    .with_node_appcodes(config.apps.iter().map(|a| a.appcode));
    if config.api_keys.iter().any(|k| k.key == DEV_API_KEY) {
        tracing::warn!(
            "the development API key is enabled: change [[api_keys]] before exposing the API"
        );
    }
    Ok(Arc::new(keys))
}

/// The webhooks of `[[webhooks]]`, validated.
pub(crate) fn webhook_configs(config: &Config) -> anyhow::Result<Vec<WebhookConfig>> {
    config
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
        .collect()
}

/// Runs each webhook over `queue` until `shutdown`.
pub(crate) fn spawn_webhooks(
    queue: &Arc<dyn TopicQueue>,
    hooks: Vec<WebhookConfig>,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    hooks
        .into_iter()
        .map(|hook| longlink_bus::spawn_webhook(queue.clone(), hook, shutdown.clone()))
        .collect()
}

/// The delivery ledger of this process (`[trace]`), registered in `registry` when on.
pub(crate) fn ledger(
    config: &Config,
    registry: &mut longlink_metrics::Registry,
) -> (Option<Arc<MemoryLedger>>, Arc<dyn Ledger>) {
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
            ledger.register(registry);
            ledger.clone()
        }
        None => Arc::new(NoLedger),
    };
    (memory_ledger, ledger)
}

/// Logic's settings from the config.
pub(crate) fn logic_config(config: &Config) -> LogicConfig {
    LogicConfig {
        keepalive_interval_secs: config.gate.keepalive_interval_secs,
        max_content_bytes: config.logic.max_content_bytes,
        max_response_bytes: config.gate.max_body_bytes as usize,
        resume_secret: config.logic.resume_secret.clone(),
        login_limits: config.login_limits(),
    }
}

/// The API's limits from the config.
pub(crate) fn api_limits(config: &Config) -> ApiLimits {
    ApiLimits {
        max_body_bytes: config.api.max_body_bytes,
        max_content_bytes: config.logic.max_content_bytes,
        default_lease: Duration::from_secs(config.bus.lease_secs),
    }
}

/// Appcodes with their names, for the stats.
pub(crate) fn app_names(config: &Config) -> Vec<(u32, String)> {
    config
        .apps
        .iter()
        .map(|a| (a.appcode, a.name.clone()))
        .collect()
}

/// One [`Gate`] per bound gate, each with the access lists.
pub(crate) fn make_gates(
    bound: &BoundGates,
    ledger: &Arc<dyn Ledger>,
    registry: &mut longlink_metrics::Registry,
    guard: &Arc<Guard>,
) -> Vec<Gate> {
    let gates: Vec<Gate> = bound
        .listeners
        .iter()
        .map(|(_, gate_config)| Gate::new(gate_config.clone(), ledger.clone(), registry))
        .collect();
    for gate in &gates {
        gate.set_guard(guard.clone());
    }
    gates
}

/// Advertises each gate's bound address, spawns its accept loop over `logic`, and tells each
/// gate the others as its clients' fallbacks.
pub(crate) fn spawn_gates(
    listeners: Vec<(Vec<GateListener>, GateConfig)>,
    gates: &[Gate],
    logic: &Arc<dyn LogicService>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    for ((listeners, _), gate) in listeners.iter().zip(gates) {
        gate.advertise(listeners[0].local_addr()?);
    }
    let mut tasks = Vec::new();
    for ((listeners, _), gate) in listeners.into_iter().zip(gates) {
        let (gate, shutdown, logic) = (gate.clone(), shutdown.clone(), logic.clone());
        tasks.push(tokio::spawn(async move {
            gate.serve_all(listeners, logic, shutdown).await;
        }));
    }
    for gate in gates {
        let peers = gates
            .iter()
            .filter(|other| other.id() != gate.id())
            .map(Gate::public_addr)
            .collect();
        gate.set_peers(peers);
    }
    Ok(tasks)
}

/// Starts offline push notifications (`[push]`): the configured providers (key files read
/// now, so a bad credential stops the start with its file named) and the notifier over
/// `<data_dir>/notify.sqlite`. Its tasks stop with `shutdown`; close it before the store.
pub(crate) fn notifier(
    config: &Config,
    store: Arc<dyn longlink_store::MessageStore>,
    registry: &mut longlink_metrics::Registry,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<longlink_notify::Notifier>> {
    let push = &config.push;
    let providers = if push.enabled {
        longlink_notify::provider::build_providers(&push.apns, &push.fcm, &push.http)
            .map_err(|err| anyhow::anyhow!("push providers: {err}"))?
    } else {
        Vec::new()
    };
    let entries = providers
        .into_iter()
        .map(|built| longlink_notify::ProviderEntry {
            provider: built.provider,
            rate_per_sec: built.rate_per_sec,
            burst: built.burst,
        })
        .collect();
    longlink_notify::Notifier::start(
        push.clone(),
        entries,
        store,
        &config.store.data_dir,
        registry,
        shutdown.clone(),
    )
    .map_err(|err| anyhow::anyhow!("{err}"))
}
