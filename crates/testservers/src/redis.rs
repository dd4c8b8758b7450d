//! A throwaway `redis-server`.

use std::path::Path;
use std::process::Child;

use anyhow::Context;

use crate::{Managed, command, find_binary};

/// A `redis-server` on a free loopback port that keeps nothing on disk (`--save ''`,
/// no AOF), so a restart starts empty — what "Redis lost its data" looks like.
#[derive(Debug)]
pub struct RedisServer(Managed);

impl RedisServer {
    /// Starts one.
    ///
    /// # Errors
    /// `redis-server` is missing or does not start.
    pub fn start() -> anyhow::Result<RedisServer> {
        let binary = find_binary("redis-server", &[])?;
        let dir = tempfile::tempdir().context("temp dir for redis")?;
        let data = dir.path().to_owned();
        let spawn = move |port| spawn(&binary, &data, port);
        Ok(RedisServer(Managed::start(
            "redis-server",
            dir,
            "redis.log",
            Box::new(spawn),
        )?))
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.0.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// Kills it with SIGKILL (a crash); [`RedisServer::restart`] brings it back.
    pub fn kill(&mut self) {
        self.0.kill();
    }

    /// Stops it with SIGTERM.
    pub fn stop(&mut self) {
        self.0.stop();
    }

    /// Stops it if running and starts it again on the same port, empty.
    ///
    /// # Errors
    /// It does not start again.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.0.restart()
    }
}

fn spawn(binary: &Path, dir: &Path, port: u16) -> anyhow::Result<Child> {
    command(binary, &dir.join("redis.log"))?
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir)
        .spawn()
        .context("spawn redis-server")
}
