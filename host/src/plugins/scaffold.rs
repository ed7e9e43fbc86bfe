//! `traptor-host plugin new`: a plugin project that builds with one
//! command (`traptor-host plugin build`, or the language's own), has a
//! passing unit test in the language's own runner and golden cases for
//! `plugin test`, in Rust (the SDK), Python (componentize-py), JavaScript
//! and TypeScript (componentize-js), Go (`sdk/go/traptor`, written into the
//! project) or C/C++ (`sdk/c`, written into the project). The templates
//! live in `host/templates/`; the WIT the Python and JavaScript tool chains
//! need is written beside them.

use std::path::{Path, PathBuf};

/// The plugin languages `plugin new` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
    Typescript,
    Go,
    /// C, with C++ files allowed beside.
    C,
}

impl Lang {
    pub const ALL: [Lang; 6] = [Lang::Rust, Lang::Python, Lang::Js, Lang::Typescript, Lang::Go, Lang::C];

    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
            Lang::Typescript => "typescript",
            Lang::Go => "go",
            Lang::C => "c",
        }
    }
}

/// What the new stage does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Adds fields to each post (`words`, `short`).
    Enricher,
    /// Keeps or drops each post (drops posts with fewer than `min_words` words).
    Filter,
}

/// Why a project could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("{0:?} is not a plugin name: use lowercase letters, digits and '-', starting with a letter")]
    Name(String),
    #[error("{0} already exists; choose another name or directory")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

const WIT: &str = include_str!("../../../wit/plugin.wit");
/// The ABI helpers Python and JavaScript stages import (one file each).
const PY_HELPER: &str = include_str!("../../../sdk/python/traptor_stage.py");
const JS_HELPER: &str = include_str!("../../../sdk/js/traptor_stage.js");
const JS_HELPER_TYPES: &str = include_str!("../../../sdk/js/traptor_stage.d.ts");
/// The Go SDK package, written into a Go project as `traptor/`.
const GO_SDK: [(&str, &str); 6] = [
    ("traptor.go", include_str!("../../../sdk/go/traptor/traptor.go")),
    ("outcome.go", include_str!("../../../sdk/go/traptor/outcome.go")),
    ("host.go", include_str!("../../../sdk/go/traptor/host.go")),
    ("host_native.go", include_str!("../../../sdk/go/traptor/host_native.go")),
    ("abi_wasip1.go", include_str!("../../../sdk/go/traptor/abi_wasip1.go")),
    ("testing.go", include_str!("../../../sdk/go/traptor/testing.go")),
];
/// The C SDK, written into a C project.
const C_SDK: [(&str, &str); 2] =
    [("traptor.h", include_str!("../../../sdk/c/traptor.h")), ("traptor.c", include_str!("../../../sdk/c/traptor.c"))];

/// Where the SDK is for a new Rust project: the source tree this binary
/// was built from when it is still there, else the project's repository.
pub fn default_sdk() -> String {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    match sdk.canonicalize() {
        Ok(p) if p.join("Cargo.toml").exists() => format!("{{ path = {:?} }}", p.display().to_string()),
        _ => format!("{{ git = {:?} }}", env!("CARGO_PKG_REPOSITORY")),
    }
}

/// Write the project `dir/name`; returns its path and the files written.
pub fn new_project(
    dir: &Path,
    name: &str,
    lang: Lang,
    kind: Kind,
    sdk: &str,
) -> Result<(PathBuf, Vec<PathBuf>), ScaffoldError> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-');
    if !valid {
        return Err(ScaffoldError::Name(name.to_owned()));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(ScaffoldError::Exists(root));
    }
    let module = name.replace('-', "_");
    let (kind_word, summary) = match kind {
        Kind::Enricher => ("enricher", "Adds the number of words of each post and whether it is short."),
        Kind::Filter => ("filter", "Keeps posts with at least `min_words` words and drops the others."),
    };
    let vars: Vec<(&str, String)> = vec![
        ("name", name.to_owned()),
        ("module", module.clone()),
        ("kind", kind_word.to_owned()),
        ("kind_variant", if kind == Kind::Enricher { "Enricher" } else { "Filter" }.to_owned()),
        ("kind_upper", kind_word.to_uppercase()),
        ("summary", summary.to_owned()),
        ("sdk", sdk.to_owned()),
        ("abi", super::ABI_VERSION.to_owned()),
        ("enrichment_import", if kind == Kind::Enricher { "Enrichment, " } else { "" }.to_owned()),
        ("config_doc", if kind == Kind::Enricher { "are marked `short`" } else { "are dropped" }.to_owned()),
        ("process_rust", snippet(lang, kind, Part::Process).to_owned()),
        ("test_rust", snippet(lang, kind, Part::Test).to_owned()),
        ("process_python", snippet(lang, kind, Part::Process).to_owned()),
        ("process_js", snippet(lang, kind, Part::Process).to_owned()),
        ("process_go", snippet(lang, kind, Part::Process).to_owned()),
        ("test_go", snippet(lang, kind, Part::Test).to_owned()),
        ("process_c", snippet(lang, kind, Part::Process).to_owned()),
        ("test_c", snippet(lang, kind, Part::Test).to_owned()),
    ];
    let fill = |t: &str| vars.iter().fold(t.to_owned(), |s, (k, v)| s.replace(&format!("{{{{{k}}}}}"), v));
    let mut files = template_files(lang, &module, &fill);
    files.push(("cases.jsonl".into(), cases(kind).to_owned()));
    files.push(("README.md".into(), readme(name, &module, lang, kind_word)));
    files.push((".gitignore".into(), "/target\n*.wasm\n__pycache__/\n".into()));
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = root.join(&rel);
        let write = |p: &Path| -> std::io::Result<()> {
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d)?;
            }
            std::fs::write(p, &text)
        };
        write(&path).map_err(|source| ScaffoldError::Write { path: path.clone(), source })?;
        written.push(path);
    }
    Ok((root, written))
}

/// The files of a project in `lang`, its templates filled in.
fn template_files(lang: Lang, module: &str, fill: &dyn Fn(&str) -> String) -> Vec<(String, String)> {
    match lang {
        Lang::Rust => vec![
            ("Cargo.toml".into(), fill(include_str!("../../templates/rust/Cargo.toml"))),
            ("src/lib.rs".into(), fill(include_str!("../../templates/rust/src/lib.rs"))),
        ],
        Lang::Python => vec![
            ("app.py".into(), fill(include_str!("../../templates/python/app.py"))),
            (format!("{module}_core.py"), fill(include_str!("../../templates/python/core.py"))),
            (format!("test_{module}.py"), fill(include_str!("../../templates/python/test_core.py"))),
            ("traptor_stage.py".into(), PY_HELPER.to_owned()),
            ("wit/plugin.wit".into(), WIT.to_owned()),
        ],
        Lang::Js => vec![
            ("app.js".into(), fill(include_str!("../../templates/js/app.js"))),
            ("core.js".into(), fill(include_str!("../../templates/js/core.js"))),
            ("core.test.js".into(), fill(include_str!("../../templates/js/core.test.js"))),
            ("package.json".into(), fill(include_str!("../../templates/js/package.json"))),
            ("traptor_stage.js".into(), JS_HELPER.to_owned()),
            ("wit/plugin.wit".into(), WIT.to_owned()),
        ],
        Lang::Typescript => vec![
            ("app.ts".into(), fill(include_str!("../../templates/typescript/app.ts"))),
            ("core.ts".into(), fill(include_str!("../../templates/typescript/core.ts"))),
            ("core.test.ts".into(), fill(include_str!("../../templates/typescript/core.test.ts"))),
            ("env.d.ts".into(), fill(include_str!("../../templates/typescript/env.d.ts"))),
            ("tsconfig.json".into(), fill(include_str!("../../templates/typescript/tsconfig.json"))),
            ("package.json".into(), fill(include_str!("../../templates/typescript/package.json"))),
            ("traptor_stage.js".into(), JS_HELPER.to_owned()),
            ("traptor_stage.d.ts".into(), JS_HELPER_TYPES.to_owned()),
            ("wit/plugin.wit".into(), WIT.to_owned()),
        ],
        Lang::Go => {
            let mut f = vec![
                ("go.mod".into(), fill(include_str!("../../templates/go/go.mod"))),
                ("main.go".into(), fill(include_str!("../../templates/go/main.go"))),
                ("main_test.go".into(), fill(include_str!("../../templates/go/main_test.go"))),
            ];
            f.extend(GO_SDK.iter().map(|(n, t)| (format!("traptor/{n}"), (*t).to_owned())));
            f
        }
        Lang::C => {
            let mut f = vec![
                ("stage.c".into(), fill(include_str!("../../templates/c/stage.c"))),
                ("test_stage.c".into(), fill(include_str!("../../templates/c/test_stage.c"))),
            ];
            f.extend(C_SDK.iter().map(|(n, t)| ((*n).to_owned(), (*t).to_owned())));
            f
        }
    }
}

#[derive(Clone, Copy)]
enum Part {
    Process,
    Test,
}

/// The lines that differ between an enricher and a filter.
fn snippet(lang: Lang, kind: Kind, part: Part) -> &'static str {
    match (lang, kind, part) {
        (Lang::Rust, Kind::Enricher, Part::Process) => {
            "        Enrichment::new().field(\"words\", words).field(\"short\", words < self.min_words).into()"
        }
        (Lang::Rust, Kind::Filter, Part::Process) => {
            "        if words >= self.min_words {\n            Outcome::Keep\n        } else {\n            Outcome::Drop(format!(\"fewer than {} words\", self.min_words))\n        }"
        }
        (Lang::Rust, Kind::Enricher, Part::Test) => {
            "        assert_eq!(out[0], Enrichment::new().field(\"words\", 4).field(\"short\", false).into());\n        assert_eq!(out[1], Enrichment::new().field(\"words\", 1).field(\"short\", true).into());"
        }
        (Lang::Rust, Kind::Filter, Part::Test) => {
            "        assert_eq!(out[0], Outcome::Keep);\n        assert_eq!(out[1], Outcome::Drop(\"fewer than 3 words\".into()));"
        }
        (Lang::Python, Kind::Enricher, Part::Process) => {
            "    return Enrich({\"words\": words, \"short\": words < _CONFIG[\"min_words\"]})"
        }
        (Lang::Python, Kind::Filter, Part::Process) => {
            "    if words >= _CONFIG[\"min_words\"]:\n        return None\n    return Drop(f\"fewer than {_CONFIG['min_words']} words\")"
        }
        (Lang::Js | Lang::Typescript, Kind::Enricher, Part::Process) => {
            "  return enrich({ words, short: words < config.minWords });"
        }
        (Lang::Js | Lang::Typescript, Kind::Filter, Part::Process) => {
            "  if (words >= config.minWords) return undefined;\n  return drop(`fewer than ${config.minWords} words`);"
        }
        (Lang::Go, Kind::Enricher, Part::Process) => {
            "\treturn traptor.Enrich(traptor.NewEnrichment().Int(\"words\", int64(words)).Bool(\"short\", words < s.minWords))"
        }
        (Lang::Go, Kind::Filter, Part::Process) => {
            "\tif words >= s.minWords {\n\t\treturn traptor.Keep()\n\t}\n\treturn traptor.Drop(fmt.Sprintf(\"fewer than %d words\", s.minWords))"
        }
        (Lang::Go, Kind::Enricher, Part::Test) => {
            "\tif got := out[0].Enrichment(); got != `{\"words\":4,\"short\":false}` {\n\t\tt.Errorf(\"post 1: %s\", got)\n\t}\n\tif got := out[1].Enrichment(); got != `{\"words\":1,\"short\":true}` {\n\t\tt.Errorf(\"post 2: %s\", got)\n\t}"
        }
        (Lang::Go, Kind::Filter, Part::Test) => {
            "\tif !out[0].IsKeep() {\n\t\tt.Errorf(\"post 1: %v\", out[0])\n\t}\n\tif !out[1].IsDrop() || out[1].Reason() != \"fewer than 3 words\" {\n\t\tt.Errorf(\"post 2: %v\", out[1])\n\t}"
        }
        (Lang::C, Kind::Enricher, Part::Process) => {
            "  traptor_enrichment *e = traptor_enrichment_new();\n  traptor_enrich_int(e, \"words\", words);\n  traptor_enrich_bool(e, \"short\", words < min_words);\n  return traptor_enrich(e);"
        }
        (Lang::C, Kind::Filter, Part::Process) => {
            "  static char reason[64];\n  if (words >= min_words) return traptor_keep();\n  snprintf(reason, sizeof reason, \"fewer than %lld words\", min_words);\n  return traptor_drop(reason);"
        }
        (Lang::C, Kind::Enricher, Part::Test) => {
            "  TRAPTOR_CHECK(out[0].action == TRAPTOR_ENRICH && !strcmp(out[0].text, \"{\\\"words\\\":4,\\\"short\\\":false}\"));\n  TRAPTOR_CHECK(out[1].action == TRAPTOR_ENRICH && !strcmp(out[1].text, \"{\\\"words\\\":1,\\\"short\\\":true}\"));"
        }
        (Lang::C, Kind::Filter, Part::Test) => {
            "  TRAPTOR_CHECK(out[0].action == TRAPTOR_KEEP);\n  TRAPTOR_CHECK(out[1].action == TRAPTOR_DROP && !strcmp(out[1].text, \"fewer than 3 words\"));"
        }
        (_, _, Part::Test) => "",
    }
}

/// Golden cases for `plugin test` (default configuration: `min_words` 3).
fn cases(kind: Kind) -> &'static str {
    match kind {
        Kind::Enricher => concat!(
            r#"{"name": "four words", "post": {"id_str": "1", "text": "one two three four"}, "outcome": "enrich", "fields": {"words": 4, "short": false}}"#,
            "\n",
            r#"{"name": "one word is short", "post": {"id_str": "2", "text": "hi"}, "outcome": "enrich", "fields": {"words": 1, "short": true}}"#,
            "\n",
        ),
        Kind::Filter => concat!(
            r#"{"name": "long enough", "post": {"id_str": "1", "text": "one two three four"}, "outcome": "keep"}"#,
            "\n",
            r#"{"name": "too short", "post": {"id_str": "2", "text": "hi"}, "outcome": "drop", "reason": "fewer than 3 words"}"#,
            "\n",
        ),
    }
}

fn readme(name: &str, module: &str, lang: Lang, kind: &str) -> String {
    let built = format!("target/{name}.wasm");
    let (build, wasm, unit) = match lang {
        Lang::Rust => (
            "cargo build --release --target wasm32-wasip2   # rustup target add wasm32-wasip2, once".to_owned(),
            format!("target/wasm32-wasip2/release/{module}.wasm"),
            "cargo test".to_owned(),
        ),
        Lang::Python => (
            format!("componentize-py -d wit -w plugin componentize app -o {name}.wasm   # pip install componentize-py"),
            format!("{name}.wasm"),
            "python3 -m unittest".to_owned(),
        ),
        Lang::Js => (
            format!(
                "componentize-js app.js --wit wit -n plugin -d http fetch-event -o {name}.wasm   # npm install @bytecodealliance/componentize-js"
            ),
            format!("{name}.wasm"),
            "node --test".to_owned(),
        ),
        Lang::Typescript => (
            "traptor-host plugin build   # tsc (TypeScript 5.9), then componentize-js; both installed on first use".to_owned(),
            built.clone(),
            "traptor-host plugin build --test   # node --test target/js: the unit tests, compiled with the stage".to_owned(),
        ),
        Lang::Go => (
            "traptor-host plugin build   # GOOS=wasip1 go build -buildmode=c-shared, then a component; Go installed on first use".to_owned(),
            built.clone(),
            "traptor-host plugin build --test   # go test ./... with the Go it installs (or any Go >= 1.24)".to_owned(),
        ),
        Lang::C => (
            "traptor-host plugin build   # zig cc for wasm32-wasi (Zig installed on first use), then a component".to_owned(),
            built.clone(),
            "traptor-host plugin build --test   # test_*.c built natively with zig cc (or: cc -o target/test_stage stage.c traptor.c test_stage.c)".to_owned(),
        ),
    };
    let also = match lang {
        Lang::Rust | Lang::Python | Lang::Js => {
            format!("\n`traptor-host plugin build` does the same (tool chain installed on first use) into `{built}`.\n")
        }
        _ => String::new(),
    };
    format!(
        "# {name}\n\nA traptor stage ({kind}), made by `traptor-host plugin new`.\n\n\
         ```sh\n{unit}                                   # unit tests\n{build}\n\
         traptor-host plugin test {wasm} --cases cases.jsonl   # golden cases: a diff per mismatch\n\
         traptor-host plugin inspect {wasm}                    # name, kind, ABI, config schema\n\
         traptor-host plugin push {wasm} oci://REGISTRY/team/{name}:0.1.0\n```\n{also}\n\
         Then name it in a pipeline (`plugin = \"oci://REGISTRY/team/{name}:0.1.0\"`), pin it with\n\
         `traptor-host plugin lock --pipeline pipeline.toml`, and run. See traptor's `docs/plugins.md`.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_is_filled_and_names_are_checked() {
        let dir = tempfile::tempdir().expect("tmp");
        for lang in Lang::ALL {
            for kind in [Kind::Enricher, Kind::Filter] {
                let name = format!("p-{}-{}", lang as u8, kind as u8);
                let (root, files) = new_project(dir.path(), &name, lang, kind, "{ path = \"/sdk\" }").expect("new");
                for f in &files {
                    let text = std::fs::read_to_string(f).expect("read");
                    // `{{word}}` is a placeholder; Go's `{{ID: …}}` literals are not.
                    let unfilled = text.split("{{").skip(1).any(|rest| {
                        rest.split_once("}}").is_some_and(|(k, _)| {
                            !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                        })
                    });
                    assert!(!unfilled, "{}: an unfilled placeholder", f.display());
                }
                assert!(root.join("cases.jsonl").exists() && root.join("README.md").exists());
                assert!(matches!(new_project(dir.path(), &name, lang, kind, "x"), Err(ScaffoldError::Exists(_))));
            }
        }
        for bad in ["", "Upper", "1st", "a_b", "trailing-", "a b"] {
            assert!(
                matches!(new_project(dir.path(), bad, Lang::Rust, Kind::Filter, "x"), Err(ScaffoldError::Name(_))),
                "{bad:?}"
            );
        }
    }
}
