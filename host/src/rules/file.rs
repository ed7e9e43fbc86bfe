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

use super::{Collector, LoadFuture, Rule, RuleProblem, RuleSnapshot, RuleType, RulesComponent, RulesError};
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
}

fn default_poll_ms() -> u64 {
    1000
}
fn default_debounce_ms() -> u64 {
    250
}

impl RulesComponent for FileRulesConfig {
    fn check(&self, p: &mut Problems<'_>) {
        p.at_least("poll_interval_ms", self.poll_interval_ms, 1);
    }

    fn resolve_paths(&mut self, base: &BaseDir) {
        base.fix(&mut self.path);
    }

    fn describe(&self, _who: Collector) -> String {
        self.path.display().to_string()
    }

    fn load<'a>(&'a self, who: Collector, _redis: Option<&'a mut redis::aio::ConnectionManager>) -> LoadFuture<'a> {
        Box::pin(async move { load(&self.path, who.rule_type) })
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
        };
        tokio::spawn(watch_file(self.path.clone(), who.rule_type, opts, tx, shutdown))
    }
}

/// Load every rule of a JSON-lines file.
pub fn load(path: &Path, default_type: RuleType) -> Result<RuleSnapshot, RulesError> {
    let text = std::fs::read_to_string(path).map_err(|source| RulesError::Io { path: path.to_owned(), source })?;
    Ok(parse(&text, &path.display().to_string(), default_type))
}

/// Parse rules from JSON-lines text; `origin` names the file in reports.
pub fn parse(text: &str, origin: &str, default_type: RuleType) -> RuleSnapshot {
    let mut snap = RuleSnapshot::default();
    let mut seen = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let location = format!("{origin}:{}", i + 1);
        let problem = |message: String| RuleProblem { location: location.clone(), message };
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
        let loaded = tokio::task::spawn_blocking(move || load(&p, default_type)).await;
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
        let opts = WatchOptions { poll: Duration::from_millis(20), debounce: Duration::from_millis(20) };
        let task = tokio::spawn(watch_file(path.clone(), RuleType::Track, opts, tx, stop.clone()));
        std::fs::write(&path, "{\"rule_id\":\"1\",\"value\":\"a\"}\n{\"rule_id\":\"2\",\"value\":\"b\"}\n")
            .expect("write");
        tokio::time::timeout(Duration::from_secs(10), rx.changed()).await.expect("reloaded").expect("open");
        assert_eq!(rx.borrow().rules.len(), 2);
        stop.cancel();
        task.await.expect("task");
    }
}
