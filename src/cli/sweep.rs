//! `session-archive sweep`: removing expired sessions by the settings the application recorded.

use std::sync::Arc;
use std::time::Duration;

use super::error::CliError;
use super::limit::Limit;
use crate::archive::Archive;
use crate::session::{DEFAULT_SWEEP_GRANULARITY, Sessions, StoredSettings};

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
