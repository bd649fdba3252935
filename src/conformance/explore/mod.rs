//! The interleaving explorer (in progress).

#![allow(dead_code, missing_docs)]

mod alphabet;
mod check;
mod invariants;
mod model;
mod random;
mod report;
mod scheduler;
mod states;
mod suite;
#[cfg(feature = "tower-sessions")]
mod tower;
mod world;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use alphabet::Returned;
pub use alphabet::{Kind, Op, User, Via};
use check::{History, Names, check};
pub use invariants::{Invariant, Violation};
pub use report::{Explored, Failure, Report};
pub use scheduler::{Budget, Choice, Fault};
use scheduler::{Chooser, Decision, Dfs, Shared};
pub use states::StateKind;
use states::{Floats, Plain, Tagged};
pub use suite::{Depth, Suite, catches, run_suite, whole};
#[cfg(feature = "tower-sessions")]
pub use tower::{TowerOp, explore_tower, tower_pairs};
use world::World;
pub use world::{Ids, Open};

use crate::conformance::Mutation;

/// What to explore: the world, the state type, the budget per schedule, and the protocol's
/// deliberate defects, if any.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Plain or hashed ids.
    pub ids: Ids,
    /// The state type.
    pub state: StateKind,
    /// Preemptions and faults per schedule.
    pub budget: Budget,
    /// Deliberate defects switched on in every operation's thread.
    pub mutations: Vec<Mutation>,
    /// Stop a pair after this many schedules.
    pub cap: usize,
    /// Stop a pair after this many failures, each breaking another set of invariants.
    pub failures_per_pair: usize,
    /// Keep only the failures that the same schedule does not show with the mutations off:
    /// those the mutations cause.
    pub caused_by_mutations: bool,
}

impl Plan {
    /// Plain ids, the struct state, up to two preemptions, no faults.
    pub fn new() -> Plan {
        Plan {
            ids: Ids::Plain,
            state: StateKind::Struct,
            budget: Budget {
                preemptions: 2,
                faults: 0,
            },
            mutations: Vec::new(),
            cap: 100_000,
            failures_per_pair: 1,
            caused_by_mutations: false,
        }
    }
}

impl Default for Plan {
    fn default() -> Self {
        Plan::new()
    }
}

/// Runs `body(0)` .. `body(threads - 1)`, one thread each, under `chooser`, with `mutations`
/// switched on in each; what each returned (or its panic), the decisions, and whether the
/// schedule ran away.
fn run_threads<R: Send>(
    threads: usize,
    chooser: Chooser,
    mutations: &[Mutation],
    body: impl Fn(usize) -> R + Sync,
    panicked: impl Fn(String) -> R + Sync,
) -> (Vec<R>, Vec<Decision>, bool) {
    let shared = Shared::new(threads, chooser);
    let (body, panicked) = (&body, &panicked);
    let returned = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|me| {
                let shared = &shared;
                scope.spawn(move || {
                    crate::conformance::set_mutations(mutations);
                    let _finish = scheduler::enter(shared, me);
                    std::panic::catch_unwind(AssertUnwindSafe(|| body(me)))
                        .unwrap_or_else(|panic| panicked(panic_message(&*panic)))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| panicked(panic_message(&*panic)))
            })
            .collect()
    });
    let (trace, stopped) = shared.take_trace();
    (returned, trace, stopped)
}

/// Runs `ops` in `world`, one thread each, under `chooser`.
fn run_schedule<T: Tagged>(
    world: &World<T>,
    ops: &[Op],
    chooser: Chooser,
    mutations: &[Mutation],
) -> (Vec<Returned>, Vec<Decision>, bool) {
    run_threads(
        ops.len(),
        chooser,
        mutations,
        |me| ops[me].run(world, me),
        Returned::Panicked,
    )
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

/// One schedule run and checked.
struct Ran {
    trace: Vec<Decision>,
    verdict: Result<(), Box<Failure>>,
}

/// Runs one schedule on a fresh world and checks it.
fn run_one<T: Tagged>(open: &Open, plan: &Plan, ops: &[Op], chooser: Chooser) -> Ran {
    let world = World::<T>::new(open, plan.ids, ops);
    let (returned, trace, stopped) = run_schedule(&world, ops, chooser, &plan.mutations);
    let observed = world.observe();
    let names = Names::new(
        &world.stored_name(&world.s),
        &world.stored_name(&world.k),
        &world.created(),
    );
    let vias = [*world.settings(Via::App), *world.settings(Via::Other)];
    let regenerates = ops
        .iter()
        .filter(|op| {
            matches!(
                op.kind,
                Kind::RegenerateClean | Kind::RegenerateChanged | Kind::RegenerateRebind
            )
        })
        .count();
    let history = History {
        ops,
        returned: &returned,
        names: &names,
        vias: &vias,
        t0: world.t0,
        regenerates,
    };
    let mut verdict = check(&history, &observed);
    if stopped && verdict.is_ok() {
        verdict = Err(check::Explanation {
            events: Vec::new(),
            violations: vec![Violation::new(
                Invariant::Linearizable,
                "the schedule ran past its decision limit: a live lock",
            )],
        });
    }
    let verdict = verdict.map_err(|explanation| {
        Box::new(Failure::new(
            ops,
            (plan.ids, plan.state),
            &trace,
            &returned,
            (&names, explanation),
        ))
    });
    Ran { trace, verdict }
}

/// Runs every schedule of `ops` within the plan's budget, keeping the first failure of each
/// kind (by the invariants it breaks) up to the plan's limit.
fn explore_ops<T: Tagged>(open: &Open, plan: &Plan, ops: &[Op]) -> Explored {
    let mut dfs = Dfs::new(plan.budget);
    let mut explored = Explored {
        ops: ops.iter().map(ToString::to_string).collect(),
        schedules: 0,
        diverged: 0,
        capped: false,
        failures: Vec::new(),
    };
    while let Some(prefix) = dfs.next_prefix() {
        if explored.schedules >= plan.cap {
            explored.capped = true;
            break;
        }
        let want = prefix.clone();
        let ran = run_one::<T>(open, plan, ops, Chooser::Replay { prefix });
        explored.schedules += 1;
        let followed = ran
            .trace
            .iter()
            .zip(&want)
            .all(|(decision, choice)| decision.taken().choice == *choice);
        explored.diverged += usize::from(!followed || ran.trace.len() < want.len());
        if let Err(failure) = ran.verdict
            && (!plan.caused_by_mutations || passes_unmutated::<T>(open, plan, ops, &failure))
        {
            let kinds = failure.kinds();
            if explored.failures.iter().all(|f| f.kinds() != kinds) {
                explored.failures.push(*failure);
            }
            if explored.failures.len() >= plan.failures_per_pair {
                break;
            }
        }
        dfs.ran(&ran.trace);
    }
    explored
}

/// Whether `failure`'s schedule passes with the plan's mutations off.
fn passes_unmutated<T: Tagged>(open: &Open, plan: &Plan, ops: &[Op], failure: &Failure) -> bool {
    let mut unmutated = plan.clone();
    unmutated.mutations.clear();
    let prefix = failure.schedule.clone();
    run_one::<T>(open, &unmutated, ops, Chooser::Replay { prefix })
        .verdict
        .is_ok()
}

/// Explores one sequence of operations (a pair, usually) with `plan`'s state type.
pub fn explore(open: &Open, plan: &Plan, ops: &[Op]) -> Explored {
    match plan.state {
        StateKind::Struct => explore_ops::<Plain>(open, plan, ops),
        StateKind::Map => explore_ops::<HashMap<String, serde_json::Value>>(open, plan, ops),
        StateKind::Floats => explore_ops::<Floats>(open, plan, ops),
    }
}

/// Explores every ordered pair of `ops`, collecting the first failure of each pair.
pub fn explore_pairs(open: &Open, plan: &Plan, pairs: &[[Op; 2]]) -> Report {
    let started = Instant::now();
    let mut report = Report::default();
    for pair in pairs {
        report.explored.push(explore(open, plan, pair));
    }
    report.elapsed = started.elapsed();
    report
}

/// Every ordered pair of the alphabet.
pub fn all_pairs() -> Vec<[Op; 2]> {
    let alphabet = Op::alphabet();
    alphabet
        .iter()
        .flat_map(|a| alphabet.iter().map(move |b| [*a, *b]))
        .collect()
}

/// Runs one schedule given as its choices, and checks it.
///
/// # Errors
///
/// The failure, when the schedule breaks an invariant.
pub fn replay(
    open: &Open,
    plan: &Plan,
    ops: &[Op],
    schedule: Vec<Choice>,
) -> Result<(), Box<Failure>> {
    let chooser = Chooser::Replay { prefix: schedule };
    match plan.state {
        StateKind::Struct => run_one::<Plain>(open, plan, ops, chooser).verdict,
        StateKind::Map => {
            run_one::<HashMap<String, serde_json::Value>>(open, plan, ops, chooser).verdict
        }
        StateKind::Floats => run_one::<Floats>(open, plan, ops, chooser).verdict,
    }
}

/// Runs the random schedule of `seed` (its three operations, world, state type, faults and
/// choices all come from the seed) and checks it.
pub fn run_seed(open: &Open, seed: u64) -> Explored {
    let (ops, plan, chooser) = suite::random_case(seed);
    let ran = match plan.state {
        StateKind::Struct => run_one::<Plain>(open, &plan, &ops, chooser),
        StateKind::Map => run_one::<HashMap<String, serde_json::Value>>(open, &plan, &ops, chooser),
        StateKind::Floats => run_one::<Floats>(open, &plan, &ops, chooser),
    };
    Explored::random(&ops, seed, ran.verdict.err().map(|failure| *failure))
}
