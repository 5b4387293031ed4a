//! Publishing (`cargo xtask publish --site NAME --to DIR`): lays a built update out as a static
//! tree any web server can serve (DIR/NAME/, which the profile's update.url points at): the artifacts of the
//! newest versions, one SHA256SUMS listing them and its signature, in systemd-sysupdate's flat
//! layout. Artifacts land first and the signed list last, so a box reading the tree mid-publish
//! sees the old list or the new one, never a list naming a missing file. A version must be
//! newer than what the tree offers (boxes never go back by themselves); the previous version
//! stays, so an operator can send a box back to it by hand.

use std::path::Path;

use anyhow::{bail, Context, Result};
use image::version::Version;
use schema::profile::LoadedProfile;

use crate::signing::SigningKey;
use crate::sparse::sha256_file;
use crate::update::{self, SIGNATURE, SUMS};

/// (file name, sha256) of one version's artifacts, sorted.
type Artifacts = Vec<(String, String)>;

/// What to publish where.
pub struct Publication<'a> {
    pub site: &'a LoadedProfile,
    /// The build's update folder (the outputs' `update/`).
    pub built: &'a Path,
    /// The served folder; the site's updates go to `to/SITE/`.
    pub to: &'a Path,
    /// How many versions the tree keeps (the newest and the ones before it).
    pub keep: usize,
    /// The signature's time.
    pub epoch: i64,
    /// The GnuPG home with the signing key's private half (`None`: gpg's default).
    pub signing_home: Option<&'a Path>,
}

/// Publishes the build's update; says what the tree offers now.
pub fn publish(p: &Publication<'_>) -> Result<String> {
    let name = &p.site.profile.site.name;
    let key = update::signing_key(p.site, p.signing_home)?
        .with_context(|| format!("{} has no [update] section: there is nothing to publish", p.site.path.display()))?;
    if !key.can_sign() {
        bail!("the private key {} is not in the signing keyring: publish where the signing key is", key.fingerprint);
    }
    let built = p.built;
    let (version, artifacts) = built_update(built)
        .with_context(|| format!("{}: build it with `cargo xtask image --site {name}`", built.display()))?;
    let dest = p.to.join(name);
    fs_err::create_dir_all(&dest)?;
    let mut listed = listed(&dest)?;
    match listed.iter().map(|(v, _)| v).max() {
        Some(newest) if *newest == version && listed.iter().any(|(v, a)| *v == version && *a == artifacts) => {
            // A publish cut between writing the list and its signature left a pair no box
            // accepts: a re-run signs the list again.
            if key.verify(&dest.join(SUMS), &dest.join(SIGNATURE)).is_ok() {
                return Ok(format!("{version} is already published in {}", dest.display()));
            }
            sign_list(&key, &dest, &listed, p.epoch)?;
            return Ok(format!("{version} is published in {}; its list's signature was repaired", dest.display()));
        }
        Some(newest) if *newest >= version => bail!(
            "{} already offers {newest}, not older than this build's {version}: boxes would never take it. \
             Commit the change (the version is the last commit's time) or set SOURCE_DATE_EPOCH",
            dest.display()
        ),
        _ => {}
    }
    for (name, _) in &artifacts {
        copy_atomically(&built.join(name), &dest.join(name))?;
    }
    listed.push((version.clone(), artifacts));
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    let dropped: Vec<(Version, Artifacts)> = listed.drain(..listed.len().saturating_sub(p.keep.max(1))).collect();
    sign_list(&key, &dest, &listed, p.epoch)?;
    for (_, files) in dropped {
        for (name, _) in files {
            let _ = fs_err::remove_file(dest.join(name));
        }
    }
    let offered: Vec<String> = listed.iter().map(|(v, _)| v.to_string()).collect();
    Ok(format!("published {version} in {} (offers {})", dest.display(), offered.join(", ")))
}

/// Writes SHA256SUMS listing every version of `listed`, and its signature, in `dest`.
fn sign_list(key: &SigningKey, dest: &Path, listed: &[(Version, Artifacts)], epoch: i64) -> Result<()> {
    let mut all: Vec<(String, String, u64)> =
        listed.iter().flat_map(|(_, a)| a.iter().map(|(n, h)| (n.clone(), h.clone(), 0))).collect();
    all.sort();
    let sums_tmp = dest.join(format!(".{SUMS}.new"));
    let sig_tmp = dest.join(format!(".{SIGNATURE}.new"));
    fs_err::write(&sums_tmp, update::sums_text(&all))?;
    key.sign(&sums_tmp, &sig_tmp, epoch)?;
    key.verify(&sums_tmp, &sig_tmp)?;
    fs_err::rename(&sums_tmp, dest.join(SUMS))?;
    fs_err::rename(&sig_tmp, dest.join(SIGNATURE))?;
    Ok(())
}

/// The version a build's update folder holds and its (name, sha256) artifacts, checked.
fn built_update(dir: &Path) -> Result<(Version, Artifacts)> {
    let text = fs_err::read_to_string(dir.join(SUMS))?;
    let mut artifacts = Vec::new();
    let mut version = None;
    for line in text.lines() {
        let (hash, name) = line.split_once("  ").with_context(|| format!("{SUMS}: odd line `{line}`"))?;
        let actual = sha256_file(&dir.join(name))?;
        if actual != hash {
            bail!("{name} does not match {SUMS} (the build folder was changed)");
        }
        version = Version::of_artifact(name).or(version);
        artifacts.push((name.to_string(), hash.to_string()));
    }
    artifacts.sort();
    Ok((version.with_context(|| format!("{SUMS} names no version"))?, artifacts))
}

/// What a published tree lists now, by version.
fn listed(dest: &Path) -> Result<Vec<(Version, Artifacts)>> {
    let Ok(text) = fs_err::read_to_string(dest.join(SUMS)) else { return Ok(Vec::new()) };
    let mut by_version: std::collections::BTreeMap<Version, Artifacts> = Default::default();
    for line in text.lines() {
        let Some((hash, name)) = line.split_once("  ") else { continue };
        if let Some(v) = Version::of_artifact(name) {
            by_version.entry(v).or_default().push((name.to_string(), hash.to_string()));
        }
    }
    Ok(by_version
        .into_iter()
        .map(|(v, mut a)| {
            (v, {
                a.sort();
                a
            })
        })
        .collect())
}

fn copy_atomically(src: &Path, dest: &Path) -> Result<()> {
    let tmp = dest.with_file_name(format!(".{}.new", dest.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    fs_err::copy(src, &tmp).with_context(|| format!("copying {}", src.display()))?;
    fs_err::File::open(&tmp)?.sync_all()?;
    fs_err::rename(&tmp, dest)?;
    Ok(())
}
