//! Session benchmarks: `start` of a stored session (which loads its typed state) and `save` of a
//! changed state, on each backend, with a small typed state.
//!
//! Run `cargo bench --bench sessions`; `cargo bench --bench sessions -- --test` runs every
//! benchmark once.

mod common;

use std::hint::black_box;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use session_archive::{DirArchive, MemoryArchive, RedbArchive, Sessions};

/// A small typed state, as a login session holds: about 100 bytes of JSON.
#[derive(Serialize, Deserialize, Default)]
struct State {
    user: String,
    visits: u64,
    cart: Vec<u32>,
}

/// Opens sessions over a fresh archive of one backend in an empty directory.
type Open = fn(&Path) -> Sessions;

/// The backends under comparison, one line each.
const BACKENDS: &[(&str, Open)] = &[
    ("memory", |_| Sessions::new(MemoryArchive::new())),
    ("redb", |dir| {
        Sessions::new(RedbArchive::open(dir.join("archive.redb")).expect("open redb"))
    }),
    ("dir", |dir| {
        Sessions::new(DirArchive::open(dir.join("archive")).expect("open dir"))
    }),
];

/// Runs `bench` once per backend, each on sessions over a fresh archive holding one saved session.
fn each_backend(
    c: &mut Criterion,
    name: &str,
    mut bench: impl FnMut(&mut criterion::Bencher<'_>, &Sessions, &str),
) {
    let mut group = common::group(c, name);
    for &(backend, open) in BACKENDS {
        let dir = tempfile::tempdir().expect("temporary directory");
        let sessions = open(dir.path());
        let mut session = sessions
            .start(
                None,
                State {
                    user: "ada@example.com".to_owned(),
                    visits: 1,
                    cart: vec![7, 42, 1001],
                },
            )
            .expect("start");
        session.save().expect("first save");
        let id = session.id().to_string();
        group.bench_function(BenchmarkId::from_parameter(backend), |b| {
            bench(b, &sessions, &id);
        });
    }
    group.finish();
}

fn session_load(c: &mut Criterion) {
    each_backend(c, "session_load", |b, sessions, id| {
        b.iter(|| {
            let session = sessions.start(Some(id), State::default()).expect("start");
            assert!(!session.is_new());
            black_box(session.visits)
        });
    });
}

fn session_save(c: &mut Criterion) {
    each_backend(c, "session_save", |b, sessions, id| {
        let mut session = sessions.start(Some(id), State::default()).expect("start");
        b.iter(|| {
            session.visits += 1;
            session.save().expect("save");
        });
    });
}

criterion_group!(benches, session_load, session_save);
criterion_main!(benches);
