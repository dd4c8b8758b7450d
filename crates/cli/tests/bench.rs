//! `longlink bench` keeps working: each scenario (idle, c2c, push, broadcast, offline, notify) runs small against its own spawned server,
//! exits 0 and writes the JSON it documents; idle and c2c also over WebSocket (`--transport ws`); idle, push, broadcast
//! and c2c also with their peers in the same run (`--peers mosquitto,nats`: throwaway mosquitto and nats-server brokers,
//! installed by scripts/test); idle also as a sweep over N (`--connections 20,40`: a `sweep` array and a plot).
//! (No timing is asserted: figures live in docs/benchmarks.md.)

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
        &["idle", "--connections", "50", "--peers", "none"],
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
        &[
            "idle",
            "--connections",
            "20",
            "--transport",
            "ws",
            "--peers",
            "none",
        ],
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
async fn idle_sweep_runs_each_n_and_plots_memory_per_connection() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench(
        &["idle", "--connections", "20,40", "--peers", "none"],
        &dir.path().join("idle-sweep.json"),
    )
    .await;
    assert_eq!(report["scenario"], "idle");
    let sweep = report["sweep"].as_array().expect("a sweep array");
    assert_eq!(sweep.len(), 2, "{report}");
    for (point, n) in sweep.iter().zip([20, 40]) {
        assert_eq!(point["inputs"]["connections"], n, "{point}");
        assert_eq!(point["results"]["logged_in"], n, "{point}");
        assert!(point["results"]["rss_per_connection_bytes"].is_number());
    }
    // Each point had its own server.
    assert_ne!(
        sweep[0]["server"]["pid"], sweep[1]["server"]["pid"],
        "{report}"
    );
    // The plot goes next to the JSON.
    let plot = dir.path().join("idle-sweep.svg");
    assert_eq!(report["plot"], plot.display().to_string(), "{report}");
    let size = std::fs::metadata(&plot).expect("plot written").len();
    assert!(size > 0, "empty plot");
}

#[tokio::test]
async fn an_idle_sweep_against_an_external_server_is_refused_in_one_line() {
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        command(&[
            "bench",
            "idle",
            "--connections",
            "10,20",
            "--server",
            "127.0.0.1:1",
            "--server-pid",
            "1",
        ])
        .output(),
    )
    .await
    .expect("bench finished in time")
    .expect("bench ran");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot be restarted"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
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
            "--peers",
            "none",
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
            "--peers",
            "none",
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
            "--peers",
            "none",
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
    // More users than one fan-out wave (1,024): the server splits the push over its runtime
    // workers, and every user must still get each round exactly once.
    let report = bench(
        &[
            "broadcast",
            "--users",
            "2100",
            "--rounds",
            "2",
            "--pause-ms",
            "50",
            "--persist",
            "--peers",
            "none",
        ],
        &dir.path().join("broadcast.json"),
    )
    .await;
    assert_eq!(report["scenario"], "broadcast");
    let results = &report["results"];
    assert_eq!(results["delivered"], 4200, "{results}");
    assert_eq!(results["missing"], 0, "{results}");
    assert_eq!(results["duplicates"], 0, "{results}");
    let rounds = results["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2, "{results}");
    for round in rounds {
        assert_eq!(round["targets"], 2100, "{results}");
        assert_eq!(round["delivered"], 2100, "{results}");
        assert!(round["last_delivery_ms"].is_number(), "{results}");
    }
    assert!(
        results["last_delivery_ms"]["median"].is_number(),
        "{results}"
    );
}

/// The peers every `--peers mosquitto,nats` run measures, in order.
const PEERS: [&str; 3] = ["mosquitto-qos0", "mosquitto-qos1", "nats"];

/// The `peers` section of a report: every peer measured, one run each, returned in order.
fn peer_runs(report: &serde_json::Value) -> Vec<serde_json::Value> {
    let peers = &report["peers"];
    assert_eq!(peers["measured"], serde_json::json!(PEERS), "{peers}");
    assert!(peers["ratios_are"].is_string(), "{peers}");
    let runs = peers["runs"].as_array().expect("peer runs").clone();
    assert_eq!(runs.len(), PEERS.len(), "{peers}");
    for (run, key) in runs.iter().zip(PEERS) {
        assert_eq!(run["peer"], key, "{run}");
        assert!(run["broker"]["pid"].is_number(), "{run}");
        assert!(run["broker"]["version"].is_string(), "{run}");
        assert!(run["ratios"].is_object(), "{run}");
    }
    runs
}

#[tokio::test]
async fn idle_scenario_runs_its_peers_in_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench(
        &[
            "idle",
            "--connections",
            "20",
            "--warmup",
            "4",
            "--peers",
            "mosquitto,nats",
        ],
        &dir.path().join("idle-peers.json"),
    )
    .await;
    assert_eq!(report["results"]["logged_in"], 20, "{report}");
    for run in peer_runs(&report) {
        assert_eq!(run["connections"], 20, "{run}");
        assert_eq!(run["connected"], 20, "{run}");
        assert_eq!(run["failed"], 0, "{run}");
        assert_eq!(run["dropped"], 0, "{run}");
        assert!(run["rss_per_connection_bytes"].is_number(), "{run}");
        assert!(run["ratios"]["memory_per_connection"].is_number(), "{run}");
    }
}

#[tokio::test]
async fn push_scenario_runs_its_peers_with_the_same_pushes() {
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
            "--peers",
            "mosquitto,nats",
        ],
        &dir.path().join("push-peers.json"),
    )
    .await;
    assert_eq!(report["results"]["delivered"], 150, "{report}");
    // Measured or DESIGN.md's (a run this small may use less CPU than one clock tick).
    assert!(report["targets"]["peers_reference"].is_string(), "{report}");
    for run in peer_runs(&report) {
        assert_eq!(run["users"], 20, "{run}");
        assert_eq!(run["pushes"], 30, "{run}");
        assert_eq!(run["batch"], 5, "{run}");
        assert_eq!(run["targets"], 150, "{run}");
        assert_eq!(run["delivered"], 150, "{run}");
        assert_eq!(run["missing"], 0, "{run}");
        assert_eq!(run["duplicates"], 0, "{run}");
        assert_eq!(run["publish_errors"], 0, "{run}");
        assert_eq!(run["pushes_complete"], 30, "{run}");
        assert_eq!(run["e2e_latency_ms"]["count"], 150, "{run}");
    }
}

#[tokio::test]
async fn broadcast_scenario_runs_its_peers_with_the_same_rounds() {
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
            "--peers",
            "mosquitto,nats",
        ],
        &dir.path().join("broadcast-peers.json"),
    )
    .await;
    assert_eq!(report["results"]["delivered"], 40, "{report}");
    for run in peer_runs(&report) {
        assert_eq!(run["users"], 20, "{run}");
        assert_eq!(run["expected"], 40, "{run}");
        assert_eq!(run["delivered"], 40, "{run}");
        assert_eq!(run["missing"], 0, "{run}");
        assert_eq!(run["duplicates"], 0, "{run}");
        let rounds = run["rounds"].as_array().expect("rounds");
        assert_eq!(rounds.len(), 2, "{run}");
        for round in rounds {
            assert_eq!(round["delivered"], 20, "{run}");
            assert_eq!(round["complete"], true, "{run}");
            assert!(round["last_delivery_ms"].is_number(), "{run}");
        }
    }
}

#[tokio::test]
async fn c2c_scenario_runs_its_peers_at_the_same_rate() {
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
            "--peers",
            "mosquitto,nats",
        ],
        &dir.path().join("c2c-peers.json"),
    )
    .await;
    assert_eq!(report["results"]["received"], 400, "{report}");
    for run in peer_runs(&report) {
        assert_eq!(run["rate"], 200, "{run}");
        assert_eq!(run["messages_scheduled"], 400, "{run}");
        assert_eq!(run["sent"], 400, "{run}");
        assert_eq!(run["received"], 400, "{run}");
        for zero in ["missing", "duplicates", "misrouted", "publish_errors"] {
            assert_eq!(run[zero], 0, "{zero}: {run}");
        }
        assert_eq!(run["e2e_latency_ms"]["count"], 400, "{run}");
    }
}

#[tokio::test]
async fn an_unknown_peer_is_refused_in_one_line() {
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        command(&["bench", "idle", "--connections", "1", "--peers", "rabbitmq"]).output(),
    )
    .await
    .expect("bench finished in time")
    .expect("bench ran");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown peer \"rabbitmq\""), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn offline_scenario_pulls_every_stored_message_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    // 120 messages: pages of 50, 50 and 20.
    let report = bench(
        &["offline", "--users", "20", "--messages-per-user", "120"],
        &dir.path().join("offline.json"),
    )
    .await;
    assert_eq!(report["scenario"], "offline");
    let inputs = &report["inputs"];
    assert_eq!(inputs["users"], 20, "{inputs}");
    assert_eq!(inputs["messages_per_user"], 120, "{inputs}");
    assert_eq!(inputs["page_size"], 50, "{inputs}");
    let results = &report["results"];
    let fill = &results["fill"];
    assert_eq!(fill["pushes"], 120, "{fill}");
    assert_eq!(fill["messages_stored"], 2400, "{fill}");
    assert_eq!(fill["stats"]["online"], 0, "{fill}");
    assert_eq!(results["logins"]["logged_in"], 20, "{results}");
    assert_eq!(results["logins"]["failed"], 0, "{results}");
    let pull = &results["pull"];
    for (count, want) in [
        ("clients", 20),
        ("drained", 20),
        ("messages_expected", 2400),
        ("pulled", 2400),
        ("acked", 2400),
        ("pages", 60),
    ] {
        assert_eq!(pull[count], want, "{count}: {pull}");
    }
    for zero in [
        "failed",
        "lost",
        "duplicates",
        "out_of_order",
        "unexpected",
        "cursor_mismatches",
        "empty_pages",
        "short_pages",
    ] {
        assert_eq!(pull[zero], 0, "{zero}: {pull}");
    }
    assert_eq!(pull["page_latency_ms"]["count"], 60, "{pull}");
    assert!(
        pull["page_latency_hdr_v2_base64"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
        "{pull}"
    );
    let verify = &results["verify"];
    assert_eq!(verify["clients"], 20, "{verify}");
    assert_eq!(verify["left_after_ack"], 0, "{verify}");
    assert_eq!(verify["failed"], 0, "{verify}");
}

#[tokio::test]
async fn notify_scenario_notifies_every_offline_device_and_compares_c2c() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench(
        &[
            "notify",
            "--users",
            "200",
            "--c2c-rounds",
            "1",
            "--c2c-rate",
            "200",
            "--c2c-duration-secs",
            "2",
            "--c2c-senders",
            "4",
            "--c2c-receivers",
            "4",
        ],
        &dir.path().join("notify.json"),
    )
    .await;
    assert_eq!(report["scenario"], "notify");
    let inputs = &report["inputs"];
    assert_eq!(inputs["users"], 200, "{inputs}");
    assert_eq!(inputs["grace_ms"], 0, "{inputs}");
    let t = &report["results"]["throughput"];
    assert_eq!(t["notifications_expected"], 200, "{t}");
    assert_eq!(t["notifications_counted"], 200, "{t}");
    assert_eq!(t["missing"], 0, "{t}");
    assert_eq!(t["push_targets"], 200, "{t}");
    assert_eq!(t["server_metrics"]["sent"], 200.0, "{t}");
    assert_eq!(t["server_metrics"]["outbox_pending"], 0.0, "{t}");
    for figure in [
        "notifications_per_sec",
        "notifications_per_server_cpu_sec",
        "drain_secs",
        "server_cpu_secs",
        "baseline_server_cpu_secs",
        "notifications_per_notify_cpu_sec",
    ] {
        assert!(t[figure].is_number(), "{figure}: {t}");
    }
    let c2c = &report["results"]["c2c"];
    assert_eq!(c2c["runs"].as_array().map(Vec::len), Some(2), "{c2c}");
    for mode in ["off", "on"] {
        assert_eq!(c2c[mode]["runs"], 1, "{c2c}");
        assert_eq!(c2c[mode]["lost"], 0, "{c2c}");
        assert!(
            c2c[mode]["messages_per_server_cpu_sec"].is_number(),
            "{c2c}"
        );
    }
    assert!(c2c["overhead_per_cpu"].is_number(), "{c2c}");
    // The receivers were online: nothing to notify during c2c.
    for run in c2c["runs"].as_array().into_iter().flatten() {
        assert_eq!(run["notifications_sent"], 0, "{run}");
        assert_eq!(run["acked"], 400, "{run}");
    }
    assert_eq!(report["verdict"]["every_notification_arrived"], true);
}
