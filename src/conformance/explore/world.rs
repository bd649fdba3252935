//! The world a schedule runs in: a fresh archive behind the scheduling wrapper, the
//! application's `Sessions` and a second one with other settings, one clock, and sessions `S`
//! and `K` of alice; and what is observed of it once the schedule is over.

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::alphabet::{Kind, Op, User, Via};
use super::scheduler::Scheduled;
use super::states::{Tagged, Tags};
use crate::archive::{Archive, ArchiveExt};
use crate::conformance::hooked::Call;
use crate::session::id::{SessionId, hashed_name, is_hashed};
use crate::session::{META_KEY, ManualClock, STATE_KEY, Sessions};

/// Opens a fresh, empty archive in a directory of its own.
pub type Open = dyn Fn(&Path) -> Arc<dyn Archive> + Send + Sync;

/// Whether the world stores session ids as they are or hashed at rest.
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
                granularity: 60,
            },
            (Via::Other, Ids::Plain) => Settings {
                idle: Some(600),
                absolute: Some(2 * 3600),
                granularity: 10,
            },
            (Via::Other, Ids::Hashed) => Settings {
                idle: None,
                absolute: None,
                granularity: 600,
            },
        }
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

/// When the world starts: a whole day in the future (so that backends with native expiry, which
/// follow the real clock, keep everything), the same for every schedule of a run.
pub(super) fn t0() -> u64 {
    static T0: OnceLock<u64> = OnceLock::new();
    *T0.get_or_init(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        (now / 86_400 + 2) * 86_400
    })
}

/// Where the worlds' directories go: `EXPLORE_TMPDIR`, else `/dev/shm` where it is a directory
/// (a memory file system: schedules create and remove thousands of directories), else the
/// system's temporary directory.
pub(super) fn scratch() -> &'static Path {
    static SCRATCH: OnceLock<std::path::PathBuf> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        if let Some(dir) = std::env::var_os("EXPLORE_TMPDIR") {
            return dir.into();
        }
        let shm = Path::new("/dev/shm");
        if shm.is_dir() && tempfile::tempdir_in(shm).is_ok() {
            return shm.to_owned();
        }
        std::env::temp_dir()
    })
}

/// The stored names written by each worker, in order: which operation created which session.
type Created = Arc<Mutex<Vec<(usize, String)>>>;

/// One schedule's world.
pub(super) struct World<T> {
    pub(super) raw: Arc<dyn Archive>,
    sessions: [Sessions; 2],
    settings: [Settings; 2],
    clock: ManualClock,
    pub(super) t0: u64,
    pub(super) s: SessionId,
    pub(super) k: SessionId,
    hashed: bool,
    created: Created,
    _dir: tempfile::TempDir,
    _state: PhantomData<fn() -> T>,
}

/// Whether `name` is shaped like a stored session: an id, or a hash of one.
pub(super) fn session_shaped(name: &str) -> bool {
    SessionId::parse(name).is_some() || is_hashed(name)
}

/// Records the session domains a worker's call writes a state or timestamps into.
fn record(created: &Created, me: usize, call: &Call<'_>) {
    let written: Vec<&str> = match *call {
        Call::Set { domain, key, .. }
        | Call::CompareAndSwap {
            domain,
            key,
            new: Some(_),
            ..
        } if key == STATE_KEY || key == META_KEY => {
            vec![domain]
        }
        Call::CompareAndSwapMany { domain, swaps } => swaps
            .iter()
            .filter(|(key, _, new)| new.is_some() && (*key == STATE_KEY || *key == META_KEY))
            .map(|_| domain)
            .take(1)
            .collect(),
        Call::SetMany { entries } => entries
            .iter()
            .filter(|(_, key, _)| *key == STATE_KEY || *key == META_KEY)
            .map(|(domain, _, _)| *domain)
            .collect(),
        _ => Vec::new(),
    };
    let mut created = created.lock();
    for domain in written {
        if session_shaped(domain) && !created.iter().any(|(_, d)| d == domain) {
            created.push((me, domain.to_owned()));
        }
    }
}

impl<T: Tagged> World<T> {
    /// A fresh world for `ops`: `S` and `K` saved at `t0`, both bound to alice.
    pub(super) fn new(open: &Open, ids: Ids, ops: &[Op]) -> World<T> {
        let dir = tempfile::Builder::new()
            .prefix("explore-")
            .tempdir_in(scratch())
            .expect("a temporary directory");
        let raw = open(dir.path());
        let created = Created::default();
        let log = Arc::clone(&created);
        let scheduled: Arc<dyn Archive> = Arc::new(Scheduled::new(
            Arc::clone(&raw),
            Box::new(move |me, call| record(&log, me, call)),
            ops.iter().any(|op| op.kind == Kind::Sweep),
        ));
        let t0 = t0();
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(t0));
        let settings = [Settings::of(ids, Via::App), Settings::of(ids, Via::Other)];
        let sessions = settings.map(|settings| {
            Sessions::builder(Arc::clone(&scheduled))
                .idle_timeout(settings.idle.map(Duration::from_secs))
                .absolute_lifetime(settings.absolute.map(Duration::from_secs))
                .sweep_granularity(Duration::from_secs(settings.granularity))
                .hash_ids_at_rest(ids == Ids::Hashed)
                .clock(clock.clone())
                .build()
        });
        let [s, k] = [100, 200].map(|tag| {
            let mut session = sessions[0].new_session(T::initial());
            session.tag(tag);
            session.set_user(Some("alice"));
            session.save().expect("save a session of the world");
            session.id().clone()
        });
        World {
            raw,
            sessions,
            settings,
            clock,
            t0,
            s,
            k,
            hashed: ids == Ids::Hashed,
            created,
            _dir: dir,
            _state: PhantomData,
        }
    }

    pub(super) fn sessions(&self, via: Via) -> &Sessions {
        &self.sessions[via.index()]
    }

    pub(super) fn settings(&self, via: Via) -> &Settings {
        &self.settings[via.index()]
    }

    /// Moves the clock forward to `at` (never back).
    pub(super) fn clock_to(&self, at: u64) {
        let at = UNIX_EPOCH + Duration::from_secs(at);
        if crate::session::Clock::now(&self.clock) < at {
            self.clock.set(at);
        }
    }

    /// The time now, in unix seconds.
    pub(super) fn now(&self) -> u64 {
        crate::session::Clock::now(&self.clock)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
    }

    /// The name `id` is stored under.
    pub(super) fn stored_name(&self, id: &SessionId) -> String {
        if self.hashed && SessionId::parse(id.as_str()).is_some() {
            hashed_name(id.as_str())
        } else {
            id.as_str().to_owned()
        }
    }

    /// The session domains each operation created, in order.
    pub(super) fn created(&self) -> Vec<(usize, String)> {
        self.created.lock().clone()
    }
}

/// A stored session as read back: its state's tags and its binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stored {
    pub(super) tags: Tags,
    pub(super) user: Option<String>,
    /// Its timestamps (created, seen), when it has some.
    pub(super) meta: Option<(u64, u64)>,
}

/// What a schedule left, read once it is over.
#[derive(Debug, Clone)]
pub(super) struct Observed {
    /// Every stored session (a state, not a moved-marker) by stored name.
    pub(super) stored: BTreeMap<String, Stored>,
    /// Whether the application's `Sessions` finds each stored session live now.
    pub(super) live: BTreeMap<String, bool>,
    /// What `user_sessions(U)` of the application's `Sessions` lists, by user.
    pub(super) listed: BTreeMap<User, BTreeSet<String>>,
    /// What `revoke_user(U)` of the application's `Sessions` returned, by user, revoking alice
    /// first, and the stored sessions still bound to U after it.
    pub(super) revoked: BTreeMap<User, (Result<usize, String>, BTreeSet<String>)>,
    /// The time of the observation.
    pub(super) now: u64,
}

/// Reads every stored session of the archive, by stored name.
fn stored_sessions<T: Tagged>(archive: &dyn Archive) -> BTreeMap<String, Stored> {
    let mut stored = BTreeMap::new();
    for domain in archive.domains() {
        let domain = domain.expect("list the archive's domains");
        if !session_shaped(&domain) {
            continue;
        }
        let state = archive.get(&domain, STATE_KEY).expect("read a state");
        let Some(state) = state.filter(|bytes| !bytes.starts_with(b"\0moved:")) else {
            continue;
        };
        let tags = serde_json::from_slice::<T>(&state)
            .map_or_else(|_| Tags::from([u32::MAX]), |state| state.tags());
        let meta = archive.get(&domain, META_KEY).expect("read timestamps");
        let record: Option<serde_json::Value> =
            meta.and_then(|raw| serde_json::from_slice(&raw).ok());
        let user = record
            .as_ref()
            .and_then(|r| r.get("user")?.as_str().map(str::to_owned));
        let times = record
            .as_ref()
            .and_then(|r| Some((r.get("created")?.as_u64()?, r.get("seen")?.as_u64()?)));
        stored.insert(
            domain,
            Stored {
                tags,
                user,
                meta: times,
            },
        );
    }
    stored
}

impl<T: Tagged> World<T> {
    /// Observes the world once every operation is done: stored sessions, liveness and listings
    /// by the application's `Sessions`, then revokes each user and reads what is left.
    pub(super) fn observe(&self) -> Observed {
        let app = &self.sessions[0];
        let stored = stored_sessions::<T>(&*self.raw);
        let live = stored
            .keys()
            .map(|name| {
                let id = SessionId::from_stored(name).expect("a session-shaped name");
                (name.clone(), app.is_live(&id).expect("is_live"))
            })
            .collect();
        let listed = User::ALL
            .into_iter()
            .map(|user| {
                let names = app
                    .user_sessions(user.name())
                    .map(|s| s.expect("list a user's sessions").id().as_str().to_owned())
                    .collect();
                (user, names)
            })
            .collect();
        let revoked = User::ALL
            .into_iter()
            .map(|user| {
                let count = app.revoke_user(user.name()).map_err(|e| e.to_string());
                let left = stored_sessions::<T>(&*self.raw)
                    .into_iter()
                    .filter(|(_, s)| s.user.as_deref() == Some(user.name()))
                    .map(|(name, _)| name)
                    .collect();
                (user, (count, left))
            })
            .collect();
        Observed {
            stored,
            live,
            listed,
            revoked,
            now: self.now(),
        }
    }
}
