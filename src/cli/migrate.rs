//! `session-archive migrate`: copying every domain and key of one archive into another.

use super::error::CliError;
use crate::archive::{Archive, ArchiveExt};

/// How [`migrate`] copies.
///
/// # Examples
///
/// ```
/// use session_archive::cli::{self, MigrateOptions};
/// use session_archive::{Archive, MemoryArchive};
///
/// let (from, to) = (MemoryArchive::new(), MemoryArchive::new());
/// for domain in ["a", "b", "c"] {
///     from.set(domain, "session.json", b"{}")?;
/// }
/// // Write at most two entries per batch, and check every value once it is written.
/// let options = MigrateOptions { batch_entries: 2, verify: true, ..MigrateOptions::default() };
/// let mut batches = 0;
/// cli::migrate(&from, &to, &options, &mut |_| batches += 1)?;
/// assert_eq!(batches, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrateOptions {
    /// Copy into a target that already holds data. Entries of the source replace entries of the
    /// target under the same domain and key; other entries of the target stay.
    pub merge: bool,
    /// Read every value back from the target after writing it, and compare.
    pub verify: bool,
    /// The most entries written in one [`set_many`](Archive::set_many) call.
    pub batch_entries: usize,
    /// The most value bytes written in one `set_many` call (a batch holds at least one entry).
    pub batch_bytes: usize,
    /// How many domains to ask the source for per listing page. Larger pages cost memory for
    /// the names only, and make a directory tree's listing, which rereads the whole directory
    /// for every page, that much cheaper.
    pub list_page: usize,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            merge: false,
            verify: false,
            batch_entries: 1000,
            batch_bytes: 8 * 1024 * 1024,
            list_page: 16 * 1024,
        }
    }
}

/// How far a migration has got: passed to the progress callback after every batch, and returned
/// at the end.
///
/// # Examples
///
/// ```
/// use session_archive::cli::{self, MigrateOptions, Migrated};
/// use session_archive::{Archive, MemoryArchive};
///
/// let (from, to) = (MemoryArchive::new(), MemoryArchive::new());
/// from.set("d", "k", b"12345")?;
/// let mut seen = Migrated::default();
/// let done = cli::migrate(&from, &to, &MigrateOptions::default(), &mut |so_far| seen = *so_far)?;
/// assert_eq!((done.domains, done.keys, done.bytes), (1, 1, 5));
/// assert_eq!(seen, done); // the last progress report is the whole copy
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Migrated {
    /// Domains whose every key has been written.
    pub domains: u64,
    /// Keys written.
    pub keys: u64,
    /// Value bytes written.
    pub bytes: u64,
}

/// Copies every domain and key of `from` into `to`, byte for byte, without modifying `from`.
///
/// Domains are walked page by page and entries written in batches through
/// [`set_many`](Archive::set_many) (one transaction each on redb), so memory stays bounded by
/// one batch. `progress` is called after every batch. Copying is idempotent: after an
/// interruption, running it again with [`merge`](MigrateOptions::merge) completes the copy.
///
/// # Errors
///
/// [`CliError::TargetNotEmpty`] when `to` holds data and `merge` is off (nothing is written);
/// [`CliError::Entry`] naming the domain and key whose read or write failed;
/// [`CliError::Mismatch`] when `verify` reads back a different value; [`CliError::Archive`] when
/// listing fails.
///
/// # Examples
///
/// ```
/// use session_archive::{Archive, MemoryArchive, cli::{self, CliError, MigrateOptions}};
///
/// let (from, to) = (MemoryArchive::new(), MemoryArchive::new());
/// from.set("d", "k", b"\x00\xff")?;
/// to.set("other", "k", b"kept")?;
/// let options = MigrateOptions::default();
/// assert!(matches!(cli::migrate(&from, &to, &options, &mut |_| {}), Err(CliError::TargetNotEmpty)));
///
/// let options = MigrateOptions { merge: true, verify: true, ..options };
/// let done = cli::migrate(&from, &to, &options, &mut |_| {})?;
/// assert_eq!((done.domains, done.keys, done.bytes), (1, 1, 2));
/// assert_eq!(to.get("d", "k")?.as_deref(), Some(&b"\x00\xff"[..]));
/// assert!(to.has_domain("other")?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn migrate(
    from: &dyn Archive,
    to: &dyn Archive,
    options: &MigrateOptions,
    progress: &mut dyn FnMut(&Migrated),
) -> Result<Migrated, CliError> {
    if !options.merge && to.domains().next().transpose()?.is_some() {
        return Err(CliError::TargetNotEmpty);
    }
    let mut copy = Copy {
        from,
        to,
        options,
        progress,
        batch: Batch::default(),
        done: Migrated::default(),
    };
    let mut cursor = None;
    loop {
        let page = from.list_domains(cursor.as_deref(), options.list_page.max(1))?;
        for domain in page.names {
            copy.domain(&domain)?;
        }
        cursor = page.cursor;
        if cursor.is_none() {
            break;
        }
    }
    copy.flush()?;
    Ok(copy.done)
}

/// A migration under way.
struct Copy<'a> {
    from: &'a dyn Archive,
    to: &'a dyn Archive,
    options: &'a MigrateOptions,
    progress: &'a mut dyn FnMut(&Migrated),
    batch: Batch,
    done: Migrated,
}

impl Copy<'_> {
    /// Queues every entry of `domain`, writing the batch whenever it is full.
    fn domain(&mut self, domain: &str) -> Result<(), CliError> {
        for key in self.from.keys(domain) {
            let key = key?;
            let value = self
                .from
                .get(domain, &key)
                .map_err(|source| CliError::Entry {
                    operation: "read it from the source",
                    domain: domain.to_owned(),
                    key: key.clone(),
                    source,
                })?;
            // A key removed since it was listed is no longer part of the source.
            let Some(value) = value else { continue };
            // Writing a full batch only when the next entry arrives means a batch that ends a
            // domain is written after that domain is counted, so progress counts it.
            if self.batch.entries.len() >= self.options.batch_entries.max(1)
                || self.batch.bytes >= self.options.batch_bytes
            {
                self.flush()?;
            }
            self.batch.bytes += value.len();
            self.batch.entries.push((domain.to_owned(), key, value));
        }
        self.batch.domains_queued += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), CliError> {
        self.batch
            .flush(self.to, self.options.verify, &mut self.done)?;
        (self.progress)(&self.done);
        Ok(())
    }
}

/// The entries read but not yet written.
#[derive(Default)]
struct Batch {
    entries: Vec<(String, String, Vec<u8>)>,
    bytes: usize,
    /// Domains whose every entry is in this batch or already written.
    domains_queued: u64,
}

impl Batch {
    fn flush(
        &mut self,
        to: &dyn Archive,
        verify: bool,
        done: &mut Migrated,
    ) -> Result<(), CliError> {
        let entries: Vec<(&str, &str, &[u8])> = self
            .entries
            .iter()
            .map(|(d, k, v)| (d.as_str(), k.as_str(), v.as_slice()))
            .collect();
        if to.set_many(&entries).is_err() {
            // The batch error does not say which entry failed; writing them one by one does.
            // Rewriting entries that did land is harmless, as every write stores the same bytes.
            for (domain, key, value) in &entries {
                to.set(domain, key, value)
                    .map_err(|source| CliError::Entry {
                        operation: "write it to the target",
                        domain: (*domain).to_owned(),
                        key: (*key).to_owned(),
                        source,
                    })?;
            }
        }
        if verify {
            for (domain, key, value) in &entries {
                let stored = to.get(domain, key).map_err(|source| CliError::Entry {
                    operation: "read it back from the target",
                    domain: (*domain).to_owned(),
                    key: (*key).to_owned(),
                    source,
                })?;
                if stored.as_deref() != Some(*value) {
                    return Err(CliError::Mismatch {
                        domain: (*domain).to_owned(),
                        key: (*key).to_owned(),
                    });
                }
            }
        }
        done.keys += entries.len() as u64;
        done.bytes += self.bytes as u64;
        done.domains = self.domains_queued;
        self.entries.clear();
        self.bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::memory::MemoryArchive;
    use crate::conformance::{Call, Hooked};
    use crate::error::{Chain, Error};
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// The entry `Faulty` refuses to write while `broken` is set.
    const BAD_ENTRY: (&str, &str) = ("d0033", "k1");

    /// A memory archive that refuses to write [`BAD_ENTRY`] while `broken` is set, as a full
    /// disk would, and whose value of `corrupt_key` changes whenever it is read back.
    struct Faulty {
        archive: Hooked<Arc<MemoryArchive>>,
        inner: Arc<MemoryArchive>,
        broken: Arc<AtomicBool>,
    }

    impl Faulty {
        fn new(broken: bool, corrupt_key: Option<&'static str>) -> Faulty {
            let inner = Arc::new(MemoryArchive::new());
            let broken = Arc::new(AtomicBool::new(broken));
            let (stored, refusing) = (Arc::clone(&inner), Arc::clone(&broken));
            let archive = Hooked::new(Arc::clone(&inner), move |call| {
                let bad = match *call {
                    Call::Set { domain, key, .. } => (domain, key) == BAD_ENTRY,
                    Call::SetMany { entries } => entries
                        .iter()
                        .any(|&(domain, key, _)| (domain, key) == BAD_ENTRY),
                    _ => false,
                };
                if bad && refusing.load(Ordering::SeqCst) {
                    return Err(Error::Io {
                        path: PathBuf::from("disk"),
                        source: std::io::Error::other("disk full"),
                    });
                }
                if let Call::Get { domain, key } = *call
                    && corrupt_key == Some(key)
                    && let Some(mut value) = stored.get(domain, key)?
                {
                    value.push(b'!');
                    stored.set(domain, key, &value)?;
                }
                Ok(())
            });
            Faulty {
                archive,
                inner,
                broken,
            }
        }
    }

    fn source(domains: usize) -> MemoryArchive {
        let archive = MemoryArchive::new();
        for d in 0..domains {
            for k in 0..3 {
                let value = [u8::try_from(d % 256).expect("below 256"), 0, 0xff, k];
                archive
                    .set(&format!("d{d:04}"), &format!("k{k}"), &value)
                    .expect("memory set");
            }
        }
        archive
    }

    /// Every entry of an archive, read through the public API.
    fn entries(archive: &dyn Archive) -> crate::conformance::Model {
        crate::conformance::snapshot(archive).expect("read the archive")
    }

    #[test]
    fn batches_are_bounded_and_progress_is_reported() {
        let from = source(100);
        let to = MemoryArchive::new();
        let options = MigrateOptions {
            batch_entries: 7,
            list_page: 3,
            ..MigrateOptions::default()
        };
        let mut calls = Vec::new();
        let done = migrate(&from, &to, &options, &mut |m| calls.push(*m)).unwrap();
        assert_eq!((done.domains, done.keys, done.bytes), (100, 300, 1200));
        assert_eq!(calls.len(), 300 / 7 + 1);
        assert!(
            calls
                .windows(2)
                .all(|w| w[0].keys < w[1].keys || w[1].keys == 300)
        );
        assert_eq!(entries(&from), entries(&to));
    }

    #[test]
    fn a_failed_write_names_the_entry_and_a_merge_rerun_completes_the_copy() {
        let from = source(50);
        let to = Faulty::new(true, None);
        let options = MigrateOptions {
            batch_entries: 16,
            ..MigrateOptions::default()
        };
        let err = migrate(&from, &to.archive, &options, &mut |_| {}).unwrap_err();
        match &err {
            CliError::Entry { domain, key, .. } => {
                assert_eq!((domain.as_str(), key.as_str()), BAD_ENTRY);
            }
            other => panic!("expected an entry error, got {other:?}"),
        }
        assert_eq!(
            Chain(&err).to_string(),
            "d0033/k1: cannot write it to the target: I/O error on disk: disk full"
        );
        // The batches before the failing one landed; the copy stopped part-way.
        let copied: usize = entries(&to.inner)
            .values()
            .map(std::collections::BTreeMap::len)
            .sum();
        assert!((96..=100).contains(&copied), "{copied} entries copied");

        to.broken.store(false, Ordering::SeqCst);
        assert!(matches!(
            migrate(&from, &to.archive, &options, &mut |_| {}),
            Err(CliError::TargetNotEmpty)
        ));
        let merge = MigrateOptions {
            merge: true,
            verify: true,
            ..options
        };
        migrate(&from, &to.archive, &merge, &mut |_| {}).unwrap();
        assert_eq!(entries(&from), entries(&to.inner));
    }

    #[test]
    fn verify_catches_a_value_that_reads_back_different() {
        let from = source(3);
        let to = Faulty::new(false, Some("k2"));
        let verify = MigrateOptions {
            verify: true,
            ..MigrateOptions::default()
        };
        match migrate(&from, &to.archive, &verify, &mut |_| {}).unwrap_err() {
            CliError::Mismatch { domain, key } => assert_eq!((&*domain, &*key), ("d0000", "k2")),
            other => panic!("expected a mismatch, got {other:?}"),
        }
        // Without verification the same copy reports success.
        let to = Faulty::new(false, Some("k2"));
        migrate(&from, &to.archive, &MigrateOptions::default(), &mut |_| {}).unwrap();
    }
}
