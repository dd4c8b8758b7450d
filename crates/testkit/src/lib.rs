//! Test helpers for longlink (not published): a real server on free loopback ports with a
//! throwaway data directory ([`TestServer`]), a raw protocol client for sending malformed or
//! hand-made frames ([`RawClient`]), and [`wait_until`] for waiting on a condition with a
//! deadline instead of sleeping.
//!
//! Listeners are bound before the server's tasks are spawned (`longlink_server::start`
//! returns only once bound), so a test may connect as soon as it has the address.

pub mod chromium;
pub mod cluster;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use longlink_proto::{Cmd, ErrorCode, Frame, FrameCodec, FrameType, wire};
use longlink_sdk::{Client, ClientConfig, Incoming};
use longlink_server::{Config, RunningServer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// How long helpers wait for anything before failing the test.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running single-node server with its own data directory.
#[derive(Debug)]
pub struct TestServer {
    server: Option<RunningServer>,
    config: Config,
    _data: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server with the default config on free ports and a fresh data dir.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Like [`TestServer::start`], after `adjust` has changed the config.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let data = tempfile::tempdir().expect("temp data dir");
        let mut config = Config::default();
        config.gate.listen = "127.0.0.1:0".parse().expect("addr");
        // The WebSocket listener is on by default (7701): tests run side by side.
        config.gate.ws_listen = Some("127.0.0.1:0".parse().expect("addr"));
        config.api.listen = "127.0.0.1:0".parse().expect("addr");
        config.api.grpc_listen = Some("127.0.0.1:0".parse().expect("addr"));
        config.store.data_dir = data.path().to_owned();
        adjust(&mut config);
        let server = longlink_server::start(&config)
            .await
            .expect("server starts");
        TestServer {
            server: Some(server),
            config,
            _data: Some(data),
        }
    }

    fn running(&self) -> &RunningServer {
        self.server.as_ref().expect("server is running")
    }

    /// The gRPC API's address (the tests' config always enables it).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.running().grpc_addr().expect("grpc is enabled")
    }

    /// An HTTP API client with the development key.
    pub fn api(&self) -> ApiClient {
        ApiClient::new(self.api_addr(), DEV_API_KEY)
    }

    /// The gate's address.
    pub fn gate_addr(&self) -> SocketAddr {
        self.running().gate_addr()
    }

    /// The HTTP API's address.
    pub fn api_addr(&self) -> SocketAddr {
        self.running().api_addr()
    }

    /// The config the server runs with (ports as configured, maybe 0).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.config.store.data_dir
    }

    /// The running server (e.g. to subscribe to its local bus).
    pub fn server(&self) -> &RunningServer {
        self.running()
    }

    /// A valid token for `(appcode, uid)`.
    pub fn token(&self, appcode: u32, uid: &str) -> String {
        self.config
            .apps()
            .mint(appcode, uid, 3600)
            .expect("appcode is configured")
    }

    /// An SDK client config for `(appcode, uid, device)` with a valid token.
    pub fn client_config(&self, appcode: u32, uid: &str, device: &str) -> ClientConfig {
        let mut config = ClientConfig::new(
            self.gate_addr().to_string(),
            appcode,
            self.token(appcode, uid),
            device,
        );
        config.request_timeout = WAIT;
        config
    }

    /// A logged-in SDK client.
    pub async fn client(&self, appcode: u32, uid: &str, device: &str) -> (Client, Incoming) {
        Client::connect(self.client_config(appcode, uid, device))
            .await
            .expect("client logs in")
    }

    /// A logged-in SDK client that never acknowledges on its own, so what it pulls does not
    /// depend on the redelivery pushed at login.
    pub async fn client_without_auto_ack(
        &self,
        appcode: u32,
        uid: &str,
        device: &str,
    ) -> (Client, Incoming) {
        let mut config = self.client_config(appcode, uid, device);
        config.auto_ack = false;
        Client::connect(config).await.expect("client logs in")
    }

    /// Asserts that the server still serves everyone else: a fresh client logs in and a c2c
    /// of its is acknowledged. Attack tests call it after each bad client.
    pub async fn assert_others_unaffected(&self) {
        let (a, _a_in) = self.client(129, "healthy-a", "d").await;
        let receipt = a
            .c2c(
                longlink_sdk::UserRef::new(129, "healthy-b"),
                longlink_sdk::Content::text("still fine"),
            )
            .await
            .expect("the gate keeps serving everyone else");
        assert!(receipt.msgid > 0);
        a.close().await;
    }

    /// Stops the server (in order, as on SIGTERM) and starts it again on the same data
    /// directory and the same ports.
    pub async fn restart(&mut self) {
        let server = self.server.take().expect("server is running");
        self.config.gate.listen = server.gate_addr();
        self.config.gate.ws_listen = server.ws_addr();
        self.config.gate.plain_listen = server.plain_addr();
        self.config.api.listen = server.api_addr();
        self.config.api.grpc_listen = server.grpc_addr();
        server.stop().await;
        self.server = Some(
            longlink_server::start(&self.config)
                .await
                .expect("server restarts"),
        );
    }

    /// Stops the server in order.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }
}

/// A client that speaks raw frames, for protocol tests.
#[derive(Debug)]
pub struct RawClient {
    framed: Framed<TcpStream, FrameCodec>,
}

impl RawClient {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<RawClient> {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .context("connect timed out")??;
        Ok(RawClient {
            framed: Framed::new(stream, FrameCodec::new(u32::MAX)),
        })
    }

    /// Sends `frame`.
    pub async fn send(&mut self, frame: Frame) -> anyhow::Result<()> {
        self.framed.send(frame).await?;
        Ok(())
    }

    /// Writes raw bytes (possibly not a valid frame).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.framed.get_mut().write_all(bytes).await?;
        self.framed.get_mut().flush().await?;
        Ok(())
    }

    /// Sends LOGIN with `token` for `appcode` and `device`; returns the answer frame.
    pub async fn login(
        &mut self,
        appcode: u32,
        token: &str,
        device: &str,
    ) -> anyhow::Result<Frame> {
        let request = wire::LoginRequest {
            token: token.to_owned(),
            appcode,
            device_id: device.to_owned(),
            ..Default::default()
        };
        self.send(Frame::request(Cmd::Login, 1, 0, &request))
            .await?;
        self.recv().await
    }

    /// The next frame, waiting at most [`WAIT`].
    pub async fn recv(&mut self) -> anyhow::Result<Frame> {
        // RECEIPT pushes come whenever a peer acks what this client sent; tests that expect a
        // particular frame are not about them (recv_any sees everything).
        loop {
            let frame = self.recv_any().await?;
            if frame.cmd() != Some(Cmd::Receipt) {
                return Ok(frame);
            }
        }
    }

    /// The next frame of any kind, RECEIPT pushes included, within [`WAIT`].
    ///
    /// # Errors
    /// None within [`WAIT`], the connection closed, or an undecodable frame.
    pub async fn recv_any(&mut self) -> anyhow::Result<Frame> {
        match tokio::time::timeout(WAIT, self.framed.next()).await {
            Err(_) => bail!("no frame within {WAIT:?}"),
            Ok(None) => bail!("connection closed"),
            Ok(Some(frame)) => Ok(frame?),
        }
    }

    /// Waits (at most [`WAIT`]) until the server closes the connection; frames that arrive
    /// first are returned.
    pub async fn until_closed(&mut self) -> anyhow::Result<Vec<Frame>> {
        let mut frames = Vec::new();
        loop {
            match tokio::time::timeout(WAIT, self.framed.next()).await {
                Err(_) => bail!("connection still open after {WAIT:?}"),
                Ok(None) => return Ok(frames),
                Ok(Some(Ok(frame))) => frames.push(frame),
                Ok(Some(Err(_))) => return Ok(frames),
            }
        }
    }
}

/// The code and seq_id of an ERROR frame, or an error if `frame` is not one.
pub fn error_of(frame: &Frame) -> anyhow::Result<(ErrorCode, u32)> {
    if frame.cmd() != Some(Cmd::Error) {
        bail!("expected an ERROR frame, got cmd {}", frame.header.cmd);
    }
    let body: wire::Error = frame.decode_body()?;
    let code = ErrorCode::try_from(body.code).context("unknown error code")?;
    Ok((code, frame.header.seq_id))
}

/// Whether `frame` is a response (type 1) of `cmd`.
pub fn is_response(frame: &Frame, cmd: Cmd) -> bool {
    frame.header.frame_type == FrameType::Response && frame.cmd() == Some(cmd)
}

/// Polls `check` until it returns true, at most `deadline`; never a fixed sleep.
///
/// # Errors
/// The condition did not hold in time.
pub async fn wait_until<F, Fut>(deadline: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    let mut pause = Duration::from_millis(5);
    loop {
        if check().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= end {
            bail!("condition not met within {deadline:?}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Raw bytes of a frame whose header announces `body_len` but carries no body.
pub fn header_only(cmd: u16, seq_id: u32, body_len: u32) -> Bytes {
    let header = longlink_proto::Header {
        flags: 0,
        log_id: 0,
        seq_id,
        cmd,
        frame_type: FrameType::Request,
        body_len,
    };
    Bytes::copy_from_slice(&header.encode())
}

/// A path for a file inside a fresh temp dir that lives as long as the returned guard.
pub fn temp_path(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    (dir, path)
}

/// A `longlink serve` child process (the real binary), for CLI and crash tests.
#[derive(Debug)]
pub struct ServeProcess {
    child: tokio::process::Child,
    /// `None`: a cluster process without the gate role.
    gate_addr: Option<SocketAddr>,
    /// `None`: a cluster process without the api role.
    api_addr: Option<SocketAddr>,
    stderr_lines: tokio::task::JoinHandle<Vec<String>>,
}

impl ServeProcess {
    /// Writes `config_toml` to `dir/longlink.toml`, runs `binary serve --config …` and waits
    /// for its "longlink ready" log line (at most [`WAIT`]), from which it reads the bound
    /// addresses (so the config may use port 0).
    pub async fn start(
        binary: &Path,
        dir: &Path,
        config_toml: &str,
    ) -> anyhow::Result<ServeProcess> {
        Self::start_with_env(binary, dir, config_toml, &[]).await
    }

    /// [`ServeProcess::start`] with extra environment variables, e.g.
    /// `LONGLINK_LOG_FORMAT=json` (the ready line is read in either format) or
    /// `LONGLINK_LOG=debug`.
    pub async fn start_with_env(
        binary: &Path,
        dir: &Path,
        config_toml: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<ServeProcess> {
        Self::start_with_args(binary, dir, config_toml, &[], env).await
    }

    /// [`ServeProcess::start_with_env`] with extra `serve` arguments, e.g. `--roles gate` for
    /// one process of a cluster (whose ready line may say `gate=off` or `api=off`).
    pub async fn start_with_args(
        binary: &Path,
        dir: &Path,
        config_toml: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<ServeProcess> {
        use tokio::io::AsyncBufReadExt;
        let config_path = dir.join("longlink.toml");
        std::fs::write(&config_path, config_toml)?;
        let mut command = tokio::process::Command::new(binary);
        command.env("LONGLINK_LOG", "info");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("spawn longlink serve")?;
        let stderr = child.stderr.take().context("stderr")?;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let ready = tokio::time::timeout(WAIT, async {
            let mut seen = Vec::new();
            while let Some(line) = lines.next_line().await? {
                if line.contains("longlink ready") {
                    return Ok::<_, anyhow::Error>((line, seen));
                }
                seen.push(line);
            }
            bail!("serve exited before it was ready: {}", seen.join(" | "))
        })
        .await
        .context("serve not ready in time")??;
        let field = |name: &str| -> anyhow::Result<Option<SocketAddr>> {
            // Text logs say `gate=ADDR`, JSON logs `"gate":"ADDR"`.
            let (start, end_char) = match ready.0.find(&format!("{name}=")) {
                Some(at) => (at + name.len() + 1, ' '),
                None => {
                    let key = format!("\"{name}\":\"");
                    let at = ready.0.find(&key).context("addr in ready line")?;
                    (at + key.len(), '"')
                }
            };
            let rest = &ready.0[start..];
            let end = rest.find(end_char).unwrap_or(rest.len());
            match &rest[..end] {
                "off" => Ok(None),
                addr => Ok(Some(addr.parse()?)),
            }
        };
        let (gate_addr, api_addr) = (field("gate")?, field("api")?);
        // Keep draining stderr so the child never blocks on a full pipe.
        let stderr_lines = tokio::spawn(async move {
            let mut seen = ready.1;
            while let Ok(Some(line)) = lines.next_line().await {
                seen.push(line);
            }
            seen
        });
        Ok(ServeProcess {
            child,
            gate_addr,
            api_addr,
            stderr_lines,
        })
    }

    /// The gate's bound address.
    ///
    /// # Panics
    /// The process runs no gate (a cluster role).
    pub fn gate_addr(&self) -> SocketAddr {
        self.gate_addr.expect("this process runs no gate")
    }

    /// The API's bound address.
    ///
    /// # Panics
    /// The process runs no API (a cluster role).
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr.expect("this process runs no API")
    }

    /// The child's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `kill -9`: no chance to flush or say goodbye.
    pub async fn kill9(mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        tokio::time::timeout(WAIT, self.child.wait()).await??;
        Ok(())
    }

    /// SIGTERM, then waits (at most [`WAIT`]) for a clean exit; returns the exit status and
    /// the log lines.
    pub async fn terminate(mut self) -> anyhow::Result<(std::process::ExitStatus, Vec<String>)> {
        let pid = self.child.id().context("already exited")?;
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        let exit = tokio::time::timeout(WAIT, self.child.wait()).await??;
        let lines = tokio::time::timeout(WAIT, self.stderr_lines).await??;
        Ok((exit, lines))
    }
}

/// The default config text with both listeners on port 0 and the data in `data_dir`.
pub fn config_on_free_ports(data_dir: &Path) -> String {
    longlink_server::DEFAULT_CONFIG
        .replace("listen = \"127.0.0.1:7700\"", "listen = \"127.0.0.1:0\"")
        .replace("listen = \"127.0.0.1:7780\"", "listen = \"127.0.0.1:0\"")
        .replace("listen = \"127.0.0.1:7790\"", "listen = \"127.0.0.1:0\"")
        .replace(
            "ws_listen = \"127.0.0.1:7701\"",
            "ws_listen = \"127.0.0.1:0\"",
        )
        .replace(
            "data_dir = \"./longlink-data\"",
            &format!("data_dir = {:?}", data_dir.display().to_string()),
        )
}

/// The API key of the default config.
pub use longlink_server::DEV_API_KEY;

/// A small JSON client of the HTTP API, for tests: every call has a deadline ([`WAIT`]) and
/// returns the status with the parsed body (`Value::Null` for an empty or non-JSON body).
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the API at `addr` using `key`.
    pub fn new(addr: SocketAddr, key: &str) -> Self {
        Self {
            base: format!("http://{addr}"),
            key: Some(key.to_owned()),
            http: reqwest::Client::builder()
                .timeout(WAIT)
                .build()
                .expect("http client"),
        }
    }

    /// The same client with another key (`None`: no key at all).
    pub fn with_key(&self, key: Option<&str>) -> Self {
        Self {
            key: key.map(str::to_owned),
            ..self.clone()
        }
    }

    /// The base URL, `http://addr`.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        Self::finish(self.request(reqwest::Method::GET, path)).await
    }

    /// `POST path` with `body` as JSON.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        Self::finish(self.request(reqwest::Method::POST, path).json(body)).await
    }

    /// `PUT path` with `body` as JSON.
    pub async fn put(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        Self::finish(self.request(reqwest::Method::PUT, path).json(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        Self::finish(self.request(reqwest::Method::DELETE, path)).await
    }

    /// `POST path` with raw bytes and a content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, serde_json::Value) {
        Self::finish(
            self.request(reqwest::Method::POST, path)
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    async fn finish(request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let response = request.send().await.expect("API answers");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("API body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }
}

/// This process's resident memory in bytes (`VmRSS` of `/proc/self/status`): a test's
/// in-process server is part of it, so an attack that inflates the server shows here.
pub fn vm_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}
