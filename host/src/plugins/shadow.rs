//! Shadow stages: a candidate plugin version runs on a sample of the live
//! stage's posts, on the same input, after the live version; its answers
//! are compared with the live ones and never reach the output or drop a
//! post. Counted per stage; the last differences are kept for
//! `GET /api/stages/<name>/shadow`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Deserialize;

use super::answers::{Action, Answers};
use super::oci::PluginSource;

/// Differences kept per stage.
pub const KEPT_DIFFERENCES: usize = 100;
/// Distinct field names counted one by one (the rest as `"other"`), so a
/// candidate that writes random keys cannot grow the metrics.
const MAX_FIELDS: usize = 50;

/// `[stages.shadow]` (or `shadow = { … }` inline).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// The candidate component: a path or `oci://…`.
    pub plugin: PluginSource,
    /// Its configuration (default: none).
    #[serde(default)]
    pub config: toml::Table,
    /// The share of the stage's posts it sees, 0 to 1 (by post id, so the
    /// same posts across restarts and collectors).
    #[serde(default = "default_sample")]
    pub sample: f64,
    /// Its own limits (default: the live stage's).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub memory_limit_mib: Option<u64>,
}

fn default_sample() -> f64 {
    0.1
}

/// One post's answer, as compared.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Kept,
    Enriched { fields: serde_json::Value },
    Dropped { reason: String },
    Error { error: String },
}

impl Outcome {
    /// Every post's answer in `answers`, for a batch of `n` posts (kept when not named).
    pub fn all(answers: &Answers, n: usize) -> Vec<Outcome> {
        let mut out = vec![Outcome::Kept; n];
        for a in &answers.changes {
            if let Some(o) = out.get_mut(a.post) {
                *o = Outcome::of(answers, a);
            }
        }
        out
    }

    fn of(answers: &Answers, a: &super::answers::Answer) -> Outcome {
        let text = answers.text(a).into_owned();
        match a.action {
            Action::Enrich => match serde_json::from_str(&text) {
                Ok(fields) => Outcome::Enriched { fields },
                Err(e) => Outcome::Error { error: format!("enrichment is not JSON: {e}") },
            },
            Action::Drop => Outcome::Dropped { reason: text },
            Action::Error => Outcome::Error { error: text },
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Outcome::Kept => "kept",
            Outcome::Enriched { .. } => "enriched",
            Outcome::Dropped { .. } => "dropped",
            Outcome::Error { .. } => "error",
        }
    }
}

/// Top-level enrichment fields whose values differ (present in one only
/// counts); empty when the outcomes are the same.
pub fn differing_fields(live: &Outcome, candidate: &Outcome) -> Vec<String> {
    match (live, candidate) {
        (Outcome::Enriched { fields: a }, Outcome::Enriched { fields: b }) => {
            let empty = serde_json::Map::new();
            let (a, b) = (a.as_object().unwrap_or(&empty), b.as_object().unwrap_or(&empty));
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).cloned().collect()
        }
        _ => Vec::new(),
    }
}

/// What one shadow stage has seen.
#[derive(Debug, Default)]
pub struct ShadowStats {
    pub compared: AtomicU64,
    pub same: AtomicU64,
    pub different: AtomicU64,
    /// Whole batches the candidate failed (trap, time, memory).
    pub failures: AtomicU64,
    fields: Mutex<BTreeMap<String, u64>>,
    differences: Mutex<VecDeque<serde_json::Value>>,
}

impl ShadowStats {
    /// Count one post's comparison, keeping it when the outcomes differ.
    pub fn record(&self, post_id: &str, live: &Outcome, candidate: &Outcome) {
        self.compared.fetch_add(1, Relaxed);
        let fields = differing_fields(live, candidate);
        let same = live.kind() == candidate.kind() && (fields.is_empty()) && live == candidate;
        if same {
            self.same.fetch_add(1, Relaxed);
            return;
        }
        self.different.fetch_add(1, Relaxed);
        if let Ok(mut f) = self.fields.lock() {
            for name in &fields {
                // A metrics label: plain names only (a candidate's keys are
                // arbitrary text), and a bounded number of them.
                let plain = name.len() <= 64
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
                let known = f.contains_key(name) || f.len() < MAX_FIELDS;
                let key = if plain && known { name.clone() } else { "other".to_owned() };
                *f.entry(key).or_default() += 1;
            }
        }
        let d = serde_json::json!({"post_id": post_id, "live": live, "candidate": candidate, "fields": fields});
        if let Ok(mut ds) = self.differences.lock() {
            if ds.len() >= KEPT_DIFFERENCES {
                ds.pop_front();
            }
            ds.push_back(d);
        }
    }

    /// Differences per field, for `/metrics`.
    pub fn field_counts(&self) -> Vec<(String, u64)> {
        self.fields.lock().map(|f| f.iter().map(|(k, v)| (k.clone(), *v)).collect()).unwrap_or_default()
    }

    /// `{"compared","same","different","failures","differences":[…]}`, newest last.
    pub fn report(&self) -> serde_json::Value {
        let differences: Vec<serde_json::Value> =
            self.differences.lock().map(|d| d.iter().cloned().collect()).unwrap_or_default();
        serde_json::json!({
            "compared": self.compared.load(Relaxed),
            "same": self.same.load(Relaxed),
            "different": self.different.load(Relaxed),
            "failures": self.failures.load(Relaxed),
            "fields": self.field_counts().into_iter().collect::<BTreeMap<_, _>>(),
            "differences": differences,
        })
    }
}

/// Whether post `id` is in a sample of `share` (0–1): a hash of the id, so
/// the same posts everywhere.
pub fn sampled(id: &str, share: f64) -> bool {
    if share >= 1.0 {
        return true;
    }
    let h = xxhash_rust::xxh3::xxh3_64(id.as_bytes());
    (h as f64 / u64::MAX as f64) < share
}

/// `plugin promote`: the pipeline file's text with stage `stage`'s shadow
/// candidate made its plugin — its `plugin`, `config` and own limits
/// replace the stage's, the `shadow` entry goes, comments and layout stay.
/// Returns the new text and the promoted plugin.
pub fn promoted_text(text: &str, stage: &str) -> Result<(String, String), String> {
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| format!("not TOML: {e}"))?;
    let stages = doc.get_mut("stages").and_then(toml_edit::Item::as_array_of_tables_mut).ok_or("has no [[stages]]")?;
    let names: Vec<String> =
        stages.iter().filter_map(|t| t.get("name").and_then(|n| n.as_str()).map(str::to_owned)).collect();
    let table = stages
        .iter_mut()
        .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(stage))
        .ok_or_else(|| format!("no stage {stage:?} (stages: {})", names.join(", ")))?;
    let shadow = table.remove("shadow").ok_or_else(|| format!("stage {stage:?} has no shadow to promote"))?;
    let field = |k: &str| -> Option<toml_edit::Item> {
        match &shadow {
            toml_edit::Item::Table(t) => t.get(k).cloned(),
            toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => t.get(k).cloned().map(toml_edit::Item::Value),
            _ => None,
        }
    };
    let plugin = field("plugin")
        .and_then(|p| p.as_str().map(str::to_owned))
        .ok_or_else(|| format!("stage {stage:?}: its shadow names no plugin"))?;
    table.insert("plugin", toml_edit::value(plugin.clone()));
    table.remove("config");
    if let Some(config) = field("config") {
        let config = match config {
            toml_edit::Item::Table(t) => toml_edit::Item::Value(toml_edit::Value::InlineTable(t.into_inline_table())),
            other => other,
        };
        table.insert("config", config);
    }
    for limit in ["timeout_ms", "memory_limit_mib"] {
        if let Some(v) = field(limit) {
            table.insert(limit, v);
        }
    }
    Ok((doc.to_string(), plugin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_compare_by_kind_and_fields() {
        let e = |v: serde_json::Value| Outcome::Enriched { fields: v };
        let s = ShadowStats::default();
        s.record("1", &e(serde_json::json!({"a": 1, "b": 2})), &e(serde_json::json!({"b": 2, "a": 1})));
        s.record("2", &e(serde_json::json!({"a": 1})), &e(serde_json::json!({"a": 2, "c": 0})));
        s.record("3", &Outcome::Kept, &Outcome::Dropped { reason: "spam".into() });
        s.record("4", &Outcome::Kept, &Outcome::Kept);
        let r = s.report();
        assert_eq!((r["compared"].as_u64(), r["same"].as_u64(), r["different"].as_u64()), (Some(4), Some(2), Some(2)));
        assert_eq!(r["differences"][0]["fields"], serde_json::json!(["a", "c"]));
        assert_eq!(r["differences"][1]["candidate"]["outcome"], "dropped");
        assert_eq!(r["fields"]["a"], 1);
        // A candidate's odd keys never become metric labels.
        s.record("5", &e(serde_json::json!({})), &e(serde_json::json!({"a\"b\nc": 1})));
        assert_eq!(s.field_counts().iter().find(|(k, _)| k == "other").map(|x| x.1), Some(1));
        assert!(s.field_counts().iter().all(|(k, _)| !k.contains('"')));
        let n = (0..10_000).filter(|i| sampled(&i.to_string(), 0.1)).count();
        assert!((800..1200).contains(&n), "{n}");
        assert!(sampled("x", 1.0));
    }
}
