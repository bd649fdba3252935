//! Typed sessions over any [`Archive`]: [`Sessions`], [`Session`], expiry and the sweep.
//!
//! # Storage layout
//!
//! One domain per session, named by its [`SessionId`]:
//!
//! - [`STATE_KEY`] (`session.json`): the state as compact JSON, exactly the original framework's
//!   layout;
//! - [`META_KEY`] (`meta.json`): `{"created":…,"seen":…}`, unix seconds, used for expiry.
//!
//! Expiry adds an index: a domain `expiry-<bucket>` per [sweep granularity] of expiry time, whose
//! keys are the ids of the sessions expiring in that bucket, and the domain `sweep-cursor`, which
//! remembers up to which bucket the sweep has gone. The per-user index adds a domain `user-<h>`
//! per user, and [`OnCorrupt::StartFresh`] the domain [`CORRUPT_DOMAIN`]. None of these names is
//! shaped like a session id (or its hash), so they never collide with sessions. The names
//! `Sessions` uses are its own: other data may share the archive under other names (the
//! tower-sessions store's `tower-…` domains do), but not under these.
//!
//! [sweep granularity]: SessionsBuilder::sweep_granularity

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::archive::{Archive, Blocking};
use crate::error::{Error, Result};

pub mod clock;
mod cookie;
pub(crate) mod expiry;
mod hashed;
pub mod id;
mod users;

use self::clock::{Clock, SystemClock};
use self::expiry::Meta;
pub use self::expiry::StoredSettings;
use self::id::SessionId;
pub use self::users::{MAX_USER_LEN, UserSession};

/// The key holding a session's state, as JSON: `session.json`.
///
/// # Examples
///
/// ```
/// assert_eq!(session_archive::STATE_KEY, "session.json");
/// ```
pub const STATE_KEY: &str = "session.json";

/// The key holding a session's timestamps, beside [`STATE_KEY`]: `meta.json`.
///
/// # Examples
///
/// ```
/// assert_eq!(session_archive::META_KEY, "meta.json");
/// ```
pub const META_KEY: &str = "meta.json";

/// The default limit on a session's serialized state: 1 MiB.
///
/// # Examples
///
/// ```
/// assert_eq!(session_archive::DEFAULT_MAX_STATE_SIZE, 1024 * 1024);
/// ```
pub const DEFAULT_MAX_STATE_SIZE: usize = 1024 * 1024;

/// The default idle timeout: 24 hours.
///
/// # Examples
///
/// ```
/// assert_eq!(session_archive::DEFAULT_IDLE_TIMEOUT.as_secs(), 24 * 60 * 60);
/// ```
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The default absolute lifetime: 7 days.
///
/// # Examples
///
/// ```
/// assert_eq!(session_archive::DEFAULT_ABSOLUTE_LIFETIME.as_secs(), 7 * 24 * 60 * 60);
/// ```
pub const DEFAULT_ABSOLUTE_LIFETIME: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The default session cookie name, the original framework's: `session-id`.
///
/// # Examples
///
/// ```
/// assert_eq!(session_archive::DEFAULT_COOKIE_NAME, "session-id");
/// ```
pub const DEFAULT_COOKIE_NAME: &str = "session-id";

/// The default width of one expiry-index bucket: 60 seconds.
///
/// # Examples
///
/// ```
/// assert_eq!(session_archive::DEFAULT_SWEEP_GRANULARITY.as_secs(), 60);
/// ```
pub const DEFAULT_SWEEP_GRANULARITY: Duration = Duration::from_secs(60);

/// How often a fresh id is drawn when the one drawn already exists. With 122 random bits a
/// collision is practically impossible; the bound only keeps a misbehaving backend (one whose
/// `compare_and_swap` never succeeds) from looping forever.
const CREATE_ATTEMPTS: usize = 4;

/// The session manager: starts [`Session`]s over one [`Archive`], and sweeps expired ones.
///
/// `Sessions` is cheap to clone (one `Arc` inside) and `Send + Sync`; clones share the archive
/// and the configuration. It is not generic: it keeps the archive as an `Arc<dyn Archive>`, so
/// `Session<State>` is one type whatever the backend, and a session owns a clone of its
/// `Sessions` (it is `'static` and `Send` when the state is), so it can move into another thread.
///
/// [`Sessions::new`] uses the defaults: an idle timeout of [24 hours](DEFAULT_IDLE_TIMEOUT), an
/// absolute lifetime of [7 days](DEFAULT_ABSOLUTE_LIFETIME), a [1 MiB](DEFAULT_MAX_STATE_SIZE)
/// state limit, the cookie `session-id` with `Secure`, and the system clock.
/// [`Sessions::builder`] changes any of them.
///
/// Each session is one domain, named by its id, holding [`STATE_KEY`] (the state as compact
/// JSON, the original framework's layout) and [`META_KEY`] (its timestamps). Expiry adds index
/// domains named `expiry-<n>` and `sweep-cursor`, and the per-user index domains `user-<h>`;
/// they are not shaped like ids, so they never collide with sessions. Other data may share the
/// archive under other names, never under session-shaped names or these.
///
/// The four examples below are the original framework's `Start`, `Save`, `Load` and `Destroy`.
///
/// # Examples
///
/// **Start** retrieves the user's session, or creates a new one if none is found:
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use session_archive::{MemoryArchive, Sessions};
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct State {
///     #[serde(rename = "Name")]
///     name: String,
/// }
///
/// let sessions = Sessions::new(MemoryArchive::new());
/// let cookie_id: Option<&str> = None; // the `session-id` cookie's value, if any
/// let session = sessions.start(cookie_id, State::default())?;
/// # Ok::<(), session_archive::Error>(())
/// ```
///
/// **Save** stores the state (Go's `defer session.Save()` becomes an explicit call, so its error
/// is not lost):
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use session_archive::{MemoryArchive, Sessions};
/// # #[derive(Default, Serialize, Deserialize)]
/// # struct State { #[serde(rename = "Name")] name: String }
/// # let sessions = Sessions::new(MemoryArchive::new());
/// let mut session = sessions.start(None, State::default())?;
/// session.name = "World".into();
/// session.save()?;
/// # Ok::<(), session_archive::Error>(())
/// ```
///
/// **Load** re-reads the stored state:
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use session_archive::{MemoryArchive, Sessions};
/// # #[derive(Default, Serialize, Deserialize)]
/// # struct State { #[serde(rename = "Name")] name: String }
/// # let sessions = Sessions::new(MemoryArchive::new());
/// # let mut first = sessions.start(None, State::default())?;
/// # first.name = "World".into();
/// # first.save()?;
/// # let cookie_id = Some(first.id().to_string());
/// let mut session = sessions.start(cookie_id.as_deref(), State::default())?;
/// session.load()?;
/// assert_eq!(format!("Hello {}", session.name), "Hello World");
/// # Ok::<(), session_archive::Error>(())
/// ```
///
/// **Destroy** removes the session; saving it again is an error, so it cannot come back:
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use session_archive::{Error, MemoryArchive, Sessions};
/// # #[derive(Default, Serialize, Deserialize)]
/// # struct State { #[serde(rename = "Name")] name: String }
/// # let sessions = Sessions::new(MemoryArchive::new());
/// let mut session = sessions.start(None, State::default())?;
/// session.save()?;
/// session.destroy()?;
/// assert!(matches!(session.save(), Err(Error::SessionGone { .. })));
/// # Ok::<(), session_archive::Error>(())
/// ```
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

struct Inner {
    /// The archive as sessions see it: with ids hashed at rest when configured.
    archive: Arc<dyn Archive>,
    /// The archive as given, for the names stored before ids were hashed.
    raw: Arc<dyn Archive>,
    config: Config,
    /// The index's bucket width as last read from the archive's record; 0 until then.
    index_width: AtomicU64,
    /// Whether this process has recorded its timeouts in the archive's record.
    settings_recorded: AtomicBool,
    /// Serializes this process's [`Session::update`]s of one session (by a hash of its id, so
    /// unrelated sessions rarely share one): see [`Inner::update_lock`].
    update_locks: Box<[Mutex<()>]>,
}

std::thread_local! {
    /// Whether this thread holds an update lock: an update nested in another's closure takes
    /// none, so it can neither wait for itself nor for a session sharing its lock.
    static IN_UPDATE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A turn behind [`Inner::update_lock`], or none for an update nested in another one's closure;
/// dropping it ends the turn.
struct UpdateTurn<'a> {
    guard: Option<parking_lot::MutexGuard<'a, ()>>,
}

impl<'a> UpdateTurn<'a> {
    fn take(inner: &'a Inner, id: &SessionId) -> Self {
        if IN_UPDATE.with(std::cell::Cell::get) {
            return UpdateTurn { guard: None };
        }
        let guard = inner.update_lock(id).lock();
        IN_UPDATE.with(|held| held.set(true));
        UpdateTurn { guard: Some(guard) }
    }
}

impl Drop for UpdateTurn<'_> {
    fn drop(&mut self) {
        if self.guard.is_some() {
            IN_UPDATE.with(|held| held.set(false));
        }
    }
}

/// How many locks [`Inner::update_locks`] holds: enough that the few dozen sessions a server
/// updates at once rarely share one, at one byte each.
const UPDATE_LOCKS: usize = 4096;

impl Inner {
    /// The lock that this process's updates of session `id` take around their read, change and
    /// compare-and-swap.
    ///
    /// Correctness never depends on it: the compare-and-swap alone makes an update lose
    /// nothing, also against other processes and other operations. What it saves is work. Of
    /// concurrent updates of one session, all but one would otherwise fail their swap and start
    /// again; on a backend with group commit, one commit answers them all, so each round costs
    /// a commit and yields one update, and the losers' reads, decodes and swaps take the CPU
    /// the winner needs. In turn behind the lock, each update reads the state the previous one
    /// left, and its swap succeeds the first time.
    fn update_lock(&self, id: &SessionId) -> &Mutex<()> {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hash = BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(id.as_str());
        // The modulo keeps the index below the length, which fits a usize.
        #[expect(
            clippy::cast_possible_truncation,
            reason = "reduced modulo the length first"
        )]
        let index = (hash % self.update_locks.len() as u64) as usize;
        &self.update_locks[index]
    }
}

/// What [`Sessions::start`] does with a stored state that does not decode as the state type:
/// set with [`SessionsBuilder::on_corrupt`].
///
/// A state goes bad when the state type changes without `#[serde(default)]` on a new field, or
/// when something outside this crate wrote the bytes. Reporting it (the default) keeps every
/// byte where it is for the operator, but every request with that cookie then fails (the axum
/// layer answers 500) until the session expires or is repaired. Starting fresh lets the user
/// carry on at once, with a new, empty session.
///
/// # Examples
///
/// ```
/// use session_archive::{Archive, MemoryArchive, OnCorrupt, Sessions, STATE_KEY};
/// use std::sync::Arc;
///
/// let archive = Arc::new(MemoryArchive::new());
/// let sessions = Sessions::builder(Arc::clone(&archive))
///     .on_corrupt(OnCorrupt::StartFresh)
///     .build();
/// let mut session = sessions.start(None, 7_u32)?;
/// session.save()?;
/// let id = session.id().to_string();
/// archive.set(&id, STATE_KEY, b"\"no longer a number\"")?;
///
/// let fresh = sessions.start(Some(&id), 0_u32)?;
/// assert!(fresh.is_new());
/// assert_eq!(archive.keys("corrupt-sessions").count(), 1); // the bytes, set aside
/// # use session_archive::ArchiveExt;
/// # Ok::<(), session_archive::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnCorrupt {
    /// [`Sessions::start`] returns [`Error::CorruptSession`] and leaves the bytes where they are.
    #[default]
    Fail,
    /// [`Sessions::start`] moves the undecodable bytes into the domain [`CORRUPT_DOMAIN`] (key:
    /// the time in unix seconds, `-`, and the session's fingerprint without its `#`), retires the
    /// id, and returns a new session under a fresh id, as for an unknown cookie. The set-aside
    /// copies stay until the operator removes them (`session-archive keys SPEC corrupt-sessions`
    /// lists them). [`Session::load`] on a handle still reports the error.
    StartFresh,
}

/// The domain where [`OnCorrupt::StartFresh`] sets undecodable states aside: `corrupt-sessions`.
/// Like the expiry index's domains, it is not shaped like a session id, so it never collides
/// with a session.
///
/// # Examples
///
/// ```
/// assert_eq!(session_archive::CORRUPT_DOMAIN, "corrupt-sessions");
/// ```
pub const CORRUPT_DOMAIN: &str = "corrupt-sessions";

#[derive(Debug, Clone)]
struct Config {
    on_corrupt: OnCorrupt,
    hash_ids: bool,
    idle_timeout: Option<Duration>,
    absolute_lifetime: Option<Duration>,
    max_state_size: usize,
    cookie_name: String,
    secure: bool,
    sweep_granularity: u64,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.inner.config;
        f.debug_struct("Sessions")
            .field("idle_timeout", &config.idle_timeout)
            .field("absolute_lifetime", &config.absolute_lifetime)
            .field("max_state_size", &config.max_state_size)
            .field("cookie_name", &config.cookie_name)
            .field("secure", &config.secure)
            .field("sweep_granularity", &config.sweep_granularity)
            .field("clock", &config.clock)
            .field("on_corrupt", &config.on_corrupt)
            .field("hash_ids_at_rest", &config.hash_ids)
            .finish_non_exhaustive()
    }
}

/// Configures and builds [`Sessions`]; made by [`Sessions::builder`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use session_archive::{MemoryArchive, Sessions};
///
/// let sessions = Sessions::builder(MemoryArchive::new())
///     .idle_timeout(Duration::from_secs(30 * 60))
///     .absolute_lifetime(None)
///     .max_state_size(64 * 1024)
///     .cookie_name("sid")
///     .secure(false)
///     .build();
/// # let _ = sessions;
/// ```
#[must_use = "call `build` to get the `Sessions`"]
pub struct SessionsBuilder {
    archive: Arc<dyn Archive>,
    config: Config,
}

impl fmt::Debug for SessionsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionsBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SessionsBuilder {
    /// Sets how long a session may go unused before it expires; `None` for never. The default is
    /// [`DEFAULT_IDLE_TIMEOUT`].
    ///
    /// Last-seen times are rewritten only once they are older than an eighth of the timeout, so
    /// that reads do not write on every request: a session expires between 7/8 of the timeout and
    /// the whole timeout after its last use. Times are kept in whole seconds.
    ///
    /// The first session write of each process records this timeout, and the
    /// [absolute lifetime](Self::absolute_lifetime), in the archive (see
    /// [`Sessions::stored_settings`]), where `session-archive sweep` finds them: it judges expiry
    /// by the application's timeouts unless told otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::builder(MemoryArchive::new())
    ///     .idle_timeout(Duration::from_secs(15 * 60))
    ///     .build();
    /// # let _ = sessions;
    /// ```
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.idle_timeout = timeout.into();
        self
    }

    /// Sets how long a session may live after its first save, however active; `None` for ever.
    /// The default is [`DEFAULT_ABSOLUTE_LIFETIME`]. [`Session::regenerate`] keeps the creation
    /// time, so it does not extend the lifetime. It is recorded in the archive as the
    /// [idle timeout](Self::idle_timeout) is.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::builder(MemoryArchive::new())
    ///     .absolute_lifetime(Duration::from_secs(12 * 60 * 60))
    ///     .build();
    /// # let _ = sessions;
    /// ```
    pub fn absolute_lifetime(mut self, lifetime: impl Into<Option<Duration>>) -> Self {
        self.config.absolute_lifetime = lifetime.into();
        self
    }

    /// Sets the largest serialized state, in bytes, that a write accepts. The default is
    /// [`DEFAULT_MAX_STATE_SIZE`].
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Error, MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::builder(MemoryArchive::new()).max_state_size(8).build();
    /// let mut session = sessions.start(None, "far more than eight bytes".to_owned())?;
    /// assert!(matches!(session.save(), Err(Error::StateTooLarge { limit: 8, .. })));
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn max_state_size(mut self, bytes: usize) -> Self {
        self.config.max_state_size = bytes;
        self
    }

    /// Sets the session cookie's name. The default is [`DEFAULT_COOKIE_NAME`].
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::builder(MemoryArchive::new()).cookie_name("sid").build();
    /// assert_eq!(sessions.cookie_name(), "sid");
    /// ```
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.config.cookie_name = name.into();
        self
    }

    /// Sets whether the session cookie carries `Secure` (sent over HTTPS only). On by default;
    /// turn it off for plain-HTTP development on localhost.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::builder(MemoryArchive::new()).secure(false).build();
    /// let session = sessions.start(None, ())?;
    /// assert!(!sessions.set_cookie(&session).contains("Secure"));
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn secure(mut self, secure: bool) -> Self {
        self.config.secure = secure;
        self
    }

    /// Sets where the current time comes from; the default is [`SystemClock`]. Tests pass a
    /// [`ManualClock`](crate::ManualClock) and move it instead of sleeping.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use session_archive::{ManualClock, MemoryArchive, Sessions};
    ///
    /// let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
    /// let sessions = Sessions::builder(MemoryArchive::new()).clock(clock.clone()).build();
    /// # let _ = sessions;
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.config.clock = Arc::new(clock);
        self
    }

    /// Sets the width of one expiry-index bucket (whole seconds, at least one) for an archive
    /// that has none recorded yet. The default is [`DEFAULT_SWEEP_GRANULARITY`]. A
    /// [`sweep`](Sessions::sweep) visits one bucket per granularity elapsed since the previous
    /// sweep (whichever process ran it), so sweep at least that often, or widen it. A narrow
    /// bucket makes each sweep re-read fewer sessions that are about to expire; a wide one makes
    /// a rare sweep visit fewer buckets.
    ///
    /// **First writer wins.** The width is recorded in the archive by the first `Sessions` that
    /// indexes a session there, and from then on every `Sessions` over that archive indexes and
    /// sweeps with the recorded width, whatever it was built with, so that processes (and the
    /// `session-archive sweep` tool) with different settings share one index. To change it, remove
    /// the domain `sweep-cursor` while no application runs, then run
    /// [`Sessions::adopt_legacy`] (`session-archive sweep --scan`) with the new width, which
    /// indexes every session again. [`Sessions::stored_settings`] shows the recorded width.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::builder(MemoryArchive::new())
    ///     .sweep_granularity(Duration::from_secs(300))
    ///     .build();
    /// # let _ = sessions;
    /// ```
    pub fn sweep_granularity(mut self, granularity: Duration) -> Self {
        self.config.sweep_granularity = granularity.as_secs().max(1);
        self
    }

    /// Sets what [`Sessions::start`] does with a stored state that does not decode; see
    /// [`OnCorrupt`]. The default is [`OnCorrupt::Fail`].
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, OnCorrupt, Sessions};
    ///
    /// let sessions = Sessions::builder(MemoryArchive::new())
    ///     .on_corrupt(OnCorrupt::StartFresh)
    ///     .build();
    /// # let _ = sessions;
    /// ```
    pub fn on_corrupt(mut self, policy: OnCorrupt) -> Self {
        self.config.on_corrupt = policy;
        self
    }

    /// Sets whether session ids are hashed at rest: the archive then stores each session under
    /// the lowercase hex SHA-256 of its id (64 characters), and the expiry index names it the
    /// same way, so nothing stored is a usable cookie. Off by default.
    ///
    /// Turn it on when the archive's contents may be seen by someone who must not be able to
    /// act as your users: backups, a Redis dump or replica, a directory listing, an operator's
    /// terminal. An id has 122 random bits, so its hash cannot be searched back either. It
    /// costs one SHA-256 of 36 bytes per archive call naming a session (well under a
    /// microsecond). Leave it off where the original framework's layout
    /// (`.gen/sessions/<id>/session.json`) must stay readable by id, or where other tools look
    /// sessions up by id.
    ///
    /// Turning it on over an archive that holds sessions stored by id makes those sessions
    /// unknown: their users start fresh sessions. [`Sessions::adopt_legacy`] then removes
    /// their domains.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use session_archive::{ArchiveExt, MemoryArchive, Sessions};
    ///
    /// let archive = Arc::new(MemoryArchive::new());
    /// let sessions = Sessions::builder(Arc::clone(&archive)).hash_ids_at_rest(true).build();
    /// let mut session = sessions.start(None, "state".to_owned())?;
    /// session.save()?;
    /// let id = session.id().to_string();
    /// assert!(!archive.domains().any(|d| d.unwrap() == id)); // stored under its hash
    /// assert_eq!(*sessions.start(Some(&id), String::new())?, "state");
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn hash_ids_at_rest(mut self, hashed: bool) -> Self {
        self.config.hash_ids = hashed;
        self
    }

    /// Builds the [`Sessions`].
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::builder(MemoryArchive::new()).build();
    /// assert_eq!(sessions.cookie_name(), "session-id");
    /// ```
    pub fn build(self) -> Sessions {
        Sessions {
            inner: Arc::new(Inner {
                archive: if self.config.hash_ids {
                    Arc::new(hashed::HashedIds::new(Arc::clone(&self.archive)))
                } else {
                    Arc::clone(&self.archive)
                },
                raw: self.archive,
                config: self.config,
                index_width: AtomicU64::new(0),
                settings_recorded: AtomicBool::new(false),
                update_locks: (0..UPDATE_LOCKS).map(|_| Mutex::new(())).collect(),
            }),
        }
    }
}

impl Inner {
    /// The name `id` is stored under: the id, or its hash when ids are hashed at rest.
    fn stored_name(&self, id: &SessionId) -> String {
        if self.config.hash_ids && SessionId::parse(id.as_str()).is_some() {
            id::sha256_hex(id.as_str(), hashed::HASHED_LEN / 2)
        } else {
            id.as_str().to_owned()
        }
    }
}

impl Sessions {
    /// Returns sessions over `archive` with the default configuration (see [`Sessions`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use session_archive::{Archive, MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let shared: Arc<dyn Archive> = Arc::new(MemoryArchive::new());
    /// let also = Sessions::new(shared);
    /// # let _ = (sessions, also);
    /// ```
    pub fn new(archive: impl Archive + 'static) -> Sessions {
        Sessions::builder(archive).build()
    }

    /// Returns a builder over `archive`, starting from the defaults.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::builder(MemoryArchive::new())
    ///     .idle_timeout(Duration::from_secs(3600))
    ///     .build();
    /// # let _ = sessions;
    /// ```
    pub fn builder(archive: impl Archive + 'static) -> SessionsBuilder {
        SessionsBuilder {
            archive: Arc::new(archive),
            config: Config {
                idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
                absolute_lifetime: Some(DEFAULT_ABSOLUTE_LIFETIME),
                max_state_size: DEFAULT_MAX_STATE_SIZE,
                cookie_name: DEFAULT_COOKIE_NAME.to_owned(),
                secure: true,
                sweep_granularity: DEFAULT_SWEEP_GRANULARITY.as_secs(),
                clock: Arc::new(SystemClock),
                on_corrupt: OnCorrupt::Fail,
                hash_ids: false,
            },
        }
    }

    /// Starts a session: the stored one if `id` names a live session, and otherwise a new one.
    ///
    /// `id` is usually the session cookie's value (see [`Sessions::id_from_cookie`]). It is used
    /// only if it is a well-formed [`SessionId`] naming a stored, unexpired session. Anything else
    /// (missing, malformed, unknown, expired or destroyed) gets a new session with a fresh
    /// server-generated id and the `initial` state; a client-chosen id is never adopted. A new
    /// session writes nothing until its first [`save`](Session::save). An expired session found
    /// here is removed. A stored session without timestamps (written by the original framework)
    /// is adopted: its timestamps are written now, and its lifetime starts now.
    ///
    /// # Errors
    ///
    /// [`Error::CorruptSession`] when the stored state is not valid JSON for `T` (the stored
    /// bytes are left as they are); otherwise the archive's errors.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let mut session = sessions.start(None, 0_u32)?;
    /// *session += 1;
    /// session.save()?;
    /// let id = session.id().to_string();
    ///
    /// assert_eq!(*sessions.start(Some(&id), 0_u32)?, 1);
    /// let fresh = sessions.start(Some("../../etc"), 0_u32)?;
    /// assert_ne!(fresh.id().as_str(), "../../etc");
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn start<T>(&self, id: Option<&str>, initial: T) -> Result<Session<T>>
    where
        T: Serialize + DeserializeOwned,
    {
        if let Some(id) = id.and_then(SessionId::parse)
            && let Resumed::Found(session) = self.resume(id, true)?
        {
            return Ok(session);
        }
        Ok(self.new_session(initial))
    }

    /// Starts a session as [`start`](Self::start) does, but only if that takes no write; returns
    /// `Ok(Err(initial))` when it would write, and the caller then calls `start` where it may
    /// block.
    ///
    /// Starting a stored session writes only now and then: when its last-seen time is due for a
    /// rewrite (once per eighth of the idle timeout), when it expired (it is removed), when it
    /// was stored without timestamps, or when a corrupt state is set aside
    /// ([`OnCorrupt::StartFresh`]). Everything else only reads, which on an archive whose reads
    /// do not block ([`Archive::blocking`]) can run on an async executor's thread, saving the
    /// hop to a blocking thread that a write needs. What it returns is exactly what `start`
    /// would have returned at that moment.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let mut session = sessions.start(None, 0_u32)?;
    /// session.save()?;
    /// let id = session.id().to_string();
    ///
    /// // Saved just now, so its last-seen time needs no rewrite: no write, a session.
    /// let again = sessions.start_without_writing(Some(&id), 0_u32)?;
    /// assert!(matches!(again, Ok(ref s) if s.id().as_str() == id));
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn start_without_writing<T>(
        &self,
        id: Option<&str>,
        initial: T,
    ) -> Result<std::result::Result<Session<T>, T>>
    where
        T: Serialize + DeserializeOwned,
    {
        if let Some(id) = id.and_then(SessionId::parse) {
            match self.resume(id, false)? {
                Resumed::Found(session) => return Ok(Ok(session)),
                Resumed::MustWrite => return Ok(Err(initial)),
                Resumed::Unknown => {}
            }
        }
        Ok(Ok(self.new_session(initial)))
    }

    /// Says which of this archive's calls may block; see [`Archive::blocking`]. A web layer asks
    /// it to decide which session calls to run on a blocking thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Blocking, MemoryArchive, Sessions};
    ///
    /// assert_eq!(Sessions::new(MemoryArchive::new()).blocking(), Blocking::Never);
    /// ```
    pub fn blocking(&self) -> Blocking {
        self.inner.archive.blocking()
    }

    /// Returns a new session holding `initial` under a fresh id, as [`start`](Self::start) does
    /// for a request without a usable cookie. Nothing is read or written until its first save.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let session = sessions.new_session(5_u8);
    /// assert!(session.is_new());
    /// assert_eq!(*session, 5);
    /// ```
    pub fn new_session<T>(&self, initial: T) -> Session<T> {
        Session {
            sessions: self.clone(),
            id: SessionId::generate(),
            state: initial,
            phase: Phase::New,
            synced: None,
            cookie: CookieAction::Keep,
            bound: None,
            user: None,
        }
    }

    /// Returns whether `id` names a live session: stored, not destroyed, not moved to another id
    /// by a regenerate, and not expired. It only reads; a web layer asks it before sending a
    /// cookie that merely refreshes an id the client already holds, so that a response never
    /// hands back an id that another request has just moved or destroyed.
    ///
    /// # Errors
    ///
    /// [`Error::CorruptSession`] when the stored timestamps do not decode; otherwise the
    /// archive's errors.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let mut session = sessions.start(None, 1_u8)?;
    /// assert!(!sessions.is_live(session.id())?);
    /// session.save()?;
    /// assert!(sessions.is_live(session.id())?);
    /// let old = session.id().clone();
    /// session.regenerate()?;
    /// assert!(!sessions.is_live(&old)?);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn is_live(&self, id: &SessionId) -> Result<bool> {
        let now = self.inner.now();
        let meta = self.inner.read_meta(id)?;
        if !matches!(read_state(&*self.inner.archive, id)?, Stored::State(_)) {
            return Ok(false);
        }
        Ok(meta.is_none_or(|(meta, _)| !self.inner.is_expired(meta, now)))
    }

    /// Returns the stored session `id`, or `None` when it is unknown, moved or expired.
    ///
    /// The timestamps are read before the state. A destroy removes the state first and the
    /// timestamps after it, so a state read after timestamps found missing proves the session
    /// was stored without timestamps (the original framework's) when they were read, and not
    /// half-way through a destroy.
    ///
    /// With `may_write` false it writes nothing, and answers [`Resumed::MustWrite`] where it
    /// would have written.
    fn resume<T: DeserializeOwned>(&self, id: SessionId, may_write: bool) -> Result<Resumed<T>> {
        let archive = &self.inner.archive;
        let now = self.inner.now();
        let meta = self.inner.read_meta(&id)?;
        let Stored::State(bytes) = read_state(archive.as_ref(), &id)? else {
            return Ok(Resumed::Unknown);
        };
        if let Some((meta, _)) = &meta
            && self.inner.is_expired(*meta, now)
        {
            if !may_write {
                return Ok(Resumed::MustWrite);
            }
            archive.remove_domain(id.as_str())?;
            return Ok(Resumed::Unknown);
        }
        let state: T = match decode(&id, &bytes) {
            Ok(state) => state,
            Err(err) => {
                if self.inner.config.on_corrupt == OnCorrupt::StartFresh {
                    if !may_write {
                        return Ok(Resumed::MustWrite);
                    }
                    if self.set_aside(&id, &bytes, now)? {
                        return Ok(Resumed::Unknown);
                    }
                }
                return Err(err);
            }
        };
        let adopting = meta.is_none();
        if !may_write
            && meta
                .as_ref()
                .is_none_or(|(meta, _)| self.inner.needs_touch(*meta, now))
        {
            return Ok(Resumed::MustWrite);
        }
        let (meta, meta_raw) = meta.unzip();
        let bound = meta_raw.as_deref().and_then(users::bound_user);
        let mut session = Session {
            sessions: self.clone(),
            id,
            state,
            phase: Phase::Live { meta, meta_raw },
            synced: Some(state_hash(&bytes)),
            cookie: CookieAction::Keep,
            user: bound.clone(),
            bound,
        };
        if session.touch(now)? {
            // Adopting a session without timestamps wrote them from nothing; if a destroy
            // removed the state meanwhile, those timestamps would make a dead id look alive
            // (and its cookie would be sent again), so they are taken back.
            if adopting && !matches!(read_state(archive.as_ref(), &session.id)?, Stored::State(_)) {
                if let Phase::Live {
                    meta_raw: Some(raw),
                    ..
                } = &session.phase
                {
                    archive.compare_and_swap(session.id.as_str(), META_KEY, Some(raw), None)?;
                }
                return Ok(Resumed::Unknown);
            }
            session.cookie = CookieAction::Set;
        }
        Ok(Resumed::Found(session))
    }

    /// Copies an undecodable state into [`CORRUPT_DOMAIN`], then retires the id by swapping that
    /// state for nothing. Returns whether it retired the id; not when another write replaced the
    /// bytes meanwhile, which leaves the session to the caller's ordinary error.
    fn set_aside(&self, id: &SessionId, bytes: &[u8], now: u64) -> Result<bool> {
        let archive = &self.inner.archive;
        let fingerprint = id.fingerprint();
        let key = format!("{now}-{}", fingerprint.trim_start_matches('#'));
        archive.set(CORRUPT_DOMAIN, &key, bytes)?;
        if !archive.compare_and_swap(id.as_str(), STATE_KEY, Some(bytes), None)? {
            return Ok(false);
        }
        // The id is dead; its timestamps are indexed and go with the sweep if this fails.
        let _ = archive.remove_domain(id.as_str());
        Ok(true)
    }

    /// Returns the session cookie's name.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// assert_eq!(Sessions::new(MemoryArchive::new()).cookie_name(), "session-id");
    /// ```
    pub fn cookie_name(&self) -> &str {
        &self.inner.config.cookie_name
    }
}

/// What [`Sessions::resume`] found under an id.
enum Resumed<T> {
    /// A live session.
    Found(Session<T>),
    /// No live session: unknown, moved, destroyed, or expired (and removed).
    Unknown,
    /// Resuming would write, and the caller asked it not to.
    MustWrite,
}

/// Where a session stands, as far as this handle knows.
#[derive(Debug)]
enum Phase {
    /// Never saved: nothing is stored.
    New,
    /// Stored. `meta` and `meta_raw` are the timestamps as last read or written by this handle,
    /// `None` for a session from a store without timestamps (the original framework's).
    Live {
        meta: Option<Meta>,
        meta_raw: Option<Vec<u8>>,
    },
    /// Destroyed, by this handle or (as found out on a write) by another.
    Gone,
}

/// One user's session: a typed state `T` and its [`SessionId`]; made by [`Sessions::start`].
///
/// It dereferences, mutably too, to `T`. Changes stay in the handle until [`save`](Self::save) or
/// [`update`](Self::update). The handle owns a clone of its [`Sessions`], so it is `'static` and
/// `Send` when `T` is.
///
/// # Examples
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use session_archive::{MemoryArchive, Sessions};
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct State {
///     name: String,
///     visits: u32,
/// }
///
/// let sessions = Sessions::new(MemoryArchive::new());
/// let mut session = sessions.start(None, State::default())?;
/// session.name = "World".into();
/// session.save()?;
/// let visits = session.update(|s| {
///     s.visits += 1;
///     s.visits
/// })?;
/// assert_eq!(visits, 1);
/// assert_eq!(session.id().to_string().len(), 36);
/// # Ok::<(), session_archive::Error>(())
/// ```
pub struct Session<T> {
    sessions: Sessions,
    id: SessionId,
    state: T,
    phase: Phase,
    /// A hash of the state bytes this handle last read or wrote: when the handle's state still
    /// encodes to them, it holds no changes of its own, and [`regenerate`](Self::regenerate)
    /// moves whatever is stored rather than what the handle read.
    synced: Option<u64>,
    /// What the client's cookie needs after this handle's calls.
    cookie: CookieAction,
    /// The user the stored session is bound to, as this handle last read or wrote it.
    bound: Option<String>,
    /// The user the next write binds the session to (see [`Session::set_user`]).
    user: Option<String>,
}

/// What a response must do with the client's session cookie after a [`Session`]'s calls; see
/// [`Session::cookie_action`] and [`Sessions::cookie_header`].
///
/// # Examples
///
/// ```
/// use session_archive::{CookieAction, MemoryArchive, Sessions};
///
/// let sessions = Sessions::new(MemoryArchive::new());
/// let mut session = sessions.start(None, 0_u8)?;
/// assert_eq!(session.cookie_action(), CookieAction::Keep); // nothing stored, nothing to send
/// session.save()?;
/// assert_eq!(session.cookie_action(), CookieAction::Set);
/// session.destroy()?;
/// assert_eq!(session.cookie_action(), CookieAction::Remove);
/// # Ok::<(), session_archive::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CookieAction {
    /// Send nothing: the client's cookie is right as it is, or it names a session that another
    /// request moved or destroyed, whose cookie this response must not touch.
    Keep,
    /// Send [`Sessions::set_cookie`]: the session is new, got a new id, or its expiry moved.
    Set,
    /// Send [`Sessions::removal_cookie`]: this handle destroyed the session.
    Remove,
}

impl<T> fmt::Debug for Session<T> {
    /// Shows the id and whether the session is stored, not the state, which may be secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.phase {
            Phase::New => "new",
            Phase::Live { .. } => "live",
            Phase::Gone => "gone",
        };
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("phase", &phase)
            .finish_non_exhaustive()
    }
}

impl<T> Deref for Session<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.state
    }
}

impl<T> DerefMut for Session<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.state
    }
}

impl<T> Session<T> {
    /// Returns the session's id; it displays as the 36-character lowercase UUID.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let session = Sessions::new(MemoryArchive::new()).start(None, ())?;
    /// assert_eq!(session.id().to_string().len(), 36);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// Returns whether the session has never been saved (nothing of it is stored).
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let mut session = Sessions::new(MemoryArchive::new()).start(None, ())?;
    /// assert!(session.is_new());
    /// session.save()?;
    /// assert!(!session.is_new());
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn is_new(&self) -> bool {
        matches!(self.phase, Phase::New)
    }

    /// Binds the session to a user, or unbinds it with `None`: any UTF-8 string of 1 byte to
    /// [`MAX_USER_LEN`] bytes, such as an email or a database key. The binding is stored with
    /// the session when it is next written ([`save`](Self::save), [`update`](Self::update),
    /// [`regenerate`](Self::regenerate)); it is not part of the state `T`. A bound session is
    /// listed by [`Sessions::user_sessions`] and destroyed by [`Sessions::revoke_user`]. A user
    /// id that is empty or too long makes the next write [`Error::InvalidUser`], writing
    /// nothing.
    ///
    /// On login, bind after authenticating and before [`regenerate`](Self::regenerate), so the
    /// new id is the first to be bound.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let mut session = sessions.start(None, ())?;
    /// session.save()?;
    /// session.set_user(Some("alice"));
    /// session.regenerate()?; // login: the new id is stored bound to alice
    /// let again = sessions.start(Some(session.id().as_str()), ())?;
    /// assert_eq!(again.user(), Some("alice"));
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn set_user(&mut self, user: Option<&str>) {
        self.user = user.map(str::to_owned);
    }

    /// Returns the user the session is bound to (as stored when it was started, or as set since
    /// with [`set_user`](Self::set_user)).
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let mut session = sessions.start(None, ())?;
    /// assert_eq!(session.user(), None);
    /// session.set_user(Some("alice"));
    /// assert_eq!(session.user(), Some("alice"));
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Returns the state, leaving the session behind.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let session = Sessions::new(MemoryArchive::new()).start(None, 7_u8)?;
    /// assert_eq!(session.into_inner(), 7);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn into_inner(self) -> T {
        self.state
    }

    /// Removes the session from the archive. Any later [`save`](Self::save), [`update`](Self::update)
    /// or [`regenerate`](Self::regenerate) on this handle is [`Error::SessionGone`], and so is a
    /// write from any other handle to the same session: a destroy that returned `Ok` is final.
    /// Destroying twice, or destroying a session that was never saved, is not an error.
    ///
    /// Its linearization point is one compare-and-swap of the stored state to nothing, retried
    /// while other writes land, so a concurrent [`update`](Self::update) either lands before it
    /// (and is destroyed with the session) or fails. When another handle had already destroyed
    /// the session, or moved it to a new id with [`regenerate`](Self::regenerate), there is
    /// nothing left under this id to remove, and the call succeeds without touching the new id:
    /// an id from before a regenerate has no power over the session after it.
    /// [`cookie_action`](Self::cookie_action) tells the two apart: [`CookieAction::Remove`]
    /// only when this call removed the session.
    ///
    /// # Errors
    ///
    /// The archive's errors; the session is then not destroyed, and the handle still counts as
    /// live, so the call can be repeated.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let mut session = sessions.start(None, 1_u8)?;
    /// session.save()?;
    /// let id = session.id().to_string();
    /// session.destroy()?;
    /// assert_ne!(sessions.start(Some(&id), 0_u8)?.id().as_str(), id);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn destroy(&mut self) -> Result<()> {
        if let Phase::Live { .. } = self.phase {
            let removed = self.remove_stored()?;
            self.cookie = if removed {
                CookieAction::Remove
            } else {
                CookieAction::Keep
            };
        }
        self.phase = Phase::Gone;
        Ok(())
    }

    /// Returns what the response must do with the client's session cookie after this handle's
    /// calls; [`Sessions::cookie_header`] turns it into the `Set-Cookie` value.
    ///
    /// It is [`CookieAction::Set`] after the first save, a [`regenerate`](Self::regenerate), or
    /// a call that moved the session's expiry (its last-seen time is rewritten at most once per
    /// eighth of the idle timeout), so the cookie's `Max-Age` is sent only when it has to move;
    /// [`CookieAction::Remove`] after a [`destroy`](Self::destroy) that removed the session; and
    /// [`CookieAction::Keep`] otherwise, including after a call failed with
    /// [`Error::SessionGone`]: the session was then destroyed or moved to a new id by another
    /// request, whose own response sets the client's cookie, and this one must not undo that.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{CookieAction, MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let mut session = sessions.start(None, 0_u32)?;
    /// session.save()?;
    /// let id = session.id().to_string();
    ///
    /// // A later request that only reads, or writes soon after, leaves the cookie alone.
    /// let mut again = sessions.start(Some(&id), 0_u32)?;
    /// again.update(|n| *n += 1)?;
    /// assert_eq!(again.cookie_action(), CookieAction::Keep);
    /// again.regenerate()?;
    /// assert_eq!(again.cookie_action(), CookieAction::Set);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn cookie_action(&self) -> CookieAction {
        self.cookie
    }

    fn archive(&self) -> &dyn Archive {
        &*self.sessions.inner.archive
    }

    /// Marks the handle gone. Its cookie is left alone from now on, unless this handle itself
    /// destroyed the session: the removal it asked for stands.
    fn gone(&mut self) -> Error {
        self.phase = Phase::Gone;
        if self.cookie != CookieAction::Remove {
            self.cookie = CookieAction::Keep;
        }
        Error::SessionGone {
            id: self.id.to_string(),
        }
    }

    /// Removes what is stored under this handle's id; returns whether a session was there to
    /// remove (and not already destroyed, or moved by a regenerate, whose writer removes it).
    fn remove_stored(&self) -> Result<bool> {
        let archive = self.archive();
        let id = self.id.as_str();
        loop {
            let bound = archive
                .get(id, META_KEY)?
                .as_deref()
                .and_then(users::bound_user);
            let Stored::State(current) = read_state(archive, &self.id)? else {
                return Ok(false);
            };
            if archive.compare_and_swap(id, STATE_KEY, Some(&current), None)? {
                // The session is destroyed. What is left is its timestamps and its user entry,
                // which no write can bring back to life; a failure to remove them leaves the
                // timestamps indexed, for the sweep, and the entry stale, for the next listing
                // of the user's sessions.
                let _ = archive.remove_domain(id);
                if let Some(user) = bound {
                    let _ = self.sessions.inner.remove_user_entry(&user, &self.id);
                }
                return Ok(true);
            }
        }
    }

    /// Checks the user id the next write binds the session to.
    fn check_user(&self) -> Result<()> {
        match &self.user {
            Some(user) => users::validate_user(user),
            None => Ok(()),
        }
    }

    /// Fails with [`Error::SessionGone`] when the session has expired. An expired session is
    /// dead: a write through a handle held past the expiry must not bring it back, whether or
    /// not a sweep has removed it yet. The handle's own timestamps decide, unless they say
    /// expired: another handle may have refreshed the session since, so the stored ones are
    /// read then.
    fn ensure_unexpired(&mut self) -> Result<()> {
        let inner = &*self.sessions.inner;
        let now = inner.now();
        let Phase::Live {
            meta: Some(meta),
            meta_raw,
        } = &mut self.phase
        else {
            return Ok(());
        };
        if !inner.is_expired(*meta, now) {
            return Ok(());
        }
        match inner.read_meta(&self.id)? {
            Some((fresh, raw)) if !inner.is_expired(fresh, now) => {
                *meta = fresh;
                *meta_raw = Some(raw);
                Ok(())
            }
            _ => Err(self.gone()),
        }
    }

    /// Rewrites `last seen` if it is old enough, or writes the first timestamps of a session
    /// stored without them, and stores the user binding when it changed. A lost race (another
    /// handle touched or destroyed the session first) is not an error: the winner's timestamps
    /// stand, and a destroyed session stays destroyed; a changed binding is tried again on the
    /// winner's timestamps. The expiry index entry, and the new user's entry, are written first
    /// (see [`Inner::index`]); the old user's entry is removed after. Returns whether it wrote.
    fn touch(&mut self, now: u64) -> Result<bool> {
        let inner = &*self.sessions.inner;
        loop {
            let rebind = self.user != self.bound;
            let Phase::Live { meta, meta_raw } = &mut self.phase else {
                return Ok(false);
            };
            let fresh = match *meta {
                Some(old) if !rebind && !inner.needs_touch(old, now) => return Ok(false),
                Some(old) => Meta { seen: now, ..old },
                None => Meta {
                    created: now,
                    seen: now,
                },
            };
            let raw = encode_meta(&self.id, fresh, self.user.as_deref())?;
            inner.index(&self.id, fresh)?;
            if rebind && let Some(user) = &self.user {
                inner.add_user_entry(user, &self.id)?;
            }
            if inner.archive.compare_and_swap(
                self.id.as_str(),
                META_KEY,
                meta_raw.as_deref(),
                Some(&raw),
            )? {
                *meta = Some(fresh);
                *meta_raw = Some(raw);
                inner.expire_hint(&self.id, fresh)?;
                if rebind {
                    if let Some(old) = &self.bound {
                        inner.remove_user_entry(old, &self.id)?;
                    }
                    self.bound.clone_from(&self.user);
                }
                return Ok(true);
            }
            let read = inner.read_meta(&self.id)?;
            self.bound = read.as_ref().and_then(|(_, raw)| users::bound_user(raw));
            let (read, read_raw) = read.unzip();
            *meta = read;
            *meta_raw = read_raw;
            if !rebind || meta.is_none() {
                return Ok(false);
            }
        }
    }

    /// After a write of the state: refreshes the timestamps (the cookie follows when they
    /// moved), and repeats the expiry hint that a write may have cleared on backends with native
    /// expiry.
    fn after_write(&mut self) -> Result<()> {
        let now = self.sessions.inner.now();
        if self.touch(now)? {
            self.cookie = CookieAction::Set;
        } else if let Phase::Live {
            meta: Some(meta), ..
        } = self.phase
        {
            self.sessions.inner.expire_hint(&self.id, meta)?;
        }
        Ok(())
    }
}

impl<T: Serialize + DeserializeOwned> Session<T> {
    /// Stores the state. The last writer wins, but a save never brings back a session that was
    /// destroyed or moved: if the session was stored and is gone now, this is
    /// [`Error::SessionGone`] and nothing is written. The first save of a new session creates it.
    ///
    /// # Errors
    ///
    /// [`Error::SessionGone`] after a destroy (by any handle), a sweep, or a regenerate by
    /// another handle; [`Error::StateTooLarge`] when the JSON is over the
    /// [limit](SessionsBuilder::max_state_size) (nothing is written); [`Error::Serialize`] when
    /// `T` cannot be serialized; otherwise the archive's errors. An archive error while
    /// recording the timestamps, after the state was written, is returned too, although the
    /// state is then stored.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let mut session = sessions.start(None, vec!["a".to_owned()])?;
    /// session.push("b".into());
    /// session.save()?;
    /// let again = sessions.start(Some(session.id().as_str()), Vec::<String>::new())?;
    /// assert_eq!(*again, ["a", "b"]);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn save(&mut self) -> Result<()> {
        let bytes = self.encode(&self.state)?;
        match self.phase {
            Phase::Gone => Err(self.gone()),
            Phase::New => {
                let now = self.sessions.inner.now();
                self.create(
                    &bytes,
                    Meta {
                        created: now,
                        seen: now,
                    },
                )
            }
            Phase::Live { .. } => {
                self.check_user()?;
                self.ensure_unexpired()?;
                if self.swap_state(|_| Ok((bytes.clone(), ())))?.is_none() {
                    return Err(self.gone());
                }
                self.synced = Some(state_hash(&bytes));
                self.after_write()
            }
        }
    }

    /// Replaces the state in the handle with the stored one. For a session that was never saved
    /// there is nothing stored, and the state is left as it is.
    ///
    /// # Errors
    ///
    /// [`Error::SessionGone`] when the session was destroyed or moved; [`Error::CorruptSession`]
    /// when the stored state is not valid JSON for `T` (the handle's state and the stored bytes
    /// are left as they are); otherwise the archive's errors.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let mut session = sessions.start(None, 1_u32)?;
    /// session.save()?;
    /// *session = 99;
    /// session.load()?;
    /// assert_eq!(*session, 1);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn load(&mut self) -> Result<()> {
        match self.phase {
            Phase::Gone => Err(self.gone()),
            Phase::New => Ok(()),
            Phase::Live { .. } => {
                let Stored::State(bytes) = read_state(self.archive(), &self.id)? else {
                    return Err(self.gone());
                };
                self.state = decode(&self.id, &bytes)?;
                self.synced = Some(state_hash(&bytes));
                Ok(())
            }
        }
    }

    /// Atomically applies `change` to the stored state and stores the result, then makes that the
    /// handle's state; returns what `change` returned.
    ///
    /// It reads the stored state, applies `change` to a copy, and swaps the result in only if the
    /// stored bytes have not changed meanwhile (the archive's
    /// [`compare_and_swap`](Archive::compare_and_swap)); otherwise it starts again. So no
    /// concurrent update is lost, and `change` may run more than once: it should only compute
    /// from the state it is given. Unsaved changes in the handle are replaced by the result. On a
    /// session that was never saved, the handle's state is saved first.
    ///
    /// How far the guarantee reaches depends on the backend's `compare_and_swap`: threads of one
    /// process for memory and redb, and across processes too for the directory tree (a lock file)
    /// and Redis.
    ///
    /// # Errors
    ///
    /// [`Error::SessionGone`] when the session was destroyed or moved; [`Error::CorruptSession`]
    /// when the stored state cannot be decoded; [`Error::StateTooLarge`] or [`Error::Serialize`]
    /// for the result (nothing is written); otherwise the archive's errors.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let mut session = sessions.start(None, 0_u64)?;
    /// let after = session.update(|n| {
    ///     *n += 1;
    ///     *n
    /// })?;
    /// assert_eq!(after, 1);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn update<R>(&mut self, mut change: impl FnMut(&mut T) -> R) -> Result<R> {
        if let Phase::New = self.phase {
            self.save()?;
        }
        if let Phase::Gone = self.phase {
            return Err(self.gone());
        }
        self.check_user()?;
        self.ensure_unexpired()?;
        let inner = Arc::clone(&self.sessions.inner);
        let turn = UpdateTurn::take(&inner, &self.id);
        let swapped = self.swap_state(|current| {
            let mut copy: T = decode(&self.id, current)?;
            let result = change(&mut copy);
            let bytes = self.encode(&copy)?;
            let hash = state_hash(&bytes);
            Ok((bytes, (copy, result, hash)))
        })?;
        drop(turn);
        let Some((copy, result, hash)) = swapped else {
            return Err(self.gone());
        };
        self.state = copy;
        self.synced = Some(hash);
        self.after_write()?;
        Ok(result)
    }

    /// Replaces the stored state with the bytes `next` makes from it, reading and swapping again
    /// whenever another write landed in between, and returns what `next` returned; `None` once
    /// no state is stored (the session was destroyed or moved).
    fn swap_state<R>(
        &self,
        mut next: impl FnMut(&[u8]) -> Result<(Vec<u8>, R)>,
    ) -> Result<Option<R>> {
        loop {
            let Stored::State(current) = read_state(self.archive(), &self.id)? else {
                return Ok(None);
            };
            let (bytes, result) = next(&current)?;
            if self.archive().compare_and_swap(
                self.id.as_str(),
                STATE_KEY,
                Some(&current),
                Some(&bytes),
            )? {
                return Ok(Some(result));
            }
        }
    }

    /// Moves the session to a fresh id; call it on login, so that an id known before login is
    /// worthless after it. The creation time is kept, so the absolute lifetime is not extended.
    /// On a session that was never saved, it only draws a new id.
    ///
    /// **What moves.** When the handle holds changes of its own (its state differs from what it
    /// last read or wrote), those are what the new id gets: the regenerate is a write, and the
    /// last writer wins. Otherwise the new id gets whatever is stored at the moment of the move,
    /// so an update that another request made meanwhile is carried over, not lost.
    ///
    /// **Login without a fixation window.** Change the state, then regenerate, with no save
    /// before it: the authenticated state is then only ever stored under the new id, never under
    /// the id the client (or an attacker who planted it) had before.
    ///
    /// **Concurrency.** The state is first stored under the new id, unreachable since no one
    /// knows that id yet. Then one compare-and-swap turns the old id's state into a moved-marker:
    /// that is the moment of the move. A write through the old id after it fails with
    /// [`Error::SessionGone`] instead of landing in a domain that is about to vanish; a write
    /// before it is carried over or overwritten as said above. If the session was destroyed
    /// (or moved by another regenerate) first, the copy is removed again and the call is
    /// [`Error::SessionGone`]: of two concurrent regenerates, exactly one wins. Any other
    /// failure before the move leaves the old session live and unchanged and the handle on the
    /// old id. After the move the old domain is removed; if that fails, the marker left behind
    /// is dead to every call and the sweep removes it when the old timestamps expire.
    ///
    /// # Errors
    ///
    /// [`Error::SessionGone`] when the session was destroyed or moved, before or during the
    /// call; [`Error::StateTooLarge`] or [`Error::Serialize`] for the state (nothing is
    /// written); [`Error::CorruptSession`] when the handle has no changes of its own and the
    /// state stored meanwhile does not decode; otherwise the archive's errors.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let mut session = sessions.start(None, "anonymous".to_owned())?;
    /// session.save()?;
    /// let old = session.id().to_string();
    ///
    /// // Login: change the state, then regenerate; no save in between.
    /// *session = "alice".to_owned();
    /// session.regenerate()?;
    /// assert_ne!(session.id().as_str(), old);
    /// assert_eq!(*sessions.start(Some(session.id().as_str()), String::new())?, "alice");
    /// assert_ne!(sessions.start(Some(&old), String::new())?.id().as_str(), old);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn regenerate(&mut self) -> Result<()> {
        let created = match self.phase {
            Phase::Gone => return Err(self.gone()),
            Phase::New => {
                self.id = SessionId::generate();
                return Ok(());
            }
            Phase::Live { meta, .. } => meta.map(|meta| meta.created),
        };
        let mut bytes = self.encode(&self.state)?;
        self.check_user()?;
        self.ensure_unexpired()?;
        let old_bound = self.bound.clone();
        let clean = self.synced == Some(state_hash(&bytes));
        let Stored::State(current) = read_state(self.archive(), &self.id)? else {
            return Err(self.gone());
        };
        // A clean handle moves what is stored now, which may be newer than what it read.
        let mut moved: Option<T> = None;
        if clean && current != bytes {
            moved = Some(decode(&self.id, &current)?);
            bytes.clone_from(&current);
        }
        let now = self.sessions.inner.now();
        let meta = Meta {
            created: created.unwrap_or(now),
            seen: now,
        };
        let old_id = std::mem::replace(&mut self.id, SessionId::generate());
        let old_phase = std::mem::replace(&mut self.phase, Phase::New);
        if let Err(err) = self.create(&bytes, meta) {
            self.id = old_id;
            self.phase = old_phase;
            return Err(err);
        }
        match self.move_from(&old_id, current, &mut bytes, clean) {
            Ok(followed) => {
                if let Some(state) = followed.or(moved) {
                    self.state = state;
                }
                self.synced = Some(state_hash(&bytes));
                self.cookie = CookieAction::Set;
                // The old id is dead from the move on; its domain is only clutter now, and its
                // user entry stale. They go in that order, so a failure between leaves a stale
                // entry (dropped by the next listing of the user's sessions), never an old
                // domain that the user's index does not lead to.
                let _ = self.archive().remove_domain(old_id.as_str());
                if let Some(user) = &old_bound {
                    let _ = self.sessions.inner.remove_user_entry(user, &old_id);
                }
                Ok(())
            }
            Err(err) => {
                // The copy was never reachable (its id never left this handle), so removing
                // it is a plain removal. If that fails, the copy is indexed and swept on expiry.
                let copy = std::mem::replace(&mut self.id, old_id);
                let _ = self.archive().remove_domain(copy.as_str());
                if let Some(user) = &self.user {
                    let _ = self.sessions.inner.remove_user_entry(user, &copy);
                }
                self.bound = old_bound;
                if let Error::SessionGone { .. } = err {
                    return Err(self.gone());
                }
                self.phase = old_phase;
                self.cookie = CookieAction::Keep;
                Err(err)
            }
        }
    }

    /// The move of [`regenerate`](Self::regenerate): swaps the old id's state, `current`, for a
    /// moved-marker, following the writes that land meanwhile. With a `clean` handle the copy
    /// under this handle's (new) id follows them too: `bytes` ends as what was moved, and the
    /// state it decodes to is returned when it is newer than the copy first written.
    fn move_from(
        &self,
        old: &SessionId,
        mut current: Vec<u8>,
        bytes: &mut Vec<u8>,
        clean: bool,
    ) -> Result<Option<T>> {
        let archive = self.archive();
        let marker = moved_marker(&self.sessions.inner.stored_name(&self.id));
        let mut followed = None;
        loop {
            match archive.compare_and_swap(old.as_str(), STATE_KEY, Some(&current), Some(&marker)) {
                Ok(true) => return Ok(followed),
                Ok(false) => {}
                // The swap may or may not have happened; the marker is unique to this call, so
                // reading it back tells.
                Err(err) => {
                    return match archive.get(old.as_str(), STATE_KEY) {
                        Ok(Some(stored)) if stored == marker => Ok(followed),
                        _ => Err(err),
                    };
                }
            }
            let Stored::State(next) = read_state(archive, old)? else {
                return Err(Error::SessionGone {
                    id: old.to_string(),
                });
            };
            if clean {
                followed = Some(decode(old, &next)?);
                if !archive.compare_and_swap(
                    self.id.as_str(),
                    STATE_KEY,
                    Some(bytes),
                    Some(&next),
                )? {
                    // Only this handle knows the copy's id; a copy changed under it is gone.
                    return Err(Error::SessionGone {
                        id: old.to_string(),
                    });
                }
                bytes.clone_from(&next);
            }
            current = next;
        }
    }

    /// Stores a session that is not stored yet, with `meta` as its timestamps, under this handle's
    /// id, or under a fresh one if that id is taken.
    ///
    /// The writes go in the order that keeps every failure, or crash, between them recoverable:
    /// the index entry, then the timestamps (their `compare_and_swap` from nothing claims the
    /// id), then the state. Until the state is written the domain is not a session (a start does
    /// not find it), and a domain holding only timestamps is indexed, so the sweep removes it
    /// when it expires. On an error the handle stays new and what was written is removed, as far
    /// as the archive allows.
    fn create(&mut self, bytes: &[u8], meta: Meta) -> Result<()> {
        if let Some(user) = &self.user {
            users::validate_user(user)?;
        }
        for _ in 0..CREATE_ATTEMPTS {
            let raw = encode_meta(&self.id, meta, self.user.as_deref())?;
            if let Some(raw) = self.create_at(bytes, meta, raw)? {
                self.phase = Phase::Live {
                    meta: Some(meta),
                    meta_raw: Some(raw),
                };
                self.synced = Some(state_hash(bytes));
                self.cookie = CookieAction::Set;
                self.bound.clone_from(&self.user);
                return self.sessions.inner.expire_hint(&self.id, meta);
            }
            self.id = SessionId::generate();
        }
        Err(self.gone())
    }

    /// One attempt of [`create`](Self::create) under the handle's id: returns the stored
    /// timestamps, or `None` when the id is taken.
    fn create_at(&self, bytes: &[u8], meta: Meta, raw: Vec<u8>) -> Result<Option<Vec<u8>>> {
        let inner = &*self.sessions.inner;
        let id = self.id.as_str();
        inner.index(&self.id, meta)?;
        if let Some(user) = &self.user {
            inner.add_user_entry(user, &self.id)?;
        }
        if !inner
            .archive
            .compare_and_swap(id, META_KEY, None, Some(&raw))?
        {
            return Ok(None);
        }
        match inner
            .archive
            .compare_and_swap(id, STATE_KEY, None, Some(bytes))
        {
            Ok(true) => Ok(Some(raw)),
            // A state without timestamps: a session of the original framework's owns this id.
            // Its timestamps stay unwritten, as they were.
            Ok(false) => {
                inner
                    .archive
                    .compare_and_swap(id, META_KEY, Some(&raw), None)?;
                Ok(None)
            }
            Err(err) => {
                // The state may or may not have been written. Best effort, and removing only what
                // this call wrote: if the removal fails too, the timestamps left are indexed, so
                // the sweep removes the domain when it expires.
                if inner
                    .archive
                    .compare_and_swap(id, STATE_KEY, Some(bytes), None)
                    .is_ok()
                {
                    let _ = inner
                        .archive
                        .compare_and_swap(id, META_KEY, Some(&raw), None);
                }
                Err(err)
            }
        }
    }

    /// Serializes a state, enforcing the size limit.
    fn encode(&self, state: &T) -> Result<Vec<u8>> {
        let bytes = serde_json::to_vec(state).map_err(|source| Error::Serialize {
            id: self.id.to_string(),
            source,
        })?;
        let limit = self.sessions.inner.config.max_state_size;
        if bytes.len() > limit {
            return Err(Error::StateTooLarge {
                id: self.id.to_string(),
                size: bytes.len(),
                limit,
            });
        }
        Ok(bytes)
    }
}

fn decode<T: DeserializeOwned>(id: &SessionId, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::CorruptSession {
        id: id.to_string(),
        source,
    })
}

fn encode_meta(id: &SessionId, meta: Meta, user: Option<&str>) -> Result<Vec<u8>> {
    /// The record under [`META_KEY`]: the timestamps, and the user binding when there is one.
    #[derive(Serialize)]
    struct Record<'a> {
        created: u64,
        seen: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<&'a str>,
    }
    let record = Record {
        created: meta.created,
        seen: meta.seen,
        user,
    };
    serde_json::to_vec(&record).map_err(|source| Error::Serialize {
        id: id.to_string(),
        source,
    })
}

/// What a session's id holds under [`STATE_KEY`].
enum Stored {
    /// Nothing: never stored, destroyed, or expired and removed.
    Absent,
    /// A moved-marker: a regenerate moved the session to the stored name given.
    Moved(Option<String>),
    /// A state.
    State(Vec<u8>),
}

/// How a moved-marker starts. JSON never starts with a NUL byte, so no state is taken for a
/// marker, and no marker decodes as a state.
const MOVED_PREFIX: &[u8] = b"\0moved:";

/// A fresh moved-marker: the prefix, a random nonce (so that a regenerate can tell its own
/// marker from another's when it must read back a swap whose answer was lost), `:`, and the
/// stored name of the new id, which a revoke follows. That name is the new domain's own name,
/// hashed when ids are hashed at rest, so the marker holds nothing the storage did not.
fn moved_marker(target: &str) -> Vec<u8> {
    let mut marker = MOVED_PREFIX.to_vec();
    marker.extend_from_slice(uuid::Uuid::new_v4().simple().to_string().as_bytes());
    marker.push(b':');
    marker.extend_from_slice(target.as_bytes());
    marker
}

/// Reads what `id` holds under [`STATE_KEY`].
fn read_state(archive: &dyn Archive, id: &SessionId) -> Result<Stored> {
    Ok(match archive.get(id.as_str(), STATE_KEY)? {
        None => Stored::Absent,
        Some(bytes) => match bytes.strip_prefix(MOVED_PREFIX) {
            Some(rest) => Stored::Moved(
                std::str::from_utf8(rest)
                    .ok()
                    .and_then(|rest| rest.split_once(':'))
                    .map(|(_, target)| target.to_owned()),
            ),
            None => Stored::State(bytes),
        },
    })
}

/// A hash of state bytes, to tell whether a handle's state is still what it last read or wrote.
fn state_hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}
