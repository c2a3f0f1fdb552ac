//! Every named crash point in the root helper and the LUKS2 layer is driven by some crash test:
//! a `failpoint("name")` no test names is a step whose interruption nobody has ever checked (one
//! such, `command.recorded`, went untested until the threat-model review found it). The
//! FileVault points are enumerated and run by `filevault_crash.rs` itself; the points named
//! with `format!` (a service rotation's or repair's `{step}.…`) by `rotation.rs`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read_all(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read_all(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
            out.push('\n');
        }
    }
}

/// The literal names in `failpoint("…")` calls.
fn named_points(source: &str) -> BTreeSet<String> {
    source
        .match_indices("failpoint(\"")
        .filter_map(|(at, m)| {
            let rest = &source[at + m.len()..];
            rest.find('"').map(|end| rest[..end].to_owned())
        })
        .collect()
}

#[test]
fn every_crash_point_is_named_by_a_crash_test() {
    let root = root();
    let mut product = String::new();
    for dir in [
        "crates/keyward-helper/src",
        "crates/keyward-luks/src",
        "crates/keyward-core/src",
    ] {
        read_all(&root.join(dir), &mut product);
    }
    let points: BTreeSet<String> = named_points(&product)
        .into_iter()
        .filter(|p| !p.starts_with("filevault"))
        .collect();
    assert!(points.len() > 20, "the scan found only {points:?}");
    let mut tests = String::new();
    for dir in ["crates/keyward-cli/tests", "crates/keyward-luks/tests"] {
        read_all(&root.join(dir), &mut tests);
    }
    let untested: Vec<&String> = points
        .iter()
        .filter(|p| !tests.contains(&format!("\"{p}\"")))
        .collect();
    assert!(
        untested.is_empty(),
        "crash points no crash test names: {untested:?}"
    );
}

#[test]
fn the_scan_reads_names_whole() {
    let got = named_points("failpoint(\"a.b\"); x; failpoint(&format!(\"{s}\")); failpoint(\"c\")");
    assert_eq!(got, BTreeSet::from(["a.b".to_owned(), "c".to_owned()]));
}
