//! `ArchiveStore`, the tower-sessions store, at the level of its calls: every semantic its
//! module docs promise, on memory, redb and the directory tree (and Redis where a server is
//! there), with the races between calls checked at every archive-call boundary.
//!
//! tower-sessions' own route tests run in `tower_sessions_routes.rs`; the archives' own
//! conformance is tested elsewhere. These tests are about the adapter.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use session_archive::conformance::{Call, Hooked};
use session_archive::tower_sessions::ArchiveStore;
use session_archive::{
    Archive, ArchiveExt, Clock, Error, ManualClock, MemoryArchive, SessionId, Sessions,
};
use time::OffsetDateTime;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{self, ExpiredDeletion, SessionStore};

#[cfg(feature = "archive-redis")]
#[path = "support/redis_cluster.rs"]
mod cluster_servers;
#[cfg(feature = "archive-postgres")]
#[path = "support/postgres_server.rs"]
mod postgres_server;
#[cfg(feature = "archive-redis")]
#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/scheduler.rs"]
mod scheduler;
use scheduler::Scheduler;

/// Where the store keeps a record, as its module docs give the layout.
fn domain(id: &Id) -> String {
    format!("tower-session-{id}")
}

const KEY: &str = "record.json";

/// An `OffsetDateTime` `secs` seconds (and `nanos`) after `base`, for records that expire
/// relative to a manual clock.
fn after(base: SystemTime, secs: i64, nanos: i64) -> OffsetDateTime {
    OffsetDateTime::from(base) + time::Duration::seconds(secs) + time::Duration::nanoseconds(nanos)
}

/// A record with data of every JSON kind.
fn record(expiry_date: OffsetDateTime) -> Record {
    let data: HashMap<String, Value> = [
        ("foo".to_owned(), json!(42)),
        ("ratio".to_owned(), json!(0.1)),
        (
            "user".to_owned(),
            json!({"name": "Zoë", "roles": ["admin", "ops"], "since": null, "ok": true}),
        ),
        ("big".to_owned(), json!(u64::MAX)),
        ("negative".to_owned(), json!(i64::MIN)),
        (String::new(), json!("empty key")),
    ]
    .into();
    Record {
        id: Id::default(),
        data,
        expiry_date,
    }
}

/// Every domain of the archive.
fn domains(archive: &dyn Archive) -> BTreeSet<String> {
    archive
        .domains()
        .collect::<Result<_, _>>()
        .expect("list domains")
}

/// The record domains the archive holds.
fn record_domains(archive: &dyn Archive) -> BTreeSet<String> {
    domains(archive)
        .into_iter()
        .filter(|d| d.starts_with("tower-session-"))
        .collect()
}

/// A fresh archive of each backend under test, with whatever keeps it alive.
mod backend {
    use super::*;

    pub type Fresh = (Arc<dyn Archive>, Option<tempfile::TempDir>);

    pub fn memory() -> Fresh {
        (Arc::new(MemoryArchive::new()), None)
    }

    #[cfg(feature = "archive-redb")]
    pub fn redb() -> Fresh {
        let dir = tempfile::tempdir().expect("temporary directory");
        let archive =
            session_archive::RedbArchive::open(dir.path().join("s.redb")).expect("open redb");
        (Arc::new(archive), Some(dir))
    }

    #[cfg(all(feature = "archive-dir", unix))]
    pub fn dir() -> Fresh {
        let dir = tempfile::tempdir().expect("temporary directory");
        let archive = session_archive::DirArchive::open(dir.path()).expect("open the tree");
        (Arc::new(archive), Some(dir))
    }

    /// A fresh prefix on the shared server, or `None` (after a notice) without one.
    #[cfg(feature = "archive-redis")]
    pub fn redis() -> Option<Fresh> {
        let url = super::redis_server::or_skip(super::redis_server::shared_url())?;
        let archive = super::redis_server::open(&url, &super::redis_server::unique_prefix());
        Some((Arc::new(archive), None))
    }

    /// A fresh table in the shared PostgreSQL database, or `None` (after a notice) without one.
    #[cfg(feature = "archive-postgres")]
    pub fn postgres() -> Option<Fresh> {
        let url = super::postgres_server::or_skip(super::postgres_server::shared_url())?;
        let archive = session_archive::PostgresArchive::builder(&url)
            .table(&super::postgres_server::unique_table())
            .pool_size(4)
            .connect()
            .expect("connect to the shared PostgreSQL server");
        Some((Arc::new(archive), None))
    }

    /// A fresh prefix on the shared 3-master cluster, or `None` (after a notice) without one.
    #[cfg(feature = "archive-redis")]
    pub fn redis_cluster() -> Option<Fresh> {
        super::redis_server::or_skip(super::cluster_servers::shared_cluster())?;
        let prefix = super::redis_server::unique_prefix();
        Some((
            Arc::new(super::cluster_servers::open_cluster(&prefix)),
            None,
        ))
    }
}

/// Stamps out one `#[tokio::test]` per behaviour for each backend.
macro_rules! store_tests {
    ($($behaviour:ident)*) => {
        mod memory {
            $(#[tokio::test]
            async fn $behaviour() {
                let (archive, _dir) = super::backend::memory();
                super::$behaviour(archive).await;
            })*
        }
        #[cfg(feature = "archive-redb")]
        mod redb {
            $(#[tokio::test]
            async fn $behaviour() {
                let (archive, _dir) = super::backend::redb();
                super::$behaviour(archive).await;
            })*
        }
        #[cfg(all(feature = "archive-dir", unix))]
        mod dir {
            $(#[tokio::test]
            async fn $behaviour() {
                let (archive, _dir) = super::backend::dir();
                super::$behaviour(archive).await;
            })*
        }
        #[cfg(feature = "archive-redis")]
        mod redis {
            $(#[tokio::test]
            async fn $behaviour() {
                let Some((archive, _dir)) = super::backend::redis() else { return };
                super::$behaviour(archive).await;
            })*
        }
        #[cfg(feature = "archive-postgres")]
        mod postgres {
            $(#[tokio::test]
            async fn $behaviour() {
                let Some((archive, _dir)) = super::backend::postgres() else { return };
                super::$behaviour(archive).await;
            })*
        }
        #[cfg(feature = "archive-redis")]
        mod redis_cluster {
            $(#[tokio::test]
            async fn $behaviour() {
                let Some((archive, _dir)) = super::backend::redis_cluster() else { return };
                super::$behaviour(archive).await;
            })*
        }
    };
}

store_tests!(
    records_round_trip_exactly
    create_with_a_taken_id_picks_another_and_leaves_the_first_untouched
    save_replaces_the_record_and_keeps_its_new_expiry
    concurrent_saves_of_one_record_all_land
    save_after_delete_does_not_resurrect
    save_of_an_unknown_id_writes_nothing
    expired_records_load_as_none_and_are_not_saved_over
    delete_expired_removes_expired_records_and_keeps_live_ones
    delete_expired_reads_only_records_that_came_due
    delete_expired_follows_expiries_that_saves_moved
    undecodable_bytes_are_a_decode_error_and_stay_untouched
    delete_of_a_missing_record_is_ok
    records_live_in_a_namespace_of_their_own
    sessions_and_the_store_share_an_archive
);

async fn records_round_trip_exactly(archive: Arc<dyn Archive>) {
    let store = ArchiveStore::new(Arc::clone(&archive));
    // Sub-second precision and a UTC offset other than zero.
    let expiry = (OffsetDateTime::now_utc()
        + time::Duration::days(3)
        + time::Duration::nanoseconds(123_456_789))
    .to_offset(time::UtcOffset::from_hms(-3, -30, 0).expect("offset"));
    let mut created = record(expiry);
    store.create(&mut created).await.expect("create");
    let loaded = store
        .load(&created.id)
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(loaded, created);
    assert_eq!(loaded.expiry_date.offset(), expiry.offset());
    assert_eq!(loaded.expiry_date.nanosecond(), expiry.nanosecond());
    assert_eq!(
        loaded.expiry_date.unix_timestamp_nanos(),
        expiry.unix_timestamp_nanos()
    );

    // Floats of every magnitude come back bit for bit.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut floats = Vec::new();
    while floats.len() < 500 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let float = f64::from_bits(seed);
        if float.is_finite() {
            floats.push(float);
        }
    }
    let mut numbers = record(expiry);
    numbers.data = floats
        .iter()
        .enumerate()
        .map(|(i, float)| (i.to_string(), json!(float)))
        .collect();
    store.create(&mut numbers).await.expect("create");
    let loaded = store
        .load(&numbers.id)
        .await
        .expect("load")
        .expect("stored");
    for (i, float) in floats.iter().enumerate() {
        let back = loaded.data[&i.to_string()].as_f64().expect("a number");
        assert_eq!(
            back.to_bits(),
            float.to_bits(),
            "{float:e} came back as {back:e}"
        );
    }
}

async fn create_with_a_taken_id_picks_another_and_leaves_the_first_untouched(
    archive: Arc<dyn Archive>,
) {
    let store = ArchiveStore::new(Arc::clone(&archive));
    let expiry = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let mut first = record(expiry);
    store.create(&mut first).await.expect("create");
    let stored = archive.get(&domain(&first.id), KEY).expect("get");

    let mut second = record(expiry + time::Duration::hours(1));
    second.id = first.id;
    second.data.insert("who".to_owned(), json!("second"));
    store
        .create(&mut second)
        .await
        .expect("create over a taken id");

    assert_ne!(second.id, first.id, "the taken id was kept");
    assert_eq!(archive.get(&domain(&first.id), KEY).expect("get"), stored);
    assert_eq!(store.load(&first.id).await.expect("load"), Some(first));
    assert_eq!(store.load(&second.id).await.expect("load"), Some(second));
}

async fn save_replaces_the_record_and_keeps_its_new_expiry(archive: Arc<dyn Archive>) {
    let store = ArchiveStore::new(Arc::clone(&archive));
    let mut saved = record(OffsetDateTime::now_utc() + time::Duration::hours(1));
    store.create(&mut saved).await.expect("create");
    // A later expiry in another index bucket, then one in the same bucket, then an earlier one.
    for shift in [
        time::Duration::days(2),
        time::Duration::milliseconds(1),
        -time::Duration::minutes(90),
    ] {
        saved.expiry_date += shift;
        saved.data.insert(
            "n".to_owned(),
            json!(shift.whole_milliseconds().to_string()),
        );
        store.save(&saved).await.expect("save");
        assert_eq!(
            store.load(&saved.id).await.expect("load"),
            Some(saved.clone())
        );
    }
    saved.data.clear();
    store.save(&saved).await.expect("save of empty data");
    assert_eq!(store.load(&saved.id).await.expect("load"), Some(saved));
}

/// Many requests of one session saving at once (a hot session) each get `Ok`, and the record
/// ends as one of them saved it: none fails for having lost a race, as tower-sessions' own
/// stores never do.
async fn concurrent_saves_of_one_record_all_land(archive: Arc<dyn Archive>) {
    const WRITERS: usize = 32;
    const SAVES: usize = 8;
    let store = ArchiveStore::new(Arc::clone(&archive));
    let mut created = record(OffsetDateTime::now_utc() + time::Duration::hours(1));
    store.create(&mut created).await.expect("create");
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (store, mut saved) = (store.clone(), created.clone());
        writers.push(tokio::spawn(async move {
            for n in 0..SAVES {
                saved
                    .data
                    .insert("by".to_owned(), json!(format!("{writer}-{n}")));
                saved.expiry_date += time::Duration::milliseconds(1);
                store.save(&saved).await.expect("a save of a live record");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer task");
    }
    let stored = store
        .load(&created.id)
        .await
        .expect("load")
        .expect("stored");
    let by = stored.data["by"].as_str().expect("saved by a writer");
    assert!(
        by.ends_with(&format!("-{}", SAVES - 1)),
        "{by}: a writer's last save"
    );
}

async fn save_after_delete_does_not_resurrect(archive: Arc<dyn Archive>) {
    let store = ArchiveStore::new(Arc::clone(&archive));
    let mut saved = record(OffsetDateTime::now_utc() + time::Duration::hours(1));
    store.create(&mut saved).await.expect("create");
    store.delete(&saved.id).await.expect("delete");
    saved.data.insert("late".to_owned(), json!(true));
    store
        .save(&saved)
        .await
        .expect("a save racing a logout is not an error");
    assert_eq!(store.load(&saved.id).await.expect("load"), None);
    assert!(!archive.has_domain(&domain(&saved.id)).expect("has_domain"));
}

async fn save_of_an_unknown_id_writes_nothing(archive: Arc<dyn Archive>) {
    let store = ArchiveStore::new(Arc::clone(&archive));
    let unknown = record(OffsetDateTime::now_utc() + time::Duration::hours(1));
    store.save(&unknown).await.expect("save");
    assert_eq!(store.load(&unknown.id).await.expect("load"), None);
    assert_eq!(domains(&*archive), BTreeSet::new(), "something was written");
}

async fn expired_records_load_as_none_and_are_not_saved_over(archive: Arc<dyn Archive>) {
    let clock = ManualClock::new(SystemTime::now());
    let store = ArchiveStore::new(Arc::clone(&archive)).with_clock(clock.clone());
    let start = clock.now();
    let mut saved = record(after(start, 10, 500_000_000));
    store.create(&mut saved).await.expect("create");
    clock.set(start + Duration::from_secs(10));
    assert!(
        store.load(&saved.id).await.expect("load").is_some(),
        "expired early"
    );
    // Expired the moment the clock reaches the expiry, to the nanosecond.
    clock.set(start + Duration::new(10, 500_000_000));
    assert_eq!(store.load(&saved.id).await.expect("load"), None);

    // A save of the expired record (its request read it before it expired) does not revive it.
    let before = archive.get(&domain(&saved.id), KEY).expect("get");
    saved.expiry_date = after(start, 3600, 0);
    store.save(&saved).await.expect("save");
    assert_eq!(store.load(&saved.id).await.expect("load"), None);
    assert_eq!(archive.get(&domain(&saved.id), KEY).expect("get"), before);

    // A record created already expired is stored, but never loads.
    let mut past = record(after(start, -60, 0));
    store.create(&mut past).await.expect("create");
    assert_eq!(store.load(&past.id).await.expect("load"), None);
}

async fn delete_expired_removes_expired_records_and_keeps_live_ones(archive: Arc<dyn Archive>) {
    let clock = ManualClock::new(SystemTime::now());
    let store = ArchiveStore::new(Arc::clone(&archive)).with_clock(clock.clone());
    let start = clock.now();
    let mut live = Vec::new();
    let mut doomed = Vec::new();
    for i in 0..6 {
        let mut short = record(after(start, 30 + i, 0));
        store.create(&mut short).await.expect("create");
        doomed.push(short);
        let mut long = record(after(start, 3 * 86_400 + i, 0));
        store.create(&mut long).await.expect("create");
        live.push(long);
    }
    // Already expired when created.
    let mut past = record(after(start, -5, 0));
    store.create(&mut past).await.expect("create");
    doomed.push(past);
    // Extended by a save past the sweep: kept.
    let mut extended = doomed.remove(0);
    extended.expiry_date = after(start, 86_400, 0);
    store.save(&extended).await.expect("save");
    live.push(extended);

    store
        .delete_expired()
        .await
        .expect("delete_expired before anything is due");
    assert_eq!(
        record_domains(&*archive).len(),
        live.len() + doomed.len() - 1
    );

    clock.set(start + Duration::from_secs(2 * 3600));
    store.delete_expired().await.expect("delete_expired");
    let remaining = record_domains(&*archive);
    let expected: BTreeSet<String> = live.iter().map(|r| domain(&r.id)).collect();
    assert_eq!(remaining, expected);
    for kept in &live {
        assert_eq!(
            store.load(&kept.id).await.expect("load").as_ref(),
            Some(kept)
        );
    }
    // Nothing is left in the index for the removed records.
    let indexed: BTreeSet<String> = domains(&*archive)
        .into_iter()
        .filter(|d| d.starts_with("tower-expiry-"))
        .flat_map(|d| {
            archive
                .keys(&d)
                .collect::<Result<Vec<_>, _>>()
                .expect("keys")
        })
        .collect();
    for gone in &doomed {
        assert!(
            !indexed.contains(&domain(&gone.id)),
            "stale index entry left"
        );
    }

    // Later still, everything goes, and a second run finds nothing more.
    clock.set(start + Duration::from_secs(10 * 86_400));
    store.delete_expired().await.expect("delete_expired");
    assert_eq!(record_domains(&*archive), BTreeSet::new());
    store.delete_expired().await.expect("delete_expired again");
}

async fn delete_expired_reads_only_records_that_came_due(archive: Arc<dyn Archive>) {
    let reads = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&reads);
    let hooked = Hooked::new(archive, move |call| {
        if let Call::Get { domain, .. } = *call {
            log.lock().push(domain.to_owned());
        }
        Ok(())
    });
    let clock = ManualClock::new(SystemTime::now());
    let store = ArchiveStore::new(hooked).with_clock(clock.clone());
    let start = clock.now();
    for i in 0..40 {
        let mut far = record(after(start, 30 * 86_400 + i, 0));
        store.create(&mut far).await.expect("create");
    }
    let mut due = BTreeSet::new();
    for i in 0..3 {
        let mut soon = record(after(start, 600 + i, 0));
        store.create(&mut soon).await.expect("create");
        due.insert(domain(&soon.id));
    }
    store.delete_expired().await.expect("first sweep");
    clock.set(start + Duration::from_secs(3600));
    reads.lock().clear();
    store.delete_expired().await.expect("delete_expired");
    let read: BTreeSet<String> = reads
        .lock()
        .iter()
        .filter(|d| d.starts_with("tower-session-"))
        .cloned()
        .collect();
    assert_eq!(read, due, "the sweep read records that were not due");
}

async fn delete_expired_follows_expiries_that_saves_moved(archive: Arc<dyn Archive>) {
    let clock = ManualClock::new(SystemTime::now());
    let start = clock.now();
    let store = ArchiveStore::new(Arc::clone(&archive)).with_clock(clock.clone());
    // Moved earlier by a save: deleted at the earlier expiry.
    let mut shortened = record(after(start, 5 * 3600, 0));
    store.create(&mut shortened).await.expect("create");
    shortened.expiry_date = after(start, 1800, 0);
    store.save(&shortened).await.expect("save");
    // Moved later by many saves: kept until the last expiry, then deleted.
    let mut extended = record(after(start, 1800, 0));
    store.create(&mut extended).await.expect("create");
    for hours in 1..=4 {
        extended.expiry_date = after(start, hours * 3600, 0);
        store.save(&extended).await.expect("save");
    }
    clock.set(start + Duration::from_secs(3600));
    store.delete_expired().await.expect("delete_expired");
    assert!(
        !archive
            .has_domain(&domain(&shortened.id))
            .expect("has_domain")
    );
    assert_eq!(
        store.load(&extended.id).await.expect("load").as_ref(),
        Some(&extended)
    );
    clock.set(start + Duration::from_secs(3 * 3600));
    store.delete_expired().await.expect("delete_expired");
    assert_eq!(
        store.load(&extended.id).await.expect("load").as_ref(),
        Some(&extended)
    );
    clock.set(start + Duration::from_secs(4 * 3600 + 1));
    store.delete_expired().await.expect("delete_expired");
    assert_eq!(record_domains(&*archive), BTreeSet::new());
}

async fn undecodable_bytes_are_a_decode_error_and_stay_untouched(archive: Arc<dyn Archive>) {
    let clock = ManualClock::new(SystemTime::now());
    let start = clock.now();
    let store = ArchiveStore::new(Arc::clone(&archive)).with_clock(clock.clone());
    let hostile: [&[u8]; 8] = [
        b"",
        b"\xff\xfe\x00garbage",
        b"null",
        b"{}",
        br#"{"expiry":{"unix":1,"nanos":0,"offset":0}}"#,
        br#"{"expiry":{"unix":9223372036854775807,"nanos":0,"offset":0},"data":{}}"#,
        br#"{"expiry":{"unix":4102444800,"nanos":4000000000,"offset":0},"data":{}}"#,
        br#"{"expiry":{"unix":4102444800,"nanos":0,"offset":999999},"data":{}}"#,
    ];
    let mut planted = Vec::new();
    for bytes in hostile {
        // A record the index knows, whose bytes something else then replaced.
        let mut created = record(after(start, 600, 0));
        store.create(&mut created).await.expect("create");
        let id = created.id;
        archive.set(&domain(&id), KEY, bytes).expect("plant");
        match store.load(&id).await {
            Err(session_store::Error::Decode(message)) => {
                assert!(
                    !message.contains(&id.to_string()),
                    "the id is in {message:?}"
                );
                assert!(message.contains("session #"), "{message:?}");
            }
            other => panic!("{:?} loaded as {other:?}", String::from_utf8_lossy(bytes)),
        }
        planted.push((id, bytes));
    }
    // The sweep comes to their index entries, cannot judge them, and leaves the bytes.
    let mut due = record(after(start, 300, 0));
    store.create(&mut due).await.expect("create");
    clock.set(start + Duration::from_secs(3600));
    store.delete_expired().await.expect("delete_expired");
    for (id, bytes) in planted {
        assert_eq!(
            archive.get(&domain(&id), KEY).expect("get").as_deref(),
            Some(bytes)
        );
    }
    assert!(!archive.has_domain(&domain(&due.id)).expect("has_domain"));
}

async fn delete_of_a_missing_record_is_ok(archive: Arc<dyn Archive>) {
    let store = ArchiveStore::new(Arc::clone(&archive));
    store
        .delete(&Id::default())
        .await
        .expect("delete of nothing");
    assert_eq!(domains(&*archive), BTreeSet::new());
}

async fn records_live_in_a_namespace_of_their_own(archive: Arc<dyn Archive>) {
    let store = ArchiveStore::new(Arc::clone(&archive));
    for _ in 0..5 {
        let mut created = record(OffsetDateTime::now_utc() + time::Duration::hours(1));
        store.create(&mut created).await.expect("create");
    }
    store.delete_expired().await.expect("delete_expired");
    let names = domains(&*archive);
    assert!(names.len() >= 7, "{names:?}");
    for name in &names {
        assert!(name.starts_with("tower-"), "{name}");
        assert!(SessionId::parse(name).is_none(), "{name}");
        assert!(
            !name.starts_with("expiry-")
                && name != "sweep-cursor"
                && name != session_archive::CORRUPT_DOMAIN,
            "{name}"
        );
    }
}

async fn sessions_and_the_store_share_an_archive(archive: Arc<dyn Archive>) {
    let clock = ManualClock::new(SystemTime::now());
    let start = clock.now();
    let store = ArchiveStore::new(Arc::clone(&archive)).with_clock(clock.clone());
    let sessions = Sessions::builder(Arc::clone(&archive))
        .idle_timeout(Duration::from_secs(600))
        .clock(clock.clone())
        .build();
    let mut tower = record(after(start, 3600, 0));
    store.create(&mut tower).await.expect("create");
    let mut session = sessions.start(None, "state".to_owned()).expect("start");
    session.save().expect("save");
    let id = session.id().clone();

    // Each sweep removes only its own expired sessions.
    clock.set(start + Duration::from_secs(1200));
    assert_eq!(sessions.sweep().expect("sweep"), 1);
    assert_eq!(sessions.adopt_legacy(|_| {}).expect("adopt_legacy"), 0);
    assert_eq!(
        store.load(&tower.id).await.expect("load").as_ref(),
        Some(&tower)
    );
    let mut other = sessions.start(None, "other".to_owned()).expect("start");
    other.save().expect("save");
    clock.set(start + Duration::from_secs(7200));
    store.delete_expired().await.expect("delete_expired");
    assert_eq!(store.load(&tower.id).await.expect("load"), None);
    assert!(!archive.has_domain(id.as_str()).expect("has_domain"));
    assert!(archive.has_domain(other.id().as_str()).expect("has_domain"));
}

#[cfg(feature = "archive-redb")]
#[tokio::test]
async fn records_survive_reopening_a_redb_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("sessions.redb");
    let mut saved = record(OffsetDateTime::now_utc() + time::Duration::hours(1));
    {
        let store = ArchiveStore::new(session_archive::RedbArchive::open(&path).expect("open"));
        store.create(&mut saved).await.expect("create");
        saved.data.insert("second".to_owned(), json!([1, 2, 3]));
        store.save(&saved).await.expect("save");
    }
    let store = ArchiveStore::new(session_archive::RedbArchive::open(&path).expect("reopen"));
    assert_eq!(store.load(&saved.id).await.expect("load"), Some(saved));
}

// ---------------------------------------------------------------------------------------------
// Races: the other call run whole before each archive call of the call under test.

/// A store over a fresh archive whose calls go through a [`Scheduler`], with the scheduler, the
/// archive behind the hook, and what keeps it alive.
type Scheduled = (
    ArchiveStore,
    Arc<Scheduler>,
    Arc<dyn Archive>,
    Option<tempfile::TempDir>,
);

/// A store over a fresh archive whose calls go through a [`Scheduler`].
fn scheduled(fresh: fn() -> backend::Fresh, clock: &ManualClock) -> Scheduled {
    let (archive, dir) = fresh();
    let scheduler = Arc::new(Scheduler::default());
    let hook = Arc::clone(&scheduler);
    let hooked = Hooked::new(Arc::clone(&archive), move |_| {
        hook.hook();
        Ok(())
    });
    let store = ArchiveStore::new(hooked).with_clock(clock.clone());
    (store, scheduler, archive, dir)
}

/// Runs `future` to completion on a runtime of its own, in a thread of its own, while this
/// thread (a blocking one of the test's runtime, inside an archive call of the call under test)
/// waits: how the other call runs between two archive calls of the first.
fn wait<T: Send>(future: impl Future<Output = T> + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("a runtime for the other call")
                    .block_on(future)
            })
            .join()
            .expect("the other call panicked")
    })
}

/// A backend's name and its fresh-archive function.
type Backend = (&'static str, fn() -> backend::Fresh);

fn race_backends() -> Vec<Backend> {
    let mut backends: Vec<Backend> = vec![("memory", backend::memory)];
    #[cfg(feature = "archive-redb")]
    backends.push(("redb", backend::redb));
    #[cfg(all(feature = "archive-dir", unix))]
    backends.push(("dir", backend::dir));
    backends
}

/// Runs `race` on every backend with the other call armed before archive call number `at` of
/// the call under test, for `at` = 0, 1, … until the other call no longer lands inside it (`race`
/// returns [`Scheduler::finish`]'s answer).
async fn at_every_boundary(
    mut race: impl AsyncFnMut(&'static str, fn() -> backend::Fresh, usize) -> bool,
) {
    for (name, fresh) in race_backends() {
        for at in 0.. {
            if !race(name, fresh, at).await {
                assert!(at >= 3, "{name}: only {at} archive calls");
                break;
            }
        }
    }
}

/// A save racing a delete (a logout, `flush` or `cycle_id` in another request): at every
/// boundary, the delete is final and the save answers `Ok`.
#[tokio::test]
async fn save_racing_delete_never_resurrects_at_any_boundary() {
    at_every_boundary(async |name, fresh, at| {
        let clock = ManualClock::new(SystemTime::now());
        let start = clock.now();
        let (store, scheduler, archive, _dir) = scheduled(fresh, &clock);
        let mut saved = record(after(start, 3600, 0));
        store.create(&mut saved).await.expect("create");
        let (deleter, id) = (store.clone(), saved.id);
        scheduler.arm(at, move || wait(deleter.delete(&id)).expect("delete"));
        // A new expiry in another bucket, so that the save writes an index entry too.
        saved.expiry_date = after(start, 7200, 0);
        saved.data.insert("late".to_owned(), json!(at));
        let result = store.save(&saved).await;
        let inside = scheduler.finish();
        assert!(result.is_ok(), "{name} at {at}: {result:?}");
        assert_eq!(
            store.load(&saved.id).await.expect("load"),
            None,
            "{name} at {at}"
        );
        assert_eq!(record_domains(&*archive), BTreeSet::new(), "{name} at {at}");
        inside
    })
    .await;
}

/// Two saves of one record: whichever order their calls interleave in, both answer `Ok` and one
/// whole record is stored, indexed, so that it is deleted once it expires.
#[tokio::test]
async fn concurrent_saves_leave_one_whole_indexed_record_at_any_boundary() {
    at_every_boundary(async |name, fresh, at| {
        let clock = ManualClock::new(SystemTime::now());
        let start = clock.now();
        let (store, scheduler, archive, _dir) = scheduled(fresh, &clock);
        let mut first = record(after(start, 3600, 0));
        store.create(&mut first).await.expect("create");
        let mut second = first.clone();
        first.expiry_date = after(start, 5 * 3600, 0);
        first.data.insert("who".to_owned(), json!("first"));
        second.expiry_date = after(start, 9 * 3600, 0);
        second.data.insert("who".to_owned(), json!("second"));
        let (other, other_record) = (store.clone(), second.clone());
        scheduler.arm(at, move || wait(other.save(&other_record)).expect("save"));
        store.save(&first).await.expect("save");
        let inside = scheduler.finish();
        let stored = store.load(&first.id).await.expect("load").expect("stored");
        assert!(stored == first || stored == second, "{name} at {at}: a mix");
        // The saves do not lose the index: once expired, the record is deleted.
        clock.set(start + Duration::from_secs(10 * 3600));
        store.delete_expired().await.expect("delete_expired");
        assert_eq!(record_domains(&*archive), BTreeSet::new(), "{name} at {at}");
        inside
    })
    .await;
}

/// Two creates claiming one id: both succeed, under different ids, and neither overwrites.
#[tokio::test]
async fn concurrent_creates_of_one_id_both_succeed_apart_at_any_boundary() {
    at_every_boundary(async |name, fresh, at| {
        let clock = ManualClock::new(SystemTime::now());
        let start = clock.now();
        let (store, scheduler, _archive, _dir) = scheduled(fresh, &clock);
        let mut first = record(after(start, 3600, 0));
        let mut second = record(after(start, 7200, 0));
        second.id = first.id;
        let other = store.clone();
        let created = Arc::new(Mutex::new(None));
        let out = Arc::clone(&created);
        scheduler.arm(at, move || {
            wait(other.create(&mut second)).expect("create");
            *out.lock() = Some(second);
        });
        store.create(&mut first).await.expect("create");
        let inside = scheduler.finish();
        let second = created.lock().take().expect("the other create ran");
        assert_ne!(first.id, second.id, "{name} at {at}");
        assert_eq!(
            store.load(&first.id).await.expect("load").as_ref(),
            Some(&first)
        );
        assert_eq!(
            store.load(&second.id).await.expect("load").as_ref(),
            Some(&second)
        );
        inside
    })
    .await;
}

/// `delete_expired` racing a save from a process whose clock lags, so that it still saves the
/// record the sweep is judging expired: at every boundary of the sweep, a record that the save
/// wrote is never removed afterwards, and what is stored stays indexed.
#[tokio::test]
async fn delete_expired_never_removes_a_record_saved_after_its_judgement() {
    at_every_boundary(async |name, fresh, at| {
        let clock = ManualClock::new(SystemTime::now());
        let start = clock.now();
        let (store, scheduler, archive, _dir) = scheduled(fresh, &clock);
        let lagging = ManualClock::new(start + Duration::from_secs(59));
        let lagging_store = ArchiveStore::new(Arc::clone(&archive)).with_clock(lagging.clone());
        let mut saved = record(after(start, 60, 0));
        store.create(&mut saved).await.expect("create");
        saved.expiry_date = after(start, 3600, 0);
        saved.data.insert("extended".to_owned(), json!(true));
        let written = Arc::new(AtomicBool::new(false));
        let (other, other_record, other_archive, flag) = (
            lagging_store.clone(),
            saved.clone(),
            Arc::clone(&archive),
            Arc::clone(&written),
        );
        scheduler.arm(at, move || {
            wait(other.save(&other_record)).expect("save");
            let stored = other_archive
                .get(&domain(&other_record.id), KEY)
                .expect("get");
            flag.store(stored.is_some(), Ordering::SeqCst);
        });
        clock.set(start + Duration::from_secs(61));
        store.delete_expired().await.expect("delete_expired");
        let inside = scheduler.finish();
        let stored = store.load(&saved.id).await.expect("load");
        if written.load(Ordering::SeqCst) {
            assert_eq!(
                stored.as_ref(),
                Some(&saved),
                "{name} at {at}: removed after the save"
            );
        }
        all_records_expire_indexed(&store, &clock, start, &*archive, &format!("{name} at {at}"))
            .await;
        inside
    })
    .await;
}

/// Two hours after `start`, when every record of the race tests has expired: one
/// `delete_expired` leaves no record, since every record left behind was indexed.
async fn all_records_expire_indexed(
    store: &ArchiveStore,
    clock: &ManualClock,
    start: SystemTime,
    archive: &dyn Archive,
    case: &str,
) {
    clock.set(start + Duration::from_secs(2 * 3600));
    store.delete_expired().await.expect("delete_expired");
    assert_eq!(
        record_domains(archive),
        BTreeSet::new(),
        "{case}: unindexed"
    );
}

/// A save racing `delete_expired` just as the record expires: the record is either removed (and
/// the save, of an expired record, stored nothing) or kept with the save's expiry, and then
/// indexed; never the old record revived, never a record left unindexed.
#[tokio::test]
async fn save_racing_delete_expired_keeps_the_index_whole_at_any_boundary() {
    at_every_boundary(async |name, fresh, at| {
        let clock = ManualClock::new(SystemTime::now());
        let start = clock.now();
        let (store, scheduler, archive, _dir) = scheduled(fresh, &clock);
        let mut saved = record(after(start, 60, 0));
        store.create(&mut saved).await.expect("create");
        clock.set(start + Duration::from_secs(59));
        let (sweeper, sweep_clock) = (store.clone(), clock.clone());
        scheduler.arm(at, move || {
            sweep_clock.set(start + Duration::from_secs(61));
            wait(sweeper.delete_expired()).expect("delete_expired");
        });
        saved.expiry_date = after(start, 3600, 0);
        saved.data.insert("extended".to_owned(), json!(true));
        store.save(&saved).await.expect("save");
        let inside = scheduler.finish();
        match store.load(&saved.id).await.expect("load") {
            Some(stored) => assert_eq!(stored, saved, "{name} at {at}"),
            None => assert_eq!(record_domains(&*archive), BTreeSet::new(), "{name} at {at}"),
        }
        all_records_expire_indexed(&store, &clock, start, &*archive, &format!("{name} at {at}"))
            .await;
        inside
    })
    .await;
}

/// `delete_expired` racing a `create` whose record expires in the bucket the sweep walks (a short
/// inactivity expiry): at every boundary of the create, the record it stored stays indexed, so
/// that a sweep after its expiry deletes it. The sweep finds the create's index entry before the
/// record is there; judging it stale then would leave a record that no sweep ever deletes.
#[tokio::test]
async fn create_racing_delete_expired_keeps_the_record_indexed_at_any_boundary() {
    at_every_boundary(async |name, fresh, at| {
        // 20 seconds into a bucket of the default 60-second index: the record's expiry, 30
        // seconds on, falls in the bucket of now, which the sweep walks.
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let start = clock.now();
        let (store, scheduler, archive, _dir) = scheduled(fresh, &clock);
        // Another record first, so that the index exists before the race.
        store
            .create(&mut record(after(start, 3600, 0)))
            .await
            .expect("create");
        let sweeper = store.clone();
        scheduler.arm(at, move || {
            wait(sweeper.delete_expired()).expect("delete_expired");
        });
        let mut created = record(after(start, 30, 0));
        store.create(&mut created).await.expect("create");
        let inside = scheduler.finish();
        assert_eq!(
            store.load(&created.id).await.expect("load").as_ref(),
            Some(&created),
            "{name} at {at}"
        );
        all_records_expire_indexed(&store, &clock, start, &*archive, &format!("{name} at {at}"))
            .await;
        inside
    })
    .await;
}

/// The other order: a `create` that had written its index entry before `delete_expired` began,
/// and claims its record at any boundary of the sweep, between the sweep's finding the entry
/// without a record and its removing the entry. The record stays indexed all the same.
#[tokio::test]
async fn delete_expired_racing_a_create_it_found_unclaimed_keeps_the_record_indexed() {
    at_every_boundary(async |name, fresh, at| {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let start = clock.now();
        let (store, scheduler, archive, _dir) = scheduled(fresh, &clock);
        store
            .create(&mut record(after(start, 3600, 0)))
            .await
            .expect("create");
        // What a create writes first (see the module docs' layout): the entry, in the bucket of
        // the record's expiry.
        let mut created = record(after(start, 30, 0));
        let bucket = format!("tower-expiry-{}", (1_700_000_000 + 30) / 60);
        archive
            .set(&bucket, &domain(&created.id), b"")
            .expect("the entry");
        let (creator, claimed) = (store.clone(), Arc::new(Mutex::new(None)));
        let (mut other_record, out) = (created.clone(), Arc::clone(&claimed));
        scheduler.arm(at, move || {
            wait(creator.create(&mut other_record)).expect("create");
            *out.lock() = Some(other_record);
        });
        store.delete_expired().await.expect("delete_expired");
        let inside = scheduler.finish();
        created = claimed.lock().take().expect("the create ran");
        assert_eq!(
            store.load(&created.id).await.expect("load").as_ref(),
            Some(&created),
            "{name} at {at}"
        );
        all_records_expire_indexed(&store, &clock, start, &*archive, &format!("{name} at {at}"))
            .await;
        inside
    })
    .await;
}

/// Every archive call of a save, failed in turn: the save answers a `Backend` error carrying the
/// archive's message, and the stored record is the old one (or, when only the expiry hint after
/// the write failed, the new one, and the save answers `Ok`).
#[tokio::test]
async fn a_failed_save_leaves_the_record_as_it_was() {
    for fail_at in 0.. {
        let clock = ManualClock::new(SystemTime::now());
        let start = clock.now();
        let armed = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let (armed_hook, calls_hook) = (Arc::clone(&armed), Arc::clone(&calls));
        let archive = Arc::new(MemoryArchive::new());
        let hooked = Hooked::new(Arc::clone(&archive), move |_call| {
            if armed_hook.load(Ordering::SeqCst)
                && calls_hook.fetch_add(1, Ordering::SeqCst) == fail_at
            {
                return Err(Error::Io {
                    path: "/srv/disk".into(),
                    source: std::io::Error::other("disk full"),
                });
            }
            Ok(())
        });
        let store = ArchiveStore::new(hooked).with_clock(clock.clone());
        let mut old = record(after(start, 3600, 0));
        store.create(&mut old).await.expect("create");
        let mut new = old.clone();
        new.expiry_date = after(start, 7200, 0);
        new.data.insert("new".to_owned(), json!(true));
        armed.store(true, Ordering::SeqCst);
        let result = store.save(&new).await;
        armed.store(false, Ordering::SeqCst);
        let failed = calls.load(Ordering::SeqCst) > fail_at;
        let stored = store.load(&old.id).await.expect("load");
        match result {
            Err(session_store::Error::Backend(message)) => {
                assert!(message.contains("disk full"), "{message}");
                assert_eq!(
                    stored.as_ref(),
                    Some(&old),
                    "a failed save changed the record"
                );
            }
            Ok(()) => assert_eq!(stored.as_ref(), Some(&new)),
            Err(other) => panic!("at {fail_at}: {other:?}"),
        }
        if !failed {
            break;
        }
    }
}

/// An archive error naming a record's path (the directory tree's) reaches tower-sessions with
/// the whole chain of messages and a fingerprint instead of the id.
#[tokio::test]
async fn errors_carry_the_source_message_but_never_the_id() {
    let archive = Hooked::new(MemoryArchive::new(), |call| match *call {
        Call::Get { domain, .. } | Call::RemoveDomain { domain } => Err(Error::Io {
            path: format!("/srv/sessions/{domain}/record.json").into(),
            source: std::io::Error::other("input/output error"),
        }),
        _ => Ok(()),
    });
    let store = ArchiveStore::new(archive);
    let id = Id::default();
    let errors = [
        store.load(&id).await.expect_err("load fails"),
        store.delete(&id).await.expect_err("delete fails"),
        store
            .save(&Record {
                id,
                ..record(OffsetDateTime::now_utc())
            })
            .await
            .expect_err("save fails"),
    ];
    for err in errors {
        let session_store::Error::Backend(message) = &err else {
            panic!("not a Backend error: {err:?}");
        };
        assert!(message.contains("input/output error"), "{message}");
        assert!(
            message.contains("/srv/sessions/tower-session-#"),
            "{message}"
        );
        assert!(!message.contains(&id.to_string()), "{message}");
        assert!(!format!("{err:?}").contains(&id.to_string()));
    }
}

/// Archive calls run on a blocking thread, all of one store call on one thread, never on the
/// thread that polls the store's future.
#[tokio::test]
async fn archive_calls_run_off_the_executor_one_hop_per_call() {
    let threads = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&threads);
    let store = ArchiveStore::new(Hooked::new(MemoryArchive::new(), move |_| {
        log.lock().push(std::thread::current().id());
        Ok(())
    }));
    let polling = std::thread::current().id();
    let mut created = record(OffsetDateTime::now_utc() + time::Duration::hours(1));
    store.create(&mut created).await.expect("create");
    let seen = std::mem::take(&mut *threads.lock());
    assert!(seen.len() > 1, "create made {} archive calls", seen.len());
    assert!(
        seen.iter().all(|&thread| thread == seen[0]),
        "more than one hop"
    );
    assert_ne!(
        seen[0], polling,
        "archive calls ran on the executor's thread"
    );
    for call in 0..3 {
        match call {
            0 => drop(store.load(&created.id).await.expect("load")),
            1 => store.save(&created).await.expect("save"),
            _ => store.delete_expired().await.expect("delete_expired"),
        }
        let seen = std::mem::take(&mut *threads.lock());
        assert!(!seen.is_empty() && seen.iter().all(|&t| t == seen[0] && t != polling));
    }
}

/// Outside a tokio runtime (another executor) the calls run on the polling thread, and finish
/// at the first poll.
#[test]
fn outside_a_tokio_runtime_calls_run_in_place() {
    fn now<T>(future: impl Future<Output = T>) -> T {
        let mut future = pin!(future);
        match future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(value) => value,
            Poll::Pending => panic!("the call did not finish at once"),
        }
    }
    let store = ArchiveStore::new(MemoryArchive::new());
    let mut created = record(OffsetDateTime::now_utc() + time::Duration::hours(1));
    now(store.create(&mut created)).expect("create");
    assert_eq!(now(store.load(&created.id)).expect("load"), Some(created));
}

#[test]
fn debug_shows_settings_not_contents() {
    let store = ArchiveStore::new(MemoryArchive::new());
    let shown = format!("{store:?}");
    assert!(shown.starts_with("ArchiveStore {"), "{shown}");
    assert!(shown.contains("sweep_granularity: 60"), "{shown}");
}

/// Two saves whose expiry hints reach Redis in the other order than their writes: the record's
/// TTL ends up at the expiry it holds.
#[cfg(feature = "archive-redis")]
#[tokio::test]
async fn redis_ttl_follows_the_stored_expiry_when_hints_cross() {
    let Some(url) = redis_server::or_skip(redis_server::shared_url()) else {
        return;
    };
    let prefix = redis_server::unique_prefix();
    let archive = Arc::new(redis_server::open(&url, &prefix));
    let scheduler = Arc::new(Scheduler::default());
    let hook = Arc::clone(&scheduler);
    let hooked = Hooked::new(Arc::clone(&archive), move |call| {
        // The other save runs just before this save's first expiry hint: after its write.
        if matches!(call, Call::ExpireDomain { domain, .. } if domain.starts_with("tower-session-"))
        {
            hook.hook();
        }
        Ok(())
    });
    let store = ArchiveStore::new(hooked);
    let now = OffsetDateTime::now_utc();
    let mut first = record(now + time::Duration::hours(5));
    store.create(&mut first).await.expect("create");
    let mut second = first.clone();
    second.expiry_date = now + time::Duration::hours(9);
    second.data.insert("who".to_owned(), json!("second"));
    first.expiry_date = now + time::Duration::hours(2);
    let other = store.clone();
    let later = second.clone();
    scheduler.arm(0, move || wait(other.save(&later)).expect("save"));
    store.save(&first).await.expect("save");
    assert!(scheduler.finish(), "the other save did not run inside");
    assert_eq!(
        store.load(&first.id).await.expect("load").as_ref(),
        Some(&second)
    );
    let mut control = redis_server::control(&url);
    let hash = format!("{prefix}/{}", domain(&first.id));
    let expire_at: i64 = ::redis::cmd("PEXPIRETIME")
        .arg(&hash)
        .query(&mut control)
        .expect("PEXPIRETIME");
    let wanted = i64::try_from(second.expiry_date.unix_timestamp_nanos() / 1_000_000).expect("ms");
    assert!(
        (expire_at - wanted).abs() <= 1,
        "TTL at {expire_at}, record expires at {wanted}"
    );
}

/// The `session-archive` tool on an archive holding both kinds of sessions: `domains` lists the
/// records, `stats` counts them, `migrate` copies them byte for byte (the copy serves the
/// records), and `sweep` leaves them alone.
#[cfg(all(feature = "cli", unix))]
#[tokio::test]
async fn the_cli_handles_an_archive_holding_records() {
    use std::process::Command;

    fn run(args: &[&str]) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_session-archive"))
            .args(args)
            .output()
            .expect("run session-archive");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8 stdout")
    }

    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("both.redb");
    let mut saved = record(OffsetDateTime::now_utc() + time::Duration::hours(1));
    let session_id;
    {
        let archive: Arc<dyn Archive> =
            Arc::new(session_archive::RedbArchive::open(&path).expect("open"));
        let store = ArchiveStore::new(Arc::clone(&archive));
        store.create(&mut saved).await.expect("create");
        let sessions = Sessions::new(archive);
        let mut session = sessions.start(None, 7_u32).expect("start");
        session.save().expect("save");
        session_id = session.id().to_string();
    }
    let spec = format!("redb:{}", path.display());
    let listed = run(&["domains", &spec]);
    assert!(
        listed.lines().any(|line| line == domain(&saved.id)),
        "{listed}"
    );
    assert!(listed.lines().any(|line| line == session_id), "{listed}");
    assert!(
        listed.lines().any(|line| line.starts_with("tower-expiry-")),
        "{listed}"
    );
    let domain_count = listed.lines().count();
    let stats = run(&["stats", &spec]);
    assert!(
        stats.starts_with(&format!("domains: {domain_count}\n")),
        "{stats}"
    );

    let tree = dir.path().join("tree");
    run(&[
        "migrate",
        &spec,
        &format!("dir:{}", tree.display()),
        "--verify",
    ]);
    let back = dir.path().join("back.redb");
    run(&[
        "migrate",
        &format!("dir:{}", tree.display()),
        &format!("redb:{}", back.display()),
    ]);
    let store = ArchiveStore::new(session_archive::RedbArchive::open(&back).expect("open copy"));
    assert_eq!(
        store.load(&saved.id).await.expect("load").as_ref(),
        Some(&saved)
    );
    drop(store);

    // The sessions' sweep tool judges only sessions.
    run(&[
        "sweep",
        &spec,
        "--idle",
        "1s",
        "--absolute",
        "1s",
        "--override",
    ]);
    let store = ArchiveStore::new(session_archive::RedbArchive::open(&path).expect("reopen"));
    assert_eq!(store.load(&saved.id).await.expect("load"), Some(saved));
}
