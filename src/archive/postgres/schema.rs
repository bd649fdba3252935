//! The table of a [`PostgresArchive`](super::PostgresArchive), the functions that write it, and
//! the statements each connection prepares.
//!
//! Every write but one (below) runs in a PL/pgSQL function of the table's own, as one
//! statement, so that it is one transaction and one round trip. Each function first takes a
//! transaction-scoped advisory lock on every domain it writes (in ascending order of the locks'
//! numbers, so that two batches never wait for each other in a cycle), then reads and writes.
//! Under `READ COMMITTED`, which every connection sets, each statement after the lock reads
//! from a new snapshot, and a lock is released only after its transaction's commit is visible:
//! so the writes of one domain are serial, and each sees every write before it. That is what
//! makes a compare-and-swap of a key that is absent (which no row lock can guard) as exact as
//! one of a key that is present.
//!
//! One write runs outside the functions, as a plain statement ([`Stmt::SwapTwo`]): the
//! compare-and-swap of two keys that are both present and both stay, which is a session's
//! update of its state and record, the one write of a web request. It holds the domain's lock
//! *shared*, which keeps every function of the domain out while it runs but lets such swaps of
//! one domain run together, and guards the two rows, which exist, with the row locks of its
//! `UPDATE`s: it compares both rows in its snapshot, then updates one and then the other (in
//! key order, so two of them never wait for each other in a cycle), each only if its latest
//! value, under the row's lock, still matches, and it never commits one without the other.
//! Every lock is taken in one order, the table's, the domain's, then rows, so no cycle of
//! waits can form. A row that changed after its snapshot (its snapshot is taken before it has
//! the domain's lock) is left to `_swap`, which reads after the lock. It does not lock the rows
//! ahead of its `UPDATE`s (`FOR UPDATE`): such a lock is a record of its own in the write-ahead
//! log, and the log's flush is what a request waits for.
//!
//! Names and values only ever reach the server as bound parameters. The only text spliced into
//! SQL is the table's own name, which [`Table::parse`] allows only as plain identifiers and
//! quotes, and the lock seed, a number.

use std::fmt::Write as _;

use crate::error::{Error, Result};

/// An error of the archive's settings or of what it found on the server, said in `reason`.
pub(super) fn refused(operation: &'static str, reason: String) -> Error {
    Error::Backend {
        backend: "postgres",
        operation,
        source: reason.into(),
    }
}

/// The most domains a batch locks one by one; a batch of more locks the whole table.
const MOST_LOCKS: usize = 32;

/// The layout this release writes, recorded in the table's comment. A later release that
/// changes the layout migrates a table marked with an older number, and this one refuses a
/// table marked with a newer one instead of writing what it does not understand.
pub(super) const LAYOUT: u32 = 1;

/// What a table's comment starts with; the layout number follows.
const MARK: &str = "session-archive layout ";

/// The longest part of a table name: PostgreSQL keeps 63 bytes of an identifier, and the
/// functions' names add at most 15 to the table's.
const MAX_PART: usize = 48;

/// A table name that passed [`Table::parse`], with the schema it is in (or none, for the search
/// path's first schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Table {
    schema: Option<String>,
    name: String,
}

impl Table {
    /// `name` or `schema.name`, each part 1 to 48 ASCII letters, digits and underscores, not
    /// starting with a digit. Quoted in SQL, so case is kept: `Sessions` is not `sessions`.
    pub(super) fn parse(spec: &str) -> Result<Table> {
        let (schema, name) = match spec.split_once('.') {
            Some((schema, name)) => (Some(schema), name),
            None => (None, spec),
        };
        let part_ok = |part: &str| {
            !part.is_empty()
                && part.len() <= MAX_PART
                && !part.starts_with(|c: char| c.is_ascii_digit())
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if !schema.is_none_or(part_ok) || !part_ok(name) {
            return Err(refused(
                "use the table name",
                format!(
                    "{spec:?} is not a table name: expected `name` or `schema.name`, each 1 to \
                     {MAX_PART} ASCII letters, digits or underscores, not starting with a digit"
                ),
            ));
        }
        Ok(Table {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        })
    }

    /// The quoted name of the table (`suffix` empty) or of one of its functions. A schema the
    /// server named (see [`Table::in_schema`]) may hold any character: a `"` is doubled.
    pub(super) fn ident(&self, suffix: &str) -> String {
        match &self.schema {
            Some(schema) => format!(
                "\"{}\".\"{}{suffix}\"",
                schema.replace('"', "\"\""),
                self.name
            ),
            None => format!("\"{}{suffix}\"", self.name),
        }
    }

    /// Whether the name says its schema.
    pub(super) fn has_schema(&self) -> bool {
        self.schema.is_some()
    }

    /// The same table in `schema`: the schema the server resolved an unqualified name to, so
    /// that every statement and function names the same table whatever a connection's
    /// `search_path`, and the functions can pin theirs.
    pub(super) fn in_schema(&self, schema: String) -> Table {
        Table {
            schema: Some(schema),
            name: self.name.clone(),
        }
    }

    /// The name as the user wrote it, for messages and `Debug`.
    pub(super) fn display(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{schema}.{}", self.name),
            None => self.name.clone(),
        }
    }

    /// The number the domains' advisory locks are computed from, so that two tables never share
    /// one domain's lock (they may share one by chance, which only makes writers wait). FNV-1a
    /// of the name, stable across releases and machines.
    fn seed(&self) -> i64 {
        let hash = self
            .display()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            });
        i64::from_ne_bytes(hash.to_ne_bytes())
    }

    /// The lock every write holds: shared, or exclusively by a batch of many domains.
    fn write_lock(&self) -> i64 {
        self.setup_lock() ^ 0x7ab1e
    }

    /// The lock that serializes the setup of this table across every process that connects.
    pub(super) fn setup_lock(&self) -> i64 {
        self.seed() ^ 0x5e55_1047
    }
}

/// The statements every connection prepares once, so that each call is one round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stmt {
    Get,
    Has,
    HasDomain,
    GetMany,
    GetEach,
    ListDomains,
    ListKeys,
    Set,
    Remove,
    RemoveDomain,
    Swap,
    SwapTwo,
    SwapEach,
    SetMany,
    RemoveMany,
    RemoveDomains,
}

impl Stmt {
    /// Every statement, in the order of [`Stmt::index`].
    pub(super) const ALL: [Stmt; 16] = [
        Stmt::Get,
        Stmt::Has,
        Stmt::HasDomain,
        Stmt::GetMany,
        Stmt::GetEach,
        Stmt::ListDomains,
        Stmt::ListKeys,
        Stmt::Set,
        Stmt::Remove,
        Stmt::RemoveDomain,
        Stmt::Swap,
        Stmt::SwapTwo,
        Stmt::SwapEach,
        Stmt::SetMany,
        Stmt::RemoveMany,
        Stmt::RemoveDomains,
    ];

    /// Where this statement is in [`Stmt::ALL`], and in each connection's prepared list.
    pub(super) fn index(self) -> usize {
        self as usize
    }

    /// Whether the statement only reads, so that it may be sent again on another connection
    /// after its connection broke.
    pub(super) fn reads(self) -> bool {
        self.index() < Stmt::Set.index()
    }

    /// The statement's SQL for `table`.
    pub(super) fn sql(self, table: &Table) -> String {
        let t = table.ident("");
        let call = |suffix: &str, args: &str| format!("SELECT {}({args})", table.ident(suffix));
        match self {
            Stmt::Get => format!("SELECT value FROM {t} WHERE domain = $1 AND key = $2"),
            Stmt::Has => {
                format!("SELECT EXISTS (SELECT 1 FROM {t} WHERE domain = $1 AND key = $2)")
            }
            Stmt::HasDomain => format!("SELECT EXISTS (SELECT 1 FROM {t} WHERE domain = $1)"),
            Stmt::GetMany => {
                format!("SELECT key, value FROM {t} WHERE domain = $1 AND key = ANY ($2::text[])")
            }
            // A lookup on the primary key for each entry, whatever plan the statement has.
            Stmt::GetEach => format!(
                "SELECT (SELECT t.value FROM {t} AS t WHERE t.domain = q.d AND t.key = q.k) \
                 FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS q (d, k, n) \
                 ORDER BY q.n"
            ),
            Stmt::ListDomains => format!(
                "SELECT domain FROM {t} WHERE domain > $1 GROUP BY domain ORDER BY domain \
                 LIMIT $2"
            ),
            Stmt::ListKeys => {
                format!("SELECT key FROM {t} WHERE domain = $1 AND key > $2 ORDER BY key LIMIT $3")
            }
            Stmt::Set => call("_set", "$1::text, $2::text, $3::bytea"),
            Stmt::Remove => call("_remove", "$1::text, $2::text"),
            Stmt::RemoveDomain => call("_remove_domain", "$1::text"),
            Stmt::Swap => call("_swap", "$1::text, $2::text[], $3::bytea[], $4::bytea[]"),
            Stmt::SwapTwo => swap_two(table),
            Stmt::SwapEach => call(
                "_swap_each",
                "$1::text[], $2::int4[], $3::text[], $4::bytea[], $5::bytea[]",
            ),
            Stmt::SetMany => call("_set_many", "$1::text[], $2::text[], $3::bytea[]"),
            Stmt::RemoveMany => call("_remove_many", "$1::text[], $2::text[]"),
            Stmt::RemoveDomains => call("_remove_domains", "$1::text[]"),
        }
    }
}

/// The comment that marks a table as this release's layout.
pub(super) fn mark() -> String {
    format!("{MARK}{LAYOUT}")
}

/// The layout a table's comment records: `Ok(None)` for a table with no comment, an error for
/// one whose comment is not a mark.
pub(super) fn layout_of(table: &Table, comment: Option<&str>) -> Result<Option<u32>> {
    let Some(comment) = comment else {
        return Ok(None);
    };
    comment
        .strip_prefix(MARK)
        .and_then(|number| number.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            refused(
                "use the table",
                format!(
                    "table {} exists and is not a session-archive table (its comment is \
                     {comment:?})",
                    table.display()
                ),
            )
        })
}

/// The statements that create the table and its functions, in order; run in one transaction,
/// under [`Table::setup_lock`], when the table is missing or has an older layout. They first
/// check the table once more, under the lock: the check before it may have seen the table
/// missing while another process, holding the lock, was creating it (a newer release, say),
/// and what that process made must be refused, not overwritten.
pub(super) fn setup(table: &Table) -> String {
    let t = table.ident("");
    let seed = table.seed();
    let literal = t.replace('\'', "''");
    let display = table.display().replace('\'', "''").replace('%', "%%");
    let guard = format!(
        "DO $guard$ DECLARE c text; BEGIN\n\
         IF to_regclass('{literal}') IS NOT NULL THEN\n\
         c := obj_description(to_regclass('{literal}'), 'pg_class');\n\
         IF c IS NULL OR c !~ '^{MARK}[0-9]{{1,9}}$' THEN\n\
         RAISE EXCEPTION 'table {display} exists and is not a session-archive table (it has no \
         layout comment)';\n\
         ELSIF substring(c FROM '[0-9]+$')::int4 > {LAYOUT} THEN\n\
         RAISE EXCEPTION 'table {display} has layout %, made by a newer session-archive; this \
         release knows layouts up to {LAYOUT}', substring(c FROM '[0-9]+$');\n\
         END IF;\nEND IF;\nEND $guard$;\n"
    );
    // Every write holds the table's lock shared and its domain's lock; a batch of more than
    // `MOST_LOCKS` domains holds the table's lock alone, exclusively, so that no transaction
    // takes more locks than PostgreSQL's default `max_locks_per_transaction` allows for.
    let isolation = "IF current_setting('transaction_isolation') <> 'read committed' THEN \
         RAISE EXCEPTION 'session-archive needs READ COMMITTED transactions, not %', \
         current_setting('transaction_isolation'); END IF;";
    let table_lock = table.write_lock();
    let lock_one = format!(
        "{isolation}\nPERFORM pg_advisory_xact_lock_shared({table_lock});\n\
         PERFORM pg_advisory_xact_lock(hashtextextended(d, {seed}));"
    );
    let lock_all = format!(
        "{isolation}\nIF (SELECT count(DISTINCT x) FROM unnest(ds) AS x) > {MOST_LOCKS} THEN\n\
         PERFORM pg_advisory_xact_lock({table_lock});\nELSE\n\
         PERFORM pg_advisory_xact_lock_shared({table_lock});\n\
         PERFORM pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(x, {seed}) \
         AS h FROM unnest(ds) AS x ORDER BY 1) AS locks;\nEND IF;"
    );
    let mut sql = format!(
        "{guard}CREATE TABLE IF NOT EXISTS {t} (\n\
         domain text COLLATE \"C\" NOT NULL,\n\
         key text COLLATE \"C\" NOT NULL,\n\
         value bytea NOT NULL,\n\
         PRIMARY KEY (domain, key));\n"
    );
    for (suffix, signature, returns, body) in functions(table, &lock_one, &lock_all) {
        let name = table.ident(suffix);
        let _ = write!(
            sql,
            "CREATE OR REPLACE FUNCTION {name}({signature}) RETURNS {returns} \
             LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp \
             AS $body$\n{body}\n$body$;\n"
        );
    }
    let _ = write!(sql, "COMMENT ON TABLE {t} IS '{}';", mark());
    sql
}

/// Each write function as `regprocedure` reads it (`"schema"."name"(text, bytea)`), to check
/// that they are all there: a table restored from a dump of the table alone has its layout
/// mark without them.
pub(super) fn procedures(table: &Table) -> Vec<String> {
    functions(table, "", "")
        .iter()
        .map(|(suffix, signature, _, _)| {
            let types: Vec<&str> = signature
                .split(", ")
                .filter_map(|param| param.split_once(' ').map(|(_, kind)| kind))
                .collect();
            format!("{}({})", table.ident(suffix), types.join(", "))
        })
        .collect()
}

/// A write function: its name's suffix, parameters, result and body.
type Function = (&'static str, &'static str, &'static str, String);

/// Each write function.
fn functions(table: &Table, lock_one: &str, lock_all: &str) -> Vec<Function> {
    let t = &table.ident("");
    let mut all = vec![
        (
            "_set",
            "d text, k text, v bytea",
            "void",
            format!(
                "BEGIN {lock_one}\nINSERT INTO {t} AS t (domain, key, value) VALUES (d, k, v) \
                 ON CONFLICT (domain, key) DO UPDATE SET value = EXCLUDED.value;\nEND"
            ),
        ),
        (
            "_remove",
            "d text, k text",
            "boolean",
            format!(
                "BEGIN {lock_one}\nDELETE FROM {t} AS t WHERE t.domain = d AND t.key = k;\n\
                 RETURN FOUND;\nEND"
            ),
        ),
        (
            "_remove_domain",
            "d text",
            "boolean",
            format!(
                "BEGIN {lock_one}\nDELETE FROM {t} AS t WHERE t.domain = d;\nRETURN FOUND;\nEND"
            ),
        ),
        (
            "_swap",
            "d text, ks text[], es bytea[], ns bytea[]",
            "boolean",
            swap_body(t, lock_one),
        ),
    ];
    all.extend(batches(table, lock_all));
    all
}

/// The functions of the batches, which lock every domain they write.
fn batches(table: &Table, lock_all: &str) -> [Function; 4] {
    let t = &table.ident("");
    [
        (
            "_swap_each",
            "ds text[], ends int4[], ks text[], es bytea[], ns bytea[]",
            "boolean[]",
            swap_each_body(t, lock_all),
        ),
        (
            "_set_many",
            "ds text[], ks text[], vs bytea[]",
            "void",
            format!(
                "BEGIN {lock_all}\nINSERT INTO {t} AS t (domain, key, value) \
                 SELECT * FROM unnest(ds, ks, vs) \
                 ON CONFLICT (domain, key) DO UPDATE SET value = EXCLUDED.value;\nEND"
            ),
        ),
        (
            "_remove_many",
            "ds text[], ks text[]",
            "bigint",
            format!(
                "DECLARE n bigint := 0;\ni int4;\nBEGIN {lock_all}\n\
                 FOR i IN 1 .. coalesce(array_length(ds, 1), 0) LOOP\n\
                 DELETE FROM {t} AS t WHERE t.domain = ds[i] AND t.key = ks[i];\n\
                 IF FOUND THEN n := n + 1; END IF;\nEND LOOP;\nRETURN n;\nEND"
            ),
        ),
        (
            "_remove_domains",
            "ds text[]",
            "bigint",
            format!(
                "DECLARE n bigint := 0;\ni int4;\nBEGIN {lock_all}\n\
                 FOR i IN 1 .. coalesce(array_length(ds, 1), 0) LOOP\n\
                 DELETE FROM {t} AS t WHERE t.domain = ds[i];\n\
                 IF FOUND THEN n := n + 1; END IF;\nEND LOOP;\nRETURN n;\nEND"
            ),
        ),
    ]
}

/// Compare every key with what is expected (absent is NULL on both sides), then write: delete
/// the keys whose new value is absent, store the others, and leave alone those whose new value
/// is the expected one.
fn swap_body(t: &str, lock_one: &str) -> String {
    let keys = swap_keys(t, "d", "1", "coalesce(array_length(ks, 1), 0)");
    format!(
        "DECLARE i int4;\nok boolean;\ncur bytea;\n\
         BEGIN {lock_one}\n{keys}\nRETURN ok;\nEND"
    )
}

/// The PL/pgSQL that compares the keys `ks[from .. to]` of `domain` with `es[from .. to]`,
/// setting `ok`, and when every one matches, writes `ns[from .. to]` (a NULL removes the key;
/// a value equal to the expected one is left alone).
///
/// Key by key, by subscript, each a lookup on the primary key: a join with the unnested arrays
/// gets a plan made once per connection, which on a table still small when the plan was made
/// is a scan of the whole table; and a slice of the arrays would copy them.
fn swap_keys(t: &str, domain: &str, from: &str, to: &str) -> String {
    format!(
        "ok := true;\n\
         FOR i IN {from} .. {to} LOOP\n\
         SELECT t.value INTO cur FROM {t} AS t WHERE t.domain = {domain} AND t.key = ks[i];\n\
         IF cur IS DISTINCT FROM es[i] THEN ok := false; EXIT; END IF;\n\
         END LOOP;\n\
         IF ok THEN\n\
         FOR i IN {from} .. {to} LOOP\n\
         IF ns[i] IS NOT DISTINCT FROM es[i] THEN CONTINUE; END IF;\n\
         IF ns[i] IS NULL THEN\n\
         DELETE FROM {t} AS t WHERE t.domain = {domain} AND t.key = ks[i];\n\
         ELSE\n\
         INSERT INTO {t} AS t (domain, key, value) VALUES ({domain}, ks[i], ns[i]) \
         ON CONFLICT (domain, key) DO UPDATE SET value = EXCLUDED.value;\n\
         END IF;\nEND LOOP;\nEND IF;"
    )
}

/// The compare-and-swap of two keys, `$2` and `$4` of domain `$1` (`$2` the lesser), each
/// expected present with the value `$3` and `$5` and stored with `$6` and `$7` (see the
/// [module](self) for its locks). It compares both rows in its snapshot (`s`), and only when
/// both match there does it update them: first `$2` (`u1`), then, once that is done, `$4`
/// (`u2`), each only if its latest value still matches (the condition that `UPDATE` checks
/// again under the row's lock). Its row says whether it swapped, and whether that answer is
/// final: a difference in the snapshot is; a row that changed or went since is not, and
/// `_swap` decides. When it updated `$2` but not `$4`, it stops with the error [`TORN`]
/// before its commit, so that its write is undone (see [`is_torn`]). Every row is read and
/// written by the whole primary key, and the rows are locked in key order, whatever plan the
/// statement has.
fn swap_two(table: &Table) -> String {
    let t = table.ident("");
    // A condition without columns runs once, before the scan.
    let locks = format!(
        "(SELECT pg_advisory_xact_lock_shared({})::text || \
         pg_advisory_xact_lock_shared(hashtextextended($1::text, {}))::text) = ''",
        table.write_lock(),
        table.seed()
    );
    let row = |key: &str| format!("t.domain = $1::text AND t.key = {key}::text");
    let (first, second) = (row("$2"), row("$4"));
    // `u1` and `u2` test what they wait for as one-time conditions (uncorrelated subqueries,
    // run before their scans), so that the locks in `s` are held before `u1` reads a row and
    // `u1` is done before `u2` reads one; each updates at most one row (the whole primary key),
    // so `EXISTS` says whether it updated.
    format!(
        "WITH s AS (SELECT coalesce((SELECT t.value = $3::bytea FROM {t} AS t \
         WHERE {first} AND {locks}), false) AND coalesce((SELECT t.value = $5::bytea \
         FROM {t} AS t WHERE {second}), false) AS both), \
         u1 AS (UPDATE {t} AS t SET value = $6::bytea \
         WHERE (SELECT s.both FROM s) AND {first} AND t.value = $3::bytea RETURNING 1), \
         u2 AS (UPDATE {t} AS t SET value = $7::bytea \
         WHERE EXISTS (SELECT FROM u1) AND {second} AND t.value = $5::bytea RETURNING 1), \
         n AS (SELECT EXISTS (SELECT FROM u1) AS one, EXISTS (SELECT FROM u2) AS two) \
         SELECT n.two, n.two OR NOT s.both FROM s, n \
         WHERE (CASE WHEN n.one AND NOT n.two THEN '{TORN}' ELSE '0' END)::int4 = 0"
    )
}

/// The message of the error that ends a two-key swap that changed one row of two (an integer
/// that does not parse: plain SQL cannot raise an error of its own). It is said in a literal
/// of the statement, so it holds no quote.
pub(super) const TORN: &str =
    "session-archive: a row of this two-key swap changed meanwhile, and _swap decides";

/// Whether `err` is the two-key swap's [`TORN`]: the statement wrote nothing, and `_swap`
/// decides.
pub(super) fn is_torn(err: &(dyn std::error::Error + 'static)) -> bool {
    err.downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::as_db_error)
        .is_some_and(|db| {
            *db.code() == tokio_postgres::error::SqlState::INVALID_TEXT_REPRESENTATION
                && db.message().contains(TORN)
        })
}

/// Every group's domain locked first (or the table, for many), then each group compared and
/// written in turn as `_swap` does, each seeing the groups before it: group `g` is the swaps
/// from `ends[g - 1]` (0 for the first) up to, not including, `ends[g]`.
fn swap_each_body(t: &str, lock_all: &str) -> String {
    let keys = swap_keys(t, "ds[g]", "from_ + 1", "ends[g]");
    format!(
        "DECLARE done boolean[] := '{{}}';\nfrom_ int4 := 0;\ng int4;\ni int4;\n\
         ok boolean;\ncur bytea;\n\
         BEGIN {lock_all}\n\
         FOR g IN 1 .. coalesce(array_length(ds, 1), 0) LOOP\n\
         {keys}\n\
         done := done || ok;\n\
         from_ := ends[g];\nEND LOOP;\nRETURN done;\nEND"
    )
}
