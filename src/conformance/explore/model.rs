//! The sequential reference model of the session protocol: what each operation of the alphabet
//! does to the stored sessions, and returns, when it runs alone.
//!
//! An operation is a short program of atomic events: a clock move, a start (which may judge the
//! session expired, and remove it in a later event, as the real start does), a write through the
//! handle the start gave, a revoke, a sweep's judgement and its removal, a listing's beginning
//! and end. [`super::check`] searches for an order of all events that explains what the
//! operations returned and what the archive holds.

#![expect(
    clippy::similar_names,
    reason = "an event goes from a stage and a state to the next stage and state"
)]

use std::collections::{BTreeMap, BTreeSet};

use super::alphabet::{Kind, Op, User, Via, tag_of};
use super::settings::Settings;
use super::states::Tags;

/// A session of the model: the world's `S` and `K`, or the one operation `i` created (a new
/// session, or the copy its regenerate moved to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Sym {
    S,
    K,
    Fresh(usize),
}

/// A stored session of the model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Session {
    /// The session it descends from through moves: `S` and its copies, `K`, or a new one.
    pub(super) origin: Sym,
    pub(super) tags: Tags,
    pub(super) user: Option<User>,
    pub(super) created: u64,
    pub(super) seen: u64,
    /// Whether the expiry index has an entry for it: a `Sessions` without timeouts writes none.
    pub(super) indexed: bool,
}

/// The model's archive: the stored sessions. (Each operation runs at a time of its own: see
/// [`op_time`].)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct State {
    pub(super) stored: BTreeMap<Sym, Session>,
}

/// The time an operation runs at: its `Sessions`' clock stands still there (an operation that
/// needs a later time, to find a session due a touch or expired, has a `Sessions` of its own, as
/// a process whose clock is ahead would).
pub(super) fn op_time(op: Op, settings: &Settings, t0: u64) -> u64 {
    settings.later_time(op, t0).unwrap_or(t0)
}

impl State {
    /// The world at the start: `S` and `K` bound to alice, saved at `t0`.
    pub(super) fn initial(t0: u64) -> State {
        let session = |origin, tag| Session {
            origin,
            tags: Tags::from([tag]),
            user: Some(User::Alice),
            created: t0,
            seen: t0,
            indexed: true,
        };
        State {
            stored: BTreeMap::from([
                (Sym::S, session(Sym::S, 100)),
                (Sym::K, session(Sym::K, 200)),
            ]),
        }
    }

    /// The sessions live by `settings` at `now`.
    pub(super) fn live(&self, settings: &Settings, now: u64) -> BTreeSet<Sym> {
        self.stored
            .iter()
            .filter(|(_, s)| !settings.expired(s.created, s.seen, now))
            .map(|(sym, _)| *sym)
            .collect()
    }

    /// The sessions expired by `settings` at `now`.
    pub(super) fn expired(&self, settings: &Settings, now: u64) -> BTreeSet<Sym> {
        let live = self.live(settings, now);
        self.stored
            .keys()
            .filter(|sym| !live.contains(sym))
            .copied()
            .collect()
    }

    /// The sessions bound to `user` and live by `settings` at `now`.
    pub(super) fn listed(&self, user: User, settings: &Settings, now: u64) -> BTreeSet<Sym> {
        self.live(settings, now)
            .into_iter()
            .filter(|sym| self.stored[sym].user == Some(user))
            .collect()
    }

    /// What the sessions hold, leaving the timestamps aside: whether a failed operation changed
    /// anything.
    pub(super) fn contents(&self) -> BTreeMap<Sym, (Tags, Option<User>)> {
        self.stored
            .iter()
            .map(|(sym, s)| (*sym, (s.tags.clone(), s.user)))
            .collect()
    }
}

/// The handle a request's start gave.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Handle {
    /// A new session: nothing found.
    New,
    /// The stored session `id`, as read.
    Live { id: Sym, tags: Tags, seen: u64 },
}

/// Where an operation is in its program.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Stage {
    /// Its start of `S` comes next.
    Start,
    /// Its start judged `S` expired: the removal comes next, then `then`.
    Remove(Box<Stage>),
    /// Its write through the handle comes next.
    Write(Handle),
    /// A revoke, `is_live` or a listing's beginning comes next.
    Single,
    /// A revoke walked the index first when the sessions of these origins were bound to the
    /// user, and has ended `ended` sessions since; it ends one more, or is done.
    Revoking { bound: BTreeSet<Sym>, ended: usize },
    /// A sweep's judgement comes next.
    Judge,
    /// A sweep judged these expired; the removal comes next.
    SweepRemove {
        must: BTreeSet<Sym>,
        may: BTreeSet<Sym>,
        removed: usize,
    },
    /// A listing is under way: the sessions listed at every event since it began (`must`),
    /// and at any event (`may`).
    Listing {
        must: BTreeSet<Sym>,
        may: BTreeSet<Sym>,
    },
    /// Done.
    Done,
    /// A failed operation that went no further.
    Abandoned,
}

impl Stage {
    /// Where `op` begins.
    pub(super) fn first(op: Op) -> Stage {
        match op.kind {
            Kind::StartNew => Stage::Write(Handle::New),
            Kind::Sweep => Stage::Judge,
            Kind::Revoke | Kind::RevokeExcept | Kind::IsLive | Kind::UserSessions => Stage::Single,
            _ => Stage::Start,
        }
    }

    pub(super) fn is_over(&self) -> bool {
        matches!(self, Stage::Done | Stage::Abandoned)
    }
}

/// What an event returned in the model, to compare with what the operation really returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Expect {
    /// Nothing to compare (a judgement, a listing's beginning).
    Nothing,
    /// A start: the tags and binding found, or `None` for a new session.
    Found(Option<(Tags, Option<User>)>),
    /// A write that succeeded: the handle's state after it, the session it wrote, and for a
    /// destroy whether it removed one.
    Wrote { tags: Tags, id: Sym, removed: bool },
    /// A write that failed with `SessionGone`.
    Gone,
    /// A revoke: how many sessions it destroyed (a session caught between a regenerate's copy
    /// and its move may count twice besides).
    Revoked(usize),
    /// A sweep's removal: at least this many.
    Swept(usize),
    /// `is_live`.
    Live(bool),
    /// A listing's end: every session in `must`, none outside `may`.
    Listed {
        must: BTreeSet<Sym>,
        may: BTreeSet<Sym>,
    },
}

/// One way an event can go: the next stage, the next state, and what it returned.
#[derive(Debug, Clone)]
pub(super) struct Step {
    pub(super) stage: Stage,
    pub(super) state: State,
    pub(super) expect: Expect,
    /// What happened, for a report.
    pub(super) note: String,
}

/// The world's settings, by [`Via`].
pub(super) type Vias = [Settings; 2];

/// Every way the next event of operation `me`, running at `now`, can go from `state`.
pub(super) fn steps(
    (op, me, now): (Op, usize, u64),
    stage: &Stage,
    state: &State,
    vias: &Vias,
) -> Vec<Step> {
    let settings = &vias[op.via.index()];
    match stage {
        Stage::Start => start(op, state, settings, now),
        Stage::Remove(then) => {
            let mut next = state.clone();
            next.stored.remove(&Sym::S);
            vec![step(
                (**then).clone(),
                next,
                Expect::Nothing,
                "removes expired S",
            )]
        }
        Stage::Write(handle) => write((op, me, now), handle, state, settings),
        Stage::Single => single(op, state, settings, now),
        Stage::Revoking { bound, ended } => revoke_steps(op, bound, *ended, state),
        Stage::Judge => vec![judge(op, state, settings, now)],
        Stage::SweepRemove { must, may, removed } => {
            sweep_steps((must, may), *removed, state, &state.expired(settings, now))
        }
        Stage::Listing { must, may } => {
            let expect = Expect::Listed {
                must: must.clone(),
                may: may.clone(),
            };
            vec![step(Stage::Done, state.clone(), expect, "listing ends")]
        }
        Stage::Done | Stage::Abandoned => Vec::new(),
    }
}

/// A sweep's judgement: the sessions expired by its settings. The index holds each at its
/// expiry by the settings that last wrote its timestamps, and the application's are the longest,
/// so the application's sweep must end every one the index has; any other sweep may end them,
/// as may any sweep a session no index entry covers (written by a `Sessions` without timeouts).
fn judge(op: Op, state: &State, settings: &Settings, now: u64) -> Step {
    let live = state.live(settings, now);
    let (must, may): (Vec<(&Sym, &Session)>, Vec<_>) = state
        .stored
        .iter()
        .filter(|(sym, _)| !live.contains(sym))
        .partition(|(_, s)| op.via == Via::App && s.indexed);
    let must: BTreeSet<Sym> = must.into_iter().map(|(sym, _)| *sym).collect();
    let may: BTreeSet<Sym> = may.into_iter().map(|(sym, _)| *sym).collect();
    let note = format!("sweep judges {must:?} (and maybe {may:?}) expired");
    step(
        Stage::SweepRemove {
            must,
            may,
            removed: 0,
        },
        state.clone(),
        Expect::Nothing,
        &note,
    )
}

/// A sweep's removals, one session at a time (two sweeps may share the work): what it judged
/// expired (a save landing since does not save it: "removed all the same"), and what has expired
/// by its settings since it judged (it judges a bucket at a time); it is done once none it must
/// end is left.
fn sweep_steps(
    (must, may): (&BTreeSet<Sym>, &BTreeSet<Sym>),
    removed: usize,
    state: &State,
    expired: &BTreeSet<Sym>,
) -> Vec<Step> {
    let judged: BTreeSet<Sym> = must.union(may).copied().collect();
    let mut out: Vec<Step> = judged
        .union(expired)
        .filter(|sym| state.stored.contains_key(sym))
        .map(|sym| {
            let mut next = state.clone();
            next.stored.remove(sym);
            let stage = Stage::SweepRemove {
                must: must.clone(),
                may: may.clone(),
                removed: removed + 1,
            };
            step(
                stage,
                next,
                Expect::Nothing,
                &format!("sweep removes {sym:?}"),
            )
        })
        .collect();
    if !must.iter().any(|sym| state.stored.contains_key(sym)) {
        let note = format!("sweep is done, having removed {removed}");
        out.push(step(
            Stage::Done,
            state.clone(),
            Expect::Swept(removed),
            &note,
        ));
    }
    out
}

fn step(stage: Stage, state: State, expect: Expect, note: &str) -> Step {
    Step {
        stage,
        state,
        expect,
        note: note.to_owned(),
    }
}

/// Where a request or a resume goes once it has a handle.
fn after_start(op: Op, handle: Handle) -> Stage {
    if op.kind.is_request() {
        Stage::Write(handle)
    } else {
        Stage::Done
    }
}

/// A start of `S`: a new session when it is not stored, or expired by `settings` (then removed
/// in a later event); otherwise the session as stored, touched or not when a touch is due (a
/// touch may lose to a concurrent write of the timestamps).
fn start(op: Op, state: &State, settings: &Settings, now: u64) -> Vec<Step> {
    let Some(stored) = state.stored.get(&Sym::S) else {
        return vec![step(
            after_start(op, Handle::New),
            state.clone(),
            Expect::Found(None),
            "start finds no S",
        )];
    };
    if settings.expired(stored.created, stored.seen, now) {
        let then = after_start(op, Handle::New);
        return vec![step(
            Stage::Remove(Box::new(then)),
            state.clone(),
            Expect::Found(None),
            "start finds S expired",
        )];
    }
    let found = Expect::Found(Some((stored.tags.clone(), stored.user)));
    let mut seen = vec![stored.seen];
    if settings.touch_due(stored.seen, now) {
        seen.push(now);
    }
    seen.into_iter()
        .map(|seen| {
            let mut next = state.clone();
            if let Some(s) = next.stored.get_mut(&Sym::S) {
                s.indexed |= seen != s.seen && settings.expires();
                s.seen = seen;
            }
            let handle = Handle::Live {
                id: Sym::S,
                tags: stored.tags.clone(),
                seen,
            };
            let note = format!("start finds S {:?} {:?}", stored.tags, stored.user);
            step(after_start(op, handle), next, found.clone(), &note)
        })
        .collect()
}

/// A revoke, `is_live`, or a listing's beginning.
fn single(op: Op, state: &State, settings: &Settings, now: u64) -> Vec<Step> {
    match op.kind {
        Kind::Revoke | Kind::RevokeExcept => {
            let keep = revoke_keeps(op);
            let bound: BTreeSet<Sym> = state
                .stored
                .iter()
                .filter(|(sym, s)| s.user == Some(User::Alice) && Some(**sym) != keep)
                .map(|(_, s)| s.origin)
                .collect();
            let note = format!("revoke walks the index: {bound:?}");
            let stage = Stage::Revoking { bound, ended: 0 };
            vec![step(stage, state.clone(), Expect::Nothing, &note)]
        }
        Kind::IsLive => {
            let live = state.live(settings, now).contains(&Sym::S);
            let note = format!("is_live(S) = {live}");
            vec![step(Stage::Done, state.clone(), Expect::Live(live), &note)]
        }
        _ => {
            let listed = state.listed(User::Alice, settings, now);
            let stage = Stage::Listing {
                must: listed.clone(),
                may: listed,
            };
            vec![step(
                stage,
                state.clone(),
                Expect::Nothing,
                "listing begins",
            )]
        }
    }
}

/// Which session a revoke keeps.
fn revoke_keeps(op: Op) -> Option<Sym> {
    (op.kind == Kind::RevokeExcept).then_some(Sym::S)
}

/// The sessions a revoke may end next: every session bound to alice but the one it keeps;
/// and those it must end before it is done: those of the origins bound to her when it first
/// walked the index, moved or not. A session bound to her since (a login during the revoke) it
/// may end or leave: "a session bound to the user after the revoke's last walk of the user's
/// index ... is a later session, and stays".
fn revoke_targets(op: Op, bound: &BTreeSet<Sym>, state: &State) -> (Vec<Sym>, bool) {
    let keep = revoke_keeps(op);
    let alices: Vec<(&Sym, &Session)> = state
        .stored
        .iter()
        .filter(|(sym, s)| s.user == Some(User::Alice) && Some(**sym) != keep)
        .collect();
    let must_remain = alices.iter().any(|(_, s)| bound.contains(&s.origin));
    (
        alices.into_iter().map(|(sym, _)| *sym).collect(),
        must_remain,
    )
}

/// A revoke ends one session at a time (each by a compare-and-swap of its own), and is done
/// once none it must end remains.
fn revoke_steps(op: Op, bound: &BTreeSet<Sym>, ended: usize, state: &State) -> Vec<Step> {
    let (targets, must_remain) = revoke_targets(op, bound, state);
    let mut out: Vec<Step> = targets
        .into_iter()
        .map(|sym| {
            let mut next = state.clone();
            next.stored.remove(&sym);
            let stage = Stage::Revoking {
                bound: bound.clone(),
                ended: ended + 1,
            };
            step(
                stage,
                next,
                Expect::Nothing,
                &format!("revoke ends {sym:?}"),
            )
        })
        .collect();
    if !must_remain {
        let note = format!("revoke is done, having ended {ended}");
        out.push(step(
            Stage::Done,
            state.clone(),
            Expect::Revoked(ended),
            &note,
        ));
    }
    out
}

/// A request's write through `handle`.
fn write(
    (op, me, now): (Op, usize, u64),
    handle: &Handle,
    state: &State,
    settings: &Settings,
) -> Vec<Step> {
    let tag = tag_of(me);
    match handle {
        Handle::New => vec![create((op.kind, me, now), tag, state, settings)],
        Handle::Live { id, tags, seen } => {
            let Some(stored) = state.stored.get(id) else {
                return vec![gone(op.kind, state, "finds S gone")];
            };
            if op.kind == Kind::Destroy {
                let mut next = state.clone();
                next.stored.remove(id);
                let expect = Expect::Wrote {
                    tags: tags.clone(),
                    id: *id,
                    removed: true,
                };
                return vec![step(Stage::Done, next, expect, "destroys S")];
            }
            if settings.expired(stored.created, stored.seen, now) {
                return vec![gone(op.kind, state, "finds S expired")];
            }
            let read = Read {
                id: *id,
                tags,
                seen: *seen,
            };
            live_write((op.kind, me, now), tag, &read, state, settings)
        }
    }
}

/// What a write finds gone: `SessionGone`, but a destroy succeeds with nothing to remove.
fn gone(kind: Kind, state: &State, note: &str) -> Step {
    let expect = if kind == Kind::Destroy {
        Expect::Wrote {
            tags: Tags::new(),
            id: Sym::S,
            removed: false,
        }
    } else {
        Expect::Gone
    };
    step(Stage::Done, state.clone(), expect, note)
}

/// A write through a new handle: it creates a session of its own (a destroy does nothing).
fn create(
    (kind, me, now): (Kind, usize, u64),
    tag: u32,
    state: &State,
    settings: &Settings,
) -> Step {
    if kind == Kind::Destroy {
        let expect = Expect::Wrote {
            tags: Tags::new(),
            id: Sym::Fresh(me),
            removed: false,
        };
        return step(Stage::Done, state.clone(), expect, "destroys a new session");
    }
    // An update of a session never saved saves the handle's state first, then updates it.
    let first_save = kind.is_update();
    let tags = if kind == Kind::RegenerateClean || first_save {
        Tags::new()
    } else {
        Tags::from([tag])
    };
    let user = kind.binds().flatten();
    let mut next = state.clone();
    next.stored.insert(
        Sym::Fresh(me),
        Session {
            origin: Sym::Fresh(me),
            tags: tags.clone(),
            user,
            created: now,
            seen: now,
            indexed: settings.expires(),
        },
    );
    if first_save {
        let handle = Handle::Live {
            id: Sym::Fresh(me),
            tags,
            seen: now,
        };
        return step(
            Stage::Write(handle),
            next,
            Expect::Nothing,
            "saves a new session",
        );
    }
    let expect = Expect::Wrote {
        tags,
        id: Sym::Fresh(me),
        removed: false,
    };
    step(Stage::Done, next, expect, "creates a new session")
}

/// A regenerate's move of `id` to a fresh id, holding `tags` bound to `user`; the creation time
/// is kept.
fn regenerate(
    (me, now): (usize, u64),
    id: Sym,
    (tags, user): (Tags, Option<User>),
    state: &State,
    settings: &Settings,
) -> Step {
    let stored = &state.stored[&id];
    let mut next = state.clone();
    next.stored.remove(&id);
    let moved = Session {
        origin: stored.origin,
        tags: tags.clone(),
        user,
        created: stored.created,
        seen: now,
        indexed: settings.expires(),
    };
    next.stored.insert(Sym::Fresh(me), moved);
    let expect = Expect::Wrote {
        tags,
        id: Sym::Fresh(me),
        removed: false,
    };
    step(Stage::Done, next, expect, "regenerates S")
}

/// What a live handle read at its start.
struct Read<'a> {
    id: Sym,
    tags: &'a Tags,
    seen: u64,
}

/// A save, update or regenerate of a live, unexpired session.
fn live_write(
    (kind, me, now): (Kind, usize, u64),
    tag: u32,
    read: &Read<'_>,
    state: &State,
    settings: &Settings,
) -> Vec<Step> {
    let stored = &state.stored[&read.id];
    let mut changed = read.tags.clone();
    changed.insert(tag);
    // A write after `set_user` stores its binding with its state, whatever the handle read.
    let rebind = kind.binds();
    match kind {
        Kind::RegenerateClean | Kind::RegenerateChanged | Kind::RegenerateRebind => {
            let tags = if kind == Kind::RegenerateClean {
                stored.tags.clone()
            } else {
                changed
            };
            let user = rebind.unwrap_or(stored.user);
            vec![regenerate(
                (me, now),
                read.id,
                (tags, user),
                state,
                settings,
            )]
        }
        _ => {
            let tags = if kind.is_update() {
                let mut tags = stored.tags.clone();
                tags.insert(tag);
                tags
            } else {
                changed
            };
            let mut seen = vec![stored.seen];
            if rebind.is_some() || settings.touch_due(read.seen, now) {
                seen.push(now);
            }
            seen.into_iter()
                .map(|seen| {
                    let mut next = state.clone();
                    if let Some(s) = next.stored.get_mut(&read.id) {
                        s.tags.clone_from(&tags);
                        s.user = rebind.unwrap_or(s.user);
                        s.indexed |= seen != s.seen && settings.expires();
                        s.seen = seen;
                    }
                    let expect = Expect::Wrote {
                        tags: tags.clone(),
                        id: read.id,
                        removed: false,
                    };
                    step(Stage::Done, next, expect, &format!("writes {tags:?} to S"))
                })
                .collect()
        }
    }
}

/// Whether a failed operation of `kind` may have applied its write: where its documentation
/// says the outcome is unknown. Elsewhere a failed operation must leave the sessions as they
/// were.
pub(super) fn may_apply_when_failed(kind: Kind) -> bool {
    // save: "The one error whose outcome is unknown is storage failing on the write itself in a
    // way that cannot tell whether it landed (a reply that timed out)"; update: "then the
    // change may be stored" (update_send: "As update"). A new session's first save is a save.
    // revoke: "the sessions destroyed before stay destroyed"; the sweep likewise removes a
    // page at a time. A start may have touched, or removed an expired session.
    //
    // Not so: regenerate ("Any other failure before the move leaves the old session live and
    // unchanged ...; so does a failure of the move itself", with one fault a schedule);
    // destroy ("the session is then not destroyed"); and the reads.
    !matches!(
        kind,
        Kind::RegenerateClean
            | Kind::RegenerateChanged
            | Kind::RegenerateRebind
            | Kind::Destroy
            | Kind::IsLive
            | Kind::UserSessions
    )
}
