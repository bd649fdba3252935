//! A two-layer byte archive, `domain -> key -> bytes`, with crash-safe backends, and typed web
//! sessions built on it.
//!
//! The [`Archive`] trait has six primitives (`get`, `set`, `has`, `remove`, `has_domain`,
//! `remove_domain`) plus an atomic compare-and-swap, batch writes and removals, and paged
//! listing. Every backend applies the same [name rule](validate_name) and passes the same
//! [`conformance`] suite, so data moves between backends without loss.
//!
//! ```
//! use session_archive::{Archive, MemoryArchive};
//!
//! let archive = MemoryArchive::new();
//! archive.set("0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2", "session.json", br#"{"Name":"world"}"#)?;
//! assert!(archive.has_domain("0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2")?);
//! assert!(archive.get("..", "session.json").is_err()); // hostile names never reach storage
//! # Ok::<(), session_archive::Error>(())
//! ```
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `archive-redb` | yes | `RedbArchive`: one redb file, the embedded default |
//! | `archive-dir` | no | `DirArchive`: the original `<root>/<domain>/<key>` directory layout |
//! | `archive-redis` | no | `RedisArchive`: a Redis or Valkey server shared by many app instances |
//! | `conformance` | no | the [`conformance`] suite and model test, for checking any archive |
//! | `fuzzing` | no | `conformance::fuzz`: the fuzz targets' bodies (see the README's Fuzzing section) |
//! | `axum` | no | [axum 0.8 integration](crate::axum): a session layer and extractor |
//! | `tower-sessions` | no | [`tower_sessions::ArchiveStore`]: a tower-sessions 0.15 store over any archive |
//! | `cli` | no | the `session-archive` command-line tool, and the `cli` module behind it |

// The README's Rust examples run as doctests, so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod archive;
#[cfg(feature = "axum")]
pub mod axum;
#[cfg(all(feature = "cli", unix))]
pub mod cli;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod error;
mod name;
mod session;
#[cfg(feature = "tower-sessions")]
pub mod tower_sessions;

#[cfg(all(feature = "archive-dir", unix))]
pub use crate::archive::dir::DirArchive;
pub use crate::archive::memory::MemoryArchive;
#[cfg(feature = "archive-redb")]
pub use crate::archive::redb::{Durability, RedbArchive, RedbArchiveBuilder};
#[cfg(feature = "archive-redis")]
pub use crate::archive::redis::{RedisArchive, RedisArchiveBuilder};
pub use crate::archive::{Archive, ArchiveExt, Blocking, DEFAULT_PAGE_SIZE, Names, Page};
pub use crate::error::{BoxError, Error, NameKind, NameProblem, Result};
pub use crate::name::{MAX_NAME_LEN, validate_domain, validate_entry, validate_name};
pub use crate::session::clock::{Clock, ManualClock, SystemClock};
pub use crate::session::id::SessionId;
pub use crate::session::{
    CORRUPT_DOMAIN, CookieAction, DEFAULT_ABSOLUTE_LIFETIME, DEFAULT_COOKIE_NAME,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_STATE_SIZE, DEFAULT_SWEEP_GRANULARITY, MAX_USER_LEN,
    META_KEY, OnCorrupt, STATE_KEY, Session, Sessions, SessionsBuilder, StoredSettings,
    UserSession,
};
