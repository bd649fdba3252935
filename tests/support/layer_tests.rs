//! Tests both web layers pass alike (tests/axum.rs and tests/actix.rs, each with its own
//! server over a memory archive, serving `tests/support/handlers.rs` at `GET /count`,
//! `GET /peek` and `POST /destroy-then-save`), stamped out by [`layer_tests!`].
#![allow(
    clippy::unwrap_used,
    reason = "test bodies, run by the #[test] functions of the files that include this one"
)]

use session_archive::{Archive, ArchiveExt};

use crate::http::{cookie_value, jar, set_cookies};

/// Stamps out this file's tests for a server: `$serve()` answers the memory archive and a
/// server whose `url(path)` makes a URL.
macro_rules! layer_tests {
    ($serve:ident) => {
        #[test]
        fn a_visitor_whose_session_is_never_saved_gets_no_cookie_and_writes_nothing() {
            let (archive, server) = $serve();
            let url = |path: &str| server.url(path);
            layer_tests::never_saved_sets_no_cookie(&url, &*archive);
        }

        #[test]
        fn a_session_gone_mid_request_is_409_and_expires_the_cookie() {
            let (archive, server) = $serve();
            let url = |path: &str| server.url(path);
            layer_tests::gone_mid_request_is_409(&url, &*archive);
        }
    };
}
pub(crate) use layer_tests;

/// A visitor whose session is never saved gets no cookie, and nothing is written.
pub fn never_saved_sets_no_cookie(url: &dyn Fn(&str) -> String, archive: &dyn Archive) {
    let client = jar();
    for _ in 0..3 {
        let response = client.get(url("/peek")).send().unwrap();
        assert_eq!(response.status(), 200);
        assert!(set_cookies(&response).is_empty());
        assert_eq!(response.text().unwrap(), "0");
    }
    assert!(archive.domains().next().is_none(), "nothing was written");
}

/// A save that finds its session destroyed (here by the same request) answers 409 without
/// detail, and the response expires the cookie of the session it destroyed.
pub fn gone_mid_request_is_409(url: &dyn Fn(&str) -> String, archive: &dyn Archive) {
    let client = jar();
    let first = client.get(url("/count")).send().unwrap();
    let id = cookie_value(&set_cookies(&first)[0]).to_owned();
    let response = client.post(url("/destroy-then-save")).send().unwrap();
    assert_eq!(response.status(), 409);
    let cookies = set_cookies(&response);
    assert_eq!(cookies.len(), 1);
    assert!(cookies[0].starts_with("session-id=;"), "{}", cookies[0]);
    assert_eq!(response.text().unwrap(), "session no longer exists");
    assert!(!archive.has_domain(&id).unwrap());
}
