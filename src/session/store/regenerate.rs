//! The move of a regenerate: a copy under a fresh id, then one compare-and-swap that turns the
//! old id's state into a moved-marker naming the copy.
//!
//! # What moves
//!
//! The copy is a pair, state and binding, that one write stored. A handle with no changes of its
//! own (clean) moves the state stored at the moment of the move; one with changes moves its own
//! state. A handle that called `set_user` moves its new binding; otherwise the binding stored at
//! the moment of the move. The move's compare-and-swap covers the old id's state AND its record
//! (where the binding lives): when either changed since the copy was made, the copy follows
//! (only this call knows its id, so nobody else can change it), and the move is tried again.

use super::Store;
use crate::error::{Error, Result};
use crate::session::id::SessionId;
use crate::session::layout::{
    META_KEY, Meta, Rebind, STATE_KEY, Stamp, Stored, is_state, moved_marker,
};

/// How many copies a regenerate makes before it gives up: a copy is lost only to a revoke of the
/// user it was bound to that reached it before the move, which a second copy, bound as the old
/// id then is, does not meet again unless the revokes keep coming.
const COPY_ATTEMPTS: usize = 4;

/// How many times a fence tries to land before the outcome is given up as unknown: each retry
/// means another write of the old id landed in the moment between reading it and fencing it.
const FENCE_ATTEMPTS: usize = 8;

/// What a regenerate moves, as the handle has it.
pub(crate) struct Moving {
    /// The handle's own state, when it has changes of its own; `None` for a clean handle,
    /// which moves whatever is stored.
    pub(crate) own: Option<Vec<u8>>,
    /// The binding the handle set with `set_user` (`Some(None)`: unbound), if it set one.
    pub(crate) rebind: Option<Rebind>,
    /// The session's creation time, kept so the absolute lifetime is not extended (`None`: the
    /// session was stored without timestamps).
    pub(crate) created: Option<u64>,
}

/// What a regenerate stored under the new id.
pub(crate) struct Moved {
    pub(crate) id: SessionId,
    pub(crate) stamp: Stamp,
}

/// Why [`Store::move_session`] did not move a session.
enum MoveFailed {
    /// The session was not moved, and no pending write can move it any more: the old id holds
    /// it as before (or lost it to a destroy or another move first, [`Error::SessionGone`]),
    /// and the copy is nobody's.
    NotMoved(Error),
    /// The copy changed under the move (a revoke reached it): it is removed, and the regenerate
    /// starts over with a fresh copy of what the old id holds then.
    CopyLost,
    /// Storage failed so that whether the move happened is unknown (the swap to the marker, and
    /// the fence that would settle it, both failed). The copy may now be the session: it must be
    /// kept (it expires and is swept like any session if it is not).
    Unknown(Error),
}

impl From<Error> for MoveFailed {
    fn from(err: Error) -> Self {
        MoveFailed::NotMoved(err)
    }
}

/// The old session as the move last read it, and the copy as this call last wrote it.
struct Sides {
    old_stamp: Option<Stamp>,
    current: Vec<u8>,
    copy: Stamp,
    bytes: Vec<u8>,
}

impl Store {
    /// The writes of a regenerate of the session stored under `old`: a copy under a fresh id
    /// (see [`create`](Self::create)), the move (see the module docs), then what is left under
    /// `old` removed. `follow` is given each stored state a clean handle moves, before the copy
    /// takes it. Returns the copy, or `None` when every id drawn was taken (nothing is written
    /// then).
    ///
    /// On an error the old session is as it was, or gone ([`Error::SessionGone`]), and the copy
    /// is removed, unless the move's outcome is unknown: then the copy is kept, as it may be the
    /// session.
    pub(crate) fn regenerate(
        &self,
        old: &SessionId,
        moving: &Moving,
        mut follow: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<Option<Moved>> {
        for _ in 0..COPY_ATTEMPTS {
            let Some((new, mut sides)) = self.copy(old, moving, &mut follow)? else {
                return Ok(None);
            };
            match self.move_session(old, &new, moving, &mut sides, &mut follow) {
                // A move that landed only once the session had expired (its record as read
                // says so by the clock now) moved a dead session: it ends, under both ids.
                Ok(()) if self.expired_meanwhile(sides.old_stamp.as_ref()) => {
                    self.discard(&new, &sides);
                    let binding = sides.old_stamp.and_then(|stamp| stamp.binding);
                    self.forget(old, binding.as_ref());
                    return Err(Error::SessionGone {
                        id: old.to_string(),
                    });
                }
                Ok(()) => {
                    self.hand_out(old, &new, &mut sides);
                    return Ok(Some(Moved {
                        id: new,
                        stamp: sides.copy,
                    }));
                }
                Err(failed) => {
                    let (err, keep) = match failed {
                        MoveFailed::CopyLost => (None, false),
                        MoveFailed::NotMoved(err) => (Some(err), false),
                        MoveFailed::Unknown(err) => (Some(err), true),
                    };
                    // The copy was never reachable (its id never left this call), so removing
                    // it is a plain removal; if that fails, it is indexed and swept on expiry.
                    // Unless the move's outcome is unknown: then it may be the session.
                    if !keep {
                        self.discard(&new, &sides);
                    }
                    if let Some(err) = err {
                        return Err(err);
                    }
                }
            }
        }
        Err(Error::SessionGone {
            id: old.to_string(),
        })
    }

    /// After the move: the copy's record stops naming the old id (see [`Stamp::from`]), then
    /// the old id, dead from the move on, is removed (only clutter is left there). Best effort,
    /// the move being done: while the record still names the old id, the moved-marker there
    /// is what shows a listing the copy was handed out, so the old id stays unless the record
    /// was rewritten, or the copy was ended meanwhile (a revoke).
    fn hand_out(&self, old: &SessionId, new: &SessionId, sides: &mut Sides) {
        let Ok(handed) = Stamp::new(new, sides.copy.meta, sides.copy.binding.clone(), 0) else {
            return;
        };
        match self.swap_copy_record(new, sides, &handed) {
            Ok(true) => sides.copy = handed,
            Ok(false) => {}
            Err(_) => return,
        }
        let binding = sides
            .old_stamp
            .as_ref()
            .and_then(|stamp| stamp.binding.clone());
        self.forget(old, binding.as_ref());
    }

    /// Removes a copy the move did not hand out: its state first, by a swap from what this call
    /// left there, then its domain, then (only once the domain is gone) its index entry. A
    /// failure of either removal alone leaves no live copy: without its state the domain is no
    /// session (and its record is indexed, so the sweep removes it).
    fn discard(&self, new: &SessionId, sides: &Sides) {
        let _ = self
            .archive
            .compare_and_swap(new.as_str(), STATE_KEY, Some(&sides.bytes), None);
        self.forget(new, sides.copy.binding.as_ref());
    }

    /// Whether a session with this record has expired by now.
    fn expired_meanwhile(&self, stamp: Option<&Stamp>) -> bool {
        stamp.is_some_and(|stamp| self.is_expired(stamp.meta, self.now()))
    }

    /// Reads the session stored under `old` and stores its copy under a fresh id, bound as the
    /// move will bind it (see [`Moving`]). `None` when every id drawn was taken.
    fn copy(
        &self,
        old: &SessionId,
        moving: &Moving,
        follow: &mut impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<Option<(SessionId, Sides)>> {
        let old_stamp = self.read_meta(old)?;
        let Stored::State(current) = self.read_state(old)? else {
            return Err(Error::SessionGone {
                id: old.to_string(),
            });
        };
        if moving.own.is_none() {
            follow(&current)?;
        }
        let bytes = moving.own.clone().unwrap_or_else(|| current.clone());
        let user = match &moving.rebind {
            Some(Rebind(user)) => user.clone(),
            None => old_stamp.as_ref().and_then(Stamp::user).map(str::to_owned),
        };
        let now = self.now();
        let meta = Meta {
            created: moving.created.unwrap_or(now),
            seen: now,
        };
        let mut new = SessionId::generate();
        let from = self.stored_name(old);
        let Some(copy) = self.create(&mut new, &bytes, meta, user.as_deref(), Some(&from))? else {
            return Ok(None);
        };
        let sides = Sides {
            old_stamp,
            current,
            copy,
            bytes,
        };
        Ok(Some((new, sides)))
    }

    /// The move: swaps the old id's state for a moved-marker naming `new`, while the old id's
    /// record is as read; whenever another write landed in between, the copy follows it (see
    /// the module docs) and the move is tried again.
    ///
    /// [`Error::SessionGone`] (naming `old`) when the session was destroyed or moved by another
    /// call first; [`MoveFailed::CopyLost`] when the copy changed under this call (a revoke of
    /// the user it was bound to reached it, while the session may live on under `old`).
    fn move_session(
        &self,
        old: &SessionId,
        new: &SessionId,
        moving: &Moving,
        sides: &mut Sides,
        follow: &mut impl FnMut(&[u8]) -> Result<()>,
    ) -> std::result::Result<(), MoveFailed> {
        let marker = moved_marker(&self.stored_name(new));
        let gone = || Error::SessionGone {
            id: old.to_string(),
        };
        loop {
            // An expired session is dead, even before a sweep removes it: the move expects the
            // record judged here, so it never lands on one that has expired.
            if let Some(stamp) = &sides.old_stamp
                && self.is_expired(stamp.meta, self.now())
            {
                return Err(gone().into());
            }
            let record = sides.old_stamp.as_ref().map(|stamp| &stamp.raw[..]);
            let swaps = [
                (STATE_KEY, Some(&sides.current[..]), Some(&marker[..])),
                (META_KEY, record, record),
            ];
            match self.archive.compare_and_swap_many(old.as_str(), &swaps) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(err) => return self.fence(old, sides, &marker, err),
            }
            sides.old_stamp = self.read_meta(old)?;
            let Stored::State(next) = self.read_state(old)? else {
                return Err(gone().into());
            };
            self.follow_copy(new, moving, sides, &next, follow)?;
            sides.current = next;
        }
    }

    /// Makes the copy follow what the old id holds now: a clean handle's copy takes the state
    /// `next` (given to `follow` first), and a copy whose binding is not the handle's own takes
    /// the old id's binding. [`MoveFailed::CopyLost`] when the copy changed under this call.
    fn follow_copy(
        &self,
        new: &SessionId,
        moving: &Moving,
        sides: &mut Sides,
        next: &[u8],
        follow: &mut impl FnMut(&[u8]) -> Result<()>,
    ) -> std::result::Result<(), MoveFailed> {
        if moving.own.is_none() && next != sides.bytes {
            follow(next)?;
            let copied = Some(&sides.bytes[..]);
            if !self
                .archive
                .compare_and_swap(new.as_str(), STATE_KEY, copied, Some(next))?
            {
                return Err(MoveFailed::CopyLost);
            }
            sides.bytes = next.to_vec();
        }
        if moving.rebind.is_none() {
            let stored = sides
                .old_stamp
                .as_ref()
                .and_then(Stamp::user)
                .map(str::to_owned);
            if stored.as_deref() != sides.copy.user()
                && !self.rebind_copy(new, sides, stored.as_deref())?
            {
                return Err(MoveFailed::CopyLost);
            }
        }
        Ok(())
    }

    /// Binds the copy to `user` as the old id now is: the new binding's entry first, then the
    /// copy's record, while its state is as this call left it, then the replaced binding's entry
    /// removed. Whether the copy was as this call left it (not when a revoke reached it: a copy
    /// whose state a revoke of its former user destroyed must not be bound to another).
    fn rebind_copy(&self, new: &SessionId, sides: &mut Sides, user: Option<&str>) -> Result<bool> {
        let binding = user.map(|user| self.new_binding(new, user)).transpose()?;
        if let Some(binding) = &binding {
            self.add_user_entry(new, binding)?;
        }
        let next = Stamp::copy_of(new, sides.copy.meta, binding, 0, sides.copy.from.clone())?;
        if !self.swap_copy_record(new, sides, &next)? {
            return Ok(false);
        }
        if let Some(replaced) = &sides.copy.binding {
            self.remove_user_entry(new, replaced)?;
        }
        sides.copy = next;
        Ok(true)
    }

    /// Swaps the copy's record from the one this call last wrote to `next`, while the copy's
    /// state is as this call left it: whether it swapped (not when a revoke reached the copy).
    fn swap_copy_record(&self, new: &SessionId, sides: &Sides, next: &Stamp) -> Result<bool> {
        let state = Some(&sides.bytes[..]);
        let swaps = [
            (STATE_KEY, state, state),
            (META_KEY, Some(&sides.copy.raw[..]), Some(&next.raw[..])),
        ];
        self.archive.compare_and_swap_many(new.as_str(), &swaps)
    }

    /// Settles a move whose swap failed with `err`, when it may still land later (a timed-out
    /// command that the server runs after its reply was given up). A fence swaps the old id's
    /// state for itself while bumping the record's revision. Revisions only grow (every write
    /// of the record swaps from the record it read, keeping its revision), so once the fence
    /// lands the record never again holds what the pending move expects, and the move can
    /// never land: the session was not moved. When the fence finds the old id changed, it reads
    /// it again: the move's marker there means it landed; no state means the session is gone (no
    /// write brings a state back); another state is fenced in turn, since a write may put back
    /// the very bytes the pending move expects. Only when storage fails the fence (or the old
    /// id keeps changing) is the outcome unknown.
    fn fence(
        &self,
        old: &SessionId,
        sides: &Sides,
        marker: &[u8],
        err: Error,
    ) -> std::result::Result<(), MoveFailed> {
        let (mut stamp, mut state) = (sides.old_stamp.clone(), sides.current.clone());
        for _ in 0..FENCE_ATTEMPTS {
            match self.fence_once(old, stamp.as_ref(), &state) {
                Ok(true) => return Err(MoveFailed::NotMoved(err)),
                Ok(false) => {}
                Err(_) => return Err(MoveFailed::Unknown(err)),
            }
            let (Ok(record), Ok(stored)) = (
                self.read_meta(old),
                self.archive.get(old.as_str(), STATE_KEY),
            ) else {
                return Err(MoveFailed::Unknown(err));
            };
            match stored {
                Some(stored) if stored == marker => return Ok(()),
                Some(stored) if is_state(&stored) => (stamp, state) = (record, stored),
                _ => return Err(MoveFailed::NotMoved(err)),
            }
        }
        Err(MoveFailed::Unknown(err))
    }

    /// One try of [`fence`](Self::fence) on the old id found holding `state` and `stamp`:
    /// whether it landed.
    fn fence_once(&self, old: &SessionId, stamp: Option<&Stamp>, state: &[u8]) -> Result<bool> {
        let fenced = if let Some(stamp) = stamp {
            let rev = stamp.rev.checked_add(1).ok_or_else(|| Error::Backend {
                backend: "sessions",
                operation: "fence a move",
                source: "the record's revision is at its largest".into(),
            })?;
            Stamp::new(old, stamp.meta, stamp.binding.clone(), rev)?
        } else {
            // A session stored without timestamps gets them from the fence: indexed first.
            let fenced = Stamp::new(old, Meta::fresh(self.now()), None, 1)?;
            self.index(old, fenced.meta)?;
            fenced
        };
        let record = stamp.map(|stamp| &stamp.raw[..]);
        let swaps = [
            (STATE_KEY, Some(state), Some(state)),
            (META_KEY, record, Some(&fenced.raw[..])),
        ];
        self.archive.compare_and_swap_many(old.as_str(), &swaps)
    }
}
