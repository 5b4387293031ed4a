//! `cargo xtask profiles import` and `profiles check` as an operator runs them: the fixture
//! playbook imported into a folder, then checked: one line per site with its placeholder count
//! (each placeholder listed with --verbose), and a site whose projects do not fit its disk is an
//! error that the summary counts.

use std::path::Path;
use std::process::{Command, Stdio};

fn xtask(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).stdin(Stdio::null()).output().expect("xtask runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn folder(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn check_counts_placeholders_per_site_and_refuses_projects_that_do_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("imported");
    let playbook = testkit::workspace().join("tests/fixtures/playbook");
    let (ok, said) = xtask(&["profiles", "import", "--ansible", folder(&playbook), "--out", folder(&out)]);
    assert!(ok, "{said}");

    let (ok, said) = xtask(&["profiles", "check", "--dir", folder(&out)]);
    assert!(ok, "placeholders are warnings in a check: {said}");
    let west = said.lines().find(|l| l.starts_with("west: ")).unwrap_or_else(|| panic!("{said}"));
    assert!(west.contains(" placeholder(s); --verbose lists them)"), "{west}");
    assert!(!said.contains("is a placeholder"), "placeholders are only counted without --verbose:\n{said}");
    assert!(said.contains("aliases"), "the catalog's aliases are not counted as projects: {said}");
    let (ok, verbose) = xtask(&["profiles", "check", "--dir", folder(&out), "--verbose"]);
    assert!(ok && verbose.contains("is a placeholder"), "{verbose}");

    // An imported site (no hardware class yet: the default disk) whose projects take more
    // than that disk holds: 1,500 GB of Fedora beside its 1,330 GB.
    let east = std::fs::read_to_string(out.join("east.toml")).unwrap();
    let full = east.replace("name = \"east\"", "name = \"full\"").replace("projects = [", "projects = [\"fedora\", ");
    assert_ne!(full, east, "the imported profile lists its projects as `projects = [`");
    std::fs::write(out.join("full.toml"), full).unwrap();
    let (ok, said) = xtask(&["profiles", "check", "--dir", folder(&out)]);
    assert!(!ok, "{said}");
    assert!(said.lines().any(|l| l.starts_with("full: does NOT fit its disk")), "{said}");
    assert!(said.contains("1 profile(s) failed: full (its projects do not fit the disk)"), "{said}");
}
