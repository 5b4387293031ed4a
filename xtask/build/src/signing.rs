//! OpenPGP signing of updates with the build host's gpg: the profile names a public key file
//! under profiles/; its private half lives only in the operator's keyring (the request's signing
//! home, else gpg's default) and is used by fingerprint, never copied, exported or printed. Boxes check with gpgv against the
//! dearmored public key baked into their image, as systemd-sysupdate checks SHA256SUMS.gpg.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cmd::{self, cmd};

/// A profile's update signing key.
pub struct SigningKey {
    /// The armored public key file, as named by the profile.
    pub file: PathBuf,
    pub fingerprint: String,
    /// Unix seconds the key was made: a signature cannot predate it.
    pub created: i64,
    /// The GnuPG home with the private half; `None`: gpg's default (GNUPGHOME or ~/.gnupg).
    pub home: Option<PathBuf>,
}

impl SigningKey {
    /// Reads the public key file; it must hold exactly one OpenPGP public key. Its private half
    /// is looked for in `home`.
    pub fn read(file: &Path, home: Option<&Path>) -> Result<SigningKey> {
        let signing_home = home.map(Path::to_path_buf);
        let home = tempfile::tempdir()?;
        let homedir = home.path();
        let sh = cmd::shell()?;
        let colons = cmd::run(cmd!(
            sh,
            "gpg --homedir {homedir} --batch --with-colons --import-options show-only --import {file}"
        ))
        .with_context(|| format!("{} is not an OpenPGP public key", file.display()))?;
        let primaries: Vec<&str> = colons.lines().filter(|l| l.starts_with("pub:")).collect();
        let [primary] = primaries.as_slice() else {
            bail!("{} holds {} public keys; it must hold the one that signs updates", file.display(), primaries.len());
        };
        let created = primary.split(':').nth(5).and_then(|t| t.parse().ok()).unwrap_or(0);
        let fingerprint = colons
            .lines()
            .find_map(|l| l.strip_prefix("fpr:").map(|rest| rest.trim_matches(':').to_string()))
            .with_context(|| format!("gpg printed no fingerprint for {}", file.display()))?;
        Ok(SigningKey { file: file.to_path_buf(), fingerprint, created, home: signing_home })
    }

    /// A shell whose gpg uses the signing home.
    fn shell(&self) -> Result<cmd::Shell> {
        let sh = cmd::shell()?;
        if let Some(home) = &self.home {
            sh.set_var("GNUPGHOME", home);
        }
        Ok(sh)
    }

    /// Whether the signing keyring holds the private half.
    pub fn can_sign(&self) -> bool {
        let fpr = &self.fingerprint;
        self.shell().is_ok_and(|sh| cmd::run(cmd!(sh, "gpg --batch --with-colons --list-secret-keys {fpr}")).is_ok())
    }

    /// Signs `file` into `signature` (detached, binary). The signature's time is the build's, or
    /// the key's birth if later, so the same inputs and key give the same signature bytes with
    /// deterministic algorithms (EdDSA, RSA).
    pub fn sign(&self, file: &Path, signature: &Path, epoch: i64) -> Result<()> {
        let fpr = format!("{}!", self.fingerprint);
        let when = format!("{}!", epoch.max(self.created));
        let sh = self.shell()?;
        cmd::run(cmd!(
            sh,
            "gpg --batch --yes --quiet --faked-system-time {when} --local-user {fpr} --detach-sign --output {signature} {file}"
        ))
        .with_context(|| format!("signing {} with key {}", file.display(), self.fingerprint))?;
        Ok(())
    }

    /// The key as the box's gpgv keyring (binary OpenPGP).
    pub fn keyring(&self) -> Result<Vec<u8>> {
        let (sh, file) = (cmd::shell()?, &self.file);
        let out = cmd!(sh, "gpg --batch --dearmor --output - {file}")
            .quiet()
            .output()
            .with_context(|| format!("dearmoring {}", file.display()))?;
        if !out.status.success() || out.stdout.is_empty() {
            bail!("{} is not an armored OpenPGP key: {}", file.display(), String::from_utf8_lossy(&out.stderr));
        }
        Ok(out.stdout)
    }

    /// Checks `signature` over `file` as a box would: gpgv against this key alone.
    pub fn verify(&self, file: &Path, signature: &Path) -> Result<()> {
        let dir = tempfile::tempdir()?;
        let keyring = dir.path().join("keyring.gpg");
        fs_err::write(&keyring, self.keyring()?)?;
        let sh = cmd::shell()?;
        cmd::run(cmd!(sh, "gpgv --keyring {keyring} {signature} {file}"))
            .with_context(|| format!("{} is not signed by {}", file.display(), self.file.display()))?;
        Ok(())
    }
}
