//! What the two welcome apps share, `welcome.rs` (axum) and `welcome_actix.rs` (actix-web): the
//! state, the page, the arguments, the sweeper and the log, so that both serve the same app and
//! differ only in their framework's code.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use session_archive::Sessions;
use session_archive::cli::{Access, Spec};

/// The usage text after `usage: NAME `.
pub const USAGE: &str = "[--addr HOST:PORT] [--archive SPEC]

  --addr HOST:PORT   where to listen (default 127.0.0.1:3000; port 0 picks a free one)
  --archive SPEC     where the sessions live (default .gen/sessions.redb):
                       redb:PATH or a bare PATH   a redb file
                       dir:PATH                   a directory tree, <PATH>/<id>/session.json
                       redis://HOST:PORT/DB       a Redis server (add #prefix=P to share one)
                       redis+cluster://HOST:PORT,HOST:PORT         a Redis Cluster
                       redis+sentinel://HOST:PORT,HOST:PORT/MASTER through Sentinel
                       postgres://USER@HOST:PORT/DB   a PostgreSQL database (#table=NAME)";

/// How often expired sessions are swept out of the archive.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// One visitor's state, stored as `{"Name":…,"Visits":…}`. Both fields default, so sessions
/// written by the original framework (`{"Name":"world"}`) load as they are.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Welcome {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Visits")]
    pub visits: u64,
}

#[derive(Deserialize)]
pub struct NameForm {
    pub name: String,
}

/// The change of `GET /`: counts the visit, and answers the name and the count.
pub fn count_visit(state: &mut Welcome) -> (String, u64) {
    state.visits += 1;
    (state.name.clone(), state.visits)
}

/// Whether the client asked for HTML, given its `Accept` header values: browsers put
/// `text/html` in `Accept`; curl sends `*/*` and gets plain text.
pub fn wants_html<'a>(accept: impl IntoIterator<Item = &'a str>) -> bool {
    accept.into_iter().any(|text| text.contains("text/html"))
}

/// The plain-text answer of `GET /`.
pub fn greeting(name: &str, visits: u64) -> String {
    format!("Hello {}! Visit #{visits}", greeted(name))
}

/// Whom the greeting names: the visitor's name, or the world until they give one.
pub fn greeted(name: &str) -> &str {
    if name.is_empty() { "World" } else { name }
}

/// The browser's page: the greeting, the name form and the logout button. The session cookie
/// is `SameSite=Lax`, so a form on another site that posts here arrives without it and cannot
/// rename or log out the visitor.
pub fn page(name: &str, visits: u64) -> String {
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
pub fn escape_html(text: &str) -> String {
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

pub struct Args {
    pub addr: String,
    pub archive: Spec,
}

/// The `--archive` value: a spec, or a bare path (no `scheme:` in front), which names a redb
/// file as it always has.
pub fn parse_spec(text: &str) -> Result<Spec, String> {
    let scheme = text.split_once(':').map(|(scheme, _)| scheme);
    let bare = scheme.is_none_or(|scheme| scheme.is_empty() || scheme.contains(['/', '.']));
    if bare {
        return Ok(Spec::Redb(PathBuf::from(text)));
    }
    Spec::parse(text).map_err(|err| format!("--archive: {err}"))
}

pub fn parse_args() -> Result<Args, String> {
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
pub async fn sweep(sessions: Sessions) {
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

/// Stops the sweeper, which holds the last `Sessions` once the server is gone: when it is
/// dropped, the archive is closed (a redb file's lock released). Then says so.
pub async fn stop(sweeper: tokio::task::JoinHandle<()>) -> Result<(), Box<dyn std::error::Error>> {
    sweeper.abort();
    if let Err(err) = sweeper.await
        && !err.is_cancelled()
    {
        return Err(err.into());
    }
    println!("Stopped; sessions closed");
    Ok(())
}

/// Opens the archive of `spec` on a blocking thread, and the sessions over it. The apps serve
/// plain HTTP, where browsers drop `Secure` cookies, so Secure is off. Behind HTTPS keep the
/// default (`Secure` on).
pub async fn open_sessions(spec: Spec) -> Result<Sessions, Box<dyn std::error::Error>> {
    let archive = tokio::task::spawn_blocking(move || spec.open(Access::CreateIfMissing)).await??;
    Ok(Sessions::builder(archive).secure(false).build())
}

/// Runs an app called `name`: installs the log, parses the arguments, and runs `serve` on them,
/// printing its error with its causes.
pub fn main(
    name: &str,
    serve: impl FnOnce(Args) -> Result<(), Box<dyn std::error::Error>>,
) -> ExitCode {
    // The library reports failed requests and sweeps through `tracing`; print them.
    if let Err(err) = tracing::subscriber::set_global_default(StderrLog) {
        eprintln!("{name}: cannot install the log: {err}");
    }
    let args = match parse_args() {
        Ok(args) => args,
        Err(problem) if problem.is_empty() => {
            println!("usage: {name} {USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(problem) => {
            eprintln!("{name}: {problem}\n\nusage: {name} {USAGE}");
            return ExitCode::from(2);
        }
    };
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{name}: {err}");
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
