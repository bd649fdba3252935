//! Where the interleaving explorer (in [`conformance`](crate::conformance)) reaches inside the
//! session protocol: the in-process lock waits it must schedule, and deliberate mutations of the
//! protocol that show the explorer catches them. Both are per thread, so tests running side by
//! side never see each other's; without the `conformance` feature (and outside this crate's own
//! tests) they compile to nothing.

/// A deliberate defect of the session protocol, switched on for one thread by
/// [`set_mutations`]: the interleaving explorer must catch each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mutation {
    /// A write that rebinds a session removes the old user's index entry with a plain remove,
    /// not with a compare-and-swap against the entry its binding wrote: a rebind to that user
    /// landing in between loses its entry.
    UnconditionalIndexRemoval,
    /// `destroy` removes the state with a plain remove instead of its compare-and-swap: a
    /// destroy through an id a regenerate just moved away from deletes the moved-marker and
    /// reports the session removed while it lives on under the new id.
    DestroyPlainRemove,
}

#[cfg(any(test, feature = "conformance"))]
mod hooks {
    use std::cell::RefCell;
    use std::sync::Arc;

    use super::Mutation;

    /// A callback run where the protocol would wait for an in-process lock.
    pub type LockWait = Arc<dyn Fn() + Send + Sync>;

    std::thread_local! {
        static LOCK_WAIT: RefCell<Option<LockWait>> = const { RefCell::new(None) };
        static MUTATIONS: RefCell<Vec<Mutation>> = const { RefCell::new(Vec::new()) };
    }

    /// Installs (or, with `None`, removes) this thread's lock-wait hook. While one is
    /// installed, the protocol takes each in-process lock by trying it, and runs the hook
    /// whenever the lock is held by another thread, before trying again: a scheduler that runs
    /// one thread at a time then sees the wait as a scheduling point, and lets the holder go on.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use session_archive::conformance::set_lock_wait_hook;
    ///
    /// set_lock_wait_hook(Some(Arc::new(std::thread::yield_now)));
    /// set_lock_wait_hook(None);
    /// ```
    pub fn set_lock_wait_hook(hook: Option<LockWait>) {
        LOCK_WAIT.with(|slot| *slot.borrow_mut() = hook);
    }

    /// Switches this thread's [`Mutation`]s: the protocol run on this thread then has those
    /// defects. An empty list restores the real protocol.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::conformance::{Mutation, set_mutations};
    ///
    /// set_mutations(&[Mutation::DestroyPlainRemove]);
    /// set_mutations(&[]);
    /// ```
    pub fn set_mutations(mutations: &[Mutation]) {
        MUTATIONS.with(|slot| *slot.borrow_mut() = mutations.to_vec());
    }

    /// Runs this thread's lock-wait hook; `false` when none is installed.
    pub(crate) fn lock_wait() -> bool {
        let hook = LOCK_WAIT.with(|slot| slot.borrow().clone());
        hook.map(|hook| hook()).is_some()
    }

    /// Whether `mutation` is switched on for this thread.
    pub(crate) fn mutated(mutation: Mutation) -> bool {
        MUTATIONS.with(|slot| slot.borrow().contains(&mutation))
    }
}

#[cfg(any(test, feature = "conformance"))]
pub use hooks::{LockWait, set_lock_wait_hook, set_mutations};
#[cfg(any(test, feature = "conformance"))]
pub(crate) use hooks::{lock_wait, mutated};

/// Without the explorer, no thread has a lock-wait hook.
#[cfg(not(any(test, feature = "conformance")))]
pub(crate) fn lock_wait() -> bool {
    false
}

/// Without the explorer, the protocol is never mutated.
#[cfg(not(any(test, feature = "conformance")))]
pub(crate) fn mutated(_: Mutation) -> bool {
    false
}

/// Takes `lock`, as a scheduling point for the explorer when this thread has a lock-wait hook.
pub(crate) fn lock<T>(lock: &parking_lot::Mutex<T>) -> parking_lot::MutexGuard<'_, T> {
    loop {
        if let Some(guard) = lock.try_lock() {
            return guard;
        }
        if !lock_wait() {
            return lock.lock();
        }
    }
}
