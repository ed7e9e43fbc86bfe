//! `keys add|list|remove|clear-bad`: the API-key pool in Redis, through the
//! pool's own functions (`coordination::keys`).

use std::io::{Read, Write};

use clap::Subcommand;
use redis::aio::ConnectionManager;

use super::{fail, runtime};
use crate::coordination::{CoordinationError, keys};
use crate::exit::Exit;

#[derive(Debug, clap::Args)]
pub(super) struct KeysArgs {
    #[command(flatten)]
    server: super::RedisArgs,
    /// The pool's Redis hash (field = key name, value = JSON credentials).
    #[arg(long, default_value = "traptor-apikeys", global = true)]
    hash: String,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Add (or replace) key NAME. Its credentials are a JSON object read from
    /// standard input, never from the command line (which other users can
    /// see): {"bearer_token": …} for X v2; consumer_key, consumer_secret,
    /// access_token, access_token_secret for v1.1; access_token for Mastodon.
    Add {
        /// The key's name in the pool.
        name: String,
    },
    /// Every key with its state: free, leased TYPE:ID, or bad REASON TIME.
    /// Credentials are never shown, only which fields a key has.
    List,
    /// Remove key NAME from the pool (a collector holding it keeps it until
    /// it restarts or the key is refused).
    Remove { name: String },
    /// Make bad keys claimable again: NAME, or every key of the pool.
    ClearBad { name: Option<String> },
}

pub(super) fn keys(args: KeysArgs) -> Exit {
    // The credentials are read and checked before connecting.
    let json = match &args.command {
        KeysCommand::Add { name } => match read_credentials(name) {
            Ok(json) => json,
            Err(e) => return fail(e, Exit::Config),
        },
        _ => String::new(),
    };
    let Some(rt) = runtime(false) else { return Exit::Unavailable };
    rt.block_on(async {
        let mut conn = match args.server.connect().await {
            Ok(c) => c,
            Err(e) => return fail(e, Exit::Unavailable),
        };
        match execute(&mut conn, &args.hash, args.command, &json).await {
            Ok(text) => {
                let _ = writeln!(std::io::stdout().lock(), "{text}");
                Exit::Success
            }
            Err(e) => fail(e, Exit::Unavailable),
        }
    })
}

/// A key's credentials from standard input, checked.
fn read_credentials(name: &str) -> Result<String, String> {
    let mut json = String::new();
    std::io::stdin().read_to_string(&mut json).map_err(|e| format!("reading key {name:?} from standard input: {e}"))?;
    keys::check_key_json(&json).map_err(|e| format!("key {name:?} (standard input): {e}"))?;
    Ok(json)
}

/// Run one command; what to print.
async fn execute(
    conn: &mut ConnectionManager,
    hash: &str,
    command: KeysCommand,
    json: &str,
) -> Result<String, CoordinationError> {
    match command {
        KeysCommand::Add { name } => {
            keys::add_key(conn, hash, &name, json).await?;
            Ok(format!("added key {name} to {hash}"))
        }
        KeysCommand::List => {
            let all = keys::list_keys(conn, hash).await?;
            if all.is_empty() {
                return Ok(format!("(no keys in {hash})"));
            }
            let lines: Vec<String> =
                all.iter().map(|(name, state, fields)| format!("{name}\t{state}\t{}", fields.join(","))).collect();
            Ok(lines.join("\n"))
        }
        KeysCommand::Remove { name } => match keys::remove_key(conn, hash, &name).await? {
            true => Ok(format!("removed key {name} from {hash}")),
            false => Err(CoordinationError::Invalid(format!("no key {name:?} in {hash}"))),
        },
        KeysCommand::ClearBad { name } => {
            let n = keys::clear_bad(conn, hash, name.as_deref()).await?;
            Ok(format!("cleared {n} bad mark(s)"))
        }
    }
}
