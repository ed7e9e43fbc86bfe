//! Decoding of Twitter API v1.1 stream messages (statuses/filter) into [`Message`].
//!
//! One typed, borrowing `serde_json` pass per line: only the fields the matcher,
//! the envelope and plugins need are read; everything else in the post is skipped
//! (and kept verbatim in the original bytes, which is what the sink writes).
//!
//! Entity positions: v1.1 `indices` count code points of the text *as Twitter
//! escaped it* (`&amp;` is five), which drifts from the text once a fixture or an
//! archive has been unescaped. So each entity's position is checked against the
//! text it should cover and, if that fails, found by searching for its literal
//! (`@name`, `#tag`, the t.co link). Classification of non-post messages follows
//! "Streaming message types" in Twitter's v1.1 documentation.

use std::borrow::Cow;
use std::ops::Range;

use super::tolerant::{self, Id, Present, Surprises, tolerant};
use super::{
    BBox, Control, ControlKind, DecodeError, EmbeddedPost, Link, Mention, Message, Point, PostView, TextView, UserRef,
};

/// The `source` name of posts decoded here.
pub const SOURCE: &str = "twitter-v1";

/// Decode one v1.1 stream message (one JSON document).
pub fn decode(bytes: &[u8]) -> Result<Message<'_>, DecodeError> {
    decode_text(super::text(bytes)?)
}

/// [`decode`] from text already known to be UTF-8 (validated once per
/// record, not once per string).
///
/// A post is an object with a usable top-level id (`id_str`, or `id`) and any
/// of the keys only a post has (`text`, `full_text`, `extended_tweet`,
/// `user`), whatever their values: stream notices (`limit`, `delete` …) never
/// carry a top-level id.
pub fn decode_text(text: &str) -> Result<Message<'_>, DecodeError> {
    let surprises = Surprises::default();
    let msg: V1Status<'_> = match tolerant::read_record(text, "status", &surprises) {
        Ok(Some(m)) => m,
        Ok(None) => return Err(DecodeError::NotAnObject),
        Err(e) => return Err(DecodeError::Json(e)),
    };
    let has_id = msg.id_str.is_some() || msg.id.is_some();
    if ["text", "full_text", "extended_tweet", "user"].iter().any(|k| msg.has(k)) {
        if !has_id {
            return Err(DecodeError::NoPostId("id_str, id"));
        }
        let mut view = msg.into_view();
        view.surprises = surprises.into_vec();
        return Ok(Message::Post(Box::new(view)));
    }
    let kind = if msg.limit.is_some() {
        ControlKind::Limit
    } else if msg.delete.is_some() {
        ControlKind::Delete
    } else if msg.scrub_geo.is_some() {
        ControlKind::ScrubGeo
    } else if msg.status_withheld.is_some() {
        ControlKind::StatusWithheld
    } else if msg.user_withheld.is_some() {
        ControlKind::UserWithheld
    } else if msg.warning.is_some() {
        ControlKind::Warning
    } else if msg.disconnect.is_some() {
        ControlKind::Disconnect
    } else {
        ControlKind::Unknown
    };
    let undelivered = msg.limit.and_then(|l| l.track.or(l.follow).or(l.locations));
    Ok(Message::Control(Control { kind, undelivered }))
}

tolerant! {
    /// `{"limit":{"track":N}}`: Twitter's count of posts it could not deliver.
    struct V1Limit in "limit" {
        track: u64,
        follow: u64,
        locations: u64,
    }
}

tolerant! {
    /// Ids come as numbers (`id`) and strings (`id_str`); numbers above 2^53
    /// are exact only in the string form, which is preferred.
    struct V1Status<'a> in "status" {
        id_str: Id<'a>,
        id: u64,
        text: Cow<'a, str>,
        full_text: Cow<'a, str>,
        created_at: Cow<'a, str>,
        lang: Cow<'a, str>,
        user: V1User<'a>,
        in_reply_to_user_id_str: Id<'a>,
        in_reply_to_user_id: u64,
        in_reply_to_status_id_str: Id<'a>,
        in_reply_to_status_id: u64,
        entities: V1Entities<'a>,
        extended_entities: V1Entities<'a>,
        extended_tweet: V1Extended<'a>,
        retweeted_status: Box<V1Status<'a>>,
        quoted_status: Box<V1Status<'a>>,
        coordinates: V1Coordinates,
        place: V1Place,
        // Non-post messages (top level only).
        limit: V1Limit,
        delete: Present,
        scrub_geo: Present,
        status_withheld: Present,
        user_withheld: Present,
        warning: Present,
        disconnect: Present,
    }
}

tolerant! {
    struct V1User<'a> in "user" {
        id_str: Id<'a>,
        id: u64,
        screen_name: Cow<'a, str>,
    }
}

tolerant! {
    struct V1Extended<'a> in "extended_tweet" {
        full_text: Cow<'a, str>,
        entities: V1Entities<'a>,
        extended_entities: V1Entities<'a>,
    }
}

tolerant! {
    struct V1Entities<'a> in "entities" {
        hashtags: Vec<V1Tag<'a>>,
        symbols: Vec<V1Tag<'a>>,
        user_mentions: Vec<V1Mention<'a>>,
        urls: Vec<V1Url<'a>>,
        media: Vec<V1Url<'a>>,
    }
}

tolerant! {
    struct V1Tag<'a> in "hashtag" {
        text: Cow<'a, str>,
        indices: [u32; 2],
    }
}

tolerant! {
    struct V1Mention<'a> in "user_mention" {
        screen_name: Cow<'a, str>,
        id_str: Id<'a>,
        id: u64,
        indices: [u32; 2],
    }
}

tolerant! {
    struct V1Url<'a> in "url" {
        url: Cow<'a, str>,
        expanded_url: Cow<'a, str>,
        display_url: Cow<'a, str>,
        indices: [u32; 2],
    }
}

tolerant! {
    struct V1Coordinates in "coordinates" {
        coordinates: [f64; 2],
    }
}

tolerant! {
    struct V1Place in "place" {
        bounding_box: V1Polygon,
    }
}

tolerant! {
    struct V1Polygon in "bounding_box" {
        coordinates: Vec<Vec<[f64; 2]>>,
    }
}

fn id_of<'a>(s: Option<Id<'a>>, n: Option<u64>) -> Option<Cow<'a, str>> {
    s.map(Id::into_cow).or_else(|| n.map(|n| Cow::Owned(n.to_string())))
}

impl<'a> V1Status<'a> {
    fn into_view(self) -> PostView<'a> {
        let V1Status {
            id_str,
            id,
            text,
            full_text,
            created_at,
            lang,
            user,
            in_reply_to_user_id_str,
            in_reply_to_user_id,
            in_reply_to_status_id_str,
            in_reply_to_status_id,
            entities,
            extended_entities,
            extended_tweet,
            retweeted_status,
            quoted_status,
            coordinates,
            place,
            ..
        } = self;
        let text = text_view(text, full_text, entities, extended_entities, extended_tweet);
        let retweeted = retweeted_status.map(|s| Box::new(s.into_embedded()));
        // A retweet of a quote carries the quote inside the retweeted post only.
        let quoted = quoted_status.map(|s| Box::new(s.into_embedded()));
        PostView {
            source: SOURCE,
            id: id_of(id_str, id).unwrap_or(Cow::Borrowed("")),
            created_at,
            author: user.map(V1User::into_ref).unwrap_or_default(),
            lang,
            text,
            in_reply_to_user_id: id_of(in_reply_to_user_id_str, in_reply_to_user_id),
            in_reply_to_post_id: id_of(in_reply_to_status_id_str, in_reply_to_status_id),
            retweeted,
            quoted,
            coordinates: coordinates
                .and_then(|c| c.coordinates)
                .map(|[lng, lat]| Point { lng, lat })
                .filter(|p| p.lng.is_finite() && p.lat.is_finite()),
            place_bbox: place
                .and_then(|p| p.bounding_box)
                .and_then(|b| b.coordinates)
                .and_then(|rings| BBox::around(rings.into_iter().flatten().map(|[lng, lat]| Point { lng, lat }))),
            source_rules: None,
            edited_at: None,
            position: None,
            surprises: Vec::new(),
        }
    }

    fn into_embedded(self) -> EmbeddedPost<'a> {
        let id = id_of(self.id_str, self.id);
        let author = self.user.map(V1User::into_ref).unwrap_or_default();
        let text = text_view(self.text, self.full_text, self.entities, self.extended_entities, self.extended_tweet);
        EmbeddedPost { id, author, text }
    }
}

impl<'a> V1User<'a> {
    fn into_ref(self) -> UserRef<'a> {
        UserRef { id: id_of(self.id_str, self.id), handle: self.screen_name }
    }
}

/// Pick the full text (extended tweet, then `full_text`, then `text`) with the
/// entities that belong to it, locate the entities and undo HTML escapes.
fn text_view<'a>(
    text: Option<Cow<'a, str>>,
    full_text: Option<Cow<'a, str>>,
    entities: Option<V1Entities<'a>>,
    extended_entities: Option<V1Entities<'a>>,
    extended: Option<V1Extended<'a>>,
) -> TextView<'a> {
    let (raw, entities, media_from) = match extended {
        Some(V1Extended { full_text: Some(ft), entities: e, extended_entities: ee, .. }) => (ft, e, ee),
        _ => (full_text.or(text).unwrap_or(Cow::Borrowed("")), entities, extended_entities),
    };
    let mut view = TextView::default();
    let mut found = Vec::new();
    if let Some(e) = entities {
        let mut locator = Locator::new(&raw);
        for h in e.hashtags.unwrap_or_default() {
            let Some(tag) = h.text else { continue };
            found.extend(locator.locate(h.indices, &['#', '＃'], &tag));
            view.hashtags.push(tag);
        }
        for s in e.symbols.unwrap_or_default() {
            // Cashtags stay words of the text ("$AAPL" is the token "aapl"); they
            // are reported to plugins only.
            view.cashtags.extend(s.text);
        }
        for m in e.user_mentions.unwrap_or_default() {
            let Some(handle) = m.screen_name else { continue };
            found.extend(locator.locate(m.indices, &['@', '＠'], &handle));
            view.mentions.push(Mention { handle, id: id_of(m.id_str, m.id) });
        }
        let media = e.media.into_iter().flatten();
        // extended_entities.media repeats entities.media with more items (all
        // photos of a post); take whichever has more, never both.
        let ext_media: Vec<V1Url<'a>> = media_from.and_then(|x| x.media).unwrap_or_default();
        let media: Vec<V1Url<'a>> = media.collect();
        let media = if ext_media.len() > media.len() { ext_media } else { media };
        for u in e.urls.unwrap_or_default().into_iter().chain(media) {
            if let Some(url) = u.url.as_deref() {
                found.extend(locator.locate(u.indices, &[], url));
            }
            view.links.push(Link { url: u.url, expanded_url: u.expanded_url, display_url: u.display_url });
        }
    }
    found.sort_by_key(|r| r.start);
    let (text, spans) = unescape_with_spans(raw, found);
    view.text = text;
    view.entity_spans = spans;
    view
}

/// Finds the byte range of an entity in a text (see the module docs).
pub(crate) struct Locator<'t> {
    text: &'t str,
    /// Byte offset of every char, plus the end; built on first use.
    offsets: Option<Vec<usize>>,
    /// The text is ASCII: a char index is a byte offset.
    ascii: bool,
    taken: Vec<Range<usize>>,
}

impl<'t> Locator<'t> {
    pub(crate) fn new(text: &'t str) -> Self {
        Locator { text, offsets: None, ascii: text.is_ascii(), taken: Vec::new() }
    }

    pub(crate) fn locate(&mut self, indices: Option<[u32; 2]>, sigils: &[char], body: &str) -> Option<Range<usize>> {
        let r = self.by_indices(indices, sigils, body).or_else(|| self.by_search(sigils, body))?;
        self.taken.push(r.clone());
        Some(r)
    }

    fn free(&self, r: &Range<usize>) -> bool {
        self.taken.iter().all(|t| t.end <= r.start || r.end <= t.start)
    }

    fn by_indices(&mut self, indices: Option<[u32; 2]>, sigils: &[char], body: &str) -> Option<Range<usize>> {
        let [a, b] = indices?;
        let text = self.text;
        let (a, b) = (a as usize, b as usize);
        let r = if self.ascii {
            // A char is a byte: no table of offsets to build.
            if a >= b || b > text.len() {
                return None;
            }
            a..b
        } else {
            let offsets =
                self.offsets.get_or_insert_with(|| text.char_indices().map(|(i, _)| i).chain([text.len()]).collect());
            if a >= b || b >= offsets.len() {
                return None;
            }
            offsets[a]..offsets[b]
        };
        let covered = &text[r.clone()];
        let ok = if sigils.is_empty() {
            covered == body
        } else {
            let mut chars = covered.chars();
            chars.next().is_some_and(|c| sigils.contains(&c)) && eq_caseless(chars.as_str(), body)
        };
        (ok && self.free(&r)).then_some(r)
    }

    fn by_search(&self, sigils: &[char], body: &str) -> Option<Range<usize>> {
        if body.is_empty() {
            return None;
        }
        let text = self.text;
        let mut from = 0;
        while let Some(pos) = find_caseless(&text[from..], body) {
            let start = from + pos;
            let end = start + body.len();
            // A tag or handle must end where the word ends (`#Brexit` is not
            // the start of `#BrexitSucks`).
            let whole =
                sigils.is_empty() || text[end..].chars().next().is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            let r = if !whole {
                None
            } else if sigils.is_empty() {
                Some(start..end)
            } else {
                text[..start].chars().next_back().filter(|c| sigils.contains(c)).map(|c| start - c.len_utf8()..end)
            };
            if let Some(r) = r
                && self.free(&r)
            {
                return Some(r);
            }
            from = start + text[start..].chars().next().map_or(1, char::len_utf8);
        }
        None
    }
}

fn eq_caseless(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || (!a.is_ascii() && a.to_lowercase() == b.to_lowercase())
}

/// ASCII-case-insensitive substring search (entity bodies as they appear in text
/// keep their case except for ASCII handles, so this is enough).
fn find_caseless(hay: &str, needle: &str) -> Option<usize> {
    if let Some(p) = hay.find(needle) {
        return Some(p);
    }
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    if n.len() > h.len() {
        return None;
    }
    (0..=h.len() - n.len()).filter(|&i| hay.is_char_boundary(i)).find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// Undo `&amp;`, `&lt;`, `&gt;` and move the spans with the text.
pub(crate) fn unescape_with_spans(
    raw: Cow<'_, str>,
    mut spans: Vec<Range<usize>>,
) -> (Cow<'_, str>, Vec<Range<usize>>) {
    if !raw.contains('&') {
        return (raw, spans);
    }
    let mut out = String::with_capacity(raw.len());
    // (position in raw after an escape, bytes saved so far)
    let mut shifts: Vec<(usize, usize)> = Vec::new();
    let mut saved = 0;
    let mut rest = raw.as_ref();
    let mut pos = 0;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let (rep, len) = if tail.starts_with("&amp;") {
            ('&', 5)
        } else if tail.starts_with("&lt;") {
            ('<', 4)
        } else if tail.starts_with("&gt;") {
            ('>', 4)
        } else {
            ('&', 1)
        };
        out.push(rep);
        saved += len - 1;
        pos += i + len;
        if len > 1 {
            shifts.push((pos, saved));
        }
        rest = &rest[i + len..];
    }
    out.push_str(rest);
    let map = |p: usize| -> usize {
        let idx = shifts.partition_point(|&(at, _)| at <= p);
        let s = if idx == 0 { 0 } else { shifts[idx - 1].1 };
        let q = p.saturating_sub(s).min(out.len());
        // A boundary inside an escape (never for real entities) snaps to a char boundary.
        (0..=q).rev().find(|&q| out.is_char_boundary(q)).unwrap_or(0)
    };
    for r in &mut spans {
        *r = map(r.start)..map(r.end);
    }
    (Cow::Owned(out), spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(json: &str) -> PostView<'_> {
        match decode(json.as_bytes()).expect("decodes") {
            Message::Post(p) => *p,
            other => panic!("not a post: {other:?}"),
        }
    }

    #[test]
    fn mention_span_found_by_indices() {
        let p = post(
            r#"{"id_str":"1","text":"@Twitter's office","entities":{"user_mentions":[{"screen_name":"Twitter","indices":[0,8]}]}}"#,
        );
        assert_eq!(p.text.entity_spans, vec![0..8]);
        assert_eq!(p.text.mentions[0].handle, "Twitter");
    }

    #[test]
    fn wrong_indices_fall_back_to_search() {
        // indices counted on the escaped text; this text is unescaped.
        let p = post(
            r#"{"id_str":"1","text":"a <b https://t.co/x","entities":{"urls":[{"url":"https://t.co/x","indices":[8,22]}]}}"#,
        );
        assert_eq!(&p.text.text[p.text.entity_spans[0].clone()], "https://t.co/x");
    }

    #[test]
    fn html_escapes_are_undone_and_spans_follow() {
        let p = post(
            r##"{"id_str":"1","text":"fish &amp; chips #yum","entities":{"hashtags":[{"text":"yum","indices":[17,21]}]}}"##,
        );
        assert_eq!(p.text.text, "fish & chips #yum");
        assert_eq!(&p.text.text[p.text.entity_spans[0].clone()], "#yum");
    }

    #[test]
    fn extended_tweet_full_text_wins() {
        let p = post(
            r#"{"id_str":"1","text":"short…","truncated":true,"extended_tweet":{"full_text":"the whole text","entities":{}}}"#,
        );
        assert_eq!(p.text.text, "the whole text");
    }

    #[test]
    fn control_messages_are_classified() {
        for (json, kind) in [
            (r#"{"limit":{"track":1234}}"#, ControlKind::Limit),
            (r#"{"delete":{"status":{"id":1}}}"#, ControlKind::Delete),
            (r#"{"warning":{"code":"FALLING_BEHIND"}}"#, ControlKind::Warning),
            (r#"{"something":1}"#, ControlKind::Unknown),
        ] {
            match decode(json.as_bytes()).expect("decodes") {
                Message::Control(c) => assert_eq!(c.kind, kind, "{json}"),
                other => panic!("{json} gave {other:?}"),
            }
        }
        match decode(br#"{"limit":{"track":1234}}"#).expect("decodes") {
            Message::Control(c) => assert_eq!(c.undelivered, Some(1234)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_input_is_typed() {
        assert!(matches!(decode(b"{\"id_str\":"), Err(DecodeError::Json(_))));
        assert!(matches!(decode(b"[1,2]"), Err(DecodeError::NotAnObject)));
        // A field of an unexpected type is absent, not a reason to lose the post.
        match decode(br#"{"id_str":"1","text":5}"#) {
            Ok(Message::Post(p)) => {
                assert_eq!(p.text.text, "");
                assert_eq!(p.surprises, vec![super::super::Surprise { field: "status.text", converted: false }]);
            }
            other => panic!("{other:?}"),
        }
    }
}
