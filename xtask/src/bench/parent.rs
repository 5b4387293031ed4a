//! The layout before the read-only root, built beside ours for `bench image` and `bench
//! update`: sites of `PARENT` (the last commit whose root slots are read-write ext4) from a git
//! worktree under target/bench/, with that commit's own xtask and its own target folder, so
//! its whole pipeline is what is measured. Its updates are signed with the demo's test key.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::{cmd, paths};

/// The last commit with ext4 root slots (main before the read-only root).
pub const PARENT: &str = "924a231";

/// The worktree of `PARENT`, checked out and its xtask built (once).
fn worktree() -> Result<PathBuf> {
    let tree = paths::target().join("bench/parent");
    if !tree.join("Cargo.toml").exists() {
        let sh = cmd::shell()?;
        let dest = tree.display().to_string();
        cmd::run(cmd::cmd!(sh, "git worktree add --force --detach {dest} {PARENT}"))
            .with_context(|| format!("checking out {PARENT}, the layout before the read-only root"))?;
    }
    let sh = cmd::shell()?;
    sh.change_dir(&tree);
    let target = tree.join("target");
    cmd::run(cmd::cargo(&sh).args(["build", "--release", "-q", "-p", "xtask", "--target-dir"]).arg(&target))?;
    Ok(tree)
}

/// Builds `site` of `PARENT` (from `profiles`, else its own profiles folder) at `epoch`; the
/// outputs are moved to `keep`. Seconds the build took.
pub fn build(site: &str, profiles: Option<&Path>, epoch: i64, keep: &Path) -> Result<f64> {
    let tree = worktree()?;
    let target = tree.join("target");
    eprintln!("[bench] building {site} of {PARENT} (the read-write layout, its own pipeline)");
    let mut c = Command::new(target.join("release/xtask"));
    c.current_dir(&tree)
        .args(["image", "--site", site])
        .env("CARGO_TARGET_DIR", &target)
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .env("GNUPGHOME", testkit::images::demo_signing_home())
        .stdout(Stdio::null());
    if let Some(p) = profiles {
        c.env("MICROMIRROR_PROFILES", p);
    }
    let start = Instant::now();
    if !c.status()?.success() {
        bail!("building {PARENT}'s {site} failed");
    }
    let seconds = start.elapsed().as_secs_f64();
    let _ = fs_err::remove_dir_all(keep);
    if let Some(parent) = keep.parent() {
        fs_err::create_dir_all(parent)?;
    }
    fs_err::rename(target.join("images").join(site), keep)?;
    Ok(seconds)
}

/// The parent's own profiles folder (a copy edited for a second version).
pub fn profiles() -> Result<PathBuf> {
    Ok(worktree()?.join("profiles"))
}
