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

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::{OffsetDateTime, UtcOffset};
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{self, ExpiredDeletion, SessionStore};

use crate::archive::Archive;
use crate::error::Error;
use crate::ids::{TOWER_RECORD_PREFIX, fingerprint, redact};
use crate::records::{CREATE_ATTEMPTS, Kind, Records, SAVE_ATTEMPTS};
use crate::session::clock::Clock;
#[cfg(doc)]
use crate::session::expiry::DEFAULT_SWEEP_GRANULARITY;
use crate::session::layout::{TOWER_INDEX, TOWER_RECORD_KEY};

/// The store's records: `tower-session-<id>`, indexed in `tower-expiry-<n>`.
static KIND: Kind = Kind {
    prefix: TOWER_RECORD_PREFIX,
    key: TOWER_RECORD_KEY,
    index: TOWER_INDEX,
    expiry: |raw| decode_expiry(raw).map(OffsetDateTime::unix_timestamp_nanos),
};

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
    inner: Arc<Records>,
}

impl fmt::Debug for ArchiveStore {
    /// The settings, never the archive's contents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.debug("ArchiveStore", f)
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
            inner: Records::shared(Arc::new(archive), &KIND),
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
        ArchiveStore {
            inner: self.inner.with_clock(Arc::new(clock)),
        }
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
        ArchiveStore {
            inner: self.inner.with_granularity(granularity),
        }
    }

    /// Runs `op` on the store's state where it may block: on tokio's blocking threads inside a
    /// tokio runtime, on this thread outside one. One hop per store call.
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Records) -> session_store::Result<T> + Send + 'static,
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
            .blocking(move |inner| create(inner, first, &bytes, expiry))
            .await?;
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let bytes = encode(record)?;
        let (id, expiry) = (record.id, record.expiry_date);
        self.blocking(move |inner| save(inner, &id, bytes, expiry))
            .await
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        let id = *session_id;
        self.blocking(move |inner| load(inner, &id)).await
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        let id = *session_id;
        self.blocking(move |inner| inner.delete(&id.to_string()).map_err(|err| backend(&err)))
            .await
    }
}

#[async_trait]
impl ExpiredDeletion for ArchiveStore {
    async fn delete_expired(&self) -> session_store::Result<()> {
        self.blocking(|inner| {
            inner.sweep().map_err(|err| backend(&err))?;
            Ok(())
        })
        .await
    }
}

/// Stores a new record, claiming `first` or, when it is taken, fresh ids until one is free;
/// returns the id it claimed (see [`Records::create`]).
fn create(
    records: &Records,
    first: Id,
    bytes: &[u8],
    expiry: OffsetDateTime,
) -> session_store::Result<Id> {
    let ids = std::iter::once(first)
        .chain(std::iter::repeat_with(Id::default))
        .map(|id| TowerId(id, id.to_string()));
    match records.create(ids, bytes, expiry.unix_timestamp_nanos()) {
        Ok(Some(TowerId(id, _))) => Ok(id),
        Ok(None) => Err(session_store::Error::Backend(format!(
            "no free session id after {CREATE_ATTEMPTS} attempts: the archive's \
             compare-and-swap never succeeds"
        ))),
        Err(err) => Err(backend(&err)),
    }
}

/// An id with its text, the name [`Records`] stores it under.
struct TowerId(Id, String);

impl AsRef<str> for TowerId {
    fn as_ref(&self) -> &str {
        &self.1
    }
}

/// Replaces a stored, unexpired record; does nothing when there is none (see the module docs
/// and [`Records::save`]).
fn save(
    records: &Records,
    id: &Id,
    bytes: Vec<u8>,
    expiry: OffsetDateTime,
) -> session_store::Result<()> {
    let make: crate::records::Make = Arc::new(move |_: &[u8]| Some(bytes.clone()));
    match records.save(&id.to_string(), &make, expiry.unix_timestamp_nanos()) {
        Ok(true) => Ok(()),
        Ok(false) => Err(session_store::Error::Backend(format!(
            "session {}: the record kept changing during {SAVE_ATTEMPTS} attempts to save it",
            id_fingerprint(id)
        ))),
        Err(err) => Err(backend(&err)),
    }
}

fn load(records: &Records, id: &Id) -> session_store::Result<Option<Record>> {
    let Some(raw) = records.get(&id.to_string()).map_err(|err| backend(&err))? else {
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
    if expiry_date.unix_timestamp_nanos() <= records.now_nanos() {
        return Ok(None);
    }
    Ok(Some(Record {
        id: *id,
        data: stored.data,
        expiry_date,
    }))
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

/// The expiry of stored bytes, or `None` when they are not a record. Exactly the bytes that
/// `load` decodes have one, so that nothing judges a record that `load` reports as undecodable.
fn decode_expiry(raw: &[u8]) -> Option<OffsetDateTime> {
    serde_json::from_slice::<TowerRecord>(raw)
        .ok()?
        .expiry
        .date()
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
    }
}
