//! The Welcome app written the tower-sessions way: tower-sessions' `SessionManagerLayer` and
//! `Session`, with the records in a redb file through `ArchiveStore`.
//!
//! ```sh
//! cargo run --release --example tower_sessions --features tower-sessions,axum -- \
//!     [--addr HOST:PORT] [--archive PATH]
//! ```
//!
//! - `GET /` counts the visit and answers `Hello {name}! Visit #{n}`;
//! - `POST /name` with the form field `name` sets the name, then redirects to `/`;
//! - `POST /logout` flushes the session (tower-sessions then expires the cookie).
//!
//! Unlike the `welcome` example's atomic `update`, tower-sessions reads a session once per
//! request and saves it whole afterwards, so two concurrent visits of one visitor may count once.
//!
//! The first line on stdout is `Listening on http://HOST:PORT`, with the port actually bound
//! (so `--addr 127.0.0.1:0` works). Ctrl-C or SIGTERM stops it gracefully.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::extract::Form;
use axum::http::StatusCode;
use axum::response::Redirect;
use axum::routing::{get, post};
use serde::Deserialize;
use session_archive::RedbArchive;
use session_archive::tower_sessions::ArchiveStore;
use tower_sessions::{ExpiredDeletion, Expiry, Session, SessionManagerLayer};

#[path = "common/shutdown.rs"]
mod shutdown;

const USAGE: &str = "usage: tower_sessions [--addr HOST:PORT] [--archive PATH]

  --addr HOST:PORT   where to listen (default 127.0.0.1:3000; port 0 picks a free one)
  --archive PATH     the redb file holding the sessions (default .gen/tower-sessions.redb)";

/// How often expired records are deleted from the archive.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// A session ends after a day without a visit.
const IDLE_TIMEOUT: time::Duration = time::Duration::days(1);

const NAME: &str = "name";
const VISITS: &str = "visits";

/// What a handler answers when the session store fails: a 500, with the error logged.
type Failure = (StatusCode, &'static str);

fn failure(err: &tower_sessions::session::Error) -> Failure {
    tracing::error!(error = %err, "session store failed");
    (StatusCode::INTERNAL_SERVER_ERROR, "session store failed\n")
}

#[derive(Deserialize)]
struct NameForm {
    name: String,
}

/// `GET /`: counts this visit and greets the visitor.
async fn welcome(session: Session) -> Result<String, Failure> {
    let visits = session
        .get::<u64>(VISITS)
        .await
        .map_err(|err| failure(&err))?
        .unwrap_or(0)
        + 1;
    session
        .insert(VISITS, visits)
        .await
        .map_err(|err| failure(&err))?;
    let name = session
        .get::<String>(NAME)
        .await
        .map_err(|err| failure(&err))?
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "World".to_owned());
    Ok(format!("Hello {name}! Visit #{visits}"))
}

/// `POST /name`: sets the name.
async fn set_name(session: Session, Form(form): Form<NameForm>) -> Result<Redirect, Failure> {
    session
        .insert(NAME, form.name)
        .await
        .map_err(|err| failure(&err))?;
    Ok(Redirect::to("/"))
}

/// `POST /logout`: deletes the session; tower-sessions expires the cookie.
async fn logout(session: Session) -> Result<&'static str, Failure> {
    session.flush().await.map_err(|err| failure(&err))?;
    Ok("Logged out\n")
}

struct Args {
    addr: String,
    archive: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:3000".to_owned(),
        archive: PathBuf::from(".gen/tower-sessions.redb"),
    };
    let mut given = std::env::args_os().skip(1);
    while let Some(flag) = given.next() {
        let flag = flag.to_string_lossy().into_owned();
        match flag.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--addr" => {
                let value = given.next().ok_or("--addr needs a value")?;
                args.addr = value
                    .into_string()
                    .map_err(|_| "--addr must be valid UTF-8")?;
            }
            "--archive" => {
                args.archive = given.next().ok_or("--archive needs a value")?.into();
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// Deletes expired records every [`SWEEP_EVERY`], for ever. (`ArchiveStore` runs the archive
/// calls on tokio's blocking threads itself.)
async fn sweep(store: ArchiveStore) {
    let mut interval = tokio::time::interval(SWEEP_EVERY);
    loop {
        interval.tick().await;
        if let Err(err) = store.delete_expired().await {
            tracing::error!(error = %err, "deleting expired sessions failed");
        }
    }
}

/// The app's routes behind tower-sessions' layer over `store`. (Public for
/// `tests/tower_sessions_example.rs`, which serves it in-process.)
pub fn app(store: ArchiveStore) -> Router {
    // The example serves plain HTTP, where browsers drop `Secure` cookies, so it turns Secure
    // off. Behind HTTPS keep the default (`Secure` on).
    let layer = SessionManagerLayer::new(store)
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(IDLE_TIMEOUT));
    Router::new()
        .route("/", get(welcome))
        .route("/name", post(set_name))
        .route("/logout", post(logout))
        .layer(layer)
}

async fn serve(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let archive_path = args.archive;
    if let Some(parent) = archive_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let archive = tokio::task::spawn_blocking(move || RedbArchive::open(&archive_path)).await??;
    let store = ArchiveStore::new(archive);
    let app = app(store.clone());

    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    println!("Listening on http://{}", listener.local_addr()?);

    let sweeper = tokio::spawn(sweep(store));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown::shutdown_signal())
        .await?;
    // The sweeper holds the last store; once it is dropped, the redb file is closed.
    sweeper.abort();
    if let Err(err) = sweeper.await
        && !err.is_cancelled()
    {
        return Err(err.into());
    }
    println!("Stopped; sessions closed");
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(problem) => {
            if problem.is_empty() {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            eprintln!("tower_sessions: {problem}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("tower_sessions: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tower_sessions: {err}");
            let mut source = err.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}
