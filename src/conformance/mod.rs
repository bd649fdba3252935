//! The conformance suite that every [`Archive`] backend must pass, and a model-based property test.
//!
//! Each behaviour of the [`Archive` contract](Archive#contract) is one public function taking
//! `&dyn Archive`; it panics, like a test, when the archive misbehaves. The
//! [`archive_conformance!`](crate::archive_conformance) macro stamps out one `#[test]` per
//! behaviour for a backend, each on a fresh archive in a fresh temporary directory, plus the
//! [`model_test`]. A third-party backend can run the same suite from its own tests:
//!
//! ```toml
//! [dev-dependencies]
//! session-archive = { version = "0.1", features = ["conformance"] }
//! ```
//!
//! ```
//! use std::path::Path;
//! use session_archive::MemoryArchive;
//!
//! session_archive::archive_conformance!(memory, |_dir: &Path| MemoryArchive::new());
//! # fn main() {}
//! ```
//!
//! Persistent backends add `persistent`, so that the model test also drops and reopens the
//! archive on the same directory in the middle of its operation sequences:
//!
//! ```ignore
//! session_archive::archive_conformance!(
//!     redb,
//!     |dir: &Path| RedbArchive::open(dir.join("archive.redb")).expect("open"),
//!     persistent
//! );
//! ```
//!
//! Every function expects a fresh, empty archive.
//!
//! The model test saves the seed of a failing case in `proptest-regressions/model_test.txt` under
//! the package root ([`MODEL_REGRESSIONS`]) and replays it on every later run.

#![allow(
    clippy::missing_panics_doc,
    reason = "these functions are assertions; panicking is how they report"
)]

// Where things are: `macros.rs` holds the test-stamping macros and the one list of behaviours;
// `behaviours.rs` one function per behaviour; `model.rs` the `Op`s, the model, the strategy and
// `check_step` (with `model/fuzz_input.rs`, how the fuzzers' bytes become an `Op`'s names);
// `hooked.rs` the `Hooked` wrapper; `fuzz.rs` the fuzz targets' bodies.
//
// A new `Archive` method: the compiler points at `forward_archive!` and `Hooked` (both deny
// `clippy::missing_trait_methods`), and, once the method has its `Op` variant, at every match
// over `Op` (the model, the archive side, name validity, and `kind` in tests/fuzz_seeds.rs).
// By hand: its `Call` variant, its `Op` variant and arm in `op_strategy`, and a behaviour
// function named in `__archive_behaviours!`. A new `Op` variant changes what the committed fuzz
// seeds decode to; tests/fuzz_seeds.rs says so.

use crate::archive::{Archive, ArchiveExt};

mod behaviours;
pub mod explore;
#[cfg(all(feature = "fuzzing", unix))]
pub mod fuzz;
mod hooked;
mod macros;
mod model;

pub use crate::session::points::{LockWait, Mutation, set_lock_wait_hook, set_mutations};
pub use behaviours::*;
pub use hooked::{Call, Hooked};
pub use model::{
    Edit, MODEL_REGRESSIONS, Model, Op, OwnedSwap, Persistence, check_step, model_test,
    op_strategy, snapshot,
};

#[doc(hidden)]
pub mod __private {
    pub use tempfile;
}

crate::__archive_behaviours!(__archive_run_all,);
