//! Building outcomes.

use serde::Serialize;

use crate::{Field, Outcome};

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
