//! The admin listener (`[admin] listen = "127.0.0.1:9464"` or `--admin
//! ADDR`): `/metrics`, `/health`, `/ready`. Off unless configured; binds only
//! where told; runs on the host's runtime, never on the pipeline's hot path
//! (it reads counters the pipeline keeps anyway). Every request has a time
//! limit and a body limit, so a slow or hostile client cannot hold it.
//!
//! * `/metrics` — Prometheus text format, OpenMetrics when the `Accept`
//!   header asks for it ([`metrics`]).
//! * `/health` — liveness: 200 while the runtime answers.
//! * `/ready` — readiness: 200 when every check passes, else 503; the JSON
//!   body lists each check (`rules`, `source`, `redis`, `stages`).
//! * `/api/rules?limit=N` — the running rules with their match counts
//!   (total, last minute, last 15 minutes), most matched recently first.

pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::component::Problems;
use crate::pipeline::{Compiled, StageSet};
use crate::sources::backoff::ConnectionStats;
use crate::telemetry::{Health, Metrics};

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address and port to listen on, e.g. `127.0.0.1:9464` (`0.0.0.0:9464`
    /// to be scraped from other machines).
    pub listen: String,
}

impl AdminConfig {
    /// Pure checks; keys relative to `[admin]`.
    pub fn check(&self, p: &mut Problems<'_>) {
        if self.listen.parse::<SocketAddr>().is_err() {
            p.add("listen", format!("{:?} is not an address and port like 127.0.0.1:9464", self.listen));
        }
    }
}

/// Why the admin listener cannot run.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin.listen: cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// What the endpoints read: shared with the running pipeline.
#[derive(Debug)]
pub struct AdminState {
    pub traptor_type: &'static str,
    pub traptor_id: u32,
    pub metrics: Arc<Metrics>,
    pub stages: Arc<ArcSwap<StageSet>>,
    pub compiled: Arc<ArcSwap<Compiled>>,
    pub health: Arc<Health>,
    pub connection: Arc<ConnectionStats>,
    /// The source's name, and whether it holds a connection (live sources).
    pub source: String,
    pub source_live: bool,
    pub sink: String,
    /// The coordination / rules server, pinged by `/ready`.
    pub redis: Option<redis::aio::ConnectionManager>,
    /// Per-rule match counts (totals and the last 15 minutes).
    pub rule_hits: Option<Arc<crate::coordination::stats::RuleHits>>,
    pub started: Instant,
}

/// Listen on `addr` (bound before this returns, so a taken port is an error
/// at start) and serve until `shutdown`.
pub async fn start(
    addr: &str,
    state: Arc<AdminState>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, AdminError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr: addr.to_owned(), source })?;
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| addr.to_owned());
    let app = router(state);
    tracing::info!(listen = %local, "admin endpoint: /metrics /health /ready");
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "admin endpoint stopped");
        }
    }))
}

fn router(state: Arc<AdminState>) -> axum::Router {
    let registry = Arc::new(metrics::registry(state.clone()));
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move |headers: HeaderMap| {
                let registry = registry.clone();
                async move { scrape(&registry, &headers) }
            }),
        )
        .route("/health", axum::routing::get(health))
        .route("/api/rules", axum::routing::get(api_rules))
        .route("/ready", axum::routing::get(ready))
        .with_state(state)
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(5)))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(16 * 1024))
}

fn scrape(registry: &prometheus_client::registry::Registry, headers: &HeaderMap) -> Response {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the metrics failed: {e}")).into_response();
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("application/openmetrics-text") {
        ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
    } else {
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics::to_prometheus_text(&text))
            .into_response()
    }
}

/// `?limit=N` of `/api/rules`.
#[derive(Debug, Deserialize)]
struct RulesQuery {
    limit: Option<usize>,
}

/// Every rule of the running matcher with its match counts (total, last
/// minute, last 15 minutes), most matched in the last minute first.
async fn api_rules(State(s): State<Arc<AdminState>>, q: axum::extract::Query<RulesQuery>) -> Response {
    let limit = q.limit.unwrap_or(100).clamp(1, 100_000);
    let windows = s.rule_hits.as_ref().map(|h| h.windows()).unwrap_or_default();
    let now = crate::coordination::stats::now_slot();
    let compiled = s.compiled.load();
    let mut rows: Vec<(u64, u64, u64, &crate::rules::Rule)> = compiled
        .matcher
        .rules()
        .iter()
        .map(|r| {
            let w = windows.get(r.rule_id());
            let (total, m1, m15) = w.map_or((0, 0, 0), |w| (w.total, w.recent(now, 60), w.recent(now, 900)));
            (m1, m15, total, r)
        })
        .collect();
    rows.sort_by(|a, b| (b.0, b.1, b.2).cmp(&(a.0, a.1, a.2)).then_with(|| a.3.rule_id().cmp(b.3.rule_id())));
    let out: Vec<serde_json::Value> = rows
        .into_iter()
        .take(limit)
        .map(|(m1, m15, all, r)| {
            serde_json::json!({
                "rule_id": r.rule_id(), "tag": r.tag(), "value": r.value(), "rule_type": r.rule_type().as_str(),
                "matches_total": all, "matches_1m": m1, "matches_15m": m15,
            })
        })
        .collect();
    axum::Json(out).into_response()
}

async fn health(State(s): State<Arc<AdminState>>) -> Response {
    let body = serde_json::json!({
        "status": "ok",
        "uptime_secs": s.started.elapsed().as_secs(),
        "checks": [{"name": "runtime", "ok": true}],
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// One readiness check: its name, whether it passes, and what was seen.
fn check(name: &str, ok: bool, detail: String) -> serde_json::Value {
    serde_json::json!({"name": name, "ok": ok, "detail": detail})
}

async fn ready(State(s): State<Arc<AdminState>>) -> Response {
    let mut checks = Vec::new();
    let rules = s.compiled.load().matcher.rules().len();
    checks.push(check("rules", true, format!("{rules} rules loaded")));
    let problem = s.health.problem();
    let connected = !s.source_live || s.connection.connected.load(std::sync::atomic::Ordering::Relaxed) == 1;
    let source_ok = problem.is_none() && connected;
    let detail = match (&problem, connected) {
        (Some(p), _) => p.clone(),
        (None, false) => "not connected".to_owned(),
        (None, true) if s.source_live => "connected".to_owned(),
        (None, true) => "reading".to_owned(),
    };
    checks.push(check("source", source_ok, format!("{}: {detail}", s.source)));
    if let Some(conn) = &s.redis {
        let mut conn = conn.clone();
        let ping =
            tokio::time::timeout(Duration::from_secs(1), redis::cmd("PING").query_async::<String>(&mut conn)).await;
        let (ok, detail) = match ping {
            Ok(Ok(_)) => (true, "reachable".to_owned()),
            Ok(Err(e)) => (false, format!("unreachable: {e}")),
            Err(_) => (false, "no answer within 1 s".to_owned()),
        };
        checks.push(check("redis", ok, detail));
    }
    let set = s.stages.load();
    let open: Vec<&str> = set.stages.iter().filter(|st| st.circuit_open()).map(|st| &*st.name).collect();
    checks.push(check(
        "stages",
        open.is_empty(),
        if open.is_empty() {
            format!("{} running", set.stages.len())
        } else {
            format!("circuit open: {}", open.join(", "))
        },
    ));
    let all = checks.iter().all(|c| c["ok"] == true);
    let status = if all { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::json!({"status": if all { "ready" } else { "not ready" }, "checks": checks});
    (status, axum::Json(body)).into_response()
}
