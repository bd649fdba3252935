//! [`Spec`]: naming an archive on the command line, and opening it.

use std::fmt;
use std::path::{Path, PathBuf};

use super::error::CliError;
use crate::archive::Archive;

/// An archive named on the command line: `dir:PATH`, `redb:PATH`, `redis://HOST:PORT/DB`
/// (also `rediss://` and `redis+unix://`) or `postgres://USER@HOST:PORT/DATABASE` (also
/// `postgresql://`).
///
/// A Redis Cluster is `redis+cluster://HOST:PORT,HOST:PORT,…` (some of its nodes, the seeds of
/// [`RedisArchive::cluster`](crate::RedisArchive::cluster)), and a master that Redis Sentinel
/// monitors is `redis+sentinel://HOST:PORT,HOST:PORT,…/MASTER` (the sentinels and the master's
/// name, for [`RedisArchive::sentinel`](crate::RedisArchive::sentinel)). Both connect without
/// TLS or a password.
///
/// A Redis URL may end in a fragment naming the archive's
/// [prefix](crate::archive::redis::RedisArchiveBuilder::prefix):
/// `redis://127.0.0.1/0#prefix=myapp`, or `#legacy-prefix=myapp:` for data stored in the
/// [legacy layout](crate::archive::redis::RedisArchiveBuilder::legacy_layout)
/// (`#legacy-prefix=` for the empty prefix). Without one it is the empty prefix in the current
/// layout.
///
/// A PostgreSQL URL is what [`PostgresArchive::connect`](crate::PostgresArchive::connect) takes
/// (`?sslmode=verify-full&sslrootcert=PATH` and the other libpq options included), and may end
/// in a fragment naming the [table](crate::archive::postgres::PostgresArchiveBuilder::table):
/// `postgres://app@db/app#table=sessions.archive`. Without one it is
/// [`DEFAULT_TABLE`](crate::archive::postgres::DEFAULT_TABLE).
///
/// A spec shows its URL without the password, if it has one: error messages and progress
/// name the archive, never the credentials.
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
/// let cluster = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001#prefix=myapp";
/// assert!(matches!(Spec::parse(cluster)?, Spec::Redis(_)));
/// let sentinel = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/sessions#prefix=myapp";
/// assert!(matches!(Spec::parse(sentinel)?, Spec::Redis(_)));
/// let postgres = Spec::parse("postgres://app:secret@db.internal/app#table=sessions.archive")?;
/// assert!(matches!(postgres, Spec::Postgres(_)));
/// assert_eq!(postgres.to_string(), "postgres://app:***@db.internal/app#table=sessions.archive");
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
    /// A [`PostgresArchive`](crate::PostgresArchive) on the database at the URL (feature
    /// `archive-postgres`).
    Postgres(String),
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
            spec: without_password(text),
        };
        if [
            "redis://",
            "rediss://",
            "redis+unix://",
            CLUSTER_SCHEME,
            SENTINEL_SCHEME,
        ]
        .iter()
        .any(|scheme| text.starts_with(scheme))
        {
            return Ok(Spec::Redis(text.to_owned()));
        }
        if POSTGRES_SCHEMES
            .iter()
            .any(|scheme| text.starts_with(scheme))
        {
            return Ok(Spec::Postgres(text.to_owned()));
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
            feature = "archive-redis",
            feature = "archive-postgres"
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
            #[cfg(feature = "archive-postgres")]
            Spec::Postgres(url) => open_postgres(url).map(boxed),
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
            feature = "archive-redis",
            feature = "archive-postgres"
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
                Spec::Postgres(_) => "archive-postgres",
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
            Spec::Redis(_) | Spec::Postgres(_) => Ok(None),
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
            Spec::Redis(url) | Spec::Postgres(url) => f.write_str(&without_password(url)),
        }
    }
}

/// The scheme of a Redis Cluster spec: seed nodes, comma-separated.
const CLUSTER_SCHEME: &str = "redis+cluster://";
/// The scheme of a Sentinel spec: sentinels, comma-separated, then `/` and the master's name.
const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// The schemes of a PostgreSQL spec.
const POSTGRES_SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];

/// `url` with the password of its user info, if any, shown as `***`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, hosts)) if user_info.contains(':') => {
            let user = user_info
                .split_once(':')
                .map_or(user_info, |(user, _)| user);
            format!("{scheme}://{user}:***@{hosts}{path}")
        }
        _ => url.to_owned(),
    }
}

/// Opens a PostgreSQL spec: the URL, and the table its fragment names (see [`Spec`]).
#[cfg(feature = "archive-postgres")]
fn open_postgres(spec: &str) -> crate::error::Result<crate::PostgresArchive> {
    let (url, fragment) = spec.split_once('#').unwrap_or((spec, ""));
    let builder = crate::PostgresArchive::builder(url);
    match fragment.strip_prefix("table=") {
        Some(table) => builder.table(table).connect(),
        None => builder.connect(),
    }
}

/// Opens a Redis spec: the URL, and the prefix its fragment names (see [`Spec`]).
#[cfg(feature = "archive-redis")]
fn open_redis(spec: &str) -> crate::error::Result<crate::archive::redis::RedisArchive> {
    use crate::archive::redis::RedisArchive;
    let (url, fragment) = spec.split_once('#').unwrap_or((spec, ""));
    let urls = |hosts: &str| -> Vec<String> {
        hosts
            .split(',')
            .filter(|host| !host.is_empty())
            .map(|host| format!("redis://{host}"))
            .collect()
    };
    let builder = if let Some(hosts) = url.strip_prefix(CLUSTER_SCHEME) {
        RedisArchive::cluster(urls(hosts.trim_end_matches('/')))
    } else if let Some(rest) = url.strip_prefix(SENTINEL_SCHEME) {
        let (hosts, master) = rest.split_once('/').unwrap_or((rest, ""));
        RedisArchive::sentinel(master, urls(hosts))
    } else {
        RedisArchive::builder(url)
    };
    let builder = if let Some(prefix) = fragment.strip_prefix("legacy-prefix=") {
        builder.prefix(prefix).legacy_layout(true)
    } else if let Some(prefix) = fragment.strip_prefix("prefix=") {
        builder.prefix(prefix)
    } else {
        builder
    };
    builder.open()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_backend_left_out_is_named_with_its_feature() {
        for (spec, feature) in [
            ("dir:/srv/sessions", "archive-dir"),
            ("redb:/srv/sessions.redb", "archive-redb"),
            ("redis://127.0.0.1/0", "archive-redis"),
            ("postgres://app@127.0.0.1/app", "archive-postgres"),
        ] {
            let err = Spec::parse(spec).unwrap().not_compiled();
            assert_eq!(
                err.to_string(),
                format!("{spec}: not compiled into this build; enable the Cargo feature {feature}")
            );
        }
    }

    #[test]
    fn passwords_never_show() {
        for (url, shown) in [
            (
                "postgres://app:s3cr3t@db:5432/app",
                "postgres://app:***@db:5432/app",
            ),
            (
                "postgresql://app:p@ss@db/app?sslmode=require",
                "postgresql://app:***@db/app?sslmode=require",
            ),
            (
                "redis://:hunter2@127.0.0.1/0#prefix=x",
                "redis://:***@127.0.0.1/0#prefix=x",
            ),
            ("postgres://app@db/app", "postgres://app@db/app"),
            ("redis://127.0.0.1/0", "redis://127.0.0.1/0"),
        ] {
            assert_eq!(Spec::parse(url).unwrap().to_string(), shown);
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
