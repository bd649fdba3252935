//! The model test: [`Op`], the operations it runs; the [`Model`] they run against, a `BTreeMap`;
//! the proptest strategy that makes sequences of them; and [`check_step`], the one step shared by
//! the [`model_test`] and the fuzzers (which decode [`Op`]s with `arbitrary`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};

use crate::archive::{Archive, ArchiveExt, Swap, SwapGroup, Update};
use crate::error::{Error, NameKind};
use crate::name::MAX_NAME_LEN;

#[cfg(feature = "fuzzing")]
pub(super) mod fuzz_input;

/// Whether the model test may drop and reopen the archive mid-sequence.
///
/// # Examples
///
/// A redb file outlives its handle, so its model test reopens it on the same directory:
///
/// ```no_run
/// use session_archive::RedbArchive;
/// use session_archive::conformance::{model_test, Persistence};
///
/// model_test(
///     |dir| RedbArchive::open(dir.join("archive.redb")).expect("open"),
///     Persistence::Persistent,
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// The data lives as long as the handle (like `MemoryArchive`): never reopen.
    Volatile,
    /// The data outlives the handle: sequences include a reopen step, which drops the archive and
    /// calls the factory again on the same directory.
    Persistent,
}

/// One step of a model-test sequence: one [`Archive`] call (or, for [`Op::Reopen`], a reopen).
///
/// With the `fuzzing` feature it is also what the fuzz targets decode from their input
/// (`arbitrary`): names are often taken from a small pool (see
/// [`fuzz::FuzzName`](super::fuzz::FuzzName)), so that operations meet each other's data. The
/// order of the variants is part of that byte encoding, and so of the meaning of the committed
/// seeds in `fuzz/seeds/`: a new or moved variant changes what the seeds decode to (which
/// `tests/fuzz_seeds.rs` notices).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[allow(missing_docs, reason = "the variants mirror the Archive methods")]
pub enum Op {
    Get(
        #[cfg_attr(feature = "fuzzing", arbitrary(with = fuzz_input::name))] String,
        #[cfg_attr(feature = "fuzzing", arbitrary(with = fuzz_input::name))] String,
    ),
    Set(
        #[cfg_attr(feature = "fuzzing", arbitrary(with = fuzz_input::name))] String,
        #[cfg_attr(feature = "fuzzing", arbitrary(with = fuzz_input::name))] String,
        Vec<u8>,
    ),
    Has(
        #[cfg_attr(feature = "fuzzing", arbitrary(with = fuzz_input::name))] String,
        #[cfg_attr(feature = "fuzzing", arbitrary(with = fuzz_input::name))] String,
    ),
    Remove(
        #[cfg_attr(feature = "fuzzing", arbitrary(with = fuzz_input::name))] String,
        #[cfg_attr(feature = "fuzzing", arbitrary(with = fuzz_input::name))] String,
    ),
    HasDomain(#[cfg_attr(feature = "fuzzing", arbitrary(with = fuzz_input::name))] String),
    RemoveDomain(#[cfg_attr(feature = "fuzzing", arbitrary(with = fuzz_input::name))] String),
    CompareAndSwap(
        #[cfg_attr(feature = "fuzzing", arbitrary(with = fuzz_input::name))] String,
        #[cfg_attr(feature = "fuzzing", arbitrary(with = fuzz_input::name))] String,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
    ),
    ListDomains,
    ListKeys(#[cfg_attr(feature = "fuzzing", arbitrary(with = fuzz_input::name))] String),
    /// Drop the archive and open it again on the same directory.
    Reopen,
    /// List the domains (`None`) or the keys of a domain page by page, with this page size;
    /// checked strictly: no page over the size, no name twice, and an end within one page more
    /// than there are names. Not in [`op_strategy`], since a backend may treat the page size as
    /// a hint (Redis); the fuzzers run it on the backends that bound their pages.
    ListPaged(
        #[cfg_attr(feature = "fuzzing", arbitrary(with = fuzz_input::optional_name))]
        Option<String>,
        #[cfg_attr(feature = "fuzzing", arbitrary(with = fuzz_input::page_size))] usize,
    ),
    SetMany(
        #[cfg_attr(feature = "fuzzing", arbitrary(with = fuzz_input::entries))]
        Vec<(String, String, Vec<u8>)>,
    ),
    RemoveMany(
        #[cfg_attr(feature = "fuzzing", arbitrary(with = fuzz_input::keys))] Vec<(String, String)>,
    ),
    RemoveDomains(
        #[cfg_attr(feature = "fuzzing", arbitrary(with = fuzz_input::names))] Vec<String>,
    ),
    /// An [`Archive::update`] whose change does what the [`Edit`] says. Not decoded by the
    /// fuzzers (a new decodable variant would change what every committed seed means); the
    /// model test runs it on every backend.
    #[cfg_attr(feature = "fuzzing", arbitrary(skip))]
    Update(String, String, Edit),
    /// An [`Archive::compare_and_swap_many`] on one domain: each swap is (key, expected, new).
    /// Not decoded by the fuzzers, for the reason [`Op::Update`] is not; the model test runs it
    /// on every backend.
    #[cfg_attr(feature = "fuzzing", arbitrary(skip))]
    CompareAndSwapMany(String, Vec<OwnedSwap>),
    /// An [`Archive::compare_and_swap_each`]: each group is a domain and its swaps. Not decoded
    /// by the fuzzers, for the reason [`Op::Update`] is not; the model test runs it on every
    /// backend.
    #[cfg_attr(feature = "fuzzing", arbitrary(skip))]
    CompareAndSwapEach(Vec<(String, Vec<OwnedSwap>)>),
    /// An [`Archive::get_each`] of these (domain, key) entries. Not decoded by the fuzzers, for
    /// the reason [`Op::Update`] is not.
    #[cfg_attr(feature = "fuzzing", arbitrary(skip))]
    GetEach(Vec<(String, String)>),
    /// An [`Archive::get_many`] of these keys of one domain. Not decoded by the fuzzers, for the
    /// reason [`Op::Update`] is not.
    #[cfg_attr(feature = "fuzzing", arbitrary(skip))]
    GetMany(String, Vec<String>),
}

/// One swap of an [`Op::CompareAndSwapMany`]: the key, the value it must hold (`None`: absent)
/// and the value to store (`None`: remove it).
pub type OwnedSwap = (String, Option<Vec<u8>>, Option<Vec<u8>>);

/// What the change of an [`Op::Update`] does with the value it is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Leaves it as it is.
    Keep,
    /// Appends these bytes (to nothing, when absent).
    Append(Vec<u8>),
    /// Removes it.
    Remove,
}

impl Edit {
    /// What this edit makes of `current`.
    fn apply(&self, current: Option<&[u8]>) -> Update {
        match self {
            Edit::Keep => Update::Keep,
            Edit::Append(suffix) => {
                Update::Set([current.unwrap_or_default(), suffix.as_slice()].concat())
            }
            Edit::Remove => Update::Remove,
        }
    }
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

/// Edits of [`Op::Update`]: mostly appends of the model's values.
fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => Just(Edit::Keep),
        4 => value().prop_map(Edit::Append),
        1 => Just(Edit::Remove),
    ]
}

/// One swap of an [`Op::CompareAndSwapMany`] on `key`: the expected value absent half of the
/// time (so that swaps creating keys succeed often), and a third of the time the new value equal
/// to it (a swap that only checks).
fn swap(key: impl Strategy<Value = String>) -> impl Strategy<Value = OwnedSwap> {
    let expected = || prop_oneof![1 => Just(None), 1 => value().prop_map(Some)];
    let new = proptest::option::of(value());
    (key, expected(), new, proptest::bool::weighted(1.0 / 3.0)).prop_map(
        |(key, expected, new, only_check)| {
            let new = if only_check { expected.clone() } else { new };
            (key, expected, new)
        },
    )
}

/// The strategy for one operation of the [`model_test`]; `Reopen` only for persistent archives,
/// and never [`Op::ListPaged`] (see there why).
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
        3 => (domain(), key(), edit()).prop_map(|(d, k, e)| Op::Update(d, k, e)),
        3 => (domain(), proptest::collection::vec(swap(key()), 0..4))
            .prop_map(|(d, swaps)| Op::CompareAndSwapMany(d, swaps)),
        2 => proptest::collection::vec(
            (domain(), proptest::collection::vec(swap(key()), 0..3)),
            0..4
        )
        .prop_map(Op::CompareAndSwapEach),
        2 => proptest::collection::vec((domain(), key()), 0..5).prop_map(Op::GetEach),
        3 => (domain(), proptest::collection::vec(key(), 0..4))
            .prop_map(|(d, keys)| Op::GetMany(d, keys)),
    ];
    match persistence {
        // One reopen in about nineteen operations.
        Persistence::Persistent => prop_oneof![36 => ops, 2 => Just(Op::Reopen)].boxed(),
        Persistence::Volatile => ops.boxed(),
    }
}

/// Whether every name `op` carries is valid (the rule is the same for domains and keys).
fn names_are_valid(op: &Op) -> bool {
    let valid = |name: &String| crate::name::validate_name(NameKind::Key, name).is_ok();
    match op {
        Op::Get(d, k)
        | Op::Set(d, k, _)
        | Op::Has(d, k)
        | Op::Remove(d, k)
        | Op::CompareAndSwap(d, k, ..)
        | Op::Update(d, k, _) => valid(d) && valid(k),
        Op::HasDomain(d) | Op::RemoveDomain(d) | Op::ListKeys(d) => valid(d),
        Op::ListPaged(d, _) => d.iter().all(valid),
        Op::ListDomains | Op::Reopen => true,
        Op::SetMany(entries) => entries.iter().all(|(d, k, _)| valid(d) && valid(k)),
        Op::RemoveMany(entries) => entries.iter().all(|(d, k)| valid(d) && valid(k)),
        Op::RemoveDomains(domains) => domains.iter().all(valid),
        Op::CompareAndSwapMany(d, swaps) => valid(d) && swaps.iter().all(|(k, ..)| valid(k)),
        Op::CompareAndSwapEach(groups) => groups
            .iter()
            .all(|(d, swaps)| valid(d) && swaps.iter().all(|(k, ..)| valid(k))),
        Op::GetEach(entries) => entries.iter().all(|(d, k)| valid(d) && valid(k)),
        Op::GetMany(d, keys) => valid(d) && keys.iter().all(valid),
    }
}

/// Whether `op` names one key twice where that is refused ([`Op::CompareAndSwapMany`]).
fn names_a_key_twice(op: &Op) -> bool {
    match op {
        Op::CompareAndSwapMany(_, swaps) => {
            let keys: BTreeSet<&String> = swaps.iter().map(|(k, ..)| k).collect();
            keys.len() != swaps.len()
        }
        Op::CompareAndSwapEach(groups) => groups.iter().any(|(_, swaps)| {
            let keys: BTreeSet<&String> = swaps.iter().map(|(k, ..)| k).collect();
            keys.len() != swaps.len()
        }),
        _ => false,
    }
}

/// How the archive must refuse an op, changing nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// With [`Error::InvalidName`].
    InvalidName,
    /// With [`Error::DuplicateKey`].
    DuplicateKey,
    /// With either: the op breaks both rules, and which the archive checks first is its own.
    InvalidNameOrDuplicateKey,
}

impl Refusal {
    /// The refusal `op` must meet, if any.
    fn of(op: &Op) -> Option<Refusal> {
        match (names_are_valid(op), names_a_key_twice(op)) {
            (true, false) => None,
            (false, false) => Some(Refusal::InvalidName),
            (true, true) => Some(Refusal::DuplicateKey),
            (false, true) => Some(Refusal::InvalidNameOrDuplicateKey),
        }
    }

    /// Whether `error` is this refusal.
    fn accepts(self, error: &Error) -> bool {
        match error {
            Error::InvalidName { .. } => self != Refusal::DuplicateKey,
            Error::DuplicateKey { .. } => self != Refusal::InvalidName,
            _ => false,
        }
    }
}

fn model_get(model: &Model, d: &str, k: &str) -> Option<Vec<u8>> {
    model.get(d).and_then(|keys| keys.get(k)).cloned()
}

fn model_set(model: &mut Model, d: &str, k: &str, v: &[u8]) {
    model
        .entry(d.to_owned())
        .or_default()
        .insert(k.to_owned(), v.to_vec());
}

/// Removes a key, and its domain with its last key; whether the key existed.
fn model_remove(model: &mut Model, d: &str, k: &str) -> bool {
    let existed = model.get_mut(d).and_then(|keys| keys.remove(k)).is_some();
    if model.get(d).is_some_and(BTreeMap::is_empty) {
        model.remove(d);
    }
    existed
}

/// The names a listing of the model gives: its domains, or the keys of `domain`.
fn model_names<'a>(model: &'a Model, domain: Option<&str>) -> Vec<&'a String> {
    match domain {
        None => model.keys().collect(),
        Some(d) => model
            .get(d)
            .map(|keys| keys.keys().collect())
            .unwrap_or_default(),
    }
}

/// Applies `op` to the model, returning what the archive must answer, rendered for comparison;
/// or how it must refuse the op (and the model is unchanged: a batch with one bad name anywhere
/// fails whole).
fn apply_to_model(model: &mut Model, op: &Op) -> Result<String, Refusal> {
    if let Some(refusal) = Refusal::of(op) {
        return Err(refusal);
    }
    Ok(match op {
        Op::Get(d, k) => format!("{:?}", model_get(model, d, k)),
        Op::Set(d, k, v) => {
            model_set(model, d, k, v);
            "()".to_owned()
        }
        Op::Has(d, k) => format!("{}", model_get(model, d, k).is_some()),
        Op::Remove(d, k) => format!("{}", model_remove(model, d, k)),
        Op::HasDomain(d) => format!("{}", model.contains_key(d)),
        Op::RemoveDomain(d) => format!("{}", model.remove(d).is_some()),
        Op::CompareAndSwap(d, k, expected, new) => {
            let swapped = model_get(model, d, k) == *expected;
            if swapped {
                model_put(model, d, k, new.as_deref());
            }
            format!("{swapped}")
        }
        Op::ListDomains => format!("{:?}", model_names(model, None)),
        Op::ListKeys(d) => format!("{:?}", model_names(model, Some(d))),
        Op::ListPaged(d, _) => format!("{:?}", model_names(model, d.as_deref())),
        Op::Reopen => "()".to_owned(),
        Op::SetMany(entries) => {
            for (d, k, v) in entries {
                model_set(model, d, k, v);
            }
            "()".to_owned()
        }
        Op::RemoveMany(entries) => {
            let removed = entries.iter().filter(|(d, k)| model_remove(model, d, k));
            format!("{}", removed.count())
        }
        Op::Update(d, k, edit) => {
            let after = match edit.apply(model_get(model, d, k).as_deref()) {
                Update::Keep => model_get(model, d, k),
                Update::Set(value) => Some(value),
                Update::Remove => None,
            };
            model_put(model, d, k, after.as_deref());
            format!("{after:?}")
        }
        Op::RemoveDomains(domains) => {
            let removed = domains.iter().filter(|d| model.remove(*d).is_some());
            format!("{}", removed.count())
        }
        Op::CompareAndSwapMany(d, swaps) => format!("{}", model_swap_many(model, d, swaps)),
        Op::CompareAndSwapEach(groups) => format!("{:?}", model_swap_each(model, groups)),
        Op::GetEach(entries) => format!("{:?}", model_get_each(model, entries)),
        Op::GetMany(d, keys) => {
            let values: Vec<Option<Vec<u8>>> =
                keys.iter().map(|k| model_get(model, d, k)).collect();
            format!("{values:?}")
        }
    })
}

/// [`Op::CompareAndSwapEach`] in the model: whether each group swapped.
fn model_swap_each(model: &mut Model, groups: &[(String, Vec<OwnedSwap>)]) -> Vec<bool> {
    groups
        .iter()
        .map(|(d, swaps)| model_swap_many(model, d, swaps))
        .collect()
}

/// [`Op::GetEach`] in the model: each entry's value.
fn model_get_each(model: &Model, entries: &[(String, String)]) -> Vec<Option<Vec<u8>>> {
    entries
        .iter()
        .map(|(d, k)| model_get(model, d, k))
        .collect()
}

/// [`Op::CompareAndSwapEach`] on the archive.
fn archive_swap_each(
    archive: &dyn Archive,
    groups: &[(String, Vec<OwnedSwap>)],
) -> crate::Result<Vec<bool>> {
    let swaps: Vec<Vec<Swap<'_>>> = groups
        .iter()
        .map(|(_, swaps)| {
            swaps
                .iter()
                .map(|(k, expected, new)| (k.as_str(), expected.as_deref(), new.as_deref()))
                .collect()
        })
        .collect();
    let groups: Vec<SwapGroup<'_>> = groups
        .iter()
        .zip(&swaps)
        .map(|((d, _), swaps)| (d.as_str(), swaps.as_slice()))
        .collect();
    archive.compare_and_swap_each(&groups)
}

/// [`Op::CompareAndSwapMany`] on the archive.
fn archive_swap_many(archive: &dyn Archive, d: &str, swaps: &[OwnedSwap]) -> crate::Result<bool> {
    let swaps: Vec<Swap<'_>> = swaps
        .iter()
        .map(|(k, expected, new)| (k.as_str(), expected.as_deref(), new.as_deref()))
        .collect();
    archive.compare_and_swap_many(d, &swaps)
}

/// [`Op::GetMany`] on the archive.
fn archive_get_many(
    archive: &dyn Archive,
    d: &str,
    keys: &[String],
) -> crate::error::Result<Vec<Option<Vec<u8>>>> {
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    archive.get_many(d, &keys)
}

/// [`Op::GetEach`] on the archive.
fn archive_get_each(
    archive: &dyn Archive,
    entries: &[(String, String)],
) -> crate::Result<Vec<Option<Vec<u8>>>> {
    let entries: Vec<(&str, &str)> = entries
        .iter()
        .map(|(d, k)| (d.as_str(), k.as_str()))
        .collect();
    archive.get_each(&entries)
}

/// A compare-and-swap of several keys of `d` in the model: whether it swapped.
fn model_swap_many(model: &mut Model, d: &str, swaps: &[OwnedSwap]) -> bool {
    let swapped = swaps
        .iter()
        .all(|(k, expected, _)| model_get(model, d, k) == *expected);
    if swapped {
        for (k, _, new) in swaps {
            model_put(model, d, k, new.as_deref());
        }
    }
    swapped
}

/// Stores `value` under `d`/`k` in the model, or removes the key for `None`.
fn model_put(model: &mut Model, d: &str, k: &str, value: Option<&[u8]>) {
    match value {
        Some(v) => model_set(model, d, k, v),
        None => {
            model_remove(model, d, k);
        }
    }
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

/// Applies `op` to the archive and renders its answer like [`apply_to_model`] does. A paged
/// listing may take at most `max_pages` pages.
pub(super) fn apply_to_archive(
    archive: &dyn Archive,
    op: &Op,
    max_pages: usize,
) -> crate::Result<String> {
    Ok(match op {
        Op::Get(d, k) => format!("{:?}", archive.get(d, k)?),
        Op::Set(d, k, v) => format!("{:?}", archive.set(d, k, v)?),
        Op::Has(d, k) => format!("{}", archive.has(d, k)?),
        Op::Remove(d, k) => format!("{}", archive.remove(d, k)?),
        Op::HasDomain(d) => format!("{}", archive.has_domain(d)?),
        Op::RemoveDomain(d) => format!("{}", archive.remove_domain(d)?),
        Op::CompareAndSwap(d, k, e, n) => {
            let swapped = archive.compare_and_swap(d, k, e.as_deref(), n.as_deref())?;
            format!("{swapped}")
        }
        Op::ListDomains => format!(
            "{:?}",
            sorted(archive.domains().collect::<crate::Result<_>>()?)
        ),
        Op::ListKeys(d) => format!(
            "{:?}",
            sorted(archive.keys(d).collect::<crate::Result<_>>()?)
        ),
        Op::ListPaged(d, page_size) => list_paged(archive, d.as_deref(), *page_size, max_pages)?,
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
        Op::Update(d, k, edit) => {
            let edit = edit.clone();
            let change = Box::new(move |current: Option<&[u8]>| Ok(edit.apply(current)));
            format!("{:?}", archive.update(d, k, change)?)
        }
        Op::CompareAndSwapMany(d, swaps) => format!("{}", archive_swap_many(archive, d, swaps)?),
        Op::CompareAndSwapEach(groups) => format!("{:?}", archive_swap_each(archive, groups)?),
        Op::GetEach(entries) => format!("{:?}", archive_get_each(archive, entries)?),
        Op::GetMany(d, keys) => format!("{:?}", archive_get_many(archive, d, keys)?),
    })
}

/// Lists the domains (`domain` `None`) or one domain's keys in pages of `page_size`, and renders
/// the names like [`apply_to_model`] does, or else what broke the paging rules: a page over the
/// size (a size of 0 means 1), a name listed twice, or no end within `max_pages` pages.
fn list_paged(
    archive: &dyn Archive,
    domain: Option<&str>,
    page_size: usize,
    max_pages: usize,
) -> crate::Result<String> {
    let mut seen = BTreeSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..max_pages {
        let page = match domain {
            None => archive.list_domains(cursor.as_deref(), page_size)?,
            Some(domain) => archive.list_keys(domain, cursor.as_deref(), page_size)?,
        };
        if page.names.len() > page_size.max(1) {
            let len = page.names.len();
            return Ok(format!(
                "a page of {len} names over the page size {page_size}"
            ));
        }
        for name in page.names {
            if !seen.insert(name.clone()) {
                return Ok(format!("paged listing repeated {name:?}"));
            }
        }
        cursor = page.cursor;
        if cursor.is_none() {
            return Ok(format!("{:?}", seen.iter().collect::<Vec<_>>()));
        }
    }
    Ok(format!(
        "paged listing does not end within {max_pages} pages"
    ))
}

/// Applies `op` to both `archive` and `model`, and checks that the archive answered as the model
/// did and now holds exactly the model's data. An op with an invalid name must fail with
/// [`Error::InvalidName`], and a swap naming a key twice with [`Error::DuplicateKey`], changing
/// nothing. [`Op::Reopen`] is only checked here; reopening is
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
/// check_step(&archive, &mut model, &Op::ListPaged(Some("d".into()), 1))?;
/// assert_eq!(model["d"]["k"], b"v");
/// # Ok::<(), String>(())
/// ```
pub fn check_step(archive: &dyn Archive, model: &mut Model, op: &Op) -> Result<(), String> {
    // Every page but the last holds at least one name, so a correct listing of the model's
    // names ends within one page more than there are names.
    let max_pages = match op {
        Op::ListPaged(d, _) => model_names(model, d.as_deref()).len() + 1,
        _ => 0,
    };
    let expected = apply_to_model(model, op);
    let got = apply_to_archive(archive, op, max_pages);
    match (expected, got) {
        (Ok(expected), Ok(got)) if expected == got => {}
        (Err(refusal), Err(error)) if refusal.accepts(&error) => {}
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
