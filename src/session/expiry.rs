//! Expiry: the timestamps kept beside each session, the expiry index, and the sweep.
//!
//! Each expiring session has an entry (key = its id, empty value) in the index domain
//! `expiry-<bucket>`, where `bucket` is its expiry time in unix seconds divided by the sweep
//! granularity. An entry is added whenever the expiry moves (a save, or a read that refreshes
//! `seen`), before the timestamps are written, so a failed write leaves at worst a spurious
//! entry, never a stored expiry without one. The old entry is left behind and dropped by the
//! sweep, which re-checks every candidate against its timestamps. The domain `sweep-cursor` holds the first bucket the next
//! sweep must visit; it is created before the first index entry, so a missing cursor means an
//! empty index.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::id::SessionId;
use super::{Inner, META_KEY, Sessions, decode};
use crate::archive::{Archive, DEFAULT_PAGE_SIZE};
use crate::error::{Error, Result};

/// `last seen` is rewritten only once it is older than `idle timeout / TOUCH_FRACTION`, so that
/// reading a session does not write on every request.
const TOUCH_FRACTION: u64 = 8;

const INDEX_PREFIX: &str = "expiry-";
const CURSOR_DOMAIN: &str = "sweep-cursor";
/// How long an index bucket outlives its last session on backends with native expiry, so that
/// an app that never sweeps does not grow the index forever, and one that sweeps at least this
/// often still sees every entry.
const INDEX_GRACE_SECS: u64 = 7 * 24 * 60 * 60;
const CURSOR_KEY: &str = "bucket";

/// The timestamps kept under [`META_KEY`], in unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Meta {
    pub(super) created: u64,
    pub(super) seen: u64,
}

impl Sessions {
    /// Removes every session that has expired, and returns how many it removed.
    ///
    /// The sweep walks the expiry index from where the previous sweep stopped up to now, one
    /// bucket per [granularity](crate::SessionsBuilder::sweep_granularity). For each indexed id it reads
    /// only the session's timestamps, never its state, and removes the session if it has really
    /// expired; index entries left behind when a session was used again are dropped. Its cost is
    /// the number of expired (and recently re-indexed) sessions plus the number of buckets, and
    /// does not grow with the number of live sessions. Removals go a listing page at a time, as
    /// one [`remove_domains`](Archive::remove_domains) and one
    /// [`remove_many`](Archive::remove_many) batch. Domains left holding only timestamps (a
    /// write that raced a destroy, or a create cut short before its state) are removed when they
    /// expire. Sessions stored while no expiry was configured are indexed when next used. Sweeps
    /// may run concurrently, from any number of processes sharing the archive.
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
        let inner = &self.inner;
        let archive = &inner.archive;
        let Some(cursor) = archive.get(CURSOR_DOMAIN, CURSOR_KEY)? else {
            // The cursor is written before the first index entry, so there is nothing to sweep.
            return Ok(0);
        };
        let now = inner.now();
        let current = inner.bucket(now);
        // An unreadable cursor can only come from outside this crate; restarting from the
        // current bucket is the one choice that keeps the walk bounded.
        let first = std::str::from_utf8(&cursor)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .unwrap_or(current);
        let mut removed = 0;
        // Starting one bucket early catches an entry written, by a process whose clock lags by
        // less than a bucket, into the bucket the previous sweep had just closed.
        for bucket in first.saturating_sub(1)..=current {
            let domain = bucket_domain(bucket);
            let mut cursor = None;
            loop {
                let page = archive.list_keys(&domain, cursor.as_deref(), DEFAULT_PAGE_SIZE)?;
                // A page's removals are two batches, so that a sweep costs a few commits per
                // page rather than two per session: the expired sessions first, then their index
                // entries, so that a sweep cut short leaves entries to find again, never an
                // expired session without one.
                let mut expired = Vec::new();
                let mut dropped = Vec::new();
                for entry in &page.names {
                    let verdict = match SessionId::parse(entry) {
                        Some(id) => inner.sweep_verdict(&id, bucket, now)?,
                        None => Verdict::Drop,
                    };
                    if verdict == Verdict::Expired {
                        expired.push(entry.as_str());
                    }
                    if verdict != Verdict::Keep {
                        dropped.push((domain.as_str(), entry.as_str()));
                    }
                }
                if !expired.is_empty() {
                    removed += archive.remove_domains(&expired)?;
                }
                if !dropped.is_empty() {
                    archive.remove_many(&dropped)?;
                }
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        // The current bucket may still gain entries that expire later in it, so the next sweep
        // starts there again.
        if current != first {
            archive.set(CURSOR_DOMAIN, CURSOR_KEY, current.to_string().as_bytes())?;
        }
        Ok(removed)
    }
}

impl Inner {
    pub(super) fn now(&self) -> u64 {
        unix_secs(self.config.clock.now())
    }

    pub(super) fn bucket(&self, secs: u64) -> u64 {
        secs / self.config.sweep_granularity
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

    /// Adds the index entry for a session expiring at `meta`'s expiry, creating the sweep cursor
    /// first if need be. Called BEFORE the write that moves the expiry there, so that no stored
    /// expiry is ever without its entry: if the write then fails, or never happens, the entry is
    /// spurious, which is harmless since the sweep re-checks every candidate against its
    /// timestamps.
    pub(super) fn index(&self, id: &SessionId, meta: Meta) -> Result<()> {
        let Some(at) = self.expires_at(meta) else {
            return Ok(());
        };
        if !self.cursor_ready.load(Ordering::Acquire) {
            let start = self.bucket(self.now()).to_string();
            self.archive.compare_and_swap(
                CURSOR_DOMAIN,
                CURSOR_KEY,
                None,
                Some(start.as_bytes()),
            )?;
            self.cursor_ready.store(true, Ordering::Release);
        }
        let bucket = self.bucket(at);
        let domain = bucket_domain(bucket);
        self.archive.set(&domain, id.as_str(), b"")?;
        // On backends that expire domains themselves (Redis), the index must not outlive the
        // sessions in it when the app never sweeps: the bucket expires a grace period after its
        // last session does. A sweep within that grace still sees every entry.
        let bucket_end = bucket
            .saturating_add(1)
            .saturating_mul(self.config.sweep_granularity);
        self.archive.expire_domain(
            &domain,
            unix_time(bucket_end.saturating_add(INDEX_GRACE_SECS)),
        )?;
        Ok(())
    }

    /// Asks backends that expire domains themselves to drop the session's domain when it
    /// expires. Called AFTER every write to the session's domain, since a write may clear it.
    pub(super) fn expire_hint(&self, id: &SessionId, meta: Meta) -> Result<()> {
        if let Some(at) = self.expires_at(meta) {
            self.archive.expire_domain(id.as_str(), unix_time(at))?;
        }
        Ok(())
    }

    /// Judges one index entry of `bucket` by the session's timestamps.
    fn sweep_verdict(&self, id: &SessionId, bucket: u64, now: u64) -> Result<Verdict> {
        let meta = match self.read_meta(id) {
            Ok(Some((meta, _))) => meta,
            Ok(None) | Err(Error::CorruptSession { .. }) => return Ok(Verdict::Drop),
            Err(err) => return Err(err),
        };
        Ok(if self.is_expired(meta, now) {
            Verdict::Expired
        } else if self
            .expires_at(meta)
            .is_some_and(|at| self.bucket(at) == bucket)
        {
            Verdict::Keep
        } else {
            Verdict::Drop
        })
    }
}

/// What the sweep does with an index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The session is live and still expires in this bucket: the entry stays.
    Keep,
    /// The session expired: it goes, and so does the entry.
    Expired,
    /// The session is gone, unreadable, or expires in another bucket now: the entry goes.
    Drop,
}

/// A time in unix seconds as a `SystemTime`, saturating far in the future.
fn unix_time(secs: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX)))
}

fn bucket_domain(bucket: u64) -> String {
    format!("{INDEX_PREFIX}{bucket}")
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}
