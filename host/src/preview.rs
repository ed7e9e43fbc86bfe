//! `rules preview`: what a proposed rule set would collect, against the
//! current one, over posts already seen (a replay file or a running
//! collector's recent posts), before anything is applied.
//!
//! Both sets are compiled with the pipeline's own [`Matcher`] and every
//! post is matched locally (an X v2 post's `matching_rules` name the rules
//! of the session that recorded it, not the sets compared here). Per-rule
//! rate limits and sampling are left out: the preview counts what the
//! rules match. The proposed set is also split over connections by the
//! planner (`rules plan`), each with its limit and projected posts/s over
//! the corpus's time span.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::coordination::plan::{self, Placed};
use crate::matcher::{Matcher, Scratch};
use crate::post::{self, Format, Message};
use crate::rules::{Rule, RuleSnapshot, RuleType};

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    BadRules(String),
    #[error("{path}: no post could be read ({skipped} record(s) skipped; is --format right?)")]
    EmptyCorpus { path: String, skipped: u64 },
}

/// Posts to preview against, as their raw records.
#[derive(Debug, Default)]
pub struct Corpus {
    records: Vec<(Format, Vec<u8>)>,
    /// Records that were not JSON objects or had no post id (with the
    /// first few lines that were, for the report).
    pub skipped: u64,
    pub skipped_lines: Vec<usize>,
    /// Non-post messages (deletes, limits …) passed over.
    pub control: u64,
}

impl Corpus {
    /// Every line of a replay file; `format` `None` guesses each line's
    /// format from its shape.
    pub fn read(path: &Path, format: Option<Format>) -> Result<Corpus, PreviewError> {
        let bytes = std::fs::read(path).map_err(|source| PreviewError::Read { path: path.to_owned(), source })?;
        let mut c = Corpus::default();
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if !line.iter().all(u8::is_ascii_whitespace) {
                c.push(format.unwrap_or_else(|| guess_format(line)), line.to_vec(), i + 1);
            }
        }
        Ok(c)
    }

    /// Add one record (`line` names it in the report).
    pub fn push(&mut self, format: Format, record: Vec<u8>, line: usize) {
        match post::decode(format, &record) {
            Ok(Message::Post(_)) => self.records.push((format, record)),
            Ok(Message::Control(_)) => self.control += 1,
            Err(_) => {
                self.skipped += 1;
                if self.skipped_lines.len() < 5 {
                    self.skipped_lines.push(line);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// A record's format from its top-level keys (any order, any spacing).
pub fn guess_format(record: &[u8]) -> Format {
    let Ok(serde_json::Value::Object(m)) = serde_json::from_slice::<serde_json::Value>(record) else {
        return Format::TwitterV1;
    };
    if m.contains_key("data") && !m.contains_key("id_str") {
        Format::XV2
    } else if m.contains_key("did") && (m.contains_key("time_us") || m.contains_key("commit")) {
        Format::Jetstream
    } else if m.contains_key("account") && m.contains_key("content") {
        Format::Mastodon
    } else {
        Format::TwitterV1
    }
}

/// The JSON form of a preview (`--format json`).
#[derive(Debug, Serialize)]
pub struct Report {
    pub posts: PostCounts,
    pub rules: Vec<RuleRow>,
    pub connections: Vec<Connection>,
    /// The corpus's time span in seconds (first to last post), when known.
    pub span_secs: Option<f64>,
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct PostCounts {
    pub total: u64,
    pub matched_current: u64,
    pub matched_proposed: u64,
    /// Matched by the proposed set and not the current one.
    pub gained: u64,
    /// Matched by the current set and not the proposed one.
    pub lost: u64,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct RuleRow {
    pub rule_id: String,
    pub value: String,
    pub rule_type: String,
    /// Posts attributed to the rule under each set (0 where it is absent).
    pub current: u64,
    pub proposed: u64,
}

#[derive(Debug, Serialize)]
pub struct Connection {
    pub rule_type: String,
    /// The collector id the planner gives it.
    pub id: u32,
    pub rules: usize,
    /// Units used (phrases, ids, boxes) and the API's limit per connection.
    pub units: usize,
    pub limit: usize,
    /// Corpus posts its rules match, and that over the corpus's span.
    pub posts: u64,
    pub posts_per_sec: Option<f64>,
}

/// Match the corpus with both sets.
pub fn preview(current: &[Rule], proposed: &[Rule], corpus: &Corpus) -> Report {
    let (cur, pro) = (Matcher::new(current.to_vec()), Matcher::new(proposed.to_vec()));
    let mut scratch = Scratch::default();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut counts = PostCounts::default();
    let (mut hits_cur, mut hits_pro) = (vec![0u64; current.len()], vec![0u64; proposed.len()]);
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    let plans = connections_of(proposed);
    let mut conn_posts = vec![0u64; plans.len()];
    for (format, raw) in &corpus.records {
        let Ok(Message::Post(p)) = post::decode(*format, raw) else { continue };
        counts.total += 1;
        if let Some(t) = p.created_at.as_deref().and_then(epoch_secs) {
            first = first.min(t);
            last = last.max(t);
        }
        cur.match_post(&p, &mut scratch, &mut a);
        pro.match_post(&p, &mut scratch, &mut b);
        for &i in &a {
            hits_cur[i as usize] += 1;
        }
        for &i in &b {
            hits_pro[i as usize] += 1;
        }
        counts.matched_current += u64::from(!a.is_empty());
        counts.matched_proposed += u64::from(!b.is_empty());
        counts.gained += u64::from(a.is_empty() && !b.is_empty());
        counts.lost += u64::from(!a.is_empty() && b.is_empty());
        for (k, (_, members)) in plans.iter().enumerate() {
            conn_posts[k] += u64::from(b.iter().any(|i| members.contains(i)));
        }
    }
    let span = (last > first).then(|| (last - first) as f64);
    let connections = plans
        .into_iter()
        .zip(conn_posts)
        .map(|((mut c, _), posts)| {
            c.posts = posts;
            c.posts_per_sec = span.map(|s| (posts as f64 / s * 1000.0).round() / 1000.0);
            c
        })
        .collect();
    Report { posts: counts, rules: rule_rows(current, &hits_cur, proposed, &hits_pro), connections, span_secs: span }
}

/// One row per rule id of either set, proposed rules first in file order.
fn rule_rows(current: &[Rule], hits_cur: &[u64], proposed: &[Rule], hits_pro: &[u64]) -> Vec<RuleRow> {
    let mut rows: Vec<RuleRow> = Vec::new();
    let mut at: BTreeMap<(String, String), usize> = BTreeMap::new();
    let key = |r: &Rule| (r.rule_type().to_string(), r.rule_id().to_owned());
    for (r, &n) in proposed.iter().zip(hits_pro) {
        at.insert(key(r), rows.len());
        rows.push(RuleRow {
            rule_id: r.rule_id().to_owned(),
            value: r.value().to_owned(),
            rule_type: r.rule_type().to_string(),
            current: 0,
            proposed: n,
        });
    }
    for (r, &n) in current.iter().zip(hits_cur) {
        match at.get(&key(r)) {
            Some(&i) => rows[i].current += n,
            None => {
                at.insert(key(r), rows.len());
                rows.push(RuleRow {
                    rule_id: r.rule_id().to_owned(),
                    value: r.value().to_owned(),
                    rule_type: r.rule_type().to_string(),
                    current: n,
                    proposed: 0,
                });
            }
        }
    }
    rows
}

/// The planner's split of `rules`, each connection with the indices of
/// its rules.
fn connections_of(rules: &[Rule]) -> Vec<(Connection, Vec<u32>)> {
    let mut out = Vec::new();
    for t in RuleType::ALL {
        let of_type: Vec<(u32, &Rule)> =
            rules.iter().enumerate().filter(|(_, r)| r.rule_type() == t).map(|(i, r)| (i as u32, r)).collect();
        if of_type.is_empty() {
            continue;
        }
        let placed = of_type.iter().map(|(_, r)| Placed { rule: (*r).clone(), at: None }).collect();
        let p = plan::plan(t, placed);
        for (&id, &units) in &p.load {
            // The planner keeps the rules' order: the nth assignment is the nth rule of the type.
            let members: Vec<u32> = p
                .assignment
                .iter()
                .zip(&of_type)
                .filter(|((_, slot), _)| slot.id == id)
                .map(|(_, (i, _))| *i)
                .collect();
            let c = Connection {
                rule_type: t.to_string(),
                id,
                rules: members.len(),
                units,
                limit: t.connection_limit(),
                posts: 0,
                posts_per_sec: None,
            };
            out.push((c, members));
        }
    }
    out
}

/// Seconds since the epoch of a v1.1 or RFC 3339 timestamp.
fn epoch_secs(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_str(s, "%a %b %d %H:%M:%S %z %Y")
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(s))
        .ok()
        .map(|d| d.timestamp())
}

/// Rules of a file for a preview: any invalid line refuses the file,
/// naming the file and line.
pub fn rules_file(path: &Path, default_type: RuleType) -> Result<Vec<Rule>, PreviewError> {
    let snap: RuleSnapshot = crate::rules::file::load(path, default_type)
        .map_err(|e| PreviewError::BadRules(format!("{}: {e}", path.display())))?;
    strict(snap)
}

/// A snapshot's rules, or all its problems as one error.
pub fn strict(snap: RuleSnapshot) -> Result<Vec<Rule>, PreviewError> {
    if snap.problems.is_empty() {
        return Ok(snap.rules.to_vec());
    }
    let all: Vec<String> = snap.problems.iter().map(ToString::to_string).collect();
    Err(PreviewError::BadRules(all.join("\n")))
}

/// Output styles of `rules preview`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Style {
    Table,
    Json,
    Markdown,
}

/// Write `r` in `style`.
pub fn write(r: &Report, style: Style, out: &mut dyn Write) -> std::io::Result<()> {
    match style {
        Style::Json => writeln!(out, "{}", serde_json::to_string_pretty(r).map_err(std::io::Error::other)?),
        Style::Table => write_table(r, out),
        Style::Markdown => write_markdown(r, out),
    }
}

fn write_table(r: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    let p = &r.posts;
    writeln!(
        out,
        "posts: {} total; matched: current {}, proposed {}; gained {}, lost {}",
        p.total, p.matched_current, p.matched_proposed, p.gained, p.lost
    )?;
    let w = r.rules.iter().map(|x| x.rule_id.chars().count()).max().unwrap_or(0).max(7);
    let v = r.rules.iter().map(|x| x.value.chars().count().min(40)).max().unwrap_or(0).max(5);
    writeln!(
        out,
        "\n{:<w$}  {:<9}  {:<v$}  {:>8}  {:>8}  {:>8}",
        "rule_id", "type", "value", "current", "proposed", "change"
    )?;
    for x in &r.rules {
        let value: String = x.value.chars().take(40).collect();
        let change = x.proposed as i64 - x.current as i64;
        writeln!(
            out,
            "{:<w$}  {:<9}  {:<v$}  {:>8}  {:>8}  {:>+8}",
            x.rule_id, x.rule_type, value, x.current, x.proposed, change
        )?;
    }
    writeln!(out)?;
    for c in &r.connections {
        let rate = c.posts_per_sec.map_or_else(|| "? posts/s".to_owned(), |x| format!("{x} posts/s"));
        writeln!(
            out,
            "connection {}:{}: {} rule(s), {}/{} units, {} post(s), {rate}",
            c.rule_type, c.id, c.rules, c.units, c.limit, c.posts
        )?;
    }
    Ok(())
}

fn write_markdown(r: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    let p = &r.posts;
    writeln!(out, "| posts | matched (current) | matched (proposed) | gained | lost |")?;
    writeln!(out, "|---:|---:|---:|---:|---:|")?;
    writeln!(out, "| {} | {} | {} | {} | {} |\n", p.total, p.matched_current, p.matched_proposed, p.gained, p.lost)?;
    writeln!(out, "| rule_id | type | value | current | proposed |")?;
    writeln!(out, "|---|---|---|---:|---:|")?;
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    for x in &r.rules {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            cell(&x.rule_id),
            x.rule_type,
            cell(&x.value),
            x.current,
            x.proposed
        )?;
    }
    writeln!(out, "\n| connection | rules | units | limit | posts | posts/s |")?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
    for c in &r.connections {
        let rate = c.posts_per_sec.map_or_else(|| "?".to_owned(), |x| x.to_string());
        writeln!(out, "| {}:{} | {} | {} | {} | {} | {rate} |", c.rule_type, c.id, c.rules, c.units, c.limit, c.posts)?;
    }
    Ok(())
}
