//! Scenario `notify`: offline push notifications (issue 12) — what the outbox costs the server,
//! and what turning notifications on costs c2c.
//!
//! Apple's and Google's endpoints are not reachable here, and a bench must not depend on
//! anything outside the machine, so the provider is a local HTTPS endpoint in this process
//! (`longlink-push-fakes`' counting `FakeHttp`, HTTP/1.1 and HTTP/2, bodies not kept): the
//! server's `[[push.http]]` provider `vendor` posts to it, trusting its CA. Its CPU is the
//! bench's (reported as client CPU), not the server's.
//!
//! 1. **Throughput.** A spawned server with `[push] grace_ms = 0`, `collapse_secs = 0` (every
//!    stored message is due at once and nothing waits for a collapse window) and the provider
//!    unthrottled (`rate_per_sec`/`burst` 1,000,000). U devices are registered through
//!    `PUT /v1/devices/…` (U users, one device each, bounded concurrency), then one persisted
//!    s2c push (`POST /v1/push`, ≤ 100,000 uids per call) goes to the U users, who are all
//!    offline: the server stores U messages and notifies U devices through the outbox. Measured
//!    from the first API call until the endpoint counted U requests (bounded wait):
//!    notifications per second and per server CPU-second (server CPU from `/proc`, the window
//!    closing once the server is quiet again). The same push to U users *without* devices, on
//!    the same server just before, is the baseline: storing the messages and offering them to
//!    a notifier that finds no device. The difference is what notifying costs, and U divided
//!    by it is notifications per *notify* CPU-second.
//! 2. **Overhead on c2c.** The `c2c` scenario's workload ([`crate::c2c`], open loop, receivers
//!    online) on a fresh server with notifications off (`[push] enabled = false`) and on (the
//!    provider configured, every receiver's device registered, so every message is offered
//!    and the notifier finds a device the message reached over its connection). Rounds
//!    alternate the order (off/on, on/off, …) against drift on a shared machine; the medians
//!    of messages per second and per server CPU-second give the overhead (target < 5%).
//!
//! Bounded: U and the c2c schedule are finite, every wait has a timeout, and the whole run is
//! abandoned at `--deadline-secs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser};
use futures::StreamExt;
use longlink_push_fakes::FakeHttp;
use serde::Serialize;
use tokio::time::Instant;

use crate::api::{Api, DEV_API_KEY, PushAnswer, PushBody};
use crate::c2c::{self, C2cArgs};
use crate::client::DEVICE_ID;
use crate::http;
use crate::latency::median;
use crate::num::round;
use crate::procfs::{self, Usage, Window};
use crate::report::{Machine, RunStamp, by_thread, per, progress_bar, thousands, verdict};
use crate::server::{ConfigOverride, Target};

/// Issue 12's target: c2c messages per server CPU-second with notifications on are within 5%
/// of those with notifications off.
const TARGET_C2C_OVERHEAD: f64 = 0.05;
/// The `[[push.http]]` provider the devices register tokens for.
const PROVIDER: &str = "vendor";
/// Its body: every placeholder a vendor channel typically takes, so the rendering is paid.
const BODY_TEMPLATE: &str = r#"{"token": "{{token}}", "title": "{{title}}", "body": "{{body}}", "id": "{{id}}", "badge": "{{badge}}", "collapse": "{{collapse_id}}", "data": "{{data_json}}"}"#;
/// Sends per second and burst of the provider: high enough never to throttle the bench.
const UNTHROTTLED: i64 = 1_000_000;
/// How often the waits look at the endpoint's count.
const TICK: Duration = Duration::from_millis(20);
/// The server counts as quiet when it used less than this share of one core over
/// [`QUIET_STEP`] …
const QUIET_SHARE: f64 = 0.03;
const QUIET_STEP: Duration = Duration::from_millis(250);
/// … and this is the longest wait for it.
const QUIET_MAX: Duration = Duration::from_secs(20);
/// Wait before retrying a push the server refused as overloaded.
const RETRY_AFTER: Duration = Duration::from_millis(50);
/// Timeout of one `/metrics` scrape.
const METRICS_TIMEOUT: Duration = Duration::from_secs(10);

/// `longlink bench notify`: notifications per server CPU-second through the outbox to a local
/// provider endpoint, and the overhead of notifications on c2c.
#[derive(Debug, Clone, Args)]
pub struct NotifyArgs {
    /// Offline users, one registered device each, notified by one push (0 skips the
    /// throughput part).
    #[arg(long, default_value_t = 10_000)]
    pub users: u32,
    /// Device registrations (`PUT /v1/devices/…`) in flight at once.
    #[arg(long, default_value_t = 32)]
    pub register_concurrency: u32,
    /// Wait at most this long for every notification (and for the baseline push) to complete.
    #[arg(long, default_value_t = 120)]
    pub notify_timeout_secs: u64,
    /// The users' appcode.
    #[arg(long, default_value_t = 129)]
    pub appcode: u32,
    /// msgtype of the push.
    #[arg(long, default_value_t = 1)]
    pub msgtype: u32,
    /// Rounds of the c2c comparison, each one run with notifications off and one on (0 skips
    /// the c2c part).
    #[arg(long, default_value_t = 2)]
    pub c2c_rounds: u32,
    /// c2c messages per second (open loop, as `bench c2c --rate`).
    #[arg(long, default_value_t = 2000)]
    pub c2c_rate: u32,
    /// c2c send phase, seconds.
    #[arg(long, default_value_t = 8)]
    pub c2c_duration_secs: u64,
    /// c2c sender connections.
    #[arg(long, default_value_t = 64)]
    pub c2c_senders: u32,
    /// c2c receiver connections (each with a registered device when notifications are on).
    #[arg(long, default_value_t = 64)]
    pub c2c_receivers: u32,
    /// uids are this prefix, a per-run tag, then u<i> (notified), b<i> (baseline).
    #[arg(long, default_value = "bench-notify-")]
    pub uid_prefix: String,
    /// LONGLINK_LOG of the spawned servers (`info` is `longlink serve`'s default).
    #[arg(long, default_value = "info")]
    pub server_log: String,
    /// The whole run is abandoned after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub deadline_secs: u64,
    /// Write the inputs and figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The c2c options of a comparison run, parsed as `bench c2c` would (its defaults for the
/// rest: content size, acks, drain).
#[derive(Parser)]
struct C2cCommand {
    #[command(flatten)]
    args: C2cArgs,
}

/// Runs the scenario: prints the figures, writes `--json`.
///
/// # Errors
/// Bad arguments, the endpoint or a server that does not start, a refused registration or
/// push, a c2c run that could not be made, the deadline.
pub async fn run(args: NotifyArgs) -> anyhow::Result<()> {
    if args.users == 0 && args.c2c_rounds == 0 {
        bail!("--users 0 and --c2c-rounds 0: nothing to measure");
    }
    if args.register_concurrency == 0 {
        bail!("--register-concurrency must be at least 1");
    }
    let c2c_args = c2c_args(&args)?;
    let deadline = Instant::now() + Duration::from_secs(args.deadline_secs);
    let exe = std::env::current_exe().context("cannot find the longlink executable")?;
    let fake = FakeHttp::start_counting()
        .await
        .map_err(|err| anyhow!("cannot start the local provider endpoint: {err}"))?;
    let dir = tempfile::Builder::new()
        .prefix("longlink-bench-notify-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let ca = fake
        .write_ca(dir.path(), "vendor-ca.pem")
        .context("cannot write the endpoint's CA")?;
    let endpoint = Endpoint {
        fake: &fake,
        ca: &ca,
    };
    let loadavg = procfs::loadavg();
    println!(
        "longlink bench notify: provider endpoint {} (local HTTPS, counting), {} offline users, {} c2c round(s) of {} msg/s × {} s off/on",
        fake.url(),
        thousands(u64::from(args.users)),
        args.c2c_rounds,
        thousands(u64::from(args.c2c_rate)),
        args.c2c_duration_secs
    );
    let work = async {
        let throughput = if args.users > 0 {
            Some(throughput(&args, &exe, &endpoint, deadline).await?)
        } else {
            None
        };
        let c2c = if args.c2c_rounds > 0 {
            Some(overhead(&args, &c2c_args, &endpoint).await?)
        } else {
            None
        };
        anyhow::Ok((throughput, c2c))
    };
    let (throughput, c2c) = tokio::time::timeout_at(deadline, work)
        .await
        .map_err(|_| {
            anyhow!(
                "the bench passed its deadline of {}s (--deadline-secs); servers stopped",
                args.deadline_secs
            )
        })??;
    let json = report(&args, throughput, c2c, loadavg);
    json.print();
    if let Some(path) = &args.json {
        crate::report::write_json(path, &json)?;
    }
    Ok(())
}

/// `bench c2c`'s arguments for the comparison runs.
fn c2c_args(args: &NotifyArgs) -> anyhow::Result<C2cArgs> {
    let line = [
        "c2c".to_owned(),
        "--rate".to_owned(),
        args.c2c_rate.to_string(),
        "--duration-secs".to_owned(),
        args.c2c_duration_secs.to_string(),
        "--senders".to_owned(),
        args.c2c_senders.to_string(),
        "--receivers".to_owned(),
        args.c2c_receivers.to_string(),
        "--uid-prefix".to_owned(),
        format!("{}c2c-", args.uid_prefix),
        "--server-log".to_owned(),
        args.server_log.clone(),
        "--peers".to_owned(),
        "none".to_owned(),
    ];
    C2cCommand::try_parse_from(line)
        .map(|command| command.args)
        .map_err(|err| anyhow!("bad c2c options: {err}"))
}

/// The provider endpoint and its CA file.
struct Endpoint<'a> {
    fake: &'a FakeHttp,
    ca: &'a Path,
}

/// The `[push]` settings of a spawned server: notifications `enabled` or not, due at once, not
/// collapsed, through the unthrottled provider at the endpoint.
fn push_overrides(enabled: bool, endpoint: &Endpoint<'_>) -> Vec<ConfigOverride> {
    let mut provider = toml::Table::new();
    provider.insert("name".into(), PROVIDER.into());
    provider.insert("url".into(), format!("{}/push", endpoint.fake.url()).into());
    provider.insert("body".into(), BODY_TEMPLATE.into());
    provider.insert("ca_file".into(), endpoint.ca.display().to_string().into());
    provider.insert("rate_per_sec".into(), UNTHROTTLED.into());
    provider.insert("burst".into(), UNTHROTTLED.into());
    vec![
        ("push", "enabled", enabled.into()),
        ("push", "grace_ms", 0.into()),
        ("push", "collapse_secs", 0.into()),
        (
            "push",
            "http",
            toml::Value::Array(vec![toml::Value::Table(provider)]),
        ),
    ]
}

/// Registers one device (the bench clients' device id) with a token of [`PROVIDER`] for each
/// of `uids`, `concurrency` at a time, with a progress bar. Returns the seconds it took.
async fn register_devices(
    api: &Api,
    appcode: u32,
    uids: &[String],
    concurrency: u32,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let bar = progress_bar(uids.len() as u64, "devices registered");
    let mut calls = futures::stream::iter(uids)
        .map(|uid| async move {
            api.put_device(appcode, uid, DEVICE_ID, PROVIDER, &format!("token-{uid}"))
                .await
        })
        .buffer_unordered(concurrency as usize);
    while let Some(done) = calls.next().await {
        if let Err(err) = done {
            bar.finish_and_clear();
            return Err(err.context("a device registration failed"));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(started.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// Part 1: notifications through the outbox.

/// The figures of part 1.
#[derive(Debug, Serialize)]
struct Throughput {
    users: u32,
    devices_registered: u32,
    register_secs: f64,
    registrations_per_sec: f64,
    /// `POST /v1/push` calls of the measured push (≤ 100,000 uids each).
    push_calls: u32,
    /// Targets the API answered for them.
    push_targets: u64,
    notifications_expected: u64,
    /// Requests the endpoint counted.
    notifications_counted: u64,
    missing: u64,
    /// The first API call → the first request at the endpoint.
    first_notification_ms: f64,
    /// The first API call → the last expected request at the endpoint: the outbox drained.
    drain_secs: f64,
    notifications_per_sec: f64,
    /// Server CPU from the first API call until it was quiet again after the last request.
    server_cpu_secs: f64,
    notifications_per_server_cpu_sec: f64,
    server_cpu_us_per_notification: f64,
    server_threads_cpu_secs: BTreeMap<String, f64>,
    /// The same push to users without devices: storing and offering, nothing to notify.
    baseline_server_cpu_secs: f64,
    baseline_secs: f64,
    /// `server_cpu_secs` − `baseline_server_cpu_secs`: what notifying cost.
    notify_server_cpu_secs: f64,
    notifications_per_notify_cpu_sec: f64,
    notify_cpu_us_per_notification: f64,
    /// The bench's CPU (the endpoint included) over the measured push.
    client_cpu_secs: f64,
    /// The server's `/metrics` afterwards.
    server_metrics: NotifyMetrics,
}

/// The notifier's metrics, as `/metrics` shows them.
#[derive(Debug, Default, Serialize)]
struct NotifyMetrics {
    sent: f64,
    failed: f64,
    skipped: BTreeMap<String, f64>,
    outbox_pending: f64,
}

async fn throughput(
    args: &NotifyArgs,
    exe: &Path,
    endpoint: &Endpoint<'_>,
    deadline: Instant,
) -> anyhow::Result<Throughput> {
    let target = tokio::time::timeout_at(
        deadline,
        Target::spawn(
            exe,
            args.appcode,
            &args.server_log,
            &push_overrides(true, endpoint),
        ),
    )
    .await
    .map_err(|_| anyhow!("the server did not start before the deadline"))??;
    println!("throughput   {}", target.describe(&target.version().await));
    let outcome = tokio::time::timeout_at(deadline, measure(args, &target, endpoint.fake)).await;
    target
        .end_run(outcome, |_| true, args.deadline_secs, "registrations")
        .await
}

async fn measure(
    args: &NotifyArgs,
    target: &Target,
    fake: &FakeHttp,
) -> anyhow::Result<Throughput> {
    let api_addr = target
        .api
        .ok_or_else(|| anyhow!("the server's API address is unknown"))?;
    let api = Api::new(api_addr, DEV_API_KEY)?;
    let prefix = format!("{}{}-", args.uid_prefix, longlink_proto::unix_ms());
    let uids = |kind: char| -> Vec<String> {
        (0..args.users)
            .map(|i| format!("{prefix}{kind}{i}"))
            .collect()
    };
    let (notified, baseline) = (uids('u'), uids('b'));
    let register_secs =
        register_devices(&api, args.appcode, &notified, args.register_concurrency).await?;
    println!(
        "devices      {} registered in {register_secs:.1} s ({} per second)",
        thousands(u64::from(args.users)),
        thousands(per(u64::from(args.users), register_secs) as u64)
    );
    let timeout = Duration::from_secs(args.notify_timeout_secs);
    let quiet = || quiet(target.pid);
    let own_cpu = || procfs::cpu_time(std::process::id());

    // The baseline: the same push to users without devices.
    quiet().await?;
    let started = Instant::now();
    let window = Window::open(target.pid, started, own_cpu()?)?;
    let ids = push(&api, args, &baseline, started + timeout).await?;
    wait_pushes_done(&api, &ids, started + timeout).await?;
    let baseline_secs = started.elapsed().as_secs_f64();
    quiet().await?;
    let baseline_usage = window.close(target.pid, own_cpu()?)?;
    println!(
        "baseline     push to {} users without devices: stored in {baseline_secs:.2} s, {:.2} s of server CPU",
        thousands(u64::from(args.users)),
        baseline_usage.server_cpu.as_secs_f64()
    );

    // The measured push.
    let expected = u64::from(args.users);
    let before = fake.count();
    let started = Instant::now();
    let window = Window::open(target.pid, started, own_cpu()?)?;
    let ids = push(&api, args, &notified, started + timeout).await?;
    let push_targets = ids.iter().map(|(_, targets)| targets).sum();
    let bar = progress_bar(expected, "notifications at the endpoint");
    let mut first = None;
    let until = started + timeout;
    let counted = loop {
        let counted = fake.count().saturating_sub(before);
        if counted > 0 && first.is_none() {
            first = Some(started.elapsed());
        }
        bar.set_position(counted);
        if counted >= expected || Instant::now() >= until {
            break counted;
        }
        tokio::time::sleep(TICK).await;
    };
    let drain = started.elapsed();
    bar.finish_and_clear();
    quiet().await?;
    let usage = window.close(target.pid, own_cpu()?)?;
    let server_metrics = metrics(api_addr).await.unwrap_or_else(|err| {
        eprintln!("note: reading /metrics: {err:#}");
        NotifyMetrics::default()
    });
    Ok(summarize(Part1 {
        args,
        register_secs,
        push_calls: ids.len() as u32,
        push_targets,
        counted,
        first,
        drain,
        usage,
        baseline_usage,
        baseline_secs,
        server_metrics,
    }))
}

/// What part 1 measured, for [`summarize`].
struct Part1<'a> {
    args: &'a NotifyArgs,
    register_secs: f64,
    push_calls: u32,
    push_targets: u64,
    counted: u64,
    first: Option<Duration>,
    drain: Duration,
    usage: Usage,
    baseline_usage: Usage,
    baseline_secs: f64,
    server_metrics: NotifyMetrics,
}

fn summarize(p: Part1<'_>) -> Throughput {
    let expected = u64::from(p.args.users);
    let drain_secs = p.drain.as_secs_f64();
    let server_cpu = p.usage.server_cpu.as_secs_f64();
    let baseline_cpu = p.baseline_usage.server_cpu.as_secs_f64();
    let notify_cpu = (server_cpu - baseline_cpu).max(0.0);
    Throughput {
        users: p.args.users,
        devices_registered: p.args.users,
        register_secs: round(p.register_secs, 3),
        registrations_per_sec: round(per(expected, p.register_secs), 0),
        push_calls: p.push_calls,
        push_targets: p.push_targets,
        notifications_expected: expected,
        notifications_counted: p.counted,
        missing: expected.saturating_sub(p.counted),
        first_notification_ms: round(p.first.map_or(0.0, |first| first.as_secs_f64() * 1000.0), 1),
        drain_secs: round(drain_secs, 3),
        notifications_per_sec: round(per(p.counted, drain_secs), 0),
        server_cpu_secs: round(server_cpu, 3),
        notifications_per_server_cpu_sec: round(per(p.counted, server_cpu), 0),
        server_cpu_us_per_notification: round(server_cpu * 1e6 / p.counted.max(1) as f64, 1),
        server_threads_cpu_secs: p.usage.threads_secs(),
        baseline_server_cpu_secs: round(baseline_cpu, 3),
        baseline_secs: round(p.baseline_secs, 3),
        notify_server_cpu_secs: round(notify_cpu, 3),
        notifications_per_notify_cpu_sec: round(per(p.counted, notify_cpu), 0),
        notify_cpu_us_per_notification: round(notify_cpu * 1e6 / p.counted.max(1) as f64, 1),
        client_cpu_secs: round(p.usage.client_cpu.as_secs_f64(), 3),
        server_metrics: p.server_metrics,
    }
}

/// One persisted push to `uids`, in calls of at most the API's maximum; returns each call's
/// (push id, targets). A call refused as overloaded is retried until `until`.
async fn push(
    api: &Api,
    args: &NotifyArgs,
    uids: &[String],
    until: Instant,
) -> anyhow::Result<Vec<(u64, u64)>> {
    let mut ids = Vec::new();
    for chunk in uids.chunks(longlink_rpc::push::MAX_PUSH_TARGETS) {
        let body = PushBody {
            appcode: args.appcode,
            uids: Some(chunk),
            all: None,
            msgtype: args.msgtype,
            content: "you have a new message (longlink bench notify)",
            persist: true,
            from: "bench",
        };
        loop {
            match api.push(&body).await? {
                PushAnswer::Accepted { push_id, targets } => {
                    ids.push((push_id, targets));
                    break;
                }
                PushAnswer::Refused { status: 503, .. } if Instant::now() < until => {
                    tokio::time::sleep(RETRY_AFTER).await;
                }
                PushAnswer::Refused { status, code } => {
                    bail!("POST /v1/push refused: {status} {code}")
                }
            }
        }
    }
    Ok(ids)
}

/// Waits until the server says every push of `ids` is done (`GET /v1/push/{id}`), at most
/// until `until`.
async fn wait_pushes_done(api: &Api, ids: &[(u64, u64)], until: Instant) -> anyhow::Result<()> {
    for (id, _) in ids {
        loop {
            if api.push_stats(*id).await?.done {
                break;
            }
            if Instant::now() >= until {
                bail!("push {id} was not done within --notify-timeout-secs");
            }
            tokio::time::sleep(TICK).await;
        }
    }
    Ok(())
}

/// Waits until server `pid` used less than [`QUIET_SHARE`] of a core over one [`QUIET_STEP`]
/// (its work, notifications included, is over), at most [`QUIET_MAX`].
async fn quiet(pid: u32) -> anyhow::Result<()> {
    let until = Instant::now() + QUIET_MAX;
    let mut before = procfs::cpu_time(pid)?;
    loop {
        tokio::time::sleep(QUIET_STEP).await;
        let now = procfs::cpu_time(pid)?;
        if now.saturating_sub(before).as_secs_f64() < QUIET_SHARE * QUIET_STEP.as_secs_f64()
            || Instant::now() >= until
        {
            return Ok(());
        }
        before = now;
    }
}

/// The notifier's figures from the server's `/metrics`.
async fn metrics(api: SocketAddr) -> anyhow::Result<NotifyMetrics> {
    let (status, body) = http::get(api, "/metrics", METRICS_TIMEOUT).await?;
    if status != 200 {
        bail!("GET /metrics: status {status}");
    }
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|line| Ok(line.to_owned())))
        .context("GET /metrics: not Prometheus text")?;
    let mut out = NotifyMetrics::default();
    for sample in &scrape.samples {
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        match sample.metric.as_str() {
            "longlink_notifications_sent_total" => out.sent += value,
            "longlink_notifications_failed_total" => out.failed += value,
            "longlink_notify_outbox_pending" => out.outbox_pending += value,
            "longlink_notifications_skipped_total" => {
                let reason = sample.labels.get("reason").unwrap_or("?").to_owned();
                *out.skipped.entry(reason).or_default() += value;
            }
            _ => {}
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Part 2: the overhead on c2c.

/// One c2c run of the comparison.
#[derive(Debug, Serialize)]
struct C2cRun {
    round: u32,
    notifications: bool,
    /// Requests the endpoint counted during the run (receivers online: expected 0).
    notifications_sent: u64,
    #[serde(flatten)]
    figures: c2c::Figures,
}

/// Medians of one mode's runs.
#[derive(Debug, Default, Serialize)]
struct Mode {
    runs: usize,
    delivery_rate: f64,
    messages_per_server_cpu_sec: f64,
    server_cpu_us_per_message: f64,
    e2e_p99_ms: f64,
    lost: u64,
}

/// The figures of part 2.
#[derive(Debug, Serialize)]
struct Overhead {
    rate: u32,
    duration_secs: u64,
    senders: u32,
    receivers: u32,
    rounds: u32,
    off: Mode,
    on: Mode,
    /// 1 − on ÷ off of the median messages per server CPU-second (the target's figure).
    overhead_per_cpu: f64,
    /// 1 − on ÷ off of the median delivery rate (≈ 0 while the open-loop rate is reached).
    overhead_throughput: f64,
    runs: Vec<C2cRun>,
}

async fn overhead(
    args: &NotifyArgs,
    c2c_args: &C2cArgs,
    endpoint: &Endpoint<'_>,
) -> anyhow::Result<Overhead> {
    let mut runs = Vec::new();
    for round in 0..args.c2c_rounds {
        // ABBA: off/on, then on/off, so a drift of the machine's load favours neither.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for notifications in order {
            println!(
                "c2c          round {}/{}, notifications {}",
                round + 1,
                args.c2c_rounds,
                if notifications { "on" } else { "off" }
            );
            let before = endpoint.fake.count();
            let figures = c2c::measure_spawned(
                c2c_args,
                &push_overrides(notifications, endpoint),
                async |target: &Target, receivers: &[String]| {
                    if !notifications {
                        return Ok(());
                    }
                    let api = target
                        .api
                        .ok_or_else(|| anyhow!("the server's API address is unknown"))?;
                    let api = Api::new(api, DEV_API_KEY)?;
                    register_devices(
                        &api,
                        c2c_args.receiver_appcode,
                        receivers,
                        args.register_concurrency,
                    )
                    .await
                    .map(|_| ())
                },
            )
            .await?;
            println!(
                "             {} msg/s delivered, {} msg per server CPU-second, e2e p99 {:.1} ms, {} lost",
                thousands(figures.delivery_rate as u64),
                thousands(figures.messages_per_server_cpu_sec as u64),
                figures.e2e_latency_ms.p99,
                figures.lost
            );
            runs.push(C2cRun {
                round,
                notifications,
                notifications_sent: endpoint.fake.count().saturating_sub(before),
                figures,
            });
        }
    }
    let mode = |on: bool| {
        let of: Vec<&c2c::Figures> = runs
            .iter()
            .filter(|run| run.notifications == on)
            .map(|run| &run.figures)
            .collect();
        let med = |value: fn(&c2c::Figures) -> f64| {
            median(&of.iter().map(|f| value(f)).collect::<Vec<_>>())
        };
        Mode {
            runs: of.len(),
            delivery_rate: round(med(|f| f.delivery_rate), 1),
            messages_per_server_cpu_sec: round(med(|f| f.messages_per_server_cpu_sec), 0),
            server_cpu_us_per_message: round(med(|f| f.server_cpu_us_per_message), 1),
            e2e_p99_ms: round(med(|f| f.e2e_latency_ms.p99), 2),
            lost: of.iter().map(|f| f.lost).sum(),
        }
    };
    let (off, on) = (mode(false), mode(true));
    let ratio = |on: f64, off: f64| if off > 0.0 { 1.0 - on / off } else { 0.0 };
    Ok(Overhead {
        rate: args.c2c_rate,
        duration_secs: args.c2c_duration_secs,
        senders: args.c2c_senders,
        receivers: args.c2c_receivers,
        rounds: args.c2c_rounds,
        overhead_per_cpu: round(
            ratio(
                on.messages_per_server_cpu_sec,
                off.messages_per_server_cpu_sec,
            ),
            4,
        ),
        overhead_throughput: round(ratio(on.delivery_rate, off.delivery_rate), 4),
        off,
        on,
        runs,
    })
}

// ---------------------------------------------------------------------------------------------
// The report.

#[derive(Debug, Serialize)]
struct NotifyJson {
    #[serde(flatten)]
    run: RunStamp,
    inputs: Inputs,
    machine: Machine,
    results: Results,
    targets: Targets,
    verdict: Verdict,
    notes: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Inputs {
    users: u32,
    register_concurrency: u32,
    notify_timeout_secs: u64,
    appcode: u32,
    msgtype: u32,
    provider: &'static str,
    provider_body: &'static str,
    grace_ms: u64,
    collapse_secs: u64,
    provider_rate_per_sec: i64,
    c2c_rounds: u32,
    c2c_rate: u32,
    c2c_duration_secs: u64,
    c2c_senders: u32,
    c2c_receivers: u32,
    uid_prefix: String,
    server_log: String,
    deadline_secs: u64,
}

#[derive(Debug, Serialize)]
struct Results {
    throughput: Option<Throughput>,
    c2c: Option<Overhead>,
}

#[derive(Debug, Serialize)]
struct Targets {
    /// Most c2c overhead with notifications on, per server CPU-second.
    c2c_overhead: f64,
}

#[derive(Debug, Serialize)]
struct Verdict {
    every_notification_arrived: Option<bool>,
    c2c_overhead_met: Option<bool>,
}

fn report(
    args: &NotifyArgs,
    throughput: Option<Throughput>,
    c2c: Option<Overhead>,
    loadavg: String,
) -> NotifyJson {
    let mut notes = Vec::new();
    if let Some(t) = &throughput {
        if t.missing > 0 {
            notes.push(format!(
                "{} of {} notifications did not reach the endpoint within --notify-timeout-secs ({} s)",
                t.missing, t.notifications_expected, args.notify_timeout_secs
            ));
        }
        if t.client_cpu_secs > 0.3 * t.drain_secs {
            notes.push(format!(
                "the bench (the provider endpoint included) used {:.2} s of CPU during the {:.2} s drain on a {}-core machine it shares with the server",
                t.client_cpu_secs,
                t.drain_secs,
                procfs::cpus()
            ));
        }
    }
    if let Some(o) = &c2c {
        let sent: u64 = o
            .runs
            .iter()
            .filter(|run| run.notifications)
            .map(|run| run.notifications_sent)
            .sum();
        if sent > 0 {
            notes.push(format!(
                "{sent} notification(s) went out during the c2c runs although every receiver was online"
            ));
        }
        if o.off.lost + o.on.lost > 0 {
            notes.push(format!(
                "c2c lost {} (off) and {} (on) ACKed messages",
                o.off.lost, o.on.lost
            ));
        }
        notes.extend(o.runs.iter().flat_map(|run| run.figures.notes.clone()));
        notes.dedup();
    }
    NotifyJson {
        run: RunStamp::now("notify"),
        inputs: Inputs {
            users: args.users,
            register_concurrency: args.register_concurrency,
            notify_timeout_secs: args.notify_timeout_secs,
            appcode: args.appcode,
            msgtype: args.msgtype,
            provider: PROVIDER,
            provider_body: BODY_TEMPLATE,
            grace_ms: 0,
            collapse_secs: 0,
            provider_rate_per_sec: UNTHROTTLED,
            c2c_rounds: args.c2c_rounds,
            c2c_rate: args.c2c_rate,
            c2c_duration_secs: args.c2c_duration_secs,
            c2c_senders: args.c2c_senders,
            c2c_receivers: args.c2c_receivers,
            uid_prefix: args.uid_prefix.clone(),
            server_log: args.server_log.clone(),
            deadline_secs: args.deadline_secs,
        },
        machine: Machine::now(Some(loadavg)),
        verdict: Verdict {
            every_notification_arrived: throughput.as_ref().map(|t| t.missing == 0),
            c2c_overhead_met: c2c
                .as_ref()
                .map(|o| o.overhead_per_cpu < TARGET_C2C_OVERHEAD),
        },
        results: Results { throughput, c2c },
        targets: Targets {
            c2c_overhead: TARGET_C2C_OVERHEAD,
        },
        notes,
    }
}

impl NotifyJson {
    fn print(&self) {
        if let Some(t) = &self.results.throughput {
            println!(
                "notified     {} of {} devices in {:.2} s ({} notifications/s; first after {:.0} ms); {} missing",
                thousands(t.notifications_counted),
                thousands(t.notifications_expected),
                t.drain_secs,
                thousands(t.notifications_per_sec as u64),
                t.first_notification_ms,
                thousands(t.missing)
            );
            println!(
                "server CPU   {:.2} s: {} notifications per server CPU-second ({:.1} µs each, storing the messages included)",
                t.server_cpu_secs,
                thousands(t.notifications_per_server_cpu_sec as u64),
                t.server_cpu_us_per_notification
            );
            println!(
                "             baseline (same push, no devices) {:.2} s; notifying alone {:.2} s: {} notifications per notify CPU-second ({:.1} µs each)",
                t.baseline_server_cpu_secs,
                t.notify_server_cpu_secs,
                thousands(t.notifications_per_notify_cpu_sec as u64),
                t.notify_cpu_us_per_notification
            );
            if !t.server_threads_cpu_secs.is_empty() {
                println!(
                    "             by thread: {}",
                    by_thread(&t.server_threads_cpu_secs)
                );
            }
            let m = &t.server_metrics;
            println!(
                "server says  {} sent, {} failed, skipped {:?}, outbox pending {}",
                m.sent, m.failed, m.skipped, m.outbox_pending
            );
            println!(
                "client CPU   {:.2} s (the bench and the provider endpoint, on the same cores)",
                t.client_cpu_secs
            );
        }
        if let Some(o) = &self.results.c2c {
            for (name, mode) in [("off", &o.off), ("on", &o.on)] {
                println!(
                    "c2c {name:<8} {} msg/s, {} msg per server CPU-second ({:.1} µs each), e2e p99 {:.2} ms (medians of {} runs)",
                    thousands(mode.delivery_rate as u64),
                    thousands(mode.messages_per_server_cpu_sec as u64),
                    mode.server_cpu_us_per_message,
                    mode.e2e_p99_ms,
                    mode.runs
                );
            }
            println!(
                "target       c2c overhead < {:.0}% per server CPU-second: {} ({:+.1}%; throughput {:+.1}%)",
                self.targets.c2c_overhead * 100.0,
                verdict(o.overhead_per_cpu < self.targets.c2c_overhead),
                o.overhead_per_cpu * 100.0,
                o.overhead_throughput * 100.0
            );
        }
        for note in &self.notes {
            println!("note: {note}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_c2c_options_parse() {
        let args = NotifyArgs::try_parse_from_default();
        let c2c = c2c_args(&args).expect("c2c args");
        assert_eq!(c2c.rate, args.c2c_rate);
        assert_eq!(c2c.receivers, args.c2c_receivers);
        assert!(c2c.uid_prefix.starts_with("bench-notify-"));
    }

    impl NotifyArgs {
        fn try_parse_from_default() -> NotifyArgs {
            #[derive(Parser)]
            struct Command {
                #[command(flatten)]
                args: NotifyArgs,
            }
            Command::try_parse_from(["notify"]).expect("defaults").args
        }
    }
}
