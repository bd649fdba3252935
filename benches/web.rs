//! Web benchmark: the welcome app's `GET /` (a read-modify-write of the visitor's session that
//! counts the visit) served in-process by axum on loopback, driven by N concurrent keep-alive
//! HTTP/1.1 clients, for each session backend and for tower-sessions as the peer, with its
//! `MemoryStore`, on SQLite (WAL, `synchronous=FULL`), over this crate's `ArchiveStore`, and
//! (tower-sessions 0.14) with its published Redis store. The same handler on actix-web: this
//! crate's middleware on memory and Redis, and actix-session 0.11 as its peer, with its Redis
//! store and its cookie store. Every Redis app shares one redis-server without persistence:
//! `ARCHIVE_REDIS_URL`, or one the benchmark starts on loopback.
//!
//! On PostgreSQL, this crate's layer over `PostgresArchive` (`postgres`) and, as the peer,
//! tower-sessions 0.14 with its published sqlx store (`tower-sqlx`, `tower-sessions-sqlx-store`
//! 0.15's `PostgresStore`) share one server: `ARCHIVE_POSTGRES_URL`, or one the benchmark starts
//! on loopback with `tests/support/postgres_server.rs` (the server's defaults: `fsync` and
//! `synchronous_commit` on). Both get the same pool size, `--pg-pool` (default 16, the
//! archive's default). The peer cannot be linked into this benchmark (sqlx's lock-file entry
//! for SQLite clashes with rusqlite's), so it is a package of its own,
//! `benches/web/sqlx-peer`, which the benchmark builds (under `target/sqlx-peer`) and runs as a
//! child process that stops with it; its CPU time counts with the benchmark's. On PostgreSQL,
//! each run also reports the statements per request the server ran (`pg_stat_statements`,
//! top-level statements, over the whole run, warm-up included).
//!
//! ```sh
//! cargo bench --features axum,tower-sessions,archive-redis,archive-postgres --bench web               # 6 minutes
//! cargo bench --features axum,tower-sessions,archive-redis,archive-postgres --bench web -- --rounds 3 # medians
//! cargo bench --features axum,tower-sessions,archive-redis,archive-postgres --bench web -- --test     # a few each
//! ```
//!
//! Options (after `--`): `--secs S` measured seconds per run (default 5), `--warmup S` (default 1),
//! `--conns 8,64`, `--pool N` existing sessions (default 1000), `--rounds R` (default 1),
//! `--apps memory,redb,redb-unsynced,tower-memory,tower-sqlite,tower-redb,redis,tower-redis,`
//! `postgres,tower-sqlx,actix-memory,actix-redis,actix-session-redis,actix-session-cookie`,
//! `--pg-pool N` connections of each PostgreSQL app (default 16),
//! `--only spread` or `--only hot`, and `--serve APP SECS FILE`, which only serves APP for SECS seconds after
//! writing its pool's cookies to FILE, one a line, for a cross-check with an outside load
//! generator. Over redb, each run also reports how many updates shared a commit and how much of
//! the time the file's one writer was busy (`RedbArchive::commit_stats`).
//!
//! For every app: the server gets a runtime of its own (tokio's default, one worker per core;
//! actix-web's default, one single-threaded worker runtime per core) and a pool of sessions created through its own `GET /`; then, for each connection count, a
//! **spread** run (each request carries the cookie of the next session of the pool) and a **hot**
//! run (every request carries one session's cookie). The clients run on one thread of their own,
//! like one `wrk` thread, and cost the same for every app. Each run reports requests/s, the
//! median and 99th-percentile latency, the non-200 answers, and for the hot run the **lost
//! updates**: each `GET /` adds one visit and answers the count, so the count read after the run
//! must equal the count read before it plus the 200 answers in between, plus one.
//!
//! Only loopback traffic; every run stops by itself after its time, and each request gives up
//! after [`REQUEST_TIMEOUT`].

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use session_archive::actix::SessionMiddleware as ActixMiddleware;
use session_archive::archive::redb::{CommitStats, Durability};
use session_archive::axum::{Session, SessionError, SessionLayer};
use session_archive::tower_sessions::ArchiveStore;
use session_archive::{MemoryArchive, PostgresArchive, RedbArchive, RedisArchive, Sessions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "web/sqlite_store.rs"]
mod sqlite_store;

#[path = "../tests/support/redis_server.rs"]
mod redis_server;

#[path = "../tests/support/postgres_server.rs"]
mod postgres_server;

/// The longest one request may take before the run counts it as failed and moves on.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One visitor's state, as in `examples/welcome.rs`.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Welcome {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Visits")]
    visits: u64,
}

/// `GET /` of `examples/welcome.rs`: counts the visit atomically and greets the visitor.
async fn welcome(mut session: Session<Welcome>) -> Result<String, SessionError> {
    let (name, visits) = session
        .update(|state| {
            state.visits += 1;
            (state.name.clone(), state.visits)
        })
        .await?;
    let name = if name.is_empty() { "World" } else { &name };
    Ok(format!("Hello {name}! Visit #{visits}"))
}

/// The key the tower-sessions handler keeps its state under.
const TOWER_KEY: &str = "welcome";

/// The same handler written the tower-sessions way: get, change, insert (saved by its layer), for
/// a `Session` of tower-sessions 0.15 or 0.14.
macro_rules! welcome_tower {
    ($name:ident, $session:ty) => {
        async fn $name(session: $session) -> Result<String, StatusCode> {
            let mut state: Welcome = session
                .get(TOWER_KEY)
                .await
                .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
                .unwrap_or_default();
            state.visits += 1;
            session
                .insert(TOWER_KEY, &state)
                .await
                .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
            let name = if state.name.is_empty() {
                "World"
            } else {
                &state.name
            };
            Ok(format!("Hello {name}! Visit #{}", state.visits))
        }
    };
}

welcome_tower!(welcome_tower, tower_sessions::Session);
welcome_tower!(welcome_tower_014, tower_sessions_014::Session);

/// The same handler written the actix-session way: get, change, insert (saved by its
/// middleware at the end of the request).
async fn welcome_actix_session(
    session: actix_session::Session,
) -> Result<String, actix_web::Error> {
    let mut state: Welcome = session.get(TOWER_KEY)?.unwrap_or_default();
    state.visits += 1;
    session.insert(TOWER_KEY, &state)?;
    let name = if state.name.is_empty() {
        "World"
    } else {
        &state.name
    };
    Ok(format!("Hello {name}! Visit #{}", state.visits))
}

/// The apps under comparison.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum App {
    /// This crate's layer over `MemoryArchive`.
    Memory,
    /// This crate's layer over `RedbArchive`, durable (one fsync per group commit).
    Redb,
    /// The same over `RedbArchive` with `Durability::None`: not durable, a reference for what
    /// the durable app would do if its fsyncs were free.
    RedbUnsynced,
    /// tower-sessions 0.15 with its `MemoryStore`.
    TowerMemory,
    /// tower-sessions 0.15 on SQLite (WAL, `synchronous=FULL`): the durable peer.
    TowerSqlite,
    /// tower-sessions 0.15 over this crate's `ArchiveStore` on a durable `RedbArchive`: what a
    /// tower-sessions app gets by switching its store.
    TowerRedb,
    /// This crate's layer over `RedisArchive`, on the benchmark's redis-server.
    Redis,
    /// tower-sessions 0.14 with its published Redis store (`tower-sessions-redis-store` 0.16, a
    /// fred pool of 6), on the same server: the peer on Redis.
    TowerRedis,
    /// This crate's layer over `PostgresArchive`, on the benchmark's PostgreSQL server, with a
    /// pool of `--pg-pool` connections.
    Postgres,
    /// tower-sessions 0.14 with its published sqlx store (`tower-sessions-sqlx-store` 0.15's
    /// `PostgresStore`, a sqlx pool of `--pg-pool`), on the same server, in a process of its own
    /// (`benches/web/sqlx-peer`): the peer on PostgreSQL.
    TowerSqlx,
    /// This crate's actix-web middleware over `MemoryArchive`, the same handler (`welcome`).
    ActixMemory,
    /// This crate's actix-web middleware over `RedisArchive`, on the benchmark's redis-server.
    ActixRedis,
    /// actix-session 0.11 with its Redis store (`RedisSessionStore`, one connection manager), on
    /// the same server: the actix peer on Redis.
    ActixSessionRedis,
    /// actix-session 0.11 with its cookie store: the state in the (encrypted) cookie itself, no
    /// server-side storage at all, the least work actix-session can do.
    ActixSessionCookie,
}

impl App {
    fn name(self) -> &'static str {
        match self {
            App::Memory => "memory",
            App::Redb => "redb",
            App::RedbUnsynced => "redb-unsynced",
            App::TowerMemory => "tower-memory",
            App::TowerSqlite => "tower-sqlite",
            App::TowerRedb => "tower-redb",
            App::Redis => "redis",
            App::TowerRedis => "tower-redis",
            App::Postgres => "postgres",
            App::TowerSqlx => "tower-sqlx",
            App::ActixMemory => "actix-memory",
            App::ActixRedis => "actix-redis",
            App::ActixSessionRedis => "actix-session-redis",
            App::ActixSessionCookie => "actix-session-cookie",
        }
    }

    /// Whether actix-web serves this app (else axum).
    fn is_actix(self) -> bool {
        matches!(
            self,
            App::ActixMemory | App::ActixRedis | App::ActixSessionRedis | App::ActixSessionCookie
        )
    }

    fn parse(name: &str) -> Option<App> {
        ALL_APPS.into_iter().find(|app| app.name() == name)
    }

    /// Whether the app is served by a child process ([`sqlx_peer`]) rather than in-process.
    fn is_child(self) -> bool {
        self == App::TowerSqlx
    }

    /// Whether the app stores its sessions on the benchmark's PostgreSQL server.
    fn on_postgres(self) -> bool {
        matches!(self, App::Postgres | App::TowerSqlx)
    }

    /// The router, what must outlive the server (the redb file's directory), and the redb
    /// archive, whose commits each run counts. A store that connects on its own tasks (fred's
    /// pool) connects on `runtime`, the server's. `pg_pool` is the PostgreSQL app's pool size.
    fn router(
        self,
        runtime: &tokio::runtime::Runtime,
        pg_pool: usize,
    ) -> (Router, Option<tempfile::TempDir>, Option<Arc<RedbArchive>>) {
        match self {
            App::Memory => {
                let sessions = Sessions::builder(MemoryArchive::new())
                    .secure(false)
                    .build();
                (
                    Router::new()
                        .route("/", get(welcome))
                        .layer(SessionLayer::new(sessions)),
                    None,
                    None,
                )
            }
            App::Redb | App::RedbUnsynced => {
                let (dir, archive) = redb_archive(if self == App::Redb {
                    Durability::Immediate
                } else {
                    Durability::None
                });
                let sessions = Sessions::builder(Arc::clone(&archive))
                    .secure(false)
                    .build();
                (
                    Router::new()
                        .route("/", get(welcome))
                        .layer(SessionLayer::new(sessions)),
                    Some(dir),
                    Some(archive),
                )
            }
            App::TowerMemory => {
                let store = tower_sessions::MemoryStore::default();
                let layer = tower_sessions::SessionManagerLayer::new(store).with_secure(false);
                (
                    Router::new().route("/", get(welcome_tower)).layer(layer),
                    None,
                    None,
                )
            }
            App::TowerSqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let store = sqlite_store::SqliteStore::open(&dir.path().join("sessions.sqlite"))
                    .expect("sqlite");
                let layer = tower_sessions::SessionManagerLayer::new(store).with_secure(false);
                (
                    Router::new().route("/", get(welcome_tower)).layer(layer),
                    Some(dir),
                    None,
                )
            }
            App::TowerRedb => {
                let (dir, archive) = redb_archive(Durability::Immediate);
                let store = ArchiveStore::new(Arc::clone(&archive));
                let layer = tower_sessions::SessionManagerLayer::new(store).with_secure(false);
                (
                    Router::new().route("/", get(welcome_tower)).layer(layer),
                    Some(dir),
                    Some(archive),
                )
            }
            App::Redis => {
                let sessions = Sessions::builder(redis_archive()).secure(false).build();
                (
                    Router::new()
                        .route("/", get(welcome))
                        .layer(SessionLayer::new(sessions)),
                    None,
                    None,
                )
            }
            App::TowerRedis => (tower_redis_router(runtime), None, None),
            App::Postgres => (postgres_router(pg_pool), None, None),
            App::TowerSqlx => unreachable!("the sqlx peer runs in a child process"),
            _ => unreachable!("actix-web apps are served by serve_actix"),
        }
    }

    /// An actix-web app's server on `listener`, with actix-web's default workers (one per
    /// core), not started yet.
    async fn actix_server(
        self,
        listener: std::net::TcpListener,
    ) -> std::io::Result<actix_web::dev::Server> {
        use actix_web::{App as ActixApp, HttpServer, web};
        let server = match self {
            App::ActixSessionRedis => {
                let store = actix_session::storage::RedisSessionStore::new(redis_url())
                    .await
                    .map_err(std::io::Error::other)?;
                actix_session_server(move || store.clone(), listener)?
            }
            App::ActixSessionCookie => actix_session_server(
                actix_session::storage::CookieSessionStore::default,
                listener,
            )?,
            _ => {
                let sessions = if self == App::ActixRedis {
                    Sessions::builder(redis_archive())
                } else {
                    Sessions::builder(MemoryArchive::new())
                };
                let middleware = ActixMiddleware::new(sessions.secure(false).build());
                HttpServer::new(move || {
                    ActixApp::new()
                        .wrap(middleware.clone())
                        .route("/", web::get().to(welcome))
                })
                .listen(listener)?
                .run()
            }
        };
        Ok(server)
    }
}

/// actix-session's middleware over the stores `store` makes (one a worker), with the welcome
/// handler written its way, on `listener`.
fn actix_session_server<S: actix_session::storage::SessionStore + 'static>(
    store: impl Fn() -> S + Clone + Send + 'static,
    listener: std::net::TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    let key = actix_web::cookie::Key::generate();
    let server = actix_web::HttpServer::new(move || {
        let middleware = actix_session::SessionMiddleware::builder(store(), key.clone())
            .cookie_secure(false)
            .build();
        actix_web::App::new()
            .wrap(middleware)
            .route("/", actix_web::web::get().to(welcome_actix_session))
    });
    Ok(server.listen(listener)?.run())
}

/// tower-sessions 0.14 with its published Redis store, a fred pool of 6 connected on `runtime`,
/// the server's.
fn tower_redis_router(runtime: &tokio::runtime::Runtime) -> Router {
    use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
    let config = Config::from_url(&redis_url()).expect("a Redis URL");
    let pool = Pool::new(config, None, None, None, 6).expect("a fred pool");
    runtime.block_on(async {
        drop(pool.connect());
        pool.wait_for_connect().await.expect("fred connects");
    });
    let store = tower_sessions_redis_store::RedisStore::new(pool);
    let layer = tower_sessions_014::SessionManagerLayer::new(store).with_secure(false);
    Router::new()
        .route("/", get(welcome_tower_014))
        .layer(layer)
}

/// A `RedisArchive` on the benchmark's redis-server, under a prefix of its own.
fn redis_archive() -> RedisArchive {
    RedisArchive::builder(redis_url())
        .prefix(format!("bench-{}", uuid::Uuid::new_v4().simple()))
        .open()
        .expect("the benchmark's redis-server")
}

/// The welcome app over a `PostgresArchive` with a pool of `pg_pool` connections, in a fresh
/// table of the benchmark's server.
fn postgres_router(pg_pool: usize) -> Router {
    let archive = PostgresArchive::builder(&postgres_url())
        .table(&fresh_table())
        .pool_size(pg_pool)
        .connect()
        .expect("the benchmark's PostgreSQL server");
    let sessions = Sessions::builder(archive).secure(false).build();
    Router::new()
        .route("/", get(welcome))
        .layer(SessionLayer::new(sessions))
}

/// A fresh `RedbArchive` with `durability`, in a temporary directory that must outlive it.
fn redb_archive(durability: Durability) -> (tempfile::TempDir, Arc<RedbArchive>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let archive = RedbArchive::builder()
        .durability(durability)
        .open(dir.path().join("sessions.redb"))
        .expect("redb");
    (dir, Arc::new(archive))
}

/// The URL of the benchmark's redis-server: `ARCHIVE_REDIS_URL`, or one started on a free
/// loopback port without persistence, shared by both Redis apps and stopped when the benchmark
/// ends.
fn redis_url() -> String {
    redis_server::shared_url()
        .unwrap_or_else(|why| panic!("the Redis apps need a redis-server: {why}"))
}

/// The URL of the benchmark's PostgreSQL server: `ARCHIVE_POSTGRES_URL`, or one started on a
/// free loopback port with the server's defaults (`fsync` and `synchronous_commit` on), shared by
/// both PostgreSQL apps and stopped when the benchmark ends.
fn postgres_url() -> String {
    postgres_server::shared_url()
        .unwrap_or_else(|why| panic!("the PostgreSQL apps need a server: {why}"))
}

/// A table name of its own for each PostgreSQL app and round, `bench_` and 12 hex digits.
fn fresh_table() -> String {
    format!("bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// The top-level statements the PostgreSQL server has run since the last reset, from
/// `pg_stat_statements` (`None` when it is not there, as on a server without the extension).
fn statements_run() -> Option<u64> {
    let shared = postgres_server::shared().ok()?;
    shared
        .psql("SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Resets `pg_stat_statements`; [`statements_run`] then counts from zero.
fn reset_statements() {
    if let Ok(shared) = postgres_server::shared() {
        let _ = shared.psql("SELECT pg_stat_statements_reset()");
    }
}

/// The sqlx peer, `benches/web/sqlx-peer`: built once (with the cargo that runs this
/// benchmark, under `target/sqlx-peer`) and run as a child that serves the welcome handler on
/// tower-sessions 0.14 with `tower-sessions-sqlx-store`'s `PostgresStore`.
mod sqlx_peer {
    use std::io::{BufRead, BufReader};
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    /// A running peer. It stops when its stdin closes, which dropping this does (and so does
    /// this process's end, however it ends), or after the time it was given.
    pub struct Peer {
        pub addr: SocketAddr,
        child: Child,
    }

    impl Peer {
        pub fn pid(&self) -> u32 {
            self.child.id()
        }
    }

    impl Drop for Peer {
        fn drop(&mut self) {
            drop(self.child.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
    }

    /// The peer's binary, built on first use.
    fn binary() -> &'static PathBuf {
        static BINARY: OnceLock<PathBuf> = OnceLock::new();
        BINARY.get_or_init(|| {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let target = root.join("target/sqlx-peer");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            eprintln!("building the sqlx peer (benches/web/sqlx-peer) ...");
            let status = Command::new(cargo)
                .args(["build", "--release", "--quiet", "--manifest-path"])
                .arg(root.join("benches/web/sqlx-peer/Cargo.toml"))
                .arg("--target-dir")
                .arg(&target)
                .stdin(Stdio::null())
                .status()
                .expect("run cargo to build the sqlx peer");
            assert!(status.success(), "the sqlx peer did not build");
            target.join("release/session-archive-sqlx-peer")
        })
    }

    /// Starts a peer on `url` with a pool of `pool` connections and a fresh table, serving for
    /// `max_secs` at most.
    pub fn start(url: &str, pool: usize, table: &str, max_secs: f64) -> Peer {
        let mut child = Command::new(binary())
            .arg(url)
            .arg(pool.to_string())
            .arg(table)
            .arg(max_secs.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the sqlx peer");
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|addr| addr.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the sqlx peer did not start: {line:?}");
        };
        Peer { addr, child }
    }
}

/// Every app, in the order they run.
const ALL_APPS: [App; 14] = [
    App::Memory,
    App::Redb,
    App::RedbUnsynced,
    App::TowerMemory,
    App::TowerSqlite,
    App::TowerRedb,
    App::Redis,
    App::TowerRedis,
    App::Postgres,
    App::TowerSqlx,
    App::ActixMemory,
    App::ActixSessionCookie,
    App::ActixRedis,
    App::ActixSessionRedis,
];

struct Options {
    secs: f64,
    warmup: f64,
    conns: Vec<usize>,
    pool: usize,
    rounds: usize,
    apps: Vec<App>,
    /// The connections of each PostgreSQL app's pool.
    pg_pool: usize,
    /// `--serve APP SECS FILE`: only serve APP for SECS seconds, after writing the cookies of a
    /// fresh pool to FILE, one a line, for an outside load generator (`wrk`) to cross-check.
    serve: Option<(App, f64, String)>,
    /// Which runs: spread, hot, or both.
    spread: bool,
    hot: bool,
}

fn options() -> Options {
    let mut options = Options {
        secs: 5.0,
        warmup: 1.0,
        conns: vec![8, 64],
        pool: 1000,
        rounds: 1,
        apps: ALL_APPS.to_vec(),
        pg_pool: 16,
        spread: true,
        hot: true,
        serve: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--secs" => options.secs = value().parse().expect("--secs: seconds"),
            "--warmup" => options.warmup = value().parse().expect("--warmup: seconds"),
            "--pool" => options.pool = value().parse().expect("--pool: a count"),
            "--rounds" => options.rounds = value().parse().expect("--rounds: a count"),
            "--pg-pool" => options.pg_pool = value().parse().expect("--pg-pool: a count"),
            "--conns" => {
                options.conns = value()
                    .split(',')
                    .map(|n| n.parse().expect("--conns: counts, comma-separated"))
                    .collect();
            }
            "--apps" => {
                options.apps = value()
                    .split(',')
                    .map(|name| App::parse(name).unwrap_or_else(|| panic!("unknown app {name}")))
                    .collect();
            }
            "--serve" => {
                let app = value();
                let app = App::parse(&app).unwrap_or_else(|| panic!("unknown app {app}"));
                let secs = value().parse().expect("--serve: seconds");
                options.serve = Some((app, secs, value()));
            }
            "--only" => match value().as_str() {
                "spread" => options.hot = false,
                "hot" => options.spread = false,
                other => panic!("--only: spread or hot, not {other}"),
            },
            "--test" => {
                options.secs = 0.2;
                options.warmup = 0.05;
                options.pool = 20;
                options.conns = vec![4];
            }
            // What cargo passes to every bench binary.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    options.rounds = options.rounds.max(1);
    options
}

/// One keep-alive HTTP/1.1 client connection.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// What a client keeps of a response.
struct Answer {
    status: u16,
    /// The `name=value` of the first `Set-Cookie`, if any.
    cookie: Option<String>,
    body: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends `GET /` with `cookie` (`name=value`) and reads the whole response.
    async fn get(&mut self, cookie: Option<&str>) -> std::io::Result<Answer> {
        let mut request = String::from("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        if let Some(cookie) = cookie {
            let _ = write!(request, "Cookie: {cookie}\r\n");
        }
        request.push_str("\r\n");
        self.stream.write_all(request.as_bytes()).await?;
        let head_end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| std::io::Error::other("response head is not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status line"))?;
        let mut length = 0;
        let mut cookie = None;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value
                    .parse()
                    .map_err(|_| std::io::Error::other("bad content-length"))?;
            } else if name.eq_ignore_ascii_case("set-cookie") && cookie.is_none() {
                cookie = value.split(';').next().map(str::to_owned);
            }
        }
        while self.buf.len() < head_end + length {
            self.fill().await?;
        }
        let body = self.buf[head_end..head_end + length].to_vec();
        self.buf.drain(..head_end + length);
        Ok(Answer {
            status,
            cookie,
            body,
        })
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0_u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// The visit count in a welcome body, `Hello …! Visit #n`.
fn visits(body: &[u8]) -> Option<u64> {
    let body = std::str::from_utf8(body).ok()?;
    body.rsplit_once('#')?.1.trim().parse().ok()
}

/// The CPU time this process has used so far (all threads, user and system), from
/// `/proc/self/stat` in clock ticks of 10 ms (Linux's `CLK_TCK` of 100), plus that of the child
/// `peer` serving the app, if any; `None` elsewhere.
fn cpu_time(peer: Option<u32>) -> Option<Duration> {
    let own = process_cpu_time("self")?;
    match peer {
        Some(pid) => Some(own + process_cpu_time(&pid.to_string())?),
        None => Some(own),
    }
}

/// The CPU time of process `pid` (or `self`) so far, from `/proc/PID/stat`.
fn process_cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces; the fields after it are plain.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// What one timed run measured.
#[derive(Clone)]
struct Measured {
    /// CPU time of the whole process (server and clients) per request, in µs. The clients cost
    /// every app the same, so differences between apps are the server's; unlike requests/s it
    /// hardly moves when other work shares the machine.
    cpu_us: f64,
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    failed: u64,
    /// Hot runs: acknowledged updates missing from the final count.
    lost: Option<i64>,
    /// Over redb: how many updates shared each commit, on average.
    writes_per_commit: Option<f64>,
    /// Over redb: the share of the measured time the file's one writer spent in transactions
    /// (fsync included). Near 1, the disk sets the pace.
    writer_busy: Option<f64>,
    /// On PostgreSQL: the top-level statements the server ran per 200 answer, over the whole
    /// run (warm-up included).
    statements: Option<f64>,
}

/// Drives `conns` connections for `warmup + secs`, each request carrying the cookie
/// `cookies[(start + i·conns) % len]`, and measures the last `secs` (and, over redb, what the
/// `redb` archive committed meanwhile; the CPU time includes the child process `peer`'s).
/// Returns the measurement and how many 200 answers came over the whole run (warm-up included).
async fn drive(
    addr: SocketAddr,
    conns: usize,
    cookies: Arc<Vec<String>>,
    (redb, peer): (Option<Arc<RedbArchive>>, Option<u32>),
    (warmup, secs): (Duration, Duration),
) -> (Measured, u64) {
    let begin = Instant::now();
    let measure_from = begin + warmup;
    let end = measure_from + secs;
    // The CPU clock and the commit counters start when the measured span does, read by a task
    // of its own.
    let clocks = tokio::spawn(async move {
        let commits = || redb.as_ref().map(|archive| archive.commit_stats());
        tokio::time::sleep_until(measure_from.into()).await;
        let (start, committed) = (cpu_time(peer), commits());
        tokio::time::sleep_until(end.into()).await;
        let cpu = start
            .zip(cpu_time(peer))
            .map(|(start, stop)| stop.saturating_sub(start));
        let committed = committed
            .zip(commits())
            .map(|(before, after): (CommitStats, CommitStats)| after.since(&before));
        (cpu, committed)
    });
    let mut tasks = Vec::with_capacity(conns);
    for c in 0..conns {
        let cookies = Arc::clone(&cookies);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut ok, mut failed) = (0_u64, 0_u64);
            let mut client = Client::connect(addr).await.expect("connect to the server");
            let mut next = c;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let cookie = &cookies[next % cookies.len()];
                next += conns;
                let answer = tokio::time::timeout(REQUEST_TIMEOUT, client.get(Some(cookie))).await;
                let done = Instant::now();
                let good = matches!(&answer, Ok(Ok(a)) if a.status == 200);
                ok += u64::from(good);
                if sent >= measure_from {
                    if good {
                        latencies.push(done.duration_since(sent));
                    } else {
                        failed += 1;
                    }
                }
                if !matches!(answer, Ok(Ok(_))) {
                    // A broken or stuck connection: start a fresh one.
                    client = Client::connect(addr)
                        .await
                        .expect("reconnect to the server");
                }
            }
            (latencies, ok, failed)
        }));
    }
    let mut latencies = Vec::new();
    let (mut ok, mut failed) = (0, 0);
    for task in tasks {
        let (l, o, f) = task.await.expect("client task");
        latencies.extend(l);
        ok += o;
        failed += f;
    }
    let (cpu, committed) = clocks.await.expect("clock task");
    latencies.sort_unstable();
    let quantile = |q: f64| {
        if latencies.is_empty() {
            return f64::NAN;
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into a sorted sample"
        )]
        let at = ((latencies.len() - 1) as f64 * q).round() as usize;
        latencies[at].as_secs_f64() * 1e3
    };
    #[expect(clippy::cast_precision_loss, reason = "a request count")]
    let per_sec = latencies.len() as f64 / secs.as_secs_f64();
    #[expect(clippy::cast_precision_loss, reason = "a request count")]
    let cpu_us = cpu.map_or(f64::NAN, |cpu| {
        cpu.as_secs_f64() * 1e6 / latencies.len().max(1) as f64
    });
    (
        Measured {
            cpu_us,
            per_sec,
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            failed,
            lost: None,
            writes_per_commit: committed.map(|span| span.writes_per_commit()),
            writer_busy: committed.map(|span| span.busy.as_secs_f64() / secs.as_secs_f64()),
            statements: None,
        },
        ok,
    )
}

/// Creates `n` sessions through the app's own `GET /` (first visits, no cookie), `conns` at a
/// time, and returns their cookies.
async fn create_sessions(addr: SocketAddr, n: usize, conns: usize) -> Vec<String> {
    let per_conn = n.div_ceil(conns.max(1));
    let mut tasks = Vec::new();
    for c in 0..conns.max(1) {
        let count = per_conn.min(n.saturating_sub(c * per_conn));
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await.expect("connect to the server");
            let mut cookies = Vec::with_capacity(count);
            for _ in 0..count {
                let answer = client.get(None).await.expect("a first visit");
                assert_eq!(answer.status, 200, "a first visit answers 200");
                cookies.push(
                    answer
                        .cookie
                        .expect("a first visit sets the session cookie"),
                );
            }
            cookies
        }));
    }
    let mut cookies = Vec::with_capacity(n);
    for task in tasks {
        cookies.extend(task.await.expect("session-creating task"));
    }
    cookies
}

/// The visit count of the session behind `cookie`, counting one more visit.
async fn count(addr: SocketAddr, cookie: &str) -> u64 {
    let mut client = Client::connect(addr).await.expect("connect to the server");
    let answer = client.get(Some(cookie)).await.expect("a visit");
    assert_eq!(answer.status, 200, "a visit answers 200");
    visits(&answer.body).expect("the body holds the visit count")
}

/// One row of results.
struct Row {
    app: App,
    hot: bool,
    conns: usize,
    measured: Vec<Measured>,
}

/// A server under test: where it listens, the redb archive whose commits each run counts, and
/// how to stop it (and drop what must outlive it).
struct Served {
    addr: SocketAddr,
    redb: Option<Arc<RedbArchive>>,
    /// The process serving the app when it is not this one (the sqlx peer), whose CPU time
    /// each run counts too.
    pid: Option<u32>,
    stop: Box<dyn FnOnce()>,
}

impl Served {
    fn start(app: App, options: &Options) -> Served {
        if app.is_actix() {
            return serve_actix(app);
        }
        if app.is_child() {
            return serve_child(options);
        }
        let server = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("the server's runtime");
        let (router, dir, redb) = app.router(&server, options.pg_pool);
        let listener = server
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = server.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        let archive = redb.clone();
        Served {
            addr,
            redb,
            pid: None,
            stop: Box::new(move || {
                let _ = stop.send(());
                server
                    .block_on(serving)
                    .expect("server task")
                    .expect("server");
                drop(server);
                drop(archive);
                drop(dir);
            }),
        }
    }
}

/// Serves an actix-web app on a thread of its own (actix-web's `System`, its workers on
/// threads of theirs).
fn serve_actix(app: App) -> Served {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().expect("the bound address");
    let (sent, received) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = app.actix_server(listener).await.expect("the actix server");
            sent.send(server.handle()).expect("the benchmark waits");
            server.await.expect("the actix server runs");
        });
    });
    let handle = received.recv().expect("the actix server starts");
    Served {
        addr,
        redb: None,
        pid: None,
        stop: Box::new(move || {
            actix_web::rt::System::new().block_on(handle.stop(true));
            thread.join().expect("the actix server's thread");
        }),
    }
}

/// Serves the sqlx peer from a child process, which stops by itself at the latest after every
/// run's time and ten minutes more.
fn serve_child(options: &Options) -> Served {
    #[expect(clippy::cast_precision_loss, reason = "a few connection counts")]
    let runs = (2 * options.conns.len()) as f64;
    let serve = options.serve.as_ref().map_or(0.0, |(_, secs, _)| *secs);
    let max_secs = runs * (options.warmup + options.secs) + serve + 600.0;
    let child = sqlx_peer::start(&postgres_url(), options.pg_pool, &fresh_table(), max_secs);
    Served {
        addr: child.addr,
        redb: None,
        pid: Some(child.pid()),
        stop: Box::new(move || drop(child)),
    }
}

/// Runs every measurement of one app, with its server up, and appends them to `rows`.
fn run_app(app: App, options: &Options, rows: &mut Vec<Row>) {
    let served = Served::start(app, options);
    let addr = served.addr;
    let watched = (served.redb.clone(), served.pid);

    // The clients: one thread, as one wrk thread.
    let clients = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the clients' runtime");
    let span = (
        Duration::from_secs_f64(options.warmup),
        Duration::from_secs_f64(options.secs),
    );
    // On PostgreSQL, the statements the server ran during a run, per 200 answer.
    let on_postgres = app.on_postgres();
    let counted = |run: &dyn Fn() -> (Measured, u64)| {
        if on_postgres {
            reset_statements();
        }
        let (mut measured, acked) = run();
        if on_postgres {
            #[expect(clippy::cast_precision_loss, reason = "statement and request counts")]
            let per_request = statements_run().map(|n| n as f64 / acked.max(1) as f64);
            measured.statements = per_request;
        }
        (measured, acked)
    };
    let cookies = Arc::new(clients.block_on(create_sessions(addr, options.pool, 16)));
    if let Some((_, secs, file)) = &options.serve {
        std::fs::write(file, cookies.join("\n") + "\n").expect("write the cookie file");
        println!("Listening on http://{addr}");
        std::thread::sleep(Duration::from_secs_f64(*secs));
    } else {
        for &conns in &options.conns {
            if options.spread {
                let (measured, _) = counted(&|| {
                    clients.block_on(drive(
                        addr,
                        conns,
                        Arc::clone(&cookies),
                        watched.clone(),
                        span,
                    ))
                });
                push(rows, app, false, conns, measured);
                report(app, false, conns, rows);
            }
            if !options.hot {
                continue;
            }
            let hot = clients.block_on(create_sessions(addr, 1, 1));
            let before = clients.block_on(count(addr, &hot[0]));
            let (mut measured, acked) = counted(&|| {
                clients.block_on(drive(
                    addr,
                    conns,
                    Arc::new(hot.clone()),
                    watched.clone(),
                    span,
                ))
            });
            let after = clients.block_on(count(addr, &hot[0]));
            #[expect(clippy::cast_possible_wrap, reason = "request counts")]
            let lost = (before + acked + 1) as i64 - after as i64;
            measured.lost = Some(lost);
            push(rows, app, true, conns, measured);
            report(app, true, conns, rows);
        }
    }
    drop(clients);
    drop(watched);
    (served.stop)();
}

fn push(rows: &mut Vec<Row>, app: App, hot: bool, conns: usize, measured: Measured) {
    match rows
        .iter_mut()
        .find(|row| row.app == app && row.hot == hot && row.conns == conns)
    {
        Some(row) => row.measured.push(measured),
        None => rows.push(Row {
            app,
            hot,
            conns,
            measured: vec![measured],
        }),
    }
}

fn sessions_label(hot: bool) -> &'static str {
    if hot { "hot" } else { "spread" }
}

/// Prints the latest measurement of a row as it comes in.
fn report(app: App, hot: bool, conns: usize, rows: &[Row]) {
    let Some(row) = rows
        .iter()
        .find(|row| row.app == app && row.hot == hot && row.conns == conns)
    else {
        return;
    };
    let Some(m) = row.measured.last() else {
        return;
    };
    eprintln!(
        "  {:<13} {:<6} {:>3} conns: {:>9.0} req/s  {:>5.0} cpu µs/req  p50 {:>6.2} ms  p99 {:>7.2} ms  failed {}{}{}{}",
        app.name(),
        sessions_label(hot),
        conns,
        m.per_sec,
        m.cpu_us,
        m.p50_ms,
        m.p99_ms,
        m.failed,
        m.lost.map(|l| format!("  lost {l}")).unwrap_or_default(),
        commits(m)
            .map(|commits| format!("  {commits}"))
            .unwrap_or_default(),
        m.statements
            .map(|n| format!("  {n:.2} statements/req"))
            .unwrap_or_default(),
    );
}

/// Over redb: updates per commit, and the share of the time the writer was busy.
fn commits(m: &Measured) -> Option<String> {
    let busy = m.writer_busy?;
    Some(format!(
        "{:.1} per commit, writer busy {:.0}%",
        m.writes_per_commit?,
        busy * 100.0
    ))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let options = options();
    let mut rows = Vec::new();
    if let Some((app, _, _)) = options.serve {
        run_app(app, &options, &mut rows);
        return;
    }
    for round in 1..=options.rounds {
        eprintln!("round {round} of {}", options.rounds);
        for &app in &options.apps {
            run_app(app, &options, &mut rows);
        }
    }

    print_table(&rows);
    print_ratios(&rows, &options.conns);
}

/// The medians of every run, one row per app, sessions and connection count.
fn print_table(rows: &[Row]) {
    println!(
        "\n| app | sessions | conns | req/s | CPU µs/req | p50 ms | p99 ms | failed | lost updates | commits (redb), statements/req (postgres) |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for row in rows {
        let lost = row
            .measured
            .iter()
            .filter_map(|m| m.lost)
            .map(|l| l.to_string())
            .collect::<Vec<_>>();
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {} | {} |",
            row.app.name(),
            sessions_label(row.hot),
            row.conns,
            metric(row, |m| m.per_sec),
            metric(row, |m| m.cpu_us),
            metric(row, |m| m.p50_ms),
            metric(row, |m| m.p99_ms),
            row.measured.iter().map(|m| m.failed).sum::<u64>(),
            if lost.is_empty() {
                "-".to_owned()
            } else {
                lost.join(", ")
            },
            commit_medians(row),
        );
    }
}

/// Over redb, the medians of [`commits`]; on PostgreSQL, of the statements per request; `-`
/// for the other apps.
fn commit_medians(row: &Row) -> String {
    let median_of = |f: fn(&Measured) -> Option<f64>| {
        let values: Option<Vec<f64>> = row.measured.iter().map(f).collect();
        values.filter(|values| !values.is_empty()).map(median)
    };
    if let Some(statements) = median_of(|m| m.statements) {
        return format!("{statements:.2} statements/req");
    }
    let medians = Measured {
        writes_per_commit: median_of(|m| m.writes_per_commit),
        writer_busy: median_of(|m| m.writer_busy),
        ..row.measured[0].clone()
    };
    commits(&medians).unwrap_or_else(|| "-".to_owned())
}

/// Ratios against the peers and against the spread run, from the medians.
fn print_ratios(rows: &[Row], conns: &[usize]) {
    // Ratios against the peer and against the spread run, from the medians above.
    let rate = |app: App, hot: bool, conns: usize| {
        rows.iter()
            .find(|row| row.app == app && row.hot == hot && row.conns == conns)
            .map(|row| metric(row, |m| m.per_sec))
    };
    let cpu = |app: App, conns: usize| {
        rows.iter()
            .find(|row| row.app == app && !row.hot && row.conns == conns)
            .map(|row| metric(row, |m| m.cpu_us))
    };
    // Per round: one round's apps ran minutes apart at most, so their ratio is the fair one.
    let round_ratios = |app: App, conns: usize| {
        let find = |app: App| {
            rows.iter()
                .find(|row| row.app == app && !row.hot && row.conns == conns)
        };
        match (find(app), find(App::TowerMemory)) {
            (Some(ours), Some(peer)) => ours
                .measured
                .iter()
                .zip(&peer.measured)
                .map(|(o, p)| format!("{:.2}", o.per_sec / p.per_sec))
                .collect::<Vec<_>>()
                .join(", "),
            _ => String::new(),
        }
    };
    println!("\n| ratio | conns | value |\n|---|---|---|");
    for &conns in conns {
        let peer = rate(App::TowerMemory, false, conns);
        for app in [App::Memory, App::Redb] {
            if let (Some(ours), Some(peer)) = (rate(app, false, conns), peer) {
                println!(
                    "| {} ÷ tower-memory req/s (spread; medians; per round {}) | {conns} | {:.2}× |",
                    app.name(),
                    round_ratios(app, conns),
                    ours / peer
                );
            }
            if let (Some(ours), Some(peer)) = (cpu(app, conns), cpu(App::TowerMemory, conns)) {
                println!(
                    "| tower-memory ÷ {} CPU per request (spread) | {conns} | {:.2}× |",
                    app.name(),
                    peer / ours
                );
            }
            if let (App::Redb, Some(ours), Some(sqlite)) = (
                app,
                rate(app, false, conns),
                rate(App::TowerSqlite, false, conns),
            ) {
                println!(
                    "| redb ÷ tower-sqlite req/s (spread; medians) | {conns} | {:.2}× |",
                    ours / sqlite
                );
            }
            if let (Some(hot), Some(spread)) = (rate(app, true, conns), rate(app, false, conns)) {
                println!(
                    "| {} hot ÷ {} spread | {conns} | {:.2}× |",
                    app.name(),
                    app.name(),
                    hot / spread
                );
            }
        }
        let pairs = [
            (App::Redis, App::TowerRedis),
            (App::ActixRedis, App::ActixSessionRedis),
            (App::ActixMemory, App::ActixSessionCookie),
            (App::ActixMemory, App::Memory),
        ];
        for (ours, peer) in pairs {
            for hot in [false, true] {
                if let (Some(a), Some(b)) = (rate(ours, hot, conns), rate(peer, hot, conns)) {
                    println!(
                        "| {} ÷ {} req/s ({}; medians) | {conns} | {:.2}× |",
                        ours.name(),
                        peer.name(),
                        sessions_label(hot),
                        a / b
                    );
                }
            }
        }
        for hot in [false, true] {
            let per_round = pair_ratios(rows, App::Postgres, App::TowerSqlx, hot, conns);
            if let (Some(ours), Some(peer)) = (
                rate(App::Postgres, hot, conns),
                rate(App::TowerSqlx, hot, conns),
            ) {
                println!(
                    "| postgres ÷ tower-sqlx req/s ({}; medians; per round {per_round}) | {conns} | {:.2}× |",
                    sessions_label(hot),
                    ours / peer
                );
            }
        }
    }
}

/// The ratios of `ours` to `peer` req/s, round by round (one round's apps ran minutes apart at
/// most), comma-separated.
fn pair_ratios(rows: &[Row], ours: App, peer: App, hot: bool, conns: usize) -> String {
    let find = |app: App| {
        rows.iter()
            .find(|row| row.app == app && row.hot == hot && row.conns == conns)
    };
    match (find(ours), find(peer)) {
        (Some(ours), Some(peer)) => ours
            .measured
            .iter()
            .zip(&peer.measured)
            .map(|(o, p)| format!("{:.2}", o.per_sec / p.per_sec))
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    }
}

/// The median over a row's rounds of one measure.
fn metric(row: &Row, f: fn(&Measured) -> f64) -> f64 {
    median(row.measured.iter().map(f).collect())
}
