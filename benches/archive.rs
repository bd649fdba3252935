//! Archive benchmarks: `get`, durable `set`, durable `compare_and_swap`, `has_domain` and
//! `remove_domain` of 1,000 keys, with the backend and the value size as parameters, and durable
//! `set` from 1 to 64 writer threads. SQLite (WAL, `synchronous=FULL` and `NORMAL`) runs the same
//! operations as the peer a user would pick instead.
//!
//! With the feature `archive-postgres`, `PostgresArchive` runs them too (a table of its own for
//! each case, a pool of one busy connection), on `ARCHIVE_POSTGRES_URL` or on a server the bench
//! starts on loopback with `tests/support/postgres_server.rs` (the server's defaults: `fsync`
//! and `synchronous_commit` on); without either, the PostgreSQL cases are left out with a notice:
//! `cargo bench --features archive-dir,archive-postgres --bench archive`.
//!
//! The `batch_set` group times one redb commit of a batch of sets to scattered sessions, which is
//! what group commit makes of concurrent writers; the `disk_sync` group prices the disk itself: one `sync_data` after writing a commit's worth of
//! 4 KiB pages, scattered or side by side. It bounds what group commit can gain on the machine at
//! hand (see docs/PERFORMANCE.md).
//!
//! Run `cargo bench --bench archive`; `cargo bench --bench archive -- --test` runs every benchmark
//! once, as a quick check that they work.

mod common;

#[cfg(feature = "archive-postgres")]
#[path = "../tests/support/postgres_server.rs"]
mod postgres_server;

use std::cell::RefCell;
use std::fs::File;
use std::hint::black_box;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use session_archive::{Archive, DirArchive, MemoryArchive, RedbArchive};

/// The operations under comparison: the [`Archive`] methods the benches call, so that SQLite,
/// which is not an archive, can run them too.
trait Store: Send + Sync {
    fn get(&self, domain: &str, key: &str) -> Option<Vec<u8>>;
    fn set(&self, domain: &str, key: &str, value: &[u8]);
    fn set_many(&self, entries: &[(&str, &str, &[u8])]);
    fn has_domain(&self, domain: &str) -> bool;
    fn remove_domain(&self, domain: &str) -> bool;
    /// A durable write of `new` if the stored value is `expected`; whether it was.
    fn compare_and_swap(&self, domain: &str, key: &str, expected: &[u8], new: &[u8]) -> bool;
}

impl<A: Archive> Store for A {
    fn get(&self, domain: &str, key: &str) -> Option<Vec<u8>> {
        Archive::get(self, domain, key).expect("get")
    }
    fn set(&self, domain: &str, key: &str, value: &[u8]) {
        Archive::set(self, domain, key, value).expect("set");
    }
    fn set_many(&self, entries: &[(&str, &str, &[u8])]) {
        Archive::set_many(self, entries).expect("set_many");
    }
    fn has_domain(&self, domain: &str) -> bool {
        Archive::has_domain(self, domain).expect("has_domain")
    }
    fn remove_domain(&self, domain: &str) -> bool {
        Archive::remove_domain(self, domain).expect("remove_domain")
    }
    fn compare_and_swap(&self, domain: &str, key: &str, expected: &[u8], new: &[u8]) -> bool {
        Archive::compare_and_swap(self, domain, key, Some(expected), Some(new))
            .expect("compare_and_swap")
    }
}

/// SQLite in WAL mode, one table `(domain, key, value) WITHOUT ROWID`, cached statements. The
/// connection sits behind a mutex because a `Connection` is not `Sync`; uncontended, as in the
/// single-threaded benches, that costs a few nanoseconds.
struct Sqlite(Mutex<Connection>);

impl Sqlite {
    fn open(path: &Path, synchronous: &str) -> Sqlite {
        let conn = Connection::open(path).expect("open sqlite");
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous}; PRAGMA busy_timeout=60000;
             CREATE TABLE IF NOT EXISTS entries (domain TEXT NOT NULL, key TEXT NOT NULL,
                 value BLOB NOT NULL, PRIMARY KEY (domain, key)) WITHOUT ROWID;"
        ))
        .expect("set up sqlite");
        Sqlite(Mutex::new(conn))
    }
}

const SQL_SET: &str = "INSERT INTO entries (domain, key, value) VALUES (?1, ?2, ?3)
    ON CONFLICT (domain, key) DO UPDATE SET value = excluded.value";

impl Store for Sqlite {
    fn get(&self, domain: &str, key: &str) -> Option<Vec<u8>> {
        let conn = self.0.lock();
        let mut statement = conn
            .prepare_cached("SELECT value FROM entries WHERE domain = ?1 AND key = ?2")
            .expect("prepare");
        statement
            .query_row(params![domain, key], |row| row.get(0))
            .optional()
            .expect("select")
    }
    fn set(&self, domain: &str, key: &str, value: &[u8]) {
        let conn = self.0.lock();
        let mut statement = conn.prepare_cached(SQL_SET).expect("prepare");
        statement
            .execute(params![domain, key, value])
            .expect("insert");
    }
    fn set_many(&self, entries: &[(&str, &str, &[u8])]) {
        let mut conn = self.0.lock();
        let txn = conn.transaction().expect("begin");
        {
            let mut statement = txn.prepare_cached(SQL_SET).expect("prepare");
            for (domain, key, value) in entries {
                statement
                    .execute(params![domain, key, value])
                    .expect("insert");
            }
        }
        txn.commit().expect("commit");
    }
    fn has_domain(&self, domain: &str) -> bool {
        let conn = self.0.lock();
        let mut statement = conn
            .prepare_cached("SELECT 1 FROM entries WHERE domain = ?1 LIMIT 1")
            .expect("prepare");
        statement.exists(params![domain]).expect("select")
    }
    fn remove_domain(&self, domain: &str) -> bool {
        let conn = self.0.lock();
        let mut statement = conn
            .prepare_cached("DELETE FROM entries WHERE domain = ?1")
            .expect("prepare");
        statement.execute(params![domain]).expect("delete") > 0
    }
    /// As an app does it on SQLite: read and write in one `BEGIN IMMEDIATE` transaction.
    fn compare_and_swap(&self, domain: &str, key: &str, expected: &[u8], new: &[u8]) -> bool {
        let mut conn = self.0.lock();
        let txn = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .expect("begin immediate");
        let current: Option<Vec<u8>> = txn
            .prepare_cached("SELECT value FROM entries WHERE domain = ?1 AND key = ?2")
            .expect("prepare")
            .query_row(params![domain, key], |row| row.get(0))
            .optional()
            .expect("select");
        if current.as_deref() != Some(expected) {
            return false;
        }
        txn.prepare_cached(SQL_SET)
            .expect("prepare")
            .execute(params![domain, key, new])
            .expect("update");
        txn.commit().expect("commit");
        true
    }
}

/// Opens a fresh store of one backend in an empty directory.
type Open = fn(&Path) -> Box<dyn Store>;

/// The backends under comparison, one line each; PostgreSQL is added by [`backends`].
const BACKENDS: &[(&str, Open)] = &[
    ("memory", |_| Box::new(MemoryArchive::new())),
    ("redb", |dir| {
        Box::new(RedbArchive::open(dir.join("archive.redb")).expect("open redb"))
    }),
    ("dir", |dir| {
        Box::new(DirArchive::open(dir.join("archive")).expect("open dir"))
    }),
    ("sqlite-full", |dir| {
        Box::new(Sqlite::open(&dir.join("archive.sqlite"), "FULL"))
    }),
    ("sqlite-normal", |dir| {
        Box::new(Sqlite::open(&dir.join("archive.sqlite"), "NORMAL"))
    }),
];

/// [`BACKENDS`], and PostgreSQL when the feature is on and a server can be had.
fn backends() -> Vec<(&'static str, Open)> {
    #[allow(unused_mut, reason = "PostgreSQL joins only with its feature")]
    let mut backends = BACKENDS.to_vec();
    #[cfg(feature = "archive-postgres")]
    if postgres::available() {
        backends.push(("postgres", postgres::open));
    }
    backends
}

/// `PostgresArchive` on the bench's server.
#[cfg(feature = "archive-postgres")]
mod postgres {
    use std::path::Path;
    use std::sync::OnceLock;

    use session_archive::PostgresArchive;

    use super::{Store, postgres_server};

    /// Whether a server can be had (`ARCHIVE_POSTGRES_URL`, or one started here); says once
    /// why not.
    pub fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| match postgres_server::shared() {
            Ok(_) => true,
            Err(reason) => {
                eprintln!(
                    "NOTICE: skipping the PostgreSQL benches: {reason}. Set ARCHIVE_POSTGRES_URL \
                     or install postgresql to run them."
                );
                false
            }
        })
    }

    /// A `PostgresArchive` in a fresh table of the server.
    pub fn open(_: &Path) -> Box<dyn Store> {
        let url = postgres_server::shared_url().expect("the bench's PostgreSQL server");
        Box::new(
            PostgresArchive::builder(&url)
                .table(&postgres_server::unique_table())
                .connect()
                .expect("connect to PostgreSQL"),
        )
    }
}

/// The durable backends the concurrent writers run on, SQLite the two ways applications run it:
///
/// - `sqlite-full`: one writer connection shared by every thread (behind a mutex), the usual
///   advice for SQLite writers; each set is one transaction and one fsync, in turn.
/// - `sqlite-full-immediate`: a pool, one connection per writer, each set in `BEGIN IMMEDIATE`,
///   so a writer takes the write lock before it reads anything and never has to give up a
///   transaction half-way; waiting writers sit in SQLite's busy handler.
///
/// The tables report both; the better of the two is SQLite's figure.
const CONCURRENT_BACKENDS: &[&str] = &["redb", "sqlite-full", "sqlite-full-immediate", "dir"];

/// One connection of a pool: every set is a `BEGIN IMMEDIATE` transaction of its own.
struct SqliteImmediate(Sqlite);

impl SqliteImmediate {
    fn set(&self, domain: &str, key: &str, value: &[u8]) {
        let mut conn = (self.0).0.lock();
        let txn = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .expect("begin immediate");
        txn.prepare_cached(SQL_SET)
            .expect("prepare")
            .execute(params![domain, key, value])
            .expect("insert");
        txn.commit().expect("commit");
    }
}

impl Store for SqliteImmediate {
    fn get(&self, domain: &str, key: &str) -> Option<Vec<u8>> {
        self.0.get(domain, key)
    }
    fn set(&self, domain: &str, key: &str, value: &[u8]) {
        SqliteImmediate::set(self, domain, key, value);
    }
    fn set_many(&self, entries: &[(&str, &str, &[u8])]) {
        self.0.set_many(entries);
    }
    fn has_domain(&self, domain: &str) -> bool {
        self.0.has_domain(domain)
    }
    fn remove_domain(&self, domain: &str) -> bool {
        self.0.remove_domain(domain)
    }
    fn compare_and_swap(&self, domain: &str, key: &str, expected: &[u8], new: &[u8]) -> bool {
        self.0.compare_and_swap(domain, key, expected, new)
    }
}

/// The writer thread counts of the concurrent benchmark.
const WRITERS: [usize; 4] = [1, 8, 32, 64];

/// The value sizes: a small session (200 B) and a large one (4 KiB).
const VALUE_SIZES: [usize; 2] = [200, 4096];

/// How many domains `get` and `set` spread over.
const DOMAINS: usize = 1000;

/// The keys removed by one `remove_domain`.
const DOMAIN_KEYS: usize = 1000;

fn value(size: usize) -> Vec<u8> {
    (0..=250u8).cycle().take(size).collect()
}

/// The next unused stamp, shared by every durable set of the benches.
static STAMPS: AtomicU64 = AtomicU64::new(0);

/// `value` with `n` stamped into its first bytes, so that every durable set really changes the
/// stored bytes: SQLite skips writing (and syncing) a row overwritten with identical content,
/// which would make it look durable at memory speed.
fn stamped(value: &mut [u8], n: u64) {
    let stamp = n.to_le_bytes();
    let len = stamp.len().min(value.len());
    value[..len].copy_from_slice(&stamp[..len]);
}

fn domain_names() -> Vec<String> {
    (0..DOMAINS).map(|i| format!("domain-{i:05}")).collect()
}

/// Runs `bench` once per backend and value size, each on a fresh store that `prepare` filled
/// first. Criterion calls the routine once per sample, so anything slow to set up (1,000 durable
/// files for `dir`) belongs in `prepare`, which runs once.
fn each_case(
    c: &mut Criterion,
    name: &str,
    prepare: impl Fn(&dyn Store, &[u8]),
    mut bench: impl FnMut(&mut criterion::Bencher<'_>, &dyn Store, &[u8]),
) {
    let mut group = common::group(c, name);
    for (backend, open) in backends() {
        for size in VALUE_SIZES {
            let dir = tempfile::tempdir().expect("temporary directory");
            let store = open(dir.path());
            let value = value(size);
            prepare(store.as_ref(), &value);
            group.throughput(Throughput::Elements(1));
            group.bench_function(BenchmarkId::new(backend, format!("{size}B")), |b| {
                bench(b, store.as_ref(), &value);
            });
        }
    }
    group.finish();
}

/// Stores one `session.json` in each of the [`DOMAINS`] domains.
fn populate(store: &dyn Store, value: &[u8]) {
    let domains = domain_names();
    let entries: Vec<(&str, &str, &[u8])> = domains
        .iter()
        .map(|d| (d.as_str(), "session.json", value))
        .collect();
    store.set_many(&entries);
}

fn get(c: &mut Criterion) {
    let domains = domain_names();
    each_case(c, "get", populate, |b, store, _| {
        let mut next = domains.iter().cycle();
        b.iter(|| {
            let domain = next.next().expect("cycle never ends");
            black_box(store.get(domain, "session.json"))
        });
    });
}

fn set(c: &mut Criterion) {
    let domains = domain_names();
    each_case(
        c,
        "set",
        |_, _| {},
        |b, store, value| {
            let mut next = domains.iter().cycle();
            let mut value = value.to_vec();
            b.iter(|| {
                let domain = next.next().expect("cycle never ends");
                // Unique across criterion's calls of this routine too (warm-up, then samples),
                // which each start again at the first domain.
                stamped(&mut value, STAMPS.fetch_add(1, Ordering::Relaxed));
                store.set(domain, "session.json", &value);
            });
        },
    );
}

/// Durable swaps, each expecting the value the previous one wrote in its domain.
fn compare_and_swap(c: &mut Criterion) {
    let domains = domain_names();
    // Each domain's stored value, for the store `prepare` filled last.
    let current = RefCell::new(Vec::new());
    each_case(
        c,
        "compare_and_swap",
        |store, value| {
            populate(store, value);
            *current.borrow_mut() = vec![value.to_vec(); DOMAINS];
        },
        |b, store, value| {
            let mut current = current.borrow_mut();
            let mut next = (0..DOMAINS).cycle();
            let mut new = value.to_vec();
            b.iter(|| {
                let at = next.next().expect("cycle never ends");
                stamped(&mut new, STAMPS.fetch_add(1, Ordering::Relaxed));
                assert!(store.compare_and_swap(&domains[at], "session.json", &current[at], &new));
                current[at].clone_from(&new);
            });
        },
    );
}

fn has_domain(c: &mut Criterion) {
    let domains = domain_names();
    each_case(c, "has_domain", populate, |b, store, _| {
        let mut next = domains.iter().cycle();
        b.iter(|| {
            let domain = next.next().expect("cycle never ends");
            assert!(store.has_domain(domain));
        });
    });
}

fn remove_domain(c: &mut Criterion) {
    let keys: Vec<String> = (0..DOMAIN_KEYS).map(|i| format!("key-{i:04}")).collect();
    // A neighbour that shares the prefix, so the range delete has something to leave alone.
    let neighbour = |store: &dyn Store, value: &[u8]| store.set("doomed-not", "k", value);
    each_case(c, "remove_domain", neighbour, |b, store, value| {
        let entries: Vec<(&str, &str, &[u8])> =
            keys.iter().map(|k| ("doomed", k.as_str(), value)).collect();
        b.iter_batched(
            || store.set_many(&entries),
            |()| assert!(store.remove_domain("doomed")),
            BatchSize::PerIteration,
        );
    });
}

/// Durable sets from `writers` threads at once, each on keys of its own; the throughput counts
/// every set, so elements per second is the total rate.
fn concurrent_set(c: &mut Criterion) {
    let value = value(200);
    let mut group = common::group(c, "concurrent_set");
    group.throughput(Throughput::Elements(1));
    for &backend in CONCURRENT_BACKENDS {
        for writers in WRITERS {
            let dir = tempfile::tempdir().expect("temporary directory");
            // One store per writer for the SQLite pool (a connection each), one shared store
            // otherwise.
            let stores: Vec<Box<dyn Store>> = if backend == "sqlite-full-immediate" {
                (0..writers)
                    .map(|_| {
                        Box::new(SqliteImmediate(Sqlite::open(
                            &dir.path().join("archive.sqlite"),
                            "FULL",
                        ))) as Box<dyn Store>
                    })
                    .collect()
            } else {
                let open = BACKENDS
                    .iter()
                    .find(|(name, _)| *name == backend)
                    .map(|&(_, open)| open)
                    .expect("a listed backend");
                vec![open(dir.path())]
            };
            group.bench_function(BenchmarkId::new(backend, writers), |b| {
                b.iter_custom(|iterations| {
                    let per_writer = iterations.div_ceil(writers as u64);
                    let started = Instant::now();
                    std::thread::scope(|scope| {
                        for writer in 0..writers {
                            let store = &stores[writer % stores.len()];
                            let value = &value;
                            scope.spawn(move || {
                                let domain = format!("writer-{writer}");
                                let mut value = value.clone();
                                // Stamps unique across batches too, so no set repeats an
                                // earlier one's bytes.
                                let base = STAMPS.fetch_add(per_writer, Ordering::Relaxed);
                                for i in 0..per_writer {
                                    stamped(&mut value, base + i);
                                    store.set(&domain, &format!("k{}", i % 1000), &value);
                                }
                            });
                        }
                    });
                    // Scaled to the requested count, as the writers may have done a few more.
                    started.elapsed() * u32::try_from(iterations).unwrap_or(u32::MAX)
                        / u32::try_from(per_writer * writers as u64).unwrap_or(u32::MAX)
                });
            });
        }
    }
    group.finish();
}

/// The sessions `batch_set` spreads its batches over: as many as the 32 concurrent writers fill.
const BATCH_SESSIONS: usize = 32 * DOMAIN_KEYS;

/// The batch sizes of `batch_set`.
const BATCH_SIZES: [u64; 4] = [1, 8, 32, 64];

/// A durable `set_many` of `n` sessions spread over the archive: one redb commit holding `n`
/// writes, as group commit builds it from `n` concurrent writers, without the threads. One set's
/// time × `n` ÷ this time bounds what `n` writers can gain over one.
fn batch_set(c: &mut Criterion) {
    let names: Vec<String> = (0..BATCH_SESSIONS)
        .map(|i| format!("session-{i:05}"))
        .collect();
    let dir = tempfile::tempdir().expect("temporary directory");
    let archive = RedbArchive::open(dir.path().join("archive.redb")).expect("open redb");
    let mut value = value(200);
    let all: Vec<(&str, &str, &[u8])> = names
        .iter()
        .map(|name| (name.as_str(), "session.json", value.as_slice()))
        .collect();
    Store::set_many(&archive, &all);
    let mut group = common::group(c, "batch_set");
    let mut next = 0;
    for n in BATCH_SIZES {
        group.throughput(Throughput::Elements(n));
        group.bench_function(BenchmarkId::new("redb", n), |b| {
            b.iter(|| {
                stamped(&mut value, STAMPS.fetch_add(1, Ordering::Relaxed));
                // A prime stride scatters a batch's sessions over the whole table, as unrelated
                // users' sessions are.
                let batch: Vec<(&str, &str, &[u8])> = (0..n)
                    .map(|_| {
                        next = (next + 7919) % BATCH_SESSIONS;
                        (names[next].as_str(), "session.json", value.as_slice())
                    })
                    .collect();
                Store::set_many(&archive, &batch);
            });
        });
    }
    group.finish();
}

/// The pages of the file `disk_sync` writes into: 16 MiB, about the size of the redb file that
/// the concurrent writers fill.
const SYNC_SPAN_PAGES: u64 = 4096;

/// How many 4 KiB writes `disk_sync` makes before each sync: what a redb commit of one set makes
/// (six pages and the header, counted with strace), and about what a commit of 32 sets to 32
/// sessions makes (a leaf each, and seven more: strace counts about the batch size plus seven).
const SYNC_PAGES: [u64; 2] = [7, 39];

/// `sync_data` after writing [`SYNC_PAGES`] pages at random places of a 16 MiB file, or side by
/// side at a random place: the disk's price for a commit, whatever the database.
fn disk_sync(c: &mut Criterion) {
    const PAGE: u64 = 4096;
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut file = File::options()
        .create_new(true)
        .read(true)
        .write(true)
        .open(dir.path().join("pages"))
        .expect("create the page file");
    let filler = vec![1_u8; usize::try_from(PAGE).expect("4 KiB fits")];
    for _ in 0..SYNC_SPAN_PAGES {
        file.write_all(&filler).expect("fill the page file");
    }
    file.sync_all().expect("sync the page file");
    // xorshift64: the same page offsets on every run, no dependency.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut random_page = move |pages: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % pages
    };
    let mut group = common::group(c, "disk_sync");
    for pages in SYNC_PAGES {
        group.throughput(Throughput::Elements(pages));
        let run = vec![7_u8; usize::try_from(pages * PAGE).expect("a few pages fit")];
        for layout in ["scattered", "contiguous"] {
            group.bench_function(BenchmarkId::new(layout, pages), |b| {
                b.iter(|| {
                    if layout == "scattered" {
                        for _ in 0..pages {
                            let at = random_page(SYNC_SPAN_PAGES) * PAGE;
                            file.seek(SeekFrom::Start(at)).expect("seek");
                            file.write_all(&filler).expect("write a page");
                        }
                    } else {
                        let at = random_page(SYNC_SPAN_PAGES - pages) * PAGE;
                        file.seek(SeekFrom::Start(at)).expect("seek");
                        file.write_all(&run).expect("write the pages");
                    }
                    file.sync_data().expect("sync");
                });
            });
        }
    }
    group.finish();
}

criterion_group!(
    benches,
    get,
    set,
    compare_and_swap,
    has_domain,
    remove_domain,
    concurrent_set,
    batch_set,
    disk_sync
);
criterion_main!(benches);
