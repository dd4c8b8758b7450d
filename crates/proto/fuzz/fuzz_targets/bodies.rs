//! Every protobuf body of the protocol, chosen by the first input byte (modulo the table size),
//! decoded from the rest. A body that decodes must survive a round trip: encoding it gives
//! `encoded_len()` bytes, and decoding those gives the same message (unknown fields are
//! dropped by the first decode, so the second sees exactly what the first kept).
//!
//! Selector table (`crates/proto/tests/fuzz_corpus.rs` writes seeds in this order and checks
//! this file still lists it): client → server bodies first, then server → client bodies.
//!
//! Run from `crates/proto`:
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run bodies fuzz/target/work/bodies fuzz/corpus/bodies -- -max_total_time=60`
#![no_main]

use libfuzzer_sys::fuzz_target;
use longlink_proto::wire;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 26 {
        0 => check::<wire::LoginRequest>(body),
        1 => check::<wire::LogoutRequest>(body),
        2 => check::<wire::KeepaliveRequest>(body),
        3 => check::<wire::ResumeRequest>(body),
        4 => check::<wire::C2sRequest>(body),
        5 => check::<wire::C2cRequest>(body),
        6 => check::<wire::MsgAck>(body),
        7 => check::<wire::OfflinePullRequest>(body),
        8 => check::<wire::HistoryPullRequest>(body),
        9 => check::<wire::LoginResponse>(body),
        10 => check::<wire::LogoutResponse>(body),
        11 => check::<wire::KeepaliveResponse>(body),
        12 => check::<wire::ResumeResponse>(body),
        13 => check::<wire::Kick>(body),
        14 => check::<wire::C2sResponse>(body),
        15 => check::<wire::C2cResponse>(body),
        16 => check::<wire::Msg>(body),
        17 => check::<wire::MsgAckResponse>(body),
        18 => check::<wire::OfflinePullResponse>(body),
        19 => check::<wire::HistoryPullResponse>(body),
        20 => check::<wire::Receipt>(body),
        21 => check::<wire::ConversationsRequest>(body),
        22 => check::<wire::ConversationsResponse>(body),
        23 => check::<wire::MarkReadRequest>(body),
        24 => check::<wire::MarkReadResponse>(body),
        _ => check::<wire::Error>(body),
    }
});

fn check<M: Message + Default + PartialEq + std::fmt::Debug>(body: &[u8]) {
    let Ok(message) = M::decode(body) else {
        return;
    };
    let encoded = message.encode_to_vec();
    assert_eq!(encoded.len(), message.encoded_len());
    let again = M::decode(encoded.as_slice()).expect("a re-encoded message decodes");
    assert_eq!(again, message);
}
