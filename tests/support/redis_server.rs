//! The Redis servers of the tests and benchmarks that need one; each file that needs it includes
//! this file as a module of its own.
//!
//! The shared server is `ARCHIVE_REDIS_URL` when that is set (every test works under its own
//! unique key prefix, so tests share it safely; use a scratch database, since test data is left
//! behind). Otherwise the tests start `redis-server` themselves on a free loopback port, without
//! persistence, as a [`Node`]: it never outlives the test process, however the process ends, and
//! it is known to be the server this process started, never another that holds its port.
//!
//! Without a server the tests print a notice and skip; with `ARCHIVE_REDIS_REQUIRED=1` they fail
//! instead. Both variables are read at run time.

#![allow(dead_code, reason = "each file that includes it uses part of it")]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use session_archive::RedisArchive;

/// How long a started server has to answer before it counts as not started.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How far above its own port a Cluster node listens for its bus.
const BUS_OFFSET: u16 = 10_000;

/// One `redis-server` (or sentinel) on loopback, run by a `sh` that kills it when a line arrives
/// on the `sh`'s stdin (with the signal named there; TERM for none) or when that stdin closes,
/// which happens at the latest when this process exits: no server outlives the tests.
pub struct Node {
    pub port: u16,
    child: Option<Child>,
}

impl Node {
    /// Starts `redis-server` with `args` on a port of its own (with `bus`, one whose Cluster bus
    /// port is free as well), in `dir`, trying a few ports in case another process takes one
    /// between the probe and the start.
    pub fn start_free(dir: Option<&Path>, args: &[&str], bus: bool) -> Result<Node, String> {
        let mut last = String::new();
        for _ in 0..3 {
            match Node::start(dir, free_port_with(bus)?, args) {
                Ok(node) => return Ok(node),
                Err(reason) => last = reason,
            }
        }
        Err(last)
    }

    /// Starts `redis-server` with `args` on `port`, in `dir` (this process's own without), and
    /// waits until it answers. The answer must come from the server started here (its
    /// `process_id`): a server of someone else's that holds the port is an error, never a node.
    pub fn start(dir: Option<&Path>, port: u16, args: &[&str]) -> Result<Node, String> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status();
        if !found.is_ok_and(|status| status.success()) {
            return Err("redis-server is not installed".to_owned());
        }
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(
                r#"redis-server "$@" >/dev/null & pid=$!; echo "$pid"; read -r sig;
                kill -"${sig:-TERM}" "$pid" 2>/dev/null; wait "$pid" 2>/dev/null"#,
            )
            .arg("sh")
            .args(args)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        let mut child = command
            .spawn()
            .map_err(|err| format!("cannot run sh to start redis-server: {err}"))?;
        let mut line = String::new();
        let read = child
            .stdout
            .take()
            .map(|out| BufReader::new(out).read_line(&mut line));
        let mut node = Node {
            port,
            child: Some(child),
        };
        let pid: u32 = match read {
            Some(Ok(_)) => line
                .trim()
                .parse()
                .map_err(|_| format!("sh did not tell redis-server's pid: {line:?}"))?,
            _ => return Err("sh did not tell redis-server's pid".to_owned()),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            match node.process_id() {
                Some(answered) if answered == pid => return Ok(node),
                Some(other) => {
                    node.stop();
                    return Err(format!(
                        "port {port} is held by another redis-server (pid {other})"
                    ));
                }
                None => thread::sleep(Duration::from_millis(20)),
            }
        }
        node.stop();
        Err(format!("redis-server on port {port} did not answer"))
    }

    /// The `process_id` of the server answering on this node's port, if one answers.
    fn process_id(&self) -> Option<u32> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut self.try_control().ok()?)
            .ok()?;
        info.lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A plain connection to this node that waits at most a few seconds for anything.
    pub fn try_control(&self) -> redis::RedisResult<redis::Connection> {
        let timeout = Some(Duration::from_secs(10));
        let conn =
            redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(2))?;
        conn.set_read_timeout(timeout)?;
        conn.set_write_timeout(timeout)?;
        Ok(conn)
    }

    /// A plain connection to this node.
    pub fn control(&self) -> redis::Connection {
        self.try_control().expect("connect to the node")
    }

    /// Kills the server with SIGKILL, as a crash would, and waits until it is gone.
    pub fn kill(&mut self) {
        self.stop_with("KILL");
    }

    /// Stops the server (SIGTERM) and waits until it is gone.
    pub fn stop(&mut self) {
        self.stop_with("TERM");
    }

    fn stop_with(&mut self, signal: &str) {
        if let Some(mut child) = self.child.take() {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = writeln!(stdin, "{signal}");
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A redis-server without persistence that can be stopped and started again on its port.
pub struct LocalServer {
    port: u16,
    node: Option<Node>,
}

impl LocalServer {
    const ARGS: [&str; 4] = ["--save", "", "--appendonly", "no"];

    /// Starts a server on a free loopback port.
    pub fn start() -> Result<LocalServer, String> {
        let node = Node::start_free(None, &Self::ARGS, false)?;
        Ok(LocalServer {
            port: node.port,
            node: Some(node),
        })
    }

    /// Starts the server again on the same port (after [`stop`](Self::stop)), and waits until it
    /// answers.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.node = Some(Node::start(None, self.port, &Self::ARGS)?);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Stops the server and waits until it has exited.
    pub fn stop(&mut self) {
        self.node = None;
    }
}

/// A loopback port that is free now and that this process never handed out before.
pub fn free_port() -> Result<u16, String> {
    free_port_with(false)
}

/// As [`free_port`]; with `bus`, the port [`BUS_OFFSET`] above it (where a Cluster node also
/// listens) is free too and is never handed out afterwards either. Every server started here
/// gets a port of its own this way; another process may still take one before the server
/// binds it, which [`Node::start`] tells apart.
pub fn free_port_with(bus: bool) -> Result<u16, String> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..1000 {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|err| format!("no free port: {err}"))?;
        let port = listener
            .local_addr()
            .map_err(|err| format!("no free port: {err}"))?
            .port();
        let ports = match (bus, port.checked_add(BUS_OFFSET)) {
            (false, _) => vec![port],
            (true, Some(bus_port)) if TcpListener::bind(("127.0.0.1", bus_port)).is_ok() => {
                vec![port, bus_port]
            }
            (true, _) => continue,
        };
        if ports.iter().all(|port| !handed_out.contains(port)) {
            handed_out.extend(ports);
            return Ok(port);
        }
    }
    Err("no free port found that was not handed out before".to_owned())
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
