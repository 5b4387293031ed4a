//! Images for tests and benchmarks, built through the build library (never `cargo run -p
//! xtask`): scratch profiles folders (the workspace's catalog, CA files and keys, with the
//! sites a test writes), the demo's test signing key in a GnuPG home of its own, and build
//! requests whose outputs go to a folder of the caller's under target/ — never to
//! target/images/SITE, which belongs to the developer.

use std::path::{Path, PathBuf};

use crate::{target, workspace};

/// The workspace's profiles folder.
pub fn profiles() -> PathBuf {
    workspace().join("profiles")
}

/// The demo profile's text, for tests that edit it.
pub fn demo_profile() -> String {
    std::fs::read_to_string(profiles().join("demo.toml")).expect("profiles/demo.toml")
}

/// A profiles folder at `dir` holding what profiles refer to (the catalog, CA files, keys) and
/// exactly the sites given as (name, profile text).
pub fn scratch_profiles(dir: &Path, sites: &[(&str, String)]) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("a scratch profiles folder");
    for sub in ["projects", "certs", "keys"] {
        copy_tree(&profiles().join(sub), &dir.join(sub));
    }
    for (name, text) in sites {
        std::fs::write(dir.join(format!("{name}.toml")), text).expect("writing a scratch profile");
    }
    dir.to_path_buf()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("a profiles sub-folder").flatten() {
        let dest = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).expect("copying a profiles file");
        }
    }
}

/// A GnuPG home holding the demo's test signing key (tests/fixtures/demo-updates.secret.asc),
/// made once under target/ (atomically, so parallel tests may ask at once); the operator's own
/// keyring is never touched.
pub fn demo_signing_home() -> PathBuf {
    let home = target().join("tmp/gnupg-demo-updates");
    if home.join("imported").exists() {
        return home;
    }
    std::fs::create_dir_all(target().join("tmp")).expect("target/tmp");
    let fresh = tempfile::Builder::new().prefix("gnupg-").tempdir_in(target().join("tmp")).expect("a temp folder");
    std::fs::set_permissions(fresh.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
    let secret = workspace().join("tests/fixtures/demo-updates.secret.asc");
    let out = std::process::Command::new("gpg")
        .env("GNUPGHOME", fresh.path())
        .args(["--batch", "--quiet", "--import"])
        .arg(&secret)
        .output()
        .expect("gpg runs");
    assert!(out.status.success(), "importing {}: {}", secret.display(), String::from_utf8_lossy(&out.stderr));
    std::fs::write(fresh.path().join("imported"), b"").expect("marking the home");
    // The import started an agent that serves this folder by its path: it must go before the
    // folder moves, or gpg in the moved folder asks it and finds no secret key.
    let _ = std::process::Command::new("gpgconf").env("GNUPGHOME", fresh.path()).args(["--kill", "gpg-agent"]).status();
    // Another test may have made it meanwhile: theirs stays.
    let made = fresh.keep();
    if std::fs::rename(&made, &home).is_err() {
        let _ = std::fs::remove_dir_all(&made);
    }
    home
}

/// The folder a test or benchmark keeps its own outputs in: target/e2e/NAME.
pub fn own_folder(name: &str) -> PathBuf {
    target().join("e2e").join(name)
}

/// The build time of every test build in this process: the run's (MICROMIRROR_TEST_EPOCH, which
/// `cargo xtask test` sets once for all its binaries), else the last commit's when it first
/// asks, so a commit made while the tests run changes no build half-way through.
pub fn epoch() -> i64 {
    static EPOCH: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(|| {
        std::env::var("MICROMIRROR_TEST_EPOCH")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(build::last_commit_epoch)
    })
}

/// A request to build `site` from `profiles` into `own/images/SITE`, with the shared caches,
/// the demo's signing key and the test's build time (uncompressed: tests that want the
/// .img.zst say so).
pub fn request(own: &Path, profiles: &Path, site: &str) -> build::Request {
    let mut r = build::Request::new(site, profiles, &target(), epoch());
    r.out = own.join("images").join(site);
    r.signing_home = Some(demo_signing_home());
    r.compress = false;
    r
}

/// Builds the request's image; panics with the build's error.
pub fn build(request: &build::Request) -> PathBuf {
    match build::run(request) {
        Ok(build::Built::Image { image, .. }) => image,
        Ok(other) => panic!("building {} stopped early: {other:?}", request.site),
        Err(e) => panic!("building {}: {e:#}", request.site),
    }
}
