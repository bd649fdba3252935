//! The Welcome handler as a running app: typed sessions in any archive, served by axum.
//!
//! ```sh
//! cargo run --release --features axum --bin welcome -- [--addr HOST:PORT] [--archive SPEC]
//! cargo run --release --example welcome --features axum -- [...]   # the same app
//! ```
//!
//! The `welcome` binary and this example are one program (`src/bin/welcome.rs` includes this
//! file); the binary builds only the library's own dependencies, the example every
//! dev-dependency too.
//!
//! - `GET /` counts the visit (atomically) and answers `Hello {name}! Visit #{n}` as plain text,
//!   or, to a client whose `Accept` header asks for `text/html` (a browser), a page with the
//!   greeting, a form that sets the name and a logout button;
//! - `POST /name` with the form field `name` sets the name, then redirects (303) to `/`;
//! - `POST /logout` destroys the session and expires the cookie; it answers `Logged out`, or
//!   redirects a browser to `/`.
//!
//! `--archive` takes the archive specs of the `session-archive` command: `redb:PATH`, `dir:PATH`
//! or `redis://HOST:PORT/DB` (with `#prefix=P` to share a server), a Redis Cluster
//! `redis+cluster://HOST:PORT,HOST:PORT`, a Sentinel-monitored master
//! `redis+sentinel://HOST:PORT,HOST:PORT/MASTER`, or `postgres://USER@HOST:PORT/DB` (with
//! `#table=NAME` to pick the table), and a bare path means a redb file. Redis needs the
//! `archive-redis` feature, PostgreSQL the `archive-postgres` feature and `dir:` the
//! `archive-dir` feature. Two instances on different ports over one Redis or one PostgreSQL
//! database serve the same sessions: a visitor can move between them.
//!
//! The first line on stdout is `Listening on http://HOST:PORT`, with the port actually bound
//! (so `--addr 127.0.0.1:0` works). Ctrl-C or SIGTERM stops it gracefully: in-flight requests
//! finish, then the sessions and the archive are closed.

use std::process::ExitCode;

use axum::Router;
use axum::extract::Form;
use axum::http::header::{ACCEPT, VARY};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use session_archive::axum::{Session, SessionError, SessionLayer};

#[path = "common/shutdown.rs"]
mod shutdown;
#[path = "common/welcome_app.rs"]
mod welcome_app;

use welcome_app::{Args, NameForm, Welcome, greeting, page};

/// Whether the client asked for HTML (see [`welcome_app::wants_html`]).
fn wants_html(headers: &HeaderMap) -> bool {
    welcome_app::wants_html(
        headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
}

/// `GET /`: counts this visit and greets the visitor, as HTML or as plain text.
async fn welcome(
    headers: HeaderMap,
    mut session: Session<Welcome>,
) -> Result<Response, SessionError> {
    let (name, visits) = session.update(welcome_app::count_visit).await?;
    // The answer depends on `Accept`, so caches must key on it.
    let vary = [(VARY, HeaderValue::from_static("accept"))];
    if wants_html(&headers) {
        return Ok((vary, Html(page(&name, visits))).into_response());
    }
    Ok((vary, greeting(&name, visits)).into_response())
}

/// `POST /name`: sets the name. It goes through `update` so that a visit counted concurrently
/// is not overwritten. The 303 sends a browser back to the page with a `GET`.
async fn set_name(
    mut session: Session<Welcome>,
    Form(form): Form<NameForm>,
) -> Result<Redirect, SessionError> {
    session
        .update(move |state| state.name.clone_from(&form.name))
        .await?;
    Ok(Redirect::to("/"))
}

/// `POST /logout`: destroys the session; the layer expires the cookie. A browser goes back to
/// the page, as a new visitor.
async fn logout(
    headers: HeaderMap,
    mut session: Session<Welcome>,
) -> Result<Response, SessionError> {
    session.destroy().await?;
    if wants_html(&headers) {
        return Ok(Redirect::to("/").into_response());
    }
    Ok("Logged out\n".into_response())
}

async fn serve(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let sessions = welcome_app::open_sessions(args.archive).await?;
    let app = Router::new()
        .route("/", get(welcome))
        .route("/name", post(set_name))
        .route("/logout", post(logout))
        .layer(SessionLayer::new(sessions.clone()));

    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    println!("Listening on http://{}", listener.local_addr()?);

    let sweeper = tokio::spawn(welcome_app::sweep(sessions));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown::shutdown_signal())
        .await?;
    // The router and its layer are gone with `serve`; the sweeper holds the last `Sessions`.
    welcome_app::stop(sweeper).await
}

/// Runs the app: `main` of both the example and the `welcome` binary.
pub fn main() -> ExitCode {
    welcome_app::main("welcome", |args| {
        tokio::runtime::Runtime::new()
            .map_err(|err| format!("cannot start the async runtime: {err}"))?
            .block_on(serve(args))
    })
}
