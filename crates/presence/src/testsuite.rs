//! The behaviour suite every [`Presence`] backend must pass (feature `testsuite`).
//!
//! `presence_testsuite!(new_presence)` expands, in the calling test module, to one
//! `#[tokio::test]` per case below. `new_presence` is an `async fn() -> (P, G)` returning a
//! fresh, empty backend and a guard kept alive for the test (a throwaway server). The cases
//! are public too, so a backend can run a subset against a costlier setup (a Redis Cluster)
//! by calling them directly. Backend-specific behaviour (outages, key layout) is tested next
//! to the backend.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{
    AppcodeCounts, GateBeat, LoginRule, MultiLogin, Presence, Registration, SessionEntry, victims,
};

/// Generates the suite's `#[tokio::test]`s for a presence constructor (see the module docs).
#[macro_export]
macro_rules! presence_testsuite {
    ($new_presence:path) => {
        $crate::presence_testsuite!(@cases $new_presence;
            same_device_replaces_other_devices_stay,
            kick_policy_keeps_one_session_per_class_allow_keeps_n,
            a_stale_reconnect_cannot_replace_a_fresher_session,
            resume_repoints_the_session_only_while_its_epoch_is_current,
            unregister_names_the_gate_as_session_ids_are_unique_per_gate_only,
            a_scan_sees_every_online_user_of_the_appcode_once,
            entries_round_trip_every_field,
            random_logins_follow_the_shared_victims_rule,
            counts_follow_logins_replacements_and_logouts,
            concurrent_logins_of_one_user_leave_exactly_the_policy_survivors,
            concurrent_logins_of_one_device_leave_the_newest,
            gate_heartbeats_are_live_within_their_ttl,
            purge_gate_removes_its_sessions_and_nothing_else,
            restore_sessions_puts_back_epochs_without_the_policy,
        );
    };
    (@cases $new_presence:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (presence, _guard) = $new_presence().await;
                $crate::testsuite::$case(presence).await;
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A session of appcode 129 on gate g1 without a class.
pub fn entry(uid: &str, device: &str, session_id: u64) -> SessionEntry {
    SessionEntry {
        appcode: 129,
        uid: uid.into(),
        device_id: device.into(),
        device_class: String::new(),
        epoch: 0,
        gate_id: "g1".into(),
        session_id,
        since_ms: 0,
    }
}

/// [`entry`] with a device class.
pub fn classed(uid: &str, device: &str, class: &str, session_id: u64) -> SessionEntry {
    SessionEntry {
        device_class: class.into(),
        ..entry(uid, device, session_id)
    }
}

/// Registers `e` under `rule`; returns (epoch, replaced session ids, sorted).
pub async fn login<P: Presence>(p: &P, e: SessionEntry, rule: LoginRule) -> (u64, Vec<u64>) {
    match p.register(e, &rule).await.expect("register") {
        Registration::Accepted { epoch, replaced } => {
            let mut ids: Vec<u64> = replaced.iter().map(|s| s.session_id).collect();
            ids.sort_unstable();
            (epoch, ids)
        }
        other => panic!("refused: {other:?}"),
    }
}

/// The session ids of user `uid` of appcode 129, sorted.
pub async fn ids<P: Presence>(p: &P, uid: &str) -> Vec<u64> {
    let mut ids: Vec<u64> = p
        .sessions(129, uid)
        .await
        .expect("sessions")
        .iter()
        .map(|s| s.session_id)
        .collect();
    ids.sort_unstable();
    ids
}

fn allow(max_sessions: usize) -> LoginRule {
    LoginRule {
        policy: MultiLogin::Allow { max_sessions },
        prior_epoch: 0,
    }
}

fn kick(max_sessions: usize) -> LoginRule {
    LoginRule {
        policy: MultiLogin::Kick { max_sessions },
        prior_epoch: 0,
    }
}

/// Every uid of `appcode` a full scan returns, sorted, with repeats removed.
pub async fn scan_all<P: Presence>(p: &P, appcode: u32, limit: usize) -> Vec<String> {
    let (mut seen, mut cursor) = (BTreeSet::new(), 0);
    for _ in 0..100_000 {
        let (page, next) = p
            .online_uids(appcode, cursor, limit)
            .await
            .expect("online_uids");
        seen.extend(page);
        if next == 0 {
            return seen.into_iter().collect();
        }
        cursor = next;
    }
    panic!("the scan did not end");
}

/// A small deterministic generator for test data (no seed files, same run every time).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

// ---------------------------------------------------------------------------------------------
// Cases.

/// A login from the same device replaces it; other devices stay; epochs grow.
pub async fn same_device_replaces_other_devices_stay<P: Presence>(p: P) {
    let rule = LoginRule::default();
    let (e1, none) = login(&p, entry("a", "phone", 1), rule).await;
    assert!(none.is_empty());
    let (e2, none) = login(&p, entry("a", "web", 2), rule).await;
    assert!(none.is_empty());
    let (e3, replaced) = login(&p, entry("a", "phone", 3), rule).await;
    assert_eq!(replaced, vec![1]);
    assert!(e1 < e2 && e2 < e3, "epochs grow: {e1} {e2} {e3}");
    assert_eq!(ids(&p, "a").await, vec![2, 3]);
    assert_eq!(p.session_count().await.unwrap(), 2);
    // The replaced session's late unregister must not remove the newer one.
    assert!(!p.unregister(129, "a", "g1", 1).await.unwrap());
    assert!(p.unregister(129, "a", "g1", 3).await.unwrap());
    assert!(p.unregister(129, "a", "g1", 2).await.unwrap());
    assert!(p.sessions(129, "a").await.unwrap().is_empty());
    assert_eq!(p.session_count().await.unwrap(), 0);
}

/// `Kick` keeps one session per class (and at most `max_sessions`); `Allow` keeps n.
pub async fn kick_policy_keeps_one_session_per_class_allow_keeps_n<P: Presence>(p: P) {
    let kick5 = LoginRule::default();
    login(&p, classed("a", "phone-1", "phone", 1), kick5).await;
    login(&p, classed("a", "web-1", "web", 2), kick5).await;
    let (_, replaced) = login(&p, classed("a", "phone-2", "phone", 3), kick5).await;
    assert_eq!(replaced, vec![1], "a newer phone replaces the older phone");
    assert_eq!(ids(&p, "a").await, vec![2, 3]);

    let allow2 = allow(2);
    login(&p, classed("b", "p1", "phone", 10), allow2).await;
    let (_, none) = login(&p, classed("b", "p2", "phone", 11), allow2).await;
    assert!(none.is_empty(), "two phones are allowed");
    let (_, replaced) = login(&p, classed("b", "p3", "phone", 12), allow2).await;
    assert_eq!(replaced, vec![10], "the third replaces the oldest");
    let (_, replaced) = login(&p, classed("b", "p3", "phone", 13), allow2).await;
    assert_eq!(replaced, vec![12], "the same device replaces itself only");
    assert_eq!(ids(&p, "b").await, vec![11, 13]);

    // Under kick, invented classes cannot multiply sessions: the cap replaces the oldest.
    let kick2 = kick(2);
    login(&p, classed("c", "d1", "x1", 20), kick2).await;
    login(&p, classed("c", "d2", "x2", 21), kick2).await;
    let (_, replaced) = login(&p, classed("c", "d3", "x3", 22), kick2).await;
    assert_eq!(replaced, vec![20], "beyond max_sessions the oldest goes");
    assert_eq!(ids(&p, "c").await, vec![21, 22]);
}

/// A reconnect carrying an older `prior_epoch` cannot replace a newer session.
pub async fn a_stale_reconnect_cannot_replace_a_fresher_session<P: Presence>(p: P) {
    let fresh = LoginRule::default();
    let (old_epoch, _) = login(&p, classed("a", "phone-1", "phone", 1), fresh).await;
    // phone-2 logs in: phone-1 is replaced.
    let (new_epoch, replaced) = login(&p, classed("a", "phone-2", "phone", 2), fresh).await;
    assert_eq!(replaced, vec![1]);
    // phone-1 reconnects by itself with its old epoch: refused, phone-2 stays.
    let stale = LoginRule {
        prior_epoch: old_epoch,
        ..fresh
    };
    match p
        .register(classed("a", "phone-1", "phone", 3), &stale)
        .await
        .unwrap()
    {
        Registration::Superseded { by } => {
            assert_eq!((by.session_id, by.epoch), (2, new_epoch));
            assert_eq!(by.device_id, "phone-2");
        }
        other => panic!("a stale login was accepted: {other:?}"),
    }
    assert_eq!(ids(&p, "a").await, vec![2]);
    assert_eq!(
        p.session_count().await.unwrap(),
        1,
        "a refusal changes nothing"
    );
    // The same device reconnecting with its own current epoch replaces itself.
    let own = LoginRule {
        prior_epoch: new_epoch,
        ..fresh
    };
    let (_, replaced) = login(&p, classed("a", "phone-2", "phone", 4), own).await;
    assert_eq!(replaced, vec![2]);
    // A login the user asked for (no prior epoch) always wins.
    let (_, replaced) = login(&p, classed("a", "phone-1", "phone", 5), fresh).await;
    assert_eq!(replaced, vec![4]);

    // With several newer sessions in the way, the newest names the refusal.
    let allow1 = allow(1);
    let (first, _) = login(&p, entry("m", "d1", 10), allow(3)).await;
    login(&p, entry("m", "d2", 11), allow(3)).await;
    let (newest, _) = login(&p, entry("m", "d3", 12), allow(3)).await;
    let stale = LoginRule {
        prior_epoch: first,
        ..allow1
    };
    match p.register(entry("m", "d4", 13), &stale).await.unwrap() {
        Registration::Superseded { by } => assert_eq!((by.session_id, by.epoch), (12, newest)),
        other => panic!("a stale login was accepted: {other:?}"),
    }
    assert_eq!(ids(&p, "m").await, vec![10, 11, 12]);
}

/// RESUME re-points a session at a new connection while its epoch is registered.
pub async fn resume_repoints_the_session_only_while_its_epoch_is_current<P: Presence>(p: P) {
    let (epoch, _) = login(&p, entry("a", "phone", 1), LoginRule::default()).await;
    let before = p
        .resume(129, "a", "phone", epoch, "g2", 7)
        .await
        .unwrap()
        .expect("the session is there");
    assert_eq!((before.gate_id.as_str(), before.session_id), ("g1", 1));
    assert_eq!(before.epoch, epoch);
    let now = p.sessions(129, "a").await.unwrap();
    assert_eq!(
        (now[0].gate_id.as_str(), now[0].session_id, now[0].epoch),
        ("g2", 7, epoch)
    );
    // The old connection's late unregister leaves the resumed session alone.
    assert!(!p.unregister(129, "a", "g1", 1).await.unwrap());
    assert!(
        p.resume(129, "a", "phone", epoch + 1, "g2", 8)
            .await
            .unwrap()
            .is_none(),
        "another epoch is not this session"
    );
    assert!(
        p.resume(129, "a", "web", epoch, "g2", 8)
            .await
            .unwrap()
            .is_none(),
        "another device is not this session"
    );
    login(&p, entry("a", "phone", 9), LoginRule::default()).await;
    assert!(
        p.resume(129, "a", "phone", epoch, "g2", 10)
            .await
            .unwrap()
            .is_none(),
        "a replaced session cannot be resumed"
    );
    assert_eq!(p.session_count().await.unwrap(), 1);
}

/// Unregister names the gate: session ids are unique per gate only.
pub async fn unregister_names_the_gate_as_session_ids_are_unique_per_gate_only<P: Presence>(p: P) {
    let rule = allow(5);
    login(&p, entry("a", "phone", 1), rule).await;
    let on_g2 = SessionEntry {
        gate_id: "g2".into(),
        ..entry("a", "web", 1)
    };
    login(&p, on_g2, rule).await;
    assert!(!p.unregister(129, "a", "g3", 1).await.unwrap());
    assert!(!p.unregister(129, "nobody", "g1", 1).await.unwrap());
    assert!(p.unregister(129, "a", "g1", 1).await.unwrap());
    let left = p.sessions(129, "a").await.unwrap();
    assert_eq!(left.len(), 1, "session 1 of g2 is another session");
    assert_eq!(
        (left[0].gate_id.as_str(), left[0].device_id.as_str()),
        ("g2", "web")
    );
    assert_eq!(p.session_count().await.unwrap(), 1);
}

/// A scan of an appcode sees each of its online users; counts agree.
pub async fn a_scan_sees_every_online_user_of_the_appcode_once<P: Presence>(p: P) {
    let rule = LoginRule::default();
    for i in 0..500 {
        p.register(entry(&format!("u{i}"), "phone", i), &rule)
            .await
            .unwrap();
    }
    p.register(entry("u0", "web", 1000), &rule).await.unwrap();
    let mut other = entry("x", "phone", 2000);
    other.appcode = 130;
    p.register(other, &rule).await.unwrap();
    let counts = p.appcode_counts(129).await.unwrap();
    assert_eq!(
        counts,
        AppcodeCounts {
            users: 500,
            sessions: 501
        }
    );
    let mut expected: Vec<String> = (0..500).map(|i| format!("u{i}")).collect();
    expected.sort();
    assert_eq!(scan_all(&p, 129, 50).await, expected);
    assert_eq!(scan_all(&p, 129, 1).await, expected, "tiny pages");
    assert_eq!(scan_all(&p, 130, 1000).await, vec!["x".to_owned()]);
    assert!(scan_all(&p, 131, 10).await.is_empty());
    // Users who went offline are not scanned.
    for i in 0..250 {
        assert!(p.unregister(129, &format!("u{i}"), "g1", i).await.unwrap());
    }
    let left = scan_all(&p, 129, 64).await;
    assert_eq!(left.len(), 251, "u0 keeps its web session: {left:?}");
    assert!(left.contains(&"u0".to_owned()) && !left.contains(&"u1".to_owned()));
}

/// Every field of an entry comes back as registered, whatever its bytes.
pub async fn entries_round_trip_every_field<P: Presence>(p: P) {
    let odd_uids = [
        "{braces}",
        "a}b{c",
        "ünï cödé 用户",
        "with space\nand \"quotes\" \\ /",
        "",
    ];
    for (i, uid) in odd_uids.iter().enumerate() {
        let e = SessionEntry {
            appcode: u32::MAX,
            uid: (*uid).to_owned(),
            device_id: format!("dev {{{i}}} \u{e9}"),
            device_class: "cl\"ass".into(),
            epoch: 0,
            gate_id: "gate/1:7700 {x}".into(),
            session_id: u64::MAX - i as u64,
            since_ms: 1_780_000_000_123 + i as u64,
        };
        let (epoch, replaced) = login(&p, e.clone(), LoginRule::default()).await;
        assert!(replaced.is_empty());
        let got = p.sessions(u32::MAX, uid).await.unwrap();
        assert_eq!(
            got,
            vec![SessionEntry { epoch, ..e.clone() }],
            "uid {uid:?}"
        );
        assert!(p.sessions(u32::MAX - 1, uid).await.unwrap().is_empty());
    }
    assert_eq!(
        scan_all(&p, u32::MAX, 2).await,
        odd_uids
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    for (i, uid) in odd_uids.iter().enumerate() {
        assert!(
            p.unregister(u32::MAX, uid, "gate/1:7700 {x}", u64::MAX - i as u64)
                .await
                .unwrap()
        );
    }
    assert_eq!(p.session_count().await.unwrap(), 0);
}

/// Random logins and logouts: each login replaces exactly what [`victims`] says, epochs grow
/// per user, and the sessions match a model.
pub async fn random_logins_follow_the_shared_victims_rule<P: Presence>(p: P) {
    let mut rng = Lcg(7);
    let mut model: BTreeMap<String, Vec<SessionEntry>> = BTreeMap::new();
    let mut last_epoch: BTreeMap<String, u64> = BTreeMap::new();
    let policies = [
        MultiLogin::Kick { max_sessions: 1 },
        MultiLogin::Kick { max_sessions: 3 },
        MultiLogin::Allow { max_sessions: 2 },
        MultiLogin::Allow { max_sessions: 4 },
    ];
    for step in 0..300u64 {
        let uid = format!("r{}", rng.below(4));
        let sessions = model.entry(uid.clone()).or_default();
        if rng.below(5) == 0 && !sessions.is_empty() {
            let gone = sessions.remove(rng.below(sessions.len() as u64) as usize);
            assert!(
                p.unregister(129, &uid, &gone.gate_id, gone.session_id)
                    .await
                    .unwrap()
            );
            continue;
        }
        let mut e = classed(
            &uid,
            &format!("d{}", rng.below(5)),
            ["", "phone", "web"][rng.below(3) as usize],
            step,
        );
        e.gate_id = format!("g{}", rng.below(3));
        let policy = policies[rng.below(4) as usize];
        let mut expected: Vec<u64> = victims(sessions, &e, policy)
            .into_iter()
            .map(|i| sessions[i].session_id)
            .collect();
        expected.sort_unstable();
        let (epoch, replaced) = login(
            &p,
            e.clone(),
            LoginRule {
                policy,
                prior_epoch: 0,
            },
        )
        .await;
        assert_eq!(replaced, expected, "step {step}: {e:?} under {policy:?}");
        let last = last_epoch.entry(uid.clone()).or_default();
        assert!(epoch > *last, "step {step}: epoch {epoch} after {last}");
        *last = epoch;
        sessions.retain(|s| !replaced.contains(&s.session_id));
        sessions.push(SessionEntry { epoch, ..e });
    }
    let mut total = 0;
    for (uid, sessions) in &model {
        let mut want = sessions.clone();
        want.sort_by_key(|s| s.epoch);
        let mut got = p.sessions(129, uid).await.unwrap();
        got.sort_by_key(|s| s.epoch);
        assert_eq!(got, want, "user {uid}");
        total += sessions.len() as u64;
    }
    assert_eq!(p.session_count().await.unwrap(), total);
    let users = model.values().filter(|s| !s.is_empty()).count() as u64;
    assert_eq!(
        p.appcode_counts(129).await.unwrap(),
        AppcodeCounts {
            users,
            sessions: total
        }
    );
}

/// Counts follow logins, replacements, resumes and logouts, per appcode and in all.
pub async fn counts_follow_logins_replacements_and_logouts<P: Presence>(p: P) {
    assert_eq!(p.session_count().await.unwrap(), 0);
    assert_eq!(
        p.appcode_counts(129).await.unwrap(),
        AppcodeCounts::default()
    );
    let rule = allow(3);
    for i in 0..10u64 {
        login(&p, entry(&format!("c{i}"), "phone", i), rule).await;
        login(&p, entry(&format!("c{i}"), "web", 100 + i), rule).await;
    }
    let mut other = entry("c0", "phone", 1000);
    other.appcode = 7;
    login(&p, other, rule).await;
    assert_eq!(p.session_count().await.unwrap(), 21);
    assert_eq!(
        p.appcode_counts(129).await.unwrap(),
        AppcodeCounts {
            users: 10,
            sessions: 20
        }
    );
    assert_eq!(
        p.appcode_counts(7).await.unwrap(),
        AppcodeCounts {
            users: 1,
            sessions: 1
        }
    );
    // A replacement keeps the count; a resume too.
    let (epoch, replaced) = login(&p, entry("c1", "phone", 200), rule).await;
    assert_eq!(replaced, vec![1]);
    assert!(
        p.resume(129, "c1", "phone", epoch, "g9", 201)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(p.session_count().await.unwrap(), 21);
    for i in 0..10u64 {
        assert!(
            p.unregister(129, &format!("c{i}"), "g1", 100 + i)
                .await
                .unwrap()
        );
    }
    assert_eq!(
        p.appcode_counts(129).await.unwrap(),
        AppcodeCounts {
            users: 10,
            sessions: 10
        }
    );
    for i in 2..10u64 {
        assert!(p.unregister(129, &format!("c{i}"), "g1", i).await.unwrap());
    }
    assert!(p.unregister(129, "c0", "g1", 0).await.unwrap());
    assert_eq!(
        p.appcode_counts(129).await.unwrap(),
        AppcodeCounts {
            users: 1,
            sessions: 1
        }
    );
    assert_eq!(p.session_count().await.unwrap(), 2);
}

/// Many logins of one user at once, from different tasks: exactly the sessions the policy
/// keeps survive (the newest by epoch), every other one is replaced exactly once, and epochs
/// are distinct and follow the order the backend decided them in.
pub async fn concurrent_logins_of_one_user_leave_exactly_the_policy_survivors<P: Presence>(p: P) {
    const LOGINS: u64 = 40;
    let p = Arc::new(p);
    let mut tasks = Vec::new();
    for i in 0..LOGINS {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            // Distinct devices and classes: only the cap of 3 applies.
            let mut e = classed("hot", &format!("dev{i}"), &format!("class{i}"), i);
            e.gate_id = format!("g{}", i % 4);
            let outcome = p.register(e, &kick(3)).await.expect("register");
            match outcome {
                Registration::Accepted { epoch, replaced } => (i, epoch, replaced),
                other => panic!("refused: {other:?}"),
            }
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("task"));
    }
    let epochs: HashSet<u64> = outcomes.iter().map(|(_, e, _)| *e).collect();
    assert_eq!(epochs.len(), LOGINS as usize, "epochs are distinct");
    // Sorted by epoch, the logins are the order the backend decided them in.
    outcomes.sort_by_key(|(_, e, _)| *e);
    let mut by_epoch: Vec<u64> = outcomes.iter().map(|(i, _, _)| *i).collect();
    let survivors: Vec<u64> = by_epoch.split_off(by_epoch.len() - 3);
    let mut want = survivors.clone();
    want.sort_unstable();
    assert_eq!(
        ids(p.as_ref(), "hot").await,
        want,
        "the three newest survive"
    );
    // Every other login was replaced exactly once, and each replacement was of the then-oldest.
    let mut replaced_all: Vec<u64> = Vec::new();
    for (n, (_, _, replaced)) in outcomes.iter().enumerate() {
        let ids: Vec<u64> = replaced.iter().map(|s| s.session_id).collect();
        if n >= 3 {
            assert_eq!(
                ids,
                vec![outcomes[n - 3].0],
                "login #{n} replaces the oldest"
            );
        } else {
            assert!(ids.is_empty());
        }
        replaced_all.extend(ids);
    }
    replaced_all.sort_unstable();
    by_epoch.sort_unstable();
    assert_eq!(replaced_all, by_epoch);
    assert_eq!(p.session_count().await.unwrap(), 3);
}

/// Many logins of one device at once: one survives, the newest; each other is replaced once.
pub async fn concurrent_logins_of_one_device_leave_the_newest<P: Presence>(p: P) {
    const LOGINS: u64 = 30;
    let p = Arc::new(p);
    let mut tasks = Vec::new();
    for i in 0..LOGINS {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let mut e = entry("dup", "phone", i);
            e.gate_id = format!("g{}", i % 3);
            let outcome = p.register(e, &allow(5)).await.expect("register");
            match outcome {
                Registration::Accepted { epoch, replaced } => (i, epoch, replaced),
                other => panic!("refused: {other:?}"),
            }
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("task"));
    }
    outcomes.sort_by_key(|(_, e, _)| *e);
    let newest = outcomes.last().expect("logins").0;
    let left = p.sessions(129, "dup").await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].session_id, newest);
    assert_eq!(left[0].gate_id, format!("g{}", newest % 3));
    for n in 1..outcomes.len() {
        let ids: Vec<u64> = outcomes[n].2.iter().map(|s| s.session_id).collect();
        assert_eq!(
            ids,
            vec![outcomes[n - 1].0],
            "each login replaces the previous"
        );
        assert!(outcomes[n - 1].1 < outcomes[n].1);
    }
    assert!(outcomes[0].2.is_empty());
    assert_eq!(p.session_count().await.unwrap(), 1);
}

/// A heartbeat is live within its ttl, replaced by the next one, and gone after its ttl.
pub async fn gate_heartbeats_are_live_within_their_ttl<P: Presence>(p: P) {
    assert!(p.live_gates().await.unwrap().is_empty());
    let beat = |id: &str, connections: u64| GateBeat {
        gate_id: id.into(),
        addrs: vec!["10.0.0.1:7700".into(), "ws://10.0.0.1:7701".into()],
        connections,
        load: 0.25,
        draining: false,
        last_seen_ms: 0,
        ttl_ms: 0,
    };
    let long = Duration::from_secs(600);
    p.gate_heartbeat(beat("gate-b", 5), long).await.unwrap();
    p.gate_heartbeat(beat("gate-a", 3), long).await.unwrap();
    let mut newer = beat("gate-b", 9);
    newer.draining = true;
    newer.load = 0.5;
    p.gate_heartbeat(newer, long).await.unwrap();
    let live = p.live_gates().await.unwrap();
    let ids: Vec<&str> = live.iter().map(|g| g.gate_id.as_str()).collect();
    assert_eq!(ids, vec!["gate-a", "gate-b"]);
    let b = &live[1];
    assert_eq!(
        (b.connections, b.load, b.draining, b.addrs.clone()),
        (9, 0.5, true, beat("x", 0).addrs)
    );
    assert_eq!(b.ttl_ms, 600_000);
    assert!(
        b.last_seen_ms > 1_600_000_000_000,
        "a unix time: {}",
        b.last_seen_ms
    );

    // A short ttl: live at first (a generous 2 s), then gone; waited for, never slept out.
    p.gate_heartbeat(beat("gate-c", 1), Duration::from_secs(2))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let live = p.live_gates().await.unwrap();
        if !live.iter().any(|g| g.gate_id == "gate-c") {
            break;
        }
        assert!(Instant::now() < deadline, "gate-c outlived its ttl");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ids: Vec<String> = p
        .live_gates()
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.gate_id)
        .collect();
    assert_eq!(ids, vec!["gate-a", "gate-b"]);
    // A beat after silence makes it live again.
    p.gate_heartbeat(beat("gate-c", 1), long).await.unwrap();
    assert_eq!(p.live_gates().await.unwrap().len(), 3);
}

/// Purging a gate removes the sessions registered on it, not those that moved away by RESUME
/// or live elsewhere; it is idempotent.
pub async fn purge_gate_removes_its_sessions_and_nothing_else<P: Presence>(p: P) {
    let rule = allow(5);
    let on = |gate: &str, uid: &str, device: &str, sid: u64| SessionEntry {
        gate_id: gate.into(),
        ..entry(uid, device, sid)
    };
    for i in 0..20u64 {
        login(&p, on("dead", &format!("p{i}"), "phone", i), rule).await;
        login(&p, on("alive", &format!("p{i}"), "web", i), rule).await;
    }
    let mut other = on("dead", "q", "phone", 99);
    other.appcode = 130;
    login(&p, other, rule).await;
    // p0's phone resumed on the live gate; p1's phone was replaced by a login on it.
    let epoch = p
        .sessions(129, "p0")
        .await
        .unwrap()
        .iter()
        .find(|s| s.device_id == "phone")
        .expect("p0's phone")
        .epoch;
    assert!(
        p.resume(129, "p0", "phone", epoch, "alive", 500)
            .await
            .unwrap()
            .is_some()
    );
    login(&p, on("alive", "p1", "phone", 501), rule).await;
    // p2's phone logged out normally.
    assert!(p.unregister(129, "p2", "dead", 2).await.unwrap());
    p.gate_heartbeat(
        GateBeat {
            gate_id: "dead".into(),
            ..GateBeat::default()
        },
        Duration::from_secs(600),
    )
    .await
    .unwrap();
    assert_eq!(p.session_count().await.unwrap(), 40);

    assert_eq!(p.purge_gate("dead").await.unwrap(), 17 + 1);
    assert!(
        p.live_gates().await.unwrap().is_empty(),
        "its heartbeat is gone"
    );
    assert_eq!(p.session_count().await.unwrap(), 22);
    for i in 0..20u64 {
        let sessions = p.sessions(129, &format!("p{i}")).await.unwrap();
        assert!(
            sessions.iter().all(|s| s.gate_id == "alive"),
            "{sessions:?}"
        );
        let want = if i < 2 { 2 } else { 1 };
        assert_eq!(sessions.len(), want, "p{i}: {sessions:?}");
    }
    assert!(p.sessions(130, "q").await.unwrap().is_empty());
    assert_eq!(
        p.appcode_counts(129).await.unwrap(),
        AppcodeCounts {
            users: 20,
            sessions: 22
        }
    );
    assert_eq!(p.purge_gate("dead").await.unwrap(), 0, "idempotent");
    assert_eq!(p.purge_gate("never-seen").await.unwrap(), 0);
    // A purged gate that comes back registers afresh and can be purged again.
    login(&p, on("dead", "p5", "phone", 600), rule).await;
    assert_eq!(p.purge_gate("dead").await.unwrap(), 1);
    assert_eq!(p.purge_gate("alive").await.unwrap(), 22);
    assert_eq!(p.session_count().await.unwrap(), 0);
}

/// Restored sessions keep their epochs and skip the login policy; a stale one is skipped;
/// later logins get larger epochs; restored sessions resume, unregister and purge as usual.
pub async fn restore_sessions_puts_back_epochs_without_the_policy<P: Presence>(p: P) {
    let now_epoch = |ms: u64| (1_780_000_000_000 + ms) << 20;
    let restored = |uid: &str, device: &str, sid: u64, epoch: u64| SessionEntry {
        epoch,
        gate_id: "g7".into(),
        since_ms: 1_780_000_000_000,
        ..classed(uid, device, "phone", sid)
    };
    let far_future = u64::MAX >> 2;
    // Two phones of one user although Kick allows one per class: no policy on restore.
    let batch = vec![
        restored("u", "phone-1", 1, now_epoch(1)),
        restored("u", "phone-2", 2, now_epoch(2)),
        restored("v", "phone", 3, far_future),
    ];
    assert_eq!(p.restore_sessions(batch.clone()).await.unwrap(), 3);
    let mut got = p.sessions(129, "u").await.unwrap();
    got.sort_by_key(|s| s.epoch);
    assert_eq!(got, batch[..2].to_vec());
    assert_eq!(p.sessions(129, "v").await.unwrap(), vec![batch[2].clone()]);
    assert_eq!(p.session_count().await.unwrap(), 3);
    // Restoring the same again changes nothing; a stale epoch of the device is skipped.
    assert_eq!(p.restore_sessions(batch.clone()).await.unwrap(), 0);
    assert_eq!(
        p.restore_sessions(vec![restored("u", "phone-1", 9, now_epoch(0))])
            .await
            .unwrap(),
        0
    );
    // A newer epoch of the device replaces the older.
    assert_eq!(
        p.restore_sessions(vec![restored("u", "phone-2", 10, now_epoch(3))])
            .await
            .unwrap(),
        1
    );
    assert_eq!(ids(&p, "u").await, vec![1, 10]);
    assert_eq!(p.session_count().await.unwrap(), 3);
    // A later login of v gets an epoch above the restored one, and the policy applies again.
    let (epoch, replaced) = login(&p, classed("v", "phone-x", "phone", 4), kick(5)).await;
    assert!(epoch > far_future, "{epoch} after {far_future}");
    assert_eq!(replaced, vec![3]);
    // Restored sessions resume, unregister and purge like any other.
    assert!(
        p.resume(129, "u", "phone-1", now_epoch(1), "g8", 11)
            .await
            .unwrap()
            .is_some()
    );
    assert!(p.unregister(129, "u", "g8", 11).await.unwrap());
    assert_eq!(p.purge_gate("g7").await.unwrap(), 1, "u's phone-2");
    assert_eq!(p.session_count().await.unwrap(), 1);
    assert_eq!(p.restore_sessions(Vec::new()).await.unwrap(), 0);
}
