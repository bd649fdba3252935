//! The actix-session store's contract, point by point (see `session_archive::actix_session`):
//! `save` makes a fresh key and never overwrites; `update` and `update_ttl` never resurrect a
//! deleted or expired record; `load` never returns an expired state; `delete` is final; the
//! sweep removes expired records in O(expired); the records live in a namespace of their own
//! beside typed sessions. actix-session's own acceptance suite runs against the store in
//! tests/actix_session_acceptance.rs.
#![cfg(feature = "actix-session")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use actix_session::storage::{LoadError, SessionKey, SessionStore};
use actix_web::cookie::time::Duration as Ttl;
use session_archive::actix_session::ArchiveStore;
use session_archive::conformance::{Call, Hooked};
use session_archive::session::ManualClock;
use session_archive::{Archive, ArchiveExt, MemoryArchive, Sessions};

/// Runs a future on an actix runtime, as actix-web's workers do.
fn run<T>(future: impl Future<Output = T>) -> T {
    actix_web::rt::System::new().block_on(future)
}

fn state(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Saves a record of `pairs` for `ttl`, which must succeed; its key.
async fn saved(store: &ArchiveStore, pairs: &[(&str, &str)], ttl: &Ttl) -> SessionKey {
    store.save(state(pairs), ttl).await.expect("a save")
}

/// Another `SessionKey` of the same text (the type is not `Clone`).
fn again(key: &SessionKey) -> SessionKey {
    SessionKey::try_from(key.as_ref().to_owned()).expect("a key")
}

/// A store over a fresh memory archive on a manual clock.
fn store() -> (Arc<MemoryArchive>, ManualClock, ArchiveStore) {
    let archive = Arc::new(MemoryArchive::new());
    let clock = ManualClock::new(SystemTime::now());
    let store = ArchiveStore::new(Arc::clone(&archive)).with_clock(clock.clone());
    (archive, clock, store)
}

/// The record domains of the store in `archive`.
fn records(archive: &dyn Archive) -> Vec<String> {
    archive
        .domains()
        .map(|domain| domain.expect("a listing"))
        .filter(|domain| domain.starts_with("actix-session-"))
        .collect()
}

#[test]
fn save_makes_a_fresh_key_each_time_and_both_records_load() {
    let (archive, _clock, store) = store();
    run(async {
        let one = state(&[("counter", "1")]);
        let a = store.save(one.clone(), &Ttl::hours(1)).await.unwrap();
        let b = store.save(one.clone(), &Ttl::hours(1)).await.unwrap();
        assert_ne!(a.as_ref(), b.as_ref());
        for key in [&a, &b] {
            assert_eq!(key.as_ref().len(), 64);
            assert!(key.as_ref().bytes().all(|c| c.is_ascii_hexdigit()));
            assert_eq!(store.load(key).await.unwrap(), Some(one.clone()));
        }
        assert_eq!(records(&*archive).len(), 2);
    });
}

/// A save whose first key turns out taken (another record claimed it first) draws another one
/// and leaves the taken record as it was.
#[test]
fn save_never_overwrites_a_taken_key() {
    let inner = Arc::new(MemoryArchive::new());
    let squatter = Arc::clone(&inner);
    let taken = Arc::new(Mutex::new(None::<String>));
    let seen = Arc::clone(&taken);
    let archive = Hooked::new(Arc::clone(&inner), move |call| {
        if let Call::CompareAndSwap {
            domain,
            key,
            expected: None,
            ..
        } = call
            && domain.starts_with("actix-session-")
        {
            let mut taken = seen.lock().unwrap();
            if taken.is_none() {
                squatter.set(domain, key, b"someone else's")?;
                *taken = Some((*domain).to_owned());
            }
        }
        Ok(())
    });
    let store = ArchiveStore::new(archive);
    run(async {
        let key = saved(&store, &[("a", "1")], &Ttl::hours(1)).await;
        let taken = taken
            .lock()
            .unwrap()
            .clone()
            .expect("the first key was taken");
        assert_ne!(taken, format!("actix-session-{}", key.as_ref()));
        assert_eq!(
            inner.get(&taken, "record.json").unwrap().as_deref(),
            Some(&b"someone else's"[..])
        );
        assert_eq!(store.load(&key).await.unwrap(), Some(state(&[("a", "1")])));
    });
}

#[test]
fn update_replaces_the_state_and_keeps_the_key() {
    let (_archive, _clock, store) = store();
    run(async {
        let key = saved(&store, &[("n", "1")], &Ttl::hours(1)).await;
        let same = store
            .update(again(&key), state(&[("n", "2")]), &Ttl::hours(1))
            .await
            .unwrap();
        assert_eq!(same.as_ref(), key.as_ref());
        assert_eq!(store.load(&key).await.unwrap(), Some(state(&[("n", "2")])));
    });
}

#[test]
fn update_and_update_ttl_of_a_deleted_key_do_not_resurrect_it() {
    let (archive, _clock, store) = store();
    run(async {
        let key = saved(&store, &[("user", "ada")], &Ttl::hours(1)).await;
        store.delete(&key).await.unwrap();
        let answered = store
            .update(again(&key), state(&[("user", "ada")]), &Ttl::hours(1))
            .await
            .unwrap();
        assert_eq!(
            answered.as_ref(),
            key.as_ref(),
            "no fresh key with the old state"
        );
        store.update_ttl(&key, &Ttl::hours(2)).await.unwrap();
        assert_eq!(store.load(&key).await.unwrap(), None);
        assert!(records(&*archive).is_empty(), "{:?}", records(&*archive));
    });
}

#[test]
fn load_never_returns_an_expired_state_and_update_does_not_revive_it() {
    let (_archive, clock, store) = store();
    run(async {
        let key = saved(&store, &[("n", "1")], &Ttl::seconds(60)).await;
        clock.advance(Duration::from_secs(59));
        assert!(store.load(&key).await.unwrap().is_some());
        clock.advance(Duration::from_secs(1));
        assert_eq!(store.load(&key).await.unwrap(), None, "expired at its TTL");
        store
            .update(again(&key), state(&[("n", "2")]), &Ttl::hours(1))
            .await
            .unwrap();
        store.update_ttl(&key, &Ttl::hours(1)).await.unwrap();
        assert_eq!(store.load(&key).await.unwrap(), None);
    });
}

#[test]
fn update_ttl_moves_the_expiry_and_keeps_the_state() {
    let (_archive, clock, store) = store();
    run(async {
        let kept = state(&[("cart", "[1,2]")]);
        let key = store.save(kept.clone(), &Ttl::seconds(10)).await.unwrap();
        store.update_ttl(&key, &Ttl::seconds(100)).await.unwrap();
        clock.advance(Duration::from_secs(50));
        assert_eq!(store.load(&key).await.unwrap(), Some(kept));
        clock.advance(Duration::from_secs(50));
        assert_eq!(store.load(&key).await.unwrap(), None);
    });
}

#[test]
fn delete_is_final() {
    let (archive, _clock, store) = store();
    run(async {
        let key = saved(&store, &[("n", "1")], &Ttl::hours(1)).await;
        store.delete(&key).await.unwrap();
        assert_eq!(store.load(&key).await.unwrap(), None);
        store.delete(&key).await.unwrap();
        assert!(records(&*archive).is_empty());
    });
}

/// Keys this store could not have made (a forged or foreign cookie) name nothing, and never
/// reach the archive as names.
#[test]
fn keys_the_store_never_makes_touch_nothing() {
    let touched = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&touched);
    let store = ArchiveStore::new(Hooked::new(MemoryArchive::new(), move |_| {
        flag.store(true, Ordering::SeqCst);
        Ok(())
    }));
    run(async {
        for forged in ["../../etc/passwd", "x", &"A".repeat(64), &"0".repeat(65)] {
            let key = SessionKey::try_from(forged.to_owned()).unwrap();
            assert_eq!(store.load(&key).await.unwrap(), None);
            let answered = store
                .update(again(&key), state(&[("a", "1")]), &Ttl::hours(1))
                .await
                .unwrap();
            assert_eq!(answered.as_ref(), forged);
            store.update_ttl(&key, &Ttl::hours(1)).await.unwrap();
            store.delete(&key).await.unwrap();
        }
    });
    assert!(!touched.load(Ordering::SeqCst), "the archive was called");
}

#[test]
fn a_record_that_does_not_decode_is_a_deserialization_error_and_is_left_alone() {
    let (archive, _clock, store) = store();
    run(async {
        let key = saved(&store, &[("n", "1")], &Ttl::hours(1)).await;
        let domain = format!("actix-session-{}", key.as_ref());
        archive.set(&domain, "record.json", b"{not json").unwrap();
        let err = store.load(&key).await.unwrap_err();
        assert!(matches!(err, LoadError::Deserialization(_)), "{err:?}");
        let shown = format!("{:#}", anyhow::Error::new(err));
        assert!(
            !shown.contains(key.as_ref()),
            "the key is a bearer token: {shown}"
        );
        assert_eq!(
            archive.get(&domain, "record.json").unwrap().as_deref(),
            Some(&b"{not json"[..])
        );
    });
}

/// The sweep removes the expired records and reads only what the index points it at: with
/// 200 live records beside 3 expired ones, it reads a handful of records, not 200.
#[test]
fn delete_expired_removes_the_expired_records_in_o_of_expired() {
    let reads = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&reads);
    let inner = Arc::new(MemoryArchive::new());
    let archive = Hooked::new(Arc::clone(&inner), move |call| {
        if let Call::Get { domain, .. } = call
            && domain.starts_with("actix-session-")
        {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    });
    let clock = ManualClock::new(SystemTime::now());
    let store = ArchiveStore::new(archive)
        .with_clock(clock.clone())
        .with_sweep_granularity(Duration::from_secs(60));
    run(async {
        let mut live = Vec::new();
        for n in 0..200 {
            let key = store
                .save(state(&[("n", &n.to_string())]), &Ttl::days(1))
                .await;
            live.push(key.unwrap());
        }
        let mut short = Vec::new();
        for _ in 0..3 {
            short.push(store.save(state(&[]), &Ttl::seconds(30)).await.unwrap());
        }
        clock.advance(Duration::from_secs(600));
        reads.store(0, Ordering::SeqCst);
        assert_eq!(store.delete_expired().await.unwrap(), 3);
        assert!(
            reads.load(Ordering::SeqCst) <= 6,
            "{} reads",
            reads.load(Ordering::SeqCst)
        );
        assert_eq!(records(&*inner).len(), 200);
        for key in &short {
            let domain = format!("actix-session-{}", key.as_ref());
            assert!(!inner.has_domain(&domain).unwrap());
        }
        assert!(store.load(&live[7]).await.unwrap().is_some());
    });
}

/// One archive serves typed sessions and actix-session records side by side: neither's sweep
/// touches the other's, and the store's names are its own.
#[test]
fn records_live_in_their_own_namespace_beside_typed_sessions() {
    let archive: Arc<dyn Archive> = Arc::new(MemoryArchive::new());
    let clock = ManualClock::new(SystemTime::now());
    let store = ArchiveStore::new(Arc::clone(&archive)).with_clock(clock.clone());
    let sessions = Sessions::builder(Arc::clone(&archive))
        .clock(clock.clone())
        .build();
    let mut typed = sessions.start(None, 5_u8).unwrap();
    typed.save().unwrap();
    let key = run(store.save(state(&[("n", "1")]), &Ttl::days(30))).unwrap();
    clock.advance(Duration::from_secs(3 * 24 * 3600));
    sessions.sweep().unwrap();
    assert!(
        run(store.load(&key)).unwrap().is_some(),
        "the sessions' sweep left it"
    );
    run(store.delete_expired()).unwrap();
    let domains: Vec<String> = archive.domains().map(Result::unwrap).collect();
    assert!(
        domains.iter().all(|d| !d.starts_with("actix-")
            || d.starts_with("actix-session-")
            || d.starts_with("actix-expiry-")
            || d == "actix-sweep-cursor"),
        "{domains:?}"
    );
    assert_eq!(records(&*archive).len(), 1);
}
