//! Presence on Redis or Redis Cluster ([`RedisPresence`]), for a cluster of longlink
//! processes, and node-id leases for Snowflake-style msgids ([`RedisNodeLease`]).
//!
//! Every login, RESUME, logout and restore is one Lua script (EVALSHA, reloaded on NOSCRIPT
//! by `redis::Script`) that reads and changes one user's keys atomically, so concurrent
//! logins of a user on different gates resolve in the order Redis runs them, with the same
//! multi-login rule as [`longlink_presence::victims`]. Presence is soft state: after Redis
//! loses its data, gates put their sessions back ([`Presence::restore_sessions`]).
//!
//! ## Key layout (`P` = the key prefix, default `ll:p`)
//!
//! A user `(appcode, uid)` falls in one of [`BUCKETS`] buckets (CRC-32 of the uid). The hash
//! tag `{appcode:bucket}` is on every key of the user *and* on its bucket's counters, so a
//! script updates both atomically on one slot even in a cluster:
//!
//! | key | type | content |
//! |---|---|---|
//! | `P:u:{A:b}:<uid>` | hash | `<epoch>` → JSON `[gate, session, device, class, since_ms]`; `e` → the user's last epoch (kept [`RedisPresenceOptions::epoch_linger`] after the last session) |
//! | `P:i:{A:b}` | hash | uid → its session count (users online in the bucket; scanned by `online_uids`) |
//! | `P:n:{A:b}` | string | sessions in the bucket |
//! | `P:appcodes` | set | appcodes ever registered (for `session_count`) |
//! | `P:g:{<gate>}` | set | JSON `[appcode, uid, session]` of the gate's sessions (for `purge_gate`) |
//! | `P:gates` | hash | gate id → `<last seen ms>:<ttl ms>:<beat JSON>` |
//!
//! ## Costs
//!
//! - register: 2 round trips (the appcode and gate-index `SADD`s, then the script; the
//!   replaced sessions' `SREM`s run after it); the script is O(the user's sessions).
//!   resume, unregister: 2. sessions: 1 `HGETALL`.
//! - `appcode_counts`: [`BUCKETS`] tiny scripts, sent concurrently on the one connection;
//!   `session_count`: that for every appcode in `P:appcodes`. O(buckets × appcodes), never
//!   O(users).
//! - `online_uids`: `HSCAN` of the buckets in turn; the cursor is `bucket << 40 | HSCAN cursor`.
//! - `purge_gate`: `SSCAN` of the gate's index, then one unregister script per session
//!   (concurrently per page), which re-checks that the session is still on that gate.
//! - Epochs are `max(Redis TIME ms << 20, the user's last epoch + 1)`, computed in the
//!   script: strictly increasing per user; across users trend-increasing only (two users in
//!   different slots may get the same epoch in one millisecond), because a global counter
//!   would be a cross-slot key.
//!
//! The per-gate index and `P:appcodes` are updated outside the user's script (other slots):
//! an index member is added *before* the script and removed *after* it, so a failure in
//! between leaves a stale member, which purge skips (its script finds no such session),
//! never a session purge cannot find.
//!
//! Every Redis call is bounded by [`RedisPresenceOptions::op_timeout`]; a failure or a
//! timeout is [`PresenceError::Unavailable`]. The single-node connection reconnects by itself
//! (redis-rs's `ConnectionManager`) and scripts are reloaded after a restart, so presence
//! works again once Redis is back, with no manual step.

use std::time::Duration;

use async_trait::async_trait;
use futures::future::try_join_all;
use longlink_presence::{
    AppcodeCounts, GateBeat, LoginRule, MultiLogin, Presence, PresenceError, Registration,
    SessionEntry,
};
use redis::{Script, Value};

mod conn;
pub mod node_lease;

pub use conn::{ConnectOptions, RedisConn};
pub use node_lease::{LeaseError, LeaseState, RedisNodeLease};

/// Buckets per appcode. All processes must agree, so it is a constant: changing it changes
/// the key layout (presence is soft state: a flush and re-registration migrate it).
pub const BUCKETS: u32 = 64;

/// Bits of an `online_uids` cursor left for the `HSCAN` cursor of the current bucket.
const INNER_BITS: u32 = 40;

/// Options of [`RedisPresence`].
#[derive(Debug, Clone)]
pub struct RedisPresenceOptions {
    /// Prefix of every key (no `{` or `}`): several deployments may share one Redis.
    pub key_prefix: String,
    /// How to connect (single or cluster, connect and response timeouts).
    pub connect: ConnectOptions,
    /// The bound on each presence operation's Redis calls.
    pub op_timeout: Duration,
    /// How long a user's last epoch is kept after its last session went, so that a quick
    /// re-login gets a larger epoch even if Redis's clock stepped back (a failover).
    pub epoch_linger: Duration,
}

impl Default for RedisPresenceOptions {
    fn default() -> Self {
        Self {
            key_prefix: "ll:p".into(),
            connect: ConnectOptions::default(),
            op_timeout: Duration::from_secs(3),
            epoch_linger: Duration::from_secs(3600),
        }
    }
}

/// The Lua scripts (see `src/lua/`); each per-user one starts with `common.lua`.
struct Scripts {
    register: Script,
    resume: Script,
    unregister: Script,
    restore: Script,
    bucket_counts: Script,
    heartbeat: Script,
    live_gates: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            register: Script::new(concat!(
                include_str!("lua/common.lua"),
                include_str!("lua/register.lua")
            )),
            resume: Script::new(include_str!("lua/resume.lua")),
            unregister: Script::new(concat!(
                include_str!("lua/common.lua"),
                include_str!("lua/unregister.lua")
            )),
            restore: Script::new(concat!(
                include_str!("lua/common.lua"),
                include_str!("lua/restore.lua")
            )),
            bucket_counts: Script::new(include_str!("lua/bucket_counts.lua")),
            heartbeat: Script::new(include_str!("lua/heartbeat.lua")),
            live_gates: Script::new(include_str!("lua/live_gates.lua")),
        }
    }
}

/// Presence on Redis or Redis Cluster (see the crate docs for the layout and costs).
pub struct RedisPresence {
    conn: RedisConn,
    prefix: String,
    op_timeout: Duration,
    linger_ms: u64,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence")
            .field("conn", &self.conn)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A user's keys: its hash, its bucket's uid index and session count.
struct UserKeys([String; 3]);

impl RedisPresence {
    /// Connects with default options: one URL = a single Redis; several URLs, or a
    /// `redis+cluster://` URL = a Redis Cluster.
    ///
    /// # Errors
    /// A bad URL, or Redis unreachable ([`PresenceError::Unavailable`]).
    pub async fn connect<S: AsRef<str>>(urls: &[S]) -> Result<Self, PresenceError> {
        Self::connect_with(urls, RedisPresenceOptions::default()).await
    }

    /// Connects with `options`.
    ///
    /// # Errors
    /// A bad URL or prefix, or Redis unreachable ([`PresenceError::Unavailable`]).
    pub async fn connect_with<S: AsRef<str>>(
        urls: &[S],
        options: RedisPresenceOptions,
    ) -> Result<Self, PresenceError> {
        let conn = RedisConn::connect(urls, &options.connect)
            .await
            .map_err(unavailable)?;
        Self::with_connection(conn, options)
    }

    /// Presence over an existing connection (shared with, say, a [`RedisNodeLease`]).
    ///
    /// # Errors
    /// The prefix holds `{` or `}` (it would break the hash tags).
    pub fn with_connection(
        conn: RedisConn,
        options: RedisPresenceOptions,
    ) -> Result<Self, PresenceError> {
        if options.key_prefix.contains(['{', '}']) {
            return Err(PresenceError::Unavailable(format!(
                "bad Redis key prefix {:?}: no braces allowed",
                options.key_prefix
            )));
        }
        Ok(Self {
            conn,
            prefix: options.key_prefix,
            op_timeout: options.op_timeout,
            linger_ms: u64::try_from(options.epoch_linger.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            scripts: Scripts::new(),
        })
    }

    /// The connection, to share.
    pub fn connection(&self) -> RedisConn {
        self.conn.clone()
    }

    fn bucket(uid: &str) -> u32 {
        crc32fast::hash(uid.as_bytes()) % BUCKETS
    }

    fn bucket_keys(&self, appcode: u32, bucket: u32) -> (String, String) {
        let p = &self.prefix;
        (
            format!("{p}:i:{{{appcode}:{bucket}}}"),
            format!("{p}:n:{{{appcode}:{bucket}}}"),
        )
    }

    fn user_keys(&self, appcode: u32, uid: &str) -> UserKeys {
        let bucket = Self::bucket(uid);
        let (index, count) = self.bucket_keys(appcode, bucket);
        let p = &self.prefix;
        UserKeys([format!("{p}:u:{{{appcode}:{bucket}}}:{uid}"), index, count])
    }

    fn gate_key(&self, gate_id: &str) -> String {
        format!("{}:g:{{{gate_id}}}", self.prefix)
    }

    fn appcodes_key(&self) -> String {
        format!("{}:appcodes", self.prefix)
    }

    fn gates_key(&self) -> String {
        format!("{}:gates", self.prefix)
    }

    /// A member of a gate's index.
    fn gate_member(appcode: u32, uid: &str, session_id: u64) -> String {
        serde_json::json!([appcode, uid, session_id.to_string()]).to_string()
    }

    /// Runs `fut` within the operation timeout; any failure is `Unavailable`.
    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, PresenceError> {
        match tokio::time::timeout(self.op_timeout, fut).await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(PresenceError::Unavailable(format!(
                "redis did not answer within {:?}",
                self.op_timeout
            ))),
        }
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T, PresenceError> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let mut conn = self.conn.clone();
        self.bounded(invocation.invoke_async(&mut conn)).await
    }

    async fn command<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, PresenceError> {
        let mut conn = self.conn.clone();
        self.bounded(cmd.query_async(&mut conn)).await
    }

    /// Soft-state maintenance after the user's script: a failure only leaves a stale index
    /// member (see the crate docs), so it is logged, not returned.
    async fn srem_soft(&self, gate_id: &str, member: String) {
        let cmd = redis::cmd("SREM")
            .arg(self.gate_key(gate_id))
            .arg(member)
            .to_owned();
        if let Err(err) = self.command::<i64>(cmd).await {
            tracing::debug!(gate_id, %err, "presence: gate index SREM failed; left stale");
        }
    }

    /// Index and appcode set, before a session is added on `gate_id`.
    async fn before_add(
        &self,
        appcode: u32,
        uid: &str,
        gate_id: &str,
        session_id: u64,
    ) -> Result<(), PresenceError> {
        let sadd_gate = redis::cmd("SADD")
            .arg(self.gate_key(gate_id))
            .arg(Self::gate_member(appcode, uid, session_id))
            .to_owned();
        let sadd_appcode = redis::cmd("SADD")
            .arg(self.appcodes_key())
            .arg(appcode)
            .to_owned();
        futures::try_join!(
            self.command::<i64>(sadd_gate),
            self.command::<i64>(sadd_appcode)
        )?;
        Ok(())
    }

    /// One bucket's (users, sessions).
    async fn bucket_counts(&self, appcode: u32, bucket: u32) -> Result<(u64, u64), PresenceError> {
        let (index, count) = self.bucket_keys(appcode, bucket);
        let (users, sessions): (i64, i64) = self
            .invoke(&self.scripts.bucket_counts, &[&index, &count], &[])
            .await?;
        Ok((users.max(0) as u64, sessions.max(0) as u64))
    }
}

fn unavailable(err: redis::RedisError) -> PresenceError {
    PresenceError::Unavailable(format!("redis: {err}"))
}

fn corrupt(what: &str) -> PresenceError {
    PresenceError::Unavailable(format!("redis: unexpected presence data: {what}"))
}

/// An entry from its epoch field and stored record.
fn decode_entry(
    appcode: u32,
    uid: &str,
    epoch: &str,
    raw: &str,
) -> Result<SessionEntry, PresenceError> {
    let record: [String; 5] = serde_json::from_str(raw).map_err(|_| corrupt("session record"))?;
    let [gate_id, session, device_id, device_class, since] = record;
    Ok(SessionEntry {
        appcode,
        uid: uid.to_owned(),
        device_id,
        device_class,
        epoch: epoch.parse().map_err(|_| corrupt("epoch"))?,
        gate_id,
        session_id: session.parse().map_err(|_| corrupt("session id"))?,
        since_ms: since.parse().map_err(|_| corrupt("since"))?,
    })
}

fn encode_record(e: &SessionEntry) -> String {
    serde_json::json!([
        e.gate_id,
        e.session_id.to_string(),
        e.device_id,
        e.device_class,
        e.since_ms.to_string()
    ])
    .to_string()
}

fn string_of(value: &Value) -> Result<String, PresenceError> {
    redis::from_redis_value_ref::<String>(value).map_err(|_| corrupt("script reply"))
}

#[async_trait]
impl Presence for RedisPresence {
    async fn register(
        &self,
        entry: SessionEntry,
        rule: &LoginRule,
    ) -> Result<Registration, PresenceError> {
        let (appcode, uid) = (entry.appcode, entry.uid.as_str());
        self.before_add(appcode, uid, &entry.gate_id, entry.session_id)
            .await?;
        let keys = self.user_keys(appcode, uid);
        let (per_class, max_sessions) = match rule.policy {
            MultiLogin::Kick { max_sessions } => ("1", max_sessions),
            MultiLogin::Allow { max_sessions } => ("0", max_sessions),
        };
        let reply: Vec<Value> = self
            .invoke(
                &self.scripts.register,
                &[&keys.0[0], &keys.0[1], &keys.0[2]],
                &[
                    uid,
                    &entry.device_id,
                    &entry.device_class,
                    &encode_record(&entry),
                    per_class,
                    &max_sessions.max(1).to_string(),
                    &rule.prior_epoch.to_string(),
                    &self.linger_ms.to_string(),
                ],
            )
            .await?;
        let fields = reply.iter().map(string_of).collect::<Result<Vec<_>, _>>()?;
        match fields.first().map(String::as_str) {
            Some("A") if fields.len() % 2 == 0 => {
                let epoch = fields[1].parse().map_err(|_| corrupt("epoch"))?;
                let replaced = fields[2..]
                    .chunks(2)
                    .map(|pair| decode_entry(appcode, uid, &pair[0], &pair[1]))
                    .collect::<Result<Vec<_>, _>>()?;
                futures::future::join_all(replaced.iter().map(|old| {
                    self.srem_soft(
                        &old.gate_id,
                        Self::gate_member(appcode, uid, old.session_id),
                    )
                }))
                .await;
                Ok(Registration::Accepted { epoch, replaced })
            }
            Some("S") if fields.len() == 3 => {
                // Refused: the index member added for it goes again (unless that member
                // names a live session, which cannot be: session ids are unique per gate).
                let by = decode_entry(appcode, uid, &fields[1], &fields[2])?;
                if (by.gate_id.as_str(), by.session_id)
                    != (entry.gate_id.as_str(), entry.session_id)
                {
                    self.srem_soft(
                        &entry.gate_id,
                        Self::gate_member(appcode, uid, entry.session_id),
                    )
                    .await;
                }
                Ok(Registration::Superseded { by })
            }
            _ => Err(corrupt("register reply")),
        }
    }

    async fn resume(
        &self,
        appcode: u32,
        uid: &str,
        device_id: &str,
        epoch: u64,
        gate_id: &str,
        session_id: u64,
    ) -> Result<Option<SessionEntry>, PresenceError> {
        self.before_add(appcode, uid, gate_id, session_id).await?;
        let keys = self.user_keys(appcode, uid);
        let epoch_s = epoch.to_string();
        let before: Option<String> = self
            .invoke(
                &self.scripts.resume,
                &[&keys.0[0]],
                &[device_id, &epoch_s, gate_id, &session_id.to_string()],
            )
            .await?;
        match before {
            Some(raw) => {
                let old = decode_entry(appcode, uid, &epoch_s, &raw)?;
                if (old.gate_id.as_str(), old.session_id) != (gate_id, session_id) {
                    self.srem_soft(
                        &old.gate_id,
                        Self::gate_member(appcode, uid, old.session_id),
                    )
                    .await;
                }
                Ok(Some(old))
            }
            None => {
                self.srem_soft(gate_id, Self::gate_member(appcode, uid, session_id))
                    .await;
                Ok(None)
            }
        }
    }

    async fn unregister(
        &self,
        appcode: u32,
        uid: &str,
        gate_id: &str,
        session_id: u64,
    ) -> Result<bool, PresenceError> {
        let keys = self.user_keys(appcode, uid);
        let removed: i64 = self
            .invoke(
                &self.scripts.unregister,
                &[&keys.0[0], &keys.0[1], &keys.0[2]],
                &[
                    uid,
                    gate_id,
                    &session_id.to_string(),
                    &self.linger_ms.to_string(),
                ],
            )
            .await?;
        // Whether or not it was there, (gate, session) names no session of the user now.
        self.srem_soft(gate_id, Self::gate_member(appcode, uid, session_id))
            .await;
        Ok(removed > 0)
    }

    async fn sessions(&self, appcode: u32, uid: &str) -> Result<Vec<SessionEntry>, PresenceError> {
        let keys = self.user_keys(appcode, uid);
        let flat: Vec<(String, String)> = self
            .command(redis::cmd("HGETALL").arg(&keys.0[0]).to_owned())
            .await?;
        let mut out = flat
            .iter()
            .filter(|(field, _)| field != "e")
            .map(|(epoch, raw)| decode_entry(appcode, uid, epoch, raw))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|s| s.epoch);
        Ok(out)
    }

    async fn session_count(&self) -> Result<u64, PresenceError> {
        let appcodes: Vec<u32> = self
            .command(redis::cmd("SMEMBERS").arg(self.appcodes_key()).to_owned())
            .await?;
        let counts = try_join_all(appcodes.into_iter().map(|a| self.appcode_counts(a))).await?;
        Ok(counts.iter().map(|c| c.sessions).sum())
    }

    async fn appcode_counts(&self, appcode: u32) -> Result<AppcodeCounts, PresenceError> {
        let buckets = try_join_all((0..BUCKETS).map(|b| self.bucket_counts(appcode, b))).await?;
        Ok(buckets
            .into_iter()
            .fold(AppcodeCounts::default(), |acc, (users, sessions)| {
                AppcodeCounts {
                    users: acc.users + users,
                    sessions: acc.sessions + sessions,
                }
            }))
    }

    async fn online_uids(
        &self,
        appcode: u32,
        cursor: u64,
        limit: usize,
    ) -> Result<(Vec<String>, u64), PresenceError> {
        let limit = limit.max(1);
        let mut bucket = cursor >> INNER_BITS;
        let mut inner = cursor & ((1 << INNER_BITS) - 1);
        let mut out = Vec::new();
        while bucket < u64::from(BUCKETS) && out.len() < limit {
            let (index, _) = self.bucket_keys(appcode, bucket as u32);
            let (next, page): (u64, Vec<(String, i64)>) = self
                .command(
                    redis::cmd("HSCAN")
                        .arg(index)
                        .arg(inner)
                        .arg("COUNT")
                        .arg(limit - out.len())
                        .to_owned(),
                )
                .await?;
            out.extend(page.into_iter().map(|(uid, _)| uid));
            if next == 0 {
                bucket += 1;
                inner = 0;
            } else if next >> INNER_BITS != 0 {
                return Err(corrupt("HSCAN cursor beyond 2^40"));
            } else {
                inner = next;
            }
        }
        let next = if bucket >= u64::from(BUCKETS) {
            0
        } else {
            bucket << INNER_BITS | inner
        };
        Ok((out, next))
    }

    async fn gate_heartbeat(&self, beat: GateBeat, ttl: Duration) -> Result<(), PresenceError> {
        let json = serde_json::json!({
            "addrs": beat.addrs,
            "connections": beat.connections,
            "load": beat.load,
            "draining": beat.draining,
        })
        .to_string();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX / 2);
        let _: i64 = self
            .invoke(
                &self.scripts.heartbeat,
                &[&self.gates_key()],
                &[&beat.gate_id, &json, &ttl_ms.to_string()],
            )
            .await?;
        Ok(())
    }

    async fn live_gates(&self) -> Result<Vec<GateBeat>, PresenceError> {
        let reply: Vec<String> = self
            .invoke(&self.scripts.live_gates, &[&self.gates_key()], &[])
            .await?;
        let (now, flat) = reply.split_first().ok_or_else(|| corrupt("live gates"))?;
        let now: u64 = now.parse().map_err(|_| corrupt("time"))?;
        let mut live = Vec::new();
        for pair in flat.chunks(2) {
            let [gate_id, value] = pair else {
                return Err(corrupt("gates hash"));
            };
            let mut parts = value.splitn(3, ':');
            let (Some(seen), Some(ttl), Some(json)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(corrupt("gate beat"));
            };
            let seen: u64 = seen.parse().map_err(|_| corrupt("gate beat"))?;
            let ttl: u64 = ttl.parse().map_err(|_| corrupt("gate beat"))?;
            if seen.saturating_add(ttl) <= now {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_str(json).map_err(|_| corrupt("gate beat"))?;
            live.push(GateBeat {
                gate_id: gate_id.clone(),
                addrs: v["addrs"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                connections: v["connections"].as_u64().unwrap_or(0),
                load: v["load"].as_f64().unwrap_or(0.0),
                draining: v["draining"].as_bool().unwrap_or(false),
                last_seen_ms: seen,
                ttl_ms: ttl,
            });
        }
        live.sort_by(|a, b| a.gate_id.cmp(&b.gate_id));
        Ok(live)
    }

    async fn purge_gate(&self, gate_id: &str) -> Result<u64, PresenceError> {
        let key = self.gate_key(gate_id);
        let mut removed = 0u64;
        let mut cursor = 0u64;
        loop {
            let (next, members): (u64, Vec<String>) = self
                .command(
                    redis::cmd("SSCAN")
                        .arg(&key)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(500)
                        .to_owned(),
                )
                .await?;
            let counts = try_join_all(members.iter().map(|member| async move {
                let Ok((appcode, uid, session)) =
                    serde_json::from_str::<(u32, String, String)>(member)
                else {
                    return Ok(0);
                };
                // The user's script re-checks the gate: a session resumed elsewhere stays.
                let removed = self
                    .unregister(appcode, &uid, gate_id, session.parse().unwrap_or(u64::MAX))
                    .await?;
                Ok::<u64, PresenceError>(u64::from(removed))
            }))
            .await?;
            removed += counts.iter().sum::<u64>();
            if !members.is_empty() {
                // Members the unregisters did not take (unparsable ones).
                let _: i64 = self
                    .command(redis::cmd("SREM").arg(&key).arg(&members).to_owned())
                    .await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let _: i64 = self
            .command(
                redis::cmd("HDEL")
                    .arg(self.gates_key())
                    .arg(gate_id)
                    .to_owned(),
            )
            .await?;
        Ok(removed)
    }

    async fn restore_sessions(&self, entries: Vec<SessionEntry>) -> Result<u64, PresenceError> {
        let restored = try_join_all(entries.iter().map(|e| async move {
            self.before_add(e.appcode, &e.uid, &e.gate_id, e.session_id)
                .await?;
            let keys = self.user_keys(e.appcode, &e.uid);
            let added: i64 = self
                .invoke(
                    &self.scripts.restore,
                    &[&keys.0[0], &keys.0[1], &keys.0[2]],
                    &[
                        &e.uid,
                        &e.device_id,
                        &e.epoch.to_string(),
                        &encode_record(e),
                        &self.linger_ms.to_string(),
                    ],
                )
                .await?;
            Ok::<u64, PresenceError>(u64::from(added > 0))
        }))
        .await?;
        Ok(restored.iter().sum())
    }
}
