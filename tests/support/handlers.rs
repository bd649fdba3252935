//! Handlers both web layers' tests serve, tests/axum.rs and tests/actix.rs: the extractor is
//! one type under either framework, so one handler serves both.

use reqwest::blocking::Client;
use reqwest::header::COOKIE;
use serde::{Deserialize, Serialize};
use session_archive::web::{Session, SessionError};

#[derive(Default, Serialize, Deserialize)]
pub struct Visits {
    pub visits: u64,
}

/// `GET /count`: one more visit, atomically; answers the count.
pub async fn count(mut session: Session<Visits>) -> Result<String, SessionError> {
    let n = session
        .update(|state| {
            state.visits += 1;
            state.visits
        })
        .await?;
    Ok(n.to_string())
}

/// `GET /peek`: the count, changing nothing.
pub async fn peek(session: Session<Visits>) -> String {
    session.visits.to_string()
}

/// `POST /login`: a regenerate; answers the new id.
pub async fn login(mut session: Session<Visits>) -> Result<String, SessionError> {
    session.regenerate().await?;
    Ok(session.id().to_string())
}

/// `POST /logout`: a destroy.
pub async fn logout(mut session: Session<Visits>) -> Result<(), SessionError> {
    session.destroy().await
}

/// A save after a destroy: the save finds the session gone.
pub async fn destroy_then_save(mut session: Session<Visits>) -> Result<(), SessionError> {
    session.destroy().await?;
    session.save().await
}

/// `clients` clients at once, each sending `visits` requests to `url` (`/count`) with the cookie
/// of the session `id`; every one must answer 200.
pub fn count_concurrently(url: &str, id: &str, clients: usize, visits: usize) {
    std::thread::scope(|scope| {
        for _ in 0..clients {
            scope.spawn(|| {
                let client = Client::new();
                for _ in 0..visits {
                    let answer = client
                        .get(url)
                        .header(COOKIE, format!("session-id={id}"))
                        .send()
                        .expect("a visit");
                    assert_eq!(answer.status(), 200);
                }
            });
        }
    });
}
