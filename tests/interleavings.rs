//! The session protocol between operations: every pair of session operations that can meet on
//! one session, with the second run to completion at every archive-call boundary of the first,
//! in both orders, and the invariants checked after each schedule.
//!
//! A session operation is several archive calls. [`explore`] first runs operation A alone to
//! count its calls, then, for every `k` from 0 to that count, replays the scenario on a fresh
//! archive with operation B run whole just before A's `k`-th call (`k` = the count: after A).
//! The archive is a [`Hooked`] one, so B really runs between two of A's calls, on the same
//! archive, as a concurrent request would. Each scenario is checked both ways round, and on every
//! backend here: memory, redb and the directory tree.
//!
//! The invariants (see DESIGN.md, "The protocol holds between operations"):
//! - an `update` or `save` that returned `Ok` is never lost, unless a later write of the same
//!   session overwrote it;
//! - a successful `regenerate` leaves the old id dead, a failed one leaves the old session live
//!   and no copy behind, and of two regenerates exactly one wins;
//! - a `destroy` that returned `Ok` is final;
//! - a `start` racing a `destroy` leaves no timestamps of a destroyed session behind;
//! - authenticated state (set before a `regenerate`) is never stored under the old id;
//! - a handle whose session another request moved or destroyed does not touch the cookie.

#[path = "support/scheduler.rs"]
mod scheduler;
use scheduler::Scheduler;
#[path = "support/sha256.rs"]
mod sha256;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use session_archive::conformance::{Call, Hooked};
use session_archive::{
    Archive, ArchiveExt, CookieAction, Error, META_KEY, ManualClock, STATE_KEY, Session, SessionId,
    Sessions,
};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct State {
    name: String,
    n: u64,
}

type Outcome = Option<Result<(), String>>;

/// One request: a session handle and what its operation returned.
struct Request {
    session: Session<State>,
    outcome: Outcome,
}

impl Request {
    fn start(sessions: &Sessions, id: &str) -> Request {
        Request {
            session: sessions.start(Some(id), State::default()).expect("start"),
            outcome: None,
        }
    }

    fn record(&mut self, result: session_archive::Result<()>) {
        self.outcome = Some(result.map_err(|err| match err {
            Error::SessionGone { .. } => "gone".to_owned(),
            other => format!("{other}"),
        }));
    }

    fn ok(&self) -> bool {
        matches!(self.outcome, Some(Ok(())))
    }

    fn gone(&self) -> bool {
        matches!(&self.outcome, Some(Err(e)) if e == "gone")
    }
}

/// Every write to a session's state during one schedule, as (domain, bytes).
#[derive(Default)]
struct Writes(Mutex<Vec<(String, Vec<u8>)>>);

impl Writes {
    fn record(&self, call: &Call<'_>) {
        match *call {
            Call::Set {
                domain, key, value, ..
            }
            | Call::CompareAndSwap {
                domain,
                key,
                new: Some(value),
                ..
            } if key == STATE_KEY => {
                self.0
                    .lock()
                    .expect("an unpoisoned lock")
                    .push((domain.to_owned(), value.to_vec()));
            }
            Call::CompareAndSwapMany { domain, swaps } => {
                for (key, _, new) in swaps {
                    if let (true, Some(value)) = (*key == STATE_KEY, new) {
                        self.0
                            .lock()
                            .expect("an unpoisoned lock")
                            .push((domain.to_owned(), value.to_vec()));
                    }
                }
            }
            _ => {}
        }
    }
}

/// A backend: opens a fresh archive in a directory.
type Open = fn(&Path) -> Arc<dyn Archive>;

/// Whether the backend's run hashes ids at rest: ids then never name storage, and every
/// invariant must hold all the same.
fn hashed(backend: &str) -> bool {
    backend.ends_with("hashed")
}

/// What a check sees after one schedule.
struct World<'a> {
    sessions: &'a Sessions,
    archive: &'a dyn Archive,
    /// The session every scenario starts from.
    id: &'a str,
    writes: &'a [(String, Vec<u8>)],
    /// Where B ran: before A's call number `at`, or after A when `at` is A's call count.
    at: usize,
    hashed: bool,
}

impl World<'_> {
    /// The name `id` is stored under: itself, or with ids hashed at rest its SHA-256 (computed
    /// here independently of the crate).
    fn stored(&self, id: &str) -> String {
        if !self.hashed {
            return id.to_owned();
        }
        sha256::sha256_hex(id)
    }

    /// Which of `ids` name a live session.
    fn live(&self, ids: &[&str]) -> BTreeSet<String> {
        ids.iter()
            .filter(|id| {
                let id = SessionId::parse(id).expect("an id");
                self.sessions.is_live(&id).expect("is_live")
            })
            .map(|id| (*id).to_owned())
            .collect()
    }

    /// The stored names of session domains, live or not (leftover timestamps, copies, markers).
    fn session_domains(&self) -> BTreeSet<String> {
        self.archive
            .domains()
            .map(|d| d.expect("list domains"))
            .filter(|d| {
                SessionId::parse(d).is_some()
                    || (d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
            })
            .collect()
    }

    fn state(&self, id: &str) -> State {
        let bytes = self
            .archive
            .get(&self.stored(id), STATE_KEY)
            .expect("read the state")
            .expect("a state");
        serde_json::from_slice(&bytes).expect("a state that decodes")
    }
}

/// A scenario: builds the sessions and the two requests, then says what A and B do and what
/// must hold afterwards.
struct Scenario<A, B> {
    name: &'static str,
    setup: fn(&Sessions, &ManualClock, &dyn Archive, &str) -> (A, B),
    first: fn(&mut A),
    second: fn(&mut B),
    check: fn(&World<'_>, &A, &B),
}

const IDLE: u64 = 3600;
const START: u64 = 1_700_000_000;

/// Checks `scenario` with B at every call boundary of A; returns how many schedules it checked.
fn explore<A, B: Send + 'static>(backend: &str, open: Open, scenario: &Scenario<A, B>) -> usize {
    let mut at = 0;
    loop {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let inner = open(dir.path());
        let scheduler = Arc::new(Scheduler::default());
        let writes = Arc::new(Writes::default());
        let (hook, record) = (Arc::clone(&scheduler), Arc::clone(&writes));
        let archive: Arc<dyn Archive> = Arc::new(Hooked::new(Arc::clone(&inner), move |call| {
            record.record(call);
            hook.hook();
            Ok(())
        }));
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(START));
        let sessions = Sessions::builder(Arc::clone(&archive))
            .idle_timeout(Duration::from_secs(IDLE))
            .absolute_lifetime(None)
            .clock(clock.clone())
            .hash_ids_at_rest(hashed(backend))
            .build();
        let mut seed = sessions.start(None, State::default()).expect("start");
        seed.name = "anonymous".into();
        seed.save().expect("save the session both requests use");
        let id = seed.id().to_string();
        let (mut a, b) = (scenario.setup)(&sessions, &clock, &*archive, &id);

        let b = Arc::new(Mutex::new(Some(b)));
        let slot = Arc::clone(&b);
        let second = scenario.second;
        writes.0.lock().expect("an unpoisoned lock").clear();
        scheduler.arm(at, move || {
            let mut guard = slot.lock().expect("an unpoisoned lock");
            second(guard.as_mut().expect("B runs once"));
        });
        (scenario.first)(&mut a);
        // B has not run when A made `at` calls or fewer: then it runs after A, the last schedule.
        let last = !scheduler.finish();

        let b = b
            .lock()
            .expect("an unpoisoned lock")
            .take()
            .expect("B's request");
        let writes = writes.0.lock().expect("an unpoisoned lock").clone();
        let world = World {
            sessions: &sessions,
            archive: &*inner,
            id: &id,
            writes: &writes,
            at,
            hashed: hashed(backend),
        };
        (scenario.check)(&world, &a, &b);
        at += 1;
        if last {
            return at;
        }
    }
}

/// Explores a scenario and its mirror (B first, A inside it) and prints the count.
fn explore_both<X: Send + 'static, Y: Send + 'static>(
    backend: &str,
    open: Open,
    scenario: &Scenario<X, Y>,
    mirror: &Scenario<Y, X>,
) {
    let forward = explore(backend, open, scenario);
    let backward = explore(backend, open, mirror);
    println!(
        "{backend}: {}: {forward} schedules, {}: {backward} schedules",
        scenario.name, mirror.name
    );
    assert!(forward > 1 && backward > 1, "each order was interleaved");
}

/// Two requests that both started from the session before either acted.
fn two(sessions: &Sessions, _: &ManualClock, _: &dyn Archive, id: &str) -> (Request, Request) {
    (Request::start(sessions, id), Request::start(sessions, id))
}

fn swap<A, B>(pair: (A, B)) -> (B, A) {
    (pair.1, pair.0)
}

fn regenerate(r: &mut Request) {
    let result = r.session.regenerate();
    r.record(result);
}

/// The login pattern: authenticate in the handle, then regenerate, with no save before it.
fn login(r: &mut Request) {
    r.session.name = "alice".into();
    let result = r.session.regenerate();
    r.record(result);
}

fn update(r: &mut Request) {
    let result = r.session.update(|s| s.n += 1);
    r.record(result);
}

/// An update whose change the archive may run inside its own write (on redb, in a commit).
fn update_send(r: &mut Request) {
    let result = r.session.update_send(|s| s.n += 1);
    r.record(result);
}

fn save_bob(r: &mut Request) {
    r.session.name = "bob".into();
    let result = r.session.save();
    r.record(result);
}

fn destroy(r: &mut Request) {
    let result = r.session.destroy();
    r.record(result);
}

/// After a regenerate that must have succeeded: the old id is dead, the new one is the only live
/// session, and nothing else (no copy, no old domain) is left.
fn moved_alone(w: &World<'_>, regenerated: &Request) -> State {
    assert!(regenerated.ok(), "at {}: {:?}", w.at, regenerated.outcome);
    let new = regenerated.session.id().to_string();
    assert_ne!(new, w.id);
    assert_eq!(
        w.live(&[w.id, &new]),
        BTreeSet::from([new.clone()]),
        "at {}",
        w.at
    );
    assert_eq!(
        w.session_domains(),
        BTreeSet::from([w.stored(&new)]),
        "at {}: a copy or the old domain was left",
        w.at
    );
    assert_eq!(regenerated.session.cookie_action(), CookieAction::Set);
    w.state(&new)
}

/// A write that lost to a regenerate or destroy fails as gone and leaves the cookie alone.
fn lost_cleanly(w: &World<'_>, r: &Request) {
    assert!(r.gone(), "at {}: {:?}", w.at, r.outcome);
    assert_eq!(r.session.cookie_action(), CookieAction::Keep, "at {}", w.at);
}

fn check_regenerate_update(w: &World<'_>, regenerated: &Request, updated: &Request) {
    let state = moved_alone(w, regenerated);
    if updated.ok() {
        assert_eq!(state.n, 1, "at {}: an acknowledged update was lost", w.at);
    } else {
        lost_cleanly(w, updated);
        assert_eq!(state.n, 0, "at {}", w.at);
    }
}

fn check_login_update(w: &World<'_>, logged_in: &Request, updated: &Request) {
    let state = moved_alone(w, logged_in);
    assert_eq!(state.name, "alice", "at {}", w.at);
    if !updated.ok() {
        lost_cleanly(w, updated);
    }
    for (domain, bytes) in w.writes {
        assert!(
            *domain != w.stored(w.id) || !String::from_utf8_lossy(bytes).contains("alice"),
            "at {}: authenticated state was stored under the pre-login id",
            w.at
        );
    }
}

fn check_regenerate_save(w: &World<'_>, regenerated: &Request, saved: &Request) {
    let state = moved_alone(w, regenerated);
    if saved.ok() {
        assert_eq!(
            state.name, "bob",
            "at {}: an acknowledged save was lost",
            w.at
        );
    } else {
        lost_cleanly(w, saved);
        assert_eq!(state.name, "anonymous", "at {}", w.at);
    }
}

fn check_regenerate_destroy(w: &World<'_>, regenerated: &Request, destroyed: &Request) {
    assert!(destroyed.ok(), "at {}: {:?}", w.at, destroyed.outcome);
    match destroyed.session.cookie_action() {
        // The destroy removed the session: it is final, the regenerate lost, no copy is left.
        CookieAction::Remove => {
            lost_cleanly(w, regenerated);
            let ids = [w.id, regenerated.session.id().as_str()];
            assert!(w.live(&ids).is_empty(), "at {}", w.at);
            assert!(w.session_domains().is_empty(), "at {}", w.at);
        }
        // The regenerate moved it first: the stale id had nothing left to remove.
        _ => {
            moved_alone(w, regenerated);
        }
    }
}

fn check_regenerate_regenerate(w: &World<'_>, one: &Request, other: &Request) {
    assert!(
        one.ok() != other.ok(),
        "at {}: exactly one regenerate wins: {:?} {:?}",
        w.at,
        one.outcome,
        other.outcome
    );
    let (winner, loser) = if one.ok() { (one, other) } else { (other, one) };
    moved_alone(w, winner);
    lost_cleanly(w, loser);
    assert_eq!(
        loser.session.id().as_str(),
        w.id,
        "the loser stays on the old id"
    );
}

fn check_destroy_update(w: &World<'_>, destroyed: &Request, updated: &Request) {
    assert!(destroyed.ok(), "at {}: {:?}", w.at, destroyed.outcome);
    assert_eq!(destroyed.session.cookie_action(), CookieAction::Remove);
    if !updated.ok() {
        lost_cleanly(w, updated);
    }
    assert!(
        w.live(&[w.id]).is_empty(),
        "at {}: the destroy was not final",
        w.at
    );
    assert!(w.session_domains().is_empty(), "at {}", w.at);
}

/// A test that runs `$first` with `$second` at every call boundary of it, and the mirror
/// (`$second` first, `$first` inside it), on every backend, checking `$check` after each.
macro_rules! race {
    ($name:ident, $setup:expr, $first:expr, $second:expr, $check:expr) => {
        #[test]
        fn $name() {
            for (backend, open) in backends() {
                explore_both(
                    backend,
                    open,
                    &Scenario {
                        name: concat!(stringify!($first), " then ", stringify!($second), " inside"),
                        setup: $setup,
                        first: $first,
                        second: $second,
                        check: $check,
                    },
                    &Scenario {
                        name: concat!(stringify!($second), " then ", stringify!($first), " inside"),
                        setup: |s, c, a, id| swap(($setup)(s, c, a, id)),
                        first: $second,
                        second: $first,
                        check: |w, b, a| ($check)(w, a, b),
                    },
                );
            }
        }
    };
}

fn backends() -> Vec<(&'static str, Open)> {
    vec![
        (
            "memory",
            |_| Arc::new(session_archive::MemoryArchive::new()),
        ),
        ("memory, ids hashed", |_| {
            Arc::new(session_archive::MemoryArchive::new())
        }),
        #[cfg(feature = "archive-redb")]
        ("redb", |dir| {
            Arc::new(session_archive::RedbArchive::open(dir.join("sessions.redb")).expect("open"))
        }),
        #[cfg(all(feature = "archive-dir", unix))]
        ("dir", |dir| {
            Arc::new(session_archive::DirArchive::open(dir.join("sessions")).expect("open"))
        }),
    ]
}

race!(
    regenerate_x_update,
    two,
    regenerate,
    update,
    check_regenerate_update
);
race!(login_x_update, two, login, update, check_login_update);
race!(
    regenerate_x_save,
    two,
    regenerate,
    save_bob,
    check_regenerate_save
);
race!(
    regenerate_x_destroy,
    two,
    regenerate,
    destroy,
    check_regenerate_destroy
);
race!(
    regenerate_x_regenerate,
    two,
    regenerate,
    regenerate,
    check_regenerate_regenerate
);
race!(destroy_x_update, two, destroy, update, check_destroy_update);
race!(
    regenerate_x_update_send,
    two,
    regenerate,
    update_send,
    check_regenerate_update
);
race!(
    login_x_update_send,
    two,
    login,
    update_send,
    check_login_update
);
race!(
    destroy_x_update_send,
    two,
    destroy,
    update_send,
    check_destroy_update
);

/// A `start` that reads a session while a `destroy` removes it.
struct Starting {
    sessions: Sessions,
    id: String,
    started: Option<Session<State>>,
}

fn start(s: &mut Starting) {
    s.started = Some(
        s.sessions
            .start(Some(&s.id), State::default())
            .expect("start"),
    );
}

/// The start must refresh the session's timestamps (so it writes), or adopt a session stored
/// without any (the original framework's).
fn aged(
    sessions: &Sessions,
    clock: &ManualClock,
    _: &dyn Archive,
    id: &str,
) -> (Starting, Request) {
    let request = Request::start(sessions, id);
    clock.advance(Duration::from_secs(IDLE / 2));
    let starting = Starting {
        sessions: sessions.clone(),
        id: id.to_owned(),
        started: None,
    };
    (starting, request)
}

fn legacy(
    sessions: &Sessions,
    clock: &ManualClock,
    archive: &dyn Archive,
    id: &str,
) -> (Starting, Request) {
    let pair = aged(sessions, clock, archive, id);
    // Under the id, or under its hash where ids are hashed at rest: the other is absent.
    for stored in [id.to_owned(), sha256::sha256_hex(id)] {
        archive
            .remove(&stored, META_KEY)
            .expect("drop the timestamps");
    }
    assert!(
        !archive.has(id, META_KEY).expect("read")
            && !archive
                .has(&sha256::sha256_hex(id), META_KEY)
                .expect("read"),
        "the session has no timestamps"
    );
    pair
}

fn check_start_destroy(w: &World<'_>, starting: &Starting, destroyed: &Request) {
    assert!(destroyed.ok(), "at {}: {:?}", w.at, destroyed.outcome);
    assert!(
        w.live(&[w.id]).is_empty(),
        "at {}: the destroy was not final",
        w.at
    );
    assert!(
        w.session_domains().is_empty(),
        "at {}: a destroyed session's timestamps were written back",
        w.at
    );
    let started = starting.started.as_ref().expect("started");
    if started.is_new() {
        assert_ne!(
            started.id().as_str(),
            w.id,
            "a dead id is never handed back"
        );
        assert_eq!(started.cookie_action(), CookieAction::Keep);
    }
}

#[test]
fn start_x_destroy() {
    for (backend, open) in backends() {
        type Setup = fn(&Sessions, &ManualClock, &dyn Archive, &str) -> (Starting, Request);
        for (label, setup) in [("aged", aged as Setup), ("legacy", legacy as Setup)] {
            explore_both(
                backend,
                open,
                &Scenario {
                    name: if label == "aged" {
                        "start (refreshing) then destroy inside"
                    } else {
                        "start (adopting) then destroy inside"
                    },
                    setup,
                    first: start,
                    second: destroy,
                    check: check_start_destroy,
                },
                &Scenario {
                    name: "destroy then start inside",
                    setup: match label {
                        "aged" => |s, c, a, id| swap(aged(s, c, a, id)),
                        _ => |s, c, a, id| swap(legacy(s, c, a, id)),
                    },
                    first: destroy,
                    second: start,
                    check: |w, d, s| check_start_destroy(w, s, d),
                },
            );
        }
    }
}

/// A sweep that finds the session expired, and a request that saves it with a handle from
/// before it expired.
struct Sweeping {
    sessions: Sessions,
    removed: Option<usize>,
}

fn sweep(s: &mut Sweeping) {
    s.removed = Some(s.sessions.sweep().expect("sweep"));
}

fn expired(
    sessions: &Sessions,
    clock: &ManualClock,
    _: &dyn Archive,
    id: &str,
) -> (Sweeping, Request) {
    let request = Request::start(sessions, id);
    clock.advance(Duration::from_secs(IDLE + 1));
    let sweeping = Sweeping {
        sessions: sessions.clone(),
        removed: None,
    };
    (sweeping, request)
}

/// An expired session is dead: a save or regenerate through a handle held past the expiry fails
/// as gone rather than bringing the session back (under its id or a new one), whether the sweep
/// removed it before or after.
fn check_sweep(w: &World<'_>, swept: &Sweeping, request: &Request) {
    lost_cleanly(w, request);
    let ids = [w.id, request.session.id().as_str()];
    assert!(
        w.live(&ids).is_empty(),
        "at {}: an expired session came back",
        w.at
    );
    assert!(swept.removed.expect("swept") <= 1);
    assert!(
        w.session_domains().is_empty(),
        "at {}: {:?}",
        w.at,
        w.session_domains()
    );
}

race!(sweep_x_save, expired, sweep, save_bob, check_sweep);

race!(sweep_x_regenerate, expired, sweep, regenerate, check_sweep);

/// A revoke of the user the session is bound to, racing a request on that session.
struct Revoking {
    sessions: Sessions,
    revoked: Option<usize>,
}

fn revoke_alice(r: &mut Revoking) {
    r.revoked = Some(r.sessions.revoke_user("alice").expect("revoke"));
}

/// The session bound to alice, a revoke of alice, and a request that started on the session.
fn bound(sessions: &Sessions, _: &ManualClock, _: &dyn Archive, id: &str) -> (Revoking, Request) {
    let mut binder = Request::start(sessions, id);
    binder.session.set_user(Some("alice"));
    binder.session.save().expect("bind the session to alice");
    let request = Request::start(sessions, id);
    let revoking = Revoking {
        sessions: sessions.clone(),
        revoked: None,
    };
    (revoking, request)
}

fn rebind_to_bob(r: &mut Request) {
    r.session.set_user(Some("bob"));
    let result = r.session.save();
    r.record(result);
}

fn rebind_to_alice(r: &mut Request) {
    r.session.set_user(Some("alice"));
    r.session.n += 1;
    let result = r.session.save();
    r.record(result);
}

fn alice_sessions(w: &World<'_>) -> usize {
    w.sessions.user_sessions("alice").count()
}

/// A revoke is final: nothing bound to alice survives it, under the old id or a new one; and the
/// index never misses a live session of anyone.
fn check_revoke(w: &World<'_>, revoking: &Revoking, request: &Request) {
    let revoked = revoking.revoked.expect("revoked");
    let ids = [w.id, request.session.id().as_str()];
    let live = w.live(&ids);
    for id in &live {
        let session = w
            .sessions
            .start(Some(id), State::default())
            .expect("start a live session");
        assert_ne!(
            session.user(),
            Some("alice"),
            "at {}: a session of alice survived the revoke",
            w.at
        );
        if let Some(user) = session.user() {
            let listed: Vec<String> = w
                .sessions
                .user_sessions(user)
                .map(|s| s.expect("list").id().to_string())
                .collect();
            assert!(
                listed.iter().any(|l| *l == w.stored(id)),
                "at {}: the index misses a live session of {user}",
                w.at
            );
        }
    }
    assert_eq!(alice_sessions(w), 0, "at {}", w.at);
    // A session caught between a regenerate's copy and its move counts with its copy.
    assert!(revoked <= 2, "at {}", w.at);
    if request.ok() && live.is_empty() {
        // The request landed before the revoke, which then destroyed its session.
        assert_eq!(revoked, 1, "at {}", w.at);
    }
    if !request.ok() {
        lost_cleanly(w, request);
    }
}

race!(
    revoke_user_x_regenerate,
    bound,
    revoke_alice,
    regenerate,
    check_revoke
);
race!(
    revoke_user_x_update,
    bound,
    revoke_alice,
    update,
    check_revoke
);
race!(
    revoke_user_x_update_send,
    bound,
    revoke_alice,
    update_send,
    check_revoke
);
race!(
    revoke_user_x_set_user_bob,
    bound,
    revoke_alice,
    rebind_to_bob,
    check_revoke
);
race!(
    revoke_user_x_set_user_alice,
    bound,
    revoke_alice,
    rebind_to_alice,
    check_revoke
);

/// A revoke and a destroy of the same session: whichever lands first removes it, both return
/// `Ok`, and nothing of the session is left.
fn check_revoke_destroy(w: &World<'_>, revoking: &Revoking, destroyed: &Request) {
    assert!(destroyed.ok(), "at {}: {:?}", w.at, destroyed.outcome);
    assert!(revoking.revoked.expect("revoked") <= 1, "at {}", w.at);
    assert!(w.live(&[w.id]).is_empty(), "at {}", w.at);
    assert_eq!(alice_sessions(w), 0, "at {}", w.at);
    assert!(
        w.session_domains().is_empty(),
        "at {}: {:?}",
        w.at,
        w.session_domains()
    );
}

race!(
    revoke_user_x_destroy,
    bound,
    revoke_alice,
    destroy,
    check_revoke_destroy
);

/// An operator's `adopt_legacy` run while a request starts the same timestamp-less session.
struct Adopting {
    sessions: Sessions,
    adopted: Option<usize>,
}

fn adopt(a: &mut Adopting) {
    a.adopted = Some(a.sessions.adopt_legacy(|_| {}).expect("adopt_legacy"));
}

fn legacy_and_adopting(
    sessions: &Sessions,
    clock: &ManualClock,
    archive: &dyn Archive,
    id: &str,
) -> (Starting, Adopting) {
    let (starting, _) = legacy(sessions, clock, archive, id);
    let adopting = Adopting {
        sessions: sessions.clone(),
        adopted: None,
    };
    (starting, adopting)
}

/// Whichever adopts the session first, it stays the same live session, keeps its state, and
/// ends with timestamps and an expiry-index entry covering them: never live and unsweepable.
fn check_start_adopt(w: &World<'_>, starting: &Starting, adopting: &Adopting) {
    let started = starting.started.as_ref().expect("started");
    assert!(
        !started.is_new(),
        "at {}: the legacy session was lost",
        w.at
    );
    assert_eq!(started.id().as_str(), w.id, "at {}", w.at);
    assert_eq!(w.live(&[w.id]).len(), 1, "at {}", w.at);
    assert!(adopting.adopted.expect("adopted") <= 1, "at {}", w.at);
    let stored = w.stored(w.id);
    assert!(
        w.archive.get(&stored, META_KEY).expect("read").is_some(),
        "at {}: no timestamps",
        w.at
    );
    let indexed = w
        .archive
        .domains()
        .map(|d| d.expect("list domains"))
        .filter(|d| d.starts_with("expiry-"))
        .any(|d| w.archive.has(&d, &stored).expect("has"));
    assert!(indexed, "at {}: a live session no sweep can find", w.at);
}

race!(
    adopt_legacy_x_start,
    legacy_and_adopting,
    start,
    adopt,
    check_start_adopt
);
