//! The session store: the write protocol of sessions on top of an [`Archive`], in bytes.
//!
//! Everything that writes a session goes through [`Store`]: create, swap of the state, touch of
//! the timestamps, destroy, the move of a regenerate, the expiry index and the per-user index.
//! The typed face ([`Sessions`](super::Sessions), [`Session`](super::Session)) encodes and
//! decodes the state and keeps the handle's phase and cookie; it never calls the archive itself.
//!
//! # Invariants
//!
//! - **Index first.** A write that moves a session's expiry, or binds it to a user, writes the
//!   index entry covering it before the timestamps (`meta.json`) that record it; a create writes
//!   both before the state. (A save or update swaps the state first and touches after: until the
//!   touch lands, the entry of the session's previous expiry still covers it.) A failure or
//!   crash between them leaves at worst a spurious entry (the sweep and the listings re-check
//!   every entry), never a stored expiry or binding without its entry.
//! - **One compare-and-swap is the moment.** A create claims its id by a compare-and-swap of the
//!   timestamps from nothing; a save or update swaps the state from what it read; a destroy or
//!   revoke swaps the state to nothing; a regenerate swaps the old state for a moved-marker. A
//!   swap that fails means another write landed: the state is read again, or the session is
//!   found gone.
//! - **A state and its binding travel together.** A write that changes the binding swaps the
//!   state and the record in one [`Archive::compare_and_swap_many`]; a regenerate's move swaps
//!   the old state for its marker only while the old record is as the copy has it; a revoke's
//!   swap checks the record too. Every binding's index entry has a key of its own, so the entry
//!   of a replaced binding is removed without touching any other.
//! - **What is dead stays dead.** A session's domain is a session only while it holds a state;
//!   timestamps alone (a create cut short, a touch racing a destroy) are indexed, so the sweep
//!   removes them, and no write recreates a state that a destroy or a move swapped away.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::clock::Clock;
use super::expiry::{Index, Judge, Lifetime, StoredSettings, Verdict, place, unix_secs, unix_time};
use super::hashed::HashedIds;
use super::id::{SessionId, hashed_name};
use super::layout::{
    Binding, CORRUPT_DOMAIN, META_KEY, Meta, SESSIONS_INDEX, STATE_KEY, Stamp, Stored,
    binding_entry, entry_key, entry_session, is_state, read_state, user_domain, validate_user,
};
use super::points::Mutation;
use crate::archive::{Archive, Blocking, Change, DEFAULT_PAGE_SIZE, Swap, SwapGroup, Update};
use crate::error::{Error, Result};

#[cfg(any(feature = "axum", feature = "actix", feature = "conformance"))]
mod later;
mod regenerate;

#[cfg(any(feature = "axum", feature = "actix", feature = "conformance"))]
pub(crate) use later::{Prefetch, StateWritten};
pub(crate) use regenerate::Moving;

/// How often a fresh id is drawn when the one drawn already exists. With 122 random bits a
/// collision is practically impossible; the bound only keeps a misbehaving backend (one whose
/// `compare_and_swap` never succeeds) from looping forever.
const CREATE_ATTEMPTS: usize = 4;

/// How many stripes [`Store::update_locks`] holds: enough that the few dozen sessions a server
/// updates at once rarely share one, at eight bytes each.
const UPDATE_LOCKS: usize = 4096;

/// What the protocol needs to know of the configuration.
#[derive(Debug, Clone)]
pub(crate) struct StoreConfig {
    pub(crate) hash_ids: bool,
    pub(crate) lifetime: Lifetime,
    /// The index's bucket width, in seconds, for an archive that has none recorded yet.
    pub(crate) sweep_granularity: u64,
    pub(crate) clock: Arc<dyn Clock>,
}

/// The session store over one archive; see the module docs.
pub(crate) struct Store {
    /// The archive as sessions see it: with ids hashed at rest when configured.
    archive: Arc<dyn Archive>,
    /// The archive as given, for the names stored before ids were hashed.
    raw: Arc<dyn Archive>,
    config: StoreConfig,
    /// The index's bucket width as last read from the archive's record; 0 until then.
    index_width: AtomicU64,
    /// Whether this process has recorded its timeouts in the archive's record.
    settings_recorded: AtomicBool,
    /// Serializes this process's updates of one session (by a hash of its id, so unrelated
    /// sessions rarely share one): see [`UpdateTurn`].
    update_locks: Box<[Stripe]>,
    /// Whether the archive has answered an async read (see `Store::has_async_paths`).
    #[cfg_attr(
        not(any(feature = "axum", feature = "actix")),
        allow(dead_code, reason = "read by the web layers")
    )]
    async_paths: AtomicBool,
    /// With ids hashed at rest, a store over the same archive that does not hash: see
    /// [`for_stored`](Self::for_stored).
    plain: std::sync::OnceLock<Box<Store>>,
}

/// The reads of the archive the session layer makes outside the store; see [`Store::reads`].
pub(crate) struct Reads<'a>(&'a dyn Archive);

impl Reads<'_> {
    /// As [`Archive::get`].
    pub(crate) fn get(&self, domain: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.0.get(domain, key)
    }

    /// As [`Archive::list_keys`], a page of [`DEFAULT_PAGE_SIZE`].
    pub(crate) fn list_keys(
        &self,
        domain: &str,
        cursor: Option<&str>,
    ) -> Result<crate::archive::Page> {
        self.0.list_keys(domain, cursor, DEFAULT_PAGE_SIZE)
    }
}

/// What [`Store::start`] found under an id: a live session (`S`), or why there is none.
pub(crate) enum Opened<S> {
    /// A stored, unexpired session.
    Found(S),
    /// No live session: unknown, moved, destroyed, or expired (and removed).
    Unknown,
    /// Starting it would write, and the caller asked it not to.
    MustWrite,
}

impl<S> Opened<S> {
    /// The same answer, with a found session made into another value.
    pub(crate) fn map<U>(self, found: impl FnOnce(S) -> U) -> Opened<U> {
        match self {
            Opened::Found(session) => Opened::Found(found(session)),
            Opened::Unknown => Opened::Unknown,
            Opened::MustWrite => Opened::MustWrite,
        }
    }
}

/// A stored session as [`Store::start`] found it: its decoded state, its record (`None` when
/// stored without, by the original framework), and whether the start rewrote the record (the
/// session's expiry moved, so the cookie must be sent again).
pub(crate) struct Started<S> {
    pub(crate) state: S,
    /// The stored bytes `state` was decoded from, as a guess for the first swap.
    pub(crate) guess: Guess,
    pub(crate) stamp: Option<Stamp>,
    /// The user the state was stored bound to: read with it, as one pair (the record in `stamp`
    /// may be newer, when the start's touch lost a race and read it again).
    pub(crate) bound: Option<String>,
    pub(crate) refreshed: bool,
}

impl Store {
    /// A store over `archive`, which ids hashed at rest wrap when configured.
    pub(crate) fn new(archive: Arc<dyn Archive>, config: StoreConfig) -> Store {
        Store {
            archive: if config.hash_ids {
                Arc::new(HashedIds::new(Arc::clone(&archive)))
            } else {
                Arc::clone(&archive)
            },
            raw: archive,
            config,
            index_width: AtomicU64::new(0),
            settings_recorded: AtomicBool::new(false),
            update_locks: (0..UPDATE_LOCKS).map(|_| Stripe::default()).collect(),
            async_paths: AtomicBool::new(false),
            plain: std::sync::OnceLock::new(),
        }
    }

    /// The reads the rest of the session layer may make of the archive (as sessions see it:
    /// ids hashed at rest when configured). Only the store writes.
    pub(crate) fn reads(&self) -> Reads<'_> {
        Reads(&*self.archive)
    }

    /// The store that reaches the session stored as `stored`: this one, or, with ids hashed at
    /// rest and `stored` a plain id (stored before hashing was turned on, or by an application
    /// without it), one over the same archive that does not hash. A listing, a revoke and a sweep
    /// go through it, so that they reach every session an index names, whoever stored it.
    pub(crate) fn for_stored(&self, stored: &str) -> &Store {
        if !self.would_hash(stored) {
            return self;
        }
        self.plain.get_or_init(|| {
            let config = StoreConfig {
                hash_ids: false,
                ..self.config.clone()
            };
            Box::new(Store::new(Arc::clone(&self.raw), config))
        })
    }

    /// Whether this store hashes `name` before it names storage: ids are hashed at rest, and
    /// `name` is a plain id. A name found in storage that it would hash is a session stored under
    /// its plain id, which [`for_stored`](Self::for_stored) reaches through the plain store.
    pub(crate) fn would_hash(&self, name: &str) -> bool {
        self.config.hash_ids && SessionId::parse(name).is_some()
    }

    /// Which of the archive's calls may block.
    pub(crate) fn blocking(&self) -> Blocking {
        self.archive.blocking()
    }

    pub(crate) fn now(&self) -> u64 {
        unix_secs(self.config.clock.now())
    }

    /// When a session with these timestamps expires, if it ever does (see [`Lifetime`]).
    pub(crate) fn expires_at(&self, meta: Meta) -> Option<u64> {
        self.config.lifetime.expires_at(meta)
    }

    /// Whether a session with these timestamps has expired at `now` (see [`Lifetime`]).
    pub(crate) fn is_expired(&self, meta: Meta, now: u64) -> bool {
        self.config.lifetime.is_expired(meta, now)
    }

    /// Whether `seen` is old enough to be rewritten (see [`Lifetime`]).
    fn needs_touch(&self, meta: Meta, now: u64) -> bool {
        self.config.lifetime.needs_touch(meta, now)
    }

    /// Whether starting a session with these timestamps (`None`: stored without) writes them.
    pub(crate) fn touch_due(&self, stamp: Option<&Stamp>, now: u64) -> bool {
        stamp.is_none_or(|stamp| self.needs_touch(stamp.meta, now))
    }

    /// Reads a session's timestamps.
    pub(crate) fn read_meta(&self, id: &SessionId) -> Result<Option<Stamp>> {
        let Some(raw) = self.archive.get(id.as_str(), META_KEY)? else {
            return Ok(None);
        };
        Stamp::decode(id, raw).map(Some)
    }

    /// Reads what `id` holds under the state key.
    pub(crate) fn read_state(&self, id: &SessionId) -> Result<Stored> {
        read_state(&*self.archive, id)
    }

    /// The name `id` is stored under: the id, or its hash when ids are hashed at rest.
    pub(crate) fn stored_name(&self, id: &SessionId) -> String {
        if self.would_hash(id.as_str()) {
            hashed_name(id.as_str())
        } else {
            id.as_str().to_owned()
        }
    }

    /// The lock that this process's updates of session `id` take around their read, change and
    /// compare-and-swap.
    ///
    /// Correctness never depends on it: the compare-and-swap alone makes an update lose
    /// nothing, also against other processes and other operations. What it saves is work. Of
    /// concurrent updates of one session, all but one would otherwise fail their swap and start
    /// again; on a backend with group commit, one commit answers them all, so each round costs
    /// a commit and yields one update, and the losers' reads, decodes and swaps take the CPU
    /// the winner needs. In turn behind the lock, each update reads the state the previous one
    /// left, and its swap succeeds the first time.
    fn update_lock(&self, id: &SessionId) -> &Mutex<()> {
        &self.stripe(id).lock
    }

    /// How many writes of the state this process has made through [`swap_state`](Self::swap_state)
    /// to the sessions that share `id`'s stripe: a [`Guess`] taken when it was `n` is still the
    /// state as far as this process knows while it is `n`.
    pub(crate) fn writes(&self, id: &SessionId) -> u32 {
        self.stripe(id).writes.load(Ordering::Acquire)
    }

    /// Counts a write of `id`'s state by this process, which stored `bytes`, and returns the
    /// guess for the writer's next swap (see [`Guess`]).
    pub(crate) fn swapped(&self, id: &SessionId, bytes: Vec<u8>) -> Guess {
        let writes = self.stripe(id).writes.fetch_add(1, Ordering::AcqRel);
        Guess {
            bytes,
            writes: writes.wrapping_add(1),
        }
    }

    /// The stripe of `id`: a hash of it picks one, so unrelated sessions rarely share one.
    fn stripe(&self, id: &SessionId) -> &Stripe {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hash = BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(id.as_str());
        // The modulo keeps the index below the length, which fits a usize.
        #[expect(
            clippy::cast_possible_truncation,
            reason = "reduced modulo the length first"
        )]
        let index = (hash % self.update_locks.len() as u64) as usize;
        &self.update_locks[index]
    }
}

/// One stripe of [`Store::update_locks`]: the lock of the updates that take turns, and the count
/// of [`Store::writes`].
#[derive(Default)]
struct Stripe {
    lock: Mutex<()>,
    writes: AtomicU32,
}

/// The state's bytes as a handle last read or wrote them, with [`Store::writes`] as it was
/// before that read (or after that write): the first guess of the handle's next swap of the
/// state (see [`Store::swap_state`]). Never trusted: a stale guess only fails that swap.
#[derive(Debug, Clone)]
pub(crate) struct Guess {
    pub(crate) bytes: Vec<u8>,
    pub(crate) writes: u32,
}

/// The change that replaces a stored state with the bytes `next` makes from it, and leaves
/// anything else (nothing, a moved-marker) as it is.
fn state_change(mut next: impl FnMut(&[u8]) -> Result<Vec<u8>> + Send + 'static) -> Change {
    Box::new(move |current: Option<&[u8]>| match current {
        Some(state) if is_state(state) => Ok(Update::Set(next(state)?)),
        _ => Ok(Update::Keep),
    })
}

std::thread_local! {
    /// Whether this thread holds an update lock: an update nested in another's closure takes
    /// none, so it can neither wait for itself nor for a session sharing its lock.
    static IN_UPDATE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A turn behind [`Store::update_lock`], or none for an update nested in another one's
/// closure; dropping it ends the turn.
pub(crate) struct UpdateTurn<'a> {
    guard: Option<parking_lot::MutexGuard<'a, ()>>,
}

impl<'a> UpdateTurn<'a> {
    pub(crate) fn take(store: &'a Store, id: &SessionId) -> Self {
        if IN_UPDATE.with(std::cell::Cell::get) {
            return UpdateTurn { guard: None };
        }
        let guard = super::points::lock(store.update_lock(id));
        IN_UPDATE.with(|held| held.set(true));
        UpdateTurn { guard: Some(guard) }
    }
}

impl Drop for UpdateTurn<'_> {
    fn drop(&mut self) {
        if self.guard.is_some() {
            IN_UPDATE.with(|held| held.set(false));
        }
    }
}

/// Indexing: the expiry index, the expiry hint, and the per-user index entries.
impl Store {
    /// Adds the index entry for a session expiring at `meta`'s expiry, and records this
    /// `Sessions`' timeouts in the archive if this process has not yet. Called BEFORE the write
    /// that moves the expiry there, so that no stored expiry is ever without its entry: if the
    /// write then fails, or never happens, the entry is spurious, which is harmless since the
    /// sweep re-checks every candidate against its timestamps.
    fn index(&self, id: &SessionId, meta: Meta) -> Result<()> {
        match self.expires_at(meta) {
            Some(at) => self.expiry_index().index_all(&[(id.as_str(), at)], true),
            None => Ok(()),
        }
    }

    /// Asks backends that expire domains themselves to drop the session's domain when it
    /// expires. Called AFTER every write to the session's domain, since a write may clear it.
    pub(crate) fn expire_hint(&self, id: &SessionId, meta: Meta) -> Result<()> {
        if let Some(at) = self.expires_at(meta) {
            self.archive.expire_domain(id.as_str(), unix_time(at))?;
        }
        Ok(())
    }

    /// The expiry index of these sessions: `expiry-<n>` and `sweep-cursor`.
    fn expiry_index(&self) -> Index<'_> {
        Index {
            archive: &*self.archive,
            names: SESSIONS_INDEX,
            clock: &*self.config.clock,
            granularity: self.config.sweep_granularity,
            lifetime: self.config.lifetime,
            known_width: &self.index_width,
            settings_recorded: &self.settings_recorded,
        }
    }

    /// A new binding of `id` to `user`, with an index entry of its own (see
    /// [`entry_key`]), not written yet: see [`add_user_entry`](Self::add_user_entry).
    fn new_binding(&self, id: &SessionId, user: &str) -> Result<Binding> {
        validate_user(user)?;
        Ok(Binding {
            user: user.to_owned(),
            entry: Some(entry_key(&self.stored_name(id))),
        })
    }

    /// Writes the index entry of `binding` (of session `id`), valued with the time it was
    /// written. Called BEFORE every write that stores the binding (again before each retry,
    /// which costs nothing when the entry is there), so that no stored binding is ever without
    /// its entry.
    fn add_user_entry(&self, id: &SessionId, binding: &Binding) -> Result<()> {
        let domain = user_domain(&binding.user);
        let now = self.now();
        let key = binding_entry(binding, id.as_str());
        self.archive.set(&domain, key, now.to_string().as_bytes())?;
        self.keep_user_index(&domain, now)
    }

    /// On backends that expire domains themselves (Redis), keeps the user index `domain` until
    /// the last of its sessions can have expired: no session written or touched at `now`
    /// outlives now plus the longest timeout. Called on every write that binds a session and on
    /// every touch of a bound one, so the index never expires before a session it lists, even
    /// one kept alive by use for longer than any single timeout.
    fn keep_user_index(&self, domain: &str, now: u64) -> Result<()> {
        if let Some(longest) = self.config.lifetime.longest() {
            let at = unix_time(now.saturating_add(longest).saturating_add(60));
            self.archive.expire_domain(domain, at)?;
        }
        Ok(())
    }

    /// Removes the index entry that `binding` of session `id` wrote. Called AFTER the binding
    /// was replaced or the session ended. Every binding has an entry of its own, so this never
    /// removes the entry of another binding, even one to the same user that lands meanwhile.
    fn remove_user_entry(&self, id: &SessionId, binding: &Binding) -> Result<()> {
        let domain = user_domain(&binding.user);
        if super::points::mutated(Mutation::UnconditionalIndexRemoval) {
            // The defect the explorer must catch: every entry of the session under that user.
            let mut keys = Vec::new();
            for key in crate::archive::ArchiveExt::keys(&*self.archive, &domain) {
                let key = key?;
                if entry_session(&key) == self.stored_name(id) {
                    keys.push(key);
                }
            }
            let entries: Vec<(&str, &str)> =
                keys.iter().map(|k| (domain.as_str(), k.as_str())).collect();
            self.archive.remove_many(&entries)?;
            return Ok(());
        }
        self.archive
            .remove(&domain, binding_entry(binding, id.as_str()))?;
        Ok(())
    }
}

/// The writes of a revoke and of the listing of a user's sessions (see `users.rs`).
impl Store {
    /// Drops the entry `key` of the user index `domain`, whose session is moved or absent for
    /// good: no binding can need it any more.
    pub(crate) fn drop_entry(&self, domain: &str, key: &str) -> Result<()> {
        self.archive.remove(domain, key)?;
        Ok(())
    }

    /// Destroys the session `id` as a revoke found it, bound by `stamp` and holding `state`: one
    /// swap of the state to nothing while the record is as read, so that a session rebound (or
    /// written) in between is not destroyed but judged again. Whether it destroyed it.
    pub(crate) fn revoke_swap(&self, id: &SessionId, stamp: &Stamp, state: &[u8]) -> Result<bool> {
        let swaps = [
            (STATE_KEY, Some(state), None),
            (META_KEY, Some(&stamp.raw[..]), Some(&stamp.raw[..])),
        ];
        self.archive.compare_and_swap_many(id.as_str(), &swaps)
    }

    /// Reads the record and the state of each of `ids` in one [`Archive::get_each`] (one read
    /// snapshot, or one round trip, where the backend can), each record before its state as
    /// [`read_pair`](Self::read_pair) reads them: for a revoke that judges a page of a user's
    /// index at once.
    pub(crate) fn read_sessions(
        &self,
        ids: &[&SessionId],
    ) -> Result<Vec<(Option<Vec<u8>>, Stored)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let entries: Vec<(&str, &str)> = ids
            .iter()
            .flat_map(|id| [(id.as_str(), META_KEY), (id.as_str(), STATE_KEY)])
            .collect();
        let mut values = self.archive.get_each(&entries)?.into_iter();
        let mut read = Vec::with_capacity(ids.len());
        while let (Some(record), Some(state)) = (values.next(), values.next()) {
            read.push((record, Stored::from(state)));
        }
        if read.len() != ids.len() {
            return Err(Error::Backend {
                backend: "sessions",
                operation: "read the record and state of several sessions",
                source: "the archive answered fewer values than it was asked for".into(),
            });
        }
        Ok(read)
    }

    /// [`revoke_swap`](Self::revoke_swap) of several sessions in one
    /// [`Archive::compare_and_swap_each`] (one commit, or one round trip, where the backend
    /// can): each session's state to nothing while its record and state are as read, each on
    /// its own. Whether each was destroyed.
    pub(crate) fn revoke_swaps(&self, found: &[(&SessionId, &Stamp, &[u8])]) -> Result<Vec<bool>> {
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let swaps: Vec<[Swap<'_>; 2]> = found
            .iter()
            .map(|&(_, stamp, state)| {
                [
                    (STATE_KEY, Some(state), None),
                    (META_KEY, Some(&stamp.raw[..]), Some(&stamp.raw[..])),
                ]
            })
            .collect();
        let groups: Vec<SwapGroup<'_>> = found
            .iter()
            .zip(&swaps)
            .map(|(&(id, _, _), swaps)| (id.as_str(), &swaps[..]))
            .collect();
        let swapped = self.archive.compare_and_swap_each(&groups)?;
        if swapped.len() != groups.len() {
            return Err(Error::Backend {
                backend: "sessions",
                operation: "destroy several sessions of a user",
                source: "the archive answered fewer outcomes than it was given swaps".into(),
            });
        }
        Ok(swapped)
    }

    /// Removes what the sessions a revoke destroyed left, each given with its binding's entry
    /// key in the user index `domain`: their domains first, then the entries, one batch each.
    pub(crate) fn remove_revoked(
        &self,
        domain: &str,
        revoked: &[(SessionId, String)],
    ) -> Result<()> {
        let names: Vec<&str> = revoked.iter().map(|(id, _)| id.as_str()).collect();
        self.archive.remove_domains(&names)?;
        let entries: Vec<(&str, &str)> = revoked
            .iter()
            .map(|(_, key)| (domain, key.as_str()))
            .collect();
        self.archive.remove_many(&entries)?;
        Ok(())
    }
}

/// Opening and touching a stored session.
impl Store {
    /// Opens the stored session `id` at `now`: its state and timestamps, or why there is none.
    ///
    /// The timestamps are read before the state. A destroy removes the state first and the
    /// timestamps after it, so a state read after timestamps found missing proves the session
    /// was stored without timestamps (the original framework's) when they were read, and not
    /// half-way through a destroy. An expired session is removed, unless `may_write` is false.
    fn open(
        &self,
        id: &SessionId,
        read: Option<Vec<Option<Vec<u8>>>>,
        now: u64,
        may_write: bool,
    ) -> Result<Opened<(Vec<u8>, Option<Stamp>)>> {
        let (stamp, state) = match read {
            Some(values) => pair(id, values)?,
            None => self.read_pair(id)?,
        };
        let Stored::State(bytes) = state else {
            return Ok(Opened::Unknown);
        };
        if let Some(stamp) = &stamp
            && self.is_expired(stamp.meta, now)
        {
            if !may_write {
                return Ok(Opened::MustWrite);
            }
            self.archive.remove_domain(id.as_str())?;
            // Then its user entry, as a destroy does, best effort: a stale entry is dropped by
            // the next listing of the user's sessions.
            if let Some(binding) = &stamp.binding {
                let _ = self.remove_user_entry(id, binding);
            }
            return Ok(Opened::Unknown);
        }
        Ok(Opened::Found((bytes, stamp)))
    }

    /// Copies an undecodable state into [`CORRUPT_DOMAIN`], then retires the id by swapping that
    /// state for nothing. Returns whether it retired the id; not when another write replaced the
    /// bytes meanwhile, which leaves the session to the caller's ordinary error.
    pub(crate) fn set_aside(&self, id: &SessionId, bytes: &[u8], now: u64) -> Result<bool> {
        let fingerprint = id.fingerprint();
        let key = format!("{now}-{}", fingerprint.trim_start_matches('#'));
        self.archive.set(CORRUPT_DOMAIN, &key, bytes)?;
        if !self
            .archive
            .compare_and_swap(id.as_str(), STATE_KEY, Some(bytes), None)?
        {
            return Ok(false);
        }
        // The id is dead; its timestamps are indexed and go with the sweep if this fails.
        let _ = self.archive.remove_domain(id.as_str());
        Ok(true)
    }

    /// Starts the stored session `id`: reads it (see [`open`](Self::open)), or takes `read`, the
    /// values of a [`prefetch`](Self::prefetch) with the count of this process's writes taken
    /// before it; decodes its state with `decode`, and refreshes its record when due (see
    /// [`resume_touch`](Self::resume_touch)).
    /// With `may_write` false it writes nothing, and answers [`Opened::MustWrite`] where it
    /// would have written. With `set_aside_corrupt`, a state that does not decode is set aside
    /// (see [`set_aside`](Self::set_aside)) and the session is unknown, instead of the error.
    pub(crate) fn start<S>(
        &self,
        id: &SessionId,
        read: Option<(u32, Vec<Option<Vec<u8>>>)>,
        may_write: bool,
        set_aside_corrupt: bool,
        decode: impl FnOnce(&[u8]) -> Result<S>,
    ) -> Result<Opened<Started<S>>> {
        let now = self.now();
        // Read before the session is, so that a write of this process landing in between
        // makes the guess stale.
        let (writes, read) = match read {
            Some((writes, values)) => (writes, Some(values)),
            None => (self.writes(id), None),
        };
        let opened = match self.open(id, read, now, may_write) {
            Err(err @ Error::CorruptSession { .. }) if set_aside_corrupt => {
                return self.retire_corrupt(id, may_write, now, err);
            }
            opened => opened?,
        };
        let (bytes, mut stamp) = match opened {
            Opened::Found(found) => found,
            Opened::Unknown => return Ok(Opened::Unknown),
            Opened::MustWrite => return Ok(Opened::MustWrite),
        };
        let state = match decode(&bytes) {
            Ok(state) => state,
            Err(err) if set_aside_corrupt => {
                if !may_write {
                    return Ok(Opened::MustWrite);
                }
                if self.set_aside(id, &bytes, now)? {
                    return Ok(Opened::Unknown);
                }
                return Err(err);
            }
            Err(err) => return Err(err),
        };
        if !may_write && self.touch_due(stamp.as_ref(), now) {
            return Ok(Opened::MustWrite);
        }
        let bound = stamp.as_ref().and_then(Stamp::user).map(str::to_owned);
        Ok(match self.resume_touch(id, &mut stamp, now)? {
            Some(refreshed) => Opened::Found(Started {
                state,
                guess: Guess { bytes, writes },
                stamp,
                bound,
                refreshed,
            }),
            None => Opened::Unknown,
        })
    }

    /// A session whose record does not decode, started with `set_aside_corrupt`: its state is
    /// set aside (see [`set_aside`](Self::set_aside)) and the id retired, as for a state that does
    /// not decode, so that its cookie does not fail every request until a sweep (which cannot
    /// judge it either). `err` is the answer when the state changed meanwhile.
    fn retire_corrupt<S>(
        &self,
        id: &SessionId,
        may_write: bool,
        now: u64,
        err: Error,
    ) -> Result<Opened<Started<S>>> {
        if !may_write {
            return Ok(Opened::MustWrite);
        }
        match self.read_state(id)? {
            Stored::State(bytes) if self.set_aside(id, &bytes, now)? => Ok(Opened::Unknown),
            Stored::State(_) => Err(err),
            Stored::Absent | Stored::Moved(_) => Ok(Opened::Unknown),
        }
    }

    /// The touch of a session being started (see [`touch`](Self::touch)): whether it wrote.
    /// Adopting a session without timestamps writes them from nothing; if a destroy removed the
    /// state meanwhile, those timestamps would make a dead id look alive (and its cookie would be
    /// sent again), so they are taken back and the session is unknown (`None`).
    fn resume_touch(
        &self,
        id: &SessionId,
        stamp: &mut Option<Stamp>,
        now: u64,
    ) -> Result<Option<bool>> {
        let adopting = stamp.is_none();
        if !self.touch(id, stamp, now)? {
            return Ok(Some(false));
        }
        if adopting && !matches!(self.read_state(id)?, Stored::State(_)) {
            if let Some(stamp) = stamp {
                self.archive
                    .compare_and_swap(id.as_str(), META_KEY, Some(&stamp.raw), None)?;
            }
            return Ok(None);
        }
        Ok(Some(true))
    }

    /// Rewrites `last seen` if it is old enough, or writes the first timestamps of a session
    /// stored without them, keeping the binding as it is. `stamp` is the record as the caller
    /// last read or wrote it, and is updated. A lost race (another handle touched, rebound or
    /// destroyed the session first) is not an error: the winner's record stands, and is read.
    /// The expiry index entry is written first, and the user index's life is extended first.
    /// Returns whether it wrote.
    pub(crate) fn touch(
        &self,
        id: &SessionId,
        stamp: &mut Option<Stamp>,
        now: u64,
    ) -> Result<bool> {
        let next = match stamp.as_ref() {
            // An expired session is dead: a touch must not bring it back (the swap expects the
            // record judged here).
            Some(old) if self.is_expired(old.meta, now) => return Ok(false),
            Some(old) if !self.needs_touch(old.meta, now) => return Ok(false),
            Some(old) => old.with_meta(
                id,
                Meta {
                    seen: now,
                    ..old.meta
                },
            )?,
            None => Stamp::new(id, Meta::fresh(now), None, 0)?,
        };
        self.index(id, next.meta)?;
        if let Some(user) = next.user() {
            self.keep_user_index(&user_domain(user), now)?;
        }
        let expected = stamp.as_ref().map(|stamp| stamp.raw.as_slice());
        if self
            .archive
            .compare_and_swap(id.as_str(), META_KEY, expected, Some(&next.raw))?
        {
            self.expire_hint(id, next.meta)?;
            *stamp = Some(next);
            return Ok(true);
        }
        *stamp = self.read_meta(id)?;
        Ok(false)
    }
}

/// Writing a session: create, swap, destroy, and the move of a regenerate.
impl Store {
    /// Stores a session that is not stored yet, with `meta` as its timestamps and bound to
    /// `user`, under `id`, or under a fresh id (left in `id`) if that one is taken; as the copy
    /// of the session stored as `from` when a regenerate makes it (see [`Stamp::from`]).
    /// Returns the timestamps stored, or `None` when every id drawn was taken.
    ///
    /// The writes go in the order that keeps every failure, or crash, between them recoverable:
    /// the index entries, then the record and the state together, in one
    /// [`Archive::compare_and_swap_many`] from nothing that claims the id (on the directory
    /// tree a crash part-way may leave the record alone: indexed, so the sweep removes it when
    /// it expires). Last comes the expiry hint (see [`expire_hint`](Self::expire_hint)). On
    /// an error what was written is removed, as far as the archive allows: the id never left
    /// the caller, so nobody else can have reached it.
    pub(crate) fn create(
        &self,
        id: &mut SessionId,
        bytes: &[u8],
        meta: Meta,
        user: Option<&str>,
        from: Option<&str>,
    ) -> Result<Option<Stamp>> {
        if let Some(user) = user {
            validate_user(user)?;
        }
        for _ in 0..CREATE_ATTEMPTS {
            let binding = user.map(|user| self.new_binding(id, user)).transpose()?;
            let stamp = Stamp::copy_of(id, meta, binding, 0, from.map(str::to_owned))?;
            if self.create_at(id, bytes, &stamp)? {
                if let Err(err) = self.expire_hint(id, meta) {
                    // If the removal fails too, what is left is indexed and swept on expiry.
                    self.forget(id, stamp.binding.as_ref());
                    return Err(err);
                }
                return Ok(Some(stamp));
            }
            *id = SessionId::generate();
        }
        Ok(None)
    }

    /// One attempt of [`create`](Self::create) under `id`: whether it stored the session (not
    /// when the id is taken).
    fn create_at(&self, id: &SessionId, bytes: &[u8], stamp: &Stamp) -> Result<bool> {
        let archive = &*self.archive;
        self.index(id, stamp.meta)?;
        if let Some(binding) = &stamp.binding {
            self.add_user_entry(id, binding)?;
        }
        let raw = &stamp.raw[..];
        let id = id.as_str();
        // The record and the state from nothing, in one swap: a sweep or a revoke never finds
        // one without the other, and an id holding either (a state of the original framework's,
        // stored without a record, say) is taken.
        let create = [(META_KEY, None, Some(raw)), (STATE_KEY, None, Some(bytes))];
        match archive.compare_and_swap_many(id, &create) {
            Ok(created) => Ok(created),
            Err(err) => {
                // The swap may or may not have landed. Best effort, and removing only what this
                // call wrote: if the removal fails too, the record left is indexed, so the sweep
                // removes the domain when it expires.
                let undo = [(META_KEY, Some(raw), None), (STATE_KEY, Some(bytes), None)];
                let _ = archive.compare_and_swap_many(id, &undo);
                Err(err)
            }
        }
    }

    /// Replaces the state stored under `id` with the bytes `next` makes from it, reading and
    /// swapping again whenever another write landed in between, and returns what it stored and
    /// what `next` returned; `None` once no state is stored (the session was destroyed or
    /// moved).
    ///
    /// `guess` is the state as the caller last read or wrote it, with the record it read or
    /// wrote. Where a read waits for storage (see [`guesses`](Self::guesses)), and this process
    /// wrote none of the sessions of `id`'s stripe since (see [`writes`](Self::writes)), the
    /// first swap expects them instead of reading first, which saves a round trip whenever
    /// nobody wrote meanwhile. Only the swap decides: a stale guess fails it, and the loop reads
    /// as usual. If `next` fails on the guess, it is given the stored state before its error
    /// counts, since it may fail on one state and not on another (a state grown over the size
    /// limit).
    ///
    /// A swap answered with an error may have landed, its answer lost; what is read back then
    /// tells (see [`landed`](Self::landed)), so that the caller's answer is `Ok` exactly when
    /// the write is stored, unless that read fails too. An update writes the record with the
    /// state, with a fresh value in it (see [`Stamp::for_update`]): the state alone could not
    /// tell its write from another's that stored the same bytes (two increments of one count).
    pub(crate) fn swap_state<R>(
        &self,
        id: &SessionId,
        guess: Option<(Guess, Option<Stamp>)>,
        writing: Writing,
        mut next: impl FnMut(&[u8]) -> Result<(Vec<u8>, R)>,
    ) -> Result<Option<Swapped<R>>> {
        let mut guess =
            guess.filter(|(guess, _)| self.guesses() && guess.writes == self.writes(id));
        loop {
            let guessed = guess.is_some();
            let (record, current) = match guess.take() {
                Some((guess, record)) => (record, guess.bytes),
                None => match self.read_pair(id)? {
                    (record, Stored::State(current)) => (record, current),
                    (_, Stored::Absent | Stored::Moved(_)) => return Ok(None),
                },
            };
            let (bytes, result) = match next(&current) {
                Ok(made) => made,
                Err(_) if guessed => continue,
                Err(err) => return Err(err),
            };
            let written = match (writing, &record) {
                (Writing::Update, Some(record)) => Some(record.for_update(id)?),
                _ => None,
            };
            let swaps = state_swaps(&current, &bytes, record.as_ref(), written.as_ref());
            let swapped = match self.swap(id, &swaps) {
                Ok(swapped) => swapped,
                Err(_) if self.landed(id, &bytes, written.as_ref(), writing) => true,
                Err(err) => return Err(err),
            };
            if swapped {
                let guess = self.swapped(id, bytes);
                return Ok(Some(Swapped {
                    guess,
                    stamp: written,
                    result,
                }));
            }
        }
    }

    /// One swap of `id`'s keys: a key alone by [`Archive::compare_and_swap`], several by
    /// [`Archive::compare_and_swap_many`].
    fn swap(&self, id: &SessionId, swaps: &[Swap<'_>]) -> Result<bool> {
        match *swaps {
            [(key, expected, new)] => {
                self.archive
                    .compare_and_swap(id.as_str(), key, expected, new)
            }
            _ => self.archive.compare_and_swap_many(id.as_str(), swaps),
        }
    }

    /// Whether a swap of the state to `bytes` (an update's with the record `written`), answered
    /// with an error, landed: an update's record is there, or a save's bytes are (a save stores
    /// the same bytes whatever the state it replaces, so finding them answers it the same). An
    /// update of a session stored without a record cannot tell: no.
    pub(crate) fn landed(
        &self,
        id: &SessionId,
        bytes: &[u8],
        written: Option<&Stamp>,
        writing: Writing,
    ) -> bool {
        match (writing, written) {
            (_, Some(written)) => {
                matches!(self.archive.get(id.as_str(), META_KEY), Ok(Some(raw)) if raw == written.raw)
            }
            (Writing::Save, None) => {
                matches!(self.read_state(id), Ok(Stored::State(stored)) if stored == bytes)
            }
            (Writing::Update, None) => false,
        }
    }

    /// The session's record and state, read together (see [`pair`]).
    fn read_pair(&self, id: &SessionId) -> Result<(Option<Stamp>, Stored)> {
        pair(
            id,
            self.archive.get_many(id.as_str(), &[META_KEY, STATE_KEY])?,
        )
    }

    /// Whether a swap of the state starts from the caller's guess rather than from a read:
    /// where a read waits for storage ([`Blocking::Always`]: a server, a file system), a read
    /// saved is a round trip saved, and an archive with async paths needs the guess for its
    /// async update, which reads nothing. Elsewhere a read costs next to nothing, and on a
    /// backend that shares commits a stale guess would cost a failed swap in a commit of its
    /// own.
    fn guesses(&self) -> bool {
        self.archive.blocking() == Blocking::Always || self.async_paths.load(Ordering::Relaxed)
    }

    /// Replaces the state stored under `id` with the bytes `next` makes from it, and returns the
    /// guess for the next swap with the record written (see [`Swapped`]), or `None` when no
    /// state was there to replace (the session was destroyed or moved). Where reads wait for
    /// storage this is [`swap_state`](Self::swap_state) from `guess`, taking its turn behind
    /// [`update_lock`](Self::update_lock) (a failed swap costs a round trip). Elsewhere it is one
    /// [`Archive::update`]: a backend with a serial writer runs `next` inside its commit, so
    /// that concurrent updates of one session share a commit instead of taking turns.
    pub(crate) fn update_state(
        &self,
        id: &SessionId,
        guess: Option<(Guess, Option<Stamp>)>,
        mut next: impl FnMut(&[u8]) -> Result<Vec<u8>> + Send + 'static,
    ) -> Result<Option<(Guess, Option<Stamp>)>> {
        let _turn = matches!(self.archive.blocking(), Blocking::Writes | Blocking::Always)
            .then(|| UpdateTurn::take(self, id));
        if self.guesses() {
            let swapped = self.swap_state(id, guess, Writing::Update, |current| {
                Ok((next(current)?, ()))
            })?;
            return Ok(swapped.map(|swapped| (swapped.guess, swapped.stamp)));
        }
        let writes = self.writes(id);
        let after = self
            .archive
            .update(id.as_str(), STATE_KEY, state_change(next))?;
        Ok(after
            .filter(|bytes| is_state(bytes))
            .map(|bytes| (Guess { bytes, writes }, None)))
    }

    /// Stores the state that `next` makes of the stored one together with a new binding (to
    /// `user`, or to none), with `last seen` at `now`: one compare-and-swap of both the state
    /// and the record, so that no reader ever sees the new state with the old binding or the
    /// reverse, retried while other writes land. The new binding's index entry is written
    /// before each try; the replaced binding's entry is removed after. Returns the record
    /// stored and what `next` returned, or `None` once no state is stored (the session was
    /// destroyed or moved).
    pub(crate) fn write_bound<R>(
        &self,
        id: &SessionId,
        user: Option<&str>,
        now: u64,
        mut next: impl FnMut(&[u8]) -> Result<(Vec<u8>, R)>,
    ) -> Result<Option<(Stamp, R)>> {
        let binding = user.map(|user| self.new_binding(id, user)).transpose()?;
        loop {
            if let Some(binding) = &binding {
                self.add_user_entry(id, binding)?;
            }
            let stamp = self.read_meta(id)?;
            let Stored::State(current) = self.read_state(id)? else {
                // Dead for good: the entry just written leads nowhere. Only that entry goes:
                // what the domain holds (a moved-marker, say) is not this call's to remove.
                if let Some(binding) = &binding {
                    let _ = self.remove_user_entry(id, binding);
                }
                return Ok(None);
            };
            // An expired session is dead, even before a sweep removes it; the swap below expects
            // the record judged here, so this is no check followed by a write.
            if stamp
                .as_ref()
                .is_some_and(|old| self.is_expired(old.meta, now))
            {
                return Ok(None);
            }
            let (bytes, result) = next(&current)?;
            let meta = stamp.as_ref().map_or(Meta::fresh(now), |old| Meta {
                seen: now,
                ..old.meta
            });
            let rev = stamp.as_ref().map_or(0, |old| old.rev);
            let fresh = Stamp::new(id, meta, binding.clone(), rev)?;
            self.index(id, meta)?;
            let swaps = [
                (
                    META_KEY,
                    stamp.as_ref().map(|old| &old.raw[..]),
                    Some(&fresh.raw[..]),
                ),
                (STATE_KEY, Some(&current[..]), Some(&bytes[..])),
            ];
            if self.archive.compare_and_swap_many(id.as_str(), &swaps)? {
                // The write is done and answered as done. What follows only tidies: a replaced
                // entry left behind is stale (readers skip it), and a hint not moved leaves the
                // native expiry where it was (the expiry index still covers the session).
                if let Some(old) = stamp.and_then(|old| old.binding) {
                    let _ = self.remove_user_entry(id, &old);
                }
                let _ = self.expire_hint(id, meta);
                return Ok(Some((fresh, result)));
            }
        }
    }

    /// Destroys what is stored under `id`: one compare-and-swap of its state to nothing,
    /// retried while other writes land. Returns whether a session was there to destroy (and
    /// not already destroyed, or moved by a regenerate, whose writer removes it).
    pub(crate) fn destroy(&self, id: &SessionId) -> Result<bool> {
        loop {
            let Stored::State(current) = self.read_state(id)? else {
                return Ok(false);
            };
            let destroyed = if super::points::mutated(Mutation::DestroyPlainRemove) {
                self.archive.remove(id.as_str(), STATE_KEY)?
            } else {
                match self
                    .archive
                    .compare_and_swap(id.as_str(), STATE_KEY, Some(&current), None)
                {
                    Ok(destroyed) => destroyed,
                    // The swap may have landed and its answer been lost: no state left means
                    // the session is destroyed, which is what was asked.
                    Err(err) => match self.read_state(id) {
                        Ok(Stored::Absent) => true,
                        _ => return Err(err),
                    },
                }
            };
            if destroyed {
                // The session is destroyed. No write binds it any more (each swaps the state it
                // read), so the record read now holds its last binding. What is left is the
                // record and the binding's entry, which no write can bring back to life; a
                // failure to remove them leaves the record indexed, for the sweep, and the
                // entry stale, for the next listing of the user's sessions.
                let binding = self.read_meta(id).ok().flatten().and_then(|s| s.binding);
                self.forget(id, binding.as_ref());
                return Ok(true);
            }
        }
    }

    /// Removes what is left of a session no one can reach any more (destroyed, moved away from,
    /// or a regenerate's copy that was never handed out): its domain, then the index entry of
    /// its `binding`. In that order, so a failure between leaves a stale entry (dropped by the
    /// next listing of the user's sessions), never a domain that the user's index does not lead
    /// to. Best effort: what a failure leaves is indexed, and goes with the sweep.
    pub(crate) fn forget(&self, id: &SessionId, binding: Option<&Binding>) {
        // The entry goes only once the domain is gone: a domain left by a failed removal keeps
        // the entry that leads to it.
        if self.archive.remove_domain(id.as_str()).is_ok()
            && let Some(binding) = binding
        {
            let _ = self.remove_user_entry(id, binding);
        }
    }
}

/// The sweep, the record of settings, and the adoption of sessions stored without timestamps.
impl Store {
    /// Removes every session that has expired; see [`Sessions::sweep`](super::Sessions::sweep).
    ///
    /// A session is removed only when it has expired by this store's timeouts AND by those the
    /// archive's record holds (the application's): an admin `Sessions` with shorter timeouts
    /// never ends a session that the application still resumes.
    pub(crate) fn sweep(&self) -> Result<usize> {
        let index = self.expiry_index();
        let recorded = index
            .stored_settings()?
            .map(|settings| Lifetime::new(settings.idle_timeout, settings.absolute_lifetime));
        let lifetime = recorded.map_or(self.config.lifetime, |recorded| {
            self.config.lifetime.or_longer(recorded)
        });
        if lifetime.longest().is_none() {
            // Nothing expires by these timeouts: nothing to remove, and no entry to drop that
            // an application with timeouts still needs.
            return Ok(0);
        }
        index.sweep(&Sweeping {
            store: self,
            lifetime,
        })
    }

    /// The expiry settings recorded in the archive, if any.
    pub(crate) fn stored_settings(&self) -> Result<Option<StoredSettings>> {
        self.expiry_index().stored_settings()
    }

    /// Indexes every session and gives those stored without timestamps timestamps from now;
    /// see [`Sessions::adopt_legacy`](super::Sessions::adopt_legacy).
    pub(crate) fn adopt_legacy(&self, mut progress: impl FnMut(u64)) -> Result<usize> {
        let fresh = Meta::fresh(self.now());
        if self.expires_at(fresh).is_none() {
            return Ok(0);
        }
        let mut adopted = 0;
        let mut scanned = 0_u64;
        let mut cursor = None;
        loop {
            let page = self
                .archive
                .list_domains(cursor.as_deref(), DEFAULT_PAGE_SIZE)?;
            adopted += self.adopt_page(&page.names, fresh)?;
            scanned += page.names.len() as u64;
            progress(scanned);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(adopted),
            }
        }
    }

    /// [`adopt_legacy`](Self::adopt_legacy) over one listing page of domains: the index entries
    /// first (one batch), then the timestamps `fresh` of each session stored without, by a
    /// compare-and-swap from nothing. Returns how many sessions it adopted.
    fn adopt_page(&self, domains: &[String], fresh: Meta) -> Result<usize> {
        let fresh_expiry = self.expires_at(fresh).unwrap_or(u64::MAX);
        let mut entries = Vec::new();
        let mut unstamped = Vec::new();
        let mut unreachable = Vec::new();
        for domain in domains {
            // With ids hashed at rest, a domain named by a plain id was stored before
            // hashing was turned on: no cookie reaches it any more.
            if self.would_hash(domain) {
                unreachable.push(domain.as_str());
                continue;
            }
            let Some(id) = SessionId::from_stored(domain) else {
                continue;
            };
            match self.read_meta(&id) {
                Ok(Some(stamp)) => entries.extend(self.expires_at(stamp.meta).map(|at| (id, at))),
                Ok(None) if self.archive.has(id.as_str(), STATE_KEY)? => {
                    entries.push((id.clone(), fresh_expiry));
                    unstamped.push(id);
                }
                Ok(None) | Err(Error::CorruptSession { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        let entries: Vec<(&str, u64)> = entries.iter().map(|(id, at)| (id.as_str(), *at)).collect();
        self.expiry_index().index_all(&entries, false)?;
        let mut adopted = 0;
        for id in &unstamped {
            let raw = Stamp::new(id, fresh, None, 0)?.raw;
            if self
                .archive
                .compare_and_swap(id.as_str(), META_KEY, None, Some(&raw))?
            {
                adopted += 1;
                self.expire_hint(id, fresh)?;
            }
        }
        if !unreachable.is_empty() {
            self.raw.remove_domains(&unreachable)?;
        }
        Ok(adopted)
    }
}

/// A sweep of the sessions' expiry index: the store, and the lifetime it judges by.
struct Sweeping<'a> {
    store: &'a Store,
    lifetime: Lifetime,
}

impl Sweeping<'_> {
    /// Judges one index entry of `bucket` by the session's timestamps.
    fn sweep_verdict(&self, id: &SessionId, bucket: u64, now: u64, width: u64) -> Result<Verdict> {
        let stamp = self.store.for_stored(id.as_str()).read_meta(id);
        self.judge_stamp(id, stamp, bucket, now, width)
    }

    /// The verdict on the index entry of `id` in `bucket`, whose record was read as `stamp`.
    fn judge_stamp(
        &self,
        id: &SessionId,
        stamp: Result<Option<Stamp>>,
        bucket: u64,
        now: u64,
        width: u64,
    ) -> Result<Verdict> {
        let stamp = match stamp {
            Ok(Some(stamp)) => stamp,
            Ok(None) | Err(Error::CorruptSession { .. }) => return Ok(Verdict::Drop),
            Err(err) => return Err(err),
        };
        if self.lifetime.is_expired(stamp.meta, now) {
            let unbind = stamp.binding.map(|binding| {
                let key = binding_entry(&binding, id.as_str()).to_owned();
                (user_domain(&binding.user), key)
            });
            return Ok(Verdict::Expired { unbind });
        }
        Ok(match self.lifetime.expires_at(stamp.meta) {
            None => Verdict::Drop,
            Some(at) if place(at, now, width, 0) == bucket => Verdict::Keep,
            Some(at) => Verdict::Later { at },
        })
    }
}

impl Judge for Sweeping<'_> {
    fn verdict(&self, entry: &str, bucket: u64, now: u64, width: u64) -> Result<Verdict> {
        match SessionId::from_stored(entry) {
            Some(id) => self.sweep_verdict(&id, bucket, now, width),
            None => Ok(Verdict::Drop),
        }
    }

    /// Every record of the page in one [`Archive::get_each`] per store (one read snapshot, or
    /// one round trip, where the backend can).
    fn verdicts(
        &self,
        entries: &[String],
        bucket: u64,
        now: u64,
        width: u64,
    ) -> Result<Vec<Verdict>> {
        let ids: Vec<Option<SessionId>> = entries
            .iter()
            .map(|entry| SessionId::from_stored(entry))
            .collect();
        let mut records: Vec<Option<Vec<u8>>> = vec![None; ids.len()];
        // Sessions under plain ids, in an archive whose ids are hashed, through a store that
        // does not hash their names again.
        for plain in [false, true] {
            let part: Vec<(usize, &SessionId)> = ids
                .iter()
                .enumerate()
                .filter_map(|(i, id)| Some((i, id.as_ref()?)))
                .filter(|(_, id)| self.store.would_hash(id.as_str()) == plain)
                .collect();
            let Some((_, first)) = part.first() else {
                continue;
            };
            let reach = self.store.for_stored(first.as_str());
            let reads: Vec<(&str, &str)> =
                part.iter().map(|(_, id)| (id.as_str(), META_KEY)).collect();
            let read = reach.archive.get_each(&reads)?;
            if read.len() != reads.len() {
                return Err(Error::Backend {
                    backend: "sessions",
                    operation: "read the records of a page of the expiry index",
                    source: "the archive answered fewer values than it was asked for".into(),
                });
            }
            for ((i, _), record) in part.iter().zip(read) {
                records[*i] = record;
            }
        }
        ids.iter()
            .zip(records)
            .map(|(id, record)| match id {
                Some(id) => {
                    let stamp = record.map(|raw| Stamp::decode(id, raw)).transpose();
                    self.judge_stamp(id, stamp, bucket, now, width)
                }
                None => Ok(Verdict::Drop),
            })
            .collect()
    }

    fn remove_expired(&self, expired: &[&str]) -> Result<usize> {
        // Sessions under plain ids, in an archive whose ids are hashed, through a store that
        // does not hash their names again.
        let (plain, ours): (Vec<&str>, Vec<&str>) =
            expired.iter().partition(|name| self.store.would_hash(name));
        let mut removed = self.store.archive.remove_domains(&ours)?;
        if let Some(first) = plain.first() {
            removed += self
                .store
                .for_stored(first)
                .archive
                .remove_domains(&plain)?;
        }
        Ok(removed)
    }
}

/// A session's record and state from the values of one [`Archive::get_many`] of its
/// [`META_KEY`] and [`STATE_KEY`], in that order: a write that changes the binding swaps the
/// record and the state at once, so the state read was stored with the record's binding (or, by
/// a write of the state alone, kept it). A destroy removes the state before the record, so a
/// state found with no record is one stored without (the original framework's), not one
/// half-way through a destroy.
fn pair(id: &SessionId, values: Vec<Option<Vec<u8>>>) -> Result<(Option<Stamp>, Stored)> {
    let mut values = values.into_iter();
    let (Some(record), Some(state), None) = (values.next(), values.next(), values.next()) else {
        return Err(Error::Backend {
            backend: "sessions",
            operation: "read a session's record and state together",
            source: "the archive's get_many answered another number of values than keys".into(),
        });
    };
    let stamp = record.map(|raw| Stamp::decode(id, raw)).transpose()?;
    Ok((stamp, Stored::from(state)))
}

/// The swaps of one write of the state from `current` to `bytes`: with the record, from
/// `record` to `written`, when an update writes it (see [`Store::swap_state`]).
pub(crate) fn state_swaps<'a>(
    current: &'a [u8],
    bytes: &'a [u8],
    record: Option<&'a Stamp>,
    written: Option<&'a Stamp>,
) -> Vec<Swap<'a>> {
    let mut swaps = vec![(STATE_KEY, Some(current), Some(bytes))];
    if let (Some(record), Some(written)) = (record, written) {
        swaps.push((META_KEY, Some(&record.raw[..]), Some(&written.raw[..])));
    }
    swaps
}

/// How a write of the state came to be, which says how its outcome is told after an error
/// (see [`Store::swap_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writing {
    /// A save: the bytes do not depend on the state they replace.
    Save,
    /// An update: the bytes are made from the state they replace.
    Update,
}

/// What [`Store::swap_state`] stored: the guess for the writer's next swap, the record it wrote
/// with the state (an update's; `None`: the record is as it was), and what `next` returned.
pub(crate) struct Swapped<R> {
    pub(crate) guess: Guess,
    pub(crate) stamp: Option<Stamp>,
    pub(crate) result: R,
}
