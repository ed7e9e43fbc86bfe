//! A fake Jetstream: a WebSocket server that plays recorded events from a
//! cursor, optionally zstd-compressed with Jetstream's dictionary, and can
//! "crash" after a number of events. Records each subscribe URL.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use crate::fake_http::{Served, on_loopback};

/// The server's script and what it saw.
#[derive(Debug, Default)]
pub struct JetState {
    /// Events (JSON lines), in time order.
    pub events: Vec<String>,
    /// Close the connection after sending this many events (once per entry).
    pub crash_after: Vec<usize>,
    /// Stop sending (but stay connected) after this many events (once per entry).
    pub hold_after: Vec<usize>,
    /// Subscribe URLs (path + query) received.
    pub subscribes: Vec<String>,
    pub dictionary: Vec<u8>,
}

#[derive(Debug)]
pub struct FakeJetstream {
    pub url: String,
    pub state: Arc<Mutex<JetState>>,
    _server: Served,
}

fn query_param(q: &str, key: &str) -> Vec<String> {
    q.split('&').filter_map(|kv| kv.split_once('=')).filter(|(k, _)| *k == key).map(|(_, v)| v.to_owned()).collect()
}

impl FakeJetstream {
    pub fn start(events: Vec<String>, dictionary: Vec<u8>) -> FakeJetstream {
        let state = Arc::new(Mutex::new(JetState { events, dictionary, ..JetState::default() }));
        let st = state.clone();
        let server = on_loopback(|listener, mut rx| async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = &mut rx => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let uri = Arc::new(Mutex::new(String::new()));
                    let u2 = uri.clone();
                    #[allow(clippy::result_large_err)]
                    let cb = move |req: &Request, resp: Response| {
                        if let Ok(mut u) = u2.lock() {
                            *u = req.uri().to_string();
                        }
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, cb).await else { return };
                    let uri = uri.lock().map(|u| u.clone()).unwrap_or_default();
                    let q = uri.split_once('?').map(|(_, q)| q.to_owned()).unwrap_or_default();
                    let cursor: u64 = query_param(&q, "cursor").first().and_then(|c| c.parse().ok()).unwrap_or(0);
                    let compress = query_param(&q, "compress").first().is_some_and(|v| v == "true");
                    let (events, crash, dict) = {
                        let mut s = st.lock().expect("state");
                        s.subscribes.push(uri.clone());
                        let crash = if s.crash_after.is_empty() { None } else { Some(s.crash_after.remove(0)) };
                        let hold = if s.hold_after.is_empty() { None } else { Some(s.hold_after.remove(0)) };
                        (s.events.clone(), (crash, hold), s.dictionary.clone())
                    };
                    let (crash, hold) = crash;
                    let mut comp = zstd::bulk::Compressor::with_dictionary(3, &dict).ok();
                    let mut sent = 0;
                    for e in events {
                        let t: u64 = serde_json::from_str::<serde_json::Value>(&e)
                            .ok()
                            .and_then(|v| v["time_us"].as_u64())
                            .unwrap_or(0);
                        if t < cursor {
                            continue;
                        }
                        if crash == Some(sent) {
                            return; // drop the socket without a close frame
                        }
                        if hold == Some(sent) {
                            break;
                        }
                        let msg = match (&mut comp, compress) {
                            (Some(c), true) => Message::Binary(c.compress(e.as_bytes()).unwrap_or_default().into()),
                            _ => Message::Text(e.into()),
                        };
                        if ws.send(msg).await.is_err() {
                            return;
                        }
                        sent += 1;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    // Stay connected, as a live stream would, until the client leaves.
                    while let Some(Ok(m)) = ws.next().await {
                        if m.is_close() {
                            return;
                        }
                    }
                });
            }
        });
        FakeJetstream { url: format!("ws://{}/subscribe", server.addr), state, _server: server }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut JetState) -> T) -> T {
        f(&mut self.state.lock().expect("state"))
    }
}
