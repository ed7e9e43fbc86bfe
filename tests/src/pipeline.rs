//! One way for every test to write a pipeline file.
//!
//! Each section is given as the TOML body of its table (sub-tables such as
//! `[sink.properties]` may follow the keys in the same body); the builder
//! writes the tables in the order the file format documents, with no
//! throughput line (`stats_interval_secs = 0`) unless asked:
//!
//! ```text
//! [traptor]  [source]  [rules]  [[stages]]…  [sink]  [dead_letter]  [pipeline]  [coordination]
//! ```

use std::path::{Path, PathBuf};

/// A pipeline file under construction.
#[derive(Debug, Clone)]
pub struct PipelineFile {
    traptor_type: String,
    id: Option<u32>,
    traptor: Vec<String>,
    source: String,
    rules: String,
    stages: Vec<String>,
    sink: String,
    dead_letter: Option<String>,
    tuning: Vec<String>,
    coordination: Option<String>,
    stats_secs: u64,
    /// Further tables, written last, each with its header.
    tables: Vec<String>,
}

impl PipelineFile {
    /// A `track` collector reading `rules.jsonl` (beside the file) and
    /// writing `out.jsonl` (beside the file); the source must be given.
    pub fn new(source: &str) -> PipelineFile {
        PipelineFile {
            traptor_type: "track".into(),
            id: None,
            traptor: Vec::new(),
            source: source.trim_end().to_owned(),
            rules: "type = \"file\"\npath = \"rules.jsonl\"".into(),
            stages: Vec::new(),
            sink: "type = \"file\"\npath = \"out.jsonl\"".into(),
            dead_letter: None,
            tuning: Vec::new(),
            coordination: None,
            stats_secs: 0,
            tables: Vec::new(),
        }
    }

    /// `[traptor] type` (`track`, `follow`, `locations`).
    pub fn traptor_type(mut self, t: &str) -> Self {
        t.clone_into(&mut self.traptor_type);
        self
    }

    /// `[traptor] id`.
    pub fn id(mut self, id: u32) -> Self {
        self.id = Some(id);
        self
    }

    /// A further `[traptor]` line, e.g. `forward_control = false`.
    pub fn traptor(mut self, line: &str) -> Self {
        self.traptor.push(line.to_owned());
        self
    }

    /// The `[rules]` body.
    pub fn rules(mut self, body: &str) -> Self {
        body.trim_end().clone_into(&mut self.rules);
        self
    }

    /// A file rule store at `path`, polled quickly (tests that edit rules).
    pub fn rules_file_polled(self, path: &Path) -> Self {
        self.rules(&format!("type = \"file\"\npath = {:?}\npoll_interval_ms = 50\ndebounce_ms = 50", path.display()))
    }

    /// One more `[[stages]]` body.
    pub fn stage(mut self, body: &str) -> Self {
        self.stages.push(body.trim_end().to_owned());
        self
    }

    /// The `[sink]` body.
    pub fn sink(mut self, body: &str) -> Self {
        body.trim_end().clone_into(&mut self.sink);
        self
    }

    /// The `[dead_letter]` body.
    pub fn dead_letter(mut self, body: &str) -> Self {
        self.dead_letter = Some(body.trim_end().to_owned());
        self
    }

    /// A `[pipeline]` line, e.g. `batch_timeout_ms = 20`.
    pub fn tuning(mut self, line: &str) -> Self {
        self.tuning.push(line.to_owned());
        self
    }

    /// `[traptor] stats_interval_secs` (0, no throughput line, unless set).
    pub fn stats_interval(mut self, secs: u64) -> Self {
        self.stats_secs = secs;
        self
    }

    /// One more table, header and body (`"[buffer]\ndir = \"b\""`), written last.
    pub fn table(mut self, table: &str) -> Self {
        self.tables.push(table.trim_end().to_owned());
        self
    }

    /// The `[coordination]` body.
    pub fn coordination(mut self, body: &str) -> Self {
        self.coordination = Some(body.trim_end().to_owned());
        self
    }

    /// The file's text.
    pub fn text(&self) -> String {
        let mut t = format!("[traptor]\ntype = \"{}\"\n", self.traptor_type);
        if let Some(id) = self.id {
            t.push_str(&format!("id = {id}\n"));
        }
        t.push_str(&format!("stats_interval_secs = {}\n", self.stats_secs));
        for l in &self.traptor {
            t.push_str(l);
            t.push('\n');
        }
        let mut table = |header: &str, body: &str| {
            t.push_str(&format!("\n{header}\n{body}\n"));
        };
        table("[source]", &self.source);
        table("[rules]", &self.rules);
        for s in &self.stages {
            table("[[stages]]", s);
        }
        table("[sink]", &self.sink);
        if let Some(d) = &self.dead_letter {
            table("[dead_letter]", d);
        }
        if !self.tuning.is_empty() {
            table("[pipeline]", &self.tuning.join("\n"));
        }
        if let Some(c) = &self.coordination {
            table("[coordination]", c);
        }
        for x in &self.tables {
            t.push_str(&format!("\n{x}\n"));
        }
        t
    }

    /// Write the file as `dir/name`; returns its path.
    pub fn write_as(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, self.text()).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    /// Write the file as `dir/pipeline.toml`; returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        self.write_as(dir, "pipeline.toml")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_come_in_the_documented_order() {
        let text = PipelineFile::new("type = \"synthetic\"\ncount = 1")
            .id(7)
            .stage("name = \"a\"\nplugin = \"a.wasm\"")
            .dead_letter("type = \"file\"\npath = \"dead.jsonl\"")
            .tuning("workers = 2")
            .text();
        let headers: Vec<&str> = text.lines().filter(|l| l.starts_with('[')).collect();
        assert_eq!(
            headers,
            ["[traptor]", "[source]", "[rules]", "[[stages]]", "[sink]", "[dead_letter]", "[pipeline]"]
        );
        // The source's second key is on line 8 (tests name lines in errors).
        assert_eq!(text.lines().nth(7), Some("count = 1"));
    }
}
