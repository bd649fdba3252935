//! Expiry: the timestamps kept beside each session, the expiry index, the record of its settings,
//! and the sweep.
//!
//! # The index
//!
//! Each expiring session has an entry (key = its id, empty value) in the index domain
//! `expiry-<bucket>`, where `bucket` is a time in unix seconds divided by the index's width (the
//! sweep granularity). An entry is added whenever the expiry moves (a save, or a read that
//! refreshes `seen`), before the timestamps are written, so a failed write leaves at worst a
//! spurious entry, never a stored expiry without one. The old entry is left behind and dropped by
//! the sweep, which re-checks every candidate against its timestamps.
//!
//! The protocol below is [`Index`]'s, whoever owns the index: `Sessions` keeps its index under
//! the names given here, and the tower-sessions store keeps one of its own under other names
//! ([`IndexNames`]). Each owner judges its own entries ([`Judge`]).
//!
//! # The record
//!
//! The key `index` of the domain `sweep-cursor` holds a [`Record`], as JSON:
//! `{"granularity":60,"idle":86400,"absolute":604800,"swept":…,"claimed":…}`. It says
//!
//! - the width every index bucket has. Every `Sessions` over the archive uses it, whatever width
//!   it was built with, so the index has one width and every sweep finds every entry. The first
//!   `Sessions` to write the record chooses it (a compare-and-swap from nothing: exactly one
//!   wins);
//! - the idle timeout and absolute lifetime (`null` for none) of the application that recorded
//!   them last, for tools that sweep on its behalf;
//! - `swept`, a time: every bucket before `bucket(swept) - 1` has been swept;
//! - `claimed`, a time: how far a sweep has walked, or is walking. A sweep moves it up to now
//!   before it lists any bucket, and moves `swept` up to now once it has walked every bucket from
//!   `bucket(swept) - 1` to that of now; so `swept <= claimed`, and both only move forward.
//!
//! Keeping times rather than bucket numbers is what lets a record outlive a change of width.
//!
//! # Where an entry goes
//!
//! An entry goes into the bucket of the session's expiry, or of now if that is later (a handle
//! held past its session's expiry), or `bucket(claimed) - 1` if that is later still (a writer
//! whose clock lags the sweeper's). The writer checks this AFTER writing the entry, by reading the
//! record, and moves the entry when the check fails. As a sweep claims before it lists, the
//! writer's read either follows that claim, and then sees whether the sweep may have passed the
//! entry's bucket, or precedes it, and then the sweep lists the bucket after the entry was
//! written. Either way some sweep lists the entry. The same check moves an entry written with a
//! width other than the recorded one, and writes the record when it is missing, so a removed
//! `sweep-cursor` is written again by the next index write.
//!
//! # Earlier archives
//!
//! Earlier versions kept only `sweep-cursor/bucket`, the bare number of the first bucket the next
//! sweep visits, in the width of whoever swept last. It is read once, when the record is first
//! written: the record's width is then that of the `Sessions` writing it, and the old cursor,
//! read in that width, becomes `swept` (no further back than [`INDEX_GRACE_SECS`]). The key is
//! left in place for processes of the earlier version, which keep using it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::clock::Clock;
use super::id::SessionId;
use super::{Inner, META_KEY, STATE_KEY, Sessions, decode, encode_meta};
use crate::archive::{Archive, DEFAULT_PAGE_SIZE};
use crate::error::{Error, Result};

/// `last seen` is rewritten only once it is older than `idle timeout / TOUCH_FRACTION`, so that
/// reading a session does not write on every request.
const TOUCH_FRACTION: u64 = 8;

const INDEX_PREFIX: &str = "expiry-";
const CURSOR_DOMAIN: &str = "sweep-cursor";
/// The key of the [`Record`].
const RECORD_KEY: &str = "index";
/// The key of the earlier versions' cursor: a bare bucket number.
const LEGACY_CURSOR_KEY: &str = "bucket";
/// How long an index bucket outlives its last session on backends with native expiry, so that
/// an app that never sweeps does not grow the index forever, and one that sweeps at least this
/// often still sees every entry. It also bounds how far back an earlier version's cursor is
/// followed.
const INDEX_GRACE_SECS: u64 = 7 * 24 * 60 * 60;
/// How many times an operation on the record reads it again after another process changed it
/// between the read and the compare-and-swap. Each failed swap means another one succeeded, so
/// this only bounds the work against a backend whose compare-and-swap never succeeds.
const RECORD_ATTEMPTS: usize = 16;

/// The timestamps kept under [`META_KEY`], in unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Meta {
    pub(super) created: u64,
    pub(super) seen: u64,
}

/// The expiry index's settings and progress, under `sweep-cursor/index` (see the module docs).
/// Times and durations are in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
struct Record {
    granularity: u64,
    idle: Option<u64>,
    absolute: Option<u64>,
    swept: u64,
    claimed: u64,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        fn or_null(value: Option<u64>) -> String {
            value.map_or_else(|| "null".to_owned(), |value| value.to_string())
        }
        format!(
            r#"{{"granularity":{},"idle":{},"absolute":{},"swept":{},"claimed":{}}}"#,
            self.granularity,
            or_null(self.idle),
            or_null(self.absolute),
            self.swept,
            self.claimed,
        )
        .into_bytes()
    }

    /// The record in `raw`, or `None` for bytes that are not one (or claim a zero width).
    fn decode(raw: &[u8]) -> Option<Record> {
        serde_json::from_slice::<Record>(raw)
            .ok()
            .filter(|record| record.granularity > 0)
    }
}

/// What `sweep-cursor/index` holds.
enum Stored {
    Missing,
    /// Bytes that are not a record; they can only come from outside this crate, and are replaced
    /// as a missing record would be written.
    Unreadable(Vec<u8>),
    Found(Record, Vec<u8>),
}

impl Stored {
    /// The stored bytes, to compare-and-swap against.
    fn raw(&self) -> Option<&[u8]> {
        match self {
            Stored::Missing => None,
            Stored::Unreadable(raw) | Stored::Found(_, raw) => Some(raw),
        }
    }
}

/// The expiry settings recorded in an archive, as [`Sessions::stored_settings`] returns them.
///
/// Every [`Sessions`] over the archive indexes and sweeps with the recorded
/// [`sweep_granularity`](Self::sweep_granularity). The idle timeout and absolute lifetime are
/// those of the application that recorded them last (each `Sessions` records its own with its
/// first session write); tools such as `session-archive sweep` judge expiry by them.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use session_archive::{MemoryArchive, Sessions};
///
/// let sessions = Sessions::builder(MemoryArchive::new())
///     .idle_timeout(Duration::from_secs(1800))
///     .build();
/// sessions.start(None, ())?.save()?;
/// let stored = sessions.stored_settings()?.expect("recorded by the save");
/// assert_eq!(stored.idle_timeout, Some(Duration::from_secs(1800)));
/// # Ok::<(), session_archive::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredSettings {
    /// The width of one expiry-index bucket.
    pub sweep_granularity: Duration,
    /// The idle timeout; `None` for none.
    pub idle_timeout: Option<Duration>,
    /// The absolute lifetime; `None` for none.
    pub absolute_lifetime: Option<Duration>,
}

impl From<Record> for StoredSettings {
    fn from(record: Record) -> Self {
        StoredSettings {
            sweep_granularity: Duration::from_secs(record.granularity),
            idle_timeout: record.idle.map(Duration::from_secs),
            absolute_lifetime: record.absolute.map(Duration::from_secs),
        }
    }
}

impl Sessions {
    /// Removes every session that has expired, and returns how many it removed.
    ///
    /// The sweep walks the expiry index from where the previous sweep stopped up to now, one
    /// bucket per [granularity](crate::SessionsBuilder::sweep_granularity). For each indexed id
    /// it reads only the session's timestamps, never its state, and removes the session if it has
    /// really expired; index entries left behind when a session was used again are dropped. Its
    /// cost is the number of expired (and recently re-indexed) sessions plus the number of
    /// buckets, and does not grow with the number of live sessions. Removals go a listing page at
    /// a time, as one [`remove_domains`](Archive::remove_domains) and one
    /// [`remove_many`](Archive::remove_many) batch. Domains left holding only timestamps (a write
    /// that raced a destroy, or a create cut short before its state) are removed when they
    /// expire.
    ///
    /// **Settings.** Expiry is judged by this `Sessions`' idle timeout and absolute lifetime. The
    /// index's bucket width, and where the previous sweep stopped, are recorded in the archive
    /// (see [`stored_settings`](Self::stored_settings)), so sweeps from processes built with
    /// other settings, such as the `session-archive sweep` tool, share one index and one cursor:
    /// each visits only the buckets elapsed since the previous sweep, whoever ran it, and finds
    /// every entry. A live session whose entry a sweep drops keeps an entry at its own expiry,
    /// so a sweep with a longer timeout than the application's leaves nothing unindexed.
    ///
    /// **Recovery.** Index entries written late (by a process whose clock lags, or by a handle
    /// held past its session's expiry) are placed where a sweep still visits them. When the
    /// record is removed (by hand, or by a Redis eviction), the next index write writes it again,
    /// and so does the next sweep of a `Sessions` that has seen it; a sweep that has never seen
    /// the record, and finds none, has nothing it could walk and returns 0 without writing.
    /// Entries of sessions that expired while the record was missing are found again by
    /// [`adopt_legacy`](Self::adopt_legacy). Sessions stored while no expiry was configured, or by
    /// the original framework (no timestamps at all), are indexed when next used, or by
    /// [`adopt_legacy`](Self::adopt_legacy). Sweeps may run concurrently, from any number of
    /// processes sharing the archive.
    ///
    /// A sweep judges a page by reading timestamps, then removes; the archive has no conditional
    /// removal. So a session that expired and is saved by a request in that gap is removed all
    /// the same, as a sweep a moment earlier would have; and an index entry read while its
    /// session's first timestamps are not written yet is dropped, which leaves that session
    /// unindexed until it is next used. The latter needs a session created to expire within the
    /// bucket being swept: an idle timeout, or what is left of the absolute lifetime at a
    /// regenerate, shorter than the [granularity](crate::SessionsBuilder::sweep_granularity).
    ///
    /// # Errors
    ///
    /// The archive's errors. A session whose timestamps are unreadable is left in place and
    /// dropped from the index, rather than failing the sweep.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use session_archive::{ManualClock, MemoryArchive, Sessions};
    ///
    /// let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
    /// let sessions = Sessions::builder(MemoryArchive::new())
    ///     .idle_timeout(Duration::from_secs(600))
    ///     .clock(clock.clone())
    ///     .build();
    /// sessions.start(None, "state".to_owned())?.save()?;
    /// assert_eq!(sessions.sweep()?, 0);
    /// clock.advance(Duration::from_secs(601));
    /// assert_eq!(sessions.sweep()?, 1);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn sweep(&self) -> Result<usize> {
        let inner = &*self.inner;
        inner.expiry_index().sweep(inner)
    }

    /// Returns the expiry settings recorded in the archive (see [`StoredSettings`]), or `None`
    /// when there are none: no session has been indexed there by this version yet, or the record
    /// was removed, or it is not readable.
    ///
    /// # Errors
    ///
    /// The archive's errors.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let archive = std::sync::Arc::new(MemoryArchive::new());
    /// let app = Sessions::builder(archive.clone())
    ///     .sweep_granularity(Duration::from_secs(10))
    ///     .build();
    /// assert_eq!(app.stored_settings()?, None);
    /// app.start(None, ())?.save()?;
    ///
    /// // Another Sessions over the same archive indexes and sweeps with the recorded width.
    /// let tool = Sessions::builder(archive).sweep_granularity(Duration::from_secs(60)).build();
    /// let stored = tool.stored_settings()?.expect("recorded by the app");
    /// assert_eq!(stored.sweep_granularity, Duration::from_secs(10));
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn stored_settings(&self) -> Result<Option<StoredSettings>> {
        Ok(match self.inner.expiry_index().read_record()? {
            Stored::Found(record, _) => Some(record.into()),
            Stored::Missing | Stored::Unreadable(_) => None,
        })
    }

    /// Scans every domain of the archive once, and gives every session stored without timestamps
    /// (the original framework's `session.json` with no `meta.json`, for example after a
    /// migration from its directory tree) timestamps from now, so that it expires after this
    /// `Sessions`' timeouts unless it is used. Returns how many sessions it adopted so.
    ///
    /// For each such session the index entry is written first, then the timestamps, by a
    /// compare-and-swap from nothing: a session that gets timestamps meanwhile (a request used
    /// it) keeps those, and is not counted. The state is never read or written. Sessions that
    /// have timestamps are indexed again at their expiry, which restores entries lost with a
    /// removed `sweep-cursor` or by an eviction; a following [`sweep`](Self::sweep) removes those
    /// that have expired. The cost is O(all domains): a listing, one read per session, and a
    /// batch of index writes per listing page. `progress` is called after each page with the
    /// number of domains scanned so far. Running it again adopts nothing new; with no idle
    /// timeout and no absolute lifetime it does nothing. With
    /// [ids hashed at rest](crate::SessionsBuilder::hash_ids_at_rest) it also removes the
    /// sessions stored under plain ids before hashing was turned on, which no cookie reaches.
    ///
    /// # Errors
    ///
    /// The archive's errors; what was written before stays, and a second run continues the job.
    /// Sessions whose timestamps are unreadable are left as they are.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use session_archive::{Archive, ManualClock, MemoryArchive, Sessions};
    ///
    /// let archive = std::sync::Arc::new(MemoryArchive::new());
    /// // As the original framework left it: a state, no timestamps.
    /// archive.set("0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2", "session.json", br#"{"Name":"World"}"#)?;
    ///
    /// let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
    /// let sessions = Sessions::builder(archive.clone())
    ///     .idle_timeout(Duration::from_secs(600))
    ///     .clock(clock.clone())
    ///     .build();
    /// assert_eq!(sessions.adopt_legacy(|_scanned| {})?, 1);
    /// clock.advance(Duration::from_secs(600));
    /// assert_eq!(sessions.sweep()?, 1);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn adopt_legacy(&self, mut progress: impl FnMut(u64)) -> Result<usize> {
        let inner = &*self.inner;
        let archive = &*inner.archive;
        let now = inner.now();
        let fresh = Meta {
            created: now,
            seen: now,
        };
        let Some(fresh_expiry) = inner.expires_at(fresh) else {
            return Ok(0);
        };
        let mut adopted = 0;
        let mut scanned = 0_u64;
        let mut cursor = None;
        loop {
            let page = archive.list_domains(cursor.as_deref(), DEFAULT_PAGE_SIZE)?;
            let mut entries = Vec::new();
            let mut unstamped = Vec::new();
            let mut unreachable = Vec::new();
            for domain in &page.names {
                // With ids hashed at rest, a domain named by a plain id was stored before
                // hashing was turned on: no cookie reaches it any more.
                if inner.config.hash_ids && SessionId::parse(domain).is_some() {
                    unreachable.push(domain.as_str());
                    continue;
                }
                let Some(id) = SessionId::from_stored(domain) else {
                    continue;
                };
                match inner.read_meta(&id) {
                    Ok(Some((meta, _))) => {
                        if let Some(at) = inner.expires_at(meta) {
                            entries.push((id, at));
                        }
                    }
                    Ok(None) => {
                        if archive.has(id.as_str(), STATE_KEY)? {
                            entries.push((id.clone(), fresh_expiry));
                            unstamped.push(id);
                        }
                    }
                    Err(Error::CorruptSession { .. }) => {}
                    Err(err) => return Err(err),
                }
            }
            let entries: Vec<(&str, u64)> =
                entries.iter().map(|(id, at)| (id.as_str(), *at)).collect();
            inner.expiry_index().index_all(&entries, false)?;
            for id in &unstamped {
                let raw = encode_meta(id, fresh, None)?;
                if archive.compare_and_swap(id.as_str(), META_KEY, None, Some(&raw))? {
                    adopted += 1;
                    inner.expire_hint(id, fresh)?;
                }
            }
            if !unreachable.is_empty() {
                inner.raw.remove_domains(&unreachable)?;
            }
            scanned += page.names.len() as u64;
            progress(scanned);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok(adopted)
    }
}

impl Inner {
    pub(super) fn now(&self) -> u64 {
        unix_secs(self.config.clock.now())
    }

    /// When a session with these timestamps expires, if it ever does.
    pub(super) fn expires_at(&self, meta: Meta) -> Option<u64> {
        let idle = self
            .config
            .idle_timeout
            .map(|idle| meta.seen.saturating_add(idle.as_secs()));
        let absolute = self
            .config
            .absolute_lifetime
            .map(|life| meta.created.saturating_add(life.as_secs()));
        match (idle, absolute) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(super) fn is_expired(&self, meta: Meta, now: u64) -> bool {
        self.expires_at(meta).is_some_and(|at| now >= at)
    }

    /// Whether `seen` is old enough to be rewritten (see [`TOUCH_FRACTION`]).
    pub(super) fn needs_touch(&self, meta: Meta, now: u64) -> bool {
        self.config
            .idle_timeout
            .is_some_and(|idle| now.saturating_sub(meta.seen) > idle.as_secs() / TOUCH_FRACTION)
    }

    /// Reads a session's timestamps and their raw bytes.
    pub(super) fn read_meta(&self, id: &SessionId) -> Result<Option<(Meta, Vec<u8>)>> {
        let Some(raw) = self.archive.get(id.as_str(), META_KEY)? else {
            return Ok(None);
        };
        let meta = decode(id, &raw)?;
        Ok(Some((meta, raw)))
    }

    /// Adds the index entry for a session expiring at `meta`'s expiry, and records this
    /// `Sessions`' timeouts in the archive if this process has not yet. Called BEFORE the write
    /// that moves the expiry there, so that no stored expiry is ever without its entry: if the
    /// write then fails, or never happens, the entry is spurious, which is harmless since the
    /// sweep re-checks every candidate against its timestamps.
    pub(super) fn index(&self, id: &SessionId, meta: Meta) -> Result<()> {
        match self.expires_at(meta) {
            Some(at) => self.expiry_index().index_all(&[(id.as_str(), at)], true),
            None => Ok(()),
        }
    }

    /// Asks backends that expire domains themselves to drop the session's domain when it
    /// expires. Called AFTER every write to the session's domain, since a write may clear it.
    pub(super) fn expire_hint(&self, id: &SessionId, meta: Meta) -> Result<()> {
        if let Some(at) = self.expires_at(meta) {
            self.archive.expire_domain(id.as_str(), unix_time(at))?;
        }
        Ok(())
    }

    /// The expiry index of these sessions: `expiry-<n>` and `sweep-cursor`.
    pub(super) fn expiry_index(&self) -> Index<'_> {
        Index {
            archive: &*self.archive,
            names: SESSIONS_INDEX,
            clock: &*self.config.clock,
            granularity: self.config.sweep_granularity,
            idle: self.config.idle_timeout.map(|idle| idle.as_secs()),
            absolute: self.config.absolute_lifetime.map(|life| life.as_secs()),
            known_width: &self.index_width,
            settings_recorded: &self.settings_recorded,
        }
    }
}

impl Judge for Inner {
    fn verdict(&self, entry: &str, bucket: u64, now: u64, width: u64) -> Result<Verdict> {
        match SessionId::from_stored(entry) {
            Some(id) => self.sweep_verdict(&id, bucket, now, width),
            None => Ok(Verdict::Drop),
        }
    }

    fn remove_expired(&self, expired: &[&str]) -> Result<usize> {
        self.archive.remove_domains(expired)
    }
}

/// Where an expiry index lives in the archive: its buckets are the domains `<prefix><n>`, and its
/// [`Record`] is the key `index` of the domain `cursor`. The names must not be those of anything
/// else the archive holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexNames {
    pub(crate) prefix: &'static str,
    pub(crate) cursor: &'static str,
}

/// The index of [`Sessions`].
const SESSIONS_INDEX: IndexNames = IndexNames {
    prefix: INDEX_PREFIX,
    cursor: CURSOR_DOMAIN,
};

impl IndexNames {
    fn bucket(self, bucket: u64) -> String {
        format!("{}{bucket}", self.prefix)
    }
}

/// How the owner of an index judges the entries a sweep finds. An entry is the name of a domain
/// that expires, and the entry's key in its bucket.
pub(crate) trait Judge {
    /// What the sweep does with `entry`, found in `bucket` (of `width`) at `now`.
    fn verdict(&self, entry: &str, bucket: u64, now: u64, width: u64) -> Result<Verdict>;

    /// Removes the domains of entries of one listing page judged [`Verdict::Expired`], and
    /// returns how many it removed. Their entries are removed after this returns.
    fn remove_expired(&self, expired: &[&str]) -> Result<usize>;
}

/// One expiry index (see the module docs), with what its owner knows of it: the protocol of its
/// entries, its record and its sweep, for every owner (`Sessions`, and the tower-sessions store).
pub(crate) struct Index<'a> {
    pub(crate) archive: &'a dyn Archive,
    pub(crate) names: IndexNames,
    pub(crate) clock: &'a dyn Clock,
    /// The owner's own width, used until the record has been read.
    pub(crate) granularity: u64,
    /// The owner's idle timeout and absolute lifetime, recorded for tools (see the module docs).
    pub(crate) idle: Option<u64>,
    pub(crate) absolute: Option<u64>,
    /// The index's width as last read from the record; 0 until then.
    pub(crate) known_width: &'a AtomicU64,
    /// Whether this process has recorded its timeouts in the record.
    pub(crate) settings_recorded: &'a AtomicBool,
}

impl Index<'_> {
    pub(crate) fn now(&self) -> u64 {
        unix_secs(self.clock.now())
    }

    /// Sweeps the index (see [`Sessions::sweep`]): walks its buckets from where the previous
    /// sweep stopped up to now, judging each entry with `judge`, and returns how many domains
    /// `judge` removed.
    pub(crate) fn sweep(&self, judge: &dyn Judge) -> Result<usize> {
        let now = self.now();
        let Some(record) = self.claim(now)? else {
            return Ok(0);
        };
        let width = record.granularity;
        let current = bucket_of(now, width);
        let mut removed = 0;
        // Starting one bucket early catches an entry that a writer placed at `bucket(claimed) - 1`
        // (see the module docs) just as the previous sweep finished.
        for bucket in bucket_of(record.swept, width).saturating_sub(1)..=current {
            removed += self.sweep_bucket(judge, bucket, now, width)?;
        }
        // The current bucket may still gain entries that expire later in it, so `swept` moves
        // only up to now, and the next sweep visits this bucket again.
        self.finish_sweep(&record, now)?;
        Ok(removed)
    }

    /// The width the index is written with, as far as this process knows: the recorded one once
    /// it has read the record, and until then its own.
    fn width(&self) -> u64 {
        match self.known_width.load(Ordering::Acquire) {
            0 => self.granularity,
            width => width,
        }
    }

    fn remember(&self, record: &Record) {
        self.known_width
            .store(record.granularity, Ordering::Release);
    }

    fn read_record(&self) -> Result<Stored> {
        Ok(match self.archive.get(self.names.cursor, RECORD_KEY)? {
            None => Stored::Missing,
            Some(raw) => match Record::decode(&raw) {
                Some(record) => Stored::Found(record, raw),
                None => Stored::Unreadable(raw),
            },
        })
    }

    /// The record to write where there is none: `width`, this `Sessions`' timeouts, and a sweep
    /// that starts from now, or from where an earlier version's cursor says (read in `width`).
    fn fresh_record(&self, width: u64, now: u64) -> Result<Record> {
        let legacy = self.archive.get(self.names.cursor, LEGACY_CURSOR_KEY)?;
        let start = legacy
            .and_then(|raw| std::str::from_utf8(&raw).ok()?.parse::<u64>().ok())
            .map_or(now, |bucket| {
                bucket
                    .saturating_mul(width)
                    .clamp(now.saturating_sub(INDEX_GRACE_SECS), now)
            });
        Ok(Record {
            granularity: width,
            idle: self.idle,
            absolute: self.absolute,
            swept: start,
            claimed: start,
        })
    }

    /// Writes index entries for sessions expiring at the given times, then checks them against
    /// the record and moves those a sweep might never visit (see the module docs), writing the
    /// record if it is missing. With `record_settings`, also records this `Sessions`' timeouts,
    /// once per process (and again after the record went missing).
    pub(crate) fn index_all(&self, entries: &[(&str, u64)], record_settings: bool) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let now = self.now();
        let mut width = self.width();
        let mut placed: Vec<u64> = entries
            .iter()
            .map(|&(_, at)| place(at, now, width, 0))
            .collect();
        self.write_entries(entries, &placed, width)?;
        for _ in 0..RECORD_ATTEMPTS {
            let (record, raw) = match self.read_record()? {
                Stored::Found(record, raw) => (record, raw),
                missing => {
                    self.settings_recorded.store(false, Ordering::Release);
                    let record = self.fresh_record(width, now)?;
                    let raw = record.encode();
                    if !self.archive.compare_and_swap(
                        self.names.cursor,
                        RECORD_KEY,
                        missing.raw(),
                        Some(&raw),
                    )? {
                        continue;
                    }
                    (record, raw)
                }
            };
            self.remember(&record);
            if record_settings && !self.settings_recorded.load(Ordering::Acquire) {
                let ours = Record {
                    idle: self.idle,
                    absolute: self.absolute,
                    ..record
                };
                if ours != record
                    && !self.archive.compare_and_swap(
                        self.names.cursor,
                        RECORD_KEY,
                        Some(&raw),
                        Some(&ours.encode()),
                    )?
                {
                    continue;
                }
                self.settings_recorded.store(true, Ordering::Release);
            }
            let floor = bucket_of(record.claimed, record.granularity).saturating_sub(1);
            let stray: Vec<usize> = (0..entries.len())
                .filter(|&i| width != record.granularity || placed[i] < floor)
                .collect();
            if stray.is_empty() {
                return Ok(());
            }
            let moved: Vec<(&str, u64)> = stray.iter().map(|&i| entries[i]).collect();
            let to: Vec<u64> = moved
                .iter()
                .map(|&(_, at)| place(at, now, record.granularity, record.claimed))
                .collect();
            // The new entries first: a failure in between leaves an entry too many, never one
            // too few.
            self.write_entries(&moved, &to, record.granularity)?;
            let from: Vec<(String, &str)> = stray
                .iter()
                .zip(&to)
                .filter(|&(&i, &to)| self.names.bucket(placed[i]) != self.names.bucket(to))
                .map(|(&i, _)| (self.names.bucket(placed[i]), entries[i].0))
                .collect();
            let from: Vec<(&str, &str)> = from.iter().map(|(d, k)| (d.as_str(), *k)).collect();
            if !from.is_empty() {
                self.archive.remove_many(&from)?;
            }
            for (&i, to) in stray.iter().zip(to) {
                placed[i] = to;
            }
            width = record.granularity;
        }
        // Only reached while the record changed under every check; each check moved the entries
        // on, and they stay where the last one put them.
        Ok(())
    }

    /// Writes one index entry per session, in the given buckets of `width`, and asks backends
    /// with native expiry to drop each bucket [`INDEX_GRACE_SECS`] after it ends, so that an app
    /// that never sweeps does not grow the index forever.
    fn write_entries(&self, entries: &[(&str, u64)], buckets: &[u64], width: u64) -> Result<()> {
        let domains: Vec<String> = buckets
            .iter()
            .map(|&bucket| self.names.bucket(bucket))
            .collect();
        if let ([(id, _)], [domain]) = (entries, domains.as_slice()) {
            self.archive.set(domain, id, b"")?;
        } else {
            let batch: Vec<(&str, &str, &[u8])> = domains
                .iter()
                .zip(entries)
                .map(|(domain, (id, _))| (domain.as_str(), *id, &b""[..]))
                .collect();
            self.archive.set_many(&batch)?;
        }
        let mut distinct = buckets.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        for bucket in distinct {
            let end = bucket.saturating_add(1).saturating_mul(width);
            self.archive.expire_domain(
                &self.names.bucket(bucket),
                unix_time(end.saturating_add(INDEX_GRACE_SECS)),
            )?;
        }
        Ok(())
    }

    /// Reads the record and moves `claimed` up to `now`, so that a writer that reads the record
    /// after this sweep lists a bucket sees whether it may have passed it. Returns the record as
    /// claimed, or `None` when there is nothing to sweep: no record, and no width known to this
    /// process to write one with; or a record that kept changing under every attempt, which
    /// means other processes are sweeping.
    fn claim(&self, now: u64) -> Result<Option<Record>> {
        for _ in 0..RECORD_ATTEMPTS {
            let (record, raw) = match self.read_record()? {
                Stored::Found(record, raw) => (record, raw),
                missing => {
                    // A process that has seen the record knows the index's width, and writes the
                    // record again; one that has not could only guess, and a wrong guess would
                    // make every index write move its entries to that width.
                    let width = self.known_width.load(Ordering::Acquire);
                    if width == 0 {
                        return Ok(None);
                    }
                    let fresh = self.fresh_record(width, now)?;
                    self.archive.compare_and_swap(
                        self.names.cursor,
                        RECORD_KEY,
                        missing.raw(),
                        Some(&fresh.encode()),
                    )?;
                    continue;
                }
            };
            self.remember(&record);
            if record.claimed >= now {
                return Ok(Some(record));
            }
            let claimed = Record {
                claimed: now,
                ..record
            };
            if self.archive.compare_and_swap(
                self.names.cursor,
                RECORD_KEY,
                Some(&raw),
                Some(&claimed.encode()),
            )? {
                return Ok(Some(claimed));
            }
        }
        Ok(None)
    }

    /// Moves `swept` up to `now` after a sweep claimed with `claimed` walked every bucket from
    /// `bucket(claimed.swept) - 1` to that of now. A record that was written again meanwhile
    /// (after a removal) is left as it is, as is one that keeps changing: the next sweep then
    /// walks these buckets again, which only costs time.
    fn finish_sweep(&self, claimed: &Record, now: u64) -> Result<()> {
        for _ in 0..RECORD_ATTEMPTS {
            let Stored::Found(record, raw) = self.read_record()? else {
                return Ok(());
            };
            if record.granularity != claimed.granularity
                || record.swept < claimed.swept
                || record.claimed < now
            {
                return Ok(());
            }
            let swept = Record {
                swept: record.swept.max(now),
                ..record
            };
            if swept == record
                || self.archive.compare_and_swap(
                    self.names.cursor,
                    RECORD_KEY,
                    Some(&raw),
                    Some(&swept.encode()),
                )?
            {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Sweeps one bucket of `width`, a listing page at a time, and returns how many sessions it
    /// removed.
    fn sweep_bucket(&self, judge: &dyn Judge, bucket: u64, now: u64, width: u64) -> Result<usize> {
        let archive = self.archive;
        let domain = self.names.bucket(bucket);
        let mut removed = 0;
        let mut cursor = None;
        loop {
            let page = archive.list_keys(&domain, cursor.as_deref(), DEFAULT_PAGE_SIZE)?;
            // A page's removals are two batches, so that a sweep costs a few commits per page
            // rather than two per session: the expired sessions first, then their index entries,
            // so that a sweep cut short leaves entries to find again, never an expired session
            // without one.
            let mut expired = Vec::new();
            let mut dropped = Vec::new();
            let mut unbound = Vec::new();
            for entry in &page.names {
                match judge.verdict(entry, bucket, now, width)? {
                    Verdict::Keep => continue,
                    Verdict::Expired { user } => {
                        expired.push(entry.as_str());
                        if let Some(user) = user {
                            unbound.push((super::users::user_domain(&user), entry.as_str()));
                        }
                    }
                    Verdict::Drop => {}
                    Verdict::Later { at } => {
                        // Usually the write that moved the expiry left an entry there; when it did
                        // not (the session was indexed by other timeouts than this sweep's), one
                        // is written before this one goes.
                        let target = self.names.bucket(place(at, now, width, 0));
                        if !archive.has(&target, entry)? {
                            self.index_all(&[(entry, at)], false)?;
                        }
                    }
                }
                dropped.push((domain.as_str(), entry.as_str()));
            }
            if !expired.is_empty() {
                removed += judge.remove_expired(&expired)?;
            }
            // The users' entries go with the expiry index's: after the sessions they cover.
            dropped.extend(
                unbound
                    .iter()
                    .map(|(domain, entry)| (domain.as_str(), *entry)),
            );
            if !dropped.is_empty() {
                archive.remove_many(&dropped)?;
            }
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok(removed)
    }
}

impl Inner {
    /// Judges one index entry of `bucket` by the session's timestamps.
    fn sweep_verdict(&self, id: &SessionId, bucket: u64, now: u64, width: u64) -> Result<Verdict> {
        let (meta, raw) = match self.read_meta(id) {
            Ok(Some(read)) => read,
            Ok(None) | Err(Error::CorruptSession { .. }) => return Ok(Verdict::Drop),
            Err(err) => return Err(err),
        };
        if self.is_expired(meta, now) {
            return Ok(Verdict::Expired {
                user: super::users::bound_user(&raw),
            });
        }
        Ok(match self.expires_at(meta) {
            None => Verdict::Drop,
            Some(at) if place(at, now, width, 0) == bucket => Verdict::Keep,
            Some(at) => Verdict::Later { at },
        })
    }
}

/// What the sweep does with an index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The session is live and expires in this bucket, which the next sweep visits again: the
    /// entry stays.
    Keep,
    /// The session expired: it goes, and so does the entry, and its entry in the index of the
    /// user it was bound to.
    Expired { user: Option<String> },
    /// The session is gone, unreadable, or never expires by this sweep's settings: the entry
    /// goes.
    Drop,
    /// The session is live and expires at `at`, in a later bucket: the entry goes, once there is
    /// one in that bucket.
    Later { at: u64 },
}

/// The bucket of `width` an entry for a session expiring at `at` goes into, written at `now`
/// against a record that says `claimed`: its expiry's, unless that is in the past or a sweep may
/// have passed it (see the module docs).
pub(crate) fn place(at: u64, now: u64, width: u64, claimed: u64) -> u64 {
    bucket_of(at, width)
        .max(bucket_of(now, width))
        .max(bucket_of(claimed, width).saturating_sub(1))
}

fn bucket_of(secs: u64, width: u64) -> u64 {
    secs / width.max(1)
}

/// A time in unix seconds as a `SystemTime`, saturating far in the future.
fn unix_time(secs: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX)))
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::Record;

    #[test]
    fn records_round_trip_and_reject_what_is_not_one() {
        let record = Record {
            granularity: 10,
            idle: None,
            absolute: Some(604_800),
            swept: 1_700_000_000,
            claimed: 1_700_000_060,
        };
        assert_eq!(Record::decode(&record.encode()), Some(record));
        for bad in [
            &b"172000000"[..],
            b"",
            b"{}",
            br#"{"granularity":0,"idle":null,"absolute":null,"swept":0,"claimed":0}"#,
            br#"{"granularity":-1,"idle":null,"absolute":null,"swept":0,"claimed":0}"#,
        ] {
            assert_eq!(
                Record::decode(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
