//! Who may use the admin listener, and over what.
//!
//! * Endpoints that upload or change state (every `POST`) need the bearer
//!   token of `[admin] token`; without one configured they are off (403
//!   naming the key to set). Read-only views are open unless `read_token =
//!   true`; `/health` and `/ready` stay open for probes.
//! * Tokens are compared through their SHA-256 digests, in constant time.
//! * `tls_cert_file` + `tls_key_file` serve HTTPS (rustls); handshakes run
//!   beside the accept loop, each with a time limit, so a slow client
//!   cannot hold the listener.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};

use super::{AdminConfig, AdminError};

/// Time a client has to finish its TLS handshake.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once.
const MAX_HANDSHAKES: usize = 128;

/// `[admin]` as the listener uses it: secrets read, TLS loaded.
#[derive(Clone)]
pub struct AdminSettings {
    /// Posts kept for `GET /api/recent`.
    pub recent_posts: usize,
    /// SHA-256 of the token, when one is configured.
    token: Option<[u8; 32]>,
    read_token: bool,
    pub max_body_bytes: usize,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `/ready` is false once the sink has been unable to write this long.
    pub sink_grace: std::time::Duration,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("recent_posts", &self.recent_posts)
            .field("token", &self.token.map(|_| "<set>"))
            .field("read_token", &self.read_token)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl AdminSettings {
    /// From `[admin]` (defaults for `--admin ADDR` alone).
    pub fn from_config(c: Option<&AdminConfig>) -> Result<AdminSettings, AdminError> {
        let Some(c) = c else {
            return Ok(AdminSettings {
                recent_posts: super::DEFAULT_RECENT_POSTS,
                token: None,
                read_token: false,
                max_body_bytes: super::DEFAULT_MAX_BODY_BYTES,
                tls: None,
                sink_grace: std::time::Duration::from_secs(super::default_sink_grace_secs()),
            });
        };
        let token = match &c.token {
            Some(t) => {
                let secret = t.resolve().map_err(AdminError::Token)?;
                if secret.expose().trim().is_empty() {
                    return Err(AdminError::Token("admin.token is empty".into()));
                }
                Some(digest(secret.expose().trim().as_bytes()))
            }
            None => None,
        };
        let tls = match (&c.tls_cert_file, &c.tls_key_file) {
            (Some(cert), Some(key)) => Some(Arc::new(server_config(cert, key)?)),
            _ => None,
        };
        Ok(AdminSettings {
            recent_posts: c.recent_posts,
            token,
            read_token: c.read_token,
            max_body_bytes: c.max_body_bytes,
            tls,
            sink_grace: std::time::Duration::from_secs(c.sink_grace_secs),
        })
    }

    /// `None` when the request may go on, else the refusal.
    pub fn refuse(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<Response> {
        let writes = method != Method::GET && method != Method::HEAD;
        let probe = path == "/health" || path == "/ready";
        if !writes && (probe || !self.read_token) {
            return None;
        }
        let Some(expected) = &self.token else {
            let body = "this endpoint changes state and is off: set [admin] token = { env = \"…\" } or { file = \"…\" } to enable it\n";
            return Some((StatusCode::FORBIDDEN, body).into_response());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.get(..7).filter(|p| p.eq_ignore_ascii_case("bearer ")).map(|_| &v[7..]))
            .map(|t| digest(t.trim().as_bytes()));
        match given {
            Some(g) if same(&g, expected) => None,
            Some(_) => Some(unauthorized("wrong token")),
            None => Some(unauthorized("this endpoint needs `Authorization: Bearer <[admin] token>`")),
        }
    }
}

fn unauthorized(why: &str) -> Response {
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer realm=\"traptor-admin\"")], format!("{why}\n"))
        .into_response()
}

fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Equal in time that does not depend on where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A rustls server configuration from PEM files.
fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, AdminError> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |path: &Path, e: &dyn std::fmt::Display| AdminError::Tls(format!("{}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(cert, &e))?;
    if certs.is_empty() {
        return Err(bad(cert, &"no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    // ring, not aws-lc-rs: the latter needs cmake and a long C build on
    // every fresh machine. rustls 0.23.48 deprecates ring's provider for
    // lacking post-quantum key exchange; classical TLS 1.2/1.3 suits an
    // operator's endpoint (revisit when a PQ provider builds cheaply).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AdminError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| AdminError::Tls(format!("{} with {}: {e}", cert.display(), key.display())))
}

/// A TLS listener for `axum::serve`: a task accepts TCP connections and
/// runs each handshake on its own task (time-limited); finished ones are
/// handed over here.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, std::net::SocketAddr)>,
    local: std::net::SocketAddr,
    /// The accept loop (stopped with the listener).
    acceptor: tokio::task::AbortHandle,
}

impl TlsListener {
    /// The listener, and the accept loop's task: it owns the socket, so the
    /// address is free once that task has ended (await it after the drop).
    pub fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<(TlsListener, tokio::task::JoinHandle<()>)> {
        let local = tcp.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // At most MAX_HANDSHAKES at once: more connections wait in
                // the kernel's backlog, not as tasks here.
                let Ok(permit) = handshakes.clone().acquire_owned().await else { return };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "admin TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "admin TLS handshake timed out"),
                    }
                });
            }
        });
        Ok((TlsListener { rx, local, acceptor: task.abort_handle() }, task))
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task ended (it never does on its own): wait forever.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Whether `listen` is a loopback address (TLS is not needed there).
pub fn is_loopback(listen: &str) -> bool {
    listen.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback())
}

/// Paths of `[admin]` made absolute.
pub fn fix_paths(c: &mut AdminConfig, base: &crate::component::BaseDir) {
    for p in [&mut c.tls_cert_file, &mut c.tls_key_file].into_iter().flatten() {
        base.fix(p);
    }
    if let Some(t) = &mut c.token {
        base.fix_secret(t);
    }
}
