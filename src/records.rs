//! Expiring records over an archive, the storage of the two framework stores
//! ([`tower_sessions::ArchiveStore`](crate::tower_sessions::ArchiveStore) and
//! [`actix_session::ArchiveStore`](crate::actix_session::ArchiveStore)): each record is one key
//! of a domain of its own, carries its own expiry, and is indexed in an expiry index of its
//! kind, so that a sweep costs O(expired records).
//!
//! What a record's bytes are is the store's; this module needs only their expiry
//! ([`Kind::expiry`]). The protocol (a create claims a fresh id from absent and never
//! overwrites; a save replaces only a stored, unexpired record and never resurrects one; the
//! index entry is written before what it covers; the sweep removes only the bytes it judged) is
//! described on each function, and is the same for both stores.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::archive::{Archive, Change, DEFAULT_PAGE_SIZE, Update};
use crate::error::Result;
use crate::session::clock::{Clock, SystemClock};
use crate::session::expiry::{DEFAULT_SWEEP_GRANULARITY, Index, Judge, Lifetime, Verdict, place};
use crate::session::layout::IndexNames;

/// How many ids a create draws before giving up. Ids have over 128 random bits, so a second
/// draw practically never happens; the bound only keeps a backend whose compare-and-swap never
/// succeeds from looping forever.
pub(crate) const CREATE_ATTEMPTS: usize = 4;
/// How many times a save (and the expiry hint) reads the record again after another writer
/// changed it between the read and the compare-and-swap. Each failed swap means another write
/// succeeded, so this only bounds the work against a misbehaving backend.
pub(crate) const SAVE_ATTEMPTS: usize = 16;

/// A kind of record: where its records and its index live, and how to read a record's expiry.
pub(crate) struct Kind {
    /// The prefix of a record's domain; the id follows.
    pub(crate) prefix: &'static str,
    /// The key holding a record in its domain.
    pub(crate) key: &'static str,
    /// The kind's expiry index.
    pub(crate) index: IndexNames,
    /// The expiry of stored bytes, in unix nanoseconds, or `None` when they are not a record.
    /// Exactly the bytes the store decodes have one, so that nothing judges a record that the
    /// store reports as undecodable.
    pub(crate) expiry: fn(&[u8]) -> Option<i128>,
}

/// The records of one kind in one archive.
pub(crate) struct Records {
    pub(crate) archive: Arc<dyn Archive>,
    pub(crate) clock: Arc<dyn Clock>,
    /// The index's bucket width for a new index, in seconds.
    pub(crate) granularity: u64,
    /// The index's width as last read from its record; 0 until then.
    index_width: AtomicU64,
    /// Unused by these stores (they record no timeouts), but part of every index's state.
    settings_recorded: AtomicBool,
    kind: &'static Kind,
}

impl Records {
    fn new(
        archive: Arc<dyn Archive>,
        clock: Arc<dyn Clock>,
        granularity: u64,
        kind: &'static Kind,
    ) -> Records {
        Records {
            archive,
            clock,
            granularity,
            index_width: AtomicU64::new(0),
            settings_recorded: AtomicBool::new(false),
            kind,
        }
    }

    /// The records of `kind` in `archive`, on the system clock, with the default granularity:
    /// what a store's `new` holds.
    pub(crate) fn shared(archive: Arc<dyn Archive>, kind: &'static Kind) -> Arc<Records> {
        Arc::new(Records::new(
            archive,
            Arc::new(SystemClock),
            DEFAULT_SWEEP_GRANULARITY.as_secs(),
            kind,
        ))
    }

    /// The same records judged by `clock`: a store's `with_clock`.
    pub(crate) fn with_clock(&self, clock: Arc<dyn Clock>) -> Arc<Records> {
        Arc::new(self.rebuilt(clock, self.granularity))
    }

    /// The same records with index buckets `granularity` wide (whole seconds, at least one): a
    /// store's `with_sweep_granularity`.
    pub(crate) fn with_granularity(&self, granularity: Duration) -> Arc<Records> {
        Arc::new(self.rebuilt(Arc::clone(&self.clock), granularity.as_secs().max(1)))
    }

    /// The same records seen with another clock and granularity, keeping the index width read.
    fn rebuilt(&self, clock: Arc<dyn Clock>, granularity: u64) -> Records {
        let mut records = Records::new(Arc::clone(&self.archive), clock, granularity, self.kind);
        records.index_width = AtomicU64::new(self.index_width.load(Ordering::Acquire));
        records
    }

    /// A store's `Debug`: its settings, never the archive's contents.
    pub(crate) fn debug(&self, store: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(store)
            .field("sweep_granularity", &self.granularity)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }

    fn index(&self) -> Index<'_> {
        Index {
            archive: &*self.archive,
            names: self.kind.index,
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
    pub(crate) fn now_nanos(&self) -> i128 {
        unix_nanos(self.clock.now())
    }

    /// The domain of the record `id`.
    pub(crate) fn domain(&self, id: &str) -> String {
        format!("{}{id}", self.kind.prefix)
    }

    /// The stored bytes of the record `id`, whatever their expiry.
    pub(crate) fn get(&self, id: &str) -> Result<Option<Vec<u8>>> {
        self.archive.get(&self.domain(id), self.kind.key)
    }

    /// Removes the record `id`; a removal is final, as no create claims an id twice.
    pub(crate) fn delete(&self, id: &str) -> Result<()> {
        self.archive.remove_domain(&self.domain(id)).map(|_| ())
    }

    /// Stores a new record, claiming the first of `ids` that is free; returns the id it
    /// claimed, or `None` when [`CREATE_ATTEMPTS`] were all taken.
    ///
    /// The index entry goes first, so that no stored expiry is ever without one; after a failure
    /// or a collision it is spurious, and the sweep drops it. A sweep may find the entry before
    /// the record is claimed and remove it as stale; so after the claim the create makes sure
    /// the entry is still there (see [`ensure_indexed`](Self::ensure_indexed)).
    pub(crate) fn create<I: AsRef<str>>(
        &self,
        ids: impl IntoIterator<Item = I>,
        bytes: &[u8],
        expiry: i128,
    ) -> Result<Option<I>> {
        let at = index_secs(expiry);
        for id in ids.into_iter().take(CREATE_ATTEMPTS) {
            let domain = self.domain(id.as_ref());
            self.index().index_all(&[(domain.as_str(), at)], false)?;
            let key = self.kind.key;
            if self
                .archive
                .compare_and_swap(&domain, key, None, Some(bytes))?
            {
                if let Err(err) = self.ensure_indexed(&domain, at) {
                    // The id never left this call, so nobody else can have reached the record;
                    // removing it keeps a record that may be unindexed from staying forever.
                    let _ = self
                        .archive
                        .compare_and_swap(&domain, key, Some(bytes), None);
                    return Err(err);
                }
                self.expire_hint(&domain, bytes.to_vec(), expiry);
                return Ok(Some(id));
            }
        }
        Ok(None)
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
    fn ensure_indexed(&self, domain: &str, at: u64) -> Result<()> {
        let index = self.index();
        let width = match self.index_width.load(Ordering::Acquire) {
            0 => self.granularity,
            width => width,
        };
        let bucket = self.kind.index.bucket(place(at, index.now(), width, 0));
        if !self.archive.has(&bucket, domain)? {
            index.index_all(&[(domain, at)], false)?;
        }
        Ok(())
    }

    /// Replaces the stored, unexpired record `id` with what `make` makes of it (expiring at
    /// `expiry`); does nothing when there is none (never resurrecting a deleted or expired
    /// record), or when `make` answers `None` or the bytes already stored. Returns `false` when
    /// the record kept changing for [`SAVE_ATTEMPTS`] reads.
    ///
    /// One [`Archive::update`] is the linearization point: its change stores the record unless
    /// it is gone or expired, so concurrent saves of one record each land (the last one wins)
    /// instead of failing their compare-and-swap in turn; on redb they share one commit. The
    /// index entry covering the new expiry is written before (see [`covers`]); should the
    /// stored record have changed meanwhile so that no entry covers it any more, the change
    /// writes nothing and the save starts over.
    pub(crate) fn save(&self, id: &str, make: &Make, expiry: i128) -> Result<bool> {
        let domain = self.domain(id);
        let at = index_secs(expiry);
        let width = self.index_width.load(Ordering::Acquire);
        let expired = self.expired_by();
        for _ in 0..SAVE_ATTEMPTS {
            let Some(current) = self.archive.get(&domain, self.kind.key)? else {
                return Ok(true);
            };
            let stored = (self.kind.expiry)(&current);
            if expired(stored) || make(&current).is_none_or(|new| new == current) {
                return Ok(true);
            }
            // A record whose expiry moves earlier gets an entry there first, as in `create`.
            let indexed = !covers(width, stored, at);
            if indexed {
                self.index().index_all(&[(domain.as_str(), at)], false)?;
            }
            let moved = Arc::new(AtomicBool::new(false));
            let covered = move |stored| indexed || covers(width, stored, at);
            let change = self.save_change(Arc::clone(make), covered, Arc::clone(&moved));
            let stored = self.archive.update(&domain, self.kind.key, change)?;
            if moved.load(Ordering::Relaxed) {
                continue;
            }
            if let Some(stored) = stored {
                let expiry = (self.kind.expiry)(&stored);
                if let Some(expiry) = expiry {
                    self.expire_hint(&domain, stored, expiry);
                }
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Whether a record stored with this expiry has expired, by the clock at the moment of
    /// asking: a save's change runs later than the save began, inside the commit on redb.
    fn expired_by(&self) -> impl Fn(Option<i128>) -> bool + Send + 'static {
        let clock = Arc::clone(&self.clock);
        move |stored| stored.is_some_and(|stored| stored <= unix_nanos(clock.now()))
    }

    /// The change of a save: stores what `make` makes of the stored record, unless that is
    /// gone or expired (never resurrecting), or `make` keeps it, or its expiry is no longer
    /// `covered` by an index entry, which it reports in `moved` for the save to start over.
    fn save_change(
        &self,
        make: Make,
        covered: impl Fn(Option<i128>) -> bool + Send + 'static,
        moved: Arc<AtomicBool>,
    ) -> Change {
        let (expired, expiry) = (self.expired_by(), self.kind.expiry);
        Box::new(move |current| {
            // The change may run more than once: the flag tells of the run that counted.
            moved.store(false, Ordering::Relaxed);
            let Some(current) = current else {
                return Ok(Update::Keep);
            };
            let stored = expiry(current);
            if expired(stored) {
                return Ok(Update::Keep);
            }
            let Some(new) = make(current).filter(|new| new != current) else {
                return Ok(Update::Keep);
            };
            if !covered(stored) {
                moved.store(true, Ordering::Relaxed);
                return Ok(Update::Keep);
            }
            Ok(Update::Set(new))
        })
    }

    /// Asks a backend with native expiry (Redis) to drop the record's domain at its expiry.
    /// Called after every write of a record, since a write may clear it. Two saves may hint in the
    /// other order than they wrote, so on such a backend the record is read back, and hinted
    /// again while another write has replaced the one hinted for.
    ///
    /// The write it follows has happened, so a failure here does not fail the store call: the
    /// record's index entry, written before it, still has the sweep remove it.
    fn expire_hint(&self, domain: &str, mut bytes: Vec<u8>, mut expiry: i128) {
        for _ in 0..SAVE_ATTEMPTS {
            match self.archive.expire_domain(domain, system_time(expiry)) {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
            let Ok(Some(current)) = self.archive.get(domain, self.kind.key) else {
                return;
            };
            if current == bytes {
                return;
            }
            let Some(stored) = (self.kind.expiry)(&current) else {
                return;
            };
            (bytes, expiry) = (current, stored);
        }
    }

    /// Removes the expired records: walks the part of the index come due since the previous
    /// run (in any process sharing the archive); returns how many it removed.
    pub(crate) fn sweep(&self) -> Result<usize> {
        Sweep {
            records: self,
            vanished: RefCell::new(Vec::new()),
            removed: Cell::new(0),
        }
        .run()
    }
}

/// What a save makes of the stored record's bytes: the new bytes, or `None` to keep them.
pub(crate) type Make = Arc<dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync>;

/// A run of the sweep: judges the index entries (record domains) by the records' expiry.
///
/// An entry whose record is missing is usually stale (the record was deleted), but it may also
/// be the entry of a `create` that has not claimed its record yet. Removing it then would leave
/// that record unindexed, and never deleted. So such an entry is not dropped with the rest of its
/// page: the sweep keeps it in `vanished`, removes it itself, and then reads the record again,
/// indexing it if it appeared meanwhile (see [`forget_vanished`](Self::forget_vanished) and
/// [`Records::ensure_indexed`], the create's half).
struct Sweep<'a> {
    records: &'a Records,
    /// Entries found without a record, as (bucket, entry), not yet removed.
    vanished: RefCell<Vec<(u64, String)>>,
    /// How many expired records this run removed.
    removed: Cell<usize>,
}

impl Sweep<'_> {
    /// Runs the sweep, then removes the entries found without a record; returns how many
    /// expired records it removed.
    fn run(&self) -> Result<usize> {
        self.records.index().sweep(self)?;
        self.forget_vanished()?;
        Ok(self.removed.get())
    }

    /// Notes an entry of `bucket` found without a record. Entries are removed a bucket, or a
    /// listing page, at a time, so that a sweep costs a few commits per page, as the index's own
    /// removals do, and so that an error or a crash leaves unremoved at most the entries of the
    /// bucket at hand: entries too many (spurious, with no record), never a record without one.
    fn vanished(&self, bucket: u64, entry: &str) -> Result<()> {
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
    fn forget_vanished(&self) -> Result<()> {
        let vanished = std::mem::take(&mut *self.vanished.borrow_mut());
        if vanished.is_empty() {
            return Ok(());
        }
        let kind = self.records.kind;
        let buckets: Vec<(String, &str)> = vanished
            .iter()
            .map(|(bucket, entry)| (kind.index.bucket(*bucket), entry.as_str()))
            .collect();
        let removals: Vec<(&str, &str)> = buckets.iter().map(|(b, e)| (b.as_str(), *e)).collect();
        let archive = &*self.records.archive;
        archive.remove_many(&removals)?;
        let mut appeared = Vec::new();
        for (_, entry) in &vanished {
            let expiry = archive
                .get(entry, kind.key)?
                .as_deref()
                .and_then(kind.expiry);
            if let Some(expiry) = expiry {
                appeared.push((entry.as_str(), index_secs(expiry)));
            }
        }
        if !appeared.is_empty() {
            self.records.index().index_all(&appeared, false)?;
        }
        Ok(())
    }
}

impl Judge for Sweep<'_> {
    fn verdict(&self, entry: &str, bucket: u64, now: u64, width: u64) -> Result<Verdict> {
        let kind = self.records.kind;
        if !entry.starts_with(kind.prefix) {
            return Ok(Verdict::Drop);
        }
        let archive = &*self.records.archive;
        let mut at = 0;
        for _ in 0..SAVE_ATTEMPTS {
            let Some(raw) = archive.get(entry, kind.key)? else {
                // Not dropped with the page: see `forget_vanished`.
                self.vanished(bucket, entry)?;
                return Ok(Verdict::Keep);
            };
            // Bytes that are not a record are left in place, as the store's load reports them.
            let Some(expiry) = (kind.expiry)(&raw) else {
                return Ok(Verdict::Drop);
            };
            at = index_secs(expiry);
            if expiry > self.records.now_nanos() {
                return Ok(if place(at, now, width, 0) == bucket {
                    Verdict::Keep
                } else {
                    Verdict::Later { at }
                });
            }
            // Removing only the bytes judged keeps a record that a save replaced meanwhile; that
            // record is then judged again, here. The entry goes with the page, after the record:
            // no create can claim this id again, since ids are drawn fresh.
            if archive.compare_and_swap(entry, kind.key, Some(&raw), None)? {
                self.removed.set(self.removed.get() + 1);
                return Ok(Verdict::Drop);
            }
        }
        // The record keeps changing under the sweep: it is live, and its entry moves to where
        // the sweep comes again.
        Ok(Verdict::Later { at })
    }

    fn remove_expired(&self, _expired: &[&str]) -> Result<usize> {
        // `verdict` removes each expired record itself, by a compare-and-swap, and never answers
        // `Expired`: the archive has no batch of compare-and-swaps.
        Ok(0)
    }
}

/// Whether the index entry of a record stored with expiry `stored` (unix nanoseconds) also
/// covers the expiry `at` (unix seconds), with index buckets `width` seconds wide: `at` falls in
/// the same bucket or a later one. The sweep reaches that entry first, judges the record as it
/// is then, and moves the entry on (`Verdict::Later`), once, however many saves moved the
/// expiry.
fn covers(width: u64, stored: Option<i128>, at: u64) -> bool {
    width > 0 && stored.is_some_and(|stored| at / width >= index_secs(stored) / width)
}

/// The time an index entry is filed under: the expiry in whole unix seconds (0 before 1970).
fn index_secs(expiry: i128) -> u64 {
    u64::try_from(expiry.div_euclid(1_000_000_000)).unwrap_or(0)
}

/// A time in nanoseconds since the epoch, saturating.
pub(crate) fn unix_nanos(time: SystemTime) -> i128 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => i128::try_from(since.as_nanos()).unwrap_or(i128::MAX),
        Err(before) => i128::try_from(before.duration().as_nanos()).map_or(i128::MIN, |n| -n),
    }
}

/// An expiry as a `SystemTime`, saturating at the ends of what one can hold.
fn system_time(nanos: i128) -> SystemTime {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert_both_ways_and_saturate() {
        let nanos = 1_767_225_600_123_456_789_i128;
        assert_eq!(
            system_time(nanos),
            UNIX_EPOCH + Duration::new(1_767_225_600, 123_456_789)
        );
        assert_eq!(unix_nanos(system_time(nanos)), nanos);
        assert_eq!(
            unix_nanos(UNIX_EPOCH - Duration::from_secs(1)),
            -1_000_000_000
        );
        assert_eq!(index_secs(nanos), 1_767_225_600);
        assert_eq!(index_secs(-1), 0);
        assert!(covers(60, Some(nanos), 1_767_225_600 + 60));
        assert!(!covers(60, Some(nanos), 1_767_225_600 - 60));
        assert!(!covers(0, Some(nanos), 1_767_225_600));
    }
}
