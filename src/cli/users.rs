//! `session-archive user-sessions` and `revoke-user`: one user's sessions.

use std::sync::Arc;

use super::error::CliError;
use crate::archive::Archive;
use crate::session::{Sessions, UserSession};

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

/// Destroys every stored session of `user`, whatever its expiry (see [`Sessions::revoke_user`]),
/// and returns how many. This is `session-archive revoke-user`.
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
