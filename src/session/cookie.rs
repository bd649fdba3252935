//! Cookie helpers on [`Sessions`]: reading the id from a `Cookie` header, and building
//! `Set-Cookie` values.

use cookie::time::Duration as CookieDuration;
use cookie::{Cookie, SameSite};

use super::expiry::Meta;
use super::{CookieAction, Phase, Session, SessionId, Sessions};

impl Sessions {
    /// Returns the session id carried by a `Cookie` request header value, if the header holds a
    /// cookie with this [name](Self::cookie_name) whose (percent-decoded) value is a well-formed
    /// [`SessionId`]. Malformed cookies are skipped; the first valid one wins.
    ///
    /// Whether the id names a live session is for [`Sessions::start`] to decide.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let header = "theme=dark; session-id=0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2";
    /// let id = sessions.id_from_cookie(header).expect("a valid id");
    /// assert_eq!(id.as_str(), "0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2");
    /// assert!(sessions.id_from_cookie("session-id=../../etc").is_none());
    ///
    /// let session = sessions.start(Some(id.as_str()), ())?; // unknown here, so a fresh id
    /// assert_ne!(session.id(), &id);
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn id_from_cookie(&self, header: &str) -> Option<SessionId> {
        Cookie::split_parse_encoded(header)
            .filter_map(Result::ok)
            .filter(|cookie| cookie.name() == self.cookie_name())
            .find_map(|cookie| SessionId::parse(cookie.value()))
    }

    /// Returns the `Set-Cookie` header value that hands `session`'s id to the client:
    /// `HttpOnly`, `SameSite=Lax`, `Path=/`, `Secure` unless [turned
    /// off](crate::SessionsBuilder::secure), and a `Max-Age` that ends when the server expires
    /// the session if it is not used again (the time left of the idle timeout since the session
    /// was last marked seen, capped by what is left of the absolute lifetime; a new session
    /// counts as seen now). With no expiry configured it has no `Max-Age`, so it lasts for the
    /// browser session. The value
    /// is always the server's id, never anything the client sent.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::builder(MemoryArchive::new())
    ///     .idle_timeout(Duration::from_secs(3600))
    ///     .build();
    /// let session = sessions.start(None, ())?;
    /// let header = sessions.set_cookie(&session);
    /// assert_eq!(
    ///     header,
    ///     format!("session-id={}; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=3600", session.id()),
    /// );
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn set_cookie<T>(&self, session: &Session<T>) -> String {
        let inner = &self.inner;
        let now = inner.now();
        // A session not stored yet would get its timestamps now, when first saved.
        let meta = match session.phase {
            Phase::Live {
                meta: Some(meta), ..
            } => meta,
            _ => Meta {
                created: now,
                seen: now,
            },
        };
        let max_age = inner.expires_at(meta).map(|at| at.saturating_sub(now));
        let mut cookie = self.base_cookie(session.id.as_str().to_owned());
        if let Some(secs) = max_age {
            cookie.set_max_age(CookieDuration::seconds(
                i64::try_from(secs).unwrap_or(i64::MAX),
            ));
        }
        cookie.encoded().to_string()
    }

    /// Returns the `Set-Cookie` header value that `session`'s calls call for, if any: see
    /// [`Session::cookie_action`]. Send it with the response; `None` means send nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let mut session = sessions.start(None, 1_u8)?;
    /// assert_eq!(sessions.cookie_header(&session), None);
    /// session.save()?;
    /// assert_eq!(sessions.cookie_header(&session), Some(sessions.set_cookie(&session)));
    /// session.destroy()?;
    /// assert_eq!(sessions.cookie_header(&session), Some(sessions.removal_cookie()));
    /// # Ok::<(), session_archive::Error>(())
    /// ```
    pub fn cookie_header<T>(&self, session: &Session<T>) -> Option<String> {
        match session.cookie_action() {
            CookieAction::Keep => None,
            CookieAction::Set => Some(self.set_cookie(session)),
            CookieAction::Remove => Some(self.removal_cookie()),
        }
    }

    /// Returns the `Set-Cookie` header value that makes the client forget its session cookie:
    /// an empty value with `Max-Age=0` and an expiry date in the past. Send it after
    /// [`Session::destroy`].
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{MemoryArchive, Sessions};
    ///
    /// let sessions = Sessions::new(MemoryArchive::new());
    /// let header = sessions.removal_cookie();
    /// assert!(header.starts_with("session-id=;"));
    /// assert!(header.contains("Max-Age=0"));
    /// ```
    pub fn removal_cookie(&self) -> String {
        let mut cookie = self.base_cookie(String::new());
        cookie.make_removal();
        cookie.encoded().to_string()
    }

    fn base_cookie(&self, value: String) -> Cookie<'static> {
        Cookie::build((self.cookie_name().to_owned(), value))
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.inner.config.secure)
            .path("/")
            .build()
    }
}
