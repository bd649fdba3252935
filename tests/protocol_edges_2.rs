//! Edges of the session protocol that a second adversarial review found broken (after the fixes
//! tested in `tests/protocol_edges.rs`), each now a regression test: it forces one schedule, or
//! injects one failure, through `conformance::Hooked`, and failed before the fix. Each doc
//! comment gives the schedule and the invariant that was broken.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use session_archive::conformance::{Call, Hooked};
use session_archive::session::{CookieAction, STATE_KEY};
use session_archive::{Archive, Error, ManualClock, MemoryArchive, SessionId, Sessions};

type Job = Box<dyn FnOnce() + Send>;

const T0: u64 = 1_700_000_000;

fn clock() -> ManualClock {
    ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(T0))
}

fn injected() -> Error {
    Error::Backend {
        backend: "test",
        operation: "write",
        source: "reply lost (the write was applied)".into(),
    }
}

fn is_move(swaps: &[session_archive::archive::Swap<'_>]) -> bool {
    swaps.iter().any(|(key, _, new)| {
        *key == STATE_KEY && new.is_some_and(|new| new.starts_with(b"\0moved:"))
    })
}

/// A session stored bound to `user` holding `state`; returns its id.
fn saved_for(sessions: &Sessions, user: &str, state: &str) -> SessionId {
    let mut session = sessions.start(None, state.to_owned()).expect("start");
    session.set_user(Some(user));
    session.save().expect("save");
    session.id().clone()
}

/// A `Sessions` over `inner` (with `clock` and an idle timeout, when given) whose hook runs `job` (once) just before the first archive call
/// that `when` picks.
fn hooked_once(
    inner: &Arc<MemoryArchive>,
    clock: Option<(&ManualClock, Option<Duration>)>,
    when: impl Fn(&Call<'_>) -> bool + Send + Sync + 'static,
) -> (Sessions, Arc<Mutex<Option<Job>>>) {
    let slot: Arc<Mutex<Option<Job>>> = Arc::default();
    let hook_slot = Arc::clone(&slot);
    let archive = Hooked::new(Arc::clone(inner), move |call| {
        if when(call) {
            let job = hook_slot.lock().expect("the slot").take();
            if let Some(job) = job {
                job();
            }
        }
        Ok(())
    });
    let mut builder = Sessions::builder(archive);
    if let Some((clock, idle)) = clock {
        builder = builder.clock(clock.clone());
        if let Some(idle) = idle {
            builder = builder.idle_timeout(idle);
        }
    }
    (builder.build(), slot)
}

/// **Invariant 6: a regenerate whose move lands after the idle timeout revives the session.**
///
/// `regenerate` checks expiry first (`ensure_unexpired`), then makes the copy (with `seen` =
/// now) and moves: a check followed by a write. The move's compare-and-swap expects the old
/// record, but nothing judges that record's expiry at the move, as `write_bound` does for a
/// bound write and `touch` for a touch. So a session whose idle timeout passes between the
/// check and the move lives on under the new id, for a whole new idle timeout.
///
/// Schedule (idle timeout 600 s): S saved at t, R1 starts it at t (no touch due). At t+599 R1
/// calls `regenerate()`: the check passes, the copy is stored; the clock reaches t+601 before the
/// move's compare-and-swap, which lands. At t+601 S had expired, yet the session is resumed under
/// the copy's id. (DESIGN.md: "The linearization point of each operation is one
/// compare-and-swap, not a check followed by a write"; the same schedule for `update` is the
/// fixed `an_update_landing_after_the_idle_timeout_does_not_revive_the_session`.)
#[test]
fn a_regenerate_landing_after_the_idle_timeout_does_not_revive_the_session() {
    let inner = Arc::new(MemoryArchive::new());
    let clock = clock();
    let plain = Sessions::builder(Arc::clone(&inner))
        .idle_timeout(Duration::from_secs(600))
        .clock(clock.clone())
        .build();
    let (hooked, slot) = hooked_once(
        &inner,
        Some((&clock, Some(Duration::from_secs(600)))),
        |call| matches!(*call, Call::CompareAndSwapMany { swaps, .. } if is_move(swaps)),
    );
    let mut first = plain.start(None, 7_u32).unwrap();
    first.save().unwrap();
    let s = first.id().clone();

    let mut r1 = hooked.start(Some(s.as_str()), 0_u32).unwrap();
    assert_eq!(r1.id(), &s);
    clock.advance(Duration::from_secs(599));
    let ticking = clock.clone();
    *slot.lock().unwrap() = Some(Box::new(move || ticking.advance(Duration::from_secs(2))));
    let result = r1.regenerate();
    assert!(slot.lock().unwrap().is_none(), "the move ran");

    // Now t+601: the session's idle timeout passed before its move landed.
    let again = plain.start(Some(r1.id().as_str()), 0_u32).unwrap();
    assert!(
        again.id() != r1.id(),
        "a session past its idle timeout at its move is resumed under the new id \
         (regenerate returned {result:?})"
    );
}

/// **Invariant 4: a start hands out a state with a binding no write stored with it.**
///
/// `Store::start` reads the record and state as a pair (`read_pair`), then touches when due. When
/// the touch's compare-and-swap loses to another write, `touch` reads the record again and hands
/// it back, and the handle is built from the state of the pair and this newer record. A rebinding
/// write in that gap gives a handle whose `user()` is the new binding and whose state is the old
/// one.
///
/// Schedule (idle 24 h, so a touch is due after 3 h): S holds "alice's", bound to alice, saved at
/// t. At t+4h R3 starts S: it reads the pair (alice, "alice's"); just before its touch's
/// compare-and-swap of the record, R2 starts S, `set_user(Some("bob"))`, state "bob's", saves
/// (Ok). R3's touch fails and re-reads the record (bob).
#[test]
fn a_start_whose_touch_loses_never_pairs_the_old_state_with_the_new_binding() {
    use session_archive::session::META_KEY;
    let inner = Arc::new(MemoryArchive::new());
    let clock = clock();
    let plain = Sessions::builder(Arc::clone(&inner))
        .clock(clock.clone())
        .build();
    let s = saved_for(&plain, "alice", "alice's");
    clock.advance(Duration::from_secs(4 * 3600));

    let (hooked, slot) = hooked_once(
        &inner,
        Some((&clock, None)),
        |call| matches!(*call, Call::CompareAndSwap { key, .. } if key == META_KEY),
    );
    let (r2_sessions, r2_id) = (plain.clone(), s.clone());
    *slot.lock().unwrap() = Some(Box::new(move || {
        let mut r2 = r2_sessions
            .start(Some(r2_id.as_str()), String::new())
            .unwrap();
        assert_eq!(r2.id(), &r2_id);
        r2.set_user(Some("bob"));
        *r2 = "bob's".to_owned();
        r2.save().expect("R2 rebinds to bob");
    }));
    let r3 = hooked.start(Some(s.as_str()), String::new()).unwrap();
    assert!(slot.lock().unwrap().is_none(), "R2 ran before R3's touch");
    assert_eq!(r3.id(), &s);
    let seen = (r3.user().map(str::to_owned), (*r3).clone());
    assert!(
        seen == (Some("alice".into()), "alice's".into())
            || seen == (Some("bob".into()), "bob's".into()),
        "the handle pairs state and binding no write stored: {seen:?}"
    );
}

/// **Invariant 6: a sweep ends a session live to the application, once any `Sessions` with
/// shorter timeouts has written.**
///
/// The sweep judges by the longer of its own and the *recorded* timeouts, and the record holds
/// the timeouts of whichever `Sessions` recorded last: each process records once, on its first
/// index write (`settings_recorded`), and never again. So an admin `Sessions` with a 1 h idle
/// timeout that writes anything (here: it stores one session of its own; resuming a user's
/// session with a touch due does the same) replaces the application's 24 h in the record for
/// good, and its own sweep then judges by 1 h. `Sessions::sweep` documents: "an admin
/// `Sessions` with shorter timeouts never ends a session that the application still resumes".
///
/// Schedule: the app saves S at t; the admin (idle 1 h) stores a session at t+1s; the app resumes
/// S at t+22h (touch); the admin sweeps at t+24h+2min.
#[test]
fn a_sweep_never_ends_a_live_session_after_an_admin_with_shorter_timeouts_wrote() {
    let archive = Arc::new(MemoryArchive::new());
    let clock = clock();
    let app = Sessions::builder(Arc::clone(&archive))
        .clock(clock.clone())
        .build();
    let admin = Sessions::builder(Arc::clone(&archive))
        .idle_timeout(Duration::from_secs(3600))
        .clock(clock.clone())
        .build();
    let mut session = app.start(None, 1_u32).unwrap();
    session.save().unwrap();
    let id = session.id().clone();

    clock.advance(Duration::from_secs(1));
    admin.start(None, 0_u32).unwrap().save().unwrap();

    clock.advance(Duration::from_secs(22 * 3600));
    let resumed = app.start(Some(id.as_str()), 0_u32).unwrap();
    assert_eq!(resumed.id(), &id);
    clock.advance(Duration::from_secs(2 * 3600 + 120));
    assert!(app.is_live(&id).unwrap(), "live to the app");
    let recorded = admin.stored_settings().unwrap();
    let swept = admin.sweep().unwrap();
    assert!(
        app.is_live(&id).unwrap(),
        "the admin's sweep ({swept} removed; recorded settings {recorded:?}) ended a session \
         the app still resumes"
    );
}

/// **Boundedness ("a tool sweeping with other settings stays bounded and correct"): a sweep by a
/// `Sessions` without timeouts drops the index entries of the application's expired sessions,
/// which are then never removed.**
///
/// `Lifetime::or_longer` of "no timeouts" and the recorded ones is "no timeouts", so the
/// verdict on every entry the tool's sweep visits is `Drop` (the session "never expires"):
/// the entry is removed, the session is not, and the sweep moves `swept` past its bucket. The
/// application's own sweeps never find the session again; an abandoned session (the usual case)
/// stays in the archive for ever.
///
/// Schedule (app idle 600 s): S saved at t; at t+700 (S expired) a tool with no timeouts
/// sweeps; then the app sweeps.
#[test]
fn a_sweep_without_timeouts_leaves_the_apps_index_alone() {
    let archive = Arc::new(MemoryArchive::new());
    let clock = clock();
    let app = Sessions::builder(Arc::clone(&archive))
        .idle_timeout(Duration::from_secs(600))
        .clock(clock.clone())
        .build();
    let tool = Sessions::builder(Arc::clone(&archive))
        .idle_timeout(None)
        .absolute_lifetime(None)
        .clock(clock.clone())
        .build();
    let mut session = app.start(None, 1_u32).unwrap();
    session.save().unwrap();
    let id = session.id().clone();

    clock.advance(Duration::from_secs(700));
    let by_tool = tool.sweep().unwrap();
    let by_app = app.sweep().unwrap();
    clock.advance(Duration::from_secs(3600));
    let later = app.sweep().unwrap();
    assert!(
        !archive.has_domain(id.as_str()).unwrap(),
        "the app's expired session is never swept (tool removed {by_tool}, app {by_app}, \
         then {later})"
    );
}

/// **Boundedness, as above: a sweep by a `Sessions` with ids hashed at rest drops the index
/// entries of sessions stored under plain ids (a rolling switch to hashing, or an admin tool
/// built with it), which the application's sweeps then never remove.**
///
/// The sweep reads the record of an entry's session through the hashing view: a plain id is
/// hashed again, nothing is found there, and the verdict is `Drop`. The listing was fixed for
/// the same mix (`a_listing_with_hashed_ids_does_not_drop_entries_of_plain_sessions`); the sweep
/// was not.
///
/// Schedule (idle 600 s for both): the app (plain ids) saves S at t; at t+700 the hashing
/// `Sessions` sweeps; then the app sweeps.
#[test]
fn a_sweep_with_hashed_ids_sweeps_plain_sessions_too() {
    let archive = Arc::new(MemoryArchive::new());
    let clock = clock();
    let app = Sessions::builder(Arc::clone(&archive))
        .idle_timeout(Duration::from_secs(600))
        .clock(clock.clone())
        .build();
    let hashing = Sessions::builder(Arc::clone(&archive))
        .idle_timeout(Duration::from_secs(600))
        .hash_ids_at_rest(true)
        .clock(clock.clone())
        .build();
    let mut session = app.start(None, 1_u32).unwrap();
    session.save().unwrap();
    let id = session.id().clone();

    clock.advance(Duration::from_secs(700));
    let by_hashing = hashing.sweep().unwrap();
    let by_app = app.sweep().unwrap();
    assert!(
        !archive.has_domain(id.as_str()).unwrap(),
        "the app's expired session is never swept (hashing sweep removed {by_hashing}, app \
         {by_app})"
    );
}

/// **Invariants 2 and 3: a revoke by a `Sessions` with ids hashed at rest answers Ok and leaves
/// the user's plain-id sessions live.**
///
/// `judge` answers `Entry::Other` for an entry naming a plain id when ids are hashed (fixed so
/// that a listing does not drop such entries), and `revoke_one` then skips it: the revoke
/// returns Ok(0). The application (plain ids, or instances not yet switched in a rolling switch
/// to hashing) still resumes the session. `revoke_user` documents "every stored session bound
/// to the user is destroyed"; after a password change this leaves the attacker's session.
///
/// Schedule: the app (plain ids) binds S to alice; a `Sessions` with `hash_ids_at_rest(true)`
/// revokes alice.
#[test]
fn a_revoke_with_hashed_ids_ends_plain_sessions_too() {
    let archive = Arc::new(MemoryArchive::new());
    let app = Sessions::new(Arc::clone(&archive));
    let hashing = Sessions::builder(Arc::clone(&archive))
        .hash_ids_at_rest(true)
        .build();
    let id = saved_for(&app, "alice", "state");
    let revoked = hashing.revoke_user("alice").expect("revoke");
    assert!(
        !app.is_live(&id).unwrap(),
        "revoke_user(alice) answered Ok({revoked}) and alice's session lives on"
    );
}

/// **Invariant 5: a destroy whose swap was applied, but answered with an error (a timed-out
/// Redis command), is reported as failed and "not destroyed"; the retry its docs invite then
/// answers Ok without asking to remove the cookie, and leaves the record and the user index
/// entry that a destroy forgets.**
///
/// `Session::destroy` documents: "The archive's errors; the session is then not destroyed, and
/// the handle still counts as live, so the call can be repeated." Its swap of the state to
/// nothing is not read back (as the regenerate's move is, by the fence).
///
/// Schedule: S bound to alice; R1 destroys it; the storage applies the swap and answers an
/// error; R1 repeats the destroy, as documented.
#[test]
fn a_destroy_answered_with_an_error_after_it_landed_is_whole() {
    let inner = Arc::new(MemoryArchive::new());
    let plain = Sessions::new(Arc::clone(&inner));
    let s = saved_for(&plain, "alice", "state");
    let armed = Arc::new(AtomicBool::new(false));
    let (hook_armed, hook_inner) = (Arc::clone(&armed), Arc::clone(&inner));
    let hooked = Sessions::new(Hooked::new(Arc::clone(&inner), move |call| {
        if let Call::CompareAndSwap {
            domain,
            key,
            expected,
            new: None,
        } = *call
            && key == STATE_KEY
            && hook_armed.swap(false, Ordering::SeqCst)
        {
            hook_inner
                .compare_and_swap(domain, key, expected, None)
                .unwrap();
            return Err(injected());
        }
        Ok(())
    }));
    let mut r1 = hooked.start(Some(s.as_str()), String::new()).unwrap();
    armed.store(true, Ordering::SeqCst);
    let first = r1.destroy();
    if first.is_ok() {
        // Read back: the swap had landed, and the destroy says so.
        assert!(
            !plain.is_live(&s).unwrap(),
            "destroy answered Ok, yet the session lives"
        );
        assert_eq!(r1.cookie_action(), CookieAction::Remove);
        return;
    }
    let still_live = plain.is_live(&s).unwrap();
    let retry = r1.destroy();
    assert!(
        still_live && retry.is_ok() || (!still_live && r1.cookie_action() == CookieAction::Remove),
        "destroy answered {first:?} (docs: not destroyed), the session is live: {still_live}; \
         the retry answered {retry:?} with cookie action {:?}",
        r1.cookie_action()
    );
}

/// **Invariant 5 (and 1): an update whose swap was applied, but answered with an error, fails;
/// a caller that retries applies it twice.**
///
/// `swap_state` returns the compare-and-swap's error as is. `update`'s docs say nothing of an
/// unknown outcome (and the earlier fix `a_plain_update_is_whole_when_its_touch_fails` holds
/// update to "answered Ok with the change stored, or failed without it").
///
/// Schedule: S holds 0; R1 `update(|n| *n += 1)`; the storage applies the swap and answers an
/// error.
#[test]
fn an_update_answered_with_an_error_after_it_landed_is_whole() {
    let inner = Arc::new(MemoryArchive::new());
    let plain = Sessions::new(Arc::clone(&inner));
    let mut first = plain.start(None, 0_u32).unwrap();
    first.save().unwrap();
    let s = first.id().clone();
    let armed = Arc::new(AtomicBool::new(false));
    let (hook_armed, hook_inner) = (Arc::clone(&armed), Arc::clone(&inner));
    let hooked = Sessions::new(Hooked::new(Arc::clone(&inner), move |call| {
        if let Call::CompareAndSwap {
            domain,
            key,
            expected,
            new: Some(new),
        } = *call
            && key == STATE_KEY
            && hook_armed.swap(false, Ordering::SeqCst)
        {
            hook_inner
                .compare_and_swap(domain, key, expected, Some(new))
                .unwrap();
            return Err(injected());
        }
        Ok(())
    }));
    let mut r1 = hooked.start(Some(s.as_str()), 0_u32).unwrap();
    armed.store(true, Ordering::SeqCst);
    let result = r1.update(|n| *n += 1);
    let stored = *plain.start(Some(s.as_str()), 0_u32).unwrap();
    assert_eq!(
        stored,
        u32::from(result.is_ok()),
        "update returned {result:?}, and the store holds {stored}"
    );
}

/// **Invariant 5 (and the cookie rule "a failed operation leaves things as they were"): a
/// regenerate that fails before its move withdraws the cookie of the session the same handle
/// just created.**
///
/// On any error but `SessionGone`, `Session::regenerate` sets the cookie action to `Keep`,
/// whatever it was. After a first `save` (which stored the session and asked for `Set`), a
/// regenerate failing on a transient error leaves the session stored, live and unchanged, and
/// the handle on it, but the response no longer sends its cookie: the client never learns the
/// id, and what the request saved is lost to it.
///
/// Schedule: a visitor's first request: `start(None)`, `save()` (cookie `Set`), then
/// `regenerate()` (login), whose copy's first write fails.
#[test]
fn a_failed_regenerate_keeps_the_cookie_of_the_session_just_created() {
    use session_archive::session::META_KEY;
    let inner = Arc::new(MemoryArchive::new());
    let armed = Arc::new(AtomicBool::new(false));
    let hook_armed = Arc::clone(&armed);
    let sessions = Sessions::new(Hooked::new(Arc::clone(&inner), move |call| {
        // The copy's first write: its record from nothing (alone, or with its state).
        let creates_record = match *call {
            Call::CompareAndSwap {
                key,
                expected: None,
                ..
            } => key == META_KEY,
            Call::CompareAndSwapMany { swaps, .. } => swaps
                .iter()
                .any(|(key, expected, _)| *key == META_KEY && expected.is_none()),
            _ => false,
        };
        if creates_record && hook_armed.swap(false, Ordering::SeqCst) {
            return Err(Error::Backend {
                backend: "test",
                operation: "write",
                source: "injected failure".into(),
            });
        }
        Ok(())
    }));
    let mut session = sessions.start(None, "cart".to_owned()).unwrap();
    session.save().unwrap();
    assert_eq!(session.cookie_action(), CookieAction::Set);
    armed.store(true, Ordering::SeqCst);
    let result = session.regenerate();
    assert!(result.is_err(), "the copy's write failed");
    assert!(
        sessions.is_live(session.id()).unwrap(),
        "the session is stored"
    );
    assert_eq!(
        session.cookie_action(),
        CookieAction::Set,
        "the stored session's cookie is withdrawn (regenerate returned {result:?})"
    );
}

/// **Invariant 1: a session is lost with no destroy, when a bound write tidies away the marker
/// of a move whose answer was lost.**
///
/// A regenerate's move that the storage applies but answers with an error is settled by the
/// fence, which reads the old id back: its marker there means moved; "no state means the
/// session is gone (no write brings a state back)", and the copy is removed. But a marker is also
/// removed by `Store::write_bound`: a bound write that finds the old id moved calls `forget`,
/// which removes the old id's whole domain, marker included. The fence then reads nothing,
/// decides "not moved", and removes the copy, which by then is the session.
///
/// Schedule: S holds "state". R2 starts S and calls `set_user(Some("bob"))`. R1 starts S and
/// regenerates it (an id rotation). The storage applies R1's move and answers an error; before
/// R1's fence reads S back, R2 saves: it finds S moved (`SessionGone`) and removes S's domain.
/// R1's fence finds S empty, answers "not moved" and removes the copy.
///
/// Result: neither id holds the session; no destroy or revoke ran, and both requests failed
/// (R1 with the move's error, its docs saying the old session is as it was).
#[test]
fn a_move_answered_with_an_error_is_not_undone_by_a_bound_write_tidying_the_marker() {
    let inner = Arc::new(MemoryArchive::new());
    let plain = Sessions::new(Arc::clone(&inner));
    let mut first = plain.start(None, "state".to_owned()).unwrap();
    first.save().unwrap();
    let s = first.id().clone();

    let mut r2 = plain.start(Some(s.as_str()), String::new()).unwrap();
    assert_eq!(r2.id(), &s);
    r2.set_user(Some("bob"));
    let r2 = Arc::new(Mutex::new(r2));

    let armed = Arc::new(AtomicBool::new(true));
    let (hook_armed, hook_inner, hook_r2) =
        (Arc::clone(&armed), Arc::clone(&inner), Arc::clone(&r2));
    let r2_result: Arc<Mutex<Option<session_archive::Result<()>>>> = Arc::default();
    let hook_result = Arc::clone(&r2_result);
    let hooked = Sessions::new(Hooked::new(Arc::clone(&inner), move |call| {
        if let Call::CompareAndSwapMany { domain, swaps } = *call
            && is_move(swaps)
            && hook_armed.swap(false, Ordering::SeqCst)
        {
            // The storage applies the move; its answer is lost.
            assert!(hook_inner.compare_and_swap_many(domain, swaps).unwrap());
            let saved = hook_r2.lock().expect("R2").save();
            *hook_result.lock().expect("slot") = Some(saved);
            return Err(injected());
        }
        Ok(())
    }));
    let mut r1 = hooked.start(Some(s.as_str()), String::new()).unwrap();
    let result = r1.regenerate();
    assert!(!armed.load(Ordering::SeqCst), "the move ran");
    let r2_saved = r2_result.lock().unwrap().take();

    let live = plain.is_live(&s).unwrap() || plain.is_live(r1.id()).unwrap();
    let copies: Vec<String> = inner
        .list_domains(None, 100)
        .unwrap()
        .names
        .into_iter()
        .filter(|d| SessionId::parse(d).is_some())
        .collect();
    assert!(
        live,
        "the session is gone: regenerate returned {result:?} (handle on {:?}), R2's save \
         returned {r2_saved:?}, session domains left: {}",
        r1.id(),
        copies.len()
    );
}

/// **No panic on stored bytes: a record whose `rev` is `u64::MAX` panics the fence.**
///
/// `Store::fence_once` computes `stamp.rev + 1` unchecked: with a record holding the largest
/// revision (corrupt, or written by hand), a regenerate whose move answers an error panics
/// ("attempt to add with overflow") in a debug build, and wraps the revision to 0 in a release
/// build. DESIGN.md: "Library code never panics on bad input or bad data on disk."
///
/// Schedule: S's record is rewritten with `"rev": u64::MAX`; R1 regenerates S; the move answers
/// an error (not applied).
#[test]
fn a_record_with_the_largest_revision_does_not_panic_the_fence() {
    use session_archive::session::META_KEY;
    let inner = Arc::new(MemoryArchive::new());
    let plain = Sessions::new(Arc::clone(&inner));
    let mut first = plain.start(None, "state".to_owned()).unwrap();
    first.save().unwrap();
    let s = first.id().clone();
    let raw = inner.get(s.as_str(), META_KEY).unwrap().unwrap();
    let mut record: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    record["rev"] = u64::MAX.into();
    inner
        .set(s.as_str(), META_KEY, &serde_json::to_vec(&record).unwrap())
        .unwrap();

    let armed = Arc::new(AtomicBool::new(true));
    let hook_armed = Arc::clone(&armed);
    let hooked = Sessions::new(Hooked::new(Arc::clone(&inner), move |call| {
        if let Call::CompareAndSwapMany { swaps, .. } = *call
            && is_move(swaps)
            && hook_armed.swap(false, Ordering::SeqCst)
        {
            return Err(injected());
        }
        Ok(())
    }));
    let mut r1 = hooked.start(Some(s.as_str()), String::new()).unwrap();
    assert_eq!(r1.id(), &s);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r1.regenerate()));
    assert!(
        outcome.is_ok(),
        "regenerate panicked on a stored record's revision"
    );
}
