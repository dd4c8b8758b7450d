//! `longlink push-providers stats` (`GET /v1/push-providers/stats`, docs/api.md "Devices
//! and push providers"): how each push provider delivers, per device class — the figures
//! longlink chooses a device's provider by (docs/push.md), shown so an operator can see why
//! a class moved from one provider to another.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use super::{Api, ApiOpts};

/// `longlink push-providers …`.
#[derive(Debug, Subcommand)]
pub(crate) enum PushProvidersCommand {
    /// Per provider and device class: sent, accepted by the provider, receipts, receipt
    /// rate, p50/p99 latency to receipt, the selector's estimate and errors by kind.
    Stats(StatsArgs),
}

#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiOpts,
}

#[derive(Debug, Serialize, Deserialize)]
struct Providers {
    providers: Vec<Provider>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Provider {
    name: String,
    kind: String,
    breaker: String,
    classes: Vec<Class>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Class {
    class: String,
    sent: u64,
    accepted: u64,
    receipts: u64,
    receipt_rate: f64,
    p50_ms: u64,
    p99_ms: u64,
    #[serde(default)]
    errors: std::collections::BTreeMap<String, u64>,
    estimate: f64,
}

/// Runs `longlink push-providers …`.
pub(crate) async fn push_providers(command: PushProvidersCommand) -> anyhow::Result<()> {
    match command {
        PushProvidersCommand::Stats(args) => stats(args).await,
    }
}

async fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let answer: Providers = api
        .get(&["v1", "push-providers", "stats"], &[], Duration::ZERO)
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    print!("{}", table(&answer));
    Ok(())
}

/// The table: a line per provider and class (a provider without traffic yet gets one line
/// with class `-`).
fn table(answer: &Providers) -> String {
    use std::fmt::Write as _;
    if answer.providers.is_empty() {
        return "no push provider is configured ([push] in the config)\n".to_owned();
    }
    let mut out = format!(
        "{:<12} {:<5} {:<9} {:<26} {:>8} {:>8} {:>8} {:>6} {:>7} {:>7} {:>6}  ERRORS\n",
        "PROVIDER",
        "KIND",
        "BREAKER",
        "CLASS",
        "SENT",
        "ACCEPTED",
        "RECEIPTS",
        "RATE",
        "P50",
        "P99",
        "EST"
    );
    for provider in &answer.providers {
        if provider.classes.is_empty() {
            let _ = writeln!(
                out,
                "{:<12} {:<5} {:<9} {:<26} {:>8} {:>8} {:>8} {:>6} {:>7} {:>7} {:>6}  -",
                provider.name, provider.kind, provider.breaker, "-", 0, 0, 0, "-", "-", "-", "-"
            );
        }
        for class in &provider.classes {
            let errors = if class.errors.is_empty() {
                "-".to_owned()
            } else {
                class
                    .errors
                    .iter()
                    .map(|(kind, n)| format!("{kind}={n}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let ms = |v: u64| {
                if class.receipts == 0 {
                    "-".to_owned()
                } else {
                    format!("{v}ms")
                }
            };
            let rate = if class.sent == 0 {
                "-".to_owned()
            } else {
                format!("{:.0}%", class.receipt_rate * 100.0)
            };
            let _ = writeln!(
                out,
                "{:<12} {:<5} {:<9} {:<26} {:>8} {:>8} {:>8} {:>6} {:>7} {:>7} {:>6.2}  {errors}",
                provider.name,
                provider.kind,
                provider.breaker,
                class.class,
                class.sent,
                class.accepted,
                class.receipts,
                rate,
                ms(class.p50_ms),
                ms(class.p99_ms),
                class.estimate,
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_line_per_provider_and_class() {
        let answer: Providers = serde_json::from_value(serde_json::json!({"providers": [
            {"name": "apns", "kind": "apns", "breaker": "closed", "classes": [
                {"class": "ios/apple/2.3", "sent": 100, "accepted": 99, "receipts": 95,
                 "receipt_rate": 0.95, "p50_ms": 120, "p99_ms": 800,
                 "errors": {"dead_token": 1, "rate_limited": 2}, "estimate": 0.94}]},
            {"name": "xiaomi", "kind": "http", "breaker": "open", "classes": []}
        ]}))
        .unwrap();
        let text = table(&answer);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("PROVIDER"), "{text}");
        let apns: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            apns,
            [
                "apns",
                "apns",
                "closed",
                "ios/apple/2.3",
                "100",
                "99",
                "95",
                "95%",
                "120ms",
                "800ms",
                "0.94",
                "dead_token=1,rate_limited=2"
            ]
        );
        assert!(
            lines[2].starts_with("xiaomi") && lines[2].contains("open"),
            "{text}"
        );
        let none = table(&Providers { providers: vec![] });
        assert!(none.starts_with("no push provider"), "{none}");
    }
}
