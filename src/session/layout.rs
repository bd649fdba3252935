//! What a session is in the archive: the keys of its domain, the bytes stored under them, and
//! the names of the domains beside it. Every name the session layer (and the tower-sessions
//! store) stores under is here. The protocol that writes them is the [store](super::store)'s;
//! this module only names and encodes.
//!
//! | domain | key | holds |
//! |---|---|---|
//! | `<id>`, or its SHA-256 with ids hashed at rest (the *stored name*) | [`STATE_KEY`] | the state as JSON, or a moved-marker: `\0moved:<nonce>:<new stored name>` |
//! | the stored name | [`META_KEY`] | the record: `created` and `seen` (unix seconds); `user` and `entry` (the key of its index entry) when bound; `rev` once fenced; `from` (the old stored name) while a regenerate's copy is not handed out |
//! | `user-<SHA-256 of the user id>` | `<stored name>.<token>`, or the stored name alone (earlier versions) | one binding's index entry: the unix time it was written |
//! | `expiry-<n>` ([`SESSIONS_INDEX`]) | the stored name | an expiry index entry (see the expiry module) |
//! | `sweep-cursor` | `index` (and `bucket`, earlier versions) | the expiry index's record |
//! | [`CORRUPT_DOMAIN`] | `<unix time>-<fingerprint>` | a state set aside as undecodable |
//! | `tower-session-<id>` | [`TOWER_RECORD_KEY`] | a tower-sessions record |
//! | `tower-expiry-<n>`, `tower-sweep-cursor` ([`TOWER_INDEX`]) | as the sessions' index | the tower-sessions store's expiry index |
//! | `actix-session-<key>` | [`ACTIX_RECORD_KEY`] | an actix-session record |
//! | `actix-expiry-<n>`, `actix-sweep-cursor` ([`ACTIX_INDEX`]) | as the sessions' index | the actix-session store's expiry index |
//!
//! What a session's domain means, by what it holds:
//!
//! | [`STATE_KEY`] | [`META_KEY`] | the id names |
//! |---|---|---|
//! | a state | a record | a session, live until the record says it expired |
//! | a state | nothing | a session of the original framework, stored without timestamps: given a record on its first start |
//! | a moved-marker | anything | nothing any more: a regenerate moved the session; a revoke follows the marker |
//! | nothing | a record | nothing: a create cut short, or what a destroy left; indexed, so the sweep removes it |
//! | nothing | nothing | nothing |

use serde::{Deserialize, Serialize};

use super::id::SessionId;
use crate::archive::Archive;
use crate::error::{Error, Result};
use crate::ids::sha256_hex;

/// The key holding a session's state, as compact JSON: `session.json`, the original framework's
/// layout (`.gen/sessions/<id>/session.json`).
///
/// # Examples
///
/// Reading a session's stored state straight from the archive, as an operator's tool would:
///
/// ```
/// use std::sync::Arc;
/// use session_archive::session::{STATE_KEY, Sessions};
/// use session_archive::{Archive, MemoryArchive};
///
/// let archive = Arc::new(MemoryArchive::new());
/// let sessions = Sessions::new(Arc::clone(&archive));
/// let mut session = sessions.start(None, vec![1, 2, 3])?;
/// session.save()?;
/// let stored = archive.get(session.id().as_str(), STATE_KEY)?;
/// assert_eq!(stored.as_deref(), Some(&b"[1,2,3]"[..]));
/// # Ok::<(), session_archive::Error>(())
/// ```
pub const STATE_KEY: &str = "session.json";

/// The key holding a session's timestamps (and its user binding), beside [`STATE_KEY`]:
/// `meta.json`, as `{"created":…,"seen":…}` in unix seconds, with `"user":…` when the session
/// is bound to a user.
///
/// # Examples
///
/// A session whose state was written without timestamps (by the original framework, or a
/// migration from its directory tree) gets them the first time it is started:
///
/// ```
/// use std::sync::Arc;
/// use session_archive::session::{META_KEY, STATE_KEY, Sessions};
/// use session_archive::{Archive, MemoryArchive};
///
/// let archive = Arc::new(MemoryArchive::new());
/// let id = "0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2";
/// archive.set(id, STATE_KEY, br#"{"Name":"World"}"#)?;
/// assert!(!archive.has(id, META_KEY)?);
///
/// let sessions = Sessions::new(Arc::clone(&archive));
/// let session = sessions.start(Some(id), serde_json::Value::Null)?;
/// assert_eq!(session.id().as_str(), id);
/// assert!(archive.has(id, META_KEY)?);
/// # Ok::<(), session_archive::Error>(())
/// ```
pub const META_KEY: &str = "meta.json";

/// The domain where [`OnCorrupt::StartFresh`](super::OnCorrupt::StartFresh) sets undecodable
/// states aside: `corrupt-sessions`. Like the expiry index's domains, it is not shaped like a
/// session id, so it never collides with a session.
///
/// # Examples
///
/// Listing the states set aside, as an operator would before deciding what to do with them:
///
/// ```
/// use std::sync::Arc;
/// use session_archive::session::{CORRUPT_DOMAIN, OnCorrupt, STATE_KEY, Sessions};
/// use session_archive::{Archive, ArchiveExt, MemoryArchive};
///
/// let archive = Arc::new(MemoryArchive::new());
/// let sessions = Sessions::builder(Arc::clone(&archive))
///     .on_corrupt(OnCorrupt::StartFresh)
///     .build();
/// let mut session = sessions.start(None, 1_u32)?;
/// session.save()?;
/// archive.set(session.id().as_str(), STATE_KEY, b"not json")?;
/// sessions.start(Some(session.id().as_str()), 0_u32)?;
///
/// for key in archive.keys(CORRUPT_DOMAIN) {
///     let key = key?;
///     let bytes = archive.get(CORRUPT_DOMAIN, &key)?.unwrap_or_default();
///     assert_eq!(bytes, b"not json");
/// }
/// # Ok::<(), session_archive::Error>(())
/// ```
pub const CORRUPT_DOMAIN: &str = "corrupt-sessions";

pub use crate::ids::MAX_USER_LEN;

/// Where an expiry index lives in the archive: its buckets are the domains `<prefix><n>`, and its
/// record is the key `index` of the domain `cursor`. The names must not be those of anything
/// else the archive holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexNames {
    pub(crate) prefix: &'static str,
    pub(crate) cursor: &'static str,
}

impl IndexNames {
    /// The domain of bucket number `bucket`.
    pub(crate) fn bucket(self, bucket: u64) -> String {
        format!("{}{bucket}", self.prefix)
    }
}

/// The expiry index of sessions: buckets `expiry-<n>`, and the record in `sweep-cursor`.
pub(crate) const SESSIONS_INDEX: IndexNames = IndexNames {
    prefix: "expiry-",
    cursor: "sweep-cursor",
};

/// The expiry index of the tower-sessions store.
#[cfg_attr(
    not(feature = "tower-sessions"),
    expect(dead_code, reason = "named here with every other stored name")
)]
pub(crate) const TOWER_INDEX: IndexNames = IndexNames {
    prefix: "tower-expiry-",
    cursor: "tower-sweep-cursor",
};

/// The key holding a tower-sessions record in its domain, `tower-session-<id>` (the prefix is
/// `crate::ids::TOWER_RECORD_PREFIX`, which redaction needs below this layer).
#[cfg_attr(
    not(feature = "tower-sessions"),
    expect(dead_code, reason = "named here with every other stored name")
)]
pub(crate) const TOWER_RECORD_KEY: &str = "record.json";

/// The expiry index of the actix-session store.
#[cfg_attr(
    not(feature = "actix-session"),
    expect(dead_code, reason = "named here with every other stored name")
)]
pub(crate) const ACTIX_INDEX: IndexNames = IndexNames {
    prefix: "actix-expiry-",
    cursor: "actix-sweep-cursor",
};

/// The key holding an actix-session record in its domain, `actix-session-<key>` (the prefix is
/// `crate::ids::ACTIX_RECORD_PREFIX`, which redaction needs below this layer).
#[cfg_attr(
    not(feature = "actix-session"),
    expect(dead_code, reason = "named here with every other stored name")
)]
pub(crate) const ACTIX_RECORD_KEY: &str = "record.json";

/// How a user's index domain is named: this prefix and the hex SHA-256 of the user id.
const USER_PREFIX: &str = "user-";

/// The timestamps kept under [`META_KEY`], in unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) created: u64,
    pub(crate) seen: u64,
}

impl Meta {
    /// The timestamps of a session first stored at `now`.
    pub(crate) fn fresh(now: u64) -> Meta {
        Meta {
            created: now,
            seen: now,
        }
    }
}

/// A session's record under [`META_KEY`] as a handle last read or wrote it: the timestamps, the
/// user binding, and the raw bytes to compare-and-swap against.
#[derive(Debug, Clone)]
pub(crate) struct Stamp {
    pub(crate) meta: Meta,
    /// The user the session is bound to, with the index entry that binding wrote.
    pub(crate) binding: Option<Binding>,
    /// Bumped by a write that must make an earlier, still pending swap of the record fail (see
    /// `Store::fence`); 0 when never bumped.
    pub(crate) rev: u64,
    /// The stored name of the session this one is a regenerate's copy of, until the regenerate
    /// hands the copy out: a listing counts such a copy only once the old id's moved-marker
    /// names it (see `users::judge`). Every write of the record by a handle drops it, since a
    /// handle holding the copy's id proves it was handed out.
    pub(crate) from: Option<String>,
    pub(crate) raw: Vec<u8>,
}

/// A session's binding to a user, as its record stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Binding {
    pub(crate) user: String,
    /// The key of the user's index entry that this binding wrote (see [`entry_key`]); `None`
    /// for a binding stored by an earlier version, whose entry is keyed by the session's stored
    /// name alone.
    pub(crate) entry: Option<String>,
}

/// The binding a handle stores with its next write, as set with
/// [`Session::set_user`](super::Session::set_user): to a user, or (`None`) to none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rebind(pub(crate) Option<String>);

/// The record under [`META_KEY`], as stored.
#[derive(Serialize, Deserialize)]
struct MetaRecord<'a> {
    created: u64,
    seen: u64,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    user: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    entry: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "is_zero")]
    rev: u64,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    from: Option<std::borrow::Cow<'a, str>>,
    /// A fresh random value of each update's write (see [`Stamp::for_update`]).
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    write: Option<std::borrow::Cow<'a, str>>,
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Stamp {
    /// The record of session `id` with these timestamps, binding and revision.
    pub(crate) fn new(
        id: &SessionId,
        meta: Meta,
        binding: Option<Binding>,
        rev: u64,
    ) -> Result<Stamp> {
        Stamp::copy_of(id, meta, binding, rev, None)
    }

    /// The record of session `id` with these timestamps, binding and revision, as the copy of
    /// the session stored as `from` (see [`Stamp::from`]), or as no copy.
    pub(crate) fn copy_of(
        id: &SessionId,
        meta: Meta,
        binding: Option<Binding>,
        rev: u64,
        from: Option<String>,
    ) -> Result<Stamp> {
        Stamp::build(id, meta, binding, rev, from, None)
    }

    /// This record as an update writes it with the state: the same, with a fresh random value
    /// in it, so that the updater, if storage fails with an error that cannot tell whether the
    /// write landed, can tell its own write from another writer's that stored the same state
    /// (two increments of one count, say) by reading the record back. A handle writes it, so
    /// the session is no copy waiting to be handed out (see [`Stamp::from`]).
    pub(crate) fn for_update(&self, id: &SessionId) -> Result<Stamp> {
        let write = uuid::Uuid::new_v4().simple().to_string();
        let binding = self.binding.clone();
        Stamp::build(id, self.meta, binding, self.rev, None, Some(&write))
    }

    /// The record of session `id` with all of its fields.
    fn build(
        id: &SessionId,
        meta: Meta,
        binding: Option<Binding>,
        rev: u64,
        from: Option<String>,
        write: Option<&str>,
    ) -> Result<Stamp> {
        let record = MetaRecord {
            created: meta.created,
            seen: meta.seen,
            user: binding.as_ref().map(|b| b.user.as_str().into()),
            entry: binding
                .as_ref()
                .and_then(|b| b.entry.as_deref())
                .map(Into::into),
            rev,
            from: from.as_deref().map(Into::into),
            write: write.map(Into::into),
        };
        let raw = serde_json::to_vec(&record).map_err(|source| Error::Serialize {
            id: id.to_string(),
            source,
        })?;
        Ok(Stamp {
            meta,
            binding,
            rev,
            from,
            raw,
        })
    }

    /// Decodes the record stored for session `id`; bytes that do not decode are
    /// [`Error::CorruptSession`].
    pub(crate) fn decode(id: &SessionId, raw: Vec<u8>) -> Result<Stamp> {
        let record: MetaRecord<'_> = decode(id, &raw)?;
        let binding = record.user.map(|user| Binding {
            user: user.into_owned(),
            entry: record.entry.map(std::borrow::Cow::into_owned),
        });
        let (meta, rev) = (
            Meta {
                created: record.created,
                seen: record.seen,
            },
            record.rev,
        );
        Ok(Stamp {
            meta,
            binding,
            rev,
            from: record.from.map(std::borrow::Cow::into_owned),
            raw,
        })
    }

    /// The user this record binds the session to, if any.
    pub(crate) fn user(&self) -> Option<&str> {
        self.binding.as_ref().map(|b| b.user.as_str())
    }

    /// The same record with other timestamps (the binding and revision kept), written by a
    /// handle: no copy any more (see [`Stamp::from`]).
    pub(crate) fn with_meta(&self, id: &SessionId, meta: Meta) -> Result<Stamp> {
        Stamp::new(id, meta, self.binding.clone(), self.rev)
    }
}

/// Decodes JSON stored for session `id` (its state or its timestamps); bytes that do not decode
/// are [`Error::CorruptSession`], naming the session by its fingerprint.
pub(crate) fn decode<'a, T: serde::Deserialize<'a>>(id: &SessionId, bytes: &'a [u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::CorruptSession {
        id: id.to_string(),
        source,
    })
}

/// The key of a session's entry in a user's index, for the binding that writes it: the
/// session's stored name, `.`, and a random token. Each binding writes an entry of its own, so
/// removing the entry of a binding that was replaced never removes the entry of a later
/// binding to the same user, whatever the order in which their writes land.
pub(crate) fn entry_key(stored: &str) -> String {
    format!("{stored}.{}", uuid::Uuid::new_v4().simple())
}

/// The stored name of the session an index entry's key names: the key up to its `.` (the
/// whole key for an entry written by an earlier version).
pub(crate) fn entry_session(key: &str) -> &str {
    key.split_once('.').map_or(key, |(stored, _)| stored)
}

/// The key of the index entry `binding` wrote for the session stored as `stored`.
pub(crate) fn binding_entry<'a>(binding: &'a Binding, stored: &'a str) -> &'a str {
    binding.entry.as_deref().unwrap_or(stored)
}

/// Checks a user id: 1 to [`MAX_USER_LEN`] bytes.
pub(crate) fn validate_user(user: &str) -> Result<()> {
    if user.is_empty() || user.len() > MAX_USER_LEN {
        return Err(Error::InvalidUser { len: user.len() });
    }
    Ok(())
}

/// The index domain of `user`: any string is a valid user id, and none can leave its domain.
pub(crate) fn user_domain(user: &str) -> String {
    format!("{USER_PREFIX}{}", sha256_hex(user, 32))
}

/// What a session's id holds under [`STATE_KEY`].
pub(crate) enum Stored {
    /// Nothing: never stored, destroyed, or expired and removed.
    Absent,
    /// A moved-marker: a regenerate moved the session to the stored name given.
    Moved(Option<String>),
    /// A state.
    State(Vec<u8>),
}

/// How a moved-marker starts. JSON never starts with a NUL byte, so no state is taken for a
/// marker, and no marker decodes as a state.
const MOVED_PREFIX: &[u8] = b"\0moved:";

/// A fresh moved-marker: the prefix, a random nonce (so that a regenerate can tell its own
/// marker from another's when it must read back a swap whose answer was lost), `:`, and the
/// stored name of the new id, which a revoke follows. That name is the new domain's own name,
/// hashed when ids are hashed at rest, so the marker holds nothing the storage did not.
pub(crate) fn moved_marker(target: &str) -> Vec<u8> {
    let mut marker = MOVED_PREFIX.to_vec();
    marker.extend_from_slice(uuid::Uuid::new_v4().simple().to_string().as_bytes());
    marker.push(b':');
    marker.extend_from_slice(target.as_bytes());
    marker
}

/// Whether bytes stored under [`STATE_KEY`] are a state, not a moved-marker.
pub(crate) fn is_state(bytes: &[u8]) -> bool {
    !bytes.starts_with(MOVED_PREFIX)
}

/// Reads what `id` holds under [`STATE_KEY`].
pub(crate) fn read_state(archive: &dyn Archive, id: &SessionId) -> Result<Stored> {
    Ok(Stored::from(archive.get(id.as_str(), STATE_KEY)?))
}

impl From<Option<Vec<u8>>> for Stored {
    /// What a value read under [`STATE_KEY`] is.
    fn from(value: Option<Vec<u8>>) -> Stored {
        match value {
            None => Stored::Absent,
            Some(bytes) if is_state(&bytes) => Stored::State(bytes),
            Some(marker) => Stored::Moved(
                std::str::from_utf8(&marker[MOVED_PREFIX.len()..])
                    .ok()
                    .and_then(|rest| rest.split_once(':'))
                    .map(|(_, target)| target.to_owned()),
            ),
        }
    }
}

/// A hash of stored bytes, to tell whether they are still what was last read or written.
pub(crate) fn bytes_hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}
