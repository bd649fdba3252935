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
//! The key `index` of the domain `sweep-cursor` holds a [`IndexRecord`], as JSON:
//! `{"granularity":60,"idle":86400,"absolute":604800,"swept":…,"claimed":…}`. It says
//!
//! - the width every index bucket has. Every `Sessions` over the archive uses it, whatever width
//!   it was built with, so the index has one width and every sweep finds every entry. The first
//!   `Sessions` to write the record chooses it (a compare-and-swap from nothing: exactly one
//!   wins);
//! - the idle timeout and absolute lifetime (`null` for none), for tools that sweep on the
//!   applications' behalf: each the longest any `Sessions` over the archive has recorded, so
//!   that no sweep by them (or by a `Sessions` with shorter timeouts, which judges by the longer
//!   of its own and these) ends a session some application still resumes. They only grow: an
//!   application that shortens its timeouts leaves its sessions to the sweep a while longer;
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

use serde::Deserialize;

use super::clock::Clock;
use super::layout::{IndexNames, Meta};
use crate::archive::{Archive, DEFAULT_PAGE_SIZE};
use crate::error::Result;

/// The default width of one expiry-index bucket: 60 seconds; see
/// [`SessionsBuilder::sweep_granularity`](super::SessionsBuilder::sweep_granularity).
///
/// # Examples
///
/// A tool that sweeps an archive no application has indexed yet records this width:
///
/// ```
/// use session_archive::session::{DEFAULT_SWEEP_GRANULARITY, Sessions};
/// use session_archive::MemoryArchive;
///
/// let sessions = Sessions::new(MemoryArchive::new());
/// sessions.start(None, ())?.save()?;
/// let stored = sessions.stored_settings()?.expect("recorded by the save");
/// assert_eq!(stored.sweep_granularity, DEFAULT_SWEEP_GRANULARITY);
/// # Ok::<(), session_archive::Error>(())
/// ```
pub const DEFAULT_SWEEP_GRANULARITY: Duration = Duration::from_secs(60);

/// The key of the [`IndexRecord`].
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

/// The expiry index's settings and progress, under `sweep-cursor/index` (see the module docs).
/// Times and durations are in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
struct IndexRecord {
    granularity: u64,
    idle: Option<u64>,
    absolute: Option<u64>,
    swept: u64,
    claimed: u64,
}

impl IndexRecord {
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
    fn decode(raw: &[u8]) -> Option<IndexRecord> {
        serde_json::from_slice::<IndexRecord>(raw)
            .ok()
            .filter(|record| record.granularity > 0)
    }
}

/// What `sweep-cursor/index` holds.
enum StoredRecord {
    Missing,
    /// Bytes that are not a record; they can only come from outside this crate, and are replaced
    /// as a missing record would be written.
    Unreadable(Vec<u8>),
    Found(IndexRecord, Vec<u8>),
}

impl StoredRecord {
    /// The stored bytes, to compare-and-swap against.
    fn raw(&self) -> Option<&[u8]> {
        match self {
            StoredRecord::Missing => None,
            StoredRecord::Unreadable(raw) | StoredRecord::Found(_, raw) => Some(raw),
        }
    }
}

/// The expiry settings recorded in an archive, as
/// [`Sessions::stored_settings`](super::Sessions::stored_settings) returns them.
///
/// Every [`Sessions`](super::Sessions) over the archive indexes and sweeps with the recorded
/// [`sweep_granularity`](Self::sweep_granularity). The idle timeout and absolute lifetime are
/// each the longest any `Sessions` over the archive has recorded (each records its own with its
/// first session write, never shortening what is there); tools such as `session-archive sweep`
/// judge expiry by them, so they never end a session some application still resumes.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use session_archive::MemoryArchive;
/// use session_archive::session::Sessions;
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

impl From<IndexRecord> for StoredSettings {
    fn from(record: IndexRecord) -> Self {
        StoredSettings {
            sweep_granularity: Duration::from_secs(record.granularity),
            idle_timeout: record.idle.map(Duration::from_secs),
            absolute_lifetime: record.absolute.map(Duration::from_secs),
        }
    }
}

/// How the owner of an index judges the entries a sweep finds. An entry is the name of a domain
/// that expires, and the entry's key in its bucket.
pub(crate) trait Judge {
    /// What the sweep does with `entry`, found in `bucket` (of `width`) at `now`.
    fn verdict(&self, entry: &str, bucket: u64, now: u64, width: u64) -> Result<Verdict>;

    /// The verdicts on every entry of one listing page, in order. The default asks
    /// [`verdict`](Self::verdict) for each; an owner that can read what it judges the entries by
    /// in one call (one snapshot, one round trip) does, so a page costs one read, not one a
    /// session.
    fn verdicts(
        &self,
        entries: &[String],
        bucket: u64,
        now: u64,
        width: u64,
    ) -> Result<Vec<Verdict>> {
        entries
            .iter()
            .map(|entry| self.verdict(entry, bucket, now, width))
            .collect()
    }

    /// Removes the domains of entries of one listing page judged [`Verdict::Expired`], and
    /// returns how many it removed. Their entries are removed after this returns.
    fn remove_expired(&self, expired: &[&str]) -> Result<usize>;
}

/// `last seen` is rewritten only once it is older than `idle timeout / TOUCH_FRACTION`, so that
/// reading a session does not write on every request.
const TOUCH_FRACTION: u64 = 8;

/// The lifetime rules of sessions: the idle timeout and the absolute lifetime, in seconds
/// (`None` for none), and everything that follows from them for a session's timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lifetime {
    pub(crate) idle: Option<u64>,
    pub(crate) absolute: Option<u64>,
}

impl Lifetime {
    /// The rules of an idle timeout and an absolute lifetime.
    pub(crate) fn new(idle: Option<Duration>, absolute: Option<Duration>) -> Lifetime {
        Lifetime {
            idle: idle.map(|idle| idle.as_secs()),
            absolute: absolute.map(|life| life.as_secs()),
        }
    }

    /// When a session with these timestamps expires, if it ever does.
    pub(crate) fn expires_at(self, meta: Meta) -> Option<u64> {
        let idle = self.idle.map(|idle| meta.seen.saturating_add(idle));
        let absolute = self.absolute.map(|life| meta.created.saturating_add(life));
        match (idle, absolute) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether a session with these timestamps has expired at `now`.
    pub(crate) fn is_expired(self, meta: Meta, now: u64) -> bool {
        self.expires_at(meta).is_some_and(|at| now >= at)
    }

    /// Whether `seen` is old enough to be rewritten (see [`TOUCH_FRACTION`]).
    pub(crate) fn needs_touch(self, meta: Meta, now: u64) -> bool {
        self.idle
            .is_some_and(|idle| now.saturating_sub(meta.seen) > idle / TOUCH_FRACTION)
    }

    /// The rules that keep a session at least as long as either: each timeout the longer of the
    /// two (none being the longest).
    pub(crate) fn or_longer(self, other: Lifetime) -> Lifetime {
        let longer = |a: Option<u64>, b: Option<u64>| Some(a?.max(b?));
        Lifetime {
            idle: longer(self.idle, other.idle),
            absolute: longer(self.absolute, other.absolute),
        }
    }

    /// The longest a session written or touched now can live, if there is a bound.
    pub(crate) fn longest(self) -> Option<u64> {
        [self.idle, self.absolute].into_iter().flatten().max()
    }
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
    pub(crate) lifetime: Lifetime,
    /// The index's width as last read from the record; 0 until then.
    pub(crate) known_width: &'a AtomicU64,
    /// Whether this process has recorded its timeouts in the record.
    pub(crate) settings_recorded: &'a AtomicBool,
}

impl Index<'_> {
    pub(crate) fn now(&self) -> u64 {
        unix_secs(self.clock.now())
    }

    /// Sweeps the index (see [`Sessions::sweep`](super::Sessions::sweep)): walks its buckets from
    /// where the previous sweep stopped up to now, judging each entry with `judge`, and returns how
    /// many domains `judge` removed.
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

    fn remember(&self, record: &IndexRecord) {
        self.known_width
            .store(record.granularity, Ordering::Release);
    }

    /// The settings recorded in the index's record, or `None` when there is none (or it is not
    /// readable).
    pub(crate) fn stored_settings(&self) -> Result<Option<StoredSettings>> {
        Ok(match self.read_record()? {
            StoredRecord::Found(record, _) => Some(record.into()),
            StoredRecord::Missing | StoredRecord::Unreadable(_) => None,
        })
    }

    fn read_record(&self) -> Result<StoredRecord> {
        Ok(match self.archive.get(self.names.cursor, RECORD_KEY)? {
            None => StoredRecord::Missing,
            Some(raw) => match IndexRecord::decode(&raw) {
                Some(record) => StoredRecord::Found(record, raw),
                None => StoredRecord::Unreadable(raw),
            },
        })
    }

    /// The record to write where there is none: `width`, this `Sessions`' timeouts, and a sweep
    /// that starts from now, or from where an earlier version's cursor says (read in `width`).
    fn fresh_record(&self, width: u64, now: u64) -> Result<IndexRecord> {
        let legacy = self.archive.get(self.names.cursor, LEGACY_CURSOR_KEY)?;
        let start = legacy
            .and_then(|raw| std::str::from_utf8(&raw).ok()?.parse::<u64>().ok())
            .map_or(now, |bucket| {
                bucket
                    .saturating_mul(width)
                    .clamp(now.saturating_sub(INDEX_GRACE_SECS), now)
            });
        Ok(IndexRecord {
            granularity: width,
            idle: self.lifetime.idle,
            absolute: self.lifetime.absolute,
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
            let Some(record) = self.checked_record(width, now, record_settings)? else {
                continue;
            };
            let floor = bucket_of(record.claimed, record.granularity).saturating_sub(1);
            let stray: Vec<usize> = (0..entries.len())
                .filter(|&i| width != record.granularity || placed[i] < floor)
                .collect();
            if stray.is_empty() {
                return Ok(());
            }
            self.move_entries(entries, &stray, &mut placed, &record, now)?;
            width = record.granularity;
        }
        // Only reached while the record changed under every check; each check moved the entries
        // on, and they stay where the last one put them.
        Ok(())
    }

    /// The record an index write checks its entries against: the stored one, or a fresh one
    /// (in `width`, from `now`) written where there is none; with `record_settings`, this
    /// process's timeouts are recorded in it first. `None` when another process changed the
    /// record meanwhile, and the caller reads it again.
    fn checked_record(
        &self,
        width: u64,
        now: u64,
        record_settings: bool,
    ) -> Result<Option<IndexRecord>> {
        let (record, raw) = match self.read_record()? {
            StoredRecord::Found(record, raw) => (record, raw),
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
                    return Ok(None);
                }
                (record, raw)
            }
        };
        self.remember(&record);
        if record_settings && !self.settings_recorded.load(Ordering::Acquire) {
            // The recorded timeouts only grow: each the longer of what is recorded and this
            // owner's, so that no sweep by them ends a session that some application sharing
            // the archive still resumes (a tool with shorter timeouts records nothing shorter).
            let recorded = Lifetime {
                idle: record.idle,
                absolute: record.absolute,
            };
            let merged = recorded.or_longer(self.lifetime);
            let ours = IndexRecord {
                idle: merged.idle,
                absolute: merged.absolute,
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
                return Ok(None);
            }
            self.settings_recorded.store(true, Ordering::Release);
        }
        Ok(Some(record))
    }

    /// Moves the `stray` entries (indexes into `entries`, now in the buckets `placed`) to where
    /// a sweep by `record` visits them, and updates `placed`. The new entries are written
    /// first: a failure in between leaves an entry too many, never one too few.
    fn move_entries(
        &self,
        entries: &[(&str, u64)],
        stray: &[usize],
        placed: &mut [u64],
        record: &IndexRecord,
        now: u64,
    ) -> Result<()> {
        let moved: Vec<(&str, u64)> = stray.iter().map(|&i| entries[i]).collect();
        let to: Vec<u64> = moved
            .iter()
            .map(|&(_, at)| place(at, now, record.granularity, record.claimed))
            .collect();
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
    fn claim(&self, now: u64) -> Result<Option<IndexRecord>> {
        for _ in 0..RECORD_ATTEMPTS {
            let (record, raw) = match self.read_record()? {
                StoredRecord::Found(record, raw) => (record, raw),
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
            let claimed = IndexRecord {
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
    fn finish_sweep(&self, claimed: &IndexRecord, now: u64) -> Result<()> {
        for _ in 0..RECORD_ATTEMPTS {
            let StoredRecord::Found(record, raw) = self.read_record()? else {
                return Ok(());
            };
            if record.granularity != claimed.granularity
                || record.swept < claimed.swept
                || record.claimed < now
            {
                return Ok(());
            }
            let swept = IndexRecord {
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
            // A page's verdicts are one read (where the judge can), and its removals two batches,
            // so that a sweep costs a few calls per page rather than a few per session: the
            // expired sessions first, then their index entries, so that a sweep cut short leaves
            // entries to find again, never an expired session without one.
            let mut expired = Vec::new();
            let mut dropped = Vec::new();
            let mut unbound = Vec::new();
            let verdicts = judge.verdicts(&page.names, bucket, now, width)?;
            for (entry, verdict) in page.names.iter().zip(verdicts) {
                match verdict {
                    Verdict::Keep => continue,
                    Verdict::Expired { unbind } => {
                        expired.push(entry.as_str());
                        unbound.extend(unbind);
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
                    .map(|(domain, key)| (domain.as_str(), key.as_str())),
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

/// What the sweep does with an index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The session is live and expires in this bucket, which the next sweep visits again: the
    /// entry stays.
    Keep,
    /// The session expired: it goes, and so does the entry, and its binding's entry in the
    /// index of the user it was bound to (that index's domain, and the entry's key).
    Expired { unbind: Option<(String, String)> },
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
pub(crate) fn unix_time(secs: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX)))
}

pub(crate) fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::IndexRecord;

    #[test]
    fn records_round_trip_and_reject_what_is_not_one() {
        let record = IndexRecord {
            granularity: 10,
            idle: None,
            absolute: Some(604_800),
            swept: 1_700_000_000,
            claimed: 1_700_000_060,
        };
        assert_eq!(IndexRecord::decode(&record.encode()), Some(record));
        for bad in [
            &b"172000000"[..],
            b"",
            b"{}",
            br#"{"granularity":0,"idle":null,"absolute":null,"swept":0,"claimed":0}"#,
            br#"{"granularity":-1,"idle":null,"absolute":null,"swept":0,"claimed":0}"#,
        ] {
            assert_eq!(
                IndexRecord::decode(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
