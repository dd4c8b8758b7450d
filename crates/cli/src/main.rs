//! `longlink`: the one binary. Parses the command line, sets up logging and dispatches to one
//! module per subcommand. Errors print as one line on stderr with a non-zero exit code
//! (64 for bad configuration or usage).

mod api_cmd;
mod bench_cmd;
mod cert;
mod client;
mod serve;
mod token;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc (feature `mimalloc`, on by default): small size classes and per-thread heaps
/// that keep an idle connection's RSS low and steady; with glibc malloc the same run measured
/// 3.5 to 5.2 KB per connection depending on how its per-thread arenas fragmented.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// longlink: a real-time messaging platform (gate, logic, store, SDK) in one binary.
#[derive(Debug, Parser)]
#[command(name = "longlink", version, about)]
struct Cli {
    /// Log format on stderr: `text` for people, `json` for log pipelines (one object per line,
    /// every field — log_id, session, topic… — at the top level).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "LONGLINK_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a single node (gate, logic and API on the embedded store), or, with the
    /// `[cluster]` URLs, the roles of `--roles gate,logic,api` on Redis, PostgreSQL and NATS.
    Serve(serve::ServeArgs),
    /// Applies the PostgreSQL schema migrations of a cluster (`[cluster] postgres_url`, or
    /// `--postgres-url`).
    Migrate(serve::MigrateArgs),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(serve::ConfigCommand),
    /// Mints a login token the server with the same config accepts.
    Token(token::TokenArgs),
    /// A terminal client: send, c2s, pull, listen, history, chat.
    #[command(subcommand)]
    Client(client::ClientCommand),
    /// Pushes a server-to-client message through the API (`push TEXT`, `push send TEXT`), or
    /// prints a push's delivery statistics (`push stats ID`).
    Push(api_cmd::PushCommand),
    /// Who is online, through the API: one user, several, or an appcode's counts.
    Presence(api_cmd::PresenceArgs),
    /// Reads a c2s topic through the API like a business server: prints each message, then
    /// acks it.
    Consume(api_cmd::ConsumeArgs),
    /// A message's trail through the node, by log_id or msgid: every stage with its node and
    /// time (`GET /v1/trace/{id}`).
    Trace(api_cmd::TraceArgs),
    /// The node at a glance, redrawn every second: connections, throughput, delivery rate,
    /// latency, totals, appcodes, gates (`GET /v1/stats/summary`, as the dashboard).
    Top(api_cmd::TopArgs),
    /// The node's gates through the API: `gate list`, `gate drain ID` (moves its clients to
    /// the other gates, then stops it). Needs a key covering every appcode of the node.
    #[command(subcommand)]
    Gate(api_cmd::GateCommand),
    /// Where a client should connect: the gate addresses to try, in order — the one holding
    /// the user's session first, then the least loaded (`GET /v1/dispatch`).
    Dispatch(api_cmd::DispatchArgs),
    /// Login tokens through the API: `tokens revoke --appcode N --uid U` voids a user's
    /// tokens issued so far and kicks its sessions. Needs a key covering the appcode.
    #[command(subcommand)]
    Tokens(api_cmd::TokensCommand),
    /// Adds a black/white list entry through the API: `ban uid alice --appcode 129`,
    /// `ban device ID`, `ban ip 10.0.0.0/8`, `ban appcode --appcode 131`; `--ttl-secs`,
    /// `--reason`, `--allow` (ip whitelist). Effective at once: matching sessions are kicked.
    Ban(api_cmd::BanArgs),
    /// Removes a black/white list entry by id (`longlink bans` lists them).
    Unban(api_cmd::UnbanArgs),
    /// Lists the active black/white list entries.
    Bans(api_cmd::BansArgs),
    /// Devices' push tokens for offline notifications, through the API:
    /// `device register --appcode N --uid U --device D --provider apns --token T`,
    /// `device list`, `device remove`. Needs a key covering the appcode.
    #[command(subcommand)]
    Device(api_cmd::DeviceCommand),
    /// The push providers (APNs, FCM, vendor channels) through the API: `push-providers
    /// stats` shows per provider and device class the sent, accepted and receipted
    /// notifications, the receipt rate, latency to receipt and errors by kind.
    #[command(subcommand)]
    PushProviders(api_cmd::PushProvidersCommand),
    /// TLS certificates: `cert dev` writes a development CA and a server certificate.
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Load generators and measurements (not tests).
    #[command(subcommand)]
    Bench(bench_cmd::BenchCommand),
}

/// Exit code for bad configuration or usage (sysexits EX_USAGE), as linkerd does.
pub(crate) const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LONGLINK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("longlink: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::serve(args).await,
            Command::Migrate(args) => serve::migrate(args).await,
            Command::Config(command) => serve::config(command),
            Command::Token(args) => token::token(args),
            Command::Client(command) => client::run(command).await,
            Command::Push(command) => api_cmd::push(command).await,
            Command::Presence(args) => api_cmd::presence(args).await,
            Command::Consume(args) => api_cmd::consume(args).await,
            Command::Trace(args) => api_cmd::trace(args).await,
            Command::Top(args) => api_cmd::top(args).await,
            Command::Gate(command) => api_cmd::gate(command).await,
            Command::Dispatch(args) => api_cmd::dispatch(args).await,
            Command::Tokens(command) => api_cmd::tokens(command).await,
            Command::Ban(args) => api_cmd::ban(args).await,
            Command::Unban(args) => api_cmd::unban(args).await,
            Command::Bans(args) => api_cmd::bans(args).await,
            Command::Device(command) => api_cmd::device(command).await,
            Command::PushProviders(command) => api_cmd::push_providers(command).await,
            Command::Bench(command) => bench_cmd::run(command).await,
            Command::Cert(command) => cert::run(command),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // An API error is already the one line to print (`error: 401 unauthenticated: …`).
            if let Some(failure) = err.downcast_ref::<api_cmd::ApiFailure>() {
                eprintln!("{failure}");
                return ExitCode::from(failure.code);
            }
            let code = err.downcast_ref::<CliExit>().map_or(1, |exit| exit.0);
            eprintln!("longlink: {}", one_line(&err));
            ExitCode::from(code)
        }
    }
}

/// An error carrying a specific exit code.
#[derive(Debug)]
pub(crate) struct CliExit(pub(crate) u8, pub(crate) String);

impl std::fmt::Display for CliExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for CliExit {}

fn one_line(err: &anyhow::Error) -> String {
    format!("{err:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
