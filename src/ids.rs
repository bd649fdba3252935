//! Identifiers, below every layer: the text shape of a session id, the fingerprint that names
//! one in messages, the hex SHA-256 digests that name ids and user ids in storage, and how long
//! a user id may be. They live beneath [`error`](crate::error), so that the one error type can
//! name sessions and user ids without depending on the session layer above it.

/// The longest user id [`Session::set_user`](crate::Session::set_user) accepts, in bytes.
///
/// # Examples
///
/// ```
/// use session_archive::session::{MAX_USER_LEN, Sessions};
/// use session_archive::{Error, MemoryArchive};
///
/// let sessions = Sessions::new(MemoryArchive::new());
/// let mut session = sessions.start(None, ())?;
/// session.set_user(Some(&"x".repeat(MAX_USER_LEN + 1)));
/// assert!(matches!(session.save(), Err(Error::InvalidUser { .. })));
/// session.set_user(Some(&"x".repeat(MAX_USER_LEN)));
/// session.save()?;
/// # Ok::<(), session_archive::Error>(())
/// ```
pub const MAX_USER_LEN: usize = 1024;

/// Whether `text` is a session id: a lowercase hyphenated UUID (36 characters).
pub(crate) fn is_session_id(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// The fingerprint of an id given as text; see [`SessionId::fingerprint`](crate::SessionId::fingerprint).
pub(crate) fn fingerprint(id: &str) -> String {
    format!("#{}", sha256_hex(id, FINGERPRINT_BYTES))
}

/// How many bytes of the SHA-256 a fingerprint shows: 48 bits tell sessions apart in logs, and
/// say nothing usable about the 122 random bits of the id.
const FINGERPRINT_BYTES: usize = 6;

/// The first `bytes` bytes of the SHA-256 of `text`, as lowercase hex.
pub(crate) fn sha256_hex(text: &str, bytes: usize) -> String {
    use sha2::{Digest, Sha256};
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(2 * bytes);
    for byte in digest.iter().take(bytes) {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    hex
}
