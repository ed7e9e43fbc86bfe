//! `traptor-host plugin build [DIR] [-o FILE]`: build any project `plugin
//! new` writes, in any of its languages, into a component — the language
//! found from the project's files, the tool chain installed into the tools
//! cache on first use ([`super::toolchain`]), the result checked by loading
//! it as a stage.
//!
//! Rust, Python and JavaScript tool chains make components themselves. Go
//! and C compilers make a WASI preview-1 core module; it becomes a component
//! here, in-process: the plugin WIT embedded (`wit-component`), then the
//! preview-1 reactor adapter of the wasmtime this host runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::scaffold::Lang;
use super::toolchain::{self, Tool, ToolError, Tools};
use super::{PluginError, Runtime, Stage};

const WIT: &str = include_str!("../../../wit/plugin.wit");

/// Why a project did not build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "cannot tell the language of the project in {0}: expected Cargo.toml (Rust), go.mod (Go), tsconfig.json (TypeScript), package.json (JavaScript), app.py (Python) or traptor.h (C), as `traptor-host plugin new` writes them"
    )]
    Unknown(PathBuf),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("{needed} is needed to build {lang} plugins and was not found; {how}")]
    Missing { needed: &'static str, lang: &'static str, how: &'static str },
    #[error("{step} failed in {dir} ({status}):\n{output}")]
    Step { step: String, dir: PathBuf, status: String, output: String },
    #[error("the unit tests failed ({step}, in {dir}):\n{output}")]
    Tests { step: String, dir: PathBuf, output: String },
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make a component of {path}: {message}")]
    Componentize { path: PathBuf, message: String },
    #[error("the component built from {dir} does not load as a traptor stage: {source}")]
    Invalid {
        dir: PathBuf,
        #[source]
        source: PluginError,
    },
}

/// What `plugin build` made.
#[derive(Debug, Clone)]
pub struct Built {
    pub lang: Lang,
    pub path: PathBuf,
    pub size: u64,
    /// The plugin ABI version it targets.
    pub abi: String,
    /// The stage's name and version, as it describes itself.
    pub name: String,
    pub version: String,
    pub elapsed: Duration,
}

/// The language of the project in `dir`, from the files `plugin new` writes.
pub fn detect(dir: &Path) -> Result<Lang, BuildError> {
    let has = |f: &str| dir.join(f).is_file();
    Ok(if has("Cargo.toml") {
        Lang::Rust
    } else if has("go.mod") {
        Lang::Go
    } else if has("tsconfig.json") {
        Lang::Typescript
    } else if has("package.json") || has("app.js") {
        Lang::Js
    } else if has("app.py") {
        Lang::Python
    } else if has("traptor.h") {
        Lang::C
    } else {
        return Err(BuildError::Unknown(dir.to_owned()));
    })
}

/// Build the project in `dir`; with `test`, run its unit tests too; copy the
/// component to `output` when given. Steps and installs are reported on
/// `progress`.
pub fn build(
    dir: &Path,
    output: Option<&Path>,
    test: bool,
    tools: &Tools,
    progress: &mut dyn Write,
) -> Result<Built, BuildError> {
    let started = Instant::now();
    let dir = dir.canonicalize().map_err(|source| BuildError::Io {
        what: "open the project",
        path: dir.to_owned(),
        source,
    })?;
    let lang = detect(&dir)?;
    let name = dir.file_name().map_or_else(|| "plugin".to_owned(), |n| n.to_string_lossy().into_owned());
    let target = dir.join("target");
    std::fs::create_dir_all(&target).map_err(|source| BuildError::Io {
        what: "create",
        path: target.clone(),
        source,
    })?;
    let component = target.join(format!("{name}.wasm"));
    let path = match lang {
        Lang::Rust => build_rust(&dir, progress)?,
        Lang::Python => {
            let py = tools.get(toolchain::COMPONENTIZE_PY, progress)?;
            let mut c = Command::new(py);
            c.args(["-d", "wit", "-w", "plugin", "componentize", "app", "-p", ".", "-o"]).arg(&component);
            step(&dir, "componentize-py", c, progress)?;
            component
        }
        Lang::Js => {
            let js = tools.get(toolchain::COMPONENTIZE_JS, progress)?;
            componentize_js(&dir, &js, Path::new("app.js"), &component, progress)?;
            component
        }
        Lang::Typescript => {
            let tsc = tools.get(toolchain::TYPESCRIPT, progress)?;
            let js = tools.get(toolchain::COMPONENTIZE_JS, progress)?;
            let node = toolchain::which("node").ok_or(BuildError::Missing {
                needed: "node",
                lang: "TypeScript",
                how: "apt-get install nodejs (18 or newer)",
            })?;
            let mut c = Command::new(node);
            c.arg(tsc).args(["-p", "tsconfig.json"]);
            step(&dir, "tsc (TypeScript → target/js)", c, progress)?;
            // The ABI helper is JavaScript (typed by traptor_stage.d.ts): beside the output.
            let helper = dir.join("traptor_stage.js");
            let to = target.join("js/traptor_stage.js");
            std::fs::copy(&helper, &to).map_err(|source| BuildError::Io { what: "copy", path: helper, source })?;
            componentize_js(&dir, &js, Path::new("target/js/app.js"), &component, progress)?;
            component
        }
        Lang::Go => {
            let core = build_go(&dir, &target, tools.get(toolchain::GO, progress)?, progress)?;
            make_component(&core, &component)?;
            component
        }
        Lang::C => {
            let core = build_c(&dir, &target, &tools.get(toolchain::ZIG, progress)?, progress)?;
            make_component(&core, &component)?;
            component
        }
    };
    if test {
        unit_tests(&dir, lang, tools, progress).map_err(|e| match e {
            BuildError::Step { step, dir, output, .. } if step.ends_with("(unit tests)") => {
                BuildError::Tests { step, dir, output }
            }
            other => other,
        })?;
    }
    let built = check(&dir, lang, &path, started)?;
    match output {
        // Onto itself, a copy would empty the file.
        Some(out) if !same_file(out, &path) => {
            let bytes =
                std::fs::read(&path).map_err(|source| BuildError::Io { what: "read", path: path.clone(), source })?;
            write_atomic(out, &bytes)?;
            Ok(Built { path: out.to_owned(), ..built })
        }
        _ => Ok(built),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// Write through a temporary file beside `path`, then rename: a reader never
/// sees half a component.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path)).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        BuildError::Io { what: "write", path: path.to_owned(), source }
    })
}

/// Load the component as a stage would be: its ABI and description.
fn check(dir: &Path, lang: Lang, path: &Path, started: Instant) -> Result<Built, BuildError> {
    let invalid = |source| BuildError::Invalid { dir: dir.to_owned(), source };
    let runtime = Runtime::new(Runtime::default_cache_dir()).map_err(invalid)?;
    let (c, d) = Stage::describe_only(&runtime, &super::tool::adhoc_spec(path, "{}".into())).map_err(invalid)?;
    Ok(Built {
        lang,
        path: path.to_owned(),
        size: c.size,
        abi: c.abi,
        name: d.name,
        version: d.version,
        elapsed: started.elapsed(),
    })
}

/// Run one build step in `dir`; its output on failure.
fn step(dir: &Path, what: &str, mut cmd: Command, progress: &mut dyn Write) -> Result<(), BuildError> {
    let _ = writeln!(progress, "  {what}");
    let out = cmd.current_dir(dir).output().map_err(|e| BuildError::Step {
        step: what.to_owned(),
        dir: dir.to_owned(),
        status: format!("cannot start {:?}", cmd.get_program()),
        output: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    Err(BuildError::Step {
        step: what.to_owned(),
        dir: dir.to_owned(),
        status: out.status.to_string(),
        output: lines[lines.len().saturating_sub(40)..].join("\n"),
    })
}

fn componentize_js(dir: &Path, js: &Path, app: &Path, out: &Path, progress: &mut dyn Write) -> Result<(), BuildError> {
    let mut c = Command::new(js);
    // -d http fetch-event: no wasi-http import (the host does not provide it).
    c.arg(app).args(["--wit", "wit", "-n", "plugin", "-d", "http", "fetch-event", "-o"]).arg(out);
    step(dir, "componentize-js", c, progress)
}

/// `cargo build --release --target wasm32-wasip2`; the cdylib's path.
fn build_rust(dir: &Path, progress: &mut dyn Write) -> Result<PathBuf, BuildError> {
    let cargo = std::env::var_os("CARGO").map(PathBuf::from).or_else(|| toolchain::which("cargo")).ok_or(
        BuildError::Missing { needed: "cargo", lang: "Rust", how: "install Rust with rustup (https://rustup.rs)" },
    )?;
    if let Some(rustup) = toolchain::which("rustup") {
        let installed = Command::new(&rustup).args(["target", "list", "--installed"]).current_dir(dir).output();
        if !installed.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l == "wasm32-wasip2")) {
            let mut c = Command::new(rustup);
            c.args(["target", "add", "wasm32-wasip2"]);
            step(dir, "rustup target add wasm32-wasip2", c, progress)?;
        }
    }
    let meta = Command::new(&cargo).args(["metadata", "--no-deps", "--format-version", "1"]).current_dir(dir).output();
    let meta = meta.map_err(|e| BuildError::Io { what: "run cargo metadata in", path: dir.to_owned(), source: e })?;
    let meta: serde_json::Value = serde_json::from_slice(&meta.stdout).unwrap_or_default();
    let target_dir = meta["target_directory"].as_str().map_or_else(|| dir.join("target"), PathBuf::from);
    let lib = meta["packages"][0]["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "cdylib")))
        .and_then(|t| t["name"].as_str())
        .map(|n| n.replace('-', "_"))
        .ok_or_else(|| BuildError::Step {
            step: "cargo metadata".into(),
            dir: dir.to_owned(),
            status: "no cdylib target".into(),
            output: "a plugin crate has `[lib] crate-type = [\"cdylib\"]` (as `plugin new` writes it)".into(),
        })?;
    let mut c = Command::new(&cargo);
    c.args(["build", "--release", "--target", "wasm32-wasip2"]);
    step(dir, "cargo build --release --target wasm32-wasip2", c, progress)?;
    Ok(target_dir.join("wasm32-wasip2/release").join(format!("{lib}.wasm")))
}

/// `GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared`: a reactor module.
fn build_go(dir: &Path, target: &Path, go: PathBuf, progress: &mut dyn Write) -> Result<PathBuf, BuildError> {
    let core = target.join("core.wasm");
    let mut c = go_command(go);
    // -checklinkname=0: the SDK's allocator takes memory from runtime.sbrk
    // (see sdk/go/traptor/abi_wasip1.go: Go's heap may not be used there).
    c.args(["build", "-buildmode=c-shared", "-trimpath", "-ldflags=-s -w -checklinkname=0", "-o"]).arg(&core).arg(".");
    c.env("GOOS", "wasip1").env("GOARCH", "wasm").env("CGO_ENABLED", "0");
    step(
        dir,
        &format!("go build ({} {}, GOOS=wasip1 GOARCH=wasm)", toolchain::GO.name(), toolchain::GO.version()),
        c,
        progress,
    )?;
    Ok(core)
}

/// The pinned Go, never another (GOTOOLCHAIN=local). The Go module proxy
/// may be out of reach: a plugin's packages are all in the project (the SDK
/// is written into it), so unless the caller set a GOPROXY of their own, a
/// missing module is said at once, not after a network timeout.
fn go_command(go: PathBuf) -> Command {
    let mut c = Command::new(go);
    c.env("GOTOOLCHAIN", "local");
    if std::env::var_os("GOPROXY").is_none() {
        c.env("GOPROXY", "off");
    }
    c
}

/// Every C and C++ source but the tests (`test_*`), with `zig cc`/`zig c++`
/// for wasm32-wasi as a reactor.
fn build_c(dir: &Path, target: &Path, zig: &Path, progress: &mut dyn Write) -> Result<PathBuf, BuildError> {
    let sources = c_sources(dir, false)?;
    let core = target.join("core.wasm");
    compile_c(dir, &target.join("obj"), zig, Some("wasm32-wasi"), &sources, &core, progress)?;
    Ok(core)
}

/// The C and C++ sources of `dir`: the tests (`test_*`) or every other one.
fn c_sources(dir: &Path, tests: bool) -> Result<Vec<PathBuf>, BuildError> {
    let mut sources: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| BuildError::Io { what: "list", path: dir.to_owned(), source })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            let test = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("test_"));
            matches!(ext, "c" | "cc" | "cpp" | "cxx") && test == tests
        })
        .collect();
    sources.sort();
    Ok(sources)
}

/// Compile each source (`zig cc` or `zig c++`) into `objects/`, link into
/// `out`: a wasm32-wasi reactor for `target` Some, a native program for None.
fn compile_c(
    dir: &Path,
    objects: &Path,
    zig: &Path,
    target: Option<&str>,
    sources: &[PathBuf],
    out: &Path,
    progress: &mut dyn Write,
) -> Result<(), BuildError> {
    std::fs::create_dir_all(objects).map_err(|source| BuildError::Io {
        what: "create",
        path: objects.to_owned(),
        source,
    })?;
    let cpp = sources.iter().any(|p| p.extension().is_some_and(|e| e != "c"));
    let target_arg = target.map(|t| format!("--target={t}"));
    let mut linked = Vec::new();
    for src in sources {
        let is_c = src.extension().is_some_and(|e| e == "c");
        let obj = objects.join(format!("{}.o", src.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
        let mut c = Command::new(zig);
        c.arg(if is_c { "cc" } else { "c++" }).args(target_arg.iter()).args(["-O2", "-Wall", "-c"]);
        if !is_c && target.is_some() {
            c.arg("-fno-exceptions");
        }
        c.arg(src).arg("-o").arg(&obj);
        let name = src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        step(dir, &format!("zig {} {name}", if is_c { "cc" } else { "c++" }), c, progress)?;
        linked.push(obj);
    }
    let mut c = Command::new(zig);
    c.arg(if cpp { "c++" } else { "cc" }).args(target_arg.iter());
    if target.is_some() {
        c.args(["-mexec-model=reactor", "-s"]);
    }
    c.args(["-O2", "-o"]).arg(out).args(&linked);
    let what = match target {
        Some(t) => format!("zig link ({} {}, {t} reactor)", toolchain::ZIG.name(), toolchain::ZIG.version()),
        None => format!("zig link (native: {})", out.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()),
    };
    step(dir, &what, c, progress)
}

/// `plugin build --test`: the project's unit tests, in its language's own
/// runner, with the tool chain the build uses (so Go or a C compiler need
/// not be on PATH). After the build: TypeScript's run on the compiled code.
fn unit_tests(dir: &Path, lang: Lang, tools: &Tools, progress: &mut dyn Write) -> Result<(), BuildError> {
    let tool = |program: PathBuf, args: &[&str]| {
        let mut c = Command::new(program);
        c.args(args);
        c
    };
    let which = |p: &'static str, how: &'static str| {
        toolchain::which(p).ok_or(BuildError::Missing { needed: p, lang: "the unit tests of these", how })
    };
    match lang {
        Lang::Rust => {
            let cargo =
                std::env::var_os("CARGO").map(PathBuf::from).map_or_else(|| which("cargo", "install Rust"), Ok)?;
            step(dir, "cargo test (unit tests)", tool(cargo, &["test", "-q"]), progress)
        }
        Lang::Python => {
            let py = which("python3", "apt-get install python3")?;
            step(dir, "python3 -m unittest (unit tests)", tool(py, &["-m", "unittest", "-q"]), progress)
        }
        Lang::Js => {
            step(dir, "node --test (unit tests)", tool(which("node", "apt-get install nodejs")?, &["--test"]), progress)
        }
        Lang::Typescript => {
            let node = which("node", "apt-get install nodejs")?;
            step(dir, "node --test target/js (unit tests)", tool(node, &["--test", "target/js"]), progress)
        }
        Lang::Go => {
            let mut c = go_command(tools.get(toolchain::GO, progress)?);
            c.args(["test", "./..."]);
            step(dir, "go test ./... (unit tests)", c, progress)
        }
        Lang::C => {
            let zig = tools.get(toolchain::ZIG, progress)?;
            let sources = c_sources(dir, false)?;
            for test in c_sources(dir, true)? {
                let name = test.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let program = dir.join("target").join(&name);
                let mut all = sources.clone();
                all.push(test);
                compile_c(dir, &dir.join("target/native"), &zig, None, &all, &program, progress)?;
                step(dir, &format!("{name} (unit tests)"), Command::new(&program), progress)?;
            }
            Ok(())
        }
    }
}

/// A WASI preview-1 core module → a component of the plugin world.
pub fn make_component(core: &Path, out: &Path) -> Result<(), BuildError> {
    let fail = |message: String| BuildError::Componentize { path: core.to_owned(), message };
    let mut module =
        std::fs::read(core).map_err(|source| BuildError::Io { what: "read", path: core.to_owned(), source })?;
    let mut resolve = wit_parser::Resolve::default();
    let pkg = resolve.push_str("plugin.wit", WIT).map_err(|e| fail(format!("{e:#}")))?;
    let world = resolve.select_world(&[pkg], Some("plugin")).map_err(|e| fail(format!("{e:#}")))?;
    wit_component::embed_component_metadata(&mut module, &resolve, world, wit_component::StringEncoding::UTF8, false)
        .map_err(|e| fail(format!("{e:#}")))?;
    let bytes = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .and_then(|e| {
            e.adapter(
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
        })
        .and_then(|e| e.encode())
        .map_err(|e| fail(format!("{e:#}")))?;
    write_atomic(out, &bytes)
}

/// The tool chain a language uses, for `--help`, docs and messages.
pub fn toolchain_of(lang: Lang) -> String {
    let t = |t: Tool| format!("{} {}", t.name(), t.version());
    match lang {
        Lang::Rust => "cargo (wasm32-wasip2 target)".into(),
        Lang::Python => t(toolchain::COMPONENTIZE_PY),
        Lang::Js => t(toolchain::COMPONENTIZE_JS),
        Lang::Typescript => format!("{} + {}", t(toolchain::TYPESCRIPT), t(toolchain::COMPONENTIZE_JS)),
        Lang::Go => t(toolchain::GO),
        Lang::C => format!("{} (zig cc / zig c++)", t(toolchain::ZIG)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_is_found_from_the_files_plugin_new_writes() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path();
        assert!(matches!(detect(p), Err(BuildError::Unknown(_))));
        let cases = [
            ("traptor.h", Lang::C),
            ("app.py", Lang::Python),
            ("package.json", Lang::Js),
            ("tsconfig.json", Lang::Typescript),
            ("go.mod", Lang::Go),
            ("Cargo.toml", Lang::Rust),
        ];
        // Each file added wins over the ones before it (a TypeScript project
        // also has package.json; a Go one may have C files beside it).
        for (file, lang) in cases {
            std::fs::write(p.join(file), "").expect("write");
            assert_eq!(detect(p).expect(file), lang, "{file}");
        }
    }

    #[test]
    fn an_output_onto_the_built_file_is_left_alone() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = dir.path().join("a.wasm");
        std::fs::write(&a, b"component").expect("write");
        assert!(same_file(&a, &dir.path().join(".").join("a.wasm")));
        assert!(!same_file(&a, &dir.path().join("b.wasm")));
        write_atomic(&dir.path().join("b.wasm"), b"copy").expect("write");
        assert_eq!(std::fs::read(dir.path().join("b.wasm")).expect("read"), b"copy");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 2, "no temporary file left");
    }

    #[test]
    fn a_module_that_is_not_wasm_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let core = dir.path().join("core.wasm");
        std::fs::write(&core, b"not wasm").expect("write");
        let err = make_component(&core, &dir.path().join("out.wasm")).expect_err("not wasm").to_string();
        assert!(err.contains("core.wasm"), "{err}");
    }
}
