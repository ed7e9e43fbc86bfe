//! `chaos`: a test stage for the host's fault handling, and the no-op stage of
//! the benchmarks. Not for production pipelines.
//!
//! Configuration: `mode` = `"noop"` (keep every post; default) or `"chaos"`.
//! In `chaos` mode, a post whose text contains one of these words makes the
//! stage misbehave for the whole batch:
//! * `#loop` — loops forever (the host's deadline must stop it);
//! * `#panic` — panics (a trap);
//! * `#oom` — allocates without bound (the host's memory limit must stop it);
//! * `#error` — returns an error outcome for that post only;
//! * `#drop` — drops that post.
//!
//! Every other post gets `{"length": <chars of text>}`.
//!
//! `echo` mode reads every field and adds it back as an enrichment: the
//! end-to-end check that what the host sends is what the post holds.
//!
//! `spin` (either mode) runs that many rounds of a small hash on each post:
//! a slow stage, for the tests and benchmarks of the buffer between sources
//! and workers (≈ 1 ns a round here: 50,000 ≈ 50 µs). A count, not a time:
//! a stage's clocks stand still unless it is granted them.

use schemars::JsonSchema;
use serde::Deserialize;
use traptor_sdk::{Description, Enrichment, Fields, Level, Outcome, Post, Stage, StageKind, export_stage, log};

pub struct Chaos {
    mode: Mode,
    spin: u32,
}

/// `config` of the stage.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChaosConfig {
    /// `noop` keeps every post; `chaos` misbehaves on demand; `echo` adds
    /// every field it was sent.
    #[serde(default)]
    mode: Mode,
    /// Rounds of busy work on each post (≈ 1 ns each); 0: none.
    #[serde(default)]
    spin: u32,
}

#[derive(Deserialize, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Noop,
    Chaos,
    Echo,
}

impl Stage for Chaos {
    type Config = ChaosConfig;

    fn describe() -> Description {
        Description::new("chaos", env!("CARGO_PKG_VERSION"), StageKind::Enricher)
            .summary("Test stage: loops, panics or allocates on demand; no-op by default")
            .reads(Fields::all())
    }

    /// A no-op reads nothing (the host then sends no field); `spin` reads the
    /// id; `chaos` mode the text too; `echo` everything.
    fn reads(&self) -> Fields {
        match (&self.mode, self.spin > 0) {
            (Mode::Echo, _) => Fields::all(),
            (Mode::Chaos, _) => Fields::ID | Fields::TEXT,
            (Mode::Noop, true) => Fields::ID,
            (Mode::Noop, false) => Fields::empty(),
        }
    }

    fn init(config: ChaosConfig) -> Result<Self, String> {
        Ok(Chaos { mode: config.mode, spin: config.spin })
    }

    fn process(&mut self, post: &Post) -> Outcome {
        if self.spin > 0 {
            std::hint::black_box(spin(post.id().len() as u64, self.spin));
        }
        match self.mode {
            Mode::Noop => return Outcome::Keep,
            Mode::Echo => return echo(post),
            Mode::Chaos => {}
        }
        let t = post.text();
        if t.contains("#loop") {
            log(Level::Warn, "looping forever", &[("post", post.id())]);
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        if t.contains("#panic") {
            panic!("asked to panic by post {}", post.id());
        }
        if t.contains("#oom") {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        if t.contains("#error") {
            return Outcome::Error(format!("cannot process post {}", post.id()));
        }
        if t.contains("#drop") {
            return Outcome::Drop("asked to drop".into());
        }
        Enrichment::new().field("length", t.chars().count()).into()
    }
}

/// Every field of the post, as the stage received it.
fn echo(post: &Post) -> Outcome {
    let rules: Vec<[Option<&str>; 4]> =
        post.matched_rules().map(|r| [Some(r.id), r.tag, Some(r.value), Some(r.rule_type)]).collect();
    Enrichment::new()
        .field("raw_bytes", post.raw().len())
        .field("id", post.id())
        .field("source", post.source())
        .field("text", post.text())
        .field("author", [post.author_id(), post.author_handle()])
        .field("lang", post.lang())
        .field("created_at", post.created_at())
        .field("hashtags", post.hashtags().collect::<Vec<_>>())
        .field("mentions", post.mentions().collect::<Vec<_>>())
        .field("urls", post.urls().collect::<Vec<_>>())
        .field("cashtags", post.cashtags().collect::<Vec<_>>())
        .field("coordinates", post.coordinates().map(|p| [p.lng, p.lat]))
        .field("kinds", [post.is_retweet(), post.is_reply(), post.is_quote()])
        .field("matched_rules", rules)
        .into()
}

/// `rounds` of xorshift from `seed`: work that takes time and cannot be skipped.
fn spin(seed: u64, rounds: u32) -> u64 {
    let mut x = seed | 1;
    for _ in 0..rounds {
        x = std::hint::black_box(x);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

export_stage!(Chaos);

#[cfg(test)]
mod tests {
    use super::*;
    use traptor_sdk::testing::{PostBuilder, TestPost, run};

    #[test]
    fn noop_keeps_everything() {
        let out = run::<Chaos>("{}", &[PostBuilder::new("1", "#panic").build()]).expect("init");
        assert_eq!(out, vec![Outcome::Keep]);
    }

    #[test]
    fn spinning_posts_take_their_time() {
        let posts: Vec<TestPost> = (0..20).map(|i| PostBuilder::new(&i.to_string(), "x").build()).collect();
        let start = std::time::Instant::now();
        let out = run::<Chaos>(r#"{"spin":500000}"#, &posts).expect("init");
        assert!(start.elapsed() >= std::time::Duration::from_millis(2), "{:?}", start.elapsed());
        assert!(out.iter().all(|o| *o == Outcome::Keep));
        assert_ne!(spin(1, 10), spin(1, 11));
    }

    #[test]
    fn chaos_mode_answers_per_post() {
        let posts = [
            PostBuilder::new("1", "héllo").build(),
            PostBuilder::new("2", "#error").build(),
            PostBuilder::new("3", "#drop").build(),
        ];
        let out = run::<Chaos>(r#"{"mode":"chaos"}"#, &posts).expect("init");
        assert_eq!(out[0], Enrichment::new().field("length", 5).into());
        assert!(matches!(out[1], Outcome::Error(_)));
        assert!(matches!(out[2], Outcome::Drop(_)));
    }

    #[test]
    fn echo_mode_reads_every_field_back() {
        let post = PostBuilder::new("7", "héllo #a @b")
            .raw("{}")
            .source("x-v2")
            .author("42", "someone")
            .lang("fr")
            .created_at("2016-02-22T01:34:53+00:00")
            .hashtags(&["a"])
            .mentions(&["b"])
            .urls(&["https://example.com/"])
            .cashtags(&["C"])
            .coordinates(2.35, 48.85)
            .reply()
            .tagged_rule("r1", "t", "héllo", "track")
            .build();
        let out = run::<Chaos>(r#"{"mode":"echo"}"#, &[post]).expect("init");
        let Outcome::Enrich(fields) = &out[0] else { panic!("{out:?}") };
        let get = |k: &str| fields.iter().find(|f| f.name == k).map(|f| f.value.as_str()).unwrap_or("?");
        assert_eq!(get("raw_bytes"), "2");
        assert_eq!(get("text"), "\"héllo #a @b\"");
        assert_eq!(get("author"), r#"["42","someone"]"#);
        assert_eq!(get("created_at"), "\"2016-02-22T01:34:53+00:00\"");
        assert_eq!(get("urls"), r#"["https://example.com/"]"#);
        assert_eq!(get("coordinates"), "[2.35,48.85]");
        assert_eq!(get("kinds"), "[false,true,false]");
        assert_eq!(get("matched_rules"), r#"[["r1","t","héllo","track"]]"#);
    }
}
