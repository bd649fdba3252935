//! How the fuzzers' bytes become the names in an [`Op`](super::Op) (feature `fuzzing`): the
//! `arbitrary(with = ...)` decoders of its fields, which read each name as a [`FuzzName`].

use arbitrary::{Arbitrary, Result, Unstructured};

use crate::name::MAX_NAME_LEN;

/// Names the fuzzer picks by index: valid ones sharing prefixes, the session keys, and one of
/// each kind of invalid name.
const NAME_POOL: &[&str] = &[
    "a",
    "ab",
    "a b",
    "b",
    "ü",
    "k",
    "session.json",
    "meta.json",
    "",
    ".",
    "..",
    ".x",
    "a/b",
    "a\\b",
    "a\0b",
    "\u{7f}",
    "\u{85}",
];

/// A domain or key name decoded from fuzzer bytes; [`FuzzName::to_name`] gives the string.
#[derive(Debug, Clone, Arbitrary)]
pub enum FuzzName {
    /// One of a small pool of names, so that operations meet each other's data.
    Pool(u8),
    /// Arbitrary text, any Unicode.
    Text(String),
    /// Arbitrary bytes, read as UTF-8 with invalid sequences replaced.
    Bytes(Vec<u8>),
    /// `n` repeated to a length around [`MAX_NAME_LEN`] (from 4 under to 3 over).
    Long(u8),
}

impl FuzzName {
    /// The name this input stands for.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::conformance::fuzz::FuzzName;
    ///
    /// assert_eq!(FuzzName::Pool(0).to_name(), "a");
    /// assert_eq!(FuzzName::Long(7).to_name().len(), session_archive::MAX_NAME_LEN + 3);
    /// ```
    pub fn to_name(&self) -> String {
        match self {
            FuzzName::Pool(i) => NAME_POOL[usize::from(*i) % NAME_POOL.len()].to_owned(),
            FuzzName::Text(text) => text.clone(),
            FuzzName::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            FuzzName::Long(n) => "n".repeat(MAX_NAME_LEN - 4 + usize::from(n % 8)),
        }
    }
}

pub(in crate::conformance) fn name(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(FuzzName::arbitrary(u)?.to_name())
}

pub(in crate::conformance) fn optional_name(u: &mut Unstructured<'_>) -> Result<Option<String>> {
    Ok(Option::<FuzzName>::arbitrary(u)?.map(|name| name.to_name()))
}

pub(in crate::conformance) fn names(u: &mut Unstructured<'_>) -> Result<Vec<String>> {
    let names = Vec::<FuzzName>::arbitrary(u)?;
    Ok(names.iter().map(FuzzName::to_name).collect())
}

pub(in crate::conformance) fn keys(u: &mut Unstructured<'_>) -> Result<Vec<(String, String)>> {
    let keys = Vec::<(FuzzName, FuzzName)>::arbitrary(u)?;
    Ok(keys
        .iter()
        .map(|(d, k)| (d.to_name(), k.to_name()))
        .collect())
}

pub(in crate::conformance) fn entries(
    u: &mut Unstructured<'_>,
) -> Result<Vec<(String, String, Vec<u8>)>> {
    let entries = Vec::<(FuzzName, FuzzName, Vec<u8>)>::arbitrary(u)?;
    Ok(entries
        .into_iter()
        .map(|(d, k, v)| (d.to_name(), k.to_name(), v))
        .collect())
}

/// A page size of 1 to 4, so that a few names already take several pages.
pub(in crate::conformance) fn page_size(u: &mut Unstructured<'_>) -> Result<usize> {
    Ok(usize::from(u8::arbitrary(u)? % 4) + 1)
}
