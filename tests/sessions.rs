//! The session layer's behaviours, stamped out for every backend by `session_tests!`.
//!
//! Each behaviour is one function in `behaviour` taking a fresh, empty `Arc<dyn Archive>`;
//! `session_tests!(module, |dir: &Path| archive)` makes one `#[test]` per behaviour, with a fresh
//! temporary directory for each. Adding a backend is one more `session_tests!` line. A backend
//! that needs a server adds `when = ready`: `ready()` runs first in every test, and the test
//! returns without running when it gives `false` (it prints why, or panics where a missing server
//! must fail the run).
//!
//! On Redis the whole suite runs on one shared server, each test under its own key prefix, and
//! `redis_sessions` adds what only a server shared between processes can show: two app instances
//! on one server, `update` across connections, and expiry by Redis's own TTLs.

use std::path::Path;
use std::sync::Arc;

use session_archive::{Archive, MemoryArchive};

#[cfg(feature = "archive-redis")]
#[path = "support/redis_cluster.rs"]
mod cluster_servers;
#[cfg(feature = "archive-postgres")]
#[path = "support/postgres_server.rs"]
mod postgres_server;
#[cfg(feature = "archive-redis")]
#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/sha256.rs"]
mod sha256;

macro_rules! session_tests {
    ($module:ident, $factory:expr $(,)?) => {
        session_tests!($module, $factory, when = || true);
    };
    ($module:ident, $factory:expr, when = $ready:expr $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            fn open(dir: &::std::path::Path) -> ::std::sync::Arc<dyn ::session_archive::Archive> {
                ::std::sync::Arc::new(($factory)(dir))
            }

            fn ready() -> bool {
                ($ready)()
            }

            session_tests!(@each
                new_sessions_write_nothing
                ids_are_lowercase_uuids
                save_then_start_resumes
                state_and_metadata_are_separate_keys
                seed_file_is_read_in_the_original_layout
                load_rereads_the_stored_state
                load_on_a_new_session_keeps_its_state
                hostile_ids_get_fresh_ids
                destroy_removes_the_domain
                destroy_then_save_never_resurrects
                destroy_is_idempotent_and_works_on_new_sessions
                regenerate_moves_the_state_to_a_fresh_id
                regenerate_of_a_new_session_stores_it_under_a_fresh_id
                regenerate_of_a_destroyed_session_is_an_error
                regenerate_failure_leaves_the_old_session_intact
                regenerate_racing_a_destroy_leaves_the_session_destroyed
                failed_create_leaves_nothing_stored
                update_returns_the_closure_value_and_creates_new_sessions
                concurrent_updates_lose_nothing
                concurrent_saves_on_one_session_leave_one_whole_state
                corrupt_state_is_an_error_and_left_untouched
                corrupt_state_can_start_fresh_and_is_set_aside
                sessions_per_user_are_listed_rebound_and_revoked
                state_over_the_limit_writes_nothing
                update_send_that_panics_writes_nothing
                idle_timeout_expires_unused_sessions
                absolute_lifetime_expires_active_sessions
                reads_refresh_last_seen_only_when_it_has_aged
                expired_sessions_are_removed_on_start
                start_without_writing_writes_nothing_and_agrees_with_start
                sweep_removes_expired_and_leaves_live_sessions
                sweep_reads_only_expired_sessions_metadata
                sweep_pages_through_a_bucket_larger_than_a_page
                sweep_drops_stale_index_entries
                sweep_cleans_metadata_left_after_destroy
                failed_index_write_on_a_first_save_leaves_nothing_unswept
                failed_index_write_on_a_refresh_leaves_nothing_unswept
                sweep_without_expiry_configured_removes_nothing
                sweeps_with_another_granularity_are_bounded_and_complete
                a_removed_sweep_cursor_is_written_again
                an_entry_written_into_a_swept_bucket_is_still_swept
                adopt_legacy_gives_unstamped_sessions_timestamps_from_now
                adopt_legacy_never_overwrites_timestamps_written_meanwhile
                saves_ask_the_backend_to_expire_the_domain
                cookie_header_yields_only_valid_ids
                set_cookie_carries_the_session_id_and_attributes
                set_cookie_max_age_follows_the_configuration
                set_cookie_max_age_ends_when_the_server_expires_the_session
                removal_cookie_expires_the_cookie
            );
        }
    };
    (@each $($behaviour:ident)*) => {
        $(
            #[test]
            fn $behaviour() {
                if !ready() {
                    return;
                }
                let dir = ::tempfile::tempdir().expect("create a temporary directory");
                super::behaviour::$behaviour(&open(dir.path()));
            }
        )*
    };
}

session_tests!(memory, |_dir: &Path| MemoryArchive::new());
session_tests!(arc_dyn, |_dir: &Path| Arc::new(MemoryArchive::new())
    as Arc<dyn Archive>);
#[cfg(feature = "archive-redb")]
session_tests!(redb, |dir: &Path| session_archive::RedbArchive::open(
    dir.join("sessions.redb")
)
.expect("open the redb archive"));
#[cfg(all(feature = "archive-dir", unix))]
session_tests!(dir, |dir: &Path| session_archive::DirArchive::open(
    dir.join("sessions")
)
.expect("open the directory archive"));
// Every test opens the shared server under a key prefix of its own.
#[cfg(feature = "archive-redis")]
session_tests!(
    redis,
    |_dir: &Path| redis_server::open(
        &redis_server::shared_url().expect("ready() checked the server"),
        &redis_server::unique_prefix()
    ),
    when = redis_server::server_ready
);

// The same on a 3-master Redis Cluster, started once for this binary.
#[cfg(feature = "archive-redis")]
session_tests!(
    redis_cluster,
    |_dir: &Path| cluster_servers::open_cluster(&redis_server::unique_prefix()),
    when = cluster_servers::cluster_ready
);

// Every test opens a table of its own in the shared PostgreSQL database.
#[cfg(feature = "archive-postgres")]
session_tests!(
    postgres,
    |_dir: &Path| session_archive::PostgresArchive::builder(
        &postgres_server::shared_url().expect("ready() checked the server")
    )
    .table(&postgres_server::unique_table())
    .pool_size(4)
    .connect()
    .expect("connect to the shared PostgreSQL server"),
    when = postgres_server::server_ready
);

/// What an archive says about blocking reaches `Sessions` through every wrapper, and a wrapper
/// that does not say keeps the safe default.
#[test]
fn sessions_see_what_their_archive_says_about_blocking() {
    use session_archive::{Blocking, Sessions};
    let shared: Arc<dyn Archive> = Arc::new(MemoryArchive::new());
    assert_eq!(
        Sessions::new(Arc::clone(&shared)).blocking(),
        Blocking::Never
    );
    let boxed: Box<dyn Archive> = Box::new(MemoryArchive::new());
    assert_eq!(Sessions::new(boxed).blocking(), Blocking::Never);
    let hashed = Sessions::builder(Arc::clone(&shared))
        .hash_ids_at_rest(true)
        .build();
    assert_eq!(hashed.blocking(), Blocking::Never);
    let hooked = session_archive::conformance::Hooked::new(shared, |_| Ok(()));
    assert_eq!(Sessions::new(hooked).blocking(), Blocking::Always);
    #[cfg(feature = "archive-redb")]
    {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let redb =
            session_archive::RedbArchive::open(dir.path().join("s.redb")).expect("open redb");
        assert_eq!(Sessions::new(redb).blocking(), Blocking::Commits);
    }
    #[cfg(all(feature = "archive-dir", unix))]
    {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let tree = session_archive::DirArchive::open(dir.path().join("s")).expect("open dir");
        assert_eq!(Sessions::new(tree).blocking(), Blocking::Always);
    }
}

#[test]
fn debug_shows_a_fingerprint_but_neither_the_id_nor_the_state() {
    let sessions = session_archive::Sessions::new(MemoryArchive::new());
    let mut session = sessions.start(None, "secret".to_owned()).unwrap();
    let debug = format!("{session:?}");
    assert!(
        debug.contains(&session.id().fingerprint()) && debug.contains("new"),
        "{debug}"
    );
    assert!(!debug.contains(session.id().as_str()), "{debug}");
    // An independent check that no long run of the id's hex digits shows either.
    let hex: String = session
        .id()
        .as_str()
        .chars()
        .filter(|c| *c != '-')
        .collect();
    for window in hex.as_bytes().windows(16) {
        assert!(
            !debug.contains(std::str::from_utf8(window).unwrap()),
            "{debug}"
        );
    }
    assert!(!debug.contains("secret"), "{debug}");
    session.save().unwrap();
    assert!(format!("{session:?}").contains("live"));
    assert!(!format!("{sessions:?}").contains("secret"));
}

#[test]
fn sessions_and_sessions_handles_can_move_between_threads() {
    fn send_sync<T: Send + Sync + Clone + 'static>() {}
    fn send_static<T: Send + 'static>() {}
    send_sync::<session_archive::Sessions>();
    send_static::<session_archive::Session<String>>();
}

/// What only a server shared between processes shows. Each `RedisArchive` here stands for one
/// app instance: it has connections of its own.
#[cfg(feature = "archive-redis")]
mod redis_sessions {
    use std::sync::Barrier;
    use std::thread;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use session_archive::{Archive, ArchiveExt, Error, ManualClock, RedisArchive, Sessions};

    use super::behaviour::unix_secs;
    use super::redis_server::{control, open, or_skip, shared_url, unique_prefix};

    /// The server's URL and a key prefix no other test uses.
    fn namespace() -> Option<(String, String)> {
        let url = or_skip(shared_url())?;
        Some((url, unique_prefix()))
    }

    /// The expiry index as (bucket domain, session id) pairs.
    fn index_entries(archive: &RedisArchive) -> Vec<(String, String)> {
        let mut entries = Vec::new();
        for domain in archive.domains() {
            let domain = domain.expect("list domains");
            if domain.starts_with("expiry-") {
                for id in archive.keys(&domain) {
                    entries.push((domain.clone(), id.expect("list keys")));
                }
            }
        }
        entries
    }

    fn pttl(conn: &mut redis::Connection, key: &str) -> i64 {
        redis::cmd("PTTL").arg(key).query(conn).expect("PTTL")
    }

    #[test]
    fn two_app_instances_see_each_others_sessions() {
        let Some((url, prefix)) = namespace() else {
            return;
        };
        let a = Sessions::new(open(&url, &prefix));
        let b = Sessions::new(open(&url, &prefix));

        // Saved on one, started on the other.
        let mut on_a = a.start(None, "from a".to_owned()).unwrap();
        on_a.save().unwrap();
        let id = on_a.id().to_string();
        let mut on_b = b.start(Some(&id), String::new()).unwrap();
        assert_eq!(on_b.id().as_str(), id);
        assert!(!on_b.is_new());
        assert_eq!(*on_b, "from a");

        // Updated on the other, loaded and started on the first.
        on_b.update(|s| s.push_str(", then b")).unwrap();
        on_a.load().unwrap();
        assert_eq!(*on_a, "from a, then b");
        assert_eq!(
            *a.start(Some(&id), String::new()).unwrap(),
            "from a, then b"
        );

        // And the other way round.
        let mut second = b.start(None, "from b".to_owned()).unwrap();
        second.save().unwrap();
        let resumed = a.start(Some(second.id().as_str()), String::new()).unwrap();
        assert_eq!(*resumed, "from b");

        // Destroyed on one: unknown to the other, whose handle cannot bring it back.
        on_b.destroy().unwrap();
        let fresh = a.start(Some(&id), String::new()).unwrap();
        assert!(fresh.is_new());
        assert_ne!(fresh.id().as_str(), id);
        assert!(matches!(on_a.load(), Err(Error::SessionGone { .. })));
        assert!(matches!(on_a.save(), Err(Error::SessionGone { .. })));
        assert!(!open(&url, &prefix).has_domain(&id).unwrap());
        assert_eq!(
            *a.start(Some(second.id().as_str()), String::new()).unwrap(),
            "from b"
        );
    }

    #[test]
    fn update_loses_no_writes_across_connections() {
        const THREADS: usize = 8;
        const ROUNDS: usize = 25;
        let Some((url, prefix)) = namespace() else {
            return;
        };
        let mut session = Sessions::new(open(&url, &prefix))
            .start(None, 0_usize)
            .unwrap();
        session.save().unwrap();
        let id = session.id().to_string();
        let barrier = Barrier::new(THREADS);
        thread::scope(|scope| {
            for _ in 0..THREADS {
                // Its own archive, hence its own connections, as another app process would have.
                let sessions = Sessions::new(open(&url, &prefix));
                let (barrier, id) = (&barrier, &id);
                scope.spawn(move || {
                    barrier.wait();
                    for _ in 0..ROUNDS {
                        let mut session = sessions.start(Some(id), 0).unwrap();
                        assert_eq!(session.id().as_str(), id);
                        session.update(|n| *n += 1).unwrap();
                    }
                });
            }
        });
        session.load().unwrap();
        assert_eq!(*session, THREADS * ROUNDS);
    }

    #[test]
    fn saves_set_a_ttl_on_the_session_hash() {
        let Some((url, prefix)) = namespace() else {
            return;
        };
        let mut conn = control(&url);
        let sessions = Sessions::builder(open(&url, &prefix))
            .idle_timeout(Duration::from_secs(600))
            .absolute_lifetime(Duration::from_secs(3600))
            .build();
        let mut session = sessions.start(None, 0_u64).unwrap();
        session.save().unwrap();
        let hash = format!("{prefix}/{}", session.id());
        // The idle timeout, less the part of a second that whole-second timestamps drop, and
        // whatever time a slow machine took since the save.
        let expected = 590_000..=600_000;
        let left = pttl(&mut conn, &hash);
        assert!(expected.contains(&left), "{left}");
        session.update(|n| *n += 1).unwrap();
        let left = pttl(&mut conn, &hash);
        assert!(expected.contains(&left), "after update: {left}");
        // The index bucket expires too, a week after its sessions, so an app that never sweeps
        // does not grow the index forever.
        let buckets: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}/expiry-*"))
            .query(&mut conn)
            .expect("KEYS");
        assert_eq!(buckets.len(), 1, "{buckets:?}");
        let week_ms = 7 * 24 * 3600 * 1000;
        let left = pttl(&mut conn, &buckets[0]);
        assert!(
            (week_ms + 590_000..=week_ms + 660_000).contains(&left),
            "bucket: {left}"
        );

        // The earlier of the two limits sets the TTL.
        let prefix = unique_prefix();
        let short = Sessions::builder(open(&url, &prefix))
            .idle_timeout(Duration::from_secs(600))
            .absolute_lifetime(Duration::from_secs(60))
            .build();
        let mut session = short.start(None, 0_u64).unwrap();
        session.save().unwrap();
        let left = pttl(&mut conn, &format!("{prefix}/{}", session.id()));
        assert!((50_000..=60_000).contains(&left), "{left}");

        // Without expiry, no TTL.
        let prefix = unique_prefix();
        let endless = Sessions::builder(open(&url, &prefix))
            .idle_timeout(None)
            .absolute_lifetime(None)
            .build();
        let mut session = endless.start(None, 0_u64).unwrap();
        session.save().unwrap();
        assert_eq!(pttl(&mut conn, &format!("{prefix}/{}", session.id())), -1);
    }

    /// The one test that waits for real time: Redis expires keys by its own clock. The sessions
    /// run on a manual clock, so that what must expire does so a second from now, and what must
    /// stay has ten minutes left, however slowly this machine runs.
    #[test]
    fn redis_removes_expired_sessions_and_the_sweep_stays_correct() {
        const IDLE_SECS: u64 = 600;
        let Some((url, prefix)) = namespace() else {
            return;
        };
        let observer = open(&url, &prefix);
        let now = unix_secs(SystemTime::now());
        // The clock starts an idle timeout, less a second, behind the real time: the first
        // session expires (and Redis drops it) at `now + 1`, or at once if saving takes longer.
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(now + 1 - IDLE_SECS));
        let sessions = Sessions::builder(open(&url, &prefix))
            .idle_timeout(Duration::from_secs(IDLE_SECS))
            .absolute_lifetime(None)
            .sweep_granularity(Duration::from_secs(60))
            .clock(clock.clone())
            .build();
        let mut session = sessions.start(None, 1_u64).unwrap();
        session.save().unwrap();
        let id = session.id().to_string();

        // Nothing in this process removes the session: only Redis can.
        let deadline = Instant::now() + Duration::from_secs(60);
        while observer.has_domain(&id).unwrap() {
            assert!(Instant::now() < deadline, "Redis never removed the session");
            thread::sleep(Duration::from_millis(50));
        }
        let entries = index_entries(&observer);
        let Some((bucket, _)) = entries.iter().find(|(_, entry)| *entry == id) else {
            panic!("the index entry went with the session: {entries:?}");
        };

        // The id is unknown now: a fresh one, and nothing written under the old.
        let fresh = sessions.start(Some(&id), 0).unwrap();
        assert!(fresh.is_new());
        assert_ne!(fresh.id().as_str(), id);
        assert!(!observer.has_domain(&id).unwrap());

        // The clock catches up with the first session's expiry, `now + 1`: a live session saved
        // now expires ten minutes after that, by the sessions' clock and by Redis's.
        clock.advance(Duration::from_secs(IDLE_SECS));
        let mut live = sessions.start(None, 2_u64).unwrap();
        live.save().unwrap();
        let live_id = live.id().to_string();

        // The sweep drops the entry of the session Redis removed, without error, and does not
        // count it: it returns how many sessions it removed itself. The live one stays.
        assert_eq!(sessions.sweep().unwrap(), 0);
        let entries = index_entries(&observer);
        assert!(entries.iter().all(|(_, entry)| *entry != id), "{entries:?}");
        assert!(
            entries.iter().any(|(_, entry)| *entry == live_id),
            "{entries:?}"
        );
        // The index domains carry no TTL; the sweep keeps them from piling up by draining every
        // bucket it has passed, and Redis deletes a hash with its last field.
        assert!(!observer.has_domain(bucket).unwrap(), "{bucket} was kept");
        assert!(observer.has_domain(&live_id).unwrap());
        assert_eq!(*sessions.start(Some(&live_id), 0).unwrap(), 2);
    }
}

#[expect(
    clippy::unwrap_used,
    reason = "these are the bodies of the #[test] fns that session_tests! stamps out"
)]
mod behaviour {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime};

    use serde::{Deserialize, Serialize};
    use session_archive::conformance::{Call, Hooked};
    use session_archive::{
        Archive, ArchiveExt, CORRUPT_DOMAIN, Clock, DEFAULT_PAGE_SIZE, Error, META_KEY,
        ManualClock, OnCorrupt, Result, STATE_KEY, SessionId, Sessions, session::CookieAction,
    };

    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    struct State {
        #[serde(rename = "Name")]
        name: String,
        #[serde(default)]
        n: u64,
    }

    const SEED_ID: &str = "0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2";
    /// A manual clock, started at the real time in whole seconds. Backends with native expiry
    /// (Redis) compare the expiry times the session layer gives them with their own clock: a
    /// manual clock in the past would have Redis drop every session the moment it is saved. One
    /// that starts now and only moves forward never has the server drop a session the session
    /// layer still holds live.
    fn clock() -> ManualClock {
        ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(unix_secs(SystemTime::now())))
    }

    pub fn unix_secs(time: SystemTime) -> u64 {
        time.duration_since(SystemTime::UNIX_EPOCH)
            .expect("a time after 1970")
            .as_secs()
    }

    fn domains(archive: &dyn Archive) -> BTreeSet<String> {
        archive
            .domains()
            .collect::<Result<_>>()
            .expect("list domains")
    }

    fn session_domains(archive: &dyn Archive) -> BTreeSet<String> {
        domains(archive)
            .into_iter()
            .filter(|d| SessionId::parse(d).is_some())
            .collect()
    }

    fn state_bytes(archive: &dyn Archive, id: &str) -> Option<Vec<u8>> {
        archive.get(id, STATE_KEY).expect("read session.json")
    }

    /// Saves a session with the given name and returns its id.
    fn saved(sessions: &Sessions, name: &str) -> String {
        let mut session = sessions
            .start(None, State::default())
            .expect("start a new session");
        session.name = name.into();
        session.save().expect("save");
        session.id().to_string()
    }

    fn expiring(archive: &Arc<dyn Archive>, clock: &ManualClock, idle: u64) -> Sessions {
        Sessions::builder(Arc::clone(archive))
            .idle_timeout(Duration::from_secs(idle))
            .absolute_lifetime(None)
            .clock(clock.clone())
            .build()
    }

    pub fn new_sessions_write_nothing(archive: &Arc<dyn Archive>) {
        let sessions = Sessions::new(Arc::clone(archive));
        let unknown = SessionId::generate().to_string();
        for id in [None, Some(unknown.as_str())] {
            let mut session = sessions.start(id, State::default()).unwrap();
            assert!(session.is_new());
            session.name = "changed, not saved".into();
            assert_ne!(session.id().as_str(), unknown);
        }
        sessions.sweep().unwrap();
        assert!(domains(&**archive).is_empty(), "{:?}", domains(&**archive));
    }

    pub fn ids_are_lowercase_uuids(archive: &Arc<dyn Archive>) {
        let sessions = Sessions::new(Arc::clone(archive));
        let mut seen = BTreeSet::new();
        for _ in 0..100 {
            let session = sessions.start(None, State::default()).unwrap();
            let id = session.id().to_string();
            assert_eq!(id.len(), 36);
            assert_eq!(id, id.to_lowercase());
            let parsed = uuid::Uuid::parse_str(&id).unwrap();
            assert_eq!(parsed.get_version_num(), 4);
            assert!(seen.insert(id));
        }
    }

    pub fn save_then_start_resumes(archive: &Arc<dyn Archive>) {
        let sessions = Sessions::new(Arc::clone(archive));
        let mut session = sessions.start(None, State::default()).unwrap();
        let id = session.id().to_string();
        session.name = "World".into();
        session.save().unwrap();
        assert!(!session.is_new());

        let again = sessions.start(Some(&id), State::default()).unwrap();
        assert_eq!(again.id().as_str(), id);
        assert_eq!(again.name, "World");
        assert!(!again.is_new());
        assert_eq!(session_domains(&**archive), BTreeSet::from([id]));
    }

    pub fn state_and_metadata_are_separate_keys(archive: &Arc<dyn Archive>) {
        let sessions = Sessions::new(Arc::clone(archive));
        let id = saved(&sessions, "World");
        assert_eq!(
            state_bytes(&**archive, &id).unwrap(),
            br#"{"Name":"World","n":0}"#
        );
        // Listing order is the backend's (Redis has none), so compare sorted.
        let mut keys: Vec<String> = archive.keys(&id).collect::<Result<_>>().unwrap();
        keys.sort();
        assert_eq!(keys, [META_KEY, STATE_KEY]);
    }

    pub fn seed_file_is_read_in_the_original_layout(archive: &Arc<dyn Archive>) {
        let seed: &[u8] = b"{\n\"Name\": \"world\"\n}\n";
        archive.set(SEED_ID, STATE_KEY, seed).unwrap();
        let sessions = Sessions::new(Arc::clone(archive));

        let mut session = sessions.start(Some(SEED_ID), State::default()).unwrap();
        assert_eq!(session.id().as_str(), SEED_ID);
        assert_eq!(session.name, "world");
        assert_eq!(
            state_bytes(&**archive, SEED_ID).unwrap(),
            seed,
            "start rewrote the state"
        );
        // Adopted into expiry: it now has timestamps, beside the untouched state.
        assert!(archive.has(SEED_ID, META_KEY).unwrap());

        session.name = "World".into();
        session.save().unwrap();
        assert_eq!(
            state_bytes(&**archive, SEED_ID).unwrap(),
            br#"{"Name":"World","n":0}"#
        );
    }

    pub fn load_rereads_the_stored_state(archive: &Arc<dyn Archive>) {
        let sessions = Sessions::new(Arc::clone(archive));
        let id = saved(&sessions, "first");
        let mut reader = sessions.start(Some(&id), State::default()).unwrap();
        let mut writer = sessions.start(Some(&id), State::default()).unwrap();
        writer.name = "second".into();
        writer.save().unwrap();

        assert_eq!(reader.name, "first");
        reader.name = "unsaved".into();
        reader.load().unwrap();
        assert_eq!(reader.name, "second");
    }

    pub fn load_on_a_new_session_keeps_its_state(archive: &Arc<dyn Archive>) {
        let sessions = Sessions::new(Arc::clone(archive));
        let mut session = sessions.start(None, State::default()).unwrap();
        session.name = "kept".into();
        session.load().unwrap();
        assert_eq!(session.name, "kept");
        assert!(domains(&**archive).is_empty());
    }

    pub fn hostile_ids_get_fresh_ids(archive: &Arc<dyn Archive>) {
        let clock = clock();
        let sessions = expiring(archive, &clock, 100);
        let live = saved(&sessions, "live");
        let destroyed = {
            let mut s = sessions.start(None, State::default()).unwrap();
            s.save().unwrap();
            s.destroy().unwrap();
            s.id().to_string()
        };
        let expired = saved(&sessions, "expired");
        clock.advance(Duration::from_secs(60));
        // Keep `live` fresh while `expired` ages past its idle timeout.
        sessions.start(Some(&live), State::default()).unwrap();
        clock.advance(Duration::from_secs(60));
        let before: BTreeSet<String> = session_domains(&**archive)
            .into_iter()
            .filter(|d| *d != expired)
            .collect();

        let hostile = [
            String::new(),
            ".".into(),
            "..".into(),
            "../../etc".into(),
            "/etc/passwd".into(),
            format!("../{live}"),
            format!("{live}/.."),
            format!("{live} "),
            format!("{{{live}}}"),
            live.to_uppercase(),
            live.replace('-', ""),
            format!("{live}0"),
            live[..35].to_owned(),
            format!("g{}", &live[1..]),
            "session.json".into(),
            "expiry-0".into(),
            "sweep-cursor".into(),
            SessionId::generate().to_string(),
            destroyed,
            expired.clone(),
        ];
        for id in &hostile {
            let session = sessions.start(Some(id), State::default()).unwrap();
            assert_ne!(session.id().as_str(), id.as_str());
            assert_ne!(session.id().as_str(), live);
            assert!(session.is_new(), "{id:?} was adopted");
            assert_eq!(session.name, "");
        }
        assert_eq!(
            session_domains(&**archive),
            before,
            "a hostile id wrote or removed something"
        );
        assert!(!archive.has_domain(&expired).unwrap());
        assert_eq!(
            sessions.start(Some(&live), State::default()).unwrap().name,
            "live"
        );
    }

    pub fn destroy_removes_the_domain(archive: &Arc<dyn Archive>) {
        let sessions = Sessions::new(Arc::clone(archive));
        let keep = saved(&sessions, "keep");
        let id = saved(&sessions, "gone");
        let mut session = sessions.start(Some(&id), State::default()).unwrap();
        session.destroy().unwrap();
        assert!(!archive.has_domain(&id).unwrap());
        assert!(archive.has_domain(&keep).unwrap());
        let fresh = sessions.start(Some(&id), State::default()).unwrap();
        assert_ne!(fresh.id().as_str(), id);
        assert!(fresh.is_new());
    }

    pub fn destroy_then_save_never_resurrects(archive: &Arc<dyn Archive>) {
        let sessions = Sessions::new(Arc::clone(archive));
        let id = saved(&sessions, "user");
        let mut slow = sessions.start(Some(&id), State::default()).unwrap();
        let mut logout = sessions.start(Some(&id), State::default()).unwrap();
        logout.destroy().unwrap();

        assert!(matches!(logout.save(), Err(Error::SessionGone { id: gone }) if gone == id));
        slow.name = "late write".into();
        assert!(matches!(slow.save(), Err(Error::SessionGone { .. })));
        assert!(matches!(slow.save(), Err(Error::SessionGone { .. })));
        assert!(matches!(
            slow.update(|s| s.n += 1),
            Err(Error::SessionGone { .. })
        ));
        assert!(matches!(slow.load(), Err(Error::SessionGone { .. })));
        assert!(!archive.has_domain(&id).unwrap());
        assert!(session_domains(&**archive).is_empty());
    }

    pub fn destroy_is_idempotent_and_works_on_new_sessions(archive: &Arc<dyn Archive>) {
        let sessions = Sessions::new(Arc::clone(archive));
        let mut fresh = sessions.start(None, State::default()).unwrap();
        fresh.destroy().unwrap();
        fresh.destroy().unwrap();
        assert!(matches!(fresh.save(), Err(Error::SessionGone { .. })));
        assert!(domains(&**archive).is_empty());
    }

    pub fn regenerate_moves_the_state_to_a_fresh_id(archive: &Arc<dyn Archive>) {
        let sessions = Sessions::new(Arc::clone(archive));
        let old = saved(&sessions, "user");
        let mut session = sessions.start(Some(&old), State::default()).unwrap();
        session.n = 7; // unsaved changes move too
        session.regenerate().unwrap();
        let new = session.id().to_string();
        assert_ne!(new, old);
        assert!(!archive.has_domain(&old).unwrap());
        assert_eq!(session_domains(&**archive), BTreeSet::from([new.clone()]));

        let resumed = sessions.start(Some(&new), State::default()).unwrap();
        assert_eq!((resumed.name.as_str(), resumed.n), ("user", 7));
        assert!(
            sessions
                .start(Some(&old), State::default())
                .unwrap()
                .is_new()
        );
        session.n = 8;
        session.save().unwrap();
        assert_eq!(sessions.start(Some(&new), State::default()).unwrap().n, 8);
    }

    pub fn regenerate_of_a_new_session_stores_it_under_a_fresh_id(archive: &Arc<dyn Archive>) {
        let sessions = Sessions::new(Arc::clone(archive));
        // A first visit that logs in: the client's (unknown) id is never used.
        let planted = SessionId::generate();
        let mut session = sessions
            .start(Some(planted.as_str()), State::default())
            .unwrap();
        session.name = "alice".into();
        session.regenerate().unwrap();
        assert_ne!(session.id(), &planted);
        assert!(!session.is_new());
        assert_eq!(session.cookie_action(), CookieAction::Set);
        let id = session.id().as_str().to_owned();
        assert_eq!(
            sessions.start(Some(&id), State::default()).unwrap().name,
            "alice"
        );
        assert_eq!(
            session_domains(&**archive).len(),
            1,
            "one session, under the new id"
        );
        let replayed = sessions
            .start(Some(planted.as_str()), State::default())
            .unwrap();
        assert!(replayed.is_new(), "nothing is stored under the planted id");
    }

    pub fn regenerate_of_a_destroyed_session_is_an_error(archive: &Arc<dyn Archive>) {
        let sessions = Sessions::new(Arc::clone(archive));
        let id = saved(&sessions, "user");
        let mut elsewhere = sessions.start(Some(&id), State::default()).unwrap();
        let mut here = sessions.start(Some(&id), State::default()).unwrap();
        here.destroy().unwrap();
        assert!(matches!(here.regenerate(), Err(Error::SessionGone { .. })));
        assert!(matches!(
            elsewhere.regenerate(),
            Err(Error::SessionGone { .. })
        ));
        assert!(session_domains(&**archive).is_empty());
    }

    pub fn regenerate_failure_leaves_the_old_session_intact(archive: &Arc<dyn Archive>) {
        let spy = Arc::new(Spy::default());
        let sessions = Sessions::new(spy.wrap(archive));
        let id = saved(&sessions, "user");
        let mut session = sessions.start(Some(&id), State::default()).unwrap();
        spy.fail_creates.store(true, Ordering::SeqCst);
        assert!(matches!(session.regenerate(), Err(Error::Backend { .. })));
        spy.fail_creates.store(false, Ordering::SeqCst);
        assert_eq!(session.id().as_str(), id);
        assert_eq!(session_domains(&**archive), BTreeSet::from([id.clone()]));
        session.n = 1;
        session.save().unwrap();
        let stored = sessions.start(Some(&id), State::default()).unwrap();
        assert_eq!((stored.name.as_str(), stored.n), ("user", 1));
    }

    pub fn regenerate_racing_a_destroy_leaves_the_session_destroyed(archive: &Arc<dyn Archive>) {
        let spy = Arc::new(Spy::default());
        let sessions = Sessions::new(spy.wrap(archive));
        let id = saved(&sessions, "user");
        let mut session = sessions.start(Some(&id), State::default()).unwrap();
        // Another request's logout lands while regenerate creates the new id.
        *spy.destroy_on_create.lock().unwrap() = Some(id.clone());
        let result = session.regenerate();
        assert!(
            matches!(&result, Err(Error::SessionGone { id: gone }) if *gone == id),
            "{result:?}"
        );
        assert!(
            spy.destroy_on_create.lock().unwrap().is_none(),
            "no destroy ran"
        );
        assert!(session_domains(&**archive).is_empty());
        assert!(matches!(session.save(), Err(Error::SessionGone { .. })));
        assert!(session_domains(&**archive).is_empty());
    }

    pub fn failed_create_leaves_nothing_stored(archive: &Arc<dyn Archive>) {
        let spy = Arc::new(Spy::default());
        let sessions = Sessions::new(spy.wrap(archive));
        let mut session = sessions.start(None, State::default()).unwrap();
        spy.fail_creates.store(true, Ordering::SeqCst);
        assert!(matches!(session.save(), Err(Error::Backend { .. })));
        assert!(session.is_new());
        assert!(session_domains(&**archive).is_empty());
        spy.fail_creates.store(false, Ordering::SeqCst);
        session.save().unwrap();
        assert_eq!(
            session_domains(&**archive),
            BTreeSet::from([session.id().to_string()])
        );
    }

    pub fn update_returns_the_closure_value_and_creates_new_sessions(archive: &Arc<dyn Archive>) {
        let sessions = Sessions::new(Arc::clone(archive));
        let mut session = sessions.start(None, State::default()).unwrap();
        session.name = "new".into();
        let n = session
            .update(|s| {
                s.n += 2;
                s.n
            })
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(session.n, 2);
        let id = session.id().to_string();
        let stored = sessions.start(Some(&id), State::default()).unwrap();
        assert_eq!((stored.name.as_str(), stored.n), ("new", 2));

        let mut other = sessions.start(None, State::default()).unwrap();
        let n = other
            .update_send(|s| {
                s.n += 3;
                s.n
            })
            .unwrap();
        assert_eq!((n, other.n), (3, 3));
        let stored = sessions.start(Some(other.id().as_str()), State::default());
        assert_eq!(stored.unwrap().n, 3);
    }

    /// A change that panics writes nothing, and the panic reaches the caller.
    pub fn update_send_that_panics_writes_nothing(archive: &Arc<dyn Archive>) {
        let sessions = Sessions::new(Arc::clone(archive));
        let id = saved(&sessions, "before");
        let before = state_bytes(&**archive, &id).unwrap();
        let mut session = sessions.start(Some(&id), State::default()).unwrap();
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            session.update_send(|s| {
                s.name = "never stored".into();
                panic!("a change that panics")
            })
        }));
        assert!(unwound.is_err());
        assert_eq!(state_bytes(&**archive, &id).unwrap(), before);
        let mut again = sessions.start(Some(&id), State::default()).unwrap();
        assert_eq!(again.update_send(|s| s.n += 1).unwrap(), ());
        assert_eq!(again.name, "before");
    }

    pub fn concurrent_updates_lose_nothing(archive: &Arc<dyn Archive>) {
        const THREADS: u64 = 16;
        const ROUNDS: u64 = 4;
        let sessions = Sessions::new(Arc::clone(archive));
        let id = saved(&sessions, "counter");
        // Half the threads use `update`, half `update_send`, which on redb runs in the commit:
        // the two kinds meet on one session. Each update answers the count it stored.
        let counts = std::sync::Mutex::new(BTreeSet::new());
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let sessions = sessions.clone();
                let (id, counts) = (id.clone(), &counts);
                scope.spawn(move || {
                    for _ in 0..ROUNDS {
                        let mut session =
                            sessions.start(Some(&id), State::default()).expect("start");
                        assert_eq!(session.id().as_str(), id);
                        let count = |s: &mut State| {
                            s.n += 1;
                            s.n
                        };
                        let n = if thread % 2 == 0 {
                            session.update(count)
                        } else {
                            session.update_send(count)
                        };
                        let n = n.expect("update");
                        assert!(counts.lock().expect("counts").insert(n), "{n} twice");
                    }
                });
            }
        });
        let counts = counts.into_inner().expect("counts");
        assert_eq!(counts, (1..=THREADS * ROUNDS).collect::<BTreeSet<_>>());
        let session = sessions.start(Some(&id), State::default()).unwrap();
        assert_eq!(session.n, THREADS * ROUNDS);
        assert_eq!(session.name, "counter");
    }

    pub fn concurrent_saves_on_one_session_leave_one_whole_state(archive: &Arc<dyn Archive>) {
        let sessions = Sessions::new(Arc::clone(archive));
        let id = saved(&sessions, "start");
        std::thread::scope(|scope| {
            for t in 0..8_u64 {
                let sessions = sessions.clone();
                let id = id.clone();
                scope.spawn(move || {
                    let mut session = sessions.start(Some(&id), State::default()).expect("start");
                    session.name = format!("writer {t}");
                    session.n = t;
                    session.save().expect("save");
                });
            }
        });
        let session = sessions.start(Some(&id), State::default()).unwrap();
        assert_eq!(session.name, format!("writer {}", session.n));
    }

    pub fn corrupt_state_is_an_error_and_left_untouched(archive: &Arc<dyn Archive>) {
        let sessions = Sessions::new(Arc::clone(archive));
        let id = saved(&sessions, "fine");
        let mut handle = sessions.start(Some(&id), State::default()).unwrap();
        let corrupts: [&[u8]; 4] = [b"{not json", br#"{"Name": 42}"#, b"", &[0xff, 0xfe]];
        for corrupt in corrupts {
            archive.set(&id, STATE_KEY, corrupt).unwrap();
            match sessions.start(Some(&id), State::default()) {
                Err(err @ Error::CorruptSession { .. }) => {
                    let fingerprint = SessionId::parse(&id).unwrap().fingerprint();
                    assert!(err.to_string().contains(&fingerprint), "{err}");
                    assert!(!err.to_string().contains(&id), "{err}");
                    assert!(!format!("{err:?}").contains(&id), "{err:?}");
                    assert!(std::error::Error::source(&err).is_some());
                }
                other => panic!("expected CorruptSession, got {other:?}"),
            }
            assert!(
                matches!(handle.load(), Err(Error::CorruptSession { id: bad, .. }) if bad == id)
            );
            assert!(matches!(
                handle.update(|s| s.n += 1),
                Err(Error::CorruptSession { .. })
            ));
            assert!(matches!(
                handle.update_send(|s| s.n += 1),
                Err(Error::CorruptSession { .. })
            ));
            assert_eq!(state_bytes(&**archive, &id).unwrap(), corrupt);
            assert_eq!(handle.name, "fine");
        }
    }

    pub fn corrupt_state_can_start_fresh_and_is_set_aside(archive: &Arc<dyn Archive>) {
        let sessions = Sessions::builder(Arc::clone(archive))
            .on_corrupt(OnCorrupt::StartFresh)
            .build();
        let keep = saved(&sessions, "fine");
        let id = saved(&sessions, "doomed");
        archive.set(&id, STATE_KEY, br#"{"Name": 42}"#).unwrap();

        let fresh = sessions.start(Some(&id), State::default()).unwrap();
        assert!(fresh.is_new());
        assert_ne!(fresh.id().as_str(), id);
        assert_eq!(fresh.name, "");
        // The id is retired: it does not come back, even with the default policy.
        assert!(!archive.has_domain(&id).unwrap());
        assert!(
            Sessions::new(Arc::clone(archive))
                .start(Some(&id), State::default())
                .unwrap()
                .is_new()
        );
        // The bytes are set aside for the operator, under a key naming the session's fingerprint.
        let aside: Vec<String> = archive.keys(CORRUPT_DOMAIN).map(Result::unwrap).collect();
        assert_eq!(aside.len(), 1);
        let fingerprint = SessionId::parse(&id).unwrap().fingerprint();
        assert!(aside[0].ends_with(&fingerprint[1..]), "{aside:?}");
        assert_eq!(
            archive.get(CORRUPT_DOMAIN, &aside[0]).unwrap().unwrap(),
            br#"{"Name": 42}"#
        );
        // Other sessions are untouched, and a sweep leaves the set-aside copy alone.
        assert_eq!(
            sessions.start(Some(&keep), State::default()).unwrap().name,
            "fine"
        );
        sessions.sweep().unwrap();
        assert!(archive.has_domain(CORRUPT_DOMAIN).unwrap());
    }

    pub fn sessions_per_user_are_listed_rebound_and_revoked(archive: &Arc<dyn Archive>) {
        let clock = clock();
        let sessions = expiring(archive, &clock, 3600);
        let listed = |user: &str| -> BTreeSet<String> {
            sessions
                .user_sessions(user)
                .map(|s| s.expect("list").id().to_string())
                .collect()
        };
        // Any string is a user id: it never becomes a storage name as it is.
        let alice = "alice/../../etc\u{0}\n.";
        let mut ids = Vec::new();
        for _ in 0..3 {
            let mut session = sessions.start(None, State::default()).unwrap();
            session.set_user(Some(alice));
            session.save().unwrap();
            assert_eq!(session.user(), Some(alice));
            ids.push(session.id().to_string());
        }
        assert_eq!(listed(alice), ids.iter().cloned().collect());
        assert!(listed("bob").is_empty());
        for domain in domains(&**archive) {
            assert!(!domain.contains("alice"), "{domain}");
        }
        // The binding is read back on start.
        let mut moved = sessions.start(Some(&ids[0]), State::default()).unwrap();
        assert_eq!(moved.user(), Some(alice));
        // Rebinding moves the entry; regenerate moves it with the session.
        moved.set_user(Some("bob"));
        moved.save().unwrap();
        assert_eq!(listed("bob"), BTreeSet::from([ids[0].clone()]));
        assert_eq!(listed(alice), ids[1..].iter().cloned().collect());
        moved.regenerate().unwrap();
        assert_eq!(listed("bob"), BTreeSet::from([moved.id().to_string()]));
        // Invalid user ids write nothing.
        let mut bad = sessions.start(Some(&ids[1]), State::default()).unwrap();
        bad.set_user(Some(""));
        bad.name = "never stored".into();
        assert!(matches!(bad.save(), Err(Error::InvalidUser { len: 0 })));
        bad.set_user(Some(&"x".repeat(1025)));
        assert!(matches!(
            bad.update(|s| s.n += 1),
            Err(Error::InvalidUser { len: 1025 })
        ));
        assert!(matches!(bad.regenerate(), Err(Error::InvalidUser { .. })));
        assert_eq!(
            sessions.start(Some(&ids[1]), State::default()).unwrap().n,
            0
        );
        assert!(sessions.user_sessions("").next().unwrap().is_err());
        // Revoking keeps one on request, then takes the rest; other users are untouched.
        let keep = SessionId::parse(&ids[1]).unwrap();
        assert_eq!(sessions.revoke_user_except(alice, &keep).unwrap(), 1);
        assert_eq!(listed(alice), BTreeSet::from([ids[1].clone()]));
        assert!(
            sessions
                .start(Some(&ids[2]), State::default())
                .unwrap()
                .is_new()
        );
        assert_eq!(sessions.revoke_user(alice).unwrap(), 1);
        assert!(listed(alice).is_empty());
        assert_eq!(sessions.revoke_user(alice).unwrap(), 0);
        assert_eq!(listed("bob"), BTreeSet::from([moved.id().to_string()]));
        // Expiry and the sweep take the entries with the sessions.
        clock.advance(Duration::from_secs(3601));
        assert!(listed("bob").is_empty());
        assert_eq!(sessions.sweep().unwrap(), 1);
        assert!(
            domains(&**archive)
                .iter()
                .all(|d| !d.starts_with("user-") || archive.keys(d).next().is_none()),
            "{:?}",
            domains(&**archive)
        );
    }

    pub fn state_over_the_limit_writes_nothing(archive: &Arc<dyn Archive>) {
        let sessions = Sessions::builder(Arc::clone(archive))
            .max_state_size(64)
            .build();
        let mut big = sessions.start(None, State::default()).unwrap();
        big.name = "x".repeat(100);
        match big.save() {
            Err(Error::StateTooLarge { size, limit, .. }) => {
                assert_eq!(limit, 64);
                assert!(size > 64);
            }
            other => panic!("expected StateTooLarge, got {other:?}"),
        }
        assert!(domains(&**archive).is_empty());

        let id = saved(&sessions, "small");
        let before = state_bytes(&**archive, &id).unwrap();
        let mut session = sessions.start(Some(&id), State::default()).unwrap();
        session.name = "y".repeat(100);
        assert!(matches!(session.save(), Err(Error::StateTooLarge { .. })));
        assert!(matches!(
            session.update(|s| s.name = "z".repeat(100)),
            Err(Error::StateTooLarge { .. })
        ));
        assert!(matches!(
            session.update_send(|s| s.name = "z".repeat(100)),
            Err(Error::StateTooLarge { .. })
        ));
        assert!(matches!(
            session.regenerate(),
            Err(Error::StateTooLarge { .. })
        ));
        assert_eq!(state_bytes(&**archive, &id).unwrap(), before);
        assert_eq!(session_domains(&**archive), BTreeSet::from([id]));

        // Exactly at the limit is allowed.
        let exact = Sessions::builder(Arc::clone(archive))
            .max_state_size(br#"{"Name":"abc","n":0}"#.len())
            .build();
        saved(&exact, "abc");
    }

    pub fn idle_timeout_expires_unused_sessions(archive: &Arc<dyn Archive>) {
        let clock = clock();
        let sessions = expiring(archive, &clock, 800);
        let id = saved(&sessions, "user");
        for _ in 0..5 {
            clock.advance(Duration::from_secs(799));
            let session = sessions.start(Some(&id), State::default()).unwrap();
            assert_eq!(session.id().as_str(), id, "an active session expired");
        }
        clock.advance(Duration::from_secs(800));
        let session = sessions.start(Some(&id), State::default()).unwrap();
        assert_ne!(session.id().as_str(), id);
        assert!(session.is_new());
    }

    pub fn absolute_lifetime_expires_active_sessions(archive: &Arc<dyn Archive>) {
        let clock = clock();
        let sessions = Sessions::builder(Arc::clone(archive))
            .idle_timeout(Duration::from_secs(100))
            .absolute_lifetime(Duration::from_secs(1000))
            .clock(clock.clone())
            .build();
        let id = saved(&sessions, "user");
        let mut session = sessions.start(Some(&id), State::default()).unwrap();
        for _ in 0..9 {
            clock.advance(Duration::from_secs(99));
            session.regenerate().unwrap(); // keeps the creation time
            session.update(|s| s.n += 1).unwrap();
        }
        let id = session.id().to_string();
        assert_eq!(sessions.start(Some(&id), State::default()).unwrap().n, 9);
        // Now at 891 s; stay active until the last second of the lifetime.
        for step in [99, 9] {
            clock.advance(Duration::from_secs(step));
            let session = sessions.start(Some(&id), State::default()).unwrap();
            assert_eq!(session.id().as_str(), id);
        }
        clock.advance(Duration::from_secs(1));
        assert!(
            sessions
                .start(Some(&id), State::default())
                .unwrap()
                .is_new()
        );
    }

    pub fn reads_refresh_last_seen_only_when_it_has_aged(archive: &Arc<dyn Archive>) {
        let clock = clock();
        let t0 = unix_secs(clock.now());
        let sessions = expiring(archive, &clock, 800); // refresh after 800 / 8 = 100 s
        let id = saved(&sessions, "user");
        let meta = |archive: &dyn Archive| archive.get(&id, META_KEY).unwrap().unwrap();
        let first = meta(&**archive);
        clock.advance(Duration::from_secs(100));
        sessions.start(Some(&id), State::default()).unwrap();
        assert_eq!(
            meta(&**archive),
            first,
            "a young session was rewritten on read"
        );
        clock.advance(Duration::from_secs(1));
        sessions.start(Some(&id), State::default()).unwrap();
        let second = meta(&**archive);
        assert_ne!(second, first);
        let seen =
            |raw: &[u8]| serde_json::from_slice::<serde_json::Value>(raw).unwrap()["seen"].clone();
        assert_eq!(seen(&second), t0 + 101);
        assert_eq!(seen(&first), t0);
    }

    pub fn start_without_writing_writes_nothing_and_agrees_with_start(archive: &Arc<dyn Archive>) {
        let writes = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&writes);
        let hooked = Hooked::new(Arc::clone(archive), move |call| {
            if call.is_write() {
                log.lock().unwrap().push(format!("{call:?}"));
            }
            Ok(())
        });
        let clock = clock();
        let sessions = Sessions::builder(hooked)
            .idle_timeout(Duration::from_secs(800)) // last seen rewritten after 100 s
            .absolute_lifetime(None)
            .clock(clock.clone())
            .build();
        let id = saved(&sessions, "user");
        let without_writing = |id: Option<&str>| {
            let before = writes.lock().unwrap().len();
            let started = sessions
                .start_without_writing(id, State::default())
                .expect("start without writing");
            assert_eq!(writes.lock().unwrap()[before..], [] as [String; 0]);
            started
        };

        // Young enough: the stored session, as `start` gives it, and its cookie is kept.
        let session = without_writing(Some(&id)).expect("no write is due");
        assert_eq!(
            (session.id().as_str(), session.name.as_str()),
            (id.as_str(), "user")
        );
        assert_eq!(session.cookie_action(), session_archive::CookieAction::Keep);
        // Missing, malformed or unknown: a new session, as `start` gives it.
        let unknown = SessionId::generate().to_string();
        for other in [None, Some("../etc"), Some(unknown.as_str())] {
            let fresh = without_writing(other).expect("a new session writes nothing");
            assert!(fresh.is_new());
            assert_ne!(fresh.id().as_str(), unknown);
        }

        // Due for a last-seen rewrite: it hands the state back, and `start` writes.
        clock.advance(Duration::from_secs(101));
        let initial = without_writing(Some(&id)).expect_err("a last-seen rewrite is due");
        assert_eq!(initial, State::default());
        let before = writes.lock().unwrap().len();
        let session = sessions.start(Some(&id), State::default()).unwrap();
        assert_eq!(session.id().as_str(), id);
        assert!(
            writes.lock().unwrap().len() > before,
            "start rewrote last seen"
        );
        assert!(without_writing(Some(&id)).is_ok(), "rewritten just now");

        // Expired: it hands the state back, and `start` removes the session.
        clock.advance(Duration::from_secs(800));
        assert!(without_writing(Some(&id)).is_err());
        assert!(archive.has_domain(&id).unwrap(), "nothing was removed");
        assert!(
            sessions
                .start(Some(&id), State::default())
                .unwrap()
                .is_new()
        );
        assert!(!archive.has_domain(&id).unwrap());

        // Stored without timestamps (the original framework's): adopting it writes them.
        archive
            .set(SEED_ID, STATE_KEY, br#"{"Name":"world"}"#)
            .unwrap();
        assert!(without_writing(Some(SEED_ID)).is_err());
        assert!(archive.get(SEED_ID, META_KEY).unwrap().is_none());
        assert_eq!(
            sessions
                .start(Some(SEED_ID), State::default())
                .unwrap()
                .name,
            "world"
        );
    }

    pub fn expired_sessions_are_removed_on_start(archive: &Arc<dyn Archive>) {
        let clock = clock();
        let sessions = expiring(archive, &clock, 100);
        let id = saved(&sessions, "user");
        clock.advance(Duration::from_secs(100));
        assert!(
            sessions
                .start(Some(&id), State::default())
                .unwrap()
                .is_new()
        );
        assert!(!archive.has_domain(&id).unwrap());
    }

    pub fn sweep_removes_expired_and_leaves_live_sessions(archive: &Arc<dyn Archive>) {
        let clock = clock();
        let sessions = expiring(archive, &clock, 600);
        let old: Vec<String> = (0..5)
            .map(|i| saved(&sessions, &format!("old {i}")))
            .collect();
        clock.advance(Duration::from_secs(300));
        let live: Vec<String> = (0..3)
            .map(|i| saved(&sessions, &format!("live {i}")))
            .collect();
        // Sweep must not parse live state: this one would fail to decode.
        archive.set(&live[0], STATE_KEY, b"{corrupt").unwrap();
        assert_eq!(sessions.sweep().unwrap(), 0);
        clock.advance(Duration::from_secs(300));
        assert_eq!(sessions.sweep().unwrap(), 5);
        assert_eq!(sessions.sweep().unwrap(), 0);
        for id in &old {
            assert!(!archive.has_domain(id).unwrap());
        }
        assert_eq!(
            session_domains(&**archive),
            live.iter().cloned().collect::<BTreeSet<_>>()
        );
        assert_eq!(state_bytes(&**archive, &live[0]).unwrap(), b"{corrupt");
        assert_eq!(
            sessions
                .start(Some(&live[1]), State::default())
                .unwrap()
                .name,
            "live 1"
        );
        clock.advance(Duration::from_secs(600));
        assert_eq!(sessions.sweep().unwrap(), 3);
        assert!(session_domains(&**archive).is_empty());
        let leftovers: Vec<String> = domains(&**archive)
            .into_iter()
            .filter(|d| d.starts_with("expiry-"))
            .collect();
        assert!(leftovers.is_empty(), "index entries left: {leftovers:?}");
    }

    pub fn sweep_pages_through_a_bucket_larger_than_a_page(archive: &Arc<dyn Archive>) {
        let clock = clock();
        let sessions = expiring(archive, &clock, 600);
        // All in one bucket, more than one listing page of it, removed a page at a time.
        let expired = DEFAULT_PAGE_SIZE + 76;
        let ids: BTreeSet<String> = (0..expired).map(|_| saved(&sessions, "old")).collect();
        clock.advance(Duration::from_secs(300));
        let live = saved(&sessions, "live");
        clock.advance(Duration::from_secs(300));
        assert_eq!(sessions.sweep().unwrap(), expired);
        assert_eq!(session_domains(&**archive), BTreeSet::from([live.clone()]));
        assert!(ids.iter().all(|id| !archive.has_domain(id).unwrap()));
        clock.advance(Duration::from_secs(600));
        assert_eq!(sessions.sweep().unwrap(), 1);
        assert!(
            domains(&**archive)
                .iter()
                .all(|d| !d.starts_with("expiry-"))
        );
    }

    pub fn sweep_reads_only_expired_sessions_metadata(archive: &Arc<dyn Archive>) {
        let spy = Arc::new(Spy::default());
        let clock = clock();
        let sessions = expiring(&spy.wrap(archive), &clock, 600);
        let expired: BTreeSet<String> = (0..3).map(|_| saved(&sessions, "old")).collect();
        clock.advance(Duration::from_secs(3600));
        for _ in 0..50 {
            saved(&sessions, "live");
        }
        spy.reads.lock().expect("spy lock").clear();
        assert_eq!(sessions.sweep().unwrap(), 3);
        let reads = spy.reads.lock().expect("spy lock").clone();
        assert!(reads.iter().all(|(_, key)| key != STATE_KEY), "{reads:?}");
        let meta_reads: BTreeSet<String> = reads
            .iter()
            .filter(|(_, key)| key == META_KEY)
            .map(|(domain, _)| domain.clone())
            .collect();
        assert_eq!(meta_reads, expired);
    }

    pub fn sweep_drops_stale_index_entries(archive: &Arc<dyn Archive>) {
        let clock = clock();
        let sessions = expiring(archive, &clock, 800);
        let id = saved(&sessions, "user");
        clock.advance(Duration::from_secs(700));
        sessions.start(Some(&id), State::default()).unwrap(); // moves its expiry to t0 + 1500
        clock.advance(Duration::from_secs(200));
        assert_eq!(sessions.sweep().unwrap(), 0);
        assert!(archive.has_domain(&id).unwrap());
        let index_entries = |archive: &dyn Archive| {
            domains(archive)
                .into_iter()
                .filter(|d| d.starts_with("expiry-"))
                .flat_map(|d| archive.keys(&d).collect::<Result<Vec<_>>>().expect("keys"))
                .count()
        };
        assert_eq!(index_entries(&**archive), 1, "the stale entry was kept");
        clock.advance(Duration::from_secs(600));
        assert_eq!(sessions.sweep().unwrap(), 1);
        assert!(!archive.has_domain(&id).unwrap());
        assert_eq!(index_entries(&**archive), 0);
    }

    pub fn failed_index_write_on_a_first_save_leaves_nothing_unswept(archive: &Arc<dyn Archive>) {
        let spy = Arc::new(Spy::default());
        let shared = spy.wrap(archive);
        let clock = clock();
        let sessions = expiring(&shared, &clock, 600);
        let other = saved(&sessions, "other"); // the sweep cursor exists
        let mut session = sessions.start(None, State::default()).unwrap();
        spy.fail_index_once.store(true, Ordering::SeqCst);
        assert!(matches!(session.save(), Err(Error::Backend { .. })));
        assert!(
            !spy.fail_index_once.load(Ordering::SeqCst),
            "no index write"
        );
        assert_eq!(session_domains(&**archive), BTreeSet::from([other]));
        session.save().unwrap(); // the app retries
        clock.advance(Duration::from_secs(10_000));
        assert_eq!(sessions.sweep().unwrap(), 2);
        assert!(session_domains(&**archive).is_empty());
    }

    pub fn failed_index_write_on_a_refresh_leaves_nothing_unswept(archive: &Arc<dyn Archive>) {
        let spy = Arc::new(Spy::default());
        let shared = spy.wrap(archive);
        let clock = clock();
        let sessions = expiring(&shared, &clock, 600);
        let id = saved(&sessions, "user");
        clock.advance(Duration::from_secs(200)); // old enough to rewrite `seen`
        spy.fail_index_once.store(true, Ordering::SeqCst);
        assert!(matches!(
            sessions.start(Some(&id), State::default()),
            Err(Error::Backend { .. })
        ));
        assert!(
            !spy.fail_index_once.load(Ordering::SeqCst),
            "no index write"
        );
        let again = sessions.start(Some(&id), State::default()).unwrap(); // the app retries
        assert_eq!(again.id().as_str(), id);
        clock.advance(Duration::from_secs(500)); // past the first expiry, before the new one
        assert_eq!(sessions.sweep().unwrap(), 0);
        assert!(archive.has_domain(&id).unwrap());
        clock.advance(Duration::from_secs(10_000));
        assert_eq!(sessions.sweep().unwrap(), 1);
        assert!(session_domains(&**archive).is_empty());
    }

    pub fn sweep_cleans_metadata_left_after_destroy(archive: &Arc<dyn Archive>) {
        let clock = clock();
        let sessions = expiring(archive, &clock, 600);
        let id = saved(&sessions, "user");
        let meta = archive.get(&id, META_KEY).unwrap().unwrap();
        let mut session = sessions.start(Some(&id), State::default()).unwrap();
        session.destroy().unwrap();
        // A concurrent request's late timestamp write, after the destroy.
        archive.set(&id, META_KEY, &meta).unwrap();
        assert!(
            sessions
                .start(Some(&id), State::default())
                .unwrap()
                .is_new()
        );
        assert!(archive.has_domain(&id).unwrap());
        clock.advance(Duration::from_secs(600));
        assert_eq!(sessions.sweep().unwrap(), 1);
        assert!(!archive.has_domain(&id).unwrap());
    }

    pub fn sweep_without_expiry_configured_removes_nothing(archive: &Arc<dyn Archive>) {
        let clock = clock();
        let sessions = Sessions::builder(Arc::clone(archive))
            .idle_timeout(None)
            .absolute_lifetime(None)
            .clock(clock.clone())
            .build();
        let id = saved(&sessions, "forever");
        clock.advance(Duration::from_secs(10 * 365 * 24 * 3600));
        assert_eq!(sessions.sweep().unwrap(), 0);
        assert_eq!(
            sessions.start(Some(&id), State::default()).unwrap().name,
            "forever"
        );
        assert_eq!(domains(&**archive), BTreeSet::from([id]));
    }

    /// `archive` behind a hook that counts listings of keys (one per index bucket a sweep visits)
    /// in `listings`, and fails every one past `limit`, so that a sweep walking a runaway range of
    /// buckets fails at once instead of running for minutes.
    fn counting_listings(
        archive: &Arc<dyn Archive>,
        listings: &Arc<std::sync::atomic::AtomicUsize>,
        limit: usize,
    ) -> Arc<dyn Archive> {
        let listings = Arc::clone(listings);
        Arc::new(Hooked::new(Arc::clone(archive), move |call| {
            if matches!(call, Call::ListKeys { .. })
                && listings.fetch_add(1, Ordering::SeqCst) >= limit
            {
                return Err(Error::Backend {
                    backend: "test",
                    operation: "list more index buckets than a bounded sweep needs",
                    source: "runaway sweep".into(),
                });
            }
            Ok(())
        }))
    }

    /// The ids in every index bucket, with repeats.
    fn indexed(archive: &dyn Archive) -> Vec<String> {
        domains(archive)
            .into_iter()
            .filter(|d| d.starts_with("expiry-"))
            .flat_map(|d| archive.keys(&d).collect::<Result<Vec<_>>>().expect("keys"))
            .collect()
    }

    pub fn sweeps_with_another_granularity_are_bounded_and_complete(archive: &Arc<dyn Archive>) {
        let listings = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = counting_listings(archive, &listings, 10_000);
        let clock = clock();
        let with_width = |secs| {
            Sessions::builder(Arc::clone(&counted))
                .idle_timeout(Duration::from_secs(600))
                .absolute_lifetime(None)
                .sweep_granularity(Duration::from_secs(secs))
                .clock(clock.clone())
                .build()
        };
        // The application indexes first, so its width is the archive's; the other Sessions
        // stands for the `session-archive sweep` tool and its default width.
        let app = with_width(10);
        let tool = with_width(60);
        // Sweeps `sessions` and returns how many it removed and how many buckets it listed.
        let sweep = |sessions: &Sessions| {
            listings.store(0, Ordering::SeqCst);
            let removed = sessions.sweep().unwrap();
            (removed, listings.load(Ordering::SeqCst))
        };
        // A sweep visits the 10 s buckets since the previous sweep, and two more at its ends.
        let bound = |elapsed: usize| elapsed / 10 + 4;

        let first: BTreeSet<String> = (0..5).map(|_| saved(&app, "first")).collect();
        assert_eq!(sweep(&app).0, 0);
        clock.advance(Duration::from_secs(300));
        let mut second: BTreeSet<String> = (0..3).map(|_| saved(&app, "second")).collect();
        second.extend((0..2).map(|_| saved(&tool, "second, by the tool")));
        let (removed, listed) = sweep(&app);
        assert_eq!(removed, 0);
        assert!(listed <= bound(300), "{listed} buckets listed");

        // The tool, after the app: only the buckets since, and every session expired in them.
        clock.advance(Duration::from_secs(301));
        let (removed, listed) = sweep(&tool);
        assert_eq!(removed, first.len());
        assert!(listed <= bound(301), "{listed} buckets listed");
        assert!(first.iter().all(|id| !archive.has_domain(id).unwrap()));
        let live = saved(&app, "live");
        let live_by_tool = saved(&tool, "live, by the tool");

        // The app, after the tool.
        clock.advance(Duration::from_secs(300));
        let (removed, listed) = sweep(&app);
        assert_eq!(removed, second.len());
        assert!(listed <= bound(300), "{listed} buckets listed");
        assert_eq!(
            session_domains(&**archive),
            BTreeSet::from([live.clone(), live_by_tool.clone()])
        );

        clock.advance(Duration::from_secs(300));
        let (removed, listed) = sweep(&tool);
        assert_eq!(removed, 2);
        assert!(listed <= bound(300), "{listed} buckets listed");
        assert!(session_domains(&**archive).is_empty());
        assert!(indexed(&**archive).is_empty(), "{:?}", indexed(&**archive));
        let stored = tool.stored_settings().unwrap().expect("recorded");
        assert_eq!(stored.sweep_granularity, Duration::from_secs(10));
    }

    pub fn a_removed_sweep_cursor_is_written_again(archive: &Arc<dyn Archive>) {
        let clock = clock();
        let sessions = expiring(archive, &clock, 600);
        let before = saved(&sessions, "before");
        assert_eq!(sessions.sweep().unwrap(), 0);

        // Removed by hand, or evicted. The same process goes on, without a restart: its next
        // sweep writes the cursor again.
        assert!(archive.remove_domain("sweep-cursor").unwrap());
        assert_eq!(sessions.sweep().unwrap(), 0);
        assert!(archive.has_domain("sweep-cursor").unwrap());
        clock.advance(Duration::from_secs(10));
        let after = saved(&sessions, "after");

        // Removed again: this time the first to notice is an index write.
        assert!(archive.remove_domain("sweep-cursor").unwrap());
        clock.advance(Duration::from_secs(10));
        let later = saved(&sessions, "later");
        assert!(archive.has_domain("sweep-cursor").unwrap());

        clock.advance(Duration::from_secs(300));
        let live = saved(&sessions, "live");
        clock.advance(Duration::from_secs(301)); // 621 s after `before`: three have expired
        assert_eq!(sessions.sweep().unwrap(), 3);
        for id in [&before, &after, &later] {
            assert!(!archive.has_domain(id).unwrap());
        }
        assert_eq!(session_domains(&**archive), BTreeSet::from([live.clone()]));
        clock.advance(Duration::from_secs(300));
        assert_eq!(sessions.sweep().unwrap(), 1);

        // A process that has never seen the cursor does not know the index's width, so it does
        // not guess one: its sweep finds nothing to walk, and writes nothing.
        assert!(archive.remove_domain("sweep-cursor").unwrap());
        assert_eq!(expiring(archive, &clock, 600).sweep().unwrap(), 0);
        assert!(!archive.has_domain("sweep-cursor").unwrap());
    }

    pub fn an_entry_written_into_a_swept_bucket_is_still_swept(archive: &Arc<dyn Archive>) {
        // The writer's clock lags the sweeper's by 20 minutes. (The sweeper's is the one ahead of
        // the real time, so that a backend with native expiry keeps the writer's session.)
        let lagging = clock();
        let clock = ManualClock::new(lagging.now() + Duration::from_secs(1200));
        let sweeper = expiring(archive, &clock, 600);
        let writer = expiring(archive, &lagging, 600);
        let live = saved(&sweeper, "live");
        assert_eq!(sweeper.sweep().unwrap(), 0);

        // By its own clock, the writer saves a session that expires in 600 s; by the sweeper's,
        // it expired 600 s ago, in a bucket the sweep has passed.
        let late = saved(&writer, "late");
        clock.advance(Duration::from_secs(60));
        lagging.advance(Duration::from_secs(60));
        assert_eq!(sweeper.sweep().unwrap(), 1);
        assert!(!archive.has_domain(&late).unwrap());
        assert_eq!(session_domains(&**archive), BTreeSet::from([live.clone()]));
        // Nothing is left in a bucket no sweep visits again.
        assert_eq!(indexed(&**archive), [live]);
    }

    pub fn adopt_legacy_gives_unstamped_sessions_timestamps_from_now(archive: &Arc<dyn Archive>) {
        let clock = clock();
        let sessions = expiring(archive, &clock, 600);
        let stamped = saved(&sessions, "stamped");
        // As the original framework left them: a state and no timestamps. Adoption never reads
        // the state, so one that does not even parse is adopted too.
        let legacy: Vec<String> = (0..3)
            .map(|i| {
                let id = SessionId::generate().to_string();
                let state = format!(r#"{{"Name":"legacy {i}"}}"#);
                archive.set(&id, STATE_KEY, state.as_bytes()).unwrap();
                id
            })
            .collect();
        archive.set(&legacy[2], STATE_KEY, b"{corrupt").unwrap();
        let states: Vec<Vec<u8>> = legacy
            .iter()
            .map(|id| state_bytes(&**archive, id).unwrap())
            .collect();
        // Without timestamps nothing indexes them: the sweep leaves them for ever.
        clock.advance(Duration::from_secs(10_000));
        assert_eq!(sessions.sweep().unwrap(), 1);
        assert!(!archive.has_domain(&stamped).unwrap());

        let mut progress = Vec::new();
        assert_eq!(
            sessions
                .adopt_legacy(|scanned| progress.push(scanned))
                .unwrap(),
            3
        );
        assert!(
            progress.last().is_some_and(|&scanned| scanned >= 3),
            "{progress:?}"
        );
        let now = unix_secs(clock.now());
        for (id, state) in legacy.iter().zip(&states) {
            let meta: serde_json::Value =
                serde_json::from_slice(&archive.get(id, META_KEY).unwrap().unwrap()).unwrap();
            assert_eq!(meta, serde_json::json!({ "created": now, "seen": now }));
            assert_eq!(&state_bytes(&**archive, id).unwrap(), state);
        }
        assert_eq!(indexed(&**archive).len(), 3);
        assert_eq!(sessions.adopt_legacy(|_| {}).unwrap(), 0);

        // Used meanwhile, one lives on; the others expire after the idle timeout.
        clock.advance(Duration::from_secs(300));
        assert_eq!(
            sessions
                .start(Some(&legacy[0]), State::default())
                .unwrap()
                .name,
            "legacy 0"
        );
        clock.advance(Duration::from_secs(300));
        assert_eq!(sessions.sweep().unwrap(), 2);
        assert_eq!(
            session_domains(&**archive),
            BTreeSet::from([legacy[0].clone()])
        );
    }

    pub fn adopt_legacy_never_overwrites_timestamps_written_meanwhile(archive: &Arc<dyn Archive>) {
        let clock = clock();
        let id = SessionId::generate().to_string();
        archive
            .set(&id, STATE_KEY, br#"{"Name":"legacy"}"#)
            .unwrap();
        let now = unix_secs(clock.now());
        let theirs = format!(r#"{{"created":{},"seen":{now}}}"#, now - 5).into_bytes();
        // A request stamps the session between the scan's read and its compare-and-swap; the hook
        // also notes whether the index entry was already written by then.
        let indexed_first = Arc::new(AtomicBool::new(false));
        let hooked: Arc<dyn Archive> = {
            let (inner, id, theirs) = (Arc::clone(archive), id.clone(), theirs.clone());
            let indexed_first = Arc::clone(&indexed_first);
            Arc::new(Hooked::new(Arc::clone(archive), move |call| {
                if let Call::CompareAndSwap {
                    domain,
                    key: META_KEY,
                    expected: None,
                    ..
                } = *call
                    && domain == id
                {
                    indexed_first.store(indexed(&*inner).contains(&id), Ordering::SeqCst);
                    inner.set(domain, META_KEY, &theirs)?;
                }
                Ok(())
            }))
        };
        let sessions = expiring(&hooked, &clock, 600);
        assert_eq!(sessions.adopt_legacy(|_| {}).unwrap(), 0);
        assert!(
            indexed_first.load(Ordering::SeqCst),
            "timestamps before the index entry"
        );
        assert_eq!(archive.get(&id, META_KEY).unwrap(), Some(theirs));
        assert_eq!(
            state_bytes(&**archive, &id).unwrap(),
            br#"{"Name":"legacy"}"#
        );
    }

    pub fn saves_ask_the_backend_to_expire_the_domain(archive: &Arc<dyn Archive>) {
        let spy = Arc::new(Spy::default());
        let clock = clock();
        let t0 = unix_secs(clock.now());
        let sessions = expiring(&spy.wrap(archive), &clock, 600);
        let id = saved(&sessions, "user");
        let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let of_domain = |domain: &str| -> Vec<SystemTime> {
            let expiries = spy.expiries.lock().expect("spy lock");
            expiries
                .iter()
                .filter(|(d, _)| d == domain)
                .map(|(_, at)| *at)
                .collect()
        };
        assert_eq!(of_domain(&id), [at(t0 + 600)]);
        // The index bucket holding the session expires a week after the bucket ends, so an app
        // on a backend with native expiry that never sweeps does not grow its index forever.
        let bucket_domains: Vec<String> = spy
            .expiries
            .lock()
            .expect("spy lock")
            .iter()
            .map(|(d, _)| d.clone())
            .filter(|d| d.starts_with("expiry-"))
            .collect();
        assert_eq!(bucket_domains.len(), 1, "{bucket_domains:?}");
        let bucket_expiry = of_domain(&bucket_domains[0]);
        let week = 7 * 24 * 3600;
        assert_eq!(bucket_expiry.len(), 1);
        assert!(bucket_expiry[0] > at(t0 + 600 + week));
        assert!(bucket_expiry[0] <= at(t0 + 600 + week + 60));

        // A write keeps the domain's expiry, so an update with no touch due asks nothing more.
        clock.advance(Duration::from_secs(10));
        let mut session = sessions.start(Some(&id), State::default()).unwrap();
        session.update(|s| s.n += 1).unwrap();
        assert_eq!(of_domain(&id), [at(t0 + 600)]);
        // A touch moves `last seen`, and asks for the later expiry.
        clock.advance(Duration::from_secs(290));
        let mut session = sessions.start(Some(&id), State::default()).unwrap();
        session.update(|s| s.n += 1).unwrap();
        assert_eq!(of_domain(&id), [at(t0 + 600), at(t0 + 300 + 600)]);
    }

    pub fn cookie_header_yields_only_valid_ids(archive: &Arc<dyn Archive>) {
        let sessions = Sessions::new(Arc::clone(archive));
        let id = SEED_ID;
        let found = |header: &str| sessions.id_from_cookie(header).map(|id| id.to_string());
        assert_eq!(found(&format!("session-id={id}")).as_deref(), Some(id));
        assert_eq!(
            found(&format!("a=1; session-id={id}; b=2")).as_deref(),
            Some(id)
        );
        assert_eq!(
            found(&format!("session-id=..; session-id={id}")).as_deref(),
            Some(id)
        );
        assert_eq!(found(&format!("other={id}")), None);
        for hostile in [
            "",
            "session-id=",
            "session-id=..",
            "session-id=..%2F..%2Fetc",
            "session-id=0D0D0C2F-6BB9-405F-6A41-D4FE9ACF3DD2",
            "=;;=",
            "session-id",
        ] {
            assert_eq!(found(hostile), None, "{hostile:?}");
        }
        let custom = Sessions::builder(Arc::clone(archive))
            .cookie_name("sid")
            .build();
        assert_eq!(custom.id_from_cookie(&format!("session-id={id}")), None);
        assert_eq!(
            custom
                .id_from_cookie(&format!("sid={id}"))
                .map(|id| id.to_string())
                .as_deref(),
            Some(id)
        );
    }

    pub fn set_cookie_carries_the_session_id_and_attributes(archive: &Arc<dyn Archive>) {
        let sessions = Sessions::new(Arc::clone(archive));
        let hostile = "..%2F..; Domain=evil.example";
        let session = sessions.start(Some(hostile), State::default()).unwrap();
        let header = sessions.set_cookie(&session);
        assert!(
            !header.contains("evil") && !header.contains(".."),
            "{header}"
        );
        let cookie = cookie::Cookie::parse(header).unwrap();
        assert_eq!(cookie.name(), "session-id");
        assert_eq!(cookie.value(), session.id().as_str());
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(cookie.same_site(), Some(cookie::SameSite::Lax));
        assert_eq!(cookie.path(), Some("/"));
        assert_eq!(cookie.secure(), Some(true));
        assert_eq!(cookie.domain(), None);

        let plain = Sessions::builder(Arc::clone(archive))
            .secure(false)
            .cookie_name("sid")
            .build();
        let cookie = cookie::Cookie::parse(plain.set_cookie(&session)).unwrap();
        assert_eq!(cookie.name(), "sid");
        assert_ne!(cookie.secure(), Some(true));
    }

    /// The `Max-Age` of a `Set-Cookie` header, in seconds.
    fn max_age(header: String) -> Option<i64> {
        cookie::Cookie::parse(header)
            .expect("a cookie")
            .max_age()
            .map(cookie::time::Duration::whole_seconds)
    }

    pub fn set_cookie_max_age_follows_the_configuration(archive: &Arc<dyn Archive>) {
        let clock = clock();
        let sessions = Sessions::builder(Arc::clone(archive))
            .idle_timeout(Duration::from_secs(600))
            .absolute_lifetime(Duration::from_secs(1000))
            .clock(clock.clone())
            .build();
        let id = saved(&sessions, "user");
        let session = sessions.start(Some(&id), State::default()).unwrap();
        assert_eq!(max_age(sessions.set_cookie(&session)), Some(600));
        clock.advance(Duration::from_secs(500));
        let session = sessions.start(Some(&id), State::default()).unwrap();
        assert_eq!(max_age(sessions.set_cookie(&session)), Some(500));

        let endless = Sessions::builder(Arc::clone(archive))
            .idle_timeout(None)
            .absolute_lifetime(None)
            .build();
        let session = endless.start(None, State::default()).unwrap();
        assert_eq!(max_age(endless.set_cookie(&session)), None);
    }

    pub fn set_cookie_max_age_ends_when_the_server_expires_the_session(archive: &Arc<dyn Archive>) {
        let clock = clock();
        let sessions = Sessions::builder(Arc::clone(archive))
            .idle_timeout(Duration::from_secs(800))
            .absolute_lifetime(Duration::from_secs(1000))
            .clock(clock.clone())
            .build();
        let id = saved(&sessions, "user");
        // Within an eighth of the idle timeout `seen` is not rewritten, so the server still
        // expires the session 800 s after the save, and so does the cookie.
        clock.advance(Duration::from_secs(50));
        let session = sessions.start(Some(&id), State::default()).unwrap();
        assert_eq!(max_age(sessions.set_cookie(&session)), Some(750));
        // Rewritten now: idle expiry at +950, capped by the absolute lifetime at +1000.
        clock.advance(Duration::from_secs(100));
        let session = sessions.start(Some(&id), State::default()).unwrap();
        assert_eq!(max_age(sessions.set_cookie(&session)), Some(800));
        clock.advance(Duration::from_secs(700));
        let session = sessions.start(Some(&id), State::default()).unwrap();
        assert_eq!(max_age(sessions.set_cookie(&session)), Some(150));
    }

    pub fn removal_cookie_expires_the_cookie(archive: &Arc<dyn Archive>) {
        let sessions = Sessions::new(Arc::clone(archive));
        let cookie = cookie::Cookie::parse(sessions.removal_cookie()).unwrap();
        assert_eq!(cookie.name(), "session-id");
        assert_eq!(cookie.value(), "");
        assert_eq!(
            cookie.max_age().map(cookie::time::Duration::whole_seconds),
            Some(0)
        );
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let expires = cookie.expires_datetime().unwrap().unix_timestamp();
        assert!(
            expires < i64::try_from(now).unwrap(),
            "expires in the future: {expires}"
        );
        assert_eq!(cookie.path(), Some("/"));
        assert_eq!(cookie.http_only(), Some(true));
    }

    /// Records which entries were read and which expiries asked for, on the archives it wraps
    /// (see [`Spy::wrap`]); while `fail_creates` is set, creating a session's state fails; when
    /// `fail_index_once` is set, the next write into an expiry-index domain fails (and clears
    /// it); when `destroy_on_create` names a session, creating another session's state first
    /// removes it (a concurrent destroy), once.
    #[derive(Default)]
    struct Spy {
        reads: Mutex<Vec<(String, String)>>,
        expiries: Mutex<Vec<(String, SystemTime)>>,
        fail_creates: AtomicBool,
        fail_index_once: AtomicBool,
        destroy_on_create: Mutex<Option<String>>,
    }

    impl Spy {
        /// `archive`, with every call shown to this spy first.
        fn wrap(self: &Arc<Self>, archive: &Arc<dyn Archive>) -> Arc<dyn Archive> {
            let spy = Arc::clone(self);
            let inner = Arc::clone(archive);
            Arc::new(Hooked::new(Arc::clone(archive), move |call| {
                spy.observe(&*inner, call)
            }))
        }

        fn observe(&self, inner: &dyn Archive, call: &Call<'_>) -> Result<()> {
            let injected = |operation| {
                Err(Error::Backend {
                    backend: "spy",
                    operation,
                    source: "injected failure".into(),
                })
            };
            match *call {
                Call::Get { domain, key } => self
                    .reads
                    .lock()
                    .expect("spy lock")
                    .push((domain.to_owned(), key.to_owned())),
                Call::GetMany { domain, keys } => self.reads.lock().expect("spy lock").extend(
                    keys.iter()
                        .map(|key| (domain.to_owned(), (*key).to_owned())),
                ),
                Call::GetEach { entries } => self.reads.lock().expect("spy lock").extend(
                    entries
                        .iter()
                        .map(|(domain, key)| ((*domain).to_owned(), (*key).to_owned())),
                ),
                Call::Set { domain, .. }
                    if domain.starts_with("expiry-")
                        && self.fail_index_once.swap(false, Ordering::SeqCst) =>
                {
                    return injected("index a session");
                }
                // A session's state created: alone, or with its record in one swap.
                Call::CompareAndSwap {
                    domain,
                    key: STATE_KEY,
                    expected: None,
                    ..
                } => self.creating(inner, domain)?,
                Call::CompareAndSwapMany { domain, swaps }
                    if swaps.iter().any(|(key, expected, new)| {
                        *key == STATE_KEY && expected.is_none() && new.is_some()
                    }) =>
                {
                    self.creating(inner, domain)?;
                }
                Call::ExpireDomain { domain, at } => self
                    .expiries
                    .lock()
                    .expect("spy lock")
                    .push((domain.to_owned(), at)),
                _ => {}
            }
            Ok(())
        }

        /// A session's state is being created in `domain`: fails when asked to, or first runs
        /// the destroy asked for.
        fn creating(&self, inner: &dyn Archive, domain: &str) -> Result<()> {
            if self.fail_creates.load(Ordering::SeqCst) {
                return Err(Error::Backend {
                    backend: "spy",
                    operation: "create a session",
                    source: "injected failure".into(),
                });
            }
            let mut victim = self.destroy_on_create.lock().expect("spy lock");
            if victim.as_deref().is_some_and(|victim| victim != domain)
                && let Some(victim) = victim.take()
            {
                inner.remove_domain(&victim)?;
            }
            Ok(())
        }
    }
}

/// With ids hashed at rest nothing stored is a usable cookie, and every operation works.
#[test]
fn ids_hashed_at_rest_never_reach_storage() {
    use std::time::{Duration, SystemTime};

    use session_archive::{ArchiveExt, ManualClock, SessionId, Sessions};

    let archive = Arc::new(MemoryArchive::new());
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    // A session stored by id before hashing was turned on.
    let plain = Sessions::builder(Arc::clone(&archive))
        .clock(clock.clone())
        .build();
    let mut before = plain.start(None, 1_u32).unwrap();
    before.save().unwrap();
    let before = before.id().to_string();

    let sessions = Sessions::builder(Arc::clone(&archive))
        .idle_timeout(Duration::from_secs(600))
        .hash_ids_at_rest(true)
        .clock(clock.clone())
        .build();
    let mut session = sessions.start(None, 7_u32).unwrap();
    session.save().unwrap();
    session.update(|n| *n += 1).unwrap();
    let old = session.id().to_string();
    session.regenerate().unwrap();
    let id = session.id().to_string();
    assert_eq!(*sessions.start(Some(&id), 0_u32).unwrap(), 8);
    assert!(sessions.start(Some(&old), 0_u32).unwrap().is_new());
    assert!(sessions.is_live(session.id()).unwrap());

    // Everything stored, as a leaked dump shows it: no name or value holds the id, and no
    // stored name works as a cookie.
    for domain in archive.domains() {
        let domain = domain.unwrap();
        assert!(!domain.contains(&id) && !domain.contains(&old), "{domain}");
        for key in archive.keys(&domain) {
            let key = key.unwrap();
            assert!(!key.contains(&id), "{domain}/{key}");
            let value = archive.get(&domain, &key).unwrap().unwrap();
            assert!(!String::from_utf8_lossy(&value).contains(&id));
        }
        if domain != before {
            assert!(SessionId::parse(&domain).is_none(), "{domain}");
            assert!(sessions.start(Some(&domain), 0_u32).unwrap().is_new());
        }
    }

    // The session sits under the SHA-256 of its id (computed here, not by the crate).
    let hash = sha256::sha256_hex(&id);
    assert_eq!(archive.get(&hash, "session.json").unwrap().unwrap(), b"8");

    // The plain session is unreachable now; adoption removes it, and the sweep finds the
    // hashed one through its index, once it has expired by the longer of this `Sessions`'
    // timeouts and those the archive records (the plain application's, 24 h idle).
    assert!(sessions.start(Some(&before), 0_u32).unwrap().is_new());
    sessions.adopt_legacy(|_| {}).unwrap();
    assert!(!archive.has_domain(&before).unwrap());
    clock.advance(Duration::from_secs(601));
    assert_eq!(
        sessions.sweep().unwrap(),
        0,
        "live to the plain application"
    );
    clock.advance(Duration::from_secs(24 * 3600));
    assert_eq!(sessions.sweep().unwrap(), 1);
    assert!(!archive.has_domain(&hash).unwrap());
    session.destroy().unwrap();
}

/// An archive written by an earlier version holds its sweep cursor as a bare bucket number
/// (`sweep-cursor/bucket`) and no record. The record this version writes then starts the sweep
/// where that cursor stood, so sessions the earlier version indexed since are still swept.
#[test]
fn an_earlier_versions_sweep_cursor_is_followed() {
    use std::time::{Duration, SystemTime};

    use session_archive::{ManualClock, Sessions};

    const GRANULARITY: u64 = 60;
    let start = 1_700_000_000;
    let archive = Arc::new(MemoryArchive::new());
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(start));
    let sessions = Sessions::builder(Arc::clone(&archive))
        .idle_timeout(Duration::from_secs(600))
        .sweep_granularity(Duration::from_secs(GRANULARITY))
        .clock(clock.clone())
        .build();
    let mut old = sessions.start(None, 1_u32).unwrap();
    old.save().unwrap();
    let old = old.id().to_string();
    // What the earlier version left: its cursor at the start, no record.
    archive.remove("sweep-cursor", "index").unwrap();
    let bucket = (start / GRANULARITY).to_string();
    archive
        .set("sweep-cursor", "bucket", bucket.as_bytes())
        .unwrap();

    // Two hours later this version writes, and so records its own cursor.
    clock.advance(Duration::from_secs(2 * 3600));
    let later = Sessions::builder(Arc::clone(&archive))
        .idle_timeout(Duration::from_secs(600))
        .sweep_granularity(Duration::from_secs(GRANULARITY))
        .clock(clock.clone())
        .build();
    later.start(None, 2_u32).unwrap().save().unwrap();
    assert!(archive.has("sweep-cursor", "index").unwrap());
    assert_eq!(later.sweep().unwrap(), 1, "the old session was swept");
    assert!(!archive.has_domain(&old).unwrap());
}

/// Over an archive whose writes wait (here any wrapped archive, which says `Always`), concurrent
/// `update_send`s of one session in one process take turns, so each swap succeeds the first
/// time: every change runs exactly once, and none is lost.
#[test]
fn concurrent_update_sends_on_a_waiting_archive_take_turns() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use session_archive::conformance::Hooked;
    use session_archive::{Blocking, Sessions};

    const THREADS: usize = 8;
    const UPDATES: usize = 50;
    let archive = Hooked::new(MemoryArchive::new(), |_| Ok(()));
    assert_eq!(archive.blocking(), Blocking::Always);
    let sessions = Sessions::new(archive);
    let mut session = sessions.start(None, 0_usize).unwrap();
    session.save().unwrap();
    let id = session.id().to_string();
    let runs = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            let (sessions, id, runs) = (&sessions, &id, Arc::clone(&runs));
            scope.spawn(move || {
                let mut session = sessions.start(Some(id), 0_usize).unwrap();
                for _ in 0..UPDATES {
                    let runs = Arc::clone(&runs);
                    session
                        .update_send(move |n| {
                            runs.fetch_add(1, Ordering::Relaxed);
                            *n += 1;
                        })
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(
        *sessions.start(Some(&id), 0_usize).unwrap(),
        THREADS * UPDATES
    );
    assert_eq!(
        runs.load(Ordering::Relaxed),
        THREADS * UPDATES,
        "a change ran twice"
    );
}

/// A regenerate whose move's outcome is unknown (the swap to the moved-marker happened but
/// answered an error, and the fence that would settle it failed too) fails, stays on the old
/// id, and keeps the copy, which is the session now; the marker is never taken back, since
/// another call may have followed it already: a revoke that ran in that moment (and destroyed
/// the copy) stays final.
#[test]
fn a_regenerate_whose_move_is_unknown_keeps_the_copy_and_never_takes_the_move_back() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use session_archive::conformance::{Call, Hooked};
    use session_archive::{ArchiveExt, Error, STATE_KEY, SessionId, Sessions};

    type Other = Box<dyn FnOnce() -> usize + Send>;
    for revoke_meanwhile in [false, true] {
        let inner = Arc::new(MemoryArchive::new());
        // 0 disarmed, 1 armed, 2 once the move is made, 3 after the fence.
        let stage = Arc::new(AtomicUsize::new(0));
        let other: Arc<Mutex<Option<Other>>> = Arc::default();
        let revoked = Arc::new(AtomicUsize::new(0));
        let (hook_inner, hook_stage, hook_other, hook_revoked) = (
            Arc::clone(&inner),
            Arc::clone(&stage),
            Arc::clone(&other),
            Arc::clone(&revoked),
        );
        let hooked = Hooked::new(Arc::clone(&inner), move |call| {
            let injected = Err(Error::Backend {
                backend: "test",
                operation: "write",
                source: "injected failure".into(),
            });
            let Call::CompareAndSwapMany { domain, swaps } = *call else {
                return Ok(());
            };
            let state_swap = swaps.iter().find(|(key, _, _)| *key == STATE_KEY);
            match (state_swap, hook_stage.load(Ordering::SeqCst)) {
                // The move: made, but answered with an error.
                (Some((_, _, Some(new))), 1) if new.starts_with(b"\0moved:") => {
                    hook_inner.compare_and_swap_many(domain, swaps)?;
                    hook_stage.store(2, Ordering::SeqCst);
                    injected
                }
                // The fence: fails too, after another process acted.
                (Some(_), 2) => {
                    hook_stage.store(3, Ordering::SeqCst);
                    if let Some(other) = hook_other.lock().unwrap().take() {
                        hook_revoked.store(other(), Ordering::SeqCst);
                    }
                    injected
                }
                _ => Ok(()),
            }
        });
        let sessions = Sessions::new(hooked);
        // Another process over the same storage.
        let plain = Sessions::new(Arc::clone(&inner));
        let mut session = sessions.start(None, "anonymous".to_owned()).unwrap();
        session.set_user(Some("alice"));
        session.save().unwrap();
        let old = session.id().clone();
        if revoke_meanwhile {
            let plain = plain.clone();
            *other.lock().unwrap() = Some(Box::new(move || plain.revoke_user("alice").unwrap()));
        }

        stage.store(1, Ordering::SeqCst);
        *session = "alice".to_owned();
        assert!(matches!(session.regenerate(), Err(Error::Backend { .. })));
        assert_eq!(
            stage.swap(0, Ordering::SeqCst),
            3,
            "the move was made and the fence tried"
        );
        assert_eq!(session.id(), &old, "a failed regenerate keeps the old id");
        assert!(
            !plain.is_live(&old).unwrap(),
            "the move is never taken back"
        );
        let states: Vec<(String, Vec<u8>)> = inner
            .domains()
            .map(Result::unwrap)
            .filter_map(|domain| Some((domain.clone(), inner.get(&domain, STATE_KEY).unwrap()?)))
            .filter(|(_, state)| !state.starts_with(b"\0moved:"))
            .collect();
        if revoke_meanwhile {
            assert_eq!(revoked.load(Ordering::SeqCst), 1);
            assert!(states.is_empty(), "a revoked session survived: {states:?}");
            assert_eq!(plain.user_sessions("alice").count(), 0);
        } else {
            // The copy, with the new state, is kept and live.
            assert_eq!(states.len(), 1, "{states:?}");
            assert_eq!(states[0].1, b"\"alice\"");
            assert!(
                plain
                    .is_live(&SessionId::parse(&states[0].0).unwrap())
                    .unwrap()
            );
        }
    }
}

/// A move whose swap answered an error without being applied yet, and that the storage applies
/// later (a Redis command whose reply timed out, run after another connection's read): the
/// regenerate fences the old id before it decides, so the late move can no longer land. The
/// regenerate fails, the copy is removed, and the old session is live and whole, after the
/// late move too. (Reading the marker back instead would find none, remove the copy, and the
/// late move would then turn the old id into a marker naming a removed copy: the session lost.)
#[test]
fn a_move_applied_after_its_error_is_fenced_off() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use session_archive::conformance::{Call, Hooked};
    use session_archive::{ArchiveExt, Error, STATE_KEY, Sessions};

    type Late = (String, Vec<(String, Option<Vec<u8>>, Option<Vec<u8>>)>);
    let inner = Arc::new(MemoryArchive::new());
    let armed = Arc::new(AtomicBool::new(false));
    let late: Arc<Mutex<Option<Late>>> = Arc::default();
    let (hook_armed, hook_late) = (Arc::clone(&armed), Arc::clone(&late));
    let hooked = Hooked::new(Arc::clone(&inner), move |call| {
        if let Call::CompareAndSwapMany { domain, swaps } = *call
            && swaps.iter().any(|(key, _, new)| {
                *key == STATE_KEY && new.is_some_and(|new| new.starts_with(b"\0moved:"))
            })
            && hook_armed.swap(false, Ordering::SeqCst)
        {
            let owned = swaps
                .iter()
                .map(|(key, expected, new)| {
                    (
                        (*key).to_owned(),
                        expected.map(<[u8]>::to_vec),
                        new.map(<[u8]>::to_vec),
                    )
                })
                .collect();
            *hook_late.lock().unwrap() = Some((domain.to_owned(), owned));
            return Err(Error::Backend {
                backend: "test",
                operation: "write",
                source: "reply timed out".into(),
            });
        }
        Ok(())
    });
    let sessions = Sessions::new(hooked);
    let plain = Sessions::new(Arc::clone(&inner));
    let mut session = sessions.start(None, "anonymous".to_owned()).unwrap();
    session.set_user(Some("alice"));
    session.save().unwrap();
    let old = session.id().clone();

    armed.store(true, Ordering::SeqCst);
    assert!(matches!(session.regenerate(), Err(Error::Backend { .. })));
    assert_eq!(session.id(), &old, "a failed regenerate keeps the old id");

    // Now the storage runs the move it answered with an error.
    let (domain, swaps) = late.lock().unwrap().take().expect("the move was held back");
    let swaps: Vec<session_archive::archive::Swap<'_>> = swaps
        .iter()
        .map(|(key, expected, new)| (key.as_str(), expected.as_deref(), new.as_deref()))
        .collect();
    assert!(
        !inner.compare_and_swap_many(&domain, &swaps).unwrap(),
        "the fence keeps the late move from landing"
    );
    assert!(plain.is_live(&old).unwrap(), "the session was lost");
    let again = plain.start(Some(old.as_str()), String::new()).unwrap();
    assert_eq!(again.id(), &old);
    assert_eq!(*again, "anonymous");
    assert_eq!(again.user(), Some("alice"));
    let listed: Vec<_> = plain
        .user_sessions("alice")
        .map(|s| s.unwrap().id().clone())
        .collect();
    assert_eq!(listed, [old]);
    // Only the old session is left: the copy was removed.
    let sessions_left = inner
        .domains()
        .map(Result::unwrap)
        .filter(|domain| inner.has(domain, STATE_KEY).unwrap())
        .count();
    assert_eq!(sessions_left, 1);
}

/// A clean regenerate moves a pair that one write stored (issue 24, defect 3): request 2 starts
/// the session (state "alice", bound to alice); request 1 then stores state "bob" bound to bob;
/// request 2's id rotation moves "bob" with bob's binding, not with the binding it read, so the
/// new id is listed and revoked as bob's.
#[test]
fn a_clean_regenerate_moves_the_state_with_its_binding() {
    use session_archive::Sessions;

    let sessions = Sessions::new(MemoryArchive::new());
    let mut first = sessions.start(None, "alice".to_owned()).unwrap();
    first.set_user(Some("alice"));
    first.save().unwrap();
    let id = first.id().to_string();

    let mut second = sessions.start(Some(&id), String::new()).unwrap();
    let mut first = sessions.start(Some(&id), String::new()).unwrap();
    *first = "bob".to_owned();
    first.set_user(Some("bob"));
    first.save().unwrap();
    second.regenerate().unwrap();

    assert_eq!(**second, *"bob");
    assert_eq!(second.user(), Some("bob"));
    let moved = sessions
        .start(Some(second.id().as_str()), String::new())
        .unwrap();
    assert_eq!((moved.as_str(), moved.user()), ("bob", Some("bob")));
    let bobs: Vec<_> = sessions
        .user_sessions("bob")
        .map(|s| s.unwrap().id().clone())
        .collect();
    assert_eq!(bobs, [second.id().clone()]);
    assert_eq!(sessions.user_sessions("alice").count(), 0);
    assert_eq!(sessions.revoke_user("bob").unwrap(), 1);
    assert!(!sessions.is_live(second.id()).unwrap());
}

/// Whether a handle has changes of its own is never decided by encoding its state again (issue
/// 24, defect 4): a `HashMap` encodes its keys in another order each time, and an untouched
/// handle over one must still move, on regenerate, the update another request made meanwhile.
#[test]
fn an_untouched_hashmap_handle_is_clean_and_its_regenerate_keeps_updates() {
    use std::collections::HashMap;

    use session_archive::Sessions;

    type State = HashMap<String, u32>;
    let sessions = Sessions::new(MemoryArchive::new());
    for round in 0..50 {
        let state: State = (0..8).map(|k| (format!("key{k}"), k)).collect();
        let mut seed = sessions.start(None, state).unwrap();
        seed.save().unwrap();
        let id = seed.id().to_string();

        let mut idle = sessions.start(Some(&id), State::new()).unwrap();
        let mut busy = sessions.start(Some(&id), State::new()).unwrap();
        busy.update(|state| state.insert("visits".into(), 1))
            .unwrap();
        idle.regenerate().unwrap();

        let moved = sessions
            .start(Some(idle.id().as_str()), State::new())
            .unwrap();
        assert_eq!(
            moved.get("visits"),
            Some(&1),
            "round {round}: the update was lost"
        );
        assert_eq!(idle.get("visits"), Some(&1), "round {round}");
    }
}
