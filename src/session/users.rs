//! Sessions per user: the index behind [`Session::set_user`](crate::Session::set_user),
//! [`Sessions::user_sessions`] and [`Sessions::revoke_user`].
//!
//! A session bound to a user carries the user id in its timestamps record (`meta.json`), so a
//! start reads it back with no extra read. The index is one domain per user, `user-<h>`, where
//! `<h>` is the hex SHA-256 of the user id: any string is a valid user id, and none can leave its
//! domain. Its keys are the user's sessions (by stored name), each valued with the unix time the
//! entry was written.
//!
//! **The index never misses a session.** The entry is written before the binding it covers, so a
//! crash or a failed write leaves at worst a stale entry. Stale entries are filtered out by
//! readers, and dropped where that is safe: once the session is moved (a moved-marker is final),
//! or absent for longer than any create takes. Entries of sessions that are merely bound to
//! another user now are left for the writer that rebound them, which removes them itself: a
//! reader could otherwise drop the entry of a session whose binding is being written.
//!
//! **A revoke is final.** Each session is destroyed by one compare-and-swap of its state to
//! nothing, so a write racing it either lands before (and is destroyed with it) or fails. A
//! session that a regenerate moved meanwhile is followed through its moved-marker, which names
//! the new stored name, so no copy under a new id survives.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::id::{SessionId, sha256_hex};
use super::{Inner, META_KEY, STATE_KEY, Sessions, Stored, read_state};
use crate::archive::DEFAULT_PAGE_SIZE;
use crate::error::{Error, Result};

/// How a user's index domain is named: this prefix and the hex SHA-256 of the user id.
const USER_PREFIX: &str = "user-";

/// The longest user id, in bytes.
pub const MAX_USER_LEN: usize = 1024;

/// How long an index entry may name a session that is not stored yet: the time a create takes
/// between writing the entry and the session's state, with room for clock lag between
/// processes. An entry older than this whose session is absent is stale for good.
const CREATE_GRACE_SECS: u64 = 60 * 60;

/// How many moved-markers a revoke follows from one entry: one per regenerate that raced it.
const MAX_HOPS: usize = 16;

/// How many walks of a user's index a revoke makes at most: two when nothing races it, one more
/// for each wave of regenerates or logins of that user that land during it.
const MAX_PASSES: usize = 16;

/// Checks a user id: 1 to [`MAX_USER_LEN`] bytes.
pub(super) fn validate_user(user: &str) -> Result<()> {
    if user.is_empty() || user.len() > MAX_USER_LEN {
        return Err(Error::InvalidUser { len: user.len() });
    }
    Ok(())
}

/// The index domain of `user`.
pub(super) fn user_domain(user: &str) -> String {
    format!("{USER_PREFIX}{}", sha256_hex(user, 32))
}

/// The user a session's timestamps record binds it to, if any.
pub(super) fn bound_user(meta_raw: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Binding {
        #[serde(default)]
        user: Option<String>,
    }
    serde_json::from_slice::<Binding>(meta_raw)
        .ok()
        .and_then(|binding| binding.user)
}

impl Inner {
    /// Writes `id`'s entry in `user`'s index. Called BEFORE the write that binds the session.
    pub(super) fn add_user_entry(&self, user: &str, id: &SessionId) -> Result<()> {
        let domain = user_domain(user);
        let now = self.now();
        self.archive
            .set(&domain, id.as_str(), now.to_string().as_bytes())?;
        // On backends that expire domains themselves (Redis), the index goes when the last of
        // its sessions can have expired: no session written now outlives now plus the longest
        // timeout, so each write moves that time forward and never before an entry's session.
        let longest = [self.config.idle_timeout, self.config.absolute_lifetime]
            .into_iter()
            .flatten()
            .max();
        if let Some(longest) = longest {
            let at = UNIX_EPOCH + Duration::from_secs(now) + longest + Duration::from_secs(60);
            self.archive.expire_domain(&domain, at)?;
        }
        Ok(())
    }

    /// Removes `id`'s entry from `user`'s index. Called AFTER the session stopped being bound
    /// to `user` (destroyed, moved, expired or rebound).
    pub(super) fn remove_user_entry(&self, user: &str, id: &SessionId) -> Result<()> {
        self.archive.remove(&user_domain(user), id.as_str())?;
        Ok(())
    }

    /// The verdict of `user`'s index entry (in `domain`) on the session stored as `id`. The
    /// entry's value, when it was written, is read only for a session found absent.
    fn judge(&self, user: &str, domain: &str, id: &SessionId, now: u64) -> Result<Entry> {
        let meta_raw = self.archive.get(id.as_str(), META_KEY)?;
        let state = read_state(&*self.archive, id)?;
        Ok(match state {
            Stored::Moved(target) => Entry::Moved(target),
            Stored::Absent => {
                let written: Option<u64> = self
                    .archive
                    .get(domain, id.as_str())?
                    .and_then(|value| String::from_utf8(value).ok()?.parse().ok());
                let old = written.is_none_or(|at| now.saturating_sub(at) > CREATE_GRACE_SECS);
                if old && meta_raw.is_none() {
                    Entry::Dead
                } else {
                    Entry::Other
                }
            }
            Stored::State(state) => {
                let Some(raw) = meta_raw else {
                    return Ok(Entry::Other);
                };
                if bound_user(&raw).as_deref() != Some(user) {
                    return Ok(Entry::Other);
                }
                match serde_json::from_slice::<super::expiry::Meta>(&raw) {
                    Ok(meta) if !self.is_expired(meta, now) => Entry::Live { meta, state },
                    _ => Entry::Other,
                }
            }
        })
    }
}

/// What an index entry names.
enum Entry {
    /// A live session bound to the user, with its timestamps and state.
    Live {
        meta: super::expiry::Meta,
        state: Vec<u8>,
    },
    /// A session moved by a regenerate, to the stored name given (if the marker names one).
    Moved(Option<String>),
    /// Nothing, for longer than a create takes: the entry is stale for good.
    Dead,
    /// Anything else: expired, bound to another user, unreadable, or a create in progress.
    Other,
}

/// One of a user's sessions, as [`Sessions::user_sessions`] lists it.
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
    /// The session's id. With [ids hashed at rest](crate::SessionsBuilder::hash_ids_at_rest)
    /// it is the stored hash instead, which names the session but is no cookie.
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
    /// [`idle_timeout`](crate::SessionsBuilder::idle_timeout) for how often that is).
    ///
    /// # Examples
    ///
    /// See [`UserSession`].
    pub fn seen(&self) -> SystemTime {
        self.seen
    }
}

/// The iterator of [`Sessions::user_sessions`]: one listing page of the user's index at a time.
struct UserSessions {
    sessions: Sessions,
    user: String,
    domain: String,
    page: VecDeque<String>,
    cursor: Option<String>,
    done: bool,
}

impl UserSessions {
    fn next_entry(&mut self) -> Result<Option<UserSession>> {
        let inner = &*self.sessions.inner;
        loop {
            if self.page.is_empty() {
                if self.done {
                    return Ok(None);
                }
                let page = inner.archive.list_keys(
                    &self.domain,
                    self.cursor.as_deref(),
                    DEFAULT_PAGE_SIZE,
                )?;
                self.done = page.cursor.is_none();
                self.cursor = page.cursor;
                self.page.extend(page.names);
                continue;
            }
            let Some(name) = self.page.pop_front() else {
                continue;
            };
            let Some(id) = SessionId::from_stored(&name) else {
                continue;
            };
            match inner.judge(&self.user, &self.domain, &id, inner.now())? {
                Entry::Live { meta, .. } => {
                    return Ok(Some(UserSession {
                        id,
                        created: UNIX_EPOCH + Duration::from_secs(meta.created),
                        seen: UNIX_EPOCH + Duration::from_secs(meta.seen),
                    }));
                }
                Entry::Moved(_) | Entry::Dead => {
                    inner.archive.remove(&self.domain, id.as_str())?;
                }
                Entry::Other => {}
            }
        }
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

impl Sessions {
    /// Iterates over the live sessions bound to `user` (see
    /// [`Session::set_user`](crate::Session::set_user)), in no particular order. It walks the
    /// user's index a listing page at a time, so its cost is O(that user's sessions), whatever
    /// the number of others, and a user with thousands of sessions never sits in one `Vec`.
    /// Index entries found stale for good are dropped on the way.
    ///
    /// # Errors
    ///
    /// Each item may be the archive's error, after which the iteration ends;
    /// [`Error::InvalidUser`] (as the only item) for a user id that is empty or over
    /// [`MAX_USER_LEN`] bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// for _device in 0..3 {
    ///     let mut session = sessions.start(None, ())?;
    ///     session.set_user(Some("alice"));
    ///     session.save()?;
    /// }
    /// assert_eq!(sessions.user_sessions("alice").count(), 3);
    /// assert_eq!(sessions.user_sessions("bob").count(), 0);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn user_sessions(&self, user: &str) -> impl Iterator<Item = Result<UserSession>> + use<> {
        let invalid = validate_user(user).err();
        let done = invalid.is_some();
        invalid.map(Err).into_iter().chain(UserSessions {
            sessions: self.clone(),
            user: user.to_owned(),
            domain: user_domain(user),
            page: VecDeque::new(),
            cursor: None,
            done,
        })
    }

    /// Destroys every session bound to `user` ("sign out everywhere", or after a password
    /// change) and returns how many it destroyed. Its cost is O(that user's sessions).
    ///
    /// A revoke is final: each session is destroyed by one compare-and-swap of its state, so a
    /// `save` or `update` racing it lands before (and is destroyed with it) or fails with
    /// [`Error::SessionGone`]; a session that a concurrent
    /// [`regenerate`](crate::Session::regenerate) moved is followed to its new id and destroyed
    /// there, so no copy survives (a session caught between a regenerate's copy and its move
    /// counts twice, with its copy). A session bound to the user after the revoke's last walk
    /// of the user's index (a login that lands during the revoke) is a later session, and
    /// stays.
    ///
    /// # Errors
    ///
    /// The archive's errors (the sessions destroyed before stay destroyed; run it again to
    /// finish); [`Error::InvalidUser`] for an invalid user id.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let mut phone = sessions.start(None, ())?;
    /// phone.set_user(Some("alice"));
    /// phone.save()?;
    /// assert_eq!(sessions.revoke_user("alice")?, 1);
    /// assert!(!sessions.is_live(phone.id())?);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn revoke_user(&self, user: &str) -> Result<usize> {
        self.revoke(user, None)
    }

    /// Destroys every session bound to `user` except `keep` ("sign out other devices"), and
    /// returns how many it destroyed; see [`revoke_user`](Self::revoke_user).
    ///
    /// # Errors
    ///
    /// As for [`revoke_user`](Self::revoke_user).
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let mut ids = Vec::new();
    /// for _device in 0..3 {
    ///     let mut session = sessions.start(None, ())?;
    ///     session.set_user(Some("alice"));
    ///     session.save()?;
    ///     ids.push(session.id().clone());
    /// }
    /// assert_eq!(sessions.revoke_user_except("alice", &ids[0])?, 2);
    /// assert!(sessions.is_live(&ids[0])?);
    /// assert_eq!(sessions.user_sessions("alice").count(), 1);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn revoke_user_except(&self, user: &str, keep: &SessionId) -> Result<usize> {
        self.revoke(user, Some(keep))
    }

    fn revoke(&self, user: &str, keep: Option<&SessionId>) -> Result<usize> {
        validate_user(user)?;
        let inner = &*self.inner;
        let domain = user_domain(user);
        let keep = keep.map(|id| inner.stored_name(id));
        let mut revoked = 0;
        // A regenerate that moves a session after this pass listed it, and before it reached
        // it, writes the new id's entry before the move and may remove the old domain (and its
        // marker) right after. So the index is walked again until a pass finds it as the pass
        // before left it and destroys nothing: every entry a move wrote meanwhile is then seen.
        let mut before = None;
        for _ in 0..MAX_PASSES {
            let (destroyed, seen) = self.revoke_pass(user, &domain, keep.as_deref())?;
            revoked += destroyed;
            if destroyed == 0 && before == Some(seen) {
                break;
            }
            before = Some(seen);
        }
        Ok(revoked)
    }

    /// One walk of `user`'s index for [`revoke`](Self::revoke): returns how many sessions it
    /// destroyed, and a digest of the entries it found (their count and a hash of their names).
    fn revoke_pass(
        &self,
        user: &str,
        domain: &str,
        keep: Option<&str>,
    ) -> Result<(usize, (usize, u64))> {
        let mut revoked = 0;
        let mut seen = (0, 0);
        let mut cursor = None;
        loop {
            let page =
                self.inner
                    .archive
                    .list_keys(domain, cursor.as_deref(), DEFAULT_PAGE_SIZE)?;
            // The destroyed sessions' leftovers (timestamps, index entries) go in two batches a
            // page, so a revoke costs one commit per session rather than three.
            let mut destroyed = Vec::new();
            for name in &page.names {
                seen.0 += 1;
                seen.1 ^= super::state_hash(name.as_bytes());
                if keep == Some(name.as_str()) {
                    continue;
                }
                if let Some(id) = SessionId::from_stored(name) {
                    destroyed.extend(self.revoke_one(user, domain, id)?);
                }
            }
            if !destroyed.is_empty() {
                revoked += destroyed.len();
                let names: Vec<&str> = destroyed.iter().map(SessionId::as_str).collect();
                self.inner.archive.remove_domains(&names)?;
                let entries: Vec<(&str, &str)> = names.iter().map(|name| (domain, *name)).collect();
                self.inner.archive.remove_many(&entries)?;
            }
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok((revoked, seen)),
            }
        }
    }

    /// Destroys the session stored as `id` if it is bound to `user`, following moved-markers;
    /// returns the session it destroyed, whose leftovers the caller removes.
    fn revoke_one(&self, user: &str, domain: &str, mut id: SessionId) -> Result<Option<SessionId>> {
        let inner = &*self.inner;
        let mut hops = 0;
        loop {
            match inner.judge(user, domain, &id, inner.now())? {
                Entry::Live { state, .. } => {
                    if inner
                        .archive
                        .compare_and_swap(id.as_str(), STATE_KEY, Some(&state), None)?
                    {
                        return Ok(Some(id));
                    }
                    // A write landed in between: judge the session again.
                }
                Entry::Moved(target) => {
                    inner.archive.remove(domain, id.as_str())?;
                    let next = target.as_deref().and_then(SessionId::from_stored);
                    match next {
                        Some(next) if hops < MAX_HOPS => {
                            hops += 1;
                            id = next;
                        }
                        _ => return Ok(None),
                    }
                }
                Entry::Dead => {
                    inner.archive.remove(domain, id.as_str())?;
                    return Ok(None);
                }
                Entry::Other => return Ok(None),
            }
        }
    }
}
