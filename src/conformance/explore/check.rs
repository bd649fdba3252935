//! The linearizability check: a search for an order of every operation's events (each
//! operation's own in program order, a failed operation's cut short where it may have stopped)
//! under which the reference model returns what the operations returned and leaves what the
//! archive holds. When there is none, the order that breaks the fewest invariants is reported.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::alphabet::{Failed, Found, Kind, Op, Returned, User, Wrote};
use super::invariants::{Final, Invariant, Violation, final_violations, user_index_exact};
use super::model::{Expect, Stage, State, Step, Sym, Vias, may_apply_when_failed, op_time, steps};
use super::states::Tags;
use super::world::Observed;

/// Stored names and model sessions.
#[derive(Debug, Clone, Default)]
pub(super) struct Names {
    by_name: BTreeMap<String, Sym>,
}

impl Names {
    /// `S`, `K`, and what each operation created.
    pub(super) fn new(s: &str, k: &str, created: &[(usize, String)]) -> Names {
        let mut by_name = BTreeMap::from([(s.to_owned(), Sym::S), (k.to_owned(), Sym::K)]);
        for (me, name) in created {
            by_name.entry(name.clone()).or_insert(Sym::Fresh(*me));
        }
        Names { by_name }
    }

    pub(super) fn sym(&self, name: &str) -> Option<Sym> {
        self.by_name.get(name).copied()
    }

    /// The name of `sym`, for a report.
    pub(super) fn name(&self, sym: Sym) -> Option<&str> {
        self.by_name
            .iter()
            .find(|(_, s)| **s == sym)
            .map(|(name, _)| name.as_str())
    }
}

/// What one event of an operation really returned.
enum Real<'a> {
    /// The event returns nothing of its own.
    Nothing,
    Found(&'a Found),
    Wrote(&'a Wrote),
    Gone,
    Count(usize),
    Live(bool),
    Listed(&'a [String]),
    /// The operation failed with another error at this event, or before it.
    Failed,
}

fn failed<T>(result: &Result<T, Failed>) -> Option<Real<'static>> {
    match result {
        Err(Failed::Gone) => Some(Real::Gone),
        Err(Failed::Error(_)) => Some(Real::Failed),
        Ok(_) => None,
    }
}

/// What the operation returned at `stage`.
fn real_at<'a>(returned: &'a Returned, stage: &Stage) -> Real<'a> {
    match (returned, stage) {
        (
            Returned::Start(start) | Returned::Request { start, .. },
            Stage::Start | Stage::Remove(_),
        ) => failed(start).unwrap_or_else(|| start.as_ref().map_or(Real::Failed, Real::Found)),
        (Returned::Request { write, .. }, Stage::Write(_)) => match write {
            None => Real::Failed,
            Some(write) => {
                failed(write).unwrap_or_else(|| write.as_ref().map_or(Real::Failed, Real::Wrote))
            }
        },
        (
            Returned::Count(count),
            Stage::Single | Stage::Revoking { .. } | Stage::Judge | Stage::SweepRemove { .. },
        ) => match count {
            Ok(count) if matches!(stage, Stage::Revoking { .. } | Stage::SweepRemove { .. }) => {
                Real::Count(*count)
            }
            Ok(_) => Real::Nothing,
            Err(_) => Real::Failed,
        },
        (Returned::Live(live), Stage::Single) => {
            live.as_ref().map_or(Real::Failed, |l| Real::Live(*l))
        }
        (Returned::Listed(listed), Stage::Listing { .. }) => {
            listed.as_ref().map_or(Real::Failed, |l| Real::Listed(l))
        }
        (Returned::Listed(Err(_)), Stage::Single) => Real::Failed,
        _ => Real::Nothing,
    }
}

/// A schedule's history: the operations, what they returned, and the names they created.
pub(super) struct History<'a> {
    pub(super) ops: &'a [Op],
    pub(super) returned: &'a [Returned],
    pub(super) names: &'a Names,
    pub(super) vias: &'a Vias,
    pub(super) t0: u64,
    /// How many regenerates ran: a revoke may count each one's copy too.
    pub(super) regenerates: usize,
}

/// Compares what the model's event says with what the operation returned there.
fn compare(history: &History<'_>, op: Op, expect: &Expect, real: &Real<'_>) -> Option<Violation> {
    let mismatch = |detail: String| Some(Violation::new(Invariant::Linearizable, detail));
    match (expect, real) {
        (_, Real::Failed | Real::Nothing) | (Expect::Nothing, _) | (Expect::Gone, Real::Gone) => {
            None
        }
        (Expect::Found(want), Real::Found(found)) => compare_found(op, want.as_ref(), found),
        (Expect::Gone, Real::Wrote(_)) => mismatch(format!("{op} succeeded; it should be gone")),
        (Expect::Wrote { .. }, Real::Gone) => mismatch(format!("{op} was gone; it should succeed")),
        (Expect::Wrote { tags, id, removed }, Real::Wrote(wrote)) => {
            compare_wrote(history, op, (tags, *id, *removed), wrote)
        }
        (Expect::Revoked(ended), Real::Count(count)) => {
            (*count < *ended || *count > ended + history.regenerates).then(|| {
                Violation::new(
                    Invariant::Linearizable,
                    format!("{op} returned {count}, having ended {ended}"),
                )
            })
        }
        (Expect::Swept(want), Real::Count(count)) => (*count < *want).then(|| {
            Violation::new(
                Invariant::ExpiryRespected,
                format!("{op} returned {count}, but ended {want}"),
            )
        }),
        (Expect::Live(want), Real::Live(live)) => (want != live).then(|| {
            Violation::new(
                Invariant::ExpiryRespected,
                format!("{op} returned {live}, not {want}"),
            )
        }),
        (Expect::Listed { must, may }, Real::Listed(listed)) => {
            compare_listed(history, op, (must, may), listed)
        }
        _ => mismatch(format!(
            "{op} returned {}, the model {expect:?}",
            describe(real)
        )),
    }
}

/// A start: a new session where the model has none (or an expired one), or the pair stored.
fn compare_found(op: Op, want: Option<&(Tags, Option<User>)>, found: &Found) -> Option<Violation> {
    let want = want.map(|(tags, user)| (tags.clone(), user.map(|u| u.name().to_owned())));
    (want != *found).then(|| {
        let invariant = if want.is_none() || found.is_none() {
            Invariant::ExpiryRespected
        } else {
            Invariant::StateAndBindingTogether
        };
        Violation::new(invariant, format!("{op} found {found:?}, not {want:?}"))
    })
}

/// A write that succeeded: where its handle is, and what it holds (for an update, what the
/// change made; for a clean regenerate, what it moved), or whether a destroy removed anything.
fn compare_wrote(
    history: &History<'_>,
    op: Op,
    (tags, id, removed): (&Tags, Sym, bool),
    wrote: &Wrote,
) -> Option<Violation> {
    let at = history.names.sym(&wrote.id);
    let same = match op.kind {
        Kind::Destroy => removed == wrote.removed,
        kind if kind.is_update() || kind == Kind::RegenerateClean => {
            *tags == wrote.tags && at == Some(id)
        }
        _ => at == Some(id),
    };
    (!same).then(|| {
        Violation::new(
            Invariant::Linearizable,
            format!(
                "{op} left its handle at {at:?} holding {:?} (removed: {}), not at {id:?} \
                 holding {tags:?} (removed: {removed})",
                wrote.tags, wrote.removed
            ),
        )
    })
}

/// A listing: every session live and bound all along, nothing never live and bound.
fn compare_listed(
    history: &History<'_>,
    op: Op,
    (must, may): (&BTreeSet<Sym>, &BTreeSet<Sym>),
    listed: &[String],
) -> Option<Violation> {
    let listed: Vec<Option<Sym>> = listed.iter().map(|n| history.names.sym(n)).collect();
    let missing: Vec<&Sym> = must
        .iter()
        .filter(|s| !listed.contains(&Some(**s)))
        .collect();
    let extra: Vec<&Option<Sym>> = listed
        .iter()
        .filter(|s| s.is_none_or(|s| !may.contains(&s)))
        .collect();
    (!missing.is_empty() || !extra.is_empty()).then(|| {
        Violation::new(
            Invariant::UserIndexExact,
            format!("{op} missed {missing:?} and listed {extra:?} beside {must:?}"),
        )
    })
}

fn describe(real: &Real<'_>) -> String {
    match real {
        Real::Nothing => "nothing".to_owned(),
        Real::Found(found) => format!("{found:?}"),
        Real::Wrote(wrote) => format!("{wrote:?}"),
        Real::Gone => "gone".to_owned(),
        Real::Count(count) => format!("{count}"),
        Real::Live(live) => format!("{live}"),
        Real::Listed(listed) => format!("{listed:?}"),
        Real::Failed => "an error".to_owned(),
    }
}

/// A node of the search: the model's state and every operation's stage.
type Node = (State, Vec<Stage>);

/// The best explanation found: the events in order, and what they break.
#[derive(Debug, Clone, Default)]
pub(super) struct Explanation {
    pub(super) events: Vec<String>,
    pub(super) violations: Vec<Violation>,
}

struct Search<'a> {
    history: &'a History<'a>,
    seen: &'a Final,
    /// Strict: stop at the first violation. Otherwise, collect them.
    strict: bool,
    visited: HashMap<Node, usize>,
    best: Option<Explanation>,
    budget: usize,
}

impl Search<'_> {
    /// Every way `op` number `me` can go on from `node`, with what each breaks.
    fn moves(&self, node: &Node, me: usize) -> Vec<(Node, Vec<Violation>, String)> {
        let history = self.history;
        let (model, stages) = node;
        let op = history.ops[me];
        let at = &stages[me];
        let real = real_at(&history.returned[me], at);
        let mut out = Vec::new();
        let is_failed = matches!(real, Real::Failed);
        if is_failed {
            let mut next = stages.clone();
            next[me] = Stage::Abandoned;
            out.push(((model.clone(), next), Vec::new(), format!("{op} stops")));
        }
        if is_failed && matches!(at, Stage::Write(_)) && history.returned_write_missing(me) {
            return out;
        }
        for step in self.expand((op, me), at, model) {
            let mut violations: Vec<Violation> = compare(history, op, &step.expect, &real)
                .into_iter()
                .collect();
            if is_failed
                && matches!(at, Stage::Write(_))
                && !may_apply_when_failed(op.kind)
                && step.state.contents() != model.contents()
            {
                violations.push(Violation::new(
                    Invariant::FailuresDocumented,
                    format!("{op} failed, yet it {}", step.note),
                ));
            }
            let mut next = stages.clone();
            next[me] = step.stage;
            follow_listings(history, &mut next, me, &step.state);
            out.push((
                (step.state, next),
                violations,
                format!("{op}: {}", step.note),
            ));
        }
        out
    }

    /// The steps of an event.
    fn expand(&self, (op, me): (Op, usize), at: &Stage, model: &State) -> Vec<Step> {
        let now = self.history.time(op);
        steps((op, me, now), at, model, self.history.vias)
    }

    /// Searches on from `node`; `true` once an order with no violation is found (strict).
    fn search(
        &mut self,
        node: &Node,
        events: &mut Vec<String>,
        violations: &mut Vec<Violation>,
    ) -> bool {
        if self.budget == 0 {
            return false;
        }
        self.budget -= 1;
        match self.visited.get(node) {
            Some(&before) if before <= violations.len() => return false,
            _ => {}
        }
        self.visited.insert(node.clone(), violations.len());
        if node.1.iter().all(Stage::is_over) {
            return self.finish(&node.0, events, violations);
        }
        for me in 0..node.1.len() {
            if node.1[me].is_over() {
                continue;
            }
            for (next, found, event) in self.moves(node, me) {
                if self.strict && !found.is_empty() {
                    continue;
                }
                let mark = violations.len();
                violations.extend(found);
                events.push(event);
                if self.search(&next, events, violations) {
                    return true;
                }
                events.pop();
                violations.truncate(mark);
            }
        }
        false
    }

    fn finish(&mut self, model: &State, events: &[String], violations: &[Violation]) -> bool {
        let app = &self.history.vias[0];
        let mut all = violations.to_vec();
        all.extend(final_violations(model, self.seen, app, self.history.end()));
        let done = all.is_empty();
        if self
            .best
            .as_ref()
            .is_none_or(|best| all.len() < best.violations.len())
        {
            self.best = Some(Explanation {
                events: events.to_vec(),
                violations: all,
            });
        }
        done
    }
}

impl History<'_> {
    /// The time `op` runs at.
    pub(super) fn time(&self, op: Op) -> u64 {
        op_time(op, &self.vias[op.via.index()], self.t0)
    }

    /// The time of the observation: the latest of all.
    fn end(&self) -> u64 {
        self.ops
            .iter()
            .map(|op| self.time(*op))
            .fold(self.t0, u64::max)
    }

    /// Whether operation `me` never got to its write (its start failed).
    fn returned_write_missing(&self, me: usize) -> bool {
        matches!(self.returned[me], Returned::Request { write: None, .. })
    }
}

/// After an event, every listing under way notes what would be listed now.
fn follow_listings(history: &History<'_>, stages: &mut [Stage], me: usize, state: &State) {
    for (other, stage) in stages.iter_mut().enumerate() {
        if other == me {
            continue;
        }
        if let Stage::Listing { must, may } = stage {
            let op = history.ops[other];
            let settings = &history.vias[op.via.index()];
            let now = state.listed(User::Alice, settings, history.time(op));
            must.retain(|sym| now.contains(sym));
            may.extend(now);
        }
    }
}

/// The observed end, by model session; names no operation created are violations.
pub(super) fn by_sym(names: &Names, observed: &Observed) -> (Final, Vec<Violation>) {
    let mut unknown = Vec::new();
    let mut stored = BTreeMap::new();
    let mut live = BTreeMap::new();
    for (name, session) in &observed.stored {
        let Some(sym) = names.sym(name) else {
            unknown.push(Violation::new(
                Invariant::EndsAreFinal,
                format!("a session no operation created is stored: {name} {session:?}"),
            ));
            continue;
        };
        stored.insert(sym, (session.tags.clone(), session.user.clone()));
        live.insert(sym, observed.live.get(name).copied().unwrap_or(false));
    }
    let seen = Final { stored, live };
    (seen, unknown)
}

/// How many search nodes the check may visit before it gives up on a schedule.
const SEARCH_BUDGET: usize = 2_000_000;

/// Checks one schedule: the invariants that need no model, then the search for an order.
pub(super) fn check(history: &History<'_>, observed: &Observed) -> Result<(), Explanation> {
    let mut direct = user_index_exact(observed);
    let (seen, unknown) = by_sym(history.names, observed);
    direct.extend(unknown);
    for (me, returned) in history.returned.iter().enumerate() {
        if let Returned::Panicked(message) = returned {
            direct.push(Violation::new(
                Invariant::Linearizable,
                format!("{} panicked: {message}", history.ops[me]),
            ));
        }
    }
    let first: Vec<Stage> = history.ops.iter().map(|op| Stage::first(*op)).collect();
    let root: Node = (State::initial(history.t0), first);
    let mut search = Search {
        history,
        seen: &seen,
        strict: true,
        visited: HashMap::new(),
        best: None,
        budget: SEARCH_BUDGET,
    };
    let explained = search.search(&root, &mut Vec::new(), &mut Vec::new());
    if explained && direct.is_empty() {
        return Ok(());
    }
    if !explained {
        search.strict = false;
        search.visited.clear();
        search.best = None;
        search.budget = SEARCH_BUDGET;
        search.search(&root, &mut Vec::new(), &mut Vec::new());
    }
    let mut explanation = search.best.unwrap_or_default();
    let known: HashSet<Violation> = explanation.violations.iter().cloned().collect();
    explanation
        .violations
        .extend(direct.into_iter().filter(|v| !known.contains(v)));
    if explanation.violations.is_empty() {
        explanation.violations.push(Violation::new(
            Invariant::Linearizable,
            "no order of the events explains the outcome within the search budget",
        ));
    }
    explanation.violations.sort();
    Err(explanation)
}
