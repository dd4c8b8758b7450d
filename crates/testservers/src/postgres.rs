//! A throwaway PostgreSQL: `initdb` into a temp dir, then `postgres` on a free loopback port.
//!
//! Both refuse to run as root, so as root they run as the `postgres` user (the child's uid is
//! set directly, so the process we kill is postgres itself, not a wrapper).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Child;

use anyhow::{Context, bail};

use crate::{Managed, command, find_binary};

/// Where Debian puts the server binaries (not on the PATH).
const DEBIAN_BIN: &[&str] = &["/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin"];

/// A PostgreSQL cluster in a temp dir (`fsync=off`: a test database), user `longlink` with
/// trust auth, database `postgres`.
#[derive(Debug)]
pub struct PostgresServer(Managed);

impl PostgresServer {
    /// Runs initdb and starts the server.
    ///
    /// # Errors
    /// The binaries are missing, initdb fails, or the server does not start.
    pub fn start() -> anyhow::Result<PostgresServer> {
        let initdb = find_binary("initdb", DEBIAN_BIN)?;
        let binary = find_binary("postgres", DEBIAN_BIN)?;
        let dir = tempfile::tempdir().context("temp dir for postgres")?;
        let run_as = if rustix::process::geteuid().is_root() {
            let ids = postgres_user()?;
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1))
                .context("chown the postgres temp dir")?;
            Some(ids)
        } else {
            None
        };
        let log = dir.path().join("postgres.log");
        let mut init = command(&initdb, &log)?;
        init.args([
            "-A",
            "trust",
            "-U",
            "longlink",
            "--no-sync",
            "-E",
            "UTF8",
            "-D",
        ])
        .arg(dir.path().join("data"));
        if let Some((uid, gid)) = run_as {
            init.uid(uid).gid(gid);
        }
        let status = init.status().context("run initdb")?;
        if !status.success() {
            bail!("initdb failed ({status}): {}", crate::tail(&log));
        }
        let data = dir.path().to_owned();
        let spawn = move |port| spawn(&binary, &data, port, run_as);
        let mut server = PostgresServer(Managed::start(
            "postgres",
            dir,
            "postgres.log",
            Box::new(spawn),
        )?);
        server.wait_ready(0)?;
        Ok(server)
    }

    /// `postgres://longlink@127.0.0.1:<port>/postgres` (trust auth, no password). Tests that
    /// want a database of their own create it.
    pub fn url(&self) -> String {
        format!("postgres://longlink@127.0.0.1:{}/postgres", self.0.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// Kills it with SIGKILL (a crash; with fsync off, only committed-and-flushed data is
    /// promised — PostgreSQL recovers from its WAL at the next start).
    pub fn kill(&mut self) {
        self.0.kill();
    }

    /// Stops it with SIGTERM (smart shutdown).
    pub fn stop(&mut self) {
        self.0.stop();
    }

    /// Stops it if running and starts it again on the same port and data.
    ///
    /// # Errors
    /// It does not start again.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.0.stop();
        let before = ready_lines(&self.0.log);
        self.0.restart()?;
        self.wait_ready(before)
    }

    /// The port opens before PostgreSQL takes sessions ("the database system is starting
    /// up"): wait until its log says it is ready, counting only lines this start wrote.
    fn wait_ready(&mut self, already: usize) -> anyhow::Result<()> {
        let log = self.0.log.clone();
        let deadline = std::time::Instant::now() + crate::START_TIMEOUT;
        loop {
            if ready_lines(&log) > already {
                return Ok(());
            }
            if let Some(child) = self.0.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "postgres exited ({status}) while starting: {}",
                    crate::tail(&log)
                );
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "postgres not ready within {:?}: {}",
                    crate::START_TIMEOUT,
                    crate::tail(&log)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

fn spawn(
    binary: &Path,
    dir: &Path,
    port: u16,
    run_as: Option<(u32, u32)>,
) -> anyhow::Result<Child> {
    let mut cmd = command(binary, &dir.join("postgres.log"))?;
    cmd.arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir)
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
        .args(["-c", "max_connections=200"]);
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
    cmd.spawn().context("spawn postgres")
}

/// What PostgreSQL logs once it takes sessions.
const READY: &str = "database system is ready to accept connections";

/// How many times the log says so (each start adds one).
fn ready_lines(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(READY)
        .count()
}

/// The uid and gid of the `postgres` user, from /etc/passwd.
fn postgres_user() -> anyhow::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("read /etc/passwd")?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .context("no postgres user: install postgresql (scripts/test does)")
}
