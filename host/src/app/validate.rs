//! `validate`: everything a run would check before posts flow, without
//! running — the pure checks, the rules (each bad rule named by its place,
//! the per-connection limits), and the topology built exactly as `run`
//! builds it (secrets read, files opened, plugins compiled and initialised).

use std::path::Path;

use super::TopologyParts;
use crate::config::Coordination;
use crate::config::{ConfigError, IdentityOverride, LoadedConfig};
use crate::exit::Exit;
use crate::plugins::ABI_VERSION;
use crate::sources::SourceContext;

/// The outcome of `validate`.
#[derive(Debug, Default)]
pub struct Validation {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
    /// The file as it will run (environment values in, identity applied,
    /// secret-looking values masked), when it parsed.
    pub resolved: Option<String>,
}

impl Validation {
    pub fn exit(&self) -> Exit {
        if self.errors.is_empty() { Exit::Success } else { Exit::Config }
    }
}

/// Check a pipeline file and everything it names, without running it.
pub async fn validate(path: &Path, identity: IdentityOverride) -> Validation {
    let mut v = Validation::default();
    let cfg = match LoadedConfig::load_with(path, identity) {
        Ok(c) => c,
        Err(ConfigError::Invalid { path, problems }) => {
            v.errors.extend(problems.iter().map(|p| format!("{}: {p}", path.display())));
            return v;
        }
        Err(e) => {
            v.errors.push(e.to_string());
            return v;
        }
    };
    let c = &cfg.config;
    v.resolved = Some(printable(&cfg));
    let identity = match c.traptor.id {
        crate::config::IdSetting::Auto => format!("{}:auto (an id claimed by lease at start)", c.traptor.traptor_type),
        crate::config::IdSetting::Fixed(_) => c.traptor.collector().to_string(),
    };
    v.notes.push(format!("pipeline {}: traptor {identity}", path.display()));
    check_rules(&cfg, &mut v).await;
    let parts = {
        let cfg = cfg.clone();
        // With a key pool, the source's credentials come from it.
        let cx = SourceContext { key_pool: super::services::key_pool(&cfg).0, ..SourceContext::detached() };
        tokio::task::spawn_blocking(move || TopologyParts::build(&cfg, &cx, false)).await
    };
    match parts {
        Ok(parts) => report_parts(&cfg, parts, &mut v),
        Err(e) => v.errors.push(format!("internal error while building the pipeline: {e}")),
    }
    v
}

/// A line per polygon rule (the first 20): its size and its v1.1 cover.
fn polygon_notes(rules: &[crate::rules::Rule], v: &mut Validation) {
    let polygons: Vec<_> = rules
        .iter()
        .filter_map(|r| match r.criterion() {
            crate::rules::Criterion::Polygon { shape } => Some((r.rule_id(), shape)),
            _ => None,
        })
        .collect();
    for (id, shape) in polygons.iter().take(20) {
        v.notes.push(format!("rule {id:?}: {}", shape.summary()));
    }
    if polygons.len() > 20 {
        v.notes.push(format!("… and {} more polygon rules", polygons.len() - 20));
    }
}

/// `id = "auto"`: which ids have rules and which of them are held now.
async fn auto_id_note(t: crate::rules::RuleType, conn: &mut redis::aio::ConnectionManager, v: &mut Validation) {
    use crate::coordination::lease;
    let ids = match lease::ids_with_rules(conn, t).await {
        Ok(ids) => ids,
        Err(e) => return v.errors.push(format!("rules: cannot list the ids with rules: {e}")),
    };
    if ids.is_empty() {
        v.warnings.push(format!("id = \"auto\": no {t} id has rules yet; the collector will stand by until one has"));
        return;
    }
    let mut parts = Vec::new();
    for id in ids {
        let key = lease::lease_key(crate::rules::Collector::new(t, id));
        let holder: Option<String> = redis::cmd("GET").arg(&key).query_async(conn).await.ok().flatten();
        parts.push(match holder {
            Some(h) => format!("{id} (held by {h})"),
            None => format!("{id} (free)"),
        });
    }
    v.notes.push(format!("id = \"auto\": {t} ids with rules: {}", parts.join(", ")));
}

/// The rules: reachable, each valid, within the per-connection limits.
async fn check_rules(cfg: &LoadedConfig, v: &mut Validation) {
    let c = &cfg.config;
    let who = c.traptor.collector();
    let mut conn = None;
    if let Some(Coordination { url, .. }) = &cfg.coordination {
        match crate::redis_conn::connect(url, None).await {
            Ok(c) => {
                v.notes.push(format!("redis: {url} reachable"));
                conn = Some(c);
            }
            Err(e) => {
                v.errors.push(format!("rules.url: {e}"));
                if c.rules.component().redis_url().is_some() {
                    return;
                }
            }
        }
    }
    if let (true, Some(conn)) = (c.traptor.id.is_auto(), conn.as_mut()) {
        auto_id_note(c.traptor.traptor_type, conn, v).await;
        return;
    }
    let store = c.rules.component();
    match store.load(who, conn.as_mut()).await {
        Ok(snap) => {
            let origin = store.describe(who);
            v.notes.push(format!("rules: {} valid in {origin}", snap.rules.len()));
            polygon_notes(&snap.rules, v);
            for p in &snap.problems {
                v.errors.push(format!("invalid rule at {p}"));
            }
            for l in snap.limit_violations() {
                v.errors.push(format!("{origin}: {l}"));
            }
            if snap.rules.is_empty() {
                v.warnings.push(format!("{origin} holds no valid rule: every post will be \"Not Found\""));
            }
        }
        Err(e) => v.errors.push(format!("rules: {e}")),
    }
}

/// A note for each part that was built, an error naming each that was not.
fn report_parts(cfg: &LoadedConfig, parts: TopologyParts, v: &mut Validation) {
    if let Some(a) = &cfg.config.admin {
        v.warnings.extend(a.warnings());
        if let Err(e) = crate::admin::AdminSettings::from_config(Some(a)) {
            v.errors.push(e.to_string());
        }
    }
    for p in &parts.sources {
        let named = p.tag.as_ref().map(|t| format!(" (traptor.source {t:?})")).unwrap_or_default();
        match &p.source {
            Ok(s) => v.notes.push(format!("{}: {}{named}", p.section, s.name())),
            Err(e) if e.is_user_error() => v.errors.push(format!("{}: {e}", p.section)),
            Err(e) => v.errors.push(format!("{}: {e}", p.section)),
        }
    }
    match &parts.buffer {
        Ok(Some((dir, b))) => v.notes.push(format!(
            "buffer: {} (up to {} bytes on disk, then {})",
            dir.display(),
            b.max_bytes,
            b.overflow.as_str()
        )),
        Ok(None) => {}
        Err(e) => v.errors.push(e.to_string()),
    }
    match &parts.sink {
        Ok(s) => v.notes.push(format!("sink: {}", s.name())),
        Err(e) => v.errors.push(format!("sink: {e}")),
    }
    match &parts.stages {
        Ok(stages) => {
            for (i, (s, c)) in stages.iter().zip(&cfg.config.stages).enumerate() {
                let d = &s.description;
                v.notes.push(format!(
                    "stages[{i}] {:?}: {} {} ({:?}) from {}, ABI {} (host {ABI_VERSION}), config accepted",
                    c.name,
                    d.name,
                    d.version,
                    d.kind,
                    c.plugin,
                    s.component().abi
                ));
            }
        }
        Err(errors) => v.errors.extend(errors.iter().map(ToString::to_string)),
    }
    match &parts.dedup {
        Ok(Some(d)) => v.notes.push(format!("dedup: {} ids remembered from earlier runs", d.len())),
        Ok(None) => {}
        Err(e) => v.errors.push(format!("dedup: {e}")),
    }
    match &parts.dead_letter {
        Some(Ok(s)) => v.notes.push(format!("dead letters: {}", s.name())),
        Some(Err(e)) => v.errors.push(format!("dead_letter: {e}")),
        None => {}
    }
}

/// The file as it will run, for `validate --print`: the environment's values
/// in, the identity applied; a password in a URL and any value under a key
/// that names a secret (`password`, `secret`, `token`, `pass`) masked.
/// Secrets read from `{ env }`/`{ file }` are not in the file at all.
pub fn printable(cfg: &LoadedConfig) -> String {
    let Ok(mut doc) = cfg.text.parse::<toml::Table>() else { return String::new() };
    if let Some(toml::Value::Table(t)) = doc.get_mut("traptor") {
        let c = &cfg.config.traptor;
        t.insert("type".into(), toml::Value::String(c.traptor_type.as_str().into()));
        let id = match c.id {
            crate::config::IdSetting::Fixed(n) => toml::Value::Integer(i64::from(n)),
            crate::config::IdSetting::Auto => toml::Value::String("auto".into()),
        };
        t.insert("id".into(), id);
    }
    mask_table(&mut doc);
    toml::to_string(&doc).unwrap_or_default()
}

fn mask_table(t: &mut toml::Table) {
    for (key, value) in t.iter_mut() {
        let k = key.to_ascii_lowercase();
        let secret = ["password", "secret", "token", "pass"].iter().any(|s| k.contains(s));
        match value {
            toml::Value::String(s) if secret => *s = "*****".into(),
            toml::Value::String(s) if s.contains("://") => {
                *s = crate::redis_conn::RedisUrl::new(s.clone()).to_string();
            }
            toml::Value::Table(inner) => mask_table(inner),
            toml::Value::Array(items) => {
                for item in items {
                    if let toml::Value::Table(inner) = item {
                        mask_table(inner);
                    }
                }
            }
            _ => {}
        }
    }
}
