//! [`Hooked`]: an archive that shows every call to a hook before passing it on, so that a test can
//! record what an archive is asked, or make chosen calls fail.

use std::fmt;
use std::time::SystemTime;

use crate::archive::{
    Archive, Blocking, Change, GetManyFuture, Page, Swap, SwapFuture, SwapGroup, UpdateFuture,
};
use crate::error::Result;

/// One call to an [`Archive`] method, as [`Hooked`] shows it to its hook: the method and its
/// arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[allow(
    missing_docs,
    reason = "the variants and fields mirror the Archive methods"
)]
pub enum Call<'a> {
    Get {
        domain: &'a str,
        key: &'a str,
    },
    Set {
        domain: &'a str,
        key: &'a str,
        value: &'a [u8],
    },
    Has {
        domain: &'a str,
        key: &'a str,
    },
    Remove {
        domain: &'a str,
        key: &'a str,
    },
    HasDomain {
        domain: &'a str,
    },
    RemoveDomain {
        domain: &'a str,
    },
    CompareAndSwap {
        domain: &'a str,
        key: &'a str,
        expected: Option<&'a [u8]>,
        new: Option<&'a [u8]>,
    },
    /// An [`Archive::compare_and_swap_many`]: each swap is (key, expected, new).
    CompareAndSwapMany {
        domain: &'a str,
        swaps: &'a [Swap<'a>],
    },
    /// An [`Archive::compare_and_swap_each`]: each group is a domain and its swaps.
    CompareAndSwapEach {
        groups: &'a [SwapGroup<'a>],
    },
    /// An [`Archive::get_each`]: each entry is (domain, key).
    GetEach {
        entries: &'a [(&'a str, &'a str)],
    },
    /// An [`Archive::get_many`].
    GetMany {
        domain: &'a str,
        keys: &'a [&'a str],
    },
    /// An [`Archive::update`]; the hook sees it once, before the change runs.
    Update {
        domain: &'a str,
        key: &'a str,
    },
    ListDomains {
        cursor: Option<&'a str>,
        limit: usize,
    },
    ListKeys {
        domain: &'a str,
        cursor: Option<&'a str>,
        limit: usize,
    },
    SetMany {
        entries: &'a [(&'a str, &'a str, &'a [u8])],
    },
    RemoveMany {
        entries: &'a [(&'a str, &'a str)],
    },
    RemoveDomains {
        domains: &'a [&'a str],
    },
    ExpireDomain {
        domain: &'a str,
        at: SystemTime,
    },
}

impl Call<'_> {
    /// Whether the call may change what the archive holds (or, for `expire_domain`, when it
    /// drops it): everything but reads and listings.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::conformance::Call;
    ///
    /// assert!(Call::RemoveDomain { domain: "d" }.is_write());
    /// assert!(!Call::Get { domain: "d", key: "k" }.is_write());
    /// ```
    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            Call::Get { .. }
                | Call::GetEach { .. }
                | Call::GetMany { .. }
                | Call::Has { .. }
                | Call::HasDomain { .. }
                | Call::ListDomains { .. }
                | Call::ListKeys { .. }
        )
    }
}

/// The hook of a [`Hooked`] archive.
type Hook = dyn Fn(&Call<'_>) -> Result<()> + Send + Sync;

/// Wraps an archive and calls a hook with every [`Call`] before passing it on. The hook sees each
/// call once, batches as one call, and may record it, act on the archive (through a handle of its
/// own, such as an `Arc` clone), or fail it: an `Err` from the hook is the call's answer, and the
/// wrapped archive never sees the call.
///
/// It is how this crate's tests stand in for a full disk, a dropped connection or a concurrent
/// writer, and how they check which entries a session operation reads.
///
/// # Examples
///
/// A full disk: every write fails, reads still work.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use session_archive::conformance::Hooked;
/// use session_archive::{Archive, Error, MemoryArchive};
///
/// let full = Arc::new(AtomicBool::new(false));
/// let disk = Arc::clone(&full);
/// let archive = Hooked::new(MemoryArchive::new(), move |call| {
///     if call.is_write() && disk.load(Ordering::SeqCst) {
///         return Err(Error::Io {
///             path: "/disk".into(),
///             source: std::io::Error::other("disk full"),
///         });
///     }
///     Ok(())
/// });
/// archive.set("d", "k", b"v")?;
/// full.store(true, Ordering::SeqCst);
/// assert!(matches!(archive.set("d", "k", b"new"), Err(Error::Io { .. })));
/// assert_eq!(archive.get("d", "k")?, Some(b"v".to_vec()));
/// # Ok::<(), Error>(())
/// ```
pub struct Hooked<A> {
    inner: A,
    hook: Box<Hook>,
}

impl<A: Archive> Hooked<A> {
    /// Wraps `inner`, calling `hook` before every call.
    ///
    /// # Examples
    ///
    /// Recording the reads:
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use session_archive::conformance::{Call, Hooked};
    /// use session_archive::{Archive, MemoryArchive};
    ///
    /// let reads = Arc::new(Mutex::new(Vec::new()));
    /// let log = Arc::clone(&reads);
    /// let archive = Hooked::new(MemoryArchive::new(), move |call| {
    ///     if let Call::Get { domain, key } = *call {
    ///         log.lock().unwrap().push(format!("{domain}/{key}"));
    ///     }
    ///     Ok(())
    /// });
    /// archive.get("d", "k")?;
    /// assert_eq!(*reads.lock().unwrap(), ["d/k"]);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn new(inner: A, hook: impl Fn(&Call<'_>) -> Result<()> + Send + Sync + 'static) -> Self {
        Hooked {
            inner,
            hook: Box::new(hook),
        }
    }

    /// The wrapped archive, to reach without the hook.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::conformance::Hooked;
    /// use session_archive::{Archive, Error, MemoryArchive};
    ///
    /// let archive = Hooked::new(MemoryArchive::new(), |_| {
    ///     Err(Error::Backend { backend: "test", operation: "any", source: "refused".into() })
    /// });
    /// assert!(archive.set("d", "k", b"v").is_err());
    /// archive.inner().set("d", "k", b"v")?;
    /// # Ok::<(), Error>(())
    /// ```
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

impl<A> fmt::Debug for Hooked<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooked").finish_non_exhaustive()
    }
}

// Every method is written out, so that a call never bypasses the hook through a default body.
#[deny(clippy::missing_trait_methods)]
impl<A: Archive> Archive for Hooked<A> {
    fn get(&self, domain: &str, key: &str) -> Result<Option<Vec<u8>>> {
        (self.hook)(&Call::Get { domain, key })?;
        self.inner.get(domain, key)
    }

    fn set(&self, domain: &str, key: &str, value: &[u8]) -> Result<()> {
        (self.hook)(&Call::Set { domain, key, value })?;
        self.inner.set(domain, key, value)
    }

    fn has(&self, domain: &str, key: &str) -> Result<bool> {
        (self.hook)(&Call::Has { domain, key })?;
        self.inner.has(domain, key)
    }

    fn remove(&self, domain: &str, key: &str) -> Result<bool> {
        (self.hook)(&Call::Remove { domain, key })?;
        self.inner.remove(domain, key)
    }

    fn has_domain(&self, domain: &str) -> Result<bool> {
        (self.hook)(&Call::HasDomain { domain })?;
        self.inner.has_domain(domain)
    }

    fn remove_domain(&self, domain: &str) -> Result<bool> {
        (self.hook)(&Call::RemoveDomain { domain })?;
        self.inner.remove_domain(domain)
    }

    fn compare_and_swap(
        &self,
        domain: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        (self.hook)(&Call::CompareAndSwap {
            domain,
            key,
            expected,
            new,
        })?;
        self.inner.compare_and_swap(domain, key, expected, new)
    }

    fn compare_and_swap_many(&self, domain: &str, swaps: &[Swap<'_>]) -> Result<bool> {
        (self.hook)(&Call::CompareAndSwapMany { domain, swaps })?;
        self.inner.compare_and_swap_many(domain, swaps)
    }

    fn get_many(&self, domain: &str, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        (self.hook)(&Call::GetMany { domain, keys })?;
        self.inner.get_many(domain, keys)
    }

    /// None: every call goes through the hook, on the calling thread, so callers take the
    /// blocking path.
    fn get_many_async(&self, _domain: &str, _keys: &[&str]) -> Option<GetManyFuture> {
        None
    }

    /// None, as for [`get_many_async`](Archive::get_many_async).
    fn compare_and_swap_many_async(
        &self,
        _domain: &str,
        _swaps: &[Swap<'_>],
    ) -> Option<SwapFuture> {
        None
    }

    fn compare_and_swap_each(&self, groups: &[SwapGroup<'_>]) -> Result<Vec<bool>> {
        (self.hook)(&Call::CompareAndSwapEach { groups })?;
        self.inner.compare_and_swap_each(groups)
    }

    fn get_each(&self, entries: &[(&str, &str)]) -> Result<Vec<Option<Vec<u8>>>> {
        (self.hook)(&Call::GetEach { entries })?;
        self.inner.get_each(entries)
    }

    /// Shows the hook one [`Call::Update`], then passes the whole update on: where the change
    /// runs, and which calls the wrapped archive makes for it, is the wrapped archive's.
    fn update(&self, domain: &str, key: &str, change: Change) -> Result<Option<Vec<u8>>> {
        (self.hook)(&Call::Update { domain, key })?;
        self.inner.update(domain, key, change)
    }

    /// As [`update`](Self::update), the hook seeing the same [`Call::Update`].
    fn update_async(&self, domain: &str, key: &str, change: Change) -> UpdateFuture {
        if let Err(refused) = (self.hook)(&Call::Update { domain, key }) {
            return Box::pin(std::future::ready(Err(refused)));
        }
        self.inner.update_async(domain, key, change)
    }

    fn list_domains(&self, cursor: Option<&str>, limit: usize) -> Result<Page> {
        (self.hook)(&Call::ListDomains { cursor, limit })?;
        self.inner.list_domains(cursor, limit)
    }

    fn list_keys(&self, domain: &str, cursor: Option<&str>, limit: usize) -> Result<Page> {
        (self.hook)(&Call::ListKeys {
            domain,
            cursor,
            limit,
        })?;
        self.inner.list_keys(domain, cursor, limit)
    }

    fn set_many(&self, entries: &[(&str, &str, &[u8])]) -> Result<()> {
        (self.hook)(&Call::SetMany { entries })?;
        self.inner.set_many(entries)
    }

    fn remove_many(&self, entries: &[(&str, &str)]) -> Result<usize> {
        (self.hook)(&Call::RemoveMany { entries })?;
        self.inner.remove_many(entries)
    }

    fn remove_domains(&self, domains: &[&str]) -> Result<usize> {
        (self.hook)(&Call::RemoveDomains { domains })?;
        self.inner.remove_domains(domains)
    }

    fn expire_domain(&self, domain: &str, at: SystemTime) -> Result<bool> {
        (self.hook)(&Call::ExpireDomain { domain, at })?;
        self.inner.expire_domain(domain, at)
    }

    /// Always [`Blocking::Always`], whatever the wrapped archive says: the hook may wait (tests
    /// use it to stand in for a slow disk or another writer), and it is not a call of its own.
    fn blocking(&self) -> Blocking {
        Blocking::Always
    }
}
