//! The hex SHA-256 of a text, computed in the tests independently of the crate: what a session
//! id hashed at rest is stored under.

use std::fmt::Write;

use sha2::{Digest, Sha256};

/// The lowercase hex SHA-256 of `text`.
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}
