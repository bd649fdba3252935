//! The tower-sessions family: `ArchiveStore`'s `create`, `save`, `load`, `delete` and
//! `delete_expired`, explored like the session alphabet, with a model of its own.
//!
//! The world holds one record `R` (expiring 600 s after the start). A `delete_expired` first
//! moves the clock past that expiry; a `save` moves R's expiry later. Once the schedule is over,
//! the checker compares the records with the model's, then moves the clock past every expiry
//! and runs `delete_expired` once more: no record may be left (the index missed none).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;
use time::OffsetDateTime;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{ExpiredDeletion, SessionStore};

use super::invariants::{Invariant, Violation};
use super::scheduler::{Chooser, Decision, Dfs};
use super::states::Tags;
use super::world::{Open, scratch, t0};
use super::{Budget, Explored, Failure, run_threads};
use crate::archive::{Archive, ArchiveExt};
use crate::session::ManualClock;
use crate::tower_sessions::ArchiveStore;

/// An operation of the tower-sessions family; see [`explore_tower`] for an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TowerOp {
    /// `create` of a new record expiring with R.
    Create,
    /// `save` of R with new data and a later expiry.
    Save,
    /// `load` of R.
    Load,
    /// `delete` of R.
    Delete,
    /// `delete_expired` once R has expired; through a second store with another index
    /// granularity when `second`.
    DeleteExpired {
        /// Through the second store.
        second: bool,
    },
}

impl TowerOp {
    /// The whole family.
    pub const ALL: [TowerOp; 6] = [
        TowerOp::Create,
        TowerOp::Save,
        TowerOp::Load,
        TowerOp::Delete,
        TowerOp::DeleteExpired { second: false },
        TowerOp::DeleteExpired { second: true },
    ];
}

impl fmt::Display for TowerOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TowerOp::Create => "tower create",
            TowerOp::Save => "tower save",
            TowerOp::Load => "tower load",
            TowerOp::Delete => "tower delete",
            TowerOp::DeleteExpired { second: false } => "tower delete_expired",
            TowerOp::DeleteExpired { second: true } => "tower delete_expired [second store]",
        })
    }
}

/// R's id, and the first id operation `me` creates.
const R: i128 = 1;
fn created_id(me: usize) -> i128 {
    1000 + i128::try_from(me).unwrap_or(0)
}

/// Seconds after the start: R's expiry (and a created record's), a saved R's, and the time a
/// `delete_expired` runs at.
const EXPIRES: u64 = 600;
const SAVED_EXPIRES: u64 = 1200;
const SWEEP_AT: u64 = 700;
/// When the final `delete_expired` runs: past every expiry.
const FINAL_SWEEP_AT: u64 = 2 * SAVED_EXPIRES;
/// The index's bucket width (the second store's is 60 s): coarse, so that a sweep walks a few
/// buckets, each a scheduling point.
const GRANULARITY: u64 = 300;

/// Runs a store future to its end: outside a tokio runtime the store runs each call on the
/// calling thread, so the future is ready at once; it is polled until it is.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::yield_now();
    }
}

fn record(id: i128, tags: &[u32], expires: u64, t0: u64) -> Record {
    let data: HashMap<String, Value> = tags
        .iter()
        .map(|tag| (format!("tag{tag}"), Value::from(*tag)))
        .collect();
    let at = i64::try_from(t0 + expires).unwrap_or(i64::MAX);
    Record {
        id: Id(id),
        data,
        expiry_date: OffsetDateTime::from_unix_timestamp(at).unwrap_or(OffsetDateTime::UNIX_EPOCH),
    }
}

fn tags_of(data: &HashMap<String, Value>) -> Tags {
    data.keys()
        .filter_map(|key| key.strip_prefix("tag")?.parse().ok())
        .collect()
}

/// The domain of the record `id`.
fn domain(id: i128) -> String {
    format!("tower-session-{}", Id(id))
}

/// A store over `archive` whose clock stands at `at`, with index buckets `granularity` wide.
fn store(archive: &Arc<dyn Archive>, at: u64, granularity: u64) -> ArchiveStore {
    ArchiveStore::new(Arc::clone(archive))
        .with_clock(ManualClock::new(UNIX_EPOCH + Duration::from_secs(at)))
        .with_sweep_granularity(Duration::from_secs(granularity))
}

/// A store at the start: operations other than `delete_expired` share none, as requests of
/// one process share nothing but the archive.
fn stores_first(archive: &Arc<dyn Archive>, t0: u64) -> ArchiveStore {
    store(archive, t0, GRANULARITY)
}

/// One schedule's world.
struct TowerWorld {
    raw: Arc<dyn Archive>,
    scheduled: Arc<dyn Archive>,
    /// The store at the start, and one for each operation: a `delete_expired`'s clock stands
    /// past R's expiry, with the second store's granularity where it asks for it.
    stores: Vec<ArchiveStore>,
    t0: u64,
    _dir: tempfile::TempDir,
}

/// What a tower operation returned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// `create` answered with the domain of the record it stored.
    Created(String),
    /// `save` or `delete` answered `Ok`, or `delete_expired` did.
    Done,
    /// `load` found R with these tags, or nothing.
    Loaded(Option<Tags>),
    /// It answered an error.
    Failed(String),
}

impl TowerWorld {
    fn new(open: &Open, ops: &[TowerOp]) -> TowerWorld {
        let dir = tempfile::Builder::new()
            .prefix("explore-")
            .tempdir_in(scratch())
            .expect("a temporary directory");
        let raw = open(dir.path());
        let scheduled: Arc<dyn Archive> = Arc::new(super::scheduler::Scheduled::new(
            Arc::clone(&raw),
            Box::new(|_, _| {}),
            true,
            None,
        ));
        let t0 = t0();
        let main = store(&scheduled, t0, GRANULARITY);
        let mut first = record(R, &[100], EXPIRES, t0);
        block_on(main.create(&mut first)).expect("create R");
        let mut stores = vec![main];
        stores.extend(ops.iter().map(|op| match op {
            TowerOp::DeleteExpired { second } => store(
                &scheduled,
                t0 + SWEEP_AT,
                if *second { 60 } else { GRANULARITY },
            ),
            _ => stores_first(&scheduled, t0),
        }));
        TowerWorld {
            raw,
            scheduled,
            stores,
            t0,
            _dir: dir,
        }
    }

    fn run(&self, op: TowerOp, me: usize) -> Answer {
        let tag = super::alphabet::tag_of(me);
        let store = &self.stores[me + 1];
        let answer = match op {
            TowerOp::Create => {
                let mut new = record(created_id(me), &[tag], EXPIRES, self.t0);
                block_on(store.create(&mut new)).map(|()| Answer::Created(domain(new.id.0)))
            }
            TowerOp::Save => {
                let saved = record(R, &[100, tag], SAVED_EXPIRES, self.t0);
                block_on(store.save(&saved)).map(|()| Answer::Done)
            }
            TowerOp::Load => block_on(store.load(&Id(R)))
                .map(|loaded| Answer::Loaded(loaded.map(|record| tags_of(&record.data)))),
            TowerOp::Delete => block_on(store.delete(&Id(R))).map(|()| Answer::Done),
            TowerOp::DeleteExpired { .. } => {
                block_on(store.delete_expired()).map(|()| Answer::Done)
            }
        };
        answer.unwrap_or_else(|err| Answer::Failed(err.to_string()))
    }

    /// The stored records, by domain: their tags and expiry (seconds after the start).
    fn records(&self) -> BTreeMap<String, (Tags, u64)> {
        let mut records = BTreeMap::new();
        for domain in self.raw.domains() {
            let domain = domain.expect("list the archive's domains");
            if !domain.starts_with("tower-session-") {
                continue;
            }
            let Some(raw) = self.raw.get(&domain, "record.json").expect("read a record") else {
                continue;
            };
            let value: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
            let data: HashMap<String, Value> = value
                .get("data")
                .and_then(|data| serde_json::from_value(data.clone()).ok())
                .unwrap_or_default();
            let unix = value
                .pointer("/expiry/unix")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            records.insert(domain, (tags_of(&data), unix.saturating_sub(self.t0)));
        }
        records
    }

    /// The records left once every record has expired and `delete_expired` ran again.
    fn left_after_final_sweep(&self) -> BTreeSet<String> {
        let sweeper = store(&self.scheduled, self.t0 + FINAL_SWEEP_AT, GRANULARITY);
        let swept = block_on(sweeper.delete_expired());
        let mut left: BTreeSet<String> = self.records().into_keys().collect();
        if let Err(err) = swept {
            left.insert(format!("(the final delete_expired failed: {err})"));
        }
        left
    }
}

/// A record of the model: its tags and expiry (seconds after the start).
type Rec = (Tags, u64);

/// The model: the records by domain (`R`'s, and the one a `create` of operation `i` claims).
type Model = BTreeMap<String, Rec>;

/// The time (seconds after the start) an operation runs at: a `delete_expired` through a store
/// of its own whose clock stands past R's expiry, the others at the start.
fn op_time(op: TowerOp) -> u64 {
    match op {
        TowerOp::DeleteExpired { .. } => SWEEP_AT,
        _ => 0,
    }
}

/// Where a tower operation is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Stage {
    /// The operation's one atomic step, or a `delete_expired`'s judgement.
    Act,
    /// A `delete_expired` judged these expired; its removals come next.
    Sweep(BTreeSet<String>),
    Done,
    Abandoned,
}

/// The records expired at `now`.
fn expired(model: &Model, now: u64) -> BTreeSet<String> {
    model
        .iter()
        .filter(|(_, (_, at))| *at <= now)
        .map(|(name, _)| name.clone())
        .collect()
}

/// `model` with `base` removed, and every subset of `optional`.
fn removals(model: &Model, base: &BTreeSet<String>, optional: &[String]) -> Vec<Model> {
    (0..1_usize << optional.len())
        .map(|mask| {
            let mut next = model.clone();
            next.retain(|name, _| !base.contains(name));
            for (i, name) in optional.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    next.remove(name);
                }
            }
            next
        })
        .collect()
}

/// Every way the next event of operation `me` can go, with what it answers (if it answers).
/// A failed `delete_expired` may have removed any of the expired records, one by one.
fn tower_steps(
    (op, me): (TowerOp, usize),
    stage: &Stage,
    model: &Model,
    failed: bool,
) -> Vec<(Stage, Model, Option<Answer>)> {
    let r = domain(R);
    let now = op_time(op);
    let live = |name: &str| model.get(name).filter(|(_, at)| *at > now);
    let tag = super::alphabet::tag_of(me);
    let mut next = model.clone();
    match (op, stage) {
        (_, Stage::Done | Stage::Abandoned) => Vec::new(),
        (TowerOp::DeleteExpired { .. }, Stage::Act) => {
            vec![(Stage::Sweep(expired(model, now)), next, None)]
        }
        (TowerOp::DeleteExpired { .. }, Stage::Sweep(judged)) => {
            // It must remove what it judged expired; what expired since, it may.
            let (base, more): (BTreeSet<String>, Vec<String>) = if failed {
                (BTreeSet::new(), expired(model, now).into_iter().collect())
            } else {
                let more = expired(model, now).difference(judged).cloned().collect();
                (judged.clone(), more)
            };
            removals(model, &base, &more)
                .into_iter()
                .map(|next| (Stage::Done, next, Some(Answer::Done)))
                .collect()
        }
        (TowerOp::Create, _) => {
            let name = domain(created_id(me));
            next.insert(name.clone(), (Tags::from([tag]), EXPIRES));
            vec![(Stage::Done, next, Some(Answer::Created(name)))]
        }
        (TowerOp::Save, _) => {
            if live(&r).is_some() {
                next.insert(r, (Tags::from([100, tag]), SAVED_EXPIRES));
            }
            vec![(Stage::Done, next, Some(Answer::Done))]
        }
        (TowerOp::Load, _) => {
            let loaded = live(&r).map(|(tags, _)| tags.clone());
            vec![(Stage::Done, next, Some(Answer::Loaded(loaded)))]
        }
        (TowerOp::Delete, _) => {
            next.remove(&r);
            vec![(Stage::Done, next, Some(Answer::Done))]
        }
    }
}

/// A search for an order of the operations' events that explains their answers and the
/// records left. With `strict`, a failed call leaves the records as they were (the module
/// docs: "A failed call leaves the records as they were"), but for `delete_expired`, whose
/// removals are one by one; otherwise a failed call may have been applied (the module docs: a
/// write whose reply was lost, as a timeout loses it, may be stored).
struct TowerSearch<'a> {
    ops: &'a [TowerOp],
    answers: &'a [Answer],
    records: &'a Model,
    strict: bool,
    visited: std::collections::HashSet<(Model, Vec<Stage>)>,
}

impl TowerSearch<'_> {
    fn go(&mut self, model: &Model, stages: &[Stage]) -> bool {
        if !self.visited.insert((model.clone(), stages.to_vec())) {
            return false;
        }
        let over = |s: &Stage| matches!(s, Stage::Done | Stage::Abandoned);
        if stages.iter().all(over) {
            return model == self.records;
        }
        for me in (0..self.ops.len()).filter(|&me| !over(&stages[me])) {
            let op = self.ops[me];
            let failed = matches!(self.answers[me], Answer::Failed(_));
            if failed {
                let mut next = stages.to_vec();
                next[me] = Stage::Abandoned;
                if self.go(model, &next) {
                    return true;
                }
            }
            for (stage, state, expect) in tower_steps((op, me), &stages[me], model, failed) {
                let allowed = if failed {
                    !self.strict || state == *model || matches!(op, TowerOp::DeleteExpired { .. })
                } else {
                    expect.as_ref().is_none_or(|e| *e == self.answers[me])
                };
                let mut next = stages.to_vec();
                next[me] = stage;
                if allowed && self.go(&state, &next) {
                    return true;
                }
            }
        }
        false
    }
}

/// Whether some order of the events explains the answers and the records left.
fn explains(ops: &[TowerOp], answers: &[Answer], records: &Model, strict: bool) -> bool {
    let mut search = TowerSearch {
        ops,
        answers,
        records,
        strict,
        visited: std::collections::HashSet::new(),
    };
    let initial = Model::from([(domain(R), (Tags::from([100]), EXPIRES))]);
    search.go(&initial, &vec![Stage::Act; ops.len()])
}

/// Runs and checks one schedule of `ops`.
fn run_one(
    open: &Open,
    ops: &[TowerOp],
    chooser: Chooser,
) -> (Vec<Decision>, Result<(), Box<Failure>>) {
    let world = TowerWorld::new(open, ops);
    let (answers, trace, stopped) = run_threads(
        ops.len(),
        chooser,
        &[],
        |me| world.run(ops[me], me),
        |panic| Answer::Failed(format!("panicked: {panic}")),
    );
    let records = world.records();
    let mut violations = Vec::new();
    if stopped {
        violations.push(Violation::new(Invariant::Linearizable, "a live lock"));
    }
    // A call applied whose reply was lost may have stored its write, as the store documents.
    let lost_reply = trace
        .iter()
        .any(|decision| decision.taken().choice.fault == Some(super::Fault::Lost));
    if !explains(ops, &answers, &records, !lost_reply) {
        let invariant = if explains(ops, &answers, &records, false) {
            Invariant::FailuresDocumented
        } else {
            Invariant::Linearizable
        };
        violations.push(Violation::new(
            invariant,
            format!("no order of the operations explains {answers:?} leaving {records:?}"),
        ));
    }
    let left = world.left_after_final_sweep();
    if !left.is_empty() {
        violations.push(Violation::new(
            Invariant::ExpiryIndexExact,
            format!("records left after every record expired and delete_expired ran: {left:?}"),
        ));
    }
    if violations.is_empty() {
        return (trace, Ok(()));
    }
    let failure = Failure::tower(ops, &trace, &answers, violations);
    (trace, Err(Box::new(failure)))
}

/// Every ordered pair of the family.
///
/// # Examples
///
/// ```
/// use session_archive::conformance::explore::{TowerOp, tower_pairs};
///
/// assert_eq!(tower_pairs().len(), TowerOp::ALL.len().pow(2));
/// ```
pub fn tower_pairs() -> Vec<[TowerOp; 2]> {
    TowerOp::ALL
        .iter()
        .flat_map(|a| TowerOp::ALL.iter().map(move |b| [*a, *b]))
        .collect()
}

/// Explores every schedule of `ops` within `budget`; stops at the first failure.
///
/// # Examples
///
/// ```
/// use std::path::Path;
/// use std::sync::Arc;
/// use session_archive::conformance::explore::{Budget, TowerOp, explore_tower};
/// use session_archive::{Archive, MemoryArchive};
///
/// let open = |_: &Path| Arc::new(MemoryArchive::new()) as Arc<dyn Archive>;
/// let budget = Budget { preemptions: 1, faults: 0 };
/// let explored = explore_tower(&open, budget, &[TowerOp::Load, TowerOp::Delete]);
/// assert!(explored.failures.is_empty(), "{}", explored.failures[0]);
/// ```
pub fn explore_tower(open: &Open, budget: Budget, ops: &[TowerOp]) -> Explored {
    let mut dfs = Dfs::new(budget);
    let mut explored = Explored {
        ops: ops.iter().map(ToString::to_string).collect(),
        schedules: 0,
        diverged: 0,
        capped: false,
        failures: Vec::new(),
        lock_waits: 0,
    };
    while let Some(prefix) = dfs.next_prefix() {
        let (trace, verdict) = run_one(open, ops, Chooser::Replay { prefix });
        explored.schedules += 1;
        if let Err(failure) = verdict {
            explored.failures.push(*failure);
            break;
        }
        dfs.ran(&trace);
    }
    explored
}

impl fmt::Debug for TowerWorld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerWorld").finish_non_exhaustive()
    }
}
