//! A test that keeps ARCHITECTURE.md a true map: every module of every workspace crate is named
//! there (in backticks), and so is every crate's folder. A new module without a line in the map
//! fails `cargo xtask test`.

use std::path::Path;

use crate::paths;

/// The workspace's member folders, as the root Cargo.toml lists them.
fn members() -> Vec<String> {
    let manifest = fs_err::read_to_string(paths::workspace().join("Cargo.toml")).expect("the workspace manifest");
    let list = manifest.split("members = [").nth(1).and_then(|rest| rest.split(']').next()).unwrap_or("");
    list.split(',').map(|m| m.trim().trim_matches('"').to_string()).filter(|m| !m.is_empty()).collect()
}

/// Module names of a crate: each `.rs` file's stem, a folder's name for its `mod.rs`; the crate
/// roots (lib.rs, main.rs) and test-only files (tests.rs) are not modules of the map.
fn modules(src: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs_err::read_dir(&dir).expect("a source folder").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Some(stem) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else { continue };
            if path.extension().is_none_or(|e| e != "rs") || ["lib", "main", "tests"].contains(&stem.as_str()) {
                continue;
            }
            if stem == "mod" {
                out.extend(dir.file_name().map(|n| n.to_string_lossy().into_owned()));
            } else {
                out.push(stem);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn every_crate_and_module_is_on_the_map() {
    let map = fs_err::read_to_string(paths::workspace().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let members = members();
    assert!(members.len() >= 8, "the workspace lists its crates: {members:?}");
    let mut missing = Vec::new();
    for member in &members {
        if !map.contains(&format!("`{member}`")) && !map.contains(&format!("`{member}/`")) {
            missing.push(format!("the crate folder {member}"));
        }
        for module in modules(&paths::workspace().join(member).join("src")) {
            if !map.contains(&format!("`{module}`")) && !map.contains(&format!("`{module}/`")) {
                missing.push(format!("{member}: module `{module}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md does not name: {}\n  fix: add a line for each to its code map",
        missing.join(", ")
    );
}
