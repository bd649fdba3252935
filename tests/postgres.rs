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

use std::collections::BTreeMap;
use std::error::Error as _;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use session_archive::archive::{Swap, SwapGroup};
use session_archive::conformance::block_on;
use session_archive::{Archive, ArchiveExt, Error, PostgresArchive, Sessions};

use self::postgres_server::{
    LocalServer, free_port, or_skip, server_ready, shared, shared_url, unique_table,
};

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

/// A fresh table on the shared server, its archive and the shared server itself.
fn fresh() -> Option<(&'static postgres_server::Shared, String, PostgresArchive)> {
    let shared = or_skip(shared())?;
    let table = unique_table();
    let archive = PostgresArchive::builder(shared.url())
        .table(&table)
        .pool_size(4)
        .connect()
        .expect("connect to the shared server");
    Some((shared, table, archive))
}

/// `url` with one more query parameter `pair` (`key=value`).
fn with_param(url: &str, pair: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{pair}")
}

/// The error and every source under it, one per line, for messages and for matching.
fn chain(err: &Error) -> String {
    let mut text = format!("{err}");
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(text, "\n  caused by: {cause}");
        source = cause.source();
    }
    text
}

/// Asserts that `err` is a PostgreSQL backend error and returns its chain.
fn backend_error(err: &Error) -> String {
    assert!(
        matches!(
            err,
            Error::Backend {
                backend: "postgres",
                ..
            }
        ),
        "expected a postgres backend error, got {err:?}"
    );
    chain(err)
}

/// The operation of a backend error.
fn operation(err: &Error) -> &'static str {
    match err {
        Error::Backend { operation, .. } => operation,
        other => panic!("expected a backend error, got {other:?}"),
    }
}

fn invalid_name(result: session_archive::Result<impl std::fmt::Debug>, what: &str) {
    match result {
        Err(Error::InvalidName { .. }) => {}
        other => panic!("{what}: expected InvalidName, got {other:?}"),
    }
}

/// Every row of `table` as hex of domain, key and value, in byte order, read by psql: what is
/// really in the table, not what the archive says.
fn dump(psql: impl Fn(&str) -> Result<String, String>, table: &str) -> Vec<String> {
    let rows = psql(&format!(
        "SELECT encode(convert_to(domain, 'UTF8'), 'hex') || ' ' || \
         encode(convert_to(key, 'UTF8'), 'hex') || ' ' || encode(value, 'hex') \
         FROM \"{table}\" ORDER BY convert_to(domain, 'UTF8'), convert_to(key, 'UTF8')"
    ))
    .expect("dump the table");
    rows.lines().map(str::to_owned).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

/// The rows a model of the table should have, as [`dump`] prints them.
fn model_dump(model: &BTreeMap<(String, String), Vec<u8>>) -> Vec<String> {
    model
        .iter()
        .map(|((d, k), v)| format!("{} {} {}", hex(d.as_bytes()), hex(k.as_bytes()), hex(v)))
        .collect()
}

/// Every page of a listing with pages of `limit`, so hostile names serve as cursors.
fn all_pages(
    mut list: impl FnMut(Option<&str>) -> session_archive::Result<session_archive::archive::Page>,
) -> Vec<String> {
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = list(cursor.as_deref()).expect("list a page");
        names.extend(page.names);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return names,
        }
    }
}

/// Names that are valid, and that would break SQL spliced together as text.
fn hostile_names(victim: &str, table: &str) -> Vec<String> {
    let mut names: Vec<String> = [
        "'",
        "\"",
        ";",
        "--",
        "*",
        "?",
        "$1",
        "$2::text",
        "%",
        "_",
        "%_%",
        "' OR '1'='1",
        "$$",
        "$body$",
        "NULL",
        " ",
        " padded ",
        "\u{feff}",
        "e\u{301}",
        "\u{e9}",
        "🦀 名前 ü",
        "a'b\"c;d--e$1f%g_h",
    ]
    .iter()
    .map(|name| (*name).to_owned())
    .collect();
    names.push(format!("'); DROP TABLE \"{victim}\"; --"));
    names.push(format!("\"; DROP TABLE \"{victim}\"; --"));
    names.push(format!("'); DELETE FROM \"{table}\"; --"));
    names.push(format!("$body$; DROP TABLE \"{victim}\"; $body$"));
    names.push("a".repeat(255));
    names.push(format!("{}a", "\u{e9}".repeat(127)));
    names.push(format!("{}abc", "🦀".repeat(63)));
    for name in &names {
        assert!(
            session_archive::name::validate_name(session_archive::error::NameKind::Key, name)
                .is_ok(),
            "{name:?} should be valid"
        );
    }
    names
}

/// Names that break the rule: a backslash among them, and SQL that holds one.
fn invalid_names() -> Vec<String> {
    vec![
        String::new(),
        ".".to_owned(),
        "..".to_owned(),
        ".x".to_owned(),
        "a/b".to_owned(),
        "a\\b".to_owned(),
        "\\".to_owned(),
        "'); DROP TABLE x; --\\".to_owned(),
        "a\0b".to_owned(),
        "a\nb".to_owned(),
        "\u{7f}".to_owned(),
        "\u{85}".to_owned(),
        "a".repeat(256),
        format!("{}ab", "\u{e9}".repeat(127)),
    ]
}

type Model = BTreeMap<(String, String), Vec<u8>>;

/// `get_many` and `get_each` of the hostile names, with absent entries among them.
fn hostile_reads(archive: &PostgresArchive, names: &[String], model: &Model) {
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let expected: Vec<Option<Vec<u8>>> = names
        .iter()
        .map(|n| Some(format!("set:{n}").into_bytes()))
        .collect();
    assert_eq!(archive.get_many("d", &refs).expect("the call"), expected);
    let mut entries: Vec<(&str, &str)> = Vec::new();
    for name in names {
        entries.push((name, "k"));
        entries.push(("d", name));
        entries.push((name, name));
    }
    let found = archive.get_each(&entries).expect("the call");
    for ((d, k), got) in entries.iter().zip(found) {
        assert_eq!(
            got,
            model.get(&((*d).to_owned(), (*k).to_owned())).cloned(),
            "{d:?}/{k:?}"
        );
    }
}

/// `set_many` of every hostile name in one transaction, then `compare_and_swap_each` across
/// them, in `model` too.
fn hostile_batches(archive: &PostgresArchive, names: &[String], model: &mut Model) {
    let values: Vec<Vec<u8>> = names
        .iter()
        .map(|n| format!("many:{n}").into_bytes())
        .collect();
    let batch: Vec<(&str, &str, &[u8])> = names
        .iter()
        .zip(&values)
        .map(|(n, v)| (n.as_str(), n.as_str(), v.as_slice()))
        .collect();
    archive.set_many(&batch).expect("the call");
    for (n, v) in names.iter().zip(&values) {
        model.insert((n.clone(), n.clone()), v.clone());
    }
    let swaps: Vec<[session_archive::archive::Swap<'_>; 1]> = names
        .iter()
        .zip(&values)
        .map(|(n, v)| [(n.as_str(), Some(v.as_slice()), None)])
        .collect();
    let groups: Vec<session_archive::archive::SwapGroup<'_>> = names
        .iter()
        .zip(&swaps)
        .map(|(n, s)| (n.as_str(), s.as_slice()))
        .collect();
    assert_eq!(
        archive.compare_and_swap_each(&groups).expect("the call"),
        vec![true; names.len()]
    );
    for n in names {
        model.remove(&(n.clone(), n.clone()));
    }
}

/// Every call refuses each name that breaks the rule.
fn refuse_invalid_names(archive: &PostgresArchive) {
    for bad in invalid_names() {
        let bad = bad.as_str();
        invalid_name(archive.set(bad, "k", b"v"), "set domain");
        invalid_name(archive.set("d", bad, b"v"), "set key");
        invalid_name(archive.get(bad, "k"), "get");
        invalid_name(archive.has("d", bad), "has");
        invalid_name(archive.remove(bad, "k"), "remove");
        invalid_name(archive.remove_domain(bad), "remove_domain");
        invalid_name(archive.list_keys(bad, None, 10), "list_keys");
        invalid_name(archive.get_many("d", &["k", bad]), "get_many");
        invalid_name(archive.get_each(&[("d", "k"), (bad, "k")]), "get_each");
        invalid_name(
            archive.set_many(&[("ok", "ok", b"v"), ("d", bad, b"v")]),
            "set_many",
        );
        invalid_name(
            archive
                .compare_and_swap_many("ok", &[("ok", None, Some(b"v")), (bad, None, Some(b"v"))]),
            "compare_and_swap_many",
        );
        invalid_name(
            archive.compare_and_swap_each(&[
                ("ok", &[("ok", None, Some(b"v"))]),
                (bad, &[("k", None, Some(b"v"))]),
            ]),
            "compare_and_swap_each",
        );
    }
}

/// Hostile names are bound parameters: they round-trip through every call, listings page
/// through them as cursors, and the table holds exactly what was written, beside a victim table
/// that is still there. Names that break the rule are refused before anything is written.
#[test]
fn hostile_names_round_trip_as_bound_parameters() {
    let Some((shared, table, archive)) = fresh() else {
        return;
    };
    let victim = unique_table();
    shared
        .psql(&format!(
            "CREATE TABLE \"{victim}\" (x int); INSERT INTO \"{victim}\" VALUES (1)"
        ))
        .unwrap();
    let names = hostile_names(&victim, &table);
    let psql = |sql: &str| shared.psql(sql);
    let mut model = Model::new();
    let value = |name: &str, tag: &str| format!("{tag}:{name}").into_bytes();

    // set, get, has: each name as a domain (key "k") and as a key (domain "d").
    for name in &names {
        for (d, k) in [(name.as_str(), "k"), ("d", name.as_str())] {
            let v = value(name, "set");
            archive.set(d, k, &v).unwrap();
            assert_eq!(archive.get(d, k).unwrap(), Some(v.clone()), "{d:?}/{k:?}");
            assert!(archive.has(d, k).unwrap());
            assert!(archive.has_domain(d).unwrap());
            model.insert((d.to_owned(), k.to_owned()), v);
        }
    }
    assert_eq!(dump(psql, &table), model_dump(&model));

    // Listings, three names a page, with the names themselves as cursors.
    let domains: Vec<String> = model
        .keys()
        .map(|(d, _)| d.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(all_pages(|c| archive.list_domains(c, 3)), domains);
    let keys: Vec<String> = model
        .keys()
        .filter(|(d, _)| d == "d")
        .map(|(_, k)| k.clone())
        .collect();
    assert_eq!(all_pages(|c| archive.list_keys("d", c, 3)), keys);
    for name in &names {
        assert_eq!(
            archive.keys(name).collect::<Result<Vec<_>, _>>().unwrap(),
            ["k"]
        );
    }

    hostile_reads(&archive, &names, &model);

    // compare_and_swap_many: a stale comparison changes nothing; a right one swaps the key and
    // adds the name as a key of its own domain.
    for name in &names {
        let old = value(name, "set");
        let new = value(name, "swapped");
        let stale = [
            ("k", Some(&b"stale"[..]), Some(&new[..])),
            (name.as_str(), None, Some(&new[..])),
        ];
        assert!(!archive.compare_and_swap_many(name, &stale).unwrap());
        let swaps = [
            ("k", Some(&old[..]), Some(&new[..])),
            (name.as_str(), None, Some(&new[..])),
        ];
        assert!(
            archive.compare_and_swap_many(name, &swaps).unwrap(),
            "{name:?}"
        );
        assert!(
            archive
                .compare_and_swap(name, name, Some(&new), Some(&old))
                .unwrap()
        );
        model.insert((name.clone(), "k".to_owned()), new.clone());
        model.insert((name.clone(), name.clone()), old);
    }
    assert_eq!(dump(psql, &table), model_dump(&model));

    hostile_batches(&archive, &names, &mut model);
    assert_eq!(dump(psql, &table), model_dump(&model));

    // remove and remove_domain.
    for (i, name) in names.iter().enumerate() {
        if i % 2 == 0 {
            assert!(archive.remove("d", name).unwrap());
            assert!(!archive.remove("d", name).unwrap());
            model.remove(&("d".to_owned(), name.clone()));
        } else {
            assert!(archive.remove_domain(name).unwrap());
            assert!(!archive.has_domain(name).unwrap());
            model.retain(|(d, _), _| d != name);
        }
    }
    assert_eq!(dump(psql, &table), model_dump(&model));

    let before = dump(psql, &table);
    refuse_invalid_names(&archive);
    assert_eq!(
        dump(psql, &table),
        before,
        "an invalid name wrote something"
    );

    // The victim and the table are still there.
    assert_eq!(
        shared.psql(&format!("SELECT x FROM \"{victim}\"")).unwrap(),
        "1"
    );
    shared.psql(&format!("DROP TABLE \"{victim}\"")).unwrap();
}

/// A table name that is not plain identifiers is refused before anything is sent: with a server
/// that is not there, the error is still about the name; with the real one, nothing is created.
#[test]
fn hostile_table_names_are_refused_before_any_sql() {
    let Some(shared) = or_skip(shared()) else {
        return;
    };
    let tag = unique_table();
    let victim = format!("{tag}_victim");
    shared
        .psql(&format!("CREATE TABLE \"{victim}\" (x int)"))
        .unwrap();
    let hostile = [
        format!("x\"; DROP TABLE \"{victim}\"; --"),
        format!("x'; DROP TABLE {victim}; --"),
        format!("{tag}.b.c"),
        format!("1{tag}"),
        format!("{tag}{}", "x".repeat(49 - tag.len())),
        format!("public.{tag}{}", "x".repeat(49 - tag.len())),
        format!("{tag}{}.t", "x".repeat(49 - tag.len())),
        String::new(),
        ".".to_owned(),
        format!(".{tag}"),
        format!("{tag}."),
        format!("{tag}-x"),
        format!("{tag} x"),
        format!("{tag}\u{e4}"),
        format!("\"{tag}\""),
    ];
    let nowhere = format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        free_port().unwrap()
    );
    for name in &hostile {
        for url in [nowhere.as_str(), shared.url()] {
            let err = PostgresArchive::builder(url)
                .table(name)
                .connect_timeout(Duration::from_secs(1))
                .connect()
                .expect_err(name);
            let text = backend_error(&err);
            assert_eq!(operation(&err), "use the table name", "{name:?}: {text}");
            assert!(text.contains("is not a table name"), "{text}");
        }
    }
    let created = shared
        .psql(&format!(
            "SELECT count(*) FROM pg_class WHERE relname LIKE '%{tag}%' AND relname <> '{victim}'"
        ))
        .unwrap();
    assert_eq!(created, "0");
    let functions = shared
        .psql(&format!(
            "SELECT count(*) FROM pg_proc WHERE proname LIKE '%{tag}%'"
        ))
        .unwrap();
    assert_eq!(functions, "0");
    assert_eq!(
        shared
            .psql(&format!("SELECT count(*) FROM \"{victim}\""))
            .unwrap(),
        "0"
    );
    shared.psql(&format!("DROP TABLE \"{victim}\"")).unwrap();

    // The longest name allowed works, with functions whose names fill PostgreSQL's 63 bytes.
    let longest = format!("{tag}{}", "y".repeat(48 - tag.len()));
    let archive = PostgresArchive::builder(shared.url())
        .table(&longest)
        .connect()
        .unwrap();
    archive.set_many(&[("d", "k", b"v")]).unwrap();
    assert_eq!(archive.remove_domains(&["d"]).unwrap(), 1);
    let functions = shared
        .psql(&format!(
            "SELECT count(*) FROM pg_proc WHERE proname LIKE '{longest}%'"
        ))
        .unwrap();
    assert_eq!(functions, "8");
}

/// The table's comment records the layout; a second archive, and a second `connect`, share the
/// table; a table the archive did not make, or of a newer layout, is refused and left as it
/// was; `schema.table` works in a schema that exists.
#[test]
fn the_table_records_its_layout_and_foreign_tables_are_refused() {
    let Some((shared, table, archive)) = fresh() else {
        return;
    };
    let comment = |table: &str| table_comment(shared, table);
    assert_eq!(comment(&table), "session-archive layout 1");
    let columns = shared
        .psql(&format!(
            "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' \
             ORDER BY attnum) FROM pg_attribute WHERE attrelid = '\"{table}\"'::regclass \
             AND attnum > 0 AND NOT attisdropped"
        ))
        .unwrap();
    assert_eq!(columns, "domain text, key text, value bytea");
    let key = shared
        .psql(&format!(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = '\"{table}\"'::regclass AND contype = 'p'"
        ))
        .unwrap();
    assert_eq!(key, "PRIMARY KEY (domain, key)");

    // A second archive on the table, and a third made while the first two write.
    archive.set("d", "k", b"first").unwrap();
    let second = PostgresArchive::builder(shared.url())
        .table(&table)
        .connect()
        .unwrap();
    assert_eq!(second.get("d", "k").unwrap(), Some(b"first".to_vec()));
    second.set("d", "k2", b"second").unwrap();
    assert_eq!(archive.get("d", "k2").unwrap(), Some(b"second".to_vec()));
    assert!(
        second
            .compare_and_swap("d", "k", Some(b"first"), Some(b"swapped"))
            .unwrap()
    );
    assert_eq!(archive.get("d", "k").unwrap(), Some(b"swapped".to_vec()));
    assert_eq!(comment(&table), "session-archive layout 1");
}

/// The comment of `table` (found by the search path), or `<none>`.
fn table_comment(shared: &postgres_server::Shared, table: &str) -> String {
    shared
        .psql(&format!(
            "SELECT coalesce(obj_description('\"{table}\"'::regclass, 'pg_class'), '<none>')"
        ))
        .expect("psql")
}

/// How many functions have names that start with `table`'s: the archive's own for it.
fn functions_named_after(shared: &postgres_server::Shared, table: &str) -> String {
    shared
        .psql(&format!(
            "SELECT count(*) FROM pg_proc WHERE proname LIKE '{table}%'"
        ))
        .expect("psql")
}

/// A table the archive did not make (no comment, another maker's comment) or of a newer layout
/// is refused with a clear error, and left as it was.
#[test]
fn foreign_tables_and_newer_layouts_are_refused_and_left_alone() {
    let Some(shared) = or_skip(shared()) else {
        return;
    };
    let comment = |table: &str| table_comment(shared, table);
    // A table without the comment: refused, and untouched (no comment, no functions, its row).
    let foreign = unique_table();
    shared
        .psql(&format!(
            "CREATE TABLE \"{foreign}\" (domain text, key text, value bytea); \
             INSERT INTO \"{foreign}\" VALUES ('d', 'k', 'v')"
        ))
        .unwrap();
    let err = PostgresArchive::builder(shared.url())
        .table(&foreign)
        .connect()
        .expect_err("a table without the layout comment");
    let text = backend_error(&err);
    assert!(
        text.contains(&foreign) && text.contains("is not a session-archive table"),
        "{text}"
    );
    assert_eq!(comment(&foreign), "<none>");
    let untouched = |table: &str| {
        let rows = shared
            .psql(&format!(
                "SELECT domain || key || encode(value, 'escape') FROM \"{table}\""
            ))
            .unwrap();
        (rows, functions_named_after(shared, table))
    };
    assert_eq!(untouched(&foreign), ("dkv".to_owned(), "0".to_owned()));

    // Another maker's comment, and a newer layout: refused, untouched.
    shared
        .psql(&format!("COMMENT ON TABLE \"{foreign}\" IS 'made by hand'"))
        .unwrap();
    let err = PostgresArchive::builder(shared.url())
        .table(&foreign)
        .connect()
        .expect_err("a table of another maker");
    let text = backend_error(&err);
    assert!(text.contains("made by hand"), "{text}");
    shared
        .psql(&format!(
            "COMMENT ON TABLE \"{foreign}\" IS 'session-archive layout 999'"
        ))
        .unwrap();
    let err = PostgresArchive::builder(shared.url())
        .table(&foreign)
        .connect()
        .expect_err("a table of a newer layout");
    let text = backend_error(&err);
    assert!(
        text.contains("layout 999") && text.contains("newer"),
        "{text}"
    );
    assert_eq!(comment(&foreign), "session-archive layout 999");
    assert_eq!(untouched(&foreign), ("dkv".to_owned(), "0".to_owned()));
    shared.psql(&format!("DROP TABLE \"{foreign}\"")).unwrap();
}

/// `schema.table` works in a schema that exists (table and functions in it), and is an error in
/// one that does not; the default table is found through the URL's search path.
#[test]
fn tables_in_a_schema_and_the_default_table() {
    let Some(shared) = or_skip(shared()) else {
        return;
    };
    // schema.table in a schema that exists; one in a schema that does not is an error.
    let schema = format!("s_{}", &unique_table()[2..]);
    shared.psql(&format!("CREATE SCHEMA \"{schema}\"")).unwrap();
    let in_schema = PostgresArchive::builder(shared.url())
        .table(&format!("{schema}.sessions"))
        .connect()
        .unwrap();
    assert_eq!(in_schema.table(), format!("{schema}.sessions"));
    in_schema.set("d", "k", b"in schema").unwrap();
    assert_eq!(
        in_schema.get("d", "k").unwrap(),
        Some(b"in schema".to_vec())
    );
    let placed = shared
        .psql(&format!(
            "SELECT obj_description('\"{schema}\".sessions'::regclass, 'pg_class'), \
             (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
              WHERE n.nspname = '{schema}' AND p.proname LIKE 'sessions%'), \
             (SELECT encode(value, 'escape') FROM \"{schema}\".sessions)"
        ))
        .unwrap();
    assert_eq!(placed, "session-archive layout 1|8|in schema");
    let err = PostgresArchive::builder(shared.url())
        .table(&format!("{schema}_missing.sessions"))
        .connect()
        .expect_err("a schema that does not exist");
    backend_error(&err);

    // The default table, found through the search path the URL's `options` set (percent-encoded
    // as a URL must be), by two archives made with `connect`.
    let url = with_param(
        shared.url(),
        &format!("options=-c%20search_path%3D{schema}"),
    );
    let first = PostgresArchive::connect(&url).unwrap();
    let again = PostgresArchive::connect(&url).unwrap();
    first.set("d", "k", b"default").unwrap();
    assert_eq!(again.get("d", "k").unwrap(), Some(b"default".to_vec()));
    let default = shared
        .psql(&format!(
            "SELECT encode(value, 'escape') FROM \"{schema}\".session_archive"
        ))
        .unwrap();
    assert_eq!(default, "default");
    drop((first, again, in_schema));
    shared
        .psql(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .unwrap();
}

/// Neither the builder's nor the archive's `Debug`, nor the errors of a malformed URL or an
/// unreachable server, show the URL's password.
#[test]
fn debug_and_errors_never_show_the_password() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<PostgresArchive>();
    let Some(shared) = or_skip(shared()) else {
        return;
    };
    let table = unique_table();
    let with_password = shared
        .url()
        .replacen("://postgres@", "://postgres:sekrit@", 1);
    let builder = PostgresArchive::builder(&with_password).table(&table);
    let debug = format!("{builder:?}");
    assert!(!debug.contains("sekrit"), "{debug}");
    assert!(debug.contains(&table), "{debug}");
    if with_password.contains("sekrit") {
        // The test servers trust every login, so the password is not checked.
        let archive = builder.connect().unwrap();
        archive.set("d", "k", b"secret value").unwrap();
        for debug in [format!("{archive:?}"), format!("{archive:#?}")] {
            assert!(!debug.contains("sekrit"), "{debug}");
            assert!(!debug.contains("secret value"), "{debug}");
            assert!(debug.contains(&table), "{debug}");
        }
    }
    let nowhere = format!(
        "postgres://postgres:sekrit@127.0.0.1:{}/postgres",
        free_port().unwrap()
    );
    for url in [
        nowhere,
        "postgres://postgres:sekrit@127.0.0.1:notaport/postgres".to_owned(),
        "postgres://postgres:sekrit@127.0.0.1/postgres?sslmode=bogus".to_owned(),
        "host=127.0.0.1 password=sekrit port=notaport".to_owned(),
    ] {
        let builder = PostgresArchive::builder(&url).connect_timeout(Duration::from_secs(1));
        assert!(!format!("{builder:?}").contains("sekrit"));
        let err = builder.connect().expect_err(&url);
        let text = backend_error(&err);
        for shown in [text, format!("{err:?}")] {
            assert!(!shown.contains("sekrit"), "{shown}");
        }
    }
}

/// Whether the connections named `application_name` are all encrypted, and how many there are.
fn encrypted(server: &LocalServer, application_name: &str) -> String {
    server
        .psql(&format!(
            "SELECT bool_and(ssl), count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE application_name = '{application_name}'"
        ))
        .expect("psql")
}

/// A second self-signed certificate, for `localhost`, that did not sign the server's.
fn stranger_certificate(dir: &Path) -> std::path::PathBuf {
    let cert = dir.join("stranger.crt");
    let output = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-days", "2", "-keyout"])
        .arg(dir.join("stranger.key"))
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    cert
}

/// What TLS refuses: a host the certificate does not name (with verify-full only), a root
/// certificate that did not sign the server's, no root certificate, a missing one.
fn tls_refusals(server: &LocalServer, table: &str) {
    let ca = server.ca_certificate().display().to_string();
    let localhost = server.url().replacen("127.0.0.1", "localhost", 1);
    // The right root certificate, but a host the certificate is not made out to (reached at
    // 127.0.0.1 through `hostaddr`): verify-full refuses it, verify-ca does not check the name.
    let elsewhere = format!(
        "postgres://postgres@db.invalid:{}/postgres?hostaddr=127.0.0.1&sslrootcert={ca}",
        server.port()
    );
    let err = PostgresArchive::builder(&format!("{elsewhere}&sslmode=verify-full"))
        .table(table)
        .connect()
        .expect_err("verify-full to a host the certificate does not name");
    let text = backend_error(&err);
    assert!(text.contains("not valid for name"), "{text}");
    let archive = PostgresArchive::builder(&format!("{elsewhere}&sslmode=verify-ca"))
        .table(table)
        .connect()
        .unwrap_or_else(|err| panic!("verify-ca: {}", chain(&err)));
    assert_eq!(
        archive.get("d", "k").expect("the call"),
        Some(b"over tls".to_vec())
    );

    // A root certificate that did not sign the server's: refused, whatever the host.
    let dir = tempfile::tempdir().expect("the call");
    let stranger = stranger_certificate(dir.path());
    for url in [
        format!(
            "{localhost}?sslmode=verify-full&sslrootcert={}",
            stranger.display()
        ),
        format!(
            "{}?sslmode=verify-ca&sslrootcert={}",
            server.url(),
            stranger.display()
        ),
        format!(
            "{}?sslmode=require&sslrootcert={}",
            server.url(),
            stranger.display()
        ),
    ] {
        let err = PostgresArchive::builder(&url)
            .table(table)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .expect_err(&url);
        let text = backend_error(&err);
        assert!(text.to_lowercase().contains("certificate"), "{url}: {text}");
    }

    // verify-full without a root certificate (none in the URL, none on the builder, and no
    // ~/.postgresql/root.crt): a clear error, before connecting.
    let home_root = std::env::var_os("HOME")
        .map(|home| Path::new(&home).join(".postgresql/root.crt"))
        .filter(|path| path.exists());
    if home_root.is_none() {
        let err = PostgresArchive::builder(&format!("{localhost}?sslmode=verify-full"))
            .table(table)
            .connect()
            .expect_err("verify-full without a root certificate");
        let text = backend_error(&err);
        assert!(text.contains("need a root certificate"), "{text}");
    }
    // A root certificate file that is not there.
    let err = PostgresArchive::builder(&format!(
        "{localhost}?sslmode=verify-full&sslrootcert={}",
        dir.path().join("missing.crt").display()
    ))
    .table(table)
    .connect()
    .expect_err("a missing root certificate file");
    assert!(
        matches!(err, Error::Io { .. } | Error::Backend { .. }),
        "{err:?}"
    );
}

/// TLS as the URL asks: `require` encrypts, `verify-full` checks the chain and the host,
/// refuses a certificate another CA signed and a missing root certificate, `disable` does not
/// encrypt; `pg_stat_ssl` says what the server saw.
#[test]
fn tls_connections_are_encrypted_and_verified_as_the_url_asks() {
    let Some(server) = or_skip(LocalServer::start()) else {
        return;
    };
    let table = unique_table();
    let ca = server.ca_certificate().display().to_string();

    // require: encrypted, the certificate unchecked.
    let url = with_param(&server.tls_url(), "application_name=tls_require");
    let archive = PostgresArchive::builder(&url)
        .table(&table)
        .connect()
        .unwrap();
    archive.set("d", "k", b"over tls").unwrap();
    assert_eq!(encrypted(&server, "tls_require"), "t|1");

    // verify-full to localhost and to 127.0.0.1 (the certificate names both), and verify-ca,
    // with the root certificate from the URL or from the builder.
    let localhost = server.url().replacen("127.0.0.1", "localhost", 1);
    for (name, url, builder_root) in [
        (
            "tls_full_host",
            format!("{localhost}?sslmode=verify-full&sslrootcert={ca}"),
            false,
        ),
        (
            "tls_full_ip",
            format!("{}?sslmode=verify-full&sslrootcert={ca}", server.url()),
            false,
        ),
        (
            "tls_full_builder",
            format!("{localhost}?sslmode=verify-full"),
            true,
        ),
        (
            "tls_ca",
            format!("{}?sslmode=verify-ca&sslrootcert={ca}", server.url()),
            false,
        ),
    ] {
        let url = with_param(&url, &format!("application_name={name}"));
        let mut builder = PostgresArchive::builder(&url).table(&table);
        if builder_root {
            builder = builder.root_certificate(server.ca_certificate());
        }
        let archive = builder
            .connect()
            .unwrap_or_else(|err| panic!("{name}: {}", chain(&err)));
        assert_eq!(archive.get("d", "k").unwrap(), Some(b"over tls".to_vec()));
        assert_eq!(encrypted(&server, name), "t|1", "{name}");
    }

    tls_refusals(&server, &table);

    // disable: not encrypted.
    let url = with_param(
        &server.url(),
        "sslmode=disable&application_name=tls_disable",
    );
    let plain = PostgresArchive::builder(&url)
        .table(&table)
        .connect()
        .unwrap();
    assert_eq!(plain.get("d", "k").unwrap(), Some(b"over tls".to_vec()));
    assert_eq!(encrypted(&server, "tls_disable"), "f|1");

    // A libpq key=value string, whose quoted values hold blanks: a root certificate in a
    // directory with a space in its name, an application name with two spaces.
    let spaced = tempfile::Builder::new()
        .prefix("with space ")
        .tempdir()
        .expect("a temporary directory");
    let root = spaced.path().join("root's.crt");
    std::fs::copy(server.ca_certificate(), &root).expect("copy the certificate");
    let escaped = root.display().to_string().replace('\'', "\\'");
    let conninfo = format!(
        "host=localhost port={} user=postgres dbname=postgres sslmode=verify-full \
         sslrootcert = '{escaped}' application_name='key  value'",
        server.port()
    );
    let keyed = PostgresArchive::builder(&conninfo)
        .table(&table)
        .connect()
        .unwrap_or_else(|err| panic!("{conninfo}: {}", chain(&err)));
    assert_eq!(keyed.get("d", "k").unwrap(), Some(b"over tls".to_vec()));
    assert_eq!(encrypted(&server, "key  value"), "t|1");

    // Percent-encoded query values reach the server decoded once, `&` and `%` included.
    let url = with_param(&server.tls_url(), "application_name=a%26b%2520c");
    let odd = PostgresArchive::builder(&url)
        .table(&table)
        .connect()
        .unwrap();
    assert_eq!(odd.get("d", "k").unwrap(), Some(b"over tls".to_vec()));
    assert_eq!(encrypted(&server, "a&b%20c"), "t|1");
}

/// The statements the server ran since the last `pg_stat_statements_reset()`, not counting the
/// readings themselves: how many mention `table`, how many there were in all, and every one,
/// with its calls, for messages.
fn statements_run(server: &LocalServer, table: &str) -> (u64, u64, String) {
    let not_reading = "query NOT ILIKE '%pg_stat_statements%'";
    let count = |filter: &str| -> u64 {
        server
            .psql(&format!(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE {not_reading}{filter}"
            ))
            .expect("psql")
            .parse()
            .expect("psql")
    };
    let listed = server
        .psql(&format!(
            "SELECT calls || ' x ' || query FROM pg_stat_statements WHERE {not_reading} \
             ORDER BY calls DESC, query"
        ))
        .expect("psql");
    (
        count(&format!(" AND query ILIKE '%{table}%'")),
        count(""),
        listed,
    )
}

/// [`statements_run`] once the server has counted `expected` of the table's statements (it
/// counts each as it ends, which may be just after the client has its answer), or 5 s passed,
/// and a moment more for any statement beyond them.
fn statements_after(server: &LocalServer, table: &str, expected: u64) -> (u64, u64, String) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while statements_run(server, table).0 < expected && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(200));
    statements_run(server, table)
}

/// A read-modify-write request of a stored session, as the welcome app makes one (start from
/// the cookie's id, then an atomic update), costs two statements on the server: one `SELECT` of
/// the state and the record, one two-key swap of both. So do the two async calls the axum
/// layer makes instead (`get_many_async`, `compare_and_swap_many_async`). Nothing else runs:
/// no `BEGIN`/`COMMIT`, no session settings, no health check. And the server plans none of
/// them again (each connection plans its statements once). Counted with `pg_stat_statements` on
/// a server of the test's own.
#[test]
fn a_read_modify_write_request_costs_two_statements() {
    const REQUESTS: u64 = 10;
    let Some(server) = or_skip(LocalServer::start_with(&[(
        "pg_stat_statements.track_planning",
        "on",
    )])) else {
        return;
    };
    let table = unique_table();
    let archive = Arc::new(
        PostgresArchive::builder(&server.url())
            .table(&table)
            .connect()
            .unwrap(),
    );
    let sessions = Sessions::builder(Arc::clone(&archive))
        .secure(false)
        .build();
    let mut first = sessions.start(None, 0_u64).unwrap();
    first.save().unwrap();
    let id = first.id().to_string();
    // A warm-up request opens the connection and prepares its statements.
    sessions
        .start(Some(&id), 0_u64)
        .unwrap()
        .update(|n| *n += 1)
        .unwrap();

    let mut counted = Vec::new();
    server.psql("SELECT pg_stat_statements_reset()").unwrap();
    for _ in 0..REQUESTS {
        let mut session = sessions.start(Some(&id), 0_u64).unwrap();
        session.update(|n| *n += 1).unwrap();
    }
    counted.push(("update", statements_after(&server, &table, 2 * REQUESTS)));
    assert_planned_rarely(&server, &table, REQUESTS);

    server.psql("SELECT pg_stat_statements_reset()").unwrap();
    for _ in 0..REQUESTS {
        let mut session = sessions.start(Some(&id), 0_u64).unwrap();
        session.update_send(|n| *n += 1).unwrap();
    }
    counted.push((
        "update_send",
        statements_after(&server, &table, 2 * REQUESTS),
    ));
    assert_eq!(*sessions.start(Some(&id), 0_u64).unwrap(), 2 * REQUESTS + 1);

    // The axum layer's two calls, awaited on a runtime, on the session's own domain and keys.
    let domains: Vec<String> = archive
        .domains()
        .map(Result::unwrap)
        .filter(|domain| archive.has(domain, session_archive::STATE_KEY).unwrap())
        .collect();
    assert_eq!(domains.len(), 1, "{domains:?}");
    let domain = domains[0].as_str();
    let keys: Vec<String> = archive.keys(domain).map(Result::unwrap).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    assert!(keys.contains(&session_archive::STATE_KEY), "{keys:?}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    server.psql("SELECT pg_stat_statements_reset()").unwrap();
    runtime.block_on(async {
        for _ in 0..REQUESTS {
            let values = archive
                .get_many_async(domain, &keys)
                .expect("PostgresArchive offers get_many_async")
                .await
                .unwrap();
            let swaps: Vec<session_archive::archive::Swap<'_>> = keys
                .iter()
                .zip(&values)
                .map(|(key, value)| {
                    let value = value.as_deref();
                    (
                        *key,
                        value,
                        if *key == session_archive::STATE_KEY {
                            Some(&b"1"[..])
                        } else {
                            value
                        },
                    )
                })
                .collect();
            let swapped = archive
                .compare_and_swap_many_async(domain, &swaps)
                .expect("PostgresArchive offers compare_and_swap_many_async")
                .await
                .unwrap();
            assert!(swapped);
        }
    });
    counted.push((
        "async calls",
        statements_after(&server, &table, 2 * REQUESTS),
    ));

    for (how, counted) in counted {
        assert_two_statements_each(how, counted, &table, REQUESTS);
    }
}

/// What [`statements_run`] counted for `requests` read-modify-write requests (`how`): two
/// statements each, the update's being the two-key statement, not the swap function's call.
fn assert_two_statements_each(how: &str, counted: (u64, u64, String), table: &str, requests: u64) {
    let (of_table, all, listed) = counted;
    assert_eq!(
        (of_table, all),
        (2 * requests, 2 * requests),
        "{how}: {requests} requests ran these statements:\n{listed}"
    );
    assert!(
        !listed.contains(&format!("{table}_swap\"(")) && listed.contains("u2 AS (UPDATE"),
        "{how}: {requests} requests ran these statements:\n{listed}"
    );
}

/// The statements of `table` were planned fewer than `requests / 2` times since the last
/// `pg_stat_statements_reset()`: a plan made again now and then (the table's statistics
/// changed) is fine; one per call is not.
fn assert_planned_rarely(server: &LocalServer, table: &str, requests: u64) {
    let plans = server
        .psql(&format!(
            "SELECT coalesce(sum(plans), 0) FROM pg_stat_statements WHERE query ILIKE '%{table}%'"
        ))
        .expect("psql");
    assert!(
        plans.parse::<u64>().expect("a count") < requests / 2,
        "{requests} requests planned their statements {plans} times"
    );
}

/// Tells the re-executed child where to write: `<round> <table> <url>`.
const CRASH_CHILD_ENV: &str = "SESSION_ARCHIVE_POSTGRES_CRASH_CHILD";

/// How many threads the child writes from.
const CRASH_WRITERS: u32 = 16;

/// Marks an acknowledgement line: `ACK <thread> <seq>`, printed only after the write returned.
const ACK: &str = "ACK ";

/// The child gives up on its own after this long, in case the parent never kills it.
const CRASH_CHILD_LIFETIME: Duration = Duration::from_secs(60);

/// The value `thread` writes at step `seq`: it names both, and its length varies.
fn crash_value(thread: u32, seq: u64) -> Vec<u8> {
    let len = usize::try_from(seq % 7).expect("in range") * 300;
    let mut value = format!("t{thread} s{seq};").into_bytes();
    value.extend((0..len).map(|i| {
        u8::try_from((i + usize::try_from(seq).expect("in range")) % 251).expect("in range")
    }));
    value
}

fn crash_domain(round: u32, thread: u32, seq: u64) -> String {
    format!("r{round}-w{thread}-d{}", seq % 3)
}

fn crash_counter(round: u32, thread: u32) -> String {
    format!("r{round}-w{thread}-counter")
}

/// Writes until killed, acknowledging each write on stdout after it returned. Step `seq` writes
/// its entry `k{seq}` by `set` (`seq % 4 == 0`), by `set_many` with the thread's `latest`
/// counter (1), by `compare_and_swap` of the absent key (2), or by `compare_and_swap_each` with
/// the thread's `swapped` counter expected at its last value (3).
fn crash_write_forever(archive: &PostgresArchive, round: u32, thread: u32) {
    let started = Instant::now();
    let counter = crash_counter(round, thread);
    let mut swapped: Option<Vec<u8>> = None;
    let mut seq = 0_u64;
    while started.elapsed() < CRASH_CHILD_LIFETIME {
        let (d, k, v) = (
            crash_domain(round, thread, seq),
            format!("k{seq}"),
            crash_value(thread, seq),
        );
        let mark = seq.to_string().into_bytes();
        match seq % 4 {
            0 => archive.set(&d, &k, &v).expect("set"),
            1 => archive
                .set_many(&[(&d, &k, &v), (&counter, "latest", &mark)])
                .expect("set_many"),
            2 => assert!(
                archive
                    .compare_and_swap(&d, &k, None, Some(&v))
                    .expect("compare_and_swap")
            ),
            _ => {
                let entry = [(k.as_str(), None, Some(&v[..]))];
                let count = [("swapped", swapped.as_deref(), Some(&mark[..]))];
                let done = archive
                    .compare_and_swap_each(&[(&d, &entry), (&counter, &count)])
                    .expect("compare_and_swap_each");
                assert_eq!(done, [true, true]);
                swapped = Some(mark);
            }
        }
        println!("{ACK}{thread} {seq}");
        seq += 1;
    }
}

/// The child's side: a no-op unless [`CRASH_CHILD_ENV`] is set.
#[test]
fn crash_child_writer() {
    let Ok(spec) = std::env::var(CRASH_CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, ' ');
    let (Some(round), Some(table), Some(url)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("{CRASH_CHILD_ENV} is not <round> <table> <url>: {spec}");
    };
    let round: u32 = round.parse().expect("round");
    let archive = PostgresArchive::builder(url)
        .table(table)
        .pool_size(CRASH_WRITERS as usize)
        .connect()
        .expect("connect");
    thread::scope(|scope| {
        for thread in 0..CRASH_WRITERS {
            let archive = &archive;
            scope.spawn(move || crash_write_forever(archive, round, thread));
        }
    });
}

fn random_u64() -> u64 {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    u64::from_le_bytes(bytes[..8].try_into().expect("8 of 16 bytes"))
}

fn parse_ack(line: &str) -> Option<(u32, u64)> {
    let body = line.strip_suffix('\n')?;
    let (_, ack) = body.split_once(ACK)?;
    let (thread, seq) = ack.split_once(' ')?;
    Some((thread.parse().ok()?, seq.parse().ok()?))
}

/// Runs one child until a random number of acknowledgements and a random pause, kills it with
/// SIGKILL, and returns every write it acknowledged.
fn run_and_kill(round: u32, table: &str, url: &str) -> Vec<(u32, u64)> {
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "crash_child_writer",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD_ENV, format!("{round} {table} {url}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let acks_before_kill = 100 + random_u64() % 400;
    let pause = Duration::from_micros(random_u64() % 20_000);
    let mut acked = Vec::new();
    let mut line = String::new();
    while (acked.len() as u64) < acks_before_kill {
        line.clear();
        let read = stdout
            .read_line(&mut line)
            .expect("read the child's stdout");
        assert!(read > 0, "the child ended before the kill; see its stderr");
        acked.extend(parse_ack(&line));
    }
    thread::sleep(pause);
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    // Lines written before the kill were acknowledged too; a line the kill cut short has no
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
        acked.extend(parse_ack(&line));
    }
    acked
}

/// kill -9 of an app while 16 threads write: every write it acknowledged is in the table, each
/// thread's counters are at least as new as the last it acknowledged, and a batch is there
/// whole (its entry is there whenever its counter is). Two rounds, on one table.
#[test]
fn acknowledged_writes_survive_sigkill_of_the_app_during_16_writers() {
    let Some((shared, table, archive)) = fresh() else {
        return;
    };
    for round in 0..2 {
        let acked = run_and_kill(round, &table, shared.url());
        assert!(
            acked.len() >= 100,
            "round {round}: {} acknowledged",
            acked.len()
        );
        for &(thread, seq) in &acked {
            let (d, k) = (crash_domain(round, thread, seq), format!("k{seq}"));
            assert_eq!(
                archive.get(&d, &k).unwrap(),
                Some(crash_value(thread, seq)),
                "round {round}: acknowledged write {d}/{k} is missing or wrong"
            );
        }
        for thread in 0..CRASH_WRITERS {
            let counter = crash_counter(round, thread);
            for (key, step) in [("latest", 1), ("swapped", 3)] {
                let last = acked
                    .iter()
                    .filter(|&&(t, seq)| t == thread && seq % 4 == step)
                    .map(|&(_, seq)| seq)
                    .max();
                let stored = archive.get(&counter, key).unwrap();
                let Some(last) = last else { continue };
                let stored: u64 = String::from_utf8(stored.expect("an acknowledged counter"))
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(
                    stored >= last,
                    "{counter}/{key}: {stored} behind acknowledged {last}"
                );
                let (d, k) = (crash_domain(round, thread, stored), format!("k{stored}"));
                assert_eq!(
                    archive.get(&d, &k).unwrap(),
                    Some(crash_value(thread, stored)),
                    "the batch of {counter}/{key} = {stored} is half there"
                );
            }
        }
    }
}

/// Writers that run until told to stop, each write `set(w{thread}, k{seq}, value)`; they record
/// every acknowledged write, count the errors (each a postgres backend error), and assert that
/// no call takes longer than `limit`.
struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(u32, u64)>>>,
    failed: Arc<Mutex<Vec<String>>>,
    handles: Vec<thread::JoinHandle<()>>,
}

impl Writers {
    fn start(archive: &Arc<PostgresArchive>, threads: u32, limit: Duration) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let handles = (0..threads)
            .map(|thread| {
                let (archive, stop) = (Arc::clone(archive), Arc::clone(&stop));
                let (acked, failed) = (Arc::clone(&acked), Arc::clone(&failed));
                thread::spawn(move || {
                    let mut seq = 0_u64;
                    while !stop.load(Ordering::SeqCst) {
                        let started = Instant::now();
                        let result = if seq.is_multiple_of(2) {
                            archive.set(
                                &format!("w{thread}"),
                                &format!("k{seq}"),
                                &crash_value(thread, seq),
                            )
                        } else {
                            archive.set_many(&[(
                                &format!("w{thread}"),
                                &format!("k{seq}"),
                                &crash_value(thread, seq),
                            )])
                        };
                        let took = started.elapsed();
                        assert!(took < limit, "a call took {took:?}: {result:?}");
                        match result {
                            Ok(()) => acked
                                .lock()
                                .expect("a lock no writer poisoned")
                                .push((thread, seq)),
                            Err(err) => failed
                                .lock()
                                .expect("a lock no writer poisoned")
                                .push(backend_error(&err)),
                        }
                        seq += 1;
                        thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Writers {
            stop,
            acked,
            failed,
            handles,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().expect("a lock no writer poisoned").len()
    }

    fn failed(&self) -> usize {
        self.failed.lock().expect("a lock no writer poisoned").len()
    }

    /// Waits until `ready` holds, for `within` at most.
    fn wait_for(&self, what: &str, within: Duration, ready: impl Fn(&Writers) -> bool) {
        let deadline = Instant::now() + within;
        while !ready(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?} ({} acknowledged, {} failed)",
                self.acked(),
                self.failed()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the writers (none panicked) and returns every acknowledged write.
    fn finish(self) -> Vec<(u32, u64)> {
        self.stop.store(true, Ordering::SeqCst);
        for handle in self.handles {
            handle.join().expect("a writer panicked");
        }
        std::mem::take(&mut *self.acked.lock().expect("a lock no writer poisoned"))
    }
}

/// Asserts that `call` fails with a postgres backend error within `limit`.
fn fails_within<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    call: impl FnOnce() -> session_archive::Result<T>,
) -> String {
    let started = Instant::now();
    let result = call();
    let took = started.elapsed();
    assert!(took < limit, "{what} took {took:?}");
    match result {
        Err(err) => backend_error(&err),
        Ok(value) => panic!("{what} worked while the server was down: {value:?}"),
    }
}

/// The server stopped in the middle of a run: every call fails with a postgres backend error,
/// quickly (connect timeout 1 s, statement timeout 2 s; no call takes 10 s), and nothing
/// panics; once the server is back the same archive works again, its pool reconnecting by
/// itself. The same after the server is killed (SIGKILL) and recovers. Every write acknowledged
/// before, between and after is there.
#[test]
fn calls_fail_while_the_server_is_down_and_work_once_it_is_back() {
    let Some(mut server) = or_skip(LocalServer::start()) else {
        return;
    };
    let limit = Duration::from_secs(10);
    let archive = Arc::new(
        PostgresArchive::builder(&server.url())
            .table(&unique_table())
            .pool_size(8)
            .connect_timeout(Duration::from_secs(1))
            .statement_timeout(Some(Duration::from_secs(2)))
            .connect()
            .unwrap(),
    );
    let writers = Writers::start(&archive, 4, limit);
    writers.wait_for("writes before the stop", Duration::from_secs(30), |w| {
        w.acked() >= 40
    });

    for crash in [false, true] {
        if crash {
            server.kill();
        } else {
            server.stop();
        }
        let failed_before = writers.failed();
        writers.wait_for("failures while down", Duration::from_secs(30), |w| {
            w.failed() >= failed_before + 8
        });
        // Every kind of call fails the same way; names are still checked first.
        fails_within("get", limit, || archive.get("d", "k"));
        fails_within("has_domain", limit, || archive.has_domain("d"));
        fails_within("list_domains", limit, || archive.list_domains(None, 10));
        fails_within("set", limit, || archive.set("d", "k", b"v"));
        fails_within("compare_and_swap", limit, || {
            archive.compare_and_swap("d", "k", None, Some(b"v"))
        });
        fails_within("remove_domain", limit, || archive.remove_domain("d"));
        fails_within("get_many_async", limit, || {
            block_on(archive.get_many_async("d", &["k"]).unwrap())
        });
        fails_within("compare_and_swap_many_async", limit, || {
            block_on(
                archive
                    .compare_and_swap_many_async("d", &[("k", None, Some(b"v"))])
                    .unwrap(),
            )
        });
        invalid_name(archive.get("..", "k"), "get of an invalid name while down");
        assert_eq!(
            archive.idle_connections(),
            0,
            "a broken connection stayed in the pool"
        );

        server.restart().unwrap();
        let acked_before = writers.acked();
        writers.wait_for("writes after the restart", Duration::from_secs(30), |w| {
            w.acked() >= acked_before + 40
        });
        // Now every call works, on the same archive.
        archive.set("d", "k", b"v").unwrap();
        assert_eq!(archive.get("d", "k").unwrap(), Some(b"v".to_vec()));
        assert!(
            archive
                .compare_and_swap("d", "k", Some(b"v"), Some(b"w"))
                .unwrap()
        );
        assert_eq!(
            block_on(archive.get_many_async("d", &["k"]).unwrap()).unwrap(),
            [Some(b"w".to_vec())]
        );
        assert!(archive.remove_domain("d").unwrap());
    }

    let failures = writers.failed.lock().unwrap().clone();
    let acked = writers.finish();
    let first = failures.first().cloned().unwrap_or_default();
    assert!(!failures.is_empty());
    eprintln!(
        "{} acknowledged; first of {} failures: {first}",
        acked.len(),
        failures.len()
    );
    for (thread, seq) in acked {
        assert_eq!(
            archive
                .get(&format!("w{thread}"), &format!("k{seq}"))
                .unwrap(),
            Some(crash_value(thread, seq)),
            "acknowledged write w{thread}/k{seq} is missing"
        );
    }
}

/// A connection of the test's own that holds row locks in an open transaction.
struct Holder {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Holder {
    fn connect(url: &str) -> Holder {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let client = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("connect the holder");
            tokio::spawn(connection);
            client
        });
        Holder { runtime, client }
    }

    fn run(&self, sql: &str) {
        // The connection task runs while this blocks on the runtime.
        self.runtime
            .block_on(self.client.batch_execute(sql))
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
    }

    /// Locks the row `domain`/`key` of `table` until [`release`](Self::release).
    fn lock_row(&self, table: &str, domain: &str, key: &str) {
        self.run(&format!(
            "BEGIN; SELECT 1 FROM \"{table}\" WHERE domain = '{domain}' AND key = '{key}' FOR UPDATE"
        ));
    }

    fn release(&self) {
        self.run("ROLLBACK");
    }
}

/// The pid of the backend whose statement holds `fragment` and waits for a lock, once there is
/// one (10 s at most).
fn waiting_backend(shared: &postgres_server::Shared, fragment: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pid = shared
            .psql(&format!(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND backend_xid IS NOT NULL AND query LIKE '%{fragment}%'"
            ))
            .expect("psql");
        if !pid.is_empty() {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no backend of {fragment} waits for the lock"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The entries of a batch that blocks on its last row: `d1/a` and `d2/z` exist (`old`), and
/// the batch changes them and adds `d1/b` and `d2/y`; another connection locks `d2/z`, so the
/// batch has written the rest when it waits.
const BLOCKED_ENTRIES: [(&str, &str); 4] = [("d1", "a"), ("d1", "b"), ("d2", "y"), ("d2", "z")];

/// What the table holds of [`BLOCKED_ENTRIES`].
fn blocked_entries(archive: &PostgresArchive) -> Vec<Option<Vec<u8>>> {
    archive.get_each(&BLOCKED_ENTRIES).expect("the call")
}

/// The batch's two calls, as `set_many` and as `compare_and_swap_each`.
fn write_blocked_batch(archive: &PostgresArchive, each: bool) -> session_archive::Result<()> {
    if each {
        let d1 = [
            ("a", Some(&b"old"[..]), Some(&b"new"[..])),
            ("b", None, Some(&b"new"[..])),
        ];
        let d2 = [
            ("y", None, Some(&b"new"[..])),
            ("z", Some(&b"old"[..]), Some(&b"new"[..])),
        ];
        let done = archive.compare_and_swap_each(&[("d1", &d1), ("d2", &d2)])?;
        assert_eq!(done, [true, true]);
        Ok(())
    } else {
        let entries: Vec<(&str, &str, &[u8])> = BLOCKED_ENTRIES
            .iter()
            .map(|(d, k)| (*d, *k, &b"new"[..]))
            .collect();
        archive.set_many(&entries)
    }
}

/// A batch blocked inside its transaction, after it wrote all but its last row, whose
/// connection is then ended by `pg_terminate_backend`: the call fails, none of the batch is
/// stored, and the archive works afterwards. For `set_many` and `compare_and_swap_each`.
#[test]
fn a_connection_killed_mid_transaction_leaves_no_half_batch() {
    let Some(shared) = or_skip(shared()) else {
        return;
    };
    for (each, function) in [(false, "_set_many"), (true, "_swap_each")] {
        let table = unique_table();
        let archive = Arc::new(
            PostgresArchive::builder(shared.url())
                .table(&table)
                .pool_size(2)
                .statement_timeout(Some(Duration::from_secs(30)))
                .connect()
                .unwrap(),
        );
        archive.set("d1", "a", b"old").unwrap();
        archive.set("d2", "z", b"old").unwrap();
        let before = vec![Some(b"old".to_vec()), None, None, Some(b"old".to_vec())];
        assert_eq!(blocked_entries(&archive), before);

        let holder = Holder::connect(shared.url());
        holder.lock_row(&table, "d2", "z");
        let writer = {
            let archive = Arc::clone(&archive);
            thread::spawn(move || {
                let started = Instant::now();
                (write_blocked_batch(&archive, each), started.elapsed())
            })
        };
        let pid = waiting_backend(shared, &format!("\"{table}{function}\"("));
        // The batch's other rows are written, uncommitted, by now: the backend waits on d2/z,
        // the last row of its one INSERT (or of its last swap).
        let terminated = shared
            .psql(&format!("SELECT pg_terminate_backend({pid})"))
            .unwrap();
        assert_eq!(terminated, "t");
        let (result, took) = writer.join().expect("the writer panicked");
        let err = result.expect_err("the batch's connection was ended");
        let text = backend_error(&err);
        assert!(took < Duration::from_secs(20), "{function} took {took:?}");
        holder.release();

        assert_eq!(
            blocked_entries(&archive),
            before,
            "{function}: half a batch: {text}"
        );
        assert_eq!(dump(|sql| shared.psql(sql), &table).len(), 2);
        // The archive works afterwards, the batch included.
        write_blocked_batch(&archive, each).unwrap();
        assert_eq!(blocked_entries(&archive), vec![Some(b"new".to_vec()); 4]);
    }
}

/// A write blocked by a lock held elsewhere fails with the statement timeout's error, soon
/// after it; nothing of it is written, and the archive works afterwards on its connection.
#[test]
fn a_blocked_write_fails_at_the_statement_timeout_and_writes_nothing() {
    let Some(shared) = or_skip(shared()) else {
        return;
    };
    let timeout = Duration::from_secs(1);
    let table = unique_table();
    let archive = PostgresArchive::builder(shared.url())
        .table(&table)
        .pool_size(1)
        .statement_timeout(Some(timeout))
        .connect()
        .unwrap();
    archive.set("d1", "a", b"old").unwrap();
    archive.set("d2", "z", b"old").unwrap();
    let before = blocked_entries(&archive);
    let holder = Holder::connect(shared.url());
    holder.lock_row(&table, "d2", "z");
    let timed = |what: &str, call: &dyn Fn() -> session_archive::Result<()>| {
        let started = Instant::now();
        let err = call().expect_err(what);
        let took = started.elapsed();
        let text = backend_error(&err);
        assert!(text.contains("statement timeout"), "{what}: {text}");
        assert!(
            took >= timeout / 2,
            "{what} failed before the timeout: {took:?}"
        );
        assert!(
            took < timeout + Duration::from_secs(5),
            "{what} took {took:?}"
        );
    };
    timed("set_many", &|| write_blocked_batch(&archive, false));
    timed("compare_and_swap_each", &|| {
        write_blocked_batch(&archive, true)
    });
    timed("set", &|| archive.set("d2", "z", b"new"));
    timed("compare_and_swap", &|| {
        archive
            .compare_and_swap("d2", "z", Some(b"old"), Some(b"new"))
            .map(drop)
    });
    // Two present keys, one of them the locked row: the plain statement skips it, and the swap
    // function waits for it.
    archive.set("d2", "x", b"old").unwrap();
    timed("compare_and_swap_many of two present keys", &|| {
        let swaps = [
            ("x", Some(&b"old"[..]), Some(&b"new"[..])),
            ("z", Some(&b"old"[..]), Some(&b"new"[..])),
        ];
        archive.compare_and_swap_many("d2", &swaps).map(drop)
    });
    assert_eq!(archive.get("d2", "x").unwrap(), Some(b"old".to_vec()));
    timed("remove_domain", &|| archive.remove_domain("d2").map(drop));
    // Reads take no row lock, so they answer meanwhile.
    assert_eq!(blocked_entries(&archive), before);
    holder.release();
    assert_eq!(blocked_entries(&archive), before);
    write_blocked_batch(&archive, false).unwrap();
    assert_eq!(blocked_entries(&archive), vec![Some(b"new".to_vec()); 4]);
}

/// The two-key compare-and-swap (both keys present and stored: a session's update) is a plain
/// statement that guards the rows with row locks: one whose values match waits for a row that
/// another transaction holds locked and swaps once it is released (it never answers that they
/// differ because it could not look); one whose values differ answers so and writes nothing.
#[test]
fn a_two_key_swap_waits_for_a_row_locked_elsewhere_then_swaps() {
    let Some((shared, table, archive)) = fresh() else {
        return;
    };
    let archive = Arc::new(archive);
    archive.set("d", "a", b"a0").unwrap();
    archive.set("d", "b", b"b0").unwrap();
    let values = |archive: &PostgresArchive| archive.get_many("d", &["a", "b"]).unwrap();
    let two = |from: [&'static [u8]; 2], to: [&'static [u8]; 2]| -> [Swap<'static>; 2] {
        [
            ("a", Some(from[0]), Some(to[0])),
            ("b", Some(from[1]), Some(to[1])),
        ]
    };
    assert!(
        archive
            .compare_and_swap_many("d", &two([b"a0", b"b0"], [b"a1", b"b1"]))
            .unwrap()
    );
    let differs = two([b"a1", b"b0"], [b"a9", b"b9"]);
    assert!(!archive.compare_and_swap_many("d", &differs).unwrap());
    let future = archive.compare_and_swap_many_async("d", &differs);
    assert!(!block_on(future.expect("PostgresArchive offers it")).unwrap());
    assert_eq!(
        values(&archive),
        [Some(b"a1".to_vec()), Some(b"b1".to_vec())]
    );

    let holder = Holder::connect(shared.url());
    holder.lock_row(&table, "d", "b");
    let (answer, answered) = std::sync::mpsc::channel();
    let writer = {
        let archive = Arc::clone(&archive);
        thread::spawn(move || {
            let swaps = two([b"a1", b"b1"], [b"a2", b"b2"]);
            answer
                .send(archive.compare_and_swap_many("d", &swaps))
                .expect("the test waits");
        })
    };
    // The two-key statement holds row a and waits for row b.
    waiting_backend(shared, &format!("\"{table}\" AS t WHERE"));
    assert!(answered.try_recv().is_err(), "answered while b was locked");
    holder.release();
    let swapped = answered
        .recv_timeout(Duration::from_secs(10))
        .expect("an answer once b was released");
    assert!(swapped.unwrap(), "the values matched");
    writer.join().expect("the writer panicked");
    assert_eq!(
        values(&archive),
        [Some(b"a2".to_vec()), Some(b"b2".to_vec())]
    );
}

/// `compare_and_swap_many` of keys `a` and `b` of domain `d`, each from the first value of its
/// pair to the second, on a thread of its own.
fn two_key_swap_in_thread(
    archive: &Arc<PostgresArchive>,
    [a, b]: [(&'static [u8], &'static [u8]); 2],
) -> thread::JoinHandle<session_archive::Result<bool>> {
    let archive = Arc::clone(archive);
    thread::spawn(move || {
        let swaps = [("a", Some(a.0), Some(a.1)), ("b", Some(b.0), Some(b.1))];
        archive.compare_and_swap_many("d", &swaps)
    })
}

/// A two-key swap that has written its first row when the second turns out changed (another
/// transaction held it, and committed a new value) stops before its commit, so that its first
/// write is undone, and the swap function answers: the values differ, and neither row holds
/// half of the swap.
#[test]
fn a_two_key_swap_that_meets_one_row_changed_writes_neither() {
    let Some((shared, table, archive)) = fresh() else {
        return;
    };
    let archive = Arc::new(archive);
    archive
        .set_many(&[("d", "a", b"a0"), ("d", "b", b"b0")])
        .unwrap();
    let holder = Holder::connect(shared.url());
    holder.run(&format!(
        "BEGIN; UPDATE \"{table}\" SET value = 'bX' WHERE domain = 'd' AND key = 'b'"
    ));
    let swap = two_key_swap_in_thread(&archive, [(b"a0", b"a1"), (b"b0", b"b1")]);
    // It has updated a and waits for b.
    waiting_backend(shared, "u2 AS (UPDATE");
    holder.run("COMMIT");
    let swapped = swap.join().expect("the swap panicked").unwrap();
    assert!(!swapped, "b was bX when the swap could look at it");
    assert_eq!(
        archive.get_many("d", &["a", "b"]).unwrap(),
        [Some(b"a0".to_vec()), Some(b"bX".to_vec())]
    );
}

/// Two-key swaps (a plain statement under the domain's lock held shared, and row locks) and the
/// swap function (under the domain's lock held exclusively) change the same rows at once, each
/// an increment that reads, then swaps, and tries again when the values moved: no increment is
/// lost, and no two writers wait for each other in a cycle (which the server would end with an
/// error).
#[test]
fn two_key_swaps_and_the_swap_function_lose_no_increment_between_them() {
    const INCREMENTS: u64 = 60;
    let Some(shared) = or_skip(shared()) else {
        return;
    };
    let archive = Arc::new(
        PostgresArchive::builder(shared.url())
            .table(&unique_table())
            .pool_size(8)
            .connect()
            .unwrap(),
    );
    archive.set("d", "a", b"0").unwrap();
    archive.set("d", "b", b"0").unwrap();
    let number = |value: &Option<Vec<u8>>| -> u64 {
        let value = value.as_deref().expect("a and b are never removed");
        std::str::from_utf8(value)
            .expect("a number")
            .parse()
            .expect("a number")
    };
    // 0: a and b (the two-key statement); 1: a and b with c absent (the function, three keys);
    // 2: a alone (the function, one key).
    let writers: Vec<_> = (0..6_usize)
        .map(|writer| {
            let archive = Arc::clone(&archive);
            thread::spawn(move || {
                for _ in 0..INCREMENTS {
                    loop {
                        let now = archive.get_many("d", &["a", "b"]).unwrap();
                        let (a, b) = (now[0].clone(), now[1].clone());
                        let next_a = (number(&a) + 1).to_string();
                        let next_b = (number(&b) + 1).to_string();
                        let mut swaps: Vec<Swap<'_>> =
                            vec![("a", a.as_deref(), Some(next_a.as_bytes()))];
                        if writer % 3 != 2 {
                            swaps.push(("b", b.as_deref(), Some(next_b.as_bytes())));
                        }
                        if writer % 3 == 1 {
                            swaps.push(("c", None, None));
                        }
                        if archive.compare_and_swap_many("d", &swaps).unwrap() {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("a writer panicked");
    }
    let now = archive.get_many("d", &["a", "b"]).unwrap();
    assert_eq!(
        (number(&now[0]), number(&now[1])),
        (6 * INCREMENTS, 4 * INCREMENTS),
        "increments of a and b were lost"
    );
}

/// A table may be named as any name inside the archive's statements and functions (their
/// parameters, variables, common table expressions and aliases): every call works on it, in a
/// schema of its own.
#[test]
fn tables_named_as_the_statements_own_names_work() {
    use session_archive::conformance as suite;
    let Some(shared) = or_skip(shared()) else {
        return;
    };
    let schema = format!("n_{}", &unique_table()[2..]);
    shared.psql(&format!("CREATE SCHEMA \"{schema}\"")).unwrap();
    let names = [
        "both", "c", "cur", "d", "domain", "done", "ds", "e", "ends", "es", "from_", "g", "i", "k",
        "key", "ks", "l", "m", "n", "ns", "ok", "one", "q", "r", "s", "t", "two", "u", "u1", "u2",
        "v", "value", "vs", "w",
    ];
    let behaviours: [fn(&dyn Archive); 8] = [
        suite::remove_present_and_absent,
        suite::remove_domain_present_and_absent,
        suite::compare_and_swap_semantics,
        suite::compare_and_swap_many_is_all_or_nothing,
        suite::compare_and_swap_many_creates_and_removes,
        suite::compare_and_swap_each_swaps_each_group_on_its_own,
        suite::set_many_stores_every_entry,
        suite::remove_many_removes_each_entry_once,
    ];
    for name in names {
        let archive = PostgresArchive::builder(shared.url())
            .table(&format!("{schema}.{name}"))
            .pool_size(1)
            .connect()
            .unwrap_or_else(|err| panic!("table {name}: {err}"));
        for behaviour in behaviours {
            behaviour(&archive);
        }
        suite::remove_domains_removes_each_domain_once(&archive);
        suite::get_each_reads_every_entry_in_order(&archive);
        suite::list_keys_pages_through_one_domain(&archive);
    }
    shared
        .psql(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .unwrap();
}

/// The two-key swap's snapshot is taken before it has its domain's lock. When a batch that
/// holds the lock removes a key and creates it again with the same value, the swap, waiting,
/// finds the old row deleted and cannot see the new one: the key was never absent for anyone
/// else, so the swap must not answer that it differs. It asks the swap function, which reads
/// after the lock, and swaps.
#[test]
fn a_key_removed_and_created_again_meanwhile_does_not_fail_a_two_key_swap() {
    let Some((shared, table, archive)) = fresh() else {
        return;
    };
    let archive = Arc::new(archive);
    archive
        .set_many(&[("d", "a", b"A"), ("d", "b", b"B"), ("d2", "z", b"old")])
        .unwrap();
    // The batch removes a, creates it again, then waits for d2/z, holding d's lock.
    let holder = Holder::connect(shared.url());
    holder.lock_row(&table, "d2", "z");
    let batch = {
        let archive = Arc::clone(&archive);
        thread::spawn(move || {
            let remove = [("a", Some(&b"A"[..]), None)];
            let create = [("a", None, Some(&b"A"[..]))];
            let other = [("z", Some(&b"old"[..]), Some(&b"new"[..]))];
            archive.compare_and_swap_each(&[("d", &remove), ("d", &create), ("d2", &other)])
        })
    };
    waiting_backend(shared, &format!("\"{table}_swap_each\"("));
    let swap = two_key_swap_in_thread(&archive, [(b"A", b"A2"), (b"B", b"B2")]);
    // The swap has its snapshot and waits for d's lock.
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared
        .psql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory' \
             AND query LIKE '%\"{table}\" AS t WHERE%'"
        ))
        .unwrap()
        == "0"
    {
        assert!(Instant::now() < deadline, "the two-key swap never waited");
        thread::sleep(Duration::from_millis(20));
    }
    holder.release();
    let done = batch.join().expect("the batch panicked").unwrap();
    assert_eq!(done, [true, true, true]);
    assert!(
        swap.join().expect("the swap panicked").unwrap(),
        "a was A throughout, b was B"
    );
    assert_eq!(
        archive.get_many("d", &["a", "b"]).unwrap(),
        [Some(b"A2".to_vec()), Some(b"B2".to_vec())]
    );
}

/// PostgreSQL has no native expiry: `expire_domain` is a hint the archive declines, as on redb,
/// so the domain stays until removed, and a session that expired is removed by the sweep.
#[test]
fn expire_domain_is_declined_and_the_sweep_removes_expired_sessions() {
    use session_archive::ManualClock;
    use std::time::{SystemTime, UNIX_EPOCH};

    let Some((_, _, archive)) = fresh() else {
        return;
    };
    archive.set("d", "k", b"v").unwrap();
    let past = UNIX_EPOCH + Duration::from_secs(1);
    assert!(!archive.expire_domain("d", past).unwrap());
    assert!(archive.has_domain("d").unwrap());
    assert!(matches!(
        archive.expire_domain("..", past),
        Err(Error::InvalidName { .. })
    ));

    let archive = Arc::new(archive);
    let clock = ManualClock::new(SystemTime::now());
    let sessions = Sessions::builder(Arc::clone(&archive))
        .idle_timeout(Some(Duration::from_secs(60)))
        .clock(clock.clone())
        .build();
    let mut session = sessions.start(None, 1_u32).unwrap();
    session.save().unwrap();
    let id = session.id().clone();
    clock.advance(Duration::from_secs(120));
    assert!(!sessions.is_live(&id).unwrap());
    assert_eq!(sessions.sweep().unwrap(), 1);
    assert!(!archive.has_domain(id.as_str()).unwrap());
}

/// A batch over many domains, each with a large value, is one statement that stays well within
/// the default statement timeout: each group's keys are read by subscript, never by copying
/// slices of the whole call's arrays (which grew with the square of the call). Past 32 domains
/// a batch locks the table instead of each domain, so single writes running beside it wait for
/// it and none fails.
#[test]
fn large_batches_over_many_domains_finish_and_single_writes_beside_them_wait() {
    let Some((_, _, archive)) = fresh() else {
        return;
    };
    let value = vec![7_u8; 16 * 1024];
    let domains: Vec<String> = (0..1024).map(|i| format!("d{i:04}")).collect();
    let entries: Vec<(&str, &str, &[u8])> = domains
        .iter()
        .map(|d| (d.as_str(), "state", value.as_slice()))
        .collect();
    archive.set_many(&entries).unwrap();
    let new = vec![8_u8; 16 * 1024];
    let swaps: Vec<[Swap<'_>; 1]> = domains
        .iter()
        .map(|_| [("state", Some(value.as_slice()), Some(new.as_slice()))])
        .collect();
    let groups: Vec<SwapGroup<'_>> = domains
        .iter()
        .zip(&swaps)
        .map(|(d, s)| (d.as_str(), &s[..]))
        .collect();
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (archive, stop) = (&archive, &stop);
                scope.spawn(move || {
                    let mut n = 0_u32;
                    while !stop.load(Ordering::Relaxed) {
                        archive
                            .set(&format!("single{w}"), "k", &n.to_le_bytes())
                            .unwrap();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let swapped = archive.compare_and_swap_each(&groups).unwrap();
        assert!(swapped.iter().all(|&done| done), "every group swapped");
        assert_eq!(
            archive
                .remove_domains(&domains.iter().map(String::as_str).collect::<Vec<_>>())
                .unwrap(),
            1024
        );
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            assert!(writer.join().unwrap() > 0);
        }
    });
    assert!(!archive.has_domain("d0000").unwrap());
}

/// A table restored from a dump of the table alone (`pg_dump -t`) has its layout mark but none
/// of its functions: connecting makes it whole again, keeping its rows.
#[test]
fn a_table_without_its_functions_is_made_whole_on_connect() {
    let Some((shared, table, archive)) = fresh() else {
        return;
    };
    archive.set("d", "k", b"kept").unwrap();
    drop(archive);
    shared
        .psql(&format!(
            "DROP FUNCTION \"{table}_swap\"(text, text[], bytea[], bytea[]); \
             DROP FUNCTION \"{table}_set\"(text, text, bytea)"
        ))
        .unwrap();
    let again = PostgresArchive::builder(shared.url())
        .table(&table)
        .connect()
        .unwrap();
    assert_eq!(again.get("d", "k").unwrap(), Some(b"kept".to_vec()));
    again.set("d", "k2", b"new").unwrap();
    assert!(
        again
            .compare_and_swap("d", "k", Some(b"kept"), Some(b"swapped"))
            .unwrap()
    );
}

/// The advisory lock an archive takes to set up `public.<table>`: FNV-1a of the table's name as
/// its messages show it, `schema.name`, mixed with a constant (stable across releases, so that
/// releases serialize their setups against each other).
fn setup_lock_of_public(table: &str) -> i64 {
    let hash = format!("public.{table}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    i64::from_ne_bytes(hash.to_ne_bytes()) ^ 0x5e55_1047
}

/// A setup that saw the table missing, then waited for the setup lock while another process
/// (a newer release) created the table under it, checks again under the lock: it refuses the
/// newer layout instead of overwriting it with its own.
#[test]
fn a_setup_waiting_for_the_lock_refuses_what_another_made_meanwhile() {
    let Some(shared) = or_skip(shared()) else {
        return;
    };
    let table = unique_table();
    let lock = setup_lock_of_public(&table);
    let creator = {
        let table = table.clone();
        thread::spawn(move || {
            shared.psql(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({lock}); SELECT pg_sleep(2); \
                 CREATE TABLE public.\"{table}\" (domain text, key text, value bytea, extra int4); \
                 COMMENT ON TABLE public.\"{table}\" IS 'session-archive layout 2'; COMMIT"
            ))
        })
    };
    // Until the creator holds the lock, the setup could take it first.
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared
        .psql(&format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND ((classid::int8 << 32) | objid::int8) = {lock}"
        ))
        .unwrap()
        != "1"
    {
        assert!(Instant::now() < deadline, "the creator never took the lock");
        thread::sleep(Duration::from_millis(20));
    }
    let err = PostgresArchive::builder(shared.url())
        .table(&format!("public.{table}"))
        .connect()
        .expect_err("a table of a newer layout, made while the setup waited");
    creator.join().unwrap().unwrap();
    let text = backend_error(&err);
    assert!(
        text.contains("layout 2") && text.contains("newer"),
        "{text}"
    );
    assert_eq!(table_comment(shared, &table), "session-archive layout 2");
    assert_eq!(
        functions_named_after(shared, &table),
        "0",
        "no function of layout 1 beside it"
    );
    shared
        .psql(&format!("DROP TABLE public.\"{table}\""))
        .unwrap();
}

/// A function of the same name but other parameter types, added by anyone who may create
/// functions in the table's schema, is never called instead of the archive's own: every call
/// names its parameters' types.
#[test]
fn an_overload_of_a_write_function_is_never_called() {
    let Some((shared, table, archive)) = fresh() else {
        return;
    };
    drop(archive);
    for (suffix, signature) in [
        ("_set", "d text, k text, v text"),
        ("_remove", "d text, k bytea"),
        ("_remove_domain", "d bytea"),
        ("_swap", "d bytea, ks text[], es bytea[], ns bytea[]"),
    ] {
        shared
            .psql(&format!(
                "CREATE FUNCTION public.\"{table}{suffix}\"({signature}) RETURNS boolean \
                 LANGUAGE sql AS 'SELECT false'"
            ))
            .unwrap();
    }
    let archive = PostgresArchive::builder(shared.url())
        .table(&table)
        .connect()
        .unwrap();
    archive.set("d", "k", b"v").unwrap();
    assert_eq!(archive.get("d", "k").unwrap(), Some(b"v".to_vec()));
    assert!(
        archive
            .compare_and_swap("d", "k", Some(b"v"), Some(b"w"))
            .unwrap()
    );
    assert!(archive.remove("d", "k").unwrap());
    archive.set("e", "k", b"v").unwrap();
    assert!(archive.remove_domain("e").unwrap());
    assert!(!archive.has_domain("e").unwrap());
}

/// Settings at the ends of their ranges are no panic: the largest pool size, the longest
/// statement timeout. And the URL's `connect_timeout` is honoured unless the builder sets one.
#[test]
fn extreme_settings_work_and_the_urls_connect_timeout_is_honoured() {
    let Some(shared) = or_skip(shared()) else {
        return;
    };
    let archive = PostgresArchive::builder(shared.url())
        .table(&unique_table())
        .pool_size(usize::MAX)
        .statement_timeout(Some(Duration::MAX))
        .connect()
        .unwrap();
    archive.set("d", "k", b"v").unwrap();
    assert_eq!(archive.get("d", "k").unwrap(), Some(b"v".to_vec()));

    // A listener that never answers: the login waits until the connect timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "postgres://nobody@{}/db?connect_timeout=1",
        silent.local_addr().unwrap()
    );
    let started = Instant::now();
    let err = PostgresArchive::connect(&url).expect_err("no server answers");
    let took = started.elapsed();
    backend_error(&err);
    assert!(took < Duration::from_secs(4), "the URL's 1 s took {took:?}");
    let started = Instant::now();
    let err = PostgresArchive::builder(&url)
        .connect_timeout(Duration::from_millis(200))
        .connect()
        .expect_err("no server answers");
    backend_error(&err);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "the builder's wins"
    );
}
