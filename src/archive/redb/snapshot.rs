//! The shared read snapshot: reads share one read transaction between commits, and stay
//! linearizable.
//!
//! Beginning a read transaction and opening the table cost more than a point lookup, so reads
//! share one snapshot between commits. A commit counter, the generation, keeps this correct: it
//! is odd while a transaction commits and even otherwise (each commit adds one just before and
//! one just after, see [`CommitWindow`]). Commits never overlap (redb has one writer), so the
//! table changes only while it is odd, and each even value names one state of the table. The
//! invariant: **a shared snapshot tagged `g` holds the table as it is while the generation is
//! `g`**, which is even.
//!
//! - A reader stores its snapshot only if it loaded the same even `g` before beginning its
//!   transaction and again after, under the slot's lock. Then no commit ran in between: a commit
//!   makes the generation odd before redb publishes its state, under a lock that `begin_read`
//!   takes after it, so a transaction that saw the commit sees the changed generation on the
//!   check.
//! - A reader uses the shared snapshot only if its tag equals the generation it loaded, so it
//!   returns the table as it was at that load.
//! - A reader that loads an odd generation neither uses nor stores a shared snapshot: it returns
//!   what its own transaction sees.
//!
//! So no read returns less than an earlier read or acknowledged write did: whoever saw commit
//! `C` did so after `C` made the generation odd, so every later read loads at least that, and can
//! share only a snapshot tagged after `C` ended. Ending a commit clears the slot, so a snapshot
//! never pins old pages while writes go on; while a commit is in flight, every read begins its
//! own transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ::redb::ReadableDatabase;
use parking_lot::RwLock;

use super::layout::{ENTRIES, ReadTable};

/// The read snapshot that reads share, and the generation that says when it may be shared.
///
/// It must be dropped before the database it reads: declare it first in the struct that holds
/// both.
#[derive(Default)]
pub(super) struct Snapshots {
    /// The snapshot shared while no commit has happened since it was taken.
    slot: RwLock<Option<Arc<Snapshot>>>,
    /// Odd while a transaction commits, even otherwise.
    generation: AtomicU64,
}

/// A read transaction with the table open, shared by reads until the next commit.
struct Snapshot {
    /// The even value the generation had both before the transaction began and after: the
    /// snapshot holds exactly the commits counted up to it.
    generation: u64,
    table: ReadTable,
}

impl Snapshots {
    /// Runs `f` on the table in a read transaction of `db`, a snapshot that never waits for
    /// writers, shared with other reads while no commit intervenes.
    pub(super) fn read<R>(
        &self,
        db: &::redb::Database,
        f: impl FnOnce(&ReadTable) -> Result<R, ::redb::Error>,
    ) -> Result<R, ::redb::Error> {
        let generation = self.generation.load(Ordering::Acquire);
        let stable = generation.is_multiple_of(2);
        let snapshot = match stable.then(|| self.shared(generation)).flatten() {
            Some(snapshot) => snapshot,
            None => self.fresh(db, generation, stable)?,
        };
        f(&snapshot.table)
    }

    /// The shared snapshot, if it is tagged `generation`.
    fn shared(&self, generation: u64) -> Option<Arc<Snapshot>> {
        self.slot
            .read()
            .as_ref()
            .filter(|snapshot| snapshot.generation == generation)
            .cloned()
    }

    /// Begins a read transaction, tagged `generation`, and shares it if `stable` and no commit
    /// has begun since the generation was loaded.
    fn fresh(
        &self,
        db: &::redb::Database,
        generation: u64,
        stable: bool,
    ) -> Result<Arc<Snapshot>, ::redb::Error> {
        let txn = db.begin_read()?;
        let fresh = Arc::new(Snapshot {
            generation,
            table: txn.open_table(ENTRIES)?,
        });
        if stable {
            let mut slot = self.slot.write();
            if self.generation.load(Ordering::Acquire) == generation {
                *slot = Some(Arc::clone(&fresh));
            }
        }
        Ok(fresh)
    }

    /// Opens the window in which a transaction commits; the commit must happen while it is
    /// open. Counted even when the commit fails or panics, as it may have changed the file.
    pub(super) fn commit_window(&self) -> CommitWindow<'_> {
        self.generation.fetch_add(1, Ordering::AcqRel);
        CommitWindow { snapshots: self }
    }

    /// How many transactions have committed (or tried to) since the archive was opened.
    #[cfg(test)]
    pub(super) fn commits(&self) -> u64 {
        self.generation.load(Ordering::Acquire) / 2
    }

    /// Whether no commit is in flight.
    #[cfg(test)]
    pub(super) fn is_stable(&self) -> bool {
        self.generation.load(Ordering::Acquire).is_multiple_of(2)
    }
}

/// The span in which a transaction commits: the generation is odd from
/// [`Snapshots::commit_window`] until the window is dropped, which makes it even again (also when
/// the commit unwinds) and clears the shared snapshot.
pub(super) struct CommitWindow<'a> {
    snapshots: &'a Snapshots,
}

impl Drop for CommitWindow<'_> {
    fn drop(&mut self) {
        // Under the slot's lock, so that what a reader stores after this is tagged with the new
        // generation, and what it stored before is cleared.
        let mut slot = self.snapshots.slot.write();
        self.snapshots.generation.fetch_add(1, Ordering::AcqRel);
        *slot = None;
    }
}
