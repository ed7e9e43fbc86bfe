//! The command line: what `traptor-host` parses and which library call each
//! command makes. One file per command group; each returns an [`Exit`].
//! `main.rs` only installs the allocator and calls [`main`].

mod docs;
mod generate;
mod keys;
mod plugin;
mod preview;
mod rules;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::IdentityOverride;
use crate::exit::Exit;
use crate::rules::RuleType;
use crate::telemetry::{LogFormat, init_logging};

/// Real-time collector of social-media posts: matches posts to rules, enriches
/// them with WebAssembly plugins, delivers them as JSON lines.
///
/// Run a pipeline:     traptor-host --pipeline examples/demo.toml
/// Check one:          traptor-host validate --pipeline examples/demo.toml
/// Make a test corpus: traptor-host generate --count 100000 --output corpus.jsonl
/// Try a plugin:       traptor-host plugin run my.wasm --config k=v --input posts.jsonl
#[derive(Debug, Parser)]
#[command(name = "traptor-host", version, args_conflicts_with_subcommands = true, verbatim_doc_comment)]
pub struct Cli {
    /// Pipeline file (TOML) to run.
    #[arg(long, value_name = "FILE")]
    pipeline: Option<PathBuf>,
    #[command(flatten)]
    run: RunFlags,
    /// Log format (logs always go to standard error).
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    /// Log level when RUST_LOG is not set (error, warn, info, debug, trace).
    #[arg(long, default_value = "info", global = true)]
    log_level: String,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The flags of a run, on the top level and on `run`.
#[derive(Debug, Clone, clap::Args)]
struct RunFlags {
    /// Test mode: write posts to standard output whatever sink is configured.
    #[arg(long)]
    test: bool,
    /// Serve /metrics, /health and /ready on ADDR (e.g. 127.0.0.1:9464);
    /// overrides [admin] listen.
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    #[command(flatten)]
    identity: IdentityArgs,
}

/// The collector's identity, over `TRAPTOR_TYPE`/`TRAPTOR_ID` and `[traptor]`.
#[derive(Debug, Clone, Copy, clap::Args)]
struct IdentityArgs {
    /// Collector type (track, follow, locations); overrides TRAPTOR_TYPE and [traptor] type.
    #[arg(long = "type", value_name = "TYPE")]
    traptor_type: Option<RuleType>,
    /// Collector id, or `auto` (claim a free id with rules by a Redis lease;
    /// a standby until one is free); overrides TRAPTOR_ID (and
    /// TRAPTOR_ID_FROM_HOSTNAME) and [traptor] id.
    #[arg(long, value_name = "N|auto")]
    id: Option<crate::config::IdSetting>,
}

impl IdentityArgs {
    fn overrides(self) -> IdentityOverride {
        IdentityOverride { traptor_type: self.traptor_type, id: self.id }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline (same as the top-level --pipeline). `${VAR}` and
    /// `${VAR:-default}` in the file come from the environment.
    Run {
        /// Pipeline file (TOML).
        #[arg(long, value_name = "FILE")]
        pipeline: PathBuf,
        #[command(flatten)]
        flags: RunFlags,
    },
    /// Check a pipeline file, its rules, limits, source and sink without running
    /// it. Exits 78 if anything is invalid, naming the key or line at fault.
    Validate {
        /// Pipeline file (TOML).
        #[arg(long, value_name = "FILE")]
        pipeline: PathBuf,
        #[command(flatten)]
        identity: IdentityArgs,
        /// Also print the file as it will run: the environment's values in,
        /// the identity applied, passwords in URLs and secret-looking values masked.
        #[arg(long)]
        print: bool,
    },
    /// Try a WebAssembly plugin without a pipeline.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Manage rules in Redis: import, list, plan over connections, notify.
    Rules(rules::RulesArgs),
    /// Manage the API-key pool in Redis (`[coordination.api_keys]`): collectors
    /// claim one key each; a key the API refuses is marked bad until cleared.
    ///
    /// Add one:   echo '{"bearer_token":"…"}' | traptor-host keys add key-a
    /// See them:  traptor-host keys list
    #[command(verbatim_doc_comment)]
    Keys(keys::KeysArgs),
    /// Print a shell completion script, e.g.
    /// `traptor-host completions bash > /etc/bash_completion.d/traptor-host`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `traptor-host manpage > traptor-host.1`.
    Manpage,
    /// Write synthetic v1.1 posts as JSON lines (the benchmark corpus).
    Generate(generate::GenerateArgs),
}

/// Parse the command line, start logging, run the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    let exit = match cli.command {
        Some(Command::Run { pipeline, flags }) => run::run(pipeline, flags),
        Some(Command::Validate { pipeline, identity, print }) => run::validate(&pipeline, identity.overrides(), print),
        Some(Command::Generate(args)) => generate::generate(args),
        Some(Command::Completions { shell }) => docs::completions(shell),
        Some(Command::Manpage) => docs::manpage(),
        Some(Command::Plugin(cmd)) => plugin::plugin(cmd),
        Some(Command::Rules(args)) => rules::rules(args),
        Some(Command::Keys(args)) => keys::keys(args),
        None => match cli.pipeline {
            Some(p) => run::run(p, cli.run),
            None => {
                eprintln!("traptor-host: nothing to do; pass --pipeline FILE or a command (see --help)");
                Exit::Unavailable
            }
        },
    };
    exit.into()
}

/// A tokio runtime (all CPU threads, or the current one); the error logged.
fn runtime(multi_thread: bool) -> Option<tokio::runtime::Runtime> {
    let mut b = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all().build().map_err(|e| tracing::error!("cannot start the runtime: {e}")).ok()
}

/// Log `e` and exit `exit`.
/// The Redis server of the `rules` and `keys` commands.
#[derive(Debug, clap::Args)]
pub(super) struct RedisArgs {
    /// Redis server.
    #[arg(long, env = "TRAPTOR_REDIS_URL", default_value = crate::redis_conn::DEFAULT_REDIS_URL, global = true, hide_env_values = true)]
    redis: String,
    /// PEM file of the CA that signed a `rediss://` server's certificate
    /// (as `tls_ca_file` in a pipeline's `[rules]`/`[coordination]`).
    #[arg(long, value_name = "FILE", global = true)]
    tls_ca_file: Option<PathBuf>,
}

impl RedisArgs {
    /// Connect as the command line asked.
    async fn connect(&self) -> Result<redis::aio::ConnectionManager, crate::coordination::CoordinationError> {
        let access = crate::redis_conn::RedisAccess { tls_ca_file: self.tls_ca_file.clone(), ..Default::default() };
        crate::coordination::rules_admin::connect_cli(
            &crate::redis_conn::RedisUrl::new(&self.redis).with_access(access),
        )
        .await
    }
}

fn fail(e: impl std::fmt::Display, exit: Exit) -> Exit {
    tracing::error!("{e}");
    exit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn help_keeps_each_example_on_its_own_line() {
        let help = <Cli as clap::CommandFactory>::command().render_long_help().to_string();
        let run = help.lines().position(|l| l.starts_with("Run a pipeline:"));
        let check = help.lines().position(|l| l.starts_with("Check one:"));
        assert!(matches!((run, check), (Some(a), Some(b)) if b == a + 1), "{help}");
    }

    #[test]
    fn a_bad_collector_type_names_the_choices() {
        let e = Cli::try_parse_from(["traptor-host", "--pipeline", "p.toml", "--type", "tracks"]).expect_err("refused");
        assert!(e.to_string().contains("expected track, follow, locations or x_v2"), "{e}");
    }
}
