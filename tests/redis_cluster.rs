//! `RedisArchive` on a real 3-master Redis Cluster that these tests start themselves
//! (`support/redis_cluster.rs`): the conformance suite, the interleaving explorer (its bounded
//! sample), and what is particular to a cluster: the hash tag, batches split per slot, listings
//! across masters, a slot moved while writers run, a master that goes away, two app instances.
//! The typed-session suite and the tower-sessions store tests run on the cluster from
//! `tests/sessions.rs` and `tests/tower_sessions.rs`.
//!
//! Without `redis-server` and `redis-cli` the tests skip with a notice, or fail under
//! `ARCHIVE_REDIS_REQUIRED=1`.

#![cfg(feature = "archive-redis")]

#[path = "support/redis_cluster.rs"]
mod redis_cluster;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use session_archive::{Archive, ArchiveExt, Error, RedisArchive, Sessions};

use self::redis_cluster::{Cluster, cluster_ready, open_cluster};
use self::redis_server::{or_skip, unique_prefix};

/// The archive of one conformance test, under a prefix of its directory and this run.
fn conformance_archive(dir: &Path) -> RedisArchive {
    static RUN: OnceLock<uuid::Uuid> = OnceLock::new();
    let test = dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let run = RUN.get_or_init(uuid::Uuid::new_v4);
    open_cluster(&format!("session-archive-test:{run}:{test}"))
}

session_archive::archive_conformance!(
    cluster_conformance,
    conformance_archive,
    persistent,
    when = cluster_ready
);

session_archive::session_explorer!(
    cluster_explorer,
    conformance_archive,
    seeds = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/explore_seeds.txt"),
    when = cluster_ready
);

/// A fresh archive on the shared cluster, or `None` (after a notice) without one.
fn fresh() -> Option<RedisArchive> {
    cluster_ready().then(|| open_cluster(&unique_prefix()))
}

/// A cluster of this test's own, for tests that move slots or stop nodes.
fn own_cluster(extra: &[&str]) -> Option<Cluster> {
    or_skip(Cluster::start(extra))
}

#[test]
fn a_domain_is_one_hash_whose_tag_is_the_domain() {
    let Some(cluster) = own_cluster(&[]) else {
        return;
    };
    let archive = RedisArchive::cluster(cluster.urls())
        .prefix("app")
        .open()
        .unwrap();
    archive.set("d1", "k", b"v").unwrap();
    let owner = cluster.owner(cluster.slot("d1"));
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg("app/{d1}")
        .query(&mut cluster.nodes[owner].control())
        .unwrap();
    assert_eq!(fields, ["k"]);
    assert_eq!(
        archive.domains().collect::<Result<Vec<_>, _>>().unwrap(),
        ["d1"]
    );
    // A prefix with braces would move the tag; the legacy layout has none.
    for builder in [
        RedisArchive::cluster(cluster.urls()).prefix("a{b}"),
        RedisArchive::cluster(cluster.urls()).legacy_layout(true),
    ] {
        assert!(matches!(
            builder.open(),
            Err(Error::Backend {
                backend: "redis",
                ..
            })
        ));
    }
    assert!(matches!(
        archive.migrate_legacy_domain("d1"),
        Err(Error::Unsupported { .. })
    ));
}

/// Listing walks every master, in pages of about `limit`, and finds every domain once.
#[test]
fn listings_walk_every_master_in_pages() {
    let Some(archive) = fresh() else { return };
    let domains: Vec<String> = (0..300).map(|i| format!("d{i:03}")).collect();
    let entries: Vec<(&str, &str, &[u8])> = domains
        .iter()
        .map(|d| (d.as_str(), "k", &b"v"[..]))
        .collect();
    archive.set_many(&entries).unwrap();
    let mut listed = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = archive.list_domains(cursor.as_deref(), 25).unwrap();
        listed.extend(page.names);
        pages += 1;
        match page.cursor {
            Some(next) => {
                assert!(next.contains('@'), "{next}");
                cursor = Some(next);
            }
            None => break,
        }
    }
    assert!(pages > 3, "{pages} pages");
    listed.sort();
    assert_eq!(listed, domains);
    assert!(matches!(
        archive.list_domains(Some("17"), 10),
        Err(Error::InvalidCursor { .. })
    ));
}

/// A batch spanning slots is split per slot; with one master down, the parts on the live
/// masters before the failing one (in slot order) are applied whole, the failing part and
/// those after it are not, and each domain is all or nothing. The failure is a backend error
/// that comes within the timeouts, not a hang, and the other masters' slots keep working.
#[test]
fn a_master_that_goes_away_fails_its_slots_clearly_and_batches_stop_at_its_part() {
    let Some(mut cluster) = own_cluster(&["--cluster-require-full-coverage", "no"]) else {
        return;
    };
    let archive = RedisArchive::cluster(cluster.urls())
        .prefix("app")
        .connect_timeout(Some(Duration::from_millis(500)))
        .response_timeout(Some(Duration::from_millis(500)))
        .open()
        .unwrap();
    let domains: Vec<String> = (0..60).map(|i| format!("d{i}")).collect();
    let slots: BTreeMap<String, u16> = domains
        .iter()
        .map(|d| (d.clone(), cluster.slot(d)))
        .collect();
    let slot = |d: &String| slots[d];
    let owner: BTreeMap<String, usize> = domains
        .iter()
        .map(|d| (d.clone(), cluster.owner(slot(d))))
        .collect();
    let dead = 1;
    cluster.nodes[dead].kill();
    let entries: Vec<(&str, &str, &[u8])> = domains
        .iter()
        .flat_map(|d| [(d.as_str(), "a", &b"1"[..]), (d.as_str(), "b", &b"2"[..])])
        .collect();
    let started = Instant::now();
    let err = archive.set_many(&entries).unwrap_err();
    eprintln!("set_many: {}", session_archive::error::Chain(&err));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            err,
            Error::Backend {
                backend: "redis",
                ..
            }
        ),
        "{err:?}"
    );
    let first_dead = domains
        .iter()
        .filter(|d| owner[*d] == dead)
        .map(slot)
        .min()
        .unwrap();
    for d in &domains {
        if owner[d] == dead {
            let started = Instant::now();
            assert!(matches!(archive.get(d, "a"), Err(Error::Backend { .. })));
            assert!(started.elapsed() < Duration::from_secs(5));
            continue;
        }
        let (a, b) = (archive.get(d, "a").unwrap(), archive.get(d, "b").unwrap());
        assert_eq!(a.is_some(), b.is_some(), "{d} is torn");
        assert_eq!(a.is_some(), slot(d) < first_dead, "{d} at slot {}", slot(d));
        archive.set(d, "c", b"3").unwrap();
    }
}

/// Writers on domains whose slots move to other masters mid-run (`SETSLOT`, `MIGRATE`):
/// `ASK` and `MOVED` are followed, and nothing acknowledged is lost.
#[test]
fn a_slot_resharded_mid_run_loses_nothing_acknowledged() {
    let Some(cluster) = own_cluster(&[]) else {
        return;
    };
    let urls = cluster.urls();
    let domains: Vec<String> = (0..6).map(|i| format!("hot{i}")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = domains
        .iter()
        .cloned()
        .map(|domain| {
            let archive = RedisArchive::cluster(urls.clone())
                .prefix("app")
                .open()
                .unwrap();
            let stop = Arc::clone(&stop);
            thread::spawn(move || writer(&archive, &domain, &stop))
        })
        .collect();
    thread::sleep(Duration::from_millis(200));
    for domain in &domains {
        let slot = cluster.slot(domain);
        let to = (cluster.owner(slot) + 1) % cluster.nodes.len();
        cluster.move_slot(slot, to);
    }
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let reader = RedisArchive::cluster(urls).prefix("app").open().unwrap();
    let mut total = 0;
    for (domain, writer) in domains.iter().zip(writers) {
        let (acked, counted) = writer.join().unwrap();
        total += acked;
        let keys: Vec<String> = reader.keys(domain).collect::<Result<_, _>>().unwrap();
        assert!(
            keys.len() > acked,
            "{domain}: {} keys, {acked} acknowledged",
            keys.len()
        );
        for i in 0..acked {
            assert_eq!(
                reader.get(domain, &format!("k{i}")).unwrap(),
                Some(b"v".to_vec())
            );
        }
        let count = reader.get(domain, "count").unwrap().unwrap();
        assert_eq!(String::from_utf8(count).unwrap(), counted.to_string());
    }
    eprintln!("reshard: {total} acknowledged writes, none lost");
}

/// Sets `k0`, `k1`, … and increments `count` by compare-and-swap until told to stop; answers
/// how many of each were acknowledged. Every call must succeed: a redirection is followed.
fn writer(archive: &RedisArchive, domain: &str, stop: &AtomicBool) -> (usize, usize) {
    let (mut acked, mut counted) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        archive
            .set(domain, &format!("k{acked}"), b"v")
            .expect("a write during the move");
        acked += 1;
        let current = archive
            .get(domain, "count")
            .expect("a read during the move");
        let next = (counted + 1).to_string();
        let swapped = archive
            .compare_and_swap(domain, "count", current.as_deref(), Some(next.as_bytes()))
            .expect("a swap during the move");
        assert!(swapped, "only this writer writes {domain}'s count");
        counted += 1;
    }
    (acked, counted)
}

/// Two app instances (two archives, connections of their own) share sessions: one saves, the
/// other loads, both update at once without losing an update, and a destroy by one is final for
/// the other.
#[test]
fn two_app_instances_share_sessions() {
    let Some(first) = fresh() else { return };
    let second = open_cluster(first.prefix());
    let (one, two) = (Sessions::new(first), Sessions::new(second));
    let mut session = one.start(None, 0_u64).unwrap();
    session.save().unwrap();
    let id = session.id().as_str().to_owned();
    assert_eq!(*two.start(Some(&id), 99_u64).unwrap(), 0);
    thread::scope(|scope| {
        for sessions in [&one, &two] {
            let id = &id;
            scope.spawn(move || {
                for _ in 0..30 {
                    let mut session = sessions.start(Some(id), 0_u64).unwrap();
                    session.update(|n| *n += 1).unwrap();
                }
            });
        }
    });
    assert_eq!(*one.start(Some(&id), 0_u64).unwrap(), 60);
    two.start(Some(&id), 0_u64).unwrap().destroy().unwrap();
    let again = one.start(Some(&id), 7_u64).unwrap();
    assert_ne!(
        again.id().as_str(),
        id,
        "a destroyed session is not resumed"
    );
}
