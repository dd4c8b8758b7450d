//! The operator's commands of the `longlink` binary against a real `longlink serve`:
//! `trace` shows a c2c's stages in order (plain and `--json`) and one line for an unknown id,
//! and `top` counts the connected clients, piped frame after frame.

mod common;

use common::{Node, ok, run};
use longlink_testkit::{WAIT, wait_until};

/// The stages of the plain timeline, in the order printed (lines that start with an offset,
/// `+1.234 ms  (+0.100)  stage …`).
fn stages(timeline: &str) -> Vec<String> {
    timeline
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let offset = words.first()?;
            (offset.starts_with('+') || offset.starts_with('-'))
                .then(|| words.get(3).map(|stage| (*stage).to_owned()))
                .flatten()
        })
        .collect()
}

#[tokio::test]
async fn trace_shows_a_c2c_stage_by_stage_and_one_line_for_an_unknown_id() {
    let node = Node::start().await;
    let api = node.api.as_str();

    // bob listens (the SDK acks each message it receives); alice sends him one line.
    let listen = node.listen("130", "bob", &["--count", "1"]);
    node.wait_online(130, "bob").await;
    let sent = ok(&[
        "client",
        "send",
        "--server",
        &node.gate,
        "--appcode",
        "129",
        "--uid",
        "alice",
        "--to",
        "130:bob",
        "where are you?",
    ])
    .await;
    let msgid = sent
        .split_whitespace()
        .find_map(|word| word.strip_prefix("msgid="))
        .unwrap_or_else(|| panic!("no msgid in {sent:?}"))
        .to_owned();
    let received = tokio::time::timeout(WAIT, listen.wait_with_output())
        .await
        .expect("bob got it in time")
        .expect("listen output");
    assert!(received.status.success());
    let received: serde_json::Value =
        serde_json::from_slice(&received.stdout).expect("one JSON message");
    assert_eq!(received["msgid"].to_string(), msgid);

    // bob's ACK reaches the ledger after his listener printed the message: wait for it.
    let last = std::cell::RefCell::new(serde_json::Value::Null);
    wait_until(WAIT, || async {
        let out = run(&["trace", &msgid, "--api", api, "--json"]).await;
        if out.code != 0 {
            return false;
        }
        let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("--json is JSON");
        let acked = json["events"].as_array().is_some_and(|events| {
            events
                .iter()
                .any(|event| event["stage"] == "receiver_acked")
        });
        *last.borrow_mut() = json;
        acked
    })
    .await
    .unwrap_or_else(|_| panic!("no receiver_acked in the trace: {:#}", last.borrow()));
    let json = last.into_inner();
    let log_id: u64 = json["log_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("a decimal log_id");
    assert_eq!(
        log_id,
        received["log_id"].as_u64().unwrap(),
        "the MSG's log_id"
    );
    assert_eq!(json["msgids"][0], msgid.as_str());
    assert_eq!(json["kind"], "c2c");

    let text = ok(&["trace", &msgid, "--api", api]).await;
    let header = text.lines().next().unwrap_or_default();
    assert!(
        header.starts_with(&format!(
            "log_id {log_id}  msgid {msgid}  c2c  129:alice → 130:bob"
        )),
        "{text}"
    );
    let stages = stages(&text);
    let at = |stage: &str| {
        stages
            .iter()
            .position(|s| s == stage)
            .unwrap_or_else(|| panic!("no {stage} in {stages:?}:\n{text}"))
    };
    assert_eq!(at("accepted"), 0, "{text}");
    assert!(at("accepted") < at("stored"), "{text}");
    assert!(at("stored") < at("acked_to_sender"), "{text}");
    assert!(at("stored") < at("written"), "{text}");
    assert!(at("written") < at("receiver_acked"), "{text}");
    // The text was fetched after the JSON: the trace may only have grown since.
    assert!(
        stages.len() >= json["events"].as_array().unwrap().len(),
        "{text}"
    );
    let total = text
        .lines()
        .find(|line| line.starts_with("total "))
        .unwrap_or_else(|| panic!("no total line:\n{text}"));
    assert!(total.contains(" ms  accepted → "), "{total}");

    // The same message by its log_id, asked for as one.
    let by_log_id = ok(&["trace", &log_id.to_string(), "--by", "log-id", "--api", api]).await;
    assert_eq!(by_log_id.lines().next(), Some(header), "{by_log_id}");

    // An id the ledger never saw: one line, exit 1.
    let out = run(&["trace", "999999999", "--api", api]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "trace: no message with log_id or msgid 999999999 in the ledger (it may be older than \
         the trace window)\n"
    );
    assert_eq!(out.stdout, "");

    // A wrong key and a node that is not there: one line each, the API commands' exit codes.
    let out = run(&["trace", &msgid, "--api", api, "--api-key", "nope"]).await;
    assert_eq!(out.code, 77, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.starts_with("error: 401 "), "{}", out.stderr);
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = run(&["trace", &msgid, "--api", &format!("http://{free}")]).await;
    assert_eq!(out.code, 69, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("error: cannot reach the API"),
        "{}",
        out.stderr
    );
    node.serve.kill9().await.unwrap();
}

/// The numbers after `connections` at the start of a line, one per frame.
fn connections(frames: &str) -> Vec<u64> {
    frames
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("connections"))
                .then(|| words.next()?.replace(',', "").parse().ok())
                .flatten()
        })
        .collect()
}

#[tokio::test]
async fn top_counts_the_connected_clients_frame_after_frame() {
    let node = Node::start().await;
    let api = node.api.as_str();
    let _alice = node.listen("129", "alice", &[]);
    let _bob = node.listen("130", "bob", &[]);
    node.wait_online(129, "alice").await;
    node.wait_online(130, "bob").await;
    // The summary counts connections from its own samples: wait until it sees both.
    let client = node.client();
    wait_until(WAIT, || async {
        client.get("/v1/stats/summary").await.1["connections"] == 2
    })
    .await
    .expect("the summary counts both clients");

    let out = run(&[
        "top",
        "--api",
        api,
        "--iterations",
        "2",
        "--interval-ms",
        "200",
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(connections(&out.stdout), [2, 2], "{}", out.stdout);
    // Piped: no escapes, frames one after another with a blank line between them.
    assert!(!out.stdout.contains('\x1b'), "{:?}", out.stdout);
    assert_eq!(
        out.stdout.matches("longlink top · node ").count(),
        2,
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\n\nlonglink top · node "),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("live · every"), "{}", out.stdout);
    for line in ["sessions", "delivery rate", "appcode", "gate"] {
        assert!(
            out.stdout.lines().any(|l| l.starts_with(line)),
            "no {line}:\n{}",
            out.stdout
        );
    }

    // No node: every frame says so, then one line on stderr and a non-zero exit.
    node.serve.kill9().await.unwrap();
    let out = run(&[
        "top",
        "--api",
        api,
        "--iterations",
        "2",
        "--interval-ms",
        "100",
    ])
    .await;
    assert_eq!(out.code, 69, "{}", out.stderr);
    assert_eq!(
        out.stdout.matches("disconnected — retrying").count(),
        2,
        "{}",
        out.stdout
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("error: cannot reach the API"),
        "{}",
        out.stderr
    );
}
