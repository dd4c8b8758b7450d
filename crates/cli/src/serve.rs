//! `longlink serve` and `longlink config default`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use longlink_server::{Config, DEFAULT_CONFIG};

use crate::{CliExit, EXIT_CONFIG};

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Config file (TOML); without it the embedded defaults (`longlink config default`).
    #[arg(long, env = "LONGLINK_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory of the embedded store (overrides store.data_dir).
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Prints the commented default configuration.
    Default,
}

/// Loads the config from `path` (or defaults) with `LONGLINK_*` env overrides; a bad config
/// is a [`CliExit`] with code 64.
pub(crate) fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    Config::load(path, &env).map_err(|err| CliExit(EXIT_CONFIG, err.to_string()).into())
}

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = load_config(args.config.as_deref())?;
    if let Some(dir) = args.data_dir {
        config.store.data_dir = dir;
    }
    let server = longlink_server::start(&config).await?;
    shutdown_signal().await;
    tracing::info!("shutdown signal received; stopping");
    server.stop().await;
    Ok(())
}

pub(crate) fn config(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Default => print!("{DEFAULT_CONFIG}"),
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
