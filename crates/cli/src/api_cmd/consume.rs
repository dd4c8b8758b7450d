//! `longlink consume`: reads a c2s topic like a business server does — long-polls
//! `GET /v1/consume`, prints each message, then acks it with `POST /v1/consume/ack`.
//!
//! Acks go out only after the messages are printed (and stdout flushed): a message the CLI
//! could not show stays leased and comes back after its lease, never lost. The CLI asks for
//! at most the number of messages it still wants, so `--count 1` leases one message, not a
//! page it would then leave to time out.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Api, ApiOpts};

/// Most messages asked for in one long-poll.
const PAGE: u64 = 100;
/// Longest long-poll the API allows (`wait_secs` 0..=60).
const MAX_POLL_SECS: u64 = 60;
/// Long-poll length when no --wait-secs bounds it.
const DEFAULT_POLL_SECS: u64 = 20;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["topic", "appcode"])))]
pub(crate) struct ConsumeArgs {
    /// The topic to read.
    #[arg(long, conflicts_with_all = ["appcode", "msgtype"])]
    topic: Option<String>,
    /// With --msgtype: the topic the routing table gives this (appcode, msgtype).
    #[arg(long, requires = "msgtype")]
    appcode: Option<u32>,
    /// With --appcode: the message type.
    #[arg(long, requires = "appcode")]
    msgtype: Option<u32>,
    /// Stop after this many messages (default: run until Ctrl-C or --wait-secs).
    #[arg(long)]
    count: Option<u64>,
    /// Stop once this many seconds pass without a message (0: take what is ready and stop).
    #[arg(long)]
    wait_secs: Option<u64>,
    /// Lease of each message: not acked within it, it is delivered again (server default
    /// when absent).
    #[arg(long)]
    lease_secs: Option<u32>,
    /// Print without acking: the messages come back once their lease runs out.
    #[arg(long)]
    no_ack: bool,
    /// Print each message as the API's JSON object, one per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiOpts,
}

#[derive(Debug, Deserialize)]
struct Page {
    topic: String,
    messages: Vec<serde_json::Value>,
}

/// The fields of a consumed message the plain output shows.
#[derive(Debug, Deserialize)]
struct Message {
    id: u64,
    attempt: u32,
    appcode: u32,
    uid: String,
    device: String,
    msgtype: u32,
    log_id: String,
    body: Option<String>,
    body_base64: String,
}

#[derive(Debug, Serialize)]
struct Ack<'a> {
    topic: &'a str,
    ids: &'a [u64],
}

/// Runs `longlink consume`.
pub(crate) async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let mut selector: Vec<(&str, String)> = match (&args.topic, args.appcode, args.msgtype) {
        (Some(topic), _, _) => vec![("topic", topic.clone())],
        (None, Some(appcode), Some(msgtype)) => vec![
            ("appcode", appcode.to_string()),
            ("msgtype", msgtype.to_string()),
        ],
        // clap requires --topic or --appcode with --msgtype.
        _ => anyhow::bail!("give --topic, or --appcode with --msgtype"),
    };
    if let Some(lease) = args.lease_secs {
        selector.push(("lease_secs", lease.to_string()));
    }
    let idle = args.wait_secs.map(Duration::from_secs);
    let mut idle_until = idle.map(|idle| Instant::now() + idle);
    let mut received = 0u64;
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let wanted = match args.count {
            Some(count) if received >= count => break,
            Some(count) => (count - received).min(PAGE),
            None => PAGE,
        };
        let poll_secs = match idle_until {
            // Round up: a poll that ends before the idle deadline would only be repeated.
            Some(until) => {
                let left = until.saturating_duration_since(Instant::now());
                (left.as_millis().div_ceil(1000) as u64).min(MAX_POLL_SECS)
            }
            None => DEFAULT_POLL_SECS,
        };
        let mut query = selector.clone();
        query.push(("max", wanted.to_string()));
        query.push(("wait_secs", poll_secs.to_string()));
        let page: Page = tokio::select! {
            page = api.get(&["v1", "consume"], &query, Duration::from_secs(poll_secs)) => page?,
            _ = &mut ctrl_c => break,
        };
        let mut ids = Vec::with_capacity(page.messages.len());
        {
            let mut out = std::io::stdout().lock();
            for raw in &page.messages {
                let message: Message = serde_json::from_value(raw.clone())
                    .context("unexpected message in the consume answer")?;
                ids.push(message.id);
                if args.json {
                    writeln!(out, "{raw}")?;
                } else {
                    writeln!(out, "{}", plain(&message))?;
                }
            }
            out.flush()?;
        }
        received += ids.len() as u64;
        if !ids.is_empty() {
            if !args.no_ack {
                let _: serde_json::Value = api
                    .post(
                        &["v1", "consume", "ack"],
                        &Ack {
                            topic: &page.topic,
                            ids: &ids,
                        },
                    )
                    .await?;
            }
            idle_until = idle.map(|idle| Instant::now() + idle);
        } else if idle_until.is_some_and(|until| Instant::now() >= until) {
            if !args.json {
                eprintln!(
                    "no message for {} s; {received} consumed",
                    args.wait_secs.unwrap_or(0)
                );
            }
            break;
        }
    }
    Ok(())
}

/// One line: id, attempt, sender, msgtype, log id, body.
fn plain(m: &Message) -> String {
    let body = match &m.body {
        Some(text) => text.replace(['\n', '\r'], " "),
        None => format!("(base64) {}", m.body_base64),
    };
    format!(
        "[{}] attempt {} from {}:{}/{} msgtype {} log {}: {body}",
        m.id, m.attempt, m.appcode, m.uid, m.device, m.msgtype, m.log_id
    )
}
