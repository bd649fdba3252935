//! `PostgresArchive` against a real PostgreSQL server: the conformance suite, the model test,
//! the interleaving explorer, and what is particular to PostgreSQL (the table and its layout
//! mark, bound parameters under hostile names, TLS, round trips, failures and reconnection).
//!
//! The server comes from `support/postgres_server.rs`: `ARCHIVE_POSTGRES_URL`, or a server
//! started from Debian's `postgresql` package on a free loopback port; without either the tests
//! skip with a notice, or fail under `ARCHIVE_POSTGRES_REQUIRED=1`. Tests that stop, kill or
//! restart the server always start their own.

#![cfg(feature = "archive-postgres")]

#[path = "support/postgres_server.rs"]
mod postgres_server;

use std::path::Path;
use std::sync::OnceLock;

use session_archive::PostgresArchive;

use self::postgres_server::{server_ready, shared_url};

/// The archive of one conformance test: its table is named after the test's own temporary
/// directory and this process's run, so reopening on the same directory (the model test's
/// reopen step) reaches the same data, and runs sharing a server never meet.
fn conformance_archive(dir: &Path) -> PostgresArchive {
    static RUN: OnceLock<String> = OnceLock::new();
    let url = shared_url().expect("server_ready checked the server");
    let test: String = dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let run = RUN.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..8].to_owned());
    let table = format!("t_{run}_{test}");
    let table = &table[..table.len().min(48)];
    PostgresArchive::builder(&url)
        .table(table)
        .pool_size(4)
        .connect()
        .expect("connect to the shared server")
}

session_archive::archive_conformance!(
    postgres_conformance,
    conformance_archive,
    persistent,
    when = server_ready
);

session_archive::session_explorer!(
    postgres_explorer,
    conformance_archive,
    seeds = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/explore_seeds.txt"),
    when = server_ready
);
