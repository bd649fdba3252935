//! An archive whose every call but the required ones and the swap of several keys (which
//! sessions need) is the `Archive` trait's default body: it shows that the defaults keep their
//! promises (the conformance suite runs on it), and it reads one key at a time, so that a test
//! can land a write between two reads of one `get_many`.

use session_archive::archive::Swap;
use session_archive::{Archive, Page, Result};

/// An archive that reads one key at a time: every call but the required ones and the swap of
/// several keys (which sessions need) is the `Archive` trait's default body, `get_many` among
/// them.
pub struct OneKeyAtATime<A>(pub A);

impl<A: Archive> Archive for OneKeyAtATime<A> {
    fn get(&self, domain: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.0.get(domain, key)
    }
    fn set(&self, domain: &str, key: &str, value: &[u8]) -> Result<()> {
        self.0.set(domain, key, value)
    }
    fn has(&self, domain: &str, key: &str) -> Result<bool> {
        self.0.has(domain, key)
    }
    fn remove(&self, domain: &str, key: &str) -> Result<bool> {
        self.0.remove(domain, key)
    }
    fn has_domain(&self, domain: &str) -> Result<bool> {
        self.0.has_domain(domain)
    }
    fn remove_domain(&self, domain: &str) -> Result<bool> {
        self.0.remove_domain(domain)
    }
    fn compare_and_swap(
        &self,
        domain: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        self.0.compare_and_swap(domain, key, expected, new)
    }
    fn compare_and_swap_many(&self, domain: &str, swaps: &[Swap<'_>]) -> Result<bool> {
        self.0.compare_and_swap_many(domain, swaps)
    }
    fn list_domains(&self, cursor: Option<&str>, limit: usize) -> Result<Page> {
        self.0.list_domains(cursor, limit)
    }
    fn list_keys(&self, domain: &str, cursor: Option<&str>, limit: usize) -> Result<Page> {
        self.0.list_keys(domain, cursor, limit)
    }
}
