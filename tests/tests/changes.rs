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

    // At SIGHUP: a stage edited to name an unsigned component is refused;
    // the running (signed) one stays.
    std::fs::copy(plugin_wasm("sentiment"), &wasm).expect("copy");
    let (code, _, err) = host(&["plugin", "sign", &s(&wasm), "--key", &s(&d.join("team.key"))]);
    assert_eq!(code, Some(0), "{err}");
    std::fs::copy(plugin_wasm("entities"), d.join("unsigned.wasm")).expect("copy");
    let following = |plugin: &str| {
        PipelineFile::new("type = \"replay\"\npath = \"in.jsonl\"\nfollow = true")
            .stage(&format!("name = \"mood\"\nplugin = \"{plugin}\""))
            .table("[verify]\nkeys = [\"team.pub\"]")
            .write_as(d, "following.toml")
    };
    let f = following("mood.wasm");
    let collector = traptor_tests::Host::spawn(&["--pipeline", &s(&f)], &[]);
    collector.wait_log("signature verified", LIMIT);
    following("unsigned.wasm");
    let ok = std::process::Command::new("kill").args(["-HUP", &collector.pid().to_string()]).status().expect("kill");
    assert!(ok.success());
    collector.wait_log("no valid signature", LIMIT);
    let log = collector.kill();
    assert!(!log.contains("stages rebuilt"), "{log}");

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

/// Posts out of a pipeline run with `rules`, by `time_us`: the ids of the
/// rules each matched (none for a post that matched nothing).
fn collected(dir: &Path, rules: &[serde_json::Value]) -> BTreeMap<u64, Vec<String>> {
    std::fs::write(dir.join("rules.jsonl"), rules.iter().map(|r| format!("{r}\n")).collect::<String>()).expect("rules");
    let p = PipelineFile::new("type = \"replay\"\npath = \"in.jsonl\"\nformat = \"jetstream\"").write(dir);
    run(&p);
    json_lines(&std::fs::read(dir.join("out.jsonl")).expect("out"))
        .iter()
        .filter(|v| v.get("traptor").is_some())
        .map(|v| {
            let ids = v["traptor"]["collection_rules"]
                .as_array()
                .map(|a| a.iter().map(|r| r["rule_id"].as_str().expect("id").to_owned()).collect())
                .unwrap_or_default();
            (v["time_us"].as_u64().expect("time_us"), ids)
        })
        .collect()
}

/// `rules preview` agrees with what the collector itself collects with
/// each rule set over the same real posts (Bluesky recording): totals,
/// gained, lost, per-rule counts; the planner's connections with their
/// limit and posts/s over the corpus's span; markdown and table forms;
/// exit 78 naming file and line on a bad rules file.
#[test]
fn rules_preview_agrees_with_what_the_collector_collects() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let events = std::fs::read_to_string(fixture("jetstream/expected_v1.jsonl")).expect("jetstream");
    std::fs::write(d.join("in.jsonl"), &events).expect("write");
    let rule =
        |id: &str, value: &str| serde_json::json!({"rule_id": id, "value": value, "tag": "t", "rule_type": "track"});
    let current = vec![rule("1", "the"), rule("2", "bsky"), rule("3", "is")];
    let proposed = vec![rule("1", "the"), rule("4", "love"), rule("5", "a"), rule("6", "i")];
    let (cur, pro) = (collected(d, &current), collected(d, &proposed));
    let write = |name: &str, rules: &[serde_json::Value]| {
        std::fs::write(d.join(name), rules.iter().map(|r| format!("{r}\n")).collect::<String>()).expect("write");
        d.join(name).to_str().expect("utf8").to_owned()
    };
    let (cur_file, pro_file) = (write("current.jsonl", &current), write("proposed.jsonl", &proposed));
    let corpus = d.join("in.jsonl").to_str().expect("utf8").to_owned();
    let args = ["rules", "preview", "--proposed", &pro_file, "--current", &cur_file, "--corpus", &corpus];
    let (code, out, err) = host(&[&args[..], &["--format", "json"]].concat());
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let matched = |m: &BTreeMap<u64, Vec<String>>| m.values().filter(|ids| !ids.is_empty()).count() as u64;
    let both = |f: &dyn Fn(bool, bool) -> bool| {
        cur.iter().filter(|(k, ids)| f(!ids.is_empty(), !pro[*k].is_empty())).count() as u64
    };
    assert_eq!(cur.len(), pro.len());
    let posts = &v["posts"];
    assert_eq!(posts["total"], cur.len() as u64, "{v}");
    assert_eq!(posts["matched_current"], matched(&cur), "{v}");
    assert_eq!(posts["matched_proposed"], matched(&pro), "{v}");
    assert_eq!(posts["gained"], both(&|c, p| !c && p), "{v}");
    assert_eq!(posts["lost"], both(&|c, p| c && !p), "{v}");
    assert!(
        posts["gained"].as_u64() > Some(0) && posts["lost"].as_u64() > Some(0),
        "a change that gains and loses: {v}"
    );
    let hits =
        |m: &BTreeMap<u64, Vec<String>>, id: &str| m.values().filter(|ids| ids.iter().any(|i| i == id)).count() as u64;
    let rows = v["rules"].as_array().expect("rules");
    assert_eq!(rows.len(), 6, "{v}");
    for r in rows {
        let id = r["rule_id"].as_str().expect("id");
        assert_eq!(r["current"], hits(&cur, id), "rule {id}: {v}");
        assert_eq!(r["proposed"], hits(&pro, id), "rule {id}: {v}");
        assert_eq!(r["rule_type"], "track");
    }
    assert_eq!(rows.iter().find(|r| r["rule_id"] == "4").expect("rule 4")["value"], "love");
    // One track connection holds the proposed rules; its posts/s is over
    // the span of the posts' own timestamps.
    let conns = v["connections"].as_array().expect("connections");
    assert_eq!(conns.len(), 1, "{v}");
    assert_eq!((conns[0]["rule_type"].as_str(), conns[0]["rules"].as_u64()), (Some("track"), Some(4)));
    assert_eq!((conns[0]["units"].as_u64(), conns[0]["limit"].as_u64()), (Some(4), Some(400)));
    assert_eq!(conns[0]["posts"], matched(&pro));
    let span = v["span_secs"].as_f64().expect("span");
    let rate = conns[0]["posts_per_sec"].as_f64().expect("rate");
    assert!((rate - matched(&pro) as f64 / span).abs() < 0.001, "{rate} vs {}/{span}", matched(&pro));

    let (code, out, _) = host(&[&args[..], &["--format", "markdown"]].concat());
    assert_eq!(code, Some(0));
    assert!(
        out.contains("| rule_id | type | value | current | proposed |") && out.contains("| 4 | track | love |"),
        "{out}"
    );
    let (code, out, _) = host(&args);
    assert_eq!(code, Some(0));
    assert!(out.starts_with(&format!("posts: {} total", cur.len())), "{out}");

    // A bad rules file: exit 78 naming the file and line.
    std::fs::write(d.join("bad.jsonl"), format!("{}\n{{\"rule_id\": \"9\", \"value\": \n", rule("1", "x")))
        .expect("write");
    let bad = d.join("bad.jsonl").to_str().expect("utf8").to_owned();
    let (code, out, err) = host(&["rules", "preview", "--proposed", &bad, "--corpus", &corpus]);
    assert_eq!(code, Some(78), "{out}{err}");
    assert!(err.contains("bad.jsonl:2"), "{err}");
}

/// `curl` against the admin listener: (status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-S", "--max-time", "30", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl (scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// A collector following the Bluesky recording (it stays up), with `admin`
/// lines in its `[admin]` table.
fn admin_collector(d: &Path, port: u16, admin: &str, envs: &[(&str, &str)]) -> traptor_tests::Host {
    std::fs::write(d.join("in.jsonl"), std::fs::read(fixture("jetstream/expected_v1.jsonl")).expect("fixture"))
        .expect("write");
    std::fs::write(d.join("rules.jsonl"), "{\"rule_id\":\"1\",\"value\":\"the\",\"rule_type\":\"track\"}\n")
        .expect("rules");
    let p = PipelineFile::new("type = \"replay\"\npath = \"in.jsonl\"\nformat = \"jetstream\"\nfollow = true")
        .table(&format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n{admin}"))
        .write(d);
    let host = traptor_tests::Host::spawn(&["--pipeline", p.to_str().expect("utf8")], envs);
    host.wait_log("admin endpoint", LIMIT);
    let out = d.join("out.jsonl");
    traptor_tests::wait_for("the recording written", LIMIT, || {
        (std::fs::read_to_string(&out).map(|t| t.lines().count()).unwrap_or(0) >= 60).then_some(())
    });
    host
}

/// The admin listener keeps the last `recent_posts` posts; `rules preview
/// --admin` and `POST /api/rules/preview` match against them. Anything that
/// changes state needs the bearer token (401 without or wrong; 403 naming
/// the key when none is configured); a body over the cap gets 413; a slow
/// client gets 408 and does not hold the listener; `read_token` closes the
/// read-only views but not the probes.
#[test]
fn the_admin_listener_previews_rules_behind_a_token() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let port = traptor_tests::free_port();
    let token = "s3cret-admin-token";
    let host = admin_collector(
        d,
        port,
        "recent_posts = 20\nmax_body_bytes = 4096\ntoken = { env = \"ADMIN_TOKEN\" }",
        &[("ADMIN_TOKEN", token)],
    );
    let base = format!("http://127.0.0.1:{port}");
    let (status, page) = curl(&[&format!("{base}/preview")]);
    assert!(status == 200 && page.contains("Preview a rule change"), "{page}");
    let (status, recent) = curl(&[&format!("{base}/api/recent")]);
    assert_eq!(status, 200, "{recent}");
    let lines: Vec<serde_json::Value> = recent.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert_eq!(lines.len(), 20, "the last 20 posts");
    assert!(lines.iter().all(|l| l["format"] == "jetstream"), "{recent}");
    // The last one is the recording's last post.
    let last_post = std::fs::read_to_string(d.join("in.jsonl"))
        .expect("in")
        .lines()
        .rfind(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            let c = &v["commit"];
            c["operation"] == "create"
                && (c["collection"] == "app.bsky.feed.post" || c["collection"] == "app.bsky.feed.repost")
        })
        .expect("a post")
        .to_owned();
    assert_eq!(lines[19]["post"].as_str().map(str::trim), Some(last_post.trim()));

    let proposed = d.join("proposed.jsonl");
    std::fs::write(&proposed, "{\"rule_id\":\"1\",\"value\":\"the\"}\n{\"rule_id\":\"2\",\"value\":\"a\"}\n")
        .expect("w");
    let (code, out, err) = host_cli(&[
        "rules",
        "preview",
        "--proposed",
        proposed.to_str().expect("utf8"),
        "--admin",
        &base,
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let cli: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(cli["posts"]["total"], 20, "{cli}");

    let url = format!("{base}/api/rules/preview");
    let body = format!("@{}", proposed.display());
    let (status, text) = curl(&["-X", "POST", "--data-binary", &body, &url]);
    assert_eq!(status, 401, "no token: {text}");
    let (status, _) = curl(&["-X", "POST", "-H", "Authorization: Bearer wrong", "--data-binary", &body, &url]);
    assert_eq!(status, 401, "wrong token");
    let auth = format!("Authorization: Bearer {token}");
    let (status, text) = curl(&["-X", "POST", "-H", &auth, "--data-binary", &body, &url]);
    assert_eq!(status, 200, "{text}");
    let api: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(api["posts"], cli["posts"], "the API and the CLI agree: {api}");
    assert_eq!(api["rules"], cli["rules"]);
    let (status, text) = curl(&["-X", "POST", "-H", &auth, "--data-binary", "{\"rule_id\": 3", &url]);
    assert_eq!((status, text.contains("line 1")), (422, true), "{text}");
    let big = "x".repeat(5000);
    let (status, _) = curl(&["-X", "POST", "-H", &auth, "--data-binary", &big, &url]);
    assert_eq!(status, 413, "over max_body_bytes");

    // A slow client: headers, then nothing. It gets 408; others are served meanwhile.
    use std::io::{Read, Write};
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(slow, "POST /api/rules/preview HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Length: 100\r\n\r\n{{").expect("w");
    let started = std::time::Instant::now();
    let (status, _) = curl(&[&format!("{base}/api/stats")]);
    assert_eq!(status, 200, "served while a client is slow");
    slow.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let log = host.kill();
    assert!(!log.contains(token), "the token is never logged");
}

/// Without `[admin] token` every POST is off (403 naming the key);
/// `read_token = true` closes the read-only views, not the probes.
#[test]
fn the_admin_listener_without_a_token_changes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let token = "s3cret-admin-token";
    let auth = format!("Authorization: Bearer {token}");
    std::fs::write(d.join("proposed.jsonl"), "{\"rule_id\":\"1\",\"value\":\"the\"}\n").expect("w");
    let body = format!("@{}", d.join("proposed.jsonl").display());
    let port = traptor_tests::free_port();
    let host = admin_collector(d, port, "", &[]);
    let (status, text) =
        curl(&["-X", "POST", "--data-binary", &body, &format!("http://127.0.0.1:{port}/api/rules/preview")]);
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("[admin] token"), "{text}");
    host.kill();
    let port = traptor_tests::free_port();
    let host =
        admin_collector(d, port, "read_token = true\ntoken = { env = \"ADMIN_TOKEN\" }", &[("ADMIN_TOKEN", token)]);
    let at = |path: &str| format!("http://127.0.0.1:{port}{path}");
    assert_eq!(curl(&[&at("/api/stats")]).0, 401);
    assert_eq!(curl(&[&at("/metrics")]).0, 401);
    assert_eq!(curl(&["-H", &auth, &at("/api/stats")]).0, 200);
    assert_eq!(curl(&[&at("/health")]).0, 200, "probes stay open");
    assert_eq!(curl(&[&at("/ready")]).0, 200, "probes stay open");
    host.kill();
}

fn host_cli(args: &[&str]) -> (Option<i32>, String, String) {
    host(args)
}

/// `[admin] tls_cert_file`/`tls_key_file`: HTTPS that an independent client
/// (curl) trusts through the CA; plain HTTP is refused; `validate` warns
/// about a listener off loopback without TLS.
#[test]
fn the_admin_listener_serves_https() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let (ca, cert, key) = traptor_tests::tls_certificates(d);
    let port = traptor_tests::free_port();
    let host = admin_collector(
        d,
        port,
        &format!("tls_cert_file = {:?}\ntls_key_file = {:?}", cert.display().to_string(), key.display().to_string()),
        &[],
    );
    let (status, text) =
        curl(&["--cacert", ca.to_str().expect("utf8"), &format!("https://127.0.0.1:{port}/api/stats")]);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"collector\""), "{text}");
    let (status, _) = curl(&[&format!("http://127.0.0.1:{port}/api/stats")]);
    assert_ne!(status, 200, "plain HTTP is not served on a TLS listener");
    // A client that opens a connection and never handshakes does not hold it.
    let _idle = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (status, _) = curl(&["--cacert", ca.to_str().expect("utf8"), &format!("https://127.0.0.1:{port}/health")]);
    assert_eq!(status, 200);
    host.kill();

    let p =
        PipelineFile::new("type = \"replay\"\npath = \"in.jsonl\"").table("[admin]\nlisten = \"0.0.0.0:9\"").write(d);
    let (_, out, err) = host_cli(&["validate", "--pipeline", p.to_str().expect("utf8")]);
    assert!(format!("{out}{err}").contains("without TLS"), "{out}{err}");
}

/// A shadow candidate (the same plugin, another threshold) runs on every
/// post after the live version and never reaches the output; the counts and
/// the kept differences at `/api/stages/<name>/shadow` are what the live
/// output implies; `plugin promote` makes it the live plugin in the file
/// and the lock; the admin listener's promote (token) does the same to the
/// running file and swaps it in without a restart.
#[test]
fn a_shadow_stage_is_compared_then_promoted_without_a_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let corpus = d.join("in.jsonl");
    let made =
        run_host(&["generate", "--count", "2000", "--seed", "3", "--output", corpus.to_str().expect("utf8")], LIMIT);
    assert!(made.status.success());
    std::fs::write(d.join("rules.jsonl"), "").expect("rules");
    let port = traptor_tests::free_port();
    let wasm = plugin_wasm("sentiment");
    let p = PipelineFile::new("type = \"replay\"\npath = \"in.jsonl\"\nfollow = true")
        .stage(&format!(
            "# the stage's own comment\nname = \"sentiment\"\nplugin = {:?}\nconfig = {{ threshold = 1.0 }}\nshadow = {{ plugin = {:?}, config = {{ threshold = 0.5 }}, sample = 1.0 }}",
            wasm.display(),
            wasm.display()
        ))
        .table(&format!("[admin]\nlisten = \"127.0.0.1:{port}\"\ntoken = {{ env = \"ADMIN_TOKEN\" }}"))
        .write(d);
    let ps = p.to_str().expect("utf8");
    let (code, _, err) = host(&["plugin", "lock", "--pipeline", ps]);
    assert_eq!(code, Some(0), "{err}");
    let collector = traptor_tests::Host::spawn(&["--pipeline", ps], &[("ADMIN_TOKEN", "t0ken")]);
    collector.wait_log("shadow candidate loaded", LIMIT);
    let out = d.join("out.jsonl");
    let lines = || std::fs::read_to_string(&out).map(|t| t.lines().count()).unwrap_or(0);
    traptor_tests::wait_for("2000 posts", LIMIT, || (lines() >= 2000).then_some(()));
    let posts = json_lines(&std::fs::read(&out).expect("out"));
    let mood = |p: &serde_json::Value| p["traptor"]["enrichments"]["sentiment"].clone();
    assert!(posts.iter().all(|p| mood(p)["label"] == "neutral"), "only the live version's answers are written");
    let strong = posts.iter().filter(|p| mood(p)["compound"].as_f64().expect("compound").abs() >= 0.5).count() as u64;
    assert!(strong > 50, "{strong}");

    let (status, text) = curl(&[&format!("http://127.0.0.1:{port}/api/stages/sentiment/shadow")]);
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["compared"], 2000, "{v}");
    assert_eq!(v["different"], strong, "posts the candidate labels otherwise");
    assert_eq!(v["same"], 2000 - strong);
    let diffs = v["differences"].as_array().expect("differences");
    assert_eq!(diffs.len() as u64, strong.min(100));
    for x in diffs {
        assert_eq!(x["fields"], serde_json::json!(["label"]), "{x}");
        assert_eq!(
            (x["live"]["outcome"].as_str(), x["live"]["fields"]["label"].as_str()),
            (Some("enriched"), Some("neutral"))
        );
        assert_ne!(x["candidate"]["fields"]["label"], "neutral", "{x}");
        assert!(posts.iter().any(|p| p["id_str"] == x["post_id"]), "{x}");
    }
    let (_, metrics) = curl(&[&format!("http://127.0.0.1:{port}/metrics")]);
    let line = format!("traptor_shadow_posts_total{{stage=\"sentiment\",result=\"different\"}} {strong}");
    assert!(metrics.contains(&line), "{line} in\n{metrics}");

    promote_a_copy(d, &p);

    // An upload over axum's own 2 MiB default passes under the default 4 MiB cap.
    let big = d.join("big.jsonl");
    std::fs::write(&big, format!("{{\"rule_id\":\"1\",\"value\":\"the\"}}\n{}", " \n".repeat(1_500_000))).expect("w");
    let (status, text) = curl(&[
        "-X",
        "POST",
        "-H",
        "Authorization: Bearer t0ken",
        "--data-binary",
        &format!("@{}", big.display()),
        &format!("http://127.0.0.1:{port}/api/rules/preview"),
    ]);
    assert_eq!(status, 200, "{text}");

    // Through the admin listener (token): the running file, then a reload as on SIGHUP.
    let promote = format!("http://127.0.0.1:{port}/api/stages/sentiment/promote");
    let (status, _) = curl(&["-X", "POST", &promote]);
    assert_eq!(status, 401);
    let (status, text) = curl(&["-X", "POST", "-H", "Authorization: Bearer t0ken", &promote]);
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert!(v["swapped"].is_boolean() && v["plugin"].as_str().is_some(), "{v}");
    collector.wait_log("stages rebuilt", LIMIT);
    assert!(!std::fs::read_to_string(&p).expect("pipeline").contains("shadow ="));
    let more = d.join("more.jsonl");
    let made =
        run_host(&["generate", "--count", "500", "--seed", "4", "--output", more.to_str().expect("utf8")], LIMIT);
    assert!(made.status.success());
    let mut f = std::fs::OpenOptions::new().append(true).open(&corpus).expect("append");
    std::io::Write::write_all(&mut f, &std::fs::read(&more).expect("more")).expect("append");
    drop(f);
    traptor_tests::wait_for("2500 posts", LIMIT, || (lines() >= 2500).then_some(()));
    let posts = json_lines(&std::fs::read(&out).expect("out"));
    let after = &posts[2000..];
    assert!(after.iter().any(|p| mood(p)["label"] != "neutral"), "the promoted version labels");
    for p in after {
        let m = mood(p);
        let neutral = m["compound"].as_f64().expect("compound").abs() < 0.5;
        assert_eq!(m["label"] == "neutral", neutral, "{m}");
    }
    let (status, _) = curl(&[&format!("http://127.0.0.1:{port}/api/stages/sentiment/shadow")]);
    assert_eq!(status, 404, "no shadow after the promotion");
    collector.kill();
}

/// `plugin promote` on a copy of `p` (and its lock): the file keeps its
/// comments and validates with the lock; a second promote has nothing to do.
fn promote_a_copy(d: &Path, p: &Path) {
    let copy = d.join("copy.toml");
    std::fs::copy(p, &copy).expect("copy");
    std::fs::copy(d.join("pipeline.toml.lock"), d.join("copy.toml.lock")).expect("copy lock");
    let cs = copy.to_str().expect("utf8");
    let (code, out_text, err) = host(&["plugin", "promote", "sentiment", "--pipeline", cs]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out_text.starts_with("sentiment  "), "{out_text}");
    let text = std::fs::read_to_string(&copy).expect("pipeline");
    assert!(
        !text.contains("shadow =") && text.contains("threshold = 0.5") && text.contains("# the stage's own comment"),
        "{text}"
    );
    let checked = traptor_tests::run_host_with(&["validate", "--pipeline", cs], &[("ADMIN_TOKEN", "t0ken")], LIMIT);
    assert_eq!(checked.status.code(), Some(0), "the lock still agrees: {}", String::from_utf8_lossy(&checked.stderr));
    let (code, _, err) = host(&["plugin", "promote", "sentiment", "--pipeline", cs]);
    assert_eq!(code, Some(78), "nothing left to promote: {err}");
    assert!(err.contains("no shadow"), "{err}");
}
