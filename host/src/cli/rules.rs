//! `rules import|list|plan|notify`: rules in Redis, through the rule store's
//! administration functions (`coordination::rules_admin`).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use redis::aio::ConnectionManager;

use super::{fail, runtime};
use crate::coordination::CoordinationError;
use crate::coordination::rules_admin as admin;
use crate::exit::Exit;
use crate::rules::{Collector, Rule, RuleType};

#[derive(Debug, clap::Args)]
pub(super) struct RulesArgs {
    #[command(flatten)]
    server: super::RedisArgs,
    /// Pub/sub channel for reload notices.
    #[arg(long, default_value = "traptor-notify", global = true)]
    channel: String,
    #[command(subcommand)]
    command: RulesCommand,
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Write a JSON-lines rules file into Redis (`traptor-<type>:<id>:<n>`):
    /// existing rule ids are updated in place, new ones placed on collectors
    /// with room; the collectors whose rules changed are notified.
    ///
    /// With `--geojson FILE --property NAME`, one `locations` rule per
    /// Polygon/MultiPolygon feature of a GeoJSON FeatureCollection instead
    /// (rule id `geo-<name>`), e.g. the countries of
    /// examples/places/countries.geojson; `--print` writes them as JSON
    /// lines for a rules file, without Redis.
    #[command(
        after_help = "Examples:\n  traptor-host rules import rules.jsonl --type track\n  traptor-host rules import --geojson examples/places/countries.geojson --property NAME\n  traptor-host rules import --geojson examples/places/countries.geojson --property NAME --print > places.jsonl"
    )]
    Import {
        /// Rules, one JSON object per line (the original traptor format).
        #[arg(required_unless_present = "geojson", conflicts_with = "geojson")]
        file: Option<PathBuf>,
        /// Rule type to import (rules of other types are reported and skipped).
        #[arg(long = "type", value_name = "TYPE", required_unless_present = "geojson")]
        rule_type: Option<RuleType>,
        /// A GeoJSON FeatureCollection: one locations rule per polygon feature.
        #[arg(long, value_name = "FILE", requires = "property")]
        geojson: Option<PathBuf>,
        /// The feature property that names each rule (e.g. NAME).
        #[arg(long, value_name = "NAME", requires = "geojson")]
        property: Option<String>,
        /// The rules' tag (default: each feature's name).
        #[arg(long, requires = "geojson")]
        tag: Option<String>,
        /// Boxes each polygon's v1.1 cover may use, 1 to 25 (default 12).
        #[arg(long, requires = "geojson", value_parser = clap::value_parser!(u8).range(1..=25))]
        max_boxes: Option<u8>,
        /// Print the rules as JSON lines instead of importing them (no Redis).
        #[arg(long, requires = "geojson")]
        print: bool,
    },
    /// Print stored rules as JSON lines.
    List {
        #[arg(long = "type", value_name = "TYPE")]
        rule_type: Option<RuleType>,
        #[arg(long)]
        id: Option<u32>,
    },
    /// How many connections the stored rules need under the API limits (track
    /// 400, follow 5,000, locations 25) and which rules must move; `--apply`
    /// moves them and notifies only the collectors that changed.
    Plan {
        /// One type; all three when left out.
        #[arg(long = "type", value_name = "TYPE")]
        rule_type: Option<RuleType>,
        #[arg(long)]
        apply: bool,
    },
    /// Preview a rule change before applying it: how many posts the
    /// proposed rules would match, gain and lose against the current ones,
    /// per rule, and how they split over connections with projected posts/s
    /// — over a replay file or a running collector's recent posts. Exit 78
    /// on a bad rules file (naming file and line).
    #[command(
        after_help = "Examples:\n  traptor-host rules preview --proposed new.jsonl --current rules.jsonl --corpus last-week.jsonl\n  traptor-host rules preview --proposed new.jsonl --pipeline pipeline.toml --admin http://127.0.0.1:9090 --format markdown"
    )]
    Preview(super::preview::PreviewArgs),
    /// Tell collector TYPE:ID to reload its rules.
    Notify {
        /// e.g. track:0
        collector: Collector,
    },
}

pub(super) fn rules(args: RulesArgs) -> Exit {
    if let RulesCommand::Preview(a) = args.command {
        return super::preview::preview(a);
    }
    if let RulesCommand::Import { geojson: Some(path), property: Some(property), tag, max_boxes, print: true, .. } =
        &args.command
    {
        return match places(path, property, tag.as_deref(), *max_boxes) {
            Ok(rules) => {
                let stdout = std::io::stdout();
                let mut out = stdout.lock();
                for r in &rules {
                    let _ = writeln!(out, "{}", r.fields_json());
                }
                Exit::Success
            }
            Err(e) => fail(e, Exit::Config),
        };
    }
    let Some(rt) = runtime(false) else { return Exit::Unavailable };
    rt.block_on(async {
        let mut conn = match args.server.connect().await {
            Ok(c) => c,
            Err(e) => return fail(e, Exit::Unavailable),
        };
        let mut problems = Vec::new();
        let result = execute(&mut conn, &args.channel, args.command, &mut problems).await;
        for p in &problems {
            tracing::warn!("{p}");
        }
        match result {
            Ok(()) => Exit::Success,
            Err(e) => {
                let exit = if e.is_config() { Exit::Config } else { Exit::Unavailable };
                fail(e, exit)
            }
        }
    })
}

async fn execute(
    conn: &mut ConnectionManager,
    channel: &str,
    command: RulesCommand,
    problems: &mut Vec<String>,
) -> Result<(), CoordinationError> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match command {
        RulesCommand::Import { geojson: Some(path), property: Some(property), tag, max_boxes, .. } => {
            let rules = places(&path, &property, tag.as_deref(), max_boxes).map_err(CoordinationError::Invalid)?;
            let n = rules.len();
            let a = admin::import_rules(conn, rules, RuleType::Locations, channel, problems).await?;
            let _ = writeln!(
                out,
                "imported {n} place(s) from {}: {} written, {} unchanged; locations collectors {:?}; notified {:?}",
                path.display(),
                a.written,
                a.unchanged,
                a.load,
                a.notified
            );
        }
        RulesCommand::Import { file: Some(file), rule_type: Some(t), .. } => {
            let a = admin::import(conn, &file, t, channel, problems).await?;
            let _ = writeln!(
                out,
                "imported {}: {} written, {} moved from old keys, {} unchanged; {t} collectors {:?}; notified {:?}",
                file.display(),
                a.written,
                a.deleted,
                a.unchanged,
                a.load,
                a.notified
            );
        }
        RulesCommand::Import { .. } => {
            return Err(CoordinationError::Invalid(
                "rules import needs FILE --type TYPE, or --geojson FILE --property NAME".into(),
            ));
        }
        RulesCommand::List { rule_type, id } => {
            let n = admin::list(conn, rule_type, id, &mut out).await?;
            tracing::info!(rules = n, "listed");
        }
        RulesCommand::Plan { rule_type, apply } => {
            let types = rule_type.map_or(RuleType::ALL.to_vec(), |t| vec![t]);
            let mut total = 0;
            for t in types {
                total += admin::plan_type(conn, t, apply, channel, &mut out, problems).await?.minimum_connections;
            }
            let _ = writeln!(out, "total: {total} connection(s) needed");
        }
        RulesCommand::Preview(_) => {
            return Err(CoordinationError::Invalid("rules preview is run without Redis".into()));
        }
        RulesCommand::Notify { collector } => {
            let n = admin::notify(conn, channel, collector).await?;
            let _ = writeln!(out, "notified {collector} on {channel} ({n} subscriber(s) listening)");
        }
    }
    Ok(())
}

/// The rules of a GeoJSON file's polygon features; skipped features are
/// logged, and a file that gives none is an error naming it.
fn places(path: &Path, property: &str, tag: Option<&str>, max_boxes: Option<u8>) -> Result<Vec<Rule>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let p = crate::rules::places::from_geojson(&text, property, tag, max_boxes.map(usize::from))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    for s in &p.skipped {
        tracing::warn!("{}: {s}", path.display());
    }
    if p.rules.is_empty() {
        return Err(format!("{}: no feature made a rule ({} skipped)", path.display(), p.skipped.len()));
    }
    tracing::info!(rules = p.rules.len(), skipped = p.skipped.len(), "{}: places read", path.display());
    Ok(p.rules)
}
