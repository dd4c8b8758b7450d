//! `longlink bench` keeps working: each scenario (idle, c2c, push, broadcast) runs small against its own spawned server,
//! exits 0 and writes the JSON it documents; idle and c2c also over WebSocket (`--transport ws`). (No timing is asserted: figures live in
//! docs/benchmarks.md.)

mod common;

use common::command;

async fn bench(args: &[&str], json: &std::path::Path) -> serde_json::Value {
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        command(&["bench"])
            .args(args)
            .arg("--json")
            .arg(json)
            .output(),
    )
    .await
    .expect("bench finished in time")
    .expect("bench ran");
    assert!(
        output.status.success(),
        "bench {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&std::fs::read(json).expect("json written")).expect("valid json")
}

#[tokio::test]
async fn idle_scenario_logs_everyone_in_and_reports_memory() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench(
        &["idle", "--connections", "50"],
        &dir.path().join("idle.json"),
    )
    .await;
    assert_eq!(report["scenario"], "idle");
    assert_eq!(report["inputs"]["transport"], "tcp");
    let results = &report["results"];
    assert_eq!(results["logged_in"], 50, "{results}");
    assert!(results["rss_per_connection_bytes"].is_number(), "{results}");
}

#[tokio::test]
async fn idle_scenario_over_websocket_logs_everyone_in() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench(
        &["idle", "--connections", "20", "--transport", "ws"],
        &dir.path().join("idle-ws.json"),
    )
    .await;
    assert_eq!(report["scenario"], "idle");
    let inputs = &report["inputs"];
    assert_eq!(inputs["transport"], "ws", "{inputs}");
    // The clients went to the spawned server's WebSocket listener, not its TCP gate.
    assert_eq!(inputs["endpoint"], report["server"]["ws"], "{report}");
    assert_ne!(inputs["endpoint"], report["server"]["gate"], "{report}");
    let results = &report["results"];
    assert_eq!(results["logged_in"], 20, "{results}");
    assert_eq!(results["failed"], 0, "{results}");
    assert_eq!(results["dropped"], 0, "{results}");
    assert_eq!(results["sessions_reported"], 20, "{results}");
    assert!(results["rss_per_connection_bytes"].is_number(), "{results}");
}

#[tokio::test]
async fn c2c_scenario_delivers_everything_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench(
        &[
            "c2c",
            "--rate",
            "200",
            "--duration-secs",
            "2",
            "--senders",
            "4",
            "--receivers",
            "4",
        ],
        &dir.path().join("c2c.json"),
    )
    .await;
    assert_eq!(report["scenario"], "c2c");
    assert_eq!(report["inputs"]["transport"], "tcp");
    let results = &report["results"];
    assert_eq!(results["sent"], 400, "{results}");
    assert_eq!(results["acked"], 400, "{results}");
    assert_eq!(results["received"], 400, "{results}");
    assert_eq!(results["lost"], 0, "{results}");
    assert_eq!(results["duplicate_deliveries"], 0, "{results}");
    assert!(results["e2e_latency_ms"]["p99"].is_number(), "{results}");
}

#[tokio::test]
async fn c2c_scenario_over_websocket_delivers_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench(
        &[
            "c2c",
            "--transport",
            "ws",
            "--rate",
            "100",
            "--duration-secs",
            "2",
            "--senders",
            "4",
            "--receivers",
            "4",
        ],
        &dir.path().join("c2c-ws.json"),
    )
    .await;
    assert_eq!(report["scenario"], "c2c");
    let inputs = &report["inputs"];
    assert_eq!(inputs["transport"], "ws", "{inputs}");
    assert_eq!(inputs["endpoint"], report["server"]["ws"], "{report}");
    let results = &report["results"];
    for count in ["sent", "acked", "received"] {
        assert_eq!(results[count], 200, "{count}: {results}");
    }
    for zero in [
        "errors",
        "unanswered",
        "lost",
        "duplicate_deliveries",
        "misrouted",
        "unexpected_frames",
    ] {
        assert_eq!(results[zero], 0, "{zero}: {results}");
    }
    assert_eq!(results["e2e_latency_ms"]["count"], 200, "{results}");
}

#[tokio::test]
async fn push_scenario_delivers_every_push_to_its_online_targets() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench(
        &[
            "push",
            "--users",
            "20",
            "--pushes",
            "30",
            "--batch",
            "5",
            "--in-flight",
            "4",
        ],
        &dir.path().join("push.json"),
    )
    .await;
    assert_eq!(report["scenario"], "push");
    let results = &report["results"];
    assert_eq!(results["pushes_accepted"], 30, "{results}");
    assert_eq!(results["targets"], 150, "{results}");
    assert_eq!(results["delivered"], 150, "{results}");
    assert_eq!(results["missing"], 0, "{results}");
    assert_eq!(results["duplicates"], 0, "{results}");
    assert_eq!(results["e2e_latency_ms"]["count"], 150, "{results}");
    assert_eq!(results["server_counters"]["written"], 150, "{results}");
    assert!(
        results["deliveries_per_server_cpu_sec"].is_number(),
        "{results}"
    );
}

#[tokio::test]
async fn broadcast_scenario_reaches_every_online_user_each_round() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench(
        &[
            "broadcast",
            "--users",
            "20",
            "--rounds",
            "2",
            "--pause-ms",
            "50",
            "--persist",
        ],
        &dir.path().join("broadcast.json"),
    )
    .await;
    assert_eq!(report["scenario"], "broadcast");
    let results = &report["results"];
    assert_eq!(results["delivered"], 40, "{results}");
    assert_eq!(results["missing"], 0, "{results}");
    let rounds = results["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2, "{results}");
    for round in rounds {
        assert_eq!(round["targets"], 20, "{results}");
        assert_eq!(round["delivered"], 20, "{results}");
        assert!(round["last_delivery_ms"].is_number(), "{results}");
    }
    assert!(
        results["last_delivery_ms"]["median"].is_number(),
        "{results}"
    );
}
