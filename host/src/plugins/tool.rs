//! `traptor-host plugin inspect|run|test|push|pull`: try, check and share a
//! plugin without a pipeline.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::stages::OnError;
use super::{
    Action, Answer, Answers, PluginError, Runtime, STAGE_INTERFACE, Stage, StagePost, StageSpec, abi_range, field_names,
};
use crate::matcher::{Matcher, Scratch};
use crate::post::{Message, v1};
use crate::rules::RuleType;

/// A spec for trying a plugin by hand: generous limits, no grants.
pub fn adhoc_spec(plugin: &Path, config_json: String) -> StageSpec {
    StageSpec {
        name: plugin.file_stem().map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned()),
        plugin: plugin.to_owned(),
        config_json,
        on_error: OnError::Skip,
        memory_limit_bytes: 512 << 20,
        timeout: Duration::from_secs(10),
        init_timeout: Duration::from_secs(60),
        grant_clock: false,
        grant_env: Vec::new(),
        grant_dirs: Vec::new(),
        breaker_failures: 0,
        breaker_cooldown: Duration::from_secs(1),
    }
}

/// Print what a plugin says about itself; with a configuration (`Some`), also
/// whether its initialiser accepts it.
pub fn inspect(plugin: &Path, config_json: Option<&str>, out: &mut dyn Write) -> Result<(), PluginError> {
    let runtime = Runtime::new(Runtime::default_cache_dir())?;
    let spec = adhoc_spec(plugin, config_json.unwrap_or("{}").to_owned());
    let started = std::time::Instant::now();
    let (c, d) = Stage::describe_only(&runtime, &spec)?;
    let loaded = started.elapsed();
    let instantiate = Stage::instantiate_median(&runtime, &c, &spec, 25)?;
    let c = &c;
    let d = &d;
    let schema = serde_json::from_str::<serde_json::Value>(&d.config_schema)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| d.config_schema.clone());
    let kind = d.kind.as_str();
    let _ = writeln!(out, "plugin:      {} ({} bytes, sha256 {})", c.path.display(), c.size, c.sha256);
    let _ = writeln!(out, "name:        {} {} ({kind})", d.name, d.version);
    let _ = writeln!(out, "summary:     {}", d.summary);
    let _ = writeln!(
        out,
        "abi:         {STAGE_INTERFACE}@{} (this host runs ABI {}: compatible{})",
        c.abi,
        abi_range(),
        match c.version {
            super::Abi::V0_2 => "",
            super::Abi::V0_1 => "; 0.1 lowers every field of every post: rebuild on 0.2 for a cheaper boundary",
        }
    );
    let reads = field_names(d.reads);
    let _ = writeln!(
        out,
        "reads:       {}{}",
        if reads.is_empty() { "nothing (the host sends no field)".to_owned() } else { reads.join(", ") },
        if d.reads.contains(super::wit::Fields::RAW) { " (raw: each post's original JSON is copied in)" } else { "" }
    );
    let _ = writeln!(
        out,
        "start-up:    {} and described in {:.1} ms; instantiate {:.0} µs (median of 25, in-process)",
        if c.from_cache { "read from the compile cache" } else { "compiled" },
        loaded.as_secs_f64() * 1e3,
        instantiate.as_secs_f64() * 1e6
    );
    let _ = writeln!(out, "imports:     {}", c.imports.join(", "));
    let _ = writeln!(out, "exports:     {}", c.exports.join(", "));
    let _ = writeln!(out, "config schema:");
    for l in schema.lines() {
        let _ = writeln!(out, "  {l}");
    }
    if let Some(cfg) = config_json {
        match Stage::load(&runtime, spec) {
            Ok(_) => {
                let _ = writeln!(out, "config:      {cfg} accepted");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Errors of `plugin run`.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--config {0:?}: expected KEY=VALUE")]
    BadConfig(String),
    #[error("cannot write output: {0}")]
    Write(#[source] std::io::Error),
    #[error("{path}:{line}: {message}")]
    Case { path: PathBuf, line: usize, message: String },
}

impl RunError {
    /// Standard output that cannot be written is the outside world's fault.
    pub fn kind(&self) -> crate::exit::ErrorKind {
        match self {
            RunError::Write(_) => crate::exit::ErrorKind::Runtime,
            RunError::Plugin(e) => e.kind(),
            _ => crate::exit::ErrorKind::Config,
        }
    }
}

/// Turn `k=v` pairs into the JSON object `init` receives. A value that parses
/// as JSON is taken as JSON (`n=3`, `langs=["en"]`), otherwise as a string.
pub fn config_from_pairs(pairs: &[String]) -> Result<String, RunError> {
    let mut obj = serde_json::Map::new();
    for p in pairs {
        let (k, v) = p.split_once('=').ok_or_else(|| RunError::BadConfig(p.clone()))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_owned()));
        obj.insert(k.trim().to_owned(), value);
    }
    Ok(serde_json::Value::Object(obj).to_string())
}

/// What `plugin run` saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub posts: u64,
    pub keep: u64,
    pub enrich: u64,
    pub drop: u64,
    pub error: u64,
    pub failed: u64,
    pub skipped_lines: u64,
}

/// Run a plugin over the posts of a JSON-lines file; print one outcome per post.
pub fn run(
    plugin: &Path,
    config_json: String,
    input: &Path,
    rules: Option<&Path>,
    batch_size: usize,
    out: &mut dyn Write,
) -> Result<RunSummary, RunError> {
    let runtime: Arc<Runtime> = Runtime::new(Runtime::default_cache_dir())?;
    let stage = Stage::load(&runtime, adhoc_spec(plugin, config_json))?;
    let matcher = match rules {
        Some(p) => {
            let snap = crate::rules::file::load(p, RuleType::Track)
                .map_err(|e| RunError::Read { path: p.to_owned(), source: std::io::Error::other(e.to_string()) })?;
            snap.report(&p.display().to_string());
            Matcher::new(snap.rules)
        }
        None => Matcher::new(Vec::new()),
    };
    let file = std::fs::File::open(input).map_err(|source| RunError::Read { path: input.to_owned(), source })?;
    let lines: Vec<String> = std::io::BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|source| RunError::Read { path: input.to_owned(), source })?;
    let mut summary = RunSummary::default();
    let mut slot = None;
    let mut scratch = Scratch::default();
    let batch_size = batch_size.max(1);
    // Decode every post first (views borrow the lines), then call per batch.
    let mut posts = Vec::new();
    for line in &lines {
        if line.trim().is_empty() {
            continue;
        }
        match v1::decode(line.as_bytes()) {
            Ok(Message::Post(view)) => {
                let mut matched = Vec::new();
                matcher.match_post(&view, &mut scratch, &mut matched);
                posts.push((line.as_bytes(), view, matched));
            }
            _ => summary.skipped_lines += 1,
        }
    }
    for chunk in posts.chunks(batch_size) {
        let batch: Vec<StagePost<'_>> =
            chunk.iter().map(|(raw, view, matched)| StagePost { view, raw, matched }).collect();
        let result = stage.process(&mut slot, &batch, matcher.rules());
        let per_post = result.as_ref().map(|a| a.per_post(batch.len())).unwrap_or_default();
        for (i, (_, view, _)) in chunk.iter().enumerate() {
            summary.posts += 1;
            let mut line = match &result {
                Ok(answers) => outcome_json(answers, per_post.get(i).copied().flatten()),
                Err(e) => serde_json::json!({"outcome": "failed", "error": e.to_string()}),
            };
            match line["outcome"].as_str() {
                Some("keep") => summary.keep += 1,
                Some("enrich") => summary.enrich += 1,
                Some("drop") => summary.drop += 1,
                Some("error") => summary.error += 1,
                _ => summary.failed += 1,
            }
            if let serde_json::Value::Object(o) = &mut line {
                let mut with_id = serde_json::Map::from_iter([("id".to_owned(), view.id.to_string().into())]);
                with_id.append(o);
                *o = with_id;
            }
            let line = verbatim_fields(line, &result, per_post.get(i).copied().flatten());
            writeln!(out, "{line}").map_err(RunError::Write)?;
        }
    }
    Ok(summary)
}

/// Registry settings for the command line: Docker's `config.json`, or
/// `TRAPTOR_REGISTRY_USERNAME` + `TRAPTOR_REGISTRY_PASSWORD`, or
/// `TRAPTOR_REGISTRY_TOKEN` (environment, never arguments: they would show
/// in `ps`).
pub fn cli_registry(insecure: bool) -> super::oci::RegistryConfig {
    use crate::secret::SecretRef;
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let env = |k: &str| SecretRef::Env { env: k.to_owned() };
    super::oci::RegistryConfig {
        username: std::env::var("TRAPTOR_REGISTRY_USERNAME").ok().filter(|u| !u.is_empty()),
        password: set("TRAPTOR_REGISTRY_PASSWORD").then(|| env("TRAPTOR_REGISTRY_PASSWORD")),
        token: set("TRAPTOR_REGISTRY_TOKEN").then(|| env("TRAPTOR_REGISTRY_TOKEN")),
        insecure,
    }
}

/// `plugin push`: publish a component with its description as annotations
/// (name, version, kind, ABI, summary); prints and returns the manifest digest.
pub fn push(file: &Path, reference: &str, insecure: bool, out: &mut dyn Write) -> Result<String, PluginError> {
    use super::oci::{OciRef, Registry};
    let r: OciRef = reference.parse()?;
    let runtime = Runtime::new(Runtime::default_cache_dir())?;
    let (c, d) = Stage::describe_only(&runtime, &adhoc_spec(file, "{}".into()))?;
    let bytes = std::fs::read(file).map_err(|source| PluginError::Read { path: file.to_owned(), source })?;
    let kind = d.kind.as_str();
    let mut a = serde_json::Map::new();
    for (k, v) in [
        ("org.opencontainers.image.title", d.name.as_str()),
        ("org.opencontainers.image.version", d.version.as_str()),
        ("org.opencontainers.image.description", d.summary.as_str()),
        ("dev.traptor.plugin.kind", kind),
        ("dev.traptor.plugin.abi", c.abi.as_str()),
    ] {
        a.insert(k.to_owned(), v.into());
    }
    // The TAG Runtime config: what the component is, for tools that read it.
    let config = serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [super::oci::digest_of(&bytes)],
        "component": { "exports": c.exports, "imports": c.imports },
    });
    let config = serde_json::to_vec(&config).map_err(|e| super::oci::OciError::Runtime(e.to_string()))?;
    let registry = Registry::new(&r, &cli_registry(insecure))?;
    let digest = super::oci::block_on(registry.push(&r, &bytes, &config, &a))?;
    let _ = writeln!(out, "{digest}");
    tracing::info!(plugin = %d.name, version = %d.version, reference = %r, %digest, bytes = bytes.len(), "pushed");
    Ok(digest)
}

/// `plugin pull`: fetch a component into the cache; prints its digest and file.
pub fn pull(reference: &str, insecure: bool, out: &mut dyn Write) -> Result<super::oci::Pulled, PluginError> {
    use super::oci::{OciCache, OciRef};
    let r: OciRef = reference.parse()?;
    let dir = Runtime::default_cache_dir()
        .ok_or_else(|| super::oci::OciError::Runtime("no cache directory (set HOME or TRAPTOR_CACHE_DIR)".into()))?;
    let pulled = super::oci::block_on(super::oci::fetch(&r, &cli_registry(insecure), &OciCache::new(&dir), None))?;
    let _ = writeln!(out, "{} {}", pulled.digest, pulled.path.display());
    Ok(pulled)
}

/// One post's outcome as JSON: `{"outcome": "keep"}`, `{"outcome":
/// "enrich", "fields": {…}}` (parsed), `{"outcome": "drop", "reason": …}`,
/// `{"outcome": "error", "error": …}`.
/// An enrichment printed as the plugin wrote it, byte for byte (re-written
/// only when it spans lines, which would break the JSON lines).
fn verbatim_fields<E>(line: serde_json::Value, result: &Result<Answers, E>, a: Option<&Answer>) -> String {
    let (Ok(answers), Some(a)) = (result, a) else { return line.to_string() };
    let text = answers.text(a);
    if a.action != Action::Enrich || text.contains('\n') || !line["fields"].is_object() {
        return line.to_string();
    }
    let mut head = line;
    if let serde_json::Value::Object(o) = &mut head {
        o.remove("fields");
    }
    let head = head.to_string();
    format!("{},\"fields\":{text}}}", &head[..head.len() - 1])
}

fn outcome_json(answers: &Answers, a: Option<&Answer>) -> serde_json::Value {
    let Some(a) = a else { return serde_json::json!({"outcome": "keep"}) };
    let text = answers.text(a);
    match a.action {
        Action::Enrich => {
            let fields = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .filter(serde_json::Value::is_object)
                .unwrap_or_else(|| serde_json::json!({"invalid_json": text}));
            serde_json::json!({"outcome": "enrich", "fields": fields})
        }
        Action::Drop => serde_json::json!({"outcome": "drop", "reason": text}),
        Action::Error => serde_json::json!({"outcome": "error", "error": text}),
    }
}

/// One golden case of `plugin test` (a line of the cases file).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// Shown in reports (default: the post's id).
    #[serde(default)]
    name: Option<String>,
    /// The post, as a v1.1 status object.
    post: serde_json::Value,
    /// Rules to match first (rule objects as in a rules file), so the plugin
    /// sees the post's matched rules.
    #[serde(default)]
    rules: Vec<serde_json::Value>,
    /// `keep`, `enrich`, `drop` or `error`.
    outcome: String,
    /// For `enrich`: the fields, exactly.
    #[serde(default)]
    fields: Option<serde_json::Map<String, serde_json::Value>>,
    /// For `drop`: the reason, exactly (optional).
    #[serde(default)]
    reason: Option<String>,
    /// For `error`: the message, exactly (optional).
    #[serde(default)]
    error: Option<String>,
}

/// What `plugin test` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TestSummary {
    pub passed: u64,
    pub failed: u64,
}

/// `plugin test`: run each golden case through the plugin (with its own
/// rules) and compare the outcome; print a diff per mismatch.
pub fn test_cases(
    plugin: &Path,
    config_json: String,
    cases: &Path,
    out: &mut dyn Write,
) -> Result<TestSummary, RunError> {
    let text = std::fs::read_to_string(cases).map_err(|source| RunError::Read { path: cases.to_owned(), source })?;
    let runtime: Arc<Runtime> = Runtime::new(Runtime::default_cache_dir())?;
    let stage = Stage::load(&runtime, adhoc_spec(plugin, config_json))?;
    let (mut slot, mut scratch, mut matched) = (None, Scratch::default(), Vec::new());
    let mut summary = TestSummary::default();
    let bad = |line: usize, message: String| RunError::Case { path: cases.to_owned(), line, message };
    for (n, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l)) {
        if line.trim().is_empty() {
            continue;
        }
        let case: Case = serde_json::from_str(line).map_err(|e| bad(n, format!("not a test case: {e}")))?;
        if !["keep", "enrich", "drop", "error"].contains(&case.outcome.as_str()) {
            return Err(bad(n, format!("outcome {:?}: expected keep, enrich, drop or error", case.outcome)));
        }
        let rules = case
            .rules
            .iter()
            .map(|r| crate::rules::Rule::from_json_text(&r.to_string(), RuleType::Track))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(n, format!("rules: {e}")))?;
        let matcher = Matcher::new(rules);
        let raw = case.post.to_string();
        let view = match v1::decode(raw.as_bytes()) {
            Ok(Message::Post(view)) => view,
            Ok(Message::Control(_)) => return Err(bad(n, "`post` is not a post (it needs id_str and text)".into())),
            Err(e) => return Err(bad(n, format!("post: {e}"))),
        };
        matcher.match_post(&view, &mut scratch, &mut matched);
        let post = StagePost { view: &view, raw: raw.as_bytes(), matched: &matched };
        let got = match stage.process(&mut slot, std::slice::from_ref(&post), matcher.rules()) {
            Ok(answers) => outcome_json(&answers, answers.changes.first()),
            Err(e) => serde_json::json!({"outcome": "failed", "error": e.to_string()}),
        };
        let name = case.name.clone().unwrap_or_else(|| format!("post {}", view.id));
        let diffs = case_diffs(&case, &got);
        if diffs.is_empty() {
            summary.passed += 1;
            writeln!(out, "ok      line {n}: {name}").map_err(RunError::Write)?;
        } else {
            summary.failed += 1;
            writeln!(out, "FAILED  line {n}: {name}").map_err(RunError::Write)?;
            for d in diffs {
                writeln!(out, "    {d}").map_err(RunError::Write)?;
            }
        }
    }
    writeln!(out, "{} cases: {} passed, {} failed", summary.passed + summary.failed, summary.passed, summary.failed)
        .map_err(RunError::Write)?;
    Ok(summary)
}

/// How `got` differs from what `case` expects, one line each.
fn case_diffs(case: &Case, got: &serde_json::Value) -> Vec<String> {
    let outcome = got["outcome"].as_str().unwrap_or("?");
    if outcome != case.outcome {
        let detail = match outcome {
            "enrich" => format!(" {}", got["fields"]),
            "drop" => format!(" ({})", got["reason"]),
            "error" | "failed" => format!(" ({})", got["error"]),
            _ => String::new(),
        };
        return vec![format!("outcome: expected {}, got {outcome}{detail}", case.outcome)];
    }
    let mut diffs = Vec::new();
    if let Some(want) = &case.fields {
        let empty = serde_json::Map::new();
        let have = got["fields"].as_object().unwrap_or(&empty);
        for (k, w) in want {
            match have.get(k) {
                None => diffs.push(format!("- {k}: {w} (expected, missing)")),
                Some(h) if h != w => diffs.push(format!("~ {k}: expected {w}, got {h}")),
                Some(_) => {}
            }
        }
        for (k, h) in have.iter().filter(|(k, _)| !want.contains_key(*k)) {
            diffs.push(format!("+ {k}: {h} (not expected)"));
        }
    }
    for (key, want) in [("reason", &case.reason), ("error", &case.error)] {
        if let Some(w) = want
            && got[key].as_str() != Some(w.as_str())
        {
            diffs.push(format!("{key}: expected {w:?}, got {}", got[key]));
        }
    }
    diffs
}

/// What `plugin sign` / `plugin verify` act on: a component file, or a
/// registry component (fetched into the cache; its manifest digest).
fn signing_target(target: &str, insecure: bool) -> Result<SigningTarget, PluginError> {
    use super::oci::{OciCache, OciRef};
    if !target.starts_with("oci://") {
        let path = PathBuf::from(target);
        let bytes = std::fs::read(&path).map_err(|source| PluginError::Read { path: path.clone(), source })?;
        return Ok(SigningTarget {
            digest: super::oci::digest_of(&bytes),
            sigs: super::signing::sig_path(&path),
            oci: None,
        });
    }
    let r: OciRef = target.parse()?;
    let dir = Runtime::default_cache_dir()
        .ok_or_else(|| super::oci::OciError::Runtime("no cache directory (set HOME or TRAPTOR_CACHE_DIR)".into()))?;
    let cfg = cli_registry(insecure);
    let pulled = super::oci::block_on(super::oci::fetch(&r, &cfg, &OciCache::new(&dir), None))?;
    let bytes =
        std::fs::read(&pulled.path).map_err(|source| PluginError::Read { path: pulled.path.clone(), source })?;
    Ok(SigningTarget {
        digest: super::oci::digest_of(&bytes),
        sigs: super::signing::sig_path(&pulled.path),
        oci: Some((r, cfg, pulled.digest)),
    })
}

struct SigningTarget {
    /// The component's digest (what is signed).
    digest: String,
    /// Its signature file (beside it; for a registry component, beside the cached copy).
    sigs: PathBuf,
    /// A registry component: its reference, registry settings and manifest digest.
    oci: Option<(super::oci::OciRef, super::oci::RegistryConfig, String)>,
}

/// `plugin keygen --out NAME`.
pub fn keygen(name: &Path, out: &mut dyn Write) -> Result<(), PluginError> {
    let (secret, public, id) = super::signing::keygen(name)?;
    let _ = writeln!(out, "{}\n{}", secret.display(), public.display());
    tracing::info!(key_id = %id, secret = %secret.display(), public = %public.display(), "key pair written; keep the .key file secret, hand out the .pub");
    Ok(())
}

/// `plugin sign FILE|oci://… --key NAME.key`: prints the signature's place.
pub fn sign(target: &str, key: &Path, insecure: bool, out: &mut dyn Write) -> Result<(), PluginError> {
    let secret = super::signing::read_secret(key)?;
    let t = signing_target(target, insecure)?;
    let record = super::signing::sign(&secret, &t.digest);
    super::signing::add_to_sig_file(&t.sigs, std::slice::from_ref(&record))?;
    match &t.oci {
        None => {
            let _ = writeln!(out, "{}", t.sigs.display());
        }
        Some((r, cfg, manifest)) => {
            let line = super::signing::record_line(&record);
            let registry = super::oci::Registry::new(r, cfg)?;
            let sig = super::oci::block_on(registry.push_signature(r, manifest, line.as_bytes(), &record.key_id))?;
            let _ = writeln!(out, "{sig}");
            tracing::info!(reference = %r, manifest = %manifest, signature = %sig, "signature attached to the manifest as a referrer");
        }
    }
    tracing::info!(digest = %t.digest, key_id = %record.key_id, "component signed");
    Ok(())
}

/// `plugin verify FILE|oci://… --key NAME.pub…`: Ok(false) when no key signed it.
pub fn verify(target: &str, keys: &[PathBuf], insecure: bool, out: &mut dyn Write) -> Result<bool, PluginError> {
    let keys = keys.iter().map(|k| super::signing::read_public(k)).collect::<Result<Vec<_>, _>>()?;
    let t = signing_target(target, insecure)?;
    let records = match &t.oci {
        None => super::signing::read_sig_file(&t.sigs)?,
        Some((r, cfg, manifest)) => {
            let registry = super::oci::Registry::new(r, cfg)?;
            super::oci::block_on(registry.signatures(r, manifest))?
        }
    };
    match super::signing::verify(&records, &t.digest, &keys) {
        Ok(k) => {
            let _ = writeln!(out, "{} signed by {} ({})", t.digest, k.path.display(), k.id);
            Ok(true)
        }
        Err(e) => {
            tracing::error!("{e}");
            Ok(false)
        }
    }
}
