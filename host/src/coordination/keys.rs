//! The API-key pool: credentials for many connections, each claimed by one
//! collector at a time with a lease (`SET traptor-apikey-lease:<name> <owner>
//! NX PX <ms>`), renewed with the heartbeat and released on shutdown. Renewal
//! and release check the owner (a Lua script), so a collector that lost its
//! lease while partitioned never extends or deletes someone else's.
//!
//! Keys come from a Redis hash (field = key name, value = a JSON object of
//! credential fields) or a JSON-lines file of the same objects with a `name`.
//! Values are [`Secret`]s: never printed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use super::CoordinationError;
use crate::secret::Secret;

/// Prefix of lease keys.
pub const LEASE_PREFIX: &str = "traptor-apikey-lease:";

/// One set of credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub name: String,
    pub fields: BTreeMap<String, Secret>,
}

/// Where the pool's keys are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    RedisHash(String),
    File(PathBuf),
}

fn parse_key(name: &str, json: &str, origin: &str) -> Result<ApiKey, CoordinationError> {
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| CoordinationError::Invalid(format!("{origin}: API key {name:?} is not a JSON object: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| CoordinationError::Invalid(format!("{origin}: API key {name:?} is not a JSON object")))?;
    let fields = obj
        .iter()
        .filter(|(k, _)| k.as_str() != "name")
        .map(|(k, v)| (k.clone(), Secret::new(v.as_str().map_or_else(|| v.to_string(), str::to_owned))))
        .collect();
    Ok(ApiKey { name: name.to_owned(), fields })
}

/// All keys of a source, in name order.
pub async fn load(conn: &mut ConnectionManager, source: &KeySource) -> Result<Vec<ApiKey>, CoordinationError> {
    let mut keys = Vec::new();
    match source {
        KeySource::RedisHash(hash) => {
            let all: BTreeMap<String, String> = conn.hgetall(hash).await?;
            for (name, json) in all {
                keys.push(parse_key(&name, &json, hash)?);
            }
        }
        KeySource::File(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CoordinationError::Invalid(format!("cannot read API keys {}: {e}", path.display())))?;
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let origin = format!("{}:{}", path.display(), i + 1);
                let v: serde_json::Value = serde_json::from_str(line)
                    .map_err(|e| CoordinationError::Invalid(format!("{origin}: not valid JSON: {e}")))?;
                let name = v["name"]
                    .as_str()
                    .ok_or_else(|| CoordinationError::Invalid(format!("{origin}: an API key needs a \"name\"")))?;
                keys.push(parse_key(name, line, &origin)?);
            }
            keys.sort_by(|a, b| a.name.cmp(&b.name));
        }
    }
    Ok(keys)
}

const RENEW: &str =
    r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
const RELEASE: &str =
    r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// A held lease on one API key.
#[derive(Clone)]
pub struct Lease {
    conn: ConnectionManager,
    key: ApiKey,
    owner: String,
    ttl: Duration,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("key", &self.key.name).field("owner", &self.owner).finish_non_exhaustive()
    }
}

impl Lease {
    pub fn name(&self) -> &str {
        &self.key.name
    }
    pub fn key(&self) -> &ApiKey {
        &self.key
    }

    /// Extend the lease; false if it is no longer ours.
    pub async fn renew(&self) -> Result<bool, CoordinationError> {
        let mut c = self.conn.clone();
        let n: i64 = redis::Script::new(RENEW)
            .key(format!("{LEASE_PREFIX}{}", self.key.name))
            .arg(&self.owner)
            .arg(self.ttl.as_millis() as u64)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// Give the key back (only if still ours).
    pub async fn release(&self) -> Result<(), CoordinationError> {
        let mut c = self.conn.clone();
        let _: i64 = redis::Script::new(RELEASE)
            .key(format!("{LEASE_PREFIX}{}", self.key.name))
            .arg(&self.owner)
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }
}

/// Claim the first free key of `source` for `owner`, or `None` if all are held.
pub async fn claim(
    conn: &ConnectionManager,
    source: &KeySource,
    owner: &str,
    ttl: Duration,
) -> Result<Option<Lease>, CoordinationError> {
    let mut c = conn.clone();
    for key in load(&mut c, source).await? {
        let got: Option<String> = redis::cmd("SET")
            .arg(format!("{LEASE_PREFIX}{}", key.name))
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut c)
            .await?;
        if got.is_some() {
            return Ok(Some(Lease { conn: conn.clone(), key, owner: owner.to_owned(), ttl }));
        }
    }
    Ok(None)
}
