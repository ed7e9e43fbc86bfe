//! Rules in Redis as `traptor-host rules …` administers them: import, list,
//! plan and notify.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use super::CoordinationError;
use super::plan::{self, Placed, Slot};
use crate::redis_conn::RedisUrl;
use crate::rules::{self, Collector, Rule, RuleType};

/// Parse `traptor-<type>:<id>:<n>`.
pub fn parse_rule_key(key: &str) -> Option<(RuleType, Slot)> {
    let rest = key.strip_prefix("traptor-")?;
    let mut it = rest.splitn(3, ':');
    let t: RuleType = it.next()?.parse().ok()?;
    let id = it.next()?.parse().ok()?;
    let n = it.next()?.parse().ok()?;
    Some((t, Slot { id, n }))
}

/// Every stored rule of one type with its slot; invalid ones are reported
/// (key and reason) and left out.
pub async fn load_type(
    conn: &mut ConnectionManager,
    t: RuleType,
    problems: &mut Vec<String>,
) -> Result<Vec<Placed>, CoordinationError> {
    let keys = rules::redis::scan(conn, &format!("traptor-{t}:*")).await?;
    let hashes = rules::redis::hgetall_many(conn, &keys).await?;
    let mut out = Vec::new();
    for (key, fields) in keys.into_iter().zip(hashes) {
        let Some((_, slot)) = parse_rule_key(&key) else {
            problems.push(format!("{key}: not a rule key (traptor-<type>:<id>:<n>); ignored"));
            continue;
        };
        if fields.is_empty() {
            continue;
        }
        match Rule::from_fields(fields, t) {
            Ok(rule) => out.push(Placed { rule, at: Some(slot) }),
            Err(e) => problems.push(format!("{key}: {e}")),
        }
    }
    Ok(out)
}

/// PUBLISH `<type>:<id>` on `channel`; returns how many subscribers got it.
pub async fn notify(conn: &mut ConnectionManager, channel: &str, who: Collector) -> Result<u64, CoordinationError> {
    Ok(conn.publish(channel, who.to_string()).await?)
}

/// What `import` or `plan --apply` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub written: usize,
    pub deleted: usize,
    pub unchanged: usize,
    pub notified: BTreeSet<u32>,
    pub load: BTreeMap<u32, usize>,
}

/// Apply a plan: write moved/new rules, delete their old keys, notify the
/// collectors whose rules changed (and only those).
async fn apply(
    conn: &mut ConnectionManager,
    t: RuleType,
    p: &plan::Plan,
    extra_changed: &BTreeMap<String, Slot>,
    channel: &str,
) -> Result<Applied, CoordinationError> {
    let mut out = Applied { load: p.load.clone(), ..Applied::default() };
    let moved: BTreeMap<&str, &plan::Move> = p.moves.iter().map(|m| (m.rule_id.as_str(), m)).collect();
    let mut changed = p.changed.clone();
    for (rule, slot) in &p.assignment {
        let key = rules::redis::rule_key(t, slot.id, slot.n);
        if let Some(m) = moved.get(rule.rule_id()) {
            rules::redis::write_rule(conn, &key, rule).await?;
            out.written += 1;
            if let Some(from) = m.from {
                rules::redis::delete(conn, &rules::redis::rule_key(t, from.id, from.n)).await?;
                out.deleted += 1;
            }
        } else if extra_changed.contains_key(rule.rule_id()) {
            rules::redis::write_rule(conn, &key, rule).await?;
            out.written += 1;
            changed.insert(slot.id);
        } else {
            out.unchanged += 1;
        }
    }
    for id in changed {
        notify(conn, channel, Collector::new(t, id)).await?;
        out.notified.insert(id);
    }
    Ok(out)
}

/// `rules import FILE --type T`: add or update the file's rules of type `T`,
/// placing new ones by the planner.
pub async fn import(
    conn: &mut ConnectionManager,
    path: &Path,
    t: RuleType,
    channel: &str,
    problems: &mut Vec<String>,
) -> Result<Applied, CoordinationError> {
    let snap = rules::file::load(path, t).map_err(|e| CoordinationError::Invalid(e.to_string()))?;
    problems.extend(snap.problems.iter().map(|p| format!("{p} (skipped)")));
    import_rules(conn, snap.rules.iter().cloned(), t, channel, problems).await
}

/// Add or update `rules` of type `t` in Redis, placing new ones by the planner.
pub async fn import_rules(
    conn: &mut ConnectionManager,
    rules: impl IntoIterator<Item = Rule>,
    t: RuleType,
    channel: &str,
    problems: &mut Vec<String>,
) -> Result<Applied, CoordinationError> {
    let mut existing = load_type(conn, t, problems).await?;
    let index: BTreeMap<String, usize> =
        existing.iter().enumerate().map(|(i, p)| (p.rule.rule_id().to_owned(), i)).collect();
    let mut updated = BTreeMap::new();
    for rule in rules {
        if rule.rule_type() != t {
            problems.push(format!(
                "rule {:?} is {} but --type is {t}; skipped (import it with --type {})",
                rule.rule_id(),
                rule.rule_type(),
                rule.rule_type()
            ));
            continue;
        }
        match index.get(rule.rule_id()) {
            Some(&i) => {
                if existing[i].rule.fields_json() != rule.fields_json() {
                    if let Some(slot) = existing[i].at {
                        updated.insert(rule.rule_id().to_owned(), slot);
                    }
                    existing[i].rule = rule;
                }
            }
            None => existing.push(Placed { rule, at: None }),
        }
    }
    let p = plan::plan(t, existing);
    apply(conn, t, &p, &updated, channel).await
}

/// `rules plan`: print (and with `apply`, carry out) the assignment of one type.
pub async fn plan_type(
    conn: &mut ConnectionManager,
    t: RuleType,
    do_apply: bool,
    channel: &str,
    out: &mut dyn Write,
    problems: &mut Vec<String>,
) -> Result<plan::Plan, CoordinationError> {
    let placed = load_type(conn, t, problems).await?;
    let total = placed.len();
    let p = plan::plan(t, placed);
    let w = |out: &mut dyn Write, s: String| {
        let _ = writeln!(out, "{s}");
    };
    w(
        out,
        format!(
            "{t}: {total} rules, {} units; limit {} per connection; {} connection(s) needed",
            p.load.values().sum::<usize>(),
            t.connection_limit(),
            p.minimum_connections
        ),
    );
    for (id, used) in &p.load {
        w(out, format!("  {t}:{id}  {used} units"));
    }
    for (rule, slot) in &p.assignment {
        if let crate::rules::Criterion::Polygon { shape } = rule.criterion() {
            w(out, format!("  rule {} on {t}:{}: {}", rule.rule_id(), slot.id, shape.summary()));
        }
    }
    for m in &p.moves {
        let from = m.from.map_or_else(|| "(new)".to_owned(), |f| format!("{t}:{}:{}", f.id, f.n));
        w(out, format!("  move rule {} {from} -> {t}:{}:{}", m.rule_id, m.to.id, m.to.n));
    }
    if p.moves.is_empty() {
        w(out, "  no rule needs to move".into());
    }
    if do_apply {
        let a = apply(conn, t, &p, &BTreeMap::new(), channel).await?;
        w(out, format!("  applied: {} written, {} deleted, notified {:?}", a.written, a.deleted, a.notified));
    }
    Ok(p)
}

/// `rules list`: one line per rule (JSON), optionally of one type / collector.
pub async fn list(
    conn: &mut ConnectionManager,
    t: Option<RuleType>,
    id: Option<u32>,
    out: &mut dyn Write,
) -> Result<usize, CoordinationError> {
    let pattern = match (t, id) {
        (Some(t), Some(id)) => format!("traptor-{t}:{id}:*"),
        (Some(t), None) => format!("traptor-{t}:*"),
        (None, _) => "traptor-*".to_owned(),
    };
    let keys: Vec<String> = rules::redis::scan(conn, &pattern)
        .await?
        .into_iter()
        .filter(|k| parse_rule_key(k).is_some_and(|(_, s)| id.is_none_or(|i| s.id == i)))
        .collect();
    let hashes = rules::redis::hgetall_many(conn, &keys).await?;
    let mut n = 0;
    for (key, fields) in keys.iter().zip(hashes) {
        let obj: serde_json::Map<String, serde_json::Value> =
            fields.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
        let line = serde_json::json!({ "key": key, "rule": obj });
        let _ = writeln!(out, "{line}");
        n += 1;
    }
    Ok(n)
}

/// Connect for a command (no retry: a clear error at once).
pub async fn connect_cli(url: &RedisUrl) -> Result<ConnectionManager, CoordinationError> {
    Ok(crate::redis_conn::connect(url, None).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_keys_parse() {
        assert_eq!(parse_rule_key("traptor-track:0:12"), Some((RuleType::Track, Slot { id: 0, n: 12 })));
        assert_eq!(parse_rule_key("traptor-follow:3:0"), Some((RuleType::Follow, Slot { id: 3, n: 0 })));
        assert_eq!(parse_rule_key("traptor-track:x:1"), None);
        assert_eq!(parse_rule_key("stats:track:0:1"), None);
    }
}
