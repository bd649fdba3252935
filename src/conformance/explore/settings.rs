//! The settings of the world's two `Sessions`: the application's, and a second one over the
//! same archive with other timeouts and sweep granularity.

use super::alphabet::{Kind, Op, Via};

/// Whether the world stores session ids as they are or hashed at rest; see
/// [`Plan::new`](super::Plan::new) for an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ids {
    /// Plain ids; the second `Sessions` has shorter timeouts and a finer sweep granularity.
    Plain,
    /// Ids hashed at rest; the second `Sessions` has no timeouts, so it records no settings.
    Hashed,
}

/// The expiry settings of one `Sessions` of the world, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Settings {
    pub(super) idle: Option<u64>,
    pub(super) absolute: Option<u64>,
    pub(super) granularity: u64,
}

impl Settings {
    pub(super) fn of(ids: Ids, via: Via) -> Settings {
        match (via, ids) {
            (Via::App, _) => Settings {
                idle: Some(3600),
                absolute: Some(8 * 3600),
                granularity: 600,
            },
            (Via::Other, Ids::Plain) => Settings {
                idle: Some(600),
                absolute: Some(2 * 3600),
                granularity: 60,
            },
            (Via::Other, Ids::Hashed) => Settings {
                idle: None,
                absolute: None,
                granularity: 60,
            },
        }
    }

    /// The later time `op` runs at through these settings, if any: its `Sessions`' clock stands
    /// there, as in a process whose clock is ahead.
    pub(super) fn later_time(&self, op: Op, t0: u64) -> Option<u64> {
        match op.kind {
            Kind::ResumeTouch => self.touch_time(t0),
            Kind::ResumeExpired | Kind::Sweep => self.late_time(t0),
            _ => None,
        }
    }

    /// Whether sessions expire at all: else the `Sessions` writes no index entries.
    pub(super) fn expires(&self) -> bool {
        self.idle.is_some() || self.absolute.is_some()
    }

    /// Whether a session of these timestamps has expired at `now`.
    pub(super) fn expired(&self, created: u64, seen: u64, now: u64) -> bool {
        let idle = self.idle.map(|idle| seen.saturating_add(idle));
        let absolute = self.absolute.map(|life| created.saturating_add(life));
        let at = match (idle, absolute) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        at.is_some_and(|at| now >= at)
    }

    /// Whether a write at `now` rewrites a last-seen time of `seen`.
    pub(super) fn touch_due(&self, seen: u64, now: u64) -> bool {
        self.idle
            .is_some_and(|idle| now.saturating_sub(seen) > idle / 8)
    }

    /// A time at which a session last seen at `t0` is due a touch, and not expired.
    pub(super) fn touch_time(&self, t0: u64) -> Option<u64> {
        self.idle.map(|idle| t0 + idle / 8 + 5)
    }

    /// A time at which a session last seen at `t0` (or a few seconds later) has expired.
    pub(super) fn late_time(&self, t0: u64) -> Option<u64> {
        self.idle.map(|idle| t0 + idle + 10)
    }
}
