//! Mounts two stores' own test harnesses from the resolved dependency sources, never copied here:
//!
//! - with the `tower-sessions` feature, the route-test harness that the tower-sessions release
//!   pinned in `[dev-dependencies]` publishes (`tests/common/mod.rs`), so that
//!   `tests/tower_sessions_routes.rs` can run it unmodified against `ArchiveStore`; its path goes
//!   to the test as the compile-time variable `TOWER_SESSIONS_ROUTE_HARNESS`;
//! - with the `actix-session` feature, actix-session's store acceptance suite: the
//!   `test_helpers` module at the end of its `src/lib.rs`, compiled there only in its own tests
//!   (`#[cfg(test)]`). Its body is written to `OUT_DIR` as it is, and its path goes to
//!   `tests/actix_session_acceptance.rs` as `ACTIX_SESSION_TEST_HELPERS`.
//!
//! Paths come from `cargo metadata` (which knows vendored sources, `[patch]` and source
//! replacement), or else from the registry sources under `CARGO_HOME`. Without the features this
//! does nothing, and it never fails a build: the library needs neither harness.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A harness in a dependency's published source.
struct Harness {
    /// The package, and the release pinned with `=` in `[dev-dependencies]`.
    package: &'static str,
    version: &'static str,
    /// The file, relative to the package root.
    file: &'static str,
    /// What the test calls it, and the test that uses it.
    what: &'static str,
    test: &'static str,
}

/// tower-sessions' route tests.
const TOWER: Harness = Harness {
    package: "tower-sessions",
    version: "0.15.0",
    file: "tests/common/mod.rs",
    what: "route-test harness",
    test: "tests/tower_sessions_routes.rs",
};

/// actix-session's store acceptance suite, in its `src/lib.rs`.
const ACTIX: Harness = Harness {
    package: "actix-session",
    version: "0.11.0",
    file: "src/lib.rs",
    what: "store acceptance suite",
    test: "tests/actix_session_acceptance.rs",
};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-env-changed=CARGO_HOME");
    if env::var_os("CARGO_FEATURE_TOWER_SESSIONS").is_some()
        && let Some(harness) = find(&TOWER)
    {
        println!(
            "cargo:rustc-env=TOWER_SESSIONS_ROUTE_HARNESS={}",
            harness.display()
        );
    }
    if env::var_os("CARGO_FEATURE_ACTIX_SESSION").is_some()
        && let Some(lib) = find(&ACTIX)
    {
        match mount_test_helpers(&lib) {
            Ok(module) => println!(
                "cargo:rustc-env=ACTIX_SESSION_TEST_HELPERS={}",
                module.display()
            ),
            Err(reason) => println!(
                "cargo:warning=actix-session's store acceptance suite could not be mounted \
                 ({reason}); {} cannot be built",
                ACTIX.test
            ),
        }
    }
}

/// The harness's file in the resolved source, or `None` after a warning.
fn find(harness: &Harness) -> Option<PathBuf> {
    let found = from_metadata(harness).or_else(|metadata| {
        from_registry(harness).map_err(|registry| format!("{metadata}; {registry}"))
    });
    match found {
        Ok(path) => {
            println!("cargo:rerun-if-changed={}", path.display());
            Some(path)
        }
        Err(reason) => {
            // A path that does not exist makes cargo run this script again on the next build, by
            // when `cargo test` will have fetched the dev-dependency.
            println!(
                "cargo:rerun-if-changed=.{}-harness-not-found",
                harness.package
            );
            println!(
                "cargo:warning={} {}'s {} was not found ({reason}); {} cannot be built",
                harness.package, harness.version, harness.what, harness.test
            );
            None
        }
    }
}

/// Writes the body of the `test_helpers` module of actix-session's `lib` (the last item of the
/// file, so everything after its opening brace but the file's last closing brace) to `OUT_DIR`,
/// unchanged, and returns where.
fn mount_test_helpers(lib: &Path) -> Result<PathBuf, String> {
    const OPENING: &str = "pub mod test_helpers {";
    let source = std::fs::read_to_string(lib)
        .map_err(|err| format!("cannot read {}: {err}", lib.display()))?;
    let start = source
        .find(OPENING)
        .ok_or_else(|| format!("{} has no `{OPENING}`", lib.display()))?
        + OPENING.len();
    let end = source
        .rfind('}')
        .filter(|&end| end > start)
        .ok_or_else(|| format!("{}'s test_helpers module does not close", lib.display()))?;
    let out = env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?;
    let module = Path::new(&out).join("actix_session_test_helpers.rs");
    std::fs::write(&module, &source[start..end])
        .map_err(|err| format!("cannot write {}: {err}", module.display()))?;
    Ok(module)
}

/// Asks `cargo metadata` (offline: a test build has fetched its dev-dependencies already) where
/// the pinned package is.
fn from_metadata(harness: &Harness) -> Result<PathBuf, String> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?;
    let mut command = Command::new(cargo);
    command
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .arg("--manifest-path")
        .arg(Path::new(&manifest_dir).join("Cargo.toml"));
    if let Some(target) = env::var_os("TARGET") {
        // Only the packages this build can use, so that none for other platforms must be present.
        command.arg("--filter-platform").arg(target);
    }
    let output = command
        .output()
        .map_err(|err| format!("cannot run cargo metadata: {err}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().find(|line| !line.trim().is_empty());
        return Err(format!(
            "cargo metadata failed: {}",
            first.unwrap_or("no message")
        ));
    }
    let json = String::from_utf8_lossy(&output.stdout);
    let (package, version) = (harness.package, harness.version);
    let manifest = manifest_path(&json, package, version)
        .ok_or_else(|| format!("cargo metadata lists no {package} {version}"))?;
    let file = Path::new(&manifest)
        .parent()
        .ok_or_else(|| format!("{package}'s manifest path has no parent"))?
        .join(harness.file);
    if file.is_file() {
        Ok(file)
    } else {
        Err(format!("{} does not exist", file.display()))
    }
}

/// The `manifest_path` of package `name` at `version` in `cargo metadata`'s JSON. Each entry of
/// `packages` holds its `id` before its `manifest_path`, and `packages` comes before everything
/// else that names package ids, so the first `manifest_path` after the package's id is its own.
/// (A build script cannot use a JSON parser without making it a build dependency of every user.)
fn manifest_path(json: &str, name: &str, version: &str) -> Option<String> {
    // Package ids: `registry+https://…#name@version` (cargo 1.77 and later), or
    // `name version (registry+https://…)` before.
    let ids = [
        format!("#{name}@{version}\""),
        format!("\"{name} {version} ("),
    ];
    let at = ids.iter().filter_map(|id| json.find(id.as_str())).min()?;
    let key = "\"manifest_path\":\"";
    let start = at + json[at..].find(key)? + key.len();
    json_string(&json[start..])
}

/// Reads a JSON string body up to its closing quote, undoing the escapes a path can contain.
fn json_string(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = text.chars();
    loop {
        match chars.next()? {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
}

/// Looks for the release's unpacked source in every registry under `CARGO_HOME` (by default
/// `~/.cargo`).
fn from_registry(harness: &Harness) -> Result<PathBuf, String> {
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    let sources = home.join("registry").join("src");
    let registries = std::fs::read_dir(&sources)
        .map_err(|err| format!("cannot list {}: {err}", sources.display()))?;
    let mut candidates: Vec<PathBuf> = registries
        .filter_map(Result::ok)
        .map(|registry| {
            registry
                .path()
                .join(format!("{}-{}", harness.package, harness.version))
                .join(harness.file)
        })
        .filter(|harness| harness.is_file())
        .collect();
    candidates.sort();
    candidates.into_iter().next().ok_or_else(|| {
        format!(
            "no {}-{} under {}",
            harness.package,
            harness.version,
            sources.display()
        )
    })
}
