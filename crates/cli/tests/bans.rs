//! `longlink ban`, `unban` and `bans` through the binary against an in-process node: the
//! happy path (a banned user is refused, the list shows the entry, unban lets it back in), and
//! a one-line error with exit code 64 for a bad entry.

mod common;

use common::run;
use longlink_sdk::longlink_proto::{Cmd, ErrorCode};
use longlink_testkit::{RawClient, TestServer, error_of, is_response};

async fn login_answer(
    server: &TestServer,
    appcode: u32,
    uid: &str,
) -> longlink_sdk::longlink_proto::Frame {
    let mut client = RawClient::connect(server.gate_addr())
        .await
        .expect("connect");
    client
        .login(appcode, &server.token(appcode, uid), "phone")
        .await
        .expect("an answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ban_bans_and_unban_from_the_command_line() {
    let server = TestServer::start().await;
    let api = format!("http://{}", server.api_addr());

    let out = run(&[
        "ban",
        "uid",
        "alice",
        "--appcode",
        "129",
        "--reason",
        "spam",
        "--ttl-secs",
        "3600",
        "--api",
        &api,
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("ban 1: deny uid 129:alice until "),
        "{}",
        out.stdout
    );
    let answer = login_answer(&server, 129, "alice").await;
    assert_eq!(error_of(&answer).expect("an ERROR").0, ErrorCode::Banned);

    let out = run(&["ban", "ip", "10.1.2.3/8", "--api", &api, "--json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let entry: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(entry["value"], "10.0.0.0/8");

    let out = run(&["bans", "--api", &api]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two entries: {}", out.stdout);
    assert!(
        lines[1].contains("alice") && lines[1].contains("spam"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("10.0.0.0/8") && lines[2].contains("never"),
        "{}",
        lines[2]
    );

    let out = run(&["unban", "1", "--api", &api]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "removed ban 1: deny uid 129:alice\n");
    let answer = login_answer(&server, 129, "alice").await;
    assert!(is_response(&answer, Cmd::Login), "back in: {answer:?}");

    let out = run(&["bans", "--api", &api, "--json"]).await;
    let list: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(list["bans"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_entries_get_one_line_errors() {
    let server = TestServer::start().await;
    let api = format!("http://{}", server.api_addr());
    for args in [
        vec!["ban", "ip", "not-an-ip"],
        vec!["ban", "uid", "alice"],
        vec!["ban", "device", "d1", "--allow"],
    ] {
        let mut args = args;
        args.extend(["--api", &api]);
        let out = run(&args).await;
        assert_eq!(out.code, 64, "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
        assert!(
            out.stderr.starts_with("error: 400 invalid_argument: "),
            "{}",
            out.stderr
        );
        assert_eq!(out.stdout, "");
    }
    let out = run(&["unban", "42", "--api", &api]).await;
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr.trim(), "error: 404 not_found: no ban 42");
}
