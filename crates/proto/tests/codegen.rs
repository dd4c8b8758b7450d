//! Checks that the checked-in prost code in `src/gen/` matches `proto/longlink.proto`.
//!
//! Users never need `protoc`: the generated code is committed, and this test regenerates it with
//! protox (a pure-Rust protobuf compiler) and fails on any drift. Run with
//! `LONGLINK_BLESS=1 cargo test -p longlink-proto --test codegen` to rewrite `src/gen/`.

use std::path::PathBuf;

#[test]
fn generated_code_is_current() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let proto_dir = root.join("../../proto");
    let fds = protox::compile([proto_dir.join("longlink.proto")], [&proto_dir])
        .expect("proto/longlink.proto compiles");
    let out = tempfile::tempdir().expect("tempdir");
    prost_build::Config::new()
        .bytes(["."])
        .out_dir(out.path())
        .compile_fds(fds)
        .expect("prost-build generates code");
    let fresh = std::fs::read_to_string(out.path().join("longlink.v1.rs")).expect("generated file");
    let checked_in_path = root.join("src/gen/longlink.v1.rs");
    if std::env::var_os("LONGLINK_BLESS").is_some() {
        std::fs::write(&checked_in_path, &fresh).expect("write src/gen");
        return;
    }
    let checked_in = std::fs::read_to_string(&checked_in_path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "src/gen/longlink.v1.rs is stale: run LONGLINK_BLESS=1 cargo test -p longlink-proto --test codegen"
    );
}
