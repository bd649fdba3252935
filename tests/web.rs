//! The welcome app, end to end: each test runs the real `welcome` binary (`examples/welcome.rs`,
//! built as the `welcome` bin target) on an ephemeral loopback port over a fresh archive, and
//! drives it over HTTP with reqwest clients that keep cookie jars, as curl would (plain text)
//! and as a browser would (HTML). With the `actix` feature every test runs a second time against
//! the actix-web app (`examples/welcome_actix.rs`, the `welcome_actix` bin): see
//! `for_both_apps!`.
//!
//! Cargo builds the binary before running this file's tests. Two instances over one Redis
//! server (feature `archive-redis`), or one PostgreSQL database (feature `archive-postgres`),
//! run when a server can be found or started: see `support/redis_server.rs` and
//! `support/postgres_server.rs`.
#![cfg(all(feature = "axum", feature = "archive-redb"))]
#![allow(
    clippy::unwrap_used,
    reason = "test bodies, run by the #[test] functions for_both_apps! stamps out"
)]

#[path = "support/http.rs"]
mod http;
#[cfg(feature = "archive-postgres")]
#[path = "support/postgres_server.rs"]
mod postgres_server;
#[cfg(feature = "archive-redis")]
#[path = "support/redis_server.rs"]
mod redis_server;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread;

use http::{cookie_value, jar, set_cookies};
use reqwest::blocking::{Client, Response};
use reqwest::header::{ACCEPT, CONTENT_TYPE, COOKIE, LOCATION, VARY};
use session_archive::{ArchiveExt, RedbArchive, SessionId};

/// The axum app's binary, which cargo builds for this test.
const WELCOME: &str = env!("CARGO_BIN_EXE_welcome");
/// The actix-web app's binary (`examples/welcome_actix.rs`), built with the `actix` feature.
#[cfg(feature = "actix")]
const WELCOME_ACTIX: &str = env!("CARGO_BIN_EXE_welcome_actix");

/// Runs each test against both welcome apps, the axum one and (feature `actix`) the actix-web
/// one: the same routes, pages and id rules, so the same tests. `test_name::axum` and
/// `test_name::actix` are the two runs of `test_name`.
macro_rules! for_both_apps {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {$(
        $(#[$attr])*
        mod $name {
            #[test]
            fn axum() {
                super::$name(super::WELCOME);
            }

            #[cfg(feature = "actix")]
            #[test]
            fn actix() {
                super::$name(super::WELCOME_ACTIX);
            }
        }
    )*};
}

/// What a browser sends in `Accept` for a page.
const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// A running welcome example; killed when dropped.
struct App {
    child: Child,
    stdout: BufReader<ChildStdout>,
    url: String,
}

impl App {
    /// Starts the app on `archive`: a spec, or a bare path.
    fn start(bin: &str, archive: impl AsRef<OsStr>) -> App {
        let mut child = Command::new(bin)
            .args(["--addr", "127.0.0.1:0", "--archive"])
            .arg(archive)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the welcome example");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut first = String::new();
        stdout
            .read_line(&mut first)
            .expect("reading the example's first line");
        let url = first
            .trim_end()
            .strip_prefix("Listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_owned();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        App { child, stdout, url }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Sends SIGTERM, waits for a clean exit, and returns what it printed after the first line.
    #[cfg(unix)]
    fn terminate(mut self) -> String {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success());
        let exit = self.child.wait().expect("waiting for the example");
        assert!(exit.success(), "{exit}");
        let mut rest = String::new();
        self.stdout
            .read_to_string(&mut rest)
            .expect("reading the example's output");
        rest
    }
}

impl Drop for App {
    fn drop(&mut self) {
        // SIGKILL: the redb file lock goes with the process.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The one session id a response's `Set-Cookie` hands out, checked to be well formed.
fn issued_id(response: &Response) -> String {
    let cookies = set_cookies(response);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let id = cookie_value(&cookies[0]);
    // An oracle independent of the crate's parser: the uuid crate's parser and formatter.
    assert!(
        uuid::Uuid::try_parse(id).is_ok_and(|uuid| uuid.hyphenated().to_string() == id),
        "{id:?}"
    );
    id.to_owned()
}

fn visit(client: &Client, app: &App) -> String {
    let response = client.get(app.url("/")).send().expect("GET /");
    assert_eq!(response.status(), 200);
    response.text().expect("a text body")
}

/// `POST /name` with the form field `name` (a name of letters only, so no encoding is needed).
fn post_name(client: &Client, app: &App, name: &str) -> Response {
    client
        .post(app.url("/name"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("name={name}"))
        .send()
        .expect("POST /name")
}

fn archive_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("nested/sessions.redb")
}

fn visits_count_up_for_each_client_and_clients_are_separate(bin: &str) {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(bin, archive_path(&dir));
    let (alice, bob) = (jar(), jar());

    let first = alice.get(app.url("/")).send().unwrap();
    assert_eq!(first.headers()["content-type"], "text/plain; charset=utf-8");
    let alice_id = issued_id(&first);
    assert_eq!(first.text().unwrap(), "Hello World! Visit #1");
    assert_eq!(visit(&alice, &app), "Hello World! Visit #2");
    assert_eq!(visit(&alice, &app), "Hello World! Visit #3");

    let bob_first = bob.get(app.url("/")).send().unwrap();
    let bob_id = issued_id(&bob_first);
    assert_ne!(bob_id, alice_id);
    assert_eq!(bob_first.text().unwrap(), "Hello World! Visit #1");
    assert_eq!(visit(&alice, &app), "Hello World! Visit #4");
    assert_eq!(visit(&bob, &app), "Hello World! Visit #2");
}

fn the_cookie_is_http_only_lax_path_root_and_not_secure_over_plain_http(bin: &str) {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(bin, archive_path(&dir));
    let client = jar();
    let first = client.get(app.url("/")).send().unwrap();
    issued_id(&first);
    let cookie = &set_cookies(&first)[0];
    let attributes: Vec<&str> = cookie.split("; ").skip(1).collect();
    assert!(attributes.contains(&"HttpOnly"), "{cookie}");
    assert!(attributes.contains(&"SameSite=Lax"), "{cookie}");
    assert!(attributes.contains(&"Path=/"), "{cookie}");
    assert!(!attributes.contains(&"Secure"), "{cookie}");

    // A later write soon after keeps the same id and sends no cookie: its Max-Age need not move
    // until the session's last-seen time does (once per eighth of the idle timeout).
    let second = client.get(app.url("/")).send().unwrap();
    assert!(
        set_cookies(&second).is_empty(),
        "{:?}",
        set_cookies(&second)
    );
    assert_eq!(second.text().unwrap(), "Hello World! Visit #2");
    let third = client.get(app.url("/")).send().unwrap();
    assert!(set_cookies(&third).is_empty());
    assert!(third.text().unwrap().ends_with("Visit #3"));
}

fn post_name_sets_the_name_and_redirects_home(bin: &str) {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(bin, archive_path(&dir));
    let client = jar();
    assert_eq!(visit(&client, &app), "Hello World! Visit #1");
    let response = post_name(&client, &app, "Ferris");
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[LOCATION], "/");
    assert_eq!(visit(&client, &app), "Hello Ferris! Visit #2");

    // A first-time visitor can set a name too; the session starts with it.
    let newcomer = jar();
    let response = post_name(&newcomer, &app, "Ada");
    assert_eq!(response.status(), 303);
    issued_id(&response);
    assert_eq!(visit(&newcomer, &app), "Hello Ada! Visit #1");
}

#[cfg(unix)]
fn restarting_on_the_same_archive_keeps_the_session(bin: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = archive_path(&dir);
    let client = jar();

    let app = App::start(bin, &path);
    assert_eq!(visit(&client, &app), "Hello World! Visit #1");
    post_name(&client, &app, "Ferris");
    let rest = app.terminate();
    assert_eq!(rest, "Stopped; sessions closed\n");

    // A graceful stop closed the file; a new process opens it and finds the session.
    let app = App::start(bin, &path);
    assert_eq!(visit(&client, &app), "Hello Ferris! Visit #2");
    drop(app); // SIGKILL: acknowledged writes survive a crash too.

    let app = App::start(bin, &path);
    assert_eq!(visit(&client, &app), "Hello Ferris! Visit #3");
}

fn hostile_cookies_get_a_fresh_id_and_are_never_echoed(bin: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = archive_path(&dir);
    let app = App::start(bin, &path);
    let unknown = SessionId::generate().to_string();
    let plain = Client::new();
    for hostile in ["../../etc", "..", unknown.as_str(), "", "%2e%2e%2f", "."] {
        let response = plain
            .get(app.url("/"))
            .header(COOKIE, format!("session-id={hostile}"))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{hostile:?}");
        let id = issued_id(&response);
        assert_ne!(id, hostile);
        let cookie = &set_cookies(&response)[0];
        if !hostile.is_empty() {
            assert!(!cookie.contains(hostile), "{hostile:?} echoed in {cookie}");
        }
        assert_eq!(
            response.text().unwrap(),
            "Hello World! Visit #1",
            "{hostile:?}"
        );
    }
    drop(app);

    // Only server-made ids were stored: never the unknown uuid, never a path.
    let archive = RedbArchive::open(&path).unwrap();
    let domains: Vec<String> = archive.domains().collect::<Result<_, _>>().unwrap();
    let sessions: Vec<&String> = domains
        .iter()
        .filter(|domain| SessionId::parse(domain).is_some())
        .collect();
    assert_eq!(sessions.len(), 6, "{domains:?}");
    assert!(!domains.contains(&unknown));
    assert!(
        domains.iter().all(|d| SessionId::parse(d).is_some()
            || d.starts_with("expiry-")
            || d == "sweep-cursor"),
        "{domains:?}"
    );
}

fn concurrent_requests_with_one_cookie_count_every_visit(bin: &str) {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(bin, archive_path(&dir));
    let client = jar();
    assert_eq!(visit(&client, &app), "Hello World! Visit #1");

    let mut seen: Vec<u64> = thread::scope(|scope| {
        let workers: Vec<_> = (0..64)
            .map(|_| {
                let client = client.clone();
                let app = &app;
                scope.spawn(move || {
                    let body = visit(&client, app);
                    body.strip_prefix("Hello World! Visit #")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("unexpected body {body:?}"))
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    seen.sort_unstable();
    assert_eq!(seen, (2..=65).collect::<Vec<u64>>());
    assert_eq!(visit(&client, &app), "Hello World! Visit #66");
}

fn logout_resets_the_session_and_the_old_cookie_no_longer_works(bin: &str) {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(bin, archive_path(&dir));
    let client = jar();
    let first = client.get(app.url("/")).send().unwrap();
    let old = issued_id(&first);
    post_name(&client, &app, "Ferris");
    assert_eq!(visit(&client, &app), "Hello Ferris! Visit #2");

    let logout = client.post(app.url("/logout")).send().unwrap();
    assert_eq!(logout.status(), 200);
    let cookies = set_cookies(&logout);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert!(cookies[0].starts_with("session-id=;"), "{}", cookies[0]);
    assert!(cookies[0].contains("Max-Age=0"), "{}", cookies[0]);

    let after = client.get(app.url("/")).send().unwrap();
    let new = issued_id(&after);
    assert_ne!(new, old);
    assert_eq!(after.text().unwrap(), "Hello World! Visit #1");

    let replay = Client::new()
        .get(app.url("/"))
        .header(COOKIE, format!("session-id={old}"))
        .send()
        .unwrap();
    let replay_id = issued_id(&replay);
    assert_ne!(replay_id, old);
    assert_ne!(replay_id, new);
    assert_eq!(replay.text().unwrap(), "Hello World! Visit #1");
}

fn a_second_instance_on_a_held_archive_fails_with_a_clear_message(bin: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = archive_path(&dir);
    let _app = App::start(bin, &path);
    let output = Command::new(bin)
        .args(["--addr", "127.0.0.1:0", "--archive"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already open"), "{stderr}");
}

/// `GET /` as a browser asks for it: `Accept` names `text/html`.
fn browse(client: &Client, app: &App) -> Response {
    let response = client
        .get(app.url("/"))
        .header(ACCEPT, BROWSER_ACCEPT)
        .send()
        .expect("GET / for HTML");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(response.headers()[VARY], "accept");
    response
}

/// `POST /name` as a browser submits the page's form: the body URL-encoded, HTML accepted.
fn submit_name(client: &Client, app: &App, encoded: &str) -> Response {
    client
        .post(app.url("/name"))
        .header(ACCEPT, BROWSER_ACCEPT)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("name={encoded}"))
        .send()
        .expect("POST /name from the form")
}

fn curl_gets_the_plain_text_and_a_browser_the_page_with_both_forms(bin: &str) {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(bin, archive_path(&dir));
    let client = jar();

    // What curl sends: `Accept: */*`.
    let plain = client
        .get(app.url("/"))
        .header(ACCEPT, "*/*")
        .send()
        .unwrap();
    assert_eq!(plain.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
    assert_eq!(plain.headers()[VARY], "accept");
    assert_eq!(plain.text().unwrap(), "Hello World! Visit #1");

    let page = browse(&client, &app).text().unwrap();
    assert!(page.starts_with("<!doctype html>"), "{page}");
    assert!(page.contains("<h1>Hello World!</h1>"), "{page}");
    assert!(page.contains("<p>Visit #2</p>"), "{page}");
    assert!(
        page.contains(r#"<form method="post" action="/name">"#),
        "{page}"
    );
    assert!(page.contains(r#"<input name="name" value="""#), "{page}");
    assert!(
        page.contains(r#"<form method="post" action="/logout">"#),
        "{page}"
    );
    // One session for both kinds of answer.
    assert_eq!(visit(&client, &app), "Hello World! Visit #3");
}

fn the_form_sets_the_name_and_the_page_escapes_it(bin: &str) {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(bin, archive_path(&dir));
    let client = jar();
    browse(&client, &app);

    // `<b>Ada & "Bob"</b>`, as a browser encodes the form.
    let response = submit_name(&client, &app, "%3Cb%3EAda+%26+%22Bob%22%3C%2Fb%3E");
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[LOCATION], "/");

    let page = browse(&client, &app).text().unwrap();
    let escaped = "&lt;b&gt;Ada &amp; &quot;Bob&quot;&lt;/b&gt;";
    assert!(
        page.contains(&format!("<h1>Hello {escaped}!</h1>")),
        "{page}"
    );
    assert!(page.contains(&format!(r#"value="{escaped}""#)), "{page}");
    assert!(page.contains("<p>Visit #2</p>"), "{page}");
    assert!(!page.contains("<b>"), "{page}");
    // Plain text is not HTML: curl sees the name as it was typed.
    assert_eq!(
        visit(&client, &app),
        r#"Hello <b>Ada & "Bob"</b>! Visit #3"#
    );
}

fn the_logout_button_expires_the_cookie_and_sends_the_browser_home(bin: &str) {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(bin, archive_path(&dir));
    let client = jar();
    let old = issued_id(&browse(&client, &app));
    submit_name(&client, &app, "Ferris");

    let logout = client
        .post(app.url("/logout"))
        .header(ACCEPT, BROWSER_ACCEPT)
        .send()
        .unwrap();
    assert_eq!(logout.status(), 303);
    assert_eq!(logout.headers()[LOCATION], "/");
    let cookies = set_cookies(&logout);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert!(cookies[0].starts_with("session-id=;"), "{}", cookies[0]);
    assert!(cookies[0].contains("Max-Age=0"), "{}", cookies[0]);

    let home = browse(&client, &app);
    assert_ne!(issued_id(&home), old);
    let page = home.text().unwrap();
    assert!(page.contains("<h1>Hello World!</h1>"), "{page}");
    assert!(page.contains("<p>Visit #1</p>"), "{page}");
}

fn archive_takes_a_redb_spec_as_well_as_a_bare_path(bin: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = archive_path(&dir);
    let client = jar();
    let app = App::start(bin, format!("redb:{}", path.display()));
    assert_eq!(visit(&client, &app), "Hello World! Visit #1");
    post_name(&client, &app, "Ferris");
    drop(app);

    // The same file, named as a bare path.
    let app = App::start(bin, &path);
    assert_eq!(visit(&client, &app), "Hello Ferris! Visit #2");
}

#[cfg(feature = "archive-dir")]
fn archive_takes_a_dir_spec_in_the_original_layout(bin: &str) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sessions");
    let app = App::start(bin, format!("dir:{}", root.display()));
    let client = jar();
    let first = client.get(app.url("/")).send().unwrap();
    let id = issued_id(&first);
    assert_eq!(first.text().unwrap(), "Hello World! Visit #1");
    post_name(&client, &app, "Ferris");

    let stored = std::fs::read(root.join(&id).join("session.json")).unwrap();
    let state: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(state["Name"], "Ferris");
    assert_eq!(state["Visits"], 1);
    assert_eq!(visit(&client, &app), "Hello Ferris! Visit #2");
}

fn an_unknown_archive_scheme_is_a_usage_error(bin: &str) {
    let output = Command::new(bin)
        .args(["--addr", "127.0.0.1:0", "--archive", "ftp://host/sessions"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ftp://host/sessions"), "{stderr}");
    assert!(stderr.contains("usage: welcome"), "{stderr}");
}

/// The multi-machine story: two instances (two machines behind a load balancer, here two ports)
/// over one Redis serve one set of sessions, so a visitor can land on either.
#[cfg(feature = "archive-redis")]
fn two_instances_over_one_redis_share_their_visitors_sessions(bin: &str) {
    let Some(url) = redis_server::or_skip(redis_server::shared_url()) else {
        return;
    };
    // A prefix of its own keeps this test's sessions apart from other tests on the server.
    two_instances_share_their_visitors_sessions(
        bin,
        &format!("{url}#prefix={}", redis_server::unique_prefix()),
    );
}

/// The same over one PostgreSQL database, each test in a table of its own.
#[cfg(feature = "archive-postgres")]
fn two_instances_over_one_postgres_database_share_their_visitors_sessions(bin: &str) {
    let Some(url) = postgres_server::or_skip(postgres_server::shared_url()) else {
        return;
    };
    two_instances_share_their_visitors_sessions(
        bin,
        &format!("{url}#table={}", postgres_server::unique_table()),
    );
}

/// Two instances over the archive `spec`: a visit on one, the next on the other, the count and
/// the name go on, and a logout on either ends the session on both.
#[cfg(any(feature = "archive-redis", feature = "archive-postgres"))]
#[allow(
    clippy::unwrap_used,
    reason = "the body of two tests, which unwrap as tests do"
)]
fn two_instances_share_their_visitors_sessions(bin: &str, spec: &str) {
    let (a, b) = (App::start(bin, spec), App::start(bin, spec));
    assert_ne!(a.url, b.url);
    let client = jar();

    let first = client.get(a.url("/")).send().unwrap();
    let id = issued_id(&first);
    assert_eq!(first.text().unwrap(), "Hello World! Visit #1");
    assert_eq!(post_name(&client, &a, "Ferris").status(), 303);

    // The same cookie on the other instance: the name is there and the count goes on.
    let on_b = Client::new()
        .get(b.url("/"))
        .header(COOKIE, format!("session-id={id}"))
        .send()
        .unwrap();
    assert!(set_cookies(&on_b).is_empty(), "{:?}", set_cookies(&on_b));
    assert_eq!(on_b.text().unwrap(), "Hello Ferris! Visit #2");
    assert_eq!(visit(&client, &a), "Hello Ferris! Visit #3");
    let page = browse(&client, &b).text().unwrap();
    assert!(page.contains("<h1>Hello Ferris!</h1>"), "{page}");
    assert!(page.contains("<p>Visit #4</p>"), "{page}");

    // A logout on one instance ends the session on both.
    let logout = client.post(b.url("/logout")).send().unwrap();
    assert_eq!(logout.status(), 200);
    let replay = Client::new()
        .get(a.url("/"))
        .header(COOKIE, format!("session-id={id}"))
        .send()
        .unwrap();
    assert_ne!(issued_id(&replay), id);
    assert_eq!(replay.text().unwrap(), "Hello World! Visit #1");
}

for_both_apps!(
    visits_count_up_for_each_client_and_clients_are_separate,
    the_cookie_is_http_only_lax_path_root_and_not_secure_over_plain_http,
    post_name_sets_the_name_and_redirects_home,
    #[cfg(unix)]
    restarting_on_the_same_archive_keeps_the_session,
    hostile_cookies_get_a_fresh_id_and_are_never_echoed,
    concurrent_requests_with_one_cookie_count_every_visit,
    logout_resets_the_session_and_the_old_cookie_no_longer_works,
    a_second_instance_on_a_held_archive_fails_with_a_clear_message,
    curl_gets_the_plain_text_and_a_browser_the_page_with_both_forms,
    the_form_sets_the_name_and_the_page_escapes_it,
    the_logout_button_expires_the_cookie_and_sends_the_browser_home,
    archive_takes_a_redb_spec_as_well_as_a_bare_path,
    #[cfg(feature = "archive-dir")]
    archive_takes_a_dir_spec_in_the_original_layout,
    an_unknown_archive_scheme_is_a_usage_error,
    #[cfg(feature = "archive-redis")]
    two_instances_over_one_redis_share_their_visitors_sessions,
    #[cfg(feature = "archive-postgres")]
    two_instances_over_one_postgres_database_share_their_visitors_sessions,
);
