//! Waiting for a future on the calling thread, without a runtime: for the synchronous calls of a
//! backend whose work runs on a runtime of its own, and for the conformance suite's async checks.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Polls `future` on this thread, parking it between wake-ups, and returns its output.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    /// Wakes the thread that polls.
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}
