//! Peers in the same run: after a longlink scenario (`idle`, `push`, `broadcast`, `c2c`), the
//! same workload runs against `mosquitto` (MQTT, QoS 0 and QoS 1, through `rumqttc`) and
//! `nats-server` (core NATS, non-durable, through `async-nats`), each a throwaway broker the
//! bench starts on a free loopback port ([`broker`]) and kills at the end. Every figure is
//! read from `/proc/<broker pid>` with the same [`crate::procfs`] helpers as longlink's, so
//! longlink's figure sits next to each peer's as a ratio **per server CPU-second** (and memory
//! per connection, last-delivery time, p99).
//!
//! What a "user" is for a peer: one connection subscribed to its own topic `u/<i>`, the
//! subscription confirmed by the broker ([`client`]). Many of them are held in worker
//! processes (`<exe> bench peer-worker`, hidden, [`worker`]) that speak [`crate::fanout`]'s
//! protocol, so the parent side ([`crate::fanout::Fleet`], [`crate::workers::Workers`]) is
//! the one longlink's s2c scenarios use. The workloads, with the longlink scenario's
//! parameters: [`idle`], [`push`], [`broadcast`], [`c2c`].
//!
//! `--peers` picks them: `mosquitto` (both QoS), `nats`, `none`; by default every peer whose
//! binary is installed (PATH or /usr/sbin), with a note for those that are not.

pub(crate) mod broadcast;
pub(crate) mod broker;
pub(crate) mod c2c;
pub(crate) mod client;
pub(crate) mod idle;
pub(crate) mod push;
pub mod worker;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, ValueEnum};
use serde::Serialize;
use tokio::time::Instant;

use crate::fanout::{Fleet, FleetSpec};
use crate::report::thousands;
use crate::workers::{self, WorkerSpec};
use broker::Broker;
use client::Publisher;

/// What to run when a broker is missing.
pub(crate) const INSTALL_HINT: &str = "apt-get install -y mosquitto nats-server";

/// A peer broker program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerKind {
    /// mosquitto, MQTT 3.1.1.
    Mosquitto,
    /// nats-server, core NATS.
    Nats,
}

impl PeerKind {
    pub(crate) fn binary_name(self) -> &'static str {
        match self {
            PeerKind::Mosquitto => "mosquitto",
            PeerKind::Nats => "nats-server",
        }
    }
}

/// One peer configuration measured: a broker and the delivery guarantee asked of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer {
    pub(crate) kind: PeerKind,
    /// MQTT QoS of subscriptions and publishes (0 or 1); 0 for NATS (at most once).
    pub(crate) qos: u8,
}

impl Peer {
    /// Its key in the JSON and the summaries: `mosquitto-qos0`, `mosquitto-qos1`, `nats`.
    pub(crate) fn key(self) -> String {
        match self.kind {
            PeerKind::Mosquitto => format!("mosquitto-qos{}", self.qos),
            PeerKind::Nats => "nats".to_owned(),
        }
    }

    /// What its delivery guarantee is, in words.
    pub(crate) fn guarantee(self) -> &'static str {
        match (self.kind, self.qos) {
            (PeerKind::Mosquitto, 0) => "MQTT QoS 0: at most once, in memory",
            (PeerKind::Mosquitto, _) => {
                "MQTT QoS 1: at least once, PUBACK per hop, in memory (persistence off)"
            }
            (PeerKind::Nats, _) => "core NATS: at most once, non-durable (no JetStream)",
        }
    }
}

/// `--peers`: which peers run the same workload after longlink.
#[derive(Debug, Clone, Args)]
pub struct PeersOption {
    /// Peers that run the same workload after longlink, in the same run, each on a throwaway
    /// broker on a free loopback port: a comma-separated list of `mosquitto` (MQTT QoS 0 and
    /// QoS 1), `nats` (core NATS), or `none`. Default: both, when their binaries are installed
    /// (`apt-get install -y mosquitto nats-server`).
    #[arg(long, value_name = "LIST")]
    pub peers: Option<String>,
}

/// The peers a run measures, and why some are not.
#[derive(Debug, Clone)]
pub(crate) struct Chosen {
    pub(crate) peers: Vec<Peer>,
    /// Said when the default left a peer out (binary missing) or `--peers none`.
    pub(crate) note: Option<String>,
}

impl PeersOption {
    /// The peers asked for, checked: an explicitly named peer must be installed.
    ///
    /// # Errors
    /// An unknown name, or a named peer whose binary is missing (one line, with the install
    /// command).
    pub(crate) fn resolve(&self) -> anyhow::Result<Chosen> {
        let expand = |kind: PeerKind| match kind {
            PeerKind::Mosquitto => vec![Peer { kind, qos: 0 }, Peer { kind, qos: 1 }],
            PeerKind::Nats => vec![Peer { kind, qos: 0 }],
        };
        let Some(list) = &self.peers else {
            let mut peers = Vec::new();
            let mut missing = Vec::new();
            for kind in [PeerKind::Mosquitto, PeerKind::Nats] {
                if broker::find_binary(kind.binary_name()).is_some() {
                    peers.extend(expand(kind));
                } else {
                    missing.push(kind.binary_name());
                }
            }
            let note = (!missing.is_empty()).then(|| {
                format!(
                    "peers not run: {} not installed ({INSTALL_HINT})",
                    missing.join(", ")
                )
            });
            return Ok(Chosen { peers, note });
        };
        let mut kinds = Vec::new();
        let mut none = false;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "none" => none = true,
                "mosquitto" | "mqtt" => kinds.push(PeerKind::Mosquitto),
                "nats" | "nats-server" => kinds.push(PeerKind::Nats),
                other => bail!(
                    "--peers: unknown peer {other:?} (known: mosquitto, nats, none; comma-separated)"
                ),
            }
        }
        if none && !kinds.is_empty() {
            bail!("--peers: `none` cannot be combined with other peers");
        }
        if none || kinds.is_empty() {
            return Ok(Chosen {
                peers: Vec::new(),
                note: Some("peers not run (--peers none)".to_owned()),
            });
        }
        kinds.dedup();
        let mut peers = Vec::new();
        for kind in kinds {
            broker::binary(kind)?;
            if !peers.iter().any(|p: &Peer| p.kind == kind) {
                peers.extend(expand(kind));
            }
        }
        Ok(Chosen { peers, note: None })
    }
}

/// The broker of a peer run, for the JSON.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BrokerInfo {
    pub(crate) binary: String,
    pub(crate) version: String,
    pub(crate) addr: String,
    pub(crate) pid: u32,
    /// The delivery guarantee measured.
    pub(crate) guarantee: &'static str,
}

impl BrokerInfo {
    pub(crate) fn of(broker: &Broker, peer: Peer) -> BrokerInfo {
        BrokerInfo {
            binary: broker.binary.display().to_string(),
            version: broker.version.clone(),
            addr: broker.addr.to_string(),
            pid: broker.pid,
            guarantee: peer.guarantee(),
        }
    }
}

/// The `peers` section of a scenario's JSON.
#[derive(Debug, Serialize)]
pub(crate) struct Section<R> {
    /// The peers measured (keys).
    pub(crate) measured: Vec<String>,
    /// Why some (or all) were not.
    pub(crate) note: Option<String>,
    /// How to read `ratios` in every run.
    pub(crate) ratios_are: &'static str,
    pub(crate) runs: Vec<R>,
}

/// What every ratio is.
pub(crate) const RATIOS_ARE: &str = "longlink ÷ peer, same workload and parameters, same machine, minutes apart: above 1 longlink does more per server CPU-second (per_cpu_sec) but uses more memory per connection or takes longer (memory, latency ratios)";

impl<R> Section<R> {
    pub(crate) fn new(chosen: &Chosen, runs: Vec<R>) -> Section<R> {
        Section {
            measured: chosen.peers.iter().map(|p| p.key()).collect(),
            note: chosen.note.clone(),
            ratios_are: RATIOS_ARE,
            runs,
        }
    }

    /// The note and the header line of the peers' rows (`peers, same run (ratio = longlink ÷
    /// peer{more}):`); false when no peer ran, and nothing beyond the note is printed.
    pub(crate) fn print_head(&self, more: &str) -> bool {
        if let Some(note) = &self.note {
            println!("note: {note}");
        }
        if self.runs.is_empty() {
            return false;
        }
        println!("peers, same run (ratio = longlink ÷ peer{more}):");
        true
    }
}

/// Runs `one` against every chosen peer, one after the other, each within its own deadline
/// of `deadline_secs` (`deadline_name` says which option set it when it passes).
///
/// # Errors
/// The first peer run that fails, or that passes its deadline.
pub(crate) async fn each_peer<R, F, Fut>(
    chosen: &Chosen,
    deadline_secs: u64,
    deadline_name: &str,
    mut one: F,
) -> anyhow::Result<Section<R>>
where
    F: FnMut(Peer, Instant) -> Fut,
    Fut: Future<Output = anyhow::Result<R>>,
{
    let mut runs = Vec::new();
    for peer in &chosen.peers {
        let deadline = deadline(deadline_secs);
        let run = tokio::time::timeout_at(deadline, one(*peer, deadline))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "{}: the peer run took more than {deadline_name} ({deadline_secs} s)",
                    peer.key(),
                )
            })??;
        runs.push(run);
    }
    Ok(Section::new(chosen, runs))
}

/// `a / b`, rounded to 2 decimals; 0 when b is 0.
pub(crate) fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        crate::num::round(a / b, 2)
    } else {
        0.0
    }
}

/// A ratio as the summaries print it: `1.23×`; `n/a` when it could not be taken (a figure
/// was 0, e.g. less CPU than one clock tick).
pub(crate) fn times(ratio: f64) -> String {
    if ratio > 0.0 {
        format!("{ratio:.2}×")
    } else {
        "n/a".to_owned()
    }
}

/// The deadline of one peer's run.
pub(crate) fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// The subscribers of a peer run, where the longlink run's clients were.
pub(crate) struct Users<'a> {
    pub(crate) exe: &'a Path,
    pub(crate) broker: &'a Broker,
    pub(crate) peer: Peer,
    pub(crate) users: u32,
    pub(crate) per_worker: u32,
    pub(crate) concurrency: u32,
    pub(crate) login_timeout_secs: u64,
    /// Pushes the run will send (k = 0 … pushes − 1), as in [`FleetSpec`].
    pub(crate) pushes: usize,
    /// A topic every user subscribes to as well (broadcast).
    pub(crate) broadcast_topic: Option<&'a str>,
    pub(crate) deadline: Instant,
}

/// The topic of user `i` (its own).
pub(crate) fn user_topic(i: u32) -> String {
    format!("u/{i}")
}

/// Connects and subscribes the users over worker processes (a progress bar shows it) and
/// waits until every one is confirmed; fails when any failed. Returns them with the run's tag
/// and how long it took.
pub(crate) async fn users_online(users: &Users<'_>) -> anyhow::Result<(Fleet, u64, f64)> {
    let tag = longlink_proto::unix_ms();
    let spec = FleetSpec {
        clients: WorkerSpec {
            exe: users.exe,
            gate: users.broker.addr,
            transport: crate::link::Transport::Tcp,
            // Workers take a token secret; brokers take anonymous clients.
            secret: "unused",
            appcode: 0,
            uid_prefix: "",
            connections: users.users,
            per_worker: users.per_worker,
            concurrency: users.concurrency,
            login_timeout_secs: users.login_timeout_secs,
            deadline: users.deadline,
        },
        tag,
        client_ack: true,
        pushes: users.pushes,
    };
    let mut own_args = vec![
        "--peer".to_owned(),
        match users.peer.kind {
            PeerKind::Mosquitto => "mosquitto",
            PeerKind::Nats => "nats",
        }
        .to_owned(),
        "--qos".to_owned(),
        users.peer.qos.to_string(),
    ];
    if let Some(topic) = users.broadcast_topic {
        own_args.extend(["--broadcast-topic".to_owned(), topic.to_owned()]);
    }
    let started = Instant::now();
    let mut fleet = Fleet::spawn_as(&spec, "peer-worker", own_args)?;
    let bar = workers::login_bar(users.users);
    let subscribed = fleet.workers.wait_logged_in(&bar).await;
    bar.finish_and_clear();
    if let Err(err) = subscribed {
        fleet.finish().await;
        return Err(err);
    }
    let secs = started.elapsed().as_secs_f64();
    let (ok, failed) = (fleet.workers.logged_in(), fleet.workers.failed());
    if failed > 0 || ok < users.users {
        let first = fleet.workers.failure_samples().first().cloned();
        fleet.finish().await;
        bail!(
            "{}: {failed} of {} connect + subscribe failed ({ok} subscribed){}",
            users.peer.key(),
            users.users,
            first.map(|s| format!("; first: {s}")).unwrap_or_default()
        );
    }
    Ok((fleet, tag, secs))
}

/// Connects the run's publisher (`ll<tag>-pub`) once the users are online; on failure the
/// users are let go first.
///
/// # Errors
/// The publisher's connection failed.
pub(crate) async fn publisher(
    peer: Peer,
    broker: &Broker,
    fleet: Fleet,
    tag: u64,
    login_timeout_secs: u64,
) -> anyhow::Result<(Fleet, Publisher)> {
    let timeout = Duration::from_secs(login_timeout_secs);
    match Publisher::connect(peer, broker.addr, &format!("ll{tag}-pub"), timeout).await {
        Ok(publisher) => Ok((fleet, publisher)),
        Err(err) => {
            fleet.finish().await;
            bail!("{}: publisher: {err}", peer.key());
        }
    }
}

/// The header line of a peer's run.
pub(crate) fn announce(peer: Peer, broker: &Broker, what: &str) {
    println!(
        "peer         {} ({}, pid {}, {}): {what}",
        peer.key(),
        broker.version,
        broker.pid,
        broker.addr
    );
}

/// `n` with thousands separators, from a float figure.
pub(crate) fn big(n: f64) -> String {
    thousands(n.max(0.0).round() as u64)
}
