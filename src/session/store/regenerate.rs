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
use crate::session::layout::{META_KEY, Meta, Rebind, STATE_KEY, Stamp, Stored, moved_marker};

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
        let gone = || Error::SessionGone {
            id: old.to_string(),
        };
        let old_stamp = self.read_meta(old)?;
        let Stored::State(current) = self.read_state(old)? else {
            return Err(gone());
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
        let Some(copy) = self.create(&mut new, &bytes, meta, user.as_deref())? else {
            return Ok(None);
        };
        let mut sides = Sides {
            old_stamp,
            current,
            copy,
            bytes,
        };
        match self.move_session(old, &new, moving, &mut sides, follow) {
            Ok(()) => {
                // The old id is dead from the move on; what is left of it is only clutter.
                let binding = sides.old_stamp.and_then(|stamp| stamp.binding);
                self.forget(old, binding.as_ref());
                Ok(Some(Moved {
                    id: new,
                    stamp: sides.copy,
                }))
            }
            Err(MoveFailed::NotMoved(err)) => {
                // The copy was never reachable (its id never left this call), so removing it
                // is a plain removal. If that fails, the copy is indexed and swept on expiry.
                self.forget(&new, sides.copy.binding.as_ref());
                Err(err)
            }
            Err(MoveFailed::Unknown(err)) => Err(err),
        }
    }

    /// The move: swaps the old id's state for a moved-marker naming `new`, while the old id's
    /// record is as read; whenever another write landed in between, the copy follows it (see
    /// the module docs) and the move is tried again.
    ///
    /// [`Error::SessionGone`] (naming `old`) when the session was destroyed or moved by another
    /// call first, or when the copy changed under this call (a revoke reached it).
    fn move_session(
        &self,
        old: &SessionId,
        new: &SessionId,
        moving: &Moving,
        sides: &mut Sides,
        mut follow: impl FnMut(&[u8]) -> Result<()>,
    ) -> std::result::Result<(), MoveFailed> {
        let marker = moved_marker(&self.stored_name(new));
        let gone = || Error::SessionGone {
            id: old.to_string(),
        };
        loop {
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
            if moving.own.is_none() && next != sides.bytes {
                follow(&next)?;
                if !self.archive.compare_and_swap(
                    new.as_str(),
                    STATE_KEY,
                    Some(&sides.bytes),
                    Some(&next),
                )? {
                    return Err(gone().into());
                }
                sides.bytes.clone_from(&next);
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
                    return Err(gone().into());
                }
            }
            sides.current = next;
        }
    }

    /// Binds the copy to `user` as the old id now is: the new binding's entry first, then the
    /// copy's record, then the replaced binding's entry removed. Whether the copy was as this
    /// call left it (not when a revoke reached it).
    fn rebind_copy(&self, new: &SessionId, sides: &mut Sides, user: Option<&str>) -> Result<bool> {
        let binding = user.map(|user| self.new_binding(new, user)).transpose()?;
        if let Some(binding) = &binding {
            self.add_user_entry(new, binding)?;
        }
        let next = Stamp::new(new, sides.copy.meta, binding, 0)?;
        if !self.archive.compare_and_swap(
            new.as_str(),
            META_KEY,
            Some(&sides.copy.raw),
            Some(&next.raw),
        )? {
            return Ok(false);
        }
        if let Some(replaced) = &sides.copy.binding {
            self.remove_user_entry(new, replaced)?;
        }
        sides.copy = next;
        Ok(true)
    }

    /// Settles a move whose swap failed with `err`, when it may still land later (a timed-out
    /// command that the server runs after its reply was given up). A fence swaps the old id's
    /// state for itself while bumping the record's revision: if it lands, the pending move,
    /// which expects the record as it was, can never land, and the session was not moved. If
    /// it does not, something changed the old id: the move landed (the marker is there), or
    /// another write did, after which the pending move cannot land either. Only when the fence
    /// fails too is the outcome unknown.
    fn fence(
        &self,
        old: &SessionId,
        sides: &Sides,
        marker: &[u8],
        err: Error,
    ) -> std::result::Result<(), MoveFailed> {
        let fenced = match &sides.old_stamp {
            Some(stamp) => Stamp::new(old, stamp.meta, stamp.binding.clone(), stamp.rev + 1),
            None => Stamp::new(old, Meta::fresh(self.now()), None, 1),
        };
        let Ok(fenced) = fenced else {
            return Err(MoveFailed::Unknown(err));
        };
        // A session stored without timestamps gets them from the fence: index them first.
        if sides.old_stamp.is_none() && self.index(old, fenced.meta).is_err() {
            return Err(MoveFailed::Unknown(err));
        }
        let record = sides.old_stamp.as_ref().map(|stamp| &stamp.raw[..]);
        let state = Some(&sides.current[..]);
        let swaps = [
            (STATE_KEY, state, state),
            (META_KEY, record, Some(&fenced.raw[..])),
        ];
        match self.archive.compare_and_swap_many(old.as_str(), &swaps) {
            Ok(true) => Err(MoveFailed::NotMoved(err)),
            Ok(false) => match self.archive.get(old.as_str(), STATE_KEY) {
                Ok(Some(stored)) if stored == marker => Ok(()),
                Ok(_) => Err(MoveFailed::NotMoved(err)),
                Err(_) => Err(MoveFailed::Unknown(err)),
            },
            Err(_) => Err(MoveFailed::Unknown(err)),
        }
    }
}
