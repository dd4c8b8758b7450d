//! Run with: `cargo run -p longlink-sdk --example chat -- <addr> <appcode> <uid> <token> <peer>`
//! (or set LONGLINK_ADDR, LONGLINK_APPCODE, LONGLINK_UID, LONGLINK_TOKEN, LONGLINK_PEER), where
//! `<peer>` is `<appcode>:<uid>`, e.g. `130:bob`. Mint tokens with
//! `longlink token --appcode 129 --uid alice`.
//!
//! A terminal chat: every line typed on stdin is sent to the peer; incoming messages are
//! printed as they arrive. `/history` shows the last messages of the conversation, `/quit`
//! logs out.

use std::io::BufRead;

use longlink_sdk::{Client, ClientConfig, Content, Event, HistoryDirection, Message, UserRef};

fn arg(args: &[String], index: usize, env: &str, default: Option<&str>) -> anyhow::Result<String> {
    if let Some(value) = args.get(index) {
        return Ok(value.clone());
    }
    if let Ok(value) = std::env::var(env) {
        return Ok(value);
    }
    default.map(str::to_owned).ok_or_else(|| {
        anyhow::anyhow!(
            "missing argument {index} (or ${env}); usage: chat <addr> <appcode> <uid> <token> <peer>"
        )
    })
}

fn show(message: &Message) {
    let text = match &message.content {
        Content::Text(text) | Content::Rich(text) => text.clone(),
        Content::Typing => "(typing…)".to_owned(),
        Content::Business { msgtype, bytes } => {
            format!("(business msgtype {msgtype}, {} bytes)", bytes.len())
        }
        Content::Unknown { content_type, .. } => {
            format!("(unsupported content type {content_type})")
        }
    };
    println!("[{}] {}: {text}", message.msgid, message.from);
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = arg(&args, 0, "LONGLINK_ADDR", Some("127.0.0.1:7700"))?;
    let appcode: u32 = arg(&args, 1, "LONGLINK_APPCODE", Some("129"))?.parse()?;
    let uid = arg(&args, 2, "LONGLINK_UID", None)?;
    let token = arg(&args, 3, "LONGLINK_TOKEN", None)?;
    let peer: UserRef = arg(&args, 4, "LONGLINK_PEER", None)?.parse()?;

    let config = ClientConfig::new(addr, appcode, token, format!("{uid}-chat"));
    let (client, mut incoming) = Client::connect(config).await?;
    println!(
        "logged in as {appcode}:{}; chatting with {peer}",
        client.uid()
    );

    // Offline messages come first on `incoming` (the client catches up by itself).

    // Incoming events in their own task, so that the queue is always drained.
    let printer = tokio::spawn(async move {
        while let Some(event) = incoming.next_event().await {
            match event {
                Event::Message(message) => show(&message),
                Event::Kicked { reason, message } => {
                    println!("kicked ({}): {message}", reason.as_str_name());
                }
                Event::Error { code, message } => {
                    eprintln!("server error {}: {message}", code.as_str_name());
                }
                Event::Disconnected { reason } => {
                    println!("disconnected ({reason}); reconnecting");
                }
                Event::Reconnected {
                    session_id,
                    resumed,
                } => {
                    println!("reconnected (session {session_id}, resumed: {resumed})");
                }
                Event::Closed { reason } => println!("connection closed: {reason}"),
                other => println!("{other:?}"),
            }
        }
    });

    // Blocking stdin lines on a plain thread, handed over through a channel.
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });

    while let Some(line) = lines.recv().await {
        match line.trim() {
            "" => {}
            "/quit" => break,
            "/history" => {
                let page = client
                    .history(peer.clone(), 0, HistoryDirection::Older, 20)
                    .await?;
                for message in page.messages.iter().rev() {
                    show(message);
                }
            }
            text => match client.c2c(peer.clone(), Content::text(text)).await {
                Ok(receipt) => println!("(sent, msgid {})", receipt.msgid),
                Err(err) => eprintln!("send failed: {err}"),
            },
        }
        if client.is_closed() {
            break;
        }
    }
    if let Err(err) = client.logout().await {
        eprintln!("logout: {err}");
    }
    printer.await?;
    Ok(())
}
