//! [`CliError`], what can go wrong in the command beyond the archive's own errors, and
//! [`one_line`], how the command prints one.

use std::path::PathBuf;

use super::limit::Limit;
use crate::error::{Chain, Error};
use crate::ids::redact;

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
    #[error(
        "unknown archive {spec:?}: expected dir:PATH, redb:PATH, redis://HOST:PORT/DB or postgres://USER@HOST/DB"
    )]
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
