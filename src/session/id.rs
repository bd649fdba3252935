//! [`SessionId`]: the validated session id.

use std::fmt;

use crate::ids::{fingerprint, is_session_id, sha256_hex};

/// A session id: a lowercase, hyphenated UUID (`8-4-4-4-12` hex digits, 36 characters).
///
/// New ids are UUID v4 from the operating system's secure random generator. Parsing accepts any
/// version and variant nibble, because the original framework wrote ids such as
/// `0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2` and existing stores must keep working, but nothing
/// else: no uppercase, no braces, no missing hyphens. A valid id is always a valid
/// [archive name](crate::validate_name), so it can never point outside its own domain.
///
/// # Examples
///
/// ```
/// use session_archive::SessionId;
///
/// let id = SessionId::parse("0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2").expect("well-formed");
/// assert_eq!(id.to_string(), "0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2");
/// assert!(SessionId::parse("../../etc").is_none());
/// assert!(SessionId::parse("0D0D0C2F-6BB9-405F-6A41-D4FE9ACF3DD2").is_none());
/// assert_eq!(SessionId::generate().as_str().len(), 36);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

impl SessionId {
    /// Returns a fresh random id (UUID v4 from the OS's secure random generator).
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::SessionId;
    ///
    /// let (a, b) = (SessionId::generate(), SessionId::generate());
    /// assert_ne!(a, b);
    /// assert!(SessionId::parse(a.as_str()).is_some());
    /// ```
    pub fn generate() -> SessionId {
        SessionId(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// Returns the id if `text` is a well-formed lowercase hyphenated UUID, and `None` otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::SessionId;
    ///
    /// assert!(SessionId::parse("8a6d8cfa-2fc7-4dbb-6be9-beb823318303").is_some());
    /// for hostile in ["", "..", "../../etc", "8a6d8cfa2fc74dbb6be9beb823318303"] {
    ///     assert!(SessionId::parse(hostile).is_none());
    /// }
    /// ```
    pub fn parse(text: &str) -> Option<SessionId> {
        is_session_id(text).then(|| SessionId(text.to_owned()))
    }

    /// Returns a short fingerprint of the id for logs and error messages: `#` and the first 12
    /// hex digits of the id's SHA-256. It tells sessions apart, and cannot be turned back into
    /// the id. Ids are bearer tokens, so this crate never prints one whole: `Debug` of a
    /// `SessionId` or a [`Session`](crate::Session), and every [`Error`](crate::Error) message,
    /// show the fingerprint instead. (`Display` gives the whole id, for the cookie.)
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::SessionId;
    ///
    /// let id = SessionId::parse("0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2").expect("well-formed");
    /// let fingerprint = id.fingerprint();
    /// assert_eq!(fingerprint.len(), 13);
    /// assert!(fingerprint.starts_with('#'));
    /// assert!(!format!("{id:?}").contains(id.as_str()));
    /// assert!(format!("{id:?}").contains(&fingerprint));
    /// ```
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.0)
    }

    /// Returns the id as text.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::SessionId;
    ///
    /// let id = SessionId::generate();
    /// assert_eq!(id.as_str(), id.to_string());
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl SessionId {
    /// Takes a name found in the archive, where a session is stored under its id or, with
    /// [ids hashed at rest](crate::session::SessionsBuilder::hash_ids_at_rest), under its hash.
    /// Such a handle only names storage: it is never a cookie value.
    pub(crate) fn from_stored(name: &str) -> Option<SessionId> {
        SessionId::parse(name).or_else(|| is_hashed(name).then(|| SessionId(name.to_owned())))
    }
}

/// The length of a session's name stored with [ids hashed at
/// rest](crate::session::SessionsBuilder::hash_ids_at_rest): the hex SHA-256 of its id.
pub(crate) const HASHED_LEN: usize = 64;

/// Whether `name` is a stored hash (64 lowercase hex digits).
pub(crate) fn is_hashed(name: &str) -> bool {
    name.len() == HASHED_LEN && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The name a session `id` is stored under when ids are hashed at rest.
pub(crate) fn hashed_name(id: &str) -> String {
    sha256_hex(id, HASHED_LEN / 2)
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionId {
    /// Shows the [fingerprint](SessionId::fingerprint), never the id: `Debug` output ends up in
    /// logs, and an id is a bearer token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.fingerprint())
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}
