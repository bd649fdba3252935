//! What the explorer reports: the schedules it ran per pair, and a failing schedule in full.

use std::fmt;
use std::time::Duration;

use super::alphabet::{Op, Returned};
use super::check::{Explanation, Names};
use super::invariants::Violation;
use super::scheduler::{Choice, Decision, Fault};
use super::states::StateKind;
use super::world::Ids;

/// A schedule under which the protocol broke an invariant, with everything needed to run it
/// again ([`replay`](super::replay)) and to read what happened (its `Display`); see
/// [`Failure::kinds`] for an example.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The operations, thread 0 first.
    pub ops: Vec<String>,
    /// The world: its ids and state type.
    pub world: String,
    /// The choices that make the schedule.
    pub schedule: Vec<Choice>,
    /// The seed of a random schedule.
    pub seed: Option<u64>,
    /// What broke.
    pub violations: Vec<Violation>,
    /// The scheduling points as they ran: which thread made which call, with which fault.
    pub steps: Vec<String>,
    /// What each operation returned.
    pub returned: Vec<String>,
    /// The order of model events that explains the most, and still breaks `violations`.
    pub explanation: Vec<String>,
}

impl Failure {
    pub(super) fn new(
        ops: &[Op],
        (ids, state): (Ids, StateKind),
        trace: &[Decision],
        returned: &[Returned],
        (names, explanation): (&Names, Explanation),
    ) -> Failure {
        let rename = |text: &str| rename(names, text);
        Failure {
            ops: ops.iter().map(ToString::to_string).collect(),
            world: format!("ids {ids:?}, state {state:?}"),
            schedule: trace.iter().map(|d| d.taken().choice).collect(),
            seed: None,
            violations: explanation
                .violations
                .into_iter()
                .map(|mut v| {
                    v.detail = rename(&v.detail);
                    v
                })
                .collect(),
            steps: trace.iter().map(|d| rename(&describe_step(d))).collect(),
            returned: returned.iter().map(|r| rename(&format!("{r:?}"))).collect(),
            explanation: explanation.events,
        }
    }

    /// A failure of the tower-sessions family.
    #[cfg(feature = "tower-sessions")]
    pub(super) fn tower(
        ops: &[super::tower::TowerOp],
        trace: &[Decision],
        answers: &[impl fmt::Debug],
        violations: Vec<Violation>,
    ) -> Failure {
        Failure {
            ops: ops.iter().map(ToString::to_string).collect(),
            world: "tower-sessions ArchiveStore".to_owned(),
            schedule: trace.iter().map(|d| d.taken().choice).collect(),
            seed: None,
            violations,
            steps: trace.iter().map(describe_step).collect(),
            returned: answers.iter().map(|a| format!("{a:?}")).collect(),
            explanation: Vec::new(),
        }
    }

    /// The invariants it breaks.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::path::Path;
    /// # use std::sync::Arc;
    /// # use session_archive::{Archive, MemoryArchive};
    /// use session_archive::conformance::Mutation;
    /// use session_archive::conformance::explore::{Invariant, catches};
    ///
    /// # let open = |_: &Path| Arc::new(MemoryArchive::new()) as Arc<dyn Archive>;
    /// let failure = catches(&open, Mutation::DestroyPlainRemove).expect("caught");
    /// assert!(!failure.kinds().is_empty());
    /// println!("replay with {}", failure.schedule_text());
    /// ```
    pub fn kinds(&self) -> Vec<super::invariants::Invariant> {
        let mut kinds: Vec<_> = self.violations.iter().map(|v| v.invariant).collect();
        kinds.dedup();
        kinds
    }

    /// The schedule as text that [`parse_schedule`](super::parse_schedule) reads back: each
    /// choice as its thread, with `f` (fails) or `l` (applied, then fails) for a fault; see
    /// [`kinds`](Self::kinds) for an example.
    pub fn schedule_text(&self) -> String {
        schedule_text(&self.schedule)
    }
}

/// A schedule as text: `0 0 1f 1 0l ...`.
pub(super) fn schedule_text(schedule: &[Choice]) -> String {
    schedule
        .iter()
        .map(|c| {
            let fault = match c.fault {
                None => "",
                Some(Fault::Fail) => "f",
                Some(Fault::Lost) => "l",
            };
            format!("{}{fault}", c.thread)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe_step(decision: &Decision) -> String {
    let choice = decision.taken().choice;
    let call = decision
        .pending
        .iter()
        .find(|(thread, _)| *thread == choice.thread)
        .map_or("ends", |(_, call)| call.as_str());
    let fault = match choice.fault {
        None => "",
        Some(Fault::Fail) => "  <- fails",
        Some(Fault::Lost) => "  <- applied, then fails",
    };
    let preempt = if decision.taken().preempts {
        " (preemption)"
    } else {
        ""
    };
    format!("T{}: {call}{fault}{preempt}", choice.thread)
}

/// Replaces stored names by the model's names for them (`S`, `K`, `Fresh(i)`).
fn rename(names: &Names, text: &str) -> String {
    let mut text = text.to_owned();
    for sym in [super::model::Sym::S, super::model::Sym::K]
        .into_iter()
        .chain((0..4).map(super::model::Sym::Fresh))
    {
        if let Some(name) = names.name(sym) {
            text = text.replace(name, &format!("<{sym:?}>"));
        }
    }
    text
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the session protocol broke an invariant")?;
        for (thread, op) in self.ops.iter().enumerate() {
            writeln!(f, "  T{thread}: {op}")?;
        }
        writeln!(f, "  {}", self.world)?;
        if let Some(seed) = self.seed {
            writeln!(
                f,
                "  seed {seed} (a random schedule: add the seed to the saved seeds to replay it)"
            )?;
        }
        writeln!(f, "violations:")?;
        for violation in &self.violations {
            writeln!(f, "  {violation}")?;
        }
        writeln!(f, "schedule ({}):", self.schedule_text())?;
        for (at, step) in self.steps.iter().enumerate() {
            writeln!(f, "  {at:>3} {step}")?;
        }
        writeln!(f, "returned:")?;
        for (thread, returned) in self.returned.iter().enumerate() {
            writeln!(f, "  T{thread}: {returned}")?;
        }
        writeln!(f, "closest order of the model's events:")?;
        for event in &self.explanation {
            writeln!(f, "  {event}")?;
        }
        Ok(())
    }
}

/// How many schedules one ordered pair (or triple) ran, and its failures; see
/// [`explore`](super::explore) for an example.
#[derive(Debug, Clone)]
pub struct Explored {
    /// The operations.
    pub ops: Vec<String>,
    /// How many schedules ran.
    pub schedules: usize,
    /// How many replays found the program took another path than the prefix recorded (ids are
    /// random, and listings follow them): the search then went on from where it was.
    pub diverged: usize,
    /// Whether it stopped at the schedule cap before it had run everything.
    pub capped: bool,
    /// The first failing schedule of each kind found.
    pub failures: Vec<Failure>,
    /// How many times, in all its schedules, a thread waited for the update lock another held
    /// (a scheduling point of its own).
    pub lock_waits: usize,
}

/// What [`explore_pairs`](super::explore_pairs) ran and found; its `Display` has a line per
/// pair (see [`Report::schedules`] for an example).
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every pair explored, with its count and failures.
    pub explored: Vec<Explored>,
    /// How long it took.
    pub elapsed: Duration,
}

impl Report {
    /// How many schedules ran in all.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::conformance::explore::Report;
    ///
    /// let report = Report::default();
    /// assert_eq!(report.schedules(), 0);
    /// assert_eq!(report.failures().count(), 0);
    /// ```
    pub fn schedules(&self) -> usize {
        self.explored.iter().map(|e| e.schedules).sum()
    }

    /// Every failure found; see [`schedules`](Self::schedules) for an example.
    pub fn failures(&self) -> impl Iterator<Item = &Failure> {
        self.explored.iter().flat_map(|e| &e.failures)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for explored in &self.explored {
            let ops = &explored.ops;
            let capped = if explored.capped { " (capped)" } else { "" };
            let waits = if explored.lock_waits == 0 {
                String::new()
            } else {
                format!(", {} lock waits", explored.lock_waits)
            };
            let diverged = if explored.diverged == 0 {
                String::new()
            } else {
                format!(", {} replays took another path", explored.diverged)
            };
            let failed = if explored.failures.is_empty() {
                String::new()
            } else {
                format!(", {} failing", explored.failures.len())
            };
            writeln!(
                f,
                "{}: {} schedules{waits}{diverged}{capped}{failed}",
                ops.join(" | "),
                explored.schedules
            )?;
        }
        writeln!(
            f,
            "{} pairs, {} schedules, {} failing pairs, in {:.1?}",
            self.explored.len(),
            self.schedules(),
            self.explored
                .iter()
                .filter(|e| !e.failures.is_empty())
                .count(),
            self.elapsed
        )
    }
}
