//! The one way to reach Redis, shared by the rule store, coordination and the
//! command line: a URL type that never shows its password, and a connection
//! manager that reconnects in the background (RESP3, so pub/sub messages
//! arrive on the same connection and subscriptions are restored).
//!
//! Depends on nothing else in the crate.

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion};
use tokio_util::sync::CancellationToken;

use crate::jitter::Jitter;

/// The default server (`--redis`, `TRAPTOR_REDIS_URL`).
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A Redis URL whose password never appears in logs, errors or `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn new(url: impl Into<String>) -> RedisUrl {
        RedisUrl(url.into())
    }
    /// The real URL, for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // scheme://[user[:password]@]host…[?…pass=…] → passwords replaced.
        let (base, query) = match self.0.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (self.0.as_str(), None),
        };
        match (base.find("://"), base.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let creds = &base[scheme + 3..at];
                let user = creds.split(':').next().unwrap_or("");
                if creds.contains(':') {
                    write!(f, "{}{user}:*****{}", &base[..scheme + 3], &base[at..])?;
                } else {
                    write!(f, "{}*****{}", &base[..scheme + 3], &base[at..])?;
                }
            }
            _ => f.write_str(base)?,
        }
        let Some(query) = query else { return Ok(()) };
        f.write_str("?")?;
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                f.write_str("&")?;
            }
            match pair.split_once('=') {
                // `redis+unix:///run/redis.sock?pass=…` and the like.
                Some((k, _)) if ["pass", "password"].contains(&k.to_ascii_lowercase().as_str()) => {
                    write!(f, "{k}=*****")?;
                }
                _ => f.write_str(pair)?,
            }
        }
        Ok(())
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
    /// The URL cannot be used (a configuration error).
    #[error("invalid Redis URL {url}: {message}")]
    Url { url: RedisUrl, message: String },
    #[error("cannot reach Redis at {url}: {message}")]
    Connect { url: RedisUrl, message: String },
    #[error("Redis command failed: {0}")]
    Command(String),
}

impl From<redis::RedisError> for RedisError {
    fn from(e: redis::RedisError) -> Self {
        RedisError::Command(e.to_string())
    }
}

/// Connect (RESP3, reconnecting in the background). `push` receives pub/sub
/// messages; subscriptions are restored after a reconnect.
pub async fn connect(
    url: &RedisUrl,
    push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
) -> Result<ConnectionManager, RedisError> {
    let info = url
        .expose()
        .into_connection_info()
        .map_err(|e| RedisError::Url { url: url.clone(), message: e.to_string() })?;
    let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
    let info = info.set_redis_settings(settings);
    let client = redis::Client::open(info).map_err(|e| RedisError::Url { url: url.clone(), message: e.to_string() })?;
    let mut config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    if let Some(tx) = push {
        config = config.set_push_sender(tx).set_automatic_resubscription();
    }
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| RedisError::Connect { url: url.clone(), message: e.to_string() })
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
            Err(e @ RedisError::Url { .. }) => return Err(e),
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
    }
}
