//! What a CPU worker does to one batch: decode, classify, match, run the
//! stages, wrap.
//!
//! Without stages each record is wrapped as soon as it is matched. With stages
//! the batch's posts are decoded and matched first, then each stage sees the
//! posts still alive as one call, then the survivors are wrapped in source
//! order. Pure with respect to I/O (it only counts and logs), so tests and
//! benches call [`process_batch`] directly.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use arc_swap::ArcSwap;

use crate::envelope::{self, Extra};
use crate::matcher::{Matcher, Scratch};
use crate::plugins::{Action, OnError, Stage, StageInstance, StagePost};
use crate::post::{self, Message, PostView};
use crate::rules::RemoteRuleIds;
use crate::telemetry::{BAD_RECORDS_LOGGED, Metrics};

use super::context::{Compiled, StageSet, WorkerContext};
use super::provenance::BatchProvenance;
use crate::batch::{OutBatch, RawBatch};

/// Per-worker reusable buffers and the worker's stage instances (kept warm).
#[derive(Debug, Default)]
pub struct WorkerScratch {
    matcher: Scratch,
    matched: Vec<u32>,
    out: Vec<u8>,
    instances: Vec<Option<StageInstance>>,
    /// Instances of the stages' shadow candidates, by stage.
    shadows: Vec<Option<StageInstance>>,
    /// The [`StageSet::generation`] the instances belong to.
    generation: u64,
    /// Matches per rule index in the current batch (stats).
    hits: Vec<u64>,
}

/// Run a stage's candidate on the sampled posts of `batch` (the live
/// stage's input) and compare its answers with the live ones; nothing it
/// answers reaches a post.
fn run_shadow(
    sh: &crate::plugins::Shadow,
    slot: &mut Option<StageInstance>,
    batch: &[StagePost<'_>],
    live: &crate::plugins::Answers,
    compiled: &Compiled,
) {
    use crate::plugins::shadow::{Outcome, sampled};
    let picked: Vec<usize> = (0..batch.len()).filter(|&i| sampled(&batch[i].view.id, sh.sample)).collect();
    if picked.is_empty() {
        return;
    }
    let sub: Vec<StagePost<'_>> = picked.iter().map(|&i| batch[i]).collect();
    let live = Outcome::all(live, batch.len());
    match sh.stage.process(slot, &sub, compiled.matcher.rules()) {
        Ok(candidate) => {
            let candidate = Outcome::all(&candidate, sub.len());
            for (k, &i) in picked.iter().enumerate() {
                sh.stats.record(&batch[i].view.id, &live[i], &candidate[k]);
            }
        }
        // A candidate bypassed by its breaker is not compared.
        Err(crate::plugins::CallFailure::CircuitOpen) => {}
        Err(failure) => {
            sh.stats.failures.fetch_add(1, Relaxed);
            let error = Outcome::Error { error: failure.to_string() };
            for &i in &picked {
                sh.stats.record(&batch[i].view.id, &live[i], &error);
            }
        }
    }
}

/// A stage with `on_error = "fail"` failed; the pipeline must stop.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct FatalStageError(pub String);

enum Fate {
    Alive,
    Removed,
    DeadLetter { stage: Arc<str>, error: String },
}

struct PostItem<'a> {
    raw: &'a [u8],
    view: Box<PostView<'a>>,
    matched: Vec<u32>,
    /// `"stage":{...}` members, comma-separated.
    enrichments: String,
    fate: Fate,
}

enum Item<'a> {
    Post(PostItem<'a>),
    Control(&'a [u8]),
}

/// Turn one raw batch into sink-ready records. Bad records are counted and
/// (the first few) logged with their origin; they never affect the others.
pub fn process_batch(
    ctx: &WorkerContext,
    compiled: &Compiled,
    batch: &RawBatch,
    scratch: &mut WorkerScratch,
) -> Result<OutBatch, FatalStageError> {
    let ctx = &*ctx.for_source(batch.source);
    let m = &ctx.metrics;
    let mut out = out_batch(ctx, batch);
    let set = ctx.stages.load_full();
    let staged = !set.stages.is_empty();
    let prov = batch_provenance(ctx, compiled, &set, batch.source);
    let prov = prov.as_ref();
    let mut items: Vec<Item<'_>> = Vec::new();
    let mut tally = Tally::default();
    // Shared dedup settles the whole batch in one Redis round trip first:
    // every record is decoded up front (once) and taken from here below.
    let mut decoded: Option<Vec<Option<Decoded<'_>>>> = None;
    let mut shared_dups = Vec::new();
    // With the buffer: the keys let through, kept until the batch is written.
    let mut staged_keys = Vec::new();
    if let Some(d) = ctx.dedup.as_ref().filter(|d| d.is_shared()) {
        let all: Vec<Option<Decoded<'_>>> = batch.iter().map(|(raw, _)| Some(post::decode(ctx.format, raw))).collect();
        shared_dups = shared_duplicates(ctx, d, batch.seq, &all);
        decoded = Some(all);
    }
    // With the admin listener: the batch's posts, for its recent ring.
    let mut recent: Vec<&[u8]> = Vec::new();
    for (i, (raw, origin)) in batch.iter().enumerate() {
        let message = decoded.as_mut().and_then(|all| all.get_mut(i)).and_then(Option::take);
        match message.unwrap_or_else(|| post::decode(ctx.format, raw)) {
            Ok(Message::Post(post)) => {
                if ctx.recent.is_some() {
                    recent.push(raw);
                }
                if let Some(d) = &ctx.dedup {
                    // The key is made once: checked here (locally), kept below
                    // until the batch is written (with the buffer).
                    let k = super::dedup::key(post.source, &post.id);
                    let duplicate = match &decoded {
                        Some(_) => shared_dups.get(i).copied().unwrap_or(false),
                        None => !d.first_key(k),
                    };
                    if duplicate {
                        Metrics::add(&m.duplicates_dropped, 1);
                        continue;
                    }
                    if d.journals() {
                        staged_keys.push(k);
                    }
                }
                if !post.surprises.is_empty() {
                    tally.surprised(&post);
                }
                attribute(ctx, compiled, &post, scratch, &mut tally);
                if staged {
                    items.push(Item::Post(PostItem {
                        raw,
                        view: post,
                        matched: scratch.matched.clone(),
                        enrichments: String::new(),
                        fate: Fate::Alive,
                    }));
                } else {
                    let matched = &scratch.matched;
                    let ids = matched.iter().map(|&i| compiled.matcher.rule(i).rule_id());
                    out.push_written(
                        |buf| wrap(ctx, compiled, raw, &post, matched, Extra::default(), prov, buf, origin),
                        &post.id,
                        ids,
                    );
                }
            }
            Ok(Message::Control(c)) if count_control(ctx, &c) => {
                if staged {
                    items.push(Item::Control(raw));
                } else {
                    push_control(&mut out, raw);
                }
            }
            Ok(Message::Control(_)) => {}
            Err(e) => malformed(ctx, raw, origin, &e),
        }
    }
    tally.publish(ctx, compiled, scratch);
    if let Some(r) = &ctx.recent {
        r.extend(ctx.format, &recent);
    }
    if let Some(d) = &ctx.dedup {
        d.stage(batch.seq, staged_keys);
    }
    if !staged {
        return Ok(out);
    }
    run_stages(&set, compiled, scratch, &mut items)?;
    wrap_items(ctx, compiled, &items, prov, scratch, &mut out);
    Ok(out)
}

/// The output batch of `batch`, with room for its records and their
/// envelopes (a few hundred bytes each); the batch counted in.
fn out_batch(ctx: &WorkerContext, batch: &RawBatch) -> OutBatch {
    let mut out = OutBatch::with_room(batch.seq, batch.bytes() + batch.len() * 512);
    out.read_at = batch.read_at;
    Metrics::add(&ctx.metrics.records_in, batch.len() as u64);
    Metrics::add(&ctx.metrics.bytes_in, batch.bytes() as u64);
    out
}

/// `traptor.provenance`'s shared part for a batch of source `source`
/// (`None` when provenance is off).
fn batch_provenance(ctx: &WorkerContext, compiled: &Compiled, set: &StageSet, source: u16) -> Option<BatchProvenance> {
    let collector = ctx.provenance.as_deref()?;
    let source = ctx.sources.get(usize::from(source)).map(|s| (&*s.label, s.format, s.key_in_use.get()));
    Some(BatchProvenance::new(collector, compiled.rules_provenance(), &set.provenance, source))
}

/// Every stage of `set` in order over the batch's posts (instances kept in
/// `scratch` per stage-set generation).
fn run_stages(
    set: &StageSet,
    compiled: &Compiled,
    scratch: &mut WorkerScratch,
    items: &mut [Item<'_>],
) -> Result<(), FatalStageError> {
    if scratch.generation != set.generation {
        scratch.instances.clear();
        scratch.shadows.clear();
        scratch.generation = set.generation;
    }
    scratch.instances.resize_with(set.stages.len(), || None);
    scratch.shadows.resize_with(set.stages.len(), || None);
    for (s, stage) in set.stages.iter().enumerate() {
        let slots = (&mut scratch.instances[s], &mut scratch.shadows[s]);
        run_stage(stage, slots, compiled, items)?;
    }
    Ok(())
}

/// A record as the decoders read it.
type Decoded<'a> = Result<Message<'a>, post::DecodeError>;

/// Which records of a batch are duplicates: seen here before, or claimed
/// by another collector in Redis. When Redis fails, the local answer stands
/// (counted; logged the first times).
fn shared_duplicates(
    ctx: &WorkerContext,
    d: &super::dedup::Dedup,
    seq: u64,
    records: &[Option<Decoded<'_>>],
) -> Vec<bool> {
    let mut dup = vec![false; records.len()];
    let mut new: Vec<(usize, &str, &str)> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        if let Some(Ok(Message::Post(p))) = r {
            if d.first(p.source, &p.id) {
                new.push((i, p.source, &p.id));
            } else {
                dup[i] = true;
            }
        }
    }
    let ids: Vec<(&str, &str)> = new.iter().map(|&(_, n, id)| (n, id)).collect();
    match d.claim(seq, &ids) {
        Ok(first) => {
            for ((i, ..), first) in new.iter().zip(first) {
                dup[*i] = !first;
            }
        }
        Err(e) => {
            let n = ctx.metrics.dedup_redis_errors.fetch_add(1, Relaxed);
            if n < 3 || n.is_power_of_two() {
                tracing::warn!(error = %e, failures = n + 1, "dedup: Redis failed; deduplicating locally only");
            }
        }
    }
    dup
}

/// Counts of one batch, published once at its end.
#[derive(Default)]
struct Tally {
    posts: u64,
    matched_posts: u64,
    rule_matches: u64,
    /// Posts in a polygon rule's covering boxes but outside the polygon.
    outside_polygon: u64,
    /// (format, field, posts, the first post's id) of the fields posts had
    /// in an unexpected JSON type: a few at most, so a list.
    surprises: Vec<(&'static str, &'static str, u64, String)>,
}

impl Tally {
    /// Count each field a post had in an unexpected type, once per post.
    #[cold]
    fn surprised(&mut self, post: &PostView<'_>) {
        for (i, s) in post.surprises.iter().enumerate() {
            if post.surprises[..i].iter().any(|e| e.field == s.field) {
                continue;
            }
            match self.surprises.iter_mut().find(|e| e.0 == post.source && e.1 == s.field) {
                Some(e) => e.2 += 1,
                None => self.surprises.push((post.source, s.field, 1, post.id.to_string())),
            }
        }
    }

    fn publish(&self, ctx: &WorkerContext, compiled: &Compiled, scratch: &mut WorkerScratch) {
        let m = &ctx.metrics;
        for (format, field, n, post_id) in &self.surprises {
            if m.field_surprises.add(format, field, *n) {
                tracing::warn!(
                    input = %ctx.source_name,
                    format = %format,
                    field = %field,
                    %post_id,
                    "a post field has an unexpected JSON type (converted, or read as absent); the post goes on (logged once per format and field)"
                );
            }
        }
        Metrics::add(&m.posts, self.posts);
        Metrics::add(&m.posts_matched, self.matched_posts);
        Metrics::add(&m.posts_unmatched, self.posts - self.matched_posts);
        Metrics::add(&m.rule_matches, self.rule_matches);
        Metrics::add(&m.posts_outside_polygon, self.outside_polygon);
        if let Some(h) = &ctx.rule_hits
            && self.rule_matches > 0
        {
            let rules = compiled.matcher.rules();
            h.add(scratch.hits.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, n)| (rules[i].rule_id(), *n)));
            scratch.hits.iter_mut().for_each(|n| *n = 0);
        }
    }
}

/// The rules `post` matched, into `scratch.matched` (sorted rule indices).
#[inline]
fn attribute(
    ctx: &WorkerContext,
    compiled: &Compiled,
    post: &PostView<'_>,
    scratch: &mut WorkerScratch,
    tally: &mut Tally,
) {
    tally.posts += 1;
    match &post.source_rules {
        // The source attributed the post (X v2 matching_rules).
        Some(entries) => {
            scratch.matched.clear();
            for e in entries {
                match resolve_source_rule(&ctx.remote_rule_ids, &compiled.matcher, e) {
                    // The API matched a polygon's covering boxes: the polygon decides.
                    Some(i) if compiled.matcher.outside_polygon_rule(i, post) => tally.outside_polygon += 1,
                    Some(i) => scratch.matched.push(i),
                    None => unresolved_source_rule(ctx, e),
                }
            }
            scratch.matched.sort_unstable();
            scratch.matched.dedup();
        }
        None => {
            compiled.matcher.match_post(post, &mut scratch.matcher, &mut scratch.matched);
            tally.outside_polygon += u64::from(scratch.matcher.outside_polygon());
        }
    }
    if let Some(l) = &compiled.limits
        && !scratch.matched.is_empty()
    {
        l.apply(&post.id, &mut scratch.matched, &ctx.metrics);
    }
    if scratch.matched.is_empty() {
        return;
    }
    tally.matched_posts += 1;
    tally.rule_matches += scratch.matched.len() as u64;
    if ctx.rule_hits.is_some() {
        if scratch.hits.len() < compiled.matcher.rules().len() {
            scratch.hits.resize(compiled.matcher.rules().len(), 0);
        }
        for &r in &scratch.matched {
            scratch.hits[r as usize] += 1;
        }
    }
}

/// The local rule a source's attribution names: by the server's rule id
/// (what the rule sync learnt), else by tag (our `rule_id`).
fn resolve_source_rule(ids: &RemoteRuleIds, matcher: &Matcher, e: &post::SourceRule<'_>) -> Option<u32> {
    e.id.as_deref()
        .and_then(|id| ids.with_local(id, |local| local.and_then(|r| matcher.index_of(r))))
        .or_else(|| e.tag.as_deref().and_then(|t| matcher.index_of(t)))
}

/// Count an attribution that names no local rule; log each server id once.
fn unresolved_source_rule(ctx: &WorkerContext, e: &post::SourceRule<'_>) {
    Metrics::add(&ctx.metrics.source_rules_unresolved, 1);
    let key = e.id.as_deref().or(e.tag.as_deref()).unwrap_or("");
    if ctx.remote_rule_ids.first_report(key) {
        tracing::warn!(
            id = ?e.id.as_deref(),
            tag = ?e.tag.as_deref(),
            known_ids = ctx.remote_rule_ids.len(),
            "the stream attributed a post to a rule that is not a local rule (reported once per id)"
        );
    }
}

/// Count a control message; true when it is to be forwarded.
fn count_control(ctx: &WorkerContext, c: &post::Control) -> bool {
    let m = &ctx.metrics;
    m.control(c.kind);
    if let Some(n) = c.undelivered {
        m.limit_undelivered.fetch_max(n, Relaxed);
        if let Some(h) = &ctx.rule_hits {
            h.limit(n);
        }
    }
    if !ctx.forward_control {
        Metrics::add(&m.control_dropped, 1);
    }
    ctx.forward_control
}

/// Count (and, the first few times, log with its origin) a record that
/// cannot be decoded.
fn malformed(ctx: &WorkerContext, raw: &[u8], origin: u64, e: &post::DecodeError) {
    let n = ctx.metrics.malformed.fetch_add(1, Relaxed);
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

/// A control message, unchanged on one line, written in place (no key, no rules).
fn push_control(out: &mut OutBatch, raw: &[u8]) {
    out.push_written(
        |buf| {
            envelope::write_control(raw, buf);
            true
        },
        "",
        std::iter::empty(),
    );
}

/// After the stages: wrap the survivors in source order, dead letters apart.
fn wrap_items(
    ctx: &WorkerContext,
    compiled: &Compiled,
    items: &[Item<'_>],
    prov: Option<&BatchProvenance>,
    scratch: &mut WorkerScratch,
    out: &mut OutBatch,
) {
    let mut enrich = String::new();
    for item in items {
        let p = match item {
            Item::Control(raw) => {
                push_control(out, raw);
                continue;
            }
            Item::Post(p) => p,
        };
        enrich.clear();
        if !p.enrichments.is_empty() {
            enrich.push('{');
            enrich.push_str(&p.enrichments);
            enrich.push('}');
        }
        let enrichments = (!enrich.is_empty()).then_some(enrich.as_str());
        match &p.fate {
            Fate::Removed => {}
            Fate::Alive => {
                let extra = Extra { enrichments, ..Extra::default() };
                let ids = p.matched.iter().map(|&i| compiled.matcher.rule(i).rule_id());
                out.push_written(
                    |buf| wrap(ctx, compiled, p.raw, &p.view, &p.matched, extra, prov, buf, 0),
                    &p.view.id,
                    ids,
                );
            }
            Fate::DeadLetter { stage, error } => {
                let extra = Extra { enrichments, dead_letter: Some((stage, error)), ..Extra::default() };
                scratch.out.clear();
                if wrap(ctx, compiled, p.raw, &p.view, &p.matched, extra, prov, &mut scratch.out, 0) {
                    out.push_dead(&scratch.out);
                }
            }
        }
    }
}

/// Start `n` CPU workers on tokio's blocking pool: each takes a batch from
/// `rx`, processes it with the rules current at that moment, and passes it on
/// (writing it itself when the sink's writer is free: `sinks::handoff`).
pub fn spawn_workers(
    n: usize,
    rx: &async_channel::Receiver<RawBatch>,
    tx: &crate::sinks::BatchTx,
    ctx: &WorkerContext,
    compiled: &Arc<ArcSwap<Compiled>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let (rx, tx, ctx, compiled) = (rx.clone(), tx.clone(), ctx.clone(), compiled.clone());
            tokio::task::spawn_blocking(move || worker_loop(&rx, &tx, &ctx, &compiled))
        })
        .collect()
}

/// One CPU worker. A panic while processing a batch is contained: the
/// batch's records are counted as lost, logged, and the worker continues
/// with fresh buffers.
fn worker_loop(
    rx: &async_channel::Receiver<RawBatch>,
    tx: &crate::sinks::BatchTx,
    ctx: &WorkerContext,
    compiled: &ArcSwap<Compiled>,
) {
    let mut scratch = WorkerScratch::default();
    let demand = &ctx.demand;
    demand.register();
    struct Unregister<'d>(&'d crate::batch::Demand);
    impl Drop for Unregister<'_> {
        fn drop(&mut self) {
            self.0.unregister();
        }
    }
    let _registered = Unregister(demand);
    loop {
        demand.enter_wait();
        let next = rx.recv_blocking();
        demand.leave_wait();
        let Ok(batch) = next else { break };
        if ctx.fatal.is_raised() {
            return;
        }
        let current = compiled.load_full();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            process_batch(ctx, &current, &batch, &mut scratch)
        }));
        let out = match result {
            Ok(Ok(out)) => out,
            Ok(Err(fatal)) => {
                ctx.fatal.raise(fatal.0);
                return;
            }
            Err(_) => {
                Metrics::add(&ctx.metrics.worker_panics, 1);
                tracing::error!(
                    batch = batch.seq,
                    records = batch.len(),
                    "internal error while processing a batch; its records were not written"
                );
                scratch = WorkerScratch::default();
                OutBatch::with_seq(batch.seq)
            }
        };
        if tx.send_blocking(out).is_err() {
            return;
        }
    }
}

/// Run one stage over the posts still alive and apply its answers (a post
/// it does not name is kept).
fn run_stage(
    stage: &Stage,
    (slot, shadow_slot): (&mut Option<StageInstance>, &mut Option<StageInstance>),
    compiled: &Compiled,
    items: &mut [Item<'_>],
) -> Result<(), FatalStageError> {
    let alive: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, it)| matches!(it, Item::Post(p) if matches!(p.fate, Fate::Alive)))
        .map(|(i, _)| i)
        .collect();
    if alive.is_empty() {
        return Ok(());
    }
    let batch: Vec<StagePost<'_>> = alive
        .iter()
        .filter_map(|&i| match &items[i] {
            Item::Post(p) => Some(StagePost { view: &p.view, raw: p.raw, matched: &p.matched }),
            Item::Control(_) => None,
        })
        .collect();
    let m = &stage.metrics;
    let result = stage.process(slot, &batch, compiled.matcher.rules());
    if let (Some(sh), Ok(answers)) = (&stage.shadow, &result) {
        run_shadow(sh, shadow_slot, &batch, answers, compiled);
    }
    drop(batch);
    let answers = match result {
        Ok(answers) => answers,
        Err(failure) => {
            let msg = failure.to_string();
            for &i in &alive {
                if let Item::Post(p) = &mut items[i] {
                    on_error(stage, p, msg.clone())?;
                }
            }
            return Ok(());
        }
    };
    m.kept.fetch_add((alive.len() - answers.changes.len()) as u64, Relaxed);
    for a in &answers.changes {
        let Some(Item::Post(p)) = alive.get(a.post).and_then(|&i| items.get_mut(i)) else { continue };
        match a.action {
            Action::Enrich => match enrichment(answers.bytes(a)) {
                Ok(obj) => {
                    m.enriched.fetch_add(1, Relaxed);
                    if !p.enrichments.is_empty() {
                        p.enrichments.push(',');
                    }
                    p.enrichments.push_str(&stage.key_json);
                    p.enrichments.push(':');
                    p.enrichments.push_str(obj);
                }
                Err(e) => {
                    m.protocol_errors.fetch_add(1, Relaxed);
                    on_error(stage, p, e)?;
                }
            },
            Action::Drop => {
                m.dropped.fetch_add(1, Relaxed);
                tracing::debug!(stage = &*stage.name, post = %p.view.id, reason = %answers.text(a), "post dropped by stage");
                p.fate = Fate::Removed;
            }
            Action::Error => {
                m.post_errors.fetch_add(1, Relaxed);
                on_error(stage, p, answers.text(a).into_owned())?;
            }
        }
    }
    Ok(())
}

/// Apply the stage's `on_error` policy to one post.
fn on_error(stage: &Stage, p: &mut PostItem<'_>, error: String) -> Result<(), FatalStageError> {
    let m = &stage.metrics;
    match stage.spec.on_error {
        OnError::Skip => {
            m.skipped.fetch_add(1, Relaxed);
        }
        OnError::Drop => {
            m.error_dropped.fetch_add(1, Relaxed);
            p.fate = Fate::Removed;
        }
        OnError::DeadLetter => {
            m.dead_lettered.fetch_add(1, Relaxed);
            p.fate = Fate::DeadLetter { stage: stage.name.clone(), error };
        }
        OnError::Fail => {
            return Err(FatalStageError(format!(
                "stage {:?} failed on post {} and its on_error is \"fail\": {error}",
                stage.name, p.view.id
            )));
        }
    }
    Ok(())
}

/// A plugin's enrichment, spliced as it is once checked: one JSON object.
fn enrichment(bytes: &[u8]) -> Result<&str, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("enrichment is not UTF-8: {e}"))?.trim();
    if !text.starts_with('{') {
        return Err(format!("enrichment is not a JSON object: {text:.80}"));
    }
    match serde_json::from_str::<serde::de::IgnoredAny>(text) {
        Ok(_) => Ok(text),
        Err(e) => Err(format!("enrichment is not valid JSON ({e}): {text:.80}")),
    }
}

/// Wrap one post; false (and counted, logged) if it cannot be wrapped.
#[allow(clippy::too_many_arguments)]
fn wrap(
    ctx: &WorkerContext,
    compiled: &Compiled,
    raw: &[u8],
    post: &PostView<'_>,
    matched: &[u32],
    extra: Extra<'_>,
    prov: Option<&BatchProvenance>,
    out: &mut Vec<u8>,
    origin: u64,
) -> bool {
    let extra = Extra { source: ctx.source_tag.as_deref(), provenance: prov.map(|p| p.of(post)), ..extra };
    match envelope::write_post(raw, post, ctx.identity, matched, compiled.matcher.rules(), extra, out) {
        Ok(()) => true,
        Err(e) => {
            let n = ctx.metrics.envelope_errors.fetch_add(1, Relaxed);
            if n < BAD_RECORDS_LOGGED {
                tracing::warn!(input = %ctx.source_name, line = origin, post = %post.id, error = %e, "post skipped");
            }
            false
        }
    }
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
