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

use super::tolerant::{self, Id, Surprises, tolerant};
use super::{
    BBox, Control, ControlKind, DecodeError, EmbeddedPost, Link, Mention, Message, Point, PostView, SourceRule,
    TextView, UserRef,
    v1::{Locator, unescape_with_spans},
};

/// The `source` name of posts decoded here.
pub const SOURCE: &str = "x-v2";

tolerant! {
    struct V2Message<'a> in "message" {
        data: V2Tweet<'a>,
        includes: V2Includes<'a>,
        matching_rules: Vec<V2Rule<'a>>,
    }
}

tolerant! {
    /// Early v2 (2021) sent `id` as a JSON number, later as a string.
    struct V2Rule<'a> in "matching_rule" {
        id: Id<'a>,
        tag: Cow<'a, str>,
    }
}

tolerant! {
    struct V2Includes<'a> in "includes" {
        users: Vec<V2User<'a>>,
        tweets: Vec<V2Tweet<'a>>,
        places: Vec<V2Place<'a>>,
    }
}

tolerant! {
    struct V2User<'a> in "user" {
        id: Id<'a>,
        username: Cow<'a, str>,
    }
}

tolerant! {
    struct V2Place<'a> in "place" {
        id: Id<'a>,
        geo: V2PlaceGeo,
    }
}

tolerant! {
    struct V2PlaceGeo in "place.geo" {
        /// `[west, south, east, north]`.
        bbox: [f64; 4],
    }
}

tolerant! {
    struct V2Tweet<'a> in "tweet" {
        id: Id<'a>,
        text: Cow<'a, str>,
        created_at: Cow<'a, str>,
        author_id: Id<'a>,
        lang: Cow<'a, str>,
        in_reply_to_user_id: Id<'a>,
        entities: V2Entities<'a>,
        note_tweet: V2Note<'a>,
        referenced_tweets: Vec<V2Ref<'a>>,
        geo: V2Geo<'a>,
    }
}

tolerant! {
    struct V2Note<'a> in "note_tweet" {
        text: Cow<'a, str>,
        entities: V2Entities<'a>,
    }
}

tolerant! {
    struct V2Ref<'a> in "referenced_tweet" {
        kind as "type": Cow<'a, str>,
        id: Id<'a>,
    }
}

tolerant! {
    struct V2Geo<'a> in "geo" {
        coordinates: V2Point,
        place_id: Id<'a>,
    }
}

tolerant! {
    struct V2Point in "geo.coordinates" {
        /// `[longitude, latitude]`.
        coordinates: [f64; 2],
    }
}

tolerant! {
    struct V2Entities<'a> in "entities" {
        hashtags: Vec<V2Tag<'a>>,
        cashtags: Vec<V2Tag<'a>>,
        mentions: Vec<V2Mention<'a>>,
        urls: Vec<V2Url<'a>>,
    }
}

tolerant! {
    struct V2Tag<'a> in "hashtag" {
        tag: Cow<'a, str>,
        start: u32,
        end: u32,
    }
}

tolerant! {
    struct V2Mention<'a> in "mention" {
        username: Cow<'a, str>,
        id: Id<'a>,
        start: u32,
        end: u32,
    }
}

tolerant! {
    struct V2Url<'a> in "url" {
        url: Cow<'a, str>,
        expanded_url: Cow<'a, str>,
        display_url: Cow<'a, str>,
        start: u32,
        end: u32,
    }
}

fn indices(start: Option<u32>, end: Option<u32>) -> Option<[u32; 2]> {
    Some([start?, end?])
}

fn id_str<'s>(id: &'s Option<Id<'_>>) -> Option<&'s str> {
    id.as_ref().map(Id::as_str)
}

fn id_cow<'a>(id: &Option<Id<'a>>) -> Option<Cow<'a, str>> {
    id.as_ref().map(|i| i.0.clone())
}

/// Decode one v2 stream message.
pub fn decode(bytes: &[u8]) -> Result<Message<'_>, DecodeError> {
    decode_text(super::text(bytes)?)
}

/// [`decode`] from text already known to be UTF-8 (validated once per
/// record, not once per string).
pub fn decode_text(text: &str) -> Result<Message<'_>, DecodeError> {
    let surprises = Surprises::default();
    let msg: V2Message<'_> = match tolerant::read_record(text, "message", &surprises) {
        Ok(Some(m)) => m,
        Ok(None) => return Err(DecodeError::NotAnObject),
        Err(e) => return Err(DecodeError::Json(e)),
    };
    let has_data = msg.has("data");
    let Some(data) = msg.data.filter(|d| id_str(&d.id).is_some_and(|id| !id.is_empty())) else {
        if has_data {
            return Err(DecodeError::NoPostId("data.id"));
        }
        return Ok(Message::Control(Control { kind: ControlKind::Unknown, undelivered: None }));
    };
    let includes = msg.includes.unwrap_or_default();
    let users = includes.users.as_deref().unwrap_or_default();
    let tweets = includes.tweets.as_deref().unwrap_or_default();
    let places = includes.places.as_deref().unwrap_or_default();
    let refs = data.referenced_tweets.as_deref().unwrap_or_default();
    let referenced = |kind: &str| -> Option<&V2Tweet<'_>> {
        let r = refs.iter().find(|r| r.kind.as_deref() == Some(kind))?;
        let id = id_str(&r.id)?;
        tweets.iter().find(|t| id_str(&t.id) == Some(id))
    };
    let retweeted = referenced("retweeted").map(|t| embed(t, users));
    let quoted = referenced("quoted").map(|t| embed(t, users));
    let in_reply_to_post_id = refs.iter().find(|r| r.kind.as_deref() == Some("replied_to")).and_then(|r| id_cow(&r.id));
    let geo = data.geo.as_ref();
    let place_bbox = geo
        .and_then(|g| id_str(&g.place_id))
        .and_then(|pid| places.iter().find(|p| id_str(&p.id) == Some(pid)))
        .and_then(|p| p.geo.as_ref()?.bbox)
        .map(|[west, south, east, north]| BBox { west, south, east, north });
    let coordinates = geo
        .and_then(|g| g.coordinates.as_ref()?.coordinates)
        .map(|[lng, lat]| Point { lng, lat })
        .filter(|p| p.lng.is_finite() && p.lat.is_finite());
    let source_rules = msg
        .matching_rules
        .map(|rules| rules.into_iter().map(|r| SourceRule { id: r.id.map(Id::into_cow), tag: r.tag }).collect());
    let view = PostView {
        source: SOURCE,
        id: id_cow(&data.id).unwrap_or_default(),
        created_at: data.created_at.clone(),
        author: UserRef { id: id_cow(&data.author_id), handle: handle_of(users, id_str(&data.author_id)) },
        lang: data.lang.clone(),
        text: text_view(&data),
        in_reply_to_user_id: id_cow(&data.in_reply_to_user_id),
        in_reply_to_post_id,
        retweeted,
        quoted,
        coordinates,
        place_bbox,
        source_rules,
        edited_at: None,
        position: None,
        surprises: surprises.into_vec(),
    };
    Ok(Message::Post(Box::new(view)))
}

fn handle_of<'a>(users: &[V2User<'a>], id: Option<&str>) -> Option<Cow<'a, str>> {
    let id = id?;
    users.iter().find(|u| id_str(&u.id) == Some(id)).and_then(|u| u.username.clone())
}

fn embed<'a>(t: &V2Tweet<'a>, users: &[V2User<'a>]) -> Box<EmbeddedPost<'a>> {
    Box::new(EmbeddedPost {
        id: id_cow(&t.id),
        author: UserRef { id: id_cow(&t.author_id), handle: handle_of(users, id_str(&t.author_id)) },
        text: text_view(t),
    })
}

/// The full text (`note_tweet` for long posts) with its entities located.
fn text_view<'a>(t: &V2Tweet<'a>) -> TextView<'a> {
    let (raw, entities) = match &t.note_tweet {
        Some(V2Note { text: Some(text), entities, .. }) if !text.is_empty() => (text.clone(), entities.as_ref()),
        _ => (t.text.clone().unwrap_or_default(), t.entities.as_ref()),
    };
    let mut view = TextView::default();
    let mut found = Vec::new();
    if let Some(e) = entities {
        let mut locator = Locator::new(&raw);
        for h in e.hashtags.iter().flatten() {
            let Some(tag) = &h.tag else { continue };
            found.extend(locator.locate(indices(h.start, h.end), &['#', '＃'], tag));
            view.hashtags.push(tag.clone());
        }
        for c in e.cashtags.iter().flatten() {
            view.cashtags.extend(c.tag.clone());
        }
        for m in e.mentions.iter().flatten() {
            let Some(handle) = &m.username else { continue };
            found.extend(locator.locate(indices(m.start, m.end), &['@', '＠'], handle));
            view.mentions.push(Mention { handle: handle.clone(), id: id_cow(&m.id) });
        }
        for u in e.urls.iter().flatten() {
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
