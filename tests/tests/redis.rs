//! End-to-end against a real redis-server started by each test: rule store,
//! pub/sub reload, heartbeat, stats, planner, API-key leases, resilience.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use redis::Commands;
use traptor_tests::{Host, PipelineFile, RedisServer, fixture, json_lines, repo_root, rule_ids, run_host, wait_for};

const LIMIT: Duration = Duration::from_secs(60);

fn compact(path: &Path) -> String {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
    v.to_string()
}

fn rules_cli(redis: &RedisServer, args: &[&str]) -> (i32, String, String) {
    let url = redis.url();
    let mut full = vec!["rules", "--redis", url.as_str()];
    full.extend_from_slice(args);
    let out = run_host(&full, LIMIT);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn pipeline(redis: &RedisServer, source: &str) -> PipelineFile {
    PipelineFile::new(source)
        .id(0)
        .rules(&format!("type = \"redis\"\nurl = \"{}\"\nrule_check_interval_secs = 60", redis.url()))
        .coordination("heartbeat_interval_secs = 5\nstats_flush_ms = 100")
}

fn out_lines(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read(dir.join("out.jsonl")).unwrap_or_default();
    // Only complete lines.
    let end = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    json_lines(&text[..end])
}

#[test]
fn rules_from_redis_reload_heartbeat_and_stats() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "").expect("write");
    let p = pipeline(&redis, "type = \"replay\"\npath = \"in.jsonl\"\nfollow = true").write(dir.path());
    let host = Host::spawn(&["--pipeline", p.to_str().expect("utf8")], &[]);

    // No rules yet: the collector waits.
    host.wait_log("waiting for rules", LIMIT);
    let (code, stdout, stderr) = rules_cli(
        &redis,
        &["import", repo_root().join("examples/data/upstream-rules.jsonl").to_str().expect("utf8"), "--type", "track"],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("notified {0}"), "{stdout}");
    host.wait_log("rules assigned; starting", LIMIT);

    let track = compact(&fixture("upstream-traptor/track_tweet.json"));
    let limit = compact(&fixture("upstream-traptor/limit_message.json"));
    let append = |lines: &[&str]| {
        let mut f = std::fs::OpenOptions::new().append(true).open(&input).expect("open");
        for l in lines {
            writeln!(f, "{l}").expect("append");
        }
    };
    append(&[&track, &track, &limit, &track]);
    let out = wait_for("4 output lines", LIMIT, || Some(out_lines(dir.path())).filter(|v| v.len() >= 4));
    assert_eq!(rule_ids(&out[0]), vec!["12347"]);

    // A rule added in Redis + PUBLISH changes attribution without a restart.
    let rules_file = dir.path().join("more.jsonl");
    std::fs::write(
        &rules_file,
        "{\"rule_id\":\"new-1\",\"value\":\"birthday\",\"rule_type\":\"track\",\"tag\":\"bday\"}\n",
    )
    .expect("write");
    let (code, stdout, _) = rules_cli(&redis, &["import", rules_file.to_str().expect("utf8"), "--type", "track"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("notified {0}"), "{stdout}");
    host.wait_log("matcher swapped rules=2", LIMIT);
    append(&[&track]);
    let out = wait_for("5 output lines", LIMIT, || Some(out_lines(dir.path())).filter(|v| v.len() >= 5));
    assert_eq!(rule_ids(&out[4]), vec!["12347", "new-1"]);
    assert_eq!(out[4]["traptor"]["collection_rules"][1]["rule_tag"], "bday");

    // Heartbeat: exists, TTL 1.5 × 5 s, RFC 3339 UTC.
    let mut c = redis.conn();
    let ttl: i64 = c.ttl("track:0:heartbeat").expect("ttl");
    assert!((1..=8).contains(&ttl), "ttl {ttl}");
    let beat: String = c.get("track:0:heartbeat").expect("get");
    assert!(chrono_like(&beat), "{beat}");

    // Stats: four posts matched 12347, one matched new-1; the limit notice.
    wait_for("stats written", LIMIT, || {
        let n: u64 = c.zcard("stats:track:0:12347").ok()?;
        (n == 4).then_some(())
    });
    let n: u64 = c.zcard("stats:track:0:new-1").expect("zcard");
    assert_eq!(n, 1);
    let limits: Vec<(String, f64)> = c.zrange_withscores("limit:track:0", 0, -1).expect("zrange");
    assert_eq!(limits.len(), 1);
    assert_eq!(limits[0].1, 1234.0);

    let (status, log) = host.stop();
    assert!(status.success(), "{log}");
    let exists: bool = c.exists("track:0:heartbeat").expect("exists");
    assert!(!exists, "heartbeat removed on a clean shutdown");
}

fn chrono_like(s: &str) -> bool {
    // 2026-11-22T05:17:39Z
    s.len() == 20 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && s[..4].parse::<u32>().is_ok()
}

#[test]
fn invalid_rules_in_redis_are_reported_with_their_key() {
    let redis = RedisServer::start();
    let mut c = redis.conn();
    let _: () = c.hset_multiple("traptor-follow:0:0", &[("rule_id", "1"), ("value", "17919972")]).expect("hset");
    let _: () = c.hset_multiple("traptor-follow:0:1", &[("rule_id", "2"), ("value", "@jack")]).expect("hset");
    let _: () = c.hset_multiple("traptor-follow:0:2", &[("value", "12")]).expect("hset");
    let dir = tempfile::tempdir().expect("tmp");
    let p = pipeline(&redis, "type = \"synthetic\"\ncount = 1").traptor_type("follow").write(dir.path());
    let out = run_host(&["validate", "--pipeline", p.to_str().expect("utf8")], LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(78), "{stdout}");
    assert!(stdout.contains("traptor-follow:0:1") && stdout.contains("not a numeric user id"), "{stdout}");
    assert!(stdout.contains("traptor-follow:0:2") && stdout.contains("rule_id"), "{stdout}");
    assert!(stdout.contains("rules: 1 valid"), "{stdout}");
}

#[test]
fn planner_spreads_rules_over_connections_and_notifies_only_changes() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let follow: String = (0..5500)
        .map(|i| format!("{{\"rule_id\":\"f{i}\",\"value\":\"{}\",\"rule_type\":\"follow\"}}\n", 1000 + i))
        .collect();
    let track: String =
        (0..352).map(|i| format!("{{\"rule_id\":\"t{i}\",\"value\":\"word{i}\",\"rule_type\":\"track\"}}\n")).collect();
    std::fs::write(dir.path().join("follow.jsonl"), follow).expect("write");
    std::fs::write(dir.path().join("track.jsonl"), track).expect("write");
    for (f, t) in [("follow.jsonl", "follow"), ("track.jsonl", "track")] {
        let (code, stdout, stderr) =
            rules_cli(&redis, &["import", dir.path().join(f).to_str().expect("utf8"), "--type", t]);
        assert_eq!(code, 0, "{stdout}{stderr}");
    }
    let (code, stdout, _) = rules_cli(&redis, &["plan"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("total: 3 connection(s) needed"), "{stdout}");
    assert!(stdout.contains("follow:0  5000 units") && stdout.contains("follow:1  500 units"), "{stdout}");

    // Overload collector follow:1 by hand; --apply moves only the overflow and
    // notifies only the collectors that changed.
    let mut c = redis.conn();
    for i in 0..4600 {
        let _: () = c
            .hset_multiple(
                format!("traptor-follow:1:{}", 10_000 + i),
                &[("rule_id", format!("x{i}")), ("value", (900_000 + i).to_string()), ("rule_type", "follow".into())],
            )
            .expect("hset");
    }
    let client = redis::Client::open(redis.url()).expect("client");
    let mut sub_conn = client.get_connection().expect("conn");
    let mut sub = sub_conn.as_pubsub();
    sub.subscribe("traptor-notify").expect("subscribe");
    sub.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    let (code, stdout, _) = rules_cli(&redis, &["plan", "--type", "follow", "--apply"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("follow:1  5000 units") && stdout.contains("follow:2  100 units"), "{stdout}");
    let mut notices = Vec::new();
    while let Ok(m) = sub.get_message() {
        notices.push(m.get_payload::<String>().expect("payload"));
    }
    notices.sort();
    assert_eq!(notices, vec!["follow:1", "follow:2"], "follow:0 did not change and is not notified");
    let on_2: Vec<String> = c.keys("traptor-follow:2:*").expect("keys");
    assert_eq!(on_2.len(), 100);
    let (code, stdout, _) = rules_cli(&redis, &["plan", "--type", "follow"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("no rule needs to move"), "{stdout}");
}

#[test]
fn api_keys_are_leased_to_one_collector_at_a_time_and_never_logged() {
    let redis = RedisServer::start();
    let mut c = redis.conn();
    let _: () = c.hset("traptor-apikeys", "key-a", r#"{"bearer_token":"s3cr3t-token-value"}"#).expect("hset");
    let make = |name: &str| {
        let dir = tempfile::tempdir().expect("tmp");
        let p = pipeline(&redis, "type = \"synthetic\"\nrate = 50")
            .coordination(
                "heartbeat_interval_secs = 5\nstats_flush_ms = 100\n\n\
                 [coordination.api_keys]\nhash = \"traptor-apikeys\"\nlease_secs = 10",
            )
            .write(dir.path());
        let _ = name;
        (dir, p)
    };
    let _: () = c.hset_multiple("traptor-track:0:0", &[("rule_id", "1"), ("value", "coffee")]).expect("hset");
    let (_d1, p1) = make("one");
    let (_d2, p2) = make("two");
    let first = Host::spawn(&["--pipeline", p1.to_str().expect("utf8")], &[]);
    first.wait_log("claimed an API key", LIMIT);
    let holder: String = c.get("traptor-apikey-lease:key-a").expect("lease");
    assert!(holder.starts_with("track:0:"), "{holder}");
    let pttl: i64 = c.pttl("traptor-apikey-lease:key-a").expect("pttl");
    assert!(pttl > 0 && pttl <= 10_000, "{pttl}");
    let second = Host::spawn(&["--pipeline", p2.to_str().expect("utf8")], &[]);
    second.wait_log("every API key is leased", LIMIT);
    let (status, log1) = first.stop();
    assert!(status.success(), "{log1}");
    assert!(log1.contains("API key released"), "{log1}");
    second.wait_log("claimed an API key", LIMIT);
    let (status, log2) = second.stop();
    assert!(status.success());
    for log in [&log1, &log2] {
        assert!(!log.contains("s3cr3t-token-value"), "secret leaked: {log}");
    }
    let exists: bool = c.exists("traptor-apikey-lease:key-a").expect("exists");
    assert!(!exists);
}

/// `traptor-host keys …` with the credentials on standard input.
fn keys_cli(redis: &RedisServer, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = std::process::Command::new(traptor_tests::traptor_host())
        .args(["keys", "--redis", redis.url().as_str()])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 13, item 1: the key claimed from the pool is the credential the X
/// source uses; the key X refuses is marked bad with the reason and the next
/// one taken; a second collector finds no free key, waits with its heartbeat
/// withheld, and takes the key when the first collector releases it.
#[test]
fn pooled_api_keys_reach_the_source_and_a_refused_key_is_marked_bad() {
    use traptor_tests::fake_x::{FakeX, Session};
    let redis = RedisServer::start();
    let mut c = redis.conn();
    // The CLI: credentials from standard input, checked before they are stored.
    let (code, _, err) = keys_cli(&redis, &["add", "key-a"], "{\"bearer_token\":\"token-a-1111\"}");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = keys_cli(&redis, &["add", "key-b"], "{\"bearer_token\":\"token-b-2222\"}\n");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = keys_cli(&redis, &["add", "key-c"], "{\"bearer_tokn\":\"x\"}");
    assert_eq!(code, 78, "a misspelt field is refused: {err}");
    assert!(err.contains("bearer_tokn"), "{err}");
    for (id, rule) in [(0, "brexit"), (1, "storm")] {
        let _: () =
            c.hset_multiple(format!("traptor-track:{id}:0"), &[("rule_id", rule), ("value", rule)]).expect("hset");
    }
    let fake = FakeX::start();
    fake.with(|s| s.accept_bearer = Some("token-b-2222".into()));
    let lines: Vec<String> = (0..20)
        .map(|i| {
            serde_json::json!({"data": {"id": format!("{}", 7000 + i), "text": format!("brexit news {i}")},
                               "matching_rules": [{"id": "1", "tag": "brexit"}]})
            .to_string()
        })
        .collect();
    fake.push_session(Session::ok(lines));
    let make = |id: u32| {
        let dir = tempfile::tempdir().expect("tmp");
        let p = pipeline(
            &redis,
            &format!("type = \"x_filtered_stream\"\nbase_url = \"{}\"\nbackoff_scale = 0.01", fake.base),
        )
        .id(id)
        .coordination(
            "heartbeat_interval_secs = 5\nstats_flush_ms = 100\n\n\
                 [coordination.api_keys]\nhash = \"traptor-apikeys\"\nlease_secs = 10",
        )
        .write(dir.path());
        (dir, p)
    };
    let (d1, p1) = make(0);
    let first = Host::spawn(&["--pipeline", p1.to_str().expect("utf8")], &[]);
    let out = wait_for("20 posts", LIMIT, || Some(out_lines(d1.path())).filter(|v| v.len() >= 20));
    assert!(out.iter().all(|v| rule_ids(v) == ["brexit"]), "{out:?}");
    // Provenance names the key that streamed them, never its secret.
    assert!(out.iter().all(|v| v["traptor"]["provenance"]["key"] == "key-b"), "{out:?}");
    assert!(out.iter().all(|v| !v.to_string().contains("token-b")), "{out:?}");
    // key-a was tried and refused, key-b streams.
    let auths: Vec<String> = fake.with(|s| s.requests.iter().filter_map(|r| r.authorization.clone()).collect());
    assert_eq!(auths.first().map(String::as_str), Some("Bearer token-a-1111"), "{auths:?}");
    assert_eq!(auths.last().map(String::as_str), Some("Bearer token-b-2222"), "{auths:?}");
    let (code, list, err) = keys_cli(&redis, &["list"], "");
    assert_eq!(code, 0, "{err}");
    let row = |name: &str| list.lines().find(|l| l.starts_with(&format!("{name}\t"))).unwrap_or("").to_owned();
    assert!(row("key-a").contains("\tbad HTTP 401"), "{list}");
    assert!(row("key-b").contains("\tleased track:0 (pid"), "{list}");
    assert!(row("key-b").ends_with("\tbearer_token"), "{list}");
    assert!(!list.contains("token-a-1111") && !list.contains("token-b-2222"), "never a secret: {list}");
    wait_for("heartbeat 0", LIMIT, || c.exists::<_, bool>("track:0:heartbeat").ok().filter(|e| *e));

    // A second collector: key-a bad, key-b leased → it waits, no heartbeat.
    let (_d2, p2) = make(1);
    let second = Host::spawn(&["--pipeline", p2.to_str().expect("utf8")], &[]);
    second.wait_log("every API key is leased by another collector or marked bad", LIMIT);
    std::thread::sleep(Duration::from_millis(1500));
    let beating: bool = c.exists("track:1:heartbeat").expect("exists");
    assert!(!beating, "the heartbeat is withheld while no key is held");
    let (status, log1) = first.stop();
    assert!(status.success(), "{log1}");
    second.wait_log("using an API key from the pool", LIMIT);
    assert!(second.log().contains("api_key=key-b"), "{}", second.log());
    // Clearing the bad mark makes key-a claimable again.
    let (code, text, _) = keys_cli(&redis, &["clear-bad"], "");
    assert_eq!((code, text.trim()), (0, "cleared 1 bad mark(s)"));
    let (status, log2) = second.stop();
    assert!(status.success());
    for log in [&log1, &log2] {
        assert!(!log.contains("token-a-1111") && !log.contains("token-b-2222"), "secret leaked: {log}");
    }
    assert!(log1.contains("API key refused"), "{log1}");
    let (code, _, _) = keys_cli(&redis, &["remove", "key-a"], "");
    assert_eq!(code, 0);
    let (code, _, err) = keys_cli(&redis, &["remove", "key-a"], "");
    assert!(code != 0 && err.contains("no key \"key-a\""), "{err}");
}

/// Issue 13, item 3: Redis as deployed. Rules over `rediss://` with the
/// test's own CA and a password from a file; a plain `redis://` to the TLS
/// port and a wrong password fail with clear errors; no password shows in
/// any output at trace level; a server without RESP3 (HELLO renamed away, as
/// on Redis 5) still serves rules, heartbeats and API keys over RESP2.
#[test]
fn redis_over_tls_with_a_password_from_a_file_and_servers_without_resp3() {
    let certs = tempfile::tempdir().expect("tmp");
    let (ca, cert, key) = traptor_tests::tls_certificates(certs.path());
    let tls_port = traptor_tests::free_port();
    let socket = certs.path().join("redis.sock");
    let tls_args: Vec<String> = [
        "--unixsocket",
        socket.to_str().expect("utf8"),
        "--unixsocketperm",
        "700",
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        cert.to_str().expect("utf8"),
        "--tls-key-file",
        key.to_str().expect("utf8"),
        "--tls-ca-cert-file",
        ca.to_str().expect("utf8"),
        "--tls-auth-clients",
        "no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let password = "pw-Zq81-secret";
    let redis = RedisServer::with_options(&tls_args, Some(password));
    let mut c = redis.conn();
    let _: () = c.hset_multiple("traptor-track:0:0", &[("rule_id", "c"), ("value", "coffee")]).expect("hset");
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("redis-password"), format!("{password}\n")).expect("write");
    let validate = |url: &str, extra: &str| {
        let p = PipelineFile::new("type = \"synthetic\"\ncount = 10")
            .rules(&format!("type = \"redis\"\nurl = \"{url}\"\n{extra}"))
            .write(dir.path());
        let out = run_host(&["validate", "--log-level", "trace", "--pipeline", p.to_str().expect("utf8")], LIMIT);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!text.contains(password), "the password showed: {text}");
        (out.status.code(), text)
    };
    let tls_url = format!("rediss://127.0.0.1:{tls_port}");
    let ca_key = format!("tls_ca_file = {:?}", ca.display());
    let (code, text) = validate(&tls_url, &format!("{ca_key}\npassword = {{ file = \"redis-password\" }}"));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("rules: 1 valid in rediss://127.0.0.1"), "{text}");
    // The password in every URL form: loads, never shown.
    for (url, extra) in [
        (format!("rediss://:{password}@127.0.0.1:{tls_port}"), ca_key.as_str()),
        (format!("rediss://default:{password}@127.0.0.1:{tls_port}/0"), ca_key.as_str()),
        (format!("redis+unix://{}?db=0&pass={password}", socket.display()), ""),
    ] {
        let (code, text) = validate(&url, extra);
        assert_eq!(code, Some(0), "{url}: {text}");
    }
    // Plain text to the TLS port; a wrong password; no CA for our certificate.
    let (code, text) = validate(&format!("redis://127.0.0.1:{tls_port}"), "password = { file = \"redis-password\" }");
    assert_eq!(code, Some(78), "{text}");
    assert!(text.contains("cannot reach Redis at redis://127.0.0.1"), "{text}");
    std::fs::write(dir.path().join("wrong"), "nope").expect("write");
    let (code, text) = validate(&tls_url, &format!("{ca_key}\npassword = {{ file = \"wrong\" }}"));
    assert_eq!(code, Some(78), "{text}");
    assert!(text.to_lowercase().contains("password") || text.contains("WRONGPASS"), "{text}");
    let (code, text) = validate(&tls_url, "password = { file = \"redis-password\" }");
    assert_eq!(code, Some(78), "an unknown CA is refused: {text}");

    // The command line's rules and keys commands: --tls-ca-file (issue 25's loose end).
    let with_password = format!("rediss://:{password}@127.0.0.1:{tls_port}");
    for cmd in [&["rules", "list"][..], &["keys", "list"]] {
        let ca_arg = ca.to_str().expect("utf8");
        let out = run_host(&[cmd, &["--redis", &with_password, "--tls-ca-file", ca_arg]].concat(), LIMIT);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{cmd:?}: {text}");
        assert!(!text.contains(password), "the password showed: {text}");
        if cmd[0] == "rules" {
            assert!(text.contains("coffee"), "{text}");
        }
        let out = run_host(&[cmd, &["--redis", &with_password]].concat(), LIMIT);
        assert_ne!(out.status.code(), Some(0), "{cmd:?} without the CA: an unknown certificate is refused");
    }

    // RESP2 only: HELLO renamed away.
    let old = RedisServer::with_options(&["--rename-command".into(), "HELLO".into(), String::new()], None);
    let mut c = old.conn();
    let _: () = c.hset_multiple("traptor-track:0:0", &[("rule_id", "c"), ("value", "coffee")]).expect("hset");
    let _: () = c.hset("traptor-apikeys", "k", r#"{"bearer_token":"t"}"#).expect("hset");
    let p = pipeline(&old, "type = \"synthetic\"\nrate = 200")
        .coordination(
            "heartbeat_interval_secs = 5\nstats_flush_ms = 100\n\n[coordination.api_keys]\nhash = \"traptor-apikeys\"",
        )
        .write(dir.path());
    let host = Host::spawn(&["--pipeline", p.to_str().expect("utf8")], &[]);
    wait_for("heartbeat over RESP2", LIMIT, || c.exists::<_, bool>("track:0:heartbeat").ok().filter(|e| *e));
    wait_for("matched posts", LIMIT, || Some(out_lines(dir.path())).filter(|v| v.iter().any(|p| rule_ids(p) == ["c"])));
    let (status, log) = host.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("RESP2") && log.contains("older than 6"), "{log}");
    assert!(log.contains("claimed an API key"), "{log}");
}

/// Issue 13, item 2 with Redis: one pipeline file, two collectors that
/// differ only in their environment (`TRAPTOR_ID`, `${OUT}`) → two
/// heartbeats and two rule sets.
#[test]
fn one_file_two_collectors_with_their_own_heartbeats_and_rules() {
    let redis = RedisServer::start();
    let mut c = redis.conn();
    let _: () = c.hset_multiple("traptor-track:0:0", &[("rule_id", "r0"), ("value", "coffee")]).expect("hset");
    let _: () = c.hset_multiple("traptor-track:1:0", &[("rule_id", "r1"), ("value", "happy")]).expect("hset");
    let dir = tempfile::tempdir().expect("tmp");
    let p = pipeline(&redis, "type = \"synthetic\"\nrate = 300")
        .sink("type = \"file\"\npath = \"out-${OUT}.jsonl\"")
        .write(dir.path());
    let path = p.to_str().expect("utf8");
    let a = Host::spawn(&["--pipeline", path], &[("TRAPTOR_ID", "0"), ("OUT", "a")]);
    let b = Host::spawn(&["--pipeline", path], &[("TRAPTOR_ID", "1"), ("OUT", "b")]);
    for key in ["track:0:heartbeat", "track:1:heartbeat"] {
        wait_for(key, LIMIT, || c.exists::<_, bool>(key).ok().filter(|e| *e));
    }
    let matched = |name: &str, rule: &str| {
        let text = std::fs::read(dir.path().join(name)).unwrap_or_default();
        let end = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let posts = json_lines(&text[..end]);
        let ids: std::collections::BTreeSet<String> = posts.iter().flat_map(rule_ids).collect();
        (posts.iter().any(|p| rule_ids(p) == [rule]), ids)
    };
    wait_for("both outputs", LIMIT, || {
        (matched("out-a.jsonl", "r0").0 && matched("out-b.jsonl", "r1").0).then_some(())
    });
    assert!(!matched("out-a.jsonl", "r0").1.contains("r1"), "collector 0 has only its rules");
    assert!(!matched("out-b.jsonl", "r1").1.contains("r0"), "collector 1 has only its rules");
    for h in [a, b] {
        let (status, log) = h.stop();
        assert!(status.success(), "{log}");
    }
}

/// Issue 11: `/ready` is 503 while Redis is down and while the X API refuses
/// the only key, 200 again after each; `/health` stays 200.
#[test]
fn ready_follows_redis_and_the_source_while_health_stays_up() {
    use traptor_tests::fake_x::{FakeX, Session};
    use traptor_tests::{free_port, http_get};
    let mut redis = RedisServer::with_persistence();
    let mut c = redis.conn();
    let _: () = c.hset_multiple("traptor-track:0:0", &[("rule_id", "b"), ("value", "brexit")]).expect("hset");
    let _: () = c.hset("traptor-apikeys", "only", r#"{"bearer_token":"tok-only-1"}"#).expect("hset");
    drop(c);
    let fake = FakeX::start();
    fake.with(|s| s.accept_bearer = Some("another-token".into()));
    let mut keep_open = Session::ok(Vec::new());
    keep_open.after = traptor_tests::fake_x::After::KeepAlive;
    fake.push_session(keep_open);
    let dir = tempfile::tempdir().expect("tmp");
    let p =
        pipeline(&redis, &format!("type = \"x_filtered_stream\"\nbase_url = \"{}\"\nbackoff_scale = 0.01", fake.base))
            .coordination("heartbeat_interval_secs = 5\n\n[coordination.api_keys]\nhash = \"traptor-apikeys\"")
            .write(dir.path());
    let port = free_port();
    let host = Host::spawn(&["--pipeline", p.to_str().expect("utf8"), "--admin", &format!("127.0.0.1:{port}")], &[]);
    host.wait_log("admin endpoint", LIMIT);
    let ready = || http_get(port, "/ready", "*/*");
    let until = |want: u16, what: &str| {
        wait_for(what, LIMIT, || {
            let (status, body) = ready();
            (status == want).then_some(body)
        })
    };
    // The only key is refused: not ready, the check says why.
    host.wait_log("API key refused", LIMIT);
    let body = until(503, "503 while the key is refused");
    assert!(body.contains("\"source\"") && (body.contains("refused") || body.contains("no API key")), "{body}");
    assert_eq!(http_get(port, "/health", "*/*").0, 200);
    // The API takes the key now, the operator clears the mark: ready.
    fake.with(|s| s.accept_bearer = Some("tok-only-1".into()));
    let cleared = run_host(&["keys", "--redis", &redis.url(), "clear-bad"], LIMIT);
    assert!(cleared.status.success());
    until(200, "200 once streaming");
    // Redis goes away: not ready (the source still streams), then back.
    redis.kill();
    let body = until(503, "503 while Redis is down");
    assert!(body.contains("\"redis\"") && body.contains("\"ok\":false"), "{body}");
    assert_eq!(http_get(port, "/health", "*/*").0, 200);
    redis.restart();
    until(200, "200 after Redis is back");
    let (status, log) = host.stop();
    assert!(status.success(), "{log}");
    assert!(!log.contains("tok-only-1"));
}

#[test]
fn redis_outages_never_stop_collection() {
    let mut redis = RedisServer::with_persistence();
    let port = redis.port;
    let mut c = redis.conn();
    let _: () = c.hset_multiple("traptor-track:0:0", &[("rule_id", "c"), ("value", "coffee")]).expect("hset");
    drop(c);
    // Down at start: the collector waits with backoff, then proceeds.
    redis.kill();
    let dir = tempfile::tempdir().expect("tmp");
    let p = pipeline(&redis, "type = \"synthetic\"\nrate = 300").write(dir.path());
    let mut host = Host::spawn(&["--pipeline", p.to_str().expect("utf8")], &[]);
    host.wait_log("Redis unavailable; retrying", LIMIT);
    redis.restart();
    assert_eq!(redis.port, port);
    host.wait_log("pipeline starting", LIMIT);
    let mut c = redis.conn();
    wait_for("heartbeat", LIMIT, || c.exists::<_, bool>("track:0:heartbeat").ok().filter(|e| *e));
    wait_for("stats", LIMIT, || c.zcard::<_, u64>("stats:track:0:c").ok().filter(|n| *n > 0));

    // Lost while running: collection goes on with the last good rules.
    redis.kill();
    let before = out_lines(dir.path()).len();
    wait_for("output while Redis is down", LIMIT, || (out_lines(dir.path()).len() > before + 300).then_some(()));
    assert!(host.is_running());
    let during = out_lines(dir.path());
    let coffee = during[before..].iter().filter(|v| rule_ids(v) == vec!["c".to_string()]).count();
    assert!(coffee > 0, "rules still apply while Redis is down");

    // Back: heartbeats and stats resume, counts kept meanwhile are written.
    redis.restart();
    let mut c = redis.conn();
    let _: () = c.del("track:0:heartbeat").unwrap_or(());
    wait_for("heartbeat resumed", Duration::from_secs(30), || {
        c.exists::<_, bool>("track:0:heartbeat").ok().filter(|e| *e)
    });
    wait_for("stats resumed", Duration::from_secs(30), || {
        let n: u64 = c.zcard("stats:track:0:c").ok()?;
        (n as usize >= coffee).then_some(())
    });
    let (status, log) = host.stop();
    assert!(status.success(), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// Issue 12, point 3: two collectors sharing `[dedup] redis` write each post
/// once across both outputs; with Redis unreachable the local check goes
/// on alone, counted.
#[test]
fn two_collectors_sharing_redis_dedup_write_each_post_once() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let posts: String = (0..3_000)
        .map(|i| format!("{}\n", serde_json::json!({"id_str": format!("{}", 77_000 + i), "text": "coffee"})))
        .collect();
    std::fs::write(dir.path().join("in.jsonl"), posts).expect("write");
    std::fs::write(dir.path().join("rules.jsonl"), "{\"rule_id\":\"c\",\"value\":\"coffee\"}\n").expect("write");
    let collector = |n: u32, url: &str| {
        let mut text = PipelineFile::new("type = \"replay\"\npath = \"in.jsonl\"\nrate = 3000")
            .id(n)
            .sink(&format!("type = \"file\"\npath = \"out-{n}.jsonl\""))
            .text();
        text.push_str(&format!(
            "\n[dedup]\nredis = {url:?}\nkey_prefix = \"test-dedup\"\nsnapshot = \"dedup-{n}.bin\"\n"
        ));
        let p = dir.path().join(format!("p{n}.toml"));
        std::fs::write(&p, text).expect("write");
        p
    };
    let (p0, p1) = (collector(0, &redis.url()), collector(1, &redis.url()));
    let run =
        |p: std::path::PathBuf| std::thread::spawn(move || run_host(&["--pipeline", p.to_str().expect("utf8")], LIMIT));
    let (a, b) = (run(p0), run(p1));
    let (a, b) = (a.join().expect("a"), b.join().expect("b"));
    for o in [&a, &b] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let ids = |n: u32| -> Vec<String> {
        json_lines(&std::fs::read(dir.path().join(format!("out-{n}.jsonl"))).unwrap_or_default())
            .iter()
            .map(|l| l["id_str"].as_str().expect("id").to_owned())
            .collect()
    };
    let (ids0, ids1) = (ids(0), ids(1));
    let both: std::collections::HashSet<&String> = ids0.iter().chain(&ids1).collect();
    assert_eq!(ids0.len() + ids1.len(), 3_000, "each post once across both: {} + {}", ids0.len(), ids1.len());
    assert_eq!(both.len(), 3_000);
    let dups = |o: &std::process::Output| -> u64 {
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let line = err.lines().find(|l| l.contains("pipeline finished")).expect("summary").to_owned();
        line.split("duplicates=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .expect("n")
    };
    assert_eq!(dups(&a) + dups(&b), 3_000, "what one wrote, the other counted as a duplicate");
    let mut c = redis.conn();
    let keys: Vec<String> = c.keys("test-dedup:twitter-v1:*").expect("keys");
    assert_eq!(keys.len(), 3_000);
    let ttl: i64 = c.ttl(&keys[0]).expect("ttl");
    assert!(ttl > 3_000 && ttl <= 3_600, "{ttl}");

    // Redis gone: the local check alone, every failure counted, nothing lost.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let p2 = collector(2, &format!("redis://127.0.0.1:{closed}"));
    let mut text = std::fs::read_to_string(&p2).expect("read");
    text = text.replace("rate = 3000", "rate = 0");
    std::fs::write(&p2, text).expect("write");
    let o = run_host(&["--pipeline", p2.to_str().expect("utf8")], LIMIT);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(ids(2).len(), 3_000, "every post, once");
    assert!(err.contains("deduplicating locally only") && !err.contains("dedup_redis_errors=0"), "{err}");
}

/// A collector of the fleet test: `id = "auto"`, the stand-in X v2 stream
/// with `backfill_minutes = 1`, shared dedup, sink `out-<n>.jsonl`.
fn fleet_collector(redis: &RedisServer, base: &str, dir: &Path, n: u32, lease_secs: u64) -> Host {
    fleet_collector_with(redis, base, dir, n, lease_secs, &[])
}

/// [`fleet_collector`] with more command-line arguments.
fn fleet_collector_with(redis: &RedisServer, base: &str, dir: &Path, n: u32, lease_secs: u64, args: &[&str]) -> Host {
    let p = dir.join(format!("p{n}.toml"));
    std::fs::write(&p, fleet_pipeline(redis, base, n, lease_secs)).expect("write");
    let mut all = vec!["--pipeline", p.to_str().expect("utf8")];
    all.extend_from_slice(args);
    Host::spawn(&all, &[])
}

/// The pipeline file of [`fleet_collector`].
fn fleet_pipeline(redis: &RedisServer, base: &str, n: u32, lease_secs: u64) -> String {
    let mut text = pipeline(
        redis,
        &format!(
            "type = \"x_filtered_stream\"\nbase_url = \"{base}\"\nbearer_token = {{ file = \"token\" }}\n\
             backoff_scale = 0.01\nbackfill_minutes = 1"
        ),
    )
    .traptor("id = \"auto\"")
    .coordination(&format!("heartbeat_interval_secs = 5\nstats_flush_ms = 100\nlease_secs = {lease_secs}"))
    .sink(&format!("type = \"file\"\npath = \"out-{n}.jsonl\""))
    .text()
    .replace("id = 0\n", "");
    text.push_str(&format!(
        "\n[dedup]\nredis = {:?}\nkey_prefix = \"fleet\"\nclaim_secs = 1\nsnapshot = \"dedup-{n}.bin\"\n",
        redis.url()
    ));
    text
}

/// A standby (`id = "auto"`, every id held) answers on its admin address:
/// `/health` 200 as a standby with the lease's reason (a liveness probe must
/// not restart it), `/ready` 503, `/metrics` `traptor_standby`, other paths
/// 503. Once it claims the id, the full listener takes the same address over.
#[test]
fn a_standby_answers_on_its_admin_address_until_it_holds_an_id() {
    use traptor_tests::fake_x::FakeX;
    use traptor_tests::{free_port, http_get};
    let redis = RedisServer::start();
    let mut c = redis.conn();
    let _: () = c.hset_multiple("traptor-track:0:0", &[("rule_id", "r"), ("value", "fleet")]).expect("hset");
    let fake = FakeX::start();
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("token"), "fleet-token\n").expect("write");

    // While Redis does not answer, the standby says that it waits for it.
    let away = format!("redis://127.0.0.1:{}", free_port());
    let p = dir.path().join("away.toml");
    std::fs::write(&p, fleet_pipeline(&redis, &fake.base, 9, 2).replace(&redis.url(), &away)).expect("write");
    let port = free_port();
    let admin = format!("127.0.0.1:{port}");
    let waiting = Host::spawn(&["--pipeline", p.to_str().expect("utf8"), "--admin", &admin], &[]);
    waiting.wait_log("admin endpoint (standby)", LIMIT);
    let (status, body) = http_get(port, "/health", "application/json");
    assert!(status == 200 && body.contains("waiting for Redis"), "{status} {body}");
    let (status, body) = http_get(port, "/ready", "application/json");
    assert!(status == 503 && body.contains("waiting for Redis"), "{status} {body}");
    let (status, log) = waiting.stop();
    assert!(status.success(), "{log}");

    let a = fleet_collector(&redis, &fake.base, dir.path(), 0, 2);
    a.wait_log("id claimed", LIMIT);
    let port = free_port();
    let admin = format!("127.0.0.1:{port}");
    let b = fleet_collector_with(&redis, &fake.base, dir.path(), 1, 2, &["--admin", &admin]);
    b.wait_log("standby: every id with rules is held", LIMIT);
    b.wait_log("admin endpoint (standby)", LIMIT);

    let (status, body) = http_get(port, "/health", "application/json");
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(health["status"], "standby", "{body}");
    let lease = &health["components"][0];
    assert_eq!((&lease["component"], &lease["state"]), (&"lease".into(), &"standby".into()), "{body}");
    assert!(lease["reason"].as_str().is_some_and(|r| r.contains("no track id with rules is free")), "{body}");
    let (status, body) = http_get(port, "/ready", "application/json");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"lease\"") && body.contains("standby"), "{body}");
    let (status, body) = http_get(port, "/metrics", "text/plain");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("traptor_standby{type=\"track\"} 1"), "{body}");
    let (status, body) = http_get(port, "/api/stats", "application/json");
    assert_eq!(status, 503, "{body}");

    // The holder stops: the standby claims the id and its full listener
    // answers on the same address.
    let (status, log_a) = a.stop();
    assert!(status.success(), "{log_a}");
    b.wait_log("id claimed", LIMIT);
    let health = wait_for("the full listener", LIMIT, || {
        let (status, body) = std::panic::catch_unwind(|| http_get(port, "/health", "application/json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 200 && v["status"] != "standby").then_some(v)
    });
    let lease = health["components"].as_array().and_then(|c| c.iter().find(|c| c["component"] == "lease")).cloned();
    assert!(lease.is_some_and(|l| l["name"] == "track:0" && l["state"] == "ok"), "{health}");
    let (status, body) = http_get(port, "/metrics", "text/plain");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("traptor_lease_fence") && !body.contains("traptor_standby"), "{body}");
    let (status, log_b) = b.stop();
    assert!(status.success(), "{log_b}");
}

/// Issue 25, points 1–3: `id = "auto"` with a standby, a continuous X v2
/// stand-in that honours `backfill_minutes`, file sinks and shared dedup.
/// The holder is killed -9: the standby takes the id within 2 × lease_secs
/// and backfills; a restarted collector stands by; SIGTERM moves the id in
/// under 2 s. The union of the sinks holds every post the stand-in sent
/// (those before the first collector connected too); the only duplicates
/// are posts in flight at the kill, none across the SIGTERM.
#[test]
fn a_standby_takes_a_dead_collectors_id_and_fills_the_gap() {
    use std::time::Instant;
    use traptor_tests::fake_x::{FakeX, Firehose};
    const LEASE_SECS: u64 = 2;
    let redis = RedisServer::start();
    let mut c = redis.conn();
    let _: () = c.hset_multiple("traptor-track:0:0", &[("rule_id", "fleet"), ("value", "fleet")]).expect("hset");
    let fake = FakeX::start();
    fake.start_firehose(200.0);
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("token"), "fleet-token\n").expect("write");
    let collector = |n: u32| fleet_collector(&redis, &fake.base, dir.path(), n, LEASE_SECS);
    // Posts go out before any collector listens: the first claim backfills them.
    std::thread::sleep(Duration::from_millis(1500));
    let a = collector(0);
    a.wait_log("id claimed", LIMIT);
    let b = collector(1);
    b.wait_log("standby: every id with rules is held", LIMIT);
    wait_for("posts from the first holder", LIMIT, || {
        Some(json_lines(&std::fs::read(dir.path().join("out-0.jsonl")).unwrap_or_default()).len()).filter(|&n| n > 400)
    });
    assert!(a.log().contains("track:0"), "{}", a.log());
    // The holder keeps its last written position under its lease.
    wait_for("the holder's position", LIMIT, || {
        c.get::<_, Option<u64>>("traptor-position:track:0:x_filtered_stream").ok().flatten()
    });

    // kill -9 the holder: the standby takes the id and asks for the gap.
    let killed = Instant::now();
    let log_a = a.kill();
    b.wait_log("id claimed", LIMIT);
    let takeover = killed.elapsed();
    eprintln!("takeover after kill -9: {:.2} s (lease_secs = {LEASE_SECS})", takeover.as_secs_f64());
    assert!(takeover <= Duration::from_secs(2 * LEASE_SECS) + Duration::from_millis(500), "{takeover:?}");
    b.wait_log("asking for the gap", LIMIT);
    let gap_line = b.log().lines().find(|l| l.contains("asking for the gap")).unwrap_or_default().to_owned();
    eprintln!("gap: {gap_line}");
    let connects = fake.with(|s| s.stream_connects().iter().map(|r| r.query.clone()).collect::<Vec<_>>());
    assert!(connects.iter().all(|q| q.contains("backfill_minutes=1")), "{connects:?}");

    // A restarted collector stands by; SIGTERM to the holder moves the id.
    let mut b = b;
    let c2 = collector(2);
    c2.wait_log("standby: every id with rules is held", LIMIT);
    std::thread::sleep(Duration::from_millis(1500));
    let termed = Instant::now();
    let _ = std::process::Command::new("kill").args(["-TERM", &b.pid().to_string()]).status();
    c2.wait_log("id claimed", LIMIT);
    let handover = termed.elapsed();
    eprintln!("takeover after SIGTERM: {:.2} s", handover.as_secs_f64());
    assert!(handover < Duration::from_secs(2), "{handover:?}");
    assert!(b.wait(LIMIT).success(), "{}", b.log());
    let log_b = b.log();
    assert!(log_b.contains("id released"), "{log_b}");

    std::thread::sleep(Duration::from_millis(1500));
    let sent = fake.stop_firehose();
    let ids_of = |n: u32| -> Vec<String> {
        let text = std::fs::read(dir.path().join(format!("out-{n}.jsonl"))).unwrap_or_default();
        let end = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        json_lines(&text[..end]).iter().filter_map(|l| l["data"]["id"].as_str().map(str::to_owned)).collect()
    };
    let all = wait_for("every post sent", LIMIT, || {
        let all: Vec<Vec<String>> = (0..3).map(ids_of).collect();
        let union: std::collections::HashSet<&String> = all.iter().flatten().collect();
        (union.len() as u64 >= sent).then(|| all.clone())
    });
    let (status, log_c) = c2.stop();
    assert!(status.success(), "{log_c}");
    let union: std::collections::HashSet<&String> = all.iter().flatten().collect();
    for k in 0..sent {
        assert!(union.contains(&Firehose::id(k)), "post {k} of {sent} lost");
    }
    let total: usize = all.iter().map(Vec::len).sum();
    let duplicates = total - union.len();
    let across_term: usize = {
        let b: std::collections::HashSet<&String> = all[1].iter().collect();
        all[2].iter().filter(|id| b.contains(id)).count()
    };
    eprintln!(
        "sent {sent}, written {} + {} + {}, duplicates {duplicates} (across the SIGTERM: {across_term})",
        all[0].len(),
        all[1].len(),
        all[2].len()
    );
    assert!(duplicates as u64 * 100 <= sent, "at most 1 % duplicates: {duplicates} of {sent}");
    assert_eq!(across_term, 0, "a SIGTERM hand-over writes nothing twice");
    let log = format!("{log_a}{log_b}{log_c}");
    assert!(!log.contains("fleet-token"), "the token never shows");
}

/// Issue 25, point 6: every query of `docs/grafana/traptor-fleet.json` reads
/// only metrics that a collector with every feature the panels show (id by
/// lease, a pool key, a stage, a live source, backfill) exposes on
/// `/metrics`; and that exposition passes `promtool check metrics`.
#[test]
fn the_fleet_dashboard_queries_only_metrics_a_collector_exposes() {
    use traptor_tests::fake_x::FakeX;
    use traptor_tests::{free_port, http_get, plugin_wasm};
    let redis = RedisServer::start();
    let mut c = redis.conn();
    let _: () = c.hset_multiple("traptor-track:0:0", &[("rule_id", "fleet"), ("value", "fleet")]).expect("hset");
    let _: () = c.hset("traptor-apikeys", "pool-key-1", r#"{"bearer_token":"tok-pool-1"}"#).expect("hset");
    let fake = FakeX::start();
    fake.with(|s| s.accept_bearer = Some("tok-pool-1".into()));
    fake.start_firehose(100.0);
    let dir = tempfile::tempdir().expect("tmp");
    let wasm = plugin_wasm("sentiment");
    let p = pipeline(
        &redis,
        &format!(
            "type = \"x_filtered_stream\"\nbase_url = \"{}\"\nbackoff_scale = 0.01\nbackfill_minutes = 1",
            fake.base
        ),
    )
    .traptor("id = \"auto\"")
    .stage(&format!("name = \"sentiment\"\nplugin = {:?}", wasm.to_str().expect("utf8")))
    .coordination("heartbeat_interval_secs = 5\nlease_secs = 3\n\n[coordination.api_keys]\nhash = \"traptor-apikeys\"")
    .write(dir.path());
    let text = std::fs::read_to_string(&p).expect("read").replace("id = 0\n", "");
    std::fs::write(&p, text).expect("write");
    let port = free_port();
    let host = Host::spawn(&["--pipeline", p.to_str().expect("utf8"), "--admin", &format!("127.0.0.1:{port}")], &[]);
    host.wait_log("admin endpoint", LIMIT);
    wait_for("posts written", LIMIT, || (out_lines(dir.path()).len() > 50).then_some(()));
    let exposition = wait_for("a full exposition", LIMIT, || {
        let (status, body) = http_get(port, "/metrics", "text/plain");
        (status == 200 && body.contains("traptor_fleet_ids{state=\"held\"} 1")).then_some(body)
    });
    let (status, log) = host.stop();
    assert!(status.success(), "{log}");
    // promtool, the Prometheus project's own linter.
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &exposition).expect("write");
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).expect("open"))
        .output()
        .expect("promtool (Debian's prometheus package; scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let exposed: std::collections::HashSet<&str> = exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("docs/grafana/traptor-fleet.json")).expect("dashboard"),
    )
    .expect("json");
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("traptor_"))
                .collect();
            assert!(!names.is_empty(), "{expr}");
            for n in names {
                assert!(exposed.contains(n), "panel {:?}: {n} is not on /metrics", panel["title"]);
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "{checked}");
    assert!(exposed.contains("traptor_api_key_in_use") && !exposition.contains("tok-pool-1"), "the key's name only");
}

/// Issue 25, point 5: a 401 from the rules endpoint during a later rule sync
/// (the key revoked while streaming) marks the pool key bad and the source
/// takes the next key, as a refused stream does.
#[test]
fn a_key_refused_during_rule_sync_is_marked_bad_and_the_next_taken() {
    use traptor_tests::fake_x::{After, FakeX, Session};
    let redis = RedisServer::start();
    let mut c = redis.conn();
    let _: () = c.hset_multiple("traptor-track:0:0", &[("rule_id", "one"), ("value", "brexit")]).expect("hset");
    let _: () = c.hset("traptor-apikeys", "key-a", r#"{"bearer_token":"tok-a-1111"}"#).expect("hset");
    let _: () = c.hset("traptor-apikeys", "key-b", r#"{"bearer_token":"tok-b-2222"}"#).expect("hset");
    let fake = FakeX::start();
    fake.with(|s| s.accept_bearer = Some("tok-a-1111".into()));
    for _ in 0..2 {
        let mut open = Session::ok(Vec::new());
        open.after = After::KeepAlive;
        fake.push_session(open);
    }
    let dir = tempfile::tempdir().expect("tmp");
    let p =
        pipeline(&redis, &format!("type = \"x_filtered_stream\"\nbase_url = \"{}\"\nbackoff_scale = 0.01", fake.base))
            .coordination("heartbeat_interval_secs = 5\n\n[coordination.api_keys]\nhash = \"traptor-apikeys\"")
            .write(dir.path());
    let host = Host::spawn(&["--pipeline", p.to_str().expect("utf8")], &[]);
    host.wait_log("stream connected", LIMIT);
    // key-a is revoked; a rule change makes the collector sync with it.
    fake.with(|s| s.accept_bearer = Some("tok-b-2222".into()));
    let _: () = c.hset_multiple("traptor-track:0:1", &[("rule_id", "two"), ("value", "storm")]).expect("hset");
    let _: () = c.publish("traptor-notify", "track:0").expect("publish");
    host.wait_log("rule sync refused", LIMIT);
    host.wait_log("API key refused; asking the pool for the next", LIMIT);
    wait_for("key-b streams", LIMIT, || {
        fake.with(|s| {
            s.stream_connects().last().and_then(|r| r.authorization.clone()).filter(|a| a == "Bearer tok-b-2222")
        })
    });
    let (code, list, _) = keys_cli(&redis, &["list"], "");
    assert_eq!(code, 0);
    let row = |name: &str| list.lines().find(|l| l.starts_with(&format!("{name}\t"))).unwrap_or("").to_owned();
    assert!(row("key-a").contains("\tbad "), "{list}");
    assert!(row("key-b").contains("\tleased track:0"), "{list}");
    // With key-b the new rule reaches the API.
    wait_for("the new rule synced", LIMIT, || fake.with(|s| s.rules.iter().any(|r| r.value == "storm").then_some(())));
    let (status, log) = host.stop();
    assert!(status.success(), "{log}");
    assert!(!log.contains("tok-a-1111") && !log.contains("tok-b-2222"), "never a secret");
}

/// Issue 25, point 1: a lease that is no longer ours (here: overwritten, as
/// after an expiry while Redis was away and another collector's claim)
/// stops the run at once — no two collectors stream one id — and the
/// collector stands by until the id is free, then claims it with a higher
/// fence. `validate` names the ids and their holders.
#[test]
fn a_collector_that_loses_its_lease_stops_and_stands_by() {
    let redis = RedisServer::start();
    let mut c = redis.conn();
    let _: () = c.hset_multiple("traptor-track:3:0", &[("rule_id", "r"), ("value", "coffee")]).expect("hset");
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("in.jsonl"), "").expect("write");
    let p = pipeline(&redis, "type = \"replay\"\npath = \"in.jsonl\"\nfollow = true")
        .traptor("id = \"auto\"")
        .coordination("heartbeat_interval_secs = 5\nlease_secs = 2")
        .write(dir.path());
    let text = std::fs::read_to_string(&p).expect("read").replace("id = 0\n", "");
    std::fs::write(&p, text).expect("write");
    let host = Host::spawn(&["--pipeline", p.to_str().expect("utf8")], &[]);
    host.wait_log("id claimed collector=track:3 fence=1", LIMIT);
    wait_for("heartbeat of id 3", LIMIT, || c.exists::<_, bool>("track:3:heartbeat").ok().filter(|e| *e));
    let v = run_host(&["validate", "--pipeline", p.to_str().expect("utf8")], LIMIT);
    let said = String::from_utf8_lossy(&v.stdout).into_owned();
    assert!(said.contains("track:auto") && said.contains("ids with rules: 3 (held by "), "{said}");
    let _: () = c.set("traptor-lease:track:3", "someone-else:1 99").expect("set");
    host.wait_log("lease lost: another collector holds the id; stopping", LIMIT);
    host.wait_log("standing by for an id again", LIMIT);
    let _: () = c.del("traptor-lease:track:3").expect("del");
    host.wait_log("id claimed collector=track:3 fence=2", LIMIT);
    let (status, log) = host.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("id released"), "{log}");
    let held: bool = c.exists("traptor-lease:track:3").expect("exists");
    assert!(!held, "released at SIGTERM");
}
