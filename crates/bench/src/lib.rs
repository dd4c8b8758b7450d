//! longlink's load generators: scenarios as a library; `longlink bench` calls them.
//!
//! Benchmarks measure speed and memory, they never assert (DESIGN.md "Testing rules"). Each
//! scenario is bounded in time and stops by itself. The figures that matter are the *server's*:
//! read from `/proc/<server pid>` (RSS, CPU ticks), so the load generator's own cost does not
//! blur them, and reported per server CPU-second where a rate is concerned.
//!
//! A scenario runs inside the `longlink` binary: it starts its own server as
//! `<current exe> serve` and spreads client connections over worker processes started as
//! `<current exe> bench <scenario>-worker`, because one process here may open at most 20,000
//! files.
//!
//! Modules: [`idle`] (N idle logged-in connections, the server's RSS per connection),
//! [`c2c`] (open-loop durable messages at a fixed rate: ACK and end-to-end latency), [`push`]
//! (s2c pushes to lists of online users through the HTTP API: deliveries per server
//! CPU-second), [`broadcast`] (one push to every online user: time to the last delivery),
//! [`reconnect`] (N clients lose their links at once and come back by RESUME or LOGIN;
//! `storm_client` is its client side), [`offline`] (U offline users with M stored messages each
//! drain their inboxes by OFFLINE_PULL: pull throughput, page latency, exactly-once check),
//! [`notify`] (offline push notifications through the outbox to a local provider endpoint:
//! notifications per server CPU-second, and their overhead on c2c),
//! [`fanout`] (the receiving clients of those two, in worker processes), [`workers`] (client
//! worker processes: what idle's workers and fanout's share), [`s2c`] (what push and broadcast
//! share), `api` (the HTTP API calls they make), `latency` (histogram summaries), `plot`
//! (SVG/PNG latency plots), `client` (a lean wire-protocol client), [`link`] (its transports: TCP or WebSocket), `server` (a spawned or
//! external server under test), `procfs` (RSS and CPU time of a pid), `http` (a raw `GET`),
//! `report` (dates). [`peers`]: the same workloads against mosquitto and nats-server in the
//! same run (`--peers`), for ratios per server CPU-second.

mod api;
pub mod broadcast;
pub mod c2c;
mod client;
mod counts;
pub mod fanout;
mod http;
pub mod idle;
mod latency;
pub mod link;
pub mod notify;
mod num;
pub mod offline;
pub mod peers;
mod plot;
mod procfs;
pub mod push;
pub mod reconnect;
mod report;
pub mod s2c;
mod server;
mod storm_client;
pub mod workers;

/// The scenarios `longlink bench` knows, with a one-line description each.
pub fn scenarios() -> &'static [(&'static str, &'static str)] {
    &[
        (
            "idle",
            "N idle logged-in connections; the server's RSS per connection and CPU per login",
        ),
        (
            "c2c",
            "durable c2c messages at a fixed rate (open loop); ACK and end-to-end latency, messages per server CPU-second",
        ),
        (
            "push",
            "s2c pushes to lists of online users through POST /v1/push; deliveries per server CPU-second, API call → receipt latency",
        ),
        (
            "broadcast",
            "one `all: true` push to every online user (15,000), R rounds; time to the last delivery",
        ),
        (
            "offline",
            "U offline users with M stored messages each log in and drain their inboxes by OFFLINE_PULL (pages of 50); messages pulled per second and per server CPU-second, page latency, LOST/DUPLICATE check",
        ),
        (
            "notify",
            "U offline users with a registered device each get one push; notifications per server CPU-second through the outbox to a local HTTPS provider endpoint, and c2c with notifications off vs on (overhead per server CPU-second)",
        ),
        (
            "reconnect-storm",
            "N clients lose their links at once and come back by RESUME (or LOGIN + pull with --no-resume); time until all are back, resume latency, reconnects per server CPU-second",
        ),
    ]
}
