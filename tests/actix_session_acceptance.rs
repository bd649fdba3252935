//! actix-session's own store acceptance suite, run unmodified against `ArchiveStore` over
//! memory, redb and Redis: a basic workflow, expiration refreshed on changes (and on every
//! request when so configured), a guard reading the session, and the complex workflow of login
//! (with renewal) and logout, with invalidation supported (a purged or renewed session's old
//! cookie finds nothing), under both cookie content security policies.
//!
//! The suite is not copied here. actix-session keeps it in its `test_helpers` module at the end
//! of `src/lib.rs`, compiled only in its own tests; `build.rs` writes that module's body from the
//! source of the release pinned in `[dev-dependencies]` (`actix-session = "=0.11.0"`) to
//! `OUT_DIR`, and hands its path to this file as `ACTIX_SESSION_TEST_HELPERS`. The module names
//! the crate's own items as `crate::…`; the `use` below puts them at this crate's root.
//!
//! Each test's store builder hands out clones of one store, as an app shares one store between
//! its workers. The Redis test runs on the server of `support/redis_server.rs`; without one it
//! is skipped after a notice, and fails under `ARCHIVE_REDIS_REQUIRED=1`.

// The suite is actix-session's code, written to its own lints: it unwraps, prints, and formats
// as it likes.
#![allow(clippy::unwrap_used, clippy::pedantic, unused_imports)]

#[cfg(feature = "archive-redis")]
#[path = "support/redis_server.rs"]
mod redis_server;

// What the suite calls `crate::config`, `crate::storage`, `crate::Session`, ….
use actix_session::{Session, SessionExt, SessionMiddleware, config, storage};

#[allow(missing_docs, dead_code)]
mod test_helpers {
    include!(env!(
        "ACTIX_SESSION_TEST_HELPERS",
        "build.rs did not mount actix-session's test_helpers: see its warning"
    ));
}

use session_archive::Archive;
use session_archive::actix_session::ArchiveStore;

/// Runs the whole suite against clones of one store over `archive`, with invalidation
/// supported.
fn acceptance(archive: impl Archive + 'static) {
    let store = ArchiveStore::new(archive);
    actix_web::rt::System::new().block_on(test_helpers::acceptance_test_suite(
        move || store.clone(),
        true,
    ));
}

#[test]
fn memory() {
    acceptance(session_archive::MemoryArchive::new());
}

#[cfg(feature = "archive-redb")]
#[test]
fn redb() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let archive = session_archive::RedbArchive::open(dir.path().join("sessions.redb"))
        .expect("open the redb file");
    acceptance(archive);
}

#[cfg(feature = "archive-redis")]
#[test]
fn redis() {
    let Some(url) = redis_server::or_skip(redis_server::shared_url()) else {
        return;
    };
    acceptance(redis_server::open(&url, &redis_server::unique_prefix()));
}
