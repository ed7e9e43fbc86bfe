//! End-to-end: WebAssembly stages in the real host — faults, policies,
//! circuit breaking, validation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use traptor_tests::{PipelineFile, fixture, json_lines, plugin_wasm, plugin_wasm_of, run_host};

const LIMIT: Duration = Duration::from_secs(120);

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(posts: &[(&str, &str)]) -> Fixture {
        let dir = tempfile::tempdir().expect("tmp");
        let lines: String = posts
            .iter()
            .map(|(id, text)| format!("{}\n", serde_json::json!({"id_str": id, "text": text, "lang": "en"})))
            .collect();
        std::fs::write(dir.path().join("in.jsonl"), lines).expect("write");
        std::fs::write(dir.path().join("rules.jsonl"), "{\"rule_id\":\"r1\",\"value\":\"hello\"}\n").expect("write");
        Fixture { dir }
    }

    /// Posts with these ids and languages (text "x"), and no rules.
    fn with_langs(posts: &[(&str, &str)]) -> Fixture {
        let dir = tempfile::tempdir().expect("tmp");
        let lines: String = posts
            .iter()
            .map(|(id, lang)| format!("{}\n", serde_json::json!({"id_str": id, "text": "x", "lang": lang})))
            .collect();
        std::fs::write(dir.path().join("in.jsonl"), lines).expect("write");
        std::fs::write(dir.path().join("rules.jsonl"), "").expect("write");
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A pipeline with one stage section (`stage` is the TOML body after `[[stages]]`).
    fn pipeline(&self, stage: &str, batch_size: usize) -> PathBuf {
        PipelineFile::new("type = \"replay\"\npath = \"in.jsonl\"")
            .stage(stage)
            .dead_letter("type = \"file\"\npath = \"dead.jsonl\"")
            .tuning(&format!("batch_size = {batch_size}"))
            .tuning("workers = 2")
            .write(self.dir.path())
    }

    fn out(&self, name: &str) -> Vec<serde_json::Value> {
        json_lines(&std::fs::read(self.path(name)).unwrap_or_default())
    }
}

fn chaos_stage(on_error: &str, extra: &str) -> String {
    format!(
        "name = \"chaos\"\nplugin = {:?}\non_error = \"{on_error}\"\ntimeout_ms = 300\nmemory_limit_mib = 32\nconfig = {{ mode = \"chaos\" }}\n{extra}",
        plugin_wasm("chaos").display()
    )
}

fn stage_line<'a>(stderr: &'a str, stage: &str) -> &'a str {
    stderr
        .lines()
        .find(|l| l.contains("stage finished") && l.contains(&format!("stage={stage}")))
        .unwrap_or_else(|| panic!("no 'stage finished' line for {stage}: {stderr}"))
}

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.trim_matches('"').parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

fn ids(v: &[serde_json::Value]) -> Vec<String> {
    v.iter().map(|p| p["id_str"].as_str().unwrap_or("?").to_owned()).collect()
}

fn run(p: &Path) -> (std::process::Output, String) {
    let out = run_host(&["--pipeline", p.to_str().expect("utf8")], LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stderr)
}

const FAULTY: [(&str, &str); 9] = [
    ("1", "hello world"),
    ("2", "a post that loops #loop"),
    ("3", "hello again"),
    ("4", "a post that panics #panic"),
    ("5", "fine"),
    ("6", "a post that eats memory #oom"),
    ("7", "an #error for this one"),
    ("8", "please #drop me"),
    ("9", "the end"),
];

#[test]
fn faulty_plugin_never_takes_the_host_down_and_dead_letters_keep_the_posts() {
    let f = Fixture::new(&FAULTY);
    let (out, stderr) = run(&f.pipeline(&chaos_stage("dead_letter", ""), 1));
    assert!(out.status.success(), "{stderr}");
    let good = f.out("out.jsonl");
    assert_eq!(ids(&good), vec!["1", "3", "5", "9"], "{stderr}");
    for p in &good {
        let text = p["text"].as_str().expect("text");
        assert_eq!(p["traptor"]["enrichments"]["chaos"]["length"], text.chars().count());
    }
    assert_eq!(good[0]["traptor"]["collection_rules"][0]["rule_id"], "r1");
    let dead = f.out("dead.jsonl");
    assert_eq!(ids(&dead), vec!["2", "4", "6", "7"]);
    let err = |i: usize| dead[i]["traptor"]["dead_letter"]["error"].as_str().expect("error").to_owned();
    assert!(err(0).contains("time limit of 300 ms"), "{}", err(0));
    assert!(err(1).contains("trapped") && err(1).contains("asked to panic"), "{}", err(1));
    assert!(err(2).contains("memory limit"), "{}", err(2));
    assert!(err(3).contains("cannot process post 7"), "{}", err(3));
    assert_eq!(dead[0]["traptor"]["dead_letter"]["stage"], "chaos");
    let line = stage_line(&stderr, "chaos");
    assert_eq!(field(line, "timeouts"), 1, "{line}");
    assert_eq!(field(line, "traps"), 1, "{line}");
    assert_eq!(field(line, "out_of_memory"), 1, "{line}");
    assert_eq!(field(line, "errors"), 1, "{line}");
    assert_eq!(field(line, "dropped"), 1, "{line}");
    assert_eq!(field(line, "dead_lettered"), 4, "{line}");
    assert_eq!(field(line, "enriched"), 4, "{line}");
}

#[test]
fn skip_policy_passes_failed_posts_on_without_the_stage() {
    let f = Fixture::new(&FAULTY);
    let (out, stderr) = run(&f.pipeline(&chaos_stage("skip", ""), 1));
    assert!(out.status.success(), "{stderr}");
    let good = f.out("out.jsonl");
    assert_eq!(ids(&good), vec!["1", "2", "3", "4", "5", "6", "7", "9"]);
    assert!(good[1]["traptor"].get("enrichments").is_none(), "the failed stage added nothing");
    assert_eq!(good[0]["traptor"]["enrichments"]["chaos"]["length"], 11);
    assert!(f.out("dead.jsonl").is_empty());
    assert_eq!(field(stage_line(&stderr, "chaos"), "skipped"), 4);
}

#[test]
fn drop_policy_removes_failed_posts() {
    let f = Fixture::new(&FAULTY);
    let (out, stderr) = run(&f.pipeline(&chaos_stage("drop", ""), 1));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(ids(&f.out("out.jsonl")), vec!["1", "3", "5", "9"]);
    assert!(f.out("dead.jsonl").is_empty());
}

#[test]
fn fail_policy_stops_the_pipeline_with_exit_2() {
    let f = Fixture::new(&[("1", "hello"), ("2", "#panic"), ("3", "more")]);
    let (out, stderr) = run(&f.pipeline(&chaos_stage("fail", ""), 1));
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("stage \"chaos\" failed on post 2"), "{stderr}");
}

#[test]
fn a_stage_that_keeps_trapping_is_circuit_broken() {
    let posts: Vec<(String, String)> = (0..12).map(|i| (i.to_string(), format!("#panic number {i}"))).collect();
    let posts: Vec<(&str, &str)> = posts.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let f = Fixture::new(&posts);
    let stage = chaos_stage("skip", "circuit_breaker_failures = 3\ncircuit_breaker_cooldown_secs = 600\n");
    let p = f.pipeline(&stage, 1);
    // One worker, so failures are strictly consecutive.
    std::fs::write(&p, std::fs::read_to_string(&p).expect("read").replace("workers = 2", "workers = 1"))
        .expect("write");
    let (out, stderr) = run(&p);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(f.out("out.jsonl").len(), 12, "every post continues (skip)");
    let line = stage_line(&stderr, "chaos");
    assert_eq!(field(line, "circuit_opened"), 1, "{line}");
    assert_eq!(field(line, "traps"), 3, "only three batches reached the plugin: {line}");
    assert_eq!(field(line, "skipped"), 12, "{line}");
    assert!(stderr.contains("circuit opened"), "{stderr}");
}

#[test]
fn lang_filter_drops_other_languages() {
    let f = Fixture::with_langs(&[("1", "en"), ("2", "fr"), ("3", "en-GB"), ("4", "ja")]);
    let stage = format!(
        "name = \"langs\"\nplugin = {:?}\nconfig = {{ languages = [\"en\", \"ja\"] }}\n",
        plugin_wasm("lang_filter").display()
    );
    let (out, stderr) = run(&f.pipeline(&stage, 2));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(ids(&f.out("out.jsonl")), vec!["1", "3", "4"]);
    assert_eq!(field(stage_line(&stderr, "langs"), "dropped"), 1);
}

/// `lang_filter.wasm` as if built against the WIT package at `version`:
/// every `traptor:plugin/…@<current ABI>` name rewritten in place (same length, so
/// the binary stays valid — what a newer or older SDK would have written).
fn lang_filter_at_abi(dir: &Path, version: &str) -> PathBuf {
    let current = format!("@{}", traptor_sdk::ABI_VERSION);
    assert_eq!(version.len() + 1, current.len(), "same length only");
    let mut bytes = std::fs::read(plugin_wasm("lang_filter")).expect("lang_filter.wasm");
    let mut n = 0;
    for iface in ["host", "stage", "types"] {
        let from = format!("traptor:plugin/{iface}{current}").into_bytes();
        let to = format!("traptor:plugin/{iface}@{version}").into_bytes();
        let mut i = 0;
        while let Some(p) = bytes[i..].windows(from.len()).position(|w| w == from.as_slice()) {
            bytes[i + p..i + p + to.len()].copy_from_slice(&to);
            i += p + to.len();
            n += 1;
        }
    }
    assert!(n >= 3, "{n} names rewritten");
    let path = dir.join(format!("lang_filter-{version}.wasm"));
    std::fs::write(&path, bytes).expect("write");
    path
}

/// Issue 14: a component built for another patch (or, at 1.x, minor) of
/// the ABI runs; one built for an incompatible version is refused with
/// the versions named. The semver rule is the component model's.
#[test]
fn components_of_a_compatible_abi_version_run_and_others_are_refused() {
    let f = Fixture::with_langs(&[("1", "en"), ("2", "fr")]);
    let newer = lang_filter_at_abi(f.dir.path(), "0.2.9");
    let stage =
        |p: &Path| format!("name = \"langs\"\nplugin = {:?}\nconfig = {{ languages = [\"en\"] }}\n", p.display());
    let (out, stderr) = run(&f.pipeline(&stage(&newer), 2));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(ids(&f.out("out.jsonl")), vec!["1"], "the 0.2.9 component filtered: {stderr}");
    let inspect = run_host(&["plugin", "inspect", newer.to_str().expect("utf8")], LIMIT);
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(text.contains("traptor:plugin/stage@0.2.9") && text.contains("runs ABI 0.2.x or 0.1.x"), "{text}");
    assert!(text.contains("reads:       lang\n"), "{text}");

    for incompatible in ["0.3.0", "1.1.0", "0.0.0"] {
        let p = lang_filter_at_abi(f.dir.path(), incompatible);
        let out = run_host(&["validate", "--pipeline", f.pipeline(&stage(&p), 2).to_str().expect("utf8")], LIMIT);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(78), "{incompatible}: {text}");
        assert!(
            text.contains("\"langs\"")
                && text.contains(&format!("built for the traptor plugin ABI {incompatible}"))
                && text.contains("runs ABI 0.2.x or 0.1.x")
                && text.contains(traptor_sdk::ABI_VERSION),
            "{text}"
        );
    }
}

/// Issue 29: a component built for ABI 0.1 (the `chaos` plugin as built
/// before 0.2, kept in tests/fixtures/plugins) still runs beside 0.2 ones —
/// its enrichments, drops, errors and traps handled as before — and so does
/// one built for a later 0.1 patch.
#[test]
fn components_built_for_abi_0_1_still_run() {
    let old = traptor_tests::fixture("plugins/chaos-abi-0.1.wasm");
    let f = Fixture::new(&[("1", "hello world"), ("2", "#panic"), ("3", "héllo"), ("4", "#error"), ("5", "#drop")]);
    let bytes = std::fs::read(&old).expect("fixture");
    let patched = bytes_replaced(&bytes, b"traptor:plugin/stage@0.1.0", b"traptor:plugin/stage@0.1.7");
    std::fs::write(f.path("chaos-0.1.7.wasm"), patched).expect("write");
    for plugin in [old.clone(), f.path("chaos-0.1.7.wasm")] {
        let stage = format!(
            "name = \"chaos\"\nplugin = {:?}\non_error = \"dead_letter\"\nconfig = {{ mode = \"chaos\" }}\n\n\
             [[stages]]\nname = \"langs\"\nplugin = {:?}\nconfig = {{ languages = [\"en\"] }}\n",
            plugin.display(),
            plugin_wasm("lang_filter").display()
        );
        let _ = std::fs::remove_file(f.path("out.jsonl"));
        let _ = std::fs::remove_file(f.path("dead.jsonl"));
        let (out, stderr) = run(&f.pipeline(&stage, 1));
        assert!(out.status.success(), "{stderr}");
        let good = f.out("out.jsonl");
        assert_eq!(ids(&good), vec!["1", "3"], "{stderr}");
        assert_eq!(good[1]["traptor"]["enrichments"]["chaos"]["length"], 5);
        assert_eq!(ids(&f.out("dead.jsonl")), vec!["2", "4"], "{stderr}");
        let line = stage_line(&stderr, "chaos");
        assert_eq!(field(line, "dropped"), 1, "{line}");
        assert_eq!(field(line, "traps"), 1, "{line}");
    }
    let inspect = run_host(&["plugin", "inspect", old.to_str().expect("utf8")], LIMIT);
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(text.contains("traptor:plugin/stage@0.1.0") && text.contains("rebuild on 0.2"), "{text}");
}

fn bytes_replaced(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = bytes.to_vec();
    let mut n = 0;
    let mut i = 0;
    while let Some(p) = out[i..].windows(from.len()).position(|w| w == from) {
        out[i + p..i + p + to.len()].copy_from_slice(to);
        i += p + to.len();
        n += 1;
    }
    assert!(n > 0, "{} not found", String::from_utf8_lossy(from));
    out
}

/// Issue 29: what a stage reads arrives intact through ABI 0.2's one buffer
/// per batch — a real recorded post (the original project's fixture) through
/// `chaos` in `echo` mode, which adds back every field it was sent.
#[test]
fn every_field_a_stage_reads_arrives_intact() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = Fixture { dir };
    let text = std::fs::read_to_string(traptor_tests::fixture("upstream-traptor/track_tweet.json")).expect("fixture");
    let post: serde_json::Value = serde_json::from_str(&text).expect("json");
    let line = post.to_string();
    std::fs::write(f.path("in.jsonl"), format!("{line}\n")).expect("write");
    std::fs::write(
        f.path("rules.jsonl"),
        "{\"rule_id\":\"b1\",\"tag\":\"birthdays\",\"value\":\"happy birthday\"}\n\
         {\"rule_id\":\"x\",\"value\":\"unrelated\"}\n",
    )
    .expect("write");
    let stage =
        format!("name = \"echo\"\nplugin = {:?}\nconfig = {{ mode = \"echo\" }}\n", plugin_wasm("chaos").display());
    let (out, stderr) = run(&f.pipeline(&stage, 4));
    assert!(out.status.success(), "{stderr}");
    let got = f.out("out.jsonl");
    assert_eq!(got.len(), 1, "{stderr}");
    let e = &got[0]["traptor"]["enrichments"]["echo"];
    let mentions: Vec<&str> = post["entities"]["user_mentions"]
        .as_array()
        .expect("mentions")
        .iter()
        .map(|m| m["screen_name"].as_str().expect("name"))
        .collect();
    let want = serde_json::json!({
        "raw_bytes": line.len(),
        "id": post["id_str"],
        "source": "twitter-v1",
        "text": post["text"],
        "author": [post["user"]["id_str"], post["user"]["screen_name"]],
        "lang": "en",
        "created_at": "2016-02-22T01:34:53+00:00",
        "hashtags": [],
        "mentions": mentions,
        "urls": [],
        "cashtags": [],
        "coordinates": null,
        "kinds": [false, true, false],
        "matched_rules": [["b1", "birthdays", "happy birthday", "track"]],
    });
    assert_eq!(e, &want, "{stderr}");
}

#[test]
fn validate_loads_plugins_checks_the_abi_and_the_config() {
    let f = Fixture::new(&[("1", "x")]);
    let validate = |stage: &str| {
        let p = f.pipeline(stage, 8);
        let out = run_host(&["validate", "--pipeline", p.to_str().expect("utf8")], LIMIT);
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, stdout) = validate(&format!(
        "name = \"langs\"\nplugin = {:?}\nconfig = {{ languages = [\"en\"] }}\n",
        plugin_wasm("lang_filter").display()
    ));
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("lang-filter") && stdout.contains("config accepted"), "{stdout}");

    let (code, stdout) = validate(&format!(
        "name = \"langs\"\nplugin = {:?}\nconfig = {{ langauges = [\"en\"] }}\n",
        plugin_wasm("lang_filter").display()
    ));
    assert_eq!(code, Some(78), "{stdout}");
    assert!(stdout.contains("stage \"langs\" refused its configuration") && stdout.contains("langauges"), "{stdout}");

    let (code, stdout) = validate(&format!("name = \"legacy\"\nplugin = {:?}\n", plugin_wasm("old_abi").display()));
    assert_eq!(code, Some(78), "{stdout}");
    assert!(stdout.contains("\"legacy\"") && stdout.contains("built for the traptor plugin ABI 0.0.9"), "{stdout}");

    let (code, stdout) = validate("name = \"ghost\"\nplugin = \"nope.wasm\"\n");
    assert_eq!(code, Some(78), "{stdout}");
    assert!(stdout.contains("\"ghost\"") && stdout.contains("nope.wasm"), "{stdout}");

    // Running a pipeline whose stage refuses its config exits 78 too.
    let p = f.pipeline(&format!("name = \"langs\"\nplugin = {:?}\n", plugin_wasm("lang_filter").display()), 8);
    let out = run_host(&["--pipeline", p.to_str().expect("utf8")], LIMIT);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`languages` is required"));
}

#[test]
fn plugin_run_prints_one_outcome_per_post() {
    let f = Fixture::new(&[("1", "hello"), ("2", "#error"), ("3", "#drop")]);
    let out = run_host(
        &[
            "plugin",
            "run",
            plugin_wasm("chaos").to_str().expect("utf8"),
            "--config",
            "mode=chaos",
            "--input",
            f.path("in.jsonl").to_str().expect("utf8"),
        ],
        LIMIT,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines[0], serde_json::json!({"id": "1", "outcome": "enrich", "fields": {"length": 5}}));
    assert_eq!(lines[1]["outcome"], "error");
    assert_eq!(lines[2]["outcome"], "drop");
    let out = run_host(&["plugin", "inspect", plugin_wasm("lang_filter").to_str().expect("utf8")], LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let abi = format!("traptor:plugin/stage@{}", traptor_sdk::ABI_VERSION);
    assert!(stdout.contains("lang-filter 0.1.0 (filter)") && stdout.contains(&abi), "{stdout}");
    assert!(stdout.contains("reads:       lang\n"), "{stdout}");
}

#[test]
fn python_and_javascript_plugins_run_in_the_real_host() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = Fixture { dir };
    std::fs::write(f.path("rules.jsonl"), "{\"rule_id\":\"c\",\"value\":\"coffee\"}\n").expect("write");
    let p = PipelineFile::new("type = \"synthetic\"\ncount = 600\nseed = 9")
        .stage(&format!(
            "name = \"keywords\"\nplugin = {:?}\nconfig = {{ top = 3 }}\ntimeout_ms = 5000",
            plugin_wasm("keywords").display()
        ))
        .stage(&format!(
            "name = \"emoji\"\nplugin = {:?}\nconfig = {{ top = 2 }}\ntimeout_ms = 5000",
            plugin_wasm("emoji").display()
        ))
        .write(f.dir.path());
    let (out, stderr) = run(&p);
    assert!(out.status.success(), "{stderr}");
    let posts = f.out("out.jsonl");
    assert_eq!(posts.len(), 600);
    let mut with_emoji = 0;
    for post in &posts {
        let e = &post["traptor"]["enrichments"];
        let kw = e["keywords"]["keywords"].as_array().expect("keywords list");
        assert!(kw.len() <= 3);
        let text = post["extended_tweet"]["full_text"].as_str().or(post["text"].as_str()).expect("text");
        for k in kw {
            let k = k.as_str().expect("string");
            assert!(text.to_lowercase().contains(k), "keyword {k:?} not in {text:?}");
        }
        assert!(e["keywords"]["word_count"].as_u64().is_some());
        let n = e["emoji"]["emoji_count"].as_u64().expect("emoji_count");
        if n > 0 {
            with_emoji += 1;
            assert!(!e["emoji"]["emoji"].as_array().expect("list").is_empty());
        }
    }
    assert!(with_emoji > 30, "synthetic posts carry emoji: {with_emoji}");
    for stage in ["keywords", "emoji"] {
        let line = stage_line(&stderr, stage);
        assert_eq!(field(line, "enriched"), 600, "{line}");
        assert_eq!(field(line, "traps"), 0, "{line}");
    }
}

#[test]
fn rust_example_plugins_enrich_in_the_real_host() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = Fixture { dir };
    std::fs::write(f.path("rules.jsonl"), "").expect("write");
    let p = PipelineFile::new("type = \"synthetic\"\ncount = 500\nseed = 4")
        .stage(&format!(
            "name = \"entities\"\nplugin = {:?}\nconfig = {{ only_if_missing = false }}",
            plugin_wasm("entities").display()
        ))
        .stage(&format!("name = \"sentiment\"\nplugin = {:?}", plugin_wasm("sentiment").display()))
        .write(f.dir.path());
    let (out, stderr) = run(&p);
    assert!(out.status.success(), "{stderr}");
    let posts = f.out("out.jsonl");
    assert_eq!(posts.len(), 500);
    let mut compared = 0;
    for post in &posts {
        let e = &post["traptor"]["enrichments"];
        let s = &e["sentiment"];
        let compound = s["compound"].as_f64().expect("compound");
        assert!((-1.0..=1.0).contains(&compound));
        assert!(["positive", "negative", "neutral"].contains(&s["label"].as_str().expect("label")));
        if post.get("retweeted_status").is_some() {
            continue; // a retweet's truncated text lists only the "RT @user" mention
        }
        // The extractor must find exactly the entities the generator placed.
        let source = post["extended_tweet"]["entities"].as_object().or(post["entities"].as_object()).expect("entities");
        let texts = |key: &str, field: &str| -> Vec<String> {
            source[key].as_array().expect("list").iter().map(|x| x[field].as_str().expect("str").to_owned()).collect()
        };
        let got = |key: &str| -> Vec<String> {
            e["entities"][key].as_array().expect("list").iter().map(|x| x.as_str().expect("str").to_owned()).collect()
        };
        assert_eq!(got("hashtags"), texts("hashtags", "text"), "{}", post["id_str"]);
        assert_eq!(got("mentions"), texts("user_mentions", "screen_name"), "{}", post["id_str"]);
        assert_eq!(got("cashtags"), texts("symbols", "text"), "{}", post["id_str"]);
        compared += 1;
    }
    assert!(compared > 300, "{compared}");
}

/// Issue 27: the Go and C examples, built by `plugin build`, on real posts:
/// the Bluesky Jetstream recording (posts in English, Japanese, Korean,
/// Russian …, links in facets) and the X v2 `#brexit` recording.
#[test]
fn go_and_c_example_plugins_enrich_real_posts() {
    let jetstream = std::fs::read_to_string(fixture("jetstream/expected_v1.jsonl")).expect("jetstream");
    let page: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("x-v2/brexit.jsonl")).expect("brexit")).expect("json");
    let x_v2: String = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|t| format!("{}\n", serde_json::json!({"data": t, "includes": page["includes"]})))
        .collect();
    let stages = [
        ("domains", plugin_wasm_of("go", "url-domains")),
        ("script", plugin_wasm_of("c", "script-detect")),
        ("noop-go", plugin_wasm_of("go", "noop")),
        ("noop-c", plugin_wasm_of("c", "noop")),
    ];
    let mut scripts = std::collections::BTreeMap::<String, Vec<String>>::new();
    let mut with_domains = 0;
    for (format, records, posts) in [("jetstream", jetstream, 32), ("x_v2", x_v2, 100)] {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("in.jsonl"), records).expect("write");
        std::fs::write(dir.path().join("rules.jsonl"), "").expect("write");
        let mut p = PipelineFile::new(&format!("type = \"replay\"\npath = \"in.jsonl\"\nformat = \"{format}\""));
        for (name, wasm) in &stages {
            p = p.stage(&format!("name = \"{name}\"\nplugin = {:?}\ntimeout_ms = 5000", wasm.display()));
        }
        let (out, stderr) = run(&p.write(dir.path()));
        assert!(out.status.success(), "{stderr}");
        // Jetstream's other events (likes, follows …) pass through too; its
        // posts are posts and reposts.
        let posts_out: Vec<serde_json::Value> = json_lines(&std::fs::read(dir.path().join("out.jsonl")).expect("out"))
            .into_iter()
            .filter(|p| {
                let c = p["commit"]["record"]["$type"].as_str();
                format != "jetstream" || matches!(c, Some("app.bsky.feed.post" | "app.bsky.feed.repost"))
            })
            .collect();
        assert_eq!(posts_out.len(), posts, "{format}: every post comes out: {stderr}");
        for post in &posts_out {
            let raw = post.to_string().to_lowercase();
            let e = &post["traptor"]["enrichments"];
            for d in e["domains"]["domains"].as_array().into_iter().flatten() {
                let d = d.as_str().expect("domain");
                assert!(!d.starts_with("www.") && d == d.to_lowercase() && raw.contains(d), "{d} in {raw}");
                with_domains += 1;
            }
            if let Some(s) = e["script"]["script"].as_str() {
                let lang = post["commit"]["record"]["langs"][0].as_str().or(post["data"]["lang"].as_str());
                scripts.entry(lang.unwrap_or("?").to_owned()).or_default().push(s.to_owned());
                assert!((1..=100).contains(&e["script"]["percent"].as_u64().expect("percent")), "{post}");
            }
        }
        for (name, _) in &stages {
            assert_eq!(field(stage_line(&stderr, name), "traps"), 0, "{name}: {stderr}");
        }
    }
    assert!(with_domains >= 20, "links found: {with_domains}");
    let all = |lang: &str, ok: &[&str]| {
        let got = scripts.get(lang).unwrap_or_else(|| panic!("no {lang} post enriched: {scripts:?}"));
        assert!(got.iter().all(|s| ok.contains(&s.as_str())), "{lang}: {got:?}");
    };
    all("ko", &["Hangul"]);
    all("ru", &["Cyrillic"]);
    all("ja", &["Han", "Hiragana", "Katakana"]);
    let en = &scripts["en"];
    assert!(en.iter().filter(|s| *s == "Latin").count() * 10 >= en.len() * 9, "English is Latin: {en:?}");
}

/// A Go stage's allocator must never call an import while the host lowers a
/// batch into it (the component model traps: "cannot leave component
/// instance"); Go's heap reads the clock when it grows, which only long runs
/// with large batches reach.
#[test]
fn go_stages_survive_a_long_run_with_large_batches() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("rules.jsonl"), "").expect("write");
    let mut p = PipelineFile::new("type = \"synthetic\"\ncount = 40000\nseed = 27").tuning("batch_size = 2000");
    for (name, lang, plugin) in
        [("domains", "go", "url-domains"), ("noop-go", "go", "noop"), ("script", "c", "script-detect")]
    {
        p = p.stage(&format!(
            "name = \"{name}\"\nplugin = {:?}\ntimeout_ms = 5000",
            plugin_wasm_of(lang, plugin).display()
        ));
    }
    let (out, stderr) = run(&p.write(dir.path()));
    assert!(out.status.success(), "{stderr}");
    for name in ["domains", "noop-go", "script"] {
        let line = stage_line(&stderr, name);
        assert_eq!(field(line, "traps"), 0, "{line}");
        assert_eq!(field(line, "posts"), 40000, "{line}");
    }
    assert!(field(stage_line(&stderr, "domains"), "enriched") > 1000, "{stderr}");
}

#[test]
fn every_example_pipeline_validates() {
    // Builds the plugins the examples name.
    plugin_wasm("chaos");
    let root = traptor_tests::repo_root();
    let mut files =
        vec![root.join("examples/demo.toml"), root.join("examples/replay.toml"), root.join("examples/enrich.toml")];
    for dir in ["plugins", "plugins/python", "plugins/js"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("ls").flatten() {
            let p = entry.path().join("pipeline.toml");
            if p.is_file() {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 9, "{files:?}");
    for f in files {
        let out = run_host(&["validate", "--pipeline", f.to_str().expect("utf8")], LIMIT);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{}: {stdout}", f.display());
    }
}

/// Issue 13, item 4: SIGHUP with only a stage's config changed rebuilds the
/// stages and swaps them between batches, while the source keeps running:
/// the new config applies from the next batch, every post comes out exactly
/// once. A change beyond `[[stages]]` is reported as needing a restart.
#[test]
fn sighup_swaps_changed_stages_between_batches_without_losing_a_post() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("rules.jsonl"), "").expect("write");
    // threshold 1: every label is "neutral"; threshold 0: none is.
    // Paced below full speed, batches are small (adaptive batching); each
    // batch runs with one stage set, whichever it is.
    let file = |threshold: &str, batch: &str| {
        PipelineFile::new("type = \"synthetic\"\ncount = 3000\nrate = 1500\nseed = 9")
            .tuning("workers = 1")
            .tuning(&format!("batch_size = {batch}"))
            .stage(&format!(
                "name = \"sentiment\"\nplugin = {:?}\nconfig = {{ threshold = {threshold} }}",
                plugin_wasm("sentiment").display()
            ))
            .write(dir.path())
    };
    let p = file("1.0", "50");
    let mut host = traptor_tests::Host::spawn(&["--pipeline", p.to_str().expect("utf8")], &[]);
    let pid = host.pid().to_string();
    let out = dir.path().join("out.jsonl");
    let lines = || std::fs::read_to_string(&out).map(|t| t.lines().count()).unwrap_or(0);
    traptor_tests::wait_for("300 posts", LIMIT, || (lines() >= 300).then_some(()));
    let hup = || {
        let ok = std::process::Command::new("kill").args(["-HUP", &pid]).status().expect("kill");
        assert!(ok.success());
    };
    file("0.0", "50");
    hup();
    host.wait_log("stages rebuilt", LIMIT);
    // Beyond the stages: reported, not applied.
    file("0.0", "60");
    hup();
    host.wait_log("restart to apply it", LIMIT);
    let status = host.wait(LIMIT);
    assert!(status.success(), "{}", host.log());
    let posts = json_lines(&std::fs::read(&out).expect("output"));
    let ids: Vec<&str> = posts.iter().map(|p| p["id_str"].as_str().expect("id")).collect();
    let unique: std::collections::HashSet<&&str> = ids.iter().collect();
    assert_eq!((posts.len(), unique.len()), (3000, 3000), "every post exactly once");
    let neutral: Vec<bool> =
        posts.iter().map(|p| p["traptor"]["enrichments"]["sentiment"]["label"] == "neutral").collect();
    let switch = neutral.iter().position(|n| !n).expect("the new config applied");
    assert!(switch >= 300, "the old config served what was written before the SIGHUP: {switch}");
    assert!(neutral[switch..].iter().all(|n| !n), "old config after the swap at {switch}");
    // The replaced stage's counters were logged when it was swapped out.
    assert_eq!(host.log().matches("stage finished").count(), 2, "{}", host.log());
}
