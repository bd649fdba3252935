//! The async half of an update, for the axum layer: the checks and the update queued through
//! [`Archive::update_async`](crate::archive::Archive::update_async), then, once the write is
//! done, the handle's end of it, so that no thread waits for a commit.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Phase, Recorded, Session};
use crate::error::Result;
use crate::session::store::StateWritten;

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
