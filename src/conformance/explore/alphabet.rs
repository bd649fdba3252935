//! The alphabet: every session operation that writes or judges a session, with its variants, as
//! a value ([`Op`]), and how each runs for real on a thread of its own.
//!
//! A request operation starts the session on its own thread (so its start is interleaved too),
//! then writes; its tag (its index in the schedule, plus one) marks its write in the state. The
//! world holds two sessions bound to alice: `S`, which every request targets, and `K`, another
//! device of hers.

use std::fmt;

use super::states::Tags;
use crate::error::Error;

/// A user of the world; see [`User::name`] for an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum User {
    /// Both sessions of the world are bound to her at the start.
    Alice,
    /// Nobody's session is bound to him at the start.
    Bob,
}

impl User {
    /// Both users.
    pub const ALL: [User; 2] = [User::Alice, User::Bob];

    /// The user id.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::conformance::explore::User;
    ///
    /// assert_eq!(User::Alice.name(), "alice");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            User::Alice => "alice",
            User::Bob => "bob",
        }
    }
}

/// Which `Sessions` runs an operation; see [`Op`] for an example: the application's, or a second one over the same archive
/// with other settings (other timeouts and sweep granularity; with ids hashed at rest, no
/// timeouts at all, so it records no settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Via {
    /// The application's `Sessions`.
    App,
    /// The second `Sessions`.
    Other,
}

impl Via {
    /// Both.
    pub const ALL: [Via; 2] = [Via::App, Via::Other];

    pub(super) fn index(self) -> usize {
        match self {
            Via::App => 0,
            Via::Other => 1,
        }
    }
}

/// What an operation does. Requests (`Save…`, `Update…`, `Regenerate…`, `Destroy`) first start
/// session `S` on their own thread.
///
/// # Examples
///
/// ```
/// use session_archive::conformance::explore::Kind;
///
/// assert!(Kind::ALL.contains(&Kind::RegenerateClean));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `start(None)`, bind to alice, `save`: a login on a new device.
    StartNew,
    /// `start(S)`, when no write is due.
    Resume,
    /// `start(S)` once the touch interval has passed (the clock moves first), so it writes.
    ResumeTouch,
    /// `start(S)` once `S` has expired by this `Sessions`' settings (the clock moves first).
    ResumeExpired,
    /// `start(S)` as a web layer starts it on an async executor: where the archive reads
    /// without a thread, the read awaited and the session decoded from it; where its point
    /// reads do not wait, a start that writes nothing; the usual start where either cannot
    /// serve.
    ResumeAsync,
    /// A plain `save`.
    Save,
    /// `set_user(user)` then `save`: a binding, or a rebinding when `S` was bound to another.
    SaveAs(User),
    /// `set_user(None)` then `save`.
    SaveUnbound,
    /// `update`.
    Update,
    /// `update_send`.
    UpdateSend,
    /// An async start as [`ResumeAsync`](Kind::ResumeAsync), then `update` as a web layer runs
    /// it on an async executor: where the archive waits for commits without a thread, the
    /// update queued and its commit awaited; where it has async paths, the change applied to
    /// the handle's guess and one swap awaited (settled by a read when its outcome is
    /// unknown); the usual update when another write came first or neither path serves.
    UpdateAsync,
    /// `regenerate` of a handle never changed since it was started.
    RegenerateClean,
    /// `regenerate` of a handle whose state changed.
    RegenerateChanged,
    /// A change, `set_user(bob)`, `regenerate`: a login as bob.
    RegenerateRebind,
    /// `destroy`.
    Destroy,
    /// `revoke_user(alice)`.
    Revoke,
    /// `revoke_user_except(alice, S)`.
    RevokeExcept,
    /// `sweep`, once `S` and `K` have expired by this `Sessions`' settings (the clock moves).
    Sweep,
    /// `is_live(S)`.
    IsLive,
    /// `user_sessions(alice)`.
    UserSessions,
}

impl Kind {
    /// Every kind: a new kind joins every pair by being added here.
    pub const ALL: [Kind; 21] = [
        Kind::StartNew,
        Kind::Resume,
        Kind::ResumeTouch,
        Kind::ResumeExpired,
        Kind::ResumeAsync,
        Kind::Save,
        Kind::SaveAs(User::Bob),
        Kind::SaveAs(User::Alice),
        Kind::SaveUnbound,
        Kind::Update,
        Kind::UpdateSend,
        Kind::UpdateAsync,
        Kind::RegenerateClean,
        Kind::RegenerateChanged,
        Kind::RegenerateRebind,
        Kind::Destroy,
        Kind::Revoke,
        Kind::RevokeExcept,
        Kind::Sweep,
        Kind::IsLive,
        Kind::UserSessions,
    ];

    /// Whether the operation starts `S` and then writes through the handle.
    pub(super) fn is_request(self) -> bool {
        matches!(
            self,
            Kind::Save
                | Kind::SaveAs(_)
                | Kind::SaveUnbound
                | Kind::Update
                | Kind::UpdateSend
                | Kind::UpdateAsync
                | Kind::RegenerateClean
                | Kind::RegenerateChanged
                | Kind::RegenerateRebind
                | Kind::Destroy
        )
    }

    /// Whether the operation is an update: its write adds its tag to the state it reads.
    pub(super) fn is_update(self) -> bool {
        matches!(self, Kind::Update | Kind::UpdateSend | Kind::UpdateAsync)
    }

    /// Whether the operation starts `S` as a web layer does on an async executor.
    pub(super) fn starts_async(self) -> bool {
        matches!(self, Kind::ResumeAsync | Kind::UpdateAsync)
    }

    /// The user a request binds `S` to, when it calls `set_user` (`Some(None)`: it unbinds).
    #[expect(
        clippy::option_option,
        reason = "no set_user call, set_user(None), and set_user(Some(user)) differ"
    )]
    pub(super) fn binds(self) -> Option<Option<User>> {
        match self {
            Kind::SaveAs(user) => Some(Some(user)),
            Kind::SaveUnbound => Some(None),
            Kind::RegenerateRebind => Some(Some(User::Bob)),
            Kind::StartNew => Some(Some(User::Alice)),
            _ => None,
        }
    }
}

/// One operation of the alphabet: what it does, through which `Sessions`.
///
/// # Examples
///
/// ```
/// use session_archive::conformance::explore::{Kind, Op, User, Via};
///
/// let rebind = Op { kind: Kind::SaveAs(User::Bob), via: Via::Other };
/// assert_eq!(rebind.to_string(), "set_user(bob) + save [other Sessions]");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Op {
    /// What it does.
    pub kind: Kind,
    /// Through which `Sessions`.
    pub via: Via,
}

impl Op {
    /// The whole alphabet: every kind through either `Sessions`.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::conformance::explore::Op;
    ///
    /// assert_eq!(Op::alphabet().len(), 42);
    /// ```
    pub fn alphabet() -> Vec<Op> {
        Via::ALL
            .into_iter()
            .flat_map(|via| Kind::ALL.into_iter().map(move |kind| Op { kind, via }))
            .collect()
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::StartNew => "start new + bind alice + save".to_owned(),
            Kind::Resume => "resume".to_owned(),
            Kind::ResumeTouch => "resume after the touch interval".to_owned(),
            Kind::ResumeExpired => "resume once expired".to_owned(),
            Kind::ResumeAsync => "resume (async)".to_owned(),
            Kind::Save => "save".to_owned(),
            Kind::SaveAs(user) => format!("set_user({}) + save", user.name()),
            Kind::SaveUnbound => "set_user(None) + save".to_owned(),
            Kind::Update => "update".to_owned(),
            Kind::UpdateSend => "update_send".to_owned(),
            Kind::UpdateAsync => "update (async)".to_owned(),
            Kind::RegenerateClean => "regenerate (clean)".to_owned(),
            Kind::RegenerateChanged => "change + regenerate".to_owned(),
            Kind::RegenerateRebind => "change + set_user(bob) + regenerate".to_owned(),
            Kind::Destroy => "destroy".to_owned(),
            Kind::Revoke => "revoke_user(alice)".to_owned(),
            Kind::RevokeExcept => "revoke_user_except(alice, S)".to_owned(),
            Kind::Sweep => "sweep once expired".to_owned(),
            Kind::IsLive => "is_live(S)".to_owned(),
            Kind::UserSessions => "user_sessions(alice)".to_owned(),
        };
        match self.via {
            Via::App => write!(f, "{kind}"),
            Via::Other => write!(f, "{kind} [other Sessions]"),
        }
    }
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failed {
    /// [`Error::SessionGone`].
    Gone,
    /// Any other error.
    Error(String),
}

impl From<Error> for Failed {
    fn from(err: Error) -> Failed {
        match err {
            Error::SessionGone { .. } => Failed::Gone,
            other => Failed::Error(other.to_string()),
        }
    }
}

/// What a start found: the state's tags and the binding, or `None` for a new session.
pub(super) type Found = Option<(Tags, Option<String>)>;

/// What a write through a handle returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Wrote {
    /// The handle's state after the call (an update's result, what a regenerate moved).
    pub(super) tags: Tags,
    /// For a destroy: whether it removed the session (the cookie is removed).
    pub(super) removed: bool,
    /// The stored name of the handle's id after the call.
    pub(super) id: String,
}

/// What an operation returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Returned {
    /// A start.
    Start(Result<Found, Failed>),
    /// A request: its start, then its write (none when the start failed).
    Request {
        start: Result<Found, Failed>,
        write: Option<Result<Wrote, Failed>>,
    },
    /// A revoke or a sweep: how many sessions it ended.
    Count(Result<usize, Failed>),
    /// `is_live`.
    Live(Result<bool, Failed>),
    /// A listing: the stored names listed.
    Listed(Result<Vec<String>, Failed>),
    /// The operation panicked.
    Panicked(String),
}

/// The tag of operation number `me`'s write.
pub(super) fn tag_of(me: usize) -> u32 {
    u32::try_from(me).map_or(u32::MAX, |me| me + 1)
}
