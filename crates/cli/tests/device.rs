//! `longlink device register|list|remove` and `longlink push-providers stats` through the
//! binary against an in-process node. A node without a `[push]` provider refuses every
//! registration: the command says so in one line and exits 64, and the read commands answer
//! "nothing" rather than fail.

mod common;

use common::run;
use longlink_testkit::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_provider_registration_is_a_one_line_error() {
    let server = TestServer::start().await;
    let api = format!("http://{}", server.api_addr());

    let out = run(&[
        "device",
        "register",
        "--appcode",
        "129",
        "--uid",
        "alice",
        "--device",
        "phone",
        "--provider",
        "apns",
        "--token",
        "80f5c3",
        "--platform",
        "ios",
        "--api",
        &api,
    ])
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
    let out = run(&[
        "device",
        "register",
        "--appcode",
        "129",
        "--uid",
        "alice",
        "--device",
        "phone",
        "--provider",
        "vendor",
        "--token",
        "v-1",
        "--api",
        &api,
    ])
    .await;
    assert_eq!(out.code, 64, "{}", out.stderr);
    assert!(out.stderr.contains("vendor"), "{}", out.stderr);

    // A key that does not cover the appcode.
    let out = run(&[
        "device",
        "list",
        "--appcode",
        "129",
        "--uid",
        "alice",
        "--api",
        &api,
        "--api-key",
        "nope",
    ])
    .await;
    assert_eq!(out.code, 77, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        "error: 401 unauthenticated: unknown API key"
    );

    let out = run(&[
        "device",
        "list",
        "--appcode",
        "129",
        "--uid",
        "alice",
        "--api",
        &api,
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "129:alice has no device with push tokens\n");
    let out = run(&[
        "device",
        "list",
        "--appcode",
        "129",
        "--uid",
        "alice",
        "--api",
        &api,
        "--json",
    ])
    .await;
    let list: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(list["devices"], serde_json::json!([]));
    let out = run(&[
        "device",
        "list",
        "--appcode",
        "129",
        "--uid",
        "alice",
        "--device",
        "phone",
        "--api",
        &api,
    ])
    .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("error: 404 not_found: "),
        "{}",
        out.stderr
    );

    let out = run(&[
        "device",
        "remove",
        "--appcode",
        "129",
        "--uid",
        "alice",
        "--device",
        "phone",
        "--provider",
        "apns",
        "--api",
        &api,
    ])
    .await;
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
