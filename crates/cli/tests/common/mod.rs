//! Helpers shared by the `longlink` binary's integration tests: running the binary with a
//! clean environment, a `longlink serve` node on free ports, and waiting for presence.

// Each test file is its own crate and compiles this module separately; none of them uses every
// helper, so what one file leaves unused is not dead code.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use longlink_testkit::{
    ApiClient, DEV_API_KEY, ServeProcess, WAIT, config_on_free_ports, wait_until,
};
use tokio::process::{Child, Command};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_longlink");

/// What a finished command left: its exit code (-1 if killed by a signal) and its output.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// `longlink args…`, untouched by the environment the tests run in (no `LONGLINK_CONFIG`,
/// `LONGLINK_API`, `LONGLINK_API_KEY` or `LONGLINK_TOKEN`), killed if the test drops it.
pub(crate) fn command(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("LONGLINK_CONFIG")
        .env_remove("LONGLINK_API")
        .env_remove("LONGLINK_API_KEY")
        .env_remove("LONGLINK_TOKEN")
        .kill_on_drop(true);
    command
}

/// Runs `longlink args…` to the end, within [`WAIT`].
pub(crate) async fn run(args: &[&str]) -> Run {
    let output = tokio::time::timeout(WAIT, command(args).output())
        .await
        .expect("command finished in time")
        .expect("command ran");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `args` and expects success.
pub(crate) async fn ok(args: &[&str]) -> String {
    let out = run(args).await;
    assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    out.stdout
}

/// Each line of `text` as JSON (what `--json` prints).
pub(crate) fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// A `longlink serve` in `dir` (its config there, its data in `dir/data`), on free ports.
pub(crate) async fn serve_in(dir: &Path) -> ServeProcess {
    ServeProcess::start(
        Path::new(BIN),
        dir,
        &config_on_free_ports(&dir.join("data")),
    )
    .await
    .expect("serve starts")
}

/// Waits until `appcode:uid` is online in the presence of the node whose API is at `api`.
pub(crate) async fn wait_online(api: SocketAddr, appcode: u32, uid: &str) {
    let client = ApiClient::new(api, DEV_API_KEY);
    let path = format!("/v1/presence/{appcode}/{uid}");
    wait_until(WAIT, || {
        let (client, path) = (client.clone(), path.clone());
        async move { client.get(&path).await.1["online"] == true }
    })
    .await
    .unwrap_or_else(|_| panic!("{appcode}:{uid} online in presence"));
}

/// A `longlink serve` in its own temporary directory, with its addresses as the commands take
/// them.
pub(crate) struct Node {
    pub(crate) serve: ServeProcess,
    /// The gate's `host:port` (`--server`).
    pub(crate) gate: String,
    /// The API's `http://host:port` (`--api`).
    pub(crate) api: String,
    _dir: tempfile::TempDir,
}

impl Node {
    pub(crate) async fn start() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let serve = serve_in(dir.path()).await;
        Node {
            gate: serve.gate_addr().to_string(),
            api: format!("http://{}", serve.api_addr()),
            serve,
            _dir: dir,
        }
    }

    /// An API client with the development key.
    pub(crate) fn client(&self) -> ApiClient {
        ApiClient::new(self.serve.api_addr(), DEV_API_KEY)
    }

    /// `client listen --json` as appcode:uid, then `extra`, until it ends or is killed (the
    /// child is killed when dropped); stdout and stderr piped.
    pub(crate) fn listen(&self, appcode: &str, uid: &str, extra: &[&str]) -> Child {
        command(&[
            "client",
            "listen",
            "--server",
            &self.gate,
            "--appcode",
            appcode,
            "--uid",
            uid,
            "--json",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("listen starts")
    }

    /// Waits until `appcode:uid` is online in this node's presence.
    pub(crate) async fn wait_online(&self, appcode: u32, uid: &str) {
        wait_online(self.serve.api_addr(), appcode, uid).await;
    }
}
