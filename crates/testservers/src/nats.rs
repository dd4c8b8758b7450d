//! A throwaway `nats-server -js`.

use std::path::{Path, PathBuf};
use std::process::Child;

use anyhow::Context;
use tempfile::TempDir;

use crate::{command, find_binary, kill_child, start_on_free_port, terminate_child};

/// A `nats-server` with JetStream on a free loopback port, its store in a temp dir, so a
/// restart keeps the streams (JetStream's file store) and what they hold.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    binary: PathBuf,
}

impl NatsServer {
    /// Starts one.
    ///
    /// # Errors
    /// `nats-server` is missing or does not start.
    pub fn start() -> anyhow::Result<NatsServer> {
        let binary = find_binary("nats-server", &["/usr/sbin"])?;
        let dir = tempfile::tempdir().context("temp dir for nats")?;
        let log = dir.path().join("nats.log");
        let (child, port) =
            start_on_free_port("nats-server", &log, |port| spawn(&binary, dir.path(), port))?;
        Ok(NatsServer {
            child: Some(child),
            port,
            dir,
            binary,
        })
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills it with SIGKILL (a crash); [`NatsServer::restart`] brings it back.
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

    /// Stops it if running and starts it again on the same port and store.
    ///
    /// # Errors
    /// It does not start again.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let log = self.dir.path().join("nats.log");
        let mut child = spawn(&self.binary, self.dir.path(), self.port)?;
        crate::wait_for_port(
            &mut child,
            std::net::SocketAddr::from(([127, 0, 0, 1], self.port)),
            "nats-server",
            &log,
        )?;
        self.child = Some(child);
        Ok(())
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

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
