//! The one name rule for domains and keys, shared by every backend.
//!
//! A name is valid when all of these hold:
//!
//! 1. it is 1 to [`MAX_NAME_LEN`] (255) bytes of UTF-8;
//! 2. it is not `.` or `..`, and does not start with `.` (dot-names are reserved for backends'
//!    own files, such as temporary files and lock files);
//! 3. it contains no `/`, no `\`, no NUL and no other control character (Unicode category Cc).
//!
//! Because every backend applies the same rule before touching storage, data can always be
//! migrated between backends without loss, and a name can always be used as a single path
//! component. The tests in this module check each numbered clause against the code.

use std::fmt;

use crate::error::{Error, NameKind, NameProblem, Result};

/// The longest valid name, in bytes of UTF-8.
///
/// # Examples
///
/// ```
/// use session_archive::error::NameKind;
/// use session_archive::name::{validate_name, MAX_NAME_LEN};
///
/// assert!(validate_name(NameKind::Key, &"k".repeat(MAX_NAME_LEN)).is_ok());
/// assert!(validate_name(NameKind::Key, &"k".repeat(MAX_NAME_LEN + 1)).is_err());
/// ```
pub const MAX_NAME_LEN: usize = 255;

/// Checks `name` against the name rule shared by every backend.
///
/// A name is valid when all of these hold:
///
/// 1. it is 1 to [`MAX_NAME_LEN`] (255) bytes of UTF-8;
/// 2. it is not `.` or `..`, and does not start with `.` (reserved for backends' own files);
/// 3. it contains no `/`, no `\`, no NUL and no other control character (Unicode category Cc).
///
/// Every backend calls this for every domain and key before it reads or writes anything, so a
/// custom backend should too.
///
/// # Errors
///
/// [`Error::InvalidName`] naming the rejected name, its [`NameKind`] and the [`NameProblem`].
///
/// # Examples
///
/// ```
/// use session_archive::error::NameKind;
/// use session_archive::name::validate_name;
///
/// assert!(validate_name(NameKind::Domain, "0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2").is_ok());
/// assert!(validate_name(NameKind::Key, "session.json").is_ok());
/// assert!(validate_name(NameKind::Domain, "..").is_err());
/// assert!(validate_name(NameKind::Domain, ".hidden").is_err());
/// assert!(validate_name(NameKind::Key, "a\\b").is_err());
/// ```
pub fn validate_name(kind: NameKind, name: &str) -> Result<()> {
    match name_problem(name) {
        None => Ok(()),
        Some(problem) => Err(Error::InvalidName {
            kind,
            name: name.to_owned(),
            problem,
        }),
    }
}

/// Checks a domain name; shorthand for `validate_name(NameKind::Domain, domain)`.
///
/// # Errors
///
/// [`Error::InvalidName`] when `domain` breaks the rule.
///
/// # Examples
///
/// ```
/// assert!(session_archive::name::validate_domain("users").is_ok());
/// assert!(session_archive::name::validate_domain("").is_err());
/// ```
pub fn validate_domain(domain: &str) -> Result<()> {
    validate_name(NameKind::Domain, domain)
}

/// Checks a domain and a key, domain first.
///
/// # Errors
///
/// [`Error::InvalidName`] for the first name that breaks the rule.
///
/// # Examples
///
/// ```
/// assert!(session_archive::name::validate_entry("users", "alice").is_ok());
/// assert!(session_archive::name::validate_entry("users", "a/b").is_err());
/// ```
pub fn validate_entry(domain: &str, key: &str) -> Result<()> {
    validate_domain(domain)?;
    validate_name(NameKind::Key, key)
}

fn name_problem(name: &str) -> Option<NameProblem> {
    if name.is_empty() {
        return Some(NameProblem::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Some(NameProblem::TooLong(name.len()));
    }
    if name == "." || name == ".." {
        return Some(NameProblem::DotName);
    }
    if name.starts_with('.') {
        return Some(NameProblem::LeadingDot);
    }
    name.chars().find_map(|c| match c {
        '/' | '\\' => Some(NameProblem::Separator(c)),
        c if c.is_control() => Some(NameProblem::Control(c)),
        _ => None,
    })
}

/// The name rule's own words for each problem, used in [`Error::InvalidName`]'s message.
impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameProblem::Empty => f.write_str("it is empty"),
            NameProblem::TooLong(len) => write!(
                f,
                "it is {len} bytes long, over the limit of {MAX_NAME_LEN}"
            ),
            NameProblem::DotName => f.write_str("`.` and `..` are not names"),
            NameProblem::LeadingDot => f.write_str("it starts with `.`, which is reserved"),
            NameProblem::Separator(c) => write!(f, "it contains the path separator {c:?}"),
            NameProblem::Control(c) => write!(f, "it contains the control character {c:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(name: &str) -> Option<NameProblem> {
        match validate_name(NameKind::Key, name) {
            Ok(()) => None,
            Err(Error::InvalidName {
                problem,
                name: rejected,
                kind,
            }) => {
                assert_eq!(rejected, name);
                assert_eq!(kind, NameKind::Key);
                Some(problem)
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn clause_1_length_in_bytes() {
        assert_eq!(problem(""), Some(NameProblem::Empty));
        assert_eq!(problem("a"), None);
        assert_eq!(problem(&"a".repeat(255)), None);
        assert_eq!(problem(&"a".repeat(256)), Some(NameProblem::TooLong(256)));
        // Bytes, not chars: 128 two-byte chars are 256 bytes.
        assert_eq!(problem(&"é".repeat(127)), None);
        assert_eq!(problem(&"é".repeat(128)), Some(NameProblem::TooLong(256)));
    }

    #[test]
    fn clause_2_dots() {
        assert_eq!(problem("."), Some(NameProblem::DotName));
        assert_eq!(problem(".."), Some(NameProblem::DotName));
        assert_eq!(problem(".tmp"), Some(NameProblem::LeadingDot));
        assert_eq!(problem("..."), Some(NameProblem::LeadingDot));
        assert_eq!(problem("a.b"), None);
        assert_eq!(problem("a.."), None);
        assert_eq!(problem("session.json"), None);
    }

    #[test]
    fn clause_3_separators_and_controls() {
        assert_eq!(problem("a/b"), Some(NameProblem::Separator('/')));
        assert_eq!(problem("a\\b"), Some(NameProblem::Separator('\\')));
        assert_eq!(problem("a\0b"), Some(NameProblem::Control('\0')));
        assert_eq!(problem("a\nb"), Some(NameProblem::Control('\n')));
        assert_eq!(problem("a\u{7f}"), Some(NameProblem::Control('\u{7f}')));
        assert_eq!(problem("a\u{85}"), Some(NameProblem::Control('\u{85}')));
        assert_eq!(problem("a b"), None);
        assert_eq!(problem("日本語 ünï"), None);
        assert_eq!(problem("emoji 🦀"), None);
    }

    #[test]
    fn error_message_names_the_name_and_reason() {
        let err = validate_name(NameKind::Domain, "../etc").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid domain name \"../etc\": it starts with `.`, which is reserved"
        );
    }
}
