//! How each operation of the alphabet runs for real, on a thread of its own, in a world.

use super::alphabet::{Failed, Found, Kind, Op, Returned, User, Wrote, tag_of};
use super::states::Tagged;
use super::world::World;
use crate::session::{CookieAction, Session, SessionId, Sessions};

impl Op {
    /// Runs the operation as operation number `me` of the schedule.
    pub(super) fn run<T: Tagged>(self, world: &World<T>, me: usize) -> Returned {
        let via = world.sessions(me, self.via);
        let s = &world.s;
        match self.kind {
            Kind::StartNew => {
                let mut session = via.new_session(T::initial());
                let write = write(self.kind, &mut session, me, world);
                Returned::Request {
                    start: Ok(None),
                    write: Some(write),
                }
            }
            Kind::Resume | Kind::ResumeTouch | Kind::ResumeExpired => {
                Returned::Start(start::<T>(via, s).map(|(found, _)| found))
            }
            kind if kind.is_request() => match start::<T>(via, s) {
                Ok((found, mut session)) => Returned::Request {
                    start: Ok(found),
                    write: Some(write(kind, &mut session, me, world)),
                },
                Err(failed) => Returned::Request {
                    start: Err(failed),
                    write: None,
                },
            },
            Kind::Revoke => Returned::Count(via.revoke_user("alice").map_err(Failed::from)),
            Kind::RevokeExcept => {
                Returned::Count(via.revoke_user_except("alice", s).map_err(Failed::from))
            }
            Kind::Sweep => Returned::Count(via.sweep().map_err(Failed::from)),
            Kind::IsLive => Returned::Live(via.is_live(s).map_err(Failed::from)),
            _ => Returned::Listed(
                via.user_sessions("alice")
                    .map(|listed| listed.map(|session| session.id().as_str().to_owned()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(Failed::from),
            ),
        }
    }
}

/// Starts `S`; what it found, and the handle.
fn start<T: Tagged>(via: &Sessions, s: &SessionId) -> Result<(Found, Session<T>), Failed> {
    let session = via.start(Some(s.as_str()), T::initial())?;
    let found = (!session.is_new()).then(|| {
        let user = session.user().map(str::to_owned);
        (session.tags(), user)
    });
    Ok((found, session))
}

/// A request's write through its handle.
fn write<T: Tagged>(
    kind: Kind,
    session: &mut Session<T>,
    me: usize,
    world: &World<T>,
) -> Result<Wrote, Failed> {
    let tag = tag_of(me);
    if !matches!(
        kind,
        Kind::RegenerateClean | Kind::Destroy | Kind::Update | Kind::UpdateSend
    ) {
        session.tag(tag);
    }
    if let Some(user) = kind.binds() {
        session.set_user(user.map(User::name));
    }
    let mut removed = false;
    match kind {
        Kind::Update => {
            session.update(|state| state.tag(tag))?;
        }
        Kind::UpdateSend => {
            session.update_send(move |state| state.tag(tag))?;
        }
        Kind::RegenerateClean | Kind::RegenerateChanged | Kind::RegenerateRebind => {
            session.regenerate()?;
        }
        Kind::Destroy => {
            session.destroy()?;
            removed = session.cookie_action() == CookieAction::Remove;
        }
        _ => session.save()?,
    }
    Ok(Wrote {
        tags: session.tags(),
        removed,
        id: world.stored_name(session.id()),
    })
}
