//! Server-side web sessions on a crash-safe byte store: typed sessions, each a serde state stored
//! as JSON, over an [`Archive`], a two-layer store `domain -> key -> bytes` with four backends.
//!
//! # Layers
//!
//! Data flows down, never up; each layer uses only the public API of the one below.
//!
//! | layer | what it does | read |
//! |---|---|---|
//! | web | axum layer and actix-web middleware, sharing one `Session<T>` extractor; tower-sessions and actix-session stores | [`web`], [`axum`], [`actix`], [`tower_sessions`], [`actix_session`] |
//! | typed sessions | start from a cookie, save, load, update, regenerate, destroy; expiry and the sweep; sessions by user | [`session`] ([`Sessions`], [`Session`]) |
//! | archive | six primitives, compare-and-swap, batches, paged listing; one name rule for every backend | [`archive`] ([`Archive`]), [`name`], [`error`] |
//! | backends | where the bytes live, and what each guarantees | [`archive::memory`], [`archive::redb`], [`archive::dir`], [`archive::redis`], [`archive::postgres`] |
//!
//! Beside them, on the same public API: the [`conformance`] suite that every backend passes, and
//! the `session-archive` command, whose library side is [`cli`]. Running them in production
//! (migration, sweeping, backups) is described in the repository's `docs/OPERATIONS.md`.
//!
//! A session is one domain, named by its id, holding its state under the key `session.json`:
//!
//! ```
//! use std::sync::Arc;
//! use session_archive::{Archive, MemoryArchive, Sessions};
//!
//! let archive = Arc::new(MemoryArchive::new());
//! let sessions = Sessions::new(Arc::clone(&archive));
//! let mut session = sessions.start(None, String::new())?;
//! *session = "World".into();
//! session.save()?;
//!
//! let stored = archive.get(session.id().as_str(), "session.json")?;
//! assert_eq!(stored.as_deref(), Some(&br#""World""#[..]));
//! # Ok::<(), session_archive::Error>(())
//! ```
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `archive-redb` | yes | [`RedbArchive`]: one redb file, the embedded default |
//! | `archive-dir` | no | [`DirArchive`]: the original `<root>/<domain>/<key>` directory layout (Unix) |
//! | `archive-redis` | no | [`RedisArchive`]: a Redis or Valkey server shared by many app instances |
//! | `archive-postgres` | no | [`PostgresArchive`]: a table in a PostgreSQL database shared by many app instances |
//! | `axum` | no | [axum 0.8 integration](crate::axum): a session layer and extractor |
//! | `actix` | no | [actix-web 4 integration](crate::actix): a session middleware and the same extractor ([`web`]) |
//! | `actix-session` | no | [`actix_session::ArchiveStore`]: an actix-session 0.11 store over any archive |
//! | `tower-sessions` | no | [`tower_sessions::ArchiveStore`]: a tower-sessions 0.15 store over any archive |
//! | `cli` | no | the `session-archive` command, with every persistent backend (its library side, [`cli`], needs no feature) |
//! | `conformance` | no | the [`conformance`] suite and model test, for checking any archive |
//! | `fuzzing` | no | [`conformance::fuzz`]: the fuzz targets' bodies, shared by `fuzz/` and the seed-replay test |

// The README's Rust examples run as doctests, so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(feature = "actix")]
pub mod actix;
#[cfg(feature = "actix-session")]
pub mod actix_session;
pub mod archive;
#[cfg(feature = "axum")]
pub mod axum;
#[cfg(unix)]
pub mod cli;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod error;
mod ids;
pub mod name;
#[cfg(any(feature = "tower-sessions", feature = "actix-session"))]
mod records;
pub mod session;
#[cfg(feature = "tower-sessions")]
pub mod tower_sessions;
#[cfg(any(feature = "axum", feature = "actix"))]
pub mod web;

#[cfg(all(feature = "archive-dir", unix))]
pub use crate::archive::dir::DirArchive;
pub use crate::archive::memory::MemoryArchive;
#[cfg(feature = "archive-postgres")]
pub use crate::archive::postgres::PostgresArchive;
#[cfg(feature = "archive-redb")]
pub use crate::archive::redb::RedbArchive;
#[cfg(feature = "archive-redis")]
pub use crate::archive::redis::RedisArchive;
pub use crate::archive::{Archive, ArchiveExt};
pub use crate::error::{Error, Result};

// The root paths these items had before they got a module home; hidden, so the documentation
// shows each item once, where it lives.
#[cfg(feature = "archive-redb")]
#[doc(hidden)]
pub use crate::archive::redb::{Durability, RedbArchiveBuilder};
#[cfg(feature = "archive-redis")]
#[doc(hidden)]
pub use crate::archive::redis::RedisArchiveBuilder;
#[doc(hidden)]
pub use crate::archive::{Blocking, DEFAULT_PAGE_SIZE, Names, Page};
#[doc(hidden)]
pub use crate::error::{BoxError, NameKind, NameProblem};
#[doc(hidden)]
pub use crate::name::{MAX_NAME_LEN, validate_domain, validate_entry, validate_name};
#[doc(hidden)]
pub use crate::session::{
    CORRUPT_DOMAIN, Clock, CookieAction, DEFAULT_ABSOLUTE_LIFETIME, DEFAULT_COOKIE_NAME,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_STATE_SIZE, DEFAULT_SWEEP_GRANULARITY, MAX_USER_LEN,
    META_KEY, ManualClock, OnCorrupt, STATE_KEY, SessionsBuilder, StoredSettings, SystemClock,
};
pub use crate::session::{Session, SessionId, Sessions, UserSession};
