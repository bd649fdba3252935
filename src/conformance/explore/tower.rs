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

/// An operation of the tower-sessions family.
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

/// One schedule's world.
struct TowerWorld {
    raw: Arc<dyn Archive>,
    stores: [ArchiveStore; 2],
    clock: ManualClock,
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
    fn new(open: &Open) -> TowerWorld {
        let dir = tempfile::Builder::new()
            .prefix("explore-")
            .tempdir_in(scratch())
            .expect("a temporary directory");
        let raw = open(dir.path());
        let scheduled: Arc<dyn Archive> = Arc::new(super::scheduler::Scheduled::new(
            Arc::clone(&raw),
            Box::new(|_, _| {}),
            true,
        ));
        let t0 = t0();
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(t0));
        let store = |granularity| {
            ArchiveStore::new(Arc::clone(&scheduled))
                .with_clock(clock.clone())
                .with_sweep_granularity(Duration::from_secs(granularity))
        };
        let stores = [store(60), store(10)];
        let mut first = record(R, &[100], EXPIRES, t0);
        block_on(stores[0].create(&mut first)).expect("create R");
        TowerWorld {
            raw,
            stores,
            clock,
            t0,
            _dir: dir,
        }
    }

    fn run(&self, op: TowerOp, me: usize) -> Answer {
        let tag = super::alphabet::tag_of(me);
        let store = &self.stores[0];
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
            TowerOp::DeleteExpired { second } => {
                self.clock_to(self.t0 + SWEEP_AT);
                block_on(self.stores[usize::from(second)].delete_expired()).map(|()| Answer::Done)
            }
        };
        answer.unwrap_or_else(|err| Answer::Failed(err.to_string()))
    }

    fn clock_to(&self, at: u64) {
        let at = UNIX_EPOCH + Duration::from_secs(at);
        if crate::session::Clock::now(&self.clock) < at {
            self.clock.set(at);
        }
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
        self.clock_to(self.t0 + 100_000);
        let swept = block_on(self.stores[0].delete_expired());
        let mut left: BTreeSet<String> = self.records().into_keys().collect();
        if let Err(err) = swept {
            left.insert(format!("(the final delete_expired failed: {err})"));
        }
        left
    }
}

/// A record of the model: its tags and expiry (seconds after the start).
type Rec = (Tags, u64);

/// The model: the time (seconds after the start) and the records by name (`R`, or the domain a
/// `create` of operation `i` claims).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Model {
    now: u64,
    records: BTreeMap<String, Rec>,
}

/// Where a tower operation is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Stage {
    /// A `delete_expired` moves the clock first.
    Tick,
    /// The operation's one atomic step, or a `delete_expired`'s judgement.
    Act,
    /// A `delete_expired` judged these expired; its removals come next.
    Sweep(BTreeSet<String>),
    Done,
    Abandoned,
}

/// What the model says an event answers, when it answers.
type Expect = Option<Answer>;

/// Every way the next event of operation `me` can go.
fn tower_steps(
    op: TowerOp,
    me: usize,
    stage: &Stage,
    model: &Model,
) -> Vec<(Stage, Model, Expect)> {
    let r = domain(R);
    let live = |name: &str| model.records.get(name).filter(|(_, at)| *at > model.now);
    let mut next = model.clone();
    match (op, stage) {
        (_, Stage::Done | Stage::Abandoned) => Vec::new(),
        (TowerOp::DeleteExpired { .. }, Stage::Tick) => {
            next.now = next.now.max(SWEEP_AT);
            vec![(Stage::Act, next, None)]
        }
        (TowerOp::DeleteExpired { .. }, Stage::Act) => {
            let expired = expired(model);
            vec![(Stage::Sweep(expired), next, None)]
        }
        (TowerOp::DeleteExpired { .. }, Stage::Sweep(judged)) => {
            // It must remove what it judged expired; what expired since, it may.
            let more: Vec<String> = expired(model).difference(judged).cloned().collect();
            (0..1_usize << more.len())
                .map(|mask| {
                    let mut next = model.clone();
                    next.records.retain(|name, _| !judged.contains(name));
                    for (i, name) in more.iter().enumerate() {
                        if mask & (1 << i) != 0 {
                            next.records.remove(name);
                        }
                    }
                    (Stage::Done, next, Some(Answer::Done))
                })
                .collect()
        }
        (TowerOp::Create, _) => {
            let name = domain(created_id(me));
            let tag = super::alphabet::tag_of(me);
            next.records
                .insert(name.clone(), (Tags::from([tag]), EXPIRES));
            vec![(Stage::Done, next, Some(Answer::Created(name)))]
        }
        (TowerOp::Save, _) => {
            let tag = super::alphabet::tag_of(me);
            if live(&r).is_some() {
                next.records
                    .insert(r, (Tags::from([100, tag]), SAVED_EXPIRES));
            }
            vec![(Stage::Done, next, Some(Answer::Done))]
        }
        (TowerOp::Load, _) => {
            let loaded = live(&r).map(|(tags, _)| tags.clone());
            vec![(Stage::Done, next, Some(Answer::Loaded(loaded)))]
        }
        (TowerOp::Delete, _) => {
            next.records.remove(&r);
            vec![(Stage::Done, next, Some(Answer::Done))]
        }
    }
}

fn expired(model: &Model) -> BTreeSet<String> {
    model
        .records
        .iter()
        .filter(|(_, (_, at))| *at <= model.now)
        .map(|(name, _)| name.clone())
        .collect()
}

/// Searches for an order of the events that explains the answers and the records.
fn explains(ops: &[TowerOp], answers: &[Answer], records: &BTreeMap<String, Rec>) -> bool {
    fn go(
        ops: &[TowerOp],
        answers: &[Answer],
        records: &BTreeMap<String, Rec>,
        node: (Model, Vec<Stage>),
        visited: &mut std::collections::HashSet<(Model, Vec<Stage>)>,
    ) -> bool {
        if !visited.insert(node.clone()) {
            return false;
        }
        let (model, stages) = node;
        if stages
            .iter()
            .all(|s| matches!(s, Stage::Done | Stage::Abandoned))
        {
            return model.records == *records;
        }
        for me in (0..ops.len()).filter(|&me| !matches!(stages[me], Stage::Done | Stage::Abandoned))
        {
            let failed = matches!(answers[me], Answer::Failed(_));
            if failed {
                let mut next = stages.clone();
                next[me] = Stage::Abandoned;
                if go(ops, answers, records, (model.clone(), next), visited) {
                    return true;
                }
            }
            for (stage, state, expect) in tower_steps(ops[me], me, &stages[me], &model) {
                // A failed call must leave the records as they were (the module docs), but for
                // `delete_expired`, whose removals are one by one.
                let changed = state.records != model.records;
                let allowed = if failed {
                    !changed || matches!(ops[me], TowerOp::DeleteExpired { .. })
                } else {
                    expect.as_ref().is_none_or(|e| *e == answers[me])
                };
                if !allowed {
                    continue;
                }
                let mut next = stages.clone();
                next[me] = stage;
                if go(ops, answers, records, (state, next), visited) {
                    return true;
                }
            }
        }
        false
    }
    let stages = ops
        .iter()
        .map(|op| match op {
            TowerOp::DeleteExpired { .. } => Stage::Tick,
            _ => Stage::Act,
        })
        .collect();
    let mut initial = BTreeMap::new();
    initial.insert(domain(R), (Tags::from([100]), EXPIRES));
    let model = Model {
        now: 0,
        records: initial,
    };
    go(
        ops,
        answers,
        records,
        (model, stages),
        &mut std::collections::HashSet::new(),
    )
}

/// Runs and checks one schedule of `ops`.
fn run_one(
    open: &Open,
    ops: &[TowerOp],
    chooser: Chooser,
) -> (Vec<Decision>, Result<(), Box<Failure>>) {
    let world = TowerWorld::new(open);
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
    if !explains(ops, &answers, &records) {
        violations.push(Violation::new(
            Invariant::Linearizable,
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
pub fn tower_pairs() -> Vec<[TowerOp; 2]> {
    TowerOp::ALL
        .iter()
        .flat_map(|a| TowerOp::ALL.iter().map(move |b| [*a, *b]))
        .collect()
}

/// Explores every schedule of `ops` within `budget`; stops at the first failure.
pub fn explore_tower(open: &Open, budget: Budget, ops: &[TowerOp]) -> Explored {
    let mut dfs = Dfs::new(budget);
    let mut explored = Explored {
        ops: ops.iter().map(ToString::to_string).collect(),
        schedules: 0,
        diverged: 0,
        capped: false,
        failures: Vec::new(),
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
