//! The normalised view of one post, independent of the source protocol.
//!
//! Every source turns its messages into [`Message`]s: a post carries a
//! [`PostView`] that borrows from the original bytes where it can; anything else
//! (Twitter's `limit`, `delete`, `scrub_geo` … notices) is a [`Control`] message.
//! The matcher, the envelope and (later) the plugin ABI all read the `PostView`
//! and never the source's JSON, so a new source only has to fill this struct.
//!
//! Invariants a decoder must uphold:
//! * `TextView::text` is the *full* text of the post (v1.1 `extended_tweet.full_text`
//!   when present), with HTML escapes (`&amp;`, `&lt;`, `&gt;`) undone.
//! * `TextView::entity_spans` are byte ranges of `text`, on char boundaries,
//!   covering every @mention, #hashtag and link that the source marked as an entity;
//!   the matcher does not treat those characters as words (DESIGN §4).
//!
//! This module is pure: no I/O, no runtime.

pub mod jetstream;
pub mod mastodon;
pub mod tolerant;
pub mod v1;
pub mod v2;

use std::borrow::Cow;
use std::ops::Range;

pub use tolerant::Surprise;

/// A point, longitude first (GeoJSON order, as Twitter sends it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub lng: f64,
    pub lat: f64,
}

/// An axis-aligned box in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BBox {
    pub west: f64,
    pub south: f64,
    pub east: f64,
    pub north: f64,
}

impl BBox {
    /// True when `p` lies in the box, edges included.
    pub fn contains(&self, p: Point) -> bool {
        p.lng >= self.west && p.lng <= self.east && p.lat >= self.south && p.lat <= self.north
    }

    /// True when the two boxes share at least one point.
    pub fn overlaps(&self, other: &BBox) -> bool {
        self.west <= other.east && other.west <= self.east && self.south <= other.north && other.south <= self.north
    }

    /// The smallest box holding every point, or `None` for no (finite) points.
    pub fn around(points: impl IntoIterator<Item = Point>) -> Option<BBox> {
        let mut b: Option<BBox> = None;
        for p in points {
            if !(p.lng.is_finite() && p.lat.is_finite()) {
                continue;
            }
            b = Some(match b {
                None => BBox { west: p.lng, south: p.lat, east: p.lng, north: p.lat },
                Some(b) => BBox {
                    west: b.west.min(p.lng),
                    south: b.south.min(p.lat),
                    east: b.east.max(p.lng),
                    north: b.north.max(p.lat),
                },
            });
        }
        b
    }
}

/// A user as far as matching and plugins care.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserRef<'a> {
    pub id: Option<Cow<'a, str>>,
    pub handle: Option<Cow<'a, str>>,
}

/// A mention entity.
#[derive(Debug, Clone, PartialEq)]
pub struct Mention<'a> {
    pub handle: Cow<'a, str>,
    pub id: Option<Cow<'a, str>>,
}

/// A link entity (v1.1 `urls` and `media`).
#[derive(Debug, Clone, PartialEq)]
pub struct Link<'a> {
    /// The shortened link as it stands in the text (t.co).
    pub url: Option<Cow<'a, str>>,
    pub expanded_url: Option<Cow<'a, str>>,
    pub display_url: Option<Cow<'a, str>>,
}

/// The text of one post with its entities.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextView<'a> {
    pub text: Cow<'a, str>,
    /// Byte ranges of `text` that hold entities (see module docs).
    pub entity_spans: Vec<Range<usize>>,
    pub hashtags: Vec<Cow<'a, str>>,
    pub mentions: Vec<Mention<'a>>,
    pub links: Vec<Link<'a>>,
    pub cashtags: Vec<Cow<'a, str>>,
}

/// A post embedded in another one (the retweeted or the quoted post).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EmbeddedPost<'a> {
    pub id: Option<Cow<'a, str>>,
    pub author: UserRef<'a>,
    pub text: TextView<'a>,
}

/// One post, normalised. See the module docs for the invariants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PostView<'a> {
    /// The protocol the post came in (`twitter-v1`, `x-v2`, `bluesky`).
    pub source: &'static str,
    pub id: Cow<'a, str>,
    /// The source's own timestamp text (v1.1: `Mon Feb 22 01:34:53 +0000 2016`).
    pub created_at: Option<Cow<'a, str>>,
    pub author: UserRef<'a>,
    pub lang: Option<Cow<'a, str>>,
    pub text: TextView<'a>,
    pub in_reply_to_user_id: Option<Cow<'a, str>>,
    pub in_reply_to_post_id: Option<Cow<'a, str>>,
    /// Set when this post is a native retweet.
    pub retweeted: Option<Box<EmbeddedPost<'a>>>,
    /// Set when this post quotes another.
    pub quoted: Option<Box<EmbeddedPost<'a>>>,
    pub coordinates: Option<Point>,
    /// Bounding box of the tagged place, if any.
    pub place_bbox: Option<BBox>,
    /// The rules the source itself attributed the post to (X v2
    /// `matching_rules`). When set, they replace local matching.
    pub source_rules: Option<Vec<SourceRule<'a>>>,
    /// Set when this is a new version of a post published earlier (an edit):
    /// when it was edited. The envelope marks it (`"edit": true`).
    pub edited_at: Option<Cow<'a, str>>,
    /// The source's resume position at this post, when its format has one
    /// in the message (Jetstream's `time_us`): `provenance.source.cursor`.
    pub position: Option<u64>,
    /// Fields the decoder met in an unexpected JSON type (converted or
    /// treated as absent; see [`tolerant`]). Counted per format and field.
    pub surprises: Vec<Surprise>,
}

/// One rule a source attributed a post to: the server's id for it, and
/// its tag (our `rule_id` when we created the rule).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceRule<'a> {
    pub id: Option<Cow<'a, str>>,
    pub tag: Option<Cow<'a, str>>,
}

impl PostView<'_> {
    pub fn is_retweet(&self) -> bool {
        self.retweeted.is_some()
    }
    pub fn is_quote(&self) -> bool {
        self.quoted.is_some()
    }
    pub fn is_reply(&self) -> bool {
        self.in_reply_to_post_id.is_some() || self.in_reply_to_user_id.is_some()
    }
}

/// Kinds of non-post stream messages (Twitter streaming message types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ControlKind {
    Limit,
    Delete,
    ScrubGeo,
    StatusWithheld,
    UserWithheld,
    Warning,
    Disconnect,
    /// Bluesky identity (handle) change.
    Identity,
    /// Bluesky account status change.
    Account,
    /// Valid JSON object that is neither a post nor a known notice.
    Unknown,
}

impl ControlKind {
    pub const ALL: [ControlKind; 10] = [
        ControlKind::Limit,
        ControlKind::Delete,
        ControlKind::ScrubGeo,
        ControlKind::StatusWithheld,
        ControlKind::UserWithheld,
        ControlKind::Warning,
        ControlKind::Disconnect,
        ControlKind::Identity,
        ControlKind::Account,
        ControlKind::Unknown,
    ];

    /// Stable name, used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlKind::Limit => "limit",
            ControlKind::Delete => "delete",
            ControlKind::ScrubGeo => "scrub_geo",
            ControlKind::StatusWithheld => "status_withheld",
            ControlKind::UserWithheld => "user_withheld",
            ControlKind::Warning => "warning",
            ControlKind::Disconnect => "disconnect",
            ControlKind::Identity => "identity",
            ControlKind::Account => "account",
            ControlKind::Unknown => "unknown",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A non-post message with what the collector needs from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Control {
    pub kind: ControlKind,
    /// `limit` notices: Twitter's cumulative count of undelivered posts.
    pub undelivered: Option<u64>,
}

/// A decoded stream message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    Post(Box<PostView<'a>>),
    Control(Control),
}

/// Why a line could not be decoded. The offending record is reported and skipped;
/// nothing else is affected. A field of an unexpected type is never a reason
/// (see [`tolerant`]): only bytes that are not a JSON object are.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("not valid UTF-8 (at byte {0})")]
    Utf8(usize),
    /// A post by its keys, without an id in any usable type: it cannot be
    /// keyed, deduplicated or attributed.
    #[error("a post without a usable id ({0})")]
    NoPostId(&'static str),
}

/// A record's bytes as text: every decoder reads from `&str`, so UTF-8 is
/// validated once per record (serde_json's slice reader would check every
/// string again), with SIMD where the CPU has it (`simdutf8` picks AVX2 or
/// SSE4.2 at run time; std's check was 4 % of a profile).
pub fn text(bytes: &[u8]) -> Result<&str, DecodeError> {
    simdutf8::compat::from_utf8(bytes).map_err(|e| DecodeError::Utf8(e.valid_up_to()))
}

/// The wire format of a source's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Twitter API v1.1 statuses (and the original traptor's fixtures).
    #[serde(rename = "twitter_v1")]
    TwitterV1,
    /// X API v2 filtered-stream messages.
    #[serde(rename = "x_v2")]
    XV2,
    /// Bluesky Jetstream events.
    Jetstream,
    /// Mastodon Status entities.
    Mastodon,
}

impl Format {
    /// The name a pipeline file gives it (`format = "x_v2"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::TwitterV1 => "twitter_v1",
            Format::XV2 => "x_v2",
            Format::Jetstream => "jetstream",
            Format::Mastodon => "mastodon",
        }
    }
}

/// Decode one message of `format`. Every message of every format is a JSON
/// object: an array or a scalar is malformed (serde would read a struct from
/// an array, so `[]` must be refused before the decoders see it).
pub fn decode(format: Format, bytes: &[u8]) -> Result<Message<'_>, DecodeError> {
    let text = text(bytes)?;
    if !text.trim_start_matches(|c: char| c.is_ascii_whitespace()).starts_with('{') {
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => DecodeError::NotAnObject,
            Err(e) => DecodeError::Json(e),
        });
    }
    match format {
        Format::TwitterV1 => v1::decode_text(text),
        Format::XV2 => v2::decode_text(text),
        Format::Jetstream => jetstream::decode_text(text),
        Format::Mastodon => mastodon::decode_text(text),
    }
}

/// Undo the three HTML escapes Twitter applies to post text.
pub fn unescape_html(s: &str) -> Cow<'_, str> {
    if !s.contains('&') {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16, defect 8: `[]` counted as a control message while `42`
    /// counted as malformed; both are malformed in every format.
    #[test]
    fn only_objects_are_messages() {
        for format in [Format::TwitterV1, Format::XV2, Format::Jetstream, Format::Mastodon] {
            for bad in [&b"[]"[..], b"[1,2]", b"42", b"\"text\"", b"null", b"  true "] {
                assert!(
                    matches!(decode(format, bad), Err(DecodeError::NotAnObject)),
                    "{format:?} {:?}",
                    String::from_utf8_lossy(bad)
                );
            }
            assert!(matches!(decode(format, b"[1,"), Err(DecodeError::Json(_))), "{format:?}");
            // Invalid UTF-8 is malformed wherever it is, also in a field no
            // decoder reads (it would be copied into the output).
            assert!(
                matches!(
                    decode(format, b"{\"id_str\":\"1\",\"text\":\"a\",\"x\":\"\xff\"}"),
                    Err(DecodeError::Utf8(30))
                ),
                "{format:?}"
            );
            assert!(matches!(decode(format, b"{}"), Ok(Message::Control(_))), "{format:?}: an unknown object");
        }
    }
}
