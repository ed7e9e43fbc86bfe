//! ABI 0.2: a batch of posts as one buffer of strings and records of
//! offsets, holding only the fields the stage reads. The buffers are kept by
//! the worker's instance and reused batch after batch, so building a batch
//! allocates nothing once they have grown.

use std::collections::HashMap;

use super::answers::StagePost;
use super::wit::{self, Fields};
use crate::envelope::created_at_iso;
use crate::rules::Rule;

/// Builds [`wit::Batch`]es; one per stage instance.
#[derive(Debug)]
pub struct Encoder {
    batch: wit::Batch,
    /// Matcher rule index → index in `batch.rules`.
    rule_slot: HashMap<u32, u32>,
}

impl Default for Encoder {
    fn default() -> Encoder {
        Encoder {
            batch: wit::Batch {
                count: 0,
                data: Vec::new(),
                posts: Vec::new(),
                strings: Vec::new(),
                rule_refs: Vec::new(),
                rules: Vec::new(),
            },
            rule_slot: HashMap::new(),
        }
    }
}

const EMPTY: wit::Span = wit::Span { start: 0, len: 0 };
const NONE: wit::Range = wit::Range { first: 0, count: 0 };

/// Strings of one batch beyond 4 GiB cannot be addressed by the ABI.
#[derive(Debug, thiserror::Error)]
#[error("the batch's strings exceed the 4 GiB the ABI can address; lower batch_size")]
pub struct TooLarge;

impl Encoder {
    /// The batch for `posts`, with the fields in `reads` filled in.
    pub fn encode(&mut self, posts: &[StagePost<'_>], rules: &[Rule], reads: Fields) -> Result<&wit::Batch, TooLarge> {
        let b = &mut self.batch;
        b.data.clear();
        b.posts.clear();
        b.strings.clear();
        b.rule_refs.clear();
        b.rules.clear();
        self.rule_slot.clear();
        b.count = posts.len() as u32;
        if reads != Fields::empty() {
            for p in posts {
                let post = encode_post(b, &mut self.rule_slot, p, rules, reads);
                b.posts.push(post);
            }
        }
        if b.data.len() > u32::MAX as usize || posts.len() > u32::MAX as usize {
            return Err(TooLarge);
        }
        Ok(&self.batch)
    }
}

fn span(data: &mut Vec<u8>, s: &str) -> wit::Span {
    let start = data.len() as u32;
    data.extend_from_slice(s.as_bytes());
    wit::Span { start, len: s.len() as u32 }
}

fn list<'s>(b: &mut wit::Batch, items: impl Iterator<Item = &'s str>) -> wit::Range {
    let first = b.strings.len() as u32;
    for s in items {
        let sp = span(&mut b.data, s);
        b.strings.push(sp);
    }
    wit::Range { first, count: b.strings.len() as u32 - first }
}

fn encode_post(
    b: &mut wit::Batch,
    rule_slot: &mut HashMap<u32, u32>,
    p: &StagePost<'_>,
    rules: &[Rule],
    reads: Fields,
) -> wit::Post {
    let v = p.view;
    let t = &v.text;
    let has = |f: Fields| reads.contains(f);
    let opt =
        |b: &mut wit::Batch, f: Fields, s: Option<&str>| if has(f) { s.map(|s| span(&mut b.data, s)) } else { None };
    let raw = if has(Fields::RAW) { span(&mut b.data, &String::from_utf8_lossy(p.raw)) } else { EMPTY };
    let id = if has(Fields::ID) { span(&mut b.data, v.id.as_ref()) } else { EMPTY };
    let source = if has(Fields::SOURCE) { span(&mut b.data, v.source) } else { EMPTY };
    let text = if has(Fields::TEXT) { span(&mut b.data, &t.text) } else { EMPTY };
    let author_id = opt(b, Fields::AUTHOR, v.author.id.as_deref());
    let author_handle = opt(b, Fields::AUTHOR, v.author.handle.as_deref());
    let lang = opt(b, Fields::LANG, v.lang.as_deref());
    let created = if has(Fields::CREATED_AT) { v.created_at.as_deref().and_then(created_at_iso) } else { None };
    let created_at = created.map(|c| span(&mut b.data, &c));
    let hashtags = if has(Fields::HASHTAGS) { list(b, t.hashtags.iter().map(|h| &**h)) } else { NONE };
    let mentions = if has(Fields::MENTIONS) { list(b, t.mentions.iter().map(|m| &*m.handle)) } else { NONE };
    let urls = if has(Fields::URLS) {
        list(b, t.links.iter().filter_map(|l| l.expanded_url.as_deref().or(l.url.as_deref())))
    } else {
        NONE
    };
    let cashtags = if has(Fields::CASHTAGS) { list(b, t.cashtags.iter().map(|c| &**c)) } else { NONE };
    let kinds = has(Fields::KINDS);
    let matched_rules = if has(Fields::MATCHED_RULES) {
        let first = b.rule_refs.len() as u32;
        for &r in p.matched {
            let Some(rule) = rules.get(r as usize) else { continue };
            let slot = match rule_slot.get(&r) {
                Some(&s) => s,
                None => {
                    let s = b.rules.len() as u32;
                    let m = wit::MatchedRule {
                        id: span(&mut b.data, rule.rule_id()),
                        tag: rule.tag().map(|t| span(&mut b.data, t)),
                        value: span(&mut b.data, rule.value()),
                        rule_type: span(&mut b.data, rule.rule_type().as_str()),
                    };
                    b.rules.push(m);
                    rule_slot.insert(r, s);
                    s
                }
            };
            b.rule_refs.push(slot);
        }
        wit::Range { first, count: b.rule_refs.len() as u32 - first }
    } else {
        NONE
    };
    wit::Post {
        raw,
        id,
        source,
        text,
        author_id,
        author_handle,
        lang,
        created_at,
        hashtags,
        mentions,
        urls,
        cashtags,
        coordinates: if has(Fields::COORDINATES) {
            v.coordinates.map(|c| wit::Point { lng: c.lng, lat: c.lat })
        } else {
            None
        },
        is_retweet: kinds && v.is_retweet(),
        is_reply: kinds && v.is_reply(),
        is_quote: kinds && v.is_quote(),
        matched_rules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::post::{Message, v1};
    use crate::rules::RuleType;

    fn text_of(b: &wit::Batch, s: wit::Span) -> &str {
        std::str::from_utf8(&b.data[s.start as usize..(s.start + s.len) as usize]).expect("utf8")
    }

    #[test]
    fn a_batch_holds_only_what_the_stage_reads_in_one_buffer() {
        let lines = [
            r#"{"id_str":"1","text":"caf\u00e9 #One &amp; #two","lang":"fr","entities":{"hashtags":[{"text":"One"},{"text":"two"}]}}"#,
            r#"{"id_str":"2","text":"plain","user":{"id_str":"9","screen_name":"nine"}}"#,
        ];
        let views: Vec<_> = lines
            .iter()
            .map(|l| match v1::decode(l.as_bytes()) {
                Ok(Message::Post(v)) => v,
                other => panic!("{other:?}"),
            })
            .collect();
        let rules = vec![
            Rule::from_json_text(r#"{"rule_id":"a","value":"x"}"#, RuleType::Track).expect("rule"),
            Rule::from_json_text(r#"{"rule_id":"b","tag":"t","value":"café"}"#, RuleType::Track).expect("rule"),
        ];
        let matched = [vec![1u32, 0], vec![1u32]];
        let posts: Vec<StagePost<'_>> = views
            .iter()
            .zip(&matched)
            .zip(lines)
            .map(|((view, m), raw)| StagePost { view, raw: raw.as_bytes(), matched: m })
            .collect();
        let mut enc = Encoder::default();
        let reads = Fields::TEXT | Fields::HASHTAGS | Fields::MATCHED_RULES | Fields::AUTHOR;
        let b = enc.encode(&posts, &rules, reads).expect("encode");
        assert_eq!(b.count, 2);
        assert_eq!(text_of(b, b.posts[0].text), "café #One & #two");
        assert_eq!(b.posts[0].id.len, 0, "id not read, not sent");
        assert!(b.posts[0].lang.is_none(), "lang not read, not sent");
        let tags = b.posts[0].hashtags;
        let got: Vec<&str> =
            b.strings[tags.first as usize..(tags.first + tags.count) as usize].iter().map(|s| text_of(b, *s)).collect();
        assert_eq!(got, ["One", "two"]);
        assert_eq!(b.posts[1].author_handle.map(|s| text_of(b, s)), Some("nine"));
        // Each distinct rule once per batch; posts refer to it by index.
        assert_eq!(b.rules.len(), 2);
        assert_eq!(b.rule_refs, [0, 1, 0]);
        assert_eq!(text_of(b, b.rules[0].value), "café");
        assert_eq!(b.rules[0].tag.map(|t| text_of(b, t)), Some("t"));
        assert_eq!(text_of(b, b.rules[1].rule_type), "track");
        let r = b.posts[1].matched_rules;
        assert_eq!((r.first, r.count), (2, 1));
        // The next batch reuses the buffers; nothing read, no records at all.
        let b = enc.encode(&posts, &rules, Fields::empty()).expect("encode");
        assert_eq!((b.count, b.posts.len(), b.data.len(), b.rules.len()), (2, 0, 0, 0));
        let b = enc.encode(&posts[..1], &rules, Fields::RAW).expect("encode");
        assert_eq!(text_of(b, b.posts[0].raw), lines[0]);
    }
}
