//! The HTTPS server every fake shares: a fresh development CA and a certificate for
//! 127.0.0.1/localhost it signed (so a client trusts exactly this server through `ca_file`),
//! TLS by tokio-rustls (aws-lc-rs), HTTP by hyper — HTTP/2 only for APNs (ALPN "h2", as
//! Apple's servers), HTTP/1.1 or HTTP/2 for the others. Every request is recorded (or only
//! counted, in the bench's fast mode) and answered by the fake's own logic, which first
//! takes a scripted [`Reply`] when one is queued.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// Largest request body a fake reads (providers' limits are 4 KiB APNs, 4 KiB FCM data).
const MAX_BODY: usize = 1 << 20;

/// Why a fake could not start.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fake push server: {}", self.0)
    }
}

impl std::error::Error for StartError {}

fn err(what: &str, e: impl std::fmt::Display) -> StartError {
    StartError(format!("{what}: {e}"))
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// "GET", "POST"…
    pub method: String,
    /// Path and query, e.g. "/3/device/abc".
    pub path: String,
    /// The HTTP version: `http::Version::HTTP_2` for an HTTP/2 request.
    pub version: http::Version,
    /// Headers in arrival order, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body parsed as an `application/x-www-form-urlencoded` form.
    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }

    /// The token of an `authorization: bearer <token>` header (scheme case-insensitive).
    pub fn bearer(&self) -> Option<&str> {
        let v = self.header("authorization")?;
        let (scheme, token) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
    }
}

/// One scripted answer: status, headers, body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Bytes,
}

impl Reply {
    /// A reply with `status` and an empty body.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// A JSON reply.
    pub fn json(status: u16, body: &serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(body.to_string()),
        }
    }

    /// A text reply.
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: Bytes::from(body.into()),
        }
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// An APNs error as Apple sends it: `{"reason": …}` (410 also carries a timestamp).
    pub fn apns_error(status: u16, reason: &str) -> Reply {
        let body = if status == 410 {
            serde_json::json!({"reason": reason, "timestamp": 1_700_000_000_000u64})
        } else {
            serde_json::json!({ "reason": reason })
        };
        Reply::json(status, &body)
    }

    /// An FCM HTTP v1 error: `{"error":{"code","message","status","details":[FcmError]}}`;
    /// `fcm_error_code` "" leaves the details out (as for UNAUTHENTICATED).
    pub fn fcm_error(status: u16, grpc_status: &str, fcm_error_code: &str) -> Reply {
        let mut error = serde_json::json!({
            "code": status,
            "message": format!("fake FCM: {grpc_status} {fcm_error_code}"),
            "status": grpc_status,
        });
        if !fcm_error_code.is_empty() {
            error["details"] = serde_json::json!([{
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": fcm_error_code,
            }]);
        }
        Reply::json(status, &serde_json::json!({ "error": error }))
    }
}

/// A fake's answering logic for requests no queued reply covers.
pub type Responder = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// Scripted replies of one route: a queue first, then a responder closure, then the fake's
/// default.
#[derive(Default)]
pub(crate) struct Script {
    queue: Mutex<VecDeque<Reply>>,
    responder: Mutex<Option<Responder>>,
}

impl Script {
    pub(crate) fn push(&self, reply: Reply) {
        lock(&self.queue).push_back(reply);
    }

    pub(crate) fn set(&self, responder: Option<Responder>) {
        *lock(&self.responder) = responder;
    }

    /// The scripted reply for `req`, if any.
    pub(crate) fn next(&self, req: &Recorded) -> Option<Reply> {
        if let Some(r) = lock(&self.queue).pop_front() {
            return Some(r);
        }
        let responder = lock(&self.responder).clone();
        responder.map(|f| f(req))
    }
}

/// A poisoned lock only means a test thread panicked; the data is still fine for a fake.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Which HTTP versions a fake speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocols {
    /// HTTP/2 only (ALPN "h2"), as APNs.
    H2Only,
    /// HTTP/1.1 and HTTP/2.
    Any,
}

struct Shared {
    record: bool,
    requests: Mutex<Vec<Recorded>>,
    count: AtomicU64,
    count_tx: tokio::sync::watch::Sender<u64>,
    answer: Box<dyn Fn(&Recorded) -> Reply + Send + Sync>,
}

/// A running HTTPS fake: what every fake shares (each derefs to it). Stops when dropped.
pub struct FakeServer {
    addr: SocketAddr,
    ca_pem: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    /// Binds 127.0.0.1:0 and serves; `answer` computes each reply. Must be called inside a
    /// tokio runtime.
    pub(crate) async fn start(
        protocols: Protocols,
        record: bool,
        answer: Box<dyn Fn(&Recorded) -> Reply + Send + Sync>,
    ) -> Result<FakeServer, StartError> {
        let (ca_pem, tls) = tls_config(protocols)?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| err("bind 127.0.0.1:0", e))?;
        let addr = listener.local_addr().map_err(|e| err("local_addr", e))?;
        let (count_tx, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            record,
            requests: Mutex::new(Vec::new()),
            count: AtomicU64::new(0),
            count_tx,
            answer,
        });
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let task = tokio::spawn(accept_loop(listener, acceptor, protocols, shared.clone()));
        Ok(FakeServer {
            addr,
            ca_pem,
            shared,
            task,
        })
    }

    /// The base URL, `https://127.0.0.1:<port>` (the certificate is valid for it).
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The PEM of the CA that signed this server's certificate (trust it, and only it).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes the CA PEM to `dir/name` (a provider's `ca_file`).
    ///
    /// # Errors
    /// I/O errors.
    pub fn write_ca(&self, dir: &Path, name: &str) -> std::io::Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, &self.ca_pem)?;
        Ok(path)
    }

    /// Every request so far, in arrival order (empty in counting mode).
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// How many requests arrived (also in counting mode).
    pub fn count(&self) -> u64 {
        self.shared.count.load(Ordering::Relaxed)
    }

    /// Forgets the recorded requests (the count stays).
    pub fn clear(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Waits until at least `n` requests arrived (counted since start), at most `timeout`.
    ///
    /// # Errors
    /// On timeout, the count reached.
    pub async fn wait_count(&self, n: u64, timeout: Duration) -> Result<u64, u64> {
        let mut rx = self.shared.count_tx.subscribe();
        let res = tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await;
        match res {
            Ok(Ok(c)) => Ok(*c),
            _ => Err(self.count()),
        }
    }
}

/// A fresh CA and a server certificate for 127.0.0.1, ::1 and localhost it signed.
fn tls_config(protocols: Protocols) -> Result<(String, rustls::ServerConfig), StartError> {
    let ca_key = KeyPair::generate().map_err(|e| err("CA key", e))?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "longlink push-fakes test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| err("CA cert", e))?;
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec![
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
        "localhost".to_owned(),
    ])
    .map_err(|e| err("server cert params", e))?;
    leaf.distinguished_name
        .push(DnType::CommonName, "longlink push-fakes server");
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().map_err(|e| err("server key", e))?;
    let leaf_cert = leaf
        .signed_by(&leaf_key, &issuer)
        .map_err(|e| err("server cert", e))?;

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("TLS versions", e))?
        .with_no_client_auth()
        .with_single_cert(vec![leaf_cert.der().clone()], key)
        .map_err(|e| err("TLS cert", e))?;
    config.alpn_protocols = match protocols {
        Protocols::H2Only => vec![b"h2".to_vec()],
        Protocols::Any => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    Ok((ca_cert.pem(), config))
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    protocols: Protocols,
    shared: Arc<Shared>,
) {
    // Connection tasks live in this set: aborting the accept task (drop of the fake) drops
    // the set, which aborts every connection.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        conns.spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let io = TokioIo::new(tls);
            let service = service_fn(move |req| handle(shared.clone(), req));
            // Errors (a client that went away, an HTTP/1 client on the HTTP/2-only fake)
            // end the connection; that is what the real servers do too.
            match protocols {
                Protocols::H2Only => {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await;
                }
                Protocols::Any => {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await;
                }
            }
        });
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"body too large")));
            *resp.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
            return Ok(resp);
        }
    };
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
        version: parts.version,
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    let reply = (shared.answer)(&recorded);
    if shared.record {
        lock(&shared.requests).push(recorded);
    }
    let n = shared.count.fetch_add(1, Ordering::Relaxed) + 1;
    shared.count_tx.send_modify(|c| *c = (*c).max(n));

    let mut resp = Response::new(Full::new(reply.body));
    *resp.status_mut() =
        http::StatusCode::from_u16(reply.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in &reply.headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            resp.headers_mut().append(k, v);
        }
    }
    Ok(resp)
}
