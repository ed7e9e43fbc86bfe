//! End-to-end (issue 14): plugins shared through a real OCI registry — the
//! CNCF distribution registry (Debian `docker-registry`) started here on a
//! free loopback port, without and with htpasswd basic auth — and a client
//! nobody here wrote (PyPI `oras`, installed by `scripts/test.sh`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use traptor_tests::{PipelineFile, json_lines, plugin_wasm, traptor_host};

const LIMIT: Duration = Duration::from_secs(180);

/// A registry process, killed on drop.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Start one; `user` adds htpasswd basic auth with that user and password.
    fn start(user: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().expect("tmp");
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((u, p)) = user {
            let out = Command::new("htpasswd").args(["-Bbn", u, p]).output().expect("htpasswd (apache2-utils)");
            assert!(out.status.success());
            std::fs::write(dir.path().join("htpasswd"), &out.stdout).expect("write");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: traptor-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).expect("write");
        let child = Command::new("docker-registry")
            .args(["serve", dir.path().join("config.yml").to_str().expect("utf8")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (Debian package docker-registry; scripts/test.sh installs it)");
        let r = Registry { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// traptor-host with a cache directory of the test's own. Its registry
/// part (`wasm/oci`) starts empty; compiled components (keyed by the
/// component's hash and the engine) are linked from the suite's shared
/// cache, so a cold registry cache does not mean compiling every plugin
/// again in a debug build.
fn host(args: &[&str], cache: &Path, envs: &[(&str, &str)]) -> Output {
    let compiled = cache.join("wasm");
    if !compiled.exists() {
        std::fs::create_dir_all(&compiled).expect("mkdir");
        let shared = traptor_tests::repo_root().join("target/test-plugin-cache/wasm");
        for e in std::fs::read_dir(shared).into_iter().flatten().flatten() {
            let to = compiled.join(e.file_name());
            let _ = std::fs::hard_link(e.path(), &to).or_else(|_| std::fs::copy(e.path(), &to).map(drop));
        }
    }
    let mut cmd = Command::new(traptor_host());
    cmd.args(args)
        .env("RUST_LOG", "info")
        .env("TRAPTOR_CACHE_DIR", cache)
        .env("DOCKER_CONFIG", cache.join("no-docker"));
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn traptor-host");
    let started = Instant::now();
    let out = child.wait_with_output().expect("wait");
    assert!(started.elapsed() < LIMIT, "traptor-host took too long");
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Run `script` with the oras client's Python (argv: registry host, then `args`).
fn oras(script: &str, args: &[&str]) -> Output {
    let python = std::env::var("TRAPTOR_ORAS_PYTHON").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/traptor/tools/oras-py-0.2.43/bin/python")
    });
    assert!(python.exists(), "{} missing: run scripts/test.sh (it installs PyPI oras 0.2.43)", python.display());
    let out = Command::new(&python).arg("-c").arg(script).args(args).output().expect("oras python");
    assert!(out.status.success(), "oras: {}", text(&out.stderr));
    out
}

const ORAS_PULL: &str = r#"
import sys, oras.client
host, target, outdir = sys.argv[1:4]
c = oras.client.OrasClient(hostname=host, insecure=True)
for p in c.pull(target=target, outdir=outdir):
    print(p)
"#;

const ORAS_PUSH: &str = r#"
import os, sys, oras.client
host, target, path = sys.argv[1:4]
c = oras.client.OrasClient(hostname=host, insecure=True)
os.chdir(os.path.dirname(path))
c.push(target=target, files=[os.path.basename(path) + ":application/wasm"],
       manifest_config="/dev/null:application/vnd.wasm.config.v0+json", disable_path_validation=True)
"#;

fn posts(dir: &Path) {
    let lines: String = [("1", "I love this, wonderful!"), ("2", "terrible, awful day")]
        .iter()
        .map(|(id, t)| format!("{}\n", serde_json::json!({"id_str": id, "text": t, "lang": "en"})))
        .collect();
    std::fs::write(dir.join("in.jsonl"), lines).expect("write");
    std::fs::write(dir.join("rules.jsonl"), "").expect("write");
}

fn pipeline(dir: &Path, plugin: &str, extra: &str) -> PathBuf {
    PipelineFile::new("type = \"replay\"\npath = \"in.jsonl\"")
        .stage(&format!("name = \"mood\"\nplugin = {plugin:?}\n{extra}"))
        .write(dir)
}

fn digest_in(s: &str) -> String {
    let i = s.find("sha256:").unwrap_or_else(|| panic!("no digest in {s:?}"));
    s[i..i + 71].to_owned()
}

#[test]
fn push_pull_lock_and_run_through_a_real_registry() {
    let mut reg = Registry::start(None);
    let work = tempfile::tempdir().expect("tmp");
    let (dir, cache) = (work.path(), work.path().join("cache"));
    let reg_host = reg.host();

    // Pushed here, pulled by oras: the same bytes.
    let lang = plugin_wasm("lang_filter");
    let reference = format!("oci://{reg_host}/team/lang-filter:1.0");
    let out = host(&["plugin", "push", lang.to_str().expect("utf8"), &reference], &cache, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pushed = digest_in(&text(&out.stdout));
    let pulled_dir = dir.join("oras-pull");
    let files =
        oras(ORAS_PULL, &[&reg_host, &format!("{reg_host}/team/lang-filter:1.0"), pulled_dir.to_str().expect("utf8")]);
    let file = text(&files.stdout).lines().next().map(PathBuf::from).expect("one file pulled");
    assert_eq!(std::fs::read(file).expect("pulled"), std::fs::read(&lang).expect("wasm"), "oras pulls what was pushed");
    // …and plugin pull finds the same digest, the component in the cache.
    let out = host(&["plugin", "pull", &reference], &cache, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(digest_in(&text(&out.stdout)), pushed);

    // Pushed by oras (the Wasm artifact media types), run from its reference.
    let sentiment = dir.join("sentiment.wasm");
    std::fs::copy(plugin_wasm("sentiment"), &sentiment).expect("copy");
    oras(ORAS_PUSH, &[&reg_host, &format!("{reg_host}/team/sentiment:1.0"), sentiment.to_str().expect("utf8")]);
    posts(dir);
    let oci = format!("oci://{reg_host}/team/sentiment:1.0");
    let p = pipeline(dir, &oci, "");
    let p_str = p.to_str().expect("utf8");
    let out = host(&["--pipeline", p_str], &cache, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let enriched = json_lines(&std::fs::read(dir.join("out.jsonl")).expect("out"));
    assert_eq!(enriched.len(), 2);
    assert_eq!(enriched[0]["traptor"]["enrichments"]["mood"]["label"], "positive", "{}", enriched[0]);
    assert_eq!(enriched[1]["traptor"]["enrichments"]["mood"]["label"], "negative");

    // Lock, then someone re-pushes another component under the same tag.
    let out = host(&["plugin", "lock", "--pipeline", p_str], &cache, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let locked = digest_in(&std::fs::read_to_string(dir.join("pipeline.toml.lock")).expect("lock file"));
    let other = plugin_wasm("entities");
    let out = host(&["plugin", "push", other.to_str().expect("utf8"), &oci], &cache, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let repushed = digest_in(&text(&out.stdout));
    assert_ne!(locked, repushed);
    for cmd in [&["validate", "--pipeline", p_str][..], &["--pipeline", p_str]] {
        let out = host(cmd, &cache, &[]);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(78), "{cmd:?}: {all}");
        assert!(all.contains("\"mood\"") && all.contains(&locked) && all.contains(&repushed), "{cmd:?}: {all}");
    }

    // Locked again (this pulls the new digest into the cache); with the
    // registry gone, the warm cache runs the pipeline…
    let out = host(&["plugin", "lock", "--pipeline", p_str], &cache, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    reg.stop();
    std::fs::remove_file(dir.join("out.jsonl")).expect("rm");
    let out = host(&["--pipeline", p_str], &cache, &[]);
    assert!(out.status.success(), "warm cache, no registry: {}", text(&out.stderr));
    let now = json_lines(&std::fs::read(dir.join("out.jsonl")).expect("out"));
    assert_eq!(now.len(), 2);
    let mood = &now[0]["traptor"]["enrichments"]["mood"];
    assert!(mood.is_object() && mood.get("label").is_none(), "the entities plugin (now under the tag) ran: {mood}");
    // Provenance names the registry reference and the manifest digest it ran.
    let stage = &now[0]["traptor"]["provenance"]["stages"][0];
    assert_eq!(stage["plugin"], oci.as_str(), "{stage}");
    assert_eq!(stage["digest"], repushed.as_str(), "{stage}");
    assert!(text(&out.stderr).contains("registry unreachable; using the cached component"));
    // …and a cold cache cannot, saying why.
    let out = host(&["--pipeline", p_str], &dir.join("cold"), &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("\"mood\"") && err.contains("registry error") && err.contains(&reg_host), "{err}");
}

#[test]
fn a_registry_with_basic_auth_takes_credentials_from_the_environment_the_pipeline_or_docker() {
    const PASSWORD: &str = "s3cret-pw-9";
    let reg = Registry::start(Some(("ci", PASSWORD)));
    let work = tempfile::tempdir().expect("tmp");
    let (dir, cache) = (work.path(), work.path().join("cache"));
    let lang = plugin_wasm("lang_filter");
    let lang = lang.to_str().expect("utf8");
    let reference = format!("oci://{}/team/lang-filter:2.0", reg.host());

    let out = host(&["plugin", "push", lang, &reference], &cache, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "anonymous push refused: {err}");
    assert!(err.contains("registry error") && err.contains(&reference), "{err}");

    let creds = [("TRAPTOR_REGISTRY_USERNAME", "ci"), ("TRAPTOR_REGISTRY_PASSWORD", PASSWORD)];
    let out = host(&["plugin", "push", lang, &reference], &cache, &creds);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let digest = digest_in(&text(&out.stdout));
    assert!(!text(&out.stdout).contains(PASSWORD) && !text(&out.stderr).contains(PASSWORD));

    // The pipeline's [stages.registry], the password from a file.
    posts(dir);
    std::fs::write(dir.join("pw"), format!("{PASSWORD}\n")).expect("write");
    let p = pipeline(
        dir,
        &reference,
        &format!(
            "config = {{ languages = [\"en\"] }}\n[stages.registry]\nusername = \"ci\"\npassword = {{ file = {:?} }}",
            dir.join("pw").display()
        ),
    );
    let out = host(&["--pipeline", p.to_str().expect("utf8")], &cache, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains(PASSWORD));
    assert_eq!(json_lines(&std::fs::read(dir.join("out.jsonl")).expect("out")).len(), 2);

    // Docker's config.json (`auths`, base64 user:password), a cold cache.
    let docker = dir.join("docker");
    std::fs::create_dir_all(&docker).expect("mkdir");
    let auth = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("ci:{PASSWORD}"))
    };
    std::fs::write(docker.join("config.json"), serde_json::json!({"auths": {reg.host(): {"auth": auth}}}).to_string())
        .expect("write");
    let out =
        host(&["plugin", "pull", &reference], &dir.join("cold"), &[("DOCKER_CONFIG", docker.to_str().expect("utf8"))]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(digest_in(&text(&out.stdout)), digest);
    // A wrong password is refused, and not shown.
    let out = host(
        &["plugin", "pull", &reference],
        &dir.join("cold2"),
        &[("TRAPTOR_REGISTRY_USERNAME", "ci"), ("TRAPTOR_REGISTRY_PASSWORD", "wrong-pw-123")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("wrong-pw-123"));
}

/// Issue 26: a signature travels with the image. `plugin sign oci://…`
/// attaches it to the manifest as a referrer (distribution 2.8 has no
/// referrers API: the referrers tag schema's index lists it); a pipeline
/// with `[verify] keys` pulls and checks it, refuses an unsigned tag with
/// exit 78 naming stage, digest and keys, and a warm cache checks the
/// signatures seen before when the registry is gone.
#[test]
fn signatures_travel_with_the_image_as_referrers() {
    let mut reg = Registry::start(None);
    let work = tempfile::tempdir().expect("tmp");
    let (dir, cache) = (work.path(), work.path().join("cache"));
    let reg_host = reg.host();
    let s = |p: &Path| p.to_str().expect("utf8").to_owned();
    let out = host(&["plugin", "keygen", "--out", &s(&dir.join("team"))], &cache, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let signed = format!("oci://{reg_host}/team/sentiment:1.0");
    let unsigned = format!("oci://{reg_host}/team/sentiment:2.0");
    let sentiment = plugin_wasm("sentiment");
    for r in [&signed, &unsigned] {
        let out = host(&["plugin", "push", &s(&sentiment), r], &cache, &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    // 2.0 holds other bytes (another component), so its digest differs.
    let out = host(&["plugin", "push", &s(&plugin_wasm("entities")), &unsigned], &cache, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let manifest = digest_in(&text(&host(&["plugin", "pull", &signed], &cache, &[]).stdout));
    let out = host(&["plugin", "sign", &signed, "--key", &s(&dir.join("team.key"))], &cache, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sig_manifest = digest_in(&text(&out.stdout));
    // In the registry: the referrers tag schema's index names the signature.
    let tag = manifest.replacen(':', "-", 1);
    let (status, body) = registry_get(&reg_host, &format!("/v2/team/sentiment/manifests/{tag}"));
    assert_eq!(status, 200, "{body}");
    let index: serde_json::Value = serde_json::from_str(&body).expect("index");
    assert_eq!(index["manifests"][0]["digest"], sig_manifest.as_str(), "{index}");
    assert_eq!(index["manifests"][0]["artifactType"], "application/vnd.traptor.plugin.signature.v1+json");
    let (_, body) = registry_get(&reg_host, &format!("/v2/team/sentiment/manifests/{sig_manifest}"));
    let sig: serde_json::Value = serde_json::from_str(&body).expect("manifest");
    assert_eq!(sig["subject"]["digest"], manifest.as_str(), "{sig}");

    // A fresh cache: `plugin verify` and the pipeline fetch it from the registry.
    let fresh = dir.join("fresh-cache");
    let out = host(&["plugin", "verify", &signed, "--key", &s(&dir.join("team.pub"))], &fresh, &[]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    posts(dir);
    let verify = "[stages.verify]\nkeys = [\"team.pub\"]";
    let p = pipeline(dir, &signed, verify);
    let out = host(&["--pipeline", &s(&p)], &fresh, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("signature verified"), "{}", text(&out.stderr));
    let p2 = pipeline(dir, &unsigned, verify);
    for cmd in [&["validate", "--pipeline", &s(&p2)][..], &["--pipeline", &s(&p2)]] {
        let out = host(cmd, &fresh, &[]);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(78), "{all}");
        assert!(all.contains("\"mood\"") && all.contains("team.pub") && all.contains("no signature"), "{all}");
    }
    // The registry gone, the warm cache checks the signatures seen before.
    let p = pipeline(dir, &signed, verify);
    reg.stop();
    let out = host(&["--pipeline", &s(&p)], &fresh, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("signature verified"), "{}", text(&out.stderr));
}

/// A plain GET against the registry: (status, body).
fn registry_get(host: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    let accept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json";
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: {accept}\r\n\r\n").expect("write");
    let mut r = String::new();
    s.read_to_string(&mut r).expect("read");
    let status = r.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, r.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}
