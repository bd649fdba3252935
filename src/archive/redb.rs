//! [`RedbArchive`]: every domain in one [redb](https://www.redb.org) file, the embedded default.
//!
//! The file holds one table, `entries`, keyed by the composite `(domain, key)` with the value as
//! bytes. Tuples compare element by element and strings by bytes, so all keys of domain `d` form
//! exactly the range `(d, "") .. (d + "\0", "")`: `""` is the smallest string and `d + "\0"` the
//! next string after `d`. No valid name contains NUL, so that range never reaches another domain,
//! and removing, probing or listing a domain is one range operation.

use std::collections::HashMap;
use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

use ::redb::{ReadableDatabase, ReadableTable, TableDefinition};
use parking_lot::{Condvar, Mutex, RwLock};

use crate::archive::{Archive, Blocking, Page};
use crate::error::{Error, Result};
use crate::name::{validate_domain, validate_entry};

/// The one table: `(domain, key) -> value`.
const ENTRIES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("entries");

/// The table as a write transaction sees it.
type Table<'txn> = ::redb::Table<'txn, (&'static str, &'static str), &'static [u8]>;

/// The table as a read transaction sees it.
type ReadTable = ::redb::ReadOnlyTable<(&'static str, &'static str), &'static [u8]>;

/// How a [`RedbArchive`] commits its writes; see [`RedbArchiveBuilder::durability`].
///
/// # Examples
///
/// ```
/// use session_archive::{Durability, RedbArchive};
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
/// | [`cache_size`](Self::cache_size) | [`DEFAULT_CACHE_SIZE`](Self::DEFAULT_CACHE_SIZE) (64 MiB) | a session store is a side table, not the application's database |
/// | [`durability`](Self::durability) | [`Durability::Immediate`] | an acknowledged write survives a crash |
/// | [`check_integrity_on_open`](Self::check_integrity_on_open) | `true` | a damaged file gives an error, never a panic |
/// | [`quick_repair`](Self::quick_repair) | `false` | the integrity check walks the file at every open anyway |
///
/// # Examples
///
/// ```
/// use session_archive::{Archive, Durability, RedbArchive};
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
            cache_size: Self::DEFAULT_CACHE_SIZE,
            durability: Durability::Immediate,
            check_integrity_on_open: true,
            quick_repair: false,
        }
    }
}

impl RedbArchiveBuilder {
    /// The cache size used unless [`RedbArchiveBuilder::cache_size`] says otherwise: 64 MiB.
    ///
    /// redb's own default is 1 GiB, sized for a database that is the application. A session store is
    /// a side table of a web server: its working set is the sessions active right now, a few KiB
    /// each, and 64 MiB (16,384 pages of 4 KiB) keeps the tree's inner pages and tens of thousands of
    /// live sessions in memory without claiming a gigabyte per process.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::RedbArchiveBuilder;
    ///
    /// assert_eq!(RedbArchiveBuilder::DEFAULT_CACHE_SIZE, 64 * 1024 * 1024);
    /// ```
    pub const DEFAULT_CACHE_SIZE: usize = 64 << 20;

    /// Sets how many bytes of the file redb may cache in memory. Defaults to
    /// [`DEFAULT_CACHE_SIZE`](Self::DEFAULT_CACHE_SIZE).
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
    /// use session_archive::{Archive, Durability, RedbArchive};
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
            snapshot: RwLock::new(None),
            generation: AtomicU64::new(0),
            db,
            path,
            options: self,
            committer: Committer::default(),
        };
        // Opening the table in a write transaction creates it, so that no read transaction ever
        // meets a missing table.
        archive
            .commit(&[Op::CreateTable])
            .map_err(|source| map_error(&archive.path, "create the table", source))?;
        Ok(archive)
    }
}

/// An archive in one redb file: the embedded default backend (feature `archive-redb`).
///
/// - **Layout.** One table keyed by `(domain, key)`, so a domain is one contiguous range:
///   [`remove_domain`](Archive::remove_domain) is one range delete in one transaction, and
///   [`has_domain`](Archive::has_domain) one range probe.
/// - **Durability.** By default every write is committed with one fsync before it returns, and
///   survives a crash whole; [`Durability::None`] is an opt-in.
/// - **Atomicity.** Every method is one transaction. [`set_many`](Archive::set_many),
///   [`remove_many`](Archive::remove_many) and [`remove_domains`](Archive::remove_domains) apply
///   their whole batch in one transaction (one fsync), so the batch is atomic here.
/// - **Group commit.** Writers that arrive while a commit is in progress are queued and then
///   committed together, in arrival order, in one transaction with one fsync. Each write still
///   returns only after the commit that holds it is durable, and behaves exactly as if it had been
///   committed alone: a [`compare_and_swap`](Archive::compare_and_swap) sees every write queued
///   before it. A write that changes nothing (a failed swap, removing an absent key) is not synced.
/// - **Concurrency.** Share it across threads (`Send + Sync`, or wrap it in an `Arc`). Writes are
///   serialized by redb's single writer; reads see a snapshot and never wait for writers.
/// - **Private.** A new file is created with mode 0600, and missing parent directories with 0700.
/// - **One handle per file.** The file is locked while open: a second open, in this process or
///   another, gives [`Error::AlreadyOpen`].
///
/// # Examples
///
/// ```
/// use session_archive::{Archive, RedbArchive};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("sessions.redb");
/// let archive = RedbArchive::open(&path)?;
/// archive.set("0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2", "session.json", br#"{"Name":"world"}"#)?;
/// drop(archive);
///
/// let archive = RedbArchive::open(&path)?;
/// assert!(archive.has_domain("0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2")?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RedbArchive {
    /// The read snapshot that reads share while no commit has happened since it was taken. It is
    /// declared before `db`, so it is dropped first.
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    /// Odd while a transaction commits, even otherwise: each commit adds one just before and one
    /// just after (see [`CommitWindow`]). Commits never overlap (redb has one writer), so the
    /// table changes only while this is odd, and each even value names one state of the table.
    /// See [`RedbArchive::read`].
    generation: AtomicU64,
    db: ::redb::Database,
    path: PathBuf,
    options: RedbArchiveBuilder,
    committer: Committer,
}

/// A read transaction with the table open, shared by reads until the next commit.
struct Snapshot {
    /// The even value [`RedbArchive::generation`] had both before the transaction began and after:
    /// the snapshot holds exactly the commits counted up to it.
    generation: u64,
    table: ReadTable,
}

/// One write, owned so that whichever writer leads the commit can apply it.
enum Op {
    CreateTable,
    Set {
        domain: String,
        key: String,
        value: Vec<u8>,
    },
    SetMany(Vec<(String, String, Vec<u8>)>),
    Remove {
        domain: String,
        key: String,
    },
    RemoveMany(Vec<(String, String)>),
    RemoveDomain {
        domain: String,
    },
    RemoveDomains(Vec<String>),
    CompareAndSwap {
        domain: String,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
}

/// What an applied [`Op`] reports.
#[derive(Clone, Copy)]
struct Applied {
    /// The operation's answer: how many of its keys or domains existed (0 or 1 for a single
    /// one), or 1 if the swap happened; 1 for plain writes.
    answer: usize,
    /// Whether the table changed, so that the commit has something to make durable.
    changed: bool,
}

impl Op {
    /// The operation's name in errors.
    fn operation(&self) -> &'static str {
        match self {
            Op::CreateTable => "create the table",
            Op::Set { .. } => "write a value",
            Op::SetMany(_) => "write a batch of values",
            Op::Remove { .. } => "remove a key",
            Op::RemoveMany(_) => "remove a batch of keys",
            Op::RemoveDomain { .. } => "remove a domain",
            Op::RemoveDomains(_) => "remove a batch of domains",
            Op::CompareAndSwap { .. } => "compare and swap a value",
        }
    }

    /// Applies the operation to the table of an open write transaction.
    fn apply(&self, table: &mut Table<'_>) -> Result<Applied, ::redb::Error> {
        let changed = |answer: usize| Applied {
            answer,
            changed: answer > 0,
        };
        let remove = |table: &mut Table<'_>, domain: &str, key: &str| {
            Ok::<_, ::redb::Error>(usize::from(table.remove((domain, key))?.is_some()))
        };
        let remove_domain = |table: &mut Table<'_>, domain: &str| {
            let end = domain_end(domain);
            let existed = any_in(table, domain, &end)?;
            if existed {
                table.retain_in((domain, "")..(end.as_str(), ""), |_, _| false)?;
            }
            Ok::<_, ::redb::Error>(usize::from(existed))
        };
        Ok(match self {
            // Opening the table created it; committing that is the point.
            Op::CreateTable => changed(1),
            Op::Set { domain, key, value } => {
                table.insert((domain.as_str(), key.as_str()), value.as_slice())?;
                changed(1)
            }
            Op::SetMany(entries) => {
                for (domain, key, value) in entries {
                    table.insert((domain.as_str(), key.as_str()), value.as_slice())?;
                }
                Applied {
                    answer: 1,
                    changed: !entries.is_empty(),
                }
            }
            Op::Remove { domain, key } => changed(remove(table, domain, key)?),
            Op::RemoveMany(entries) => {
                let mut removed = 0;
                for (domain, key) in entries {
                    removed += remove(table, domain, key)?;
                }
                changed(removed)
            }
            Op::RemoveDomain { domain } => changed(remove_domain(table, domain)?),
            Op::RemoveDomains(domains) => {
                let mut removed = 0;
                for domain in domains {
                    removed += remove_domain(table, domain)?;
                }
                changed(removed)
            }
            Op::CompareAndSwap {
                domain,
                key,
                expected,
                new,
            } => {
                let entry = (domain.as_str(), key.as_str());
                // The transaction is the only writer, so the read and the write below are one
                // atomic step.
                let matches = table.get(entry)?.as_ref().map(::redb::AccessGuard::value)
                    == expected.as_deref();
                if matches {
                    match new {
                        Some(value) => drop(table.insert(entry, value.as_slice())?),
                        None => drop(table.remove(entry)?),
                    }
                }
                changed(usize::from(matches))
            }
        })
    }
}

/// The queue of writes waiting for a commit, and the answers of committed batches.
///
/// Leader/follower group commit without a thread of its own: a writer queues its [`Op`] under a
/// ticket. If no commit is running, it becomes the leader: it opens one write transaction,
/// applies the queued ops in order, keeps applying the ops that arrive meanwhile (see
/// [`RedbArchive::lead`]), commits once, posts every op's answer and wakes exactly the writers it
/// answered, plus the first still queued, who leads next. The others sleep until woken; nobody
/// is woken just to find that its answer is not there yet. Each leader commits exactly one
/// batch, the one holding its own op, so no writer serves others forever.
#[derive(Default)]
struct Committer {
    state: Mutex<CommitState>,
    /// Signalled whenever a write is queued, for a leader gathering its batch.
    arrived: Condvar,
}

#[derive(Default)]
struct CommitState {
    /// Ops waiting for a leader to take them, in arrival order: the order they take effect in.
    queue: Vec<Queued>,
    /// Answers of committed ops, until their writer takes them.
    answers: HashMap<u64, Result<usize>>,
    /// Whether a leader is gathering, applying or committing a batch right now.
    committing: bool,
    next_ticket: u64,
    /// How many writes the last batch held, and how long its commit took once gathered: the next
    /// leader gathers until that many have joined it, for at most half that time.
    last_batch: usize,
    last_commit: Duration,
}

/// The longest a leader gathers, whatever the last commit took: one slow fsync must not make
/// the next batch's writers wait for company for long.
const MAX_GATHER: Duration = Duration::from_millis(5);

/// A queued write, and the writer to wake when it is answered.
struct Queued {
    ticket: u64,
    op: Op,
    writer: Thread,
}

/// A leader's hold on the [`Committer`] while its batch commits. Dropped, it posts the batch's
/// answers, frees leadership and wakes the batch's writers and the next leader. If a panic inside
/// redb unwinds through the commit, there are no answers, and the batch's writers get an error
/// instead of waiting forever on a commit that will never end.
struct Leadership<'a> {
    committer: &'a Committer,
    /// The batch's writers by ticket, in the order their ops were applied.
    writers: Vec<(u64, Thread)>,
    answers: Option<Vec<Result<usize>>>,
    /// How long the batch took from the end of gathering to its answers.
    commit: Duration,
}

impl Drop for Leadership<'_> {
    fn drop(&mut self) {
        let me = std::thread::current().id();
        let mut state = self.committer.state.lock();
        if let Some(answers) = self.answers.take() {
            let tickets = self.writers.iter().map(|(ticket, _)| *ticket);
            state.answers.extend(tickets.zip(answers));
            state.last_commit = self.commit;
        } else {
            // The leader's own thread is unwinding and never collects its answer.
            let others = self.writers.iter().filter(|(_, writer)| writer.id() != me);
            for &(ticket, _) in others {
                state.answers.insert(
                    ticket,
                    Err(Error::Backend {
                        backend: "redb",
                        operation: "commit a batch of writes",
                        source: "the commit panicked; the batch's writes may not be stored".into(),
                    }),
                );
            }
        }
        state.last_batch = self.writers.len();
        state.committing = false;
        let next_leader = state.queue.first().map(|queued| queued.writer.clone());
        drop(state);
        // The next leader first: the next commit waits for it, while the answered writers only
        // return.
        if let Some(writer) = next_leader {
            writer.unpark();
        }
        for (_, writer) in &self.writers {
            if writer.id() != me {
                writer.unpark();
            }
        }
    }
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
    /// use session_archive::{Durability, RedbArchive};
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
        &self.path
    }

    /// How this archive commits its writes.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Durability, RedbArchive};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let archive = RedbArchive::open(dir.path().join("sessions.redb"))?;
    /// assert_eq!(archive.durability(), Durability::Immediate);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn durability(&self) -> Durability {
        self.options.durability
    }

    /// Runs `f` on the table in a read transaction, a snapshot that never waits for writers.
    ///
    /// Beginning a read transaction and opening the table cost more than a point lookup, so reads
    /// share one snapshot between commits. The invariant that keeps this linearizable: **a shared
    /// snapshot tagged `g` holds the table as it is while the generation is `g`**, which is even.
    ///
    /// - A reader stores its snapshot only if it loaded the same even `g` before beginning its
    ///   transaction and again after, under the slot's lock. Then no commit ran in between: a
    ///   commit makes the generation odd before redb publishes its state, under a lock that
    ///   `begin_read` takes after it, so a transaction that saw the commit sees the changed
    ///   generation on the check.
    /// - A reader uses the shared snapshot only if its tag equals the generation it loaded, so it
    ///   returns the table as it was at that load.
    /// - A reader that loads an odd generation neither uses nor stores a shared snapshot: it
    ///   returns what its own transaction sees.
    ///
    /// So no read returns less than an earlier read or acknowledged write did: whoever saw commit
    /// `C` did so after `C` made the generation odd, so every later read loads at least that, and
    /// can share only a snapshot tagged after `C` ended. Ending a commit clears the slot, so a
    /// snapshot never pins old pages while writes go on; while a commit is in flight, every read
    /// begins its own transaction.
    fn read<R>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&ReadTable) -> Result<R, ::redb::Error>,
    ) -> Result<R> {
        let generation = self.generation.load(Ordering::Acquire);
        let stable = generation.is_multiple_of(2);
        let cached = if stable {
            self.snapshot
                .read()
                .as_ref()
                .filter(|snapshot| snapshot.generation == generation)
                .cloned()
        } else {
            None
        };
        let snapshot = if let Some(snapshot) = cached {
            snapshot
        } else {
            let fresh = (|| {
                let txn = self.db.begin_read()?;
                Ok::<_, ::redb::Error>(Arc::new(Snapshot {
                    generation,
                    table: txn.open_table(ENTRIES)?,
                }))
            })()
            .map_err(|source| map_error(&self.path, operation, source))?;
            if stable {
                let mut slot = self.snapshot.write();
                if self.generation.load(Ordering::Acquire) == generation {
                    *slot = Some(Arc::clone(&fresh));
                }
            }
            fresh
        };
        f(&snapshot.table).map_err(|source| map_error(&self.path, operation, source))
    }

    /// Applies `op` in a group commit (see [`Committer`]) and returns its answer once the commit
    /// holding it is done, durable unless the archive was opened with [`Durability::None`].
    /// Every write goes through here.
    fn write(&self, op: Op) -> Result<usize> {
        let mut state = self.committer.state.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push(Queued {
            ticket,
            op,
            writer: std::thread::current(),
        });
        self.committer.arrived.notify_one();
        loop {
            if let Some(answer) = state.answers.remove(&ticket) {
                return answer;
            }
            if state.committing {
                // Woken by the leader that answers this op, or that leaves it queued for this
                // writer to lead. A wake-up that comes between the unlock and the park is kept
                // by the thread's token, so none is lost; a spurious one only loops. (A token left
                // for a thread that had already returned cuts short its next park anywhere, which
                // std allows of any park: every parker loops on its own condition.)
                drop(state);
                std::thread::park();
                state = self.committer.state.lock();
                continue;
            }
            // No commit is running and this op is still queued: lead the next one.
            state.committing = true;
            let batch = std::mem::take(&mut state.queue);
            let expected = state.last_batch;
            let window = (state.last_commit / 2).min(MAX_GATHER);
            drop(state);
            let mut leadership = Leadership {
                committer: &self.committer,
                writers: Vec::with_capacity(expected.max(batch.len())),
                answers: None,
                commit: Duration::ZERO,
            };
            let (answers, commit) = self.lead(batch, expected, window, &mut leadership.writers);
            leadership.answers = Some(answers);
            leadership.commit = commit;
            drop(leadership);
            state = self.committer.state.lock();
        }
    }

    /// Commits `batch` and the ops that join it, and answers each op in the order of `writers`.
    ///
    /// The writers the last commit answered are on their way back with their next writes, but
    /// waking them all takes a while on a busy machine. So the leader applies what is queued,
    /// then whatever arrived meanwhile, until it finds the queue empty; when it does while fewer
    /// than `expected` ops (the last batch's size) have joined, it first waits for more, until
    /// `window` has passed. Then it commits them all at once. Applying overlaps the others'
    /// return, and a lone writer never waits. Taking is bounded: a writer has one op at a time,
    /// and those in the batch wait for its commit.
    ///
    /// The batch is one transaction; if that fails, each op is retried in a transaction of its
    /// own, so one op's failure fails only that op, and an op is answered `Ok` only when a commit
    /// holding it succeeded. Also returns how long the batch took once gathered.
    fn lead(
        &self,
        batch: Vec<Queued>,
        expected: usize,
        window: Duration,
        writers: &mut Vec<(u64, Thread)>,
    ) -> (Vec<Result<usize>>, Duration) {
        let deadline = Instant::now() + window;
        let mut ops = Vec::with_capacity(writers.capacity());
        let mut take = |batch: Vec<Queued>, ops: &mut Vec<Op>| {
            for queued in batch {
                writers.push((queued.ticket, queued.writer));
                ops.push(queued.op);
            }
        };
        take(batch, &mut ops);
        let mut gathered_at = None;
        let committed = self.commit_with(&mut ops, |ops| {
            let mut state = self.committer.state.lock();
            while state.queue.is_empty()
                && ops.len() < expected
                && !self
                    .committer
                    .arrived
                    .wait_until(&mut state, deadline)
                    .timed_out()
            {}
            if state.queue.is_empty() {
                gathered_at = Some(Instant::now());
                return false;
            }
            take(std::mem::take(&mut state.queue), ops);
            true
        });
        let answers = match committed {
            Ok(answers) => answers.into_iter().map(Ok).collect(),
            Err(source) if ops.len() == 1 => {
                vec![Err(map_error(&self.path, ops[0].operation(), source))]
            }
            Err(_) => ops
                .iter()
                .map(|op| {
                    self.commit(std::slice::from_ref(op))
                        .map(|answers| answers.first().copied().unwrap_or_default())
                        .map_err(|source| map_error(&self.path, op.operation(), source))
                })
                .collect(),
        };
        let commit = gathered_at.map_or(Duration::ZERO, |at| at.elapsed());
        (answers, commit)
    }

    /// Applies `ops` in order in one write transaction and commits it with the configured
    /// durability, returning each op's answer. A transaction that changed nothing is aborted
    /// instead, so a failed swap or the removal of something absent costs no fsync. If any op
    /// fails, nothing is committed.
    fn commit(&self, ops: &[Op]) -> Result<Vec<usize>, ::redb::Error> {
        let mut ops = ops.iter().collect::<Vec<_>>();
        self.commit_with(&mut ops, |_| false)
    }

    /// As [`commit`](Self::commit), but once `ops` are applied, `more(ops)` may append ops, which
    /// are applied in turn, until it returns `false`.
    fn commit_with<O: std::borrow::Borrow<Op>>(
        &self,
        ops: &mut Vec<O>,
        mut more: impl FnMut(&mut Vec<O>) -> bool,
    ) -> Result<Vec<usize>, ::redb::Error> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(self.options.durability.to_redb())?;
        txn.set_quick_repair(self.options.quick_repair);
        let mut changed = false;
        let mut answers = Vec::with_capacity(ops.len());
        {
            let mut table = txn.open_table(ENTRIES)?;
            loop {
                for op in &ops[answers.len()..] {
                    let applied = op.borrow().apply(&mut table)?;
                    changed |= applied.changed;
                    answers.push(applied.answer);
                }
                if !more(ops) {
                    break;
                }
            }
        }
        if changed {
            // Counted even when the commit fails or panics, as it may have changed the file.
            let window = CommitWindow::open(self);
            let committed = txn.commit();
            drop(window);
            committed?;
        } else {
            txn.abort()?;
        }
        Ok(answers)
    }
}

/// The span in which a transaction commits: the generation is odd from [`open`](Self::open) until
/// the window is dropped, which makes it even again (also when the commit unwinds) and clears
/// the shared snapshot. See [`RedbArchive::read`].
struct CommitWindow<'a> {
    archive: &'a RedbArchive,
}

impl<'a> CommitWindow<'a> {
    fn open(archive: &'a RedbArchive) -> Self {
        archive.generation.fetch_add(1, Ordering::AcqRel);
        CommitWindow { archive }
    }
}

impl Drop for CommitWindow<'_> {
    fn drop(&mut self) {
        // Under the slot's lock, so that what a reader stores after this is tagged with the new
        // generation, and what it stored before is cleared.
        let mut slot = self.archive.snapshot.write();
        self.archive.generation.fetch_add(1, Ordering::AcqRel);
        *slot = None;
    }
}

impl fmt::Debug for RedbArchive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbArchive")
            .field("path", &self.path)
            .field("durability", &self.options.durability)
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

/// The first name after every key of `domain`: keys of `domain` are `(domain, "") ..
/// (domain_end(domain), "")`.
fn domain_end(domain: &str) -> String {
    format!("{domain}\0")
}

/// Whether the range holds at least one entry, without reading past the first.
fn any_in<T: ReadableTable<(&'static str, &'static str), &'static [u8]>>(
    table: &T,
    start: &str,
    end: &str,
) -> Result<bool, ::redb::Error> {
    Ok(table
        .range((start, "")..(end, ""))?
        .next()
        .transpose()?
        .is_some())
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
        Blocking::Writes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many transactions the archive has committed: each adds two to the generation.
    fn commits(archive: &RedbArchive) -> u64 {
        archive.generation.load(Ordering::Acquire) / 2
    }

    /// Waits (yielding, not sleeping) until the committer's state satisfies `ready`.
    fn wait_until(archive: &RedbArchive, ready: impl Fn(&CommitState) -> bool) {
        while !ready(&archive.committer.state.lock()) {
            std::thread::yield_now();
        }
    }

    /// Runs each op through [`RedbArchive::write`] on a thread of its own, so that all of them
    /// meet in one batch, in the order given: a write transaction held here blocks the first
    /// writer, who leads, at `begin_write`, until every other op has queued behind it. Returns each
    /// writer's answer, or its panic.
    fn one_batch(archive: &RedbArchive, ops: Vec<Op>) -> Vec<std::thread::Result<Result<usize>>> {
        let gate = archive.db.begin_write().unwrap();
        std::thread::scope(|scope| {
            let mut writers = Vec::new();
            for (queued, op) in ops.into_iter().enumerate() {
                writers.push(scope.spawn(move || archive.write(op)));
                if queued == 0 {
                    // It has taken its op off the queue to lead, and waits for the gate.
                    wait_until(archive, |state| state.committing && state.queue.is_empty());
                } else {
                    wait_until(archive, |state| state.queue.len() == queued);
                }
            }
            drop(gate);
            writers
                .into_iter()
                .map(std::thread::ScopedJoinHandle::join)
                .collect()
        })
    }

    fn set(key: &str, value: &[u8]) -> Op {
        Op::Set {
            domain: "d".to_owned(),
            key: key.to_owned(),
            value: value.to_vec(),
        }
    }

    fn swap(key: &str, expected: &[u8], new: &[u8]) -> Op {
        Op::CompareAndSwap {
            domain: "d".to_owned(),
            key: key.to_owned(),
            expected: Some(expected.to_vec()),
            new: Some(new.to_vec()),
        }
    }

    fn remove(key: &str) -> Op {
        Op::Remove {
            domain: "d".to_owned(),
            key: key.to_owned(),
        }
    }

    /// Storage in memory whose next `sync_data` panics once armed, as a bug in redb or in a
    /// storage layer below it would.
    #[derive(Debug, Default)]
    struct PanicOnSync {
        memory: ::redb::backends::InMemoryBackend,
        armed: Arc<std::sync::atomic::AtomicBool>,
    }

    impl ::redb::StorageBackend for PanicOnSync {
        fn len(&self) -> Result<u64, std::io::Error> {
            self.memory.len()
        }

        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
            self.memory.read(offset, out)
        }

        fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
            self.memory.set_len(len)
        }

        fn sync_data(&self) -> Result<(), std::io::Error> {
            assert!(
                !self.armed.swap(false, Ordering::AcqRel),
                "the storage panics in sync_data"
            );
            self.memory.sync_data()
        }

        fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
            self.memory.write(offset, data)
        }
    }

    fn get(archive: &RedbArchive, key: &str) -> Option<Vec<u8>> {
        archive.get("d", key).unwrap()
    }

    /// Writers that queue while a commit is under way share one commit, and each op is answered
    /// as if it had been committed alone, in arrival order.
    #[test]
    fn writers_queued_behind_a_leader_share_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let archive = RedbArchive::open(dir.path().join("archive.redb")).unwrap();
        archive.set("d", "k", b"0").unwrap();
        let before = commits(&archive);

        let answers = one_batch(
            &archive,
            vec![
                set("k", b"1"),
                // Sees the set above, in the same transaction.
                swap("k", b"1", b"2"),
                swap("k", b"1", b"3"),
                remove("absent"),
                set("x", b"v"),
                remove("x"),
            ],
        );

        let answers: Vec<usize> = answers
            .into_iter()
            .map(|answer| answer.unwrap().unwrap())
            .collect();
        assert_eq!(answers, [1, 1, 0, 0, 1, 1]);
        assert_eq!(commits(&archive) - before, 1, "six writers, one commit");
        assert_eq!(get(&archive, "k"), Some(b"2".to_vec()));
        assert_eq!(get(&archive, "x"), None);
    }

    /// When one op fails, the batch's transaction fails as a whole; every op is then retried in
    /// a transaction of its own, so the others are applied and answered as before, in order, and
    /// only the failing one gets the error.
    #[test]
    fn a_failing_op_fails_alone_and_the_rest_of_its_batch_is_retried() {
        // One byte over redb's limit for a value (3 GiB). `vec!` of zeros maps untouched zero
        // pages, and redb checks the length before it reads a byte, so this costs no memory.
        const TOO_LARGE: usize = 3 * 1024 * 1024 * 1024 + 1;
        let dir = tempfile::tempdir().unwrap();
        let archive = RedbArchive::open(dir.path().join("archive.redb")).unwrap();
        archive.set("d", "k", b"0").unwrap();
        let before = commits(&archive);

        let mut answers = one_batch(
            &archive,
            vec![
                set("k", b"1"),
                Op::Set {
                    domain: "d".to_owned(),
                    key: "huge".to_owned(),
                    value: vec![0; TOO_LARGE],
                },
                swap("k", b"1", b"2"),
                remove("absent"),
                set("y", b"v"),
            ],
        )
        .into_iter()
        .map(std::thread::Result::unwrap);

        assert_eq!(answers.next().unwrap().unwrap(), 1);
        let err = answers.next().unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                Error::Backend {
                    backend: "redb",
                    operation: "write a value",
                    ..
                }
            ),
            "{err:?}"
        );
        let source = std::error::Error::source(&err).expect("the redb error is kept");
        assert!(
            matches!(
                source.downcast_ref::<::redb::Error>(),
                Some(::redb::Error::ValueTooLarge(TOO_LARGE))
            ),
            "{source:?}"
        );
        let rest: Vec<usize> = answers.map(Result::unwrap).collect();
        assert_eq!(rest, [1, 0, 1]);
        // The failed batch committed nothing; the three ops that change the table committed one
        // by one, and the removal of an absent key not at all.
        assert_eq!(commits(&archive) - before, 3);
        assert_eq!(get(&archive, "k"), Some(b"2".to_vec()));
        assert_eq!(get(&archive, "huge"), None);
        assert_eq!(get(&archive, "y"), Some(b"v".to_vec()));
    }

    /// A panic inside redb's commit unwinds through the leader: its own write panics, the other
    /// writers of its batch get an error instead of waiting forever, and leadership is free for
    /// the next writer.
    #[test]
    fn a_panicking_commit_answers_its_batch_with_an_error_and_frees_leadership() {
        let backend = PanicOnSync::default();
        let armed = Arc::clone(&backend.armed);
        let db = ::redb::Builder::new().create_with_backend(backend).unwrap();
        let archive = RedbArchive::builder()
            .open_database(db, PathBuf::from("in-memory"))
            .unwrap();
        archive.set("d", "k", b"0").unwrap();
        let before = archive.generation.load(Ordering::Acquire);

        armed.store(true, Ordering::Release);
        let mut answers = one_batch(
            &archive,
            vec![set("a", b"1"), set("b", b"2"), set("c", b"3")],
        )
        .into_iter();

        let leader = answers.next().unwrap().unwrap_err();
        assert_eq!(
            leader.downcast_ref::<&str>(),
            Some(&"the storage panics in sync_data")
        );
        for answer in answers {
            let err = answer.unwrap().unwrap_err();
            assert!(
                matches!(
                    &err,
                    Error::Backend {
                        backend: "redb",
                        operation: "commit a batch of writes",
                        ..
                    }
                ),
                "{err:?}"
            );
            let source = std::error::Error::source(&err).expect("the cause is kept");
            assert!(source.to_string().contains("panicked"), "{source}");
        }
        assert!(
            !armed.load(Ordering::Acquire),
            "the commit reached the sync"
        );
        {
            let state = archive.committer.state.lock();
            assert!(!state.committing);
            assert!(state.queue.is_empty());
            // Nobody is left to collect an answer, so none is kept.
            assert!(state.answers.is_empty());
        }
        // The commit window closed on the way out: the generation is even again, one commit on.
        assert_eq!(archive.generation.load(Ordering::Acquire), before + 2);

        // The next writer leads its own commit and returns. (What it returns is redb's business:
        // this version refuses writes until the database is reopened, as `Corrupted`.)
        let _ = archive.set("d", "after", b"v");
        let state = archive.committer.state.lock();
        assert!(!state.committing);
        assert!(state.answers.is_empty());
    }
}
