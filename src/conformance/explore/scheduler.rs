//! The controlled scheduler: each operation runs on a thread of its own, every archive call and
//! every in-process lock wait is a scheduling point where the thread parks, and a [`Chooser`]
//! lets exactly one thread run from one point to its next.
//!
//! A schedule is the list of [`Choice`]s made at the points: which thread runs next, and whether
//! its pending archive call is made to fail ([`Fault`]). Switching away from a thread that could
//! go on is a preemption; switching away from one that finished or waits for a lock is free.
//! [`Dfs`] enumerates every schedule within a budget of preemptions and faults (CHESS-style
//! iterative bounding, stateless: each schedule is run again from the start on a fresh world).

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use parking_lot::{Condvar, Mutex};

use crate::archive::{
    Archive, Blocking, Change, GetManyFuture, Page, Swap, SwapFuture, SwapGroup, UpdateFuture,
};
use crate::conformance::hooked::Call;
use crate::error::{Error, Result};

/// A fault injected into one archive call; see [`parse_schedule`](super::parse_schedule) for
/// an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The call fails and is not applied (a refused write, a dropped connection).
    Fail,
    /// The call is applied, then reports an error (what a timeout gives); writes only.
    Lost,
}

/// One decision at a scheduling point: the thread that runs next, and the fault injected into
/// its pending archive call, if any; see [`parse_schedule`](super::parse_schedule) for an
/// example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Choice {
    /// The index of the operation whose thread runs.
    pub thread: usize,
    /// The fault its pending call gets.
    pub fault: Option<Fault>,
}

/// An alternative at a scheduling point, with what it costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Alt {
    pub(super) choice: Choice,
    /// Whether it switches away from a thread that could go on.
    pub(super) preempts: bool,
}

/// A decision as made: the alternatives there were, the one taken, and what the chosen thread
/// was about to do.
#[derive(Debug, Clone)]
pub(super) struct Decision {
    pub(super) alts: Vec<Alt>,
    pub(super) chosen: usize,
    /// The pending call of each thread that had one, as (thread, description).
    pub(super) pending: Vec<(usize, String)>,
}

impl Decision {
    pub(super) fn taken(&self) -> Alt {
        self.alts[self.chosen]
    }
}

/// Where a parked thread is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Point {
    /// Not started yet.
    Begin,
    /// Before an archive call. A call that `commutes` with every other (a hint such as
    /// `expire_domain`, which changes nothing another call can see during a schedule) is no
    /// place to switch threads: only its own faults are chosen there.
    Call {
        write: bool,
        commutes: bool,
        what: String,
    },
    /// Waiting for an in-process lock another thread holds.
    Blocked,
    /// Woken from a lock wait: it will try the lock again.
    Retry,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    /// Spawned, not yet at its first point.
    Arriving,
    Parked(Point),
    Running,
    Done,
}

/// How the next thread is chosen.
pub(super) enum Chooser {
    /// Follows `prefix`, then takes the first (free, fault-free) alternative.
    Replay { prefix: Vec<Choice> },
    /// Picks among the alternatives at random within a budget.
    Random {
        rng: super::random::Rng,
        preemptions: usize,
        faults: usize,
    },
}

impl Chooser {
    fn pick(&mut self, at: usize, alts: &[Alt]) -> usize {
        match self {
            Chooser::Replay { prefix } => prefix
                .get(at)
                .and_then(|want| alts.iter().position(|alt| alt.choice == *want))
                .unwrap_or(0),
            Chooser::Random {
                rng,
                preemptions,
                faults,
            } => {
                let allowed: Vec<usize> = (0..alts.len())
                    .filter(|&i| {
                        (!alts[i].preempts || *preemptions > 0)
                            && (alts[i].choice.fault.is_none() || *faults > 0)
                    })
                    .collect();
                // A fault is rare: most calls of a real run succeed.
                let plain: Vec<usize> = allowed
                    .iter()
                    .copied()
                    .filter(|&i| alts[i].choice.fault.is_none())
                    .collect();
                let pool = if plain.is_empty() || rng.below(20) == 0 {
                    &allowed
                } else {
                    &plain
                };
                let pick = pool.get(rng.below(pool.len())).copied().unwrap_or(0);
                *preemptions -= usize::from(alts[pick].preempts);
                *faults -= usize::from(alts[pick].choice.fault.is_some());
                pick
            }
        }
    }
}

/// Past this many decisions a schedule is taken to be live-locked and is stopped: every call
/// then fails, so the operations end.
const MAX_DECISIONS: usize = 4000;

struct Control {
    status: Vec<Status>,
    /// How many archive calls each thread has been let make.
    calls: Vec<usize>,
    /// The thread allowed to run.
    current: Option<usize>,
    /// The thread that ran last: switching away from it while it can go on is a preemption.
    last: Option<usize>,
    /// The fault for the running thread's pending call.
    fault: Option<Fault>,
    chooser: Chooser,
    trace: Vec<Decision>,
    /// Set once the schedule ran away; every call fails from then on.
    stopped: bool,
    /// How many times a thread waited for an in-process lock another held.
    lock_waits: usize,
}

/// What the threads of one schedule share.
pub(super) struct Shared {
    control: Mutex<Control>,
    turn: Condvar,
    /// The thread allowed to run, as `control.current` says, for threads that spin before
    /// they sleep; [`NOBODY`] when none is.
    running: AtomicUsize,
}

/// No thread is running.
const NOBODY: usize = usize::MAX;

/// How many times a parked thread yields, looking whether it is its turn, before it sleeps: a
/// hand-over then costs no wake-up.
const SPINS: usize = 64;

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    pub(super) fn new(threads: usize, chooser: Chooser) -> Arc<Shared> {
        Arc::new(Shared {
            control: Mutex::new(Control {
                status: vec![Status::Arriving; threads],
                calls: vec![0; threads],
                current: None,
                last: None,
                fault: None,
                chooser,
                trace: Vec::new(),
                stopped: false,
                lock_waits: 0,
            }),
            turn: Condvar::new(),
            running: AtomicUsize::new(NOBODY),
        })
    }

    /// Parks thread `me` at `point` until it is chosen; returns the fault its pending call gets.
    fn park(&self, me: usize, point: Point) -> Option<Fault> {
        let mut control = self.control.lock();
        control.lock_waits += usize::from(point == Point::Blocked);
        // The first decision is free: no thread has run yet.
        if point != Point::Begin {
            control.last = Some(me);
        }
        control.status[me] = Status::Parked(point);
        control.current = None;
        control.decide();
        self.running
            .store(control.current.unwrap_or(NOBODY), Ordering::Release);
        self.turn.notify_all();
        if control.current != Some(me) {
            drop(control);
            for _ in 0..SPINS {
                if self.running.load(Ordering::Acquire) == me {
                    break;
                }
                std::thread::yield_now();
            }
            control = self.control.lock();
        }
        while control.current != Some(me) {
            self.turn.wait(&mut control);
        }
        control.status[me] = Status::Running;
        if control.stopped {
            return Some(Fault::Fail);
        }
        control.fault.take()
    }

    /// Marks thread `me` done and lets the next one run.
    fn finish(&self, me: usize) {
        let mut control = self.control.lock();
        control.status[me] = Status::Done;
        control.last = Some(me);
        control.current = None;
        control.decide();
        self.running
            .store(control.current.unwrap_or(NOBODY), Ordering::Release);
        self.turn.notify_all();
    }

    /// The decisions made, once every thread is done; whether the schedule ran away; and how
    /// many lock waits there were.
    pub(super) fn take_trace(&self) -> (Vec<Decision>, bool, usize) {
        let mut control = self.control.lock();
        let trace = std::mem::take(&mut control.trace);
        (trace, control.stopped, control.lock_waits)
    }
}

impl Control {
    /// Chooses the next thread once every thread is parked or done.
    fn decide(&mut self) {
        if self
            .status
            .iter()
            .any(|s| matches!(s, Status::Arriving | Status::Running))
        {
            return;
        }
        let mut enabled = self.enabled();
        if enabled.is_empty() {
            // Only lock waiters are left: the holder let go between two of its points.
            for status in &mut self.status {
                if *status == Status::Parked(Point::Blocked) {
                    *status = Status::Parked(Point::Retry);
                }
            }
            enabled = self.enabled();
        }
        if enabled.is_empty() {
            return;
        }
        let alts = self.alternatives(&enabled);
        let pending = self.pending();
        if self.trace.len() >= MAX_DECISIONS {
            self.stopped = true;
        }
        let chosen = self.chooser.pick(self.trace.len(), &alts);
        let alt = alts[chosen];
        self.trace.push(Decision {
            alts,
            chosen,
            pending,
        });
        // Whoever runs may let go of a lock: the waiters try again when next chosen.
        for (thread, status) in self.status.iter_mut().enumerate() {
            if thread != alt.choice.thread && *status == Status::Parked(Point::Blocked) {
                *status = Status::Parked(Point::Retry);
            }
        }
        if matches!(
            self.status[alt.choice.thread],
            Status::Parked(Point::Call { .. })
        ) {
            self.calls[alt.choice.thread] += 1;
        }
        self.current = Some(alt.choice.thread);
        self.fault = alt.choice.fault;
    }

    fn enabled(&self) -> Vec<usize> {
        (0..self.status.len())
            .filter(
                |&t| matches!(&self.status[t], Status::Parked(point) if *point != Point::Blocked),
            )
            .collect()
    }

    /// The alternatives, the free and fault-free one first: the last thread going on, or else
    /// the lowest enabled one.
    fn alternatives(&self, enabled: &[usize]) -> Vec<Alt> {
        let going_on = self.last.filter(|last| enabled.contains(last));
        let mut order: Vec<usize> = going_on.into_iter().collect();
        // No switch where the thread going on has made no call yet: switching there runs the
        // same calls as starting the other thread first, which costs no preemption.
        let stays = going_on.is_some_and(|g| {
            self.calls[g] == 0
                || matches!(
                    self.status[g],
                    Status::Parked(Point::Call { commutes: true, .. })
                )
        });
        if !stays {
            order.extend(enabled.iter().copied().filter(|&t| Some(t) != going_on));
        }
        let mut alts = Vec::new();
        for &thread in &order {
            let preempts = going_on.is_some_and(|g| g != thread);
            alts.push(Alt {
                choice: Choice {
                    thread,
                    fault: None,
                },
                preempts,
            });
        }
        for &thread in &order {
            let Status::Parked(Point::Call { write, .. }) = &self.status[thread] else {
                continue;
            };
            let preempts = going_on.is_some_and(|g| g != thread);
            let faults: &[Fault] = if *write {
                &[Fault::Fail, Fault::Lost]
            } else {
                &[Fault::Fail]
            };
            for &fault in faults {
                alts.push(Alt {
                    choice: Choice {
                        thread,
                        fault: Some(fault),
                    },
                    preempts,
                });
            }
        }
        alts
    }

    fn pending(&self) -> Vec<(usize, String)> {
        self.status
            .iter()
            .enumerate()
            .filter_map(|(t, status)| match status {
                Status::Parked(Point::Call { what, .. }) => Some((t, what.clone())),
                Status::Parked(Point::Begin) => Some((t, "begin".to_owned())),
                Status::Parked(Point::Retry) => Some((t, "retry the update lock".to_owned())),
                _ => None,
            })
            .collect()
    }
}

std::thread_local! {
    /// The schedule this thread is a worker of, and its index there.
    static WORKER: RefCell<Option<(Arc<Shared>, usize)>> = const { RefCell::new(None) };
}

/// Makes this thread worker `me` of `shared`, parks it until it is first chosen, and installs
/// the lock-wait hook; the returned guard marks it done when dropped (a panic included).
pub(super) fn enter(shared: &Arc<Shared>, me: usize) -> Finish {
    WORKER.with(|slot| *slot.borrow_mut() = Some((Arc::clone(shared), me)));
    let waiting = Arc::clone(shared);
    crate::conformance::set_lock_wait_hook(Some(Arc::new(move || {
        waiting.park(me, Point::Blocked);
    })));
    shared.park(me, Point::Begin);
    Finish {
        shared: Arc::clone(shared),
        me,
    }
}

/// Marks a worker done when dropped.
pub(super) struct Finish {
    shared: Arc<Shared>,
    me: usize,
}

impl Drop for Finish {
    fn drop(&mut self) {
        WORKER.with(|slot| *slot.borrow_mut() = None);
        crate::conformance::set_lock_wait_hook(None);
        self.shared.finish(self.me);
    }
}

/// The scheduling point before an archive call: parks a worker thread (other threads pass) and
/// returns the fault to inject.
fn point(call: &Call<'_>, commutes: bool) -> Option<Fault> {
    let worker = WORKER.with(|slot| slot.borrow().clone());
    let (shared, me) = worker?;
    let what = describe(call);
    shared.park(
        me,
        Point::Call {
            write: call.is_write(),
            commutes,
            what,
        },
    )
}

/// The domains of the expiry index, which only a sweep reads for what it holds.
fn is_expiry_index(domain: &str) -> bool {
    domain.starts_with("expiry-") || domain == "sweep-cursor"
}

/// Whether `call` commutes with every call of the other operations: a hint (`expire_domain`),
/// or, when no operation sweeps, a call on the expiry index (its entries and record decide only
/// where a sweep looks).
fn commutes(call: &Call<'_>, sweeping: bool) -> bool {
    match *call {
        Call::ExpireDomain { .. } => true,
        _ if sweeping => false,
        Call::Get { domain, .. }
        | Call::Set { domain, .. }
        | Call::Remove { domain, .. }
        | Call::CompareAndSwap { domain, .. } => is_expiry_index(domain),
        Call::RemoveMany { entries } => entries.iter().all(|(d, _)| is_expiry_index(d)),
        Call::SetMany { entries } => entries.iter().all(|(d, _, _)| is_expiry_index(d)),
        _ => false,
    }
}

/// A short description of a call for a failure report: the method, and its domain and key.
fn describe(call: &Call<'_>) -> String {
    match *call {
        Call::Get { domain, key } => format!("get {domain}/{key}"),
        Call::Set { domain, key, .. } => format!("set {domain}/{key}"),
        Call::Has { domain, key } => format!("has {domain}/{key}"),
        Call::Remove { domain, key } => format!("remove {domain}/{key}"),
        Call::HasDomain { domain } => format!("has_domain {domain}"),
        Call::RemoveDomain { domain } => format!("remove_domain {domain}"),
        Call::CompareAndSwap {
            domain, key, new, ..
        } => {
            let to = if new.is_some() { "" } else { " to nothing" };
            format!("compare_and_swap {domain}/{key}{to}")
        }
        Call::CompareAndSwapMany { domain, swaps } => {
            let keys: Vec<&str> = swaps.iter().map(|(key, _, _)| *key).collect();
            format!("compare_and_swap_many {domain}/{}", keys.join("+"))
        }
        Call::CompareAndSwapEach { groups } => {
            let groups: Vec<String> = groups
                .iter()
                .map(|(domain, swaps)| {
                    let keys: Vec<&str> = swaps.iter().map(|(key, _, _)| *key).collect();
                    format!("{domain}/{}", keys.join("+"))
                })
                .collect();
            format!("compare_and_swap_each {}", groups.join(","))
        }
        Call::GetEach { entries } => {
            let names: Vec<String> = entries.iter().map(|(d, k)| format!("{d}/{k}")).collect();
            format!("get_each {}", names.join(","))
        }
        Call::GetMany { domain, keys } => format!("get_many {domain}/{}", keys.join("+")),
        Call::Update { domain, key } => format!("update {domain}/{key}"),
        Call::ListDomains { .. } => "list_domains".to_owned(),
        Call::ListKeys { domain, .. } => format!("list_keys {domain}"),
        Call::SetMany { entries } => {
            let names: Vec<String> = entries.iter().map(|(d, k, _)| format!("{d}/{k}")).collect();
            format!("set_many {}", names.join(","))
        }
        Call::RemoveMany { entries } => {
            let names: Vec<String> = entries.iter().map(|(d, k)| format!("{d}/{k}")).collect();
            format!("remove_many {}", names.join(","))
        }
        Call::RemoveDomains { domains } => format!("remove_domains {}", domains.join(",")),
        Call::ExpireDomain { domain, .. } => format!("expire_domain {domain}"),
    }
}

/// The error an injected fault gives.
fn injected(fault: Fault) -> Error {
    Error::Backend {
        backend: "explorer",
        operation: match fault {
            Fault::Fail => "a call the explorer made fail",
            Fault::Lost => "a call the explorer applied, then failed",
        },
        source: "injected fault".into(),
    }
}

/// Observes the calls of worker threads: see [`Scheduled::new`].
pub(super) type Observer = dyn Fn(usize, &Call<'_>) + Send + Sync;

/// The archive every operation of a schedule uses: each call made on a worker thread first
/// parks at a scheduling point, then runs with the fault chosen there. Calls from other threads
/// (setting up, checking) go straight through.
pub(super) struct Scheduled {
    inner: Arc<dyn Archive>,
    observe: Box<Observer>,
    /// Whether an operation of the schedule sweeps.
    sweeping: bool,
    /// What it says of its blocking instead of the wrapped archive, if set.
    blocking: Option<Blocking>,
}

impl Scheduled {
    /// Wraps `inner`; `observe` sees every call a worker makes, after it is scheduled.
    /// `sweeping`: whether an operation sweeps (else the expiry index is no place to switch).
    /// `blocking`: what the archive says of its blocking, when not the wrapped archive's.
    pub(super) fn new(
        inner: Arc<dyn Archive>,
        observe: Box<Observer>,
        sweeping: bool,
        blocking: Option<Blocking>,
    ) -> Scheduled {
        Scheduled {
            inner,
            observe,
            sweeping,
            blocking,
        }
    }

    /// Runs `call` at a scheduling point, with the fault chosen there.
    fn at<R>(&self, call: &Call<'_>, run: impl FnOnce(&dyn Archive) -> Result<R>) -> Result<R> {
        let fault = point(call, commutes(call, self.sweeping));
        if let Some(me) = WORKER.with(|slot| slot.borrow().as_ref().map(|(_, me)| *me)) {
            (self.observe)(me, call);
        }
        match fault {
            None => run(&*self.inner),
            Some(Fault::Fail) => Err(injected(Fault::Fail)),
            Some(Fault::Lost) => {
                let _applied = run(&*self.inner);
                Err(injected(Fault::Lost))
            }
        }
    }
}

impl fmt::Debug for Scheduled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduled").finish_non_exhaustive()
    }
}

// Every method is written out, so that no call escapes its scheduling point through a default
// body.
#[deny(clippy::missing_trait_methods)]
impl Archive for Scheduled {
    fn get(&self, domain: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.at(&Call::Get { domain, key }, |a| a.get(domain, key))
    }

    fn set(&self, domain: &str, key: &str, value: &[u8]) -> Result<()> {
        let call = Call::Set { domain, key, value };
        self.at(&call, |a| a.set(domain, key, value))
    }

    fn has(&self, domain: &str, key: &str) -> Result<bool> {
        self.at(&Call::Has { domain, key }, |a| a.has(domain, key))
    }

    fn remove(&self, domain: &str, key: &str) -> Result<bool> {
        self.at(&Call::Remove { domain, key }, |a| a.remove(domain, key))
    }

    fn has_domain(&self, domain: &str) -> Result<bool> {
        self.at(&Call::HasDomain { domain }, |a| a.has_domain(domain))
    }

    fn remove_domain(&self, domain: &str) -> Result<bool> {
        self.at(&Call::RemoveDomain { domain }, |a| a.remove_domain(domain))
    }

    fn compare_and_swap(
        &self,
        domain: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        let call = Call::CompareAndSwap {
            domain,
            key,
            expected,
            new,
        };
        self.at(&call, |a| a.compare_and_swap(domain, key, expected, new))
    }

    fn compare_and_swap_many(&self, domain: &str, swaps: &[Swap<'_>]) -> Result<bool> {
        let call = Call::CompareAndSwapMany { domain, swaps };
        self.at(&call, |a| a.compare_and_swap_many(domain, swaps))
    }

    /// One scheduling point for every group: the wrapped archive swaps them in one step.
    fn compare_and_swap_each(&self, groups: &[SwapGroup<'_>]) -> Result<Vec<bool>> {
        let call = Call::CompareAndSwapEach { groups };
        self.at(&call, |a| a.compare_and_swap_each(groups))
    }

    /// One scheduling point for every entry: the wrapped archive reads them in one step.
    fn get_each(&self, entries: &[(&str, &str)]) -> Result<Vec<Option<Vec<u8>>>> {
        self.at(&Call::GetEach { entries }, |a| a.get_each(entries))
    }

    fn get_many(&self, domain: &str, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let call = Call::GetMany { domain, keys };
        self.at(&call, |a| a.get_many(domain, keys))
    }

    /// Always an async path, whatever the wrapped archive has, so that the web layers' async
    /// start runs in every schedule that has one: the read is [`get_many`](Archive::get_many)
    /// at a scheduling point, when the call is made (where a server's read is sent), and the
    /// future is ready with its answer, a fault's included.
    fn get_many_async(&self, domain: &str, keys: &[&str]) -> Option<GetManyFuture> {
        let read = self.get_many(domain, keys);
        Some(Box::pin(std::future::ready(read)))
    }

    /// As [`get_many_async`](Archive::get_many_async), with
    /// [`compare_and_swap_many`](Archive::compare_and_swap_many): a lost answer (the swap
    /// applied, then an error) is what settles an update by a read.
    fn compare_and_swap_many_async(&self, domain: &str, swaps: &[Swap<'_>]) -> Option<SwapFuture> {
        let swapped = self.compare_and_swap_many(domain, swaps);
        Some(Box::pin(std::future::ready(swapped)))
    }

    /// One scheduling point for the whole update: where the change runs, and which calls the
    /// wrapped archive makes for it, is the wrapped archive's.
    fn update(&self, domain: &str, key: &str, change: Change) -> Result<Option<Vec<u8>>> {
        self.at(&Call::Update { domain, key }, |a| {
            a.update(domain, key, change)
        })
    }

    /// The scheduling point comes when the update is asked for; the wrapped archive's future
    /// then runs unscheduled.
    fn update_async(&self, domain: &str, key: &str, change: Change) -> UpdateFuture {
        match point(&Call::Update { domain, key }, false) {
            None => self.inner.update_async(domain, key, change),
            Some(Fault::Fail) => Box::pin(std::future::ready(Err(injected(Fault::Fail)))),
            Some(Fault::Lost) => {
                let applied = self.inner.update_async(domain, key, change);
                Box::pin(async move {
                    let _applied = applied.await;
                    Err(injected(Fault::Lost))
                })
            }
        }
    }

    fn list_domains(&self, cursor: Option<&str>, limit: usize) -> Result<Page> {
        let call = Call::ListDomains { cursor, limit };
        self.at(&call, |a| a.list_domains(cursor, limit))
    }

    fn list_keys(&self, domain: &str, cursor: Option<&str>, limit: usize) -> Result<Page> {
        let call = Call::ListKeys {
            domain,
            cursor,
            limit,
        };
        self.at(&call, |a| a.list_keys(domain, cursor, limit))
    }

    fn set_many(&self, entries: &[(&str, &str, &[u8])]) -> Result<()> {
        self.at(&Call::SetMany { entries }, |a| a.set_many(entries))
    }

    fn remove_many(&self, entries: &[(&str, &str)]) -> Result<usize> {
        self.at(&Call::RemoveMany { entries }, |a| a.remove_many(entries))
    }

    fn remove_domains(&self, domains: &[&str]) -> Result<usize> {
        self.at(&Call::RemoveDomains { domains }, |a| {
            a.remove_domains(domains)
        })
    }

    fn expire_domain(&self, domain: &str, at: SystemTime) -> Result<bool> {
        let call = Call::ExpireDomain { domain, at };
        self.at(&call, |a| a.expire_domain(domain, at))
    }

    /// The wrapped archive's, unless the plan says otherwise: the protocol then takes the
    /// in-process locks and the paths it takes there.
    fn blocking(&self) -> Blocking {
        self.blocking.unwrap_or_else(|| self.inner.blocking())
    }
}

/// How many preemptions and faults a schedule may have.
///
/// # Examples
///
/// ```
/// use session_archive::conformance::explore::{Budget, Plan};
///
/// let mut plan = Plan::new();
/// plan.budget = Budget { preemptions: 0, faults: 1 }; // each call of each order, made to fail
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Switches away from a thread that could go on.
    pub preemptions: usize,
    /// Injected faults.
    pub faults: usize,
}

/// Enumerates, depth first, every schedule within a [`Budget`]: after each run it backtracks
/// to the deepest decision with an alternative left that the budget allows.
#[derive(Debug)]
pub(super) struct Dfs {
    budget: Budget,
    next: Option<Vec<Choice>>,
}

impl Dfs {
    pub(super) fn new(budget: Budget) -> Dfs {
        Dfs {
            budget,
            next: Some(Vec::new()),
        }
    }

    /// The prefix of the next schedule to run, or `None` when all have run.
    pub(super) fn next_prefix(&mut self) -> Option<Vec<Choice>> {
        self.next.take()
    }

    /// Takes the decisions of the schedule just run, and finds the next one.
    pub(super) fn ran(&mut self, trace: &[Decision]) {
        let mut preempted = Vec::with_capacity(trace.len());
        let mut faulted = Vec::with_capacity(trace.len());
        let (mut p, mut f) = (0, 0);
        for decision in trace {
            preempted.push(p);
            faulted.push(f);
            let alt = decision.taken();
            p += usize::from(alt.preempts);
            f += usize::from(alt.choice.fault.is_some());
        }
        for at in (0..trace.len()).rev() {
            let decision = &trace[at];
            let next = (decision.chosen + 1..decision.alts.len()).find(|&j| {
                let alt = decision.alts[j];
                preempted[at] + usize::from(alt.preempts) <= self.budget.preemptions
                    && faulted[at] + usize::from(alt.choice.fault.is_some()) <= self.budget.faults
            });
            if let Some(j) = next {
                let mut prefix: Vec<Choice> =
                    trace[..at].iter().map(|d| d.taken().choice).collect();
                prefix.push(decision.alts[j].choice);
                self.next = Some(prefix);
                return;
            }
        }
    }
}
