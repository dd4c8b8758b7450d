//! `longlink cert dev`: a development CA and a server certificate it signed (rcgen), so that
//! TLS can be tried on one machine without openssl: the gate takes `server.pem` and
//! `server-key.pem` (`[gate] tls_cert`, `tls_key`), clients trust `ca.pem` (`--ca`).
//!
//! The CA's private key is not written: nothing else can ever be signed with this CA, so a
//! leaked `ca.pem` in a trust store vouches for this one certificate only.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::{CliExit, EXIT_CONFIG};

#[derive(Debug, Subcommand)]
pub(crate) enum CertCommand {
    /// Writes a development CA (ca.pem) and a server certificate and key it signed
    /// (server.pem, server-key.pem) for local hosts. Not for production.
    Dev(DevArgs),
}

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// Directory to write into (created if missing).
    #[arg(long, default_value = "longlink-tls")]
    out: PathBuf,
    /// A name or IP address the server certificate is valid for; repeat for several.
    /// Default: localhost, 127.0.0.1 and ::1.
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Overwrite files that already exist.
    #[arg(long)]
    force: bool,
}

/// The PEM texts of a development CA certificate and of a server certificate and key it
/// signed for `hosts`.
#[derive(Debug)]
pub(crate) struct DevCerts {
    pub(crate) ca_pem: String,
    pub(crate) server_pem: String,
    pub(crate) server_key_pem: String,
}

/// Makes a fresh CA and a server certificate for `hosts`, valid from the start of this year
/// for two years.
pub(crate) fn dev_certs(hosts: &[String]) -> anyhow::Result<DevCerts> {
    let ca_key = KeyPair::generate().context("cannot generate the CA key")?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "longlink development CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut ca);
    let ca_cert = ca.self_signed(&ca_key).context("cannot sign the CA")?;
    let issuer = Issuer::new(ca, ca_key);

    // `CertificateParams::new` reads each name as an IP address when it parses as one.
    let mut server =
        CertificateParams::new(hosts.to_vec()).context("invalid --host for a certificate")?;
    server
        .distinguished_name
        .push(DnType::CommonName, "longlink development server");
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    set_validity(&mut server);
    let server_key = KeyPair::generate().context("cannot generate the server key")?;
    let server_cert = server
        .signed_by(&server_key, &issuer)
        .context("cannot sign the server certificate")?;
    Ok(DevCerts {
        ca_pem: ca_cert.pem(),
        server_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
    })
}

/// From January 1st of this year for two years (a date, not an instant: no time crate needed,
/// and a clock a few hours off does not make the certificate "not yet valid").
fn set_validity(params: &mut CertificateParams) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Average Gregorian year; off by at most a day around New Year, which January 1st absorbs.
    let year = 1970 + i32::try_from(secs / 31_556_952).unwrap_or(0);
    params.not_before = rcgen::date_time_ymd(year, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 2, 1, 1);
}

pub(crate) fn run(command: CertCommand) -> anyhow::Result<()> {
    match command {
        CertCommand::Dev(args) => dev(args),
    }
}

fn dev(args: DevArgs) -> anyhow::Result<()> {
    let hosts = if args.hosts.is_empty() {
        vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ]
    } else {
        args.hosts
    };
    let files = [
        args.out.join("ca.pem"),
        args.out.join("server.pem"),
        args.out.join("server-key.pem"),
    ];
    if !args.force
        && let Some(existing) = files.iter().find(|f| f.exists())
    {
        return Err(CliExit(
            EXIT_CONFIG,
            format!(
                "{} exists: pass --force to overwrite, or another --out",
                existing.display()
            ),
        )
        .into());
    }
    let certs = dev_certs(&hosts)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    write(&files[0], &certs.ca_pem, false)?;
    write(&files[1], &certs.server_pem, false)?;
    write(&files[2], &certs.server_key_pem, true)?;
    println!(
        "wrote {} (development CA), {} and {} for {}",
        files[0].display(),
        files[1].display(),
        files[2].display(),
        hosts.join(", ")
    );
    println!("gate config:");
    println!("  [gate]");
    println!("  tls_cert = {:?}", files[1].display().to_string());
    println!("  tls_key = {:?}", files[2].display().to_string());
    println!("clients: longlink client ... --ca {}", files[0].display());
    Ok(())
}

/// Writes `text` to `path`; a private key is readable by its owner only.
fn write(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    if path.is_dir() {
        bail!("{} is a directory", path.display());
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(())
}
