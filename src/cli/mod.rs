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

mod error;
mod limit;
mod migrate;
mod spec;
mod stats;
mod sweep;
mod users;

pub use self::error::{CliError, one_line};
pub use self::limit::Limit;
pub use self::migrate::{MigrateOptions, Migrated, migrate};
pub use self::spec::{Access, Spec};
pub use self::stats::{Stats, stats};
pub use self::sweep::{SweepOptions, Swept, sweep};
pub use self::users::{revoke_user, user_sessions};
