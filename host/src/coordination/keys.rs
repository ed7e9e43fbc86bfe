//! The API-key pool: credentials for many connections, each claimed by one
//! collector at a time with a lease (`SET traptor-apikey-lease:<name> <owner>
//! NX PX <ms>`), renewed with the heartbeat and released on shutdown. Renewal
//! and release check the owner (a Lua script), so a collector that lost its
//! lease while partitioned never extends or deletes someone else's.
//!
//! Keys come from a Redis hash (field = key name, value = a JSON object of
//! credential fields, named as the pipeline keys they replace:
//! `bearer_token`; `consumer_key`, `consumer_secret`, `access_token`,
//! `access_token_secret`; `access_token`) or a JSON-lines file of the same
//! objects with a `name`. Values are [`Secret`]s: never printed.
//!
//! A key the API refuses (401/403) is marked bad (`traptor-apikey-bad:<name>`
//! = `{"reason", "at"}`) and never claimed again until cleared
//! (`traptor-host keys clear-bad`). [`run_pool`] holds this collector's key:
//! claims, renews, hands it to the source, and moves to the next free key
//! when the source reports a refusal.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use super::CoordinationError;
use crate::key_pool::{KeyPoolEnd, PooledKey};
use crate::secret::Secret;
use crate::telemetry::Health;

/// Prefix of lease keys.
pub const LEASE_PREFIX: &str = "traptor-apikey-lease:";
/// Prefix of bad-key markers.
pub const BAD_PREFIX: &str = "traptor-apikey-bad:";

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

/// Mark `name` bad: not handed out again until cleared.
pub async fn mark_bad(conn: &ConnectionManager, name: &str, reason: &str) -> Result<(), CoordinationError> {
    let mut c = conn.clone();
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let v = serde_json::json!({ "reason": reason, "at": at }).to_string();
    let () = c.set(format!("{BAD_PREFIX}{name}"), v).await?;
    Ok(())
}

/// Why `name` is bad and since when, if it is.
pub async fn bad_mark(conn: &mut ConnectionManager, name: &str) -> Result<Option<(String, String)>, CoordinationError> {
    let v: Option<String> = conn.get(format!("{BAD_PREFIX}{name}")).await?;
    Ok(v.map(|v| {
        let j: serde_json::Value = serde_json::from_str(&v).unwrap_or_default();
        (j["reason"].as_str().unwrap_or("?").to_owned(), j["at"].as_str().unwrap_or("?").to_owned())
    }))
}

/// Claim the first free key of `source` that is not marked bad for
/// `owner`, or `None` if all are held or bad.
pub async fn claim(
    conn: &ConnectionManager,
    source: &KeySource,
    owner: &str,
    ttl: Duration,
) -> Result<Option<Lease>, CoordinationError> {
    let mut c = conn.clone();
    for key in load(&mut c, source).await? {
        if bad_mark(&mut c, &key.name).await?.is_some() {
            continue;
        }
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

/// The credential fields a pool key may have (the pipeline keys they replace).
pub const CREDENTIAL_FIELDS: [&str; 5] =
    ["bearer_token", "consumer_key", "consumer_secret", "access_token", "access_token_secret"];

/// Check a key's JSON for `keys add`: an object of non-empty strings, each
/// field a known credential (a typo would otherwise surface as a 401 later).
pub fn check_key_json(json: &str) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("not valid JSON: {e}"))?;
    let obj = v.as_object().ok_or("expected a JSON object of credential fields")?;
    if obj.is_empty() {
        return Err(format!("no credential fields; expected some of {}", CREDENTIAL_FIELDS.join(", ")));
    }
    for (k, v) in obj {
        if !CREDENTIAL_FIELDS.contains(&k.as_str()) {
            return Err(format!("unknown field {k:?}; expected some of {}", CREDENTIAL_FIELDS.join(", ")));
        }
        if v.as_str().is_none_or(str::is_empty) {
            return Err(format!("field {k:?} must be a non-empty string"));
        }
    }
    Ok(())
}

/// A pool key as `keys list` shows it: never its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    Free,
    /// Held by `<type>:<id>:<pid>`.
    Leased(String),
    /// Refused by the API: why and when.
    Bad {
        reason: String,
        at: String,
    },
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyState::Free => f.write_str("free"),
            KeyState::Leased(owner) => match owner.rsplit_once(':') {
                Some((who, pid)) => write!(f, "leased {who} (pid {pid})"),
                None => write!(f, "leased {owner}"),
            },
            KeyState::Bad { reason, at } => write!(f, "bad {reason} {at}"),
        }
    }
}

/// Every key of the hash with its state and the fields it has (names only).
pub async fn list_keys(
    conn: &mut ConnectionManager,
    hash: &str,
) -> Result<Vec<(String, KeyState, Vec<String>)>, CoordinationError> {
    let all: BTreeMap<String, String> = conn.hgetall(hash).await?;
    let mut out = Vec::new();
    for (name, json) in all {
        let fields = match parse_key(&name, &json, hash) {
            Ok(k) => k.fields.into_keys().collect(),
            Err(_) => vec!["(not a JSON object)".to_owned()],
        };
        let state = match bad_mark(conn, &name).await? {
            Some((reason, at)) => KeyState::Bad { reason, at },
            None => match conn.get::<_, Option<String>>(format!("{LEASE_PREFIX}{name}")).await? {
                Some(owner) => KeyState::Leased(owner),
                None => KeyState::Free,
            },
        };
        out.push((name, state, fields));
    }
    Ok(out)
}

/// Clear the bad mark of `name`, or of every key of the hash; returns how
/// many were cleared.
pub async fn clear_bad(conn: &mut ConnectionManager, hash: &str, name: Option<&str>) -> Result<u64, CoordinationError> {
    let names: Vec<String> = match name {
        Some(n) => vec![n.to_owned()],
        None => conn.hkeys(hash).await?,
    };
    let mut n = 0;
    for name in names {
        let removed: u64 = conn.del(format!("{BAD_PREFIX}{name}")).await?;
        n += removed;
    }
    Ok(n)
}

/// Add key `name` to the pool's hash, or replace it: its credentials as
/// [`check_key_json`] accepts them, stored compact.
pub async fn add_key(
    conn: &mut ConnectionManager,
    hash: &str,
    name: &str,
    json: &str,
) -> Result<(), CoordinationError> {
    check_key_json(json).map_err(|e| CoordinationError::Invalid(format!("key {name:?}: {e}")))?;
    let compact = serde_json::from_str::<serde_json::Value>(json)
        .map_err(|e| CoordinationError::Invalid(format!("key {name:?}: not valid JSON: {e}")))?
        .to_string();
    conn.hset::<_, _, _, ()>(hash, name, compact).await?;
    Ok(())
}

/// Remove key `name` from the pool and its bad mark; false when the pool has
/// no such key. A collector holding it keeps it until it restarts or the key
/// is refused.
pub async fn remove_key(conn: &mut ConnectionManager, hash: &str, name: &str) -> Result<bool, CoordinationError> {
    let removed: u64 = conn.hdel(hash, name).await?;
    if removed == 0 {
        return Ok(false);
    }
    clear_bad(conn, hash, Some(name)).await?;
    Ok(true)
}

/// The collector's health problem while it holds no key.
pub const WAITING_FOR_KEY: &str = "no API key: every key of the pool is leased or bad";

/// How the pool task runs.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub source: KeySource,
    /// `<type>:<id>:<pid>`: who holds a lease.
    pub owner: String,
    pub ttl: Duration,
    /// Renew this often (the heartbeat interval).
    pub renew_every: Duration,
}

/// Hold one key of the pool for this collector until `shutdown`: claim one
/// (waiting, with the heartbeat withheld, while every key is leased or bad),
/// publish it to the source, renew it, and when the source reports it
/// refused, mark it bad, release it and claim the next. The key is released
/// on shutdown.
pub async fn run_pool(
    conn: ConnectionManager,
    settings: PoolSettings,
    mut end: KeyPoolEnd,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let mut held: Option<Lease> = None;
    let (mut refusals_open, mut serial) = (true, 0);
    let mut tick = tokio::time::interval(settings.renew_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if held.is_none() {
            let Some(lease) = claim_waiting(&conn, &settings, &health, &shutdown).await else { break };
            serial += 1;
            end.current.send_replace(Some(Arc::new(PooledKey {
                name: lease.key.name.clone(),
                fields: lease.key.fields.clone(),
                serial,
            })));
            held = Some(lease);
            tick.reset();
        }
        let Some(lease) = held.as_ref() else { continue };
        tokio::select! {
            () = shutdown.cancelled() => break,
            r = end.refused.recv(), if refusals_open => match r {
                Some(refusal) if refusal.name == lease.name() => {
                    tracing::warn!(api_key = %refusal.name, reason = %refusal.reason, "API key refused; marked bad, taking the next free key");
                    if let Err(e) = mark_bad(&conn, &refusal.name, &refusal.reason).await {
                        tracing::warn!(error = %e, "cannot mark the API key bad");
                    }
                    end.current.send_replace(None);
                    release(lease).await;
                    held = None;
                }
                Some(_) => {} // about a key given up already
                None => refusals_open = false,
            },
            _ = tick.tick() => match lease.renew().await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(api_key = %lease.name(), "lost the lease on the API key (expired while unreachable?); claiming one again");
                    end.current.send_replace(None);
                    held = None;
                }
                Err(e) => tracing::debug!(error = %e, "lease renewal failed"),
            },
        }
    }
    if let Some(l) = &held {
        release(l).await;
    }
}

async fn release(l: &Lease) {
    match l.release().await {
        Ok(()) => tracing::info!(api_key = %l.name(), "API key released"),
        Err(e) => tracing::warn!(error = %e, "cannot release the API key lease; it expires by itself"),
    }
}

/// Claim a key, retrying every 2 s; `None` on shutdown. While none is free
/// the collector is unhealthy (heartbeat withheld).
async fn claim_waiting(
    conn: &ConnectionManager,
    s: &PoolSettings,
    health: &Health,
    shutdown: &CancellationToken,
) -> Option<Lease> {
    let (mut announced, mut last_error) = (false, String::new());
    loop {
        match claim(conn, &s.source, &s.owner, s.ttl).await {
            Ok(Some(l)) => {
                tracing::info!(api_key = %l.name(), "claimed an API key");
                if health.problem().as_deref() == Some(WAITING_FOR_KEY) {
                    health.set_healthy();
                }
                return Some(l);
            }
            Ok(None) => {
                if !announced {
                    tracing::warn!("every API key is leased by another collector or marked bad; waiting for one");
                    announced = true;
                }
                health.set_unhealthy(WAITING_FOR_KEY);
            }
            Err(e) => {
                let e = e.to_string();
                if e != last_error {
                    tracing::warn!(error = %e, "cannot claim an API key yet; retrying every 2 s");
                }
                last_error = e;
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}
