//! The conformance suite that every [`Archive`] backend must pass, and a model-based property test.
//!
//! Each behaviour of the [`Archive` contract](Archive#contract) is one public function taking
//! `&dyn Archive`; it panics, like a test, when the archive misbehaves. The
//! [`archive_conformance!`](crate::archive_conformance) macro stamps out one `#[test]` per
//! behaviour for a backend, each on a fresh archive in a fresh temporary directory, plus the
//! [`model_test`]. A third-party backend can run the same suite from its own tests:
//!
//! ```toml
//! [dev-dependencies]
//! session-archive = { version = "0.1", features = ["conformance"] }
//! ```
//!
//! ```
//! use std::path::Path;
//! use session_archive::MemoryArchive;
//!
//! session_archive::archive_conformance!(memory, |_dir: &Path| MemoryArchive::new());
//! # fn main() {}
//! ```
//!
//! Persistent backends add `persistent`, so that the model test also drops and reopens the
//! archive on the same directory in the middle of its operation sequences:
//!
//! ```ignore
//! session_archive::archive_conformance!(
//!     redb,
//!     |dir: &Path| RedbArchive::open(dir.join("archive.redb")).expect("open"),
//!     persistent
//! );
//! ```
//!
//! Every function expects a fresh, empty archive.
//!
//! The model test saves the seed of a failing case in `proptest-regressions/model_test.txt` under
//! the package root ([`MODEL_REGRESSIONS`]) and replays it on every later run.

#![allow(
    clippy::missing_panics_doc,
    reason = "these functions are assertions; panicking is how they report"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};

use crate::archive::{Archive, ArchiveExt};
use crate::error::{Error, NameKind};
use crate::name::MAX_NAME_LEN;

#[cfg(all(feature = "fuzzing", unix))]
pub mod fuzz;
mod hooked;

pub use hooked::{Call, Hooked};

#[doc(hidden)]
pub mod __private {
    pub use tempfile;
}

/// Calls `$callback!` with the names of every behaviour function, so that [`run_all`] and
/// [`archive_conformance!`](crate::archive_conformance) are made from one list.
#[doc(hidden)]
#[macro_export]
macro_rules! __archive_behaviours {
    ($callback:ident, $($args:tt)*) => {
        $crate::$callback! {
            ($($args)*)
            get_absent
            set_then_get
            overwrite_replaces_value
            has_present_and_absent
            remove_present_and_absent
            domain_exists_while_it_has_keys
            remove_domain_present_and_absent
            remove_domain_leaves_neighbours
            prefix_sharing_domains_are_isolated
            empty_value_is_a_value
            large_value_round_trips
            binary_values_round_trip
            unicode_names
            longest_names
            invalid_names_are_rejected_and_nothing_is_written
            list_domains_pages_through_everything
            list_keys_pages_through_one_domain
            listing_an_empty_archive
            compare_and_swap_semantics
            compare_and_swap_loses_no_update
            set_many_stores_every_entry
            remove_many_removes_each_entry_once
            remove_domains_removes_each_domain_once
            concurrent_writers_to_distinct_keys
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __archive_run_all {
    (() $($behaviour:ident)*) => {
        /// Runs every behaviour of the suite in turn. Each runs on the same archive, so each
        /// cleans up after itself; prefer [`archive_conformance!`](crate::archive_conformance),
        /// which gives every behaviour a fresh archive and its own test.
        ///
        /// # Examples
        ///
        /// ```
        /// session_archive::conformance::run_all(&session_archive::MemoryArchive::new());
        /// ```
        pub fn run_all(archive: &dyn Archive) {
            $(
                $behaviour(archive);
                assert_eq!(
                    archive.domains().count(),
                    0,
                    "{} left data behind",
                    stringify!($behaviour)
                );
            )*
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __archive_tests {
    (($factory:expr, $persistence:ident, $ready:expr) $($behaviour:ident)*) => {
        fn __open(dir: &::std::path::Path) -> impl $crate::Archive + use<> {
            ($factory)(dir)
        }
        fn __ready() -> bool {
            ($ready)()
        }
        $(
            #[test]
            fn $behaviour() {
                if !__ready() {
                    return;
                }
                let dir = $crate::conformance::__private::tempfile::tempdir()
                    .expect("create a temporary directory");
                $crate::conformance::$behaviour(&__open(dir.path()));
            }
        )*
        #[test]
        fn model() {
            if !__ready() {
                return;
            }
            $crate::conformance::model_test(__open, $crate::conformance::Persistence::$persistence);
        }
    };
}

/// Stamps out the conformance suite for one backend: a module named `$module` holding one
/// `#[test]` per behaviour, plus `model` (the [`model_test`]).
///
/// `$factory` is called as `$factory(dir: &Path)` with a fresh temporary directory for every test
/// and must return an empty archive; the model test with `persistent` calls it again on the same
/// directory to reopen. Name the module after the backend (`redb`, `dir`, …) so that
/// `cargo test redb::` selects one backend.
///
/// A backend that needs a service (a server) adds `when = ready`, where `ready: fn() -> bool`
/// runs first in every test: when it returns `false` the test returns without running (`ready`
/// prints why, or panics where a missing service must fail the run).
///
/// # Examples
///
/// ```
/// use std::path::Path;
/// use std::sync::Arc;
/// use session_archive::{Archive, MemoryArchive};
///
/// session_archive::archive_conformance!(memory, |_dir: &Path| MemoryArchive::new());
/// session_archive::archive_conformance!(
///     arc_dyn,
///     |_dir: &Path| Arc::new(MemoryArchive::new()) as Arc<dyn Archive>
/// );
///
/// fn server_is_up() -> bool {
///     std::env::var_os("MY_SERVER_URL").is_some()
/// }
/// session_archive::archive_conformance!(
///     needs_a_server,
///     |_dir: &Path| MemoryArchive::new(),
///     volatile,
///     when = server_is_up
/// );
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! archive_conformance {
    ($module:ident, $factory:expr $(,)?) => {
        $crate::archive_conformance!($module, $factory, volatile);
    };
    ($module:ident, $factory:expr, volatile $(, when = $ready:expr)? $(,)?) => {
        $crate::archive_conformance!(@module $module, $factory, Volatile $(, $ready)?);
    };
    ($module:ident, $factory:expr, persistent $(, when = $ready:expr)? $(,)?) => {
        $crate::archive_conformance!(@module $module, $factory, Persistent $(, $ready)?);
    };
    (@module $module:ident, $factory:expr, $persistence:ident) => {
        $crate::archive_conformance!(@module $module, $factory, $persistence, || true);
    };
    (@module $module:ident, $factory:expr, $persistence:ident, $ready:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::__archive_behaviours!(__archive_tests, $factory, $persistence, $ready);
        }
    };
}

__archive_behaviours!(__archive_run_all,);

fn all_domains(archive: &dyn Archive) -> Vec<String> {
    archive
        .domains()
        .collect::<Result<_, _>>()
        .expect("list domains")
}

fn all_keys(archive: &dyn Archive, domain: &str) -> Vec<String> {
    archive
        .keys(domain)
        .collect::<Result<_, _>>()
        .expect("list keys")
}

/// `get`, `has` and `remove` on a missing key, and on a missing domain, are not errors.
pub fn get_absent(archive: &dyn Archive) {
    assert_eq!(archive.get("d", "k").expect("get"), None);
    assert!(!archive.has("d", "k").expect("has"));
    assert!(!archive.has_domain("d").expect("has_domain"));
    assert!(!archive.remove("d", "k").expect("remove"));
    assert!(!archive.remove_domain("d").expect("remove_domain"));
    archive.set("d", "k", b"v").expect("set");
    assert_eq!(archive.get("d", "other").expect("get"), None);
    assert!(archive.remove_domain("d").expect("remove_domain"));
}

/// A value that was set reads back exactly.
pub fn set_then_get(archive: &dyn Archive) {
    archive.set("d", "k", b"value").expect("set");
    assert_eq!(archive.get("d", "k").expect("get"), Some(b"value".to_vec()));
    archive.set("d", "k2", b"other").expect("set");
    assert_eq!(archive.get("d", "k").expect("get"), Some(b"value".to_vec()));
    assert_eq!(
        archive.get("d", "k2").expect("get"),
        Some(b"other".to_vec())
    );
    assert!(archive.remove_domain("d").expect("remove_domain"));
}

/// `set` on an existing key replaces its value, longer or shorter.
pub fn overwrite_replaces_value(archive: &dyn Archive) {
    archive.set("d", "k", b"a long first value").expect("set");
    archive.set("d", "k", b"short").expect("set");
    assert_eq!(archive.get("d", "k").expect("get"), Some(b"short".to_vec()));
    archive
        .set("d", "k", b"a much longer third value")
        .expect("set");
    assert_eq!(
        archive.get("d", "k").expect("get"),
        Some(b"a much longer third value".to_vec())
    );
    assert_eq!(all_keys(archive, "d"), ["k"]);
    assert!(archive.remove_domain("d").expect("remove_domain"));
}

/// `has` is true exactly for stored keys.
pub fn has_present_and_absent(archive: &dyn Archive) {
    archive.set("d", "k", b"v").expect("set");
    assert!(archive.has("d", "k").expect("has"));
    assert!(!archive.has("d", "k2").expect("has"));
    assert!(!archive.has("d2", "k").expect("has"));
    assert!(archive.remove("d", "k").expect("remove"));
    assert!(!archive.has("d", "k").expect("has"));
}

/// `remove` reports whether the key existed and removes only that key.
pub fn remove_present_and_absent(archive: &dyn Archive) {
    archive.set("d", "k1", b"1").expect("set");
    archive.set("d", "k2", b"2").expect("set");
    assert!(archive.remove("d", "k1").expect("remove"));
    assert!(!archive.remove("d", "k1").expect("remove again"));
    assert_eq!(archive.get("d", "k1").expect("get"), None);
    assert_eq!(archive.get("d", "k2").expect("get"), Some(b"2".to_vec()));
    assert!(archive.remove("d", "k2").expect("remove"));
}

/// A domain exists exactly while it holds at least one key.
pub fn domain_exists_while_it_has_keys(archive: &dyn Archive) {
    assert!(!archive.has_domain("d").expect("has_domain"));
    archive.set("d", "k1", b"").expect("set");
    assert!(archive.has_domain("d").expect("has_domain"));
    archive.set("d", "k2", b"x").expect("set");
    assert!(archive.remove("d", "k1").expect("remove"));
    assert!(archive.has_domain("d").expect("has_domain"));
    assert!(archive.remove("d", "k2").expect("remove"));
    assert!(!archive.has_domain("d").expect("has_domain after last key"));
    assert!(all_domains(archive).is_empty());
    assert!(
        !archive
            .remove_domain("d")
            .expect("remove_domain of emptied domain")
    );
}

/// `remove_domain` removes every key and reports whether the domain existed.
pub fn remove_domain_present_and_absent(archive: &dyn Archive) {
    for i in 0..10 {
        archive.set("d", &format!("k{i}"), b"v").expect("set");
    }
    assert!(archive.remove_domain("d").expect("remove_domain"));
    assert!(!archive.has_domain("d").expect("has_domain"));
    for i in 0..10 {
        assert!(!archive.has("d", &format!("k{i}")).expect("has"));
    }
    assert!(all_keys(archive, "d").is_empty());
    assert!(!archive.remove_domain("d").expect("remove_domain again"));
    archive
        .set("d", "k0", b"new")
        .expect("set after remove_domain");
    assert_eq!(archive.get("d", "k0").expect("get"), Some(b"new".to_vec()));
    assert!(archive.remove_domain("d").expect("remove_domain"));
}

const NEIGHBOURS: [&str; 5] = ["a", "ab", "a b", "b", "a-"];

/// `remove_domain` leaves domains that share a prefix intact.
pub fn remove_domain_leaves_neighbours(archive: &dyn Archive) {
    for domain in NEIGHBOURS {
        archive.set(domain, "k", domain.as_bytes()).expect("set");
        archive.set(domain, "k2", b"second").expect("set");
    }
    assert!(archive.remove_domain("a").expect("remove_domain"));
    assert!(!archive.has_domain("a").expect("has_domain"));
    for domain in &NEIGHBOURS[1..] {
        assert!(archive.has_domain(domain).expect("has_domain"), "{domain}");
        assert_eq!(
            archive.get(domain, "k").expect("get"),
            Some(domain.as_bytes().to_vec()),
            "{domain}"
        );
        assert_eq!(all_keys(archive, domain), ["k", "k2"], "{domain}");
    }
    for domain in &NEIGHBOURS[1..] {
        assert!(archive.remove_domain(domain).expect("remove_domain"));
    }
}

/// Keys of one domain never show through another domain that shares a prefix.
pub fn prefix_sharing_domains_are_isolated(archive: &dyn Archive) {
    archive.set("a", "k", b"in a").expect("set");
    assert!(!archive.has("ab", "k").expect("has"));
    assert!(!archive.has("a b", "k").expect("has"));
    assert!(!archive.has_domain("ab").expect("has_domain"));
    archive.set("ab", "k", b"in ab").expect("set");
    archive.set("a b", "kk", b"in a b").expect("set");
    assert_eq!(archive.get("a", "k").expect("get"), Some(b"in a".to_vec()));
    assert_eq!(
        archive.get("ab", "k").expect("get"),
        Some(b"in ab".to_vec())
    );
    assert_eq!(all_keys(archive, "a"), ["k"]);
    assert_eq!(all_keys(archive, "a b"), ["kk"]);
    assert!(archive.remove("ab", "k").expect("remove"));
    assert_eq!(archive.get("a", "k").expect("get"), Some(b"in a".to_vec()));
    assert!(archive.remove_domain("a").expect("remove_domain"));
    assert!(archive.has_domain("a b").expect("has_domain"));
    assert!(archive.remove_domain("a b").expect("remove_domain"));
}

/// The empty value is stored, listed and counts for domain existence; it is not absence.
pub fn empty_value_is_a_value(archive: &dyn Archive) {
    archive.set("d", "empty", b"").expect("set");
    assert_eq!(archive.get("d", "empty").expect("get"), Some(Vec::new()));
    assert!(archive.has("d", "empty").expect("has"));
    assert!(archive.has_domain("d").expect("has_domain"));
    assert_eq!(all_keys(archive, "d"), ["empty"]);
    assert!(archive.remove("d", "empty").expect("remove"));
}

/// Values of several MiB round-trip exactly.
pub fn large_value_round_trips(archive: &dyn Archive) {
    let value: Vec<u8> = (0..(3 << 19)).map(|i: u32| (i % 251) as u8).collect();
    archive.set("d", "big", &value).expect("set 1.5 MiB");
    assert_eq!(
        archive.get("d", "big").expect("get").as_deref(),
        Some(&value[..])
    );
    archive.set("d", "big", b"small").expect("shrink");
    assert_eq!(
        archive.get("d", "big").expect("get"),
        Some(b"small".to_vec())
    );
    assert!(archive.remove_domain("d").expect("remove_domain"));
}

/// Arbitrary bytes, including NUL, 0xFF and invalid UTF-8, round-trip exactly.
pub fn binary_values_round_trip(archive: &dyn Archive) {
    let all_bytes: Vec<u8> = (0..=255).collect();
    archive.set("d", "bytes", &all_bytes).expect("set");
    archive
        .set("d", "invalid-utf8", &[0xC3, 0x28, 0xFF, 0, 0])
        .expect("set");
    archive.set("d", "nul", &[0]).expect("set");
    assert_eq!(archive.get("d", "bytes").expect("get"), Some(all_bytes));
    assert_eq!(
        archive.get("d", "invalid-utf8").expect("get"),
        Some(vec![0xC3, 0x28, 0xFF, 0, 0])
    );
    assert_eq!(archive.get("d", "nul").expect("get"), Some(vec![0]));
    assert!(archive.remove_domain("d").expect("remove_domain"));
}

/// Names in any script, with spaces and symbols, work like ASCII names.
pub fn unicode_names(archive: &dyn Archive) {
    let names = [
        "日本語",
        "ünïcødé",
        "emoji 🦀",
        "with space",
        "a.b",
        "a..",
        "~$%&*",
    ];
    for domain in names {
        for key in names {
            archive.set(domain, key, key.as_bytes()).expect("set");
        }
    }
    for domain in names {
        for key in names {
            assert_eq!(
                archive.get(domain, key).expect("get"),
                Some(key.as_bytes().to_vec())
            );
        }
    }
    let mut sorted: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    sorted.sort();
    let mut listed = all_domains(archive);
    listed.sort();
    assert_eq!(listed, sorted);
    for domain in names {
        assert!(archive.remove_domain(domain).expect("remove_domain"));
    }
}

/// Names of exactly [`MAX_NAME_LEN`] bytes are valid everywhere, including multi-byte ones.
pub fn longest_names(archive: &dyn Archive) {
    let ascii = "d".repeat(MAX_NAME_LEN);
    let multibyte = format!("{}x", "é".repeat((MAX_NAME_LEN - 1) / 2));
    assert_eq!(multibyte.len(), MAX_NAME_LEN);
    archive.set(&ascii, &multibyte, b"v").expect("set");
    archive.set(&multibyte, &ascii, b"w").expect("set");
    assert_eq!(
        archive.get(&ascii, &multibyte).expect("get"),
        Some(b"v".to_vec())
    );
    assert_eq!(
        archive.get(&multibyte, &ascii).expect("get"),
        Some(b"w".to_vec())
    );
    assert_eq!(all_keys(archive, &ascii), std::slice::from_ref(&multibyte));
    assert!(archive.remove_domain(&ascii).expect("remove_domain"));
    assert!(archive.remove_domain(&multibyte).expect("remove_domain"));
}

/// Names that break the rule, one per clause and then some: hostile path pieces included.
pub const INVALID_NAMES: &[&str] = &[
    "",
    ".",
    "..",
    ".hidden",
    "...",
    ".tmp-123",
    "/",
    "a/b",
    "/etc",
    "../etc",
    "../../..",
    "a\\b",
    "..\\..",
    "a\0b",
    "\0",
    "a\nb",
    "tab\there",
    "\r",
    "bell\u{7}",
    "del\u{7f}",
    "c1\u{85}",
    "esc\u{1b}[0m",
];

/// The invalid names: [`INVALID_NAMES`] plus one that is a byte over the length limit.
fn invalid_names() -> Vec<String> {
    let mut names: Vec<String> = INVALID_NAMES.iter().map(|n| (*n).to_owned()).collect();
    names.push("x".repeat(MAX_NAME_LEN + 1));
    names.push("é".repeat(MAX_NAME_LEN / 2 + 1));
    names
}

fn assert_invalid<T: std::fmt::Debug>(
    result: crate::Result<T>,
    kind: NameKind,
    name: &str,
    op: &str,
) {
    match result {
        Err(Error::InvalidName {
            kind: got_kind,
            name: got_name,
            ..
        }) => {
            assert_eq!(got_kind, kind, "{op} with {name:?}: wrong kind");
            assert_eq!(got_name, name, "{op} with {name:?}: wrong name reported");
        }
        other => panic!("{op} with {kind} {name:?} gave {other:?}, not InvalidName"),
    }
}

/// Every operation refuses every kind of invalid domain and key with [`Error::InvalidName`], and
/// nothing is written: not even the valid entries of a `set_many` batch that holds a bad name.
pub fn invalid_names_are_rejected_and_nothing_is_written(archive: &dyn Archive) {
    use NameKind::{Domain, Key};
    archive.set("valid", "k", b"before").expect("set");
    for bad in &invalid_names() {
        let bad = bad.as_str();
        assert_invalid(archive.get(bad, "k"), Domain, bad, "get");
        assert_invalid(archive.get("valid", bad), Key, bad, "get");
        assert_invalid(archive.set(bad, "k", b"x"), Domain, bad, "set");
        assert_invalid(archive.set("valid", bad, b"x"), Key, bad, "set");
        assert_invalid(archive.has(bad, "k"), Domain, bad, "has");
        assert_invalid(archive.has("valid", bad), Key, bad, "has");
        assert_invalid(archive.remove(bad, "k"), Domain, bad, "remove");
        assert_invalid(archive.remove("valid", bad), Key, bad, "remove");
        assert_invalid(archive.has_domain(bad), Domain, bad, "has_domain");
        assert_invalid(archive.remove_domain(bad), Domain, bad, "remove_domain");
        assert_invalid(
            archive.compare_and_swap(bad, "k", None, Some(b"x")),
            Domain,
            bad,
            "compare_and_swap",
        );
        assert_invalid(
            archive.compare_and_swap("valid", bad, None, Some(b"x")),
            Key,
            bad,
            "compare_and_swap",
        );
        assert_invalid(archive.list_keys(bad, None, 10), Domain, bad, "list_keys");
        assert_invalid(
            archive.expire_domain(bad, std::time::SystemTime::now()),
            Domain,
            bad,
            "expire_domain",
        );
        assert_invalid(
            archive.set_many(&[("valid", "k", b"changed"), (bad, "k", b"x")]),
            Domain,
            bad,
            "set_many",
        );
        assert_invalid(
            archive.set_many(&[("valid", bad, b"x")]),
            Key,
            bad,
            "set_many",
        );
        assert_eq!(
            archive.get("valid", "k").expect("get"),
            Some(b"before".to_vec()),
            "set_many wrote part of a batch holding the invalid name {bad:?}"
        );
        assert_invalid(
            archive.remove_many(&[("valid", "k"), (bad, "k")]),
            Domain,
            bad,
            "remove_many",
        );
        assert_invalid(
            archive.remove_many(&[("valid", "k"), ("valid", bad)]),
            Key,
            bad,
            "remove_many",
        );
        assert_invalid(
            archive.remove_domains(&["valid", bad]),
            Domain,
            bad,
            "remove_domains",
        );
        assert!(
            archive.has("valid", "k").expect("has"),
            "a batch removal holding the invalid name {bad:?} removed part of it"
        );
    }
    assert_eq!(all_domains(archive), ["valid"]);
    assert_eq!(all_keys(archive, "valid"), ["k"]);
    assert_eq!(
        archive.get("valid", "k").expect("get"),
        Some(b"before".to_vec())
    );
    assert!(archive.remove_domain("valid").expect("remove_domain"));
}

/// Paging through domains with a small page size returns every domain exactly once, whatever
/// the page size.
pub fn list_domains_pages_through_everything(archive: &dyn Archive) {
    let expected: BTreeSet<String> = (0..57).map(|i| format!("domain-{i:03}")).collect();
    for domain in &expected {
        archive.set(domain, "k1", b"v").expect("set");
        archive.set(domain, "k2", b"v").expect("set");
    }
    for limit in [1, 2, 7, 57, 1000] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let page = archive
                .list_domains(cursor.as_deref(), limit)
                .expect("list_domains");
            seen.extend(page.names);
            cursor = page.cursor;
            if cursor.is_none() {
                break;
            }
        }
        assert!(cursor.is_none(), "listing with limit {limit} never ended");
        let unique: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "duplicates with limit {limit}");
        assert_eq!(unique, expected, "limit {limit}");
    }
    let mut iterated: Vec<String> = all_domains(archive);
    iterated.sort();
    assert_eq!(iterated, expected.iter().cloned().collect::<Vec<_>>());
    for domain in &expected {
        assert!(archive.remove_domain(domain).expect("remove_domain"));
    }
}

/// Paging through one domain's keys returns exactly its keys, never a neighbour's.
pub fn list_keys_pages_through_one_domain(archive: &dyn Archive) {
    let expected: BTreeSet<String> = (0..23).map(|i| format!("key-{i:02}")).collect();
    for key in &expected {
        archive.set("d", key, key.as_bytes()).expect("set");
    }
    archive.set("d2", "neighbour", b"").expect("set");
    archive.set("c", "neighbour", b"").expect("set");
    for limit in [1, 5, 23, 100] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let page = archive
                .list_keys("d", cursor.as_deref(), limit)
                .expect("list_keys");
            seen.extend(page.names);
            cursor = page.cursor;
            if cursor.is_none() {
                break;
            }
        }
        assert!(cursor.is_none(), "listing with limit {limit} never ended");
        let unique: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "duplicates with limit {limit}");
        assert_eq!(unique, expected, "limit {limit}");
    }
    for domain in ["d", "d2", "c"] {
        assert!(archive.remove_domain(domain).expect("remove_domain"));
    }
}

/// An empty archive lists nothing, and a missing domain has no keys.
pub fn listing_an_empty_archive(archive: &dyn Archive) {
    let page = archive.list_domains(None, 10).expect("list_domains");
    assert!(page.names.is_empty());
    assert_eq!(page.cursor, None);
    let page = archive.list_keys("missing", None, 10).expect("list_keys");
    assert!(page.names.is_empty());
    assert_eq!(page.cursor, None);
    archive.set("d", "k", b"").expect("set");
    assert!(archive.remove("d", "k").expect("remove"));
    assert!(
        all_domains(archive).is_empty(),
        "an emptied domain is still listed"
    );
}

/// `compare_and_swap` swaps only on a match, creates and removes, and keeps the domain rules.
pub fn compare_and_swap_semantics(archive: &dyn Archive) {
    assert!(
        archive
            .compare_and_swap("d", "k", None, Some(b"1"))
            .expect("create")
    );
    assert!(archive.has_domain("d").expect("has_domain"));
    assert!(
        !archive
            .compare_and_swap("d", "k", None, Some(b"2"))
            .expect("create again")
    );
    assert!(
        !archive
            .compare_and_swap("d", "k", Some(b"2"), Some(b"3"))
            .expect("mismatch")
    );
    assert_eq!(archive.get("d", "k").expect("get"), Some(b"1".to_vec()));
    assert!(
        archive
            .compare_and_swap("d", "k", Some(b"1"), Some(b""))
            .expect("match")
    );
    assert_eq!(archive.get("d", "k").expect("get"), Some(Vec::new()));
    assert!(
        !archive
            .compare_and_swap("d", "k", None, None)
            .expect("absent vs empty")
    );
    assert!(
        archive
            .compare_and_swap("d", "k", Some(b""), None)
            .expect("remove")
    );
    assert!(
        !archive
            .has_domain("d")
            .expect("has_domain after removing last key")
    );
    assert!(
        archive
            .compare_and_swap("d", "k", None, None)
            .expect("absent stays absent")
    );
    assert!(!archive.has_domain("d").expect("has_domain"));
}

/// Concurrent read-modify-write loops over `compare_and_swap` lose no update.
pub fn compare_and_swap_loses_no_update(archive: &dyn Archive) {
    const THREADS: u64 = 4;
    const INCREMENTS: u64 = 25;
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                for _ in 0..INCREMENTS {
                    loop {
                        let current = archive.get("counter", "n").expect("get");
                        let n = current.as_deref().map_or(0, |bytes| {
                            u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
                        });
                        let next = (n + 1).to_le_bytes();
                        if archive
                            .compare_and_swap("counter", "n", current.as_deref(), Some(&next))
                            .expect("compare_and_swap")
                        {
                            break;
                        }
                    }
                }
            });
        }
    });
    let total = archive
        .get("counter", "n")
        .expect("get")
        .expect("counter exists");
    assert_eq!(total, (THREADS * INCREMENTS).to_le_bytes());
    assert!(archive.remove_domain("counter").expect("remove_domain"));
}

/// `set_many` stores every entry, across domains, overwriting as `set` does.
pub fn set_many_stores_every_entry(archive: &dyn Archive) {
    archive.set("a", "k", b"old").expect("set");
    archive
        .set_many(&[("a", "k", b"new"), ("a", "k2", b""), ("b", "k", b"b")])
        .expect("set_many");
    archive.set_many(&[]).expect("empty set_many");
    assert_eq!(archive.get("a", "k").expect("get"), Some(b"new".to_vec()));
    assert_eq!(archive.get("a", "k2").expect("get"), Some(Vec::new()));
    assert_eq!(archive.get("b", "k").expect("get"), Some(b"b".to_vec()));
    assert!(archive.remove_domain("a").expect("remove_domain"));
    assert!(archive.remove_domain("b").expect("remove_domain"));
}

/// `remove_many` removes every listed entry, across domains, counts those that existed (an entry
/// listed twice once), and leaves everything else.
pub fn remove_many_removes_each_entry_once(archive: &dyn Archive) {
    archive
        .set_many(&[
            ("a", "k", b"1"),
            ("a", "k2", b"2"),
            ("b", "k", b"3"),
            ("c", "k", b"4"),
        ])
        .expect("set_many");
    assert_eq!(archive.remove_many(&[]).expect("empty remove_many"), 0);
    let removed = archive
        .remove_many(&[
            ("a", "k"),
            ("b", "k"),
            ("a", "k"),
            ("b", "absent"),
            ("absent", "k"),
        ])
        .expect("remove_many");
    assert_eq!(removed, 2, "remove_many counted wrongly");
    assert!(!archive.has("a", "k").expect("has"));
    assert!(
        !archive.has_domain("b").expect("has_domain"),
        "an emptied domain still exists"
    );
    assert_eq!(sorted(all_domains(archive)), ["a", "c"]);
    assert_eq!(archive.get("a", "k2").expect("get"), Some(b"2".to_vec()));
    assert_eq!(
        archive
            .remove_many(&[("a", "k2"), ("c", "k")])
            .expect("remove_many"),
        2
    );
    assert!(all_domains(archive).is_empty());
}

/// `remove_domains` removes every listed domain with all its keys, counts those that existed (a
/// domain listed twice once), and leaves neighbours that share a prefix.
pub fn remove_domains_removes_each_domain_once(archive: &dyn Archive) {
    archive
        .set_many(&[
            ("a", "k", b""),
            ("a", "k2", b""),
            ("ab", "k", b""),
            ("b", "k", b""),
        ])
        .expect("set_many");
    assert_eq!(
        archive.remove_domains(&[]).expect("empty remove_domains"),
        0
    );
    let removed = archive
        .remove_domains(&["a", "b", "a", "absent"])
        .expect("remove_domains");
    assert_eq!(removed, 2, "remove_domains counted wrongly");
    assert_eq!(all_domains(archive), ["ab"]);
    assert_eq!(all_keys(archive, "ab"), ["k"]);
    assert_eq!(archive.remove_domains(&["ab"]).expect("remove_domains"), 1);
    assert!(all_domains(archive).is_empty());
}

/// Many threads writing distinct keys at once all land.
pub fn concurrent_writers_to_distinct_keys(archive: &dyn Archive) {
    std::thread::scope(|scope| {
        for t in 0..4 {
            scope.spawn(move || {
                for i in 0..20 {
                    let value = format!("{t}-{i}");
                    archive
                        .set(
                            &format!("d{}", i % 3),
                            &format!("t{t}-k{i}"),
                            value.as_bytes(),
                        )
                        .expect("set");
                }
            });
        }
    });
    for t in 0..4 {
        for i in 0..20 {
            assert_eq!(
                archive
                    .get(&format!("d{}", i % 3), &format!("t{t}-k{i}"))
                    .expect("get"),
                Some(format!("{t}-{i}").into_bytes())
            );
        }
    }
    for d in 0..3 {
        assert!(
            archive
                .remove_domain(&format!("d{d}"))
                .expect("remove_domain")
        );
    }
}

/// Whether the model test may drop and reopen the archive mid-sequence.
///
/// # Examples
///
/// ```
/// use session_archive::conformance::Persistence;
/// assert_ne!(Persistence::Volatile, Persistence::Persistent);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// The data lives as long as the handle (like `MemoryArchive`): never reopen.
    Volatile,
    /// The data outlives the handle: sequences include a reopen step, which drops the archive and
    /// calls the factory again on the same directory.
    Persistent,
}

/// One step of a model-test sequence.
#[derive(Debug, Clone)]
#[allow(missing_docs, reason = "the variants mirror the Archive methods")]
pub enum Op {
    Get(String, String),
    Set(String, String, Vec<u8>),
    Has(String, String),
    Remove(String, String),
    HasDomain(String),
    RemoveDomain(String),
    CompareAndSwap(String, String, Option<Vec<u8>>, Option<Vec<u8>>),
    ListDomains,
    ListKeys(String),
    /// Drop the archive and open it again on the same directory.
    Reopen,
    SetMany(Vec<(String, String, Vec<u8>)>),
    RemoveMany(Vec<(String, String)>),
    RemoveDomains(Vec<String>),
}

/// The model: what the archive should hold.
pub type Model = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// A name of exactly `len` bytes: `fill` repeated, then `last` (so that two such names can differ
/// in their last byte only). `fill` and `last` must be one byte long.
fn long_name(fill: &str, last: &str, len: usize) -> String {
    format!("{}{last}", fill.repeat(len - 1))
}

/// Domains of the model test: a few common ones, picked three times in four so that operations
/// meet on the same names often, and rarer ones. Each is there for a reason: names sharing a
/// prefix; names differing only in case, and only in Unicode normalization ("é" precomposed and
/// decomposed), which every backend must keep apart; two names of the maximum length differing in
/// their last byte only, and one of multi-byte characters; a space; and three invalid names (`..`,
/// a dot-name, and one byte over the limit in 128 characters).
fn model_domains() -> (Vec<String>, Vec<String>) {
    let common = ["a", "A", "ab", "\u{e9}", "e\u{301}", ".."].map(str::to_owned);
    let rare = [
        "a b".to_owned(),
        ".x".to_owned(),
        long_name("d", "a", MAX_NAME_LEN),
        long_name("d", "b", MAX_NAME_LEN),
        format!("{}x", "\u{fc}".repeat((MAX_NAME_LEN - 1) / 2)),
        "\u{fc}".repeat(MAX_NAME_LEN / 2 + 1),
    ];
    (common.into(), rare.into())
}

/// Keys of the model test, on the same plan as [`model_domains`]: case, normalization ("Å" and
/// the Angstrom sign, which NFC maps to it), a maximum-length ASCII name and one ending in a
/// four-byte character, and two invalid names (a slash, and one byte over the limit).
fn model_keys() -> (Vec<String>, Vec<String>) {
    let common = ["k", "K", "session.json", "\u{c5}", "\u{212b}", "a/b"].map(str::to_owned);
    let rare = [
        long_name("k", "k", MAX_NAME_LEN),
        format!("{}\u{1f980}", "k".repeat(MAX_NAME_LEN - 4)),
        long_name("k", "k", MAX_NAME_LEN + 1),
    ];
    (common.into(), rare.into())
}

/// A name from `common` three times in four, else from `rare`.
fn name((common, rare): (Vec<String>, Vec<String>)) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(common),
        1 => proptest::sample::select(rare),
    ]
}

/// Values: mostly tiny and often empty or equal (so compare-and-swap meets its expected value),
/// sometimes random, and sometimes several KiB (larger than a page or a read buffer; filled from a
/// seed so that two large values differ in content, not only in length).
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => proptest::sample::select(vec![vec![], vec![0], vec![1], vec![0xFF, 0, 7]]),
        2 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => (1024_usize..8 * 1024, any::<u8>()).prop_map(|(len, seed)| {
            (0..len)
                .map(|i| seed.wrapping_add(i.to_le_bytes()[0]).rotate_left(3))
                .collect()
        }),
    ]
}

/// The strategy for one operation; `Reopen` only for persistent archives.
pub fn op_strategy(persistence: Persistence) -> impl Strategy<Value = Op> {
    let (domains, keys) = (model_domains(), model_keys());
    let domain = || name(domains.clone());
    let key = || name(keys.clone());
    let ops = prop_oneof![
        6 => (domain(), key()).prop_map(|(d, k)| Op::Get(d, k)),
        8 => (domain(), key(), value()).prop_map(|(d, k, v)| Op::Set(d, k, v)),
        3 => (domain(), key()).prop_map(|(d, k)| Op::Has(d, k)),
        4 => (domain(), key()).prop_map(|(d, k)| Op::Remove(d, k)),
        3 => domain().prop_map(Op::HasDomain),
        2 => domain().prop_map(Op::RemoveDomain),
        3 => (domain(), key(), proptest::option::of(value()), proptest::option::of(value()))
            .prop_map(|(d, k, e, n)| Op::CompareAndSwap(d, k, e, n)),
        1 => Just(Op::ListDomains),
        1 => domain().prop_map(Op::ListKeys),
        2 => proptest::collection::vec((domain(), key(), value()), 0..4).prop_map(Op::SetMany),
        2 => proptest::collection::vec((domain(), key()), 0..4).prop_map(Op::RemoveMany),
        1 => proptest::collection::vec(domain(), 0..3).prop_map(Op::RemoveDomains),
    ];
    match persistence {
        // One reopen in about nineteen operations.
        Persistence::Persistent => prop_oneof![36 => ops, 2 => Just(Op::Reopen)].boxed(),
        Persistence::Volatile => ops.boxed(),
    }
}

fn valid(names: &[&str]) -> bool {
    names
        .iter()
        .all(|n| crate::validate_name(NameKind::Key, n).is_ok())
}

/// Applies `op` to the model, returning what the archive must answer, rendered for comparison;
/// `None` when the op must fail with `InvalidName` (and the model is unchanged).
fn apply_to_model(model: &mut Model, op: &Op) -> Option<String> {
    let get = |model: &Model, d: &str, k: &str| model.get(d).and_then(|keys| keys.get(k)).cloned();
    let remove = |model: &mut Model, d: &str, k: &str| {
        let existed = model.get_mut(d).and_then(|keys| keys.remove(k)).is_some();
        if model.get(d).is_some_and(BTreeMap::is_empty) {
            model.remove(d);
        }
        existed
    };
    Some(match op {
        Op::Get(d, k) | Op::Has(d, k) | Op::Remove(d, k) | Op::CompareAndSwap(d, k, ..)
            if !valid(&[d, k]) =>
        {
            return None;
        }
        Op::Set(d, k, _) if !valid(&[d, k]) => return None,
        Op::HasDomain(d) | Op::RemoveDomain(d) | Op::ListKeys(d) if !valid(&[d]) => return None,
        // A batch with one bad name anywhere fails whole and changes nothing.
        Op::SetMany(entries) if !entries.iter().all(|(d, k, _)| valid(&[d, k])) => return None,
        Op::RemoveMany(entries) if !entries.iter().all(|(d, k)| valid(&[d, k])) => return None,
        Op::RemoveDomains(domains) if !domains.iter().all(|d| valid(&[d])) => return None,
        Op::Get(d, k) => format!("{:?}", get(model, d, k)),
        Op::Set(d, k, v) => {
            model
                .entry(d.clone())
                .or_default()
                .insert(k.clone(), v.clone());
            "()".to_owned()
        }
        Op::Has(d, k) => format!("{}", get(model, d, k).is_some()),
        Op::Remove(d, k) => format!("{}", remove(model, d, k)),
        Op::HasDomain(d) => format!("{}", model.contains_key(d)),
        Op::RemoveDomain(d) => format!("{}", model.remove(d).is_some()),
        Op::CompareAndSwap(d, k, expected, new) => {
            let swapped = get(model, d, k) == *expected;
            if swapped {
                match new {
                    Some(v) => {
                        model
                            .entry(d.clone())
                            .or_default()
                            .insert(k.clone(), v.clone());
                    }
                    None => {
                        remove(model, d, k);
                    }
                }
            }
            format!("{swapped}")
        }
        Op::ListDomains => format!("{:?}", model.keys().collect::<Vec<_>>()),
        Op::ListKeys(d) => format!(
            "{:?}",
            model
                .get(d)
                .map(|keys| keys.keys().collect::<Vec<_>>())
                .unwrap_or_default()
        ),
        Op::Reopen => "()".to_owned(),
        Op::SetMany(entries) => {
            for (d, k, v) in entries {
                model
                    .entry(d.clone())
                    .or_default()
                    .insert(k.clone(), v.clone());
            }
            "()".to_owned()
        }
        Op::RemoveMany(entries) => {
            let removed = entries.iter().filter(|(d, k)| remove(model, d, k)).count();
            format!("{removed}")
        }
        Op::RemoveDomains(domains) => {
            let removed = domains
                .iter()
                .filter(|d| model.remove(*d).is_some())
                .count();
            format!("{removed}")
        }
    })
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

/// Applies `op` to the archive and renders its answer like [`apply_to_model`] does.
fn apply_to_archive(archive: &dyn Archive, op: &Op) -> crate::Result<String> {
    Ok(match op {
        Op::Get(d, k) => format!("{:?}", archive.get(d, k)?),
        Op::Set(d, k, v) => format!("{:?}", archive.set(d, k, v)?),
        Op::Has(d, k) => format!("{}", archive.has(d, k)?),
        Op::Remove(d, k) => format!("{}", archive.remove(d, k)?),
        Op::HasDomain(d) => format!("{}", archive.has_domain(d)?),
        Op::RemoveDomain(d) => format!("{}", archive.remove_domain(d)?),
        Op::CompareAndSwap(d, k, e, n) => {
            format!(
                "{}",
                archive.compare_and_swap(d, k, e.as_deref(), n.as_deref())?
            )
        }
        Op::ListDomains => format!(
            "{:?}",
            sorted(archive.domains().collect::<crate::Result<_>>()?)
        ),
        Op::ListKeys(d) => format!(
            "{:?}",
            sorted(archive.keys(d).collect::<crate::Result<_>>()?)
        ),
        Op::Reopen => "()".to_owned(),
        Op::SetMany(entries) => {
            let entries: Vec<(&str, &str, &[u8])> = entries
                .iter()
                .map(|(d, k, v)| (d.as_str(), k.as_str(), v.as_slice()))
                .collect();
            format!("{:?}", archive.set_many(&entries)?)
        }
        Op::RemoveMany(entries) => {
            let entries: Vec<(&str, &str)> = entries
                .iter()
                .map(|(d, k)| (d.as_str(), k.as_str()))
                .collect();
            format!("{}", archive.remove_many(&entries)?)
        }
        Op::RemoveDomains(domains) => {
            let domains: Vec<&str> = domains.iter().map(String::as_str).collect();
            format!("{}", archive.remove_domains(&domains)?)
        }
    })
}

/// Applies `op` to both `archive` and `model`, and checks that the archive answered as the model
/// did and now holds exactly the model's data. An op with an invalid name must fail with
/// [`Error::InvalidName`] and change nothing. [`Op::Reopen`] is only checked here; reopening is
/// the caller's job, before the call.
///
/// This is the one step of both the [`model_test`] and the fuzzers.
///
/// # Errors
///
/// A description of the first disagreement between archive and model.
///
/// # Examples
///
/// ```
/// use session_archive::MemoryArchive;
/// use session_archive::conformance::{check_step, Model, Op};
///
/// let archive = MemoryArchive::new();
/// let mut model = Model::new();
/// check_step(&archive, &mut model, &Op::Set("d".into(), "k".into(), b"v".to_vec()))?;
/// check_step(&archive, &mut model, &Op::Get("..".into(), "k".into()))?; // InvalidName, as required
/// assert_eq!(model["d"]["k"], b"v");
/// # Ok::<(), String>(())
/// ```
pub fn check_step(archive: &dyn Archive, model: &mut Model, op: &Op) -> Result<(), String> {
    let expected = apply_to_model(model, op);
    let got = apply_to_archive(archive, op);
    match (expected, got) {
        (Some(expected), Ok(got)) if expected == got => {}
        (None, Err(Error::InvalidName { .. })) => {}
        (expected, got) => {
            return Err(format!("{op:?}: expected {expected:?}, got {got:?}"));
        }
    }
    let held = snapshot(archive).map_err(|e| format!("snapshot after {op:?} failed: {e:?}"))?;
    if held != *model {
        return Err(format!(
            "state after {op:?}:\n  archive holds {held:?}\n  model holds   {model:?}"
        ));
    }
    Ok(())
}

/// Reads the archive's whole content into a model, through listing and `get`.
///
/// # Errors
///
/// Any error of the archive.
///
/// # Examples
///
/// ```
/// use session_archive::{Archive, MemoryArchive, conformance::snapshot};
///
/// let archive = MemoryArchive::new();
/// archive.set("d", "k", b"v")?;
/// assert_eq!(snapshot(&archive)?["d"]["k"], b"v");
/// # Ok::<(), session_archive::Error>(())
/// ```
pub fn snapshot(archive: &dyn Archive) -> crate::Result<Model> {
    let mut model = Model::new();
    for domain in archive.domains() {
        let domain = domain?;
        let mut keys = BTreeMap::new();
        for key in archive.keys(&domain) {
            let key = key?;
            let value = archive.get(&domain, &key)?.unwrap_or_default();
            keys.insert(key, value);
        }
        model.insert(domain, keys);
    }
    Ok(model)
}

/// The number of cases the model test runs: `PROPTEST_CASES` from the environment, or 256.
fn model_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(256)
}

/// Where the [`model_test`] records the seed of a failing case, relative to the working
/// directory; `cargo test` runs a test in its package's root, so the file lands in the package.
///
/// # Examples
///
/// ```
/// use session_archive::conformance::MODEL_REGRESSIONS;
/// assert!(std::path::Path::new(MODEL_REGRESSIONS).is_relative());
/// ```
pub const MODEL_REGRESSIONS: &str = "proptest-regressions/model_test.txt";

/// Runs random sequences of 100 to 200 operations against an archive made by `factory` and against
/// a [`Model`], asserting after every step that both answered alike and hold the same data.
/// Invalid names are part of the alphabet and must fail with `InvalidName`, changing nothing.
///
/// The alphabet is small and weighted to a few common names, so that operations meet on the same
/// names often, and it is made of edge cases: names of exactly [`MAX_NAME_LEN`] bytes (ASCII and
/// multi-byte) and one byte over it, multi-byte UTF-8, names that differ only in case or only in
/// Unicode normalization (which must be distinct names in every backend, so a case-insensitive or
/// normalizing store fails here), and values that are empty, tiny, random, or several KiB.
///
/// Runs 256 cases, or `PROPTEST_CASES` from the environment; proptest shrinks a failure to a
/// minimal sequence and the panic message shows it.
///
/// # Replaying a failure
///
/// The seed of a failing case is appended to [`MODEL_REGRESSIONS`]
/// (`proptest-regressions/model_test.txt`, relative to the working directory: the package root
/// under `cargo test`), and every later run of the model test, for every backend, replays the
/// seeds in that file before its random cases. Commit the file, so that the failure stays fixed.
///
/// # Examples
///
/// ```
/// use session_archive::MemoryArchive;
/// use session_archive::conformance::{model_test, Persistence};
///
/// model_test(|_dir| MemoryArchive::new(), Persistence::Volatile);
/// ```
pub fn model_test<A, F>(factory: F, persistence: Persistence)
where
    A: Archive,
    F: Fn(&Path) -> A,
{
    let mut runner = TestRunner::new(Config {
        cases: model_cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(MODEL_REGRESSIONS))),
        ..Config::default()
    });
    let strategy = proptest::collection::vec(op_strategy(persistence), 100..200);
    let result = runner.run(&strategy, |ops| {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut archive = Some(factory(dir.path()));
        let mut model = Model::new();
        for (step, op) in ops.iter().enumerate() {
            if let Op::Reopen = op {
                drop(archive.take());
                archive = Some(factory(dir.path()));
            }
            let Some(current) = archive.as_ref() else {
                return Err(TestCaseError::fail("archive missing"));
            };
            check_step(current, &mut model, op)
                .map_err(|failure| TestCaseError::fail(format!("step {step}: {failure}")))?;
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("model test failed: {failure}");
    }
}
