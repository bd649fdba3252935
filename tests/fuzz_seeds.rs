//! Replays every committed seed of the fuzz corpus (`fuzz/seeds/<target>/*`) through the same
//! target body the cargo-fuzz target runs, so the findings stay fixed without a nightly toolchain.
#![cfg(all(feature = "fuzzing", unix))]

use std::path::Path;

use session_archive::conformance::fuzz;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .expect("read the seed directory")
        .map(|entry| entry.expect("read a seed entry").path())
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    for seed in seeds {
        let data = std::fs::read(&seed).expect("read a seed");
        println!("{}", seed.display());
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
