//! Crash test (issue: c2c delivery guarantees): senders send c2c while the real `longlink
//! serve` process is `kill -9`ed and restarted several times. Afterwards every message whose
//! ACK a sender received must have been received exactly once by the receiving app (by push or
//! pull), in msgid order per conversation. Prints `sent / acked / received / lost / duplicated`.
//!
//! Bounded: by default 4 senders × 150 messages and 5 kills, within 240 s
//! (`LONGLINK_CRASH_MESSAGES` per sender, `LONGLINK_CRASH_KILLS` and `LONGLINK_CRASH_SECS`
//! override them for a longer soak).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use longlink_sdk::{Client, ClientConfig, Content, Event, UserRef};
use longlink_testkit::{ServeProcess, wait_until};
use tokio::sync::Mutex;

const BIN: &str = env!("CARGO_BIN_EXE_longlink");
const SENDERS: usize = 4;
const RECEIVERS: usize = 2;
/// Generous: the whole test must end by itself even if something hangs.
fn overall() -> Duration {
    Duration::from_secs(env_or("LONGLINK_CRASH_SECS", 240))
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn config(data: &Path, gate_port: u16, api_port: u16) -> String {
    longlink_server::DEFAULT_CONFIG
        .replace(
            "listen = \"127.0.0.1:7700\"",
            &format!("listen = \"127.0.0.1:{gate_port}\""),
        )
        .replace(
            "listen = \"127.0.0.1:7780\"",
            &format!("listen = \"127.0.0.1:{api_port}\""),
        )
        // No WebSocket listener: its default port would collide between tests.
        .replace("ws_listen = \"127.0.0.1:7701\"", "ws_listen = \"\"")
        .replace(
            "data_dir = \"./longlink-data\"",
            &format!("data_dir = {:?}", data.display().to_string()),
        )
}

fn token(appcode: u32, uid: &str) -> String {
    longlink_server::Config::default()
        .apps()
        .mint(appcode, uid, 3600)
        .expect("token")
}

fn client_config(addr: &str, appcode: u32, uid: &str) -> ClientConfig {
    let mut config = ClientConfig::new(addr, appcode, token(appcode, uid), "crash-test");
    config.request_timeout = Duration::from_secs(5);
    config.send_deadline = Duration::from_secs(120);
    config
}

/// What the receiving apps saw: per receiver, per conversation (sender uid), msgids in the
/// order the app got them.
type Seen = Arc<Mutex<HashMap<(usize, String), Vec<u64>>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_loses_no_acknowledged_message_and_shows_none_twice() {
    tokio::time::timeout(overall(), crash_run())
        .await
        .expect("crash test finished within its bound");
}

async fn crash_run() {
    let per_sender = env_or("LONGLINK_CRASH_MESSAGES", 150);
    let kills = env_or("LONGLINK_CRASH_KILLS", 5);
    let dir = tempfile::tempdir().unwrap();
    let (gate_port, api_port) = (free_port(), free_port());
    let config_text = config(&dir.path().join("data"), gate_port, api_port);
    let mut serve = ServeProcess::start(Path::new(BIN), dir.path(), &config_text)
        .await
        .expect("serve starts");
    let addr = serve.gate_addr().to_string();

    // Receivers: long-lived reconnecting clients recording what their app sees.
    let seen: Seen = Arc::new(Mutex::new(HashMap::new()));
    let mut receivers = Vec::new();
    for r in 0..RECEIVERS {
        let (client, mut incoming) = Client::connect(client_config(&addr, 130, &format!("r{r}")))
            .await
            .expect("receiver logs in");
        let seen = seen.clone();
        receivers.push(client);
        tokio::spawn(async move {
            while let Some(event) = incoming.next_event().await {
                if let Event::Message(message) = event {
                    seen.lock()
                        .await
                        .entry((r, message.from.uid.clone()))
                        .or_default()
                        .push(message.msgid);
                }
            }
        });
    }

    // Senders: each sends `per_sender` messages alternating between the receivers, with
    // stable client message ids; the SDK retries across crashes until acknowledged.
    let acked_count = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let addr = addr.clone();
        let acked_count = acked_count.clone();
        senders.push(tokio::spawn(async move {
            let uid = format!("s{s}");
            let (client, _incoming) = Client::connect(client_config(&addr, 129, &uid))
                .await
                .expect("sender logs in");
            let mut acked: BTreeMap<(usize, u64), u64> = BTreeMap::new();
            let mut failed = 0u64;
            for k in 0..per_sender {
                let r = (k as usize) % RECEIVERS;
                let id = format!("{uid}-{k}");
                match client
                    .c2c_with_id(
                        UserRef::new(130, format!("r{r}")),
                        &id,
                        Content::text(id.clone()),
                    )
                    .await
                {
                    Ok(receipt) => {
                        acked.insert((r, k), receipt.msgid);
                        acked_count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => failed += 1,
                }
            }
            client.close().await;
            (uid, acked, failed)
        }));
    }

    // The nemesis: kill -9 the server at spread-out points of the run, restart it on the
    // same ports and data.
    let total = per_sender * SENDERS as u64;
    let mut done_kills = 0;
    for i in 1..=kills {
        let at = total * i / (kills + 1);
        let progress = acked_count.clone();
        if wait_until(overall(), || {
            let progress = progress.clone();
            async move { progress.load(Ordering::Relaxed) >= at }
        })
        .await
        .is_err()
        {
            break;
        }
        serve.kill9().await.expect("kill -9");
        done_kills += 1;
        serve = ServeProcess::start(Path::new(BIN), dir.path(), &config_text)
            .await
            .expect("serve restarts");
    }

    let mut acked_by_conv: HashMap<(usize, String), BTreeSet<u64>> = HashMap::new();
    let mut failed_total = 0;
    for sender in senders {
        let (uid, acked, failed) = sender.await.expect("sender task");
        failed_total += failed;
        for ((r, _k), msgid) in acked {
            acked_by_conv
                .entry((r, uid.clone()))
                .or_default()
                .insert(msgid);
        }
    }
    let acked_total: usize = acked_by_conv.values().map(BTreeSet::len).sum();

    // Quiescence: wait until the receivers' apps saw every acknowledged message (or the
    // deadline, after which the counts below tell what is missing).
    let expected = acked_total;
    let _ = wait_until(Duration::from_secs(60), || {
        let seen = seen.clone();
        async move {
            let seen = seen.lock().await;
            let unique: usize = seen
                .values()
                .map(|v| v.iter().collect::<BTreeSet<_>>().len())
                .sum();
            unique >= expected
        }
    })
    .await;

    let seen = seen.lock().await;
    let mut received = 0;
    let mut duplicated = 0;
    let mut lost = 0;
    let mut out_of_order = 0;
    for (conv, msgids) in seen.iter() {
        received += msgids.len();
        let unique: BTreeSet<u64> = msgids.iter().copied().collect();
        duplicated += msgids.len() - unique.len();
        out_of_order += msgids.windows(2).filter(|w| w[0] >= w[1]).count();
        let _ = conv;
    }
    for (conv, acked) in &acked_by_conv {
        let got: BTreeSet<u64> = seen
            .get(conv)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default();
        lost += acked.difference(&got).count();
    }
    println!(
        "crash test: kills={done_kills} sent={total} acked={acked_total} failed={failed_total} \
         received={received} lost={lost} duplicated={duplicated} out_of_order={out_of_order}"
    );
    for client in receivers {
        client.close().await;
    }
    serve.kill9().await.ok();

    assert_eq!(done_kills, kills, "every planned kill happened");
    assert_eq!(lost, 0, "no acknowledged message may be lost");
    assert_eq!(duplicated, 0, "no message may be shown twice");
    assert_eq!(out_of_order, 0, "msgid order per conversation");
    assert_eq!(
        failed_total, 0,
        "every send was eventually acknowledged (retries with the same id)"
    );
}
