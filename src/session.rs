//! Typed sessions over any [`Archive`](crate::archive::Archive): [`Sessions`], [`Session`],
//! expiry and the sweep.
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

// The modules, in the order data flows: the typed face (`sessions`, `handle`, with `cookie`),
// the protocol (`store`, with `users` for the per-user listing and revoke), and what the
// protocol is built from (`expiry`, shared with the tower-sessions store; `layout`; `hashed`;
// `id`; `clock`). Each uses only modules after it.
pub(crate) mod clock;
mod cookie;
pub(crate) mod expiry;
mod handle;
mod hashed;
pub(crate) mod id;
mod layout;
mod sessions;
pub(crate) mod store;
mod users;

pub use self::clock::{Clock, ManualClock, SystemClock};
pub use self::expiry::{DEFAULT_SWEEP_GRANULARITY, StoredSettings};
pub use self::handle::{CookieAction, Session};
pub use self::id::SessionId;
pub use self::layout::{CORRUPT_DOMAIN, MAX_USER_LEN, META_KEY, STATE_KEY};
pub use self::sessions::{
    DEFAULT_ABSOLUTE_LIFETIME, DEFAULT_COOKIE_NAME, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_STATE_SIZE,
    OnCorrupt, Sessions, SessionsBuilder,
};
pub use self::users::UserSession;
