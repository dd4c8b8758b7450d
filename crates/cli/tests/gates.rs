//! Gates, dispatch and graceful drain on a real node with two gates (`[gate] extra_listen`):
//!
//! - over HTTP against an in-process node: `GET /v1/gates` lists both; a client logged in on
//!   the second gate makes `GET /v1/dispatch` put that gate first with `holding: true`;
//!   `POST /v1/gates/gate-1/drain` kicks gate-1's client with KICK(RECONNECT) towards the
//!   second gate, marks gate-1 draining and takes it out of dispatch; unknown gate 404, bad
//!   appcode 400 (keys and operator scopes: crates/api/tests/gates.rs); the summary lists
//!   both gates with their `draining` flag;
//! - through the binary: `gate list`, `dispatch`, `gate drain` (and its one-line error for an
//!   unknown gate);
//! - SIGTERM to `longlink serve`: a connected client gets KICK(RECONNECT) before its socket
//!   closes, and the process exits 0.

mod common;

use common::{BIN, Node, run};
use longlink_sdk::longlink_proto::{Cmd, KickReason, wire};
use longlink_testkit::{
    ApiClient, DEV_API_KEY, RawClient, ServeProcess, TestServer, WAIT, config_on_free_ports,
    is_response, wait_until,
};
use serde_json::{Value, json};

/// The default config on free ports with a second gate.
fn two_gate_config(data: &std::path::Path) -> String {
    let config = config_on_free_ports(data);
    assert!(
        config.contains("extra_listen = []"),
        "the default config names extra_listen"
    );
    config.replace("extra_listen = []", "extra_listen = [\"127.0.0.1:0\"]")
}

/// Logs in on `gate` as `appcode:uid` (device "phone") and checks the answer.
async fn login(gate: &str, appcode: u32, token: &str) -> RawClient {
    let mut client = RawClient::connect(gate.parse().expect("gate addr"))
        .await
        .expect("connect");
    let answer = client.login(appcode, token, "phone").await.expect("login");
    assert!(is_response(&answer, Cmd::Login), "logged in: {answer:?}");
    client
}

/// The KICK among `frames`, decoded.
fn kick_of(frames: &[longlink_sdk::longlink_proto::Frame]) -> Option<wire::Kick> {
    frames
        .iter()
        .find(|f| f.cmd() == Some(Cmd::Kick))
        .map(|f| f.decode_body::<wire::Kick>().expect("a KICK body"))
}

/// `(id, holding)` of a dispatch answer, in order.
fn order(body: &Value) -> Vec<(String, bool)> {
    body["gates"]
        .as_array()
        .unwrap_or_else(|| panic!("a dispatch answer: {body}"))
        .iter()
        .map(|g| (g["id"].as_str().unwrap().to_owned(), g["holding"] == true))
        .collect()
}

async fn wait_online(api: &ApiClient, appcode: u32, uid: &str) {
    let path = format!("/v1/presence/{appcode}/{uid}");
    wait_until(WAIT, || {
        let (api, path) = (api.clone(), path.clone());
        async move { api.get(&path).await.1["online"] == true }
    })
    .await
    .unwrap_or_else(|_| panic!("{appcode}:{uid} online"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_follows_the_session_and_a_drained_gate_leaves_dispatch() {
    let server = TestServer::start_with(|config| {
        config.gate.extra_listen = vec!["127.0.0.1:0".parse().unwrap()];
    })
    .await;
    let api = server.api();
    let (status, body) = api.get("/v1/gates").await;
    assert_eq!(status, 200, "{body}");
    let gates = body["gates"].as_array().unwrap().clone();
    assert_eq!(gates.len(), 2, "{body}");
    assert_eq!(gates[0]["id"], "gate-1");
    assert_eq!(gates[1]["id"], "gate-1-2");
    assert_eq!(gates[0]["addr"], server.gate_addr().to_string());
    for gate in &gates {
        assert_eq!(gate["serving"], true, "{gate}");
        assert_eq!(gate["draining"], false, "{gate}");
    }
    let second = gates[1]["addr"].as_str().unwrap().to_owned();

    // alice on the second gate, bob on the first.
    let mut alice = login(&second, 129, &server.token(129, "alice")).await;
    let mut bob = login(
        &server.gate_addr().to_string(),
        130,
        &server.token(130, "bob"),
    )
    .await;
    wait_online(&api, 129, "alice").await;
    wait_online(&api, 130, "bob").await;
    let (status, body) = api.get("/v1/dispatch?appcode=129&uid=alice").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        order(&body),
        [("gate-1-2".to_owned(), true), ("gate-1".to_owned(), false)]
    );
    assert_eq!(body["gates"][0]["addr"], second.as_str());
    assert_eq!(body["gates"][0]["connections"], 1);

    // Bad requests.
    for path in [
        "/v1/dispatch?appcode=abc&uid=alice",
        "/v1/dispatch?uid=alice",
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_argument");
    }
    let (status, body) = api.post("/v1/gates/gate-9/drain", &json!({})).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");

    // Draining gate-1: bob is told to reconnect to the second gate, then his socket closes.
    let (status, body) = api.post("/v1/gates/gate-1/drain", &json!({})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body,
        json!({"gate": "gate-1", "draining": true, "started": true})
    );
    let frames = bob.until_closed().await.expect("bob's socket closes");
    let kick = kick_of(&frames).unwrap_or_else(|| panic!("a KICK before the close: {frames:?}"));
    assert_eq!(kick.reason, KickReason::Reconnect as i32, "{kick:?}");
    assert_eq!(kick.reconnect_to, second, "{kick:?}");
    let (status, body) = api.post("/v1/gates/gate-1/drain", &json!({})).await;
    assert_eq!((status, &body["started"]), (202, &json!(false)), "{body}");

    let (_, body) = api.get("/v1/gates").await;
    assert_eq!(body["gates"][0]["draining"], true, "{body}");
    assert_eq!(body["gates"][1]["draining"], false, "{body}");
    // The summary (dashboard, `longlink top`) lists both gates with the same flag, and counts
    // alice's connection on the second gate.
    let (status, summary) = api.get("/v1/stats/summary").await;
    assert_eq!(status, 200);
    let listed: Vec<(&str, bool)> = summary["gates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["id"].as_str().unwrap(), g["draining"] == true))
        .collect();
    assert_eq!(listed, [("gate-1", true), ("gate-1-2", false)], "{summary}");
    assert_eq!(summary["gates"][1]["connections"], 1, "{summary}");
    assert!(summary["connections"].as_u64() >= Some(1), "{summary}");
    for path in [
        "/v1/dispatch?appcode=129&uid=alice",
        "/v1/dispatch?appcode=130&uid=bob",
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!(status, 200, "{body}");
        let ids: Vec<String> = order(&body).into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, ["gate-1-2"], "{path}: gate-1 is no longer dispatched");
    }
    // The second gate still serves alice.
    alice
        .send(longlink_sdk::longlink_proto::Frame::request(
            Cmd::Keepalive,
            2,
            0,
            &wire::KeepaliveRequest::default(),
        ))
        .await
        .unwrap();
    assert!(is_response(&alice.recv().await.unwrap(), Cmd::Keepalive));

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_list_dispatch_and_drain_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(
        BIN.as_ref(),
        dir.path(),
        &two_gate_config(&dir.path().join("data")),
    )
    .await
    .expect("serve starts");
    let api_url = format!("http://{}", serve.api_addr());
    let api = ApiClient::new(serve.api_addr(), DEV_API_KEY);
    let first = serve.gate_addr().to_string();

    // The table: a header, then both gates serving.
    let out = run(&["gate", "list", "--api", &api_url]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(lines[0].starts_with("ID"), "{}", out.stdout);
    assert!(lines[0].contains("CONNECTIONS"), "{}", out.stdout);
    assert!(
        lines[1].starts_with("gate-1 ") && lines[1].contains(&first),
        "{}",
        out.stdout
    );
    assert!(lines[1].ends_with("serving"), "{}", out.stdout);
    assert!(lines[2].starts_with("gate-1-2 "), "{}", out.stdout);
    let out = run(&["gate", "list", "--api", &api_url, "--json"]).await;
    let listed: Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    let second = listed["gates"][1]["addr"].as_str().unwrap().to_owned();

    // alice on the second gate: dispatch names it first.
    let token = run(&["token", "--appcode", "129", "--uid", "alice"]).await;
    assert_eq!(token.code, 0, "{}", token.stderr);
    let mut alice = login(&second, 129, token.stdout.trim()).await;
    wait_online(&api, 129, "alice").await;
    let out = run(&[
        "dispatch",
        "--api",
        &api_url,
        "--appcode",
        "129",
        "--uid",
        "alice",
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, format!("{second}\n{first}\n"));

    // An unknown gate: one line on stderr, a non-zero exit.
    let out = run(&["gate", "drain", "nope", "--api", &api_url]).await;
    assert_ne!(out.code, 0);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("unknown gate"), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    // A bad appcode: one line too.
    let out = run(&["dispatch", "--api", &api_url, "--appcode", "999"]).await;
    assert_ne!(out.code, 0);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);

    // Draining the second gate waits until alice is gone, who got KICK(RECONNECT) to gate-1.
    let out = run(&[
        "gate",
        "drain",
        "gate-1-2",
        "--api",
        &api_url,
        "--timeout",
        "15",
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with("gate gate-1-2 drained: 0 connections"),
        "{}",
        out.stdout
    );
    let frames = alice.until_closed().await.expect("alice's socket closes");
    let kick = kick_of(&frames).unwrap_or_else(|| panic!("a KICK: {frames:?}"));
    assert_eq!(kick.reason, KickReason::Reconnect as i32);
    assert_eq!(kick.reconnect_to, first);
    let out = run(&[
        "dispatch",
        "--api",
        &api_url,
        "--appcode",
        "129",
        "--uid",
        "alice",
    ])
    .await;
    assert_eq!(out.stdout, format!("{first}\n"), "{}", out.stderr);
    // Once its last sessions are gone the gate stops: "drained".
    wait_until(WAIT, || {
        let api_url = api_url.clone();
        async move {
            let out = run(&["gate", "list", "--api", &api_url]).await;
            out.stdout
                .lines()
                .nth(2)
                .is_some_and(|l| l.starts_with("gate-1-2 ") && l.ends_with("drained"))
        }
    })
    .await
    .expect("gate-1-2 drained and stopped");

    let (status, _) = serve.terminate().await.unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_kicks_clients_with_reconnect_then_exits_0() {
    let node = Node::start().await;
    let token = run(&["token", "--appcode", "130", "--uid", "bob"]).await;
    assert_eq!(token.code, 0, "{}", token.stderr);
    let mut bob = login(&node.gate, 130, token.stdout.trim()).await;
    node.wait_online(130, "bob").await;

    let closed = tokio::spawn(async move { bob.until_closed().await });
    let (status, logs) = node.serve.terminate().await.expect("serve stops");
    let frames = closed.await.unwrap().expect("bob's socket closes");
    let kick = kick_of(&frames).unwrap_or_else(|| panic!("a KICK before the close: {frames:?}"));
    assert_eq!(kick.reason, KickReason::Reconnect as i32, "{kick:?}");
    assert!(kick.backoff_ms > 0, "{kick:?}");
    assert!(status.success(), "exit {status:?}: {logs:?}");
    assert!(logs.iter().any(|l| l.contains("gate drained")), "{logs:?}");
    assert!(
        logs.iter().any(|l| l.contains("longlink stopped")),
        "{logs:?}"
    );
}
