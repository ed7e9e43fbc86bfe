//! The dependency rule of DESIGN §1, checked: a top-level module of
//! `host/src` or `sdk/src` imports only modules of its own layer or of the
//! layers below, as `docs/ARCHITECTURE.md` draws them (its `layers` blocks are
//! the list this check reads, so the drawing cannot drift from the code); no
//! import circle between top-level modules, nor between the files of one
//! folder module (a parent's `mod.rs` aside: it lists its children).
//!
//! A module depends on another when its code (tests, `tests.rs` and
//! `*_tests.rs` files and comments aside)
//! names `crate::<other>` (also inside `crate::{…}`), or, for files of one
//! folder, `super::<sibling>`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges `from → to` between module names.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// Source text without comments and without its `#[cfg(test)]` part (the
/// crate's habit: tests sit at the end of a file).
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let line = match line.find("//") {
            // `//` inside a string is rare in use paths; good enough here.
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The first path segment of every `prefix::` path in `code`, expanding
/// `prefix::{a, b::c}` groups.
fn heads(code: &str, prefix: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut start = 0;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.insert(ident(group[start..j].trim()));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(group[start..j].trim()));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.remove("");
    out
}

/// A file of tests (`tests.rs`, `<module>_tests.rs`): tests aside, like a
/// file's `#[cfg(test)]` part.
fn is_test_file(p: &Path) -> bool {
    p.file_stem().and_then(|s| s.to_str()).is_some_and(|s| s == "tests" || s.ends_with("_tests"))
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())).flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") && !is_test_file(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The top-level module a file belongs to (`None` for the crate root).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// Dependencies between the top-level modules of a crate's `src`.
pub fn top_level_graph(src: &Path) -> Graph {
    let files = rust_files(src);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(src, f)).collect();
    let mut g = Graph::new();
    for f in &files {
        let Some(from) = top_module(src, f) else { continue };
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let entry = g.entry(from.clone()).or_default();
        for to in heads(&code(&text), "crate::") {
            if to != from && modules.contains(&to) {
                entry.insert(to);
            }
        }
    }
    g
}

/// Dependencies between the files of each folder module: `folder → graph`.
pub fn sibling_graphs(src: &Path) -> BTreeMap<String, Graph> {
    let mut out = BTreeMap::new();
    for f in rust_files(src) {
        let Some(dir) = f.parent() else { continue };
        if dir == src || f.file_name().is_some_and(|n| n == "mod.rs") {
            continue;
        }
        let siblings: BTreeSet<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.strip_suffix(".rs").map(str::to_owned).or_else(|| e.path().is_dir().then_some(n))
                    })
                    .filter(|n| n != "mod")
                    .collect()
            })
            .unwrap_or_default();
        let from = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let folder = dir.strip_prefix(src).map(|p| p.display().to_string()).unwrap_or_default();
        let crate_path = format!("crate::{}::", folder.replace('/', "::"));
        let text = code(&std::fs::read_to_string(&f).unwrap_or_default());
        let g: &mut Graph = out.entry(folder).or_default();
        let entry = g.entry(from.clone()).or_default();
        for to in heads(&text, "super::").into_iter().chain(heads(&text, &crate_path)) {
            if to != from && siblings.contains(&to) {
                entry.insert(to);
            }
        }
    }
    out
}

/// Every circle in `g`, each as the path that closes it (`a → b → a`).
pub fn circles(g: &Graph) -> Vec<Vec<String>> {
    fn visit(
        g: &Graph,
        node: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(pos) = stack.iter().position(|n| n == node) {
            let mut c = stack[pos..].to_vec();
            c.push(node.to_owned());
            found.push(c);
            return;
        }
        if done.contains(node) {
            return;
        }
        stack.push(node.to_owned());
        for next in g.get(node).into_iter().flatten() {
            visit(g, next, stack, done, found);
        }
        stack.pop();
        done.insert(node.to_owned());
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in g.keys() {
        visit(g, node, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

/// The layers drawn for `src` (e.g. `host/src`) in `doc`: the lines of its
/// fenced block opened by ```` ```layers host/src ````, top first, each a
/// list of module names separated by spaces. `None` when the block is missing.
pub fn documented_layers(doc: &str, src: &str) -> Option<Vec<Vec<String>>> {
    let open = format!("```layers {src}");
    let mut lines = doc.lines().skip_while(|l| l.trim() != open);
    lines.next()?;
    let layers = lines
        .take_while(|l| l.trim() != "```")
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| !l.is_empty())
        .collect();
    Some(layers)
}

/// What in `g` disagrees with `layers` (top first): an import that runs up
/// to a higher layer, a module the drawing does not name, a name the drawing
/// has and the code does not, a name drawn twice.
pub fn layer_violations(g: &Graph, layers: &[Vec<String>]) -> Vec<String> {
    let mut out = Vec::new();
    // Depth from the bottom: the last line is 0.
    let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, layer) in layers.iter().enumerate() {
        for m in layer {
            if depth.insert(m, layers.len() - 1 - i).is_some() {
                out.push(format!("{m} is drawn twice"));
            }
        }
    }
    for (from, tos) in g {
        let Some(&df) = depth.get(from.as_str()) else {
            out.push(format!("{from} is not in the drawing"));
            continue;
        };
        for to in tos {
            match depth.get(to.as_str()) {
                Some(&dt) if dt > df => out.push(format!("{from} imports {to}, a layer above it")),
                Some(_) => {}
                None => out.push(format!("{to} (imported by {from}) is not in the drawing")),
            }
        }
    }
    for m in depth.keys() {
        if !g.contains_key(*m) {
            out.push(format!("{m} is drawn but there is no such module"));
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crate_src(name: &str) -> PathBuf {
        crate::repo_root().join(name).join("src")
    }

    fn render(c: &[String]) -> String {
        c.join(" → ")
    }

    #[test]
    fn no_import_circle_between_modules() {
        for krate in ["host", "sdk"] {
            let src = crate_src(krate);
            let g = top_level_graph(&src);
            assert!(g.len() > 3, "{krate}: found the modules of {}", src.display());
            let found: Vec<String> = circles(&g).iter().map(|c| render(c)).collect();
            assert!(found.is_empty(), "{krate}/src: import circles:\n{}", found.join("\n"));
            for (folder, g) in sibling_graphs(&src) {
                let found: Vec<String> = circles(&g).iter().map(|c| render(c)).collect();
                assert!(found.is_empty(), "{krate}/src/{folder}: import circles:\n{}", found.join("\n"));
            }
        }
    }

    #[test]
    fn modules_import_only_lower_layers_as_the_architecture_draws_them() {
        let path = crate::repo_root().join("docs/ARCHITECTURE.md");
        let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        for krate in ["host", "sdk"] {
            let name = format!("{krate}/src");
            let layers = documented_layers(&doc, &name)
                .unwrap_or_else(|| panic!("{}: no ```layers {name} block", path.display()));
            let found = layer_violations(&top_level_graph(&crate_src(krate)), &layers);
            assert!(found.is_empty(), "{name} against the layers of {}:\n{}", path.display(), found.join("\n"));
        }
    }

    #[test]
    fn the_layer_check_sees_upward_imports_and_missing_modules() {
        let doc = "text\n```layers x/src\napp\nrules  post\n```\n```layers y/src\na\n```\n";
        let layers = documented_layers(doc, "x/src").expect("the x/src block");
        assert_eq!(layers, vec![vec!["app"], vec!["rules", "post"]]);
        assert!(documented_layers(doc, "z/src").is_none());
        let mut g = Graph::new();
        g.entry("app".into()).or_default().insert("rules".into());
        g.entry("rules".into()).or_default().insert("post".into());
        g.entry("post".into()).or_default();
        assert!(layer_violations(&g, &layers).is_empty(), "down and sideways are fine");
        g.entry("post".into()).or_default().insert("app".into());
        g.entry("new".into()).or_default();
        assert_eq!(layer_violations(&g, &layers), ["new is not in the drawing", "post imports app, a layer above it"]);
        g.remove("new");
        g.remove("app");
        assert_eq!(
            layer_violations(&g, &layers),
            ["app is drawn but there is no such module", "post imports app, a layer above it"]
        );
    }

    #[test]
    fn the_checker_sees_paths_groups_and_circles() {
        let text = "use crate::{config::X, rules};\nfn f() { crate::post::decode(); }\n// crate::hidden\n#[cfg(test)]\nuse crate::tests_only;";
        let h = heads(&code(text), "crate::");
        assert_eq!(h.into_iter().collect::<Vec<_>>(), ["config", "post", "rules"]);
        let mut g = Graph::new();
        g.entry("a".into()).or_default().insert("b".into());
        g.entry("b".into()).or_default().insert("c".into());
        assert!(circles(&g).is_empty());
        g.entry("c".into()).or_default().insert("a".into());
        assert_eq!(circles(&g), vec![vec!["a", "b", "c", "a"]]);
    }
}
