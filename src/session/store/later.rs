//! The async update of a session's state, for the axum layer (see `handle/later.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;

use super::{Guess, Store, state_change, state_swaps};
use crate::archive::{Archive, GetManyFuture, SwapFuture};
use crate::error::Result;
use crate::session::id::SessionId;
use crate::session::layout::{META_KEY, STATE_KEY, Stamp, is_state};

/// The future of [`Store::update_state_async`]: whether a state was there to replace.
pub(crate) type StateWritten = Pin<Box<dyn Future<Output = Result<bool>> + Send>>;

impl Store {
    /// [`update_state`](Self::update_state) through [`Archive::update_async`]: on an archive
    /// whose blocking is [`Blocking::Commits`] this returns at once, and the future waits for
    /// the commit without a thread.
    pub(crate) fn update_state_async(
        &self,
        id: &SessionId,
        next: impl FnMut(&[u8]) -> Result<Vec<u8>> + Send + 'static,
    ) -> StateWritten {
        let written = self
            .archive
            .update_async(id.as_str(), STATE_KEY, state_change(next));
        Box::pin(async move { Ok(written.await?.as_deref().is_some_and(is_state)) })
    }

    /// The read of a start, `id`'s record and state, as a future that needs no thread (see
    /// [`Archive::get_many_async`]), with [`writes`](Self::writes) as it was before the read;
    /// `None` where the archive has no such path. Its values go to [`start`](Self::start).
    pub(crate) fn prefetch(&self, id: &SessionId) -> Option<Prefetch> {
        let writes = self.writes(id);
        let read = self
            .archive
            .get_many_async(id.as_str(), &[META_KEY, STATE_KEY])?;
        self.async_paths.store(true, Ordering::Relaxed);
        Some(Prefetch { writes, read })
    }

    /// An update's swap of `id`'s state from `guess` to `bytes`, with its record from `record`
    /// to the one it returns (see [`swap_state`](Self::swap_state)), as a future that needs no
    /// thread (see [`Archive::compare_and_swap_many_async`]); `None` where the archive has no
    /// such path, or the guess is stale by this process's writes. Once it answers `true`,
    /// [`swapped`](Self::swapped) makes the next guess; after an error,
    /// [`landed`](Self::landed) tells whether it landed.
    pub(crate) fn swap_async(
        &self,
        id: &SessionId,
        guess: &Guess,
        record: &Stamp,
        bytes: &[u8],
    ) -> Result<Option<(SwapFuture, Stamp)>> {
        if guess.writes != self.writes(id) {
            return Ok(None);
        }
        let written = record.for_update(id)?;
        let swaps = state_swaps(&guess.bytes, bytes, Some(record), Some(&written));
        Ok(self
            .archive
            .compare_and_swap_many_async(id.as_str(), &swaps)
            .map(|swap| (swap, written)))
    }
}

impl Store {
    /// Whether the archive answered a [`prefetch`](Self::prefetch) with an async read: then it
    /// has an async swap too (the two come together, as `Archive::get_many_async` asks), and
    /// an update may run its change before it knows that the swap goes that way.
    pub(crate) fn has_async_paths(&self) -> bool {
        self.async_paths.load(Ordering::Relaxed)
    }
}

/// The read of [`Store::prefetch`].
pub(crate) struct Prefetch {
    pub(crate) writes: u32,
    pub(crate) read: GetManyFuture,
}
