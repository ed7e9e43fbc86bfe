//! Decoding of Mastodon `Status` entities (the streaming API's `update` and
//! `status.update` payloads; Mastodon API docs, entities/Status) into
//! [`Message`].
//!
//! * **Text**: the HTML `content` with tags stripped, character references
//!   decoded, `<br>` as a line break and `</p>` as a paragraph break; with a
//!   content warning, `spoiler_text` comes first. Mastodon wraps the hidden
//!   part of a long URL in `<span class="invisible">`: the text keeps it, so
//!   the link reads whole.
//! * **Entities**: hashtags from `tags[].name`, mentions from
//!   `mentions[].acct` (with their account id), links from the content's
//!   anchors that are neither mentions nor hashtags. The text inside every
//!   anchor is an entity span, so `#rust` and `@alice` are never words.
//! * **Boosts** (`reblog` set) are retweets: the boosted status is the
//!   retweeted post (its text, its author), the booster the author — so follow
//!   rules match the booster and the original author.
//! * **Replies**: `in_reply_to_account_id` is the replied-to user, as DESIGN
//!   §4 has it for Twitter (mentions alone never match a follow rule).
//! * **Edits**: a status with `edited_at` is a new version of a post
//!   published earlier; the envelope marks it.
//! * **Deletes**: `{"delete":{"status":{"id_str":"…"}}}`, the shape the
//!   source gives a `delete` event (the v1.1 delete notice's), is a control
//!   message.

use std::borrow::Cow;
use std::ops::Range;

use super::tolerant::{self, Id, Present, Surprises, tolerant};
use super::{Control, ControlKind, DecodeError, EmbeddedPost, Link, Mention, Message, PostView, TextView, UserRef};

/// The `source` name of posts decoded here.
pub const SOURCE: &str = "mastodon";

tolerant! {
    struct Status<'a> in "status" {
        id: Id<'a>,
        created_at: Cow<'a, str>,
        edited_at: Cow<'a, str>,
        in_reply_to_id: Id<'a>,
        in_reply_to_account_id: Id<'a>,
        language: Cow<'a, str>,
        spoiler_text: Cow<'a, str>,
        content: Cow<'a, str>,
        account: Account<'a>,
        mentions: Vec<StatusMention<'a>>,
        tags: Vec<Tag<'a>>,
        reblog: Box<Status<'a>>,
        /// Present on the delete notice the source makes of a `delete` event.
        delete: Present,
    }
}

tolerant! {
    struct Account<'a> in "account" {
        id: Id<'a>,
        acct: Cow<'a, str>,
    }
}

tolerant! {
    struct StatusMention<'a> in "mention" {
        id: Id<'a>,
        acct: Cow<'a, str>,
    }
}

tolerant! {
    struct Tag<'a> in "tag" {
        name: Cow<'a, str>,
    }
}

/// Decode one status (or delete notice).
pub fn decode(bytes: &[u8]) -> Result<Message<'_>, DecodeError> {
    decode_text(super::text(bytes)?)
}

/// [`decode`] from text already known to be UTF-8 (validated once per
/// record, not once per string).
///
/// A status is an object with an id and an `account` key (whatever its
/// value: an unusable account only loses the author).
pub fn decode_text(text: &str) -> Result<Message<'_>, DecodeError> {
    let surprises = Surprises::default();
    let status: Status<'_> = match tolerant::read_record(text, "status", &surprises) {
        Ok(Some(s)) => s,
        Ok(None) => return Err(DecodeError::NotAnObject),
        Err(e) => return Err(DecodeError::Json(e)),
    };
    if status.delete.is_some() {
        return Ok(Message::Control(Control { kind: ControlKind::Delete, undelivered: None }));
    }
    if !status.has("account") {
        return Ok(Message::Control(Control { kind: ControlKind::Unknown, undelivered: None }));
    }
    let Some(id) = status.id.clone() else {
        return Err(DecodeError::NoPostId("id"));
    };
    let author = status.account.as_ref().map(Account::user).unwrap_or_default();
    let retweeted = status.reblog.map(|r| {
        Box::new(EmbeddedPost {
            id: r.id.map(Id::into_cow),
            author: r.account.as_ref().map(Account::user).unwrap_or_default(),
            text: text_view(
                r.spoiler_text.as_deref().unwrap_or_default(),
                r.content.as_deref().unwrap_or_default(),
                r.tags.unwrap_or_default(),
                r.mentions.unwrap_or_default(),
            ),
        })
    });
    let text = text_view(
        status.spoiler_text.as_deref().unwrap_or_default(),
        status.content.as_deref().unwrap_or_default(),
        status.tags.unwrap_or_default(),
        status.mentions.unwrap_or_default(),
    );
    Ok(Message::Post(Box::new(PostView {
        source: SOURCE,
        id: id.into_cow(),
        created_at: status.created_at,
        author,
        lang: status.language,
        text,
        in_reply_to_user_id: status.in_reply_to_account_id.map(Id::into_cow),
        in_reply_to_post_id: status.in_reply_to_id.map(Id::into_cow),
        retweeted,
        quoted: None,
        coordinates: None,
        place_bbox: None,
        source_rules: None,
        edited_at: status.edited_at,
        position: None,
        surprises: surprises.into_vec(),
    })))
}

impl<'a> Account<'a> {
    fn user(&self) -> UserRef<'a> {
        UserRef { id: self.id.clone().map(Id::into_cow), handle: self.acct.clone() }
    }
}

fn text_view<'a>(spoiler: &str, content: &str, tags: Vec<Tag<'a>>, mentions: Vec<StatusMention<'a>>) -> TextView<'a> {
    let mut plain = Plain::default();
    if !spoiler.trim().is_empty() {
        plain.text.push_str(&decode_entities(spoiler));
        plain.text.push_str("\n\n");
    }
    plain.html(content);
    TextView {
        text: Cow::Owned(plain.text.trim_end().to_owned()),
        entity_spans: plain.anchors.iter().map(|a| a.span.clone()).collect(),
        hashtags: tags.into_iter().filter_map(|t| t.name).collect(),
        mentions: mentions
            .into_iter()
            .filter_map(|m| Some(Mention { handle: m.acct?, id: m.id.map(Id::into_cow) }))
            .collect(),
        links: plain
            .anchors
            .into_iter()
            .filter(|a| !a.mention_or_tag)
            .filter_map(|a| a.href)
            .map(|href| Link {
                url: Some(Cow::Owned(href.clone())),
                expanded_url: Some(Cow::Owned(href)),
                display_url: None,
            })
            .collect(),
        cashtags: Vec::new(),
    }
}

/// One `<a>` of the content.
#[derive(Debug)]
pub(crate) struct Anchor {
    href: Option<String>,
    /// `class="… mention …"` (Mastodon marks hashtags `mention hashtag`) or `rel="tag"`.
    mention_or_tag: bool,
    /// Its text in [`Plain::text`].
    pub(crate) span: Range<usize>,
}

/// HTML made plain text, with where its anchors went.
#[derive(Debug, Default)]
pub(crate) struct Plain {
    pub(crate) text: String,
    pub(crate) anchors: Vec<Anchor>,
}

impl Plain {
    /// Append `html` as text. Tolerant: a tag that never closes, an unknown
    /// tag or a stray `<` costs nothing but itself.
    pub(crate) fn html(&mut self, html: &str) {
        let mut open: Option<Anchor> = None;
        let mut rest = html;
        while !rest.is_empty() {
            let Some(lt) = rest.find('<') else {
                self.text.push_str(&decode_entities(rest));
                break;
            };
            self.text.push_str(&decode_entities(&rest[..lt]));
            let Some(gt) = rest[lt..].find('>') else {
                // A lone `<`: keep it as text.
                self.text.push_str(&decode_entities(&rest[lt..]));
                break;
            };
            let tag = &rest[lt + 1..lt + gt];
            rest = &rest[lt + gt + 1..];
            let closing = tag.starts_with('/');
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .map(|c| c.to_ascii_lowercase())
                .collect();
            match (name.as_str(), closing) {
                ("br", _) => self.text.push('\n'),
                ("p", true) => self.text.push_str("\n\n"),
                ("p", false) if !self.text.is_empty() && !self.text.ends_with('\n') => self.text.push_str("\n\n"),
                ("a", false) => {
                    let class = attribute(tag, "class").unwrap_or_default();
                    let rel = attribute(tag, "rel").unwrap_or_default();
                    let mention_or_tag = class.split_whitespace().any(|c| c == "mention" || c == "hashtag")
                        || rel.split_whitespace().any(|r| r == "tag");
                    let start = self.text.len();
                    open = Some(Anchor { href: attribute(tag, "href"), mention_or_tag, span: start..start });
                }
                ("a", true) => {
                    if let Some(mut a) = open.take() {
                        a.span.end = self.text.len();
                        if !a.span.is_empty() {
                            self.anchors.push(a);
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(mut a) = open {
            a.span.end = self.text.len();
            if !a.span.is_empty() {
                self.anchors.push(a);
            }
        }
    }
}

/// The value of attribute `name` in a tag's text (`a href="…" class='…'`).
fn attribute(tag: &str, name: &str) -> Option<String> {
    let mut rest = tag;
    while let Some(pos) = rest.find(name) {
        let before_ok = rest[..pos].ends_with(|c: char| c.is_ascii_whitespace());
        let after = rest[pos + name.len()..].trim_start();
        rest = &rest[pos + name.len()..];
        let Some(value) = after.strip_prefix('=').filter(|_| before_ok) else { continue };
        let value = value.trim_start();
        let (quote, body) = match value.chars().next() {
            Some(q @ ('"' | '\'')) => (Some(q), &value[1..]),
            _ => (None, value),
        };
        let end = match quote {
            Some(q) => body.find(q).unwrap_or(body.len()),
            None => body.find(|c: char| c.is_ascii_whitespace() || c == '>').unwrap_or(body.len()),
        };
        return Some(decode_entities(&body[..end]).into_owned());
    }
    None
}

/// Decode HTML character references: the named ones Mastodon writes and
/// every numeric one (`&#39;`, `&#x27;`). Unknown names stay as written.
pub fn decode_entities(s: &str) -> Cow<'_, str> {
    if !s.contains('&') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest[1..].find(|c: char| c == ';' || c == '&' || c.is_whitespace()).map(|e| e + 1);
        let decoded = match end {
            Some(e) if rest.as_bytes()[e] == b';' => reference(&rest[1..e]).map(|c| (c, e + 1)),
            _ => None,
        };
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn reference(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        return char::from_u32(code).filter(|c| *c != '\0');
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(json: &str) -> Box<PostView<'_>> {
        match decode(json.as_bytes()).expect("decodes") {
            Message::Post(p) => p,
            Message::Control(c) => panic!("a control message: {c:?}"),
        }
    }

    /// The documented example Status (Mastodon API docs, entities/Status).
    #[test]
    fn the_documented_status_decodes() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mastodon/status_example.json");
        let raw = std::fs::read_to_string(path).expect("fixture");
        let p = post(&raw);
        assert_eq!(p.id, "103270115826048975");
        assert_eq!(p.author.id.as_deref(), Some("1"));
        assert_eq!(p.author.handle.as_deref(), Some("Gargron"));
        assert_eq!(p.lang.as_deref(), Some("en"));
        assert!(
            p.text.text.starts_with("\"I lost my inheritance with one wrong digit on my sort code\""),
            "{}",
            p.text.text
        );
        assert!(p.text.text.contains("https://www.theguardian.com/money/2019/dec"), "{}", p.text.text);
        assert_eq!(p.text.links.len(), 1);
        assert!(p.text.links[0].expanded_url.as_deref().is_some_and(|u| u.starts_with("https://www.theguardian.com/")));
        assert!(p.retweeted.is_none() && p.edited_at.is_none() && !p.is_reply());
        assert_eq!(
            crate::envelope::created_at_iso(p.created_at.as_deref().unwrap_or("")).as_deref(),
            Some("2019-12-08T03:48:33+00:00")
        );
    }

    #[test]
    fn mentions_and_hashtags_are_entities_not_words() {
        let raw = r##"{"id":"9","account":{"id":"5","acct":"bob"},"content":"<p>Hi <span class=\"h-card\"><a href=\"https://x.social/@alice\" class=\"u-url mention\">@<span>alice</span></a></span> I &lt;3 <a href=\"https://x.social/tags/RustLang\" class=\"mention hashtag\" rel=\"tag\">#<span>RustLang</span></a><br>bye&#39;s</p>","mentions":[{"id":"7","acct":"alice@x.social"}],"tags":[{"name":"rustlang"}],"spoiler_text":"cw: code"}"##;
        let p = post(raw);
        assert_eq!(p.text.text, "cw: code\n\nHi @alice I <3 #RustLang\nbye's");
        let spans: Vec<&str> = p.text.entity_spans.iter().map(|r| &p.text.text[r.clone()]).collect();
        assert_eq!(spans, ["@alice", "#RustLang"]);
        assert_eq!(p.text.hashtags, ["rustlang"]);
        assert_eq!(p.text.mentions[0].handle, "alice@x.social");
        assert_eq!(p.text.mentions[0].id.as_deref(), Some("7"));
        assert!(p.text.links.is_empty(), "mention and hashtag anchors are not links");
    }

    #[test]
    fn a_boost_is_a_retweet_and_a_reply_names_its_account() {
        let raw = r#"{"id":"2","account":{"id":"20","acct":"booster"},"content":"","reblog":{"id":"1","account":{"id":"10","acct":"author"},"content":"<p>original words</p>"},"in_reply_to_id":null}"#;
        let p = post(raw);
        let rt = p.retweeted.as_ref().expect("boost");
        assert_eq!(rt.author.id.as_deref(), Some("10"));
        assert_eq!(rt.text.text, "original words");
        assert_eq!(p.author.id.as_deref(), Some("20"));
        let raw = r#"{"id":"3","account":{"id":"20"},"content":"<p>yes</p>","in_reply_to_id":"1","in_reply_to_account_id":"10","edited_at":"2026-01-01T00:00:00Z"}"#;
        let p = post(raw);
        assert_eq!(p.in_reply_to_user_id.as_deref(), Some("10"));
        assert!(p.edited_at.is_some());
    }

    #[test]
    fn deletes_and_strangers_are_control_messages() {
        let d = decode(br#"{"delete":{"status":{"id":"1","id_str":"1"}}}"#).expect("decodes");
        assert!(matches!(d, Message::Control(Control { kind: ControlKind::Delete, .. })));
        let u = decode(br#"{"event":"filters_changed"}"#).expect("decodes");
        assert!(matches!(u, Message::Control(Control { kind: ControlKind::Unknown, .. })));
        assert!(matches!(decode(b"{not json"), Err(DecodeError::Json(_))));
        // An id sent as a number is converted; the post is not lost.
        let Message::Post(p) = decode(br#"{"id":5,"account":{},"spoiler_text":0}"#).expect("decodes") else {
            panic!("not a post")
        };
        assert_eq!(p.id, "5");
        let fields: Vec<&str> = p.surprises.iter().map(|s| s.field).collect();
        assert_eq!(fields, vec!["status.id", "status.spoiler_text"]);
    }

    #[test]
    fn broken_html_and_references_cost_only_themselves() {
        assert_eq!(decode_entities("a &amp; b &#x1F600; &bogus; &"), "a & b 😀 &bogus; &");
        let mut p = Plain::default();
        // `</a}` runs to the next `>`: the text between is lost, nothing else.
        p.html("<p>one <a href='https://e.com/x'>link</a} <b>bold</b> 3 < 4");
        assert_eq!(p.text, "one linkbold 3 < 4");
        assert_eq!(p.anchors.len(), 1);
        assert_eq!(&p.text[p.anchors[0].span.clone()], "link");
        assert_eq!(p.anchors[0].href.as_deref(), Some("https://e.com/x"));
    }
}
