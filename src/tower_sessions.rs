//! [tower-sessions] integration: [`ArchiveStore`], a `SessionStore` over any [`Archive`].
//!
//! tower-sessions (0.15) manages the cookie and the session's data; its stores only keep records.
//! `ArchiveStore` keeps them in any archive of this crate, so an application written the
//! tower-sessions way gets one durable redb file with group commit, a directory tree, or Redis,
//! without touching its handlers:
//!
//! ```no_run
//! use session_archive::RedbArchive;
//! use session_archive::tower_sessions::ArchiveStore;
//!
//! # fn main() -> Result<(), session_archive::Error> {
//! let store = ArchiveStore::new(RedbArchive::open(".gen/sessions.redb")?);
//! let layer = tower_sessions::SessionManagerLayer::new(store);
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```
//!
//! # What the store promises
//!
//! - **Off the executor.** Archive calls block (an fsync, a disk, a network round trip), so each
//!   store call runs them on tokio's blocking threads, in one `spawn_blocking` (outside a tokio
//!   runtime, on the calling thread).
//! - **`create` never overwrites.** It claims the id by a compare-and-swap from absent, and on a
//!   collision draws new ids until one is free.
//! - **`save` never resurrects.** It replaces the stored record in one atomic
//!   [`update`](Archive::update) that writes only over a stored, unexpired record; a record that
//!   was deleted meanwhile (a request racing a logout, a `flush` or a `cycle_id`), or whose
//!   expiry has passed, stays gone, and the save answers `Ok` so that the losing request is not
//!   turned into an error page. Concurrent saves of one record all land, the last one winning,
//!   as tower-sessions' own stores do (on redb in one shared commit), rather than failing
//!   their compare-and-swap in turn.
//! - **`load`** returns `None` for a record whose `expiry_date` has passed, and a
//!   [`Decode`](session_store::Error::Decode) error, never a panic, for bytes that are not a
//!   record; those bytes are left as they are. A record comes back exactly as saved: id, data
//!   (floats included) and `expiry_date` to the nanosecond, with its UTC offset.
//! - **`delete_expired` costs O(expired records)**, not O(all records): it walks the same expiry
//!   index as [`Sessions::sweep`](crate::session::Sessions::sweep), under names of its own,
//!   visiting only the entries come due since its previous run. Besides the expired records, those
//!   are the records whose expiry saves pushed later: a save that extends the expiry writes no
//!   index entry, and the sweep moves the old one on when it comes to it, once per record however
//!   many saves there were. Each expired record goes by a compare-and-swap of the bytes the sweep
//!   judged, so a record saved after that judgement survives. An entry found without a record
//!   (deleted) is removed, and the record read again after the removal: a `create` writes its
//!   entry before its record, and checks the entry after, so one racing the sweep keeps it. Run
//!   it periodically (see [`ArchiveStore`]); on Redis the records also expire natively.
//! - **A failed call leaves the records as they were**, but for a write that storage failed in a
//!   way that cannot tell whether it landed (a reply that timed out): that write may be stored
//!   (a record a failed `create` stored under an id it never handed out expires and is swept
//!   like any other). Errors map onto
//!   [`session_store::Error`]: `Backend` for the archive's, `Encode`/`Decode` for serialization,
//!   each with the whole chain of messages. Session ids are bearer tokens: messages name a
//!   record by a fingerprint (`#` and 12 hex digits of the SHA-256 of the id), never by its id.
//!
//! # Storage layout
//!
//! Each record is the key `record.json` of the domain `tower-session-<id>`, where `<id>` is the
//! cookie value (22 characters of URL-safe base64). It holds compact JSON:
//! `{"expiry":{"unix":1767225600,"nanos":250000000,"offset":0},"data":{"foo":42}}` (the expiry
//! in unix seconds, the nanoseconds within that second, and its UTC offset in seconds). The expiry
//! index is `tower-expiry-<n>` and `tower-sweep-cursor`. None of these names is a UUID, nor
//! `expiry-…`, `sweep-cursor` or `corrupt-sessions`, so one archive can serve a [`Sessions`]
//! and an `ArchiveStore` side by side, and the `session-archive` tool's `domains`, `stats` and
//! `migrate` handle them as any other domains.
//!
//! # Which backend
//!
//! [`RedbArchive`](crate::RedbArchive) on one server (one durable file; group commit shares
//! fsyncs between concurrent requests), `RedisArchive` for several app
//! instances (records also expire natively), `DirArchive` to see each record
//! as a file, [`MemoryArchive`](crate::MemoryArchive) for tests. `cargo run --example
//! tower_sessions --features tower-sessions,axum` serves the welcome app this way.
//!
//! [tower-sessions]: https://docs.rs/tower-sessions/0.15
//! [`Sessions`]: crate::session::Sessions

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::{OffsetDateTime, UtcOffset};
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{self, ExpiredDeletion, SessionStore};

use crate::archive::{Archive, Change, DEFAULT_PAGE_SIZE, Update};
use crate::error::Error;
use crate::ids::{TOWER_RECORD_PREFIX, fingerprint, redact};
use crate::session::clock::{Clock, SystemClock};
use crate::session::expiry::{DEFAULT_SWEEP_GRANULARITY, Index, Judge, Lifetime, Verdict, place};
use crate::session::layout::{IndexNames, TOWER_INDEX, TOWER_RECORD_KEY};

/// The prefix of a record's domain; the id follows.
const RECORD_PREFIX: &str = TOWER_RECORD_PREFIX;
/// The key holding a record in its domain.
const RECORD_KEY: &str = TOWER_RECORD_KEY;
/// The store's expiry index.
const INDEX: IndexNames = TOWER_INDEX;
/// How many ids `create` draws before giving up. Ids have 128 random bits, so a second draw
/// practically never happens; the bound only keeps a backend whose compare-and-swap never
/// succeeds from looping forever.
const CREATE_ATTEMPTS: usize = 4;
/// How many times `save` (and the expiry hint) reads the record again after another writer
/// changed it between the read and the compare-and-swap. Each failed swap means another write
/// succeeded, so this only bounds the work against a misbehaving backend.
const SAVE_ATTEMPTS: usize = 16;

/// A tower-sessions [`SessionStore`] (and [`ExpiredDeletion`]) over any [`Archive`]; see the
/// [module docs](self) for what it promises and how it stores records.
///
/// It is cheap to clone (one `Arc` inside); clones share the archive. Expired records are
/// invisible to [`load`](SessionStore::load) at once, and removed from the archive by
/// [`delete_expired`](ExpiredDeletion::delete_expired), which walks only the part of the expiry
/// index that has come due since its previous run (in any process sharing the archive). Run it
/// every few minutes, for example from a task:
///
/// ```no_run
/// use std::time::Duration;
/// use session_archive::RedbArchive;
/// use session_archive::tower_sessions::ArchiveStore;
/// use tower_sessions_core::ExpiredDeletion;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = ArchiveStore::new(RedbArchive::open(".gen/sessions.redb")?);
/// let sweeper = store.clone();
/// tokio::spawn(async move {
///     let mut every = tokio::time::interval(Duration::from_secs(60));
///     loop {
///         every.tick().await;
///         if let Err(err) = sweeper.delete_expired().await {
///             eprintln!("deleting expired sessions failed: {err}");
///         }
///     }
/// });
/// # Ok(())
/// # }
/// ```
///
/// # Examples
///
/// ```
/// use session_archive::MemoryArchive;
/// use session_archive::tower_sessions::ArchiveStore;
/// use tower_sessions_core::SessionStore;
/// use tower_sessions_core::session::{Id, Record};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_sessions_core::session_store::Error> {
/// let store = ArchiveStore::new(MemoryArchive::new());
/// let mut record = Record {
///     id: Id::default(),
///     data: [("foo".to_owned(), serde_json::json!(42))].into(),
///     expiry_date: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
/// };
/// store.create(&mut record).await?;
/// assert_eq!(store.load(&record.id).await?, Some(record.clone()));
/// store.delete(&record.id).await?;
/// assert_eq!(store.load(&record.id).await?, None);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ArchiveStore {
    inner: Arc<Inner>,
}

struct Inner {
    archive: Arc<dyn Archive>,
    clock: Arc<dyn Clock>,
    /// The index's bucket width for a new index, in seconds.
    granularity: u64,
    /// The index's width as last read from its record; 0 until then.
    index_width: AtomicU64,
    /// Unused by this store (it records no timeouts), but part of every index's state.
    settings_recorded: AtomicBool,
}

impl fmt::Debug for ArchiveStore {
    /// The settings, never the archive's contents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArchiveStore")
            .field("sweep_granularity", &self.inner.granularity)
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

impl ArchiveStore {
    /// Returns a store keeping its records in `archive`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use session_archive::{Archive, MemoryArchive, Sessions};
    /// use session_archive::tower_sessions::ArchiveStore;
    ///
    /// // One archive can hold both kinds of sessions.
    /// let archive: Arc<dyn Archive> = Arc::new(MemoryArchive::new());
    /// let store = ArchiveStore::new(Arc::clone(&archive));
    /// let sessions = Sessions::new(archive);
    /// # let _ = (store, sessions);
    /// ```
    pub fn new(archive: impl Archive + 'static) -> ArchiveStore {
        ArchiveStore {
            inner: Arc::new(Inner {
                archive: Arc::new(archive),
                clock: Arc::new(SystemClock),
                granularity: DEFAULT_SWEEP_GRANULARITY.as_secs(),
                index_width: AtomicU64::new(0),
                settings_recorded: AtomicBool::new(false),
            }),
        }
    }

    /// Returns the store judging expiry by `clock` instead of the system clock, so that tests can
    /// move time. (tower-sessions itself computes each record's `expiry_date` from the system
    /// clock.)
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use session_archive::MemoryArchive;
    /// use session_archive::session::ManualClock;
    /// use session_archive::tower_sessions::ArchiveStore;
    ///
    /// let clock = ManualClock::new(SystemTime::now());
    /// let store = ArchiveStore::new(MemoryArchive::new()).with_clock(clock.clone());
    /// # let _ = store;
    /// ```
    #[must_use]
    pub fn with_clock(self, clock: impl Clock) -> ArchiveStore {
        self.rebuilt(|inner| inner.clock = Arc::new(clock))
    }

    /// Returns the store with another width of one expiry-index bucket (whole seconds, at least
    /// one) for an archive that has no index of this store yet; the default is
    /// [`DEFAULT_SWEEP_GRANULARITY`]. As with
    /// [`SessionsBuilder::sweep_granularity`](crate::session::SessionsBuilder::sweep_granularity),
    /// the width is recorded in the archive by the first store to index a record there, and every
    /// store over that archive then uses the recorded one.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_archive::MemoryArchive;
    /// use session_archive::tower_sessions::ArchiveStore;
    ///
    /// let store = ArchiveStore::new(MemoryArchive::new())
    ///     .with_sweep_granularity(Duration::from_secs(300));
    /// # let _ = store;
    /// ```
    #[must_use]
    pub fn with_sweep_granularity(self, granularity: Duration) -> ArchiveStore {
        self.rebuilt(|inner| inner.granularity = granularity.as_secs().max(1))
    }

    fn rebuilt(self, change: impl FnOnce(&mut Inner)) -> ArchiveStore {
        let mut inner = Inner {
            archive: Arc::clone(&self.inner.archive),
            clock: Arc::clone(&self.inner.clock),
            granularity: self.inner.granularity,
            index_width: AtomicU64::new(self.inner.index_width.load(Ordering::Acquire)),
            settings_recorded: AtomicBool::new(false),
        };
        change(&mut inner);
        ArchiveStore {
            inner: Arc::new(inner),
        }
    }

    /// Runs `op` on the store's state where it may block: on tokio's blocking threads inside a
    /// tokio runtime, on this thread outside one. One hop per store call.
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Inner) -> session_store::Result<T> + Send + 'static,
    ) -> session_store::Result<T> {
        let inner = Arc::clone(&self.inner);
        if tokio::runtime::Handle::try_current().is_err() {
            return op(&inner);
        }
        tokio::task::spawn_blocking(move || op(&inner))
            .await
            .map_err(|err| {
                session_store::Error::Backend(format!("the archive call did not complete: {err}"))
            })?
    }
}

#[async_trait]
impl SessionStore for ArchiveStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let bytes = encode(record)?;
        let (first, expiry) = (record.id, record.expiry_date);
        record.id = self
            .blocking(move |inner| inner.create(first, &bytes, expiry))
            .await?;
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let bytes = encode(record)?;
        let (id, expiry) = (record.id, record.expiry_date);
        self.blocking(move |inner| inner.save(&id, bytes, expiry))
            .await
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        let id = *session_id;
        self.blocking(move |inner| inner.load(&id)).await
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        let id = *session_id;
        self.blocking(move |inner| {
            inner
                .archive
                .remove_domain(&record_domain(&id))
                .map_err(|err| backend(&err))?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl ExpiredDeletion for ArchiveStore {
    async fn delete_expired(&self) -> session_store::Result<()> {
        self.blocking(|inner| {
            Sweep::new(inner).run().map_err(|err| backend(&err))?;
            Ok(())
        })
        .await
    }
}

impl Inner {
    fn index(&self) -> Index<'_> {
        Index {
            archive: &*self.archive,
            names: INDEX,
            clock: &*self.clock,
            granularity: self.granularity,
            // No timeouts to record: each record carries its own expiry.
            lifetime: Lifetime {
                idle: None,
                absolute: None,
            },
            known_width: &self.index_width,
            settings_recorded: &self.settings_recorded,
        }
    }

    /// The time now, in nanoseconds since the epoch.
    fn now_nanos(&self) -> i128 {
        unix_nanos(self.clock.now())
    }

    /// Stores a new record, claiming `first` or, when it is taken, fresh ids until one is free;
    /// returns the id it claimed.
    ///
    /// The index entry goes first, so that no stored expiry is ever without one; after a failure
    /// or a collision it is spurious, and the sweep drops it. A sweep may find the entry before
    /// the record is claimed and remove it as stale; so after the claim the create makes sure
    /// the entry is still there (see [`ensure_indexed`](Self::ensure_indexed)).
    fn create(&self, first: Id, bytes: &[u8], expiry: OffsetDateTime) -> session_store::Result<Id> {
        let mut id = first;
        let at = index_secs(expiry);
        for _ in 0..CREATE_ATTEMPTS {
            let domain = record_domain(&id);
            self.index()
                .index_all(&[(domain.as_str(), at)], false)
                .map_err(|err| backend(&err))?;
            let claimed = self
                .archive
                .compare_and_swap(&domain, RECORD_KEY, None, Some(bytes))
                .map_err(|err| backend(&err))?;
            if claimed {
                if let Err(err) = self.ensure_indexed(&domain, at) {
                    // The id never left this call, so nobody else can have reached the record;
                    // removing it keeps a record that may be unindexed from staying forever.
                    let _ = self
                        .archive
                        .compare_and_swap(&domain, RECORD_KEY, Some(bytes), None);
                    return Err(backend(&err));
                }
                self.expire_hint(&domain, bytes.to_vec(), expiry);
                return Ok(id);
            }
            id = Id::default();
        }
        Err(session_store::Error::Backend(format!(
            "no free session id after {CREATE_ATTEMPTS} attempts: the archive's \
             compare-and-swap never succeeds"
        )))
    }

    /// After `create` claimed the record `domain` (expiring at `at`, unix seconds): writes its
    /// index entry again unless it is still where `create` wrote it.
    ///
    /// A sweep that found the entry before the claim, with no record behind it, removes the
    /// entry and then reads the record again, indexing it if it is there by then (see
    /// [`Sweep::forget_vanished`]). Checking here, after the claim, closes the other order: if
    /// the sweep's removal comes before this check, the check writes the entry again; if it
    /// comes after, the sweep's read that follows it finds the record. An entry that
    /// `index_all` had to move elsewhere is not found here and is written once more, which
    /// only costs a write.
    fn ensure_indexed(&self, domain: &str, at: u64) -> crate::error::Result<()> {
        let index = self.index();
        let width = match self.index_width.load(Ordering::Acquire) {
            0 => self.granularity,
            width => width,
        };
        let bucket = bucket_domain(place(at, index.now(), width, 0));
        if !self.archive.has(&bucket, domain)? {
            index.index_all(&[(domain, at)], false)?;
        }
        Ok(())
    }

    /// Replaces a stored, unexpired record; does nothing when there is none (see the module docs).
    ///
    /// One [`Archive::update`] is the linearization point: its change stores the record unless
    /// it is gone or expired, so concurrent saves of one record each land (the last one wins)
    /// instead of failing their compare-and-swap in turn; on redb they share one commit. The
    /// index entry covering the new expiry is written before (see [`covers`]); should the
    /// stored record have changed meanwhile so that no entry covers it any more, the change
    /// writes nothing and the save starts over.
    fn save(&self, id: &Id, bytes: Vec<u8>, expiry: OffsetDateTime) -> session_store::Result<()> {
        let domain = record_domain(id);
        let at = index_secs(expiry);
        let width = self.index_width.load(Ordering::Acquire);
        let expired = expired_by(&self.clock);
        for _ in 0..SAVE_ATTEMPTS {
            let Some(current) = self
                .archive
                .get(&domain, RECORD_KEY)
                .map_err(|err| backend(&err))?
            else {
                return Ok(());
            };
            let stored = decode_expiry(&current);
            if expired(stored) || current == bytes {
                return Ok(());
            }
            // A record whose expiry moves earlier gets an entry there first, as in `create`.
            let indexed = !covers(width, stored, at);
            if indexed {
                self.index()
                    .index_all(&[(domain.as_str(), at)], false)
                    .map_err(|err| backend(&err))?;
            }
            let moved = Arc::new(AtomicBool::new(false));
            let covered = move |stored| indexed || covers(width, stored, at);
            let change = save_change(
                bytes.clone(),
                expired_by(&self.clock),
                covered,
                Arc::clone(&moved),
            );
            let stored = self
                .archive
                .update(&domain, RECORD_KEY, change)
                .map_err(|err| backend(&err))?;
            if moved.load(Ordering::Relaxed) {
                continue;
            }
            if stored.as_deref() == Some(bytes.as_slice()) {
                self.expire_hint(&domain, bytes, expiry);
            }
            return Ok(());
        }
        Err(session_store::Error::Backend(format!(
            "session {}: the record kept changing during {SAVE_ATTEMPTS} attempts to save it",
            id_fingerprint(id)
        )))
    }

    fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let domain = record_domain(id);
        let Some(raw) = self
            .archive
            .get(&domain, RECORD_KEY)
            .map_err(|err| backend(&err))?
        else {
            return Ok(None);
        };
        let stored: TowerRecord = serde_json::from_slice(&raw).map_err(|err| {
            session_store::Error::Decode(format!(
                "session {}: the stored record does not decode: {err}",
                id_fingerprint(id)
            ))
        })?;
        let expiry_date = stored.expiry.date().ok_or_else(|| {
            session_store::Error::Decode(format!(
                "session {}: the stored record's expiry is out of range",
                id_fingerprint(id)
            ))
        })?;
        if expiry_date.unix_timestamp_nanos() <= self.now_nanos() {
            return Ok(None);
        }
        Ok(Some(Record {
            id: *id,
            data: stored.data,
            expiry_date,
        }))
    }

    /// Asks a backend with native expiry (Redis) to drop the record's domain at its expiry.
    /// Called after every write of a record, since a write may clear it. Two saves may hint in the
    /// other order than they wrote, so on such a backend the record is read back, and hinted
    /// again while another write has replaced the one hinted for.
    ///
    /// The write it follows has happened, so a failure here does not fail the store call: the
    /// record's index entry, written before it, still has `delete_expired` remove it.
    fn expire_hint(&self, domain: &str, mut bytes: Vec<u8>, mut expiry: OffsetDateTime) {
        for _ in 0..SAVE_ATTEMPTS {
            match self.archive.expire_domain(domain, system_time(expiry)) {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
            let Ok(Some(current)) = self.archive.get(domain, RECORD_KEY) else {
                return;
            };
            if current == bytes {
                return;
            }
            let Some(stored) = decode_expiry(&current) else {
                return;
            };
            (bytes, expiry) = (current, stored);
        }
    }
}

/// A run of `delete_expired`: judges the index entries (record domains) by the records' expiry.
///
/// An entry whose record is missing is usually stale (the record was deleted), but it may also
/// be the entry of a `create` that has not claimed its record yet. Removing it then would leave
/// that record unindexed, and never deleted. So such an entry is not dropped with the rest of its
/// page: the sweep keeps it in `vanished`, removes it itself, and then reads the record again,
/// indexing it if it appeared meanwhile (see [`forget_vanished`](Self::forget_vanished) and
/// [`Inner::ensure_indexed`], the create's half).
struct Sweep<'a> {
    inner: &'a Inner,
    /// Entries found without a record, as (bucket, entry), not yet removed.
    vanished: RefCell<Vec<(u64, String)>>,
}

impl<'a> Sweep<'a> {
    fn new(inner: &'a Inner) -> Sweep<'a> {
        Sweep {
            inner,
            vanished: RefCell::new(Vec::new()),
        }
    }

    /// Runs the sweep, then removes the entries found without a record.
    fn run(&self) -> crate::error::Result<usize> {
        let removed = self.inner.index().sweep(self)?;
        self.forget_vanished()?;
        Ok(removed)
    }

    /// Notes an entry of `bucket` found without a record. Entries are removed a bucket, or a
    /// listing page, at a time, so that a sweep costs a few commits per page, as the index's own
    /// removals do, and so that an error or a crash leaves unremoved at most the entries of the
    /// bucket at hand: entries too many (spurious, with no record), never a record without one.
    fn vanished(&self, bucket: u64, entry: &str) -> crate::error::Result<()> {
        let other_bucket = self
            .vanished
            .borrow()
            .last()
            .is_some_and(|&(last, _)| last != bucket);
        if other_bucket || self.vanished.borrow().len() >= DEFAULT_PAGE_SIZE {
            self.forget_vanished()?;
        }
        self.vanished.borrow_mut().push((bucket, entry.to_owned()));
        Ok(())
    }

    /// Removes the entries found without a record, then reads those records again and indexes
    /// any that a `create` claimed since: the removal proves an entry stale only for a record
    /// still missing after it. (A create claims first and checks its entry after, so whichever
    /// of the two comes second sees the other.)
    fn forget_vanished(&self) -> crate::error::Result<()> {
        let vanished = std::mem::take(&mut *self.vanished.borrow_mut());
        if vanished.is_empty() {
            return Ok(());
        }
        let buckets: Vec<(String, &str)> = vanished
            .iter()
            .map(|(bucket, entry)| (bucket_domain(*bucket), entry.as_str()))
            .collect();
        let removals: Vec<(&str, &str)> = buckets.iter().map(|(b, e)| (b.as_str(), *e)).collect();
        let archive = &*self.inner.archive;
        archive.remove_many(&removals)?;
        let mut appeared = Vec::new();
        for (_, entry) in &vanished {
            let expiry = archive
                .get(entry, RECORD_KEY)?
                .as_deref()
                .and_then(decode_expiry);
            if let Some(expiry) = expiry {
                appeared.push((entry.as_str(), index_secs(expiry)));
            }
        }
        if !appeared.is_empty() {
            self.inner.index().index_all(&appeared, false)?;
        }
        Ok(())
    }
}

impl Judge for Sweep<'_> {
    fn verdict(
        &self,
        entry: &str,
        bucket: u64,
        now: u64,
        width: u64,
    ) -> crate::error::Result<Verdict> {
        if !entry.starts_with(RECORD_PREFIX) {
            return Ok(Verdict::Drop);
        }
        let archive = &*self.inner.archive;
        let mut at = 0;
        for _ in 0..SAVE_ATTEMPTS {
            let Some(raw) = archive.get(entry, RECORD_KEY)? else {
                // Not dropped with the page: see `forget_vanished`.
                self.vanished(bucket, entry)?;
                return Ok(Verdict::Keep);
            };
            // Bytes that are not a record are left in place, as `load` reports them.
            let Some(expiry) = decode_expiry(&raw) else {
                return Ok(Verdict::Drop);
            };
            at = index_secs(expiry);
            if expiry.unix_timestamp_nanos() > self.inner.now_nanos() {
                return Ok(if place(at, now, width, 0) == bucket {
                    Verdict::Keep
                } else {
                    Verdict::Later { at }
                });
            }
            // Removing only the bytes judged keeps a record that a save replaced meanwhile; that
            // record is then judged again, here. The entry goes with the page, after the record:
            // no create can claim this id again, since ids are drawn fresh.
            if archive.compare_and_swap(entry, RECORD_KEY, Some(&raw), None)? {
                return Ok(Verdict::Drop);
            }
        }
        // The record keeps changing under the sweep: it is live, and its entry moves to where
        // the sweep comes again.
        Ok(Verdict::Later { at })
    }

    fn remove_expired(&self, _expired: &[&str]) -> crate::error::Result<usize> {
        // `verdict` removes each expired record itself, by a compare-and-swap, and never answers
        // `Expired`: the archive has no batch of compare-and-swaps.
        Ok(0)
    }
}

/// A record as stored (see the module docs).
#[derive(Serialize)]
struct TowerRecordRef<'a> {
    expiry: Expiry,
    data: &'a HashMap<String, Value>,
}

#[derive(Deserialize)]
struct TowerRecord {
    expiry: Expiry,
    data: HashMap<String, Value>,
}

/// An `expiry_date` as stored: unix seconds, the nanoseconds within that second, and the UTC
/// offset in seconds. (Not `OffsetDateTime`'s own serde form, which changes with the `time`
/// crate's features.)
#[derive(Serialize, Deserialize)]
struct Expiry {
    unix: i64,
    nanos: u32,
    offset: i32,
}

impl Expiry {
    fn new(date: OffsetDateTime) -> Expiry {
        Expiry {
            unix: date.unix_timestamp(),
            nanos: date.nanosecond(),
            offset: date.offset().whole_seconds(),
        }
    }

    /// The date, or `None` for numbers that make none.
    fn date(&self) -> Option<OffsetDateTime> {
        let offset = UtcOffset::from_whole_seconds(self.offset).ok()?;
        OffsetDateTime::from_unix_timestamp(self.unix)
            .ok()?
            .replace_nanosecond(self.nanos)
            .ok()?
            .checked_to_offset(offset)
    }
}

fn encode(record: &Record) -> session_store::Result<Vec<u8>> {
    serde_json::to_vec(&TowerRecordRef {
        expiry: Expiry::new(record.expiry_date),
        data: &record.data,
    })
    .map_err(|err| {
        session_store::Error::Encode(format!(
            "session {}: the record does not serialize: {err}",
            id_fingerprint(&record.id)
        ))
    })
}

/// Whether a record stored with this expiry has expired, by `clock` at the moment of asking:
/// a `save`'s change runs later than the save began, inside the commit on redb.
fn expired_by(clock: &Arc<dyn Clock>) -> impl Fn(Option<OffsetDateTime>) -> bool + Send + 'static {
    let clock = Arc::clone(clock);
    move |stored| {
        stored.is_some_and(|stored| stored.unix_timestamp_nanos() <= unix_nanos(clock.now()))
    }
}

/// The change of a `save` of `record`: stores it over the stored record, unless that is gone or
/// `expired` (never resurrecting), or already equal to it, or its expiry is no longer `covered`
/// by an index entry, which it reports in `moved` for the save to start over.
fn save_change(
    record: Vec<u8>,
    expired: impl Fn(Option<OffsetDateTime>) -> bool + Send + 'static,
    covered: impl Fn(Option<OffsetDateTime>) -> bool + Send + 'static,
    moved: Arc<AtomicBool>,
) -> Change {
    Box::new(move |current| {
        // The change may run more than once: the flag tells of the run that counted.
        moved.store(false, Ordering::Relaxed);
        let Some(current) = current else {
            return Ok(Update::Keep);
        };
        let stored = decode_expiry(current);
        if expired(stored) || current == record.as_slice() {
            return Ok(Update::Keep);
        }
        if !covered(stored) {
            moved.store(true, Ordering::Relaxed);
            return Ok(Update::Keep);
        }
        Ok(Update::Set(record.clone()))
    })
}

/// Whether the index entry of a record stored with expiry `stored` also covers the expiry `at`
/// (unix seconds), with index buckets `width` seconds wide: `at` falls in the same bucket or a
/// later one. The sweep reaches that entry first, judges the record as it is then, and moves
/// the entry on (`Verdict::Later`), once, however many saves moved the expiry.
fn covers(width: u64, stored: Option<OffsetDateTime>, at: u64) -> bool {
    width > 0 && stored.is_some_and(|stored| at / width >= index_secs(stored) / width)
}

/// The expiry of stored bytes, or `None` when they are not a record. Exactly the bytes that
/// `load` decodes have one, so that nothing judges a record that `load` reports as undecodable.
fn decode_expiry(raw: &[u8]) -> Option<OffsetDateTime> {
    serde_json::from_slice::<TowerRecord>(raw)
        .ok()?
        .expiry
        .date()
}

/// The time an index entry is filed under: the expiry in whole unix seconds (0 before 1970).
fn index_secs(expiry: OffsetDateTime) -> u64 {
    u64::try_from(expiry.unix_timestamp()).unwrap_or(0)
}

fn unix_nanos(time: SystemTime) -> i128 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => i128::try_from(since.as_nanos()).unwrap_or(i128::MAX),
        Err(before) => i128::try_from(before.duration().as_nanos()).map_or(i128::MIN, |n| -n),
    }
}

/// An expiry as a `SystemTime`, saturating at the ends of what one can hold.
fn system_time(expiry: OffsetDateTime) -> SystemTime {
    let nanos = expiry.unix_timestamp_nanos();
    let magnitude = nanos.unsigned_abs();
    let magnitude = Duration::new(
        u64::try_from(magnitude / 1_000_000_000).unwrap_or(u64::MAX),
        u32::try_from(magnitude % 1_000_000_000).unwrap_or(0),
    );
    if nanos >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    }
    .unwrap_or(UNIX_EPOCH)
}

/// The domain of the store's index bucket number `bucket`.
fn bucket_domain(bucket: u64) -> String {
    format!("{}{bucket}", INDEX.prefix)
}

fn record_domain(id: &Id) -> String {
    format!("{RECORD_PREFIX}{id}")
}

fn id_fingerprint(id: &Id) -> String {
    fingerprint(&id.to_string())
}

/// An archive error as tower-sessions' `Backend` error: the whole chain of messages, with every
/// record domain's id replaced by its fingerprint (a path of the directory tree names one).
fn backend(err: &Error) -> session_store::Error {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(lower) = source {
        message.push_str(": ");
        message.push_str(&lower.to_string());
        source = lower.source();
    }
    session_store::Error::Backend(redact(&message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_round_trip_and_out_of_range_ones_do_not_decode() {
        let expiry = OffsetDateTime::from_unix_timestamp(1_767_225_600)
            .unwrap()
            .replace_nanosecond(123_456_789)
            .unwrap()
            .to_offset(UtcOffset::from_hms(5, 30, 0).unwrap());
        let back = Expiry::new(expiry).date();
        assert_eq!(back, Some(expiry));
        assert_eq!(back.map(OffsetDateTime::offset), Some(expiry.offset()));
        let date = |unix, nanos, offset| {
            Expiry {
                unix,
                nanos,
                offset,
            }
            .date()
        };
        assert_eq!(date(i64::MAX, 0, 0), None);
        assert_eq!(date(0, 1_000_000_000, 0), None);
        assert_eq!(date(0, 0, 100_000), None);
        assert_eq!(date(0, 0, 0), Some(OffsetDateTime::UNIX_EPOCH));
        assert_eq!(
            system_time(expiry),
            UNIX_EPOCH + Duration::new(1_767_225_600, 123_456_789)
        );
        assert_eq!(
            unix_nanos(UNIX_EPOCH - Duration::from_secs(1)),
            -1_000_000_000
        );
    }
}
