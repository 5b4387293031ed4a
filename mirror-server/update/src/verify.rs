//! The signature check: SHA256SUMS must carry a valid detached OpenPGP signature by a key in the
//! box's update keyring, checked by gpgv (GnuPG's verify-only tool, in both bases: Debian's apt
//! and AlmaLinux's dnf rely on it), exactly as systemd-sysupdate checks SHA256SUMS.gpg. Nothing
//! downloaded is trusted, or even kept, before this passes.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Checks `signature` over `data` against `keyring`; returns the verified text.
pub fn signed_text(keyring: &Path, data: &[u8], signature: &[u8]) -> Result<String> {
    if !keyring.exists() {
        bail!("no update keyring at {}: the image was built without [update]", keyring.display());
    }
    // gpgv looks a keyring without a slash up in its own home (~/.gnupg) and then says "No
    // public key": name the file the operator meant.
    let keyring = std::path::absolute(keyring).with_context(|| format!("resolving {}", keyring.display()))?;
    let dir = tempfile::Builder::new().prefix("mirror-update-verify").tempdir()?;
    let (data_path, sig_path) = (dir.path().join("SHA256SUMS"), dir.path().join("SHA256SUMS.gpg"));
    std::fs::write(&data_path, data)?;
    std::fs::write(&sig_path, signature)?;
    let out = Command::new("gpgv")
        .arg("--keyring")
        .arg(&keyring)
        .arg(&sig_path)
        .arg(&data_path)
        .output()
        .context("running gpgv (package gpgv on Debian, gnupg2 on AlmaLinux)")?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        let last = why.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("no reason given").trim().to_string();
        bail!("SHA256SUMS.gpg is not a valid signature by the update key ({last}); refused, nothing was written");
    }
    String::from_utf8(data.to_vec()).context("SHA256SUMS is not UTF-8")
}
