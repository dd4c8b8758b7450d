//! One process of a cluster (`[cluster]` with all three URLs; docs/operations.md): the same
//! roles as the single node, on the shared engines — presence in Redis (`RedisPresence`), the
//! message store and token revocations in PostgreSQL (`PgStore`, `PgRevocations`), the bus on
//! NATS JetStream (`NatsBus`), and the calls between gates and logic over NATS request/reply
//! (`longlink-rpc-nats`). Which roles run is `[cluster] roles` (`longlink serve --roles`):
//!
//! - **logic**: one stateless [`Logic`] whose `GatePush` is [`NatsGatePush`], served to every
//!   gate by [`serve_logic`] (the NATS queue group balances the logic processes); plus the
//!   gate-detector: every `heartbeat_secs` it reads [`Presence::live_gates`], and a gate seen
//!   live before and gone now is purged ([`Presence::purge_gate`]; idempotent, so several logic
//!   processes may do it at once).
//! - **gate**: the gate listeners as on a single node; each gate calls the in-process logic
//!   when this process runs logic too, else [`NatsLogic`]; each gate serves pushes on its NATS
//!   subject ([`serve_gate`]) and heartbeats into presence. A gate id must be unique across the
//!   cluster: a process whose gate id is live already refuses to start.
//! - **api**: the API over a `Logic` of its own (pushes, revocations), presence, the NatsBus as
//!   topic queue, and the gates of the cluster from a snapshot of the live gates refreshed
//!   every heartbeat. Drains through the API work for the gates of this process only; another
//!   process's gate answers UnknownGate (drain it with its own API, or SIGTERM).
//!
//! Logic and API processes need a node id for msgids: `[cluster] node_id`, or, when 0, a lease
//! from Redis (`RedisNodeLease`), renewed in the background. A lost lease is logged as an
//! error and the process stops taking logic calls (its msgids could collide).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use longlink_api::{ApiContext, DrainStart, GateDirectory, GateStatus};
use longlink_bus::TopicQueue;
use longlink_bus_nats::{NatsBus, NatsOptions};
use longlink_gate::Gate;
use longlink_logic::Logic;
use longlink_metrics::Latency;
use longlink_presence::{GateBeat, Presence, SessionEntry};
use longlink_presence_redis::{LeaseState, RedisNodeLease, RedisPresence};
use longlink_rpc::{GatePush, LogicService};
use longlink_rpc_nats::{NatsGatePush, NatsLogic, serve_gate, serve_logic};
use longlink_store_pg::{PgOptions, PgRevocations, PgStore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Role;
use crate::{
    Closer, Config, LogicTokens, NodeGates, RunningServer, chat_settings, enforce_access_lists,
    observe, parts,
};

/// The Redis namespace of node-id leases.
const LEASE_NAMESPACE: &str = "longlink";

/// A cluster process's own tasks, stopped after its gates and before its API.
pub(crate) struct ClusterTasks {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    lease: Option<RedisNodeLease>,
    presence: Arc<dyn Presence>,
    /// This process's gates: taken out of presence at a clean stop.
    gate_ids: Vec<String>,
}

impl std::fmt::Debug for ClusterTasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTasks")
            .field("tasks", &self.tasks.len())
            .field("lease", &self.lease)
            .field("gate_ids", &self.gate_ids)
            .finish_non_exhaustive()
    }
}

impl ClusterTasks {
    /// Stops the RPC servers (they answer what was already routed to them), heartbeats and
    /// the gate-detector; takes this process's gates out of presence; gives the node id back.
    pub(crate) async fn stop(self, timeout: Duration) {
        self.stop.cancel();
        for task in self.tasks {
            if tokio::time::timeout(timeout, task).await.is_err() {
                tracing::warn!("a cluster task did not stop within the stage timeout");
            }
        }
        for gate_id in &self.gate_ids {
            // The gate is stopped: out of dispatch now rather than after gate_dead_secs.
            match tokio::time::timeout(timeout, self.presence.purge_gate(gate_id)).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    tracing::warn!(gate = %gate_id, error = %err, "cannot remove the gate from presence")
                }
                Err(_) => {
                    tracing::warn!(gate = %gate_id, "presence did not answer the gate's removal")
                }
            }
        }
        if let Some(lease) = self.lease
            && let Err(err) = lease.release().await
        {
            tracing::warn!(error = %err, "cannot release the node id (it expires by itself)");
        }
    }
}

/// Starts this process's roles on the cluster's engines. Returns once every listener is bound
/// and every gate sent its first heartbeat.
///
/// # Errors
/// An engine cannot be reached, a listener cannot be bound, or a gate id is live already.
pub(crate) async fn start(config: &Config) -> anyhow::Result<RunningServer> {
    let cluster = &config.cluster;
    let (run_gate, run_logic, run_api) = (
        cluster.runs(Role::Gate),
        cluster.runs(Role::Logic),
        cluster.runs(Role::Api),
    );
    let heartbeat = Duration::from_secs(cluster.heartbeat_secs);
    let gate_ttl = Duration::from_secs(cluster.gate_dead_secs);
    let rpc_timeout = Duration::from_millis(cluster.rpc_timeout_ms.max(1));
    std::fs::create_dir_all(&config.store.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.store.data_dir.display()))?;

    let redis_urls: Vec<&str> = cluster.redis_url.split(',').map(str::trim).collect();
    let redis = RedisPresence::connect(&redis_urls)
        .await
        .with_context(|| format!("cannot reach redis at {}", cluster.redis_url))?;
    let redis_conn = redis.connection();
    let presence: Arc<dyn Presence> = Arc::new(redis);
    let nats = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .name("longlink")
        .connect(cluster.nats_url.as_str())
        .await
        .with_context(|| format!("cannot reach nats at {}", cluster.nats_url))?;

    // Gate ids are the cluster's addresses of sessions: two live gates with one id would
    // take each other's pushes.
    let gate_ids: Vec<String> = if run_gate {
        config
            .gate_configs()
            .into_iter()
            .map(|(_, g)| g.gate_id)
            .collect()
    } else {
        Vec::new()
    };
    if run_gate {
        let live = presence
            .live_gates()
            .await
            .context("cannot read the live gates from redis")?;
        if let Some(taken) = live.iter().find(|beat| gate_ids.contains(&beat.gate_id)) {
            anyhow::bail!(
                "gate id {:?} is live in the cluster already (heartbeat within gate_dead_secs): \
                 give this process another [gate] gate_id, or wait until the old gate is declared dead",
                taken.gate_id
            );
        }
    }

    let stop = CancellationToken::new();
    let logic_stop = stop.child_token();
    let mut tasks = Vec::new();
    let mut closers = Vec::new();
    let mut registry = longlink_metrics::Registry::default();
    let (memory_ledger, ledger) = parts::ledger(config, &mut registry);
    let routes = parts::routes(config)?;
    let guard = parts::open_guard(config)?;

    // Logic (for the logic role, and for the API's pushes and revocations).
    let mut lease = None;
    let mut node_id = None;
    let mut backends = None;
    if run_logic || run_api {
        let id = if cluster.node_id != 0 {
            cluster.node_id
        } else {
            let leased = RedisNodeLease::acquire(
                redis_conn.clone(),
                LEASE_NAMESPACE,
                longlink_store_pg::MAX_NODES,
            )
            .await
            .context("cannot lease a node id from redis")?;
            let id = leased.node_id();
            tasks.push(tokio::spawn(watch_lease(
                leased.state(),
                logic_stop.clone(),
                stop.clone(),
            )));
            lease = Some(leased);
            id
        };
        node_id = Some(id);
        let pg_options = PgOptions {
            node_id: id,
            migrate_on_open: cluster.migrate_on_start,
            ..PgOptions::default()
        };
        let store = Arc::new(
            PgStore::open(&cluster.postgres_url, pg_options.clone())
                .await
                .context("cannot open the postgres store")?,
        );
        let revocations = Arc::new(
            PgRevocations::open(&cluster.postgres_url, pg_options)
                .await
                .context("cannot open the token revocations in postgres")?,
        );
        let bus = Arc::new(
            NatsBus::with_client(
                nats.clone(),
                NatsOptions {
                    max_attempts: config.bus.max_attempts,
                    max_backlog: i64::try_from(config.bus.max_backlog).unwrap_or(i64::MAX),
                    ..NatsOptions::default()
                },
            )
            .await
            .context("cannot open the bus on nats jetstream")?,
        );
        let gate_push = NatsGatePush::new(nats.clone(), rpc_timeout, stop.clone())
            .await
            .context("cannot subscribe to write receipts on nats")?;
        let logic = Arc::new(
            Logic::new(
                parts::logic_config(config),
                Arc::new(config.apps()),
                presence.clone(),
                store.clone(),
                bus.clone(),
                routes.clone(),
                Arc::new(gate_push) as Arc<dyn GatePush>,
                ledger.clone(),
                &mut registry,
            )
            .with_revocations(revocations),
        );
        let closing = store.clone();
        closers.push(Closer::new("store", async move {
            closing.close().await.map_err(anyhow::Error::from)
        }));
        backends = Some((logic, store, bus));
    }

    if run_logic {
        let (logic, _, _) = backends.as_ref().context("logic is built")?;
        let served: Arc<dyn LogicService> = logic.clone();
        let (client, logic_stop) = (nats.clone(), logic_stop.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(err) = serve_logic(client, served, logic_stop).await {
                tracing::error!(error = %err, "cannot serve logic on nats");
            }
        }));
        tasks.push(tokio::spawn(detect_dead_gates(
            presence.clone(),
            heartbeat,
            stop.clone(),
        )));
    }

    // Gates.
    let gate_tls = parts::gate_tls(config)?;
    let shutdown = CancellationToken::new();
    let mut gates: Vec<Gate> = Vec::new();
    let mut gate_tasks = Vec::new();
    let (mut ws_addr, mut plain_addr, mut gate_addr) = (None, None, None);
    if run_gate {
        let bound = parts::bind_gates(config, gate_tls.as_ref())?;
        (ws_addr, plain_addr) = (bound.ws_addr, bound.plain_addr);
        gate_addr = Some(bound.listeners[0].0[0].local_addr()?);
        gates = parts::make_gates(&bound, &ledger, &mut registry, &guard);
        let gate_logic: Arc<dyn LogicService> = match &backends {
            Some((logic, _, _)) if run_logic => logic.clone(),
            _ => Arc::new(NatsLogic::new(nats.clone(), rpc_timeout)),
        };
        tokio::spawn(enforce_access_lists(
            guard.subscribe(),
            gates.clone(),
            shutdown.clone(),
        ));
        gate_tasks = parts::spawn_gates(bound.listeners, &gates, &gate_logic, &shutdown)?;
        for gate in &gates {
            let table: Arc<dyn GatePush> = gate.sessions();
            let (client, id, serving) = (nats.clone(), gate.id().to_owned(), stop.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(err) = serve_gate(client, id.clone(), table, serving).await {
                    tracing::error!(gate = %id, error = %err, "cannot serve the gate's pushes on nats");
                }
            }));
            let extra_addrs: Vec<String> = ws_addr
                .filter(|_| gates.first().is_some_and(|g| g.id() == gate.id()))
                .map(|addr| addr.to_string())
                .into_iter()
                .collect();
            // The first beat before "ready": dispatch and the API see the gate at once.
            beat(presence.as_ref(), gate, &extra_addrs, gate_ttl).await?;
            tasks.push(tokio::spawn(heartbeat_gate(
                presence.clone(),
                gate.clone(),
                extra_addrs,
                heartbeat,
                gate_ttl,
                stop.clone(),
            )));
        }
    }
    let drain_timeout = Duration::from_secs(config.gate.drain_timeout_secs);
    let directory = Arc::new(NodeGates {
        gates: gates.clone(),
        drain_timeout,
        drains: Mutex::new(HashMap::new()),
    });

    // The API.
    let api_shutdown = CancellationToken::new();
    let (mut api_addr, mut grpc_addr, mut api_task, mut sampler) = (None, None, None, None);
    let mut webhooks = Vec::new();
    let (store, bus) = match &backends {
        Some((_, store, bus)) => (
            Some(store.clone() as Arc<dyn longlink_store::MessageStore>),
            Some(bus.clone() as Arc<dyn TopicQueue>),
        ),
        None => (None, None),
    };
    if run_api {
        let (logic, _, nats_bus) = backends.as_ref().context("the API's logic is built")?;
        let queue: Arc<dyn TopicQueue> = nats_bus.clone();
        let api = parts::BoundApi::bind(config).await?;
        let addrs = api.addrs()?;
        (api_addr, grpc_addr) = (Some(addrs.0), addrs.1);
        let keys = parts::api_keys(config)?;
        let hooks = parts::webhook_configs(config)?;
        let cluster_gates = Arc::new(ClusterGates {
            local: directory.clone(),
            live: RwLock::new(presence.live_gates().await.unwrap_or_default()),
        });
        tasks.push(tokio::spawn(refresh_gates(
            presence.clone(),
            cluster_gates.clone(),
            heartbeat,
            stop.clone(),
        )));
        // Without gates, a gate that never serves names the process in the stats.
        let stats_gate = match gates.first() {
            Some(gate) => gate.clone(),
            None => Gate::new(config.gate_config(), ledger.clone(), &mut registry),
        };
        let node_stats = Arc::new(observe::NodeStats::with_gate(
            stats_gate,
            gates.clone(),
            logic.metrics().clone(),
            memory_ledger
                .as_ref()
                .map_or_else(Latency::new, |l| l.c2c_delivery().clone()),
            parts::app_names(config),
            queue.clone(),
            &mut registry,
        ));
        api_task = Some(api.spawn(
            ApiContext {
                push: logic.clone(),
                presence: presence.clone(),
                queue: queue.clone(),
                routes,
                keys,
                stats: node_stats.clone(),
                ledger,
                metrics: Arc::new(registry),
                gates: cluster_gates,
                bans: guard.clone(),
                tokens: Arc::new(LogicTokens(logic.clone())),
                notifications: Arc::new(longlink_rpc::notify::NoNotifications),
                limits: parts::api_limits(config),
                chat: chat_settings(config, ws_addr, gate_tls.is_some()),
            },
            api_shutdown.clone(),
        ));
        sampler = Some(tokio::spawn(node_stats.run_sampler(api_shutdown.clone())));
        webhooks = parts::spawn_webhooks(&queue, hooks, &api_shutdown);
    }

    let roles: Vec<&str> = [(run_gate, "gate"), (run_logic, "logic"), (run_api, "api")]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
    let shown = |addr: Option<std::net::SocketAddr>| {
        addr.map_or_else(|| "off".to_owned(), |a| a.to_string())
    };
    tracing::info!(
        roles = %roles.join(","),
        gate = %shown(gate_addr),
        ws = %shown(ws_addr),
        api = %shown(api_addr),
        grpc = %shown(grpc_addr),
        node_id = node_id.map_or_else(|| "none".to_owned(), |id| id.to_string()),
        gate_ids = %gate_ids.join(","),
        "longlink ready (cluster)"
    );
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
        presence: presence.clone(),
        cluster: Some(ClusterTasks {
            stop,
            tasks,
            lease,
            presence,
            gate_ids,
        }),
        closers,
    })
}

/// Logs a lost node-id lease and stops taking logic calls: msgids minted with the id could
/// collide with those of the process that took it.
async fn watch_lease(
    mut state: tokio::sync::watch::Receiver<LeaseState>,
    logic_stop: CancellationToken,
    stop: CancellationToken,
) {
    loop {
        if *state.borrow_and_update() == LeaseState::Lost {
            tracing::error!(
                "the node id lease was lost: this process stops taking logic calls (restart it to lease a new id)"
            );
            logic_stop.cancel();
            return;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = state.changed() => if changed.is_err() { return },
        }
    }
}

/// One heartbeat of `gate`.
async fn beat(
    presence: &dyn Presence,
    gate: &Gate,
    extra_addrs: &[String],
    ttl: Duration,
) -> anyhow::Result<()> {
    let mut addrs = vec![gate.public_addr()];
    addrs.extend_from_slice(extra_addrs);
    presence
        .gate_heartbeat(
            GateBeat {
                gate_id: gate.id().to_owned(),
                addrs,
                connections: gate.connection_count(),
                load: 0.0,
                draining: gate.is_draining(),
                last_seen_ms: 0,
                ttl_ms: 0,
            },
            ttl,
        )
        .await
        .with_context(|| format!("cannot send gate {}'s heartbeat to redis", gate.id()))
}

/// Most sessions re-registered by one [`Presence::restore_sessions`] call.
const RESTORE_BATCH: usize = 500;

/// Sends `gate`'s heartbeat every `every` until `stop`. Before each beat it looks for its
/// previous one among the live gates: when it is gone, presence lost the gate's data (Redis
/// restarted empty, or the gate was silent long enough to be declared dead and purged), and
/// after the next successful beat the gate re-registers its logged-in sessions with their
/// epochs ([`restore_sessions`]), so that they are reachable again without reconnecting. A
/// failed call to presence counts as a loss too (it is the sign of a restart; restoring
/// sessions presence still has changes nothing: their epochs are already there). The live
/// gates also become the gate's peers, the fallbacks its clients are told at login.
async fn heartbeat_gate(
    presence: Arc<dyn Presence>,
    gate: Gate,
    extra_addrs: Vec<String>,
    every: Duration,
    ttl: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut restore = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Presence failing is as good as gone: Redis may come back empty, and the first call
        // on a fresh connection may be the one that fails, so a loss would go unseen.
        let live = presence.live_gates().await;
        if let Ok(live) = &live {
            gate.set_peers(peers_of(live, gate.id()));
        }
        match live {
            Ok(live) if live.iter().any(|beat| beat.gate_id == gate.id()) => {}
            Ok(_) => {
                if !restore {
                    tracing::warn!(gate = %gate.id(), "this gate's heartbeat is gone from presence: re-registering its sessions");
                }
                restore = true;
            }
            Err(err) => {
                tracing::warn!(gate = %gate.id(), error = %err, "cannot read the live gates: the sessions are re-registered once presence answers");
                restore = true;
            }
        }
        if let Err(err) = beat(presence.as_ref(), &gate, &extra_addrs, ttl).await {
            tracing::warn!(error = %err, "gate heartbeat failed");
            restore = true;
            continue;
        }
        if restore {
            match restore_sessions(presence.as_ref(), &gate).await {
                Ok(restored) => {
                    tracing::info!(gate = %gate.id(), restored, "sessions re-registered in presence");
                    restore = false;
                }
                Err(err) => {
                    tracing::warn!(gate = %gate.id(), error = %err, "cannot re-register the sessions; retrying at the next heartbeat");
                }
            }
        }
    }
}

/// The other live, non-draining gates' client addresses, fewest connections first: what a
/// gate tells its clients as fallbacks (`LoginResponse.gates`; the SDK reconnects there when
/// this gate is gone).
fn peers_of(live: &[GateBeat], own: &str) -> Vec<String> {
    let mut others: Vec<&GateBeat> = live
        .iter()
        .filter(|beat| beat.gate_id != own && !beat.draining)
        .collect();
    others.sort_by_key(|beat| (beat.connections, beat.gate_id.clone()));
    others
        .into_iter()
        .filter_map(|beat| beat.addrs.first().cloned())
        .collect()
}

/// Puts `gate`'s logged-in sessions back into presence with their epochs, in batches of
/// [`RESTORE_BATCH`]; a device that logged in again meanwhile keeps its newer session.
async fn restore_sessions(presence: &dyn Presence, gate: &Gate) -> anyhow::Result<u64> {
    let entries: Vec<SessionEntry> = gate
        .sessions()
        .logged_in()
        .into_iter()
        .map(|logged_in| SessionEntry {
            appcode: logged_in.session.appcode,
            uid: logged_in.session.uid,
            device_id: logged_in.session.device_id,
            device_class: logged_in.device_class,
            epoch: logged_in.session.epoch,
            gate_id: logged_in.session.gate_id,
            session_id: logged_in.session.session_id,
            since_ms: logged_in.since_ms,
        })
        .collect();
    let mut restored = 0;
    for batch in entries.chunks(RESTORE_BATCH) {
        restored += presence
            .restore_sessions(batch.to_vec())
            .await
            .context("cannot restore sessions in redis")?;
    }
    Ok(restored)
}

/// The gate-detector: a gate seen live and then silent for its ttl has its sessions purged
/// from presence (a push to its users then takes the offline path).
async fn detect_dead_gates(presence: Arc<dyn Presence>, every: Duration, stop: CancellationToken) {
    let mut seen: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let live: HashSet<String> = match presence.live_gates().await {
            Ok(live) => live.into_iter().map(|beat| beat.gate_id).collect(),
            Err(err) => {
                tracing::warn!(error = %err, "gate-detector cannot read the live gates");
                continue;
            }
        };
        let mut next = live.clone();
        for gone in seen.difference(&live) {
            match presence.purge_gate(gone).await {
                Ok(purged) => {
                    tracing::warn!(gate = %gone, purged, "gate silent beyond gate_dead_secs: its sessions are purged from presence");
                }
                Err(err) => {
                    tracing::warn!(gate = %gone, error = %err, "cannot purge a dead gate; retrying");
                    next.insert(gone.clone());
                }
            }
        }
        seen = next;
    }
}

/// Refreshes the API's snapshot of the live gates every `every` until `stop`.
async fn refresh_gates(
    presence: Arc<dyn Presence>,
    gates: Arc<ClusterGates>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match presence.live_gates().await {
            Ok(live) => *gates.live.write().unwrap_or_else(|p| p.into_inner()) = live,
            Err(err) => tracing::warn!(error = %err, "cannot refresh the live gates"),
        }
    }
}

/// The cluster's gates as the API sees them: the live gates from presence (as of the last
/// heartbeat), with this process's own gates reported first-hand; drains for this process's
/// gates only.
#[derive(Debug)]
struct ClusterGates {
    local: Arc<NodeGates>,
    live: RwLock<Vec<GateBeat>>,
}

impl GateDirectory for ClusterGates {
    fn gates(&self) -> Vec<GateStatus> {
        let mut all = self.local.gates();
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        let mut remote: Vec<GateStatus> = live
            .iter()
            .filter(|beat| !all.iter().any(|g| g.id == beat.gate_id))
            .map(|beat| GateStatus {
                id: beat.gate_id.clone(),
                addr: beat.addrs.first().cloned().unwrap_or_default(),
                connections: beat.connections,
                held: 0,
                serving: true,
                draining: beat.draining,
            })
            .collect();
        remote.sort_by(|a, b| a.id.cmp(&b.id));
        all.extend(remote);
        all
    }

    fn start_drain(&self, gate_id: &str) -> DrainStart {
        // Another process's gate: not drainable from here yet (docs/operations.md).
        self.local.start_drain(gate_id)
    }
}
