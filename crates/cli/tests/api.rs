//! The business-API commands of the `longlink` binary against a real `longlink serve`:
//! `client c2s` → `consume` (printed, then acked), `push` to a listening client → `push stats`,
//! `presence`, and one-line errors (bad key, unknown push, nothing listening).

mod common;

use common::{Node, command, json_lines, ok, run};
use longlink_testkit::{WAIT, wait_until};

#[tokio::test]
async fn c2s_is_consumed_once_and_acked() {
    let node = Node::start().await;
    let api = node.api.as_str();
    let out = ok(&[
        "client",
        "c2s",
        "--server",
        &node.gate,
        "--appcode",
        "130",
        "--uid",
        "driver-7",
        "--msgtype",
        "1",
        "31.2,121.5",
        "--client-msg-id",
        "c-1",
    ])
    .await;
    assert_eq!(out.trim(), "c2s.130.1", "the topic is printed");

    // A short lease: had the message not been acked, it would be ready again within a
    // second and the second consume below (waiting 3 s) would get it.
    let out = ok(&[
        "consume",
        "--api",
        api,
        "--appcode",
        "130",
        "--msgtype",
        "1",
        "--count",
        "1",
        "--json",
        "--lease-secs",
        "1",
        "--wait-secs",
        "15",
    ])
    .await;
    let got = json_lines(&out);
    assert_eq!(got.len(), 1, "{out}");
    assert_eq!(got[0]["uid"], "driver-7");
    assert_eq!(got[0]["appcode"], 130);
    assert_eq!(got[0]["msgtype"], 1);
    assert_eq!(got[0]["body"], "31.2,121.5");
    assert_eq!(got[0]["client_msg_id"], "c-1");
    assert_eq!(got[0]["attempt"], 1);
    assert_eq!(got[0]["topic"], "c2s.130.1");

    let out = ok(&[
        "consume",
        "--api",
        api,
        "--topic",
        "c2s.130.1",
        "--count",
        "1",
        "--json",
        "--wait-secs",
        "3",
    ])
    .await;
    assert_eq!(out, "", "acked: nothing is delivered again");

    // The control: without the ack the same message comes back, as attempt 2.
    ok(&[
        "client",
        "c2s",
        "--server",
        &node.gate,
        "--appcode",
        "130",
        "--uid",
        "driver-8",
        "--msgtype",
        "1",
        "unacked",
    ])
    .await;
    let out = ok(&[
        "consume",
        "--api",
        api,
        "--topic",
        "c2s.130.1",
        "--count",
        "1",
        "--no-ack",
        "--lease-secs",
        "1",
        "--wait-secs",
        "15",
    ])
    .await;
    assert!(
        out.contains("attempt 1 from 130:driver-8/cli-c2s msgtype 1") && out.contains(": unacked"),
        "plain line: {out}"
    );
    let out = ok(&[
        "consume",
        "--api",
        api,
        "--topic",
        "c2s.130.1",
        "--count",
        "1",
        "--json",
        "--wait-secs",
        "15",
    ])
    .await;
    let again = json_lines(&out);
    assert_eq!(again.len(), 1, "{out}");
    assert_eq!(again[0]["body"], "unacked");
    assert_eq!(again[0]["attempt"], 2);
    node.serve.kill9().await.unwrap();
}

#[tokio::test]
async fn push_reaches_a_listening_client_and_stats_and_presence_show_it() {
    let node = Node::start().await;
    let api = node.api.as_str();
    let listen = node.listen("129", "alice", &["--count", "1", "--timeout-secs", "20"]);

    // Online according to the API, before anything is pushed.
    wait_until(WAIT, || async {
        let out = run(&[
            "presence",
            "--api",
            api,
            "--appcode",
            "129",
            "--uid",
            "alice",
            "--json",
        ])
        .await;
        out.code == 0 && json_lines(&out.stdout)[0]["online"] == true
    })
    .await
    .expect("alice online");
    let out = ok(&[
        "presence",
        "--api",
        api,
        "--appcode",
        "129",
        "--uid",
        "alice",
    ])
    .await;
    assert!(out.starts_with("alice  online  1 session"), "{out}");
    assert!(out.contains("device cli-listen"), "{out}");
    let out = ok(&["presence", "--api", api, "--appcode", "129"]).await;
    assert_eq!(out.trim(), "appcode 129: 1 user online, 1 session");
    let out = ok(&[
        "presence",
        "--api",
        api,
        "--appcode",
        "129",
        "--uid",
        "alice",
        "--uid",
        "bob",
    ])
    .await;
    assert_eq!(out.lines().next(), Some("alice  online  1 session"));
    assert!(out.contains("bob  offline"), "{out}");

    let out = ok(&[
        "push",
        "--api",
        api,
        "--appcode",
        "129",
        "--uid",
        "alice",
        "your order is on its way",
        "--msgtype",
        "7",
        "--from",
        "order-service",
        "--json",
    ])
    .await;
    let accepted = &json_lines(&out)[0];
    assert_eq!(accepted["targets"], 1);
    let push_id = accepted["push_id"].as_u64().expect("push id").to_string();

    let listened = tokio::time::timeout(WAIT, listen.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        listened.status.success(),
        "{}",
        String::from_utf8_lossy(&listened.stderr)
    );
    let got = json_lines(&String::from_utf8_lossy(&listened.stdout));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["content"], "your order is on its way");
    assert_eq!(got[0]["msgtype"], 7);
    assert_eq!(got[0]["from_uid"], "order-service");
    assert_eq!(got[0]["to_uid"], "alice");

    // The listener acknowledged it (the SDK acks what it hands over); the counters move once
    // the MSG_ACK is processed.
    let stats = std::sync::Arc::new(std::sync::Mutex::new(serde_json::Value::Null));
    wait_until(WAIT, || {
        let (stats, push_id) = (stats.clone(), push_id.clone());
        async move {
            let out = run(&["push", "stats", &push_id, "--api", api, "--json", "--wait"]).await;
            let Some(value) = (out.code == 0).then(|| json_lines(&out.stdout).remove(0)) else {
                return false;
            };
            let acked = value["acked"] == 1;
            *stats.lock().unwrap() = value;
            acked
        }
    })
    .await
    .expect("the push is acked");
    let stats = stats.lock().unwrap().clone();
    assert_eq!(stats["targets"], 1, "{stats}");
    assert_eq!(stats["online"], 1, "{stats}");
    assert_eq!(stats["written"], 1, "{stats}");
    assert_eq!(stats["done"], true, "{stats}");
    assert_eq!(stats["recipients"][0]["uid"], "alice", "{stats}");
    assert_eq!(stats["recipients"][0]["state"], "acked", "{stats}");

    let out = ok(&["push", "stats", &push_id, "--api", api]).await;
    assert!(
        out.starts_with(&format!("push {push_id}  appcode 129  msgtype 7")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..2] == ["targets", "1"]),
        "{out}"
    );
    assert!(out.contains("recipients (1): 1 acked"), "{out}");

    // `push send` is the same command; an offline user's copy waits in the inbox.
    let out = ok(&[
        "push",
        "send",
        "--api",
        api,
        "--appcode",
        "129",
        "--uid",
        "carol,dave",
        "stats",
    ])
    .await;
    assert!(
        out.starts_with("push ") && out.trim_end().ends_with("accepted: 2 targets"),
        "{out}"
    );
    node.serve.kill9().await.unwrap();
}

#[tokio::test]
async fn api_errors_are_one_line_with_a_non_zero_exit() {
    let node = Node::start().await;
    let api = node.api.as_str();
    let out = run(&[
        "push",
        "--api",
        api,
        "--api-key",
        "not-a-key",
        "--appcode",
        "129",
        "--uid",
        "alice",
        "hello",
    ])
    .await;
    assert_ne!(out.code, 0);
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("error: 401 unauthenticated: "),
        "{}",
        out.stderr
    );

    // The key from the environment, as a business server's deploy would set it.
    let output = command(&["push", "--appcode", "129", "--all", "hello"])
        .env("LONGLINK_API", api)
        .env("LONGLINK_API_KEY", "also-not-a-key")
        .output()
        .await
        .unwrap();
    assert_ne!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stderr).starts_with("error: 401 unauthenticated"));

    // An appcode outside the key's scope.
    let out = run(&["push", "--api", api, "--appcode", "4242", "--all", "x"]).await;
    assert_ne!(out.code, 0);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("error: 403 permission_denied: "),
        "{}",
        out.stderr
    );

    let out = run(&["push", "stats", "12345", "--api", api]).await;
    assert_ne!(out.code, 0);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("error: 404 not_found: "),
        "{}",
        out.stderr
    );
    node.serve.kill9().await.unwrap();

    // Nothing listening: one line naming the URL.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{free}");
    for args in [
        vec!["presence", "--api", &url, "--appcode", "129"],
        vec!["consume", "--api", &url, "--topic", "t", "--wait-secs", "0"],
    ] {
        let out = run(&args).await;
        assert_ne!(out.code, 0);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(
            out.stderr
                .starts_with(&format!("error: cannot reach the API at {url}/")),
            "{}",
            out.stderr
        );
    }
}
