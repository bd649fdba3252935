//! The id-header tests both web layers run (tests/axum.rs and tests/actix.rs, each with its
//! own server): a layer configured with `with_id_header("x-session-id")` over an archive, with
//! the routes `GET /count` (an update counting visits, answering the count), `GET /peek` (the
//! count), `POST /login` (a regenerate) and `POST /logout` (a destroy). Each test takes the
//! server's URL maker and its archive.
#![allow(
    clippy::unwrap_used,
    reason = "test bodies, run by the #[test] functions of the files that include this one"
)]

use reqwest::blocking::Client;
use reqwest::header::COOKIE;
use std::sync::Arc;
use std::time::Duration;

use session_archive::{Archive, ArchiveExt, ManualClock, MemoryArchive, STATE_KEY, Sessions};

use crate::http::{cookie_value, jar, set_cookies};

/// Stamps out this file's tests for a server: `$serve(cookie, clock)` answers the archive and a
/// server with ids in the `x-session-id` header too, or only there (`cookie` false), whose
/// `url(path)` makes a URL, its sessions made by [`sessions`] on `clock` if given.
macro_rules! id_header_tests {
    ($serve:ident) => {
        #[test]
        fn a_client_without_cookies_keeps_its_session_through_the_id_header() {
            let (archive, server) = $serve(false, None);
            let url = |path: &str| server.url(path);
            header_ids::a_client_without_cookies_keeps_its_session(&url, &*archive);
        }

        #[test]
        fn a_hostile_id_header_gets_a_fresh_id_and_is_never_echoed() {
            let (archive, server) = $serve(true, None);
            let url = |path: &str| server.url(path);
            header_ids::a_hostile_id_header_gets_a_fresh_id(&url, &*archive);
        }

        #[test]
        fn the_header_id_wins_over_the_cookie_and_either_alone_works() {
            let (_archive, server) = $serve(true, None);
            header_ids::the_header_id_wins_over_the_cookie(&|path| server.url(path));
        }

        #[test]
        fn an_id_from_the_header_alone_is_never_written_into_the_cookie() {
            let clock = session_archive::ManualClock::new(std::time::SystemTime::now());
            let (_archive, server) = $serve(true, Some(clock.clone()));
            header_ids::an_id_from_the_header_is_never_written_into_the_cookie(
                &|path| server.url(path),
                &clock,
            );
        }
    };
}
pub(crate) use id_header_tests;

/// The header the servers carry ids in.
pub const ID_HEADER: &str = "x-session-id";

/// The idle timeout of the sessions [`sessions`] makes on a clock.
pub const IDLE: Duration = Duration::from_secs(1800);

/// The sessions of a server over `archive`, without the `Secure` attribute (the tests speak plain
/// HTTP); on `clock`, if given, with the idle timeout [`IDLE`] and no absolute lifetime.
pub fn sessions(archive: &Arc<MemoryArchive>, clock: Option<ManualClock>) -> Sessions {
    let builder = Sessions::builder(Arc::clone(archive)).secure(false);
    match clock {
        Some(clock) => builder
            .idle_timeout(IDLE)
            .absolute_lifetime(None)
            .clock(clock)
            .build(),
        None => builder.build(),
    }
}

/// The ids of the sessions holding a state.
pub fn live_ids(archive: &dyn Archive) -> Vec<String> {
    archive
        .domains()
        .map(|domain| domain.expect("listing the archive"))
        .filter(|domain| archive.has(domain, STATE_KEY).expect("a read"))
        .collect()
}

/// The body of a `GET` of `url`, which must answer 200.
pub fn text(client: &Client, url: String) -> String {
    let response = client.get(url).send().expect("a GET");
    assert_eq!(response.status(), 200);
    response.text().expect("a body")
}

/// The id header of a response, if any.
pub fn header_id(response: &reqwest::blocking::Response) -> Option<String> {
    let value = response.headers().get(ID_HEADER)?;
    Some(value.to_str().expect("an ASCII id").to_owned())
}

/// A client without cookies keeps its session by the id header alone (the layer sets no
/// cookie and reads none); a login moves the id, a logout answers an empty one.
pub fn a_client_without_cookies_keeps_its_session(
    url: &dyn Fn(&str) -> String,
    archive: &dyn Archive,
) {
    let client = Client::new();
    let first = client.get(url("/count")).send().unwrap();
    assert!(set_cookies(&first).is_empty(), "no cookie at all");
    let id = header_id(&first).expect("the new id in the header");
    assert_eq!(live_ids(archive), vec![id.clone()]);
    // A bearer token in a response: no shared cache keeps it, and the answer varies by the id
    // header.
    let headers = first.headers();
    assert_eq!(headers["cache-control"], "private, no-store");
    assert!(
        headers
            .get_all("vary")
            .iter()
            .any(|vary| vary.to_str().unwrap().contains(ID_HEADER)),
        "{headers:?}"
    );
    assert_eq!(first.text().unwrap(), "1");

    let second = client
        .get(url("/count"))
        .header(ID_HEADER, &id)
        .send()
        .unwrap();
    assert_eq!(header_id(&second), None, "nothing to change: no header");
    assert!(second.headers().get("cache-control").is_none());
    assert_eq!(second.text().unwrap(), "2");

    // Without a header, and with the cookie turned off, a valid cookie is not read.
    let by_cookie = client
        .get(url("/peek"))
        .header(COOKIE, format!("session-id={id}"))
        .send()
        .unwrap();
    assert_eq!(by_cookie.text().unwrap(), "0");

    // Login moves it: the new id in the header, the old one dead.
    let login = client
        .post(url("/login"))
        .header(ID_HEADER, &id)
        .send()
        .unwrap();
    let new = header_id(&login).expect("the new id");
    assert_ne!(new, id);
    let old = client
        .get(url("/peek"))
        .header(ID_HEADER, &id)
        .send()
        .unwrap();
    assert_eq!(old.text().unwrap(), "0");

    // Logout answers an empty id: forget it.
    let logout = client
        .post(url("/logout"))
        .header(ID_HEADER, &new)
        .send()
        .unwrap();
    assert_eq!(header_id(&logout).as_deref(), Some(""));
    assert!(live_ids(archive).is_empty());
}

/// An id header naming no session (made up, unknown, malformed) starts a fresh session under
/// a server id, in the header and the cookie; the client's value is never adopted nor echoed.
pub fn a_hostile_id_header_gets_a_fresh_id(url: &dyn Fn(&str) -> String, archive: &dyn Archive) {
    let unknown = session_archive::SessionId::generate().to_string();
    for hostile in [unknown.as_str(), "../../etc", "", "x", "%2e%2e"] {
        let response = Client::new()
            .get(url("/count"))
            .header(ID_HEADER, hostile)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{hostile:?}");
        let id = header_id(&response).expect("a fresh id");
        assert_ne!(id, hostile);
        let cookies = set_cookies(&response);
        assert_eq!(cookie_value(&cookies[0]), id, "the cookie carries it too");
        assert_eq!(response.text().unwrap(), "1", "{hostile:?}");
    }
    let ids = live_ids(archive);
    assert_eq!(ids.len(), 5);
    assert!(!ids.contains(&unknown), "a client-made id is never adopted");
}

/// With both the cookie and the header on, each alone names the session, and a request with
/// both uses the header's.
pub fn the_header_id_wins_over_the_cookie(url: &dyn Fn(&str) -> String) {
    let by_cookie = jar();
    assert_eq!(text(&by_cookie, url("/count")), "1");
    assert_eq!(text(&by_cookie, url("/count")), "2");
    let other = Client::new().get(url("/count")).send().unwrap();
    let other_id = header_id(&other).expect("an id");
    // The cookie's session is at 2; the header names the other one, which is used.
    let both = by_cookie
        .get(url("/peek"))
        .header(ID_HEADER, &other_id)
        .send()
        .unwrap();
    assert_eq!(both.text().unwrap(), "1");
    assert_eq!(text(&by_cookie, url("/peek")), "2");
}

/// With both the cookie and the header on, an id that came in the header alone is never
/// written into the cookie, which may hold another session: its expiry refresh answers in the
/// header only, and so does its destroy (no removal cookie for the cookie's session), while the
/// cookie's own session is refreshed in the cookie as before.
pub fn an_id_from_the_header_is_never_written_into_the_cookie(
    url: &dyn Fn(&str) -> String,
    clock: &ManualClock,
) {
    let browser = jar();
    let first = browser.get(url("/count")).send().unwrap();
    let cookie_id = cookie_value(&set_cookies(&first)[0]).to_owned();
    assert_eq!(first.text().unwrap(), "1");
    let other = Client::new().get(url("/count")).send().unwrap();
    let header_id_ = header_id(&other).expect("an id");
    assert_ne!(header_id_, cookie_id);

    // Past an eighth of the idle timeout both sessions are due an expiry refresh.
    clock.advance(IDLE / 4);
    let both = browser
        .get(url("/peek"))
        .header(ID_HEADER, &header_id_)
        .send()
        .unwrap();
    assert_eq!(
        header_id(&both).as_deref(),
        Some(header_id_.as_str()),
        "refreshed in the header"
    );
    assert!(set_cookies(&both).is_empty(), "{:?}", set_cookies(&both));
    assert_eq!(both.text().unwrap(), "1");

    // The browser's cookie still names its own session, refreshed in the cookie.
    let own = browser.get(url("/peek")).send().unwrap();
    let cookies = set_cookies(&own);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert_eq!(cookie_value(&cookies[0]), cookie_id);
    assert_eq!(own.text().unwrap(), "1");

    // A destroy of the header's session leaves the browser's cookie alone.
    let logout = browser
        .post(url("/logout"))
        .header(ID_HEADER, &header_id_)
        .send()
        .unwrap();
    assert_eq!(header_id(&logout).as_deref(), Some(""));
    assert!(
        set_cookies(&logout).is_empty(),
        "{:?}",
        set_cookies(&logout)
    );
    assert_eq!(text(&browser, url("/count")), "2");
}
