//! `longlink bench` keeps working: each scenario runs small against its own spawned server,
//! exits 0 and writes the JSON it documents. (No timing is asserted: figures live in
//! docs/benchmarks.md.)

use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_longlink");

async fn bench(args: &[&str], json: &std::path::Path) -> serde_json::Value {
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        Command::new(BIN)
            .arg("bench")
            .args(args)
            .arg("--json")
            .arg(json)
            .env_remove("LONGLINK_CONFIG")
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
