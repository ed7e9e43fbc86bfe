//! End-to-end: the real `traptor-host` binary on real files.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use traptor_tests::{PipelineFile, fixture, json_lines, repo_root, rule_ids, run_host, traptor_host};

const LIMIT: Duration = Duration::from_secs(60);

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write file");
}

fn pipeline(dir: &Path, source: &str, rules: &Path, sink: &str) -> std::path::PathBuf {
    PipelineFile::new(source).id(7).rules_file_polled(rules).sink(sink).write(dir)
}

/// Append a table (`[dedup]`, `[limits.x]` …) to a pipeline file.
fn append_table(p: &Path, table: &str) {
    let text = std::fs::read_to_string(p).expect("pipeline");
    write(p, &format!("{text}\n{table}"));
}

/// Run a pipeline whose sink is `out` (removed first): its lines and the log.
fn run_to_file(p: &Path, out: &Path) -> (Vec<serde_json::Value>, String) {
    let _ = std::fs::remove_file(out);
    let o = run_host(&["--pipeline", p.to_str().expect("utf8")], LIMIT);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    (json_lines(&std::fs::read(out).unwrap_or_default()), stderr)
}

fn compact(path: &Path) -> String {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
    v.to_string()
}

#[test]
fn upstream_fixtures_through_a_replay_pipeline() {
    let root = repo_root();
    let out = run_host(&["--pipeline", root.join("examples/replay.toml").to_str().expect("utf8"), "--test"], LIMIT);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 14, "every message is forwarded");
    let ids: Vec<Vec<String>> = lines.iter().map(rule_ids).collect();
    // track_tweet: "happy"; follow_tweet: author 17919972 (and says "happy");
    // locations_tweet: Sunnyvale place overlaps the SF box.
    assert_eq!(ids[0], vec!["12347"]);
    assert_eq!(ids[1], vec!["12347", "12345"]);
    assert_eq!(ids[3], vec!["12346"]);
    assert_eq!(ids[5], vec!["Not Found"], "no_match_tweet");
    for i in [5, 7, 8, 9] {
        let t = &lines[i]["traptor"];
        assert_eq!(t["rule_value"], "Not Found");
        assert_eq!(t["rule_type"], "track");
        assert_eq!(t["id"], 0);
    }
    assert_eq!(lines[0]["traptor"]["created_at_iso"], "2016-02-22T01:34:53+00:00");
    assert_eq!(lines[1]["traptor"]["created_at_iso"], "2016-02-20T03:52:59+00:00");
    assert_eq!(lines[3]["traptor"]["created_at_iso"], "2016-02-23T02:02:54+00:00");
    let rule = &lines[0]["traptor"]["collection_rules"][0];
    assert_eq!(rule["rule_tag"], "test");
    assert_eq!(rule["rule_value"], "happy");
    assert_eq!(rule["appid"], "test-appid");
    // Control messages are forwarded unchanged.
    let data = fixture("upstream-traptor");
    for (i, f) in [
        (2, "limit_message.json"),
        (4, "delete_message.json"),
        (6, "scrub_geo_message.json"),
        (10, "status_withheld_message.json"),
        (11, "user_withheld_message.json"),
        (12, "warning_message.json"),
        (13, "disconnect_message.json"),
    ] {
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(data.join(f)).expect("read")).expect("json");
        assert_eq!(lines[i], expected, "{f}");
    }
}

#[test]
fn original_bytes_are_kept() {
    let dir = tempfile::tempdir().expect("tmp");
    let raw = r#"{"id_str":"9","text":"happy","n":1.50,"big":123456789012345678901234567890,"esc":"\u00e9"}"#;
    write(&dir.path().join("in.jsonl"), &format!("{raw}\n"));
    write(&dir.path().join("rules.jsonl"), "{\"rule_id\":\"1\",\"value\":\"happy\"}\n");
    let p = pipeline(
        dir.path(),
        "type = \"replay\"\npath = \"in.jsonl\"",
        &dir.path().join("rules.jsonl"),
        "type = \"stdout\"",
    );
    let out = run_host(&["--pipeline", p.to_str().expect("utf8")], LIMIT);
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).expect("utf8");
    let prefix = &raw[..raw.len() - 1];
    assert!(line.starts_with(prefix), "original bytes must lead the output: {line}");
    assert!(line.contains(r#","traptor":{"id_str":7,"type":"track""#), "{line}");
}

#[test]
fn bad_input_is_reported_with_its_line_and_loses_nothing_else() {
    let dir = tempfile::tempdir().expect("tmp");
    let upstream = fixture("upstream-traptor");
    let track = compact(&upstream.join("track_tweet.json"));
    let follow = compact(&upstream.join("follow_tweet.json"));
    write(
        &dir.path().join("in.jsonl"),
        &format!("{track}\n{{\"id_str\": \"1\", \"text\n[1,2,3]\n\n{follow}\n{{\"id_str\":\"5\",\"text\":7}}\n"),
    );
    write(
        &dir.path().join("rules.jsonl"),
        concat!(
            "{\"rule_id\":\"1\",\"value\":\"happy\",\"rule_type\":\"track\"}\n",
            "{\"rule_id\":\"2\",\"value\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"rule_type\":\"track\"}\n",
            "{\"rule_id\":\"3\",\"value\":\"not-a-number\",\"rule_type\":\"follow\"}\n",
            "this is not json\n",
            "{\"rule_id\":\"4\",\"value\":\"17919972\",\"rule_type\":\"follow\"}\n",
        ),
    );
    let rules = dir.path().join("rules.jsonl");
    let p = pipeline(dir.path(), "type = \"replay\"\npath = \"in.jsonl\"", &rules, "type = \"stdout\"");
    let out = run_host(&["--pipeline", p.to_str().expect("utf8")], LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rules_name = rules.display().to_string();
    assert!(stderr.contains(&format!("{rules_name}:2")) && stderr.contains("70 bytes"), "{stderr}");
    assert!(stderr.contains(&format!("{rules_name}:3")) && stderr.contains("not a numeric user id"), "{stderr}");
    assert!(stderr.contains(&format!("{rules_name}:4")) && stderr.contains("not valid JSON"), "{stderr}");
    for line in ["line=2", "line=3"] {
        assert!(stderr.contains(line), "malformed record at {line} reported: {stderr}");
    }
    // Issue 23: a post whose text is a number is not malformed: the text is
    // read as absent, the field counted and named, the post written.
    assert!(!stderr.contains("line=6"), "{stderr}");
    assert!(stderr.contains("status.text") && stderr.contains("post_id=5"), "{stderr}");
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 3, "the good posts and the drifted one pass");
    assert_eq!(rule_ids(&lines[0]), vec!["1"]);
    assert_eq!(rule_ids(&lines[1]), vec!["1", "4"]);
    assert_eq!(lines[2]["text"], 7, "its bytes unchanged");
    assert!(!stderr.contains("panicked"));
}

#[test]
fn validate_accepts_the_examples() {
    for ex in ["examples/demo.toml", "examples/replay.toml"] {
        let out = run_host(&["validate", "--pipeline", repo_root().join(ex).to_str().expect("utf8")], LIMIT);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{ex}: {stdout}");
        assert!(stdout.contains("valid:"), "{stdout}");
    }
}

#[test]
fn validate_rejects_broken_files_with_78_and_names_the_fault() {
    let dir = tempfile::tempdir().expect("tmp");
    let rules = dir.path().join("rules.jsonl");
    write(&rules, "{\"rule_id\":\"1\",\"value\":\"happy\"}\n");
    let good = pipeline(dir.path(), "type = \"synthetic\"\ncount = 1", &rules, "type = \"stdout\"");
    let text = std::fs::read_to_string(&good).expect("read");

    // An unknown key: named, with its line.
    let bad = dir.path().join("typo.toml");
    write(&bad, &text.replace("count = 1", "count = 1\nsede = 4"));
    let out = run_host(&["validate", "--pipeline", bad.to_str().expect("utf8")], LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(78), "{stdout}");
    assert!(stdout.contains("sede") && stdout.contains("line 9"), "{stdout}");

    // A bad rule: named with file and line.
    write(
        &rules,
        "{\"rule_id\":\"1\",\"value\":\"happy\"}\n{\"rule_id\":\"2\",\"value\":\"x\",\"rule_type\":\"follow\"}\n",
    );
    let out = run_host(&["validate", "--pipeline", good.to_str().expect("utf8")], LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(78), "{stdout}");
    assert!(stdout.contains(&format!("{}:2", rules.display())), "{stdout}");

    // Too many rules for one connection.
    let many: String = (0..401).map(|i| format!("{{\"rule_id\":\"{i}\",\"value\":\"w{i}\"}}\n")).collect();
    write(&rules, &many);
    let out = run_host(&["validate", "--pipeline", good.to_str().expect("utf8")], LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(78), "{stdout}");
    assert!(stdout.contains("one connection carries 400"), "{stdout}");

    // A missing rules file, and running a broken file, also exit 78.
    std::fs::remove_file(&rules).expect("rm");
    let out = run_host(&["validate", "--pipeline", good.to_str().expect("utf8")], LIMIT);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stdout).contains("rules.jsonl"));
    let out = run_host(&["--pipeline", good.to_str().expect("utf8")], LIMIT);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read rules file"));
    let out = run_host(&["--pipeline", bad.to_str().expect("utf8")], LIMIT);
    assert_eq!(out.status.code(), Some(78));
}

#[test]
fn test_mode_forces_stdout_and_file_sink_writes_everything() {
    let dir = tempfile::tempdir().expect("tmp");
    let rules = dir.path().join("rules.jsonl");
    write(&rules, "{\"rule_id\":\"1\",\"value\":\"coffee\"}\n");
    let p = pipeline(
        dir.path(),
        "type = \"synthetic\"\ncount = 3000\nseed = 5",
        &rules,
        "type = \"file\"\npath = \"out.jsonl\"\nrotate_bytes = 1000000",
    );
    let out = run_host(&["--pipeline", p.to_str().expect("utf8"), "--test"], LIMIT);
    assert!(out.status.success());
    assert_eq!(json_lines(&out.stdout).len(), 3000);
    assert!(!dir.path().join("out.jsonl").exists(), "--test writes nothing to the file sink");

    let out = run_host(&["--pipeline", p.to_str().expect("utf8")], LIMIT);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("out.jsonl")))
        .collect();
    files.sort();
    assert!(files.len() > 1, "rotated: {files:?}");
    let mut ids = Vec::new();
    for f in &files {
        assert!(std::fs::metadata(f).expect("meta").len() <= 1_000_000);
    }
    // Rotated files in order (.1, .2, … then the live file) hold the posts in source order.
    let mut ordered: Vec<_> = files.iter().filter(|f| f.extension().is_some_and(|e| e != "jsonl")).cloned().collect();
    ordered.sort_by_key(|f| f.extension().and_then(|e| e.to_str()).and_then(|e| e.parse::<u32>().ok()));
    ordered.push(dir.path().join("out.jsonl"));
    for f in ordered {
        for v in json_lines(&std::fs::read(f).expect("read")) {
            ids.push(v["id_str"].as_str().expect("id").to_owned());
        }
    }
    assert_eq!(ids.len(), 3000);
    let mut sorted = ids.clone();
    sorted.sort_by_key(|s| s.parse::<u64>().expect("num"));
    assert_eq!(ids, sorted, "output order equals source order");
}

#[test]
fn sigterm_drains_in_flight_posts_and_exits_cleanly() {
    let dir = tempfile::tempdir().expect("tmp");
    let rules = dir.path().join("rules.jsonl");
    write(&rules, "{\"rule_id\":\"1\",\"value\":\"coffee\"}\n");
    let p = pipeline(dir.path(), "type = \"synthetic\"\nrate = 2000", &rules, "type = \"file\"\npath = \"out.jsonl\"");
    let mut child = Command::new(traptor_host())
        .args(["--pipeline", p.to_str().expect("utf8")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = dir.path().join("out.jsonl");
    let start = Instant::now();
    while std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) < 100_000 {
        assert!(start.elapsed() < LIMIT, "no output");
        std::thread::sleep(Duration::from_millis(50));
    }
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(kill.success());
    let status = child.wait().expect("wait");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read");
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.contains("shutdown requested"), "{stderr}");
    let finished = stderr.lines().find(|l| l.contains("pipeline finished")).expect("summary line");
    let records: u64 = finished
        .split_whitespace()
        .find_map(|w| w.strip_prefix("records="))
        .and_then(|n| n.parse().ok())
        .expect("records=");
    let text = std::fs::read(&out).expect("out");
    assert!(text.ends_with(b"\n"), "last record complete");
    let lines = json_lines(&text);
    assert_eq!(lines.len() as u64, records, "every record read was written");
}

#[test]
fn rules_file_changes_apply_without_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let rules = dir.path().join("rules.jsonl");
    write(&rules, "{\"rule_id\":\"old\",\"value\":\"happy\"}\n");
    let input = dir.path().join("in.jsonl");
    let tweet = compact(&fixture("upstream-traptor/track_tweet.json"));
    write(&input, &format!("{tweet}\n"));
    let p = pipeline(
        dir.path(),
        "type = \"replay\"\npath = \"in.jsonl\"\nfollow = true",
        &rules,
        "type = \"file\"\npath = \"out.jsonl\"",
    );
    let mut child = Command::new(traptor_host())
        .args(["--pipeline", p.to_str().expect("utf8")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = dir.path().join("out.jsonl");
    let wait_lines = |n: usize| -> Vec<serde_json::Value> {
        let start = Instant::now();
        loop {
            let text = std::fs::read(&out).unwrap_or_default();
            if text.iter().filter(|&&b| b == b'\n').count() >= n {
                return json_lines(&text);
            }
            assert!(start.elapsed() < LIMIT, "waiting for {n} lines");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert_eq!(rule_ids(&wait_lines(1)[0]), vec!["old"]);
    write(&rules, "{\"rule_id\":\"new\",\"value\":\"birthday\"}\n");
    // Wait until the reload is logged, then append the same post again.
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut seen = String::new();
        while let Ok(n) = std::io::Read::read(&mut stderr, &mut buf) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.contains("matcher swapped") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(LIMIT).expect("rules reloaded");
    let mut f = std::fs::OpenOptions::new().append(true).open(&input).expect("open");
    writeln!(f, "{tweet}").expect("append");
    assert_eq!(rule_ids(&wait_lines(2)[1]), vec!["new"]);
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().expect("wait").success());
}

// ---- issue 16: bad input, crashes, bad numbers ------------------------------------

/// Defect 1: a truncated gzip lost the posts decoded before the cut and the
/// run ended without its summary.
#[test]
fn a_truncated_gzip_writes_what_was_read_then_fails_with_a_summary() {
    let dir = tempfile::tempdir().expect("tmp");
    let gz = dir.path().join("posts.jsonl.gz");
    let out = run_host(&["generate", "--count", "3000", "--seed", "3", "--output", gz.to_str().expect("utf8")], LIMIT);
    assert!(out.status.success());
    let bytes = std::fs::read(&gz).expect("read");
    std::fs::write(&gz, &bytes[..bytes.len() * 6 / 10]).expect("cut");
    let rules = dir.path().join("rules.jsonl");
    write(&rules, "{\"rule_id\":\"1\",\"value\":\"the\"}\n");
    let p = pipeline(
        dir.path(),
        "type = \"replay\"\npath = \"posts.jsonl.gz\"",
        &rules,
        "type = \"file\"\npath = \"out.jsonl\"",
    );
    let out = run_host(&["--pipeline", p.to_str().expect("utf8")], LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("error reading") && stderr.contains("posts.jsonl.gz"), "{stderr}");
    let finished = stderr.lines().find(|l| l.contains("pipeline finished")).expect("a summary despite the error");
    let written: usize = finished
        .split("written=")
        .nth(1)
        .and_then(|w| w.split_whitespace().next())
        .and_then(|w| w.parse().ok())
        .expect("written=");
    let lines = json_lines(&std::fs::read(dir.path().join("out.jsonl")).expect("output"));
    assert_eq!(lines.len(), written);
    assert!(written > 1000, "the posts before the cut are written: {written}");
}

/// Defect 2, and crash consistency: SIGKILL a replay into a file sink at 20
/// moments; every line of the output still parses (a cut last line is moved
/// aside by the next run, never glued to a post), and a last run completes
/// the set.
#[test]
fn killed_runs_never_corrupt_the_output_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let corpus = dir.path().join("posts.jsonl");
    let out =
        run_host(&["generate", "--count", "20000", "--seed", "11", "--output", corpus.to_str().expect("utf8")], LIMIT);
    assert!(out.status.success());
    let rules = dir.path().join("rules.jsonl");
    write(&rules, "{\"rule_id\":\"1\",\"value\":\"the\"}\n");
    let p = pipeline(
        dir.path(),
        "type = \"replay\"\npath = \"posts.jsonl\"",
        &rules,
        "type = \"file\"\npath = \"out.jsonl\"",
    );
    let args = ["--pipeline", p.to_str().expect("utf8")];
    // A crash inside a write leaves a cut last line (the kernel may stop a
    // large write part-way); start from one, as a killed run can leave.
    write(&dir.path().join("out.jsonl"), "{\"id_str\":\"1\",\"text\":\"a whole line\"}\n{\"id_str\":\"2\",\"te");
    // Fixed pseudo-random kill moments (xorshift), 30 to 230 ms after start:
    // most land mid-run (a whole run of the debug build takes ~0.2 s).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let host = traptor_tests::Host::spawn(&args, &[]);
        std::thread::sleep(Duration::from_millis(30 + x % 200));
        let _ = Command::new("kill").args(["-KILL", &host.pid().to_string()]).status();
        drop(host);
        std::thread::sleep(Duration::from_millis(20));
    }
    let last = run_host(&args, LIMIT);
    assert!(last.status.success(), "{}", String::from_utf8_lossy(&last.stderr));
    let text = std::fs::read(dir.path().join("out.jsonl")).expect("output");
    let lines = json_lines(&text); // fails on any line that is not JSON
    let ids: std::collections::HashSet<&str> = lines.iter().filter_map(|v| v["id_str"].as_str()).collect();
    let expected: std::collections::HashSet<String> = std::fs::read_to_string(&corpus)
        .expect("corpus")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["id_str"].as_str().map(str::to_owned))
        .collect();
    assert!(expected.iter().all(|id| ids.contains(id.as_str())), "every post at least once");
    let aside: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("out.jsonl.torn-"))
        .collect();
    assert!(!aside.is_empty(), "the cut line was kept aside");
    assert!(aside.iter().any(|p| std::fs::read_to_string(p).is_ok_and(|t| t == "{\"id_str\":\"2\",\"te")));
}

/// Defect 6: a sink writing the file its source replays (or the rules file)
/// fed itself until the disk was full; a sink path that is a directory passed
/// `validate`.
#[test]
fn a_sink_cannot_write_an_input_or_a_directory() {
    let dir = tempfile::tempdir().expect("tmp");
    let rules = dir.path().join("rules.jsonl");
    write(&rules, "{\"rule_id\":\"1\",\"value\":\"happy\"}\n");
    write(&dir.path().join("in.jsonl"), "{\"id_str\":\"1\",\"text\":\"happy\"}\n");
    let check = |source: &str, sink: &str| {
        let p = pipeline(dir.path(), source, &rules, sink);
        let out = run_host(&["validate", "--pipeline", p.to_str().expect("utf8")], LIMIT);
        let run = run_host(&["--pipeline", p.to_str().expect("utf8")], LIMIT);
        assert_eq!(run.status.code(), out.status.code(), "run refuses what validate refuses");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, stdout) =
        check("type = \"replay\"\npath = \"in.jsonl\"", "type = \"file\"\npath = \"./sub/../in.jsonl\"");
    assert_eq!(code, Some(78), "{stdout}");
    assert!(stdout.contains("sink.path") && stdout.contains("source.path"), "{stdout}");
    let (code, stdout) =
        check("type = \"synthetic\"\ncount = 1", &format!("type = \"file\"\npath = {:?}", rules.display()));
    assert_eq!(code, Some(78), "{stdout}");
    assert!(stdout.contains("sink.path") && stdout.contains("rules.path"), "{stdout}");
    std::fs::create_dir(dir.path().join("outdir")).expect("mkdir");
    let (code, stdout) = check("type = \"synthetic\"\ncount = 1", "type = \"file\"\npath = \"outdir\"");
    assert_eq!(code, Some(78), "{stdout}");
    assert!(stdout.contains("outdir") && stdout.contains("directory"), "{stdout}");
    let (code, stdout) = check("type = \"synthetic\"\ncount = 1", "type = \"file\"\npath = \"out.jsonl\"");
    assert_eq!(code, Some(0), "{stdout}");
}

/// Defects 4 and 5: `workers = 512` deadlocked; numbers without bounds
/// panicked or exhausted memory (`channel_batches = 100000000`,
/// `rate = 1e-300`, a huge `stats_interval_secs`, 10,000 stages) — and
/// `validate` accepted them. Each is now exit 78 naming the key and its range.
#[test]
fn numbers_out_of_range_are_refused_with_the_key_and_the_range() {
    let dir = tempfile::tempdir().expect("tmp");
    let rules = dir.path().join("rules.jsonl");
    write(&rules, "{\"rule_id\":\"1\",\"value\":\"happy\"}\n");
    let base =
        PipelineFile::new("type = \"synthetic\"\ncount = 10").rules_file_polled(&rules).sink("type = \"stdout\"");
    let many_stages = (0..10_000).fold(base.clone(), |p, i| p.stage(&format!("name = \"s{i}\"\nplugin = \"x.wasm\"")));
    let cases = [
        (base.clone().tuning("workers = 600"), "pipeline.workers", "must be between 1 and"),
        (base.clone().tuning("channel_batches = 100000000"), "pipeline.channel_batches", "between 1 and 1024"),
        (
            PipelineFile::new("type = \"synthetic\"\nrate = 1e-300").rules_file_polled(&rules),
            "source.rate",
            "between 0.001 and",
        ),
        (
            base.clone().traptor("stats_interval_secs = 99999999999"),
            "traptor.stats_interval_secs",
            "between 0 and 86400",
        ),
        (many_stages, "stages", "at most 64 stages"),
    ];
    for (i, (file, key, range)) in cases.into_iter().enumerate() {
        // A later `stats_interval_secs` line would be a duplicate key: swap it in.
        let text = file.text().replacen("stats_interval_secs = 0\nstats_interval_secs", "stats_interval_secs", 1);
        let p = dir.path().join(format!("case{i}.toml"));
        write(&p, &text);
        let out = run_host(&["validate", "--pipeline", p.to_str().expect("utf8")], LIMIT);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(78), "{key}: {stdout}");
        assert!(stdout.contains(key) && stdout.contains(range), "{key}: {stdout}");
        let run = run_host(&["--pipeline", p.to_str().expect("utf8")], LIMIT);
        assert_eq!(run.status.code(), Some(78), "{key}: {}", String::from_utf8_lossy(&run.stderr));
    }
}

/// Defect 8: `--test | head` exited 0 with `written=0` and no error; a reader
/// that goes away is now an error (exit 2), reported once.
#[test]
fn a_reader_closing_stdout_is_an_error_reported_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let rules = dir.path().join("rules.jsonl");
    write(&rules, "{\"rule_id\":\"1\",\"value\":\"happy\"}\n");
    let p = pipeline(dir.path(), "type = \"synthetic\"\ncount = 1000000", &rules, "type = \"stdout\"");
    let mut child = Command::new(traptor_host())
        .args(["--pipeline", p.to_str().expect("utf8"), "--test"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    for _ in 0..10 {
        line.clear();
        std::io::BufRead::read_line(&mut stdout, &mut line).expect("a line");
        assert!(line.starts_with('{'), "{line}");
    }
    drop(stdout); // as `head -10` does
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("stderr");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.matches("Broken pipe").count(), 1, "{stderr}");
    assert!(stderr.contains("stdout"), "{stderr}");
}

// ---- issue 13 (part): settings and identity from the environment -----------------------

/// One file for a fleet: `${VAR}` / `${VAR:-default}` filled from the
/// environment, `TRAPTOR_TYPE`/`TRAPTOR_ID` (and `--type`/`--id`) over
/// `[traptor]`; an unset variable is exit 78 with its name and line;
/// `validate --print` shows the file as it will run, passwords masked.
#[test]
fn one_file_serves_many_collectors_through_the_environment() {
    let dir = tempfile::tempdir().expect("tmp");
    write(&dir.path().join("rules.jsonl"), "{\"rule_id\":\"1\",\"value\":\"happy\"}\n");
    let tweet = compact(&fixture("upstream-traptor/track_tweet.json"));
    write(&dir.path().join("in.jsonl"), &format!("{tweet}\n"));
    let p = dir.path().join("fleet.toml");
    write(
        &p,
        "[traptor]\ntype = \"track\"\nid = 0\nstats_interval_secs = 0\n\n[source]\ntype = \"replay\"\n\
         path = \"${INPUT:-in.jsonl}\"\n\n[rules]\ntype = \"file\"\npath = \"rules.jsonl\"\n\n[sink]\ntype = \"file\"\n\
         path = \"out-${SHARD}.jsonl\"\n\n[coordination]\nurl = \"redis://collector:${REDIS_PASS:-hunter2}@127.0.0.1:1\"\n",
    );
    let path = p.to_str().expect("utf8");
    let run = |args: &[&str], envs: &[(&str, &str)]| traptor_tests::run_host_with(args, envs, LIMIT);

    // Unset without a default: 78, naming it and its line.
    let out = run(&["validate", "--pipeline", path], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(78), "{stdout}");
    assert!(stdout.contains("SHARD") && stdout.contains("line 16"), "{stdout}");

    // The file as it will run: identity from the environment, then the command line.
    let out = run(
        &["validate", "--pipeline", path, "--print", "--id", "9"],
        &[("SHARD", "a"), ("TRAPTOR_TYPE", "follow"), ("TRAPTOR_ID", "4")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("traptor follow:9"), "--id over TRAPTOR_ID, TRAPTOR_TYPE over the file: {stdout}");
    assert!(stdout.contains("out-a.jsonl") && stdout.contains("in.jsonl"), "{stdout}");
    assert!(stdout.contains("redis://collector:*****@127.0.0.1:1") && !stdout.contains("hunter2"), "{stdout}");

    // Two collectors from one file (coordination dropped: no Redis here).
    let text = std::fs::read_to_string(&p).expect("read");
    write(&p, &text[..text.find("[coordination]").expect("section")]);
    for (shard, id) in [("a", "5"), ("b", "6")] {
        let out = run(&["--pipeline", path], &[("SHARD", shard), ("TRAPTOR_ID", id)]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let lines = json_lines(&std::fs::read(dir.path().join(format!("out-{shard}.jsonl"))).expect("output"));
        assert_eq!(lines[0]["traptor"]["id_str"], id.parse::<u64>().expect("number"));
    }
}

/// Operator niceties: shell completions and a manual page from the same
/// command-line definition.
#[test]
fn completions_and_the_manual_page_cover_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run_host(&["completions", shell], LIMIT);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shell}");
        assert!(
            text.contains("traptor-host") && text.contains("validate") && text.contains("--pipeline"),
            "{shell}: {text}"
        );
    }
    let out = run_host(&["manpage"], LIMIT);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.starts_with(".ie") || text.contains(".TH"), "{text}");
    assert!(text.contains("validate") && text.contains("generate"), "{text}");
    let bad = run_host(&["completions", "cmd.exe"], LIMIT);
    assert_eq!(bad.status.code(), Some(2));
}

/// Issue 13 (part): SIGHUP ended the process; now it reloads the rules at
/// once (no polling here) and reports a changed pipeline file as needing a
/// restart, and the run goes on.
#[test]
fn sighup_reloads_the_rules_at_once_and_keeps_running() {
    let dir = tempfile::tempdir().expect("tmp");
    write(&dir.path().join("rules.jsonl"), "{\"rule_id\":\"old\",\"value\":\"happy\"}\n");
    let tweet = compact(&fixture("upstream-traptor/track_tweet.json"));
    let input = dir.path().join("in.jsonl");
    write(&input, &format!("{tweet}\n"));
    let p = PipelineFile::new("type = \"replay\"\npath = \"in.jsonl\"\nfollow = true")
        .rules("type = \"file\"\npath = \"rules.jsonl\"\npoll_interval_ms = 3600000")
        .write(dir.path());
    let host = traptor_tests::Host::spawn(&["--pipeline", p.to_str().expect("utf8")], &[]);
    let out = dir.path().join("out.jsonl");
    let lines = |n: usize| {
        traptor_tests::wait_for("output", LIMIT, || {
            let text = std::fs::read(&out).unwrap_or_default();
            (text.iter().filter(|&&b| b == b'\n').count() >= n).then(|| json_lines(&text))
        })
    };
    assert_eq!(rule_ids(&lines(1)[0]), ["old"]);
    write(&dir.path().join("rules.jsonl"), "{\"rule_id\":\"new\",\"value\":\"birthday\"}\n");
    let hup = || Command::new("kill").args(["-HUP", &host.pid().to_string()]).status().expect("kill");
    hup();
    host.wait_log("matcher swapped", LIMIT);
    let mut f = std::fs::OpenOptions::new().append(true).open(&input).expect("open");
    writeln!(f, "{tweet}").expect("append");
    assert_eq!(rule_ids(&lines(2)[1]), ["new"]);
    // A changed pipeline file is reported, not applied.
    let text = std::fs::read_to_string(&p).expect("read");
    write(&p, &text.replace("[sink]", "[pipeline]\nbatch_size = 64\n\n[sink]"));
    hup();
    host.wait_log("restart to apply it", LIMIT);
    let (status, log) = host.stop();
    assert!(status.success(), "{log}");
}

/// Issue 11: the admin listener. 5,000 replayed posts, then `/metrics`
/// parsed by the Prometheus project's parser in both formats: the counters
/// equal what went through; `/health` and `/ready` answer 200 with their
/// checks; a bad address is refused by `validate`, a taken port stops the run.
#[test]
fn metrics_health_and_ready_tell_what_went_through() {
    use traptor_tests::{free_port, http_get, parse_metrics, sample};
    let dir = tempfile::tempdir().expect("tmp");
    let corpus = dir.path().join("posts.jsonl");
    let made =
        run_host(&["generate", "--count", "5000", "--seed", "5", "--output", corpus.to_str().expect("utf8")], LIMIT);
    assert!(made.status.success());
    let rules = dir.path().join("rules.jsonl");
    write(&rules, "{\"rule_id\":\"1\",\"value\":\"happy\"}\n{\"rule_id\":\"2\",\"value\":\"the\"}\n");
    // follow: the replay waits at the end of the file, so the collector stays up.
    let p = pipeline(
        dir.path(),
        "type = \"replay\"\npath = \"posts.jsonl\"\nfollow = true",
        &rules,
        "type = \"file\"\npath = \"out.jsonl\"",
    );
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let host = traptor_tests::Host::spawn(&["--pipeline", p.to_str().expect("utf8"), "--admin", &addr], &[]);
    host.wait_log("admin endpoint", LIMIT);
    let out = dir.path().join("out.jsonl");
    let lines = || std::fs::read_to_string(&out).map(|t| t.lines().count()).unwrap_or(0);
    traptor_tests::wait_for("5000 posts written", LIMIT, || (lines() >= 5000).then_some(()));
    let posts = json_lines(&std::fs::read(&out).expect("out"));
    let matched = posts.iter().filter(|p| rule_ids(p).iter().any(|r| r == "1" || r == "2")).count() as f64;
    let (status, text) = http_get(port, "/metrics", "text/plain");
    assert_eq!(status, 200, "{text}");
    let (status, om) = http_get(port, "/metrics", "application/openmetrics-text; version=1.0.0");
    assert_eq!(status, 200);
    assert!(om.trim_end().ends_with("# EOF"), "{om}");
    for samples in [parse_metrics(&text, false), parse_metrics(&om, true)] {
        let get = |name: &str, labels: &[(&str, &str)]| sample(&samples, name, labels).unwrap_or(f64::NAN);
        let (m, u) = (
            get("traptor_posts_total", &[("result", "matched")]),
            get("traptor_posts_total", &[("result", "unmatched")]),
        );
        assert_eq!(m + u, 5000.0, "every post counted once");
        assert_eq!(m, matched, "matched = posts written with a rule");
        assert_eq!(get("traptor_sink_records_total", &[]), 5000.0);
        assert_eq!(get("traptor_malformed_total", &[]), 0.0);
        assert_eq!(get("traptor_rules", &[("type", "track")]), 2.0);
        assert_eq!(get("traptor_build_info", &[("type", "track"), ("id", "7")]), 1.0);
        // One latency observation per record written; +Inf holds them all.
        assert_eq!(get("traptor_end_to_end_latency_seconds_count", &[]), 5000.0);
        assert_eq!(get("traptor_end_to_end_latency_seconds_bucket", &[("le", "+Inf")]), 5000.0);
        assert!(get("traptor_end_to_end_latency_seconds_sum", &[]) > 0.0);
    }
    // Per-rule counts: the busiest rule first, its total = posts written with it.
    let (status, body) = http_get(port, "/api/rules?limit=1", "*/*");
    assert_eq!(status, 200, "{body}");
    let top: serde_json::Value = serde_json::from_str(&body).expect("json");
    let top = top.as_array().expect("array");
    assert_eq!(top.len(), 1, "{body}");
    let id = top[0]["rule_id"].as_str().expect("rule_id").to_owned();
    let with = posts.iter().filter(|p| rule_ids(p).contains(&id)).count() as u64;
    assert_eq!(top[0]["matches_total"].as_u64(), Some(with), "{body}");
    assert_eq!(top[0]["matches_15m"].as_u64(), Some(with), "{body}");
    let (_, all) = http_get(port, "/api/rules", "*/*");
    let all: serde_json::Value = serde_json::from_str(&all).expect("json");
    let ids: Vec<&str> = all.as_array().expect("array").iter().filter_map(|r| r["rule_id"].as_str()).collect();
    assert_eq!(ids.len(), 2, "{all}");
    let (status, health) = http_get(port, "/health", "*/*");
    assert_eq!(status, 200, "{health}");
    let (status, ready) = http_get(port, "/ready", "*/*");
    assert_eq!(status, 200, "{ready}");
    let ready: serde_json::Value = serde_json::from_str(&ready).expect("json");
    let names: Vec<&str> =
        ready["checks"].as_array().expect("checks").iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["rules", "source", "stages", "sink"], "{ready}");
    // The port is taken now: a second collector stops at once, naming the key.
    let again = run_host(&["--pipeline", p.to_str().expect("utf8"), "--admin", &addr], LIMIT);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("admin.listen") && stderr.contains(&addr), "{stderr}");
    let (status, _) = host.stop();
    assert!(status.success());
    // Not an address: refused before running.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, format!("{}\n[admin]\nlisten = \"localhost\"\n", std::fs::read_to_string(&p).expect("read")))
        .expect("write");
    let v = run_host(&["validate", "--pipeline", bad.to_str().expect("utf8")], LIMIT);
    let text = String::from_utf8_lossy(&v.stdout);
    assert_eq!(v.status.code(), Some(78), "{text}");
    assert!(text.contains("admin.listen"), "{text}");
}

/// Issue 11: the dashboard in a real browser (headless Chromium): after its
/// script ran, the DOM shows the live post count; a screenshot is saved to
/// `target/test-artifacts/dashboard.png` (the README's picture comes from it).
#[test]
fn the_dashboard_shows_live_counts_in_a_real_browser() {
    use traptor_tests::{free_port, http_get};
    let dir = tempfile::tempdir().expect("tmp");
    let rules = dir.path().join("rules.jsonl");
    write(&rules, "{\"rule_id\":\"coffee-fans\",\"value\":\"coffee\"}\n{\"rule_id\":\"happy\",\"value\":\"happy\"}\n");
    let p = pipeline(dir.path(), "type = \"synthetic\"\nrate = 400", &rules, "type = \"file\"\npath = \"out.jsonl\"");
    // A stage, so the stage table shows what it costs per post (issue 29).
    let stage = format!("\n[[stages]]\nname = \"sentiment\"\nplugin = {:?}\n", traptor_tests::plugin_wasm("sentiment"));
    std::fs::write(&p, std::fs::read_to_string(&p).expect("pipeline") + &stage).expect("write");
    let port = free_port();
    let host = traptor_tests::Host::spawn(
        &["--pipeline", p.to_str().expect("utf8"), "--admin", &format!("127.0.0.1:{port}")],
        &[],
    );
    host.wait_log("admin endpoint", LIMIT);
    std::thread::sleep(Duration::from_millis(2500)); // a few samples for the sparkline
    let (status, page) = http_get(port, "/", "text/html");
    assert_eq!(status, 200);
    assert!(!page.contains("http://") && !page.contains("https://"), "no external assets");
    let url = format!("http://127.0.0.1:{port}/");
    let chromium = |args: &[&str]| {
        // A first start of Chromium on a fresh machine can fail to load; try again.
        (0..3)
            .find_map(|_| {
                let out = Command::new("chromium")
                    .args([
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--hide-scrollbars",
                        "--virtual-time-budget=3000",
                    ])
                    .args(args)
                    .arg(&url)
                    .output()
                    .expect("chromium (scripts/test.sh installs it)");
                out.status.success().then_some(out.stdout)
            })
            .expect("chromium loaded the dashboard")
    };
    let dom = String::from_utf8_lossy(&chromium(&["--dump-dom"])).into_owned();
    let shown = dom
        .split("id=\"posts\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .map(|s| s.replace(',', ""))
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no post count in the DOM: {dom}"));
    assert!(shown > 0, "the script filled in the live count: {shown}");
    assert!(dom.contains(">coffee-fans<"), "the top rules table: {dom}");
    let (status, body) = http_get(port, "/api/stats", "application/json");
    assert_eq!(status, 200);
    let st: serde_json::Value = serde_json::from_str(&body).expect("json");
    let stage = &st["stages"][0];
    assert_eq!(stage["name"], "sentiment", "{body}");
    assert_eq!(stage["reads"], serde_json::json!(["text"]), "{body}");
    assert_eq!(stage["abi"], traptor_sdk::ABI_VERSION, "{body}");
    let per_post = stage["us_per_post"].as_f64().expect("us_per_post");
    let parts = &stage["parts_us_per_post"];
    assert!(per_post > 0.0 && parts["guest"].as_f64().expect("guest") > 0.0, "{body}");
    let row = dom.split("id=\"stages\"").nth(1).unwrap_or_default();
    assert!(row.contains(">sentiment<"), "the stage table: {row:.400}");
    let shots = repo_root().join("target/test-artifacts");
    std::fs::create_dir_all(&shots).expect("mkdir");
    let png = shots.join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    chromium(&["--window-size=1200,700", &format!("--screenshot={}", png.display())]);
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "{} bytes", bytes.len());
    let (status, _) = host.stop();
    assert!(status.success());
}

/// Issue 11, item 6: JSON log lines carry the collector's identity and
/// version (as the original tagged its ELK records).
#[test]
fn json_log_lines_carry_the_collector_identity_and_version() {
    let dir = tempfile::tempdir().expect("tmp");
    let rules = dir.path().join("rules.jsonl");
    write(&rules, "{\"rule_id\":\"1\",\"value\":\"happy\"}\n");
    let p = pipeline(dir.path(), "type = \"synthetic\"\ncount = 50", &rules, "type = \"file\"\npath = \"out.jsonl\"");
    let out = run_host(&["--pipeline", p.to_str().expect("utf8"), "--log-format", "json"], LIMIT);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> =
        stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert!(lines.iter().any(|l| l["message"] == "pipeline finished"), "{stderr}");
    for l in &lines {
        assert_eq!((l["traptor_type"].as_str(), l["traptor_id"].as_u64()), (Some("track"), Some(7)), "{l}");
        assert_eq!(l["version"], env!("CARGO_PKG_VERSION"), "{l}");
    }
}

/// Issue 11: 200 connections that send nothing (or half a request) hold
/// neither the admin endpoint nor the pipeline: every post is written and
/// `/metrics` still answers. (Throughput is measured by the bench scripts,
/// not here.)
#[test]
fn idle_and_half_open_admin_connections_hold_nothing() {
    use std::io::Write as _;
    use traptor_tests::{free_port, http_get};
    let dir = tempfile::tempdir().expect("tmp");
    let rules = dir.path().join("rules.jsonl");
    write(&rules, "{\"rule_id\":\"1\",\"value\":\"happy\"}\n");
    let p = pipeline(
        dir.path(),
        "type = \"synthetic\"\ncount = 20000\nrate = 10000",
        &rules,
        "type = \"file\"\npath = \"out.jsonl\"",
    );
    let port = free_port();
    let mut host = traptor_tests::Host::spawn(
        &["--pipeline", p.to_str().expect("utf8"), "--admin", &format!("127.0.0.1:{port}")],
        &[],
    );
    host.wait_log("admin endpoint", LIMIT);
    let idle: Vec<std::net::TcpStream> = (0..200)
        .map(|i| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
            if i % 2 == 1 {
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"); // and never the end of the headers
            }
            s
        })
        .collect();
    let (status, text) = http_get(port, "/metrics", "text/plain");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("traptor_posts_total"));
    let status = host.wait(LIMIT);
    assert!(status.success(), "{}", host.log());
    let written = std::fs::read_to_string(dir.path().join("out.jsonl")).expect("out").lines().count();
    assert_eq!(written, 20000);
    // Nor do they hold the exit (a graceful server waited for them).
    assert!(!host.log().contains("did not stop in time"), "{}", host.log());
    drop(idle);
}

/// Issue 12, point 4: a rule's `rate_limit` and `sample`, and `[limits.<tag>]`.
/// 5,000 posts paced at 1,000 a second, all matching three rules: the rule
/// limited to 100 posts/s gets 500 ± 10 %, the 10 % sample keeps the same
/// posts on two runs, the tag's 50 % sample applies to its rule; every post
/// is still written (one with no rule left would be "Not Found").
#[test]
fn rule_rate_limits_and_samples_hold_and_samples_repeat() {
    let dir = tempfile::tempdir().expect("tmp");
    let posts: String = (0..5_000)
        .map(|i| format!("{}\n", serde_json::json!({"id_str": format!("{}", 1_000_000 + i), "text": "coffee time"})))
        .collect();
    write(&dir.path().join("in.jsonl"), &posts);
    let rules = dir.path().join("rules.jsonl");
    write(
        &rules,
        concat!(
            "{\"rule_id\":\"capped\",\"value\":\"coffee\",\"rate_limit\":100}\n",
            "{\"rule_id\":\"tenth\",\"value\":\"coffee\",\"sample\":\"0.1\"}\n",
            "{\"rule_id\":\"half\",\"value\":\"time\",\"tag\":\"noisy\"}\n",
        ),
    );
    let p = pipeline(
        dir.path(),
        "type = \"replay\"\npath = \"in.jsonl\"\nrate = 1000",
        &rules,
        "type = \"file\"\npath = \"out.jsonl\"",
    );
    append_table(&p, "[limits.noisy]\nsample = 0.5\n");
    let run = || {
        let (lines, stderr) = run_to_file(&p, &dir.path().join("out.jsonl"));
        assert_eq!(lines.len(), 5_000, "every post is written");
        let with = |rule: &str| -> Vec<String> {
            lines
                .iter()
                .filter(|l| rule_ids(l).iter().any(|r| r == rule))
                .map(|l| l["id_str"].as_str().expect("id").to_owned())
                .collect()
        };
        (with("capped"), with("tenth"), with("half"), stderr)
    };
    let (capped, tenth, half, stderr) = run();
    // The replay is paced to 5 s; on a loaded machine the run can take
    // longer, and the bucket refills for as long as it runs.
    let secs: f64 = stderr
        .lines()
        .find(|l| l.contains("pipeline finished"))
        .and_then(|l| l.split("seconds=").nth(1)?.split_whitespace().next()?.trim_matches('"').parse().ok())
        .unwrap_or(5.0);
    let most = (100.0 * secs.max(5.0) * 1.1) as usize;
    assert!((450..=most).contains(&capped.len()), "rate_limit 100/s over {secs} s: {}", capped.len());
    assert!((400..=600).contains(&tenth.len()), "sample 0.1 of 5,000: {}", tenth.len());
    assert!((2_250..=2_750).contains(&half.len()), "the tag's sample 0.5: {}", half.len());
    let summary = stderr.lines().find(|l| l.contains("pipeline finished")).expect("summary");
    let sampled = 10_000 - tenth.len() - half.len();
    assert!(summary.contains(&format!("rule_limited={}", 5_000 - capped.len())), "{summary}");
    assert!(summary.contains(&format!("rule_sampled_out={sampled}")), "{summary}");
    assert!(stderr.lines().any(|l| l.contains("rule limits") && l.contains("rule_id=capped")), "{stderr}");

    let (_, tenth_again, half_again, _) = run();
    assert_eq!(tenth, tenth_again, "a sample keeps the same posts on every run");
    assert_eq!(half, half_again);
}

/// Issue 12, point 3 (local part): `[dedup]` drops a post seen before in the
/// same run and, through its snapshot, in an earlier run; counted.
#[test]
fn dedup_drops_posts_seen_before_in_this_run_and_the_last() {
    let dir = tempfile::tempdir().expect("tmp");
    let post = |i: u32| format!("{}\n", serde_json::json!({"id_str": format!("{}", 500 + i), "text": "coffee"}));
    let posts: String = (0..300).chain(0..50).map(post).collect();
    write(&dir.path().join("in.jsonl"), &posts);
    let rules = dir.path().join("rules.jsonl");
    write(&rules, "{\"rule_id\":\"c\",\"value\":\"coffee\"}\n");
    let p =
        pipeline(dir.path(), "type = \"replay\"\npath = \"in.jsonl\"", &rules, "type = \"file\"\npath = \"out.jsonl\"");
    append_table(&p, "[dedup]\nttl_secs = 3600\nsnapshot = \"dedup.bin\"\n");
    let run = || {
        let (lines, stderr) = run_to_file(&p, &dir.path().join("out.jsonl"));
        let summary = stderr.lines().find(|l| l.contains("pipeline finished")).expect("summary").to_owned();
        (lines, summary, stderr)
    };
    let (first, summary, _) = run();
    assert_eq!(first.len(), 300, "each post once");
    let ids: std::collections::HashSet<&str> = first.iter().map(|l| l["id_str"].as_str().expect("id")).collect();
    assert_eq!(ids.len(), 300);
    assert!(summary.contains("duplicates=50"), "{summary}");
    assert!(dir.path().join("dedup.bin").exists(), "the snapshot is written at the end");

    let (second, summary, stderr) = run();
    assert!(second.is_empty(), "everything was written by the first run: {}", second.len());
    assert!(summary.contains("duplicates=350"), "{summary}");
    assert!(stderr.contains("dedup ids read back"), "{stderr}");

    // A snapshot that is not one stops the run with 78, naming the file.
    write(&dir.path().join("dedup.bin"), "not a snapshot");
    let out = run_host(&["--pipeline", p.to_str().expect("utf8")], LIMIT);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dedup.bin"));
}

/// Issue 23, point 6: every recorded fixture of every format, through the
/// replay source and the real binary, with nothing malformed and every post
/// out once (pretty-printed files are put on one line each; the X v2 pages
/// are cut into stream messages).
#[test]
fn every_recorded_fixture_replays_with_nothing_malformed() {
    let read = |rel: &str| std::fs::read_to_string(fixture(rel)).expect("fixture");
    let mut v1 = Vec::new();
    let dir_v1 = fixture("upstream-traptor");
    let mut names: Vec<std::path::PathBuf> = std::fs::read_dir(&dir_v1)
        .expect("dir")
        .chain(std::fs::read_dir(dir_v1.join("extended_tweets")).expect("dir"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json") && !p.to_string_lossy().ends_with("_rules.json"))
        .collect();
    names.sort();
    for p in &names {
        v1.push(compact(p));
    }
    let mut v2 = Vec::new();
    for f in ["x-v2/brexit.jsonl", "x-v2/two_tweets.jsonl"] {
        for page in read(f).lines() {
            let page: serde_json::Value = serde_json::from_str(page).expect("page");
            for t in page["data"].as_array().into_iter().flatten() {
                v2.push(serde_json::json!({"data": t, "includes": page["includes"]}).to_string());
            }
        }
    }
    v2.extend(read("x-v2/early_v2_numeric_rule_ids.jsonl").lines().map(|l| l.trim_end().to_owned()));
    let jetstream: Vec<String> = read("jetstream/expected_v1.jsonl").lines().map(str::to_owned).collect();
    let mastodon = vec![compact(&fixture("mastodon/status_example.json"))];
    // (format, records, posts among them)
    let cases = [("twitter_v1", v1, 7), ("x_v2", v2, 108), ("jetstream", jetstream, 32), ("mastodon", mastodon, 1)];
    for (format, records, posts) in cases {
        let dir = tempfile::tempdir().expect("tmp");
        write(&dir.path().join("in.jsonl"), &(records.join("\n") + "\n"));
        write(&dir.path().join("rules.jsonl"), "{\"rule_id\":\"r\",\"value\":\"the\",\"rule_type\":\"track\"}\n");
        let p = PipelineFile::new(&format!("type = \"replay\"\npath = \"in.jsonl\"\nformat = \"{format}\""))
            .write(dir.path());
        let (lines, log) = run_to_file(&p, &dir.path().join("out.jsonl"));
        assert!(log.contains("malformed=0"), "{format}: {log}");
        assert!(log.contains(&format!(" posts={posts} ")), "{format}: {posts} posts expected: {log}");
        // Only early v2's numeric rule ids surprise a decoder (converted).
        let surprised: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("unexpected JSON type"))
            .filter_map(|l| Some(l.split("field=").nth(1)?.split_whitespace().next()?.trim_matches('"')))
            .collect();
        let allowed: &[&str] = if format == "x_v2" { &["matching_rule.id"] } else { &[] };
        assert!(surprised.iter().all(|f| allowed.contains(f)), "{format}: surprises {surprised:?}: {log}");
        let enveloped = lines.iter().filter(|v| v["traptor"].is_object()).count();
        assert_eq!(enveloped, posts, "{format}: every post written once");
    }
}

/// Polygon rules (issue 28), through the real binary: a WKT square with a
/// hole and Chile from the shipped Natural Earth outlines (imported with
/// `rules import --geojson … --print`). A point in the hole, a place box
/// inside the hole and a point in Argentina inside Chile's envelope are not
/// attributed, and are counted as outside_polygon.
#[test]
fn polygon_rules_attribute_points_and_places_exactly() {
    let dir = tempfile::tempdir().expect("tmp");
    let countries = repo_root().join("examples/places/countries.geojson");
    let o = run_host(
        &["rules", "import", "--geojson", countries.to_str().expect("utf8"), "--property", "NAME", "--print"],
        LIMIT,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).expect("utf8");
    assert!(text.lines().count() >= 170, "one rule per country");
    let chile = text.lines().find(|l| l.contains("\"rule_id\":\"geo-chile\"")).expect("Chile");
    let donut = r#"{"rule_id":"donut","value":"POLYGON((0 0, 10 0, 10 10, 0 10, 0 0), (4 4, 6 4, 6 6, 4 6, 4 4))","rule_type":"locations"}"#;
    write(&dir.path().join("rules.jsonl"), &format!("{donut}\n{chile}\n"));
    let point = |id: u32, x: f64, y: f64| {
        format!(
            r#"{{"id_str":"{id}","text":"here","user":{{"id_str":"5"}},"coordinates":{{"type":"Point","coordinates":[{x},{y}]}}}}"#
        )
    };
    let place = |id: u32, w: f64, s: f64, e: f64, n: f64| {
        format!(
            r#"{{"id_str":"{id}","text":"near","user":{{"id_str":"5"}},"place":{{"bounding_box":{{"type":"Polygon","coordinates":[[[{w},{s}],[{w},{n}],[{e},{n}],[{e},{s}]]]}}}}}}"#
        )
    };
    let posts = [
        point(1, 2.0, 2.0),             // in the square
        point(2, 5.0, 5.0),             // in the hole
        point(3, 4.0, 5.0),             // on the hole's edge: inside
        place(4, 4.5, 4.5, 5.5, 5.5),   // a place inside the hole
        place(5, 9.0, 9.0, 12.0, 12.0), // a place across the square's corner
        point(6, -70.65, -33.45),       // Santiago de Chile
        point(7, -68.83, -32.89),       // Mendoza, Argentina: in Chile's envelope, not in Chile
        point(8, 50.0, 50.0),           // nowhere near
    ];
    write(&dir.path().join("in.jsonl"), &(posts.join("\n") + "\n"));
    let p = pipeline(
        dir.path(),
        "type = \"replay\"\npath = \"in.jsonl\"",
        &dir.path().join("rules.jsonl"),
        "type = \"file\"\npath = \"out.jsonl\"",
    );
    let (lines, stderr) = run_to_file(&p, &dir.path().join("out.jsonl"));
    let ids: Vec<Vec<String>> = lines.iter().map(rule_ids).collect();
    let want: [&[&str]; 8] = [
        &["donut"],
        &["Not Found"],
        &["donut"],
        &["Not Found"],
        &["donut"],
        &["geo-chile"],
        &["Not Found"],
        &["Not Found"],
    ];
    assert_eq!(ids, want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
    let summary = stderr.lines().find(|l| l.contains("pipeline finished")).expect("summary");
    assert!(summary.contains("outside_polygon=3"), "{summary}");
    // A post names a polygon rule by digest, with its other fields; the
    // geometry (kilobytes for a country) is not copied into every post.
    let entry = |i: usize| lines[i]["traptor"]["collection_rules"][0].clone();
    assert!(entry(0)["rule_value"].as_str().is_some_and(|v| v.starts_with("POLYGON sha256:")), "{}", entry(0));
    assert_eq!(entry(0)["value"], entry(0)["rule_value"]);
    assert_eq!(entry(0)["rule_type"], "locations");
    assert!(entry(5)["rule_value"].as_str().is_some_and(|v| v.starts_with("MULTIPOLYGON sha256:")), "{}", entry(5));
    assert_eq!(entry(5)["name"], "Chile");
    assert!(lines[5].to_string().len() < 1024, "{}", lines[5]);
    // `validate` reports each polygon and its v1.1 cover.
    let o = run_host(&["validate", "--pipeline", p.to_str().expect("utf8")], LIMIT);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("rule \"geo-chile\": polygon of") && out.contains("% of the boxes' area outside"), "{out}");
}

/// A broken polygon is refused naming the rule's line and the reason; the
/// other rules load.
#[test]
fn a_broken_polygon_rule_is_named_with_its_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        &dir.path().join("rules.jsonl"),
        concat!(
            "{\"rule_id\":\"ok\",\"value\":\"POLYGON((0 0, 1 0, 1 1, 0 0))\",\"rule_type\":\"locations\"}\n",
            "{\"rule_id\":\"open\",\"value\":\"POLYGON((0 0, 1 0, 1 1, 0 1))\",\"rule_type\":\"locations\"}\n",
            "{\"rule_id\":\"bowtie\",\"value\":\"{\\\"type\\\":\\\"Polygon\\\",\\\"coordinates\\\":[[[0,0],[2,2],[2,0],[0,2],[0,0]]]}\",\"rule_type\":\"locations\"}\n",
        ),
    );
    write(&dir.path().join("in.jsonl"), "");
    let p = pipeline(
        dir.path(),
        "type = \"replay\"\npath = \"in.jsonl\"",
        &dir.path().join("rules.jsonl"),
        "type = \"stdout\"",
    );
    let o = run_host(&["validate", "--pipeline", p.to_str().expect("utf8")], LIMIT);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(78), "{out}");
    assert!(out.contains("rules: 1 valid"), "{out}");
    assert!(out.contains("rules.jsonl:2: rule \"open\": locations polygon") && out.contains("not closed"), "{out}");
    assert!(out.contains("rules.jsonl:3: rule \"bowtie\"") && out.contains("self-intersection"), "{out}");
}
