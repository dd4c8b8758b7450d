//! The node's gates from the command line: `longlink gate list` (`GET /v1/gates`),
//! `longlink gate drain ID` (`POST /v1/gates/{id}/drain`, then `GET /v1/gates` until the gate
//! has no connection left) and `longlink dispatch` (`GET /v1/dispatch`: where a client of
//! appcode:uid should connect). Gate commands need an operator key (one covering every
//! appcode of the node); dispatch a key covering the appcode (docs/api.md).

use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use tokio::time::Instant;

use super::{Api, ApiOpts};

/// How often `gate drain` asks how far the drain got.
const DRAIN_POLL: Duration = Duration::from_millis(200);

/// `longlink gate …`.
#[derive(Debug, Subcommand)]
pub(crate) enum GateCommand {
    /// Lists the node's gates: address, connections, held sessions, state.
    List(ListArgs),
    /// Drains a gate: it stops accepting and being dispatched and moves its clients to the
    /// other gates (KICK RECONNECT, in waves); waits until it has no connection left.
    Drain(DrainArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiOpts,
}

#[derive(Debug, Args)]
pub(crate) struct DrainArgs {
    /// The gate id (as `gate list` shows it).
    id: String,
    /// Stop waiting after this many seconds (the drain itself goes on, bounded on the node by
    /// gate.drain_timeout_secs).
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    #[command(flatten)]
    api: ApiOpts,
}

/// `longlink dispatch`.
#[derive(Debug, Args)]
pub(crate) struct DispatchArgs {
    /// The user's appcode.
    #[arg(long)]
    appcode: u32,
    /// The user: the gate holding its session comes first.
    #[arg(long)]
    uid: Option<String>,
    /// One of the user's devices: only its session counts.
    #[arg(long, requires = "uid")]
    device: Option<String>,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiOpts,
}

#[derive(Debug, Deserialize)]
struct Gates {
    gates: Vec<Gate>,
}

#[derive(Debug, Deserialize)]
struct Gate {
    id: String,
    addr: String,
    connections: u64,
    held: u64,
    serving: bool,
    draining: bool,
}

impl Gate {
    fn state(&self) -> &'static str {
        match (self.serving, self.draining) {
            (true, false) => "serving",
            (true, true) => "draining",
            (false, true) => "drained",
            (false, false) => "stopped",
        }
    }
}

#[derive(Debug, Deserialize)]
struct DrainAccepted {
    started: bool,
}

#[derive(Debug, Deserialize)]
struct Dispatch {
    gates: Vec<DispatchGate>,
}

#[derive(Debug, Deserialize)]
struct DispatchGate {
    addr: String,
}

/// Runs `longlink gate …`.
pub(crate) async fn gate(command: GateCommand) -> anyhow::Result<()> {
    match command {
        GateCommand::List(args) => list(args).await,
        GateCommand::Drain(args) => drain(args).await,
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let raw: serde_json::Value = api.get(&["v1", "gates"], &[], Duration::ZERO).await?;
    if args.json {
        println!("{raw}");
        return Ok(());
    }
    let gates: Gates = serde_json::from_value(raw)?;
    print!("{}", table(&gates.gates));
    Ok(())
}

/// The gates as an aligned table with a header line.
fn table(gates: &[Gate]) -> String {
    let rows: Vec<[String; 5]> = gates
        .iter()
        .map(|g| {
            [
                g.id.clone(),
                g.addr.clone(),
                g.connections.to_string(),
                g.held.to_string(),
                g.state().to_owned(),
            ]
        })
        .collect();
    let header = ["ID", "ADDR", "CONNECTIONS", "HELD", "STATE"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

async fn drain(args: DrainArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let accepted: DrainAccepted = api
        .post(&["v1", "gates", &args.id, "drain"], &serde_json::json!({}))
        .await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    // Drawn on stderr, and only on a terminal (indicatif hides it otherwise), so scripts and
    // logs get the one result line alone.
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner.set_message(format!(
        "draining {}{}",
        args.id,
        if accepted.started {
            ""
        } else {
            " (already draining)"
        }
    ));
    let last = loop {
        let gates: Gates = api.get(&["v1", "gates"], &[], Duration::ZERO).await?;
        // The gate vanishing from the list (a node that forgets stopped gates) is done too.
        let Some(gate) = gates.gates.into_iter().find(|g| g.id == args.id) else {
            break None;
        };
        if gate.connections == 0 || Instant::now() >= deadline {
            break Some(gate);
        }
        spinner.set_message(format!(
            "draining {}: {} connection{} left, {} held",
            gate.id,
            gate.connections,
            plural(gate.connections),
            gate.held
        ));
        tokio::time::sleep(DRAIN_POLL).await;
    };
    spinner.finish_and_clear();
    let took = started.elapsed().as_secs_f64();
    match last {
        Some(gate) if gate.connections > 0 => println!(
            "gate {}: still {} connection{} after {}s; the drain goes on on the node",
            gate.id,
            gate.connections,
            plural(gate.connections),
            args.timeout
        ),
        Some(gate) => println!(
            "gate {} drained: 0 connections, {} held, {} ({took:.1}s)",
            gate.id,
            gate.held,
            gate.state()
        ),
        None => println!("gate {} drained ({took:.1}s)", args.id),
    }
    Ok(())
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Runs `longlink dispatch`: prints the gate addresses to try, one per line, best first.
pub(crate) async fn dispatch(args: DispatchArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let mut query = vec![("appcode", args.appcode.to_string())];
    if let Some(uid) = &args.uid {
        query.push(("uid", uid.clone()));
    }
    if let Some(device) = &args.device {
        query.push(("device", device.clone()));
    }
    let raw: serde_json::Value = api.get(&["v1", "dispatch"], &query, Duration::ZERO).await?;
    if args.json {
        println!("{raw}");
        return Ok(());
    }
    let dispatch: Dispatch = serde_json::from_value(raw)?;
    for gate in dispatch.gates {
        println!("{}", gate.addr);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_aligned_and_names_the_state() {
        let gate = |id: &str, connections, serving, draining| Gate {
            id: id.to_owned(),
            addr: "127.0.0.1:7700".to_owned(),
            connections,
            held: 2,
            serving,
            draining,
        };
        let text = table(&[
            gate("gate-1", 12_345, true, false),
            gate("gate-1-2", 0, false, true),
        ]);
        assert_eq!(
            text,
            "ID        ADDR            CONNECTIONS  HELD  STATE\n\
             gate-1    127.0.0.1:7700  12345        2     serving\n\
             gate-1-2  127.0.0.1:7700  0            2     drained\n"
        );
    }
}
