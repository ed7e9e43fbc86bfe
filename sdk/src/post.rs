//! A post as a stage reads it: views into the batch the host sent (ABI 0.2:
//! one buffer of strings per batch), built without copying anything.
//!
//! Every accessor checks that the stage declared the field
//! ([`crate::Description::reads`], [`crate::Stage::reads`]): the host sends
//! only the declared fields, so reading another one is a bug, and it panics
//! with the field's name — in `cargo test` first, where
//! [`crate::testing::run`] sends only the declared fields too.

use crate::bindings::traptor::plugin::types as wit;
use crate::{Fields, Point};

/// One batch: the buffer and its records, checked once.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    data: &'a str,
    raw: &'a wit::Batch,
    reads: Fields,
}

impl<'a> Batch<'a> {
    /// A view of `raw` for a stage that reads `reads`; an error if the
    /// buffer is not UTF-8 (the host never sends that).
    pub(crate) fn new(raw: &'a wit::Batch, reads: Fields) -> Result<Batch<'a>, String> {
        let data = std::str::from_utf8(&raw.data).map_err(|e| format!("the batch's strings are not UTF-8: {e}"))?;
        Ok(Batch { data, raw, reads })
    }

    pub fn len(&self) -> usize {
        self.raw.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.raw.count == 0
    }

    /// The posts, in order (without records when the stage reads no field).
    pub fn posts(&self) -> impl ExactSizeIterator<Item = Post<'a>> + 'a {
        let b = *self;
        (0..self.len()).map(move |i| Post { b, p: b.raw.posts.get(i).unwrap_or(&NOTHING) })
    }

    fn str(&self, s: wit::Span) -> &'a str {
        let start = s.start as usize;
        self.data.get(start..start + s.len as usize).unwrap_or("")
    }
}

/// What a post holds when the stage reads no field.
static NOTHING: wit::Post = wit::Post {
    raw: wit::Span { start: 0, len: 0 },
    id: wit::Span { start: 0, len: 0 },
    source: wit::Span { start: 0, len: 0 },
    text: wit::Span { start: 0, len: 0 },
    author_id: None,
    author_handle: None,
    lang: None,
    created_at: None,
    hashtags: wit::Range { first: 0, count: 0 },
    mentions: wit::Range { first: 0, count: 0 },
    urls: wit::Range { first: 0, count: 0 },
    cashtags: wit::Range { first: 0, count: 0 },
    coordinates: None,
    is_retweet: false,
    is_reply: false,
    is_quote: false,
    matched_rules: wit::Range { first: 0, count: 0 },
};

/// One post of a batch. Cheap to copy; its strings borrow the batch.
#[derive(Debug, Clone, Copy)]
pub struct Post<'a> {
    b: Batch<'a>,
    p: &'a wit::Post,
}

/// A list of strings of a post (hashtags, mentions, urls, cashtags).
#[derive(Debug, Clone)]
pub struct Strings<'a> {
    b: Batch<'a>,
    spans: std::slice::Iter<'a, wit::Span>,
}

impl<'a> Iterator for Strings<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        self.spans.next().map(|s| self.b.str(*s))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl ExactSizeIterator for Strings<'_> {}

/// A rule the post was attributed to (a `collection_rules` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchedRule<'a> {
    /// The rule's `rule_id`.
    pub id: &'a str,
    /// The rule's `tag`, if it has one.
    pub tag: Option<&'a str>,
    /// The rule's `value` (phrase, user id, box or polygon).
    pub value: &'a str,
    /// `track`, `follow` or `locations`.
    pub rule_type: &'a str,
}

fn undeclared(name: &str, flag: &str) -> ! {
    panic!(
        "the stage read `{name}` of a post but does not declare it: add Fields::{flag} to its Description::reads \
         (the host sends only the fields a stage declares)"
    )
}

thread_local! {
    /// The fields read on this thread (native builds: `testing::fields_read`).
    static READ: std::cell::Cell<Fields> = const { std::cell::Cell::new(Fields::empty()) };
}

/// What was read since [`forget_reads`] (native builds).
pub(crate) fn fields_read() -> Fields {
    READ.with(|r| r.get())
}

pub(crate) fn forget_reads() {
    READ.with(|r| r.set(Fields::empty()));
}

macro_rules! need {
    ($self:ident, $flag:ident, $name:literal) => {
        #[cfg(not(target_arch = "wasm32"))]
        READ.with(|r| r.set(r.get() | Fields::$flag));
        if !$self.b.reads.contains(Fields::$flag) {
            undeclared($name, stringify!($flag));
        }
    };
}

impl<'a> Post<'a> {
    fn list(&self, r: wit::Range) -> Strings<'a> {
        let first = r.first as usize;
        let spans = self.b.raw.strings.get(first..first + r.count as usize).unwrap_or(&[]);
        Strings { b: self.b, spans: spans.iter() }
    }

    /// The original JSON, byte for byte as the source sent it ([`Fields::RAW`]).
    pub fn raw(&self) -> &'a str {
        need!(self, RAW, "raw");
        self.b.str(self.p.raw)
    }
    /// The post's id, a decimal string ([`Fields::ID`]).
    pub fn id(&self) -> &'a str {
        need!(self, ID, "id");
        self.b.str(self.p.id)
    }
    /// `twitter-v1`, `x-v2`, `bluesky` or `mastodon` ([`Fields::SOURCE`]).
    pub fn source(&self) -> &'a str {
        need!(self, SOURCE, "source");
        self.b.str(self.p.source)
    }
    /// The full text, HTML escapes undone ([`Fields::TEXT`]).
    pub fn text(&self) -> &'a str {
        need!(self, TEXT, "text");
        self.b.str(self.p.text)
    }
    /// The author's user id ([`Fields::AUTHOR`]).
    pub fn author_id(&self) -> Option<&'a str> {
        need!(self, AUTHOR, "author_id");
        self.p.author_id.map(|s| self.b.str(s))
    }
    /// The author's handle: screen name, DID … ([`Fields::AUTHOR`]).
    pub fn author_handle(&self) -> Option<&'a str> {
        need!(self, AUTHOR, "author_handle");
        self.p.author_handle.map(|s| self.b.str(s))
    }
    /// The language the source tagged (`en`, `ja`, `und` …) ([`Fields::LANG`]).
    pub fn lang(&self) -> Option<&'a str> {
        need!(self, LANG, "lang");
        self.p.lang.map(|s| self.b.str(s))
    }
    /// Creation time, RFC 3339 in UTC ([`Fields::CREATED_AT`]).
    pub fn created_at(&self) -> Option<&'a str> {
        need!(self, CREATED_AT, "created_at");
        self.p.created_at.map(|s| self.b.str(s))
    }
    /// Hashtag texts without `#` ([`Fields::HASHTAGS`]).
    pub fn hashtags(&self) -> Strings<'a> {
        need!(self, HASHTAGS, "hashtags");
        self.list(self.p.hashtags)
    }
    /// Mentioned handles without `@` ([`Fields::MENTIONS`]).
    pub fn mentions(&self) -> Strings<'a> {
        need!(self, MENTIONS, "mentions");
        self.list(self.p.mentions)
    }
    /// Expanded URLs ([`Fields::URLS`]).
    pub fn urls(&self) -> Strings<'a> {
        need!(self, URLS, "urls");
        self.list(self.p.urls)
    }
    /// Cashtags without `$` ([`Fields::CASHTAGS`]).
    pub fn cashtags(&self) -> Strings<'a> {
        need!(self, CASHTAGS, "cashtags");
        self.list(self.p.cashtags)
    }
    /// The exact location, when the post carries one ([`Fields::COORDINATES`]).
    pub fn coordinates(&self) -> Option<Point> {
        need!(self, COORDINATES, "coordinates");
        self.p.coordinates
    }
    /// A retweet / repost ([`Fields::KINDS`]).
    pub fn is_retweet(&self) -> bool {
        need!(self, KINDS, "is_retweet");
        self.p.is_retweet
    }
    /// A reply ([`Fields::KINDS`]).
    pub fn is_reply(&self) -> bool {
        need!(self, KINDS, "is_reply");
        self.p.is_reply
    }
    /// A quote ([`Fields::KINDS`]).
    pub fn is_quote(&self) -> bool {
        need!(self, KINDS, "is_quote");
        self.p.is_quote
    }
    /// Every rule the post matched, in rule order ([`Fields::MATCHED_RULES`]).
    pub fn matched_rules(&self) -> impl ExactSizeIterator<Item = MatchedRule<'a>> + 'a {
        need!(self, MATCHED_RULES, "matched_rules");
        let b = self.b;
        let first = self.p.matched_rules.first as usize;
        let refs = b.raw.rule_refs.get(first..first + self.p.matched_rules.count as usize).unwrap_or(&[]);
        refs.iter().map(move |&r| match b.raw.rules.get(r as usize) {
            Some(m) => MatchedRule {
                id: b.str(m.id),
                tag: m.tag.map(|t| b.str(t)),
                value: b.str(m.value),
                rule_type: b.str(m.rule_type),
            },
            None => MatchedRule { id: "", tag: None, value: "", rule_type: "" },
        })
    }
}
