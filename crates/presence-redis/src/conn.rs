//! [`RedisConn`]: one multiplexed connection to a single Redis or to a Redis Cluster.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `Some(true)`: a Redis Cluster even with one URL (it is a seed node); `Some(false)`: a
    /// single Redis (one URL only); `None`: a cluster when there are several URLs or the
    /// scheme is `redis+cluster://`.
    pub cluster: Option<bool>,
    /// The bound on each connection attempt and on each command's response.
    pub timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            cluster: None,
            timeout: Duration::from_secs(2),
        }
    }
}

/// A cheap-to-clone handle over one multiplexed connection: redis-rs's [`ConnectionManager`]
/// (reconnects in the background after a failure) for a single Redis, or its cluster client
/// (follows MOVED/ASK, keeps the slot map) for a Redis Cluster. Either pipelines the commands
/// of every task that holds a clone, so no pool is needed.
#[derive(Clone)]
pub enum RedisConn {
    /// A single Redis.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisConn::Single(_) => "RedisConn::Single",
            RedisConn::Cluster(_) => "RedisConn::Cluster",
        })
    }
}

impl RedisConn {
    /// Connects to `urls` (see [`ConnectOptions::cluster`] for how single and cluster are
    /// told apart). Fails within about `options.timeout` when Redis cannot be reached.
    ///
    /// # Errors
    /// No URL, a bad URL, or Redis unreachable.
    pub async fn connect<S: AsRef<str>>(
        urls: &[S],
        options: &ConnectOptions,
    ) -> redis::RedisResult<RedisConn> {
        let invalid = |what: String| {
            redis::RedisError::from((redis::ErrorKind::Client, "bad Redis URL", what))
        };
        if urls.is_empty() {
            return Err(invalid("no URL given".into()));
        }
        let mut cluster_scheme = false;
        let urls: Vec<String> = urls
            .iter()
            .map(|u| {
                let u = u.as_ref().trim();
                // redis-rs knows no cluster scheme: a `redis+cluster://` URL is a seed node.
                if let Some(rest) = u.strip_prefix("redis+cluster://") {
                    cluster_scheme = true;
                    format!("redis://{rest}")
                } else {
                    u.to_owned()
                }
            })
            .collect();
        let cluster = options.cluster.unwrap_or(cluster_scheme || urls.len() > 1);
        if !cluster && urls.len() > 1 {
            return Err(invalid(format!(
                "{} URLs given for a single Redis",
                urls.len()
            )));
        }
        let connect = async {
            if cluster {
                let client = ClusterClient::builder(urls)
                    .connection_timeout(options.timeout)
                    .response_timeout(options.timeout)
                    // Few retries: a caller waits at most about the operation timeout anyway.
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(200)
                    .build()?;
                Ok(RedisConn::Cluster(client.get_async_connection().await?))
            } else {
                let client = redis::Client::open(urls[0].as_str())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(options.timeout))
                    .set_response_timeout(Some(options.timeout))
                    .set_number_of_retries(2)
                    .set_min_delay(Duration::from_millis(10))
                    .set_max_delay(Duration::from_millis(200));
                Ok(RedisConn::Single(
                    client.get_connection_manager_with_config(config).await?,
                ))
            }
        };
        // The backstop: connecting involves several round trips, each bounded on its own.
        match tokio::time::timeout(options.timeout * 3, connect).await {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "timed out connecting to Redis",
            ))),
        }
    }

    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}
