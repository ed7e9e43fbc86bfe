//! The `file` rule store: JSON lines, one rule object per line (the original's
//! `tests/data/*_rules.json` format), reloaded when the file changes.
//!
//! A bad line is reported with `path:line` and skipped; the rest loads. Change
//! detection polls the file's modification time and size (portable, no inotify
//! limits, works on network mounts) and waits until they have been stable for
//! the debounce period, so an editor's save-in-several-writes reloads once —
//! but never longer than `max_debounce_ms`, so a file rewritten without pause
//! is still loaded. A file whose last line has no newline yet is a writer
//! caught mid-write: it is loaded only once complete, or once it has stayed
//! so for `max_debounce_ms`.

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
    /// The longest a change waits for the file to settle (or to end with a
    /// newline) before it is loaded anyway.
    #[serde(default = "default_max_debounce_ms")]
    pub max_debounce_ms: u64,
    /// A rule (one line) larger than this is refused with its line: its
    /// fields are copied into every post it matches.
    #[serde(default = "default_max_rule_bytes")]
    pub max_rule_bytes: usize,
    /// What the first load read, handed to the watcher so it does not load
    /// the same file again.
    #[serde(skip)]
    first_load: std::sync::Arc<std::sync::Mutex<Option<Seen>>>,
}

fn default_max_debounce_ms() -> u64 {
    2000
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
        p.range("max_debounce_ms", self.max_debounce_ms, self.debounce_ms, 600_000);
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
        Box::pin(async move {
            let (snap, seen) = load_seen(&self.path, who.rule_type, self.max_rule_bytes)?;
            if let Ok(mut first) = self.first_load.lock() {
                *first = Some(seen);
            }
            Ok(snap)
        })
    }

    fn watch(
        &self,
        who: Collector,
        _redis: Option<redis::aio::ConnectionManager>,
        tx: watch::Sender<std::sync::Arc<RuleSnapshot>>,
        reload: std::sync::Arc<tokio::sync::Notify>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let opts = WatchOptions {
            reload,
            poll: Duration::from_millis(self.poll_interval_ms),
            debounce: Duration::from_millis(self.debounce_ms),
            max_debounce: Duration::from_millis(self.max_debounce_ms),
            max_rule_bytes: self.max_rule_bytes,
            loaded: self.first_load.lock().ok().and_then(|mut f| f.take()),
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
    load_seen(path, default_type, max_rule_bytes).map(|(snap, _)| snap)
}

/// [`load_with`], and what was read (for the watcher).
fn load_seen(path: &Path, default_type: RuleType, max_rule_bytes: usize) -> Result<(RuleSnapshot, Seen), RulesError> {
    let io = |source| RulesError::Io { path: path.to_owned(), source };
    // The stamp is taken before reading: a write during the read changes it,
    // so the watcher's first poll loads the file again.
    let stamp = stamp(path);
    let scan = scan_file(path).map_err(io)?;
    let snap = parse_file(path, default_type, max_rule_bytes, scan.lines).map_err(io)?;
    Ok((snap, Seen { stamp, hash: scan.hash }))
}

/// One streaming pass over a rules file: what the watcher compares and
/// what sizes the rule list, without holding the file in memory (an 87 MB
/// file of a million rules would otherwise sit beside its rules).
#[derive(Debug, Clone, Copy)]
struct Scan {
    hash: u64,
    lines: usize,
    /// The last byte is a newline (or the file is empty).
    complete: bool,
}

fn scan_file(path: &Path) -> std::io::Result<Scan> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let (mut lines, mut last) = (1, b'\n');
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        lines += memchr::memchr_iter(b'\n', &buf[..n]).count();
        last = buf[n - 1];
    }
    Ok(Scan { hash: hasher.digest(), lines, complete: last == b'\n' })
}

/// Parse a rules file line by line as it is read (see [`parse_bytes`]).
fn parse_file(
    path: &Path,
    default_type: RuleType,
    max_rule_bytes: usize,
    lines: usize,
) -> std::io::Result<RuleSnapshot> {
    use std::io::BufRead;
    let origin = path.display().to_string();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut parser = Parser::new(&origin, default_type, max_rule_bytes, lines);
    let mut line = Vec::new();
    for i in 0.. {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        parser.line(i, text);
    }
    Ok(parser.finish())
}

/// What a load read: the file's stamp before reading, and its content's
/// hash (XXH3, several GB/s: a touched 87 MB file costs tens of
/// milliseconds to compare, not a parse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    stamp: Option<Stamp>,
    hash: u64,
}

/// Parse rules from JSON-lines text; `origin` names the file in reports.
pub fn parse(text: &str, origin: &str, default_type: RuleType) -> RuleSnapshot {
    parse_bytes(text.as_bytes(), origin, default_type, DEFAULT_MAX_RULE_BYTES)
}

/// Parse rules line by line: a line that is not UTF-8, not JSON, not a valid
/// rule or larger than `max_rule_bytes` is reported with its number and
/// skipped; the rest load.
pub fn parse_bytes(bytes: &[u8], origin: &str, default_type: RuleType, max_rule_bytes: usize) -> RuleSnapshot {
    let lines = memchr::memchr_iter(b'\n', bytes).count() + 1;
    let mut parser = Parser::new(origin, default_type, max_rule_bytes, lines);
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        parser.line(i, line);
    }
    parser.finish()
}

/// Rules of one file, a line at a time.
struct Parser<'a> {
    origin: &'a str,
    default_type: RuleType,
    max_rule_bytes: usize,
    snap: RuleSnapshot,
    rules: Vec<Rule>,
    seen: super::IdIndex,
}

impl<'a> Parser<'a> {
    /// `lines` sizes the rule list once: a million rules would otherwise be
    /// copied as it grows.
    fn new(origin: &'a str, default_type: RuleType, max_rule_bytes: usize, lines: usize) -> Parser<'a> {
        #[cfg(test)]
        tests::count_parse(origin);
        Parser {
            origin,
            default_type,
            max_rule_bytes,
            snap: RuleSnapshot::default(),
            rules: Vec::with_capacity(lines),
            seen: super::IdIndex::with_capacity(lines),
        }
    }

    /// Line `i` (from 0), without its newline.
    fn line(&mut self, i: usize, line: &[u8]) {
        let origin = self.origin;
        let problem = |message: String| RuleProblem { location: format!("{origin}:{}", i + 1), message };
        let line = match std::str::from_utf8(line) {
            Ok(l) => l.trim(),
            Err(e) => {
                self.snap.problems.push(problem(format!("not valid UTF-8 (at byte {} of the line)", e.valid_up_to())));
                return;
            }
        };
        if line.is_empty() {
            return;
        }
        if line.len() > self.max_rule_bytes {
            let e = RuleError::TooLarge { bytes: line.len(), max: self.max_rule_bytes };
            self.snap.problems.push(problem(e.to_string()));
            return;
        }
        match Rule::from_json_text(line, self.default_type) {
            Ok(rule) => {
                self.rules.push(rule);
                if !self.seen.insert(&self.rules, self.rules.len() as u32 - 1) {
                    let rule = self.rules.pop();
                    let id = rule.as_ref().map_or("", |r| r.rule_id());
                    self.snap.problems.push(problem(format!("duplicate rule_id {id:?}; the first definition is kept")));
                }
            }
            Err(e) => {
                // Named by its id too, when the line has one.
                let id = serde_json::from_str::<serde_json::Value>(line).ok().and_then(|v| match v.get("rule_id") {
                    Some(serde_json::Value::String(s)) => Some(format!("{s:?}")),
                    Some(n @ serde_json::Value::Number(_)) => Some(n.to_string()),
                    _ => None,
                });
                let message = match id {
                    Some(id) => format!("rule {id}: {e}"),
                    None => e.to_string(),
                };
                self.snap.problems.push(problem(message));
            }
        }
    }

    fn finish(mut self) -> RuleSnapshot {
        self.snap.rules = std::sync::Arc::new(self.rules);
        self.snap
    }
}

/// Settings of the polling watcher.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Load at once when notified (SIGHUP), without waiting for the poll.
    pub reload: std::sync::Arc<tokio::sync::Notify>,
    pub poll: Duration,
    pub debounce: Duration,
    pub max_debounce: Duration,
    pub max_rule_bytes: usize,
    /// What the store's first load read: the watcher starts from it instead
    /// of loading the file again (none: the first poll loads and compares).
    pub loaded: Option<Seen>,
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
    // Without what the first load read, the first poll reloads and compares
    // with the published snapshot, so a change made between the initial load
    // and this task's start is seen. With it, only a changed stamp reloads.
    let mut last: Option<Option<Stamp>> = opts.loaded.map(|s| s.stamp);
    let mut last_hash = opts.loaded.map(|s| s.hash);
    let mut unreadable_reported = false;
    // Since when the file has ended mid-line (a writer caught mid-write).
    let mut partial_since: Option<tokio::time::Instant> = None;
    loop {
        let asked = tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(opts.poll) => false,
            () = opts.reload.notified() => true,
        };
        let now = stamp(&path);
        if !asked && last == Some(now) {
            continue;
        }
        let settled = if asked {
            tracing::info!(path = %path.display(), "reloading the rules file (asked)");
            now
        } else {
            let Some(settled) = settle(&path, now, &opts, &shutdown).await else { return };
            settled
        };
        let p = path.clone();
        let started = std::time::Instant::now();
        let read = tokio::task::spawn_blocking(move || scan_file(&p)).await;
        let scan = match read {
            Ok(Ok(scan)) => scan,
            Ok(Err(source)) => {
                if !unreadable_reported {
                    let e = RulesError::Io { path: path.clone(), source };
                    tracing::warn!(error = %e, "keeping the last good rules");
                    unreadable_reported = true;
                }
                last = Some(settled);
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "rules reload task failed");
                continue;
            }
        };
        unreadable_reported = false;
        if !scan.complete {
            let since = *partial_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() < opts.max_debounce {
                // Not `last`: look again at the next poll.
                continue;
            }
            tracing::warn!(path = %path.display(), "the rules file ends without a newline; loading it as it is");
        }
        partial_since = None;
        last = Some(settled);
        if last_hash == Some(scan.hash) && !asked {
            tracing::debug!(path = %path.display(), "the rules file was touched but its content is unchanged");
            continue;
        }
        last_hash = Some(scan.hash);
        // A large file takes seconds to parse: off the async workers.
        let (p, max) = (path.clone(), opts.max_rule_bytes);
        let snap = match tokio::task::spawn_blocking(move || parse_file(&p, default_type, max, scan.lines)).await {
            Ok(Ok(snap)) => snap,
            Ok(Err(source)) => {
                let e = RulesError::Io { path: path.clone(), source };
                tracing::warn!(error = %e, "keeping the last good rules");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "rules parse task failed");
                continue;
            }
        };
        let origin = path.display().to_string();
        if **tx.borrow() == snap {
            continue;
        }
        tracing::info!(
            path = %origin,
            rules = snap.rules.len(),
            invalid = snap.problems.len(),
            load_ms = started.elapsed().as_millis() as u64,
            "rules file changed; reloading"
        );
        snap.report(&origin);
        tx.send_replace(std::sync::Arc::new(snap));
    }
}

/// Wait until the file's stamp holds still for `debounce`, but no longer than
/// `max_debounce` in all. `None` on shutdown.
async fn settle(
    path: &Path,
    first: Option<Stamp>,
    opts: &WatchOptions,
    shutdown: &CancellationToken,
) -> Option<Option<Stamp>> {
    let started = tokio::time::Instant::now();
    let mut settled = first;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(opts.debounce) => {}
        }
        let again = stamp(path);
        if again == settled {
            return Some(settled);
        }
        settled = again;
        if started.elapsed() >= opts.max_debounce {
            tracing::info!(path = %path.display(), "the rules file keeps changing; loading it now");
            return Some(settled);
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

    /// How many times each file (by its name in reports) was parsed.
    static PARSES: std::sync::Mutex<Vec<(String, u32)>> = std::sync::Mutex::new(Vec::new());

    pub(super) fn count_parse(origin: &str) {
        let mut p = PARSES.lock().expect("not poisoned");
        match p.iter_mut().find(|(o, _)| o == origin) {
            Some((_, n)) => *n += 1,
            None => p.push((origin.to_owned(), 1)),
        }
    }

    fn parses(path: &Path) -> u32 {
        let origin = path.display().to_string();
        PARSES.lock().expect("not poisoned").iter().find(|(o, _)| *o == origin).map_or(0, |(_, n)| *n)
    }

    /// Issue 15, goal 3: the store's first load is not repeated by the
    /// watcher, and a file rewritten with the same bytes is not parsed again
    /// (size + mtime, then a hash of the bytes); a real change still is.
    #[tokio::test]
    async fn the_file_is_parsed_once_at_start_and_not_again_when_only_touched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rules.jsonl");
        let text = rules_text(3);
        std::fs::write(&path, &text).expect("write");
        let cfg: FileRulesConfig =
            toml::from_str(&format!("path = {:?}\npoll_interval_ms = 20\ndebounce_ms = 20", path.display()))
                .expect("config");
        let who = Collector { rule_type: RuleType::Track, id: 0 };
        let first = cfg.load(who, None).await.expect("load");
        assert_eq!(first.rules.len(), 3);
        let (tx, mut rx) = watch::channel(std::sync::Arc::new(first));
        let stop = CancellationToken::new();
        let task = cfg.watch(who, None, tx, std::sync::Arc::default(), stop.clone());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(parses(&path), 1, "the watcher loaded the file again at start");
        // Same bytes, new modification time and a size change on the way.
        std::fs::write(&path, "").expect("truncate");
        std::fs::write(&path, &text).expect("rewrite");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(parses(&path), 1, "a rewrite with the same bytes was parsed");
        assert!(!rx.has_changed().expect("open"));
        std::fs::write(&path, rules_text(4)).expect("change");
        tokio::time::timeout(Duration::from_secs(10), rx.changed()).await.expect("reloaded").expect("open");
        assert_eq!(rx.borrow().rules.len(), 4);
        assert_eq!(parses(&path), 2);
        stop.cancel();
        task.await.expect("task");
    }

    #[tokio::test]
    async fn changes_are_picked_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rules.jsonl");
        std::fs::write(&path, "{\"rule_id\":\"1\",\"value\":\"a\"}\n").expect("write");
        let (tx, mut rx) = watch::channel(std::sync::Arc::new(load(&path, RuleType::Track).expect("load")));
        let stop = CancellationToken::new();
        let opts = WatchOptions {
            reload: std::sync::Arc::default(),
            poll: Duration::from_millis(20),
            debounce: Duration::from_millis(20),
            max_debounce: Duration::from_secs(2),
            max_rule_bytes: DEFAULT_MAX_RULE_BYTES,
            loaded: None,
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

    fn opts(max_debounce_ms: u64) -> WatchOptions {
        WatchOptions {
            reload: std::sync::Arc::default(),
            poll: Duration::from_millis(20),
            debounce: Duration::from_millis(250),
            max_debounce: Duration::from_millis(max_debounce_ms),
            max_rule_bytes: DEFAULT_MAX_RULE_BYTES,
            loaded: None,
        }
    }

    fn rules_text(n: usize) -> String {
        (0..n).map(|i| format!("{{\"rule_id\":\"{i}\",\"value\":\"w{i}\"}}\n")).collect()
    }

    /// Issue 16, defect 7: a file rewritten every 150 ms was never loaded
    /// until writing stopped (the debounce had no maximum).
    #[tokio::test]
    async fn a_file_that_keeps_changing_is_loaded_within_the_maximum_wait() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rules.jsonl");
        std::fs::write(&path, rules_text(1)).expect("write");
        let (tx, mut rx) = watch::channel(std::sync::Arc::new(load(&path, RuleType::Track).expect("load")));
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch_file(path.clone(), RuleType::Track, opts(800), tx, stop.clone()));
        let writer = {
            let path = path.clone();
            tokio::spawn(async move {
                for n in 2..30 {
                    std::fs::write(&path, rules_text(n)).expect("write");
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            })
        };
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(10), rx.changed()).await.expect("reloaded").expect("open");
        assert!(!writer.is_finished(), "loaded while the writer still writes, after {:?}", started.elapsed());
        assert!(rx.borrow().rules.len() >= 2);
        stop.cancel();
        writer.abort();
        task.await.expect("task");
    }

    /// Issue 16, defect 7: a writer pausing mid-write had its half file
    /// loaded (the half rule set then served most posts).
    #[tokio::test]
    async fn a_half_written_file_is_not_loaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rules.jsonl");
        std::fs::write(&path, rules_text(1)).expect("write");
        let (tx, mut rx) = watch::channel(std::sync::Arc::new(load(&path, RuleType::Track).expect("load")));
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch_file(path.clone(), RuleType::Track, opts(3000), tx, stop.clone()));
        let full = rules_text(4);
        let half = &full[..full.len() - 12];
        std::fs::write(&path, half).expect("write half");
        // Longer than the debounce: the old watcher loaded the half file here.
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(!rx.has_changed().expect("open"), "nothing published: {:?}", rx.borrow().rules.len());
        std::fs::write(&path, &full).expect("write the rest");
        tokio::time::timeout(Duration::from_secs(10), rx.changed()).await.expect("reloaded").expect("open");
        assert_eq!(rx.borrow().rules.len(), 4, "the whole file, never the half one");
        assert!(rx.borrow().problems.is_empty());
        stop.cancel();
        task.await.expect("task");
    }
}
