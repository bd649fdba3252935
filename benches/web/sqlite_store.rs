//! The durable peer of the web benchmark: a tower-sessions 0.15 `SessionStore` on SQLite (WAL,
//! `synchronous=FULL`), written the way the published SQL stores work (one row per session:
//! id, serialized record, expiry), since those still target tower-sessions 0.14.
//!
//! Writes go through one connection, as SQLite serializes writers anyway; reads use a small
//! pool of connections of their own, which WAL lets run beside the writer. Every call runs on
//! tokio's blocking pool, as sqlx runs SQLite calls on a worker thread.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

const READERS: usize = 4;

#[derive(Clone, Debug)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

fn backend(err: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(err.to_string())
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=60000;",
    )?;
    Ok(connection)
}

impl SqliteStore {
    /// Opens (creating) the database at `path`.
    pub fn open(path: &Path) -> rusqlite::Result<SqliteStore> {
        let writer = connect(path)?;
        writer.execute_batch(
            "CREATE TABLE IF NOT EXISTS sessions (
                 id TEXT PRIMARY KEY NOT NULL,
                 data BLOB NOT NULL,
                 expiry_date INTEGER NOT NULL
             );",
        )?;
        let readers = (0..READERS)
            .map(|_| connect(path).map(Mutex::new))
            .collect::<rusqlite::Result<_>>()?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
            }),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Inner) -> session_store::Result<T> + Send + 'static,
    ) -> session_store::Result<T> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || call(&inner))
            .await
            .map_err(backend)?
    }
}

fn encode(record: &Record) -> session_store::Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|err| session_store::Error::Encode(err.to_string()))
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let mut draft = record.clone();
        let created = self
            .blocking(move |inner| {
                let writer = inner.writer.lock();
                // A taken id draws another, as the published stores do.
                loop {
                    let inserted = writer
                        .execute(
                            "INSERT OR IGNORE INTO sessions (id, data, expiry_date) VALUES (?1, ?2, ?3)",
                            params![
                                draft.id.to_string(),
                                encode(&draft)?,
                                draft.expiry_date.unix_timestamp()
                            ],
                        )
                        .map_err(backend)?;
                    if inserted == 1 {
                        return Ok(draft);
                    }
                    draft.id = Id::default();
                }
            })
            .await?;
        *record = created;
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let record = record.clone();
        self.blocking(move |inner| {
            inner
                .writer
                .lock()
                .execute(
                    "INSERT INTO sessions (id, data, expiry_date) VALUES (?1, ?2, ?3)
                     ON CONFLICT(id) DO UPDATE SET data = excluded.data,
                                                   expiry_date = excluded.expiry_date",
                    params![
                        record.id.to_string(),
                        encode(&record)?,
                        record.expiry_date.unix_timestamp()
                    ],
                )
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let id = id.to_string();
        self.blocking(move |inner| {
            let index = inner.next_reader.fetch_add(1, Ordering::Relaxed) % inner.readers.len();
            let reader = inner.readers[index].lock();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| {
                    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
                });
            let data: Option<Vec<u8>> = reader
                .query_row(
                    "SELECT data FROM sessions WHERE id = ?1 AND expiry_date > ?2",
                    params![id, now],
                    |row| row.get(0),
                )
                .optional()
                .map_err(backend)?;
            data.map(|bytes| {
                serde_json::from_slice(&bytes)
                    .map_err(|err| session_store::Error::Decode(err.to_string()))
            })
            .transpose()
        })
        .await
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        let id = id.to_string();
        self.blocking(move |inner| {
            inner
                .writer
                .lock()
                .execute("DELETE FROM sessions WHERE id = ?1", params![id])
                .map_err(backend)?;
            Ok(())
        })
        .await
    }
}
