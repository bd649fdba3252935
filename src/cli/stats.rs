//! `session-archive stats`: what an archive holds.

use crate::archive::{Archive, ArchiveExt};

/// What an archive holds, as `session-archive stats` prints it.
///
/// # Examples
///
/// ```
/// use session_archive::{Archive, MemoryArchive, cli};
///
/// let archive = MemoryArchive::new();
/// archive.set("a", "k1", b"123")?;
/// archive.set("a", "k2", b"")?;
/// archive.set("b", "k1", b"45")?;
/// let stats = cli::stats(&archive)?;
/// assert_eq!((stats.domains, stats.keys, stats.value_bytes), (2, 3, 5));
/// # Ok::<(), session_archive::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// The number of domains.
    pub domains: u64,
    /// The number of keys, over all domains.
    pub keys: u64,
    /// The total length of all values.
    pub value_bytes: u64,
}

/// Walks every domain and key of `archive`, reading each value once, and counts them.
///
/// # Errors
///
/// The archive's errors.
///
/// # Examples
///
/// ```
/// use session_archive::{MemoryArchive, cli};
///
/// assert_eq!(cli::stats(&MemoryArchive::new())?, cli::Stats::default());
/// # Ok::<(), session_archive::Error>(())
/// ```
pub fn stats(archive: &dyn Archive) -> crate::error::Result<Stats> {
    let mut stats = Stats::default();
    for domain in archive.domains() {
        let domain = domain?;
        stats.domains += 1;
        for key in archive.keys(&domain) {
            let key = key?;
            // A key removed between the listing and the read no longer counts.
            if let Some(value) = archive.get(&domain, &key)? {
                stats.keys += 1;
                stats.value_bytes += value.len() as u64;
            }
        }
    }
    Ok(stats)
}
