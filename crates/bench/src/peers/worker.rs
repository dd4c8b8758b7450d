//! `longlink bench peer-worker` (hidden): one worker process holding a peer's users, each a
//! connection to the broker subscribed to its own topic `u/<i>` (and `--broadcast-topic`).
//!
//! It speaks [`crate::fanout`]'s protocol, so the parent counts and times its deliveries with
//! the same code as longlink's s2c clients: a "login" is connect + subscribe confirmed by the
//! broker, a delivery is a message whose payload is a bench push's content
//! (`llb <tag> <series> <k> <t_call_us>`), timed with the wall clock when it is read.
//! Workers exist because one process may open at most 20,000 files here; at most
//! `--per-worker` users each.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::client::Subscriber;
use super::{Peer, PeerKind, user_topic};
use crate::fanout::{self, unix_us};
use crate::workers::{LoginWorker, WorkerArgs};

/// `longlink bench peer-worker` (hidden): one worker process of a peer run.
#[derive(Debug, Clone, Args)]
pub struct PeerWorkerArgs {
    /// Where (`--server`: the broker), how many (`--first`, `--count`), how fast.
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// The run tag in the content of the messages to count.
    #[arg(long)]
    pub tag: u64,
    /// The broker program.
    #[arg(long, value_enum)]
    pub peer: PeerKind,
    /// MQTT QoS of the subscriptions (0 or 1; ignored for NATS).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// A topic every user subscribes to besides its own (the broadcast's).
    #[arg(long)]
    pub broadcast_topic: Option<String>,
}

/// Runs one worker until its stdin closes or its deadline passes, then exits the process.
///
/// # Errors
/// Never in practice: failures are counted and reported on stdout.
pub async fn run_worker(args: PeerWorkerArgs) -> anyhow::Result<()> {
    let peer = Peer {
        kind: args.peer,
        qos: args.qos,
    };
    let broker = args.worker.server;
    let timeout = Duration::from_secs(args.worker.login_timeout_secs);
    let tag = args.tag;
    let broadcast = args.broadcast_topic.clone();
    let worker = args.worker.clone();
    fanout::run_receiving_worker(tag, move |shared| {
        let connect = move |uid: String, source: Option<Arc<crate::client::SourcePorts>>| {
            let broadcast = broadcast.clone();
            async move {
                let i: u32 = uid.parse().map_err(|_| format!("bad user number {uid}"))?;
                let mut topics = vec![user_topic(i)];
                topics.extend(broadcast);
                // Client ids are unique per broker: the run's tag and the user number.
                let id = format!("ll{tag}-{i}");
                Subscriber::connect(peer, broker, &id, source.map(|s| s.ip()), &topics, timeout)
                    .await
            }
        };
        LoginWorker::start_with(&worker, connect, move |subscriber: Subscriber, stop| {
            let shared = shared.clone();
            async move {
                let mut seen = HashSet::new();
                subscriber
                    .receive(
                        stop,
                        |payload| shared.record_once(payload, unix_us(), &mut seen),
                        || shared.acked(),
                    )
                    .await
            }
        })
    })
    .await
}
