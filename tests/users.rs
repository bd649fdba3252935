//! Sessions per user against a model: random sequences of start, save, `set_user`, regenerate,
//! destroy, expiry with a sweep, and revokes over several users, on memory and redb. After every
//! step, `user_sessions` of each user must be exactly the model's set of that user's live
//! sessions: the index never misses a session and never lists a dead or rebound one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use session_archive::{Archive, ArchiveExt, ManualClock, MemoryArchive, Session, Sessions};

const USERS: [&str; 3] = ["alice", "bob@example.com", "carol/../x"];
const IDLE: u64 = 3600;

#[derive(Debug, Clone)]
enum Op {
    /// A new session, saved, bound to a user or not.
    Login(Option<usize>),
    /// Rebind (or unbind) a session and save it.
    Rebind(usize, Option<usize>),
    /// Bind a session to a user and regenerate it, as a login does.
    Regenerate(usize, Option<usize>),
    /// Update a session without touching its binding.
    Update(usize),
    Destroy(usize),
    RevokeUser(usize),
    /// Revoke a user's sessions but one.
    RevokeExcept(usize, usize),
    /// Let every session expire, and sweep.
    ExpireAll,
    /// Let half the idle timeout pass, and sweep: the sessions unused for two of these expire,
    /// the others stay, so a user can have some sessions expired and some live.
    Age,
}

fn op() -> impl Strategy<Value = Op> {
    let user = || prop::option::of(0..USERS.len());
    prop_oneof![
        3 => user().prop_map(Op::Login),
        2 => (0..8_usize, user()).prop_map(|(s, u)| Op::Rebind(s, u)),
        2 => (0..8_usize, user()).prop_map(|(s, u)| Op::Regenerate(s, u)),
        2 => (0..8_usize).prop_map(Op::Update),
        1 => (0..8_usize).prop_map(Op::Destroy),
        1 => (0..USERS.len()).prop_map(Op::RevokeUser),
        1 => (0..USERS.len(), 0..8_usize).prop_map(|(u, s)| Op::RevokeExcept(u, s)),
        1 => Just(Op::ExpireAll),
        2 => Just(Op::Age),
    ]
}

/// What the model knows of one session handle.
struct Handle {
    session: Session<u32>,
    live: bool,
    user: Option<usize>,
    /// The clock (seconds since the start) at the handle's last write, which is also the
    /// session's last-seen time: the clock moves only by [`AGE`], far more than the eighth of the
    /// idle timeout after which a write rewrites last-seen.
    used: u64,
}

/// How far [`Op::Age`] moves the clock: one step leaves a session live, two expire it.
const AGE: u64 = IDLE / 2 + 1;

fn run(archive: Arc<dyn Archive>, ops: &[Op]) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let sessions = Sessions::builder(archive)
        .idle_timeout(Duration::from_secs(IDLE))
        .absolute_lifetime(None)
        .clock(clock.clone())
        .build();
    let mut handles: Vec<Handle> = Vec::new();
    let mut now = 0;
    for (step, op) in ops.iter().enumerate() {
        let pick = |i: usize, handles: &[Handle]| (!handles.is_empty()).then(|| i % handles.len());
        match *op {
            Op::Login(user) => {
                let mut session = sessions.start(None, 0).expect("start");
                session.set_user(user.map(|u| USERS[u]));
                session.save().expect("save");
                handles.push(Handle {
                    session,
                    live: true,
                    user,
                    used: now,
                });
            }
            Op::Rebind(i, user) | Op::Regenerate(i, user) => {
                let Some(i) = pick(i, &handles) else { continue };
                let handle = &mut handles[i];
                handle.session.set_user(user.map(|u| USERS[u]));
                let result = if matches!(op, Op::Rebind(..)) {
                    handle.session.save()
                } else {
                    handle.session.regenerate()
                };
                prop_assert_eq!(result.is_ok(), handle.live, "step {}: {:?}", step, op);
                if handle.live {
                    handle.user = user;
                    handle.used = now;
                }
            }
            Op::Update(i) => {
                let Some(i) = pick(i, &handles) else { continue };
                let handle = &mut handles[i];
                let result = handle.session.update(|n| *n += 1);
                prop_assert_eq!(result.is_ok(), handle.live, "step {}", step);
                if handle.live {
                    handle.used = now;
                }
            }
            Op::Destroy(i) => {
                let Some(i) = pick(i, &handles) else { continue };
                handles[i].session.destroy().expect("destroy");
                handles[i].live = false;
            }
            Op::RevokeUser(u) => {
                let revoked = sessions.revoke_user(USERS[u]).expect("revoke");
                prop_assert_eq!(revoked, revoke(&mut handles, u, None), "step {}", step);
            }
            Op::RevokeExcept(u, i) => {
                let Some(i) = pick(i, &handles) else { continue };
                let keep = handles[i].session.id().clone();
                let revoked = sessions
                    .revoke_user_except(USERS[u], &keep)
                    .expect("revoke");
                prop_assert_eq!(revoked, revoke(&mut handles, u, Some(i)), "step {}", step);
            }
            Op::ExpireAll => {
                clock.advance(Duration::from_secs(IDLE + 1));
                let live = handles.iter().filter(|h| h.live).count();
                prop_assert_eq!(sessions.sweep().expect("sweep"), live, "step {}", step);
                for handle in &mut handles {
                    handle.live = false;
                }
                now += IDLE + 1;
            }
            Op::Age => {
                clock.advance(Duration::from_secs(AGE));
                now += AGE;
                let mut expired = 0;
                for handle in handles.iter_mut().filter(|h| h.live && now - h.used > IDLE) {
                    handle.live = false;
                    expired += 1;
                }
                prop_assert_eq!(sessions.sweep().expect("sweep"), expired, "step {}", step);
            }
        }
        listings_match(&sessions, &handles, step, op)?;
    }
    // Nothing of a revoked, destroyed or expired session stays in any user's index.
    clock.advance(Duration::from_secs(IDLE + 1));
    sessions.sweep().expect("sweep");
    let leftovers: BTreeMap<String, usize> = USERS
        .iter()
        .map(|u| ((*u).to_owned(), sessions.user_sessions(u).count()))
        .filter(|(_, n)| *n > 0)
        .collect();
    prop_assert!(leftovers.is_empty(), "{:?}", leftovers);
    Ok(())
}

/// The model's revoke of user `u`'s sessions, but the handle `except`: marks them dead and
/// returns how many there were.
fn revoke(handles: &mut [Handle], u: usize, except: Option<usize>) -> usize {
    let mut revoked = 0;
    for (j, handle) in handles.iter_mut().enumerate() {
        if Some(j) != except && handle.live && handle.user == Some(u) {
            handle.live = false;
            revoked += 1;
        }
    }
    revoked
}

/// After every step: `user_sessions` of each user is exactly the model's live sessions of it.
fn listings_match(
    sessions: &Sessions,
    handles: &[Handle],
    step: usize,
    op: &Op,
) -> Result<(), TestCaseError> {
    for (u, user) in USERS.iter().enumerate() {
        let listed: BTreeSet<String> = sessions
            .user_sessions(user)
            .map(|s| s.expect("list").id().to_string())
            .collect();
        let expected: BTreeSet<String> = handles
            .iter()
            .filter(|h| h.live && h.user == Some(u))
            .map(|h| h.session.id().to_string())
            .collect();
        prop_assert_eq!(listed, expected, "step {}: {:?}, user {}", step, op, user);
    }
    Ok(())
}

fn config() -> Config {
    Config {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/users.txt",
        ))),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn user_sessions_match_the_model_on_memory(ops in prop::collection::vec(op(), 1..40)) {
        run(Arc::new(MemoryArchive::new()), &ops)?;
    }

    #[test]
    fn user_sessions_match_the_model_on_redb(ops in prop::collection::vec(op(), 1..24)) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let archive = session_archive::RedbArchive::builder()
            .durability(session_archive::Durability::None)
            .open(dir.path().join("s.redb"))
            .expect("open");
        run(Arc::new(archive), &ops)?;
    }
}

/// A login's regenerate that fails after its copy is stored (here the expiry hint, which only
/// Redis acts on) leaves no copy behind: the new user lists nothing, the handle keeps its id and
/// its stored binding, and the next regenerate binds the session as asked.
#[test]
fn a_regenerate_failing_after_storing_its_copy_leaves_no_copy_and_the_binding_as_stored() {
    use std::sync::atomic::{AtomicBool, Ordering};

    use session_archive::Error;
    use session_archive::conformance::{Call, Hooked};

    let archive = Arc::new(MemoryArchive::new());
    let fail = Arc::new(AtomicBool::new(false));
    let failing = Arc::clone(&fail);
    let hooked = Hooked::new(Arc::clone(&archive), move |call| match call {
        // A session's own domain, not an index's: the hint on the stored copy.
        Call::ExpireDomain { domain, .. }
            if domain.len() == 36 && failing.load(Ordering::SeqCst) =>
        {
            Err(Error::Backend {
                backend: "test",
                operation: "expire a domain",
                source: "injected failure".into(),
            })
        }
        _ => Ok(()),
    });
    let sessions = Sessions::new(hooked);
    let mut session = sessions.start(None, 1_u32).unwrap();
    session.set_user(Some("alice"));
    session.save().unwrap();
    let id = session.id().clone();

    fail.store(true, Ordering::SeqCst);
    session.set_user(Some("bob"));
    assert!(session.regenerate().is_err());
    assert_eq!(session.id(), &id);
    let bob: Vec<_> = sessions
        .user_sessions("bob")
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(bob.is_empty(), "a copy no client holds is listed under bob");
    let domains: Vec<String> = archive
        .list_domains(None, 1000)
        .unwrap()
        .names
        .into_iter()
        .filter(|domain| domain.len() == 36)
        .collect();
    assert_eq!(domains, [id.to_string()], "a copy was left stored");

    fail.store(false, Ordering::SeqCst);
    session.regenerate().unwrap();
    let bob: Vec<_> = sessions
        .user_sessions("bob")
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0].id(), session.id());
    assert!(sessions.user_sessions("alice").next().is_none());
}

/// A new session bound to `alice`, saved; returns its id.
fn saved_for_alice(sessions: &Sessions) -> String {
    let mut session = sessions.start(None, 0_u32).expect("start");
    session.set_user(Some("alice"));
    session.save().expect("save");
    session.id().to_string()
}

/// Sessions over `archive` with a 600 s idle timeout and no absolute lifetime, so that use keeps
/// a session alive for ever, on a manual clock.
fn idle_only(archive: impl Archive + 'static) -> (Sessions, ManualClock) {
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let sessions = Sessions::builder(archive)
        .idle_timeout(Duration::from_secs(600))
        .absolute_lifetime(None)
        .clock(clock.clone())
        .build();
    (sessions, clock)
}

/// On backends that expire domains themselves (Redis), a user's index outlives every session it
/// lists: a session kept alive by use far longer than its idle timeout, with no absolute
/// lifetime, has its user index's expiry moved on with its own at each touch, never behind it.
#[test]
fn a_user_index_never_expires_before_a_session_kept_alive_by_use() {
    use std::sync::Mutex;

    use session_archive::conformance::{Call, Hooked};

    let expiries: Arc<Mutex<Vec<(String, SystemTime)>>> = Arc::default();
    let seen = Arc::clone(&expiries);
    let hooked = Hooked::new(MemoryArchive::new(), move |call| {
        if let Call::ExpireDomain { domain, at } = call {
            seen.lock().unwrap().push(((*domain).to_owned(), *at));
        }
        Ok(())
    });
    let (sessions, clock) = idle_only(hooked);
    let id = saved_for_alice(&sessions);
    // 50 visits 300 s apart: 4 hours, far past the 660 s the index was first given.
    for visit in 0..50 {
        clock.advance(Duration::from_secs(300));
        let mut session = sessions.start(Some(&id), 0_u32).unwrap();
        assert_eq!(
            session.id().as_str(),
            id,
            "visit {visit}: the session expired"
        );
        session.update(|n| *n += 1).unwrap();
        let expiries = expiries.lock().unwrap();
        let last = |user: bool| {
            expiries
                .iter()
                .rev()
                .find(|(domain, _)| {
                    if user {
                        domain.starts_with("user-")
                    } else {
                        *domain == id
                    }
                })
                .map(|(_, at)| *at)
                .unwrap()
        };
        assert!(
            last(true) >= last(false),
            "visit {visit}: the user index expires before its session"
        );
    }
    assert_eq!(sessions.user_sessions("alice").count(), 1);
}

/// A session found expired when started is removed with its entry in its user's index, as a
/// destroy is: the index stays exact without waiting for a listing to drop the entry.
#[test]
fn a_session_found_expired_on_start_leaves_its_user_index() {
    let archive = Arc::new(MemoryArchive::new());
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let sessions = Sessions::builder(Arc::clone(&archive))
        .idle_timeout(Duration::from_secs(600))
        .clock(clock.clone())
        .build();
    let id = saved_for_alice(&sessions);
    let user_entries = || {
        archive
            .domains()
            .map(Result::unwrap)
            .filter(|domain| domain.starts_with("user-"))
            .map(|domain| archive.keys(&domain).count())
            .sum::<usize>()
    };
    assert_eq!(user_entries(), 1);

    clock.advance(Duration::from_secs(601));
    assert!(sessions.start(Some(&id), 0_u32).unwrap().is_new());
    assert_eq!(user_entries(), 0);
}

/// A binding is stored by whichever write comes next: `update` and `update_send` too, not only
/// `save` and `regenerate`.
#[test]
fn set_user_then_update_binds_the_session() {
    let sessions = Sessions::new(MemoryArchive::new());
    let listed = |user: &str| -> Vec<String> {
        sessions
            .user_sessions(user)
            .map(|s| s.expect("list").id().to_string())
            .collect()
    };
    let mut one = sessions.start(None, 0_u32).unwrap();
    one.save().unwrap();
    one.set_user(Some("alice"));
    one.update(|n| *n += 1).unwrap();
    assert_eq!(listed("alice"), [one.id().to_string()]);

    let mut two = sessions.start(None, 0_u32).unwrap();
    two.save().unwrap();
    two.set_user(Some("bob"));
    two.update_send(|n| *n += 1).unwrap();
    assert_eq!(listed("bob"), [two.id().to_string()]);

    // Rebinding through an update moves the entry.
    two.set_user(Some("alice"));
    two.update_send(|n| *n += 1).unwrap();
    assert!(listed("bob").is_empty());
    assert_eq!(listed("alice").len(), 2);
}

/// A user with more sessions than one listing page holds: every one is listed, and a revoke
/// reaches every one, page after page.
#[test]
fn a_user_with_more_sessions_than_a_page_is_listed_and_revoked_whole() {
    let sessions = Sessions::new(MemoryArchive::new());
    let count = session_archive::archive::DEFAULT_PAGE_SIZE + 76;
    let mut ids = BTreeSet::new();
    for _ in 0..count {
        let mut session = sessions.start(None, 0_u32).unwrap();
        session.set_user(Some("alice"));
        session.save().unwrap();
        ids.insert(session.id().to_string());
    }
    let listed: BTreeSet<String> = sessions
        .user_sessions("alice")
        .map(|s| s.unwrap().id().to_string())
        .collect();
    assert_eq!(listed, ids);

    let keep = session_archive::SessionId::parse(ids.first().unwrap()).unwrap();
    assert_eq!(
        sessions.revoke_user_except("alice", &keep).unwrap(),
        count - 1
    );
    let left: Vec<String> = sessions
        .user_sessions("alice")
        .map(|s| s.unwrap().id().to_string())
        .collect();
    assert_eq!(left, [keep.to_string()]);
    assert_eq!(sessions.revoke_user("alice").unwrap(), 1);
    assert_eq!(sessions.user_sessions("alice").count(), 0);
}

/// The user index's expiry moves before the touch it covers: when moving it fails (a Redis
/// hiccup), the touch is not written either, so the session never outlives its index.
#[test]
fn a_failed_user_index_expiry_leaves_the_touch_unwritten() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use session_archive::conformance::{Call, Hooked};
    use session_archive::{Error, META_KEY};

    let inner = Arc::new(MemoryArchive::new());
    let user_expiry: Arc<Mutex<Option<SystemTime>>> = Arc::default();
    let fail = Arc::new(AtomicBool::new(false));
    let (seen, failing) = (Arc::clone(&user_expiry), Arc::clone(&fail));
    let hooked = Hooked::new(Arc::clone(&inner), move |call| {
        if let Call::ExpireDomain { domain, at } = call
            && domain.starts_with("user-")
        {
            if failing.swap(false, Ordering::SeqCst) {
                return Err(Error::Backend {
                    backend: "test",
                    operation: "expire a domain",
                    source: "injected failure".into(),
                });
            }
            *seen.lock().unwrap() = Some(*at);
        }
        Ok(())
    });
    let (sessions, clock) = idle_only(hooked);
    let id = saved_for_alice(&sessions);
    clock.advance(Duration::from_secs(300));
    fail.store(true, Ordering::SeqCst);
    // The visit's touch fails, or is written only with the index moved first.
    let _ = sessions.start(Some(&id), 0_u32);
    let meta: serde_json::Value =
        serde_json::from_slice(&inner.get(&id, META_KEY).unwrap().unwrap()).unwrap();
    let session_expires =
        SystemTime::UNIX_EPOCH + Duration::from_secs(meta["seen"].as_u64().unwrap() + 600);
    let index_expires = user_expiry.lock().unwrap().unwrap();
    assert!(
        index_expires >= session_expires,
        "the user index expires at {index_expires:?}, its live session at {session_expires:?}"
    );
}

/// Another request, run inside one of the first's archive calls.
type Other = Box<dyn FnOnce() + Send>;

/// Lists the ids `sessions` lists for `user`.
fn listed(sessions: &Sessions, user: &str) -> Vec<String> {
    sessions
        .user_sessions(user)
        .map(|s| s.expect("list").id().to_string())
        .collect()
}

/// Two rebinds (issue 24, defect 1): request 1 rebinds alice's session to bob; after its write
/// lands and before it removes alice's entry, request 2 starts the session (bound to bob),
/// rebinds it to alice and saves. Request 1's removal of the entry of the binding it replaced
/// must not remove the entry of request 2's binding: the session is bound to alice, listed and
/// revoked as hers.
#[test]
fn a_rebind_landing_before_the_replaced_entry_is_removed_keeps_its_own_entry() {
    use session_archive::conformance::{Call, Hooked};
    use std::sync::Mutex;

    let inner = Arc::new(MemoryArchive::new());
    let plain = Sessions::new(Arc::clone(&inner));
    let id = saved_for_alice(&plain);
    let other: Arc<Mutex<Option<Other>>> = Arc::default();
    let hook_other = Arc::clone(&other);
    let hooked = Sessions::new(Hooked::new(Arc::clone(&inner), move |call| {
        let removal = match *call {
            Call::Remove { domain, .. } => domain.starts_with("user-"),
            Call::RemoveMany { entries } => entries.iter().any(|(d, _)| d.starts_with("user-")),
            _ => false,
        };
        if removal && let Some(other) = hook_other.lock().expect("lock").take() {
            other();
        }
        Ok(())
    }));
    let mut first = hooked.start(Some(&id), 0_u32).expect("start");
    let (second_sessions, second_id) = (plain.clone(), id.clone());
    *other.lock().expect("lock") = Some(Box::new(move || {
        let mut second = second_sessions
            .start(Some(&second_id), 0_u32)
            .expect("start");
        assert_eq!(second.user(), Some("bob"), "request 1's write landed first");
        second.set_user(Some("alice"));
        second.save().expect("request 2 rebinds to alice");
    }));
    first.set_user(Some("bob"));
    first.save().expect("request 1 rebinds to bob");
    assert!(
        other.lock().expect("lock").is_none(),
        "request 2 ran inside"
    );

    assert_eq!(
        plain.start(Some(&id), 0_u32).expect("start").user(),
        Some("alice")
    );
    assert_eq!(listed(&plain, "alice"), std::slice::from_ref(&id));
    assert!(listed(&plain, "bob").is_empty());
    assert_eq!(plain.revoke_user("alice").expect("revoke"), 1);
    assert!(
        !plain
            .is_live(&session_archive::SessionId::parse(&id).expect("an id"))
            .expect("is_live")
    );
}

/// A revoke ends every stored session bound to the user, whatever it thinks of their expiry
/// (issue 24, defect 2): an app without an idle timeout keeps an 8-day-old session live; an
/// admin `Sessions` with the default timeouts (and the command, which has no settings recorded
/// to go by) must still end it.
#[test]
fn a_revoke_ends_sessions_that_look_expired_to_the_revoker() {
    let archive = Arc::new(MemoryArchive::new());
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let app = Sessions::builder(Arc::clone(&archive))
        .idle_timeout(None)
        .absolute_lifetime(None)
        .clock(clock.clone())
        .build();
    let id = saved_for_alice(&app);
    let id = session_archive::SessionId::parse(&id).expect("an id");
    clock.advance(Duration::from_secs(8 * 24 * 3600));
    assert!(app.is_live(&id).expect("is_live"), "live to the app");

    let admin = Sessions::builder(Arc::clone(&archive))
        .idle_timeout(Duration::from_secs(3600))
        .clock(clock.clone())
        .build();
    assert_eq!(admin.revoke_user("alice").expect("revoke"), 1);
    assert!(!app.is_live(&id).expect("is_live"), "the revoke missed it");
    assert_ne!(
        app.start(Some(id.as_str()), 0_u32).expect("start").id(),
        &id
    );
}

/// A revoke walks the user's index again until a walk finds it as the one before left it: a
/// regenerate that runs whole just after the first walk listed the index (so the walk never
/// sees the copy's new entry) is caught by the next walk, and the copy is revoked too.
#[test]
fn a_revoke_walks_again_after_a_regenerate_adds_an_entry_mid_walk() {
    use session_archive::conformance::{Call, Hooked};
    use std::sync::Mutex;

    let inner = Arc::new(MemoryArchive::new());
    let plain = Sessions::new(Arc::clone(&inner));
    let (a, s) = (saved_for_alice(&plain), saved_for_alice(&plain));
    let regenerated: Arc<Mutex<Option<String>>> = Arc::default();
    let (listed_once, hook_regenerated) = (Arc::new(Mutex::new(false)), Arc::clone(&regenerated));
    let (hook_plain, hook_s) = (plain.clone(), s.clone());
    let revoker = Sessions::new(Hooked::new(Arc::clone(&inner), move |call| {
        let mut listed = listed_once.lock().expect("lock");
        match *call {
            Call::ListKeys { domain, .. } if domain.starts_with("user-") => *listed = true,
            _ if *listed && hook_regenerated.lock().expect("lock").is_none() => {
                let mut session = hook_plain.start(Some(&hook_s), 0_u32).expect("start");
                session.regenerate().expect("regenerate mid-walk");
                *hook_regenerated.lock().expect("lock") = Some(session.id().to_string());
            }
            _ => {}
        }
        Ok(())
    }));
    assert_eq!(revoker.revoke_user("alice").expect("revoke"), 2);
    let copy = regenerated
        .lock()
        .expect("lock")
        .clone()
        .expect("the regenerate ran mid-walk");
    for id in [a, s, copy] {
        let id = session_archive::SessionId::parse(&id).expect("an id");
        assert!(
            !plain.is_live(&id).expect("is_live"),
            "a session of alice survived"
        );
    }
    assert!(listed(&plain, "alice").is_empty());
}
