//! The Redis server for the tests that need one, shared by `tests/redis.rs` and
//! `tests/sessions.rs` (each includes this file as a module of its own).
//!
//! The server is `ARCHIVE_REDIS_URL` when that is set (every test works under its own unique key
//! prefix, so tests share it safely; use a scratch database, since test data is left behind).
//! Otherwise the tests start `redis-server` themselves on a free loopback port, without
//! persistence. Every server started here runs under a `sh` that kills it when its stdin pipe
//! closes, so it never outlives the test process, however the process ends.
//!
//! Without a server the tests print a notice and skip; with `ARCHIVE_REDIS_REQUIRED=1` they fail
//! instead. Both variables are read at run time.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use session_archive::RedisArchive;

/// A redis-server child that dies with this process: `sh` runs it and kills it once `sh`'s stdin
/// closes, which happens in [`LocalServer::stop`] or when this process exits.
pub struct LocalServer {
    port: u16,
    child: Option<Child>,
}

impl LocalServer {
    /// Starts a server on a free loopback port, trying a few ports in case one is taken between
    /// the probe and the start.
    pub fn start() -> Result<LocalServer, String> {
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            let mut server = LocalServer { port, child: None };
            match server.restart() {
                Ok(()) => return Ok(server),
                Err(reason) => last = reason,
            }
        }
        Err(last)
    }

    /// Starts the server again on the same port (after [`stop`](Self::stop)), and waits until it
    /// answers.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status();
        if !found.is_ok_and(|status| status.success()) {
            return Err("redis-server is not installed".to_owned());
        }
        let port = self.port.to_string();
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#"redis-server "$@" & pid=$!; read -r _; kill "$pid"; wait "$pid""#)
            .arg("sh")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args([
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|err| format!("cannot run sh to start redis-server: {err}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if RedisArchive::open(&self.url()).is_ok() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        Err(format!("redis-server on port {port} did not answer PING"))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Stops the server and waits until it has exited.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            child.wait().expect("wait for the redis-server wrapper");
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|err| format!("no free port: {err}"))?;
    let port = listener
        .local_addr()
        .map_err(|err| format!("no free port: {err}"))?
        .port();
    Ok(port)
}

/// The URL of the server shared by this test binary: `ARCHIVE_REDIS_URL`, or a server started once
/// and kept (as a static, it is never dropped; it exits with this process).
pub fn shared_url() -> Result<String, String> {
    static SHARED: OnceLock<Result<(String, Option<LocalServer>), String>> = OnceLock::new();
    let shared = SHARED.get_or_init(|| {
        if let Ok(url) = std::env::var("ARCHIVE_REDIS_URL") {
            return Ok((url, None));
        }
        let server = LocalServer::start()
            .map_err(|reason| format!("ARCHIVE_REDIS_URL is not set and {reason}"))?;
        Ok((server.url(), Some(server)))
    });
    shared
        .as_ref()
        .map(|(url, _)| url.clone())
        .map_err(Clone::clone)
}

/// Turns "no server" into a skip with a notice, or into a failure under `ARCHIVE_REDIS_REQUIRED=1`.
pub fn or_skip<T>(server: Result<T, String>) -> Option<T> {
    static NOTICE: Once = Once::new();
    match server {
        Ok(server) => Some(server),
        Err(reason) => {
            assert!(
                std::env::var("ARCHIVE_REDIS_REQUIRED").as_deref() != Ok("1"),
                "ARCHIVE_REDIS_REQUIRED=1, but {reason}"
            );
            NOTICE.call_once(|| {
                // Written to stderr directly, past the test harness's output capture.
                let _ = writeln!(
                    std::io::stderr(),
                    "NOTICE: skipping the Redis tests: {reason}. Set ARCHIVE_REDIS_URL or install \
                     redis-server to run them."
                );
            });
            None
        }
    }
}

pub fn unique_prefix() -> String {
    format!("session-archive-test:{}", uuid::Uuid::new_v4())
}

pub fn open(url: &str, prefix: &str) -> RedisArchive {
    RedisArchive::builder(url)
        .prefix(prefix)
        .open()
        .expect("open RedisArchive")
}

/// A plain connection for looking at the server behind the archive's back.
pub fn control(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .expect("parse the URL")
        .get_connection()
        .expect("connect the control connection")
}

/// Whether the shared server is there; the conformance tests run only then.
pub fn server_ready() -> bool {
    or_skip(shared_url()).is_some()
}
