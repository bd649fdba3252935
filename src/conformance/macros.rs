//! The macros that stamp out the suite: [`archive_conformance!`](crate::archive_conformance) for a
//! backend's tests and, from the same list of behaviours, [`run_all`](super::run_all).
//!
//! They are `#[macro_export]`ed, so they live at the crate root whatever module defines them,
//! and reach everything else through `$crate::conformance::...` paths.

/// Calls `$callback!` with the names of every behaviour function, so that
/// [`run_all`](crate::conformance::run_all) and
/// [`archive_conformance!`](crate::archive_conformance) are made from one list.
#[doc(hidden)]
#[macro_export]
macro_rules! __archive_behaviours {
    ($callback:ident, $($args:tt)*) => {
        $crate::$callback! {
            ($($args)*)
            get_absent
            set_then_get
            overwrite_replaces_value
            has_present_and_absent
            remove_present_and_absent
            domain_exists_while_it_has_keys
            remove_domain_present_and_absent
            remove_domain_leaves_neighbours
            prefix_sharing_domains_are_isolated
            empty_value_is_a_value
            large_value_round_trips
            binary_values_round_trip
            unicode_names
            longest_names
            invalid_names_are_rejected_and_nothing_is_written
            list_domains_pages_through_everything
            list_keys_pages_through_one_domain
            listing_an_empty_archive
            compare_and_swap_semantics
            compare_and_swap_loses_no_update
            compare_and_swap_many_is_all_or_nothing
            compare_and_swap_many_creates_and_removes
            compare_and_swap_many_equal_values_only_check
            compare_and_swap_many_of_nothing_succeeds
            compare_and_swap_many_refuses_bad_names_and_duplicates_before_writing
            compare_and_swap_many_is_atomic_under_concurrency
            get_many_reads_each_key
            get_many_sees_a_swap_whole
            compare_and_swap_each_swaps_each_group_on_its_own
            compare_and_swap_each_refuses_bad_groups_before_writing
            get_each_reads_every_entry_in_order
            update_semantics
            update_that_fails_writes_nothing
            update_loses_no_update
            update_async_answers_as_update
            set_many_stores_every_entry
            remove_many_removes_each_entry_once
            remove_domains_removes_each_domain_once
            concurrent_writers_to_distinct_keys
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __archive_run_all {
    (() $($behaviour:ident)*) => {
        /// Runs every behaviour of the suite in turn. Each runs on the same archive, so each
        /// cleans up after itself; prefer [`archive_conformance!`](crate::archive_conformance),
        /// which gives every behaviour a fresh archive and its own test.
        ///
        /// # Examples
        ///
        /// ```
        /// session_archive::conformance::run_all(&session_archive::MemoryArchive::new());
        /// ```
        pub fn run_all(archive: &dyn Archive) {
            $(
                $behaviour(archive);
                assert_eq!(
                    archive.domains().count(),
                    0,
                    "{} left data behind",
                    stringify!($behaviour)
                );
            )*
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __archive_tests {
    (($factory:expr, $persistence:ident, $ready:expr) $($behaviour:ident)*) => {
        fn __open(dir: &::std::path::Path) -> impl $crate::Archive + use<> {
            ($factory)(dir)
        }
        fn __ready() -> bool {
            ($ready)()
        }
        $(
            #[test]
            fn $behaviour() {
                if !__ready() {
                    return;
                }
                let dir = $crate::conformance::__private::tempfile::tempdir()
                    .expect("create a temporary directory");
                $crate::conformance::$behaviour(&__open(dir.path()));
            }
        )*
        #[test]
        fn model() {
            if !__ready() {
                return;
            }
            $crate::conformance::model_test(__open, $crate::conformance::Persistence::$persistence);
        }
    };
}

/// Stamps out the conformance suite for one backend: a module named `$module` holding one
/// `#[test]` per behaviour, plus `model` (the [`model_test`](crate::conformance::model_test)).
///
/// `$factory` is called as `$factory(dir: &Path)` with a fresh temporary directory for every test
/// and must return an empty archive; the model test with `persistent` calls it again on the same
/// directory to reopen. Name the module after the backend (`redb`, `dir`, …) so that
/// `cargo test redb::` selects one backend.
///
/// A backend that needs a service (a server) adds `when = ready`, where `ready: fn() -> bool`
/// runs first in every test: when it returns `false` the test returns without running (`ready`
/// prints why, or panics where a missing service must fail the run).
///
/// # Examples
///
/// ```
/// use std::path::Path;
/// use std::sync::Arc;
/// use session_archive::{Archive, MemoryArchive};
///
/// session_archive::archive_conformance!(memory, |_dir: &Path| MemoryArchive::new());
/// session_archive::archive_conformance!(
///     arc_dyn,
///     |_dir: &Path| Arc::new(MemoryArchive::new()) as Arc<dyn Archive>
/// );
///
/// fn server_is_up() -> bool {
///     std::env::var_os("MY_SERVER_URL").is_some()
/// }
/// session_archive::archive_conformance!(
///     needs_a_server,
///     |_dir: &Path| MemoryArchive::new(),
///     volatile,
///     when = server_is_up
/// );
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! archive_conformance {
    ($module:ident, $factory:expr $(,)?) => {
        $crate::archive_conformance!($module, $factory, volatile);
    };
    ($module:ident, $factory:expr, volatile $(, when = $ready:expr)? $(,)?) => {
        $crate::archive_conformance!(@module $module, $factory, Volatile $(, $ready)?);
    };
    ($module:ident, $factory:expr, persistent $(, when = $ready:expr)? $(,)?) => {
        $crate::archive_conformance!(@module $module, $factory, Persistent $(, $ready)?);
    };
    (@module $module:ident, $factory:expr, $persistence:ident) => {
        $crate::archive_conformance!(@module $module, $factory, $persistence, || true);
    };
    (@module $module:ident, $factory:expr, $persistence:ident, $ready:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::__archive_behaviours!(__archive_tests, $factory, $persistence, $ready);
        }
    };
}

/// Stamps out the interleaving explorer's tests for one backend: a module named `$module`
/// holding one `#[test]` per [`Suite`](crate::conformance::explore::Suite) (pairs through each
/// `Sessions`, faults, the other state types, hashed ids, random triples, the saved seeds, the
/// tower-sessions family) and one per deliberate defect it must catch.
///
/// `$factory` is called as `$factory(dir: &Path)` with a fresh temporary directory for every
/// schedule and must return an empty archive. `depth = full` explores every pair exhaustively
/// (for an in-memory backend), `depth = sample` (the default) a deterministic sample;
/// `EXPLORE_FULL=1` at run time makes every backend explore everything. `seeds = path` names
/// the file of saved random seeds to replay (read at run time; a missing file is empty).
/// `when = ready` works as in [`archive_conformance!`](crate::archive_conformance).
///
/// # Examples
///
/// ```
/// use std::path::Path;
/// use session_archive::MemoryArchive;
///
/// session_archive::session_explorer!(memory, |_dir: &Path| MemoryArchive::new(), depth = full);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! session_explorer {
    ($module:ident, $factory:expr $(, depth = $depth:ident)? $(, seeds = $seeds:expr)?
        $(, when = $ready:expr)? $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            use $crate::conformance::explore::{Depth, Suite, run_suite};
            use $crate::conformance::explore::{StateKind, Via};
            use $crate::conformance::Mutation;

            fn __open(dir: &::std::path::Path) -> ::std::sync::Arc<dyn $crate::Archive> {
                ::std::sync::Arc::new(($factory)(dir))
            }
            fn __ready() -> bool {
                $crate::__explorer_ready!($($ready)?)
            }
            fn __depth() -> Depth {
                $crate::__explorer_depth!($($depth)?)
            }
            fn __seeds() -> ::std::option::Option<::std::path::PathBuf> {
                $crate::__explorer_seeds!($($seeds)?)
            }
            fn __run(suite: Suite) {
                if __ready() {
                    run_suite(&__open, suite, __depth(), __seeds().as_deref());
                }
            }
            $crate::__explorer_tests! {
                pairs_through_app: Suite::Pairs(Via::App),
                pairs_through_other: Suite::Pairs(Via::Other),
                faults: Suite::Faults,
                map_state: Suite::State(StateKind::Map),
                float_state: Suite::State(StateKind::Floats),
                hashed_ids: Suite::Hashed,
                async_paths: Suite::Async,
                random_triples: Suite::Random,
                saved_seeds: Suite::Seeds,
                tower_sessions: Suite::Tower,
                catches_destroy_plain_remove: Suite::Catches(Mutation::DestroyPlainRemove),
                catches_unconditional_index_removal:
                    Suite::Catches(Mutation::UnconditionalIndexRemoval),
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __explorer_tests {
    ($($name:ident: $suite:expr),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                __run($suite);
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __explorer_ready {
    () => {
        true
    };
    ($ready:expr) => {
        ($ready)()
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __explorer_depth {
    () => {
        $crate::conformance::explore::Depth::Sample
    };
    (full) => {
        $crate::conformance::explore::Depth::Full
    };
    (sample) => {
        $crate::conformance::explore::Depth::Sample
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __explorer_seeds {
    () => {
        ::std::option::Option::None
    };
    ($seeds:expr) => {
        ::std::option::Option::Some(::std::path::PathBuf::from($seeds))
    };
}
