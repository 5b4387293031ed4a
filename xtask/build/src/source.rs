//! What an image is built from besides its base, as fingerprints the manifest records:
//! `profile`, the SHA-256 of the profile's text; `source`, our programs, overlay, package lists
//! and build code (git's tree ids of those folders, plus a hash of uncommitted changes to them);
//! and `catalog`, the profiles folder's project catalog and hardware classes (their files'
//! bytes). `cargo xtask release`
//! compares them with the last build's to rebuild only the sites whose inputs changed. Reads
//! only; a workspace outside git has no `source` fingerprint, and every release rebuilds it.

use std::path::Path;

use schema::profile::LoadedProfile;
use sha2::{Digest, Sha256};

use crate::cmd;

/// The workspace paths an image's bytes come from besides the profile and the base.
const SOURCE_PATHS: &[&str] =
    &["Cargo.toml", "Cargo.lock", "xtask", "image", "overlay", "mirror-server", "profiles/schema"];

/// The profile's fingerprint: the SHA-256 of its text, as hex.
pub fn profile(site: &LoadedProfile) -> String {
    format!("{:x}", Sha256::digest(site.text.as_bytes()))
}

/// The fingerprint of the site's place in the fleet's sync topology (its `sync-peers.json`):
/// another box added or removed changes it, and the site is built again.
pub fn peers(site: &LoadedProfile) -> anyhow::Result<String> {
    Ok(peers_fingerprint(&crate::load::sync_peers(site)?))
}

/// The fingerprint of a site's peers (`load::sync_peers`), for a build that has them already.
pub fn peers_fingerprint(peers: &std::collections::BTreeMap<String, Vec<String>>) -> String {
    format!("{:x}", Sha256::digest(serde_json::to_string(peers).unwrap_or_default().as_bytes()))
}

/// The source fingerprint of `workspace`, or `None` outside a git work tree.
pub fn source(workspace: &Path) -> Option<String> {
    let sh = cmd::shell().ok()?;
    let git = |args: &[&str]| -> Option<String> {
        sh.cmd("git").arg("-C").arg(workspace).args(args).quiet().ignore_stderr().read().ok()
    };
    let revisions: Vec<String> = SOURCE_PATHS.iter().map(|p| format!("HEAD:{p}")).collect();
    let mut args = vec!["rev-parse"];
    args.extend(revisions.iter().map(String::as_str));
    let trees = git(&args)?;
    let mut diff_args = vec!["diff", "HEAD", "--binary", "--"];
    diff_args.extend(SOURCE_PATHS);
    let changed = git(&diff_args)?;
    let mut untracked_args = vec!["ls-files", "--others", "--exclude-standard", "-z", "--"];
    untracked_args.extend(SOURCE_PATHS);
    let untracked = git(&untracked_args)?;
    let mut h = Sha256::new();
    h.update(trees.as_bytes());
    h.update(changed.as_bytes());
    for file in untracked.split('\0').filter(|f| !f.is_empty()) {
        h.update(file.as_bytes());
        h.update(fs_err::read(workspace.join(file)).unwrap_or_default());
    }
    let dirty = !changed.is_empty() || !untracked.is_empty();
    Some(format!("{}{}", short(h), if dirty { "+uncommitted" } else { "" }))
}

/// The catalog fingerprint: every file under the profiles folder's `projects/` and `hardware/`.
pub fn catalog(profiles: &Path) -> String {
    let mut h = Sha256::new();
    for folder in ["projects", "hardware"] {
        let files = crate::tree::walk(&profiles.join(folder)).unwrap_or_default();
        for f in files.into_iter().filter(|f| f.is_file()) {
            h.update(f.strip_prefix(profiles).unwrap_or(&f).to_string_lossy().as_bytes());
            h.update(fs_err::read(&f).unwrap_or_default());
        }
    }
    short(h)
}

fn short(h: Sha256) -> String {
    h.finalize().iter().take(10).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_fingerprint_follows_its_files_bytes() {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(dir.path().join("projects")).unwrap();
        fs_err::create_dir_all(dir.path().join("hardware")).unwrap();
        fs_err::write(dir.path().join("projects/arch.toml"), "title = \"Arch\"\n").unwrap();
        let first = catalog(dir.path());
        assert_eq!(catalog(dir.path()), first, "the same files, the same fingerprint");
        fs_err::write(dir.path().join("hardware/t620.toml"), "nic = \"r8169\"\n").unwrap();
        let second = catalog(dir.path());
        assert_ne!(second, first);
        fs_err::write(dir.path().join("site.toml"), "a profile is not the catalog").unwrap();
        assert_eq!(catalog(dir.path()), second);
    }

    #[test]
    fn the_workspace_has_a_source_fingerprint_that_says_when_it_is_uncommitted() {
        let Some(id) = source(&crate::workspace()) else {
            panic!("the workspace is a git work tree, yet it has no source fingerprint");
        };
        assert_eq!(id.trim_end_matches("+uncommitted").len(), 20, "{id}");
        assert_eq!(source(&crate::workspace()), Some(id), "stable from one call to the next");
        let plain = tempfile::tempdir().unwrap();
        assert_eq!(source(plain.path()), None, "outside git there is none");
    }
}
