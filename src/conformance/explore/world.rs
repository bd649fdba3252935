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
pub use super::settings::Ids;
use super::settings::Settings;
use super::states::{Tagged, Tags};
use crate::archive::{Archive, ArchiveExt};
use crate::conformance::hooked::Call;
use crate::session::id::{SessionId, hashed_name, is_hashed};
use crate::session::{META_KEY, ManualClock, STATE_KEY, Sessions};

/// Opens a fresh, empty archive in a directory of its own: what every exploration runs on.
///
/// # Examples
///
/// ```
/// use std::path::Path;
/// use std::sync::Arc;
/// use session_archive::conformance::explore::Open;
/// use session_archive::{Archive, MemoryArchive};
///
/// let open: &Open = &|_: &Path| Arc::new(MemoryArchive::new()) as Arc<dyn Archive>;
/// # let _ = open;
/// ```
pub type Open = dyn Fn(&Path) -> Arc<dyn Archive> + Send + Sync;

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
    scheduled: Arc<dyn Archive>,
    /// The application's `Sessions` at `t0`.
    app: Sessions,
    /// The other one at `t0`, where an operation uses it.
    other: Option<Sessions>,
    /// For each operation that runs at a later time, a `Sessions` of its own whose clock stands
    /// there (as in a process whose clock is ahead).
    own: Vec<Option<Sessions>>,
    settings: [Settings; 2],
    ids: Ids,
    /// When the observation happens: the latest time an operation runs at.
    end: u64,
    pub(super) t0: u64,
    pub(super) s: SessionId,
    pub(super) k: SessionId,
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
        Call::CompareAndSwapEach { groups } => groups
            .iter()
            .filter(|(_, swaps)| {
                swaps
                    .iter()
                    .any(|(key, _, new)| new.is_some() && (*key == STATE_KEY || *key == META_KEY))
            })
            .map(|(domain, _)| *domain)
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

/// The name `id` is stored under with `ids`.
fn stored_name(ids: Ids, id: &SessionId) -> String {
    if ids == Ids::Hashed && SessionId::parse(id.as_str()).is_some() {
        hashed_name(id.as_str())
    } else {
        id.as_str().to_owned()
    }
}

/// Saves the world's two sessions of alice, `S` (tagged 100) and `K` (200). `S` is stored
/// under the lesser name, so that listings meet `S` and `K` in one order and a schedule runs the
/// same calls however the ids fall.
fn save_s_and_k<T: Tagged>(app: &Sessions, ids: Ids) -> (SessionId, SessionId) {
    let mut handles = [app.new_session(T::initial()), app.new_session(T::initial())];
    handles.sort_by_key(|session| stored_name(ids, session.id()));
    let [s, k] = [100, 200].map(|tag| {
        let session = &mut handles[usize::from(tag == 200)];
        session.tag(tag);
        session.set_user(Some("alice"));
        session.save().expect("save a session of the world");
        session.id().clone()
    });
    (s, k)
}

/// A `Sessions` over `archive` with `settings`, whose clock stands at `at`.
fn build(archive: &Arc<dyn Archive>, ids: Ids, settings: Settings, at: u64) -> Sessions {
    Sessions::builder(Arc::clone(archive))
        .idle_timeout(settings.idle.map(Duration::from_secs))
        .absolute_lifetime(settings.absolute.map(Duration::from_secs))
        .sweep_granularity(Duration::from_secs(settings.granularity))
        .hash_ids_at_rest(ids == Ids::Hashed)
        .clock(ManualClock::new(UNIX_EPOCH + Duration::from_secs(at)))
        .build()
}

impl<T: Tagged> World<T> {
    /// A fresh world for `ops`: `S` and `K` saved at `t0`, both bound to alice; its archive
    /// says `blocking` of itself when that is set (see [`Plan::blocking`](super::Plan)).
    pub(super) fn new(
        open: &Open,
        (ids, blocking): (Ids, Option<crate::archive::Blocking>),
        ops: &[Op],
    ) -> World<T> {
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
            blocking,
        ));
        let t0 = t0();
        let settings = [Settings::of(ids, Via::App), Settings::of(ids, Via::Other)];
        // The second `Sessions` only where an operation uses it: building one is not free.
        let app = build(&scheduled, ids, settings[0], t0);
        let other = ops
            .iter()
            .any(|op| op.via == Via::Other)
            .then(|| build(&scheduled, ids, settings[1], t0));
        let own = ops
            .iter()
            .map(|op| {
                let settings = settings[op.via.index()];
                let at = settings.later_time(*op, t0)?;
                Some(build(&scheduled, ids, settings, at))
            })
            .collect();
        let end = ops
            .iter()
            .filter_map(|op| settings[op.via.index()].later_time(*op, t0))
            .fold(t0, u64::max);
        let (s, k) = save_s_and_k::<T>(&app, ids);
        World {
            raw,
            scheduled,
            app,
            other,
            own,
            settings,
            ids,
            end,
            t0,
            s,
            k,
            created,
            _dir: dir,
            _state: PhantomData,
        }
    }

    /// The `Sessions` operation number `me` runs through.
    pub(super) fn sessions(&self, me: usize, via: Via) -> &Sessions {
        let at_start = match via {
            Via::App => &self.app,
            Via::Other => self.other.as_ref().unwrap_or(&self.app),
        };
        self.own
            .get(me)
            .and_then(Option::as_ref)
            .unwrap_or(at_start)
    }

    pub(super) fn settings(&self, via: Via) -> &Settings {
        &self.settings[via.index()]
    }

    /// The name `id` is stored under.
    pub(super) fn stored_name(&self, id: &SessionId) -> String {
        stored_name(self.ids, id)
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
        let later;
        let app = if self.end == self.t0 {
            &self.app
        } else {
            later = build(&self.scheduled, self.ids, self.settings[0], self.end);
            &later
        };
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
        }
    }
}
