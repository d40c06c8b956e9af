//! Config fixtures: every example in `config/` loads, and every file in
//! `tests/fixtures/invalid/` fails with the message its first line names.

use pinot_proxy::Config;
use std::path::{Path, PathBuf};

/// Fewer invalid fixtures than this means the folder was emptied or moved.
const MIN_INVALID_FIXTURES: usize = 8;

const EXPECT_PREFIX: &str = "# expect:";

fn toml_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn example_configs_load() {
    let files = toml_files("config");
    assert!(!files.is_empty(), "no *.toml in config/");
    for path in &files {
        if let Err(err) = Config::load(path) {
            panic!("{}: {err:#}", path.display());
        }
    }
}

#[test]
fn invalid_configs_fail_with_the_expected_message() {
    let files = toml_files("tests/fixtures/invalid");
    assert!(
        files.len() >= MIN_INVALID_FIXTURES,
        "only {} fixtures in tests/fixtures/invalid/, expected at least {MIN_INVALID_FIXTURES}",
        files.len()
    );
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
        let expected = text
            .lines()
            .next()
            .and_then(|line| line.strip_prefix(EXPECT_PREFIX))
            .map(str::trim)
            .filter(|expected| !expected.is_empty())
            .unwrap_or_else(|| {
                panic!(
                    "{}: the first line must be `{EXPECT_PREFIX} <substring>`",
                    path.display()
                )
            });
        match Config::load(path) {
            Ok(_) => failures.push(format!("{}: loaded, expected an error", path.display())),
            Err(err) => {
                let message = format!("{err:#}");
                if !message.contains(expected) {
                    failures.push(format!(
                        "{}: error does not contain {expected:?}:\n    {message}",
                        path.display()
                    ));
                }
                let name = path.file_name().unwrap().to_string_lossy();
                if !message.contains(name.as_ref()) {
                    failures.push(format!(
                        "{}: error does not name the file:\n    {message}",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
