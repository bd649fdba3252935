//! Typed web sessions over any [`Archive`](crate::Archive): [`Sessions`], [`Session`], expiry
//! and the sweep, cookies, and sessions per user.
//!
//! `Sessions` starts typed sessions over an archive; the state is any `Serialize +
//! DeserializeOwned` type, stored as compact JSON under `<id>/session.json`, exactly the
//! original framework's layout.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use session_archive::MemoryArchive;
//! use session_archive::session::Sessions;
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct State {
//!     #[serde(rename = "Name")]
//!     name: String,
//!     visits: u32,
//! }
//!
//! let sessions = Sessions::new(MemoryArchive::new());      // any Archive, Arc<dyn Archive> too
//! let cookie_header: Option<&str> = None;                  // the request's `Cookie` header
//! let mut session = sessions.start_from_cookie_header(cookie_header, State::default())?;
//! session.name = "World".into();                           // Session<T> derefs, mutably too, to T
//! session.save()?;                                         // last writer wins
//! session.load()?;                                         // re-read the stored state
//! session.update(|s| s.visits += 1)?;                      // atomic read-modify-write
//! session.regenerate()?;                                   // fresh id, same state (on login)
//! let set_cookie = sessions.cookie_header(&session);       // the `Set-Cookie` to send, if any
//! session.destroy()?;                                      // later saves are Err(SessionGone)
//! # let _ = set_cookie;
//! # Ok::<(), session_archive::Error>(())
//! ```
//!
//! `Sessions` is cheap to clone and `Send + Sync`; a `Session<T>` is `'static + Send` when `T`
//! is. `Sessions` keeps the archive as an `Arc<dyn Archive>`, so `Session<State>` is one type
//! whatever the backend. The `session_archive::axum` module (feature `axum`) wraps all this in a
//! layer and an extractor; the `session_archive::tower_sessions` module (feature `tower-sessions`)
//! offers the archives to tower-sessions applications instead.
//!
//! # Ids and fixation
//!
//! Ids are UUID v4 from the OS's secure random generator. [`Sessions::start`] accepts an
//! incoming id only if it is a lowercase hyphenated UUID (any version or variant nibble, so ids
//! the original framework wrote keep working) *and* names a stored, unexpired session. Anything
//! else (empty, `..`, `../../etc`, uppercase, unknown, expired, destroyed) gets a new
//! server-generated id: a client-chosen id is never adopted. A new session writes nothing until
//! its first `save`, so anonymous traffic cannot fill the storage.
//!
//! **Ids never reach logs.** An id is a bearer token: `Debug` of [`SessionId`] and `Session`,
//! every [`Error`](crate::Error) message and `Debug` (directory-tree paths included), and the
//! axum layer's logs show a [fingerprint](SessionId::fingerprint) (`#` and 12 hex digits of the
//! id's SHA-256) instead.
//!
//! **Ids hashed at rest** ([`SessionsBuilder::hash_ids_at_rest`], off by default) store each
//! session, and its index entries, under the SHA-256 of its id, so a leaked backup, Redis dump
//! or directory listing holds no usable cookie. Turn it on whenever people or systems that must
//! not act as your users can read the storage; it costs one SHA-256 per archive call. Leave it
//! off where the original framework's `.gen/sessions/<id>/session.json` layout must stay
//! readable by id. Turning it on over existing sessions starts their users afresh
//! ([`Sessions::adopt_legacy`] removes the old domains).
//!
//! # Login: regenerate, and no fixation window
//!
//! On login, change the state and bind the user, then [`regenerate`](Session::regenerate), with
//! no `save` before it: the authenticated state is then only ever stored under the new id, never
//! under the id the client (or an attacker who planted it) had before. The old id is dead from
//! that moment: a request still holding it finds its writes [`Error::SessionGone`] and sends no
//! cookie, so it cannot log the user out again.
//!
//! ```
//! use session_archive::MemoryArchive;
//! use session_archive::session::{CookieAction, Sessions};
//!
//! let sessions = Sessions::new(MemoryArchive::new());
//! let mut session = sessions.start(None, String::from("anonymous"))?;
//! session.save()?;
//! let before_login = session.id().clone();
//!
//! // ... after checking the password:
//! *session = "ada".into();
//! session.set_user(Some("ada@example.com")); // bound under the new id only
//! session.regenerate()?;
//! assert_eq!(session.cookie_action(), CookieAction::Set); // hand out the new id
//! assert!(!sessions.is_live(&before_login)?);
//! # Ok::<(), session_archive::Error>(())
//! ```
//!
//! # Sign out everywhere
//!
//! A session bound to a user with [`Session::set_user`] is listed by
//! [`Sessions::user_sessions`] and destroyed by [`Sessions::revoke_user`] ("sign out
//! everywhere", after a password change) or [`Sessions::revoke_user_except`] ("sign out other
//! devices"), each O(that user's sessions). User ids may be any string of 1 byte to
//! [`MAX_USER_LEN`] bytes: the index (`user-<h>`) is keyed by their SHA-256. A revoke is final: a
//! session saved, updated or regenerated while it runs does not survive it. The CLI does the
//! same: `session-archive user-sessions SPEC USER` lists a user's sessions by fingerprint, and
//! `session-archive revoke-user SPEC USER` revokes them and prints the count.
//!
//! # Between operations
//!
//! A session operation is several archive calls; another request, process or sweep can act
//! between any two of them. What holds in every interleaving (checked by
//! `tests/interleavings.rs`, which runs the other operation at every call boundary, both ways
//! round, on memory, redb and the directory tree):
//!
//! - An `update` or `save` that returned `Ok` is never lost, unless a later write of the session
//!   overwrote it. Once a session is destroyed, swept, expired or moved by `regenerate`, every
//!   `save`, `update` and `regenerate` through its old id is [`Error::SessionGone`] and writes
//!   nothing.
//! - `regenerate` stores the state under a fresh id (unreachable: nobody knows it yet), then
//!   turns the old id's state into a moved-marker with one compare-and-swap: that is the move. A
//!   handle without changes of its own moves whatever is stored at that moment, so a concurrent
//!   `update` is carried over; one with changes (a login) moves them, as the later write. A
//!   failed `regenerate` leaves the old session live and unchanged and no copy behind; of two
//!   concurrent ones exactly one wins.
//! - `destroy` removes the state with one compare-and-swap, so a `destroy` that returned `Ok` is
//!   final. An id from before a `regenerate` has no power over the new id: destroying through it
//!   removes nothing more, and says so ([`CookieAction::Keep`]).
//! - A `start` racing a `destroy` never adopts the destroyed session as one stored without
//!   timestamps, and never writes its timestamps back.
//!
//! **`update` loses no updates.** It reads the state, applies the closure to a copy and stores
//! the result with the archive's `compare_and_swap`, retrying on conflict (the closure is
//! `FnMut` and may run more than once). How far that reaches depends on the backend's
//! `compare_and_swap`:
//!
//! | backend | `update` is atomic across |
//! |---|---|
//! | memory | threads of one process |
//! | redb | threads of one process (redb locks its file to one process) |
//! | dir | threads and processes sharing the directory (a flock-protected compare-and-swap) |
//! | redis | processes and machines sharing the server |
//!
//! **Corrupt state** (bytes that are not valid JSON for `T`, e.g. after changing `T` without
//! `#[serde(default)]`) makes `start`, `load` and `update` return [`Error::CorruptSession`],
//! naming the session's fingerprint; the stored bytes are left untouched. With
//! [`.on_corrupt(OnCorrupt::StartFresh)`](OnCorrupt::StartFresh), `start` instead sets the bytes
//! aside in the domain [`CORRUPT_DOMAIN`] and gives the user a fresh session, so a deploy does
//! not lock users out until their cookies expire.
//!
//! **Size limit.** The serialized state may be at most
//! [`max_state_size`](SessionsBuilder::max_state_size) bytes ([`DEFAULT_MAX_STATE_SIZE`]: 1 MiB);
//! over it, `save`, `update` and `regenerate` return [`Error::StateTooLarge`] and write nothing.
//!
//! # Expiry and sweep
//!
//! ```
//! use std::time::Duration;
//! use session_archive::MemoryArchive;
//! use session_archive::session::Sessions;
//!
//! let sessions = Sessions::builder(MemoryArchive::new())
//!     .idle_timeout(Duration::from_secs(30 * 60))          // default 24 h; None for never
//!     .absolute_lifetime(Duration::from_secs(12 * 3600))   // default 7 days; None for never
//!     .sweep_granularity(Duration::from_secs(60))          // the default index bucket width
//!     .build();                                            // .clock(ManualClock) in tests
//! let removed = sessions.sweep()?;                         // run it every few minutes
//! # let _ = removed;
//! # Ok::<(), session_archive::Error>(())
//! ```
//!
//! - **Timestamps.** Each session domain also holds [`META_KEY`] (`meta.json`,
//!   `{"created":…,"seen":…}` in unix seconds), never inside `session.json`. A session expires
//!   [`idle_timeout`](SessionsBuilder::idle_timeout) after it was last seen
//!   ([`DEFAULT_IDLE_TIMEOUT`]: 24 hours), and
//!   [`absolute_lifetime`](SessionsBuilder::absolute_lifetime) after its first save however
//!   active ([`DEFAULT_ABSOLUTE_LIFETIME`]: 7 days). An expired session behaves as unknown;
//!   `start` removes it when it meets it, and a `save`, `update` or `regenerate` through a handle
//!   held past the expiry is [`Error::SessionGone`]: an expired session never comes back,
//!   whether or not a sweep removed it. `regenerate` keeps the creation time, so it does not
//!   extend the absolute lifetime.
//! - **Touch granularity.** To keep reads cheap, `seen` is rewritten only once it is older than
//!   1/8 of the idle timeout, so a session expires between 7/8 of the idle timeout and the whole
//!   of it after its last use, and a request that only reads usually writes nothing (the cookie's
//!   `Max-Age` is refreshed only when `seen` moved). Times are whole seconds.
//! - **Sessions without timestamps** (stored by the original framework, or migrated from its
//!   directory tree) are adopted on first use: their timestamps are written then, and their
//!   lifetime starts then. [`Sessions::adopt_legacy`] (`session-archive sweep --scan`) adopts
//!   them all at once, so that unused ones expire too; it scans every domain once, O(all
//!   domains), and also re-indexes sessions whose index entries were lost.
//! - **The expiry index.** [`Sessions::sweep`] walks an index rather than every session:
//!   domains `expiry-<bucket>` (one per [`sweep_granularity`](SessionsBuilder::sweep_granularity)
//!   of expiry time, [`DEFAULT_SWEEP_GRANULARITY`]: 60 s) holding the ids that expire then, plus
//!   the domain `sweep-cursor`, recording the index's width, the application's timeouts and how
//!   far sweeps got. A sweep reads only the candidates' `meta.json`, never any state, so its
//!   cost is the number of expired sessions plus one listing per bucket since the previous
//!   sweep, whatever the number of live sessions. It removes a listing page (up to
//!   [`DEFAULT_PAGE_SIZE`](crate::DEFAULT_PAGE_SIZE) entries) at a time with `remove_domains`
//!   and `remove_many`, so on redb a sweep costs two commits per page, not two per expired
//!   session. Sweeps may run concurrently, from any number of processes.
//! - **Stored sweep settings.** The first writer's bucket width is recorded in the archive and
//!   is the one every process uses ("first writer wins"), so sweeps from processes built with
//!   other settings, such as the `session-archive sweep` tool, share one index and one cursor.
//!   Each `Sessions` also records its idle timeout and absolute lifetime with its first write,
//!   and the tool judges expiry by them unless told otherwise. [`Sessions::stored_settings`]
//!   shows them as [`StoredSettings`]. A removed `sweep-cursor` is written again by the next
//!   index write.
//! - **Crash ordering.** The index entry is written before the timestamps it covers, and a new
//!   session's `meta.json` before its `session.json`, so a failed write or a crash never leaves
//!   a stored session that the sweep cannot find: at worst a spurious index entry (the sweep
//!   re-checks `meta.json`), or a domain holding only `meta.json`, which is no session and
//!   which the sweep removes when it expires.
//! - **Native expiry.** After every write, `Sessions` also calls
//!   [`Archive::expire_domain`](crate::Archive::expire_domain), so backends with native expiry
//!   (Redis) drop expired sessions themselves, and the index's buckets a week after they end.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use session_archive::MemoryArchive;
//! use session_archive::session::{ManualClock, Sessions};
//!
//! let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
//! let sessions = Sessions::builder(MemoryArchive::new())
//!     .idle_timeout(Duration::from_secs(600))
//!     .clock(clock.clone())
//!     .build();
//! let mut session = sessions.start(None, 1_u8)?;
//! session.save()?;
//! clock.advance(Duration::from_secs(600));
//! assert!(!sessions.is_live(session.id())?); // expired: unknown to `start` from now on
//! assert_eq!(sessions.sweep()?, 1);           // and removed from the archive
//! # Ok::<(), session_archive::Error>(())
//! ```
//!
//! # Cookie helpers
//!
//! For a web framework other than axum, `Sessions` reads and writes the session cookie itself:
//! [`start_from_cookie_header`](Sessions::start_from_cookie_header) starts from the request's
//! `Cookie` header ([`id_from_cookie`](Sessions::id_from_cookie) only finds the id), and
//! [`cookie_header`](Sessions::cookie_header) gives the `Set-Cookie` value a response must send
//! after the session's calls, if any ([`Session::cookie_action`] says which).
//!
//! ```
//! use session_archive::MemoryArchive;
//! use session_archive::session::Sessions;
//!
//! let sessions = Sessions::new(MemoryArchive::new());
//! let header = "theme=dark; session-id=0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2";
//! let mut session = sessions.start_from_cookie_header(Some(header), ())?; // unknown: a new id
//! assert_eq!(sessions.cookie_header(&session), None); // nothing stored, nothing to send
//! session.save()?;
//! let set_cookie = sessions.cookie_header(&session).expect("a saved session sets its cookie");
//! // session-id=<new id>; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=86400
//! assert!(set_cookie.starts_with(&format!("session-id={}", session.id())));
//! session.destroy()?;
//! let after_destroy = sessions.cookie_header(&session).expect("a removal cookie");
//! // session-id=; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=0; Expires=<a year ago>
//! assert_eq!(after_destroy, sessions.removal_cookie());
//! # Ok::<(), session_archive::Error>(())
//! ```
//!
//! `id_from_cookie` parses the header with the `cookie` crate and returns only a well-formed id.
//! [`set_cookie`](Sessions::set_cookie) is `HttpOnly`, `SameSite=Lax`, `Path=/`, `Secure`
//! unless turned off with [`.secure(false)`](SessionsBuilder::secure) (for plain-HTTP
//! localhost), and carries a `Max-Age` that ends when the server will expire the session if it
//! is not used again: the time left of the idle timeout since `seen`, capped by what is left of
//! the absolute lifetime (a new session counts as seen now; no `Max-Age` when no expiry is
//! configured). Its value is always the server's id, so a hostile cookie value is never echoed
//! back. A response for a session that another request destroyed or moved meanwhile sends no
//! cookie at all ([`CookieAction::Keep`]).
//!
//! # Storage layout
//!
//! One domain per session, named by its [`SessionId`]:
//!
//! - [`STATE_KEY`] (`session.json`): the state as compact JSON, exactly the original framework's
//!   layout;
//! - [`META_KEY`] (`meta.json`): `{"created":…,"seen":…}`, unix seconds, used for expiry, and
//!   `"user":…` for a session bound to a user.
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
//! [`Error::SessionGone`]: crate::Error::SessionGone
//! [`Error::CorruptSession`]: crate::Error::CorruptSession
//! [`Error::StateTooLarge`]: crate::Error::StateTooLarge

// Where each part of the protocol lives, and why this order: docs/ARCHITECTURE.md. The modules,
// in the order data flows: the typed face (`sessions`, `handle`, with `cookie`),
// the protocol (`store`, with `users` for the per-user listing and revoke), and what the
// protocol is built from (`expiry`, shared with the tower-sessions store; `layout`; `hashed`;
// `id`; `clock`). Each uses only modules after it.
pub(crate) mod clock;
mod cookie;
pub(crate) mod expiry;
mod handle;
mod hashed;
pub(crate) mod id;
pub(crate) mod layout;
pub(crate) mod points;
mod sessions;
mod store;
mod users;

pub use self::clock::{Clock, ManualClock, SystemClock};
pub use self::expiry::{DEFAULT_SWEEP_GRANULARITY, StoredSettings};
#[cfg(any(feature = "axum", feature = "actix", feature = "conformance"))]
pub(crate) use self::handle::SwapOutcome;
pub use self::handle::{CookieAction, Session};
pub use self::id::SessionId;
pub use self::layout::{CORRUPT_DOMAIN, MAX_USER_LEN, META_KEY, STATE_KEY};
pub use self::sessions::{
    DEFAULT_ABSOLUTE_LIFETIME, DEFAULT_COOKIE_NAME, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_STATE_SIZE,
    OnCorrupt, Sessions, SessionsBuilder,
};
pub use self::users::UserSession;
