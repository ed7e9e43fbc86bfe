//! Attribution of posts to rules, exactly as DESIGN §4 (Twitter v1.1
//! statuses/filter semantics). Pure: takes a [`PostView`] and returns rule
//! indices; no I/O, no runtime.
//!
//! A [`Matcher`] is compiled once per rule-set change and shared read-only by
//! every worker (the pipeline swaps an `Arc<Matcher>` atomically). Per-post
//! working memory lives in a [`Scratch`] owned by each worker, so matching
//! allocates nothing in the steady state.
//!
//! * track: one Aho-Corasick automaton over every distinct lower-cased term;
//!   each hit is kept only if it is a whole token of its segment
//!   ([`tokens::is_token`]); a phrase matches when all its terms were hit. Rules
//!   are indexed by their first term, so only plausible phrases are checked.
//! * follow: a hash map from user id to rules, probed with the author, the
//!   retweeted author and the replied-to user (never mentions).
//! * locations: boxes tested against the point, else the place's box (an
//!   R-tree finds the candidates beyond 64 boxes, `boxes.rs`); polygons the
//!   same way, with an exact test in a grid per polygon (`polygons.rs`);
//!   native retweets never match by location.

mod boxes;
mod polygons;
pub mod tokens;

use std::collections::HashMap;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use crate::post::PostView;
use crate::rules::{Criterion, IdIndex, Rule};
use boxes::BoxIndex;
use polygons::PolygonIndex;
use tokens::{Haystack, SegKind, is_punct, is_token};

/// Up to this many distinct track terms the automaton is a DFA (matcher
/// bench: 400 phrases 34 % faster than the crate's default NFA, 10,000
/// phrases 27 %). Beyond, the NFA: at 100,000 phrases the DFA was 39 %
/// faster but doubled the process's memory (149 → 303 MB) and the compile
/// time (0.44 → 0.96 s), and a reload holds two rule sets at once.
const DFA_PATTERNS: usize = 20_000;

/// Index of a rule in [`Matcher::rules`].
pub type RuleIdx = u32;

/// Compiled rules. Cheap to share (`Arc`), immutable.
#[derive(Debug)]
pub struct Matcher {
    /// Shared with the snapshot the matcher was compiled from.
    rules: Arc<Vec<Rule>>,
    /// Built on first use: only attribution by a source (X v2) and the
    /// admin API look rules up by id, and at 1M rules the table costs
    /// ~10 MB and a tenth of the compile time.
    by_id: std::sync::OnceLock<IdIndex>,
    track: TrackIndex,
    follow: FollowIndex,
    boxes: BoxIndex,
    polygons: PolygonIndex,
}

/// Followed accounts: numeric ids as `u64` keys (a million cost ~20 MB),
/// other ids (Bluesky DIDs) as text. A value is one rule, or (high bit set)
/// an index into `shared` when several rules follow the same account.
#[derive(Debug, Default)]
struct FollowIndex {
    /// One bit per hash of a followed numeric id, 8 bits per id: most
    /// accounts a post names are not followed, and this answers "no" from
    /// a table that stays in cache instead of probing the large map
    /// (1,000,000 ids: 1 MB here, ~35 MB there).
    filter: Vec<u64>,
    numeric: HashMap<u64, u32, std::hash::BuildHasherDefault<IdHasher>>,
    text: HashMap<Box<str>, u32>,
    shared: Vec<Vec<RuleIdx>>,
}

const SHARED: u32 = 1 << 31;

/// The hash of a numeric account id: one multiply (Fibonacci hashing)
/// instead of SipHash, which was the largest part of a lookup. The keys come
/// from the rules (trusted); a post only looks them up.
#[derive(Debug, Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        // hashbrown takes the bucket from the low bits and the control byte
        // from the top 7. A product's low bits depend only on the factor's
        // low bits, so the high half is folded in first; the multiply
        // carries the low bits up into the top ones.
        self.0 = (n ^ (n >> 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl FollowIndex {
    fn add(&mut self, user_id: &str, rule: RuleIdx) {
        let slot = match numeric_id(user_id) {
            Some(n) => self.numeric.entry(n).or_insert(u32::MAX),
            None => self.text.entry(user_id.into()).or_insert(u32::MAX),
        };
        if *slot == u32::MAX {
            *slot = rule;
        } else if *slot & SHARED == 0 {
            self.shared.push(vec![*slot, rule]);
            *slot = SHARED | (self.shared.len() as u32 - 1);
        } else {
            self.shared[(*slot & !SHARED) as usize].push(rule);
        }
    }

    fn is_empty(&self) -> bool {
        self.numeric.is_empty() && self.text.is_empty()
    }

    /// Build the filter once every id is in (see `filter`).
    fn seal(&mut self) {
        let bits = (self.numeric.len() * 8).next_power_of_two().max(64);
        let mut filter = vec![0u64; bits / 64];
        for &n in self.numeric.keys() {
            let b = filter_bit(&filter, n);
            filter[b / 64] |= 1 << (b % 64);
        }
        self.filter = filter;
    }

    fn get(&self, user_id: &str) -> &[RuleIdx] {
        let slot = match numeric_id(user_id) {
            Some(n) if self.filter.is_empty() => self.numeric.get(&n),
            Some(n) => {
                let b = filter_bit(&self.filter, n);
                if self.filter[b / 64] & (1 << (b % 64)) == 0 {
                    return &[];
                }
                self.numeric.get(&n)
            }
            None => self.text.get(user_id),
        };
        match slot {
            None => &[],
            Some(s) if s & SHARED != 0 => &self.shared[(s & !SHARED) as usize],
            Some(s) => std::slice::from_ref(s),
        }
    }
}

/// The bit of `filter` (a power of two of bits) for id `n`: Fibonacci hashing.
fn filter_bit(filter: &[u64], n: u64) -> usize {
    let bits = (filter.len() * 64).trailing_zeros();
    (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

/// A canonical decimal id (no sign, no leading zero) as a number; the text
/// form keeps every other id apart from it.
fn numeric_id(s: &str) -> Option<u64> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[derive(Debug)]
struct TrackIndex {
    ac: Option<AhoCorasick>,
    /// Per pattern: (contains punctuation, starts or ends with punctuation).
    pattern_punct: Vec<(bool, bool)>,
    /// Per pattern: term id for any-token use and for hashtag-only use.
    pattern_terms: Vec<[Option<u32>; 2]>,
    n_terms: usize,
    /// Track rules: rule index and its term ids.
    phrases: Vec<(RuleIdx, Vec<u32>)>,
    /// For each term, the phrases whose first term it is.
    by_first_term: Vec<Vec<u32>>,
}

/// Per-worker working memory for [`Matcher::match_post`].
#[derive(Debug, Default)]
pub struct Scratch {
    hay: Haystack,
    hit: Vec<u64>,
    hit_list: Vec<u32>,
    outside_polygon: bool,
}

impl Scratch {
    /// The last post matched was inside a polygon rule's envelope (so in
    /// the boxes an API was asked for) but outside the polygon, and was not
    /// attributed to that rule (`traptor_posts_outside_polygon_total`).
    pub fn outside_polygon(&self) -> bool {
        self.outside_polygon
    }
    fn mark(&mut self, term: u32) {
        let (w, b) = ((term / 64) as usize, term % 64);
        if self.hit[w] & (1 << b) == 0 {
            self.hit[w] |= 1 << b;
            self.hit_list.push(term);
        }
    }
    fn is_hit(&self, term: u32) -> bool {
        self.hit[(term / 64) as usize] & (1 << (term % 64)) != 0
    }
}

impl Matcher {
    /// Compile a rule set (a `Vec<Rule>`, or the `Arc` a snapshot holds).
    pub fn new(rules: impl Into<Arc<Vec<Rule>>>) -> Matcher {
        let rules: Arc<Vec<Rule>> = rules.into();
        let mut patterns: Vec<String> = Vec::new();
        let mut pattern_of: HashMap<String, usize> = HashMap::new();
        let mut pattern_terms: Vec<[Option<u32>; 2]> = Vec::new();
        let mut n_terms = 0u32;
        let mut phrases = Vec::new();
        let mut follow = FollowIndex::default();
        // Sized once: a table grown by doubling holds the old and the new
        // one at once (at 1M ids, 18 + 36 MB at the load's peak).
        let n_follow = rules.iter().filter(|r| matches!(r.criterion(), Criterion::Follow { .. })).count();
        follow.numeric.reserve(n_follow);
        let mut boxes = Vec::new();
        let mut shapes = Vec::new();

        for (i, rule) in rules.iter().enumerate() {
            let idx = i as RuleIdx;
            match rule.criterion() {
                Criterion::Track { terms, hashtag_only } => {
                    let slot = usize::from(*hashtag_only);
                    let ids: Vec<u32> = terms
                        .iter()
                        .map(|t| {
                            let p = *pattern_of.entry(t.clone()).or_insert_with(|| {
                                patterns.push(t.clone());
                                pattern_terms.push([None, None]);
                                patterns.len() - 1
                            });
                            *pattern_terms[p][slot].get_or_insert_with(|| {
                                n_terms += 1;
                                n_terms - 1
                            })
                        })
                        .collect();
                    phrases.push((idx, ids));
                }
                Criterion::Follow { user_id } => follow.add(user_id, idx),
                Criterion::Locations { boxes: bs } => boxes.extend(bs.iter().map(|b| (*b, idx))),
                Criterion::Polygon { shape } => shapes.push((Arc::clone(shape), idx)),
                // Attributed by the source (X v2 `matching_rules`), never locally.
                Criterion::Verbatim => {}
            }
        }
        follow.seal();
        let mut by_first_term = vec![Vec::new(); n_terms as usize];
        for (p, (_, ids)) in phrases.iter().enumerate() {
            if let Some(&first) = ids.first() {
                by_first_term[first as usize].push(p as u32);
            }
        }
        let pattern_punct = patterns
            .iter()
            .map(|p| {
                let has = p.chars().any(is_punct);
                let edges = p.chars().next().is_some_and(is_punct) || p.chars().next_back().is_some_and(is_punct);
                (has, edges)
            })
            .collect();
        let ac = if patterns.is_empty() {
            None
        } else {
            // Standard semantics: required for overlapping search, which finds
            // every term ("new" and "newyork" both) at every position.
            // A DFA is the fastest scan; the crate picks one only for a
            // handful of patterns (its memory grows with states × byte
            // classes), so ask for it up to `DFA_PATTERNS`.
            let kind = (patterns.len() <= DFA_PATTERNS).then_some(AhoCorasickKind::DFA);
            AhoCorasick::builder().match_kind(MatchKind::Standard).kind(kind).build(&patterns).ok()
        };
        Matcher {
            rules,
            by_id: std::sync::OnceLock::new(),
            track: TrackIndex { ac, pattern_punct, pattern_terms, n_terms: n_terms as usize, phrases, by_first_term },
            follow,
            boxes: BoxIndex::new(boxes),
            polygons: PolygonIndex::new(shapes),
        }
    }

    /// The rules, indexed by [`RuleIdx`].
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, idx: RuleIdx) -> &Rule {
        &self.rules[idx as usize]
    }

    /// Build the index of rule ids now (else on the first [`Matcher::index_of`]).
    pub fn index_ids(&self) {
        self.by_id.get_or_init(|| IdIndex::of(&self.rules));
    }

    /// The index of the rule with this `rule_id`.
    pub fn index_of(&self, rule_id: &str) -> Option<RuleIdx> {
        self.by_id.get_or_init(|| IdIndex::of(&self.rules)).get(&self.rules, rule_id)
    }

    /// Every rule the post matches, in rule order, into `out` (cleared first).
    pub fn match_post(&self, post: &PostView<'_>, scratch: &mut Scratch, out: &mut Vec<RuleIdx>) {
        out.clear();
        self.match_track(post, scratch, out);
        self.match_follow(post, out);
        scratch.outside_polygon = false;
        self.match_locations(post, scratch, out);
        out.sort_unstable();
        out.dedup();
    }

    fn match_track(&self, post: &PostView<'_>, s: &mut Scratch, out: &mut Vec<RuleIdx>) {
        let t = &self.track;
        let Some(ac) = &t.ac else { return };
        s.hay.fill(post);
        s.hit.clear();
        s.hit.resize(t.n_terms.div_ceil(64), 0);
        s.hit_list.clear();
        let hay = std::mem::take(&mut s.hay);
        for m in ac.find_overlapping_iter(hay.text.as_str()) {
            let p = m.pattern().as_usize();
            let Some(seg) = hay.segment_at(m.start()) else { continue };
            let (has_punct, edges) = t.pattern_punct[p];
            if !is_token(&hay.text, seg, m.range(), has_punct, edges) {
                continue;
            }
            let [any, hashtag] = t.pattern_terms[p];
            if let Some(id) = any {
                s.mark(id);
            }
            if let (Some(id), SegKind::Whole { hashtag: true }) = (hashtag, seg.kind) {
                s.mark(id);
            }
        }
        s.hay = hay;
        for i in 0..s.hit_list.len() {
            let term = s.hit_list[i];
            for &p in &t.by_first_term[term as usize] {
                let (rule, terms) = &t.phrases[p as usize];
                if terms.iter().all(|&id| s.is_hit(id)) {
                    out.push(*rule);
                }
            }
        }
    }

    fn match_follow(&self, post: &PostView<'_>, out: &mut Vec<RuleIdx>) {
        if self.follow.is_empty() {
            return;
        }
        let ids = [
            post.author.id.as_deref(),
            post.retweeted.as_ref().and_then(|r| r.author.id.as_deref()),
            post.in_reply_to_user_id.as_deref(),
        ];
        for id in ids.into_iter().flatten() {
            out.extend_from_slice(self.follow.get(id));
        }
    }

    /// For a rule the source attributed (X v2 `matching_rules`): true when
    /// it is a polygon rule and the post lies outside the polygon (the API
    /// matched the boxes that cover it).
    pub fn outside_polygon_rule(&self, idx: RuleIdx, post: &PostView<'_>) -> bool {
        if !matches!(self.rule(idx).criterion(), Criterion::Polygon { .. }) {
            return false;
        }
        !self.polygons.holds(idx, post.coordinates, post.place_bbox)
    }

    fn match_locations(&self, post: &PostView<'_>, s: &mut Scratch, out: &mut Vec<RuleIdx>) {
        if (self.boxes.is_empty() && self.polygons.is_empty()) || post.is_retweet() {
            return;
        }
        if let Some(p) = post.coordinates {
            self.boxes.at_point(p, out);
            s.outside_polygon = !self.polygons.is_empty() && self.polygons.at_point(p, out);
        } else if let Some(place) = post.place_bbox {
            self.boxes.overlapping(&place, out);
            s.outside_polygon = !self.polygons.is_empty() && self.polygons.overlapping(&place, out);
        }
    }
}

#[cfg(test)]
mod tests;
