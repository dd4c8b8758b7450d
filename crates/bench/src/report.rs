//! Small helpers for reports: what every JSON report begins with (the run, the machine), the
//! date, the command line, number formatting, rates and verdicts, the JSON file.

use std::path::Path;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::procfs;

/// What every `--json` begins with: the scenario, when it ran, the command line, the bench's
/// version.
#[derive(Debug, Serialize)]
pub(crate) struct RunStamp {
    scenario: &'static str,
    date: String,
    command: String,
    bench_version: &'static str,
}

impl RunStamp {
    /// `scenario`, run now by this process.
    pub(crate) fn now(scenario: &'static str) -> RunStamp {
        RunStamp {
            scenario,
            date: utc_now(),
            command: command_line(),
            bench_version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// About the machine, for the JSON.
#[derive(Debug, Serialize)]
pub(crate) struct Machine {
    cpus: usize,
    kernel: String,
    clock_ticks_per_second: u64,
    /// `/proc/loadavg` when the run began: other work sharing the cores (left out where a
    /// scenario does not read it).
    #[serde(skip_serializing_if = "Option::is_none")]
    loadavg_before: Option<String>,
}

impl Machine {
    /// This machine, with its load when the run began.
    pub(crate) fn now(loadavg_before: Option<String>) -> Machine {
        Machine {
            cpus: procfs::cpus(),
            kernel: procfs::kernel(),
            clock_ticks_per_second: procfs::clock_ticks_per_second(),
            loadavg_before,
        }
    }
}

/// Now as RFC 3339 UTC, e.g. `2025-01-31T12:34:56Z`.
pub(crate) fn utc_now() -> String {
    let secs = longlink_proto::unix_ms() / 1000;
    utc(secs)
}

fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// This process's command line, as typed (arguments with spaces quoted).
pub(crate) fn command_line() -> String {
    std::env::args()
        .map(|arg| {
            if arg.is_empty() || arg.contains(char::is_whitespace) {
                format!("'{arg}'")
            } else {
                arg
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `1234567` → `"1,234,567"`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A progress bar of `len` things, as the scenarios draw them: the elapsed time, the bar,
/// `pos/len`, then `tail` (an indicatif template: what is counted, `{msg}`, …).
pub(crate) fn progress_bar(len: u64, tail: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&progress_template(tail))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

fn progress_template(tail: &str) -> String {
    format!("{{elapsed_precise}} [{{wide_bar}}] {{pos}}/{{len}} {tail}")
}

/// Writes a scenario's figures as pretty JSON to `path` (its `--json`) and says so.
pub(crate) fn write_json<T: Serialize>(path: &Path, json: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(json)?;
    std::fs::write(path, text + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("results written to {}", path.display());
    Ok(())
}

/// `n / secs`: a rate, 0 for no time.
pub(crate) fn per(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// Server CPU by thread name (`threads_secs` of the JSON) as the summaries print it:
/// `name 1.23 s, …`.
pub(crate) fn by_thread(threads_secs: &std::collections::BTreeMap<String, f64>) -> String {
    threads_secs
        .iter()
        .map(|(name, secs)| format!("{name} {secs:.2} s"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "meets" / "MISSES": a target's verdict, as the summaries print it.
pub(crate) fn verdict(met: bool) -> &'static str {
    if met { "meets" } else { "MISSES" }
}

/// Bytes as MiB with one decimal.
pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_735_689_599), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn progress_templates() {
        assert_eq!(
            progress_template("sent, {msg}"),
            "{elapsed_precise} [{wide_bar}] {pos}/{len} sent, {msg}"
        );
        for tail in ["logged in, {per_sec} {msg}", "pushes done, {msg}"] {
            assert!(ProgressStyle::with_template(&progress_template(tail)).is_ok());
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
