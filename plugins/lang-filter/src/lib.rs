//! `lang-filter`: keeps posts whose language is in the configured list and
//! drops the rest (a filter stage).
//!
//! Configuration:
//! * `languages` (required): list of language codes as the source tags them
//!   (`["en", "es"]`). Matching ignores case and region (`en-GB` counts as `en`).
//! * `keep_untagged` (default `false`): keep posts with no language or `und`.

use schemars::JsonSchema;
use serde::Deserialize;
use traptor_sdk::{Description, Fields, Outcome, Post, Stage, StageKind, counter, export_stage};

pub struct LangFilter {
    languages: Vec<String>,
    keep_untagged: bool,
}

/// `config` of the stage.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LangFilterConfig {
    /// Language codes as the source tags them (`["en", "es"]`); case and
    /// region are ignored (`en-GB` counts as `en`).
    #[schemars(length(min = 1))]
    languages: Vec<String>,
    /// Keep posts with no language tag (or `und`).
    #[serde(default)]
    keep_untagged: bool,
}

/// `en-GB` → `en`, lower-cased.
fn primary(tag: &str) -> String {
    tag.split(['-', '_']).next().unwrap_or("").to_ascii_lowercase()
}

impl Stage for LangFilter {
    type Config = LangFilterConfig;

    fn describe() -> Description {
        Description::new("lang-filter", env!("CARGO_PKG_VERSION"), StageKind::Filter)
            .summary("Keeps posts in the configured languages; drops the others")
            .reads(Fields::LANG)
    }

    fn init(config: LangFilterConfig) -> Result<Self, String> {
        if config.languages.is_empty() {
            return Err("config key `languages` must list at least one language".into());
        }
        Ok(LangFilter {
            languages: config.languages.iter().map(|l| primary(l)).collect(),
            keep_untagged: config.keep_untagged,
        })
    }

    fn process(&mut self, post: &Post) -> Outcome {
        let lang = post.lang().map(primary).filter(|l| !l.is_empty() && l != "und");
        match lang {
            None if self.keep_untagged => Outcome::Keep,
            None => {
                counter("dropped_untagged", 1);
                Outcome::Drop("no language tag".into())
            }
            Some(l) if self.languages.contains(&l) => Outcome::Keep,
            Some(l) => {
                counter("dropped_language", 1);
                Outcome::Drop(format!("language {l} not in the list"))
            }
        }
    }
}

export_stage!(LangFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use traptor_sdk::testing::{PostBuilder, TestPost, counters, run};

    fn post(lang: Option<&str>) -> TestPost {
        let b = PostBuilder::new("1", "hola");
        match lang {
            Some(l) => b.lang(l).build(),
            None => b.build(),
        }
    }

    #[test]
    fn keeps_listed_languages_and_drops_others() {
        let out = run::<LangFilter>(
            r#"{"languages": ["en", "ES"]}"#,
            &[post(Some("en")), post(Some("es")), post(Some("en-GB")), post(Some("fr")), post(None), post(Some("und"))],
        )
        .expect("init");
        assert_eq!(out[0], Outcome::Keep);
        assert_eq!(out[1], Outcome::Keep);
        assert_eq!(out[2], Outcome::Keep);
        assert_eq!(out[3], Outcome::Drop("language fr not in the list".into()));
        assert!(matches!(out[4], Outcome::Drop(_)));
        assert!(matches!(out[5], Outcome::Drop(_)));
        assert_eq!(counters().get("dropped_language"), Some(&1));
    }

    #[test]
    fn untagged_can_be_kept() {
        let out = run::<LangFilter>(r#"{"languages": ["en"], "keep_untagged": true}"#, &[post(None)]).expect("init");
        assert_eq!(out[0], Outcome::Keep);
    }

    #[test]
    fn bad_config_is_refused_with_the_key() {
        assert!(run::<LangFilter>("{}", &[]).expect_err("missing").contains("`languages`"));
        assert!(run::<LangFilter>(r#"{"languages": []}"#, &[]).is_err());
        assert!(run::<LangFilter>(r#"{"languages": ["en"], "langs": 1}"#, &[]).expect_err("typo").contains("`langs`"));
    }
}
