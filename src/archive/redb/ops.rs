//! The op interpreter: what each write does to the table inside a write transaction, and what a
//! batch of them does together.
//!
//! Every write of [`RedbArchive`](super::RedbArchive) is an [`Op`], owned so that whichever
//! writer leads the group commit can apply it. Adding a write means one variant, its name in
//! [`Op::operation`] and its effect in [`Op::apply`]. An op may be applied more than once (a
//! batch that fails is retried op by op), so applying takes it by reference.

use ::redb::{AccessGuard, ReadableTable};

use super::group_commit::Batch;
use super::layout::{Table, any_in, domain_end};

/// One write.
pub(super) enum Op {
    /// Creates the table (opening it in a write transaction does) and commits that.
    CreateTable,
    Set {
        domain: String,
        key: String,
        value: Vec<u8>,
    },
    SetMany(Vec<(String, String, Vec<u8>)>),
    Remove {
        domain: String,
        key: String,
    },
    RemoveMany(Vec<(String, String)>),
    RemoveDomain {
        domain: String,
    },
    RemoveDomains(Vec<String>),
    CompareAndSwap {
        domain: String,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
}

/// What an applied [`Op`] reports.
#[derive(Clone, Copy)]
struct Applied {
    /// The operation's answer: how many of its keys or domains existed (0 or 1 for a single
    /// one), or 1 if the swap happened; 1 for plain writes.
    answer: usize,
    /// Whether the table changed, so that the commit has something to make durable.
    changed: bool,
}

impl Applied {
    /// The report of an op that changed the table exactly when its answer is not 0.
    fn counted(answer: usize) -> Applied {
        Applied {
            answer,
            changed: answer > 0,
        }
    }
}

/// What a batch of ops did: each op's answer, in order, and whether any changed the table.
pub(super) struct Outcome {
    pub(super) answers: Vec<usize>,
    pub(super) changed: bool,
}

/// Applies every op the batch hands out, in order, to the table of an open write transaction.
/// Each op sees the ops before it, exactly as if each had been committed alone. Stops at the
/// first op that fails; the caller then must not commit.
pub(super) fn apply_batch(
    table: &mut Table<'_>,
    batch: &mut Batch<'_, Op>,
) -> Result<Outcome, ::redb::Error> {
    let mut outcome = Outcome {
        answers: Vec::new(),
        changed: false,
    };
    while let Some(op) = batch.next_request() {
        let applied = op.apply(table)?;
        outcome.changed |= applied.changed;
        outcome.answers.push(applied.answer);
    }
    Ok(outcome)
}

impl Op {
    /// The operation's name in errors.
    pub(super) fn operation(&self) -> &'static str {
        match self {
            Op::CreateTable => "create the table",
            Op::Set { .. } => "write a value",
            Op::SetMany(_) => "write a batch of values",
            Op::Remove { .. } => "remove a key",
            Op::RemoveMany(_) => "remove a batch of keys",
            Op::RemoveDomain { .. } => "remove a domain",
            Op::RemoveDomains(_) => "remove a batch of domains",
            Op::CompareAndSwap { .. } => "compare and swap a value",
        }
    }

    /// Applies the operation to the table of an open write transaction.
    fn apply(&self, table: &mut Table<'_>) -> Result<Applied, ::redb::Error> {
        Ok(match self {
            // Opening the table created it; committing that is the point.
            Op::CreateTable => Applied::counted(1),
            Op::Set { domain, key, value } => {
                table.insert((domain.as_str(), key.as_str()), value.as_slice())?;
                Applied::counted(1)
            }
            Op::SetMany(entries) => {
                for (domain, key, value) in entries {
                    table.insert((domain.as_str(), key.as_str()), value.as_slice())?;
                }
                Applied {
                    answer: 1,
                    changed: !entries.is_empty(),
                }
            }
            Op::Remove { domain, key } => Applied::counted(remove(table, domain, key)?),
            Op::RemoveMany(entries) => {
                let mut removed = 0;
                for (domain, key) in entries {
                    removed += remove(table, domain, key)?;
                }
                Applied::counted(removed)
            }
            Op::RemoveDomain { domain } => Applied::counted(remove_domain(table, domain)?),
            Op::RemoveDomains(domains) => {
                let mut removed = 0;
                for domain in domains {
                    removed += remove_domain(table, domain)?;
                }
                Applied::counted(removed)
            }
            Op::CompareAndSwap {
                domain,
                key,
                expected,
                new,
            } => Applied::counted(compare_and_swap(
                table,
                (domain.as_str(), key.as_str()),
                expected.as_deref(),
                new.as_deref(),
            )?),
        })
    }
}

/// Removes one key; 1 if it existed.
fn remove(table: &mut Table<'_>, domain: &str, key: &str) -> Result<usize, ::redb::Error> {
    Ok(usize::from(table.remove((domain, key))?.is_some()))
}

/// Removes every key of `domain` in one range delete; 1 if the domain existed.
fn remove_domain(table: &mut Table<'_>, domain: &str) -> Result<usize, ::redb::Error> {
    let end = domain_end(domain);
    let existed = any_in(table, domain, &end)?;
    if existed {
        table.retain_in((domain, "")..(end.as_str(), ""), |_, _| false)?;
    }
    Ok(usize::from(existed))
}

/// Replaces the value of `entry` with `new` (removing it for `None`) if it is `expected` (absent
/// for `None`); 1 if it was.
fn compare_and_swap(
    table: &mut Table<'_>,
    entry: (&str, &str),
    expected: Option<&[u8]>,
    new: Option<&[u8]>,
) -> Result<usize, ::redb::Error> {
    // The transaction is the only writer, so the read and the write below are one atomic step.
    let matches = table.get(entry)?.as_ref().map(AccessGuard::value) == expected;
    if matches {
        match new {
            Some(value) => drop(table.insert(entry, value)?),
            None => drop(table.remove(entry)?),
        }
    }
    Ok(usize::from(matches))
}
