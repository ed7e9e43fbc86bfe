//! The one way to reach Redis, shared by the rule store, coordination and the
//! command line: a URL type that never shows its password, and a connection
//! manager that reconnects in the background (RESP3, so pub/sub messages
//! arrive on the same connection and subscriptions are restored).
//!
//! Depends on nothing else in the crate.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion};
use tokio_util::sync::CancellationToken;

use crate::jitter::Jitter;
use crate::secret::SecretRef;

/// The default server (`--redis`, `TRAPTOR_REDIS_URL`).
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A Redis server as the pipeline names it: a URL whose password never
/// appears in logs, errors or `Debug`, plus what the URL cannot say (a
/// password from the environment or a file, a CA file for `rediss://`).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct RedisUrl {
    url: String,
    access: RedisAccess,
}

/// How to reach a server beyond its URL (the `tls_ca_file`, `tls_insecure`
/// and `password` keys of `[rules]` and `[coordination]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedisAccess {
    /// PEM file of the CA that signed the server's certificate (`rediss://`).
    pub tls_ca_file: Option<PathBuf>,
    /// Accept any certificate (tests only).
    pub tls_insecure: bool,
    /// The password, when not in the URL.
    pub password: Option<SecretRef>,
}

impl RedisUrl {
    pub fn new(url: impl Into<String>) -> RedisUrl {
        RedisUrl { url: url.into(), access: RedisAccess::default() }
    }
    pub fn with_access(mut self, access: RedisAccess) -> RedisUrl {
        self.access = access;
        self
    }
    /// The real URL, for connecting only.
    pub fn expose(&self) -> &str {
        &self.url
    }
}

/// Query parameters that carry a password (`redis+unix://…?pass=…`).
fn is_password_param(k: &str) -> bool {
    ["pass", "password"].contains(&k.to_ascii_lowercase().as_str())
}

impl fmt::Display for RedisUrl {
    /// The URL with every password replaced: userinfo (`user:pass@`, a bare
    /// `token@`) and `pass=`/`password=` query parameters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ok(mut u) = url::Url::parse(&self.url) else {
            // Unreadable: show the scheme only, never the rest.
            let scheme = self.url.split_once("://").map_or("?", |(s, _)| s);
            return write!(f, "{scheme}://(unreadable URL)");
        };
        if u.password().is_some() {
            let _ = u.set_password(Some("*****"));
        } else if !u.username().is_empty() {
            let _ = u.set_username("*****");
        }
        if u.query().is_some() {
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if is_password_param(&k) { "*****".to_owned() } else { v.into_owned() };
                    (k.into_owned(), v)
                })
                .collect();
            u.query_pairs_mut().clear().extend_pairs(pairs);
        }
        f.write_str(u.as_str())
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// Why talking to Redis failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The URL or its settings cannot be used (a configuration error).
    #[error("invalid Redis URL {url}: {message}")]
    Url { url: RedisUrl, message: String },
    #[error("cannot reach Redis at {url}: {message}")]
    Connect { url: RedisUrl, message: String },
    #[error("Redis command failed: {0}")]
    Command(String),
    /// Pub/sub on the command connection needs RESP3 (Redis 6 or later).
    #[error(
        "Redis at {url} is older than 6 (no RESP3): rule notices cannot be received; rules are re-checked periodically"
    )]
    NoPush { url: RedisUrl },
}

impl From<redis::RedisError> for RedisError {
    fn from(e: redis::RedisError) -> Self {
        RedisError::Command(e.to_string())
    }
}

/// The client for `url`: password and TLS settings applied.
fn client(url: &RedisUrl, protocol: ProtocolVersion) -> Result<redis::Client, RedisError> {
    let bad = |message: String| RedisError::Url { url: url.clone(), message };
    let info = url.expose().into_connection_info().map_err(|e| bad(e.to_string()))?;
    let mut settings = info.redis_settings().clone().set_protocol(protocol);
    if let Some(p) = &url.access.password {
        let password = p.resolve().map_err(|e| bad(format!("password: {e}")))?;
        settings = settings.set_password(password.expose());
    }
    let mut info = info.set_redis_settings(settings);
    let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
    if !tls && (url.access.tls_ca_file.is_some() || url.access.tls_insecure) {
        return Err(bad("tls_ca_file and tls_insecure need a rediss:// URL".into()));
    }
    if let redis::ConnectionAddr::TcpTls { host, port, .. } = info.addr().clone()
        && url.access.tls_insecure
    {
        info = info.set_addr(redis::ConnectionAddr::TcpTls { host, port, insecure: true, tls_params: None });
    }
    match &url.access.tls_ca_file {
        Some(ca) if !url.access.tls_insecure => {
            let pem = std::fs::read(ca).map_err(|e| bad(format!("tls_ca_file {}: {e}", ca.display())))?;
            let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(pem) };
            redis::Client::build_with_tls(info, certs).map_err(|e| bad(e.to_string()))
        }
        _ => redis::Client::open(info).map_err(|e| bad(e.to_string())),
    }
}

/// True when the server refused RESP3 (`HELLO` unknown: Redis older than 6).
fn resp3_refused(e: &redis::RedisError) -> bool {
    let m = e.to_string().to_ascii_lowercase();
    m.contains("noproto") || (m.contains("unknown command") && m.contains("hello"))
}

/// Connect, reconnecting in the background. RESP3 when the server has it;
/// `push` then receives pub/sub messages and subscriptions are restored after
/// a reconnect. A server older than 6 gets RESP2 (logged), where a
/// connection that needs `push` cannot be had: [`RedisError::NoPush`].
pub async fn connect(
    url: &RedisUrl,
    push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
) -> Result<ConnectionManager, RedisError> {
    let wants_push = push.is_some();
    match manager(client(url, ProtocolVersion::RESP3)?, push).await {
        Err(e) if resp3_refused(&e) => {
            if wants_push {
                return Err(RedisError::NoPush { url: url.clone() });
            }
            tracing::warn!(redis = %url, "the server does not speak RESP3 (Redis older than 6): using RESP2");
            manager(client(url, ProtocolVersion::RESP2)?, None)
                .await
                .map_err(|e| RedisError::Connect { url: url.clone(), message: e.to_string() })
        }
        Err(e) => Err(RedisError::Connect { url: url.clone(), message: e.to_string() }),
        Ok(m) => Ok(m),
    }
}

async fn manager(
    client: redis::Client,
    push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
) -> Result<ConnectionManager, redis::RedisError> {
    let mut config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    if let Some(tx) = push {
        config = config.set_push_sender(tx).set_automatic_resubscription();
    }
    ConnectionManager::new_with_config(client, config).await
}

/// [`connect`], retrying with backoff (a ceiling of 0.5 s doubling to 10 s,
/// full jitter above 0.5 s) until it works or `shutdown` is cancelled; each
/// failure is logged once per attempt.
pub async fn connect_with_retry(
    url: &RedisUrl,
    push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
    shutdown: &CancellationToken,
) -> Result<Option<ConnectionManager>, RedisError> {
    const FIRST: Duration = Duration::from_millis(500);
    let (mut ceiling, mut jitter) = (FIRST, Jitter::default());
    loop {
        let delay = jitter.spread(FIRST, ceiling);
        match connect(url, push.clone()).await {
            Ok(c) => return Ok(Some(c)),
            Err(e @ (RedisError::Url { .. } | RedisError::NoPush { .. })) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Redis unavailable; retrying");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(delay) => {}
        }
        ceiling = (ceiling * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let u = RedisUrl::new("redis://admin:s3cret@db.example:6379/0");
        assert_eq!(u.to_string(), "redis://admin:*****@db.example:6379/0");
        assert!(!format!("{u:?}").contains("s3cret"));
        assert_eq!(RedisUrl::new("redis://:s3cret@h:1").to_string(), "redis://:*****@h:1");
        assert_eq!(RedisUrl::new("redis://token@h:1").to_string(), "redis://*****@h:1");
        assert_eq!(RedisUrl::new("redis://127.0.0.1:6379").to_string(), "redis://127.0.0.1:6379");
        // Issue 13: a password in the query (unix sockets) was logged in full.
        let u = RedisUrl::new("redis+unix:///run/redis.sock?db=2&pass=s3cret");
        assert_eq!(u.to_string(), "redis+unix:///run/redis.sock?db=2&pass=*****");
        assert_eq!(RedisUrl::new("redis://h:1/0?password=s3cret").to_string(), "redis://h:1/0?password=*****");
        assert!(!format!("{:?}", RedisUrl::new("redis://u:p@h?pass=s3cret")).contains("s3cret"));
        // Parsed, not pattern-matched: an encoded '@' or ':' in the password,
        // TLS, a password that is also a query value elsewhere.
        assert_eq!(RedisUrl::new("rediss://u:p%40ss%3Aw@h:6380/1").to_string(), "rediss://u:*****@h:6380/1");
        let u = RedisUrl::new("unix:///tmp/r.sock?PASSWORD=s3cret&db=1").to_string();
        assert_eq!(u, "unix:///tmp/r.sock?PASSWORD=*****&db=1");
        // Unreadable: nothing after the scheme is shown.
        let u = RedisUrl::new("redis://u:s3cret@[::1").to_string();
        assert_eq!(u, "redis://(unreadable URL)");
        let with_file = RedisUrl::new("redis://h").with_access(RedisAccess {
            password: Some(SecretRef::Env { env: "SURELY_UNSET_TRAPTOR_PW".into() }),
            ..RedisAccess::default()
        });
        assert_eq!(with_file.to_string(), "redis://h");
        let e = client(&with_file, ProtocolVersion::RESP3).expect_err("unset variable");
        assert!(e.to_string().contains("SURELY_UNSET_TRAPTOR_PW"), "{e}");
        let e = client(
            &RedisUrl::new("redis://h").with_access(RedisAccess { tls_insecure: true, ..RedisAccess::default() }),
            ProtocolVersion::RESP3,
        )
        .expect_err("TLS options without rediss");
        assert!(e.to_string().contains("rediss://"), "{e}");
    }
}
