//! What the host hands a stage and what it gets back, whatever the ABI the
//! component was built for: the worker and the tools speak these, the
//! instance translates ([`super::lower`] for 0.2, [`super::convert`] for 0.1).

use std::ops::Range;

use super::wit;
use crate::post::PostView;

/// One post as a stage sees it: the decoded view, the original JSON and the
/// rules it matched (indices into the matcher's rules).
#[derive(Debug, Clone, Copy)]
pub struct StagePost<'a> {
    pub view: &'a PostView<'a>,
    pub raw: &'a [u8],
    pub matched: &'a [u32],
}

/// What a stage does to a post it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Add the JSON object of the answer's text under the stage's name.
    Enrich,
    /// Remove the post; the text is the reason.
    Drop,
    /// The post failed in the stage; the text says why.
    Error,
}

/// A change to one post of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Index of the post in the batch.
    pub post: usize,
    pub action: Action,
    /// Byte range of the text in [`Answers::data`].
    pub text: Range<usize>,
}

/// A stage's answer to a batch: the posts it changed (at most one answer
/// each, checked); every post not named is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answers {
    pub data: Vec<u8>,
    pub changes: Vec<Answer>,
}

impl Answers {
    /// The text of an answer (lossy: a plugin may send invalid UTF-8).
    pub fn text(&self, a: &Answer) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.data.get(a.text.clone()).unwrap_or_default())
    }

    /// The bytes of an answer's text.
    pub fn bytes(&self, a: &Answer) -> &[u8] {
        self.data.get(a.text.clone()).unwrap_or_default()
    }

    /// Add a change whose text is appended to the buffer.
    pub fn push(&mut self, post: usize, action: Action, text: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(text);
        self.changes.push(Answer { post, action, text: start..self.data.len() });
    }

    /// One entry per post: `None` where the post is kept.
    pub fn per_post(&self, posts: usize) -> Vec<Option<&Answer>> {
        let mut v = vec![None; posts];
        for a in &self.changes {
            if let Some(slot) = v.get_mut(a.post) {
                *slot = Some(a);
            }
        }
        v
    }

    /// Check what a 0.2 plugin returned: every post index inside the batch
    /// and named once, every span inside the buffer.
    pub fn from_results(r: wit::Results, posts: usize) -> Result<Answers, String> {
        let mut seen = vec![false; posts];
        let mut changes = Vec::with_capacity(r.changes.len());
        for c in &r.changes {
            let post = c.post as usize;
            let Some(s) = seen.get_mut(post) else {
                return Err(format!("names post {post} of a batch of {posts}"));
            };
            if std::mem::replace(s, true) {
                return Err(format!("names post {post} twice"));
            }
            let start = c.text.start as usize;
            let end = start + c.text.len as usize;
            if end > r.data.len() {
                return Err(format!("a text span {start}..{end} past the end of its {}-byte buffer", r.data.len()));
            }
            let action = match c.action {
                wit::Action::Enrich => Action::Enrich,
                wit::Action::Drop => Action::Drop,
                wit::Action::Error => Action::Error,
            };
            changes.push(Answer { post, action, text: start..end });
        }
        Ok(Answers { data: r.data, changes })
    }
}

/// Enrichers add fields; filters drop posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    Enricher,
    Filter,
}

impl StageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Enricher => "enricher",
            StageKind::Filter => "filter",
        }
    }
}

/// What a plugin says about itself, whatever its ABI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    pub name: String,
    pub version: String,
    pub kind: StageKind,
    pub summary: String,
    pub config_schema: String,
    /// The fields it may read (a 0.1 component reads all but `raw` unless it
    /// wants raw: it was sent everything).
    pub reads: wit::Fields,
}

impl From<wit::Description> for Description {
    fn from(d: wit::Description) -> Description {
        Description {
            name: d.name,
            version: d.version,
            kind: match d.kind {
                wit::StageKind::Enricher => StageKind::Enricher,
                wit::StageKind::Filter => StageKind::Filter,
            },
            summary: d.summary,
            config_schema: d.config_schema,
            reads: d.reads,
        }
    }
}

/// Every field, by its WIT name.
pub const FIELDS: [(wit::Fields, &str); 14] = [
    (wit::Fields::RAW, "raw"),
    (wit::Fields::ID, "id"),
    (wit::Fields::SOURCE, "source"),
    (wit::Fields::TEXT, "text"),
    (wit::Fields::AUTHOR, "author"),
    (wit::Fields::LANG, "lang"),
    (wit::Fields::CREATED_AT, "created-at"),
    (wit::Fields::HASHTAGS, "hashtags"),
    (wit::Fields::MENTIONS, "mentions"),
    (wit::Fields::URLS, "urls"),
    (wit::Fields::CASHTAGS, "cashtags"),
    (wit::Fields::COORDINATES, "coordinates"),
    (wit::Fields::KINDS, "kinds"),
    (wit::Fields::MATCHED_RULES, "matched-rules"),
];

/// The names of the fields in a set, in WIT order (`text, hashtags`).
pub fn field_names(f: wit::Fields) -> Vec<&'static str> {
    FIELDS.iter().filter(|(bit, _)| f.contains(*bit)).map(|(_, n)| *n).collect()
}

/// All fields but `raw`: what a 0.1 component was sent without `wants-raw`.
pub fn all_but_raw() -> wit::Fields {
    FIELDS.iter().skip(1).fold(wit::Fields::empty(), |acc, (bit, _)| acc | *bit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(data: &str, changes: &[(u32, wit::Action, u32, u32)]) -> wit::Results {
        wit::Results {
            data: data.as_bytes().to_vec(),
            changes: changes
                .iter()
                .map(|&(post, action, start, len)| wit::Change { post, action, text: wit::Span { start, len } })
                .collect(),
        }
    }

    #[test]
    fn answers_from_a_plugin_are_checked() {
        let ok = Answers::from_results(
            results(r#"{"a":1}spam"#, &[(2, wit::Action::Enrich, 0, 7), (0, wit::Action::Drop, 7, 4)]),
            3,
        )
        .expect("valid");
        let per = ok.per_post(3);
        assert_eq!(per[0].map(|a| (a.action, ok.text(a).into_owned())), Some((Action::Drop, "spam".into())));
        assert!(per[1].is_none());
        assert_eq!(ok.bytes(per[2].expect("enriched")), br#"{"a":1}"#);
        let past = Answers::from_results(results("x", &[(0, wit::Action::Error, 0, 2)]), 1).expect_err("refused");
        assert!(past.contains("past the end"), "{past}");
        let twice =
            Answers::from_results(results("", &[(0, wit::Action::Drop, 0, 0), (0, wit::Action::Drop, 0, 0)]), 1);
        assert!(twice.expect_err("refused").contains("twice"));
        let outside = Answers::from_results(results("", &[(5, wit::Action::Drop, 0, 0)]), 2).expect_err("refused");
        assert_eq!(outside, "names post 5 of a batch of 2");
    }

    #[test]
    fn field_sets_have_names() {
        assert_eq!(field_names(wit::Fields::TEXT | wit::Fields::MATCHED_RULES), ["text", "matched-rules"]);
        assert!(!all_but_raw().contains(wit::Fields::RAW) && all_but_raw().contains(wit::Fields::KINDS));
        assert_eq!(field_names(all_but_raw()).len(), 13);
    }
}
