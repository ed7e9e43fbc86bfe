//! `entities`: extracts hashtags, @mentions, URLs and $cashtags from the text
//! of posts whose source gave none (Bluesky without facets, plain text
//! archives, …), by the rules of Twitter's twitter-text ([`extract`]).
//!
//! Adds `hashtags`, `mentions`, `urls`, `cashtags` (lists of strings), and with
//! `with_indices = true` the same as objects with code-point `indices`.
//!
//! Configuration:
//! * `only_if_missing` (default `true`): keep a post unchanged when its source
//!   already listed entities;
//! * `with_indices` (default `false`).

pub mod extract;

use schemars::JsonSchema;
use serde::Deserialize;
use traptor_sdk::{Description, Enrichment, Fields, Outcome, Post, Stage, StageKind, export_stage};

pub struct Entities {
    only_if_missing: bool,
    with_indices: bool,
}

/// `config` of the stage.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EntitiesConfig {
    /// Only for posts that carry no entities of their own.
    #[serde(default = "yes")]
    only_if_missing: bool,
    /// Add each entity's position in the text.
    #[serde(default)]
    with_indices: bool,
}

fn yes() -> bool {
    true
}

impl Stage for Entities {
    type Config = EntitiesConfig;

    fn describe() -> Description {
        Description::new("entities", env!("CARGO_PKG_VERSION"), StageKind::Enricher)
            .summary("Extracts hashtags, mentions, URLs and cashtags from text (twitter-text rules)")
            .reads(Fields::TEXT | Fields::HASHTAGS | Fields::MENTIONS | Fields::URLS | Fields::CASHTAGS)
    }

    fn init(config: EntitiesConfig) -> Result<Self, String> {
        Ok(Entities { only_if_missing: config.only_if_missing, with_indices: config.with_indices })
    }

    fn process(&mut self, post: &Post) -> Outcome {
        let has_any = post.hashtags().len() + post.mentions().len() + post.urls().len() + post.cashtags().len() > 0;
        if self.only_if_missing && has_any {
            return Outcome::Keep;
        }
        let e = extract::extract(post.text());
        let mentions: Vec<&extract::Mention> = e.mentions.iter().filter(|m| m.list_slug.is_empty()).collect();
        if self.with_indices {
            let spans = |v: &[extract::Entity], key: &str| -> Vec<traptor_sdk::serde_json::Value> {
                v.iter()
                    .map(|x| traptor_sdk::serde_json::json!({ key: x.value, "indices": [x.start, x.end] }))
                    .collect()
            };
            let m: Vec<_> = mentions
                .iter()
                .map(|x| traptor_sdk::serde_json::json!({"screen_name": x.screen_name, "indices": [x.start, x.end]}))
                .collect();
            return Enrichment::new()
                .field("hashtags", spans(&e.hashtags, "text"))
                .field("mentions", m)
                .field("urls", spans(&e.urls, "url"))
                .field("cashtags", spans(&e.cashtags, "text"))
                .into();
        }
        let values = |v: &[extract::Entity]| v.iter().map(|x| x.value.clone()).collect::<Vec<_>>();
        Enrichment::new()
            .field("hashtags", values(&e.hashtags))
            .field("mentions", mentions.iter().map(|m| m.screen_name.clone()).collect::<Vec<_>>())
            .field("urls", values(&e.urls))
            .field("cashtags", values(&e.cashtags))
            .into()
    }
}

export_stage!(Entities);

#[cfg(test)]
mod conformance;

#[cfg(test)]
mod tests {
    use super::*;
    use traptor_sdk::testing::{PostBuilder, run};

    #[test]
    fn enriches_posts_without_entities_only() {
        let posts = [
            PostBuilder::new("1", "RT @jack: #Rust is fun $RUST https://example.com/x").build(),
            PostBuilder::new("2", "#already").hashtags(&["already"]).build(),
        ];
        let out = run::<Entities>("{}", &posts).expect("init");
        let Outcome::Enrich(fields) = &out[0] else { panic!("{out:?}") };
        let get = |n: &str| fields.iter().find(|f| f.name == n).map(|f| f.value.clone()).expect("field");
        assert_eq!(get("hashtags"), r#"["Rust"]"#);
        assert_eq!(get("mentions"), r#"["jack"]"#);
        assert_eq!(get("urls"), r#"["https://example.com/x"]"#);
        assert_eq!(get("cashtags"), r#"["RUST"]"#);
        // It reads what it declares, no more, no less.
        assert_eq!(traptor_sdk::testing::fields_read(), Entities::describe().reads);
        assert_eq!(out[1], Outcome::Keep);
    }

    #[test]
    fn indices_on_request() {
        let out =
            run::<Entities>(r#"{"with_indices": true}"#, &[PostBuilder::new("1", "hi #a").build()]).expect("init");
        let Outcome::Enrich(fields) = &out[0] else { panic!("{out:?}") };
        assert_eq!(fields[0].value, r#"[{"indices":[3,5],"text":"a"}]"#);
    }
}
