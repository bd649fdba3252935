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

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::extract::Form;
use axum::http::header::{ACCEPT, VARY};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use session_archive::Sessions;
use session_archive::axum::{Session, SessionError, SessionLayer};
use session_archive::cli::{Access, Spec};

#[path = "common/shutdown.rs"]
mod shutdown;

const USAGE: &str = "usage: welcome [--addr HOST:PORT] [--archive SPEC]

  --addr HOST:PORT   where to listen (default 127.0.0.1:3000; port 0 picks a free one)
  --archive SPEC     where the sessions live (default .gen/sessions.redb):
                       redb:PATH or a bare PATH   a redb file
                       dir:PATH                   a directory tree, <PATH>/<id>/session.json
                       redis://HOST:PORT/DB       a Redis server (add #prefix=P to share one)
                       redis+cluster://HOST:PORT,HOST:PORT         a Redis Cluster
                       redis+sentinel://HOST:PORT,HOST:PORT/MASTER through Sentinel
                       postgres://USER@HOST:PORT/DB   a PostgreSQL database (#table=NAME)";

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

/// Whether the client asked for HTML: browsers put `text/html` in `Accept`; curl sends `*/*`
/// and gets plain text.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .any(|value| value.to_str().is_ok_and(|text| text.contains("text/html")))
}

/// `GET /`: counts this visit and greets the visitor, as HTML or as plain text.
async fn welcome(
    headers: HeaderMap,
    mut session: Session<Welcome>,
) -> Result<Response, SessionError> {
    let (name, visits) = session
        .update(|state| {
            state.visits += 1;
            (state.name.clone(), state.visits)
        })
        .await?;
    // The answer depends on `Accept`, so caches must key on it.
    let vary = [(VARY, HeaderValue::from_static("accept"))];
    if wants_html(&headers) {
        return Ok((vary, Html(page(&name, visits))).into_response());
    }
    let name = greeted(&name);
    Ok((vary, format!("Hello {name}! Visit #{visits}")).into_response())
}

/// Whom the greeting names: the visitor's name, or the world until they give one.
fn greeted(name: &str) -> &str {
    if name.is_empty() { "World" } else { name }
}

/// The browser's page: the greeting, the name form and the logout button. The session cookie
/// is `SameSite=Lax`, so a form on another site that posts here arrives without it and cannot
/// rename or log out the visitor.
fn page(name: &str, visits: u64) -> String {
    let (shown, value) = (escape_html(greeted(name)), escape_html(name));
    format!(
        r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Welcome</title></head>
<body>
<h1>Hello {shown}!</h1>
<p>Visit #{visits}</p>
<form method="post" action="/name">
<label>Your name <input name="name" value="{value}" required></label>
<button>Save</button>
</form>
<form method="post" action="/logout"><button>Log out</button></form>
</body>
</html>
"#
    )
}

/// `text` as HTML text or attribute value: the five characters HTML gives meaning escaped.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
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

struct Args {
    addr: String,
    archive: Spec,
}

/// The `--archive` value: a spec, or a bare path (no `scheme:` in front), which names a redb
/// file as it always has.
fn parse_spec(text: &str) -> Result<Spec, String> {
    let scheme = text.split_once(':').map(|(scheme, _)| scheme);
    let bare = scheme.is_none_or(|scheme| scheme.is_empty() || scheme.contains(['/', '.']));
    if bare {
        return Ok(Spec::Redb(PathBuf::from(text)));
    }
    Spec::parse(text).map_err(|err| format!("--archive: {err}"))
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:3000".to_owned(),
        archive: Spec::Redb(PathBuf::from(".gen/sessions.redb")),
    };
    let mut given = std::env::args_os().skip(1);
    while let Some(flag) = given.next() {
        let flag = flag.to_string_lossy().into_owned();
        let mut value = |name: &str| {
            given
                .next()
                .ok_or(format!("{name} needs a value"))?
                .into_string()
                .map_err(|_| format!("{name} must be valid UTF-8"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--addr" => args.addr = value("--addr")?,
            "--archive" => args.archive = parse_spec(&value("--archive")?)?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
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
    let spec = args.archive;
    let archive = tokio::task::spawn_blocking(move || spec.open(Access::CreateIfMissing)).await??;
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
        .with_graceful_shutdown(shutdown::shutdown_signal())
        .await?;
    // The router and its layer are gone with `serve`; the sweeper holds the last `Sessions`.
    // Once it is dropped, the archive is closed (a redb file's lock released).
    sweeper.abort();
    if let Err(err) = sweeper.await
        && !err.is_cancelled()
    {
        return Err(err.into());
    }
    println!("Stopped; sessions closed");
    Ok(())
}

/// Runs the app: `main` of both the example and the `welcome` binary.
pub fn main() -> ExitCode {
    // The library reports failed requests and sweeps through `tracing`; print them.
    if let Err(err) = tracing::subscriber::set_global_default(StderrLog) {
        eprintln!("welcome: cannot install the log: {err}");
    }
    let args = match parse_args() {
        Ok(args) => args,
        Err(problem) if problem.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(problem) => {
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

/// A minimal `tracing` subscriber: each event at `INFO` or above as one line on stderr, spans
/// ignored. An app would use `tracing-subscriber`; this one writes its own few lines so that
/// building it needs nothing beyond the library's dependencies.
struct StderrLog;

impl tracing::Subscriber for StderrLog {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::INFO
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::INFO)
    }

    fn event(&self, event: &tracing::Event<'_>) {
        let metadata = event.metadata();
        let mut line = format!("{} {}:", metadata.level(), metadata.target());
        event.record(&mut Fields(&mut line));
        eprintln!("{line}");
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// Appends an event's fields to a line: the message as it is, the others as ` name=value`.
struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = if field.name() == "message" {
            write!(self.0, " {value:?}")
        } else {
            write!(self.0, " {}={value:?}", field.name())
        };
    }

    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        let _ = write!(self.0, " {}={value}", field.name());
    }
}
