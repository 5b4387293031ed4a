//! Where things live in the workspace; every other module asks here.

use std::path::{Path, PathBuf};

pub fn workspace() -> PathBuf {
    // xtask's manifest dir is <workspace>/xtask.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// The fleet's profiles; MICROMIRROR_PROFILES points elsewhere (a private fleet repository,
/// or a test's scratch folder).
pub fn profiles() -> PathBuf {
    std::env::var_os("MICROMIRROR_PROFILES").map(PathBuf::from).unwrap_or_else(|| workspace().join("profiles"))
}

pub fn catalog() -> PathBuf {
    profiles().join("projects")
}

pub fn profile(site: &str) -> PathBuf {
    profiles().join(format!("{site}.toml"))
}

pub fn overlay() -> PathBuf {
    workspace().join("overlay")
}

pub fn target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"))
}

pub fn base_cache() -> PathBuf {
    target().join("base-cache")
}

pub fn images(site: &str) -> PathBuf {
    target().join("images").join(site)
}
