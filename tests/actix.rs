//! The actix-web integration over real HTTP: test-local routes behind `SessionMiddleware`,
//! served by actix-web's own `HttpServer` (one single-threaded runtime per worker) on an
//! ephemeral loopback port, driven by reqwest clients with cookie jars. The welcome app on
//! actix-web runs the whole welcome suite in tests/web.rs (`for_both_apps!`: counts across a
//! restart, hostile cookies, logout, 64 concurrent visits); these tests cover what the app does
//! not exercise: login's regenerate, visitors never saved, a missing middleware, a session gone
//! mid-request, updates on redb and on an archive with async paths, and ids in a header.
#![cfg(all(feature = "actix", feature = "archive-redb"))]

#[path = "support/handlers.rs"]
#[allow(dead_code, reason = "these tests log in with a user bound (login_ada)")]
mod handlers;
#[path = "support/header_ids.rs"]
mod header_ids;
#[path = "support/http.rs"]
mod http;
#[path = "support/layer_tests.rs"]
mod layer_tests;

use std::sync::Arc;

use actix_web::http::header::HeaderName;
use actix_web::{App, HttpServer, web};
use handlers::{Visits, count, destroy_then_save, logout, peek};
use header_ids::{live_ids, text};
use http::{cookie_value, jar, set_cookies};
use reqwest::blocking::Client;
use reqwest::header::COOKIE;
use session_archive::actix::{Session, SessionError, SessionMiddleware};
use session_archive::{Archive, ManualClock, MemoryArchive, RedbArchive, STATE_KEY, Sessions};

/// Login: bind the user, then regenerate (no save before it); answers the new id.
async fn login_ada(mut session: Session<Visits>) -> Result<String, SessionError> {
    session.set_user(Some("ada@example.com"));
    session.regenerate().await?;
    Ok(session.id().to_string())
}

async fn whoami(session: Session<Visits>) -> String {
    session.user().unwrap_or("nobody").to_owned()
}

/// The test routes, for `App::configure`.
fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/count", web::get().to(count))
        .route("/peek", web::get().to(peek))
        .route("/login", web::post().to(login_ada))
        .route("/whoami", web::get().to(whoami))
        .route("/logout", web::post().to(logout))
        .route("/destroy-then-save", web::post().to(destroy_then_save));
}

/// An actix-web server on an ephemeral loopback port, on a thread of its own; stopped when
/// dropped.
struct Server {
    url: String,
    handle: actix_web::dev::ServerHandle,
}

impl Server {
    /// Serves the routes behind `middleware` (none: without it) with two workers.
    fn start(middleware: Option<SessionMiddleware>) -> Server {
        let (sent, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .wrap(actix_web::middleware::Condition::new(
                            middleware.is_some(),
                            middleware.clone().unwrap_or_else(|| {
                                SessionMiddleware::new(Sessions::new(MemoryArchive::new()))
                            }),
                        ))
                        .configure(routes)
                })
                .workers(2)
                .bind("127.0.0.1:0")
                .expect("an ephemeral loopback port");
                let addr = server.addrs()[0];
                let server = server.run();
                sent.send((addr, server.handle())).expect("the test waits");
                server.await
            })
        });
        let (addr, handle) = received.recv().expect("the server starts");
        Server {
            url: format!("http://{addr}"),
            handle,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        actix_web::rt::System::new().block_on(self.handle.stop(false));
    }
}

fn middleware(archive: impl Archive + 'static) -> SessionMiddleware {
    SessionMiddleware::new(Sessions::builder(archive).secure(false).build())
}

/// The routes over a fresh memory archive, served.
fn serve() -> (Arc<MemoryArchive>, Server) {
    let archive = Arc::new(MemoryArchive::new());
    let server = Server::start(Some(middleware(Arc::clone(&archive))));
    (archive, server)
}

#[test]
fn the_cookie_is_set_once_with_its_attributes_and_max_age_from_the_idle_timeout() {
    let (_archive, server) = serve();
    let client = jar();
    let first = client.get(server.url("/count")).send().unwrap();
    let cookies = set_cookies(&first);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let attributes: Vec<&str> = cookies[0].split("; ").skip(1).collect();
    for wanted in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=86400"] {
        assert!(attributes.contains(&wanted), "{wanted} in {}", cookies[0]);
    }
    assert!(!attributes.contains(&"Secure"), "{}", cookies[0]);
    let second = client.get(server.url("/count")).send().unwrap();
    assert!(set_cookies(&second).is_empty(), "no refresh needed yet");
    assert_eq!(second.text().unwrap(), "2");
}

#[test]
fn the_cookie_is_secure_by_default() {
    let server = Server::start(Some(SessionMiddleware::new(Sessions::new(
        MemoryArchive::new(),
    ))));
    let response = Client::new().get(server.url("/count")).send().unwrap();
    let cookies = set_cookies(&response);
    assert!(cookies[0].split("; ").any(|a| a == "Secure"), "{cookies:?}");
}

#[test]
fn login_regenerates_and_the_old_cookie_is_dead() {
    let (archive, server) = serve();
    let client = jar();
    let first = client.get(server.url("/count")).send().unwrap();
    let old = cookie_value(&set_cookies(&first)[0]).to_owned();
    assert_eq!(text(&client, server.url("/count")), "2");

    let login = client.post(server.url("/login")).send().unwrap();
    assert_eq!(login.status(), 200);
    let cookies = set_cookies(&login);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let new = cookie_value(&cookies[0]).to_owned();
    assert_ne!(new, old);
    assert_eq!(login.text().unwrap(), new, "the handle answers the new id");
    assert_eq!(live_ids(&*archive), vec![new.clone()]);

    // The jar holds the new cookie: the state and the binding came along.
    assert_eq!(text(&client, server.url("/count")), "3");
    assert_eq!(text(&client, server.url("/whoami")), "ada@example.com");

    // The old id names nothing: a fresh session, under a fresh id, not logged in.
    let replay = Client::new()
        .get(server.url("/whoami"))
        .header(COOKIE, format!("session-id={old}"))
        .send()
        .unwrap();
    assert!(set_cookies(&replay).is_empty(), "never echoed nor saved");
    assert_eq!(replay.text().unwrap(), "nobody");
}

#[test]
fn logout_destroys_the_session_and_expires_the_cookie() {
    let (archive, server) = serve();
    let client = jar();
    assert_eq!(text(&client, server.url("/count")), "1");
    let id = live_ids(&*archive).pop().expect("the session");
    let logout = client.post(server.url("/logout")).send().unwrap();
    assert_eq!(
        logout.status(),
        204,
        "actix-web's answer to an Ok(()) handler"
    );
    let cookies = set_cookies(&logout);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert!(cookies[0].starts_with("session-id=;"), "{}", cookies[0]);
    assert!(cookies[0].contains("Max-Age=0"), "{}", cookies[0]);
    assert!(live_ids(&*archive).is_empty());
    assert!(!archive.has_domain(&id).unwrap());
    assert_eq!(text(&client, server.url("/count")), "1", "a new session");
}

#[test]
fn the_extractor_without_the_middleware_is_a_500() {
    let server = Server::start(None);
    let response = Client::new().get(server.url("/peek")).send().unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(response.text().unwrap(), "internal server error");
}

/// On redb (writes that block; updates that await their group commit), 64 concurrent updates
/// of one session from 8 clients, spread over actix's two worker runtimes, lose none.
#[test]
fn on_redb_concurrent_updates_of_one_session_lose_nothing() {
    const CLIENTS: usize = 8;
    const VISITS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let archive = Arc::new(RedbArchive::open(dir.path().join("sessions.redb")).unwrap());
    let server = Server::start(Some(middleware(Arc::clone(&archive))));
    let first = Client::new().get(server.url("/count")).send().unwrap();
    let id = cookie_value(&set_cookies(&first)[0]).to_owned();
    handlers::count_concurrently(&server.url("/count"), &id, CLIENTS, VISITS);
    let stored = archive.get(&id, STATE_KEY).unwrap().unwrap();
    let visits: Visits = serde_json::from_slice(&stored).unwrap();
    assert_eq!(visits.visits, (CLIENTS * VISITS + 1) as u64);
}

use header_ids::ID_HEADER;

/// The routes over a fresh memory archive, with ids in the `x-session-id` header too, or only
/// there (`cookie` false), on `clock` if given (see [`header_ids::sessions`]).
fn serve_with_header(cookie: bool, clock: Option<ManualClock>) -> (Arc<MemoryArchive>, Server) {
    let archive = Arc::new(MemoryArchive::new());
    let mut middleware = SessionMiddleware::new(header_ids::sessions(&archive, clock))
        .with_id_header(HeaderName::from_static(ID_HEADER));
    if !cookie {
        middleware = middleware.without_cookie();
    }
    (archive, Server::start(Some(middleware)))
}

header_ids::id_header_tests!(serve_with_header);
layer_tests::layer_tests!(serve);

/// An inner middleware that fails every request to `/count` after its handler ran.
async fn failing_after_count(
    request: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let failing = request.path() == "/count";
    let response = next.call(request).await?;
    if failing {
        return Err(actix_web::error::ErrorServiceUnavailable(
            "an inner middleware failed",
        ));
    }
    Ok(response)
}

/// An outer middleware that marks the error responses of errors it recognises as the inner
/// middleware's own (`x-inner-error: seen`).
async fn marking_inner_errors(
    request: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let err = match next.call(request).await {
        Ok(response) => return Ok(response),
        Err(err) => err,
    };
    let mut response = err.error_response();
    if err
        .as_error::<actix_web::error::InternalError<&'static str>>()
        .is_some()
    {
        response.headers_mut().insert(
            HeaderName::from_static("x-inner-error"),
            actix_web::http::header::HeaderValue::from_static("seen"),
        );
    }
    Err(actix_web::error::InternalError::from_response(err, response).into())
}

/// A middleware inside the session middleware fails after the handler stored a new session:
/// the error's response still sets the cookie, so the stored session is reachable. When the
/// session asks for nothing, the error passes through as it came, and a middleware outside
/// still recognises it.
#[test]
fn an_inner_middlewares_error_still_carries_the_sessions_cookie() {
    let archive = Arc::new(MemoryArchive::new());
    let session = middleware(Arc::clone(&archive));
    let (sent, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                App::new()
                    .wrap(actix_web::middleware::from_fn(failing_after_count))
                    .wrap(session.clone())
                    .wrap(actix_web::middleware::from_fn(marking_inner_errors))
                    .configure(routes)
            })
            .workers(1)
            .bind("127.0.0.1:0")
            .expect("an ephemeral loopback port");
            let addr = server.addrs()[0];
            let server = server.run();
            sent.send((addr, server.handle())).expect("the test waits");
            server.await
        })
    });
    let (addr, handle) = received.recv().expect("the server starts");
    let server = Server {
        url: format!("http://{addr}"),
        handle,
    };
    let client = jar();
    let failed = client.get(server.url("/count")).send().unwrap();
    assert_eq!(failed.status(), 503);
    let cookies = set_cookies(&failed);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let id = cookie_value(&cookies[0]).to_owned();
    assert!(archive.has_domain(&id).unwrap());
    assert_eq!(
        client
            .get(server.url("/peek"))
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "1"
    );
    let again = client.get(server.url("/count")).send().unwrap();
    assert_eq!(again.status(), 503);
    assert!(set_cookies(&again).is_empty(), "{:?}", set_cookies(&again));
    assert_eq!(again.headers()["x-inner-error"], "seen");
}
