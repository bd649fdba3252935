//! The `session-archive` binary, run as a real process.
#![cfg(all(feature = "cli", unix))]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use session_archive::{Archive, DirArchive, ManualClock, RedbArchive, Sessions};

#[path = "support/redis_cluster.rs"]
mod cluster_servers;
#[path = "support/postgres_server.rs"]
mod postgres_server;
#[path = "support/redis_server.rs"]
mod redis_server;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_session-archive"))
        .args(args)
        .output()
        .expect("run session-archive")
}

/// Runs the command and expects it to succeed, returning its stdout.
fn ok(args: &[&str]) -> Vec<u8> {
    let output = run(args);
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Runs the command and expects it to fail with exit code 1 and one line on stderr, returning
/// that line.
fn fails(args: &[&str]) -> String {
    let output = run(args);
    assert_eq!(output.status.code(), Some(1), "{args:?} did not exit 1");
    assert!(output.stdout.is_empty(), "{args:?} wrote to stdout");
    let stderr = String::from_utf8(output.stderr).expect("utf-8 stderr");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{args:?}: not one line: {stderr}"
    );
    stderr
}

fn spec(scheme: &str, path: &Path) -> String {
    format!("{scheme}:{}", path.display())
}

/// Every regular file under `root` (relative path -> bytes), skipping the archive's own
/// dot-named lock file.
fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, into: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.is_dir() {
                walk(root, &path, into);
            } else if path.file_name().is_some_and(|name| name != ".lock") {
                let relative = path.strip_prefix(root).expect("under root").to_path_buf();
                into.insert(relative, std::fs::read(&path).expect("read file"));
            }
        }
    }
    let mut all = BTreeMap::new();
    walk(root, root, &mut all);
    all
}

/// Writes `count` sessions as the original framework left them: `<root>/<uuid>/session.json`.
fn original_tree(root: &Path, count: usize) {
    for i in 0..count {
        let id = uuid::Uuid::new_v4().to_string();
        std::fs::create_dir_all(root.join(&id)).expect("create session dir");
        let state = format!("{{\n\"Name\": \"user {i}\",\n\"Visits\": {i}\n}}\n");
        std::fs::write(root.join(&id).join("session.json"), state).expect("write session");
    }
}

#[test]
fn migrates_an_original_tree_to_redb_and_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join(".gen/sessions");
    original_tree(&original, 1000);
    let before = files(&original);
    assert_eq!(before.len(), 1000);

    let redb = spec("redb", &dir.path().join("sessions.redb"));
    let output = run(&["migrate", &spec("dir", &original), &redb, "--verify"]);
    assert!(output.status.success());
    // stderr is a pipe here, not a terminal, so there is no progress bar.
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
    let out = output.stdout;
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(
            "copied 1000 domains, 1000 keys, {} value bytes from {} to {redb}, verified\n",
            before.values().map(Vec::len).sum::<usize>(),
            spec("dir", &original)
        )
    );
    assert_eq!(files(&original), before, "the source was modified");

    let back = dir.path().join("back");
    ok(&["migrate", &redb, &spec("dir", &back)]);
    assert_eq!(files(&back), before);

    let listed = String::from_utf8(ok(&["domains", &redb])).unwrap();
    let ids: Vec<String> = before
        .keys()
        .map(|path| path.parent().unwrap().display().to_string())
        .collect();
    assert_eq!(listed.lines().collect::<Vec<_>>(), ids);
}

#[test]
fn a_non_empty_target_is_refused_unless_merging() {
    let dir = tempfile::tempdir().unwrap();
    let (from, to) = (dir.path().join("from.redb"), dir.path().join("to"));
    RedbArchive::open(&from)
        .unwrap()
        .set("d", "k", b"new")
        .unwrap();
    {
        let target = DirArchive::open(&to).unwrap();
        target.set("d", "k", b"old").unwrap();
        target.set("other", "k", b"kept").unwrap();
    }
    let (from, to) = (spec("redb", &from), spec("dir", &to));

    let err = fails(&["migrate", &from, &to]);
    assert!(
        err.contains("not empty") && err.contains("--merge"),
        "{err}"
    );
    assert_eq!(ok(&["get", &to, "d", "k"]), b"old");

    ok(&["migrate", &from, &to, "--merge", "--verify"]);
    assert_eq!(ok(&["get", &to, "d", "k"]), b"new");
    assert_eq!(ok(&["get", &to, "other", "k"]), b"kept");
}

#[test]
fn get_writes_raw_bytes_and_a_missing_key_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let value: Vec<u8> = (0..=255u8).chain([0, 0xff, b'\n']).collect();
    RedbArchive::open(&path)
        .unwrap()
        .set("d", "bin", &value)
        .unwrap();
    let redb = spec("redb", &path);

    assert_eq!(ok(&["get", &redb, "d", "bin"]), value);
    let err = fails(&["get", &redb, "d", "missing"]);
    assert!(err.contains("no key \"missing\" in domain \"d\""), "{err}");
    let err = fails(&["get", &redb, "..", "k"]);
    assert!(err.contains("invalid domain name"), "{err}");
}

#[test]
fn unknown_schemes_and_missing_paths_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let err = fails(&["domains", "ftp://host/x"]);
    assert!(err.contains("unknown archive \"ftp://host/x\""), "{err}");
    let err = fails(&["stats", &missing.display().to_string()]);
    assert!(err.contains("unknown archive"), "{err}");

    for scheme in ["dir", "redb"] {
        let missing = spec(scheme, &missing);
        for args in [
            vec!["domains", &missing],
            vec!["get", &missing, "d", "k"],
            vec!["stats", &missing],
            vec!["sweep", &missing],
            vec!["migrate", &missing, "redb:/never/created.redb"],
        ] {
            let err = fails(&args);
            assert!(err.contains("no such archive"), "{args:?}: {err}");
        }
    }
    assert!(!missing.exists(), "a read created the missing archive");
    assert!(!Path::new("/never").exists());

    std::fs::write(dir.path().join("plain"), b"not a database").unwrap();
    let err = fails(&["domains", &spec("redb", &dir.path().join("plain"))]);
    assert!(err.contains("cannot open redb:"), "{err}");
    let err = fails(&["domains", &spec("dir", &dir.path().join("plain"))]);
    assert!(err.contains("cannot open dir:"), "{err}");
    // A malformed argument is a usage error, reported by the argument parser with exit code 2.
    let output = run(&["sweep", &spec("dir", dir.path()), "--idle", "1week"]);
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("invalid duration \"1week\""), "{err}");
}

#[test]
fn sweep_removes_only_expired_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let past = SystemTime::now() - Duration::from_secs(2 * 24 * 60 * 60);
    let (mut old, mut live) = (Vec::new(), Vec::new());
    {
        let archive = std::sync::Arc::new(RedbArchive::open(&path).unwrap());
        let then = Sessions::builder(archive.clone())
            .idle_timeout(Duration::from_secs(60 * 60))
            .clock(ManualClock::new(past))
            .build();
        let now = Sessions::builder(archive)
            .idle_timeout(Duration::from_secs(60 * 60))
            .build();
        for i in 0..5 {
            let mut session = then.start(None, i).unwrap();
            session.save().unwrap();
            old.push(session.id().as_str().to_owned());
            let mut session = now.start(None, i).unwrap();
            session.save().unwrap();
            live.push(session.id().as_str().to_owned());
        }
    }
    let redb = spec("redb", &path);
    assert_eq!(
        ok(&["sweep", &redb, "--idle", "1h", "--absolute", "7d"]),
        b"removed 5 expired sessions\n"
    );
    let archive = RedbArchive::open(&path).unwrap();
    for id in &old {
        assert!(!archive.has_domain(id).unwrap(), "expired {id} remains");
    }
    for id in &live {
        assert!(archive.has_domain(id).unwrap(), "live {id} was removed");
    }
    drop(archive);
    assert_eq!(
        ok(&["sweep", &redb, "--idle", "1h"]),
        b"removed 0 expired sessions\n"
    );
}

/// Saves `count` sessions under a 1 h idle timeout and no absolute lifetime in 10 s buckets, by a
/// clock `ago` in the past, and returns their ids.
fn saved_sessions(
    archive: &std::sync::Arc<RedbArchive>,
    ago: Duration,
    count: usize,
) -> Vec<String> {
    let sessions = Sessions::builder(archive.clone())
        .idle_timeout(Duration::from_secs(60 * 60))
        .absolute_lifetime(None)
        .sweep_granularity(Duration::from_secs(10))
        .clock(ManualClock::new(SystemTime::now() - ago))
        .build();
    (0..count)
        .map(|i| {
            let mut session = sessions.start(None, i).expect("start a session");
            session.save().expect("save it");
            session.id().as_str().to_owned()
        })
        .collect()
}

#[test]
fn sweep_uses_the_stored_settings_and_an_override_must_be_explicit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let (old, live) = {
        let archive = std::sync::Arc::new(RedbArchive::open(&path).unwrap());
        let old = saved_sessions(&archive, Duration::from_secs(2 * 60 * 60), 5);
        (old, saved_sessions(&archive, Duration::ZERO, 3))
    };
    let redb = spec("redb", &path);
    let present = |ids: &[String]| {
        let archive = RedbArchive::open(&path).unwrap();
        ids.iter()
            .filter(|id| archive.has_domain(id).unwrap())
            .count()
    };

    // No flags: the application's 1 h idle timeout, not the tool's default of 24 h, and its
    // 10 s buckets, not the default 60 s.
    let output = run(&["sweep", &redb]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "removed 5 expired sessions\n"
    );
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
    assert_eq!((present(&old), present(&live)), (0, 3));

    // A shorter idle timeout would remove live sessions: refused, and nothing is removed.
    let err = fails(&["sweep", &redb, "--idle", "1m"]);
    assert!(
        err.contains("--idle 1m differs from the stored idle timeout 1h")
            && err.contains("--override"),
        "{err}"
    );
    assert_eq!(present(&live), 3);

    // With --override it sweeps, and says what it overrode.
    let output = run(&[
        "sweep",
        &redb,
        "--idle",
        "2h",
        "--absolute",
        "7d",
        "--override",
    ]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "removed 0 expired sessions\n"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--idle 2h overrides the stored idle timeout 1h")
            && stderr.contains("--absolute 7d overrides the stored absolute lifetime off"),
        "{stderr}"
    );

    // The recorded width cannot be changed from here, and it says so.
    let output = run(&["sweep", &redb, "--granularity", "60s"]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--granularity 1m is ignored") && stderr.contains("recorded with 10s"),
        "{stderr}"
    );
    assert_eq!(present(&live), 3);
}

#[test]
fn sweep_scan_adopts_the_sessions_of_an_original_tree() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("sessions");
    original_tree(&original, 50);
    let path = dir.path().join("s.redb");
    let redb = spec("redb", &path);
    ok(&["migrate", &spec("dir", &original), &redb]);

    // Nothing has timestamps, so nothing is indexed, and a sweep says why it removes nothing.
    let output = run(&["sweep", &redb]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "removed 0 expired sessions\n"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no sweep settings are stored") && stderr.contains("--scan"),
        "{stderr}"
    );

    // Nothing stored says what the application's timeouts are: the scan must be told both,
    // or it would judge the sessions by this crate's defaults.
    let err = fails(&["sweep", &redb, "--scan", "--idle", "30m"]);
    assert!(err.contains("pass --idle and --absolute"), "{err}");
    let output = run(&[
        "sweep",
        &redb,
        "--scan",
        "--idle",
        "30m",
        "--absolute",
        "7d",
    ]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "adopted 50 sessions stored without timestamps\nremoved 0 expired sessions\n"
    );
    assert_eq!(
        ok(&["sweep", &redb, "--scan"]),
        b"adopted 0 sessions stored without timestamps\nremoved 0 expired sessions\n"
    );

    // They expire 30 minutes after the scan unless used, and the state is as the tree had it.
    let archive = std::sync::Arc::new(RedbArchive::open(&path).unwrap());
    let before = files(&original);
    for (file, state) in &before {
        let id = file.parent().unwrap().display().to_string();
        assert_eq!(
            archive.get(&id, "session.json").unwrap().as_ref(),
            Some(state)
        );
        assert!(archive.has(&id, "meta.json").unwrap());
    }
    let later = Sessions::builder(archive.clone())
        .idle_timeout(Duration::from_secs(30 * 60))
        .clock(ManualClock::new(
            SystemTime::now() + Duration::from_secs(31 * 60),
        ))
        .build();
    assert_eq!(
        later.stored_settings().unwrap().unwrap().idle_timeout,
        Some(Duration::from_secs(30 * 60))
    );
    assert_eq!(later.sweep().unwrap(), 50);
}

#[test]
fn rm_removes_a_key_or_a_domain() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    {
        let archive = DirArchive::open(&root).unwrap();
        archive.set("a", "k1", b"1").unwrap();
        archive.set("a", "k2", b"2").unwrap();
        archive.set("b", "k1", b"3").unwrap();
    }
    let tree = spec("dir", &root);
    ok(&["rm", &tree, "a", "k1"]);
    assert_eq!(ok(&["keys", &tree, "a"]), b"k2\n");
    let err = fails(&["rm", &tree, "a", "k1"]);
    assert!(err.contains("no key"), "{err}");

    ok(&["rm", &tree, "a"]);
    assert_eq!(ok(&["domains", &tree]), b"b\n");
    let err = fails(&["rm", &tree, "a"]);
    assert!(err.contains("no domain \"a\""), "{err}");
    let err = fails(&["keys", &tree, "a"]);
    assert!(err.contains("no domain \"a\""), "{err}");
}

#[test]
fn stats_counts_domains_keys_bytes_and_size_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    {
        let archive = DirArchive::open(&root).unwrap();
        archive.set("a", "k1", b"123").unwrap();
        archive.set("a", "k2", b"").unwrap();
        archive.set("b", "k1", b"4567").unwrap();
    }
    let out = String::from_utf8(ok(&["stats", &spec("dir", &root)])).unwrap();
    assert_eq!(
        out,
        "domains: 2\nkeys: 3\nvalue bytes: 7\nsize on disk: 7\n"
    );

    let file = dir.path().join("s.redb");
    ok(&["migrate", &spec("dir", &root), &spec("redb", &file)]);
    let out = String::from_utf8(ok(&["stats", &spec("redb", &file)])).unwrap();
    let size = std::fs::metadata(&file).unwrap().len();
    assert_eq!(
        out,
        format!("domains: 2\nkeys: 3\nvalue bytes: 7\nsize on disk: {size}\n")
    );
}

#[test]
fn migrates_redb_into_redis_and_back() {
    // A server of this test's own, so the command's empty key prefix meets no other test's data.
    let Some(server) = redis_server::or_skip(redis_server::LocalServer::start()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("sessions");
    original_tree(&original, 200);
    let before = files(&original);
    let redb = spec("redb", &dir.path().join("s.redb"));
    ok(&["migrate", &spec("dir", &original), &redb]);

    let url = server.url();
    ok(&["migrate", &redb, &url, "--verify"]);
    let err = fails(&["migrate", &redb, &url]);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(
        String::from_utf8(ok(&["stats", &url])).unwrap(),
        format!(
            "domains: 200\nkeys: 200\nvalue bytes: {}\n",
            before.values().map(Vec::len).sum::<usize>()
        )
    );
    let back = dir.path().join("back");
    ok(&["migrate", &url, &spec("dir", &back)]);
    assert_eq!(files(&back), before);
}

/// Every entry of an archive, in order.
fn entries(archive: &dyn Archive) -> Vec<(String, String, Vec<u8>)> {
    use session_archive::ArchiveExt;
    let mut all = Vec::new();
    for domain in archive.domains() {
        let domain = domain.expect("list the domains");
        for key in archive.keys(&domain) {
            let key = key.expect("list the keys");
            let value = archive
                .get(&domain, &key)
                .expect("read")
                .expect("a listed key");
            all.push((domain.clone(), key, value));
        }
    }
    all
}

/// redb -> PostgreSQL -> redb, checked with `--verify` both ways and byte for byte at the end;
/// every other subcommand on the PostgreSQL spec; and no password on stderr.
#[test]
fn migrates_redb_into_postgres_and_back_and_every_command_takes_its_spec() {
    let Some(url) = postgres_server::or_skip(postgres_server::shared_url()) else {
        return;
    };
    let pg = format!("{url}#table={}", postgres_server::unique_table());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("first.redb");
    let mut ids = Vec::new();
    {
        let sessions = Sessions::new(RedbArchive::open(&file).unwrap());
        for user in ["alice@example.com", "alice@example.com", "bob"] {
            let mut session = sessions.start(None, format!("state of {user}")).unwrap();
            session.set_user(Some(user));
            session.save().unwrap();
            ids.push(session.id().clone());
        }
    }
    {
        let extra = RedbArchive::open(&file).unwrap();
        extra
            .set("odd 'domain'; --", "k\"ey", &[0, 255, 39, 92])
            .unwrap();
        extra.set("empty", "value", b"").unwrap();
    }
    let first = spec("redb", &file);
    ok(&["migrate", &first, &pg, "--verify"]);
    let err = fails(&["migrate", &first, &pg]);
    assert!(err.contains("not empty"), "{err}");
    let second = spec("redb", &dir.path().join("second.redb"));
    ok(&["migrate", &pg, &second, "--verify"]);
    let (a, b) = (
        RedbArchive::open(&file).unwrap(),
        RedbArchive::open(dir.path().join("second.redb")).unwrap(),
    );
    let stored = entries(&a);
    assert_eq!(stored, entries(&b));
    drop((a, b));

    let domains: std::collections::BTreeSet<&str> = stored
        .iter()
        .map(|(domain, _, _)| domain.as_str())
        .collect();
    let listed = String::from_utf8(ok(&["domains", &pg])).unwrap();
    assert_eq!(
        listed.lines().collect::<std::collections::BTreeSet<_>>(),
        domains
    );
    assert_eq!(
        ok(&["get", &pg, "odd 'domain'; --", "k\"ey"]),
        [0, 255, 39, 92]
    );
    assert_eq!(
        String::from_utf8(ok(&["keys", &pg, "empty"])).unwrap(),
        "value\n"
    );
    assert!(
        String::from_utf8(ok(&["stats", &pg]))
            .unwrap()
            .contains("keys: ")
    );
    ok(&["rm", &pg, "empty", "value"]);
    assert!(fails(&["get", &pg, "empty", "value"]).contains("empty"));
    let listed = String::from_utf8(ok(&["user-sessions", &pg, "alice@example.com"])).unwrap();
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(
        !listed.contains(ids[0].as_str()),
        "an id is a bearer token: {listed}"
    );
    assert_eq!(
        String::from_utf8(ok(&["revoke-user", &pg, "alice@example.com"])).unwrap(),
        "revoked 2 sessions\n"
    );
    ok(&["sweep", &pg]);
    let listed = String::from_utf8(ok(&["user-sessions", &pg, "bob"])).unwrap();
    assert_eq!(listed.lines().count(), 1, "{listed}");

    // A server that is not there: one line on stderr, which names the archive without its
    // password.
    let port = postgres_server::free_port().unwrap();
    let err = fails(&[
        "stats",
        &format!("postgres://app:hunter2@127.0.0.1:{port}/app"),
    ]);
    assert!(
        err.contains(&format!("postgres://app:***@127.0.0.1:{port}/app")),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn a_redis_spec_names_its_prefix_and_legacy_layout() {
    let Some(server) = redis_server::or_skip(redis_server::LocalServer::start()) else {
        return;
    };
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("sessions");
    original_tree(&tree, 3);
    let prefixed = format!("{url}#prefix=app");
    ok(&["migrate", &spec("dir", &tree), &prefixed]);
    // The prefixed archive sees its three domains; the unprefixed one sees none of them.
    assert!(
        String::from_utf8(ok(&["stats", &prefixed]))
            .unwrap()
            .starts_with("domains: 3\n")
    );
    assert!(
        String::from_utf8(ok(&["stats", &url]))
            .unwrap()
            .starts_with("domains: 0\n")
    );
    // Data written by 0.1 under `app:` (hashes named `app:<domain>`) opens in the legacy layout.
    let legacy = format!("{url}#legacy-prefix=app:");
    ok(&["migrate", &spec("dir", &tree), &legacy]);
    assert!(
        String::from_utf8(ok(&["stats", &legacy]))
            .unwrap()
            .starts_with("domains: 3\n")
    );
    assert!(
        String::from_utf8(ok(&["stats", &prefixed]))
            .unwrap()
            .starts_with("domains: 3\n")
    );
}

/// A cluster spec names seed nodes and a prefix; the command migrates into the cluster, lists
/// across its masters, and the prefix keeps archives apart as on one server.
#[test]
fn a_redis_cluster_spec_names_its_nodes_and_prefix() {
    let Some(cluster) = redis_server::or_skip(cluster_servers::Cluster::start(&[])) else {
        return;
    };
    let nodes: Vec<String> = cluster
        .nodes
        .iter()
        .map(cluster_servers::Node::address)
        .collect();
    let spec_of = |prefix: &str| format!("redis+cluster://{}#prefix={prefix}", nodes.join(","));
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("sessions");
    original_tree(&tree, 3);
    ok(&["migrate", &spec("dir", &tree), &spec_of("app")]);
    let stats = |prefix: &str| String::from_utf8(ok(&["stats", &spec_of(prefix)])).unwrap();
    assert!(stats("app").starts_with("domains: 3\n"), "{}", stats("app"));
    assert!(stats("other").starts_with("domains: 0\n"));
    // One seed node is enough: the others are found from it.
    let one = format!("redis+cluster://{}#prefix=app", nodes[2]);
    assert!(
        String::from_utf8(ok(&["stats", &one]))
            .unwrap()
            .starts_with("domains: 3\n")
    );
}

#[test]
fn user_sessions_lists_fingerprints_and_revoke_user_signs_out_everywhere() {
    use session_archive::{RedbArchive, Sessions};

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.redb");
    let mut ids = Vec::new();
    {
        let sessions = Sessions::new(RedbArchive::open(&file).unwrap());
        for user in ["alice@example.com", "alice@example.com", "bob"] {
            let mut session = sessions.start(None, ()).unwrap();
            session.set_user(Some(user));
            session.save().unwrap();
            ids.push(session.id().clone());
        }
    }
    let redb = spec("redb", &file);
    let listed = String::from_utf8(ok(&["user-sessions", &redb, "alice@example.com"])).unwrap();
    assert_eq!(listed.lines().count(), 2, "{listed}");
    for id in &ids[..2] {
        assert!(listed.contains(&id.fingerprint()), "{listed}");
        assert!(
            !listed.contains(id.as_str()),
            "an id is a bearer token: {listed}"
        );
    }
    assert!(
        listed
            .lines()
            .all(|l| l.contains(" created ") && l.contains(" seen "))
    );
    assert_eq!(
        String::from_utf8(ok(&["revoke-user", &redb, "alice@example.com"])).unwrap(),
        "revoked 2 sessions\n"
    );
    assert!(ok(&["user-sessions", &redb, "alice@example.com"]).is_empty());
    assert_eq!(
        String::from_utf8(ok(&["user-sessions", &redb, "bob"]))
            .unwrap()
            .lines()
            .count(),
        1
    );
    let err = fails(&["revoke-user", &redb, ""]);
    assert!(err.contains("invalid user id"), "{err}");
}

/// `revoke-user` ends every stored session of the user, whatever it thinks of their expiry
/// (issue 24, defect 2): an application without an idle timeout records no settings, so the
/// command has only its defaults to judge by, by which an 8-day-old session looks expired; the
/// application still resumes it, so the revoke must end it.
#[test]
fn revoke_user_ends_a_session_that_looks_expired_to_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.redb");
    let eight_days_ago = SystemTime::now() - Duration::from_secs(8 * 24 * 3600);
    let app = |clock: ManualClock| {
        Sessions::builder(RedbArchive::open(&file).unwrap())
            .idle_timeout(None)
            .absolute_lifetime(None)
            .clock(clock)
            .build()
    };
    let id = {
        let sessions = app(ManualClock::new(eight_days_ago));
        let mut session = sessions.start(None, ()).unwrap();
        session.set_user(Some("alice"));
        session.save().unwrap();
        session.id().clone()
    };
    assert_eq!(
        String::from_utf8(ok(&["revoke-user", &spec("redb", &file), "alice"])).unwrap(),
        "revoked 1 sessions\n"
    );
    let sessions = app(ManualClock::new(SystemTime::now()));
    assert!(
        !sessions.is_live(&id).unwrap(),
        "the revoke missed a live session"
    );
}
