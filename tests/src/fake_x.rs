//! A fake X / Twitter streaming API for tests (axum): v2 rules endpoints,
//! v2 filtered stream, v1.1 `statuses/filter`. Each stream connection plays
//! the next scripted [`Session`]: an HTTP status, lines at a pace, keep-alives,
//! a mid-message cut, a stall. Every request is recorded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State as AxState};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::fake_http::{Served, serve, streamed};

/// What happens after a session's lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Keep the connection open with keep-alives.
    KeepAlive,
    /// Close the connection.
    Close,
    /// Keep it open and send nothing at all.
    Stall,
}

/// One scripted stream connection.
#[derive(Debug, Clone)]
pub struct Session {
    pub status: u16,
    pub error_body: String,
    pub lines: Vec<String>,
    pub line_delay: Duration,
    /// After sending this many lines, send half of the next and close.
    pub cut_after: Option<usize>,
    pub after: After,
    pub keepalive: Duration,
    /// v1.1 `delimited=length` framing.
    pub length_delimited: bool,
}

impl Session {
    pub fn ok(lines: Vec<String>) -> Session {
        Session {
            status: 200,
            error_body: String::new(),
            lines,
            line_delay: Duration::from_millis(1),
            cut_after: None,
            after: After::KeepAlive,
            keepalive: Duration::from_millis(200),
            length_delimited: false,
        }
    }
    pub fn status(status: u16, title: &str) -> Session {
        let mut s = Session::ok(Vec::new());
        s.status = status;
        s.error_body =
            format!(r#"{{"title":"{title}","detail":"{title} (fake)","type":"about:blank","status":{status}}}"#);
        s
    }
}

/// A recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: String,
    pub authorization: Option<String>,
    pub at: Instant,
}

/// A rule as the fake API stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRule {
    pub id: String,
    pub value: String,
    pub tag: Option<String>,
}

#[derive(Debug, Default)]
pub struct FakeState {
    pub rules: Vec<FakeRule>,
    next_id: u64,
    /// Rule values containing one of these are refused (dry run and real).
    pub reject_containing: Vec<String>,
    pub sessions: VecDeque<Session>,
    pub requests: Vec<Recorded>,
    /// Every request answers 401 (bad credentials).
    pub unauthorized: bool,
    /// When set, only `Authorization: Bearer <this>` is accepted; any other
    /// answers 401 (a pool with one good key).
    pub accept_bearer: Option<String>,
    /// When each session had handed its last line to the connection.
    pub sessions_written: Vec<Instant>,
    /// A continuous stream (once the scripted sessions are used up).
    pub firehose: Option<Firehose>,
}

/// A stand-in for X's continuous filtered stream: post `k` is sent at
/// `start + k / per_sec` whether or not a collector is connected (as the
/// real one is); every open connection gets the posts of its time, and one
/// that asks `backfill_minutes=N` first gets those of the last N minutes
/// (each with `created_at` = its send time).
#[derive(Debug, Clone)]
pub struct Firehose {
    pub start: Instant,
    start_wall: std::time::SystemTime,
    pub per_sec: f64,
    /// Stopped: no post after this many.
    pub stop_after: Option<u64>,
    /// Bumped by [`FakeX::drop_connections`]: open connections close.
    pub generation: u64,
}

impl Firehose {
    /// When post `k` is sent.
    pub fn at(&self, k: u64) -> Instant {
        self.start + Duration::from_secs_f64(k as f64 / self.per_sec)
    }

    /// How many posts were sent by `now`.
    pub fn sent_by(&self, now: Instant) -> u64 {
        let n = (now.saturating_duration_since(self.start).as_secs_f64() * self.per_sec).floor() as u64 + 1;
        self.stop_after.map_or(n, |s| n.min(s))
    }

    /// The id of post `k`.
    pub fn id(k: u64) -> String {
        format!("{}", 5_000_000 + k)
    }

    fn line(&self, k: u64, rule: &Option<(String, Option<String>)>) -> String {
        let sent = self.start_wall + Duration::from_secs_f64(k as f64 / self.per_sec);
        let created = chrono::DateTime::<chrono::Utc>::from(sent).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let rules = rule.iter().map(|(id, tag)| serde_json::json!({"id": id, "tag": tag})).collect::<Vec<_>>();
        serde_json::json!({"data": {"id": Firehose::id(k), "text": format!("fleet post {k}"), "created_at": created,
                                    "author_id": "12"}, "matching_rules": rules})
        .to_string()
    }
}

impl FakeState {
    pub fn stream_connects(&self) -> Vec<&Recorded> {
        self.requests
            .iter()
            .filter(|r| r.path.ends_with("/search/stream") || r.path.ends_with("statuses/filter.json"))
            .collect()
    }
    pub fn rule_requests(&self) -> Vec<&Recorded> {
        self.requests.iter().filter(|r| r.path.ends_with("/stream/rules")).collect()
    }
}

type Shared = Arc<Mutex<FakeState>>;

/// The running server.
#[derive(Debug)]
pub struct FakeX {
    pub base: String,
    pub state: Shared,
    _server: Served,
}

impl FakeX {
    pub fn start() -> FakeX {
        let state: Shared = Arc::default();
        let app = Router::new()
            .route("/2/tweets/search/stream/rules", get(list_rules).post(change_rules))
            .route("/2/tweets/search/stream", get(stream))
            .route("/1.1/statuses/filter.json", post(stream))
            .with_state(state.clone());
        let server = serve(app);
        FakeX { base: server.base.clone(), state, _server: server }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        let mut s = self.state.lock().expect("state");
        f(&mut s)
    }

    /// Start the continuous stream at `per_sec` posts a second.
    pub fn start_firehose(&self, per_sec: f64) {
        let f = Firehose {
            start: Instant::now(),
            start_wall: std::time::SystemTime::now(),
            per_sec,
            stop_after: None,
            generation: 0,
        };
        self.with(|st| st.firehose = Some(f));
    }

    /// Close every open firehose connection (the posts keep being sent).
    pub fn drop_connections(&self) {
        self.with(|st| {
            if let Some(f) = st.firehose.as_mut() {
                f.generation += 1;
            }
        });
    }

    /// Stop it; returns how many posts it sent.
    pub fn stop_firehose(&self) -> u64 {
        self.with(|st| {
            let f = st.firehose.as_mut().expect("a firehose");
            let n = f.sent_by(Instant::now());
            f.stop_after = Some(n);
            n
        })
    }

    pub fn push_session(&self, s: Session) {
        self.with(|st| st.sessions.push_back(s));
    }

    /// A rule the server already has, under a given id.
    pub fn add_rule_with_id(&self, id: &str, value: &str, tag: Option<&str>) {
        self.with(|st| st.rules.push(FakeRule { id: id.into(), value: value.into(), tag: tag.map(str::to_owned) }));
    }

    pub fn add_rule(&self, value: &str, tag: &str) -> String {
        self.with(|st| {
            st.next_id += 1;
            let id = format!("{}", 9000 + st.next_id);
            st.rules.push(FakeRule { id: id.clone(), value: value.into(), tag: Some(tag.into()) });
            id
        })
    }
}

fn record(state: &Shared, method: &str, uri: &Uri, headers: &HeaderMap, body: &str) -> bool {
    let mut s = state.lock().expect("state");
    s.requests.push(Recorded {
        method: method.into(),
        path: uri.path().into(),
        query: uri.query().unwrap_or("").into(),
        body: body.into(),
        authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned),
        at: Instant::now(),
    });
    let wrong_bearer = s.accept_bearer.as_ref().is_some_and(|t| {
        s.requests.last().and_then(|r| r.authorization.as_deref()) != Some(format!("Bearer {t}").as_str())
    });
    s.unauthorized || wrong_bearer
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, r#"{"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized"}"#)
        .into_response()
}

async fn list_rules(AxState(state): AxState<Shared>, uri: Uri, headers: HeaderMap) -> Response {
    if record(&state, "GET", &uri, &headers, "") {
        return unauthorized();
    }
    let s = state.lock().expect("state");
    let data: Vec<serde_json::Value> =
        s.rules.iter().map(|r| serde_json::json!({"id": r.id, "value": r.value, "tag": r.tag})).collect();
    axum::Json(serde_json::json!({"data": data, "meta": {"result_count": data.len()}})).into_response()
}

async fn change_rules(
    AxState(state): AxState<Shared>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    if record(&state, "POST", &uri, &headers, &body) {
        return unauthorized();
    }
    let dry = q.get("dry_run").is_some_and(|v| v == "true");
    let req: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let mut s = state.lock().expect("state");
    let mut data = Vec::new();
    let mut errors = Vec::new();
    if let Some(adds) = req["add"].as_array() {
        for a in adds {
            let value = a["value"].as_str().unwrap_or("").to_owned();
            if s.reject_containing.iter().any(|r| value.contains(r.as_str())) {
                errors.push(serde_json::json!({
                    "value": value, "title": "UnprocessableEntity",
                    "details": ["There were errors processing your request: Reference to invalid operator (at position 1)"],
                    "type": "https://api.twitter.com/2/problems/invalid-rules"
                }));
                continue;
            }
            s.next_id += 1;
            let id = format!("{}", 1000 + s.next_id);
            let tag = a["tag"].as_str().map(str::to_owned);
            data.push(serde_json::json!({"id": id, "value": value, "tag": tag}));
            if !dry {
                s.rules.push(FakeRule { id, value, tag });
            }
        }
    }
    if let Some(ids) = req["delete"]["ids"].as_array() {
        let ids: Vec<&str> = ids.iter().filter_map(|v| v.as_str()).collect();
        if !dry {
            s.rules.retain(|r| !ids.contains(&r.id.as_str()));
        }
    }
    let mut out = serde_json::json!({"data": data, "meta": {"sent": "now"}});
    if !errors.is_empty() {
        out["errors"] = serde_json::Value::Array(errors);
    }
    axum::Json(out).into_response()
}

async fn stream(AxState(state): AxState<Shared>, uri: Uri, headers: HeaderMap, body: String) -> Response {
    let method = if uri.path().ends_with("filter.json") { "POST" } else { "GET" };
    if record(&state, method, &uri, &headers, &body) {
        return unauthorized();
    }
    let (session, firehose) = {
        let mut s = state.lock().expect("state");
        let session = s.sessions.pop_front();
        (session, s.firehose.clone())
    };
    let session = match (session, firehose) {
        (Some(s), _) => s,
        (None, Some(f)) => return firehose_stream(state, f, &uri),
        (None, None) => Session::ok(Vec::new()),
    };
    if session.status != 200 {
        let code = StatusCode::from_u16(session.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (code, session.error_body).into_response();
    }
    let (tx, response) = streamed("application/json");
    tokio::spawn(async move {
        let frame = |line: &str| -> Vec<u8> {
            if session.length_delimited {
                format!("{}\r\n{line}\r\n", line.len() + 2).into_bytes()
            } else {
                format!("{line}\r\n").into_bytes()
            }
        };
        // Unpaced: lines go in chunks of up to 64 KiB, as fast as the
        // connection takes them (a line at a time, the server itself would
        // be the bottleneck of a "line rate" test).
        if session.line_delay.is_zero() && session.cut_after.is_none() {
            let mut chunk = Vec::with_capacity(1 << 16);
            for line in &session.lines {
                chunk.extend_from_slice(&frame(line));
                if chunk.len() >= 1 << 16 && tx.send(Ok(bytes::Bytes::from(std::mem::take(&mut chunk)))).await.is_err()
                {
                    return;
                }
            }
            if !chunk.is_empty() && tx.send(Ok(bytes::Bytes::from(chunk))).await.is_err() {
                return;
            }
        }
        let paced =
            if session.line_delay.is_zero() && session.cut_after.is_none() { &[][..] } else { &session.lines[..] };
        for (i, line) in paced.iter().enumerate() {
            if session.cut_after == Some(i) {
                let f = frame(line);
                let _ = tx.send(Ok(bytes::Bytes::from(f[..f.len() / 2].to_vec()))).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                return; // dropping tx closes the connection mid-message
            }
            if tx.send(Ok(bytes::Bytes::from(frame(line)))).await.is_err() {
                return;
            }
            tokio::time::sleep(session.line_delay).await;
        }
        // Written into the connection (what the body channel and the socket
        // hold is on its way to the reader).
        let _ = tx.reserve_many(tx.max_capacity()).await.map(drop);
        state.lock().expect("state").sessions_written.push(Instant::now());
        match session.after {
            After::Close => {}
            After::Stall => {
                // Hold the connection without sending anything.
                tx.closed().await;
            }
            After::KeepAlive => loop {
                tokio::time::sleep(session.keepalive).await;
                if tx.send(Ok(bytes::Bytes::from_static(b"\r\n"))).await.is_err() {
                    return;
                }
            },
        }
    });
    response
}

/// A connection to the [`Firehose`]: the backfill asked for, then live.
fn firehose_stream(state: Shared, f: Firehose, uri: &Uri) -> Response {
    let minutes: u64 = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("backfill_minutes="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let now = Instant::now();
    let mut k = f.sent_by(now);
    if minutes > 0 {
        let back = now.checked_sub(Duration::from_secs(minutes * 60)).unwrap_or(f.start);
        k = (back.saturating_duration_since(f.start).as_secs_f64() * f.per_sec).ceil() as u64;
    }
    let (tx, response) = streamed("application/json");
    tokio::spawn(async move {
        loop {
            let (stopped, rule, generation) = {
                let s = state.lock().expect("state");
                let stop = s.firehose.as_ref().and_then(|f| f.stop_after);
                let generation = s.firehose.as_ref().map_or(0, |f| f.generation);
                (stop, s.rules.first().map(|r| (r.id.clone(), r.tag.clone())), generation)
            };
            if generation != f.generation {
                return; // dropping tx closes the connection
            }
            if stopped.is_some_and(|n| k >= n) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if tx.send(Ok(bytes::Bytes::from_static(b"\r\n"))).await.is_err() {
                    return;
                }
                continue;
            }
            let due = f.at(k);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
            // Everything due by now in one chunk.
            let upto = f.sent_by(Instant::now()).min(stopped.unwrap_or(u64::MAX)).max(k + 1);
            let mut chunk = String::new();
            for j in k..upto {
                chunk.push_str(&f.line(j, &rule));
                chunk.push_str("\r\n");
            }
            k = upto;
            if tx.send(Ok(bytes::Bytes::from(chunk))).await.is_err() {
                return;
            }
        }
    });
    response
}
