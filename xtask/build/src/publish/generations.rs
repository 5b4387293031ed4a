//! The served tree's generations: `DIR/SITE` is a symlink to `DIR/SITE.generations/NNNNNN`, a
//! folder holding one signed list, its signature and the artifacts it names. A publish fills a
//! new generation out of sight and switches the link with one rename(2), so a box (or the web
//! server in front of it) sees the old tree or the new one whole: never a list beside another
//! list's signature, never a list naming a file not there yet. The previous generation stays
//! for a box that is mid-download; older ones are removed. This module only lays out folders
//! and links; what goes into a generation is `publish`'s.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// `DIR/SITE.generations`.
fn store(to: &Path, site: &str) -> PathBuf {
    to.join(format!("{site}.generations"))
}

/// The generation `DIR/SITE` shows now (`None`: nothing published yet). A `DIR/SITE` that is a
/// plain folder (published before generations) becomes generation 0 first: for the moment
/// between the two renames the site answers 404, which a box takes as "try again later".
pub fn current(to: &Path, site: &str) -> Result<Option<PathBuf>> {
    let link = to.join(site);
    let meta = match fs_err::symlink_metadata(&link) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if meta.is_dir() {
        let first = store(to, site).join(number(0));
        fs_err::create_dir_all(store(to, site))?;
        fs_err::rename(&link, &first).with_context(|| format!("moving {} into its generations", link.display()))?;
        switch(to, site, &first)?;
        return Ok(Some(first));
    }
    let target = fs_err::read_link(&link)?;
    Ok(Some(to.join(target)))
}

/// A new, empty generation after every existing one (a half-made one left by a publish that
/// died is passed over, and removed by the next `prune`).
pub fn fresh(to: &Path, site: &str) -> Result<PathBuf> {
    let dir = store(to, site);
    fs_err::create_dir_all(&dir)?;
    let next = existing(&dir)?.into_iter().map(|(n, _)| n + 1).max().unwrap_or(1);
    let made = dir.join(number(next));
    fs_err::create_dir(&made)?;
    Ok(made)
}

/// Points `DIR/SITE` at `generation` with one rename, after flushing the generation to disk.
pub fn switch(to: &Path, site: &str, generation: &Path) -> Result<()> {
    sync_folder(generation)?;
    let relative =
        generation.strip_prefix(to).with_context(|| format!("{} is not in {}", generation.display(), to.display()))?;
    let new_link = to.join(format!(".{site}.link.new"));
    let _ = fs_err::remove_file(&new_link);
    std::os::unix::fs::symlink(relative, &new_link).with_context(|| format!("linking {}", new_link.display()))?;
    fs_err::rename(&new_link, to.join(site))?;
    sync_folder(to)
}

/// Removes every generation but `keep` (the current and the previous one).
pub fn prune(to: &Path, site: &str, keep: &[&Path]) -> Result<()> {
    for (_, path) in existing(&store(to, site))? {
        if !keep.iter().any(|k| *k == path) {
            fs_err::remove_dir_all(&path)?;
        }
    }
    Ok(())
}

/// Links `from` to `to` (the same bytes, no copy: generations share their artifacts), or copies
/// where hard links cannot be made.
pub fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if fs_err::hard_link(from, to).is_err() {
        fs_err::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
        fs_err::File::open(to)?.sync_all()?;
    }
    Ok(())
}

fn number(n: u64) -> String {
    format!("{n:06}")
}

fn existing(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let Ok(read) = fs_err::read_dir(dir) else { return Ok(out) };
    for entry in read {
        let entry = entry?;
        if let Some(n) = entry.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn sync_folder(dir: &Path) -> Result<()> {
    fs_err::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_folder_becomes_generation_zero_and_a_switch_shows_the_new_one_whole() {
        let to = tempfile::tempdir().unwrap();
        let old = to.path().join("demo");
        fs_err::create_dir(&old).unwrap();
        fs_err::write(old.join("SHA256SUMS"), "old").unwrap();
        let first = current(to.path(), "demo").unwrap().unwrap();
        assert!(first.ends_with("demo.generations/000000"), "{}", first.display());
        assert_eq!(fs_err::read_to_string(to.path().join("demo/SHA256SUMS")).unwrap(), "old");
        // A publish that died half-way left generation 7; the next one is made after it.
        fs_err::create_dir_all(to.path().join("demo.generations/000007")).unwrap();
        let next = fresh(to.path(), "demo").unwrap();
        assert!(next.ends_with("000008"));
        link_or_copy(&first.join("SHA256SUMS"), &next.join("OLD")).unwrap();
        fs_err::write(next.join("SHA256SUMS"), "new").unwrap();
        assert_eq!(
            fs_err::read_to_string(to.path().join("demo/SHA256SUMS")).unwrap(),
            "old",
            "not shown before the switch"
        );
        switch(to.path(), "demo", &next).unwrap();
        assert_eq!(fs_err::read_to_string(to.path().join("demo/SHA256SUMS")).unwrap(), "new");
        assert_eq!(current(to.path(), "demo").unwrap().unwrap(), next);
        prune(to.path(), "demo", &[&next, &first]).unwrap();
        assert!(!to.path().join("demo.generations/000007").exists(), "the half-made one is gone");
        assert!(first.exists() && next.exists());
    }

    #[test]
    fn nothing_published_is_no_generation() {
        let to = tempfile::tempdir().unwrap();
        assert_eq!(current(to.path(), "demo").unwrap(), None);
    }
}
