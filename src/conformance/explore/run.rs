//! How each operation of the alphabet runs for real, on a thread of its own, in a world.

use super::alphabet::{Failed, Found, Kind, Op, Returned, User, Wrote, tag_of};
use super::states::Tagged;
use super::world::World;
use crate::archive::Blocking;
use crate::archive::block_on::block_on;
use crate::session::{CookieAction, Session, SessionId, Sessions, SwapOutcome};

impl Op {
    /// Runs the operation as operation number `me` of the schedule.
    pub(super) fn run<T: Tagged>(self, world: &World<T>, me: usize) -> Returned {
        let via = world.sessions(me, self.via);
        let s = &world.s;
        match self.kind {
            Kind::StartNew => {
                let mut session = via.new_session(T::initial());
                let write = write(self.kind, &mut session, (me, via.blocking()), world);
                Returned::Request {
                    start: Ok(None),
                    write: Some(write),
                }
            }
            Kind::Resume | Kind::ResumeTouch | Kind::ResumeExpired | Kind::ResumeAsync => {
                Returned::Start(start::<T>(via, s, self.kind).map(|(found, _)| found))
            }
            kind if kind.is_request() => match start::<T>(via, s, kind) {
                Ok((found, mut session)) => Returned::Request {
                    start: Ok(found),
                    write: Some(write(kind, &mut session, (me, via.blocking()), world)),
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

/// Starts `S` as `kind` does; what it found, and the handle.
fn start<T: Tagged>(
    via: &Sessions,
    s: &SessionId,
    kind: Kind,
) -> Result<(Found, Session<T>), Failed> {
    let started = if kind.starts_async() {
        start_async(via, s)?
    } else {
        None
    };
    let session = match started {
        Some(session) => session,
        None => via.start(Some(s.as_str()), T::initial())?,
    };
    let found = (!session.is_new()).then(|| {
        let user = session.user().map(str::to_owned);
        (session.tags(), user)
    });
    Ok((found, session))
}

/// The part of a start that a web layer runs on its async executor (as the axum layer's
/// extractor does): the read of a prefetch, awaited, and the decoding, where the archive reads
/// without a thread; a start that writes nothing, where its point reads do not wait; `None`
/// where the usual start must run (on a blocking thread, in a web layer).
fn start_async<T: Tagged>(via: &Sessions, s: &SessionId) -> Result<Option<Session<T>>, Failed> {
    let blocking = via.blocking();
    if blocking.reads_block() {
        let Some((id, prefetch)) = via.prefetch(Some(s.as_str())) else {
            return Ok(None);
        };
        let read = (prefetch.writes, block_on(prefetch.read)?);
        Ok(via.start_prefetched(id, read, T::initial())?.ok())
    } else if blocking.writes_block() {
        Ok(via
            .start_without_writing(Some(s.as_str()), T::initial())?
            .ok())
    } else {
        Ok(None)
    }
}

/// An update as a web layer runs it on its async executor (as the axum layer's `update` does):
/// queued and awaited where the archive waits for its commits without a thread, one swap from
/// the guess awaited where it has async paths, settled by a read when that swap's outcome is
/// unknown; and the usual `update_send` when neither serves or another write came first.
fn update_async<T: Tagged>(
    session: &mut Session<T>,
    blocking: Blocking,
    change: impl FnMut(&mut T) + Send + 'static,
) -> crate::error::Result<()> {
    let change = if blocking.writes_block() && !blocking.update_async_blocks() {
        match session.update_later(change) {
            Ok(mut later) => {
                let written = block_on(std::future::poll_fn(|cx| later.poll_written(cx)));
                return session.finish_update_later(later, written);
            }
            Err(change) => change,
        }
    } else {
        match session.swap_later(change) {
            Ok(mut later) => {
                let swapped = later.take_swap().map_or(Ok(false), block_on);
                match session.finish_swap_later(later, swapped) {
                    SwapOutcome::Done(done) => return Ok(done),
                    SwapOutcome::Unknown(unsettled, err) => {
                        return session.settle_swap(unsettled, err);
                    }
                    SwapOutcome::Again(change) => change,
                }
            }
            Err(change) => change,
        }
    };
    session.update_send(change)
}

/// A request's write through its handle.
fn write<T: Tagged>(
    kind: Kind,
    session: &mut Session<T>,
    (me, blocking): (usize, Blocking),
    world: &World<T>,
) -> Result<Wrote, Failed> {
    let tag = tag_of(me);
    if !(kind.is_update() || matches!(kind, Kind::RegenerateClean | Kind::Destroy)) {
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
        Kind::UpdateAsync => update_async(session, blocking, move |state: &mut T| state.tag(tag))?,
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
