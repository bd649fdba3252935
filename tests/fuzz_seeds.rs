//! Replays every committed seed of the fuzz corpus (`fuzz/seeds/<target>/*`) through the same
//! target body the cargo-fuzz target runs, so the findings stay fixed without a nightly toolchain;
//! and checks that the seeds still decode to what they were found as.
#![cfg(all(feature = "fuzzing", unix))]

use std::collections::BTreeMap;
use std::path::Path;

use session_archive::MAX_NAME_LEN;
use session_archive::conformance::{Op, fuzz};

/// The seeds of one target, by file name, in name order.
fn seeds(target: &str) -> BTreeMap<String, Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let seeds: BTreeMap<String, Vec<u8>> = std::fs::read_dir(&dir)
        .expect("read the seed directory")
        .map(|entry| {
            let path = entry.expect("read a seed entry").path();
            let name = path.file_name().expect("a file name");
            let data = std::fs::read(&path).expect("read a seed");
            (name.to_string_lossy().into_owned(), data)
        })
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

fn replay(target: &str, body: fn(&[u8])) {
    for (name, data) in seeds(target) {
        println!("fuzz/seeds/{target}/{name}");
        body(&data);
    }
}

#[test]
fn archive_ops_seeds() {
    replay("archive_ops", fuzz::archive_ops);
}

#[test]
fn session_start_seeds() {
    replay("session_start", fuzz::session_start);
}

#[test]
fn redb_file_seeds() {
    replay("redb_file", fuzz::redb_file);
}

/// What kind of [`Op`] this is, as an index into [`OP_KINDS`]. The match is exhaustive, so a new
/// `Op` variant cannot be forgotten here.
fn kind(op: &Op) -> usize {
    match op {
        Op::Get(..) => 0,
        Op::Set(..) => 1,
        Op::Has(..) => 2,
        Op::Remove(..) => 3,
        Op::HasDomain(..) => 4,
        Op::RemoveDomain(..) => 5,
        Op::CompareAndSwap(..) => 6,
        Op::ListDomains => 7,
        Op::ListKeys(..) => 8,
        Op::Reopen => 9,
        Op::ListPaged(..) => 10,
        Op::SetMany(..) => 11,
        Op::RemoveMany(..) => 12,
        Op::RemoveDomains(..) => 13,
        // Skipped by the decoding, so in no seed; the model test runs them.
        Op::Update(..)
        | Op::CompareAndSwapMany(..)
        | Op::CompareAndSwapEach(..)
        | Op::GetEach(..)
        | Op::GetMany(..) => OP_KINDS,
    }
}

/// The kinds of `Op` the fuzzers decode.
const OP_KINDS: usize = 14;

/// The seeds still mean what they were found to mean: together the `archive_ops` seeds run every
/// kind of operation. The variants of `Op` and their order are the seeds' byte encoding, so a new
/// variant changes what every seed decodes to and fails here until the corpus holds it again:
/// run the fuzzer from the seeds (`.ci/run` shows how) and commit the inputs it adds.
#[test]
fn archive_ops_seeds_run_every_kind_of_op() {
    let mut runs = [0_usize; OP_KINDS];
    for data in seeds("archive_ops").values() {
        for op in fuzz::decode_ops(data).unwrap_or_default() {
            *runs.get_mut(kind(&op)).expect("a kind the fuzzers decode") += 1;
        }
    }
    assert!(
        runs.iter().all(|&n| n > 0),
        "some kind of Op is in no seed (runs per kind, in the order of `kind`): {runs:?}"
    );
}

/// One seed, decoded as when it was found: a change to the encoding shows here by name.
#[test]
fn a_seed_decodes_as_it_was_found() {
    let seeds = seeds("archive_ops");
    let ops =
        fuzz::decode_ops(&seeds["03b8e44aaeba4c0a7f2381cf69c7c7c4a3d8a537"]).expect("decodes");
    let kinds: Vec<usize> = ops.iter().map(kind).collect();
    assert_eq!(kinds, [2, 2, 2, 2, 2, 2, 2, 8, 6, 10, 0]);
    assert!(matches!(&ops[0], Op::Has(d, k) if d == "a b" && k == "a b"));
    assert!(matches!(&ops[6], Op::Has(d, k) if d.is_empty() && k.len() == MAX_NAME_LEN + 3));
    assert!(matches!(&ops[9], Op::ListPaged(None, 1)));
    assert!(matches!(&ops[10], Op::Get(d, k) if d == "a" && k == "a"));
}
