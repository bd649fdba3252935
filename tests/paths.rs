//! Every public path stays: the root names older code uses (now hidden re-exports) and the module
//! homes they moved to name the same items. This file only has to compile; the test checks that
//! the old and new paths are the same items where that can be observed.

#![allow(unused_imports)]

// The root, as it was before the module homes.
#[cfg(all(feature = "archive-dir", unix))]
use session_archive::DirArchive;
#[cfg(feature = "archive-postgres")]
use session_archive::PostgresArchive;
use session_archive::{
    Archive, ArchiveExt, Blocking, BoxError, CORRUPT_DOMAIN, Clock, CookieAction,
    DEFAULT_ABSOLUTE_LIFETIME, DEFAULT_COOKIE_NAME, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_STATE_SIZE,
    DEFAULT_PAGE_SIZE, DEFAULT_SWEEP_GRANULARITY, Error, MAX_NAME_LEN, MAX_USER_LEN, META_KEY,
    ManualClock, MemoryArchive, NameKind, NameProblem, Names, OnCorrupt, Page, Result, STATE_KEY,
    Session, SessionId, Sessions, SessionsBuilder, StoredSettings, SystemClock, UserSession,
    validate_domain, validate_entry, validate_name,
};
#[cfg(feature = "archive-redb")]
use session_archive::{Durability, RedbArchive, RedbArchiveBuilder};
#[cfg(feature = "archive-redis")]
use session_archive::{RedisArchive, RedisArchiveBuilder};

// The module homes.
#[cfg(all(feature = "archive-dir", unix))]
use session_archive::archive::dir::DirArchive as _;
#[cfg(feature = "archive-postgres")]
use session_archive::archive::postgres::{
    DEFAULT_CONNECT_TIMEOUT as PG_CONNECT_TIMEOUT, DEFAULT_POOL_SIZE, DEFAULT_STATEMENT_TIMEOUT,
    DEFAULT_TABLE, PostgresArchive as _, PostgresArchiveBuilder,
};
#[cfg(feature = "archive-redb")]
use session_archive::archive::redb::{
    DEFAULT_CACHE_SIZE, Durability as _, RedbArchive as _, RedbArchiveBuilder as _,
};
#[cfg(feature = "archive-redis")]
use session_archive::archive::redis::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, RedisArchive as _, RedisArchiveBuilder as _,
};
use session_archive::archive::{
    Archive as _, ArchiveExt as _, Blocking as _, DEFAULT_PAGE_SIZE as PAGE, Names as _, Page as _,
    memory::MemoryArchive as _,
};
#[cfg(unix)]
use session_archive::cli::{
    Access, CliError, Limit, MigrateOptions, Migrated, Spec, Stats, SweepOptions, Swept, migrate,
    one_line, revoke_user, stats, sweep, user_sessions,
};
use session_archive::error::{
    BoxError as _, Chain, Error as _, NameKind as _, NameProblem as _, Result as _,
};
use session_archive::name::{MAX_NAME_LEN as NAME_LEN, validate_name as validate};
use session_archive::session::{
    CORRUPT_DOMAIN as _, Clock as _, CookieAction as _, DEFAULT_IDLE_TIMEOUT as IDLE,
    ManualClock as _, OnCorrupt as _, Session as _, SessionId as _, Sessions as _,
    SessionsBuilder as _, StoredSettings as _, SystemClock as _, UserSession as _,
};

#[test]
fn old_and_new_paths_name_the_same_items() {
    assert_eq!(DEFAULT_PAGE_SIZE, PAGE);
    assert_eq!(MAX_NAME_LEN, NAME_LEN);
    assert_eq!(DEFAULT_IDLE_TIMEOUT, IDLE);
    assert_eq!(
        validate_name(NameKind::Key, "..").is_err(),
        validate(NameKind::Key, "..").is_err()
    );
    #[cfg(feature = "archive-redb")]
    assert_eq!(RedbArchiveBuilder::DEFAULT_CACHE_SIZE, DEFAULT_CACHE_SIZE);
    let err = Error::SessionGone {
        id: "0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2".into(),
    };
    #[cfg(unix)]
    assert_eq!(one_line(&err), Chain(&err).to_string());
}
