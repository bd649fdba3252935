//! The crate's one error type, [`Error`], with the kinds of name problem it reports, and
//! [`Chain`], which shows an error with its causes.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::ids::{MAX_USER_LEN, fingerprint, redact};

/// A boxed lower-level error, kept as the [`source`](std::error::Error::source) of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Shorthand for a `Result` whose error is this crate's [`Error`].
///
/// # Examples
///
/// ```
/// use session_archive::{Archive, MemoryArchive, Result};
///
/// fn greeting(archive: &dyn Archive) -> Result<Option<Vec<u8>>> {
///     archive.get("greetings", "en")
/// }
/// # assert_eq!(greeting(&MemoryArchive::new()).unwrap(), None);
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether a rejected name was meant as a domain or as a key.
///
/// # Examples
///
/// ```
/// use session_archive::error::{Error, NameKind};
/// use session_archive::{Archive, MemoryArchive};
///
/// let err = MemoryArchive::new().get("..", "k").unwrap_err();
/// assert!(matches!(err, Error::InvalidName { kind: NameKind::Domain, .. }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// The first layer: a domain (for sessions, the session id).
    Domain,
    /// The second layer: a key inside a domain.
    Key,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Domain => "domain",
            NameKind::Key => "key",
        })
    }
}

/// Why a name broke the [name rule](crate::name::validate_name).
///
/// # Examples
///
/// ```
/// use session_archive::error::{Error, NameKind, NameProblem};
/// use session_archive::name::validate_name;
///
/// match validate_name(NameKind::Key, "a/b") {
///     Err(Error::InvalidName { problem, .. }) => assert_eq!(problem, NameProblem::Separator('/')),
///     other => panic!("unexpected {other:?}"),
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NameProblem {
    /// The name is the empty string.
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`](crate::name::MAX_NAME_LEN) bytes; holds its length.
    TooLong(usize),
    /// The name is `.` or `..`.
    DotName,
    /// The name starts with `.`; such names are reserved for backends' own files.
    LeadingDot,
    /// The name contains a path separator, `/` or `\`.
    Separator(char),
    /// The name contains a NUL or another control character.
    Control(char),
}

// NameProblem's Display, which quotes the length limit, lives with the name rule in `name`, so
// this module needs nothing from there.

/// Everything that can go wrong in this crate.
///
/// Variants carry the context needed to act on them (the name, the path, the session id) and keep
/// the lower-level error as their [`source`](std::error::Error::source); nothing is flattened to a
/// string. The enum is `#[non_exhaustive]`, so match with a wildcard arm.
///
/// Session ids are bearer tokens, so messages and `Debug` never show one whole: a session is
/// named by its [fingerprint](crate::SessionId::fingerprint), and so is every path component
/// shaped like a session id (the directory tree's `<root>/<id>/session.json`). The fields keep
/// the whole values for code that needs them.
///
/// # Examples
///
/// ```
/// use session_archive::{Archive, Error, MemoryArchive};
///
/// let archive = MemoryArchive::new();
/// match archive.set("../etc", "passwd", b"x") {
///     Err(Error::InvalidName { name, .. }) => assert_eq!(name, "../etc"),
///     other => panic!("expected InvalidName, got {other:?}"),
/// }
/// ```
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A domain or key broke the [name rule](crate::name::validate_name). Nothing was read or
    /// written.
    #[error("invalid {kind} name {name:?}: {problem}")]
    InvalidName {
        /// Whether the name was a domain or a key.
        kind: NameKind,
        /// The rejected name, as given.
        name: String,
        /// Which part of the rule it broke.
        problem: NameProblem,
    },

    /// A listing cursor was not one this backend hands out.
    #[error("invalid listing cursor {cursor:?}")]
    InvalidCursor {
        /// The rejected cursor.
        cursor: String,
    },

    /// A filesystem operation failed.
    #[error("I/O error on {}", Redacted(path))]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The archive is already held open by another handle, in this process or another one.
    #[error(
        "archive {} is already open by another handle or process",
        Redacted(path)
    )]
    AlreadyOpen {
        /// The archive's path.
        path: PathBuf,
        /// The backend's own error.
        #[source]
        source: BoxError,
    },

    /// Stored data is damaged or is not in this backend's format.
    #[error("archive {} is corrupted or not an archive", Redacted(path))]
    Corrupted {
        /// The archive's path.
        path: PathBuf,
        /// The backend's own error.
        #[source]
        source: BoxError,
    },

    /// The storage backend failed; `operation` says what was being done.
    #[error("{backend} backend failed to {operation}")]
    Backend {
        /// The backend's name, such as `"redb"` or `"redis"`.
        backend: &'static str,
        /// What was being done, such as `"commit a write"`.
        operation: &'static str,
        /// The backend's own error.
        #[source]
        source: BoxError,
    },

    /// A session's stored state could not be decoded as the state type. The bytes are left as they
    /// are.
    #[error("session {} holds corrupt state", fingerprint(id))]
    CorruptSession {
        /// The whole session id, a bearer token: messages and `Debug` show its
        /// [fingerprint](crate::SessionId::fingerprint) instead.
        id: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },

    /// A session's state could not be serialized.
    #[error("session {}: state could not be serialized", fingerprint(id))]
    Serialize {
        /// The whole session id, a bearer token: messages and `Debug` show its
        /// [fingerprint](crate::SessionId::fingerprint) instead.
        id: String,
        /// The serialization error.
        #[source]
        source: serde_json::Error,
    },

    /// A session's serialized state is over the configured limit. Nothing was written.
    #[error(
        "session {}: state is {size} bytes, over the limit of {limit}",
        fingerprint(id)
    )]
    StateTooLarge {
        /// The whole session id, a bearer token: messages and `Debug` show its
        /// [fingerprint](crate::SessionId::fingerprint) instead.
        id: String,
        /// The serialized size in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },

    /// A user id given to [`Session::set_user`](crate::Session::set_user) or the per-user calls
    /// is empty or longer than [`session::MAX_USER_LEN`](crate::session::MAX_USER_LEN) bytes.
    /// Nothing was written.
    #[error(
        "invalid user id: {len} bytes, where 1 to {} are allowed",
        MAX_USER_LEN
    )]
    InvalidUser {
        /// The user id's length in bytes.
        len: usize,
    },

    /// A batch named one key twice (see
    /// [`Archive::compare_and_swap_many`](crate::Archive::compare_and_swap_many)). Nothing was
    /// read or written.
    #[error(
        "the key {} of domain {} is named twice in one batch",
        redact(key),
        redact(domain)
    )]
    DuplicateKey {
        /// The domain of the batch.
        domain: String,
        /// The key named twice.
        key: String,
    },

    /// The archive does not implement this operation (see
    /// [`Archive::compare_and_swap_many`](crate::Archive::compare_and_swap_many)). Nothing was
    /// written.
    #[error("this archive does not support {operation}")]
    Unsupported {
        /// The operation asked for.
        operation: &'static str,
    },

    /// The session was destroyed (by this handle or another) or has expired, so it cannot be
    /// written any more.
    #[error(
        "session {} no longer exists (destroyed, moved to a new id, or expired)",
        fingerprint(id)
    )]
    SessionGone {
        /// The whole session id, a bearer token: messages and `Debug` show its
        /// [fingerprint](crate::SessionId::fingerprint) instead.
        id: String,
    },
}

/// Wraps an I/O failure with the path it happened on, keeping the `io::Error` as the source.
#[cfg_attr(
    not(feature = "archive-dir"),
    allow(dead_code, reason = "used by the filesystem backends")
)]
pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
    Error::Io {
        path: path.into(),
        source,
    }
}

impl fmt::Debug for Error {
    /// Like a derived `Debug`, but with session ids shown as fingerprints (see [`Error`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidName {
                kind,
                name,
                problem,
            } => f
                .debug_struct("InvalidName")
                .field("kind", kind)
                .field("name", name)
                .field("problem", problem)
                .finish(),
            Error::InvalidCursor { cursor } => f
                .debug_struct("InvalidCursor")
                .field("cursor", cursor)
                .finish(),
            Error::Io { path, source } => debug_path(f, "Io", path, source),
            Error::AlreadyOpen { path, source } => debug_path(f, "AlreadyOpen", path, source),
            Error::Corrupted { path, source } => debug_path(f, "Corrupted", path, source),
            Error::Backend {
                backend,
                operation,
                source,
            } => f
                .debug_struct("Backend")
                .field("backend", backend)
                .field("operation", operation)
                .field("source", source)
                .finish(),
            Error::CorruptSession { id, source } => debug_id(f, "CorruptSession", id, source),
            Error::Serialize { id, source } => debug_id(f, "Serialize", id, source),
            Error::StateTooLarge { id, size, limit } => f
                .debug_struct("StateTooLarge")
                .field("id", &fingerprint(id))
                .field("size", size)
                .field("limit", limit)
                .finish(),
            Error::InvalidUser { len } => f.debug_struct("InvalidUser").field("len", len).finish(),
            Error::DuplicateKey { domain, key } => f
                .debug_struct("DuplicateKey")
                .field("domain", &redact(domain))
                .field("key", &redact(key))
                .finish(),
            Error::Unsupported { operation } => f
                .debug_struct("Unsupported")
                .field("operation", operation)
                .finish(),
            Error::SessionGone { id } => f
                .debug_struct("SessionGone")
                .field("id", &fingerprint(id))
                .finish(),
        }
    }
}

/// The `Debug` of a variant holding a path and a source, with the path [`Redacted`].
fn debug_path(
    f: &mut fmt::Formatter<'_>,
    variant: &str,
    path: &Path,
    source: &dyn fmt::Debug,
) -> fmt::Result {
    f.debug_struct(variant)
        .field("path", &Redacted(path).to_string())
        .field("source", source)
        .finish()
}

/// The `Debug` of a variant holding a session id and a source, with the id as its fingerprint.
fn debug_id(
    f: &mut fmt::Formatter<'_>,
    variant: &str,
    id: &str,
    source: &dyn fmt::Debug,
) -> fmt::Result {
    f.debug_struct(variant)
        .field("id", &fingerprint(id))
        .field("source", source)
        .finish()
}

/// Displays an error and every error in its [`source`](std::error::Error::source) chain on one
/// line, joined by `": "`: `outer: inner: innermost`.
///
/// An error's own message leaves its causes out (this crate's errors keep the lower error as
/// their source instead of repeating its text), so a log line or a message to a person shows
/// the chain. The axum layer logs failures this way, and the `session-archive` command prints
/// them so.
///
/// # Examples
///
/// ```
/// use session_archive::error::{Chain, Error};
///
/// let err = Error::Io {
///     path: "/data/sessions.redb".into(),
///     source: std::io::Error::other("disk full"),
/// };
/// assert_eq!(err.to_string(), "I/O error on /data/sessions.redb");
/// assert_eq!(Chain(&err).to_string(), "I/O error on /data/sessions.redb: disk full");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

/// Displays a path with every id in it replaced by its fingerprint (see [`redact`]).
struct Redacted<'a>(&'a Path);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0.to_string_lossy()))
    }
}

#[cfg(test)]
mod tests {
    use super::{Chain, Error};

    const ID: &str = "0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2";

    fn hides_the_id(err: &Error) {
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains(ID), "{shown}");
            assert!(!shown.contains("6bb9-405f"), "{shown}");
            assert!(shown.contains('#'), "{shown}");
        }
    }

    #[test]
    fn messages_and_debug_name_sessions_by_fingerprint() {
        let json = || serde_json::from_slice::<u8>(b"x").unwrap_err();
        hides_the_id(&Error::SessionGone { id: ID.into() });
        hides_the_id(&Error::CorruptSession {
            id: ID.into(),
            source: json(),
        });
        hides_the_id(&Error::Serialize {
            id: ID.into(),
            source: json(),
        });
        hides_the_id(&Error::StateTooLarge {
            id: ID.into(),
            size: 2,
            limit: 1,
        });
        let io = Error::Io {
            path: format!("/srv/.gen/sessions/{ID}/.session.json.tmp").into(),
            source: std::io::Error::other("disk full"),
        };
        hides_the_id(&io);
        assert!(
            io.to_string()
                .starts_with("I/O error on /srv/.gen/sessions/#")
        );
        assert!(io.to_string().ends_with("/.session.json.tmp"));
    }

    #[test]
    fn paths_without_ids_are_shown_as_they_are() {
        let err = Error::Io {
            path: "/data/ab/0d0d0c2f-6bb9/sessions.redb".into(),
            source: std::io::Error::other("gone"),
        };
        assert_eq!(
            err.to_string(),
            "I/O error on /data/ab/0d0d0c2f-6bb9/sessions.redb"
        );
    }

    #[test]
    fn chain_shows_every_source_in_order() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot open the archive")]
        struct Outer(#[source] Error);

        let err = Outer(Error::Io {
            path: "/data/sessions.redb".into(),
            source: std::io::Error::other("disk full"),
        });
        assert_eq!(
            Chain(&err).to_string(),
            "cannot open the archive: I/O error on /data/sessions.redb: disk full"
        );
        let alone = std::io::Error::other("disk full");
        assert_eq!(Chain(&alone).to_string(), "disk full");
    }
}
