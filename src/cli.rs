//! The library side of the `session-archive` command: naming an archive by a spec, and the
//! migration, statistics, sweep and per-user calls the command runs.
//!
//! The command (feature `cli`) only parses its arguments and prints; everything here is usable,
//! and tested, without it. The module is compiled on Unix whatever the features, so an app can
//! take the same specs as the command: a spec whose backend is not compiled in gives
//! [`CliError::NotCompiled`] when opened.
//!
//! ```
//! # #[cfg(all(feature = "archive-dir", feature = "archive-redb"))] {
//! use session_archive::cli::{self, Access, MigrateOptions, Spec};
//!
//! // Move a directory tree in the original framework's layout into one redb file.
//! let dir = tempfile::tempdir()?;
//! let from = Spec::parse(&format!("dir:{}", dir.path().join("sessions").display()))?;
//! let to = Spec::parse(&format!("redb:{}", dir.path().join("sessions.redb").display()))?;
//! let source = from.open(Access::CreateIfMissing)?;
//! source.set("0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2", "session.json", b"{}")?;
//!
//! let target = to.open(Access::CreateIfMissing)?;
//! let copied = cli::migrate(&*source, &*target, &MigrateOptions::default(), &mut |_| {})?;
//! assert_eq!(copied.keys, 1);
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::archive::{Archive, ArchiveExt};
use crate::error::{Chain, Error};
use crate::ids::redact;
use crate::session::{DEFAULT_SWEEP_GRANULARITY, Sessions, StoredSettings, UserSession};

/// What can go wrong in the command, beyond the archive's own [`Error`]s.
///
/// Each variant names what it is about (the spec, the path, the domain and key) and keeps the
/// archive error as its [`source`](std::error::Error::source); [`Chain`] prints the whole
/// chain.
///
/// # Examples
///
/// ```
/// use session_archive::cli::{CliError, Spec};
///
/// assert!(matches!(Spec::parse("ftp://host/x"), Err(CliError::UnknownScheme { .. })));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The spec names no known kind of archive.
    #[error("unknown archive {spec:?}: expected dir:PATH, redb:PATH or redis://HOST:PORT/DB")]
    UnknownScheme {
        /// The spec as given.
        spec: String,
    },

    /// The spec names a backend whose Cargo feature this build leaves out.
    #[error("{spec}: not compiled into this build; enable the Cargo feature {feature}")]
    NotCompiled {
        /// The spec as given.
        spec: String,
        /// The feature that compiles the backend in, such as `"archive-dir"`.
        feature: &'static str,
    },

    /// An archive that must already exist (anything read, and the source of a migration) does
    /// not.
    #[error("{spec}: no such archive ({} does not exist)", path.display())]
    Missing {
        /// The spec as given.
        spec: String,
        /// The missing path.
        path: PathBuf,
    },

    /// The archive could not be opened.
    #[error("cannot open {spec}")]
    Open {
        /// The spec as given.
        spec: String,
        /// Why.
        #[source]
        source: Error,
    },

    /// A migration's target already holds data and `merge` was not asked for.
    #[error("the target is not empty; pass --merge to copy into it anyway")]
    TargetNotEmpty,

    /// Reading or writing one entry failed. The message shows the session ids in the domain
    /// and key (a session's domain, an index entry's key) by their
    /// [fingerprint](crate::SessionId::fingerprint): ids are bearer tokens.
    #[error("{}/{}: cannot {operation}", redact(domain), redact(key))]
    Entry {
        /// What was being done: `"read it from the source"` or `"write it to the target"`.
        operation: &'static str,
        /// The entry's domain.
        domain: String,
        /// The entry's key.
        key: String,
        /// Why.
        #[source]
        source: Error,
    },

    /// Verification read back a different value (or none) from the target; named as in
    /// [`Entry`](Self::Entry).
    #[error(
        "{}/{}: the target holds a different value after copying",
        redact(domain),
        redact(key)
    )]
    Mismatch {
        /// The entry's domain.
        domain: String,
        /// The entry's key.
        key: String,
    },

    /// A key asked for does not exist.
    #[error("no key {key:?} in domain {domain:?}")]
    NoSuchKey {
        /// The domain.
        domain: String,
        /// The missing key.
        key: String,
    },

    /// A domain asked for does not exist.
    #[error("no domain {domain:?}")]
    NoSuchDomain {
        /// The missing domain.
        domain: String,
    },

    /// A duration argument is not a number followed by `s`, `m`, `h` or `d`. The command's
    /// argument parser gives it; nothing in this module does.
    #[error(
        "invalid duration {text:?}: expected a whole number and a unit, such as 90s, 30m, 12h or 7d"
    )]
    Duration {
        /// The text as given.
        text: String,
    },

    /// A sweep was given an idle timeout or absolute lifetime that differs from the one the
    /// application recorded in the archive, without being told to override it.
    #[error(
        "{flag} {given} differs from the stored {setting} {stored}; pass --override to sweep with it"
    )]
    Override {
        /// The command-line flag, such as `"--idle"`.
        flag: &'static str,
        /// The setting, such as `"idle timeout"`.
        setting: &'static str,
        /// The value given.
        given: Limit,
        /// The value stored in the archive.
        stored: Limit,
    },

    /// A `sweep --scan` of an archive with no sweep settings stored, without both `--idle` and
    /// `--absolute`: the scan would judge sessions by this crate's defaults, not the
    /// application's timeouts, and could remove sessions the application keeps.
    #[error(
        "no sweep settings are stored in this archive: pass --idle and --absolute (the \
         application's idle timeout and absolute lifetime, or \"off\") to scan it"
    )]
    NoSettings,

    /// Measuring the size on disk failed.
    #[error("cannot measure {}", path.display())]
    Measure {
        /// The path that could not be read.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// Any other archive error.
    #[error(transparent)]
    Archive(#[from] Error),
}

/// Formats `err` and every error in its [`source`](std::error::Error::source) chain on one
/// line, as [`Chain`] displays them.
///
/// # Examples
///
/// ```
/// use session_archive::cli::{one_line, Access, Spec};
///
/// let Err(err) = Spec::parse("redb:/nonexistent/x.redb")?.open(Access::Existing) else {
///     panic!("a missing file opened");
/// };
/// assert_eq!(
///     one_line(&err),
///     "redb:/nonexistent/x.redb: no such archive (/nonexistent/x.redb does not exist)"
/// );
/// # Ok::<(), session_archive::cli::CliError>(())
/// ```
#[doc(hidden)]
pub fn one_line(err: &dyn std::error::Error) -> String {
    Chain(err).to_string()
}

/// An archive named on the command line: `dir:PATH`, `redb:PATH` or `redis://HOST:PORT/DB`
/// (also `rediss://` and `redis+unix://`).
///
/// A Redis URL may end in a fragment naming the archive's
/// [prefix](crate::archive::redis::RedisArchiveBuilder::prefix):
/// `redis://127.0.0.1/0#prefix=myapp`, or `#legacy-prefix=myapp:` for data stored in the
/// [legacy layout](crate::archive::redis::RedisArchiveBuilder::legacy_layout)
/// (`#legacy-prefix=` for the empty prefix). Without one it is the empty prefix in the current
/// layout.
///
/// # Examples
///
/// ```
/// use std::path::PathBuf;
/// use session_archive::cli::Spec;
///
/// assert_eq!(Spec::parse("dir:.gen/sessions")?, Spec::Dir(PathBuf::from(".gen/sessions")));
/// assert_eq!(Spec::parse("redb:s.redb")?.to_string(), "redb:s.redb");
/// assert!(matches!(Spec::parse("redis://127.0.0.1:6379/0")?, Spec::Redis(_)));
/// assert!(Spec::parse("sessions.redb").is_err());
/// # Ok::<(), session_archive::cli::CliError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// A [`DirArchive`](crate::DirArchive) rooted at the path (feature `archive-dir`).
    Dir(PathBuf),
    /// A [`RedbArchive`](crate::RedbArchive) in the file at the path (feature `archive-redb`).
    Redb(PathBuf),
    /// A [`RedisArchive`](crate::RedisArchive) on the server at the URL (feature
    /// `archive-redis`).
    Redis(String),
}

/// Whether [`Spec::open`] may create a missing archive.
///
/// # Examples
///
/// ```
/// use session_archive::cli::{Access, Spec};
///
/// let dir = tempfile::tempdir()?;
/// let spec = Spec::parse(&format!("redb:{}", dir.path().join("new.redb").display()))?;
/// assert!(spec.open(Access::Existing).is_err());
/// assert!(spec.open(Access::CreateIfMissing).is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The archive must exist: for reading, removing, sweeping and as a migration's source, where
    /// creating an empty archive would hide a mistyped path.
    Existing,
    /// A missing archive is created: for a migration's target.
    CreateIfMissing,
}

impl Spec {
    /// Parses a spec.
    ///
    /// # Errors
    ///
    /// [`CliError::UnknownScheme`] for anything but `dir:`, `redb:` (each with a non-empty path)
    /// and the Redis URL schemes.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::cli::Spec;
    ///
    /// assert!(Spec::parse("dir:").is_err());
    /// assert!(Spec::parse("s3://bucket").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Spec, CliError> {
        let unknown = || CliError::UnknownScheme {
            spec: text.to_owned(),
        };
        if ["redis://", "rediss://", "redis+unix://"]
            .iter()
            .any(|scheme| text.starts_with(scheme))
        {
            return Ok(Spec::Redis(text.to_owned()));
        }
        let (scheme, path) = text.split_once(':').ok_or_else(unknown)?;
        if path.is_empty() {
            return Err(unknown());
        }
        match scheme {
            "dir" => Ok(Spec::Dir(PathBuf::from(path))),
            "redb" => Ok(Spec::Redb(PathBuf::from(path))),
            _ => Err(unknown()),
        }
    }

    /// Opens the archive. With [`Access::Existing`], a missing `dir:` or `redb:` path is an
    /// error instead of a new empty archive.
    ///
    /// Opening a directory tree creates its lock file, `.lock`, in the root, which is never
    /// listed; opening a redb file runs one empty write transaction. Neither changes any domain,
    /// key or value.
    ///
    /// # Errors
    ///
    /// [`CliError::NotCompiled`] when this build leaves the spec's backend out;
    /// [`CliError::Missing`] for a missing path under [`Access::Existing`]; [`CliError::Open`]
    /// with the backend's error otherwise (a file that is not a redb database, a root that is not
    /// a directory, a redb file already open, a Redis server that does not answer).
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::cli::{Access, CliError, Spec};
    ///
    /// let dir = tempfile::tempdir()?;
    /// std::fs::write(dir.path().join("not.redb"), b"hello")?;
    /// let spec = Spec::parse(&format!("redb:{}", dir.path().join("not.redb").display()))?;
    /// assert!(matches!(spec.open(Access::Existing), Err(CliError::Open { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg_attr(
        not(any(feature = "archive-dir", feature = "archive-redb")),
        allow(
            unused_variables,
            reason = "only the file backends check that the path exists"
        )
    )]
    #[cfg_attr(
        not(any(
            feature = "archive-dir",
            feature = "archive-redb",
            feature = "archive-redis"
        )),
        allow(dead_code, unreachable_code, reason = "no backend to open")
    )]
    pub fn open(&self, access: Access) -> Result<Box<dyn Archive>, CliError> {
        fn boxed(archive: impl Archive + 'static) -> Box<dyn Archive> {
            Box::new(archive)
        }
        let opened: crate::error::Result<Box<dyn Archive>> = match self {
            #[cfg(feature = "archive-dir")]
            Spec::Dir(path) => {
                self.must_exist(path, access)?;
                crate::archive::dir::DirArchive::open(path).map(boxed)
            }
            #[cfg(feature = "archive-redb")]
            Spec::Redb(path) => {
                self.must_exist(path, access)?;
                crate::archive::redb::RedbArchive::open(path).map(boxed)
            }
            #[cfg(feature = "archive-redis")]
            Spec::Redis(url) => open_redis(url).map(boxed),
            #[allow(
                unreachable_patterns,
                clippy::match_wildcard_for_single_variants,
                reason = "reached for the backends whose feature is off"
            )]
            _ => return Err(self.not_compiled()),
        };
        opened.map_err(|source| CliError::Open {
            spec: self.to_string(),
            source,
        })
    }

    /// Under [`Access::Existing`], checks that `path` exists, so that opening it does not
    /// create an empty archive in its place.
    #[cfg_attr(
        not(any(feature = "archive-dir", feature = "archive-redb")),
        allow(dead_code, reason = "only the file backends have a path")
    )]
    fn must_exist(&self, path: &Path, access: Access) -> Result<(), CliError> {
        if access == Access::Existing
            && let Err(err) = std::fs::symlink_metadata(path)
            // Anything else (not a directory, permissions) is the backend's to report.
            && err.kind() == std::io::ErrorKind::NotFound
        {
            return Err(CliError::Missing {
                spec: self.to_string(),
                path: path.to_path_buf(),
            });
        }
        Ok(())
    }

    /// The error for a spec whose backend this build leaves out.
    #[cfg_attr(
        all(
            feature = "archive-dir",
            feature = "archive-redb",
            feature = "archive-redis"
        ),
        allow(dead_code, reason = "every backend is compiled in")
    )]
    fn not_compiled(&self) -> CliError {
        CliError::NotCompiled {
            spec: self.to_string(),
            feature: match self {
                Spec::Dir(_) => "archive-dir",
                Spec::Redb(_) => "archive-redb",
                Spec::Redis(_) => "archive-redis",
            },
        }
    }

    /// The archive's size on disk in bytes: the file's size for redb, the sum of every regular
    /// file's size under the root for a directory tree, and `None` for Redis, which keeps its
    /// data elsewhere.
    ///
    /// # Errors
    ///
    /// [`CliError::Measure`] when a path cannot be read.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::cli::{Access, Spec};
    ///
    /// # #[cfg(feature = "archive-dir")] {
    /// let dir = tempfile::tempdir()?;
    /// let spec = Spec::parse(&format!("dir:{}", dir.path().display()))?;
    /// spec.open(Access::Existing)?.set("d", "k", b"12345")?;
    /// assert_eq!(spec.disk_size()?, Some(5)); // the empty lock file adds nothing
    /// # }
    /// assert_eq!(Spec::parse("redis://127.0.0.1/")?.disk_size()?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn disk_size(&self) -> Result<Option<u64>, CliError> {
        match self {
            Spec::Redb(path) => std::fs::metadata(path)
                .map(|meta| Some(meta.len()))
                .map_err(|source| CliError::Measure {
                    path: path.clone(),
                    source,
                }),
            Spec::Dir(path) => tree_size(path).map(Some),
            Spec::Redis(_) => Ok(None),
        }
    }
}

/// The total size of the regular files under `dir`, not following symlinks.
fn tree_size(dir: &Path) -> Result<u64, CliError> {
    fn measure(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
        move |source| CliError::Measure {
            path: path.to_path_buf(),
            source,
        }
    }
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(measure(dir))? {
        let entry = entry.map_err(measure(dir))?;
        let path = entry.path();
        let meta = entry.metadata().map_err(measure(&path))?;
        if meta.is_dir() {
            total += tree_size(&path)?;
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Spec::Dir(path) => write!(f, "dir:{}", path.display()),
            Spec::Redb(path) => write!(f, "redb:{}", path.display()),
            Spec::Redis(url) => f.write_str(url),
        }
    }
}

/// What an archive holds, as `session-archive stats` prints it.
///
/// # Examples
///
/// ```
/// use session_archive::{Archive, MemoryArchive, cli};
///
/// let archive = MemoryArchive::new();
/// archive.set("a", "k1", b"123")?;
/// archive.set("a", "k2", b"")?;
/// archive.set("b", "k1", b"45")?;
/// let stats = cli::stats(&archive)?;
/// assert_eq!((stats.domains, stats.keys, stats.value_bytes), (2, 3, 5));
/// # Ok::<(), session_archive::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// The number of domains.
    pub domains: u64,
    /// The number of keys, over all domains.
    pub keys: u64,
    /// The total length of all values.
    pub value_bytes: u64,
}

/// Walks every domain and key of `archive`, reading each value once, and counts them.
///
/// # Errors
///
/// The archive's errors.
///
/// # Examples
///
/// ```
/// use session_archive::{MemoryArchive, cli};
///
/// assert_eq!(cli::stats(&MemoryArchive::new())?, cli::Stats::default());
/// # Ok::<(), session_archive::Error>(())
/// ```
pub fn stats(archive: &dyn Archive) -> crate::error::Result<Stats> {
    let mut stats = Stats::default();
    for domain in archive.domains() {
        let domain = domain?;
        stats.domains += 1;
        for key in archive.keys(&domain) {
            let key = key?;
            // A key removed between the listing and the read no longer counts.
            if let Some(value) = archive.get(&domain, &key)? {
                stats.keys += 1;
                stats.value_bytes += value.len() as u64;
            }
        }
    }
    Ok(stats)
}

/// How [`migrate`] copies.
///
/// # Examples
///
/// ```
/// use session_archive::cli::{self, MigrateOptions};
/// use session_archive::{Archive, MemoryArchive};
///
/// let (from, to) = (MemoryArchive::new(), MemoryArchive::new());
/// for domain in ["a", "b", "c"] {
///     from.set(domain, "session.json", b"{}")?;
/// }
/// // Write at most two entries per batch, and check every value once it is written.
/// let options = MigrateOptions { batch_entries: 2, verify: true, ..MigrateOptions::default() };
/// let mut batches = 0;
/// cli::migrate(&from, &to, &options, &mut |_| batches += 1)?;
/// assert_eq!(batches, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrateOptions {
    /// Copy into a target that already holds data. Entries of the source replace entries of the
    /// target under the same domain and key; other entries of the target stay.
    pub merge: bool,
    /// Read every value back from the target after writing it, and compare.
    pub verify: bool,
    /// The most entries written in one [`set_many`](Archive::set_many) call.
    pub batch_entries: usize,
    /// The most value bytes written in one `set_many` call (a batch holds at least one entry).
    pub batch_bytes: usize,
    /// How many domains to ask the source for per listing page. Larger pages cost memory for
    /// the names only, and make a directory tree's listing, which rereads the whole directory
    /// for every page, that much cheaper.
    pub list_page: usize,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            merge: false,
            verify: false,
            batch_entries: 1000,
            batch_bytes: 8 * 1024 * 1024,
            list_page: 16 * 1024,
        }
    }
}

/// How far a migration has got: passed to the progress callback after every batch, and returned
/// at the end.
///
/// # Examples
///
/// ```
/// use session_archive::cli::{self, MigrateOptions, Migrated};
/// use session_archive::{Archive, MemoryArchive};
///
/// let (from, to) = (MemoryArchive::new(), MemoryArchive::new());
/// from.set("d", "k", b"12345")?;
/// let mut seen = Migrated::default();
/// let done = cli::migrate(&from, &to, &MigrateOptions::default(), &mut |so_far| seen = *so_far)?;
/// assert_eq!((done.domains, done.keys, done.bytes), (1, 1, 5));
/// assert_eq!(seen, done); // the last progress report is the whole copy
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Migrated {
    /// Domains whose every key has been written.
    pub domains: u64,
    /// Keys written.
    pub keys: u64,
    /// Value bytes written.
    pub bytes: u64,
}

/// Copies every domain and key of `from` into `to`, byte for byte, without modifying `from`.
///
/// Domains are walked page by page and entries written in batches through
/// [`set_many`](Archive::set_many) (one transaction each on redb), so memory stays bounded by
/// one batch. `progress` is called after every batch. Copying is idempotent: after an
/// interruption, running it again with [`merge`](MigrateOptions::merge) completes the copy.
///
/// # Errors
///
/// [`CliError::TargetNotEmpty`] when `to` holds data and `merge` is off (nothing is written);
/// [`CliError::Entry`] naming the domain and key whose read or write failed;
/// [`CliError::Mismatch`] when `verify` reads back a different value; [`CliError::Archive`] when
/// listing fails.
///
/// # Examples
///
/// ```
/// use session_archive::{Archive, MemoryArchive, cli::{self, CliError, MigrateOptions}};
///
/// let (from, to) = (MemoryArchive::new(), MemoryArchive::new());
/// from.set("d", "k", b"\x00\xff")?;
/// to.set("other", "k", b"kept")?;
/// let options = MigrateOptions::default();
/// assert!(matches!(cli::migrate(&from, &to, &options, &mut |_| {}), Err(CliError::TargetNotEmpty)));
///
/// let options = MigrateOptions { merge: true, verify: true, ..options };
/// let done = cli::migrate(&from, &to, &options, &mut |_| {})?;
/// assert_eq!((done.domains, done.keys, done.bytes), (1, 1, 2));
/// assert_eq!(to.get("d", "k")?.as_deref(), Some(&b"\x00\xff"[..]));
/// assert!(to.has_domain("other")?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn migrate(
    from: &dyn Archive,
    to: &dyn Archive,
    options: &MigrateOptions,
    progress: &mut dyn FnMut(&Migrated),
) -> Result<Migrated, CliError> {
    if !options.merge && to.domains().next().transpose()?.is_some() {
        return Err(CliError::TargetNotEmpty);
    }
    let mut copy = Copy {
        from,
        to,
        options,
        progress,
        batch: Batch::default(),
        done: Migrated::default(),
    };
    let mut cursor = None;
    loop {
        let page = from.list_domains(cursor.as_deref(), options.list_page.max(1))?;
        for domain in page.names {
            copy.domain(&domain)?;
        }
        cursor = page.cursor;
        if cursor.is_none() {
            break;
        }
    }
    copy.flush()?;
    Ok(copy.done)
}

/// A migration under way.
struct Copy<'a> {
    from: &'a dyn Archive,
    to: &'a dyn Archive,
    options: &'a MigrateOptions,
    progress: &'a mut dyn FnMut(&Migrated),
    batch: Batch,
    done: Migrated,
}

impl Copy<'_> {
    /// Queues every entry of `domain`, writing the batch whenever it is full.
    fn domain(&mut self, domain: &str) -> Result<(), CliError> {
        for key in self.from.keys(domain) {
            let key = key?;
            let value = self
                .from
                .get(domain, &key)
                .map_err(|source| CliError::Entry {
                    operation: "read it from the source",
                    domain: domain.to_owned(),
                    key: key.clone(),
                    source,
                })?;
            // A key removed since it was listed is no longer part of the source.
            let Some(value) = value else { continue };
            // Writing a full batch only when the next entry arrives means a batch that ends a
            // domain is written after that domain is counted, so progress counts it.
            if self.batch.entries.len() >= self.options.batch_entries.max(1)
                || self.batch.bytes >= self.options.batch_bytes
            {
                self.flush()?;
            }
            self.batch.bytes += value.len();
            self.batch.entries.push((domain.to_owned(), key, value));
        }
        self.batch.domains_queued += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), CliError> {
        self.batch
            .flush(self.to, self.options.verify, &mut self.done)?;
        (self.progress)(&self.done);
        Ok(())
    }
}

/// The entries read but not yet written.
#[derive(Default)]
struct Batch {
    entries: Vec<(String, String, Vec<u8>)>,
    bytes: usize,
    /// Domains whose every entry is in this batch or already written.
    domains_queued: u64,
}

impl Batch {
    fn flush(
        &mut self,
        to: &dyn Archive,
        verify: bool,
        done: &mut Migrated,
    ) -> Result<(), CliError> {
        let entries: Vec<(&str, &str, &[u8])> = self
            .entries
            .iter()
            .map(|(d, k, v)| (d.as_str(), k.as_str(), v.as_slice()))
            .collect();
        if to.set_many(&entries).is_err() {
            // The batch error does not say which entry failed; writing them one by one does.
            // Rewriting entries that did land is harmless, as every write stores the same bytes.
            for (domain, key, value) in &entries {
                to.set(domain, key, value)
                    .map_err(|source| CliError::Entry {
                        operation: "write it to the target",
                        domain: (*domain).to_owned(),
                        key: (*key).to_owned(),
                        source,
                    })?;
            }
        }
        if verify {
            for (domain, key, value) in &entries {
                let stored = to.get(domain, key).map_err(|source| CliError::Entry {
                    operation: "read it back from the target",
                    domain: (*domain).to_owned(),
                    key: (*key).to_owned(),
                    source,
                })?;
                if stored.as_deref() != Some(*value) {
                    return Err(CliError::Mismatch {
                        domain: (*domain).to_owned(),
                        key: (*key).to_owned(),
                    });
                }
            }
        }
        done.keys += entries.len() as u64;
        done.bytes += self.bytes as u64;
        done.domains = self.domains_queued;
        self.entries.clear();
        self.bytes = 0;
        Ok(())
    }
}

/// A session time limit: a duration, or `None` for no limit. It displays as the command's
/// arguments spell it: a whole number in the largest unit that divides it (`90s`, `30m`, `12h`,
/// `7d`), or `off`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use session_archive::cli::Limit;
///
/// assert_eq!(Limit(Some(Duration::from_secs(2 * 60 * 60))).to_string(), "2h");
/// assert_eq!(Limit(None).to_string(), "off");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Option<Duration>);

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(duration) = self.0 else {
            return f.write_str("off");
        };
        let secs = duration.as_secs();
        let (count, unit) = [(86_400, "d"), (3600, "h"), (60, "m")]
            .into_iter()
            .find(|&(unit, _)| secs != 0 && secs.is_multiple_of(unit))
            .map_or((secs, "s"), |(unit, name)| (secs / unit, name));
        write!(f, "{count}{unit}")
    }
}

/// How [`sweep`] sweeps. By default it judges expiry by the settings the application recorded
/// in the archive (see [`Sessions::stored_settings`]); a field set here overrides them.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use session_archive::cli::{Limit, SweepOptions};
///
/// // Judge by a 30-minute idle timeout and no absolute lifetime, whatever the application
/// // recorded, and first give timestamps to sessions stored without them.
/// let options = SweepOptions {
///     idle: Some(Limit(Some(Duration::from_secs(30 * 60)))),
///     absolute: Some(Limit(None)),
///     override_stored: true,
///     scan: true,
///     ..SweepOptions::default()
/// };
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepOptions {
    /// The idle timeout to judge by, as
    /// [`SessionsBuilder::idle_timeout`](crate::session::SessionsBuilder::idle_timeout); `None`
    /// for the stored one (where none is stored, a sweep needs both this and `absolute`).
    pub idle: Option<Limit>,
    /// The absolute lifetime to judge by, as
    /// [`SessionsBuilder::absolute_lifetime`](crate::session::SessionsBuilder::absolute_lifetime);
    /// `None` for the stored one.
    pub absolute: Option<Limit>,
    /// The index's bucket width, for an archive that has none recorded yet (where `scan` then
    /// records it); a recorded width always wins, as for every
    /// [`Sessions`](crate::session::SessionsBuilder::sweep_granularity). `None` for
    /// [`DEFAULT_SWEEP_GRANULARITY`].
    pub granularity: Option<Duration>,
    /// Sweep with an `idle` or `absolute` that differs from the stored one. Without it such a
    /// difference is [`CliError::Override`], since a shorter timeout removes sessions the
    /// application still holds live.
    pub override_stored: bool,
    /// First [adopt](Sessions::adopt_legacy) the sessions stored without timestamps, and index
    /// every session again: one pass over every domain.
    pub scan: bool,
}

/// What [`sweep`] did.
///
/// # Examples
///
/// ```
/// use session_archive::{MemoryArchive, cli::{self, SweepOptions}};
///
/// let done = cli::sweep(Box::new(MemoryArchive::new()), &SweepOptions::default(), &mut |_| {}, &mut |_| {})?;
/// assert_eq!((done.removed, done.adopted), (0, None));
/// # Ok::<(), session_archive::cli::CliError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Swept {
    /// How many expired sessions were removed.
    pub removed: usize,
    /// With [`scan`](SweepOptions::scan), how many sessions were given timestamps.
    pub adopted: Option<usize>,
}

/// Removes the expired sessions of `archive` by the system clock, as [`Sessions::sweep`] does,
/// judging expiry by the settings recorded in the archive unless `options` override them.
///
/// `notice` receives one line for each thing the caller should know about the settings used: an
/// override and what it replaces, a `granularity` that cannot apply, an archive with no settings
/// recorded. `progress` receives the number of domains scanned so far, with `scan`.
///
/// # Errors
///
/// [`CliError::Override`] when `options` set an idle timeout or absolute lifetime that differs
/// from the stored one without `override_stored` (nothing is swept); [`CliError::NoSettings`]
/// for a `scan` of an archive with no settings stored unless `options` give both; otherwise the
/// archive's errors. (Without `scan`, such an archive is not swept, with a notice, unless both
/// are given.)
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use session_archive::cli::{self, CliError, Limit, SweepOptions};
/// use session_archive::{MemoryArchive, Sessions};
///
/// let archive = Arc::new(MemoryArchive::new());
/// let app = Sessions::builder(archive.clone()).idle_timeout(Duration::from_secs(3600)).build();
/// app.start(None, ())?.save()?;
///
/// let one_minute = Limit(Some(Duration::from_secs(60)));
/// let shorter = SweepOptions { idle: Some(one_minute), ..SweepOptions::default() };
/// let refused = cli::sweep(Box::new(archive.clone()), &shorter, &mut |_| {}, &mut |_| {});
/// assert!(matches!(refused, Err(CliError::Override { .. })));
///
/// let mut notices = Vec::new();
/// let done = cli::sweep(Box::new(archive), &SweepOptions::default(), &mut |line| notices.push(line.to_owned()), &mut |_| {})?;
/// assert_eq!(done.removed, 0);
/// assert!(notices.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn sweep(
    archive: Box<dyn Archive>,
    options: &SweepOptions,
    notice: &mut dyn FnMut(&str),
    progress: &mut dyn FnMut(u64),
) -> Result<Swept, CliError> {
    let archive: Arc<dyn Archive> = Arc::from(archive);
    let stored = Sessions::new(Arc::clone(&archive)).stored_settings()?;
    if stored.is_none() && (options.idle.is_none() || options.absolute.is_none()) {
        // Judging sessions by the defaults, or recording them, could remove sessions that the
        // application's own timeouts keep.
        if options.scan {
            return Err(CliError::NoSettings);
        }
        notice(
            "no sweep settings are stored in this archive yet, so nothing is swept: the \
             application records them with its first session write, and --scan with --idle and \
             --absolute adopts sessions stored without timestamps",
        );
        return Ok(Swept::default());
    }
    let idle = setting(
        "--idle",
        "idle timeout",
        options.idle,
        stored.map(|s| Limit(s.idle_timeout)),
        options.override_stored,
        notice,
    )?;
    let absolute = setting(
        "--absolute",
        "absolute lifetime",
        options.absolute,
        stored.map(|s| Limit(s.absolute_lifetime)),
        options.override_stored,
        notice,
    )?;
    let granularity = granularity(options, stored, (idle, absolute), notice);
    if idle.0.is_none() && absolute.0.is_none() {
        notice("with no idle timeout and no absolute lifetime no session expires: nothing to do");
        return Ok(Swept::default());
    }
    let sessions = Sessions::builder(archive)
        .idle_timeout(idle.0)
        .absolute_lifetime(absolute.0)
        .sweep_granularity(granularity)
        .build();
    let adopted = options
        .scan
        .then(|| sessions.adopt_legacy(&mut *progress))
        .transpose()?;
    Ok(Swept {
        removed: sessions.sweep()?,
        adopted,
    })
}

/// Chooses one timeout for [`sweep`]: the one given, if any (refused when it differs from the
/// stored one and `overriding` is not set, announced when it is), else the stored one; with
/// neither, [`CliError::NoSettings`].
fn setting(
    flag: &'static str,
    name: &'static str,
    given: Option<Limit>,
    stored: Option<Limit>,
    overriding: bool,
    notice: &mut dyn FnMut(&str),
) -> Result<Limit, CliError> {
    match (given, stored) {
        (Some(given), Some(stored)) if given != stored => {
            if !overriding {
                return Err(CliError::Override {
                    flag,
                    setting: name,
                    given,
                    stored,
                });
            }
            notice(&format!(
                "{flag} {given} overrides the stored {name} {stored}"
            ));
            Ok(given)
        }
        (Some(given), _) => Ok(given),
        (None, stored) => stored.ok_or(CliError::NoSettings),
    }
}

/// Chooses the expiry index's bucket width for [`sweep`]: the one recorded in the archive,
/// which always wins (a different one given is announced as ignored), else the one given, else
/// the default. An archive with no settings recorded is announced too, with what `scan` records
/// there (`limits`: the idle timeout and absolute lifetime chosen) or why nothing is indexed.
fn granularity(
    options: &SweepOptions,
    stored: Option<StoredSettings>,
    limits: (Limit, Limit),
    notice: &mut dyn FnMut(&str),
) -> Duration {
    if let Some(stored) = stored {
        if let Some(given) = options.granularity
            && given.as_secs().max(1) != stored.sweep_granularity.as_secs()
        {
            notice(&format!(
                "--granularity {} is ignored: the index of this archive is recorded with {}",
                Limit(Some(given)),
                Limit(Some(stored.sweep_granularity))
            ));
        }
        return stored.sweep_granularity;
    }
    let granularity = options.granularity.unwrap_or(DEFAULT_SWEEP_GRANULARITY);
    notice(&if options.scan {
        format!(
            "no sweep settings are stored in this archive yet; the scan records idle timeout {}, \
             absolute lifetime {} and granularity {}",
            limits.0,
            limits.1,
            Limit(Some(granularity))
        )
    } else {
        "no sweep settings are stored in this archive yet, so nothing is indexed to sweep: the \
         application records them with its first session write, and --scan adopts sessions \
         stored without timestamps"
            .to_owned()
    });
    granularity
}

/// Opens a Redis spec: the URL, and the prefix its fragment names (see [`Spec`]).
#[cfg(feature = "archive-redis")]
fn open_redis(spec: &str) -> crate::error::Result<crate::archive::redis::RedisArchive> {
    let (url, fragment) = spec.split_once('#').unwrap_or((spec, ""));
    let builder = crate::archive::redis::RedisArchive::builder(url);
    let builder = if let Some(prefix) = fragment.strip_prefix("legacy-prefix=") {
        builder.prefix(prefix).legacy_layout(true)
    } else if let Some(prefix) = fragment.strip_prefix("prefix=") {
        builder.prefix(prefix)
    } else {
        builder
    };
    builder.open()
}

/// The application's [`Sessions`] over `archive`, as far as the CLI can know it: the timeouts
/// the application recorded in the archive (see [`Sessions::stored_settings`]), or the defaults
/// where none are recorded.
fn stored_sessions(archive: Box<dyn Archive>) -> Result<Sessions, CliError> {
    let archive: Arc<dyn Archive> = Arc::from(archive);
    let stored = Sessions::new(Arc::clone(&archive)).stored_settings()?;
    let mut builder = Sessions::builder(archive);
    if let Some(stored) = stored {
        builder = builder
            .idle_timeout(stored.idle_timeout)
            .absolute_lifetime(stored.absolute_lifetime)
            .sweep_granularity(stored.sweep_granularity);
    }
    Ok(builder.build())
}

/// Calls `each` with every live session of `user` (see [`Sessions::user_sessions`]), judging
/// expiry by the timeouts the application stored; returns how many there were. This is
/// `session-archive user-sessions`.
///
/// # Errors
///
/// [`CliError::Archive`] with the archive's errors, or for an invalid user id.
///
/// # Examples
///
/// ```
/// use session_archive::{MemoryArchive, Sessions, cli};
///
/// let archive = std::sync::Arc::new(MemoryArchive::new());
/// let mut session = Sessions::new(archive.clone()).start(None, ())?;
/// session.set_user(Some("alice"));
/// session.save()?;
/// let mut seen = Vec::new();
/// let count = cli::user_sessions(Box::new(archive), "alice", &mut |s| seen.push(s.id().clone()))?;
/// assert_eq!((count, seen), (1, vec![session.id().clone()]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn user_sessions(
    archive: Box<dyn Archive>,
    user: &str,
    each: &mut dyn FnMut(&UserSession),
) -> Result<usize, CliError> {
    let sessions = stored_sessions(archive)?;
    let mut count = 0;
    for session in sessions.user_sessions(user) {
        each(&session?);
        count += 1;
    }
    Ok(count)
}

/// Destroys every session of `user` (see [`Sessions::revoke_user`]) and returns how many. This is
/// `session-archive revoke-user`.
///
/// # Errors
///
/// [`CliError::Archive`] with the archive's errors, or for an invalid user id.
///
/// # Examples
///
/// ```
/// use session_archive::{MemoryArchive, Sessions, cli};
///
/// let archive = std::sync::Arc::new(MemoryArchive::new());
/// let mut session = Sessions::new(archive.clone()).start(None, ())?;
/// session.set_user(Some("alice"));
/// session.save()?;
/// assert_eq!(cli::revoke_user(Box::new(archive), "alice")?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn revoke_user(archive: Box<dyn Archive>, user: &str) -> Result<usize, CliError> {
    Ok(stored_sessions(archive)?.revoke_user(user)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::memory::MemoryArchive;
    use crate::conformance::{Call, Hooked};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// The entry `Faulty` refuses to write while `broken` is set.
    const BAD_ENTRY: (&str, &str) = ("d0033", "k1");

    /// A memory archive that refuses to write [`BAD_ENTRY`] while `broken` is set, as a full
    /// disk would, and whose value of `corrupt_key` changes whenever it is read back.
    struct Faulty {
        archive: Hooked<Arc<MemoryArchive>>,
        inner: Arc<MemoryArchive>,
        broken: Arc<AtomicBool>,
    }

    impl Faulty {
        fn new(broken: bool, corrupt_key: Option<&'static str>) -> Faulty {
            let inner = Arc::new(MemoryArchive::new());
            let broken = Arc::new(AtomicBool::new(broken));
            let (stored, refusing) = (Arc::clone(&inner), Arc::clone(&broken));
            let archive = Hooked::new(Arc::clone(&inner), move |call| {
                let bad = match *call {
                    Call::Set { domain, key, .. } => (domain, key) == BAD_ENTRY,
                    Call::SetMany { entries } => entries
                        .iter()
                        .any(|&(domain, key, _)| (domain, key) == BAD_ENTRY),
                    _ => false,
                };
                if bad && refusing.load(Ordering::SeqCst) {
                    return Err(Error::Io {
                        path: PathBuf::from("disk"),
                        source: std::io::Error::other("disk full"),
                    });
                }
                if let Call::Get { domain, key } = *call
                    && corrupt_key == Some(key)
                    && let Some(mut value) = stored.get(domain, key)?
                {
                    value.push(b'!');
                    stored.set(domain, key, &value)?;
                }
                Ok(())
            });
            Faulty {
                archive,
                inner,
                broken,
            }
        }
    }

    fn source(domains: usize) -> MemoryArchive {
        let archive = MemoryArchive::new();
        for d in 0..domains {
            for k in 0..3 {
                let value = [u8::try_from(d % 256).expect("below 256"), 0, 0xff, k];
                archive
                    .set(&format!("d{d:04}"), &format!("k{k}"), &value)
                    .expect("memory set");
            }
        }
        archive
    }

    /// Every entry of an archive, read through the public API.
    fn entries(archive: &dyn Archive) -> crate::conformance::Model {
        crate::conformance::snapshot(archive).expect("read the archive")
    }

    #[test]
    fn batches_are_bounded_and_progress_is_reported() {
        let from = source(100);
        let to = MemoryArchive::new();
        let options = MigrateOptions {
            batch_entries: 7,
            list_page: 3,
            ..MigrateOptions::default()
        };
        let mut calls = Vec::new();
        let done = migrate(&from, &to, &options, &mut |m| calls.push(*m)).unwrap();
        assert_eq!((done.domains, done.keys, done.bytes), (100, 300, 1200));
        assert_eq!(calls.len(), 300 / 7 + 1);
        assert!(
            calls
                .windows(2)
                .all(|w| w[0].keys < w[1].keys || w[1].keys == 300)
        );
        assert_eq!(entries(&from), entries(&to));
    }

    #[test]
    fn entry_errors_name_sessions_by_their_fingerprint_never_their_id() {
        use crate::session::SessionId;

        let id = SessionId::generate();
        // A session's own domain, and an index entry whose key is the id.
        for (domain, key, shown) in [
            (
                id.as_str(),
                "session.json",
                format!("{}/session.json", id.fingerprint()),
            ),
            (
                "expiry-29000000",
                id.as_str(),
                format!("expiry-29000000/{}", id.fingerprint()),
            ),
        ] {
            let err = CliError::Mismatch {
                domain: domain.to_owned(),
                key: key.to_owned(),
            };
            let message = err.to_string();
            assert!(!message.contains(id.as_str()), "{message}");
            assert!(message.starts_with(&shown), "{message}");
        }
    }

    #[test]
    fn a_failed_write_names_the_entry_and_a_merge_rerun_completes_the_copy() {
        let from = source(50);
        let to = Faulty::new(true, None);
        let options = MigrateOptions {
            batch_entries: 16,
            ..MigrateOptions::default()
        };
        let err = migrate(&from, &to.archive, &options, &mut |_| {}).unwrap_err();
        match &err {
            CliError::Entry { domain, key, .. } => {
                assert_eq!((domain.as_str(), key.as_str()), BAD_ENTRY);
            }
            other => panic!("expected an entry error, got {other:?}"),
        }
        assert_eq!(
            Chain(&err).to_string(),
            "d0033/k1: cannot write it to the target: I/O error on disk: disk full"
        );
        // The batches before the failing one landed; the copy stopped part-way.
        let copied: usize = entries(&to.inner)
            .values()
            .map(std::collections::BTreeMap::len)
            .sum();
        assert!((96..=100).contains(&copied), "{copied} entries copied");

        to.broken.store(false, Ordering::SeqCst);
        assert!(matches!(
            migrate(&from, &to.archive, &options, &mut |_| {}),
            Err(CliError::TargetNotEmpty)
        ));
        let merge = MigrateOptions {
            merge: true,
            verify: true,
            ..options
        };
        migrate(&from, &to.archive, &merge, &mut |_| {}).unwrap();
        assert_eq!(entries(&from), entries(&to.inner));
    }

    #[test]
    fn verify_catches_a_value_that_reads_back_different() {
        let from = source(3);
        let to = Faulty::new(false, Some("k2"));
        let verify = MigrateOptions {
            verify: true,
            ..MigrateOptions::default()
        };
        match migrate(&from, &to.archive, &verify, &mut |_| {}).unwrap_err() {
            CliError::Mismatch { domain, key } => assert_eq!((&*domain, &*key), ("d0000", "k2")),
            other => panic!("expected a mismatch, got {other:?}"),
        }
        // Without verification the same copy reports success.
        let to = Faulty::new(false, Some("k2"));
        migrate(&from, &to.archive, &MigrateOptions::default(), &mut |_| {}).unwrap();
    }

    #[test]
    fn specs() {
        for bad in ["", "dir", "dir:", "redb:", "file:/x", "/tmp/x", "redis:x"] {
            assert!(
                matches!(Spec::parse(bad), Err(CliError::UnknownScheme { .. })),
                "{bad:?} parsed"
            );
        }
        assert_eq!(
            Spec::parse("dir:a:b").unwrap(),
            Spec::Dir(PathBuf::from("a:b"))
        );
    }

    #[test]
    fn limits_are_spelled_as_the_command_takes_them() {
        let spelled = |secs| Limit(Some(Duration::from_secs(secs))).to_string();
        assert_eq!(spelled(120 * 60), "2h");
        assert_eq!(spelled(90), "90s");
        assert_eq!(spelled(30 * 60), "30m");
        assert_eq!(spelled(7 * 86_400), "7d");
        assert_eq!(spelled(0), "0s");
        assert_eq!(Limit(None).to_string(), "off");
    }

    #[test]
    fn a_backend_left_out_is_named_with_its_feature() {
        for (spec, feature) in [
            ("dir:/srv/sessions", "archive-dir"),
            ("redb:/srv/sessions.redb", "archive-redb"),
            ("redis://127.0.0.1/0", "archive-redis"),
        ] {
            let err = Spec::parse(spec).unwrap().not_compiled();
            assert_eq!(
                err.to_string(),
                format!("{spec}: not compiled into this build; enable the Cargo feature {feature}")
            );
        }
    }

    #[cfg(not(feature = "archive-redis"))]
    #[test]
    fn opening_a_backend_left_out_says_so() {
        let spec = Spec::parse("redis://127.0.0.1/0").unwrap();
        assert!(matches!(
            spec.open(Access::Existing),
            Err(CliError::NotCompiled {
                feature: "archive-redis",
                ..
            })
        ));
    }
}
