//! RedisPresence against a real 3-master Redis Cluster: a subset of the shared suite (each
//! case on its own key prefix, so one cluster serves them all), the keys spread over the
//! masters, the `redis+cluster://` scheme, and a node-id lease.

use std::time::Duration;

use longlink_presence::testsuite as suite;
use longlink_presence::{LoginRule, Presence};
use longlink_presence_redis::{
    ConnectOptions, RedisConn, RedisNodeLease, RedisPresence, RedisPresenceOptions,
};
use longlink_testservers::RedisCluster;

async fn presence(cluster: &RedisCluster, prefix: &str) -> RedisPresence {
    let options = RedisPresenceOptions {
        key_prefix: prefix.into(),
        connect: ConnectOptions {
            cluster: None,
            timeout: Duration::from_secs(2),
        },
        ..RedisPresenceOptions::default()
    };
    let p = RedisPresence::connect_with(&cluster.urls(), options)
        .await
        .expect("connect to the cluster");
    assert!(p.connection().is_cluster());
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_suite_runs_on_a_three_master_cluster() {
    let cluster = RedisCluster::start().expect("redis cluster");
    suite::same_device_replaces_other_devices_stay(presence(&cluster, "c1").await).await;
    suite::kick_policy_keeps_one_session_per_class_allow_keeps_n(presence(&cluster, "c2").await)
        .await;
    suite::a_stale_reconnect_cannot_replace_a_fresher_session(presence(&cluster, "c3").await).await;
    suite::resume_repoints_the_session_only_while_its_epoch_is_current(
        presence(&cluster, "c4").await,
    )
    .await;
    suite::a_scan_sees_every_online_user_of_the_appcode_once(presence(&cluster, "c5").await).await;
    suite::entries_round_trip_every_field(presence(&cluster, "c6").await).await;
    suite::random_logins_follow_the_shared_victims_rule(presence(&cluster, "c7").await).await;
    suite::counts_follow_logins_replacements_and_logouts(presence(&cluster, "c8").await).await;
    suite::concurrent_logins_of_one_user_leave_exactly_the_policy_survivors(
        presence(&cluster, "c9").await,
    )
    .await;
    suite::purge_gate_removes_its_sessions_and_nothing_else(presence(&cluster, "c10").await).await;
    suite::restore_sessions_puts_back_epochs_without_the_policy(presence(&cluster, "c11").await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_spread_over_the_masters_and_the_cluster_scheme_connects() {
    let cluster = RedisCluster::start().expect("redis cluster");
    // One seed URL with the cluster scheme is enough.
    let seed = cluster.urls()[0].replace("redis://", "redis+cluster://");
    let p = RedisPresence::connect(&[seed]).await.expect("connect");
    assert!(p.connection().is_cluster());
    for i in 0..200u64 {
        suite::login(
            &p,
            suite::entry(&format!("s{i}"), "phone", i),
            LoginRule::default(),
        )
        .await;
    }
    assert_eq!(p.session_count().await.unwrap(), 200);
    assert_eq!(suite::scan_all(&p, 129, 30).await.len(), 200);
    // Each master holds some of the users: the buckets' hash tags spread them.
    let mut masters_with_keys = 0;
    for url in cluster.urls() {
        let client = redis::Client::open(url).unwrap();
        let mut node = client.get_multiplexed_async_connection().await.unwrap();
        let keys: i64 = redis::cmd("DBSIZE").query_async(&mut node).await.unwrap();
        if keys > 0 {
            masters_with_keys += 1;
        }
    }
    assert_eq!(masters_with_keys, 3);

    // A node-id lease on the cluster.
    let conn = RedisConn::connect(&cluster.urls(), &ConnectOptions::default())
        .await
        .unwrap();
    let a = RedisNodeLease::acquire(conn.clone(), "store", 2)
        .await
        .unwrap();
    let b = RedisNodeLease::acquire(conn.clone(), "store", 2)
        .await
        .unwrap();
    assert_ne!(a.node_id(), b.node_id());
    assert!(
        RedisNodeLease::acquire(conn.clone(), "store", 2)
            .await
            .is_err()
    );
    a.release().await.unwrap();
    assert!(RedisNodeLease::acquire(conn, "store", 2).await.is_ok());
}
