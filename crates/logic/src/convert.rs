//! Conversions between store rows and wire messages.

use longlink_proto::wire;
use longlink_store::{StoredMessage, UserKey};

pub(crate) fn user_ref(key: &UserKey) -> wire::UserRef {
    wire::UserRef {
        appcode: key.appcode,
        uid: key.uid.clone(),
    }
}

pub(crate) fn user_key(user: &wire::UserRef) -> UserKey {
    UserKey {
        appcode: user.appcode,
        uid: user.uid.clone(),
    }
}

pub(crate) fn wire_msg(message: &StoredMessage) -> wire::Msg {
    wire::Msg {
        msgid: message.msgid,
        from: Some(user_ref(&message.from)),
        to: Some(user_ref(&message.to)),
        msgtype: message.msgtype,
        content_type: message.content_type,
        content: message.content.clone(),
        senddate_ms: message.senddate_ms,
        client_msg_id: message.client_msg_id.clone(),
        from_device: message.from_device.clone(),
        log_id: message.log_id,
        kind: if message.is_s2c() {
            wire::MsgKind::S2c as i32
        } else {
            wire::MsgKind::C2c as i32
        },
        prev_msgid: message.prev_msgid,
        delivered: message.delivered,
    }
}
