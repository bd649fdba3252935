//! The one multiplexed async connection of a single-server [`RedisArchive`](super::RedisArchive),
//! for [`get_many_async`](crate::Archive::get_many_async) and
//! [`compare_and_swap_many_async`](crate::Archive::compare_and_swap_many_async): the two calls of a web
//! request, answered without a blocking thread.
//!
//! The archive is opened synchronously, maybe outside any runtime, so the connection is made on
//! first use, inside the tokio runtime that polls the future (the `redis` crate spawns the
//! connection's driver there). It is kept with that runtime's id, since a driver lives only as
//! long as its runtime: a future polled on another runtime makes a connection of its own there,
//! kept beside the first (actix-web runs one single-threaded runtime per worker, so each worker
//! gets one), up to [`RUNTIMES`], past which the oldest is dropped. Every call clones its
//! runtime's connection, so all requests of a runtime share it. A call whose connection broke
//! forgets it, and the next call reconnects.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, Cmd, ErrorKind, RedisError, RedisResult, Script};
use tokio::runtime::{Handle, Id};
use tokio::sync::Mutex;

use super::connection::backend;
use crate::archive::{GetManyFuture, SwapFuture};
use crate::error::Result;

/// How many runtimes' connections are kept at once.
const RUNTIMES: usize = 64;

/// The connections shared by the async calls, one per runtime, made when first needed.
pub(super) struct Multiplexed {
    client: Client,
    config: AsyncConnectionConfig,
    compare_and_swap_many: Script,
    compare_and_swap_two: Script,
    current: Mutex<Vec<Current>>,
    /// How many connections were made: the next one's generation. Never reset, so that no two
    /// connections share one, even after the current one was forgotten.
    made: AtomicU64,
}

/// The connection in use, the runtime its driver runs on, and which connection it is (so that a
/// call forgets only the connection that failed it, never a newer one).
struct Current {
    runtime: Id,
    generation: u64,
    conn: MultiplexedConnection,
}

/// A clone of the shared connection, and whether it was made for this call (so a failure on it
/// says nothing about an older connection, and is not worth a second try).
struct Lease {
    generation: u64,
    fresh: bool,
    conn: MultiplexedConnection,
}

impl Multiplexed {
    /// The connection to `client`'s server, unconnected; `connect_timeout` bounds the TCP connect
    /// and handshake of each new connection, `response_timeout` each command's answer (`None`:
    /// no limit). `compare_and_swap_many` and `compare_and_swap_two` are the scripts of the
    /// blocking `compare_and_swap_many`.
    pub(super) fn new(
        client: Client,
        connect_timeout: Option<Duration>,
        response_timeout: Option<Duration>,
        compare_and_swap_many: Script,
        compare_and_swap_two: Script,
    ) -> Multiplexed {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(connect_timeout)
            .set_response_timeout(response_timeout);
        Multiplexed {
            client,
            config,
            compare_and_swap_many,
            compare_and_swap_two,
            current: Mutex::new(Vec::new()),
            made: AtomicU64::new(0),
        }
    }

    /// The future of a `get_many_async`: one `HMGET` of `keys` (at least one, names checked) in
    /// `hash`.
    pub(super) fn get_many(self: Arc<Self>, hash: String, keys: Vec<String>) -> GetManyFuture {
        Box::pin(async move {
            let mut hmget = ::redis::cmd("HMGET");
            hmget.arg(hash).arg(keys);
            self.read("get several values", &hmget).await
        })
    }

    /// The future of a `compare_and_swap_many_async`: the script of the blocking
    /// `compare_and_swap_many` on `hash` (the two-key one when `two`), with its arguments
    /// `args` (made by the archive), run once.
    pub(super) fn compare_and_swap_many(
        self: Arc<Self>,
        hash: String,
        two: bool,
        args: Vec<Vec<u8>>,
    ) -> SwapFuture {
        Box::pin(async move {
            let operation = "compare and swap several values";
            let script = if two {
                &self.compare_and_swap_two
            } else {
                &self.compare_and_swap_many
            };
            let mut invocation = script.key(hash);
            for arg in args {
                invocation.arg(arg);
            }
            let mut lease = self
                .lease()
                .await
                .map_err(|source| backend(operation, source))?;
            let swapped: RedisResult<u8> = invocation.invoke_async(&mut lease.conn).await;
            match swapped {
                Ok(swapped) => Ok(swapped == 1),
                Err(source) => {
                    self.judge(&lease, &source).await;
                    Err(backend(operation, source))
                }
            }
        })
    }

    /// Runs a read-only `command`: again, once, on a new connection, when the shared one it was
    /// sent on turned out broken (the server restarted since, say). A read changes nothing, so
    /// sending it twice is harmless; a write is never sent twice (see
    /// [`RedisArchive`](super::RedisArchive#connections-and-failures)).
    async fn read<T: ::redis::FromRedisValue>(
        &self,
        operation: &'static str,
        command: &Cmd,
    ) -> Result<T> {
        let mut retried = false;
        loop {
            let mut lease = self
                .lease()
                .await
                .map_err(|source| backend(operation, source))?;
            match command.query_async(&mut lease.conn).await {
                Ok(value) => return Ok(value),
                Err(source) => {
                    let broken = self.judge(&lease, &source).await;
                    if !broken || lease.fresh || retried {
                        return Err(backend(operation, source));
                    }
                    retried = true;
                }
            }
        }
    }

    /// A clone of the connection of the runtime polling this call, made first if there is none.
    async fn lease(&self) -> RedisResult<Lease> {
        let runtime = Handle::try_current()
            .map_err(|_| {
                RedisError::from((
                    ErrorKind::Client,
                    "the async calls of a RedisArchive must be polled inside a tokio runtime",
                ))
            })?
            .id();
        let mut current = self.current.lock().await;
        if let Some(current) = current.iter().find(|c| c.runtime == runtime) {
            return Ok(Lease {
                generation: current.generation,
                fresh: false,
                conn: current.conn.clone(),
            });
        }
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let generation = self.made.fetch_add(1, Ordering::Relaxed);
        if current.len() >= RUNTIMES {
            current.remove(0);
        }
        current.push(Current {
            runtime,
            generation,
            conn: conn.clone(),
        });
        Ok(Lease {
            generation,
            fresh: true,
            conn,
        })
    }

    /// Whether `err` says the leased connection is broken; if so, forgets it (unless a newer one
    /// replaced it already), so that the next call connects again. A timeout leaves it: the
    /// multiplexed connection discards the late answer and stays in step.
    async fn judge(&self, lease: &Lease, err: &RedisError) -> bool {
        let broken = err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_unrecoverable_error();
        if broken {
            let mut current = self.current.lock().await;
            current.retain(|c| c.generation != lease.generation);
        }
        broken
    }
}
