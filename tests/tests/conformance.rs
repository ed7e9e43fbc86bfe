//! One conformance suite across the six plugin languages (issue 27): the
//! `words`/`short` enricher and the `min_words` filter that `plugin new`
//! writes, built by `plugin build` in Rust, Python, JavaScript, TypeScript,
//! Go and C, each pass their unit tests in the language's own runner and
//! their golden cases, and give byte-identical enrichments and identical
//! keep/drop on the same 1,000 posts (tests/fixtures/conformance: real texts
//! mixed with every Unicode White_Space character, look-alikes that are not
//! spaces, emoji, CJK, combining marks, right-to-left scripts). The expected
//! lines are computed here, from the corpus, with the one rule every SDK
//! states: words are runs of characters that are not Unicode White_Space
//! (Rust's `split_whitespace`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use traptor_tests::{fixture, repo_root, run_host_with, rust_plugin_env, tools_dir};

const LIMIT: Duration = Duration::from_secs(900);

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn host(args: &[&str]) -> Output {
    let env = rust_plugin_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = run_host_with(args, &env, LIMIT);
    assert!(out.status.success(), "traptor-host {args:?}: {}", text(&out));
    out
}

fn sh(dir: &Path, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
    let mut c = Command::new(program);
    c.args(args).current_dir(dir);
    for (k, v) in rust_plugin_env() {
        c.env(k, v);
    }
    c.env("GOTOOLCHAIN", "local").env("GOPROXY", "off");
    let out = c.output().expect("spawn");
    assert!(out.status.success(), "{:?} {args:?} in {}: {}", c.get_program(), dir.display(), text(&out));
    out
}

/// The project's unit tests, in its language's own runner (after the build:
/// TypeScript tests run on the compiled JavaScript; Go is the one the build
/// installed).
fn unit_tests(lang: &str, p: &Path) {
    match lang {
        "rust" => drop(sh(p, "cargo", &["test", "-q"])),
        "python" => drop(sh(p, "python3", &["-m", "unittest", "-q"])),
        "js" => drop(sh(p, "node", &["--test"])),
        "typescript" => drop(sh(p, "node", &["--test", "target/js"])),
        "go" => {
            let go = glob_one(&tools_dir().join("go-1.27.3/lib"), "site-packages/go/bin/go");
            let out = sh(p, go, &["test", "./..."]);
            assert!(text(&out).contains("ok "), "{}", text(&out));
        }
        "c" => {
            sh(
                p,
                "cc",
                &["-std=c11", "-Wall", "-Werror", "-o", "target/test_stage", "stage.c", "traptor.c", "test_stage.c"],
            );
            let out = sh(p, p.join("target/test_stage"), &[]);
            assert!(text(&out).contains("ok: 2 tests"), "{}", text(&out));
        }
        other => panic!("no unit test runner for {other}"),
    }
}

/// `<dir>/*/<rel>` (a virtual environment's lib/python3.X).
fn glob_one(dir: &Path, rel: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path().join(rel))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no {rel} under {}", dir.display()))
}

/// What every language must print for the corpus, line by line.
fn expected(kind: &str) -> Vec<String> {
    let corpus = std::fs::read_to_string(fixture("conformance/posts.jsonl")).expect("corpus");
    corpus
        .lines()
        .map(|l| {
            let post: serde_json::Value = serde_json::from_str(l).expect("post");
            let id = post["id_str"].as_str().expect("id_str");
            let words = post["text"].as_str().expect("text").split_whitespace().count();
            match kind {
                "enricher" => {
                    format!(r#"{{"id":"{id}","outcome":"enrich","fields":{{"words":{words},"short":{}}}}}"#, words < 3)
                }
                _ if words >= 3 => format!(r#"{{"id":"{id}","outcome":"keep"}}"#),
                _ => format!(r#"{{"id":"{id}","outcome":"drop","reason":"fewer than 3 words"}}"#),
            }
        })
        .collect()
}

fn conformance(lang: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let sdk = format!("{{ path = {:?} }}", repo_root().join("sdk").display().to_string());
    let corpus = fixture("conformance/posts.jsonl");
    for kind in ["enricher", "filter"] {
        let name = format!("conf-{kind}");
        let d = dir.path().to_str().expect("utf8");
        host(&["plugin", "new", &name, "--lang", lang, "--kind", kind, "--dir", d, "--sdk", &sdk]);
        let p = dir.path().join(&name);
        // --test: the unit tests through plugin build too (its tool chain).
        let built = host(&["plugin", "build", "--test", p.to_str().expect("utf8")]);
        assert!(text(&built).contains("(unit tests)"), "{}", text(&built));
        let wasm = String::from_utf8_lossy(&built.stdout).trim().to_owned();
        assert!(text(&built).contains("ABI 0.2.0"), "{}", text(&built));
        unit_tests(lang, &p);
        let cases = p.join("cases.jsonl");
        let out = host(&["plugin", "test", &wasm, "--cases", cases.to_str().expect("utf8")]);
        assert!(text(&out).contains("2 cases: 2 passed, 0 failed"), "{}", text(&out));
        let out = host(&["plugin", "run", &wasm, "--input", corpus.to_str().expect("utf8")]);
        let got: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
        let want = expected(kind);
        assert_eq!(got.len(), want.len(), "{lang} {kind}: {}", text(&out));
        let wrong: Vec<String> = want
            .iter()
            .zip(&got)
            .filter(|(w, g)| w != g)
            .take(5)
            .map(|(w, g)| format!("  want {w}\n  got  {g}"))
            .collect();
        assert!(wrong.is_empty(), "{lang} {kind}: lines differ from the White_Space rule:\n{}", wrong.join("\n"));
    }
}

#[test]
fn rust_passes_the_conformance_suite() {
    conformance("rust");
}

#[test]
fn python_passes_the_conformance_suite() {
    conformance("python");
}

#[test]
fn javascript_passes_the_conformance_suite() {
    conformance("js");
}

#[test]
fn typescript_passes_the_conformance_suite() {
    conformance("typescript");
}

#[test]
fn go_passes_the_conformance_suite() {
    conformance("go");
}

#[test]
fn c_passes_the_conformance_suite() {
    conformance("c");
}

/// The corpus holds what makes languages disagree, or the suite proves little.
#[test]
fn the_corpus_has_the_characters_languages_disagree_on() {
    let corpus = std::fs::read_to_string(fixture("conformance/posts.jsonl")).expect("corpus");
    let texts: Vec<String> = corpus
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("post")["text"].as_str().expect("text").to_owned())
        .collect();
    assert_eq!(texts.len(), 1000);
    for c in [
        '\u{85}', '\u{a0}', '\u{3000}', '\u{2028}', '\u{feff}', '\u{200b}', '\u{1c}', '\u{180e}', '\u{301}', '\u{200d}',
    ] {
        assert!(texts.iter().any(|t| t.contains(c)), "no post has U+{:04X}", c as u32);
    }
    let scripts = ['東', 'ا', 'ש', '한', '👍'];
    assert!(scripts.iter().all(|s| texts.iter().any(|t| t.contains(*s))));
    let short = texts.iter().filter(|t| t.split_whitespace().count() < 3).count();
    assert!((100..900).contains(&short), "both outcomes are exercised: {short} short posts");
}
