//! `longlink push …`: server-to-client messages through `POST /v1/push`, and their delivery
//! statistics through `GET /v1/push/{id}`.
//!
//! `push TEXT` and `push send TEXT` are the same command; `push stats ID` reads a push's
//! counters. The bare form keeps the common case short; the `send` spelling exists so a text
//! that happens to be `stats` or `send` can still be pushed (`push send stats`).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Api, ApiOpts, utc_ms};
use crate::{CliExit, EXIT_CONFIG};

/// Most uids in one `POST /v1/push` (docs/api.md); a longer list becomes several pushes.
const MAX_UIDS_PER_PUSH: usize = 100_000;
/// Recipients listed one by one in `push stats` (more are only counted by state).
const LISTED_RECIPIENTS: usize = 20;
/// How often `push stats --wait` asks again.
const WAIT_POLL: Duration = Duration::from_millis(200);

/// `longlink push`: a push (`push [send] …`) or its statistics (`push stats ID`).
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct PushCommand {
    #[command(subcommand)]
    command: Option<PushSubcommand>,
    // clap fills an optional flattened group only when the group lists its arguments, which it
    // does not for a struct that itself flattens another: so the API options sit beside it.
    #[command(flatten)]
    send: Option<PushArgs>,
    #[command(flatten)]
    api: ApiOpts,
}

#[derive(Debug, Subcommand)]
enum PushSubcommand {
    /// Pushes TEXT (the same as `push TEXT`).
    Send(SendArgs),
    /// Prints a push's delivery statistics.
    Stats(StatsArgs),
}

/// Who gets the push, what it says and how it is delivered.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("targets").required(true).args(["uid", "uids_file", "all"])))]
pub(crate) struct PushArgs {
    /// The recipients' appcode.
    #[arg(long)]
    appcode: u32,
    /// Recipient uid(s): repeat the flag or separate them with commas.
    #[arg(long, value_delimiter = ',')]
    uid: Vec<String>,
    /// A file with one recipient uid per line (blank lines ignored); more than 100,000 uids
    /// become several pushes, one id each.
    #[arg(long)]
    uids_file: Option<PathBuf>,
    /// Every user of the appcode online when the push starts.
    #[arg(long)]
    all: bool,
    /// The message text.
    text: String,
    /// Business message type shown to the app.
    #[arg(long, default_value_t = 0)]
    msgtype: u32,
    /// How the app should read the content.
    #[arg(long, value_enum, default_value_t = ContentTypeArg::Text)]
    content_type: ContentTypeArg,
    /// Deliver to online sessions only (persist false); offline users never get it, unless
    /// they log in within --ttl-secs.
    #[arg(long)]
    online_only: bool,
    /// With --online-only: a user who logs in within this many seconds still gets it.
    #[arg(long)]
    ttl_secs: Option<u32>,
    /// Sender label shown to the app as from.uid (the server's default: "system").
    #[arg(long)]
    from: Option<String>,
    /// Print the API's JSON answer (one line per push).
    #[arg(long)]
    json: bool,
}

/// `push send`: the push's arguments and the API options.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    push: PushArgs,
    #[command(flatten)]
    api: ApiOpts,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ContentTypeArg {
    Text,
    Rich,
    Business,
}

impl ContentTypeArg {
    fn name(self) -> &'static str {
        match self {
            ContentTypeArg::Text => "text",
            ContentTypeArg::Rich => "rich",
            ContentTypeArg::Business => "business",
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// The push id `longlink push` printed.
    id: u64,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
    /// Ask again until the fan-out is done (at most --timeout-secs).
    #[arg(long)]
    wait: bool,
    /// With --wait: give up (exit 1, printing the last figures) after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
    #[command(flatten)]
    api: ApiOpts,
}

#[derive(Debug, Serialize)]
struct PushRequest<'a> {
    appcode: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    uids: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    all: Option<bool>,
    msgtype: u32,
    content: &'a str,
    content_type: &'static str,
    persist: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_secs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Accepted {
    push_id: u64,
    targets: u64,
}

/// `GET /v1/push/{id}` (docs/api.md); only what the table shows is read, `--json` prints the
/// answer as it came.
#[derive(Debug, Deserialize)]
struct Stats {
    push_id: u64,
    appcode: u32,
    msgtype: u32,
    persist: bool,
    ttl_secs: u32,
    msgid: String,
    created_ms: u64,
    finished_ms: u64,
    done: bool,
    targets: u64,
    online: u64,
    written: u64,
    acked: u64,
    stored_offline: u64,
    expired: u64,
    failed: u64,
    stale_sessions: u64,
    delivery_rate: f64,
    #[serde(default)]
    recipients: Vec<Recipient>,
}

#[derive(Debug, Deserialize)]
struct Recipient {
    uid: String,
    state: String,
    sessions: u32,
}

/// Runs `longlink push …`.
pub(crate) async fn push(command: PushCommand) -> anyhow::Result<()> {
    match (command.command, command.send) {
        (Some(PushSubcommand::Stats(args)), _) => stats(args).await,
        (Some(PushSubcommand::Send(args)), _) => send(args.push, &args.api).await,
        (None, Some(args)) => send(args, &command.api).await,
        // clap requires the push's arguments when no subcommand is given.
        (None, None) => {
            Err(CliExit(EXIT_CONFIG, "push: nothing to do (see --help)".to_owned()).into())
        }
    }
}

async fn send(args: PushArgs, api: &ApiOpts) -> anyhow::Result<()> {
    if args.ttl_secs.is_some() && !args.online_only {
        return Err(CliExit(
            EXIT_CONFIG,
            "--ttl-secs applies to --online-only pushes (a persisted push waits in the inbox)"
                .to_owned(),
        )
        .into());
    }
    let api = Api::new(api)?;
    let uids = match &args.uids_file {
        Some(path) => Some(read_uids(path)?),
        None if args.all => None,
        None => Some(dedup(args.uid.iter().map(|uid| uid.trim().to_owned()))),
    };
    if uids.as_ref().is_some_and(Vec::is_empty) {
        return Err(CliExit(EXIT_CONFIG, "no recipient uid given".to_owned()).into());
    }
    let request = |uids| PushRequest {
        appcode: args.appcode,
        uids,
        all: args.all.then_some(true),
        msgtype: args.msgtype,
        content: &args.text,
        content_type: args.content_type.name(),
        persist: !args.online_only,
        ttl_secs: args.ttl_secs,
        from: args.from.as_deref(),
    };
    let chunks: Vec<Option<&[String]>> = match &uids {
        Some(uids) => uids.chunks(MAX_UIDS_PER_PUSH).map(Some).collect(),
        None => vec![None],
    };
    for chunk in chunks {
        let accepted: serde_json::Value = api.post(&["v1", "push"], &request(chunk)).await?;
        if args.json {
            println!("{accepted}");
        } else {
            let accepted: Accepted =
                serde_json::from_value(accepted).context("unexpected answer to POST /v1/push")?;
            println!(
                "push {} accepted: {} target{}",
                accepted.push_id,
                accepted.targets,
                if accepted.targets == 1 { "" } else { "s" }
            );
        }
    }
    Ok(())
}

/// The uids of a file, one per line, trimmed, blank lines skipped, first occurrence kept.
fn read_uids(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        CliExit(
            EXIT_CONFIG,
            format!("--uids-file {}: {err}", path.display()),
        )
    })?;
    Ok(dedup(text.lines().map(|line| line.trim().to_owned())))
}

/// Non-empty uids, duplicates dropped (the server ignores them within one push; across the
/// pushes of a long list they would be sent twice).
fn dedup(uids: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    uids.filter(|uid| !uid.is_empty() && seen.insert(uid.clone()))
        .collect()
}

async fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let id = args.id.to_string();
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let (raw, stats) = loop {
        let raw: serde_json::Value = api.get(&["v1", "push", &id], &[], Duration::ZERO).await?;
        let stats: Stats = serde_json::from_value(raw.clone())
            .with_context(|| format!("unexpected answer to GET /v1/push/{id}"))?;
        if !args.wait || stats.done || Instant::now() >= deadline {
            break (raw, stats);
        }
        tokio::time::sleep(WAIT_POLL).await;
    };
    if args.json {
        println!("{raw}");
    } else {
        print_stats(&stats);
    }
    if args.wait && !stats.done {
        anyhow::bail!(
            "push {} still not done after {} s (--timeout-secs)",
            stats.push_id,
            args.timeout_secs
        );
    }
    Ok(())
}

fn print_stats(s: &Stats) {
    let delivery = if s.persist {
        "persisted".to_owned()
    } else if s.ttl_secs > 0 {
        format!("online only, TTL {} s", s.ttl_secs)
    } else {
        "online only".to_owned()
    };
    println!(
        "push {}  appcode {}  msgtype {}  {delivery}  msgid {}",
        s.push_id, s.appcode, s.msgtype, s.msgid
    );
    if s.done {
        println!(
            "created {}, done after {} ms",
            utc_ms(s.created_ms),
            s.finished_ms.saturating_sub(s.created_ms)
        );
    } else {
        println!("created {}, still fanning out", utc_ms(s.created_ms));
    }
    let share = |n: u64| {
        if s.targets == 0 {
            String::new()
        } else {
            format!("{:>6.1}%", n as f64 * 100.0 / s.targets as f64)
        }
    };
    let rows = [
        ("targets", s.targets, "users the push was for"),
        (
            "online",
            s.online,
            "had a session when the push reached them",
        ),
        ("written", s.written, "written to at least one socket"),
        ("acked", s.acked, "a device sent MSG_ACK"),
        (
            "stored offline",
            s.stored_offline,
            "not reached online, in the inbox",
        ),
        (
            "expired",
            s.expired,
            "online only, not reached within the TTL",
        ),
        ("failed", s.failed, "neither reached nor stored"),
        (
            "stale sessions",
            s.stale_sessions,
            "sessions gone from the gate (cleared)",
        ),
    ];
    for (name, value, meaning) in rows {
        let share = if name == "targets" || name == "stale sessions" {
            " ".repeat(7)
        } else {
            share(value)
        };
        println!("  {name:<15}{value:>10} {share}  {meaning}");
    }
    println!(
        "  {:<15}{:>10.3}          acked / targets",
        "delivery rate", s.delivery_rate
    );
    if s.recipients.is_empty() {
        return;
    }
    let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
    for recipient in &s.recipients {
        *by_state.entry(recipient.state.as_str()).or_default() += 1;
    }
    let summary: Vec<String> = by_state
        .iter()
        .map(|(state, count)| format!("{count} {state}"))
        .collect();
    println!(
        "recipients ({}): {}",
        s.recipients.len(),
        summary.join(", ")
    );
    for recipient in s.recipients.iter().take(LISTED_RECIPIENTS) {
        println!(
            "  {:<24} {:<15} {} session{}",
            recipient.uid,
            recipient.state,
            recipient.sessions,
            if recipient.sessions == 1 { "" } else { "s" }
        );
    }
    if s.recipients.len() > LISTED_RECIPIENTS {
        println!(
            "  … and {} more (--json lists them all)",
            s.recipients.len() - LISTED_RECIPIENTS
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_trimmed_and_deduplicated_in_order() {
        let uids = dedup(
            ["b", " a ", "", "b", "c"]
                .iter()
                .map(|uid| uid.trim().to_owned()),
        );
        assert_eq!(uids, ["b", "a", "c"]);
    }
}
