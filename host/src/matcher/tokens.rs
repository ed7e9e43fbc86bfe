//! Turning a post into the text the track matcher scans (DESIGN §4).
//!
//! The haystack is one lower-cased string of *segments* separated by a space:
//! * `Word` — a white-space-separated word of a post's text, outside entity spans.
//!   Its tokens are the word with leading and trailing punctuation stripped, and
//!   each piece of the word split at every punctuation character.
//! * `Whole` — a mention's screen name or a hashtag's text: one token, as a whole.
//! * `Url` — an `expanded_url` or `display_url` without scheme, leading `www.` and
//!   trailing `/`: a token as a whole, and its pieces split at punctuation.
//!
//! Terms never contain white space, so a match never spans two segments.
//! "Punctuation" is any character that is not a letter, digit, combining mark or
//! white space (so `_`, `'`, `.`, `/`, emoji and symbols all split words).

use std::ops::Range;

use unicode_general_category::{GeneralCategory, get_general_category};

use crate::post::{PostView, TextView};

/// What kind of tokens a segment yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegKind {
    Word,
    Whole { hashtag: bool },
    Url,
}

/// A segment: a byte range of [`Haystack::text`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub range: Range<usize>,
    pub kind: SegKind,
}

/// Lower-cased segments of one post; reused across posts to avoid allocation.
#[derive(Debug, Default)]
pub struct Haystack {
    pub text: String,
    pub segments: Vec<Segment>,
}

/// True for characters that split words (see module docs).
#[inline]
pub fn is_punct(c: char) -> bool {
    if c.is_ascii() {
        return !c.is_ascii_alphanumeric() && !c.is_ascii_whitespace();
    }
    !(c.is_alphanumeric()
        || c.is_whitespace()
        || matches!(
            get_general_category(c),
            GeneralCategory::NonspacingMark | GeneralCategory::SpacingMark | GeneralCategory::EnclosingMark
        ))
}

impl Haystack {
    pub fn clear(&mut self) {
        self.text.clear();
        self.segments.clear();
    }

    /// Fill the haystack from a post: its own text, then the retweeted and the
    /// quoted post's (DESIGN §4: tokens come from all three).
    pub fn fill(&mut self, post: &PostView<'_>) {
        self.clear();
        self.add_text(&post.text);
        if let Some(rt) = &post.retweeted {
            self.add_text(&rt.text);
        }
        if let Some(q) = &post.quoted {
            self.add_text(&q.text);
        }
    }

    fn push(&mut self, s: &str, kind: SegKind) {
        if s.is_empty() {
            return;
        }
        if !self.text.is_empty() {
            self.text.push(' ');
        }
        let start = self.text.len();
        if s.is_ascii() {
            self.text.push_str(s);
            self.text[start..].make_ascii_lowercase();
        } else {
            for c in s.chars() {
                self.text.extend(c.to_lowercase());
            }
        }
        self.segments.push(Segment { range: start..self.text.len(), kind });
    }

    /// Add the words, hashtags, mentions and links of one text.
    pub fn add_text(&mut self, t: &TextView<'_>) {
        let text = t.text.as_ref();
        let mut pos = 0;
        // Spans are sorted by start by the decoders; be tolerant of overlaps.
        for span in &t.entity_spans {
            if span.start > pos {
                self.add_words(&text[pos..span.start.min(text.len())]);
            }
            pos = pos.max(span.end.min(text.len()));
        }
        if pos < text.len() {
            self.add_words(&text[pos..]);
        }
        for h in &t.hashtags {
            self.push(h.trim_start_matches(['#', '＃']), SegKind::Whole { hashtag: true });
        }
        for m in &t.mentions {
            self.push(m.handle.trim_start_matches(['@', '＠']), SegKind::Whole { hashtag: false });
        }
        for l in &t.links {
            for u in [&l.expanded_url, &l.display_url].into_iter().flatten() {
                self.push(normalize_url(u), SegKind::Url);
            }
        }
    }

    fn add_words(&mut self, s: &str) {
        for w in s.split_whitespace() {
            self.push(w, SegKind::Word);
        }
    }

    /// The segment holding byte `at`, if any.
    pub fn segment_at(&self, at: usize) -> Option<&Segment> {
        let i = self.segments.partition_point(|s| s.range.end <= at);
        self.segments.get(i).filter(|s| s.range.start <= at)
    }
}

/// Scheme, a leading `www.` and a trailing `/` removed (DESIGN §4).
pub fn normalize_url(u: &str) -> &str {
    let u = u.trim();
    let u = match u.find("://") {
        Some(i) if u[..i].chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) => &u[i + 3..],
        _ => u,
    };
    let u = if u.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("www.")) { &u[4..] } else { u };
    u.strip_suffix('/').unwrap_or(u)
}

/// Is the match `m` (byte range of the haystack) a whole token of `seg`?
/// `term_has_punct` tells whether the term contains punctuation (then it can
/// only equal a stripped word or a whole URL, never a piece).
#[inline]
pub fn is_token(hay: &str, seg: &Segment, m: Range<usize>, term_has_punct: bool, term_edges_punct: bool) -> bool {
    let whole = m.start == seg.range.start && m.end == seg.range.end;
    match seg.kind {
        SegKind::Whole { .. } => whole,
        SegKind::Url => whole || (!term_has_punct && piece_bounds(hay, seg, &m)),
        SegKind::Word => {
            if !term_has_punct {
                piece_bounds(hay, seg, &m)
            } else {
                // Equal to the word with its leading/trailing punctuation stripped.
                !term_edges_punct
                    && hay[seg.range.start..m.start].chars().all(is_punct)
                    && hay[m.end..seg.range.end].chars().all(is_punct)
            }
        }
    }
}

/// The match is delimited by punctuation or the segment's ends on both sides.
#[inline]
fn piece_bounds(hay: &str, seg: &Segment, m: &Range<usize>) -> bool {
    let before = m.start == seg.range.start || hay[seg.range.start..m.start].chars().next_back().is_some_and(is_punct);
    let after = m.end == seg.range.end || hay[m.end..seg.range.end].chars().next().is_some_and(is_punct);
    before && after
}

/// The tokens of one segment, spelled out (the reference for tests and for
/// plugins that want them). Order: whole/stripped first, then pieces.
pub fn segment_tokens<'h>(hay: &'h str, seg: &Segment) -> Vec<&'h str> {
    let s = &hay[seg.range.clone()];
    let mut out = Vec::new();
    match seg.kind {
        SegKind::Whole { .. } => out.push(s),
        SegKind::Url | SegKind::Word => {
            let first = if seg.kind == SegKind::Url { s } else { s.trim_matches(is_punct) };
            if !first.is_empty() {
                out.push(first);
            }
            out.extend(s.split(is_punct).filter(|p| !p.is_empty()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_normalisation() {
        assert_eq!(normalize_url("https://www.example.com/foo/"), "example.com/foo");
        assert_eq!(normalize_url("example.com"), "example.com");
        assert_eq!(normalize_url("http://WWW.Example.com"), "Example.com");
        assert_eq!(normalize_url("pic.twitter.com/abc"), "pic.twitter.com/abc");
    }

    #[test]
    fn word_tokens() {
        let seg = Segment { range: 0..9, kind: SegKind::Word };
        assert_eq!(segment_tokens("twitter's", &seg), vec!["twitter's", "twitter", "s"]);
        let seg = Segment { range: 0..6, kind: SegKind::Word };
        assert_eq!(segment_tokens("hello.", &seg), vec!["hello", "hello"]);
    }

    #[test]
    fn punctuation_classes() {
        for c in ['.', '\'', '_', '/', '#', '…', '😀', '$', '“'] {
            assert!(is_punct(c), "{c:?}");
        }
        for c in ['a', 'É', 'é', '東', '9', '\u{0301}', 'ं'] {
            assert!(!is_punct(c), "{c:?}");
        }
    }
}
