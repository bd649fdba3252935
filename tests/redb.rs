//! The conformance suite and model test for `RedbArchive`, durable and non-durable, plus what is
//! particular to redb: reopening, the file lock, damaged files and the builder's options.

use std::error::Error as _;
use std::path::Path;

use session_archive::archive::Update;
use session_archive::{Archive, ArchiveExt, Durability, Error, RedbArchive};

session_archive::archive_conformance!(
    redb,
    |dir: &Path| RedbArchive::open(dir.join("archive.redb")).expect("open"),
    persistent
);

session_archive::session_explorer!(
    redb_explorer,
    |dir: &Path| RedbArchive::open(dir.join("archive.redb")).expect("open"),
    seeds = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/explore_seeds.txt")
);

session_archive::archive_conformance!(
    redb_non_durable,
    |dir: &Path| RedbArchive::builder()
        .durability(Durability::None)
        .open(dir.join("archive.redb"))
        .expect("open"),
    persistent
);

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn is_send_and_sync() {
    assert_send_sync::<RedbArchive>();
}

/// Every domain with its keys and values, read through the public API.
fn contents(archive: &RedbArchive) -> session_archive::conformance::Model {
    session_archive::conformance::snapshot(archive).expect("read the archive")
}

#[test]
fn reopen_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive.redb");
    let archive = RedbArchive::open(&path).unwrap();
    archive.set("d1", "k", b"one").unwrap();
    archive.set("d2", "k", &[0, 255, 7]).unwrap();
    archive.set("d2", "gone", b"x").unwrap();
    assert!(archive.remove("d2", "gone").unwrap());
    archive.set("d3", "k", b"removed").unwrap();
    assert!(archive.remove_domain("d3").unwrap());
    let before = contents(&archive);
    drop(archive);

    let archive = RedbArchive::open(&path).unwrap();
    assert_eq!(contents(&archive), before);
    let expected: session_archive::conformance::Model =
        [("d1", "k", b"one".to_vec()), ("d2", "k", vec![0, 255, 7])]
            .into_iter()
            .map(|(d, k, v)| (d.to_owned(), [(k.to_owned(), v)].into()))
            .collect();
    assert_eq!(before, expected);
}

#[test]
fn open_creates_missing_parent_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/c/archive.redb");
    let archive = RedbArchive::open(&path).unwrap();
    archive.set("d", "k", b"v").unwrap();
    assert!(path.is_file());
    assert_eq!(archive.path(), path);
}

/// Sessions hold login state: the file and the directories made for it are the owner's alone.
#[cfg(unix)]
#[test]
fn file_and_new_directories_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/archive.redb");
    let archive = RedbArchive::open(&path).unwrap();
    archive.set("d", "k", b"v").unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.path().join("a")), 0o700);
    assert_eq!(mode(&dir.path().join("a/b")), 0o700);
}

#[test]
fn second_open_of_the_same_file_is_already_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive.redb");
    let first = RedbArchive::open(&path).unwrap();
    first.set("d", "k", b"v").unwrap();

    let err = RedbArchive::open(&path).unwrap_err();
    assert!(
        matches!(&err, Error::AlreadyOpen { path: p, .. } if p == &path),
        "{err:?}"
    );
    assert!(err.to_string().contains("already open"), "{err}");
    let source = err.source().expect("the redb error is kept");
    assert!(
        matches!(
            source.downcast_ref::<::redb::Error>(),
            Some(::redb::Error::DatabaseAlreadyOpen)
        ),
        "{source:?}"
    );

    // The first handle is unaffected, and the file opens again once it is dropped.
    assert_eq!(first.get("d", "k").unwrap(), Some(b"v".to_vec()));
    drop(first);
    let again = RedbArchive::open(&path).unwrap();
    assert_eq!(again.get("d", "k").unwrap(), Some(b"v".to_vec()));
}

/// Writes `bytes` to a file and asserts that opening it gives `Error::Corrupted` for that path,
/// with redb's error kept as the source, and leaves the file as it was.
fn assert_open_is_corrupted(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write the damaged file");
    let err = RedbArchive::open(&path).expect_err("opening a damaged file must fail");
    assert!(
        matches!(&err, Error::Corrupted { path: p, .. } if p == &path),
        "{name}: {err:?}"
    );
    assert!(
        err.source()
            .and_then(|s| s.downcast_ref::<::redb::Error>())
            .is_some(),
        "{name}: {err:?}"
    );
    assert_eq!(
        std::fs::read(&path).expect("read back"),
        bytes,
        "{name}: a failed open must not modify the file"
    );
}

fn random_bytes(len: usize) -> Vec<u8> {
    std::iter::repeat_with(|| *uuid::Uuid::new_v4().as_bytes())
        .flatten()
        .take(len)
        .collect()
}

#[test]
fn garbage_files_give_corrupted_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    for len in [1, 100, 4096, 64 << 10, 1 << 20] {
        assert_open_is_corrupted(dir.path(), &format!("random-{len}"), &random_bytes(len));
    }
    let text = "Not a database, just some text.\n".repeat(500);
    assert_open_is_corrupted(dir.path(), "text", text.as_bytes());
    assert_open_is_corrupted(dir.path(), "short-text", b"hello\n");
}

#[test]
fn damaged_databases_give_corrupted_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive.redb");
    let archive = RedbArchive::open(&path).unwrap();
    for i in 0..200 {
        archive
            .set(&format!("d{i}"), "session.json", &random_bytes(1000))
            .unwrap();
    }
    drop(archive);
    let good = std::fs::read(&path).unwrap();
    assert!(good.len() > 64 << 10, "{}", good.len());

    for cut in [good.len() / 2, 4096, 512] {
        assert_open_is_corrupted(dir.path(), &format!("truncated-{cut}"), &good[..cut]);
    }
    // Damage the pages past the header; the integrity check on open finds it by checksum.
    let mut scribbled = good.clone();
    let middle = scribbled.len() / 2;
    scribbled[middle..middle + 8192].copy_from_slice(&random_bytes(8192));
    scribbled[8192..16384].copy_from_slice(&random_bytes(8192));
    assert_open_is_corrupted(dir.path(), "scribbled", &scribbled);

    // The undamaged original still opens with every value.
    let archive = RedbArchive::open(&path).unwrap();
    assert_eq!(archive.domains().count(), 200);
}

#[test]
fn an_empty_file_becomes_an_empty_archive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive.redb");
    std::fs::write(&path, b"").unwrap();
    let archive = RedbArchive::open(&path).unwrap();
    assert!(!archive.has_domain("d").unwrap());
    archive.set("d", "k", b"v").unwrap();
    assert_eq!(archive.get("d", "k").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn a_directory_in_the_way_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = RedbArchive::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path == dir.path()),
        "{err:?}"
    );

    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"").unwrap();
    let err = RedbArchive::open(blocker.join("archive.redb")).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path == &blocker),
        "{err:?}"
    );
}

#[test]
fn builder_defaults_and_options() {
    let dir = tempfile::tempdir().unwrap();
    let default = RedbArchive::open(dir.path().join("default.redb")).unwrap();
    assert_eq!(default.durability(), Durability::Immediate);
    assert_eq!(Durability::default(), Durability::Immediate);

    let tuned = RedbArchive::builder()
        .cache_size(64 << 10)
        .durability(Durability::None)
        .check_integrity_on_open(false)
        .quick_repair(true)
        .open(dir.path().join("tuned.redb"))
        .unwrap();
    assert_eq!(tuned.durability(), Durability::None);
    // A cache far smaller than the data still reads everything back.
    for i in 0..100 {
        tuned
            .set(
                "d",
                &format!("k{i:03}"),
                &vec![u8::try_from(i).unwrap(); 4096],
            )
            .unwrap();
    }
    for i in 0..100 {
        assert_eq!(
            tuned.get("d", &format!("k{i:03}")).unwrap(),
            Some(vec![u8::try_from(i).unwrap(); 4096])
        );
    }
}

#[test]
fn quick_repair_without_the_open_check_round_trips_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive.redb");
    let open = || {
        RedbArchive::builder()
            .check_integrity_on_open(false)
            .quick_repair(true)
            .open(&path)
            .unwrap()
    };
    for round in 0..5u8 {
        let archive = open();
        assert_eq!(archive.keys("d").count(), usize::from(round));
        archive
            .set("d", &format!("k{round}"), &[round; 100])
            .unwrap();
        if round > 0 {
            assert_eq!(
                archive.get("d", &format!("k{}", round - 1)).unwrap(),
                Some(vec![round - 1; 100])
            );
        }
    }
}

#[test]
fn non_durable_writes_survive_a_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive.redb");
    let open = || {
        RedbArchive::builder()
            .durability(Durability::None)
            .open(&path)
            .unwrap()
    };
    let archive = open();
    archive.set("d", "k", b"v").unwrap();
    archive
        .set_many(&[("d", "k2", b"2"), ("e", "k", b"3")])
        .unwrap();
    assert!(archive.remove("d", "k").unwrap());
    let before = contents(&archive);
    drop(archive);

    assert_eq!(contents(&open()), before);
    // A durable handle reads what the non-durable one wrote.
    assert_eq!(contents(&RedbArchive::open(&path).unwrap()), before);
}

#[test]
fn set_many_with_an_invalid_name_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let archive = RedbArchive::open(dir.path().join("archive.redb")).unwrap();
    let err = archive
        .set_many(&[("a", "k", b"1"), ("b", "..", b"2"), ("c", "k", b"3")])
        .unwrap_err();
    assert!(matches!(err, Error::InvalidName { .. }), "{err:?}");
    assert_eq!(archive.domains().count(), 0);
}

#[test]
fn remove_domain_removes_a_large_domain_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let archive = RedbArchive::open(dir.path().join("archive.redb")).unwrap();
    let mut batch = Vec::new();
    let keys: Vec<String> = (0..2000).map(|i| format!("k{i}")).collect();
    for key in &keys {
        batch.push(("d", key.as_str(), &b"value"[..]));
        batch.push(("d-", key.as_str(), &b"neighbour"[..]));
    }
    batch.push(("c", "k", b"before"));
    archive.set_many(&batch).unwrap();
    assert!(archive.remove_domain("d").unwrap());
    assert!(!archive.has_domain("d").unwrap());
    assert_eq!(archive.keys("d").count(), 0);
    assert_eq!(archive.keys("d-").count(), 2000);
    assert_eq!(archive.get("c", "k").unwrap(), Some(b"before".to_vec()));
    assert!(!archive.remove_domain("d").unwrap());
}

#[test]
fn list_domains_with_many_keys_per_domain() {
    let dir = tempfile::tempdir().unwrap();
    let archive = RedbArchive::open(dir.path().join("archive.redb")).unwrap();
    let keys: Vec<String> = (0..50).map(|i| format!("k{i:02}")).collect();
    let domains = ["a", "a b", "a-", "ab", "b", "日本"];
    let batch: Vec<(&str, &str, &[u8])> = domains
        .iter()
        .flat_map(|d| keys.iter().map(move |k| (*d, k.as_str(), &b""[..])))
        .collect();
    archive.set_many(&batch).unwrap();
    let first = archive.list_domains(None, 4).unwrap();
    assert_eq!(first.names, ["a", "a b", "a-", "ab"]);
    assert_eq!(first.cursor.as_deref(), Some("ab"));
    let second = archive.list_domains(first.cursor.as_deref(), 4).unwrap();
    assert_eq!(second.names, ["b", "日本"]);
    assert_eq!(second.cursor, None);
    let page = archive.list_keys("a", Some("k47"), 10).unwrap();
    assert_eq!(page.names, ["k48", "k49"]);
    assert_eq!(page.cursor, None);
}

#[test]
fn debug_shows_path_and_durability_not_contents() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive.redb");
    let archive = RedbArchive::open(&path).unwrap();
    archive.set("secret-domain", "k", b"secret-value").unwrap();
    let debug = format!("{archive:?}");
    assert_eq!(
        debug,
        format!("RedbArchive {{ path: {path:?}, durability: Immediate, .. }}")
    );
}

/// Many threads write at once, so their writes meet in group commits: every acknowledged set is
/// there after a reopen, every compare-and-swap increment of the shared counter counted exactly
/// once, and each remove answered for itself. (That writers do share commits is shown through
/// the public statistics by `concurrent_durable_writers_share_commits`, and exactly, batch by
/// batch, by the unit tests in `src/archive/redb/tests.rs`, which hold a commit back until
/// others have queued behind it.)
#[test]
fn concurrent_sets_swaps_and_removes_are_all_exact() {
    const THREADS: u32 = 16;
    const STEPS: u32 = 25;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive.redb");
    let archive = RedbArchive::open(&path).unwrap();
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let archive = &archive;
            scope.spawn(move || {
                let domain = format!("writer-{thread}");
                for step in 0..STEPS {
                    let key = format!("k{step}");
                    archive.set(&domain, &key, key.as_bytes()).unwrap();
                    // Increment the shared counter, retrying while other threads win the race.
                    loop {
                        let current = archive.get("shared", "counter").unwrap();
                        let next = current
                            .as_deref()
                            .map_or(0, |bytes| u32::from_le_bytes(bytes.try_into().unwrap()))
                            + 1;
                        if archive
                            .compare_and_swap(
                                "shared",
                                "counter",
                                current.as_deref(),
                                Some(&next.to_le_bytes()),
                            )
                            .unwrap()
                        {
                            break;
                        }
                    }
                    // A removal of something absent answers false, of something present true.
                    assert!(!archive.remove(&domain, "absent").unwrap());
                    archive.set(&domain, "scratch", b"x").unwrap();
                    assert!(archive.remove(&domain, "scratch").unwrap());
                }
            });
        }
    });
    drop(archive);

    let archive = RedbArchive::open(&path).unwrap();
    let counter = archive.get("shared", "counter").unwrap().unwrap();
    assert_eq!(
        u32::from_le_bytes(counter.as_slice().try_into().unwrap()),
        THREADS * STEPS
    );
    for thread in 0..THREADS {
        let domain = format!("writer-{thread}");
        assert!(!archive.has(&domain, "scratch").unwrap());
        let keys: Vec<String> = archive.keys(&domain).map(Result::unwrap).collect();
        assert_eq!(keys.len(), STEPS as usize);
        for step in 0..STEPS {
            let key = format!("k{step}");
            assert_eq!(archive.get(&domain, &key).unwrap(), Some(key.into_bytes()));
        }
    }
}

/// Concurrent durable writers share commits, as the public [`RedbArchive::commit_stats`] shows:
/// sixteen threads, let go together, each make a run of sets and updates with the default
/// durability (an fsync per commit), and far fewer commits than writes happen. Only counts are
/// asserted, never times. While one commit syncs, the other fifteen writers queue behind it
/// and the next leader takes them all, so even on a slow, shared machine (where threads run
/// few at a time) the batches average well over the two writes per commit asserted here; a
/// write per commit would mean group commit is broken.
#[test]
fn concurrent_durable_writers_share_commits() {
    const THREADS: u64 = 16;
    const WRITES: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let archive = RedbArchive::open(dir.path().join("archive.redb")).unwrap();
    assert_eq!(archive.durability(), Durability::Immediate);
    let before = archive.commit_stats();
    let start = std::sync::Barrier::new(usize::try_from(THREADS).unwrap());
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (archive, start) = (&archive, &start);
            scope.spawn(move || {
                let domain = format!("writer-{thread}");
                start.wait();
                for write in 0..WRITES {
                    if write % 2 == 0 {
                        archive.set(&domain, &format!("k{write}"), b"v").unwrap();
                    } else {
                        let increment = Box::new(|current: Option<&[u8]>| {
                            let n = current.map_or(0, |bytes| bytes[0]);
                            Ok(Update::Set(vec![n + 1]))
                        });
                        archive.update(&domain, "count", increment).unwrap();
                    }
                }
            });
        }
    });
    let span = archive.commit_stats().since(&before);
    // Every write changed something, so every one was committed, and counted once.
    assert_eq!(span.writes, THREADS * WRITES, "{span:?}");
    assert!(
        span.commits * 2 <= span.writes,
        "{} writes took {} commits: {:.2} writes per commit, not shared",
        span.writes,
        span.commits,
        span.writes_per_commit()
    );
    for thread in 0..THREADS {
        let count = archive.get(&format!("writer-{thread}"), "count").unwrap();
        assert_eq!(count, Some(vec![u8::try_from(WRITES / 2).unwrap()]));
    }
}

/// Reads are linearizable even while commits go on: once any read or write of the counter has
/// returned `n`, no read that starts later returns less. Writers raise the counter by
/// compare-and-swap; every read is checked against the highest value any thread had seen before
/// the read began, and against the reading thread's own last one. Commits are not synced, so
/// they are many and short, and readers often race one (see `RedbArchive::read`).
#[test]
fn reads_never_go_back_while_commits_run() {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};

    /// Counts a writer out when it ends, panicking or not, so the readers always stop.
    struct Leave<'a>(&'a AtomicUsize);
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, SeqCst);
        }
    }

    const WRITERS: usize = 2;
    const READERS: usize = 4;
    const INCREMENTS: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let archive = RedbArchive::builder()
        .durability(Durability::None)
        .open(dir.path().join("archive.redb"))
        .unwrap();
    let decode = |bytes: Option<Vec<u8>>| {
        bytes.map_or(0, |bytes| {
            u64::from_le_bytes(bytes.as_slice().try_into().unwrap())
        })
    };
    // The highest value that any read or acknowledged write has returned so far.
    let seen = AtomicU64::new(0);
    let writers_left = AtomicUsize::new(WRITERS);
    let read = |last: &mut u64| {
        let floor = seen.load(SeqCst);
        let value = decode(archive.get("shared", "counter").unwrap());
        assert!(value >= floor, "read {value} after {floor} had been seen");
        assert!(value >= *last, "read {value} after this thread read {last}");
        *last = value;
        seen.fetch_max(value, SeqCst);
        value
    };
    std::thread::scope(|scope| {
        for _ in 0..WRITERS {
            scope.spawn(|| {
                let _leave = Leave(&writers_left);
                let mut last = 0;
                let mut done = 0;
                while done < INCREMENTS {
                    let current = read(&mut last);
                    let expected = (current > 0).then(|| current.to_le_bytes());
                    let next = current + 1;
                    if archive
                        .compare_and_swap(
                            "shared",
                            "counter",
                            expected.as_ref().map(<[u8; 8]>::as_slice),
                            Some(&next.to_le_bytes()),
                        )
                        .unwrap()
                    {
                        seen.fetch_max(next, SeqCst);
                        done += 1;
                    }
                }
            });
        }
        for _ in 0..READERS {
            scope.spawn(|| {
                let mut last = 0;
                // Bounded: the writers stop after a fixed number of increments.
                while writers_left.load(SeqCst) > 0 {
                    read(&mut last);
                }
            });
        }
    });
    assert_eq!(
        decode(archive.get("shared", "counter").unwrap()),
        INCREMENTS * WRITERS as u64
    );
}
