//! The op interpreter: what each write does to the table inside a write transaction, and what a
//! batch of them does together.
//!
//! Every write of [`RedbArchive`](super::RedbArchive) is an [`Op`], owned so that whichever
//! writer leads the group commit can apply it. Adding a write means one variant, its name in
//! [`Op::operation`] and its effect in [`Op::apply`]. An op may be applied more than once (a
//! batch that fails is retried op by op), so applying takes it by reference.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};

use ::redb::{AccessGuard, ReadableTable};

use super::group_commit::Batch;
use super::layout::{Table, domain_end};
use crate::archive::{Change, Update};

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
    /// Several keys of one domain, each (key, expected, new), all swapped or none.
    CompareAndSwapMany {
        domain: String,
        swaps: Vec<OwnedSwap>,
    },
    /// Several domains' swaps, each group as [`Op::CompareAndSwapMany`], in order, each group
    /// swapped or not on its own.
    CompareAndSwapEach(Vec<(String, Vec<OwnedSwap>)>),
    /// A read-modify-write: the change runs here, in the transaction, on the leader's thread.
    Update {
        domain: String,
        key: String,
        /// `None` once the change has panicked: it is not run again.
        change: RefCell<Option<Change>>,
    },
}

/// One key's part in an [`Op::CompareAndSwapMany`]: the key, the value it must hold (`None`:
/// absent) and the value to store (`None`: remove it).
pub(super) type OwnedSwap = (String, Option<Vec<u8>>, Option<Vec<u8>>);

/// What an op answers its caller.
pub(super) enum Reply {
    /// How many of its keys or domains existed (0 or 1 for a single one), 1 if the swap
    /// happened, 1 for plain writes.
    Count(usize),
    /// Whether each group of an [`Op::CompareAndSwapEach`] swapped.
    Each(Vec<bool>),
    /// An update's value afterwards.
    Updated(Option<Vec<u8>>),
    /// An update whose change returned an error; nothing was written.
    Refused(crate::Error),
    /// An update whose change panicked, with the panic's payload; nothing was written.
    Panicked(Box<dyn Any + Send>),
}

impl Reply {
    /// The count of an op that answers one.
    pub(super) fn count(&self) -> usize {
        match self {
            Reply::Count(count) => *count,
            Reply::Each(_) | Reply::Updated(_) | Reply::Refused(_) | Reply::Panicked(_) => 0,
        }
    }
}

std::thread_local! {
    /// Whether this thread is running an update's change: a write it submitted would wait for
    /// the commit that is waiting for the change, forever.
    static IN_CHANGE: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is running an update's change, inside a commit.
pub(super) fn in_change() -> bool {
    IN_CHANGE.with(Cell::get)
}

/// What an applied [`Op`] reports.
struct Applied {
    /// The operation's answer.
    answer: Reply,
    /// Whether the table changed, so that the commit has something to make durable.
    changed: bool,
}

impl Applied {
    /// The report of an op that changed the table exactly when its count is not 0.
    fn counted(count: usize) -> Applied {
        Applied {
            answer: Reply::Count(count),
            changed: count > 0,
        }
    }
}

/// What a batch of ops did: each op's answer, in order, and whether any changed the table.
pub(super) struct Outcome {
    pub(super) answers: Vec<Reply>,
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
            Op::CompareAndSwapMany { .. } => "compare and swap several values",
            Op::CompareAndSwapEach(_) => "compare and swap values of several domains",
            Op::Update { .. } => "update a value",
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
                    answer: Reply::Count(1),
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
            Op::CompareAndSwapMany { domain, swaps } => {
                compare_and_swap_many(table, domain, swaps)?
            }
            Op::CompareAndSwapEach(groups) => compare_and_swap_each(table, groups)?,
            Op::Update {
                domain,
                key,
                change,
            } => update(table, (domain.as_str(), key.as_str()), change)?,
        })
    }
}

/// Removes one key; 1 if it existed.
fn remove(table: &mut Table<'_>, domain: &str, key: &str) -> Result<usize, ::redb::Error> {
    Ok(usize::from(table.remove((domain, key))?.is_some()))
}

/// Removes every key of `domain` in one range delete; 1 if the domain existed. The delete counts
/// what it removes, so the domain costs one walk of the tree, not a probe and then a delete.
fn remove_domain(table: &mut Table<'_>, domain: &str) -> Result<usize, ::redb::Error> {
    let end = domain_end(domain);
    let mut found = 0_usize;
    table.retain_in((domain, "")..(end.as_str(), ""), |_, _| {
        found += 1;
        false
    })?;
    Ok(usize::from(found > 0))
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

/// Swaps every key of `swaps` in `domain` if each holds its expected value, and none
/// otherwise; answers 1 if they were swapped. Every key is compared before anything is written,
/// so a mismatch leaves the table as it was; a swap whose expected and new values are equal only
/// compares, so a swap made only of those changes nothing and needs no commit.
fn compare_and_swap_many(
    table: &mut Table<'_>,
    domain: &str,
    swaps: &[OwnedSwap],
) -> Result<Applied, ::redb::Error> {
    // The transaction is the only writer, so the reads and the writes below are one atomic step.
    for (key, expected, _) in swaps {
        let current = table.get((domain, key.as_str()))?;
        if current.as_ref().map(AccessGuard::value) != expected.as_deref() {
            return Ok(Applied::counted(0));
        }
    }
    let mut changed = false;
    for (key, expected, new) in swaps {
        if expected == new {
            continue;
        }
        let entry = (domain, key.as_str());
        match new {
            Some(value) => drop(table.insert(entry, value.as_slice())?),
            None => drop(table.remove(entry)?),
        }
        changed = true;
    }
    Ok(Applied {
        answer: Reply::Count(1),
        changed,
    })
}

/// Swaps each group as [`compare_and_swap_many`] does, in order, each on its own; answers
/// whether each swapped.
fn compare_and_swap_each(
    table: &mut Table<'_>,
    groups: &[(String, Vec<OwnedSwap>)],
) -> Result<Applied, ::redb::Error> {
    let mut swapped = Vec::with_capacity(groups.len());
    let mut changed = false;
    for (domain, swaps) in groups {
        let applied = compare_and_swap_many(table, domain, swaps)?;
        swapped.push(applied.answer.count() > 0);
        changed |= applied.changed;
    }
    Ok(Applied {
        answer: Reply::Each(swapped),
        changed,
    })
}

/// Runs an update's change on the value of `entry` and stores what it makes of it. An error or
/// a panic of the change writes nothing and becomes the op's answer, so that it reaches its own
/// caller instead of failing, or unwinding through, the leader's whole batch.
fn update(
    table: &mut Table<'_>,
    entry: (&str, &str),
    change: &RefCell<Option<Change>>,
) -> Result<Applied, ::redb::Error> {
    let current = table.get(entry)?.map(|value| value.value().to_vec());
    let mut slot = change.borrow_mut();
    let Some(run) = slot.as_mut() else {
        return Ok(refused(Reply::Panicked(Box::new(
            "the update's change panicked",
        ))));
    };
    IN_CHANGE.with(|flag| flag.set(true));
    let verdict = catch_unwind(AssertUnwindSafe(|| run(current.as_deref())));
    IN_CHANGE.with(|flag| flag.set(false));
    let (answer, changed) = match verdict {
        Ok(Ok(Update::Keep)) => (current, false),
        Ok(Ok(Update::Set(value))) => {
            table.insert(entry, value.as_slice())?;
            (Some(value), true)
        }
        Ok(Ok(Update::Remove)) => (None, table.remove(entry)?.is_some()),
        Ok(Err(error)) => return Ok(refused(Reply::Refused(error))),
        Err(payload) => {
            // A change that panicked is in an unknown state; it is dropped, never run again.
            let dropped = slot.take();
            let _ = catch_unwind(AssertUnwindSafe(|| drop(dropped)));
            return Ok(refused(Reply::Panicked(payload)));
        }
    };
    Ok(Applied {
        answer: Reply::Updated(answer),
        changed,
    })
}

/// The report of an update that wrote nothing and answers `reply`.
fn refused(reply: Reply) -> Applied {
    Applied {
        answer: reply,
        changed: false,
    }
}
