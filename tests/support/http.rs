//! The HTTP client side shared by the tests that drive a server: `tests/axum.rs` and
//! `tests/web.rs` (each includes this file as a module of its own).

use reqwest::blocking::{Client, Response};
use reqwest::header::SET_COOKIE;
use reqwest::redirect::Policy;

/// A client with a cookie jar, like a browser's, that shows redirects instead of following them.
/// A request that gets no answer within 10 s fails, so that a server that hangs fails its test
/// instead of stalling the run.
pub fn jar() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("a reqwest client")
}

/// Every `Set-Cookie` header of a response.
pub fn set_cookies(response: &Response) -> Vec<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|value| value.to_str().expect("ASCII Set-Cookie").to_owned())
        .collect()
}

/// The session id in a `Set-Cookie` value, `session-id=<id>; …`.
pub fn cookie_value(set_cookie: &str) -> &str {
    set_cookie
        .strip_prefix("session-id=")
        .and_then(|rest| rest.split(';').next())
        .expect("a session-id cookie")
}
