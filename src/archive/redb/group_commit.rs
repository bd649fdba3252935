//! Group commit: callers whose requests arrive while a commit is running share the next commit,
//! and each still gets its own answer.
//!
//! Leader/follower, without a thread of its own. A caller of [`GroupCommit::submit`] queues its
//! request under a ticket. If no commit is running, it becomes the leader: it takes the queue and
//! runs the commit closure it was given over a [`Batch`]. The closure applies the requests in
//! order in one transaction; when it has applied every request taken so far, the batch takes the
//! requests that arrived meanwhile (see [`Batch::next_request`]), and only when it finds none does
//! the closure commit. While fewer requests have joined than the last batch held, the batch first
//! waits for more, for at most half the last commit's time and never longer than [`MAX_GATHER`]
//! (the committer thread, below, does not wait; see `claim`). The leader then posts every
//! request's answer, wakes exactly the callers it answered, plus the first one still queued, who
//! leads next. The others sleep until woken;
//! nobody is woken just to find that its answer is not there yet. Each leader commits exactly one
//! batch, the one holding its own request, so no caller serves others forever.
//!
//! A caller may also queue a request and wait for its answer as a task, without a thread
//! ([`GroupCommit::enqueue`], then [`GroupCommit::poll_answer`]): it never leads, and is woken by
//! its waker. Its request joins the next batch whoever leads it; when nobody will, a committer
//! thread ([`GroupCommit::wait_for_work`], [`GroupCommit::lead_queued`]) leads instead.
//!
//! This module knows nothing of the store: a commit is any closure from a [`Batch`] to one output
//! per request, or one error for the whole transaction.
//!
//! - **A failed commit** stored nothing. When it held more than one request, each is retried in a
//!   transaction of its own, so one request's failure fails only that request, and a request is
//!   answered `Ok` only when a commit holding it succeeded.
//! - **A panicking commit** unwinds through the leader, whose own call panics. The other callers
//!   of its batch get [`Failure::NoAnswer`] instead of waiting forever on a commit that will never
//!   end, and leadership is free for the next caller: the engine keeps working.

use std::collections::{HashMap, HashSet};
use std::task::Waker;
use std::thread::Thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// The longest a leader gathers, whatever the last commit took: one slow fsync must not make
/// the next batch's callers wait for company for long.
pub(super) const MAX_GATHER: Duration = Duration::from_millis(5);

/// What a caller of [`GroupCommit::submit`] gets: its request's output, or why it has none.
pub(super) type Answer<O, E> = Result<O, Failure<E>>;

/// Why a request has no output.
#[derive(Debug)]
pub(super) enum Failure<E> {
    /// The commit holding the request failed, and stored nothing of it.
    Failed(E),
    /// The commit holding the request ended without an answer for it: it panicked (or returned
    /// fewer outputs than it took requests). The request may or may not be stored.
    NoAnswer,
}

/// The queue of requests waiting for a commit, and the answers of committed batches.
pub(super) struct GroupCommit<R, O, E> {
    state: Mutex<State<R, O, E>>,
    /// Signalled whenever a request is queued, for a leader gathering its batch.
    arrived: Condvar,
    /// Signalled when a task's request waits and no caller thread will lead it, and on
    /// [`stop`](Self::stop): for the committer thread.
    work: Condvar,
    /// The longest a leader waits for company; see [`MAX_GATHER`].
    max_gather: Duration,
}

struct State<R, O, E> {
    /// Requests waiting for a leader to take them, in arrival order: the order they take effect
    /// in.
    queue: Vec<Queued<R>>,
    /// Answers of committed requests, until their caller takes them.
    answers: HashMap<u64, Answer<O, E>>,
    /// Whether a leader is gathering, applying or committing a batch right now.
    committing: bool,
    next_ticket: u64,
    /// How many requests the last batch held, and how long its commit took once gathered: the
    /// next leader gathers until that many have joined it, for at most half that time.
    last_batch: usize,
    last_commit: Duration,
    /// The wakers of tasks waiting for an answer, by ticket.
    wakers: HashMap<u64, Waker>,
    /// Tickets whose task stopped waiting before its answer came: the answer is dropped.
    abandoned: HashSet<u64>,
    /// Set by [`GroupCommit::stop`].
    stopping: bool,
}

/// A queued request, and the caller to wake when it is answered.
struct Queued<R> {
    ticket: u64,
    request: R,
    caller: Caller,
}

/// Who waits for a request's answer.
#[derive(Clone)]
enum Caller {
    /// A thread in [`GroupCommit::submit`]: parked, and may lead.
    Thread(Thread),
    /// A task polling [`GroupCommit::poll_answer`], woken by its waker; it never leads.
    Task,
}

/// What a committer thread should do next; see [`GroupCommit::wait_for_work`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Work {
    /// Requests wait and no commit is running: call [`GroupCommit::lead_queued`].
    Lead,
    /// Nothing to do for a while; ask again.
    Idle,
    /// [`GroupCommit::stop`] was called and nothing is queued: the thread may end.
    Stop,
}

/// The requests of one commit, handed to the commit closure one at a time.
pub(super) struct Batch<'a, R> {
    requests: Vec<R>,
    /// How many of `requests` have been handed out.
    handed: usize,
    /// Takes the requests that arrived since, into the batch; `false` once there are none, which
    /// closes the batch. `None` for a batch that takes nobody (a retry, or closed).
    gather: Option<Gather<'a, R>>,
}

/// Takes more requests into a batch; see the `gather` field of [`Batch`].
type Gather<'a, R> = &'a mut dyn FnMut(&mut Vec<R>) -> bool;

impl<R> Batch<'_, R> {
    /// The next request to apply, or `None` when the batch is complete and the closure should
    /// commit. Once the requests taken so far are handed out, this takes those that arrived
    /// meanwhile, waiting for a while first when fewer joined than the last batch held: applying
    /// overlaps the other callers' return, and a lone caller never waits. Taking is bounded: a
    /// caller has one request at a time, and those in the batch wait for its commit.
    pub(super) fn next_request(&mut self) -> Option<&R> {
        if self.handed == self.requests.len() {
            let gather = self.gather.as_mut()?;
            if !gather(&mut self.requests) {
                self.gather = None;
                return None;
            }
        }
        self.handed += 1;
        self.requests.get(self.handed - 1)
    }
}

/// How a leader gathers: until `expected` requests have joined, or `deadline` has passed.
#[derive(Clone, Copy)]
struct Plan {
    expected: usize,
    deadline: Instant,
}

impl<R, O, E> GroupCommit<R, O, E> {
    /// An engine whose leaders wait at most `max_gather` for company.
    pub(super) fn new(max_gather: Duration) -> Self {
        GroupCommit {
            state: Mutex::new(State {
                queue: Vec::new(),
                answers: HashMap::new(),
                committing: false,
                next_ticket: 0,
                last_batch: 0,
                last_commit: Duration::ZERO,
                wakers: HashMap::new(),
                abandoned: HashSet::new(),
                stopping: false,
            }),
            arrived: Condvar::new(),
            work: Condvar::new(),
            max_gather,
        }
    }

    /// Commits `request` together with the requests queued beside it, and returns its answer
    /// once the commit holding it is done.
    ///
    /// If this caller leads, it runs `commit`: the closure must apply every request that
    /// [`Batch::next_request`] hands it, in order, in one transaction, then commit it and return
    /// one output per request, in the same order; or return an error, having stored nothing.
    /// A request behaves exactly as if it had been committed alone, after every request queued
    /// before it. If `commit` panics while this caller leads, the panic unwinds out of this call,
    /// and the other callers of the batch get [`Failure::NoAnswer`].
    pub(super) fn submit(
        &self,
        request: R,
        mut commit: impl FnMut(&mut Batch<'_, R>) -> Result<Vec<O>, E>,
    ) -> Answer<O, E> {
        let mut state = self.state.lock();
        let ticket = Self::queue(&mut state, request, Caller::Thread(std::thread::current()));
        self.arrived.notify_one();
        loop {
            if let Some(answer) = state.answers.remove(&ticket) {
                return answer;
            }
            if state.committing {
                // Woken by the leader that answers this request, or that leaves it queued for
                // this caller to lead. A wake-up that comes between the unlock and the park is
                // kept by the thread's token, so none is lost; a spurious one only loops. (A
                // token left for a thread that had already returned cuts short its next park
                // anywhere, which std allows of any park: every parker loops on its own
                // condition.)
                drop(state);
                std::thread::park();
                state = self.state.lock();
                continue;
            }
            // No commit is running and this request is still queued: lead the next one.
            let (batch, plan) = self.claim(&mut state, true);
            drop(state);
            self.lead(Some(ticket), batch, plan, &mut commit);
            state = self.state.lock();
        }
    }

    /// Queues `request` for a task, which waits for the answer with
    /// [`poll_answer`](Self::poll_answer) instead of a thread, and returns its ticket. The
    /// request joins the next batch, led by a caller of [`submit`](Self::submit) or, when none
    /// leads, by the committer thread, which this wakes.
    pub(super) fn enqueue(&self, request: R) -> u64 {
        let mut state = self.state.lock();
        let ticket = Self::queue(&mut state, request, Caller::Task);
        self.arrived.notify_one();
        if !state.committing {
            self.work.notify_one();
        }
        ticket
    }

    /// The answer to the task's request with `ticket`, once there is one; until then, `waker`
    /// is woken when it comes.
    pub(super) fn poll_answer(&self, ticket: u64, waker: &Waker) -> Option<Answer<O, E>> {
        let mut state = self.state.lock();
        if let Some(answer) = state.answers.remove(&ticket) {
            state.wakers.remove(&ticket);
            return Some(answer);
        }
        match state.wakers.get_mut(&ticket) {
            Some(known) => known.clone_from(waker),
            None => drop(state.wakers.insert(ticket, waker.clone())),
        }
        None
    }

    /// The task with `ticket` no longer waits: its answer, now or when it comes, is dropped.
    /// Its request is still committed.
    pub(super) fn abandon(&self, ticket: u64) {
        let mut state = self.state.lock();
        state.wakers.remove(&ticket);
        if state.answers.remove(&ticket).is_none() {
            state.abandoned.insert(ticket);
        }
    }

    /// For the committer thread: waits, at most `timeout`, until tasks' requests wait for a
    /// leader, and says what to do.
    pub(super) fn wait_for_work(&self, timeout: Duration) -> Work {
        let mut state = self.state.lock();
        loop {
            if !state.committing && !state.queue.is_empty() {
                return Work::Lead;
            }
            if state.stopping {
                return Work::Stop;
            }
            if self.work.wait_for(&mut state, timeout).timed_out() {
                return Work::Idle;
            }
        }
    }

    /// For the committer thread: leads one batch of whatever is queued, if no commit is
    /// running, as [`submit`](Self::submit)'s leader does. A panic in `commit` unwinds out of
    /// this call, after every caller of the batch got [`Failure::NoAnswer`].
    pub(super) fn lead_queued(
        &self,
        mut commit: impl FnMut(&mut Batch<'_, R>) -> Result<Vec<O>, E>,
    ) {
        let mut state = self.state.lock();
        if state.committing || state.queue.is_empty() {
            return;
        }
        let (batch, plan) = self.claim(&mut state, false);
        drop(state);
        self.lead(None, batch, plan, &mut commit);
    }

    /// Tells the committer thread to end once nothing is queued.
    pub(super) fn stop(&self) {
        self.state.lock().stopping = true;
        self.work.notify_all();
    }

    /// Queues `request` for `caller` and returns its ticket.
    fn queue(state: &mut State<R, O, E>, request: R, caller: Caller) -> u64 {
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push(Queued {
            ticket,
            request,
            caller,
        });
        ticket
    }

    /// Takes leadership, and the queue as the start of the batch, with the plan for gathering
    /// the rest: a caller thread waits for company as the module says; the committer thread
    /// (`wait` false) only takes what arrives while it applies. Its batches are tasks', whose
    /// callers come back only after a round trip of their own (a response, then a new request),
    /// and who keep arriving while it commits, to form the next batch: waiting for them would
    /// leave the disk idle for nothing. (Measured with the web benchmark, 64 connections:
    /// about 30% more requests per second than with the wait.)
    fn claim(&self, state: &mut State<R, O, E>, wait: bool) -> (Vec<Queued<R>>, Plan) {
        state.committing = true;
        let batch = std::mem::take(&mut state.queue);
        let window = if wait {
            (state.last_commit / 2).min(self.max_gather)
        } else {
            Duration::ZERO
        };
        let plan = Plan {
            expected: state.last_batch,
            deadline: Instant::now() + window,
        };
        (batch, plan)
    }

    /// Commits `queued` and the requests that join it, as the leader whose own request has
    /// ticket `own` (`None` for the committer thread), and posts the answers (also when
    /// `commit` panics; see [`Leadership`]).
    fn lead(
        &self,
        own: Option<u64>,
        queued: Vec<Queued<R>>,
        plan: Plan,
        commit: &mut impl FnMut(&mut Batch<'_, R>) -> Result<Vec<O>, E>,
    ) {
        let mut leadership = Leadership {
            engine: self,
            own,
            callers: Vec::with_capacity(plan.expected.max(queued.len())),
            answers: None,
            took: Duration::ZERO,
        };
        let (answers, took, requests) = self.run(queued, plan, &mut leadership.callers, commit);
        leadership.answers = Some(answers);
        leadership.took = took;
        drop(leadership);
        // Dropping a request drops what it owns (an update's change, and whatever that
        // captured, which may even be the last handle on the store): only now, once every
        // caller has its answer, so that nothing it does can take an answer back. A panic in it
        // is nobody's to report.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(requests)));
    }

    /// Runs `commit` over `queued` and the requests that join it, and answers each request in
    /// the order of `callers`, retrying each alone if the batch failed. Also returns how long the
    /// batch took once gathered, and the requests, for the caller to drop.
    fn run(
        &self,
        queued: Vec<Queued<R>>,
        plan: Plan,
        callers: &mut Vec<(u64, Caller)>,
        commit: &mut impl FnMut(&mut Batch<'_, R>) -> Result<Vec<O>, E>,
    ) -> (Vec<Answer<O, E>>, Duration, Vec<R>) {
        let mut requests = Vec::with_capacity(callers.capacity());
        take(queued, callers, &mut requests);
        let mut gathered_at = None;
        let mut gather = |requests: &mut Vec<R>| {
            let more = self.gather(plan, requests, callers);
            if !more {
                gathered_at = Some(Instant::now());
            }
            more
        };
        let mut batch = Batch {
            requests,
            handed: 0,
            gather: Some(&mut gather),
        };
        let committed = commit(&mut batch);
        let mut requests = batch.requests;
        let answers = match committed {
            Ok(outputs) => outputs.into_iter().map(Ok).collect(),
            Err(error) if requests.len() == 1 => vec![Err(Failure::Failed(error))],
            Err(_) => {
                let mut answers = Vec::with_capacity(requests.len());
                for request in std::mem::take(&mut requests) {
                    let (answer, request) = alone(request, commit);
                    answers.push(answer);
                    requests.extend(request);
                }
                answers
            }
        };
        let took = gathered_at.map_or(Duration::ZERO, |at| at.elapsed());
        (answers, took, requests)
    }

    /// Takes the requests queued since the batch's last ones into it, first waiting for some as
    /// `plan` says while none are queued. Returns `false` if there were none to take.
    fn gather(&self, plan: Plan, requests: &mut Vec<R>, callers: &mut Vec<(u64, Caller)>) -> bool {
        let mut state = self.state.lock();
        while state.queue.is_empty()
            && requests.len() < plan.expected
            && !self
                .arrived
                .wait_until(&mut state, plan.deadline)
                .timed_out()
        {}
        if state.queue.is_empty() {
            return false;
        }
        take(std::mem::take(&mut state.queue), callers, requests);
        true
    }
}

/// Moves `queued` into a batch: its callers into `callers`, its requests into `requests`.
fn take<R>(queued: Vec<Queued<R>>, callers: &mut Vec<(u64, Caller)>, requests: &mut Vec<R>) {
    for queued in queued {
        callers.push((queued.ticket, queued.caller));
        requests.push(queued.request);
    }
}

/// Commits `request` in a batch of its own, which takes nobody else; returns its answer, and the
/// request back (in the batch's list of requests, which never loses one).
fn alone<R, O, E>(
    request: R,
    commit: &mut impl FnMut(&mut Batch<'_, R>) -> Result<Vec<O>, E>,
) -> (Answer<O, E>, Vec<R>) {
    let mut batch = Batch {
        requests: vec![request],
        handed: 0,
        gather: None,
    };
    let answer = match commit(&mut batch) {
        Ok(outputs) => outputs.into_iter().next().ok_or(Failure::NoAnswer),
        Err(error) => Err(Failure::Failed(error)),
    };
    (answer, batch.requests)
}

/// A leader's hold on the engine while its batch commits. Dropped, it posts the batch's answers,
/// frees leadership and wakes the batch's callers and the next leader. If a panic unwinds through
/// the commit, there are no answers, and the batch's other callers get [`Failure::NoAnswer`]
/// instead of waiting forever.
struct Leadership<'a, R, O, E> {
    engine: &'a GroupCommit<R, O, E>,
    /// The leader's own ticket; `None` for the committer thread.
    own: Option<u64>,
    /// The batch's callers by ticket, in the order their requests were applied.
    callers: Vec<(u64, Caller)>,
    /// One per caller, in order; `None` while the commit has not returned.
    answers: Option<Vec<Answer<O, E>>>,
    /// How long the batch took from the end of gathering to its answers.
    took: Duration,
}

impl<R, O, E> Drop for Leadership<'_, R, O, E> {
    fn drop(&mut self) {
        let finished = self.answers.is_some();
        let mut answers = self.answers.take().unwrap_or_default().into_iter();
        let mut wakers = Vec::new();
        // The answers of abandoned tickets, dropped after the lock is released: an answer may
        // hold anything (a panic's payload), whose drop must not run under the engine's lock.
        let mut unclaimed = Vec::new();
        let mut state = self.engine.state.lock();
        for (ticket, caller) in &self.callers {
            let answer = answers.next();
            if let Caller::Task = caller {
                wakers.extend(state.wakers.remove(ticket));
                if state.abandoned.remove(ticket) {
                    unclaimed.extend(answer);
                    continue;
                }
            }
            // An unwinding leader never collects its answer.
            if answer.is_some() || finished || Some(*ticket) != self.own {
                state
                    .answers
                    .insert(*ticket, answer.unwrap_or(Err(Failure::NoAnswer)));
            }
        }
        if finished {
            state.last_commit = self.took;
        }
        state.last_batch = self.callers.len();
        state.committing = false;
        let next_leader = state.queue.first().map(|queued| queued.caller.clone());
        drop(state);
        // The next leader first: the next commit waits for it, while the answered callers only
        // return. A task cannot lead, so the committer thread leads for it.
        match next_leader {
            Some(Caller::Thread(thread)) => thread.unpark(),
            Some(Caller::Task) => drop(self.engine.work.notify_one()),
            None => {}
        }
        for (ticket, caller) in &self.callers {
            if let Caller::Thread(thread) = caller
                && Some(*ticket) != self.own
            {
                thread.unpark();
            }
        }
        wakers.into_iter().for_each(Waker::wake);
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(unclaimed)));
    }
}

#[cfg(test)]
impl<R, O, E> GroupCommit<R, O, E> {
    /// What the engine is doing, for tests that line callers up.
    pub(super) fn status(&self) -> Status {
        let state = self.state.lock();
        Status {
            committing: state.committing,
            queued: state.queue.len(),
            unclaimed: state.answers.len(),
        }
    }
}

/// A view of the engine's state; see [`GroupCommit::status`].
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Status {
    /// Whether a leader holds a batch.
    pub(super) committing: bool,
    /// How many requests wait for a leader.
    pub(super) queued: usize,
    /// How many answers wait for their caller.
    pub(super) unclaimed: usize,
}

#[cfg(test)]
impl Status {
    /// No commit running, nothing queued, no answer left behind.
    pub(super) const IDLE: Status = Status {
        committing: false,
        queued: 0,
        unclaimed: 0,
    };
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::thread::ScopedJoinHandle;

    use super::*;

    /// A request to the toy store below.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Request {
        /// Appends the value to the log; answered with the value and its place in the log.
        Push(u32),
        /// Fails the transaction that applies it.
        Fail,
        /// Panics inside the commit that applies it.
        Panic,
    }

    type Engine = GroupCommit<Request, (u32, usize), &'static str>;

    /// A toy store: a log of values, and the log of commits that built it.
    #[derive(Default)]
    struct Store {
        log: Mutex<Vec<u32>>,
        /// Each commit's values, in commit order.
        commits: Mutex<Vec<Vec<u32>>>,
        /// Held by a test to keep the next commit from starting.
        gate: Mutex<()>,
    }

    impl Store {
        /// Applies the batch to a copy of the log, and stores the copy only if every request
        /// applied: a transaction.
        fn commit(
            &self,
            batch: &mut Batch<'_, Request>,
        ) -> Result<Vec<(u32, usize)>, &'static str> {
            drop(self.gate.lock());
            let mut log = self.log.lock().clone();
            let (mut outputs, mut values) = (Vec::new(), Vec::new());
            while let Some(&request) = batch.next_request() {
                match request {
                    Request::Push(value) => {
                        log.push(value);
                        values.push(value);
                        outputs.push((value, log.len()));
                    }
                    Request::Fail => return Err("refused"),
                    Request::Panic => panic!("the commit panics"),
                }
            }
            *self.log.lock() = log;
            self.commits.lock().push(values);
            Ok(outputs)
        }

        fn submit(&self, engine: &Engine, request: Request) -> Answer<(u32, usize), &'static str> {
            engine.submit(request, |batch| self.commit(batch))
        }
    }

    /// Waits (yielding, not sleeping) until the engine's status satisfies `ready`.
    fn wait_until(engine: &Engine, ready: impl Fn(Status) -> bool) {
        while !ready(engine.status()) {
            std::thread::yield_now();
        }
    }

    /// Submits each request on a thread of its own, so that all of them meet in one batch, in
    /// the order given: the store's gate, held here, keeps the first caller, who leads, from
    /// applying anything until every other request has queued behind it. Returns each caller's
    /// answer, or its panic.
    fn one_batch(
        engine: &Engine,
        store: &Store,
        requests: &[Request],
    ) -> Vec<std::thread::Result<Answer<(u32, usize), &'static str>>> {
        let gate = store.gate.lock();
        std::thread::scope(|scope| {
            let mut callers = Vec::new();
            for (queued, &request) in requests.iter().enumerate() {
                callers.push(scope.spawn(move || store.submit(engine, request)));
                if queued == 0 {
                    // It has taken its request off the queue to lead, and waits at the gate.
                    wait_until(engine, |status| status.committing && status.queued == 0);
                } else {
                    wait_until(engine, |status| status.queued == queued);
                }
            }
            drop(gate);
            callers.into_iter().map(ScopedJoinHandle::join).collect()
        })
    }

    /// An engine whose next leader expects `expected` requests and may wait `max_gather` for
    /// them.
    fn expecting(expected: usize, max_gather: Duration) -> Engine {
        let engine = Engine::new(max_gather);
        {
            let mut state = engine.state.lock();
            state.last_batch = expected;
            state.last_commit = Duration::from_secs(4 * 3600);
        }
        engine
    }

    #[test]
    fn concurrent_callers_each_get_their_own_answer() {
        const CALLERS: u32 = 8;
        const EACH: u32 = 200;
        let (engine, store) = (Engine::new(MAX_GATHER), Store::default());
        let start = Barrier::new(CALLERS as usize);
        std::thread::scope(|scope| {
            for caller in 0..CALLERS {
                let (engine, store, start) = (&engine, &store, &start);
                scope.spawn(move || {
                    start.wait();
                    for i in 0..EACH {
                        let value = caller * EACH + i;
                        let (answered, place) = store.submit(engine, Request::Push(value)).unwrap();
                        assert_eq!(answered, value);
                        assert_eq!(store.log.lock()[place - 1], value);
                    }
                });
            }
        });
        let log = store.log.lock();
        assert_eq!(log.len(), (CALLERS * EACH) as usize);
        // Each caller's requests took effect in the order it made them.
        for caller in 0..CALLERS {
            let mine: Vec<u32> = log.iter().copied().filter(|v| v / EACH == caller).collect();
            assert_eq!(
                mine,
                (caller * EACH..(caller + 1) * EACH).collect::<Vec<_>>()
            );
        }
        assert_eq!(engine.status(), Status::IDLE);
    }

    /// Requests that queue while a commit is under way share one commit, and each is answered
    /// as if it had been committed alone, in arrival order.
    #[test]
    fn callers_queued_behind_a_leader_share_its_commit_in_arrival_order() {
        let (engine, store) = (Engine::new(MAX_GATHER), Store::default());
        let requests = [1, 2, 3, 4].map(Request::Push);
        let answers: Vec<_> = one_batch(&engine, &store, &requests)
            .into_iter()
            .map(|answer| answer.unwrap().unwrap())
            .collect();
        assert_eq!(answers, [(1, 1), (2, 2), (3, 3), (4, 4)]);
        assert_eq!(*store.commits.lock(), [vec![1, 2, 3, 4]]);
    }

    /// When one request fails, its batch's transaction stores nothing; every request is then
    /// retried in a transaction of its own, so the others are stored and answered as before, in
    /// order, and only the failing one gets the error.
    #[test]
    fn a_failing_request_fails_alone_and_the_rest_of_its_batch_is_retried() {
        let (engine, store) = (Engine::new(MAX_GATHER), Store::default());
        let requests = [
            Request::Push(1),
            Request::Fail,
            Request::Push(2),
            Request::Push(3),
        ];
        let answers: Vec<_> = one_batch(&engine, &store, &requests)
            .into_iter()
            .map(std::thread::Result::unwrap)
            .collect();
        assert!(matches!(answers[0], Ok((1, 1))), "{answers:?}");
        assert!(
            matches!(answers[1], Err(Failure::Failed("refused"))),
            "{answers:?}"
        );
        assert!(matches!(answers[2], Ok((2, 2))), "{answers:?}");
        assert!(matches!(answers[3], Ok((3, 3))), "{answers:?}");
        // The failed batch stored nothing; the others were stored one by one.
        assert_eq!(*store.commits.lock(), [vec![1], vec![2], vec![3]]);
        assert_eq!(*store.log.lock(), [1, 2, 3]);
    }

    /// A lone request whose transaction fails gets the error as it is, without a retry.
    #[test]
    fn a_lone_failing_request_gets_its_error() {
        let (engine, store) = (Engine::new(MAX_GATHER), Store::default());
        assert!(matches!(
            store.submit(&engine, Request::Fail),
            Err(Failure::Failed("refused"))
        ));
        assert!(store.commits.lock().is_empty());
        assert_eq!(store.submit(&engine, Request::Push(7)).unwrap(), (7, 1));
    }

    /// A panic inside the commit unwinds through the leader: its own call panics, the other
    /// callers of its batch get `NoAnswer` instead of waiting forever, and the next batches
    /// commit as usual.
    #[test]
    fn a_panicking_commit_answers_its_batch_and_frees_leadership() {
        let (engine, store) = (Engine::new(MAX_GATHER), Store::default());
        let requests = [
            Request::Push(1),
            Request::Push(2),
            Request::Panic,
            Request::Push(3),
        ];
        let mut answers = one_batch(&engine, &store, &requests).into_iter();

        let leader = answers.next().unwrap().unwrap_err();
        assert_eq!(leader.downcast_ref::<&str>(), Some(&"the commit panics"));
        for answer in answers {
            assert!(matches!(answer.unwrap(), Err(Failure::NoAnswer)));
        }
        // Nobody is left to collect an answer, so none is kept.
        assert_eq!(engine.status(), Status::IDLE);
        assert!(store.log.lock().is_empty());

        assert_eq!(store.submit(&engine, Request::Push(4)).unwrap(), (4, 1));
        let after = one_batch(&engine, &store, &[5, 6].map(Request::Push));
        let after: Vec<_> = after.into_iter().map(|a| a.unwrap().unwrap()).collect();
        assert_eq!(after, [(5, 2), (6, 3)]);
        assert_eq!(*store.commits.lock(), [vec![4], vec![5, 6]]);
    }

    /// A leader whose batch is smaller than the last one waits for the others to join it, and
    /// commits them all at once.
    #[test]
    fn a_leader_gathers_as_many_callers_as_the_last_batch_held() {
        let engine = expecting(3, Duration::from_secs(3600));
        let store = Store::default();
        std::thread::scope(|scope| {
            for value in 1..=3 {
                let (engine, store) = (&engine, &store);
                scope.spawn(move || store.submit(engine, Request::Push(value)).unwrap());
            }
        });
        let commits = store.commits.lock();
        assert_eq!(commits.len(), 1, "{commits:?}");
        assert_eq!(commits[0].len(), 3);
        assert_eq!(engine.state.lock().last_batch, 3);
    }

    /// Tasks queue beside threads and share their batches, in arrival order; a task that stops
    /// waiting leaves no answer behind; with only tasks queued, the committer leads.
    #[test]
    fn tasks_join_batches_and_the_committer_leads_when_no_thread_does() {
        let (engine, store) = (Engine::new(MAX_GATHER), Store::default());
        let waker = Waker::noop();
        let first = engine.enqueue(Request::Push(1));
        let dropped = engine.enqueue(Request::Push(2));
        assert_eq!(engine.wait_for_work(Duration::ZERO), Work::Lead);
        assert!(engine.poll_answer(first, waker).is_none());
        engine.abandon(dropped);
        // A thread's request queued behind the tasks leads their batch.
        assert_eq!(store.submit(&engine, Request::Push(3)).unwrap(), (3, 3));
        assert_eq!(engine.poll_answer(first, waker).unwrap().unwrap(), (1, 1));
        assert_eq!(engine.status(), Status::IDLE);
        assert_eq!(*store.commits.lock(), [vec![1, 2, 3]]);

        let alone = engine.enqueue(Request::Push(4));
        assert_eq!(engine.wait_for_work(Duration::ZERO), Work::Lead);
        engine.lead_queued(|batch| store.commit(batch));
        assert_eq!(engine.poll_answer(alone, waker).unwrap().unwrap(), (4, 4));
        assert_eq!(engine.wait_for_work(Duration::ZERO), Work::Idle);
        engine.stop();
        assert_eq!(engine.wait_for_work(Duration::ZERO), Work::Stop);
        assert_eq!(engine.status(), Status::IDLE);
    }

    /// Gathering waits no longer than the engine's limit, however large the last batch and
    /// however slow the last commit: with no time to wait, a lone caller commits at once.
    #[test]
    fn a_leader_gathers_no_longer_than_the_limit() {
        let engine = expecting(3, Duration::ZERO);
        let store = Store::default();
        assert_eq!(store.submit(&engine, Request::Push(1)).unwrap(), (1, 1));
        assert_eq!(*store.commits.lock(), [vec![1]]);
    }
}
