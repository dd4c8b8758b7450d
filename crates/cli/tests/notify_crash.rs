//! The notification outbox across `kill -9` (issue 12, "after a restart mid-outbox nothing is
//! lost or sent twice"): the real `longlink serve` process is killed while a notification
//! waits in its outbox, and again after one was sent; the restarted process sends what was
//! pending, and never what was already sent. The provider is a local HTTPS vendor endpoint
//! (`longlink-push-fakes`) in the test process, so it outlives the server.

mod common;

use std::path::Path;

use common::BIN;
use longlink_push_fakes::FakeHttp;
use longlink_testkit::{
    ApiClient, DEV_API_KEY, ServeProcess, WAIT, config_on_free_ports, wait_until,
};
use serde_json::json;

/// The default config on free ports with a `[[push.http]]` provider "vendor" at `fake`, a
/// grace long enough to kill the server inside it, and no spacing between notifications.
fn config(dir: &Path, fake: &FakeHttp) -> String {
    let ca = fake.write_ca(dir, "vendor-ca.pem").expect("ca file");
    let base = config_on_free_ports(&dir.join("data"))
        .replace("grace_ms = 3000", "grace_ms = 4000")
        .replace("collapse_secs = 10", "collapse_secs = 0");
    format!(
        "{base}\n[[push.http]]\nname = \"vendor\"\nurl = \"{}/push\"\nca_file = {:?}\n\
         body = '{{\"token\": \"{{{{token}}}}\", \"body\": \"{{{{body}}}}\", \"id\": \"{{{{id}}}}\"}}'\n",
        fake.url(),
        ca.display().to_string()
    )
}

async fn start(dir: &Path, config: &str) -> (ServeProcess, ApiClient) {
    let serve = ServeProcess::start(Path::new(BIN), dir, config)
        .await
        .expect("serve starts");
    let api = ApiClient::new(serve.api_addr(), DEV_API_KEY);
    (serve, api)
}

/// One of the node's metrics, summed over its labels (0 when absent).
async fn metric(api: &ApiClient, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", api.base()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn push(api: &ApiClient, text: &str) {
    let (status, body) = api
        .post(
            "/v1/push",
            &json!({"appcode": 129, "uids": ["bob"], "msgtype": 1, "content": text}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

fn bodies(fake: &FakeHttp) -> Vec<String> {
    fake.requests()
        .iter()
        .map(|r| r.json()["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_loses_no_pending_notification_and_repeats_no_sent_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeHttp::start().await.expect("fake vendor");
    let config = config(dir.path(), &fake);
    let (serve, api) = start(dir.path(), &config).await;
    let (status, body) = api
        .put(
            "/v1/devices/129/bob/phone",
            &json!({"platform": "android", "tokens": [{"provider": "vendor", "token": "tok-bob"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Killed while the notification waits out its grace in the outbox.
    push(&api, "before the crash").await;
    wait_until(WAIT, || async {
        metric(&api, "longlink_notify_outbox_pending").await == 1.0
    })
    .await
    .expect("the notification is in the outbox");
    serve.kill9().await.expect("kill -9");
    assert_eq!(
        fake.count(),
        0,
        "killed inside the grace: nothing was sent yet"
    );

    // The restarted process sends it.
    let (serve, api) = start(dir.path(), &config).await;
    fake.wait_count(1, WAIT)
        .await
        .expect("the pending notification is sent after the restart");
    wait_until(WAIT, || async {
        metric(&api, "longlink_notify_outbox_pending").await == 0.0
            && metric(&api, "longlink_notifications_sent_total").await == 1.0
    })
    .await
    .expect("sent once");
    serve.kill9().await.expect("kill -9");

    // Killed after it was sent: the next process sends only what is new.
    let (serve, api) = start(dir.path(), &config).await;
    push(&api, "after the crash").await;
    fake.wait_count(2, WAIT)
        .await
        .expect("the new notification is sent");
    wait_until(WAIT, || async {
        metric(&api, "longlink_notify_outbox_pending").await == 0.0
            && metric(&api, "longlink_notifications_sent_total").await == 1.0
    })
    .await
    .expect("this process sent one");
    assert_eq!(bodies(&fake), ["before the crash", "after the crash"]);
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.json()["token"] == "tok-bob")
    );
    serve.kill9().await.expect("kill -9");
}
