//! [`RedisNodeLease`]: a node id in `0..max_nodes` leased from Redis, for Snowflake-style
//! msgids (the node id in each msgid keeps two processes' ids apart).
//!
//! The lease is the key `ll:node:{<namespace>}:<id>` holding a random token, taken with
//! `SET NX PX ttl` and kept by a task that renews it every `ttl / 3` with a script that
//! extends it only while it still holds the token. All of a namespace's keys share the hash
//! tag, so this works on a Redis Cluster too.
//!
//! Losing the lease is reported, never a panic: [`RedisNodeLease::state`] turns to
//! [`LeaseState::Lost`] when another holder has the key, or when no renewal succeeded for a
//! whole ttl (the key may have expired and been taken). The holder must then stop minting
//! ids with that node id. If Redis lost its data (the key is gone) the renewal takes the key
//! back when it is still free; between the loss and that renewal, at most `ttl / 3`, another
//! process may have taken the id — which the renewal then reports as `Lost`.

use std::time::{Duration, Instant};

use redis::Script;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::RedisConn;

/// What [`RedisNodeLease::acquire`] can fail with.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Every node id of the namespace is held by someone.
    #[error("all {0} node ids of the namespace are leased")]
    Exhausted(u16),
    /// Redis cannot be reached.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
}

/// Whether the lease is still ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Held: ids minted with this node id are unique.
    Held,
    /// Lost: stop minting ids with it (acquire a new lease).
    Lost,
}

/// Extends the lease if we hold it (1), takes it back if it is gone (2), else 0.
/// KEYS: the lease key. ARGV: token, ttl ms.
const RENEW: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
";

/// Deletes the lease if we hold it. KEYS: the lease key. ARGV: token.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// A leased node id, renewed in the background until dropped or released.
#[derive(Debug)]
pub struct RedisNodeLease {
    node_id: u16,
    key: String,
    token: String,
    conn: RedisConn,
    timeout: Duration,
    state: watch::Receiver<LeaseState>,
    renewer: JoinHandle<()>,
}

impl RedisNodeLease {
    /// The default lease ttl.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

    /// Leases a free node id of `namespace` in `0..max_nodes` with [`Self::DEFAULT_TTL`].
    ///
    /// # Errors
    /// All ids are taken, or Redis is unreachable.
    pub async fn acquire(
        conn: RedisConn,
        namespace: &str,
        max_nodes: u16,
    ) -> Result<RedisNodeLease, LeaseError> {
        Self::acquire_with_ttl(conn, namespace, max_nodes, Self::DEFAULT_TTL).await
    }

    /// [`Self::acquire`] with a ttl (at least 30 ms); each Redis call is bounded by a third
    /// of it.
    ///
    /// # Errors
    /// All ids are taken, or Redis is unreachable.
    pub async fn acquire_with_ttl(
        conn: RedisConn,
        namespace: &str,
        max_nodes: u16,
        ttl: Duration,
    ) -> Result<RedisNodeLease, LeaseError> {
        let ttl = ttl.max(Duration::from_millis(30));
        let timeout = ttl / 3;
        let ttl_ms = ttl.as_millis().to_string();
        let token = format!("{:032x}", rand::random::<u128>());
        // Start at a random id: processes starting together do not all race for id 0.
        let start = if max_nodes == 0 {
            0
        } else {
            rand::random_range(0..max_nodes)
        };
        for offset in 0..max_nodes {
            let node_id = (start + offset) % max_nodes;
            let key = format!("ll:node:{{{namespace}}}:{node_id}");
            let mut c = conn.clone();
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(&token).arg("NX").arg("PX").arg(&ttl_ms);
            let set = set.query_async::<Option<String>>(&mut c);
            let got = tokio::time::timeout(timeout, set)
                .await
                .map_err(|_| LeaseError::Unavailable("redis did not answer".into()))?
                .map_err(|e| LeaseError::Unavailable(e.to_string()))?;
            if got.is_some() {
                let (tx, state) = watch::channel(LeaseState::Held);
                let renewer =
                    tokio::spawn(renew(conn.clone(), key.clone(), token.clone(), ttl, tx));
                return Ok(RedisNodeLease {
                    node_id,
                    key,
                    token,
                    conn,
                    timeout,
                    state,
                    renewer,
                });
            }
        }
        Err(LeaseError::Exhausted(max_nodes))
    }

    /// The leased node id.
    pub fn node_id(&self) -> u16 {
        self.node_id
    }

    /// Whether the lease is still held; watch it to learn of a loss.
    pub fn state(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Whether the lease was lost.
    pub fn is_lost(&self) -> bool {
        *self.state.borrow() == LeaseState::Lost
    }

    /// Stops renewing and gives the id back at once (a dropped lease expires after its ttl).
    ///
    /// # Errors
    /// Redis is unreachable (the lease then expires by itself).
    pub async fn release(self) -> Result<(), LeaseError> {
        self.renewer.abort();
        let mut conn = self.conn.clone();
        let script = Script::new(RELEASE);
        let mut invocation = script.prepare_invoke();
        invocation.key(&self.key).arg(&self.token);
        tokio::time::timeout(self.timeout, invocation.invoke_async::<i64>(&mut conn))
            .await
            .map_err(|_| LeaseError::Unavailable("redis did not answer".into()))?
            .map_err(|e| LeaseError::Unavailable(e.to_string()))?;
        Ok(())
    }
}

impl Drop for RedisNodeLease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// Renews every ttl/3 until the lease is lost (then reports it and ends).
async fn renew(
    mut conn: RedisConn,
    key: String,
    token: String,
    ttl: Duration,
    state: watch::Sender<LeaseState>,
) {
    let script = Script::new(RENEW);
    let ttl_ms = ttl.as_millis().to_string();
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(ttl / 3).await;
        let mut invocation = script.prepare_invoke();
        invocation.key(&key).arg(&token).arg(&ttl_ms);
        match tokio::time::timeout(ttl / 3, invocation.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(0)) => {
                tracing::warn!(key, "node-id lease taken by another holder");
                let _ = state.send(LeaseState::Lost);
                return;
            }
            Ok(Ok(renewed)) => {
                if renewed == 2 {
                    tracing::warn!(key, "node-id lease was gone from redis; taken back");
                }
                last_ok = Instant::now();
            }
            Ok(Err(err)) => tracing::debug!(key, %err, "node-id lease renewal failed"),
            Err(_) => tracing::debug!(key, "node-id lease renewal timed out"),
        }
        if last_ok.elapsed() >= ttl {
            tracing::warn!(key, "node-id lease not renewed for a whole ttl: lost");
            let _ = state.send(LeaseState::Lost);
            return;
        }
    }
}
