//! The Welcome handler as a running app: typed sessions in a redb file, served by axum.
//!
//! ```sh
//! cargo run --release --example welcome --features axum -- [--addr HOST:PORT] [--archive PATH]
//! ```
//!
//! - `GET /` counts the visit (atomically) and answers `Hello {name}! Visit #{n}`;
//! - `POST /name` with the form field `name` sets the name, then redirects to `/`;
//! - `POST /logout` destroys the session and expires the cookie.
//!
//! The first line on stdout is `Listening on http://HOST:PORT`, with the port actually bound
//! (so `--addr 127.0.0.1:0` works). Ctrl-C or SIGTERM stops it gracefully: in-flight requests
//! finish, then the sessions and the redb file are closed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::extract::Form;
use axum::response::Redirect;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use session_archive::axum::{Session, SessionError, SessionLayer};
use session_archive::{RedbArchive, Sessions};

const USAGE: &str = "usage: welcome [--addr HOST:PORT] [--archive PATH]

  --addr HOST:PORT   where to listen (default 127.0.0.1:3000; port 0 picks a free one)
  --archive PATH     the redb file holding the sessions (default .gen/sessions.redb)";

/// How often expired sessions are swept out of the archive.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// One visitor's state, stored as `{"Name":…,"Visits":…}`. Both fields default, so sessions
/// written by the original framework (`{"Name":"world"}`) load as they are.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Welcome {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Visits")]
    visits: u64,
}

#[derive(Deserialize)]
struct NameForm {
    name: String,
}

/// `GET /`: counts this visit and greets the visitor.
async fn welcome(mut session: Session<Welcome>) -> Result<String, SessionError> {
    let (name, visits) = session
        .update(|state| {
            state.visits += 1;
            (state.name.clone(), state.visits)
        })
        .await?;
    let name = if name.is_empty() { "World" } else { &name };
    Ok(format!("Hello {name}! Visit #{visits}"))
}

/// `POST /name`: sets the name. It goes through `update` so that a visit counted concurrently
/// is not overwritten.
async fn set_name(
    mut session: Session<Welcome>,
    Form(form): Form<NameForm>,
) -> Result<Redirect, SessionError> {
    session
        .update(move |state| state.name.clone_from(&form.name))
        .await?;
    Ok(Redirect::to("/"))
}

/// `POST /logout`: destroys the session; the layer expires the cookie.
async fn logout(mut session: Session<Welcome>) -> Result<&'static str, SessionError> {
    session.destroy().await?;
    Ok("Logged out\n")
}

struct Args {
    addr: String,
    archive: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:3000".to_owned(),
        archive: PathBuf::from(".gen/sessions.redb"),
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

/// Resolves on Ctrl-C, or on SIGTERM where there is one.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Sweeps expired sessions every [`SWEEP_EVERY`], on a blocking thread, for ever.
async fn sweep(sessions: Sessions) {
    let mut interval = tokio::time::interval(SWEEP_EVERY);
    loop {
        interval.tick().await;
        let sessions = sessions.clone();
        match tokio::task::spawn_blocking(move || sessions.sweep()).await {
            Ok(Ok(_removed)) => {}
            Ok(Err(err)) => {
                tracing::error!(
                    error = &err as &dyn std::error::Error,
                    "session sweep failed"
                );
            }
            Err(err) => tracing::error!(error = %err, "session sweep task failed"),
        }
    }
}

async fn serve(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let archive_path = args.archive;
    let archive = tokio::task::spawn_blocking(move || RedbArchive::open(&archive_path)).await??;
    // The example serves plain HTTP, where browsers drop `Secure` cookies, so it turns Secure
    // off. Behind HTTPS keep the default (`Secure` on).
    let sessions = Sessions::builder(archive).secure(false).build();

    let app = Router::new()
        .route("/", get(welcome))
        .route("/name", post(set_name))
        .route("/logout", post(logout))
        .layer(SessionLayer::new(sessions.clone()));

    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    println!("Listening on http://{}", listener.local_addr()?);

    let sweeper = tokio::spawn(sweep(sessions));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    // The router and its layer are gone with `serve`; the sweeper holds the last `Sessions`.
    // Once it is dropped, the redb file is closed.
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
            eprintln!("welcome: {problem}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("welcome: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("welcome: {err}");
            let mut source = err.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}
