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
//!
//! A standby (`id = "auto"`, every id held) answers on the same address with
//! [`standby`]'s three endpoints until it holds an id.

mod access;
pub mod metrics;
mod standby;

pub use access::AdminSettings;
pub use standby::{StandbyState, start_standby};

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::component::Problems;
use crate::pipeline::{Compiled, StageSet};
use crate::telemetry::ConnectionStats;
use crate::telemetry::{Health, Metrics};

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address and port to listen on, e.g. `127.0.0.1:9464` (`0.0.0.0:9464`
    /// to be scraped from other machines).
    pub listen: String,
    /// Posts kept for `GET /api/recent` (what `rules preview --admin` and
    /// the dashboard's preview match against); 0 keeps none.
    #[serde(default = "default_recent_posts")]
    pub recent_posts: usize,
    /// Bearer token for endpoints that upload or change state (every POST);
    /// without it they are off. `{ env = "NAME" }` or `{ file = "path" }`.
    #[serde(default)]
    pub token: Option<crate::secret::SecretRef>,
    /// Read-only views need the token too (`/health` and `/ready` stay open).
    #[serde(default)]
    pub read_token: bool,
    /// Largest request body (a rules file uploaded for a preview).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// HTTPS: a PEM certificate chain and its key (rustls). Needed for a
    /// listener that is not on loopback (`validate` warns otherwise).
    #[serde(default)]
    pub tls_cert_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<std::path::PathBuf>,
    /// `/ready` turns false once the sink has been unable to write (records
    /// spooled, the broker away) for this long.
    #[serde(default = "default_sink_grace_secs")]
    pub sink_grace_secs: u64,
}

/// Default of `[admin] recent_posts`.
pub const DEFAULT_RECENT_POSTS: usize = 10_000;
/// Default of `[admin] max_body_bytes`.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 << 20;

pub(crate) fn default_sink_grace_secs() -> u64 {
    30
}

fn default_recent_posts() -> usize {
    DEFAULT_RECENT_POSTS
}
fn default_max_body_bytes() -> usize {
    DEFAULT_MAX_BODY_BYTES
}

impl AdminConfig {
    /// Pure checks; keys relative to `[admin]`.
    pub fn check(&self, p: &mut Problems<'_>) {
        if self.listen.parse::<SocketAddr>().is_err() {
            p.add("listen", format!("{:?} is not an address and port like 127.0.0.1:9464", self.listen));
        }
        p.range("recent_posts", self.recent_posts as u64, 0, 1_000_000);
        p.range("max_body_bytes", self.max_body_bytes as u64, 1024, 256 << 20);
        p.range("sink_grace_secs", self.sink_grace_secs, 0, 86_400);
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            p.add("tls_cert_file", "give tls_cert_file and tls_key_file together");
        }
        if self.read_token && self.token.is_none() {
            p.add("read_token", "read_token = true needs a token");
        }
    }

    /// What `validate` should say about this listener (not errors).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if !access::is_loopback(&self.listen) && self.tls_cert_file.is_none() {
            w.push(format!(
                "admin.listen {} is reachable from other machines without TLS: set tls_cert_file and tls_key_file{}",
                self.listen,
                if self.token.is_some() { " (the token would cross the network in clear)" } else { "" }
            ));
        }
        w
    }

    pub fn resolve_paths(&mut self, base: &crate::component::BaseDir) {
        access::fix_paths(self, base);
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
    #[error("admin.token: {0}")]
    Token(String),
    #[error("admin TLS: {0}")]
    Tls(String),
}

impl AdminError {
    pub fn kind(&self) -> crate::exit::ErrorKind {
        match self {
            AdminError::Bind { .. } => crate::exit::ErrorKind::Runtime,
            AdminError::Token(_) | AdminError::Tls(_) => crate::exit::ErrorKind::Config,
        }
    }
}

/// What the endpoints read: shared with the running pipeline.
pub struct AdminState {
    pub collector: crate::rules::Collector,
    /// `id = "auto"`: the fencing number of the lease that holds the id.
    pub lease_fence: Option<u64>,
    /// The pool key the (first) source connects with.
    pub key_in_use: Arc<crate::key_pool::KeyInUse>,
    /// Every source of the pipeline (`[[sources]]`), for `/health`, `/ready`
    /// and the status API.
    pub sources: Vec<SourcePart>,
    /// Since when the sink has been unable to write (records spooled).
    pub sink_down_since: std::sync::Mutex<Option<Instant>>,
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
    pub rule_hits: Option<Arc<crate::telemetry::RuleHits>>,
    pub started: Instant,
    /// Once a second: (unix seconds, posts in, records out), 10 minutes.
    pub history: std::sync::Mutex<std::collections::VecDeque<(u64, u64, u64)>>,
    /// The last posts decoded (`GET /api/recent`, previews).
    pub recent: Arc<crate::pipeline::recent::RecentPosts>,
    /// Token, TLS, limits.
    pub settings: AdminSettings,
    /// Requests that copy the recent ring (`/api/recent`, previews): one
    /// at a time, others get 429.
    pub heavy: tokio::sync::Semaphore,
    /// Promote a stage's shadow candidate in the pipeline file and reload
    /// (`POST /api/stages/<name>/promote`); `None` where there is no file.
    pub promote: Option<Promoter>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("collector", &self.collector)
            .field("source", &self.source)
            .field("sink", &self.sink)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// See [`AdminState::promote`]: the stage's name in, the promoted plugin out.
pub type Promoter = Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

/// One source as the admin endpoints show it.
#[derive(Debug, Clone)]
pub struct SourcePart {
    /// Its `[[sources]]` name, else its description.
    pub name: String,
    pub live: bool,
    pub connection: Arc<ConnectionStats>,
}

impl SourcePart {
    fn up(&self) -> bool {
        !self.live || self.connection.connected.load(Relaxed) == 1
    }
}

/// Seconds of history the dashboard shows.
const HISTORY_SECS: usize = 600;

/// Record the counters once a second for the dashboard's sparkline.
async fn sample(state: Arc<AdminState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_out = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let m = &state.metrics;
        let point = (now, m.posts.load(Relaxed), m.records_out.load(Relaxed));
        if let Ok(mut h) = state.history.lock() {
            if h.len() >= HISTORY_SECS {
                h.pop_front();
            }
            h.push_back(point);
        }
        // Unable to write: records wait in the spool and none went out in
        // the last second (a spool being replayed is progress, not an outage).
        let out = m.records_out.load(Relaxed);
        let stuck = m.spool_backlog.load(Relaxed) > 0 && out == last_out;
        last_out = out;
        if let Ok(mut down) = state.sink_down_since.lock() {
            match (stuck, *down) {
                (true, None) => *down = Some(Instant::now()),
                (false, Some(_)) => *down = None,
                _ => {}
            }
        }
    }
}

/// Listen on `addr` (bound before this returns, so a taken port is an error
/// at start) and serve until `shutdown`.
pub async fn start(
    addr: &str,
    state: Arc<AdminState>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, AdminError> {
    let app = router(state.clone());
    let what = "admin endpoint: / (dashboard) /preview /metrics /health /ready /api/rules /api/stats /api/recent, POST /api/rules/preview";
    let served = bind_and_serve(addr, app, &state.settings, shutdown.clone(), what).await?;
    Ok(tokio::spawn(async move {
        let sampler = tokio::spawn(sample(state, shutdown));
        let _ = served.await;
        let _ = sampler.await;
    }))
}

/// Bind `addr` (plain or TLS as `settings` say), then serve `app` on a task
/// until `shutdown`, every request through the token [`guard`] and a time
/// limit; the socket is closed when the task ends. `what` is logged once bound.
async fn bind_and_serve(
    addr: &str,
    app: axum::Router,
    settings: &AdminSettings,
    shutdown: CancellationToken,
    what: &str,
) -> Result<tokio::task::JoinHandle<()>, AdminError> {
    let tls = settings.tls.clone();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr: addr.to_owned(), source })?;
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| addr.to_owned());
    tracing::info!(listen = %local, tls = tls.is_some(), "{what}");
    if tls.is_none() && !access::is_loopback(&local) {
        tracing::warn!(listen = %local, "the admin endpoint is reachable from other machines without TLS ([admin] tls_cert_file, tls_key_file)");
    }
    let (listener, acceptor) = match tls {
        Some(config) => {
            let (l, acceptor) = access::TlsListener::new(listener, config)
                .map_err(|source| AdminError::Bind { addr: addr.to_owned(), source })?;
            (Either::Tls(l), Some(acceptor))
        }
        None => (Either::Plain(listener), None),
    };
    let app = app.layer(axum::middleware::from_fn_with_state(Arc::new(settings.clone()), guard)).layer(
        tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(5)),
    );
    Ok(tokio::spawn(async move {
        // Not a graceful shutdown: an idle or hostile client must not hold
        // the collector's exit (its connection dies with the process).
        let served = async move {
            match listener {
                Either::Plain(l) => axum::serve(l, app).into_future().await,
                Either::Tls(l) => axum::serve(l, app).into_future().await,
            }
        };
        tokio::select! {
            served = served => {
                if let Err(e) = served {
                    tracing::warn!(error = %e, "admin endpoint stopped");
                }
            }
            () = shutdown.cancelled() => {}
        }
        // TLS: the accept loop holds the socket; the address is free (for
        // the listener that follows a standby's) once it has ended.
        if let Some(acceptor) = acceptor {
            acceptor.abort();
            let _ = acceptor.await;
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
        .route("/", axum::routing::get(dashboard))
        .route("/api/stats", axum::routing::get(api_stats))
        .route("/health", axum::routing::get(health))
        .route("/api/rules", axum::routing::get(api_rules))
        .route("/ready", axum::routing::get(ready))
        .route("/api/recent", axum::routing::get(api_recent))
        .route("/api/rules.jsonl", axum::routing::get(api_rules_jsonl))
        .route("/api/stages/{name}/shadow", axum::routing::get(api_shadow))
        .route("/api/stages/{name}/promote", axum::routing::post(api_promote))
        .route("/preview", axum::routing::get(preview_page))
        .route("/api/rules/preview", axum::routing::post(api_preview))
        .with_state(state.clone())
        .layer(tower_http::limit::RequestBodyLimitLayer::new(state.settings.max_body_bytes))
        // axum's own 2 MiB limit on extracted bodies would undercut `max_body_bytes`.
        .layer(axum::extract::DefaultBodyLimit::max(state.settings.max_body_bytes))
}

/// The listener, plain or TLS.
enum Either {
    Plain(tokio::net::TcpListener),
    Tls(access::TlsListener),
}

/// Every request passes here first, on both listeners (a standby's too):
/// tokens (see [`access`]).
async fn guard(
    State(settings): State<Arc<AdminSettings>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match settings.refuse(req.method(), req.uri().path(), req.headers()) {
        Some(refusal) => refusal,
        None => next.run(req).await,
    }
}

/// The recent posts as JSON lines `{"format": "x_v2", "post": "<raw JSON>"}`,
/// built off the runtime; one such request (or preview) at a time.
async fn api_recent(State(s): State<Arc<AdminState>>) -> Response {
    let Ok(_permit) = s.heavy.try_acquire() else { return busy() };
    let recent = s.recent.clone();
    let body = tokio::task::spawn_blocking(move || {
        let mut body = String::new();
        for (format, raw) in recent.snapshot() {
            let line = serde_json::json!({"format": format.as_str(), "post": String::from_utf8_lossy(&raw)});
            body.push_str(&line.to_string());
            body.push('\n');
        }
        body
    })
    .await
    .unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// A request that copies the recent ring while another does.
fn busy() -> Response {
    (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")], "busy with another request of this kind; retry\n")
        .into_response()
}

/// The running rules with all their fields, as a rules file (what a
/// preview against this collector compares with).
async fn api_rules_jsonl(State(s): State<Arc<AdminState>>) -> Response {
    let compiled = s.compiled.load();
    let mut body = String::new();
    for r in compiled.matcher.rules() {
        body.push_str(r.fields_json());
        body.push('\n');
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// A shadow stage's comparison: `{"compared","same","different",
/// "failures","fields","differences":[…]}` (the last 100 differences).
async fn api_shadow(
    State(s): State<Arc<AdminState>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let set = s.stages.load();
    let Some(stage) = set.stages.iter().find(|st| *st.name == *name) else {
        return (StatusCode::NOT_FOUND, format!("no stage {name:?}\n")).into_response();
    };
    match &stage.shadow {
        Some(sh) => {
            let mut report = sh.stats.report();
            report["candidate"] = serde_json::json!({
                "plugin": sh.stage.origin.plugin, "digest": sh.stage.origin.digest,
                "version": sh.stage.description.version, "sample": sh.sample,
            });
            axum::Json(report).into_response()
        }
        None => (StatusCode::NOT_FOUND, format!("stage {name:?} has no shadow candidate\n")).into_response(),
    }
}

/// `POST /api/stages/<name>/promote` (token): `plugin promote` on the
/// running pipeline's file, then a reload as on SIGHUP; answers once the
/// new stage set runs, or says it has not yet after 4 s (requests have 5).
async fn api_promote(
    State(s): State<Arc<AdminState>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let Some(promote) = s.promote.clone() else {
        return (StatusCode::NOT_FOUND, "this collector has no pipeline file to edit\n").into_response();
    };
    let before = s.stages.load().generation;
    let stage = name.clone();
    let done = tokio::task::spawn_blocking(move || promote(&stage)).await;
    let plugin = match done {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return (StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n")).into_response(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("promote failed: {e}\n")).into_response(),
    };
    let deadline = Instant::now() + Duration::from_secs(4);
    while s.stages.load().generation == before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let swapped = s.stages.load().generation != before;
    axum::Json(serde_json::json!({"stage": name, "plugin": plugin, "swapped": swapped})).into_response()
}

/// The dashboard's preview page: paste or upload a rules file.
async fn preview_page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], include_str!("preview.html")).into_response()
}

/// `POST /api/rules/preview`: the body is a proposed rules file; the answer
/// is `rules preview`'s JSON against the running rules over the recent posts.
async fn api_preview(State(s): State<Arc<AdminState>>, body: axum::body::Bytes) -> Response {
    let proposed = crate::rules::file::parse_bytes(
        &body,
        "uploaded rules",
        s.collector.rule_type,
        crate::rules::file::DEFAULT_MAX_RULE_BYTES,
    );
    let proposed = match crate::preview::strict(proposed) {
        Ok(r) => r,
        Err(e) => return (StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n")).into_response(),
    };
    let Ok(_permit) = s.heavy.try_acquire() else { return busy() };
    let current = s.compiled.load().matcher.rules().to_vec();
    let recent = s.recent.clone();
    let report = tokio::task::spawn_blocking(move || {
        let mut corpus = crate::preview::Corpus::default();
        for (i, (format, raw)) in recent.snapshot().into_iter().enumerate() {
            corpus.push(format, raw.to_vec(), i + 1);
        }
        crate::preview::preview(&current, &proposed, &corpus)
    })
    .await;
    match report {
        Ok(r) => axum::Json(r).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("preview failed: {e}\n")).into_response(),
    }
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

/// The live dashboard: one page, no external assets, polling `/api/stats`.
async fn dashboard() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], include_str!("dashboard.html")).into_response()
}

/// Everything the dashboard shows, as one JSON object.
async fn api_stats(State(s): State<Arc<AdminState>>) -> Response {
    let m = s.metrics.snapshot();
    let history: Vec<(u64, u64, u64)> = s.history.lock().map(|h| h.iter().copied().collect()).unwrap_or_default();
    // Per-second rates from consecutive samples.
    let rates: Vec<serde_json::Value> = history
        .windows(2)
        .map(|w| {
            let dt = w[1].0.saturating_sub(w[0].0).max(1);
            serde_json::json!({"t": w[1].0, "in": (w[1].1 - w[0].1) / dt, "out": (w[1].2.saturating_sub(w[0].2)) / dt})
        })
        .collect();
    let set = s.stages.load();
    let stages: Vec<serde_json::Value> = set
        .stages
        .iter()
        .map(|st| {
            let x = st.metrics.snapshot();
            serde_json::json!({
                "name": &*st.name, "posts": x.posts_in, "dropped": x.dropped, "errors": x.post_errors,
                "failures": x.traps + x.timeouts + x.out_of_memory + x.protocol_errors,
                "mean_batch_us": x.latency_sum_us.checked_div(x.batches).unwrap_or(0), "circuit_open": st.circuit_open(),
                "abi": &st.component().abi, "reads": crate::plugins::field_names(st.reads),
                "shadow": st.shadow.as_ref().map(|sh| serde_json::json!({
                    "version": sh.stage.description.version, "compared": sh.stats.compared.load(Relaxed),
                    "same": sh.stats.same.load(Relaxed), "different": sh.stats.different.load(Relaxed)})),
                "us_per_post": per_post_us(x.prepare_ns + x.lower_ns + x.guest_ns + x.lift_ns, x.posts_in),
                "parts_us_per_post": {"prepare": per_post_us(x.prepare_ns, x.posts_in), "lower": per_post_us(x.lower_ns, x.posts_in),
                                      "guest": per_post_us(x.guest_ns, x.posts_in), "lift": per_post_us(x.lift_ns, x.posts_in)},
            })
        })
        .collect();
    let c = &s.connection;
    let body = serde_json::json!({
        "collector": {"type": s.collector.rule_type, "id": s.collector.id, "version": env!("CARGO_PKG_VERSION"),
                      "lease": s.lease_fence.map(|fence| serde_json::json!({"fence": fence})),
                      "uptime_secs": s.started.elapsed().as_secs()},
        "posts": m.posts, "matched": m.posts_matched, "unmatched": m.posts_unmatched, "written": m.records_out,
        "malformed": m.malformed, "duplicates": m.duplicates_dropped, "spool_backlog": m.spool_backlog,
        "field_surprises": m.field_surprises,
        "rates": rates,
        "latency_ms": {"p50": m.end_to_end.quantile_us(0.5) as f64 / 1e3, "p99": m.end_to_end.quantile_us(0.99) as f64 / 1e3,
                       "max": m.end_to_end.max_us as f64 / 1e3},
        "source": {"name": &s.source, "live": s.source_live, "connected": c.connected.load(Relaxed) == 1,
                   "connects": c.connects.load(Relaxed), "problem": s.health.problem()},
        "sources": s.sources.iter().map(|p| serde_json::json!({"name": p.name, "live": p.live,
                   "connected": p.connection.connected.load(Relaxed) == 1, "connects": p.connection.connects.load(Relaxed)}))
                   .collect::<Vec<_>>(),
        "rules": {"count": s.compiled.load().matcher.rules().len(), "reloads": m.rule_reloads, "top": top_rules(&s, 10)},
        "stages": stages,
    });
    axum::Json(body).into_response()
}

/// `?limit=N` of `/api/rules`.
#[derive(Debug, Deserialize)]
struct RulesQuery {
    limit: Option<usize>,
}

/// Every rule of the running matcher with its match counts (total, last
/// minute, last 15 minutes), most matched in the last minute first.
async fn api_rules(State(s): State<Arc<AdminState>>, q: axum::extract::Query<RulesQuery>) -> Response {
    axum::Json(top_rules(&s, q.limit.unwrap_or(100).clamp(1, 100_000))).into_response()
}

/// The `limit` rules most matched in the last minute (then 15 minutes, then
/// ever), with their counts.
fn top_rules(s: &AdminState, limit: usize) -> Vec<serde_json::Value> {
    let windows = s.rule_hits.as_ref().map(|h| h.windows()).unwrap_or_default();
    let now = crate::telemetry::now_slot();
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
    rows.into_iter()
        .take(limit)
        .map(|(m1, m15, all, r)| {
            serde_json::json!({
                "rule_id": r.rule_id(), "tag": r.tag(), "value": r.value(), "rule_type": r.rule_type().as_str(),
                "matches_total": all, "matches_1m": m1, "matches_15m": m15,
            })
        })
        .collect()
}

async fn health(State(s): State<Arc<AdminState>>) -> Response {
    let components = components(&s).await;
    let degraded = components.iter().any(|c| c["state"] != "ok");
    let body = serde_json::json!({
        "status": if degraded { "degraded" } else { "ok" },
        "uptime_secs": s.started.elapsed().as_secs(),
        "checks": [{"name": "runtime", "ok": true}],
        "components": components,
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// A component's state for `/health`: `ok`, `degraded` or `down`, and why.
fn component(kind: &str, name: &str, state: &str, reason: String) -> serde_json::Value {
    serde_json::json!({"component": kind, "name": name, "state": state, "reason": reason})
}

/// Ping the Redis server (1 s at most): `Ok` or why not.
async fn ping_redis(conn: &redis::aio::ConnectionManager) -> Result<(), String> {
    let mut conn = conn.clone();
    match tokio::time::timeout(Duration::from_secs(1), redis::cmd("PING").query_async::<String>(&mut conn)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("unreachable: {e}")),
        Err(_) => Err("no answer within 1 s".to_owned()),
    }
}

/// How long the sink has been unable to write (`None`: it writes).
fn sink_down_for(s: &AdminState) -> Option<Duration> {
    s.sink_down_since.lock().ok().and_then(|d| d.map(|t| t.elapsed()))
}

/// Every source (by name), the rule store, each stage, the sink, the
/// buffer and the id's lease, with state and reason.
async fn components(s: &AdminState) -> Vec<serde_json::Value> {
    let m = &s.metrics;
    let problem = s.health.problem();
    let mut out = Vec::new();
    for src in &s.sources {
        let (state, reason) = match (&problem, src.live, src.up()) {
            (Some(p), true, _) => ("down", p.clone()),
            (None, true, true) => ("ok", format!("connected ({} connects)", src.connection.connects.load(Relaxed))),
            (None, true, false) => ("down", "not connected".to_owned()),
            (_, false, _) => ("ok", "reading".to_owned()),
        };
        out.push(component("source", &src.name, state, reason));
    }
    let rules = s.compiled.load().matcher.rules().len();
    let (state, reason) = match &s.redis {
        Some(conn) => match ping_redis(conn).await {
            Ok(()) => ("ok", format!("{rules} rules; Redis reachable")),
            Err(e) => ("degraded", format!("{rules} rules (the last good set); Redis {e}")),
        },
        None => ("ok", format!("{rules} rules")),
    };
    out.push(component("rules", "rules", state, reason));
    for st in s.stages.load().stages.iter() {
        let (state, reason) = match st.circuit_open() {
            true => ("degraded", "circuit open: posts pass without it".to_owned()),
            false => ("ok", "running".to_owned()),
        };
        out.push(component("stage", &st.name, state, reason));
    }
    let spooled = m.spool_backlog.load(Relaxed);
    let (state, reason) = match sink_down_for(s) {
        Some(d) => ("degraded", format!("unable to write for {} s; {spooled} records spooled", d.as_secs())),
        None => ("ok", format!("{} records written", m.records_out.load(Relaxed))),
    };
    out.push(component("sink", &s.sink, state, reason));
    let queued = m.buffer_records.load(Relaxed);
    out.push(component("buffer", "buffer", "ok", format!("{queued} records on disk")));
    if let Some(fence) = s.lease_fence {
        out.push(component("lease", &s.collector.to_string(), "ok", format!("held (fence {fence})")));
    }
    out
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
    // Ready while any source collects (one of several down is a degraded
    // /health, not an unready collector).
    let up: Vec<&str> = s.sources.iter().filter(|p| p.up()).map(|p| p.name.as_str()).collect();
    let source_ok = problem.is_none() && (!up.is_empty() || s.sources.is_empty());
    let any_live = s.sources.iter().any(|p| p.live);
    let detail = match (&problem, up.is_empty()) {
        (Some(p), _) => p.clone(),
        (None, true) => "no source connected".to_owned(),
        (None, false) if any_live => format!("connected: {}", up.join(", ")),
        (None, false) => format!("reading: {}", up.join(", ")),
    };
    checks.push(check("source", source_ok, detail));
    if let Some(conn) = &s.redis {
        let (ok, detail) = match ping_redis(conn).await {
            Ok(()) => (true, "reachable".to_owned()),
            Err(e) => (false, e),
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
    let grace = s.settings.sink_grace;
    let (ok, detail) = match sink_down_for(&s) {
        Some(d) if d >= grace => {
            (false, format!("unable to write for {} s (grace {} s)", d.as_secs(), grace.as_secs()))
        }
        Some(d) => (true, format!("unable to write for {} s (within the {} s grace)", d.as_secs(), grace.as_secs())),
        None => (true, "writing".to_owned()),
    };
    checks.push(check("sink", ok, detail));
    let all = checks.iter().all(|c| c["ok"] == true);
    let status = if all { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::json!({"status": if all { "ready" } else { "not ready" }, "checks": checks});
    (status, axum::Json(body)).into_response()
}

/// Nanoseconds over posts, as µs per post (3 decimals; 0 before any post).
fn per_post_us(ns: u64, posts: u64) -> f64 {
    if posts == 0 { 0.0 } else { (ns as f64 / posts as f64).round() / 1e3 }
}
