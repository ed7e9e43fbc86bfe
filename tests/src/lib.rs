//! Helpers for the end-to-end tests: locate (and build) the `traptor-host`
//! binary, write pipeline files, run the binary with a deadline.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// `../shared/data/...` seen from the repository root.
pub fn shared_data(rel: &str) -> PathBuf {
    repo_root().join("../shared/data").join(rel)
}

/// Path of a freshly built `traptor-host` (debug profile). Builds it once per
/// test process, so the tests never run a stale binary. The command is the
/// one `scripts/test.sh` runs (`--workspace --all-targets`): the same feature
/// resolution, so it is a no-op there instead of a second build of every
/// dependency with other features.
pub fn traptor_host() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("TRAPTOR_HOST_BIN") {
            return PathBuf::from(p);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "--workspace", "--all-targets"])
            .current_dir(repo_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p traptor-host failed");
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from);
        target.join("debug").join("traptor-host")
    })
    .clone()
}

/// Path of an example plugin component (Rust, Python or JavaScript), building
/// them all once per test binary with `scripts/build-plugins.sh` (idempotent,
/// installs componentize-py / componentize-js outside the clone if missing).
pub fn plugin_wasm(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/build-plugins.sh"))
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .expect("run scripts/build-plugins.sh");
        assert!(status.success(), "building the example plugins failed (scripts/build-plugins.sh)");
    });
    let target = repo_root().join("plugins/target");
    let candidates = [
        target.join("wasm32-wasip2/release").join(format!("{name}.wasm")),
        target.join("python").join(format!("{name}.wasm")),
        target.join("js").join(format!("{name}.wasm")),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| panic!("no plugin {name}.wasm under {}", target.display()))
}

/// Run `traptor-host` with `args`, killing it after `limit`.
pub fn run_host(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(traptor_host())
        .args(args)
        .env("RUST_LOG", "info")
        .env("TRAPTOR_CACHE_DIR", repo_root().join("target/test-plugin-cache"))
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
