//! `DirArchive`: the conformance suite and model test, the original framework's layout, hostile
//! symlinks and names, file modes, leftovers, errors, a kill -9 crash test and cross-process
//! compare-and-swap.
//!
//! The crash and cross-process tests re-execute this test binary, selecting one `*_child` test by
//! exact name and telling it through an environment variable to act; without the variable those
//! child tests do nothing.
#![cfg(all(feature = "archive-dir", unix))]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use session_archive::{Archive, ArchiveExt, DirArchive, Error};

session_archive::archive_conformance!(
    dir,
    |dir: &Path| DirArchive::open(dir.join("sessions")).expect("open"),
    persistent
);

session_archive::session_explorer!(
    dir_explorer,
    |dir: &Path| DirArchive::open(dir.join("sessions")).expect("open"),
    seeds = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/explore_seeds.txt")
);

const SESSION_ID: &str = "0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2";
const SESSION_JSON: &[u8] = br#"{"Name":"world"}"#;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o777
}

/// The names in a directory, sorted, including dot-names.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("utf-8")
        })
        .collect();
    names.sort();
    names
}

fn domains(archive: &DirArchive) -> Vec<String> {
    archive
        .domains()
        .collect::<Result<_, _>>()
        .expect("domains")
}

fn keys(archive: &DirArchive, domain: &str) -> Vec<String> {
    archive
        .keys(domain)
        .collect::<Result<_, _>>()
        .expect("keys")
}

#[test]
fn reads_a_session_written_in_the_original_layout() {
    let dir = tempfile::tempdir().unwrap();
    let session_dir = dir.path().join(".gen/sessions").join(SESSION_ID);
    std::fs::create_dir_all(&session_dir).unwrap();
    std::fs::write(session_dir.join("session.json"), SESSION_JSON).unwrap();

    let archive = DirArchive::open(dir.path().join(".gen/sessions")).unwrap();
    assert_eq!(
        archive.get(SESSION_ID, "session.json").unwrap().as_deref(),
        Some(SESSION_JSON)
    );
    assert!(archive.has_domain(SESSION_ID).unwrap());
    assert_eq!(domains(&archive), [SESSION_ID]);
    assert_eq!(keys(&archive, SESSION_ID), ["session.json"]);
}

#[test]
fn set_writes_the_original_layout_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join(".gen/sessions");
    let archive = DirArchive::open(&root).unwrap();
    archive
        .set(SESSION_ID, "session.json", SESSION_JSON)
        .unwrap();

    let file = root.join(SESSION_ID).join("session.json");
    assert_eq!(std::fs::read(&file).unwrap(), SESSION_JSON);
    // Nothing else in the domain directory: no temporary file survives a write.
    assert_eq!(entries(&root.join(SESSION_ID)), ["session.json"]);
    assert_eq!(entries(&root), [".lock", SESSION_ID]);
}

#[test]
fn modes_are_0700_for_directories_and_0600_for_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a/b/sessions");
    let archive = DirArchive::open(&root).unwrap();
    archive.set("d", "k", b"v").unwrap();
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&dir.path().join("a")), 0o700);
    assert_eq!(mode(&root.join("d")), 0o700);
    assert_eq!(mode(&root.join("d/k")), 0o600);
    assert_eq!(mode(&root.join(".lock")), 0o600);
    // An overwrite is a new file, with the same mode.
    archive.set("d", "k", b"v2").unwrap();
    assert_eq!(mode(&root.join("d/k")), 0o600);
}

#[test]
fn removing_the_last_key_removes_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let archive = DirArchive::open(dir.path()).unwrap();
    archive.set("d", "k1", b"1").unwrap();
    archive.set("d", "k2", b"2").unwrap();
    assert!(archive.remove("d", "k1").unwrap());
    assert!(dir.path().join("d").is_dir());
    assert!(
        archive
            .compare_and_swap("d", "k2", Some(b"2"), None)
            .unwrap()
    );
    assert!(!dir.path().join("d").exists());

    archive.set("e", "k", b"1").unwrap();
    assert!(archive.remove_domain("e").unwrap());
    assert_eq!(entries(dir.path()), [".lock"]);

    // A swap of several keys that removes the last ones removes the directory too, and one
    // that moves the last key to another keeps it, holding only the new key.
    archive
        .set_many(&[("f", "a", b"1"), ("f", "b", b"2")])
        .unwrap();
    let swaps = [("a", Some(&b"1"[..]), None), ("c", None, Some(&b"3"[..]))];
    assert!(archive.compare_and_swap_many("f", &swaps).unwrap());
    assert_eq!(entries(&dir.path().join("f")), ["b", "c"]);
    let swaps = [("b", Some(&b"2"[..]), None), ("c", Some(&b"3"[..]), None)];
    assert!(archive.compare_and_swap_many("f", &swaps).unwrap());
    assert_eq!(entries(dir.path()), [".lock"]);
}

#[test]
fn a_symlinked_domain_pointing_outside_the_root_is_absent_and_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sessions");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("session.json"), b"secret").unwrap();
    let archive = DirArchive::open(&root).unwrap();
    symlink(&outside, root.join("evil")).unwrap();

    assert_eq!(archive.get("evil", "session.json").unwrap(), None);
    assert!(!archive.has("evil", "session.json").unwrap());
    assert!(!archive.has_domain("evil").unwrap());
    assert!(domains(&archive).is_empty());
    assert!(keys(&archive, "evil").is_empty());

    let err = archive.set("evil", "session.json", b"pwned").unwrap_err();
    match &err {
        Error::Io { path, source } => {
            assert_eq!(path, &root.join("evil"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotADirectory);
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert!(
        !archive
            .compare_and_swap("evil", "session.json", Some(b"secret"), Some(b"pwned"))
            .unwrap()
    );
    assert!(archive.set("evil", "new", b"pwned").is_err());
    assert!(!archive.remove("evil", "session.json").unwrap());
    assert!(!archive.remove_domain("evil").unwrap());

    // The target is untouched and the link is still a link.
    assert_eq!(entries(&outside), ["session.json"]);
    assert_eq!(
        std::fs::read(outside.join("session.json")).unwrap(),
        b"secret"
    );
    assert!(
        std::fs::symlink_metadata(root.join("evil"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn a_symlinked_key_is_absent_and_set_replaces_the_link_not_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sessions");
    let target = dir.path().join("passwd");
    std::fs::write(&target, b"secret").unwrap();
    let archive = DirArchive::open(&root).unwrap();
    archive.set("d", "real", b"1").unwrap();
    symlink(&target, root.join("d/link")).unwrap();

    assert_eq!(archive.get("d", "link").unwrap(), None);
    assert!(!archive.has("d", "link").unwrap());
    assert_eq!(keys(&archive, "d"), ["real"]);
    assert!(!archive.remove("d", "link").unwrap());
    assert!(root.join("d/link").is_symlink());

    archive.set("d", "link", b"mine").unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"secret");
    assert!(!root.join("d/link").is_symlink());
    assert_eq!(
        archive.get("d", "link").unwrap().as_deref(),
        Some(&b"mine"[..])
    );

    // A domain holding only a symlink is not a domain.
    archive.remove("d", "real").unwrap();
    archive.remove("d", "link").unwrap();
    std::fs::create_dir(root.join("only-link")).unwrap();
    symlink(&target, root.join("only-link/k")).unwrap();
    assert!(!archive.has_domain("only-link").unwrap());
    assert!(domains(&archive).is_empty());
}

#[test]
fn root_escaping_names_are_rejected_before_any_path_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sessions");
    let archive = DirArchive::open(&root).unwrap();
    let before = entries(dir.path());
    for (domain, key) in [
        ("..", "k"),
        (".", "k"),
        ("../x", "k"),
        ("d", ".."),
        ("d", "../../escape"),
        ("/tmp", "k"),
        ("d", "a/b"),
        (".lock", "k"),
        ("d", ".tmp-1"),
    ] {
        assert!(
            matches!(
                archive.set(domain, key, b"x"),
                Err(Error::InvalidName { .. })
            ),
            "{domain:?}/{key:?}"
        );
        assert!(matches!(
            archive.get(domain, key),
            Err(Error::InvalidName { .. })
        ));
    }
    assert!(matches!(
        archive.remove_domain(".."),
        Err(Error::InvalidName { .. })
    ));
    assert_eq!(entries(dir.path()), before);
    assert_eq!(entries(&root), [".lock"]);
}

#[test]
fn leftover_temporary_files_are_never_listed_and_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sessions");
    let archive = DirArchive::open(&root).unwrap();

    // A crash after creating a domain and its temporary file, before the rename.
    std::fs::create_dir(root.join("crashed")).unwrap();
    std::fs::write(root.join("crashed/.tmp-deadbeef"), b"partial").unwrap();
    // A crash right after creating a domain directory.
    std::fs::create_dir(root.join("empty")).unwrap();
    assert!(!archive.has_domain("crashed").unwrap());
    assert!(!archive.has_domain("empty").unwrap());
    assert!(domains(&archive).is_empty());
    assert!(keys(&archive, "crashed").is_empty());

    archive.set("live", "k", b"v").unwrap();
    std::fs::write(root.join("live/.tmp-0123"), b"partial").unwrap();
    assert_eq!(domains(&archive), ["live"]);
    assert_eq!(keys(&archive, "live"), ["k"]);

    // The next write to a domain deletes its leftovers.
    archive.set("live", "k2", b"v").unwrap();
    assert_eq!(entries(&root.join("live")), ["k", "k2"]);
    archive.set("crashed", "k", b"v").unwrap();
    assert_eq!(entries(&root.join("crashed")), ["k"]);
    // Removing a key also drops a domain directory that holds only leftovers.
    assert!(!archive.remove("empty", "k").unwrap());
    assert!(!root.join("empty").exists());
}

#[test]
fn a_crashed_remove_domain_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sessions");
    drop(DirArchive::open(&root).unwrap());
    // What remove_domain leaves if killed between its rename and the deletion.
    std::fs::create_dir_all(root.join(".trash-0123/sub")).unwrap();
    std::fs::write(root.join(".trash-0123/k"), b"v").unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"keep").unwrap();
    symlink(&outside, root.join(".trash-0123/link")).unwrap();

    let archive = DirArchive::open(&root).unwrap();
    assert_eq!(entries(&root), [".lock"]);
    assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"keep");
    assert!(domains(&archive).is_empty());
}

#[test]
fn trash_is_deleted_whole_without_following_symlinks_at_any_depth() {
    use std::os::unix::ffi::OsStrExt;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sessions");
    drop(DirArchive::open(&root).unwrap());
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(outside.join("sub")).unwrap();
    std::fs::write(outside.join("sub/keep"), b"keep").unwrap();
    let trash = root.join(".trash-4567");
    let deep = trash.join("a/b/c/d");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("k"), b"v").unwrap();
    std::fs::write(trash.join("a/b/k"), b"v").unwrap();
    // A name that is not UTF-8, and links to a directory and a file outside, below the top.
    let not_utf8 = std::ffi::OsStr::from_bytes(b"\xff\xfe");
    std::fs::create_dir(trash.join("a").join(not_utf8)).unwrap();
    std::fs::write(trash.join("a").join(not_utf8).join("k"), b"v").unwrap();
    symlink(&outside, trash.join("a/b/dir-link")).unwrap();
    symlink(outside.join("sub/keep"), deep.join("file-link")).unwrap();

    drop(DirArchive::open(&root).unwrap());
    assert_eq!(entries(&root), [".lock"]);
    assert_eq!(entries(&outside), ["sub"]);
    assert_eq!(std::fs::read(outside.join("sub/keep")).unwrap(), b"keep");
}

#[test]
fn remove_domain_deletes_its_trash_through_the_open_root_not_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sessions");
    let archive = DirArchive::open(&root).unwrap();
    archive.set("d", "k", b"v").unwrap();
    archive.set("d", "k2", b"v").unwrap();
    // The root moves while open, and another directory takes its path.
    let moved = dir.path().join("moved");
    std::fs::rename(&root, &moved).unwrap();
    std::fs::create_dir(&root).unwrap();

    assert!(archive.remove_domain("d").unwrap());
    assert!(!archive.has_domain("d").unwrap());
    // No trash is left in the archive's own directory, and the path's new owner is untouched.
    assert_eq!(entries(&moved), [".lock"]);
    assert!(entries(&root).is_empty());
}

#[test]
fn entries_that_are_not_regular_files_or_directories_are_absent() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sessions");
    let archive = DirArchive::open(&root).unwrap();
    archive.set("d", "k", b"v").unwrap();
    std::fs::create_dir(root.join("d/subdir")).unwrap();
    std::fs::write(root.join("not-a-dir"), b"").unwrap();

    assert_eq!(archive.get("d", "subdir").unwrap(), None);
    assert!(!archive.has("d", "subdir").unwrap());
    assert_eq!(keys(&archive, "d"), ["k"]);
    assert_eq!(archive.get("not-a-dir", "k").unwrap(), None);
    assert!(!archive.has_domain("not-a-dir").unwrap());
    assert_eq!(domains(&archive), ["d"]);

    // Writing over a directory fails cleanly, with the path, and leaves no temporary file.
    match archive.set("d", "subdir", b"x") {
        Err(Error::Io { path, .. }) => assert_eq!(path, root.join("d/subdir")),
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert_eq!(entries(&root.join("d")), ["k", "subdir"]);
    assert!(matches!(
        archive.set("not-a-dir", "k", b"x"),
        Err(Error::Io { .. })
    ));
    assert_eq!(std::fs::read(root.join("not-a-dir")).unwrap(), b"");
}

#[test]
fn a_root_that_is_a_file_or_a_symlink_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    for root in [file.clone(), file.join("below")] {
        match DirArchive::open(&root) {
            Err(Error::Io { path, .. }) => assert_eq!(path, root),
            other => panic!("expected Error::Io, got {other:?}"),
        }
    }
    match DirArchive::open(&file) {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotADirectory);
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }

    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    symlink(&real, dir.path().join("link")).unwrap();
    match DirArchive::open(dir.path().join("link")) {
        Err(Error::Io { path, source }) => {
            assert_eq!(path, dir.path().join("link"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotADirectory);
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert!(entries(&real).is_empty());
}

/// Whether permission bits bind this thread (they do not for root).
fn permissions_apply(dir: &Path) -> bool {
    let probe = dir.join("probe");
    std::fs::create_dir(&probe).expect("create probe");
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    let applies = std::fs::write(probe.join("f"), b"").is_err();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::remove_dir_all(&probe).expect("remove probe");
    applies
}

/// The user and group a root test thread drops to: `nobody` on most systems. Any nonzero id
/// works; it needs no passwd entry.
#[cfg(target_os = "linux")]
const UNPRIVILEGED: u32 = 65534;

/// Runs `checks(dir)` where permission bits bind: on this thread if they already do, else (as
/// root, which CI runs as) on a thread that drops to [`UNPRIVILEGED`] for good. Credentials are
/// per thread in the Linux kernel and rustix makes the raw system calls (not libc's process-wide
/// wrappers), so the rest of the test binary keeps running as root.
fn where_permissions_apply(dir: &Path, checks: fn(&Path)) {
    if permissions_apply(dir) {
        checks(dir);
        return;
    }
    #[cfg(target_os = "linux")]
    {
        use rustix::thread::{Gid, Uid, set_thread_groups, set_thread_res_gid, set_thread_res_uid};

        std::os::unix::fs::chown(dir, Some(UNPRIVILEGED), Some(UNPRIVILEGED)).expect("chown");
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let (uid, gid) = (Uid::from_raw(UNPRIVILEGED), Gid::from_raw(UNPRIVILEGED));
                // Groups first: once the user id is not 0 they can no longer be changed.
                set_thread_groups(&[]).expect("drop supplementary groups");
                set_thread_res_gid(gid, gid, gid).expect("setresgid");
                set_thread_res_uid(uid, uid, uid).expect("setresuid");
                assert!(
                    std::fs::metadata(dir).is_ok(),
                    "user {UNPRIVILEGED} cannot reach {}: its parents must be searchable by \
                     others (set TMPDIR to a directory such as /tmp)",
                    dir.display()
                );
                assert!(
                    permissions_apply(dir),
                    "permission bits bind after dropping root"
                );
                checks(dir);
            });
        });
    }
    #[cfg(not(target_os = "linux"))]
    panic!("permission bits do not bind this process, and only Linux can drop them per thread");
}

/// A write refused by permissions fails with `PermissionDenied`, keeps the previous value and
/// leaves no temporary file; an unreadable root fails to open the same way.
fn permission_denied_checks(dir: &Path) {
    let root = dir.join("sessions");
    let archive = DirArchive::open(&root).expect("open");
    archive.set("d", "k", b"old").expect("set");
    std::fs::set_permissions(root.join("d"), std::fs::Permissions::from_mode(0o500))
        .expect("chmod");
    let result = archive.set("d", "k", b"new");
    std::fs::set_permissions(root.join("d"), std::fs::Permissions::from_mode(0o700))
        .expect("chmod");
    match result {
        Err(Error::Io { path, source }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied);
            assert_eq!(path, root.join("d/k"));
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert_eq!(
        archive.get("d", "k").expect("get").as_deref(),
        Some(&b"old"[..])
    );
    assert_eq!(entries(&root.join("d")), ["k"]);

    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    let reopened = DirArchive::open(&root);
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    match reopened {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied);
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
}

#[test]
fn permission_denied_is_a_clear_error_and_keeps_the_previous_value() {
    let dir = tempfile::tempdir().unwrap();
    where_permissions_apply(dir.path(), permission_denied_checks);
}

/// Readers racing a writer that overwrites one large value get each version whole.
#[test]
fn readers_never_see_a_partial_value() {
    let dir = tempfile::tempdir().unwrap();
    let archive = DirArchive::open(dir.path()).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    if let Some(value) = archive.get("d", "k").unwrap() {
                        parse_crash_value(&value);
                    }
                }
            });
        }
        for i in 0..40 {
            archive.set("d", "k", &crash_value(0, i)).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Release);
    });
}

// ---- Re-executed children ----------------------------------------------------------------------

const CRASH_ROOT: &str = "DIR_ARCHIVE_TEST_CRASH_ROOT";
const CRASH_THREADS: &str = "DIR_ARCHIVE_TEST_CRASH_THREADS";
const CRASH_ROUND: &str = "DIR_ARCHIVE_TEST_CRASH_ROUND";
const CAS_ROOT: &str = "DIR_ARCHIVE_TEST_CAS_ROOT";
const FULL_ROOT: &str = "DIR_ARCHIVE_TEST_FULL_ROOT";
const CAS_INCREMENTS: u64 = 40;

/// Runs this test binary's test `name` alone, with `env` set.
fn child(name: &str, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("current_exe"));
    command.args([name, "--exact", "--nocapture", "--test-threads=1"]);
    command.envs(env.iter().copied());
    command
}

/// The value the crash writer stores at step `i` of thread `t`: up to 64 KiB, its length and
/// content derived from `(t, i)`, so a torn or mixed value is detected.
fn crash_value(t: u64, i: u64) -> Vec<u8> {
    let len = usize::try_from((i * 7919 + t * 104_729) % 65_536).expect("fits") + 16;
    let mut value = Vec::with_capacity(len);
    value.extend_from_slice(&t.to_le_bytes());
    value.extend_from_slice(&i.to_le_bytes());
    let fill = u8::try_from((t * 31 + i) % 251).expect("fits");
    value.resize(len, fill);
    value
}

/// Parses a value written by `crash_value`, checking that it is whole; returns `(t, i)`.
fn parse_crash_value(value: &[u8]) -> (u64, u64) {
    assert!(value.len() >= 16, "torn value of {} bytes", value.len());
    let t = u64::from_le_bytes(value[0..8].try_into().expect("8 bytes"));
    let i = u64::from_le_bytes(value[8..16].try_into().expect("8 bytes"));
    assert_eq!(
        value,
        crash_value(t, i),
        "torn value for thread {t} step {i}"
    );
    (t, i)
}

/// Child of the crash test: writes until killed, printing `ack <t> <i>` after each `set`
/// returns. Each step writes a fresh key `k<i>` and overwrites `latest`.
#[test]
fn crash_writer_child() {
    let Ok(root) = std::env::var(CRASH_ROOT) else {
        return;
    };
    let threads: u64 = std::env::var(CRASH_THREADS).unwrap().parse().unwrap();
    let round = std::env::var(CRASH_ROUND).unwrap();
    let archive = DirArchive::open(&root).unwrap();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let archive = &archive;
            let round = &round;
            scope.spawn(move || {
                let domain = format!("r{round}-t{t}");
                for i in 0.. {
                    let value = crash_value(t, i);
                    archive.set(&domain, &format!("k{i}"), &value).unwrap();
                    archive.set(&domain, "latest", &value).unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {t} {i}").unwrap();
                    out.flush().unwrap();
                }
            });
        }
    });
}

/// The `<t> <i>` of an acknowledgement line. The test harness may print its own text before it
/// on the same line.
fn ack(line: &str) -> Option<&str> {
    line.find("ack ").map(|at| &line[at + 4..])
}

/// A random duration below `max_ms` milliseconds, from a v4 UUID's random bytes.
fn random_millis(max_ms: u64) -> Duration {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    Duration::from_millis(n % max_ms)
}

/// Runs crash rounds with `threads` writer threads, each killed with SIGKILL at a random moment,
/// and checks after each that every acknowledged write is present and whole.
fn crash_rounds(threads: u64) {
    const ROUNDS: u32 = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("sessions");
    // Per domain: the highest acknowledged step.
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    for round in 0..ROUNDS {
        let threads_env = threads.to_string();
        let round_env = round.to_string();
        let mut writer = child(
            "crash_writer_child",
            &[
                (CRASH_ROOT, root.to_str().expect("utf-8 path")),
                (CRASH_THREADS, &threads_env),
                (CRASH_ROUND, &round_env),
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the writer");
        let stdout = writer.stdout.take().expect("piped stdout");
        let (lines_tx, lines_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Kill at a random moment, but only once writing is under way.
        let mut lines = Vec::new();
        loop {
            let line = lines_rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the writer acknowledges a write");
            let started = ack(&line).is_some();
            lines.push(line);
            if started {
                break;
            }
        }
        std::thread::sleep(random_millis(300));
        writer.kill().expect("SIGKILL the writer");
        let status = writer.wait().expect("wait for the writer");
        assert!(!status.success(), "the writer was killed, not finished");
        reader.join().expect("reader thread");
        lines.extend(lines_rx.try_iter());

        for line in lines.iter().filter_map(|line| ack(line)) {
            let (t, i) = line.split_once(' ').expect("ack t i");
            let domain = format!("r{round}-t{t}");
            let i: u64 = i.parse().expect("step");
            let entry = acked.entry(domain).or_default();
            *entry = (*entry).max(i);
        }

        let archive = DirArchive::open(&root).expect("reopen after the crash");
        for (domain, &last) in &acked {
            let t: u64 = domain
                .rsplit_once("-t")
                .expect("domain")
                .1
                .parse()
                .expect("t");
            for i in 0..=last {
                let value = archive
                    .get(domain, &format!("k{i}"))
                    .expect("get")
                    .unwrap_or_else(|| panic!("acknowledged write {domain}/k{i} is lost"));
                assert_eq!(parse_crash_value(&value), (t, i));
            }
            let latest = archive.get(domain, "latest").expect("get").expect("latest");
            let (latest_t, latest_i) = parse_crash_value(&latest);
            assert_eq!(latest_t, t);
            assert!(latest_i >= last, "{domain}/latest went back to {latest_i}");
        }
        // Whatever was written but not acknowledged is absent or whole; no leftover is listed.
        for domain in archive.domains() {
            let domain = domain.expect("domain");
            for key in archive.keys(&domain) {
                let key = key.expect("key");
                assert!(!key.starts_with('.'));
                let value = archive.get(&domain, &key).expect("get").expect("listed");
                parse_crash_value(&value);
            }
        }
    }
    assert!(!acked.is_empty());
}

#[test]
fn kill_9_loses_no_acknowledged_write_with_one_writer() {
    crash_rounds(1);
}

#[test]
fn kill_9_loses_no_acknowledged_write_with_eight_writer_threads() {
    crash_rounds(8);
}

/// Child of the cross-process test: `CAS_INCREMENTS` compare-and-swap increments of one counter.
#[test]
fn cas_child() {
    let Ok(root) = std::env::var(CAS_ROOT) else {
        return;
    };
    let archive = DirArchive::open(&root).unwrap();
    for _ in 0..CAS_INCREMENTS {
        loop {
            let current = archive.get("counter", "n").unwrap();
            let n = current
                .as_deref()
                .map_or(0, |bytes| u64::from_le_bytes(bytes.try_into().unwrap()));
            let next = (n + 1).to_le_bytes();
            if archive
                .compare_and_swap("counter", "n", current.as_deref(), Some(&next))
                .unwrap()
            {
                break;
            }
        }
    }
}

#[test]
fn compare_and_swap_loses_no_update_across_processes() {
    const PROCESSES: u64 = 3;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sessions");
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            child("cas_child", &[(CAS_ROOT, root.to_str().unwrap())])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut process in children {
        assert!(process.wait().unwrap().success(), "a CAS child failed");
    }
    let archive = DirArchive::open(&root).unwrap();
    assert_eq!(
        archive.get("counter", "n").unwrap(),
        Some((PROCESSES * CAS_INCREMENTS).to_le_bytes().to_vec())
    );
}

const CAS_MANY_ROOT: &str = "DIR_ARCHIVE_TEST_CAS_MANY_ROOT";

/// Child of the cross-process multi-key test: `CAS_INCREMENTS` increments of two counters that
/// move together, each by one `compare_and_swap_many` expecting the values read. A swap that
/// succeeds on unequal values would mean another process's swap was seen half done.
#[test]
fn cas_many_child() {
    let Ok(root) = std::env::var(CAS_MANY_ROOT) else {
        return;
    };
    let archive = DirArchive::open(&root).unwrap();
    let count = |value: &Option<Vec<u8>>| {
        value
            .as_deref()
            .map_or(0, |bytes| u64::from_le_bytes(bytes.try_into().unwrap()))
    };
    for _ in 0..CAS_INCREMENTS {
        loop {
            let x = archive.get("pair", "x").unwrap();
            let y = archive.get("pair", "y").unwrap();
            let (next_x, next_y) = ((count(&x) + 1).to_le_bytes(), (count(&y) + 1).to_le_bytes());
            let swaps = [
                ("x", x.as_deref(), Some(&next_x[..])),
                ("y", y.as_deref(), Some(&next_y[..])),
            ];
            if archive.compare_and_swap_many("pair", &swaps).unwrap() {
                assert_eq!(x, y, "a swap succeeded on a torn pair");
                break;
            }
        }
    }
}

#[test]
fn compare_and_swap_many_is_atomic_across_processes() {
    const PROCESSES: u64 = 3;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sessions");
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            child("cas_many_child", &[(CAS_MANY_ROOT, root.to_str().unwrap())])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut process in children {
        assert!(process.wait().unwrap().success(), "a CAS child failed");
    }
    let archive = DirArchive::open(&root).unwrap();
    let total = Some((PROCESSES * CAS_INCREMENTS).to_le_bytes().to_vec());
    assert_eq!(archive.get("pair", "x").unwrap(), total);
    assert_eq!(archive.get("pair", "y").unwrap(), total);
    assert_eq!(entries(&root.join("pair")), ["x", "y"]);
}

/// Child of the failed-write test: runs with a file size limit of 4 KiB and SIGXFSZ ignored, so a
/// large write fails part-way with `EFBIG`, as it would on a full disk.
#[test]
fn failed_write_child() {
    let Ok(root) = std::env::var(FULL_ROOT) else {
        return;
    };
    let root = PathBuf::from(root);
    let archive = DirArchive::open(&root).unwrap();
    archive.set("d", "k", b"old").unwrap();
    match archive.set("d", "k", &vec![7; 64 * 1024]) {
        Err(Error::Io { path, source }) => {
            assert_eq!(path, root.join("d/k"));
            assert_eq!(source.kind(), std::io::ErrorKind::FileTooLarge, "{source}");
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert_eq!(archive.get("d", "k").unwrap().as_deref(), Some(&b"old"[..]));
    assert_eq!(entries(&root.join("d")), ["k"]);
    // A new domain whose first write fails leaves no domain behind.
    assert!(archive.set("new", "k", &vec![7; 64 * 1024]).is_err());
    assert!(!archive.has_domain("new").unwrap());
    assert_eq!(entries(&root), [".lock", "d"]);

    // A swap of several keys writes every new value before it changes any key, so one value
    // that cannot be written changes none of them, whatever its place.
    let big = vec![7; 64 * 1024];
    let swaps = [
        ("k", Some(&b"old"[..]), Some(&b"new"[..])),
        ("k2", None, Some(&big[..])),
    ];
    match archive.compare_and_swap_many("d", &swaps) {
        Err(Error::Io { path, source }) => {
            assert_eq!(path, root.join("d/k2"));
            assert_eq!(source.kind(), std::io::ErrorKind::FileTooLarge, "{source}");
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert_eq!(archive.get("d", "k").unwrap().as_deref(), Some(&b"old"[..]));
    assert_eq!(entries(&root.join("d")), ["k"]);
    let swaps = [
        ("a", None, Some(&b"small"[..])),
        ("b", None, Some(&big[..])),
    ];
    assert!(archive.compare_and_swap_many("new", &swaps).is_err());
    assert!(!archive.has_domain("new").unwrap());
    assert_eq!(entries(&root), [".lock", "d"]);
}

#[test]
fn a_write_that_fails_part_way_keeps_the_previous_value() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sessions");
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(
            r#"trap '' XFSZ; ulimit -f 8 && exec "$0" failed_write_child --exact --test-threads=1"#,
        )
        .arg(exe)
        .env(FULL_ROOT, &root)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the failed-write child failed");
    // The child really ran: it left its one value.
    let archive = DirArchive::open(&root).unwrap();
    assert_eq!(archive.get("d", "k").unwrap().as_deref(), Some(&b"old"[..]));
}
