//! Injectable time: [`Clock`], [`SystemClock`] and [`ManualClock`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

/// Where [`Sessions`](crate::Sessions) gets the current time from, so that expiry can be tested
/// without sleeping.
///
/// # Examples
///
/// ```
/// use std::time::SystemTime;
/// use session_archive::session::Clock;
///
/// #[derive(Debug)]
/// struct Epoch;
/// impl Clock for Epoch {
///     fn now(&self) -> SystemTime {
///         SystemTime::UNIX_EPOCH
///     }
/// }
/// assert_eq!(Epoch.now(), SystemTime::UNIX_EPOCH);
/// ```
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// Returns the current time.
    fn now(&self) -> SystemTime;
}

/// The real wall clock, [`SystemTime::now`]; the default.
///
/// # Examples
///
/// ```
/// use session_archive::session::{Clock, SystemClock};
///
/// assert!(SystemClock.now() > std::time::SystemTime::UNIX_EPOCH);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to. Clones share the same time, so a test keeps one clone
/// and hands another to [`SessionsBuilder::clock`](crate::session::SessionsBuilder::clock).
///
/// # Examples
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use session_archive::session::{Clock, ManualClock};
///
/// let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
/// let shared = clock.clone();
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(shared.now(), SystemTime::UNIX_EPOCH + Duration::from_secs(60));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    /// Returns a clock stopped at `start`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use session_archive::session::{Clock, ManualClock};
    ///
    /// assert_eq!(ManualClock::new(SystemTime::UNIX_EPOCH).now(), SystemTime::UNIX_EPOCH);
    /// ```
    pub fn new(start: SystemTime) -> ManualClock {
        ManualClock(Arc::new(Mutex::new(start)))
    }

    /// Sets the time to `now`, for this clock and all its clones.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use session_archive::session::{Clock, ManualClock};
    ///
    /// let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
    /// let later = SystemTime::UNIX_EPOCH + Duration::from_secs(5);
    /// clock.set(later);
    /// assert_eq!(clock.now(), later);
    /// ```
    pub fn set(&self, now: SystemTime) {
        *self.0.lock() = now;
    }

    /// Moves the time forward by `by`, for this clock and all its clones. A move past the largest
    /// representable time leaves the clock where it was.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use session_archive::session::{Clock, ManualClock};
    ///
    /// let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
    /// clock.advance(Duration::from_secs(1));
    /// assert_eq!(clock.now(), SystemTime::UNIX_EPOCH + Duration::from_secs(1));
    /// ```
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock();
        if let Some(later) = now.checked_add(by) {
            *now = later;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock()
    }
}
