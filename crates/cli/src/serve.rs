//! `longlink serve` and `longlink config default`.
//!
//! SIGTERM or Ctrl-C drains the node before it stops (`RunningServer::drain_and_stop`): every
//! gate stops accepting and sends its clients KICK(RECONNECT) with a backoff, in waves, lets
//! their queues flush, then the node stops in order; the process exits 0. Each stage is
//! bounded (`gate.drain_timeout_secs`, then the stop's own timeouts), so a signal always ends
//! the process.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use longlink_server::config::Role;
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
    /// The roles this process runs, comma-separated: gate, logic, api (overrides
    /// `[cluster] roles`; separate roles need the cluster URLs, docs/operations.md).
    #[arg(long, value_delimiter = ',')]
    pub(crate) roles: Option<Vec<Role>>,
}

/// `longlink migrate`.
#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// Config file (TOML) whose `[cluster] postgres_url` names the database.
    #[arg(long, env = "LONGLINK_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// The database to migrate (overrides the config's `[cluster] postgres_url`).
    #[arg(long)]
    pub(crate) postgres_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Prints the commented default configuration.
    Default,
    /// Prints the configuration the server would run with (file, defaults and `LONGLINK_*`
    /// overrides), secrets redacted.
    Show {
        /// Config file (TOML); the embedded defaults when absent.
        #[arg(long, env = "LONGLINK_CONFIG")]
        config: Option<std::path::PathBuf>,
    },
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
    if let Some(roles) = args.roles {
        if roles.len() < 3 && !config.cluster.enabled() {
            return Err(CliExit(
                EXIT_CONFIG,
                "--roles: a single node runs every role; separate roles need [cluster] \
                 redis_url, postgres_url and nats_url"
                    .to_owned(),
            )
            .into());
        }
        config.cluster.roles = roles;
    }
    let server = longlink_server::start(&config).await?;
    shutdown_signal().await;
    // Draining rather than a plain stop: clients are told to come back (after a backoff) instead
    // of finding a dead socket, and what they sent before the KICK is answered first. The
    // drain logs one "gate drained" line per gate (kicked, waves, left_open).
    tracing::info!(
        gates = server.gates().len(),
        "shutdown signal received; draining the gates, then stopping"
    );
    server.drain_and_stop().await;
    Ok(())
}

/// Applies the PostgreSQL migrations of the cluster store (`longlink_store_pg::migrate`).
pub(crate) async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let url = match args.postgres_url {
        Some(url) => url,
        None => load_config(args.config.as_deref())?.cluster.postgres_url,
    };
    if url.is_empty() {
        return Err(CliExit(
            EXIT_CONFIG,
            "migrate: no database: set [cluster] postgres_url or pass --postgres-url".to_owned(),
        )
        .into());
    }
    let applied = longlink_store_pg::migrate(&url)
        .await
        .map_err(|err| anyhow::anyhow!("migrate failed: {err}"))?;
    println!("migrations applied: {applied}");
    Ok(())
}

pub(crate) fn config(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Default => print!("{DEFAULT_CONFIG}"),
        ConfigCommand::Show { config } => {
            let env: BTreeMap<String, String> = std::env::vars().collect();
            let shown = Config::show(config.as_deref(), &env)
                .map_err(|err| CliExit(EXIT_CONFIG, err.to_string()))?;
            print!("{shown}");
        }
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
