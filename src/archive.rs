//! The [`Archive`] trait, a two-layer byte store (`domain -> key -> bytes`), and its backends.
//!
//! Each backend lives in a module named after where its data lives, beside its builder and its
//! `DEFAULT_*` settings:
//!
//! | module | archive | feature | where the data lives |
//! |---|---|---|---|
//! | [`memory`] | [`MemoryArchive`](memory::MemoryArchive) | always | a map in this process |
//! | [`redb`] | [`RedbArchive`](redb::RedbArchive) | `archive-redb` | one redb file, the embedded default |
//! | [`dir`] | [`DirArchive`](dir::DirArchive) | `archive-dir` (Unix) | the original `<root>/<domain>/<key>` tree |
//! | [`redis`] | [`RedisArchive`](redis::RedisArchive) | `archive-redis` | a Redis or Valkey server shared by many app instances |
//! | [`postgres`] | [`PostgresArchive`](postgres::PostgresArchive) | `archive-postgres` | a table in a PostgreSQL database shared by many app instances |
//!
//! [`ArchiveExt`] walks every domain or key without paging by hand. A backend of your own
//! implements [`Archive`] (its documentation holds a complete one) and checks itself against the
//! [`conformance`](crate::conformance) suite.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::Result;

#[cfg(any(test, feature = "conformance", feature = "archive-postgres"))]
pub(crate) mod block_on;
#[cfg(all(feature = "archive-dir", unix))]
pub mod dir;
pub mod memory;
#[cfg(feature = "archive-postgres")]
pub mod postgres;
#[cfg(feature = "archive-redb")]
pub mod redb;
#[cfg(feature = "archive-redis")]
pub mod redis;

/// One page of a listing: some names, and the cursor that continues after them.
///
/// Returned by [`Archive::list_domains`] and [`Archive::list_keys`]. Most callers want the
/// iterators of [`ArchiveExt`] instead, which walk the pages for them.
///
/// # Examples
///
/// ```
/// use session_archive::{Archive, MemoryArchive};
///
/// let archive = MemoryArchive::new();
/// for d in ["a", "b", "c"] {
///     archive.set(d, "k", b"")?;
/// }
/// let first = archive.list_domains(None, 2)?;
/// assert_eq!(first.names, ["a", "b"]);
/// let second = archive.list_domains(first.cursor.as_deref(), 2)?;
/// assert_eq!(second.names, ["c"]);
/// assert_eq!(second.cursor, None);
/// # Ok::<(), session_archive::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// The names on this page. It may be empty even when `cursor` is `Some`.
    pub names: Vec<String>,
    /// Where the next page starts, or `None` when the listing is complete. Opaque to callers: pass
    /// it back unchanged.
    pub cursor: Option<String>,
}

impl Page {
    /// The page of `names`, taken in ascending order after the caller's cursor and at most
    /// `limit` of them (a `limit` of 0 counts as 1): its cursor is its last name when the page is
    /// full, since more may follow, and `None` when it is not. Backends that list in order build
    /// their pages with this.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::archive::Page;
    ///
    /// let full = Page::ordered(vec!["a".into(), "b".into()], 2);
    /// assert_eq!(full.cursor.as_deref(), Some("b"));
    /// let last = Page::ordered(vec!["c".into()], 2);
    /// assert_eq!(last.cursor, None);
    /// ```
    pub fn ordered(names: Vec<String>, limit: usize) -> Page {
        let cursor = (names.len() >= limit.max(1))
            .then(|| names.last().cloned())
            .flatten();
        Page { names, cursor }
    }
}

/// A two-layer byte store: domains hold keys, keys hold bytes.
///
/// This is the storage contract under [`Sessions`](crate::Sessions) (one domain per session, its
/// state under the key `session.json`), and it is small enough to implement for any store.
///
/// # Contract
///
/// - **Names.** Every domain and key must pass the [name rule](crate::name::validate_name). An
///   invalid name makes every method return [`Error::InvalidName`](crate::Error::InvalidName)
///   before anything is read or written.
/// - **Absence is not an error.** [`get`](Archive::get) returns `Ok(None)` for a missing key;
///   [`remove`](Archive::remove) and [`remove_domain`](Archive::remove_domain) return
///   `Ok(false)` when there was nothing to remove.
/// - **A domain exists exactly while it holds at least one key.** [`set`](Archive::set) creates
///   it; removing its last key removes it. There are no empty domains.
/// - **Values** are arbitrary bytes; the empty value is a value, distinct from absence.
/// - **Atomicity.** Each call is atomic: a reader sees a value whole or not at all, never a torn
///   one. [`remove_domain`](Archive::remove_domain) removes the whole domain at once where the
///   backend can (each backend documents this). [`compare_and_swap`](Archive::compare_and_swap) is
///   what loses-no-update guarantees are built on; [`update`](Archive::update) is the
///   read-modify-write on top of it, which a backend with a serial writer runs in place.
///   [`compare_and_swap_many`](Archive::compare_and_swap_many) swaps several keys of one domain
///   all together or not at all.
/// - **Durability.** When a write returns `Ok`, it is as durable as the backend promises (each
///   backend documents this; the persistent ones default to durable).
/// - **Batches.** [`set_many`](Archive::set_many), [`remove_many`](Archive::remove_many) and
///   [`remove_domains`](Archive::remove_domains) check every name before touching anything. Their
///   default bodies loop over the single-item methods; backends override them to apply a batch in
///   one transaction.
/// - **Blocking.** [`blocking`](Archive::blocking) says which calls may keep the caller waiting
///   (on I/O, or on another thread's commit); async callers run those off the executor. The
///   default says every call may, which is always safe.
/// - **Listing.** [`list_domains`](Archive::list_domains) and [`list_keys`](Archive::list_keys)
///   page through names without loading values, so a million domains never sit in one `Vec`.
///   While the archive is not modified, a full walk returns each name exactly once. Under
///   concurrent modification it returns every name that exists throughout the walk at least once.
///   The built-in local backends return names in ascending byte order.
///
/// `Arc<A>` and `Box<A>` forward every method, so `Arc<dyn Archive>` works wherever an
/// archive is expected.
///
/// # Implementing
///
/// A complete backend over a `Mutex<BTreeMap>`. Real backends should pass the
/// [`conformance`](crate::conformance) suite (feature `conformance`).
///
/// ```
/// use std::collections::BTreeMap;
/// use std::ops::Bound;
/// use std::sync::Mutex;
/// use session_archive::archive::{Archive, Page, Swap, check_swaps};
/// use session_archive::name::{validate_domain, validate_entry};
/// use session_archive::Result;
///
/// #[derive(Default)]
/// struct Toy(Mutex<BTreeMap<(String, String), Vec<u8>>>);
///
/// impl Toy {
///     fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Vec<u8>>> {
///         self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
///     }
/// }
///
/// fn entry(domain: &str, key: &str) -> (String, String) {
///     (domain.to_owned(), key.to_owned())
/// }
///
/// impl Archive for Toy {
///     fn get(&self, domain: &str, key: &str) -> Result<Option<Vec<u8>>> {
///         validate_entry(domain, key)?;
///         Ok(self.map().get(&entry(domain, key)).cloned())
///     }
///     fn set(&self, domain: &str, key: &str, value: &[u8]) -> Result<()> {
///         validate_entry(domain, key)?;
///         self.map().insert(entry(domain, key), value.to_vec());
///         Ok(())
///     }
///     fn has(&self, domain: &str, key: &str) -> Result<bool> {
///         validate_entry(domain, key)?;
///         Ok(self.map().contains_key(&entry(domain, key)))
///     }
///     fn remove(&self, domain: &str, key: &str) -> Result<bool> {
///         validate_entry(domain, key)?;
///         Ok(self.map().remove(&entry(domain, key)).is_some())
///     }
///     fn has_domain(&self, domain: &str) -> Result<bool> {
///         validate_domain(domain)?;
///         Ok(self.map().keys().any(|(d, _)| d == domain))
///     }
///     fn remove_domain(&self, domain: &str) -> Result<bool> {
///         validate_domain(domain)?;
///         let mut map = self.map();
///         let before = map.len();
///         map.retain(|(d, _), _| d != domain);
///         Ok(map.len() != before)
///     }
///     fn compare_and_swap(
///         &self,
///         domain: &str,
///         key: &str,
///         expected: Option<&[u8]>,
///         new: Option<&[u8]>,
///     ) -> Result<bool> {
///         validate_entry(domain, key)?;
///         let mut map = self.map();
///         if map.get(&entry(domain, key)).map(Vec::as_slice) != expected {
///             return Ok(false);
///         }
///         match new {
///             Some(value) => map.insert(entry(domain, key), value.to_vec()),
///             None => map.remove(&entry(domain, key)),
///         };
///         Ok(true)
///     }
///     // Every key is compared, then every one written, under one hold of the lock: all or none.
///     fn compare_and_swap_many(&self, domain: &str, swaps: &[Swap<'_>]) -> Result<bool> {
///         check_swaps(domain, swaps)?; // names and duplicates, before anything is read
///         let mut map = self.map();
///         let matches = |map: &BTreeMap<_, Vec<u8>>, &(key, expected, _): &Swap<'_>| {
///             map.get(&entry(domain, key)).map(Vec::as_slice) == expected
///         };
///         if !swaps.iter().all(|swap| matches(&map, swap)) {
///             return Ok(false);
///         }
///         for &(key, _, new) in swaps {
///             match new {
///                 Some(value) => map.insert(entry(domain, key), value.to_vec()),
///                 None => map.remove(&entry(domain, key)),
///             };
///         }
///         Ok(true)
///     }
///     fn list_domains(&self, cursor: Option<&str>, limit: usize) -> Result<Page> {
///         let mut names: Vec<String> = self.map().keys().map(|(d, _)| d.clone()).collect();
///         names.dedup();
///         names.retain(|d| cursor.is_none_or(|c| d.as_str() > c));
///         names.truncate(limit.max(1));
///         Ok(Page::ordered(names, limit))
///     }
///     fn list_keys(&self, domain: &str, cursor: Option<&str>, limit: usize) -> Result<Page> {
///         validate_domain(domain)?;
///         let map = self.map();
///         let start = match cursor {
///             Some(after) => Bound::Excluded(entry(domain, after)),
///             None => Bound::Included(entry(domain, "")),
///         };
///         let names: Vec<String> = map
///             .range((start, Bound::Unbounded))
///             .take_while(|((d, _), _)| d == domain)
///             .take(limit.max(1))
///             .map(|((_, k), _)| k.clone())
///             .collect();
///         Ok(Page::ordered(names, limit))
///     }
/// }
///
/// let toy = Toy::default();
/// toy.set("d", "k", b"v")?;
/// assert_eq!(toy.get("d", "k")?.as_deref(), Some(&b"v"[..]));
/// assert!(toy.compare_and_swap_many("d", &[("k", Some(b"v"), None), ("j", None, Some(b"w"))])?);
/// assert_eq!(toy.get("d", "j")?.as_deref(), Some(&b"w"[..]));
/// # #[cfg(feature = "conformance")]
/// session_archive::conformance::run_all(&Toy::default());
/// # Ok::<(), session_archive::Error>(())
/// ```
pub trait Archive: Send + Sync {
    /// Returns the value stored under `key` in `domain`, or `None` if there is none.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`](crate::Error::InvalidName) for a bad name; otherwise a
    /// backend error (I/O, database, network).
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, MemoryArchive};
    ///
    /// let archive = MemoryArchive::new();
    /// assert_eq!(archive.get("d", "k")?, None);
    /// archive.set("d", "k", b"v")?;
    /// assert_eq!(archive.get("d", "k")?, Some(b"v".to_vec()));
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    fn get(&self, domain: &str, key: &str) -> Result<Option<Vec<u8>>>;

    /// Stores `value` under `key` in `domain`, replacing any previous value and creating the
    /// domain if needed.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`](crate::Error::InvalidName) for a bad name (nothing is written);
    /// otherwise a backend error, after which the previous value is still intact.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, MemoryArchive};
    ///
    /// let archive = MemoryArchive::new();
    /// archive.set("d", "k", b"")?; // the empty value is a value
    /// assert!(archive.has("d", "k")?);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    fn set(&self, domain: &str, key: &str, value: &[u8]) -> Result<()>;

    /// Returns whether `key` exists in `domain`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`](crate::Error::InvalidName) for a bad name; otherwise a
    /// backend error.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, MemoryArchive};
    ///
    /// let archive = MemoryArchive::new();
    /// assert!(!archive.has("d", "k")?);
    /// archive.set("d", "k", b"v")?;
    /// assert!(archive.has("d", "k")?);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    fn has(&self, domain: &str, key: &str) -> Result<bool>;

    /// Removes `key` from `domain`, returning whether it existed. Removing the last key of a
    /// domain removes the domain.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`](crate::Error::InvalidName) for a bad name; otherwise a
    /// backend error.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, MemoryArchive};
    ///
    /// let archive = MemoryArchive::new();
    /// archive.set("d", "k", b"v")?;
    /// assert!(archive.remove("d", "k")?);
    /// assert!(!archive.remove("d", "k")?);
    /// assert!(!archive.has_domain("d")?);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    fn remove(&self, domain: &str, key: &str) -> Result<bool>;

    /// Returns whether `domain` holds at least one key.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`](crate::Error::InvalidName) for a bad name; otherwise a
    /// backend error.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, MemoryArchive};
    ///
    /// let archive = MemoryArchive::new();
    /// archive.set("ab", "k", b"v")?;
    /// assert!(archive.has_domain("ab")?);
    /// assert!(!archive.has_domain("a")?); // prefixes are other domains
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    fn has_domain(&self, domain: &str) -> Result<bool>;

    /// Removes `domain` and every key in it, returning whether it existed.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`](crate::Error::InvalidName) for a bad name; otherwise a
    /// backend error.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, MemoryArchive};
    ///
    /// let archive = MemoryArchive::new();
    /// archive.set("a", "k1", b"1")?;
    /// archive.set("a", "k2", b"2")?;
    /// archive.set("ab", "k1", b"3")?;
    /// assert!(archive.remove_domain("a")?);
    /// assert!(!archive.has_domain("a")?);
    /// assert!(archive.has_domain("ab")?); // neighbours are untouched
    /// assert!(!archive.remove_domain("a")?);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    fn remove_domain(&self, domain: &str) -> Result<bool>;

    /// Lists one page of domain names, starting after `cursor` (`None` for the first page).
    /// `limit` is the page size the caller wants; backends that cannot bound a page exactly
    /// (Redis `SCAN`) treat it as a hint. A `limit` of 0 is treated as 1.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCursor`](crate::Error::InvalidCursor) for a cursor this backend did not
    /// hand out; otherwise a backend error.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, MemoryArchive};
    ///
    /// let archive = MemoryArchive::new();
    /// archive.set("b", "k", b"")?;
    /// archive.set("a", "k", b"")?;
    /// let page = archive.list_domains(None, 10)?;
    /// assert_eq!(page.names, ["a", "b"]);
    /// assert_eq!(page.cursor, None);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    fn list_domains(&self, cursor: Option<&str>, limit: usize) -> Result<Page>;

    /// Lists one page of the keys of `domain`, starting after `cursor`. A missing domain has no
    /// keys: its listing is empty, not an error. Paging works as in
    /// [`list_domains`](Archive::list_domains).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`](crate::Error::InvalidName) for a bad domain name,
    /// [`Error::InvalidCursor`](crate::Error::InvalidCursor) for a foreign cursor; otherwise a
    /// backend error.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, MemoryArchive};
    ///
    /// let archive = MemoryArchive::new();
    /// archive.set("d", "k2", b"")?;
    /// archive.set("d", "k1", b"")?;
    /// assert_eq!(archive.list_keys("d", None, 10)?.names, ["k1", "k2"]);
    /// assert!(archive.list_keys("missing", None, 10)?.names.is_empty());
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    fn list_keys(&self, domain: &str, cursor: Option<&str>, limit: usize) -> Result<Page>;

    /// Atomically replaces the value under `key` with `new` if, and only if, it currently equals
    /// `expected`. `None` means absent on both sides: `expected: None` asks that the key does not
    /// exist, and `new: None` removes it. Returns whether the swap happened.
    ///
    /// No other write to the same key can come between the comparison and the swap, including
    /// writes from other processes where the backend is shared between processes. This is the
    /// primitive behind [`Session::update`](crate::Session::update).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`](crate::Error::InvalidName) for a bad name; otherwise a
    /// backend error, after which the value is unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, MemoryArchive};
    ///
    /// let archive = MemoryArchive::new();
    /// assert!(archive.compare_and_swap("d", "k", None, Some(b"1"))?); // create if absent
    /// assert!(!archive.compare_and_swap("d", "k", None, Some(b"2"))?); // it exists now
    /// assert!(archive.compare_and_swap("d", "k", Some(b"1"), Some(b"2"))?);
    /// assert!(archive.compare_and_swap("d", "k", Some(b"2"), None)?); // remove
    /// assert!(!archive.has_domain("d")?);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    fn compare_and_swap(
        &self,
        domain: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool>;

    /// Atomically swaps several keys of one domain: if, and only if, every key currently holds
    /// its `expected` value, stores every `new` value (`None` meaning absent on both sides, as
    /// in [`compare_and_swap`](Archive::compare_and_swap)). Returns whether the swap happened;
    /// when it did not, nothing was written. A swap whose `expected` and `new` are equal only
    /// checks its key. An empty list swaps nothing and returns `true`.
    ///
    /// No other write to any of the keys can come between the comparisons and the writes, and
    /// no reader sees some of the new values without the others (except on the directory tree,
    /// whose readers take no lock: there a reader sees each key whole, old or new, but may see
    /// one key changed before another; see [`DirArchive`](crate::DirArchive)). The session store
    /// builds on it wherever two keys of a session must change together (a state and the user it
    /// is bound to), or one may change only while another holds what was read.
    ///
    /// All the keys are in one domain, so that every backend can make the swap atomic: in one
    /// lock (memory, the directory tree), one write transaction (redb) or one script on one
    /// server (Redis). The default, for a backend that has only the single-key swap, handles at
    /// most one key and answers [`Error::Unsupported`](crate::Error::Unsupported) for more: a
    /// swap of several keys built from single-key swaps would not be atomic. Backends that can
    /// should override it; sessions need it to bind users, regenerate and revoke.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`](crate::Error::InvalidName) for a bad name and
    /// [`Error::DuplicateKey`](crate::Error::DuplicateKey) for a key named twice, before
    /// anything is read or written; [`Error::Unsupported`](crate::Error::Unsupported) as said
    /// above; otherwise a backend error, after which every value is unchanged (the directory
    /// tree: unless the process crashed, or the file system failed, part-way through changing
    /// the keys; see [`DirArchive`](crate::DirArchive)).
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, MemoryArchive};
    ///
    /// let archive = MemoryArchive::new();
    /// archive.set("d", "state", b"1")?;
    /// archive.set("d", "owner", b"alice")?;
    /// // The state changes only while alice still owns it, and both change together.
    /// let swaps = [
    ///     ("state", Some(&b"1"[..]), Some(&b"2"[..])),
    ///     ("owner", Some(&b"alice"[..]), Some(&b"bob"[..])),
    /// ];
    /// assert!(archive.compare_and_swap_many("d", &swaps)?);
    /// assert!(!archive.compare_and_swap_many("d", &swaps)?); // state is 2 now: nothing written
    /// assert_eq!(archive.get("d", "owner")?, Some(b"bob".to_vec()));
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    fn compare_and_swap_many(&self, domain: &str, swaps: &[Swap<'_>]) -> Result<bool> {
        check_swaps(domain, swaps)?;
        match swaps {
            [] => Ok(true),
            [(key, expected, new)] => self.compare_and_swap(domain, key, *expected, *new),
            _ => Err(crate::error::Error::Unsupported {
                operation: "compare_and_swap_many",
            }),
        }
    }

    /// Reads several keys of one domain as they stood at one moment: the value of each of
    /// `keys`, in order (`None` when absent). No write comes between the reads of two keys, so
    /// a [`compare_and_swap_many`](Archive::compare_and_swap_many) is seen whole or not at all.
    /// A key may be named more than once; an empty list reads nothing.
    ///
    /// It is one step on every backend of this crate, so that a caller who needs several keys
    /// (the session store reads a session's state and its record together) waits once: under
    /// one lock (memory, the directory tree), in one read transaction (redb), in one command
    /// (`HMGET` on Redis). The default, for a backend that reads one key at a time, reads every
    /// key, then all of them again, until two rounds agree: at the last read of the first such
    /// round every key held the value both rounds saw, unless a key changed and changed back
    /// between its two reads (which writers that never store one value twice rule out, as the
    /// session store's records do). After many disagreeing rounds it gives up with a backend
    /// error.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`](crate::Error::InvalidName) for a bad name, before anything is
    /// read; otherwise a backend error.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, MemoryArchive};
    ///
    /// let archive = MemoryArchive::new();
    /// archive.set("d", "state", b"1")?;
    /// archive.set("d", "owner", b"alice")?;
    /// let [state, owner, other] = archive
    ///     .get_many("d", &["state", "owner", "other"])?
    ///     .try_into()
    ///     .expect("one value per key");
    /// assert_eq!((state.as_deref(), owner.as_deref()), (Some(&b"1"[..]), Some(&b"alice"[..])));
    /// assert_eq!(other, None);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    fn get_many(&self, domain: &str, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        check_keys(domain, keys)?;
        let read = || -> Result<Vec<Option<Vec<u8>>>> {
            keys.iter().map(|key| self.get(domain, key)).collect()
        };
        let mut last = read()?;
        if keys.len() < 2 {
            return Ok(last);
        }
        for _ in 0..GET_MANY_ROUNDS {
            let again = read()?;
            if again == last {
                return Ok(last);
            }
            last = again;
        }
        Err(crate::error::Error::Backend {
            backend: "archive",
            operation: "read several keys at one moment",
            source: "the values changed between every two rounds of reads".into(),
        })
    }

    /// Compare-and-swaps of several domains in one call: each group is a domain and its swaps,
    /// applied as [`compare_and_swap_many`](Archive::compare_and_swap_many) would apply it (all
    /// of the group's keys or none), the groups in order, each seeing the groups before it.
    /// Returns, for each group, whether it swapped; a group that does not swap does not keep
    /// the others from swapping.
    ///
    /// What a backend adds is that the whole call is one step: one write transaction and one
    /// commit (redb), one hold of the lock (memory, the directory tree), one script (Redis). So
    /// a caller that ends a thousand sessions, each by a swap that expects what it read, pays
    /// one commit or one round trip, not a thousand, and another writer sees all the groups
    /// swapped or none (the directory tree's readers, which take no lock, see each key whole,
    /// as for `compare_and_swap_many`). The default, for a backend without it, calls
    /// `compare_and_swap_many` for each group in turn, so it is atomic per group only.
    ///
    /// # Errors
    ///
    /// As [`compare_and_swap_many`](Archive::compare_and_swap_many), checked for every group
    /// before anything is read or written. After a backend error, no group was swapped where
    /// the call is one transaction (redb, memory, Redis); with the default body, the groups
    /// before the one that failed may have been.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, MemoryArchive};
    ///
    /// let archive = MemoryArchive::new();
    /// archive.set("a", "state", b"1")?;
    /// archive.set("b", "state", b"2")?;
    /// // Remove each state while it is what was read: `b` changed meanwhile, so only `a` goes.
    /// archive.set("b", "state", b"3")?;
    /// let a = [("state", Some(&b"1"[..]), None)];
    /// let b = [("state", Some(&b"2"[..]), None)];
    /// assert_eq!(archive.compare_and_swap_each(&[("a", &a), ("b", &b)])?, [true, false]);
    /// assert!(!archive.has_domain("a")?);
    /// assert_eq!(archive.get("b", "state")?, Some(b"3".to_vec()));
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    fn compare_and_swap_each(&self, groups: &[SwapGroup<'_>]) -> Result<Vec<bool>> {
        check_groups(groups)?;
        groups
            .iter()
            .map(|(domain, swaps)| self.compare_and_swap_many(domain, swaps))
            .collect()
    }

    /// Reads several entries, each a (domain, key) pair, and returns their values in the same
    /// order (`None` for a missing key; an entry named twice is read twice).
    ///
    /// Where the backend can, every value comes from one snapshot: one read transaction (redb),
    /// one hold of the lock (memory, the directory tree), one `MULTI`/`EXEC` (Redis). So a
    /// caller that judges a thousand sessions by their record and state makes one call (one
    /// round trip on Redis) instead of two thousand, and sees each session's keys as one write
    /// left them. The default calls [`get`](Archive::get) for each entry, so the values may come
    /// from different moments.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`](crate::Error::InvalidName) for the first bad name, before anything
    /// is read; otherwise a backend error.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, MemoryArchive};
    ///
    /// let archive = MemoryArchive::new();
    /// archive.set("a", "k", b"1")?;
    /// archive.set("b", "k", b"2")?;
    /// let values = archive.get_each(&[("a", "k"), ("b", "k"), ("c", "k")])?;
    /// assert_eq!(values, [Some(b"1".to_vec()), Some(b"2".to_vec()), None]);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    fn get_each(&self, entries: &[(&str, &str)]) -> Result<Vec<Option<Vec<u8>>>> {
        entries
            .iter()
            .try_for_each(|(domain, key)| crate::name::validate_entry(domain, key))?;
        entries
            .iter()
            .map(|(domain, key)| self.get(domain, key))
            .collect()
    }

    /// Reads the value of `key` in `domain`, gives it to `change` (`None` when absent), and
    /// stores what `change` makes of it, atomically: no other write to the key comes between
    /// the read and the write. Returns the value stored afterwards (`None` when absent), which
    /// for [`Update::Keep`] is the value `change` was given.
    ///
    /// This is the read-modify-write primitive, and where backends differ is in where `change`
    /// runs. The default runs it on the calling thread and stores the result with
    /// [`compare_and_swap`](Archive::compare_and_swap), reading and running `change` again
    /// whenever another write landed in between. A backend with a single serial writer runs it
    /// inside its write instead, possibly on another caller's thread: redb applies every update
    /// queued for a group commit in order, in one transaction, so concurrent updates of one key
    /// share one commit instead of failing their swaps and taking a commit each.
    ///
    /// So `change` must be `Send + 'static`, may run more than once (it should only compute
    /// from the value it is given), should be quick (it may hold up other writers), and must not
    /// call this archive. [`Update::Keep`] writes nothing; [`Update::Remove`] of an absent key
    /// neither.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`](crate::Error::InvalidName) for a bad name; the error `change`
    /// returned, with nothing written; otherwise a backend error, after which the value is
    /// unchanged. If `change` panics, nothing is written and the panic resumes on the calling
    /// thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::archive::{Archive, Update};
    /// use session_archive::MemoryArchive;
    ///
    /// let archive = MemoryArchive::new();
    /// let increment = || {
    ///     Box::new(|current: Option<&[u8]>| {
    ///         let n = current.map_or(0, |bytes| bytes[0]);
    ///         Ok(Update::Set(vec![n + 1]))
    ///     })
    /// };
    /// assert_eq!(archive.update("d", "counter", increment())?, Some(vec![1]));
    /// assert_eq!(archive.update("d", "counter", increment())?, Some(vec![2]));
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    fn update(&self, domain: &str, key: &str, mut change: Change) -> Result<Option<Vec<u8>>> {
        loop {
            let current = self.get(domain, key)?;
            let new = match change(current.as_deref())? {
                Update::Keep => return Ok(current),
                Update::Remove if current.is_none() => return Ok(None),
                Update::Remove => None,
                Update::Set(bytes) => Some(bytes),
            };
            if self.compare_and_swap(domain, key, current.as_deref(), new.as_deref())? {
                return Ok(new);
            }
        }
    }

    /// [`update`](Archive::update), for an async caller: the update is done, or under way, when
    /// this returns, and the future completes with its answer. The default does the whole
    /// update right here, blocking as `update` does, and returns a future that is ready. An
    /// archive that can wait for its write without a thread does better, and says so with
    /// [`Blocking::Commits`]: [`RedbArchive`](crate::RedbArchive) queues the update for its
    /// group commit and returns at once, and the commit's leader wakes the future, so that an
    /// async caller needs no blocking thread for it.
    ///
    /// Dropping the future does not withdraw the update: it may still be stored.
    ///
    /// # Errors
    ///
    /// As [`update`](Archive::update), from the future.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::archive::{Archive, Update};
    /// use session_archive::RedbArchive;
    ///
    /// // In a request handler: no thread waits for the commit, the task does.
    /// async fn remember(archive: &RedbArchive, name: &str) -> session_archive::Result<()> {
    ///     let name = name.as_bytes().to_vec();
    ///     let set = Box::new(move |_: Option<&[u8]>| Ok(Update::Set(name.clone())));
    ///     archive.update_async("d", "name", set).await?;
    ///     Ok(())
    /// }
    /// # let dir = tempfile::tempdir()?;
    /// # let archive = RedbArchive::open(dir.path().join("s.redb"))?;
    /// # session_archive::conformance::block_on(remember(&archive, "alice"))?;
    /// # assert_eq!(archive.get("d", "name")?, Some(b"alice".to_vec()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn update_async(&self, domain: &str, key: &str, change: Change) -> UpdateFuture {
        Box::pin(std::future::ready(self.update(domain, key, change)))
    }

    /// Stores several entries. Every name is checked first, so an invalid name anywhere in the
    /// batch writes nothing. Each entry is then stored atomically, as by [`set`](Archive::set);
    /// the batch as a whole is atomic only where the backend says so (redb writes it in one
    /// transaction, with one fsync), so after a storage error some earlier entries may be stored.
    /// The default checks every name, then calls `set` for each entry.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`](crate::Error::InvalidName) for the first bad name, before anything
    /// is written; otherwise the first storage error met.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, MemoryArchive};
    ///
    /// let archive = MemoryArchive::new();
    /// archive.set_many(&[("a", "k", b"1"), ("b", "k", b"2")])?;
    /// assert_eq!(archive.get("b", "k")?, Some(b"2".to_vec()));
    ///
    /// // One bad name and nothing of the batch is written.
    /// assert!(archive.set_many(&[("a", "k", b"changed"), ("..", "k", b"x")]).is_err());
    /// assert_eq!(archive.get("a", "k")?, Some(b"1".to_vec()));
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    fn set_many(&self, entries: &[(&str, &str, &[u8])]) -> Result<()> {
        entries
            .iter()
            .try_for_each(|(domain, key, _)| crate::name::validate_entry(domain, key))?;
        entries
            .iter()
            .try_for_each(|(domain, key, value)| self.set(domain, key, value))
    }

    /// Removes several entries, and returns how many of them existed. Every name is checked
    /// first, so an invalid name anywhere in the batch removes nothing. Each entry is then
    /// removed atomically, as by [`remove`](Archive::remove); the batch as a whole is atomic only
    /// where the backend says so (redb removes it in one transaction, with one fsync), so after a
    /// storage error some earlier entries may be gone. An entry listed twice counts once. The
    /// default checks every name, then calls `remove` for each entry.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`](crate::Error::InvalidName) for the first bad name, before anything
    /// is removed; otherwise the first storage error met.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, MemoryArchive};
    ///
    /// let archive = MemoryArchive::new();
    /// archive.set_many(&[("a", "k", b"1"), ("b", "k", b"2")])?;
    /// assert_eq!(archive.remove_many(&[("a", "k"), ("b", "k"), ("b", "missing")])?, 2);
    /// assert!(!archive.has_domain("a")?);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    fn remove_many(&self, entries: &[(&str, &str)]) -> Result<usize> {
        entries
            .iter()
            .try_for_each(|(domain, key)| crate::name::validate_entry(domain, key))?;
        entries.iter().try_fold(0, |removed, (domain, key)| {
            Ok(removed + usize::from(self.remove(domain, key)?))
        })
    }

    /// Removes several domains with all their keys, and returns how many of them existed. Names
    /// are checked first and the batch is atomic as in [`remove_many`](Archive::remove_many). The
    /// default checks every name, then calls [`remove_domain`](Archive::remove_domain) for each.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`](crate::Error::InvalidName) for the first bad name, before anything
    /// is removed; otherwise the first storage error met.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, MemoryArchive};
    ///
    /// let archive = MemoryArchive::new();
    /// archive.set_many(&[("a", "k1", b""), ("a", "k2", b""), ("b", "k", b"")])?;
    /// assert_eq!(archive.remove_domains(&["a", "b", "c"])?, 2);
    /// assert!(archive.list_domains(None, 10)?.names.is_empty());
    ///
    /// // One bad name and nothing is removed.
    /// archive.set("a", "k", b"")?;
    /// assert!(archive.remove_domains(&["a", ".."]).is_err());
    /// assert!(archive.has_domain("a")?);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    fn remove_domains(&self, domains: &[&str]) -> Result<usize> {
        domains
            .iter()
            .try_for_each(|domain| crate::name::validate_domain(domain))?;
        domains.iter().try_fold(0, |removed, domain| {
            Ok(removed + usize::from(self.remove_domain(domain)?))
        })
    }

    /// Asks the backend to remove `domain` on its own at or after `at`, and returns whether it
    /// will. Backends with native expiry (Redis) set a TTL and return `true`; the others return
    /// `false`, and the caller removes the domain itself (as [`Sessions::sweep`](crate::Sessions::sweep) does).
    ///
    /// "At or after": a backend may keep a later expiry asked for before (Redis does, so that a
    /// writer holding older timestamps never cuts short what a newer one asked for). Writes to
    /// a domain that exists keep its expiry, so a caller asks again only when the time moves;
    /// a domain removed and written again has none.
    ///
    /// A missing domain is not an error: nothing expires, and the result says whether expiry is
    /// supported.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`](crate::Error::InvalidName) for a bad name; otherwise a
    /// backend error.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use session_archive::{Archive, MemoryArchive};
    ///
    /// let archive = MemoryArchive::new();
    /// archive.set("d", "k", b"v")?;
    /// let later = SystemTime::now() + Duration::from_secs(60);
    /// assert!(!archive.expire_domain("d", later)?); // memory has no native expiry
    /// assert!(archive.has_domain("d")?);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    fn expire_domain(&self, domain: &str, at: SystemTime) -> Result<bool> {
        let _ = at;
        crate::name::validate_domain(domain)?;
        Ok(false)
    }

    /// [`get_many`](Archive::get_many) as a future that waits without a thread of its own, for
    /// a backend whose reads wait on a server it can reach asynchronously (one multiplexed
    /// connection); `None`, the default, for the others: a caller on an async executor then
    /// runs `get_many` where blocking work belongs (see [`blocking`](Archive::blocking)). The
    /// future answers as `get_many` would have, names checked first, and owns what it needs.
    ///
    /// The axum layer starts a session with it when it can, so that a request on Redis takes
    /// no blocking thread and no thread switch for its read. A backend that has it has
    /// [`compare_and_swap_many_async`](Archive::compare_and_swap_many_async) too: the layer
    /// takes that path for an update once a read went this way.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, MemoryArchive};
    ///
    /// // Memory answers at once, so it has no async path of its own.
    /// assert!(MemoryArchive::new().get_many_async("d", &["k"]).is_none());
    /// ```
    fn get_many_async(&self, domain: &str, keys: &[&str]) -> Option<GetManyFuture> {
        let _ = (domain, keys);
        None
    }

    /// [`compare_and_swap_many`](Archive::compare_and_swap_many) as a future that waits without
    /// a thread of its own, where the backend has one, as
    /// [`get_many_async`](Archive::get_many_async) says; `None`, the default, for the others.
    /// Its outcome is the blocking call's, errors included: after an error whose cause may have
    /// come after the server received the swap (a lost reply), the swap may have landed.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, MemoryArchive};
    ///
    /// let swaps = [("k", None, Some(&b"v"[..]))];
    /// assert!(MemoryArchive::new().compare_and_swap_many_async("d", &swaps).is_none());
    /// ```
    fn compare_and_swap_many_async(&self, domain: &str, swaps: &[Swap<'_>]) -> Option<SwapFuture> {
        let _ = (domain, swaps);
        None
    }

    /// Which of this archive's calls may keep the calling thread waiting; see [`Blocking`].
    ///
    /// Async callers use it to choose where a call runs: the axum layer runs a call that may
    /// block on tokio's blocking threads, and any other call in place, on the executor's thread,
    /// since handing work to another thread and back costs more than a read from memory.
    ///
    /// The default, [`Blocking::Always`], is right for every backend, and a wrapper that may
    /// wait itself (a hook that sleeps, a rate limiter) keeps it whatever it wraps. Claim less
    /// only when it holds for every call, on every path: an async executor has few threads,
    /// and a call that waits on one of them stalls every request scheduled there.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::archive::{Archive, Blocking};
    /// use session_archive::MemoryArchive;
    ///
    /// assert_eq!(MemoryArchive::new().blocking(), Blocking::Never);
    /// ```
    fn blocking(&self) -> Blocking {
        Blocking::Always
    }
}

/// How many rounds of reads the default [`Archive::get_many`] makes before it gives up on two
/// that agree: writers of one session take turns within a few rounds, and a domain rewritten
/// without pause is better answered with an error than with a loop.
const GET_MANY_ROUNDS: usize = 16;

/// Checks the names of an [`Archive::get_many`], as every backend must before it reads.
///
/// # Errors
///
/// [`Error::InvalidName`](crate::Error::InvalidName) for the first bad name.
///
/// # Examples
///
/// ```
/// use session_archive::archive::check_keys;
///
/// assert!(check_keys("d", &["a", "b", "a"]).is_ok());
/// assert!(check_keys("d", &["a", "../b"]).is_err());
/// ```
pub fn check_keys(domain: &str, keys: &[&str]) -> Result<()> {
    crate::name::validate_domain(domain)?;
    keys.iter()
        .try_for_each(|key| crate::name::validate_entry(domain, key))
}

/// One key's part in an [`Archive::compare_and_swap_many`]: the key, the value it must hold
/// (`None`: absent), and the value to store (`None`: remove it).
pub type Swap<'a> = (&'a str, Option<&'a [u8]>, Option<&'a [u8]>);

/// One domain's part in an [`Archive::compare_and_swap_each`]: the domain, and its swaps, as
/// [`Archive::compare_and_swap_many`] takes them.
pub type SwapGroup<'a> = (&'a str, &'a [Swap<'a>]);

/// Checks every group of an [`Archive::compare_and_swap_each`] as [`check_swaps`] checks one,
/// as every backend must before it reads or writes anything.
///
/// # Errors
///
/// The first error [`check_swaps`] finds in a group.
///
/// # Examples
///
/// ```
/// use session_archive::archive::check_groups;
///
/// let ok = [("a", None, Some(&b"1"[..]))];
/// let twice = [("a", None, None), ("a", None, None)];
/// assert!(check_groups(&[("d", &ok), ("e", &ok)]).is_ok());
/// assert!(check_groups(&[("d", &ok), ("e", &twice)]).is_err());
/// ```
pub fn check_groups(groups: &[SwapGroup<'_>]) -> Result<()> {
    groups
        .iter()
        .try_for_each(|(domain, swaps)| check_swaps(domain, swaps))
}

/// Checks the names of an [`Archive::compare_and_swap_many`] and that no key is named twice, as
/// every backend must before it reads or writes anything.
///
/// # Errors
///
/// [`Error::InvalidName`](crate::Error::InvalidName) for the first bad name;
/// [`Error::DuplicateKey`](crate::Error::DuplicateKey) for the first key named twice.
///
/// # Examples
///
/// ```
/// use session_archive::archive::check_swaps;
///
/// assert!(check_swaps("d", &[("a", None, Some(b"1")), ("b", None, None)]).is_ok());
/// assert!(check_swaps("d", &[("a", None, Some(b"1")), ("a", None, None)]).is_err());
/// assert!(check_swaps("..", &[]).is_err());
/// ```
pub fn check_swaps(domain: &str, swaps: &[Swap<'_>]) -> Result<()> {
    crate::name::validate_domain(domain)?;
    for (index, (key, _, _)) in swaps.iter().enumerate() {
        crate::name::validate_entry(domain, key)?;
        if swaps[..index].iter().any(|(earlier, _, _)| earlier == key) {
            return Err(crate::error::Error::DuplicateKey {
                domain: domain.to_owned(),
                key: (*key).to_owned(),
            });
        }
    }
    Ok(())
}

/// What the change of an [`Archive::update`] makes of the value it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Leave the value as it is: the update writes nothing.
    Keep,
    /// Store these bytes.
    Set(Vec<u8>),
    /// Remove the key.
    Remove,
}

/// The change an [`Archive::update`] applies: given the current value (`None` when absent),
/// what to make of it. It may run on another thread, and more than once.
pub type Change = Box<dyn FnMut(Option<&[u8]>) -> Result<Update> + Send>;

/// The future of an [`Archive::update_async`]: the value stored after the update.
pub type UpdateFuture = Pin<Box<dyn Future<Output = Result<Option<Vec<u8>>>> + Send>>;

/// The future of an [`Archive::get_many_async`]: the values, as [`Archive::get_many`] answers.
pub type GetManyFuture = Pin<Box<dyn Future<Output = Result<Vec<Option<Vec<u8>>>>> + Send>>;

/// The future of an [`Archive::compare_and_swap_many_async`]: whether the swap happened.
pub type SwapFuture = Pin<Box<dyn Future<Output = Result<bool>> + Send>>;

/// Which of an archive's calls may keep the calling thread waiting (on I/O, a lock held across
/// I/O, or another thread's commit) for longer than a few microseconds: the answer of
/// [`Archive::blocking`].
///
/// The variants are ordered from the least blocking to the most.
///
/// # Examples
///
/// ```
/// use session_archive::archive::Blocking;
///
/// assert!(Blocking::Never < Blocking::Writes && Blocking::Writes < Blocking::Always);
/// assert!(!Blocking::Writes.reads_block());
/// assert!(Blocking::Writes.writes_block());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Blocking {
    /// No call waits: everything happens in this process's memory, under locks that are only
    /// held for the call's own work ([`MemoryArchive`](crate::MemoryArchive)).
    Never,
    /// As [`Writes`](Blocking::Writes), except that [`update_async`](Archive::update_async)
    /// returns at once, its future waiting for the commit without a thread, and
    /// [`expire_domain`](Archive::expire_domain) does not wait either
    /// ([`RedbArchive`](crate::RedbArchive)). A wrapper that answers this for the archive it
    /// wraps must pass `update_async` on too: the default body waits.
    Commits,
    /// Point reads ([`get`](Archive::get), [`has`](Archive::has),
    /// [`has_domain`](Archive::has_domain)) do not wait; every other call may, writes (including
    /// [`compare_and_swap`](Archive::compare_and_swap)) because they wait for a durable commit.
    /// A point read of data the operating system has not cached still reads the disk, once.
    Writes,
    /// Any call may wait (a network round trip, a file system call). The default.
    Always,
}

impl Blocking {
    /// Whether a point read ([`get`](Archive::get), [`has`](Archive::has),
    /// [`has_domain`](Archive::has_domain)) may wait.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::archive::Blocking;
    ///
    /// assert!(Blocking::Always.reads_block());
    /// assert!(!Blocking::Never.reads_block());
    /// ```
    pub fn reads_block(self) -> bool {
        self == Blocking::Always
    }

    /// Whether a write (or any call other than a point read) may wait.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::archive::Blocking;
    ///
    /// assert!(Blocking::Writes.writes_block());
    /// assert!(!Blocking::Never.writes_block());
    /// ```
    pub fn writes_block(self) -> bool {
        self != Blocking::Never
    }

    /// Whether [`update_async`](Archive::update_async) and
    /// [`expire_domain`](Archive::expire_domain) may wait before they return: an async caller
    /// that may call them in place, and await the update's future, needs no blocking thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::archive::Blocking;
    ///
    /// assert!(!Blocking::Commits.update_async_blocks());
    /// assert!(Blocking::Commits.writes_block());
    /// assert!(Blocking::Writes.update_async_blocks());
    /// ```
    pub fn update_async_blocks(self) -> bool {
        self >= Blocking::Writes
    }
}

/// Forwards every `Archive` method through a smart pointer, so that no method of a wrapped
/// archive silently falls back to a default body.
macro_rules! forward_archive {
    ($($pointer:ident),+) => {$(
        #[deny(clippy::missing_trait_methods)]
        impl<A: Archive + ?Sized> Archive for $pointer<A> {
            fn get(&self, domain: &str, key: &str) -> Result<Option<Vec<u8>>> {
                (**self).get(domain, key)
            }
            fn set(&self, domain: &str, key: &str, value: &[u8]) -> Result<()> {
                (**self).set(domain, key, value)
            }
            fn has(&self, domain: &str, key: &str) -> Result<bool> {
                (**self).has(domain, key)
            }
            fn remove(&self, domain: &str, key: &str) -> Result<bool> {
                (**self).remove(domain, key)
            }
            fn has_domain(&self, domain: &str) -> Result<bool> {
                (**self).has_domain(domain)
            }
            fn remove_domain(&self, domain: &str) -> Result<bool> {
                (**self).remove_domain(domain)
            }
            fn compare_and_swap(
                &self,
                domain: &str,
                key: &str,
                expected: Option<&[u8]>,
                new: Option<&[u8]>,
            ) -> Result<bool> {
                (**self).compare_and_swap(domain, key, expected, new)
            }
            fn list_domains(&self, cursor: Option<&str>, limit: usize) -> Result<Page> {
                (**self).list_domains(cursor, limit)
            }
            fn list_keys(&self, domain: &str, cursor: Option<&str>, limit: usize) -> Result<Page> {
                (**self).list_keys(domain, cursor, limit)
            }
            fn compare_and_swap_many(&self, domain: &str, swaps: &[Swap<'_>]) -> Result<bool> {
                (**self).compare_and_swap_many(domain, swaps)
            }
            fn get_many(&self, domain: &str, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
                (**self).get_many(domain, keys)
            }
            fn get_many_async(&self, domain: &str, keys: &[&str]) -> Option<GetManyFuture> {
                (**self).get_many_async(domain, keys)
            }
            fn compare_and_swap_many_async(
                &self,
                domain: &str,
                swaps: &[Swap<'_>],
            ) -> Option<SwapFuture> {
                (**self).compare_and_swap_many_async(domain, swaps)
            }
            fn compare_and_swap_each(&self, groups: &[SwapGroup<'_>]) -> Result<Vec<bool>> {
                (**self).compare_and_swap_each(groups)
            }
            fn get_each(&self, entries: &[(&str, &str)]) -> Result<Vec<Option<Vec<u8>>>> {
                (**self).get_each(entries)
            }
            fn update(&self, domain: &str, key: &str, change: Change) -> Result<Option<Vec<u8>>> {
                (**self).update(domain, key, change)
            }
            fn update_async(&self, domain: &str, key: &str, change: Change) -> UpdateFuture {
                (**self).update_async(domain, key, change)
            }
            fn set_many(&self, entries: &[(&str, &str, &[u8])]) -> Result<()> {
                (**self).set_many(entries)
            }
            fn remove_many(&self, entries: &[(&str, &str)]) -> Result<usize> {
                (**self).remove_many(entries)
            }
            fn remove_domains(&self, domains: &[&str]) -> Result<usize> {
                (**self).remove_domains(domains)
            }
            fn expire_domain(&self, domain: &str, at: SystemTime) -> Result<bool> {
                (**self).expire_domain(domain, at)
            }
            fn blocking(&self) -> Blocking {
                (**self).blocking()
            }
        }
    )+};
}

forward_archive!(Arc, Box);

/// The page size the [`ArchiveExt`] iterators ask for, and a sensible `limit` for a caller that
/// pages with [`list_domains`](Archive::list_domains) or [`list_keys`](Archive::list_keys)
/// itself.
///
/// # Examples
///
/// ```
/// use session_archive::archive::{Archive, DEFAULT_PAGE_SIZE};
/// use session_archive::MemoryArchive;
///
/// let archive = MemoryArchive::new();
/// archive.set("d", "k", b"")?;
/// let mut cursor = None;
/// loop {
///     let page = archive.list_domains(cursor.as_deref(), DEFAULT_PAGE_SIZE)?;
///     assert!(page.names.len() <= DEFAULT_PAGE_SIZE);
///     cursor = page.cursor;
///     if cursor.is_none() {
///         break;
///     }
/// }
/// # Ok::<(), session_archive::Error>(())
/// ```
pub const DEFAULT_PAGE_SIZE: usize = 1024;

/// Conveniences for every [`Archive`], including `dyn Archive`.
///
/// # Examples
///
/// ```
/// use session_archive::{Archive, ArchiveExt, MemoryArchive};
///
/// let archive = MemoryArchive::new();
/// archive.set("d1", "k", b"")?;
/// archive.set("d2", "k", b"")?;
/// let domains: Vec<String> = archive.domains().collect::<Result<_, _>>()?;
/// assert_eq!(domains, ["d1", "d2"]);
/// # Ok::<(), session_archive::Error>(())
/// ```
pub trait ArchiveExt: Archive {
    /// Iterates over every domain, one page at a time, so memory use stays bounded by the page
    /// size however many domains there are.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, ArchiveExt, MemoryArchive};
    ///
    /// let archive = MemoryArchive::new();
    /// for i in 0..3000 {
    ///     archive.set(&format!("d{i:04}"), "k", b"")?;
    /// }
    /// assert_eq!(archive.domains().count(), 3000);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    fn domains(&self) -> Names<'_, Self> {
        Names::new(self, None)
    }

    /// Iterates over the keys of `domain`, one page at a time. An invalid domain name comes out
    /// as the iterator's first and only item, an error.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, ArchiveExt, MemoryArchive};
    ///
    /// let archive = MemoryArchive::new();
    /// archive.set("d", "session.json", b"{}")?;
    /// let keys: Vec<String> = archive.keys("d").collect::<Result<_, _>>()?;
    /// assert_eq!(keys, ["session.json"]);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    fn keys<'a>(&'a self, domain: &'a str) -> Names<'a, Self> {
        Names::new(self, Some(domain))
    }
}

impl<A: Archive + ?Sized> ArchiveExt for A {}

/// An iterator over domain or key names, fetched page by page; made by [`ArchiveExt::domains`]
/// and [`ArchiveExt::keys`].
///
/// After an error it yields nothing more.
///
/// # Examples
///
/// ```
/// use session_archive::{Archive, ArchiveExt, MemoryArchive};
///
/// let archive = MemoryArchive::new();
/// archive.set("d", "k", b"")?;
/// let mut names = archive.domains();
/// assert_eq!(names.next().transpose()?, Some("d".to_owned()));
/// assert_eq!(names.next().transpose()?, None);
/// # Ok::<(), session_archive::Error>(())
/// ```
pub struct Names<'a, A: Archive + ?Sized> {
    archive: &'a A,
    domain: Option<&'a str>,
    page: std::vec::IntoIter<String>,
    cursor: Option<String>,
    done: bool,
}

impl<'a, A: Archive + ?Sized> Names<'a, A> {
    fn new(archive: &'a A, domain: Option<&'a str>) -> Self {
        Names {
            archive,
            domain,
            page: Vec::new().into_iter(),
            cursor: None,
            done: false,
        }
    }
}

impl<A: Archive + ?Sized> std::fmt::Debug for Names<'_, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Names")
            .field("domain", &self.domain)
            .field("cursor", &self.cursor)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<A: Archive + ?Sized> Iterator for Names<'_, A> {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(name) = self.page.next() {
                return Some(Ok(name));
            }
            if self.done {
                return None;
            }
            let cursor = self.cursor.as_deref();
            let page = match self.domain {
                None => self.archive.list_domains(cursor, DEFAULT_PAGE_SIZE),
                Some(domain) => self.archive.list_keys(domain, cursor, DEFAULT_PAGE_SIZE),
            };
            match page {
                Ok(page) => {
                    self.done = page.cursor.is_none();
                    self.cursor = page.cursor;
                    self.page = page.names.into_iter();
                }
                Err(err) => {
                    self.done = true;
                    return Some(Err(err));
                }
            }
        }
    }
}
