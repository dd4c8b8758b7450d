//! `longlink token`: mints a development token with a key of the same config (an HS256
//! secret, chosen by `--kid`), or with an RS256 / ES256 private key file (`--alg`,
//! `--private-key`): the issuer's side of the keys the server checks tokens with.

use std::path::PathBuf;

use clap::Args;
use longlink_logic::KeyAlg;

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
    /// The key id: with HS256, which [[apps.keys]] secret signs (default: the appcode's first
    /// HS256 key); with --private-key, the kid written in the token's header.
    #[arg(long)]
    pub(crate) kid: Option<String>,
    /// Sign with this private key (PEM, PKCS#8 for ES256) instead of the config's secret;
    /// needs --alg.
    #[arg(long, requires = "alg")]
    pub(crate) private_key: Option<PathBuf>,
    /// The algorithm of --private-key: RS256 or ES256.
    #[arg(long, requires = "private_key")]
    pub(crate) alg: Option<String>,
    /// Config file whose [[apps]] secrets sign the token (default: the embedded defaults).
    #[arg(long, env = "LONGLINK_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

pub(crate) fn token(args: TokenArgs) -> anyhow::Result<()> {
    let token = match (&args.private_key, &args.alg) {
        (Some(path), Some(alg)) => {
            let usage = |why: String| -> anyhow::Error { CliExit(EXIT_CONFIG, why).into() };
            let alg = match KeyAlg::parse(alg) {
                Some(alg @ (KeyAlg::Rs256 | KeyAlg::Es256)) => alg,
                _ => return Err(usage(format!("--alg {alg}: RS256 or ES256"))),
            };
            let pem = std::fs::read(path)
                .map_err(|err| usage(format!("--private-key {}: {err}", path.display())))?;
            let key = longlink_logic::auth::signing_key(alg, &pem)
                .map_err(|err| usage(format!("--private-key {}: {err}", path.display())))?;
            longlink_logic::auth::sign(
                alg,
                args.kid.as_deref().unwrap_or_default(),
                &key,
                args.appcode,
                &args.uid,
                args.ttl_secs,
            )
            .map_err(|err| usage(err.to_string()))?
        }
        _ => mint_with_kid(
            args.config.as_deref(),
            args.appcode,
            &args.uid,
            args.ttl_secs,
            args.kid.as_deref(),
        )?,
    };
    println!("{token}");
    Ok(())
}

/// Mints a token for `(appcode, uid)` with the secrets of the config at `config`.
pub(crate) fn mint(
    config: Option<&std::path::Path>,
    appcode: u32,
    uid: &str,
    ttl_secs: u64,
) -> anyhow::Result<String> {
    mint_with_kid(config, appcode, uid, ttl_secs, None)
}

fn mint_with_kid(
    config: Option<&std::path::Path>,
    appcode: u32,
    uid: &str,
    ttl_secs: u64,
    kid: Option<&str>,
) -> anyhow::Result<String> {
    let config = load_config(config)?;
    config
        .apps()
        .mint_with_kid(appcode, uid, ttl_secs, kid)
        .map_err(|err| CliExit(EXIT_CONFIG, err.to_string()).into())
}
