//! With the `tower-sessions` feature, finds the route-test harness that the tower-sessions release
//! pinned in `[dev-dependencies]` publishes (`tests/common/mod.rs`), so that
//! `tests/tower_sessions_routes.rs` can run it unmodified against `ArchiveStore`. The harness is
//! mounted from the resolved dependency source, never copied here. Without the feature this does
//! nothing, and it never fails a build: the library does not need the harness.
//!
//! The path goes to the test as the compile-time variable `TOWER_SESSIONS_ROUTE_HARNESS`. It comes
//! from `cargo metadata` (which knows vendored sources, `[patch]` and source replacement), or else
//! from the registry sources under `CARGO_HOME`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The tower-sessions release whose harness runs; the same as the dev-dependency's `=` version.
const PINNED: &str = "0.15.0";
/// The harness, relative to that release's package root.
const HARNESS: &str = "tests/common/mod.rs";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-env-changed=CARGO_HOME");
    if env::var_os("CARGO_FEATURE_TOWER_SESSIONS").is_none() {
        return;
    }
    let found = from_metadata()
        .or_else(|metadata| from_registry().map_err(|registry| format!("{metadata}; {registry}")));
    match found {
        Ok(harness) => {
            println!("cargo:rerun-if-changed={}", harness.display());
            println!(
                "cargo:rustc-env=TOWER_SESSIONS_ROUTE_HARNESS={}",
                harness.display()
            );
        }
        Err(reason) => {
            // A path that does not exist makes cargo run this script again on the next build, by
            // when `cargo test` will have fetched the dev-dependency.
            println!("cargo:rerun-if-changed=.tower-sessions-harness-not-found");
            println!(
                "cargo:warning=tower-sessions {PINNED}'s route-test harness was not found \
                 ({reason}); tests/tower_sessions_routes.rs cannot be built"
            );
        }
    }
}

/// Asks `cargo metadata` (offline: a test build has fetched its dev-dependencies already) where
/// the pinned tower-sessions package is.
fn from_metadata() -> Result<PathBuf, String> {
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
    let manifest = manifest_path(&json, "tower-sessions", PINNED)
        .ok_or_else(|| format!("cargo metadata lists no tower-sessions {PINNED}"))?;
    let harness = Path::new(&manifest)
        .parent()
        .ok_or("tower-sessions' manifest path has no parent")?
        .join(HARNESS);
    if harness.is_file() {
        Ok(harness)
    } else {
        Err(format!("{} does not exist", harness.display()))
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
fn from_registry() -> Result<PathBuf, String> {
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
                .join(format!("tower-sessions-{PINNED}"))
                .join(HARNESS)
        })
        .filter(|harness| harness.is_file())
        .collect();
    candidates.sort();
    candidates
        .into_iter()
        .next()
        .ok_or_else(|| format!("no tower-sessions-{PINNED} under {}", sources.display()))
}
