//! [`SessionError`], what a failed session call of either web layer becomes, and the one status
//! and body each kind answers with; the framework files turn that pair into their response type.

use crate::error::{Chain, Error};

/// Why a [`Session`](super::Session) could not be extracted or a session call failed; both web
/// layers turn it into an HTTP response (axum's `IntoResponse`, actix-web's `ResponseError`),
/// with the same status and body.
///
/// | cause | status | logged |
/// |---|---|---|
/// | [`Error::CorruptSession`]: the stored state does not decode as `T` | 500, body `session is corrupt` | `error!` |
/// | [`Error::SessionGone`]: destroyed, or moved to a new id, by another request (the cookie is left alone) | 409, body `session no longer exists` | no |
/// | [`Error::StateTooLarge`]: the state grew over the limit | 413, body `session state is too large` | `warn!` |
/// | any other [`Error`] (storage failures) | 500 | `error!` |
/// | [`MissingLayer`](Self::MissingLayer), [`Task`](Self::Task), [`Panicked`](Self::Panicked), [`Lost`](Self::Lost) | 500 | `error!` |
///
/// By default a corrupt session is reported, never replaced: the stored bytes stay for the
/// operator to inspect, and every request with that cookie gets the 500 until the session is
/// repaired or removed. With [`OnCorrupt::StartFresh`](crate::session::OnCorrupt::StartFresh) the
/// user gets a fresh session instead and the bytes are set aside. Logs carry the whole
/// [`source`](std::error::Error::source) chain, with sessions named by their fingerprint;
/// response bodies carry no detail (no ids, no paths).
///
/// # Examples
///
/// ```
/// use session_archive::Error;
/// use session_archive::web::SessionError;
///
/// let gone = SessionError::from(Error::SessionGone { id: "x".into() });
/// assert_eq!(gone.status(), 409);
/// assert_eq!(SessionError::MissingLayer.status(), 500);
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// A session call failed.
    #[error("session call failed")]
    Session(#[from] Error),
    /// The route has no session layer (axum's `SessionLayer`, actix-web's `SessionMiddleware`),
    /// so there is no session to extract.
    #[error("the Session extractor needs the session layer or middleware on the route")]
    MissingLayer,
    /// The blocking task running a session call panicked or was cancelled.
    #[error("blocking session task failed")]
    Task(#[source] tokio::task::JoinError),
    /// A session call that ran on the executor's thread, since the archive does not block
    /// ([`Archive::blocking`](crate::Archive::blocking)), panicked: an `update` closure, or
    /// `T`'s `Serialize`, `Deserialize` or `Default`. The handle is lost as after
    /// [`Task`](Self::Task).
    #[error("a session call panicked")]
    Panicked,
    /// An earlier call on this handle panicked and its session was lost with it (see
    /// [`Session`](super::Session)); the handle can make no more calls, and only answers what it
    /// knew before. The stored session is as that call left it.
    #[error("an earlier call on this session handle panicked; the handle's state is lost")]
    Lost,
}

impl SessionError {
    /// The HTTP status code this error answers with (see the table above).
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::Error;
    /// use session_archive::web::SessionError;
    ///
    /// let big = SessionError::from(Error::StateTooLarge { id: "x".into(), size: 9, limit: 8 });
    /// assert_eq!(big.status(), 413);
    /// ```
    pub fn status(&self) -> u16 {
        self.status_and_body().0
    }

    /// The status and the body of the response, without logging.
    fn status_and_body(&self) -> (u16, &'static str) {
        match self {
            SessionError::Session(Error::CorruptSession { .. }) => (500, "session is corrupt"),
            SessionError::Session(Error::SessionGone { .. }) => (409, "session no longer exists"),
            SessionError::Session(Error::StateTooLarge { .. }) => {
                (413, "session state is too large")
            }
            _ => (500, "internal server error"),
        }
    }

    /// The status and body of the response, logging the error with its chain of sources as the
    /// table above says: what a framework's response conversion calls once per error.
    pub(crate) fn respond(&self) -> (u16, &'static str) {
        let (status, body) = self.status_and_body();
        match status {
            409 => {}
            413 => tracing::warn!(error = %Chain(self), "{body}"),
            _ => tracing::error!(error = %Chain(self), "{body}"),
        }
        (status, body)
    }
}

/// Runs a session call that cannot block on the current thread. A panic in it (an `update`
/// closure, or `T`'s serde or `Default`) becomes [`SessionError::Panicked`], as a panic on a
/// blocking thread becomes [`SessionError::Task`], instead of unwinding through the server.
pub(crate) fn in_place<R>(call: impl FnOnce() -> R) -> Result<R, SessionError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).map_err(|_| SessionError::Panicked)
}

#[cfg(test)]
mod tests {
    use super::{Chain, SessionError};
    use crate::error::Error;

    #[test]
    fn chain_shows_every_source() {
        let err = SessionError::from(Error::Io {
            path: "/data/sessions.redb".into(),
            source: std::io::Error::other("disk full"),
        });
        assert_eq!(
            Chain(&err).to_string(),
            "session call failed: I/O error on /data/sessions.redb: disk full"
        );
    }

    #[test]
    fn each_kind_answers_its_status_and_a_body_without_detail() {
        let corrupt = SessionError::from(Error::CorruptSession {
            id: "x".into(),
            source: serde_json::from_str::<u8>("[").expect_err("not a number"),
        });
        assert_eq!(corrupt.respond(), (500, "session is corrupt"));
        let gone = SessionError::from(Error::SessionGone { id: "x".into() });
        assert_eq!(gone.respond(), (409, "session no longer exists"));
        assert_eq!(SessionError::Lost.respond(), (500, "internal server error"));
    }
}
