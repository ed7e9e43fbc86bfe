//! What a CPU worker does to one batch: decode, classify, match, wrap.
//!
//! Pure with respect to I/O (it only counts and logs), so tests and benches call
//! [`process_batch`] directly.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::envelope::{self, Identity, RuleJson};
use crate::matcher::{Matcher, Scratch};
use crate::post::{Message, v1};
use crate::rules::RuleSnapshot;
use crate::telemetry::{BAD_RECORDS_LOGGED, Metrics};

use super::{OutBatch, RawBatch};

/// A rule set compiled for the hot path; swapped atomically on reload.
#[derive(Debug)]
pub struct Compiled {
    pub matcher: Matcher,
    pub rule_json: RuleJson,
}

impl Compiled {
    pub fn new(snapshot: &RuleSnapshot) -> Compiled {
        let rules = snapshot.rules.clone();
        let rule_json = RuleJson::new(&rules);
        Compiled { matcher: Matcher::new(rules), rule_json }
    }
}

/// What every worker shares.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    pub identity: Identity,
    pub forward_control: bool,
    pub metrics: Arc<Metrics>,
    /// Names the input in error reports (a file path, "synthetic" …).
    pub source_name: Arc<str>,
}

/// Per-worker reusable buffers.
#[derive(Debug, Default)]
pub struct WorkerScratch {
    matcher: Scratch,
    matched: Vec<u32>,
    out: Vec<u8>,
}

/// Turn one raw batch into sink-ready records. Bad records are counted and
/// (the first few) logged with their origin; they never affect the others.
pub fn process_batch(
    ctx: &WorkerContext,
    compiled: &Compiled,
    batch: &RawBatch,
    scratch: &mut WorkerScratch,
) -> OutBatch {
    let m = &ctx.metrics;
    let mut out = OutBatch::with_seq(batch.seq);
    Metrics::add(&m.records_in, batch.len() as u64);
    Metrics::add(&m.bytes_in, batch.bytes() as u64);
    let (mut posts, mut matched_posts, mut rule_matches) = (0u64, 0u64, 0u64);
    for (raw, origin) in batch.iter() {
        match v1::decode(raw) {
            Ok(Message::Post(post)) => {
                posts += 1;
                compiled.matcher.match_post(&post, &mut scratch.matcher, &mut scratch.matched);
                if !scratch.matched.is_empty() {
                    matched_posts += 1;
                    rule_matches += scratch.matched.len() as u64;
                }
                match envelope::write_post(
                    raw,
                    &post,
                    ctx.identity,
                    &scratch.matched,
                    &compiled.rule_json,
                    None,
                    &mut scratch.out,
                ) {
                    Ok(()) => out.push(&scratch.out, &post.id),
                    Err(e) => {
                        let n = m.envelope_errors.fetch_add(1, Relaxed);
                        if n < BAD_RECORDS_LOGGED {
                            tracing::warn!(input = %ctx.source_name, line = origin, error = %e, "post skipped");
                        }
                    }
                }
            }
            Ok(Message::Control(c)) => {
                m.control(c.kind);
                if let Some(n) = c.undelivered {
                    m.limit_undelivered.fetch_max(n, Relaxed);
                }
                if ctx.forward_control {
                    envelope::write_control(raw, &mut scratch.out);
                    out.push(&scratch.out, "");
                } else {
                    Metrics::add(&m.control_dropped, 1);
                }
            }
            Err(e) => {
                let n = m.malformed.fetch_add(1, Relaxed);
                if n < BAD_RECORDS_LOGGED {
                    tracing::warn!(
                        input = %ctx.source_name,
                        line = origin,
                        error = %e,
                        preview = %preview(raw),
                        "malformed record skipped"
                    );
                } else if n == BAD_RECORDS_LOGGED {
                    tracing::warn!(input = %ctx.source_name, "more malformed records; only counting them from now on");
                }
            }
        }
    }
    Metrics::add(&m.posts, posts);
    Metrics::add(&m.posts_matched, matched_posts);
    Metrics::add(&m.posts_unmatched, posts - matched_posts);
    Metrics::add(&m.rule_matches, rule_matches);
    out
}

/// The first 80 characters of a record, for a log line.
fn preview(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut p: String = s.chars().take(80).collect();
    if s.chars().count() > 80 {
        p.push('…');
    }
    p
}
