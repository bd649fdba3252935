//! The file's one table, `entries`, and the key range of a domain in it.
//!
//! The table is keyed by the composite `(domain, key)` with the value as bytes. Tuples compare
//! element by element and strings by bytes, so all keys of domain `d` form exactly the range
//! `(d, "") .. (d + "\0", "")`: `""` is the smallest string and `d + "\0"` the next string after
//! `d`. No valid name contains NUL, so that range never reaches another domain, and removing,
//! probing or listing a domain is one range operation.

use ::redb::{ReadableTable, TableDefinition};

/// The one table: `(domain, key) -> value`.
pub(super) const ENTRIES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("entries");

/// The table as a write transaction sees it.
pub(super) type Table<'txn> = ::redb::Table<'txn, (&'static str, &'static str), &'static [u8]>;

/// The table as a read transaction sees it.
pub(super) type ReadTable = ::redb::ReadOnlyTable<(&'static str, &'static str), &'static [u8]>;

/// The first name after every key of `domain`: keys of `domain` are `(domain, "") ..
/// (domain_end(domain), "")`.
pub(super) fn domain_end(domain: &str) -> String {
    format!("{domain}\0")
}

/// Whether the range holds at least one entry, without reading past the first.
pub(super) fn any_in<T: ReadableTable<(&'static str, &'static str), &'static [u8]>>(
    table: &T,
    start: &str,
    end: &str,
) -> Result<bool, ::redb::Error> {
    Ok(table
        .range((start, "")..(end, ""))?
        .next()
        .transpose()?
        .is_some())
}
