//! The `longlink` binary as a user runs it: serve, config, token, client send/pull/listen/
//! history/chat, and its errors.

use std::process::Stdio;

mod common;

use common::{Node, command, json_lines, run, serve_in};
use longlink_testkit::{WAIT, config_on_free_ports};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

#[tokio::test]
async fn config_default_and_token() {
    let out = run(&["config", "default"]).await;
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("[gate]") && out.stdout.contains("login_timeout_secs = 10"));
    let out = run(&["token", "--appcode", "129", "--uid", "alice"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim().split('.').count(), 3, "a JWT");
    let out = run(&["token", "--appcode", "4242", "--uid", "alice"]).await;
    assert_eq!(out.code, 64);
    assert!(
        out.stderr.contains("unknown appcode 4242"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn send_pull_history_and_idempotent_retry() {
    let dir = tempfile::tempdir().unwrap();
    let serve = serve_in(dir.path()).await;
    let server = serve.gate_addr().to_string();
    let token = run(&["token", "--appcode", "129", "--uid", "alice"])
        .await
        .stdout;
    let out = run(&[
        "client",
        "send",
        "--server",
        &server,
        "--token",
        token.trim(),
        "--appcode",
        "129",
        "--uid",
        "alice",
        "--to",
        "130:bob",
        "hello bob",
        "--count",
        "3",
        "--client-msg-id",
        "k",
        "--json",
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let sent = json_lines(&out.stdout);
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[0]["client_msg_id"], "k-1");

    // The same client message id again: the same msgid, nothing new stored.
    let out = run(&[
        "client",
        "send",
        "--server",
        &server,
        "--appcode",
        "129",
        "--uid",
        "alice",
        "--to",
        "130:bob",
        "hello bob 1",
        "--client-msg-id",
        "k-1",
        "--json",
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(json_lines(&out.stdout)[0]["msgid"], sent[0]["msgid"]);

    let out = run(&[
        "client",
        "pull",
        "--server",
        &server,
        "--appcode",
        "130",
        "--uid",
        "bob",
        "--json",
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let pulled = json_lines(&out.stdout);
    let ids: Vec<_> = pulled.iter().map(|m| m["msgid"].clone()).collect();
    let sent_ids: Vec<_> = sent.iter().map(|m| m["msgid"].clone()).collect();
    assert_eq!(ids, sent_ids, "all three, in order, once");
    assert_eq!(pulled[2]["content"], "hello bob 3");
    assert_eq!(pulled[0]["from_uid"], "alice");
    assert_eq!(pulled[0]["to_appcode"], 130);
    // Pulled messages were acknowledged: a second pull has nothing.
    let out = run(&[
        "client",
        "pull",
        "--server",
        &server,
        "--appcode",
        "130",
        "--uid",
        "bob",
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "", "nothing left after the first pull");

    let out = run(&[
        "client",
        "history",
        "--server",
        &server,
        "--appcode",
        "130",
        "--uid",
        "bob",
        "--with",
        "129:alice",
        "--json",
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(json_lines(&out.stdout).len(), 3);

    let (status, logs) = serve.terminate().await.unwrap();
    assert!(status.success(), "serve exits cleanly on SIGTERM");
    assert!(
        logs.iter().any(|l| l.contains("longlink stopped")),
        "{logs:?}"
    );
}

#[tokio::test]
async fn listen_prints_messages_as_they_arrive_and_chat_talks_both_ways() {
    let node = Node::start().await;
    let server = node.gate.as_str();

    // A listener waiting for three messages.
    let listen = node.listen("130", "bob", &["--count", "3", "--timeout-secs", "20"]);
    // Wait until bob is online in presence (not just connected: the gate counts a session
    // before its LOGIN is registered) before sending, so every line is pushed live.
    node.wait_online(130, "bob").await;

    // An interactive chat as alice: type a line, it reaches bob.
    let mut chat = command(&[
        "client",
        "chat",
        "--server",
        server,
        "--appcode",
        "129",
        "--uid",
        "alice",
        "--to",
        "130:bob",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut chat_out = tokio::io::BufReader::new(chat.stdout.take().unwrap()).lines();
    let banner = tokio::time::timeout(WAIT, chat_out.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(banner.contains("chatting as 129:alice"), "{banner}");
    let mut stdin = chat.stdin.take().unwrap();
    stdin.write_all(b"hi from the terminal\n").await.unwrap();
    stdin.flush().await.unwrap();

    // bob answers with the send command; alice's chat shows it.
    let out = run(&[
        "client",
        "send",
        "--server",
        server,
        "--appcode",
        "130",
        "--uid",
        "bob",
        "--to",
        "129:alice",
        "hello alice",
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let line = tokio::time::timeout(WAIT, chat_out.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        line.contains("130:bob") && line.contains("hello alice"),
        "{line}"
    );

    // A second line from the chat completes the listener's count.
    stdin.write_all(b"second line\n").await.unwrap();
    stdin.flush().await.unwrap();
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
    assert_eq!(got.len(), 3);
    // alice's first line and bob's send race (nothing orders two senders), so either may come
    // first; alice's second line was typed after her chat showed bob's, so it comes last.
    let content_of = |from: &str| {
        got[..2]
            .iter()
            .find(|m| m["from_uid"] == from)
            .unwrap_or_else(|| panic!("no message from {from}: {got:?}"))
    };
    let from_alice = content_of("alice");
    assert_eq!(from_alice["content"], "hi from the terminal");
    assert!(from_alice["log_id"].as_u64().unwrap() > 0);
    // bob's own send from another device shows on this device too (multi-device).
    assert_eq!(content_of("bob")["content"], "hello alice");
    assert_eq!(got[2]["content"], "second line");

    drop(stdin); // Ctrl-D ends the chat.
    let status = tokio::time::timeout(WAIT, chat.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    node.serve.kill9().await.unwrap();
}

#[tokio::test]
async fn errors_are_one_line_with_a_non_zero_exit() {
    // Nothing listens on this port.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = run(&[
        "client",
        "pull",
        "--server",
        &free,
        "--appcode",
        "129",
        "--uid",
        "a",
    ])
    .await;
    assert_ne!(out.code, 0);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("longlink: cannot log in"),
        "{}",
        out.stderr
    );

    // A bad config names the field and exits 64.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[gate]\nlogin_timeout_secs = \"soon\"\n").unwrap();
    let out = run(&["serve", "--config", path.to_str().unwrap()]).await;
    assert_eq!(out.code, 64);
    assert!(out.stderr.contains("login_timeout_secs"), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);

    // A bad token.
    let serve = serve_in(dir.path()).await;
    let out = run(&[
        "client",
        "pull",
        "--server",
        &serve.gate_addr().to_string(),
        "--appcode",
        "129",
        "--uid",
        "a",
        "--token",
        "junk",
    ])
    .await;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("BadToken") || out.stderr.contains("BAD_TOKEN"),
        "{}",
        out.stderr
    );
    serve.kill9().await.unwrap();
}

#[tokio::test]
async fn serve_logs_one_json_object_per_line_with_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("longlink.toml");
    std::fs::write(&config, config_on_free_ports(dir.path())).unwrap();
    let mut child = command(&["--log-format", "json", "serve", "--config"])
        .arg(&config)
        .env("LONGLINK_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let value: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|err| panic!("not one JSON object ({err}): {line}"));
            if value["message"] == "longlink ready" {
                return value;
            }
        }
        panic!("serve exited before it was ready");
    })
    .await
    .expect("ready within the deadline");
    assert_eq!(ready["level"], "INFO");
    assert!(ready["timestamp"].is_string(), "{ready}");
    for field in ["gate", "api", "grpc", "data_dir"] {
        assert!(ready[field].is_string(), "{field} missing: {ready}");
    }
    child.kill().await.unwrap();
}
