//! The welcome app written the tower-sessions way (as `examples/tower_sessions.rs`: each visit
//! reads the session, counts the visit and saves it), served in process through its
//! `SessionManagerLayer`, with tower-sessions' own `MemoryStore` and with `ArchiveStore` over a
//! `MemoryArchive` and over a durable redb file.
//!
//! `welcome_visit/sequential` is one visit at a time (latency: on redb, one durable commit per
//! visit); `welcome_visit/concurrent_64` is 64 visitors' visits at once on a 2-worker runtime
//! (throughput: redb's group commit shares commits between them). Criterion reports visits per
//! second as `elem/s`.
//!
//! Run `cargo bench --bench tower_sessions --features tower-sessions,axum`.

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, header};
use session_archive::tower_sessions::ArchiveStore;
use session_archive::{MemoryArchive, RedbArchive};
use tower::ServiceExt;
use tower_sessions::{Expiry, MemoryStore, Session, SessionManagerLayer, SessionStore};

const VISITORS: usize = 64;

/// `GET /`: counts the visit.
async fn welcome(session: Session) -> String {
    let visits = session
        .get::<u64>("visits")
        .await
        .expect("read the session")
        .unwrap_or(0)
        + 1;
    session
        .insert("visits", visits)
        .await
        .expect("write the session");
    format!("Hello World! Visit #{visits}")
}

fn app<S: SessionStore + Clone>(store: S) -> Router {
    Router::new().route("/", get(welcome)).layer(
        SessionManagerLayer::new(store)
            .with_secure(false)
            .with_expiry(Expiry::OnInactivity(time::Duration::days(1))),
    )
}

/// One visit; returns the `Cookie` header for the next one (the same session).
async fn visit(app: &Router, cookie: Option<&str>) -> Option<String> {
    let mut request = Request::builder().uri("/");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    assert!(response.status().is_success(), "{}", response.status());
    response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(str::to_owned)
}

type Build = fn(&std::path::Path) -> Router;

const STORES: &[(&str, Build)] = &[
    ("tower-memory-store", |_| app(MemoryStore::default())),
    ("archive-memory", |_| {
        app(ArchiveStore::new(MemoryArchive::new()))
    }),
    ("archive-redb", |dir| {
        app(ArchiveStore::new(
            RedbArchive::open(dir.join("sessions.redb")).expect("open redb"),
        ))
    }),
];

fn welcome_visit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = common::group(c, "welcome_visit");
    for &(name, build) in STORES {
        let dir = tempfile::tempdir().expect("temporary directory");
        let app = build(dir.path());
        let cookies: Vec<String> = runtime.block_on(async {
            let mut cookies = Vec::new();
            for _ in 0..VISITORS {
                cookies.push(
                    visit(&app, None)
                        .await
                        .expect("a first visit sets the cookie"),
                );
            }
            cookies
        });

        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("sequential", name), |b| {
            b.iter(|| runtime.block_on(visit(&app, Some(&cookies[0]))));
        });

        group.throughput(Throughput::Elements(VISITORS as u64));
        group.bench_function(BenchmarkId::new("concurrent_64", name), |b| {
            b.iter_custom(|iterations| {
                let mut spent = Duration::ZERO;
                for _ in 0..iterations {
                    let started = Instant::now();
                    runtime.block_on(async {
                        let visits: Vec<_> = cookies
                            .iter()
                            .map(|cookie| {
                                let (app, cookie) = (app.clone(), cookie.clone());
                                tokio::spawn(async move { visit(&app, Some(&cookie)).await })
                            })
                            .collect();
                        for one in visits {
                            one.await.expect("visit task");
                        }
                    });
                    spent += started.elapsed();
                }
                spent
            });
        });
        drop(app);
    }
    group.finish();
}

criterion_group!(benches, welcome_visit);
criterion_main!(benches);
