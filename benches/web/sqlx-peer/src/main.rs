//! The web benchmark's PostgreSQL peer: `GET /` of the welcome app written the tower-sessions
//! way (get, change, insert; saved by the layer) on tower-sessions 0.14 with
//! `tower-sessions-sqlx-store` 0.15's `PostgresStore`, on a sqlx pool.
//!
//! ```sh
//! session-archive-sqlx-peer URL POOL TABLE MAX_SECS
//! ```
//!
//! Connects a pool of at most POOL connections to URL, creates the store's table
//! `tower_sessions.TABLE`, serves on a free loopback port on tokio's default runtime (one worker
//! per core, as the benchmark's in-process servers), prints `listening ADDR` on stdout, and stops
//! when its stdin closes (the benchmark ends, however it ends) or after MAX_SECS seconds.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tower_sessions::{Session, SessionManagerLayer};
use tower_sessions_sqlx_store::PostgresStore;
use tower_sessions_sqlx_store::sqlx::postgres::PgPoolOptions;

/// One visitor's state, as in the crate's `examples/welcome.rs`.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Welcome {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Visits")]
    visits: u64,
}

/// The key the handler keeps its state under.
const KEY: &str = "welcome";

/// The benchmark's `welcome_tower` handler, unchanged.
async fn welcome(session: Session) -> Result<String, StatusCode> {
    let mut state: Welcome = session
        .get(KEY)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
        .unwrap_or_default();
    state.visits += 1;
    session
        .insert(KEY, &state)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let name = if state.name.is_empty() {
        "World"
    } else {
        &state.name
    };
    Ok(format!("Hello {name}! Visit #{}", state.visits))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, pool, table, max_secs] = args.as_slice() else {
        panic!("usage: session-archive-sqlx-peer URL POOL TABLE MAX_SECS");
    };
    let pool: u32 = pool.parse().expect("POOL: a count");
    let max_secs: f64 = max_secs.parse().expect("MAX_SECS: seconds");
    let pool = PgPoolOptions::new()
        .max_connections(pool)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .expect("connect to PostgreSQL");
    let store = PostgresStore::new(pool)
        .with_table_name(table)
        .expect("a valid table name");
    store.migrate().await.expect("create the store's table");
    let layer = SessionManagerLayer::new(store).with_secure(false);
    let router = Router::new().route("/", get(welcome)).layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("the bound address");
    println!("listening {addr}");
    let stop = async move {
        let stdin_closed = async {
            let mut sink = [0_u8; 64];
            let mut stdin = tokio::io::stdin();
            while stdin.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        };
        tokio::select! {
            () = stdin_closed => {}
            () = tokio::time::sleep(Duration::from_secs_f64(max_secs)) => {}
        }
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
        .expect("serve");
}
