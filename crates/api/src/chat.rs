//! What the browser chat page (`GET /chat`, docs/api.md "Chat page") needs to know about the
//! node: where the gate's WebSocket listener is, which appcodes exist, the size limits, and —
//! on a development node only — how to mint a login token for the page's login form.
//!
//! The API does not depend on logic, so minting goes through [`DevTokens`], which the server
//! implements over the appcodes' configured keys.

use std::net::SocketAddr;
use std::sync::Arc;

/// How long a development token is valid: a working day.
pub const DEV_TOKEN_TTL_SECS: u64 = 12 * 3600;

/// Mints development login tokens (`POST /chat/dev-token`). Implemented by the server with
/// the appcode's configured HS256 secret; absent when `[api] chat_dev_login` is off.
pub trait DevTokens: Send + Sync + 'static {
    /// A login token for `(appcode, uid)`.
    ///
    /// # Errors
    /// A one-line reason: the appcode is unknown or has no key the node can sign with.
    fn mint(&self, appcode: u32, uid: &str) -> Result<String, String>;
}

/// The chat page's view of the node.
#[derive(Clone, Default)]
pub struct ChatSettings {
    /// The first gate's WebSocket listener (`gate.ws_listen`, bound), when on.
    pub ws_addr: Option<SocketAddr>,
    /// Whether that listener speaks TLS (`wss://`).
    pub ws_tls: bool,
    /// The configured appcodes, for the page's login form.
    pub appcodes: Vec<u32>,
    /// The gate's largest frame body (`gate.max_body_bytes`).
    pub max_body_bytes: u32,
    /// Development logins, only when `[api] chat_dev_login` is on.
    pub dev_tokens: Option<Arc<dyn DevTokens>>,
}

impl std::fmt::Debug for ChatSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatSettings")
            .field("ws_addr", &self.ws_addr)
            .field("ws_tls", &self.ws_tls)
            .field("appcodes", &self.appcodes)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("dev_login", &self.dev_tokens.is_some())
            .finish()
    }
}
