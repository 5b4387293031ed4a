//! A test that keeps ARCHITECTURE.md a true map: every workspace crate has a heading naming its
//! folder (in backticks), and every module of the crate and every file of its tests/ folder is
//! named (in backticks) in that crate's own section — from its heading to the next heading of
//! the same or a higher level. A module named only under another crate's heading does not count.

use std::path::Path;

use crate::paths;

/// The workspace's member folders, as the root Cargo.toml lists them.
fn members() -> Vec<String> {
    let manifest = fs_err::read_to_string(paths::workspace().join("Cargo.toml")).expect("the workspace manifest");
    let list = manifest.split("members = [").nth(1).and_then(|rest| rest.split(']').next()).unwrap_or("");
    list.split(',').map(|m| m.trim().trim_matches('"').to_string()).filter(|m| !m.is_empty()).collect()
}

/// Module names under `dir`: each `.rs` file's stem, a folder's name for its `mod.rs`; the crate
/// roots (lib.rs, main.rs) and test-only files (tests.rs) are not modules of the map.
fn modules(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs_err::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
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

/// The text of the section whose heading names `member` in backticks, or `None`.
fn section<'a>(map: &'a str, member: &str) -> Option<&'a str> {
    let names = [format!("`{member}`"), format!("`{member}/`")];
    let lines: Vec<(usize, &str)> = map.match_indices('\n').map(|(i, _)| i + 1).map(|i| (i, &map[i..])).collect();
    let level = |l: &str| l.chars().take_while(|c| *c == '#').count();
    let (start, heading) = lines.iter().find(|(_, l)| {
        let line = l.lines().next().unwrap_or("");
        level(line) > 0 && names.iter().any(|n| line.contains(n.as_str()))
    })?;
    let depth = level(heading);
    let end = lines
        .iter()
        .filter(|(i, _)| i > start)
        .find(|(_, l)| (1..=depth).contains(&level(l.lines().next().unwrap_or(""))))
        .map_or(map.len(), |(i, _)| *i);
    Some(&map[*start..end])
}

/// What is missing from the map: crates without a heading, and modules and test files not named
/// under their own crate's heading.
fn missing(map: &str, workspace: &Path, members: &[String]) -> Vec<String> {
    let mut missing = Vec::new();
    for member in members {
        let Some(text) = section(map, member) else {
            missing.push(format!("a heading for the crate folder `{member}`"));
            continue;
        };
        let folder = workspace.join(member);
        for (kind, dir) in [("module", folder.join("src")), ("test file", folder.join("tests"))] {
            for name in modules(&dir) {
                let named = [format!("`{name}`"), format!("`{name}.rs`"), format!("`{name}/`")];
                if !named.iter().any(|n| text.contains(n.as_str())) {
                    missing.push(format!("{member}: {kind} `{name}`"));
                }
            }
        }
    }
    missing
}

#[test]
fn every_crate_and_module_is_on_the_map_under_its_own_heading() {
    let map = fs_err::read_to_string(paths::workspace().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let members = members();
    assert!(members.len() >= 8, "the workspace lists its crates: {members:?}");
    let missing = missing(&map, &paths::workspace(), &members);
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md does not name: {}\n  fix: add a line for each to its crate's section of the code map",
        missing.join(", ")
    );
}

#[test]
fn a_module_named_only_under_another_crate_does_not_count() {
    let dir = tempfile::tempdir().unwrap();
    for (file, text) in [("a/src/lib.rs", ""), ("a/src/walk.rs", ""), ("b/src/lib.rs", ""), ("b/tests/e2e.rs", "")] {
        let path = dir.path().join(file);
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(path, text).unwrap();
    }
    let members = ["a".to_string(), "b".to_string()];
    let map = "# Map\n## `a` (crate a)\nnothing here\n## `b` (crate b)\n`walk` and `e2e.rs`\n";
    assert_eq!(missing(map, dir.path(), &members), ["a: module `walk`"]);
    let map = "# Map\n## `a`\n`walk`\n### detail\nmore\n## `b`\n`e2e`\n";
    assert!(missing(map, dir.path(), &members).is_empty(), "a sub-heading stays inside its crate's section");
    assert_eq!(missing("# Map\n## `b`\n`e2e`\n", dir.path(), &members), ["a heading for the crate folder `a`"]);
}
