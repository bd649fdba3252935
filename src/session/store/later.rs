//! The async update of a session's state, for the axum layer (see `handle/later.rs`).

use std::future::Future;
use std::pin::Pin;

use super::{Store, state_change};
use crate::archive::Archive;
use crate::error::Result;
use crate::session::id::SessionId;
use crate::session::layout::{STATE_KEY, is_state};

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
}
