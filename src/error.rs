//! The crate's one error type.

use std::fmt;
use std::path::PathBuf;

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
/// use session_archive::{Archive, Error, MemoryArchive, NameKind};
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

/// Why a name broke the [name rule](crate::validate_name).
///
/// # Examples
///
/// ```
/// use session_archive::{NameProblem, validate_name, NameKind, Error};
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
    /// The name is longer than [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes; holds its length.
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

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameProblem::Empty => f.write_str("it is empty"),
            NameProblem::TooLong(len) => write!(
                f,
                "it is {len} bytes long, over the limit of {}",
                crate::MAX_NAME_LEN
            ),
            NameProblem::DotName => f.write_str("`.` and `..` are not names"),
            NameProblem::LeadingDot => f.write_str("it starts with `.`, which is reserved"),
            NameProblem::Separator(c) => write!(f, "it contains the path separator {c:?}"),
            NameProblem::Control(c) => write!(f, "it contains the control character {c:?}"),
        }
    }
}

/// Everything that can go wrong in this crate.
///
/// Variants carry the context needed to act on them (the name, the path, the session id) and keep
/// the lower-level error as their [`source`](std::error::Error::source); nothing is flattened to a
/// string. The enum is `#[non_exhaustive]`, so match with a wildcard arm.
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
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A domain or key broke the [name rule](crate::validate_name). Nothing was read or written.
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
    #[error("I/O error on {}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The archive is already held open by another handle, in this process or another one.
    #[error("archive {} is already open by another handle or process", path.display())]
    AlreadyOpen {
        /// The archive's path.
        path: PathBuf,
        /// The backend's own error.
        #[source]
        source: BoxError,
    },

    /// Stored data is damaged or is not in this backend's format.
    #[error("archive {} is corrupted or not an archive", path.display())]
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
    #[error("session {id} holds corrupt state")]
    CorruptSession {
        /// The session id.
        id: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },

    /// A session's state could not be serialized.
    #[error("session {id}: state could not be serialized")]
    Serialize {
        /// The session id.
        id: String,
        /// The serialization error.
        #[source]
        source: serde_json::Error,
    },

    /// A session's serialized state is over the configured limit. Nothing was written.
    #[error("session {id}: state is {size} bytes, over the limit of {limit}")]
    StateTooLarge {
        /// The session id.
        id: String,
        /// The serialized size in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },

    /// The session was destroyed (by this handle or another) or has expired, so it cannot be
    /// written any more.
    #[error("session {id} no longer exists (destroyed or expired)")]
    SessionGone {
        /// The session id.
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
