//! Publishing (`cargo xtask publish --site NAME --to DIR`): lays a built update out as a static
//! tree any web server can serve (DIR/NAME/, which the profile's update.url points at): the
//! artifacts of the newest versions, one SHA256SUMS listing them and its signature, in
//! systemd-sysupdate's flat layout. Each publish fills a new generation and switches DIR/NAME to
//! it in one rename (`generations`), so a box reading the tree mid-publish, or after a publish
//! that died, sees the old tree or the new one whole. A version must be newer than what the
//! tree offers (boxes never go back by themselves); the previous version stays, so an operator
//! can send a box back to it by hand. A re-run of the same publish repairs a pair that does not
//! verify (a tree changed by hand).

mod generations;

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
    let current = generations::current(p.to, name)?;
    let mut listed = match &current {
        Some(dir) => listed(dir)?,
        None => Vec::new(),
    };
    match listed.iter().map(|(v, _)| v).max() {
        Some(newest) if *newest == version && listed.iter().any(|(v, a)| *v == version && *a == artifacts) => {
            let shown = current.as_deref().unwrap_or(&dest);
            if key.verify(&shown.join(SUMS), &shown.join(SIGNATURE)).is_ok() {
                return Ok(format!("{version} is already published in {}", dest.display()));
            }
            // The pair no longer verifies (changed by hand, or a copy cut short): the same
            // versions again, signed afresh, in a new generation.
            let left_out = lay_out(p, &key, current.as_deref(), &mut listed, built)?;
            return Ok(format!(
                "{version} is published in {}; its list's signature was repaired{}",
                dest.display(),
                left_out_note(&left_out)
            ));
        }
        Some(newest) if *newest >= version => bail!(
            "{} already offers {newest}, not older than this build's {version}: boxes would never take it. \
             Commit the change (the version is the last commit's time) or set SOURCE_DATE_EPOCH",
            dest.display()
        ),
        _ => {}
    }
    listed.push((version.clone(), artifacts));
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    listed.drain(..listed.len().saturating_sub(p.keep.max(1)));
    let left_out = lay_out(p, &key, current.as_deref(), &mut listed, built)?;
    let offered: Vec<String> = listed.iter().map(|(v, _)| v.to_string()).collect();
    Ok(format!("published {version} in {} (offers {}){}", dest.display(), offered.join(", "), left_out_note(&left_out)))
}

/// The newest version the published tree `to/SITE/` offers, if any.
pub fn offered(to: &Path, site: &str) -> Result<Option<Version>> {
    let Some(current) = generations::current(to, site)? else { return Ok(None) };
    Ok(listed(&current)?.into_iter().map(|(v, _)| v).max())
}

/// The version a build's update folder (the outputs' `update/`) holds, its files checked.
pub fn built_version(built: &Path) -> Result<Version> {
    built_update(built).map(|(v, _)| v)
}

/// A new generation holding `listed`'s artifacts (linked from the current generation, or
/// copied from the build's folder for the new version) and its signed list; then the switch,
/// then every generation but this one and the one before is removed. A kept version whose
/// files are gone or changed (by hand) is left out rather than listed under hashes it no longer
/// has; says which were.
fn lay_out(
    p: &Publication<'_>,
    key: &SigningKey,
    current: Option<&Path>,
    listed: &mut Vec<(Version, Artifacts)>,
    built: &Path,
) -> Result<Vec<Version>> {
    let source = |file: &str| match current.map(|c| c.join(file)).filter(|f| f.exists()) {
        Some(kept) => Some(kept),
        None => Some(built.join(file)).filter(|f| f.exists()),
    };
    let mut left_out = Vec::new();
    listed.retain(|(version, files)| {
        let whole = files.iter().all(|(file, hash)| {
            source(file).is_some_and(|from| from.starts_with(built) || sha256_file(&from).is_ok_and(|h| h == *hash))
        });
        if !whole {
            left_out.push(version.clone());
        }
        whole
    });
    if listed.is_empty() {
        bail!("nothing left to publish: every listed version's files are missing or changed");
    }
    let name = &p.site.profile.site.name;
    let fresh = generations::fresh(p.to, name)?;
    for (file, _) in listed.iter().flat_map(|(_, a)| a) {
        let from = source(file).with_context(|| format!("{file} vanished while publishing"))?;
        generations::link_or_copy(&from, &fresh.join(file))?;
    }
    sign_list(key, &fresh, listed, p.epoch)?;
    generations::switch(p.to, name, &fresh)?;
    let mut keep = vec![fresh.as_path()];
    keep.extend(current);
    generations::prune(p.to, name, &keep)?;
    Ok(left_out)
}

/// ", left out V1, V2 (files missing or changed)" or nothing.
fn left_out_note(left_out: &[Version]) -> String {
    if left_out.is_empty() {
        return String::new();
    }
    let names: Vec<String> = left_out.iter().map(ToString::to_string).collect();
    format!("; left out {} (files missing or changed)", names.join(", "))
}

/// Writes SHA256SUMS listing every version of `listed`, and its signature, into a generation
/// nobody sees yet; the pair is verified before the switch can show it.
fn sign_list(key: &SigningKey, generation: &Path, listed: &[(Version, Artifacts)], epoch: i64) -> Result<()> {
    let mut all: Vec<(String, String, u64)> =
        listed.iter().flat_map(|(_, a)| a.iter().map(|(n, h)| (n.clone(), h.clone(), 0))).collect();
    all.sort();
    let (sums, signature) = (generation.join(SUMS), generation.join(SIGNATURE));
    fs_err::write(&sums, update::sums_text(&all))?;
    key.sign(&sums, &signature, epoch)?;
    key.verify(&sums, &signature)
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
