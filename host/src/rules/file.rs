//! The `file` rule store: JSON lines, one rule object per line (the original's
//! `tests/data/*_rules.json` format), reloaded when the file changes.
//!
//! A bad line is reported with `path:line` and skipped; the rest loads. Change
//! detection polls the file's modification time and size (portable, no inotify
//! limits, works on network mounts) and waits until they have been stable for
//! the debounce period, so an editor's save-in-several-writes reloads once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Collector, LoadFuture, Rule, RuleError, RuleProblem, RuleSnapshot, RuleType, RulesComponent, RulesError};
use crate::component::{BaseDir, Problems};

/// `[rules]` with `type = "file"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRulesConfig {
    /// The rules file.
    pub path: PathBuf,
    /// How often to look for changes.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// How long the file must stay unchanged before it is reloaded.
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
    /// A rule (one line) larger than this is refused with its line: its
    /// fields are copied into every post it matches.
    #[serde(default = "default_max_rule_bytes")]
    pub max_rule_bytes: usize,
}

fn default_max_rule_bytes() -> usize {
    DEFAULT_MAX_RULE_BYTES
}

fn default_poll_ms() -> u64 {
    1000
}
fn default_debounce_ms() -> u64 {
    250
}

impl RulesComponent for FileRulesConfig {
    fn check(&self, p: &mut Problems<'_>) {
        p.range("poll_interval_ms", self.poll_interval_ms, 10, 3_600_000);
        p.range("debounce_ms", self.debounce_ms, 0, 60_000);
        p.range("max_rule_bytes", self.max_rule_bytes as u64, 1 << 10, 16 << 20);
    }

    fn resolve_paths(&mut self, base: &BaseDir) {
        base.fix(&mut self.path);
    }

    fn files(&self) -> Vec<(&'static str, &Path)> {
        vec![("path", &self.path)]
    }

    fn describe(&self, _who: Collector) -> String {
        self.path.display().to_string()
    }

    fn load<'a>(&'a self, who: Collector, _redis: Option<&'a mut redis::aio::ConnectionManager>) -> LoadFuture<'a> {
        Box::pin(async move { load_with(&self.path, who.rule_type, self.max_rule_bytes) })
    }

    fn watch(
        &self,
        who: Collector,
        _redis: Option<redis::aio::ConnectionManager>,
        tx: watch::Sender<std::sync::Arc<RuleSnapshot>>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let opts = WatchOptions {
            poll: Duration::from_millis(self.poll_interval_ms),
            debounce: Duration::from_millis(self.debounce_ms),
            max_rule_bytes: self.max_rule_bytes,
        };
        tokio::spawn(watch_file(self.path.clone(), who.rule_type, opts, tx, shutdown))
    }
}

/// Rules larger than this are refused unless `max_rule_bytes` says otherwise.
pub const DEFAULT_MAX_RULE_BYTES: usize = 64 << 10;

/// Load every rule of a JSON-lines file.
pub fn load(path: &Path, default_type: RuleType) -> Result<RuleSnapshot, RulesError> {
    load_with(path, default_type, DEFAULT_MAX_RULE_BYTES)
}

/// [`load`] with a size cap per rule.
pub fn load_with(path: &Path, default_type: RuleType, max_rule_bytes: usize) -> Result<RuleSnapshot, RulesError> {
    let bytes = std::fs::read(path).map_err(|source| RulesError::Io { path: path.to_owned(), source })?;
    Ok(parse_bytes(&bytes, &path.display().to_string(), default_type, max_rule_bytes))
}

/// Parse rules from JSON-lines text; `origin` names the file in reports.
pub fn parse(text: &str, origin: &str, default_type: RuleType) -> RuleSnapshot {
    parse_bytes(text.as_bytes(), origin, default_type, DEFAULT_MAX_RULE_BYTES)
}

/// Parse rules line by line: a line that is not UTF-8, not JSON, not a valid
/// rule or larger than `max_rule_bytes` is reported with its number and
/// skipped; the rest load.
pub fn parse_bytes(bytes: &[u8], origin: &str, default_type: RuleType, max_rule_bytes: usize) -> RuleSnapshot {
    let mut snap = RuleSnapshot::default();
    let mut seen = HashSet::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let location = format!("{origin}:{}", i + 1);
        let problem = |message: String| RuleProblem { location: location.clone(), message };
        let line = match std::str::from_utf8(line) {
            Ok(l) => l.trim(),
            Err(e) => {
                snap.problems.push(problem(format!("not valid UTF-8 (at byte {} of the line)", e.valid_up_to())));
                continue;
            }
        };
        if line.is_empty() {
            continue;
        }
        if line.len() > max_rule_bytes {
            snap.problems.push(problem(RuleError::TooLarge { bytes: line.len(), max: max_rule_bytes }.to_string()));
            continue;
        }
        let obj = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(o)) => o,
            Ok(_) => {
                snap.problems.push(problem("a rule must be a JSON object".into()));
                continue;
            }
            Err(e) => {
                snap.problems.push(problem(format!("not valid JSON: {e}")));
                continue;
            }
        };
        match Rule::from_json(&obj, default_type) {
            Ok(rule) => {
                if !seen.insert(rule.rule_id().to_owned()) {
                    snap.problems
                        .push(problem(format!("duplicate rule_id {:?}; the first definition is kept", rule.rule_id())));
                    continue;
                }
                snap.rules.push(rule);
            }
            Err(e) => snap.problems.push(problem(e.to_string())),
        }
    }
    snap
}

/// Settings of the polling watcher.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub poll: Duration,
    pub debounce: Duration,
    pub max_rule_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp { modified: m.modified().ok(), len: m.len() })
}

/// Watch `path` and publish a new snapshot each time its content changes.
/// A file that disappears or becomes unreadable keeps the last good rules.
pub async fn watch_file(
    path: PathBuf,
    default_type: RuleType,
    opts: WatchOptions,
    tx: watch::Sender<std::sync::Arc<RuleSnapshot>>,
    shutdown: CancellationToken,
) {
    // The first poll always reloads and compares with the published snapshot,
    // so a change made between the initial load and this task's start is seen.
    let mut last: Option<Option<Stamp>> = None;
    let mut unreadable_reported = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(opts.poll) => {}
        }
        let now = stamp(&path);
        if last == Some(now) {
            continue;
        }
        // Debounce: wait until the file stops changing.
        let mut settled = now;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(opts.debounce) => {}
            }
            let again = stamp(&path);
            if again == settled {
                break;
            }
            settled = again;
        }
        last = Some(settled);
        let p = path.clone();
        let max = opts.max_rule_bytes;
        let loaded = tokio::task::spawn_blocking(move || load_with(&p, default_type, max)).await;
        match loaded {
            Ok(Ok(snap)) => {
                unreadable_reported = false;
                if **tx.borrow() == snap {
                    continue;
                }
                tracing::info!(
                    path = %path.display(),
                    rules = snap.rules.len(),
                    invalid = snap.problems.len(),
                    "rules file changed; reloading"
                );
                snap.report(&path.display().to_string());
                tx.send_replace(std::sync::Arc::new(snap));
            }
            Ok(Err(e)) => {
                if !unreadable_reported {
                    tracing::warn!(error = %e, "keeping the last good rules");
                    unreadable_reported = true;
                }
            }
            Err(e) => tracing::error!(error = %e, "rules reload task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_located_and_the_rest_loads() {
        let text = concat!(
            "{\"rule_id\": 1, \"value\": \"happy\", \"rule_type\": \"track\"}\n",
            "\n",
            "{not json\n",
            "{\"rule_id\": 2, \"value\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", \"rule_type\": \"track\"}\n",
            "{\"rule_id\": 3, \"value\": \"jack\", \"rule_type\": \"follow\"}\n",
            "{\"rule_id\": 4, \"value\": \"17919972\", \"rule_type\": \"follow\"}\n",
            "{\"rule_id\": 4, \"value\": \"1\", \"rule_type\": \"follow\"}\n",
        );
        let snap = parse(text, "rules.jsonl", RuleType::Track);
        let ids: Vec<_> = snap.rules.iter().map(|r| r.rule_id().to_owned()).collect();
        assert_eq!(ids, vec!["1", "4"]);
        let locs: Vec<_> = snap.problems.iter().map(|p| p.location.as_str()).collect();
        assert_eq!(locs, vec!["rules.jsonl:3", "rules.jsonl:4", "rules.jsonl:5", "rules.jsonl:7"]);
        assert!(snap.problems[1].message.contains("70 bytes"), "{}", snap.problems[1].message);
        assert!(snap.problems[2].message.contains("not a numeric user id"));
    }

    #[test]
    fn upstream_rule_files_load() {
        for f in ["track_rules.json", "follow_rules.json", "locations_rules.json"] {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/upstream-traptor").join(f);
            let snap = load(&p, RuleType::Track).expect("readable");
            assert_eq!(snap.rules.len(), 1, "{f}");
            assert!(snap.problems.is_empty(), "{f}: {:?}", snap.problems);
        }
    }

    #[test]
    fn unreadable_file_is_an_error_naming_it() {
        let e = load(Path::new("/nonexistent/rules.jsonl"), RuleType::Track).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/rules.jsonl"));
    }

    #[tokio::test]
    async fn changes_are_picked_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rules.jsonl");
        std::fs::write(&path, "{\"rule_id\":\"1\",\"value\":\"a\"}\n").expect("write");
        let (tx, mut rx) = watch::channel(std::sync::Arc::new(load(&path, RuleType::Track).expect("load")));
        let stop = CancellationToken::new();
        let opts = WatchOptions {
            poll: Duration::from_millis(20),
            debounce: Duration::from_millis(20),
            max_rule_bytes: DEFAULT_MAX_RULE_BYTES,
        };
        let task = tokio::spawn(watch_file(path.clone(), RuleType::Track, opts, tx, stop.clone()));
        std::fs::write(&path, "{\"rule_id\":\"1\",\"value\":\"a\"}\n{\"rule_id\":\"2\",\"value\":\"b\"}\n")
            .expect("write");
        tokio::time::timeout(Duration::from_secs(10), rx.changed()).await.expect("reloaded").expect("open");
        assert_eq!(rx.borrow().rules.len(), 2);
        stop.cancel();
        task.await.expect("task");
    }

    /// Issue 16, defect 3: one invalid UTF-8 byte rejected the whole file,
    /// with no line number.
    #[test]
    fn a_line_that_is_not_utf8_is_located_and_skipped() {
        let mut bytes = b"{\"rule_id\":\"1\",\"value\":\"happy\"}\n{\"rule_id\":\"2\",\"value\":\"caf".to_vec();
        bytes.push(0xE9); // Latin-1 é
        bytes.extend_from_slice(b"\"}\n{\"rule_id\":\"3\",\"value\":\"sad\"}\n");
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("rules.jsonl");
        std::fs::write(&p, &bytes).expect("write");
        let snap = load(&p, RuleType::Track).expect("loads");
        let ids: Vec<&str> = snap.rules.iter().map(|r| r.rule_id()).collect();
        assert_eq!(ids, ["1", "3"]);
        assert_eq!(snap.problems.len(), 1);
        assert!(snap.problems[0].location.ends_with("rules.jsonl:2"), "{:?}", snap.problems);
        assert!(snap.problems[0].message.contains("UTF-8"), "{:?}", snap.problems);
    }

    /// Issue 16, defect 8: rule metadata had no size cap (a 10 MB field was
    /// copied into every matched post).
    #[test]
    fn a_rule_over_the_size_cap_is_refused_with_its_line() {
        let big = format!("{{\"rule_id\":\"2\",\"value\":\"x\",\"description\":\"{}\"}}", "d".repeat(70_000));
        let text = format!("{{\"rule_id\":\"1\",\"value\":\"happy\"}}\n{big}\n");
        let snap = parse(&text, "r.jsonl", RuleType::Track);
        assert_eq!(snap.rules.len(), 1);
        assert_eq!(snap.problems[0].location, "r.jsonl:2");
        assert!(snap.problems[0].message.contains("max_rule_bytes"), "{:?}", snap.problems);
        let snap = parse_bytes(text.as_bytes(), "r.jsonl", RuleType::Track, 1 << 20);
        assert_eq!(snap.rules.len(), 2, "a larger cap takes it");
    }
}
