//! Command ids (header bytes 16..18) and which protobuf body each carries.

/// A protocol v1 command. The wire value is the `u16` discriminant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Cmd {
    /// `LoginRequest` / `LoginResponse`.
    Login = 1,
    /// `LogoutRequest` / `LogoutResponse`.
    Logout = 2,
    /// `KeepaliveRequest` (ping) / `KeepaliveResponse` (pong).
    Keepalive = 3,
    /// `ResumeRequest` / `ResumeResponse` (reserved for fast reconnect).
    Resume = 4,
    /// `Kick`, pushed before the server closes a session.
    Kick = 5,
    /// `C2sRequest` / `C2sResponse`: upstream to a business server through the bus.
    C2s = 16,
    /// `C2cRequest` / `C2cResponse`: to another user, stored durably before the answer.
    C2c = 17,
    /// `Msg`, pushed: an incoming message.
    Msg = 18,
    /// `MsgAck` (type 3, or type 0 answered by `MsgAckResponse`).
    MsgAck = 19,
    /// `OfflinePullRequest` / `OfflinePullResponse`.
    OfflinePull = 20,
    /// `HistoryPullRequest` / `HistoryPullResponse`.
    HistoryPull = 21,
    /// `Receipt`, pushed: messages this user sent were delivered or read.
    Receipt = 22,
    /// `ConversationsRequest` / `ConversationsResponse`: the user's conversations.
    Conversations = 23,
    /// `MarkReadRequest` / `MarkReadResponse`: a read mark in one conversation.
    MarkRead = 24,
    /// `PushTokenRequest` / `PushTokenResponse`: register, remove or list the device's push tokens.
    PushToken = 25,
    /// `NotificationAck` / `NotificationAckResponse`: receipts of offline push notifications.
    NotificationAck = 26,
    /// `Error`: a status code and message; seq_id echoes the offending request when known.
    Error = 255,
}

impl Cmd {
    /// Every command, in id order.
    pub const ALL: [Cmd; 17] = [
        Cmd::Login,
        Cmd::Logout,
        Cmd::Keepalive,
        Cmd::Resume,
        Cmd::Kick,
        Cmd::C2s,
        Cmd::C2c,
        Cmd::Msg,
        Cmd::MsgAck,
        Cmd::OfflinePull,
        Cmd::HistoryPull,
        Cmd::Receipt,
        Cmd::Conversations,
        Cmd::MarkRead,
        Cmd::PushToken,
        Cmd::NotificationAck,
        Cmd::Error,
    ];

    /// The upper-case name used in docs and logs.
    pub fn name(self) -> &'static str {
        match self {
            Cmd::Login => "LOGIN",
            Cmd::Logout => "LOGOUT",
            Cmd::Keepalive => "KEEPALIVE",
            Cmd::Resume => "RESUME",
            Cmd::Kick => "KICK",
            Cmd::C2s => "C2S",
            Cmd::C2c => "C2C",
            Cmd::Msg => "MSG",
            Cmd::MsgAck => "MSG_ACK",
            Cmd::OfflinePull => "OFFLINE_PULL",
            Cmd::HistoryPull => "HISTORY_PULL",
            Cmd::Receipt => "RECEIPT",
            Cmd::Conversations => "CONVERSATIONS",
            Cmd::MarkRead => "MARK_READ",
            Cmd::PushToken => "PUSH_TOKEN",
            Cmd::NotificationAck => "NOTIFICATION_ACK",
            Cmd::Error => "ERROR",
        }
    }
}

impl TryFrom<u16> for Cmd {
    type Error = u16;

    fn try_from(value: u16) -> Result<Self, u16> {
        Cmd::ALL
            .iter()
            .copied()
            .find(|cmd| *cmd as u16 == value)
            .ok_or(value)
    }
}

impl std::fmt::Display for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
