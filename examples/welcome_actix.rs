//! The Welcome handler as a running app on actix-web: the same app as `welcome.rs` (axum), with
//! the same routes, page, plain text and arguments, on `session_archive::actix`.
//!
//! ```sh
//! cargo run --release --features actix --bin welcome_actix -- [--addr HOST:PORT] [--archive SPEC]
//! cargo run --release --example welcome_actix --features actix -- [...]   # the same app
//! ```
//!
//! - `GET /` counts the visit (atomically) and answers `Hello {name}! Visit #{n}` as plain text,
//!   or, to a client whose `Accept` header asks for `text/html` (a browser), a page with the
//!   greeting, a form that sets the name and a logout button;
//! - `POST /name` with the form field `name` sets the name, then redirects (303) to `/`;
//! - `POST /logout` destroys the session and expires the cookie; it answers `Logged out`, or
//!   redirects a browser to `/`.
//!
//! `--archive` takes the same specs as the axum app (a redb file by default,
//! `.gen/sessions.redb`; `dir:PATH`, `redis://…`), parsed by the same code
//! (`common/welcome_app.rs`). The first line on stdout is `Listening on http://HOST:PORT`, with
//! the port actually bound. Ctrl-C or SIGTERM stops it gracefully (actix-web's own signal
//! handling): in-flight requests finish, then the sessions and the archive are closed.

use std::process::ExitCode;

use actix_web::http::header::{ACCEPT, ContentType, LOCATION, VARY};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use session_archive::actix::{Session, SessionError, SessionMiddleware};

#[path = "common/welcome_app.rs"]
mod welcome_app;

use welcome_app::{Args, NameForm, Welcome, greeting, page};

/// Whether the client asked for HTML (see [`welcome_app::wants_html`]).
fn wants_html(request: &HttpRequest) -> bool {
    welcome_app::wants_html(
        request
            .headers()
            .get_all(ACCEPT)
            .filter_map(|value| value.to_str().ok()),
    )
}

/// `GET /`: counts this visit and greets the visitor, as HTML or as plain text.
async fn welcome(
    request: HttpRequest,
    mut session: Session<Welcome>,
) -> Result<HttpResponse, SessionError> {
    let (name, visits) = session.update(welcome_app::count_visit).await?;
    // The answer depends on `Accept`, so caches must key on it.
    let mut response = HttpResponse::Ok();
    response.insert_header((VARY, "accept"));
    if wants_html(&request) {
        return Ok(response
            .content_type(ContentType::html())
            .body(page(&name, visits)));
    }
    Ok(response
        .content_type(ContentType::plaintext())
        .body(greeting(&name, visits)))
}

/// A 303 to `/`: a browser comes back to the page with a `GET`.
fn home() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((LOCATION, "/"))
        .finish()
}

/// `POST /name`: sets the name. It goes through `update` so that a visit counted concurrently
/// is not overwritten.
async fn set_name(
    mut session: Session<Welcome>,
    form: web::Form<NameForm>,
) -> Result<HttpResponse, SessionError> {
    let name = form.into_inner().name;
    session
        .update(move |state| state.name.clone_from(&name))
        .await?;
    Ok(home())
}

/// `POST /logout`: destroys the session; the middleware expires the cookie. A browser goes back
/// to the page, as a new visitor.
async fn logout(
    request: HttpRequest,
    mut session: Session<Welcome>,
) -> Result<HttpResponse, SessionError> {
    session.destroy().await?;
    if wants_html(&request) {
        return Ok(home());
    }
    Ok(HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body("Logged out\n"))
}

async fn serve(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let sessions = welcome_app::open_sessions(args.archive).await?;
    let middleware = SessionMiddleware::new(sessions.clone());
    let server = HttpServer::new(move || {
        App::new()
            .wrap(middleware.clone())
            .route("/", web::get().to(welcome))
            .route("/name", web::post().to(set_name))
            .route("/logout", web::post().to(logout))
    })
    .bind(&args.addr)?;
    for addr in server.addrs() {
        println!("Listening on http://{addr}");
    }
    let sweeper = actix_web::rt::spawn(welcome_app::sweep(sessions));
    server.run().await?;
    // The workers and their apps are gone with the server; the sweeper holds the last
    // `Sessions`.
    welcome_app::stop(sweeper).await
}

/// Runs the app: `main` of both the example and the `welcome_actix` binary.
pub fn main() -> ExitCode {
    welcome_app::main("welcome_actix", |args| {
        actix_web::rt::System::new().block_on(serve(args))
    })
}
