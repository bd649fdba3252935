//! The library side of the `session-archive` command (feature `cli`): naming an archive by a
//! spec, and the migration, statistics and sweep the command runs.
//!
//! The binary only parses arguments and prints; everything here is usable, and tested, without
//! it.
//!
//! ```
//! use session_archive::cli::{self, Access, MigrateOptions, Spec};
//!
//! let dir = tempfile::tempdir()?;
//! let from = Spec::parse(&format!("dir:{}", dir.path().join("sessions").display()))?;
//! let to = Spec::parse(&format!("redb:{}", dir.path().join("sessions.redb").display()))?;
//! let source = from.open(Access::CreateIfMissing)?;
//! source.set("0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2", "session.json", b"{}")?;
//!
//! let copied = cli::migrate(&*source, &*to.open(Access::CreateIfMissing)?, &MigrateOptions::default(), &mut |_| {})?;
//! assert_eq!(copied.keys, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::archive::{Archive, ArchiveExt};
use crate::{DirArchive, RedbArchive, RedisArchive, Sessions};

/// What can go wrong in the command, beyond the archive's own [`Error`](crate::Error)s.
///
/// Each variant names what it is about (the spec, the path, the domain and key) and keeps the
/// archive error as its [`source`](std::error::Error::source); [`one_line`] prints the whole
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
        source: crate::Error,
    },

    /// A migration's target already holds data and `merge` was not asked for.
    #[error("the target is not empty; pass --merge to copy into it anyway")]
    TargetNotEmpty,

    /// Reading or writing one entry failed.
    #[error("{domain}/{key}: cannot {operation}")]
    Entry {
        /// What was being done: `"read it from the source"` or `"write it to the target"`.
        operation: &'static str,
        /// The entry's domain.
        domain: String,
        /// The entry's key.
        key: String,
        /// Why.
        #[source]
        source: crate::Error,
    },

    /// Verification read back a different value (or none) from the target.
    #[error("{domain}/{key}: the target holds a different value after copying")]
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

    /// A duration argument is not a number followed by `s`, `m`, `h` or `d`.
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
    Archive(#[from] crate::Error),
}

/// Formats `err` and every error in its [`source`](std::error::Error::source) chain on one
/// line, joined by `": "`, as the command prints them.
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
pub fn one_line(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        line.push_str(": ");
        line.push_str(&err.to_string());
        source = err.source();
    }
    line
}

/// An archive named on the command line: `dir:PATH`, `redb:PATH` or `redis://HOST:PORT/DB`
/// (also `rediss://` and `redis+unix://`).
///
/// A Redis URL may end in a fragment naming the archive's
/// [prefix](crate::RedisArchiveBuilder::prefix): `redis://127.0.0.1/0#prefix=myapp`, or
/// `#legacy-prefix=myapp:` for data stored in the
/// [legacy layout](crate::RedisArchiveBuilder::legacy_layout) (`#legacy-prefix=` for the empty
/// prefix). Without one it is the empty prefix in the current layout.
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
    /// A [`DirArchive`] rooted at the path.
    Dir(PathBuf),
    /// A [`RedbArchive`] in the file at the path.
    Redb(PathBuf),
    /// A [`RedisArchive`] on the server at the URL.
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
/// let spec = Spec::parse(&format!("dir:{}", dir.path().join("new").display()))?;
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
    pub fn open(&self, access: Access) -> Result<Box<dyn Archive>, CliError> {
        if let (Spec::Dir(path) | Spec::Redb(path), Access::Existing) = (self, access) {
            match std::fs::symlink_metadata(path) {
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    return Err(CliError::Missing {
                        spec: self.to_string(),
                        path: path.clone(),
                    });
                }
                // Anything else (not a directory, permissions) is the backend's to report.
                _ => {}
            }
        }
        let opened: crate::Result<Box<dyn Archive>> = match self {
            Spec::Dir(path) => DirArchive::open(path).map(|a| Box::new(a) as Box<dyn Archive>),
            Spec::Redb(path) => RedbArchive::open(path).map(|a| Box::new(a) as Box<dyn Archive>),
            Spec::Redis(url) => open_redis(url).map(|a| Box::new(a) as Box<dyn Archive>),
        };
        opened.map_err(|source| CliError::Open {
            spec: self.to_string(),
            source,
        })
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
    /// let dir = tempfile::tempdir()?;
    /// let spec = Spec::parse(&format!("dir:{}", dir.path().display()))?;
    /// spec.open(Access::Existing)?.set("d", "k", b"12345")?;
    /// assert_eq!(spec.disk_size()?, Some(5)); // the empty lock file adds nothing
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
pub fn stats(archive: &dyn Archive) -> crate::Result<Stats> {
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
/// use session_archive::cli::MigrateOptions;
///
/// let options = MigrateOptions { merge: true, ..MigrateOptions::default() };
/// assert_eq!(options.batch_entries, 1000);
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
/// let done = session_archive::cli::Migrated::default();
/// assert_eq!(done.keys, 0);
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

/// Parses a duration written as a whole number and one unit: `s`, `m`, `h` or `d`
/// (`90s`, `30m`, `12h`, `7d`).
///
/// # Errors
///
/// [`CliError::Duration`] for anything else, including a missing unit and an overflow.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use session_archive::cli::parse_duration;
///
/// assert_eq!(parse_duration("30m")?, Duration::from_secs(30 * 60));
/// assert_eq!(parse_duration("7d")?, Duration::from_secs(7 * 86_400));
/// assert!(parse_duration("30").is_err());
/// assert!(parse_duration("1.5h").is_err());
/// # Ok::<(), session_archive::cli::CliError>(())
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, CliError> {
    let invalid = || CliError::Duration {
        text: text.to_owned(),
    };
    let split = text.len().checked_sub(1).ok_or_else(invalid)?;
    let (number, unit) = (text.get(..split), text.get(split..));
    let unit = match unit {
        Some("s") => 1,
        Some("m") => 60,
        Some("h") => 60 * 60,
        Some("d") => 24 * 60 * 60,
        _ => return Err(invalid()),
    };
    let number = number.ok_or_else(invalid)?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let count: u64 = number.parse().map_err(|_| invalid())?;
    count
        .checked_mul(unit)
        .map(Duration::from_secs)
        .ok_or_else(invalid)
}

/// A session time limit on the command line: a duration (see [`parse_duration`]) or `off`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use session_archive::cli::Limit;
///
/// assert_eq!("1h".parse::<Limit>()?, Limit(Some(Duration::from_secs(3600))));
/// assert_eq!("off".parse::<Limit>()?, Limit(None));
/// # Ok::<(), session_archive::cli::CliError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Option<Duration>);

impl FromStr for Limit {
    type Err = CliError;

    fn from_str(text: &str) -> Result<Limit, CliError> {
        if text == "off" {
            Ok(Limit(None))
        } else {
            parse_duration(text).map(|limit| Limit(Some(limit)))
        }
    }
}

impl fmt::Display for Limit {
    /// Formats as [`parse_duration`] reads it, in the largest unit that divides the duration
    /// (`90s`, `30m`, `12h`, `7d`), or `off`.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::cli::Limit;
    ///
    /// assert_eq!("120m".parse::<Limit>()?.to_string(), "2h");
    /// assert_eq!("off".parse::<Limit>()?.to_string(), "off");
    /// # Ok::<(), session_archive::cli::CliError>(())
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("off"),
            Some(duration) => f.write_str(&format_duration(duration)),
        }
    }
}

/// Formats a duration as [`parse_duration`] reads it, in the largest unit that divides it.
fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (count, unit) = [(86_400, "d"), (3600, "h"), (60, "m")]
        .into_iter()
        .find(|&(unit, _)| secs != 0 && secs.is_multiple_of(unit))
        .map_or((secs, "s"), |(unit, name)| (secs / unit, name));
    format!("{count}{unit}")
}

/// How [`sweep`] sweeps. By default it judges expiry by the settings the application recorded
/// in the archive (see [`Sessions::stored_settings`]); a field set here overrides them.
///
/// # Examples
///
/// ```
/// use session_archive::cli::SweepOptions;
///
/// let options = SweepOptions::default();
/// assert_eq!((options.idle, options.absolute, options.granularity), (None, None, None));
/// assert!(!options.override_stored && !options.scan);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepOptions {
    /// The idle timeout to judge by, as
    /// [`SessionsBuilder::idle_timeout`](crate::SessionsBuilder::idle_timeout); `None` for the
    /// stored one (or, where none is stored, [`DEFAULT_IDLE_TIMEOUT`](crate::DEFAULT_IDLE_TIMEOUT)).
    pub idle: Option<Limit>,
    /// The absolute lifetime to judge by, as
    /// [`SessionsBuilder::absolute_lifetime`](crate::SessionsBuilder::absolute_lifetime); `None`
    /// for the stored one (or [`DEFAULT_ABSOLUTE_LIFETIME`](crate::DEFAULT_ABSOLUTE_LIFETIME)).
    pub absolute: Option<Limit>,
    /// The index's bucket width, for an archive that has none recorded yet (where `scan` then
    /// records it); a recorded width always wins, as for every
    /// [`Sessions`](crate::SessionsBuilder::sweep_granularity). `None` for
    /// [`DEFAULT_SWEEP_GRANULARITY`](crate::DEFAULT_SWEEP_GRANULARITY).
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
/// from the stored one without `override_stored` (nothing is swept); otherwise the archive's
/// errors.
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
/// let shorter = SweepOptions { idle: Some("1m".parse()?), ..SweepOptions::default() };
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
    let idle = setting(
        "--idle",
        "idle timeout",
        options.idle,
        stored.map(|s| Limit(s.idle_timeout)),
        Limit(Some(crate::DEFAULT_IDLE_TIMEOUT)),
        options.override_stored,
        notice,
    )?;
    let absolute = setting(
        "--absolute",
        "absolute lifetime",
        options.absolute,
        stored.map(|s| Limit(s.absolute_lifetime)),
        Limit(Some(crate::DEFAULT_ABSOLUTE_LIFETIME)),
        options.override_stored,
        notice,
    )?;
    let granularity = if let Some(stored) = stored {
        if let Some(given) = options.granularity
            && given.as_secs().max(1) != stored.sweep_granularity.as_secs()
        {
            notice(&format!(
                "--granularity {} is ignored: the index of this archive is recorded with {}",
                format_duration(given),
                format_duration(stored.sweep_granularity)
            ));
        }
        stored.sweep_granularity
    } else {
        let granularity = options
            .granularity
            .unwrap_or(crate::DEFAULT_SWEEP_GRANULARITY);
        notice(&if options.scan {
            format!(
                "no sweep settings are stored in this archive yet; the scan records idle \
                 timeout {idle}, absolute lifetime {absolute} and granularity {}",
                format_duration(granularity)
            )
        } else {
            "no sweep settings are stored in this archive yet, so nothing is indexed to \
             sweep: the application records them with its first session write, and --scan \
             adopts sessions stored without timestamps"
                .to_owned()
        });
        granularity
    };
    if idle.0.is_none() && absolute.0.is_none() {
        notice("with no idle timeout and no absolute lifetime no session expires: nothing to do");
        return Ok(Swept::default());
    }
    let sessions = Sessions::builder(archive)
        .idle_timeout(idle.0)
        .absolute_lifetime(absolute.0)
        .sweep_granularity(granularity)
        .build();
    let adopted = if options.scan {
        Some(sessions.adopt_legacy(&mut *progress)?)
    } else {
        None
    };
    Ok(Swept {
        removed: sessions.sweep()?,
        adopted,
    })
}

/// Chooses one timeout for [`sweep`]: the one given, if any (refused when it differs from the
/// stored one and `overriding` is not set, announced when it is), else the stored one, else the
/// default.
fn setting(
    flag: &'static str,
    name: &'static str,
    given: Option<Limit>,
    stored: Option<Limit>,
    default: Limit,
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
        (None, stored) => Ok(stored.unwrap_or(default)),
    }
}

/// Opens a Redis spec: the URL, and the prefix its fragment names (see [`Spec`]).
fn open_redis(spec: &str) -> crate::Result<RedisArchive> {
    let (url, fragment) = spec.split_once('#').unwrap_or((spec, ""));
    let builder = RedisArchive::builder(url);
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
    each: &mut dyn FnMut(&crate::UserSession),
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
    use crate::MemoryArchive;
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
                    return Err(crate::Error::Io {
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
            one_line(&err),
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
    fn durations() {
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in [
            "",
            "s",
            "h1",
            "1w",
            "-1h",
            "+1h",
            "1 h",
            "1hh",
            "99999999999999999999d",
            "1é",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
        assert!("never".parse::<Limit>().is_err());
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
}
