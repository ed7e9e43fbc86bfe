//! A fake Mastodon streaming API for tests (axum): server-sent events on
//! `/api/v1/streaming/public`, `/public/local` and `/hashtag`. Each
//! connection plays the next scripted [`SseSession`]: an HTTP status, events
//! at a pace, a cut in the middle of an event, then heartbeats (`:thump`) or
//! a close. Every request is recorded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::fake_http::{Served, serve, streamed};

/// One scripted connection.
#[derive(Debug, Clone)]
pub struct SseSession {
    pub status: u16,
    /// `(event, data)` pairs.
    pub events: Vec<(String, String)>,
    /// After this many events, send half of the next one and close.
    pub cut_after: Option<usize>,
    /// Heartbeats after the events (else close).
    pub heartbeat: bool,
}

impl SseSession {
    pub fn ok(events: Vec<(String, String)>) -> SseSession {
        SseSession { status: 200, events, cut_after: None, heartbeat: true }
    }
    pub fn status(status: u16) -> SseSession {
        SseSession { status, events: Vec::new(), cut_after: None, heartbeat: false }
    }
}

/// A recorded request: path with query, and the `Authorization` header.
#[derive(Debug, Clone)]
pub struct SseRequest {
    pub path_and_query: String,
    pub authorization: Option<String>,
}

#[derive(Debug, Default)]
pub struct SseState {
    pub sessions: VecDeque<SseSession>,
    pub requests: Vec<SseRequest>,
    /// Statuses the REST timelines serve (JSON), and the requests for them.
    pub timeline: Vec<String>,
    pub timeline_requests: Vec<SseRequest>,
}

type Shared = Arc<Mutex<SseState>>;

/// The running server.
#[derive(Debug)]
pub struct FakeMastodon {
    pub base: String,
    pub state: Shared,
    _server: Served,
}

impl FakeMastodon {
    pub fn start() -> FakeMastodon {
        let state: Shared = Arc::default();
        let app = Router::new()
            .route("/api/v1/streaming/public", get(stream))
            .route("/api/v1/streaming/public/local", get(stream))
            .route("/api/v1/streaming/hashtag", get(stream))
            .route("/api/v1/streaming/health", get(|| async { "OK" }))
            .route("/api/v1/timelines/public", get(timeline))
            .route("/api/v1/timelines/tag/{tag}", get(timeline))
            .with_state(state.clone());
        let server = serve(app);
        FakeMastodon { base: server.base.clone(), state, _server: server }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut SseState) -> T) -> T {
        let mut s = self.state.lock().expect("state");
        f(&mut s)
    }

    pub fn push_session(&self, s: SseSession) {
        self.with(|st| st.sessions.push_back(s));
    }
}

/// A REST timeline: the statuses after `min_id`, `limit` of them (the
/// oldest such), newest first as Mastodon lists them.
async fn timeline(AxState(state): AxState<Shared>, uri: Uri, headers: HeaderMap) -> Response {
    let q = uri.query().unwrap_or("");
    let param = |name: &str| -> Option<u64> {
        q.split('&').find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('='))).and_then(|v| v.parse().ok())
    };
    let (min_id, limit) = (param("min_id").unwrap_or(0), param("limit").unwrap_or(20) as usize);
    let mut s = state.lock().expect("state");
    s.timeline_requests.push(SseRequest {
        path_and_query: uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default(),
        authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned),
    });
    let mut after: Vec<(u64, serde_json::Value)> = s
        .timeline
        .iter()
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        .filter_map(|v| Some((v["id"].as_str()?.parse::<u64>().ok()?, v)))
        .filter(|(id, _)| *id > min_id)
        .collect();
    after.sort_by_key(|(id, _)| *id);
    after.truncate(limit);
    after.reverse();
    axum::Json(after.into_iter().map(|(_, v)| v).collect::<Vec<_>>()).into_response()
}

async fn stream(AxState(state): AxState<Shared>, uri: Uri, headers: HeaderMap) -> Response {
    let session = {
        let mut s = state.lock().expect("state");
        s.requests.push(SseRequest {
            path_and_query: uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default(),
            authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned),
        });
        s.sessions.pop_front().unwrap_or_else(|| SseSession::ok(Vec::new()))
    };
    if session.status != 200 {
        let code = StatusCode::from_u16(session.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (code, r#"{"error":"The access token is invalid"}"#).into_response();
    }
    let (tx, response) = streamed("text/event-stream");
    tokio::spawn(async move {
        let _ = tx.send(Ok(bytes::Bytes::from_static(b":)\n"))).await;
        for (i, (event, data)) in session.events.iter().enumerate() {
            let frame = format!("event: {event}\ndata: {data}\n\n").into_bytes();
            if session.cut_after == Some(i) {
                let _ = tx.send(Ok(bytes::Bytes::from(frame[..frame.len() / 2].to_vec()))).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                return; // dropping tx closes the connection mid-event
            }
            if tx.send(Ok(bytes::Bytes::from(frame))).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if !session.heartbeat {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if tx.send(Ok(bytes::Bytes::from_static(b":thump\n"))).await.is_err() {
                return;
            }
        }
    });
    response
}
