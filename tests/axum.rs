//! The axum integration over real HTTP: a test-local router on `SessionLayer`, served on an
//! ephemeral loopback port, driven by reqwest. The welcome example's own behaviour is tested in
//! tests/web.rs; these tests cover what the example does not exercise (never-saved visitors,
//! regenerate, corrupt state, storage failures, a missing layer, a session gone mid-request).
#![cfg(feature = "axum")]

#[path = "support/http.rs"]
mod http;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::routing::{get, post};
use http::{cookie_value, jar, set_cookies};
use reqwest::blocking::Client;
use reqwest::header::COOKIE;
use serde::{Deserialize, Serialize};
use session_archive::axum::{Session, SessionError, SessionLayer};
use session_archive::conformance::Hooked;
use session_archive::{
    Archive, ArchiveExt, Error, META_KEY, ManualClock, MemoryArchive, STATE_KEY, Sessions,
};

#[derive(Default, Serialize, Deserialize)]
struct Visits {
    visits: u64,
}

async fn count(mut session: Session<Visits>) -> Result<String, SessionError> {
    let n = session
        .update(|state| {
            state.visits += 1;
            state.visits
        })
        .await?;
    Ok(n.to_string())
}

async fn peek(session: Session<Visits>) -> String {
    session.visits.to_string()
}

async fn login(mut session: Session<Visits>) -> Result<String, SessionError> {
    session.regenerate().await?;
    Ok(session.id().to_string())
}

async fn logout(mut session: Session<Visits>) -> Result<(), SessionError> {
    session.destroy().await
}

async fn destroy_then_save(mut session: Session<Visits>) -> Result<(), SessionError> {
    session.destroy().await?;
    session.save().await
}

fn routes() -> Router {
    Router::new()
        .route("/count", get(count))
        .route("/peek", get(peek))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/destroy-then-save", post(destroy_then_save))
}

/// A server on an ephemeral loopback port; dropping the runtime stops it.
struct Server {
    url: String,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start(app: Router) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("an ephemeral loopback port");
        let addr = listener.local_addr().expect("the bound address");
        runtime.spawn(async move { axum::serve(listener, app).await });
        Server {
            url: format!("http://{addr}"),
            _runtime: runtime,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

fn sessions(archive: &Arc<MemoryArchive>) -> Sessions {
    Sessions::builder(Arc::clone(archive)).secure(false).build()
}

/// The test routes behind a session layer over a fresh memory archive, served.
fn serve() -> (Arc<MemoryArchive>, Server) {
    let archive = Arc::new(MemoryArchive::new());
    let server = Server::start(routes().layer(SessionLayer::new(sessions(&archive))));
    (archive, server)
}

fn domains(archive: &MemoryArchive) -> Vec<String> {
    archive
        .domains()
        .collect::<Result<_, _>>()
        .expect("listing the archive")
}

#[test]
fn a_visitor_whose_session_is_never_saved_gets_no_cookie_and_writes_nothing() {
    let (archive, server) = serve();
    let client = jar();
    for _ in 0..3 {
        let response = client.get(server.url("/peek")).send().unwrap();
        assert_eq!(response.status(), 200);
        assert!(set_cookies(&response).is_empty());
        assert_eq!(response.text().unwrap(), "0");
    }
    assert!(domains(&archive).is_empty());
}

#[test]
fn an_update_sets_the_cookie_and_later_requests_resume_the_session() {
    let (archive, server) = serve();
    let client = jar();
    let first = client.get(server.url("/count")).send().unwrap();
    let cookies = set_cookies(&first);
    assert_eq!(cookies.len(), 1);
    let id = cookie_value(&cookies[0]).to_owned();
    assert_eq!(first.text().unwrap(), "1");
    assert_eq!(
        client
            .get(server.url("/count"))
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "2"
    );
    assert_eq!(
        client
            .get(server.url("/peek"))
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "2"
    );
    let stored = archive.get(&id, STATE_KEY).unwrap().unwrap();
    assert_eq!(stored, br#"{"visits":2}"#);
}

/// A read that moves the session's idle expiry on the server refreshes the cookie too, so the
/// browser does not drop it while the server still holds the session; a read that does not
/// move it sets no cookie.
#[test]
fn a_read_that_refreshes_the_idle_expiry_refreshes_the_cookie() {
    let archive = Arc::new(MemoryArchive::new());
    let clock = ManualClock::new(SystemTime::now());
    let sessions = Sessions::builder(Arc::clone(&archive))
        .secure(false)
        .idle_timeout(Duration::from_secs(1800))
        .absolute_lifetime(None)
        .clock(clock.clone())
        .build();
    let server = Server::start(routes().layer(SessionLayer::new(sessions)));
    let client = jar();
    let first = client.get(server.url("/count")).send().unwrap();
    let id = cookie_value(&set_cookies(&first)[0]).to_owned();
    let saved = archive.get(&id, META_KEY).unwrap();

    // Within an eighth of the idle timeout, `seen` stays, and so does the cookie.
    clock.advance(Duration::from_secs(100));
    let quiet = client.get(server.url("/peek")).send().unwrap();
    assert!(set_cookies(&quiet).is_empty(), "{:?}", set_cookies(&quiet));
    assert_eq!(archive.get(&id, META_KEY).unwrap(), saved);

    clock.advance(Duration::from_secs(900));
    let read = client.get(server.url("/peek")).send().unwrap();
    assert_ne!(
        archive.get(&id, META_KEY).unwrap(),
        saved,
        "`seen` was rewritten"
    );
    let cookies = set_cookies(&read);
    assert_eq!(cookies.len(), 1);
    assert_eq!(cookie_value(&cookies[0]), id);
    assert!(cookies[0].contains("Max-Age=1800"), "{}", cookies[0]);
    assert_eq!(read.text().unwrap(), "1");
}

#[test]
fn regenerate_sends_the_new_id_and_the_old_one_stops_working() {
    let (_, server) = serve();
    let client = jar();
    let first = client.get(server.url("/count")).send().unwrap();
    let old = cookie_value(&set_cookies(&first)[0]).to_owned();

    let login = client.post(server.url("/login")).send().unwrap();
    let cookies = set_cookies(&login);
    assert_eq!(cookies.len(), 1);
    let new = cookie_value(&cookies[0]).to_owned();
    assert_eq!(login.text().unwrap(), new);
    assert_ne!(new, old);

    // The jar now holds the new id, and the state came along.
    assert_eq!(
        client
            .get(server.url("/count"))
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "2"
    );
    // The old id is worthless: it starts from scratch under yet another id.
    let replay = Client::new()
        .get(server.url("/count"))
        .header(COOKIE, format!("session-id={old}"))
        .send()
        .unwrap();
    let replay_id = cookie_value(&set_cookies(&replay)[0]).to_owned();
    assert_ne!(replay_id, old);
    assert_ne!(replay_id, new);
    assert_eq!(replay.text().unwrap(), "1");
}

#[test]
fn regenerate_before_any_save_sets_no_cookie_and_writes_nothing() {
    let (archive, server) = serve();
    let response = jar().post(server.url("/login")).send().unwrap();
    assert_eq!(response.status(), 200);
    assert!(set_cookies(&response).is_empty());
    assert!(domains(&archive).is_empty());
}

#[test]
fn destroy_expires_the_cookie_and_removes_the_session() {
    let (archive, server) = serve();
    let client = jar();
    let first = client.get(server.url("/count")).send().unwrap();
    let id = cookie_value(&set_cookies(&first)[0]).to_owned();

    let logout = client.post(server.url("/logout")).send().unwrap();
    assert_eq!(logout.status(), 200);
    let cookies = set_cookies(&logout);
    assert_eq!(cookies.len(), 1);
    assert!(cookies[0].starts_with("session-id=;"), "{}", cookies[0]);
    assert!(cookies[0].contains("Max-Age=0"), "{}", cookies[0]);
    assert!(!archive.has_domain(&id).unwrap());
    assert_eq!(
        client
            .get(server.url("/count"))
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "1"
    );
}

#[test]
fn a_session_gone_mid_request_is_409_and_expires_the_cookie() {
    let (archive, server) = serve();
    let client = jar();
    let first = client.get(server.url("/count")).send().unwrap();
    let id = cookie_value(&set_cookies(&first)[0]).to_owned();
    let response = client
        .post(server.url("/destroy-then-save"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 409);
    let cookies = set_cookies(&response);
    assert_eq!(cookies.len(), 1);
    assert!(cookies[0].starts_with("session-id=;"), "{}", cookies[0]);
    assert_eq!(response.text().unwrap(), "session no longer exists");
    assert!(!archive.has_domain(&id).unwrap());
}

#[test]
fn corrupt_state_is_a_500_that_says_so_and_is_left_untouched() {
    let (archive, server) = serve();
    let client = jar();
    let first = client.get(server.url("/count")).send().unwrap();
    let id = cookie_value(&set_cookies(&first)[0]).to_owned();
    archive.set(&id, STATE_KEY, b"{not json").unwrap();

    for path in ["/count", "/peek"] {
        let response = client.get(server.url(path)).send().unwrap();
        assert_eq!(response.status(), 500);
        assert!(set_cookies(&response).is_empty());
        assert_eq!(response.text().unwrap(), "session is corrupt");
    }
    assert_eq!(archive.get(&id, STATE_KEY).unwrap().unwrap(), b"{not json");
}

#[test]
fn the_extractor_without_the_layer_is_a_500() {
    let server = Server::start(routes());
    let response = jar().get(server.url("/peek")).send().unwrap();
    assert_eq!(response.status(), 500);
    assert!(set_cookies(&response).is_empty());
}

/// A memory archive whose writes fail while `failing` is set, as a full disk would.
fn flaky(failing: &Arc<AtomicBool>) -> Hooked<MemoryArchive> {
    let failing = Arc::clone(failing);
    Hooked::new(MemoryArchive::new(), move |call| {
        if call.is_write() && failing.load(Ordering::SeqCst) {
            return Err(Error::Io {
                path: "/flaky".into(),
                source: std::io::Error::other("disk full"),
            });
        }
        Ok(())
    })
}

#[test]
fn a_storage_failure_is_a_500_without_detail_and_changes_no_cookie() {
    let failing = Arc::new(AtomicBool::new(false));
    let sessions = Sessions::builder(flaky(&failing)).secure(false).build();
    let server = Server::start(routes().layer(SessionLayer::new(sessions)));
    let client = jar();
    assert_eq!(
        client
            .get(server.url("/count"))
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "1"
    );

    failing.store(true, Ordering::SeqCst);
    for path in ["/count", "/logout"] {
        let response = if path == "/count" {
            client.get(server.url(path)).send().unwrap()
        } else {
            client.post(server.url(path)).send().unwrap()
        };
        assert_eq!(response.status(), 500, "{path}");
        assert!(set_cookies(&response).is_empty(), "{path}");
        let body = response.text().unwrap();
        assert_eq!(body, "internal server error");
    }

    failing.store(false, Ordering::SeqCst);
    assert_eq!(
        client
            .get(server.url("/count"))
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "2"
    );
}
