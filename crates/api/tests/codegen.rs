//! Checks that the checked-in tonic/prost code in `src/gen/` matches `proto/api.proto`.
//!
//! Users never need `protoc`: the generated code (messages, client and server) is committed, and
//! this test regenerates it with protox (a pure-Rust protobuf compiler) and tonic-prost-build and
//! fails on any drift. Run `LONGLINK_BLESS=1 cargo test -p longlink-api --test codegen` to
//! rewrite `src/gen/`.

use std::path::PathBuf;

#[test]
fn generated_code_is_current() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let proto_dir = root.join("../../proto");
    let fds = protox::compile([proto_dir.join("api.proto")], [&proto_dir])
        .expect("proto/api.proto compiles");
    let out = tempfile::tempdir().expect("tempdir");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        .bytes(".")
        .out_dir(out.path())
        .compile_fds(fds)
        .expect("tonic-prost-build generates code");
    let fresh =
        std::fs::read_to_string(out.path().join("longlink.api.v1.rs")).expect("generated file");
    let checked_in_path = root.join("src/gen/longlink.api.v1.rs");
    if std::env::var_os("LONGLINK_BLESS").is_some() {
        std::fs::write(&checked_in_path, &fresh).expect("write src/gen");
        return;
    }
    let checked_in = std::fs::read_to_string(&checked_in_path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "src/gen/longlink.api.v1.rs is stale: run LONGLINK_BLESS=1 cargo test -p longlink-api --test codegen"
    );
}
