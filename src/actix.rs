//! actix-web 4 integration: a [`SessionMiddleware`] that manages the session cookie, and the
//! [`Session`] extractor that hands each handler its typed session.
//!
//! - [`SessionMiddleware::new`] wraps an app with a [`Sessions`]:
//!   `App::new().wrap(SessionMiddleware::new(sessions))`. For every request it reads the session
//!   id from the `Cookie` header (or an id header, see
//!   [`with_id_header`](SessionMiddleware::with_id_header)), and after the handler it adds the
//!   `Set-Cookie` header the handler's session calls asked for.
//! - [`Session<T>`] is the extractor, the same handle as the axum layer's, with the same calls
//!   and rules: see [`crate::web`], which holds everything the two layers share. This file adds
//!   only actix-web's side: the middleware, the `FromRequest` impl, and [`SessionError`] as a
//!   `ResponseError`.
//!
//! **Blocking work and actix's workers.** actix-web runs one single-threaded tokio runtime per
//! worker, so a call that blocks on its thread stalls every request of that worker. Session
//! calls that may block run where actix runs blocking work, tokio's blocking pool (what
//! [`actix_web::web::block`] uses); calls the archive says never block
//! ([`Archive::blocking`](crate::Archive::blocking): memory, redb's reads) run in place, an
//! update on redb awaits its group commit without a thread, and an archive with async paths
//! (Redis) answers the start's read and the update's swap as futures on the worker itself.
//!
//! # Example
//!
//! ```no_run
//! use actix_web::{App, HttpServer, web};
//! use serde::{Deserialize, Serialize};
//! use session_archive::actix::{Session, SessionError, SessionMiddleware};
//! use session_archive::{MemoryArchive, Sessions};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct State {
//!     visits: u64,
//! }
//!
//! async fn count(mut session: Session<State>) -> Result<String, SessionError> {
//!     let visits = session.update(|state| {
//!         state.visits += 1;
//!         state.visits
//!     }).await?;
//!     Ok(format!("Visit #{visits}"))
//! }
//!
//! fn main() -> std::io::Result<()> {
//!     let sessions = Sessions::new(MemoryArchive::new());
//!     actix_web::rt::System::new().block_on(
//!         HttpServer::new(move || {
//!             App::new()
//!                 .wrap(SessionMiddleware::new(sessions.clone()))
//!                 .route("/", web::get().to(count))
//!         })
//!         .bind("127.0.0.1:3000")?
//!         .run(),
//!     )
//! }
//! ```

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::error::InternalError;
use actix_web::http::StatusCode;
use actix_web::http::header::{
    CACHE_CONTROL, HeaderMap, HeaderName, HeaderValue, SET_COOKIE, VARY,
};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::session::Sessions;
use crate::web::{Answer, Field, Slot, Transport};
pub use crate::web::{Session, SessionError};

/// An actix-web middleware that gives the [`Session`] extractor its [`Sessions`] and writes the
/// session cookie into responses. Wrap an [`App`](actix_web::App) (or a scope) with it.
///
/// It reads the session id from the request's `Cookie` headers (see
/// [`Sessions::id_from_cookie`]) and, after the inner service has answered, appends one
/// `Set-Cookie` header when a session handle asked for one. The cookie's attributes are the
/// [`Sessions`]'s: `HttpOnly`, `SameSite=Lax`, `Path=/`, and `Secure` unless
/// [turned off](crate::session::SessionsBuilder::secure); `Max-Age` follows the idle timeout.
///
/// # Examples
///
/// ```
/// use actix_web::{App, web};
/// use session_archive::actix::SessionMiddleware;
/// use session_archive::{MemoryArchive, Sessions};
///
/// let sessions = Sessions::new(MemoryArchive::new());
/// let app = App::new()
///     .wrap(SessionMiddleware::new(sessions))
///     .route("/", web::get().to(|| async { "hello" }));
/// # let _ = app;
/// ```
#[derive(Debug, Clone)]
pub struct SessionMiddleware {
    sessions: Sessions,
    transport: Arc<Transport>,
    /// The header ids travel in, if any (its name is in `transport` too).
    id_header: Option<HeaderName>,
}

impl SessionMiddleware {
    /// Returns a middleware that serves sessions from `sessions`.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::actix::SessionMiddleware;
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let middleware =
    ///     SessionMiddleware::new(Sessions::builder(MemoryArchive::new()).secure(false).build());
    /// # let _ = middleware;
    /// ```
    pub fn new(sessions: Sessions) -> SessionMiddleware {
        SessionMiddleware {
            sessions,
            transport: Arc::default(),
            id_header: None,
        }
    }

    /// Returns the middleware also taking the session id from the request header `name`, and
    /// answering it in the response header `name`, for clients that keep no cookies (see
    /// [`crate::web`]: the same id rules as the cookie's; the header's id wins over the
    /// cookie's). The cookie still works; [`without_cookie`](Self::without_cookie) turns it off.
    ///
    /// # Examples
    ///
    /// ```
    /// use actix_web::http::header::HeaderName;
    /// use session_archive::actix::SessionMiddleware;
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let middleware = SessionMiddleware::new(Sessions::new(MemoryArchive::new()))
    ///     .with_id_header(HeaderName::from_static("x-session-id"));
    /// # let _ = middleware;
    /// ```
    #[must_use]
    pub fn with_id_header(self, name: HeaderName) -> SessionMiddleware {
        let transport = Transport::clone(&self.transport).with_header(name.as_str());
        SessionMiddleware {
            transport: Arc::new(transport),
            id_header: Some(name),
            ..self
        }
    }

    /// Returns the middleware neither reading nor setting the session cookie: ids travel only in
    /// the header of [`with_id_header`](Self::with_id_header) (without one, no session outlives
    /// its request).
    ///
    /// # Examples
    ///
    /// ```
    /// use actix_web::http::header::HeaderName;
    /// use session_archive::actix::SessionMiddleware;
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let api = SessionMiddleware::new(Sessions::new(MemoryArchive::new()))
    ///     .with_id_header(HeaderName::from_static("x-session-id"))
    ///     .without_cookie();
    /// # let _ = api;
    /// ```
    #[must_use]
    pub fn without_cookie(self) -> SessionMiddleware {
        let transport = Transport::clone(&self.transport).without_cookie();
        SessionMiddleware {
            transport: Arc::new(transport),
            ..self
        }
    }

    /// The slot of one request: the id its client sent, from the id header or the cookie.
    fn slot(&self, headers: &HeaderMap) -> Slot {
        Slot::for_request(&self.sessions, &self.transport, |name| {
            headers
                .get_all(name)
                .filter_map(|value| value.to_str().ok())
        })
    }
}

impl<S, B> Transform<S, ServiceRequest> for SessionMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = SessionService<S>;
    type InitError = ();
    type Future = Ready<Result<SessionService<S>, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(SessionService {
            service: Rc::new(service),
            middleware: self.clone(),
        }))
    }
}

/// The service made by [`SessionMiddleware`] around an app's service; see there.
#[derive(Debug)]
pub struct SessionService<S> {
    service: Rc<S>,
    middleware: SessionMiddleware,
}

impl<S, B> Service<ServiceRequest> for SessionService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<ServiceResponse<B>, actix_web::Error>>>>;

    forward_ready!(service);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        let slot = self.middleware.slot(request.headers());
        request.extensions_mut().insert(slot.clone());
        let response = self.service.call(request);
        let header = self.middleware.id_header.clone();
        Box::pin(async move {
            let mut response = match response.await {
                Ok(response) => response,
                // An inner middleware failed after the handler's calls: its error's response
                // still carries what they asked for (a login's new id, a logout's removal),
                // or the client would keep an id that names nothing.
                // With nothing to add, the error goes on as it came, so that outer middleware
                // still finds its own error type in it.
                Err(err) => {
                    let answer = slot.answer().await;
                    if answer.is_empty() {
                        return Err(err);
                    }
                    let mut failed = err.error_response();
                    append(failed.headers_mut(), answer, header.as_ref());
                    return Err(InternalError::from_response(err, failed).into());
                }
            };
            let answer = slot.answer().await;
            append(response.headers_mut(), answer, header.as_ref());
            Ok(response)
        })
    }
}

/// Adds what the session's calls asked for to a response's headers.
fn append(headers: &mut HeaderMap, answer: Answer, id_header: Option<&HeaderName>) {
    let name = id_header.map(HeaderName::as_str);
    for (field, value) in answer.fields(name, HeaderValue::from_str) {
        // What each call returns (a replaced value, whether the name was new) is not needed.
        match (field, id_header) {
            (Field::CacheControl, _) => {
                headers.insert(CACHE_CONTROL, value);
            }
            (Field::SetCookie, _) => {
                headers.append(SET_COOKIE, value);
            }
            (Field::Vary, _) => {
                headers.append(VARY, value);
            }
            (Field::Id, Some(name)) => {
                headers.insert(name.clone(), value);
            }
            (Field::Id, None) => {}
        }
    }
}

impl<T> FromRequest for Session<T>
where
    T: Default + Serialize + DeserializeOwned + Send + 'static,
{
    type Error = SessionError;
    type Future = Pin<Box<dyn Future<Output = Result<Session<T>, SessionError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let slot = request.extensions().get::<Slot>().cloned();
        Box::pin(async move { Session::start(slot.ok_or(SessionError::MissingLayer)?).await })
    }
}

/// The status and body of [`SessionError`]'s table; the error is logged with its sources.
impl ResponseError for SessionError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let (status, body) = self.respond();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        HttpResponse::build(status)
            .content_type("text/plain; charset=utf-8")
            .body(body)
    }
}
