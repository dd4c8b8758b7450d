//! `longlink top`: the node at a glance in a terminal — the dashboard's figures from
//! `GET /v1/stats/summary` (/work/spec/observability.md), polled and redrawn every
//! `--interval-ms`.
//!
//! [`render`] turns one summary (or the last one, when a poll fails) into the frame's text and
//! knows nothing of terminals; [`Screen`] puts frames on stdout: redrawn in place with ANSI
//! escapes on a terminal, one after another separated by a blank line when piped.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use tokio::time::{Instant, MissedTickBehavior};

use super::{Api, ApiFailure, ApiOpts, EXIT_UNAVAILABLE, utc_ms};

/// Shown where a figure is null or absent.
const DASH: &str = "—";
/// Appcodes listed (most sessions first, as the server sorts them); the rest are counted.
const LISTED_APPCODES: usize = 10;
/// Gates listed; the rest are counted.
const LISTED_GATES: usize = 10;
/// The span the sparklines cover.
const SPARK_SECS: u64 = 60;
/// Eighths of a cell, lowest to highest.
const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
/// A poll may take at least this long before it counts as failed, however short the
/// interval.
const MIN_POLL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    /// Milliseconds between polls (and redraws).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..))]
    interval_ms: u64,
    /// Stop after this many frames (default: run until Ctrl-C). Exits non-zero when every
    /// poll failed.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    iterations: Option<u64>,
    #[command(flatten)]
    api: ApiOpts,
}

/// `GET /v1/stats/summary`. Every field may be absent and every figure null (the frame shows
/// `—`); fields the frame does not show are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Summary {
    node: Option<String>,
    version: Option<String>,
    started_ms: Option<u64>,
    now_ms: Option<u64>,
    connections: Option<u64>,
    sessions: Option<u64>,
    messages_per_sec: Option<f64>,
    deliveries_per_sec: Option<f64>,
    delivery_rate: Option<f64>,
    latency_ms: Latency,
    totals: Totals,
    appcodes: Vec<Appcode>,
    gates: Vec<Gate>,
    series: Series,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Latency {
    c2c_ack: Percentiles,
    c2c_e2e: Percentiles,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Percentiles {
    count: Option<u64>,
    p50: Option<f64>,
    p90: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Totals {
    messages: Option<u64>,
    deliveries: Option<u64>,
    receiver_acks: Option<u64>,
    logins: Option<u64>,
    login_failures: Option<u64>,
    errors: Option<u64>,
    bytes_in: Option<u64>,
    bytes_out: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Appcode {
    appcode: Option<u32>,
    name: Option<String>,
    sessions: Option<u64>,
    messages: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Gate {
    id: Option<String>,
    addr: Option<String>,
    connections: Option<u64>,
    sessions: Option<u64>,
    healthy: Option<bool>,
    draining: Option<bool>,
    last_seen_ms: Option<u64>,
}

/// One sample per second, oldest first.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Series {
    interval_secs: Option<u64>,
    connections: Vec<Option<f64>>,
    messages_per_sec: Vec<Option<f64>>,
}

/// Whether the figures on screen are current.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Link<'a> {
    /// The last poll answered.
    Live,
    /// The last poll failed (`reason`); the figures shown, if any, are `age` old.
    Disconnected { reason: &'a str, age: Duration },
}

/// Runs `longlink top`.
pub(crate) async fn top(args: TopArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let interval = Duration::from_millis(args.interval_ms);
    let poll_timeout = interval.max(MIN_POLL_TIMEOUT);
    let mut screen = Screen::new(std::io::stdout().is_terminal());
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    let mut last: Option<(Summary, Instant)> = None;
    let mut last_failure: Option<anyhow::Error> = None;
    let mut frames = 0u64;
    loop {
        tokio::select! {
            signal = &mut ctrl_c => {
                signal.context("cannot listen for Ctrl-C")?;
                break;
            }
            _ = ticks.tick() => {}
        }
        let poll = tokio::select! {
            signal = &mut ctrl_c => {
                signal.context("cannot listen for Ctrl-C")?;
                break;
            }
            poll = tokio::time::timeout(
                poll_timeout,
                api.get::<Summary>(&["v1", "stats", "summary"], &[], Duration::ZERO),
            ) => poll,
        };
        let failure = match poll {
            Ok(Ok(summary)) => {
                last = Some((summary, Instant::now()));
                None
            }
            Ok(Err(err)) => Some(err),
            Err(_elapsed) => Some(
                ApiFailure {
                    code: EXIT_UNAVAILABLE,
                    line: format!(
                        "error: no answer from the API at {} within {} ms",
                        api.base,
                        poll_timeout.as_millis()
                    ),
                    status: None,
                }
                .into(),
            ),
        };
        let reason = failure.as_ref().map(|err| {
            let line = err.to_string();
            line.strip_prefix("error: ").unwrap_or(&line).to_owned()
        });
        let link = match &reason {
            None => Link::Live,
            Some(reason) => Link::Disconnected {
                reason,
                age: last.as_ref().map_or(Duration::ZERO, |(_, at)| at.elapsed()),
            },
        };
        let text = render(last.as_ref().map(|(summary, _)| summary), link, interval);
        if !screen.draw(&text)? {
            // The reader of a pipe went away (`longlink top | head`): nothing more to show.
            return Ok(());
        }
        if failure.is_some() {
            last_failure = failure;
        }
        frames += 1;
        if args.iterations.is_some_and(|n| frames >= n) {
            break;
        }
    }
    // The cursor comes back before main prints an error.
    drop(screen);
    match (last, last_failure) {
        // Every poll failed: say why, once, with the failure's exit code.
        (None, Some(failure)) if args.iterations.is_some() => Err(failure),
        _ => Ok(()),
    }
}

/// Where frames go: a terminal redrawn in place, or a plain stream of frames.
struct Screen {
    tty: bool,
    frames: u64,
}

impl Screen {
    fn new(tty: bool) -> Screen {
        Screen { tty, frames: 0 }
    }

    /// Shows `frame`; false once stdout is a closed pipe.
    fn draw(&mut self, frame: &str) -> anyhow::Result<bool> {
        let mut bytes = String::with_capacity(frame.len() + 256);
        if self.tty {
            if self.frames == 0 {
                // Hide the cursor and start from a clear screen.
                bytes.push_str("\x1b[?25l\x1b[2J");
            }
            // Home, then each line over the last frame's, clearing what it leaves behind, and
            // clear below: no blank flash between frames.
            bytes.push_str("\x1b[H");
            for line in frame.lines() {
                bytes.push_str(line);
                bytes.push_str("\x1b[K\n");
            }
            bytes.push_str("\x1b[J");
        } else {
            if self.frames > 0 {
                bytes.push('\n');
            }
            bytes.push_str(frame);
        }
        self.frames += 1;
        let mut out = std::io::stdout().lock();
        match out.write_all(bytes.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(err) => Err(anyhow::anyhow!("cannot write to stdout: {err}")),
        }
    }

    /// Gives the terminal its cursor back.
    fn restore(&mut self) {
        if self.tty && self.frames > 0 {
            let mut out = std::io::stdout().lock();
            // Best effort: the terminal may be gone.
            let _ = out.write_all(b"\x1b[?25h").and_then(|()| out.flush());
            self.frames = 0;
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.restore();
    }
}

/// One frame: the summary's figures (or dashes), with a line saying whether they are live.
fn render(summary: Option<&Summary>, link: Link<'_>, interval: Duration) -> String {
    let empty = Summary::default();
    let s = summary.unwrap_or(&empty);
    let mut out = String::new();

    let uptime = match (s.started_ms, s.now_ms) {
        (Some(started), Some(now)) if now >= started => duration(now - started),
        _ => DASH.to_owned(),
    };
    let clock = s
        .now_ms
        .and_then(|now| utc_ms(now).get(11..19).map(|hms| format!("{hms} UTC")))
        .unwrap_or_else(|| DASH.to_owned());
    let _ = writeln!(
        out,
        "longlink top · node {} · version {} · up {uptime} · {clock}",
        text(s.node.as_deref()),
        text(s.version.as_deref())
    );
    match link {
        Link::Live => {
            let _ = writeln!(out, "live · every {}", seconds(interval));
        }
        Link::Disconnected { reason, age } => {
            let figures = if summary.is_some() {
                format!("figures below are {} old", seconds(age))
            } else {
                "no figures yet".to_owned()
            };
            let _ = writeln!(out, "disconnected — retrying ({reason}); {figures}");
        }
    }
    out.push('\n');

    let e2e = &s.latency_ms.c2c_e2e;
    let kpis = [
        (
            "connections",
            int(s.connections),
            "messages/s",
            rate(s.messages_per_sec),
        ),
        (
            "sessions",
            int(s.sessions),
            "deliveries/s",
            rate(s.deliveries_per_sec),
        ),
        (
            "delivery rate",
            percent(s.delivery_rate),
            "c2c e2e p99",
            ms(e2e.p99),
        ),
    ];
    for (left, left_value, right, right_value) in kpis {
        let _ = writeln!(
            out,
            "{left:<14}{left_value:>10}     {right:<14}{right_value:>12}"
        );
    }
    out.push('\n');

    let _ = writeln!(
        out,
        "{:<18}{:>8}{:>11}{:>11}{:>11}{:>11}",
        "latency, 60 s", "count", "p50", "p90", "p99", "max"
    );
    for (name, p) in [("c2c ACK", &s.latency_ms.c2c_ack), ("c2c end-to-end", e2e)] {
        let _ = writeln!(
            out,
            "  {name:<16}{:>8}{:>11}{:>11}{:>11}{:>11}",
            int(p.count),
            ms(p.p50),
            ms(p.p90),
            ms(p.p99),
            ms(p.max)
        );
    }
    out.push('\n');

    let t = &s.totals;
    let _ = writeln!(
        out,
        "totals  messages {} · deliveries {} · receiver ACKs {} · logins {}",
        int(t.messages),
        int(t.deliveries),
        int(t.receiver_acks),
        int(t.logins)
    );
    let _ = writeln!(
        out,
        "        login failures {} · errors {} · bytes in {} · bytes out {}",
        int(t.login_failures),
        int(t.errors),
        bytes(t.bytes_in),
        bytes(t.bytes_out)
    );
    out.push('\n');

    let samples = usize::try_from(SPARK_SECS / s.series.interval_secs.unwrap_or(1).max(1))
        .unwrap_or(usize::MAX);
    for (name, values, integer) in [
        ("messages/s", &s.series.messages_per_sec, false),
        ("connections", &s.series.connections, true),
    ] {
        let recent = &values[values.len().saturating_sub(samples)..];
        let show = |v: Option<f64>| if integer { whole(v) } else { rate(v) };
        let now = recent.last().copied().flatten();
        let max = recent.iter().flatten().copied().reduce(f64::max);
        let _ = writeln!(
            out,
            "{name}, last {SPARK_SECS} s: now {}, max {}",
            show(now),
            show(max)
        );
        let line = if recent.is_empty() {
            DASH.to_owned()
        } else {
            sparkline(recent)
        };
        let _ = writeln!(out, "  {line}");
    }
    out.push('\n');

    let _ = writeln!(
        out,
        "{:>7}  {:<24}{:>10}{:>12}",
        "appcode", "name", "sessions", "messages"
    );
    if s.appcodes.is_empty() {
        // Without figures nothing is known about the lists, not even that they are empty.
        let what = if summary.is_some() {
            "no appcodes configured"
        } else {
            DASH
        };
        let _ = writeln!(out, "{DASH:>7}  {what}");
    }
    for a in s.appcodes.iter().take(LISTED_APPCODES) {
        let _ = writeln!(
            out,
            "{:>7}  {:<24}{:>10}{:>12}",
            a.appcode
                .map_or_else(|| DASH.to_owned(), |code| code.to_string()),
            clip(text(a.name.as_deref()), 23),
            int(a.sessions),
            int(a.messages)
        );
    }
    if s.appcodes.len() > LISTED_APPCODES {
        let _ = writeln!(
            out,
            "         + {} more",
            s.appcodes.len() - LISTED_APPCODES
        );
    }
    out.push('\n');

    out.push_str(
        "gate      addr                health    draining connections sessions  last seen\n",
    );
    if s.gates.is_empty() {
        let what = if summary.is_some() { "no gates" } else { DASH };
        let _ = writeln!(out, "{DASH:<10}{what}");
    }
    for g in s.gates.iter().take(LISTED_GATES) {
        let health = match g.healthy {
            Some(true) => "healthy",
            Some(false) => "unhealthy",
            None => DASH,
        };
        let draining = match g.draining {
            Some(true) => "draining",
            Some(false) => "no",
            None => DASH,
        };
        let seen = match (s.now_ms, g.last_seen_ms) {
            (Some(now), Some(seen)) => ago(now.saturating_sub(seen)),
            _ => DASH.to_owned(),
        };
        let line = format!(
            "{:<10}{:<20}{health:<10}{draining:<9}{:>11}{:>9}  {seen}",
            clip(text(g.id.as_deref()), 9),
            clip(text(g.addr.as_deref()), 19),
            int(g.connections),
            int(g.sessions)
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if s.gates.len() > LISTED_GATES {
        let _ = writeln!(out, "+ {} more", s.gates.len() - LISTED_GATES);
    }
    out
}

/// A sparkline of `values` scaled from 0 to their largest: one block per value, a space for a
/// null (no sample), the lowest block for zero.
fn sparkline(values: &[Option<f64>]) -> String {
    let max = values
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    values
        .iter()
        .map(|value| match value {
            Some(v) if v.is_finite() => {
                if max <= 0.0 || *v <= 0.0 {
                    return BLOCKS[0];
                }
                let top = (BLOCKS.len() - 1) as f64;
                // At least the second block for anything above zero, so a trickle shows.
                let level = ((v / max) * top).round().clamp(1.0, top);
                BLOCKS[level as usize]
            }
            _ => ' ',
        })
        .collect()
}

fn text(value: Option<&str>) -> &str {
    match value {
        Some(value) if !value.is_empty() => value,
        _ => DASH,
    }
}

/// At most `width` characters, an ellipsis marking a cut.
fn clip(value: &str, width: usize) -> String {
    if value.chars().count() <= width {
        return value.to_owned();
    }
    let mut clipped: String = value.chars().take(width.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

/// An integer with thousands separators: `12,345`.
fn int(value: Option<u64>) -> String {
    let Some(value) = value else {
        return DASH.to_owned();
    };
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A sample that counts things (connections), rounded.
fn whole(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() && v >= 0.0 => int(Some(v.round() as u64)),
        _ => DASH.to_owned(),
    }
}

/// A per-second rate with one decimal.
fn rate(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.1}"),
        _ => DASH.to_owned(),
    }
}

/// Milliseconds as the dashboard shows them: two decimals at most (one from 100 ms), at
/// least one.
fn ms(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => {
            if v.abs() >= 100.0 {
                format!("{v:.1} ms")
            } else {
                let two = format!("{v:.2}");
                let shown = two.strip_suffix('0').unwrap_or(&two);
                format!("{shown} ms")
            }
        }
        _ => DASH.to_owned(),
    }
}

/// A share as a percentage with one decimal, never rounded up to 100% while something is
/// missing.
fn percent(share: Option<f64>) -> String {
    match share {
        Some(v) if v.is_finite() && v >= 1.0 => "100%".to_owned(),
        Some(v) if v.is_finite() => format!("{:.1}%", (v * 1000.0).floor() / 10.0),
        _ => DASH.to_owned(),
    }
}

/// Bytes in binary units: `512 B`, `9.8 KiB`.
fn bytes(value: Option<u64>) -> String {
    let Some(value) = value else {
        return DASH.to_owned();
    };
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut n = value as f64;
    let mut unit = 0;
    while n >= 1024.0 && unit < UNITS.len() - 1 {
        n /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{} B", int(Some(value)))
    } else {
        format!("{n:.1} {}", UNITS[unit])
    }
}

/// A span as the dashboard's uptime: `42 s`, `3 min 5 s`, `2 h 7 min`, `4 d 1 h`.
fn duration(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min {} s", s % 60)
    } else {
        format!("{s} s")
    }
}

/// How long ago: tenths of a second under ten seconds, then as [`duration`].
fn ago(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1} s ago", ms as f64 / 1000.0)
    } else {
        format!("{} ago", duration(ms))
    }
}

/// A short duration in seconds: `1 s`, `0.5 s`, `12.3 s`.
fn seconds(span: Duration) -> String {
    let secs = span.as_secs_f64();
    if (secs - secs.round()).abs() < 0.05 {
        format!("{} s", secs.round())
    } else {
        format!("{secs:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's example, with a series and a second gate filled in.
    const FIXTURE: &str = r#"{
      "node": "gate-1",
      "version": "0.1.0",
      "started_ms": 1790000000000,
      "now_ms": 1790000012345,
      "connections": 12,
      "sessions": 10,
      "messages_per_sec": 3.0,
      "deliveries_per_sec": 5.0,
      "delivery_rate": 0.97,
      "latency_ms": {
        "c2c_ack": {"count": 100, "p50": 1.2, "p90": 2.0, "p99": 5.1, "max": 9.0},
        "c2c_e2e": {"count": 90,  "p50": 1.9, "p90": 3.0, "p99": 7.4, "max": 123.456}
      },
      "totals": {"messages": 123, "deliveries": 456, "receiver_acks": 400, "logins": 10,
                 "login_failures": 1, "errors": 2, "bytes_in": 10000, "bytes_out": 20000000},
      "appcodes": [ {"appcode": 129, "name": "customer", "sessions": 5, "messages": 40},
                    {"appcode": 130, "name": "driver", "sessions": 0, "messages": 1234567} ],
      "gates": [ {"id": "gate-1", "addr": "127.0.0.1:7700", "connections": 12, "sessions": 10,
                  "healthy": true, "draining": false, "last_seen_ms": 1790000012000},
                 {"id": "gate-2", "addr": "10.0.0.2:7700", "connections": 0, "sessions": 0,
                  "healthy": false, "draining": true, "last_seen_ms": 1790000000000} ],
      "series": {
        "interval_secs": 1,
        "at_ms": [1790000009000, 1790000010000, 1790000011000, 1790000012000],
        "connections": [0, 4, 8, 12],
        "messages_per_sec": [0.0, 1.0, 7.0, 3.0],
        "deliveries_per_sec": [0.0, 2.0, 9.0, 5.0],
        "c2c_e2e_p99_ms": [null, 1.0, 2.0, null]
      },
      "a_field_from_a_later_server": [1, 2, 3]
    }"#;

    fn fixture() -> Summary {
        serde_json::from_str(FIXTURE).unwrap()
    }

    fn second() -> Duration {
        Duration::from_secs(1)
    }

    #[test]
    fn renders_every_figure_of_the_dashboard() {
        let frame = render(Some(&fixture()), Link::Live, second());
        let lines: Vec<&str> = frame.lines().collect();
        let expected = [
            "longlink top · node gate-1 · version 0.1.0 · up 12 s · 14:13:32 UTC",
            "live · every 1 s",
            "",
            "connections           12     messages/s             3.0",
            "sessions              10     deliveries/s           5.0",
            "delivery rate      97.0%     c2c e2e p99         7.4 ms",
            "",
            "latency, 60 s        count        p50        p90        p99        max",
            "  c2c ACK              100     1.2 ms     2.0 ms     5.1 ms     9.0 ms",
            "  c2c end-to-end        90     1.9 ms     3.0 ms     7.4 ms   123.5 ms",
            "",
            "totals  messages 123 · deliveries 456 · receiver ACKs 400 · logins 10",
            "        login failures 1 · errors 2 · bytes in 9.8 KiB · bytes out 19.1 MiB",
            "",
            "messages/s, last 60 s: now 3.0, max 7.0",
            "  ▁▂█▄",
            "connections, last 60 s: now 12, max 12",
            "  ▁▃▆█",
            "",
            "appcode  name                      sessions    messages",
            "    129  customer                         5          40",
            "    130  driver                           0   1,234,567",
            "",
            "gate      addr                health    draining connections sessions  last seen",
            "gate-1    127.0.0.1:7700      healthy   no                12       10  0.3 s ago",
            "gate-2    10.0.0.2:7700       unhealthy draining           0        0  12 s ago",
        ];
        assert_eq!(lines, expected, "\n{frame}");
    }

    #[test]
    fn nulls_and_missing_fields_are_dashes() {
        let summary: Summary = serde_json::from_str(
            r#"{"node": "gate-1", "connections": 0, "delivery_rate": null,
                "messages_per_sec": null,
                "latency_ms": {"c2c_ack": {"count": 0, "p50": null, "p90": null,
                                           "p99": null, "max": null}},
                "series": {"messages_per_sec": [null, 0.0, null]}}"#,
        )
        .unwrap();
        let frame = render(Some(&summary), Link::Live, second());
        assert!(
            frame.starts_with("longlink top · node gate-1 · version — · up — · —\n"),
            "{frame}"
        );
        assert!(frame.contains("delivery rate          —"), "{frame}");
        assert!(frame.contains("messages/s               —"), "{frame}");
        assert!(
            frame
                .contains("  c2c ACK                0          —          —          —          —"),
            "{frame}"
        );
        assert!(
            frame.contains("messages/s, last 60 s: now —, max 0.0\n   ▁ \n"),
            "{frame}"
        );
        assert!(frame.contains("no appcodes configured"), "{frame}");
        assert!(frame.contains("no gates"), "{frame}");
    }

    #[test]
    fn a_failed_poll_says_disconnected_and_keeps_the_last_figures() {
        let summary = fixture();
        let frame = render(
            Some(&summary),
            Link::Disconnected {
                reason: "cannot reach the API at http://127.0.0.1:7780/: Connection refused",
                age: Duration::from_millis(2500),
            },
            second(),
        );
        assert_eq!(
            frame.lines().nth(1),
            Some(
                "disconnected — retrying (cannot reach the API at http://127.0.0.1:7780/: \
                 Connection refused); figures below are 2.5 s old"
            )
        );
        assert!(frame.contains("connections           12"), "{frame}");

        let frame = render(
            None,
            Link::Disconnected {
                reason: "no answer",
                age: Duration::ZERO,
            },
            second(),
        );
        assert!(
            frame.contains("disconnected — retrying (no answer); no figures yet"),
            "{frame}"
        );
        assert!(frame.contains("connections            —"), "{frame}");
        assert!(frame.contains("now —, max —\n  —\n"), "{frame}");
        assert!(
            !frame.contains("no gates"),
            "nothing is known of the lists: {frame}"
        );
    }

    #[test]
    fn sparklines_keep_the_last_minute_and_scale_to_its_max() {
        assert_eq!(sparkline(&[]), "");
        assert_eq!(sparkline(&[Some(0.0), Some(0.0)]), "▁▁");
        assert_eq!(
            sparkline(&[Some(0.0), Some(0.1), Some(50.0), Some(100.0), None]),
            "▁▂▅█ "
        );
        let mut summary = fixture();
        summary.series.messages_per_sec = (0..120).map(|i| Some(f64::from(i))).collect();
        let frame = render(Some(&summary), Link::Live, second());
        let spark = frame
            .lines()
            .skip_while(|line| !line.starts_with("messages/s, last 60 s"))
            .nth(1)
            .unwrap();
        assert_eq!(spark.trim().chars().count(), 60, "{spark}");
        assert!(frame.contains("now 119.0, max 119.0"), "{frame}");
    }

    #[test]
    fn long_lists_are_cut_with_a_count() {
        let mut summary = fixture();
        summary.appcodes = (0..13)
            .map(|i| Appcode {
                appcode: Some(i),
                name: Some("a name much longer than the column can hold".to_owned()),
                sessions: Some(1),
                messages: Some(2),
            })
            .collect();
        let frame = render(Some(&summary), Link::Live, second());
        assert!(frame.contains("         + 3 more\n"), "{frame}");
        assert!(frame.contains("  a name much longer tha…  "), "{frame}");
    }

    #[test]
    fn figures_are_formatted_like_the_dashboard() {
        assert_eq!(int(Some(0)), "0");
        assert_eq!(int(Some(999)), "999");
        assert_eq!(int(Some(1000)), "1,000");
        assert_eq!(int(Some(12_345_678)), "12,345,678");
        assert_eq!(int(None), "—");
        assert_eq!(ms(Some(1.0)), "1.0 ms");
        assert_eq!(ms(Some(1.234)), "1.23 ms");
        assert_eq!(ms(Some(0.05)), "0.05 ms");
        assert_eq!(ms(Some(250.04)), "250.0 ms");
        assert_eq!(percent(Some(0.9999)), "99.9%");
        assert_eq!(percent(Some(1.0)), "100%");
        assert_eq!(percent(None), "—");
        assert_eq!(bytes(Some(512)), "512 B");
        assert_eq!(bytes(Some(1536)), "1.5 KiB");
        assert_eq!(duration(42_000), "42 s");
        assert_eq!(duration(185_000), "3 min 5 s");
        assert_eq!(duration(7_620_000), "2 h 7 min");
        assert_eq!(duration(2 * 86_400_000 + 3_600_000), "2 d 1 h");
        assert_eq!(ago(300), "0.3 s ago");
        assert_eq!(seconds(Duration::from_millis(500)), "0.5 s");
        assert_eq!(seconds(Duration::from_secs(2)), "2 s");
    }
}
