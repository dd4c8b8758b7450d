//! RedisPresence against a throwaway single redis-server: the shared behaviour suite, then
//! what only Redis has (outages and restarts, the key layout, node-id leases).

use std::time::{Duration, Instant};

use longlink_presence::testsuite::{entry, login};
use longlink_presence::{LoginRule, Presence, PresenceError, Registration};
use longlink_presence_redis::{
    ConnectOptions, LeaseError, LeaseState, RedisConn, RedisNodeLease, RedisPresence,
    RedisPresenceOptions,
};
use longlink_testservers::RedisServer;

/// Short bounds, so the outage tests fail fast.
fn options() -> RedisPresenceOptions {
    RedisPresenceOptions {
        connect: ConnectOptions {
            cluster: None,
            timeout: Duration::from_millis(500),
        },
        op_timeout: Duration::from_secs(1),
        ..RedisPresenceOptions::default()
    }
}

async fn new_redis() -> (RedisPresence, RedisServer) {
    let server = RedisServer::start().expect("redis-server");
    let presence = RedisPresence::connect_with(&[server.url()], options())
        .await
        .expect("connect");
    (presence, server)
}

longlink_presence::presence_testsuite!(new_redis);

/// Polls `f` until it returns true, at most 30 s.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_crash_is_unavailable_then_presence_works_again_after_the_restart() {
    let (p, mut server) = new_redis().await;
    let rule = LoginRule::default();
    let (epoch, _) = login(&p, entry("a", "phone", 1), rule).await;

    server.kill();
    // Every operation fails with Unavailable, bounded by the timeouts: none hangs.
    let started = Instant::now();
    let outcomes = vec![
        p.register(entry("a", "web", 2), &rule).await.err(),
        p.sessions(129, "a").await.err(),
        p.unregister(129, "a", "g1", 1).await.err(),
        p.resume(129, "a", "phone", epoch, "g2", 3).await.err(),
        p.session_count().await.err(),
        p.online_uids(129, 0, 10).await.err(),
        p.live_gates().await.err(),
        p.purge_gate("g1").await.err(),
    ];
    for (i, outcome) in outcomes.into_iter().enumerate() {
        assert!(
            matches!(outcome, Some(PresenceError::Unavailable(_))),
            "operation {i} while Redis is down: {outcome:?}"
        );
    }
    // Not a timing assertion on speed, only that nothing waited without a bound.
    assert!(started.elapsed() < Duration::from_secs(120));

    // Back, empty: the connection and the scripts come back by themselves.
    server.restart().expect("restart");
    eventually("presence answers again", || async {
        p.sessions(129, "a").await.is_ok()
    })
    .await;
    assert!(
        p.sessions(129, "a").await.unwrap().is_empty(),
        "Redis restarted empty"
    );
    let (again, _) = login(&p, entry("a", "phone", 4), rule).await;
    assert!(again > 0);
    // Gates put their sessions back: the old epoch is restored as it was.
    let mut old = entry("b", "phone", 5);
    old.epoch = epoch;
    assert_eq!(p.restore_sessions(vec![old.clone()]).await.unwrap(), 1);
    assert_eq!(p.sessions(129, "b").await.unwrap(), vec![old]);
    assert_eq!(p.session_count().await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_nothing_fails_with_unavailable() {
    let server = RedisServer::start().expect("redis-server");
    let url = server.url();
    drop(server);
    let err = RedisPresence::connect_with(&[url], options())
        .await
        .unwrap_err();
    assert!(matches!(err, PresenceError::Unavailable(_)), "{err:?}");
    let err = RedisPresence::connect_with(&["not a url"], options())
        .await
        .unwrap_err();
    assert!(matches!(err, PresenceError::Unavailable(_)), "{err:?}");
    let err = RedisPresence::connect_with::<&str>(&[], options())
        .await
        .unwrap_err();
    assert!(matches!(err, PresenceError::Unavailable(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_redis_forgets_sessions_and_later_epochs_still_grow_per_user() {
    let (p, server) = new_redis().await;
    let (e1, _) = login(&p, entry("a", "phone", 1), LoginRule::default()).await;
    let mut conn = RedisConn::connect(&[server.url()], &ConnectOptions::default())
        .await
        .unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    assert!(p.sessions(129, "a").await.unwrap().is_empty());
    assert_eq!(p.session_count().await.unwrap(), 0);
    // A reconnect with its old epoch is no longer refused: nothing newer is in the way.
    let stale = LoginRule {
        prior_epoch: e1,
        ..LoginRule::default()
    };
    match p.register(entry("a", "phone", 2), &stale).await.unwrap() {
        Registration::Accepted { epoch, replaced } => {
            assert!(epoch > e1, "server time moves on: {epoch} after {e1}");
            assert!(replaced.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_one_user_share_a_hash_tag_and_the_prefix_separates_deployments() {
    let server = RedisServer::start().expect("redis-server");
    let mut a_opts = options();
    a_opts.key_prefix = "deploy-a".into();
    let a = RedisPresence::connect_with(&[server.url()], a_opts)
        .await
        .unwrap();
    let b = RedisPresence::connect_with(&[server.url()], options())
        .await
        .unwrap();
    login(&a, entry("x", "phone", 1), LoginRule::default()).await;
    assert!(b.sessions(129, "x").await.unwrap().is_empty());
    assert_eq!(b.session_count().await.unwrap(), 0);
    assert_eq!(a.session_count().await.unwrap(), 1);

    let mut conn = a.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("deploy-a:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let tagged: Vec<&String> = keys.iter().filter(|k| k.contains(":{129:")).collect();
    assert_eq!(
        tagged.len(),
        3,
        "the user's hash and its bucket's two counters: {keys:?}"
    );
    let tag = |k: &str| k[k.find('{').unwrap()..=k.find('}').unwrap()].to_owned();
    assert!(
        tagged.iter().all(|k| tag(k) == tag(tagged[0])),
        "{tagged:?}"
    );

    let mut bad = options();
    bad.key_prefix = "a{b}".into();
    assert!(
        RedisPresence::connect_with(&[server.url()], bad)
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_leases_are_distinct_exhaust_release_and_report_a_loss() {
    let server = RedisServer::start().expect("redis-server");
    let conn = RedisConn::connect(&[server.url()], &ConnectOptions::default())
        .await
        .unwrap();
    let ttl = Duration::from_millis(600);
    let mut leases = Vec::new();
    for _ in 0..3 {
        leases.push(
            RedisNodeLease::acquire_with_ttl(conn.clone(), "store", 3, ttl)
                .await
                .unwrap(),
        );
    }
    let mut ids: Vec<u16> = leases.iter().map(RedisNodeLease::node_id).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![0, 1, 2]);
    assert!(matches!(
        RedisNodeLease::acquire_with_ttl(conn.clone(), "store", 3, ttl).await,
        Err(LeaseError::Exhausted(3))
    ));
    // Another namespace has ids of its own.
    let other = RedisNodeLease::acquire(conn.clone(), "other", 1)
        .await
        .unwrap();
    assert_eq!(other.node_id(), 0);

    // Renewal keeps the leases past several ttls (waited for, not slept out: the count of
    // renewals is observed through the key's continued presence).
    let mut c = conn.clone();
    let held = leases[0].node_id();
    let key = format!("ll:node:{{store}}:{held}");
    let until = Instant::now() + ttl * 4;
    while Instant::now() < until {
        let exists: bool = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(exists, "the renewed lease stays");
        assert!(!leases[0].is_lost());
        tokio::time::sleep(ttl / 6).await;
    }

    // Released: its id can be taken again.
    let released = leases.remove(0);
    released.release().await.unwrap();
    let again = RedisNodeLease::acquire_with_ttl(conn.clone(), "store", 3, ttl)
        .await
        .unwrap();
    assert_eq!(again.node_id(), held);

    // Someone else takes a lease's key: the holder learns it has lost it.
    let victim = &leases[0];
    let mut state = victim.state();
    let _: () = redis::cmd("SET")
        .arg(format!("ll:node:{{store}}:{}", victim.node_id()))
        .arg("intruder")
        .query_async(&mut c)
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        state.wait_for(|s| *s == LeaseState::Lost),
    )
    .await
    .expect("loss reported")
    .unwrap();
    assert!(victim.is_lost());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_survives_a_redis_restart_by_taking_its_key_back_or_reports_a_loss() {
    let mut server = RedisServer::start().expect("redis-server");
    let conn = RedisConn::connect(&[server.url()], &ConnectOptions::default())
        .await
        .unwrap();
    let ttl = Duration::from_millis(900);
    let lease = RedisNodeLease::acquire_with_ttl(conn.clone(), "store", 4, ttl)
        .await
        .unwrap();
    let key = format!("ll:node:{{store}}:{}", lease.node_id());
    server.restart().expect("restart");
    // Back and empty: the renewal takes the free key back, with our token.
    let mut c = conn.clone();
    eventually("the lease key is back", || {
        let mut c = c.clone();
        let key = key.clone();
        async move {
            let v: Result<Option<String>, _> =
                redis::cmd("GET").arg(&key).query_async(&mut c).await;
            matches!(v, Ok(Some(_)))
        }
    })
    .await;
    assert!(!lease.is_lost());
    // Down for longer than a ttl: the loss is reported, not a panic.
    server.kill();
    let mut state = lease.state();
    tokio::time::timeout(
        Duration::from_secs(30),
        state.wait_for(|s| *s == LeaseState::Lost),
    )
    .await
    .expect("loss reported")
    .unwrap();
    let _ = &mut c;
}
