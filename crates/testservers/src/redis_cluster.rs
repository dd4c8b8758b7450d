//! A throwaway Redis Cluster: three masters, no replicas.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::{START_TIMEOUT, command, find_binary, kill_child, tail, wait_for_port};

/// How many masters.
const MASTERS: usize = 3;

/// Three `redis-server --cluster-enabled yes` on free loopback ports (each with its bus port,
/// port + 10000, free too), joined by `redis-cli --cluster create … --cluster-replicas 0`,
/// ready once every node reports `cluster_state:ok`. Nothing is kept on disk but the nodes'
/// cluster config; all are killed (and the dir removed) when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    children: Vec<Child>,
    ports: Vec<u16>,
    _dir: TempDir,
}

impl RedisCluster {
    /// Starts one.
    ///
    /// # Errors
    /// `redis-server` or `redis-cli` is missing, or the cluster does not form in time.
    pub fn start() -> anyhow::Result<RedisCluster> {
        let server = find_binary("redis-server", &[])?;
        let cli = find_binary("redis-cli", &[])?;
        let mut last = None;
        // A port (or its bus port) may be taken between the probe and the bind: try anew.
        for _ in 0..5 {
            let mut cluster = RedisCluster {
                children: Vec::new(),
                ports: Vec::new(),
                _dir: tempfile::tempdir().context("temp dir for redis cluster")?,
            };
            match cluster.spawn_nodes(&server) {
                Ok(()) => {
                    cluster.create(&cli)?;
                    cluster.wait_ok(&cli)?;
                    return Ok(cluster);
                }
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("redis cluster did not start")))
    }

    /// `redis://127.0.0.1:<port>/` of each master (any of them is a seed for a client).
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}/"))
            .collect()
    }

    /// The masters' ports.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    fn dir(&self) -> &Path {
        self._dir.path()
    }

    fn spawn_nodes(&mut self, server: &Path) -> anyhow::Result<()> {
        let ports = free_ports_with_bus(MASTERS)?;
        for &port in &ports {
            let node_dir = self.dir().join(port.to_string());
            std::fs::create_dir_all(&node_dir)?;
            let log = node_dir.join("redis.log");
            let mut child = command(server, &log)?
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(node_dir.join("nodes.conf"))
                .args(["--save", "", "--appendonly", "no", "--dir"])
                .arg(&node_dir)
                .spawn()
                .context("spawn redis-server (cluster node)")?;
            let ready = wait_for_port(
                &mut child,
                SocketAddr::from(([127, 0, 0, 1], port)),
                "redis-server (cluster node)",
                &log,
            );
            self.children.push(child);
            ready?;
            self.ports.push(port);
        }
        Ok(())
    }

    fn create(&self, cli: &Path) -> anyhow::Result<()> {
        let log = self.dir().join("create.log");
        let mut cmd = command(cli, &log)?;
        cmd.arg("--cluster").arg("create");
        for port in &self.ports {
            cmd.arg(format!("127.0.0.1:{port}"));
        }
        let status = cmd
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .status()
            .context("run redis-cli --cluster create")?;
        if !status.success() {
            bail!(
                "redis-cli --cluster create failed ({status}): {}",
                tail(&log)
            );
        }
        Ok(())
    }

    /// Until every node says `cluster_state:ok` (slots assigned and gossip settled).
    fn wait_ok(&self, cli: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let all_ok = self.ports.iter().all(|port| {
                Command::new(cli)
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &port.to_string(),
                        "cluster",
                        "info",
                    ])
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .output()
                    .is_ok_and(|out| {
                        String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok")
                    })
            });
            if all_ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .ports
                    .iter()
                    .map(|p| tail(&self.dir().join(p.to_string()).join("redis.log")))
                    .collect();
                bail!(
                    "redis cluster not ok within {START_TIMEOUT:?}: {}",
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The nodes' data directory, for logs.
    pub fn data_dir(&self) -> PathBuf {
        self.dir().to_owned()
    }
}

/// `n` distinct free ports whose cluster bus ports (port + 10000) are free too, all held
/// until chosen so that two picks cannot collide.
fn free_ports_with_bus(n: usize) -> anyhow::Result<Vec<u16>> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..200 {
        if ports.len() == n {
            break;
        }
        let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let Some(bus) = port.checked_add(10000) else {
            continue;
        };
        let Ok(bus_listener) = TcpListener::bind(("127.0.0.1", bus)) else {
            continue;
        };
        ports.push(port);
        held.push((listener, bus_listener));
    }
    if ports.len() < n {
        bail!("no {n} free ports with free bus ports");
    }
    Ok(ports)
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            kill_child(child);
        }
    }
}
