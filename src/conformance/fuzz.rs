//! The bodies of the fuzz targets in `fuzz/` (feature `fuzzing`), and the [`Arbitrary`] inputs
//! they decode.
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

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use arbitrary::{Arbitrary, Unstructured};
use serde::{Deserialize, Serialize};

use super::{Model, Op, check_step, snapshot};
use crate::archive::{Archive, ArchiveExt};
use crate::error::Error;
use crate::name::MAX_NAME_LEN;
use crate::session::clock::ManualClock;
use crate::session::id::SessionId;
use crate::session::{META_KEY, STATE_KEY, Sessions};
use crate::{DirArchive, Durability, MemoryArchive, RedbArchive};

/// The longest operation sequence one input runs; longer inputs are cut, so that one input stays
/// fast enough for the fuzzer's timeout.
pub const MAX_OPS: usize = 64;

/// Names the fuzzer picks by index: valid ones sharing prefixes, the session keys, and one of
/// each kind of invalid name.
const NAME_POOL: &[&str] = &[
    "a",
    "ab",
    "a b",
    "b",
    "ü",
    "k",
    "session.json",
    "meta.json",
    "",
    ".",
    "..",
    ".x",
    "a/b",
    "a\\b",
    "a\0b",
    "\u{7f}",
    "\u{85}",
];

/// A domain or key name decoded from fuzzer bytes; [`FuzzName::to_name`] gives the string.
#[derive(Debug, Clone, Arbitrary)]
pub enum FuzzName {
    /// One of a small pool of names, so that operations meet each other's data.
    Pool(u8),
    /// Arbitrary text, any Unicode.
    Text(String),
    /// Arbitrary bytes, read as UTF-8 with invalid sequences replaced.
    Bytes(Vec<u8>),
    /// `n` repeated to a length around [`MAX_NAME_LEN`] (from 4 under to 3 over).
    Long(u8),
}

impl FuzzName {
    /// The name this input stands for.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::conformance::fuzz::FuzzName;
    ///
    /// assert_eq!(FuzzName::Pool(0).to_name(), "a");
    /// assert_eq!(FuzzName::Long(7).to_name().len(), session_archive::MAX_NAME_LEN + 3);
    /// ```
    pub fn to_name(&self) -> String {
        match self {
            FuzzName::Pool(i) => NAME_POOL[usize::from(*i) % NAME_POOL.len()].to_owned(),
            FuzzName::Text(text) => text.clone(),
            FuzzName::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            FuzzName::Long(n) => "n".repeat(MAX_NAME_LEN - 4 + usize::from(n % 8)),
        }
    }
}

/// One operation of [`archive_ops`]: every [`Op`], plus paged listing with a small page size.
#[derive(Debug, Clone, Arbitrary)]
#[allow(missing_docs, reason = "the variants mirror Op")]
pub enum FuzzOp {
    Get(FuzzName, FuzzName),
    Set(FuzzName, FuzzName, Vec<u8>),
    Has(FuzzName, FuzzName),
    Remove(FuzzName, FuzzName),
    HasDomain(FuzzName),
    RemoveDomain(FuzzName),
    CompareAndSwap(FuzzName, FuzzName, Option<Vec<u8>>, Option<Vec<u8>>),
    ListDomains,
    ListKeys(FuzzName),
    /// Drop and reopen a persistent archive; checked as a no-op on a volatile one.
    Reopen,
    /// List domains, or the keys of a domain, page by page with a page size of 1 to 4.
    ListPaged(Option<FuzzName>, u8),
    SetMany(Vec<(FuzzName, FuzzName, Vec<u8>)>),
    RemoveMany(Vec<(FuzzName, FuzzName)>),
    RemoveDomains(Vec<FuzzName>),
}

impl FuzzOp {
    /// The model-test [`Op`] this stands for, or `None` for [`FuzzOp::ListPaged`].
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::conformance::{Op, fuzz::{FuzzName, FuzzOp}};
    ///
    /// let op = FuzzOp::HasDomain(FuzzName::Pool(1)).to_op();
    /// assert!(matches!(op, Some(Op::HasDomain(d)) if d == "ab"));
    /// ```
    pub fn to_op(&self) -> Option<Op> {
        Some(match self {
            FuzzOp::Get(d, k) => Op::Get(d.to_name(), k.to_name()),
            FuzzOp::Set(d, k, v) => Op::Set(d.to_name(), k.to_name(), v.clone()),
            FuzzOp::Has(d, k) => Op::Has(d.to_name(), k.to_name()),
            FuzzOp::Remove(d, k) => Op::Remove(d.to_name(), k.to_name()),
            FuzzOp::HasDomain(d) => Op::HasDomain(d.to_name()),
            FuzzOp::RemoveDomain(d) => Op::RemoveDomain(d.to_name()),
            FuzzOp::CompareAndSwap(d, k, e, n) => {
                Op::CompareAndSwap(d.to_name(), k.to_name(), e.clone(), n.clone())
            }
            FuzzOp::ListDomains => Op::ListDomains,
            FuzzOp::ListKeys(d) => Op::ListKeys(d.to_name()),
            FuzzOp::Reopen => Op::Reopen,
            FuzzOp::ListPaged(..) => return None,
            FuzzOp::SetMany(entries) => Op::SetMany(
                entries
                    .iter()
                    .map(|(d, k, v)| (d.to_name(), k.to_name(), v.clone()))
                    .collect(),
            ),
            FuzzOp::RemoveMany(entries) => Op::RemoveMany(
                entries
                    .iter()
                    .map(|(d, k)| (d.to_name(), k.to_name()))
                    .collect(),
            ),
            FuzzOp::RemoveDomains(domains) => {
                Op::RemoveDomains(domains.iter().map(FuzzName::to_name).collect())
            }
        })
    }
}

/// Decodes an operation sequence, at most [`MAX_OPS`] long; `None` if the input is too short.
fn decode_ops(data: &[u8]) -> Option<Vec<FuzzOp>> {
    let mut ops = Vec::<FuzzOp>::arbitrary_take_rest(Unstructured::new(data)).ok()?;
    ops.truncate(MAX_OPS);
    Some(ops)
}

/// Pages through domains (`domain` `None`) or one domain's keys with pages of `limit` names, and
/// checks that the pages together list exactly the model's names, each once.
fn check_paged_listing(
    archive: &dyn Archive,
    model: &Model,
    domain: Option<&str>,
    limit: usize,
) -> Result<(), String> {
    let list = |cursor: Option<&str>| match domain {
        None => archive.list_domains(cursor, limit),
        Some(domain) => archive.list_keys(domain, cursor, limit),
    };
    let expected: Vec<&String> = match domain {
        None => model.keys().collect(),
        Some(domain) => match crate::validate_domain(domain) {
            Err(_) => {
                return match list(None) {
                    Err(Error::InvalidName { .. }) => Ok(()),
                    other => Err(format!("paged listing of {domain:?}: got {other:?}")),
                };
            }
            Ok(()) => model
                .get(domain)
                .map(|keys| keys.keys().collect())
                .unwrap_or_default(),
        },
    };
    let mut seen = BTreeSet::new();
    let mut cursor: Option<String> = None;
    // Every page but the last holds at least one name, so a correct backend ends within this.
    for _ in 0..=expected.len() {
        let page = list(cursor.as_deref()).map_err(|e| format!("paged listing: {e:?}"))?;
        if page.names.len() > limit {
            return Err(format!(
                "a page of {} names over the limit {limit}",
                page.names.len()
            ));
        }
        for name in page.names {
            if !seen.insert(name.clone()) {
                return Err(format!("paged listing repeated {name:?}"));
            }
        }
        cursor = page.cursor;
        if cursor.is_none() {
            let listed: Vec<&String> = seen.iter().collect();
            return if listed == expected {
                Ok(())
            } else {
                Err(format!(
                    "paged listing gave {listed:?}, the model holds {expected:?}"
                ))
            };
        }
    }
    Err(format!(
        "paged listing of {} names does not end",
        expected.len()
    ))
}

/// Runs `ops` on the archive `open` makes in `dir`, checking it against the model after every
/// step. `open` is called again for [`FuzzOp::Reopen`] when `persistent`.
fn run_ops<A: Archive>(ops: &[FuzzOp], dir: &Path, persistent: bool, open: impl Fn(&Path) -> A) {
    let mut archive = Some(open(dir));
    let mut model = Model::new();
    for (step, fuzz_op) in ops.iter().enumerate() {
        if persistent && matches!(fuzz_op, FuzzOp::Reopen) {
            drop(archive.take());
            archive = Some(open(dir));
        }
        let current = archive
            .as_ref()
            .expect("the archive is reopened before use");
        let outcome = match fuzz_op {
            FuzzOp::ListPaged(domain, limit) => {
                let domain = domain.as_ref().map(FuzzName::to_name);
                check_paged_listing(
                    current,
                    &model,
                    domain.as_deref(),
                    usize::from(limit % 4) + 1,
                )
            }
            other => {
                let op = other.to_op().expect("every other FuzzOp maps to an Op");
                check_step(current, &mut model, &op)
            }
        };
        if let Err(failure) = outcome {
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

fn check_sessions<T>(input: &SessionInput)
where
    T: Serialize + serde::de::DeserializeOwned + Default + PartialEq + std::fmt::Debug,
{
    let archive = Arc::new(MemoryArchive::new());
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let sessions = Sessions::builder(Arc::clone(&archive)).clock(clock).build();
    let mut planted = vec![STORED_ID];
    // Bytes under a malformed id: a session that must never be found. (A well-formed id would
    // name a genuine stored session.)
    if input.plant_under_id
        && SessionId::parse(&input.id).is_none()
        && crate::validate_domain(&input.id).is_ok()
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

    let from_cookie = sessions.id_from_cookie(&input.header);
    if let Some(id) = &from_cookie {
        assert!(
            well_formed_id(id.as_str()),
            "id_from_cookie({:?}) gave a malformed id",
            input.header
        );
    }
    let decoded: Option<T> = input
        .state
        .as_deref()
        .and_then(|bytes| serde_json::from_slice(bytes).ok());

    for id in [
        Some(input.id.as_str()),
        from_cookie.as_ref().map(SessionId::as_str),
        Some(STORED_ID),
    ] {
        let before = snapshot(&*archive).expect("snapshot");
        let result = sessions.start::<T>(id, T::default());
        let after = snapshot(&*archive).expect("snapshot");
        match result {
            Ok(mut session) if !session.is_new() => {
                assert_eq!(
                    session.id().as_str(),
                    STORED_ID,
                    "start({id:?}) adopted a session that was not stored"
                );
                assert_eq!(id, Some(STORED_ID), "start({id:?}) adopted another id");
                let decoded = decoded.as_ref().expect("adopted state must decode");
                assert_eq!(&*session, decoded, "adopted state differs from the stored");
                assert_eq!(
                    after.get(STORED_ID).and_then(|keys| keys.get(STATE_KEY)),
                    input.state.as_ref(),
                    "start rewrote the stored state"
                );
                session.load().expect("load an adopted session");
                assert_eq!(&*session, decoded, "loaded state differs from the stored");
            }
            Ok(session) => {
                assert!(
                    id != Some(session.id().as_str()),
                    "start({id:?}) took the client's id for a new session"
                );
                assert!(
                    !after.contains_key(session.id().as_str()),
                    "a new session's id is already stored"
                );
                // A new session writes nothing; the one change allowed is the removal of the
                // stored session, asked for by its id, when it has expired.
                let mut expected = before.clone();
                if id == Some(STORED_ID) && !after.contains_key(STORED_ID) {
                    expected.remove(STORED_ID);
                }
                assert_eq!(after, expected, "start({id:?}) of a new session wrote");
                // Without timestamps the stored session cannot have expired: it is adopted, or
                // its state is corrupt, which is an error rather than a fresh session.
                assert!(
                    !(id == Some(STORED_ID) && input.meta.is_none() && input.state.is_some()),
                    "start({id:?}) ignored a stored session without timestamps"
                );
            }
            Err(Error::CorruptSession { id: corrupt, .. }) => {
                assert_eq!(corrupt, STORED_ID, "start({id:?}) blamed another session");
                assert_eq!(
                    id,
                    Some(STORED_ID),
                    "start({id:?}) read a session it must not"
                );
                assert_eq!(after, before, "start({id:?}) changed a corrupt session");
                assert!(
                    decoded.is_none() || input.meta.is_some(),
                    "start({id:?}) called decodable state with no timestamps corrupt"
                );
            }
            Err(other) => panic!("start({id:?}) failed: {other:?}"),
        }
    }
}

/// The input of [`redb_file`].
#[derive(Debug, Clone, Arbitrary)]
pub enum RedbFileInput {
    /// These bytes are the whole file.
    Raw(Vec<u8>, Vec<FuzzOp>),
    /// A valid archive holding a few sessions, with the byte at each offset (modulo the file's
    /// length) XORed with the mask.
    Flipped(Vec<(u32, u8)>, Vec<FuzzOp>),
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
            FuzzOp::ListPaged(..) | FuzzOp::ListDomains | FuzzOp::Reopen => {
                for name in archive.domains() {
                    let Ok(name) = name else { break };
                    for key in archive.keys(&name) {
                        let Ok(key) = key else { break };
                        let _ = archive.get(&name, &key);
                    }
                }
            }
            other => {
                let op = other.to_op().expect("every other FuzzOp maps to an Op");
                let _ = super::apply_to_archive(&archive, &op);
            }
        }
    }
}

/// Whether `text` is a lowercase hyphenated UUID: an oracle that shares no code with
/// [`SessionId::parse`], built on the `uuid` crate's own parser and formatter.
fn well_formed_id(text: &str) -> bool {
    uuid::Uuid::try_parse(text).is_ok_and(|uuid| uuid.hyphenated().to_string() == text)
}
