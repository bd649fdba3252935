//! Sessions per user: the index behind [`Session::set_user`](super::Session::set_user),
//! [`Sessions::user_sessions`] and [`Sessions::revoke_user`].
//!
//! [`Sessions::user_sessions`]: super::Sessions::user_sessions
//! [`Sessions::revoke_user`]: super::Sessions::revoke_user
//!
//! A session bound to a user carries the user id in its record (`meta.json`), so a start reads
//! it back with no extra read; a write that changes the binding stores it with the state in one
//! compare-and-swap of both keys, so a binding and a state always travel together. The index is
//! one domain per user, `user-<h>`, where `<h>` is the hex SHA-256 of the user id: any string is
//! a valid user id, and none can leave its domain. Each binding writes an entry of its own, keyed
//! `<stored name>.<token>` and valued with the unix time the entry was written, and the record
//! names that key; an entry written by an earlier version is keyed by the stored name alone.
//!
//! **The index is exact.** The entry is written before every try of the write that stores its
//! binding, so a crash or a failed write leaves at worst a stale entry, never a binding without
//! its entry. An entry is removed only once its binding was replaced (by the write that replaced
//! it, after its swap) or its session ended: since each binding has its own key, a removal can
//! never take the entry of a later binding to the same user, whatever order the writes land in.
//! Stale entries are filtered out by readers (a session is listed when its record binds it to
//! the user, by whichever of its entries the listing meets first, and once), and dropped where
//! that is safe: once the session is moved (a moved-marker is final), or absent for longer than
//! any create takes.
//!
//! **A revoke is final.** Each session bound to the user is destroyed, whatever its expiry, by one
//! compare-and-swap of its state to nothing that also checks its record, so a write racing it
//! either lands before (and is destroyed with it, or moved it to another user first) or fails.
//! A session that a regenerate moved meanwhile is followed through its moved-marker, which names
//! the new stored name, so no copy under a new id survives.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use super::expiry::unix_time;
use super::id::SessionId;
use super::layout::{Stamp, Stored, binding_entry, bytes_hash, entry_session, user_domain};
use super::store::Store;
use crate::error::{Error, Result};

/// How long an index entry may name a session that is not stored yet: the time a create takes
/// between writing the entry and the session's state, with room for clock lag between
/// processes. An entry older than this whose session is absent is stale for good.
const CREATE_GRACE_SECS: u64 = 60 * 60;

/// How many moved-markers a revoke follows from one entry: one per regenerate that raced it.
const MAX_HOPS: usize = 16;

/// How many walks of a user's index a revoke makes at most. Unraced, a revoke that destroys
/// nothing makes two, and one that destroys sessions three (the walk that destroys, one that
/// finds their entries gone, one that finds the index as that one left it); each wave of
/// regenerates or logins of that user that lands during it adds one.
const MAX_PASSES: usize = 16;

/// The verdict of `user`'s index entry (in `domain`, under `key`; `None` for a session reached
/// through a moved-marker) on the session stored as `id`. With `live_only`, a session expired
/// by this store's timeouts is [`Entry::Other`]; a revoke asks without, since ending an expired
/// session is harmless and missing one that the application still finds live is not. The
/// entry's value, when it was written, is read only for a session found absent.
fn judge(
    store: &Store,
    user: &str,
    domain: &str,
    (key, id): (Option<&str>, &SessionId),
    live_only: bool,
) -> Result<Entry> {
    // With ids hashed at rest, a session stored under a plain id is reached without hashing.
    let store = store.for_stored(id.as_str());
    let stamp = match store.read_meta(id) {
        Ok(stamp) => stamp,
        Err(Error::CorruptSession { .. }) => return Ok(Entry::Other),
        Err(err) => return Err(err),
    };
    Ok(match store.read_state(id)? {
        Stored::Absent => {
            let written: Option<u64> = match key {
                Some(key) => archive_time(store, domain, key)?,
                None => None,
            };
            let old = written.is_none_or(|at| store.now().saturating_sub(at) > CREATE_GRACE_SECS);
            if old && stamp.is_none() {
                Entry::Dead
            } else {
                Entry::Other
            }
        }
        found => match judge_found(store, user, stamp, found, live_only) {
            Entry::Live { stamp, .. } if live_only && !handed_out(store, id, &stamp)? => {
                Entry::Other
            }
            entry => entry,
        },
    })
}

/// The verdict of [`judge`] on a session found holding something under its state key (`found`
/// is not [`Stored::Absent`]), with its record `stamp`.
fn judge_found(
    store: &Store,
    user: &str,
    stamp: Option<Stamp>,
    found: Stored,
    live_only: bool,
) -> Entry {
    match found {
        Stored::Moved(target) => Entry::Moved(target),
        Stored::Absent => Entry::Other,
        Stored::State(state) => {
            let Some(stamp) = stamp else {
                return Entry::Other;
            };
            // Any of the session's entries under the user leads to it: a rebind to the same user
            // writes its own entry and removes the one it replaced, and a listing that read only
            // the old one must still find the session. (The listing lists each session once.)
            if stamp.user() != Some(user) {
                return Entry::Other;
            }
            if live_only && store.is_expired(stamp.meta, store.now()) {
                return Entry::Other;
            }
            Entry::Live { stamp, state }
        }
    }
}

/// Whether the session stored as `id`, with the record `stamp`, is one: not a regenerate's copy
/// that was not handed out yet (see [`Stamp::from`]). A copy is handed out once the old id's
/// moved-marker names it. Should the old id be gone while the record still names it (the
/// regenerate failed to rewrite the record, and the old id was swept later), the copy counts
/// once it is older than a regenerate can take, as an index entry does.
fn handed_out(store: &Store, id: &SessionId, stamp: &Stamp) -> Result<bool> {
    let Some(from) = &stamp.from else {
        return Ok(true);
    };
    let Some(old) = SessionId::from_stored(from) else {
        return Ok(true);
    };
    Ok(match store.for_stored(from).read_state(&old)? {
        Stored::Moved(target) => target.as_deref() == Some(id.as_str()),
        Stored::Absent => store.now().saturating_sub(stamp.meta.seen) > CREATE_GRACE_SECS,
        Stored::State(_) => false,
    })
}

/// When the entry `key` of the user index `domain` was written, as its value records it.
fn archive_time(store: &Store, domain: &str, key: &str) -> Result<Option<u64>> {
    Ok(store
        .reads()
        .get(domain, key)?
        .and_then(|value| String::from_utf8(value).ok()?.parse().ok()))
}

/// What an index entry names.
enum Entry {
    /// A live session bound to the user, with its record and state.
    Live { stamp: Stamp, state: Vec<u8> },
    /// A session moved by a regenerate, to the stored name given (if the marker names one).
    Moved(Option<String>),
    /// Nothing, for longer than a create takes: the entry is stale for good.
    Dead,
    /// Anything else: expired (when asked), bound to another user or to none, unreadable, or a
    /// create in progress.
    Other,
}

/// One of a user's sessions, as [`Sessions::user_sessions`](super::Sessions::user_sessions)
/// lists it.
///
/// # Examples
///
/// ```
/// use session_archive::{MemoryArchive, Sessions};
///
/// let sessions = Sessions::new(MemoryArchive::new());
/// let mut session = sessions.start(None, ())?;
/// session.set_user(Some("alice@example.com"));
/// session.save()?;
/// let listed = sessions.user_sessions("alice@example.com").next().expect("one")?;
/// assert_eq!(listed.id(), session.id());
/// assert!(listed.seen() >= listed.created());
/// # Ok::<(), session_archive::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSession {
    id: SessionId,
    created: SystemTime,
    seen: SystemTime,
}

impl UserSession {
    /// The session's id. With [ids hashed at
    /// rest](crate::session::SessionsBuilder::hash_ids_at_rest) it is the stored hash instead,
    /// which names the session but is no cookie.
    ///
    /// # Examples
    ///
    /// See [`UserSession`].
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// When the session was first saved (whole seconds).
    ///
    /// # Examples
    ///
    /// See [`UserSession`].
    pub fn created(&self) -> SystemTime {
        self.created
    }

    /// When the session was last marked seen (whole seconds; see
    /// [`idle_timeout`](crate::session::SessionsBuilder::idle_timeout) for how often that is).
    ///
    /// # Examples
    ///
    /// See [`UserSession`].
    pub fn seen(&self) -> SystemTime {
        self.seen
    }
}

/// The iterator of [`Sessions::user_sessions`](super::Sessions::user_sessions): one listing page of
/// the user's index at a time.
pub(crate) struct UserSessions {
    store: Arc<Store>,
    user: String,
    domain: String,
    page: VecDeque<String>,
    cursor: Option<String>,
    done: bool,
    /// The sessions listed so far: one may have two entries (a rebind to the same user in
    /// progress, or a stale one), and is listed once.
    listed: std::collections::HashSet<SessionId>,
}

impl UserSessions {
    fn next_entry(&mut self) -> Result<Option<UserSession>> {
        let store = &*self.store;
        loop {
            if self.page.is_empty() {
                if self.done {
                    return Ok(None);
                }
                let page = store
                    .reads()
                    .list_keys(&self.domain, self.cursor.as_deref())?;
                self.done = page.cursor.is_none();
                self.cursor = page.cursor;
                self.page.extend(page.names);
                continue;
            }
            let Some(name) = self.page.pop_front() else {
                continue;
            };
            let Some(id) = SessionId::from_stored(entry_session(&name)) else {
                continue;
            };
            let live = match judge(store, &self.user, &self.domain, (Some(&name), &id), true)? {
                Entry::Live { stamp, .. } => Some((id, stamp)),
                Entry::Moved(target) => {
                    store
                        .for_stored(id.as_str())
                        .drop_entry(&self.domain, &name)?;
                    self.moved_to(target)?
                }
                Entry::Dead => {
                    store
                        .for_stored(id.as_str())
                        .drop_entry(&self.domain, &name)?;
                    None
                }
                Entry::Other => None,
            };
            if let Some((id, stamp)) = live
                && self.listed.insert(id.clone())
            {
                return Ok(Some(UserSession {
                    id,
                    created: unix_time(stamp.meta.created),
                    seen: unix_time(stamp.meta.seen),
                }));
            }
        }
    }
}

impl UserSessions {
    /// The live session of the user that a moved-marker leads to, following markers as a
    /// revoke does: a regenerate whose move landed after this listing passed the copy's entry
    /// (a copy that was not handed out yet, so not listed) is found through the old id's.
    fn moved_to(&self, mut target: Option<String>) -> Result<Option<(SessionId, Stamp)>> {
        for _ in 0..MAX_HOPS {
            let Some(id) = target.as_deref().and_then(SessionId::from_stored) else {
                return Ok(None);
            };
            match judge(&self.store, &self.user, &self.domain, (None, &id), true)? {
                Entry::Live { stamp, .. } => return Ok(Some((id, stamp))),
                Entry::Moved(next) => target = next,
                Entry::Dead | Entry::Other => return Ok(None),
            }
        }
        Ok(None)
    }
}

impl Iterator for UserSessions {
    type Item = Result<UserSession>;

    fn next(&mut self) -> Option<Result<UserSession>> {
        match self.next_entry() {
            Ok(Some(session)) => Some(Ok(session)),
            Ok(None) => None,
            Err(err) => {
                self.done = true;
                self.page.clear();
                Some(Err(err))
            }
        }
    }
}

impl UserSessions {
    /// The live sessions bound to `user` (valid), listed from its index.
    pub(crate) fn new(store: Arc<Store>, user: &str) -> UserSessions {
        UserSessions {
            store,
            user: user.to_owned(),
            domain: user_domain(user),
            page: VecDeque::new(),
            cursor: None,
            done: false,
            listed: std::collections::HashSet::new(),
        }
    }
}

/// Destroys every session bound to `user` (valid) except `keep`, and returns how many it
/// destroyed; see [`Sessions::revoke_user`](super::Sessions::revoke_user).
pub(crate) fn revoke(store: &Store, user: &str, keep: Option<&SessionId>) -> Result<usize> {
    let domain = user_domain(user);
    let keep = keep.map(|id| store.stored_name(id));
    let mut revoked = 0;
    // A regenerate that moves a session after this pass listed it, and before it reached
    // it, writes the new id's entry before the move and may remove the old domain (and its
    // marker) right after. So the index is walked again until a pass finds it as the pass
    // before left it and destroys nothing: every entry a move wrote meanwhile is then seen.
    let mut before = None;
    for _ in 0..MAX_PASSES {
        let (destroyed, seen) = revoke_pass(store, user, &domain, keep.as_deref())?;
        revoked += destroyed;
        if destroyed == 0 && before == Some(seen) {
            break;
        }
        before = Some(seen);
    }
    Ok(revoked)
}

/// One walk of `user`'s index for [`revoke`]: returns how many sessions it destroyed, and a
/// digest of the entries it found (their count and a hash of their names).
fn revoke_pass(
    store: &Store,
    user: &str,
    domain: &str,
    keep: Option<&str>,
) -> Result<(usize, (usize, u64))> {
    let mut revoked = 0;
    let mut seen = (0, 0);
    let mut cursor = None;
    loop {
        let page = store.reads().list_keys(domain, cursor.as_deref())?;
        let mut targets = Vec::new();
        for name in &page.names {
            seen.0 += 1;
            seen.1 ^= bytes_hash(name.as_bytes());
            let stored = entry_session(name);
            if keep == Some(stored) {
                continue;
            }
            if let Some(id) = SessionId::from_stored(stored) {
                targets.push((name.as_str(), id));
            }
        }
        // A page costs a fixed number of calls whatever it holds: one read and one swap of all
        // its sessions (see `revoke_page`), then two batches for their leftovers (records,
        // index entries), and nothing per session but for those a write raced.
        let destroyed = revoke_page(store, user, domain, &targets)?;
        if !destroyed.is_empty() {
            revoked += destroyed.len();
            // Each through the store that reaches it (see `Store::for_stored`).
            let (ours, plain): (Vec<_>, Vec<_>) = destroyed
                .into_iter()
                .partition(|(id, _)| !store.would_hash(id.as_str()));
            store.remove_revoked(domain, &ours)?;
            if let Some((first, _)) = plain.first() {
                store
                    .for_stored(first.as_str())
                    .remove_revoked(domain, &plain)?;
            }
        }
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok((revoked, seen)),
        }
    }
}

/// Destroys the sessions of one listing page of `user`'s index that are bound to `user`, each
/// given as its entry's key and the session it names; returns those it destroyed, with their
/// bindings' entry keys. Each session goes through the store that reaches it (see
/// `Store::for_stored`): the sessions of each store are read in one call, and every one found
/// live and bound to `user` is destroyed by its own compare-and-swap (the same as
/// [`revoke_one`]'s), all in one call. What that fast path cannot settle goes through
/// [`revoke_one`], one session at a time: a session whose swap failed (a write landed since the
/// read: it is judged again), one found moved (its marker is followed) and one found absent (its
/// entry may be stale).
fn revoke_page(
    store: &Store,
    user: &str,
    domain: &str,
    targets: &[(&str, SessionId)],
) -> Result<Vec<(SessionId, String)>> {
    let (plain, ours): (Vec<_>, Vec<_>) = targets
        .iter()
        .partition(|(_, id)| store.would_hash(id.as_str()));
    let mut destroyed = Vec::new();
    let mut slow = Vec::new();
    for part in [ours, plain] {
        let Some((_, first)) = part.first() else {
            continue;
        };
        let reach = store.for_stored(first.as_str());
        let ids: Vec<&SessionId> = part.iter().map(|(_, id)| id).collect();
        let mut live = Vec::new();
        for (&target, (record, found)) in part.iter().zip(reach.read_sessions(&ids)?) {
            // As `judge` does: an unreadable record first, then an absent state.
            let stamp = match record.map(|raw| Stamp::decode(&target.1, raw)).transpose() {
                Ok(stamp) => stamp,
                Err(Error::CorruptSession { .. }) => continue,
                Err(err) => return Err(err),
            };
            if matches!(found, Stored::Absent) {
                slow.push(target);
                continue;
            }
            match judge_found(reach, user, stamp, found, false) {
                Entry::Live { stamp, state } => live.push((target, stamp, state)),
                Entry::Other => {}
                Entry::Moved(_) | Entry::Dead => slow.push(target),
            }
        }
        let swaps: Vec<(&SessionId, &Stamp, &[u8])> = live
            .iter()
            .map(|((_, id), stamp, state)| (id, stamp, &state[..]))
            .collect();
        for ((target, stamp, _), swapped) in live.iter().zip(reach.revoke_swaps(&swaps)?) {
            if swapped {
                destroyed.push((target.1.clone(), entry_of(stamp, &target.1)));
            } else {
                slow.push(target);
            }
        }
    }
    for (key, id) in slow {
        destroyed.extend(revoke_one(store, user, domain, key, id.clone())?);
    }
    Ok(destroyed)
}

/// The key of the index entry that `stamp`'s binding of the session stored as `id` wrote.
fn entry_of(stamp: &Stamp, id: &SessionId) -> String {
    stamp
        .binding
        .as_ref()
        .map_or(id.as_str(), |binding| binding_entry(binding, id.as_str()))
        .to_owned()
}

/// Destroys the session whose entry `key` names, stored as `id`, if it is bound to `user`
/// (whatever its expiry), following moved-markers. The destroy is one compare-and-swap of the
/// state to nothing while the record is as read, so a session rebound to someone else in
/// between is not destroyed. Returns the session it destroyed and its binding's entry key,
/// which the caller removes.
fn revoke_one(
    store: &Store,
    user: &str,
    domain: &str,
    key: &str,
    mut id: SessionId,
) -> Result<Option<(SessionId, String)>> {
    let mut key = Some(key);
    let mut hops = 0;
    loop {
        match judge(store, user, domain, (key, &id), false)? {
            Entry::Live { stamp, state } => {
                if store
                    .for_stored(id.as_str())
                    .revoke_swap(&id, &stamp, &state)?
                {
                    let entry = entry_of(&stamp, &id);
                    return Ok(Some((id, entry)));
                }
                // A write landed in between: judge the session again.
            }
            Entry::Moved(target) => {
                if let Some(key) = key {
                    store.for_stored(id.as_str()).drop_entry(domain, key)?;
                }
                let next = target.as_deref().and_then(SessionId::from_stored);
                match next {
                    Some(next) if hops < MAX_HOPS => {
                        hops += 1;
                        id = next;
                        key = None;
                    }
                    _ => return Ok(None),
                }
            }
            Entry::Dead => {
                if let Some(key) = key {
                    store.for_stored(id.as_str()).drop_entry(domain, key)?;
                }
                return Ok(None);
            }
            Entry::Other => return Ok(None),
        }
    }
}
