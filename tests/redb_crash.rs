//! Crash safety of `RedbArchive`, tested for real: a child process writes and acknowledges each
//! write on stdout, the parent kills it with SIGKILL at a random moment, reopens the file and checks
//! that every acknowledged write is there and intact.
//!
//! The child is this same test binary, re-executed to run only [`crash_child_writer`] with
//! [`CHILD_ENV`] set; without that variable the child test does nothing.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use session_archive::archive::{Change, Update};
use session_archive::conformance::block_on;
use session_archive::{Archive, ArchiveExt, RedbArchive};

/// Tells the re-executed child how many writer threads to run, how to open the archive and where
/// it is: `<threads>:<mode>:<path>`.
const CHILD_ENV: &str = "SESSION_ARCHIVE_REDB_CRASH_CHILD";

/// Marks an acknowledgement line: `ACK <thread> <seq>`, printed only after the write returned.
const ACK: &str = "ACK ";

/// The child gives up on its own after this long, in case the parent never kills it.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);

/// The value written by `thread` at step `seq` under `key`: its length (up to 64 KiB) and its
/// bytes follow from the three, so a torn or misplaced value cannot pass for the right one.
fn value(thread: u32, seq: u64, key: &str) -> Vec<u8> {
    let mut state = (u64::from(thread) << 48) ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for byte in key.bytes() {
        state = state.rotate_left(5) ^ u64::from(byte);
    }
    let len = match seq % 4 {
        0 => 64 << 10,
        1 => 200,
        2 => 0,
        _ => usize::try_from(state % (16 << 10)).expect("below 16 KiB"),
    };
    // A 12-byte header (thread, seq), then an xorshift stream seeded by thread, seq and key.
    let mut bytes = Vec::with_capacity(len + 12);
    bytes.extend_from_slice(&thread.to_le_bytes());
    bytes.extend_from_slice(&seq.to_le_bytes());
    for _ in 0..len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.push(state.to_le_bytes()[0]);
    }
    bytes
}

fn domain(thread: u32, seq: u64) -> String {
    format!("t{thread}-d{}", seq % 5)
}

fn key(seq: u64) -> String {
    format!("k{seq}")
}

fn counter_domain(thread: u32) -> String {
    format!("t{thread}-counter")
}

/// Writes forever, acknowledging each write on stdout after it returned. Even steps write one
/// entry: with `set`, or (one step in four) with an `update` whose change runs in the commit, or
/// (another in four) with an awaited `update_async`, committed for the task by the committer
/// thread; odd steps write it together with the thread's counter in one `set_many`.
fn write_forever(archive: &RedbArchive, thread: u32) {
    let started = Instant::now();
    let mut seq = 0u64;
    while started.elapsed() < CHILD_LIFETIME {
        let (d, k) = (domain(thread, seq), key(seq));
        let v = value(thread, seq, &k);
        let change = || -> Change {
            let stored = v.clone();
            Box::new(move |_: Option<&[u8]>| Ok(Update::Set(stored.clone())))
        };
        if seq % 8 == 2 {
            archive.update(&d, &k, change()).expect("update");
        } else if seq % 8 == 6 {
            block_on(archive.update_async(&d, &k, change())).expect("update_async");
        } else if seq.is_multiple_of(2) {
            archive.set(&d, &k, &v).expect("set");
        } else {
            let c = counter_domain(thread);
            let counter = value(thread, seq, "latest");
            archive
                .set_many(&[(&d, &k, &v), (&c, "latest", &counter)])
                .expect("set_many");
        }
        println!("{ACK}{thread} {seq}");
        seq += 1;
    }
}

/// The child's side: a no-op unless [`CHILD_ENV`] is set.
#[test]
fn crash_child_writer() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, ':');
    let (Some(threads), Some(mode), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("{CHILD_ENV} is not <threads>:<mode>:<path>: {spec}");
    };
    let threads: u32 = threads.parse().expect("thread count");
    let archive = Mode::parse(mode).open(Path::new(path));
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let archive = &archive;
            scope.spawn(move || write_forever(archive, thread));
        }
    });
}

/// How the child and the parent open the archive.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// `RedbArchive::open`: durable, integrity check on open, no quick repair.
    Default,
    /// The documented alternative for large files: quick repair, no integrity check on open.
    QuickRepair,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Default => "default",
            Mode::QuickRepair => "quick-repair",
        }
    }

    fn parse(name: &str) -> Mode {
        match name {
            "default" => Mode::Default,
            "quick-repair" => Mode::QuickRepair,
            other => panic!("unknown mode {other:?}"),
        }
    }

    fn open(self, path: &Path) -> RedbArchive {
        let builder = match self {
            Mode::Default => RedbArchive::builder(),
            Mode::QuickRepair => RedbArchive::builder()
                .check_integrity_on_open(false)
                .quick_repair(true),
        };
        builder.open(path).expect("open the archive")
    }
}

/// Random numbers for choosing when to kill, from the OS generator behind UUID v4.
fn random_u64() -> u64 {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    u64::from_le_bytes(bytes[..8].try_into().expect("8 of 16 bytes"))
}

/// Runs one child until a random moment, kills it, and returns every acknowledged `(thread, seq)`.
fn run_and_kill(path: &Path, threads: u32, mode: Mode) -> Vec<(u32, u64)> {
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "crash_child_writer",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD_ENV,
            format!("{threads}:{}:{}", mode.name(), path.display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));

    // Kill after a random number of acknowledgements, then after a random pause of up to 20 ms,
    // so the kill lands anywhere in a write: mid-transaction, mid-commit or between writes.
    let acks_before_kill = 1 + random_u64() % 150;
    let pause = Duration::from_micros(random_u64() % 20_000);
    let mut acked = Vec::new();
    let mut line = String::new();
    while (acked.len() as u64) < acks_before_kill {
        line.clear();
        let read = stdout
            .read_line(&mut line)
            .expect("read the child's stdout");
        assert!(read > 0, "the child ended before the kill; see its stderr");
        if let Some(ack) = parse_ack(&line) {
            acked.push(ack);
        }
    }
    std::thread::sleep(pause);
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");

    // Lines written before the kill were acknowledged too. A line cut short by the kill has no
    // newline and does not count.
    loop {
        line.clear();
        if stdout
            .read_line(&mut line)
            .expect("drain the child's stdout")
            == 0
        {
            break;
        }
        if let Some(ack) = parse_ack(&line) {
            acked.push(ack);
        }
    }
    acked
}

fn parse_ack(line: &str) -> Option<(u32, u64)> {
    let body = line.strip_suffix('\n')?;
    let (_, ack) = body.split_once(ACK)?;
    let (thread, seq) = ack.split_once(' ')?;
    Some((
        thread.parse().expect("thread in ack"),
        seq.parse().expect("seq in ack"),
    ))
}

/// Checks that every acknowledged write (`acked`, from all rounds) is present and intact, and
/// that each thread's counter is at least its last acknowledged batch of the last round
/// (`last_round`) and matches the entry of its own batch.
fn verify(path: &Path, mode: Mode, acked: &[(u32, u64)], last_round: &[(u32, u64)], threads: u32) {
    let archive = mode.open(path);
    for &(thread, seq) in acked {
        let (d, k) = (domain(thread, seq), key(seq));
        let stored = archive.get(&d, &k).expect("get");
        assert!(
            stored.as_deref() == Some(&value(thread, seq, &k)[..]),
            "acknowledged write {d}/{k} is missing or torn ({} bytes)",
            stored.map_or(0, |v| v.len())
        );
    }
    for thread in 0..threads {
        let last_batch = last_round
            .iter()
            .filter(|&&(t, seq)| t == thread && seq % 2 == 1)
            .map(|&(_, seq)| seq)
            .max();
        let counter = archive
            .get(&counter_domain(thread), "latest")
            .expect("get counter");
        let Some(last_batch) = last_batch else {
            continue;
        };
        let counter = counter.expect("an acknowledged batch wrote the counter");
        let seq = u64::from_le_bytes(counter[4..12].try_into().expect("seq header"));
        assert_eq!(counter, value(thread, seq, "latest"), "torn counter");
        assert!(seq >= last_batch, "counter {seq} behind acked {last_batch}");
        // A batch is one transaction: its entry is there whenever its counter is.
        let k = key(seq);
        assert_eq!(
            archive.get(&domain(thread, seq), &k).expect("get"),
            Some(value(thread, seq, &k)),
            "batch {seq} is half there"
        );
    }
    // The file is whole: every listed key reads back.
    for d in archive.domains() {
        let d = d.expect("list domains");
        for k in archive.keys(&d) {
            let k = k.expect("list keys");
            assert!(archive.has(&d, &k).expect("has"));
        }
    }
}

fn crash_rounds(threads: u32, mode: Mode) {
    let dir = tempfile::tempdir().expect("temporary directory");
    // All rounds share one file, so later rounds crash on top of earlier crashes' recoveries.
    let path = dir.path().join("archive.redb");
    let mut all_acked = Vec::new();
    for round in 0..5 {
        let acked = run_and_kill(&path, threads, mode);
        assert!(!acked.is_empty(), "round {round}: nothing was acknowledged");
        // Each child starts its sequence at 0 again and rewrites the same entries with the same
        // values, so earlier rounds' acknowledgements stay checkable.
        all_acked.extend_from_slice(&acked);
        verify(&path, mode, &all_acked, &acked, threads);
    }
}

#[test]
fn acknowledged_writes_survive_sigkill_one_writer() {
    crash_rounds(1, Mode::Default);
}

#[test]
fn acknowledged_writes_survive_sigkill_eight_writers() {
    crash_rounds(8, Mode::Default);
}

#[test]
fn acknowledged_writes_survive_sigkill_with_quick_repair() {
    crash_rounds(1, Mode::QuickRepair);
    crash_rounds(8, Mode::QuickRepair);
}
