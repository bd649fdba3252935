//! The PostgreSQL server for the tests that need one (each test file includes this file as a
//! module of its own: `#[path = "support/postgres_server.rs"] mod postgres_server;`).
//!
//! The server is `ARCHIVE_POSTGRES_URL` when that is set (every test works in a table of its own,
//! [`unique_table`], so tests share it safely; use a scratch database, since test data is left
//! behind). Otherwise the tests start PostgreSQL themselves from Debian's packages: the newest
//! `/usr/lib/postgresql/*/bin` (else `initdb` and `postgres` on `PATH`) makes a fresh cluster in a
//! temporary directory and serves it on a free loopback port, with TLS (a self-signed certificate
//! made with the `openssl` command line) and `pg_stat_statements`. PostgreSQL refuses to run as
//! root, so as root (as in CI) the cluster belongs to, and the server runs as, [`UNPRIVILEGED`].
//!
//! Every server started here runs under a `sh` that stops it when its stdin pipe closes, so it never
//! outlives the test process, however the process ends; when the process ends that way, that `sh`
//! also removes the server's temporary directory (which is how the shared server's goes, as a
//! static is never dropped; a dropped [`LocalServer`] removes its own).
//!
//! Without a server the tests print a notice and skip; with `ARCHIVE_POSTGRES_REQUIRED=1` they fail
//! instead. Both variables are read at run time.

#![allow(dead_code, reason = "each test file uses part of it")]

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The user and group id the server runs as when the tests run as root: `nobody` and `nogroup`
/// on Debian. `initdb` looks the user up, so it needs a passwd entry.
pub const UNPRIVILEGED: u32 = 65534;

/// How long a start or restart may take until the server accepts connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a fast shutdown may take before the postmaster is killed instead.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `postgres` (`$2...`) in the background, prints its pid, and waits for it. A watcher stops
/// it (fast shutdown) once a line arrives on stdin, as [`LocalServer::stop`] sends, or stdin
/// closes. Closed without a line, that is the test process ending: the watcher then also waits for
/// the server to exit (30 s at most) and removes its temporary directory (`$1`).
const WRAPPER: &str = r#"
dir=$1; shift
exec 3<&0
"$@" </dev/null >&2 3<&- &
pid=$!
echo "$pid"
exec >&2
(
    if read -r _ <&3; then keep=1; else keep=; fi
    kill -INT "$pid" 2>/dev/null
    if [ -z "$keep" ]; then
        n=0
        while kill -0 "$pid" 2>/dev/null && [ "$n" -lt 300 ]; do sleep 0.1; n=$((n + 1)); done
        rm -rf "$dir"
    fi
) &
exec 3<&-
wait "$pid"
"#;

/// The PostgreSQL programs: those of the newest `/usr/lib/postgresql/<version>/bin` holding both
/// `initdb` and `postgres`, else whatever `PATH` has.
#[derive(Clone, Debug)]
struct Binaries {
    dir: Option<PathBuf>,
}

impl Binaries {
    fn find() -> Binaries {
        let versions = fs::read_dir("/usr/lib/postgresql").into_iter().flatten();
        let dir = versions
            .filter_map(Result::ok)
            .map(|entry| {
                (
                    version_key(&entry.file_name().to_string_lossy()),
                    entry.path(),
                )
            })
            .filter(|(_, path)| {
                path.join("bin/initdb").is_file() && path.join("bin/postgres").is_file()
            })
            .max()
            .map(|(_, path)| path.join("bin"));
        Binaries { dir }
    }

    /// The program `name` from the version's `bin`, or plain `name` for `PATH` to resolve.
    fn program(&self, name: &str) -> PathBuf {
        match &self.dir {
            Some(dir) if dir.join(name).is_file() => dir.join(name),
            _ => PathBuf::from(name),
        }
    }

    fn command(&self, name: &str) -> Command {
        let mut command = Command::new(self.program(name));
        command.stdin(Stdio::null());
        command
    }
}

/// "15" or "9.6" as numbers, so that 10 sorts after 9.6.
fn version_key(name: &str) -> Vec<u32> {
    name.split('.')
        .map(|part| part.parse().unwrap_or(0))
        .collect()
}

/// A running server's `sh` wrapper.
struct Running {
    wrapper: Child,
    stdin: Option<ChildStdin>,
    postmaster: u32,
}

/// What waiting for a start came to.
enum Start {
    Ready,
    Exited,
    TimedOut,
}

/// A PostgreSQL cluster in a temporary directory of its own, served on a free loopback port
/// (plain or TLS), as user `postgres` with trust authentication. The directory holds `data/` (the
/// cluster, also the unix socket's directory), `server.crt` and `server.key`, and `server.log`.
pub struct LocalServer {
    port: u16,
    options: Vec<(String, String)>,
    bin: Binaries,
    /// Whether `initdb` and `postgres` run as [`UNPRIVILEGED`] (this process being root).
    unprivileged: bool,
    running: Option<Running>,
    /// `server.crt` in `dir`.
    certificate: PathBuf,
    dir: tempfile::TempDir,
}

impl LocalServer {
    /// Makes a fresh cluster and starts a server on it (see [`start_with`](Self::start_with)).
    pub fn start() -> Result<LocalServer, String> {
        Self::start_with(&[])
    }

    /// Makes a fresh cluster and starts a server on it with `options` (`("fsync", "off")`, ...)
    /// given as `-c name=value` after the defaults, which they override: `listen_addresses`,
    /// `unix_socket_directories`, `shared_preload_libraries=pg_stat_statements`,
    /// `max_connections=300` and `ssl=on` with the certificate. Restarts keep them. Tries a few
    /// ports in case one is taken between the probe and the start; creates the extension
    /// `pg_stat_statements` in database `postgres`.
    pub fn start_with(options: &[(&str, &str)]) -> Result<LocalServer, String> {
        let bin = Binaries::find();
        let found = bin.command("initdb").arg("--version").output();
        if !found.is_ok_and(|output| output.status.success()) {
            return Err(
                "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, and no initdb \
                 on PATH)"
                    .to_owned(),
            );
        }
        let (dir, unprivileged) = temporary_directory()?;
        let mut server = LocalServer {
            port: 0,
            options: options
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            bin,
            unprivileged,
            running: None,
            certificate: dir.path().join("server.crt"),
            dir,
        };
        server.make_certificate()?;
        server.initdb()?;
        let mut last = String::new();
        for _ in 0..3 {
            server.port = free_port()?;
            match server.restart() {
                Ok(()) => {
                    server.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")?;
                    return Ok(server);
                }
                Err(reason) => last = reason,
            }
        }
        Err(last)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// [`url`](Self::url) with `?sslmode=require`.
    pub fn tls_url(&self) -> String {
        format!("{}?sslmode=require", self.url())
    }

    /// The server's self-signed certificate (PEM; CN `localhost`, subject alternative names
    /// `localhost` and `127.0.0.1`), which is its own CA.
    pub fn ca_certificate(&self) -> &Path {
        &self.certificate
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory (also where the unix socket is).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The last `lines` lines of the server's log (every start appends to it).
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_since(0), lines)
    }

    /// Runs one SQL command with `psql -At` as `postgres` and returns its output without the
    /// final newline: one line per row, columns separated by `|`.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        run_psql(&self.bin, &self.url(), sql)
    }

    /// Starts the server again on the same cluster and port (stopping it first if it runs), and
    /// waits until it accepts connections; after [`kill`](Self::kill) that includes its crash
    /// recovery.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let log_start = fs::metadata(self.log_path()).map_or(0, |meta| meta.len());
            self.spawn()?;
            match self.wait_ready(deadline) {
                Start::Ready => return Ok(()),
                Start::TimedOut => {
                    self.stop();
                    return Err(format!(
                        "PostgreSQL on port {} did not accept connections within {} s; its log \
                         ends:\n{}",
                        self.port,
                        READY_TIMEOUT.as_secs(),
                        tail(&self.log_since(log_start), 20)
                    ));
                }
                Start::Exited => {
                    self.stop();
                    let log = self.log_since(log_start);
                    if !self.may_retry(&log) || Instant::now() >= deadline {
                        return Err(format!(
                            "PostgreSQL on port {} exited while starting; its log ends:\n{}",
                            self.port,
                            tail(&log, 20)
                        ));
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Stops the server (fast shutdown: sessions are disconnected, a checkpoint is written) and
    /// waits until it has exited; after a minute, kills it.
    pub fn stop(&mut self) {
        let Some(mut running) = self.running.take() else {
            return;
        };
        if let Some(mut stdin) = running.stdin.take() {
            // A line, unlike a plain close, tells the wrapper to keep the directory. The wrapper
            // may be gone already (a failed start); then the write fails, which is fine.
            let _ = stdin.write_all(b"stop\n");
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match running.wrapper.try_wait() {
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Ok(Some(_)) => return,
                Ok(None) | Err(_) => {
                    signal(running.postmaster, "KILL");
                    let _ = running.wrapper.wait();
                    return;
                }
            }
        }
    }

    /// Kills the postmaster with SIGKILL, as a crash would (its backends notice and exit on their
    /// own), and waits until it is gone. [`restart`](Self::restart) then recovers the cluster.
    pub fn kill(&mut self) {
        if let Some(running) = &self.running {
            signal(running.postmaster, "KILL");
        }
        self.stop();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// A self-signed certificate and its key, the key 0600 and both owned by the server's user.
    fn make_certificate(&self) -> Result<(), String> {
        let (cert, key) = (&self.certificate, self.dir.path().join("server.key"));
        let output = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .args(["-days", "2", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(cert)
            .stdin(Stdio::null())
            .output()
            .map_err(|err| format!("cannot run openssl to make a certificate: {err}"))?;
        if !output.status.success() {
            return Err(format!(
                "openssl could not make a certificate: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600))
            .map_err(|err| format!("cannot chmod {}: {err}", key.display()))?;
        if self.unprivileged {
            for path in [cert, &key] {
                std::os::unix::fs::chown(path, Some(UNPRIVILEGED), Some(UNPRIVILEGED))
                    .map_err(|err| format!("cannot chown {}: {err}", path.display()))?;
            }
        }
        Ok(())
    }

    fn initdb(&self) -> Result<(), String> {
        let mut initdb = self.bin.command("initdb");
        initdb
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync");
        let output = self
            .as_server_user(&mut initdb)
            .output()
            .map_err(|err| format!("cannot run initdb: {err}"))?;
        if !output.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(())
    }

    /// Runs `command` as the server's user, at home in the temporary directory.
    fn as_server_user<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        if self.unprivileged {
            // std drops the supplementary groups too when it changes the user from root.
            command.uid(UNPRIVILEGED).gid(UNPRIVILEGED);
        }
        command
            .env("HOME", self.dir.path())
            .current_dir(self.dir.path())
    }

    /// Starts `postgres` under its wrapper and reads the postmaster's pid.
    fn spawn(&mut self) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|err| format!("cannot open the server log: {err}"))?;
        let data = self.data_dir();
        let defaults = [
            ("listen_addresses", "127.0.0.1".to_owned()),
            ("unix_socket_directories", data.display().to_string()),
            ("shared_preload_libraries", "pg_stat_statements".to_owned()),
            ("max_connections", "300".to_owned()),
            ("ssl", "on".to_owned()),
            ("ssl_cert_file", self.certificate.display().to_string()),
            (
                "ssl_key_file",
                self.dir.path().join("server.key").display().to_string(),
            ),
        ];
        let options = self
            .options
            .iter()
            .map(|(name, value)| (name.as_str(), value.clone()));
        let settings = defaults.into_iter().chain(options);
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(WRAPPER)
            .arg("sh")
            .arg(self.dir.path())
            .arg(self.bin.program("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string()]);
        for (name, value) in settings {
            command.arg("-c").arg(format!("{name}={value}"));
        }
        let mut wrapper = self
            .as_server_user(&mut command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|err| format!("cannot run sh to start postgres: {err}"))?;
        let mut line = String::new();
        if let Some(stdout) = wrapper.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let stdin = wrapper.stdin.take();
        let Ok(postmaster) = line.trim().parse() else {
            drop(stdin);
            let _ = wrapper.wait();
            return Err(format!("the postgres wrapper printed no pid: {line:?}"));
        };
        self.running = Some(Running {
            wrapper,
            stdin,
            postmaster,
        });
        Ok(())
    }

    /// Waits until the postmaster reports itself ready in `postmaster.pid` (as `pg_ctl -w` does;
    /// unlike a probe of the port, that cannot be another server that took the port first).
    fn wait_ready(&mut self, deadline: Instant) -> Start {
        let pid_file = self.data_dir().join("postmaster.pid");
        loop {
            let Some(running) = &mut self.running else {
                return Start::Exited;
            };
            if let Ok(contents) = fs::read_to_string(&pid_file) {
                let lines: Vec<&str> = contents.lines().map(str::trim).collect();
                let ours = lines.first() == Some(&running.postmaster.to_string().as_str());
                if ours && lines.get(7) == Some(&"ready") {
                    return Start::Ready;
                }
            }
            if !matches!(running.wrapper.try_wait(), Ok(None)) {
                return Start::Exited;
            }
            if Instant::now() >= deadline {
                return Start::TimedOut;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether a start that failed with `log` is worth another try: after a SIGKILL the old
    /// postmaster's backends may hold its shared memory for a moment, and its pid may have been
    /// reused by another process, which makes `postmaster.pid` look live (the postmaster is known
    /// dead here, so the file goes).
    fn may_retry(&self, log: &str) -> bool {
        if log.contains("lock file \"postmaster.pid\" already exists") {
            return fs::remove_file(self.data_dir().join("postmaster.pid")).is_ok();
        }
        log.contains("pre-existing shared memory block")
    }

    fn log_since(&self, offset: u64) -> String {
        let log = fs::read(self.log_path()).unwrap_or_default();
        let start = usize::try_from(offset).map_or(log.len(), |start| start.min(log.len()));
        String::from_utf8_lossy(&log[start..]).into_owned()
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh temporary directory, and whether this process is root (then it belongs to
/// [`UNPRIVILEGED`], and lies where that user can reach it: `/tmp` if `TMPDIR`'s parents are not
/// searchable by others).
fn temporary_directory() -> Result<(tempfile::TempDir, bool), String> {
    let make = |base: &Path| {
        tempfile::Builder::new()
            .prefix("session-archive-pg-")
            .tempdir_in(base)
            .map_err(|err| {
                format!(
                    "cannot make a temporary directory in {}: {err}",
                    base.display()
                )
            })
    };
    let mut dir = make(&std::env::temp_dir())?;
    let owner = fs::metadata(dir.path())
        .map_err(|err| format!("cannot stat {}: {err}", dir.path().display()))?
        .uid();
    if owner != 0 {
        return Ok((dir, false));
    }
    let reachable = dir.path().ancestors().skip(1).all(|parent| {
        fs::metadata(parent).is_ok_and(|meta| meta.permissions().mode() & 0o001 != 0)
    });
    if !reachable {
        dir = make(Path::new("/tmp"))?;
    }
    std::os::unix::fs::chown(dir.path(), Some(UNPRIVILEGED), Some(UNPRIVILEGED))
        .map_err(|err| format!("cannot chown {}: {err}", dir.path().display()))?;
    Ok((dir, true))
}

/// Sends signal `name` to `pid` (with the shell's `kill`, as the crate forbids unsafe code).
fn signal(pid: u32, name: &str) {
    let _ = Command::new("sh")
        .args(["-c", r#"kill -s "$1" "$2" 2>/dev/null"#, "sh", name])
        .arg(pid.to_string())
        .status();
}

fn run_psql(bin: &Binaries, url: &str, sql: &str) -> Result<String, String> {
    let output = bin
        .command("psql")
        // No psqlrc, no command tags, unaligned tuples only, stop at the first error.
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(["-d", url, "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .map_err(|err| format!("cannot run psql: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "psql failed on {sql:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(stdout.strip_suffix('\n').unwrap_or(&stdout).to_owned())
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
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

/// The server shared by this test binary: `ARCHIVE_POSTGRES_URL`, or one started here.
pub struct Shared {
    url: String,
    local: Option<LocalServer>,
    bin: Binaries,
}

impl Shared {
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server when it was started here (not with `ARCHIVE_POSTGRES_URL`).
    pub fn local(&self) -> Option<&LocalServer> {
        self.local.as_ref()
    }

    /// [`LocalServer::psql`] on the shared server, whichever it is.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        run_psql(&self.bin, &self.url, sql)
    }
}

/// The server shared by this test binary: `ARCHIVE_POSTGRES_URL`, or a server started once and
/// kept (as a static, it is never dropped; it exits with this process, and its directory goes).
pub fn shared() -> Result<&'static Shared, String> {
    static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();
    let shared = SHARED.get_or_init(|| {
        if let Ok(url) = std::env::var("ARCHIVE_POSTGRES_URL") {
            let bin = Binaries::find();
            return Ok(Shared {
                url,
                local: None,
                bin,
            });
        }
        let server = LocalServer::start()
            .map_err(|reason| format!("ARCHIVE_POSTGRES_URL is not set and {reason}"))?;
        Ok(Shared {
            url: server.url(),
            bin: server.bin.clone(),
            local: Some(server),
        })
    });
    shared.as_ref().map_err(Clone::clone)
}

/// The URL of [`shared`].
pub fn shared_url() -> Result<String, String> {
    shared().map(|shared| shared.url.clone())
}

/// Turns "no server" into a skip with a notice, or into a failure under
/// `ARCHIVE_POSTGRES_REQUIRED=1`.
pub fn or_skip<T>(server: Result<T, String>) -> Option<T> {
    static NOTICE: Once = Once::new();
    match server {
        Ok(server) => Some(server),
        Err(reason) => {
            assert!(
                std::env::var("ARCHIVE_POSTGRES_REQUIRED").as_deref() != Ok("1"),
                "ARCHIVE_POSTGRES_REQUIRED=1, but {reason}"
            );
            NOTICE.call_once(|| {
                // Written to stderr directly, past the test harness's output capture.
                let _ = writeln!(
                    std::io::stderr(),
                    "NOTICE: skipping the PostgreSQL tests: {reason}. Set ARCHIVE_POSTGRES_URL or \
                     install postgresql to run them."
                );
            });
            None
        }
    }
}

/// Whether the shared server is there; the conformance tests run only then.
pub fn server_ready() -> bool {
    or_skip(shared()).is_some()
}

/// A fresh table name, `t_` and 12 hex digits, so that tests can share one server.
pub fn unique_table() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("t_{}", &id[..12])
}
