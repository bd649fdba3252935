//! Scale benchmarks on `RedbArchive`: `get` and durable `set` of a session's state with 1k, 100k
//! and 1M sessions stored, the expiry sweep of 1k expired sessions among 1M, listing and
//! revoking the 10 sessions of one user among 1M others, and revoking a user's 10, 100 and
//! 1,000 sessions. At the end it prints each file's size and the process's peak RSS, and writes
//! them to `target/bench-data/scale.json` for `scripts/bench_chart.py`.
//!
//! The archives are built once (in `set_many` batches: the 1M one in well under a minute) and
//! kept under `target/bench-data/`, with their session ids beside them; later runs reuse them.
//! Delete that directory to rebuild.
//!
//! Run `cargo bench --bench scale`; `cargo bench --bench scale -- --test` runs every benchmark
//! once (it still builds the archives the first time).

mod common;

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use session_archive::session::{DEFAULT_SWEEP_GRANULARITY, META_KEY, STATE_KEY};
use session_archive::{Archive, Clock, Durability, ManualClock, RedbArchive, SessionId, Sessions};

/// The session counts of the `get` and `set` benchmarks.
const COUNTS: [usize; 3] = [1_000, 100_000, 1_000_000];

/// The sessions the sweep finds expired on each run, among the 1M stored.
const EXPIRED: usize = 1_000;

/// A session's stored state: about 200 bytes of JSON.
const STATE: &str = r#"{"user":"ada@example.com","roles":["reader","editor"],"visits":42,"csrf":"3f1c2e0a9b8d7c6e5f4a3b2c1d0e9f8a","cart":[7,42,1001],"theme":"dark","locale":"en-GB"}"#;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data")
}

fn archive_path(count: usize) -> PathBuf {
    data_dir().join(format!("sessions-{count}.redb"))
}

/// The idle timeout of every `Sessions` in these benches (and so the one the archive records,
/// which a sweep judges by): an hour.
const IDLE: Duration = Duration::from_secs(3600);

/// How far ahead of the build the stored sessions were last seen: they stay live, and their
/// expiry bucket unvisited, for years of sweeping.
const AHEAD: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Sessions with an idle timeout of [`IDLE`] and no absolute lifetime, on `clock`.
fn sessions_at(archive: Arc<RedbArchive>, clock: ManualClock) -> Sessions {
    Sessions::builder(archive)
        .idle_timeout(IDLE)
        .absolute_lifetime(None)
        .clock(clock)
        .build()
}

/// Returns the archive of `count` sessions and their ids, building both on the first run.
fn stored(count: usize) -> (Arc<RedbArchive>, Vec<String>) {
    let path = archive_path(count);
    let ids_path = path.with_extension("ids");
    if !ids_path.exists() {
        eprintln!("building {} ({count} sessions, once)", path.display());
        // A leftover file without its ids was cut short; start over.
        let _ = std::fs::remove_file(&path);
        let ids = build(&path, count);
        // The ids file is written last: its presence says the archive is complete.
        std::fs::write(&ids_path, ids).expect("write ids");
    }
    let ids = std::fs::read_to_string(&ids_path).expect("read ids");
    let archive = RedbArchive::open(&path).expect("open archive");
    (Arc::new(archive), ids.lines().map(str::to_owned).collect())
}

/// How many sessions [`build`] writes in one `set_many`.
const BUILD_BATCH: usize = 20_000;

/// Builds an archive of `count` long-lived sessions at `path` and returns their ids, one a line.
///
/// One session is saved through [`Sessions`], which writes the expiry index's record (idle
/// timeout [`IDLE`]), and removed; the sessions are written straight into the archive in big `set_many` batches
/// (a million in seconds rather than minutes), as `Sessions` stores them (see [`META_KEY`]):
/// each a record last seen [`AHEAD`] of now, the state, and its entry in the expiry bucket of
/// then, so that no sweep of the benches finds them expired. Built without fsyncs; dropping the
/// archive closes it cleanly, which makes it durable.
fn build(path: &Path, count: usize) -> String {
    let archive = Arc::new(
        RedbArchive::builder()
            .durability(Durability::None)
            .open(path)
            .expect("open for building"),
    );
    let now = SystemTime::now();
    let sessions = sessions_at(Arc::clone(&archive), ManualClock::new(now));
    let mut first = sessions
        .start(None, serde_json::Value::Null)
        .expect("start");
    first.save().expect("save");
    // Only its record of the index stays: the session itself would expire with the sweep's.
    archive.remove_domain(first.id().as_str()).expect("remove");
    let seen = (now + AHEAD)
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let record = format!(r#"{{"created":{seen},"seen":{seen}}}"#).into_bytes();
    let width = DEFAULT_SWEEP_GRANULARITY.as_secs();
    let bucket = format!("expiry-{}", (seen + IDLE.as_secs()) / width);
    let mut ids = String::new();
    let mut made = Vec::with_capacity(BUILD_BATCH);
    for done in 0..count {
        made.push(SessionId::generate().to_string());
        if made.len() == BUILD_BATCH || done + 1 == count {
            let mut batch: Vec<(&str, &str, &[u8])> = Vec::with_capacity(3 * made.len());
            for id in &made {
                batch.push((id, META_KEY, &record));
                batch.push((id, STATE_KEY, STATE.as_bytes()));
                batch.push((&bucket, id, b""));
            }
            archive.set_many(&batch).expect("set_many");
            for id in made.drain(..) {
                writeln!(ids, "{id}").expect("write to a string");
            }
        }
    }
    drop(sessions);
    ids
}

/// Visits `ids` in a fixed pseudo-random order, so the benches do not walk the tree in key order.
fn shuffled(ids: &[String]) -> impl Iterator<Item = &String> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    std::iter::repeat_with(move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        &ids[usize::try_from(state % ids.len() as u64).expect("an index fits usize")]
    })
}

fn scale(c: &mut Criterion) {
    std::fs::create_dir_all(data_dir()).expect("create target/bench-data");
    revoke(c);
    let stores: Vec<_> = COUNTS.iter().map(|&count| (count, stored(count))).collect();
    let mut get = common::group(c, "scale_get");
    for (count, (archive, ids)) in &stores {
        let mut next = shuffled(ids);
        get.bench_function(BenchmarkId::from_parameter(count), |b| {
            b.iter(|| {
                let id = next.next().expect("endless");
                black_box(archive.get(id, "session.json").expect("get"))
            });
        });
    }
    get.finish();
    let mut set = common::group(c, "scale_set");
    for (count, (archive, ids)) in &stores {
        let mut next = shuffled(ids);
        set.bench_function(BenchmarkId::from_parameter(count), |b| {
            b.iter(|| {
                let id = next.next().expect("endless");
                archive
                    .set(id, "session.json", STATE.as_bytes())
                    .expect("set");
            });
        });
    }
    set.finish();
    drop(stores);
    sweep(c);
    users(c);
    report();
}

/// The sweep of [`EXPIRED`] sessions among the 1M: each run creates them with a short idle
/// timeout, moves the clock past it, and sweeps. The 1M long-lived sessions sit in expiry buckets
/// years ahead, which the sweep never visits. The clock runs ahead of real time, and the sweep's
/// cursor with it, so each run starts the clock where the previous one stopped (saved beside the
/// archive); a clock behind the cursor would make sessions expire where the sweep no longer looks.
fn sweep(c: &mut Criterion) {
    let (archive, _) = stored(1_000_000);
    let saved = archive_path(1_000_000).with_extension("clock");
    let resume = std::fs::read_to_string(&saved)
        .ok()
        .and_then(|secs| secs.trim().parse().ok())
        .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
    let clock =
        ManualClock::new(resume.map_or_else(SystemTime::now, |at| at.max(SystemTime::now())));
    let short = sessions_at(archive, clock.clone());
    let mut group = common::group(c, "scale_sweep");
    group.throughput(Throughput::Elements(EXPIRED as u64));
    group.bench_function(BenchmarkId::new("1k_expired_of", 1_000_000), |b| {
        b.iter_batched(
            || {
                for _ in 0..EXPIRED {
                    let mut session = short.start(None, 1_u32).expect("start");
                    session.save().expect("save");
                }
                clock.advance(2 * IDLE);
            },
            |()| assert_eq!(short.sweep().expect("sweep"), EXPIRED),
            BatchSize::PerIteration,
        );
    });
    group.finish();
    let now = clock
        .now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("the clock is after 1970");
    std::fs::write(&saved, now.as_secs().to_string()).expect("save the sweep clock");
}

/// The sessions of one user in [`users`].
const USER_SESSIONS: usize = 10;

/// `user_sessions` and `revoke_user` of one user with [`USER_SESSIONS`] sessions among the 1M
/// stored: both walk that user's index only, so their cost does not grow with the others. The
/// revoke is durable: one commit per session destroyed, and its index entry removed.
fn users(c: &mut Criterion) {
    const USER: &str = "ada@example.com";
    let (archive, _) = stored(1_000_000);
    let sessions = sessions_at(archive, ManualClock::new(SystemTime::now()));
    let bind = || {
        for _ in 0..USER_SESSIONS {
            let mut session = sessions
                .start(None, serde_json::Value::Null)
                .expect("start");
            session.set_user(Some(USER));
            session.save().expect("save");
        }
    };
    let mut group = common::group(c, "scale_user");
    group.throughput(Throughput::Elements(USER_SESSIONS as u64));
    bind();
    group.bench_function(BenchmarkId::new("user_sessions_10_among", 1_000_000), |b| {
        b.iter(|| assert_eq!(sessions.user_sessions(USER).count(), USER_SESSIONS));
    });
    sessions.revoke_user(USER).expect("revoke");
    group.bench_function(BenchmarkId::new("revoke_user_10_among", 1_000_000), |b| {
        b.iter_batched(
            bind,
            |()| assert_eq!(sessions.revoke_user(USER).expect("revoke"), USER_SESSIONS),
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

/// The session counts of the `revoke_user` benchmark.
const REVOKED: [usize; 3] = [10, 100, 1_000];

/// `revoke_user` of one user's `n` sessions (and nothing else stored), on a durable redb file:
/// what a revoke costs as the user's sessions grow. Each `n` gets a file built once through
/// [`Sessions`]; each run revokes a fresh copy of it (copied and opened before the clock
/// starts), so every run finds the same `n` sessions, and a run's removals are durable commits.
fn revoke(c: &mut Criterion) {
    const USER: &str = "ada@example.com";
    // Beside the other archives, on the disk they are on (a temporary directory may be memory).
    let dir = tempfile::tempdir_in(data_dir()).expect("a directory under target/bench-data");
    let mut group = common::group(c, "scale_revoke");
    for n in REVOKED {
        let template = dir.path().join(format!("revoke-{n}.redb"));
        {
            let archive = RedbArchive::builder()
                .durability(Durability::None)
                .open(&template)
                .expect("open the template");
            let sessions = sessions_at(Arc::new(archive), ManualClock::new(SystemTime::now()));
            for _ in 0..n {
                let mut session = sessions.start(None, 1_u32).expect("start");
                session.set_user(Some(USER));
                session.save().expect("save");
            }
        }
        let copy = dir.path().join("revoke.redb");
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_batched(
                || {
                    std::fs::copy(&template, &copy).expect("copy the template");
                    let archive = RedbArchive::open(&copy).expect("open the copy");
                    sessions_at(Arc::new(archive), ManualClock::new(SystemTime::now()))
                },
                |sessions| {
                    assert_eq!(sessions.revoke_user(USER).expect("revoke"), n);
                    // Dropped (and the file closed) once the clock has stopped.
                    sessions
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

/// The peak resident set size of this process in KiB, from `/proc/self/status` (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Prints the file sizes and the peak RSS, and writes them to `target/bench-data/scale.json`.
fn report() {
    let mut files = Vec::new();
    for count in COUNTS {
        let bytes = std::fs::metadata(archive_path(count)).map_or(0, |m| m.len());
        println!("scale: {count} sessions: file {bytes} bytes");
        files.push(format!("\"{count}\": {bytes}"));
    }
    let rss = peak_rss_kib().unwrap_or(0);
    println!("scale: peak RSS {rss} KiB");
    let json = format!(
        "{{\"file_bytes\": {{{}}}, \"peak_rss_kib\": {rss}}}\n",
        files.join(", ")
    );
    std::fs::write(data_dir().join("scale.json"), json).expect("write scale.json");
}

criterion_group!(benches, scale);
criterion_main!(benches);
