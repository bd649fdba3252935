//! The connection layer of [`RedisArchive`](super::RedisArchive): where its servers are (one
//! server, a Cluster, or a master that Sentinel names), the pool of open connections, and how a
//! command is run and its errors judged.
//!
//! Every command of the archive is a closure over `&mut dyn ConnectionLike`, so one body serves
//! every mode: a plain connection for one server or the Sentinel's current master, and the
//! `redis` crate's cluster connection, which routes each command by its key's slot and follows
//! `MOVED` and `ASK` redirections.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use ::redis::cluster::{ClusterClient, ClusterConnection, Connect};
use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use ::redis::sentinel::SentinelClient;
use ::redis::{
    Client, Connection, ConnectionLike, ErrorKind, IntoConnectionInfo, RedisError, RedisResult,
    ServerErrorKind, Value,
};
use parking_lot::Mutex;

use crate::error::Error;

/// The most connections kept open while idle. The pool keeps every connection that load opened
/// (as many as callers ran at once) up to this many, so that a steady load never opens or closes
/// connections; only a connection that failed is closed.
pub(super) const MAX_IDLE_CONNECTIONS: usize = 256;
/// How many times a read that any node answers is sent to a node picked at random.
const ASK_NODES: u32 = 6;
/// How many times a connection or a read-only command is tried when signals interrupt it.
const ATTEMPTS: u32 = 3;

/// Where the servers are.
pub(super) enum Servers {
    /// One server.
    Single(Client),
    /// A Redis Cluster, reached through its seed nodes.
    Cluster(ClusterClient),
    /// The master that the sentinels name, asked again for every new connection.
    Sentinel(Mutex<SentinelClient>),
}

/// An open connection of any mode.
pub(super) enum Conn {
    /// To one server, or to the master Sentinel named.
    Plain(Connection),
    /// To a cluster: one connection per node, opened as commands need them.
    Cluster(Box<ClusterConnection<Guarded>>),
}

impl Conn {
    /// The connection as the `redis` crate's commands, pipelines and scripts take it.
    fn as_dyn(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Conn::Plain(conn) => conn,
            Conn::Cluster(conn) => &mut **conn,
        }
    }

    fn as_ref(&self) -> &dyn ConnectionLike {
        match self {
            Conn::Plain(conn) => conn,
            Conn::Cluster(conn) => &**conn,
        }
    }
}

/// Each call goes to the connection of the mode, so that commands, pipelines and scripts take a
/// `Conn` as they take any connection.
impl ConnectionLike for Conn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        match self {
            Conn::Cluster(conn) if cmd.starts_with(SCRIPT_LOAD) => {
                load_script(conn, &cmd[SCRIPT_LOAD.len()..])
            }
            conn => conn.as_dyn().req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.as_dyn().req_packed_commands(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.as_ref().get_db()
    }

    fn check_connection(&mut self) -> bool {
        self.as_dyn().check_connection()
    }

    fn is_open(&self) -> bool {
        self.as_ref().is_open()
    }
}

/// How the `redis` crate packs `SCRIPT LOAD`, which it sends when a script is not in a server's
/// cache yet; the script follows as one bulk string.
const SCRIPT_LOAD: &[u8] = b"*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n";

/// The servers, the idle connections and what every command obeys.
pub(super) struct Pool {
    pub(super) servers: Servers,
    pub(super) connect_timeout: Option<Duration>,
    pub(super) response_timeout: Option<Duration>,
    /// After each write: `WAIT` for this many replicas, at most this long.
    pub(super) replicas_ack: Option<(usize, Duration)>,
    pub(super) idle: Mutex<Vec<Conn>>,
}

impl Pool {
    /// Opens a connection with the configured timeouts. Setting up a connection changes nothing
    /// on the server, so one interrupted by a signal is simply set up again.
    fn connect(&self) -> RedisResult<Conn> {
        let mut attempt = 1;
        loop {
            match self.connect_once() {
                Err(err) if interrupted(&err) && attempt < ATTEMPTS => attempt += 1,
                conn => return conn,
            }
        }
    }

    fn connect_once(&self) -> RedisResult<Conn> {
        match &self.servers {
            Servers::Single(client) => self.plain(client).map(Conn::Plain),
            Servers::Sentinel(sentinel) => {
                // Asks a sentinel for the master and checks with `ROLE` that it is one.
                let client = sentinel.lock().get_client()?;
                self.plain(&client).map(Conn::Plain)
            }
            Servers::Cluster(client) => client
                .get_generic_connection::<Guarded>()
                .map(|conn| Conn::Cluster(Box::new(conn)))
                .map_err(unguard),
        }
    }

    fn plain(&self, client: &Client) -> RedisResult<Connection> {
        let conn = match self.connect_timeout {
            Some(timeout) => client.get_connection_with_timeout(timeout)?,
            None => client.get_connection()?,
        };
        conn.set_read_timeout(self.response_timeout)?;
        conn.set_write_timeout(self.response_timeout)?;
        Ok(conn)
    }

    /// Runs a write once on a pooled connection, then waits for the replicas the builder's
    /// `replicas_ack` asks for, mapping an error to [`Error::Backend`] naming `operation`. A
    /// write is never sent twice: see [`run_read`](Self::run_read).
    pub(super) fn run<T>(
        &self,
        operation: &'static str,
        command: impl Fn(&mut Conn) -> RedisResult<T>,
    ) -> Result<T, Error> {
        self.attempt(|conn| {
            let value = command(conn)?;
            self.await_replicas(conn)?;
            Ok(value)
        })
        .map_err(|source| backend(operation, source))
    }

    /// Like [`run`](Self::run), for read-only commands, which change nothing on the server: when
    /// a signal interrupts one (which makes the `redis` crate fail the call), it is sent again.
    ///
    /// Only reads: a write interrupted while its reply was on the way has been applied, and
    /// sending it again could overwrite what another client wrote in between.
    pub(super) fn run_read<T>(
        &self,
        operation: &'static str,
        command: impl Fn(&mut Conn) -> RedisResult<T>,
    ) -> Result<T, Error> {
        let mut attempt = 1;
        loop {
            match self.attempt(&command) {
                Err(err) if interrupted(&err) && attempt < ATTEMPTS => attempt += 1,
                result => return result.map_err(|source| backend(operation, source)),
            }
        }
    }

    /// `WAIT`s after a write until `replicas_ack`'s number of replicas have it; an error when
    /// fewer had it within its timeout.
    fn await_replicas(&self, conn: &mut dyn ConnectionLike) -> RedisResult<()> {
        let Some((replicas, timeout)) = self.replicas_ack else {
            return Ok(());
        };
        // `WAIT … 0` would block for ever: the shortest wait is a millisecond.
        let millis = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let acked: usize = ::redis::cmd("WAIT").arg(replicas).arg(millis).query(conn)?;
        if acked < replicas {
            return Err(RedisError::from((
                ErrorKind::Extension,
                "the write reached fewer replicas than replicas_ack requires",
                format!("{acked} of {replicas} replicas within {millis} ms"),
            )));
        }
        Ok(())
    }

    /// Runs `command` on a pooled connection, or on a new one when none is idle.
    ///
    /// A connection goes back to the pool only when the server answered in full (success or a
    /// server error), because after an I/O error or a timeout its reply stream may be out of step.
    /// When the connection was dropped or refused, the server probably went away (a restart or
    /// a failover), and the idle connections are as dead as this one, so they are closed too;
    /// so are they when the server answered that it is a replica now (`READONLY`).
    pub(super) fn attempt<T>(
        &self,
        command: impl Fn(&mut Conn) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let pooled = self.idle.lock().pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = command(&mut conn).map_err(unguard);
        // The unit tests stand in here for a signal that interrupts the read of the reply: the
        // command has reached the server and its answer is lost.
        #[cfg(test)]
        let result = super::tests::lose_reply(result);
        let err = result.as_ref().err();
        let stale = err.is_some_and(|err| {
            err.is_connection_dropped()
                || err.is_connection_refusal()
                || err.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
        });
        if stale {
            self.idle.lock().clear();
        } else if err.is_none_or(server_answered) && conn.is_open() {
            let mut idle = self.idle.lock();
            if idle.len() < MAX_IDLE_CONNECTIONS {
                idle.push(conn);
            }
        }
        result
    }
}

/// A cluster node's connection, as the cluster client opens them: a plain connection whose
/// failures other than a server's answer are made final for the cluster client.
///
/// The cluster client sends a command again after an I/O error, a timeout or a dropped
/// connection, which for a write could apply it twice, or overwrite what another client wrote in
/// between (see [`RedisArchive`](super::RedisArchive#connections-and-failures)). Such errors
/// leave here wrapped in an `io::Error` of kind `Unsupported`, which the client never retries;
/// [`unguard`] takes the original back out. Answers from the server (`MOVED`, `ASK`,
/// `TRYAGAIN`: the command was not run) pass as they are, so the client follows them.
pub(super) struct Guarded(Connection);

/// The error inside a [`Guarded`] connection's wrapped failure.
#[derive(Debug)]
struct Ambiguous(RedisError);

impl std::fmt::Display for Ambiguous {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Ambiguous {}

fn guard(err: RedisError) -> RedisError {
    if matches!(err.kind(), ErrorKind::Server(_)) {
        err
    } else {
        RedisError::from(io::Error::new(io::ErrorKind::Unsupported, Ambiguous(err)))
    }
}

/// The error a [`Guarded`] connection wrapped, or `err` itself.
fn unguard(err: RedisError) -> RedisError {
    let wrapped = io_error(&err)
        .and_then(io::Error::get_ref)
        .and_then(|inner| inner.downcast_ref::<Ambiguous>())
        .map(|ambiguous| ambiguous.0.clone());
    wrapped.unwrap_or(err)
}

impl ConnectionLike for Guarded {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.0.req_packed_command(cmd).map_err(guard)
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.0
            .req_packed_commands(cmd, offset, count)
            .map_err(guard)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }

    fn check_connection(&mut self) -> bool {
        self.0.check_connection()
    }

    fn is_open(&self) -> bool {
        self.0.is_open()
    }
}

impl Connect for Guarded {
    fn connect<T: IntoConnectionInfo>(info: T, timeout: Option<Duration>) -> RedisResult<Self> {
        <Connection as Connect>::connect(info, timeout)
            .map(Guarded)
            .map_err(guard)
    }

    fn send_packed_command(&mut self, cmd: &[u8]) -> RedisResult<()> {
        self.0.send_packed_command(cmd).map_err(guard)
    }

    fn set_write_timeout(&self, dur: Option<Duration>) -> RedisResult<()> {
        self.0.set_write_timeout(dur)
    }

    fn set_read_timeout(&self, dur: Option<Duration>) -> RedisResult<()> {
        self.0.set_read_timeout(dur)
    }

    fn recv_response(&mut self) -> RedisResult<Value> {
        self.0.recv_response().map_err(guard)
    }
}

/// Loads a script (`packed`: the rest of a packed `SCRIPT LOAD` after the command's name, one
/// bulk string) on every master that answers, and answers its SHA1 if any did.
///
/// The cluster client sends `SCRIPT LOAD` to every node and fails if one does not answer, so
/// with one master down a script new to the others could not run anywhere. Here it runs on the
/// masters that are up, and the script's `EVALSHA`, sent again to the master of its key, finds
/// it there.
pub(super) fn load_script(
    conn: &mut ClusterConnection<Guarded>,
    packed: &[u8],
) -> RedisResult<Value> {
    let malformed = || RedisError::from((ErrorKind::Client, "a malformed SCRIPT LOAD"));
    let (len, rest) = packed
        .strip_prefix(b"$")
        .and_then(|rest| {
            let end = rest.windows(2).position(|w| w == b"\r\n")?;
            let len: usize = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
            Some((len, &rest[end + 2..]))
        })
        .ok_or_else(malformed)?;
    let source = rest.get(..len).ok_or_else(malformed)?;
    let mut load = ::redis::cmd("SCRIPT");
    load.arg("LOAD").arg(source);
    let mut answer = Err(malformed());
    for node in masters_of(conn)? {
        let Some((host, port)) = node.rsplit_once(':') else {
            continue;
        };
        let Ok(port) = port.parse() else { continue };
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.to_owned(),
            port,
        });
        let loaded = conn.route_command(&load, routing);
        if answer.is_err() || loaded.is_ok() {
            answer = loaded;
        }
    }
    answer
}

/// The cluster's masters as `host:port`, sorted. `CLUSTER SLOTS` goes to a node picked at random, so it is asked up to
/// [`ASK_NODES`] times, for when a node is down; it changes nothing.
pub(super) fn masters_of(conn: &mut dyn ::redis::ConnectionLike) -> RedisResult<Vec<String>> {
    let mut asked = 1;
    let ranges: Vec<Value> = loop {
        match ::redis::cmd("CLUSTER").arg("SLOTS").query(conn) {
            Err(_) if asked < ASK_NODES => asked += 1,
            ranges => break ranges?,
        }
    };
    let mut masters = ranges
        .iter()
        .map(|range| {
            master_of(range).ok_or_else(|| {
                RedisError::from((
                    ErrorKind::UnexpectedReturnType,
                    "CLUSTER SLOTS answered a range without a master's address",
                ))
            })
        })
        .collect::<RedisResult<Vec<_>>>()?;
    masters.sort_unstable();
    masters.dedup();
    Ok(masters)
}

/// The `host:port` of the master of one `CLUSTER SLOTS` range: `[start, end, [host, port, id,
/// …], replicas…]`.
fn master_of(range: &Value) -> Option<String> {
    let Value::Array(range) = range else {
        return None;
    };
    let Value::Array(node) = range.get(2)? else {
        return None;
    };
    let host: String = ::redis::from_redis_value_ref(node.first()?).ok()?;
    let port: u16 = ::redis::from_redis_value_ref(node.get(1)?).ok()?;
    (!host.is_empty()).then(|| format!("{host}:{port}"))
}

/// The `io::Error` behind a Redis error. The `redis` crate keeps it behind an `Arc` as the
/// source; should that change, this answers `None`.
fn io_error(err: &RedisError) -> Option<&io::Error> {
    let source = std::error::Error::source(err);
    source
        .and_then(|source| source.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>())
        .and_then(|inner| inner.downcast_ref::<io::Error>())
        .or_else(|| source.and_then(|source| source.downcast_ref::<io::Error>()))
}

/// Whether a signal interrupted a socket call; if unsure, `false`, and nothing is repeated.
pub(super) fn interrupted(err: &RedisError) -> bool {
    io_error(err).is_some_and(|io| io.kind() == io::ErrorKind::Interrupted)
}

/// Whether the server sent its whole reply, so the connection is still in step.
fn server_answered(err: &RedisError) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Server(_) | ErrorKind::Extension | ErrorKind::UnexpectedReturnType
    )
}

pub(super) fn backend(operation: &'static str, source: RedisError) -> Error {
    Error::Backend {
        backend: "redis",
        operation,
        source: Box::new(source),
    }
}
