//! What a [`RedbArchive`](super::RedbArchive)'s commits have done, counted as they happen and
//! read with [`RedbArchive::commit_stats`](super::RedbArchive::commit_stats).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What the write transactions of a [`RedbArchive`](super::RedbArchive) have done since it was
/// opened: how many commits, how many writes they held, and how long the one writer was busy.
///
/// Group commit is what makes concurrent durable writes fast (see
/// [`RedbArchive`](super::RedbArchive)), and these counters say how well it works for an
/// application: [`writes_per_commit`](Self::writes_per_commit) is how many writes share each
/// fsync, and [`busy`](Self::busy) over a span of wall-clock time is how much of it the file's
/// single writer spent in transactions. A writer busy nearly all the time, with many writes per
/// commit, means the disk sets the pace; one seldom busy means the writes are not coming.
///
/// Take two readings and subtract with [`since`](Self::since) to look at a span of time.
///
/// # Examples
///
/// ```
/// use session_archive::{Archive, RedbArchive};
///
/// let dir = tempfile::tempdir()?;
/// let archive = RedbArchive::open(dir.path().join("sessions.redb"))?;
/// let before = archive.commit_stats();
/// archive.set("0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2", "session.json", b"{}")?;
/// // A swap that fails changes nothing: its transaction is aborted, not committed.
/// archive.compare_and_swap("0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2", "session.json", None, Some(b"{}"))?;
/// let span = archive.commit_stats().since(&before);
/// assert_eq!((span.commits, span.writes), (1, 1));
/// assert!(span.busy > std::time::Duration::ZERO);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CommitStats {
    /// Write transactions committed: with [`Durability::Immediate`](super::Durability), one
    /// fsync each. A transaction that changed nothing (a failed swap, removing an absent key) is
    /// aborted instead and not counted.
    pub commits: u64,
    /// The write calls those commits answered (a [`set`](crate::Archive::set), an
    /// [`update`](crate::Archive::update), a whole [`set_many`](crate::Archive::set_many): each
    /// counts once).
    pub writes: u64,
    /// The time spent in write transactions, committed or aborted: from beginning each one to
    /// its commit (fsync included) or abort returning. There is one writer per file, so this
    /// grows by at most the wall-clock time that passes.
    pub busy: Duration,
}

impl CommitStats {
    /// How many writes shared a commit, on average; 0 before the first commit.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::archive::redb::CommitStats;
    /// use session_archive::{Archive, RedbArchive};
    ///
    /// assert_eq!(CommitStats::default().writes_per_commit(), 0.0);
    ///
    /// let dir = tempfile::tempdir()?;
    /// let archive = RedbArchive::open(dir.path().join("sessions.redb"))?;
    /// let before = archive.commit_stats();
    /// for key in ["a", "b", "c"] {
    ///     archive.set("0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2", key, b"{}")?;
    /// }
    /// // One writer, one write at a time: every write is a commit of its own.
    /// assert_eq!(archive.commit_stats().since(&before).writes_per_commit(), 1.0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[expect(clippy::cast_precision_loss, reason = "an average, for reading")]
    pub fn writes_per_commit(&self) -> f64 {
        if self.commits == 0 {
            0.0
        } else {
            self.writes as f64 / self.commits as f64
        }
    }

    /// What happened between `earlier`, a reading of the same archive, and this one.
    #[must_use]
    pub fn since(&self, earlier: &CommitStats) -> CommitStats {
        CommitStats {
            commits: self.commits.saturating_sub(earlier.commits),
            writes: self.writes.saturating_sub(earlier.writes),
            busy: self.busy.saturating_sub(earlier.busy),
        }
    }
}

/// The counters behind [`CommitStats`], updated by the writer as each transaction ends. Each is
/// read on its own (a reading may mix one transaction's count with the previous one's time),
/// which is all that statistics need.
#[derive(Debug, Default)]
pub(super) struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
    busy_nanos: AtomicU64,
}

impl Counters {
    /// Counts a write transaction that took `took`, and committed `writes` writes if it
    /// committed (`None` if it was aborted or failed).
    pub(super) fn record(&self, committed: Option<usize>, took: Duration) {
        if let Some(writes) = committed {
            self.commits.fetch_add(1, Ordering::Relaxed);
            self.writes
                .fetch_add(u64::try_from(writes).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(super) fn read(&self) -> CommitStats {
        CommitStats {
            commits: self.commits.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            busy: Duration::from_nanos(self.busy_nanos.load(Ordering::Relaxed)),
        }
    }
}
