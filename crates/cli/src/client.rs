//! `longlink client …`: a terminal client over the SDK — send, c2s, pull, listen, history,
//! chat.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use longlink_sdk::{
    Client, ClientConfig, Content, Event, HistoryDirection, Incoming, Message, UserRef,
};
use tokio::io::AsyncBufReadExt;

use crate::token::mint;

#[derive(Debug, Subcommand)]
pub(crate) enum ClientCommand {
    /// Sends c2c text; prints one line per acknowledged message.
    Send(SendArgs),
    /// Sends a c2s message (to the business servers consuming its topic); prints the topic.
    C2s(C2sArgs),
    /// Prints every offline message (pages of 50 until none is left), one per line.
    Pull(PullArgs),
    /// Stays connected and prints each message as it arrives.
    Listen(ListenArgs),
    /// Prints one conversation's history, both directions, oldest first.
    History(HistoryArgs),
    /// An interactive chat with one peer in the terminal.
    Chat(ChatArgs),
}

/// Who this client is and where it connects.
#[derive(Debug, Args)]
pub(crate) struct Identity {
    /// Gate address.
    #[arg(long, default_value = "127.0.0.1:7700")]
    server: String,
    /// This user's appcode.
    #[arg(long)]
    appcode: u32,
    /// This user's uid.
    #[arg(long)]
    uid: String,
    /// Device id: one session per (appcode, uid, device), and offline messages are
    /// acknowledged per device. Default: `cli-<subcommand>` (cli-send, cli-c2s, cli-pull,
    /// cli-listen, cli-history, cli-chat), so a one-shot `send` never kicks your `listen` or
    /// `chat`.
    #[arg(long)]
    device: Option<String>,
    /// Login token; without it a development token is minted from the config.
    #[arg(long, env = "LONGLINK_TOKEN")]
    token: Option<String>,
    /// Config whose secrets mint the development token (default: the embedded defaults).
    #[arg(long, env = "LONGLINK_CONFIG")]
    config: Option<PathBuf>,
    /// Seconds to wait for each answer from the server.
    #[arg(long, default_value_t = 10)]
    request_timeout_secs: u64,
    /// Speak TLS to the gate (needs --ca).
    #[arg(long)]
    tls: bool,
    /// PEM file of the CA that signed the gate's certificate (e.g. ca.pem from
    /// `longlink cert dev`); implies --tls.
    #[arg(long, env = "LONGLINK_TLS_CA")]
    ca: Option<PathBuf>,
    /// The name the gate's certificate must carry (default: the host of --server).
    #[arg(long)]
    tls_server_name: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    identity: Identity,
    /// Receiver as APPCODE:UID.
    #[arg(long)]
    to: UserRef,
    /// The text to send.
    text: String,
    /// Send it this many times (numbered when N > 1).
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Client message id: a retry with the same id returns the same msgid. With --count N
    /// the ids are ID-1 … ID-N.
    #[arg(long)]
    client_msg_id: Option<String>,
    /// Print JSON lines.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct C2sArgs {
    #[command(flatten)]
    identity: Identity,
    /// Business message type: with the appcode it picks the topic (the routing table).
    #[arg(long)]
    msgtype: u32,
    /// The payload, as text.
    text: String,
    /// Client message id: the server's dedup key, and what makes a retry after a lost answer
    /// safe. Default: one made up for this call.
    #[arg(long)]
    client_msg_id: Option<String>,
    /// Print a JSON line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    #[command(flatten)]
    identity: Identity,
    /// Print JSON lines.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ListenArgs {
    #[command(flatten)]
    identity: Identity,
    /// Print JSON lines.
    #[arg(long)]
    json: bool,
    /// Exit after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Exit after this many seconds (non-zero exit if --count was not reached).
    #[arg(long)]
    timeout_secs: Option<u64>,
}

#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    #[command(flatten)]
    identity: Identity,
    /// The other user, as APPCODE:UID.
    #[arg(long)]
    with: UserRef,
    /// Print JSON lines.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ChatArgs {
    #[command(flatten)]
    identity: Identity,
    /// The other user, as APPCODE:UID.
    #[arg(long)]
    to: UserRef,
}

pub(crate) async fn run(command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Send(args) => send(args).await,
        ClientCommand::C2s(args) => c2s(args).await,
        ClientCommand::Pull(args) => pull(args).await,
        ClientCommand::Listen(args) => listen(args).await,
        ClientCommand::History(args) => history(args).await,
        ClientCommand::Chat(args) => chat(args).await,
    }
}

async fn connect(identity: &Identity, subcommand: &str) -> anyhow::Result<(Client, Incoming)> {
    connect_with(identity, subcommand, true).await
}

async fn connect_with(
    identity: &Identity,
    subcommand: &str,
    auto_ack: bool,
) -> anyhow::Result<(Client, Incoming)> {
    let token = match &identity.token {
        Some(token) => token.clone(),
        None => mint(
            identity.config.as_deref(),
            identity.appcode,
            &identity.uid,
            3600,
        )?,
    };
    let device = identity
        .device
        .clone()
        .unwrap_or_else(|| format!("cli-{subcommand}"));
    let mut config = ClientConfig::new(&identity.server, identity.appcode, token, device);
    config.request_timeout = Duration::from_secs(identity.request_timeout_secs.max(1));
    config.auto_ack = auto_ack;
    config.tls = match (&identity.ca, identity.tls) {
        (Some(ca), _) => Some(longlink_sdk::TlsConfig {
            server_name: identity.tls_server_name.clone(),
            ..longlink_sdk::TlsConfig::ca_file(ca)
        }),
        (None, true) => bail!("--tls needs --ca FILE: the CA that signed the gate's certificate"),
        (None, false) => None,
    };
    Client::connect(config)
        .await
        .with_context(|| format!("cannot log in to {}", identity.server))
}

async fn send(args: SendArgs) -> anyhow::Result<()> {
    let (client, _incoming) = connect(&args.identity, "send").await?;
    for i in 1..=args.count.max(1) {
        let text = if args.count > 1 {
            format!("{} {i}", args.text)
        } else {
            args.text.clone()
        };
        let receipt = match &args.client_msg_id {
            Some(id) if args.count > 1 => {
                client
                    .c2c_with_id(args.to.clone(), &format!("{id}-{i}"), Content::Text(text))
                    .await
            }
            Some(id) => {
                client
                    .c2c_with_id(args.to.clone(), id, Content::Text(text))
                    .await
            }
            None => client.c2c(args.to.clone(), Content::Text(text)).await,
        }
        .with_context(|| format!("send {i} to {} failed", args.to))?;
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "msgid": receipt.msgid,
                    "client_msg_id": receipt.client_msg_id,
                    "duplicate": receipt.duplicate,
                    "senddate_ms": receipt.senddate_ms,
                })
            );
        } else {
            println!(
                "sent msgid={} client_msg_id={}{}",
                receipt.msgid,
                receipt.client_msg_id,
                if receipt.duplicate {
                    " (duplicate: already stored)"
                } else {
                    ""
                }
            );
        }
    }
    client.close().await;
    Ok(())
}

async fn c2s(args: C2sArgs) -> anyhow::Result<()> {
    let (client, _incoming) = connect(&args.identity, "c2s").await?;
    // The SDK retries a request after a reconnect only when it carries a client message id
    // (the server dedups on it), so one is always sent.
    let client_msg_id = args.client_msg_id.clone().unwrap_or_else(|| {
        format!(
            "cli-{}-{}",
            longlink_sdk::longlink_proto::unix_ms(),
            std::process::id()
        )
    });
    let topic = client
        .c2s(
            args.msgtype,
            bytes::Bytes::from(args.text.clone().into_bytes()),
            &client_msg_id,
        )
        .await
        .with_context(|| format!("c2s msgtype {} failed", args.msgtype))?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "topic": topic, "client_msg_id": client_msg_id })
        );
    } else {
        println!("{topic}");
    }
    client.close().await;
    Ok(())
}

async fn pull(args: PullArgs) -> anyhow::Result<()> {
    // Acks are sent only after the messages are printed: what the login redelivery pushes
    // meanwhile stays unacknowledged, so the pull below returns it.
    let (client, _incoming) = connect_with(&args.identity, "pull", false).await?;
    let messages = client.pull_all_offline().await.context("pull failed")?;
    for message in &messages {
        print_message(message, args.json);
    }
    for chunk in messages.chunks(500) {
        let ids: Vec<u64> = chunk.iter().map(|m| m.msgid).collect();
        client.ack(&ids).await.context("ack failed")?;
    }
    client.close().await;
    Ok(())
}

async fn listen(args: ListenArgs) -> anyhow::Result<()> {
    let (client, mut incoming) = connect(&args.identity, "listen").await?;
    if !args.json {
        eprintln!(
            "listening as {}:{} (Ctrl-C to stop)",
            args.identity.appcode,
            client.uid()
        );
    }
    let deadline = args
        .timeout_secs
        .map(|secs| tokio::time::Instant::now() + Duration::from_secs(secs));
    let mut received = 0u64;
    loop {
        if args.count.is_some_and(|count| received >= count) {
            break;
        }
        let event = match deadline {
            Some(deadline) => {
                match tokio::time::timeout_at(deadline, incoming.next_event()).await {
                    Ok(event) => event,
                    Err(_) => {
                        if let Some(count) = args.count {
                            bail!("timed out after {received} of {count} messages");
                        }
                        break;
                    }
                }
            }
            None => incoming.next_event().await,
        };
        if let Some(message) = message_or_end(event)? {
            received += 1;
            print_message(&message, args.json);
        }
    }
    client.close().await;
    Ok(())
}

/// The message of `event`; other events are reported on stderr (kicks and reconnects: the
/// SDK moves on its own after a KICK RECONNECT, and a kick that ends the session is followed
/// by Closed) or end the command (closed).
fn message_or_end(event: Option<Event>) -> anyhow::Result<Option<Message>> {
    match event {
        Some(Event::Message(message)) => return Ok(Some(message)),
        Some(Event::Kicked { reason, message }) => {
            eprintln!("kicked ({}): {message}", reason.as_str_name());
        }
        Some(Event::Error { code, message }) => eprintln!("server error {code:?}: {message}"),
        Some(Event::Closed { reason }) => bail!("connection closed: {reason}"),
        Some(Event::Disconnected { reason }) => eprintln!("disconnected ({reason}); reconnecting…"),
        Some(Event::Reconnected { resumed, .. }) => {
            eprintln!(
                "{}",
                if resumed {
                    "reconnected (resumed)"
                } else {
                    "reconnected"
                }
            );
        }
        Some(_) => {}
        None => bail!("connection closed"),
    }
    Ok(None)
}

async fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let (client, _incoming) = connect(&args.identity, "history").await?;
    let mut cursor = 0;
    loop {
        let page = client
            .history(args.with.clone(), cursor, HistoryDirection::Newer, 0)
            .await
            .context("history failed")?;
        for message in &page.messages {
            print_message(message, args.json);
        }
        if !page.more {
            break;
        }
        cursor = page.next_cursor;
    }
    client.close().await;
    Ok(())
}

async fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let (client, mut incoming) = connect(&args.identity, "chat").await?;
    let me = format!("{}:{}", args.identity.appcode, client.uid());
    println!(
        "chatting as {me} with {}; type a line and press Enter, Ctrl-D to quit",
        args.to
    );
    for message in client.pull_all_offline().await.context("pull failed")? {
        print_chat_line(&message);
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line.context("reading stdin")? {
                Some(line) if line.trim().is_empty() => {}
                Some(line) => {
                    client.c2c(args.to.clone(), Content::Text(line)).await.context("send failed")?;
                }
                None => break,
            },
            event = incoming.next_event() => {
                if let Some(message) = message_or_end(event)? {
                    print_chat_line(&message);
                }
            }
        }
    }
    client.close().await;
    Ok(())
}

fn content_text(content: &Content) -> String {
    match content {
        Content::Text(text) | Content::Rich(text) => text.clone(),
        Content::Typing => "(typing…)".to_owned(),
        Content::Business { msgtype, bytes } => {
            format!("(business msgtype={msgtype}, {} bytes)", bytes.len())
        }
        Content::Unknown {
            content_type,
            msgtype,
            bytes,
        } => {
            // TEXT/RICH with a business msgtype (typical of s2c pushes) is still text.
            let texty = [
                longlink_sdk::ContentType::Text as i32,
                longlink_sdk::ContentType::Rich as i32,
            ]
            .contains(content_type);
            match std::str::from_utf8(bytes) {
                Ok(text) if texty => format!("[msgtype {msgtype}] {text}"),
                _ => format!(
                    "(unsupported content type {content_type}, {} bytes)",
                    bytes.len()
                ),
            }
        }
    }
}

fn print_chat_line(message: &Message) {
    println!(
        "[{}] {}: {}",
        message.msgid,
        message.from,
        content_text(&message.content)
    );
}

fn print_message(message: &Message, json: bool) {
    if json {
        let (content_type, msgtype, bytes) = message.content.clone().into_parts();
        let content = match &message.content {
            Content::Text(text) | Content::Rich(text) => serde_json::Value::String(text.clone()),
            _ => serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned()),
        };
        println!(
            "{}",
            serde_json::json!({
                "msgid": message.msgid,
                "from_appcode": message.from.appcode,
                "from_uid": message.from.uid,
                "to_appcode": message.to.appcode,
                "to_uid": message.to.uid,
                "msgtype": msgtype,
                "content_type": content_type,
                "content": content,
                "senddate_ms": message.senddate_ms,
                "client_msg_id": message.client_msg_id,
                "from_device": message.from_device,
                "log_id": message.log_id,
            })
        );
    } else {
        println!(
            "[{}] {} -> {}: {}",
            message.msgid,
            message.from,
            message.to,
            content_text(&message.content)
        );
    }
}
