//! A throwaway peer broker: `mosquitto` or `nats-server` on a free 127.0.0.1 port, started for
//! one peer run and killed when its [`Broker`] is dropped, so every run starts from a fresh
//! process (its RSS baseline and CPU counters are the run's alone).
//!
//! The broker inherits this process's open-files limit (20,000 here, the hard limit), which
//! caps what one broker can hold at about as many connections as a longlink gate process.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use super::{INSTALL_HINT, PeerKind};

/// How long a broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running broker, killed on drop.
pub(crate) struct Broker {
    pub(crate) kind: PeerKind,
    pub(crate) addr: SocketAddr,
    pub(crate) pid: u32,
    pub(crate) binary: PathBuf,
    /// What `--version` (nats) or `-h` (mosquitto) says, first line.
    pub(crate) version: String,
    child: Child,
    /// Holds the config file and the log.
    dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where `name` is: on PATH, else in /usr/sbin or /usr/local/sbin (Debian installs the brokers
/// in /usr/sbin, which a non-root PATH may lack).
pub(crate) fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The binary of `kind`, or the one-line error that says how to install it.
pub(crate) fn binary(kind: PeerKind) -> anyhow::Result<PathBuf> {
    find_binary(kind.binary_name()).ok_or_else(|| {
        anyhow!(
            "{} not found on PATH or in /usr/sbin: {INSTALL_HINT} (or --peers none)",
            kind.binary_name()
        )
    })
}

/// mosquitto also listens on 127.0.1.1 … 127.0.1.MQTT_ADDRESSES (same port), and MQTT clients
/// spread over them by their id: rumqttc cannot bind a source address, and from one source to
/// one destination Linux's `connect` finds only ~14,000 ephemeral ports (it tries the even
/// half of the range first, docs/benchmarks.md "Effects the bench has to work around"), so a
/// 15,000-subscriber broadcast failed with EADDRNOTAVAIL. Not 127.0.0.x: the bench's workers
/// bind those as source addresses, and their sockets in TIME_WAIT would block the listeners.
pub(crate) const MQTT_ADDRESSES: u8 = 8;

/// The `host`-th (1-based) spread address of mosquitto.
pub(crate) fn mqtt_address(host: u8) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(127, 0, 1, host)
}

impl Broker {
    /// Starts a broker of `kind` on a free loopback port and waits until it accepts
    /// connections.
    ///
    /// # Errors
    /// The binary is missing, does not start, or does not listen within [`START_TIMEOUT`].
    pub(crate) fn start(kind: PeerKind) -> anyhow::Result<Broker> {
        // A port free a moment ago may be taken meanwhile on one of mosquitto's addresses
        // (other runs' clients bind 127.0.0.x): a few fresh tries, then the error.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(kind) {
                Err(err) if attempt < 5 && format!("{err:#}").contains("already in use") => {}
                other => return other,
            }
        }
    }

    fn start_once(kind: PeerKind) -> anyhow::Result<Broker> {
        let binary = binary(kind)?;
        let dir = tempfile::tempdir().context("cannot create a temp dir for the broker")?;
        let port = match kind {
            PeerKind::Mosquitto => free_port_on_all(MQTT_ADDRESSES)?,
            PeerKind::Nats => free_port()?,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::fs::File::create(dir.path().join("broker.log"))
            .context("cannot create the broker's log file")?;
        let mut command = Command::new(&binary);
        match kind {
            PeerKind::Mosquitto => {
                let config = dir.path().join("mosquitto.conf");
                let mut file =
                    std::fs::File::create(&config).context("cannot write the mosquitto config")?;
                // No persistence, no log file: the broker keeps everything in memory, as the
                // longlink runs' online-only pushes do; `max_connections -1` is "no limit"
                // (the open-files limit still applies).
                // 127.0.0.1 (the broker's address) and the spread addresses (see
                // MQTT_ADDRESSES).
                writeln!(file, "listener {port} 127.0.0.1")
                    .context("cannot write the mosquitto config")?;
                for host in 1..=MQTT_ADDRESSES {
                    writeln!(file, "listener {port} {}", mqtt_address(host))
                        .context("cannot write the mosquitto config")?;
                }
                writeln!(
                    file,
                    "allow_anonymous true\nmax_connections -1\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning"
                )
                .context("cannot write the mosquitto config")?;
                command.arg("-c").arg(&config);
            }
            PeerKind::Nats => {
                // Core NATS only (no -js): the comparison is with non-durable delivery.
                command
                    .args(["-a", "127.0.0.1", "-p"])
                    .arg(port.to_string());
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("broker log")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let pid = child.id();
        let mut broker = Broker {
            kind,
            addr,
            pid,
            version: version(kind, &binary),
            binary,
            child,
            dir,
        };
        broker.wait_listening()?;
        Ok(broker)
    }

    fn wait_listening(&mut self) -> anyhow::Result<()> {
        let until = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("broker status")? {
                bail!(
                    "{} exited at start ({status}): {}",
                    self.kind.binary_name(),
                    self.log_tail()
                );
            }
            if let Ok(stream) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) {
                // Not a TCP self-connect to the still unbound port (see testservers).
                if stream.local_addr().ok() != stream.peer_addr().ok() {
                    return Ok(());
                }
            }
            if Instant::now() >= until {
                bail!(
                    "{} did not listen on {} within {} s: {}",
                    self.kind.binary_name(),
                    self.addr,
                    START_TIMEOUT.as_secs(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of the broker's log, on one line.
    pub(crate) fn log_tail(&self) -> String {
        tail(&self.dir.path().join("broker.log"))
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    let joined: Vec<&str> = lines.into_iter().rev().collect();
    if joined.is_empty() {
        "(its log is empty)".to_owned()
    } else {
        joined.join(" | ")
    }
}

/// A port that was free a moment ago on 127.0.0.1 and each of the `hosts` spread addresses.
fn free_port_on_all(hosts: u8) -> anyhow::Result<u16> {
    for _ in 0..50 {
        let port = free_port()?;
        let free = (1..=hosts).all(|host| TcpListener::bind((mqtt_address(host), port)).is_ok());
        if free {
            return Ok(port);
        }
    }
    bail!("no port free on 127.0.0.1 and all of 127.0.1.1 … 127.0.1.{hosts}")
}
/// A loopback port that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// The broker's version, first line of what it says about itself ("unknown" if nothing).
fn version(kind: PeerKind, binary: &Path) -> String {
    let arg = match kind {
        PeerKind::Mosquitto => "-h",
        PeerKind::Nats => "--version",
    };
    Command::new(binary)
        .arg(arg)
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|out| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            text.lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".to_owned())
}
