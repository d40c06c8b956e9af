//! Code layout rules, checked by reading `src/` and `tests/` as text: no import cycles between
//! top-level modules or between the files of one folder module, `config` and the `grpc`/`rest`
//! pair keep to their imports, files stay short and documented, tests never set env vars.
//! Run with `cargo test --test layout`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

/// Module name -> names of the modules it references.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// One `*.rs` file under `src/`. `module` is its path from the crate root (`a/b.rs` and
/// `a/b/mod.rs` are both `a::b`; `main.rs` and `lib.rs` are the root, an empty path).
struct SourceFile {
    path: String,
    module: Vec<String>,
    text: String,
    refs: Vec<Vec<String>>,
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let rule = "no import cycle among top-level modules";
    check(rule, cycles(&graph_under(&source_files(), &[]), ""));
}

#[test]
fn no_import_cycle_inside_a_folder_module() {
    let files = source_files();
    // `src/a/b.rs` (module `a::b`) lies in folder `a`; a lone `mod.rs` leaves no cycle to find.
    let modules = files
        .iter()
        .flat_map(|f| (1..f.module.len()).map(|k| &f.module[..k]));
    let folders: BTreeSet<&[String]> = modules.collect();
    let found = folders.into_iter().flat_map(|folder| {
        let prefix = format!("{}::", folder.join("::"));
        cycles(&graph_under(&files, folder), &prefix)
    });
    check("no import cycle among the files of a folder module", found);
}

#[test]
fn config_imports_no_runtime_module() {
    let rule = "config may reference only crate::config and crate::error";
    let runtime = |to: &str| to != "config" && to != "error";
    check(rule, references_from(&source_files(), "config", runtime));
}

#[test]
fn grpc_and_rest_do_not_import_each_other() {
    let files = source_files();
    let mut found = references_from(&files, "grpc", |to| to == "rest");
    found.extend(references_from(&files, "rest", |to| to == "grpc"));
    check("grpc and rest must not import each other", found);
}

#[test]
fn no_source_file_over_600_lines() {
    let rule = format!("no source file over {MAX_LINES} lines");
    let found = source_files().into_iter().filter_map(|f| {
        let lines = f.text.lines().count();
        (lines > MAX_LINES).then(|| format!("{}: {lines} lines", f.path))
    });
    check(&rule, found);
}

#[test]
fn every_module_file_starts_with_a_doc_comment() {
    let found = source_files().into_iter().filter_map(|f| {
        let first = f.text.lines().map(str::trim).find(|line| !line.is_empty());
        (!first.is_some_and(|line| line.starts_with("//!"))).then_some(f.path)
    });
    check("every module file starts with a `//!` doc comment", found);
}

#[test]
fn tests_inject_secrets_instead_of_setting_env_vars() {
    let tests = manifest_dir().join("tests");
    let mut found = Vec::new();
    for path in rust_files(&tests) {
        if path == tests.join("layout.rs") {
            continue;
        }
        let text = fs::read_to_string(&path).expect("read a test file");
        for (n, (line, code)) in text.lines().zip(strip(&text).lines()).enumerate() {
            if code.contains("set_var(") || code.contains("remove_var(") {
                found.push(format!("{}:{}: {}", display(&path), n + 1, line.trim()));
            }
        }
    }
    let rule = "tests inject secrets instead of calling env::set_var/remove_var";
    check(rule, found);
}

#[test]
fn extractor_expands_nested_groups() {
    let code = "use crate::{a::{X, self as Y}, b};\nlet z = crate::c::f(crate::b);";
    let refs = references(&[], code);
    assert_eq!(refs, [vec!["a", "X"], vec!["a"], vec!["b"], vec!["c", "f"]]);
}

#[test]
fn extractor_ignores_comments_and_strings() {
    let code = "// crate::z\n/* crate::y */\nlet s = \"crate::w\";";
    assert!(references(&[], code).is_empty());
    assert!(references(&[], "let s = r#\"crate::v\"#; let c = '\"';").is_empty());
}

#[test]
fn extractor_resolves_super_from_the_file_and_inline_modules() {
    let module = ["a".to_string(), "b".to_string(), "c".to_string()];
    let code = "use super::super::x;\nmod tests {\n    use super::Item;\n}\nuse super::*;";
    let expected = [
        vec!["a", "x"],
        vec!["a", "b", "c", "Item"],
        vec!["a", "b", "*"],
    ];
    assert_eq!(references(&module, code), expected);
}

/// Panics with the rule and every offender, one a line, when there is any.
fn check(rule: &str, offenders: impl IntoIterator<Item = String>) {
    let offenders: Vec<String> = offenders.into_iter().collect();
    let list = offenders.join("\n  ");
    assert!(
        offenders.is_empty(),
        "layout rule broken: {rule}:\n  {list}"
    );
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `path` relative to the crate, for messages.
fn display(path: &Path) -> String {
    path.strip_prefix(manifest_dir())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every `*.rs` file under `dir`, recursively, sorted so messages are stable.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).expect("read a source directory") {
        let path = entry.expect("read a directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn source_files() -> Vec<SourceFile> {
    let src = manifest_dir().join("src");
    let files = rust_files(&src).into_iter().map(|path| {
        let text = fs::read_to_string(&path).expect("read a source file");
        let module = module_path(path.strip_prefix(&src).expect("a file under src"));
        let refs = references(&module, &text);
        let path = display(&path);
        SourceFile {
            path,
            module,
            text,
            refs,
        }
    });
    files.collect()
}

fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into()).collect();
    let file = parts.pop().expect("a file name");
    match file.strip_suffix(".rs") {
        Some("mod") => {}
        Some("main" | "lib") if parts.is_empty() => {}
        Some(stem) => parts.push(stem.to_string()),
        None => {}
    }
    parts
}

/// `file: crate::path` for each reference of top-level module `from` whose first segment is
/// `bad`.
fn references_from(files: &[SourceFile], from: &str, bad: impl Fn(&str) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    for file in files
        .iter()
        .filter(|f| f.module.first().is_some_and(|m| m == from))
    {
        for path in file.refs.iter().filter(|r| bad(&r[0])) {
            found.push(format!("{}: crate::{}", file.path, path.join("::")));
        }
    }
    found
}

/// The dependencies between the children of module `parent`. A file belongs to the child its
/// module path passes through, so a nested folder counts as one child; `parent`'s own file
/// (`mod.rs`, or `lib.rs` for the root) is no child and is left out.
fn graph_under(files: &[SourceFile], parent: &[String]) -> Graph {
    let child = |module: &[String]| module.strip_prefix(parent)?.first().cloned();
    let children: BTreeSet<String> = files.iter().filter_map(|f| child(&f.module)).collect();
    let mut graph = Graph::new();
    for (file, from) in files.iter().filter_map(|f| Some((f, child(&f.module)?))) {
        for to in file.refs.iter().filter_map(|r| child(r)) {
            if to != from && children.contains(&to) {
                graph.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    graph
}

/// Every elementary cycle as `a -> b -> a` (names prefixed by `prefix`), each once: from its
/// smallest module.
fn cycles(graph: &Graph, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    for start in graph.keys() {
        extend_path(graph, &mut vec![start.clone()], &mut found);
    }
    let named = |cycle: Vec<String>| -> String {
        let names: Vec<String> = cycle.iter().map(|m| format!("{prefix}{m}")).collect();
        names.join(" -> ")
    };
    found.into_iter().map(named).collect()
}

fn extend_path(graph: &Graph, path: &mut Vec<String>, found: &mut Vec<Vec<String>>) {
    let start = path[0].clone();
    let last = path.last().expect("a non-empty path").clone();
    for next in graph.get(&last).into_iter().flatten() {
        if *next == start {
            found.push([path.as_slice(), std::slice::from_ref(&start)].concat());
        } else if *next > start && !path.contains(next) {
            path.push(next.clone());
            extend_path(graph, path, found);
            path.pop();
        }
    }
}

/// The module paths (from the crate root) that `text`, the file of `module`, references through
/// `crate::` or `super::`, with `use` groups expanded and globs kept as a `*` segment.
fn references(module: &[String], text: &str) -> Vec<Vec<String>> {
    let code = strip(text);
    let toks = tokens(&code);
    let mods = inline_mods(&toks);
    let mut refs = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let starts_path = matches!(toks[i], "crate" | "super") && toks.get(i + 1) == Some(&"::");
        if !starts_path {
            i += 1;
            continue;
        }
        let mut base = if toks[i] == "crate" {
            i += 2;
            Vec::new()
        } else {
            enclosing_module(module, &mods, i)
        };
        while toks.get(i) == Some(&"super") && toks.get(i + 1) == Some(&"::") {
            base.pop();
            i += 2;
        }
        parse_tree(&toks, &mut i, base, &mut refs);
    }
    let mut seen = BTreeSet::new();
    refs.retain(|r| seen.insert(r.clone()));
    refs
}

/// Reads the path, `{...}` group or glob at `toks[*i]` into whole paths under `prefix`.
fn parse_tree(toks: &[&str], i: &mut usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    while let Some(&tok) = toks.get(*i) {
        *i += 1;
        match tok {
            "{" => {
                while toks.get(*i).is_some_and(|&t| t != "}") {
                    match toks[*i] {
                        "," => *i += 1,
                        _ => parse_tree(toks, i, prefix.clone(), out),
                    }
                }
                *i += 1;
                return;
            }
            "*" => prefix.push("*".to_string()),
            "self" => {}
            _ if is_ident(tok) => prefix.push(tok.to_string()),
            _ => break,
        }
        if toks.get(*i) != Some(&"::") {
            break;
        }
        *i += 1;
    }
    if toks.get(*i) == Some(&"as") {
        *i += 2;
    }
    if !prefix.is_empty() {
        out.push(prefix);
    }
}

/// `(name, open brace, close brace)` token indices of every inline `mod name { ... }`, parents
/// first, since `super::` inside one refers to the file's own module, not its parent.
fn inline_mods(toks: &[&str]) -> Vec<(String, usize, usize)> {
    let mut mods = Vec::new();
    for (k, window) in toks.windows(3).enumerate() {
        if let ["mod", name, "{"] = window {
            let mut depth = 0usize;
            let close = (k + 2..toks.len()).find(|&j| {
                depth = match toks[j] {
                    "{" => depth + 1,
                    "}" => depth - 1,
                    _ => depth,
                };
                depth == 0
            });
            mods.push((name.to_string(), k + 2, close.unwrap_or(toks.len())));
        }
    }
    mods
}

fn enclosing_module(module: &[String], mods: &[(String, usize, usize)], at: usize) -> Vec<String> {
    let inner = mods
        .iter()
        .filter(|(_, open, close)| (*open..*close).contains(&at));
    let inner = inner.map(|(name, ..)| name.clone());
    module.iter().cloned().chain(inner).collect()
}

fn is_ident(tok: &str) -> bool {
    tok.chars().all(is_ident_char)
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Splits stripped code into identifiers, `::` and single other characters.
fn tokens(code: &str) -> Vec<&str> {
    let mut toks = Vec::new();
    let mut chars = code.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        let mut end = start + c.len_utf8();
        if is_ident(&code[start..end]) {
            while let Some((at, _)) = chars.next_if(|&(_, n)| is_ident_char(n)) {
                end = at + 1;
            }
        } else if c == ':' && chars.peek().is_some_and(|&(_, n)| n == ':') {
            chars.next();
            end += 1;
        } else if c.is_whitespace() {
            continue;
        }
        toks.push(&code[start..end]);
    }
    toks
}

/// Blanks out comments and string and char literals, keeping line breaks so line numbers hold.
fn strip(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let end = skipped_until(&chars, i);
        if end == i {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let blank = |c: &char| if *c == '\n' { '\n' } else { ' ' };
        out.extend(chars[i..end].iter().map(blank));
        i = end;
    }
    out
}

/// The end of the comment or literal starting at `chars[i]`, or `i` when none starts there.
fn skipped_until(chars: &[char], i: usize) -> usize {
    let at = |k: usize| chars.get(k).copied().unwrap_or('\0');
    let ident_before = |k: usize| k > 0 && is_ident_char(at(k - 1));
    let find = |from: usize, pattern: &[char]| {
        (from..chars.len())
            .find(|&k| chars[k..].starts_with(pattern))
            .map_or(chars.len(), |k| k + pattern.len())
    };
    match (at(i), at(i + 1)) {
        ('/', '/') => find(i + 2, &['\n']),
        ('/', '*') => find(i + 2, &['*', '/']),
        ('"', _) => {
            let mut k = i + 1;
            while k < chars.len() && chars[k] != '"' {
                k += if chars[k] == '\\' { 2 } else { 1 };
            }
            (k + 1).min(chars.len())
        }
        ('r', '"' | '#') if !ident_before(i) || (at(i - 1) == 'b' && !ident_before(i - 1)) => {
            let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
            if at(i + 1 + hashes) != '"' {
                return i;
            }
            let close: Vec<char> = "\""
                .chars()
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            find(i + 2 + hashes, &close)
        }
        ('\'', '\\') => find(i + 3, &['\'']),
        ('\'', _) if at(i + 2) == '\'' => i + 3,
        _ => i,
    }
}
