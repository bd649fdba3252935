//! tower-sessions' own route tests, run unmodified against `ArchiveStore` over every backend:
//! memory, redb, the directory tree, Redis and PostgreSQL.
//!
//! The harness is not copied here. tower-sessions publishes it in its crate
//! (`tests/common/mod.rs`: the routes, `build_app`, and the `route_tests!` macro that stamps out
//! one `#[tokio::test]` per behaviour), and `build.rs` finds that file in the source of the
//! release pinned in `[dev-dependencies]` (`tower-sessions = "=0.15.0"`) with `cargo metadata`,
//! handing its path to this file as `TOWER_SESSIONS_ROUTE_HARNESS`. Each backend below is a
//! module holding the same `app` factory tower-sessions' own `integration-tests.rs` writes for
//! its `MemoryStore`, with `ArchiveStore` in its place.
//!
//! The Redis module runs on the server of `support/redis_server.rs`, and the PostgreSQL module
//! on that of `support/postgres_server.rs`; without one it runs over memory after a notice, and
//! fails under `ARCHIVE_REDIS_REQUIRED=1` or `ARCHIVE_POSTGRES_REQUIRED=1`.

// The harness is tower-sessions' code, written to its own lints: it unwraps, and formats as it
// likes.
#![allow(clippy::unwrap_used, clippy::pedantic)]

#[cfg(feature = "archive-redis")]
#[path = "support/redis_server.rs"]
mod redis_server;

#[cfg(feature = "archive-postgres")]
#[path = "support/postgres_server.rs"]
mod postgres_server;

#[macro_use]
#[allow(missing_docs)]
mod common {
    include!(env!(
        "TOWER_SESSIONS_ROUTE_HARNESS",
        "build.rs did not find tower-sessions' tests/common/mod.rs: see its warning"
    ));
}

use session_archive::Archive;
use session_archive::tower_sessions::ArchiveStore;

/// The store of one test's app, as tower-sessions' own tests configure theirs.
fn layer(archive: impl Archive + 'static) -> tower_sessions::SessionManagerLayer<ArchiveStore> {
    tower_sessions::SessionManagerLayer::new(ArchiveStore::new(archive)).with_secure(true)
}

/// `archive` together with the temporary directory it lives in, which goes when the archive
/// goes: the hook of a pass-through `Hooked` archive owns it.
#[cfg(any(feature = "archive-redb", feature = "archive-dir"))]
fn in_temp_dir<A: Archive + 'static>(
    open: impl FnOnce(&std::path::Path) -> A,
) -> impl Archive + 'static {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let archive = open(dir.path());
    session_archive::conformance::Hooked::new(archive, move |_| {
        let _owned = &dir;
        Ok(())
    })
}

mod memory {
    use axum::Router;
    use session_archive::MemoryArchive;

    use crate::common::build_app;

    async fn app(max_age: Option<Duration>, domain: Option<String>) -> Router {
        build_app(super::layer(MemoryArchive::new()), max_age, domain)
    }

    route_tests!(app);
}

#[cfg(feature = "archive-redb")]
mod redb {
    use axum::Router;
    use session_archive::RedbArchive;

    use crate::common::build_app;

    async fn app(max_age: Option<Duration>, domain: Option<String>) -> Router {
        let archive = super::in_temp_dir(|dir| {
            RedbArchive::open(dir.join("sessions.redb")).expect("open the redb file")
        });
        build_app(super::layer(archive), max_age, domain)
    }

    route_tests!(app);
}

#[cfg(all(feature = "archive-dir", unix))]
mod dir {
    use axum::Router;
    use session_archive::DirArchive;

    use crate::common::build_app;

    async fn app(max_age: Option<Duration>, domain: Option<String>) -> Router {
        let archive = super::in_temp_dir(|dir| DirArchive::open(dir).expect("open the tree"));
        build_app(super::layer(archive), max_age, domain)
    }

    route_tests!(app);
}

#[cfg(feature = "archive-postgres")]
mod postgres {
    use std::sync::Arc;

    use axum::Router;
    use session_archive::{Archive, MemoryArchive, PostgresArchive};

    use crate::common::build_app;
    use crate::postgres_server::{or_skip, shared_url, unique_table};

    async fn app(max_age: Option<Duration>, domain: Option<String>) -> Router {
        let archive: Arc<dyn Archive> = match or_skip(shared_url()) {
            Some(url) => Arc::new(
                PostgresArchive::builder(&url)
                    .table(&unique_table())
                    .pool_size(2)
                    .connect()
                    .expect("connect to the shared PostgreSQL server"),
            ),
            None => Arc::new(MemoryArchive::new()),
        };
        build_app(super::layer(archive), max_age, domain)
    }

    route_tests!(app);
}

#[cfg(feature = "archive-redis")]
mod redis {
    use std::sync::Arc;

    use axum::Router;
    use session_archive::{Archive, MemoryArchive};

    use crate::common::build_app;
    use crate::redis_server::{open, or_skip, shared_url, unique_prefix};

    async fn app(max_age: Option<Duration>, domain: Option<String>) -> Router {
        let archive: Arc<dyn Archive> = match or_skip(shared_url()) {
            Some(url) => Arc::new(open(&url, &unique_prefix())),
            None => Arc::new(MemoryArchive::new()),
        };
        build_app(super::layer(archive), max_age, domain)
    }

    route_tests!(app);
}
