//! [`Session<T>`](Session), the handle both web layers give a handler: the typed state, and async
//! versions of the core session's calls that keep blocking archive work off the executor's
//! threads.

use std::fmt;
use std::ops::{Deref, DerefMut};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{SessionError, in_place};
use super::slot::Slot;
use crate::archive::Blocking;
use crate::session::Session as CoreSession;
use crate::session::id::SessionId;
use crate::session::{Sessions, SwapOutcome};

/// The session of one request, as an extractor of either web layer: the typed state `T` plus
/// async versions of the core [`Session`](crate::session::Session)'s calls. Requires the layer on
/// the route: [`SessionLayer`](crate::axum::SessionLayer) for axum,
/// [`SessionMiddleware`](crate::actix::SessionMiddleware) for actix-web (both frameworks run on
/// tokio, whose blocking pool takes the calls that may block).
///
/// Extracting it starts the session for the request's cookie (or id header) (on a blocking thread if that must
/// write to an archive whose writes block): the stored state if the cookie names a live
/// session, and otherwise `T::default()` under a fresh id. When
/// that start rewrote the session's last-seen time, the response refreshes the cookie. It
/// dereferences, mutably too, to `T`; changes stay in the handle until
/// [`save`](Self::save) or [`update`](Self::update).
///
/// Each async call that may block moves the core session to tokio's blocking pool and back (the
/// others run in place, and cannot be cancelled half-way; an `update` on redb awaits its commit
/// instead, see the [module](super)). If its future is
/// dropped before it completes (a timeout around it, say), the call still finishes in the
/// background, and the handle's next call waits for it and takes the session back first, so
/// nothing is lost or skipped: a [`destroy`](Self::destroy) after a cancelled `save` still
/// destroys. [`settle`](Self::settle) waits for it alone.
///
/// Until then the handle answers from what it knew when the call began: [`id`](Self::id),
/// [`user`](Self::user), [`is_new`](Self::is_new) and the state it dereferences to are the
/// session's as they were then. (For that, a call that goes to a blocking thread first copies
/// the state through its serde form, the one it is stored in; a state that does not come back
/// from that form, and so could not be read back from the archive either, shows as
/// `T::default()`.) So "sign out other devices" with [`id`](Self::id) after a cancelled
/// `update` keeps this device. What the call itself changes (an `update`'s or `load`'s new
/// state, a `regenerate`'s new id) shows once it has settled: `settle` first where that
/// matters. Changes made through the handle meanwhile (through `DerefMut` or
/// [`set_user`](Self::set_user)) are the handle's own, as if made after the call: they replace
/// the call's state, or binding, when it settles, and the next write stores them.
///
/// If a call panics (an `update` closure, or `T`'s `Serialize`), the session goes with it: the
/// handle keeps answering what it knew before that call, and every later call on it fails with
/// [`SessionError::Lost`]; the stored session is as the panicked call left it. A call run in
/// place is caught the same way.
///
/// # Examples
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use session_archive::web::{Session, SessionError};
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct State {
///     name: String,
/// }
///
/// // A handler of either framework: the name comes from a form in a real one.
/// async fn set_name(mut session: Session<State>, name: String) -> Result<(), SessionError> {
///     session.name = name;
///     session.save().await
/// }
/// # let _ = set_name;
/// ```
pub struct Session<T> {
    handle: Handle<T>,
    slot: Slot,
}

/// Where a handle's session is.
enum Handle<T> {
    /// In the handle: calls run on it.
    Ready(CoreSession<T>),
    /// Away on a blocking thread, in a call that gives it back when it ends (also when the call's
    /// future was dropped); the handle answers from `last` meanwhile.
    Running {
        call: tokio::task::JoinHandle<CoreSession<T>>,
        last: Known<T>,
    },
    /// Gone with a call that panicked; the handle answers from what it knew before that call.
    Lost(Known<T>),
}

/// What a handle knows of its session while the session is not in it: the id, whether it was
/// stored, the user binding and the state, as they were when the session left, with the changes
/// made through the handle since.
struct Known<T> {
    id: SessionId,
    is_new: bool,
    user: Option<String>,
    state: T,
    /// Whether the state was changed through the handle since the session left.
    state_changed: bool,
    /// Whether the binding was changed through the handle since the session left.
    user_changed: bool,
}

impl<T: Serialize + DeserializeOwned + Default> Known<T> {
    /// What `core` shows now, its state copied through its serde form, the one it is stored in.
    /// A state that does not come back from that form (then it could not be read back from the
    /// archive either) is shown as `T::default()`.
    fn copy(core: &CoreSession<T>) -> Known<T> {
        let state = serde_json::to_vec(&**core)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Known::with_state(core, state)
    }

    /// What `core` shows now, its state taken out of it (the core is left `T::default()`).
    fn taken(core: &mut CoreSession<T>) -> Known<T> {
        let state = std::mem::take(&mut **core);
        Known::with_state(core, state)
    }

    fn with_state(core: &CoreSession<T>, state: T) -> Known<T> {
        Known {
            id: core.id().clone(),
            is_new: core.is_new(),
            user: core.user().map(str::to_owned),
            state,
            state_changed: false,
            user_changed: false,
        }
    }

    /// Moves out what this holds, leaving `T::default()` as its state.
    fn take(&mut self) -> Known<T> {
        Known {
            id: self.id.clone(),
            is_new: self.is_new,
            user: self.user.take(),
            state: std::mem::take(&mut self.state),
            state_changed: self.state_changed,
            user_changed: self.user_changed,
        }
    }

    /// Gives `core`, back from a call, the changes made through the handle while it was away.
    fn give_changes(&mut self, core: &mut CoreSession<T>) {
        if self.state_changed {
            **core = std::mem::take(&mut self.state);
        }
        if self.user_changed {
            core.set_user(self.user.as_deref());
        }
    }
}

impl<T> Handle<T> {
    /// The session, when it is in the handle: always so after a `settle` that returned `Ok`.
    fn ready(&mut self) -> Result<&mut CoreSession<T>, SessionError> {
        match self {
            Handle::Ready(core) => Ok(core),
            Handle::Running { .. } | Handle::Lost(_) => Err(SessionError::Lost),
        }
    }
}

impl<T> fmt::Debug for Session<T> {
    /// Shows what the core session shows: the id and whether it is stored, not the state.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (last, phase) = match &self.handle {
            Handle::Ready(core) => return core.fmt(f),
            Handle::Running { last, .. } => (last, "settling"),
            Handle::Lost(last) => (last, "lost"),
        };
        f.debug_struct("Session")
            .field("id", &last.id)
            .field("phase", &phase)
            .finish_non_exhaustive()
    }
}

impl<T> Deref for Session<T> {
    type Target = T;

    fn deref(&self) -> &T {
        match &self.handle {
            Handle::Ready(core) => core,
            Handle::Running { last, .. } | Handle::Lost(last) => &last.state,
        }
    }
}

impl<T> DerefMut for Session<T> {
    fn deref_mut(&mut self) -> &mut T {
        match &mut self.handle {
            Handle::Ready(core) => core,
            Handle::Running { last, .. } | Handle::Lost(last) => {
                last.state_changed = true;
                &mut last.state
            }
        }
    }
}

impl<T> Session<T>
where
    T: Default + Serialize + DeserializeOwned + Send + 'static,
{
    /// Starts the session of the request `slot` belongs to: what extracting a [`Session`] does
    /// in either framework.
    ///
    /// Starting a stored session only reads, except now and then (see
    /// `Sessions::start_without_writing`). Reads that cannot block run in place; where the
    /// archive reads without a thread (an async path), the read is awaited; only a start that
    /// must write, on an archive whose writes block, takes a blocking thread.
    pub(crate) async fn start(slot: Slot) -> Result<Session<T>, SessionError> {
        let slot = slot.for_new_handle();
        let sessions = slot.sessions();
        let id = slot.client_id().map(SessionId::as_str);
        let blocking = sessions.blocking();
        let core = if blocking.reads_block() {
            // The read is awaited; the rest of the start, which only decodes, runs in place.
            match sessions.prefetch(id) {
                Some((id, prefetch)) => {
                    let read = (prefetch.writes, prefetch.read.await?);
                    in_place(|| sessions.start_prefetched(id, read, T::default()))??.ok()
                }
                None => None,
            }
        } else if blocking.writes_block() {
            in_place(|| sessions.start_without_writing(id, T::default()))??.ok()
        } else {
            Some(in_place(|| sessions.start(id, T::default()))??)
        };
        let core = if let Some(core) = core {
            core
        } else {
            let slot = slot.clone();
            tokio::task::spawn_blocking(move || {
                let id = slot.client_id().map(SessionId::as_str);
                slot.sessions().start(id, T::default())
            })
            .await
            .map_err(SessionError::Task)??
        };
        // Reading the session may have moved its idle expiry on the server; the cookie follows,
        // or the browser would drop it while the server still holds the session.
        slot.record(&core);
        Ok(Session {
            handle: Handle::Ready(core),
            slot,
        })
    }
}

impl<T> Session<T>
where
    T: Default + Serialize + DeserializeOwned + Send + 'static,
{
    /// Returns the session's id. While a cancelled call settles (see [`Session`]), the id the
    /// session had when that call began: a cancelled [`regenerate`](Self::regenerate) may have
    /// moved it since, which [`settle`](Self::settle) finds out.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::web::Session;
    ///
    /// async fn whoami(session: Session<u32>) -> String {
    ///     session.id().to_string()
    /// }
    /// # let _ = whoami;
    /// ```
    pub fn id(&self) -> &SessionId {
        match &self.handle {
            Handle::Ready(core) => core.id(),
            Handle::Running { last, .. } | Handle::Lost(last) => &last.id,
        }
    }

    /// Returns whether the session has never been saved (nothing of it is stored); while a
    /// cancelled call settles, whether it had been when that call began.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::web::Session;
    ///
    /// async fn greet(session: Session<u32>) -> &'static str {
    ///     if session.is_new() { "Welcome!" } else { "Welcome back!" }
    /// }
    /// # let _ = greet;
    /// ```
    pub fn is_new(&self) -> bool {
        match &self.handle {
            Handle::Ready(core) => core.is_new(),
            Handle::Running { last, .. } | Handle::Lost(last) => last.is_new,
        }
    }

    /// Binds the session to a user, or unbinds it; stored with the next write. See
    /// [`crate::session::Session::set_user`]. On login, bind before
    /// [`regenerate`](Self::regenerate).
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::web::{Session, SessionError};
    ///
    /// async fn login(mut session: Session<String>) -> Result<(), SessionError> {
    ///     *session = "alice".into(); // after checking alice's password
    ///     session.set_user(Some("alice"));
    ///     session.regenerate().await
    /// }
    /// # let _ = login;
    /// ```
    pub fn set_user(&mut self, user: Option<&str>) {
        match &mut self.handle {
            Handle::Ready(core) => core.set_user(user),
            Handle::Running { last, .. } | Handle::Lost(last) => {
                last.user = user.map(str::to_owned);
                last.user_changed = true;
            }
        }
    }

    /// Returns the user the session is bound to; see [`crate::session::Session::user`]. While a
    /// cancelled call settles, the binding as it was when that call began (or as set since).
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::web::Session;
    ///
    /// async fn whoami(session: Session<()>) -> String {
    ///     session.user().unwrap_or("nobody").to_owned()
    /// }
    /// # let _ = whoami;
    /// ```
    pub fn user(&self) -> Option<&str> {
        match &self.handle {
            Handle::Ready(core) => core.user(),
            Handle::Running { last, .. } | Handle::Lost(last) => last.user.as_deref(),
        }
    }

    /// Returns the layer's [`Sessions`], for what goes beyond this one session: listing and
    /// revoking a user's sessions ([`Sessions::user_sessions`], [`Sessions::revoke_user`],
    /// [`Sessions::revoke_user_except`]). Those calls may block on storage; run them with
    /// `tokio::task::spawn_blocking`.
    ///
    /// # Examples
    ///
    /// "Sign out other devices":
    ///
    /// ```
    /// use session_archive::web::{Session, SessionError};
    ///
    /// async fn sign_out_others(session: Session<()>) -> Result<String, SessionError> {
    ///     let (Some(user), sessions) = (session.user().map(str::to_owned), session.sessions().clone())
    ///     else {
    ///         return Ok("not signed in".to_owned());
    ///     };
    ///     let keep = session.id().clone();
    ///     let revoked = tokio::task::spawn_blocking(move || sessions.revoke_user_except(&user, &keep))
    ///         .await
    ///         .map_err(SessionError::Task)??;
    ///     Ok(format!("signed out {revoked} other devices"))
    /// }
    /// # let _ = sign_out_others;
    /// ```
    pub fn sessions(&self) -> &Sessions {
        self.slot.sessions()
    }

    /// Stores the state, off the executor; see [`crate::session::Session::save`]. The response then
    /// sets the session cookie.
    ///
    /// # Errors
    ///
    /// Those of [`crate::session::Session::save`], and [`SessionError::Task`] or
    /// [`SessionError::Panicked`] if the call panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::web::{Session, SessionError};
    ///
    /// async fn remember(mut session: Session<Vec<String>>) -> Result<(), SessionError> {
    ///     session.push("seen".into());
    ///     session.save().await
    /// }
    /// # let _ = remember;
    /// ```
    pub async fn save(&mut self) -> Result<(), SessionError> {
        self.run(Access::Write, CoreSession::save).await
    }

    /// Replaces the handle's state with the stored one, off the executor; see
    /// [`crate::session::Session::load`].
    ///
    /// # Errors
    ///
    /// Those of [`crate::session::Session::load`], and [`SessionError::Task`] or
    /// [`SessionError::Panicked`] if the call panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::web::{Session, SessionError};
    ///
    /// async fn reread(mut session: Session<u32>) -> Result<String, SessionError> {
    ///     session.load().await?;
    ///     Ok(session.to_string())
    /// }
    /// # let _ = reread;
    /// ```
    pub async fn load(&mut self) -> Result<(), SessionError> {
        self.run(Access::Read, CoreSession::load).await
    }

    /// Atomically applies `change` to the stored state, off the executor, and returns what it
    /// returned; see [`crate::session::Session::update_send`]: on redb, concurrent updates of one
    /// session share a commit. `change` may run more than once, so it should only compute from
    /// the state it is given. The response then sets the session cookie.
    ///
    /// # Errors
    ///
    /// Those of [`crate::session::Session::update`], and [`SessionError::Task`] or
    /// [`SessionError::Panicked`] if the call panicked (for instance because `change` panicked).
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::web::{Session, SessionError};
    ///
    /// async fn count(mut session: Session<u64>) -> Result<String, SessionError> {
    ///     let n = session.update(|n| {
    ///         *n += 1;
    ///         *n
    ///     }).await?;
    ///     Ok(format!("Visit #{n}"))
    /// }
    /// # let _ = count;
    /// ```
    pub async fn update<R>(
        &mut self,
        change: impl FnMut(&mut T) -> R + Send + 'static,
    ) -> Result<R, SessionError>
    where
        R: Send + 'static,
    {
        let blocking = self.slot.sessions().blocking();
        let change = if blocking.writes_block() && !blocking.update_async_blocks() {
            match self.update_without_a_thread(change).await {
                Ok(outcome) => return outcome,
                Err(change) => change,
            }
        } else {
            match self.update_by_async_swap(change).await {
                Ok(outcome) => return outcome,
                Err(change) => change,
            }
        };
        self.run(Access::Write, move |core| core.update_send(change))
            .await
    }

    /// An update as one swap of the state from the handle's guess, on an archive with an async
    /// path for it ([`Archive::compare_and_swap_many_async`](crate::Archive::compare_and_swap_many_async)):
    /// `change` runs here on the guess, and the swap is awaited, so the request takes no
    /// blocking thread at all. `change` comes back when this cannot be (see `swap_later`), or
    /// when another write landed first: the caller then runs the update as usual, and `change`
    /// runs again. A swap whose outcome is unknown is settled by a read on a blocking thread.
    /// If this future is dropped while it waits, the update may still be stored, and the
    /// handle keeps the state it had.
    async fn update_by_async_swap<R, C>(&mut self, change: C) -> Result<Result<R, SessionError>, C>
    where
        C: FnMut(&mut T) -> R + Send + 'static,
        R: Send + 'static,
    {
        if let Err(err) = self.settle().await {
            return Ok(Err(err));
        }
        let core = match self.handle.ready() {
            Ok(core) => core,
            Err(err) => return Ok(Err(err)),
        };
        let mut later = match in_place(|| core.swap_later(change)) {
            Ok(Ok(later)) => later,
            Ok(Err(change)) => return Err(change),
            Err(panicked) => {
                self.poison();
                return Ok(Err(panicked));
            }
        };
        let swapped = match later.take_swap() {
            Some(swap) => swap.await,
            None => Ok(false),
        };
        let core = match self.handle.ready() {
            Ok(core) => core,
            Err(err) => return Ok(Err(err)),
        };
        match core.finish_swap_later(later, swapped) {
            SwapOutcome::Done(result) => {
                self.slot.record(core);
                Ok(Ok(result))
            }
            SwapOutcome::Again(change) => Err(change),
            SwapOutcome::Unknown(unsettled, err) => Ok(self
                .run(Access::Write, move |core| core.settle_swap(unsettled, err))
                .await),
        }
    }

    /// An update on an archive that waits for its commits without a thread
    /// ([`Blocking::Commits`]): the checks and the queueing run here, and the commit is
    /// awaited, so the request takes no blocking thread at all. `change` comes back when the
    /// update would write more than the state (see `update_later`): the caller then runs it as
    /// usual. A panic in `change`, which runs in the commit, poisons the handle as on a
    /// blocking thread; if this future is dropped while it waits, the update may still be
    /// stored, and the handle keeps the state it had.
    async fn update_without_a_thread<R, C>(
        &mut self,
        change: C,
    ) -> Result<Result<R, SessionError>, C>
    where
        C: FnMut(&mut T) -> R + Send + 'static,
        R: Send + 'static,
    {
        if let Err(err) = self.settle().await {
            return Ok(Err(err));
        }
        let core = match self.handle.ready() {
            Ok(core) => core,
            Err(err) => return Ok(Err(err)),
        };
        let mut later = match core.update_later(change) {
            Ok(later) => later,
            Err(change) => return Err(change),
        };
        let written = std::future::poll_fn(|cx| match in_place(|| later.poll_written(cx)) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(written)) => std::task::Poll::Ready(Ok(written)),
            Err(panicked) => std::task::Poll::Ready(Err(panicked)),
        })
        .await;
        let outcome = match written {
            Ok(written) => core.finish_update_later(later, written),
            Err(panicked) => {
                self.poison();
                return Ok(Err(panicked));
            }
        };
        self.slot.record(core);
        Ok(outcome.map_err(SessionError::from))
    }

    /// Moves the session to a fresh id, off the executor; see
    /// [`crate::session::Session::regenerate`]. Call it on login: change the state, then
    /// regenerate, with no `save` before it, so the authenticated state is only ever stored under
    /// the new id. The response then sets the cookie to the new id.
    ///
    /// # Errors
    ///
    /// Those of [`crate::session::Session::regenerate`], and [`SessionError::Task`] or
    /// [`SessionError::Panicked`] if the call panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::web::{Session, SessionError};
    ///
    /// async fn login(mut session: Session<String>) -> Result<(), SessionError> {
    ///     *session = "alice".into(); // no save: the new id is the first to hold it
    ///     session.regenerate().await
    /// }
    /// # let _ = login;
    /// ```
    pub async fn regenerate(&mut self) -> Result<(), SessionError> {
        self.run(Access::Write, CoreSession::regenerate).await
    }

    /// Removes the session from the archive, off the executor; see
    /// [`crate::session::Session::destroy`]. The response then expires the client's cookie.
    ///
    /// # Errors
    ///
    /// Those of [`crate::session::Session::destroy`], and [`SessionError::Task`] or
    /// [`SessionError::Panicked`] if the call panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::web::{Session, SessionError};
    ///
    /// async fn logout(mut session: Session<String>) -> Result<&'static str, SessionError> {
    ///     session.destroy().await?;
    ///     Ok("Bye")
    /// }
    /// # let _ = logout;
    /// ```
    pub async fn destroy(&mut self) -> Result<(), SessionError> {
        self.run(Access::Write, CoreSession::destroy).await
    }

    /// Waits for a call whose future was dropped before it completed (a timeout around it, say)
    /// to finish on its blocking thread, and takes the session back from it; does nothing when
    /// no such call is running. Afterwards [`id`](Self::id), [`user`](Self::user) and the state
    /// are the session's as that call left them, with the changes made through the handle
    /// meanwhile (see [`Session`]). Every call does this first; call it yourself before reading
    /// the id after a cancelled [`regenerate`](Self::regenerate), which may have moved the
    /// session to a new one.
    ///
    /// If this future is dropped in turn, the call keeps running, and the next `settle` (or
    /// call) waits for it again. Settling reports neither the outcome nor the error of the
    /// cancelled call, whose caller gave up on it.
    ///
    /// # Errors
    ///
    /// [`SessionError::Task`] if the cancelled call panicked; [`SessionError::Lost`] if an
    /// earlier one did.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_archive::web::{Session, SessionError};
    ///
    /// async fn login(mut session: Session<String>) -> Result<String, SessionError> {
    ///     *session = "alice".into();
    ///     let login = session.regenerate();
    ///     if tokio::time::timeout(Duration::from_secs(2), login).await.is_err() {
    ///         // The regenerate still runs; wait for it to know which id the session has.
    ///         session.settle().await?;
    ///     }
    ///     Ok(session.id().to_string())
    /// }
    /// # let _ = login;
    /// ```
    pub async fn settle(&mut self) -> Result<(), SessionError> {
        let (call, last) = match &mut self.handle {
            Handle::Ready(_) => return Ok(()),
            Handle::Lost(_) => return Err(SessionError::Lost),
            Handle::Running { call, last } => (call, last),
        };
        // If this future is dropped here, the call stays, and the next settle waits again.
        match call.await {
            Ok(mut core) => {
                last.give_changes(&mut core);
                self.handle = Handle::Ready(core);
                Ok(())
            }
            Err(err) => {
                self.handle = Handle::Lost(last.take());
                Err(SessionError::Task(err))
            }
        }
    }

    /// Runs `op` on the core session, and records the cookie the call calls for.
    ///
    /// If `op`'s archive calls cannot block (see [`Archive::blocking`](crate::Archive::blocking)),
    /// it runs right here: there is no await in between, so it cannot be cancelled half-way, and
    /// a panic poisons the handle as on a blocking thread. Otherwise it runs on a blocking
    /// thread, and the session is put back when it ends; the thread records the cookie as soon
    /// as the call ends, so a call whose future was dropped still sets it if the response has
    /// not gone out yet.
    async fn run<R>(
        &mut self,
        access: Access,
        op: impl FnOnce(&mut CoreSession<T>) -> crate::error::Result<R> + Send + 'static,
    ) -> Result<R, SessionError>
    where
        R: Send + 'static,
    {
        let blocks = access.blocks(self.slot.sessions().blocking());
        self.settle().await?;
        let core = self.handle.ready()?;
        if !blocks {
            return match in_place(|| op(core)) {
                Ok(outcome) => {
                    self.slot.record(core);
                    Ok(outcome?)
                }
                Err(panicked) => {
                    self.poison();
                    Err(panicked)
                }
            };
        }
        let last = match in_place(|| Known::copy(core)) {
            Ok(last) => last,
            Err(panicked) => {
                self.poison();
                return Err(panicked);
            }
        };
        let (answer, result) = tokio::sync::oneshot::channel();
        self.send_away(last, move |mut core, slot| {
            let outcome = op(&mut core);
            slot.record(&core);
            // The receiver is gone only if this call's future was dropped; the outcome is then
            // nobody's to read, but the session still goes back to the handle.
            let _ = answer.send(outcome);
            core
        });
        self.settle().await?;
        Ok(result.await.map_err(|_| SessionError::Lost)??)
    }

    /// Moves the session, which is in the handle, to a blocking thread that runs `call` on it and
    /// gives it back; the handle answers from `last` until then.
    fn send_away(
        &mut self,
        last: Known<T>,
        call: impl FnOnce(CoreSession<T>, Slot) -> CoreSession<T> + Send + 'static,
    ) {
        // The handle is `Lost(last)` only until the call is spawned, with no await in between.
        let Handle::Ready(core) = std::mem::replace(&mut self.handle, Handle::Lost(last)) else {
            return;
        };
        let slot = self.slot.clone();
        let call = tokio::task::spawn_blocking(move || call(core, slot));
        if let Handle::Lost(last) = &mut self.handle {
            self.handle = Handle::Running {
                call,
                last: last.take(),
            };
        }
    }

    /// After a panic in a call run in place: as when a blocking thread panics, the session goes
    /// with the call, and the handle answers [`SessionError::Lost`] from then on.
    fn poison(&mut self) {
        if let Handle::Ready(core) = &mut self.handle {
            self.handle = Handle::Lost(Known::taken(core));
        }
    }
}

/// Whether a session call only reads the archive (`load`) or may write to it.
#[derive(Clone, Copy)]
enum Access {
    Read,
    Write,
}

impl Access {
    /// Whether a call of this kind may block on an archive that answers `blocking`.
    fn blocks(self, blocking: Blocking) -> bool {
        match self {
            Access::Read => blocking.reads_block(),
            Access::Write => blocking.writes_block(),
        }
    }
}
