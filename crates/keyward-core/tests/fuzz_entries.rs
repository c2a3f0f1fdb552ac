//! The fuzz targets' entry points in the normal suite: every corpus file under `fuzz/corpus`,
//! then thousands of arbitrary and corpus-mutated inputs per target under proptest. A panic is
//! a failure (and, once found, a corpus file and a regression test).

use std::path::PathBuf;

use keyward_core::fuzz_entry;
use proptest::prelude::*;

type Entry = fn(&[u8]);

const TARGETS: [(&str, Entry); 4] = [
    ("ipc_request", fuzz_entry::ipc_frame),
    ("luks2_metadata", fuzz_entry::luks2_metadata),
    ("recovery_key", fuzz_entry::recovery_key),
    ("audit_chain", fuzz_entry::audit_chain),
];

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.expect("entry").path()).expect("read seed"))
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds.sort();
    seeds
}

#[test]
fn every_corpus_file_runs() {
    for (name, entry) in TARGETS {
        for seed in corpus(name) {
            entry(&seed);
        }
    }
}

/// A seed with some bytes overwritten, inserted or cut: close to valid, where parsers break.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (
        0..seeds.len(),
        proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8),
    )
        .prop_map(move |(i, edits)| {
            let mut v = seeds[i].clone();
            for (at, byte, kind) in edits {
                let pos = if v.is_empty() { 0 } else { at % (v.len() + 1) };
                match kind {
                    0 if pos < v.len() => v[pos] = byte,
                    1 => v.insert(pos, byte),
                    _ => v.truncate(pos),
                }
            }
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        for (_, entry) in TARGETS {
            entry(&data);
        }
    }

    #[test]
    fn mutated_ipc_frames_never_panic(data in mutated(corpus("ipc_request"))) {
        fuzz_entry::ipc_frame(&data);
    }

    #[test]
    fn mutated_luks2_metadata_never_panics(data in mutated(corpus("luks2_metadata"))) {
        fuzz_entry::luks2_metadata(&data);
    }

    #[test]
    fn mutated_audit_chains_never_panic(data in mutated(corpus("audit_chain"))) {
        fuzz_entry::audit_chain(&data);
    }
}
