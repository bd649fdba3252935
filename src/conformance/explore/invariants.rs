//! The invariants checked after every schedule, each stated once (see DESIGN.md, "The protocol
//! holds between operations"). Those that compare with the reference model take the model's
//! final state for one order of the events; [`super::check`] looks for an order under which
//! every one holds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::alphabet::User;
use super::model::{State, Sym};
use super::settings::Settings;
use super::states::Tags;
use super::world::Observed;

/// An invariant of the session protocol.
///
/// # Examples
///
/// ```
/// use session_archive::conformance::explore::Invariant;
///
/// assert_eq!(Invariant::UserIndexExact.to_string(), "(3) the user index is exact");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    /// Every operation returned what the sequential reference model returns when the
    /// operations' events run in some order (the order that explains the final store too).
    Linearizable,
    /// (1) An acknowledged `save`/`update` is never lost, unless a later acknowledged write of
    /// the same session overwrote it, or an acknowledged destroy or revoke ended it: every
    /// stored session holds exactly the writes the model's order leaves in it.
    AckedWritesKept,
    /// (2) A destroy through the session's current id, or a revoke, that returned `Ok` is final
    /// under every id the session ever had or gets: no session the model ended (by a destroy,
    /// a revoke, a sweep, an expired start or a move) is stored.
    EndsAreFinal,
    /// (3) The user index is exact: every live session whose stored binding is U is listed by
    /// `user_sessions(U)` and ended by `revoke_user(U)`; a session bound to another user or to
    /// none is never listed under U.
    UserIndexExact,
    /// (4) State and binding travel together: a stored session's (state, binding) pair is one
    /// that a single acknowledged write stored, and a start returns such a pair.
    StateAndBindingTogether,
    /// (5) A failed operation leaves the sessions as they were, or, where its documentation
    /// says the outcome is unknown, as if it had run.
    FailuresDocumented,
    /// (6) A session past its idle or absolute timeout by a `Sessions`' settings is never
    /// resumed by it, and `is_live` says so; a sweep never ends a session live when it judged it.
    ExpiryRespected,
    /// (7) The expiry index misses nothing: once every tower-sessions record has expired, one
    /// `delete_expired` removes them all.
    ExpiryIndexExact,
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invariant::Linearizable => "returns match the reference model",
            Invariant::AckedWritesKept => "(1) acknowledged writes are kept",
            Invariant::EndsAreFinal => "(2) a destroy or revoke is final",
            Invariant::UserIndexExact => "(3) the user index is exact",
            Invariant::StateAndBindingTogether => "(4) state and binding travel together",
            Invariant::FailuresDocumented => "(5) a failed operation ends in a documented state",
            Invariant::ExpiryRespected => "(6) expiry is respected",
            Invariant::ExpiryIndexExact => "(7) the expiry index misses nothing",
        })
    }
}

/// A broken invariant, and how; see [`Failure::kinds`](super::Failure::kinds) for an example.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Violation {
    /// Which invariant.
    pub invariant: Invariant,
    /// What was seen.
    pub detail: String,
}

impl Violation {
    pub(super) fn new(invariant: Invariant, detail: impl Into<String>) -> Violation {
        Violation {
            invariant,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

/// The observed end of a schedule, by model session.
#[derive(Debug, Clone)]
pub(super) struct Final {
    /// Stored sessions: tags, binding.
    pub(super) stored: BTreeMap<Sym, (Tags, Option<String>)>,
    /// Whether the application's `Sessions` finds each live.
    pub(super) live: BTreeMap<Sym, bool>,
}

/// (1): the model's sessions are stored, with exactly the model's writes.
pub(super) fn acked_writes_kept(model: &State, seen: &Final) -> Vec<Violation> {
    model
        .stored
        .iter()
        .filter_map(|(sym, session)| match seen.stored.get(sym) {
            None => Some(Violation::new(
                Invariant::AckedWritesKept,
                format!("{sym:?} should hold {:?} but is gone", session.tags),
            )),
            Some((tags, _)) if *tags != session.tags => Some(Violation::new(
                Invariant::AckedWritesKept,
                format!("{sym:?} holds {tags:?}, not {:?}", session.tags),
            )),
            Some(_) => None,
        })
        .collect()
}

/// (2): nothing the model ended is stored.
pub(super) fn ends_are_final(model: &State, seen: &Final) -> Vec<Violation> {
    seen.stored
        .iter()
        .filter(|(sym, _)| !model.stored.contains_key(sym))
        .map(|(sym, (tags, user))| {
            Violation::new(
                Invariant::EndsAreFinal,
                format!("{sym:?} ({tags:?}, bound to {user:?}) should have ended"),
            )
        })
        .collect()
}

/// (4): each stored session's binding is the one the model's write stored with its state.
pub(super) fn state_and_binding_together(model: &State, seen: &Final) -> Vec<Violation> {
    model
        .stored
        .iter()
        .filter_map(|(sym, session)| {
            let (tags, user) = seen.stored.get(sym)?;
            let want = session.user.map(User::name);
            (*tags == session.tags && user.as_deref() != want).then(|| {
                Violation::new(
                    Invariant::StateAndBindingTogether,
                    format!("{sym:?} holds {tags:?} bound to {user:?}, not to {want:?}"),
                )
            })
        })
        .collect()
}

/// (6), at the end: `is_live` of the application agrees with the stored timestamps.
pub(super) fn expiry_respected(
    model: &State,
    seen: &Final,
    app: &Settings,
    now: u64,
) -> Vec<Violation> {
    let live = model.live(app, now);
    seen.live
        .iter()
        .filter(|(sym, observed)| {
            model.stored.contains_key(sym) && **observed != live.contains(sym)
        })
        .map(|(sym, observed)| {
            Violation::new(
                Invariant::ExpiryRespected,
                format!("is_live({sym:?}) is {observed} at the end"),
            )
        })
        .collect()
}

/// Every invariant that compares the final store with the model's.
pub(super) fn final_violations(
    model: &State,
    seen: &Final,
    app: &Settings,
    now: u64,
) -> Vec<Violation> {
    let mut violations = acked_writes_kept(model, seen);
    violations.extend(ends_are_final(model, seen));
    violations.extend(state_and_binding_together(model, seen));
    violations.extend(expiry_respected(model, seen, app, now));
    violations
}

/// (3), checked on the store as it is, without the model: every live session bound to U is
/// listed under U, nothing else is, and `revoke_user(U)` ends every stored session bound to U,
/// counting each.
pub(super) fn user_index_exact(observed: &Observed) -> Vec<Violation> {
    let mut violations = Vec::new();
    let bound = |user: User| -> BTreeSet<&String> {
        observed
            .stored
            .iter()
            .filter(|(_, s)| s.user.as_deref() == Some(user.name()))
            .map(|(name, _)| name)
            .collect()
    };
    for user in User::ALL {
        let listed = observed.listed.get(&user).cloned().unwrap_or_default();
        for name in bound(user) {
            if observed.live.get(name) == Some(&true) && !listed.contains(name) {
                violations.push(Violation::new(
                    Invariant::UserIndexExact,
                    format!("live {name} bound to {} is not listed", user.name()),
                ));
            }
        }
        for name in &listed {
            let ok = observed.stored.get(name).is_some_and(|s| {
                s.user.as_deref() == Some(user.name()) && observed.live.get(name) == Some(&true)
            });
            if !ok {
                violations.push(Violation::new(
                    Invariant::UserIndexExact,
                    format!(
                        "{name} is listed under {} but is not its live session",
                        user.name()
                    ),
                ));
            }
        }
        let Some((count, left)) = observed.revoked.get(&user) else {
            continue;
        };
        let want = bound(user).len();
        if count.as_ref().ok() != Some(&want) || !left.is_empty() {
            violations.push(Violation::new(
                Invariant::UserIndexExact,
                format!(
                    "revoke_user({}) returned {count:?} for {want} bound sessions, leaving {left:?}",
                    user.name()
                ),
            ));
        }
    }
    violations
}
