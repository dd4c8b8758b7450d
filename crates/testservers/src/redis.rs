//! A throwaway `redis-server`.

use std::path::PathBuf;
use std::process::Child;

use anyhow::Context;
use tempfile::TempDir;

use crate::{command, find_binary, kill_child, start_on_free_port, terminate_child};

/// A `redis-server` on a free loopback port that keeps nothing on disk (`--save ''`,
/// no AOF), so a restart starts empty — what "Redis lost its data" looks like.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    binary: PathBuf,
}

impl RedisServer {
    /// Starts one.
    ///
    /// # Errors
    /// `redis-server` is missing or does not start.
    pub fn start() -> anyhow::Result<RedisServer> {
        let binary = find_binary("redis-server", &[])?;
        let dir = tempfile::tempdir().context("temp dir for redis")?;
        let log = dir.path().join("redis.log");
        let (child, port) = start_on_free_port("redis-server", &log, |port| {
            spawn(&binary, dir.path(), port)
        })?;
        Ok(RedisServer {
            child: Some(child),
            port,
            dir,
            binary,
        })
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills it with SIGKILL (a crash); [`RedisServer::restart`] brings it back.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
    }

    /// Stops it with SIGTERM.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate_child(&mut child);
        }
    }

    /// Stops it if running and starts it again on the same port, empty.
    ///
    /// # Errors
    /// It does not start again.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let log = self.dir.path().join("redis.log");
        let mut child = spawn(&self.binary, self.dir.path(), self.port)?;
        crate::wait_for_port(
            &mut child,
            std::net::SocketAddr::from(([127, 0, 0, 1], self.port)),
            "redis-server",
            &log,
        )?;
        self.child = Some(child);
        Ok(())
    }
}

fn spawn(binary: &std::path::Path, dir: &std::path::Path, port: u16) -> anyhow::Result<Child> {
    command(binary, &dir.join("redis.log"))?
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir)
        .spawn()
        .context("spawn redis-server")
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
