//! [`MemoryArchive`]: everything in a map in this process's memory.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;

use parking_lot::RwLock;

use crate::archive::{
    Archive, Blocking, Page, Swap, SwapGroup, check_groups, check_keys, check_swaps,
};
use crate::error::Result;
use crate::name::{validate_domain, validate_entry};

type Domains = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// An archive held in memory, under one reader-writer lock.
///
/// It is the reference backend: the model the others are tested against, and the quickest for
/// tests. Nothing survives the process. Domains are removed together with their last key, so the
/// map never holds an empty domain.
///
/// # Guarantees
///
/// - Each single-item call holds the lock for its whole work, so it is atomic against every other
///   thread of this process, [`compare_and_swap`](Archive::compare_and_swap) included. Nothing is
///   shared with other processes.
/// - [`compare_and_swap_many`](Archive::compare_and_swap_many) compares every key and writes
///   every change under one hold of the lock, so no other thread sees some of its keys changed
///   and others not; [`compare_and_swap_each`](Archive::compare_and_swap_each) does all its
///   groups under one hold, and [`get_each`](Archive::get_each) reads all its entries under one.
/// - Batches ([`set_many`](Archive::set_many) and the others) are the trait's default bodies, one
///   call per item, so another thread may see a batch half applied.
/// - No call waits on I/O ([`blocking`](Archive::blocking) is [`Never`](Blocking::Never)), so
///   async callers run every call in place.
///
/// # Examples
///
/// ```
/// use session_archive::{Archive, MemoryArchive};
///
/// let archive = MemoryArchive::new();
/// archive.set("0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2", "session.json", br#"{"Name":"world"}"#)?;
/// assert!(archive.has_domain("0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2")?);
/// # Ok::<(), session_archive::Error>(())
/// ```
#[derive(Default)]
pub struct MemoryArchive {
    domains: RwLock<Domains>,
}

impl MemoryArchive {
    /// Creates an empty archive.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, MemoryArchive};
    ///
    /// assert!(!MemoryArchive::new().has_domain("any")?);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn new() -> Self {
        Self::default()
    }
}

impl fmt::Debug for MemoryArchive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let domains = self.domains.read();
        f.debug_struct("MemoryArchive")
            .field("domains", &domains.len())
            .field("keys", &domains.values().map(BTreeMap::len).sum::<usize>())
            .finish()
    }
}

/// Takes up to `limit` names after `cursor` from an ordered map.
fn page<'a, V: 'a>(map: &'a BTreeMap<String, V>, cursor: Option<&str>, limit: usize) -> Page {
    let limit = limit.max(1);
    let start = cursor.map_or(Bound::Unbounded, Bound::Excluded);
    let names: Vec<String> = map
        .range::<str, _>((start, Bound::Unbounded))
        .take(limit)
        .map(|(name, _)| name.clone())
        .collect();
    Page::ordered(names, limit)
}

/// Removes one key, and its domain with it when it was the last; returns whether it existed.
fn remove_key(domains: &mut Domains, domain: &str, key: &str) -> bool {
    let Some(keys) = domains.get_mut(domain) else {
        return false;
    };
    let existed = keys.remove(key).is_some();
    if keys.is_empty() {
        domains.remove(domain);
    }
    existed
}

impl Archive for MemoryArchive {
    fn get(&self, domain: &str, key: &str) -> Result<Option<Vec<u8>>> {
        validate_entry(domain, key)?;
        Ok(self
            .domains
            .read()
            .get(domain)
            .and_then(|keys| keys.get(key))
            .cloned())
    }

    fn set(&self, domain: &str, key: &str, value: &[u8]) -> Result<()> {
        validate_entry(domain, key)?;
        self.domains
            .write()
            .entry(domain.to_owned())
            .or_default()
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn has(&self, domain: &str, key: &str) -> Result<bool> {
        validate_entry(domain, key)?;
        Ok(self
            .domains
            .read()
            .get(domain)
            .is_some_and(|keys| keys.contains_key(key)))
    }

    fn remove(&self, domain: &str, key: &str) -> Result<bool> {
        validate_entry(domain, key)?;
        Ok(remove_key(&mut self.domains.write(), domain, key))
    }

    fn has_domain(&self, domain: &str) -> Result<bool> {
        validate_domain(domain)?;
        Ok(self.domains.read().contains_key(domain))
    }

    fn remove_domain(&self, domain: &str) -> Result<bool> {
        validate_domain(domain)?;
        Ok(self.domains.write().remove(domain).is_some())
    }

    /// One key's [`compare_and_swap_many`](Archive::compare_and_swap_many).
    fn compare_and_swap(
        &self,
        domain: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        self.compare_and_swap_many(domain, &[(key, expected, new)])
    }

    /// Compares every key, then writes every change, under one hold of the write lock.
    fn compare_and_swap_many(&self, domain: &str, swaps: &[Swap<'_>]) -> Result<bool> {
        check_swaps(domain, swaps)?;
        Ok(swap_group(&mut self.domains.write(), domain, swaps))
    }

    /// Every group under one hold of the write lock: no other thread sees some groups swapped
    /// and not others.
    fn compare_and_swap_each(&self, groups: &[SwapGroup<'_>]) -> Result<Vec<bool>> {
        check_groups(groups)?;
        let mut domains = self.domains.write();
        Ok(groups
            .iter()
            .map(|(domain, swaps)| swap_group(&mut domains, domain, swaps))
            .collect())
    }

    /// Every value under one hold of the read lock: one snapshot.
    fn get_each(&self, entries: &[(&str, &str)]) -> Result<Vec<Option<Vec<u8>>>> {
        for (domain, key) in entries {
            validate_entry(domain, key)?;
        }
        let domains = self.domains.read();
        Ok(entries
            .iter()
            .map(|(domain, key)| {
                domains
                    .get(*domain)
                    .and_then(|keys| keys.get(*key))
                    .cloned()
            })
            .collect())
    }

    /// One [`get_each`](Archive::get_each), which reads its entries at one moment here.
    fn get_many(&self, domain: &str, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        check_keys(domain, keys)?;
        let entries: Vec<(&str, &str)> = keys.iter().map(|key| (domain, *key)).collect();
        self.get_each(&entries)
    }

    fn list_domains(&self, cursor: Option<&str>, limit: usize) -> Result<Page> {
        Ok(page(&self.domains.read(), cursor, limit))
    }

    fn list_keys(&self, domain: &str, cursor: Option<&str>, limit: usize) -> Result<Page> {
        validate_domain(domain)?;
        Ok(self
            .domains
            .read()
            .get(domain)
            .map(|keys| page(keys, cursor, limit))
            .unwrap_or_default())
    }

    /// Never: every call is a map operation under the lock, which no call holds for longer
    /// than its own work.
    fn blocking(&self) -> Blocking {
        Blocking::Never
    }
}

/// One domain's [`compare_and_swap_many`](Archive::compare_and_swap_many), its swaps checked,
/// under the write lock held by the caller: compares every key, then writes every change.
fn swap_group(domains: &mut Domains, domain: &str, swaps: &[Swap<'_>]) -> bool {
    {
        let keys = domains.get(domain);
        let current = |key: &str| keys.and_then(|keys| keys.get(key)).map(Vec::as_slice);
        if swaps
            .iter()
            .any(|&(key, expected, _)| current(key) != expected)
        {
            return false;
        }
    }
    for &(key, expected, new) in swaps {
        if expected == new {
            continue;
        }
        match new {
            Some(value) => {
                domains
                    .entry(domain.to_owned())
                    .or_default()
                    .insert(key.to_owned(), value.to_vec());
            }
            None => {
                remove_key(domains, domain, key);
            }
        }
    }
    true
}
