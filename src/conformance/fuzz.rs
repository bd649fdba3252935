//! The bodies of the fuzz targets in `fuzz/` (feature `fuzzing`), and the [`Arbitrary`] inputs
//! they decode: the model test's own [`Op`], whose names are read as [`FuzzName`]s, and the
//! inputs of the session and redb-file targets.
//!
//! Each target is one function taking the raw fuzzer input, so that the cargo-fuzz targets and
//! the seed-corpus replay test (`tests/fuzz_seeds.rs`) run the same code. Like the rest of
//! [`conformance`](super), a target panics when the library misbehaves; any other input, however
//! hostile, must return normally.
//!
//! - [`archive_ops`]: operation sequences on [`MemoryArchive`], [`RedbArchive`] and
//!   [`DirArchive`], checked against the [`Model`] after every step by [`check_step`].
//! - [`session_start`]: hostile cookie headers and ids, and arbitrary bytes stored as a session's
//!   `session.json` and `meta.json`, through [`Sessions::start`] and [`Session::load`].
//! - [`redb_file`]: arbitrary bytes as an existing redb file, and a valid file with bytes flipped,
//!   through [`RedbArchive::open`] and every operation.
//!
//! [`Session::load`]: crate::Session::load

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use arbitrary::{Arbitrary, Unstructured};
use serde::{Deserialize, Serialize};

use super::{Model, Op, check_step, snapshot};
use crate::archive::dir::DirArchive;
use crate::archive::memory::MemoryArchive;
use crate::archive::redb::{Durability, RedbArchive};
use crate::archive::{Archive, ArchiveExt};
use crate::error::Error;
use crate::name::validate_domain;
use crate::session::clock::ManualClock;
use crate::session::id::SessionId;
use crate::session::{META_KEY, STATE_KEY, Session, Sessions};

pub use super::model::fuzz_input::FuzzName;

/// The longest operation sequence one input runs; longer inputs are cut, so that one input stays
/// fast enough for the fuzzer's timeout.
pub const MAX_OPS: usize = 64;

/// Decodes an operation sequence as the `archive_ops` target does: at most [`MAX_OPS`] long, or
/// `None` if the input is too short.
///
/// # Examples
///
/// ```
/// use session_archive::conformance::{Op, fuzz::decode_ops};
///
/// let ops = decode_ops(b"\x01\xff\xff\xff\xff\x00").expect("decodes");
/// assert!(matches!(ops[..], [Op::RemoveDomains(ref domains)] if domains.is_empty()));
/// ```
pub fn decode_ops(data: &[u8]) -> Option<Vec<Op>> {
    let mut ops = Vec::<Op>::arbitrary_take_rest(Unstructured::new(data)).ok()?;
    ops.truncate(MAX_OPS);
    Some(ops)
}

/// Runs `ops` on the archive `open` makes in `dir`, checking it against the model after every
/// step. `open` is called again for [`Op::Reopen`] when `persistent`.
fn run_ops<A: Archive>(ops: &[Op], dir: &Path, persistent: bool, open: impl Fn(&Path) -> A) {
    let mut archive = Some(open(dir));
    let mut model = Model::new();
    for (step, op) in ops.iter().enumerate() {
        if persistent && matches!(op, Op::Reopen) {
            drop(archive.take());
            archive = Some(open(dir));
        }
        let current = archive
            .as_ref()
            .expect("the archive is reopened before use");
        if let Err(failure) = check_step(current, &mut model, op) {
            panic!("step {step} of {ops:#?}\n{failure}");
        }
    }
}

/// The `archive_ops` target: decodes an operation sequence and runs it on a [`MemoryArchive`], a
/// [`RedbArchive`] (with [`Durability::None`]: the fuzzer does not crash the machine, and syncing
/// every write would make it a hundred times slower) and a [`DirArchive`], each in a fresh
/// temporary directory, checking every step against the [`Model`] with [`check_step`].
///
/// # Examples
///
/// ```
/// session_archive::conformance::fuzz::archive_ops(b"\x01\x00any bytes at all\xff\x00");
/// ```
pub fn archive_ops(data: &[u8]) {
    let Some(ops) = decode_ops(data) else {
        return;
    };
    run_ops(&ops, Path::new(""), false, |_| MemoryArchive::new());
    let dir = tempfile::tempdir().expect("create a temporary directory");
    run_ops(&ops, dir.path(), true, |dir| {
        RedbArchive::builder()
            .durability(Durability::None)
            .open(dir.join("archive.redb"))
            .expect("open the redb archive")
    });
    let dir = tempfile::tempdir().expect("create a temporary directory");
    run_ops(&ops, dir.path(), true, |dir| {
        DirArchive::open(dir.join("tree")).expect("open the directory archive")
    });
}

/// The stored session of [`session_start`]; its id is well formed.
const STORED_ID: &str = "0d0d0c2f-6bb9-4f5f-8a41-d4fe9acf3dd2";

/// The input of [`session_start`].
#[derive(Debug, Clone, Arbitrary)]
pub struct SessionInput {
    /// A `Cookie` request header.
    pub header: String,
    /// An id as a client might send it, tried with [`Sessions::start`] directly.
    pub id: String,
    /// Bytes stored under `session.json` of the stored session, if any.
    pub state: Option<Vec<u8>>,
    /// Bytes stored under `meta.json` of the stored session, if any.
    pub meta: Option<Vec<u8>>,
    /// Whether the same bytes are also stored under `id` itself, when it is a valid domain name.
    pub plant_under_id: bool,
    /// Whether the state type is a struct (so valid JSON can still be corrupt state) rather than
    /// any JSON value.
    pub typed: bool,
}

/// The struct state of [`session_start`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct TypedState {
    name: String,
    visits: u32,
}

/// The `session_start` target: stores arbitrary bytes as a session's `session.json` and
/// `meta.json` (in a [`MemoryArchive`], so only the session layer is fuzzed), then starts
/// sessions from a hostile `Cookie` header, a hostile id and the stored id, and loads them.
///
/// It checks that a hostile id is never adopted (an adopted session always has the stored,
/// well-formed id), that a new session writes nothing, that an error is [`Error::CorruptSession`]
/// and leaves the stored bytes as they were, that state which does not decode is never adopted,
/// and that an adopted session holds exactly the decoded stored state, before and after `load`.
///
/// # Examples
///
/// ```
/// session_archive::conformance::fuzz::session_start(b"session-id=..; x=\x00\x01\x02");
/// ```
pub fn session_start(data: &[u8]) {
    let Ok(input) = SessionInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    if input.typed {
        check_sessions::<TypedState>(&input);
    } else {
        check_sessions::<serde_json::Value>(&input);
    }
}

/// Everything [`check_sessions`] knows about one input: the sessions over the planted archive,
/// and what the planted state decodes to, if anything.
struct Planted<T> {
    archive: Arc<MemoryArchive>,
    sessions: Sessions,
    decoded: Option<T>,
}

/// Stores the input's bytes as the session [`STORED_ID`] and, when asked and the id is malformed
/// but a valid domain, under the input's id too: a session that must never be found. (A
/// well-formed id would name a genuine stored session.)
fn plant<T: serde::de::DeserializeOwned>(input: &SessionInput) -> Planted<T> {
    let archive = Arc::new(MemoryArchive::new());
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let sessions = Sessions::builder(Arc::clone(&archive)).clock(clock).build();
    let mut planted = vec![STORED_ID];
    if input.plant_under_id
        && SessionId::parse(&input.id).is_none()
        && validate_domain(&input.id).is_ok()
    {
        planted.push(&input.id);
    }
    for domain in &planted {
        if let Some(state) = &input.state {
            archive.set(domain, STATE_KEY, state).expect("plant state");
        }
        if let Some(meta) = &input.meta {
            archive.set(domain, META_KEY, meta).expect("plant meta");
        }
    }
    let decoded = input
        .state
        .as_deref()
        .and_then(|bytes| serde_json::from_slice(bytes).ok());
    Planted {
        archive,
        sessions,
        decoded,
    }
}

fn check_sessions<T>(input: &SessionInput)
where
    T: Serialize + serde::de::DeserializeOwned + Default + PartialEq + std::fmt::Debug,
{
    let planted = plant::<T>(input);
    let from_cookie = planted.sessions.id_from_cookie(&input.header);
    if let Some(id) = &from_cookie {
        assert!(
            well_formed_id(id.as_str()),
            "id_from_cookie({:?}) gave a malformed id",
            input.header
        );
    }
    for id in [
        Some(input.id.as_str()),
        from_cookie.as_ref().map(SessionId::as_str),
        Some(STORED_ID),
    ] {
        check_start(&planted, input, id);
    }
}

/// Starts a session from `id` and checks the outcome against what was planted.
fn check_start<T>(planted: &Planted<T>, input: &SessionInput, id: Option<&str>)
where
    T: Serialize + serde::de::DeserializeOwned + Default + PartialEq + std::fmt::Debug,
{
    let before = snapshot(&*planted.archive).expect("snapshot");
    let result = planted.sessions.start::<T>(id, T::default());
    let after = snapshot(&*planted.archive).expect("snapshot");
    match result {
        Ok(session) if !session.is_new() => check_adopted(session, planted, input, id, &after),
        Ok(session) => check_new(&session, input, id, &before, &after),
        Err(Error::CorruptSession { id: corrupt, .. }) => {
            assert_eq!(corrupt, STORED_ID, "start({id:?}) blamed another session");
            assert_eq!(
                id,
                Some(STORED_ID),
                "start({id:?}) read a session it must not"
            );
            assert_eq!(after, before, "start({id:?}) changed a corrupt session");
            assert!(
                planted.decoded.is_none() || input.meta.is_some(),
                "start({id:?}) called decodable state with no timestamps corrupt"
            );
        }
        Err(other) => panic!("start({id:?}) failed: {other:?}"),
    }
}

/// An adopted session is the stored one, asked for by its id, holding the decoded stored state
/// before and after `load`, and starting it rewrote nothing.
fn check_adopted<T>(
    mut session: Session<T>,
    planted: &Planted<T>,
    input: &SessionInput,
    id: Option<&str>,
    after: &Model,
) where
    T: Serialize + serde::de::DeserializeOwned + Default + PartialEq + std::fmt::Debug,
{
    assert_eq!(
        session.id().as_str(),
        STORED_ID,
        "start({id:?}) adopted a session that was not stored"
    );
    assert_eq!(id, Some(STORED_ID), "start({id:?}) adopted another id");
    let decoded = planted.decoded.as_ref().expect("adopted state must decode");
    assert_eq!(&*session, decoded, "adopted state differs from the stored");
    assert_eq!(
        after.get(STORED_ID).and_then(|keys| keys.get(STATE_KEY)),
        input.state.as_ref(),
        "start rewrote the stored state"
    );
    session.load().expect("load an adopted session");
    assert_eq!(&*session, decoded, "loaded state differs from the stored");
}

/// A new session has a fresh id, never the client's, and starting it wrote nothing.
fn check_new<T>(
    session: &Session<T>,
    input: &SessionInput,
    id: Option<&str>,
    before: &Model,
    after: &Model,
) {
    assert!(
        id != Some(session.id().as_str()),
        "start({id:?}) took the client's id for a new session"
    );
    assert!(
        !after.contains_key(session.id().as_str()),
        "a new session's id is already stored"
    );
    // A new session writes nothing; the one change allowed is the removal of the stored session,
    // asked for by its id, when it has expired.
    let mut expected = before.clone();
    if id == Some(STORED_ID) && !after.contains_key(STORED_ID) {
        expected.remove(STORED_ID);
    }
    assert_eq!(*after, expected, "start({id:?}) of a new session wrote");
    // Without timestamps the stored session cannot have expired: it is adopted, or its state is
    // corrupt, which is an error rather than a fresh session.
    assert!(
        !(id == Some(STORED_ID) && input.meta.is_none() && input.state.is_some()),
        "start({id:?}) ignored a stored session without timestamps"
    );
}

/// The input of [`redb_file`].
#[derive(Debug, Clone, Arbitrary)]
pub enum RedbFileInput {
    /// These bytes are the whole file.
    Raw(Vec<u8>, Vec<Op>),
    /// A valid archive holding a few sessions, with the byte at each offset (modulo the file's
    /// length) XORed with the mask.
    Flipped(Vec<(u32, u8)>, Vec<Op>),
}

/// A valid archive file, made once per process.
fn valid_redb_file() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let path = dir.path().join("valid.redb");
        let archive = RedbArchive::builder()
            .durability(Durability::None)
            .open(&path)
            .expect("create a redb archive");
        for i in 0..20 {
            let domain = format!("0d0d0c2f-6bb9-4f5f-8a41-d4fe9acf3d{i:02}");
            archive
                .set(&domain, STATE_KEY, br#"{"name":"a","visits":1}"#)
                .expect("set");
            archive
                .set(&domain, META_KEY, br#"{"created":1,"seen":2}"#)
                .expect("set");
        }
        archive.set("big", "value", &[7; 9000]).expect("set");
        drop(archive);
        std::fs::read(&path).expect("read the redb file")
    })
}

/// The `redb_file` target: writes arbitrary bytes, or a valid archive with bytes flipped, as an
/// existing redb file, opens it with the default options (integrity check on) and, if that
/// succeeds, runs the operations. Every call must return `Ok` or `Err`; a panic, an abort or a
/// hang (caught by libFuzzer's `-timeout`) is a failure.
///
/// # Examples
///
/// ```
/// session_archive::conformance::fuzz::redb_file(b"\x00not a redb file at all");
/// ```
pub fn redb_file(data: &[u8]) {
    let Ok(input) = RedbFileInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let (bytes, ops) = match input {
        RedbFileInput::Raw(bytes, ops) => (bytes, ops),
        RedbFileInput::Flipped(flips, ops) => {
            let mut bytes = valid_redb_file().to_vec();
            for (offset, mask) in flips {
                let at = usize::try_from(offset).unwrap_or(0) % bytes.len();
                bytes[at] ^= mask;
            }
            (bytes, ops)
        }
    };
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let path = dir.path().join("archive.redb");
    std::fs::write(&path, &bytes).expect("write the redb file");
    let Ok(archive) = RedbArchive::open(&path) else {
        return;
    };
    for op in ops.iter().take(MAX_OPS) {
        match op {
            Op::ListDomains | Op::Reopen => walk(&archive),
            other => {
                let _ = super::model::apply_to_archive(&archive, other, MAX_PAGES);
            }
        }
    }
}

/// The most pages one paged listing of [`redb_file`] reads: a corrupt file may hold a cycle.
const MAX_PAGES: usize = 1024;

/// Reads every entry of the archive, giving up on a domain or a listing at its first error.
fn walk(archive: &RedbArchive) {
    for name in archive.domains() {
        let Ok(name) = name else { break };
        for key in archive.keys(&name) {
            let Ok(key) = key else { break };
            let _ = archive.get(&name, &key);
        }
    }
}

/// Whether `text` is a lowercase hyphenated UUID: an oracle that shares no code with
/// [`SessionId::parse`], built on the `uuid` crate's own parser and formatter.
fn well_formed_id(text: &str) -> bool {
    uuid::Uuid::try_parse(text).is_ok_and(|uuid| uuid.hyphenated().to_string() == text)
}
