//! The gate routes against a real `serve()` over a [`common::FakeGates`] directory: dispatch
//! order (holding gate first, then least loaded, never a draining gate), its 400/403/503, and
//! the operator routes `GET /v1/gates` and `POST /v1/gates/{id}/drain` (202, idempotent, 404,
//! 403 for a key that does not cover every appcode). The same routes over a real node with two
//! gates: `crates/cli/tests/gates.rs`.

mod common;

use std::sync::atomic::Ordering;

use common::{Fixture, assert_error, json};
use longlink_api::GateStatus;
use serde_json::json;

fn ids(body: &serde_json::Value) -> Vec<(String, bool)> {
    body["gates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["id"].as_str().unwrap().to_owned(),
                g["holding"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn owned(pairs: &[(&str, bool)]) -> Vec<(String, bool)> {
    pairs.iter().map(|(id, h)| ((*id).to_owned(), *h)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_puts_the_holding_gate_first_then_the_least_loaded() {
    let api = Fixture::start(5).await;
    // Nobody online: least loaded first (gate-1 has 3 connections, gate-2 5).
    let (status, body) = json(
        api.get("/v1/dispatch?appcode=129&uid=alice", "k129")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), owned(&[("gate-1", false), ("gate-2", false)]));
    assert_eq!(body["gates"][0]["addr"], "127.0.0.1:7700");
    assert_eq!(body["gates"][0]["connections"], 3);
    // alice's session lives on gate-2: it comes first, marked holding.
    api.login_on("gate-2", 129, "alice", "phone", 7).await;
    let (status, body) = json(
        api.get("/v1/dispatch?appcode=129&uid=alice", "k129")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), owned(&[("gate-2", true), ("gate-1", false)]));
    // Another device of alice's is not held anywhere: least loaded order.
    let (_, body) = json(
        api.get("/v1/dispatch?appcode=129&uid=alice&device=pad", "k129")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ids(&body), owned(&[("gate-1", false), ("gate-2", false)]));
    // Without a uid: no lookup.
    let (_, body) = json(
        api.get("/v1/dispatch?appcode=129", "k129")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ids(&body), owned(&[("gate-1", false), ("gate-2", false)]));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_refuses_bad_queries_and_says_when_nothing_serves() {
    let api = Fixture::start(5).await;
    for query in [
        "",
        "?uid=alice",
        "?appcode=abc&uid=alice",
        "?appcode=-1",
        "?appcode=129&uid=",
        "?appcode=129&device=phone",
        "?appcode=129&uid=alice&colour=red",
    ] {
        let response = api
            .get(&format!("/v1/dispatch{query}"), "k129")
            .send()
            .await
            .unwrap();
        assert_error(response, 400, "invalid_argument").await;
    }
    let long = "u".repeat(257);
    assert_error(
        api.get(&format!("/v1/dispatch?appcode=129&uid={long}"), "k129")
            .send()
            .await
            .unwrap(),
        400,
        "invalid_argument",
    )
    .await;
    // The key must cover the appcode, and a key is needed at all.
    assert_error(
        api.get("/v1/dispatch?appcode=130&uid=bob", "k129")
            .send()
            .await
            .unwrap(),
        403,
        "permission_denied",
    )
    .await;
    assert_error(
        api.client
            .get(api.url("/v1/dispatch?appcode=129"))
            .send()
            .await
            .unwrap(),
        401,
        "unauthenticated",
    )
    .await;
    // Every gate draining or stopped: 503 with a clear message.
    let mut gates = api.gates.gates.lock().unwrap().clone();
    gates[0].draining = true;
    gates[1].serving = false;
    api.gates.set(gates);
    let (status, body) = json(
        api.get("/v1/dispatch?appcode=129&uid=alice", "k129")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no gate is serving"),
        "{body}"
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_and_drain_gates() {
    let api = Fixture::start(5).await;
    let (status, body) = json(api.get("/v1/gates", "kall").send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"gates": [
            {"id": "gate-1", "addr": "127.0.0.1:7700", "connections": 3, "held": 0,
             "serving": true, "draining": false},
            {"id": "gate-2", "addr": "127.0.0.1:7701", "connections": 5, "held": 0,
             "serving": true, "draining": false},
        ]})
    );
    // A key that does not cover every appcode of the node is not an operator key.
    for (method, path) in [("GET", "/v1/gates"), ("POST", "/v1/gates/gate-1/drain")] {
        let request = match method {
            "GET" => api.get(path, "k129"),
            _ => api.client.post(api.url(path)).bearer_auth("k129"),
        };
        assert_error(request.send().await.unwrap(), 403, "permission_denied").await;
    }
    assert_eq!(api.gates.drains_started.load(Ordering::SeqCst), 0);

    // 202, then the same again (idempotent, started: false); an unknown gate is 404.
    let drain = |id: &str| {
        api.client
            .post(api.url(&format!("/v1/gates/{id}/drain")))
            .bearer_auth("kall")
            .send()
    };
    let (status, body) = json(drain("gate-1").await.unwrap()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body,
        json!({"gate": "gate-1", "draining": true, "started": true})
    );
    let (status, body) = json(drain("gate-1").await.unwrap()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["started"], false);
    assert_eq!(api.gates.drains_started.load(Ordering::SeqCst), 1);
    assert_error(drain("gate-9").await.unwrap(), 404, "not_found").await;
    // GET on the drain path is an unknown route, as elsewhere.
    assert_error(
        api.get("/v1/gates/gate-1/drain", "kall")
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;

    // The draining gate is listed as such and no longer dispatched, even to a user it holds.
    let (_, body) = json(api.get("/v1/gates", "kall").send().await.unwrap()).await;
    assert_eq!(body["gates"][0]["draining"], true);
    api.login_on("gate-1", 129, "carol", "phone", 9).await;
    let (_, body) = json(
        api.get("/v1/dispatch?appcode=129&uid=carol", "kall")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ids(&body), owned(&[("gate-2", false)]));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_gates_lists_none_and_dispatches_nowhere() {
    let api = Fixture::start(5).await;
    api.gates.set(Vec::<GateStatus>::new());
    let (status, body) = json(api.get("/v1/gates", "kall").send().await.unwrap()).await;
    assert_eq!((status, body), (200, json!({"gates": []})));
    assert_error(
        api.get("/v1/dispatch?appcode=129", "k129")
            .send()
            .await
            .unwrap(),
        503,
        "unavailable",
    )
    .await;
    api.stop().await;
}
