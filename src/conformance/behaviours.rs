//! The behaviours of the [`Archive` contract](Archive#contract), one public function each; the
//! list in [`__archive_behaviours!`](crate::__archive_behaviours) turns each into a test.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::archive::{Archive, ArchiveExt, Change, Page, Swap, Update};
use crate::error::{Error, NameKind};
use crate::name::MAX_NAME_LEN;

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
    archive.set("valid", "k", b"before").expect("set");
    for bad in &invalid_names() {
        single_calls_reject(archive, bad);
        batches_reject_whole(archive, bad);
    }
    assert_eq!(all_domains(archive), ["valid"]);
    assert_eq!(all_keys(archive, "valid"), ["k"]);
    assert_eq!(
        archive.get("valid", "k").expect("get"),
        Some(b"before".to_vec())
    );
    assert!(archive.remove_domain("valid").expect("remove_domain"));
}

/// Every call on one entry or one domain refuses `bad` as its domain and as its key.
fn single_calls_reject(archive: &dyn Archive, bad: &str) {
    use NameKind::{Domain, Key};
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
}

/// Every batch holding `bad` anywhere fails whole: its valid entries are neither written nor
/// removed.
fn batches_reject_whole(archive: &dyn Archive, bad: &str) {
    use NameKind::{Domain, Key};
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

/// Paging through domains with a small page size returns every domain exactly once, whatever
/// the page size.
pub fn list_domains_pages_through_everything(archive: &dyn Archive) {
    let expected: BTreeSet<String> = (0..57).map(|i| format!("domain-{i:03}")).collect();
    for domain in &expected {
        archive.set(domain, "k1", b"v").expect("set");
        archive.set(domain, "k2", b"v").expect("set");
    }
    for limit in [1, 2, 7, 57, 1000] {
        let pages =
            |cursor: Option<&str>| archive.list_domains(cursor, limit).expect("list_domains");
        assert_pages_through(pages, limit, &expected);
    }
    let mut iterated: Vec<String> = all_domains(archive);
    iterated.sort();
    assert_eq!(iterated, expected.iter().cloned().collect::<Vec<_>>());
    for domain in &expected {
        assert!(archive.remove_domain(domain).expect("remove_domain"));
    }
}

/// Follows a listing's cursors page by page and checks that it ends, lists no name twice and
/// lists exactly `expected`.
fn assert_pages_through(
    mut page: impl FnMut(Option<&str>) -> Page,
    limit: usize,
    expected: &BTreeSet<String>,
) {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let next = page(cursor.as_deref());
        seen.extend(next.names);
        cursor = next.cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert!(cursor.is_none(), "listing with limit {limit} never ended");
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "duplicates with limit {limit}");
    assert_eq!(&unique, expected, "limit {limit}");
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
        let pages =
            |cursor: Option<&str>| archive.list_keys("d", cursor, limit).expect("list_keys");
        assert_pages_through(pages, limit, &expected);
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

/// The values of `keys` in domain `d`.
fn values(archive: &dyn Archive, d: &str, keys: &[&str]) -> Vec<Option<Vec<u8>>> {
    keys.iter()
        .map(|key| archive.get(d, key).expect("get"))
        .collect()
}

/// `compare_and_swap_many` writes every key when every one matches, and nothing when any one
/// does not (a value, an absent key, a present key expected absent), whichever its place; it
/// sees only its own domain.
pub fn compare_and_swap_many_is_all_or_nothing(archive: &dyn Archive) {
    archive
        .set_many(&[("d", "a", b"1"), ("d", "b", b"2"), ("da", "c", b"x")])
        .expect("set_many");
    let swapped = archive
        .compare_and_swap_many(
            "d",
            &[
                ("a", Some(b"1"), Some(b"10")),
                ("b", Some(b"2"), Some(b"20")),
            ],
        )
        .expect("matching swap");
    assert!(swapped, "a swap whose every key matches");
    let both = [Some(b"10".to_vec()), Some(b"20".to_vec())];
    assert_eq!(values(archive, "d", &["a", "b"]), both);

    let mismatches: [&[Swap<'_>]; 5] = [
        // The last key holds another value.
        &[
            ("a", Some(b"10"), Some(b"11")),
            ("b", Some(b"2"), Some(b"21")),
        ],
        // The first key does.
        &[
            ("a", Some(b"1"), Some(b"11")),
            ("b", Some(b"20"), Some(b"21")),
        ],
        // A key expected present is absent.
        &[("a", Some(b"10"), None), ("c", Some(b"x"), Some(b"y"))],
        // A key expected absent is present.
        &[("a", Some(b"10"), Some(b"11")), ("b", None, Some(b"21"))],
        // The empty value is not absence.
        &[("c", None, Some(b"y")), ("a", Some(b""), Some(b"11"))],
    ];
    for swaps in mismatches {
        let swapped = archive.compare_and_swap_many("d", swaps).expect("mismatch");
        assert!(!swapped, "{swaps:?} swapped");
        assert_eq!(values(archive, "d", &["a", "b"]), both, "{swaps:?} wrote");
        assert!(!archive.has("d", "c").expect("has"), "{swaps:?} wrote");
    }
    // `c` lives in the domain `da`, not in `d`.
    let swapped = archive
        .compare_and_swap_many("d", &[("c", Some(b"x"), None)])
        .expect("swap in a neighbour");
    assert!(!swapped, "a swap saw a key of a domain sharing its prefix");
    assert_eq!(archive.get("da", "c").expect("get"), Some(b"x".to_vec()));
    assert!(archive.remove_domain("d").expect("remove_domain"));
    assert!(archive.remove_domain("da").expect("remove_domain"));
}

/// `compare_and_swap_many` creates keys expected absent, and removes keys whose new value is
/// absent, in any mix; it creates a domain, and removing a domain's last keys removes it.
pub fn compare_and_swap_many_creates_and_removes(archive: &dyn Archive) {
    let create = [("a", None, Some(&b"1"[..])), ("b", None, Some(&b""[..]))];
    assert!(archive.compare_and_swap_many("d", &create).expect("create"));
    assert!(archive.has_domain("d").expect("has_domain"));
    assert_eq!(all_keys(archive, "d"), ["a", "b"]);
    assert_eq!(archive.get("d", "b").expect("get"), Some(Vec::new()));

    // One key goes and another comes, even when the one going was the last.
    let replace = [("a", Some(&b"1"[..]), None), ("c", None, Some(&b"3"[..]))];
    assert!(
        archive
            .compare_and_swap_many("d", &replace)
            .expect("replace")
    );
    assert_eq!(all_keys(archive, "d"), ["b", "c"]);
    let move_last = [
        ("b", Some(&b""[..]), None),
        ("c", Some(&b"3"[..]), None),
        ("a", None, Some(&b"4"[..])),
    ];
    assert!(
        archive
            .compare_and_swap_many("d", &move_last)
            .expect("move")
    );
    assert_eq!(all_keys(archive, "d"), ["a"]);
    assert_eq!(all_domains(archive), ["d"]);

    // Removing some keys keeps the domain; removing the last ones removes it.
    archive.set("d", "b", b"2").expect("set");
    let some = [("a", Some(&b"4"[..]), None)];
    assert!(
        archive
            .compare_and_swap_many("d", &some)
            .expect("remove some")
    );
    assert!(archive.has_domain("d").expect("has_domain"));
    archive.set("d", "a", b"1").expect("set");
    let all = [("b", Some(&b"2"[..]), None), ("a", Some(&b"1"[..]), None)];
    assert!(
        archive
            .compare_and_swap_many("d", &all)
            .expect("remove all")
    );
    assert!(
        !archive.has_domain("d").expect("has_domain"),
        "removing the last keys left the domain"
    );
    assert!(all_domains(archive).is_empty());
    assert!(all_keys(archive, "d").is_empty());
}

/// A swap whose expected and new values are equal only checks its key: it writes nothing to it,
/// creates no domain, yet fails the whole swap when it does not match.
pub fn compare_and_swap_many_equal_values_only_check(archive: &dyn Archive) {
    let absent = [("a", None, None), ("b", None, None)];
    assert!(
        archive
            .compare_and_swap_many("d", &absent)
            .expect("check absent")
    );
    assert!(
        !archive.has_domain("d").expect("has_domain"),
        "a swap that only checks absent keys created the domain"
    );

    archive.set("d", "a", b"1").expect("set");
    let guarded = [
        ("a", Some(&b"1"[..]), Some(&b"1"[..])),
        ("b", None, None),
        ("c", None, Some(&b"x"[..])),
    ];
    assert!(
        archive
            .compare_and_swap_many("d", &guarded)
            .expect("guarded")
    );
    assert_eq!(all_keys(archive, "d"), ["a", "c"]);
    assert_eq!(archive.get("d", "a").expect("get"), Some(b"1".to_vec()));

    // The guard no longer matches, so `c` is not removed.
    let stale = [
        ("a", Some(&b"2"[..]), Some(&b"2"[..])),
        ("c", Some(&b"x"[..]), None),
    ];
    assert!(
        !archive
            .compare_and_swap_many("d", &stale)
            .expect("stale guard")
    );
    assert_eq!(archive.get("d", "a").expect("get"), Some(b"1".to_vec()));
    assert_eq!(archive.get("d", "c").expect("get"), Some(b"x".to_vec()));
    let absent_guard = [
        ("b", Some(&b""[..]), Some(&b""[..])),
        ("c", Some(&b"x"[..]), None),
    ];
    assert!(
        !archive
            .compare_and_swap_many("d", &absent_guard)
            .expect("absent guard")
    );
    assert!(archive.has("d", "c").expect("has"));
    assert!(archive.remove_domain("d").expect("remove_domain"));
}

/// An empty list of swaps swaps nothing and succeeds, on a present or a missing domain; its
/// domain name is still checked.
pub fn compare_and_swap_many_of_nothing_succeeds(archive: &dyn Archive) {
    assert!(
        archive
            .compare_and_swap_many("d", &[])
            .expect("empty, no domain")
    );
    assert!(!archive.has_domain("d").expect("has_domain"));
    archive.set("d", "k", b"v").expect("set");
    assert!(archive.compare_and_swap_many("d", &[]).expect("empty"));
    assert_eq!(archive.get("d", "k").expect("get"), Some(b"v".to_vec()));
    assert_invalid(
        archive.compare_and_swap_many("..", &[]),
        NameKind::Domain,
        "..",
        "compare_and_swap_many",
    );
    assert!(archive.remove_domain("d").expect("remove_domain"));
}

/// `compare_and_swap_many` refuses an invalid domain or key, and a key named twice, before
/// it reads or writes anything: the valid, matching swaps beside them are not written.
pub fn compare_and_swap_many_refuses_bad_names_and_duplicates_before_writing(
    archive: &dyn Archive,
) {
    archive.set("valid", "k", b"before").expect("set");
    let change = ("k", Some(&b"before"[..]), Some(&b"changed"[..]));
    for bad in &invalid_names() {
        assert_invalid(
            archive.compare_and_swap_many(bad, &[change]),
            NameKind::Domain,
            bad,
            "compare_and_swap_many",
        );
        assert_invalid(
            archive.compare_and_swap_many("valid", &[change, (bad, None, Some(b"x"))]),
            NameKind::Key,
            bad,
            "compare_and_swap_many",
        );
    }
    let twice: [&[Swap<'_>]; 3] = [
        &[change, ("k", Some(b"before"), Some(b"other"))],
        &[change, ("new", None, Some(b"x")), ("new", None, None)],
        // A duplicate is refused even where a comparison would fail first.
        &[("k", Some(b"stale"), None), ("k", Some(b"stale"), None)],
    ];
    for swaps in twice {
        match archive.compare_and_swap_many("valid", swaps) {
            Err(Error::DuplicateKey { domain, key }) => {
                assert_eq!(domain, "valid");
                assert_eq!(key, swaps[swaps.len() - 1].0, "{swaps:?}");
            }
            other => panic!("{swaps:?} gave {other:?}, not DuplicateKey"),
        }
    }
    assert_eq!(all_domains(archive), ["valid"]);
    assert_eq!(all_keys(archive, "valid"), ["k"]);
    assert_eq!(
        archive.get("valid", "k").expect("get"),
        Some(b"before".to_vec())
    );
    assert!(archive.remove_domain("valid").expect("remove_domain"));
}

/// Counts a thread as done when it is dropped, as the thread ends by returning or by panicking.
struct Done<'a>(&'a AtomicU64);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Concurrent multi-key swaps are atomic: threads move two counters together, each swap
/// expecting the values it read. A swap that succeeds proves the two were equal at that
/// instant, so none may succeed on unequal values (which a torn swap would leave), and no
/// increment is lost. A watcher checks the pair meanwhile with swaps that only compare.
pub fn compare_and_swap_many_is_atomic_under_concurrency(archive: &dyn Archive) {
    moving_pair_watched(archive, || {
        let (x, y) = read_pair(archive);
        let check = [
            ("x", x.as_deref(), x.as_deref()),
            ("y", y.as_deref(), y.as_deref()),
        ];
        if archive
            .compare_and_swap_many("pair", &check)
            .expect("a swap that only checks")
        {
            assert_eq!(x, y, "a check saw a torn pair");
        }
    });
}

/// `get_many` reads its keys at one moment: while threads move two counters together with
/// `compare_and_swap_many`, a reader never sees them differ.
pub fn get_many_sees_a_swap_whole(archive: &dyn Archive) {
    moving_pair_watched(archive, || {
        let pair = archive.get_many("pair", &["x", "y"]).expect("get_many");
        assert_eq!(pair[0], pair[1], "get_many saw a torn pair");
    });
}

/// Threads move the two counters of `pair` together, each by swaps that expect what they read,
/// while `watch` runs again and again on another thread until they are done; then no increment
/// may be lost, and the pair is removed.
fn moving_pair_watched(archive: &dyn Archive, watch: impl Fn() + Sync) {
    const THREADS: u64 = 3;
    const INCREMENTS: u64 = 15;
    let done = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                // The watcher stops once every writer is done, even one that panicked.
                let _done = Done(&done);
                for _ in 0..INCREMENTS {
                    increment_pair(archive);
                }
            });
        }
        scope.spawn(|| {
            while done.load(Ordering::SeqCst) < THREADS {
                watch();
                std::thread::yield_now();
            }
        });
    });
    let total = (THREADS * INCREMENTS).to_le_bytes().to_vec();
    assert_eq!(
        read_pair(archive),
        (Some(total.clone()), Some(total)),
        "an increment was lost"
    );
    assert!(archive.remove_domain("pair").expect("remove_domain"));
}

/// `get_many` answers each key's value in the order asked, `None` for an absent key or domain,
/// the same value for a key named twice, nothing for no keys; and it reads only its own domain.
/// A bad name is an error.
pub fn get_many_reads_each_key(archive: &dyn Archive) {
    archive
        .set_many(&[("d", "a", b"1"), ("d", "b", b""), ("da", "c", b"x")])
        .expect("set_many");
    assert_eq!(
        archive
            .get_many("d", &["b", "c", "a", "b"])
            .expect("get_many"),
        [
            Some(b"".to_vec()),
            None,
            Some(b"1".to_vec()),
            Some(b"".to_vec())
        ]
    );
    assert_eq!(
        archive.get_many("d", &[]).expect("get_many"),
        Vec::<Option<Vec<u8>>>::new()
    );
    assert_eq!(
        archive.get_many("missing", &["a", "b"]).expect("get_many"),
        [None, None]
    );
    for (domain, keys) in [("..", &["a"][..]), ("d", &["a", "../a"][..])] {
        assert!(
            matches!(
                archive.get_many(domain, keys),
                Err(Error::InvalidName { .. })
            ),
            "{domain} {keys:?}"
        );
    }
    assert_eq!(
        archive
            .remove_domains(&["d", "da"])
            .expect("remove_domains"),
        2
    );
}

/// The two counters of [`compare_and_swap_many_is_atomic_under_concurrency`], as stored.
fn read_pair(archive: &dyn Archive) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let x = archive.get("pair", "x").expect("get");
    let y = archive.get("pair", "y").expect("get");
    (x, y)
}

/// Moves both counters on by one in one swap, expecting the values read, until a swap lands.
fn increment_pair(archive: &dyn Archive) {
    let decode = |bytes: Option<&[u8]>| {
        bytes.map_or(0, |bytes| {
            u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
        })
    };
    loop {
        let (x, y) = read_pair(archive);
        let next_x = (decode(x.as_deref()) + 1).to_le_bytes();
        let next_y = (decode(y.as_deref()) + 1).to_le_bytes();
        let swaps = [
            ("x", x.as_deref(), Some(&next_x[..])),
            ("y", y.as_deref(), Some(&next_y[..])),
        ];
        if archive
            .compare_and_swap_many("pair", &swaps)
            .expect("compare_and_swap_many")
        {
            assert_eq!(x, y, "a swap succeeded on a torn pair");
            return;
        }
    }
}

/// A change for `update` that stores `value` after checking that it was given `expected`.
fn change_from(expected: Option<&'static [u8]>, then: Update) -> Change {
    Box::new(move |current| {
        assert_eq!(current, expected, "update gave the change the stored value");
        Ok(then.clone())
    })
}

/// A change that refuses: it returns an error.
fn refuse() -> Change {
    Box::new(|_: Option<&[u8]>| -> crate::Result<Update> {
        Err(Error::Backend {
            backend: "test",
            operation: "refuse an update",
            source: "refused".into(),
        })
    })
}

/// The answer of an update whose change was [`refuse`]: that error.
fn assert_refused(answer: &crate::Result<Option<Vec<u8>>>) {
    assert!(
        matches!(
            answer,
            Err(Error::Backend {
                backend: "test",
                ..
            })
        ),
        "{answer:?}"
    );
}

/// `update` gives the change the stored value and stores what it makes of it; `Keep`, and
/// `Remove` of an absent key, write nothing; every answer is the value stored afterwards.
pub fn update_semantics(archive: &dyn Archive) {
    let update = |expected, then| archive.update("d", "k", change_from(expected, then));
    assert_eq!(update(None, Update::Keep).expect("keep absent"), None);
    assert_eq!(update(None, Update::Remove).expect("remove absent"), None);
    assert!(!archive.has_domain("d").expect("has_domain"));
    let one = Update::Set(b"1".to_vec());
    assert_eq!(update(None, one).expect("create"), Some(b"1".to_vec()));
    let empty = Update::Set(Vec::new());
    assert_eq!(update(Some(b"1"), empty).expect("set"), Some(Vec::new()));
    assert_eq!(
        update(Some(b""), Update::Keep).expect("keep"),
        Some(Vec::new())
    );
    assert_eq!(archive.get("d", "k").expect("get"), Some(Vec::new()));
    assert_eq!(update(Some(b""), Update::Remove).expect("remove"), None);
    assert!(
        !archive
            .has_domain("d")
            .expect("has_domain after removing the last key")
    );
    let never = Box::new(|_: Option<&[u8]>| -> crate::Result<Update> {
        panic!("the change of an update with an invalid name ran")
    });
    assert!(matches!(
        archive.update("..", "k", never),
        Err(Error::InvalidName { .. })
    ));
}

/// A change that fails, or panics, writes nothing: its error is the update's answer, its panic
/// resumes in the caller, and the archive goes on working.
pub fn update_that_fails_writes_nothing(archive: &dyn Archive) {
    archive.set("d", "k", b"before").expect("set");
    assert_refused(&archive.update("d", "k", refuse()));
    let panicking =
        Box::new(|_: Option<&[u8]>| -> crate::Result<Update> { panic!("a change that panics") });
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        archive.update("d", "k", panicking)
    }));
    let payload = unwound.expect_err("the change's panic reaches the caller");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"a change that panics")
    );
    assert_eq!(
        archive.get("d", "k").expect("get"),
        Some(b"before".to_vec())
    );
    let after = archive.update("d", "k", change_from(Some(b"before"), Update::Remove));
    assert_eq!(after.expect("update after a panic"), None);
}

/// Concurrent updates of one key lose nothing: each sees the value the one before it stored,
/// and answers the value it stored itself.
pub fn update_loses_no_update(archive: &dyn Archive) {
    const THREADS: u64 = 4;
    const INCREMENTS: u64 = 25;
    let answers = std::sync::Mutex::new(BTreeSet::new());
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                for _ in 0..INCREMENTS {
                    let increment = Box::new(|current: Option<&[u8]>| {
                        let n = current.map_or(0, |bytes| {
                            u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
                        });
                        Ok(Update::Set((n + 1).to_le_bytes().to_vec()))
                    });
                    let stored = archive.update("counter", "n", increment).expect("update");
                    let stored = stored.expect("an increment stores a value");
                    let n = u64::from_le_bytes(stored.try_into().expect("8 bytes"));
                    assert!(
                        answers.lock().expect("answers").insert(n),
                        "{n} answered twice"
                    );
                }
            });
        }
    });
    let answers = answers.into_inner().expect("answers");
    assert_eq!(answers, (1..=THREADS * INCREMENTS).collect::<BTreeSet<_>>());
    assert!(archive.remove_domain("counter").expect("remove_domain"));
}

/// Runs a future to its end on this thread, parking it while the future waits: how the suite
/// awaits [`update_async`](Archive::update_async), and a way for a test to do the same without
/// an async runtime.
///
/// # Examples
///
/// ```
/// use session_archive::archive::{Archive, Update};
/// use session_archive::conformance::block_on;
/// use session_archive::MemoryArchive;
///
/// let archive = MemoryArchive::new();
/// let set = Box::new(|_: Option<&[u8]>| Ok(Update::Set(b"v".to_vec())));
/// assert_eq!(block_on(archive.update_async("d", "k", set))?, Some(b"v".to_vec()));
/// # Ok::<(), session_archive::Error>(())
/// ```
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    crate::archive::block_on::block_on(future)
}

/// An update adding one to a little-endian `u64` (absent is 0).
fn increment() -> Change {
    Box::new(|current: Option<&[u8]>| {
        let n = current.map_or(0, |bytes| {
            u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
        });
        Ok(Update::Set((n + 1).to_le_bytes().to_vec()))
    })
}

/// `update_async` answers as `update` does: its errors, and the value stored afterwards. Many
/// updates in flight at once each answer a value of their own, and an update whose future was
/// dropped is still applied.
pub fn update_async_answers_as_update(archive: &dyn Archive) {
    let never = Box::new(|_: Option<&[u8]>| -> crate::Result<Update> {
        panic!("the change of an update with an invalid name ran")
    });
    assert!(matches!(
        block_on(archive.update_async("d", "..", never)),
        Err(Error::InvalidName { .. })
    ));
    let set = change_from(None, Update::Set(b"1".to_vec()));
    assert_eq!(
        block_on(archive.update_async("d", "k", set)).expect("set"),
        Some(b"1".to_vec())
    );
    assert_refused(&block_on(archive.update_async("d", "k", refuse())));
    let remove = change_from(Some(b"1"), Update::Remove);
    assert_eq!(
        block_on(archive.update_async("d", "k", remove)).expect("remove"),
        None
    );

    let in_flight: Vec<_> = (0..20)
        .map(|_| archive.update_async("counter", "n", increment()))
        .collect();
    let mut answers: Vec<u64> = in_flight
        .into_iter()
        .map(|future| {
            let stored = block_on(future).expect("update_async").expect("a value");
            u64::from_le_bytes(stored.try_into().expect("8 bytes"))
        })
        .collect();
    answers.sort_unstable();
    assert_eq!(answers, (1..=20).collect::<Vec<u64>>());
    drop(archive.update_async("counter", "n", increment()));
    let after = archive.update("counter", "n", increment()).expect("update");
    assert_eq!(after, Some(22_u64.to_le_bytes().to_vec()));
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

/// `compare_and_swap_each` swaps each group, all of its keys or none, on its own: a group that
/// does not match leaves the others to swap; groups run in order, each seeing the groups before
/// it (a domain may appear twice); a group of no swaps, and no groups at all, swap nothing.
pub fn compare_and_swap_each_swaps_each_group_on_its_own(archive: &dyn Archive) {
    archive
        .set_many(&[("a", "s", b"1"), ("a", "m", b"r"), ("b", "s", b"2")])
        .expect("set_many");
    assert!(
        archive
            .compare_and_swap_each(&[])
            .expect("no groups")
            .is_empty()
    );
    let a: [Swap<'_>; 2] = [("s", Some(b"1"), None), ("m", Some(b"r"), Some(b"r"))];
    let stale: [Swap<'_>; 1] = [("s", Some(b"old"), None)];
    let create: [Swap<'_>; 1] = [("s", None, Some(b"3"))];
    let then: [Swap<'_>; 1] = [("s", Some(b"3"), Some(b"4"))];
    let swapped = archive
        .compare_and_swap_each(&[
            ("a", &a),
            ("b", &stale),
            ("c", &create),
            ("c", &then),
            ("d", &[]),
        ])
        .expect("compare_and_swap_each");
    assert_eq!(swapped, [true, false, true, true, true]);
    assert_eq!(archive.get("a", "s").expect("get"), None);
    assert_eq!(archive.get("a", "m").expect("get"), Some(b"r".to_vec()));
    assert_eq!(archive.get("b", "s").expect("get"), Some(b"2".to_vec()));
    assert_eq!(archive.get("c", "s").expect("get"), Some(b"4".to_vec()));
    assert!(!archive.has_domain("d").expect("has_domain"));
    // A group only partly matching writes none of its keys.
    let partly: [Swap<'_>; 2] = [("m", Some(b"r"), None), ("s", Some(b"1"), None)];
    let swapped = archive
        .compare_and_swap_each(&[("a", &partly)])
        .expect("partly");
    assert_eq!(swapped, [false]);
    assert_eq!(archive.get("a", "m").expect("get"), Some(b"r".to_vec()));
    assert_eq!(
        archive.remove_domains(&["a", "b", "c"]).expect("clean up"),
        3
    );
}

/// `compare_and_swap_each` checks every group before it writes anything: an invalid name or a
/// key named twice in a later group leaves an earlier, matching group unswapped.
pub fn compare_and_swap_each_refuses_bad_groups_before_writing(archive: &dyn Archive) {
    archive.set("a", "s", b"1").expect("set");
    let good: [Swap<'_>; 1] = [("s", Some(b"1"), Some(b"2"))];
    let bad_key: [Swap<'_>; 1] = [("..", None, Some(b"x"))];
    let twice: [Swap<'_>; 2] = [("k", None, Some(b"x")), ("k", None, None)];
    assert!(matches!(
        archive.compare_and_swap_each(&[("a", &good), ("..", &good)]),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        archive.compare_and_swap_each(&[("a", &good), ("b", &bad_key)]),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        archive.compare_and_swap_each(&[("a", &good), ("b", &twice)]),
        Err(Error::DuplicateKey { .. })
    ));
    assert_eq!(archive.get("a", "s").expect("get"), Some(b"1".to_vec()));
    assert_eq!(all_domains(archive), ["a"]);
    assert!(archive.remove_domain("a").expect("clean up"));
}

/// `get_each` answers every entry's value in the order asked (`None` for a missing key or
/// domain, an entry asked twice twice), nothing for no entries, and refuses an invalid name.
pub fn get_each_reads_every_entry_in_order(archive: &dyn Archive) {
    archive
        .set_many(&[("a", "k", b"1"), ("a", "e", b""), ("b", "k", b"2")])
        .expect("set_many");
    assert!(archive.get_each(&[]).expect("no entries").is_empty());
    let values = archive
        .get_each(&[
            ("b", "k"),
            ("a", "k"),
            ("a", "missing"),
            ("c", "k"),
            ("a", "e"),
            ("b", "k"),
        ])
        .expect("get_each");
    assert_eq!(
        values,
        [
            Some(b"2".to_vec()),
            Some(b"1".to_vec()),
            None,
            None,
            Some(Vec::new()),
            Some(b"2".to_vec()),
        ]
    );
    assert!(matches!(
        archive.get_each(&[("a", "k"), ("a", "..")]),
        Err(Error::InvalidName { .. })
    ));
    assert_eq!(archive.remove_domains(&["a", "b"]).expect("clean up"), 2);
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
    let mut left = all_domains(archive);
    left.sort();
    assert_eq!(left, ["a", "c"]);
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
