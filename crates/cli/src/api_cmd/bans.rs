//! `longlink ban KIND [VALUE]`, `longlink unban ID`, `longlink bans` (`POST /v1/bans`,
//! `DELETE /v1/bans/{id}`, `GET /v1/bans`; docs/api.md "Bans"): the black/white lists of a
//! node, changed at run time. An entry naming an appcode takes a key covering it; one for
//! every appcode (appcode 0) takes an operator key.

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use super::{Api, ApiOpts, utc_ms};

/// What an entry matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Kind {
    /// A user: `--appcode` and the uid.
    Uid,
    /// A device id (under every appcode unless `--appcode`).
    Device,
    /// An IP address or CIDR network, IPv4 or IPv6 (every connection unless `--appcode`).
    Ip,
    /// A whole appcode: `--appcode`, no value.
    Appcode,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Uid => "uid",
            Kind::Device => "device",
            Kind::Ip => "ip",
            Kind::Appcode => "appcode",
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct BanArgs {
    /// What to ban: uid, device, ip or appcode.
    #[arg(value_enum)]
    kind: Kind,
    /// The uid, device id, IP address or CIDR network (none for an appcode).
    value: Option<String>,
    /// The appcode (required for uid and appcode; 0 = every appcode).
    #[arg(long, default_value_t = 0)]
    appcode: u32,
    /// Why (kept for operators; clients never see it).
    #[arg(long, default_value = "")]
    reason: String,
    /// Lifetime in seconds; without it the entry stays until `longlink unban`.
    #[arg(long)]
    ttl_secs: Option<u64>,
    /// An allow entry (ip only): once any exists for a scope, only its addresses get in there.
    #[arg(long)]
    allow: bool,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiOpts,
}

#[derive(Debug, Args)]
pub(crate) struct UnbanArgs {
    /// The entry id (`longlink bans` lists them).
    id: u64,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiOpts,
}

#[derive(Debug, Args)]
pub(crate) struct BansArgs {
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiOpts,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    id: u64,
    kind: String,
    action: String,
    appcode: u32,
    value: String,
    reason: String,
    created_at_ms: u64,
    expires_at_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entries {
    bans: Vec<Entry>,
}

impl Entry {
    /// `deny uid 129:alice`, `allow ip 10.0.0.0/8 (every appcode)`.
    fn what(&self) -> String {
        let target = match (self.kind.as_str(), self.appcode) {
            ("appcode", appcode) => appcode.to_string(),
            ("uid", appcode) => format!("{appcode}:{}", self.value),
            (_, 0) => format!("{} (every appcode)", self.value),
            (_, appcode) => format!("{} (appcode {appcode})", self.value),
        };
        format!("{} {} {target}", self.action, self.kind)
    }

    fn until(&self) -> String {
        if self.expires_at_ms == 0 {
            "never".to_owned()
        } else {
            utc_ms(self.expires_at_ms)
        }
    }
}

pub(crate) async fn ban(args: BanArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let mut body = serde_json::json!({
        "kind": args.kind.name(),
        "action": if args.allow { "allow" } else { "deny" },
        "appcode": args.appcode,
        "value": args.value.unwrap_or_default(),
        "reason": args.reason,
    });
    if let Some(ttl) = args.ttl_secs {
        body["ttl_secs"] = ttl.into();
    }
    let entry: Entry = api.post(&["v1", "bans"], &body).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entry)?);
    } else {
        println!("ban {}: {} until {}", entry.id, entry.what(), entry.until());
    }
    Ok(())
}

pub(crate) async fn unban(args: UnbanArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let entry: Entry = api.delete(&["v1", "bans", &args.id.to_string()]).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entry)?);
    } else {
        println!("removed ban {}: {}", entry.id, entry.what());
    }
    Ok(())
}

pub(crate) async fn bans(args: BansArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let entries: Entries = api
        .get(&["v1", "bans"], &[], std::time::Duration::ZERO)
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    if entries.bans.is_empty() {
        println!("no bans");
        return Ok(());
    }
    println!(
        "{:>6}  {:<6} {:<8} {:>7}  {:<40} {:<24}  REASON",
        "ID", "ACTION", "KIND", "APPCODE", "VALUE", "UNTIL"
    );
    for entry in &entries.bans {
        println!(
            "{:>6}  {:<6} {:<8} {:>7}  {:<40} {:<24}  {}",
            entry.id,
            entry.action,
            entry.kind,
            entry.appcode,
            entry.value,
            entry.until(),
            entry.reason
        );
    }
    Ok(())
}
