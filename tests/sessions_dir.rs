//! Sessions on the directory tree: the original framework's files on disk, and updates from
//! several processes at once.
#![cfg(all(feature = "archive-dir", unix))]

use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use session_archive::{DirArchive, Sessions};

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    #[serde(rename = "Name")]
    name: String,
    #[serde(default)]
    visits: u64,
}

const SEED_ID: &str = "0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2";

/// The seed documentation's own file, written as the original framework left it, is a live
/// session for a `DirArchive`-backed `Sessions` on `.gen/sessions`.
#[test]
fn the_seed_session_file_is_read_from_gen_sessions() {
    let project = tempfile::tempdir().unwrap();
    let root = project.path().join(".gen/sessions");
    std::fs::create_dir_all(root.join(SEED_ID)).unwrap();
    let seed = b"{\n\"Name\": \"world\"\n}\n";
    std::fs::write(root.join(SEED_ID).join("session.json"), seed).unwrap();

    let sessions = Sessions::new(DirArchive::open(&root).unwrap());
    let mut session = sessions.start(Some(SEED_ID), State::default()).unwrap();
    assert_eq!(session.id().as_str(), SEED_ID);
    assert_eq!(session.name, "world");
    assert_eq!(
        std::fs::read(root.join(SEED_ID).join("session.json")).unwrap(),
        seed,
        "starting the session rewrote its state"
    );

    session.name = "World".into();
    session.save().unwrap();
    assert_eq!(
        std::fs::read(root.join(SEED_ID).join("session.json")).unwrap(),
        br#"{"Name":"World","visits":0}"#
    );
}

const CHILD_ROOT: &str = "SESSIONS_DIR_CHILD_ROOT";
const CHILD_ID: &str = "SESSIONS_DIR_CHILD_ID";
const PROCESSES: u64 = 3;
const UPDATES: u64 = 15;

/// Several processes updating one session on one root lose no update: `update` rests on the
/// directory tree's flock-protected compare-and-swap.
#[test]
fn updates_from_several_processes_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sessions");
    let id = {
        let sessions = Sessions::new(DirArchive::open(&root).unwrap());
        let mut session = sessions.start(None, State::default()).unwrap();
        session.save().unwrap();
        session.id().to_string()
    };
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(std::env::current_exe().expect("current_exe"))
                .args(["--exact", "update_child", "--nocapture", "--test-threads=1"])
                .env(CHILD_ROOT, &root)
                .env(CHILD_ID, &id)
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn a child process")
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a child process failed");
    }
    let sessions = Sessions::new(DirArchive::open(&root).unwrap());
    let session = sessions.start(Some(&id), State::default()).unwrap();
    assert_eq!(session.id().as_str(), id);
    assert_eq!(session.visits, PROCESSES * UPDATES);
}

/// The body of each child process of `updates_from_several_processes_lose_nothing`; without its
/// environment variables it does nothing.
#[test]
fn update_child() {
    let (Ok(root), Ok(id)) = (std::env::var(CHILD_ROOT), std::env::var(CHILD_ID)) else {
        return;
    };
    let sessions = Sessions::new(DirArchive::open(Path::new(&root)).unwrap());
    for _ in 0..UPDATES {
        let mut session = sessions.start(Some(&id), State::default()).unwrap();
        assert_eq!(session.id().as_str(), id, "the child lost the session");
        session.update(|s| s.visits += 1).unwrap();
    }
}
