//! docs/THREAT-MODEL.md backs its claims with tests by name (`file.rs: test_name`, or
//! `` `file.rs`: `test_name` ``) and by file (`file.rs`). A renamed or deleted test must not
//! leave a claim citing nothing: every cited file exists in the tree, and every cited test is a
//! `fn` in that file (or in the module directory of the same name beside it).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file under `dir`, skipping build output.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | "node_modules" | ".git") {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// The citations in `text`: (file, test names).
fn citations(text: &str) -> Vec<(String, Vec<String>)> {
    // Any Rust identifier: a test is `snake_case`, but a cited `Type` or `CONST` is checked too
    // (a name with a capital letter used to be skipped, so a typo in one cited nothing).
    let ident = |s: &str| {
        s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let spans: Vec<&str> = text.split('`').skip(1).step_by(2).collect();
    let between: Vec<&str> = text.split('`').step_by(2).skip(1).collect();
    let mut out = Vec::new();
    for (i, span) in spans.iter().enumerate() {
        // `file.rs: name` may break its line after the colon.
        let (file, rest) = span.split_once(':').unwrap_or((span, ""));
        let file = file.trim();
        if !file.ends_with(".rs") || file.contains(char::is_whitespace) {
            continue;
        }
        let mut names: Vec<String> = rest
            .split(',')
            .map(str::trim)
            .filter(|n| ident(n))
            .map(str::to_owned)
            .collect();
        // `file.rs`: `name`, `name` (the names in spans of their own after a colon).
        if rest.is_empty() && between.get(i).is_some_and(|b| b.trim() == ":") {
            for (j, next) in spans.iter().enumerate().skip(i + 1) {
                if !ident(next) {
                    break;
                }
                names.push((*next).to_owned());
                if between.get(j).is_none_or(|b| b.trim() != ",") {
                    break;
                }
            }
        }
        out.push((file.to_owned(), names));
    }
    out
}

/// The documents whose citations are checked.
const DOCS: [&str; 5] = [
    "docs/THREAT-MODEL.md",
    "docs/ARCHITECTURE.md",
    "docs/OPERATIONS.md",
    "docs/MACOS.md",
    "README.md",
];

#[test]
fn every_test_the_docs_cite_exists() {
    let root = root();
    let text: String = DOCS
        .iter()
        .map(|d| std::fs::read_to_string(root.join(d)).unwrap())
        .collect();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("fuzz"), &mut files);
    let cited = citations(&text);
    assert!(cited.len() > 20, "the parser found only {cited:?}");
    let mut missing = BTreeSet::new();
    for (file, names) in &cited {
        let suffix = format!("/{file}");
        let matches: Vec<&PathBuf> = files
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(&suffix))
            .collect();
        if matches.is_empty() {
            missing.insert(format!("{file}: no such file"));
            continue;
        }
        // The file, and its module directory (tests/op_crashes.rs + tests/op_crashes/…).
        let mut bodies = String::new();
        for m in &matches {
            bodies.push_str(&std::fs::read_to_string(m).unwrap());
            let dir = m.with_extension("");
            let beside: Vec<&PathBuf> = files.iter().filter(|p| p.starts_with(&dir)).collect();
            for b in beside {
                bodies.push_str(&std::fs::read_to_string(b).unwrap());
            }
        }
        for name in names {
            if !defines(&bodies, name) {
                missing.insert(format!("{file}: no fn {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the docs cite what is not there:\n{}",
        missing.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// Whether `body` defines `name`: a function (a test), or a type, constant or module.
fn defines(body: &str, name: &str) -> bool {
    [
        "fn ", "struct ", "enum ", "trait ", "type ", "mod ", "const ", "static ",
    ]
    .iter()
    .any(|kind| {
        let item = format!("{kind}{name}");
        body.match_indices(&item).any(|(at, _)| {
            body[at + item.len()..]
                .chars()
                .next()
                .is_some_and(|c| !(c.is_ascii_alphanumeric() || c == '_'))
        })
    })
}

#[test]
fn a_cited_name_must_be_defined_whole_and_capitals_count() {
    let body = "fn login_works() {}\nstruct ErrorCode;\nconst MAX_X: u8 = 1;";
    assert!(defines(body, "login_works"));
    assert!(defines(body, "ErrorCode"));
    assert!(defines(body, "MAX_X"));
    assert!(!defines(body, "login_work"), "a prefix is not the name");
    assert!(!defines(body, "Login_works"));
    let got = citations("`pam.rs: Login_Works`");
    assert_eq!(
        got,
        vec![("pam.rs".to_owned(), vec!["Login_Works".to_owned()])]
    );
}

#[test]
fn the_citation_parser_reads_both_forms() {
    let text = "see `web_ui.rs: a_b, c_d` and `pam.rs`: `login_works`, `change_works`; \
                also `ui/totp.rs` and `not code` and `x.rs` and `y.rs:\n  e_f`.";
    let got = citations(text);
    let want: Vec<(String, Vec<String>)> = vec![
        ("web_ui.rs".into(), vec!["a_b".into(), "c_d".into()]),
        (
            "pam.rs".into(),
            vec!["login_works".into(), "change_works".into()],
        ),
        ("ui/totp.rs".into(), vec![]),
        ("x.rs".into(), vec![]),
        ("y.rs".into(), vec!["e_f".into()]),
    ];
    assert_eq!(got, want);
}
