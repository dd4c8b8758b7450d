//! `longlink bench …`: load generators (measurements, never tests). The scenarios live in
//! `longlink-bench`; this module only wires them to the command line.

use clap::Subcommand;
use longlink_bench::broadcast::BroadcastArgs;
use longlink_bench::c2c::C2cArgs;
use longlink_bench::fanout::FanoutWorkerArgs;
use longlink_bench::idle::{IdleArgs, IdleWorkerArgs};
use longlink_bench::notify::NotifyArgs;
use longlink_bench::offline::{OfflineArgs, OfflineWorkerArgs};
use longlink_bench::peers::worker::PeerWorkerArgs;
use longlink_bench::push::PushArgs;
use longlink_bench::reconnect::{ReconnectStormArgs, ReconnectStormWorkerArgs};

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Lists the scenarios.
    List,
    /// N idle logged-in connections: the server's RSS per connection and CPU per login.
    Idle(IdleArgs),
    /// Durable c2c messages at a fixed rate (open loop): sender-ACK and end-to-end latency
    /// percentiles, messages per server CPU-second.
    C2c(C2cArgs),
    /// s2c pushes to lists of online users through the HTTP API: deliveries per server
    /// CPU-second, API call → client receipt latency.
    Push(PushArgs),
    /// One push to every online user of an appcode (15,000 by default), R rounds: time from
    /// the API call to the last delivery.
    Broadcast(BroadcastArgs),
    /// N connected clients lose their links at once and come back by RESUME (or, with
    /// --no-resume, LOGIN + OFFLINE_PULL): time until all are back, resume latency, server
    /// CPU per reconnect, messages carried vs pulled.
    ReconnectStorm(ReconnectStormArgs),
    /// U offline users with M stored messages each log in and drain their inboxes by
    /// OFFLINE_PULL in pages of 50: messages pulled per second and per server CPU-second, page
    /// latency, time to drain, and a check that every message came exactly once, in order.
    Offline(OfflineArgs),
    /// U offline users with a registered device each get one persisted push: notifications
    /// per second and per server CPU-second through the outbox to a local HTTPS provider
    /// endpoint; then c2c with notifications off and on, the overhead per server CPU-second.
    Notify(NotifyArgs),
    /// One worker process of `bench idle` (started by it; not for direct use).
    #[command(hide = true)]
    IdleWorker(IdleWorkerArgs),
    /// One client worker process of `bench push` and `bench broadcast` (not for direct use).
    #[command(hide = true)]
    FanoutWorker(FanoutWorkerArgs),
    /// One client worker process of `bench reconnect-storm` (not for direct use).
    #[command(hide = true)]
    ReconnectStormWorker(ReconnectStormWorkerArgs),
    /// One worker process holding a peer broker's subscribers (`--peers`; not for direct use).
    #[command(hide = true)]
    PeerWorker(PeerWorkerArgs),
    /// One client worker process of `bench offline` (not for direct use).
    #[command(hide = true)]
    OfflineWorker(OfflineWorkerArgs),
}

pub(crate) async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::List => {
            for (name, about) in longlink_bench::scenarios() {
                println!("{name:<16} {about}");
            }
            Ok(())
        }
        BenchCommand::Idle(args) => longlink_bench::idle::run(args).await,
        BenchCommand::C2c(args) => longlink_bench::c2c::run(args).await,
        BenchCommand::Push(args) => longlink_bench::push::run(args).await,
        BenchCommand::Broadcast(args) => longlink_bench::broadcast::run(args).await,
        BenchCommand::ReconnectStorm(args) => longlink_bench::reconnect::run(args).await,
        BenchCommand::Offline(args) => longlink_bench::offline::run(args).await,
        BenchCommand::Notify(args) => longlink_bench::notify::run(args).await,
        BenchCommand::IdleWorker(args) => longlink_bench::idle::run_worker(args).await,
        BenchCommand::FanoutWorker(args) => longlink_bench::fanout::run_worker(args).await,
        BenchCommand::ReconnectStormWorker(args) => {
            longlink_bench::reconnect::run_worker(args).await
        }
        BenchCommand::PeerWorker(args) => longlink_bench::peers::worker::run_worker(args).await,
        BenchCommand::OfflineWorker(args) => longlink_bench::offline::run_worker(args).await,
    }
}
