//! What one request shares between a web layer's middleware and the [`Session`](super::Session)
//! handles of its handler: the id the client sent, where ids travel (the cookie, a header, or
//! both), and the answer the latest session call asked for, checked once more before it goes
//! out.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::error::{SessionError, in_place};
use crate::error::Chain;
use crate::session::Session as CoreSession;
use crate::session::id::SessionId;
use crate::session::{CookieAction, Sessions};

/// Where a web layer reads the session id from and answers it: the session cookie (on by
/// default), and a header named by the application (off by default), for clients that keep no
/// cookies. The id rules are the same on both: an id is only ever one the server issued.
#[derive(Debug, Clone, Default)]
pub(crate) struct Transport {
    /// Whether ids travel in the session cookie: read from `Cookie`, answered in `Set-Cookie`.
    no_cookie: bool,
    /// The lowercase name of the header ids travel in as well, if any.
    header: Option<String>,
}

impl Transport {
    /// Ids travel in the header `name` too: read from the request's, answered in the response's.
    pub(crate) fn with_header(self, name: &str) -> Transport {
        Transport {
            header: Some(name.to_ascii_lowercase()),
            ..self
        }
    }

    /// Ids no longer travel in the cookie: it is neither read nor set.
    pub(crate) fn without_cookie(self) -> Transport {
        Transport {
            no_cookie: true,
            ..self
        }
    }

    /// The header ids travel in, if any.
    pub(crate) fn header(&self) -> Option<&str> {
        self.header.as_deref()
    }

    /// Whether ids travel in the cookie.
    pub(crate) fn cookie(&self) -> bool {
        !self.no_cookie
    }

    /// The id the client sent: the first well-formed id among the values of the id header (when
    /// there is one), else among the `Cookie` headers (HTTP/2 may split them); and whether the
    /// cookie carried that id. Whether it names a live session is the start's call.
    fn client_id<'a>(
        &self,
        sessions: &Sessions,
        header: impl IntoIterator<Item = &'a str>,
        cookies: impl IntoIterator<Item = &'a str>,
    ) -> (Option<SessionId>, bool) {
        let from_header = match self.header {
            Some(_) => header
                .into_iter()
                .find_map(|value| SessionId::parse(value.trim())),
            None => None,
        };
        let from_cookie = self
            .cookie()
            .then(|| {
                cookies
                    .into_iter()
                    .find_map(|value| sessions.id_from_cookie(value))
            })
            .flatten();
        let id = from_header.or_else(|| from_cookie.clone());
        let in_cookie = id.is_some() && id == from_cookie;
        (id, in_cookie)
    }
}

/// What one request shares between the middleware and its [`Session`](super::Session) handles.
#[derive(Clone)]
pub(crate) struct Slot(Arc<SlotInner>, u64);

struct SlotInner {
    sessions: Sessions,
    transport: Arc<Transport>,
    /// The well-formed id the client sent, if any; whether it names a session is `start`'s call.
    client_id: Option<SessionId>,
    /// Whether the cookie carried `client_id`. An answer about the client's own id goes into
    /// the cookie only then: an id that came in the header alone is never written into the
    /// cookie (which may hold another session, or none), so that whoever can make a browser
    /// send a header cannot plant a session in its cookie jar.
    in_cookie: bool,
    /// The answer the latest session call asked for.
    pending: Mutex<Option<Pending>>,
    /// How many session handles this request made: each records as a number of its own.
    handles: AtomicU64,
}

/// An answer recorded by a session call, not sent yet.
struct Pending {
    /// The handle that recorded it (see [`Slot::for_new_handle`]).
    by: u64,
    answer: Answer,
    /// The client's own id, when the answer only refreshes it: it is sent only if that id is
    /// still live when the response goes out.
    recheck: Option<SessionId>,
}

/// What the response carries for the session: at most one `Set-Cookie` value, and at most one
/// value of the id header (the id, or empty after a destroy: forget the id).
#[derive(Debug, Default)]
pub(crate) struct Answer {
    pub(crate) set_cookie: Option<String>,
    pub(crate) id: Option<String>,
}

impl Answer {
    /// Whether the response carries nothing for the session.
    #[cfg(feature = "actix")]
    pub(crate) fn is_empty(&self) -> bool {
        self.set_cookie.is_none() && self.id.is_none()
    }

    /// Each header the response gets for the session, in order, its value made by `value` (a
    /// framework's header value); `id_header` is the name of the layer's id header, if any. The
    /// cookie crate percent-encodes names and values, and ids are plain ASCII, so a value that is
    /// no header value cannot happen; it would be logged rather than sent broken.
    pub(crate) fn fields<V, E: fmt::Display>(
        self,
        id_header: Option<&str>,
        value: impl Fn(&str) -> Result<V, E>,
    ) -> Vec<(Field, V)> {
        let value = |text: &str| match value(text) {
            Ok(value) => Some(value),
            Err(err) => {
                tracing::error!(error = %err, "session header is not a valid header value");
                None
            }
        };
        let cookie = self.set_cookie.as_deref().and_then(value);
        let id = self.id.as_deref().and_then(value);
        let mut fields = Vec::new();
        if cookie.is_some() || id.is_some() {
            // The answer carries a bearer token (or takes one back): no shared cache may keep it
            // and hand it to another client.
            fields.extend(value("private, no-store").map(|v| (Field::CacheControl, v)));
        }
        fields.extend(cookie.map(|v| (Field::SetCookie, v)));
        if let Some(name) = id_header {
            // The response depends on the request's id header.
            fields.extend(value(name).map(|v| (Field::Vary, v)));
            fields.extend(id.map(|v| (Field::Id, v)));
        }
        fields
    }
}

/// A response header that [`Answer::fields`] sets, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    /// `Cache-Control`, replacing the application's.
    CacheControl,
    /// `Set-Cookie`, beside any other.
    SetCookie,
    /// `Vary`, beside any other: the id header's name.
    Vary,
    /// The id header, replacing any value of it.
    Id,
}

impl Slot {
    /// The slot of one request: the id its client sent, from the id header or the `Cookie`
    /// headers, whose values (those that are text) `values(name)` gives.
    pub(crate) fn for_request<'a, I>(
        sessions: &Sessions,
        transport: &Arc<Transport>,
        values: impl Fn(&str) -> I,
    ) -> Slot
    where
        I: IntoIterator<Item = &'a str>,
    {
        let header = transport.header().map(&values).into_iter().flatten();
        let (client_id, in_cookie) = transport.client_id(sessions, header, values("cookie"));
        Slot(
            Arc::new(SlotInner {
                sessions: sessions.clone(),
                transport: Arc::clone(transport),
                client_id,
                in_cookie,
                pending: Mutex::new(None),
                handles: AtomicU64::new(0),
            }),
            0,
        )
    }

    /// The slot as one new session handle of the request records into it: a handle's answer
    /// replaces any before it, but when its calls come to ask for nothing
    /// ([`CookieAction::Keep`]), it takes back only an answer of its own, never one another
    /// handle of the same request (a middleware's and the handler's) recorded.
    pub(crate) fn for_new_handle(&self) -> Slot {
        let by = self.0.handles.fetch_add(1, Ordering::Relaxed) + 1;
        Slot(Arc::clone(&self.0), by)
    }

    pub(crate) fn sessions(&self) -> &Sessions {
        &self.0.sessions
    }

    pub(crate) fn client_id(&self) -> Option<&SessionId> {
        self.0.client_id.as_ref()
    }

    /// Records the answer that `session`'s calls call for, replacing what was recorded before;
    /// an answer of nothing takes back only this handle's own (see [`for_new_handle`](Self::for_new_handle)).
    pub(crate) fn record<T>(&self, session: &CoreSession<T>) {
        let (sessions, transport) = (&self.0.sessions, &self.0.transport);
        let own = self.0.client_id.as_ref() == Some(session.id());
        let cookie = transport.cookie() && (!own || self.0.in_cookie);
        let header = transport.header.is_some();
        let by = self.1;
        let pending = match session.cookie_action() {
            CookieAction::Keep => {
                let mut pending = self.0.pending.lock();
                if pending.as_ref().is_some_and(|pending| pending.by == by) {
                    *pending = None;
                }
                return;
            }
            CookieAction::Set => Some(Pending {
                by,
                answer: Answer {
                    set_cookie: cookie.then(|| sessions.set_cookie(session)),
                    id: header.then(|| session.id().as_str().to_owned()),
                },
                recheck: own.then(|| session.id().clone()),
            }),
            CookieAction::Remove => Some(Pending {
                by,
                answer: Answer {
                    set_cookie: cookie.then(|| sessions.removal_cookie()),
                    id: header.then(String::new),
                },
                recheck: None,
            }),
        };
        *self.0.pending.lock() = pending;
    }

    /// What to send with the response. An answer that only refreshes the id the client sent
    /// goes out only if that id is still live (another request may have destroyed the session,
    /// or moved it to a new id, meanwhile); not sending a refresh is always safe, since the
    /// client keeps the id it has.
    pub(crate) async fn answer(&self) -> Answer {
        let Some(pending) = self.0.pending.lock().take() else {
            return Answer::default();
        };
        let Some(id) = pending.recheck else {
            return pending.answer;
        };
        let sessions = self.0.sessions.clone();
        // `is_live` only reads.
        let live = if sessions.blocking().reads_block() {
            tokio::task::spawn_blocking(move || sessions.is_live(&id))
                .await
                .map_err(SessionError::Task)
        } else {
            in_place(|| sessions.is_live(&id))
        };
        let failed: &dyn std::error::Error = match &live {
            Ok(Ok(true)) => return pending.answer,
            Ok(Ok(false)) => return Answer::default(),
            Ok(Err(err)) => err,
            Err(err) => err,
        };
        tracing::warn!(error = %Chain(failed), "could not check the session before refreshing its cookie");
        Answer::default()
    }
}
