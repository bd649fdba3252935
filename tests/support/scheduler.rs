//! Runs one operation between two archive calls of another: an archive hook that counts the
//! calls made outside the other operation and, once armed, runs it just before call number `at`.
//! Tests walk `at` from 0 until the other operation no longer lands inside, so it runs at every
//! call boundary.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Runs `other` just before the `at`-th archive call made outside it, once armed.
#[derive(Default)]
pub struct Scheduler {
    armed: AtomicBool,
    nested: AtomicBool,
    calls: AtomicUsize,
    at: AtomicUsize,
    other: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Scheduler {
    /// The archive hook: call it from a `conformance::Hooked` wrapper for every call.
    pub fn hook(&self) {
        if !self.armed.load(Ordering::SeqCst) || self.nested.load(Ordering::SeqCst) {
            return;
        }
        if self.calls.fetch_add(1, Ordering::SeqCst) == self.at.load(Ordering::SeqCst) {
            self.run_other();
        }
    }

    fn run_other(&self) {
        let other = self.other.lock().expect("an unpoisoned lock").take();
        if let Some(other) = other {
            self.nested.store(true, Ordering::SeqCst);
            other();
            self.nested.store(false, Ordering::SeqCst);
        }
    }

    /// Arms the scheduler: `other` runs before call number `at`.
    pub fn arm(&self, at: usize, other: impl FnOnce() + Send + 'static) {
        *self.other.lock().expect("an unpoisoned lock") = Some(Box::new(other));
        self.calls.store(0, Ordering::SeqCst);
        self.at.store(at, Ordering::SeqCst);
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Disarms it, running `other` now if the operation under test made `at` calls or fewer;
    /// says whether it ran inside the operation.
    pub fn finish(&self) -> bool {
        self.armed.store(false, Ordering::SeqCst);
        let pending = self.other.lock().expect("an unpoisoned lock").is_some();
        self.run_other();
        !pending
    }
}
