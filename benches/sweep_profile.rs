//! What the sweep of 1,000 expired sessions among 1,000,000 spends its time on: not a criterion
//! benchmark but a probe, for `docs/PERFORMANCE.md`. Each round creates 1,000 sessions with a
//! short idle timeout on the durable 1M archive of `benches/scale.rs` (build it first with
//! `cargo bench --bench scale -- scale_sweep`), moves the clock past it, and sweeps; it prints the
//! sweep's wall time, its commits ([`RedbArchive::commit_stats`]) and every archive call it made,
//! timed from its start to the next call's.
//!
//! Run `cargo bench --bench sweep_profile` (`SWEEP_ROUNDS=n` for other than 5 rounds,
//! `SWEEP_CACHE_MIB=n` for a redb cache of other than the default 64 MiB). Under
//! `strace -f -T -e trace=pwrite64,fdatasync,write` the lines `sweep: start` and `sweep: end`
//! on stderr bracket each sweep's system calls.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use session_archive::conformance::Hooked;
use session_archive::{Clock, ManualClock, RedbArchive, Sessions};

/// The sessions each round's sweep finds expired.
const EXPIRED: usize = 1_000;

/// The idle timeout of `benches/scale.rs`, which the archive records.
const IDLE: Duration = Duration::from_secs(3600);

/// The calls of one sweep: when each began, and its method.
type Log = Arc<Mutex<Option<Vec<(Instant, String)>>>>;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data")
}

fn main() {
    let path = data_dir().join("sessions-1000000.redb");
    assert!(
        path.with_extension("ids").exists(),
        "build the 1M archive first: cargo bench --bench scale -- scale_sweep"
    );
    let rounds: usize = std::env::var("SWEEP_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    // The clock resumes where the scale bench's (or this probe's) last sweep left it, as there.
    let saved = path.with_extension("clock");
    let resume = std::fs::read_to_string(&saved)
        .ok()
        .and_then(|secs| secs.trim().parse().ok())
        .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
    let clock =
        ManualClock::new(resume.map_or_else(SystemTime::now, |at| at.max(SystemTime::now())));
    let mut builder = RedbArchive::builder();
    if let Some(mib) = std::env::var("SWEEP_CACHE_MIB")
        .ok()
        .and_then(|mib| mib.parse::<usize>().ok())
    {
        builder = builder.cache_size(mib << 20);
    }
    let redb = Arc::new(builder.open(&path).expect("open the 1M archive"));
    let log: Log = Arc::new(Mutex::new(None));
    let hook_log = Arc::clone(&log);
    let hooked = Hooked::new(Arc::clone(&redb), move |call| {
        if let Some(calls) = hook_log.lock().expect("log").as_mut() {
            let name = format!("{call:?}");
            let end = name.find([' ', '{', '(']).unwrap_or(name.len());
            calls.push((Instant::now(), name[..end].to_owned()));
        }
        Ok(())
    });
    let sessions = Sessions::builder(hooked)
        .idle_timeout(IDLE)
        .absolute_lifetime(None)
        .clock(clock.clone())
        .build();
    for round in 0..rounds {
        for _ in 0..EXPIRED {
            let mut session = sessions.start(None, 1_u32).expect("start");
            session.save().expect("save");
        }
        clock.advance(2 * IDLE);
        let before = redb.commit_stats();
        *log.lock().expect("log") = Some(Vec::new());
        eprintln!("sweep: start");
        let started = Instant::now();
        let removed = sessions.sweep().expect("sweep");
        let took = started.elapsed();
        let ended = Instant::now();
        eprintln!("sweep: end");
        let calls = log.lock().expect("log").take().unwrap_or_default();
        let stats = redb.commit_stats().since(&before);
        assert_eq!(removed, EXPIRED);
        println!(
            "round {round}: sweep {:.2} ms, {} commits ({} writes), writer busy {:.2} ms",
            took.as_secs_f64() * 1e3,
            stats.commits,
            stats.writes,
            stats.busy.as_secs_f64() * 1e3,
        );
        for (i, (at, name)) in calls.iter().enumerate() {
            let next = calls.get(i + 1).map_or(ended, |(next, _)| *next);
            println!(
                "  {name:<20} {:8.3} ms",
                next.duration_since(*at).as_secs_f64() * 1e3
            );
        }
    }
    let now = clock
        .now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("the clock is after 1970");
    std::fs::write(&saved, now.as_secs().to_string()).expect("save the sweep clock");
}
