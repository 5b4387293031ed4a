//! Where things live for the command line, and the one place xtask reads the environment that
//! chooses them: MICROMIRROR_PROFILES (another profiles folder), CARGO_TARGET_DIR and
//! SOURCE_DATE_EPOCH. Everything below the command line (the build library, the VM) is told.

use std::path::{Path, PathBuf};

pub fn workspace() -> PathBuf {
    // xtask's manifest dir is <workspace>/xtask.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// The fleet's profiles; MICROMIRROR_PROFILES points elsewhere (a private fleet repository).
pub fn profiles() -> PathBuf {
    std::env::var_os("MICROMIRROR_PROFILES").map(PathBuf::from).unwrap_or_else(|| workspace().join("profiles"))
}

pub fn catalog() -> PathBuf {
    build::load::catalog_dir(&profiles())
}

pub fn target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"))
}

pub fn images(site: &str) -> PathBuf {
    target().join("images").join(site)
}

/// The build time: SOURCE_DATE_EPOCH, else the last commit's.
pub fn build_epoch() -> i64 {
    std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.parse().ok()).unwrap_or_else(build::last_commit_epoch)
}

/// The request `cargo xtask image --site SITE` makes: the profiles folder, target/images/SITE,
/// the caches under target/, gpg's own keyring.
pub fn request(site: &str) -> build::Request {
    build::Request::new(site, &profiles(), &target(), build_epoch())
}

/// Loads `profiles/SITE.toml` with its catalog (warnings printed).
pub fn load(site: &str) -> anyhow::Result<schema::profile::LoadedProfile> {
    build::load::load(&profiles(), site)
}

/// Every site in the profiles folder.
pub fn known_sites() -> Vec<String> {
    build::load::sites_in(&profiles())
}
