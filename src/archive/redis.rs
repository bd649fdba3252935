//! [`RedisArchive`]: a Redis (or Valkey) server, shared by every app instance that connects to it.
//!
//! Open one with [`RedisArchive::open`], or with [`RedisArchive::builder`] to set the prefix and
//! the timeouts, whose defaults are [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_RESPONSE_TIMEOUT`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::cluster::ClusterClientBuilder;
use ::redis::sentinel::{SentinelClient, SentinelServerType};
use ::redis::{Client, RedisError, RedisResult, Script, ScriptInvocation};
use parking_lot::Mutex;

use self::connection::{Conn, Pool, Servers, backend};
use self::multiplexed::Multiplexed;
use crate::archive::{
    Archive, GetManyFuture, Page, Swap, SwapFuture, SwapGroup, check_groups, check_keys,
    check_swaps,
};
use crate::error::{Error, Result};
use crate::name::{validate_domain, validate_entry};

mod cluster;
mod connection;
mod multiplexed;

/// How long opening a connection may take unless
/// [`RedisArchiveBuilder::connect_timeout`] says otherwise: 5 seconds.
///
/// # Examples
///
/// ```no_run
/// use session_archive::archive::redis::{DEFAULT_CONNECT_TIMEOUT, RedisArchive};
///
/// // A server across a slow link gets twice the usual time to answer.
/// let archive = RedisArchive::builder("redis://sessions.internal/0")
///     .connect_timeout(Some(DEFAULT_CONNECT_TIMEOUT * 2))
///     .open()?;
/// # Ok::<(), session_archive::Error>(())
/// ```
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long each socket read or write of a command may block unless
/// [`RedisArchiveBuilder::response_timeout`] says otherwise: 5 seconds.
///
/// # Examples
///
/// ```no_run
/// use session_archive::archive::redis::{DEFAULT_RESPONSE_TIMEOUT, RedisArchive};
///
/// // A batch job scanning a large database waits longer for each answer than the app does.
/// let archive = RedisArchive::builder("redis://127.0.0.1/0")
///     .response_timeout(Some(DEFAULT_RESPONSE_TIMEOUT * 6))
///     .open()?;
/// # Ok::<(), session_archive::Error>(())
/// ```
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How many times the cluster client sends a command again after an answer that says it was not
/// run (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, `READONLY`); never after any other failure (see
/// [`RedisArchive`]'s connections and failures).
const CLUSTER_RETRIES: u32 = 6;
/// The most the cluster client waits between those attempts, in milliseconds.
const CLUSTER_MAX_RETRY_WAIT_MS: u64 = 200;
/// What separates the prefix from the domain in a hash name. The name rule forbids it in names,
/// which makes the mapping from (prefix, domain) to hash name one-to-one.
const SEPARATOR: char = '/';

/// Compare-and-swap of one hash field, run on the server so that no other client's command can
/// come between the comparison and the write. `KEYS[1]` is the hash, `ARGV[1]` the field;
/// `ARGV[2]`/`ARGV[4]` are `1` when the expected/new value is present, with the value in
/// `ARGV[3]`/`ARGV[5]`. Lua strings are byte strings, so `~=` compares values exactly.
const COMPARE_AND_SWAP: &str = r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
  if current ~= ARGV[3] then return 0 end
elseif current then
  return 0
end
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
";

/// Compare-and-swap of several fields of one hash, all or none, run on the server so that no
/// other client's command comes between the comparisons and the writes. `KEYS[1]` is the hash;
/// each swap is five arguments, from `ARGV[5i + 1]` on: the field; `1` when the expected value
/// is present, else `0`; the expected value (empty when absent); what to do, `s` to store the
/// new value, `d` to delete the field, `c` only to compare; and the new value (empty unless
/// stored). Lua strings are byte strings, so `~=` compares values exactly. Every field is
/// compared before anything is written, so a mismatch writes nothing. Stored as
/// [`COMPARE_AND_SWAP`] stores: `HSET` keeps the hash's TTL, and `HDEL` of the last field
/// deletes the hash, TTL and all; an expired hash reads as absent.
const COMPARE_AND_SWAP_MANY: &str = r"
for i = 1, #ARGV, 5 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if ARGV[i + 1] == '1' then
    if current ~= ARGV[i + 2] then return 0 end
  elseif current then
    return 0
  end
end
for i = 1, #ARGV, 5 do
  if ARGV[i + 3] == 's' then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 4])
  elseif ARGV[i + 3] == 'd' then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 1
";

/// [`COMPARE_AND_SWAP_MANY`] of exactly two fields, both expected present and both stored (a
/// session's update of its state and record, the one write of a web request), with less work
/// for the server: one `HMGET` and one `HSET` instead of two `HGET`s and two `HSET`s, and six
/// arguments instead of ten. `ARGV[1]` and `ARGV[3]` are the fields, `ARGV[2]` and `ARGV[4]`
/// their expected values, `ARGV[5]` and `ARGV[6]` their new ones. A field that is absent reads
/// as `false`, which no expected value equals.
const COMPARE_AND_SWAP_TWO: &str = r"
local current = redis.call('HMGET', KEYS[1], ARGV[1], ARGV[3])
if current[1] ~= ARGV[2] or current[2] ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[5], ARGV[3], ARGV[6])
return 1
";

/// Moves the hash `KEYS[1]`'s expiry to the Unix time `ARGV[1]`, in milliseconds, unless it
/// expires later already (or is missing): an expiry only ever moves later, so that a writer
/// holding older timestamps never cuts short what a newer one asked for. The server's clock
/// measures the time left, as it does when it expires the hash. Answers 1 if the hash exists.
const EXPIRE_LATER: &str = r"
local left = redis.call('PTTL', KEYS[1])
if left == -2 then return 0 end
if left >= 0 then
  local now = redis.call('TIME')
  if now[1] * 1000 + math.floor(now[2] / 1000) + left >= tonumber(ARGV[1]) then return 1 end
end
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
";

/// Part of a `set_many` batch: `HSET KEYS[i] ARGV[2i - 1] ARGV[2i]` for each `i`, all at once.
/// On a cluster every key of one call is in one hash slot.
const BATCH_SET: &str = r"
for i = 1, #KEYS do
  redis.call('HSET', KEYS[i], ARGV[2 * i - 1], ARGV[2 * i])
end
return #KEYS
";

/// Part of a `remove_many` batch: `HDEL KEYS[i] ARGV[i]` for each `i`, all at once; answers how
/// many fields were removed.
const BATCH_REMOVE: &str = r"
local removed = 0
for i = 1, #KEYS do
  removed = removed + redis.call('HDEL', KEYS[i], ARGV[i])
end
return removed
";

/// Part of a `remove_domains` batch: `DEL KEYS[i]` for each `i`, all at once; answers how many
/// hashes were removed.
const BATCH_REMOVE_DOMAINS: &str = r"
local removed = 0
for i = 1, #KEYS do
  removed = removed + redis.call('DEL', KEYS[i])
end
return removed
";

/// Moves the hash `KEYS[1]` to the name `KEYS[2]` unless that is taken; anything else under
/// `KEYS[1]` is not a domain and stays. Answers 1 if it moved.
const MIGRATE_LEGACY: &str = r"
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return 0 end
return redis.call('RENAMENX', KEYS[1], KEYS[2])
";

/// One `HSCAN` step that sends back the field names only, not their values (`HSCAN … NOVALUES`
/// needs Redis 7.4). `ARGV[1]` is the cursor, `ARGV[2]` the `COUNT` hint.
const SCAN_FIELDS: &str = r"
local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local names = {}
for i = 1, #page[2], 2 do
  names[#names + 1] = page[2][i]
end
return {page[1], names}
";

/// An archive on a Redis or Valkey server (feature `archive-redis`): the backend for several app
/// instances behind a load balancer, or for a Redis server you already run.
///
/// # Layout
///
/// A domain is one Redis hash named `{prefix}/{domain}`, and each key is a field of it. `set` is
/// `HSET`, `get` is `HGET`, `has` is `HEXISTS`, `remove` is `HDEL` (Redis deletes the hash with its
/// last field), `has_domain` is `EXISTS`, `remove_domain` is one `DEL`. Domains are listed with
/// `SCAN … MATCH {prefix}/* TYPE hash`, never `KEYS`, so listing needs Redis 6 or later; keys
/// with `HSCAN`, run in a small Lua script that sends back the names without the values.
///
/// The [prefix](RedisArchiveBuilder::prefix) lets several apps, or several archives of one app,
/// share a server or database, and the `/` after it keeps them apart. The name rule forbids `/`
/// in a domain, so in a hash name the domain is everything after the last `/`, and the prefix
/// everything before it: two distinct prefixes never name the same hash, whatever they hold
/// (`/` included). A listing keeps only the names whose rest after `{prefix}/` is a valid name,
/// which leaves out every longer prefix's hashes: `app/admin/x` is no domain of `app`, since
/// `admin/x` holds a `/`. So archives on `app:`, `app:admin:`, `app`, `app/admin` and the empty
/// prefix (whose hashes are `/{domain}`) never list, read or remove one another's data, nor any
/// hash whose name does not start with `{prefix}/`.
///
/// ## Data written in the unseparated layout
///
/// session-archive 0.1 named hashes `{prefix}{domain}`, with nothing between. There two archives
/// overlap when one prefix begins the other: the domain `admin:x` under `app:` is the hash of the
/// domain `x` under `app:admin:`. Such data keeps working in any of three ways:
///
/// - [`legacy_layout(true)`](RedisArchiveBuilder::legacy_layout) opens an archive with the old
///   names, and the old overlap.
/// - [`migrate_legacy_domain`](RedisArchive::migrate_legacy_domain) moves one domain to its new
///   name, keeping its TTL; its documentation shows the whole move.
/// - A prefix that ended with `/` had this layout already: the old prefix `app/` is the new
///   prefix `app`.
///
/// The two layouts meet only through a legacy prefix that holds a `/`: otherwise the rest of a
/// `/`-layout name after a legacy prefix holds a `/`, and so names no legacy domain.
///
/// # Guarantees
///
/// - Each call other than a listing (and a batch that spans hash slots on a
///   [cluster](#cluster)) is one command or one script, so it is atomic on the server.
/// - [`compare_and_swap`](Archive::compare_and_swap) runs as a Lua script (`EVALSHA`), so it is
///   atomic against every other client of the server, in this process or any other.
///   [`compare_and_swap_many`](Archive::compare_and_swap_many) is one script over the domain's
///   hash too: it compares every field before it writes any, and no client, reader or writer,
///   sees some of its fields changed and others not.
/// - [`remove_domain`](Archive::remove_domain) removes the whole domain at once.
/// - [`set_many`](Archive::set_many), [`remove_many`](Archive::remove_many) and
///   [`remove_domains`](Archive::remove_domains) apply their whole batch in one Lua script, so
///   no other client sees part of it.
/// - [`expire_domain`](Archive::expire_domain) sets a TTL on the hash (`PEXPIREAT`, in a
///   script that only ever moves it later), so Redis removes expired domains itself. Writing
///   to the hash keeps the TTL.
/// - [`get_many`](Archive::get_many) is one `HMGET`, so it reads its keys at one moment.
/// - Durability is whatever the server is configured for (RDB snapshots, AOF `fsync` policy);
///   an `Ok` means the server applied the write in memory, and with
///   [`replicas_ack`](RedisArchiveBuilder::replicas_ack) also that many replicas had it.
/// - Listing follows Redis `SCAN`: a page may hold more or fewer names than `limit`, and names
///   come in no particular order. Only the last page can be empty. If the database is resized
///   during a walk, a name may come twice.
///
/// # Cluster
///
/// An archive opened with [`RedisArchive::cluster`] names the hash of a domain
/// `{prefix}/{{domain}}`, so the domain is its hash tag and every call on one domain runs on the
/// master of that slot, atomic as on one server. Otherwise:
///
/// - A batch ([`set_many`](Archive::set_many), [`remove_many`](Archive::remove_many),
///   [`remove_domains`](Archive::remove_domains)) is split by hash slot, and each part is one
///   script on its master, so each part is atomic: no client sees part of a part, and the
///   entries of one domain always share a part. Across parts nothing is atomic: the parts run
///   one after another in slot order, a reader may see one part done and the next not yet, and
///   an error stops the batch, leaving the parts before it applied, the failing part applied or
///   not (as any write whose reply was lost), and the parts after it not sent.
/// - [`list_domains`](Archive::list_domains) walks the masters in turn, sorted by address, with
///   `SCAN` on each; its cursor names the master and the position there
///   (`{position}@{host}:{port}`). A domain present through the whole walk is listed, unless a
///   slot moved between masters during the walk (a reshard or a failover), which can skip or
///   repeat the domains it holds; a cursor whose master is no longer one is an
///   [`Error::Backend`].
/// - A master that goes away fails the calls on its slots with [`Error::Backend`] (connection
///   refused, dropped, or timed out within the response timeout); the other slots keep working
///   while the cluster stays up (`cluster-require-full-coverage no`), and after a replica takes
///   over, calls reach it. The cluster client follows redirections (`MOVED`, `ASK`) and retries
///   answers that say a command was not run (`TRYAGAIN`, `CLUSTERDOWN`), a few times within a
///   second; it never sends a command again after any other failure (see below).
/// - [`migrate_legacy_domain`](RedisArchive::migrate_legacy_domain) is not supported.
///
/// # Connections and failures
///
/// The archive is `Send + Sync`. Each call borrows a connection from a pool, opening a new one
/// when none is idle, so many threads work at once. The pool keeps every connection that load
/// opened, up to 256 idle ones, so a steady load of up to that many callers at once opens no
/// connections (on a cluster a pooled connection holds one connection to each master it used). A refused connection, a dropped one or a
/// timeout is an [`Error::Backend`] with `backend: "redis"` whose
/// [`source`](std::error::Error::source) is the [`redis::RedisError`], which
/// tells them apart (`is_connection_refusal`, `is_connection_dropped`, `is_timeout`). A
/// connection that failed is closed, and when the server went away all idle ones are closed too,
/// so after a server restart the first call may fail and the next ones reconnect. After a
/// timeout or a dropped connection, the command may or may not have been applied.
///
/// The `redis` crate fails a socket call that a signal interrupts (when a child process of the
/// app exits, for one: with a response timeout set, the kernel does not restart socket reads
/// after a signal). Setting up a connection and the read-only calls (`get`, `has`, `has_domain`,
/// the listings) are then sent again. A write never is, whatever failed: the failure can come
/// after the request reached the server, and by the time a copy arrived another client may have
/// written a newer value (or a later expiry) that the copy would overwrite. So after a write's
/// error, the write has been applied once or not at all.
///
/// Besides the blocking pool, an archive on one server keeps one multiplexed async connection
/// (the `redis` crate's `MultiplexedConnection`) for [`get_many_async`](Archive::get_many_async)
/// and [`compare_and_swap_many_async`](Archive::compare_and_swap_many_async), the two calls of a web
/// request, so that an async caller makes them without a blocking thread: every such call, from
/// every task, shares the one connection. The archive may be opened outside any runtime: the
/// connection is made on first use, in the tokio runtime that polls the future (polling one
/// outside a tokio runtime is an [`Error::Backend`]), with the builder's connect and response
/// timeouts. A call that finds it broken (the server restarted, say) fails, or for
/// `get_many_async` is sent once more on a new connection, and the next call reconnects; the
/// swap is never sent again, as above. The blocking and async calls reach the same server and
/// see each other's writes. On a [cluster](#cluster), through Sentinel, and for the swap with
/// [`replicas_ack`](RedisArchiveBuilder::replicas_ack) set, the two answer `None`, and callers
/// use the blocking calls.
///
/// # Sessions over Redis
///
/// App instances share their sessions when each builds its [`Sessions`](crate::Sessions) over a
/// `RedisArchive` with the same URL and prefix: one instance saves a session, any other starts,
/// loads, updates or destroys it. `Session::update` is atomic across them, since it rests on the
/// server-side `compare_and_swap`. Each write of a session sets its hash's TTL to the session's
/// expiry (through [`expire_domain`](Archive::expire_domain), above); why and how often to sweep
/// all the same is in the repository's `docs/OPERATIONS.md`.
///
/// # Examples
///
/// ```no_run
/// use session_archive::{Archive, RedisArchive};
///
/// let archive = RedisArchive::builder("redis://127.0.0.1:6379/0")
///     .prefix("myapp:sessions")
///     .open()?;
/// archive.set("0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2", "session.json", b"{}")?;
/// assert!(archive.has_domain("0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2")?);
/// # Ok::<(), session_archive::Error>(())
/// ```
pub struct RedisArchive {
    pool: Pool,
    /// The multiplexed async connection of `get_many_async` and `compare_and_swap_many_async`, on
    /// one server only (`None` on a cluster or through Sentinel).
    multiplexed: Option<Arc<Multiplexed>>,
    /// Where the builder was pointed, for `Debug`.
    target: Target,
    prefix: String,
    /// Whether hash names are `{prefix}{domain}` rather than `{prefix}/{domain}`.
    legacy_layout: bool,
    /// What precedes the domain in a hash name: `{prefix}/`, or `{prefix}` in the legacy layout,
    /// or `{prefix}/{` on a cluster.
    stem: String,
    /// What follows the domain in a hash name: `}` on a cluster (the domain is the hash tag),
    /// else nothing.
    suffix: &'static str,
    /// The `SCAN` pattern: the stem with its glob characters escaped, then `*`.
    pattern: String,
    compare_and_swap: Script,
    compare_and_swap_many: Script,
    compare_and_swap_two: Script,
    expire_later: Script,
    compare_and_swap_each: Script,
    scan_fields: Script,
    migrate_legacy: Script,
    batch_set: Script,
    batch_remove: Script,
    batch_remove_domains: Script,
}

/// Options for opening a [`RedisArchive`]; made by [`RedisArchive::builder`].
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use session_archive::RedisArchive;
///
/// let archive = RedisArchive::builder("redis://127.0.0.1:6379/0")
///     .prefix("myapp:")
///     .connect_timeout(Some(Duration::from_secs(1)))
///     .response_timeout(Some(Duration::from_millis(500)))
///     .open()?;
/// # Ok::<(), session_archive::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisArchiveBuilder {
    target: Target,
    prefix: String,
    legacy_layout: bool,
    connect_timeout: Option<Duration>,
    response_timeout: Option<Duration>,
    replicas_ack: Option<(usize, Duration)>,
}

/// Where a builder points: one server, a cluster's seed nodes, or a master named to sentinels.
#[derive(Debug, Clone)]
enum Target {
    Url(String),
    Cluster(Vec<String>),
    Sentinel {
        master: String,
        sentinels: Vec<String>,
    },
}

impl RedisArchiveBuilder {
    /// Sets the prefix of every hash name, so that a domain `d` is the hash `{prefix}/d`. Any
    /// string will do, and archives on distinct prefixes never see each other's data (see
    /// [the layout](RedisArchive#layout)). The default is empty, which names hashes `/d`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// // The domain `d` is the hash `shop:sessions/d`.
    /// let archive = session_archive::RedisArchive::builder("redis://127.0.0.1/")
    ///     .prefix("shop:sessions")
    ///     .open()?;
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// With `true`, names hashes `{prefix}{domain}`, with no `/` between, as session-archive 0.1
    /// did, so that the data it wrote keeps working as it did. The default is `false`.
    ///
    /// In this layout an archive whose prefix begins another's (`app:` and `app:admin:`, or the
    /// empty prefix and any other) lists, reads and removes the other's domains as its own, and
    /// the empty prefix takes every hash in the database whose name is valid. It never sees
    /// the hashes of archives in the `/` layout, whose domains' rest holds a `/`, unless its own
    /// prefix holds a `/` too. To leave it, move the data with
    /// [`migrate_legacy_domain`](RedisArchive::migrate_legacy_domain).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use session_archive::{Archive, RedisArchive};
    ///
    /// // Data written by session-archive 0.1 with the prefix `shop:sessions:`.
    /// let archive = RedisArchive::builder("redis://127.0.0.1/")
    ///     .prefix("shop:sessions:")
    ///     .legacy_layout(true)
    ///     .open()?;
    /// // The hash `shop:sessions:d`.
    /// archive.has_domain("d")?;
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn legacy_layout(mut self, legacy: bool) -> Self {
        self.legacy_layout = legacy;
        self
    }

    /// Sets how long opening a connection (TCP connect and handshake) may take; `None` waits as
    /// long as the operating system does. The default is [`DEFAULT_CONNECT_TIMEOUT`], 5 seconds.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let archive = session_archive::RedisArchive::builder("redis://127.0.0.1/")
    ///     .connect_timeout(Some(Duration::from_secs(2)))
    ///     .open()?;
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets how long each socket read or write of a command may block; `None` waits forever.
    /// The default is [`DEFAULT_RESPONSE_TIMEOUT`], 5 seconds. A zero duration is refused by the
    /// socket, so `open` fails.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let archive = session_archive::RedisArchive::builder("redis://127.0.0.1/")
    ///     .response_timeout(Some(Duration::from_millis(250)))
    ///     .open()?;
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn response_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Makes an acknowledgement mean "on `replicas` replicas": after each write the archive
    /// sends `WAIT replicas timeout` on the same connection, and the write returns `Ok` only if
    /// that many replicas had it within `timeout`. Otherwise it returns [`Error::Backend`]
    /// (the write is then on the master and maybe on some replicas: applied, like any write
    /// whose reply was lost, once or not at all as far as a failover goes). Reads are not
    /// affected. The default, `None`, acknowledges a write once the master applied it.
    ///
    /// What each setting guarantees when a failover promotes a replica:
    ///
    /// - `None`: a write acknowledged by the old master may be lost, when the promoted replica
    ///   had not received it yet (Redis replicates asynchronously).
    /// - `Some((n, t))`: a write acknowledged with `n` at least the number of replicas is on
    ///   every replica, so whichever is promoted has it. With fewer, it is on `n` of them, and
    ///   it survives if Sentinel promotes one of those (it prefers the replica with the most
    ///   data, but that is not a promise). `WAIT` does not make a write durable on disk, and a
    ///   replica that restarts without persistence forgets it.
    ///
    /// The cost is one more round trip per write, and the time the slowest of the `n` replicas
    /// takes to confirm (see the repository's `docs/OPERATIONS.md` for numbers). On a cluster
    /// `WAIT` goes to every master and the least count is taken. Keep `timeout` below the
    /// response timeout; zero is taken as one millisecond (`WAIT … 0` blocks for ever).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use session_archive::RedisArchive;
    ///
    /// // One master, two replicas: acknowledge a write once both replicas have it.
    /// let archive = RedisArchive::sentinel("sessions", ["redis://127.0.0.1:26379"])
    ///     .replicas_ack(Some((2, Duration::from_millis(500))))
    ///     .open()?;
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn replicas_ack(mut self, ack: Option<(usize, Duration)>) -> Self {
        self.replicas_ack = ack;
        self
    }

    /// Connects and checks with `PING` that the server answers.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] with `backend: "redis"` when the URL is malformed, the connection is
    /// refused or times out, or the server does not answer `PING`; the source is the
    /// [`redis::RedisError`].
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Error, RedisArchive};
    ///
    /// let err = RedisArchive::builder("not a url").open().unwrap_err();
    /// assert!(matches!(err, Error::Backend { backend: "redis", .. }));
    /// ```
    pub fn open(self) -> Result<RedisArchive> {
        let archive = self.build()?;
        archive.run_read("ping the server", |conn| {
            ::redis::cmd("PING").query::<()>(conn)
        })?;
        Ok(archive)
    }

    /// The archive these options describe, before it has connected.
    fn build(self) -> Result<RedisArchive> {
        let cluster = matches!(self.target, Target::Cluster(_));
        if cluster && (self.legacy_layout || self.prefix.contains(['{', '}'])) {
            return Err(backend(
                "open a cluster archive",
                RedisError::from((
                    ::redis::ErrorKind::InvalidClientConfig,
                    "on a cluster the prefix cannot hold `{` or `}`, nor the layout be legacy",
                )),
            ));
        }
        let stem = match (self.legacy_layout, cluster) {
            (true, _) => self.prefix.clone(),
            (false, false) => format!("{}{SEPARATOR}", self.prefix),
            (false, true) => format!("{}{SEPARATOR}{{", self.prefix),
        };
        let servers = self.servers()?;
        Ok(RedisArchive {
            multiplexed: self.multiplexed(&servers),
            pool: Pool {
                servers,
                connect_timeout: self.connect_timeout,
                response_timeout: self.response_timeout,
                replicas_ack: self.replicas_ack,
                idle: Mutex::new(Vec::new()),
            },
            pattern: format!("{}*", escape_glob(&stem)),
            stem,
            suffix: if cluster { "}" } else { "" },
            target: self.target,
            prefix: self.prefix,
            legacy_layout: self.legacy_layout,
            compare_and_swap: Script::new(COMPARE_AND_SWAP),
            compare_and_swap_many: Script::new(COMPARE_AND_SWAP_MANY),
            compare_and_swap_two: Script::new(COMPARE_AND_SWAP_TWO),
            expire_later: Script::new(EXPIRE_LATER),
            compare_and_swap_each: Script::new(COMPARE_AND_SWAP_EACH),
            scan_fields: Script::new(SCAN_FIELDS),
            migrate_legacy: Script::new(MIGRATE_LEGACY),
            batch_set: Script::new(BATCH_SET),
            batch_remove: Script::new(BATCH_REMOVE),
            batch_remove_domains: Script::new(BATCH_REMOVE_DOMAINS),
        })
    }

    /// The multiplexed async connection of one server, unconnected; `None` on a cluster or
    /// through Sentinel, whose async calls answer `None`.
    fn multiplexed(&self, servers: &Servers) -> Option<Arc<Multiplexed>> {
        match servers {
            Servers::Single(client) => Some(Arc::new(Multiplexed::new(
                client.clone(),
                self.connect_timeout,
                self.response_timeout,
                Script::new(COMPARE_AND_SWAP_MANY),
                Script::new(COMPARE_AND_SWAP_TWO),
            ))),
            Servers::Cluster(_) | Servers::Sentinel(_) => None,
        }
    }

    /// The clients of the target, with the timeouts on a cluster's.
    fn servers(&self) -> Result<Servers> {
        match &self.target {
            Target::Url(url) => Client::open(url.as_str())
                .map(Servers::Single)
                .map_err(|source| backend("parse the server URL", source)),
            Target::Cluster(nodes) => {
                let mut client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .retries(CLUSTER_RETRIES)
                    .max_retry_wait(CLUSTER_MAX_RETRY_WAIT_MS);
                if let Some(timeout) = self.connect_timeout {
                    client = client.connection_timeout(timeout);
                }
                if let Some(timeout) = self.response_timeout {
                    client = client.response_timeout(timeout);
                }
                client
                    .build()
                    .map(Servers::Cluster)
                    .map_err(|source| backend("parse the cluster's node URLs", source))
            }
            Target::Sentinel { master, sentinels } => SentinelClient::build(
                sentinels.iter().map(String::as_str).collect(),
                master.clone(),
                None,
                SentinelServerType::Master,
            )
            .map(|client| Servers::Sentinel(Mutex::new(client)))
            .map_err(|source| backend("parse the sentinels' URLs", source)),
        }
    }
}

impl RedisArchive {
    /// Connects to the server at `url` (such as `"redis://127.0.0.1:6379/0"`, or `rediss://`,
    /// `redis+unix://` as the `redis` crate accepts) with an empty prefix and the default
    /// timeouts, and checks with `PING` that it answers. Use [`builder`](Self::builder) to set
    /// a prefix or timeouts.
    ///
    /// # Errors
    ///
    /// As [`RedisArchiveBuilder::open`]: [`Error::Backend`] for a malformed URL, a refused
    /// connection, a timeout or a server that does not answer.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Error, RedisArchive};
    ///
    /// // Port 1 on loopback: nothing listens there, so the connection is refused.
    /// let err = RedisArchive::open("redis://127.0.0.1:1/").unwrap_err();
    /// assert!(matches!(err, Error::Backend { backend: "redis", .. }));
    /// ```
    pub fn open(url: &str) -> Result<RedisArchive> {
        Self::builder(url).open()
    }

    /// Starts the options for opening an archive on the server at `url`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let archive = session_archive::RedisArchive::builder("redis://127.0.0.1:6379/0")
    ///     .prefix("myapp:")
    ///     .open()?;
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn builder(url: impl Into<String>) -> RedisArchiveBuilder {
        Self::builder_for(Target::Url(url.into()))
    }

    /// Starts the options for opening an archive on a Redis Cluster (or Valkey cluster), given
    /// the URLs of some of its nodes (`redis://127.0.0.1:7000`); the others are found from
    /// them. The options are those of [`builder`](Self::builder), then
    /// [`open`](RedisArchiveBuilder::open).
    ///
    /// Each domain is one hash named `{prefix}/{{domain}}`: the domain is the hash tag, so a
    /// domain's every operation, the compare-and-swap scripts included, runs on the one master
    /// that holds its slot. The cluster client follows `MOVED` and `ASK` redirections, so a slot
    /// moved during a run loses nothing. What differs from one server (batches split per slot,
    /// listings across the masters, a master that goes away) is under
    /// [Cluster](RedisArchive#cluster). The prefix cannot hold `{` or `}` (which would move the
    /// hash tag), and the legacy layout is not offered: [`open`](RedisArchiveBuilder::open) says
    /// so with an [`Error::Backend`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use session_archive::{Archive, RedisArchive};
    ///
    /// let archive = RedisArchive::cluster(["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"])
    ///     .prefix("myapp")
    ///     .open()?;
    /// archive.set("d", "k", b"v")?;
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn cluster(nodes: impl IntoIterator<Item = impl Into<String>>) -> RedisArchiveBuilder {
        Self::builder_for(Target::Cluster(nodes.into_iter().map(Into::into).collect()))
    }

    /// Starts the options for opening an archive on the master that Redis Sentinel monitors
    /// under `master_name`, given the URLs of sentinels (`redis://127.0.0.1:26379`). The options
    /// are those of [`builder`](Self::builder), then [`open`](RedisArchiveBuilder::open).
    ///
    /// Each new connection asks the sentinels for the current master and checks with `ROLE`
    /// that it is one, so after a failover the archive follows the new master by itself: the
    /// connections to the old one fail (refused, dropped, or `READONLY` once it is a replica),
    /// which closes every idle connection, and the next call connects to the new master.
    /// During the failover calls fail with [`Error::Backend`]. Replication is asynchronous, so a
    /// failover can lose writes the old master acknowledged;
    /// [`replicas_ack`](RedisArchiveBuilder::replicas_ack) narrows that. The master is
    /// reached without a password and on database 0.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use session_archive::RedisArchive;
    ///
    /// let archive = RedisArchive::sentinel(
    ///     "sessions",
    ///     ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"],
    /// )
    /// .prefix("myapp")
    /// .open()?;
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn sentinel(
        master_name: impl Into<String>,
        sentinels: impl IntoIterator<Item = impl Into<String>>,
    ) -> RedisArchiveBuilder {
        Self::builder_for(Target::Sentinel {
            master: master_name.into(),
            sentinels: sentinels.into_iter().map(Into::into).collect(),
        })
    }

    fn builder_for(target: Target) -> RedisArchiveBuilder {
        RedisArchiveBuilder {
            target,
            prefix: String::new(),
            legacy_layout: false,
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            response_timeout: Some(DEFAULT_RESPONSE_TIMEOUT),
            replicas_ack: None,
        }
    }

    /// The prefix of every hash name, without the `/` that follows it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let archive = session_archive::RedisArchive::builder("redis://127.0.0.1/")
    ///     .prefix("myapp")
    ///     .open()?;
    /// assert_eq!(archive.prefix(), "myapp");
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Moves `domain` from its name in the legacy layout, `{prefix}{domain}`, to its name in the
    /// `/` layout, `{prefix}/{domain}` (see [the layout](RedisArchive#layout)), whichever layout
    /// this archive was opened with. The move is one atomic `RENAMENX`, which keeps the fields
    /// and the TTL. Returns `true` if the domain moved, and `false`, changing nothing, when no
    /// hash has the old name or something has the new one already.
    ///
    /// Run it while no app instance writes in the legacy layout: a write there after the move
    /// creates the old name again. Move only this archive's own domains: in the legacy layout a
    /// listing under `app:` also gives `admin:x`, the domain `x` of an archive on `app:admin:`,
    /// which belongs under `app:admin:/x` and is moved by an archive on that prefix. The domains
    /// of [`Sessions`](crate::Sessions) are session ids (UUIDs), `expiry-{bucket}` and
    /// `sweep-cursor`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name that breaks the rule, before anything is sent;
    /// [`Error::Backend`] with `backend: "redis"` when the server fails or cannot be reached.
    ///
    /// # Examples
    ///
    /// Move every domain of the prefix `myapp:` that session-archive 0.1 wrote, when no other
    /// prefix starts with `myapp:`:
    ///
    /// ```no_run
    /// use session_archive::{ArchiveExt, RedisArchive};
    ///
    /// let url = "redis://127.0.0.1:6379/0";
    /// let old = RedisArchive::builder(url)
    ///     .prefix("myapp:")
    ///     .legacy_layout(true)
    ///     .open()?;
    /// let new = RedisArchive::builder(url).prefix("myapp:").open()?;
    /// for domain in old.domains() {
    ///     new.migrate_legacy_domain(&domain?)?;
    /// }
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn migrate_legacy_domain(&self, domain: &str) -> Result<bool> {
        validate_domain(domain)?;
        if matches!(self.pool.servers, Servers::Cluster(_)) {
            return Err(Error::Unsupported {
                operation: "migrate_legacy_domain on a cluster",
            });
        }
        let mut invocation = self.migrate_legacy.key(format!("{}{domain}", self.prefix));
        invocation.key(format!("{}{SEPARATOR}{domain}", self.prefix));
        let moved: u8 = self.run("move a domain to the / layout", |conn| {
            invocation.invoke(conn)
        })?;
        Ok(moved == 1)
    }

    /// The name of the hash that holds `domain`.
    fn hash(&self, domain: &str) -> String {
        format!("{}{domain}{}", self.stem, self.suffix)
    }

    /// The domain a raw hash name found by `SCAN` lists as, if it is one of this archive's.
    fn listed_domain(&self, name: &[u8]) -> Option<String> {
        listed_name(
            self.stem.as_bytes(),
            name.strip_suffix(self.suffix.as_bytes())?,
        )
    }

    /// Runs a write once: see [`Pool::run`].
    fn run<T>(
        &self,
        operation: &'static str,
        command: impl Fn(&mut Conn) -> RedisResult<T>,
    ) -> Result<T> {
        self.pool.run(operation, command)
    }

    /// Runs a read, again if a signal interrupted it: see [`Pool::run_read`].
    fn run_read<T>(
        &self,
        operation: &'static str,
        command: impl Fn(&mut Conn) -> RedisResult<T>,
    ) -> Result<T> {
        self.pool.run_read(operation, command)
    }

    /// The indexes of `hashes` in the parts a call over all of them is split into: one part on
    /// a single server; on a cluster one per hash slot, in slot order, since one script or
    /// transaction reaches only one slot. Each part keeps the order of `hashes`.
    fn parts(&self, hashes: &[String]) -> Vec<Vec<usize>> {
        let mut parts: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        let cluster = matches!(self.pool.servers, Servers::Cluster(_));
        for (i, hash) in hashes.iter().enumerate() {
            let part = if cluster {
                cluster::slot(hash.as_bytes())
            } else {
                0
            };
            parts.entry(part).or_default().push(i);
        }
        parts.into_values().collect()
    }

    /// Runs a batch `script` whose entry `i` is in the hash `hashes[i]` (`args` adds its
    /// arguments): as one script on a single server; on a cluster as one script per hash slot,
    /// in slot order, stopping at the first part that fails. Each script is atomic. Answers the
    /// sum of what the parts answer.
    fn batch(
        &self,
        operation: &'static str,
        script: &Script,
        hashes: &[String],
        args: impl Fn(usize, &mut ScriptInvocation<'_>),
    ) -> Result<usize> {
        let mut total = 0;
        for part in self.parts(hashes) {
            let mut invocation = script.prepare_invoke();
            for i in part {
                invocation.key(&hashes[i]);
                args(i, &mut invocation);
            }
            let done: usize = self.run(operation, |conn| invocation.invoke(conn))?;
            total += done;
        }
        Ok(total)
    }

    /// Lists one `SCAN`-style page: calls `scan(conn, cursor, count)`, which answers the next
    /// cursor and the raw names, and keeps what `keep` lists each as (see [`listed_name`]).
    /// While a step finds none of ours, it scans on, so that callers never see an empty page
    /// except the last, and an empty archive answers one empty, final page.
    fn scan_page(
        &self,
        operation: &'static str,
        cursor: Option<&str>,
        limit: usize,
        keep: impl Fn(&[u8]) -> Option<String>,
        scan: impl Fn(&mut Conn, u64, usize) -> RedisResult<(u64, Vec<Vec<u8>>)>,
    ) -> Result<Page> {
        let mut position = match cursor {
            None => 0,
            Some(cursor) => parse_cursor(cursor)?,
        };
        let mut names = Vec::new();
        loop {
            let (next, raw) =
                self.run_read(operation, |conn| scan(conn, position, limit.max(1)))?;
            names.extend(raw.iter().filter_map(|name| keep(name)));
            position = next;
            if position == 0 || !names.is_empty() {
                break;
            }
        }
        let cursor = (position != 0).then(|| position.to_string());
        Ok(Page { names, cursor })
    }
}

/// The name that the raw `name` lists under `stem`: its rest after `stem`, when that is a valid
/// name. Domains and keys share one rule, so checking as a domain suits both. For domains the
/// rule is also what keeps longer prefixes out: the rest of `{prefix}/admin/x` after `{prefix}/`
/// holds a `/`.
fn listed_name(stem: &[u8], name: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(name.strip_prefix(stem)?).ok()?;
    validate_domain(name).is_ok().then(|| name.to_owned())
}

/// Parses a cursor handed out by a listing: the decimal, non-zero `SCAN` cursor. Zero ends a walk
/// and is never handed out.
fn parse_cursor(cursor: &str) -> Result<u64> {
    let invalid = || Error::InvalidCursor {
        cursor: cursor.to_owned(),
    };
    if !cursor.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    match cursor.parse() {
        Ok(0) | Err(_) => Err(invalid()),
        Ok(position) => Ok(position),
    }
}

/// Escapes the characters that are special in a Redis glob pattern.
fn escape_glob(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The `PEXPIREAT` timestamp for `at`: milliseconds since the epoch, rounded up so that the
/// domain never goes before `at`. Times before the epoch are the epoch (already past).
fn unix_millis_ceil(at: SystemTime) -> i64 {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let millis = since.as_millis() + u128::from(!since.subsec_nanos().is_multiple_of(1_000_000));
    i64::try_from(millis).unwrap_or(i64::MAX)
}

impl fmt::Debug for RedisArchive {
    /// Shows servers by address only, never a URL's password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let address = |url: &String| {
            ::redis::IntoConnectionInfo::into_connection_info(url.as_str())
                .map_or_else(|_| "?".to_owned(), |info| info.addr().to_string())
        };
        let mut debug = f.debug_struct("RedisArchive");
        match (&self.target, &self.pool.servers) {
            (_, Servers::Single(client)) => {
                let info = client.get_connection_info();
                debug
                    .field("server", &info.addr().to_string())
                    .field("db", &info.redis_settings().db())
            }
            (Target::Cluster(nodes), _) => {
                debug.field("cluster", &nodes.iter().map(address).collect::<Vec<_>>())
            }
            (Target::Sentinel { master, sentinels }, _) => debug.field("master", master).field(
                "sentinels",
                &sentinels.iter().map(address).collect::<Vec<_>>(),
            ),
            (Target::Url(url), _) => debug.field("server", &address(url)),
        };
        debug
            .field("prefix", &self.prefix)
            .field("legacy_layout", &self.legacy_layout)
            .field("idle_connections", &self.pool.idle.lock().len())
            .finish_non_exhaustive()
    }
}

impl Archive for RedisArchive {
    fn get(&self, domain: &str, key: &str) -> Result<Option<Vec<u8>>> {
        validate_entry(domain, key)?;
        let hash = self.hash(domain);
        self.run_read("get a value", |conn| {
            ::redis::cmd("HGET").arg(&hash).arg(key).query(conn)
        })
    }

    fn set(&self, domain: &str, key: &str, value: &[u8]) -> Result<()> {
        validate_entry(domain, key)?;
        let hash = self.hash(domain);
        self.run("set a value", |conn| {
            ::redis::cmd("HSET")
                .arg(&hash)
                .arg(key)
                .arg(value)
                .query(conn)
        })
    }

    fn has(&self, domain: &str, key: &str) -> Result<bool> {
        validate_entry(domain, key)?;
        let hash = self.hash(domain);
        self.run_read("check a key", |conn| {
            ::redis::cmd("HEXISTS").arg(&hash).arg(key).query(conn)
        })
    }

    fn remove(&self, domain: &str, key: &str) -> Result<bool> {
        validate_entry(domain, key)?;
        let hash = self.hash(domain);
        let removed: u64 = self.run("remove a key", |conn| {
            ::redis::cmd("HDEL").arg(&hash).arg(key).query(conn)
        })?;
        Ok(removed > 0)
    }

    fn has_domain(&self, domain: &str) -> Result<bool> {
        validate_domain(domain)?;
        let hash = self.hash(domain);
        let count: u64 = self.run_read("check a domain", |conn| {
            ::redis::cmd("EXISTS").arg(&hash).query(conn)
        })?;
        Ok(count > 0)
    }

    fn remove_domain(&self, domain: &str) -> Result<bool> {
        validate_domain(domain)?;
        let hash = self.hash(domain);
        let removed: u64 = self.run("remove a domain", |conn| {
            ::redis::cmd("DEL").arg(&hash).query(conn)
        })?;
        Ok(removed > 0)
    }

    fn compare_and_swap(
        &self,
        domain: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        validate_entry(domain, key)?;
        let mut invocation = self.compare_and_swap.key(self.hash(domain));
        invocation
            .arg(key)
            .arg(u8::from(expected.is_some()))
            .arg(expected.unwrap_or_default())
            .arg(u8::from(new.is_some()))
            .arg(new.unwrap_or_default());
        let swapped: u8 = self.run("compare and swap a value", |conn| invocation.invoke(conn))?;
        Ok(swapped == 1)
    }

    /// One Lua script over the domain's hash, like
    /// [`compare_and_swap`](Archive::compare_and_swap)'s: one round trip, atomic against every
    /// other client of the server.
    fn compare_and_swap_many(&self, domain: &str, swaps: &[Swap<'_>]) -> Result<bool> {
        check_swaps(domain, swaps)?;
        if swaps.is_empty() {
            return Ok(true);
        }
        let (two, args) = swap_script_args(swaps);
        let script = if two {
            &self.compare_and_swap_two
        } else {
            &self.compare_and_swap_many
        };
        let mut invocation = script.key(self.hash(domain));
        for arg in args {
            invocation.arg(arg);
        }
        let swapped: u8 = self.run("compare and swap several values", |conn| {
            invocation.invoke(conn)
        })?;
        Ok(swapped == 1)
    }

    /// One `HMGET`, which the server answers at one moment.
    fn get_many(&self, domain: &str, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        check_keys(domain, keys)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let hash = self.hash(domain);
        self.run_read("get several values", |conn| {
            ::redis::cmd("HMGET").arg(&hash).arg(keys).query(conn)
        })
    }

    /// One `HMGET`, as [`get_many`](Archive::get_many), on the archive's multiplexed async
    /// connection: see [connections](RedisArchive#connections-and-failures). `None` on a cluster
    /// or through Sentinel.
    fn get_many_async(&self, domain: &str, keys: &[&str]) -> Option<GetManyFuture> {
        let multiplexed = Arc::clone(self.multiplexed.as_ref()?);
        if let Err(err) = check_keys(domain, keys) {
            return Some(Box::pin(std::future::ready(Err(err))));
        }
        if keys.is_empty() {
            return Some(Box::pin(std::future::ready(Ok(Vec::new()))));
        }
        let keys = keys.iter().map(|&key| key.to_owned()).collect();
        Some(multiplexed.get_many(self.hash(domain), keys))
    }

    /// The script of [`compare_and_swap_many`](Archive::compare_and_swap_many), on the
    /// archive's multiplexed async connection, sent once: see
    /// [connections](RedisArchive#connections-and-failures). `None` on a cluster, through
    /// Sentinel, and with [`replicas_ack`](RedisArchiveBuilder::replicas_ack) (whose `WAIT`
    /// would hold up every other call on the shared connection).
    fn compare_and_swap_many_async(&self, domain: &str, swaps: &[Swap<'_>]) -> Option<SwapFuture> {
        if self.pool.replicas_ack.is_some() {
            return None;
        }
        let multiplexed = Arc::clone(self.multiplexed.as_ref()?);
        if let Err(err) = check_swaps(domain, swaps) {
            return Some(Box::pin(std::future::ready(Err(err))));
        }
        if swaps.is_empty() {
            return Some(Box::pin(std::future::ready(Ok(true))));
        }
        let (two, args) = swap_script_args(swaps);
        let args = args.into_iter().map(<[u8]>::to_vec).collect();
        Some(multiplexed.compare_and_swap_many(self.hash(domain), two, args))
    }

    fn list_domains(&self, cursor: Option<&str>, limit: usize) -> Result<Page> {
        let keep = |name: &[u8]| self.listed_domain(name);
        if matches!(self.pool.servers, Servers::Cluster(_)) {
            return cluster::list_domains(&self.pool, cursor, limit, &self.pattern, keep);
        }
        self.scan_page("list domains", cursor, limit, keep, |conn, start, count| {
            ::redis::cmd("SCAN")
                .arg(start)
                .arg("MATCH")
                .arg(&self.pattern)
                .arg("COUNT")
                .arg(count)
                .arg("TYPE")
                .arg("hash")
                .query(conn)
        })
    }

    fn list_keys(&self, domain: &str, cursor: Option<&str>, limit: usize) -> Result<Page> {
        validate_domain(domain)?;
        let hash = self.hash(domain);
        let keep = |name: &[u8]| listed_name(b"", name);
        self.scan_page("list keys", cursor, limit, keep, |conn, start, count| {
            self.scan_fields
                .key(&hash)
                .arg(start)
                .arg(count)
                .invoke(conn)
        })
    }

    fn set_many(&self, entries: &[(&str, &str, &[u8])]) -> Result<()> {
        for (domain, key, _) in entries {
            validate_entry(domain, key)?;
        }
        let hashes: Vec<String> = entries.iter().map(|(d, _, _)| self.hash(d)).collect();
        self.batch(
            "set many values",
            &self.batch_set,
            &hashes,
            |i, invocation| {
                let (_, key, value) = entries[i];
                invocation.arg(key).arg(value);
            },
        )?;
        Ok(())
    }

    fn remove_many(&self, entries: &[(&str, &str)]) -> Result<usize> {
        for (domain, key) in entries {
            validate_entry(domain, key)?;
        }
        let hashes: Vec<String> = entries.iter().map(|(d, _)| self.hash(d)).collect();
        self.batch(
            "remove a batch of keys",
            &self.batch_remove,
            &hashes,
            |i, invocation| {
                invocation.arg(entries[i].1);
            },
        )
    }

    fn remove_domains(&self, domains: &[&str]) -> Result<usize> {
        for domain in domains {
            validate_domain(domain)?;
        }
        let hashes: Vec<String> = domains.iter().map(|d| self.hash(d)).collect();
        self.batch(
            "remove a batch of domains",
            &self.batch_remove_domains,
            &hashes,
            |_, _| {},
        )
    }

    fn expire_domain(&self, domain: &str, at: SystemTime) -> Result<bool> {
        validate_domain(domain)?;
        let hash = self.hash(domain);
        let millis = unix_millis_ceil(at);
        let mut invocation = self.expire_later.key(&hash);
        invocation.arg(millis);
        self.run("set a domain's expiry", |conn| {
            invocation.invoke::<u8>(conn)
        })?;
        Ok(true)
    }

    /// One Lua script over every group's hash: one round trip, atomic against every other
    /// client of the server (on a cluster, one script per hash slot, each atomic, in slot
    /// order). `KEYS[g]` is group `g`'s hash; its arguments are the number of its swaps, then
    /// five for each swap, as the script of `compare_and_swap_many` takes them. The script
    /// answers 1 or 0 for each group.
    fn compare_and_swap_each(&self, groups: &[SwapGroup<'_>]) -> Result<Vec<bool>> {
        check_groups(groups)?;
        let hashes: Vec<String> = groups.iter().map(|(domain, _)| self.hash(domain)).collect();
        let mut swapped = vec![false; groups.len()];
        for part in self.parts(&hashes) {
            let mut invocation = self.compare_and_swap_each.prepare_invoke();
            for &g in &part {
                let swaps = groups[g].1;
                invocation.key(&hashes[g]).arg(swaps.len());
                for &(key, expected, new) in swaps {
                    invocation
                        .arg(key)
                        .arg(u8::from(expected.is_some()))
                        .arg(expected.unwrap_or_default())
                        .arg(swap_action(expected, new))
                        .arg(new.unwrap_or_default());
                }
            }
            let answers: Vec<u8> = self
                .run("compare and swap values of several domains", |conn| {
                    invocation.invoke(conn)
                })?;
            if answers.len() != part.len() {
                return Err(Error::Backend {
                    backend: "redis",
                    operation: "compare and swap values of several domains",
                    source: format!(
                        "the script answered {} outcomes for {} groups",
                        answers.len(),
                        part.len()
                    )
                    .into(),
                });
            }
            for (g, answer) in part.into_iter().zip(answers) {
                swapped[g] = answer == 1;
            }
        }
        Ok(swapped)
    }

    /// One `MULTI`/`EXEC` of `HGET`s: one round trip, every value from one moment of the
    /// server (on a cluster, one per hash slot: each slot's values from one moment).
    fn get_each(&self, entries: &[(&str, &str)]) -> Result<Vec<Option<Vec<u8>>>> {
        for (domain, key) in entries {
            validate_entry(domain, key)?;
        }
        let hashes: Vec<String> = entries
            .iter()
            .map(|(domain, _)| self.hash(domain))
            .collect();
        let mut values = vec![None; entries.len()];
        for part in self.parts(&hashes) {
            let mut pipeline = ::redis::pipe();
            pipeline.atomic();
            for &i in &part {
                pipeline.cmd("HGET").arg(&hashes[i]).arg(entries[i].1);
            }
            let read: Vec<Option<Vec<u8>>> =
                self.run_read("read several values", |conn| pipeline.query(conn))?;
            for (i, value) in part.into_iter().zip(read) {
                values[i] = value;
            }
        }
        Ok(values)
    }
}

/// The arguments of the script of a `compare_and_swap_many` of `swaps`, and whether the script
/// is [`COMPARE_AND_SWAP_TWO`] (the swaps have its shape), else [`COMPARE_AND_SWAP_MANY`] (five
/// arguments a swap).
fn swap_script_args<'a>(swaps: &[Swap<'a>]) -> (bool, Vec<&'a [u8]>) {
    if let [
        (first, Some(expected_first), Some(new_first)),
        (second, Some(expected_second), Some(new_second)),
    ] = *swaps
    {
        let args = vec![
            first.as_bytes(),
            expected_first,
            second.as_bytes(),
            expected_second,
            new_first,
            new_second,
        ];
        return (true, args);
    }
    let mut args = Vec::with_capacity(5 * swaps.len());
    for &(key, expected, new) in swaps {
        let present: &[u8] = if expected.is_some() { b"1" } else { b"0" };
        args.extend([
            key.as_bytes(),
            present,
            expected.unwrap_or_default(),
            swap_action(expected, new).as_bytes(),
            new.unwrap_or_default(),
        ]);
    }
    (false, args)
}

/// What the swap scripts do with one key: `s` store the new value, `d` delete the field, `c`
/// only compare (the expected and new values are the same).
fn swap_action(expected: Option<&[u8]>, new: Option<&[u8]>) -> &'static str {
    match new {
        _ if expected == new => "c",
        Some(_) => "s",
        None => "d",
    }
}

/// The script of [`RedisArchive`]'s `compare_and_swap_each`: each group compared, then (if every key matched) written, before the next group.
const COMPARE_AND_SWAP_EACH: &str = r"
local answers = {}
local at = 1
for g = 1, #KEYS do
  local n = tonumber(ARGV[at])
  at = at + 1
  local last = at + 5 * (n - 1)
  local matched = 1
  for i = at, last, 5 do
    local current = redis.call('HGET', KEYS[g], ARGV[i])
    if ARGV[i + 1] == '1' then
      if current ~= ARGV[i + 2] then matched = 0 break end
    elseif current then
      matched = 0 break
    end
  end
  if matched == 1 then
    for i = at, last, 5 do
      if ARGV[i + 3] == 's' then
        redis.call('HSET', KEYS[g], ARGV[i], ARGV[i + 4])
      elseif ARGV[i + 3] == 'd' then
        redis.call('HDEL', KEYS[g], ARGV[i])
      end
    end
  end
  answers[g] = matched
  at = at + 5 * n
end
return answers
";

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io::{self, BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::thread;

    use super::connection::interrupted;
    use super::*;

    thread_local! {
        /// Whether the next command this thread runs loses its reply to an interrupting signal.
        static LOSE_NEXT_REPLY: Cell<bool> = const { Cell::new(false) };
    }

    /// Called by [`RedisArchive::attempt`] after each command: turns its result into the error
    /// an interrupted read of the reply gives, when the test asked for it.
    pub(super) fn lose_reply<T>(result: RedisResult<T>) -> RedisResult<T> {
        if LOSE_NEXT_REPLY.replace(false) {
            Err(RedisError::from(io::Error::from(
                io::ErrorKind::Interrupted,
            )))
        } else {
            result
        }
    }

    /// A stand-in for a Redis server: it answers every command with a plausible reply and
    /// records the command names, so a test can count what reached the server.
    struct FakeServer {
        url: String,
        commands: Arc<Mutex<Vec<String>>>,
    }

    impl FakeServer {
        fn start() -> FakeServer {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("redis://{}/0", listener.local_addr().unwrap());
            let commands = Arc::new(Mutex::new(Vec::new()));
            let log = Arc::clone(&commands);
            // The threads end with the test process; each client's ends when it disconnects.
            thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { return };
                    let log = Arc::clone(&log);
                    thread::spawn(move || serve(stream, &log));
                }
            });
            FakeServer { url, commands }
        }

        fn count(&self, name: &str) -> usize {
            self.commands.lock().iter().filter(|c| *c == name).count()
        }
    }

    fn serve(stream: TcpStream, log: &Mutex<Vec<String>>) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        // Inside MULTI: how many commands are queued.
        let mut queued: Option<usize> = None;
        while let Some(name) = read_command(&mut reader) {
            log.lock().push(name.clone());
            let reply = match (name.as_str(), queued) {
                ("MULTI", _) => {
                    queued = Some(0);
                    "+OK\r\n".to_owned()
                }
                ("EXEC", Some(n)) => {
                    queued = None;
                    format!("*{n}\r\n{}", ":1\r\n".repeat(n))
                }
                (_, Some(n)) => {
                    queued = Some(n + 1);
                    "+QUEUED\r\n".to_owned()
                }
                ("PING", None) => "+PONG\r\n".to_owned(),
                ("HGET", None) => "$-1\r\n".to_owned(),
                ("CLIENT", None) => "+OK\r\n".to_owned(),
                (_, None) => ":1\r\n".to_owned(),
            };
            if writer.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    }

    /// Reads one command (a RESP array of bulk strings) and returns its name in upper case;
    /// `None` at the end of the stream.
    fn read_command(reader: &mut impl BufRead) -> Option<String> {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let count: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
        let mut name = None;
        for _ in 0..count {
            line.clear();
            reader.read_line(&mut line).ok()?;
            let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
            let mut arg = vec![0; len + 2];
            reader.read_exact(&mut arg).ok()?;
            arg.truncate(len);
            name.get_or_insert_with(|| String::from_utf8_lossy(&arg).to_ascii_uppercase());
        }
        name
    }

    /// The `RedisError` behind a backend error.
    fn redis_source(err: &Error) -> &RedisError {
        std::error::Error::source(err)
            .and_then(|source| source.downcast_ref::<RedisError>())
            .unwrap()
    }

    #[test]
    fn a_write_whose_reply_was_interrupted_is_not_sent_again() {
        type Write = fn(&RedisArchive) -> Result<()>;
        let writes: [(&str, Write); 9] = [
            ("HSET", |a| a.set("d", "k", b"v")),
            ("EVALSHA", |a| {
                let swaps = [("k", None, Some(&b"v"[..])), ("l", Some(&b"w"[..]), None)];
                a.compare_and_swap_many("d", &swaps).map(drop)
            }),
            ("EVALSHA", |a| {
                a.set_many(&[("d", "k", b"v"), ("e", "k", b"w")])
            }),
            ("EVALSHA", |a| {
                a.compare_and_swap("d", "k", None, Some(b"v")).map(drop)
            }),
            ("EVALSHA", |a| a.expire_domain("d", UNIX_EPOCH).map(drop)),
            ("HDEL", |a| a.remove("d", "k").map(drop)),
            ("DEL", |a| a.remove_domain("d").map(drop)),
            ("EVALSHA", |a| a.remove_many(&[("d", "k")]).map(drop)),
            ("EVALSHA", |a| a.remove_domains(&["d"]).map(drop)),
        ];
        for (command, write) in writes {
            // A server of its own for each write, so that counting its command is enough.
            let server = FakeServer::start();
            let archive = RedisArchive::open(&server.url).unwrap();
            LOSE_NEXT_REPLY.set(true);
            let err = write(&archive).unwrap_err();
            assert!(interrupted(redis_source(&err)), "{command}: {err:?}");
            assert_eq!(server.count(command), 1, "{command} was sent again");
            // The next write goes ahead as usual.
            write(&archive).unwrap();
            assert_eq!(server.count(command), 2, "{command}");
        }
    }

    #[test]
    fn a_read_whose_reply_was_interrupted_is_sent_again() {
        let server = FakeServer::start();
        let archive = RedisArchive::open(&server.url).unwrap();
        LOSE_NEXT_REPLY.set(true);
        assert_eq!(archive.get("d", "k").unwrap(), None);
        assert_eq!(server.count("HGET"), 2);
        LOSE_NEXT_REPLY.set(true);
        assert!(archive.has_domain("d").unwrap());
        assert_eq!(server.count("EXISTS"), 2);
    }

    #[test]
    fn cursors_are_nonzero_decimal_numbers() {
        assert_eq!(parse_cursor("17").unwrap(), 17);
        assert_eq!(parse_cursor("18446744073709551615").unwrap(), u64::MAX);
        for bad in [
            "",
            "0",
            "00",
            "+1",
            "-1",
            " 1",
            "1a",
            "18446744073709551616",
            "k",
        ] {
            assert!(
                matches!(parse_cursor(bad), Err(Error::InvalidCursor { cursor }) if cursor == bad),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn interruptions_are_recognised() {
        let interrupted_io = RedisError::from(io::Error::from(io::ErrorKind::Interrupted));
        assert!(interrupted(&interrupted_io));
        let refused = RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(!interrupted(&refused));
        let timeout = RedisError::from(io::Error::from(io::ErrorKind::TimedOut));
        assert!(!interrupted(&timeout));
    }

    /// Archives on each of `prefixes`, in the `/` or the legacy layout, unconnected.
    fn offline(prefixes: &[&str], legacy: bool) -> Vec<RedisArchive> {
        prefixes
            .iter()
            .map(|prefix| {
                RedisArchive::builder("redis://127.0.0.1/")
                    .prefix(*prefix)
                    .legacy_layout(legacy)
                    .build()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn hash_names_are_one_to_one_and_each_prefix_lists_only_its_own() {
        let prefixes = [
            "",
            "/",
            "//",
            "app",
            "app:",
            "app:admin:",
            "app:admin",
            "app/",
            "app/admin",
            "app/admin/",
            "admin",
            "a*[",
            "a\\",
        ];
        let domains = [
            "x",
            "admin",
            "admin:x",
            "app",
            "app:admin:x",
            "-",
            "x.y",
            "\u{e9}",
        ];
        let archives = offline(&prefixes, false);
        let mut owners = std::collections::BTreeMap::new();
        for archive in &archives {
            for domain in domains {
                let hash = archive.hash(domain);
                let owner = (archive.prefix(), domain);
                if let Some(other) = owners.insert(hash.clone(), owner) {
                    panic!("{hash:?} is the hash of both {other:?} and {owner:?}");
                }
            }
        }
        // Each archive lists exactly its own domains out of every hash name there is.
        for archive in &archives {
            let mut listed: Vec<_> = owners
                .keys()
                .filter_map(|hash| listed_name(archive.stem.as_bytes(), hash.as_bytes()))
                .collect();
            listed.sort_unstable();
            let mut own = domains.to_vec();
            own.sort_unstable();
            assert_eq!(listed, own, "prefix {:?}", archive.prefix());
        }
    }

    #[test]
    fn legacy_names_are_the_prefix_and_the_domain_and_never_a_slash_layout_name() {
        let legacy = offline(&["", "app:", "app:admin:"], true);
        assert_eq!(legacy[1].hash("admin:x"), "app:admin:x");
        assert_eq!(legacy[2].hash("x"), "app:admin:x");
        let slash = offline(&["", "app:", "app:admin:", "app"], false);
        for old in &legacy {
            for new in &slash {
                let name = new.hash("x");
                assert_eq!(listed_name(old.stem.as_bytes(), name.as_bytes()), None);
            }
        }
    }

    /// On a cluster the domain is the hash tag, and the name rule allows `{` and `}` in it: such
    /// a domain may share its slot with others (the tag ends at its first `}`), but its hash
    /// name still lists back as the domain, and every domain is still one key in one slot.
    #[test]
    fn cluster_hash_names_tag_the_domain_and_list_back_whatever_braces_it_holds() {
        let archive = RedisArchive::cluster(["redis://127.0.0.1:1"])
            .prefix("app")
            .build()
            .unwrap();
        assert_eq!(archive.hash("d"), "app/{d}");
        for domain in ["d", "a}b", "}x", "{", "{}", "a{b}c", "}"] {
            let hash = archive.hash(domain);
            assert_eq!(
                archive.listed_domain(hash.as_bytes()).as_deref(),
                Some(domain)
            );
        }
        assert_eq!(
            cluster::slot(archive.hash("d").as_bytes()),
            cluster::slot(b"d")
        );
        // Not this archive's: another prefix, or the one-server layout.
        assert_eq!(archive.listed_domain(b"app/d"), None);
        assert_eq!(archive.listed_domain(b"other/{d}"), None);
    }

    /// The async calls are offered on one server only, and the swap not with `replicas_ack`,
    /// whose `WAIT` would hold up the shared connection; names are checked however they answer.
    #[test]
    fn async_calls_are_offered_on_one_server_without_replicas_ack() {
        let single = offline(&["app"], false).remove(0);
        assert!(single.get_many_async("d", &["k"]).is_some());
        assert!(
            single
                .compare_and_swap_many_async("d", &[("k", None, None)])
                .is_some()
        );
        let acked = RedisArchive::builder("redis://127.0.0.1/")
            .replicas_ack(Some((1, Duration::from_millis(10))))
            .build()
            .unwrap();
        assert!(acked.get_many_async("d", &["k"]).is_some());
        assert!(
            acked
                .compare_and_swap_many_async("d", &[("k", None, None)])
                .is_none()
        );
        let cluster = RedisArchive::cluster(["redis://127.0.0.1:1"])
            .build()
            .unwrap();
        let sentinel = RedisArchive::sentinel("m", ["redis://127.0.0.1:1"])
            .build()
            .unwrap();
        for archive in [cluster, sentinel] {
            assert!(archive.get_many_async("d", &["k"]).is_none());
            assert!(
                archive
                    .compare_and_swap_many_async("d", &[("k", None, None)])
                    .is_none()
            );
        }
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("app:"), "app:");
        assert_eq!(escape_glob(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
    }

    #[test]
    fn expiry_rounds_up_to_the_millisecond() {
        let at = UNIX_EPOCH + Duration::from_millis(1500);
        assert_eq!(unix_millis_ceil(at), 1500);
        assert_eq!(unix_millis_ceil(at + Duration::from_nanos(1)), 1501);
        assert_eq!(unix_millis_ceil(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
