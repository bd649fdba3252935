//! [actix-session] integration: [`ArchiveStore`], a `SessionStore` over any [`Archive`].
//!
//! actix-session (0.11) manages the cookie and the session's state; its stores only keep
//! records. `ArchiveStore` keeps them in any archive of this crate, so an app written the
//! actix-session way switches store in one line and gets one durable redb file with group
//! commit, a directory tree, or Redis, without touching its handlers:
//!
//! ```no_run
//! use actix_web::cookie::Key;
//! use session_archive::RedbArchive;
//! use session_archive::actix_session::ArchiveStore;
//!
//! # fn main() -> Result<(), session_archive::Error> {
//! let store = ArchiveStore::new(RedbArchive::open(".gen/sessions.redb")?);
//! let middleware = actix_session::SessionMiddleware::new(store, Key::generate());
//! # let _ = middleware;
//! # Ok(())
//! # }
//! ```
//!
//! # What the store promises
//!
//! The contract of actix-session's own Redis store, with expiry through this crate's index:
//!
//! - **`save` makes a fresh key and never overwrites.** The key is 64 lowercase hex digits
//!   (two UUID v4s from the OS random generator, 244 random bits), claimed by a
//!   compare-and-swap from absent; on a collision it draws again.
//! - **`update` never resurrects.** It replaces the stored record in one atomic
//!   [`update`](Archive::update) that writes only over a stored, unexpired record. A record
//!   deleted meanwhile (a logout racing the request) or expired stays gone, and the update
//!   answers the key it was given, which names nothing: the client's next request starts an
//!   empty session. (actix-session's Redis store saves the state under a fresh key instead;
//!   that would bring a logged-out session's state back under a new key, so a logout racing a
//!   slow request would not be final.) `update_ttl` moves the expiry of a stored, unexpired
//!   record the same way, keeping its state.
//! - **`load` never returns an expired state**, and a
//!   [`Deserialization`](actix_session::storage::LoadError::Deserialization) error, never a
//!   panic, for bytes that are not a record (left as they are). A key that this store could not
//!   have made (a forged cookie) loads as nothing, without touching the archive.
//! - **`delete` is final**: the record's domain goes, and no save ever claims its key again.
//! - **Expiry goes through the expiry index**: [`delete_expired`](ArchiveStore::delete_expired)
//!   walks only the part of the index come due since its previous run, so it costs O(expired
//!   records); on Redis the records also expire natively.
//! - **Off the executor.** actix-web runs one single-threaded runtime per worker, so a store
//!   call whose archive calls may block ([`Archive::blocking`]) runs them on tokio's blocking
//!   threads (where `actix_web::web::block` runs its work), in one hop; calls that cannot block
//!   (every call on memory, a `load` on redb) run in place.
//! - **Errors keep their source**: the archive's [`Error`] is the source of the `anyhow` error
//!   actix-session's error types hold. Keys are bearer tokens: messages name a record by a
//!   fingerprint (`#` and 12 hex digits of the SHA-256 of the key), never by its key.
//!
//! # Storage layout
//!
//! Each record is the key `record.json` of the domain `actix-session-<key>`, compact JSON:
//! `{"expiry":{"unix":1767225600,"nanos":250000000},"state":{"counter":"1"}}` (the expiry in
//! unix seconds and the nanoseconds within that second; the state as actix-session hands it
//! over, strings of JSON). The expiry index is `actix-expiry-<n>` and `actix-sweep-cursor`.
//! None of these names is a session id, nor a name of typed sessions or of the tower-sessions
//! store, so one archive can serve them all side by side.
//!
//! [actix-session]: https://docs.rs/actix-session/0.11

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_web::cookie::time::Duration as Ttl;
use serde::{Deserialize, Serialize};

use crate::archive::Archive;
use crate::error::Error;
use crate::ids::{ACTIX_RECORD_PREFIX, fingerprint};
use crate::records::{CREATE_ATTEMPTS, Kind, Make, Records, SAVE_ATTEMPTS, unix_nanos};
use crate::session::clock::Clock;
#[cfg(doc)]
use crate::session::expiry::DEFAULT_SWEEP_GRANULARITY;
use crate::session::layout::{ACTIX_INDEX, ACTIX_RECORD_KEY};

/// The store's records: `actix-session-<key>`, indexed in `actix-expiry-<n>`.
static KIND: Kind = Kind {
    prefix: ACTIX_RECORD_PREFIX,
    key: ACTIX_RECORD_KEY,
    index: ACTIX_INDEX,
    expiry: |raw| {
        StoredRecord::decode(raw)
            .ok()
            .map(|record| record.expiry.nanos())
    },
};

/// How many characters a key of this store has.
const KEY_LEN: usize = 64;

/// An actix-session [`SessionStore`] over any [`Archive`]; see the [module docs](self) for what
/// it promises and how it stores records.
///
/// It is cheap to clone (one `Arc` inside); clones share the archive. Expired records are
/// invisible to `load` at once, and removed from the archive by
/// [`delete_expired`](Self::delete_expired): run it every few minutes.
///
/// # Examples
///
/// ```
/// use actix_session::storage::SessionStore;
/// use actix_web::cookie::time::Duration;
/// use session_archive::MemoryArchive;
/// use session_archive::actix_session::ArchiveStore;
///
/// # actix_web::rt::System::new().block_on(async {
/// let store = ArchiveStore::new(MemoryArchive::new());
/// let state = [("user".to_owned(), "\"ada\"".to_owned())].into();
/// let key = store.save(state, &Duration::hours(1)).await?;
/// assert!(store.load(&key).await?.is_some());
/// store.delete(&key).await?;
/// assert_eq!(store.load(&key).await?, None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct ArchiveStore {
    records: Arc<Records>,
}

impl fmt::Debug for ArchiveStore {
    /// The settings, never the archive's contents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.records.debug("ArchiveStore", f)
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
    /// use session_archive::actix_session::ArchiveStore;
    ///
    /// // One archive can hold both kinds of sessions.
    /// let archive: Arc<dyn Archive> = Arc::new(MemoryArchive::new());
    /// let store = ArchiveStore::new(Arc::clone(&archive));
    /// let sessions = Sessions::new(archive);
    /// # let _ = (store, sessions);
    /// ```
    pub fn new(archive: impl Archive + 'static) -> ArchiveStore {
        ArchiveStore {
            records: Records::shared(Arc::new(archive), &KIND),
        }
    }

    /// Returns the store judging expiry, and computing it from each call's TTL, by `clock`
    /// instead of the system clock, so that tests can move time.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use session_archive::MemoryArchive;
    /// use session_archive::actix_session::ArchiveStore;
    /// use session_archive::session::ManualClock;
    ///
    /// let clock = ManualClock::new(SystemTime::now());
    /// let store = ArchiveStore::new(MemoryArchive::new()).with_clock(clock.clone());
    /// # let _ = store;
    /// ```
    #[must_use]
    pub fn with_clock(self, clock: impl Clock) -> ArchiveStore {
        ArchiveStore {
            records: self.records.with_clock(Arc::new(clock)),
        }
    }

    /// Returns the store with another width of one expiry-index bucket (whole seconds, at least
    /// one) for an archive that has no index of this store yet; the default is
    /// [`DEFAULT_SWEEP_GRANULARITY`]. The width is recorded in the archive by the first store to
    /// index a record there, and every store over that archive then uses the recorded one.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_archive::MemoryArchive;
    /// use session_archive::actix_session::ArchiveStore;
    ///
    /// let store = ArchiveStore::new(MemoryArchive::new())
    ///     .with_sweep_granularity(Duration::from_secs(300));
    /// # let _ = store;
    /// ```
    #[must_use]
    pub fn with_sweep_granularity(self, granularity: std::time::Duration) -> ArchiveStore {
        ArchiveStore {
            records: self.records.with_granularity(granularity),
        }
    }

    /// Removes the expired records from the archive and returns how many it removed. It walks
    /// only the part of the expiry index that has come due since its previous run (in any
    /// process sharing the archive); each expired record goes by a compare-and-swap of the bytes
    /// it judged, so a record updated meanwhile survives.
    ///
    /// # Errors
    ///
    /// The archive's errors; [`Error::Backend`] if the blocking task running the sweep
    /// panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::MemoryArchive;
    /// use session_archive::actix_session::ArchiveStore;
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let store = ArchiveStore::new(MemoryArchive::new());
    /// assert_eq!(store.delete_expired().await?, 0);
    /// # Ok::<(), session_archive::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn delete_expired(&self) -> Result<usize, Error> {
        self.run(true, Records::sweep).await?
    }

    /// Runs `op` on the records: in place when the archive's calls of this kind cannot block
    /// (or outside a tokio runtime), else on tokio's blocking threads, in one hop.
    async fn run<T: Send + 'static>(
        &self,
        writes: bool,
        op: impl FnOnce(&Records) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let blocking = self.records.archive.blocking();
        let blocks = if writes {
            blocking.writes_block()
        } else {
            blocking.reads_block()
        };
        if !blocks || tokio::runtime::Handle::try_current().is_err() {
            return Ok(op(&self.records));
        }
        let records = Arc::clone(&self.records);
        tokio::task::spawn_blocking(move || op(&records))
            .await
            .map_err(|err| Error::Backend {
                backend: "actix-session store",
                operation: "run an archive call on a blocking thread",
                source: Box::new(err),
            })
    }

    /// The expiry of a record written now with `ttl`, in unix nanoseconds.
    fn expiry(&self, ttl: &Ttl) -> i128 {
        unix_nanos(self.records.clock.now()).saturating_add(ttl.whole_nanoseconds())
    }
}

impl SessionStore for ArchiveStore {
    async fn load(
        &self,
        session_key: &SessionKey,
    ) -> Result<Option<HashMap<String, String>>, LoadError> {
        let Some(key) = our_key(session_key) else {
            return Ok(None);
        };
        let raw = self
            .run(false, move |records| records.get(&key))
            .await
            .and_then(|got| got)
            .map_err(|err| LoadError::Other(record_error(session_key, "load", err)))?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        let record = StoredRecord::decode(&raw).map_err(|err| {
            let context = format!(
                "actix-session record {}: the stored record does not decode",
                fingerprint(session_key.as_ref())
            );
            LoadError::Deserialization(anyhow::Error::new(err).context(context))
        })?;
        if record.expiry.nanos() <= self.records.now_nanos() {
            return Ok(None);
        }
        Ok(Some(record.state))
    }

    async fn save(
        &self,
        session_state: HashMap<String, String>,
        ttl: &Ttl,
    ) -> Result<SessionKey, SaveError> {
        let expiry = self.expiry(ttl);
        let bytes = StoredRecord::encode(&session_state, expiry)
            .map_err(|err| SaveError::Serialization(anyhow::Error::new(err)))?;
        let keys = std::iter::repeat_with(fresh_key);
        let claimed = self
            .run(true, move |records| records.create(keys, &bytes, expiry))
            .await
            .and_then(|created| created)
            .map_err(|err| SaveError::Other(anyhow::Error::new(err).context("actix-session save")))?
            .ok_or_else(|| {
                SaveError::Other(anyhow::anyhow!(
                    "no free session key after {CREATE_ATTEMPTS} attempts: the archive's \
                     compare-and-swap never succeeds"
                ))
            })?;
        SessionKey::try_from(claimed).map_err(|err| SaveError::Other(anyhow::Error::new(err)))
    }

    async fn update(
        &self,
        session_key: SessionKey,
        session_state: HashMap<String, String>,
        ttl: &Ttl,
    ) -> Result<SessionKey, UpdateError> {
        let expiry = self.expiry(ttl);
        let bytes = StoredRecord::encode(&session_state, expiry)
            .map_err(|err| UpdateError::Serialization(anyhow::Error::new(err)))?;
        let make: Make = Arc::new(move |_: &[u8]| Some(bytes.clone()));
        self.replace(&session_key, make, expiry, "update")
            .await
            .map_err(UpdateError::Other)?;
        Ok(session_key)
    }

    async fn update_ttl(&self, session_key: &SessionKey, ttl: &Ttl) -> anyhow::Result<()> {
        let expiry = self.expiry(ttl);
        let make: Make = Arc::new(move |current: &[u8]| {
            let record = StoredRecord::decode(current).ok()?;
            StoredRecord::encode(&record.state, expiry).ok()
        });
        self.replace(session_key, make, expiry, "update the TTL of")
            .await
    }

    async fn delete(&self, session_key: &SessionKey) -> anyhow::Result<()> {
        let Some(key) = our_key(session_key) else {
            return Ok(());
        };
        self.run(true, move |records| records.delete(&key))
            .await
            .and_then(|deleted| deleted)
            .map_err(|err| record_error(session_key, "delete", err))
    }
}

impl ArchiveStore {
    /// Replaces the stored, unexpired record of `session_key` with what `make` makes of it
    /// (see [`Records::save`]); a key this store could not have made names nothing to replace.
    async fn replace(
        &self,
        session_key: &SessionKey,
        make: Make,
        expiry: i128,
        operation: &str,
    ) -> anyhow::Result<()> {
        let Some(key) = our_key(session_key) else {
            return Ok(());
        };
        let saved = self
            .run(true, move |records| records.save(&key, &make, expiry))
            .await
            .and_then(|saved| saved)
            .map_err(|err| record_error(session_key, operation, err))?;
        if saved {
            return Ok(());
        }
        Err(anyhow::anyhow!(
            "actix-session record {}: the record kept changing during {SAVE_ATTEMPTS} attempts \
             to {operation} it",
            fingerprint(session_key.as_ref())
        ))
    }
}

/// The key as this store makes them (64 lowercase hex digits), or `None` for any other: no
/// record can be stored under it, and it never becomes part of a name.
fn our_key(key: &SessionKey) -> Option<String> {
    let key = key.as_ref();
    let ours = key.len() == KEY_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ours.then(|| key.to_owned())
}

/// A fresh key: two UUID v4s from the OS random generator, as 64 lowercase hex digits.
fn fresh_key() -> String {
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    format!("{}{}", a.simple(), b.simple())
}

/// An archive error as the `anyhow` error actix-session's types hold: the archive's error as
/// the source, under a context naming the record by its fingerprint.
fn record_error(key: &SessionKey, operation: &str, err: Error) -> anyhow::Error {
    let context = format!(
        "cannot {operation} actix-session record {}",
        fingerprint(key.as_ref())
    );
    anyhow::Error::new(err).context(context)
}

/// A record as stored (see the module docs).
#[derive(Serialize, Deserialize)]
struct StoredRecord<S> {
    expiry: Expiry,
    state: S,
}

/// An expiry as stored: unix seconds and the nanoseconds within that second.
#[derive(Serialize, Deserialize, Clone, Copy)]
struct Expiry {
    unix: i64,
    nanos: u32,
}

impl Expiry {
    fn new(nanos: i128) -> Expiry {
        let unix = nanos.div_euclid(1_000_000_000);
        Expiry {
            unix: i64::try_from(unix).unwrap_or(if unix < 0 { i64::MIN } else { i64::MAX }),
            nanos: u32::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or(0),
        }
    }

    fn nanos(self) -> i128 {
        i128::from(self.unix) * 1_000_000_000 + i128::from(self.nanos.min(999_999_999))
    }
}

impl StoredRecord<HashMap<String, String>> {
    fn decode(raw: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(raw)
    }

    fn encode(state: &HashMap<String, String>, expiry: i128) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&StoredRecord {
            expiry: Expiry::new(expiry),
            state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_round_trip_and_keys_are_ours_only() {
        for nanos in [0, 1_767_225_600_250_000_000, -1_500_000_000] {
            assert_eq!(Expiry::new(nanos).nanos(), nanos);
        }
        let key = fresh_key();
        assert_eq!(key.len(), KEY_LEN);
        let session_key = |text: &str| SessionKey::try_from(text.to_owned()).expect("a key");
        assert_eq!(our_key(&session_key(&key)), Some(key.clone()));
        assert_eq!(our_key(&session_key(&key.to_uppercase())), None);
        assert_eq!(our_key(&session_key(&key[1..])), None);
        assert_eq!(our_key(&session_key(&format!("../{}", &key[3..]))), None);
    }
}
