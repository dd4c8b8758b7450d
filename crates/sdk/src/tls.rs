//! TLS for the client ([`TlsConfig`]): rustls with the aws-lc-rs provider, trusting the CA
//! certificates given (e.g. the `ca.pem` that `longlink cert dev` writes), and the byte
//! stream the codec runs on — plain TCP or TLS ([`Stream`]).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_util::either::Either;

use crate::ClientError;

/// How a client speaks TLS to the gate ([`crate::ClientConfig::tls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The CA certificates the server's certificate must chain to.
    pub roots: TlsRoots,
    /// The name the server's certificate must carry; `None` (the default): the host part of
    /// the address dialed (an IP address or a DNS name). Set it when dialing by IP a server
    /// whose certificate names only a host.
    pub server_name: Option<String>,
}

impl TlsConfig {
    /// TLS trusting the CA certificates in the PEM file at `path`.
    pub fn ca_file(path: impl Into<PathBuf>) -> Self {
        Self {
            roots: TlsRoots::CaFile(path.into()),
            server_name: None,
        }
    }

    /// TLS trusting the CA certificates in `pem`.
    pub fn ca_pem(pem: impl Into<Vec<u8>>) -> Self {
        Self {
            roots: TlsRoots::CaPem(pem.into()),
            server_name: None,
        }
    }

    /// A connector for this config, dialing `addr` (`host:port`). The CA file is read here,
    /// at every connect, so that a rotated CA is picked up by the next reconnect.
    pub(crate) fn connector(
        &self,
        addr: &str,
    ) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), ClientError> {
        let pem = match &self.roots {
            TlsRoots::CaFile(path) => std::fs::read(path).map_err(|err| {
                ClientError::Tls(format!("cannot read CA file {}: {err}", path.display()))
            })?,
            TlsRoots::CaPem(pem) => pem.clone(),
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|err| ClientError::Tls(format!("bad CA PEM: {err}")))?;
            roots
                .add(cert)
                .map_err(|err| ClientError::Tls(format!("unusable CA certificate: {err}")))?;
        }
        if roots.is_empty() {
            return Err(ClientError::Tls("no CA certificate in the PEM".into()));
        }
        // The provider is named, not taken from a process-wide default, so an application
        // that installs none (or another) cannot make connect panic.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| ClientError::Tls(err.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => host_of(addr).to_owned(),
        };
        let name = ServerName::try_from(name)
            .map_err(|err| ClientError::Tls(format!("invalid server name: {err}")))?;
        Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
    }
}

/// Where [`TlsConfig`] takes its trusted CA certificates from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsRoots {
    /// A PEM file of one or more CA certificates.
    CaFile(PathBuf),
    /// PEM text of one or more CA certificates.
    CaPem(Vec<u8>),
}

/// The host of `host:port` (`[v6]:port` → `v6`).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The byte stream under the codec: TCP, or TLS over it (tokio-util's `Either` forwards reads
/// and writes to whichever it holds).
pub(crate) type Stream = Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_the_address_without_its_port() {
        assert_eq!(host_of("127.0.0.1:7700"), "127.0.0.1");
        assert_eq!(host_of("gate.example.com:443"), "gate.example.com");
        assert_eq!(host_of("[::1]:7700"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn unusable_roots_are_a_tls_error() {
        let err = TlsConfig::ca_pem("not a pem")
            .connector("127.0.0.1:7700")
            .err()
            .expect("refused");
        assert!(matches!(err, ClientError::Tls(_)), "{err}");
        let err = TlsConfig::ca_file("/nonexistent/ca.pem")
            .connector("127.0.0.1:7700")
            .err()
            .expect("refused");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
