//! `{{name}}`: a traptor stage ({{kind}}), made by `traptor-host plugin new`.
//!
//! {{summary}}

use schemars::JsonSchema;
use serde::Deserialize;
use traptor_sdk::{Description, {{enrichment_import}}Fields, Outcome, Post, Stage, StageKind, export_stage};

pub struct Plugin {
    min_words: usize,
}

/// The stage's `config` table in the pipeline. Unknown or mistyped keys are
/// refused, naming the key; `traptor-host plugin inspect` shows the schema
/// derived from this struct.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Posts with fewer words than this {{config_doc}}.
    #[serde(default = "default_min_words")]
    min_words: usize,
}

fn default_min_words() -> usize {
    3
}

impl Stage for Plugin {
    type Config = Config;

    fn describe() -> Description {
        Description::new("{{name}}", env!("CARGO_PKG_VERSION"), StageKind::{{kind_variant}})
            .summary("{{summary}}")
            // The host sends only the fields a stage reads; reading another
            // one panics (first in `cargo test`), naming it.
            .reads(Fields::TEXT)
    }

    fn init(config: Config) -> Result<Self, String> {
        Ok(Plugin { min_words: config.min_words })
    }

    fn process(&mut self, post: &Post) -> Outcome {
        let words = post.text().split_whitespace().count();
{{process_rust}}
    }
}

export_stage!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use traptor_sdk::testing::{PostBuilder, run};

    #[test]
    fn counts_words() {
        let posts = [PostBuilder::new("1", "one two three four").build(), PostBuilder::new("2", "hi").build()];
        let out = run::<Plugin>(r#"{"min_words": 3}"#, &posts).expect("init");
{{test_rust}}
        // What the code read is what it declares: nothing is sent for nothing.
        assert_eq!(traptor_sdk::testing::fields_read(), Fields::TEXT);
    }

    #[test]
    fn refuses_a_typo_in_its_config() {
        let err = run::<Plugin>(r#"{"min_word": 3}"#, &[]).expect_err("typo");
        assert!(err.contains("min_word"), "{err}");
    }
}
