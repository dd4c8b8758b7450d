//! [`Config`]: the one configuration of a longlink node, from TOML plus `LONGLINK_*`
//! environment overrides. The commented default file is embedded ([`DEFAULT_CONFIG`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The commented default configuration (`longlink config default`).
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

const SECTIONS: [&str; 9] = [
    "gate", "api", "store", "logic", "bus", "trace", "guard", "cluster", "push",
];

/// A configuration problem, naming the field. The CLI exits with code 64 on it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or a field is wrong.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// `[gate]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // each field is documented in default.toml
pub struct GateSection {
    pub listen: SocketAddr,
    pub gate_id: String,
    pub login_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub keepalive_interval_secs: u32,
    pub max_body_bytes: u32,
    /// Algorithms agreed at LOGIN, best first ("zstd", "lz4"); empty = no compression.
    pub compression: Vec<String>,
    pub compression_min_bytes: u32,
    /// 0 = `max_body_bytes`.
    pub max_decompressed_bytes: u32,
    pub write_queue_frames: usize,
    pub write_timeout_secs: u64,
    pub max_connections: usize,
    pub listen_backlog: u32,
    pub extra_listen: Vec<SocketAddr>,
    /// TLS certificate chain (PEM); empty = plain TCP.
    pub tls_cert: PathBuf,
    /// TLS private key (PEM); empty = plain TCP.
    pub tls_key: PathBuf,
    /// `None` when configured as "": no plain listener next to the TLS one.
    #[serde(deserialize_with = "optional_addr")]
    pub plain_listen: Option<SocketAddr>,
    /// `None` when configured as "": no WebSocket listener.
    #[serde(deserialize_with = "optional_addr")]
    pub ws_listen: Option<SocketAddr>,
    pub public_addr: String,
    pub hold_secs: u64,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    pub login_rate_per_sec: u32,
    pub login_burst: u32,
    pub drain_wave_size: usize,
    pub drain_wave_interval_ms: u64,
    pub drain_backoff_ms: u64,
    pub drain_timeout_secs: u64,
    pub send_frames_per_sec: u32,
    pub send_frames_burst: u32,
    pub pull_frames_per_sec: u32,
    pub pull_frames_burst: u32,
    pub ack_frames_per_sec: u32,
    pub ack_frames_burst: u32,
    pub other_frames_per_sec: u32,
    pub other_frames_burst: u32,
    pub flood_refusals: u32,
    pub read_bytes_per_sec: u32,
    pub read_bytes_burst: u32,
}

/// `[api]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // each field is documented in default.toml
pub struct ApiSection {
    pub listen: SocketAddr,
    /// `None` when configured as "" (gRPC disabled).
    #[serde(deserialize_with = "optional_addr")]
    pub grpc_listen: Option<SocketAddr>,
    pub max_body_bytes: usize,
    /// PEM certificate chain and key: both set = the HTTP and gRPC listeners speak TLS only.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// `POST /chat/dev-token` mints login tokens for anyone who asks: development only, and
    /// refused by [`Config::validated`] unless `listen` is a loopback address.
    pub chat_dev_login: bool,
}

fn optional_addr<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // each field is documented in default.toml
pub struct StoreSection {
    pub data_dir: PathBuf,
    pub write_queue: usize,
    pub max_batch: usize,
    pub read_connections: usize,
}

/// `[logic]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // each field is documented in default.toml
pub struct LogicSection {
    pub max_content_bytes: usize,
    pub resume_secret: String,
    pub token_leeway_secs: u64,
    pub login_failures_per_ip: u32,
    pub login_failures_per_uid: u32,
    pub login_failure_window_secs: u64,
    pub login_lockout_secs: u64,
}

/// `[guard]`: flapping detection (the black/white lists themselves are changed at run time
/// through the API and kept in `<store.data_dir>/guard.sqlite`).
/// The roles a process runs (`[cluster] roles`, `longlink serve --roles`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Client connections (the gate listeners).
    Gate,
    /// The stateless rules: answers the gates' calls (over NATS in a cluster).
    Logic,
    /// The business API (HTTP and gRPC), the dashboard and the chat page.
    Api,
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "gate" => Ok(Role::Gate),
            "logic" => Ok(Role::Logic),
            "api" => Ok(Role::Api),
            other => Err(format!(
                "unknown role {other:?}: expected gate, logic or api"
            )),
        }
    }
}

/// `[cluster]`: empty URLs = the embedded single node.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // each field is documented in default.toml
pub struct ClusterSection {
    pub roles: Vec<Role>,
    pub redis_url: String,
    pub postgres_url: String,
    pub nats_url: String,
    /// 0 = leased from Redis at start.
    pub node_id: u16,
    pub migrate_on_start: bool,
    pub heartbeat_secs: u64,
    pub gate_dead_secs: u64,
    pub rpc_timeout_ms: u64,
}

impl ClusterSection {
    /// Whether this process runs on the shared engines (all three URLs set).
    pub fn enabled(&self) -> bool {
        !self.redis_url.is_empty() && !self.postgres_url.is_empty() && !self.nats_url.is_empty()
    }

    /// Whether this process runs `role`.
    pub fn runs(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The checks a cluster config must pass.
    fn validate(&self) -> Result<(), ConfigError> {
        let set = [&self.redis_url, &self.postgres_url, &self.nats_url]
            .iter()
            .filter(|url| !url.is_empty())
            .count();
        if set != 0 && set != 3 {
            return Err(ConfigError::Invalid(
                "cluster: set all of redis_url, postgres_url and nats_url (a cluster) or none \
                 (the embedded single node)"
                    .to_owned(),
            ));
        }
        if self.roles.is_empty() {
            return Err(ConfigError::Invalid(
                "cluster.roles: at least one of gate, logic, api".to_owned(),
            ));
        }
        if !self.enabled() && self.roles.len() < 3 {
            return Err(ConfigError::Invalid(
                "cluster.roles: a single node runs every role; separate roles need \
                 cluster.redis_url, postgres_url and nats_url"
                    .to_owned(),
            ));
        }
        if self.node_id >= 1024 {
            return Err(ConfigError::Invalid(
                "cluster.node_id: 0 (leased) or 1..=1023".to_owned(),
            ));
        }
        if self.heartbeat_secs == 0 || self.gate_dead_secs <= self.heartbeat_secs {
            return Err(ConfigError::Invalid(
                "cluster: heartbeat_secs must be > 0 and gate_dead_secs above it".to_owned(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // each field is documented in default.toml
pub struct GuardSection {
    pub device_max_logins: u32,
    pub device_window_secs: u64,
    pub device_penalty_secs: u64,
    pub ip_max_connects: u32,
    pub ip_window_secs: u64,
    pub ip_penalty_secs: u64,
    pub max_tracked: usize,
}

impl GuardSection {
    /// The guard's flapping configuration.
    pub fn guard_config(&self) -> longlink_guard::GuardConfig {
        let rule = |max, window, penalty| longlink_guard::FlapRule {
            max,
            window: Duration::from_secs(window),
            penalty: Duration::from_secs(penalty),
        };
        longlink_guard::GuardConfig {
            device: rule(
                self.device_max_logins,
                self.device_window_secs,
                self.device_penalty_secs,
            ),
            ip: rule(
                self.ip_max_connects,
                self.ip_window_secs,
                self.ip_penalty_secs,
            ),
            max_tracked: self.max_tracked,
        }
    }
}

/// `[trace]`: the delivery ledger.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // each field is documented in default.toml
pub struct TraceSection {
    pub enabled: bool,
    pub window_secs: u64,
    pub max_traces: usize,
    pub max_events: usize,
}

/// `[bus]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // each field is documented in default.toml
pub struct BusSection {
    pub max_attempts: u32,
    pub lease_secs: u64,
    pub max_backlog: u64,
    pub unrouted: UnroutedPolicy,
    pub default_topic: String,
}

/// `bus.unrouted`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // documented in default.toml
pub enum UnroutedPolicy {
    PerType,
    Default,
    Refuse,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // documented in default.toml
pub struct RouteSection {
    pub appcode: u32,
    pub msgtype: u32,
    pub topic: String,
}

/// One `[[webhooks]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // documented in default.toml
pub struct WebhookSection {
    pub topic: String,
    pub url: String,
    #[serde(default = "default_webhook_timeout")]
    pub timeout_secs: u64,
    #[serde(default = "default_backoff_base")]
    pub backoff_base_ms: u64,
    #[serde(default = "default_backoff_max")]
    pub backoff_max_ms: u64,
    #[serde(default = "default_webhook_in_flight")]
    pub max_in_flight: usize,
}

fn default_webhook_timeout() -> u64 {
    10
}
fn default_backoff_base() -> u64 {
    500
}
fn default_backoff_max() -> u64 {
    60_000
}
fn default_webhook_in_flight() -> usize {
    16
}

/// One `[[api_keys]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // documented in default.toml
pub struct ApiKeySection {
    pub name: String,
    pub key: String,
    pub appcodes: Vec<u32>,
}

/// One `[[apps]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // each field is documented in default.toml
pub struct AppSection {
    pub appcode: u32,
    pub name: String,
    /// One HS256 key without a kid (the original form; may be "" when `keys` has some).
    #[serde(default)]
    pub secret: String,
    #[serde(default)]
    pub keys: Vec<AppKeySection>,
    #[serde(default)]
    pub multi_login: MultiLoginPolicy,
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
}

fn default_max_sessions() -> usize {
    5
}

/// One `[[apps.keys]]` entry: a token key of the appcode, named by `kid`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // documented in default.toml
pub struct AppKeySection {
    pub kid: String,
    #[serde(default = "default_key_alg")]
    pub alg: String,
    /// HS256 only.
    #[serde(default)]
    pub secret: String,
    /// RS256 / ES256 only: a PEM (`-----BEGIN PUBLIC KEY-----…`) or the path of a PEM file.
    #[serde(default)]
    pub public_key: String,
}

fn default_key_alg() -> String {
    "HS256".to_owned()
}

impl AppKeySection {
    /// The key as logic takes it (a public key file read).
    fn resolve(&self, appcode: u32) -> Result<longlink_logic::AppKey, String> {
        let field = format!("apps[appcode={appcode}].keys[kid={:?}]", self.kid);
        let alg = longlink_logic::KeyAlg::parse(&self.alg)
            .ok_or_else(|| format!("{field}.alg: one of HS256, RS256, ES256"))?;
        let material = match alg {
            longlink_logic::KeyAlg::Hs256 => {
                if !self.public_key.is_empty() {
                    return Err(format!("{field}.public_key: HS256 takes a secret"));
                }
                self.secret.clone()
            }
            _ => {
                if !self.secret.is_empty() {
                    return Err(format!(
                        "{field}.secret: {alg} takes a public_key, never a secret"
                    ));
                }
                if self.public_key.trim_start().starts_with("-----BEGIN") {
                    self.public_key.clone()
                } else if self.public_key.is_empty() {
                    return Err(format!("{field}.public_key: required for {alg}"));
                } else {
                    std::fs::read_to_string(&self.public_key).map_err(|err| {
                        format!("{field}.public_key: cannot read {}: {err}", self.public_key)
                    })?
                }
            }
        };
        Ok(longlink_logic::AppKey {
            kid: self.kid.clone(),
            alg,
            material,
        })
    }
}

impl AppSection {
    /// The appcode's token keys: `secret` (kid "") first, then `keys` in order.
    fn token_keys(&self) -> Result<Vec<longlink_logic::AppKey>, String> {
        let mut keys = Vec::with_capacity(self.keys.len() + 1);
        if !self.secret.is_empty() {
            keys.push(longlink_logic::AppKey::hs256("", self.secret.clone()));
        }
        for key in &self.keys {
            keys.push(key.resolve(self.appcode)?);
        }
        Ok(keys)
    }
}

/// `apps.multi_login`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // documented in default.toml
pub enum MultiLoginPolicy {
    #[default]
    Kick,
    Allow,
}

/// A whole node configuration (not `Eq`: `[push] discount` is a float).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // each section is documented in default.toml
pub struct Config {
    pub gate: GateSection,
    pub api: ApiSection,
    pub store: StoreSection,
    pub logic: LogicSection,
    pub bus: BusSection,
    pub trace: TraceSection,
    pub guard: GuardSection,
    pub cluster: ClusterSection,
    /// `[push]`: offline push notifications (the notifier's own config type).
    pub push: longlink_notify::NotifyConfig,
    pub apps: Vec<AppSection>,
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    #[serde(default)]
    pub webhooks: Vec<WebhookSection>,
    #[serde(default)]
    pub api_keys: Vec<ApiKeySection>,
}

impl Default for Config {
    fn default() -> Self {
        // The embedded file is tested to parse (tests below); an unparsable build cannot ship.
        Config::from_toml(DEFAULT_CONFIG, &BTreeMap::new())
            .unwrap_or_else(|err| unreachable!("embedded default config is invalid: {err}"))
    }
}

impl Config {
    /// Loads `path` (or the embedded defaults when `None`), then applies `LONGLINK_*`
    /// overrides from `env` (passed in, so tests never touch the process environment).
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or the field.
    pub fn load(
        path: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        Config::from_toml(&config_text(path)?, env)
    }

    /// Parses `text`, overlays a default for every missing field, then applies `env`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn from_toml(text: &str, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let table = effective_table(text, env)?;
        toml::Value::Table(table)
            .try_into()
            .map_err(|err: toml::de::Error| ConfigError::Invalid(one_line(&err.to_string())))
            .and_then(Config::validated)
    }

    /// The configuration `path` (or the defaults) and `env` make, as TOML, with every secret
    /// replaced by `"<redacted>"` (`longlink config show`): token secrets, API keys, the
    /// resume secret, webhook secrets and the push providers' header values. Provider
    /// credentials are files, and only their paths are shown.
    ///
    /// # Errors
    /// [`ConfigError`] as [`Config::load`]: the shown config is one the server would accept.
    pub fn show(
        path: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<String, ConfigError> {
        let text = config_text(path)?;
        Config::from_toml(&text, env)?;
        let mut table = effective_table(&text, env)?;
        redact(&mut table, false);
        toml::to_string_pretty(&table).map_err(|err| ConfigError::Invalid(err.to_string()))
    }

    fn validated(self) -> Result<Config, ConfigError> {
        let bad = |field: &str, why: &str| Err(ConfigError::Invalid(format!("{field}: {why}")));
        if self.gate.login_timeout_secs == 0 {
            return bad("gate.login_timeout_secs", "must be at least 1");
        }
        if self.gate.idle_timeout_secs <= u64::from(self.gate.keepalive_interval_secs) {
            return bad(
                "gate.idle_timeout_secs",
                "must be greater than gate.keepalive_interval_secs",
            );
        }
        if self.gate.write_queue_frames == 0
            || self.store.write_queue == 0
            || self.store.max_batch == 0
        {
            return bad(
                "gate.write_queue_frames / store.write_queue / store.max_batch",
                "must be at least 1",
            );
        }
        if self.apps.is_empty() {
            return bad("apps", "at least one [[apps]] entry is needed");
        }
        if let Some(app) = self.apps.iter().find(|a| a.max_sessions == 0) {
            return bad(
                &format!("apps[appcode={}].max_sessions", app.appcode),
                "must be at least 1",
            );
        }
        if self.gate.reconnect_min_ms == 0
            || self.gate.reconnect_max_ms < self.gate.reconnect_min_ms
        {
            return bad(
                "gate.reconnect_min_ms / gate.reconnect_max_ms",
                "need 1 <= reconnect_min_ms <= reconnect_max_ms",
            );
        }
        if let Some(name) = self
            .gate
            .compression
            .iter()
            .find(|name| longlink_proto::Compression::from_name(name).is_none())
        {
            return bad(
                "gate.compression",
                &format!("unknown algorithm {name:?}: use \"zstd\" and/or \"lz4\""),
            );
        }
        let (cert, key) = (&self.gate.tls_cert, &self.gate.tls_key);
        if cert.as_os_str().is_empty() != key.as_os_str().is_empty() {
            return bad(
                "gate.tls_cert / gate.tls_key",
                "set both (TLS) or neither (plain TCP)",
            );
        }
        let (cert, key) = (&self.api.tls_cert, &self.api.tls_key);
        if cert.as_os_str().is_empty() != key.as_os_str().is_empty() {
            return bad(
                "api.tls_cert / api.tls_key",
                "set both (TLS) or neither (plain HTTP)",
            );
        }
        if self.api.chat_dev_login && !self.api.listen.ip().is_loopback() {
            return bad(
                "api.chat_dev_login",
                &format!(
                    "hands out login tokens for any user, so it is allowed only while api.listen \
                     is a loopback address (it is {}); set chat_dev_login = false \
                     (LONGLINK_API_CHAT_DEV_LOGIN=false) before the API faces a network",
                    self.api.listen
                ),
            );
        }
        self.cluster.validate()?;
        self.push.validate().map_err(ConfigError::Invalid)?;
        if self.gate.plain_listen.is_some() && !self.gate_tls_enabled() {
            return bad(
                "gate.plain_listen",
                "only with gate.tls_cert and gate.tls_key: without TLS, gate.listen is plain TCP already",
            );
        }
        let guard = &self.guard;
        if (guard.device_max_logins > 0
            && (guard.device_window_secs == 0 || guard.device_penalty_secs == 0))
            || (guard.ip_max_connects > 0
                && (guard.ip_window_secs == 0 || guard.ip_penalty_secs == 0))
        {
            return bad(
                "guard.*_window_secs / guard.*_penalty_secs",
                "must be at least 1 while the matching max is not 0",
            );
        }
        if self.gate.drain_wave_size == 0 || self.gate.drain_timeout_secs == 0 {
            return bad(
                "gate.drain_wave_size / gate.drain_timeout_secs",
                "must be at least 1",
            );
        }
        if let Some(app) = self
            .apps
            .iter()
            .find(|a| !a.secret.is_empty() && a.secret.len() < 8)
        {
            return bad(
                &format!("apps[appcode={}].secret", app.appcode),
                "must be at least 8 bytes",
            );
        }
        // Every key parses (PEM files read) and each appcode has 1..=4 with distinct kids.
        if let Err(why) = self.try_apps() {
            return Err(ConfigError::Invalid(why));
        }
        if self.logic.login_failure_window_secs == 0 {
            return bad("logic.login_failure_window_secs", "must be at least 1");
        }
        if self.bus.max_attempts == 0 || self.bus.lease_secs == 0 || self.bus.max_backlog == 0 {
            return bad(
                "bus.max_attempts / bus.lease_secs / bus.max_backlog",
                "must be at least 1",
            );
        }
        if self.trace.enabled
            && (self.trace.window_secs == 0
                || self.trace.max_traces == 0
                || self.trace.max_events == 0)
        {
            return bad(
                "trace.window_secs / trace.max_traces / trace.max_events",
                "must be at least 1",
            );
        }
        if let Err(why) = self.routes() {
            return bad("routes", &why);
        }
        for hook in &self.webhooks {
            if !hook.url.starts_with("http://") && !hook.url.starts_with("https://") {
                return bad(
                    &format!("webhooks[topic={}].url", hook.topic),
                    "must start with http:// or https://",
                );
            }
            if !longlink_bus::routes::valid_topic(&hook.topic) {
                return bad(
                    &format!("webhooks[topic={}].topic", hook.topic),
                    "must be 1..=200 bytes of [A-Za-z0-9._-]",
                );
            }
            if hook.timeout_secs == 0 || hook.max_in_flight == 0 {
                return bad(
                    &format!("webhooks[topic={}]", hook.topic),
                    "timeout_secs and max_in_flight must be at least 1",
                );
            }
        }
        let mut keys = std::collections::BTreeSet::new();
        for key in &self.api_keys {
            if key.key.len() < 16 {
                return bad(
                    &format!("api_keys[name={}].key", key.name),
                    "must be at least 16 bytes",
                );
            }
            if !keys.insert(key.key.as_str()) {
                return bad(
                    &format!("api_keys[name={}].key", key.name),
                    "is used by two entries",
                );
            }
            if let Some(unknown) = key
                .appcodes
                .iter()
                .find(|a| !self.apps.iter().any(|app| app.appcode == **a))
            {
                return bad(
                    &format!("api_keys[name={}].appcodes", key.name),
                    &format!("appcode {unknown} is not configured in [[apps]]"),
                );
            }
        }
        Ok(self)
    }

    /// The settings of every gate this node runs: the one on `gate.listen` (id `gate.gate_id`),
    /// then one per `gate.extra_listen` address (ids `<gate_id>-2`, `-3`…), with their
    /// addresses.
    pub fn gate_configs(&self) -> Vec<(SocketAddr, longlink_gate::GateConfig)> {
        let mut out = vec![(self.gate.listen, self.gate_config())];
        for (i, addr) in self.gate.extra_listen.iter().enumerate() {
            let mut config = self.gate_config();
            config.gate_id = format!("{}-{}", self.gate.gate_id, i + 2);
            // public_addr names the first gate; the others advertise what they bind.
            config.public_addr = String::new();
            out.push((*addr, config));
        }
        out
    }

    /// Whether the HTTP and gRPC APIs speak TLS (`api.tls_cert` and `api.tls_key` are set).
    pub fn api_tls_enabled(&self) -> bool {
        !self.api.tls_cert.as_os_str().is_empty() && !self.api.tls_key.as_os_str().is_empty()
    }

    /// Whether the gates speak TLS (`gate.tls_cert` and `gate.tls_key` are set).
    pub fn gate_tls_enabled(&self) -> bool {
        !self.gate.tls_cert.as_os_str().is_empty() && !self.gate.tls_key.as_os_str().is_empty()
    }

    /// The settings of the gate on `gate.listen`.
    pub fn gate_config(&self) -> longlink_gate::GateConfig {
        let gate = &self.gate;
        longlink_gate::GateConfig {
            public_addr: gate.public_addr.clone(),
            hold: Duration::from_secs(gate.hold_secs),
            reconnect_min: Duration::from_millis(gate.reconnect_min_ms),
            reconnect_max: Duration::from_millis(gate.reconnect_max_ms),
            login_rate_per_sec: gate.login_rate_per_sec,
            login_burst: gate.login_burst,
            drain_wave_size: gate.drain_wave_size,
            drain_wave_interval: Duration::from_millis(gate.drain_wave_interval_ms),
            drain_backoff: Duration::from_millis(gate.drain_backoff_ms),
            gate_id: self.gate.gate_id.clone(),
            login_timeout: Duration::from_secs(self.gate.login_timeout_secs),
            idle_timeout: Duration::from_secs(self.gate.idle_timeout_secs),
            max_body_bytes: self.gate.max_body_bytes,
            compression: gate
                .compression
                .iter()
                .filter_map(|name| longlink_proto::Compression::from_name(name))
                .collect(),
            compression_min_bytes: gate.compression_min_bytes,
            max_decompressed_bytes: match gate.max_decompressed_bytes {
                0 => gate.max_body_bytes,
                cap => cap,
            },
            write_queue_frames: self.gate.write_queue_frames,
            write_timeout: Duration::from_secs(self.gate.write_timeout_secs),
            max_connections: self.gate.max_connections,
            limits: longlink_gate::ConnLimitsConfig {
                send: longlink_gate::Rate::new(gate.send_frames_per_sec, gate.send_frames_burst),
                pull: longlink_gate::Rate::new(gate.pull_frames_per_sec, gate.pull_frames_burst),
                ack: longlink_gate::Rate::new(gate.ack_frames_per_sec, gate.ack_frames_burst),
                other: longlink_gate::Rate::new(gate.other_frames_per_sec, gate.other_frames_burst),
                flood_refusals: gate.flood_refusals,
                read_bytes: longlink_gate::Rate::new(
                    gate.read_bytes_per_sec,
                    gate.read_bytes_burst,
                ),
            },
        }
    }

    /// The c2s routing table.
    ///
    /// # Errors
    /// A route is invalid (the reason names it).
    pub fn routes(&self) -> Result<longlink_bus::Routes, String> {
        let unrouted = match self.bus.unrouted {
            UnroutedPolicy::PerType => longlink_bus::Unrouted::PerType,
            UnroutedPolicy::Default => {
                longlink_bus::Unrouted::Topic(self.bus.default_topic.clone())
            }
            UnroutedPolicy::Refuse => longlink_bus::Unrouted::Refuse,
        };
        longlink_bus::Routes::new(
            self.routes
                .iter()
                .map(|r| (r.appcode, r.msgtype, r.topic.clone())),
            unrouted,
            self.apps.iter().map(|a| a.appcode),
        )
    }

    /// The token keys of every configured appcode. [`Config::load`] checked them; should a
    /// key file have changed since, no appcode is served (every LOGIN is refused) and the
    /// reason is logged.
    pub fn apps(&self) -> longlink_logic::Apps {
        self.try_apps().unwrap_or_else(|why| {
            tracing::error!(error = %why, "token keys unusable: no appcode is served");
            longlink_logic::Apps::default()
        })
    }

    fn try_apps(&self) -> Result<longlink_logic::Apps, String> {
        let mut apps = Vec::with_capacity(self.apps.len());
        for a in &self.apps {
            apps.push(longlink_logic::App {
                appcode: a.appcode,
                name: a.name.clone(),
                keys: a.token_keys()?,
                multi_login: match a.multi_login {
                    MultiLoginPolicy::Kick => longlink_presence::MultiLogin::Kick {
                        max_sessions: a.max_sessions,
                    },
                    MultiLoginPolicy::Allow => longlink_presence::MultiLogin::Allow {
                        max_sessions: a.max_sessions,
                    },
                },
            });
        }
        longlink_logic::Apps::with_leeway(&apps, self.logic.token_leeway_secs)
            .map_err(|err| format!("apps: {err}"))
    }

    /// The failed-login limits of `[logic]`.
    pub fn login_limits(&self) -> longlink_logic::LoginLimits {
        longlink_logic::LoginLimits {
            max_failures_per_ip: self.logic.login_failures_per_ip,
            max_failures_per_uid: self.logic.login_failures_per_uid,
            window: Duration::from_secs(self.logic.login_failure_window_secs),
            lockout: Duration::from_secs(self.logic.login_lockout_secs),
        }
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The text of the config file `path`, or the embedded defaults.
fn config_text(path: Option<&Path>) -> Result<String, ConfigError> {
    match path {
        Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        }),
        None => Ok(DEFAULT_CONFIG.to_owned()),
    }
}

/// `text` with a default for every missing field, then `env` applied.
fn effective_table(text: &str, env: &BTreeMap<String, String>) -> Result<toml::Table, ConfigError> {
    let mut table: toml::Table = text
        .parse()
        .map_err(|err: toml::de::Error| ConfigError::Invalid(one_line(&err.to_string())))?;
    if text != DEFAULT_CONFIG {
        let defaults: toml::Table = DEFAULT_CONFIG
            .parse()
            .map_err(|err: toml::de::Error| ConfigError::Invalid(err.to_string()))?;
        merge_missing(&mut table, &defaults);
    }
    apply_env(&mut table, env)?;
    Ok(table)
}

/// Fields whose values are secrets wherever they appear.
const SECRET_FIELDS: [&str; 6] = [
    "secret",
    "resume_secret",
    "key",
    "password",
    "private_key",
    "token",
];

/// Replaces secret values (by field name; every value of a `headers` table) in place.
fn redact(table: &mut toml::Table, in_headers: bool) {
    for (name, value) in table.iter_mut() {
        let secret = in_headers || SECRET_FIELDS.contains(&name.as_str());
        match value {
            toml::Value::Table(inner) => redact(inner, name == "headers"),
            toml::Value::Array(items) => {
                for item in items {
                    match item {
                        toml::Value::Table(inner) => redact(inner, false),
                        other if secret => *other = toml::Value::String("<redacted>".into()),
                        _ => {}
                    }
                }
            }
            toml::Value::String(text) if secret && !text.is_empty() => {
                *text = "<redacted>".to_owned();
            }
            _ => {}
        }
    }
}

fn merge_missing(table: &mut toml::Table, defaults: &toml::Table) {
    for (key, default) in defaults {
        match (table.get_mut(key), default) {
            (None, _) => {
                table.insert(key.clone(), default.clone());
            }
            (Some(toml::Value::Table(section)), toml::Value::Table(default_section)) => {
                merge_missing(section, default_section);
            }
            _ => {}
        }
    }
}

fn apply_env(table: &mut toml::Table, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for (key, value) in env {
        let Some(rest) = key.strip_prefix("LONGLINK_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let Some((section, field)) = rest.split_once('_') else {
            continue;
        };
        if !SECTIONS.contains(&section) {
            continue;
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let Some(toml::Value::Table(section_table)) = table.get_mut(section) else {
            return Err(ConfigError::Invalid(format!(
                "{key}: no [{section}] section"
            )));
        };
        if !section_table.contains_key(field) {
            return Err(ConfigError::Invalid(format!(
                "{key}: unknown field {section}.{field}"
            )));
        }
        section_table.insert(field.to_owned(), parsed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_parses() {
        let config = Config::default();
        assert_eq!(config.gate.listen.to_string(), "127.0.0.1:7700");
        assert_eq!(config.api.listen.to_string(), "127.0.0.1:7780");
        assert_eq!(config.gate.login_timeout_secs, 10);
        assert!(config.apps.iter().any(|a| a.appcode == 129));
    }

    #[test]
    fn env_overrides_fields_and_names_unknown_ones() {
        let env = BTreeMap::from([
            (
                "LONGLINK_GATE_LISTEN".to_owned(),
                "127.0.0.1:9000".to_owned(),
            ),
            (
                "LONGLINK_GATE_LOGIN_TIMEOUT_SECS".to_owned(),
                "3".to_owned(),
            ),
            ("LONGLINK_STORE_DATA_DIR".to_owned(), "/tmp/x".to_owned()),
            ("LONGLINK_LOG".to_owned(), "debug".to_owned()),
        ]);
        let config = Config::from_toml(DEFAULT_CONFIG, &env).unwrap();
        assert_eq!(config.gate.listen.port(), 9000);
        assert_eq!(config.gate.login_timeout_secs, 3);
        assert_eq!(config.store.data_dir, PathBuf::from("/tmp/x"));
        let env = BTreeMap::from([("LONGLINK_GATE_LISTN".to_owned(), "x".to_owned())]);
        let err = Config::from_toml(DEFAULT_CONFIG, &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("gate.listn"), "{err}");
    }

    #[test]
    fn a_partial_file_gets_defaults_and_bad_fields_are_named() {
        let config =
            Config::from_toml("[gate]\nlisten = \"127.0.0.1:1\"\n", &BTreeMap::new()).unwrap();
        assert_eq!(config.gate.listen.port(), 1);
        assert_eq!(config.gate.idle_timeout_secs, 90);
        let err = Config::from_toml("[gate]\nlisen = 1\n", &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");
        let err = Config::from_toml("[gate]\nlogin_timeout_secs = \"x\"\n", &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("login_timeout_secs"), "{err}");
    }

    #[test]
    fn api_keys_routes_and_webhooks_are_checked_and_named() {
        let config = Config::default();
        assert_eq!(config.api_keys.len(), 1);
        assert_eq!(config.api.grpc_listen.map(|a| a.port()), Some(7790));
        assert_eq!(
            config.routes().unwrap().topic_for(130, 1).as_deref(),
            Some("c2s.130.1")
        );
        let cases = [
            (
                "[[api_keys]]\nname = \"x\"\nkey = \"short\"\nappcodes = [129]\n",
                "api_keys[name=x].key",
            ),
            (
                "[[api_keys]]\nname = \"x\"\nkey = \"0123456789abcdef\"\nappcodes = [7]\n",
                "appcode 7",
            ),
            (
                "[[routes]]\nappcode = 130\nmsgtype = 1\ntopic = \"no spaces\"\n",
                "routes",
            ),
            (
                "[[webhooks]]\ntopic = \"t\"\nurl = \"ftp://x\"\n",
                "webhooks[topic=t].url",
            ),
            ("[bus]\nunrouted = \"sometimes\"\n", "unrouted"),
            ("[api]\ngrpc_listen = \"nowhere\"\n", "grpc_listen"),
        ];
        for (text, named) in cases {
            let err = Config::from_toml(text, &BTreeMap::new())
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{text:?} -> {err}");
        }
        let off = Config::from_toml("[api]\ngrpc_listen = \"\"\n", &BTreeMap::new()).unwrap();
        assert_eq!(off.api.grpc_listen, None);
    }

    #[test]
    fn cluster_needs_all_three_urls_and_roles_split_only_in_a_cluster() {
        let single = Config::default();
        assert!(!single.cluster.enabled());
        assert!(single.cluster.runs(Role::Gate) && single.cluster.runs(Role::Api));
        let parse = |toml: &str| Config::from_toml(toml, &BTreeMap::new());
        let err = parse("[cluster]\nredis_url = \"redis://127.0.0.1:1/\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("all of redis_url, postgres_url and nats_url"),
            "{err}"
        );
        let err = parse("[cluster]\nroles = [\"gate\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("separate roles need"), "{err}");
        let cluster = parse(
            "[cluster]\nroles = [\"gate\"]\nredis_url = \"redis://r/\"\n\
             postgres_url = \"postgres://p/db\"\nnats_url = \"nats://n:4222\"\n",
        )
        .expect("a gate-only cluster process");
        assert!(cluster.cluster.enabled());
        assert!(cluster.cluster.runs(Role::Gate) && !cluster.cluster.runs(Role::Logic));
        let env = BTreeMap::from([("LONGLINK_CLUSTER_NODE_ID".to_owned(), "1024".to_owned())]);
        let err = Config::from_toml(DEFAULT_CONFIG, &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cluster.node_id"), "{err}");
        assert_eq!("logic".parse::<Role>(), Ok(Role::Logic));
        assert!("db".parse::<Role>().is_err());
    }

    #[test]
    fn chat_dev_login_is_refused_beyond_loopback() {
        assert!(Config::default().api.chat_dev_login);
        let err = Config::from_toml("[api]\nlisten = \"0.0.0.0:7780\"\n", &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("api.chat_dev_login"), "{err}");
        let off = Config::from_toml(
            "[api]\nlisten = \"0.0.0.0:7780\"\nchat_dev_login = false\n",
            &BTreeMap::new(),
        )
        .unwrap();
        assert!(!off.api.chat_dev_login);
        let v6 = Config::from_toml("[api]\nlisten = \"[::1]:7780\"\n", &BTreeMap::new());
        assert!(v6.is_ok(), "{v6:?}");
    }

    #[test]
    fn gate_transports_tls_pairs_plain_listen_and_websocket() {
        let defaults = Config::default();
        assert!(!defaults.gate_tls_enabled());
        assert_eq!(defaults.gate.plain_listen, None);
        assert_eq!(
            defaults.gate.ws_listen.map(|a| a.to_string()),
            Some("127.0.0.1:7701".to_owned())
        );
        let cases = [
            (
                "[gate]\ntls_cert = \"c.pem\"\n",
                "gate.tls_cert / gate.tls_key",
            ),
            (
                "[gate]\ntls_key = \"k.pem\"\n",
                "gate.tls_cert / gate.tls_key",
            ),
            (
                "[gate]\nplain_listen = \"127.0.0.1:0\"\n",
                "gate.plain_listen",
            ),
            ("[gate]\nws_listen = \"nowhere\"\n", "ws_listen"),
        ];
        for (text, named) in cases {
            let err = Config::from_toml(text, &BTreeMap::new())
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{text:?} -> {err}");
        }
        let tls = Config::from_toml(
            "[gate]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\nplain_listen = \"127.0.0.1:0\"\nws_listen = \"\"\n",
            &BTreeMap::new(),
        )
        .unwrap();
        assert!(tls.gate_tls_enabled());
        assert!(tls.gate.plain_listen.is_some());
        assert_eq!(tls.gate.ws_listen, None);
    }
}

#[cfg(test)]
mod show_tests {
    use super::*;

    #[test]
    fn show_redacts_every_secret_and_keeps_the_rest() {
        let text = format!(
            "{}\n[[push.http]]\nname = \"vendor\"\n\
             url = \"https://push.example/send\"\nheaders = {{ authorization = \"Bearer s3cr3t-vendor\" }}\n",
            DEFAULT_CONFIG.replace("grace_ms = 3000", "grace_ms = 1234")
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("longlink.toml");
        std::fs::write(&path, text).expect("write");
        let env = BTreeMap::from([(
            "LONGLINK_LOGIC_RESUME_SECRET".to_owned(),
            "\"resume-s3cr3t-from-env\"".to_owned(),
        )]);
        let shown = Config::show(Some(&path), &env).expect("valid config");
        let config = Config::load(Some(&path), &env).expect("valid config");
        for app in &config.apps {
            assert!(!shown.contains(&app.secret), "app secret shown: {shown}");
        }
        for key in &config.api_keys {
            assert!(!shown.contains(&key.key), "api key shown");
        }
        assert!(!shown.contains("resume-s3cr3t-from-env"));
        assert!(!shown.contains("s3cr3t-vendor"));
        assert!(shown.contains("<redacted>"));
        // The rest is the effective config: file values, defaults and env alike.
        assert!(shown.contains("grace_ms = 1234"), "{shown}");
        assert!(shown.contains("https://push.example/send"));
        assert!(shown.contains("gate_id = \"gate-1\""));
    }
}
