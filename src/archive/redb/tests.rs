//! How redb's ops behave in a group commit: each op of a shared transaction answers as if alone,
//! an op that redb refuses fails alone, and a panic inside redb's commit leaves the archive
//! usable. The engine itself is tested in `group_commit`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::group_commit::Status;
use super::*;
use crate::archive::{Change, Swap, Update};
use crate::conformance::block_on;

/// How many transactions the archive has committed.
fn commits(archive: &RedbArchive) -> u64 {
    archive.db.snapshots.commits()
}

/// Waits (yielding, not sleeping) until the group commit's status satisfies `ready`.
fn wait_until(archive: &RedbArchive, ready: impl Fn(Status) -> bool) {
    while !ready(archive.group.status()) {
        std::thread::yield_now();
    }
}

/// Runs each op through [`RedbArchive::write`] on a thread of its own, so that all of them
/// meet in one batch, in the order given: a write transaction held here blocks the first
/// writer, who leads, at `begin_write`, until every other op has queued behind it. Returns each
/// writer's answer, or its panic.
fn one_batch(archive: &RedbArchive, ops: Vec<Op>) -> Vec<std::thread::Result<Result<usize>>> {
    one_batch_of_replies(archive, ops)
        .into_iter()
        .map(|answer| answer.map(|reply| reply.map(|reply| reply.count())))
        .collect()
}

/// [`one_batch`], answering each op's whole [`Reply`].
fn one_batch_of_replies(
    archive: &RedbArchive,
    ops: Vec<Op>,
) -> Vec<std::thread::Result<Result<Reply>>> {
    let gate = archive.db.db.begin_write().unwrap();
    std::thread::scope(|scope| {
        let mut writers = Vec::new();
        for (queued, op) in ops.into_iter().enumerate() {
            writers.push(scope.spawn(move || archive.submit(op)));
            if queued == 0 {
                // It has taken its op off the queue to lead, and waits for the gate.
                wait_until(archive, |status| status.committing && status.queued == 0);
            } else {
                wait_until(archive, |status| status.queued == queued);
            }
        }
        drop(gate);
        writers
            .into_iter()
            .map(std::thread::ScopedJoinHandle::join)
            .collect()
    })
}

fn set(key: &str, value: &[u8]) -> Op {
    Op::Set {
        domain: "d".to_owned(),
        key: key.to_owned(),
        value: value.to_vec(),
    }
}

fn swap(key: &str, expected: &[u8], new: &[u8]) -> Op {
    Op::CompareAndSwap {
        domain: "d".to_owned(),
        key: key.to_owned(),
        expected: Some(expected.to_vec()),
        new: Some(new.to_vec()),
    }
}

fn remove(key: &str) -> Op {
    Op::Remove {
        domain: "d".to_owned(),
        key: key.to_owned(),
    }
}

/// Storage in memory whose next `sync_data` panics once armed, as a bug in redb or in a
/// storage layer below it would.
#[derive(Debug, Default)]
struct PanicOnSync {
    memory: ::redb::backends::InMemoryBackend,
    armed: Arc<AtomicBool>,
}

impl ::redb::StorageBackend for PanicOnSync {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.memory.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.memory.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.memory.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        assert!(
            !self.armed.swap(false, Ordering::AcqRel),
            "the storage panics in sync_data"
        );
        self.memory.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.memory.write(offset, data)
    }
}

/// An archive in memory whose next `sync_data` panics once the flag returned is set.
fn panicking_archive() -> (RedbArchive, Arc<AtomicBool>) {
    let backend = PanicOnSync::default();
    let armed = Arc::clone(&backend.armed);
    let db = ::redb::Builder::new()
        .create_with_backend(backend)
        .expect("a database in memory");
    let archive = RedbArchive::builder()
        .open_database(db, PathBuf::from("in-memory"))
        .expect("the archive opens");
    (archive, armed)
}

fn get(archive: &RedbArchive, key: &str) -> Option<Vec<u8>> {
    archive.get("d", key).unwrap()
}

/// Writers that queue while a commit is under way share one commit, and each op is answered
/// as if it had been committed alone, in arrival order.
#[test]
fn writers_queued_behind_a_leader_share_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let archive = RedbArchive::open(dir.path().join("archive.redb")).unwrap();
    archive.set("d", "k", b"0").unwrap();
    let before = commits(&archive);
    let stats = archive.commit_stats();

    let answers = one_batch(
        &archive,
        vec![
            set("k", b"1"),
            // Sees the set above, in the same transaction.
            swap("k", b"1", b"2"),
            swap("k", b"1", b"3"),
            remove("absent"),
            set("x", b"v"),
            remove("x"),
        ],
    );

    let answers: Vec<usize> = answers
        .into_iter()
        .map(|answer| answer.unwrap().unwrap())
        .collect();
    assert_eq!(answers, [1, 1, 0, 0, 1, 1]);
    assert_eq!(commits(&archive) - before, 1, "six writers, one commit");
    let span = archive.commit_stats().since(&stats);
    assert_eq!((span.commits, span.writes), (1, 6));
    assert!(span.busy > std::time::Duration::ZERO);
    assert_eq!(get(&archive, "k"), Some(b"2".to_vec()));
    assert_eq!(get(&archive, "x"), None);
}

/// A swap of several keys of `d`, each (key, expected, new).
fn swap_many(swaps: &[Swap<'_>]) -> Op {
    Op::CompareAndSwapMany {
        domain: "d".to_owned(),
        swaps: swaps
            .iter()
            .map(|&(key, expected, new)| {
                (
                    key.to_owned(),
                    expected.map(<[u8]>::to_vec),
                    new.map(<[u8]>::to_vec),
                )
            })
            .collect(),
    }
}

/// Swaps of several keys queued behind a leader share its commit and each sees the writes
/// queued before it: one that matches writes all its keys, one that does not writes none, and
/// each counts as one write of the commit, as a single swap does.
#[test]
fn swaps_of_several_keys_queued_behind_a_leader_share_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let archive = RedbArchive::open(dir.path().join("archive.redb")).unwrap();
    archive.set("d", "k", b"0").unwrap();
    let before = commits(&archive);
    let stats = archive.commit_stats();

    let answers = one_batch(
        &archive,
        vec![
            set("k", b"1"),
            // Sees the set above: both keys change together.
            swap_many(&[("k", Some(b"1"), Some(b"2")), ("owner", None, Some(b"a"))]),
            // `owner` no longer matches, so `k` is not written either.
            swap_many(&[("k", Some(b"2"), Some(b"3")), ("owner", None, Some(b"b"))]),
            // Removes `owner` while `k` holds 2, which it only checks.
            swap_many(&[("k", Some(b"2"), Some(b"2")), ("owner", Some(b"a"), None)]),
        ],
    );

    let answers: Vec<usize> = answers
        .into_iter()
        .map(|answer| answer.unwrap().unwrap())
        .collect();
    assert_eq!(answers, [1, 1, 0, 1]);
    assert_eq!(commits(&archive) - before, 1, "four writers, one commit");
    let span = archive.commit_stats().since(&stats);
    assert_eq!((span.commits, span.writes), (1, 4));
    assert_eq!(get(&archive, "k"), Some(b"2".to_vec()));
    assert_eq!(get(&archive, "owner"), None);
}

/// A swap of several keys that fails, or only checks, changes nothing: alone, its transaction
/// is aborted, not committed.
#[test]
fn a_swap_of_several_keys_that_writes_nothing_is_not_committed() {
    let dir = tempfile::tempdir().unwrap();
    let archive = RedbArchive::open(dir.path().join("archive.redb")).unwrap();
    archive.set("d", "k", b"1").unwrap();
    let stats = archive.commit_stats();
    let check = [("k", Some(&b"1"[..]), Some(&b"1"[..])), ("x", None, None)];
    assert!(archive.compare_and_swap_many("d", &check).unwrap());
    let mismatch = [("k", Some(&b"1"[..]), None), ("x", Some(&b""[..]), None)];
    assert!(!archive.compare_and_swap_many("d", &mismatch).unwrap());
    assert_eq!(archive.commit_stats().since(&stats).commits, 0);
    assert_eq!(get(&archive, "k"), Some(b"1".to_vec()));
}

fn update(change: impl FnMut(Option<&[u8]>) -> Result<Update> + Send + 'static) -> Op {
    Op::Update {
        domain: "d".to_owned(),
        key: "k".to_owned(),
        change: std::cell::RefCell::new(Some(Box::new(change))),
    }
}

/// An update adding one to a decimal number (absent is 0).
fn increment() -> Op {
    update(|current| {
        let n: u32 = std::str::from_utf8(current.unwrap_or(b"0"))
            .expect("a decimal number")
            .parse()
            .expect("a decimal number");
        Ok(Update::Set((n + 1).to_string().into_bytes()))
    })
}

/// Updates queued behind a leader run in its transaction, in order, each on the value the op
/// before it left, and share its one commit; a change that fails or panics writes nothing and
/// answers only its own caller.
#[test]
fn updates_queued_behind_a_leader_share_its_commit_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let archive = RedbArchive::open(dir.path().join("archive.redb")).unwrap();
    archive.set("d", "k", b"0").unwrap();
    let before = commits(&archive);

    let refuse = update(|_| {
        Err(Error::Backend {
            backend: "test",
            operation: "refuse",
            source: "refused".into(),
        })
    });
    let panic = update(|_| panic!("a change that panics"));
    let replies = one_batch_of_replies(
        &archive,
        vec![
            increment(),
            increment(),
            set("k", b"5"),
            increment(),
            refuse,
            panic,
            increment(),
        ],
    );

    let replies: Vec<String> = replies
        .into_iter()
        .map(|reply| match reply.unwrap().unwrap() {
            Reply::Count(n) => format!("count {n}"),
            Reply::Each(swapped) => format!("each {swapped:?}"),
            Reply::Updated(value) => format!("{:?}", value.map(String::from_utf8)),
            Reply::Refused(error) => format!("refused: {error}"),
            Reply::Panicked(payload) => format!("panicked: {:?}", payload.downcast_ref::<&str>()),
        })
        .collect();
    assert_eq!(
        replies,
        [
            r#"Some(Ok("1"))"#,
            r#"Some(Ok("2"))"#,
            "count 1",
            r#"Some(Ok("6"))"#,
            "refused: test backend failed to refuse",
            r#"panicked: Some("a change that panics")"#,
            r#"Some(Ok("7"))"#,
        ]
    );
    assert_eq!(commits(&archive) - before, 1, "seven writers, one commit");
    assert_eq!(get(&archive, "k"), Some(b"7".to_vec()));
}

/// A change that writes to the archive it is updating would wait for the commit that waits for
/// it: the write fails instead, and the update with it, having written nothing.
#[test]
fn a_change_that_writes_to_its_archive_fails_instead_of_waiting_forever() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Arc::new(RedbArchive::open(dir.path().join("archive.redb")).unwrap());
    let inner = Arc::clone(&archive);
    let change = Box::new(move |_: Option<&[u8]>| {
        inner.set("d", "other", b"x")?;
        Ok(Update::Set(b"v".to_vec()))
    });
    let error = archive.update("d", "k", change).unwrap_err();
    assert!(
        error.to_string().contains("write a value"),
        "{error}: {:?}",
        std::error::Error::source(&error)
    );
    assert!(!archive.has_domain("d").unwrap());
    archive.set("d", "k", b"after").unwrap();
}

/// When one op fails, the batch's transaction fails as a whole; every op is then retried in
/// a transaction of its own, so the others are applied and answered as before, in order, and
/// only the failing one gets the error.
#[test]
fn a_failing_op_fails_alone_and_the_rest_of_its_batch_is_retried() {
    // One byte over redb's limit for a value (3 GiB). `vec!` of zeros maps untouched zero
    // pages, and redb checks the length before it reads a byte, so this costs no memory.
    const TOO_LARGE: usize = 3 * 1024 * 1024 * 1024 + 1;
    let dir = tempfile::tempdir().unwrap();
    let archive = RedbArchive::open(dir.path().join("archive.redb")).unwrap();
    archive.set("d", "k", b"0").unwrap();
    let before = commits(&archive);
    let stats = archive.commit_stats();

    let mut answers = one_batch(
        &archive,
        vec![
            set("k", b"1"),
            Op::Set {
                domain: "d".to_owned(),
                key: "huge".to_owned(),
                value: vec![0; TOO_LARGE],
            },
            swap("k", b"1", b"2"),
            remove("absent"),
            set("y", b"v"),
        ],
    )
    .into_iter()
    .map(std::thread::Result::unwrap);

    assert_eq!(answers.next().unwrap().unwrap(), 1);
    let err = answers.next().unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Backend {
                backend: "redb",
                operation: "write a value",
                ..
            }
        ),
        "{err:?}"
    );
    let source = std::error::Error::source(&err).expect("the redb error is kept");
    assert!(
        matches!(
            source.downcast_ref::<::redb::Error>(),
            Some(::redb::Error::ValueTooLarge(TOO_LARGE))
        ),
        "{source:?}"
    );
    let rest: Vec<usize> = answers.map(Result::unwrap).collect();
    assert_eq!(rest, [1, 0, 1]);
    // The failed batch committed nothing; the three ops that change the table committed one
    // by one, and the removal of an absent key not at all.
    assert_eq!(commits(&archive) - before, 3);
    // Counted the same way: the failed batch and the aborted removal are no commits.
    let span = archive.commit_stats().since(&stats);
    assert_eq!((span.commits, span.writes), (3, 3));
    assert_eq!(get(&archive, "k"), Some(b"2".to_vec()));
    assert_eq!(get(&archive, "huge"), None);
    assert_eq!(get(&archive, "y"), Some(b"v".to_vec()));
}

/// A panic inside redb's commit unwinds through the leader: its own write panics, the other
/// writers of its batch get an error instead of waiting forever, and leadership is free for
/// the next writer.
#[test]
fn a_panicking_commit_answers_its_batch_with_an_error_and_frees_leadership() {
    let (archive, armed) = panicking_archive();
    archive.set("d", "k", b"0").unwrap();
    let before = commits(&archive);

    armed.store(true, Ordering::Release);
    let mut answers = one_batch(
        &archive,
        vec![set("a", b"1"), set("b", b"2"), set("c", b"3")],
    )
    .into_iter();

    let leader = answers.next().unwrap().unwrap_err();
    assert_eq!(
        leader.downcast_ref::<&str>(),
        Some(&"the storage panics in sync_data")
    );
    for answer in answers {
        let err = answer.unwrap().unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Backend {
                    backend: "redb",
                    operation: "commit a batch of writes",
                    ..
                }
            ),
            "{err:?}"
        );
        let source = std::error::Error::source(&err).expect("the cause is kept");
        assert!(source.to_string().contains("panicked"), "{source}");
    }
    assert!(
        !armed.load(Ordering::Acquire),
        "the commit reached the sync"
    );
    // Nobody is left to collect an answer, so none is kept.
    assert_eq!(archive.group.status(), Status::IDLE);
    // The commit window closed on the way out: no commit is in flight, and one more was counted.
    assert!(archive.db.snapshots.is_stable());
    assert_eq!(commits(&archive), before + 1);

    // The next writer leads its own commit and returns. (What it returns is redb's business:
    // this version refuses writes until the database is reopened, as `Corrupted`.)
    let _ = archive.set("d", "after", b"v");
    assert_eq!(archive.group.status(), Status::IDLE);
}

/// A panic inside a commit that the committer thread leads answers its tasks with an error,
/// and the thread goes on leading: later tasks are answered too, not left waiting.
#[test]
fn a_panicking_commit_led_for_tasks_answers_them_and_the_committer_goes_on() {
    let (archive, armed) = panicking_archive();
    let set = |value: &'static [u8]| -> Change {
        Box::new(move |_: Option<&[u8]>| Ok(Update::Set(value.to_vec())))
    };

    armed.store(true, Ordering::Release);
    let err = block_on(archive.update_async("d", "k", set(b"1"))).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Backend {
                operation: "commit a batch of writes",
                ..
            }
        ),
        "{err:?}"
    );
    // redb refuses writes after a panicked commit; what matters is that an answer comes.
    let _ = block_on(archive.update_async("d", "k", set(b"2")));
    assert_eq!(archive.group.status(), Status::IDLE);
}

/// Dropping the archive commits what tasks queued, answers their futures, and closes the file.
#[test]
fn dropping_the_archive_commits_queued_tasks_and_closes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive.redb");
    let archive = RedbArchive::open(&path).unwrap();
    let futures: Vec<_> = (0..10)
        .map(|key| {
            let change: Change = Box::new(|_: Option<&[u8]>| Ok(Update::Set(b"v".to_vec())));
            archive.update_async("d", &key.to_string(), change)
        })
        .collect();
    drop(archive);
    for future in futures {
        assert_eq!(block_on(future).unwrap(), Some(b"v".to_vec()));
    }
    let reopened = RedbArchive::open(&path).unwrap();
    assert_eq!(reopened.list_keys("d", None, 100).unwrap().names.len(), 10);
}

/// A change may own the last handle on its archive. Dropping it, on the committer thread,
/// closes the archive only after its batch was answered: the other update of that batch is
/// answered `Ok`, as stored, and the file closes once the thread ends.
#[test]
fn a_change_owning_the_last_handle_closes_the_archive_after_its_batch_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive.redb");
    let archive = Arc::new(RedbArchive::open(&path).unwrap());
    let owner = Arc::clone(&archive);
    let slow: Change = Box::new(move |_: Option<&[u8]>| {
        let _owner = &owner;
        std::thread::sleep(std::time::Duration::from_millis(50));
        Ok(Update::Set(b"1".to_vec()))
    });
    let set: Change = Box::new(|_: Option<&[u8]>| Ok(Update::Set(b"2".to_vec())));
    let first = archive.update_async("d", "a", slow);
    let second = archive.update_async("d", "b", set);
    drop(first);
    drop(archive);
    assert_eq!(block_on(second).unwrap(), Some(b"2".to_vec()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let reopened = loop {
        match RedbArchive::open(&path) {
            Ok(reopened) => break reopened,
            Err(Error::AlreadyOpen { .. }) if std::time::Instant::now() < deadline => {
                std::thread::yield_now();
            }
            Err(other) => panic!("reopening: {other:?}"),
        }
    };
    assert_eq!(reopened.get("d", "a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(reopened.get("d", "b").unwrap(), Some(b"2".to_vec()));
}

/// A change that awaits an update of its own archive would wait for itself: the update's
/// future answers an error at once instead.
#[test]
fn a_change_that_awaits_an_update_of_its_archive_gets_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Arc::new(RedbArchive::open(dir.path().join("archive.redb")).unwrap());
    let inner = Arc::clone(&archive);
    let change: Change = Box::new(move |_: Option<&[u8]>| {
        let nested: Change = Box::new(|_: Option<&[u8]>| Ok(Update::Keep));
        block_on(inner.update_async("d", "other", nested))?;
        Ok(Update::Set(b"v".to_vec()))
    });
    let error = block_on(archive.update_async("d", "k", change)).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Backend {
                operation: "update a value",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!archive.has_domain("d").unwrap());
}
