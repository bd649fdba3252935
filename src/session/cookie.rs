//! The session cookie: reading the id from a `Cookie` header, and building `Set-Cookie`
//! values. [`Sessions`](super::Sessions) offers these as its cookie helpers.

use cookie::time::Duration as CookieDuration;
use cookie::{Cookie, SameSite};

use super::id::SessionId;

/// The session cookie of one [`Sessions`](super::Sessions): its name, and whether it carries
/// `Secure`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cookies<'a> {
    pub(crate) name: &'a str,
    pub(crate) secure: bool,
}

impl Cookies<'_> {
    /// The first cookie of this name in a `Cookie` header value whose (percent-decoded) value
    /// is a well-formed [`SessionId`]. Malformed cookies are skipped.
    pub(crate) fn id_from_header(self, header: &str) -> Option<SessionId> {
        Cookie::split_parse_encoded(header)
            .filter_map(Result::ok)
            .filter(|cookie| cookie.name() == self.name)
            .find_map(|cookie| SessionId::parse(cookie.value()))
    }

    /// The `Set-Cookie` value handing `id` to the client, lasting `max_age` seconds (`None`:
    /// for the browser session).
    pub(crate) fn set(self, id: &SessionId, max_age: Option<u64>) -> String {
        let mut cookie = self.base(id.as_str().to_owned());
        if let Some(secs) = max_age {
            cookie.set_max_age(CookieDuration::seconds(
                i64::try_from(secs).unwrap_or(i64::MAX),
            ));
        }
        cookie.encoded().to_string()
    }

    /// The `Set-Cookie` value that makes the client forget its session cookie.
    pub(crate) fn removal(self) -> String {
        let mut cookie = self.base(String::new());
        cookie.make_removal();
        cookie.encoded().to_string()
    }

    fn base(self, value: String) -> Cookie<'static> {
        Cookie::build((self.name.to_owned(), value))
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.secure)
            .path("/")
            .build()
    }
}
