//! The parts of the exploration that [`session_explorer!`](crate::session_explorer) stamps out
//! as tests, and how deep each goes: exhaustive on an in-memory backend, a deterministic sample
//! on the others, everything everywhere with `EXPLORE_FULL=1`.

use std::path::Path;
use std::time::Instant;

use super::alphabet::{Kind, Op, User, Via};
use super::random::Rng;
use super::report::{Explored, Failure, Report};
use super::scheduler::{Budget, Chooser};
use super::settings::Ids;
use super::states::StateKind;
use super::world::Open;
use super::{Plan, all_pairs, explore, explore_pairs, run_seed};
use crate::archive::Blocking;
use crate::conformance::Mutation;

/// A part of the exploration: one test each; see [`run_suite`] for an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Suite {
    /// Every ordered pair whose first operation goes through this `Sessions`, up to two
    /// preemptions, no faults.
    Pairs(Via),
    /// Pairs with one injected fault per schedule.
    Faults,
    /// Pairs with another state type.
    State(StateKind),
    /// Pairs in the world with ids hashed at rest.
    Hashed,
    /// Every pair with an operation a web layer runs on its async executor
    /// ([`Kind::ResumeAsync`], [`Kind::UpdateAsync`]). In memory, with the archive saying it
    /// blocks as a server does (so the async start and the update's swap from its guess run,
    /// faults and all), then as a backend that waits for its commits without a thread (so the
    /// update is queued and awaited).
    Async,
    /// Random schedules of three random operations, from new seeds.
    Random,
    /// The saved seeds of random schedules that failed once.
    Seeds,
    /// The tower-sessions store's family (a no-op without the `tower-sessions` feature).
    Tower,
    /// The explorer catches the protocol with this deliberate defect.
    Catches(Mutation),
}

/// How deep a backend explores in `cargo test`; see [`run_suite`] for an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Every pair, as the suite says: for a fast, in-memory backend.
    Full,
    /// A deterministic sample, fewer preemptions: for backends that write files or talk to a
    /// server.
    Sample,
}

/// Whether `EXPLORE_FULL=1` asks for the whole exploration, on every backend.
///
/// # Examples
///
/// ```
/// use session_archive::conformance::explore::whole;
///
/// if whole() {
///     println!("exploring everything");
/// }
/// ```
pub fn whole() -> bool {
    std::env::var("EXPLORE_FULL").is_ok_and(|v| v == "1")
}

fn budget(preemptions: usize, faults: usize) -> Budget {
    Budget {
        preemptions,
        faults,
    }
}

/// Pairs of operations of the application's `Sessions` only.
fn app_pairs() -> Vec<[Op; 2]> {
    all_pairs()
        .into_iter()
        .filter(|pair| pair.iter().all(|op| op.via == Via::App))
        .collect()
}

/// The pairs with an operation that starts or updates as a web layer does on its executor.
fn async_pairs() -> Vec<[Op; 2]> {
    all_pairs()
        .into_iter()
        .filter(|pair| pair.iter().any(|op| op.kind.starts_async()))
        .collect()
}

/// [`Suite::Async`]. At [`Depth::Full`], [`async_pairs`] through an archive that says it blocks
/// as a server (up to two preemptions), then as redb (up to one); each also with one fault and
/// no preemption. At [`Depth::Sample`], every 16th of them as the backend says it blocks (a
/// server's paths on Redis and PostgreSQL, the queued update on redb), with one preemption,
/// then one fault.
fn async_report(open: &Open, depth: Depth) -> Report {
    let started = Instant::now();
    let runs = if depth == Depth::Sample && !whole() {
        vec![(None, 1, every(16, async_pairs()))]
    } else {
        vec![
            (Some(Blocking::Always), 2, async_pairs()),
            (Some(Blocking::Commits), 1, async_pairs()),
        ]
    };
    let mut report = Report::default();
    for (blocking, preemptions, pairs) in runs {
        for budget in [budget(preemptions, 0), budget(0, 1)] {
            let mut plan = Plan::new();
            plan.blocking = blocking;
            plan.budget = budget;
            println!("{blocking:?}: {} pairs, {budget:?}", pairs.len());
            report
                .explored
                .extend(explore_pairs(open, &plan, &pairs).explored);
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// Every `n`-th of `pairs`: a sample that still has every operation in it.
fn every(n: usize, pairs: Vec<[Op; 2]>) -> Vec<[Op; 2]> {
    pairs.into_iter().step_by(n).collect()
}

/// The plan and pairs of a pair suite at a depth: [`Depth::Full`] explores the suite's pairs
/// as listed in [`Suite`]; [`Depth::Sample`] every `n`-th of them with one preemption fewer
/// (faults: none), `n` chosen so that a backend that writes files or talks to a server stays
/// within a few hundred schedules a suite; `EXPLORE_FULL=1` every pair with up to two
/// preemptions, and with one fault up to one preemption.
fn pair_plan(suite: Suite, depth: Depth) -> (Plan, Vec<[Op; 2]>) {
    let mut plan = Plan::new();
    let (full, sample) = (whole(), depth == Depth::Sample && !whole());
    let thin = |pairs: Vec<[Op; 2]>, n: usize| if sample { every(n, pairs) } else { pairs };
    let pairs = match suite {
        Suite::Pairs(via) => {
            plan.budget = budget(if sample { 1 } else { 2 }, 0);
            let pairs = all_pairs()
                .into_iter()
                .filter(|p| p[0].via == via)
                .collect();
            thin(pairs, 24)
        }
        Suite::Faults => {
            plan.budget = budget(usize::from(full), 1);
            thin(if full { all_pairs() } else { app_pairs() }, 24)
        }
        Suite::State(state) => {
            plan.state = state;
            plan.budget = budget(if full { 2 } else { 1 }, 0);
            thin(if full { all_pairs() } else { app_pairs() }, 24)
        }
        _ => {
            plan.ids = Ids::Hashed;
            plan.budget = budget(if full { 2 } else { 1 }, 0);
            thin(
                if full {
                    all_pairs()
                } else {
                    every(2, all_pairs())
                },
                24,
            )
        }
    };
    (plan, pairs)
}

/// Runs one part of the exploration on the backend `open` makes, prints how many schedules
/// each pair ran, and panics with every failing schedule, if any.
///
/// `seeds` is the file of saved seeds that [`Suite::Seeds`] replays (one seed a line, `#`
/// comments); a missing file is an empty one.
///
/// # Examples
///
/// ```no_run
/// use std::path::Path;
/// use std::sync::Arc;
/// use session_archive::conformance::explore::{Depth, Suite, run_suite};
/// use session_archive::{Archive, MemoryArchive};
///
/// let open = |_: &Path| Arc::new(MemoryArchive::new()) as Arc<dyn Archive>;
/// run_suite(&open, Suite::Faults, Depth::Sample, None);
/// ```
pub fn run_suite(open: &Open, suite: Suite, depth: Depth, seeds: Option<&Path>) {
    let report = match suite {
        Suite::Random => random_report(open, depth),
        Suite::Seeds => seeds_report(open, seeds),
        Suite::Tower => tower_report(open, depth),
        Suite::Async => async_report(open, depth),
        Suite::Catches(mutation) => {
            let caught = catches(open, mutation);
            match caught {
                Some(failure) => println!("caught {mutation:?}:\n{failure}"),
                None => panic!("the explorer did not catch {mutation:?}"),
            }
            return;
        }
        _ => {
            let (plan, pairs) = pair_plan(suite, depth);
            println!("{suite:?}: {} pairs, {:?}", pairs.len(), plan.budget);
            explore_pairs(open, &plan, &pairs)
        }
    };
    println!("{report}");
    let failures: Vec<String> = report.failures().map(ToString::to_string).collect();
    assert!(
        failures.is_empty(),
        "{} failing schedules:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The seed `random_triples` draws its schedules from unless `EXPLORE_SEED` says otherwise:
/// fixed, so that `cargo test` (and CI) runs the same schedules every time.
const DEFAULT_SEED: u64 = 0x5eed_2026_1207;

/// Runs random schedules of three operations: from `EXPLORE_SEED` (a number, or `random` for
/// one drawn from the clock, to explore new schedules), or from [`DEFAULT_SEED`]; the seed is
/// printed first so that a run can be repeated.
fn random_report(open: &Open, depth: Depth) -> Report {
    let started = Instant::now();
    let base = match std::env::var("EXPLORE_SEED") {
        Ok(seed) if seed == "random" => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.subsec_nanos());
            Rng::new(u64::from(nanos)).next_u64()
        }
        Ok(seed) => seed.parse().unwrap_or(DEFAULT_SEED),
        Err(_) => DEFAULT_SEED,
    };
    let count = match (whole(), depth) {
        (true, _) => 5000,
        (false, Depth::Full) => 1500,
        (false, Depth::Sample) => 100,
    };
    println!("random schedules from EXPLORE_SEED={base}");
    let mut report = Report::default();
    let mut rng = Rng::new(base);
    for _ in 0..count {
        let seed = rng.next_u64();
        report.explored.push(run_seed(open, seed));
    }
    report.elapsed = started.elapsed();
    report
}

/// Replays the saved seeds.
fn seeds_report(open: &Open, seeds: Option<&Path>) -> Report {
    let started = Instant::now();
    let text = seeds
        .and_then(|path| std::fs::read_to_string(path).ok())
        .unwrap_or_default();
    let mut report = Report::default();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let seed = line
            .parse()
            .unwrap_or_else(|_| panic!("a saved seed is a number: {line:?}"));
        report.explored.push(run_seed(open, seed));
    }
    report.elapsed = started.elapsed();
    report
}

#[cfg(feature = "tower-sessions")]
fn tower_report(open: &Open, depth: Depth) -> Report {
    let started = Instant::now();
    let budgets = match (whole(), depth) {
        (true, _) => vec![budget(2, 0), budget(1, 1)],
        (false, Depth::Full) => vec![budget(2, 0), budget(0, 1)],
        (false, Depth::Sample) => vec![budget(1, 0)],
    };
    let mut report = Report::default();
    for budget in budgets {
        for pair in super::tower::tower_pairs() {
            let explored = super::tower::explore_tower(open, budget, &pair);
            report.explored.push(explored);
        }
    }
    report.elapsed = started.elapsed();
    report
}

#[cfg(not(feature = "tower-sessions"))]
fn tower_report(_: &Open, _: Depth) -> Report {
    println!("the tower-sessions family needs the `tower-sessions` feature");
    Report::default()
}

/// The pairs that reach the code a mutation changes, both ways round.
fn mutation_pairs(mutation: Mutation) -> Vec<[Op; 2]> {
    let app = |kind| Op {
        kind,
        via: Via::App,
    };
    let (a, b) = match mutation {
        Mutation::DestroyPlainRemove => (app(Kind::RegenerateClean), app(Kind::Destroy)),
        _ => (app(Kind::SaveAs(User::Bob)), app(Kind::SaveAs(User::Alice))),
    };
    vec![[a, b], [b, a]]
}

/// Explores, with `mutation` switched on, the pairs that reach the code it changes; returns
/// the first schedule that fails with the mutation and passes without it, or `None` when the
/// explorer misses the defect.
///
/// # Examples
///
/// ```no_run
/// use std::path::Path;
/// use std::sync::Arc;
/// use session_archive::conformance::Mutation;
/// use session_archive::conformance::explore::catches;
/// use session_archive::{Archive, MemoryArchive};
///
/// let open = |_: &Path| Arc::new(MemoryArchive::new()) as Arc<dyn Archive>;
/// assert!(catches(&open, Mutation::DestroyPlainRemove).is_some());
/// ```
pub fn catches(open: &Open, mutation: Mutation) -> Option<Failure> {
    let mut plan = Plan::new();
    plan.mutations = vec![mutation];
    plan.caused_by_mutations = true;
    mutation_pairs(mutation)
        .iter()
        .find_map(|pair| explore(open, &plan, pair).failures.into_iter().next())
}

/// A random schedule's operations, world and budget, all drawn from its seed.
pub(super) fn random_case(seed: u64) -> (Vec<Op>, Plan, Chooser) {
    let mut rng = Rng::new(seed);
    let alphabet = Op::alphabet();
    let ops: Vec<Op> = (0..3)
        .map(|_| alphabet[rng.below(alphabet.len())])
        .collect();
    let mut plan = Plan::new();
    plan.ids = if rng.below(3) == 0 {
        Ids::Hashed
    } else {
        Ids::Plain
    };
    plan.state = StateKind::ALL[rng.below(StateKind::ALL.len())];
    let faults = rng.below(2);
    plan.budget = budget(usize::MAX, faults);
    let chooser = Chooser::Random {
        rng: Rng::new(rng.next_u64()),
        preemptions: usize::MAX,
        faults,
    };
    (ops, plan, chooser)
}

impl Explored {
    /// One random schedule, by its seed.
    pub(super) fn random(ops: &[Op], seed: u64, failure: Option<Failure>) -> Explored {
        Explored {
            ops: ops.iter().map(ToString::to_string).collect(),
            schedules: 1,
            diverged: 0,
            capped: false,
            lock_waits: 0,
            failures: failure
                .map(|mut failure| {
                    failure.seed = Some(seed);
                    failure
                })
                .into_iter()
                .collect(),
        }
    }
}
