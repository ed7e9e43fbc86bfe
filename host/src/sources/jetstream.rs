//! The `jetstream` source: Bluesky's Jetstream over WebSocket.
//!
//! * Subscribes with `wantedCollections` / `wantedDids` and, with
//!   `compress = true`, receives zstd frames compressed with Jetstream's shared
//!   dictionary (compiled in, `host/data/`).
//! * Every event carries `time_us`; each batch records the highest as its
//!   checkpoint. The sink confirms a checkpoint once the batch is written; the
//!   confirmed cursor is persisted (a file, written atomically, or a Redis key)
//!   every second and at shutdown.
//! * On start and on every reconnect the subscription resumes from the
//!   confirmed cursor minus `cursor_rewind_secs`, so nothing confirmed is
//!   missed; events seen again within this run are dropped by (DID, time).
//! * Reconnects follow [`super::backoff`]; no event for `stall_timeout_secs`
//!   is a stall.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use super::backoff::{Connected, ConnectionStats, Ended, Failure, reconnect_loop};
use super::x_stream::Dedup;
use super::{BatchTx, Batching, SourceError, SourceSummary};
use crate::pipeline::Batcher;
use crate::post::jetstream::time_us;

/// Jetstream's zstd dictionary for `compress=true`.
pub const DICTIONARY: &[u8] = include_bytes!("../../data/jetstream-legacy-subscribe.zdict");

/// Where the cursor is kept.
#[derive(Debug, Clone)]
pub enum CursorStore {
    None,
    File(PathBuf),
    Redis { conn: redis::aio::ConnectionManager, key: String },
}

impl CursorStore {
    pub async fn load(&self) -> Option<u64> {
        match self {
            CursorStore::None => None,
            CursorStore::File(p) => std::fs::read_to_string(p).ok()?.trim().parse().ok(),
            CursorStore::Redis { conn, key } => {
                let mut c = conn.clone();
                redis::cmd("GET").arg(key).query_async::<Option<u64>>(&mut c).await.ok().flatten()
            }
        }
    }

    pub async fn save(&self, cursor: u64) -> Result<(), String> {
        match self {
            CursorStore::None => Ok(()),
            CursorStore::File(p) => {
                let tmp = p.with_extension("tmp");
                std::fs::write(&tmp, format!("{cursor}\n"))
                    .and_then(|()| std::fs::rename(&tmp, p))
                    .map_err(|e| format!("cannot write cursor file {}: {e}", p.display()))
            }
            CursorStore::Redis { conn, key } => {
                let mut c = conn.clone();
                redis::cmd("SET").arg(key).arg(cursor).query_async::<()>(&mut c).await.map_err(|e| e.to_string())
            }
        }
    }
}

/// Settings of the source.
#[derive(Debug, Clone)]
pub struct JetstreamOptions {
    pub url: String,
    pub wanted_collections: Vec<String>,
    pub wanted_dids: Vec<String>,
    pub compress: bool,
    pub rewind: Duration,
    pub stall_timeout: Duration,
}

/// The running source.
#[derive(Debug)]
pub struct Jetstream {
    pub opts: JetstreamOptions,
    pub cursor: CursorStore,
    pub batching: Batching,
    /// Highest `time_us` the sink has written.
    pub confirmed: Arc<AtomicU64>,
    pub stats: Arc<ConnectionStats>,
    pub backoff_scale: f64,
}

/// The subscribe URL for a cursor.
pub fn subscribe_url(opts: &JetstreamOptions, cursor: Option<u64>) -> String {
    let mut params: Vec<String> = Vec::new();
    for c in &opts.wanted_collections {
        params.push(format!("wantedCollections={}", urlencode(c)));
    }
    for d in &opts.wanted_dids {
        params.push(format!("wantedDids={}", urlencode(d)));
    }
    if opts.compress {
        params.push("compress=true".into());
    }
    if let Some(c) = cursor {
        params.push(format!("cursor={c}"));
    }
    let sep = if opts.url.contains('?') { '&' } else { '?' };
    if params.is_empty() { opts.url.clone() } else { format!("{}{sep}{}", opts.url, params.join("&")) }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Identity of an event for de-duplication: `(did, time_us)`.
fn event_key(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct K<'a> {
        #[serde(borrow)]
        did: std::borrow::Cow<'a, str>,
        time_us: u64,
    }
    let k: K<'_> = serde_json::from_slice(bytes).ok()?;
    Some(format!("{}:{}", k.did, k.time_us))
}

impl Jetstream {
    pub async fn run(self, out: BatchTx, shutdown: CancellationToken) -> Result<SourceSummary, SourceError> {
        let saved = self.cursor.load().await;
        if let Some(c) = saved {
            self.confirmed.fetch_max(c, Ordering::AcqRel);
            tracing::info!(cursor = c, "resuming Jetstream from the saved cursor");
        }
        // Persist the confirmed cursor every second and at the end.
        let persister = {
            let (store, confirmed, stop) = (self.cursor.clone(), self.confirmed.clone(), shutdown.clone());
            let done = CancellationToken::new();
            let done2 = done.clone();
            let task = tokio::spawn(async move {
                let mut last = 0;
                loop {
                    let end = tokio::select! {
                        () = done2.cancelled() => true,
                        () = tokio::time::sleep(Duration::from_secs(1)) => false,
                    };
                    let c = confirmed.load(Ordering::Acquire);
                    if c > last {
                        match store.save(c).await {
                            Ok(()) => last = c,
                            Err(e) => tracing::warn!(error = %e, "cannot save the Jetstream cursor"),
                        }
                    }
                    if end {
                        return;
                    }
                }
            });
            let _ = stop;
            (done, task)
        };
        let mut decompressor = if self.opts.compress {
            Some(
                zstd::bulk::Decompressor::with_dictionary(DICTIONARY)
                    .map_err(|e| SourceError::Task(format!("zstd dictionary: {e}")))?,
            )
        } else {
            None
        };
        let mut summary = SourceSummary::default();
        let mut dedup = Dedup::new(200_000);
        let mut batcher = Batcher::new(self.batching.max_records);
        let state = std::sync::Mutex::new((&mut summary, &mut dedup, &mut batcher, &mut decompressor));
        let this = &self;
        let stopped = reconnect_loop("jetstream", self.stats.clone(), shutdown.clone(), self.backoff_scale, |up| {
            let (out, shutdown) = (out.clone(), shutdown.clone());
            let state = &state;
            async move { this.stream_once(up, &out, &shutdown, state).await }
        })
        .await;
        let _ = state.into_inner();
        if let Some(b) = batcher.flush() {
            let _ = out.send(b).await;
        }
        // Let the sink confirm what is in flight, then save one last time.
        persister.0.cancel();
        let _ = persister.1.await;
        match stopped {
            Some(f) => Err(SourceError::Unauthorized(f.to_string())),
            None => Ok(summary),
        }
    }

    #[allow(clippy::type_complexity)]
    async fn stream_once(
        &self,
        up: Connected,
        out: &BatchTx,
        shutdown: &CancellationToken,
        state: &std::sync::Mutex<(
            &mut SourceSummary,
            &mut Dedup,
            &mut Batcher,
            &mut Option<zstd::bulk::Decompressor<'static>>,
        )>,
    ) -> Result<Ended, Failure> {
        let confirmed = self.confirmed.load(Ordering::Acquire);
        let cursor = (confirmed > 0).then(|| confirmed.saturating_sub(self.opts.rewind.as_micros() as u64));
        let url = subscribe_url(&self.opts, cursor);
        let connect = tokio_tungstenite::connect_async(url.as_str());
        let (mut ws, _) = tokio::select! {
            () = shutdown.cancelled() => return Ok(Ended::Shutdown),
            r = connect => r,
        }
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(resp) => {
                Failure::from_status(resp.status().as_u16(), format!("subscribe refused: {}", resp.status()))
            }
            other => Failure::Network(other.to_string()),
        })?;
        up.mark();
        tracing::info!(source = "jetstream", cursor = ?cursor, "connected");
        let mut flush_at = tokio::time::Instant::now() + self.batching.max_wait;
        let mut stall_at = tokio::time::Instant::now() + self.opts.stall_timeout;
        loop {
            let msg = tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = ws.close(None).await;
                    return Ok(Ended::Shutdown);
                }
                () = tokio::time::sleep_until(flush_at) => {
                    let full = state.lock().ok().and_then(|mut s| s.2.flush());
                    if let Some(b) = full && out.send(b).await.is_err() {
                        return Ok(Ended::Shutdown);
                    }
                    flush_at = tokio::time::Instant::now() + self.batching.max_wait;
                    continue;
                }
                m = tokio::time::timeout_at(stall_at, ws.next()) => m,
            };
            let msg = match msg {
                Err(_) => {
                    return Err(Failure::Network(format!(
                        "stalled: no event for {} s",
                        self.opts.stall_timeout.as_secs()
                    )));
                }
                Ok(None) => return Err(Failure::Network("connection closed by the server".into())),
                Ok(Some(Err(e))) => return Err(Failure::Network(e.to_string())),
                Ok(Some(Ok(m))) => m,
            };
            stall_at = tokio::time::Instant::now() + self.opts.stall_timeout;
            let bytes: Vec<u8> = match msg {
                WsMessage::Text(t) => t.as_bytes().to_vec(),
                WsMessage::Binary(b) => {
                    let mut guard = state.lock().map_err(|_| Failure::Network("state poisoned".into()))?;
                    match guard.3.as_mut() {
                        Some(d) => match d.decompress(&b, 4 << 20) {
                            Ok(v) => v,
                            Err(e) => {
                                tracing::warn!(error = %e, "undecodable compressed frame skipped");
                                continue;
                            }
                        },
                        None => b.to_vec(),
                    }
                }
                WsMessage::Close(_) => return Err(Failure::Network("closed by the server".into())),
                _ => continue,
            };
            let full = {
                let mut guard = state.lock().map_err(|_| Failure::Network("state poisoned".into()))?;
                let (summary, dedup, batcher, _) = &mut *guard;
                if let Some(k) = event_key(&bytes)
                    && !dedup.first(&k)
                {
                    continue;
                }
                summary.records += 1;
                summary.bytes += bytes.len() as u64;
                let n = summary.records;
                if let Some(t) = time_us(&bytes) {
                    batcher.checkpoint(t);
                }
                batcher.push(&bytes, n)
            };
            if let Some(b) = full
                && out.send(b).await.is_err()
            {
                return Ok(Ended::Shutdown);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_url_carries_filters_and_cursor() {
        let opts = JetstreamOptions {
            url: "ws://localhost:1/subscribe".into(),
            wanted_collections: vec!["app.bsky.feed.post".into()],
            wanted_dids: vec!["did:plc:a b".into()],
            compress: true,
            rewind: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(60),
        };
        assert_eq!(
            subscribe_url(&opts, Some(42)),
            "ws://localhost:1/subscribe?wantedCollections=app.bsky.feed.post&wantedDids=did:plc:a%20b&compress=true&cursor=42"
        );
    }

    #[test]
    fn the_dictionary_decompresses_what_it_compresses() {
        let data = br#"{"did":"did:plc:x","time_us":1,"kind":"commit"}"#;
        let mut c = zstd::bulk::Compressor::with_dictionary(3, DICTIONARY).expect("compressor");
        let z = c.compress(data).expect("compress");
        let mut d = zstd::bulk::Decompressor::with_dictionary(DICTIONARY).expect("decompressor");
        assert_eq!(d.decompress(&z, 1 << 20).expect("decompress"), data);
    }
}
