//! `longlink tokens revoke --appcode N --uid U [--before-ms T]` (`POST /v1/tokens/revoke`):
//! revokes a user's login tokens issued before now (or T); the user's sessions are kicked and
//! cannot RESUME. Takes a key covering the appcode (docs/api.md "Tokens").

use clap::{Args, Subcommand};
use serde::Deserialize;

use super::{Api, ApiOpts};

/// `longlink tokens …`.
#[derive(Debug, Subcommand)]
pub(crate) enum TokensCommand {
    /// Revokes every token of a user issued before now: its sessions are kicked, cannot
    /// RESUME, and its old tokens are refused (BAD_TOKEN); tokens issued afterwards work.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// The user's appcode.
    #[arg(long)]
    appcode: u32,
    /// The user id.
    #[arg(long)]
    uid: String,
    /// Revoke tokens issued before this instant (unix ms, not in the future) instead of now.
    #[arg(long)]
    before_ms: Option<u64>,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiOpts,
}

#[derive(Debug, Deserialize, serde::Serialize)]
struct Revoked {
    appcode: u32,
    uid: String,
    before_ms: u64,
    kicked: u64,
}

pub(crate) async fn tokens(command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Revoke(args) => revoke(args).await,
    }
}

async fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let mut body = serde_json::json!({"appcode": args.appcode, "uid": args.uid});
    if let Some(before_ms) = args.before_ms {
        body["before_ms"] = before_ms.into();
    }
    let revoked: Revoked = api.post(&["v1", "tokens", "revoke"], &body).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&revoked)?);
    } else {
        println!(
            "revoked the tokens of {}:{} issued before {} ms; {} session{} kicked",
            revoked.appcode,
            revoked.uid,
            revoked.before_ms,
            revoked.kicked,
            if revoked.kicked == 1 { "" } else { "s" }
        );
    }
    Ok(())
}
