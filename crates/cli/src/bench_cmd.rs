//! `longlink bench …`: load generators (measurements, never tests).

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Lists the scenarios.
    List,
}

pub(crate) async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::List => {
            for name in longlink_bench::scenarios() {
                println!("{name}");
            }
            Ok(())
        }
    }
}
