//! The async Rust client that apps embed to talk to a longlink gate over wire protocol v1.
//!
//! This crate owns the client side of a connection: the TCP connect and LOGIN handshake,
//! requests matched to responses by seq_id with a timeout on every wait, pushes turned into a
//! stream of [`Event`]s with backpressure, automatic (batched) MSG_ACKs, de-duplication of
//! messages already handed to the app, and automatic keepalive with a liveness check. It
//! depends on `longlink-proto` only. Main types: [`ClientConfig`], [`Client`] (a cheap,
//! cloneable handle; a driver task owns the socket), [`Incoming`] (the event stream),
//! [`Event`], [`Message`], [`Content`], [`UserRef`] and [`ClientError`].
//!
//! Modules: `config` ([`ClientConfig`]), `client` ([`Client`], [`Incoming`], the LOGIN
//! handshake), `driver` (the task that owns the socket: pending requests, pushes, acks,
//! keepalive), `dedup` (the bounded set of delivered msgids), `types` (the data types),
//! `error` ([`ClientError`]).
//!
//! ```no_run
//! use longlink_sdk::{Client, ClientConfig, Content, Event, UserRef};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ClientConfig::new("127.0.0.1:7700", 129, "<token>", "phone-1");
//! let (client, mut incoming) = Client::connect(config).await?;
//! let receipt = client
//!     .c2c("130:bob".parse::<UserRef>()?, Content::text("hello"))
//!     .await?;
//! println!("stored as msgid {}", receipt.msgid);
//! for message in client.pull_all_offline().await? {
//!     println!("offline from {}: {:?}", message.from, message.content);
//! }
//! while let Some(event) = incoming.next_event().await {
//!     match event {
//!         Event::Message(message) => println!("{}: {:?}", message.from, message.content),
//!         Event::Closed { reason } => println!("closed: {reason}"),
//!         other => println!("{other:?}"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod client;
mod config;
mod dedup;
mod driver;
mod error;
mod types;

pub use client::{CLIENT_VERSION, Client, Incoming};
pub use config::ClientConfig;
pub use error::ClientError;
pub use types::{Content, Event, Message, ParseUserRefError, PullPage, SendReceipt, UserRef};

pub use longlink_proto;
pub use longlink_proto::wire::{HistoryDirection, MsgKind};
pub use longlink_proto::{ContentType, ErrorCode, KickReason};
