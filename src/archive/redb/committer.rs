//! Waiting for a commit without a thread: [`Pending`], the future of a request that a task
//! queued in the group commit (what [`update_async`](crate::archive::Archive::update_async)
//! awaits), and the committer thread that leads the commit for such requests when no writer
//! thread does. Generic over the engine, like it.
//!
//! A task's update joins the group commit's queue like any write, but its caller never leads:
//! it is woken by its waker once the commit holding it is done. Writer threads keep leading as
//! before and take queued tasks into their batches; when a batch ends and the next queued
//! request is a task's, or a task queues while no commit runs, the engine wakes the committer
//! thread to lead. So under load a task costs no thread switch of its own: the leader applies
//! it and wakes it, and only a batch, not a request, may wake the committer.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use super::group_commit::{self, Batch, GroupCommit, Work};

/// How long the committer thread sleeps between checks when nobody wakes it. It is woken
/// whenever there is work (under the engine's lock, so no wake-up is lost); this only keeps an
/// idle thread from sleeping forever on a bug.
const IDLE_WAIT: Duration = Duration::from_secs(60);

/// The committer thread of one engine.
pub(super) struct Committer {
    thread: JoinHandle<()>,
}

impl Committer {
    /// Starts the thread, which leads `group`'s commits with `commit` whenever tasks' requests
    /// wait for a leader.
    ///
    /// # Errors
    ///
    /// The system's, if it would not start a thread.
    pub(super) fn start<R, O, E>(
        group: Arc<GroupCommit<R, O, E>>,
        mut commit: impl FnMut(&mut Batch<'_, R>) -> Result<Vec<O>, E> + Send + 'static,
    ) -> std::io::Result<Committer>
    where
        R: Send + 'static,
        O: Send + 'static,
        E: Send + 'static,
    {
        let lead = move || {
            loop {
                match group.wait_for_work(IDLE_WAIT) {
                    Work::Lead => {
                        // A commit that panics has answered its batch with `NoAnswer` (see the
                        // engine's `Leadership`); the thread goes on, so later tasks have a leader.
                        let led = catch_unwind(AssertUnwindSafe(|| group.lead_queued(&mut commit)));
                        if let Err(payload) = led {
                            let _ = catch_unwind(AssertUnwindSafe(|| drop(payload)));
                        }
                    }
                    Work::Idle => {}
                    Work::Stop => return,
                }
            }
        };
        std::thread::Builder::new()
            .name("redb-committer".to_owned())
            .spawn(lead)
            .map(|thread| Committer { thread })
    }

    /// Ends the thread once it has committed everything queued, and waits for it, unless this
    /// is that thread (dropping a request it committed dropped the last handle on the store):
    /// it then ends by itself once its batch is done.
    pub(super) fn stop<R, O, E>(self, group: &GroupCommit<R, O, E>) {
        group.stop();
        if self.thread.thread().id() != std::thread::current().id() {
            // The thread catches every panic of a commit, so it cannot have panicked itself.
            let _ = self.thread.join();
        }
    }
}

/// The future of a task's queued request: ready with its answer once the commit holding it is
/// done. Dropped before that, it leaves the request queued and drops its answer.
pub(super) struct Pending<R, O, E> {
    group: Arc<GroupCommit<R, O, E>>,
    ticket: u64,
    answered: bool,
}

impl<R, O, E> Pending<R, O, E> {
    /// Queues `request` in `group` for a task, and returns the future of its answer.
    pub(super) fn queue(group: Arc<GroupCommit<R, O, E>>, request: R) -> Pending<R, O, E> {
        let ticket = group.enqueue(request);
        Pending {
            group,
            ticket,
            answered: false,
        }
    }
}

impl<R, O, E> Future for Pending<R, O, E> {
    type Output = group_commit::Answer<O, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(answer) = self.group.poll_answer(self.ticket, cx.waker()) else {
            return Poll::Pending;
        };
        self.answered = true;
        Poll::Ready(answer)
    }
}

impl<R, O, E> Drop for Pending<R, O, E> {
    fn drop(&mut self) {
        if !self.answered {
            self.group.abandon(self.ticket);
        }
    }
}
