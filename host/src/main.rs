//! The `traptor-host` binary: parses the command line, starts logging,
//! dispatches, and maps errors to exit codes (0 ok, 1 failure found, 2 runtime
//! error, 70 internal error, 78 invalid configuration). Everything else lives in
//! the library.

/// mimalloc: decoding a post allocates and frees small strings and vectors
/// by the thousand per batch on every worker; measured faster end to end
/// than the system allocator (README, benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use traptor_host::app::{self, RunOptions};
use traptor_host::config::{EXIT_CONFIG, IdentityOverride, LoadedConfig};
use traptor_host::sources::synthetic::Generator;
use traptor_host::telemetry::{LogFormat, init_logging};

/// Real-time collector of social-media posts: matches posts to rules, enriches
/// them with WebAssembly plugins, delivers them as JSON lines.
///
/// Run a pipeline:     traptor-host --pipeline examples/demo.toml
/// Check one:          traptor-host validate --pipeline examples/demo.toml
/// Make a test corpus: traptor-host generate --count 100000 --output corpus.jsonl
/// Try a plugin:       traptor-host plugin run my.wasm --config k=v --input posts.jsonl
#[derive(Debug, Parser)]
#[command(name = "traptor-host", version, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Pipeline file (TOML) to run.
    #[arg(long, value_name = "FILE")]
    pipeline: Option<PathBuf>,
    /// Test mode: write posts to standard output whatever sink is configured.
    #[arg(long)]
    test: bool,
    /// Serve /metrics, /health and /ready on ADDR (e.g. 127.0.0.1:9464);
    /// overrides [admin] listen.
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    #[command(flatten)]
    identity: IdentityArgs,
    /// Log format (logs always go to standard error).
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    /// Log level when RUST_LOG is not set (error, warn, info, debug, trace).
    #[arg(long, default_value = "info", global = true)]
    log_level: String,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The collector's identity, over `TRAPTOR_TYPE`/`TRAPTOR_ID` and `[traptor]`.
#[derive(Debug, Clone, Copy, clap::Args)]
struct IdentityArgs {
    /// Collector type (track, follow, locations); overrides TRAPTOR_TYPE and [traptor] type.
    #[arg(long = "type", value_name = "TYPE", value_parser = parse_rule_type)]
    traptor_type: Option<traptor_host::rules::RuleType>,
    /// Collector id; overrides TRAPTOR_ID (and TRAPTOR_ID_FROM_HOSTNAME) and [traptor] id.
    #[arg(long, value_name = "N")]
    id: Option<u32>,
}

impl IdentityArgs {
    fn overrides(self) -> IdentityOverride {
        IdentityOverride { traptor_type: self.traptor_type, id: self.id }
    }
}

fn parse_rule_type(s: &str) -> Result<traptor_host::rules::RuleType, String> {
    traptor_host::rules::RuleType::parse(s).ok_or_else(|| format!("{s:?}: expected track, follow or locations"))
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline (same as the top-level --pipeline). `${VAR}` and
    /// `${VAR:-default}` in the file come from the environment.
    Run {
        /// Pipeline file (TOML).
        #[arg(long, value_name = "FILE")]
        pipeline: PathBuf,
        /// Test mode: write posts to standard output whatever sink is configured.
        #[arg(long)]
        test: bool,
        /// Serve /metrics, /health and /ready on ADDR (e.g. 127.0.0.1:9464);
        /// overrides [admin] listen.
        #[arg(long, value_name = "ADDR")]
        admin: Option<String>,
        #[command(flatten)]
        identity: IdentityArgs,
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
    Plugin(PluginCommand),
    /// Manage rules in Redis: import, list, plan over connections, notify.
    Rules {
        /// Redis server.
        #[arg(long, env = "TRAPTOR_REDIS_URL", default_value = traptor_host::redis_conn::DEFAULT_REDIS_URL, global = true, hide_env_values = true)]
        redis: String,
        /// Pub/sub channel for reload notices.
        #[arg(long, default_value = "traptor-notify", global = true)]
        channel: String,
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Manage the API-key pool in Redis (`[coordination.api_keys]`): collectors
    /// claim one key each; a key the API refuses is marked bad until cleared.
    ///
    /// Add one:   echo '{"bearer_token":"…"}' | traptor-host keys add key-a
    /// See them:  traptor-host keys list
    Keys {
        /// Redis server.
        #[arg(long, env = "TRAPTOR_REDIS_URL", default_value = traptor_host::redis_conn::DEFAULT_REDIS_URL, global = true, hide_env_values = true)]
        redis: String,
        /// The pool's Redis hash (field = key name, value = JSON credentials).
        #[arg(long, default_value = "traptor-apikeys", global = true)]
        hash: String,
        #[command(subcommand)]
        command: KeysCommand,
    },
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
    Generate {
        /// How many posts.
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Seed; the same seed gives the same posts.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output file (default: standard output). A name ending in .gz is gzipped.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
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
        rule_type: String,
    },
    /// Print stored rules as JSON lines.
    List {
        #[arg(long = "type", value_name = "TYPE")]
        rule_type: Option<String>,
        #[arg(long)]
        id: Option<u32>,
    },
    /// How many connections the stored rules need under the API limits (track
    /// 400, follow 5,000, locations 25) and which rules must move; `--apply`
    /// moves them and notifies only the collectors that changed.
    Plan {
        /// One type; all three when left out.
        #[arg(long = "type", value_name = "TYPE")]
        rule_type: Option<String>,
        #[arg(long)]
        apply: bool,
    },
    /// Tell collector TYPE:ID to reload its rules.
    Notify {
        /// e.g. track:0
        collector: String,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Print a plugin's description, ABI version, imports and config schema.
    Inspect {
        /// The component (.wasm).
        plugin: PathBuf,
        /// Also check that its initialiser accepts this configuration, KEY=VALUE
        /// (VALUE is JSON or a string).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
    },
    /// Run a plugin over posts (JSON lines) and print one outcome per post.
    Run {
        /// The component (.wasm).
        plugin: PathBuf,
        /// Configuration for its initialiser, KEY=VALUE (VALUE is JSON or a string).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// Posts, one v1.1 JSON object per line.
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// Rules (JSON lines) to match first, so the plugin sees matched rules.
        #[arg(long, value_name = "FILE")]
        rules: Option<PathBuf>,
        /// Posts per call.
        #[arg(long, default_value_t = 256)]
        batch_size: usize,
    },
    /// Start a plugin project: Rust (the SDK), Python (componentize-py) or
    /// JavaScript (componentize-js), with a unit test, golden cases for
    /// `plugin test` and a README with the build, test and push commands.
    #[command(
        after_help = "Example:\n  traptor-host plugin new shouting --lang rust --kind enricher\n  cd shouting && cargo test && cargo build --release --target wasm32-wasip2"
    )]
    New {
        /// The plugin's name (lowercase letters, digits, '-'); also its folder.
        name: String,
        #[arg(long, value_enum)]
        lang: traptor_host::plugins::scaffold::Lang,
        #[arg(long, value_enum, default_value = "enricher")]
        kind: traptor_host::plugins::scaffold::Kind,
        /// Where to create the project folder.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
        /// Rust only: the traptor-sdk dependency as a TOML value, e.g.
        /// '{ path = "../traptor/sdk" }' or '{ git = "https://…" }' (default:
        /// the source tree this binary was built from, else its repository).
        #[arg(long, value_name = "TOML")]
        sdk: Option<String>,
    },
    /// Run golden cases through a plugin: each line of the cases file is
    /// {"name", "post", "rules", "outcome", "fields", "reason", "error"}
    /// ("post" and "outcome" required; "rules" are matched first so the
    /// plugin sees them). Prints a diff per mismatch; exit 1 on any.
    #[command(
        after_help = "A case:\n  {\"name\": \"capitals\", \"post\": {\"id_str\": \"1\", \"text\": \"HELLO\"}, \"outcome\": \"enrich\", \"fields\": {\"shouting\": true}}"
    )]
    Test {
        /// The component (.wasm).
        plugin: PathBuf,
        /// The golden cases, one JSON object per line.
        #[arg(long, value_name = "FILE")]
        cases: PathBuf,
        /// Configuration for its initialiser, KEY=VALUE (VALUE is JSON or a string).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
    },
    /// Publish a component to an OCI registry (the Wasm artifact layout that
    /// wkg and oras use) and print its manifest digest. Credentials: Docker's
    /// config.json, or TRAPTOR_REGISTRY_USERNAME + TRAPTOR_REGISTRY_PASSWORD,
    /// or TRAPTOR_REGISTRY_TOKEN.
    #[command(
        after_help = "Example:\n  traptor-host plugin push sentiment.wasm oci://registry.example.com/team/sentiment:1.2.0"
    )]
    Push {
        /// The component (.wasm).
        plugin: PathBuf,
        /// Where: oci://REGISTRY/REPOSITORY:TAG.
        reference: String,
        /// Plain HTTP to a registry that is not on this machine (loopback always may).
        #[arg(long)]
        insecure: bool,
    },
    /// Fetch a component into the local cache (digests checked); print its
    /// manifest digest and file. A run then needs no registry for it.
    Pull {
        /// oci://REGISTRY/REPOSITORY:TAG, @sha256:DIGEST, or both.
        reference: String,
        /// Plain HTTP to a registry that is not on this machine.
        #[arg(long)]
        insecure: bool,
    },
    /// Pin every stage of a pipeline: write FILE.lock with each stage's
    /// plugin and the digest it resolves to now (registry components are
    /// pulled on the way). `run` and `validate` then refuse a stage whose
    /// plugin resolves to another digest (exit 78).
    Lock {
        /// The pipeline file.
        #[arg(long, value_name = "FILE")]
        pipeline: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    let code = match cli.command {
        Some(Command::Run { pipeline, test, admin, identity }) => {
            run(pipeline, RunOptions { test_mode: test, admin }, identity.overrides())
        }
        Some(Command::Validate { pipeline, identity, print }) => validate(&pipeline, identity.overrides(), print),
        Some(Command::Generate { count, seed, output }) => generate(count, seed, output),
        Some(Command::Completions { shell }) => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "traptor-host",
                &mut std::io::stdout(),
            );
            0
        }
        Some(Command::Manpage) => {
            match clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut std::io::stdout()) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!("cannot write the manual page: {e}");
                    2
                }
            }
        }
        Some(Command::Plugin(cmd)) => plugin(cmd),
        Some(Command::Rules { redis, channel, command }) => rules_cmd(&redis, &channel, command),
        Some(Command::Keys { redis, hash, command }) => keys_cmd(&redis, &hash, command),
        None => match cli.pipeline {
            Some(p) => run(p, RunOptions { test_mode: cli.test, admin: cli.admin }, cli.identity.overrides()),
            None => {
                eprintln!("traptor-host: nothing to do; pass --pipeline FILE or a command (see --help)");
                2
            }
        },
    };
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}

fn run(pipeline: PathBuf, opts: RunOptions, identity: IdentityOverride) -> i32 {
    let cfg = match LoadedConfig::load_with(&pipeline, identity) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return EXIT_CONFIG;
        }
    };
    traptor_host::telemetry::tag_logs(cfg.config.traptor.traptor_type.as_str(), cfg.config.traptor.id);
    let Some(rt) = runtime(true) else { return 2 };
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        app::install_signal_handlers(shutdown.clone());
        match app::run(cfg, opts, shutdown).await {
            Ok(_) => 0,
            Err(e) => {
                tracing::error!("{e}");
                e.exit_code()
            }
        }
    })
}

fn validate(pipeline: &std::path::Path, identity: IdentityOverride, print: bool) -> i32 {
    let Some(rt) = runtime(false) else { return 2 };
    let v = rt.block_on(app::validate(pipeline, identity));
    if print && let Some(text) = &v.resolved {
        println!("{text}");
    }
    for n in &v.notes {
        println!("ok: {n}");
    }
    for w in &v.warnings {
        println!("warning: {w}");
    }
    for e in &v.errors {
        println!("error: {e}");
    }
    if v.errors.is_empty() {
        println!("valid: {}", pipeline.display());
    } else {
        println!("invalid: {} ({} error(s))", pipeline.display(), v.errors.len());
    }
    v.exit_code()
}

/// Exit code of a plugin command's error: 2 when the registry could not be
/// reached or refused (the outside world), 78 for everything that is the
/// caller's to fix (a reference, a file, a lock).
fn plugin_exit(e: &traptor_host::plugins::PluginError) -> i32 {
    use traptor_host::plugins::{PluginError, oci::OciError};
    match e {
        PluginError::Oci(OciError::Registry { .. } | OciError::Runtime(_)) => 2,
        _ => EXIT_CONFIG,
    }
}

/// `plugin lock --pipeline FILE`.
fn lock_pipeline(path: &std::path::Path) -> i32 {
    use traptor_host::plugins::{oci::Lock, stages};
    let cfg = match traptor_host::config::LoadedConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return EXIT_CONFIG;
        }
    };
    let c = &cfg.config;
    match stages::lock_stages(&c.stages, c.pipeline.plugin_cache_dir.clone()) {
        Ok(lock) => {
            let file = Lock::path_for(path);
            if let Err(e) = lock.write(&file) {
                tracing::error!("{e}");
                return EXIT_CONFIG;
            }
            for s in &lock.stages {
                println!("{}  {}  {}", s.name, s.digest, s.plugin);
            }
            tracing::info!(file = %file.display(), stages = lock.stages.len(), "lock written");
            0
        }
        Err(errors) => {
            let mut code = EXIT_CONFIG;
            for e in &errors {
                tracing::error!("{e}");
                if plugin_exit(&e.source) == 2 {
                    code = 2;
                }
            }
            code
        }
    }
}

fn plugin(cmd: PluginCommand) -> i32 {
    use traptor_host::plugins::tool;
    match cmd {
        PluginCommand::Inspect { plugin, config } => {
            let config = match (config.is_empty(), tool::config_from_pairs(&config)) {
                (true, _) => None,
                (false, Ok(c)) => Some(c),
                (false, Err(e)) => {
                    tracing::error!("{e}");
                    return EXIT_CONFIG;
                }
            };
            match tool::inspect(&plugin, config.as_deref(), &mut std::io::stdout()) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!("{e}");
                    EXIT_CONFIG
                }
            }
        }
        PluginCommand::Push { plugin, reference, insecure } => {
            match tool::push(&plugin, &reference, insecure, &mut std::io::stdout()) {
                Ok(_) => 0,
                Err(e) => {
                    tracing::error!("{e}");
                    plugin_exit(&e)
                }
            }
        }
        PluginCommand::Pull { reference, insecure } => match tool::pull(&reference, insecure, &mut std::io::stdout()) {
            Ok(_) => 0,
            Err(e) => {
                tracing::error!("{e}");
                plugin_exit(&e)
            }
        },
        PluginCommand::Lock { pipeline } => lock_pipeline(&pipeline),
        PluginCommand::New { name, lang, kind, dir, sdk } => {
            use traptor_host::plugins::scaffold;
            let sdk = sdk.unwrap_or_else(scaffold::default_sdk);
            match scaffold::new_project(&dir, &name, lang, kind, &sdk) {
                Ok((root, files)) => {
                    for f in files {
                        println!("{}", f.display());
                    }
                    tracing::info!(project = %root.display(), "plugin project written; see its README.md");
                    0
                }
                Err(e) => {
                    tracing::error!("{e}");
                    EXIT_CONFIG
                }
            }
        }
        PluginCommand::Test { plugin, cases, config } => {
            let result = tool::config_from_pairs(&config)
                .and_then(|c| tool::test_cases(&plugin, c, &cases, &mut std::io::stdout()));
            match result {
                Ok(s) if s.failed == 0 => 0,
                Ok(_) => 1,
                Err(e) => {
                    tracing::error!("{e}");
                    match e {
                        tool::RunError::Write(_) => 2,
                        _ => EXIT_CONFIG,
                    }
                }
            }
        }
        PluginCommand::Run { plugin, config, input, rules, batch_size } => {
            let result = tool::config_from_pairs(&config).and_then(|c| {
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                let r = tool::run(&plugin, c, &input, rules.as_deref(), batch_size, &mut out);
                let _ = out.flush();
                r
            });
            match result {
                Ok(s) => {
                    tracing::info!(
                        posts = s.posts,
                        keep = s.keep,
                        enrich = s.enrich,
                        drop = s.drop,
                        error = s.error,
                        failed = s.failed,
                        not_posts = s.skipped_lines,
                        "plugin run finished"
                    );
                    0
                }
                Err(e) => {
                    tracing::error!("{e}");
                    match e {
                        tool::RunError::Write(_) => 2,
                        _ => EXIT_CONFIG,
                    }
                }
            }
        }
    }
}

fn rule_type(s: &str) -> Result<traptor_host::rules::RuleType, String> {
    traptor_host::rules::RuleType::parse(s).ok_or_else(|| format!("--type {s:?}: expected track, follow or locations"))
}

fn keys_cmd(redis: &str, hash: &str, cmd: KeysCommand) -> i32 {
    use std::io::{Read, Write};
    use traptor_host::coordination::{cli, keys};
    let url = traptor_host::redis_conn::RedisUrl::new(redis);
    // The credentials are read and checked before connecting.
    let json = match &cmd {
        KeysCommand::Add { name } => {
            let mut json = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut json) {
                tracing::error!("reading key {name:?} from standard input: {e}");
                return EXIT_CONFIG;
            }
            if let Err(e) = keys::check_key_json(&json) {
                tracing::error!("key {name:?} (standard input): {e}");
                return EXIT_CONFIG;
            }
            json
        }
        _ => String::new(),
    };
    let Some(rt) = runtime(false) else { return 2 };
    rt.block_on(async {
        let mut conn = match cli::connect_cli(&url).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{e}");
                return 2;
            }
        };
        let mut out = std::io::stdout().lock();
        let result: Result<String, String> = match cmd {
            KeysCommand::Add { name } => {
                let compact = serde_json::from_str::<serde_json::Value>(&json).map(|v| v.to_string()).unwrap_or(json);
                redis::AsyncCommands::hset::<_, _, _, ()>(&mut conn, hash, &name, compact)
                    .await
                    .map(|()| format!("added key {name} to {hash}"))
                    .map_err(|e| e.to_string())
            }
            KeysCommand::List => keys::list_keys(&mut conn, hash).await.map_err(|e| e.to_string()).map(|all| {
                let mut s = String::new();
                for (name, state, fields) in &all {
                    s.push_str(&format!("{name}\t{state}\t{}\n", fields.join(",")));
                }
                if all.is_empty() {
                    s.push_str(&format!("(no keys in {hash})\n"));
                }
                s.trim_end().to_owned()
            }),
            KeysCommand::Remove { name } => {
                match redis::AsyncCommands::hdel::<_, _, u64>(&mut conn, hash, &name).await {
                    Ok(0) => Err(format!("no key {name:?} in {hash}")),
                    Ok(_) => keys::clear_bad(&mut conn, hash, Some(&name))
                        .await
                        .map(|_| format!("removed key {name} from {hash}"))
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            KeysCommand::ClearBad { name } => keys::clear_bad(&mut conn, hash, name.as_deref())
                .await
                .map(|n| format!("cleared {n} bad mark(s)"))
                .map_err(|e| e.to_string()),
        };
        match result {
            Ok(text) => {
                let _ = writeln!(out, "{text}");
                0
            }
            Err(e) => {
                tracing::error!("{e}");
                2
            }
        }
    })
}

fn rules_cmd(redis: &str, channel: &str, cmd: RulesCommand) -> i32 {
    use traptor_host::coordination::cli;
    use traptor_host::redis_conn::RedisUrl;
    use traptor_host::rules::RuleType;
    let url = RedisUrl::new(redis);
    let Some(rt) = runtime(false) else { return 2 };
    rt.block_on(async {
        let types = |t: &Option<String>| -> Result<Vec<RuleType>, String> {
            match t {
                Some(t) => Ok(vec![rule_type(t)?]),
                None => Ok(RuleType::ALL.to_vec()),
            }
        };
        // Check the arguments before connecting.
        let checked: Result<(), String> = match &cmd {
            RulesCommand::Import { rule_type: t, .. } => rule_type(t).map(|_| ()),
            RulesCommand::List { rule_type: Some(t), .. } => rule_type(t).map(|_| ()),
            RulesCommand::Plan { rule_type: t, .. } => types(t).map(|_| ()),
            RulesCommand::Notify { collector } => match collector.split_once(':') {
                Some((t, id)) if RuleType::parse(t).is_some() && id.parse::<u32>().is_ok() => Ok(()),
                _ => Err(format!("{collector:?}: expected TYPE:ID, e.g. track:0")),
            },
            RulesCommand::List { .. } => Ok(()),
        };
        if let Err(e) = checked {
            tracing::error!("{e}");
            return EXIT_CONFIG;
        }
        let mut conn = match cli::connect_cli(&url).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{e}");
                return 2;
            }
        };
        let mut problems = Vec::new();
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let result = match cmd {
            RulesCommand::Import { file, rule_type: t } => {
                let t = rule_type(&t).unwrap_or(RuleType::Track);
                cli::import(&mut conn, &file, t, channel, &mut problems).await.map(|a| {
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
                })
            }
            RulesCommand::List { rule_type: t, id } => {
                let t = t.as_deref().and_then(RuleType::parse);
                cli::list(&mut conn, t, id, &mut out).await.map(|n| tracing::info!(rules = n, "listed"))
            }
            RulesCommand::Plan { rule_type: t, apply } => {
                let mut total = 0;
                let mut r = Ok(());
                for t in types(&t).unwrap_or_default() {
                    match cli::plan_type(&mut conn, t, apply, channel, &mut out, &mut problems).await {
                        Ok(p) => total += p.minimum_connections,
                        Err(e) => {
                            r = Err(e);
                            break;
                        }
                    }
                }
                if r.is_ok() {
                    let _ = writeln!(out, "total: {total} connection(s) needed");
                }
                r
            }
            RulesCommand::Notify { collector } => {
                let (t, id) = collector.split_once(':').unwrap_or(("track", "0"));
                let t = RuleType::parse(t).unwrap_or(RuleType::Track);
                let id: u32 = id.parse().unwrap_or(0);
                cli::notify(&mut conn, channel, t, id).await.map(|n| {
                    let _ = writeln!(out, "notified {t}:{id} on {channel} ({n} subscriber(s) listening)");
                })
            }
        };
        for p in &problems {
            tracing::warn!("{p}");
        }
        match result {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("{e}");
                if e.is_config() { EXIT_CONFIG } else { 2 }
            }
        }
    })
}

fn generate(count: u64, seed: u64, output: Option<PathBuf>) -> i32 {
    let result = (|| -> anyhow::Result<()> {
        let mut out: Box<dyn Write> = match &output {
            None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            Some(p) => {
                let f = std::fs::File::create(p).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", p.display()))?;
                if p.extension().is_some_and(|e| e == "gz") {
                    Box::new(flate2::write::GzEncoder::new(std::io::BufWriter::new(f), flate2::Compression::fast()))
                } else {
                    Box::new(std::io::BufWriter::with_capacity(1 << 16, f))
                }
            }
        };
        let mut g = Generator::new(seed);
        for _ in 0..count {
            out.write_all(&g.next_post())?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(())
    })();
    match result {
        Ok(()) => 0,
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            2
        }
    }
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
