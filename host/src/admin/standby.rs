//! The admin listener of a standby: a collector with `id = "auto"` while
//! every id with rules is held. It has no pipeline yet, but an orchestrator
//! still probes it, and an operator still asks what it waits for:
//!
//! * `/health` — 200, `"status": "standby"`, with the `lease` component
//!   saying what it waits for (a liveness probe must not restart a standby).
//! * `/ready` — 503 with the same reason (it collects nothing).
//! * `/metrics` — `traptor_standby{type} 1`.
//!
//! Everything else answers 503 with the reason. Same address, TLS and tokens
//! as the full listener, which takes the address over once an id is claimed.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

use super::{AdminError, AdminSettings};
use crate::rules::RuleType;

/// What a standby's endpoints show.
#[derive(Debug)]
pub struct StandbyState {
    pub traptor_type: RuleType,
    pub settings: AdminSettings,
    pub started: Instant,
    /// Whether Redis has answered (the leases are read there).
    pub redis_connected: AtomicBool,
}

impl StandbyState {
    fn reason(&self) -> String {
        if self.redis_connected.load(Relaxed) {
            format!(
                "standby: no {} id with rules is free (each is held by another collector, or none has rules yet); \
                 this one claims the first that is",
                self.traptor_type
            )
        } else {
            format!("standby: waiting for Redis, where the {} ids' leases are", self.traptor_type)
        }
    }
}

/// Listen on `addr` (bound before this returns) and answer as a standby
/// until `shutdown`; the task ends with the socket closed.
pub async fn start_standby(
    addr: &str,
    state: Arc<StandbyState>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, AdminError> {
    let app = axum::Router::new()
        .route("/health", axum::routing::get(health))
        .route("/ready", axum::routing::get(ready))
        .route("/metrics", axum::routing::get(metrics))
        .fallback(elsewhere)
        .with_state(state.clone());
    let what = "admin endpoint (standby): /health /ready /metrics";
    super::bind_and_serve(addr, app, &state.settings, shutdown, what).await
}

async fn health(State(s): State<Arc<StandbyState>>) -> Response {
    let body = serde_json::json!({
        "status": "standby",
        "uptime_secs": s.started.elapsed().as_secs(),
        "checks": [{"name": "runtime", "ok": true}],
        "components": [super::component("lease", &s.traptor_type.to_string(), "standby", s.reason())],
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn ready(State(s): State<Arc<StandbyState>>) -> Response {
    let body = serde_json::json!({
        "status": "not ready",
        "checks": [super::check("lease", false, s.reason())],
    });
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

async fn metrics(State(s): State<Arc<StandbyState>>) -> Response {
    let body = format!(
        "# HELP traptor_standby 1 while this collector stands by for a free id (id = \"auto\").\n\
         # TYPE traptor_standby gauge\n\
         traptor_standby{{type=\"{}\"}} 1\n",
        s.traptor_type
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn elsewhere(State(s): State<Arc<StandbyState>>) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "5")], format!("{}\n", s.reason())).into_response()
}
