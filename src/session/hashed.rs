//! Session ids hashed at rest: the archive adapter behind
//! [`SessionsBuilder::hash_ids_at_rest`](crate::session::SessionsBuilder::hash_ids_at_rest).
//!
//! Every name that `Sessions` hands the archive and that is shaped like a session id (a session's
//! domain, and the index entries naming it) is replaced by the lowercase hex SHA-256 of the id,
//! 64 characters. What is stored therefore never holds a usable cookie value: a SHA-256 cannot be
//! turned back into the id, and an id carries 122 random bits, so it cannot be guessed from its
//! hash either. Every other name (`session.json`, `expiry-<n>`, …) passes unchanged, and so do
//! the hashes themselves, which is how the sweep, finding a hash in the index, reaches the domain.

use std::borrow::Cow;
use std::time::SystemTime;

use super::id::{SessionId, hashed_name};
use crate::archive::{
    Archive, Blocking, Change, GetManyFuture, Page, Swap, SwapFuture, SwapGroup, UpdateFuture,
};
use crate::error::Result;

/// Wraps the archive of a `Sessions` that hashes ids at rest.
pub(super) struct HashedIds<A> {
    inner: A,
}

impl<A: Archive> HashedIds<A> {
    pub(super) fn new(inner: A) -> Self {
        HashedIds { inner }
    }
}

/// The name stored for `name`: its hash if it is shaped like a session id, itself otherwise.
fn stored(name: &str) -> Cow<'_, str> {
    if SessionId::parse(name).is_none() {
        return Cow::Borrowed(name);
    }
    Cow::Owned(hashed_name(name))
}

/// The names stored for `keys`, owned where hashed (see [`stored`]).
fn stored_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> Vec<Cow<'a, str>> {
    keys.into_iter().map(stored).collect()
}

/// `swaps` with each key as `keys` (its stored name) has it.
fn with_keys<'a, 'b: 'a>(swaps: &[Swap<'b>], keys: &'a [Cow<'_, str>]) -> Vec<Swap<'a>> {
    swaps
        .iter()
        .zip(keys)
        .map(|((_, expected, new), key)| (key.as_ref(), *expected, *new))
        .collect()
}

#[deny(clippy::missing_trait_methods)]
impl<A: Archive> Archive for HashedIds<A> {
    fn get(&self, domain: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.inner.get(&stored(domain), &stored(key))
    }

    fn set(&self, domain: &str, key: &str, value: &[u8]) -> Result<()> {
        self.inner.set(&stored(domain), &stored(key), value)
    }

    fn has(&self, domain: &str, key: &str) -> Result<bool> {
        self.inner.has(&stored(domain), &stored(key))
    }

    fn remove(&self, domain: &str, key: &str) -> Result<bool> {
        self.inner.remove(&stored(domain), &stored(key))
    }

    fn has_domain(&self, domain: &str) -> Result<bool> {
        self.inner.has_domain(&stored(domain))
    }

    fn remove_domain(&self, domain: &str) -> Result<bool> {
        self.inner.remove_domain(&stored(domain))
    }

    fn compare_and_swap(
        &self,
        domain: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        self.inner
            .compare_and_swap(&stored(domain), &stored(key), expected, new)
    }

    fn compare_and_swap_many(&self, domain: &str, swaps: &[Swap<'_>]) -> Result<bool> {
        let keys = stored_keys(swaps.iter().map(|(key, _, _)| *key));
        self.inner
            .compare_and_swap_many(&stored(domain), &with_keys(swaps, &keys))
    }

    fn compare_and_swap_each(&self, groups: &[SwapGroup<'_>]) -> Result<Vec<bool>> {
        let names: Vec<(Cow<'_, str>, Vec<Cow<'_, str>>)> = groups
            .iter()
            .map(|(domain, swaps)| {
                let keys = stored_keys(swaps.iter().map(|(key, _, _)| *key));
                (stored(domain), keys)
            })
            .collect();
        let swaps: Vec<Vec<Swap<'_>>> = groups
            .iter()
            .zip(&names)
            .map(|((_, swaps), (_, keys))| with_keys(swaps, keys))
            .collect();
        let groups: Vec<SwapGroup<'_>> = names
            .iter()
            .zip(&swaps)
            .map(|((domain, _), swaps)| (domain.as_ref(), swaps.as_slice()))
            .collect();
        self.inner.compare_and_swap_each(&groups)
    }

    fn get_each(&self, entries: &[(&str, &str)]) -> Result<Vec<Option<Vec<u8>>>> {
        let names: Vec<_> = entries
            .iter()
            .map(|(domain, key)| (stored(domain), stored(key)))
            .collect();
        let entries: Vec<(&str, &str)> = names
            .iter()
            .map(|(domain, key)| (domain.as_ref(), key.as_ref()))
            .collect();
        self.inner.get_each(&entries)
    }

    fn get_many(&self, domain: &str, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let keys = stored_keys(keys.iter().copied());
        let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
        self.inner.get_many(&stored(domain), &keys)
    }

    fn get_many_async(&self, domain: &str, keys: &[&str]) -> Option<GetManyFuture> {
        let keys = stored_keys(keys.iter().copied());
        let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
        self.inner.get_many_async(&stored(domain), &keys)
    }

    fn compare_and_swap_many_async(&self, domain: &str, swaps: &[Swap<'_>]) -> Option<SwapFuture> {
        let keys = stored_keys(swaps.iter().map(|(key, _, _)| *key));
        self.inner
            .compare_and_swap_many_async(&stored(domain), &with_keys(swaps, &keys))
    }

    fn update(&self, domain: &str, key: &str, change: Change) -> Result<Option<Vec<u8>>> {
        self.inner.update(&stored(domain), &stored(key), change)
    }

    fn update_async(&self, domain: &str, key: &str, change: Change) -> UpdateFuture {
        self.inner
            .update_async(&stored(domain), &stored(key), change)
    }

    fn list_domains(&self, cursor: Option<&str>, limit: usize) -> Result<Page> {
        self.inner.list_domains(cursor, limit)
    }

    fn list_keys(&self, domain: &str, cursor: Option<&str>, limit: usize) -> Result<Page> {
        self.inner.list_keys(&stored(domain), cursor, limit)
    }

    fn set_many(&self, entries: &[(&str, &str, &[u8])]) -> Result<()> {
        let names: Vec<_> = entries
            .iter()
            .map(|(domain, key, _)| (stored(domain), stored(key)))
            .collect();
        let entries: Vec<(&str, &str, &[u8])> = names
            .iter()
            .zip(entries)
            .map(|((domain, key), (_, _, value))| (domain.as_ref(), key.as_ref(), *value))
            .collect();
        self.inner.set_many(&entries)
    }

    fn remove_many(&self, entries: &[(&str, &str)]) -> Result<usize> {
        let names: Vec<_> = entries
            .iter()
            .map(|(domain, key)| (stored(domain), stored(key)))
            .collect();
        let entries: Vec<(&str, &str)> = names
            .iter()
            .map(|(domain, key)| (domain.as_ref(), key.as_ref()))
            .collect();
        self.inner.remove_many(&entries)
    }

    fn remove_domains(&self, domains: &[&str]) -> Result<usize> {
        let names: Vec<_> = domains.iter().map(|domain| stored(domain)).collect();
        let domains: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
        self.inner.remove_domains(&domains)
    }

    fn expire_domain(&self, domain: &str, at: SystemTime) -> Result<bool> {
        self.inner.expire_domain(&stored(domain), at)
    }

    fn blocking(&self) -> Blocking {
        self.inner.blocking()
    }
}

#[cfg(test)]
mod tests {
    use super::{HashedIds, stored};
    use crate::archive::memory::MemoryArchive;
    use crate::archive::{Archive, ArchiveExt};
    use crate::session::id::is_hashed;

    const ID: &str = "0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2";

    #[test]
    fn ids_are_stored_as_their_sha256_and_other_names_as_they_are() {
        // The SHA-256 of the id, computed independently (`printf %s ID | sha256sum`).
        assert_eq!(
            stored(ID),
            "7bb27fbfbca4a6a86f7836a4cba7a514f5d0629f7478dd7043e8c22955677e56"
        );
        assert!(is_hashed(&stored(ID)));
        assert_eq!(stored("session.json"), "session.json");
        assert_eq!(stored("expiry-42"), "expiry-42");
        let hash = stored(ID).into_owned();
        assert_eq!(stored(&hash), hash, "a hash passes unchanged");
    }

    #[test]
    fn nothing_stored_names_the_id() {
        let archive = HashedIds::new(MemoryArchive::new());
        archive.set(ID, "session.json", b"{}").unwrap();
        archive.set("expiry-1", ID, b"").unwrap();
        assert_eq!(archive.get(ID, "session.json").unwrap().unwrap(), b"{}");
        for domain in archive.inner.domains() {
            let domain = domain.unwrap();
            assert!(!domain.contains(ID));
            for key in archive.inner.keys(&domain) {
                assert!(!key.unwrap().contains(ID));
            }
        }
        assert!(archive.remove_domain(ID).unwrap());
        assert!(!archive.has_domain(ID).unwrap());
    }
}
