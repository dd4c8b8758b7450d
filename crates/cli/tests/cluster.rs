//! Cluster mode (issue 7) with real processes: throwaway redis-server, postgres and
//! nats-server (`longlink-testservers`), then `longlink serve --roles …` processes, each with
//! its own data dir and free ports, so a process can be `kill -9`ed.
//!
//! - cross-gate chat: alice on gate A, bob on gate B; messages both ways, ACKs, and an offline
//!   pull after bob moves to gate A;
//! - a killed gate's sessions are purged from presence by the gate-detector, and a message to
//!   its user goes to the store;
//! - a killed logic process mid-traffic: with a second logic running, the senders' retries
//!   (same client_msg_id) succeed, and nothing ACKed is lost or shown twice.
//!
//! Every wait is a condition with a deadline; nothing sleeps for a fixed time.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use longlink_sdk::{Client, Content, Event};
use longlink_testkit::cluster::{
    Cluster, GATE_DEAD_SECS, HEARTBEAT_SECS, next_message, online, user,
};
use longlink_testkit::{WAIT, wait_until};
use tokio::sync::Mutex;

const BIN: &str = env!("CARGO_BIN_EXE_longlink");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cross_gate_chat_acks_and_offline_pull() {
    let mut cluster = Cluster::start(Path::new(BIN));
    cluster.spawn("logic-1", "logic").await;
    cluster.spawn("gate-a", "gate").await;
    cluster.spawn("gate-b", "gate").await;
    cluster.spawn("api-1", "api").await;
    let api = cluster.api("api-1");

    // The API lists both gates of the cluster (from their heartbeats).
    wait_until(WAIT, || async {
        let (status, body) = api.get("/v1/gates").await;
        assert_eq!(status, 200, "{body}");
        let text = body.to_string();
        text.contains("\"gate-a\"") && text.contains("\"gate-b\"")
    })
    .await
    .expect("/v1/gates lists gate-a and gate-b");

    let (alice, mut alice_in) = cluster.connect("gate-a", "alice", "phone").await;
    let (bob, mut bob_in) = cluster.connect("gate-b", "bob", "phone").await;

    // alice (gate A) → bob (gate B): stored, ACKed, pushed through the NATS gate subject.
    let sent = alice
        .c2c_with_id(user("bob"), "a-1", Content::text("hello bob"))
        .await
        .expect("alice's message is ACKed");
    assert!(sent.msgid > 0);
    let got = next_message(&mut bob_in).await;
    assert_eq!((got.msgid, got.from.uid.as_str()), (sent.msgid, "alice"));

    // And back.
    let reply = bob
        .c2c_with_id(user("alice"), "b-1", Content::text("hello alice"))
        .await
        .expect("bob's reply is ACKed");
    let got = next_message(&mut alice_in).await;
    assert_eq!((got.msgid, got.from.uid.as_str()), (reply.msgid, "bob"));

    // bob logs out; a message meanwhile waits in the store; he pulls it on the other gate.
    bob.logout().await.expect("bob logs out");
    drop(bob_in);
    wait_until(WAIT, || async { !online(&api, "bob").await })
        .await
        .expect("bob's session leaves presence");
    let away = alice
        .c2c_with_id(user("bob"), "a-2", Content::text("while you were away"))
        .await
        .expect("the offline message is ACKed");
    let mut config = cluster.client_config("gate-a", "bob", "phone");
    config.auto_ack = false;
    let (bob, _bob_in) = Client::connect(config)
        .await
        .expect("bob logs in on gate A");
    let pulled = bob.pull_all_offline().await.expect("bob pulls");
    let msgids: Vec<u64> = pulled.iter().map(|m| m.msgid).collect();
    assert!(
        msgids.contains(&away.msgid),
        "the message sent while bob was away ({}) is pulled on gate A: {msgids:?}",
        away.msgid
    );
    assert!(online(&api, "bob").await, "bob is online again (gate A)");

    alice.close().await;
    bob.close().await;
    cluster.terminate_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_gate_is_purged_from_presence_and_its_users_get_their_messages_later() {
    let mut cluster = Cluster::start(Path::new(BIN));
    cluster.spawn("logic-1", "logic").await;
    cluster.spawn("gate-a", "gate").await;
    cluster.spawn("gate-b", "gate").await;
    cluster.spawn("api-1", "api").await;
    let api = cluster.api("api-1");

    let (alice, _alice_in) = cluster.connect("gate-a", "alice", "phone").await;
    let mut bob_config = cluster.client_config("gate-b", "bob", "phone");
    bob_config.reconnect = None;
    let (bob, bob_in) = Client::connect(bob_config).await.expect("bob logs in on B");
    wait_until(WAIT, || async { online(&api, "bob").await })
        .await
        .expect("bob is online");

    cluster.kill9("gate-b").await;
    drop(bob_in);
    bob.close().await;
    // Nothing cleared bob's session but the gate-detector (no goodbye from a killed gate).
    wait_until(
        Duration::from_secs(GATE_DEAD_SECS + HEARTBEAT_SECS) + WAIT,
        || async { !online(&api, "bob").await },
    )
    .await
    .expect("the dead gate's sessions are purged from presence");
    wait_until(WAIT, || async {
        let (_, body) = api.get("/v1/gates").await;
        !body.to_string().contains("\"gate-b\"")
    })
    .await
    .expect("the dead gate leaves /v1/gates");

    let sent = alice
        .c2c_with_id(user("bob"), "to-dead-gate", Content::text("are you there?"))
        .await
        .expect("ACKed although bob's gate is gone");
    let mut config = cluster.client_config("gate-a", "bob", "phone");
    config.auto_ack = false;
    let (bob, _bob_in) = Client::connect(config)
        .await
        .expect("bob logs in on gate A");
    let pulled = bob.pull_all_offline().await.expect("bob pulls");
    assert!(
        pulled.iter().any(|m| m.msgid == sent.msgid),
        "the message to bob went to the store and is pulled on gate A"
    );
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_logic_process_mid_traffic_loses_and_duplicates_nothing_acked() {
    const MESSAGES: usize = 60;
    let mut cluster = Cluster::start(Path::new(BIN));
    cluster.spawn("logic-1", "logic").await;
    cluster.spawn("logic-2", "logic").await;
    cluster.spawn("gate-a", "gate").await;

    // The receiving app: client_msg_id → msgids it was handed.
    let seen: Arc<Mutex<HashMap<String, Vec<u64>>>> = Arc::default();
    let (bob, mut bob_in) = cluster.connect("gate-a", "bob", "phone").await;
    let recorder = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(event) = bob_in.next_event().await {
                if let Event::Message(message) = event {
                    seen.lock()
                        .await
                        .entry(message.client_msg_id.clone())
                        .or_default()
                        .push(message.msgid);
                }
            }
        })
    };

    let (alice, _alice_in) = cluster.connect("gate-a", "alice", "phone").await;
    let alice = Arc::new(alice);
    let acked: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let sender = {
        let (alice, acked) = (alice.clone(), acked.clone());
        tokio::spawn(async move {
            for i in 0..MESSAGES {
                let id = format!("m-{i}");
                // The SDK resends with the same client_msg_id until ACKed (send_deadline).
                let receipt = alice
                    .c2c_with_id(user("bob"), &id, Content::text(format!("message {i}")))
                    .await
                    .unwrap_or_else(|err| panic!("{id} is ACKed in the end: {err}"));
                acked.lock().await.insert(id, receipt.msgid);
            }
        })
    };
    // Mid-traffic: a third of the messages ACKed, then kill -9 one logic process.
    wait_until(WAIT, || async { acked.lock().await.len() >= MESSAGES / 3 })
        .await
        .expect("traffic flows");
    cluster.kill9("logic-1").await;
    tokio::time::timeout(Duration::from_secs(120), sender)
        .await
        .expect("the sender finishes")
        .expect("every message is ACKed");
    let acked = acked.lock().await.clone();
    assert_eq!(acked.len(), MESSAGES);

    // A push lost with the killed process is still in bob's inbox: pull what is unacked.
    let pulled = bob.pull_all_offline().await.expect("bob pulls");
    {
        let mut seen = seen.lock().await;
        for message in pulled {
            let msgids = seen.entry(message.client_msg_id.clone()).or_default();
            if !msgids.contains(&message.msgid) {
                msgids.push(message.msgid);
            }
        }
    }
    wait_until(WAIT, || async { seen.lock().await.len() >= MESSAGES })
        .await
        .expect("bob has every ACKed message");
    let seen = seen.lock().await.clone();
    for (id, msgid) in &acked {
        assert_eq!(
            seen.get(id),
            Some(&vec![*msgid]),
            "{id}: handed to the app exactly once, with the ACKed msgid"
        );
    }
    assert_eq!(seen.len(), MESSAGES, "nothing unexpected arrived");
    recorder.abort();
}
