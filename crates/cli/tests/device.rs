//! `longlink device register|list|remove` and `longlink push-providers stats` through the
//! binary against an in-process node. A node without a `[push]` provider refuses every
//! registration: the command says so in one line and exits 64, and the read commands answer
//! "nothing" rather than fail. With a `[[push.http]]` provider a token is registered (the
//! class kept when a later register leaves the flags out), listed, shown in the provider
//! statistics and removed.

mod common;

use common::run;
use longlink_testkit::TestServer;

/// `longlink device <sub> --appcode 129 --uid alice --api <api>`, then `extra`.
async fn device_cmd(sub: &str, api: &str, extra: &[&str]) -> common::Run {
    let mut args = vec![
        "device",
        sub,
        "--appcode",
        "129",
        "--uid",
        "alice",
        "--api",
        api,
    ];
    args.extend_from_slice(extra);
    run(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_provider_registration_is_a_one_line_error() {
    let server = TestServer::start().await;
    let api = format!("http://{}", server.api_addr());

    let out = device_cmd(
        "register",
        &api,
        &[
            "--device",
            "phone",
            "--provider",
            "apns",
            "--token",
            "80f5c3",
            "--platform",
            "ios",
        ],
    )
    .await;
    assert_eq!(out.code, 64, "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("error: 400 invalid_argument: ") && out.stderr.contains("apns"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");

    // A class flag left out makes register read the device first: a 404 there is "none yet",
    // not the command's failure; the refusal is still the provider's.
    let out = device_cmd(
        "register",
        &api,
        &[
            "--device",
            "phone",
            "--provider",
            "vendor",
            "--token",
            "v-1",
        ],
    )
    .await;
    assert_eq!(out.code, 64, "{}", out.stderr);
    assert!(out.stderr.contains("vendor"), "{}", out.stderr);

    // A key that does not cover the appcode.
    let out = device_cmd("list", &api, &["--api-key", "nope"]).await;
    assert_eq!(out.code, 77, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        "error: 401 unauthenticated: unknown API key"
    );

    let out = device_cmd("list", &api, &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "129:alice has no device with push tokens\n");
    let out = device_cmd("list", &api, &["--json"]).await;
    let list: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(list["devices"], serde_json::json!([]));
    let out = device_cmd("list", &api, &["--device", "phone"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("error: 404 not_found: "),
        "{}",
        out.stderr
    );

    let out = device_cmd("remove", &api, &["--device", "phone", "--provider", "apns"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "removed 0 tokens of 129:alice/phone\n");

    let out = run(&["push-providers", "stats", "--api", &api]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("no push provider is configured"),
        "{}",
        out.stdout
    );
    let out = run(&["push-providers", "stats", "--api", &api, "--json"]).await;
    let stats: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(stats, serde_json::json!({"providers": []}));
}

/// `longlink serve` with a vendor HTTP provider named `vendor` (its endpoint is never called:
/// nobody here is offline with a message).
async fn node_with_a_vendor_provider() -> (longlink_testkit::ServeProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = longlink_testkit::config_on_free_ports(&dir.path().join("data"));
    config.push_str(
        r#"
[[push.http]]
name = "vendor"
url = "http://127.0.0.1:9/push"
body = '{"to": "{{token}}"}'
"#,
    );
    let serve = longlink_testkit::ServeProcess::start(
        std::path::Path::new(common::BIN),
        dir.path(),
        &config,
    )
    .await
    .expect("serve starts with a [[push.http]] provider");
    (serve, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_registered_listed_and_removed() {
    let (serve, _dir) = node_with_a_vendor_provider().await;
    let api = format!("http://{}", serve.api_addr());
    let device = [
        "--appcode",
        "129",
        "--uid",
        "alice",
        "--device",
        "phone",
        "--api",
        &api,
    ];
    let register = |token: &'static str, extra: &'static [&'static str]| {
        let mut args = vec![
            "device",
            "register",
            "--provider",
            "vendor",
            "--token",
            token,
        ];
        args.extend(device);
        args.extend(extra);
        args
    };

    let out = run(&register(
        "v-1",
        &[
            "--platform",
            "android",
            "--vendor",
            "xiaomi",
            "--app-version",
            "5.0",
        ],
    ))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with("registered vendor token for 129:alice/phone\n"),
        "{}",
        out.stdout
    );
    // Again without class flags: the token is replaced, the class kept.
    let out = run(&register("v-2", &["--json"])).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let registered: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(registered["class"], "android/xiaomi/5.0");
    assert_eq!(
        registered["tokens"],
        serde_json::json!([{"provider": "vendor", "token": "v-2"}])
    );

    let out = device_cmd("list", &api, &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one token: {}", out.stdout);
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[..4], ["phone", "android/xiaomi/5.0", "vendor", "v-2"]);

    // An unknown provider is still refused, in one line.
    let mut args = vec![
        "device",
        "register",
        "--provider",
        "carrier-pigeon",
        "--token",
        "t",
    ];
    args.extend(device);
    let out = run(&args).await;
    assert_eq!(out.code, 64, "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);

    let out = run(&["push-providers", "stats", "--api", &api, "--json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let stats: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(stats["providers"][0]["name"], "vendor", "{stats}");
    assert_eq!(stats["providers"][0]["kind"], "http", "{stats}");
    let out = run(&["push-providers", "stats", "--api", &api]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("vendor")),
        "{}",
        out.stdout
    );

    let mut args = vec!["device", "remove"];
    args.extend(device);
    let out = run(&args).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "removed 1 token of 129:alice/phone\n");
    let out = device_cmd("list", &api, &[]).await;
    assert_eq!(out.stdout, "129:alice has no device with push tokens\n");
}
