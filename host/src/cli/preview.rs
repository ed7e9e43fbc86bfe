//! `rules preview`: a proposed rule set against the current one, over a
//! replay file or a running collector's recent posts (see [`crate::preview`]).

use std::path::{Path, PathBuf};

use super::{fail, runtime};
use crate::config::LoadedConfig;
use crate::exit::Exit;
use crate::post::Format;
use crate::preview::{self, Corpus, PreviewError, Style};
use crate::rules::{Rule, RuleType};

#[derive(Debug, clap::Args)]
pub(super) struct PreviewArgs {
    /// The proposed rules (JSON lines, the rules file format).
    #[arg(long, value_name = "FILE")]
    proposed: PathBuf,
    /// The current rules, as a rules file.
    #[arg(long, value_name = "FILE", conflicts_with = "pipeline")]
    current: Option<PathBuf>,
    /// The current rules from this pipeline's rule store (its file, or its
    /// collector's rules in Redis). With --admin alone: the running
    /// collector's rules.
    #[arg(long, value_name = "FILE")]
    pipeline: Option<PathBuf>,
    /// Posts to match: a replay file (any source format).
    #[arg(long, value_name = "FILE", required_unless_present = "admin")]
    corpus: Option<PathBuf>,
    /// The corpus's format; guessed per record from its keys when left out.
    #[arg(long = "corpus-format", value_name = "FORMAT", value_parser = parse_format)]
    corpus_format: Option<Format>,
    /// Posts to match: a running collector's recent posts, from its admin
    /// listener (`GET /api/recent`; `[admin] recent_posts` of them).
    #[arg(long, value_name = "URL", conflicts_with = "corpus")]
    admin: Option<String>,
    /// A bearer token for the admin listener (when it has `read_token`).
    #[arg(long, env = "TRAPTOR_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Rule type of rules that do not name one.
    #[arg(long = "type", value_name = "TYPE", default_value = "track")]
    rule_type: RuleType,
    /// table (for people), json (one object), markdown (for a review).
    #[arg(long, value_enum, default_value = "table")]
    format: Style,
}

fn parse_format(s: &str) -> Result<Format, String> {
    match s {
        "twitter_v1" => Ok(Format::TwitterV1),
        "x_v2" => Ok(Format::XV2),
        "jetstream" => Ok(Format::Jetstream),
        "mastodon" => Ok(Format::Mastodon),
        _ => Err(format!("{s:?}: expected twitter_v1, x_v2, jetstream or mastodon")),
    }
}

pub(super) fn preview(a: PreviewArgs) -> Exit {
    let proposed = match preview::rules_file(&a.proposed, a.rule_type) {
        Ok(r) => r,
        Err(e) => return fail(e, Exit::Config),
    };
    let current = match current_rules(&a) {
        Ok(r) => r,
        Err((e, exit)) => return fail(e, exit),
    };
    let corpus = match (&a.corpus, &a.admin) {
        (Some(path), _) => match Corpus::read(path, a.corpus_format) {
            Ok(c) => (c, path.display().to_string()),
            Err(e) => return fail(e, Exit::Config),
        },
        (None, Some(url)) => match recent_posts(url, a.admin_token.as_deref()) {
            Ok(c) => (c, format!("{url}/api/recent")),
            Err(e) => return fail(e, Exit::Unavailable),
        },
        (None, None) => return fail("give --corpus FILE or --admin URL", Exit::Config),
    };
    let (corpus, name) = corpus;
    if corpus.skipped > 0 {
        tracing::warn!(corpus = %name, skipped = corpus.skipped, first_lines = ?corpus.skipped_lines, "records that are not posts of the format were skipped");
    }
    if corpus.is_empty() {
        return fail(PreviewError::EmptyCorpus { path: name, skipped: corpus.skipped }, Exit::Config);
    }
    let report = preview::preview(&current, &proposed, &corpus);
    match preview::write(&report, a.format, &mut std::io::stdout().lock()) {
        Ok(()) => Exit::Success,
        Err(e) => fail(format!("cannot write the preview: {e}"), Exit::Unavailable),
    }
}

/// The current set: a file, the pipeline's store, or none (every rule new).
fn current_rules(a: &PreviewArgs) -> Result<Vec<Rule>, (String, Exit)> {
    if let Some(f) = &a.current {
        return preview::rules_file(f, a.rule_type).map_err(|e| (e.to_string(), Exit::Config));
    }
    match (&a.pipeline, &a.admin) {
        (Some(p), _) => from_pipeline(p),
        // The running collector's own rules.
        (None, Some(url)) => {
            let url = format!("{}/api/rules.jsonl", url.trim_end_matches('/'));
            let body = http_get(&url, a.admin_token.as_deref()).map_err(|e| (e, Exit::Unavailable))?;
            let snap = crate::rules::file::parse_bytes(&body, &url, a.rule_type, usize::MAX);
            preview::strict(snap).map_err(|e| (e.to_string(), Exit::Unavailable))
        }
        (None, None) => {
            tracing::info!("no --current, --pipeline or --admin: every proposed rule is new");
            Ok(Vec::new())
        }
    }
}

fn from_pipeline(path: &Path) -> Result<Vec<Rule>, (String, Exit)> {
    let cfg = LoadedConfig::load(path).map_err(|e| (e.to_string(), Exit::Config))?;
    let who = cfg.config.traptor.collector();
    let store = cfg.config.rules.component();
    let Some(rt) = runtime(false) else { return Err(("cannot start the runtime".into(), Exit::Unavailable)) };
    rt.block_on(async {
        let mut conn = match store.redis_url() {
            Some(url) => Some(
                crate::coordination::rules_admin::connect_cli(&url)
                    .await
                    .map_err(|e| (e.to_string(), Exit::Unavailable))?,
            ),
            None => None,
        };
        let snap = store.load(who, conn.as_mut()).await.map_err(|e| (e.to_string(), Exit::Config))?;
        snap.report(&store.describe(who));
        Ok(snap.rules.to_vec())
    })
}

/// The admin listener's recent posts (`GET /api/recent`: JSON lines of
/// `{"format": …, "post": "<raw JSON>"}`).
fn recent_posts(url: &str, token: Option<&str>) -> Result<Corpus, String> {
    let url = format!("{}/api/recent", url.trim_end_matches('/'));
    let body = http_get(&url, token)?;
    let mut corpus = Corpus::default();
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let entry: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| format!("{url}, line {}: {e}", i + 1))?;
        let format = entry["format"].as_str().and_then(|f| parse_format(f).ok()).unwrap_or(Format::TwitterV1);
        let post = entry["post"].as_str().map(|s| s.as_bytes().to_vec()).unwrap_or_default();
        corpus.push(format, post, i + 1);
    }
    Ok(corpus)
}

/// GET `url` (with the admin token, if any): the body of a 2xx answer.
fn http_get(url: &str, token: Option<&str>) -> Result<bytes::Bytes, String> {
    let Some(rt) = runtime(false) else { return Err("cannot start the runtime".into()) };
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        let mut req = client.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{url}: HTTP {status}: {}", String::from_utf8_lossy(&body).trim()));
        }
        Ok(body)
    })
}
