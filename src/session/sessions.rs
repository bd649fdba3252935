//! [`Sessions`] and its builder: the typed face of the session store, which starts
//! [`Session`]s, sweeps, and lists and revokes a user's sessions.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::clock::{Clock, SystemClock};
use super::cookie::Cookies;
use super::expiry::{DEFAULT_SWEEP_GRANULARITY, Lifetime, StoredSettings};
use super::handle::{CookieAction, Session};
use super::id::SessionId;
use super::layout::{Meta, Stored, decode, validate_user};
use super::store::{Opened, Store, StoreConfig};
use super::users::{self, UserSession, UserSessions};
use crate::archive::{Archive, Blocking};
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;

/// The default limit on a session's serialized state: 1 MiB; see
/// [`SessionsBuilder::max_state_size`].
///
/// # Examples
///
/// A form that lets a visitor store text checks it against the limit before saving:
///
/// ```
/// use session_archive::session::{DEFAULT_MAX_STATE_SIZE, Sessions};
/// use session_archive::{Error, MemoryArchive};
///
/// let sessions = Sessions::new(MemoryArchive::new());
/// let mut session = sessions.start(None, String::new())?;
/// *session = "x".repeat(DEFAULT_MAX_STATE_SIZE); // with its quotes, two bytes too many
/// assert!(matches!(session.save(), Err(Error::StateTooLarge { .. })));
/// session.truncate(DEFAULT_MAX_STATE_SIZE - 2);
/// session.save()?;
/// # Ok::<(), session_archive::Error>(())
/// ```
pub const DEFAULT_MAX_STATE_SIZE: usize = 1024 * 1024;

/// The default idle timeout: 24 hours; see [`SessionsBuilder::idle_timeout`].
///
/// # Examples
///
/// A session left alone for the whole timeout is gone:
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use session_archive::session::{DEFAULT_IDLE_TIMEOUT, ManualClock, Sessions};
/// use session_archive::MemoryArchive;
///
/// let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
/// let sessions = Sessions::builder(MemoryArchive::new()).clock(clock.clone()).build();
/// let mut session = sessions.start(None, 1_u8)?;
/// session.save()?;
/// clock.advance(DEFAULT_IDLE_TIMEOUT);
/// assert!(!sessions.is_live(session.id())?);
/// # Ok::<(), session_archive::Error>(())
/// ```
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The default absolute lifetime: 7 days; see [`SessionsBuilder::absolute_lifetime`].
///
/// # Examples
///
/// A session used every day still ends a week after its first save:
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use session_archive::session::{DEFAULT_ABSOLUTE_LIFETIME, ManualClock, Sessions};
/// use session_archive::MemoryArchive;
///
/// let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
/// let sessions = Sessions::builder(MemoryArchive::new()).clock(clock.clone()).build();
/// let mut session = sessions.start(None, 1_u8)?;
/// session.save()?;
/// let half_a_day = Duration::from_secs(12 * 60 * 60);
/// for _ in 0..13 {
///     clock.advance(half_a_day);
///     assert!(sessions.is_live(session.id())?);
///     sessions.start(Some(session.id().as_str()), 0_u8)?; // a visit refreshes the idle timer
/// }
/// clock.advance(DEFAULT_ABSOLUTE_LIFETIME - 13 * half_a_day);
/// assert!(!sessions.is_live(session.id())?);
/// # Ok::<(), session_archive::Error>(())
/// ```
pub const DEFAULT_ABSOLUTE_LIFETIME: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The default session cookie name, the original framework's: `session-id`; see
/// [`SessionsBuilder::cookie_name`].
///
/// # Examples
///
/// ```
/// use session_archive::session::{DEFAULT_COOKIE_NAME, Sessions};
/// use session_archive::MemoryArchive;
///
/// let sessions = Sessions::new(MemoryArchive::new());
/// let session = sessions.start(None, ())?;
/// let header = sessions.set_cookie(&session);
/// assert!(header.starts_with(&format!("{DEFAULT_COOKIE_NAME}={}", session.id())));
/// # Ok::<(), session_archive::Error>(())
/// ```
pub const DEFAULT_COOKIE_NAME: &str = "session-id";

/// The session manager: starts [`Session`]s over one [`Archive`], and sweeps expired ones.
///
/// `Sessions` is cheap to clone (one `Arc` inside) and `Send + Sync`; clones share the archive
/// and the configuration. It is not generic: it keeps the archive as an `Arc<dyn Archive>`, so
/// `Session<State>` is one type whatever the backend, and a session shares its `Sessions`'
/// store (it is `'static` and `Send` when the state is), so it can move into another thread.
///
/// [`Sessions::new`] uses the defaults: an idle timeout of [24 hours](DEFAULT_IDLE_TIMEOUT), an
/// absolute lifetime of [7 days](DEFAULT_ABSOLUTE_LIFETIME), a [1 MiB](DEFAULT_MAX_STATE_SIZE)
/// state limit, the cookie `session-id` with `Secure`, and the system clock.
/// [`Sessions::builder`] changes any of them.
///
/// Each session is one domain, named by its id, holding [`STATE_KEY`](super::STATE_KEY) (the
/// state as compact JSON, the original framework's layout) and [`META_KEY`](super::META_KEY)
/// (its timestamps). Expiry adds index domains named `expiry-<n>` and `sweep-cursor`, and the
/// per-user index domains `user-<h>`; they are not shaped like ids, so they never collide with
/// sessions. Other data may share the archive under other names, never under session-shaped
/// names or these.
///
/// The [module docs](super) are the manual: ids and fixation, the login pattern, what holds
/// between concurrent operations, [expiry and the sweep](super#expiry-and-sweep) (idle timeout,
/// absolute lifetime, touch granularity, the expiry index, `sweep` and `sweep --scan`, stored
/// settings), the [cookie helpers](super#cookie-helpers), and signing a user out everywhere.
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
    inner: Arc<Shared>,
}

/// What clones of one [`Sessions`] share.
struct Shared {
    store: Arc<Store>,
    config: Config,
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
/// use session_archive::{Archive, MemoryArchive, Sessions};
/// use session_archive::session::{OnCorrupt, STATE_KEY};
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
    /// [`Sessions::start`] moves the undecodable bytes into the domain
    /// [`CORRUPT_DOMAIN`](super::CORRUPT_DOMAIN) (key: the time in unix seconds, `-`, and the
    /// session's fingerprint without its `#`), retires the id, and returns a new session under a
    /// fresh id, as for an unknown cookie. The set-aside copies stay until the operator removes
    /// them (`session-archive keys SPEC corrupt-sessions` lists them). [`Session::load`] on a
    /// handle still reports the error.
    StartFresh,
}

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
    /// [`ManualClock`](crate::session::ManualClock) and move it instead of sleeping.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use session_archive::{MemoryArchive, Sessions};
    /// use session_archive::session::ManualClock;
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
    /// use session_archive::{MemoryArchive, Sessions};
    /// use session_archive::session::OnCorrupt;
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
        let config = &self.config;
        let store = Store::new(
            self.archive,
            StoreConfig {
                hash_ids: config.hash_ids,
                lifetime: Lifetime::new(config.idle_timeout, config.absolute_lifetime),
                sweep_granularity: config.sweep_granularity,
                clock: Arc::clone(&config.clock),
            },
        );
        Sessions {
            inner: Arc::new(Shared {
                store: Arc::new(store),
                config: self.config,
            }),
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
    /// session writes nothing until its first write ([`save`](Session::save),
    /// [`update`](Session::update) or [`regenerate`](Session::regenerate)). An expired session
    /// found here is removed. A stored session without timestamps (written by the original
    /// framework) is adopted: its timestamps are written now, and its lifetime starts now.
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
            && let Opened::Found(session) = self.resume(id, true)?
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
                Opened::Found(session) => return Ok(Ok(session)),
                Opened::MustWrite => return Ok(Err(initial)),
                Opened::Unknown => {}
            }
        }
        Ok(Ok(self.new_session(initial)))
    }

    /// The read of a start of the session `id` names (a valid id), as a future that needs no
    /// thread, where the archive has one (see [`Archive::get_many_async`]); the axum layer
    /// awaits it, then starts the session from it with [`start_prefetched`](Self::start_prefetched).
    #[cfg(any(feature = "axum", feature = "actix", feature = "conformance"))]
    pub(crate) fn prefetch(&self, id: Option<&str>) -> Option<(SessionId, super::store::Prefetch)> {
        let id = id.and_then(SessionId::parse)?;
        let prefetch = self.inner.store.prefetch(&id)?;
        Some((id, prefetch))
    }

    /// [`start_without_writing`](Self::start_without_writing) of the session `id` from the
    /// values of a [`prefetch`](Self::prefetch) taken when this process's writes of it stood at
    /// `writes`.
    #[cfg(any(feature = "axum", feature = "actix", feature = "conformance"))]
    pub(crate) fn start_prefetched<T>(
        &self,
        id: SessionId,
        read: (u32, Vec<Option<Vec<u8>>>),
        initial: T,
    ) -> Result<std::result::Result<Session<T>, T>>
    where
        T: Serialize + DeserializeOwned,
    {
        Ok(match self.resume_from(id, Some(read), false)? {
            Opened::Found(session) => Ok(session),
            Opened::MustWrite => Err(initial),
            Opened::Unknown => Ok(self.new_session(initial)),
        })
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
        self.inner.store.blocking()
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
        let shared = &*self.inner;
        Session::new(
            Arc::clone(&shared.store),
            shared.config.max_state_size,
            initial,
        )
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
        let store = &*self.inner.store;
        let now = store.now();
        let stamp = store.read_meta(id)?;
        if !matches!(store.read_state(id)?, Stored::State(_)) {
            return Ok(false);
        }
        Ok(stamp.is_none_or(|stamp| !store.is_expired(stamp.meta, now)))
    }

    /// Starts the stored session `id` (see [`Store::start`]): a handle on it, or why there is
    /// none.
    fn resume<T: DeserializeOwned>(
        &self,
        id: SessionId,
        may_write: bool,
    ) -> Result<Opened<Session<T>>> {
        self.resume_from(id, None, may_write)
    }

    /// [`resume`](Self::resume) from values already read (see `Store::start`).
    fn resume_from<T: DeserializeOwned>(
        &self,
        id: SessionId,
        read: Option<(u32, Vec<Option<Vec<u8>>>)>,
        may_write: bool,
    ) -> Result<Opened<Session<T>>> {
        let shared = &*self.inner;
        let store = &shared.store;
        let set_aside = shared.config.on_corrupt == OnCorrupt::StartFresh;
        let opened = store.start(&id, read, may_write, set_aside, |bytes| decode(&id, bytes))?;
        let limit = shared.config.max_state_size;
        Ok(opened.map(|started| Session::resumed(Arc::clone(store), limit, id, started)))
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

    fn cookies(&self) -> Cookies<'_> {
        Cookies {
            name: &self.inner.config.cookie_name,
            secure: self.inner.config.secure,
        }
    }
}

/// Cookie helpers: the session id from a `Cookie` header, and the `Set-Cookie` values.
impl Sessions {
    /// Returns the session id carried by a `Cookie` request header value, if the header holds a
    /// cookie with this [name](Self::cookie_name) whose (percent-decoded) value is a well-formed
    /// [`SessionId`]. Malformed cookies are skipped; the first valid one wins.
    ///
    /// Whether the id names a live session is for [`Sessions::start`] to decide.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let header = "theme=dark; session-id=0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2";
    /// let id = sessions.id_from_cookie(header).expect("a valid id");
    /// assert_eq!(id.as_str(), "0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2");
    /// assert!(sessions.id_from_cookie("session-id=../../etc").is_none());
    ///
    /// let session = sessions.start(Some(id.as_str()), ())?; // unknown here, so a fresh id
    /// assert_ne!(session.id(), &id);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn id_from_cookie(&self, header: &str) -> Option<SessionId> {
        self.cookies().id_from_header(header)
    }

    /// Starts the session named by a `Cookie` request header value: the header's session id
    /// (found as [`id_from_cookie`](Self::id_from_cookie) finds it) is given to
    /// [`start`](Self::start), which takes it only if it names a live session. `None` (a
    /// request without a `Cookie` header) or a header without a valid session cookie starts a
    /// new session holding `initial`.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    ///
    /// # Examples
    ///
    /// A request handler that takes the raw header, whatever the web framework:
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let mut first = sessions.start_from_cookie_header(None, 0_u32)?;
    /// *first += 1;
    /// first.save()?;
    /// let set_cookie = sessions.cookie_header(&first).expect("a new session sets its cookie");
    ///
    /// // The browser sends the cookie back, among others.
    /// let cookie_pair = set_cookie.split(';').next().unwrap_or_default();
    /// let header = format!("theme=dark; {cookie_pair}");
    /// let again = sessions.start_from_cookie_header(Some(&header), 0_u32)?;
    /// assert_eq!(again.id(), first.id());
    /// assert_eq!(*again, 1);
    ///
    /// let stranger = sessions.start_from_cookie_header(Some("session-id=../../etc"), 0_u32)?;
    /// assert!(stranger.is_new());
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn start_from_cookie_header<T>(
        &self,
        cookie_header: Option<&str>,
        initial: T,
    ) -> Result<Session<T>>
    where
        T: Serialize + DeserializeOwned,
    {
        let id = cookie_header.and_then(|header| self.id_from_cookie(header));
        self.start(id.as_ref().map(SessionId::as_str), initial)
    }

    /// Returns the `Set-Cookie` header value that hands `session`'s id to the client:
    /// `HttpOnly`, `SameSite=Lax`, `Path=/`, `Secure` unless [turned
    /// off](crate::session::SessionsBuilder::secure), and a `Max-Age` that ends when the server
    /// expires the session if it is not used again (the time left of the idle timeout since the
    /// session was last marked seen, capped by what is left of the absolute lifetime; a new session
    /// counts as seen now). With no expiry configured it has no `Max-Age`, so it lasts for the
    /// browser session. The value
    /// is always the server's id, never anything the client sent.
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
    /// let session = sessions.start(None, ())?;
    /// let header = sessions.set_cookie(&session);
    /// assert_eq!(
    ///     header,
    ///     format!("session-id={}; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=3600", session.id()),
    /// );
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn set_cookie<T>(&self, session: &Session<T>) -> String {
        let store = &self.inner.store;
        let now = store.now();
        // A session not stored yet would get its timestamps now, when first saved.
        let meta = session.stored_meta().unwrap_or(Meta::fresh(now));
        let max_age = store.expires_at(meta).map(|at| at.saturating_sub(now));
        self.cookies().set(session.id(), max_age)
    }

    /// Returns the `Set-Cookie` header value that `session`'s calls call for, if any: see
    /// [`Session::cookie_action`]. Send it with the response; `None` means send nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let mut session = sessions.start(None, 1_u8)?;
    /// assert_eq!(sessions.cookie_header(&session), None);
    /// session.save()?;
    /// assert_eq!(sessions.cookie_header(&session), Some(sessions.set_cookie(&session)));
    /// session.destroy()?;
    /// assert_eq!(sessions.cookie_header(&session), Some(sessions.removal_cookie()));
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn cookie_header<T>(&self, session: &Session<T>) -> Option<String> {
        match session.cookie_action() {
            CookieAction::Keep => None,
            CookieAction::Set => Some(self.set_cookie(session)),
            CookieAction::Remove => Some(self.removal_cookie()),
        }
    }

    /// Returns the `Set-Cookie` header value that makes the client forget its session cookie:
    /// an empty value with `Max-Age=0` and an expiry date in the past. Send it after
    /// [`Session::destroy`].
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let header = sessions.removal_cookie();
    /// assert!(header.starts_with("session-id=;"));
    /// assert!(header.contains("Max-Age=0"));
    /// ```
    pub fn removal_cookie(&self) -> String {
        self.cookies().removal()
    }
}

/// Expiry: the sweep, the recorded settings, and the adoption of sessions without timestamps.
impl Sessions {
    /// Removes every session that has expired, and returns how many it removed.
    ///
    /// The sweep walks the expiry index from where the previous sweep stopped up to now, one
    /// bucket per [granularity](crate::session::SessionsBuilder::sweep_granularity). For each
    /// indexed id it reads only the session's timestamps, never its state, and removes the session
    /// if it has really expired; index entries left behind when a session was used again are
    /// dropped. Its cost is the number of expired (and recently re-indexed) sessions plus the
    /// number of buckets, and does not grow with the number of live sessions. Removals go a listing
    /// page at a time, as one [`remove_domains`](Archive::remove_domains) and one
    /// [`remove_many`](Archive::remove_many) batch. Domains left holding only timestamps (a write
    /// that raced a destroy, or a create cut short before its state) are removed when they
    /// expire.
    ///
    /// **Settings.** A session is removed only once it has expired by this `Sessions`' idle
    /// timeout and absolute lifetime AND by those recorded in the archive (the application's,
    /// see [`stored_settings`](Self::stored_settings)): a `Sessions` built with shorter timeouts,
    /// such as an admin tool's, never ends a session the application still resumes. The
    /// index's bucket width, and where the previous sweep stopped, are recorded in the archive
    /// (see [`stored_settings`](Self::stored_settings)), so sweeps from processes built with
    /// other settings, such as the `session-archive sweep` tool, share one index and one cursor:
    /// each visits only the buckets elapsed since the previous sweep, whoever ran it, and finds
    /// every entry. A live session whose entry a sweep drops keeps an entry at its own expiry,
    /// so a sweep with a longer timeout than the application's leaves nothing unindexed.
    ///
    /// **Recovery.** Index entries written late (by a process whose clock lags, or by a handle
    /// held past its session's expiry) are placed where a sweep still visits them. When the
    /// record is removed (by hand, or by a Redis eviction), the next index write writes it again,
    /// and so does the next sweep of a `Sessions` that has seen it; a sweep that has never seen
    /// the record, and finds none, has nothing it could walk and returns 0 without writing.
    /// Entries of sessions that expired while the record was missing are found again by
    /// [`adopt_legacy`](Self::adopt_legacy). Sessions stored while no expiry was configured, or by
    /// the original framework (no timestamps at all), are indexed when next used, or by
    /// [`adopt_legacy`](Self::adopt_legacy). Sweeps may run concurrently, from any number of
    /// processes sharing the archive.
    ///
    /// A sweep judges a page by reading timestamps, then removes; the archive has no conditional
    /// removal. So a session that expired and is saved by a request in that gap is removed all
    /// the same, as a sweep a moment earlier would have; and an index entry read while its
    /// session's first timestamps are not written yet is dropped, which leaves that session
    /// unindexed until it is next used. The latter needs a session created to expire within the
    /// bucket being swept: an idle timeout, or what is left of the absolute lifetime at a
    /// regenerate, shorter than the
    /// [granularity](crate::session::SessionsBuilder::sweep_granularity).
    ///
    /// # Errors
    ///
    /// The archive's errors. A session whose timestamps are unreadable is left in place and
    /// dropped from the index, rather than failing the sweep.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use session_archive::{MemoryArchive, Sessions};
    /// use session_archive::session::ManualClock;
    ///
    /// let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
    /// let sessions = Sessions::builder(MemoryArchive::new())
    ///     .idle_timeout(Duration::from_secs(600))
    ///     .clock(clock.clone())
    ///     .build();
    /// sessions.start(None, "state".to_owned())?.save()?;
    /// assert_eq!(sessions.sweep()?, 0);
    /// clock.advance(Duration::from_secs(601));
    /// assert_eq!(sessions.sweep()?, 1);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn sweep(&self) -> Result<usize> {
        self.inner.store.sweep()
    }

    /// Returns the expiry settings recorded in the archive (see [`StoredSettings`]), or `None`
    /// when there are none: no session has been indexed there by this version yet, or the record
    /// was removed, or it is not readable.
    ///
    /// # Errors
    ///
    /// The archive's errors.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let archive = std::sync::Arc::new(MemoryArchive::new());
    /// let app = Sessions::builder(archive.clone())
    ///     .sweep_granularity(Duration::from_secs(10))
    ///     .build();
    /// assert_eq!(app.stored_settings()?, None);
    /// app.start(None, ())?.save()?;
    ///
    /// // Another Sessions over the same archive indexes and sweeps with the recorded width.
    /// let tool = Sessions::builder(archive).sweep_granularity(Duration::from_secs(60)).build();
    /// let stored = tool.stored_settings()?.expect("recorded by the app");
    /// assert_eq!(stored.sweep_granularity, Duration::from_secs(10));
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn stored_settings(&self) -> Result<Option<StoredSettings>> {
        self.inner.store.stored_settings()
    }

    /// Scans every domain of the archive once, and gives every session stored without timestamps
    /// (the original framework's `session.json` with no `meta.json`, for example after a
    /// migration from its directory tree) timestamps from now, so that it expires after this
    /// `Sessions`' timeouts unless it is used. Returns how many sessions it adopted so.
    ///
    /// For each such session the index entry is written first, then the timestamps, by a
    /// compare-and-swap from nothing: a session that gets timestamps meanwhile (a request used
    /// it) keeps those, and is not counted. The state is never read or written. Sessions that
    /// have timestamps are indexed again at their expiry, which restores entries lost with a
    /// removed `sweep-cursor` or by an eviction; a following [`sweep`](Self::sweep) removes those
    /// that have expired. The cost is O(all domains): a listing, one read per session, and a
    /// batch of index writes per listing page. `progress` is called after each page with the
    /// number of domains scanned so far. Running it again adopts nothing new; with no idle
    /// timeout and no absolute lifetime it does nothing. With
    /// [ids hashed at rest](crate::session::SessionsBuilder::hash_ids_at_rest) it also removes the
    /// sessions stored under plain ids before hashing was turned on, which no cookie reaches.
    ///
    /// # Errors
    ///
    /// The archive's errors; what was written before stays, and a second run continues the job.
    /// Sessions whose timestamps are unreadable are left as they are.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use session_archive::{Archive, MemoryArchive, Sessions};
    /// use session_archive::session::ManualClock;
    ///
    /// let archive = std::sync::Arc::new(MemoryArchive::new());
    /// // As the original framework left it: a state, no timestamps.
    /// archive.set("0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2", "session.json", br#"{"Name":"World"}"#)?;
    ///
    /// let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
    /// let sessions = Sessions::builder(archive.clone())
    ///     .idle_timeout(Duration::from_secs(600))
    ///     .clock(clock.clone())
    ///     .build();
    /// assert_eq!(sessions.adopt_legacy(|_scanned| {})?, 1);
    /// clock.advance(Duration::from_secs(600));
    /// assert_eq!(sessions.sweep()?, 1);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn adopt_legacy(&self, progress: impl FnMut(u64)) -> Result<usize> {
        self.inner.store.adopt_legacy(progress)
    }
}

/// Sessions per user: listing and revoking the sessions bound to a user.
impl Sessions {
    /// Iterates over the live sessions bound to `user` (see
    /// [`Session::set_user`](crate::Session::set_user)), in no particular order. It walks the
    /// user's index a listing page at a time, so its cost is O(that user's sessions), whatever
    /// the number of others, and a user with thousands of sessions never sits in one `Vec`.
    /// Index entries found stale for good are dropped on the way.
    ///
    /// # Errors
    ///
    /// Each item may be the archive's error, after which the iteration ends;
    /// [`Error::InvalidUser`] (as the only item) for a user id that is empty or over
    /// [`MAX_USER_LEN`](super::MAX_USER_LEN) bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// for _device in 0..3 {
    ///     let mut session = sessions.start(None, ())?;
    ///     session.set_user(Some("alice"));
    ///     session.save()?;
    /// }
    /// assert_eq!(sessions.user_sessions("alice").count(), 3);
    /// assert_eq!(sessions.user_sessions("bob").count(), 0);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn user_sessions(&self, user: &str) -> impl Iterator<Item = Result<UserSession>> + use<> {
        let invalid = validate_user(user).err();
        let listing = invalid
            .is_none()
            .then(|| UserSessions::new(Arc::clone(&self.inner.store), user));
        invalid
            .map(Err)
            .into_iter()
            .chain(listing.into_iter().flatten())
    }

    /// Destroys every session bound to `user` ("sign out everywhere", or after a password
    /// change) and returns how many it destroyed. Its cost is O(that user's sessions).
    ///
    /// Every stored session bound to the user is destroyed, whatever this `Sessions` thinks of
    /// its expiry: ending an expired session is harmless, and the application that stored it
    /// may judge it by longer timeouts. A revoke is final: each session is destroyed by one
    /// compare-and-swap of its state (that also checks its record, so a session rebound to
    /// another user meanwhile is not destroyed), and a `save` or `update` racing it lands before
    /// (and is destroyed with it) or fails with [`Error::SessionGone`]; a session that a concurrent
    /// [`regenerate`](crate::Session::regenerate) moved is followed to its new id and destroyed
    /// there, so no copy survives (a session caught between a regenerate's copy and its move
    /// counts twice, with its copy). A session bound to the user after the revoke's last walk
    /// of the user's index (a login that lands during the revoke) is a later session, and
    /// stays.
    ///
    /// # Errors
    ///
    /// The archive's errors (the sessions destroyed before stay destroyed; run it again to
    /// finish); [`Error::InvalidUser`] for an invalid user id.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let mut phone = sessions.start(None, ())?;
    /// phone.set_user(Some("alice"));
    /// phone.save()?;
    /// assert_eq!(sessions.revoke_user("alice")?, 1);
    /// assert!(!sessions.is_live(phone.id())?);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn revoke_user(&self, user: &str) -> Result<usize> {
        validate_user(user)?;
        users::revoke(&self.inner.store, user, None)
    }

    /// Destroys every session bound to `user` except `keep` ("sign out other devices"), and
    /// returns how many it destroyed; see [`revoke_user`](Self::revoke_user).
    ///
    /// # Errors
    ///
    /// As for [`revoke_user`](Self::revoke_user).
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let mut ids = Vec::new();
    /// for _device in 0..3 {
    ///     let mut session = sessions.start(None, ())?;
    ///     session.set_user(Some("alice"));
    ///     session.save()?;
    ///     ids.push(session.id().clone());
    /// }
    /// assert_eq!(sessions.revoke_user_except("alice", &ids[0])?, 2);
    /// assert!(sessions.is_live(&ids[0])?);
    /// assert_eq!(sessions.user_sessions("alice").count(), 1);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn revoke_user_except(&self, user: &str, keep: &SessionId) -> Result<usize> {
        validate_user(user)?;
        users::revoke(&self.inner.store, user, Some(keep))
    }
}
