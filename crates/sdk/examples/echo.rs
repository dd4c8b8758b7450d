//! Run with: `cargo run -p longlink-sdk --example echo -- <addr> <appcode> <uid> <token>`
//! (or set LONGLINK_ADDR, LONGLINK_APPCODE, LONGLINK_UID, LONGLINK_TOKEN). Mint a token with
//! `longlink token --appcode 129 --uid echo-bot`.
//!
//! An echo bot: it logs in, pulls what arrived while it was offline, then answers every
//! text message with the same text, prefixed by "echo: ".

use longlink_sdk::{Client, ClientConfig, Content, Event, Message};

fn arg(args: &[String], index: usize, env: &str, default: Option<&str>) -> anyhow::Result<String> {
    if let Some(value) = args.get(index) {
        return Ok(value.clone());
    }
    if let Ok(value) = std::env::var(env) {
        return Ok(value);
    }
    default.map(str::to_owned).ok_or_else(|| {
        anyhow::anyhow!(
            "missing argument {index} (or ${env}); usage: echo <addr> <appcode> <uid> <token>"
        )
    })
}

async fn answer(client: &Client, message: Message) -> anyhow::Result<()> {
    let Some(text) = message.content.as_text() else {
        return Ok(());
    };
    let receipt = client
        .c2c(message.from.clone(), Content::text(format!("echo: {text}")))
        .await?;
    println!(
        "{} said {text:?}; echoed as msgid {}",
        message.from, receipt.msgid
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = arg(&args, 0, "LONGLINK_ADDR", Some("127.0.0.1:7700"))?;
    let appcode: u32 = arg(&args, 1, "LONGLINK_APPCODE", Some("129"))?.parse()?;
    let uid = arg(&args, 2, "LONGLINK_UID", Some("echo-bot"))?;
    let token = arg(&args, 3, "LONGLINK_TOKEN", None)?;

    let config = ClientConfig::new(addr, appcode, token, format!("{uid}-echo"));
    let (client, mut incoming) = Client::connect(config).await?;
    println!(
        "logged in as {appcode}:{} (session {})",
        client.uid(),
        client.session_id()
    );

    // Offline messages come first on `incoming` (the client catches up by itself).
    while let Some(event) = incoming.next_event().await {
        match event {
            Event::Message(message) => {
                if let Err(err) = answer(&client, message).await {
                    eprintln!("could not echo: {err}");
                }
            }
            Event::Kicked { reason, message } => {
                println!("kicked ({}): {message}", reason.as_str_name());
            }
            Event::Error { code, message } => {
                eprintln!("server error {}: {message}", code.as_str_name());
            }
            Event::Disconnected { reason } => println!("disconnected ({reason}); reconnecting"),
            Event::Reconnected {
                session_id,
                resumed,
            } => println!("reconnected (session {session_id}, resumed: {resumed})"),
            Event::Closed { reason } => println!("connection closed: {reason}"),
            other => println!("{other:?}"),
        }
    }
    Ok(())
}
