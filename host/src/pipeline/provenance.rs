//! `traptor.provenance` (DESIGN §5): which collector, rule set, stages,
//! source position and API key produced a post, so an output file can say
//! how each of its posts was made months later.
//!
//! ```json
//! "provenance": {
//!   "collector": {"type": "track", "id": 0, "host": "collector-7"},
//!   "rules": {"count": 12, "sha256": "…"},
//!   "stages": [{"name": "lang", "plugin": "oci://…:1.2.0", "digest": "sha256:…", "version": "1.2.0"}],
//!   "source": {"name": "x_v2_stream", "format": "x_v2", "cursor": 1725911162087264},
//!   "key": "team-a"
//! }
//! ```
//!
//! Everything but the cursor is the same for every post of a batch: it is
//! serialised once per batch (the rule-set hash once per rule set, the
//! stages once per stage set) and copied into each envelope. `key` is the
//! *name* of the pool key in use (`null` without a key pool); a secret is
//! never written. `cursor` is the source's resume position when a post
//! carries one: Jetstream's `time_us`, a Mastodon status id.

use std::fmt::Write as _;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::envelope::{Cursor, Provenance};
use crate::plugins::Stage;
use crate::post::{Format, PostView};
use crate::rules::{Collector, Rule};

/// `{"type":…,"id":…,"host":…}`: written once per run.
pub fn collector_json(identity: Collector) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    format!("{{\"type\":\"{}\",\"id\":{},\"host\":{}}}", identity.rule_type, identity.id, serde_json::Value::from(host))
}

/// `{"count":N,"sha256":"<hex>"}`. The hash is of the rule set in canonical
/// order: each rule's stored fields as compact JSON with its keys sorted,
/// the rules' lines sorted, each line ended by `\n`. The same set hashes the
/// same whether it came from a file or Redis, in whatever order.
pub fn rules_json(rules: &[Rule]) -> String {
    let mut lines: Vec<String> = rules.iter().map(canonical_rule).collect();
    lines.sort_unstable();
    let mut h = Sha256::new();
    for l in &lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    let mut out = format!("{{\"count\":{},\"sha256\":\"", rules.len());
    for b in h.finalize() {
        let _ = write!(out, "{b:02x}");
    }
    out.push_str("\"}");
    out
}

/// A rule's fields as compact JSON, keys sorted.
pub fn canonical_rule(rule: &Rule) -> String {
    let fields: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_str(rule.fields_json()).unwrap_or_default();
    serde_json::to_string(&fields).unwrap_or_default()
}

/// `[{"name":…,"plugin":…,"digest":…,"version":…},…]` in pipeline order.
pub fn stages_json(stages: &[Arc<Stage>]) -> String {
    let list: Vec<serde_json::Value> = stages
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": &*s.name,
                "plugin": s.origin.plugin,
                "digest": s.origin.digest,
                "version": s.description.version,
            })
        })
        .collect();
    serde_json::Value::from(list).to_string()
}

/// The provenance every post of one batch shares, serialised once.
#[derive(Debug)]
pub struct BatchProvenance {
    head: String,
    tail: String,
    cursor: CursorFrom,
}

/// Where a format's resume position is in a post.
#[derive(Debug, Clone, Copy)]
enum CursorFrom {
    /// The decoder's `position` (Jetstream `time_us`).
    Position,
    /// The post id (Mastodon's `since_id`).
    PostId,
    None,
}

impl BatchProvenance {
    /// From the parts' JSON ([`collector_json`], [`rules_json`],
    /// [`stages_json`]) and the batch's source: its name, format and the
    /// pool key it connects with.
    pub fn new(
        collector: &str,
        rules: &str,
        stages: &str,
        source: Option<(&str, Format, Option<Arc<str>>)>,
    ) -> BatchProvenance {
        let mut head = String::with_capacity(256 + stages.len());
        head.push_str("{\"collector\":");
        head.push_str(collector);
        head.push_str(",\"rules\":");
        head.push_str(rules);
        head.push_str(",\"stages\":");
        head.push_str(stages);
        let (format, key) = match source {
            Some((label, format, key)) => {
                let _ = write!(head, ",\"source\":{{\"name\":{}", serde_json::Value::from(label));
                (Some(format), key)
            }
            None => {
                head.push_str(",\"source\":{\"name\":null");
                (None, None)
            }
        };
        let _ = write!(head, ",\"format\":{}", format.map_or("null".into(), |f| format!("\"{}\"", f.as_str())));
        let tail = match key {
            Some(k) => format!("}},\"key\":{}}}", serde_json::Value::from(&*k)),
            None => "},\"key\":null}".to_owned(),
        };
        let cursor = match format {
            Some(Format::Jetstream) => CursorFrom::Position,
            Some(Format::Mastodon) => CursorFrom::PostId,
            _ => CursorFrom::None,
        };
        BatchProvenance { head, tail, cursor }
    }

    /// The provenance of one post of the batch.
    pub fn of<'a>(&'a self, post: &'a PostView<'_>) -> Provenance<'a> {
        let cursor = match self.cursor {
            CursorFrom::Position => post.position.map(Cursor::Number),
            CursorFrom::PostId => Some(Cursor::Text(&post.id)),
            CursorFrom::None => None,
        };
        Provenance { head: &self.head, cursor, tail: &self.tail }
    }
}
