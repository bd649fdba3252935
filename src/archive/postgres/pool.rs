//! The connections of a [`PostgresArchive`](super::PostgresArchive): a runtime of the archive's
//! own drives them, a pool lends them out, and every call is one prepared statement.
//!
//! The `Archive` trait is synchronous, and its async paths must not depend on the caller's
//! executor, so each call is a task spawned on the archive's runtime. A blocking call waits for
//! the task's answer by parking its thread; an async call awaits the task's handle, which any
//! executor can poll. Either way, the work of a call happens where its connection is driven.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::schema::{Stmt, Table};
use crate::archive::block_on::block_on;
use crate::error::{BoxError, Error, Result};

/// The parameters of one statement, owned so that the task that sends them can outlive the call.
pub(super) type Params = Vec<Box<dyn ToSql + Send + Sync>>;

/// What a statement answered, as [`Pool::query_async_then`] shows it: its rows, or the source
/// of its error.
pub(super) type Answer<'a> = std::result::Result<&'a [Row], &'a (dyn std::error::Error + 'static)>;

/// How much longer than the server's statement timeout a call waits for the answer: time for
/// the server's cancellation, and its error, to arrive.
const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// What a pool needs to open connections and run statements.
pub(super) struct Settings {
    pub(super) config: Config,
    pub(super) tls: MakeRustlsConnect,
    pub(super) table: Table,
    pub(super) size: usize,
    pub(super) connect_timeout: Duration,
    pub(super) statement_timeout: Option<Duration>,
}

/// The pool, and the runtime its connections run on.
pub(super) struct Pool {
    /// `Some` until dropped: shut down without waiting, which is allowed inside an async context
    /// (dropping a runtime there is not).
    runtime: Option<Runtime>,
    shared: Arc<Shared>,
}

/// What every task of the pool shares.
struct Shared {
    settings: Settings,
    /// The SQL of each of [`Stmt::ALL`], prepared by every new connection.
    sql: Vec<String>,
    /// The session settings every new connection sets: read committed, and the timeout.
    setup: String,
    idle: Mutex<Vec<Conn>>,
    /// One permit for each connection that may be open at once.
    permits: Semaphore,
}

/// A connection and its prepared statements, indexed by [`Stmt::index`].
struct Conn {
    client: Client,
    statements: Vec<Statement>,
}

/// Why a call failed: the step, and the cause.
struct Failure {
    step: &'static str,
    source: BoxError,
}

impl Pool {
    /// A pool with no connection yet, and its runtime.
    pub(super) fn new(settings: Settings) -> Result<Pool> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("session-archive-postgres")
            .enable_all()
            .build()
            .map_err(|err| Error::Backend {
                backend: "postgres",
                operation: "start the connections' runtime",
                source: err.into(),
            })?;
        let sql = Stmt::ALL
            .iter()
            .map(|stmt| stmt.sql(&settings.table))
            .collect();
        // The server takes at most i32::MAX milliseconds (24 days); 0 means no limit.
        let timeout_ms = settings.statement_timeout.map_or(0, |timeout| {
            timeout.as_millis().clamp(1, i32::MAX.unsigned_abs().into())
        });
        // Every statement, and every statement in the functions, finds its rows through the
        // primary key, which a generic plan does as well as any; without the setting the server
        // would plan `get_many`'s `key = ANY ($2)` again for every call, its estimate for an
        // array of unknown length being higher than for the array at hand.
        let setup = format!(
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED; \
             SET statement_timeout = {timeout_ms}; SET plan_cache_mode = force_generic_plan"
        );
        // More permits than a semaphore holds would be a panic; no server takes that many anyway.
        let permits = Semaphore::new(settings.size.clamp(1, Semaphore::MAX_PERMITS));
        let shared = Shared {
            settings,
            sql,
            setup,
            idle: Mutex::new(Vec::new()),
            permits,
        };
        Ok(Pool {
            runtime: Some(runtime),
            shared: Arc::new(shared),
        })
    }

    /// Runs `stmt` with `params`, waiting for the rows; `operation` names the call in errors.
    pub(super) fn query(
        &self,
        operation: &'static str,
        stmt: Stmt,
        params: Params,
    ) -> Result<Vec<Row>> {
        block_on(self.query_async(operation, stmt, params))
    }

    /// [`query`](Pool::query), as a future that any executor can poll: the statement is sent
    /// by a task on the pool's runtime, started before this returns.
    pub(super) fn query_async(
        &self,
        operation: &'static str,
        stmt: Stmt,
        params: Params,
    ) -> impl Future<Output = Result<Vec<Row>>> + Send + 'static {
        self.query_async_then(operation, stmt, params, |_| None)
    }

    /// [`query_async`](Pool::query_async), and then, when `then` makes one of its answer
    /// (the rows, or the error's source), a second statement in the same task: the answer is
    /// that of the last statement run.
    pub(super) fn query_async_then(
        &self,
        operation: &'static str,
        stmt: Stmt,
        params: Params,
        then: impl FnOnce(Answer<'_>) -> Option<(Stmt, Params)> + Send + 'static,
    ) -> impl Future<Output = Result<Vec<Row>>> + Send + 'static {
        let shared = Arc::clone(&self.shared);
        let task = self.runtime.as_ref().map(|runtime| {
            runtime.spawn(async move {
                let answer = shared.run(stmt, params).await;
                let next = match &answer {
                    Ok(rows) => then(Ok(rows)),
                    Err(failure) => then(Err(&*failure.source)),
                };
                match next {
                    Some((next, params)) => shared.run(next, params).await,
                    None => answer,
                }
            })
        });
        async move {
            let failed = |step: &'static str, source: BoxError| Error::Backend {
                backend: "postgres",
                operation,
                source: Box::new(Step { step, source }),
            };
            let Some(task) = task else {
                return Err(failed("run", "the archive is closing".into()));
            };
            match task.await {
                Ok(Ok(rows)) => Ok(rows),
                Ok(Err(failure)) => Err(failed(failure.step, failure.source)),
                Err(err) => Err(failed("run", err.into())),
            }
        }
    }

    /// Runs `sql` (several statements, no parameters) in one transaction on a connection of
    /// its own; for the table's setup.
    pub(super) fn batch(&self, operation: &'static str, sql: String) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let task = self.runtime.as_ref().map(|runtime| {
            runtime.spawn(async move {
                let conn = shared.connect(false).await?;
                let sql = format!("BEGIN; {sql}; COMMIT");
                shared
                    .timed("run the setup", conn.client.batch_execute(&sql))
                    .await
            })
        });
        let Some(task) = task else {
            return Err(setup_failed(operation, "the archive is closing".into()));
        };
        match block_on(task) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(failure)) => Err(setup_failed(operation, Box::new(Step::from(failure)))),
            Err(err) => Err(setup_failed(operation, err.into())),
        }
    }

    /// Runs one query on a connection of its own, unprepared, for the setup's checks.
    pub(super) fn setup_rows(
        &self,
        operation: &'static str,
        sql: &'static str,
        params: Params,
    ) -> Result<Vec<Row>> {
        let shared = Arc::clone(&self.shared);
        let task = self.runtime.as_ref().map(|runtime| {
            runtime.spawn(async move {
                let conn = shared.connect(false).await?;
                let refs = references(&params);
                shared.timed("query", conn.client.query(sql, &refs)).await
            })
        });
        let Some(task) = task else {
            return Err(setup_failed(operation, "the archive is closing".into()));
        };
        match block_on(task) {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(failure)) => Err(setup_failed(operation, Box::new(Step::from(failure)))),
            Err(err) => Err(setup_failed(operation, err.into())),
        }
    }

    /// How many connections are open and idle now.
    pub(super) fn idle(&self) -> usize {
        self.shared.idle.lock().len()
    }

    /// The table the pool's statements use.
    pub(super) fn table(&self) -> &Table {
        &self.shared.settings.table
    }

    /// Uses `table` from now on, before any statement was prepared: the setup resolves the
    /// table's schema first.
    pub(super) fn set_table(&mut self, table: Table) -> Result<()> {
        let shared = Arc::get_mut(&mut self.shared)
            .filter(|shared| shared.idle.lock().is_empty())
            .ok_or_else(|| setup_failed("resolve the table", "the pool is in use".into()))?;
        shared.sql = Stmt::ALL.iter().map(|stmt| stmt.sql(&table)).collect();
        shared.settings.table = table;
        Ok(())
    }
}

/// `params` as the references tokio-postgres takes.
fn references(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|param| -> &(dyn ToSql + Sync) { param.as_ref() })
        .collect()
}

fn setup_failed(operation: &'static str, source: BoxError) -> Error {
    Error::Backend {
        backend: "postgres",
        operation,
        source,
    }
}

/// How long a dropped pool's connections get to say goodbye to the server.
const FAREWELL: Duration = Duration::from_millis(250);

impl Drop for Pool {
    /// Closes the idle connections politely (each sends the server its `Terminate`, so the
    /// server logs no lost client), on a thread of its own, since the drop may happen inside an
    /// async context where waiting is not allowed; calls still running are cut off.
    fn drop(&mut self) {
        self.shared.idle.lock().clear();
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        let (give, take) = std::sync::mpsc::channel::<Runtime>();
        let closer = std::thread::Builder::new()
            .name("session-archive-postgres-close".to_owned())
            .spawn(move || {
                if let Ok(runtime) = take.recv() {
                    runtime.shutdown_timeout(FAREWELL);
                }
            });
        // Without the thread, the runtime is shut down here, without waiting.
        let unsent = match closer {
            Ok(_) => give.send(runtime).err().map(|unsent| unsent.0),
            Err(_) => Some(runtime),
        };
        if let Some(runtime) = unsent {
            runtime.shutdown_background();
        }
    }
}

impl Shared {
    /// One call: a connection (idle, or new), the statement, and the connection back to the
    /// pool unless it broke. A read whose idle connection turns out broken (the server closed
    /// it) is sent once more; a write never is, since it may have been applied before the
    /// connection broke, and nothing is after a timeout, which another try would only double.
    async fn run(&self, stmt: Stmt, params: Params) -> Result<Vec<Row>, Failure> {
        let permit = tokio::time::timeout(self.settings.connect_timeout, self.permits.acquire())
            .await
            .map_err(|_| Failure::new("wait for a free connection", TimedOut.into()))?;
        let refs = references(&params);
        let mut retry = stmt.reads();
        let result = loop {
            let (conn, reused) = match self.take_idle() {
                Some(conn) => (conn, true),
                None => (self.connect(true).await?, false),
            };
            let statement = &conn.statements[stmt.index()];
            match self
                .timed("run the statement", conn.client.query(statement, &refs))
                .await
            {
                Ok(rows) => {
                    self.idle.lock().push(conn);
                    break Ok(rows);
                }
                Err(failure) if conn.client.is_closed() || !failure.answered() => {
                    if reused && retry && !failure.source.is::<TimedOut>() {
                        retry = false;
                        continue;
                    }
                    break Err(failure);
                }
                Err(failure) => {
                    self.idle.lock().push(conn);
                    break Err(failure);
                }
            }
        };
        drop(permit);
        result
    }

    /// An idle connection that is still open; closed ones (the server restarted, or ended
    /// them) are dropped on the way.
    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock();
        while let Some(conn) = idle.pop() {
            if !conn.client.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    /// A new connection, with its session set up and (when `prepare`) every statement
    /// prepared, within the connect timeout.
    async fn connect(&self, prepare: bool) -> Result<Conn, Failure> {
        let open = async {
            let (client, connection) = self
                .settings
                .config
                .connect(self.settings.tls.clone())
                .await
                .map_err(|err| Failure::new("connect", err.into()))?;
            tokio::spawn(connection);
            client
                .batch_execute(&self.setup)
                .await
                .map_err(|err| Failure::new("set up the connection", err.into()))?;
            let mut statements = Vec::new();
            for sql in self.sql.iter().take(if prepare { usize::MAX } else { 0 }) {
                let statement = client
                    .prepare(sql)
                    .await
                    .map_err(|err| Failure::new("prepare the statements", err.into()))?;
                statements.push(statement);
            }
            Ok(Conn { client, statements })
        };
        tokio::time::timeout(self.settings.connect_timeout, open)
            .await
            .map_err(|_| Failure::new("connect", TimedOut.into()))?
    }

    /// `future`, within the statement timeout and its grace (without limit when there is no
    /// statement timeout).
    async fn timed<T>(
        &self,
        step: &'static str,
        future: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, Failure> {
        let answer = match self.settings.statement_timeout {
            Some(timeout) => tokio::time::timeout(timeout.saturating_add(ANSWER_GRACE), future)
                .await
                .map_err(|_| Failure::new(step, TimedOut.into()))?,
            None => future.await,
        };
        answer.map_err(|err| Failure::new(step, err.into()))
    }
}

impl Failure {
    fn new(step: &'static str, source: BoxError) -> Failure {
        Failure { step, source }
    }

    /// Whether the server answered with an error that leaves the connection usable, rather
    /// than the connection failing: not a `FATAL` or `PANIC` one, after which the server closes
    /// it (its shutdown, `pg_terminate_backend`), even if the client has not seen that yet.
    fn answered(&self) -> bool {
        self.source
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::as_db_error)
            .is_some_and(|err| {
                !matches!(
                    err.parsed_severity(),
                    Some(
                        tokio_postgres::error::Severity::Fatal
                            | tokio_postgres::error::Severity::Panic
                    )
                )
            })
    }
}

/// No answer came within the timeout: the statement may or may not have been applied.
#[derive(Debug)]
struct TimedOut;

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no answer within the timeout")
    }
}

impl std::error::Error for TimedOut {}

/// A failure with the step it happened at, kept as an error source.
#[derive(Debug)]
struct Step {
    step: &'static str,
    source: BoxError,
}

impl From<Failure> for Step {
    fn from(failure: Failure) -> Step {
        Step {
            step: failure.step,
            source: failure.source,
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "could not {}", self.step)
    }
}

impl std::error::Error for Step {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}
