//! ABI 0.1: the host's post view as the 0.1 `post` record (every field, each
//! string its own allocation), and its outcomes as [`Answers`].

use super::answers::{Action, Answers};
use super::wit_v01 as wit;
use crate::envelope::created_at_iso;
use crate::post::PostView;
use crate::rules::Rule;

/// Build the record a plugin receives. `raw` is copied only if the stage wants it.
pub fn to_v01_post<'r>(
    view: &PostView<'_>,
    raw: &[u8],
    rules: impl Iterator<Item = &'r Rule>,
    wants_raw: bool,
) -> wit::Post {
    let t = &view.text;
    wit::Post {
        raw: if wants_raw { String::from_utf8_lossy(raw).into_owned() } else { String::new() },
        id: view.id.to_string(),
        source: view.source.to_owned(),
        text: t.text.to_string(),
        author_id: view.author.id.as_deref().map(str::to_owned),
        author_handle: view.author.handle.as_deref().map(str::to_owned),
        lang: view.lang.as_deref().map(str::to_owned),
        created_at: view.created_at.as_deref().and_then(created_at_iso),
        hashtags: t.hashtags.iter().map(|h| h.to_string()).collect(),
        mentions: t.mentions.iter().map(|m| m.handle.to_string()).collect(),
        urls: t
            .links
            .iter()
            .filter_map(|l| l.expanded_url.as_deref().or(l.url.as_deref()))
            .map(str::to_owned)
            .collect(),
        cashtags: t.cashtags.iter().map(|c| c.to_string()).collect(),
        coordinates: view.coordinates.map(|p| wit::Point { lng: p.lng, lat: p.lat }),
        is_retweet: view.is_retweet(),
        is_reply: view.is_reply(),
        is_quote: view.is_quote(),
        matched_rules: rules
            .map(|r| wit::MatchedRule {
                id: r.rule_id().to_owned(),
                tag: r.tag().map(str::to_owned),
                value: r.value().to_owned(),
                rule_type: r.rule_type().as_str().to_owned(),
            })
            .collect(),
    }
}

/// The changes among a 0.1 plugin's outcomes (one per post): an enrichment
/// becomes the JSON object of its fields (checked by the worker, as from 0.2).
pub fn answers_from_v01(outcomes: Vec<wit::Outcome>) -> Answers {
    let mut a = Answers::default();
    for (i, o) in outcomes.into_iter().enumerate() {
        match o {
            wit::Outcome::Keep => {}
            wit::Outcome::Enrich(fields) => {
                let mut s = String::from("{");
                for (n, f) in fields.iter().enumerate() {
                    if n > 0 {
                        s.push(',');
                    }
                    s.push_str(&serde_json::Value::from(f.name.as_str()).to_string());
                    s.push(':');
                    s.push_str(f.value.trim());
                }
                s.push('}');
                a.push(i, Action::Enrich, s.as_bytes());
            }
            wit::Outcome::Drop(reason) => a.push(i, Action::Drop, reason.as_bytes()),
            wit::Outcome::Error(e) => a.push(i, Action::Error, e.as_bytes()),
        }
    }
    a
}
