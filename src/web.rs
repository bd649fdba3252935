//! What the two web layers share, with no framework in it: the [`Session<T>`](Session) handle
//! a handler extracts, its [`SessionError`], and what one request shares between the layer and
//! the handle (the id the client sent, where ids travel, the answer the session's calls asked
//! for). [`axum`](crate::axum) (feature `axum`) and [`actix`](crate::actix) (feature `actix`)
//! adapt these to their framework's types and nothing more, so both layers follow the same
//! rules, listed here once:
//!
//! - [`Session<T>`] is the extractor. It starts the session for the request's cookie (or id
//!   header: a missing, malformed, unknown or expired id gets a fresh server-generated id; the
//!   client's value is never adopted nor echoed back) and dereferences, mutably too, to `T`.
//!   Its [`save`](Session::save), [`load`](Session::load), [`update`](Session::update),
//!   [`regenerate`](Session::regenerate) and [`destroy`](Session::destroy) are `async`: the
//!   core [`Session`](crate::session::Session) calls they wrap may block on disk (durable writes),
//!   so those run on tokio's blocking threads (`spawn_blocking`), never on the executor's. Calls
//!   the archive says cannot block ([`Archive::blocking`](crate::Archive::blocking): every call
//!   of [`MemoryArchive`](crate::MemoryArchive), the reads of
//!   [`RedbArchive`](crate::RedbArchive)) run in place, since a hop to another thread and back
//!   costs more than they do. An [`update`](Session::update) on an archive that waits for its
//!   commits without a thread ([`Blocking::Commits`](crate::Blocking::Commits): redb)
//!   queues its write in place and awaits the commit, the commit's leader waking it. So a
//!   request over redb that starts its session and updates it takes no blocking thread (unless
//!   it must also rewrite the session's timestamps, once per eighth of the idle timeout, or
//!   store a new user binding: that update takes one hop), and one over memory takes none.
//! - Nothing is written, and no cookie is set, for a visitor whose session is never saved.
//!   The response carries the `Set-Cookie` that the session's calls call for (see
//!   [`crate::session::Session::cookie_action`]): the cookie after the first save and after a
//!   `regenerate`, a refreshed `Max-Age` only when the session's expiry actually moved (its
//!   last-seen time is rewritten at most once per eighth of the idle timeout), and the removal
//!   cookie after a `destroy` that removed the session.
//! - **Concurrent requests never undo each other's cookies.** A request whose session another
//!   request destroyed or moved to a new id (a login's `regenerate`) while it ran gets
//!   [`Error::SessionGone`](crate::Error::SessionGone) from its writes and sends no `Set-Cookie` at all: it neither
//!   expires the client's cookie nor hands back the dead id, so a slow request that answers
//!   after the login response cannot log the user out. A cookie that would only refresh the id
//!   the client sent is sent after checking that the id is still live
//!   ([`Sessions::is_live`](crate::Sessions::is_live)). (That check is the last moment the layer can act: a login that
//!   moves the session after it, while this response is on its way, can still see this refresh
//!   of the old id reach the browser after its own cookie. The window is the response's time in
//!   flight, and a refresh is sent at most once per eighth of the idle timeout; the old id is
//!   dead by then, so the browser's next request simply starts a fresh session.) Of two
//!   concurrent logins (a double-submitted form) one regenerate wins and sets the new cookie;
//!   the other fails without touching it.
//! - Errors are [`SessionError`]s, which become HTTP responses in either framework, with the
//!   status and body its table gives for each kind.
//!
//! The extractor takes its [`Sessions`](crate::Sessions) from the layer, so it works with any app state.
//!
//! - **Cancellation.** A call whose future is dropped (a `timeout` around it) still finishes on
//!   its blocking thread, and the handle's next call waits for it first, so a `destroy` after a
//!   cancelled `save` still destroys; [`Session::settle`] waits for it alone. Until then the
//!   handle answers the session's id, user and state as they were when the call began, never a
//!   stand-in. An update that was awaiting its commit is still committed, and the handle keeps
//!   the state it had; a `destroy` after it is final. After a call panicked, the session is
//!   lost with it and every later call is [`SessionError::Lost`], never a silent success.
//! - **Attributes.** The cookie's attributes come from the [`Sessions`](crate::Sessions): `HttpOnly`,
//!   `SameSite=Lax`, `Path=/`, and `Secure` unless built with
//!   [`.secure(false)`](crate::session::SessionsBuilder::secure) (plain-HTTP development only).
//!   Response bodies of errors carry no ids, paths or causes; the log does.
//!
//! # Login, and signing out everywhere
//!
//! On login, change the state and bind the user with [`Session::set_user`], then
//! [`regenerate`](Session::regenerate), with no `save` before it: the authenticated state is
//! only ever stored under the new id. A session bound to a user is listed by
//! [`Sessions::user_sessions`](crate::Sessions::user_sessions) and destroyed by [`Sessions::revoke_user`](crate::Sessions::revoke_user) ("sign out
//! everywhere", after a password change) or [`Sessions::revoke_user_except`](crate::Sessions::revoke_user_except) ("sign out other
//! devices"); those calls may block on storage, so they run on a blocking thread. A revoke is
//! final: a session saved, updated or regenerated while it runs does not survive it. See the
//! [`session`](crate::session) module for the whole story.
//!
//! ```
//! use session_archive::web::{Session, SessionError};
//!
//! #[derive(Default, serde::Serialize, serde::Deserialize)]
//! struct State {
//!     name: Option<String>,
//! }
//!
//! async fn login(mut session: Session<State>) -> Result<(), SessionError> {
//!     // ... after checking the password:
//!     session.name = Some("ada".into());
//!     session.set_user(Some("ada@example.com")); // bound with the new id only
//!     session.regenerate().await // no save before: no fixation window
//! }
//!
//! async fn sign_out_other_devices(session: Session<State>) -> Result<String, SessionError> {
//!     let Some(user) = session.user().map(str::to_owned) else {
//!         return Ok("not signed in".to_owned());
//!     };
//!     let (sessions, keep) = (session.sessions().clone(), session.id().clone());
//!     let revoked = tokio::task::spawn_blocking(move || sessions.revoke_user_except(&user, &keep))
//!         .await
//!         .map_err(SessionError::Task)??;
//!     Ok(format!("signed out {revoked} other devices"))
//! }
//! # let _ = (login, sign_out_other_devices);
//! ```
//!
//! # Ids in a header, for clients without cookies
//!
//! Both layers can also take the session id from a request header the application names, and
//! answer it in the same response header (axum's
//! [`SessionLayer::with_id_header`](crate::axum::SessionLayer::with_id_header), actix-web's
//! [`SessionMiddleware::with_id_header`](crate::actix::SessionMiddleware::with_id_header)), as
//! well as in the cookie or, with `without_cookie`, instead of it. The rules are the cookie's:
//! an id the client made up, or one that names no live session, is never adopted (the session
//! starts under a fresh server id), and the response carries the header exactly when it would
//! carry a `Set-Cookie`: the id after a session is first stored or moved, and after an expiry
//! refresh; an empty value after a destroy (forget the id). When a request carries both, the
//! header's id is the one used, and an id that came in the header alone is never written into
//! the cookie: its refresh or destroy answers in the header only, so that whoever can make a
//! browser send the header cannot plant a session in the browser's cookie (a session the
//! server makes or moves, a fresh one or a login's, answers in both). Every response of a layer
//! with an id header says `Vary: <header>`.
//!
//! A response that carries an id, by cookie or header (or takes one back), also says
//! `Cache-Control: private, no-store`, replacing the application's: an id is a bearer token,
//! which no shared cache may keep and hand to another client. Several `Session` extractors in
//! one request (a middleware's and the handler's) each record their answer; one whose calls
//! ask for nothing never takes back another's. Each starts from the id the client sent, so a
//! session the first stores under a new id is not the one a second, fresh, handle sees: take
//! the session once per request.

mod error;
mod handle;
mod slot;

pub use self::error::SessionError;
pub use self::handle::Session;
pub(crate) use self::slot::{Answer, Field, Slot, Transport};
