//! Issue 26: change with confidence — provenance in every envelope, rule
//! previews, signed plugins, a locked admin listener. Real processes,
//! real files, the real registry where one is needed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use traptor_tests::{PipelineFile, fixture, json_lines, plugin_wasm, run_host};

const LIMIT: Duration = Duration::from_secs(120);

/// Run the pipeline at `p` into a fresh `out.jsonl` beside it (the file sink appends).
fn run(p: &Path) -> String {
    let _ = std::fs::remove_file(p.with_file_name("out.jsonl"));
    let out = run_host(&["--pipeline", p.to_str().expect("utf8")], LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The rule-set hash as the docs define it: each rule's fields as compact
/// JSON with sorted keys, lines sorted, each ended by a line feed.
fn rule_set_sha256(rules: &[serde_json::Value]) -> String {
    let mut lines: Vec<String> = rules
        .iter()
        .map(|r| {
            let m: BTreeMap<String, serde_json::Value> = serde_json::from_value(r.clone()).expect("object");
            serde_json::to_string(&m).expect("json")
        })
        .collect();
    lines.sort();
    hex(lines.iter().map(|l| format!("{l}\n")).collect::<String>().as_bytes())
}

/// The real Bluesky recording through a stage: every post carries who made
/// it (collector, host), with which rules (count, hash), which stages (file
/// digest, version), from where (source, format, `time_us` cursor) and
/// which key (none here). The hash does not depend on the rules' order or
/// key order, and changes with a rule; `provenance = false` leaves it out.
#[test]
fn every_post_says_which_collector_rules_stages_and_position_made_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let events = std::fs::read_to_string(fixture("jetstream/expected_v1.jsonl")).expect("jetstream");
    std::fs::write(dir.path().join("in.jsonl"), &events).expect("write");
    let rules = [
        serde_json::json!({"rule_id": "1", "value": "the", "tag": "en", "rule_type": "track", "orig_type": "keyword"}),
        serde_json::json!({"rule_id": "2", "value": "日本", "tag": "ja \"quoted\"", "rule_type": "track"}),
        serde_json::json!({"rule_id": "3", "value": "bsky", "rule_type": "track", "description": "a\\b"}),
    ];
    let write_rules = |rules: &[serde_json::Value]| {
        let text: String = rules.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(dir.path().join("rules.jsonl"), text).expect("rules");
    };
    write_rules(&rules);
    let wasm = plugin_wasm("sentiment");
    let stage = format!("name = \"mood\"\nplugin = {:?}", wasm.display());
    let base = PipelineFile::new("type = \"replay\"\npath = \"in.jsonl\"\nformat = \"jetstream\"").id(4).stage(&stage);
    run(&base.clone().write(dir.path()));
    let out = json_lines(&std::fs::read(dir.path().join("out.jsonl")).expect("out"));
    let posts: Vec<&serde_json::Value> = out.iter().filter(|p| p.get("traptor").is_some()).collect();
    assert!(posts.len() >= 30, "{}", posts.len());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname").trim().to_owned();
    let expected_rules = rule_set_sha256(&rules);
    for p in &posts {
        let v = &p["traptor"]["provenance"];
        assert_eq!(v["collector"], serde_json::json!({"type": "track", "id": 4, "host": host}), "{v}");
        assert_eq!(v["rules"]["count"], 3, "{v}");
        assert_eq!(v["rules"]["sha256"], expected_rules.as_str(), "{v}");
        let s = &v["stages"][0];
        assert_eq!(s["name"], "mood");
        assert_eq!(s["plugin"], wasm.display().to_string());
        assert_eq!(s["digest"], format!("sha256:{}", hex(&std::fs::read(&wasm).expect("wasm"))));
        assert!(!s["version"].as_str().expect("version").is_empty(), "{s}");
        assert_eq!(v["stages"].as_array().map(Vec::len), Some(1));
        assert_eq!(v["source"]["name"], "replay", "{v}");
        assert_eq!(v["source"]["format"], "jetstream");
        assert_eq!(v["source"]["cursor"], p["time_us"], "the cursor is the event's own time_us: {v}");
        assert!(v["key"].is_null(), "{v}");
    }

    // Reordered rules, keys in another order: the same hash. One value changed: another.
    let reordered: Vec<serde_json::Value> = rules
        .iter()
        .rev()
        .map(|r| {
            let m = r.as_object().expect("object");
            serde_json::Value::Object(m.iter().rev().map(|(k, v)| (k.clone(), v.clone())).collect())
        })
        .collect();
    write_rules(&reordered);
    run(&base.clone().write(dir.path()));
    let out = json_lines(&std::fs::read(dir.path().join("out.jsonl")).expect("out"));
    let first = out.iter().find(|p| p.get("traptor").is_some()).expect("a post");
    assert_eq!(first["traptor"]["provenance"]["rules"]["sha256"], expected_rules.as_str());
    let mut changed = rules.to_vec();
    changed[2]["value"] = "bluesky".into();
    write_rules(&changed);
    run(&base.clone().write(dir.path()));
    let out = json_lines(&std::fs::read(dir.path().join("out.jsonl")).expect("out"));
    let first = out.iter().find(|p| p.get("traptor").is_some()).expect("a post");
    let sha = first["traptor"]["provenance"]["rules"]["sha256"].as_str().expect("sha");
    assert_eq!(sha, rule_set_sha256(&changed));
    assert_ne!(sha, expected_rules);

    // Off: no provenance, the rest as before.
    run(&base.traptor("provenance = false").write(dir.path()));
    let out = json_lines(&std::fs::read(dir.path().join("out.jsonl")).expect("out"));
    let posts: Vec<&serde_json::Value> = out.iter().filter(|p| p.get("traptor").is_some()).collect();
    assert!(posts.len() >= 30);
    assert!(posts.iter().all(|p| p["traptor"].get("provenance").is_none() && p["traptor"]["enrichments"].is_object()));
}

fn host(args: &[&str]) -> (Option<i32>, String, String) {
    let out = run_host(args, LIMIT);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A pipeline with `[verify] keys` refuses, at validate and at start with
/// exit 78 naming the stage, the digest and the keys tried, a component
/// that is unsigned, signed by another key, or changed since it was
/// signed; it runs once a listed key signed it. A stage's own
/// `[stages.verify]` replaces the top-level list.
#[test]
fn a_pipeline_with_verify_keys_runs_only_components_its_keys_signed() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let s = |p: &Path| p.to_str().expect("utf8").to_owned();
    for name in ["team", "other"] {
        let (code, out, err) = host(&["plugin", "keygen", "--out", &s(&d.join(name))]);
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains(&format!("{name}.key")) && out.contains(&format!("{name}.pub")), "{out}");
        assert!(!err.contains(&std::fs::read_to_string(d.join(format!("{name}.key"))).expect("key")[23..]), "{err}");
    }
    let (code, _, err) = host(&["plugin", "keygen", "--out", &s(&d.join("team"))]);
    assert_eq!(code, Some(78), "never overwrites: {err}");
    let wasm = d.join("mood.wasm");
    std::fs::copy(plugin_wasm("sentiment"), &wasm).expect("copy");
    let digest = format!("sha256:{}", hex(&std::fs::read(&wasm).expect("wasm")));
    std::fs::write(d.join("in.jsonl"), "{\"id_str\":\"1\",\"text\":\"a wonderful day\"}\n").expect("in");
    std::fs::write(d.join("rules.jsonl"), "").expect("rules");
    let pipeline = PipelineFile::new("type = \"replay\"\npath = \"in.jsonl\"")
        .stage("name = \"mood\"\nplugin = \"mood.wasm\"")
        .table("[verify]\nkeys = [\"team.pub\"]")
        .write(d);
    let p = s(&pipeline);
    let refused = |why: &str, key_named: &str| {
        for cmd in [&["validate", "--pipeline", &p][..], &["--pipeline", &p]] {
            let (code, out, err) = host(cmd);
            let all = format!("{out}{err}");
            assert_eq!(code, Some(78), "{why}: {cmd:?}: {all}");
            assert!(all.contains("\"mood\"") && all.contains("team.pub") && all.contains(key_named), "{why}: {all}");
        }
    };
    refused("unsigned", &digest);
    let (code, out, _) = host(&["plugin", "verify", &s(&wasm), "--key", &s(&d.join("team.pub"))]);
    assert_eq!(code, Some(1), "{out}");

    // Signed by a key the pipeline does not list.
    let (code, out, err) = host(&["plugin", "sign", &s(&wasm), "--key", &s(&d.join("other.key"))]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), format!("{}.sig", wasm.display()));
    refused("another key", &digest);

    // Signed by the team's key: it runs, and `plugin verify` says by whom.
    let (code, _, err) = host(&["plugin", "sign", &s(&wasm), "--key", &s(&d.join("team.key"))]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = host(&["validate", "--pipeline", &p]);
    assert_eq!(code, Some(0), "{err}");
    run(&pipeline);
    let out = json_lines(&std::fs::read(d.join("out.jsonl")).expect("out"));
    assert_eq!(out[0]["traptor"]["enrichments"]["mood"]["label"], "positive", "{}", out[0]);
    let (code, out, _) =
        host(&["plugin", "verify", &s(&wasm), "--key", &s(&d.join("other.pub")), "--key", &s(&d.join("team.pub"))]);
    assert_eq!(code, Some(0));
    assert!(out.contains(&digest) && out.contains("signed by"), "{out}");

    // The component changes after signing (another build): refused again.
    std::fs::copy(plugin_wasm("entities"), &wasm).expect("copy");
    let changed = format!("sha256:{}", hex(&std::fs::read(&wasm).expect("wasm")));
    refused("changed since signed", &changed);

    // A stage's own list replaces the top-level one.
    let per_stage = PipelineFile::new("type = \"replay\"\npath = \"in.jsonl\"")
        .stage("name = \"mood\"\nplugin = \"mood.wasm\"\n[stages.verify]\nkeys = [\"other.pub\"]")
        .table("[verify]\nkeys = [\"team.pub\"]")
        .write(d);
    std::fs::copy(plugin_wasm("sentiment"), &wasm).expect("copy");
    let (code, _, err) = host(&["validate", "--pipeline", &s(&per_stage)]);
    assert_eq!(code, Some(0), "other.pub signed it too: {err}");
    std::fs::remove_file(format!("{}.sig", wasm.display())).expect("rm");
    let (code, out, err) = host(&["validate", "--pipeline", &s(&per_stage)]);
    assert_eq!(code, Some(78), "{out}{err}");
    assert!(format!("{out}{err}").contains("other.pub"), "{out}{err}");
}
