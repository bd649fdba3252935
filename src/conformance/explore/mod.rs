//! The interleaving explorer: every ordered pair of session operations, at every schedule with
//! up to two preemptions, with faults, on any backend, checked against a sequential model.
//!
//! **The alphabet.** [`Op`] is every operation that writes or judges a session, as a value: the
//! starts (new, resume, resume once a touch is due, resume once expired), the saves (plain,
//! binding, rebinding, unbinding), `update` and `update_send`, the regenerates (clean, changed,
//! rebinding), `destroy`, `revoke_user`, `revoke_user_except`, `sweep`, `is_live` and
//! `user_sessions`, each through the application's `Sessions` or a second one over the same
//! archive with other settings ([`Via`]). A new [`Kind`] joins every pair by being added to
//! [`Kind::ALL`]. The tower-sessions store's operations form a family of their own
//! ([`TowerOp`], with the `tower-sessions` feature).
//!
//! **The world.** Each schedule runs on a fresh archive holding two sessions of alice, `S` (the
//! one every request targets) and `K`; the state is a struct, a `HashMap<String, Value>` or a
//! struct of floats ([`StateKind`]); ids are plain or hashed at rest ([`Ids`]). Every write of
//! operation `i` adds the tag `i + 1` to the state, so the checker tells the writes apart.
//!
//! **Schedules.** Each operation runs on a thread of its own. The archive every `Sessions` of
//! the world uses parks the calling thread before each call, and the protocol's update lock
//! calls a hook while another thread holds it ([`set_lock_wait_hook`]); a controller lets one
//! thread run at a time, from one such point to its next. A [`Budget`] bounds the preemptions
//! (switching away from a thread that could go on) and the faults (a call that fails, or one
//! applied that then reports an error, as a timeout does) per schedule; every schedule within
//! it is run (depth first, each from a fresh world). Calls that commute with every other call (a
//! hint such as `expire_domain`; the expiry index's calls when no operation sweeps) are no
//! places to switch. Seeded random schedules of three operations ([`run_seed`]) go beyond the
//! bound.
//!
//! **Checks.** After each schedule the archive is read back (each stored session's state and
//! binding), `is_live`, `user_sessions` and finally `revoke_user` of each user run, and the
//! [`Invariant`]s are checked: a search for an order of the operations' events under which the
//! sequential reference model returns what every operation returned and leaves what the
//! archive holds (a failed operation may have stopped anywhere, and applied its write where its
//! documentation says the outcome is unknown). A failing schedule is reported in full
//! ([`Failure`]): the calls in order, the faults, what each operation returned, and the closest
//! order of the model's events; [`replay`] runs it again.
//!
//! [`session_explorer!`](crate::session_explorer) stamps out the tests for a backend; see
//! [`Suite`] for what each runs and [`Depth`] for how deep.
//!
//! # Examples
//!
//! ```
//! use std::path::Path;
//! use std::sync::Arc;
//! use session_archive::conformance::explore::{Kind, Op, Plan, Via, explore};
//! use session_archive::{Archive, MemoryArchive};
//!
//! let open = |_: &Path| Arc::new(MemoryArchive::new()) as Arc<dyn Archive>;
//! let save = Op { kind: Kind::Save, via: Via::App };
//! let update = Op { kind: Kind::Update, via: Via::App };
//! let mut plan = Plan::new();
//! plan.budget.preemptions = 1;
//! let explored = explore(&open, &plan, &[save, update]);
//! assert!(explored.schedules > 2);
//! for failure in &explored.failures {
//!     println!("{failure}");
//! }
//! ```
//!
//! [`set_lock_wait_hook`]: crate::conformance::set_lock_wait_hook

mod alphabet;
mod check;
mod invariants;
mod model;
mod random;
mod report;
mod run;
mod scheduler;
mod settings;
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
/// deliberate defects, if any; see [`Plan::new`] for an example.
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
    /// What the world's archive says of its blocking, instead of what the backend says (see
    /// [`Archive::blocking`](crate::Archive::blocking)): `Some(Blocking::Always)` makes an
    /// in-memory backend take the paths of a server's (guesses, and the async start and update
    /// of the web layers, which the explorer's archive always offers), `Some(Blocking::Commits)`
    /// those of a backend that waits for its commits without a thread. `None`: the backend's.
    pub blocking: Option<crate::archive::Blocking>,
}

impl Plan {
    /// Plain ids, the struct state, up to two preemptions, no faults.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::conformance::explore::{Ids, Plan, StateKind};
    ///
    /// let mut plan = Plan::new();
    /// plan.ids = Ids::Hashed;
    /// plan.state = StateKind::Map;
    /// plan.budget.faults = 1;
    /// assert_eq!(plan.budget.preemptions, 2);
    /// ```
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
            blocking: None,
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
    let (trace, stopped, lock_waits) = shared.take_trace();
    LOCK_WAITS.with(|waits| waits.set(waits.get() + lock_waits));
    (returned, trace, stopped)
}

std::thread_local! {
    /// The lock waits of the schedules this thread ran, for [`Explored::lock_waits`].
    static LOCK_WAITS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
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
    let world = World::<T>::new(open, (plan.ids, plan.blocking), ops);
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
        lock_waits: 0,
    };
    LOCK_WAITS.with(|waits| waits.set(0));
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
    explored.lock_waits = LOCK_WAITS.with(std::cell::Cell::get);
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

/// Explores one sequence of operations (a pair, usually) with `plan`'s state type: every
/// schedule within its budget, keeping up to `plan.failures_per_pair` failures.
///
/// # Examples
///
/// ```
/// use std::path::Path;
/// use std::sync::Arc;
/// use session_archive::conformance::explore::{Kind, Op, Plan, Via, explore};
/// use session_archive::{Archive, MemoryArchive};
///
/// let open = |_: &Path| Arc::new(MemoryArchive::new()) as Arc<dyn Archive>;
/// let mut plan = Plan::new();
/// plan.budget.preemptions = 0;
/// let live = Op { kind: Kind::IsLive, via: Via::App };
/// let explored = explore(&open, &plan, &[live, live]);
/// assert_eq!(explored.schedules, 2); // one thread first, or the other
/// assert!(explored.failures.is_empty());
/// ```
pub fn explore(open: &Open, plan: &Plan, ops: &[Op]) -> Explored {
    match plan.state {
        StateKind::Struct => explore_ops::<Plain>(open, plan, ops),
        StateKind::Map => explore_ops::<HashMap<String, serde_json::Value>>(open, plan, ops),
        StateKind::Floats => explore_ops::<Floats>(open, plan, ops),
    }
}

/// Explores each of `pairs` in turn (see [`explore`]), timing the whole.
///
/// # Examples
///
/// ```no_run
/// use std::path::Path;
/// use std::sync::Arc;
/// use session_archive::conformance::explore::{Plan, all_pairs, explore_pairs};
/// use session_archive::{Archive, MemoryArchive};
///
/// let open = |_: &Path| Arc::new(MemoryArchive::new()) as Arc<dyn Archive>;
/// let report = explore_pairs(&open, &Plan::new(), &all_pairs());
/// println!("{report}"); // one line per pair: its schedules
/// for failure in report.failures() {
///     println!("{failure}");
/// }
/// ```
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
///
/// # Examples
///
/// ```
/// use session_archive::conformance::explore::{Op, all_pairs};
///
/// assert_eq!(all_pairs().len(), Op::alphabet().len().pow(2));
/// ```
pub fn all_pairs() -> Vec<[Op; 2]> {
    let alphabet = Op::alphabet();
    alphabet
        .iter()
        .flat_map(|a| alphabet.iter().map(move |b| [*a, *b]))
        .collect()
}

/// Runs one schedule given as its choices (a [`Failure`]'s `schedule`, or
/// [`parse_schedule`] of its text), and checks it.
///
/// # Errors
///
/// The failure, when the schedule breaks an invariant.
///
/// # Examples
///
/// ```
/// use std::path::Path;
/// use std::sync::Arc;
/// use session_archive::conformance::explore::{Kind, Op, Plan, Via, parse_schedule, replay};
/// use session_archive::{Archive, MemoryArchive};
///
/// let open = |_: &Path| Arc::new(MemoryArchive::new()) as Arc<dyn Archive>;
/// let live = Op { kind: Kind::IsLive, via: Via::App };
/// let schedule = parse_schedule("1 1 0").expect("a schedule");
/// assert!(replay(&open, &Plan::new(), &[live, live], schedule).is_ok());
/// ```
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
///
/// # Examples
///
/// ```no_run
/// use std::path::Path;
/// use std::sync::Arc;
/// use session_archive::conformance::explore::run_seed;
/// use session_archive::{Archive, MemoryArchive};
///
/// let open = |_: &Path| Arc::new(MemoryArchive::new()) as Arc<dyn Archive>;
/// let explored = run_seed(&open, 8_956_202_608_887_779_881);
/// assert_eq!(explored.ops.len(), 3);
/// ```
pub fn run_seed(open: &Open, seed: u64) -> Explored {
    let (ops, plan, chooser) = suite::random_case(seed);
    let ran = match plan.state {
        StateKind::Struct => run_one::<Plain>(open, &plan, &ops, chooser),
        StateKind::Map => run_one::<HashMap<String, serde_json::Value>>(open, &plan, &ops, chooser),
        StateKind::Floats => run_one::<Floats>(open, &plan, &ops, chooser),
    };
    Explored::random(&ops, seed, ran.verdict.err().map(|failure| *failure))
}

/// Reads a schedule as [`Failure::schedule_text`] writes it (`0 0 1f 1 0l`: each choice's
/// thread, with `f` for a call made to fail and `l` for one applied, then failed), for
/// [`replay`]; `None` for text that is not one.
///
/// # Examples
///
/// ```
/// use session_archive::conformance::explore::{Choice, Fault, parse_schedule};
///
/// let schedule = parse_schedule("0 1f 1l").expect("a schedule");
/// assert_eq!(schedule[1], Choice { thread: 1, fault: Some(Fault::Fail) });
/// assert_eq!(schedule[2].fault, Some(Fault::Lost));
/// assert!(parse_schedule("0 x").is_none());
/// ```
pub fn parse_schedule(text: &str) -> Option<Vec<Choice>> {
    text.split_whitespace()
        .map(|choice| {
            let (thread, fault) = match choice.strip_suffix('f') {
                Some(thread) => (thread, Some(Fault::Fail)),
                None => match choice.strip_suffix('l') {
                    Some(thread) => (thread, Some(Fault::Lost)),
                    None => (choice, None),
                },
            };
            Some(Choice {
                thread: thread.parse().ok()?,
                fault,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::{Kind, Op, Plan, Via, explore};
    use crate::{Archive, MemoryArchive};

    /// Two updates of one session meet at the update lock: a thread waiting for it is parked
    /// like one before an archive call, so the holder goes on and nothing deadlocks.
    #[test]
    fn update_lock_waits_are_scheduling_points() {
        let open = |_: &Path| Arc::new(MemoryArchive::new()) as Arc<dyn Archive>;
        let update = Op {
            kind: Kind::Update,
            via: Via::App,
        };
        let mut plan = Plan::new();
        plan.budget.preemptions = 1;
        let explored = explore(&open, &plan, &[update, update]);
        assert!(explored.lock_waits > 0, "{explored:?}");
        assert!(explored.failures.is_empty(), "{}", explored.failures[0]);
    }
}
