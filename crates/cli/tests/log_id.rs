//! One log_id strings a message's whole flow together (seeds 003/004): the server runs with
//! `--log-format json` (via LONGLINK_LOG_FORMAT) at debug level, a c2c goes from alice to an
//! online bob through the real binary, and then the receiver's MSG, the ledger's trace and
//! the structured log lines of the gate and of logic all carry the same log_id, the
//! receiver's MSG_ACK included.

use std::process::Stdio;
use std::time::Duration;

mod common;

use common::{BIN, command, wait_online};
use longlink_testkit::{ApiClient, DEV_API_KEY, ServeProcess, WAIT, config_on_free_ports};
use serde_json::Value;

/// Whether `value` holds a field `log_id` equal to `log_id` at any depth (event fields are
/// flattened; span fields sit in `spans`).
fn mentions(value: &Value, log_id: u64) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(key, v)| (key == "log_id" && v.as_u64() == Some(log_id)) || mentions(v, log_id)),
        Value::Array(items) => items.iter().any(|v| mentions(v, log_id)),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_log_id_is_in_the_msg_the_trace_and_the_json_logs_of_every_hop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServeProcess::start_with_env(
        BIN.as_ref(),
        dir.path(),
        &config_on_free_ports(&dir.path().join("data")),
        &[("LONGLINK_LOG_FORMAT", "json"), ("LONGLINK_LOG", "debug")],
    )
    .await
    .expect("serve");
    let gate = server.gate_addr().to_string();

    let api = ApiClient::new(server.api_addr(), DEV_API_KEY);
    let listen = command(&["client", "listen", "--server", &gate, "--appcode", "130"])
        .args(["--uid", "bob", "--count", "1", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("listen");
    // Bob is online once presence says so.
    wait_online(server.api_addr(), 130, "bob").await;

    let sent = command(&[
        "client",
        "send",
        "--server",
        &gate,
        "--appcode",
        "129",
        "--uid",
        "alice",
    ])
    .args(["--to", "130:bob", "is the order ready?"])
    .output()
    .await
    .expect("send");
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let sent = String::from_utf8_lossy(&sent.stdout);
    let msgid: u64 = sent
        .split_whitespace()
        .find_map(|word| word.strip_prefix("msgid=")?.parse().ok())
        .unwrap_or_else(|| panic!("no msgid in {sent:?}"));

    let received = tokio::time::timeout(WAIT, listen.wait_with_output())
        .await
        .expect("bob got it in time")
        .expect("listen output");
    let received: Value = serde_json::from_slice(&received.stdout).expect("one JSON message");
    assert_eq!(received["msgid"], msgid);
    let log_id = received["log_id"].as_u64().expect("log_id in the MSG");
    assert_ne!(log_id, 0);

    // The trace of that msgid is the trace of that log_id, through the receiver's ACK.
    let deadline = tokio::time::Instant::now() + WAIT;
    let trace = loop {
        let (status, trace) = api.get(&format!("/v1/trace/{msgid}?by=msgid")).await;
        let acked = trace["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["stage"] == "receiver_acked"));
        if status == 200 && acked {
            break trace;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no receiver ACK in {trace}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(trace["log_id"], log_id.to_string());

    let (status, lines) = server.terminate().await.expect("terminate");
    assert!(status.success());
    let mut targets = std::collections::BTreeSet::new();
    let mut cmds = std::collections::BTreeSet::new();
    for line in &lines {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("not a JSON log line ({err}): {line}"));
        if mentions(&value, log_id) {
            targets.insert(value["target"].as_str().unwrap_or_default().to_owned());
            if let Some(cmd) = value["cmd"].as_str() {
                cmds.insert(cmd.to_owned());
            }
        }
    }
    // The sender's C2C and the receiver's MSG_ACK (the SDK acks with the message's log_id).
    assert!(cmds.contains("c2c"), "{cmds:?}");
    assert!(cmds.contains("msg_ack"), "{cmds:?}");
    assert!(
        targets.iter().any(|t| t.starts_with("longlink_gate")),
        "no gate line with log_id {log_id}: {targets:?}"
    );
    assert!(
        targets.iter().any(|t| t.starts_with("longlink_logic")),
        "no logic line with log_id {log_id}: {targets:?}"
    );
}
