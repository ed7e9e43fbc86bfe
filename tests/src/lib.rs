//! Helpers for the end-to-end tests: locate the `traptor-host` binary (built
//! before the tests, never by them), write pipeline files, run the binary with a deadline.

pub mod fake_http;
pub mod fake_jetstream;
pub mod fake_mastodon;
pub mod fake_x;
pub mod layers;
pub mod pipeline;

pub use pipeline::PipelineFile;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// A fixture under `tests/fixtures/` (real data by others, each folder with
/// its licence; see `tests/fixtures/README.md`).
pub fn fixture(rel: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(rel)
}

/// Path of the `traptor-host` binary (debug profile), built before the
/// tests run (`scripts/test.sh` runs `cargo build --workspace --all-targets`
/// once): a test builds nothing. `TRAPTOR_HOST_BIN` points at another build.
/// A missing binary, or one older than the host's sources, fails the test
/// with the command that builds it, so no test runs a stale binary.
pub fn traptor_host() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("TRAPTOR_HOST_BIN") {
            return PathBuf::from(p);
        }
        // A relative CARGO_TARGET_DIR is the workspace's (tests run in tests/).
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), |t| repo_root().join(t));
        let bin = target.join("debug").join("traptor-host");
        let build = "run `cargo build --workspace --all-targets` first (scripts/test.sh does)";
        let built = std::fs::metadata(&bin)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| panic!("no {}: {build}", bin.display()));
        if let Some(newer) = newer_source(&bin, built) {
            panic!("{} is older than {}: {build}", bin.display(), newer.display());
        }
        bin
    })
    .clone()
}

/// A source file the binary was built from (cargo's dep-info beside it,
/// `traptor-host.d`) modified after `built` (a file dated in the future is
/// left out: cargo rebuilds for it every time, so it says nothing).
fn newer_source(bin: &Path, built: std::time::SystemTime) -> Option<PathBuf> {
    let dep_info = std::fs::read_to_string(bin.with_extension("d")).ok()?;
    let (_, deps) = dep_info.split_once(": ")?;
    deps.lines().next()?.split_whitespace().map(PathBuf::from).find(|p| {
        std::fs::metadata(p).and_then(|m| m.modified()).is_ok_and(|t| t > built && t <= std::time::SystemTime::now())
    })
}

/// A state directory of its own for each collector a test starts (the
/// buffer and dedup defaults live there), so tests running side by side
/// never share one; a test that restarts a collector on the same state
/// names its directories in the pipeline file (or passes `XDG_STATE_HOME`).
pub fn fresh_state_dir() -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    repo_root().join("target/test-state").join(format!("{}-{n}", std::process::id()))
}

/// Path of an example plugin component (Rust, Python or JavaScript), built
/// before the tests run by `scripts/build-plugins.sh` (`scripts/test.sh`
/// runs it): a test builds nothing.
pub fn plugin_wasm(name: &str) -> PathBuf {
    let target = repo_root().join("plugins/target");
    let candidates = [
        target.join("wasm32-wasip2/release").join(format!("{name}.wasm")),
        target.join("python").join(format!("{name}.wasm")),
        target.join("js").join(format!("{name}.wasm")),
    ];
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        panic!(
            "no plugin {name}.wasm under {}: run `bash scripts/build-plugins.sh` first (scripts/test.sh does)",
            target.display()
        )
    })
}

/// An example plugin of one language (`go`, `c`: plugins/<lang>/<name>, built
/// by `scripts/build-plugins.sh` with `traptor-host plugin build`).
pub fn plugin_wasm_of(lang: &str, name: &str) -> PathBuf {
    let p = repo_root().join("plugins/target").join(lang).join(format!("{name}.wasm"));
    assert!(p.is_file(), "no {}: run `bash scripts/build-plugins.sh` first (scripts/test.sh does)", p.display());
    p
}

/// The tools cache `plugin build` and scripts/build-plugins.sh install into.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("TRAPTOR_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/traptor/tools"))
}

/// The environment Rust plugin projects build in: one target directory for
/// every test (a cold build is ~40 s), and this repository's toolchain, which
/// has the wasm32-wasip2 target (outside the repository rustup would pick its
/// default toolchain).
pub fn rust_plugin_env() -> Vec<(&'static str, String)> {
    let toolchain = std::fs::read_to_string(repo_root().join("rust-toolchain.toml")).expect("rust-toolchain.toml");
    let channel = toolchain.lines().find_map(|l| l.strip_prefix("channel = ")).expect("channel").trim_matches('"');
    vec![
        ("CARGO_TARGET_DIR", repo_root().join("target/scaffold").display().to_string()),
        ("RUSTUP_TOOLCHAIN", channel.to_owned()),
    ]
}

/// Run `traptor-host` with `args`, killing it after `limit`.
pub fn run_host(args: &[&str], limit: Duration) -> Output {
    run_host_with(args, &[], limit)
}

/// [`run_host`] with extra environment variables.
pub fn run_host_with(args: &[&str], envs: &[(&str, &str)], limit: Duration) -> Output {
    let mut child = Command::new(traptor_host())
        .args(args)
        .env("RUST_LOG", "info")
        .env("XDG_STATE_HOME", fresh_state_dir())
        .env("TRAPTOR_CACHE_DIR", repo_root().join("target/test-plugin-cache"))
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn traptor-host");
    let deadline = Instant::now() + limit;
    // Read output on threads so a full pipe never blocks the child.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut v).map(|_| v).unwrap_or_default()
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut v).map(|_| v).unwrap_or_default()
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("traptor-host {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: t_out.join().unwrap_or_default(), stderr: t_err.join().unwrap_or_default() }
}

/// Parse JSON lines, failing on any line that is not JSON.
pub fn json_lines(bytes: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("output line {} is not JSON ({e}): {l}", i + 1))
        })
        .collect()
}

/// Rule ids of an output record's `collection_rules`, or `["Not Found"]`.
pub fn rule_ids(v: &serde_json::Value) -> Vec<String> {
    let t = &v["traptor"];
    match t["collection_rules"].as_array() {
        Some(rules) => rules.iter().map(|r| r["rule_id"].as_str().unwrap_or("?").to_owned()).collect(),
        None => vec![t["rule_tag"].as_str().unwrap_or("(no traptor object)").to_owned()],
    }
}

/// A real `redis-server` on a free loopback port, killed on drop. No
/// persistence unless asked (`with_persistence`), its own temp directory.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<std::process::Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    persist: bool,
    /// More `redis-server` options (TLS, renamed commands).
    extra: Vec<String>,
    /// `requirepass`, also used by the test's own connections.
    password: Option<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::launch(false)
    }

    /// Append-only file on (fsync always): data survives a kill and restart.
    pub fn with_persistence() -> RedisServer {
        Self::launch(true)
    }

    /// With more server options, and a password (`requirepass`) if given.
    pub fn with_options(extra: &[String], password: Option<&str>) -> RedisServer {
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("tmp"),
            persist: false,
            extra: extra.to_vec(),
            password: password.map(str::to_owned),
        };
        s.spawn();
        s
    }

    fn launch(persist: bool) -> RedisServer {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = RedisServer { child: None, port, dir, persist, extra: Vec::new(), password: None };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.persist {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        cmd.args(&self.extra);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start redis-server ({e}); install it (scripts/test.sh does: apt-get install redis-server)")
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut c) = self.try_conn()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn try_conn(&self) -> redis::RedisResult<redis::Connection> {
        let url = match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => self.url(),
        };
        redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(1))
    }

    /// A plain synchronous connection for test assertions.
    pub fn conn(&self) -> redis::Connection {
        self.try_conn().expect("connect to test redis")
    }

    /// Kill the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP/1.1 GET on loopback: (status, body). `accept` sets the header.
pub fn http_get(port: u16, path: &str, accept: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\nConnection: close\r\n\r\n").expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    (status, if chunked { dechunk(body) } else { body.to_owned() })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Parse a metrics exposition with the Prometheus project's own Python
/// parser (Debian's python3-prometheus-client): every sample as
/// `{"name", "labels", "value"}`, or a panic naming the parse error.
pub fn parse_metrics(text: &str, openmetrics: bool) -> Vec<serde_json::Value> {
    let module = if openmetrics { "prometheus_client.openmetrics.parser" } else { "prometheus_client.parser" };
    let script = format!(
        "import sys, json\nfrom {module} import text_string_to_metric_families as p\n\
         out=[{{'name':s.name,'labels':s.labels,'value':s.value}} for f in p(sys.stdin.read()) for s in f.samples]\n\
         print(json.dumps(out))"
    );
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 (scripts/test.sh installs python3-prometheus-client)");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("python");
    assert!(
        out.status.success(),
        "the Prometheus parser refused the metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// The value of the sample `name` with `labels` (a subset), if any.
pub fn sample(samples: &[serde_json::Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .and_then(|s| s["value"].as_f64())
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the
/// `openssl` command in `dir`: `(ca.pem, server.pem, server.key)`.
pub fn tls_certificates(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=traptor test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").expect("write");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

/// Wait until `f` returns `Some`, polling every 20 ms, failing after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `traptor-host` whose stderr is collected in the background.
#[derive(Debug)]
pub struct Host {
    child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    /// The stderr reader: joined once the process has exited, so the log
    /// holds every line (it ends at the pipe's end of file).
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Host {
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Host {
        let mut cmd = Command::new(traptor_host());
        cmd.args(args)
            .env("RUST_LOG", "info")
            .env("XDG_STATE_HOME", fresh_state_dir())
            .env("TRAPTOR_CACHE_DIR", repo_root().join("target/test-plugin-cache"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn traptor-host");
        let mut err = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = std::io::Read::read(&mut err, &mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut l) = sink.lock() {
                    l.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Host { child, log, reader: Some(reader) }
    }

    /// The process has exited: let the log reader read to the end.
    fn join_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    /// SIGKILL, and wait until the process is gone (reaped: its files,
    /// locks among them, are closed), as a supervisor would before a restart.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_reader();
        self.log()
    }

    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Wait for a line containing `needle` in the log.
    pub fn wait_log(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log().contains(needle) {
            if Instant::now() >= deadline {
                let log = self.log();
                let tail = &log[log.len().saturating_sub(4000)..];
                panic!("timed out waiting for log line {needle:?}; log ends:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for the process to end by itself (killed after `limit`).
    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.join_reader();
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.join_reader();
                panic!("traptor-host did not end within {limit:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait; returns the exit status.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let status = self.child.wait().expect("wait");
        self.join_reader();
        let log = self.log();
        (status, log)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    /// Peak resident memory (KiB) while an outage lasts `outage`, then, once
    /// `end_outage` has run, until the process exits (within `limit`).
    pub fn peak_rss_through(&mut self, outage: Duration, end_outage: impl FnOnce(), limit: Duration) -> u64 {
        let mut peak = 0;
        let until = Instant::now() + outage;
        while Instant::now() < until {
            peak = peak.max(rss_kib(self.pid()));
            std::thread::sleep(Duration::from_millis(500));
        }
        end_outage();
        wait_for("the run to end", limit, || {
            peak = peak.max(rss_kib(self.pid()));
            (!self.is_running()).then_some(())
        });
        peak
    }
}

impl Drop for Host {
    /// Killed and reaped: a test that starts another collector on the same
    /// state (buffer lock, output file) never races a dying one.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        self.join_reader();
    }
}

/// A real Kafka-protocol broker process (Tansu, memory storage) on a free
/// port, started by `scripts/tansu.sh`; stopped on drop.
#[derive(Debug)]
pub struct TansuBroker {
    pub port: u16,
    dir: tempfile::TempDir,
}

impl TansuBroker {
    pub fn start() -> TansuBroker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let dir = tempfile::tempdir().expect("tmp");
        let b = TansuBroker { port, dir };
        b.script(&["start", b.dir.path().to_str().expect("utf8"), &port.to_string()]);
        b
    }

    fn script(&self, args: &[&str]) {
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/tansu.sh"))
            .args(args)
            .status()
            .expect("run scripts/tansu.sh");
        assert!(status.success(), "scripts/tansu.sh {args:?} failed");
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        self.script(&["topic", &self.port.to_string(), name, &partitions.to_string()]);
    }

    pub fn pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.path().join("tansu.pid")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }

    /// SIGSTOP / SIGCONT: a hung broker (memory storage keeps its data).
    pub fn pause(&self) {
        let _ = Command::new("kill").args(["-STOP", &self.pid().to_string()]).status();
    }
    pub fn resume(&self) {
        let _ = Command::new("kill").args(["-CONT", &self.pid().to_string()]).status();
    }
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        self.resume();
        self.script(&["stop", self.dir.path().to_str().unwrap_or("")]);
    }
}

/// Write `n` synthetic posts (`traptor-host generate`, seeded) to topic `raw`
/// of `brokers`, keyed by id; returns their ids in order.
pub fn produce_raw(brokers: &str, n: usize, seed: u64) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tmp");
    let corpus = dir.path().join("posts.jsonl");
    let out = run_host(
        &[
            "generate",
            "--count",
            &n.to_string(),
            "--seed",
            &seed.to_string(),
            "--output",
            corpus.to_str().expect("utf8"),
        ],
        Duration::from_secs(120),
    );
    assert!(out.status.success());
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).create().expect("producer");
    let mut ids = Vec::new();
    for line in std::fs::read_to_string(&corpus).expect("read").lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let id = v["id_str"].as_str().expect("id").to_owned();
        loop {
            match producer.send(BaseRecord::to("raw").key(&id).payload(line)) {
                Ok(()) => break,
                Err(_) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        ids.push(id);
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    ids
}

/// Resident memory of a process in KiB (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A pipeline file in `dir` for the Kafka tests: rule `c` = "coffee", the given
/// `[source]` body, and a Kafka sink to `brokers` (topic `traptor`, spool in
/// `dir/spool`) holding at most `max_inflight_bytes`, with librdkafka's
/// reconnect backoff capped at `reconnect_ms`. Tests adjust it by replacing lines.
pub fn kafka_pipeline(dir: &Path, brokers: &str, source: &str, max_inflight_bytes: u64, reconnect_ms: u64) -> PathBuf {
    std::fs::write(dir.join("rules.jsonl"), "{\"rule_id\":\"c\",\"value\":\"coffee\"}\n").expect("rules");
    PipelineFile::new(source)
        .id(4)
        .sink(&format!(
            "type = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"traptor\"\nmax_inflight_bytes = {max_inflight_bytes}\n\n\
             [sink.properties]\n\"reconnect.backoff.max.ms\" = \"{reconnect_ms}\"\n\n[sink.spool]\ndir = \"spool\""
        ))
        .write(dir)
}

/// Edit a test's file by replacing text; every `from` must be present (an
/// edit never silently misses). Returns the new text.
pub fn edit_file(path: &Path, edits: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(path).expect("read file to edit");
    for (from, to) in edits {
        assert!(text.contains(from), "{from:?} not in {}", path.display());
        text = text.replace(from, to);
    }
    std::fs::write(path, &text).expect("write edited file");
    text
}

/// A finished run's standard output and standard error, as text.
pub fn all_output(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
