//! `longlink bench` keeps working: each scenario (idle, c2c, push, broadcast) runs small against its own spawned server,
//! exits 0 and writes the JSON it documents. (No timing is asserted: figures live in
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
    let results = &report["results"];
    assert_eq!(results["logged_in"], 50, "{results}");
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
    let results = &report["results"];
    assert_eq!(results["sent"], 400, "{results}");
    assert_eq!(results["acked"], 400, "{results}");
    assert_eq!(results["received"], 400, "{results}");
    assert_eq!(results["lost"], 0, "{results}");
    assert_eq!(results["duplicate_deliveries"], 0, "{results}");
    assert!(results["e2e_latency_ms"]["p99"].is_number(), "{results}");
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
