//! The server under test: one the bench spawns (`<current exe> serve` on free loopback ports,
//! a temporary data dir and config), or one already running that the user points at.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::http;
use crate::link::Transport;

/// How long a spawned server may take to answer `/healthz`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a spawned server may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The default configuration's HS256 secrets, used with `--server` unless a scenario is told
/// otherwise.
const DEV_SECRETS: [(u32, &str); 4] = [
    (129, "dev-secret-129-change-me"),
    (130, "dev-secret-130-change-me"),
    (131, "dev-secret-131-change-me"),
    (132, "dev-secret-132-change-me"),
];

/// The default configuration's secret of `appcode`.
///
/// # Errors
/// An appcode the default configuration does not have (say it with `--token-secret`).
pub(crate) fn dev_secret(appcode: u32) -> anyhow::Result<String> {
    DEV_SECRETS
        .iter()
        .find(|(code, _)| *code == appcode)
        .map(|(_, secret)| (*secret).to_owned())
        .ok_or_else(|| anyhow!("--token-secret is needed for appcode {appcode}"))
}

/// What `/healthz` answers.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Health {
    pub(crate) version: String,
    pub(crate) sessions: u64,
}

/// Which server a run measured, for the JSON: whether the bench started it, its version, pid
/// and gate (a scenario adds what else it knows).
#[derive(Debug, Serialize)]
pub(crate) struct ServerIdentity {
    spawned: bool,
    version: String,
    pid: u32,
    gate: String,
    /// The WebSocket listener of a spawned server, when on.
    #[serde(skip_serializing_if = "Option::is_none")]
    ws: Option<String>,
}

/// A server under test.
pub(crate) struct Target {
    /// The gate's TCP address.
    pub(crate) gate: SocketAddr,
    /// A spawned server's WebSocket listener (`[gate] ws_listen`), when turned on.
    pub(crate) ws: Option<SocketAddr>,
    /// The HTTP API, when known (`/healthz`).
    pub(crate) api: Option<SocketAddr>,
    /// The server's pid (for `/proc`).
    pub(crate) pid: u32,
    /// The HS256 secret of the bench's appcode.
    pub(crate) secret: String,
    spawned: Option<Spawned>,
}

struct Spawned {
    child: Child,
    dir: tempfile::TempDir,
    /// Every `[[apps]]` appcode of the spawned server's config with its HS256 secret.
    secrets: Vec<(u32, String)>,
    /// Its `LONGLINK_LOG`.
    log_level: String,
}

impl Target {
    /// A server already running at `gate` with pid `pid`.
    pub(crate) fn external(
        gate: SocketAddr,
        api: Option<SocketAddr>,
        pid: u32,
        secret: String,
    ) -> anyhow::Result<Target> {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            bail!("--server-pid {pid}: no such process");
        }
        Ok(Target {
            gate,
            ws: None,
            api,
            pid,
            secret,
            spawned: None,
        })
    }

    /// Starts `exe serve` with the default configuration on free loopback ports, a temporary
    /// data dir and `LONGLINK_LOG=log_level`, some settings replaced by `overrides` (a
    /// scenario that needs, say, longer session holds); returns once `/healthz` answers.
    pub(crate) async fn spawn(
        exe: &Path,
        appcode: u32,
        log_level: &str,
        overrides: &[ConfigOverride],
    ) -> anyhow::Result<Target> {
        let dir = tempfile::Builder::new()
            .prefix("longlink-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let defaults = Command::new(exe)
            .args(["config", "default"])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .await
            .with_context(|| format!("cannot run {} config default", exe.display()))?;
        if !defaults.status.success() {
            bail!(
                "{} config default failed ({})",
                exe.display(),
                defaults.status
            );
        }
        let mut config: toml::Table = String::from_utf8_lossy(&defaults.stdout)
            .parse()
            .context("the default configuration does not parse")?;
        let gate = free_loopback_addr()?;
        let api = free_loopback_addr()?;
        let data_dir = dir.path().join("data");
        set(&mut config, "gate", "listen", gate.to_string())?;
        set(&mut config, "api", "listen", api.to_string())?;
        // The gRPC API too: on its default port, two spawned servers (parallel tests, or a
        // `longlink serve` already running) would collide.
        if config
            .get("api")
            .and_then(|api| api.get("grpc_listen"))
            .is_some()
        {
            set(
                &mut config,
                "api",
                "grpc_listen",
                free_loopback_addr()?.to_string(),
            )?;
        }
        // The WebSocket listener is on by default (7701): off here, for the same reason; a
        // scenario run with `--transport ws` turns it on again on a free port (an override,
        // see [`transport_overrides`]).
        if config
            .get("gate")
            .and_then(|gate| gate.get("ws_listen"))
            .is_some()
        {
            set(&mut config, "gate", "ws_listen", String::new())?;
        }
        // Every bench client comes from loopback: the per-IP connection flapping limit
        // (600 per 10 s by default, docs/security.md) would refuse a load generator.
        if config
            .get("guard")
            .and_then(|guard| guard.get("ip_max_connects"))
            .is_some()
        {
            set_value(
                &mut config,
                "guard",
                "ip_max_connects",
                toml::Value::Integer(0),
            )?;
        }
        set(
            &mut config,
            "store",
            "data_dir",
            data_dir.display().to_string(),
        )?;
        for (section, field, value) in overrides {
            set_value(&mut config, section, field, value.clone())?;
        }
        let ws = ws_listen(&config)?;
        let secret = app_secret(&config, appcode)?;
        let secrets = app_secrets(&config);
        let config_path = dir.path().join("longlink.toml");
        std::fs::write(&config_path, toml::to_string(&config)?)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(&data_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        // The spawned server runs on exactly this config: no LONGLINK_* from the caller's shell.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("LONGLINK_") {
                command.env_remove(key);
            }
        }
        command.env("LONGLINK_LOG", log_level);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {} serve", exe.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the server exited at once"))?;

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the server exited during startup ({status}): {}",
                    log_tail(&log_path)
                );
            }
            if health(api).await.is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "the server did not answer /healthz within {}s: {}",
                    START_TIMEOUT.as_secs(),
                    log_tail(&log_path)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Target {
            gate,
            ws,
            api: Some(api),
            pid,
            secret,
            spawned: Some(Spawned {
                child,
                dir,
                secrets,
                log_level: log_level.to_owned(),
            }),
        })
    }

    /// Where a client of `transport` connects: the gate's TCP address, or a spawned server's
    /// WebSocket listener. For a server the bench did not start, `--server` is taken to be
    /// the listener of the transport asked for.
    ///
    /// # Errors
    /// A spawned server without a WebSocket listener (the scenario did not turn it on).
    pub(crate) fn endpoint(&self, transport: Transport) -> anyhow::Result<SocketAddr> {
        match (transport, self.ws) {
            (Transport::Tcp, _) => Ok(self.gate),
            (Transport::Ws, Some(ws)) => Ok(ws),
            (Transport::Ws, None) if !self.is_spawned() => Ok(self.gate),
            (Transport::Ws, None) => bail!("the spawned server has no WebSocket listener"),
        }
    }

    /// Whether the bench started this server.
    pub(crate) fn is_spawned(&self) -> bool {
        self.spawned.is_some()
    }

    /// A spawned server's `LONGLINK_LOG` (`None` for one the bench did not start), for the
    /// JSON.
    pub(crate) fn log_level(&self) -> Option<String> {
        self.spawned.as_ref().map(|s| s.log_level.clone())
    }

    /// The note for a spawned server that logged more than warnings: its figures include the
    /// logging.
    pub(crate) fn log_level_note(&self) -> Option<String> {
        self.log_level()
            .filter(|level| level != "warn" && level != "error")
            .map(|level| format!("the server logged at LONGLINK_LOG={level}"))
    }

    /// The server's version from `/healthz` ("unknown" when it does not say).
    pub(crate) async fn version(&self) -> String {
        self.health()
            .await
            .map_or_else(|| "unknown".to_owned(), |health| health.version)
    }

    /// This server for the JSON, with its `version`.
    pub(crate) fn identity(&self, version: String) -> ServerIdentity {
        ServerIdentity {
            spawned: self.is_spawned(),
            version,
            pid: self.pid,
            gate: self.gate.to_string(),
            ws: self.ws.map(|ws| ws.to_string()),
        }
    }

    /// The server line of a run's header: pid, who started it, `version`, gate (a scenario
    /// adds what else it knows).
    pub(crate) fn describe(&self, version: &str) -> String {
        format!(
            "server: pid {}, {}, longlink {version}, gate {}{}",
            self.pid,
            match self.log_level() {
                Some(level) => format!("started by the bench (serve, LONGLINK_LOG={level})"),
                None => "already running".to_owned(),
            },
            self.gate,
            self.ws
                .map(|ws| format!(", WebSocket {ws}"))
                .unwrap_or_default()
        )
    }

    /// The HS256 secret of `appcode` in a spawned server's configuration (`None` for a server
    /// the bench did not start, or an appcode it does not know).
    pub(crate) fn secret_of(&self, appcode: u32) -> Option<String> {
        self.spawned.as_ref().and_then(|s| {
            s.secrets
                .iter()
                .find(|(code, _)| *code == appcode)
                .map(|(_, secret)| secret.clone())
        })
    }

    /// A spawned server's data directory (its store).
    pub(crate) fn data_dir(&self) -> Option<std::path::PathBuf> {
        self.spawned.as_ref().map(|s| s.dir.path().join("data"))
    }

    /// The server's `/healthz`, when its API address is known.
    pub(crate) async fn health(&self) -> Option<Health> {
        match self.api {
            Some(api) => health(api).await.ok(),
            None => None,
        }
    }

    /// The last lines a spawned server logged.
    pub(crate) fn log_tail(&self) -> Option<String> {
        self.spawned
            .as_ref()
            .map(|s| log_tail(&s.dir.path().join("server.log")))
    }

    /// Ends a scenario's run against this server: `outcome` is its measurement under the
    /// `--deadline-secs` deadline. When the run went wrong (an error, the deadline, or a report
    /// that `valid` refuses) a spawned server's last log lines are shown; then the server is
    /// stopped. Returns the report, or the run's error, or the deadline's (`cut` names what
    /// the deadline stopped besides the server). Trouble stopping the server is only a note.
    ///
    /// # Errors
    /// The measurement's error; the deadline passed.
    pub(crate) async fn end_run<R>(
        self,
        outcome: Result<anyhow::Result<R>, tokio::time::error::Elapsed>,
        valid: impl FnOnce(&R) -> bool,
        deadline_secs: u64,
        cut: &str,
    ) -> anyhow::Result<R> {
        let went_wrong = !matches!(&outcome, Ok(Ok(report)) if valid(report));
        if went_wrong && let Some(tail) = self.log_tail() {
            eprintln!("note: the spawned server's last log lines: {tail}");
        }
        let stopped = self.stop().await;
        let report = match outcome {
            Ok(report) => report?,
            Err(_) => bail!(
                "the bench passed its deadline of {deadline_secs}s (--deadline-secs); {cut} and server stopped"
            ),
        };
        if let Err(err) = stopped {
            eprintln!("note: stopping the server: {err:#}");
        }
        Ok(report)
    }

    /// Stops a spawned server (SIGTERM, then SIGKILL after a timeout); an external one is left
    /// alone.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        let Some(mut spawned) = self.spawned.take() else {
            return Ok(());
        };
        if let Some(pid) = spawned
            .child
            .id()
            .and_then(|pid| rustix::process::Pid::from_raw(pid as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        match tokio::time::timeout(STOP_TIMEOUT, spawned.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                spawned.child.kill().await?;
            }
        }
        drop(spawned.dir);
        Ok(())
    }
}

async fn health(api: SocketAddr) -> anyhow::Result<Health> {
    let (status, body) = http::get(api, "/healthz", Duration::from_secs(2)).await?;
    if status != 200 {
        bail!("GET /healthz: status {status}");
    }
    serde_json::from_str(&body).context("GET /healthz: unexpected body")
}

/// A loopback address with a port that was free a moment ago (bind port 0, read, drop).
fn free_loopback_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(listener.local_addr()?)
}

fn set(config: &mut toml::Table, section: &str, field: &str, value: String) -> anyhow::Result<()> {
    let Some(toml::Value::Table(table)) = config.get_mut(section) else {
        bail!("the default configuration has no [{section}]");
    };
    table.insert(field.to_owned(), toml::Value::String(value));
    Ok(())
}

/// Settings the default configuration shows only in comments, which an override may add: the
/// `[[push.http]]` providers (`bench notify` configures one).
const ADDABLE: &[(&str, &str)] = &[("push", "http")];

/// Replaces `[section] field`, which must exist in the default configuration (or be one of
/// [`ADDABLE`]): a renamed setting then fails the run instead of being silently ignored by the
/// server.
fn set_value(
    config: &mut toml::Table,
    section: &str,
    field: &str,
    value: toml::Value,
) -> anyhow::Result<()> {
    let Some(toml::Value::Table(table)) = config.get_mut(section) else {
        bail!("the default configuration has no [{section}]");
    };
    if !table.contains_key(field) && !ADDABLE.contains(&(section, field)) {
        bail!("the default configuration has no [{section}] {field}");
    }
    table.insert(field.to_owned(), value);
    Ok(())
}

/// One setting of a spawned server's configuration: `[section] field = value`.
pub(crate) type ConfigOverride = (&'static str, &'static str, toml::Value);

/// An admission limiter that does not refuse the load generator: `[gate] login_rate_per_sec`
/// (5,000/s by default) is below the rate the workers log in at, a refused LOGIN is not
/// retried, and the scenarios measure the server's work, not its admission control.
pub(crate) fn unthrottled_logins() -> Vec<ConfigOverride> {
    vec![
        (
            "gate",
            "login_rate_per_sec",
            toml::Value::Integer(1_000_000),
        ),
        ("gate", "login_burst", toml::Value::Integer(1_000_000)),
    ]
}

/// The settings a spawned server needs for clients of `transport`: for WebSocket, its
/// `[gate] ws_listen` on a free loopback port (the bench turns it off otherwise).
///
/// # Errors
/// No free loopback port.
pub(crate) fn transport_overrides(transport: Transport) -> anyhow::Result<Vec<ConfigOverride>> {
    Ok(match transport {
        Transport::Tcp => Vec::new(),
        Transport::Ws => vec![(
            "gate",
            "ws_listen",
            toml::Value::String(free_loopback_addr()?.to_string()),
        )],
    })
}

/// The WebSocket listener a configuration turns on (`None` when `ws_listen` is off).
fn ws_listen(config: &toml::Table) -> anyhow::Result<Option<SocketAddr>> {
    match config
        .get("gate")
        .and_then(|gate| gate.get("ws_listen"))
        .and_then(toml::Value::as_str)
    {
        None | Some("") => Ok(None),
        Some(addr) => addr
            .parse()
            .map(Some)
            .with_context(|| format!("[gate] ws_listen {addr:?} is not an address")),
    }
}

fn app_secret(config: &toml::Table, appcode: u32) -> anyhow::Result<String> {
    config
        .get("apps")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_table)
        .find(|app| {
            app.get("appcode").and_then(toml::Value::as_integer) == Some(i64::from(appcode))
        })
        .and_then(|app| app.get("secret"))
        .and_then(toml::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("appcode {appcode} is not in the default configuration's [[apps]]"))
}

/// Every `[[apps]]` entry's (appcode, secret).
fn app_secrets(config: &toml::Table) -> Vec<(u32, String)> {
    config
        .get("apps")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_table)
        .filter_map(|app| {
            let code = app.get("appcode")?.as_integer()?;
            let secret = app.get("secret")?.as_str()?;
            Some((u32::try_from(code).ok()?, secret.to_owned()))
        })
        .collect()
}

/// The last lines of a log, on one line.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    let tail: Vec<&str> = lines.into_iter().rev().collect();
    if tail.is_empty() {
        "(no output)".to_owned()
    } else {
        tail.join(" | ")
    }
}

impl ServerTarget {
    /// The server these options name: the one already running at `--server` (`secret` gives
    /// the HS256 secret of the bench's appcode there), or one started now as `<exe> serve`
    /// with `LONGLINK_LOG=log_level` (its config gives the secret of `appcode`), ready before
    /// `deadline`.
    ///
    /// # Errors
    /// `--server` without `--server-pid`, no such pid, no secret, a server that does not start
    /// in time.
    pub(crate) async fn resolve(
        &self,
        exe: &Path,
        appcode: u32,
        log_level: &str,
        deadline: Instant,
        secret: impl FnOnce() -> anyhow::Result<String>,
    ) -> anyhow::Result<Target> {
        self.resolve_with(exe, appcode, log_level, &[], deadline, secret)
            .await
    }

    /// [`ServerTarget::resolve`], a spawned server's configuration changed by `overrides`
    /// (a server already running is taken as it is).
    ///
    /// # Errors
    /// As [`ServerTarget::resolve`]; an override the default configuration has no field for.
    pub(crate) async fn resolve_with(
        &self,
        exe: &Path,
        appcode: u32,
        log_level: &str,
        overrides: &[ConfigOverride],
        deadline: Instant,
        secret: impl FnOnce() -> anyhow::Result<String>,
    ) -> anyhow::Result<Target> {
        match (self.server, self.server_pid) {
            (Some(gate), Some(pid)) => Target::external(gate, self.api, pid, secret()?),
            (None, None) => {
                tokio::time::timeout_at(deadline, Target::spawn(exe, appcode, log_level, overrides))
                    .await
                    .map_err(|_| anyhow!("the server did not start before the deadline"))?
            }
            _ => bail!("--server and --server-pid go together"),
        }
    }
}

/// Which server a scenario measures: by default one it starts itself, or one already running.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerTarget {
    /// Measure the server already running with its gate at this address (needs --server-pid);
    /// without it the bench starts its own server.
    #[arg(long, requires = "server_pid")]
    pub server: Option<std::net::SocketAddr>,
    /// Pid of the server at --server: its /proc entry gives RSS and CPU time.
    #[arg(long, requires = "server")]
    pub server_pid: Option<u32>,
    /// HTTP API of the server at --server, for /healthz (version, session count).
    #[arg(long, requires = "server")]
    pub api: Option<std::net::SocketAddr>,
}
