//! Throwaway backend servers for tests: [`RedisServer`], [`PostgresServer`] and
//! [`NatsServer`] each start the real Debian binary (`redis-server`, `postgres`,
//! `nats-server -js`) on a free loopback port with its data in a temp dir, wait until it
//! accepts connections, and kill it (and remove the dir) when dropped. `restart`, `stop` and
//! `kill` let fault tests take a backend away and bring it back on the same port and data.
//!
//! No Docker and no downloads: a missing binary is an error that says to run `scripts/test`,
//! which installs them. Every wait has a deadline ([`START_TIMEOUT`]).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

mod nats;
mod postgres;
mod redis;
mod redis_cluster;

pub use nats::NatsServer;
pub use postgres::PostgresServer;
pub use redis::RedisServer;
pub use redis_cluster::RedisCluster;

/// How long a server may take to accept connections after it was started.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A free loopback TCP port, found by binding port 0 and letting it go. Another process may
/// take it before the server binds it; [`start_on_free_port`] retries on that.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The path of `name`: on the `PATH`, else in one of `extra` directories.
fn find_binary(name: &str, extra: &[&str]) -> anyhow::Result<PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!("{name} is not installed: run scripts/test, which installs what the tests need")
        })
}

/// Polls until `addr` accepts a TCP connection, the child exits, or [`START_TIMEOUT`] passes.
fn wait_for_port(
    child: &mut Child,
    addr: SocketAddr,
    what: &str,
    log: &Path,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            // A connect to a port nobody listens on yet can reach itself (TCP self-connect,
            // when the kernel picks that same port as the source): that is not the server.
            if stream.local_addr().ok() != stream.peer_addr().ok() {
                return Ok(());
            }
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "{what} exited ({status}) before accepting connections: {}",
                tail(log)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{what} did not accept connections on {addr} within {START_TIMEOUT:?}: {}",
                tail(log)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a server with `spawn(port)` on free ports until one binds (another process may take
/// a port between [`free_port`] and the server's bind).
fn start_on_free_port(
    what: &str,
    log: &Path,
    spawn: impl Fn(u16) -> anyhow::Result<Child>,
) -> anyhow::Result<(Child, u16)> {
    let mut last = None;
    for _ in 0..5 {
        let port = free_port()?;
        let mut child = spawn(port)?;
        match wait_for_port(
            &mut child,
            SocketAddr::from(([127, 0, 0, 1], port)),
            what,
            log,
        ) {
            Ok(()) => return Ok((child, port)),
            Err(err) => {
                kill_child(&mut child);
                last = Some(err);
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("{what} did not start")))
}

/// SIGKILL and reap; a child that already exited is fine.
fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGTERM, then wait up to [`START_TIMEOUT`] for a clean exit, then SIGKILL.
fn terminate_child(child: &mut Child) {
    if let Some(pid) = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        // The child is not reaped yet, so its pid is still its own.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    kill_child(child);
}

/// How a server binary is started on a given port (the closure owns its paths and flags).
type Spawner = Box<dyn Fn(u16) -> anyhow::Result<Child> + Send + Sync>;

/// One server process on a fixed port with its data in a temp dir: what every single-server
/// type here shares — start on a free port, kill (a crash), stop (SIGTERM), restart on the
/// same port and data, and kill when dropped.
struct Managed {
    what: &'static str,
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    log: PathBuf,
    spawn: Spawner,
}

impl std::fmt::Debug for Managed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(self.what)
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .field("running", &self.child.is_some())
            .finish()
    }
}

impl Managed {
    /// Starts `spawn(port)` on a free port; `log` is the file name inside `dir`.
    fn start(what: &'static str, dir: TempDir, log: &str, spawn: Spawner) -> anyhow::Result<Self> {
        let log = dir.path().join(log);
        let (child, port) = start_on_free_port(what, &log, &spawn)?;
        Ok(Managed {
            what,
            child: Some(child),
            port,
            dir,
            log,
            spawn,
        })
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate_child(&mut child);
        }
    }

    fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let mut child = (self.spawn)(self.port)?;
        wait_for_port(
            &mut child,
            SocketAddr::from(([127, 0, 0, 1], self.port)),
            self.what,
            &self.log,
        )?;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last lines of a server's log, for error messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(15);
    format!("log {}:\n{}", log.display(), lines[start..].join("\n"))
}

/// A log file for a server's stdout and stderr.
fn log_file(path: &Path) -> anyhow::Result<(Stdio, Stdio)> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    Ok((Stdio::from(file.try_clone()?), Stdio::from(file)))
}

/// A command with its output going to `log`.
fn command(binary: &Path, log: &Path) -> anyhow::Result<Command> {
    let mut cmd = Command::new(binary);
    let (out, err) = log_file(log)?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    Ok(cmd)
}
