//! What `/proc/<pid>` tells about a process: resident memory, CPU time (and the server's and
//! the load generator's over a measured window), open files.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, anyhow};
use tokio::time::Instant;

use crate::num::round;

/// Resident memory of `pid`, from `VmRSS` (and `RssAnon`) in `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rss {
    /// `VmRSS`, bytes.
    pub(crate) total: u64,
    /// `RssAnon` (heap, stacks), bytes; 0 when the kernel does not report it.
    pub(crate) anon: u64,
}

/// Reads the resident memory of `pid`.
pub(crate) fn rss(pid: u32) -> anyhow::Result<Rss> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
    };
    let total = field("VmRSS:").ok_or_else(|| anyhow!("{path} has no VmRSS (process gone?)"))?;
    Ok(Rss {
        total,
        anon: field("RssAnon:").unwrap_or(0),
    })
}

/// User + system CPU time `pid` has used so far (all its threads, live or gone).
pub(crate) fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: fields start after
    // the last ')', with field 3 (state) first; utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("{path}: unexpected format"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |index: usize| -> anyhow::Result<u64> {
        fields
            .get(index)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| anyhow!("{path}: no field {}", index + 3))
    };
    let ticks = tick(11)? + tick(12)?;
    let per_second = clock_ticks_per_second();
    Ok(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / per_second.max(1),
    ))
}

/// One thread of a process: its id, name (`comm`, at most 15 bytes) and CPU time so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ThreadCpu {
    pub(crate) tid: u32,
    pub(crate) name: String,
    pub(crate) cpu: Duration,
}

/// Every live thread of `pid` with its CPU time (`/proc/<pid>/task/*/stat`). Threads that
/// exited are not listed; their time is only in [`cpu_time`].
pub(crate) fn threads(pid: u32) -> anyhow::Result<Vec<ThreadCpu>> {
    let dir = format!("/proc/{pid}/task");
    let mut threads = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
        let Ok(entry) = entry else { continue };
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        // A thread may end between the listing and the read: skip it.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat.get(open + 1..close).unwrap_or("").to_owned();
        let Some(rest) = stat.get(close + 1..) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let tick = |index: usize| fields.get(index).and_then(|f| f.parse::<u64>().ok());
        let (Some(utime), Some(stime)) = (tick(11), tick(12)) else {
            continue;
        };
        threads.push(ThreadCpu {
            tid,
            name,
            cpu: ticks(utime + stime),
        });
    }
    Ok(threads)
}

/// CPU time per thread name between two [`threads`] readings (a thread that is new in
/// `after` counts from zero), sorted by name.
pub(crate) fn cpu_by_thread_name(
    before: &[ThreadCpu],
    after: &[ThreadCpu],
) -> Vec<(String, Duration)> {
    let mut by_name: std::collections::BTreeMap<String, Duration> = Default::default();
    for thread in after {
        let start = before
            .iter()
            .find(|b| b.tid == thread.tid)
            .map_or(Duration::ZERO, |b| b.cpu);
        *by_name.entry(thread.name.clone()).or_default() += thread.cpu.saturating_sub(start);
    }
    by_name.into_iter().collect()
}

/// Readings at the start of a measured window: the server's CPU time, in all and by thread,
/// and the load generator's.
pub(crate) struct Window {
    started: Instant,
    server_cpu: Duration,
    threads: Vec<ThreadCpu>,
    client_cpu: Duration,
}

/// The server's and the load generator's CPU over a measured window.
#[derive(Debug, Clone, Default)]
pub(crate) struct Usage {
    /// The window's length.
    pub(crate) secs: f64,
    pub(crate) server_cpu: Duration,
    /// By thread name (threads that ended during the window are missing).
    pub(crate) server_threads: Vec<(String, Duration)>,
    pub(crate) client_cpu: Duration,
}

impl Window {
    /// Opens a window on server `pid` whose time runs from `started`; `client_cpu` is the load
    /// generator's CPU time so far (its processes, as the scenario counts them).
    pub(crate) fn open(pid: u32, started: Instant, client_cpu: Duration) -> anyhow::Result<Window> {
        Ok(Window {
            started,
            server_cpu: cpu_time(pid)?,
            threads: threads(pid).unwrap_or_default(),
            client_cpu,
        })
    }

    /// What was used since [`Window::open`]; `client_cpu` is read as it was then.
    pub(crate) fn close(&self, pid: u32, client_cpu: Duration) -> anyhow::Result<Usage> {
        Ok(Usage {
            secs: self.started.elapsed().as_secs_f64(),
            server_cpu: cpu_time(pid)?.saturating_sub(self.server_cpu),
            server_threads: cpu_by_thread_name(&self.threads, &threads(pid).unwrap_or_default()),
            client_cpu: client_cpu.saturating_sub(self.client_cpu),
        })
    }
}

impl Usage {
    /// Adds another window's figures (thread times by name).
    pub(crate) fn add(&mut self, other: &Usage) {
        self.secs += other.secs;
        self.server_cpu += other.server_cpu;
        self.client_cpu += other.client_cpu;
        let mut by_name: BTreeMap<String, Duration> = self.server_threads.drain(..).collect();
        for (name, cpu) in &other.server_threads {
            *by_name.entry(name.clone()).or_default() += *cpu;
        }
        self.server_threads = by_name.into_iter().collect();
    }

    /// Server CPU per thread name, seconds, threads that used none left out.
    pub(crate) fn threads_secs(&self) -> BTreeMap<String, f64> {
        self.server_threads
            .iter()
            .filter(|(_, cpu)| !cpu.is_zero())
            .map(|(name, cpu)| (name.clone(), round(cpu.as_secs_f64(), 3)))
            .collect()
    }
}

fn ticks(count: u64) -> Duration {
    Duration::from_nanos(count.saturating_mul(1_000_000_000) / clock_ticks_per_second().max(1))
}

/// `sysconf(_SC_CLK_TCK)`: the unit of the CPU times in `/proc/<pid>/stat`.
pub(crate) fn clock_ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// The soft limit on open files of `pid` and how many it has open now.
pub(crate) fn open_files(pid: u32) -> anyhow::Result<(u64, u64)> {
    let path = format!("/proc/{pid}/limits");
    let limits = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let soft = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    let fd_dir = format!("/proc/{pid}/fd");
    let open = std::fs::read_dir(&fd_dir)
        .with_context(|| format!("cannot list {fd_dir}"))?
        .count() as u64;
    Ok((soft, open))
}

/// The kernel's `TcpExt ListenOverflows` counter (`/proc/net/netstat`, this network
/// namespace): connections dropped because a listener's accept queue was full.
pub(crate) fn listen_overflows() -> Option<u64> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = netstat.lines();
    while let Some(names) = lines.next() {
        let values = lines.next()?;
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let index = names
            .split_whitespace()
            .position(|name| name == "ListenOverflows")?;
        return values.split_whitespace().nth(index)?.parse().ok();
    }
    None
}

/// TCP sockets in TIME_WAIT (`/proc/net/sockstat`): each holds its local port for a minute.
pub(crate) fn time_wait() -> Option<u64> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let tcp = sockstat.lines().find(|line| line.starts_with("TCP:"))?;
    let mut words = tcp.split_whitespace();
    words.find(|word| *word == "tw")?;
    words.next()?.parse().ok()
}

/// How many ephemeral ports `connect` may choose from (`ip_local_port_range`).
pub(crate) fn ephemeral_ports() -> Option<u64> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut bounds = range.split_whitespace().map(|b| b.parse::<u64>().ok());
    let (low, high) = (bounds.next()??, bounds.next()??);
    Some(high.saturating_sub(low) + 1)
}

/// What `/proc/<pid>/io` counts: bytes the process caused to be written to storage, and its
/// write-like syscalls (`write`, `pwrite`, `writev`, … on files and sockets alike).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Io {
    /// `write_bytes`: bytes sent to the block layer (the page cache flushed for this process).
    pub(crate) write_bytes: u64,
    /// `syscw`: write-like system calls.
    pub(crate) syscw: u64,
}

impl Io {
    /// What was counted since `before`.
    pub(crate) fn since(&self, before: &Io) -> Io {
        Io {
            write_bytes: self.write_bytes.saturating_sub(before.write_bytes),
            syscw: self.syscw.saturating_sub(before.syscw),
        }
    }
}

/// Reads `/proc/<pid>/io` (needs the right to trace `pid`: our own children, or root).
pub(crate) fn io(pid: u32) -> anyhow::Result<Io> {
    let path = format!("/proc/{pid}/io");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().parse().ok())
    };
    Ok(Io {
        write_bytes: field("write_bytes:").unwrap_or(0),
        syscw: field("syscw:").unwrap_or(0),
    })
}

/// The type of the file system holding `path` (`ext4`, `tmpfs`, …), from the longest
/// matching mount point in `/proc/self/mounts`.
pub(crate) fn fs_type(path: &std::path::Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let path = path.canonicalize().ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _device = fields.next()?;
            let mount_point = fields.next()?.replace("\\040", " ");
            let fs = fields.next()?;
            path.starts_with(&mount_point)
                .then(|| (mount_point.len(), fs.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
}

/// Number of CPUs this process may run on.
pub(crate) fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The first three fields of `/proc/loadavg` (1, 5 and 15 minute load), or "unknown".
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|load| !load.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The kernel release (`/proc/sys/kernel/osrelease`), or "unknown".
pub(crate) fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// RSS samples are this far apart while waiting for the memory to settle.
pub(crate) const SETTLE_INTERVAL: Duration = Duration::from_millis(500);
/// Longest wait for the RSS to settle; past it the last sample is used (and said so).
pub(crate) const SETTLE_MAX: Duration = Duration::from_secs(30);

/// Resident memory once it stopped moving.
pub(crate) struct Settled {
    pub(crate) rss: Rss,
    pub(crate) secs: f64,
    pub(crate) stable: bool,
}

/// Samples `pid`'s RSS every [`SETTLE_INTERVAL`] until two consecutive samples differ by
/// less than 1%, at most [`SETTLE_MAX`].
pub(crate) async fn settle(pid: u32) -> anyhow::Result<Settled> {
    let start = Instant::now();
    let mut previous = rss(pid)?;
    loop {
        tokio::time::sleep(SETTLE_INTERVAL).await;
        let current = rss(pid)?;
        let delta = current.total.abs_diff(previous.total) as f64;
        let stable = delta < 0.01 * previous.total as f64;
        if stable || start.elapsed() >= SETTLE_MAX {
            return Ok(Settled {
                rss: current,
                secs: start.elapsed().as_secs_f64(),
                stable,
            });
        }
        previous = current;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        let rss = rss(pid).unwrap();
        assert!(rss.total > 0);
        cpu_time(pid).unwrap();
        let (soft, open) = open_files(pid).unwrap();
        assert!(soft > 0 && open > 0);
        assert!(clock_ticks_per_second() > 0);
        assert!(listen_overflows().is_some());
        assert!(time_wait().is_some());
        assert!(ephemeral_ports().unwrap() > 0);
        io(pid).unwrap();
        let threads = threads(pid).unwrap();
        assert!(threads.iter().any(|t| t.tid == pid));
        assert!(!cpu_by_thread_name(&[], &threads).is_empty());
        assert!(fs_type(std::path::Path::new("/")).is_some());
    }
}
