//! A throwaway `nats-server -js`.

use std::path::Path;
use std::process::Child;

use anyhow::Context;

use crate::{Managed, command, find_binary};

/// A `nats-server` with JetStream on a free loopback port, its store in a temp dir, so a
/// restart keeps the streams (JetStream's file store) and what they hold.
#[derive(Debug)]
pub struct NatsServer(Managed);

impl NatsServer {
    /// Starts one.
    ///
    /// # Errors
    /// `nats-server` is missing or does not start.
    pub fn start() -> anyhow::Result<NatsServer> {
        let binary = find_binary("nats-server", &["/usr/sbin"])?;
        let dir = tempfile::tempdir().context("temp dir for nats")?;
        let data = dir.path().to_owned();
        let spawn = move |port| spawn(&binary, &data, port);
        Ok(NatsServer(Managed::start(
            "nats-server",
            dir,
            "nats.log",
            Box::new(spawn),
        )?))
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.0.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// Kills it with SIGKILL (a crash); [`NatsServer::restart`] brings it back.
    pub fn kill(&mut self) {
        self.0.kill();
    }

    /// Stops it with SIGTERM.
    pub fn stop(&mut self) {
        self.0.stop();
    }

    /// Stops it if running and starts it again on the same port and store.
    ///
    /// # Errors
    /// It does not start again.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.0.restart()
    }
}

fn spawn(binary: &Path, dir: &Path, port: u16) -> anyhow::Result<Child> {
    command(binary, &dir.join("nats.log"))?
        .args([
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            "-1",
            "-sd",
        ])
        .arg(dir.join("jetstream"))
        .spawn()
        .context("spawn nats-server")
}
