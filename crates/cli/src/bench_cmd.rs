//! `longlink bench …`: load generators (measurements, never tests). The scenarios live in
//! `longlink-bench`; this module only wires them to the command line.

use clap::Subcommand;
use longlink_bench::c2c::C2cArgs;
use longlink_bench::idle::{IdleArgs, IdleWorkerArgs};

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Lists the scenarios.
    List,
    /// N idle logged-in connections: the server's RSS per connection and CPU per login.
    Idle(IdleArgs),
    /// Durable c2c messages at a fixed rate (open loop): sender-ACK and end-to-end latency
    /// percentiles, messages per server CPU-second.
    C2c(C2cArgs),
    /// One worker process of `bench idle` (started by it; not for direct use).
    #[command(hide = true)]
    IdleWorker(IdleWorkerArgs),
}

pub(crate) async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::List => {
            for (name, about) in longlink_bench::scenarios() {
                println!("{name:<8} {about}");
            }
            Ok(())
        }
        BenchCommand::Idle(args) => longlink_bench::idle::run(args).await,
        BenchCommand::C2c(args) => longlink_bench::c2c::run(args).await,
        BenchCommand::IdleWorker(args) => longlink_bench::idle::run_worker(args).await,
    }
}
