//! `examples/tower_sessions.rs`, end to end: its router (the example file, included as a
//! module) served in-process on a loopback port over `ArchiveStore` on a redb file, driven by a
//! client with a cookie jar as a browser would. It answers as the main example does, keeps the
//! visit across a restart, and logs out.

#[path = "support/http.rs"]
#[allow(
    dead_code,
    reason = "each test file uses its own part of the shared helpers"
)]
mod http;

#[path = "../examples/tower_sessions.rs"]
#[allow(dead_code, reason = "only the example's router is served here")]
mod example;

use std::path::Path;

use http::jar;
use reqwest::blocking::Client;
use reqwest::header::CONTENT_TYPE;
use session_archive::RedbArchive;
use session_archive::tower_sessions::ArchiveStore;

/// The example's app over the redb file at `path`, on a loopback port, until dropped.
struct Server {
    url: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Server {
    fn start(path: &Path) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let app = example::app(ArchiveStore::new(
            RedbArchive::open(path).expect("open redb"),
        ));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("the address"));
        runtime.spawn(async move { axum::serve(listener, app).await });
        Server {
            url,
            runtime: Some(runtime),
        }
    }

    /// `GET path`, or a `POST` of `form` (an urlencoded body, such as `name=Ferris`), and the
    /// body of the answer.
    fn text(&self, client: &Client, form: Option<&str>, path: &str) -> String {
        let url = format!("{}{path}", self.url);
        let request = match form {
            Some(form) => client
                .post(url)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form.to_owned()),
            None => client.get(url),
        };
        let response = request.send().expect("an answer");
        assert!(response.status().is_success() || response.status().is_redirection());
        response.text().expect("a body")
    }
}

impl Drop for Server {
    /// Stops the server, closing the redb file, before the next one opens it.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(std::time::Duration::from_secs(5));
        }
    }
}

#[test]
fn the_tower_sessions_example_greets_counts_survives_a_restart_and_logs_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tower-sessions.redb");
    let browser = jar();
    {
        let server = Server::start(&path);
        assert_eq!(server.text(&browser, None, "/"), "Hello World! Visit #1");
        server.text(&browser, Some("name=Ferris"), "/name");
        assert_eq!(server.text(&browser, None, "/"), "Hello Ferris! Visit #2");
    }
    // A new process over the same file: the session and its count are still there.
    let server = Server::start(&path);
    assert_eq!(server.text(&browser, None, "/"), "Hello Ferris! Visit #3");
    assert_eq!(server.text(&browser, Some(""), "/logout"), "Logged out\n");
    assert_eq!(server.text(&browser, None, "/"), "Hello World! Visit #1");
}
