//! Outcomes, and building them.

use serde::Serialize;

/// One field added under `traptor.enrichments.<stage name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Key inside the stage's object.
    pub name: String,
    /// The value as JSON text (`0.5`, `"en"`, `["a","b"]`, `{"k":1}`).
    pub value: String,
}

/// What happens to one post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Keep the post unchanged (costs nothing to return).
    Keep,
    /// Keep the post and add these fields.
    Enrich(Vec<Field>),
    /// Remove the post from the stream; the reason is counted and logged.
    Drop(String),
    /// This post could not be processed; the stage's `on_error` policy
    /// decides what happens to it. The plugin stays usable.
    Error(String),
}

/// Fields to add to a post, built one by one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Enrichment(Vec<Field>);

impl Enrichment {
    pub fn new() -> Enrichment {
        Enrichment(Vec::new())
    }

    /// Add a field; the value is serialised to JSON.
    pub fn field(mut self, name: &str, value: impl Serialize) -> Enrichment {
        let value = serde_json::to_string(&value).unwrap_or_else(|_| "null".to_owned());
        self.0.push(Field { name: name.to_owned(), value });
        self
    }

    /// Add a field whose value is already JSON text.
    pub fn raw_field(mut self, name: &str, json: String) -> Enrichment {
        self.0.push(Field { name: name.to_owned(), value: json });
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Enrichment> for Outcome {
    fn from(e: Enrichment) -> Outcome {
        if e.0.is_empty() { Outcome::Keep } else { Outcome::Enrich(e.0) }
    }
}
