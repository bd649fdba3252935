//! Edges of the session protocol that two adversarial reviews found broken (after the rewrite
//! for issue 24; the second after the first's fixes), each now a regression test: it forces one
//! schedule (or injects one failure) through `conformance::Hooked`, and failed before the fix.
//! Each doc comment gives the schedule and the invariant that was broken.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use session_archive::conformance::{Call, Hooked, OwnedSwap};
use session_archive::session::{CookieAction, META_KEY, STATE_KEY};
use session_archive::{Archive, Error, ManualClock, MemoryArchive, SessionId, Sessions};

#[path = "support/one_key_at_a_time.rs"]
mod one_key_at_a_time;

use self::one_key_at_a_time::OneKeyAtATime;

type Job = Box<dyn FnOnce() + Send>;

fn injected() -> Error {
    Error::Backend {
        backend: "test",
        operation: "write",
        source: "injected failure".into(),
    }
}

fn is_move(swaps: &[session_archive::archive::Swap<'_>]) -> bool {
    swaps.iter().any(|(key, _, new)| {
        *key == STATE_KEY && new.is_some_and(|new| new.starts_with(b"\0moved:"))
    })
}

fn listed(sessions: &Sessions, user: &str) -> Vec<SessionId> {
    sessions
        .user_sessions(user)
        .map(|s| s.expect("listing").id().clone())
        .collect()
}

/// A session stored bound to `user` holding `state`; returns its id.
fn saved_for(sessions: &Sessions, user: &str, state: &str) -> SessionId {
    let mut session = sessions.start(None, state.to_owned()).expect("start");
    session.set_user(Some(user));
    session.save().expect("save");
    session.id().clone()
}

/// **Invariant 1 (and 3): a revoke of the session's former user kills it through the regenerate's
/// copy, after a rebind to another user was acknowledged.**
///
/// Schedule. S is stored bound to alice.
/// 1. R1 starts S and regenerates it (clean, no `set_user`: an id rotation). Its copy C is
///    created bound to alice (with its own entry in alice's index). R1 is paused just before
///    the move's compare-and-swap.
/// 2. R2 starts S, `set_user(Some("bob"))`, `save()`: Ok. S is now bob's; its alice entry is
///    removed.
/// 3. An admin `revoke_user("alice")` starts (after R2 returned). It finds C's alice entry, C is
///    live and bound to alice, so `revoke_swap` removes C's state. It pauses just before
///    `remove_revoked` (C's record is still there).
/// 4. R1 resumes: its move fails (S's record changed), it finds S bound to bob, and
///    `rebind_copy` swaps C's record from alice to bob; that swap checks only C's record, not
///    its state, so it succeeds on the revoked copy. The move then lands: S becomes a
///    moved-marker naming C. `regenerate` returns Ok.
/// 5. The revoke finishes.
///
/// Result: R2's acknowledged save (the session bound to bob) is gone, although no later write
/// overwrote it and no destroy or revoke of it happened (the revoke was of alice, begun after S
/// was bob's). R1's regenerate also returned Ok with a dead id. Every linearization has the
/// session live, bound to bob, under C.
#[test]
fn a_revoke_of_the_former_user_spares_a_session_rebound_during_a_regenerate() {
    let inner = Arc::new(MemoryArchive::new());
    let plain = Sessions::new(Arc::clone(&inner));
    let s = saved_for(&plain, "alice", "state");

    // The revoke pauses at its `remove_domains`, after its swap destroyed the copy.
    let (reached_tx, reached_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let reached_tx = Mutex::new(reached_tx);
    let go_rx = Mutex::new(go_rx);
    let paused_once = AtomicBool::new(false);
    let admin = Sessions::new(Hooked::new(Arc::clone(&inner), move |call| {
        if let Call::RemoveDomains { .. } = call
            && !paused_once.swap(true, Ordering::SeqCst)
        {
            reached_tx.lock().unwrap().send(()).unwrap();
            go_rx.lock().unwrap().recv().unwrap();
        }
        Ok(())
    }));

    let inside: Arc<Mutex<Option<Job>>> = Arc::default();
    let hook_inside = Arc::clone(&inside);
    let r1_sessions = Sessions::new(Hooked::new(Arc::clone(&inner), move |call| {
        if let Call::CompareAndSwapMany { swaps, .. } = *call
            && is_move(swaps)
            && let Some(job) = hook_inside.lock().unwrap().take()
        {
            job();
        }
        Ok(())
    }));

    let revoked: Arc<Mutex<Option<std::thread::JoinHandle<usize>>>> = Arc::default();
    let (r2_sessions, r2_id, revoke_slot) = (plain.clone(), s.clone(), Arc::clone(&revoked));
    *inside.lock().unwrap() = Some(Box::new(move || {
        // R2: rebind to bob, acknowledged.
        let mut r2 = r2_sessions
            .start(Some(r2_id.as_str()), String::new())
            .unwrap();
        assert_eq!(r2.id(), &r2_id);
        r2.set_user(Some("bob"));
        r2.save().expect("R2's rebind to bob");
        // The admin's revoke of alice, begun after R2 returned.
        let handle = std::thread::spawn(move || admin.revoke_user("alice").expect("revoke"));
        reached_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the revoke destroyed the copy and reached its removal");
        *revoke_slot.lock().unwrap() = Some(handle);
    }));

    let mut r1 = r1_sessions.start(Some(s.as_str()), String::new()).unwrap();
    let r1_result = r1.regenerate();
    go_tx.send(()).unwrap();
    let revoke = revoked.lock().unwrap().take().expect("the schedule ran");
    let _count = revoke.join().unwrap();
    assert!(inside.lock().unwrap().is_none(), "R2 ran inside R1's move");

    // R2's acknowledged save bound the session to bob; nothing ended it since. (R1's handle is
    // on the old id again if its regenerate failed: count each id once.)
    let mut ids = vec![s.clone(), r1.id().clone()];
    ids.dedup();
    let live: Vec<SessionId> = ids
        .into_iter()
        .filter(|id| plain.is_live(id).unwrap())
        .collect();
    assert_eq!(
        live.len(),
        1,
        "the session bound to bob is gone (regenerate: {r1_result:?}, R1 now on {:?})",
        r1.id()
    );
    assert_eq!(listed(&plain, "bob"), live, "bob's session is listed");
}

/// **Invariants 1 and 5: the fence does not settle a move whose state comes back (ABA).**
///
/// `Store::fence` assumes that when its swap fails because the old id's state changed, "the
/// pending move cannot land either". It can, when the state changes back to the same bytes (a
/// flash message set and cleared, a cart filled and emptied) while the record is untouched
/// (a plain save rewrites no record until a touch is due).
///
/// Schedule (the storage answers the move with an error, as a timed-out Redis command does, and
/// runs it later):
/// 1. R1 regenerates S (state "A"); its move answers an error without being applied.
/// 2. Before R1's fence, R2 saves S with state "B" (Ok). The fence fails, the state read back is
///    "B", not R1's marker: R1 decides "not moved", removes its copy, and returns the error.
/// 3. R3 saves S with state "A" again (Ok): the same bytes the move expects.
/// 4. The storage now runs R1's move: state "A" and the record as R1 read them, so it lands.
///
/// Result: S is a moved-marker naming a removed copy. R3's acknowledged save is lost (no later
/// write, no destroy), and R1's regenerate, which failed with "not moved", moved the session
/// into nothing.
#[test]
fn a_late_move_never_lands_after_a_write_that_is_undone() {
    type Late = (String, Vec<(String, Option<Vec<u8>>, Option<Vec<u8>>)>);
    let inner = Arc::new(MemoryArchive::new());
    let plain = Sessions::new(Arc::clone(&inner));
    let armed = Arc::new(AtomicUsize::new(0));
    let late: Arc<Mutex<Option<Late>>> = Arc::default();
    let before_fence: Arc<Mutex<Option<Job>>> = Arc::default();
    let (hook_armed, hook_late, hook_fence) = (
        Arc::clone(&armed),
        Arc::clone(&late),
        Arc::clone(&before_fence),
    );
    let hooked = Sessions::new(Hooked::new(Arc::clone(&inner), move |call| {
        if let Call::CompareAndSwapMany { domain, swaps } = *call {
            if is_move(swaps)
                && hook_armed
                    .compare_exchange(1, 2, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                let owned = swaps
                    .iter()
                    .map(|(k, e, n)| {
                        (
                            (*k).to_owned(),
                            e.map(<[u8]>::to_vec),
                            n.map(<[u8]>::to_vec),
                        )
                    })
                    .collect();
                *hook_late.lock().unwrap() = Some((domain.to_owned(), owned));
                return Err(Error::Backend {
                    backend: "test",
                    operation: "write",
                    source: "reply timed out".into(),
                });
            }
            if hook_armed.load(Ordering::SeqCst) == 2
                && let Some(job) = hook_fence.lock().unwrap().take()
            {
                job();
            }
        }
        Ok(())
    }));
    let mut r1 = hooked.start(None, "A".to_owned()).unwrap();
    r1.save().unwrap();
    let s = r1.id().clone();

    let (r2_sessions, r2_id) = (plain.clone(), s.clone());
    *before_fence.lock().unwrap() = Some(Box::new(move || {
        let mut r2 = r2_sessions
            .start(Some(r2_id.as_str()), String::new())
            .unwrap();
        *r2 = "B".to_owned();
        r2.save().expect("R2's save");
    }));
    armed.store(1, Ordering::SeqCst);
    let result = r1.regenerate();
    assert!(result.is_err(), "the move answered an error: {result:?}");
    assert_eq!(r1.id(), &s, "a failed regenerate keeps the old id");

    // R3 saves "A" again: acknowledged.
    let mut r3 = plain.start(Some(s.as_str()), String::new()).unwrap();
    assert_eq!(r3.id(), &s);
    *r3 = "A".to_owned();
    r3.save().expect("R3's save");

    // The storage runs the move it answered with an error.
    let (domain, swaps) = late.lock().unwrap().take().expect("the move was held back");
    let swaps: Vec<session_archive::archive::Swap<'_>> = swaps
        .iter()
        .map(|(k, e, n)| (k.as_str(), e.as_deref(), n.as_deref()))
        .collect();
    let landed = inner.compare_and_swap_many(&domain, &swaps).unwrap();

    let again = plain.start(Some(s.as_str()), String::new()).unwrap();
    assert!(
        !landed && again.id() == &s && *again == "A",
        "R3's acknowledged save is lost: the late move landed ({landed}) on a removed copy"
    );
}

/// **Invariant 5: an update that stores a new binding fails after it was applied.**
///
/// `Store::write_bound` returns the error of removing the replaced binding's index entry (and of
/// the expiry hint), both made AFTER the compare-and-swap that stored the state and the binding.
/// So `update` answers an error although its change is stored, with the new binding; a caller
/// that retries applies the change twice. Nothing in `update`'s docs says the outcome of an
/// error is unknown (and the stale entry the failure leaves is harmless: readers filter it).
///
/// Schedule: S holds 0, bound to alice. R1 `set_user(Some("bob"))`, then `update(|n| *n += 1)`;
/// the removal of alice's entry fails.
#[test]
fn a_bound_update_is_whole_when_its_tidying_fails() {
    let inner = Arc::new(MemoryArchive::new());
    let plain = Sessions::new(Arc::clone(&inner));
    let fail = Arc::new(AtomicBool::new(false));
    let hook_fail = Arc::clone(&fail);
    let hooked = Sessions::new(Hooked::new(Arc::clone(&inner), move |call| {
        if let Call::Remove { domain, .. } = *call
            && domain.starts_with("user-")
            && hook_fail.load(Ordering::SeqCst)
        {
            return Err(injected());
        }
        Ok(())
    }));
    let mut session = plain.start(None, 0_u32).unwrap();
    session.set_user(Some("alice"));
    session.save().unwrap();
    let id = session.id().clone();

    let mut r1 = hooked.start(Some(id.as_str()), 0_u32).unwrap();
    r1.set_user(Some("bob"));
    fail.store(true, Ordering::SeqCst);
    let result = r1.update(|n| *n += 1);

    // Either outcome is whole: answered Ok with the change and the binding stored, or answered
    // as failed with neither.
    let stored = plain.start(Some(id.as_str()), 0_u32).unwrap();
    let expected = if result.is_ok() {
        (1, Some("bob"))
    } else {
        (0, Some("alice"))
    };
    assert_eq!(
        (*stored, stored.user()),
        expected,
        "update returned {result:?}, and the store disagrees"
    );
}

/// **Bad data on disk panics the listing.** A record (`meta.json`) whose times are far in the
/// future (corrupt, or written by hand) is judged live (its expiry saturates), and
/// `UserSessions` then builds `UNIX_EPOCH + Duration::from_secs(meta.seen)`, which panics on
/// overflow ("overflow when adding duration to instant"). The design says library code never
/// panics on bad data on disk.
#[test]
fn a_record_with_far_future_times_does_not_panic_the_listing() {
    let inner = Arc::new(MemoryArchive::new());
    let plain = Sessions::new(Arc::clone(&inner));
    let id = saved_for(&plain, "alice", "state");
    let raw = inner.get(id.as_str(), META_KEY).unwrap().unwrap();
    let mut record: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    record["created"] = u64::MAX.into();
    record["seen"] = u64::MAX.into();
    inner
        .set(id.as_str(), META_KEY, &serde_json::to_vec(&record).unwrap())
        .unwrap();

    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        plain.user_sessions("alice").count()
    }));
    assert!(outcome.is_ok(), "user_sessions panicked on a stored record");
}

/// **Bad input panics a write.** With an idle timeout (or absolute lifetime) of
/// `Duration::MAX` (a natural way to say "very long"), every write that binds a user calls
/// `keep_user_index`, which computes `UNIX_EPOCH + Duration::from_secs(now + longest + 60)`
/// (saturated to `u64::MAX`) and panics on overflow. The expiry hint of the same write uses the
/// saturating `unix_time` and does not.
#[test]
fn a_very_long_timeout_does_not_panic_a_bound_save() {
    let sessions = Sessions::builder(MemoryArchive::new())
        .idle_timeout(Duration::MAX)
        .build();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut session = sessions.start(None, 0_u32).unwrap();
        session.set_user(Some("alice"));
        session.save()
    }));
    assert!(
        matches!(outcome, Ok(Ok(()))),
        "a bound save with a long idle timeout panicked or failed"
    );
}

/// **Invariant 6: a write that lands after the idle timeout brings the session back.**
///
/// `update` checks expiry first (`ensure_unexpired`), then runs its change and swaps the state:
/// a check followed by a write, not one compare-and-swap, and the swap does not look at the
/// record. The touch after it then moves `last seen` to now. So a session whose idle timeout
/// passes while a request's change runs (a slow change, or a slow archive) is written, and lives
/// on; had a sweep run in that gap, the same update would have failed with `SessionGone`.
///
/// Schedule (idle timeout 600 s): saved at t, and R1 starts it then (no touch due); at t+599 R1
/// starts an update; its change runs until t+600 or later; the swap lands then. At that time the
/// session must not be resumed. (R1 is started at t: a start at t+599 would itself move `last
/// seen` to t+599, and the session would rightly live on.)
#[test]
fn an_update_landing_after_the_idle_timeout_does_not_revive_the_session() {
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let sessions = Sessions::builder(MemoryArchive::new())
        .idle_timeout(Duration::from_secs(600))
        .clock(clock.clone())
        .build();
    let mut session = sessions.start(None, 0_u32).unwrap();
    session.save().unwrap();
    let id = session.id().clone();

    let mut r1 = sessions.start(Some(id.as_str()), 0_u32).unwrap();
    assert_eq!(r1.id(), &id);
    clock.advance(Duration::from_secs(599));
    let ticking = clock.clone();
    let result = r1.update(move |n| {
        ticking.advance(Duration::from_secs(1));
        *n += 1;
    });
    // The change may run more than once; the clock is now past t+600 either way.
    let again = sessions.start(Some(id.as_str()), 0_u32).unwrap();
    assert!(
        again.id() != &id,
        "a session past its idle timeout was resumed (the update returned {result:?})"
    );
}

/// **Invariant 6: a sweep ends a session that the application still resumes.**
///
/// `Sessions::sweep` judges expiry by its own timeouts, not the application's recorded ones
/// (only the command-line tool reads those). An admin `Sessions` with a 1 h idle timeout over an
/// application's archive (24 h idle) ends a session the app used 2 h ago, when it reaches the
/// entry that the session's previous expiry left. DESIGN.md: "Settings the sweep depends on are
/// stored with the archive, so a tool sweeping with other settings stays bounded and correct";
/// issue 24's defect 2 is the same rule for revoke. (`Sessions::sweep`'s docs do say it judges
/// by this `Sessions`' timeouts: a design decision to revisit, listed so it is decided.)
///
/// Schedule: saved at t (entry at t+24h); resumed by the app at t+22h (touch: entry at t+46h);
/// the admin sweeps at t+24h+2min, reaching the t+24h entry.
#[test]
fn a_sweep_with_other_timeouts_does_not_end_a_session_live_to_the_app() {
    let archive = Arc::new(MemoryArchive::new());
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let app = Sessions::builder(Arc::clone(&archive))
        .clock(clock.clone())
        .build();
    let mut session = app.start(None, 1_u32).unwrap();
    session.save().unwrap();
    let id = session.id().clone();

    clock.advance(Duration::from_secs(22 * 3600));
    let resumed = app.start(Some(id.as_str()), 0_u32).unwrap();
    assert_eq!(resumed.id(), &id);
    clock.advance(Duration::from_secs(2 * 3600 + 120));
    assert!(app.is_live(&id).unwrap(), "live to the app");
    let admin = Sessions::builder(Arc::clone(&archive))
        .idle_timeout(Duration::from_secs(3600))
        .clock(clock.clone())
        .build();
    let swept = admin.sweep().unwrap();
    assert!(
        app.is_live(&id).unwrap(),
        "the admin's sweep ({swept} removed) ended a session the app still resumes"
    );
}

/// **Invariant 4, as `set_user` documents it ("no reader ever sees the new state with the old
/// binding or the reverse"): `start` reads the record and the state in two reads.**
///
/// `Store::open` read `meta.json`, then `session.json`; a rebinding write landing between the
/// two handed the request a handle whose `user()` is the old binding and whose state is the
/// new one: a pair no write stored. (The touch that would read the record again runs only when
/// due.) The compare-and-swap of both keys keeps the stored pair together; the read did not.
/// It is one `get_many` now; this runs it on an archive whose `get_many` is the trait's default,
/// which reads one key at a time, so that a write can still land between two reads.
///
/// Schedule: S holds "alice's", bound to alice. R3 starts S: it reads the record (alice); before
/// it reads the state, R2 starts S, `set_user(Some("bob"))`, sets the state to "bob's", saves
/// (Ok). R3 then reads the state.
#[test]
fn a_start_never_pairs_the_new_state_with_the_old_binding() {
    let inner = Arc::new(MemoryArchive::new());
    let plain = Sessions::new(Arc::clone(&inner));
    let s = saved_for(&plain, "alice", "alice's");
    let between: Arc<Mutex<Option<Job>>> = Arc::default();
    let hook_between = Arc::clone(&between);
    let hooked = Sessions::new(OneKeyAtATime(Hooked::new(
        Arc::clone(&inner),
        move |call| {
            if let Call::Get { key, .. } = *call
                && key == STATE_KEY
                && let Some(job) = hook_between.lock().unwrap().take()
            {
                job();
            }
            Ok(())
        },
    )));
    let (r2_sessions, r2_id) = (plain.clone(), s.clone());
    *between.lock().unwrap() = Some(Box::new(move || {
        let mut r2 = r2_sessions
            .start(Some(r2_id.as_str()), String::new())
            .unwrap();
        r2.set_user(Some("bob"));
        *r2 = "bob's".to_owned();
        r2.save().expect("R2 rebinds to bob");
    }));
    let r3 = hooked.start(Some(s.as_str()), String::new()).unwrap();
    assert!(
        between.lock().unwrap().is_none(),
        "R2 ran between the reads"
    );
    assert_eq!(r3.id(), &s);
    let seen = (r3.user().map(str::to_owned), (*r3).clone());
    assert!(
        seen == (Some("alice".into()), "alice's".into())
            || seen == (Some("bob".into()), "bob's".into()),
        "the handle pairs state and binding no write stored: {seen:?}"
    );
}

/// **Bad data on disk: a corrupt record (`meta.json`) makes the cookie fail for good, even with
/// `OnCorrupt::StartFresh`.**
///
/// `Store::open` decodes the record before anything else, and its `CorruptSession` error goes
/// straight out of `start`: the set-aside policy covers only an undecodable state. The sweep
/// drops the session's index entry ("unreadable: left in place"), so nothing ever removes it,
/// and every request with that cookie fails until someone deletes the files by hand. DESIGN.md:
/// "a policy lets an app start fresh instead of answering 500 until expiry"; here there is not
/// even an expiry.
#[test]
fn a_corrupt_record_does_not_fail_every_start_with_start_fresh() {
    use session_archive::session::OnCorrupt;
    let archive = Arc::new(MemoryArchive::new());
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let sessions = Sessions::builder(Arc::clone(&archive))
        .on_corrupt(OnCorrupt::StartFresh)
        .clock(clock.clone())
        .build();
    let mut session = sessions.start(None, 1_u32).unwrap();
    session.save().unwrap();
    let id = session.id().clone();
    archive.set(id.as_str(), META_KEY, b"not json").unwrap();

    let first = sessions.start(Some(id.as_str()), 0_u32);
    // Long past every timeout, after sweeps: still the same error.
    clock.advance(Duration::from_secs(30 * 24 * 3600));
    sessions.sweep().unwrap();
    let later = sessions.start(Some(id.as_str()), 0_u32);
    assert!(
        first.is_ok() && later.is_ok(),
        "start with a corrupt record: {:?}, and 30 days and a sweep later: {:?}",
        first.map(|s| s.is_new()),
        later.map(|s| s.is_new())
    );
}

/// **Invariant 5: a plain `update` fails after its change was stored.**
///
/// `update` swaps the state, then touches the record (`after_write`), and returns the touch's
/// error: the change is stored, the call says it failed, and a caller that retries applies it
/// twice. `save` documents this outcome ("an archive error while recording the timestamps, after
/// the state was written, is returned too"); `update`, the read-modify-write meant for
/// counters, does not, and its retry is not idempotent.
///
/// Schedule: S holds 0; R1 starts it; 4 h later (the touch is due: idle 24 h / 8) R1 runs
/// `update(|n| *n += 1)`; the expiry index write of its touch fails.
#[test]
fn a_plain_update_is_whole_when_its_touch_fails() {
    let inner = Arc::new(MemoryArchive::new());
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let plain = Sessions::builder(Arc::clone(&inner))
        .clock(clock.clone())
        .build();
    let fail = Arc::new(AtomicBool::new(false));
    let hook_fail = Arc::clone(&fail);
    let hooked = Sessions::builder(Hooked::new(Arc::clone(&inner), move |call| {
        let index_write = match *call {
            Call::Set { domain, .. } => domain.starts_with("expiry-"),
            Call::SetMany { entries } => entries.iter().any(|(d, _, _)| d.starts_with("expiry-")),
            _ => false,
        };
        if index_write && hook_fail.load(Ordering::SeqCst) {
            return Err(injected());
        }
        Ok(())
    }))
    .clock(clock.clone())
    .build();
    let mut session = plain.start(None, 0_u32).unwrap();
    session.save().unwrap();
    let id = session.id().clone();
    clock.advance(Duration::from_secs(4 * 3600));

    let mut r1 = hooked.start(Some(id.as_str()), 0_u32).unwrap();
    assert_eq!(r1.id(), &id);
    clock.advance(Duration::from_secs(4 * 3600));
    fail.store(true, Ordering::SeqCst);
    let result = r1.update(|n| *n += 1);

    // Either outcome is whole: answered Ok with the change stored, or answered as failed
    // without it.
    fail.store(false, Ordering::SeqCst);
    let stored = plain.start(Some(id.as_str()), 0_u32).unwrap();
    assert_eq!(
        *stored,
        u32::from(result.is_ok()),
        "update returned {result:?}, and the store disagrees"
    );
}

/// **Invariant 3: a listing by a `Sessions` that hashes ids at rest deletes the index entries of
/// live sessions stored under plain ids.**
///
/// `judge` reads an entry's session through the listing `Sessions`' archive view: with ids
/// hashed, the plain id named by the entry is hashed again, nothing is found there, and an entry
/// over an hour old is judged `Dead` and removed: by a read-only `user_sessions` (or a revoke).
/// The application that stored the session (plain ids) still resumes it, but its own
/// `user_sessions` no longer lists it and its `revoke_user` no longer ends it. (A plain
/// `Sessions` handles hashed entries fine: `SessionId::from_stored` accepts both. Mixed
/// settings happen during a rolling switch to `hash_ids_at_rest`, or with an admin tool built
/// with other settings.)
///
/// Schedule: the app (plain ids) binds S to alice; 2 h later an admin `Sessions` with
/// `hash_ids_at_rest(true)` lists alice's sessions.
#[test]
fn a_listing_with_hashed_ids_does_not_drop_entries_of_plain_sessions() {
    let archive = Arc::new(MemoryArchive::new());
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let app = Sessions::builder(Arc::clone(&archive))
        .clock(clock.clone())
        .build();
    let admin = Sessions::builder(Arc::clone(&archive))
        .clock(clock.clone())
        .hash_ids_at_rest(true)
        .build();
    let id = saved_for(&app, "alice", "state");
    clock.advance(Duration::from_secs(2 * 3600));
    assert!(app.is_live(&id).unwrap());

    let admin_listed = admin.user_sessions("alice").count();
    assert!(app.is_live(&id).unwrap(), "still live to the app");
    assert_eq!(
        listed(&app, "alice"),
        [id],
        "the admin's listing (which listed {admin_listed}) removed the app's index entry"
    );
}

// The second review's findings.

const T0: u64 = 1_700_000_000;

fn clock() -> ManualClock {
    ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(T0))
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
        if let Some((domain, swaps)) = state_write(call)
            && hook_armed.swap(false, Ordering::SeqCst)
        {
            let swaps: Vec<_> = swaps
                .iter()
                .map(|(k, e, n)| (k.as_str(), e.as_deref(), n.as_deref()))
                .collect();
            hook_inner.compare_and_swap_many(&domain, &swaps).unwrap();
            return Err(injected());
        }
        Ok(())
    }));
    let mut r1 = hooked.start(Some(s.as_str()), 0_u32).unwrap();
    armed.store(true, Ordering::SeqCst);
    let result = r1.update(|n| *n += 1);
    assert!(
        !armed.load(Ordering::SeqCst),
        "the update's write was reached"
    );
    let stored = *plain.start(Some(s.as_str()), 0_u32).unwrap();
    assert_eq!(
        stored,
        u32::from(result.is_ok()),
        "update returned {result:?}, and the store holds {stored}"
    );
}

/// The domain and the swaps of a call that writes a session's state (a swap of it alone, or
/// with other keys), owned.
fn state_write(call: &Call<'_>) -> Option<(String, Vec<OwnedSwap>)> {
    let own = |(key, expected, new): &(&str, Option<&[u8]>, Option<&[u8]>)| {
        (
            (*key).to_owned(),
            expected.map(<[u8]>::to_vec),
            new.map(<[u8]>::to_vec),
        )
    };
    match *call {
        Call::CompareAndSwap {
            domain,
            key,
            expected,
            new: Some(new),
        } if key == STATE_KEY => Some((domain.to_owned(), vec![own(&(key, expected, Some(new)))])),
        Call::CompareAndSwapMany { domain, swaps }
            if swaps
                .iter()
                .any(|(key, _, new)| *key == STATE_KEY && new.is_some()) =>
        {
            Some((domain.to_owned(), swaps.iter().map(own).collect()))
        }
        _ => None,
    }
}

/// **Invariant 1 (found by a review): an update answered with an error is read back, and the
/// state alone cannot tell its write from another's that stored the same bytes.**
///
/// Schedule: S holds 0. R1 `update(|n| *n += 1)`; its write fails before it reaches storage,
/// and in that moment R2 makes the same update, which lands (0 to 1). Reading the state back,
/// R1 found the bytes it meant to write (1) and answered `Ok`: two increments acknowledged,
/// one stored. The update now writes its record with a fresh value, and reads that back.
#[test]
fn an_update_whose_write_failed_is_not_acknowledged_for_another_writers_equal_bytes() {
    let inner = Arc::new(MemoryArchive::new());
    let plain = Sessions::new(Arc::clone(&inner));
    let mut first = plain.start(None, 0_u32).unwrap();
    first.save().unwrap();
    let s = first.id().clone();
    let armed = Arc::new(AtomicBool::new(false));
    let (hook_armed, other, other_id) = (Arc::clone(&armed), plain.clone(), s.clone());
    let hooked = Sessions::new(Hooked::new(Arc::clone(&inner), move |call| {
        if state_write(call).is_some() && hook_armed.swap(false, Ordering::SeqCst) {
            let mut r2 = other.start(Some(other_id.as_str()), 0_u32).unwrap();
            r2.update(|n| *n += 1).expect("R2's update lands");
            return Err(injected());
        }
        Ok(())
    }));
    let mut r1 = hooked.start(Some(s.as_str()), 0_u32).unwrap();
    armed.store(true, Ordering::SeqCst);
    let result = r1.update(|n| *n += 1);
    assert!(
        !armed.load(Ordering::SeqCst),
        "the update's write was reached"
    );
    let stored = *plain.start(Some(s.as_str()), 0_u32).unwrap();
    assert_eq!(
        stored,
        1 + u32::from(result.is_ok()),
        "R1's update returned {result:?} beside R2's, and the store holds {stored}"
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
