//! The async half of an update, for the axum layer: the checks and the update queued through
//! [`Archive::update_async`](crate::archive::Archive::update_async), or its one swap sent
//! through [`Archive::compare_and_swap_many_async`](crate::archive::Archive::compare_and_swap_many_async),
//! then, once the write is done, the handle's end of it, so that no thread waits for a commit
//! or a server.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Applied, Phase, Recorded, Session, apply};
use crate::archive::SwapFuture;
use crate::error::{Error, Result};
use crate::session::layout::Stamp;
use crate::session::store::{StateWritten, Writing};

impl<T: Serialize + DeserializeOwned> Session<T> {
    /// The first half of [`update_send`](Self::update_send), for a caller that awaits the write
    /// instead of blocking on it: the checks, then the update queued through
    /// [`Archive::update_async`](crate::archive::Archive::update_async). Only where nothing else
    /// would write: `change` comes back, for `update_send`, when the session is not stored yet,
    /// has no timestamps, has a binding to store, or has timestamps that are expired or due for
    /// a rewrite. Finish with [`finish_update_later`](Self::finish_update_later).
    pub(crate) fn update_later<R, C>(&mut self, change: C) -> std::result::Result<Later<T, R>, C>
    where
        C: FnMut(&mut T) -> R + Send + 'static,
        T: Send + 'static,
        R: Send + 'static,
    {
        let now = self.store.now();
        let Phase::Live(Some(stamp)) = &self.phase else {
            return Err(change);
        };
        if self.rebind.is_some()
            || self.store.is_expired(stamp.meta, now)
            || self.store.touch_due(Some(stamp), now)
        {
            return Err(change);
        }
        let last = Recorded::default();
        let written = self
            .store
            .update_state_async(&self.id, self.recorded(change, &last));
        Ok(Later { written, last })
    }

    /// The second half of an update begun with [`update_later`](Self::update_later), once its
    /// write is done: as [`update_send`](Self::update_send) ends, without the timestamps'
    /// rewrite that `update_later` found not due.
    pub(crate) fn finish_update_later<R>(
        &mut self,
        later: Later<T, R>,
        written: Result<bool>,
    ) -> Result<R> {
        let Later { last, .. } = later;
        // The bytes written are not known here; the next swap reads them.
        self.stored = None;
        let updated = written?;
        let outcome = last.lock().take().filter(|_| updated);
        self.take_applied(outcome)
    }
}

/// An update begun by [`Session::update_later`]: poll its write, then hand it to
/// [`Session::finish_update_later`].
pub(crate) struct Later<T, R> {
    written: StateWritten,
    /// What the change made, from its last run.
    last: Recorded<T, R>,
}

impl<T, R> Later<T, R> {
    /// Polls the write: whether a state was there to replace.
    pub(crate) fn poll_written(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<bool>> {
        self.written.as_mut().poll(cx)
    }
}

impl<T: Serialize + DeserializeOwned> Session<T> {
    /// The first half of [`update`](Self::update) as one swap of the state from the handle's
    /// guess (see `Store::swap_state`), sent through the archive's async path: `change` is
    /// applied to the guess here, and the swap's future comes back. Only where nothing else
    /// would read or write: `change` comes back, for `update`, when the session is not stored
    /// yet, has no timestamps, has a binding to store, has timestamps that are expired or due
    /// for a rewrite, or the handle's guess is missing or stale, when `change` fails on the
    /// guess (the usual path then reports it), or when the archive has no async swap. Finish
    /// with [`finish_swap_later`](Self::finish_swap_later).
    pub(crate) fn swap_later<R, C>(
        &mut self,
        mut change: C,
    ) -> std::result::Result<SwapLater<T, R, C>, C>
    where
        C: FnMut(&mut T) -> R,
    {
        let now = self.store.now();
        let (Phase::Live(Some(stamp)), Some(guess)) = (&self.phase, &self.stored) else {
            return Err(change);
        };
        if !self.store.has_async_paths() {
            return Err(change);
        }
        if self.rebind.is_some()
            || self.store.is_expired(stamp.meta, now)
            || self.store.touch_due(Some(stamp), now)
        {
            return Err(change);
        }
        let Ok((bytes, applied)) = apply(&self.id, self.max_state_size, &guess.bytes, &mut change)
        else {
            return Err(change);
        };
        let Ok(Some((swap, written))) = self.store.swap_async(&self.id, guess, stamp, &bytes)
        else {
            return Err(change);
        };
        Ok(SwapLater {
            swap: Some(swap),
            unsettled: Unsettled {
                bytes,
                written,
                applied,
            },
            change,
        })
    }

    /// The second half of an update begun with [`swap_later`](Self::swap_later), once its swap
    /// answered `swapped`. As `update` ends, without the timestamps' rewrite that
    /// `swap_later` found not due.
    pub(crate) fn finish_swap_later<R, C>(
        &mut self,
        later: SwapLater<T, R, C>,
        swapped: Result<bool>,
    ) -> SwapOutcome<T, R, C> {
        let SwapLater {
            unsettled, change, ..
        } = later;
        match swapped {
            Ok(true) => SwapOutcome::Done(self.swap_landed(unsettled)),
            // Another write came first: the usual update reads it and applies `change` again.
            Ok(false) => {
                self.stored = None;
                SwapOutcome::Again(change)
            }
            Err(err) => SwapOutcome::Unknown(unsettled, err),
        }
    }

    /// Settles a swap whose answer was an error, where a read may block: the swap may have
    /// landed and its answer been lost, which the record it wrote tells (see `Store::landed`).
    /// `Ok` when it is there; otherwise the swap's error.
    pub(crate) fn settle_swap<R>(&mut self, unsettled: Unsettled<T, R>, err: Error) -> Result<R> {
        self.stored = None;
        let landed = self.store.landed(
            &self.id,
            &unsettled.bytes,
            Some(&unsettled.written),
            Writing::Update,
        );
        if landed {
            Ok(self.swap_landed(unsettled))
        } else {
            Err(err)
        }
    }

    /// Makes a landed swap's result the handle's state, and its record the handle's.
    fn swap_landed<R>(&mut self, unsettled: Unsettled<T, R>) -> R {
        let Unsettled {
            bytes,
            written,
            applied,
        } = unsettled;
        let guess = self.store.swapped(&self.id, bytes);
        self.wrote(guess, Some(written));
        self.state = applied.state;
        self.dirty = false;
        applied.result
    }
}

/// An update begun by [`Session::swap_later`]: await its swap (taken with
/// [`take_swap`](Self::take_swap)), then hand both to [`Session::finish_swap_later`].
pub(crate) struct SwapLater<T, R, C> {
    swap: Option<SwapFuture>,
    unsettled: Unsettled<T, R>,
    change: C,
}

impl<T, R, C> SwapLater<T, R, C> {
    /// The swap's future, once.
    pub(crate) fn take_swap(&mut self) -> Option<SwapFuture> {
        self.swap.take()
    }
}

/// What became of an update begun by [`Session::swap_later`].
pub(crate) enum SwapOutcome<T, R, C> {
    /// It is stored; what the change returned.
    Done(R),
    /// Another write landed first: run the update the usual way with the change.
    Again(C),
    /// The swap failed in a way that does not tell whether it landed: settle it with
    /// [`Session::settle_swap`] where a read may block.
    Unknown(Unsettled<T, R>, Error),
}

/// A swap whose outcome is not known yet: the state and the record it stores, and what the
/// change made.
pub(crate) struct Unsettled<T, R> {
    bytes: Vec<u8>,
    written: Stamp,
    applied: Applied<T, R>,
}
