//! `longlink cert dev` writes files a TLS gate and TLS clients can use, end to end through
//! the binary: serve with the certificate, `client send --ca` through it.

mod common;

use std::path::Path;

use common::{BIN, run};
use longlink_testkit::{ServeProcess, config_on_free_ports};

#[tokio::test]
async fn cert_dev_writes_a_ca_and_a_server_certificate_that_tls_clients_accept() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let tls_dir = tls.to_str().unwrap();
    let out = run(&["cert", "dev", "--out", tls_dir]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    for file in ["ca.pem", "server.pem", "server-key.pem"] {
        let text = std::fs::read_to_string(tls.join(file)).unwrap();
        assert!(text.starts_with("-----BEGIN "), "{file}: {text}");
    }
    assert!(out.stdout.contains("tls_cert = "), "{}", out.stdout);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tls.join("server-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is private: {mode:o}");
    }
    // Existing files are kept unless --force.
    let again = run(&["cert", "dev", "--out", tls_dir]).await;
    assert_eq!(again.code, 64, "{}", again.stderr);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);

    // A gate serving that certificate…
    let config = config_on_free_ports(&dir.path().join("data"))
        .replace(
            "tls_cert = \"\"",
            &format!(
                "tls_cert = {:?}",
                tls.join("server.pem").display().to_string()
            ),
        )
        .replace(
            "tls_key = \"\"",
            &format!(
                "tls_key = {:?}",
                tls.join("server-key.pem").display().to_string()
            ),
        );
    let serve = ServeProcess::start(Path::new(BIN), dir.path(), &config)
        .await
        .expect("serve starts with TLS");
    let gate = serve.gate_addr().to_string();
    let ca = tls.join("ca.pem");
    let send = |extra: &'static [&'static str]| {
        let (gate, ca) = (gate.clone(), ca.display().to_string());
        async move {
            let mut args = vec![
                "client",
                "send",
                "--server",
                &gate,
                "--appcode",
                "129",
                "--uid",
                "alice",
                "--to",
                "130:bob",
                "over tls",
                "--json",
                "--request-timeout-secs",
                "5",
            ];
            let ca_args = ["--ca", ca.as_str()];
            if extra.contains(&"with-ca") {
                args.extend_from_slice(&ca_args);
            } else {
                args.extend_from_slice(extra);
            }
            run(&args).await
        }
    };
    // …takes a client trusting the CA…
    let out = send(&["with-ca"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("\"msgid\""), "{}", out.stdout);
    // …and refuses one speaking plain TCP (it fails, it does not hang).
    let out = send(&[]).await;
    assert_ne!(out.code, 0, "plain TCP to a TLS gate: {}", out.stdout);
    // --tls alone names what is missing.
    let out = send(&["--tls"]).await;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("--ca"), "{}", out.stderr);
}
