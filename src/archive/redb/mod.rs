//! [`RedbArchive`]: every domain in one [redb](https://www.redb.org) file, the embedded default.
//!
//! Open it with [`RedbArchive::open`], or with [`RedbArchive::builder`] to set the
//! [`Durability`], the cache size (default [`DEFAULT_CACHE_SIZE`]) and the integrity check. What
//! the backend guarantees is on [`RedbArchive`].
//!
//! Inside, for whoever changes this backend, each part has a private module of its own:
//! `layout` (the file's one table, and the key range of a domain), `ops` (what each write does
//! inside a write transaction), `snapshot` (the read snapshot shared between commits, and why
//! sharing it stays linearizable), `group_commit` (the leader/follower engine that commits
//! concurrent writes together, generic over what a commit is) and `committer` (waiting for a
//! commit as a task, without a thread); `stats` counts what the commits did, for
//! [`RedbArchive::commit_stats`].

use std::cell::RefCell;
use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::archive::{
    Archive, Blocking, Change, Page, Swap, SwapGroup, UpdateFuture, check_groups, check_keys,
    check_swaps,
};
use crate::error::{Error, Result};
use crate::name::{validate_domain, validate_entry};

use self::committer::{Committer, Pending};
use self::group_commit::{Batch, Failure, GroupCommit, MAX_GATHER};
use self::layout::{ENTRIES, ReadTable, any_in, domain_end};
use self::ops::{Op, Reply};
use self::snapshot::Snapshots;
pub use self::stats::CommitStats;
use self::stats::Counters;

mod committer;
mod group_commit;
mod layout;
mod ops;
mod snapshot;
mod stats;
#[cfg(test)]
mod tests;

/// The cache size used unless [`RedbArchiveBuilder::cache_size`] says otherwise: 64 MiB.
///
/// redb's own default is 1 GiB, sized for a database that is the application. A session store is
/// a side table of a web server: its working set is the sessions active right now, a few KiB
/// each, and 64 MiB (16,384 pages of 4 KiB) keeps the tree's inner pages and tens of thousands of
/// live sessions in memory without claiming a gigabyte per process.
///
/// # Examples
///
/// A quarter of the default, for a small app:
///
/// ```
/// use session_archive::archive::redb::{DEFAULT_CACHE_SIZE, RedbArchive};
///
/// let dir = tempfile::tempdir()?;
/// let archive = RedbArchive::builder()
///     .cache_size(DEFAULT_CACHE_SIZE / 4)
///     .open(dir.path().join("sessions.redb"))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const DEFAULT_CACHE_SIZE: usize = 64 << 20;

/// How a [`RedbArchive`] commits its writes; see [`RedbArchiveBuilder::durability`].
///
/// # Examples
///
/// ```
/// use session_archive::archive::redb::{Durability, RedbArchive};
///
/// let dir = tempfile::tempdir()?;
/// let archive = RedbArchive::builder()
///     .durability(Durability::None)
///     .open(dir.path().join("scratch.redb"))?;
/// assert_eq!(archive.durability(), Durability::None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Durability {
    /// Every write is on disk (one fsync) before it returns. The default.
    #[default]
    Immediate,
    /// Writes are not synced: they become durable at the next [`Immediate`](Durability::Immediate)
    /// commit or when the archive is dropped. A crash loses the unsynced writes (never more, and
    /// the file stays consistent). Opt in only for data you can afford to lose, such as tests or
    /// a cache.
    None,
}

impl Durability {
    fn to_redb(self) -> ::redb::Durability {
        match self {
            Durability::Immediate => ::redb::Durability::Immediate,
            Durability::None => ::redb::Durability::None,
        }
    }
}

/// Options for opening a [`RedbArchive`]; made by [`RedbArchive::builder`].
///
/// | option | default | why |
/// |---|---|---|
/// | [`cache_size`](Self::cache_size) | [`DEFAULT_CACHE_SIZE`] (64 MiB) | a session store is a side table, not the application's database |
/// | [`durability`](Self::durability) | [`Durability::Immediate`] | an acknowledged write survives a crash |
/// | [`check_integrity_on_open`](Self::check_integrity_on_open) | `true` | a damaged file gives an error, never a panic |
/// | [`quick_repair`](Self::quick_repair) | `false` | the integrity check walks the file at every open anyway |
///
/// # Examples
///
/// ```
/// use session_archive::Archive;
/// use session_archive::archive::redb::{Durability, RedbArchive};
///
/// let dir = tempfile::tempdir()?;
/// let archive = RedbArchive::builder()
///     .cache_size(16 << 20)
///     .durability(Durability::Immediate)
///     .open(dir.path().join("sessions.redb"))?;
/// archive.set("d", "k", b"v")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct RedbArchiveBuilder {
    cache_size: usize,
    durability: Durability,
    check_integrity_on_open: bool,
    quick_repair: bool,
}

impl Default for RedbArchiveBuilder {
    fn default() -> Self {
        RedbArchiveBuilder {
            cache_size: DEFAULT_CACHE_SIZE,
            durability: Durability::Immediate,
            check_integrity_on_open: true,
            quick_repair: false,
        }
    }
}

impl RedbArchiveBuilder {
    /// The old spelling of [`DEFAULT_CACHE_SIZE`](self::DEFAULT_CACHE_SIZE).
    #[doc(hidden)]
    pub const DEFAULT_CACHE_SIZE: usize = DEFAULT_CACHE_SIZE;

    /// Sets how many bytes of the file redb may cache in memory. Defaults to
    /// [`DEFAULT_CACHE_SIZE`] (64 MiB).
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::RedbArchive;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let archive = RedbArchive::builder().cache_size(1 << 20).open(dir.path().join("a.redb"))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn cache_size(mut self, bytes: usize) -> Self {
        self.cache_size = bytes;
        self
    }

    /// Sets how writes are committed. Defaults to [`Durability::Immediate`]: one fsync per
    /// write, so an acknowledged write survives a crash. [`Durability::None`] is an opt-in for
    /// data that may be lost.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::Archive;
    /// use session_archive::archive::redb::{Durability, RedbArchive};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let archive = RedbArchive::builder()
    ///     .durability(Durability::None)
    ///     .open(dir.path().join("a.redb"))?;
    /// archive.set("d", "k", b"fast, lost on a crash")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets whether opening verifies the checksum of every page and rebuilds the allocator state.
    /// Defaults to `true`.
    ///
    /// redb trusts a file that was closed cleanly, and a file damaged outside redb (a bad disk, a
    /// stray write, a truncated copy) can then make the open panic. With the check, such a file
    /// gives [`Error::Corrupted`] instead. The check reads the whole file, which took about 30 ms
    /// for 70 MB here; turn it off only for a large file on storage you trust.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::RedbArchive;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let archive = RedbArchive::builder()
    ///     .check_integrity_on_open(false)
    ///     .quick_repair(true)
    ///     .open(dir.path().join("large.redb"))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn check_integrity_on_open(mut self, enabled: bool) -> Self {
        self.check_integrity_on_open = enabled;
        self
    }

    /// Sets whether every commit also saves redb's allocator state, so that opening after a crash
    /// skips the walk over the whole file. Defaults to `false`.
    ///
    /// Quick repair costs a second fsync per commit, which doubles the latency of a durable
    /// write. It pays off only with [`check_integrity_on_open(false)`](Self::check_integrity_on_open):
    /// while the integrity check is on, every open walks the file anyway. Turn both around for a
    /// file so large that a walk at startup is too slow.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::RedbArchive;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let archive = RedbArchive::builder()
    ///     .check_integrity_on_open(false)
    ///     .quick_repair(true)
    ///     .open(dir.path().join("large.redb"))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn quick_repair(mut self, enabled: bool) -> Self {
        self.quick_repair = enabled;
        self
    }

    /// Opens the archive at `path` with these options, creating the file and its parent
    /// directories if they are missing.
    ///
    /// # Errors
    ///
    /// - [`Error::AlreadyOpen`] if another `RedbArchive`, in this process or another, holds the
    ///   file;
    /// - [`Error::Corrupted`] if the file is not a redb database or is damaged;
    /// - [`Error::Io`] if the directories or the file cannot be created or read;
    /// - [`Error::Backend`] for any other redb failure.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::RedbArchive;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let archive = RedbArchive::builder().open(dir.path().join("new/dirs/sessions.redb"))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(self, path: impl AsRef<Path>) -> Result<RedbArchive> {
        let path = path.as_ref().to_path_buf();
        create_private_file(&path)?;
        let db = ::redb::Builder::new()
            .set_cache_size(self.cache_size)
            .set_check_integrity_on_open(self.check_integrity_on_open)
            .create(&path)
            .map_err(|source| map_error(&path, "open the database", source.into()))?;
        self.open_database(db, path)
    }

    /// Makes the archive over an open database, whose file is at `path`, and creates the table.
    fn open_database(self, db: ::redb::Database, path: PathBuf) -> Result<RedbArchive> {
        let archive = RedbArchive {
            db: Arc::new(Database {
                snapshots: Snapshots::default(),
                stats: Counters::default(),
                db,
                path: path.into(),
                options: self,
            }),
            group: Arc::new(GroupCommit::new(MAX_GATHER)),
            committer: parking_lot::Mutex::new(None),
        };
        // Opening the table in a write transaction creates it, so that no read transaction ever
        // meets a missing table.
        archive.write(Op::CreateTable)?;
        Ok(archive)
    }
}

/// An archive in one redb file: the embedded default backend (feature `archive-redb`, on by
/// default; with `default-features = false`, add `features = ["archive-redb"]` to get it back).
///
/// Open it with [`RedbArchive::open`], or with options through [`RedbArchive::builder`]; share
/// one handle between threads (it is `Send + Sync`; wrap it in an `Arc` or give it to
/// [`Sessions`](crate::Sessions)).
///
/// # Guarantees
///
/// - **On disk.** One redb 4 file with one table, `entries`, keyed by the pair `(domain, key)`
///   (both `&str`) with the value as raw bytes (`&[u8]`). Pairs sort by domain, then key, so a
///   domain's keys are one contiguous range: [`remove_domain`](Archive::remove_domain) is one
///   range delete in one transaction, [`has_domain`](Archive::has_domain) one range probe, and
///   listing domains seeks once per domain without reading values. The file is an ordinary redb
///   database: a program using the `redb` crate, major version 4, can read it while no archive
///   holds it. To move data to another backend, copy it through the [`Archive`] API (the CLI's
///   `migrate` does, feature `cli`): every backend shares one name rule, so nothing is lost.
/// - **Durability.** With the default [`Durability::Immediate`], every write
///   ([`set`](Archive::set), [`remove`](Archive::remove), [`remove_domain`](Archive::remove_domain),
///   [`compare_and_swap`](Archive::compare_and_swap),
///   [`compare_and_swap_many`](Archive::compare_and_swap_many), [`update`](Archive::update) and
///   the batches) is committed with an fsync
///   before it returns, and survives a crash whole: the tests kill writer processes with SIGKILL
///   and check every acknowledged write. [`Durability::None`] is an opt-in that skips the fsync:
///   those writes become durable at the next durable commit or when the archive is dropped, and
///   a crash loses them (the file stays consistent). Use it only for data you can lose.
/// - **Atomicity.** Every method is one transaction. [`set_many`](Archive::set_many),
///   [`remove_many`](Archive::remove_many) and [`remove_domains`](Archive::remove_domains) apply
///   their whole batch in one transaction (one fsync), so a batch is applied whole or not at all.
///   [`compare_and_swap_many`](Archive::compare_and_swap_many) compares and writes all its keys
///   in one transaction too: no reader, in this process or after a crash, sees some of its keys
///   changed and others not.
/// - **Group commit.** Writers that arrive while a commit is running do not each pay an fsync:
///   they queue, and when the commit ends one of them (the leader; there is no extra thread)
///   applies the queue in arrival order in one transaction, keeps applying the writes that
///   arrive meanwhile (until as many as in the last batch have joined, or half a commit's time,
///   at most 5 ms, has passed), and commits them all with one fsync. Every write still returns
///   only after the commit that holds it is durable, and behaves exactly as if committed alone:
///   a [`compare_and_swap`](Archive::compare_and_swap) (or
///   [`compare_and_swap_many`](Archive::compare_and_swap_many)) sees every write queued before it,
///   [`remove`](Archive::remove) and [`remove_domain`](Archive::remove_domain) answer for
///   themselves, and if the shared transaction fails, each write is retried in a transaction of
///   its own, so one write's error never fails or loses another, and no write is acknowledged
///   unless a commit holding it succeeded. A write that changes nothing (a failed swap, removing
///   an absent key) is aborted instead of synced. With many writers this multiplies durable
///   write throughput (the figures are in the repository's `docs/PERFORMANCE.md`); a single
///   writer pays one fsync per write and never waits for company.
///   (Should redb panic inside a commit, the leader's call panics and the other writers of its
///   batch get [`Error::Backend`]: their writes may or may not be stored.)
/// - **Updates run inside the commit.** An [`update`](Archive::update)'s change runs in the
///   transaction, on the leader's thread, in its place in the queue: concurrent updates of one
///   key each see the value the one before left and share one commit, where a
///   read-then-[`compare_and_swap`](Archive::compare_and_swap) loop would fail all swaps but one
///   and pay a commit per round. A change that returns an error or panics writes nothing and
///   answers only its own caller (the panic resumes on the caller's thread); a change that
///   writes to the archive gets [`Error::Backend`] instead of waiting for itself.
/// - **Linearizable reads.** Reads work on a snapshot and never wait for writers. Reads share
///   one snapshot between commits, yet no read returns less than an earlier read returned or an
///   acknowledged write wrote: a read that begins after a write returned sees it.
/// - **One process per file.** redb locks the file while it is open: a second open, in the same
///   process or another, gives [`Error::AlreadyOpen`]. Share one `RedbArchive` between threads
///   instead, or use `RedisArchive` (feature `archive-redis`) for several processes or
///   machines.
/// - **Private.** A new file is created with mode 0600, and the missing parent directories `open`
///   creates with 0700: sessions hold login state.
/// - **Damaged files.** By default the open verifies every page's checksum, so a damaged or
///   foreign file gives [`Error::Corrupted`] instead of a panic; see
///   [`check_integrity_on_open`](RedbArchiveBuilder::check_integrity_on_open) and
///   [`quick_repair`](RedbArchiveBuilder::quick_repair) for large files.
/// - **Memory.** redb caches up to [`DEFAULT_CACHE_SIZE`] (64 MiB) of the file unless
///   [`cache_size`](RedbArchiveBuilder::cache_size) says otherwise, rather than redb's 1 GiB.
///
/// # Examples
///
/// ```
/// use session_archive::Archive;
/// use session_archive::archive::redb::{Durability, RedbArchive};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join(".gen/sessions.redb");
/// // Creates the file, and its parent directories, if they are missing.
/// let archive = RedbArchive::open(&path)?;
/// archive.set("0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2", "session.json", br#"{"Name":"world"}"#)?;
/// drop(archive);
///
/// // Or choose the options yourself.
/// let archive = RedbArchive::builder()
///     .cache_size(16 << 20)
///     .durability(Durability::Immediate)
///     .open(&path)?;
/// assert!(archive.has_domain("0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2")?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RedbArchive {
    /// The database, shared with the committer thread.
    db: Arc<Database>,
    /// Every write goes through it; see [`RedbArchive::write`]. Shared with the committer
    /// thread and the futures of [`update_async`](Archive::update_async).
    group: Arc<Engine>,
    /// The thread that commits for tasks when no writer thread leads (see `committer`);
    /// started by the first [`update_async`](Archive::update_async).
    committer: parking_lot::Mutex<Option<Committer>>,
}

/// The group commit engine of a [`RedbArchive`].
type Engine = GroupCommit<Op, Reply, ::redb::Error>;

/// The database of a [`RedbArchive`] and what its reads and commits need.
struct Database {
    /// Declared before `db`, so that the shared snapshot is dropped first.
    snapshots: Snapshots,
    db: ::redb::Database,
    /// Shared, so that an update's future can name the file in its errors without copying it.
    path: Arc<Path>,
    options: RedbArchiveBuilder,
    stats: Counters,
}

impl RedbArchive {
    /// Opens the archive at `path` with the default options, creating the file and its parent
    /// directories if they are missing. See [`RedbArchiveBuilder`] for the defaults.
    ///
    /// # Errors
    ///
    /// As [`RedbArchiveBuilder::open`]: [`Error::AlreadyOpen`] when another handle holds the
    /// file, [`Error::Corrupted`] when it is not a redb database or is damaged, [`Error::Io`] and
    /// [`Error::Backend`] otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Error, RedbArchive};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("sessions.redb");
    /// let archive = RedbArchive::open(&path)?;
    /// assert!(matches!(RedbArchive::open(&path), Err(Error::AlreadyOpen { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<RedbArchive> {
        Self::builder().open(path)
    }

    /// Starts a [`RedbArchiveBuilder`] with the default options.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::archive::redb::{Durability, RedbArchive};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let archive = RedbArchive::builder()
    ///     .durability(Durability::Immediate)
    ///     .open(dir.path().join("sessions.redb"))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder() -> RedbArchiveBuilder {
        RedbArchiveBuilder::default()
    }

    /// The path of the archive's file.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::RedbArchive;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("sessions.redb");
    /// assert_eq!(RedbArchive::open(&path)?.path(), path);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn path(&self) -> &Path {
        &self.db.path
    }

    /// How this archive commits its writes.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::archive::redb::{Durability, RedbArchive};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let archive = RedbArchive::open(dir.path().join("sessions.redb"))?;
    /// assert_eq!(archive.durability(), Durability::Immediate);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn durability(&self) -> Durability {
        self.db.options.durability
    }

    /// What this archive's commits have done since it was opened: commits, the writes they
    /// held, and the time its writer was busy. See [`CommitStats`], whose example shows use.
    pub fn commit_stats(&self) -> CommitStats {
        self.db.stats.read()
    }

    /// Runs `f` on the table in a read snapshot that never waits for writers (see the `snapshot`
    /// module for how snapshots are shared and why that stays linearizable).
    fn read<R>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&ReadTable) -> Result<R, ::redb::Error>,
    ) -> Result<R> {
        let db = &*self.db;
        db.snapshots
            .read(&db.db, f)
            .map_err(|source| map_error(&db.path, operation, source))
    }

    /// Applies `op` in a group commit and returns its answer once the commit holding it is done,
    /// durable unless the archive was opened with [`Durability::None`]. Every write goes through
    /// here.
    fn write(&self, op: Op) -> Result<usize> {
        Ok(self.submit(op)?.count())
    }

    /// Starts the committer thread unless it runs. If the system will not start a thread, the
    /// error says so, and the next call tries again: an async caller must not be made to wait
    /// for a commit on its own thread instead.
    fn ensure_committer(&self) -> Result<()> {
        let mut committer = self.committer.lock();
        if committer.is_none() {
            let db = Arc::clone(&self.db);
            let started = Committer::start(Arc::clone(&self.group), move |batch| db.commit(batch));
            *committer = Some(started.map_err(|source| Error::Io {
                path: self.db.path.to_path_buf(),
                source,
            })?);
        }
        Ok(())
    }

    /// Applies `op` in a group commit, as [`write`](Self::write) does, and returns its reply.
    fn submit(&self, op: Op) -> Result<Reply> {
        let operation = op.operation();
        if ops::in_change() {
            // This thread is running an update's change inside a commit, which would wait for
            // this write, which would wait for that commit.
            return Err(called_from_a_change(operation));
        }
        let answer = self.group.submit(op, |batch| self.db.commit(batch));
        answer.map_err(|failure| failed(&self.db.path, operation, failure))
    }
}

/// The error of a write made from inside an update's change, which runs inside a commit.
fn called_from_a_change(operation: &'static str) -> Error {
    Error::Backend {
        backend: "redb",
        operation,
        source: "an update's change called the archive it is updating".into(),
    }
}

/// The error of a write whose group commit gave no output.
fn failed(path: &Path, operation: &'static str, failure: Failure<::redb::Error>) -> Error {
    match failure {
        Failure::Failed(source) => map_error(path, operation, source),
        Failure::NoAnswer => Error::Backend {
            backend: "redb",
            operation: "commit a batch of writes",
            source: "the commit panicked; the batch's writes may not be stored".into(),
        },
    }
}

/// The answer to an update: the value afterwards, or the change's error; a change's panic
/// resumes here, in the update's caller.
fn updated(reply: Reply) -> Result<Option<Vec<u8>>> {
    match reply {
        Reply::Updated(value) => Ok(value),
        Reply::Refused(error) => Err(error),
        Reply::Panicked(payload) => std::panic::resume_unwind(payload),
        Reply::Count(_) | Reply::Each(_) => Err(Error::Backend {
            backend: "redb",
            operation: "update a value",
            source: "the commit answered the update with a count".into(),
        }),
    }
}

/// The op of an update.
fn update_op(domain: &str, key: &str, change: Change) -> Op {
    Op::Update {
        domain: domain.to_owned(),
        key: key.to_owned(),
        change: RefCell::new(Some(change)),
    }
}

impl Database {
    /// Applies the batch's ops in order in one write transaction and commits it with the
    /// configured durability, returning each op's answer. A transaction that changed nothing is
    /// aborted instead, so a failed swap or the removal of something absent costs no fsync. If
    /// any op fails, nothing is committed.
    fn commit(&self, batch: &mut Batch<'_, Op>) -> Result<Vec<Reply>, ::redb::Error> {
        let began = Instant::now();
        let outcome = self.transact(batch);
        let committed = match &outcome {
            Ok((answers, true)) => Some(answers.len()),
            _ => None,
        };
        self.stats.record(committed, began.elapsed());
        outcome.map(|(answers, _)| answers)
    }

    /// The body of [`commit`](Self::commit), which also says whether it committed.
    fn transact(&self, batch: &mut Batch<'_, Op>) -> Result<(Vec<Reply>, bool), ::redb::Error> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(self.options.durability.to_redb())?;
        txn.set_quick_repair(self.options.quick_repair);
        let outcome = ops::apply_batch(&mut txn.open_table(ENTRIES)?, batch)?;
        if outcome.changed {
            let window = self.snapshots.commit_window();
            let committed = txn.commit();
            drop(window);
            committed?;
        } else {
            txn.abort()?;
        }
        Ok((outcome.answers, outcome.changed))
    }
}

impl Drop for RedbArchive {
    /// Stops the committer thread, if one started, once it has committed what tasks queued, so
    /// that the file is closed when this returns.
    fn drop(&mut self) {
        if let Some(committer) = self.committer.get_mut().take() {
            committer.stop(&self.group);
        }
    }
}

impl fmt::Debug for RedbArchive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbArchive")
            .field("path", &self.db.path)
            .field("durability", &self.db.options.durability)
            .finish_non_exhaustive()
    }
}

/// Creates the archive file, and its missing parent directories, readable by the owner only
/// (0600 and 0700, as the directory backend does): sessions hold login state. An existing file is
/// left as it is.
fn create_private_file(path: &Path) -> Result<()> {
    let mut dirs = std::fs::DirBuilder::new();
    dirs.recursive(true);
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        dirs.mode(0o700);
        file.mode(0o600);
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        dirs.create(parent).map_err(|source| Error::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    file.open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(())
}

/// Wraps a redb error in the crate's error, keeping it as the source.
fn map_error(path: &Path, operation: &'static str, error: ::redb::Error) -> Error {
    let path = path.to_path_buf();
    match error {
        // redb reports a file that is not a database (a wrong magic number) as `InvalidData`, and
        // a file cut short as `UnexpectedEof`; neither comes from the operating system.
        ::redb::Error::Io(ref source)
            if matches!(
                source.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            Error::Corrupted {
                path,
                source: Box::new(error),
            }
        }
        ::redb::Error::Io(source) => Error::Io { path, source },
        ::redb::Error::DatabaseAlreadyOpen => Error::AlreadyOpen {
            path,
            source: Box::new(error),
        },
        ::redb::Error::Corrupted(_) => Error::Corrupted {
            path,
            source: Box::new(error),
        },
        _ => Error::Backend {
            backend: "redb",
            operation,
            source: Box::new(error),
        },
    }
}

impl Archive for RedbArchive {
    fn get(&self, domain: &str, key: &str) -> Result<Option<Vec<u8>>> {
        validate_entry(domain, key)?;
        self.read("read a value", |table| {
            Ok(table
                .get((domain, key))?
                .map(|value| value.value().to_vec()))
        })
    }

    fn set(&self, domain: &str, key: &str, value: &[u8]) -> Result<()> {
        validate_entry(domain, key)?;
        self.write(Op::Set {
            domain: domain.to_owned(),
            key: key.to_owned(),
            value: value.to_vec(),
        })?;
        Ok(())
    }

    fn has(&self, domain: &str, key: &str) -> Result<bool> {
        validate_entry(domain, key)?;
        self.read("look up a key", |table| {
            Ok(table.get((domain, key))?.is_some())
        })
    }

    fn remove(&self, domain: &str, key: &str) -> Result<bool> {
        validate_entry(domain, key)?;
        Ok(self.write(Op::Remove {
            domain: domain.to_owned(),
            key: key.to_owned(),
        })? > 0)
    }

    fn has_domain(&self, domain: &str) -> Result<bool> {
        validate_domain(domain)?;
        let end = domain_end(domain);
        self.read("look up a domain", |table| any_in(table, domain, &end))
    }

    fn remove_domain(&self, domain: &str) -> Result<bool> {
        validate_domain(domain)?;
        Ok(self.write(Op::RemoveDomain {
            domain: domain.to_owned(),
        })? > 0)
    }

    fn compare_and_swap(
        &self,
        domain: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        validate_entry(domain, key)?;
        Ok(self.write(Op::CompareAndSwap {
            domain: domain.to_owned(),
            key: key.to_owned(),
            expected: expected.map(<[u8]>::to_vec),
            new: new.map(<[u8]>::to_vec),
        })? > 0)
    }

    /// One op of the group commit, like [`compare_and_swap`](Archive::compare_and_swap): it sees
    /// every write queued before it, compares and writes all its keys in the one transaction,
    /// and is durable, whole, when it returns `true`.
    fn compare_and_swap_many(&self, domain: &str, swaps: &[Swap<'_>]) -> Result<bool> {
        check_swaps(domain, swaps)?;
        if swaps.is_empty() {
            return Ok(true);
        }
        Ok(self.write(Op::CompareAndSwapMany {
            domain: domain.to_owned(),
            swaps: swaps
                .iter()
                .map(|&(key, expected, new)| {
                    (
                        key.to_owned(),
                        expected.map(<[u8]>::to_vec),
                        new.map(<[u8]>::to_vec),
                    )
                })
                .collect(),
        })? > 0)
    }

    /// One op of the group commit: every group compared and swapped in the one transaction,
    /// so the whole call costs one commit (one fsync), and is durable, with every group that
    /// swapped, when it returns.
    fn compare_and_swap_each(&self, groups: &[SwapGroup<'_>]) -> Result<Vec<bool>> {
        check_groups(groups)?;
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let owned = groups
            .iter()
            .map(|&(domain, swaps)| {
                let swaps = swaps
                    .iter()
                    .map(|&(key, expected, new)| {
                        (
                            key.to_owned(),
                            expected.map(<[u8]>::to_vec),
                            new.map(<[u8]>::to_vec),
                        )
                    })
                    .collect();
                (domain.to_owned(), swaps)
            })
            .collect();
        match self.submit(Op::CompareAndSwapEach(owned))? {
            Reply::Each(swapped) => Ok(swapped),
            _ => Err(Error::Backend {
                backend: "redb",
                operation: "compare and swap values of several domains",
                source: "the commit answered something other than the groups' outcomes".into(),
            }),
        }
    }

    /// Every value from one read snapshot.
    fn get_each(&self, entries: &[(&str, &str)]) -> Result<Vec<Option<Vec<u8>>>> {
        for (domain, key) in entries {
            validate_entry(domain, key)?;
        }
        self.read("read several values", |table| {
            entries
                .iter()
                .map(|&(domain, key)| Ok(table.get((domain, key))?.map(|v| v.value().to_vec())))
                .collect()
        })
    }

    /// One [`get_each`](Archive::get_each), which reads its entries at one moment here.
    fn get_many(&self, domain: &str, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        check_keys(domain, keys)?;
        let entries: Vec<(&str, &str)> = keys.iter().map(|key| (domain, *key)).collect();
        self.get_each(&entries)
    }

    /// Runs `change` inside the group commit, on the thread of whichever writer leads it:
    /// concurrent updates, of one key or many, are applied in order in one transaction and
    /// share its commit, and none of them has to read or try again.
    fn update(&self, domain: &str, key: &str, change: Change) -> Result<Option<Vec<u8>>> {
        validate_entry(domain, key)?;
        updated(self.submit(update_op(domain, key, change))?)
    }

    /// Queues the update for the next group commit and returns at once; the future completes
    /// when the commit holding the update does, as [`update`](Archive::update) would return.
    /// No thread waits meanwhile: the future is woken by whichever writer leads that commit, or
    /// by the archive's committer thread when no writer thread does. Dropping the future does
    /// not withdraw the update.
    fn update_async(&self, domain: &str, key: &str, change: Change) -> UpdateFuture {
        if let Err(invalid) = validate_entry(domain, key) {
            return Box::pin(std::future::ready(Err(invalid)));
        }
        if ops::in_change() {
            // Awaited inside a change, the future would wait for the commit running the change.
            return Box::pin(std::future::ready(Err(called_from_a_change(
                "update a value",
            ))));
        }
        if let Err(refused) = self.ensure_committer() {
            return Box::pin(std::future::ready(Err(refused)));
        }
        let answer = Pending::queue(Arc::clone(&self.group), update_op(domain, key, change));
        let path = Arc::clone(&self.db.path);
        Box::pin(async move {
            match answer.await {
                Ok(reply) => updated(reply),
                Err(failure) => Err(failed(&path, "update a value", failure)),
            }
        })
    }

    fn list_domains(&self, cursor: Option<&str>, limit: usize) -> Result<Page> {
        let limit = limit.max(1);
        self.read("list domains", |table| {
            // One seek per domain: after finding a domain, jump past all of its keys.
            let mut start = cursor.map(domain_end).unwrap_or_default();
            let mut names = Vec::new();
            while names.len() < limit {
                let Some((entry, _)) = table.range((start.as_str(), "")..)?.next().transpose()?
                else {
                    break;
                };
                let domain = entry.value().0.to_owned();
                start = domain_end(&domain);
                names.push(domain);
            }
            Ok(Page::ordered(names, limit))
        })
    }

    fn list_keys(&self, domain: &str, cursor: Option<&str>, limit: usize) -> Result<Page> {
        validate_domain(domain)?;
        let limit = limit.max(1);
        let end = domain_end(domain);
        self.read("list keys", |table| {
            let start = cursor.map_or(Bound::Included((domain, "")), |after| {
                Bound::Excluded((domain, after))
            });
            let names = table
                .range((start, Bound::Excluded((end.as_str(), ""))))?
                .take(limit)
                .map(|entry| entry.map(|(entry, _)| entry.value().1.to_owned()))
                .collect::<Result<Vec<String>, _>>()?;
            Ok(Page::ordered(names, limit))
        })
    }

    fn set_many(&self, entries: &[(&str, &str, &[u8])]) -> Result<()> {
        for (domain, key, _) in entries {
            validate_entry(domain, key)?;
        }
        if entries.is_empty() {
            return Ok(());
        }
        self.write(Op::SetMany(
            entries
                .iter()
                .map(|&(domain, key, value)| (domain.to_owned(), key.to_owned(), value.to_vec()))
                .collect(),
        ))?;
        Ok(())
    }

    fn remove_many(&self, entries: &[(&str, &str)]) -> Result<usize> {
        for (domain, key) in entries {
            validate_entry(domain, key)?;
        }
        if entries.is_empty() {
            return Ok(0);
        }
        self.write(Op::RemoveMany(
            entries
                .iter()
                .map(|&(domain, key)| (domain.to_owned(), key.to_owned()))
                .collect(),
        ))
    }

    fn remove_domains(&self, domains: &[&str]) -> Result<usize> {
        for domain in domains {
            validate_domain(domain)?;
        }
        if domains.is_empty() {
            return Ok(0);
        }
        self.write(Op::RemoveDomains(
            domains.iter().map(|&domain| domain.to_owned()).collect(),
        ))
    }

    /// Writes: a point read is a lookup in a shared MVCC snapshot (under a microsecond when the
    /// pages are cached) and never waits for a writer, while every write waits for its group
    /// commit, with an fsync unless the archive was opened with [`Durability::None`] (and even
    /// then it may wait for the commit of a batch that holds one).
    fn blocking(&self) -> Blocking {
        Blocking::Commits
    }
}
