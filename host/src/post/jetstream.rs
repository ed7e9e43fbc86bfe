//! Decoding of Bluesky Jetstream (v1) events into [`Message`].
//!
//! * `commit` + `create` of `app.bsky.feed.post`: a post. Its id is the record's
//!   AT URI (`at://<did>/app.bsky.feed.post/<rkey>`), its author the DID (so a
//!   follow rule's value is a DID), its text the record's, its language the
//!   first of `langs`. Facets give hashtags (`#tag`), mentions (`#mention`,
//!   by DID) and links (`#link`); their `byteStart..byteEnd` (UTF-8 bytes) are
//!   the entity spans. A reply names the parent's author (from the parent's
//!   URI); an embedded record is the quoted post.
//! * `commit` + `create` of `app.bsky.feed.repost`: a repost, i.e. a retweet
//!   of the subject (author from its URI), with no text of its own.
//! * Everything else (likes, follows, deletes, profile updates, `identity`,
//!   `account`) is a control message, forwarded and counted.

use std::borrow::Cow;

use super::tolerant::{self, Id, Surprises, tolerant};
use super::{Control, ControlKind, DecodeError, EmbeddedPost, Link, Mention, Message, PostView, TextView, UserRef};

/// The `source` name of posts decoded here.
pub const SOURCE: &str = "bluesky";

tolerant! {
    struct Event<'a> in "event" {
        did: Cow<'a, str>,
        time_us: u64,
        kind: Cow<'a, str>,
        commit: Commit<'a>,
    }
}

tolerant! {
    struct Commit<'a> in "commit" {
        operation: Cow<'a, str>,
        collection: Cow<'a, str>,
        rkey: Id<'a>,
        /// Read for both collections at once (a post's keys and a repost's
        /// `subject`), so the record needs no second pass and may come before
        /// or after `collection`.
        record: Record<'a>,
    }
}

tolerant! {
    struct Record<'a> in "record" {
        text: Cow<'a, str>,
        created_at as "createdAt": Cow<'a, str>,
        langs: Vec<Cow<'a, str>>,
        facets: Vec<Facet<'a>>,
        reply: Reply<'a>,
        embed: Embed<'a>,
        /// A repost's subject.
        subject: StrongRef<'a>,
    }
}

tolerant! {
    struct Facet<'a> in "facet" {
        index: ByteSlice,
        features: Vec<Feature<'a>>,
    }
}

tolerant! {
    struct ByteSlice in "facet.index" {
        byte_start as "byteStart": usize,
        byte_end as "byteEnd": usize,
    }
}

tolerant! {
    struct Feature<'a> in "feature" {
        kind as "$type": Cow<'a, str>,
        tag: Cow<'a, str>,
        did: Cow<'a, str>,
        uri: Cow<'a, str>,
    }
}

tolerant! {
    struct Reply<'a> in "reply" {
        parent: StrongRef<'a>,
    }
}

tolerant! {
    struct StrongRef<'a> in "ref" {
        uri: Cow<'a, str>,
    }
}

tolerant! {
    struct Embed<'a> in "embed" {
        kind as "$type": Cow<'a, str>,
        /// `app.bsky.embed.record`: `{record: {uri}}`;
        /// `app.bsky.embed.recordWithMedia`: `{record: {record: {uri}}}`.
        record: EmbedRecord<'a>,
    }
}

tolerant! {
    struct EmbedRecord<'a> in "embed.record" {
        uri: Cow<'a, str>,
        record: StrongRef<'a>,
    }
}

/// The DID in an AT URI (`at://did:plc:x/collection/rkey` → `did:plc:x`).
fn did_of(uri: &str) -> Option<Cow<'_, str>> {
    let rest = uri.strip_prefix("at://")?;
    Some(Cow::Borrowed(rest.split('/').next().filter(|d| d.starts_with("did:"))?))
}

fn owned_did(uri: &str) -> Option<String> {
    did_of(uri).map(|d| d.into_owned())
}

/// The event's `time_us` (the cursor), if it has one — read without decoding
/// the rest.
pub fn time_us(bytes: &[u8]) -> Option<u64> {
    tolerant! {
        struct T in "event" {
            time_us: u64,
        }
    }
    let text = std::str::from_utf8(bytes).ok()?;
    tolerant::read_record::<T>(text, "event", &Surprises::default()).ok()??.time_us
}

/// Decode one Jetstream event.
pub fn decode(bytes: &[u8]) -> Result<Message<'_>, DecodeError> {
    decode_text(super::text(bytes)?)
}

/// [`decode`] from text already known to be UTF-8 (validated once per
/// record, not once per string).
pub fn decode_text(text: &str) -> Result<Message<'_>, DecodeError> {
    let surprises = Surprises::default();
    let ev: Event<'_> = match tolerant::read_record(text, "event", &surprises) {
        Ok(Some(e)) => e,
        Ok(None) => return Err(DecodeError::NotAnObject),
        Err(e) => return Err(DecodeError::Json(e)),
    };
    let control = |kind| Ok(Message::Control(Control { kind, undelivered: None }));
    match ev.kind.as_deref() {
        Some("identity") => return control(ControlKind::Identity),
        Some("account") => return control(ControlKind::Account),
        // A commit; or a kind of another type, when a commit says what it is.
        Some("commit") | None => {}
        Some(_) => return control(ControlKind::Unknown),
    }
    let Some(commit) = ev.commit else { return control(ControlKind::Unknown) };
    // An operation of another type is taken for a create when the commit
    // has a record, whatever its shape (a delete has none).
    match commit.operation.as_deref() {
        Some("delete") => return control(ControlKind::Delete),
        Some("create") => {}
        None if commit.has("record") => {}
        _ => return control(ControlKind::Unknown),
    }
    let collection = commit.collection.as_deref().unwrap_or_default();
    let is_post = collection == "app.bsky.feed.post";
    let is_repost = collection == "app.bsky.feed.repost";
    if !(is_post || is_repost) {
        return control(ControlKind::Unknown);
    }
    let (Some(did), Some(rkey)) = (ev.did, commit.rkey) else {
        return Err(DecodeError::NoPostId("did, commit.rkey"));
    };
    let id = Cow::Owned(format!("at://{did}/{collection}/{}", rkey.as_str()));
    let author = UserRef { id: Some(did), handle: None };
    let record = commit.record.unwrap_or_default();
    if is_repost {
        let subject = record.subject.and_then(|s| s.uri);
        let retweeted = EmbeddedPost {
            author: UserRef { id: subject.as_deref().and_then(owned_did).map(Cow::Owned), handle: None },
            id: subject,
            text: TextView::default(),
        };
        return Ok(Message::Post(Box::new(PostView {
            source: SOURCE,
            id,
            created_at: record.created_at,
            author,
            retweeted: Some(Box::new(retweeted)),
            position: ev.time_us,
            surprises: surprises.into_vec(),
            ..PostView::default()
        })));
    }
    let parent = record.reply.and_then(|r| r.parent).and_then(|p| p.uri);
    let quoted_uri = record.embed.and_then(|e| {
        let r = e.record?;
        match e.kind.as_deref() {
            Some("app.bsky.embed.recordWithMedia") => r.record.and_then(|s| s.uri),
            _ => r.uri,
        }
    });
    let quoted = quoted_uri.map(|uri| {
        Box::new(EmbeddedPost {
            author: UserRef { id: owned_did(&uri).map(Cow::Owned), handle: None },
            id: Some(uri),
            text: TextView::default(),
        })
    });
    let text = text_view(record.text.unwrap_or_default(), record.facets.unwrap_or_default());
    Ok(Message::Post(Box::new(PostView {
        source: SOURCE,
        id,
        created_at: record.created_at,
        author,
        lang: record.langs.and_then(|l| l.into_iter().next()),
        text,
        in_reply_to_user_id: parent.as_deref().and_then(owned_did).map(Cow::Owned),
        in_reply_to_post_id: parent,
        retweeted: None,
        quoted,
        coordinates: None,
        place_bbox: None,
        source_rules: None,
        edited_at: None,
        position: ev.time_us,
        surprises: surprises.into_vec(),
    })))
}

fn text_view<'a>(text: Cow<'a, str>, facets: Vec<Facet<'a>>) -> TextView<'a> {
    let mut view = TextView::default();
    let mut spans = Vec::new();
    for f in facets {
        let span = f.index.as_ref().and_then(|i| Some(i.byte_start?..i.byte_end?)).filter(|r| {
            r.start < r.end && r.end <= text.len() && text.is_char_boundary(r.start) && text.is_char_boundary(r.end)
        });
        for feat in f.features.unwrap_or_default() {
            match feat.kind.as_deref().unwrap_or_default() {
                "app.bsky.richtext.facet#tag" => {
                    if let Some(tag) = feat.tag {
                        view.hashtags.push(tag);
                    }
                }
                "app.bsky.richtext.facet#mention" => {
                    if let Some(did) = feat.did {
                        // The text shows @handle; the facet gives the DID.
                        let shown = span
                            .as_ref()
                            .map(|r| text[r.clone()].trim_start_matches('@').to_owned())
                            .unwrap_or_else(|| did.to_string());
                        view.mentions.push(Mention { handle: Cow::Owned(shown), id: Some(did) });
                    }
                }
                "app.bsky.richtext.facet#link" => {
                    let display = span.as_ref().map(|r| Cow::Owned(text[r.clone()].to_owned()));
                    view.links.push(Link { url: None, expanded_url: feat.uri, display_url: display });
                }
                _ => continue,
            }
            if let Some(r) = &span {
                spans.push(r.clone());
            }
        }
    }
    spans.sort_by_key(|r| r.start);
    spans.dedup();
    view.text = text;
    view.entity_spans = spans;
    view
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Vec<String> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/jetstream/expected_v1.jsonl");
        std::fs::read_to_string(p).expect("read").lines().map(str::to_owned).collect()
    }

    #[test]
    fn recorded_events_classify() {
        let (mut posts, mut reposts, mut deletes, mut identity, mut account, mut other) = (0, 0, 0, 0, 0, 0);
        for e in events() {
            match decode(e.as_bytes()).expect("decodes") {
                Message::Post(p) if p.is_retweet() => {
                    reposts += 1;
                    assert!(
                        p.retweeted
                            .as_ref()
                            .and_then(|r| r.author.id.as_deref())
                            .is_some_and(|d| d.starts_with("did:"))
                    );
                }
                Message::Post(p) => {
                    posts += 1;
                    assert!(
                        p.id.starts_with("at://did:") && p.author.id.as_deref().is_some_and(|d| d.starts_with("did:"))
                    );
                    for s in &p.text.entity_spans {
                        assert!(p.text.text.get(s.clone()).is_some());
                    }
                }
                Message::Control(c) => match c.kind {
                    ControlKind::Delete => deletes += 1,
                    ControlKind::Identity => identity += 1,
                    ControlKind::Account => account += 1,
                    _ => other += 1,
                },
            }
        }
        // corpus_manifest.json: 17 post creates, 15 reposts, 4 deletes, 1 identity, 1 account.
        assert_eq!((posts, reposts, deletes, identity, account), (17, 15, 4, 1, 1));
        assert_eq!(other, 152 - 17 - 15 - 4 - 2);
    }

    #[test]
    fn facets_become_entities() {
        let ev = r#"{"did":"did:plc:a","time_us":1,"kind":"commit","commit":{"operation":"create","collection":"app.bsky.feed.post","rkey":"k","record":{"text":"hé #rust @bob.test see x.com","langs":["fr"],"facets":[{"index":{"byteStart":4,"byteEnd":9},"features":[{"$type":"app.bsky.richtext.facet#tag","tag":"rust"}]},{"index":{"byteStart":10,"byteEnd":19},"features":[{"$type":"app.bsky.richtext.facet#mention","did":"did:plc:bob"}]},{"index":{"byteStart":24,"byteEnd":29},"features":[{"$type":"app.bsky.richtext.facet#link","uri":"https://x.com/"}]}],"reply":{"parent":{"uri":"at://did:plc:parent/app.bsky.feed.post/1"},"root":{"uri":"at://did:plc:parent/app.bsky.feed.post/1"}}}}}"#;
        let Message::Post(p) = decode(ev.as_bytes()).expect("decode") else { panic!() };
        assert_eq!(p.text.hashtags, vec!["rust"]);
        assert_eq!(p.text.mentions[0].handle, "bob.test");
        assert_eq!(p.text.mentions[0].id.as_deref(), Some("did:plc:bob"));
        assert_eq!(p.text.links[0].expanded_url.as_deref(), Some("https://x.com/"));
        assert_eq!(p.lang.as_deref(), Some("fr"));
        assert_eq!(p.in_reply_to_user_id.as_deref(), Some("did:plc:parent"));
        let covered: Vec<&str> = p.text.entity_spans.iter().map(|s| &p.text.text[s.clone()]).collect();
        assert_eq!(covered, vec!["#rust", "@bob.test", "x.com"]);
        assert_eq!(time_us(ev.as_bytes()), Some(1));
    }
}
