//! Axum 0.8 integration: a [`SessionLayer`] that manages the session cookie, and the
//! [`Session`] extractor that hands each handler its typed session.
//!
//! - [`SessionLayer::new`] wraps a router with a [`Sessions`]. For every request it reads the
//!   session id from the `Cookie` header (or an id header, see
//!   [`with_id_header`](SessionLayer::with_id_header)), and after the handler it adds the
//!   `Set-Cookie` header the handler's session calls asked for.
//! - [`Session<T>`] is the extractor: the framework-free handle of [`crate::web`], which holds
//!   the rules both web layers share (what runs where, when a cookie is sent, concurrent
//!   requests, cancellation, login). This file adds only axum's side: the tower layer, the
//!   `FromRequestParts` impl, and [`SessionError`] as an `IntoResponse`.
//!
//! The extractor takes its [`Sessions`] from the layer, so it works with any router state.
//! Applying the layer with [`Router::layer`](::axum::Router::layer) covers every route.
//!
//! # Example
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use serde::{Deserialize, Serialize};
//! use session_archive::axum::{Session, SessionError, SessionLayer};
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
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let sessions = Sessions::new(MemoryArchive::new());
//!     let app = Router::new().route("/", get(count)).layer(SessionLayer::new(sessions));
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     axum::serve(listener, app).await
//! }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::axum::extract::FromRequestParts;
use ::axum::http::header::{CACHE_CONTROL, SET_COOKIE, VARY};
use ::axum::http::request::Parts;
use ::axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use ::axum::response::IntoResponse;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::session::Sessions;
use crate::web::{Answer, Field, Slot, Transport};
pub use crate::web::{Session, SessionError};

/// A tower layer that gives the [`Session`] extractor its [`Sessions`] and writes the session
/// cookie into responses. Apply it to a [`Router`](::axum::Router) with `.layer(…)`.
///
/// It reads the session id from the request's `Cookie` headers (see
/// [`Sessions::id_from_cookie`]) and, after the inner service has answered, appends one
/// `Set-Cookie` header when a session handle asked for one. The cookie's attributes are the
/// [`Sessions`]'s: `HttpOnly`, `SameSite=Lax`, `Path=/`, and `Secure` unless
/// [turned off](crate::session::SessionsBuilder::secure).
///
/// # Examples
///
/// ```
/// use axum::{Router, routing::get};
/// use session_archive::axum::SessionLayer;
/// use session_archive::{MemoryArchive, Sessions};
///
/// let sessions = Sessions::new(MemoryArchive::new());
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(SessionLayer::new(sessions));
/// # let _ = app;
/// ```
#[derive(Debug, Clone)]
pub struct SessionLayer {
    sessions: Sessions,
    transport: Arc<Transport>,
    /// The header ids travel in, if any (its name is in `transport` too).
    id_header: Option<HeaderName>,
}

impl SessionLayer {
    /// Returns a layer that serves sessions from `sessions`.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::axum::SessionLayer;
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let layer = SessionLayer::new(Sessions::builder(MemoryArchive::new()).secure(false).build());
    /// # let _ = layer;
    /// ```
    pub fn new(sessions: Sessions) -> SessionLayer {
        SessionLayer {
            sessions,
            transport: Arc::default(),
            id_header: None,
        }
    }

    /// Returns the layer also taking the session id from the request header `name`, and
    /// answering it in the response header `name`, for clients that keep no cookies (see
    /// [`crate::web`]: the same id rules as the cookie's; the header's id wins over the
    /// cookie's). The cookie still works; [`without_cookie`](Self::without_cookie) turns it off.
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::http::HeaderName;
    /// use session_archive::axum::SessionLayer;
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let layer = SessionLayer::new(Sessions::new(MemoryArchive::new()))
    ///     .with_id_header(HeaderName::from_static("x-session-id"));
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn with_id_header(self, name: HeaderName) -> SessionLayer {
        let transport = Transport::clone(&self.transport).with_header(name.as_str());
        SessionLayer {
            transport: Arc::new(transport),
            id_header: Some(name),
            ..self
        }
    }

    /// Returns the layer neither reading nor setting the session cookie: ids travel only in the
    /// header of [`with_id_header`](Self::with_id_header) (without one, no session outlives its
    /// request).
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::http::HeaderName;
    /// use session_archive::axum::SessionLayer;
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let api = SessionLayer::new(Sessions::new(MemoryArchive::new()))
    ///     .with_id_header(HeaderName::from_static("x-session-id"))
    ///     .without_cookie();
    /// # let _ = api;
    /// ```
    #[must_use]
    pub fn without_cookie(self) -> SessionLayer {
        let transport = Transport::clone(&self.transport).without_cookie();
        SessionLayer {
            transport: Arc::new(transport),
            ..self
        }
    }
}

impl<S> tower_layer::Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> SessionService<S> {
        SessionService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`SessionLayer`]; see there.
///
/// # Examples
///
/// ```
/// use axum::{Router, routing::get};
/// use session_archive::axum::{SessionLayer, SessionService};
/// use session_archive::{MemoryArchive, Sessions};
/// use tower_layer::Layer;
///
/// let router: Router = Router::new().route("/", get(|| async { "hello" }));
/// let service: SessionService<Router> =
///     SessionLayer::new(Sessions::new(MemoryArchive::new())).layer(router);
/// # let _ = service;
/// ```
#[derive(Debug, Clone)]
pub struct SessionService<S> {
    inner: S,
    layer: SessionLayer,
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for SessionService<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let slot = self.layer.slot(request.headers());
        request.extensions_mut().insert(slot.clone());
        // `poll_ready` readied `self.inner`; the clone left behind is readied on the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let response = inner.call(request);
        let header = self.layer.id_header.clone();
        Box::pin(async move {
            let mut response = response.await?;
            let answer = slot.answer().await;
            append(response.headers_mut(), answer, header.as_ref());
            Ok(response)
        })
    }
}

impl SessionLayer {
    /// The slot of one request: the id its client sent, from the id header or the cookie.
    fn slot(&self, headers: &HeaderMap) -> Slot {
        Slot::for_request(&self.sessions, &self.transport, |name| {
            headers
                .get_all(name)
                .into_iter()
                .filter_map(|value| value.to_str().ok())
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

impl<T, S> FromRequestParts<S> for Session<T>
where
    T: Default + Serialize + DeserializeOwned + Send + 'static,
    S: Send + Sync,
{
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, SessionError> {
        let slot = parts
            .extensions
            .get::<Slot>()
            .cloned()
            .ok_or(SessionError::MissingLayer)?;
        Session::start(slot).await
    }
}

/// The status and body of [`SessionError`]'s table; the error is logged with its sources.
impl IntoResponse for SessionError {
    fn into_response(self) -> ::axum::response::Response {
        let (status, body) = self.respond();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, body).into_response()
    }
}
