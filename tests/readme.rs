//! The README stays a welcome that agrees with the crate: at most 200 lines, and its feature
//! table names exactly the features of `Cargo.toml`, each with the same default as the crate
//! docs' table.

use std::collections::BTreeMap;

/// The `| feature | default | … |` rows of a Markdown table, by feature name, found in `text`
/// after stripping `prefix` (`//! ` for the crate docs) from each line.
fn feature_rows(text: &str, prefix: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix(prefix))
        .filter_map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let default = *cells.get(2)?;
            matches!(default, "yes" | "no").then(|| (name.to_owned(), default.to_owned()))
        })
        .collect()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .expect("a file of the crate")
}

#[test]
fn the_readme_is_at_most_200_lines() {
    let lines = read("README.md").lines().count();
    assert!(lines <= 200, "README.md has {lines} lines");
}

#[test]
fn the_feature_tables_agree_with_cargo_toml() {
    let manifest = read("Cargo.toml");
    let section = manifest
        .split("[features]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap();
    let defaults: Vec<&str> = section
        .lines()
        .find_map(|line| line.strip_prefix("default = "))
        .unwrap()
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|name| name.trim().trim_matches('"'))
        .collect();
    let features: BTreeMap<String, String> = section
        .lines()
        .filter_map(|line| line.split_once(" = ").map(|(name, _)| name.trim()))
        .filter(|name| *name != "default" && !name.starts_with('#'))
        .map(|name| {
            let default = if defaults.contains(&name) {
                "yes"
            } else {
                "no"
            };
            (name.to_owned(), default.to_owned())
        })
        .collect();
    assert!(features.len() >= 8, "{features:?}");
    assert_eq!(feature_rows(&read("README.md"), ""), features, "README.md");
    assert_eq!(
        feature_rows(&read("src/lib.rs"), "//! "),
        features,
        "src/lib.rs"
    );
}
