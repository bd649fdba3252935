//! Identifiers, below every layer: the text shape of a session id, the fingerprint that names
//! one in messages (and [`redact`], which puts fingerprints in place of the ids in a text), the
//! hex SHA-256 digests that name ids and user ids in storage, and how long a user id may be. They live beneath [`error`](crate::error), so that the one error type can
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

/// The prefix of a tower-sessions record's domain, `tower-session-<id>` (see the
/// `tower_sessions` module), whose 22-character id [`redact`] also hides.
pub(crate) const TOWER_RECORD_PREFIX: &str = "tower-session-";

/// The prefix of an actix-session record's domain, `actix-session-<key>` (see the
/// `actix_session` module), whose 64-character key [`redact`] also hides.
pub(crate) const ACTIX_RECORD_PREFIX: &str = "actix-session-";

/// `text` with every id in it replaced by its [fingerprint]: each session id (a lowercase
/// hyphenated UUID, wherever it stands, as in a path or a storage name), each tower-sessions
/// record id (the 22 characters after [`TOWER_RECORD_PREFIX`]) and each actix-session record
/// key (the 64 after [`ACTIX_RECORD_PREFIX`]). Ids are bearer tokens: a message, log line or
/// `Debug` output shows this instead.
pub(crate) fn redact(text: &str) -> String {
    const RECORDS: [(&str, usize); 2] = [(TOWER_RECORD_PREFIX, 22), (ACTIX_RECORD_PREFIX, 64)];
    let is_record_id = |id: &str| {
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while at < text.len() {
        let rest = &text[at..];
        let record = RECORDS.iter().find_map(|&(prefix, len)| {
            rest.strip_prefix(prefix)
                .and_then(|after| after.get(..len))
                .filter(|id| is_record_id(id))
                .map(|id| (prefix, id))
        });
        if let Some(id) = rest.get(..36).filter(|id| is_session_id(id)) {
            out.push_str(&fingerprint(id));
            at += 36;
        } else if let Some((prefix, id)) = record {
            out.push_str(prefix);
            out.push_str(&fingerprint(id));
            at += prefix.len() + id.len();
        } else {
            let next = rest.chars().next().map_or(1, char::len_utf8);
            out.push_str(&rest[..next]);
            at += next;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_replaces_every_session_and_record_id() {
        let session = "0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2";
        let record = "AAAAAAAAAAAAAAAAAAAAAA";
        let text = format!(
            "/srv/{session}/session.json, expiry-1/{session}, /srv/{TOWER_RECORD_PREFIX}{record}/x \
             and tower-expiry-1/{TOWER_RECORD_PREFIX}{record}"
        );
        let shown = redact(&text);
        assert!(
            !shown.contains(session) && !shown.contains(record),
            "{shown}"
        );
        assert_eq!(shown.matches(&fingerprint(session)).count(), 2, "{shown}");
        assert_eq!(shown.matches(&fingerprint(record)).count(), 2, "{shown}");
        assert!(shown.ends_with(&format!("{TOWER_RECORD_PREFIX}{}", fingerprint(record))));
        let key = "0123456789abcdef".repeat(4);
        let shown = redact(&format!("/srv/{ACTIX_RECORD_PREFIX}{key}/record.json"));
        assert_eq!(
            shown,
            format!(
                "/srv/{ACTIX_RECORD_PREFIX}{}/record.json",
                fingerprint(&key)
            )
        );
        // Too short to be an id, or not shaped like one: left as it is.
        for plain in ["tower-session-abc", "0d0d0c2f-6bb9-405f-6a41", "é/ü", ""] {
            assert_eq!(redact(plain), plain);
        }
    }
}
