//! End-to-end (issue 14): `plugin new` writes a project in each language
//! that builds with the command its README gives and passes its own unit
//! test; `plugin test` passes its golden cases, and one wrong expected case
//! gives exit 1 and a diff.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use traptor_tests::{repo_root, run_host, rust_plugin_env, tools_dir};

const LIMIT: Duration = Duration::from_secs(600);

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn sh(dir: &Path, program: impl AsRef<std::ffi::OsStr>, args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(program);
    c.args(args).current_dir(dir);
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.output().expect("spawn");
    assert!(out.status.success(), "{:?} {args:?} in {}: {}", c.get_program(), dir.display(), text(&out));
    out
}

/// `plugin new`, then the README's build command must appear in the README.
fn new_project(dir: &Path, name: &str, lang: &str, kind: &str) -> PathBuf {
    let sdk = format!("{{ path = {:?} }}", repo_root().join("sdk").display().to_string());
    let out = run_host(
        &["plugin", "new", name, "--lang", lang, "--kind", kind, "--dir", dir.to_str().expect("utf8"), "--sdk", &sdk],
        LIMIT,
    );
    assert!(out.status.success(), "{}", text(&out));
    dir.join(name)
}

/// The golden cases pass; with one expected value changed, exit 1 and a diff naming it.
fn golden_cases(project: &Path, wasm: &Path, wrong: (&str, &str), diff: &str) {
    let cases = project.join("cases.jsonl");
    let args = ["plugin", "test", wasm.to_str().expect("utf8"), "--cases", cases.to_str().expect("utf8")];
    let out = run_host(&args, LIMIT);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("2 cases: 2 passed, 0 failed"), "{}", text(&out));
    let original = std::fs::read_to_string(&cases).expect("cases");
    assert!(original.contains(wrong.0), "{original}");
    std::fs::write(&cases, original.replacen(wrong.0, wrong.1, 1)).expect("write");
    let out = run_host(&args, LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("FAILED  line 1") && text(&out).contains(diff), "{}", text(&out));
    assert!(text(&out).contains("2 cases: 1 passed, 1 failed"), "{}", text(&out));
}

#[test]
fn a_new_rust_plugin_builds_tests_and_passes_its_cases() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = new_project(dir.path(), "word-count", "rust", "enricher");
    let readme = std::fs::read_to_string(p.join("README.md")).expect("readme");
    assert!(readme.contains("cargo build --release --target wasm32-wasip2"), "{readme}");
    let env = rust_plugin_env();
    let (target, channel) = (PathBuf::from(&env[0].1), PathBuf::from(&env[1].1));
    let envs = [(env[0].0, target.as_path()), (env[1].0, channel.as_path())];
    sh(&p, "cargo", &["test", "-q"], &envs);
    sh(&p, "cargo", &["build", "--release", "--target", "wasm32-wasip2", "-q"], &envs);
    let wasm = target.join("wasm32-wasip2/release/word_count.wasm");
    golden_cases(&p, &wasm, (r#""words": 4"#, r#""words": 5"#), "~ words: expected 5, got 4");
}

#[test]
fn a_new_python_plugin_builds_tests_and_passes_its_cases() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = new_project(dir.path(), "short-filter", "python", "filter");
    let readme = std::fs::read_to_string(p.join("README.md")).expect("readme");
    assert!(readme.contains("componentize-py -d wit -w plugin componentize app -o short-filter.wasm"), "{readme}");
    sh(&p, "python3", &["-m", "unittest", "-q"], &[]);
    let py = tools_dir().join("componentize-py-0.25.1/bin/componentize-py");
    assert!(py.exists(), "{} missing: run scripts/build-plugins.sh", py.display());
    sh(&p, &py, &["-d", "wit", "-w", "plugin", "componentize", "app", "-o", "short-filter.wasm"], &[]);
    golden_cases(
        &p,
        &p.join("short-filter.wasm"),
        (r#""outcome": "keep""#, r#""outcome": "drop""#),
        "outcome: expected drop, got keep",
    );
}

#[test]
fn a_new_javascript_plugin_builds_tests_and_passes_its_cases() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = new_project(dir.path(), "word-js", "js", "enricher");
    sh(&p, "node", &["--test"], &[]);
    let js = tools_dir().join("componentize-js-0.23.0/node_modules/.bin/componentize-js");
    assert!(js.exists(), "{} missing: run scripts/build-plugins.sh", js.display());
    sh(&p, &js, &["app.js", "--wit", "wit", "-n", "plugin", "-d", "http", "fetch-event", "-o", "word-js.wasm"], &[]);
    golden_cases(
        &p,
        &p.join("word-js.wasm"),
        (r#""short": false"#, r#""short": true"#),
        "~ short: expected true, got false",
    );
}

/// Issue 29: the one-file ABI helpers every Python and JavaScript stage
/// imports pass their own tests, in each language's own runner.
#[test]
fn the_python_and_javascript_abi_helpers_pass_their_own_tests() {
    let sdk = repo_root().join("sdk");
    let py = sh(&sdk.join("python"), "python3", &["-m", "unittest", "-v"], &[]);
    assert!(text(&py).contains("Ran 3 tests") && text(&py).contains("OK"), "{}", text(&py));
    let js = sh(&sdk.join("js"), "node", &["--test"], &[]);
    assert!(text(&js).contains("# pass 3") && text(&js).contains("# fail 0"), "{}", text(&js));
}

/// Issue 27: C++ files may sit beside the C ones of a `--lang c` project;
/// `plugin build` compiles them with `zig c++` and links with libc++. Here
/// the stage's word count moves into C++ (the standard library included) and
/// the golden cases still pass.
#[test]
fn a_c_plugin_may_call_cpp_beside_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = new_project(dir.path(), "mixed", "c", "filter");
    std::fs::write(
        p.join("words.cpp"),
        r#"#include <algorithm>
#include <string_view>

#include "traptor.h"

extern "C" long long count_words_cpp(traptor_str text) {
  std::string_view s(text.ptr, text.len);
  const char *p = s.data(), *end = s.data() + s.size();
  long long words = 0;
  bool in_word = false;
  while (p < end) {
    bool space = traptor_is_whitespace(traptor_utf8_next(&p, end));
    if (!space && !in_word) words++;
    in_word = !space;
  }
  return std::max(words, 0LL);
}
"#,
    )
    .expect("write");
    let stage = std::fs::read_to_string(p.join("stage.c")).expect("stage.c");
    let call = "count_words(traptor_post_text(post))";
    assert!(stage.contains(call), "{stage}");
    let stage = stage.replacen(call, "count_words_cpp(traptor_post_text(post))", 1).replacen(
        "#include \"traptor.h\"\n",
        "#include \"traptor.h\"\n\nlong long count_words_cpp(traptor_str text); /* words.cpp */\n",
        1,
    );
    std::fs::write(p.join("stage.c"), stage).expect("write");
    let out = run_host(&["plugin", "build", p.to_str().expect("utf8")], LIMIT);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("zig c++ words.cpp"), "{}", text(&out));
    let wasm = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    golden_cases(
        &p,
        Path::new(&wasm),
        (r#""outcome": "keep""#, r#""outcome": "drop""#),
        "outcome: expected drop, got keep",
    );
}

/// `plugin build --test` runs the project's unit tests with the build's tool
/// chain (here C's, built natively with zig cc); a failing one exits 1 with
/// the test's own output, and no component is reported.
#[test]
fn plugin_build_test_runs_the_unit_tests_and_fails_with_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = new_project(dir.path(), "tested", "c", "enricher");
    let args = ["plugin", "build", "--test", p.to_str().expect("utf8")];
    let out = run_host(&args, LIMIT);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("test_stage (unit tests)"), "{}", text(&out));
    let test = std::fs::read_to_string(p.join("test_stage.c")).expect("test");
    std::fs::write(p.join("test_stage.c"), test.replacen(r#"\"words\":4"#, r#"\"words\":5"#, 1)).expect("write");
    let out = run_host(&args, LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("the unit tests failed") && text(&out).contains("test_stage.c:"), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty(), "no component path on stdout");
}
