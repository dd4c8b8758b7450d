//! A multi-process cluster for tests (issue 7): throwaway redis-server, postgres and
//! nats-server (`longlink-testservers`), then `longlink serve --roles …` child processes
//! ([`ServeProcess`]), each with its own data dir, config and free ports, so that any process
//! or engine can be killed and restarted; plus SDK clients to a chosen gate.
//!
//! Processes are named (`"gate-a"`, `"logic-1"`…): the name is the process's data dir and, for
//! a gate, its gate id. A restart keeps the name, roles and data dir (new ports).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use longlink_sdk::{Client, ClientConfig, Event, Incoming, UserRef};
use longlink_testservers::{NatsServer, PostgresServer, RedisServer};

use crate::{ApiClient, DEV_API_KEY, ServeProcess, WAIT};

/// The gate heartbeat period of cluster tests.
pub const HEARTBEAT_SECS: u64 = 1;
/// A gate silent this long is dead (its sessions are purged).
pub const GATE_DEAD_SECS: u64 = 3;
/// The gate → logic call timeout of cluster tests, in milliseconds.
pub const RPC_TIMEOUT_MS: u64 = 3000;
/// The appcode the cluster's clients use.
pub const APPCODE: u32 = 129;

/// The three engines and the named `longlink serve` processes on them.
#[derive(Debug)]
pub struct Cluster {
    /// Presence, heartbeats, node-id leases ([`RedisServer::restart`] starts empty).
    pub redis: RedisServer,
    /// The message store.
    pub postgres: PostgresServer,
    /// The bus and the gate ↔ logic calls.
    pub nats: NatsServer,
    bin: PathBuf,
    dir: tempfile::TempDir,
    processes: BTreeMap<String, (String, Option<ServeProcess>)>,
}

impl Cluster {
    /// Starts the three engines (no process yet); `bin` is the `longlink` binary
    /// (`env!("CARGO_BIN_EXE_longlink")` in the CLI's tests).
    ///
    /// # Panics
    /// An engine does not start.
    pub fn start(bin: &Path) -> Cluster {
        Cluster {
            redis: RedisServer::start().expect("redis-server starts"),
            postgres: PostgresServer::start().expect("postgres starts"),
            nats: NatsServer::start().expect("nats-server starts"),
            bin: bin.to_owned(),
            dir: tempfile::tempdir().expect("temp dir"),
            processes: BTreeMap::new(),
        }
    }

    /// The config text of process `name` (gate id = `name`, the engines' URLs, the test
    /// timings).
    pub fn config(&self, name: &str) -> String {
        let dir = self.dir.path().join(name);
        crate::config_on_free_ports(&dir.join("data"))
            .replace("gate_id = \"gate-1\"", &format!("gate_id = {name:?}"))
            .replace(
                "redis_url = \"\"",
                &format!("redis_url = {:?}", self.redis.url()),
            )
            .replace(
                "postgres_url = \"\"",
                &format!("postgres_url = {:?}", self.postgres.url()),
            )
            .replace(
                "nats_url = \"\"",
                &format!("nats_url = {:?}", self.nats.url()),
            )
            .replace(
                "heartbeat_secs = 2",
                &format!("heartbeat_secs = {HEARTBEAT_SECS}"),
            )
            .replace(
                "gate_dead_secs = 10",
                &format!("gate_dead_secs = {GATE_DEAD_SECS}"),
            )
            .replace(
                "rpc_timeout_ms = 10000",
                &format!("rpc_timeout_ms = {RPC_TIMEOUT_MS}"),
            )
    }

    /// Starts `longlink serve --roles ROLES` as process `name` and waits until it is ready.
    ///
    /// # Panics
    /// It does not start, or a process of that name runs already.
    pub async fn spawn(&mut self, name: &str, roles: &str) -> &ServeProcess {
        if let Some((_, Some(_))) = self.processes.get(name) {
            panic!("process {name} runs already");
        }
        let process = self.launch(name, roles).await;
        self.processes
            .insert(name.to_owned(), (roles.to_owned(), Some(process)));
        self.process(name)
    }

    async fn launch(&self, name: &str, roles: &str) -> ServeProcess {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("process dir");
        let config = self.config(name);
        ServeProcess::start_with_args(&self.bin, &dir, &config, &["--roles", roles], &[])
            .await
            .unwrap_or_else(|err| panic!("{name} ({roles}) starts: {err:#}"))
    }

    /// The running process `name`.
    ///
    /// # Panics
    /// No such process runs.
    pub fn process(&self, name: &str) -> &ServeProcess {
        match self.processes.get(name) {
            Some((_, Some(process))) => process,
            _ => panic!("process {name} does not run"),
        }
    }

    fn take(&mut self, name: &str) -> ServeProcess {
        match self.processes.get_mut(name) {
            Some((_, process @ Some(_))) => process.take().expect("checked"),
            _ => panic!("process {name} does not run"),
        }
    }

    /// `kill -9` of process `name` (it can be [`Cluster::restart`]ed).
    ///
    /// # Panics
    /// It does not run or does not die.
    pub async fn kill9(&mut self, name: &str) {
        self.take(name)
            .kill9()
            .await
            .unwrap_or_else(|err| panic!("kill -9 {name}: {err:#}"));
    }

    /// SIGTERM to process `name`; its exit status and log lines.
    ///
    /// # Panics
    /// It does not run or does not exit in time.
    pub async fn terminate(&mut self, name: &str) -> (std::process::ExitStatus, Vec<String>) {
        self.take(name)
            .terminate()
            .await
            .unwrap_or_else(|err| panic!("stop {name}: {err:#}"))
    }

    /// SIGTERM to every running process; panics unless each exits 0.
    pub async fn terminate_all(&mut self) {
        let names: Vec<String> = self
            .processes
            .iter()
            .filter(|(_, (_, p))| p.is_some())
            .map(|(name, _)| name.clone())
            .collect();
        for name in names {
            let (status, lines) = self.terminate(&name).await;
            assert!(
                status.success(),
                "{name} exits 0 on SIGTERM: {status}; log: {}",
                lines.join("\n")
            );
        }
    }

    /// Starts process `name` again with its roles and data dir (killed with `kill -9` first
    /// if it still runs). A gate can only come back once its old heartbeat expired: this
    /// retries for up to `GATE_DEAD_SECS` plus [`WAIT`].
    ///
    /// # Panics
    /// It was never started, or does not come back.
    pub async fn restart(&mut self, name: &str) -> &ServeProcess {
        let roles = self
            .processes
            .get(name)
            .map(|(roles, _)| roles.clone())
            .unwrap_or_else(|| panic!("process {name} was never started"));
        if matches!(self.processes.get(name), Some((_, Some(_)))) {
            self.kill9(name).await;
        }
        let end = tokio::time::Instant::now() + Duration::from_secs(GATE_DEAD_SECS) + WAIT;
        let dir = self.dir.path().join(name);
        let config = self.config(name);
        let process = loop {
            match ServeProcess::start_with_args(&self.bin, &dir, &config, &["--roles", &roles], &[])
                .await
            {
                Ok(process) => break process,
                Err(err) if tokio::time::Instant::now() < end => {
                    eprintln!("{name} not back yet ({err:#}); retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => panic!("{name} ({roles}) restarts: {err:#}"),
            }
        };
        self.processes
            .insert(name.to_owned(), (roles, Some(process)));
        self.process(name)
    }

    /// An API client on process `name` (which runs the api role).
    pub fn api(&self, name: &str) -> ApiClient {
        ApiClient::new(self.process(name).api_addr(), DEV_API_KEY)
    }

    /// A client config for `uid` on gate `gate` (request timeout 5 s, send deadline 60 s).
    pub fn client_config(&self, gate: &str, uid: &str, device: &str) -> ClientConfig {
        let mut config = ClientConfig::new(
            self.process(gate).gate_addr().to_string(),
            APPCODE,
            token(uid),
            device,
        );
        config.request_timeout = Duration::from_secs(5);
        config.send_deadline = Duration::from_secs(60);
        config
    }

    /// `uid` logged in on gate `gate` with the SDK.
    ///
    /// # Panics
    /// The login fails.
    pub async fn connect(&self, gate: &str, uid: &str, device: &str) -> (Client, Incoming) {
        Client::connect(self.client_config(gate, uid, device))
            .await
            .unwrap_or_else(|err| panic!("{uid} logs in on {gate}: {err}"))
    }
}

/// A token for `uid` of [`APPCODE`] from the default config's keys.
pub fn token(uid: &str) -> String {
    longlink_server::Config::default()
        .apps()
        .mint(APPCODE, uid, 3600)
        .expect("token")
}

/// `uid` of [`APPCODE`].
pub fn user(uid: &str) -> UserRef {
    UserRef::new(APPCODE, uid)
}

/// The next message the app gets (other events skipped), within [`WAIT`].
///
/// # Panics
/// None comes in time, or the client ends.
pub async fn next_message(incoming: &mut Incoming) -> longlink_sdk::Message {
    tokio::time::timeout(WAIT, async {
        loop {
            match incoming.next_event().await {
                Some(Event::Message(message)) => return message,
                Some(_) => {}
                None => panic!("the client ended before a message came"),
            }
        }
    })
    .await
    .expect("a message within the deadline")
}

/// Whether the API says `uid` has a session.
///
/// # Panics
/// The API does not answer 200.
pub async fn online(api: &ApiClient, uid: &str) -> bool {
    let (status, body) = api.get(&format!("/v1/presence/{APPCODE}/{uid}")).await;
    assert_eq!(status, 200, "{body}");
    body["online"].as_bool().expect("online flag")
}
