//! The axum integration over real HTTP: a test-local router on `SessionLayer`, served on an
//! ephemeral loopback port, driven by reqwest. The welcome example's own behaviour is tested in
//! tests/web.rs; these tests cover what the example does not exercise (never-saved visitors,
//! regenerate, signing out other devices, corrupt state, storage failures, a missing layer, a
//! session gone mid-request).
#![cfg(feature = "axum")]

#[path = "support/handlers.rs"]
mod handlers;
#[path = "support/header_ids.rs"]
mod header_ids;
#[path = "support/http.rs"]
mod http;
#[path = "support/layer_tests.rs"]
mod layer_tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::routing::{get, post};
use handlers::{Visits, count, destroy_then_save, login, logout, peek};
use http::{cookie_value, jar, set_cookies};
use reqwest::blocking::Client;
use reqwest::header::COOKIE;
use session_archive::axum::{Session, SessionError, SessionLayer};
use session_archive::conformance::Hooked;
use session_archive::{
    Archive, ArchiveExt, Blocking, Error, META_KEY, ManualClock, MemoryArchive, STATE_KEY, Sessions,
};

/// Login of the one user these tests know: bind, then regenerate (no save before it).
async fn login_ada(mut session: Session<Visits>) -> Result<String, SessionError> {
    session.set_user(Some("ada@example.com"));
    session.regenerate().await?;
    Ok(session.user().unwrap_or_default().to_owned())
}

/// Binds the session to the user through an update, without a regenerate.
async fn bind_by_update(mut session: Session<Visits>) -> Result<String, SessionError> {
    session.set_user(Some("ada@example.com"));
    let visits = session.update(|state| {
        state.visits += 1;
        state.visits
    });
    Ok(visits.await?.to_string())
}

/// "Sign out other devices": revokes every session of this session's user but this one.
async fn sign_out_others(session: Session<Visits>) -> Result<String, SessionError> {
    let Some(user) = session.user().map(str::to_owned) else {
        return Ok("not logged in".to_owned());
    };
    let (sessions, keep) = (session.sessions().clone(), session.id().clone());
    let revoked = tokio::task::spawn_blocking(move || sessions.revoke_user_except(&user, &keep))
        .await
        .map_err(SessionError::Task)??;
    Ok(revoked.to_string())
}

fn routes() -> Router {
    Router::new()
        .route("/login-ada", post(login_ada))
        .route("/others", post(sign_out_others))
        .route("/bind-by-update", post(bind_by_update))
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
        Server::start_on(runtime, app)
    }

    fn start_on(runtime: tokio::runtime::Runtime, app: Router) -> Server {
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

fn domains(archive: &dyn Archive) -> Vec<String> {
    archive
        .domains()
        .collect::<Result<_, _>>()
        .expect("listing the archive")
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
fn regenerate_before_any_save_stores_the_session_and_sets_its_cookie() {
    let (archive, server) = serve();
    let client = jar();
    let response = client.post(server.url("/login")).send().unwrap();
    assert_eq!(response.status(), 200);
    let cookies = set_cookies(&response);
    assert_eq!(cookies.len(), 1);
    let id = cookie_value(&cookies[0]).to_owned();
    assert_eq!(
        response.text().unwrap(),
        id,
        "the cookie names the session stored"
    );
    assert!(
        domains(&archive).contains(&id),
        "stored under the cookie's id"
    );
    // The login's session is live: the next request continues it.
    let next = client.get(server.url("/count")).send().unwrap();
    assert!(set_cookies(&next).is_empty(), "{:?}", set_cookies(&next));
    assert_eq!(next.text().unwrap(), "1");
}

/// Three devices of one user: two log in, one binds through an update of its stored session.
/// One signs out the others, which then start afresh, while it stays logged in.
#[test]
fn a_user_signs_out_other_devices() {
    let (_archive, server) = serve();
    let body = |client: &Client, post: bool, path: &str| {
        let url = server.url(path);
        let request = if post {
            client.post(url)
        } else {
            client.get(url)
        };
        request.send().unwrap().text().unwrap()
    };
    let (laptop, phone, tablet) = (jar(), jar(), jar());
    for device in [&laptop, &phone] {
        assert_eq!(body(device, true, "/login-ada"), "ada@example.com");
        assert_eq!(body(device, false, "/count"), "1");
    }
    assert_eq!(body(&tablet, false, "/count"), "1");
    assert_eq!(body(&tablet, true, "/bind-by-update"), "2");

    assert_eq!(body(&laptop, true, "/others"), "2");
    assert_eq!(body(&laptop, false, "/count"), "2");
    assert_eq!(body(&phone, false, "/count"), "1");
    assert_eq!(body(&tablet, false, "/count"), "1");
    assert_eq!(body(&phone, true, "/others"), "not logged in");
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

/// A gate that handlers wait at: each request reports that it arrived (its session extracted),
/// then waits until the test lets one request through.
#[derive(Clone)]
struct Gate {
    arrived: Arc<std::sync::Mutex<std::sync::mpsc::Sender<()>>>,
    open: Arc<tokio::sync::Semaphore>,
}

impl Gate {
    fn new() -> (Gate, std::sync::mpsc::Receiver<()>) {
        let (arrived, arrivals) = std::sync::mpsc::channel();
        let gate = Gate {
            arrived: Arc::new(std::sync::Mutex::new(arrived)),
            open: Arc::new(tokio::sync::Semaphore::new(0)),
        };
        (gate, arrivals)
    }

    async fn pass(&self) {
        self.arrived
            .lock()
            .expect("the arrivals lock")
            .send(())
            .expect("the test waits for arrivals");
        self.open.acquire().await.expect("the gate stays").forget();
    }

    fn let_one_through(&self) {
        self.open.add_permits(1);
    }
}

/// Routes where each request first extracts its session, then waits at the gate, then acts.
fn gated_routes(gate: &Gate) -> Router {
    let (read, count, login) = (gate.clone(), gate.clone(), gate.clone());
    routes()
        .route(
            "/slow-peek",
            get(move |session: Session<Visits>| async move {
                read.pass().await;
                session.visits.to_string()
            }),
        )
        .route(
            "/slow-count",
            get(move |mut session: Session<Visits>| async move {
                count.pass().await;
                session.update(|s| s.visits += 1).await
            }),
        )
        .route(
            "/slow-login",
            post(move |mut session: Session<Visits>| async move {
                login.pass().await;
                session.regenerate().await
            }),
        )
}

/// A server over a memory archive whose sessions expire after an hour of idleness, on a clock the
/// test moves.
fn serve_gated(gate: &Gate) -> (Arc<MemoryArchive>, ManualClock, Server) {
    let archive = Arc::new(MemoryArchive::new());
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let sessions = Sessions::builder(Arc::clone(&archive))
        .secure(false)
        .idle_timeout(Duration::from_secs(3600))
        .clock(clock.clone())
        .build();
    let server = Server::start(gated_routes(gate).layer(SessionLayer::new(sessions)));
    (archive, clock, server)
}

/// The ids of the live sessions in `archive` (domains named like session ids holding a state).
fn live_ids(archive: &dyn Archive) -> Vec<String> {
    domains(archive)
        .into_iter()
        .filter(|d| session_archive::SessionId::parse(d).is_some())
        .filter(|d| {
            archive
                .get(d, STATE_KEY)
                .expect("the archive reads")
                .is_some_and(|state| state.first() == Some(&b'{'))
        })
        .collect()
}

#[test]
fn a_slow_request_answering_after_a_login_leaves_the_browser_logged_in() {
    for slow in ["/slow-peek", "/slow-count"] {
        let (gate, arrivals) = Gate::new();
        let (archive, clock, server) = serve_gated(&gate);
        let client = jar();
        let first = client.get(server.url("/count")).send().unwrap();
        let old = cookie_value(&set_cookies(&first)[0]).to_owned();
        // Half the idle timeout later, merely reading the session moves its expiry, so the slow
        // request's extraction asks to refresh the old id's cookie.
        clock.advance(Duration::from_secs(1800));

        let slow_client = client.clone();
        let slow_url = server.url(slow);
        let slow_request = std::thread::spawn(move || slow_client.get(slow_url).send().unwrap());
        arrivals.recv().unwrap();

        let login = client.post(server.url("/login")).send().unwrap();
        assert_eq!(login.status(), 200, "{slow}");
        let new = cookie_value(&set_cookies(&login)[0]).to_owned();
        assert_ne!(new, old);

        gate.let_one_through();
        let late = slow_request.join().unwrap();
        assert!(
            set_cookies(&late).is_empty(),
            "{slow}: the late response touched the cookie: {:?}",
            set_cookies(&late)
        );
        if slow == "/slow-count" {
            assert_eq!(late.status(), 409);
        }
        // The browser still holds the logged-in session.
        let after = client.get(server.url("/peek")).send().unwrap();
        assert!(set_cookies(&after).is_empty());
        assert_eq!(after.text().unwrap(), "1", "{slow}");
        assert_eq!(live_ids(&archive), [new], "{slow}");
    }
}

#[test]
fn a_double_submitted_login_leaves_the_browser_a_live_session() {
    let (gate, arrivals) = Gate::new();
    let (archive, _clock, server) = serve_gated(&gate);
    let client = jar();
    client.get(server.url("/count")).send().unwrap();

    let logins: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            let url = server.url("/slow-login");
            let login = std::thread::spawn(move || client.post(url).send().unwrap());
            arrivals.recv().unwrap();
            login
        })
        .collect();
    // Both extracted the pre-login session; now one logs in and answers, then the other.
    let mut pending = logins;
    let mut finished = Vec::new();
    while !pending.is_empty() {
        gate.let_one_through();
        let done = loop {
            if let Some(i) = pending
                .iter()
                .position(std::thread::JoinHandle::is_finished)
            {
                break i;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        finished.push(pending.swap_remove(done).join().unwrap());
    }
    let (winner, loser) = (&finished[0], &finished[1]);
    assert_eq!(winner.status(), 200);
    let new = cookie_value(&set_cookies(winner)[0]).to_owned();
    assert_eq!(loser.status(), 409);
    assert!(set_cookies(loser).is_empty(), "{:?}", set_cookies(loser));

    let after = client.get(server.url("/peek")).send().unwrap();
    assert_eq!(after.text().unwrap(), "1");
    assert_eq!(live_ids(&archive), [new]);
}

/// A memory archive whose writes of a session's state take a while when `slow` is set.
fn sluggish(slow: &Arc<AtomicBool>) -> Hooked<Arc<MemoryArchive>> {
    let slow = Arc::clone(slow);
    Hooked::new(Arc::new(MemoryArchive::new()), move |call| {
        if call.is_write() && slow.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    })
}

#[test]
fn destroy_after_a_cancelled_or_panicked_call_never_leaves_the_session_valid() {
    let slow = Arc::new(AtomicBool::new(false));
    let archive = sluggish(&slow);
    let store = Arc::clone(archive.inner());
    let sessions = Sessions::builder(archive).secure(false).build();
    // A hooked archive may block in its hook, so every call here takes a blocking thread.
    assert_eq!(sessions.blocking(), Blocking::Always);
    let app = routes()
        .route(
            "/cancelled-save-then-logout",
            post(|mut session: Session<Visits>| async move {
                session.visits += 10;
                let cancelled =
                    tokio::time::timeout(Duration::from_millis(1), session.save()).await;
                assert!(cancelled.is_err(), "the save outlasts its timeout");
                session.destroy().await
            }),
        )
        .route(
            "/panicked-update-then-logout",
            post(|mut session: Session<Visits>| async move {
                let panicked = session
                    .update(|_| -> () { panic!("a bug in the handler") })
                    .await;
                assert!(matches!(panicked, Err(SessionError::Task(_))));
                session.destroy().await
            }),
        );
    let server = Server::start(app.layer(SessionLayer::new(sessions)));

    let client = jar();
    client.get(server.url("/count")).send().unwrap();
    slow.store(true, Ordering::SeqCst);
    let logout = client
        .post(server.url("/cancelled-save-then-logout"))
        .send()
        .unwrap();
    slow.store(false, Ordering::SeqCst);
    assert_eq!(logout.status(), 200);
    let cookies = set_cookies(&logout);
    assert_eq!(cookies.len(), 1);
    assert!(cookies[0].starts_with("session-id=;"), "{}", cookies[0]);
    assert!(
        live_ids(&store).is_empty(),
        "the destroy removed the session"
    );

    panicked_update_then_logout_changes_nothing(&server, &store);
}

/// Runs `call` under a timeout it outlasts (a write on the sluggish archive takes 200 ms), so
/// that it is cancelled and settles in the background.
async fn cancelled<R>(call: impl std::future::Future<Output = R>) {
    let cancelled = tokio::time::timeout(Duration::from_millis(1), call).await;
    assert!(cancelled.is_err(), "the call outlasts its timeout");
}

/// While a cancelled update settles, "sign out other devices" for the user the handler read
/// before it: the handle answers the session's own id, user and state, so the revoke keeps this
/// device.
async fn cancelled_update_then_sign_out_others(
    mut session: Session<Visits>,
) -> Result<String, SessionError> {
    let user = session.user().unwrap_or("nobody").to_owned();
    cancelled(session.update(|state| state.visits += 1)).await;
    let seen = format!(
        "{} {} {}",
        session.id(),
        session.user().unwrap_or("nobody"),
        session.visits
    );
    let (sessions, keep) = (session.sessions().clone(), session.id().clone());
    let revoked = tokio::task::spawn_blocking(move || sessions.revoke_user_except(&user, &keep))
        .await
        .map_err(SessionError::Task)??;
    Ok(format!("{seen} {revoked}"))
}

/// A cancelled save, then a change and another save: the change is made to the state the
/// handle showed, and is the one stored.
async fn cancelled_save_then_change_and_save(
    mut session: Session<Visits>,
) -> Result<String, SessionError> {
    session.visits += 10;
    cancelled(session.save()).await;
    let seen = session.visits;
    session.visits += 1;
    session.save().await?;
    Ok(seen.to_string())
}

/// A cancelled login: until it settles the handle answers the id it had; `settle` waits for
/// it, and the id is then the new one.
async fn cancelled_login_then_settle(mut session: Session<Visits>) -> Result<String, SessionError> {
    session.set_user(Some("ada@example.com"));
    cancelled(session.regenerate()).await;
    let before = session.id().to_string();
    session.settle().await?;
    Ok(format!("{before} {}", session.id()))
}

/// A server over the sluggish memory archive with the test routes and the cancelling ones.
fn serve_sluggish(slow: &Arc<AtomicBool>) -> (Arc<MemoryArchive>, Server) {
    let archive = sluggish(slow);
    let store = Arc::clone(archive.inner());
    let sessions = Sessions::builder(archive).secure(false).build();
    let app = routes()
        .route(
            "/cancelled-update-then-others",
            post(cancelled_update_then_sign_out_others),
        )
        .route(
            "/cancelled-save-then-save",
            post(cancelled_save_then_change_and_save),
        )
        .route("/cancelled-login", post(cancelled_login_then_settle))
        .route(
            "/id",
            get(|session: Session<Visits>| async move { session.id().to_string() }),
        );
    (store, Server::start(app.layer(SessionLayer::new(sessions))))
}

/// Posts to `path` while the archive is slow, and returns the answer's body.
fn post_slowly(slow: &AtomicBool, client: &Client, url: String) -> String {
    slow.store(true, Ordering::SeqCst);
    let answer = client.post(url).send().expect("an answer");
    slow.store(false, Ordering::SeqCst);
    assert_eq!(answer.status(), 200);
    answer.text().expect("a body")
}

/// The id of the session the client's cookie names (a fresh one if none).
fn logged_in_id(client: &Client, server: &Server) -> String {
    let answer = client.get(server.url("/id")).send().expect("an answer");
    answer.text().expect("a body")
}

#[test]
fn while_a_cancelled_update_settles_the_handle_answers_its_own_session() {
    let slow = Arc::new(AtomicBool::new(false));
    let (store, server) = serve_sluggish(&slow);
    let (this, other) = (jar(), jar());
    for client in [&this, &other] {
        client.get(server.url("/count")).send().expect("a visit");
        let login = client
            .post(server.url("/login-ada"))
            .send()
            .expect("a login");
        assert_eq!(login.text().expect("a body"), "ada@example.com");
    }
    let id = logged_in_id(&this, &server);

    let answer = post_slowly(&slow, &this, server.url("/cancelled-update-then-others"));
    assert_eq!(
        live_ids(&store),
        std::slice::from_ref(&id),
        "only the other device is signed out"
    );
    let peek = this.get(server.url("/peek")).send().expect("a peek");
    assert_eq!(peek.text().expect("a body"), "2", "the update landed");
    assert_eq!(answer, format!("{id} ada@example.com 1 1"));
}

#[test]
fn a_change_made_while_a_cancelled_save_settles_is_kept() {
    let slow = Arc::new(AtomicBool::new(false));
    let (_store, server) = serve_sluggish(&slow);
    let client = jar();
    client.get(server.url("/count")).send().expect("a visit");
    let answer = post_slowly(&slow, &client, server.url("/cancelled-save-then-save"));
    assert_eq!(
        answer, "11",
        "the handle shows the state the save was given"
    );
    let peek = client.get(server.url("/peek")).send().expect("a peek");
    assert_eq!(peek.text().expect("a body"), "12");
}

#[test]
fn settle_waits_for_a_cancelled_regenerate_and_then_answers_the_new_id() {
    let slow = Arc::new(AtomicBool::new(false));
    let (store, server) = serve_sluggish(&slow);
    let client = jar();
    client.get(server.url("/count")).send().expect("a visit");
    let old = logged_in_id(&client, &server);
    let answer = post_slowly(&slow, &client, server.url("/cancelled-login"));
    let (before, after) = answer.split_once(' ').expect("two ids");
    assert_eq!(before, old);
    assert_ne!(after, old);
    assert_eq!(live_ids(&store), [after.to_owned()]);
    assert_eq!(logged_in_id(&client, &server), after);
}

/// On an archive that does not block, calls run on the executor's thread; a panic there poisons
/// the handle just as on a blocking thread, and leaves the stored session as it was.
#[test]
fn a_call_that_panics_in_place_loses_the_handle_and_changes_nothing() {
    let store = Arc::new(MemoryArchive::new());
    let sessions = sessions(&store);
    assert_eq!(sessions.blocking(), Blocking::Never);
    let app = routes().route(
        "/panicked-update-then-logout",
        post(panicked_update_then_logout),
    );
    let server = Server::start(app.layer(SessionLayer::new(sessions)));

    panicked_update_then_logout_changes_nothing(&server, &store);
}

/// An update whose change panics where the call runs in place (or, on redb, in the commit):
/// [`SessionError::Panicked`], and the session went with the call, the handle still answering
/// what it knew before; then a logout.
async fn panicked_update_then_logout(mut session: Session<Visits>) -> Result<(), SessionError> {
    let id = session.id().clone();
    let panicked = session
        .update(|_| -> () { panic!("a bug in the handler") })
        .await;
    assert!(matches!(panicked, Err(SessionError::Panicked)));
    assert_eq!(session.visits, 1, "the handle answers the state it had");
    assert_eq!(session.id(), &id);
    assert!(matches!(session.settle().await, Err(SessionError::Lost)));
    session.destroy().await
}

/// A new client's first visit (`/count`), then a POST to `path`: the client, and the answer.
fn visit_then_post(server: &Server, path: &str) -> (Client, reqwest::blocking::Response) {
    let client = jar();
    client
        .get(server.url("/count"))
        .send()
        .expect("a first visit");
    let answer = client.post(server.url(path)).send().expect("an answer");
    (client, answer)
}

/// A visit, then `/panicked-update-then-logout`: the handle lost its state with the panic, so the
/// destroy says so (500, no cookie) instead of pretending, and the session stays as it was.
fn panicked_update_then_logout_changes_nothing(server: &Server, store: &dyn Archive) {
    let (client, logout) = visit_then_post(server, "/panicked-update-then-logout");
    assert_eq!(logout.status(), 500);
    assert!(set_cookies(&logout).is_empty());
    assert_eq!(
        live_ids(store).len(),
        1,
        "the session was neither changed nor destroyed"
    );
    let peek = client.get(server.url("/peek")).send().expect("a peek");
    assert_eq!(peek.text().expect("a body"), "1");
}

/// A session layer over a fresh redb archive in `dir`, without the `Secure` cookie attribute.
#[cfg(feature = "archive-redb")]
fn redb_sessions(dir: &std::path::Path) -> (Arc<session_archive::RedbArchive>, Sessions) {
    let archive = Arc::new(
        session_archive::RedbArchive::open(dir.join("sessions.redb")).expect("open the archive"),
    );
    let sessions = Sessions::builder(Arc::clone(&archive))
        .secure(false)
        .build();
    (archive, sessions)
}

/// The test routes plus `route` at `path`, behind a session layer over a fresh redb archive in
/// `dir`, served.
#[cfg(feature = "archive-redb")]
fn serve_on_redb(
    dir: &std::path::Path,
    path: &str,
    route: axum::routing::MethodRouter,
) -> (Arc<session_archive::RedbArchive>, Server) {
    let (archive, sessions) = redb_sessions(dir);
    let app = routes().route(path, route);
    (
        archive,
        Server::start(app.layer(SessionLayer::new(sessions))),
    )
}

/// On redb an update awaits its commit without taking a blocking thread: with the runtime's
/// only blocking thread held, concurrent updates of one session still all complete, and none
/// is lost.
#[cfg(feature = "archive-redb")]
#[test]
fn on_redb_updates_await_their_commit_without_a_blocking_thread() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (_archive, sessions) = redb_sessions(dir.path());
    assert_eq!(sessions.blocking(), Blocking::Commits);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let runtime_handle = runtime.handle().clone();
    let server = Server::start_on(runtime, routes().layer(SessionLayer::new(sessions)));
    // Declared after the server, so dropped before it, also when the test fails: the holder
    // then ends, and the runtime can shut down.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let client = jar();
    // The first visit creates the session: a write of more than the state, on a blocking
    // thread. Then that thread is taken.
    client
        .get(server.url("/count"))
        .send()
        .expect("a first visit");
    let holder = runtime_handle.spawn_blocking(move || held.recv());

    std::thread::scope(|scope| {
        for _ in 0..16 {
            scope.spawn(|| {
                let visit = client.get(server.url("/count")).send().expect("a visit");
                assert_eq!(visit.status(), 200);
            });
        }
    });
    let peek = client.get(server.url("/peek")).send().expect("a peek");
    assert_eq!(peek.text().expect("a body"), "17");
    release.send(()).expect("the holder waits");
    drop(holder);
}

/// On redb a change runs inside the commit, on another thread; its panic still reaches the
/// request, poisons the handle, and changes nothing stored.
#[cfg(feature = "archive-redb")]
#[test]
fn on_redb_a_change_that_panics_in_the_commit_loses_the_handle_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (archive, server) = serve_on_redb(
        dir.path(),
        "/panicked-update-then-logout",
        post(panicked_update_then_logout),
    );

    panicked_update_then_logout_changes_nothing(&server, &*archive);
}

/// On redb an update whose request gives up while it waits for the commit may still be stored,
/// but a destroy after it is final: nothing brings the session back.
#[cfg(feature = "archive-redb")]
#[test]
fn on_redb_a_destroy_after_an_abandoned_update_is_final() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (archive, server) = serve_on_redb(
        dir.path(),
        "/abandoned-update-then-logout",
        post(|mut session: Session<Visits>| async move {
            let update = session.update(|visits| visits.visits += 10);
            let _ = tokio::time::timeout(Duration::ZERO, update).await;
            session.destroy().await
        }),
    );
    let (client, logout) = visit_then_post(&server, "/abandoned-update-then-logout");
    assert_eq!(logout.status(), 200);
    assert!(live_ids(&*archive).is_empty(), "the destroy was final");
    let peek = client.get(server.url("/peek")).send().expect("a peek");
    assert_eq!(peek.text().expect("a body"), "0");
    assert!(live_ids(&*archive).is_empty());
}

/// A memory archive that says every call may block, and answers `get_many` and
/// `compare_and_swap_many` through async paths too (each future yields once before it runs, as a
/// server's answer would), counting which path each took. `lose_swap_answer` makes the next
/// async swap land and then answer an error, as a reply lost on the way back would.
#[derive(Default)]
struct AsyncPaths {
    inner: Arc<MemoryArchive>,
    blocking_reads: std::sync::atomic::AtomicUsize,
    blocking_swaps: std::sync::atomic::AtomicUsize,
    async_reads: std::sync::atomic::AtomicUsize,
    async_swaps: std::sync::atomic::AtomicUsize,
    lose_swap_answer: AtomicBool,
}

impl AsyncPaths {
    fn counts(&self) -> [usize; 4] {
        [
            &self.blocking_reads,
            &self.blocking_swaps,
            &self.async_reads,
            &self.async_swaps,
        ]
        .map(|count| count.load(Ordering::SeqCst))
    }
}

impl Archive for AsyncPaths {
    fn get(&self, domain: &str, key: &str) -> session_archive::Result<Option<Vec<u8>>> {
        self.inner.get(domain, key)
    }
    fn set(&self, domain: &str, key: &str, value: &[u8]) -> session_archive::Result<()> {
        self.inner.set(domain, key, value)
    }
    fn has(&self, domain: &str, key: &str) -> session_archive::Result<bool> {
        self.inner.has(domain, key)
    }
    fn remove(&self, domain: &str, key: &str) -> session_archive::Result<bool> {
        self.inner.remove(domain, key)
    }
    fn has_domain(&self, domain: &str) -> session_archive::Result<bool> {
        self.inner.has_domain(domain)
    }
    fn remove_domain(&self, domain: &str) -> session_archive::Result<bool> {
        self.inner.remove_domain(domain)
    }
    fn compare_and_swap(
        &self,
        domain: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> session_archive::Result<bool> {
        self.blocking_swaps.fetch_add(1, Ordering::SeqCst);
        self.inner.compare_and_swap(domain, key, expected, new)
    }
    fn compare_and_swap_many(
        &self,
        domain: &str,
        swaps: &[session_archive::archive::Swap<'_>],
    ) -> session_archive::Result<bool> {
        self.blocking_swaps.fetch_add(1, Ordering::SeqCst);
        self.inner.compare_and_swap_many(domain, swaps)
    }
    fn get_many(
        &self,
        domain: &str,
        keys: &[&str],
    ) -> session_archive::Result<Vec<Option<Vec<u8>>>> {
        self.blocking_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get_many(domain, keys)
    }
    fn get_many_async(
        &self,
        domain: &str,
        keys: &[&str],
    ) -> Option<session_archive::archive::GetManyFuture> {
        self.async_reads.fetch_add(1, Ordering::SeqCst);
        let (inner, domain) = (Arc::clone(&self.inner), domain.to_owned());
        let keys: Vec<String> = keys.iter().map(|key| (*key).to_owned()).collect();
        Some(Box::pin(async move {
            tokio::task::yield_now().await;
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            inner.get_many(&domain, &keys)
        }))
    }
    fn compare_and_swap_many_async(
        &self,
        domain: &str,
        swaps: &[session_archive::archive::Swap<'_>],
    ) -> Option<session_archive::archive::SwapFuture> {
        self.async_swaps.fetch_add(1, Ordering::SeqCst);
        let (inner, domain) = (Arc::clone(&self.inner), domain.to_owned());
        let swaps: Vec<session_archive::conformance::OwnedSwap> = swaps
            .iter()
            .map(|(key, expected, new)| {
                (
                    (*key).to_owned(),
                    expected.map(<[u8]>::to_vec),
                    new.map(<[u8]>::to_vec),
                )
            })
            .collect();
        let lose = self.lose_swap_answer.swap(false, Ordering::SeqCst);
        Some(Box::pin(async move {
            tokio::task::yield_now().await;
            let swaps: Vec<session_archive::archive::Swap<'_>> = swaps
                .iter()
                .map(|(key, expected, new)| (key.as_str(), expected.as_deref(), new.as_deref()))
                .collect();
            let swapped = inner.compare_and_swap_many(&domain, &swaps)?;
            if lose {
                return Err(Error::Backend {
                    backend: "test",
                    operation: "compare and swap",
                    source: "the answer was lost".into(),
                });
            }
            Ok(swapped)
        }))
    }
    fn list_domains(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> session_archive::Result<session_archive::Page> {
        self.inner.list_domains(cursor, limit)
    }
    fn list_keys(
        &self,
        domain: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> session_archive::Result<session_archive::Page> {
        self.inner.list_keys(domain, cursor, limit)
    }
}

/// The routes over a fresh [`AsyncPaths`] archive, served.
fn serve_async_paths() -> (Arc<AsyncPaths>, Server) {
    let archive = Arc::new(AsyncPaths::default());
    let sessions = Sessions::builder(Arc::clone(&archive))
        .secure(false)
        .build();
    let server = Server::start(routes().layer(SessionLayer::new(sessions)));
    (archive, server)
}

/// On an archive with async paths, a request that resumes a session and updates it reads and
/// swaps through them: no blocking `get_many` or `compare_and_swap` at all. A lost answer of a
/// swap that landed is read back, so the visit counts once.
#[test]
fn an_archive_with_async_paths_serves_an_update_without_blocking_calls() {
    let (archive, server) = serve_async_paths();
    let client = jar();
    let visit = || {
        client
            .get(server.url("/count"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    assert_eq!(visit(), "1");
    let before = archive.counts();
    for n in 2..=5 {
        assert_eq!(visit(), n.to_string());
    }
    let after = archive.counts();
    assert_eq!(after[0] - before[0], 0, "blocking reads");
    assert_eq!(after[1] - before[1], 0, "blocking swaps");
    assert_eq!(after[2] - before[2], 4, "async reads");
    assert_eq!(after[3] - before[3], 4, "async swaps");

    archive.lose_swap_answer.store(true, Ordering::SeqCst);
    assert_eq!(
        visit(),
        "6",
        "a landed swap whose answer was lost counts once"
    );
    assert_eq!(visit(), "7");
}

/// On an archive with async paths, 64 updates of one session from 8 clients at once lose none: a swap
/// from a stale guess fails and the update runs again the usual way.
#[test]
fn concurrent_updates_through_async_paths_lose_nothing() {
    const CLIENTS: usize = 8;
    const VISITS: usize = 8;
    let (archive, server) = serve_async_paths();
    let first = jar();
    assert_eq!(
        first
            .get(server.url("/count"))
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "1"
    );
    let id = domains(&*archive.inner)
        .into_iter()
        .find(|domain| archive.inner.has(domain, STATE_KEY).unwrap())
        .expect("the session");
    handlers::count_concurrently(&server.url("/count"), &id, CLIENTS, VISITS);
    let stored = archive.inner.get(&id, STATE_KEY).unwrap().unwrap();
    let visits: Visits = serde_json::from_slice(&stored).unwrap();
    assert_eq!(visits.visits, (CLIENTS * VISITS + 1) as u64);
    assert!(archive.counts()[3] > 0, "the async swap was used");
}

/// The test routes over a fresh memory archive, with ids in the `x-session-id` header too, or
/// only there (`cookie` false), on `clock` if given (see [`header_ids::sessions`]).
fn serve_with_header(cookie: bool, clock: Option<ManualClock>) -> (Arc<MemoryArchive>, Server) {
    let archive = Arc::new(MemoryArchive::new());
    let mut layer = SessionLayer::new(header_ids::sessions(&archive, clock))
        .with_id_header(axum::http::HeaderName::from_static(header_ids::ID_HEADER));
    if !cookie {
        layer = layer.without_cookie();
    }
    (archive, Server::start(routes().layer(layer)))
}

header_ids::id_header_tests!(serve_with_header);
layer_tests::layer_tests!(serve);

/// A request whose handler (or a middleware before it) takes two session handles: the second
/// handle's calls, which ask for no cookie, never take back the cookie that the first one's
/// save asked for, so the session it stored is reachable.
async fn two_handles(
    mut first: Session<Visits>,
    mut second: Session<Visits>,
) -> Result<String, SessionError> {
    first.update(|visits| visits.visits += 1).await?;
    second.load().await?;
    Ok(first.id().as_str().to_owned())
}

#[test]
fn a_second_handle_in_one_request_never_takes_back_the_first_ones_cookie() {
    let archive = Arc::new(MemoryArchive::new());
    let app = Router::new()
        .route("/two", get(two_handles))
        .route("/peek", get(peek))
        .layer(SessionLayer::new(sessions(&archive)));
    let server = Server::start(app);
    let client = jar();
    let response = client.get(server.url("/two")).send().unwrap();
    let cookies = set_cookies(&response);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let stored = response.text().unwrap();
    assert_eq!(cookie_value(&cookies[0]), stored);
    let peeked = client
        .get(server.url("/peek"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(peeked, "1");
}
