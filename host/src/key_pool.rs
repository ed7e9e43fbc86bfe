//! The API-key pool as a source sees it: the key this collector holds now,
//! and a way to say "this key was refused".
//!
//! The coordination side (`coordination::keys::run_pool`) claims a key from
//! the Redis pool and publishes it here; a live source waits for one before it
//! connects, takes its credential fields (`bearer_token`, the OAuth
//! quadruple, `access_token`), and on 401/403 reports the key refused: the
//! pool marks it bad, releases it and publishes the next free one.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::secret::Secret;

/// One key: its name in the pool and its credential fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PooledKey {
    pub name: String,
    pub fields: BTreeMap<String, Secret>,
    /// Counts the pool's claims: a key claimed again after a refusal (its
    /// bad mark cleared) is a new claim.
    pub serial: u64,
}

impl PooledKey {
    /// A credential field; the error names the key and the field, never a value.
    pub fn field(&self, field: &str) -> Result<Secret, String> {
        self.fields.get(field).cloned().ok_or_else(|| format!("API key {:?} has no {field:?} field", self.name))
    }
}

/// A key the API refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub name: String,
    pub reason: String,
}

/// The source's end.
#[derive(Debug, Clone)]
pub struct KeyPoolHandle {
    current: watch::Receiver<Option<Arc<PooledKey>>>,
    refused: mpsc::UnboundedSender<Refusal>,
}

/// The coordination end: publish keys, receive refusals.
#[derive(Debug)]
pub struct KeyPoolEnd {
    pub current: watch::Sender<Option<Arc<PooledKey>>>,
    pub refused: mpsc::UnboundedReceiver<Refusal>,
}

/// A connected pair.
pub fn channel() -> (KeyPoolHandle, KeyPoolEnd) {
    let (tx, rx) = watch::channel(None);
    let (rtx, rrx) = mpsc::unbounded_channel();
    (KeyPoolHandle { current: rx, refused: rtx }, KeyPoolEnd { current: tx, refused: rrx })
}

impl KeyPoolHandle {
    /// Wait for a key claimed after claim `after` (the refused one; `None`:
    /// any); `None` on shutdown or when the pool has gone away.
    pub async fn next(&mut self, after: Option<u64>, shutdown: &CancellationToken) -> Option<Arc<PooledKey>> {
        let wanted = |v: &Option<Arc<PooledKey>>| v.as_ref().is_some_and(|k| after.is_none_or(|a| k.serial > a));
        tokio::select! {
            () = shutdown.cancelled() => None,
            r = self.current.wait_for(wanted) => r.ok().and_then(|v| v.clone()),
        }
    }

    /// The API refused `name`: the pool marks it bad and moves on.
    pub fn refuse(&self, name: &str, reason: impl Into<String>) {
        let _ = self.refused.send(Refusal { name: name.to_owned(), reason: reason.into() });
    }
}

/// A secret that can be replaced while clones of it are in use (a token
/// shared by a stream and its rule-sync task).
#[derive(Debug, Clone)]
pub struct SecretCell(Arc<RwLock<Secret>>);

impl SecretCell {
    pub fn new(s: Secret) -> SecretCell {
        SecretCell(Arc::new(RwLock::new(s)))
    }
    pub fn get(&self) -> Secret {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
    pub fn set(&self, s: Secret) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = s;
    }
}

/// The name of the pool key a source connects with now (never the secret):
/// the source sets it, the workers write it in `provenance.key`.
#[derive(Debug, Default)]
pub struct KeyInUse(RwLock<Option<Arc<str>>>);

impl KeyInUse {
    pub fn set(&self, name: &str) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(name.into());
    }
    pub fn get(&self) -> Option<Arc<str>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, serial: u64) -> Option<Arc<PooledKey>> {
        Some(Arc::new(PooledKey { name: name.into(), fields: BTreeMap::new(), serial }))
    }

    #[tokio::test]
    async fn next_skips_the_refused_key_and_stops_on_shutdown() {
        let (mut h, mut end) = channel();
        let stop = CancellationToken::new();
        end.current.send_replace(key("a", 1));
        assert_eq!(h.next(None, &stop).await.map(|k| k.name.clone()), Some("a".into()));
        h.refuse("a", "HTTP 401");
        assert_eq!(end.refused.recv().await, Some(Refusal { name: "a".into(), reason: "HTTP 401".into() }));
        let waiter = tokio::spawn({
            let (mut h, stop) = (h.clone(), stop.clone());
            async move { h.next(Some(1), &stop).await.map(|k| (k.name.clone(), k.serial)) }
        });
        tokio::task::yield_now().await;
        // The same key claimed again (its mark cleared) is a new claim.
        end.current.send_replace(key("a", 2));
        assert_eq!(waiter.await.expect("join"), Some(("a".into(), 2)));
        stop.cancel();
        assert_eq!(h.next(Some(2), &stop).await, None);
        let e = PooledKey { name: "k".into(), fields: BTreeMap::new(), serial: 0 }
            .field("bearer_token")
            .expect_err("missing");
        assert!(e.contains("\"k\"") && e.contains("bearer_token"));
    }
}
