//! [`PostgresArchive`]: a table in a PostgreSQL database, shared by every app instance that
//! connects to it.
//!
//! Connect with [`PostgresArchive::connect`], or with [`PostgresArchive::builder`] to choose the
//! table, the pool and the timeouts, whose defaults are [`DEFAULT_TABLE`], [`DEFAULT_POOL_SIZE`],
//! [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_STATEMENT_TIMEOUT`].

mod pool;
mod schema;
mod tls;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::Row;

use self::pool::{Answer, Params, Pool, Settings};
use self::schema::{LAYOUT, Stmt, Table, is_torn, layout_of, refused};
use crate::archive::block_on::block_on;
use crate::archive::{
    Archive, GetManyFuture, Page, Swap, SwapFuture, SwapGroup, check_groups, check_keys,
    check_swaps,
};
use crate::error::{Error, Result};
use crate::name::{validate_domain, validate_entry};

/// The table an archive uses unless [`PostgresArchiveBuilder::table`] says otherwise:
/// `session_archive`, in the first schema of the connection's `search_path` (usually `public`).
pub const DEFAULT_TABLE: &str = "session_archive";

/// How many connections an archive opens at most unless [`PostgresArchiveBuilder::pool_size`]
/// says otherwise: 16.
///
/// # Examples
///
/// ```no_run
/// use session_archive::archive::postgres::{DEFAULT_POOL_SIZE, PostgresArchive};
///
/// // A busy app instance, with a server that allows it, keeps twice as many connections.
/// let archive = PostgresArchive::builder("postgres://app@db.internal/app")
///     .pool_size(DEFAULT_POOL_SIZE * 2)
///     .connect()?;
/// # Ok::<(), session_archive::Error>(())
/// ```
pub const DEFAULT_POOL_SIZE: usize = 16;

/// How long opening a connection, or waiting for a free one, may take unless
/// [`PostgresArchiveBuilder::connect_timeout`] or the URL's `connect_timeout` says otherwise:
/// 5 seconds.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The `application_name` of the archive's connections unless the URL names one:
/// `session-archive`, which `pg_stat_activity` shows.
pub const DEFAULT_APPLICATION_NAME: &str = "session-archive";

/// How long the server may run one statement unless
/// [`PostgresArchiveBuilder::statement_timeout`] says otherwise: 5 seconds.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// An archive in one table of a PostgreSQL database (feature `archive-postgres`): the backend
/// for several app instances that share a database they already run.
///
/// # Layout
///
/// One table (by default [`DEFAULT_TABLE`]), created when missing:
///
/// ```sql
/// CREATE TABLE session_archive (
///     domain text COLLATE "C" NOT NULL,
///     key    text COLLATE "C" NOT NULL,
///     value  bytea NOT NULL,
///     PRIMARY KEY (domain, key));
/// ```
///
/// A domain is the rows that share its `domain`; it exists while it has one. The `"C"` collation
/// orders names by their bytes, so listings come in the ascending byte order of the other local
/// backends, and are keyset-paged on the primary key (a cursor is the last name of a page; no
/// `OFFSET`). Beside the table, a few PL/pgSQL functions named after it (`session_archive_set`,
/// `session_archive_swap`, ...) do the writes. The table's comment records the layout
/// (`session-archive layout 1`): a later release that changes the layout migrates the table, and
/// this one refuses a table of a newer layout, or one it did not make, with an
/// [`Error::Backend`].
///
/// # Guarantees
///
/// - **Each call is one statement and one round trip**, on a statement the connection prepared
///   when it opened (but a session's update whose rows another writer changed meanwhile,
///   which then asks the general swap). Each write is one transaction, so it is atomic, the
///   batches ([`set_many`](Archive::set_many), [`remove_many`](Archive::remove_many),
///   [`remove_domains`](Archive::remove_domains),
///   [`compare_and_swap_each`](Archive::compare_and_swap_each)) included: a connection lost in
///   the middle leaves none of it.
/// - **Writes of one domain are serial.** Every write takes a transaction-scoped advisory lock
///   on each domain it writes (a batch of more than 32 domains, one on the whole table
///   instead), then reads and writes under it, so a
///   [`compare_and_swap`](Archive::compare_and_swap) or
///   [`compare_and_swap_many`](Archive::compare_and_swap_many) compares with the latest value,
///   present or absent, and no other write comes between its comparison and its write, in this
///   process or any other. Writes of different domains run in parallel. One write holds its
///   domain's lock shared instead: a `compare_and_swap_many` of two keys that are both
///   expected present and both stored (a session's `update` of its state and record), one
///   plain statement that compares the two rows and writes each only if, under its row lock,
///   it still holds what was expected (and undoes itself when only one did), which is all
///   that keys that exist need; it runs beside others of its kind and never beside any other
///   write of the domain. The functions refuse to run outside `READ COMMITTED`, which the archive's
///   connections set, so a pooler in front of the server must keep sessions (see the
///   repository's `docs/OPERATIONS.md`).
/// - **A web request is two round trips.** A session's start reads its record and state with
///   one `get_many`, and an `update` swaps both with one `compare_and_swap_many`, as
///   tower-sessions' sqlx store loads and saves; on the axum layer neither takes a blocking
///   thread ([`get_many_async`](Archive::get_many_async),
///   [`compare_and_swap_many_async`](Archive::compare_and_swap_many_async)).
/// - **Reads are one snapshot.** [`get_many`](Archive::get_many) and
///   [`get_each`](Archive::get_each) are each one `SELECT`, so they see every write whole or
///   not at all.
/// - **Durability** is the server's: an `Ok` means the transaction committed, which with the
///   default `synchronous_commit = on` means it is in the server's write-ahead log on disk.
/// - **Expiry** is the caller's, as on redb: [`expire_domain`](Archive::expire_domain) answers
///   `false`, and [`Sessions::sweep`](crate::Sessions::sweep) removes expired sessions.
/// - Names and values are only ever sent as bound parameters, never as SQL text, and every
///   name passes the [name rule](crate::name::validate_name) before anything is sent.
///
/// # Connections and failures
///
/// The archive is `Send + Sync`. It keeps up to [`pool_size`](PostgresArchiveBuilder::pool_size)
/// connections, opened when first needed and kept while they work; a call waits for a free one
/// at most the connect timeout. Every connection runs `READ COMMITTED` (whatever the server's
/// default) with the builder's statement timeout. A refused or dropped connection, a timeout,
/// or an error the server answered is an [`Error::Backend`] with `backend: "postgres"`, whose
/// [`source`](std::error::Error::source) chain says which step failed and ends in the
/// [`tokio_postgres::Error`]. A connection that failed is closed, and idle connections the
/// server closed (it restarted, or an administrator ended them) are dropped when next taken,
/// so after a restart the archive reconnects by itself. A read whose pooled connection turned
/// out broken is sent again on a new one; a write never is: after a write's error (not an
/// answer of the server's), it was applied once or not at all.
///
/// # Why tokio-postgres
///
/// The client is [`tokio_postgres`], the asynchronous half of the `postgres` crate, on a small
/// runtime the archive owns (two threads, named `session-archive-postgres`). The `Archive`
/// calls are synchronous, and its async calls ([`get_many_async`](Archive::get_many_async) and
/// [`compare_and_swap_many_async`](Archive::compare_and_swap_many_async), the two calls of a
/// web request) must work under any executor: one runtime driving every connection serves
/// both, so a web request on the axum layer waits for the database without a blocking thread,
/// and the synchronous `postgres` crate, which runs a runtime per connection and refuses to
/// run inside another runtime, could serve only the first. TLS is rustls, on the `ring`
/// provider, so no OpenSSL is linked.
///
/// # TLS
///
/// The URL's `sslmode` means what it means to libpq: `disable`, `prefer` (the default: TLS when
/// the server offers it, unchecked), `require` (TLS, unchecked unless a root certificate is
/// given), `verify-ca` (the certificate chains to the root certificate) and `verify-full` (and
/// is made out to the host). The root certificate is the PEM file named by `sslrootcert` in the
/// URL or by [`root_certificate`](PostgresArchiveBuilder::root_certificate), or else
/// `~/.postgresql/root.crt` when it exists.
///
/// # Privileges
///
/// Creating the table and its functions needs `CREATE` on the schema (once, or after an
/// upgrade that changes the layout). After that the archive needs `SELECT`, `INSERT`, `UPDATE`
/// and `DELETE` on the table, and `EXECUTE` on its functions (granted to `PUBLIC` by default).
///
/// # Examples
///
/// ```no_run
/// use session_archive::{Archive, PostgresArchive, Sessions};
///
/// let archive = PostgresArchive::builder("postgres://app@db.internal/app?sslmode=verify-full")
///     .table("sessions.archive")
///     .pool_size(32)
///     .connect()?;
/// archive.set("d", "k", b"v")?;
/// assert_eq!(archive.get("d", "k")?, Some(b"v".to_vec()));
/// let sessions = Sessions::new(archive);
/// # Ok::<(), session_archive::Error>(())
/// ```
pub struct PostgresArchive {
    pool: Pool,
    /// Where the archive connects, without the password, for `Debug`.
    target: String,
}

/// Settings for a [`PostgresArchive`]; made by [`PostgresArchive::builder`].
#[derive(Clone)]
#[must_use]
pub struct PostgresArchiveBuilder {
    url: String,
    table: String,
    pool_size: usize,
    /// `None`: the URL's `connect_timeout`, else [`DEFAULT_CONNECT_TIMEOUT`].
    connect_timeout: Option<Duration>,
    statement_timeout: Option<Duration>,
    root_certificate: Option<PathBuf>,
}

impl fmt::Debug for PostgresArchiveBuilder {
    /// Everything but the URL, which may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresArchiveBuilder")
            .field("table", &self.table)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("root_certificate", &self.root_certificate)
            .finish_non_exhaustive()
    }
}

impl PostgresArchive {
    /// Connects to the database at `url` with the default settings, creating the table
    /// [`DEFAULT_TABLE`] and its functions when missing.
    ///
    /// `url` is a `postgres://user:password@host:port/database?option=value` URL, or a libpq
    /// `key=value` string. Besides what tokio-postgres understands (`sslmode`,
    /// `connect_timeout`, `application_name`, `options`, ...), it may say
    /// `sslmode=verify-ca`, `sslmode=verify-full` and `sslrootcert=PATH` (see [TLS](#tls)).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the URL does not parse (its message never repeats the URL,
    /// which may hold a password), the server cannot be reached within the connect timeout, the
    /// table cannot be created, or it exists and is not a table of this layout.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use session_archive::{Archive, PostgresArchive};
    ///
    /// let archive = PostgresArchive::connect("postgres://app@127.0.0.1/app")?;
    /// archive.set("d", "k", b"v")?;
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn connect(url: &str) -> Result<PostgresArchive> {
        PostgresArchive::builder(url).connect()
    }

    /// Settings for an archive at `url` (as in [`connect`](PostgresArchive::connect)), to change
    /// before [`connect`](PostgresArchiveBuilder::connect).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use session_archive::PostgresArchive;
    ///
    /// let archive = PostgresArchive::builder("postgres://app@db.internal/app")
    ///     .table("sessions.archive")
    ///     .pool_size(8)
    ///     .statement_timeout(Some(Duration::from_secs(2)))
    ///     .connect()?;
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn builder(url: &str) -> PostgresArchiveBuilder {
        PostgresArchiveBuilder {
            url: url.to_owned(),
            table: DEFAULT_TABLE.to_owned(),
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout: None,
            statement_timeout: Some(DEFAULT_STATEMENT_TIMEOUT),
            root_certificate: None,
        }
    }

    /// The table, with the schema it is in (`public.session_archive` for the default table in
    /// the usual `search_path`).
    pub fn table(&self) -> String {
        self.pool.table().display()
    }

    /// How many connections are open and idle in the pool now.
    pub fn idle_connections(&self) -> usize {
        self.pool.idle()
    }

    fn rows(&self, operation: &'static str, stmt: Stmt, params: Params) -> Result<Vec<Row>> {
        self.pool.query(operation, stmt, params)
    }

    /// The first column of the one row a statement answers.
    fn one<T>(&self, operation: &'static str, stmt: Stmt, params: Params) -> Result<T>
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        first_column(operation, &self.rows(operation, stmt, params)?)
    }

    /// `compare_and_swap_many` of checked, non-empty `swaps`, sent before this returns: the
    /// two-key statement when the swaps have its shape (two keys, both expected present and
    /// both stored: a session's update), else, or when a row changed under that statement,
    /// `_swap`. Either answers whether it swapped in its first column.
    fn swap_many(
        &self,
        domain: &str,
        swaps: &[Swap<'_>],
    ) -> impl Future<Output = Result<bool>> + Send + 'static {
        let operation = "compare and swap several keys";
        let general = swap_params(domain, swaps);
        let (stmt, params, fallback) = match swap_two_params(domain, swaps) {
            Some(two) => (Stmt::SwapTwo, two, Some(general)),
            None => (Stmt::Swap, general, None),
        };
        let rows = self
            .pool
            .query_async_then(operation, stmt, params, move |answer| {
                let general = fallback.filter(|_| !settled(answer))?;
                Some((Stmt::Swap, general))
            });
        async move { first_column(operation, &rows.await?) }
    }
}

impl PostgresArchiveBuilder {
    /// The table to use: `name` or `schema.name`, each part 1 to 48 ASCII letters, digits and
    /// underscores, not starting with a digit (the schema must exist; the table is created in
    /// it when missing). Checked by [`connect`](PostgresArchiveBuilder::connect). Several
    /// archives, or apps, share a database by using tables of their own.
    pub fn table(mut self, table: &str) -> Self {
        table.clone_into(&mut self.table);
        self
    }

    /// How many connections the archive opens at most (at least 1); calls beyond that many at
    /// once wait for a free one.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long opening a connection (TCP, TLS and login) may take, and how long a call waits
    /// for a free connection when all are busy. Wins over the URL's `connect_timeout`; without
    /// either, [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// The server's `statement_timeout` for the archive's connections (`None`: no limit). A
    /// call also stops waiting for an answer a second after it, and closes the connection, so
    /// a server that stopped answering fails calls instead of hanging them.
    pub fn statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// The PEM file of the root certificates that the server's certificate must chain to, for
    /// `sslmode=verify-ca` and `verify-full` (with `require`, it makes the connection check
    /// the chain). Wins over the URL's `sslrootcert`.
    pub fn root_certificate(mut self, path: impl Into<PathBuf>) -> Self {
        self.root_certificate = Some(path.into());
        self
    }

    /// Connects, and creates the table and its functions when missing.
    ///
    /// # Errors
    ///
    /// As [`PostgresArchive::connect`], and for a table name that breaks the rule of
    /// [`table`](PostgresArchiveBuilder::table).
    pub fn connect(self) -> Result<PostgresArchive> {
        let table = Table::parse(&self.table)?;
        let (url, tls) = tls::split(&self.url)?;
        let mut config = tokio_postgres::Config::from_str(&url).map_err(|err| Error::Backend {
            backend: "postgres",
            operation: "parse the connection URL",
            source: err.into(),
        })?;
        let connect_timeout = self
            .connect_timeout
            .or_else(|| config.get_connect_timeout().copied())
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        config.connect_timeout(connect_timeout);
        if config.get_application_name().is_none() {
            // So that `pg_stat_activity` tells the archive's connections from the app's own.
            config.application_name(DEFAULT_APPLICATION_NAME);
        }
        let target = target(&config, &table);
        let require = config.get_ssl_mode() == tokio_postgres::config::SslMode::Require;
        let tls = tls::connector(tls, self.root_certificate.as_deref(), require)?;
        let pool = Pool::new(Settings {
            config,
            tls,
            table,
            size: self.pool_size,
            connect_timeout,
            statement_timeout: self.statement_timeout,
        })?;
        let mut archive = PostgresArchive { pool, target };
        archive.set_up()?;
        Ok(archive)
    }
}

/// Where `config` connects, without its password.
fn target(config: &tokio_postgres::Config, table: &Table) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    format!(
        "{}@{}/{} table {}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or(""),
        table.display()
    )
}

impl PostgresArchive {
    /// Creates the table and its functions, or brings them to this release's layout, unless
    /// the table's comment says they are; refuses a table of a newer layout or of another
    /// maker.
    fn set_up(&mut self) -> Result<()> {
        if !self.pool.table().has_schema() {
            self.resolve_schema()?;
        }
        let table = self.pool.table().clone();
        let operation = "check the table";
        let rows = self.pool.setup_rows(
            operation,
            "SELECT obj_description(to_regclass($1), 'pg_class'), to_regclass($1) IS NOT NULL, \
             (SELECT bool_and(to_regprocedure(f) IS NOT NULL) FROM unnest($2::text[]) AS f), \
             current_setting('server_encoding')",
            vec![text(&table.ident("")), Box::new(schema::procedures(&table))],
        )?;
        let row = rows
            .first()
            .ok_or_else(|| refused(operation, "the server answered no row".to_owned()))?;
        let comment: Option<String> = column(operation, row, 0)?;
        let exists: bool = column(operation, row, 1)?;
        let complete: bool = column(operation, row, 2)?;
        let encoding: String = column(operation, row, 3)?;
        if encoding != "UTF8" {
            // Every name the name rule allows must fit: only UTF-8 holds them all.
            return Err(refused(
                "use the database",
                format!("the database's encoding is {encoding}; session-archive needs UTF8"),
            ));
        }
        let foreign = |why: String| {
            let table = table.display();
            Err(refused("use the table", format!("table {table} {why}")))
        };
        match layout_of(&table, comment.as_deref())? {
            Some(layout) if layout == LAYOUT && complete => return Ok(()),
            Some(layout) if layout > LAYOUT => {
                return foreign(format!(
                    "has layout {layout}, made by a newer session-archive; this release knows \
                     layouts up to {LAYOUT}"
                ));
            }
            None if exists => {
                return foreign(
                    "exists and is not a session-archive table (it has no layout comment)"
                        .to_owned(),
                );
            }
            // Missing, older, or without all its functions (restored from a dump of the table
            // alone): the setup makes it whole, keeping its rows.
            _ => {}
        }
        let lock = format!("SELECT pg_advisory_xact_lock({})", table.setup_lock());
        self.pool.batch(
            "create the table",
            format!("{lock}; {}", schema::setup(&table)),
        )
    }

    /// Names the table's schema: the first schema of the connection's `search_path` that
    /// exists, as PostgreSQL would create the table in.
    fn resolve_schema(&mut self) -> Result<()> {
        let operation = "find the schema";
        let rows = self
            .pool
            .setup_rows(operation, "SELECT current_schema()", vec![])?;
        let schema: Option<String> = match rows.first() {
            Some(row) => column(operation, row, 0)?,
            None => None,
        };
        let schema = schema.ok_or_else(|| {
            refused(
                operation,
                "no schema of the search_path exists: name one, as table(\"schema.name\")"
                    .to_owned(),
            )
        })?;
        if schema.contains('$') {
            // It would end the dollar-quoted bodies of the functions the setup creates.
            return Err(refused(
                operation,
                "the search_path's schema has a `$` in its name: name the table's schema, as \
                 table(\"schema.name\")"
                    .to_owned(),
            ));
        }
        let table = self.pool.table().in_schema(schema);
        self.pool.set_table(table)
    }
}

impl fmt::Debug for PostgresArchive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresArchive")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// The first column of the one row a statement answers.
fn first_column<T>(operation: &'static str, rows: &[Row]) -> Result<T>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    let row = rows.first().ok_or_else(|| {
        refused(
            operation,
            "the server answered no row where one was due".to_owned(),
        )
    })?;
    column(operation, row, 0)
}

/// Column `index` of `row`, or a backend error (never a panic) when its type is not `T`.
fn column<T>(operation: &'static str, row: &Row, index: usize) -> Result<T>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    row.try_get(index).map_err(|err| Error::Backend {
        backend: "postgres",
        operation,
        source: err.into(),
    })
}

fn text(name: &str) -> Box<dyn tokio_postgres::types::ToSql + Send + Sync> {
    Box::new(name.to_owned())
}

/// A cursor as a lower bound for a keyset page: the empty string before the first page (every
/// name is longer), and never a string the server cannot hold.
fn cursor_bound(cursor: Option<&str>) -> Result<String> {
    match cursor {
        Some(cursor) if cursor.contains('\0') => Err(Error::InvalidCursor {
            cursor: cursor.to_owned(),
        }),
        Some(cursor) => Ok(cursor.to_owned()),
        None => Ok(String::new()),
    }
}

fn page_limit(limit: usize) -> i64 {
    i64::try_from(limit.max(1)).unwrap_or(i64::MAX)
}

/// The names of a listing's rows, as a page of at most `limit`.
fn names(operation: &'static str, rows: &[Row], limit: usize) -> Result<Page> {
    let names = rows
        .iter()
        .map(|row| column(operation, row, 0))
        .collect::<Result<Vec<String>>>()?;
    Ok(Page::ordered(names, limit))
}

/// The parameters of `_swap`: the domain, then the keys, expected and new values in order.
fn swap_params(domain: &str, swaps: &[Swap<'_>]) -> Params {
    let keys: Vec<String> = swaps.iter().map(|(key, _, _)| (*key).to_owned()).collect();
    let expected: Vec<Option<Vec<u8>>> = swaps
        .iter()
        .map(|(_, e, _)| e.map(<[u8]>::to_vec))
        .collect();
    let new: Vec<Option<Vec<u8>>> = swaps
        .iter()
        .map(|(_, _, n)| n.map(<[u8]>::to_vec))
        .collect();
    vec![
        text(domain),
        Box::new(keys),
        Box::new(expected),
        Box::new(new),
    ]
}

/// The parameters of `_swap_each`: the domains, where each group's swaps end, and every
/// group's swaps in one run.
fn swap_each_params(groups: &[SwapGroup<'_>]) -> Result<Params> {
    let domains: Vec<String> = groups
        .iter()
        .map(|(domain, _)| (*domain).to_owned())
        .collect();
    let mut ends = Vec::with_capacity(groups.len());
    let (mut keys, mut expected, mut new) = (Vec::new(), Vec::new(), Vec::new());
    for (_, swaps) in groups {
        for (key, e, n) in *swaps {
            keys.push((*key).to_owned());
            expected.push(e.map(<[u8]>::to_vec));
            new.push(n.map(<[u8]>::to_vec));
        }
        let end = i32::try_from(keys.len()).map_err(|_| {
            refused(
                "compare and swap in several domains",
                "too many swaps in one call".to_owned(),
            )
        })?;
        ends.push(end);
    }
    Ok(vec![
        Box::new(domains),
        Box::new(ends),
        Box::new(keys),
        Box::new(expected),
        Box::new(new),
    ])
}

/// The values of `get_many`'s rows (key, value), one for each of `keys` in order.
fn values_by_key(
    operation: &'static str,
    rows: &[Row],
    keys: &[&str],
) -> Result<Vec<Option<Vec<u8>>>> {
    let mut found = HashMap::with_capacity(rows.len());
    for row in rows {
        found.insert(
            column::<String>(operation, row, 0)?,
            column::<Vec<u8>>(operation, row, 1)?,
        );
    }
    Ok(keys.iter().map(|key| found.get(*key).cloned()).collect())
}

impl Archive for PostgresArchive {
    fn get(&self, domain: &str, key: &str) -> Result<Option<Vec<u8>>> {
        validate_entry(domain, key)?;
        let rows = self.rows("get", Stmt::Get, vec![text(domain), text(key)])?;
        rows.first().map(|row| column("get", row, 0)).transpose()
    }

    fn set(&self, domain: &str, key: &str, value: &[u8]) -> Result<()> {
        validate_entry(domain, key)?;
        let params: Params = vec![text(domain), text(key), Box::new(value.to_vec())];
        self.rows("set", Stmt::Set, params).map(drop)
    }

    fn has(&self, domain: &str, key: &str) -> Result<bool> {
        validate_entry(domain, key)?;
        self.one("check a key", Stmt::Has, vec![text(domain), text(key)])
    }

    fn remove(&self, domain: &str, key: &str) -> Result<bool> {
        validate_entry(domain, key)?;
        self.one("remove", Stmt::Remove, vec![text(domain), text(key)])
    }

    fn has_domain(&self, domain: &str) -> Result<bool> {
        validate_domain(domain)?;
        self.one("check a domain", Stmt::HasDomain, vec![text(domain)])
    }

    fn remove_domain(&self, domain: &str) -> Result<bool> {
        validate_domain(domain)?;
        self.one("remove a domain", Stmt::RemoveDomain, vec![text(domain)])
    }

    fn list_domains(&self, cursor: Option<&str>, limit: usize) -> Result<Page> {
        let after = cursor_bound(cursor)?;
        let params: Params = vec![Box::new(after), Box::new(page_limit(limit))];
        let rows = self.rows("list domains", Stmt::ListDomains, params)?;
        names("list domains", &rows, limit)
    }

    fn list_keys(&self, domain: &str, cursor: Option<&str>, limit: usize) -> Result<Page> {
        validate_domain(domain)?;
        let after = cursor_bound(cursor)?;
        let params: Params = vec![text(domain), Box::new(after), Box::new(page_limit(limit))];
        let rows = self.rows("list keys", Stmt::ListKeys, params)?;
        names("list keys", &rows, limit)
    }

    fn compare_and_swap(
        &self,
        domain: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        validate_entry(domain, key)?;
        let params = swap_params(domain, &[(key, expected, new)]);
        self.one("compare and swap", Stmt::Swap, params)
    }

    fn compare_and_swap_many(&self, domain: &str, swaps: &[Swap<'_>]) -> Result<bool> {
        check_swaps(domain, swaps)?;
        if swaps.is_empty() {
            return Ok(true);
        }
        block_on(self.swap_many(domain, swaps))
    }

    fn get_many(&self, domain: &str, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        check_keys(domain, keys)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let owned: Vec<String> = keys.iter().map(|key| (*key).to_owned()).collect();
        let rows = self.rows(
            "read several keys",
            Stmt::GetMany,
            vec![text(domain), Box::new(owned)],
        )?;
        values_by_key("read several keys", &rows, keys)
    }

    fn compare_and_swap_each(&self, groups: &[SwapGroup<'_>]) -> Result<Vec<bool>> {
        check_groups(groups)?;
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let operation = "compare and swap in several domains";
        let done: Vec<bool> = self.one(operation, Stmt::SwapEach, swap_each_params(groups)?)?;
        if done.len() != groups.len() {
            return Err(refused(
                operation,
                "the server answered for another number of groups".to_owned(),
            ));
        }
        Ok(done)
    }

    fn get_each(&self, entries: &[(&str, &str)]) -> Result<Vec<Option<Vec<u8>>>> {
        entries
            .iter()
            .try_for_each(|(domain, key)| validate_entry(domain, key))?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let operation = "read several entries";
        let domains: Vec<String> = entries.iter().map(|(d, _)| (*d).to_owned()).collect();
        let keys: Vec<String> = entries.iter().map(|(_, k)| (*k).to_owned()).collect();
        let rows = self.rows(
            operation,
            Stmt::GetEach,
            vec![Box::new(domains), Box::new(keys)],
        )?;
        if rows.len() != entries.len() {
            let reason = "the server answered for another number of entries".to_owned();
            return Err(refused(operation, reason));
        }
        rows.iter().map(|row| column(operation, row, 0)).collect()
    }

    fn set_many(&self, entries: &[(&str, &str, &[u8])]) -> Result<()> {
        entries
            .iter()
            .try_for_each(|(domain, key, _)| validate_entry(domain, key))?;
        // One row per entry: a later entry for the same key wins, as if set one by one (an
        // upsert cannot change one row twice).
        let mut last = HashMap::with_capacity(entries.len());
        for (index, (domain, key, _)) in entries.iter().enumerate() {
            last.insert((*domain, *key), index);
        }
        let kept = entries
            .iter()
            .enumerate()
            .filter(|(index, (domain, key, _))| last.get(&(*domain, *key)) == Some(index));
        let (mut domains, mut keys, mut values) = (Vec::new(), Vec::new(), Vec::new());
        for (_, (domain, key, value)) in kept {
            domains.push((*domain).to_owned());
            keys.push((*key).to_owned());
            values.push(value.to_vec());
        }
        if domains.is_empty() {
            return Ok(());
        }
        let params: Params = vec![Box::new(domains), Box::new(keys), Box::new(values)];
        self.rows("set several entries", Stmt::SetMany, params)
            .map(drop)
    }

    fn remove_many(&self, entries: &[(&str, &str)]) -> Result<usize> {
        entries
            .iter()
            .try_for_each(|(domain, key)| validate_entry(domain, key))?;
        if entries.is_empty() {
            return Ok(0);
        }
        let domains: Vec<String> = entries.iter().map(|(d, _)| (*d).to_owned()).collect();
        let keys: Vec<String> = entries.iter().map(|(_, k)| (*k).to_owned()).collect();
        let params: Params = vec![Box::new(domains), Box::new(keys)];
        let removed: i64 = self.one("remove several entries", Stmt::RemoveMany, params)?;
        Ok(usize::try_from(removed).unwrap_or(0))
    }

    fn remove_domains(&self, domains: &[&str]) -> Result<usize> {
        domains
            .iter()
            .try_for_each(|domain| validate_domain(domain))?;
        if domains.is_empty() {
            return Ok(0);
        }
        let owned: Vec<String> = domains.iter().map(|d| (*d).to_owned()).collect();
        let removed: i64 = self.one(
            "remove several domains",
            Stmt::RemoveDomains,
            vec![Box::new(owned)],
        )?;
        Ok(usize::try_from(removed).unwrap_or(0))
    }

    fn get_many_async(&self, domain: &str, keys: &[&str]) -> Option<GetManyFuture> {
        let operation = "read several keys";
        let owned: Vec<String> = keys.iter().map(|key| (*key).to_owned()).collect();
        if let Err(err) = check_keys(domain, keys) {
            return Some(Box::pin(std::future::ready(Err(err))));
        }
        if owned.is_empty() {
            return Some(Box::pin(std::future::ready(Ok(Vec::new()))));
        }
        let params: Params = vec![text(domain), Box::new(owned.clone())];
        let rows = self.pool.query_async(operation, Stmt::GetMany, params);
        Some(Box::pin(async move {
            let keys: Vec<&str> = owned.iter().map(String::as_str).collect();
            values_by_key(operation, &rows.await?, &keys)
        }))
    }

    fn compare_and_swap_many_async(&self, domain: &str, swaps: &[Swap<'_>]) -> Option<SwapFuture> {
        if let Err(err) = check_swaps(domain, swaps) {
            return Some(Box::pin(std::future::ready(Err(err))));
        }
        if swaps.is_empty() {
            return Some(Box::pin(std::future::ready(Ok(true))));
        }
        Some(Box::pin(self.swap_many(domain, swaps)))
    }
}

/// The parameters of the two-key swap ([`Stmt::SwapTwo`]) when `swaps` has its shape: two
/// keys, both expected present and both stored. The lesser key goes first, the order the
/// statement locks them in.
fn swap_two_params(domain: &str, swaps: &[Swap<'_>]) -> Option<Params> {
    let [mut one, mut other] = *swaps else {
        return None;
    };
    if other.0 < one.0 {
        std::mem::swap(&mut one, &mut other);
    }
    let (
        (first, Some(expected_first), Some(new_first)),
        (second, Some(expected_second), Some(new_second)),
    ) = (one, other)
    else {
        return None;
    };
    Some(vec![
        text(domain),
        text(first),
        Box::new(expected_first.to_vec()),
        text(second),
        Box::new(expected_second.to_vec()),
        Box::new(new_first.to_vec()),
        Box::new(new_second.to_vec()),
    ])
}

/// Whether the two-key swap answered for itself: it swapped, it found the rows different in
/// its snapshot, or it failed otherwise than by [`is_torn`]. Otherwise a row changed after its
/// snapshot, it wrote nothing, and `_swap` decides.
fn settled(answer: Answer<'_>) -> bool {
    match answer {
        Ok(rows) => rows.first().is_none_or(|row| {
            let answer = |index| row.try_get::<_, bool>(index).unwrap_or(true);
            answer(0) || answer(1)
        }),
        Err(err) => !is_torn(err),
    }
}
