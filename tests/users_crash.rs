//! The per-user index survives crashes: a child process binds, rebinds, regenerates, destroys and
//! revokes sessions on a durable redb file without pause, the parent kills it with SIGKILL at a
//! random moment, reopens the file and checks that no session bound to a user is missing from
//! that user's index. The index entry is written before the binding it covers, so a crash
//! between two writes may leave a stale entry, never a bound session without one.
//!
//! The child is this same test binary, re-executed to run only [`crash_child_binder`] with
//! [`CHILD_ENV`] set; without that variable the child test does nothing.

#[path = "support/sha256.rs"]
mod sha256;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use session_archive::{Archive, ArchiveExt, META_KEY, RedbArchive, STATE_KEY, SessionId, Sessions};

/// Tells the re-executed child where the archive is, and seeds its choices: `<seed>:<path>`.
const CHILD_ENV: &str = "SESSION_ARCHIVE_USERS_CRASH_CHILD";

/// The child gives up on its own after this long, in case the parent never kills it.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);

const USERS: [&str; 3] = ["alice", "bob", "carol"];

/// A small deterministic generator, so a failing round can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % n as u64).expect("small")
    }
}

#[test]
fn crash_child_binder() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (seed, path) = spec.split_once(':').expect("<seed>:<path>");
    let mut rng = Rng(seed.parse::<u64>().expect("a seed") | 1);
    let sessions = Sessions::new(RedbArchive::open(path).expect("open the archive"));
    let mut handles = Vec::new();
    let started = Instant::now();
    println!("READY");
    while started.elapsed() < CHILD_LIFETIME {
        let user = USERS[rng.below(USERS.len())];
        match rng.below(6) {
            0 | 1 => {
                let mut session = sessions.start(None, 0_u32).expect("start");
                session.set_user(Some(user));
                session.save().expect("save");
                handles.push(session);
            }
            2 if !handles.is_empty() => {
                let i = rng.below(handles.len());
                handles[i].set_user(Some(user));
                let _ = handles[i].save();
            }
            3 if !handles.is_empty() => {
                let i = rng.below(handles.len());
                handles[i].set_user(Some(user));
                let _ = handles[i].regenerate();
            }
            4 if !handles.is_empty() => {
                let i = rng.below(handles.len());
                let _ = handles.swap_remove(i).destroy();
            }
            _ => {
                let _ = sessions.revoke_user(user);
            }
        }
    }
}

/// Every session of `archive` bound to a user must be in that user's index.
fn check(archive: &RedbArchive) -> usize {
    let mut bound = 0;
    for domain in archive.domains() {
        let domain = domain.expect("list domains");
        // A live session: a state, not a moved-marker (a regenerate's old id, dead).
        let live = archive
            .get(&domain, STATE_KEY)
            .expect("read")
            .is_some_and(|state| !state.starts_with(b"\0moved:"));
        if SessionId::parse(&domain).is_none() || !live {
            continue;
        }
        let Some(meta) = archive.get(&domain, META_KEY).expect("read meta") else {
            continue;
        };
        let meta: serde_json::Value = serde_json::from_slice(&meta).expect("meta is JSON");
        let Some(user) = meta.get("user").and_then(serde_json::Value::as_str) else {
            continue;
        };
        // The binding's own entry: the key its record names (the stored name alone for a
        // binding written by an earlier version).
        let entry = meta
            .get("entry")
            .and_then(serde_json::Value::as_str)
            .unwrap_or(&domain);
        let index = format!("user-{}", sha256::sha256_hex(user));
        assert!(
            archive.has(&index, entry).expect("read the index"),
            "a session bound to {user} is missing from its index"
        );
        bound += 1;
    }
    bound
}

fn round(path: &Path, seed: u64, run_for: Duration) {
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "crash_child_binder",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{seed}:{}", path.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines.next().expect("the child starts").expect("a line");
        if line.contains("READY") {
            break;
        }
    }
    std::thread::sleep(run_for);
    child.kill().expect("SIGKILL");
    child.wait().expect("reap the child");
}

#[test]
fn no_bound_session_is_missing_from_its_index_after_sigkill() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("sessions.redb");
    let mut bound = 0;
    for (i, millis) in [40_u64, 90, 150, 230, 310, 400].into_iter().enumerate() {
        let seed = 0x5eed_0000 + i as u64;
        round(&path, seed, Duration::from_millis(millis));
        let archive = RedbArchive::open(&path).expect("reopen after the crash");
        bound += check(&archive);
    }
    assert!(bound > 0, "the child bound sessions before it was killed");
}
