//! The conformance suite and model test for `MemoryArchive`, directly and behind `Arc<dyn
//! Archive>` and `Box<dyn Archive>`; and the interleaving explorer, every pair exhaustively.

use std::path::Path;
use std::sync::Arc;

use session_archive::{Archive, MemoryArchive};

#[path = "support/one_key_at_a_time.rs"]
mod one_key_at_a_time;

use self::one_key_at_a_time::OneKeyAtATime;

session_archive::archive_conformance!(memory, |_dir: &Path| MemoryArchive::new());

// The trait's default bodies, over memory's required calls.
session_archive::archive_conformance!(default_bodies, |_dir: &Path| OneKeyAtATime(
    MemoryArchive::new()
));

session_archive::archive_conformance!(arc_dyn, |_dir: &Path| Arc::new(MemoryArchive::new())
    as Arc<dyn Archive>);

session_archive::session_explorer!(
    memory_explorer,
    |_dir: &Path| MemoryArchive::new(),
    depth = full,
    seeds = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/explore_seeds.txt")
);

session_archive::archive_conformance!(box_dyn, |_dir: &Path| Box::new(MemoryArchive::new())
    as Box<dyn Archive>);

#[test]
fn debug_shows_counts_not_contents() {
    let archive = MemoryArchive::new();
    archive.set("d", "k", b"secret").unwrap();
    archive.set("d", "k2", b"secret").unwrap();
    let debug = format!("{archive:?}");
    assert_eq!(debug, "MemoryArchive { domains: 1, keys: 2 }");
}

/// Memory answers at once, so it offers no async path of its own, directly or behind a pointer.
#[test]
fn memory_has_no_async_calls() {
    let archive = MemoryArchive::new();
    assert!(archive.get_many_async("d", &["k"]).is_none());
    assert!(
        archive
            .compare_and_swap_many_async("d", &[("k", None, Some(b"v"))])
            .is_none()
    );
    let shared: Arc<dyn Archive> = Arc::new(MemoryArchive::new());
    assert!(shared.get_many_async("d", &["k"]).is_none());
    assert!(
        shared
            .compare_and_swap_many_async("d", &[("k", None, Some(b"v"))])
            .is_none()
    );
}
