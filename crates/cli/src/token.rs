//! `longlink token`: mints a development token with the secret of the same config.

use std::path::PathBuf;

use clap::Args;

use crate::serve::load_config;
use crate::{CliExit, EXIT_CONFIG};

#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// The user's appcode.
    #[arg(long)]
    pub(crate) appcode: u32,
    /// The user id.
    #[arg(long)]
    pub(crate) uid: String,
    /// Validity in seconds.
    #[arg(long, default_value_t = 86_400)]
    pub(crate) ttl_secs: u64,
    /// Config file whose [[apps]] secrets sign the token (default: the embedded defaults).
    #[arg(long, env = "LONGLINK_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

pub(crate) fn token(args: TokenArgs) -> anyhow::Result<()> {
    println!(
        "{}",
        mint(
            args.config.as_deref(),
            args.appcode,
            &args.uid,
            args.ttl_secs
        )?
    );
    Ok(())
}

/// Mints a token for `(appcode, uid)` with the secrets of the config at `config`.
pub(crate) fn mint(
    config: Option<&std::path::Path>,
    appcode: u32,
    uid: &str,
    ttl_secs: u64,
) -> anyhow::Result<String> {
    let config = load_config(config)?;
    config
        .apps()
        .mint(appcode, uid, ttl_secs)
        .map_err(|err| CliExit(EXIT_CONFIG, err.to_string()).into())
}
