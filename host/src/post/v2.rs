//! Decoding of X API v2 filtered-stream messages into [`Message`].
//!
//! A stream message is `{"data": {post}, "includes": {users, tweets, places},
//! "matching_rules": [{"id", "tag"}]}`. The post view is assembled as for
//! v1.1: the author from `includes.users`, the retweeted / quoted / replied-to
//! post from `referenced_tweets` + `includes.tweets`, the place from
//! `includes.places`, the long text from `note_tweet`. `matching_rules`
//! entries (the server's rule id and its tag, our `rule_id` when rule sync
//! created the rule) become [`PostView::source_rules`]: on this source they,
//! not the local matcher, attribute the post (by id first, then by tag).
//!
//! A message without `data` (in-stream `errors`, for example) is a control
//! message.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{
    BBox, Control, ControlKind, DecodeError, EmbeddedPost, Link, Mention, Message, Point, PostView, SourceRule,
    TextView, UserRef,
    v1::{Locator, unescape_with_spans},
};

/// The `source` name of posts decoded here.
pub const SOURCE: &str = "x-v2";

#[derive(Deserialize, Default)]
#[serde(default)]
struct V2Message<'a> {
    #[serde(borrow)]
    data: Option<V2Tweet<'a>>,
    #[serde(borrow)]
    includes: Option<V2Includes<'a>>,
    #[serde(borrow)]
    matching_rules: Option<Vec<V2Rule<'a>>>,
    errors: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V2Rule<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tag: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V2Includes<'a> {
    #[serde(borrow)]
    users: Vec<V2User<'a>>,
    #[serde(borrow)]
    tweets: Vec<V2Tweet<'a>>,
    #[serde(borrow)]
    places: Vec<V2Place<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V2User<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    username: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V2Place<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    geo: Option<V2PlaceGeo>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V2PlaceGeo {
    /// `[west, south, east, north]`.
    bbox: Option<[f64; 4]>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V2Tweet<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    text: Cow<'a, str>,
    #[serde(borrow)]
    created_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    author_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    lang: Option<Cow<'a, str>>,
    #[serde(borrow)]
    in_reply_to_user_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    entities: Option<V2Entities<'a>>,
    #[serde(borrow)]
    note_tweet: Option<V2Note<'a>>,
    #[serde(borrow)]
    referenced_tweets: Vec<V2Ref<'a>>,
    #[serde(borrow)]
    geo: Option<V2Geo<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V2Note<'a> {
    #[serde(borrow)]
    text: Cow<'a, str>,
    #[serde(borrow)]
    entities: Option<V2Entities<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V2Ref<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V2Geo<'a> {
    coordinates: Option<V2Point>,
    #[serde(borrow)]
    place_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V2Point {
    /// `[longitude, latitude]`.
    coordinates: Option<[f64; 2]>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V2Entities<'a> {
    #[serde(borrow)]
    hashtags: Vec<V2Tag<'a>>,
    #[serde(borrow)]
    cashtags: Vec<V2Tag<'a>>,
    #[serde(borrow)]
    mentions: Vec<V2Mention<'a>>,
    #[serde(borrow)]
    urls: Vec<V2Url<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V2Tag<'a> {
    #[serde(borrow)]
    tag: Cow<'a, str>,
    start: Option<u32>,
    end: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V2Mention<'a> {
    #[serde(borrow)]
    username: Cow<'a, str>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    start: Option<u32>,
    end: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V2Url<'a> {
    #[serde(borrow)]
    url: Option<Cow<'a, str>>,
    #[serde(borrow)]
    expanded_url: Option<Cow<'a, str>>,
    #[serde(borrow)]
    display_url: Option<Cow<'a, str>>,
    start: Option<u32>,
    end: Option<u32>,
}

fn indices(start: Option<u32>, end: Option<u32>) -> Option<[u32; 2]> {
    Some([start?, end?])
}

/// Decode one v2 stream message.
pub fn decode(bytes: &[u8]) -> Result<Message<'_>, DecodeError> {
    decode_text(super::text(bytes)?)
}

/// [`decode`] from text already known to be UTF-8 (validated once per
/// record, not once per string).
pub fn decode_text(text: &str) -> Result<Message<'_>, DecodeError> {
    let msg: V2Message<'_> = serde_json::from_str(text).map_err(|e| super::read_error(text, e))?;
    let Some(data) = msg.data.filter(|d| !d.id.is_empty()) else {
        let _ = msg.errors;
        return Ok(Message::Control(Control { kind: ControlKind::Unknown, undelivered: None }));
    };
    let includes = msg.includes.unwrap_or_default();
    let users = &includes.users;
    let referenced = |kind: &str| -> Option<&V2Tweet<'_>> {
        let r = data.referenced_tweets.iter().find(|r| r.kind == kind)?;
        includes.tweets.iter().find(|t| t.id == r.id)
    };
    let retweeted = referenced("retweeted").map(|t| embed(t, users));
    let quoted = referenced("quoted").map(|t| embed(t, users));
    let in_reply_to_post_id = data.referenced_tweets.iter().find(|r| r.kind == "replied_to").map(|r| r.id.clone());
    let geo = data.geo.as_ref();
    let place_bbox = geo
        .and_then(|g| g.place_id.as_deref())
        .and_then(|pid| includes.places.iter().find(|p| p.id == pid))
        .and_then(|p| p.geo.as_ref()?.bbox)
        .map(|[west, south, east, north]| BBox { west, south, east, north });
    let coordinates = geo
        .and_then(|g| g.coordinates.as_ref()?.coordinates)
        .map(|[lng, lat]| Point { lng, lat })
        .filter(|p| p.lng.is_finite() && p.lat.is_finite());
    let source_rules =
        msg.matching_rules.map(|rules| rules.into_iter().map(|r| SourceRule { id: r.id, tag: r.tag }).collect());
    let view = PostView {
        source: SOURCE,
        id: data.id.clone(),
        created_at: data.created_at.clone(),
        author: UserRef { id: data.author_id.clone(), handle: handle_of(users, data.author_id.as_deref()) },
        lang: data.lang.clone(),
        text: text_view(&data),
        in_reply_to_user_id: data.in_reply_to_user_id.clone(),
        in_reply_to_post_id,
        retweeted,
        quoted,
        coordinates,
        place_bbox,
        source_rules,
        edited_at: None,
    };
    Ok(Message::Post(Box::new(view)))
}

fn handle_of<'a>(users: &[V2User<'a>], id: Option<&str>) -> Option<Cow<'a, str>> {
    let id = id?;
    users.iter().find(|u| u.id == id).and_then(|u| u.username.clone())
}

fn embed<'a>(t: &V2Tweet<'a>, users: &[V2User<'a>]) -> Box<EmbeddedPost<'a>> {
    Box::new(EmbeddedPost {
        id: Some(t.id.clone()),
        author: UserRef { id: t.author_id.clone(), handle: handle_of(users, t.author_id.as_deref()) },
        text: text_view(t),
    })
}

/// The full text (`note_tweet` for long posts) with its entities located.
fn text_view<'a>(t: &V2Tweet<'a>) -> TextView<'a> {
    let (raw, entities) = match &t.note_tweet {
        Some(n) if !n.text.is_empty() => (n.text.clone(), n.entities.as_ref()),
        _ => (t.text.clone(), t.entities.as_ref()),
    };
    let mut view = TextView::default();
    let mut found = Vec::new();
    if let Some(e) = entities {
        let mut locator = Locator::new(&raw);
        for h in &e.hashtags {
            found.extend(locator.locate(indices(h.start, h.end), &['#', '＃'], &h.tag));
            view.hashtags.push(h.tag.clone());
        }
        for c in &e.cashtags {
            view.cashtags.push(c.tag.clone());
        }
        for m in &e.mentions {
            found.extend(locator.locate(indices(m.start, m.end), &['@', '＠'], &m.username));
            view.mentions.push(Mention { handle: m.username.clone(), id: m.id.clone() });
        }
        for u in &e.urls {
            if let Some(url) = u.url.as_deref() {
                found.extend(locator.locate(indices(u.start, u.end), &[], url));
            }
            view.links.push(Link {
                url: u.url.clone(),
                expanded_url: u.expanded_url.clone(),
                display_url: u.display_url.clone(),
            });
        }
    }
    found.sort_by_key(|r| r.start);
    let (text, spans) = unescape_with_spans(raw, found);
    view.text = text;
    view.entity_spans = spans;
    view
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_lines(page: &str) -> Vec<String> {
        let page: serde_json::Value = serde_json::from_str(page).expect("page");
        page["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|t| {
                serde_json::json!({"data": t, "includes": page["includes"], "matching_rules": [{"id": "1", "tag": "r1"}]})
                    .to_string()
            })
            .collect()
    }

    fn page(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/x-v2").join(name);
        std::fs::read_to_string(p).expect("read")
    }

    #[test]
    fn recorded_retweet_is_normalised() {
        let line = &stream_lines(&page("two_tweets.jsonl"))[0];
        let Message::Post(p) = decode(line.as_bytes()).expect("decode") else { panic!("not a post") };
        assert_eq!(p.source, "x-v2");
        assert_eq!(p.id, "1394735776701816833");
        assert_eq!(p.author.handle.as_deref(), Some("LachiVeronica"));
        let rt = p.retweeted.as_ref().expect("retweet");
        assert_eq!(rt.author.id.as_deref(), Some("1380086327023169540"));
        assert_eq!(rt.author.handle.as_deref(), Some("bibaigna96"));
        assert_eq!(rt.text.hashtags, vec!["POIUYTREWQ"]);
        assert_eq!(p.text.mentions[0].handle, "bibaigna96");
        assert_eq!(p.source_rules.as_deref().map(|v| v.len()), Some(1));
        // The mention and the hashtag spans are found in the text.
        for s in &p.text.entity_spans {
            assert!(p.text.text[s.clone()].starts_with(['@', '#']));
        }
    }

    #[test]
    fn every_recorded_brexit_post_decodes() {
        let mut n = 0;
        for line in stream_lines(&page("brexit.jsonl")) {
            let Message::Post(p) = decode(line.as_bytes()).expect("decode") else { panic!("not a post") };
            assert!(!p.id.is_empty() && p.author.handle.is_some(), "{}", p.id);
            // Every hashtag and mention is located; links may repeat one t.co
            // (several media behind one link), so they share a span.
            let covered: Vec<&str> = p.text.entity_spans.iter().map(|s| &p.text.text[s.clone()]).collect();
            for h in &p.text.hashtags {
                assert!(covered.iter().any(|c| c[1..] == **h), "#{h} in {:?}", p.text.text);
            }
            for m in &p.text.mentions {
                assert!(covered.iter().any(|c| c[1..] == *m.handle), "@{} in {:?}", m.handle, p.text.text);
            }
            for l in p.text.links.iter().filter_map(|l| l.url.as_deref()) {
                assert!(covered.contains(&l), "{l} in {:?}", p.text.text);
            }
            n += 1;
        }
        assert_eq!(n, 100);
    }

    #[test]
    fn errors_are_control_messages() {
        let line = br#"{"errors":[{"title":"operational-disconnect","disconnect_type":"UpstreamOperationalDisconnect","detail":"This stream has been disconnected upstream for operational reasons.","type":"https://api.twitter.com/2/problems/operational-disconnect"}]}"#;
        assert!(matches!(decode(line), Ok(Message::Control(_))));
    }
}
