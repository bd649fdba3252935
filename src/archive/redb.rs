//! [`RedbArchive`]: every domain in one [redb](https://www.redb.org) file, the embedded default.
//!
//! The file holds one table, `entries`, keyed by the composite `(domain, key)` with the value as
//! bytes. Tuples compare element by element and strings by bytes, so all keys of domain `d` form
//! exactly the range `(d, "") .. (d + "\0", "")`: `""` is the smallest string and `d + "\0"` the
//! next string after `d`. No valid name contains NUL, so that range never reaches another domain,
//! and removing, probing or listing a domain is one range operation.

use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use ::redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::archive::{Archive, Page};
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
        let archive = RedbArchive {
            db,
            path,
            options: self,
        };
        // Opening the table in a write transaction creates it, so that no read transaction ever
        // meets a missing table.
        archive.write("create the table", |_| Ok(()))?;
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
/// - **Atomicity.** Every method is one transaction. [`set_many`](Archive::set_many) writes its
///   whole batch in one transaction (one fsync), so the batch is atomic here.
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
    db: ::redb::Database,
    path: PathBuf,
    options: RedbArchiveBuilder,
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
    fn read<R>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&ReadTable) -> Result<R, ::redb::Error>,
    ) -> Result<R> {
        let run = || {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(ENTRIES)?;
            f(&table)
        };
        run().map_err(|source| map_error(&self.path, operation, source))
    }

    /// Runs `f` on the table in one write transaction and commits it with the configured
    /// durability; if `f` fails, nothing it did is committed. Every write goes through here.
    fn write<R>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&mut Table<'_>) -> Result<R, ::redb::Error>,
    ) -> Result<R> {
        let run = || {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(self.options.durability.to_redb())?;
            txn.set_quick_repair(self.options.quick_repair);
            let result = {
                let mut table = txn.open_table(ENTRIES)?;
                f(&mut table)?
            };
            txn.commit()?;
            Ok(result)
        };
        run().map_err(|source| map_error(&self.path, operation, source))
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

/// The cursor of a listing page: its last name when it is full.
fn page(names: Vec<String>, limit: usize) -> Page {
    let cursor = (names.len() >= limit)
        .then(|| names.last().cloned())
        .flatten();
    Page { names, cursor }
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
        self.write("write a value", |table| {
            table.insert((domain, key), value)?;
            Ok(())
        })
    }

    fn has(&self, domain: &str, key: &str) -> Result<bool> {
        validate_entry(domain, key)?;
        self.read("look up a key", |table| {
            Ok(table.get((domain, key))?.is_some())
        })
    }

    fn remove(&self, domain: &str, key: &str) -> Result<bool> {
        validate_entry(domain, key)?;
        self.write("remove a key", |table| {
            Ok(table.remove((domain, key))?.is_some())
        })
    }

    fn has_domain(&self, domain: &str) -> Result<bool> {
        validate_domain(domain)?;
        let end = domain_end(domain);
        self.read("look up a domain", |table| any_in(table, domain, &end))
    }

    fn remove_domain(&self, domain: &str) -> Result<bool> {
        validate_domain(domain)?;
        let end = domain_end(domain);
        self.write("remove a domain", |table| {
            let existed = any_in(table, domain, &end)?;
            if existed {
                table.retain_in((domain, "")..(end.as_str(), ""), |_, _| false)?;
            }
            Ok(existed)
        })
    }

    fn compare_and_swap(
        &self,
        domain: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        validate_entry(domain, key)?;
        // redb has one writer at a time, so the read and the write below are one atomic step.
        self.write("compare and swap a value", |table| {
            let matches = table
                .get((domain, key))?
                .as_ref()
                .map(::redb::AccessGuard::value)
                == expected;
            if !matches {
                return Ok(false);
            }
            match new {
                Some(value) => {
                    table.insert((domain, key), value)?;
                }
                None => {
                    table.remove((domain, key))?;
                }
            }
            Ok(true)
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
            Ok(page(names, limit))
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
            Ok(page(names, limit))
        })
    }

    fn set_many(&self, entries: &[(&str, &str, &[u8])]) -> Result<()> {
        for (domain, key, _) in entries {
            validate_entry(domain, key)?;
        }
        self.write("write a batch of values", |table| {
            for &(domain, key, value) in entries {
                table.insert((domain, key), value)?;
            }
            Ok(())
        })
    }
}
