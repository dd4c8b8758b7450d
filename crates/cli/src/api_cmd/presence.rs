//! `longlink presence`: who is online, through `GET /v1/presence/{appcode}[/{uid}]` and
//! `POST /v1/presence/query` (docs/api.md).

use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use super::{Api, ApiOpts, utc_ms};

/// Most uids in one `POST /v1/presence/query` (docs/api.md); more are asked in several calls.
const MAX_QUERY_UIDS: usize = 1000;

#[derive(Debug, Args)]
pub(crate) struct PresenceArgs {
    /// The appcode.
    #[arg(long)]
    appcode: u32,
    /// A user's uid: repeat the flag (or separate with commas) for several users. Without it:
    /// the appcode's online user and session counts.
    #[arg(long, value_delimiter = ',')]
    uid: Vec<String>,
    /// Print the API's JSON answer (one line per call).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiOpts,
}

#[derive(Debug, Deserialize)]
struct User {
    uid: String,
    online: bool,
    #[serde(default)]
    sessions: Vec<Session>,
}

#[derive(Debug, Deserialize)]
struct Session {
    device: String,
    gate: String,
    session_id: String,
    since_ms: u64,
}

#[derive(Debug, Deserialize)]
struct Users {
    users: Vec<User>,
}

#[derive(Debug, Deserialize)]
struct Counts {
    appcode: u32,
    online_users: u64,
    sessions: u64,
}

#[derive(Debug, Serialize)]
struct Query<'a> {
    appcode: u32,
    uids: &'a [String],
}

/// Runs `longlink presence`.
pub(crate) async fn presence(args: PresenceArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let appcode = args.appcode.to_string();
    let uids: Vec<String> = args
        .uid
        .iter()
        .map(|uid| uid.trim().to_owned())
        .filter(|uid| !uid.is_empty())
        .collect();
    match uids.as_slice() {
        [] => {
            let raw: serde_json::Value = api
                .get(&["v1", "presence", &appcode], &[], Duration::ZERO)
                .await?;
            if args.json {
                println!("{raw}");
            } else {
                let counts: Counts = serde_json::from_value(raw)?;
                println!(
                    "appcode {}: {} user{} online, {} session{}",
                    counts.appcode,
                    counts.online_users,
                    plural(counts.online_users),
                    counts.sessions,
                    plural(counts.sessions)
                );
            }
        }
        [uid] => {
            let raw: serde_json::Value = api
                .get(&["v1", "presence", &appcode, uid], &[], Duration::ZERO)
                .await?;
            if args.json {
                println!("{raw}");
            } else {
                print_user(&serde_json::from_value(raw)?);
            }
        }
        uids => {
            for chunk in uids.chunks(MAX_QUERY_UIDS) {
                let raw: serde_json::Value = api
                    .post(
                        &["v1", "presence", "query"],
                        &Query {
                            appcode: args.appcode,
                            uids: chunk,
                        },
                    )
                    .await?;
                if args.json {
                    println!("{raw}");
                } else {
                    let users: Users = serde_json::from_value(raw)?;
                    for user in &users.users {
                        print_user(user);
                    }
                }
            }
        }
    }
    Ok(())
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn print_user(user: &User) {
    if !user.online {
        println!("{}  offline", user.uid);
        return;
    }
    println!(
        "{}  online  {} session{}",
        user.uid,
        user.sessions.len(),
        plural(user.sessions.len() as u64)
    );
    for session in &user.sessions {
        println!(
            "  device {}  on {}  session {}  since {}",
            session.device,
            session.gate,
            session.session_id,
            utc_ms(session.since_ms)
        );
    }
}
