//! `rules import|list|plan|notify`: rules in Redis, through the rule store's
//! administration functions (`coordination::rules_admin`).

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use redis::aio::ConnectionManager;

use super::{fail, runtime};
use crate::coordination::CoordinationError;
use crate::coordination::rules_admin as admin;
use crate::exit::Exit;
use crate::redis_conn::{DEFAULT_REDIS_URL, RedisUrl};
use crate::rules::{Collector, RuleType};

#[derive(Debug, clap::Args)]
pub(super) struct RulesArgs {
    /// Redis server.
    #[arg(long, env = "TRAPTOR_REDIS_URL", default_value = DEFAULT_REDIS_URL, global = true, hide_env_values = true)]
    redis: String,
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
    Import {
        /// Rules, one JSON object per line (the original traptor format).
        file: PathBuf,
        /// Rule type to import (rules of other types are reported and skipped).
        #[arg(long = "type", value_name = "TYPE")]
        rule_type: RuleType,
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
    /// Tell collector TYPE:ID to reload its rules.
    Notify {
        /// e.g. track:0
        collector: Collector,
    },
}

pub(super) fn rules(args: RulesArgs) -> Exit {
    let Some(rt) = runtime(false) else { return Exit::Unavailable };
    rt.block_on(async {
        let mut conn = match admin::connect_cli(&RedisUrl::new(&args.redis)).await {
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
        RulesCommand::Import { file, rule_type: t } => {
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
        RulesCommand::Notify { collector } => {
            let n = admin::notify(conn, channel, collector).await?;
            let _ = writeln!(out, "notified {collector} on {channel} ({n} subscriber(s) listening)");
        }
    }
    Ok(())
}
