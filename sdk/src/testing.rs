//! Native testing support: build posts, run a stage the way the host would,
//! and read back what it logged and counted. Works with plain `cargo test` on
//! the host target (the host imports are stubs there).

use crate::{MatchedRule, Outcome, Point, Post, Stage};

pub use crate::host::{LogRecord, counters, logs};

/// `init` with `config_json`, then `process` the batch, as the host does.
pub fn run<T: Stage>(config_json: &str, batch: &[Post]) -> Result<Vec<Outcome>, String> {
    crate::runtime::reset();
    crate::runtime::init::<T>(config_json)?;
    Ok(crate::runtime::process::<T>(batch.to_vec()))
}

/// Builds a [`Post`] with sensible defaults.
#[derive(Debug, Clone)]
pub struct PostBuilder(Post);

impl PostBuilder {
    pub fn new(id: &str, text: &str) -> PostBuilder {
        PostBuilder(Post {
            raw: String::new(),
            id: id.to_owned(),
            source: "twitter-v1".to_owned(),
            text: text.to_owned(),
            author_id: None,
            author_handle: None,
            lang: None,
            created_at: None,
            hashtags: Vec::new(),
            mentions: Vec::new(),
            urls: Vec::new(),
            cashtags: Vec::new(),
            coordinates: None,
            is_retweet: false,
            is_reply: false,
            is_quote: false,
            matched_rules: Vec::new(),
        })
    }
    pub fn raw(mut self, json: &str) -> Self {
        self.0.raw = json.to_owned();
        self
    }
    pub fn lang(mut self, lang: &str) -> Self {
        self.0.lang = Some(lang.to_owned());
        self
    }
    pub fn author(mut self, id: &str, handle: &str) -> Self {
        self.0.author_id = Some(id.to_owned());
        self.0.author_handle = Some(handle.to_owned());
        self
    }
    pub fn hashtags(mut self, tags: &[&str]) -> Self {
        self.0.hashtags = tags.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn urls(mut self, urls: &[&str]) -> Self {
        self.0.urls = urls.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn coordinates(mut self, lng: f64, lat: f64) -> Self {
        self.0.coordinates = Some(Point { lng, lat });
        self
    }
    pub fn retweet(mut self) -> Self {
        self.0.is_retweet = true;
        self
    }
    pub fn rule(mut self, id: &str, value: &str) -> Self {
        self.0.matched_rules.push(MatchedRule {
            id: id.to_owned(),
            tag: None,
            value: value.to_owned(),
            rule_type: "track".to_owned(),
        });
        self
    }
    pub fn build(self) -> Post {
        self.0
    }
}
