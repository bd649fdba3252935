//! [`Session`]: one user's typed session handle over the [store](super::store), and the
//! [`CookieAction`] its calls ask of the response.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::id::SessionId;
use super::layout::{Meta, Rebind, Stamp, Stored, decode, validate_user};
use super::store::{Guess, Moving, Started, Store, UpdateTurn, Writing};
use crate::error::{Error, Result};

#[cfg(any(feature = "axum", feature = "actix", feature = "conformance"))]
mod later;

#[cfg(any(feature = "axum", feature = "actix", feature = "conformance"))]
pub(crate) use later::SwapOutcome;

/// Where a session stands, as far as this handle knows.
#[derive(Debug)]
enum Phase {
    /// Never saved: nothing is stored.
    New,
    /// Stored, with the timestamps as last read or written by this handle; `None` for a
    /// session from a store without timestamps (the original framework's).
    Live(Option<Stamp>),
    /// Destroyed, by this handle or (as found out on a write) by another.
    Gone,
}

/// One user's session: a typed state `T` and its [`SessionId`]; made by
/// [`Sessions::start`](super::Sessions::start).
///
/// It dereferences, mutably too, to `T`. Changes stay in the handle until [`save`](Self::save) or
/// [`update`](Self::update). The handle shares its [`Sessions`](super::Sessions)' store, so it
/// is `'static` and `Send` when `T` is.
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
    store: Arc<Store>,
    /// The largest serialized state a write accepts.
    max_state_size: usize,
    id: SessionId,
    state: T,
    phase: Phase,
    /// Whether the state was borrowed mutably since the handle last read or wrote it: until it
    /// is, the handle holds no changes of its own, and [`regenerate`](Self::regenerate) moves
    /// whatever is stored rather than what the handle read. Never decided by encoding the state
    /// again and comparing bytes: a `HashMap` encodes its keys in another order each time.
    dirty: bool,
    /// The state's bytes as this handle last read or wrote them, which its next swap of the
    /// state expects first (see [`Store::swap_state`]). Never trusted: a stale guess only
    /// fails that swap, which then reads.
    stored: Option<Guess>,
    /// What the client's cookie needs after this handle's calls.
    cookie: CookieAction,
    /// The user the stored session is bound to, as this handle last read or wrote it.
    bound: Option<String>,
    /// The binding set with [`Session::set_user`] since the handle last wrote (`Some(None)`:
    /// unbind), which its next write stores with the state.
    rebind: Option<Rebind>,
}

/// What a response must do with the client's session cookie after a [`Session`]'s calls; see
/// [`Session::cookie_action`] and [`Sessions::cookie_header`](super::Sessions::cookie_header).
///
/// # Examples
///
/// ```
/// use session_archive::{MemoryArchive, Sessions};
/// use session_archive::session::CookieAction;
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
    /// Send [`Sessions::set_cookie`](super::Sessions::set_cookie): the session is new, got a new
    /// id, or its expiry moved.
    Set,
    /// Send [`Sessions::removal_cookie`](super::Sessions::removal_cookie): this handle destroyed
    /// the session.
    Remove,
}

impl<T> fmt::Debug for Session<T> {
    /// Shows the id and whether the session is stored, not the state, which may be secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.phase {
            Phase::New => "new",
            Phase::Live(_) => "live",
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
        self.dirty = true;
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
    /// [`MAX_USER_LEN`](super::MAX_USER_LEN) bytes, such as an email or a database key. The binding
    /// is stored with the session when it is next written ([`save`](Self::save),
    /// [`update`](Self::update), [`regenerate`](Self::regenerate)), together with the state, as
    /// one write: no reader ever sees the new state with the old binding or the reverse. It is
    /// not part of the state `T`. A write after no `set_user` keeps whatever binding is stored
    /// when it lands, also one that another request stored since this handle read it. A bound session is listed by
    /// [`Sessions::user_sessions`](super::Sessions::user_sessions) and destroyed by
    /// [`Sessions::revoke_user`](super::Sessions::revoke_user). A user id that is empty or too
    /// long makes the next write [`Error::InvalidUser`], writing nothing.
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
        self.rebind = Some(Rebind(user.map(str::to_owned)));
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
        match &self.rebind {
            Some(Rebind(user)) => user.as_deref(),
            None => self.bound.as_deref(),
        }
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

    /// Removes the session from the archive. Any later [`save`](Self::save),
    /// [`update`](Self::update) or [`regenerate`](Self::regenerate) on this handle is
    /// [`Error::SessionGone`], and so is a write from any other handle to the same session: a
    /// destroy that returned `Ok` is final. Destroying twice, or destroying a session that was
    /// never saved, is not an error.
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
    /// live, so the call can be repeated. (A swap whose answer was lost is read back: if no
    /// state is left, the destroy landed, and answers `Ok`.)
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
        if let Phase::Live(_) = self.phase {
            let removed = self.store.destroy(&self.id)?;
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
    /// calls; [`Sessions::cookie_header`](super::Sessions::cookie_header) turns it into the
    /// `Set-Cookie` value.
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
    /// use session_archive::{MemoryArchive, Sessions};
    /// use session_archive::session::CookieAction;
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

    /// The timestamps of the stored session as this handle last read or wrote them; `None`
    /// while it is not stored (or was stored without timestamps). The cookie's `Max-Age`
    /// follows from them.
    pub(crate) fn stored_meta(&self) -> Option<Meta> {
        match &self.phase {
            Phase::Live(Some(stamp)) => Some(stamp.meta),
            _ => None,
        }
    }

    /// A new session holding `initial` under a fresh id: nothing is stored until its first
    /// write.
    pub(crate) fn new(store: Arc<Store>, max_state_size: usize, initial: T) -> Session<T> {
        Session {
            store,
            max_state_size,
            id: SessionId::generate(),
            state: initial,
            phase: Phase::New,
            dirty: false,
            stored: None,
            cookie: CookieAction::Keep,
            bound: None,
            rebind: None,
        }
    }

    /// A handle on the stored session `id`, as [`Store::start`] found it.
    pub(crate) fn resumed(
        store: Arc<Store>,
        max_state_size: usize,
        id: SessionId,
        started: Started<T>,
    ) -> Session<T> {
        let Started {
            state,
            guess,
            stamp,
            bound,
            refreshed,
        } = started;
        Session {
            store,
            max_state_size,
            id,
            state,
            phase: Phase::Live(stamp),
            dirty: false,
            stored: Some(guess),
            cookie: if refreshed {
                CookieAction::Set
            } else {
                CookieAction::Keep
            },
            bound,
            rebind: None,
        }
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

    /// Checks the user id the next write binds the session to.
    fn check_user(&self) -> Result<()> {
        match &self.rebind {
            Some(Rebind(Some(user))) => validate_user(user),
            _ => Ok(()),
        }
    }

    /// Fails with [`Error::SessionGone`] when the session has expired. An expired session is
    /// dead: a write through a handle held past the expiry must not bring it back, whether or
    /// not a sweep has removed it yet. The handle's own timestamps decide, unless they say
    /// expired: another handle may have refreshed the session since, so the stored ones are
    /// read then.
    fn ensure_unexpired(&mut self) -> Result<()> {
        let now = self.store.now();
        let Phase::Live(Some(stamp)) = &mut self.phase else {
            return Ok(());
        };
        if !self.store.is_expired(stamp.meta, now) {
            return Ok(());
        }
        match self.store.read_meta(&self.id)? {
            Some(fresh) if !self.store.is_expired(fresh.meta, now) => {
                *stamp = fresh;
                Ok(())
            }
            _ => Err(self.gone()),
        }
    }

    /// Refreshes the timestamps and stores a changed user binding; see [`Store::touch`].
    /// Returns whether it wrote.
    fn touch(&mut self, now: u64) -> Result<bool> {
        let Phase::Live(stamp) = &mut self.phase else {
            return Ok(false);
        };
        // The binding the handle shows is the one stored with the state it holds: a touch never
        // changes it, and one that lost a race read a record whose binding may go with another
        // state.
        self.store.touch(&self.id, stamp, now)
    }

    /// After a write of the state, which is done and so answered: refreshes the timestamps when
    /// due (the cookie follows when they moved). The write kept the domain's native expiry (see
    /// [`Archive::expire_domain`](crate::archive::Archive::expire_domain)), which only a touch
    /// moves. The touch only tidies, so a failure here is not the write's: it leaves `last seen`
    /// and the native expiry where they were (the session may expire somewhat earlier than its
    /// use asks, until a later touch moves them), and answering it as an error would have a
    /// caller apply an update twice.
    fn after_write(&mut self) {
        let now = self.store.now();
        if matches!(self.touch(now), Ok(true)) {
            self.cookie = CookieAction::Set;
        }
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
    /// [limit](super::SessionsBuilder::max_state_size) (nothing is written); [`Error::Serialize`]
    /// when `T` cannot be serialized; otherwise the archive's errors. Once the state is written
    /// the save answers `Ok`: refreshing the timestamps after it is best effort. The one error
    /// whose outcome is unknown is storage failing on the write itself in a way that cannot
    /// tell whether it landed (a reply that timed out): the state is then as before or as
    /// saved, and reading it (see [`load`](Self::load)) tells which.
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
                let now = self.store.now();
                self.create(&bytes, Meta::fresh(now))
            }
            Phase::Live(_) => {
                self.check_user()?;
                self.ensure_unexpired()?;
                if self.rebind.is_some() {
                    return self.write_bound(|_| Ok((bytes.clone(), ())));
                }
                let store = Arc::clone(&self.store);
                let guess = self.take_guess();
                let Some(swapped) = store
                    .swap_state(&self.id, guess, Writing::Save, |_| Ok((bytes.clone(), ())))?
                else {
                    return Err(self.gone());
                };
                self.wrote(swapped.guess, swapped.stamp);
                self.dirty = false;
                self.after_write();
                Ok(())
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
            Phase::Live(_) => {
                let writes = self.store.writes(&self.id);
                let Stored::State(bytes) = self.store.read_state(&self.id)? else {
                    return Err(self.gone());
                };
                self.state = decode(&self.id, &bytes)?;
                self.stored = Some(Guess { bytes, writes });
                self.dirty = false;
                Ok(())
            }
        }
    }

    /// Atomically applies `change` to the stored state and stores the result, then makes that the
    /// handle's state; returns what `change` returned.
    ///
    /// It reads the stored state, applies `change` to a copy, and swaps the result in only if the
    /// stored bytes have not changed meanwhile (the archive's
    /// [`compare_and_swap`](crate::archive::Archive::compare_and_swap)); otherwise it starts again.
    /// So no concurrent update is lost, and `change` may run more than once: it should only compute
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
    /// for the result (nothing is written); otherwise the archive's errors. Once the result is
    /// stored the update answers `Ok` (refreshing the timestamps after it is best effort), so an
    /// error means it was not stored, except when storage fails on the write itself in a way
    /// that cannot tell whether it landed (a reply that timed out): then the change may be
    /// stored. Before repeating a non-idempotent change, read the session (see
    /// [`load`](Self::load)).
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
        self.begin_update()?;
        if self.rebind.is_some() {
            return self.update_bound(change);
        }
        let store = Arc::clone(&self.store);
        let turn = UpdateTurn::take(&store, &self.id);
        let guess = self.take_guess();
        let (id, limit) = (&self.id, self.max_state_size);
        let swapped = store.swap_state(id, guess, Writing::Update, |current| {
            apply(id, limit, current, &mut change)
        })?;
        drop(turn);
        let applied = swapped.map(|swapped| {
            self.wrote(swapped.guess, swapped.stamp);
            swapped.result
        });
        self.end_update(applied)
    }

    /// [`update`](Self::update) for a `change` that may run on another thread: an archive with a
    /// serial writer then runs it inside its own write. On [`RedbArchive`](crate::RedbArchive)
    /// concurrent updates of one session, which `update` makes take turns, one commit each,
    /// are applied in order in one transaction and share its commit; on other archives the two
    /// are alike. See [`Archive::update`](crate::archive::Archive::update). The axum layer's
    /// `update` does the same, and on redb awaits the commit instead of blocking a thread on it.
    ///
    /// # Errors
    ///
    /// As [`update`](Self::update). If `change` panics, nothing is written and the panic
    /// resumes here.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use session_archive::{RedbArchive, Sessions};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let sessions = Arc::new(Sessions::new(RedbArchive::open(dir.path().join("s.redb"))?));
    /// let mut first = sessions.start(None, 0_u64)?;
    /// first.save()?;
    /// let id = first.id().to_string();
    ///
    /// // Eight requests count a visit of one session at once; none is lost.
    /// std::thread::scope(|scope| {
    ///     for _ in 0..8 {
    ///         let (sessions, id) = (&sessions, &id);
    ///         scope.spawn(move || {
    ///             let mut session = sessions.start(Some(id), 0_u64)?;
    ///             session.update_send(|visits| *visits += 1)
    ///         });
    ///     }
    /// });
    /// assert_eq!(*sessions.start(Some(&id), 0_u64)?, 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn update_send<R>(&mut self, change: impl FnMut(&mut T) -> R + Send + 'static) -> Result<R>
    where
        T: Send + 'static,
        R: Send + 'static,
    {
        self.begin_update()?;
        if self.rebind.is_some() {
            return self.update_bound(change);
        }
        let last = Recorded::default();
        let guess = self.take_guess();
        let written = self
            .store
            .update_state(&self.id, guess, self.recorded(change, &last))?;
        let updated = written.is_some();
        if let Some((guess, stamp)) = written {
            self.wrote(guess, stamp);
        }
        let outcome = last.lock().take().filter(|_| updated);
        self.end_update(outcome)
    }

    /// `change` as the byte-level change of an update that may run on another thread, more than
    /// once; each run leaves what it made in `last`, so the run whose bytes were stored is the
    /// last one there.
    fn recorded<R, C>(
        &self,
        mut change: C,
        last: &Recorded<T, R>,
    ) -> impl FnMut(&[u8]) -> Result<Vec<u8>> + Send + 'static
    where
        C: FnMut(&mut T) -> R + Send + 'static,
        T: Send + 'static,
        R: Send + 'static,
    {
        let (id, limit, slot) = (self.id.clone(), self.max_state_size, Arc::clone(last));
        move |current: &[u8]| {
            let (bytes, outcome) = apply(&id, limit, current, &mut change)?;
            *slot.lock() = Some(outcome);
            Ok(bytes)
        }
    }

    /// What [`update`](Self::update) and [`update_send`](Self::update_send) check first: a new
    /// session is saved, a gone or expired one is an error, and so is an invalid binding.
    fn begin_update(&mut self) -> Result<()> {
        if let Phase::New = self.phase {
            self.save()?;
        }
        if let Phase::Gone = self.phase {
            return Err(self.gone());
        }
        self.check_user()?;
        self.ensure_unexpired()
    }

    /// Makes an update's result the handle's state, or finds the session gone when there is
    /// none, and refreshes the timestamps.
    fn end_update<R>(&mut self, applied: Option<Applied<T, R>>) -> Result<R> {
        let result = self.take_applied(applied)?;
        self.after_write();
        Ok(result)
    }

    /// Makes an update's result the handle's state, or finds the session gone when there is
    /// none.
    fn take_applied<R>(&mut self, applied: Option<Applied<T, R>>) -> Result<R> {
        let Some(Applied { state, result }) = applied else {
            return Err(self.gone());
        };
        self.state = state;
        self.dirty = false;
        Ok(result)
    }

    /// Moves the session to a fresh id; call it on login, so that an id known before login is
    /// worthless after it. The creation time is kept, so the absolute lifetime is not extended.
    /// On a session that was never saved (a visitor who logs in on the first request that keeps
    /// a session), it stores the state under a freshly drawn id, as [`save`](Self::save) does:
    /// the id the client sent, if any, is never used, and the login is stored all the same.
    ///
    /// **What moves.** When the handle holds changes of its own (its state was borrowed mutably
    /// since it last read or wrote it), those are what the new id gets: the regenerate is a
    /// write, and the last writer wins. Otherwise the new id gets whatever is stored at the
    /// moment of the move, so an update that another request made meanwhile is carried over, not
    /// lost. The binding moves the same way: the one set with [`set_user`](Self::set_user) if
    /// any, else the one stored at the moment of the move, so a state always moves with the
    /// binding stored with it.
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
    /// old id; so does a failure of the move itself (the marker is read back to tell whether it
    /// was written). Only if storage fails that read too is the outcome unknown: the call fails,
    /// the handle stays on the old id, and the copy is kept rather than removed, since it may be
    /// the session now. After the move the old domain is removed; if that fails, the marker left
    /// behind is dead to every call and the sweep removes it when the old timestamps expire.
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
        let created = match &self.phase {
            Phase::Gone => return Err(self.gone()),
            Phase::New => {
                self.id = SessionId::generate();
                return self.save();
            }
            Phase::Live(stamp) => stamp.as_ref().map(|stamp| stamp.meta.created),
        };
        // A clean handle moves what is stored at the moment of the move, which may be newer
        // than what it read; its own state is not even encoded.
        let own = if self.dirty {
            Some(self.encode(&self.state)?)
        } else {
            None
        };
        self.check_user()?;
        self.ensure_unexpired()?;
        let moving = Moving {
            own,
            rebind: self.rebind.clone(),
            created,
        };
        let store = Arc::clone(&self.store);
        let old = self.id.clone();
        let mut followed = None;
        let result = store.regenerate(&old, &moving, |next| {
            followed = Some(decode(&old, next)?);
            Ok(())
        });
        match result {
            Ok(Some(moved)) => {
                self.id = moved.id;
                self.bound = moved.stamp.user().map(str::to_owned);
                self.phase = Phase::Live(Some(moved.stamp));
                if let Some(state) = followed {
                    self.state = state;
                }
                self.rebind = None;
                self.stored = None;
                self.dirty = false;
                self.cookie = CookieAction::Set;
                Ok(())
            }
            // Every fresh id drawn was taken (a backend whose swaps never succeed): nothing was
            // written, and the session is as it was.
            Ok(None) => Err(Error::Backend {
                backend: "sessions",
                operation: "store a session under a fresh id",
                source: "every fresh id drawn was taken".into(),
            }),
            Err(Error::SessionGone { .. }) => Err(self.gone()),
            // The session is as it was (or, the move's outcome unknown, possibly moved): the
            // cookie this handle already owes (a save's, say) still stands.
            Err(err) => Err(err),
        }
    }

    /// Stores a session that is not stored yet, with `meta` as its timestamps, under this
    /// handle's id, or under a fresh one if that id is taken (see [`Store::create`]). On an
    /// error the handle stays new, and bound as before, so a later write still writes its
    /// binding.
    fn create(&mut self, bytes: &[u8], meta: Meta) -> Result<()> {
        let user = self.user().map(str::to_owned);
        let Some(stamp) = self
            .store
            .create(&mut self.id, bytes, meta, user.as_deref(), None)?
        else {
            return Err(self.gone());
        };
        self.phase = Phase::Live(Some(stamp));
        self.stored = Some(Guess {
            bytes: bytes.to_vec(),
            writes: self.store.writes(&self.id),
        });
        self.dirty = false;
        self.cookie = CookieAction::Set;
        self.bound = user;
        self.rebind = None;
        Ok(())
    }

    /// Stores the state `next` makes of the stored one together with the binding set by
    /// [`set_user`](Self::set_user), as one write (see [`Store::write_bound`]), and makes the
    /// stored record the handle's.
    fn write_bound<R>(&mut self, next: impl FnMut(&[u8]) -> Result<(Vec<u8>, R)>) -> Result<R> {
        let user = self.rebind.clone().and_then(|Rebind(user)| user);
        let now = self.store.now();
        let store = Arc::clone(&self.store);
        self.stored = None;
        let Some((stamp, result)) = store.write_bound(&self.id, user.as_deref(), now, next)? else {
            return Err(self.gone());
        };
        self.phase = Phase::Live(Some(stamp));
        self.bound = user;
        self.rebind = None;
        self.dirty = false;
        // The write moved `last seen` to now, and so the cookie's expiry.
        self.cookie = CookieAction::Set;
        Ok(result)
    }

    /// An update that also stores the binding set by [`set_user`](Self::set_user): `change`
    /// runs on this thread, in [`write_bound`](Self::write_bound).
    fn update_bound<R>(&mut self, mut change: impl FnMut(&mut T) -> R) -> Result<R> {
        let (id, limit) = (self.id.clone(), self.max_state_size);
        let applied = self.write_bound(|current| apply(&id, limit, current, &mut change))?;
        self.take_applied(Some(applied))
    }

    /// The handle's guess for its next swap of the state, with the record it holds (see
    /// [`Store::swap_state`]); taken, as the swap leaves a new one.
    fn take_guess(&mut self) -> Option<(Guess, Option<Stamp>)> {
        let record = match &self.phase {
            Phase::Live(stamp) => stamp.clone(),
            Phase::New | Phase::Gone => None,
        };
        self.stored.take().map(|guess| (guess, record))
    }

    /// After a swap of the state: `guess` is the next one, and `stamp` the record written with
    /// the state, if one was (its binding is the one stored with the state now).
    fn wrote(&mut self, guess: Guess, stamp: Option<Stamp>) {
        self.stored = Some(guess);
        if let Some(stamp) = stamp {
            self.bound = stamp.user().map(str::to_owned);
            self.phase = Phase::Live(Some(stamp));
        }
    }

    /// Serializes a state, enforcing the size limit.
    fn encode(&self, state: &T) -> Result<Vec<u8>> {
        encode(&self.id, self.max_state_size, state)
    }
}

/// Serializes the state of session `id`, enforcing the size `limit`.
fn encode<T: Serialize>(id: &SessionId, limit: usize, state: &T) -> Result<Vec<u8>> {
    let bytes = serde_json::to_vec(state).map_err(|source| Error::Serialize {
        id: id.to_string(),
        source,
    })?;
    if bytes.len() > limit {
        return Err(Error::StateTooLarge {
            id: id.to_string(),
            size: bytes.len(),
            limit,
        });
    }
    Ok(bytes)
}

/// Where an update's change, run elsewhere, leaves what its last run made.
type Recorded<T, R> = Arc<parking_lot::Mutex<Option<Applied<T, R>>>>;

/// What an update made of the stored state: the new state, and what the change returned.
struct Applied<T, R> {
    state: T,
    result: R,
}

/// Applies an update's `change` to a copy of the stored state `current` of session `id`, and
/// returns the bytes to store, the state `limit` allowing, with what they came from.
fn apply<T: Serialize + DeserializeOwned, R>(
    id: &SessionId,
    limit: usize,
    current: &[u8],
    change: &mut impl FnMut(&mut T) -> R,
) -> Result<(Vec<u8>, Applied<T, R>)> {
    let mut state: T = decode(id, current)?;
    let result = change(&mut state);
    let bytes = encode(id, limit, &state)?;
    Ok((bytes, Applied { state, result }))
}
